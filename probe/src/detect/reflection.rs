//! Reflection floods aimed at us, told apart from backscatter we merely witness. Both bring
//! unsolicited SYN/ACKs (or RSTs) to our host; what differs is who sends them:
//!
//! - **few remotes, many packets each, to many of our ports**: someone floods those remotes with
//!   our address forged; their answers reach us. We are a bystander (the 2007 story).
//! - **many remotes, a packet or two each**: someone sends SYNs to thousands of reflectors with our
//!   address forged so that their answers flood us. We are the victim.
//!
//! The count of distinct senders comes from the kernel's HyperLogLog of unsolicited senders (no
//! flow slot needed: a reflection flood fills any table), over a sliding window. Both backscatter
//! detectors use this one rule, for SYN/ACKs and for RSTs.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
};

use probe_common::aggregate::{REMOTE_RST, REMOTE_SYN_ACK, SKETCH_REGISTERS, hll_estimate};
use serde_json::json;

use super::{AggregateView, Tally, remote_record::RemoteRecord, window::Windowed};
use crate::{
    alert::{Alert, AlertDraft, HostRole, Severity},
    flows::aggregate::AggregateSnapshot,
};

/// What is reflected: the words and names that differ between the SYN/ACK and the RST kind.
pub struct Kind {
    pub detector: &'static str,
    /// The `backscatter_packets_total{kind}` label.
    pub tally: &'static str,
    /// The kernel's count of such packets and the HyperLogLog of their senders.
    pub sketch: fn(&AggregateSnapshot) -> (u64, &[u8; SKETCH_REGISTERS]),
    /// The `REMOTE_*` bit of their senders in the heavy-hitter table.
    pub remote_bit: u8,
    /// As in "SYN/ACK reflection flood".
    pub packet: &'static str,
    /// Why these packets reach us, in a sentence.
    pub mechanism: &'static str,
    /// What a stateful firewall adds, in a sentence.
    pub firewall: &'static str,
}

pub const SYN_ACK: Kind = Kind {
    detector: "backscatter_synack",
    tally: "syn-ack",
    sketch: |s| (s.unsolicited_syn_ack, &s.syn_ack_sources),
    remote_bit: REMOTE_SYN_ACK,
    packet: "SYN/ACK",
    mechanism: "Someone is sending SYNs to thousands of servers (the reflectors) with this host's address forged as the \
                source; every server answers the address it saw with a SYN/ACK, so their answers converge here. \
                Each reflector sends only a packet or a few, which is what tells this apart from backscatter, where a \
                few flooded victims send us many.",
    firewall: " A stateful firewall that drops packets in state INVALID also keeps this host from answering each \
               unsolicited SYN/ACK with a RST of its own.",
};

pub const RST: Kind = Kind {
    detector: "backscatter_rst",
    tally: "rst",
    sketch: |s| (s.unsolicited_rst, &s.rst_sources),
    remote_bit: REMOTE_RST,
    packet: "RST",
    mechanism: "Someone is sending packets with this host's address forged as the source to thousands of hosts (or \
                forging RSTs from thousands of addresses at us directly); every host that refuses them answers the \
                address it saw with a RST, so the resets converge here. Each sender sends only a packet or a few, \
                which is what tells this apart from backscatter, where a few victims send us many.",
    firewall: " Our host sends nothing back to a RST, so the flood costs only the inbound bandwidth.",
};

/// One poll's worth: unsolicited packets, and the distinct-sender estimate before it.
#[derive(Debug, Clone, Copy)]
struct Step {
    at: u64,
    packets: u64,
    senders_before: f64,
}

/// One reflection flood, from the poll that crossed the threshold until a whole window passes
/// under half of it.
#[derive(Debug, Clone)]
pub struct Reflection {
    pub started: u64,
    pub last: u64,
    pub packets: u64,
    /// Distinct senders (reflectors), estimated, since the incident's window began.
    pub reflectors: u64,
    pub peak_per_second: f64,
    /// Per-remote backscatter alerts this incident absorbed (they would have called us a bystander).
    pub held_back: u64,
    /// The busiest senders at the last update, with their approximate packet counts.
    pub top: Vec<(IpAddr, u64)>,
    senders_base: f64,
}

impl Reflection {
    pub fn per_second(&self) -> f64 {
        self.packets as f64 * 1e9 / (self.last.saturating_sub(self.started)).max(1_000_000_000) as f64
    }
}

/// The sliding window over one kind of unsolicited packet.
pub struct ReflectionWatch {
    window_ns: u64,
    min_senders: u64,
    last: Option<(u64, f64)>,
    steps: VecDeque<Step>,
    incident: Option<Reflection>,
    /// The incident changed since the last [`ReflectionWatch::take_update`].
    due: bool,
}

impl ReflectionWatch {
    pub fn new(window_secs: u64, min_senders: u64) -> Self {
        ReflectionWatch {
            window_ns: window_secs * 1_000_000_000,
            min_senders,
            last: None,
            steps: VecDeque::new(),
            incident: None,
            due: false,
        }
    }

    /// This poll's cumulative count of unsolicited packets, its distinct-sender estimate and the
    /// busiest senders.
    pub fn observe(&mut self, now_ns: u64, packets_total: u64, senders_total: f64, top: Vec<(IpAddr, u64)>) {
        let (before, senders_before) = self.last.unwrap_or((0, 0.0));
        // The kernel's counters only grow; a restart of the producer starts them again.
        let (packets, senders_before) =
            if packets_total >= before { (packets_total - before, senders_before) } else { (packets_total, 0.0) };
        self.last = Some((packets_total, senders_total));
        self.steps.push_back(Step { at: now_ns, packets, senders_before });
        while self.steps.front().is_some_and(|s| now_ns.saturating_sub(s.at) >= self.window_ns) {
            self.steps.pop_front();
        }
        let Some(first) = self.steps.front().copied() else { return };
        let in_window: u64 = self.steps.iter().map(|s| s.packets).sum();
        let senders = (senders_total - first.senders_before).max(0.0);
        let span = now_ns.saturating_sub(first.at).max(1_000_000_000);
        let rate = in_window as f64 * 1e9 / span as f64;
        let flooding = senders >= self.min_senders as f64;
        match &mut self.incident {
            None if flooding => {
                self.incident = Some(Reflection {
                    started: first.at.min(now_ns),
                    last: now_ns,
                    packets: in_window,
                    reflectors: senders.round() as u64,
                    peak_per_second: rate,
                    held_back: 0,
                    top,
                    senders_base: first.senders_before,
                });
                self.due = true;
            }
            None => {}
            Some(_) if !flooding && (senders as u64) < self.min_senders / 2 => {
                // Over: its last update went out with its last packets.
                self.incident = None;
                self.due = false;
            }
            Some(i) if packets > 0 => {
                i.last = now_ns;
                i.packets += packets;
                i.reflectors = (senders_total - i.senders_base).max(1.0).round() as u64;
                i.peak_per_second = i.peak_per_second.max(rate);
                i.top = top;
                self.due = true;
            }
            Some(_) => {}
        }
    }

    /// Whether a reflection flood is under way: per-remote verdicts would be wrong meanwhile.
    pub fn active(&self) -> bool {
        self.incident.is_some()
    }

    /// Count per-remote alerts the incident absorbed.
    pub fn hold_back(&mut self, alerts: u64) {
        if let Some(i) = &mut self.incident {
            i.held_back += alerts;
            self.due = true;
        }
    }

    /// The incident, if it changed since the last call (an alert update is due).
    pub fn take_update(&mut self) -> Option<Reflection> {
        if !std::mem::take(&mut self.due) {
            return None;
        }
        self.incident.clone()
    }
}

/// What a backscatter detector shares: one [`ReflectionWatch`] per interface over its kind of
/// unsolicited packet, and the rule that a reflection flood absorbs the per-remote alerts.
pub struct Reflections {
    kind: &'static Kind,
    window_secs: u64,
    min_senders: u64,
    watches: HashMap<String, ReflectionWatch>,
    /// Unsolicited packets the detector's per-remote records counted, and per-remote alerts
    /// absorbed, since the last [`Reflections::tallies`].
    packets: u64,
    held_back: u64,
    /// Remotes with a single packet so far whose alert waits one poll: the first poll of a
    /// reflection flood may see too few of its senders to tell, the next one does.
    waiting: HashSet<IpAddr>,
    /// Per interface: which of our addresses the unsolicited packets went to, and when the first
    /// came, from the events (the aggregates count senders, not whom they hit).
    targets: HashMap<String, Targets>,
}

/// Our addresses that unsolicited packets reached within a window, with their counts.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub first_ns: u64,
    last_ns: u64,
    pub addrs: HashMap<IpAddr, u64>,
    /// Packets to addresses past [`TARGETS_MAX`].
    pub others: u64,
}

/// Addresses of ours counted per interface at most.
const TARGETS_MAX: usize = 256;

impl Targets {
    /// The busiest first (then by address), at most `n`.
    pub fn top(&self, n: usize) -> Vec<(IpAddr, u64)> {
        let mut v: Vec<(IpAddr, u64)> = self.addrs.iter().map(|(a, c)| (*a, *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// How the alert names the target: the address when there is one, else how many.
    fn words(&self) -> String {
        match (self.addrs.len(), self.others) {
            (0, _) => "us".to_string(),
            (1, 0) => self.top(1)[0].0.to_string(),
            (n, o) => {
                let top: Vec<String> = self.top(3).iter().map(|(a, _)| a.to_string()).collect();
                format!("{}{} of our addresses ({}{})", n, if o > 0 { "+" } else { "" }, top.join(", "), if n > 3 { ", ..." } else { "" })
            }
        }
    }
}

/// How many remotes may wait a poll at most (a flood's senders beyond are alerted or absorbed
/// at once).
const WAITING_MAX: usize = 65_536;

impl Reflections {
    pub fn new(kind: &'static Kind, window_secs: u64, min_senders: u64) -> Self {
        Reflections {
            kind,
            window_secs,
            min_senders,
            watches: HashMap::new(),
            packets: 0,
            held_back: 0,
            waiting: HashSet::new(),
            targets: HashMap::new(),
        }
    }

    /// One unsolicited packet of this kind to our address `local`, seen at `at_ns` (from an
    /// event). What came more than a window before the last is forgotten: a new flood names its
    /// own targets and its own start.
    pub fn target(&mut self, iface: &str, local: IpAddr, at_ns: u64) {
        let window = self.window_secs * 1_000_000_000;
        let t = self.targets.entry(iface.to_string()).or_default();
        let active = self.watches.get(iface).is_some_and(|w| w.active());
        let fresh = t.addrs.is_empty() && t.others == 0;
        if fresh || (!active && at_ns.saturating_sub(t.last_ns) > window) {
            *t = Targets { first_ns: at_ns, ..Targets::default() };
        }
        t.first_ns = t.first_ns.min(at_ns);
        t.last_ns = t.last_ns.max(at_ns);
        if t.addrs.len() < TARGETS_MAX || t.addrs.contains_key(&local) {
            *t.addrs.entry(local).or_default() += 1;
        } else {
            t.others += 1;
        }
    }

    /// This poll's aggregates of one interface.
    pub fn observe(&mut self, now_ns: u64, view: &AggregateView<'_>) {
        let (window, min) = (self.window_secs, self.min_senders);
        let watch = self.watches.entry(view.iface.to_string()).or_insert_with(|| ReflectionWatch::new(window, min));
        let (packets, senders) = (self.kind.sketch)(view.snapshot);
        watch.observe(now_ns, packets, hll_estimate(senders), view.snapshot.top(self.kind.remote_bit, 5));
    }

    /// Count unsolicited packets the per-remote records took in.
    pub fn count(&mut self, packets: u64) {
        self.packets += packets;
    }

    /// One alert per remote with news (at least `min_packets`), unless a reflection flood on its
    /// interface absorbs it; then the incidents' updates that are due, for `iface` or (`None`,
    /// at the end of the input) for every interface.
    pub fn alerts(
        &mut self,
        now_ns: u64,
        touched: HashSet<IpAddr>,
        records: &Windowed<IpAddr, RemoteRecord>,
        min_packets: u64,
        iface: Option<&str>,
        render_remote: impl Fn(IpAddr, &RemoteRecord) -> Alert,
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let waited = std::mem::take(&mut self.waiting);
        let mut remotes: Vec<IpAddr> = touched.into_iter().chain(waited.iter().copied()).collect();
        remotes.sort();
        remotes.dedup();
        for remote in remotes {
            let Some(r) = records.get(&remote).filter(|r| r.packets >= min_packets) else { continue };
            match self.watches.get_mut(&r.iface) {
                Some(w) if w.active() => {
                    w.hold_back(1);
                    self.held_back += 1;
                }
                // One packet from a remote is what each sender of a reflection flood sends: wait
                // one poll for the flood to show before calling it backscatter (not at the end of
                // the input, where there is no next poll).
                _ if iface.is_some() && r.packets < 2 && !waited.contains(&remote) && self.waiting.len() < WAITING_MAX => {
                    self.waiting.insert(remote);
                }
                _ => alerts.push(render_remote(remote, r)),
            }
        }
        for (name, w) in &mut self.watches {
            if iface.is_none_or(|i| i == name)
                && let Some(i) = w.take_update()
            {
                let targets = self.targets.get(name).cloned().unwrap_or_default();
                alerts.push(render(self.kind, name, &i, &targets, now_ns));
            }
        }
        alerts
    }

    /// The packets counted and the alerts absorbed since the last call, as metrics.
    pub fn tallies(&mut self) -> Vec<Tally> {
        let mut out = Vec::new();
        let packets = std::mem::take(&mut self.packets);
        if packets > 0 {
            out.push(Tally::Backscatter { kind: self.kind.tally, packets });
        }
        let alerts = std::mem::take(&mut self.held_back);
        if alerts > 0 {
            out.push(Tally::HeldBack { detector: self.kind.detector, alerts });
        }
        out
    }
}

/// "This host" at the start of a sentence; an address as it is.
fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The incident as one alert: we are the target, named by address when the events show one.
pub fn render(kind: &Kind, iface: &str, i: &Reflection, targets: &Targets, now_ns: u64) -> Alert {
    let secs = (i.last.saturating_sub(i.started) as f64 / 1e9).max(1.0);
    let at = targets.words();
    let summary = format!(
        "{} reflection flood at {at}: {} unsolicited {}s from about {} senders in {secs:.0} s ({:.0}/s)",
        kind.packet,
        i.packets,
        kind.packet,
        i.reflectors,
        i.per_second()
    );
    // Who is hit, as the sentences need it: one address, several, or (no event seen) this host.
    let (who, whose, be) = match (targets.addrs.len(), targets.others) {
        (0, _) => ("this host".to_string(), "this host's address".to_string(), "is"),
        (1, 0) => (at.clone(), format!("{at}'s address"), "is"),
        _ => ("these hosts of ours".to_string(), "their addresses".to_string(), "are"),
    };
    let explanation = format!(
        "{} received {} {}s on connections never opened, from about {} different addresses. {} {} {be} \
         the target, not compromised and not a bystander. The senders are real, innocent hosts, so blocking them one \
         by one does nothing. What to do: if the link or the host suffers, ask the upstream provider to filter \
         inbound {}s to {who} (no connection of ours needs them, as the missing SYNs show) or to scrub the \
         traffic.{}{}",
        capitalized(if targets.addrs.len() > 1 || targets.others > 0 { &at } else { &who }),
        i.packets,
        kind.packet,
        i.reflectors,
        kind.mechanism.replace("this host's address", &whose),
        capitalized(&who),
        kind.packet,
        kind.firewall.replace("this host", &who),
        if i.held_back > 0 {
            format!(
                " {} per-sender backscatter alerts were folded into this one (counted in flagprobe_alerts_suppressed_total).",
                i.held_back
            )
        } else {
            String::new()
        }
    );
    // The incident starts with its first packet, not with the poll that first counted it.
    let first = if targets.first_ns > 0 { targets.first_ns.min(i.started) } else { i.started };
    let dest = (targets.addrs.len() == 1 && targets.others == 0).then(|| (targets.top(1)[0].0, None));
    AlertDraft {
        detector: kind.detector,
        severity: Severity::High,
        verdict: "reflection",
        host_role: HostRole::Victim,
        key: format!("reflection:{iface}"),
        iface: iface.to_string(),
        src: None,
        dest,
        first_seen_ns: first,
        last_seen_ns: i.last,
        packets: i.packets,
        flows: i.reflectors,
    }
    .build(
        now_ns,
        summary,
        explanation,
        json!({
            "kind": kind.packet, "packets": i.packets, "reflectors_estimate": i.reflectors,
            "per_second": i.per_second(), "peak_per_second": i.peak_per_second,
            "per_sender_alerts_held_back": i.held_back,
            "targets": targets.top(10).iter().map(|(a, n)| json!({"addr": a, "packets": n})).collect::<Vec<_>>(),
            "targets_estimate": targets.addrs.len() as u64 + u64::from(targets.others > 0),
            "top_senders": i.top.iter().map(|(a, n)| json!({"addr": a, "packets": n})).collect::<Vec<_>>(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn many_senders_open_one_incident_that_ends_after_a_quiet_window() {
        let mut w = ReflectionWatch::new(10, 100);
        w.observe(S, 50, 50.0, vec![]);
        assert!(w.take_update().is_none(), "50 senders: below the threshold");
        w.observe(2 * S, 500, 480.0, vec![]);
        let i = w.take_update().expect("480 senders in the window");
        assert_eq!((i.packets, i.reflectors), (500, 480));
        w.observe(3 * S, 900, 880.0, vec![]);
        let i = w.take_update().expect("an update");
        assert_eq!((i.packets, i.reflectors), (900, 880));
        w.observe(4 * S, 900, 880.0, vec![]);
        assert!(w.take_update().is_none(), "no new packets: no update due");
        w.hold_back(3);
        assert_eq!(w.take_update().map(|i| i.held_back), Some(3), "absorbed alerts are news");
        assert!(w.active());
        w.observe(14 * S, 900, 880.0, vec![]);
        assert!(!w.active(), "a whole quiet window ends it");
        assert!(w.take_update().is_none());
    }

    #[test]
    fn one_sender_with_many_packets_is_not_a_reflection() {
        let mut w = ReflectionWatch::new(10, 100);
        for t in 1..20 {
            w.observe(t * S, t * 1000, 1.0, vec![]);
        }
        assert!(!w.active());
    }

    #[test]
    fn senders_from_before_the_window_do_not_count() {
        let mut w = ReflectionWatch::new(10, 100);
        // 90 senders an hour ago, then 20 more now: 20 in the window, not 110.
        w.observe(S, 90, 90.0, vec![]);
        w.observe(3600 * S, 90, 90.0, vec![]);
        w.observe(3601 * S, 110, 110.0, vec![]);
        assert!(!w.active());
    }
}
