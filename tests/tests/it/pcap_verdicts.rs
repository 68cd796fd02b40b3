//! Every shared capture — the scenarios and Zeek's traces — played on the wire into the monitored
//! veth with its own timing, must raise exactly the verdicts ../shared/pcaps/README.md gives it, and
//! nothing else. Each capture gets its own lab, so they run in parallel.

use std::net::IpAddr;

use tests::{
    agent::Agent,
    lab::Lab,
    oracle, privileged, shared_dir,
    verdicts::{Expected, assert_exactly, expected, latest_by_source},
};

/// Play `file` (under ../shared/pcaps) with its home address; return the alert lines after
/// checking they are exactly the expected verdicts.
fn verdicts_for(test: &str, file: &str) -> Option<Vec<serde_json::Value>> {
    if !privileged(test) {
        return None;
    }
    let Expected { home, verdicts, .. } = expected(file);
    let lab = Lab::new();
    let mut agent = Agent::start_with_home(&lab, &format!("{home}/32"), &[]);
    let (n_in, n_out) = oracle::replay_on_wire_timed(&lab, &shared_dir().join("pcaps").join(file), home.parse::<IpAddr>().unwrap());
    agent.settle_after(n_in as u64, n_out as u64);
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    let alerts = agent.alerts();
    assert_exactly(file, &alerts, verdicts);
    Some(alerts)
}

#[test]
fn s01_normal_http_raises_nothing() {
    verdicts_for("s01", "scenarios/s01_normal_http.pcap");
}

#[test]
fn s02_closed_port_is_normal_rejection() {
    verdicts_for("s02", "scenarios/s02_closed_port.pcap");
}

#[test]
fn s03_backscatter_names_three_syn_ack_victims_and_one_rst_victim() {
    let Some(a) = verdicts_for("s03", "scenarios/s03_backscatter.pcap") else { return };
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
    let Some(a) = verdicts_for("s06", "scenarios/s06_storm_goaway.pcap") else { return };
    let last = a.last().unwrap();
    assert_eq!(last["evidence"]["signature"], "storm-goaway");
    assert_eq!(last["evidence"]["payload_text"], "Go away, we're not home");
    assert_eq!((last["packets"].as_u64(), last["evidence"]["our_syns_before"].as_u64()), (Some(3), Some(3)));
}

#[test]
fn s08_odd_flags_are_invalid_combinations() {
    let Some(a) = verdicts_for("s08", "scenarios/s08_odd_flags.pcap") else { return };
    let last = a.last().unwrap();
    let kinds: Vec<&str> = last["evidence"]["kinds"].as_array().unwrap().iter().filter_map(|k| k.as_str()).collect();
    for k in ["syn-fin", "syn-rst", "null", "xmas", "all-flags"] {
        assert!(kinds.contains(&k), "{k} named: {kinds:?}");
    }
}

#[test]
fn zeek_rst_inject_rae_is_injection() {
    let Some(a) = verdicts_for("rst-inject-rae", "zeek/rst-inject-rae.pcap") else { return };
    assert!(a[0]["summary"].as_str().unwrap().contains("instead of"), "the RST/ACK's ack does not match our SYN: {}", a[0]["summary"]);
}

#[test]
fn zeek_quantum_insert_is_injection_by_ttl() {
    let Some(a) = verdicts_for("qi", "zeek/qi_internet_SYNACK_curl_jsonip.pcap") else { return };
    assert!(a[0]["summary"].as_str().unwrap().contains("TTL 56"), "{}", a[0]["summary"]);
}

#[test]
fn zeek_single_rst_without_a_session_is_backscatter() {
    verdicts_for("single-rst", "zeek/single-rst.pcap");
}

#[test]
fn zeek_syn_then_rst_and_half_open_raise_nothing() {
    for file in ["zeek/syn-then-rst.pcap", "zeek/syn-then-ack-then-rst.pcap", "zeek/syn-synack.pcap"] {
        if verdicts_for(file, file).is_none() {
            return;
        }
    }
}

#[test]
fn zeek_syn_then_stuff_then_rst_has_a_fin_without_ack() {
    let Some(a) = verdicts_for("syn-then-stuff-then-rst", "zeek/syn-then-stuff-then-rst.pcap") else { return };
    assert_eq!(a[0]["evidence"]["kinds"][0], "fin-without-ack");
}
