//! From flow-table slots to flows: which flows changed since the last poll, each merged across the
//! per-CPU partitions it occupies (ingress and egress of one connection may run on different CPUs).
//! [`soft`] is the same per-packet logic over the same kind of table, for replay and the detector
//! tests;
//! [`aggregate`] merges the flood-proof aggregates that need no flow slot.

pub mod aggregate;
pub mod soft;

pub use soft::{SoftTable, TableSettings};

use std::sync::Arc;

use probe_common::flow::{FAMILY_NONE, FlowEntry, FlowKey, Side, SideStats, letter_code, letters, linger};

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
    merge_letters(into, other, other_is_older);
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

/// The history letters of two partitions' copies as one log. Each partition knows the order of
/// its own letters only (ingress and egress of one connection often run on different CPUs), so the
/// two logs are interleaved keeping each one's order, taking at each step the letter that comes
/// earlier in a connection's life (SYN, SYN/ACK, ACK or data, FIN, RST), the older copy's first
/// on a tie. Exact when one partition held the whole flow; otherwise TCP's usual order.
fn merge_letters(into: &mut FlowEntry, other: &FlowEntry, other_is_older: bool) {
    let (first, second) = if other_is_older { (*other, *into) } else { (*into, *other) };
    let a: Vec<(Side, u8)> = letters(&first).collect();
    let b: Vec<(Side, u8)> = letters(&second).collect();
    let rank = |class: u8| [0, 1, 2, 2, 3, 4][class as usize % 6];
    let mut out = FlowEntry::default();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j == b.len() || (i < a.len() && rank(a[i].1) <= rank(b[j].1));
        let (side, class) = if take_a { a[i] } else { b[j] };
        if take_a {
            i += 1
        } else {
            j += 1
        }
        let code = letter_code(class, side);
        if out.letters_seen & (1 << code) == 0 {
            out.log_letter(code);
        }
    }
    (into.letters, into.letters_seen, into.letter_count) = (out.letters, out.letters_seen, out.letter_count);
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

/// Why a flow's session record is written now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaving {
    /// Quiet past the idle time, or over (a RST, a FIN from each side) and quiet past the linger.
    Idle,
    /// Its slot went to another flow.
    Evicted,
    /// The agent stops, or the capture ended.
    Shutdown,
    /// Still open; a long connection's record so far.
    Interval,
}

/// Our copy of the table as of the last poll. A flow's slots are found with the kernel's own
/// formula (one candidate slot per CPU partition), so no index is kept beside the copy.
pub struct FlowTracker {
    shadow: Vec<FlowEntry>,
    slots_per_cpu: u32,
    /// Session records, when they are wanted: which flows left since the last take, and per slot
    /// whether its flow's record was written and when its last interval record was.
    sessions: Option<Sessions>,
}

struct Sessions {
    /// In the table's clock; 0: no interval records.
    interval: u64,
    done: Vec<bool>,
    interim: Vec<u64>,
    ended: Vec<(FlowEntry, Leaving)>,
}

/// Changed flows are handed on this many at a time: a flood changes every slot between two polls,
/// and holding all their deltas at once would cost twice the table again.
pub const DELTA_CHUNK: usize = 4096;

impl FlowTracker {
    pub fn new(slots: usize, slots_per_cpu: u32) -> Self {
        FlowTracker { shadow: vec![FlowEntry::default(); slots], slots_per_cpu: slots_per_cpu.max(1), sessions: None }
    }

    /// A new connection started on the endpoints of `old` (a SYN's event, whose history before it
    /// is `old` merged over the partitions, in the table's clock): `old`'s changes since the last
    /// scan as a delta for the detectors, and its record. The table already holds the new
    /// connection in its place; the next scan sees that as new. Nothing when a scan got there
    /// first (it handed `old` as it was then).
    pub fn restarted(&mut self, iface: &Arc<str>, old: &FlowEntry) -> Option<FlowDelta> {
        let key = old.key;
        let known = self.merged(&key, |s| self.shadow[s]);
        if known.key.family != FAMILY_NONE && known.first_seen > old.first_seen {
            return None;
        }
        let before = if known.key.family != FAMILY_NONE && known.first_seen == old.first_seen { known } else { FlowEntry::default() };
        let slots: Vec<usize> = self.slots_of(&key).filter(|&s| self.shadow[s].key == key).collect();
        let done = slots.iter().any(|&s| self.sessions.as_ref().is_some_and(|x| x.done[s]));
        for s in slots {
            self.shadow[s] = FlowEntry::default();
            if let Some(x) = &mut self.sessions {
                x.done[s] = false;
            }
        }
        if let Some(x) = &mut self.sessions
            && !done
        {
            x.ended.push((*old, Leaving::Idle));
        }
        Some(FlowDelta { iface: iface.clone(), now: *old, before })
    }

    /// Hand out the flows that end (see [`FlowTracker::take_ended`]); `interval` in the table's
    /// clock (0: none) is how often a long connection's record so far is written too.
    pub fn with_sessions(mut self, interval: u64) -> Self {
        let n = self.shadow.len();
        self.sessions = Some(Sessions { interval, done: vec![false; n], interim: vec![0; n], ended: Vec::new() });
        self
    }

    /// The flows that ended (or are due an interval record) since the last take, merged over
    /// their partitions, in the table's clock.
    pub fn take_ended(&mut self) -> Vec<(FlowEntry, Leaving)> {
        self.sessions.as_mut().map(|s| std::mem::take(&mut s.ended)).unwrap_or_default()
    }

    /// Every flow whose record was not written yet, as if it ended now (shutdown).
    pub fn remaining(&mut self) -> Vec<(FlowEntry, Leaving)> {
        let mut out = self.take_ended();
        for i in 0..self.shadow.len() {
            if self.first_partition(i) && self.sessions.as_ref().is_some_and(|s| !s.done[i]) {
                out.push((self.finish(i), Leaving::Shutdown));
            }
        }
        out
    }

    /// Whether slot `i` holds a flow and is the first of the partitions that hold it.
    fn first_partition(&self, i: usize) -> bool {
        let e = &self.shadow[i];
        e.key.family != FAMILY_NONE && self.slots_of(&e.key).find(|&s| s == i || self.shadow[s].key == e.key) == Some(i)
    }

    /// The flow in slot `i` merged over its partitions, marked as written.
    fn finish(&mut self, i: usize) -> FlowEntry {
        let key = self.shadow[i].key;
        let merged = self.merged(&key, |s| self.shadow[s]);
        let slots: Vec<usize> = self.slots_of(&key).filter(|&s| self.shadow[s].key == key).collect();
        if let Some(sessions) = &mut self.sessions {
            for s in slots {
                sessions.done[s] = true;
            }
        }
        merged
    }

    /// Slot `i` is about to hold `next`: a different flow (or the same endpoints started afresh)
    /// means the one there left, by idleness or eviction.
    fn replacing(&mut self, i: usize, next: &FlowEntry, now: u64, idle: u64) {
        let Some(sessions) = &self.sessions else { return };
        let old = &self.shadow[i];
        if old.key.family == FAMILY_NONE || (old.key == next.key && old.first_seen == next.first_seen) {
            return;
        }
        if !sessions.done[i] {
            let leaving = if now.saturating_sub(old.last_seen) > idle { Leaving::Idle } else { Leaving::Evicted };
            let gone = self.finish(i);
            if let Some(s) = &mut self.sessions {
                s.ended.push((gone, leaving));
            }
        }
        if let Some(s) = &mut self.sessions {
            (s.done[i], s.interim[i]) = (false, next.first_seen);
        }
    }

    /// After a scan: flows over and quiet for the linger, or idle, have ended; long ones may be
    /// due an interval record.
    fn sweep(&mut self, now: u64, idle: u64) {
        let Some(interval) = self.sessions.as_ref().map(|s| s.interval) else { return };
        for i in 0..self.shadow.len() {
            let e = &self.shadow[i];
            let due_interval =
                interval > 0 && now.saturating_sub(self.sessions.as_ref().map_or(0, |s| s.interim[i]).max(e.first_seen)) >= interval;
            let quiet = now.saturating_sub(e.last_seen);
            if self.sessions.as_ref().is_some_and(|s| s.done[i]) || (quiet <= linger(idle) && !due_interval) || !self.first_partition(i) {
                continue;
            }
            let merged = self.merged(&e.key, |s| self.shadow[s]);
            let (a, b) = (&merged.sides[0], &merged.sides[1]);
            let over = a.rst + b.rst > 0 || (a.fin > 0 && b.fin > 0);
            let quiet = now.saturating_sub(merged.last_seen);
            if (over && quiet > linger(idle)) || quiet > idle {
                let gone = self.finish(i);
                if let Some(s) = &mut self.sessions {
                    s.ended.push((gone, Leaving::Idle));
                }
            } else if due_interval && let Some(s) = &mut self.sessions {
                s.interim[i] = now;
                s.ended.push((merged, Leaving::Interval));
            }
        }
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
            self.replacing(i, &e, now, idle);
            // A new connection on the same endpoints restarted the slot: its old counts are
            // another connection's, not this one's past.
            if self.shadow[i].key == e.key && self.shadow[i].first_seen != e.first_seen {
                self.shadow[i] = FlowEntry::default();
            }
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
                    if slot != i {
                        self.replacing(slot, &current, now, idle);
                    }
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
        self.sweep(now, idle);
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

    /// Ingress on one CPU, egress on another: each partition holds one side's letters in order,
    /// and the merged history interleaves them in a connection's order of life.
    #[test]
    fn letters_of_two_partitions_merge_in_a_connections_order() {
        use probe_common::flags::{ACK, FIN, PSH, SYN};
        let ep = Endpoints { src: [1; 16], dst: [2; 16], sport: 1, dport: 2, family: FAMILY_V4 };
        let (key, client) = FlowKey::canonical(&ep);
        let server = client.other();
        let part = |side: Side, first_seen: u64, script: &[(u8, u32)]| {
            let mut e = FlowEntry::default();
            e.start(&key, side, first_seen);
            for (f, len) in script {
                e.apply(side, &Segment { flags: *f, ttl: 64, payload_len: *len, now: first_seen, ..Default::default() });
            }
            e
        };
        let mut a = part(client, 10, &[(SYN, 0), (ACK, 0), (ACK | PSH, 5), (FIN | ACK, 0)]);
        let b = part(server, 11, &[(SYN | ACK, 0), (ACK, 0), (ACK | PSH, 9), (FIN | ACK, 0)]);
        merge(&mut a, &b);
        let got: Vec<(Side, u8)> = letters(&a).collect();
        let want = [(client, 0), (server, 1), (client, 2), (client, 3), (server, 2), (server, 3), (client, 4), (server, 4)];
        assert_eq!(got, want, "ShADadFf");
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
