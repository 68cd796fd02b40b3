//! `cargo xtask test`: set up every tool, build the eBPF object and the agent, run all tests.
//! Privileged tests need root; under `CI` they fail instead of skipping.

use std::process::Command;

use anyhow::Result;

use crate::{build, setup::sh};

pub fn run(args: &[String]) -> Result<()> {
    crate::setup::all()?;
    build::all(false)?;
    let root = build::workspace_root();
    sh(Command::new("cargo")
        .current_dir(&root)
        // Default members: probe-ebpf only builds for the bpf target.
        .args(["test"])
        .args(args)
        .env("FLAGPROBE_EBPF_OBJECT", build::ebpf_object())
        .env("FLAGPROBE_BIN", build::agent_binary(false))
        .env("FLAGPROBE_SHARED", root.join("../shared")))?;
    // The capture path under cargo-fuzz for a bounded time (the seeded mutation test ran above).
    crate::fuzz::run(30)
}
