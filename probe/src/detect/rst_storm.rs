//! Many resets in a short window, three stories:
//! - one remote resets many of our established connections (a middlebox or a censor tearing them
//!   down, or a service crashing): verdict `rst-storm`;
//! - we reset one remote across many of our ports while it sends us connection traffic that is not a
//!   recognised probe (the `scan` detector names those): we are being probed, verdict `probed`;
//! - one of our hosts gets RST/ACKs from many distinct remotes in answer to its own SYNs: it is
//!   scanning — possibly compromised, verdict `outbound-scan`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Detector, DetectorConfig, FlowView, Invalid, check_at_least_one, check_window,
    window::{CappedSet, Windowed},
};
use crate::alert::{Alert, AlertDraft, HostRole, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub enabled: bool,
    pub window_secs: u64,
    /// Distinct local ports reset by / resetting one remote.
    pub min_ports: usize,
    /// Distinct remotes refusing one local host's SYNs.
    pub min_remotes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true, window_secs: 10, min_ports: 20, min_remotes: 20 }
    }
}

impl DetectorConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_window("window-secs", self.window_secs)?;
        check_at_least_one("min-ports", self.min_ports as u64)?;
        check_at_least_one("min-remotes", self.min_remotes as u64)?;
        Ok(())
    }

    fn build(&self) -> Box<dyn Detector> {
        Box::new(RstStorm::new(self.clone()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Story {
    ResetsOurConnections,
    WeResetProbes,
    OurHostScans,
}

struct StormRecord {
    iface: String,
    first_seen: u64,
    last_seen: u64,
    packets: u64,
    distinct: CappedSet<(IpAddr, u16)>,
    other: Option<IpAddr>,
}

pub struct RstStorm {
    config: Config,
    records: Windowed<(Story, IpAddr), StormRecord>,
}

impl RstStorm {
    pub fn new(config: Config) -> Self {
        let w = config.window_secs * 1_000_000_000;
        RstStorm { config, records: Windowed::new(w, 20_000) }
    }
}

impl Detector for RstStorm {
    fn observe_flows(&mut self, now_ns: u64, flows: &[FlowView<'_>]) -> Vec<Alert> {
        let mut touched = Vec::new();
        for f in flows {
            let (r, r0) = f.side(f.remote());
            let (l, l0) = f.side(f.local);
            let remote_rsts = (r.rst - r0.rst) as u64;
            let local_rsts = (l.rst - l0.rst) as u64;
            let established = r.data + l.data + r.pure_ack + l.pure_ack > 0 && (r.syn_ack + l.syn_ack) > 0;
            let mut add = |story: Story, who: IpAddr, item: (IpAddr, u16), n: u64, other: IpAddr| {
                let t = self.records.touch((story, who), now_ns, || StormRecord {
                    iface: f.iface.to_string(),
                    first_seen: f.first_seen(),
                    last_seen: 0,
                    packets: 0,
                    distinct: CappedSet::new(4096),
                    other: Some(other),
                });
                t.last_seen = t.last_seen.max(f.last_seen());
                t.packets += n;
                t.distinct.insert(item);
                touched.push((story, who));
            };
            // A connection already closing (a FIN from either side) that ends in a RST was closed by
            // its own ends (Windows' abortive close, a RST answering data after close), not torn
            // down from outside: a middlebox or a crash resets connections in mid-stream.
            let closing = r.fin + l.fin > 0;
            if remote_rsts > 0 && established && !closing {
                add(Story::ResetsOurConnections, f.remote_addr(), (f.local_addr(), f.local_port()), remote_rsts, f.local_addr());
            }
            // Their traffic was connection-like but no probe the scan detector names, and not a SYN/ACK (backscatter).
            let probe_like = r.syn > 0 || r.syn_ack > 0 || r.packets == r.invalid + r.pure_ack;
            if local_rsts > 0 && f.remote_initiated() && !probe_like {
                add(Story::WeResetProbes, f.remote_addr(), (f.local_addr(), f.local_port()), local_rsts, f.local_addr());
            }
            if r.rst_ack > r0.rst_ack && l.syn > 0 && !f.remote_initiated() {
                add(Story::OurHostScans, f.local_addr(), (f.remote_addr(), 0), (r.rst_ack - r0.rst_ack) as u64, f.remote_addr());
            }
        }
        touched.sort_by_key(|(s, ip)| (*s as u8, *ip));
        touched.dedup();
        let mut alerts = Vec::new();
        for (story, who) in touched {
            let Some(t) = self.records.get(&(story, who)) else { continue };
            let needed = if story == Story::OurHostScans { self.config.min_remotes } else { self.config.min_ports };
            if t.distinct.len() >= needed {
                alerts.push(render(story, who, t, now_ns));
            }
        }
        alerts
    }

    fn expire(&mut self, now_ns: u64) {
        self.records.expire(now_ns);
    }
}

fn render(story: Story, who: IpAddr, t: &StormRecord, now_ns: u64) -> Alert {
    let n = t.distinct.len() as u64 + t.distinct.overflow;
    let (verdict, role, severity, summary, explanation, src, dest) = match story {
        Story::ResetsOurConnections => (
            "rst-storm",
            HostRole::Victim,
            Severity::Medium,
            format!("{who} reset {n} of our established connections within the window ({} RSTs)", t.packets),
            format!(
                "Connections that had completed their handshake and exchanged data were torn down by RSTs from {who}, on {n} \
                 different ports of ours in a short time. Either the service at {who} is failing, or something on the path (a \
                 firewall, an IPS, a censor) is injecting resets in its name; the rst_injection detector looks at each \
                 reset's TTL and sequence numbers for the second case."
            ),
            Some((who, None)),
            t.other.map(|a| (a, None)),
        ),
        Story::WeResetProbes => (
            "probed",
            HostRole::Victim,
            Severity::Medium,
            format!("We answered {who} with RSTs on {n} of our ports: it is probing us"),
            format!(
                "{who} sent connection traffic to {n} ports of ours where nothing was listening or no connection existed, and \
                 our kernel answered each with a RST. That is what a sweep for open ports or a stateless flood looks like. \
                 Our RSTs are the correct response; consider filtering {who} upstream."
            ),
            Some((who, None)),
            t.other.map(|a| (a, None)),
        ),
        Story::OurHostScans => (
            "outbound-scan",
            HostRole::PossiblyCompromised,
            Severity::High,
            format!("Our host {who} was refused (RST/ACK) by {n} different remote hosts: it is scanning"),
            format!(
                "{who} sent SYNs to {n} different remote hosts that answered with RST/ACK (nothing listening). Ordinary \
                 clients talk to a few servers that do listen; a host that knocks on many is scanning — a worm, a bot looking \
                 for peers, or a scanner someone runs on purpose. Find the process that opens these connections on {who}."
            ),
            Some((who, None)),
            t.other.map(|a| (a, None)),
        ),
    };
    let sample: Vec<String> = t.distinct.iter().take(20).map(|(a, p)| if *p == 0 { a.to_string() } else { format!("{a}:{p}") }).collect();
    AlertDraft {
        detector: "rst_storm",
        severity,
        verdict,
        host_role: role,
        key: format!("{verdict}|{who}"),
        iface: t.iface.clone(),
        src,
        dest,
        first_seen_ns: t.first_seen,
        last_seen_ns: t.last_seen,
        packets: t.packets,
        flows: n,
    }
    .build(now_ns, summary, explanation, json!({ "distinct": n, "rsts": t.packets, "sample": sample }))
}

#[cfg(test)]
mod tests {
    use probe_common::flags::{ACK, FIN, PSH, RST, SYN};

    use super::*;
    use crate::detect::testkit::{S, Script, pkt};

    #[test]
    fn our_host_refused_by_many_remotes_is_scanning() {
        let mut s = Script::new();
        let mut d = RstStorm::new(Config::default());
        for i in 0..25u8 {
            let remote = format!("192.0.2.{}", i + 1);
            s.send(S + i as u64, pkt("10.0.0.2", 40000 + i as u16, &remote, 445, SYN));
            s.send(S + i as u64 + 1, pkt(&remote, 445, "10.0.0.2", 40000 + i as u16, RST | ACK));
        }
        let alerts = s.poll(&mut d, 2 * S);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].verdict, alerts[0].host_role, alerts[0].flows), ("outbound-scan", HostRole::PossiblyCompromised, 25));
    }

    #[test]
    fn one_remote_resetting_many_established_connections_is_a_storm() {
        let mut s = Script::new();
        let mut d = RstStorm::new(Config::default());
        for i in 0..22u16 {
            let lp = 30000 + i;
            s.send(S, pkt("192.0.2.1", 5000 + i, "10.0.0.2", lp, SYN));
            s.send(S, pkt("10.0.0.2", lp, "192.0.2.1", 5000 + i, SYN | ACK));
            s.send(S, pkt("192.0.2.1", 5000 + i, "10.0.0.2", lp, ACK | PSH));
            s.send(S, pkt("192.0.2.1", 5000 + i, "10.0.0.2", lp, RST));
        }
        let alerts = s.poll(&mut d, 2 * S);
        assert_eq!(alerts.iter().map(|a| a.verdict).collect::<Vec<_>>(), ["rst-storm"]);
    }

    #[test]
    fn a_host_ending_its_own_connections_abortively_is_not_a_storm() {
        // Windows' abortive close: the client's FIN, our FIN, then its RST/ACK, on each of 25
        // connections of its own.
        let mut s = Script::new();
        let mut d = RstStorm::new(Config::default());
        for i in 0..25u16 {
            let (rp, lp) = (5000 + i, 443);
            s.send(S, pkt("192.0.2.1", rp, "10.0.0.2", lp, SYN));
            s.send(S, pkt("10.0.0.2", lp, "192.0.2.1", rp, SYN | ACK));
            s.send(S, pkt("192.0.2.1", rp, "10.0.0.2", lp, ACK | PSH));
            s.send(S, pkt("192.0.2.1", rp, "10.0.0.2", lp, FIN | ACK));
            s.send(S, pkt("10.0.0.2", lp, "192.0.2.1", rp, FIN | ACK));
            s.send(S, pkt("192.0.2.1", rp, "10.0.0.2", lp, RST | ACK));
        }
        assert!(s.poll(&mut d, 2 * S).is_empty());
    }

    #[test]
    fn a_few_refusals_and_backscatter_raise_nothing() {
        let mut s = Script::new();
        let mut d = RstStorm::new(Config::default());
        for p in [81, 82, 83] {
            s.send(S, pkt("192.0.2.1", 40000, "10.0.0.2", p, SYN));
            s.send(S, pkt("10.0.0.2", p, "192.0.2.1", 40000, RST | ACK));
        }
        for i in 0..30u16 {
            s.send(S, pkt("198.51.100.7", 443, "10.0.0.2", 20000 + i, SYN | ACK));
            s.send(S, pkt("10.0.0.2", 20000 + i, "198.51.100.7", 443, RST));
        }
        assert!(s.poll(&mut d, 2 * S).is_empty());
    }
}
