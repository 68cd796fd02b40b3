//! From flow-table slots to flows: which flows changed since the last poll, each merged across the
//! per-CPU partitions it occupies (ingress and egress of one connection may run on different CPUs).
//! [`soft`] is the same per-packet logic over a hash map, for replay and the detector tests;
//! [`aggregate`] merges the flood-proof aggregates that need no flow slot.

pub mod aggregate;
pub mod soft;

pub use soft::SoftTable;

use std::{collections::HashMap, sync::Arc};

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

/// Our copy of the table as of the last poll, and which slots hold each flow.
pub struct FlowTracker {
    shadow: Vec<FlowEntry>,
    slots_of: HashMap<FlowKey, Vec<u32>>,
}

/// What one scan found.
pub struct Scan {
    pub deltas: Vec<FlowDelta>,
    /// Flows that saw a packet within the idle timeout (a flow in two partitions counts once).
    pub live_flows: u64,
}

fn same_flow(a: &FlowEntry, b: &FlowEntry) -> bool {
    a.key == b.key && a.first_seen == b.first_seen
}

impl FlowTracker {
    pub fn new(slots: usize) -> Self {
        FlowTracker { shadow: vec![FlowEntry::default(); slots], slots_of: HashMap::new() }
    }

    fn merged(&self, key: &FlowKey) -> FlowEntry {
        let mut out = FlowEntry::default();
        for &slot in self.slots_of.get(key).into_iter().flatten() {
            merge(&mut out, &self.shadow[slot as usize]);
        }
        out
    }

    /// Compare the table with our copy; return the flows that changed, in the table's own clock
    /// (jiffies). `now` and `idle`, in the same clock, decide which flows count as live.
    pub fn scan(&mut self, table: &FlowTable, iface: &Arc<str>, now: u64, idle: u64) -> Scan {
        // Every packet moves its slot's `last_seen`, so comparing that one word with our copy finds
        // the changed slots without reading whole entries: a quiet table costs one cache line per
        // slot. Only changed slots are copied in full.
        let mut changed = Vec::new();
        for i in 0..table.slots().min(self.shadow.len()) {
            let last = table.last_seen(i);
            if last != self.shadow[i].last_seen {
                let e = table.read(i);
                if e.key.family != FAMILY_NONE && e.last_seen != 0 {
                    changed.push((i as u32, e));
                }
            }
        }
        // A flow may sit in several partitions (one per CPU that saw it). Its state before this poll
        // is the merge of our copies of all its slots, taken before any of them is updated.
        let mut seen = std::collections::HashSet::with_capacity(changed.len());
        let touched: Vec<FlowKey> = changed.iter().filter(|(_, e)| seen.insert(e.key)).map(|(_, e)| e.key).collect();
        let before: Vec<FlowEntry> = touched.iter().map(|k| self.merged(k)).collect();
        // Update our copy and the key → slots index. A slot taken over by another flow (the old one
        // went idle) leaves the old key's list; when that list empties the old flow is gone.
        for (slot, e) in changed {
            let old = self.shadow[slot as usize];
            if old.key.family != FAMILY_NONE
                && !same_flow(&old, &e)
                && let Some(v) = self.slots_of.get_mut(&old.key)
            {
                v.retain(|&s| s != slot);
                if v.is_empty() {
                    self.slots_of.remove(&old.key);
                }
            }
            let v = self.slots_of.entry(e.key).or_default();
            if !v.contains(&slot) {
                v.push(slot);
            }
            self.shadow[slot as usize] = e;
        }
        let live = |slot: &u32| now.saturating_sub(self.shadow[*slot as usize].last_seen) <= idle;
        let live_flows = self.slots_of.values().filter(|slots| slots.iter().any(live)).count() as u64;
        let deltas = touched
            .into_iter()
            .zip(before)
            .map(|(key, before)| FlowDelta { iface: iface.clone(), now: self.merged(&key), before })
            .collect();
        Scan { deltas, live_flows }
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
