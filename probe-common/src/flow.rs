//! One TCP connection as both sides see it: the canonical [`FlowKey`], the per-side counters
//! ([`SideStats`]) in a [`FlowEntry`], and the pure functions that update them for one packet.
//!
//! Both directions of a connection share one entry: the key orders the two endpoints, and each packet
//! updates the counters of the endpoint that sent it. The kernel program and offline replay call
//! [`notable_reasons`] and [`FlowEntry::apply`] — this file is the only place that says how a packet
//! changes a flow.

use crate::flags::{self, ACK, FIN, RST, SYN};

/// Address family tag in a [`FlowKey`]; `0` marks an empty flow-table slot.
pub const FAMILY_NONE: u8 = 0;
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// The endpoint that sent a packet: the lower or the higher of the key's two endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Side {
    Lo = 0,
    Hi = 1,
}

impl Side {
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn other(self) -> Side {
        match self {
            Side::Lo => Side::Hi,
            Side::Hi => Side::Lo,
        }
    }
    pub fn from_index(i: u8) -> Side {
        if i == 0 { Side::Lo } else { Side::Hi }
    }
}

/// A connection, direction-free. IPv4 addresses fill the first four bytes, the rest stays zero.
/// Ports are in host byte order. Aligned to 8 so [`FlowKey::same`] compares five words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub addr_lo: [u8; 16],
    pub addr_hi: [u8; 16],
    pub port_lo: u16,
    pub port_hi: u16,
    pub family: u8,
    /// Padding as a byte and a word, not `[u8; 3]`: zeroing that array is a `memset` call the
    /// eBPF target runs as a byte loop, on every packet's key.
    pub _pad: u8,
    pub _pad2: u16,
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// An address as two native-endian 64-bit words. `addr` must be 8-aligned, as the addresses of
/// [`Endpoints`], [`FlowKey`] and the aggregates' records are (checked in debug builds).
#[inline(always)]
pub fn addr_words(addr: &[u8; 16]) -> [u64; 2] {
    debug_assert!(addr.as_ptr().align_offset(8) == 0);
    // Two u64 reads, not one of [u64; 2]: that one is an i128 load, which the eBPF backend splits
    // into sixteen byte loads.
    let words = addr.as_ptr().cast::<u64>();
    // SAFETY: 16 readable bytes, 8-aligned at every call site (see above).
    unsafe { [core::ptr::read(words), core::ptr::read(words.add(1))] }
}

/// An address from the contract's 16-byte form (IPv4 in the first four bytes).
pub fn ip_addr(bytes: [u8; 16], family: u8) -> core::net::IpAddr {
    if family == FAMILY_V4 { core::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]) } else { core::net::IpAddr::from(bytes) }
}

/// An address in the contract's 16-byte form, and its family: the inverse of [`ip_addr`].
pub fn addr_bytes(ip: core::net::IpAddr) -> ([u8; 16], u8) {
    match ip {
        core::net::IpAddr::V4(a) => (v4_bytes(a.octets()), FAMILY_V4),
        core::net::IpAddr::V6(a) => (a.octets(), FAMILY_V6),
    }
}

/// An IPv4 address in the contract's 16-byte form (first four bytes, then zeros), built as two
/// words: a zeroed array plus a copy becomes a `memset` call that the eBPF target runs as a byte
/// loop, twelve iterations per address and packet.
#[inline(always)]
pub fn v4_bytes(a: [u8; 4]) -> [u8; 16] {
    // A native-endian word of exactly these bytes, so its memory holds them in this order.
    let words = [u64::from_ne_bytes([a[0], a[1], a[2], a[3], 0, 0, 0, 0]), 0u64];
    // SAFETY: two u64s and sixteen bytes have the same size, and every bit pattern is valid.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) }
}

/// A packet's endpoints as the parser saw them (source → destination). Aligned to 8 so the
/// addresses can be read as two 64-bit words ([`addr_words`]): the eBPF target assembles an
/// unaligned word from eight byte loads.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
}

impl FlowKey {
    /// The canonical key of `ep` and which side of it sent the packet. Both directions give the
    /// same key: the endpoint whose (address words, port) is lower is `Lo`. The words are compared
    /// in native byte order, not as numbers: any total order works, and this one needs no byte
    /// swaps. The key is assembled as the five words [`FlowKey::same`] and [`FlowKey::hash`]
    /// read: building it from the byte arrays cost the kernel ~70 instructions of stack copies.
    #[inline(always)]
    pub fn canonical(ep: &Endpoints) -> (FlowKey, Side) {
        let (s, d) = (addr_words(&ep.src), addr_words(&ep.dst));
        let src_is_lo = s[0] < d[0] || (s[0] == d[0] && (s[1] < d[1] || (s[1] == d[1] && ep.sport <= ep.dport)));
        let (lo, hi, port_lo, port_hi) = if src_is_lo { (s, d, ep.sport, ep.dport) } else { (d, s, ep.dport, ep.sport) };
        let [a, b] = port_lo.to_ne_bytes();
        let [c, e] = port_hi.to_ne_bytes();
        // port_lo, port_hi, family and zero padding, as they lie in memory.
        let tail = u64::from_ne_bytes([a, b, c, e, ep.family, 0, 0, 0]);
        (FlowKey::from_words([lo[0], lo[1], hi[0], hi[1], tail]), if src_is_lo { Side::Lo } else { Side::Hi })
    }

    #[inline(always)]
    fn from_words(words: [u64; 5]) -> FlowKey {
        // SAFETY: FlowKey is 40 bytes of plain integers (padding explicit), so any five words are
        // a valid value; align 8 matches.
        unsafe { core::mem::transmute::<[u64; 5], FlowKey>(words) }
    }

    /// Equality as five 64-bit compares: `==` on byte arrays may become a `bcmp` call, which the
    /// eBPF target cannot link.
    #[inline(always)]
    pub fn same(&self, other: &FlowKey) -> bool {
        let (a, b) = (self.words(), other.words());
        a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4]
    }

    #[inline(always)]
    fn words(&self) -> &[u64; 5] {
        // SAFETY: FlowKey is 40 bytes, align 8, all bytes initialised (explicit padding).
        unsafe { &*(self as *const FlowKey as *const [u64; 5]) }
    }

    /// The address and port of one side.
    pub fn endpoint(&self, side: Side) -> ([u8; 16], u16) {
        match side {
            Side::Lo => (self.addr_lo, self.port_lo),
            Side::Hi => (self.addr_hi, self.port_hi),
        }
    }

    /// The key's slot in CPU `cpu`'s partition of the flow table, whose partitions hold
    /// `slot_mask + 1` slots each (a power of two): `cpu * slots_per_cpu + hash % slots_per_cpu`.
    /// The kernel program writes by it and the agent reads by it.
    #[inline(always)]
    pub fn slot(&self, cpu: u32, slot_mask: u32) -> u32 {
        cpu.wrapping_mul(slot_mask.wrapping_add(1)).wrapping_add(self.hash() as u32 & slot_mask)
    }

    /// A mix of the key for the flow table's slot index. The addresses' second words (zero for
    /// IPv4) and the ports are folded in with a multiply, the first words with a half rotation
    /// that keeps the two IPv4 addresses apart; a final multiply by a 64-bit odd constant
    /// (Fibonacci hashing) carries every bit into the high half, which is the part returned.
    /// Unkeyed, like the rest of the table: a collision costs one flow its slot, and admission
    /// (not the hash) is what a flood meets.
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        let w = self.words();
        let x = w[0] ^ w[2].rotate_left(32) ^ (w[1] ^ w[3].rotate_left(32) ^ w[4]).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        (x ^ (x >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
    }
}

/// What one endpoint of a flow sent. Counts are per packet; `combos` is a 256-bit set of the exact
/// flags bytes seen (bit `f` of word `f / 64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideStats {
    /// IP-layer bytes (IPv4 total length, IPv6 payload length + 40).
    pub bytes: u64,
    /// When this side's last RST was seen (the producer's clock, see [`Segment::now`]), 0 if none.
    pub last_rst_at: u64,
    pub combos: [u64; 4],
    pub packets: u32,
    /// SYN without ACK.
    pub syn: u32,
    pub syn_ack: u32,
    /// ACK alone (PSH/ECN bits allowed), no payload.
    pub pure_ack: u32,
    /// Segments carrying payload, RSTs excepted.
    pub data: u32,
    pub fin: u32,
    /// Every RST, with or without ACK.
    pub rst: u32,
    /// RST with ACK (a subset of `rst`).
    pub rst_ack: u32,
    /// RST carrying payload (a subset of `rst`).
    pub rst_payload: u32,
    pub invalid: u32,
    /// Payload segments sent after this side's own RST (a forged-RST sign).
    pub data_after_rst: u32,
    /// Sequence number of this side's first SYN or SYN/ACK.
    pub syn_seq: u32,
    pub last_rst_seq: u32,
    pub last_rst_ack: u32,
    /// TTL / hop limit of this side's first packet.
    pub first_ttl: u8,
    pub last_rst_ttl: u8,
    /// The IPv4 identification of this side's last packet (0 for IPv6).
    pub last_ip_id: u16,
    /// The acknowledgment number of this side's last segment with ACK (RSTs excepted): a real
    /// stack's RST answering that segment carries it as its sequence number.
    pub last_ack: u32,
}
const _: () = assert!(core::mem::size_of::<SideStats>() == 112);

/// One flow-table slot. `key.family == FAMILY_NONE` means empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    pub key: FlowKey,
    /// When the first and the last packet were seen, in the producer's clock ([`Segment::now`]):
    /// jiffies in the kernel's table (one inlined load per packet), ns everywhere else — the agent
    /// converts when it reads the table.
    pub first_seen: u64,
    pub last_seen: u64,
    pub sides: [SideStats; 2],
    /// The [`Side`] index that sent the first packet seen.
    pub initiator: u8,
    /// Bit 0: seen on ingress; bit 1: seen on egress.
    pub hooks_seen: u8,
    /// 1 once the flow has shown it is a connection (see [`FlowEntry::proven`]).
    pub proven: u8,
    /// Per side: how many packets in a row (up to 255) each carried an IP-ID a small step after
    /// the one before ([`IP_ID_STEP_MAX`]): the side's stack numbers its packets in sequence, so
    /// a packet that breaks the sequence came from another stack.
    pub ip_id_runs: [u8; 2],
    /// How many letters [`FlowEntry::letters`] holds (at most [`LETTERS_MAX`]).
    pub letter_count: u8,
    /// Bit `code` set once letter `code` is in [`FlowEntry::letters`] (see [`letter_code`]).
    pub letters_seen: u16,
    /// The flow's history in the order it happened: each side's first SYN, SYN/ACK, pure ACK,
    /// payload, FIN and RST, one 4-bit [`letter_code`] each, the first in the low nibble. Counts
    /// cannot say whether the client's FIN came before the server's or data before the first pure
    /// ACK; session records (Zeek's `history`) need exactly that. Written only when a side sends a
    /// class of segment for the first time, at most twelve times per flow.
    pub letters: u64,
}
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 296 && core::mem::align_of::<FlowEntry>() == 8);
const ENTRY_WORDS: usize = core::mem::size_of::<FlowEntry>() / 8;

/// History letter classes, in Zeek's `history` vocabulary: `S` SYN, `H` SYN/ACK, `A` pure ACK,
/// `D` payload, `F` FIN, `R` RST (upper case for the originator, lower for the responder).
pub const LETTER_CLASSES: [char; 6] = ['S', 'H', 'A', 'D', 'F', 'R'];
/// The most letters a flow keeps: each class once per side.
pub const LETTERS_MAX: u8 = 12;
/// The [`LETTER_CLASSES`] indices. A letter is logged when the side's counter of its kind goes
/// from 0 ([`FlowEntry::apply`]): `S` SYN, `H` SYN/ACK, `A` pure ACK, `D` payload (not on a FIN),
/// `F` FIN (not with SYN: Zeek's `Q`), `R` RST whatever it carries.
pub const LETTER_S: u8 = 0;
pub const LETTER_H: u8 = 1;
pub const LETTER_A: u8 = 2;
pub const LETTER_D: u8 = 3;
pub const LETTER_F: u8 = 4;
pub const LETTER_R: u8 = 5;
/// No letter for this packet.
const NO_LETTER: u8 = 6;

/// The 4-bit code of letter `class` sent by `side`: 1..=12, so a zero nibble ends the log.
#[inline(always)]
pub fn letter_code(class: u8, side: Side) -> u8 {
    1 + class + 6 * side as u8
}

/// The letters of `entry` in order, as (side, class) pairs.
pub fn letters(entry: &FlowEntry) -> impl Iterator<Item = (Side, u8)> + '_ {
    (0..entry.letter_count.min(LETTERS_MAX)).map(move |i| {
        let code = ((entry.letters >> (4 * i)) & 0xf) as u8 - 1;
        (Side::from_index(code / 6), code % 6)
    })
}

/// Whether a packet that would start a new flow is shaped like flood traffic: an inbound SYN,
/// SYN/ACK or RST. Such a packet takes a free (or idle) slot, never one another flow holds; it is
/// counted in the aggregates either way. Its inbound SYNs are the [`budgeted_syn`]s.
#[inline(always)]
pub fn flood_shaped(seg: &Segment) -> bool {
    let f = seg.flags;
    budgeted_syn(seg) || (seg.hook == crate::hook::HOOK_INGRESS as u8 && (f & (SYN | ACK) == SYN | ACK || f & RST != 0))
}

/// Whether a packet of a flow that `entry`'s slot does not hold may take that slot: a free or idle
/// one, or, unless this packet is flood-shaped, one whose flow [`yields_to_connection`]. So a
/// spoofed flood fills only free slots and a real connection's next packet wins one back. The
/// kernel's table and replay's decide with this one rule; `idle` is in `seg.now`'s clock.
#[inline(always)]
pub fn may_take_slot(entry: &FlowEntry, seg: &Segment, idle: u64) -> bool {
    // Worked out only here: an established packet, the common case, never gets this far.
    let free = entry.key.family == FAMILY_NONE || seg.now.saturating_sub(entry.last_seen) > idle;
    free || (!flood_shaped(seg) && yields_to_connection(entry, seg.now, idle))
}

/// Whether the flow in a slot gives way to a new connection's packet at `now`: it never proved to
/// be a connection, or it is over — a RST, or a FIN from each side — and has been quiet for
/// [`linger`]. A gateway opens thousands of short connections a second, and a closed one held its
/// slot for the whole idle time (two minutes by default), so a busy gateway's table filled with
/// the dead and new connections went untracked. The linger keeps a closed flow long enough for its
/// last retransmissions and for a forged segment racing them, which the detectors judge against
/// the flow's history.
#[inline(always)]
pub fn yields_to_connection(entry: &FlowEntry, now: u64, idle: u64) -> bool {
    let (a, b) = (&entry.sides[0], &entry.sides[1]);
    let over = a.rst + b.rst > 0 || (a.fin > 0 && b.fin > 0);
    entry.proven == 0 || (over && now.saturating_sub(entry.last_seen) > linger(idle))
}

/// Whether `seg` opens a new connection on the endpoints of `entry`, the flow its slot holds: a
/// SYN (no ACK) after either side sent a FIN or a RST. A client that reuses its port (a retry
/// after a refusal, a port reused from TIME_WAIT) makes a second connection, as every TCP stack
/// and Zeek count it; one entry for both would mix their counts and their ends. The SYN is judged
/// against the old flow (it is [`NOTABLE_NEW_CONNECTION`], and its event carries that flow whole,
/// so nothing of it is lost to userspace); then the slot starts afresh with it. Only a SYN can
/// say so, and a SYN never takes the per-packet fast path, so established packets pay nothing.
#[inline(always)]
pub fn starts_anew(entry: &FlowEntry, seg: &Segment) -> bool {
    let (a, b) = (&entry.sides[0], &entry.sides[1]);
    seg.flags & (SYN | ACK | RST | FIN) == SYN && a.rst + b.rst + a.fin + b.fin > 0
}

/// How long a closed flow keeps its slot: a sixty-fourth of the idle time (about 2 s of the
/// default 120 s), in the same clock.
#[inline(always)]
pub fn linger(idle: u64) -> u64 {
    idle >> 6
}

/// Whether `seg` is an inbound SYN (no ACK, no RST), the packet the per-hook SYN budget
/// (`HookCounters::take_syn_budget`, in `counters`) rations before it may touch the flow table.
#[inline(always)]
pub fn budgeted_syn(seg: &Segment) -> bool {
    seg.hook == crate::hook::HOOK_INGRESS as u8 && seg.flags & (SYN | ACK | RST) == SYN
}

/// The largest step between the IP-IDs of a side's consecutive packets that continues its
/// sequence: a stack that numbers per connection steps by 1, one that numbers per host by the
/// packets it sent elsewhere in between.
pub const IP_ID_STEP_MAX: u16 = 64;

/// What the parser learned of one TCP segment, all that a flow update needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub flags: u8,
    pub ttl: u8,
    /// IPv4 identification; 0 for IPv6 (and for the IPv4 packets that carry none).
    pub ip_id: u16,
    /// 0 = ingress, 1 = egress (see [`crate::hook::HOOK_INGRESS`]).
    pub hook: u8,
    pub seq: u32,
    pub ack: u32,
    pub payload_len: u32,
    pub ip_len: u32,
    /// When the segment was seen, in the producer's clock: jiffies in the kernel, ns in userspace.
    pub now: u64,
}

impl Segment {
    /// An ACK without SYN, FIN, RST or URG (PSH and ECN bits allowed): the bulk of every
    /// connection. Such a segment is never invalid, never flood-shaped and never a drop candidate;
    /// the per-packet functions test for it first, so the common case skips their flag cases.
    #[inline(always)]
    pub fn is_ordinary(&self) -> bool {
        self.flags & (SYN | FIN | RST | ACK | flags::URG) == ACK
    }
}

/// Reasons a segment goes to userspace through the ring buffer (bits of [`notable_reasons`]).
pub const NOTABLE_RST: u8 = 1 << 0;
pub const NOTABLE_RST_PAYLOAD: u8 = 1 << 1;
/// A SYN/ACK on a flow where the other side never sent a SYN: backscatter or a forged handshake.
pub const NOTABLE_UNSOLICITED_SYN_ACK: u8 = 1 << 2;
pub const NOTABLE_INVALID: u8 = 1 << 3;
/// Any non-RST segment from a side that already sent a RST: the real host still talking after
/// "its" reset is a sign the reset was forged.
pub const NOTABLE_AFTER_RST: u8 = 1 << 4;
/// A TTL / hop limit other than the one this side's first packet had: another sender on the path.
pub const NOTABLE_TTL_CHANGE: u8 = 1 << 5;
/// A SYN that opens a new connection on a closed flow's endpoints ([`starts_anew`]): its event
/// carries the old connection's last state, which the table forgets as it starts the new one.
pub const NOTABLE_NEW_CONNECTION: u8 = 1 << 6;

/// Why `seg`, sent by `side`, deserves a closer look in userspace; 0 for an ordinary segment.
/// Reads the flow as it was *before* the segment, so userspace gets the same view from an event.
/// `None` is a flow the table could not track: judged as if it had no history.
#[inline(always)]
pub fn notable_reasons(entry: Option<&FlowEntry>, side: Side, seg: &Segment) -> u8 {
    let f = seg.flags;
    let mut why = 0;
    if let Some(e) = entry {
        let own = &e.sides[side.index()];
        if own.packets > 0 && seg.ttl != own.first_ttl {
            why |= NOTABLE_TTL_CHANGE;
        }
        if f & RST == 0 && own.rst > 0 {
            why |= NOTABLE_AFTER_RST;
        }
    }
    // The rest is about the flags alone, and an ordinary segment has none of them.
    if seg.is_ordinary() {
        return why;
    }
    if f & RST != 0 {
        why |= NOTABLE_RST;
        if seg.payload_len > 0 {
            why |= NOTABLE_RST_PAYLOAD;
        }
    }
    if entry.is_some_and(|e| starts_anew(e, seg)) {
        why |= NOTABLE_NEW_CONNECTION;
    }
    let peer_syns = entry.map_or(0, |e| e.sides[side.other().index()].syn);
    if f & (SYN | ACK | RST | FIN) == SYN | ACK && peer_syns == 0 {
        why |= NOTABLE_UNSOLICITED_SYN_ACK;
    }
    if flags::is_invalid(f) {
        why |= NOTABLE_INVALID;
    }
    why
}

impl SideStats {
    /// Whether this side sent a SYN and no ACK or data since: its next ordinary segment may
    /// complete a handshake, which the flood aggregates count.
    #[inline(always)]
    pub fn awaits_handshake_ack(&self) -> bool {
        self.syn > 0 && self.pure_ack + self.data == 0
    }
}

impl FlowEntry {
    /// Whether this slot holds the flow `key` (an empty slot holds none).
    #[inline(always)]
    pub fn holds(&self, key: &FlowKey) -> bool {
        self.key.family != FAMILY_NONE && self.key.same(key)
    }

    /// Start a fresh entry for `key` whose first packet comes from `side`.
    #[inline(always)]
    pub fn start(&mut self, key: &FlowKey, side: Side, now: u64) {
        self.clear();
        // Word by word, like `copy_from`: an assignment may become a `memcpy` call, which the
        // eBPF target runs as a byte loop (320 instructions per new flow).
        let to = (&mut self.key as *mut FlowKey).cast::<u64>();
        for (i, word) in key.words().iter().enumerate() {
            // SAFETY: FlowKey is five u64s long and 8-aligned.
            unsafe { core::ptr::write_volatile(to.add(i), *word) };
        }
        self.first_seen = now;
        self.initiator = side as u8;
    }

    /// Zero every byte, one 64-bit word at a time. A struct literal or `write_bytes` here becomes a
    /// `memset` that the eBPF target lowers to a byte loop the verifier cannot finish; volatile
    /// word stores stay 36 plain stores.
    #[inline(always)]
    pub fn clear(&mut self) {
        let words = (self as *mut FlowEntry).cast::<u64>();
        for i in 0..ENTRY_WORDS {
            // SAFETY: FlowEntry is ENTRY_WORDS u64s long and 8-aligned; all-zero is a valid value.
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
        }
    }

    /// Copy `other` into `self` word by word (see [`FlowEntry::clear`] for why not `*self = *other`).
    #[inline(always)]
    pub fn copy_from(&mut self, other: &FlowEntry) {
        let to = (self as *mut FlowEntry).cast::<u64>();
        let from = (other as *const FlowEntry).cast::<u64>();
        for i in 0..ENTRY_WORDS {
            // SAFETY: both are ENTRY_WORDS u64s long and 8-aligned.
            unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i))) };
        }
    }

    /// Whether the flow has shown it is a connection: our host opened it (its first packet left on
    /// egress), or its initiator sent a follow-up (no SYN, no RST) after the other side answered.
    /// A spoofed flood's packets never do, so flows that are not proven may give their slot to a
    /// new flow that is not flood-shaped, while proven ones keep it until they go idle.
    pub fn proven(&self) -> bool {
        self.proven != 0
    }

    /// Count `seg`, sent by `side`, into this flow.
    #[inline(always)]
    pub fn apply(&mut self, side: Side, seg: &Segment) {
        self.last_seen = seg.now;
        self.hooks_seen |= 1 << (seg.hook & 1);
        let f = seg.flags;
        if self.proven == 0 && side as u8 == self.initiator {
            let opened_by_us = seg.hook == crate::hook::HOOK_EGRESS as u8 && self.sides[side.index()].packets == 0;
            let follow_up = f & (SYN | RST) == 0 && self.sides[side.other().index()].packets > 0;
            if opened_by_us || follow_up {
                self.proven = 1;
            }
        }
        // The history letter this packet adds, if it is the side's first of its kind: read off the
        // counter it increments anyway (0 before it), so an established packet pays one compare
        // of a value already loaded.
        let mut letter = NO_LETTER;
        let s = &mut self.sides[side.index()];
        if s.packets == 0 {
            s.first_ttl = seg.ttl;
        }
        // A step of 1..=IP_ID_STEP_MAX continues the run; 0 (a stack that sends every packet with
        // IP-ID 0, and IPv6, which has none) breaks it, as any other step does. One subtraction
        // and one compare: every packet pays for this.
        let step = seg.ip_id.wrapping_sub(s.last_ip_id).wrapping_sub(1);
        let run = &mut self.ip_id_runs[side.index()];
        *run = if step < IP_ID_STEP_MAX { run.saturating_add(1) } else { 0 };
        s.last_ip_id = seg.ip_id;
        s.packets = s.packets.wrapping_add(1);
        s.bytes = s.bytes.wrapping_add(seg.ip_len as u64);
        s.combos[(f >> 6) as usize & 3] |= 1u64 << (f & 63);
        let ordinary = seg.is_ordinary();
        if !ordinary {
            if flags::is_invalid(f) {
                s.invalid += 1;
            }
            if f & RST != 0 {
                let first = s.rst == 0;
                s.rst += 1;
                if f & ACK != 0 {
                    s.rst_ack += 1;
                }
                if seg.payload_len > 0 {
                    s.rst_payload += 1;
                }
                s.last_rst_at = seg.now;
                s.last_rst_seq = seg.seq;
                s.last_rst_ack = seg.ack;
                s.last_rst_ttl = seg.ttl;
                if first {
                    self.log_letter(letter_code(LETTER_R, side));
                }
                return;
            }
            if f & SYN != 0 && f & FIN == 0 {
                if f & ACK != 0 {
                    if s.syn_ack == 0 {
                        letter = LETTER_H;
                    }
                    s.syn_ack += 1;
                } else {
                    if s.syn == 0 {
                        letter = LETTER_S;
                    }
                    s.syn += 1;
                }
                if s.syn + s.syn_ack == 1 {
                    s.syn_seq = seg.seq;
                }
            }
            if f & FIN != 0 {
                // SYN with FIN is Zeek's `Q`, which is not kept.
                if s.fin == 0 && f & SYN == 0 {
                    letter = LETTER_F;
                }
                s.fin += 1;
            }
        }
        if f & ACK != 0 {
            s.last_ack = seg.ack;
        }
        if seg.payload_len > 0 {
            // A FIN (or SYN) carrying data is `F` (`S`) only, as Zeek writes it.
            if s.data == 0 && letter == NO_LETTER && f & FIN == 0 {
                letter = LETTER_D;
            }
            s.data += 1;
            if s.rst > 0 {
                s.data_after_rst += 1;
            }
        } else if ordinary {
            if s.pure_ack == 0 {
                letter = LETTER_A;
            }
            s.pure_ack += 1;
        }
        if letter != NO_LETTER {
            self.log_letter(letter_code(letter, side));
        }
    }

    /// Append letter `code` to the history log (each code comes at most once, so twelve fit).
    #[inline(always)]
    pub fn log_letter(&mut self, code: u8) {
        self.letters_seen |= 1 << code;
        if self.letter_count < LETTERS_MAX {
            self.letters |= (code as u64 & 0xf) << (4 * self.letter_count as u64);
            self.letter_count += 1;
        }
    }

    /// True when bit `flags` is set in `side`'s combination set.
    pub fn saw_combo(&self, side: Side, flags: u8) -> bool {
        self.sides[side.index()].combos[(flags >> 6) as usize] & (1u64 << (flags & 63)) != 0
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers and arrays with explicit padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::v4_bytes as v4;

    fn ep(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Endpoints {
        Endpoints { src: v4(src), dst: v4(dst), sport, dport, family: FAMILY_V4 }
    }

    #[test]
    fn a_side_numbering_its_packets_in_sequence_forms_a_run() {
        let (key, side) = FlowKey::canonical(&ep([10, 0, 0, 2], 40000, [10, 0, 0, 1], 80));
        let mut e = FlowEntry::default();
        e.start(&key, side, 1);
        let run = |e: &mut FlowEntry, id: u16| {
            e.apply(side, &Segment { flags: ACK, ttl: 64, ip_id: id, now: 2, ..Default::default() });
            e.ip_id_runs[side.index()]
        };
        assert_eq!([0x1000, 0x1001, 0x1003, 0x1040].map(|id| run(&mut e, id)), [0, 1, 2, 3], "steps of 1, 2 and 61");
        assert_eq!(run(&mut e, 0x1040 + IP_ID_STEP_MAX + 1), 0, "too far");
        assert_eq!(run(&mut e, 0x1040 + IP_ID_STEP_MAX + 2), 1);
        assert_eq!(run(&mut e, 0), 0, "no number");
        assert_eq!(run(&mut e, 0), 0, "still none");
        assert_eq!(e.sides[side.index()].last_ip_id, 0);
        assert_eq!(e.ip_id_runs[side.other().index()], 0);
    }

    #[test]
    fn both_directions_share_one_key() {
        let a = ep([10, 0, 0, 2], 40000, [10, 0, 0, 1], 80);
        let b = ep([10, 0, 0, 1], 80, [10, 0, 0, 2], 40000);
        let (ka, sa) = FlowKey::canonical(&a);
        let (kb, sb) = FlowKey::canonical(&b);
        assert_eq!(ka, kb);
        assert_eq!(ka.hash(), kb.hash());
        assert_ne!(sa, sb);
        assert_eq!(ka.addr_lo, v4([10, 0, 0, 1]));
        assert_eq!(ka.port_lo, 80);
        assert_eq!(sb, Side::Lo);
    }

    #[test]
    fn same_address_orders_by_port() {
        let (k, s) = FlowKey::canonical(&ep([127, 0, 0, 1], 9000, [127, 0, 0, 1], 80));
        assert_eq!((k.port_lo, k.port_hi, s), (80, 9000, Side::Hi));
    }

    #[test]
    fn ipv6_orders_by_whole_address() {
        let mut lo = [0u8; 16];
        lo[15] = 1;
        let mut hi = [0u8; 16];
        hi[0] = 0xfd;
        let e = Endpoints { src: hi, dst: lo, sport: 1, dport: 2, family: FAMILY_V6 };
        let (k, s) = FlowKey::canonical(&e);
        assert_eq!((k.addr_lo, s), (lo, Side::Hi));
    }

    fn seg(flags: u8, payload_len: u32, seq: u32, ttl: u8) -> Segment {
        Segment { flags, ttl, ip_id: 0, hook: 0, seq, ack: 0, payload_len, ip_len: 40 + payload_len, now: 1 }
    }

    #[test]
    fn handshake_data_close_counts_each_class() {
        let mut e = FlowEntry::default();
        let (c, s) = (Side::Lo, Side::Hi);
        e.start(&FlowKey::default(), c, 1);
        for (side, f, len) in [(c, SYN, 0), (s, SYN | ACK, 0), (c, ACK, 0), (c, ACK | flags::PSH, 10), (s, ACK | FIN, 0), (c, RST | ACK, 0)]
        {
            assert_eq!(notable_reasons(Some(&e), side, &seg(f, len, 7, 64)) & NOTABLE_UNSOLICITED_SYN_ACK, 0);
            e.apply(side, &seg(f, len, 7, 64));
        }
        let cs = &e.sides[0];
        assert_eq!((cs.packets, cs.syn, cs.pure_ack, cs.data, cs.rst, cs.rst_ack), (4, 1, 1, 1, 1, 1));
        assert_eq!((e.sides[1].syn_ack, e.sides[1].fin), (1, 1));
        assert!(e.saw_combo(c, SYN) && e.saw_combo(s, SYN | ACK) && !e.saw_combo(s, SYN));
        assert_eq!(cs.bytes, 4 * 40 + 10);
    }

    #[test]
    fn unsolicited_syn_ack_and_rst_payload_are_notable() {
        let mut e = FlowEntry::default();
        e.start(&FlowKey::default(), Side::Hi, 1);
        let synack = seg(SYN | ACK, 0, 5, 50);
        assert_eq!(notable_reasons(Some(&e), Side::Hi, &synack), NOTABLE_UNSOLICITED_SYN_ACK);
        e.apply(Side::Hi, &synack);
        let rst = seg(RST | ACK, 23, 0, 128);
        assert_eq!(notable_reasons(Some(&e), Side::Hi, &rst), NOTABLE_RST | NOTABLE_RST_PAYLOAD | NOTABLE_TTL_CHANGE);
        e.apply(Side::Hi, &rst);
        let data = seg(ACK, 5, 9, 50);
        assert_eq!(notable_reasons(Some(&e), Side::Hi, &data), NOTABLE_AFTER_RST);
        e.apply(Side::Hi, &data);
        let h = &e.sides[1];
        assert_eq!((h.first_ttl, h.last_rst_ttl, h.rst_payload, h.data_after_rst), (50, 128, 1, 1));
    }

    #[test]
    fn ordinary_segments_have_no_flag_cases() {
        let mut seen = 0;
        for f in 0..=255u8 {
            let s = seg(f, 0, 0, 64);
            if s.is_ordinary() {
                seen += 1;
                assert!(!flags::is_invalid(f) && !flood_shaped(&s), "{f:#04x}");
                assert_eq!(crate::action::drop_candidate(0xff, &s), 0, "{f:#04x}");
            }
        }
        // ACK with any of PSH, ECE and CWR.
        assert_eq!(seen, 8);
    }

    #[test]
    fn invalid_combos_are_counted_and_notable() {
        let mut e = FlowEntry::default();
        for f in [0x00, 0x03, 0x29, 0xff] {
            assert_ne!(notable_reasons(Some(&e), Side::Lo, &seg(f, 0, 0, 64)) & NOTABLE_INVALID, 0);
            e.apply(Side::Lo, &seg(f, 0, 0, 64));
        }
        assert_eq!(e.sides[0].invalid, 4);
    }
}
