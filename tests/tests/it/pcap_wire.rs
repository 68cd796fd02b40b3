//! Every shared scenario capture, played on the wire into the monitored veth: the home address's
//! frames leave through it (egress), the rest arrive from the peer (ingress). The agent's per-flags
//! counts by hook must equal tshark's counts by direction — and the README's ground truth.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use tests::{
    agent::Agent,
    lab::{HOME_IP, Lab},
    metrics_text, oracle, privileged, shared_dir, tool,
};

fn scenarios() -> Vec<PathBuf> {
    let dir = shared_dir().join("pcaps/scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    v
}

/// The README's table for the scenarios, written out: (file stem, hook, flags byte, packets).
const README_TRUTH: &[(&str, &str, u8, u64)] = &[
    ("s02_closed_port", "ingress", 0x02, 3),
    ("s02_closed_port", "egress", 0x14, 3),
    ("s03_backscatter", "ingress", 0x12, 30),
    ("s03_backscatter", "ingress", 0x14, 10),
    ("s03_backscatter", "egress", 0x04, 30),
    ("s06_storm_goaway", "egress", 0x02, 3),
    ("s06_storm_goaway", "ingress", 0x14, 3),
    ("s08_odd_flags", "egress", 0x14, 12),
    ("s08_odd_flags", "ingress", 0xff, 4),
    ("s08_odd_flags", "ingress", 0x29, 4),
];

#[test]
fn scenario_captures_on_the_wire_give_tsharks_counts() {
    let test = "scenario_captures_on_the_wire_give_tsharks_counts";
    if !privileged(test) || !tool(test, "tshark") {
        return;
    }
    let files = scenarios();
    assert!(files.len() >= 5, "the shared scenarios are there: {files:?}");
    for pcap in files {
        let lab = Lab::new();
        let agent = Agent::start(&lab, &[]);
        let (n_in, n_out) = oracle::replay_on_wire(&lab, &pcap, HOME_IP.parse::<IpAddr>().unwrap());
        agent.settle_after(n_in as u64, n_out as u64);
        let counted = metrics_text::tcp_by_hook(&agent.metrics());
        let expected: BTreeMap<(String, u8), u64> = oracle::tshark_flags_by_direction(&pcap, HOME_IP)
            .into_iter()
            .map(|((dir, f), n)| ((if dir == "in" { "ingress" } else { "egress" }.to_string(), f), n))
            .collect();
        let name = pcap.file_stem().unwrap().to_string_lossy().to_string();
        assert_eq!(counted, expected, "{name}: flagprobe (left) vs tshark (right); sent {n_in} in, {n_out} out");
        for (_, hook, flags, n) in README_TRUTH.iter().filter(|t| t.0 == name) {
            assert_eq!(counted.get(&(hook.to_string(), *flags)), Some(n), "{name}: README says {hook} {flags:#04x} x{n}");
        }
    }
}
