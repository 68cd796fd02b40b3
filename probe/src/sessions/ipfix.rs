//! IPFIX export (RFC 7011 over UDP): each connection as two flow records, one per direction (the
//! form every collector reads; a direction with no packets is left out), with the standard
//! information elements (RFC 7012's registry): the 5-tuple, start and end in ms, packet and IP
//! byte counts, the union of the direction's TCP flags, the per-flag totals, and why it ended.

use std::{
    io,
    net::{SocketAddr, ToSocketAddrs, UdpSocket},
    time::{Duration, Instant},
};

use probe_common::flags::{ACK, PSH, URG};
use probe_common::flow::{FAMILY_V4, FlowEntry, Side};

use super::{Close, flag_classes};

const VERSION: u16 = 10;
const TEMPLATE_SET: u16 = 2;
pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;
/// Messages stay under a common path MTU, so no collector sees a fragmented datagram.
const MESSAGE_MAX: usize = 1400;
/// Over UDP a collector that started after us (or restarted) learns the templates only when
/// they are sent again (RFC 7011, 8.4): at least this often.
const TEMPLATE_REFRESH: Duration = Duration::from_secs(30);
const OBSERVATION_DOMAIN: u32 = 1;
/// The template set's length: a set header, and per template its header and four bytes a field.
const TEMPLATE_SET_LEN: usize = 4 + 2 * (4 + 4 * (2 + FIELDS.len()));

/// (information element, length) of every field after the two addresses, in record order.
const FIELDS: [(u16, u16); 15] = [
    (7, 2),   // sourceTransportPort
    (11, 2),  // destinationTransportPort
    (4, 1),   // protocolIdentifier
    (6, 2),   // tcpControlBits
    (152, 8), // flowStartMilliseconds
    (153, 8), // flowEndMilliseconds
    (2, 8),   // packetDeltaCount
    (1, 8),   // octetDeltaCount
    (218, 8), // tcpSynTotalCount
    (219, 8), // tcpFinTotalCount
    (220, 8), // tcpRstTotalCount
    (221, 8), // tcpPshTotalCount
    (222, 8), // tcpAckTotalCount
    (223, 8), // tcpUrgTotalCount
    (136, 1), // flowEndReason
];

fn address_fields(v6: bool) -> [(u16, u16); 2] {
    // sourceIPv4Address, destinationIPv4Address / sourceIPv6Address, destinationIPv6Address
    if v6 { [(27, 16), (28, 16)] } else { [(8, 4), (12, 4)] }
}

fn record_len(v6: bool) -> usize {
    address_fields(v6).iter().chain(FIELDS.iter()).map(|(_, l)| *l as usize).sum()
}

/// The template set announcing both templates.
pub fn template_set() -> Vec<u8> {
    let mut body = Vec::new();
    for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
        let fields: Vec<(u16, u16)> = address_fields(v6).into_iter().chain(FIELDS).collect();
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for (ie, len) in fields {
            body.extend_from_slice(&ie.to_be_bytes());
            body.extend_from_slice(&len.to_be_bytes());
        }
    }
    set(TEMPLATE_SET, &body)
}

fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// flowEndReason (RFC 7012): 1 idle timeout, 2 active timeout, 3 end of flow detected, 4 forced
/// end, 5 lack of resources.
fn end_reason(close: Close) -> u8 {
    match close {
        Close::Idle => 1,
        Close::Interval => 2,
        Close::Fin | Close::RstByOrig | Close::RstByResp => 3,
        Close::Shutdown => 4,
        Close::Evicted => 5,
    }
}

/// How many of `side`'s packets carried `flag`, from the table's classes ([`flag_classes`]): a
/// class whose combinations all carry the flag counts whole, one whose combinations all lack it
/// not at all. One that mixes them (the rest class often holds both `A` and `PA`) counts not at
/// all, so PSH and URG may be low; SYN, FIN, RST and (but for flagless oddities) ACK are exact.
pub fn flag_total(e: &FlowEntry, side: Side, flag: u8) -> u64 {
    flag_classes(e, side).iter().filter(|(_, combos)| !combos.is_empty() && combos.iter().all(|f| f & flag != 0)).map(|(n, _)| n).sum()
}

/// One direction's data record: what `side` sent to the other.
fn data_record(out: &mut Vec<u8>, e: &FlowEntry, side: Side, close: Close) {
    let (src, sport) = e.key.endpoint(side);
    let (dst, dport) = e.key.endpoint(side.other());
    let s = &e.sides[side.index()];
    if e.key.family == FAMILY_V4 {
        out.extend_from_slice(&src[..4]);
        out.extend_from_slice(&dst[..4]);
    } else {
        out.extend_from_slice(&src);
        out.extend_from_slice(&dst);
    }
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.push(6);
    let union = (0..=255u8).filter(|f| e.saw_combo(side, *f)).fold(0u8, |a, f| a | f);
    out.extend_from_slice(&(union as u16).to_be_bytes());
    out.extend_from_slice(&(e.first_seen / 1_000_000).to_be_bytes());
    out.extend_from_slice(&(e.last_seen / 1_000_000).to_be_bytes());
    out.extend_from_slice(&(s.packets as u64).to_be_bytes());
    out.extend_from_slice(&s.bytes.to_be_bytes());
    let syn = (s.syn + s.syn_ack) as u64;
    for n in [syn, s.fin as u64, s.rst as u64, flag_total(e, side, PSH), flag_total(e, side, ACK), flag_total(e, side, URG)] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.push(end_reason(close));
}

/// Data records sent and lost (a failed send loses its whole message).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub sent: u64,
    pub lost: u64,
}

/// Packs records into messages and sends them; never blocks the caller for long (a UDP send).
pub struct Exporter {
    socket: UdpSocket,
    /// Data records sent so far: the header's sequence number (RFC 7011, 3.1).
    sequence: u32,
    templates_sent: Option<Instant>,
    /// Pending data records by template.
    v4: Vec<u8>,
    v6: Vec<u8>,
    pending_records: u32,
}

impl Exporter {
    /// A socket towards `target` (`HOST:PORT`).
    pub fn connect(target: &str) -> io::Result<Self> {
        let to: SocketAddr = target
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("`{target}` names no address")))?;
        let local: SocketAddr = if to.is_ipv4() { "0.0.0.0:0".parse().expect("literal") } else { "[::]:0".parse().expect("literal") };
        let socket = UdpSocket::bind(local)?;
        socket.connect(to)?;
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        Ok(Exporter { socket, sequence: 0, templates_sent: None, v4: Vec::new(), v6: Vec::new(), pending_records: 0 })
    }

    /// Queue a connection's records (one per direction that sent packets); full messages go out.
    /// Returns the records sent and lost meanwhile.
    pub fn add(&mut self, e: &FlowEntry, orig: Side, close: Close) -> Outcome {
        let mut out = Outcome::default();
        let v6 = e.key.family != FAMILY_V4;
        for side in [orig, orig.other()] {
            if e.sides[side.index()].packets == 0 {
                continue;
            }
            if 16 + TEMPLATE_SET_LEN + 8 + self.v4.len() + self.v6.len() + record_len(v6) > MESSAGE_MAX {
                let o = self.flush();
                (out.sent, out.lost) = (out.sent + o.sent, out.lost + o.lost);
            }
            data_record(if v6 { &mut self.v6 } else { &mut self.v4 }, e, side, close);
            self.pending_records += 1;
        }
        out
    }

    /// Send what is pending.
    pub fn flush(&mut self) -> Outcome {
        if self.pending_records == 0 {
            return Outcome::default();
        }
        let mut body = Vec::with_capacity(MESSAGE_MAX);
        let refresh = self.templates_sent.is_none_or(|t| t.elapsed() >= TEMPLATE_REFRESH);
        if refresh {
            body.extend_from_slice(&template_set());
        }
        for (id, records) in [(TEMPLATE_V4, &self.v4), (TEMPLATE_V6, &self.v6)] {
            if !records.is_empty() {
                body.extend_from_slice(&set(id, records));
            }
        }
        let msg = message(&body, self.sequence, export_time());
        let n = self.pending_records;
        self.v4.clear();
        self.v6.clear();
        self.pending_records = 0;
        self.sequence = self.sequence.wrapping_add(n);
        match self.socket.send(&msg) {
            Ok(_) => {
                if refresh {
                    self.templates_sent = Some(Instant::now());
                }
                Outcome { sent: n as u64, lost: 0 }
            }
            Err(_) => Outcome { sent: 0, lost: n as u64 },
        }
    }
}

fn export_time() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

/// A message: the 16-byte header, then `sets`.
pub fn message(sets: &[u8], sequence: u32, export_time: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + sets.len());
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&((16 + sets.len()) as u16).to_be_bytes());
    out.extend_from_slice(&export_time.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&OBSERVATION_DOMAIN.to_be_bytes());
    out.extend_from_slice(sets);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::flags::SYN;
    use probe_common::flow::{Endpoints, FlowKey, Segment, v4_bytes};

    #[test]
    fn templates_and_records_have_the_lengths_they_announce() {
        let t = template_set();
        assert_eq!(u16::from_be_bytes([t[2], t[3]]) as usize, t.len());
        assert_eq!(t.len(), TEMPLATE_SET_LEN);
        assert_eq!(record_len(false) % 4, 0);
        assert_eq!(record_len(true) % 4, 0);
        let c = Endpoints { src: v4_bytes([10, 0, 0, 2]), dst: v4_bytes([10, 0, 0, 1]), sport: 40000, dport: 80, family: FAMILY_V4 };
        let (key, client) = FlowKey::canonical(&c);
        let mut e = FlowEntry::default();
        e.start(&key, client, 5_000_000);
        for (side, f, len) in
            [(client, SYN, 0), (client.other(), SYN | ACK, 0), (client, ACK, 0), (client, ACK | PSH, 10), (client, ACK | PSH, 10)]
        {
            e.apply(side, &Segment { flags: f, ttl: 64, payload_len: len, ip_len: 40 + len, now: 9_000_000, ..Default::default() });
        }
        let mut rec = Vec::new();
        data_record(&mut rec, &e, client, Close::Idle);
        assert_eq!(rec.len(), record_len(false));
        assert_eq!(&rec[..8], &[10, 0, 0, 2, 10, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([rec[13], rec[14]]), (SYN | ACK | PSH) as u16);
        assert_eq!(u64::from_be_bytes(rec[15..23].try_into().unwrap()), 5, "flowStartMilliseconds");
        assert_eq!(u64::from_be_bytes(rec[31..39].try_into().unwrap()), 4, "packets");
        // SYN 1, FIN 0, RST 0; PSH mixed with plain ACKs in one class: not counted; ACK 3.
        let totals: Vec<u64> = (0..6).map(|i| u64::from_be_bytes(rec[47 + 8 * i..55 + 8 * i].try_into().unwrap())).collect();
        assert_eq!(totals, [1, 0, 0, 0, 3, 0]);
        assert_eq!(rec[95], 1, "idle timeout");
        let m = message(&rec, 7, 1);
        assert_eq!((u16::from_be_bytes([m[0], m[1]]), u16::from_be_bytes([m[2], m[3]]) as usize), (10, m.len()));
    }
}
