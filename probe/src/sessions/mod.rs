//! Session records: one line per TCP connection the flow table held, written when it ends, in
//! Zeek's `conn.log` vocabulary plus what only flagprobe keeps (every flag combination per side,
//! first TTLs, why it was reset, how it ended, the alerts about it). `run --sessions` and
//! `replay --sessions` write them with this code from the same [`FlowEntry`]s; `flagprobe
//! sessions` ([`query`]) reads them back, and [`ipfix`] exports them to flow collectors.

pub mod ipfix;
pub mod log;
pub mod query;
pub mod rotate;
pub mod zeek;

use std::collections::{BTreeMap, VecDeque};

use probe_common::flags::{self, ACK, FIN, RST, SYN};
use probe_common::flow::{FlowEntry, Side};
use serde::{Deserialize, Serialize};

use crate::{alert::Alert, detect::addr, flows::Leaving};

/// How a connection ended, as the record's `close` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Both sides sent a FIN.
    Fin,
    RstByOrig,
    RstByResp,
    /// Quiet for the flow-idle time.
    Idle,
    /// Its slot went to another flow before it ended (a flood, or a full table).
    Evicted,
    /// Still open when the agent stopped or the capture ended.
    Shutdown,
    /// Still open: a record of a long connection so far, written every `sessions-interval`.
    Interval,
}

impl Close {
    pub fn name(self) -> &'static str {
        match self {
            Close::Fin => "fin",
            Close::RstByOrig => "rst-by-orig",
            Close::RstByResp => "rst-by-resp",
            Close::Idle => "idle",
            Close::Evicted => "evicted",
            Close::Shutdown => "shutdown",
            Close::Interval => "interval",
        }
    }

    /// What the flow itself says (a RST, whoever sent the first; a FIN from each side), else why
    /// the table let go of it.
    pub fn of(e: &FlowEntry, orig: Side, leaving: Leaving) -> Close {
        let first_rst = probe_common::flow::letters(e).find(|(_, class)| *class == probe_common::flow::LETTER_R).map(|(side, _)| side);
        match first_rst {
            _ if leaving == Leaving::Interval => Close::Interval,
            Some(side) if side == orig => Close::RstByOrig,
            Some(_) => Close::RstByResp,
            None if e.sides[0].fin > 0 && e.sides[1].fin > 0 => Close::Fin,
            None => match leaving {
                Leaving::Idle => Close::Idle,
                Leaving::Evicted => Close::Evicted,
                Leaving::Shutdown | Leaving::Interval => Close::Shutdown,
            },
        }
    }
}

/// One connection, as a JSON line. Field names and meanings are Zeek's `conn.log` ones where Zeek
/// has the field (`orig_ip_bytes`: IP bytes, headers included, as Zeek's field of that name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The first packet, in seconds since the epoch (Zeek's `ts`).
    pub ts: f64,
    pub uid: String,
    pub orig_h: String,
    pub orig_p: u16,
    pub resp_h: String,
    pub resp_p: u16,
    pub proto: String,
    /// Seconds from the first to the last packet.
    pub duration: f64,
    pub orig_pkts: u64,
    pub orig_ip_bytes: u64,
    pub resp_pkts: u64,
    pub resp_ip_bytes: u64,
    pub conn_state: String,
    pub history: String,
    /// Every flags combination the originator sent, with its count ([`flag_counts`]).
    pub orig_flags: BTreeMap<String, u64>,
    pub resp_flags: BTreeMap<String, u64>,
    pub orig_ttl: u8,
    pub resp_ttl: u8,
    pub close: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_cause: Option<String>,
    /// Ids of the alerts that named this connection's endpoints while it was open.
    pub alerts: Vec<String>,
    pub iface: String,
}

/// `side`'s packets by the classes the table counts them in — RST with ACK, RST without, SYN/ACK,
/// SYN, FIN, the rest (as [`FlowEntry::apply`] does) — each with its packet count and the exact
/// combinations seen in it (the table keeps the set). The counts add up to the side's packets.
pub fn flag_classes(e: &FlowEntry, side: Side) -> [(u64, Vec<u8>); 6] {
    let s = &e.sides[side.index()];
    let class_of = |f: u8| -> usize {
        if f & RST != 0 {
            if f & ACK != 0 { 0 } else { 1 }
        } else if f & SYN != 0 && f & FIN == 0 {
            if f & ACK != 0 { 2 } else { 3 }
        } else if f & FIN != 0 {
            4
        } else {
            5
        }
    };
    let mut counts = [s.rst_ack as u64, (s.rst - s.rst_ack) as u64, s.syn_ack as u64, s.syn as u64, s.fin as u64, 0];
    counts[5] = (s.packets as u64).saturating_sub(counts.iter().sum());
    let mut out: [(u64, Vec<u8>); 6] = Default::default();
    for (o, n) in out.iter_mut().zip(counts) {
        o.0 = n;
    }
    for f in (0..=255u8).filter(|f| e.saw_combo(side, *f)) {
        out[class_of(f)].1.push(f);
    }
    out
}

/// The flags combinations `side` sent, each with its packet count: a class in which one
/// combination was seen gives that combination's count exactly. Where several were (the rest
/// class often holds `A` and `PA`), they share one key, `A|PA`, and the count is theirs together.
pub fn flag_counts(e: &FlowEntry, side: Side) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (n, combos) in flag_classes(e, side) {
        if n > 0 && !combos.is_empty() {
            let names: Vec<String> = combos.iter().map(|f| flags::letters(*f).to_string()).collect();
            out.insert(names.join("|"), n);
        }
    }
    out
}

/// A connection's id: stable for its endpoints and first packet, so a record written again (an
/// interval record, then the final one) carries the same one. Zeek's style: `C` and base62.
pub fn uid(e: &FlowEntry) -> String {
    let k = &e.key;
    let mut n =
        crate::alert::fnv1a(&[&k.addr_lo, &k.addr_hi, &k.port_lo.to_be_bytes(), &k.port_hi.to_be_bytes(), &e.first_seen.to_le_bytes()]);
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::from("C");
    for _ in 0..11 {
        out.push(DIGITS[(n % 62) as usize] as char);
        n /= 62;
    }
    out
}

/// The alerts about one connection, as its record names them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertsAbout {
    pub ids: Vec<String>,
    /// The first one's detector and summary: the reset's cause in its words.
    pub words: Option<String>,
}

/// The latest alerts written, to name in the records of the connections they were about.
#[derive(Default)]
pub struct AlertMemory {
    recent: VecDeque<Alert>,
}

/// Live, a flow's times come from the table's clock (jiffies, a few ms apart, converted) and an
/// alert's from its packets' events (ns): a one-packet flow and the alert about that packet may
/// look a few ms apart. A second covers it; alerts about other connections name other endpoints.
const CLOCK_SLACK_NS: u64 = 1_000_000_000;

/// How many alerts a record is matched against: a connection's alerts come while it is open, and
/// a flood's thousands of connections share a few aggregate alerts.
const ALERT_MEMORY: usize = 1024;

impl AlertMemory {
    pub fn remember(&mut self, alert: &Alert) {
        self.recent.retain(|a| a.id != alert.id);
        if self.recent.len() == ALERT_MEMORY {
            self.recent.pop_front();
        }
        self.recent.push_back(alert.clone());
    }

    /// What a record says of the alerts about `e`: their ids, and the first one's words.
    pub fn about(&self, e: &FlowEntry) -> AlertsAbout {
        let about = self.involving(e);
        AlertsAbout {
            ids: about.iter().map(|a| a.id.clone()).collect(),
            words: about.first().map(|a| format!("{}: {}", a.detector, a.summary)),
        }
    }

    /// The alerts about `e`: naming its two addresses (either way round) and, where they name
    /// ports, its ports, and seen while it was open — give or take [`CLOCK_SLACK_NS`].
    pub fn involving(&self, e: &FlowEntry) -> Vec<&Alert> {
        let k = &e.key;
        let lo = (addr(k.addr_lo, k.family), k.port_lo);
        let hi = (addr(k.addr_hi, k.family), k.port_hi);
        let matches = |ip: Option<std::net::IpAddr>, port: Option<u16>, end: (std::net::IpAddr, u16)| {
            ip == Some(end.0) && port.is_none_or(|p| p == end.1)
        };
        self.recent
            .iter()
            .filter(|a| {
                let (s, d) = ((a.src_ip, a.src_port), (a.dest_ip, a.dest_port));
                let named = (matches(s.0, s.1, lo) && matches(d.0, d.1, hi)) || (matches(s.0, s.1, hi) && matches(d.0, d.1, lo));
                named && a.first_seen_ns <= e.last_seen + CLOCK_SLACK_NS && a.last_seen_ns + CLOCK_SLACK_NS >= e.first_seen
            })
            .collect()
    }
}

/// Why the connection was reset, in plain words: the words of an alert about it, else what its
/// state says.
fn reset_cause(e: &FlowEntry, state: &str, history: &str, alerts: &AlertsAbout) -> Option<String> {
    if e.sides[0].rst + e.sides[1].rst == 0 {
        return None;
    }
    if let Some(words) = &alerts.words {
        return Some(words.clone());
    }
    let h = history.trim_start_matches('^');
    Some(
        match state {
            "REJ" if h.starts_with('H') => {
                "an unsolicited SYN/ACK answered with a RST: backscatter of a flood that spoofed the resetting host's address"
            }
            "REJ" => "the connection was refused: its SYN was answered with a RST (nothing listening, or a firewall rejecting)",
            "RSTOS0" => "the originator reset its own connection attempt before any answer",
            "RSTRH" => "the responder reset a connection whose opening the sensor never saw",
            "RSTO" if h.contains('F') => "the originator reset the connection after closing its side",
            "RSTO" | "OTH" if h.contains('R') => "the originator reset the connection",
            "RSTR" if h.contains('f') => "the responder reset the connection after closing its side",
            "RSTR" | "OTH" => "the responder reset the connection",
            _ => "a RST after both sides had closed (a stack discarding what the application left unread)",
        }
        .to_string(),
    )
}

/// The record of `e` (timestamps in wall-clock ns), leaving the table for `leaving`.
pub fn record(e: &FlowEntry, leaving: Leaving, iface: &str, about: &AlertsAbout) -> SessionRecord {
    let (orig, flipped) = zeek::originator(e);
    let resp = orig.other();
    let history = zeek::history(e, orig, flipped);
    let conn_state = zeek::conn_state(e, orig, &history);
    let (oh, op) = e.key.endpoint(orig);
    let (rh, rp) = e.key.endpoint(resp);
    let (o, r) = (&e.sides[orig.index()], &e.sides[resp.index()]);
    let micros = |ns: u64| (ns / 1000) as f64 / 1e6;
    SessionRecord {
        ts: micros(e.first_seen),
        uid: uid(e),
        orig_h: addr(oh, e.key.family).to_string(),
        orig_p: op,
        resp_h: addr(rh, e.key.family).to_string(),
        resp_p: rp,
        proto: "tcp".into(),
        duration: micros(e.last_seen.saturating_sub(e.first_seen)),
        orig_pkts: o.packets as u64,
        orig_ip_bytes: o.bytes,
        resp_pkts: r.packets as u64,
        resp_ip_bytes: r.bytes,
        reset_cause: reset_cause(e, conn_state, &history, about),
        conn_state: conn_state.into(),
        history,
        orig_flags: flag_counts(e, orig),
        resp_flags: flag_counts(e, resp),
        orig_ttl: o.first_ttl,
        resp_ttl: r.first_ttl,
        close: Close::of(e, orig, leaving).name().into(),
        alerts: about.ids.clone(),
        iface: iface.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::flags::PSH;
    use probe_common::flow::{Endpoints, FAMILY_V4, FlowKey, Segment, v4_bytes};

    fn http() -> FlowEntry {
        let c = Endpoints { src: v4_bytes([10, 0, 0, 2]), dst: v4_bytes([10, 0, 0, 1]), sport: 40000, dport: 80, family: FAMILY_V4 };
        let (key, client) = FlowKey::canonical(&c);
        let server = client.other();
        let mut e = FlowEntry::default();
        e.start(&key, client, 1_000_000_000);
        let script = [
            (client, SYN, 0),
            (server, SYN | ACK, 0),
            (client, ACK, 0),
            (client, ACK | PSH, 100),
            (server, ACK, 0),
            (server, ACK | PSH, 900),
            (server, ACK | PSH, 900),
            (client, FIN | ACK, 0),
            (server, FIN | ACK, 0),
            (client, ACK, 0),
        ];
        for (i, (side, f, len)) in script.into_iter().enumerate() {
            let ttl = if side == client { 64 } else { 57 };
            e.apply(
                side,
                &Segment { flags: f, ttl, payload_len: len, ip_len: 40 + len, now: 1_000_000_000 + i as u64 * 1000, ..Default::default() },
            );
        }
        e
    }

    #[test]
    fn a_record_speaks_zeek_and_counts_every_combination() {
        let r = record(&http(), Leaving::Idle, "eth0", &AlertsAbout::default());
        assert_eq!((r.orig_h.as_str(), r.orig_p, r.resp_h.as_str(), r.resp_p), ("10.0.0.2", 40000, "10.0.0.1", 80));
        assert_eq!((r.conn_state.as_str(), r.history.as_str(), r.close.as_str()), ("SF", "ShADadFf", "fin"));
        assert_eq!((r.orig_pkts, r.resp_pkts, r.orig_ttl, r.resp_ttl), (5, 5, 64, 57));
        assert_eq!(r.orig_flags, BTreeMap::from([("S".into(), 1), ("A|PA".into(), 3), ("FA".into(), 1)]));
        assert_eq!(r.resp_flags, BTreeMap::from([("SA".into(), 1), ("A|PA".into(), 3), ("FA".into(), 1)]));
        assert_eq!((r.ts, r.duration), (1.0, 0.000009));
        assert_eq!(r.reset_cause, None);
        assert!(r.uid.starts_with('C') && r.uid.len() == 12);
        assert_eq!(r.uid, record(&http(), Leaving::Shutdown, "eth0", &AlertsAbout::default()).uid);
    }
}
