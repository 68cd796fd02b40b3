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
