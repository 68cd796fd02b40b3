//! Each detector against real traffic in a namespace lab — the kernel's TCP stack, hping3 and
//! scapy (the [`stories`]) — through the real programs and the agent: every story must raise
//! exactly its expected detector and verdict, and ordinary traffic nothing.

use tests::{
    agent::Agent,
    lab::{Lab, PEER_IP},
    privileged, stories, tool,
    verdicts::{assert_exactly, latest_by_source},
};

fn ready(test: &str, tools: &[&str]) -> bool {
    privileged(test) && tools.iter().all(|t| tool(test, t))
}

fn stop_and_collect(mut agent: Agent) -> Vec<serde_json::Value> {
    agent.settle();
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    agent.alerts()
}

#[test]
fn normal_traffic_raises_nothing() {
    if !ready("normal_traffic_raises_nothing", &[]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    stories::normal_traffic(&lab);
    assert_exactly("normal traffic", &stop_and_collect(agent), &[]);
}

#[test]
fn spoofed_victims_syn_acks_and_resets_are_backscatter() {
    if !ready("spoofed_victims_syn_acks_and_resets_are_backscatter", &["hping3", "tshark"]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    stories::backscatter(&lab);
    let alerts = stop_and_collect(agent);
    assert_exactly("backscatter", &alerts, &[("backscatter_synack", "backscatter"), ("backscatter_rst", "backscatter")]);
    let latest = latest_by_source(&alerts);
    let synack = &latest[&("backscatter_synack".into(), "198.51.100.7".into())];
    assert_eq!(synack["packets"].as_u64(), Some(10));
    assert_eq!(synack["evidence"]["our_rst_answers"].as_u64(), Some(10), "our kernel answered every SYN/ACK with a RST");
    assert_eq!(latest[&("backscatter_rst".into(), "203.0.113.50".into())]["packets"].as_u64(), Some(10));
    // The evidence: the victim's unsolicited SYN/ACKs and our RSTs, each with the alert's id.
    let pcap = synack["evidence"]["pcap"].as_str().expect("the alert names its evidence file");
    let packets = tests::oracle::tshark_fields(std::path::Path::new(pcap), &["ip.src", "tcp.flags.str", "frame.comment"]);
    let id = synack["id"].as_str().unwrap();
    assert!(packets.iter().all(|p| p[2].contains(id)), "every packet names alert {id}: {packets:?}");
    let flags = |p: &Vec<String>| p[1].replace('·', "");
    assert!(packets.iter().any(|p| p[0] == "198.51.100.7" && flags(p) == "AS"), "the unsolicited SYN/ACK: {packets:?}");
    assert!(packets.iter().any(|p| p[0] == tests::lab::HOME_IP && flags(p) == "R"), "our RST: {packets:?}");
}

#[test]
fn go_away_responder_is_a_storm_reset_cause() {
    if !ready("go_away_responder_is_a_storm_reset_cause", &["/usr/bin/python3", "tshark"]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    stories::go_away(&lab);
    let alerts = stop_and_collect(agent);
    assert_exactly("go away", &alerts, &[("rst_payload", "reset-cause")]);
    let last = alerts.last().unwrap();
    assert_eq!(last["evidence"]["signature"], "storm-goaway");
    assert_eq!(last["evidence"]["payload_text"], "Go away, we're not home");
    assert_eq!((last["packets"].as_u64(), last["evidence"]["our_syns_before"].as_u64()), (Some(3), Some(3)));
    assert_eq!(last["host_role"], "possibly-compromised");
    // The evidence holds the reset with its text, as the wire carried it.
    let pcap = last["evidence"]["pcap"].as_str().expect("the alert names its evidence file");
    let packets = tests::oracle::tshark_fields(std::path::Path::new(pcap), &["ip.src", "tcp.flags.str", "tcp.len", "frame.comment"]);
    assert!(
        packets.iter().any(|p| p[0] == "192.0.2.80" && p[1].contains('R') && p[2] == "23" && p[3].contains(last["id"].as_str().unwrap())),
        "the RST with its 23-byte text: {packets:?}"
    );
}

#[test]
fn forged_resets_from_a_third_namespace_are_injection() {
    if !ready("forged_resets_from_a_third_namespace_are_injection", &["/usr/bin/python3"]) {
        return;
    }
    let mut lab = Lab::new();
    lab.add_third_party();
    let agent = Agent::start(&lab, &[]);
    stories::forged_resets(&lab);
    let alerts = stop_and_collect(agent);
    assert_exactly("forged RSTs", &alerts, &[("rst_injection", "injection-suspected")]);
    let signs = alerts
        .iter()
        .flat_map(|a| a["evidence"]["signs"].as_array().cloned().unwrap_or_default())
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(signs.contains("TTL 63"), "the forged RST's TTL differs from the server's: {signs}");
}

#[test]
fn syn_probes_to_many_ports_are_a_scan() {
    if !ready("syn_probes_to_many_ports_are_a_scan", &["hping3"]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    stories::syn_scan(&lab, 61000);
    let alerts = stop_and_collect(agent);
    assert_exactly("SYN scan", &alerts, &[("scan", "scan")]);
    let last = alerts.last().unwrap();
    assert_eq!(last["evidence"]["probe"], "SYN");
    assert_eq!(last["src_ip"], PEER_IP);
    assert!(last["evidence"]["ports"].as_u64().unwrap() >= 25, "{last}");
}

#[test]
fn nmaps_half_open_scan_is_a_scan_and_nothing_else() {
    if !ready("nmaps_half_open_scan_is_a_scan_and_nothing_else", &["nmap"]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    stories::nmap_syn_scan(&lab);
    let alerts = stop_and_collect(agent);
    // The scanner's kernel resets our two SYN/ACKs with another TTL than nmap's SYNs: its own
    // packets, not a forged RST.
    assert_exactly("nmap -sS", &alerts, &[("scan", "scan")]);
    let last = latest_by_source(&alerts)[&("scan".into(), PEER_IP.into())].clone();
    assert_eq!((last["evidence"]["probe"].as_str(), last["evidence"]["open_answers"].as_u64()), (Some("SYN"), Some(2)), "{last}");
}

#[test]
fn a_reflection_flood_at_us_is_one_victim_incident_not_bystander_backscatter() {
    if !ready("a_reflection_flood_at_us_is_one_victim_incident_not_bystander_backscatter", &["hping3"]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    stories::synack_reflection(&lab);
    let alerts = stop_and_collect(agent);
    assert_exactly("SYN/ACK reflection", &alerts, &[("backscatter_synack", "reflection")]);
    assert!(alerts.len() <= 3, "one incident, a few updates at most: {}", tests::verdicts::summaries(&alerts));
    let last = alerts.last().unwrap();
    assert_eq!((last["host_role"].as_str(), last["severity"].as_str()), (Some("victim"), Some("high")), "{last}");
    let reflectors = last["evidence"]["reflectors_estimate"].as_u64().unwrap();
    assert!((1500..=2500).contains(&reflectors), "about 2000 reflectors: {last}");
}

#[test]
fn spoofed_syn_flood_on_an_open_port_is_a_flood() {
    if !ready("spoofed_syn_flood_on_an_open_port_is_a_flood", &["hping3"]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    stories::syn_flood(&lab);
    let alerts = stop_and_collect(agent);
    assert_exactly("SYN flood", &alerts, &[("syn_flood", "flood")]);
    let last = alerts.last().unwrap();
    assert_eq!(last["dest_port"].as_u64(), Some(8080));
    assert!(last["evidence"]["syns"].as_u64().unwrap() >= 250, "{last}");
    assert_eq!(last["evidence"]["answered_with"], "syn-ack", "our host answered: {last}");
    assert!(last["evidence"]["distinct_sources_estimate"].as_u64().unwrap() >= 200, "spoofed sources: {last}");
}
