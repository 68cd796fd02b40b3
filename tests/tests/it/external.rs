//! The real captures of other projects in ../shared/pcaps/external, judged against their owners'
//! verdicts (expect.tsv, and expect-added.tsv: the 26 that were kept back until issue 20): replayed with their home networks, every capture's per-flags counts by
//! direction equal tshark's, every "must raise" detector is raised and none of the "must not
//! raise" (ALL: no alert at all). The same through `--kernel`, where the real programs count.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use tests::{oracle, privileged, shared_dir, tool, verdicts::summaries};

use crate::replay::{by_direction, replay};

/// One line of expect.tsv or expect-added.tsv.
struct Case {
    file: String,
    homes: Vec<String>,
    must: Vec<String>,
    /// `None`: no alert at all.
    must_not: Option<Vec<String>>,
}

fn cases() -> Vec<Case> {
    let list = |s: &str| -> Vec<String> { if s == "-" { vec![] } else { s.split(',').map(str::to_string).collect() } };
    let mut out = Vec::new();
    for name in ["expect.tsv", "expect-added.tsv"] {
        let path = shared_dir().join("pcaps/external").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.extend(text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "{name}: four tab-separated columns: {l}");
            Case { file: f[0].into(), homes: list(f[1]), must: list(f[2]), must_not: (f[3] != "ALL").then(|| list(f[3])) }
        }));
    }
    out
}

/// Flags bytes of the TCP packets (ICMP-quoted headers left out) whose direction is a convention:
/// between two of our addresses (a loopback capture) or two others (transit). The oracle calls
/// them "in"; replay counts them as sent from whichever end the home networks name first. Inside
/// a tunnel the inner addresses count (the last of a repeated field).
fn conventional(pcap: &std::path::Path, homes: &[String]) -> BTreeSet<u8> {
    let home = probe::detect::HomeNets(homes.iter().map(|h| probe::units::parse_net(h).unwrap()).collect());
    let out = std::process::Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "tcp && !icmp && !icmpv6", "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst"])
        .args(["-e", "tcp.flags"])
        .output()
        .expect("running tshark");
    let mut bytes = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let Some(flags) = f.get(4).and_then(|v| u16::from_str_radix(v.trim_start_matches("0x"), 16).ok()) else { continue };
        let last = |v: &str| v.rsplit(',').next().unwrap_or("").parse::<std::net::IpAddr>().ok();
        let (src, dst) = if !f[2].is_empty() && f[0].is_empty() { (last(f[2]), last(f[3])) } else { (last(f[0]), last(f[1])) };
        if let (Some(s), Some(d)) = (src, dst)
            && home.contains(s) == home.contains(d)
        {
            bytes.insert(flags as u8);
        }
    }
    bytes
}

/// Replay's counts against the oracle's: by direction, except for the flags bytes of packets
/// whose direction is a convention (see [`conventional`]), which must add up over both.
fn same_counts(ours: &BTreeMap<(String, u8), u64>, tshark: &BTreeMap<(String, u8), u64>, conventional: &BTreeSet<u8>) -> bool {
    let bytes: BTreeSet<u8> = ours.keys().chain(tshark.keys()).map(|(_, b)| *b).collect();
    let get = |m: &BTreeMap<(String, u8), u64>, d: &str, b: u8| m.get(&(d.to_string(), b)).copied().unwrap_or(0);
    bytes.into_iter().all(|b| {
        if conventional.contains(&b) {
            get(ours, "in", b) + get(ours, "out", b) == get(tshark, "in", b) + get(tshark, "out", b)
        } else {
            get(ours, "in", b) == get(tshark, "in", b) && get(ours, "out", b) == get(tshark, "out", b)
        }
    })
}

/// What falls short for one capture, in words (empty: nothing).
fn judge(case: &Case, kernel: bool) -> Vec<String> {
    let path: PathBuf = shared_dir().join("pcaps/external").join(&case.file);
    let homes: Vec<&str> = case.homes.iter().map(String::as_str).collect();
    let r = replay(std::slice::from_ref(&path), &homes, kernel);
    let mode = if kernel { "--kernel" } else { "userspace" };
    if !r.status.success() {
        return vec![format!("{} ({mode}): replay failed: {}", case.file, r.stderr)];
    }
    let mut short = Vec::new();
    let tshark: std::collections::BTreeMap<(String, u8), u64> =
        oracle::tshark_flags_by_direction(&path, &case.homes.join(",")).into_iter().filter(|((d, _), _)| d != "other").collect();
    let ours = by_direction(&r.metrics);
    if !same_counts(&ours, &tshark, &conventional(&path, &case.homes)) {
        short.push(format!("{} ({mode}): counts by direction {ours:?}, tshark {tshark:?}", case.file));
    }
    let raised: BTreeSet<&str> = r.alerts.iter().filter_map(|a| a["detector"].as_str()).collect();
    for d in &case.must {
        if !raised.contains(d.as_str()) {
            short.push(format!("{} ({mode}): {d} not raised; raised {raised:?}", case.file));
        }
    }
    let wrong: Vec<&str> = match &case.must_not {
        None => raised.iter().copied().collect(),
        Some(list) => raised.iter().copied().filter(|d| list.iter().any(|n| n == d)).collect(),
    };
    if !wrong.is_empty() {
        short.push(format!("{} ({mode}): must not raise {wrong:?}:\n{}", case.file, summaries(&r.alerts)));
    }
    short
}

fn judge_all(kernel: bool) {
    let cases = cases();
    assert!(cases.len() >= 51, "expect.tsv and expect-added.tsv list the shared captures");
    // Four at a time: each replay is one process, and tshark is the slow part.
    let short: Vec<String> = std::thread::scope(|s| {
        let chunks: Vec<_> = cases.chunks(cases.len().div_ceil(4)).collect();
        let handles: Vec<_> =
            chunks.into_iter().map(|c| s.spawn(move || c.iter().flat_map(|k| judge(k, kernel)).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(short.is_empty(), "{} of the shared real captures fall short:\n{}", short.len(), short.join("\n"));
}

#[test]
fn real_captures_get_their_owners_verdicts() {
    if !tool("real_captures_get_their_owners_verdicts", "tshark") {
        return;
    }
    judge_all(false);
}

#[test]
fn real_captures_get_their_owners_verdicts_through_the_kernel() {
    if !privileged("real_captures_get_their_owners_verdicts_through_the_kernel")
        || !tool("real_captures_get_their_owners_verdicts_through_the_kernel", "tshark")
    {
        return;
    }
    judge_all(true);
}
