//! Flag combinations no correct TCP stack sends: SYN+FIN, SYN+RST, FIN+RST, NULL, XMAS (FIN+PSH+URG),
//! all flags, FIN without ACK, and the other ACK-less oddities. Read off each side's exact set of
//! combinations, so every one is named, whichever direction it went.

use std::{collections::BTreeSet, net::IpAddr};

use probe_common::{
    action::DROP_REASON_NAMES,
    flags::{self, InvalidKind},
    flow::{FlowKey, NOTABLE_INVALID},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Detector, DetectorConfig, EventView, FlowView, Invalid, check_window,
    dropped::Dropped,
    window::{CappedSet, Windowed},
};
use crate::alert::{Alert, AlertDraft, HostRole, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub enabled: bool,
    pub window_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true, window_secs: 300 }
    }
}

impl DetectorConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_window("window-secs", self.window_secs)?;
        Ok(())
    }

    fn build(&self) -> Box<dyn Detector> {
        Box::new(InvalidFlags::new(self.clone()))
    }
}

struct Sender {
    iface: String,
    outbound: bool,
    first_seen: u64,
    last_seen: u64,
    packets: u64,
    flows: u64,
    combos: BTreeSet<u8>,
    targets: CappedSet<(IpAddr, u16)>,
}

pub struct InvalidFlags {
    senders: Windowed<IpAddr, Sender>,
    /// Flows whose opener sent a FIN without ACK before the other side had said anything.
    aborts: Windowed<FlowKey, ()>,
    /// Crafted combinations flagprobe dropped (`--drop invalid-flags`), by sender.
    dropped: Dropped,
    /// Senders with a drop counted since the last poll (their alerts are written again).
    late: Vec<IpAddr>,
}

impl InvalidFlags {
    pub fn new(config: Config) -> Self {
        let w = config.window_secs * 1_000_000_000;
        InvalidFlags {
            senders: Windowed::new(w, 10_000),
            aborts: Windowed::new(w, 10_000),
            dropped: Dropped::new(DROP_REASON_NAMES[1], w),
            late: Vec::new(),
        }
    }
}

fn why(kind: InvalidKind) -> &'static str {
    match kind {
        InvalidKind::Null => "no flag at all (NULL, Nmap -sN)",
        InvalidKind::Xmas => "FIN+PSH+URG (XMAS, Nmap -sX)",
        InvalidKind::AllFlags => "every flag set",
        InvalidKind::SynFin => "SYN and FIN together: open and close at once",
        InvalidKind::SynRst => "SYN and RST together",
        InvalidKind::FinRst => "FIN and RST together",
        InvalidKind::FinNoAck => "FIN without ACK (Nmap -sF)",
        InvalidKind::NoAck => "a segment without ACK that is neither SYN nor RST",
    }
}

impl Detector for InvalidFlags {
    /// The FIN's own moment decides whether it was an abort: the flow's totals cannot say whether
    /// the other side's first packet came before it or after.
    fn observe_event(&mut self, ev: &EventView<'_>) -> Vec<Alert> {
        let e = ev.event;
        // An event after the poll that counted its sender: the sender's alert is written again.
        if e.reasons & NOTABLE_INVALID != 0 && self.dropped.observe(ev) && self.senders.get(&ev.src()).is_some() {
            self.late.push(ev.src());
        }
        if e.reasons & NOTABLE_INVALID != 0 && flags::invalid_kind(e.flags) == Some(InvalidKind::FinNoAck) {
            let (sender, receiver) = ev.sides();
            let before = &e.flow_before;
            if before.sides[sender.index()].syn > 0 && before.sides[receiver.index()].packets == 0 {
                self.aborts.touch(FlowKey::canonical(&e.endpoints()).0, ev.at_ns, || ());
            }
        }
        Vec::new()
    }

    fn observe_flows(&mut self, now_ns: u64, flows: &[FlowView<'_>]) -> Vec<Alert> {
        let mut touched = std::mem::take(&mut self.late);
        for f in flows {
            for side in [f.remote(), f.local] {
                let (s, s0) = f.side(side);
                let new = s.invalid - s0.invalid;
                if new == 0 || (client_abort(s) && self.aborts.get(&f.now.key).is_some()) {
                    continue;
                }
                let outbound = side == f.local;
                let (addr, peer) = if outbound {
                    (f.local_addr(), (f.remote_addr(), f.remote_port()))
                } else {
                    (f.remote_addr(), (f.local_addr(), f.local_port()))
                };
                let t = self.senders.touch(addr, now_ns, || Sender {
                    iface: f.iface.to_string(),
                    outbound,
                    first_seen: f.first_seen(),
                    last_seen: 0,
                    packets: 0,
                    flows: 0,
                    combos: BTreeSet::new(),
                    targets: CappedSet::new(4096),
                });
                t.last_seen = t.last_seen.max(f.last_seen());
                t.packets += new as u64;
                t.flows += u64::from(s0.invalid == 0);
                t.targets.insert(peer);
                for byte in 0..=255u8 {
                    if flags::is_invalid(byte) && s.combos[(byte >> 6) as usize] & (1 << (byte & 63)) != 0 {
                        t.combos.insert(byte);
                    }
                }
                touched.push(addr);
            }
        }
        touched.sort();
        touched.dedup();
        touched.into_iter().filter_map(|a| self.senders.get(&a).map(|t| render(a, t, &self.dropped, now_ns))).collect()
    }

    fn expire(&mut self, now_ns: u64) {
        self.senders.expire(now_ns);
        self.aborts.expire(now_ns);
        self.dropped.expire(now_ns);
    }
}

/// A side that opened with a SYN and then closed with a FIN without ACK before the other side sent
/// anything (see `aborts`): a client that gave up before the SYN/ACK came (its stack has nothing to
/// acknowledge yet), not a crafted probe. Only when FIN-without-ACK is its one invalid combination.
fn client_abort(s: &probe_common::flow::SideStats) -> bool {
    s.syn > 0
        && (0..=255u8)
            .filter(|&b| s.combos[(b >> 6) as usize] & (1 << (b & 63)) != 0)
            .filter_map(flags::invalid_kind)
            .all(|k| k == InvalidKind::FinNoAck)
}

fn render(sender: IpAddr, t: &Sender, dropped: &Dropped, now_ns: u64) -> Alert {
    let kinds: Vec<String> = t
        .combos
        .iter()
        .map(|&b| format!("{} (0x{b:02x}): {}", flags::letters(b), why(flags::invalid_kind(b).unwrap_or(InvalidKind::NoAck))))
        .collect();
    let names: Vec<&str> =
        t.combos.iter().filter_map(|&b| flags::invalid_kind(b)).map(InvalidKind::name).collect::<BTreeSet<_>>().into_iter().collect();
    let summary = format!(
        "{} {sender} sent {} TCP segments with flag combinations no correct stack sends ({})",
        if t.outbound { "Our host" } else { "Remote" },
        t.packets,
        names.join(", ")
    );
    let explanation = if t.outbound {
        format!(
            "Our host {sender} sent segments whose flags no operating system's TCP stack produces: {}. Such packets are \
             crafted by hand — by a scanner, a fuzzer, or malware probing others. Find the process on {sender} that sends \
             raw packets.",
            kinds.join("; ")
        )
    } else {
        format!(
            "{sender} sent segments whose flags no operating system's TCP stack produces: {}. They are crafted to map our \
             ports past simple filters or to fingerprint our operating system from how it answers. Our host is the target; \
             our kernel's answers (RSTs from closed ports) are normal. Drop such combinations at the edge if you can.{}",
            kinds.join("; "),
            dropped.sentence(sender, "our kernel never saw them and gave no answer to read").map(|w| format!(" {w}")).unwrap_or_default()
        )
    };
    let combos: Vec<String> = t.combos.iter().map(|b| format!("0x{b:02x}")).collect();
    AlertDraft {
        detector: "invalid_flags",
        severity: if t.outbound { Severity::High } else { Severity::Medium },
        verdict: "invalid-flags",
        host_role: if t.outbound { HostRole::PossiblyCompromised } else { HostRole::Victim },
        key: sender.to_string(),
        iface: t.iface.clone(),
        src: Some((sender, None)),
        dest: (t.targets.len() == 1).then(|| t.targets.iter().next().map(|(a, p)| (*a, Some(*p)))).flatten(),
        first_seen_ns: t.first_seen,
        last_seen_ns: t.last_seen,
        packets: t.packets,
        flows: t.flows,
    }
    .build(
        now_ns,
        summary,
        explanation,
        json!({ "combinations": combos, "kinds": names, "targets": t.targets.len(), "dropped_by_flagprobe": dropped.evidence(sender) }),
    )
}

#[cfg(test)]
mod tests {
    use probe_common::flags::{ACK, FIN, PSH, RST, SYN, URG};

    use super::*;
    use crate::detect::testkit::{S, Script, pkt};

    #[test]
    fn every_odd_combination_is_named() {
        let mut s = Script::new();
        let mut d = InvalidFlags::new(Config::default());
        for f in [0x03u8, 0x06, 0x2b, 0x29, 0x00, 0xff, 0x01, 0x20] {
            s.send(S, pkt("192.0.2.9", 1234, "10.0.0.2", 80, f));
        }
        let alerts = s.poll(&mut d, 2 * S);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].packets, 8);
        let kinds: Vec<&str> = alerts[0].evidence["kinds"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        for k in ["syn-fin", "syn-rst", "xmas", "null", "all-flags", "fin-without-ack", "no-ack"] {
            assert!(kinds.contains(&k), "{k} in {kinds:?}");
        }
        assert_eq!(alerts[0].host_role, HostRole::Victim);
    }

    #[test]
    fn a_client_that_gives_up_before_the_syn_ack_is_not_invalid() {
        let mut s = Script::new();
        let mut d = InvalidFlags::new(Config::default());
        // zeek's fin-retransmission: SYN, a FIN without ACK (nothing to acknowledge yet), SYN/ACK, FIN/ACK.
        s.send(S, pkt("10.0.0.2", 55344, "192.0.2.62", 443, SYN));
        s.send(S + 1, pkt("10.0.0.2", 55344, "192.0.2.62", 443, FIN));
        s.send(S + 2, pkt("192.0.2.62", 443, "10.0.0.2", 55344, SYN | ACK));
        s.send(S + 3, pkt("10.0.0.2", 55344, "192.0.2.62", 443, FIN | ACK));
        assert!(s.events_to(&mut d).is_empty());
        assert!(s.poll(&mut d, 2 * S).is_empty());
        // zeek's syn-then-stuff-then-rst: the other side answered first (an ACK), then the FIN
        // without ACK: that FIN had something to acknowledge, so it is odd.
        s.send(2 * S, pkt("10.0.0.2", 13131, "192.0.2.63", 31313, SYN));
        s.send(2 * S + 1, pkt("192.0.2.63", 31313, "10.0.0.2", 13131, ACK));
        s.send(2 * S + 2, pkt("10.0.0.2", 13131, "192.0.2.63", 31313, FIN));
        s.events_to(&mut d);
        assert_eq!(s.poll(&mut d, 3 * S).len(), 1);
        // A bare FIN with no SYN before it stays a probe, and so does a SYN then a NULL.
        s.send(3 * S, pkt("192.0.2.9", 1000, "10.0.0.2", 80, FIN));
        s.send(3 * S, pkt("192.0.2.9", 1001, "10.0.0.2", 81, SYN));
        s.send(3 * S, pkt("192.0.2.9", 1001, "10.0.0.2", 81, 0));
        s.events_to(&mut d);
        assert_eq!(s.poll(&mut d, 4 * S)[0].packets, 2);
    }

    #[test]
    fn normal_connections_are_not_invalid() {
        let mut s = Script::new();
        let mut d = InvalidFlags::new(Config::default());
        let (us, them) = (("10.0.0.2", 40000), ("192.0.2.1", 80));
        for (from_us, f) in
            [(true, SYN), (false, SYN | ACK), (true, ACK), (true, PSH | ACK), (false, FIN | ACK), (true, RST | ACK), (true, URG | ACK)]
        {
            let ((src, sp), (dst, dp)) = if from_us { (us, them) } else { (them, us) };
            s.send(S, pkt(src, sp, dst, dp, f));
        }
        assert!(s.poll(&mut d, 2 * S).is_empty());
    }
}
