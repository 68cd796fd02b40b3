//! Map updates for one packet: the hook's counters, the flow slot, and the ring-buffer event for a
//! notable segment. No policy: what counts as notable and how a flow changes come from probe-common.
//!
//! The flow table is a direct-mapped array split into one partition per CPU: slot =
//! `cpu * slots_per_cpu + hash(key) % slots_per_cpu`. A lookup is one inlined array access and a new
//! flow is a plain write — no hash-map insert, no lock — and the array is mmap-able so the agent
//! reads it without a syscall per flow. Only this CPU writes its partition (XDP and TC run with
//! bottom halves off), which is what a per-CPU map would give. A slot held by another flow that is
//! still live is an insert failure, counted; an idle one is taken over.

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, generated::bpf_jiffies64};
use probe_common::{
    action::{
        ACTION_DROPPED, ACTION_PASSED, ACTION_WOULD_DROP, MODE_DROP_DRY_RUN, SlotSays, drop_candidate, only_counts, reason_index, slot_says,
    },
    aggregate::{Aggregates, service_idle},
    flow::Side,
};
use probe_common::{
    counters::HookCounters,
    event::{EVENT_FRAME_MAX, EVENT_PAYLOAD_MAX, EVENT_TRACKED, PacketEvent},
    flow::{FAMILY_NONE, FlowEntry, FlowKey, NOTABLE_NEW_CONNECTION, Segment, budgeted_syn, may_take_slot, notable_reasons},
    parse::TcpPacket,
};

use crate::{AGGREGATES, EVENTS, FLOWS, config};

/// Copies bytes out of the packet with the hook's helper (`bpf_xdp_load_bytes` /
/// `bpf_skb_load_bytes`), which works on non-linear packets and needs no byte loop.
pub trait PayloadSource {
    /// Copy `len` (1..=128) bytes at `offset` into `dst`; false on failure.
    fn load(&self, offset: u32, dst: *mut u8, len: u32) -> bool;
}

/// [`count_tcp`]'s outcome bit: an event went to the ring buffer (the frame is notable).
pub const OUT_EVENT: u8 = 1 << 0;
/// [`count_tcp`]'s outcome bit: the operator's drop policy says drop this packet.
pub const OUT_DROP: u8 = 1 << 1;

/// Copy lengths are masks, not clamps: `want - 1` goes out through memory and back and is masked
/// and incremented where the verifier sees it, so every kernel's verifier reads the length as
/// `1..=mask + 1` from the arithmetic alone. A clamp by branch is not enough: before 6.8 the
/// verifier does not carry a branch's bound to a 32-bit copy of the register, LLVM passes such a
/// copy, and 6.1 and 6.12 then refuse the helper call for a length that "can be zero".
/// The trip through memory does two more things: LLVM cannot prove the mask redundant and drop
/// it, and the verifier's tracking of the exact length (a helper's size must be known precisely)
/// stops at the load instead of reaching back through every parser path's header offsets, which
/// would make it walk each path separately to the end of the program.
/// `want` must be in `1..=mask + 1`; `scratch` is memory of the record about to be overwritten.
#[inline(always)]
unsafe fn copy_len(scratch: *mut u32, want: u32, mask: u32) -> u32 {
    // SAFETY: the caller's scratch is four writable bytes of the reserved record.
    unsafe {
        core::ptr::write_volatile(scratch, want - 1);
        (core::ptr::read_volatile(scratch) & mask) + 1
    }
}

/// The payload copy's mask: `EVENT_PAYLOAD_MAX` (64) bytes.
const PAYLOAD_MASK: u32 = EVENT_PAYLOAD_MAX as u32 - 1;
/// The frame copy's two pieces: 128 bytes, then the 64 that make `EVENT_FRAME_MAX` (192).
const FRAME_HEAD_MASK: u32 = 127;
const FRAME_TAIL_MASK: u32 = (EVENT_FRAME_MAX as u32 - (FRAME_HEAD_MASK + 1)) - 1;
const _: () = assert!(EVENT_PAYLOAD_MAX.is_power_of_two() && FRAME_TAIL_MASK == 63);

/// Count one TCP segment: histogram, flow slot, and an event if it is notable. Returns `OUT_*` bits.
#[inline(always)]
pub fn count_tcp<P: PayloadSource>(src: &P, counters: &mut HookCounters, pkt: &mut TcpPacket, hook: u8, frame_len: usize) -> u8 {
    counters.count_tcp(pkt.segment.flags);

    // jiffies: the verifier inlines this into one load; a clock helper call costs ~12 ns here.
    let now = unsafe { bpf_jiffies64() };
    pkt.segment.now = now;
    pkt.segment.hook = hook;
    let (key, side) = FlowKey::canonical(&pkt.endpoints);

    let cpu = unsafe { bpf_get_smp_processor_id() };
    let index = key.slot(cpu, config::flow_slot_mask());
    // The bulk of the traffic first, on a path of its own: an ordinary segment of a tracked flow
    // that only adds to its counters. Nothing below can concern it, and sharing that code's
    // registers cost every such packet ~70 of its 432 instructions.
    if pkt.segment.is_ordinary()
        && let Some(ptr) = FLOWS.get_ptr_mut(index)
    {
        // SAFETY: a map value pointer, written only by this CPU while bottom halves are off.
        let entry = unsafe { &mut *ptr };
        if entry.holds(&key) && only_counts(entry, side, &pkt.segment) {
            entry.apply(side, &pkt.segment);
            return 0;
        }
    }
    // The rest works on copies of the packet and the key. Its calls take them by reference, which
    // keeps them in memory, and LLVM would store the originals before the branch above: the fast
    // path paid ~50 instructions for stores only this path reads. `black_box` keeps LLVM from
    // folding the copies back into the originals; it only moves work, so it is not relied on.
    let mut copy = core::hint::black_box(*pkt);
    let pkt = &mut copy;
    let key = core::hint::black_box(key);
    // The verifier walks what follows once for each combination of values it knows exactly and
    // needs to (an index, a branch it can decide), and a side known as 0 or 1, or notable reasons
    // known as one constant per path through `notable_reasons`, is a factor for all of it: the
    // walk went past the 1M-instruction limit on Debian's 6.1 and 6.12 (6.18 prunes better).
    // Passed through map memory they become unknowns, the paths of every side and reason meet
    // again, and 6.18 walks a quarter of what it did. Two stores and two loads, off the fast path.
    let side = Side::from_index(opaque(counters, side as u64) as u8 & 1);
    // An inbound SYN over this second's budget never reads its slot: in a spoofed flood that cold
    // read is most of a packet's cost, and the flood's verdict comes from the aggregates.
    let entry = if budgeted_syn(&pkt.segment) && !counters.take_syn_budget(now, config::syn_track_rate()) {
        None
    } else {
        flow_slot(counters, &key, &pkt.segment, index)
    };
    // A slot about to be started (an idle one taken over still holds the old flow's counts) reads
    // as no history, for the reasons, the aggregates and the event alike.
    let history = entry.as_deref().filter(|e| e.key.family != FAMILY_NONE);
    let reasons = opaque(counters, notable_reasons(history, side, &pkt.segment) as u64) as u8;
    if Aggregates::concerns(history, side, &pkt.segment) {
        let input = AggregateInput { history, side: side as u8, pkt, reasons, idle: service_idle(counters.flow_idle_ticks) };
        // Kept, not dropped: see `aggregate`'s return value.
        core::hint::black_box(aggregate(&input));
    }
    // Judged before this packet touches its slot: the table as it was, over every partition.
    let mut action = ACTION_PASSED;
    let reason = drop_candidate(config::drop_policy(), &pkt.segment);
    if reason != 0 && not_ours(&key, side.other() as u8, now, counters.flow_idle_ticks) {
        let i = reason_index(reason);
        if config::program_mode() & MODE_DROP_DRY_RUN != 0 {
            counters.would_drop[i] += 1;
            action = ACTION_WOULD_DROP;
        } else {
            counters.dropped[i] += 1;
            action = ACTION_DROPPED;
        }
    }
    let mut out = if action == ACTION_DROPPED { OUT_DROP } else { 0 };
    if reasons != 0 && emit_event(src, counters, entry.as_deref(), pkt, reasons, action, frame_len, cpu) {
        out |= OUT_EVENT;
    }
    if let Some(entry) = entry {
        // A new connection on a closed flow's endpoints starts afresh, after its event took the
        // old one out (see `starts_anew`).
        let anew = reasons & NOTABLE_NEW_CONNECTION != 0;
        if anew {
            counters.flow_inserts += 1;
        }
        if entry.key.family == FAMILY_NONE || anew {
            entry.start(&key, side, now);
        }
        entry.apply(side, &pkt.segment);
    }
    out
}

/// `v`, passed through map memory so that the verifier forgets what it knew of it.
#[inline(always)]
pub fn opaque(counters: &mut HookCounters, v: u64) -> u64 {
    // SAFETY: a plain field of this CPU's counters.
    unsafe {
        core::ptr::write_volatile(&mut counters.verifier_scratch, v);
        core::ptr::read_volatile(&counters.verifier_scratch)
    }
}

/// Whether every CPU's partition shows our host (side `ours` of `key`) sent nothing on this flow,
/// so the drop policy may act; false as soon as one partition says ours or cannot tell. Out of
/// line, like [`aggregate`]: only drop candidates pay for the loop.
#[inline(never)]
fn not_ours(key: &FlowKey, ours: u8, now: u64, idle: u64) -> bool {
    // SAFETY: a plain byte argument, masked as in `aggregate`.
    let ours = Side::from_index(unsafe { core::ptr::read_volatile(&ours) } & 1);
    let mask = config::flow_slot_mask();
    let parts = config::flow_partitions();
    for cpu in 0..MAX_PARTITIONS {
        if cpu >= parts {
            break;
        }
        let Some(ptr) = FLOWS.get_ptr(key.slot(cpu, mask)) else {
            return false;
        };
        // SAFETY: a map value pointer. Another CPU may be writing it; a read could only miss our
        // packet if that packet were being counted at this very moment, which an answer to it
        // (the SYN/ACK we judge) cannot be.
        if slot_says(unsafe { &*ptr }, key, ours, now, idle) != SlotSays::NotOurs {
            return false;
        }
    }
    true
}

/// The bound the verifier needs for [`not_ours`]'s loop; the real count is `FLOW_PARTITIONS`.
const MAX_PARTITIONS: u32 = 256;

/// What [`aggregate`] needs, passed by reference: a BPF call takes at most five arguments.
struct AggregateInput<'a> {
    history: Option<&'a FlowEntry>,
    /// The sender's `Side` as a byte (see [`aggregate`]).
    side: u8,
    pkt: &'a TcpPacket,
    reasons: u8,
    idle: u64,
}

/// The flood aggregates' update, out of line: only SYNs, RSTs and a handshake's last ACK call
/// it. Inlined, its code cost every packet ~40 ns through register pressure on the hot path,
/// even when skipped.
///
/// It returns the side it read, for no caller's use: a function that returns nothing leaves r0
/// as LLVM last used it, which can be a stack pointer, and the verifier refuses to return one
/// to the caller ("cannot return stack pointer to the caller").
#[inline(never)]
fn aggregate(input: &AggregateInput<'_>) -> u32 {
    // Read the side opaquely and mask it: LLVM knows an enum is 0 or 1 and drops any mask, but
    // across a call the verifier sees only a byte, and indexes the flow's sides with it.
    // SAFETY: a plain byte of a live struct.
    let side = Side::from_index(unsafe { core::ptr::read_volatile(&input.side) } & 1);
    if let Some(agg) = AGGREGATES.get_ptr_mut(0) {
        // SAFETY: this CPU's value, touched only by this program run (bottom halves off).
        unsafe { &mut *agg }.count(input.history, side, &input.pkt.endpoints, &input.pkt.segment, input.reasons, input.idle);
    }
    side as u32
}

/// The slot for `key`: its own, or one [`may_take_slot`] lets it take (reset to empty, `family ==
/// 0`, so the caller starts it after judging the packet against an empty history); `None` when
/// another flow keeps it.
#[inline(always)]
fn flow_slot(counters: &mut HookCounters, key: &FlowKey, seg: &Segment, index: u32) -> Option<&'static mut FlowEntry> {
    let Some(ptr) = FLOWS.get_ptr_mut(index) else {
        counters.flow_insert_failures += 1;
        return None;
    };
    // SAFETY: a map value pointer, written only by this CPU while bottom halves are off.
    let entry = unsafe { &mut *ptr };
    if entry.holds(key) {
        return Some(entry);
    }
    if may_take_slot(entry, seg, counters.flow_idle_ticks) {
        counters.flow_inserts += 1;
        entry.key.family = FAMILY_NONE;
        return Some(entry);
    }
    counters.flow_insert_failures += 1;
    None
}

#[inline(always)]
fn emit_event<P: PayloadSource>(
    src: &P,
    counters: &mut HookCounters,
    entry: Option<&FlowEntry>,
    pkt: &TcpPacket,
    reasons: u8,
    action: u8,
    frame_len: usize,
    cpu: u32,
) -> bool {
    // Only notable packets pay for a precise clock: the event's timestamp and the rate limit.
    let ts = unsafe { bpf_ktime_get_ns() };
    if !counters.take_event_token(ts, config::event_rate()) {
        return false;
    }
    let Some(mut slot) = EVENTS.reserve::<PacketEvent>(0) else {
        counters.events_ringbuf_full += 1;
        return false;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved record of the right size; every field is written below.
    unsafe {
        match entry {
            // An empty slot about to be started reads as no history too.
            Some(e) if e.key.family != FAMILY_NONE => {
                (*ev).flow_before.copy_from(e);
                (*ev).tracked = EVENT_TRACKED;
            }
            _ => {
                (*ev).flow_before.clear();
                (*ev).tracked = if entry.is_some() { EVENT_TRACKED } else { 0 };
            }
        }
        let seg = &pkt.segment;
        let ep = &pkt.endpoints;
        (*ev).ts_ns = ts;
        (*ev).src = ep.src;
        (*ev).dst = ep.dst;
        (*ev).sport = ep.sport;
        (*ev).dport = ep.dport;
        (*ev).family = ep.family;
        (*ev).seq = seg.seq;
        (*ev).ack = seg.ack;
        (*ev).payload_len = seg.payload_len;
        (*ev).ip_len = seg.ip_len;
        (*ev).window = pkt.window;
        (*ev).hook = seg.hook;
        (*ev).flags = seg.flags;
        (*ev).ttl = seg.ttl;
        (*ev).reasons = reasons;
        (*ev).cpu = cpu as u16;
        (*ev).action = action;
        (*ev)._pad = 0;
        (*ev).ip_id = seg.ip_id;
        (*ev)._pad3 = 0;
        let in_frame = frame_len.saturating_sub(pkt.payload_offset);
        let want = (seg.payload_len as usize).min(in_frame).min(EVENT_PAYLOAD_MAX) as u32;
        let scratch = (*ev).payload.as_mut_ptr().cast::<u32>();
        let mut captured = 0u8;
        if want > 0 && src.load(pkt.payload_offset as u32, (*ev).payload.as_mut_ptr(), copy_len(scratch, want, PAYLOAD_MASK)) {
            captured = want as u8;
        }
        (*ev).captured_len = captured;
        // The frame's head, for the evidence file: at most 192 bytes, copied as up to 128 and
        // then up to 64, so that each length is a masked value like the payload's.
        let m = frame_len.min(EVENT_FRAME_MAX) as u32;
        let frame = (*ev).frame.as_mut_ptr();
        let fscratch = frame.cast::<u32>();
        let head = m.min(FRAME_HEAD_MASK + 1);
        let mut copied = 0u16;
        if head > 0 && src.load(0, frame, copy_len(fscratch, head, FRAME_HEAD_MASK)) {
            copied = head as u16;
            let rest = m - head;
            let tail = frame.add(FRAME_HEAD_MASK as usize + 1);
            if rest > 0 && !src.load(FRAME_HEAD_MASK + 1, tail, copy_len(tail.cast::<u32>(), rest, FRAME_TAIL_MASK)) {
                copied = 0;
            } else {
                copied += rest as u16;
            }
        }
        (*ev).frame_captured = copied;
        (*ev).frame_len = frame_len as u32;
        (*ev)._pad2 = [0; 2];
    }
    slot.submit(0);
    counters.events += 1;
    true
}
