//! Helpers for flagprobe's integration tests: the privilege guard, network-namespace labs with
//! veth pairs, the agent as a real process, HTTP scraping, frame crafting and pcap sending.
//!
//! Every privileged test starts with [`privileged`]: without root it prints `skipping: <why>` and
//! returns false — unless `CI` or `FLAGPROBE_REQUIRE_PRIVILEGED=1` is set, where it panics.

pub mod agent;
pub mod bpf;
pub mod capture;
pub mod frames;
pub mod lab;
pub mod metrics_text;
pub mod oracle;
pub mod stories;
pub mod verdicts;

use std::path::PathBuf;

/// True when the test may go on; false (after a loud message) when it must skip.
pub fn privileged(test: &str) -> bool {
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for network namespaces)".to_string())
    } else if !std::path::Path::new("/sys/fs/bpf").exists() {
        Some("needs bpffs at /sys/fs/bpf".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            let required = std::env::var_os("CI").is_some() || std::env::var("FLAGPROBE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
            assert!(!required, "{test}: {why} — and CI/FLAGPROBE_REQUIRE_PRIVILEGED requires privileged tests to run");
            eprintln!("skipping: {test}: {why}");
            false
        }
    }
}

/// A tool the test needs; missing means skip (or fail under CI) like [`privileged`].
pub fn tool(test: &str, cmd: &str) -> bool {
    let found = std::process::Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().is_ok_and(|o| o.status.success());
    if !found {
        let required = std::env::var_os("CI").is_some() || std::env::var("FLAGPROBE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
        assert!(!required, "{test}: needs `{cmd}` (cargo xtask setup installs it)");
        eprintln!("skipping: {test}: needs `{cmd}` (cargo xtask setup installs it)");
    }
    found
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `../shared` next to the checkout (or `FLAGPROBE_SHARED`).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("FLAGPROBE_SHARED").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("../shared"))
}

/// The eBPF object built by `cargo xtask build-ebpf`.
pub fn ebpf_object() -> Vec<u8> {
    let path = std::env::var_os("FLAGPROBE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/bpfel-unknown-none/release/flagprobe-ebpf"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} — run `cargo xtask test`, which builds it", path.display()))
}
