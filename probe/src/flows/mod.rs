//! From flow-table slots to flows: which flows changed since the last poll, each merged across the
//! per-CPU partitions it occupies (ingress and egress of one connection may run on different CPUs).
//! [`soft`] is the same per-packet logic over the same kind of table, for replay and the detector
//! tests;
//! [`aggregate`] merges the flood-proof aggregates that need no flow slot.

pub mod aggregate;
pub mod soft;

pub use soft::{SoftTable, TableSettings};

use std::sync::Arc;

use probe_common::flow::{FAMILY_NONE, FlowEntry, FlowKey, SideStats};

use crate::kernel::flowtable::FlowTable;

/// One flow's state now and at the previous poll (`before` is all zero for a flow new since then).
#[derive(Debug, Clone)]
pub struct FlowDelta {
    pub iface: Arc<str>,
    pub now: FlowEntry,
    pub before: FlowEntry,
}

impl FlowDelta {
    pub fn is_new(&self) -> bool {
        self.before.key.family == FAMILY_NONE
    }
}

/// Fold `other` (another partition's copy of the same flow) into `into`.
pub fn merge(into: &mut FlowEntry, other: &FlowEntry) {
    if into.key.family == FAMILY_NONE {
        *into = *other;
        return;
    }
    let other_is_older = other.first_seen < into.first_seen;
    if other_is_older {
        into.first_seen = other.first_seen;
        into.initiator = other.initiator;
    }
    into.last_seen = into.last_seen.max(other.last_seen);
    into.hooks_seen |= other.hooks_seen;
    into.proven |= other.proven;
    // A side seen in both partitions has two runs of IP-IDs, each of part of its packets: the
    // shorter is what both show.
    for i in 0..2 {
        if other.sides[i].packets > 0 {
            let run = other.ip_id_runs[i];
            into.ip_id_runs[i] = if into.sides[i].packets > 0 { into.ip_id_runs[i].min(run) } else { run };
        }
    }
    for (a, b) in into.sides.iter_mut().zip(other.sides.iter()) {
        merge_side(a, b, other_is_older);
    }
}

fn merge_side(a: &mut SideStats, b: &SideStats, b_is_older: bool) {
    if b.packets == 0 {
        return;
    }
    if a.packets == 0 || b_is_older {
        a.first_ttl = b.first_ttl;
    }
    if a.syn + a.syn_ack == 0 || (b_is_older && b.syn + b.syn_ack > 0) {
        a.syn_seq = b.syn_seq;
    }
    if b.last_rst_at > a.last_rst_at {
        a.last_rst_at = b.last_rst_at;
        a.last_rst_seq = b.last_rst_seq;
        a.last_rst_ack = b.last_rst_ack;
        a.last_rst_ttl = b.last_rst_ttl;
    }
    if b.last_ack != 0 && (a.last_ack == 0 || !b_is_older) {
        a.last_ack = b.last_ack;
    }
    if a.packets == 0 || !b_is_older {
        a.last_ip_id = b.last_ip_id;
    }
    for (x, y) in a.combos.iter_mut().zip(b.combos.iter()) {
        *x |= y;
    }
    a.bytes += b.bytes;
    a.packets += b.packets;
    a.syn += b.syn;
    a.syn_ack += b.syn_ack;
    a.pure_ack += b.pure_ack;
    a.data += b.data;
    a.fin += b.fin;
    a.rst += b.rst;
    a.rst_ack += b.rst_ack;
    a.rst_payload += b.rst_payload;
    a.invalid += b.invalid;
    a.data_after_rst += b.data_after_rst;
}

/// Our copy of the table as of the last poll. A flow's slots are found with the kernel's own
/// formula (one candidate slot per CPU partition), so no index is kept beside the copy.
pub struct FlowTracker {
    shadow: Vec<FlowEntry>,
    slots_per_cpu: u32,
}

/// Changed flows are handed on this many at a time: a flood changes every slot between two polls,
/// and holding all their deltas at once would cost twice the table again.
pub const DELTA_CHUNK: usize = 4096;

impl FlowTracker {
    pub fn new(slots: usize, slots_per_cpu: u32) -> Self {
        FlowTracker { shadow: vec![FlowEntry::default(); slots], slots_per_cpu: slots_per_cpu.max(1) }
    }

    /// The slots `key` can occupy, one per partition.
    fn slots_of(&self, key: &FlowKey) -> impl Iterator<Item = usize> + use<> {
        let (key, mask) = (*key, self.slots_per_cpu - 1);
        (0..self.shadow.len() as u32 / self.slots_per_cpu).map(move |cpu| key.slot(cpu, mask) as usize)
    }

    /// `key`'s flow merged over the partitions of `entries` that hold it.
    fn merged(&self, key: &FlowKey, entries: impl Fn(usize) -> FlowEntry) -> FlowEntry {
        let mut out = FlowEntry::default();
        for slot in self.slots_of(key) {
            let e = entries(slot);
            if e.key.family != FAMILY_NONE && e.key == *key {
                merge(&mut out, &e);
            }
        }
        out
    }

    /// Compare the table with our copy and hand the flows that changed to `sink`, in chunks, in the
    /// table's own clock (jiffies). Returns the flows live within `idle` of `now` (same clock).
    pub fn scan(&mut self, table: &FlowTable, iface: &Arc<str>, now: u64, idle: u64, mut sink: impl FnMut(&mut [FlowDelta])) -> u64 {
        let mut chunk = Vec::with_capacity(DELTA_CHUNK.min(self.shadow.len()));
        for i in 0..table.slots().min(self.shadow.len()) {
            // Every packet moves its slot's stamp (`last_seen` and the two packet counts):
            // comparing three words with our copy finds the changed slots without reading whole
            // entries.
            let shadow = &self.shadow[i];
            if table.stamp(i) == (shadow.last_seen, shadow.sides[0].packets, shadow.sides[1].packets) {
                continue;
            }
            let e = table.read(i);
            if e.key.family == FAMILY_NONE || e.last_seen == 0 {
                self.shadow[i] = e;
                continue;
            }
            // The flow before this poll is our copy of all its partitions; then every partition is
            // brought up to date at once, so a flow in several partitions is one delta.
            let before = self.merged(&e.key, |s| self.shadow[s]);
            for slot in self.slots_of(&e.key) {
                let current = if slot == i { e } else { table.read(slot) };
                if current.key == e.key || slot == i {
                    self.shadow[slot] = current;
                }
            }
            let now_entry = self.merged(&e.key, |s| self.shadow[s]);
            chunk.push(FlowDelta { iface: iface.clone(), now: now_entry, before });
            if chunk.len() == DELTA_CHUNK {
                sink(&mut chunk);
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            sink(&mut chunk);
        }
        // Live flows, each counted at the first partition that holds it live.
        let live = |e: &FlowEntry| e.key.family != FAMILY_NONE && now.saturating_sub(e.last_seen) <= idle;
        let mut live_flows = 0;
        for (i, e) in self.shadow.iter().enumerate() {
            if live(e) && self.slots_of(&e.key).find(|&s| s == i || (self.shadow[s].key == e.key && live(&self.shadow[s]))) == Some(i) {
                live_flows += 1;
            }
        }
        live_flows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::flow::{Endpoints, FAMILY_V4, Segment, Side};

    fn entry(first_seen: u64, side: Side, flags: u8, packets: u32) -> FlowEntry {
        let ep = Endpoints { src: [1; 16], dst: [2; 16], sport: 1, dport: 2, family: FAMILY_V4 };
        let (key, _) = FlowKey::canonical(&ep);
        let mut e = FlowEntry::default();
        e.start(&key, side, first_seen);
        for n in 0..packets {
            e.apply(side, &Segment { flags, ttl: 64, now: first_seen + n as u64, ..Default::default() });
        }
        e
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_oldest_start() {
        let mut a = entry(100, Side::Lo, 0x02, 1);
        let b = entry(50, Side::Hi, 0x12, 2);
        merge(&mut a, &b);
        assert_eq!((a.first_seen, a.initiator), (50, Side::Hi as u8));
        assert_eq!((a.sides[0].syn, a.sides[1].syn_ack, a.sides[1].packets), (1, 2, 2));
        assert!(a.saw_combo(Side::Lo, 0x02) && a.saw_combo(Side::Hi, 0x12));
    }
}
