//! `flagprobe replay` on every shared capture: the per-flags counts by direction equal tshark's,
//! the verdicts equal the README's, `--kernel` (the real programs via BPF_PROG_TEST_RUN) agrees with
//! userspace on histograms, flows and alerts, and bad input gives a clear error without a panic.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use tests::{
    agent::binary,
    metrics_text, oracle, privileged, shared_dir, tool,
    verdicts::{SHARED_CAPTURES, assert_exactly},
};

pub(crate) struct Replayed {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub alerts: Vec<serde_json::Value>,
    pub metrics: String,
    pub flows: Vec<serde_json::Value>,
}

pub(crate) fn replay(files: &[PathBuf], homes: &[&str], kernel: bool) -> Replayed {
    let dir = std::env::temp_dir().join(format!("fp-replay-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (alerts, metrics, flows) = (dir.join("alerts.jsonl"), dir.join("metrics.txt"), dir.join("flows.jsonl"));
    let mut cmd = Command::new(binary());
    cmd.arg("replay")
        .args(files)
        .args(["--format", "json", "--alerts"])
        .arg(&alerts)
        .arg("--metrics-out")
        .arg(&metrics)
        .arg("--flows-out")
        .arg(&flows);
    for h in homes {
        cmd.args(["--home-net", h]);
    }
    if kernel {
        cmd.arg("--kernel");
    }
    let out = cmd.output().unwrap();
    let read_lines = |p: &PathBuf| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let r = Replayed {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        alerts: read_lines(&alerts),
        metrics: std::fs::read_to_string(&metrics).unwrap_or_default(),
        flows: read_lines(&flows),
    };
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn by_direction(metrics: &str) -> BTreeMap<(String, u8), u64> {
    metrics_text::tcp_by_hook(metrics)
        .into_iter()
        .map(|((hook, f), n)| ((if hook == "ingress" { "in" } else { "out" }.to_string(), f), n))
        .collect()
}

#[test]
fn replay_counts_equal_tshark_and_verdicts_equal_the_readme() {
    if !tool("replay_counts_equal_tshark", "tshark") {
        return;
    }
    for e in SHARED_CAPTURES {
        let path = shared_dir().join("pcaps").join(e.file);
        let r = replay(std::slice::from_ref(&path), &[e.home], false);
        assert!(r.status.success(), "{}: {}", e.file, r.stderr);
        let tshark: BTreeMap<(String, u8), u64> =
            oracle::tshark_flags_by_direction(&path, e.home).into_iter().filter(|((d, _), _)| d != "other").collect();
        assert_eq!(by_direction(&r.metrics), tshark, "{}: replay (left) vs tshark (right)", e.file);
        assert_exactly(e.file, &r.alerts, e.verdicts);
        let summary: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
        assert_eq!(summary["summary"], "replay");
        assert!(summary["packets_per_second"].as_f64().unwrap() > 0.0);
    }
}

/// The same capture replayed twice writes the same alert lines in the same order: detectors walk
/// hash maps, whose order changes from process to process, and their alerts are sorted before
/// they are written.
#[test]
fn two_replays_of_a_capture_write_the_same_alerts() {
    for file in
        ["pcaps/scenarios/s03_backscatter.pcap", "pcaps/scenarios/s06_storm_goaway.pcap", "pcaps/external/stopddos/synack-reflection.pcap"]
    {
        let path = shared_dir().join(file);
        let runs: Vec<Vec<serde_json::Value>> = (0..3).map(|_| replay(std::slice::from_ref(&path), &[], false).alerts).collect();
        assert!(!runs[0].is_empty(), "{file}: alerts to compare");
        assert!(runs.iter().all(|r| r == &runs[0]), "{file}: the same alerts, in the same order, every time");
    }
}

#[test]
fn without_home_net_the_busiest_address_is_chosen_aloud() {
    let r = replay(&[shared_dir().join("pcaps/scenarios/s03_backscatter.pcap")], &[], false);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(r.stderr.contains("no --home-net given: treating 10.77.0.2 as ours"), "{}", r.stderr);
    assert_exactly("s03 without --home-net", &r.alerts, &[("backscatter_synack", "backscatter"), ("backscatter_rst", "backscatter")]);
}

/// Alerts without their clocks: what was said about whom, and the counts.
fn alert_facts(alerts: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = alerts
        .iter()
        .map(|a| format!("{} {} {} {} {} {}", a["detector"], a["verdict"], a["src_ip"], a["src_port"], a["dest_ip"], a["dest_port"]))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Flows without their clocks.
fn flow_facts(flows: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = flows
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f.as_object_mut().unwrap().remove("first_seen");
            f.as_object_mut().unwrap().remove("last_seen");
            f.to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn kernel_and_userspace_replay_agree() {
    if !privileged("kernel_and_userspace_replay_agree") {
        return;
    }
    for e in SHARED_CAPTURES {
        let path = shared_dir().join("pcaps").join(e.file);
        let user = replay(std::slice::from_ref(&path), &[e.home], false);
        let kernel = replay(std::slice::from_ref(&path), &[e.home], true);
        assert!(kernel.status.success(), "{}: {}", e.file, kernel.stderr);
        for metric in ["flagprobe_tcp_packets_total", "flagprobe_packets_total", "flagprobe_parse_errors_total"] {
            let pick = |m: &str| m.lines().filter(|l| l.starts_with(metric)).map(str::to_string).collect::<Vec<_>>();
            assert_eq!(pick(&kernel.metrics), pick(&user.metrics), "{}: {metric}, kernel (left) vs userspace (right)", e.file);
        }
        assert_eq!(flow_facts(&kernel.flows), flow_facts(&user.flows), "{}: flow tables", e.file);
        assert_eq!(alert_facts(&kernel.alerts), alert_facts(&user.alerts), "{}: alerts", e.file);
    }
}

#[test]
fn compressed_and_pcapng_captures_give_the_same_counts() {
    if !tool("compressed_and_pcapng_captures_give_the_same_counts", "editcap") {
        return;
    }
    let src = shared_dir().join("pcaps/scenarios/s03_backscatter.pcap");
    let dir = std::env::temp_dir().join(format!("fp-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ng = dir.join("s03.pcapng");
    assert!(Command::new("editcap").args(["-F", "pcapng"]).arg(&src).arg(&ng).status().unwrap().success());
    let gz = dir.join("s03.pcapng.gz");
    let out = Command::new("gzip").args(["-c"]).arg(&ng).output().unwrap();
    std::fs::write(&gz, out.stdout).unwrap();
    let plain = replay(&[src], &["10.77.0.2"], false);
    for f in [ng, gz] {
        let r = replay(std::slice::from_ref(&f), &["10.77.0.2"], false);
        assert!(r.status.success(), "{}: {}", f.display(), r.stderr);
        assert_eq!(by_direction(&r.metrics), by_direction(&plain.metrics), "{}", f.display());
        assert_eq!(alert_facts(&r.alerts), alert_facts(&plain.alerts), "{}", f.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_files_give_a_clear_error_and_keep_what_was_read() {
    let dir = std::env::temp_dir().join(format!("fp-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(shared_dir().join("pcaps/scenarios/s03_backscatter.pcap")).unwrap();
    let truncated = dir.join("truncated.pcap");
    std::fs::write(&truncated, &good[..good.len() - 30]).unwrap();
    let corrupt = dir.join("corrupt.pcap");
    let mut c = good.clone();
    // The 10th record's captured length becomes absurd.
    let mut off = 24;
    for _ in 0..9 {
        let caplen = u32::from_le_bytes(c[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + caplen;
    }
    c[off + 8..off + 12].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    std::fs::write(&corrupt, &c).unwrap();
    let not_pcap = dir.join("notes.txt");
    std::fs::write(&not_pcap, "these are not packets\n").unwrap();
    let odd_link = dir.join("usb.pcap");
    let mut u = good.clone();
    u[20..24].copy_from_slice(&189u32.to_le_bytes()); // LINKTYPE_USB_LINUX_MMAPPED
    std::fs::write(&odd_link, &u).unwrap();

    for (file, says) in [(&truncated, "truncated record at byte offset"), (&corrupt, "byte offset"), (&odd_link, "link type 189")] {
        let r = replay(std::slice::from_ref(file), &["10.77.0.2"], false);
        assert_eq!(r.status.code(), Some(1), "{}: a clear failure, not a panic (101): {}", file.display(), r.stderr);
        assert!(r.stderr.contains(&file.display().to_string()) && r.stderr.contains(says), "{}: {}", file.display(), r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        let summary: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
        assert_eq!(summary["files"][0]["file"], file.display().to_string());
        assert!(summary["files"][0]["error"].is_string());
    }
    // A file that does not exist (a typo: exit 2), or is no capture at all (exit 1): one line naming
    // it once, before anything is replayed, and no report of nothing.
    let missing = dir.join("no-such.pcap");
    for (file, code, says) in [(&missing, 2, "No such file"), (&not_pcap, 1, "not a pcap or pcapng file")] {
        let r = replay(std::slice::from_ref(file), &["10.77.0.2"], false);
        assert_eq!(r.status.code(), Some(code), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(says), "{}", r.stderr);
        assert_eq!(r.stderr.matches(&file.display().to_string()).count(), 1, "{}", r.stderr);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
    // What was read before the damage is still counted and judged.
    let r = replay(std::slice::from_ref(&truncated), &["10.77.0.2"], false);
    let summary: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["frames"].as_u64(), Some(69), "all but the cut last record");
    assert!(!r.alerts.is_empty(), "the backscatter read before the cut is still reported");
    let _ = std::fs::remove_dir_all(&dir);
}
