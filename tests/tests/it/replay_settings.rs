//! Replay is `run` offline: it takes `run`'s settings (a config file, `--set`, the same flags, one
//! declaration) and holds flows in the same bounded table under the same rules, so a tuned site
//! checks a capture with its own settings and last night's flood replays in bounded memory.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use tests::{agent::binary, metrics_text, shared_dir};

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fp-replay-settings-{}-{name}", std::process::id()))
}

/// Replay `capture` with `args`; the detectors that raised alerts (each once: an alert may be
/// updated).
fn detectors(capture: &Path, args: &[&str]) -> Vec<String> {
    let alerts = temp("alerts.jsonl");
    let _ = std::fs::remove_file(&alerts);
    let out = Command::new(binary()).arg("replay").arg(capture).arg("--alerts").arg(&alerts).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&alerts).unwrap_or_default();
    let _ = std::fs::remove_file(&alerts);
    let mut names: Vec<String> =
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["detector"].as_str().unwrap().to_string()).collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn a_config_file_and_set_change_what_replay_judges() {
    let scan = shared_dir().join("pcaps/external/ndpi/nmap-synscan.pcap");
    let home = ["--home-net", "64.13.134.52/32"];
    assert_eq!(detectors(&scan, &home), ["scan"], "the defaults see nmap's SYN scan");
    // A site that only calls thousands of ports a scan, in its own config file.
    let site = temp("site.toml");
    std::fs::write(&site, "[detectors.scan]\nmin-ports = 5000\nmin-hosts = 5000\n").unwrap();
    let config = ["--config", site.to_str().unwrap()];
    assert!(detectors(&scan, &[&home[..], &config[..]].concat()).is_empty(), "the file's thresholds apply");
    // `--set` wins over the file, key by key, as for `run`.
    let back = ["--set", "detectors.scan.min-ports=15"];
    assert_eq!(detectors(&scan, &[&home[..], &config[..], &back[..]].concat()), ["scan"]);
    // The file can hold the site's home networks too, and the live-only keys, which replay ignores.
    std::fs::write(&site, "home-net = [\"64.13.134.52/32\"]\niface = [\"eth0\"]\n[detectors.scan]\nenabled = false\n").unwrap();
    assert!(detectors(&scan, &config).is_empty(), "a detector switched off in the file");
    let _ = std::fs::remove_file(&site);

    // A live-only flag on replay's command line, and a bad value from the file: one line each.
    let out = Command::new(binary()).args(["replay", "--iface", "eth0"]).arg(&scan).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), stderr.lines().count()), (Some(2), 1), "{stderr}");
    assert!(stderr.contains("--iface is a setting of `run` only"), "{stderr}");
    std::fs::write(&site, "\n[detectors.scan]\nmin-ports = 0\n").unwrap();
    let out = Command::new(binary()).arg("replay").arg(&scan).args(config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), stderr.lines().count()), (Some(2), 1), "{stderr}");
    assert!(stderr.contains("detectors.scan.min-ports (line 3)"), "{stderr}");
    let _ = std::fs::remove_file(&site);
}

/// Waits for `child`, sampling its peak resident memory (`VmHWM` in /proc) as it runs; returns
/// the exit status and the last sample. (`wait4`'s `ru_maxrss` would not do: a child started
/// with vfork, as Rust starts commands, inherits this test binary's peak across exec.)
fn wait_sampling_peak_rss(mut child: std::process::Child) -> (std::process::ExitStatus, u64) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        let text = std::fs::read_to_string(&status_file).unwrap_or_default();
        let kib =
            text.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        peak = peak.max(kib.unwrap_or(0) * 1024);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A spoofed SYN flood from a million sources, answered by our SYN/ACKs: two million packets.
/// Replay holds them in `run`'s bounded table (32768 slots, the SYN budget, flood packets never
/// taking a held slot), so it stays under 128 MiB while every packet is counted exactly and the
/// flood is called one.
#[test]
fn a_million_source_flood_replays_in_bounded_memory() {
    let capture = temp("flood.pcap");
    let generated = Command::new(env!("CARGO_BIN_EXE_gen-pcap")).arg(&capture).args(["1000000", "--flood"]).output().unwrap();
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let (alerts, metrics) = (temp("flood-alerts.jsonl"), temp("flood-metrics.txt"));
    let _ = std::fs::remove_file(&alerts);
    let mut child = Command::new(binary())
        .arg("replay")
        .arg(&capture)
        .args(["--home-net", "10.0.0.0/8", "--alerts"])
        .arg(&alerts)
        .arg("--metrics-out")
        .arg(&metrics)
        .args(["--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (status, sampled) = wait_sampling_peak_rss(child);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut out, &mut stdout).unwrap();
    let _ = std::fs::remove_file(&capture);
    assert!(status.success(), "replay of the flood: {status}");
    // Replay's own figure, read from its /proc/self/status as it ends, and ours while it ran.
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let reported = summary["peak_rss_bytes"].as_u64().unwrap();
    assert!(reported > 0 && sampled > 0, "sampled {sampled} B, reported {reported} B");
    let peak = reported.max(sampled);
    println!("peak RSS replaying 2M packets from 1M sources: {} MiB (sampled {} MiB)", reported >> 20, sampled >> 20);
    assert!(peak <= 128 << 20, "peak RSS {} MiB is over 128 MiB", peak >> 20);

    let m = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        (metrics_text::tcp(&m, "ingress", "S"), metrics_text::tcp(&m, "egress", "SA")),
        (1_000_000, 1_000_000),
        "every packet counted"
    );
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&alerts).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let _ = (std::fs::remove_file(&alerts), std::fs::remove_file(&metrics));
    assert!(!lines.is_empty() && lines.iter().all(|a| a["detector"] == "syn_flood"), "{lines:?}");
    let last = lines.last().unwrap();
    assert_eq!((last["evidence"]["syns"].as_u64(), last["evidence"]["spoofed"].as_bool()), (Some(1_000_000), Some(true)));
}
