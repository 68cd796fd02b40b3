//! The config file in operation: a bad file stops the agent before anything is attached, with one
//! line naming the field; SIGHUP applies a good change, and keeps the last good configuration when
//! the new file is bad — counted either way.

use std::process::Command;

use tests::{
    agent::{Agent, binary},
    lab::{HOME_IF, Lab},
    metrics_text, privileged,
};

fn reloads(agent: &Agent, result: &str) -> f64 {
    metrics_text::sum(&agent.metrics(), "flagprobe_config_reloads_total", &[("result", result)])
}

/// SIGHUP, then wait until the agent has counted the reload (either result).
fn hup(agent: &Agent) {
    let before = reloads(agent, "success") + reloads(agent, "failure");
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reloads(agent, "success") + reloads(agent, "failure") == before {
        assert!(std::time::Instant::now() < deadline, "the reload was never counted:\n{}", agent.stderr());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_bad_config_file_stops_the_agent_before_attaching() {
    if !privileged("a_bad_config_file_stops_the_agent_before_attaching") {
        return;
    }
    let lab = Lab::new();
    let path = std::env::temp_dir().join(format!("{}-bad.toml", lab.home));
    std::fs::write(&path, "[detectors.syn-flood]\nmin-half-open = \"lots\"\n").unwrap();
    let out = lab.command(&lab.home, binary().to_str().unwrap()).args(["run", "--iface", HOME_IF, "--config"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains("detectors.syn-flood.min-half-open"), "names the field: {stderr}");
    let link = lab.exec(&lab.home, &format!("ip -d link show {HOME_IF}"));
    assert!(!String::from_utf8_lossy(&link.stdout).contains("xdp"), "nothing attached");
    // check-config says the same.
    let check = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
    assert_eq!(check.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&check.stderr).contains("detectors.syn-flood.min-half-open"));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn sighup_applies_good_changes_and_keeps_the_last_good_config() {
    if !privileged("sighup_applies_good_changes_and_keeps_the_last_good_config") || !tests::tool("sighup_applies_good_changes", "hping3") {
        return;
    }
    let lab = Lab::new();
    let path = std::env::temp_dir().join(format!("{}-reload.toml", lab.home));
    std::fs::write(&path, "[detectors.scan]\nmin-ports = 100\n").unwrap();
    let mut agent = Agent::start(&lab, &["--config", path.to_str().unwrap()]);
    // A 30-port SYN scan stays below 100 ports: no alert.
    let scan = tests::stories::syn_scan;
    scan(&lab, 61000);
    agent.settle();

    std::fs::write(&path, "[detectors.scan]\nmin-ports = 10\n").unwrap();
    hup(&agent);
    assert_eq!(reloads(&agent, "success"), 1.0, "{}", agent.stderr());
    assert!(agent.stderr().contains("detectors.scan"), "the log says what changed: {}", agent.stderr());
    scan(&lab, 62000);
    agent.settle();

    std::fs::write(&path, "[detectors.scan]\nmin-ports = -3\n").unwrap();
    hup(&agent);
    assert_eq!(reloads(&agent, "failure"), 1.0);
    assert!(agent.stderr().contains("keeping the last good configuration"), "{}", agent.stderr());
    // Still running with min-ports = 10.
    scan(&lab, 63000);
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    let alerts = agent.alerts();
    let sources: Vec<u64> = alerts.iter().filter(|a| a["detector"] == "scan").map(|a| a["evidence"]["ports"].as_u64().unwrap()).collect();
    assert!(!sources.is_empty(), "after the reload the scan is reported: {alerts:?}");
    let _ = std::fs::remove_file(&path);
}

/// What logrotate does (deploy/logrotate/flagprobe): rename the alerts file, then reload. The
/// agent leaves the renamed file and writes the next alerts into a new one, also when the config
/// file was edited into something invalid meanwhile (the reload fails, the reopen does not).
#[test]
fn a_reload_reopens_the_alerts_file_for_logrotate() {
    if !privileged("a_reload_reopens_the_alerts_file_for_logrotate") || !tests::tool("a_reload_reopens_the_alerts_file", "hping3") {
        return;
    }
    let lab = Lab::new();
    let path = std::env::temp_dir().join(format!("{}-rotate.toml", lab.home));
    std::fs::write(&path, "[detectors.scan]\nmin-ports = 10\n").unwrap();
    let mut agent = Agent::start(&lab, &["--config", path.to_str().unwrap()]);
    let rotated = agent.alerts_path.with_extension("jsonl.1");
    let scans_in = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default().lines().filter(|l| l.contains("\"scan\"")).count();
    tests::stories::syn_scan(&lab, 60000);
    agent.wait_for_alert("scan");
    agent.settle();
    for (round, config) in [(1, "[detectors.scan]\nmin-ports = 10\n"), (2, "[detectors.scan]\nmin-ports = \"many\"\n")] {
        let _ = std::fs::remove_file(&rotated);
        std::fs::rename(&agent.alerts_path, &rotated).unwrap();
        std::fs::write(&path, config).unwrap();
        hup(&agent);
        let before = scans_in(&rotated);
        assert!(before >= 1, "round {round}: the rotated file holds the scan");
        // Another source: a new incident, written after the reload.
        lab.exec(&lab.peer, &format!("ip addr add 10.77.0.{}/24 dev {} 2>/dev/null; true", 10 + round, tests::lab::PEER_IF));
        lab.exec(
            &lab.peer,
            &format!(
                "hping3 -q -S -c 30 -i u5000 -a 10.77.0.{} -s {} -k -p ++1 {} >/dev/null 2>&1; true",
                10 + round,
                63000 + round,
                tests::lab::HOME_IP
            ),
        );
        agent.wait_for_alert("scan");
        agent.settle();
        assert_eq!(scans_in(&rotated), before, "round {round}: nothing more into the rotated file:\n{}", agent.stderr());
        assert!(scans_in(&agent.alerts_path) >= 1, "round {round}: the new alert is in a new file:\n{}", agent.stderr());
    }
    assert_eq!((reloads(&agent, "success"), reloads(&agent, "failure")), (1.0, 1.0));
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&rotated);
}
