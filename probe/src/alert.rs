//! Alerts: the type every detector returns, its JSON-line (EVE-inspired) and human renderings, the
//! deduplication that keeps floods from flooding the log, and the sinks (terminal, JSON-lines file,
//! the recent list behind `/alerts`).

use std::{
    collections::{HashMap, VecDeque},
    io::Write,
    net::IpAddr,
    path::Path,
    sync::Mutex,
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
    /// Deduplication key within the detector (not rendered).
    #[serde(skip)]
    pub key: String,
    /// Wall-clock ns of `timestamp` (not rendered).
    #[serde(skip)]
    pub at_ns: u64,
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
        Alert {
            timestamp: rfc3339(now_ns),
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
            first_seen: rfc3339(self.first_seen_ns),
            last_seen: rfc3339(self.last_seen_ns),
            packets: self.packets,
            flows: self.flows,
            evidence,
            key: self.key,
            at_ns: now_ns,
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
            "{} {} {} [{}] on {}: {}\n  {} -> {}, {} packets in {} flows, {} .. {}\n  {}\n  evidence: {}\n",
            self.timestamp,
            self.severity.name().to_uppercase(),
            self.verdict,
            self.detector,
            self.iface,
            self.summary,
            who(self.src_ip, self.src_port),
            who(self.dest_ip, self.dest_port),
            self.packets,
            self.flows,
            self.first_seen,
            self.last_seen,
            self.explanation,
            self.evidence
        )
    }
}

/// One alert per detector and key per window; later changes wait, and go out as one updated
/// line when the window has passed (or at [`Deduper::flush_all`]).
pub struct Deduper {
    window_ns: u64,
    last_emit: HashMap<(&'static str, String), u64>,
    pending: HashMap<(&'static str, String), Alert>,
    /// Bound on remembered keys: a flood of distinct keys must not grow memory without end.
    max_keys: usize,
    /// New keys each detector may open per window; beyond it alerts are held back and counted.
    new_keys_per_window: u64,
    /// Per detector: (window start, new keys this window, alerts held back this window).
    budget: HashMap<&'static str, (u64, u64, u64)>,
    /// Alerts held back since the last [`Deduper::take_suppressed`], per detector.
    suppressed: HashMap<&'static str, u64>,
}

/// New alert keys per detector per window before the rest are only counted.
pub const NEW_KEYS_PER_WINDOW: u64 = 50;

impl Deduper {
    pub fn new(window: Duration) -> Self {
        Deduper {
            window_ns: window.as_nanos() as u64,
            last_emit: HashMap::new(),
            pending: HashMap::new(),
            max_keys: 100_000,
            new_keys_per_window: NEW_KEYS_PER_WINDOW,
            budget: HashMap::new(),
            suppressed: HashMap::new(),
        }
    }

    /// Alerts held back by the per-detector budget since the last call (for the metrics).
    pub fn take_suppressed(&mut self) -> Vec<(&'static str, u64)> {
        self.suppressed.drain().collect()
    }

    /// The alert to emit now, if any.
    pub fn offer(&mut self, alert: Alert) -> Option<Alert> {
        let id = (alert.detector, alert.key.clone());
        let last = self.last_emit.get(&id).copied();
        match last {
            Some(at) if alert.at_ns.saturating_sub(at) < self.window_ns => {
                self.pending.insert(id, alert);
                None
            }
            None if !self.within_budget(alert.detector, alert.at_ns) => None,
            _ => {
                if self.last_emit.len() >= self.max_keys {
                    let cutoff = alert.at_ns.saturating_sub(self.window_ns);
                    self.last_emit.retain(|_, at| *at >= cutoff);
                }
                self.last_emit.insert(id.clone(), alert.at_ns);
                self.pending.remove(&id);
                Some(alert)
            }
        }
    }

    /// Count a new key against its detector's budget for this window.
    fn within_budget(&mut self, detector: &'static str, at_ns: u64) -> bool {
        let window = self.window_ns;
        let b = self.budget.entry(detector).or_insert((at_ns, 0, 0));
        if at_ns.saturating_sub(b.0) >= window {
            *b = (at_ns, 0, 0);
        }
        if b.1 < self.new_keys_per_window {
            b.1 += 1;
            return true;
        }
        b.2 += 1;
        *self.suppressed.entry(detector).or_default() += 1;
        false
    }

    /// Pending updates whose window has passed by `now_ns`.
    pub fn flush(&mut self, now_ns: u64) -> Vec<Alert> {
        let due: Vec<_> = self
            .pending
            .keys()
            .filter(|id| self.last_emit.get(*id).is_none_or(|at| now_ns.saturating_sub(*at) >= self.window_ns))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for id in due {
            if let Some(mut a) = self.pending.remove(&id) {
                self.last_emit.insert(id, now_ns);
                a.at_ns = now_ns;
                out.push(a);
            }
        }
        out.sort_by_key(|a| a.at_ns);
        out
    }

    /// Every pending update, now (shutdown, end of a replay).
    pub fn flush_all(&mut self) -> Vec<Alert> {
        let mut out: Vec<Alert> = self.pending.drain().map(|(_, a)| a).collect();
        out.sort_by_key(|a| a.at_ns);
        out
    }
}

/// How the terminal sink writes alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalFormat {
    Text,
    Json,
    Off,
}

/// Where alerts go: stdout, an appended JSON-lines file, and the recent list for `/alerts`.
pub struct AlertSinks {
    outputs: Mutex<Outputs>,
    recent: Mutex<VecDeque<Alert>>,
    recent_max: usize,
}

struct Outputs {
    terminal: TerminalFormat,
    file: Option<std::fs::File>,
}

fn open_append(p: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(p)
}

impl AlertSinks {
    /// `file` is opened for appending (created if missing, never truncated).
    pub fn new(terminal: TerminalFormat, file: Option<&Path>) -> std::io::Result<Self> {
        let file = file.map(open_append).transpose()?;
        Ok(AlertSinks { outputs: Mutex::new(Outputs { terminal, file }), recent: Mutex::new(VecDeque::new()), recent_max: 1000 })
    }

    /// Switch outputs (a reload): the new file is opened first, so a failure changes nothing.
    pub fn reconfigure(&self, terminal: TerminalFormat, file: Option<&Path>) -> std::io::Result<()> {
        let file = file.map(open_append).transpose()?;
        *self.outputs.lock().unwrap_or_else(|e| e.into_inner()) = Outputs { terminal, file };
        Ok(())
    }

    pub fn emit(&self, alert: &Alert) {
        let mut outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        match outputs.terminal {
            TerminalFormat::Text => {
                let _ = std::io::stdout().lock().write_all(alert.to_text().as_bytes());
            }
            TerminalFormat::Json => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", alert.to_json_line());
                let _ = out.flush();
            }
            TerminalFormat::Off => {}
        }
        if let Some(f) = outputs.file.as_mut()
            && let Err(e) = writeln!(f, "{}", alert.to_json_line())
        {
            tracing::warn!(error = %e, "writing the alerts file");
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= self.recent_max {
            recent.pop_front();
        }
        recent.push_back(alert.clone());
    }

    /// The most recent alerts, oldest first, as a JSON array.
    pub fn recent_json(&self) -> String {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_string(&recent.iter().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(key: &str, at_s: u64, packets: u64) -> Alert {
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

    #[test]
    fn one_alert_per_key_per_window_then_an_update() {
        let mut d = Deduper::new(Duration::from_secs(60));
        assert!(d.offer(alert("a", 100, 1)).is_some());
        assert!(d.offer(alert("a", 110, 5)).is_none());
        assert!(d.offer(alert("b", 111, 1)).is_some(), "another key is independent");
        assert!(d.offer(alert("a", 120, 9)).is_none());
        assert!(d.flush(150 * 1_000_000_000).is_empty(), "window not over");
        let updates = d.flush(161 * 1_000_000_000);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].packets, 9, "the latest counts");
        assert!(d.flush_all().is_empty());
    }

    #[test]
    fn a_flood_of_new_keys_is_capped_and_counted() {
        let mut d = Deduper::new(Duration::from_secs(60));
        let emitted = (0..500).filter(|i| d.offer(alert(&format!("victim-{i}"), 100, 1)).is_some()).count();
        assert_eq!(emitted as u64, NEW_KEYS_PER_WINDOW);
        assert_eq!(d.take_suppressed(), vec![("test", 500 - NEW_KEYS_PER_WINDOW)]);
        assert!(d.offer(alert("victim-0", 110, 2)).is_none(), "known keys still update");
        assert!(d.offer(alert("fresh", 200, 1)).is_some(), "a new window, a new budget");
    }

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
