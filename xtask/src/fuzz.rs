//! `cargo xtask fuzz`: the cargo-fuzz targets, each for a bounded time: the capture → decode → flow
//! → detector path, seeded with the shared captures; and config text → `check-config` and a reload,
//! seeded with the effective configuration `check-config` prints (every key, at its default).

use std::process::Command;

use anyhow::Result;

use crate::{
    build::workspace_root,
    setup::{NIGHTLY, sh},
};

pub fn run(seconds: u32) -> Result<()> {
    crate::setup::toolchain()?;
    let have = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("xtask: installing cargo-fuzz");
        sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let root = workspace_root();
    let capture = root.join("target/fuzz-corpus/capture");
    std::fs::create_dir_all(&capture)?;
    for dir in ["pcaps/scenarios", "pcaps/zeek"] {
        for e in std::fs::read_dir(root.join("../shared").join(dir))?.flatten() {
            std::fs::copy(e.path(), capture.join(e.file_name()))?;
        }
    }
    target(&root, "capture", &capture, seconds)?;
    let config = root.join("target/fuzz-corpus/config");
    std::fs::create_dir_all(&config)?;
    let empty = config.join("empty.toml");
    std::fs::write(&empty, "")?;
    let out = Command::new(crate::build::agent_binary(false)).arg("check-config").arg(&empty).output()?;
    if out.status.success() {
        std::fs::write(config.join("defaults.toml"), &out.stdout)?;
    }
    target(&root, "config", &config, seconds.div_ceil(2))
}

fn target(root: &std::path::Path, name: &str, corpus: &std::path::Path, seconds: u32) -> Result<()> {
    sh(Command::new("cargo")
        .current_dir(root.join("fuzz"))
        .args([&format!("+{NIGHTLY}"), "fuzz", "run", name])
        .arg(corpus)
        .args(["--", &format!("-max_total_time={seconds}"), "-rss_limit_mb=4096"])
        .env("CARGO_TARGET_DIR", root.join("target/fuzz"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC"))
}
