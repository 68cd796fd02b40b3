//! `cargo xtask fuzz`: the cargo-fuzz target over the capture → decode → flow → detector path,
//! seeded with the shared captures, for a bounded time.

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
    let corpus = root.join("target/fuzz-corpus/capture");
    std::fs::create_dir_all(&corpus)?;
    for dir in ["pcaps/scenarios", "pcaps/zeek"] {
        for e in std::fs::read_dir(root.join("../shared").join(dir))?.flatten() {
            std::fs::copy(e.path(), corpus.join(e.file_name()))?;
        }
    }
    sh(Command::new("cargo")
        .current_dir(root.join("fuzz"))
        .args([&format!("+{NIGHTLY}"), "fuzz", "run", "capture"])
        .arg(&corpus)
        .args(["--", &format!("-max_total_time={seconds}"), "-rss_limit_mb=4096"])
        .env("CARGO_TARGET_DIR", root.join("target/fuzz"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC"))
}
