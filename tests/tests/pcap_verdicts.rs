//! Every shared capture — the scenarios and Zeek's traces — played on the wire into the monitored
//! veth with its own timing, must raise exactly the verdicts ../shared/pcaps/README.md gives it, and
//! nothing else. Each capture gets its own lab, so they run in parallel.

use std::net::IpAddr;

use tests::{
    agent::Agent,
    lab::Lab,
    oracle, privileged, shared_dir,
    verdicts::{assert_exactly, latest_by_source},
};

/// Play `file` (under ../shared/pcaps) with `home` as our address; return the alert lines.
fn verdicts_for(test: &str, file: &str, home: &str) -> Option<Vec<serde_json::Value>> {
    if !privileged(test) {
        return None;
    }
    let lab = Lab::new();
    let mut agent = Agent::start_with_home(&lab, &format!("{home}/32"), &[]);
    oracle::replay_on_wire_timed(&lab, &shared_dir().join("pcaps").join(file), home.parse::<IpAddr>().unwrap());
    agent.settle();
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    Some(agent.alerts())
}

#[test]
fn s01_normal_http_raises_nothing() {
    let Some(a) = verdicts_for("s01", "scenarios/s01_normal_http.pcap", "10.77.0.2") else { return };
    assert_exactly("s01", &a, &[]);
}

#[test]
fn s02_closed_port_is_normal_rejection() {
    let Some(a) = verdicts_for("s02", "scenarios/s02_closed_port.pcap", "10.77.0.2") else { return };
    assert_exactly("s02", &a, &[]);
}

#[test]
fn s03_backscatter_names_three_syn_ack_victims_and_one_rst_victim() {
    let Some(a) = verdicts_for("s03", "scenarios/s03_backscatter.pcap", "10.77.0.2") else { return };
    assert_exactly("s03", &a, &[("backscatter_synack", "backscatter"), ("backscatter_rst", "backscatter")]);
    let latest = latest_by_source(&a);
    for victim in ["10.77.0.1", "198.51.100.7", "203.0.113.9"] {
        let v = &latest[&("backscatter_synack".to_string(), victim.to_string())];
        assert_eq!((v["packets"].as_u64(), v["evidence"]["our_rst_answers"].as_u64()), (Some(10), Some(10)), "{victim}");
        assert_eq!(v["host_role"], "bystander");
    }
    let r = &latest[&("backscatter_rst".to_string(), "203.0.113.50".to_string())];
    assert_eq!(r["packets"].as_u64(), Some(10));
    assert_eq!(latest.len(), 4, "three SYN/ACK victims and one RST victim");
}

#[test]
fn s06_go_away_resets_match_the_storm_signature() {
    let Some(a) = verdicts_for("s06", "scenarios/s06_storm_goaway.pcap", "10.77.0.2") else { return };
    assert_exactly("s06", &a, &[("rst_payload", "reset-cause")]);
    let last = a.last().unwrap();
    assert_eq!(last["evidence"]["signature"], "storm-goaway");
    assert_eq!(last["evidence"]["payload_text"], "Go away, we're not home");
    assert_eq!((last["packets"].as_u64(), last["evidence"]["our_syns_before"].as_u64()), (Some(3), Some(3)));
}

#[test]
fn s08_odd_flags_are_invalid_combinations() {
    let Some(a) = verdicts_for("s08", "scenarios/s08_odd_flags.pcap", "10.77.0.2") else { return };
    assert_exactly("s08", &a, &[("invalid_flags", "invalid-flags")]);
    let last = a.last().unwrap();
    let kinds: Vec<&str> = last["evidence"]["kinds"].as_array().unwrap().iter().filter_map(|k| k.as_str()).collect();
    for k in ["syn-fin", "syn-rst", "null", "xmas", "all-flags"] {
        assert!(kinds.contains(&k), "{k} named: {kinds:?}");
    }
}

#[test]
fn zeek_rst_inject_rae_is_injection() {
    let Some(a) = verdicts_for("rst-inject-rae", "zeek/rst-inject-rae.pcap", "1.2.0.2") else { return };
    assert_exactly("rst-inject-rae", &a, &[("rst_injection", "injection-suspected")]);
    assert!(a[0]["summary"].as_str().unwrap().contains("instead of"), "the RST/ACK's ack does not match our SYN: {}", a[0]["summary"]);
}

#[test]
fn zeek_quantum_insert_is_injection_by_ttl() {
    let Some(a) = verdicts_for("qi", "zeek/qi_internet_SYNACK_curl_jsonip.pcap", "178.200.100.200") else { return };
    assert_exactly("qi", &a, &[("rst_injection", "injection-suspected")]);
    assert!(a[0]["summary"].as_str().unwrap().contains("TTL 56"), "{}", a[0]["summary"]);
}

#[test]
fn zeek_single_rst_without_a_session_is_backscatter() {
    let Some(a) = verdicts_for("single-rst", "zeek/single-rst.pcap", "10.0.0.80") else { return };
    assert_exactly("single-rst", &a, &[("backscatter_rst", "backscatter")]);
}

#[test]
fn zeek_syn_then_rst_and_half_open_raise_nothing() {
    for (file, home) in
        [("zeek/syn-then-rst.pcap", "1.1.1.1"), ("zeek/syn-then-ack-then-rst.pcap", "1.1.1.1"), ("zeek/syn-synack.pcap", "141.142.228.5")]
    {
        let Some(a) = verdicts_for(file, file, home) else { return };
        assert_exactly(file, &a, &[]);
    }
}

#[test]
fn zeek_syn_then_stuff_then_rst_has_a_fin_without_ack() {
    let Some(a) = verdicts_for("syn-then-stuff-then-rst", "zeek/syn-then-stuff-then-rst.pcap", "1.1.1.2") else { return };
    assert_exactly("syn-then-stuff-then-rst", &a, &[("invalid_flags", "invalid-flags")]);
    assert_eq!(a[0]["evidence"]["kinds"][0], "fin-without-ack");
}
