//! `cargo xtask test`: set up every tool, build the eBPF object and the agent, fuzz the capture path
//! for a bounded time, run all tests, and close with one tally line over every test binary.
//! Privileged tests need root; under `CI` they fail instead of skipping.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::build;

/// Adds up cargo's `test result: ok. N passed; M failed; K ignored; ...` lines.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.split("test result:").nth(1) else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

pub fn run(args: &[String]) -> Result<()> {
    crate::setup::all()?;
    build::all(false)?;
    crate::fuzz::run(30)?;
    let root = build::workspace_root();
    let mut child = Command::new("cargo")
        .current_dir(&root)
        // Default members: probe-ebpf only builds for the bpf target.
        .args(["test", "--no-fail-fast"])
        .args(args)
        .env("FLAGPROBE_EBPF_OBJECT", build::ebpf_object())
        .env("FLAGPROBE_BIN", build::agent_binary(false))
        .env("FLAGPROBE_SHARED", root.join("../shared"))
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let mut totals = Totals::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait()?;
    println!("\nflagprobe: {} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    if !status.success() || totals.failed > 0 {
        bail!("tests failed");
    }
    Ok(())
}
