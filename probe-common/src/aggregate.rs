//! What a flood cannot blind: per-CPU aggregates that need no flow slot. A spoofed flood makes
//! every packet a new flow, so the flow table fills within a second; these fixed-size counters keep
//! counting in O(1) per packet whatever the table holds:
//!
//! - per local service (address and port, direct-mapped into [`SERVICE_BUCKETS`]): inbound SYNs,
//!   our SYN/ACKs and RSTs, completed handshakes, and a HyperLogLog of the SYNs' sources;
//! - HyperLogLog sketches of the sources of unsolicited SYN/ACKs and unsolicited RSTs (the
//!   reflectors or victims of backscatter and reflection floods);
//! - a small heavy-hitter table of the remotes involved (Misra–Gries per slot).
//!
//! Everything is cumulative: the agent diffs two polls, merges CPUs (counters add, registers take
//! the maximum) and estimates distinct sources from the registers. The kernel program and replay
//! call [`Aggregates::count`] — one update rule for both.

use crate::{
    flags::{ACK, RST, SYN},
    flow::{Endpoints, FlowEntry, NOTABLE_UNSOLICITED_SYN_ACK, Segment, Side, addr_words},
};

/// Local services tracked per CPU (a power of two).
pub const SERVICE_BUCKETS: usize = 64;
/// HyperLogLog registers per service (a power of two): about 6.5 % standard error.
pub const SERVICE_REGISTERS: usize = 256;
/// HyperLogLog registers of the global sketches: about 6.5 % standard error.
pub const SKETCH_REGISTERS: usize = 256;
/// Heavy-hitter slots per CPU (a power of two).
pub const TOP_REMOTES: usize = 32;

/// Indexes of [`ServiceStats::counts`].
pub const SVC_SYN_IN: usize = 0;
pub const SVC_SYN_ACK_OUT: usize = 1;
pub const SVC_RST_OUT: usize = 2;
pub const SVC_COMPLETED: usize = 3;

/// What a remote did, as bits of [`RemoteSlot::kinds`].
pub const REMOTE_SYN: u8 = 1 << 0;
pub const REMOTE_SYN_ACK: u8 = 1 << 1;
pub const REMOTE_RST: u8 = 1 << 2;

/// One local service's counters. `family == 0` marks a free bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceStats {
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u8,
    pub _pad0: u8,
    /// How far this service is ahead of others contending for its bucket: each of its SYNs adds
    /// one, each SYN of another service hashing here takes one; at zero the other takes the bucket.
    pub credit: u16,
    pub _pad: [u8; 2],
    /// First and last inbound SYN, in the producer's clock (jiffies in the kernel).
    pub first_seen: u64,
    pub last_seen: u64,
    /// Indexed by `SVC_*`: inbound SYNs (no ACK); our SYN/ACKs; our RSTs (a closed port answers
    /// each SYN with one); handshakes completed (the client's first ACK after our SYN/ACK, on a
    /// tracked flow).
    pub counts: [u32; 4],
    /// HyperLogLog registers over the inbound SYNs' source addresses.
    pub sources: [u8; SERVICE_REGISTERS],
}
const _: () = assert!(core::mem::size_of::<ServiceStats>() == 56 + SERVICE_REGISTERS);

impl Default for ServiceStats {
    fn default() -> Self {
        ServiceStats {
            addr: [0; 16],
            port: 0,
            family: 0,
            _pad0: 0,
            credit: 0,
            _pad: [0; 2],
            first_seen: 0,
            last_seen: 0,
            counts: [0; 4],
            sources: [0; SERVICE_REGISTERS],
        }
    }
}

/// A remote seen in flood-shaped traffic, with a Misra–Gries count: in a slot two remotes contend
/// for, the count is how far the holder is ahead. Aligned to 8 for [`addr_words`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteSlot {
    pub addr: [u8; 16],
    pub count: u32,
    pub family: u8,
    /// `REMOTE_*` bits.
    pub kinds: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<RemoteSlot>() == 24);

/// One CPU's aggregates (one per-CPU array value).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aggregates {
    pub services: [ServiceStats; SERVICE_BUCKETS],
    /// HyperLogLog registers over the sources of unsolicited SYN/ACKs.
    pub syn_ack_sources: [u8; SKETCH_REGISTERS],
    /// HyperLogLog registers over the sources of unsolicited RSTs.
    pub rst_sources: [u8; SKETCH_REGISTERS],
    pub remotes: [RemoteSlot; TOP_REMOTES],
    /// Inbound SYNs, over all services.
    pub syn_in: u64,
    /// Inbound SYN/ACKs on flows where we sent no SYN (or that no slot could track).
    pub unsolicited_syn_ack: u64,
    /// Inbound RSTs on flows we never sent a packet on (or that no slot could track).
    pub unsolicited_rst: u64,
    /// Inbound SYNs whose service found its bucket held by another busy service.
    pub service_overflow: u64,
}
const _: () = assert!(
    core::mem::size_of::<Aggregates>() == (56 + SERVICE_REGISTERS) * SERVICE_BUCKETS + 2 * SKETCH_REGISTERS + 24 * TOP_REMOTES + 32
);

impl Default for Aggregates {
    fn default() -> Self {
        Aggregates {
            services: [ServiceStats::default(); SERVICE_BUCKETS],
            syn_ack_sources: [0; SKETCH_REGISTERS],
            rst_sources: [0; SKETCH_REGISTERS],
            remotes: [RemoteSlot::default(); TOP_REMOTES],
            syn_in: 0,
            unsolicited_syn_ack: 0,
            unsolicited_rst: 0,
            service_overflow: 0,
        }
    }
}

/// A 64-bit mix of an address (murmur3's finaliser over a fold): HyperLogLog needs uniform bits.
#[inline(always)]
pub fn addr_hash(addr: &[u8; 16], salt: u64) -> u64 {
    let w =
        |i: usize| u64::from_le_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3], addr[i + 4], addr[i + 5], addr[i + 6], addr[i + 7]]);
    let mut x = w(0) ^ w(8).rotate_left(29) ^ salt;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Leading zeros of a 64-bit word without a branch: smear the top one bit rightwards, then count
/// the zeros left (SWAR popcount). The eBPF target has no count-leading-zeros instruction, cannot
/// link the library call LLVM would make for `leading_zeros`, and every branch here would multiply
/// the paths the verifier walks.
#[inline(always)]
fn leading_zeros(mut x: u64) -> u32 {
    x |= x >> 1;
    x |= x >> 2;
    x |= x >> 4;
    x |= x >> 8;
    x |= x >> 16;
    x |= x >> 32;
    let mut v = !x;
    v -= (v >> 1) & 0x5555_5555_5555_5555;
    v = (v & 0x3333_3333_3333_3333) + ((v >> 2) & 0x3333_3333_3333_3333);
    v = (v + (v >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    (v.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}

/// Add a hashed item to HyperLogLog `registers` (`BITS` = log2 of their count).
#[inline(always)]
fn hll_add<const N: usize, const BITS: u32>(registers: &mut [u8; N], hash: u64) {
    // The low BITS bits pick the register; the rank is the position of the first one bit among the
    // high 64 - BITS bits, counting from 1 (a sentinel bit just below them caps it).
    let index = (hash as usize) & (N - 1);
    let rank = (leading_zeros((hash & !((1u64 << BITS) - 1)) | (1u64 << (BITS - 1))) + 1) as u8;
    if let Some(r) = registers.get_mut(index)
        && rank > *r
    {
        *r = rank;
    }
}

/// The HyperLogLog estimate of distinct items over `registers` (with the small-range correction).
/// Userspace only: the eBPF target has no floating point.
#[cfg(not(target_arch = "bpf"))]
pub fn hll_estimate(registers: &[u8]) -> f64 {
    let m = registers.len() as f64;
    let alpha = match registers.len() {
        16 => 0.673,
        32 => 0.697,
        64 => 0.709,
        n => 0.7213 / (1.0 + 1.079 / n as f64),
    };
    let mut sum = 0.0;
    let mut zeros = 0u32;
    for &r in registers {
        sum += 1.0 / (1u64 << r.min(63)) as f64;
        if r == 0 {
            zeros += 1;
        }
    }
    let raw = alpha * m * m / sum;
    if raw <= 2.5 * m && zeros > 0 { m * ln(m / zeros as f64) } else { raw }
}

#[cfg(not(target_arch = "bpf"))]
/// Natural logarithm for a `no_std` crate (the estimate runs only in userspace, but this crate has
/// no `std`): ln(x) = 2 atanh((x-1)/(x+1)), by its series after halving x into [1, 2).
fn ln(mut x: f64) -> f64 {
    let mut k = 0.0;
    while x > 2.0 {
        x /= 2.0;
        k += 1.0;
    }
    let y = (x - 1.0) / (x + 1.0);
    let (mut term, mut sum, mut n) = (y, 0.0, 1.0);
    while n < 60.0 {
        sum += term / n;
        term *= y * y;
        n += 2.0;
    }
    2.0 * sum + k * core::f64::consts::LN_2
}

/// Merge another CPU's (or another poll's) registers: the maximum of each.
pub fn hll_merge(into: &mut [u8], other: &[u8]) {
    for (a, b) in into.iter_mut().zip(other.iter()) {
        *a = (*a).max(*b);
    }
}

/// How long a service's bucket stays its own without inbound SYNs, for a flow table whose flows
/// go idle after `flow_idle` (same clock): an eighth of it, so a service's flood statistics
/// outlive a burst but not the connections they describe.
#[inline(always)]
pub fn service_idle(flow_idle: u64) -> u64 {
    flow_idle / 8
}

impl Aggregates {
    /// Whether `seg` can change the aggregates at all: a SYN, a RST, or the client's ACK that may
    /// complete a handshake. The packets of established flows are none of these, so they skip the
    /// per-CPU lookup (it cost ~50 ns a packet when every packet paid it).
    #[inline(always)]
    pub fn concerns(entry: Option<&FlowEntry>, side: Side, seg: &Segment) -> bool {
        let f = seg.flags;
        if f & (SYN | RST) != 0 {
            return true;
        }
        seg.hook == crate::hook::HOOK_INGRESS as u8
            && seg.is_ordinary()
            && entry.is_some_and(|e| e.sides[side.index()].awaits_handshake_ack())
    }

    /// Count `seg`, sent by `side` of a flow whose state before it is `entry` (`None`: no slot
    /// tracks it), with the notable `reasons` already worked out. Only flood-shaped packets (SYNs,
    /// SYN/ACKs, RSTs, and the first ACK of a handshake) touch anything. `idle` (in `seg.now`'s
    /// clock) is how long a service's bucket stays its own without inbound SYNs.
    ///
    /// The packet is classified first and each structure is then touched in one place: every
    /// inlined copy would multiply the paths the verifier has to walk.
    #[inline(always)]
    pub fn count(&mut self, entry: Option<&FlowEntry>, side: Side, ep: &Endpoints, seg: &Segment, reasons: u8, idle: u64) {
        let f = seg.flags;
        let inbound = seg.hook == crate::hook::HOOK_INGRESS as u8;
        // Which service counter (and whose address and port is the service), and what the remote did.
        let mut counter = usize::MAX;
        let mut remote = 0u8;
        if inbound && f & (SYN | ACK | RST) == SYN {
            counter = SVC_SYN_IN;
            remote = REMOTE_SYN;
        } else if !inbound && f & RST != 0 {
            counter = SVC_RST_OUT;
        } else if !inbound && f & (SYN | ACK) == SYN | ACK {
            counter = SVC_SYN_ACK_OUT;
        } else if inbound && reasons & NOTABLE_UNSOLICITED_SYN_ACK != 0 {
            remote = REMOTE_SYN_ACK;
        } else if inbound && f & RST != 0 && entry.is_none_or(|e| e.sides[side.other().index()].packets == 0) {
            // Our side never sent on this flow.
            remote = REMOTE_RST;
        } else if let Some(e) = entry
            && inbound
            && seg.is_ordinary()
        {
            let (client, server) = (&e.sides[side.index()], &e.sides[side.other().index()]);
            if client.awaits_handshake_ack() && server.syn_ack > 0 {
                counter = SVC_COMPLETED;
            }
        }
        if counter < 4 {
            let (addr, port) = if inbound { (&ep.dst, ep.dport) } else { (&ep.src, ep.sport) };
            let claim = counter == SVC_SYN_IN;
            if let Some(s) = self.service(addr, port, ep.family, seg.now, idle, claim) {
                if let Some(c) = s.counts.get_mut(counter) {
                    *c += 1;
                }
                if claim {
                    s.last_seen = seg.now;
                    hll_add::<SERVICE_REGISTERS, 8>(&mut s.sources, addr_hash(&ep.src, 0));
                }
            }
        }
        if remote == 0 {
            return;
        }
        self.remember(&ep.src, ep.family, remote);
        if remote == REMOTE_SYN {
            self.syn_in += 1;
            return;
        }
        let registers = if remote == REMOTE_SYN_ACK {
            self.unsolicited_syn_ack += 1;
            &mut self.syn_ack_sources
        } else {
            self.unsolicited_rst += 1;
            &mut self.rst_sources
        };
        hll_add::<SKETCH_REGISTERS, 8>(registers, addr_hash(&ep.src, 1));
    }

    /// The bucket of service (`addr`, `port`): its own, or (`claim`, an inbound SYN) a free one, one
    /// idle for longer than `idle`, or one whose holder has no credit left, reset; `None` when
    /// another service holds it (counted). So a burst of single probes (a port scan) cannot keep a
    /// flood out of the buckets: the heavier service wins.
    #[inline(always)]
    fn service(&mut self, addr: &[u8; 16], port: u16, family: u8, now: u64, idle: u64, claim: bool) -> Option<&mut ServiceStats> {
        let index = (addr_hash(addr, port as u64) as usize) & (SERVICE_BUCKETS - 1);
        let s = self.services.get_mut(index)?;
        let same = s.family == family && s.port == port && same_addr(&s.addr, addr);
        if same {
            if claim {
                s.credit = s.credit.saturating_add(1);
            }
            return Some(s);
        }
        if !claim {
            return None;
        }
        if s.family != 0 && now.saturating_sub(s.last_seen) <= idle && s.credit > 0 {
            s.credit -= 1;
            self.service_overflow += 1;
            return None;
        }
        s.addr = *addr;
        s.port = port;
        s.family = family;
        s.first_seen = now;
        s.last_seen = now;
        s.credit = 1;
        s.counts = [0; 4];
        // Word stores: a byte loop or `fill` may become a `memset` the eBPF target cannot lower.
        let words = s.sources.as_mut_ptr().cast::<u64>();
        for i in 0..SERVICE_REGISTERS / 8 {
            // SAFETY: `sources` is SERVICE_REGISTERS bytes at an 8-aligned offset of an 8-aligned struct.
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
        }
        Some(s)
    }

    /// Count `addr` in the heavy-hitter table.
    #[inline(always)]
    fn remember(&mut self, addr: &[u8; 16], family: u8, kind: u8) {
        let index = (addr_hash(addr, 3) as usize) & (TOP_REMOTES - 1);
        let Some(r) = self.remotes.get_mut(index) else { return };
        if r.family == family && same_addr(&r.addr, addr) {
            r.count = r.count.saturating_add(1);
            r.kinds |= kind;
        } else if r.count == 0 {
            r.addr = *addr;
            r.family = family;
            r.count = 1;
            r.kinds = kind;
        } else {
            r.count -= 1;
        }
    }
}

/// Address equality as two 64-bit compares of 8-aligned addresses (a byte-array `==` may become a
/// `bcmp` call, which the eBPF target cannot link).
#[inline(always)]
fn same_addr(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let (x, y) = (addr_words(a), addr_words(b));
    x[0] == y[0] && x[1] == y[1]
}

#[cfg(feature = "user")]
// SAFETY: plain old data, `#[repr(C)]` with explicit padding.
unsafe impl aya::Pod for Aggregates {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FAMILY_V4;

    fn v4(a: u32) -> [u8; 16] {
        crate::flow::v4_bytes(a.to_be_bytes())
    }

    fn syn_to(agg: &mut Aggregates, src: u32, port: u16, now: u64) {
        let ep = Endpoints { src: v4(src), dst: v4(0x0a00_0002), sport: 1000, dport: port, family: FAMILY_V4 };
        let seg = Segment { flags: SYN, hook: 0, now, ..Default::default() };
        agg.count(None, Side::Lo, &ep, &seg, 0, 10);
    }

    #[test]
    fn leading_zeros_agrees_with_core() {
        for x in [0u64, 1, 2, 3, 0xff, 1 << 31, 1 << 32, 1 << 63, u64::MAX, 0x0000_1234_0000_0000] {
            assert_eq!(leading_zeros(x), x.leading_zeros(), "{x:#x}");
        }
    }

    #[test]
    fn distinct_sources_are_estimated_within_the_sketch_error() {
        let mut agg = Aggregates::default();
        for src in 0..20_000u32 {
            syn_to(&mut agg, 0xc612_0000 + src, 80, 1);
        }
        for src in 0..20_000u32 {
            syn_to(&mut agg, 0xc612_0000 + src, 80, 2);
        }
        let s = agg.services.iter().find(|s| s.port == 80).unwrap();
        assert_eq!((s.counts[SVC_SYN_IN], agg.syn_in), (40_000, 40_000));
        let est = hll_estimate(&s.sources);
        assert!((15_000.0..25_000.0).contains(&est), "about 20000 distinct sources, estimated {est}");
        let mut one = Aggregates::default();
        for _ in 0..200 {
            syn_to(&mut one, 0xc000_0201, 80, 1);
        }
        let s = one.services.iter().find(|s| s.port == 80).unwrap();
        assert!((hll_estimate(&s.sources) - 1.0).abs() < 0.5, "one source is one");
        assert_eq!(one.remotes.iter().find(|r| r.count > 0).map(|r| (r.count, r.kinds)), Some((200, REMOTE_SYN)));
    }

    #[test]
    fn the_heavier_service_wins_a_bucket_and_an_idle_one_gives_it_up() {
        let mut agg = Aggregates::default();
        for _ in 0..3 {
            syn_to(&mut agg, 1, 80, 100);
        }
        let index = agg.services.iter().position(|s| s.port == 80).unwrap();
        let mut others = (1..u16::MAX).filter(|p| (addr_hash(&v4(0x0a00_0002), *p as u64) as usize) & (SERVICE_BUCKETS - 1) == index);
        let others = [others.next().unwrap(), others.next().unwrap()];
        syn_to(&mut agg, 1, others[0], 105);
        assert_eq!((agg.services[index].port, agg.service_overflow), (80, 1), "busy: the newcomer is counted as overflow");
        syn_to(&mut agg, 1, others[0], 200);
        assert_eq!((agg.services[index].port, agg.services[index].counts[SVC_SYN_IN]), (others[0], 1), "idle: taken over, counts reset");
        // A probe-sized service (one SYN) loses its bucket to a flood within two SYNs.
        syn_to(&mut agg, 1, others[1], 201);
        syn_to(&mut agg, 1, others[1], 201);
        assert_eq!(agg.services[index].port, others[1], "the heavier service wins");
    }

    #[test]
    fn estimates_of_small_and_empty_sets() {
        assert_eq!(hll_estimate(&[0u8; 64]), 0.0);
        assert!((ln(10.0) - 10f64.ln()).abs() < 1e-9 && (ln(1.5) - 1.5f64.ln()).abs() < 1e-9);
    }
}
