//! Per-hook counters: the exact flags histogram, packets by protocol, parse errors by reason, and the
//! program's own health (flow-table insert failures, ring-buffer events and drops). One value per
//! hook in a per-CPU array, so a packet costs one inlined per-CPU lookup and no atomics.

use crate::action::DROP_REASONS;
pub use crate::hook::{HOOK_EGRESS, HOOK_INGRESS, HOOK_NAMES, HOOKS};

/// Which way a hook's packets went: towards a home address, or from one.
pub const DIRECTION_NAMES: [&str; HOOKS as usize] = ["in", "out"];

/// Protocol slots of [`HookCounters::protocols`].
pub const PROTO_TCP: usize = 0;
pub const PROTO_UDP: usize = 1;
pub const PROTO_ICMP: usize = 2;
pub const PROTO_ICMPV6: usize = 3;
/// Any other IP protocol.
pub const PROTO_OTHER_IP: usize = 4;
/// ARP, LLDP and everything else that is not IPv4 or IPv6.
pub const PROTO_NON_IP: usize = 5;
pub const PROTOS: usize = 6;
pub const PROTO_NAMES: [&str; PROTOS] = ["tcp", "udp", "icmp", "icmpv6", "other_ip", "non_ip"];

/// Why a packet could not be parsed down to its TCP header (slots of [`HookCounters::parse_errors`]).
/// Every such packet is passed unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ParseError {
    TruncatedEthernet = 0,
    TruncatedVlan,
    /// More than two VLAN tags.
    TooManyVlans,
    TruncatedIpv4,
    /// IHL below 5, a version that does not match the EtherType, or a total length below the header.
    BadIpv4Header,
    TruncatedIpv6,
    TruncatedIpv6Extension,
    /// More than six IPv6 extension headers before the upper layer.
    TooManyIpv6Extensions,
    /// A non-first fragment: the TCP header is in another packet.
    Fragment,
    TruncatedTcp,
    /// TCP data offset below 5 or past the end of the IP packet. Its flags byte is still counted
    /// in the histogram (a reader such as tshark counts it too): the header's first 14 bytes are there.
    BadTcpOffset,
    /// Encapsulations met and left closed: Geneve (UDP 6081), Teredo (UDP 3544), GRE that is not
    /// plain version 0 with IP or Ethernet inside (PPTP's enhanced GRE, routing, ERSPAN, ...), and
    /// more tunnels nested than `parse::MAX_ENCAPSULATIONS`.
    EncapsulatedGeneve,
    EncapsulatedTeredo,
    EncapsulatedGreOther,
    TooDeep,
}

pub const PARSE_ERRORS: usize = 15;

impl ParseError {
    /// The reason at `index` (a slot of [`HookCounters::parse_errors`]); past the last, the last.
    /// A `match`, not a table: LLVM folds it to a comparison the verifier bounds the slot by (a
    /// table in `.rodata` gives it a byte of any value, and older kernels refuse the counter index).
    #[inline(always)]
    pub fn from_index(index: u8) -> ParseError {
        use ParseError::*;
        match index {
            0 => TruncatedEthernet,
            1 => TruncatedVlan,
            2 => TooManyVlans,
            3 => TruncatedIpv4,
            4 => BadIpv4Header,
            5 => TruncatedIpv6,
            6 => TruncatedIpv6Extension,
            7 => TooManyIpv6Extensions,
            8 => Fragment,
            9 => TruncatedTcp,
            10 => BadTcpOffset,
            11 => EncapsulatedGeneve,
            12 => EncapsulatedTeredo,
            13 => EncapsulatedGreOther,
            _ => TooDeep,
        }
    }
}

pub const PARSE_ERROR_NAMES: [&str; PARSE_ERRORS] = [
    "truncated_ethernet",
    "truncated_vlan",
    "too_many_vlans",
    "truncated_ipv4",
    "bad_ipv4_header",
    "truncated_ipv6",
    "truncated_ipv6_extension",
    "too_many_ipv6_extensions",
    "fragment",
    "truncated_tcp",
    "bad_tcp_offset",
    "encapsulated_geneve",
    "encapsulated_teredo",
    "encapsulated_gre_other",
    "too_deep",
];

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookCounters {
    /// TCP packets by their exact flags byte.
    pub flags: [u64; 256],
    pub protocols: [u64; PROTOS],
    pub parse_errors: [u64; PARSE_ERRORS],
    /// New flows written into an empty slot or one whose flow had gone idle.
    pub flow_inserts: u64,
    /// Packets whose (new) flow could not be tracked because its slot holds another live flow — the
    /// table's "map full"; every packet of such a flow counts.
    pub flow_insert_failures: u64,
    /// Events written to the ring buffer.
    pub events: u64,
    /// Events the per-CPU rate limit held back.
    pub events_suppressed: u64,
    /// Events lost because the ring buffer was full (userspace too slow).
    pub events_ringbuf_full: u64,
    /// Rate limiter state: tokens left and when they were last refilled (monotonic ns).
    pub rate_tokens: u64,
    pub rate_refill_ns: u64,
    /// Set by the agent before attaching, never summed: a slot whose flow has been quiet this many
    /// jiffies may be taken by a new flow (the agent knows HZ; the program does not).
    pub flow_idle_ticks: u64,
    /// Packets dropped on the operator's request, by reason (`action::DROP_REASON_NAMES`).
    pub dropped: [u64; DROP_REASONS],
    /// What `--drop-dry-run` would have dropped, by reason.
    pub would_drop: [u64; DROP_REASONS],
    /// Sensor mode: notable frames handed to the AF_XDP socket whole.
    pub frames_to_socket: u64,
    /// Sensor mode: notable frames the AF_XDP redirect refused (no socket on that queue).
    pub frames_to_socket_failed: u64,
    /// Inbound SYNs over this CPU's per-second tracking budget ([`HookCounters::take_syn_budget`]):
    /// counted in the histogram and the flood aggregates, never looked up in the flow table.
    pub syns_untracked: u64,
    /// Set by the agent before attaching, never summed: one second in jiffies (HZ), the SYN
    /// budget's window; 0 (no agent set it) means [`DEFAULT_SYN_WINDOW_TICKS`].
    pub syn_window_ticks: u64,
    /// The SYN budget's state, never summed: when the current window began (jiffies) and how many
    /// inbound SYNs it has tracked.
    pub syn_window_start: u64,
    pub syn_window_used: u64,
    /// Never summed, never read by the agent: the kernel program passes a value through it so
    /// that the verifier forgets what it knew of the value (see probe-ebpf's `opaque`).
    pub verifier_scratch: u64,
}
const _: () = assert!(core::mem::size_of::<HookCounters>() == (256 + PROTOS + PARSE_ERRORS + 8 + 2 * DROP_REASONS + 7) * 8);

/// The SYN budget's window when no agent set one (a test tool loading the bare object): one second
/// at HZ=250, the common setting.
pub const DEFAULT_SYN_WINDOW_TICKS: u64 = 250;

impl Default for HookCounters {
    fn default() -> Self {
        HookCounters {
            flags: [0; 256],
            protocols: [0; PROTOS],
            parse_errors: [0; PARSE_ERRORS],
            flow_inserts: 0,
            flow_insert_failures: 0,
            events: 0,
            events_suppressed: 0,
            events_ringbuf_full: 0,
            rate_tokens: 0,
            rate_refill_ns: 0,
            flow_idle_ticks: 0,
            dropped: [0; DROP_REASONS],
            would_drop: [0; DROP_REASONS],
            frames_to_socket: 0,
            frames_to_socket_failed: 0,
            syns_untracked: 0,
            syn_window_ticks: 0,
            syn_window_start: 0,
            syn_window_used: 0,
            verifier_scratch: 0,
        }
    }
}

impl HookCounters {
    /// Count one TCP segment in the protocol counts and the exact flags histogram.
    #[inline(always)]
    pub fn count_tcp(&mut self, flags: u8) {
        self.protocols[PROTO_TCP] += 1;
        self.flags[flags as usize] += 1;
    }

    /// Count one packet of another protocol (a `PROTO_*` slot).
    #[inline(always)]
    pub fn count_protocol(&mut self, slot: usize) {
        if let Some(c) = self.protocols.get_mut(slot) {
            *c += 1;
        }
    }

    /// Count one packet passed unparsed.
    #[inline(always)]
    pub fn count_parse_error(&mut self, reason: ParseError) {
        // LLVM drops the bounds check (an enum's value is in range), but a reason decoded from the
        // parser's state word reaches here as a byte the verifier of older kernels cannot bound:
        // `black_box` keeps the check, for the verifier. Parse errors only, off the fast path.
        if let Some(c) = self.parse_errors.get_mut(core::hint::black_box(reason as usize)) {
            *c += 1;
        }
    }

    /// Add another CPU's counters (the rate limiter's state and the idle setting are not summed).
    pub fn add(&mut self, other: &HookCounters) {
        for (a, b) in self.flags.iter_mut().zip(other.flags.iter()) {
            *a += b;
        }
        for (a, b) in self.protocols.iter_mut().zip(other.protocols.iter()) {
            *a += b;
        }
        for (a, b) in self.parse_errors.iter_mut().zip(other.parse_errors.iter()) {
            *a += b;
        }
        self.flow_inserts += other.flow_inserts;
        self.flow_insert_failures += other.flow_insert_failures;
        self.events += other.events;
        self.events_suppressed += other.events_suppressed;
        self.events_ringbuf_full += other.events_ringbuf_full;
        for i in 0..DROP_REASONS {
            self.dropped[i] += other.dropped[i];
            self.would_drop[i] += other.would_drop[i];
        }
        self.frames_to_socket += other.frames_to_socket;
        self.frames_to_socket_failed += other.frames_to_socket_failed;
        self.syns_untracked += other.syns_untracked;
    }

    /// Whether an inbound SYN seen at `now` (jiffies) may be tracked in the flow table: at most
    /// `per_sec` in each one-second window on this CPU (0: no limit); the rest are counted in
    /// `syns_untracked`. A spoofed flood is nothing but inbound SYNs of new flows, and the cold read
    /// of a flow slot is most of what a new flow costs; beyond the budget they live in the histogram
    /// and the aggregates, which is where flood verdicts come from, and the table stays for
    /// connections (our answer starts one). Jiffies, not ns: the kernel reads them for free, a
    /// clock helper call cost a new flow ~40 ns here.
    #[inline(always)]
    pub fn take_syn_budget(&mut self, now: u64, per_sec: u64) -> bool {
        if per_sec == 0 {
            return true;
        }
        let window = if self.syn_window_ticks == 0 { DEFAULT_SYN_WINDOW_TICKS } else { self.syn_window_ticks };
        if self.syn_window_start == 0 || now.wrapping_sub(self.syn_window_start) >= window {
            self.syn_window_start = now;
            self.syn_window_used = 0;
        }
        if self.syn_window_used >= per_sec {
            self.syns_untracked += 1;
            return false;
        }
        self.syn_window_used += 1;
        true
    }

    /// Take one token from the per-CPU event budget of `rate_per_sec`, refilled continuously and
    /// capped at one second's worth. False means: suppress this event.
    #[inline(always)]
    pub fn take_event_token(&mut self, now_ns: u64, rate_per_sec: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.rate_refill_ns);
        if elapsed >= 1_000_000 {
            // Refill in whole milliseconds, at most a second's worth (no overflow check needed:
            // the eBPF target has no 128-bit multiply for `saturating_mul`).
            let ms = elapsed / 1_000_000;
            let ms = if ms > 1000 { 1000 } else { ms };
            let add = ms.wrapping_mul(rate_per_sec) / 1000;
            if add > 0 || self.rate_refill_ns == 0 {
                let t = self.rate_tokens + add;
                self.rate_tokens = if t > rate_per_sec || self.rate_refill_ns == 0 { rate_per_sec } else { t };
                self.rate_refill_ns = now_ns;
            }
        }
        if self.rate_tokens == 0 {
            self.events_suppressed += 1;
            return false;
        }
        self.rate_tokens -= 1;
        true
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] and only u64 fields.
    unsafe impl aya::Pod for super::HookCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_slots() {
        assert_eq!(PARSE_ERROR_NAMES[ParseError::BadTcpOffset as usize], "bad_tcp_offset");
        assert_eq!(PARSE_ERROR_NAMES[ParseError::TruncatedEthernet as usize], "truncated_ethernet");
    }

    #[test]
    fn rate_limit_allows_a_burst_then_refills() {
        let mut c = HookCounters::default();
        let t0 = 5_000_000_000;
        let allowed = (0..15).filter(|_| c.take_event_token(t0, 10)).count();
        assert_eq!((allowed, c.events_suppressed), (10, 5));
        assert!(!c.take_event_token(t0 + 50_000_000, 10), "0.05 s gives half a token: none");
        assert!(c.take_event_token(t0 + 100_000_000, 10), "0.1 s gives one token");
        assert!(c.take_event_token(t0 + 10_000_000_000, 10));
        assert_eq!((0..20).filter(|_| c.take_event_token(t0 + 10_000_000_000, 10)).count(), 9, "capped at one second's worth");
    }

    #[test]
    fn syn_budget_tracks_so_many_a_second_and_counts_the_rest() {
        let mut c = HookCounters { syn_window_ticks: 1000, ..HookCounters::default() };
        let t0 = 7_000;
        let tracked = (0..150).filter(|i| c.take_syn_budget(t0 + i, 100)).count();
        assert_eq!((tracked, c.syns_untracked), (100, 50));
        assert!(!c.take_syn_budget(t0 + 999, 100), "still the same second");
        assert!(c.take_syn_budget(t0 + 1000, 100), "a new second, a new budget");
        assert!((0..1000).all(|_| c.take_syn_budget(t0 + 1000, 0)), "0: no limit");
        let mut bare = HookCounters::default();
        assert_eq!((0..300).filter(|_| bare.take_syn_budget(t0, 10)).count(), 10);
        assert!(!bare.take_syn_budget(t0 + DEFAULT_SYN_WINDOW_TICKS - 1, 10) && bare.take_syn_budget(t0 + DEFAULT_SYN_WINDOW_TICKS, 10));
    }
}
