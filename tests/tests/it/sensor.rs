//! Sensor mode on a mirror port: a hub lab where a third namespace sees every frame between the
//! home host and its peer. The sensor must count the same flags, both ways, as tshark on that hub
//! port, and reach the same verdicts as a gateway agent on the home host watching the same
//! stories; its evidence files hold the whole frames its AF_XDP socket received.

use std::{collections::BTreeSet, path::Path};

use tests::{
    agent::Agent,
    capture::Capture,
    lab::{HOME_IP, Lab, MIRROR_PORT},
    metrics_text, oracle, privileged, stories, tool,
    verdicts::{assert_exactly, detector_verdicts, latest_by_source},
};

fn stop(mut agent: Agent) -> Vec<serde_json::Value> {
    agent.settle();
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    agent.alerts()
}

/// (ip.src, flags letters without dots, frame.len, frame.cap_len, tcp.len) of each packet of an
/// alert's evidence file, after checking every packet names the alert.
fn evidence(alert: &serde_json::Value) -> Vec<(String, String, u64, u64, u64)> {
    let pcap = alert["evidence"]["pcap"].as_str().unwrap_or_else(|| panic!("the alert names its evidence file: {alert}"));
    let rows =
        oracle::tshark_fields(Path::new(pcap), &["ip.src", "tcp.flags.str", "frame.len", "frame.cap_len", "tcp.len", "frame.comment"]);
    let id = alert["id"].as_str().unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r[5].contains(id)), "every packet names alert {id}: {rows:?}");
    let n = |s: &str| s.parse::<u64>().unwrap_or(0);
    rows.iter().map(|r| (r[0].clone(), r[1].replace('·', ""), n(&r[2]), n(&r[3]), n(&r[4]))).collect()
}

#[test]
fn a_sensor_on_a_hub_counts_and_judges_what_the_gateway_does() {
    let test = "a_sensor_on_a_hub_counts_and_judges_what_the_gateway_does";
    if !privileged(test) || !["hping3", "tshark", "tcpdump", "/usr/bin/python3"].iter().all(|t| tool(test, t)) {
        return;
    }
    let mut lab = Lab::new_hub();
    lab.add_third_party();
    let gateway = Agent::start(&lab, &[]);
    let sensor = Agent::start_sensor(&lab, &[]);
    let port = Capture::start(lab.hub.as_deref().unwrap(), MIRROR_PORT, &format!("{}-mirror", lab.home));
    stories::backscatter(&lab);
    stories::go_away(&lab);
    stories::forged_resets(&lab);
    let pcap = port.finish();

    // The flags, both ways, exactly as tshark counts them on the hub port.
    sensor.settle();
    let counted = metrics_text::tcp_by_direction(&sensor.metrics());
    let expected = oracle::tshark_flags_by_direction(&pcap, HOME_IP);
    assert_eq!(counted, expected, "sensor (left) vs tshark on the hub port (right)");
    let m = sensor.metrics();
    let to_socket = metrics_text::sum(&m, "flagprobe_sensor_frames_total", &[("outcome", "to_socket")]);
    assert!(to_socket > 0.0, "notable frames went to the AF_XDP socket:\n{m}");
    assert_eq!(metrics_text::sum(&m, "flagprobe_sensor_frames_total", &[("outcome", "no_socket")]), 0.0);

    // The same verdicts as the gateway on the home host.
    let expected = [
        ("backscatter_synack", "backscatter"),
        ("backscatter_rst", "backscatter"),
        ("rst_payload", "reset-cause"),
        ("rst_injection", "injection-suspected"),
    ];
    let (from_gateway, from_sensor) = (stop(gateway), stop(sensor));
    assert_exactly("gateway", &from_gateway, &expected);
    assert_exactly("sensor", &from_sensor, &expected);
    assert_eq!(detector_verdicts(&from_sensor), detector_verdicts(&from_gateway));
    let (g, s) = (latest_by_source(&from_gateway), latest_by_source(&from_sensor));
    let keys: BTreeSet<_> = g.keys().collect();
    assert_eq!(keys, s.keys().collect(), "the same alerts, subject by subject");
    for k in keys {
        assert_eq!((s[k]["packets"].as_u64(), &s[k]["host_role"]), (g[k]["packets"].as_u64(), &g[k]["host_role"]), "{k:?}");
    }

    // The evidence: whole frames, read back by tshark.
    let whole = |p: &(String, String, u64, u64, u64)| p.2 == p.3;
    let synack = evidence(&s[&("backscatter_synack".into(), "198.51.100.7".into())]);
    assert!(synack.iter().all(whole), "whole frames: {synack:?}");
    assert!(synack.iter().any(|p| p.0 == "198.51.100.7" && p.1 == "AS"), "the unsolicited SYN/ACK: {synack:?}");
    assert!(synack.iter().any(|p| p.0 == HOME_IP && p.1 == "R"), "our RST: {synack:?}");
    let goaway = s.iter().find(|(k, _)| k.0 == "rst_payload").map(|(_, a)| evidence(a)).expect("the reset-cause alert");
    assert!(goaway.iter().any(|p| p.0 == "192.0.2.80" && p.1.contains('R') && p.4 == 23 && whole(p)), "the RST with its text: {goaway:?}");
    let forged = s.iter().find(|(k, _)| k.0 == "rst_injection").map(|(_, a)| evidence(a)).expect("the injection alert");
    assert!(forged.iter().filter(|p| p.1.contains('R')).count() >= 2, "the forged RSTs: {forged:?}");
}
