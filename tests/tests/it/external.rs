//! The real captures of other projects in ../shared/pcaps/external, judged against their owners'
//! verdicts (expect.tsv): replayed with their home networks, every capture's per-flags counts by
//! direction equal tshark's, every "must raise" detector is raised and none of the "must not
//! raise" (ALL: no alert at all). The same through `--kernel`, where the real programs count.

use std::{collections::BTreeSet, path::PathBuf};

use tests::{oracle, privileged, shared_dir, tool, verdicts::summaries};

use crate::replay::{by_direction, replay};

/// One line of expect.tsv.
struct Case {
    file: String,
    homes: Vec<String>,
    must: Vec<String>,
    /// `None`: no alert at all.
    must_not: Option<Vec<String>>,
}

fn cases() -> Vec<Case> {
    let path = shared_dir().join("pcaps/external/expect.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let list = |s: &str| -> Vec<String> { if s == "-" { vec![] } else { s.split(',').map(str::to_string).collect() } };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "expect.tsv: four tab-separated columns: {l}");
            Case { file: f[0].into(), homes: list(f[1]), must: list(f[2]), must_not: (f[3] != "ALL").then(|| list(f[3])) }
        })
        .collect()
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
    if ours != tshark {
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
    assert!(cases.len() >= 25, "expect.tsv lists the shared captures");
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
