//! What the XDP program does with a packet once it is counted. A gateway passes everything unless
//! the operator opted in to dropping (`--drop`); a sensor on a mirror port drops its copies (or
//! passes them, if told) and hands notable ones to userspace whole through an AF_XDP socket.
//!
//! The drop rule is here, pure, so its unit tests are the kernel's rule: a packet is dropped only
//! when its flags name a reason the operator chose *and* every CPU's partition of the flow table
//! shows our host never sent a packet on its flow. Whenever a partition cannot tell (its slot holds
//! another live connection, so our packet may have failed to get in), the packet passes: fail-open.

use crate::{
    aggregate::Aggregates,
    flags::{self, ACK, FIN, RST, SYN},
    flow::{FAMILY_NONE, FlowEntry, FlowKey, Segment, Side, notable_reasons, yields_to_connection},
    hook::HOOK_INGRESS,
};

/// `--drop unsolicited-synack`: a SYN/ACK on a flow our host sent no SYN on. Dropped, our kernel
/// never answers it with the backscatter RST that fires remote IDS alerts.
pub const DROP_UNSOLICITED_SYN_ACK: u8 = 1 << 0;
/// `--drop invalid-flags`: a flags combination no correct stack sends (SYN+FIN, SYN+RST, NULL, ...).
pub const DROP_INVALID_FLAGS: u8 = 1 << 1;
pub const DROP_REASONS: usize = 2;
/// Names by bit index, as the command line and the metrics say them.
pub const DROP_REASON_NAMES: [&str; DROP_REASONS] = ["unsolicited-synack", "invalid-flags"];

/// Bits of the `PROGRAM_MODE` global.
pub const MODE_SENSOR: u32 = 1 << 0;
/// Sensor mode: pass the copies to the stack instead of dropping them.
pub const MODE_SENSOR_PASS: u32 = 1 << 1;
/// Gateway drop: count what would be dropped, drop nothing.
pub const MODE_DROP_DRY_RUN: u32 = 1 << 2;

/// `PacketEvent::action`: what happened to the packet after counting.
pub const ACTION_PASSED: u8 = 0;
pub const ACTION_DROPPED: u8 = 1;
/// `--drop-dry-run`: it would have been dropped.
pub const ACTION_WOULD_DROP: u8 = 2;

/// Whether `seg`, sent by `side` of the flow `entry` holds, does nothing but add to its counters:
/// an ordinary segment ([`Segment::is_ordinary`], never a drop candidate) that is not notable and
/// not the flood aggregates' concern. The kernel program applies such a segment and is done: the
/// bulk of the traffic skips every other decision. Said through the decisions themselves, so it
/// cannot drift from them.
#[inline(always)]
pub fn only_counts(entry: &FlowEntry, side: Side, seg: &Segment) -> bool {
    seg.is_ordinary() && notable_reasons(Some(entry), side, seg) == 0 && !Aggregates::concerns(Some(entry), side, seg)
}

/// The drop reason (one `DROP_*` bit) that `policy` names for this segment by its flags and hook
/// alone; 0 when none applies. Only inbound packets are ever candidates.
#[inline(always)]
pub fn drop_candidate(policy: u8, seg: &Segment) -> u8 {
    if policy == 0 || seg.hook != HOOK_INGRESS as u8 {
        return 0;
    }
    let f = seg.flags;
    if policy & DROP_UNSOLICITED_SYN_ACK != 0 && f & (SYN | ACK | RST | FIN) == SYN | ACK {
        return DROP_UNSOLICITED_SYN_ACK;
    }
    if policy & DROP_INVALID_FLAGS != 0 && flags::is_invalid(f) {
        return DROP_INVALID_FLAGS;
    }
    0
}

/// What one partition's slot says about our host's part in the flow of `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotSays {
    /// Our host sent on this flow: never drop.
    Ours,
    /// Our host sent nothing here: the slot is free, idle, holds this flow without a packet from
    /// us, or holds a flow that yields (unproven, or closed a while ago): a packet of ours would
    /// have taken that slot over.
    NotOurs,
    /// Another live connection holds the slot, so a packet of ours may have found no room.
    CannotTell,
}

/// Judge one partition's slot (as the flow table holds it, before this packet) for a packet
/// towards `ours`, the side of `key` that is our host.
#[inline(always)]
pub fn slot_says(entry: &FlowEntry, key: &FlowKey, ours: Side, now: u64, idle_ticks: u64) -> SlotSays {
    if entry.key.family == FAMILY_NONE {
        return SlotSays::NotOurs;
    }
    if entry.key.same(key) {
        return if entry.sides[ours.index()].packets > 0 { SlotSays::Ours } else { SlotSays::NotOurs };
    }
    // A flow our host opened is proven from its first packet and keeps its slot until idle or
    // closed: a packet of ours would have taken the slot only from one that yields.
    if now.saturating_sub(entry.last_seen) > idle_ticks || yields_to_connection(entry, now, idle_ticks) {
        SlotSays::NotOurs
    } else {
        SlotSays::CannotTell
    }
}

/// The counter slot of a `DROP_*` bit.
#[inline(always)]
pub fn reason_index(reason: u8) -> usize {
    if reason & DROP_UNSOLICITED_SYN_ACK != 0 { 0 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{flow::FAMILY_V4, hook::HOOK_EGRESS};

    fn seg(flags: u8, hook: u32) -> Segment {
        Segment { flags, ttl: 64, ip_id: 0, hook: hook as u8, seq: 1, ack: 0, payload_len: 0, ip_len: 40, now: 100 }
    }

    fn key(port: u16) -> FlowKey {
        FlowKey { addr_lo: [1; 16], addr_hi: [2; 16], port_lo: 80, port_hi: port, family: FAMILY_V4, _pad: 0, _pad2: 0 }
    }

    #[test]
    fn only_chosen_reasons_on_inbound_packets_are_candidates() {
        let both = DROP_UNSOLICITED_SYN_ACK | DROP_INVALID_FLAGS;
        assert_eq!(drop_candidate(both, &seg(SYN | ACK, HOOK_INGRESS)), DROP_UNSOLICITED_SYN_ACK);
        assert_eq!(drop_candidate(both, &seg(SYN | FIN, HOOK_INGRESS)), DROP_INVALID_FLAGS);
        assert_eq!(drop_candidate(both, &seg(0, HOOK_INGRESS)), DROP_INVALID_FLAGS);
        assert_eq!(drop_candidate(both, &seg(SYN | ACK, HOOK_EGRESS)), 0, "never our own packets");
        assert_eq!(drop_candidate(DROP_INVALID_FLAGS, &seg(SYN | ACK, HOOK_INGRESS)), 0);
        assert_eq!(drop_candidate(both, &seg(SYN, HOOK_INGRESS)), 0);
        assert_eq!(drop_candidate(both, &seg(ACK, HOOK_INGRESS)), 0);
        assert_eq!(drop_candidate(0, &seg(SYN | FIN, HOOK_INGRESS)), 0);
    }

    #[test]
    fn a_flow_we_sent_on_is_never_dropped_and_a_busy_slot_cannot_tell() {
        let k = key(40000);
        let mut e = FlowEntry::default();
        assert_eq!(slot_says(&e, &k, Side::Hi, 100, 50), SlotSays::NotOurs, "free slot");
        e.start(&k, Side::Hi, 90);
        e.apply(Side::Hi, &seg(SYN, HOOK_EGRESS));
        assert_eq!(slot_says(&e, &k, Side::Hi, 100, 50), SlotSays::Ours);
        assert_eq!(slot_says(&e, &k, Side::Lo, 100, 50), SlotSays::NotOurs, "the other side sent it");
        let other = key(40001);
        assert!(e.proven());
        assert_eq!(slot_says(&e, &other, Side::Hi, 100, 50), SlotSays::CannotTell, "a live connection holds the slot");
        assert_eq!(slot_says(&e, &other, Side::Hi, 1000, 50), SlotSays::NotOurs, "idle: ours would have taken it");
        let mut flood = FlowEntry::default();
        flood.start(&k, Side::Lo, 90);
        flood.apply(Side::Lo, &seg(SYN, HOOK_INGRESS));
        assert_eq!(slot_says(&flood, &other, Side::Hi, 100, 50), SlotSays::NotOurs, "unproven: ours would have taken it");
        // A closed connection keeps its slot for the linger (idle / 64), then yields it.
        let mut closed = e;
        closed.apply(Side::Lo, &seg(RST | ACK, HOOK_INGRESS));
        assert_eq!(slot_says(&closed, &other, Side::Hi, 100, 6400), SlotSays::CannotTell, "closed just now");
        assert_eq!(slot_says(&closed, &other, Side::Hi, 100 + 101, 6400), SlotSays::NotOurs, "closed past its linger");
        let fresh = Segment { now: 100 + 101, ..seg(SYN, HOOK_EGRESS) };
        assert!(crate::flow::may_take_slot(&closed, &fresh, 6400));
        assert!(!crate::flow::may_take_slot(&closed, &Segment { now: 100 + 101, ..seg(SYN, HOOK_INGRESS) }, 6400), "never a flood's");
    }

    /// The kernel's fast path applies a segment `only_counts` accepts and skips every other
    /// decision, so each of them must have nothing to say about it.
    #[test]
    fn only_counts_means_nothing_else_applies() {
        // A fresh flow, then after each packet of a handshake and a reset.
        let mut states = [FlowEntry::default(); 5];
        states[0].start(&key(40000), Side::Hi, 90);
        let handshake = [
            (Side::Hi, SYN, HOOK_INGRESS),
            (Side::Lo, SYN | ACK, HOOK_EGRESS),
            (Side::Hi, ACK, HOOK_INGRESS),
            (Side::Lo, RST | ACK, HOOK_EGRESS),
        ];
        for (i, (side, f, hook)) in handshake.into_iter().enumerate() {
            states[i + 1] = states[i];
            states[i + 1].apply(side, &seg(f, hook));
        }
        let mut accepted = 0;
        for state in &states {
            for side in [Side::Lo, Side::Hi] {
                for hook in [HOOK_INGRESS, HOOK_EGRESS] {
                    for ttl in [64, 63] {
                        for f in 0..=255u8 {
                            let s = Segment { ttl, ..seg(f, hook) };
                            if !only_counts(state, side, &s) {
                                continue;
                            }
                            accepted += 1;
                            assert_eq!(notable_reasons(Some(state), side, &s), 0, "{f:#04x}");
                            assert!(!Aggregates::concerns(Some(state), side, &s), "{f:#04x}");
                            assert_eq!(drop_candidate(0xff, &s), 0, "{f:#04x}");
                        }
                    }
                }
            }
        }
        assert!(accepted > 0);
        // The handshake's last ACK is the aggregates' concern: not for the fast path.
        let ack = seg(ACK, HOOK_INGRESS);
        assert!(!only_counts(&states[2], Side::Hi, &ack));
        assert!(only_counts(&states[3], Side::Hi, &ack));
        // A TTL change and a side that sent a RST are notable.
        assert!(!only_counts(&states[3], Side::Hi, &Segment { ttl: 63, ..ack }));
        assert!(!only_counts(&states[4], Side::Lo, &seg(ACK, HOOK_EGRESS)));
    }
}
