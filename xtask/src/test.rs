//! `cargo xtask test`: set up every tool, build the eBPF object, the agent and the packages, fuzz the capture path
//! for a bounded time, run all tests on this machine's kernel, then the kernel-facing ones inside
//! each kernel of the matrix (`vm`), and close with one tally line over all of them. Privileged
//! tests need root; under `CI` they fail instead of skipping. A test filter runs only the host part.

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
    formatted()?;
    build::all(false)?;
    crate::package::run(None)?;
    crate::fuzz::run(30)?;
    let root = build::workspace_root();
    let mut child = Command::new("cargo")
        .current_dir(&root)
        // Default members: probe-ebpf only builds for the bpf target.
        .args(["test", "--no-fail-fast"])
        .args(args)
        // The systemd tests run in their guest (`matrix`), never on the host: they install units.
        .args(if args.is_empty() { &["--", "--skip", "under_systemd::"][..] } else { &[] })
        .env("FLAGPROBE_EBPF_OBJECT", build::ebpf_object())
        .env("FLAGPROBE_BIN", build::agent_binary(false))
        .env("FLAGPROBE_SHARED", root.join("../shared"))
        .env("FLAGPROBE_DEBS", crate::package::out_dir())
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
    let mut ok = status.success();
    if args.is_empty() {
        ok &= matrix(&[], &[], &mut totals)?;
    }
    println!("\nflagprobe: {} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    if !ok || totals.failed > 0 {
        bail!("tests failed");
    }
    Ok(())
}

/// rustfmt on every tracked Rust file: `cargo fmt` skips modules declared inside a macro (the
/// detectors), so the check names files itself, and an unformatted file fails the suite.
fn formatted() -> Result<()> {
    let root = build::workspace_root();
    let listed = Command::new("git").current_dir(&root).args(["ls-files", "*.rs"]).output().context("git ls-files")?;
    let files: Vec<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_string).collect();
    let out = Command::new("rustfmt")
        .current_dir(&root)
        .args(["--check", "--edition", "2024", "--config-path", "rustfmt.toml"])
        .args(&files)
        .output()
        .context("running rustfmt")?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let mut unformatted: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("Diff in ")).filter_map(|l| l.split(':').next()).collect();
        unformatted.dedup();
        bail!("not rustfmt-clean (run rustfmt on them): {}", unformatted.join(" "));
    }
    Ok(())
}

/// `cargo xtask vm-test`: the matrix alone.
pub fn vm(kernels: &[String], filters: &[String]) -> Result<()> {
    let mut totals = Totals::default();
    let ok = matrix(kernels, filters, &mut totals)?;
    println!("\nflagprobe vm-test: {} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    if !ok || totals.failed > 0 {
        bail!("tests failed inside a kernel of the matrix");
    }
    Ok(())
}

/// Run the guest tests in each kernel, print what each printed and add its tallies; false when a
/// guest's test run failed.
fn matrix(kernels: &[String], filters: &[String], totals: &mut Totals) -> Result<bool> {
    let mut ok = true;
    for run in crate::vm::run(kernels, filters)? {
        println!("\n==== inside Debian's kernel {} (qemu) ====", run.release);
        let mut ran = Totals::default();
        for line in run.output.lines() {
            println!("{line}");
            ran.add(line);
        }
        if ran.passed + ran.failed == 0 {
            println!("kernel {}: no test ran", run.release);
            ok = false;
        }
        ok &= run.passed;
        totals.passed += ran.passed;
        totals.failed += ran.failed;
        totals.ignored += ran.ignored;
    }
    Ok(ok)
}
