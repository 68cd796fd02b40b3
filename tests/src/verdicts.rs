//! Checking an agent's alerts against the verdicts a scenario should produce.

use std::collections::{BTreeMap, BTreeSet};

/// (detector, verdict) pairs present in `alerts`.
pub fn detector_verdicts(alerts: &[serde_json::Value]) -> BTreeSet<(String, String)> {
    alerts.iter().map(|a| (a["detector"].as_str().unwrap_or("").to_string(), a["verdict"].as_str().unwrap_or("").to_string())).collect()
}

/// The last line per (detector, src_ip): later lines carry the updated counts.
pub fn latest_by_source(alerts: &[serde_json::Value]) -> BTreeMap<(String, String), serde_json::Value> {
    let mut out = BTreeMap::new();
    for a in alerts {
        let key = (a["detector"].as_str().unwrap_or("").to_string(), a["src_ip"].as_str().unwrap_or("").to_string());
        out.insert(key, a.clone());
    }
    out
}

/// Panics unless exactly `expected` (detector, verdict) pairs were raised.
pub fn assert_exactly(what: &str, alerts: &[serde_json::Value], expected: &[(&str, &str)]) {
    let got = detector_verdicts(alerts);
    let want: BTreeSet<(String, String)> = expected.iter().map(|(d, v)| (d.to_string(), v.to_string())).collect();
    assert_eq!(got, want, "{what}: raised (left) vs expected (right); alerts:\n{}", summaries(alerts));
}

pub fn summaries(alerts: &[serde_json::Value]) -> String {
    alerts.iter().map(|a| format!("  [{}] {}", a["detector"], a["summary"])).collect::<Vec<_>>().join("\n")
}

/// A shared capture, the address that is "ours" in it, and the verdicts ../shared/pcaps/README.md
/// gives it, as (detector, verdict) pairs.
pub struct Expected {
    pub file: &'static str,
    pub home: &'static str,
    pub verdicts: &'static [(&'static str, &'static str)],
}

pub const SHARED_CAPTURES: &[Expected] = &[
    Expected { file: "scenarios/s01_normal_http.pcap", home: "10.77.0.2", verdicts: &[] },
    Expected { file: "scenarios/s02_closed_port.pcap", home: "10.77.0.2", verdicts: &[] },
    Expected {
        file: "scenarios/s03_backscatter.pcap",
        home: "10.77.0.2",
        verdicts: &[("backscatter_synack", "backscatter"), ("backscatter_rst", "backscatter")],
    },
    Expected { file: "scenarios/s06_storm_goaway.pcap", home: "10.77.0.2", verdicts: &[("rst_payload", "reset-cause")] },
    Expected { file: "scenarios/s08_odd_flags.pcap", home: "10.77.0.2", verdicts: &[("invalid_flags", "invalid-flags")] },
    Expected { file: "zeek/rst-inject-rae.pcap", home: "1.2.0.2", verdicts: &[("rst_injection", "injection-suspected")] },
    Expected {
        file: "zeek/qi_internet_SYNACK_curl_jsonip.pcap",
        home: "178.200.100.200",
        verdicts: &[("rst_injection", "injection-suspected")],
    },
    Expected { file: "zeek/single-rst.pcap", home: "10.0.0.80", verdicts: &[("backscatter_rst", "backscatter")] },
    Expected { file: "zeek/syn-then-rst.pcap", home: "1.1.1.1", verdicts: &[] },
    Expected { file: "zeek/syn-then-ack-then-rst.pcap", home: "1.1.1.1", verdicts: &[] },
    Expected { file: "zeek/syn-then-stuff-then-rst.pcap", home: "1.1.1.2", verdicts: &[("invalid_flags", "invalid-flags")] },
    Expected { file: "zeek/syn-synack.pcap", home: "141.142.228.5", verdicts: &[] },
];

/// The row for `file`.
pub fn expected(file: &str) -> &'static Expected {
    SHARED_CAPTURES.iter().find(|e| e.file == file).unwrap_or_else(|| panic!("{file} has no expectation"))
}
