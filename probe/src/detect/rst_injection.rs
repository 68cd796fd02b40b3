//! Forged resets, after Weaver, Sommer and Paxson ("Detecting Forged TCP Reset Packets", NDSS 2009)
//! and Zeek/Suricata: an on-path injector can write a RST but cannot silence the real host, and its
//! packets rarely share the real host's distance or sequence numbers. Four signs, each judged on one
//! packet against the flow's history as it was just before it (the ring-buffer event carries it):
//! - two RSTs from one sender within 2 s whose sequence numbers differ by more than 2 (RST_SEQ_CHANGE),
//!   unless the second carries the ack of our last segment as a real stack's answer to it does;
//! - a RST whose TTL / hop limit differs from what that sender used earlier in the flow;
//! - a RST/ACK whose IPv4 IP-ID breaks the sequence the sender's stack numbered its packets in
//!   (an injector at the sender's distance matches the TTL, not the counter): medium on its own;
//! - the RST's sender still sending after its RST (and with another TTL than the RST);
//! - a RST/ACK answering our SYN whose ack is not that SYN's sequence number + 1.
//!
//! Only resets towards us are judged (on a capture where both ends are ours, loopback say, both
//! ways are): a forged RST that tears down our connection comes from elsewhere. A sender that never
//! acknowledged our SYN/ACK is a scanner, not a connection anyone could inject into: its RST and
//! whatever follows are its own.
//!
//! What a real stack does and an injector does not, each a reason to stay quiet for all traffic:
//! - a burst of RSTs from one stack (one per segment of ours in flight, each with that segment's
//!   ack as its sequence number, in whatever order they arrive) keeps its TTL and continues its own
//!   IP-ID sequence; only a second RST that breaks one of them is judged as a sequence change;
//! - (not yet for RSTs) a RST at another TTL is judged at once against the sender's first packet:
//!   a SYN proxy's SYN/ACK (TTL 255) before the server's own RST can still look forged;
//! - a data segment at another TTL than the sender's first packet is held until the sender's next
//!   packets tell: if they continue its IP-ID sequence at its TTL, a stack sends there (a path
//!   that changed, a SYN proxy or load balancer that answered the handshake); if they come back
//!   at the first TTL instead, only that segment came from elsewhere (a Quantum Insert);
//! - a new SYN after a refused one is a new connection attempt, not data after a RST.

use std::{collections::HashMap, net::IpAddr};

use probe_common::{
    flags::{ACK, RST, SYN},
    flow::{FlowKey, IP_ID_STEP_MAX, NOTABLE_AFTER_RST, NOTABLE_RST, NOTABLE_TTL_CHANGE, Side},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Detector, DetectorConfig, EventView, FlowView};
use crate::alert::{Alert, AlertDraft, HostRole, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub enabled: bool,
    /// Two RSTs this close (ms) must carry (nearly) the same sequence number.
    pub seq_change_window_ms: u64,
    /// ... differing by at most this much.
    pub seq_change_tolerance: u32,
    /// TTL differences up to this are ignored (0: any difference counts).
    pub ttl_tolerance: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true, seq_change_window_ms: 2000, seq_change_tolerance: 2, ttl_tolerance: 0 }
    }
}

impl DetectorConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn build(&self) -> Box<dyn Detector> {
        Box::new(RstInjection::new(self.clone()))
    }
}

pub struct RstInjection {
    config: Config,
    /// The last RST each sender sent on each connection: its IP-ID (IPv4) and TTL, for the next.
    last_rst: HashMap<Connection, LastRst>,
    /// Data segments whose only sign is another TTL, waiting for the sender's next packets.
    held: HashMap<FlowKey, Held>,
    /// Suspect packets so far per connection: an alert's update counts them all, not its last.
    suspects: HashMap<Connection, u64>,
}

/// A data segment at another TTL than the sender's first packet, held until the sender's next
/// packets say which it was: a path that changed (they keep the new TTL, and each is an event
/// again) or a packet from elsewhere (they come back at the old TTL, and raise no event).
struct Held {
    alert: Alert,
    sender: Side,
    ttl: u8,
    first_ttl: u8,
    /// The sender's packets counted in the flow once the held segment was in.
    packets_then: u32,
    /// Events from the sender at the held segment's TTL since.
    same_ttl_after: u32,
    /// The held segment's IP-ID (IPv4), and whether a later packet at its TTL continued it: the
    /// new TTL is then a stack's own stream of packets (a path, or another member behind a load
    /// balancer), where an injector writes a segment or two.
    ip_id: Option<u16>,
    stream: bool,
    at_ns: u64,
}

/// Held segments at most, and how long one waits for the sender's next packets.
const HELD_MAX: usize = 4096;
const HELD_NS: u64 = 30_000_000_000;

/// Sender address and port, receiver address and port.
type Connection = (IpAddr, u16, IpAddr, u16);
/// A RST's IP-ID (none for IPv6), TTL and time.
type LastRst = (Option<u16>, u8, u64);

/// Connections whose last RST is remembered at most (a RST flood empties the memory, no more).
const LAST_RST_MAX: usize = 4096;
/// Two IP-IDs this close (either way: RSTs of one burst arrive out of order) are one stack's.
const IP_ID_SAME_STACK: u16 = 256;
/// A sender's IP-IDs are a sequence once this many steps in a row were small (three packets).
const IP_ID_RUN_MIN: u8 = 2;
/// How far ahead of the sender's last IP-ID its own RST may be, at most (half the number space).
const IP_ID_REACH_MAX: u64 = 32_768;

impl RstInjection {
    pub fn new(config: Config) -> Self {
        RstInjection { config, last_rst: HashMap::new(), held: HashMap::new(), suspects: HashMap::new() }
    }
}

/// Two IP-IDs close enough (either way: packets of one burst arrive out of order) to be one stack's.
fn same_stack(a: u16, b: u16) -> bool {
    a.wrapping_sub(b).min(b.wrapping_sub(a)) <= IP_ID_SAME_STACK
}

/// The IPv4 identification of an event's packet (none for IPv6, whose packets carry none).
fn ip_id(e: &probe_common::event::PacketEvent) -> Option<u16> {
    (e.family == probe_common::flow::FAMILY_V4).then_some(e.ip_id)
}

/// Signed distance between two sequence numbers (mod 2^32).
fn seq_distance(a: u32, b: u32) -> u32 {
    (a.wrapping_sub(b) as i32).unsigned_abs()
}

impl Detector for RstInjection {
    fn observe_event(&mut self, ev: &EventView<'_>) -> Vec<Alert> {
        let e = ev.event;
        let (flow, sender_side) = FlowKey::canonical(&e.endpoints());
        if let Some(h) = self.held.get_mut(&flow)
            && h.sender == sender_side
            && e.ttl == h.ttl
        {
            h.same_ttl_after += 1;
            h.stream |= match (h.ip_id, ip_id(e)) {
                (Some(a), Some(b)) => same_stack(a, b),
                _ => true,
            };
        }
        // Towards us only; when both ends are ours (a loopback capture), each end judges the other.
        if (ev.from_local && !ev.to_local) || e.reasons & (NOTABLE_RST | NOTABLE_AFTER_RST | NOTABLE_TTL_CHANGE) == 0 {
            return vec![];
        }
        let (sender, receiver) = ev.sides();
        let before = &e.flow_before;
        let s = &before.sides[sender.index()];
        let ours = &before.sides[receiver.index()];
        let is_rst = e.flags & RST != 0;
        // A SYN scanner's pattern, not an injection: the sender's SYN, our SYN/ACK, and nothing of
        // the sender's acknowledging it. nmap -sS crafts its SYN with one TTL and the scanner's own
        // kernel resets our SYN/ACK with another; a stateless scanner (zmap/masscan-style) may
        // come back later on the same port with data its RST never allowed. Both are the scan's
        // own packets from one machine, and the scan detector names them.
        let half_open = s.syn > 0 && s.pure_ack == 0 && s.data == 0 && ours.syn_ack > 0;
        if half_open {
            return vec![];
        }
        let ttl_differs = |a: u8, b: u8| a.abs_diff(b) > self.config.ttl_tolerance;
        let (src, dst) = (ev.src(), ev.dst());
        let this_id = ip_id(e);
        let previous = if is_rst {
            if self.last_rst.len() >= LAST_RST_MAX {
                self.last_rst.clear();
            }
            self.last_rst.insert((src, e.sport, dst, e.dport), (this_id, e.ttl, ev.at_ns))
        } else {
            self.last_rst.get(&(src, e.sport, dst, e.dport)).copied()
        };
        let mut signs: Vec<String> = Vec::new();
        if is_rst && s.rst > 0 {
            let gap_ms = (e.ts_ns.saturating_sub(s.last_rst_at)) / 1_000_000;
            let dist = seq_distance(e.seq, s.last_rst_seq);
            // A real stack answers each late segment of ours with a RST whose sequence number is
            // that segment's ack: two such RSTs differ because our segments did.
            let answers_our_segment = e.flags & ACK == 0 && ours.last_ack != 0 && e.seq == ours.last_ack;
            // One stack's burst keeps its TTL and its IP-ID sequence (IPv6 has no IP-ID: the TTL).
            let same_stack = previous.is_some_and(|(id, ttl, _)| {
                !ttl_differs(ttl, e.ttl)
                    && match (id, this_id) {
                        (Some(a), Some(b)) => same_stack(a, b),
                        _ => true,
                    }
            });
            if gap_ms <= self.config.seq_change_window_ms && dist > self.config.seq_change_tolerance && !answers_our_segment && !same_stack
            {
                signs.push(format!(
                    "RST_SEQ_CHANGE: a second RST {gap_ms} ms after the first, with sequence number {} instead of {} (off by {dist})",
                    e.seq, s.last_rst_seq
                ));
            }
        }
        // The sender's stack numbered its packets in sequence, and the RST is not the next of
        // them: another stack wrote it. An injector at the sender's distance (an inline IPS's
        // `reject`, a firewall, a censor next to the real host) matches the TTL but cannot know
        // the counter. A real stack's RST continues it (Linux's abort on the connection's own
        // counter, Windows' and FreeBSD's per host a little further on); stacks that draw IP-IDs
        // at random never form a run. Only a RST/ACK is judged: a bare RST is how a stack answers
        // a segment for a connection it no longer has (its sequence number is that segment's
        // ack), from outside the connection and with another numbering (0, or another counter's:
        // nDPI's Ethereum peers reset a burst of our segments so).
        let id_break = this_id.filter(|_| is_rst && e.flags & ACK != 0).and_then(|id| {
            let run = before.ip_id_runs[sender.index()];
            if id == 0 || s.last_ip_id == 0 || run < IP_ID_RUN_MIN {
                return None;
            }
            // A per-host counter moves on with the host's other traffic while this one is quiet.
            let quiet_ms = ev.at_ns.saturating_sub(before.last_seen) / 1_000_000;
            let reach = (u64::from(IP_ID_STEP_MAX) * (1 + quiet_ms)).min(IP_ID_REACH_MAX) as u16;
            // Or a little behind: packets of one burst arrive out of order.
            let continues = (1..=reach).contains(&id.wrapping_sub(s.last_ip_id)) || same_stack(id, s.last_ip_id);
            (!continues).then_some((id, run))
        });
        if let Some((id, run)) = id_break {
            signs.push(format!(
                "the RST's IP-ID {id:#06x} breaks the sender's own sequence: its last {} packets counted up a step at a time to {:#06x}",
                u32::from(run) + 1,
                s.last_ip_id
            ));
        }
        if is_rst && s.packets > 0 && ttl_differs(e.ttl, s.first_ttl) {
            signs.push(format!("the RST arrived with TTL {} while this sender's earlier packets had TTL {}", e.ttl, s.first_ttl));
        }
        // A SYN after the sender's RST opens a new connection on the same ports (a retry).
        let new_attempt = e.flags & SYN != 0 && e.flags & ACK == 0;
        if !is_rst && !new_attempt && s.rst > 0 && e.reasons & NOTABLE_AFTER_RST != 0 {
            let mut sign = format!(
                "the sender kept sending after its own RST ({} with {} payload bytes)",
                probe_common::flags::letters(e.flags),
                e.payload_len
            );
            if ttl_differs(e.ttl, s.last_rst_ttl) {
                sign.push_str(&format!(", and with TTL {} where its RST had {}", e.ttl, s.last_rst_ttl));
            }
            signs.push(sign);
        }
        let data_ttl = !is_rst && s.rst == 0 && e.payload_len > 0 && s.packets > 0 && ttl_differs(e.ttl, s.first_ttl);
        if data_ttl {
            signs.push(format!(
                "a data segment arrived with TTL {} while this sender's earlier packets had TTL {}: another machine on the path may be writing into the connection",
                e.ttl, s.first_ttl
            ));
        }
        let answers_our_syn = ours.syn > 0 && s.packets == 0;
        if is_rst && e.flags & ACK != 0 && answers_our_syn && e.ack != ours.syn_seq.wrapping_add(1) {
            signs.push(format!(
                "the RST/ACK answers our SYN (seq {}) with ack {} instead of {}",
                ours.syn_seq,
                e.ack,
                ours.syn_seq.wrapping_add(1)
            ));
        }
        if signs.is_empty() {
            return vec![];
        }
        let summary = format!("Possibly forged TCP reset/injection on {src}:{} -> {dst}:{}: {}", e.sport, e.dport, signs[0]);
        let explanation = format!(
            "Something other than {src} may be writing into this connection: an on-path device (a censor, an intrusion-\
             prevention box, or an attacker) can forge RSTs or data with {src}'s address, but it rarely matches the real \
             host's distance (TTL), its sequence numbers or the numbering of its IP packets (IP-ID), and it cannot stop \
             the real host from answering. What we saw: {}. \
             Our connection may have been torn down or tampered with by a third party; compare with a capture from the \
             other end, and check for middleboxes on the path.",
            signs.join("; ")
        );
        let evidence = json!({
            "signs": signs,
            "flags": probe_common::flags::letters(e.flags).to_string(),
            "ttl": e.ttl,
            "sender_first_ttl": s.first_ttl,
            "ip_id": this_id,
            "sender_last_ip_id": s.last_ip_id,
            "sender_ip_ids_in_sequence": before.ip_id_runs[sender.index()],
            "sender_previous_rst": { "count": s.rst, "seq": s.last_rst_seq, "ttl": s.last_rst_ttl },
            "seq": e.seq,
            "ack": e.ack,
            "our_syn_seq": ours.syn_seq,
            "payload_len": e.payload_len,
        });
        // Another stack's IP-ID at the sender's own distance is what an inline device on the path
        // leaves, ours included (an IPS's reject, a load balancer's idle reset): worth a look, not
        // the page that TTL and sequence evidence of a third party deserves.
        let severity = if id_break.is_some() && signs.len() == 1 { Severity::Medium } else { Severity::High };
        if self.suspects.len() >= LAST_RST_MAX {
            self.suspects.clear();
        }
        // A segment held for its sender's next packets is counted when (if) it is alerted.
        let held_now = data_ttl && signs.len() == 1;
        let suspects = self.suspects.entry((src, e.sport, dst, e.dport)).or_default();
        *suspects += u64::from(!held_now);
        let packets = (*suspects).max(1);
        let draft = AlertDraft {
            detector: "rst_injection",
            severity,
            verdict: "injection-suspected",
            host_role: HostRole::Victim,
            key: format!("{src}:{}|{dst}:{}", e.sport, e.dport),
            iface: ev.iface.to_string(),
            src: Some((src, Some(e.sport))),
            dest: Some((dst, Some(e.dport))),
            first_seen_ns: before.first_seen,
            last_seen_ns: ev.at_ns,
            packets,
            flows: 1,
        };
        let alert = draft.build(ev.at_ns, summary, explanation, evidence);
        // Another TTL alone is what a changed path shows too (a route, a load balancer's other
        // member): held until the sender's next packets tell.
        if held_now {
            if self.held.contains_key(&flow) {
                return vec![];
            }
            if self.held.len() >= HELD_MAX {
                self.held.clear();
            }
            let held = Held {
                alert,
                sender: sender_side,
                ttl: e.ttl,
                first_ttl: s.first_ttl,
                packets_then: s.packets + 1,
                same_ttl_after: 0,
                ip_id: this_id,
                stream: false,
                at_ns: ev.at_ns,
            };
            self.held.insert(flow, held);
            return vec![];
        }
        vec![alert]
    }

    /// A held segment is judged once its sender sent more. If a later packet at its TTL continued
    /// its IP-ID sequence, a stack sends at that TTL: a path, not an injector (nDPI's P2P capture
    /// sends its data one hop off its SYN/ACK, FIN and RSTs). Otherwise, if some later packets
    /// came back at the sender's first TTL (no event: only the held segment differed), the segment
    /// came from elsewhere (Zeek's Quantum Insert trace).
    fn observe_flows(&mut self, _now_ns: u64, flows: &[FlowView<'_>]) -> Vec<Alert> {
        let mut out = Vec::new();
        for f in flows {
            let Some(h) = self.held.get(&f.now.key) else { continue };
            let later = f.now.sides[h.sender.index()].packets.saturating_sub(h.packets_then);
            if later == 0 {
                continue;
            }
            let h = self.held.remove(&f.now.key).expect("just found");
            if !h.stream && later > h.same_ttl_after {
                let mut alert = h.alert;
                let back = later - h.same_ttl_after;
                alert.explanation.push_str(&format!(
                    " The sender's next packets came back with TTL {} ({back} of {later}): only this segment differed.",
                    h.first_ttl
                ));
                alert.evidence["later_packets_at_first_ttl"] = json!(back);
                out.push(alert);
            }
        }
        out
    }

    fn expire(&mut self, now_ns: u64) {
        self.held.retain(|_, h| now_ns.saturating_sub(h.at_ns) < HELD_NS);
    }
}

#[cfg(test)]
mod tests {
    use probe_common::flags::PSH;

    use super::*;
    use crate::detect::testkit::{Pkt, S, Script, pkt};

    fn handshake(s: &mut Script) {
        s.send(S, pkt("10.0.0.2", 40000, "192.0.2.1", 80, SYN));
        let mut sa = pkt("192.0.2.1", 80, "10.0.0.2", 40000, SYN | ACK);
        sa.ttl = 50;
        sa.seq = 5000;
        sa.ack = 1001;
        s.send(S + 1, sa);
        s.send(S + 2, pkt("10.0.0.2", 40000, "192.0.2.1", 80, ACK));
    }

    #[test]
    fn rst_with_another_ttl_is_suspect() {
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        handshake(&mut s);
        let mut rst = pkt("192.0.2.1", 80, "10.0.0.2", 40000, RST);
        rst.ttl = 61;
        rst.seq = 5001;
        s.send(2 * S, rst);
        let alerts = s.events_to(&mut d);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].verdict, "injection-suspected");
        assert!(alerts[0].summary.contains("TTL 61"), "{}", alerts[0].summary);
    }

    /// Each alert of a connection counts every suspect packet so far: its update is not "1
    /// packet" again.
    #[test]
    fn a_second_suspect_rst_on_a_connection_counts_two() {
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        handshake(&mut s);
        for t in [2 * S, 3 * S] {
            let mut rst = pkt("192.0.2.1", 80, "10.0.0.2", 40000, RST);
            (rst.ttl, rst.seq) = (40, 5001);
            s.send(t, rst);
        }
        let packets: Vec<u64> = s.events_to(&mut d).iter().map(|a| a.packets).collect();
        assert_eq!(packets, [1, 2]);
    }

    #[test]
    fn two_rsts_with_distant_sequence_numbers_are_suspect() {
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        handshake(&mut s);
        // The second RST's IP-ID is unrelated to the first's: another machine wrote it.
        for (t, seq, id) in [(2 * S, 5001, 0x0105), (2 * S + S / 2, 9_000_000, 0xe75e)] {
            let mut rst = pkt("192.0.2.1", 80, "10.0.0.2", 40000, RST);
            (rst.ttl, rst.seq, rst.ip_id) = (50, seq, id);
            s.send(t, rst);
        }
        let alerts = s.events_to(&mut d);
        assert_eq!(alerts.len(), 1, "only the second RST is suspect");
        assert!(alerts[0].summary.contains("RST_SEQ_CHANGE"));
    }

    /// The server's SYN/ACK and three data segments numbered 0x0100.. by its stack, TTL 50, then a
    /// RST with IP-ID `rst_id` at `t` (same TTL).
    fn numbered_server_then_rst(rst_id: u16, t: u64) -> Vec<Alert> {
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        s.send(S, pkt("10.0.0.2", 40000, "192.0.2.1", 80, SYN));
        for (i, flags) in [SYN | ACK, ACK | PSH, ACK | PSH, ACK | PSH].into_iter().enumerate() {
            let mut p = pkt("192.0.2.1", 80, "10.0.0.2", 40000, flags);
            (p.ttl, p.ip_id, p.seq) = (50, 0x0100 + i as u16, 5000 + 100 * i as u32);
            if flags != SYN | ACK {
                p.payload = b"data";
            }
            s.send(S + 1 + i as u64, p);
            s.send(S + 2 + i as u64, pkt("10.0.0.2", 40000, "192.0.2.1", 80, ACK));
        }
        let mut rst = pkt("192.0.2.1", 80, "10.0.0.2", 40000, RST | ACK);
        (rst.ttl, rst.ip_id, rst.seq) = (50, rst_id, 5400);
        s.send(t, rst);
        s.events_to(&mut d)
    }

    /// An inline IPS's `reject` (Snort 3's demo capture): the RST comes at the server's TTL but
    /// with an IP-ID far from the server's own numbering: another stack wrote it.
    #[test]
    fn a_rst_breaking_the_senders_ip_id_sequence_is_another_stacks() {
        let a = numbered_server_then_rst(0xe75e, S + 10);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].severity, a[0].verdict), (Severity::Medium, "injection-suspected"));
        assert!(a[0].summary.contains("IP-ID 0xe75e breaks the sender's own sequence"), "{}", a[0].summary);
        assert_eq!((a[0].evidence["sender_last_ip_id"].as_u64(), a[0].evidence["ip_id"].as_u64()), (Some(0x0103), Some(0xe75e)));
    }

    /// What a real stack's RST looks like after the same packets: the next number (Linux aborting
    /// on the connection's own counter), a little further after a quiet while (a per-host counter
    /// moving on with other traffic), a little behind (reordered), or 0 (Linux's RST for a socket
    /// that is gone). All quiet.
    #[test]
    fn a_rst_continuing_or_without_an_ip_id_is_the_senders_own() {
        assert!(numbered_server_then_rst(0x0104, S + 10).is_empty(), "the next number");
        assert!(numbered_server_then_rst(0x0100 + 5000, S + S).is_empty(), "5000 on after a quiet second");
        assert!(numbered_server_then_rst(0x00f0, S + 10).is_empty(), "a little behind");
        assert!(numbered_server_then_rst(0, S + 10).is_empty(), "no number");
        // A bare RST answering a segment of ours once the server's socket is gone.
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        handshake(&mut s);
        for (i, id) in [0x0200u16, 0x0201, 0x0202].into_iter().enumerate() {
            let mut p = pkt("192.0.2.1", 80, "10.0.0.2", 40000, ACK | PSH);
            (p.ttl, p.ip_id, p.payload, p.seq) = (50, id, b"data", 5001 + 4 * i as u32);
            s.send(S + 10 + i as u64, p);
        }
        let mut late = pkt("10.0.0.2", 40000, "192.0.2.1", 80, ACK | PSH);
        (late.seq, late.ack, late.payload) = (1001, 5013, b"late");
        s.send(S + 20, late);
        let mut rst = pkt("192.0.2.1", 80, "10.0.0.2", 40000, RST);
        (rst.ttl, rst.ip_id, rst.seq) = (50, 0xb1ce, 5013);
        s.send(S + 21, rst);
        assert!(s.events_to(&mut d).is_empty(), "a bare RST for a connection the stack no longer has");
        // A stack that draws IP-IDs at random never forms a run: nothing to break.
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        handshake(&mut s);
        for (i, id) in [0x9a13u16, 0x1c44, 0xf301].into_iter().enumerate() {
            let mut p = pkt("192.0.2.1", 80, "10.0.0.2", 40000, ACK | PSH);
            (p.ttl, p.ip_id, p.payload) = (50, id, b"data");
            s.send(S + 10 + i as u64, p);
        }
        let mut rst = pkt("192.0.2.1", 80, "10.0.0.2", 40000, RST | ACK);
        (rst.ttl, rst.ip_id) = (50, 0x5555);
        s.send(S + 20, rst);
        assert!(s.events_to(&mut d).is_empty());
    }

    #[test]
    fn a_burst_of_resets_from_one_stack_is_not_a_sequence_change() {
        // A P2P peer's stack resets each of our segments in flight: sequence numbers all over the
        // place, in any order, but one TTL and one IP-ID sequence (ndpi's ethereum-rst-burst).
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        handshake(&mut s);
        for (i, (seq, id)) in
            [(4_166_282_229u32, 0xb1cf), (4_166_282_197, 0xb1d2), (4_166_282_230, 0xb1da), (4_166_282_198, 0xb1d3)].into_iter().enumerate()
        {
            let mut rst = pkt("192.0.2.1", 80, "10.0.0.2", 40000, RST);
            (rst.ttl, rst.seq, rst.ip_id) = (50, seq, id);
            s.send(2 * S + i as u64 * 1000, rst);
        }
        assert!(s.events_to(&mut d).is_empty());
    }

    /// Our SYN, the server's SYN/ACK (TTL 54) and our ACK and request, as in Zeek's Quantum Insert
    /// trace.
    fn qi_handshake(s: &mut Script) {
        s.send(S, pkt("10.0.0.2", 40000, "192.0.2.1", 80, SYN));
        s.send(S + 1, Pkt { ttl: 54, ack: 1001, ..pkt("192.0.2.1", 80, "10.0.0.2", 40000, SYN | ACK) });
        s.send(S + 2, pkt("10.0.0.2", 40000, "192.0.2.1", 80, ACK));
        s.send(S + 3, Pkt { payload: b"GET / HTTP/1.1", ..pkt("10.0.0.2", 40000, "192.0.2.1", 80, PSH | ACK) });
    }

    #[test]
    fn a_segment_at_another_ttl_followed_by_the_senders_own_is_injection() {
        // Quantum Insert: a segment two hops off races the server's answer, which comes at TTL 54.
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        qi_handshake(&mut s);
        s.send(S + 4, Pkt { ttl: 56, payload: b"HTTP/1.1 302 Found", ..pkt("192.0.2.1", 80, "10.0.0.2", 40000, PSH | ACK) });
        assert!(s.events_to(&mut d).is_empty(), "held until the sender's next packets");
        s.send(S + 5, Pkt { ttl: 54, payload: b"HTTP/1.1 200 OK", ..pkt("192.0.2.1", 80, "10.0.0.2", 40000, PSH | ACK) });
        let mut alerts = s.events_to(&mut d);
        alerts.extend(s.poll(&mut d, 2 * S));
        assert_eq!(alerts.len(), 1, "{:#?}", alerts.iter().map(|a| &a.summary).collect::<Vec<_>>());
        assert!(alerts[0].summary.contains("TTL 56"), "{}", alerts[0].summary);
        assert!(alerts[0].explanation.contains("came back with TTL 54"), "{}", alerts[0].explanation);
    }

    #[test]
    fn a_path_that_changed_keeps_its_new_ttl_and_is_not_injection() {
        // The SYN/ACK one hop nearer than the data that follows, all of it (a load balancer's
        // other member, a route change): every later packet keeps the new TTL.
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        qi_handshake(&mut s);
        for i in 0..4u64 {
            s.send(S + 4 + i, Pkt { ttl: 55, payload: b"more data", ..pkt("192.0.2.1", 80, "10.0.0.2", 40000, PSH | ACK) });
        }
        let mut alerts = s.events_to(&mut d);
        alerts.extend(s.poll(&mut d, 2 * S));
        assert!(alerts.is_empty(), "{:#?}", alerts.iter().map(|a| &a.summary).collect::<Vec<_>>());
    }

    #[test]
    fn a_syn_proxy_or_a_retry_is_not_forgery() {
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        // A SYN proxy on our link answers the handshake (TTL 255), the server sends from afar.
        s.send(S, pkt("10.0.0.2", 40001, "192.0.2.1", 443, SYN));
        let mut sa = pkt("192.0.2.1", 443, "10.0.0.2", 40001, SYN | ACK);
        (sa.ttl, sa.ack) = (255, 1001);
        s.send(S + 1, sa);
        s.send(S + 2, pkt("10.0.0.2", 40001, "192.0.2.1", 443, ACK));
        for i in 0..3u64 {
            let mut data = pkt("192.0.2.1", 443, "10.0.0.2", 40001, PSH | ACK);
            (data.ttl, data.payload, data.ip_id) = (52, b"server hello", 0x3a00 + i as u16);
            s.send(3 * S + i, data);
        }
        // A refused SYN, then a new SYN on the same ports: a retry.
        s.send(5 * S, pkt("192.0.2.9", 5000, "10.0.0.2", 25, SYN));
        s.send(5 * S + 1, pkt("10.0.0.2", 25, "192.0.2.9", 5000, RST | ACK));
        let mut rst = pkt("192.0.2.9", 5000, "10.0.0.2", 25, RST);
        rst.seq = 1001;
        s.send(5 * S + 2, rst);
        s.send(6 * S, Pkt { seq: 77_000, ..pkt("192.0.2.9", 5000, "10.0.0.2", 25, SYN) });
        let mut alerts = s.events_to(&mut d);
        alerts.extend(s.poll(&mut d, 10 * S));
        assert!(alerts.is_empty(), "{:#?}", alerts.iter().map(|a| &a.summary).collect::<Vec<_>>());
    }

    #[test]
    fn rst_ack_with_the_wrong_ack_and_a_later_synack_are_suspect() {
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        s.send(S, pkt("10.0.0.2", 2527, "192.0.2.3", 6649, SYN));
        let mut rst = pkt("192.0.2.3", 6649, "10.0.0.2", 2527, RST | ACK);
        rst.ttl = 46;
        rst.seq = 0;
        rst.ack = 1000; // the SYN's own seq, not +1
        s.send(S + 1, rst);
        let mut sa = pkt("192.0.2.3", 6649, "10.0.0.2", 2527, SYN | ACK);
        sa.ttl = 49;
        sa.ack = 1001;
        s.send(2 * S, sa);
        let alerts = s.events_to(&mut d);
        assert_eq!(alerts.len(), 2, "{:#?}", alerts.iter().map(|a| &a.summary).collect::<Vec<_>>());
        assert!(alerts[0].summary.contains("ack 1000 instead of 1001"));
        assert!(alerts[1].summary.contains("after its own RST"));
        assert!(alerts[1].explanation.contains("TTL 49 where its RST had 46"));
    }

    /// A remote's SYN (crafted, TTL 41) and our SYN/ACK.
    fn their_syn(s: &mut Script, port: u16) {
        let mut syn = pkt("192.0.2.66", 60293, "10.0.0.2", port, SYN);
        syn.ttl = 41;
        s.send(S, syn);
        s.send(S + 1, pkt("10.0.0.2", port, "192.0.2.66", 60293, SYN | ACK));
    }

    #[test]
    fn a_half_open_scanners_own_reset_is_not_injection() {
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        // nmap -sS: the scanner's kernel resets our SYN/ACK with its own TTL.
        their_syn(&mut s, 22);
        s.send(S + 2, pkt("192.0.2.66", 60293, "10.0.0.2", 22, RST));
        // A stateless scanner: its RST, then data 15 s later on the same port, same TTL.
        their_syn(&mut s, 502);
        let mut rst = pkt("192.0.2.66", 60293, "10.0.0.2", 502, RST);
        rst.ttl = 41;
        s.send(S + 2, rst);
        let mut data = pkt("192.0.2.66", 60293, "10.0.0.2", 502, ACK | PSH);
        (data.ttl, data.payload) = (41, &[1; 109]);
        s.send(16 * S, data);
        assert!(s.events_to(&mut d).is_empty());
    }

    #[test]
    fn data_after_the_senders_own_reset_in_an_established_connection_is_suspect() {
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        // suricata-verify's suspected-rst-inject: handshake, the client's RST/ACK, then its request.
        their_syn(&mut s, 80);
        s.send(S + 2, Pkt { ttl: 41, ..pkt("192.0.2.66", 60293, "10.0.0.2", 80, ACK) });
        s.send(S + 3, Pkt { ttl: 41, ..pkt("192.0.2.66", 60293, "10.0.0.2", 80, RST | ACK) });
        let mut data = pkt("192.0.2.66", 60293, "10.0.0.2", 80, ACK | PSH);
        (data.ttl, data.payload) = (41, b"GET /ultrasurf.html HTTP/1.1");
        s.send(S + 4, data);
        let a = s.events_to(&mut d);
        assert_eq!(a.len(), 1);
        assert!(a[0].summary.contains("after its own RST"), "{}", a[0].summary);
    }

    #[test]
    fn data_after_a_reset_between_two_of_our_own_hosts_is_judged_too() {
        // A loopback capture: both ends are ours, and the client's data follows its own RST/ACK.
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        s.send(S, pkt("10.0.0.5", 60293, "10.0.0.2", 80, SYN));
        s.send(S + 1, pkt("10.0.0.2", 80, "10.0.0.5", 60293, SYN | ACK));
        s.send(S + 2, pkt("10.0.0.5", 60293, "10.0.0.2", 80, ACK));
        s.send(S + 3, pkt("10.0.0.5", 60293, "10.0.0.2", 80, RST | ACK));
        s.send(S + 4, Pkt { payload: b"GET / HTTP/1.1", ..pkt("10.0.0.5", 60293, "10.0.0.2", 80, ACK | PSH) });
        let a = s.events_to(&mut d);
        assert_eq!(a.len(), 1, "{:#?}", a.iter().map(|a| &a.summary).collect::<Vec<_>>());
        assert!(a[0].summary.contains("after its own RST"), "{}", a[0].summary);
    }

    #[test]
    fn a_stack_answering_our_late_segments_is_not_a_sequence_change() {
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        handshake(&mut s);
        // The server has closed; each late segment of ours gets a RST with seq = that segment's ack.
        for (t, ack) in [(2 * S, 5001u32), (2 * S + S / 4, 7000)] {
            let mut late = pkt("10.0.0.2", 40000, "192.0.2.1", 80, ACK | PSH);
            (late.ack, late.payload) = (ack, b"late");
            s.send(t, late);
            let mut rst = pkt("192.0.2.1", 80, "10.0.0.2", 40000, RST);
            (rst.ttl, rst.seq) = (50, ack);
            s.send(t + 1, rst);
        }
        assert!(s.events_to(&mut d).is_empty());
    }

    #[test]
    fn ordinary_refusals_and_closes_are_not_suspect() {
        let mut s = Script::new();
        let mut d = RstInjection::new(Config::default());
        // Refused connect: RST/ACK with ack = SYN + 1.
        s.send(S, pkt("10.0.0.2", 40001, "192.0.2.1", 81, SYN));
        let mut ra = pkt("192.0.2.1", 81, "10.0.0.2", 40001, RST | ACK);
        ra.ack = 1001;
        s.send(S + 1, ra);
        // Established, data, then a RST with the same TTL.
        handshake(&mut s);
        let mut data = pkt("192.0.2.1", 80, "10.0.0.2", 40000, PSH | ACK);
        data.ttl = 50;
        data.payload = b"hello";
        s.send(3 * S, data);
        let mut rst = pkt("192.0.2.1", 80, "10.0.0.2", 40000, RST);
        rst.ttl = 50;
        s.send(4 * S, rst);
        assert!(s.events_to(&mut d).is_empty());
    }
}
