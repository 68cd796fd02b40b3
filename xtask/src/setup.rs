//! Idempotent set-up of everything the build and the tests need on a fresh Debian machine: fast
//! (a few checks) when all is already there.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// The nightly that builds the eBPF object. Its LLVM major (22) must equal bpf-linker's.
pub const NIGHTLY: &str = "nightly-2026-05-20";
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian's LLVM that bpf-linker is built against.
const LLVM_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "zlib1g-dev", "libzstd-dev"];
/// Tools the tests drive: (command to look for, Debian package).
const TEST_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("tshark", "tshark"),
    ("tcpdump", "tcpdump"),
    ("hping3", "hping3"),
    ("nmap", "nmap"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("bpftool", "bpftool"),
    ("ethtool", "ethtool"),
    ("rsyslogd", "rsyslog"),
    ("logrotate", "logrotate"),
    ("man", "man-db"),
    ("readelf", "binutils"),
    ("qemu-aarch64-static", "qemu-user-static"),
    ("nfcapd", "nfdump"),
];

pub fn have(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {cmd} >/dev/null 2>&1")).status().is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn python_has_scapy() -> bool {
    Command::new("/usr/bin/python3").args(["-c", "import scapy.all"]).output().is_ok_and(|o| o.status.success())
}

pub fn apt_install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing packages {packages:?}: run as root, or install them with apt-get");
    }
    eprintln!("xtask: installing {}", packages.join(" "));
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    sh(Command::new("apt-get").args(["update", "-qq"]).envs(env))?;
    sh(Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends"]).args(packages).envs(env))
}

fn nightly_ready() -> bool {
    let out = Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]).output();
    out.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("rust-src"))
}

fn bpf_linker_ready() -> bool {
    Command::new("bpf-linker").arg("--version").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

/// The eBPF build chain: the pinned nightly with rust-src, bpf-linker built against LLVM 22.
pub fn toolchain() -> Result<()> {
    if !nightly_ready() {
        eprintln!("xtask: installing {NIGHTLY} with rust-src");
        sh(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal", "--component", "rust-src"]))?;
    }
    if !bpf_linker_ready() {
        let missing: Vec<&str> = LLVM_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
        apt_install(&missing)?;
        eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
        let path = format!("/usr/lib/llvm-22/bin:{}", std::env::var("PATH").unwrap_or_default());
        sh(Command::new("cargo")
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--no-default-features", "--features", "llvm-22"])
            .env("PATH", path))?;
    }
    Ok(())
}

pub fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The tools the privileged tests drive.
pub fn test_tools() -> Result<()> {
    let mut missing: Vec<&str> = TEST_TOOLS.iter().filter(|(cmd, _)| !have(cmd)).map(|(_, p)| *p).collect();
    if !python_has_scapy() {
        missing.push("python3-scapy");
    }
    missing.sort();
    missing.dedup();
    apt_install(&missing)
}

pub fn all() -> Result<()> {
    toolchain()?;
    test_tools()
}
