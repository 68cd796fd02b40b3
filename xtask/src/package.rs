//! `cargo xtask package`: `flagprobe_<version>_amd64.deb` and `flagprobe_<version>_arm64.deb` in
//! target/debian, built with cargo-deb from `[package.metadata.deb]` in probe/Cargo.toml.
//!
//! The eBPF object is built once (it is the same bytes for every CPU: BPF is its own
//! architecture) and embedded in both binaries; arm64 is cross-compiled with Debian's
//! gcc-aarch64-linux-gnu as the linker. The man pages and completions come from the amd64
//! binary's own clap definitions (`flagprobe assets`), identical for both. Each package must
//! pass lintian without an error.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    build::{self, workspace_root},
    setup::{self, sh},
};

pub const ARM64_TARGET: &str = "aarch64-unknown-linux-gnu";
/// cargo-deb's version, installed when missing (`cargo install --locked`).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where the packages are written.
pub fn out_dir() -> PathBuf {
    workspace_root().join("target/debian")
}

/// The release binary for `target` (None: this machine's).
pub fn binary(target: Option<&str>) -> PathBuf {
    let dir = workspace_root().join("target");
    target.map_or(dir.join("release"), |t| dir.join(t).join("release")).join("flagprobe")
}

/// What the packages need beyond the eBPF toolchain: cargo-deb, the arm64 standard library, the
/// cross linker and its C library, Debian's arm64 C library (for Depends), lintian.
pub fn tools() -> Result<()> {
    let has_deb =
        Command::new("cargo-deb").arg("--version").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB_VERSION));
    if !has_deb {
        eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION} (a few minutes)");
        sh(Command::new("cargo").args(["install", "--locked", &format!("cargo-deb@{CARGO_DEB_VERSION}")]))?;
    }
    let targets = Command::new("rustup").args(["target", "list", "--installed"]).output().context("rustup")?;
    if !String::from_utf8_lossy(&targets.stdout).lines().any(|l| l == ARM64_TARGET) {
        sh(Command::new("rustup").args(["target", "add", ARM64_TARGET]))?;
    }
    let mut missing = Vec::new();
    for (cmd, package) in [("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"), ("lintian", "lintian")] {
        if !setup::have(cmd) {
            missing.push(package);
        }
    }
    if !Path::new("/usr/aarch64-linux-gnu/lib/libc.so.6").exists() {
        missing.push("libc6-dev-arm64-cross");
    }
    // dpkg-shlibdeps computes the arm64 package's Depends from the libraries' own symbols files,
    // which only Debian's arm64 packages carry: install them beside (multiarch), as Debian's cross
    // builds do. The cross toolchain's copy (libc6-arm64-cross) has no symbols file, and would
    // make the package ask for the build machine's glibc instead of the one the binary needs.
    let foreign = Command::new("dpkg").arg("--print-foreign-architectures").output().context("dpkg")?;
    if !String::from_utf8_lossy(&foreign.stdout).lines().any(|a| a == "arm64") {
        sh(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
    }
    for package in ["libc6:arm64", "libgcc-s1:arm64"] {
        if !setup::dpkg_installed(package) {
            missing.push(package);
        }
    }
    setup::apt_install(&missing)
}

fn cargo_build(target: Option<&str>) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .args(["build", "-q", "--release", "-p", "probe", "--bin", "flagprobe"])
        .env("FLAGPROBE_EBPF_OBJECT", build::ebpf_object());
    if let Some(t) = target {
        cmd.args(["--target", t]).env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", "aarch64-linux-gnu-gcc");
    }
    sh(&mut cmd)
}

/// Build both packages (`deb_version` overrides the version, revision included); returns their
/// paths, amd64 first.
pub fn run(deb_version: Option<&str>) -> Result<Vec<PathBuf>> {
    setup::toolchain()?;
    tools()?;
    build::ebpf()?;
    cargo_build(None)?;
    cargo_build(Some(ARM64_TARGET))?;
    let out = out_dir();
    // Only this build's packages: the tests take the one of each architecture they find.
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let mut debs = Vec::new();
    for target in [None, Some(ARM64_TARGET)] {
        // cargo-deb reads `target/release/...` assets from the target's own directory.
        let assets = binary(target).with_file_name("package-assets");
        let _ = std::fs::remove_dir_all(&assets);
        sh(Command::new(binary(None)).arg("assets").arg(&assets))?;
        let mut cmd = Command::new("cargo");
        cmd.current_dir(workspace_root()).args(["deb", "-q", "-p", "probe", "--no-build", "-o"]).arg(&out);
        if let Some(v) = deb_version {
            cmd.args(["--deb-version", v]);
        }
        if let Some(t) = target {
            cmd.args(["--target", t]);
        }
        let output = cmd.output().context("running cargo deb")?;
        if !output.status.success() {
            bail!("cargo deb {target:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        let deb = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim().lines().last().unwrap_or_default());
        lintian(&deb)?;
        println!("{}", deb.display());
        debs.push(deb);
    }
    Ok(debs)
}

/// lintian on a package: its tags are printed; an error fails the build.
fn lintian(deb: &Path) -> Result<()> {
    let output = Command::new("lintian").arg(deb).output().context("running lintian")?;
    let text = String::from_utf8_lossy(&output.stdout);
    print!("{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    if !errors.is_empty() {
        bail!("lintian found {} errors in {}", errors.len(), deb.display());
    }
    Ok(())
}
