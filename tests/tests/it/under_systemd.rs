//! The shipped systemd unit, run by a real systemd as PID 1: `cargo xtask vm-test` boots this
//! machine's own systemd inside a Debian kernel under qemu for these tests (the host's PID 1 is not
//! systemd, and these tests install units, so they run only in that disposable guest).
//!
//! Each test installs `deploy/systemd/flagprobe.service` as it is, plus one test-only drop-in line
//! (`NetworkNamespacePath=`, so the agent watches a lab namespace instead of the guest's own
//! interfaces), starts it with `systemctl`, and checks what an operator would: the agent attaches
//! under the unit's dynamic user with exactly the unit's capabilities, serves `/healthz`, judges
//! the backscatter story into the unit's log and state directories, reloads on `systemctl reload`,
//! stops cleanly, and `systemd-analyze security` rates the unit's exposure at most 2.5.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use tests::{
    agent::http_get,
    lab::{HOME_IF, HOME_IP, Lab, MIRROR_IF, in_netns},
    metrics_text, privileged, stories, tool, workspace_root,
};

const UNIT: &str = "flagprobe.service";
const METRICS: &str = "127.0.0.1:9750";
const ALERTS: &str = "/var/log/flagprobe/alerts.jsonl";
/// The most `systemd-analyze security` may rate the unit (0 is locked down, 10 is exposed).
const MOST_EXPOSURE: f64 = 2.5;

/// True inside the vm-test guest booted with systemd (`FLAGPROBE_VM_SYSTEMD=1` is set by its job
/// only); elsewhere these tests say why they do not run. They change the system's units and mounts,
/// so they never run on a developer's machine, even one whose PID 1 is systemd.
fn in_systemd_guest(test: &str) -> bool {
    if std::env::var("FLAGPROBE_VM_SYSTEMD").as_deref() != Ok("1") {
        eprintln!("not here: {test} runs in `cargo xtask vm-test under_systemd::` (a guest booted with systemd)");
        return false;
    }
    let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    assert_eq!(init.trim(), "systemd", "{test}: the guest's PID 1 is systemd");
    privileged(test) && ["systemctl", "systemd-analyze", "journalctl", "hping3"].iter().all(|t| tool(test, t))
}

fn sh(script: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn must(script: &str) -> String {
    let (ok, text) = sh(script);
    assert!(ok, "`{script}` failed:\n{text}");
    text
}

/// The unit's status and journal, for a failure message.
fn journal() -> String {
    sh(&format!("systemctl status --no-pager {UNIT}; journalctl --no-pager -n 60 -u {UNIT}")).1
}

/// Install the shipped unit, `drop_ins` (file name, text) beside it and `config` as
/// /etc/flagprobe/flagprobe.toml, with the agent binary at the unit's ExecStart path. The guest's
/// /usr/sbin is the host's, read-only: a writable copy is bound over it first.
fn install(drop_ins: &[(&str, String)], config: &str) {
    let binary = tests::agent::binary();
    must(&format!(
        "set -e
        if ! mountpoint -q /usr/sbin; then
          mkdir -p /run/fp-sbin; cp -a /usr/sbin/. /run/fp-sbin/; mount --bind /run/fp-sbin /usr/sbin
        fi
        cp {binary} /usr/sbin/flagprobe
        cp {unit} /etc/systemd/system/{UNIT}
        rm -rf /etc/systemd/system/{UNIT}.d; mkdir -p /etc/systemd/system/{UNIT}.d /etc/flagprobe",
        binary = binary.display(),
        unit = workspace_root().join("deploy/systemd/flagprobe.service").display(),
    ));
    for (name, text) in drop_ins {
        std::fs::write(format!("/etc/systemd/system/{UNIT}.d/{name}"), text).unwrap();
    }
    std::fs::write("/etc/flagprobe/flagprobe.toml", config).unwrap();
    must("systemctl daemon-reload");
}

/// The drop-in line that puts the agent in a lab namespace (the only test-specific setting).
fn in_namespace(ns: &str) -> (&'static str, String) {
    ("lab.conf", format!("[Service]\nNetworkNamespacePath=/run/netns/{ns}\n"))
}

fn get(ns: &str, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    in_netns(ns, move || http_get(METRICS, &path))
}

/// Start the unit and wait (TCG is slow: up to 90 s) until the agent answers /healthz with 200.
fn start(ns: &str) -> u32 {
    let _ = std::fs::remove_file(ALERTS);
    must(&format!("systemctl start {UNIT}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    while get(ns, "/healthz").is_none_or(|(code, _)| code != 200) {
        let (active, _) = sh(&format!("systemctl is-active -q {UNIT}"));
        let failed = !active && sh(&format!("systemctl is-failed -q {UNIT}")).0;
        assert!(!failed && Instant::now() < deadline, "the unit never served /healthz:\n{}", journal());
        std::thread::sleep(Duration::from_millis(500));
    }
    main_pid()
}

fn main_pid() -> u32 {
    must(&format!("systemctl show -p MainPID --value {UNIT}")).trim().parse().unwrap()
}

/// The agent runs as the unit's dynamic user, not root, with exactly the capabilities the unit
/// grants (`CapabilityBoundingSet=`/`AmbientCapabilities=`).
fn assert_confined(pid: u32, caps: &[u32]) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default().trim().to_string();
    let uid: u32 = field("Uid:").split_whitespace().next().unwrap().parse().unwrap();
    assert!(uid >= 61184, "the agent runs as a DynamicUser uid (61184..65519), not {uid}:\n{status}");
    let effective = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    let expected = caps.iter().fold(0u64, |m, c| m | 1 << c);
    assert_eq!(effective, expected, "effective capabilities {effective:#x}, the unit grants {expected:#x}");
}

/// `systemd-analyze security`'s overall exposure of the loaded unit (drop-ins included).
fn exposure() -> f64 {
    let text = must(&format!("systemd-analyze security --no-pager {UNIT}"));
    let line = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("no overall level:\n{text}"));
    line.split(':').nth(1).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap()
}

fn alerts() -> Vec<serde_json::Value> {
    std::fs::read_to_string(ALERTS).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn wait_for_alert(detector: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(a) = alerts().into_iter().find(|a| a["detector"] == detector) {
            return a;
        }
        assert!(Instant::now() < deadline, "no {detector} alert in {ALERTS} within 60 s:\n{}", journal());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Stop the unit: it must end cleanly (SIGTERM → exit 0), not be killed or fail.
fn stop() {
    must(&format!("systemctl stop {UNIT}"));
    let result = must(&format!("systemctl show -p Result --value {UNIT}"));
    assert_eq!(result.trim(), "success", "the agent stopped cleanly:\n{}", journal());
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[test]
fn the_shipped_unit_runs_the_gateway_agent() {
    let test = "the_shipped_unit_runs_the_gateway_agent";
    if !in_systemd_guest(test) {
        return;
    }
    let lab = Lab::new();
    let config = format!("iface = [\"{HOME_IF}\"]\nhome-net = [\"{HOME_IP}/32\"]\npoll-interval = \"200ms\"\n");
    install(&[in_namespace(&lab.home)], &config);
    let pid = start(&lab.home);
    assert_confined(pid, &[CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF]);

    stories::backscatter(&lab);
    let alert = wait_for_alert("backscatter_synack");
    let evidence = alert["evidence"]["pcap"].as_str().unwrap_or_else(|| panic!("the alert names its evidence: {alert}"));
    assert!(evidence.starts_with("/var/lib/flagprobe/evidence/"), "evidence in the unit's StateDirectory: {evidence}");
    assert!(Path::new(evidence).exists(), "{evidence} written");
    let (_, metrics) = get(&lab.home, "/metrics").expect("/metrics answers");
    let synacks = metrics_text::tcp_by_direction(&metrics).get(&("in".to_string(), 0x12)).copied().unwrap_or(0);
    assert!(synacks >= 10, "the 10 SYN/ACKs counted ({synacks}):\n{metrics}");

    // `systemctl reload` is SIGHUP: the same process re-reads the config and stays healthy.
    must(&format!("systemctl reload {UNIT}"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(main_pid(), pid, "reload kept the process:\n{}", journal());
    assert_eq!(get(&lab.home, "/healthz").map(|r| r.0), Some(200), "healthy after reload:\n{}", journal());
    assert!(journal().contains("configuration reloaded"), "the journal records the reload:\n{}", journal());

    let level = exposure();
    println!("systemd-analyze security {UNIT} (gateway): {level}");
    assert!(level <= MOST_EXPOSURE, "exposure {level} > {MOST_EXPOSURE}");
    stop();
}

#[test]
fn the_sensor_drop_in_lets_the_unit_open_af_xdp_sockets() {
    let test = "the_sensor_drop_in_lets_the_unit_open_af_xdp_sockets";
    if !in_systemd_guest(test) {
        return;
    }
    let mut lab = Lab::new_hub();
    lab.add_third_party();
    let sensor = lab.sensor.clone().unwrap();
    let sensor_conf = std::fs::read_to_string(workspace_root().join("deploy/systemd/flagprobe-sensor.conf")).unwrap();
    let config = format!("iface = [\"{MIRROR_IF}\"]\nhome-net = [\"{HOME_IP}/32\"]\nmode = \"sensor\"\npoll-interval = \"200ms\"\n");
    install(&[in_namespace(&sensor), ("sensor.conf", sensor_conf)], &config);
    let pid = start(&sensor);
    assert_confined(pid, &[CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK, CAP_PERFMON, CAP_BPF]);

    stories::backscatter(&lab);
    wait_for_alert("backscatter_synack");
    let (_, metrics) = get(&sensor, "/metrics").expect("/metrics answers");
    let to_socket = metrics_text::sum(&metrics, "flagprobe_sensor_frames_total", &[("outcome", "to_socket")]);
    assert!(to_socket > 0.0, "notable frames reached the AF_XDP socket under the unit:\n{metrics}");

    let level = exposure();
    println!("systemd-analyze security {UNIT} (sensor drop-in): {level}");
    assert!(level <= MOST_EXPOSURE, "exposure {level} > {MOST_EXPOSURE}");
    stop();
}
