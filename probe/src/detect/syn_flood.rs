//! SYN floods against our services: SYNs that our host answers with SYN/ACK but that never complete
//! the handshake. Per service (our address and port): the half-open count, distinct sources and the
//! SYN rate. The SYN/ACKs we send to forged sources are the backscatter someone else sees.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{DetectorConfig, Invalid, check_window, check_at_least_one, 
    Detector, FlowView,
    window::{CappedSet, PerMinute, Windowed},
};
use crate::alert::{Alert, AlertDraft, HostRole, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub enabled: bool,
    pub window_secs: u64,
    /// Half-open connections to one service before we call it a flood.
    pub min_half_open: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true, window_secs: 30, min_half_open: 50 }
    }
}

impl DetectorConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_window("window-secs", self.window_secs)?;
        check_at_least_one("min-half-open", self.min_half_open as u64)?;
        Ok(())
    }

    fn build(&self) -> Box<dyn Detector> {
        Box::new(SynFlood::new(self.clone()))
    }
}

struct Service {
    iface: String,
    first_seen: u64,
    last_seen: u64,
    syns: u64,
    half_open: CappedSet<(IpAddr, u16)>,
    completed: u64,
    sources: CappedSet<IpAddr>,
    rate: PerMinute,
}

pub struct SynFlood {
    config: Config,
    services: Windowed<(IpAddr, u16), Service>,
}

impl SynFlood {
    pub fn new(config: Config) -> Self {
        let w = config.window_secs * 1_000_000_000;
        SynFlood { config, services: Windowed::new(w, 10_000) }
    }
}

impl Detector for SynFlood {
    fn observe_flows(&mut self, now_ns: u64, flows: &[FlowView<'_>]) -> Vec<Alert> {
        let mut touched = Vec::new();
        for f in flows {
            if !f.remote_initiated() {
                continue;
            }
            let (r, r0) = f.side(f.remote());
            let (l, _) = f.side(f.local);
            if r.syn == 0 || l.syn_ack == 0 {
                continue;
            }
            let svc = (f.local_addr(), f.local_port());
            let s = self.services.touch(svc, now_ns, || Service {
                iface: f.iface.to_string(),
                first_seen: f.first_seen(),
                last_seen: 0,
                syns: 0,
                half_open: CappedSet::new(200_000),
                completed: 0,
                sources: CappedSet::new(100_000),
                rate: PerMinute::default(),
            });
            let new_syns = (r.syn - r0.syn) as u64;
            s.syns += new_syns;
            s.rate.add(f.last_seen(), new_syns);
            s.last_seen = s.last_seen.max(f.last_seen());
            s.sources.insert(f.remote_addr());
            let completed = r.pure_ack + r.data + r.fin + r.rst > 0;
            if completed {
                s.completed += u64::from(r0.pure_ack + r0.data + r0.fin + r0.rst == 0);
            } else {
                s.half_open.insert((f.remote_addr(), f.remote_port()));
            }
            touched.push(svc);
        }
        touched.sort();
        touched.dedup();
        let mut alerts = Vec::new();
        for svc in touched {
            let Some(s) = self.services.get(&svc) else { continue };
            let half_open = s.half_open.len() + s.half_open.overflow as usize;
            if half_open >= self.config.min_half_open {
                alerts.push(render(svc, s, half_open as u64, now_ns));
            }
        }
        alerts
    }

    fn expire(&mut self, now_ns: u64) {
        self.services.expire(now_ns);
    }
}

fn render((addr, port): (IpAddr, u16), s: &Service, half_open: u64, now_ns: u64) -> Alert {
    let sources = s.sources.len() as u64 + s.sources.overflow;
    let secs = (s.last_seen.saturating_sub(s.first_seen) as f64 / 1e9).max(1.0);
    let rate = s.syns as f64 / secs;
    let summary = format!("SYN flood on {addr}:{port}: {half_open} half-open connections from {sources} sources ({rate:.0} SYN/s)");
    let explanation = format!(
        "Our service {addr}:{port} received {} SYNs; it answered with SYN/ACKs, but {half_open} of those handshakes never \
         completed (only {} did). That is a SYN flood: the sender wants to fill the service's queue of half-open \
         connections. {} The SYN/ACKs we send to forged sources land on innocent hosts as backscatter. Make sure SYN cookies \
         are on (net.ipv4.tcp_syncookies=1), and rate-limit upstream if the service suffers.",
        s.syns,
        s.completed,
        if sources > 10 { format!("The {sources} different sources suggest forged (spoofed) addresses.") } else { String::new() },
    );
    AlertDraft {
        detector: "syn_flood",
        severity: Severity::High,
        verdict: "flood",
        host_role: HostRole::Victim,
        key: format!("{addr}:{port}"),
        iface: s.iface.clone(),
        src: None,
        dest: Some((addr, Some(port))),
        first_seen_ns: s.first_seen,
        last_seen_ns: s.last_seen,
        packets: s.syns,
        flows: half_open,
    }
    .build(
        now_ns,
        summary,
        explanation,
        json!({ "half_open": half_open, "completed": s.completed, "sources": sources, "syn_per_second": rate, "peak_syn_per_minute": s.rate.peak }),
    )
}

#[cfg(test)]
mod tests {
    use probe_common::flags::{ACK, SYN};

    use super::*;
    use crate::detect::testkit::{S, Script, pkt};

    #[test]
    fn many_half_open_handshakes_from_spoofed_sources_are_a_flood() {
        let mut s = Script::new();
        let mut d = SynFlood::new(Config::default());
        for i in 0..60u16 {
            let src = format!("198.18.{}.{}", i / 200, i % 200 + 1);
            s.send(S, pkt(&src, 1024 + i, "10.0.0.2", 8080, SYN));
            s.send(S, pkt("10.0.0.2", 8080, &src, 1024 + i, SYN | ACK));
        }
        let alerts = s.poll(&mut d, 2 * S);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].verdict, alerts[0].flows), ("flood", 60));
        assert_eq!(alerts[0].evidence["sources"], 60);
    }

    #[test]
    fn completed_handshakes_are_not_a_flood() {
        let mut s = Script::new();
        let mut d = SynFlood::new(Config::default());
        for i in 0..60u16 {
            s.send(S, pkt("192.0.2.5", 1024 + i, "10.0.0.2", 443, SYN));
            s.send(S, pkt("10.0.0.2", 443, "192.0.2.5", 1024 + i, SYN | ACK));
            s.send(S, pkt("192.0.2.5", 1024 + i, "10.0.0.2", 443, ACK));
        }
        assert!(s.poll(&mut d, 2 * S).is_empty());
    }
}
