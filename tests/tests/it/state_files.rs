//! The files flagprobe writes, against a hostile directory: the exact inputs of the hostile-input
//! issue. A symbolic link planted at an evidence file's predictable name (and at the temporary
//! name earlier builds used) must leave its target untouched; an alerts file that is a planted
//! link is refused by name. Unprivileged: replay needs no root.

use std::{path::Path, process::Command};

use tests::{agent::binary, shared_dir};

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fp-state-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `flagprobe replay` of the "Go away" scenario with evidence into `dir`; the evidence files' names.
fn replay_into(dir: &Path, alerts: &Path) -> (std::process::Output, Vec<String>) {
    let pcap = shared_dir().join("pcaps/scenarios/s06_storm_goaway.pcap");
    let out = Command::new(binary())
        .args(["replay", "--home-net", "10.77.0.2/32", "--format", "json", "--alerts"])
        .arg(alerts)
        .arg("--evidence")
        .arg(dir)
        .arg(&pcap)
        .output()
        .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    (out, names)
}

#[test]
fn a_link_planted_at_an_evidence_name_leaves_its_target_untouched() {
    let first = scratch("first");
    let (out, names) = replay_into(&first, &first.join("alerts.jsonl"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let evidence: Vec<&String> = names.iter().filter(|n| n.ends_with(".pcapng")).collect();
    assert!(!evidence.is_empty(), "the scenario writes evidence: {names:?}");

    // The same names, in a fresh directory, each a link to a file of someone else's.
    let dir = scratch("planted");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "not flagprobe's").unwrap();
    for name in &evidence {
        std::os::unix::fs::symlink(&victim, dir.join(name)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(name.replace(".pcapng", ".pcapng.partial"))).unwrap();
    }
    let (out, _) = replay_into(&dir, &dir.join("alerts.jsonl"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not flagprobe's");
    for name in &evidence {
        let meta = std::fs::symlink_metadata(dir.join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name} is our own file now, not the planted link");
        assert_eq!(std::fs::read(first.join(name)).unwrap(), std::fs::read(dir.join(name)).unwrap(), "{name}");
    }
    let _ = std::fs::remove_dir_all(&first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_alerts_file_that_is_a_planted_link_is_refused_by_name() {
    let dir = scratch("alerts");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "not flagprobe's").unwrap();
    let alerts = dir.join("alerts.jsonl");
    std::os::unix::fs::symlink(&victim, &alerts).unwrap();
    let (out, _) = replay_into(&dir.join("evidence"), &alerts);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused");
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not flagprobe's");
    let _ = std::fs::remove_dir_all(&dir);
}
