//! `cargo xtask demo`: set up, build, and run the demo lab (needs root).

use std::process::Command;

use anyhow::Result;

use crate::{build, setup::sh};

pub fn run() -> Result<()> {
    crate::setup::all()?;
    build::all(false)?;
    sh(Command::new("cargo")
        .current_dir(build::workspace_root())
        .args(["run", "-q", "-p", "tests", "--bin", "flagprobe-demo"])
        .env("FLAGPROBE_EBPF_OBJECT", build::ebpf_object())
        .env("FLAGPROBE_BIN", build::agent_binary(false)))
}
