//! Alerts: the type every detector returns and its JSON-line (EVE-inspired) and human renderings.
//! [`dedup`] keeps floods from flooding the log; [`sinks`] writes alerts out (terminal, JSON-lines
//! file, [`syslog`], the recent list behind `/alerts`).

pub mod dedup;
pub mod sinks;
pub mod syslog;

pub use dedup::Deduper;
pub use sinks::{AlertFormat, AlertSinks, TerminalFormat};

use std::{
    net::IpAddr,
    time::{Duration, UNIX_EPOCH},
};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// What this host is in the story an alert tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostRole {
    /// Someone else is attacked; our address was forged and we only see the echoes.
    Bystander,
    /// We are attacked (flooded, probed, our connections reset by a third party).
    Victim,
    /// Our host behaves like an attacker or a bot: worth a look at that host.
    PossiblyCompromised,
    /// Nothing wrong with this host; the alert records what others did.
    Observer,
}

/// One alert. Addresses and ports live here, never in metric labels.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// RFC 3339.
    pub timestamp: String,
    /// The incident's id: the same on each update of one incident (detector, interface, subject,
    /// start), and in the evidence file's name and packet comments.
    pub id: String,
    pub event_type: &'static str,
    pub detector: &'static str,
    pub severity: Severity,
    pub verdict: &'static str,
    pub host_role: HostRole,
    pub summary: String,
    pub explanation: String,
    pub src_ip: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dest_ip: Option<IpAddr>,
    pub dest_port: Option<u16>,
    pub iface: String,
    pub first_seen: String,
    pub last_seen: String,
    pub packets: u64,
    pub flows: u64,
    pub evidence: serde_json::Value,
    /// The tunnel the traffic came through (`kind`, and `outer_src`/`outer_dst` but for PPPoE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<serde_json::Value>,
    /// Deduplication key within the detector (not rendered).
    #[serde(skip)]
    pub key: String,
    /// Wall-clock ns of `timestamp` (not rendered).
    #[serde(skip)]
    pub at_ns: u64,
    /// Wall-clock ns of `first_seen` and `last_seen` (not rendered).
    #[serde(skip)]
    pub first_seen_ns: u64,
    #[serde(skip)]
    pub last_seen_ns: u64,
}

/// FNV-1a (64 bits) over `parts`, each followed by a 0xff separator: stable across runs and
/// builds, which `std`'s hasher is not. Alert ids and the evidence writer's frame matching use it.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A short, stable id (in hex) of an incident's identity.
fn incident_id(parts: &[&[u8]]) -> String {
    format!("{:016x}", fnv1a(parts))
}

/// RFC 3339 with microseconds, UTC.
pub fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

/// Everything an alert needs besides its words; detectors fill one and call [`AlertDraft::build`].
pub struct AlertDraft {
    pub detector: &'static str,
    pub severity: Severity,
    pub verdict: &'static str,
    pub host_role: HostRole,
    pub key: String,
    pub iface: String,
    pub src: Option<(IpAddr, Option<u16>)>,
    pub dest: Option<(IpAddr, Option<u16>)>,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub flows: u64,
}

impl AlertDraft {
    pub fn build(self, now_ns: u64, summary: String, explanation: String, evidence: serde_json::Value) -> Alert {
        let id = incident_id(&[self.detector.as_bytes(), self.iface.as_bytes(), self.key.as_bytes(), &self.first_seen_ns.to_le_bytes()]);
        Alert {
            timestamp: rfc3339(now_ns),
            id,
            event_type: "alert",
            detector: self.detector,
            severity: self.severity,
            verdict: self.verdict,
            host_role: self.host_role,
            summary,
            explanation,
            src_ip: self.src.map(|s| s.0),
            src_port: self.src.and_then(|s| s.1),
            dest_ip: self.dest.map(|d| d.0),
            dest_port: self.dest.and_then(|d| d.1),
            iface: self.iface,
            tunnel: None,
            first_seen: rfc3339(self.first_seen_ns),
            last_seen: rfc3339(self.last_seen_ns),
            packets: self.packets,
            flows: self.flows,
            evidence,
            key: self.key,
            at_ns: now_ns,
            first_seen_ns: self.first_seen_ns,
            last_seen_ns: self.last_seen_ns,
        }
    }
}

impl Alert {
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// For people at a terminal: what happened, in words, then the evidence in one line.
    pub fn to_text(&self) -> String {
        let who = |ip: Option<IpAddr>, port: Option<u16>| match (ip, port) {
            (Some(ip), Some(p)) => format!("{ip}:{p}"),
            (Some(ip), None) => ip.to_string(),
            _ => "-".into(),
        };
        format!(
            "{} {} {} [{}] on {}: {}\n  {} -> {}, {} in {}, {} .. {}\n  {}\n  evidence: {}\n",
            self.timestamp,
            self.severity.name().to_uppercase(),
            self.verdict,
            self.detector,
            self.iface,
            self.summary,
            who(self.src_ip, self.src_port),
            who(self.dest_ip, self.dest_port),
            counted(self.packets, "packet"),
            counted(self.flows, "flow"),
            self.first_seen,
            self.last_seen,
            self.explanation,
            self.evidence
        )
    }
}

/// "1 packet", "3 packets".
pub fn counted(n: u64, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}

/// A minimal alert for the alert module's own tests (here and in `dedup`).
#[cfg(test)]
pub(crate) fn test_alert(key: &str, at_s: u64, packets: u64) -> Alert {
    AlertDraft {
        detector: "test",
        severity: Severity::Low,
        verdict: "test",
        host_role: HostRole::Observer,
        key: key.into(),
        iface: "eth0".into(),
        src: None,
        dest: None,
        first_seen_ns: 0,
        last_seen_ns: at_s * 1_000_000_000,
        packets,
        flows: 1,
    }
    .build(at_s * 1_000_000_000, "s".into(), "e".into(), serde_json::json!({}))
}

#[cfg(test)]
mod tests {
    use super::test_alert as alert;

    #[test]
    fn json_line_has_the_eve_fields() {
        let a = alert("a", 1_700_000_000, 3);
        let v: serde_json::Value = serde_json::from_str(&a.to_json_line()).unwrap();
        for field in [
            "timestamp",
            "event_type",
            "detector",
            "severity",
            "verdict",
            "summary",
            "explanation",
            "src_ip",
            "dest_port",
            "iface",
            "first_seen",
            "last_seen",
            "packets",
            "flows",
            "evidence",
        ] {
            assert!(v.get(field).is_some(), "{field} missing");
        }
        assert_eq!(v["event_type"], "alert");
        assert!(v["timestamp"].as_str().unwrap().starts_with("2023-11-14T22:13:20"));
    }
}
