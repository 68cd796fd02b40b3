//! SYN floods against our services, judged from the kernel's flood-proof aggregates, not from
//! flows: a spoofed flood makes every SYN a new flow and fills any flow table within a second, so
//! the verdict must not depend on one. Per service (our address and port), over a sliding window:
//! inbound SYNs, how many handshakes completed, what our host answered (SYN/ACK, RST, nothing),
//! and the distinct sources from a HyperLogLog. Many SYNs that rarely complete are a flood, from
//! one source or from thousands; one source to many ports is a scan (the scan detector's case:
//! each port sees a handful of SYNs).

use std::{collections::VecDeque, net::IpAddr};

use probe_common::aggregate::REMOTE_SYN;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AggregateView, Detector, DetectorConfig, Invalid, check_at_least_one, check_window, window::Windowed};
use crate::{
    alert::{Alert, AlertDraft, HostRole, Severity},
    flows::aggregate::ServiceTotals,
};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub enabled: bool,
    /// The sliding window the SYNs are counted over.
    pub window_secs: u64,
    /// Inbound SYNs to one service within the window before it can be a flood.
    pub min_syns: u64,
    /// At most this share of those SYNs may complete a handshake (percent) for a flood.
    pub max_completed_percent: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true, window_secs: 10, min_syns: 100, max_completed_percent: 20 }
    }
}

impl DetectorConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_window("window-secs", self.window_secs)?;
        check_at_least_one("min-syns", self.min_syns)?;
        if self.max_completed_percent > 100 {
            return Err(Invalid::new("max-completed-percent", "must be between 0 and 100"));
        }
        Ok(())
    }

    fn build(&self) -> Box<dyn Detector> {
        Box::new(SynFlood::new(self.clone()))
    }
}

/// What one poll added to a service's counters.
#[derive(Debug, Clone, Copy, Default)]
struct Step {
    /// The previous poll and this one: the step covers (from, at].
    from: u64,
    at: u64,
    syn: u64,
    syn_ack: u64,
    rst: u64,
    completed: u64,
    /// The distinct-source estimate before this step.
    sources_before: f64,
}

/// One flood, from its first poll over the threshold until a whole window passes under it.
#[derive(Debug, Clone)]
struct Incident {
    started: u64,
    last: u64,
    syn: u64,
    syn_ack: u64,
    rst: u64,
    completed: u64,
    /// The service's distinct-source estimate when the window that opened it began.
    sources_base: f64,
    peak_rate: f64,
}

struct Service {
    iface: String,
    /// Cumulative totals at the previous poll.
    last: Option<ServiceTotals>,
    steps: VecDeque<Step>,
    incident: Option<Incident>,
}

pub struct SynFlood {
    config: Config,
    services: Windowed<(IpAddr, u16), Service>,
}

impl SynFlood {
    pub fn new(config: Config) -> Self {
        // Keep a service's history long after its window: an incident spans many windows.
        SynFlood { config, services: Windowed::new(600 * 1_000_000_000, 10_000) }
    }
}

/// `now - before` for a cumulative counter; a bucket taken over since counts from zero again.
fn delta(now: u64, before: u64) -> u64 {
    if now >= before { now - before } else { now }
}

impl Detector for SynFlood {
    fn observe_aggregates(&mut self, now_ns: u64, view: &AggregateView<'_>) -> Vec<Alert> {
        let window = self.config.window_secs * 1_000_000_000;
        let mut alerts = Vec::new();
        for (&(addr, port), totals) in &view.snapshot.services {
            if !view.home.contains(addr) {
                continue;
            }
            let s = self.services.touch((addr, port), now_ns, || Service {
                iface: view.iface.to_string(),
                last: None,
                steps: VecDeque::new(),
                incident: None,
            });
            let before = s.last.unwrap_or(ServiceTotals { syn_in: 0, syn_ack_out: 0, rst_out: 0, completed: 0, ..*totals });
            let reset = totals.syn_in < before.syn_in;
            let sources_before = if s.last.is_none() || reset { 0.0 } else { before.distinct_sources() };
            let step = Step {
                from: s.steps.back().map_or(totals.first_seen.min(now_ns), |b| b.at),
                at: now_ns,
                syn: delta(totals.syn_in, before.syn_in),
                syn_ack: delta(totals.syn_ack_out, before.syn_ack_out),
                rst: delta(totals.rst_out, before.rst_out),
                completed: delta(totals.completed, before.completed),
                sources_before,
            };
            s.last = Some(*totals);
            s.steps.push_back(step);
            while s.steps.front().is_some_and(|f| now_ns.saturating_sub(f.at) >= window) {
                s.steps.pop_front();
            }
            let syns: u64 = s.steps.iter().map(|x| x.syn).sum();
            let completed: u64 = s.steps.iter().map(|x| x.completed).sum();
            let flooding = syns >= self.config.min_syns && completed * 100 <= syns * self.config.max_completed_percent;
            let span = s.steps.front().map_or(0, |f| now_ns.saturating_sub(f.from)).max(1_000_000_000);
            let rate = syns as f64 * 1e9 / span as f64;
            match (&mut s.incident, flooding) {
                (None, true) => {
                    // The incident includes the whole window that crossed the threshold.
                    let first = s.steps.front().copied().unwrap_or(step);
                    s.incident = Some(Incident {
                        started: totals.first_seen.max(first.at.saturating_sub(window)).min(now_ns),
                        last: totals.last_seen,
                        syn: syns,
                        syn_ack: s.steps.iter().map(|x| x.syn_ack).sum(),
                        rst: s.steps.iter().map(|x| x.rst).sum(),
                        completed,
                        sources_base: first.sources_before,
                        peak_rate: rate,
                    });
                }
                (Some(i), _) => {
                    i.last = i.last.max(totals.last_seen);
                    i.syn += step.syn;
                    i.syn_ack += step.syn_ack;
                    i.rst += step.rst;
                    i.completed += step.completed;
                    i.peak_rate = i.peak_rate.max(rate);
                    if reset {
                        i.sources_base = 0.0;
                    }
                }
                (None, false) => {}
            }
            if let Some(i) = &s.incident {
                if flooding || step.syn > 0 {
                    let sources = (totals.distinct_sources() - i.sources_base).max(1.0).round() as u64;
                    let top = view.snapshot.top(REMOTE_SYN, 5);
                    alerts.push(render((addr, port), &s.iface, i, sources, &top, now_ns));
                }
                // Over once a whole window has passed without a flood.
                if !flooding && syns < self.config.min_syns / 2 {
                    s.incident = None;
                }
            }
        }
        alerts
    }

    fn expire(&mut self, now_ns: u64) {
        self.services.expire(now_ns);
    }
}

/// What our host did with the SYNs, in words.
fn answered(i: &Incident) -> (&'static str, &'static str) {
    if i.syn_ack * 2 >= i.syn {
        (
            "syn-ack",
            "Our host answered them with SYN/ACKs (with net.ipv4.tcp_syncookies=1 the kernel answers with SYN cookies once \
             the queue is full, and the service stays reachable); those SYN/ACKs go to the sources, which are innocent \
             hosts if the addresses are forged.",
        )
    } else if i.rst * 2 >= i.syn {
        ("rst", "Our host refused them with RSTs: nothing listens on that port, so the flood costs bandwidth, not a queue.")
    } else {
        (
            "none",
            "Our host did not answer them: the port is filtered or the host is down, or this capture holds only the \
             inbound direction.",
        )
    }
}

fn render((addr, port): (IpAddr, u16), iface: &str, i: &Incident, sources: u64, top: &[(IpAddr, u64)], now_ns: u64) -> Alert {
    let secs = (i.last.saturating_sub(i.started) as f64 / 1e9).max(1.0);
    let rate = i.syn as f64 / secs;
    let (answer, answer_text) = answered(i);
    let spoofed = sources >= 50 && i.syn < sources * 3;
    let who = if spoofed {
        format!("about {sources} sources, nearly one SYN each: the source addresses are forged, so blocking them does nothing")
    } else if sources <= 3 {
        let names: Vec<String> = top.iter().take(3).map(|(a, _)| a.to_string()).collect();
        format!("{} source{} ({}): block or rate-limit it at the edge", sources, if sources == 1 { "" } else { "s" }, names.join(", "))
    } else {
        format!("about {sources} sources")
    };
    let summary = format!("SYN flood on {addr}:{port}: {} SYNs in {secs:.0} s ({rate:.0}/s) from {who}", i.syn);
    let explanation = format!(
        "Our service {addr}:{port} received {} SYNs and only {} handshakes completed. That is a SYN flood aimed at this \
         host: the sender wants to fill the service's queue of half-open connections or its link. {answer_text} What to \
         do: keep SYN cookies on (net.ipv4.tcp_syncookies=1); if the service or the link suffers, ask the upstream \
         provider to filter or rate-limit SYNs to this port; {}",
        i.syn,
        i.completed,
        if spoofed { "forged sources cannot be blocked one by one." } else { "the sources in the evidence are real and can be blocked." }
    );
    AlertDraft {
        detector: "syn_flood",
        severity: Severity::High,
        verdict: "flood",
        host_role: HostRole::Victim,
        key: format!("{addr}:{port}"),
        iface: iface.to_string(),
        src: None,
        dest: Some((addr, Some(port))),
        first_seen_ns: i.started,
        last_seen_ns: i.last,
        packets: i.syn,
        flows: sources,
    }
    .build(
        now_ns,
        summary,
        explanation,
        json!({
            "syns": i.syn, "completed": i.completed, "our_syn_acks": i.syn_ack, "our_rsts": i.rst, "answered_with": answer,
            "distinct_sources_estimate": sources, "spoofed": spoofed, "syn_per_second": rate, "peak_syn_per_second": i.peak_rate,
            "top_sources": top.iter().map(|(a, n)| json!({"addr": a, "syns": n})).collect::<Vec<_>>(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use probe_common::flags::{ACK, RST, SYN};

    use super::*;
    use crate::detect::testkit::{S, Script, nth_remote, pkt};

    fn flood(s: &mut Script, t: u64, n: u32, port: u16, answer: Option<u8>) {
        for i in 0..n {
            let src = nth_remote(i);
            s.send(t, pkt(&src, 1024 + (i % 60000) as u16, "10.0.0.2", port, SYN));
            if let Some(flags) = answer {
                s.send(t, pkt("10.0.0.2", port, &src, 1024 + (i % 60000) as u16, flags));
            }
        }
    }

    #[test]
    fn a_spoofed_flood_is_one_incident_with_its_sources_and_our_answer() {
        let mut s = Script::new();
        let mut d = SynFlood::new(Config::default());
        flood(&mut s, S, 2000, 8080, Some(SYN | ACK));
        let a = s.poll(&mut d, 2 * S);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].verdict, a[0].host_role, a[0].packets), ("flood", HostRole::Victim, 2000));
        let e = &a[0].evidence;
        assert_eq!((e["answered_with"].as_str(), e["spoofed"].as_bool()), (Some("syn-ack"), Some(true)));
        let sources = e["distinct_sources_estimate"].as_u64().unwrap();
        assert!((1500..2500).contains(&sources), "about 2000 sources: {sources}");
        flood(&mut s, 3 * S, 2000, 8080, Some(SYN | ACK));
        let a = s.poll(&mut d, 4 * S);
        assert_eq!((a.len(), a[0].key.as_str(), a[0].packets), (1, "10.0.0.2:8080", 4000), "the same incident, updated");
    }

    #[test]
    fn no_answer_or_a_refusal_is_said_so() {
        for (answer, word) in [(None, "none"), (Some(RST | ACK), "rst")] {
            let mut s = Script::new();
            let mut d = SynFlood::new(Config::default());
            flood(&mut s, S, 300, 25565, answer);
            let a = s.poll(&mut d, 2 * S);
            assert_eq!(a[0].evidence["answered_with"], word);
        }
    }

    #[test]
    fn one_source_hammering_one_port_is_a_flood_and_names_the_source() {
        let mut s = Script::new();
        let mut d = SynFlood::new(Config::default());
        for i in 0..200u16 {
            s.send(S + u64::from(i) * 1_000_000, pkt("192.0.2.9", 2000 + i, "10.0.0.2", 80, SYN));
        }
        let a = s.poll(&mut d, 2 * S);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].evidence["distinct_sources_estimate"], 1);
        assert!(a[0].summary.contains("192.0.2.9"), "{}", a[0].summary);
    }

    #[test]
    fn completed_handshakes_and_a_scan_are_not_a_flood() {
        let mut s = Script::new();
        let mut d = SynFlood::new(Config::default());
        for i in 0..300u16 {
            s.send(S, pkt("192.0.2.5", 1024 + i, "10.0.0.2", 443, SYN));
            s.send(S, pkt("10.0.0.2", 443, "192.0.2.5", 1024 + i, SYN | ACK));
            s.send(S, pkt("192.0.2.5", 1024 + i, "10.0.0.2", 443, ACK));
        }
        for port in 1..1000u16 {
            s.send(S, pkt("192.0.2.6", 40000, "10.0.0.2", port, SYN));
        }
        assert!(s.poll(&mut d, 2 * S).is_empty());
    }
}
