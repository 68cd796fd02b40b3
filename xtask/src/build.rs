//! Builds: the eBPF object with the pinned nightly, then the agent, which embeds the object.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::setup::{NIGHTLY, sh};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn ebpf_object() -> PathBuf {
    workspace_root().join("target/bpfel-unknown-none/release/flagprobe-ebpf")
}

pub fn ebpf() -> Result<()> {
    ebpf_in(&workspace_root(), None)
}

/// Build the eBPF object of the workspace at `root`, into `target_dir` (default: `root/target`).
pub fn ebpf_in(root: &Path, target_dir: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("cargo");
    if let Some(dir) = target_dir {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    sh(cmd
        .current_dir(root)
        .args([
            &format!("+{NIGHTLY}"),
            "build",
            "-q",
            "-p",
            "probe-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
        ])
        // The outer `cargo xtask` sets these for stable; the nightly must choose its own.
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN"))
}

/// Set up the toolchain, build the eBPF object and the agent (`release` or debug).
pub fn all(release: bool) -> Result<()> {
    crate::setup::toolchain()?;
    ebpf()?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root()).args(["build", "-q", "-p", "probe", "--bin", "flagprobe"]);
    if release {
        cmd.arg("--release");
    }
    sh(cmd.env("FLAGPROBE_EBPF_OBJECT", ebpf_object()))
}

pub fn agent_binary(release: bool) -> PathBuf {
    workspace_root().join(if release { "target/release/flagprobe" } else { "target/debug/flagprobe" })
}
