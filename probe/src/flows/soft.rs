//! The kernel program's per-packet work, in userspace: the same probe-common functions
//! (`notable_reasons`, `may_take_slot`, `FlowEntry::apply`, the SYN budget) over the same kind of
//! table — a direct-mapped array of slots, one partition, bounded — so offline replay and the
//! detector tests judge exactly what the kernel would have counted, and a flood costs a replay no
//! more memory than it costs the agent.

use std::sync::Arc;

use probe_common::{
    aggregate::{Aggregates, service_idle},
    counters::{HOOKS, HookCounters},
    event::{EVENT_FRAME_MAX, EVENT_PAYLOAD_MAX, EVENT_TRACKED, PacketEvent},
    flow::{Endpoints, FAMILY_NONE, FlowEntry, FlowKey, NOTABLE_NEW_CONNECTION, Segment, budgeted_syn, may_take_slot, notable_reasons},
    maps::DEFAULT_FLOW_CAPACITY,
};

use super::{FlowDelta, Leaving, aggregate::AggregateSnapshot};

/// The table's size and rules, as `run`'s settings give them (times in ns, the replay clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSettings {
    /// Slots; rounded up to a power of two as the kernel rounds a partition.
    pub capacity: u32,
    /// A flow quiet this long gives up its slot.
    pub idle_ns: u64,
    /// Inbound SYNs a second tracked in the table (0: all), as one CPU of the agent.
    pub syn_track_rate: u64,
}

impl Default for TableSettings {
    /// The agent's defaults, except that every SYN is tracked: detector tests script a few flows
    /// each, and want each one held.
    fn default() -> Self {
        TableSettings { capacity: DEFAULT_FLOW_CAPACITY, idle_ns: 120_000_000_000, syn_track_rate: 0 }
    }
}

pub struct SoftTable {
    slots: Vec<FlowEntry>,
    /// Each slot as of the last [`SoftTable::take_deltas`].
    shadow: Vec<FlowEntry>,
    /// Slots written since the last take, each once (`dirty` marks them).
    changed: Vec<u32>,
    dirty: Vec<bool>,
    /// Flows that left their slot to another since the last [`SoftTable::expire`] (or to a new
    /// connection on the same endpoints), and why.
    evicted: Vec<(FlowEntry, Leaving)>,
    /// The last changes of flows a new connection on their endpoints ended since the last take.
    restarted: Vec<FlowDelta>,
    mask: u32,
    settings: TableSettings,
    pub counters: [HookCounters; HOOKS as usize],
    /// The flood-proof aggregates, one "CPU"'s worth.
    aggregates: Box<Aggregates>,
}

impl Default for SoftTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftTable {
    pub fn new() -> Self {
        Self::with(TableSettings::default())
    }

    pub fn with(settings: TableSettings) -> Self {
        let slots = settings.capacity.max(64).next_power_of_two();
        let mut counters = [HookCounters::default(); HOOKS as usize];
        for c in &mut counters {
            // The SYN budget's second, in this table's clock (the kernel's is in jiffies).
            c.syn_window_ticks = 1_000_000_000;
            c.flow_idle_ticks = settings.idle_ns;
        }
        SoftTable {
            slots: vec![FlowEntry::default(); slots as usize],
            shadow: vec![FlowEntry::default(); slots as usize],
            changed: Vec::new(),
            dirty: vec![false; slots as usize],
            evicted: Vec::new(),
            restarted: Vec::new(),
            mask: slots - 1,
            settings,
            counters,
            aggregates: Box::default(),
        }
    }

    /// The aggregates so far (timestamps are already ns).
    pub fn aggregates(&self) -> AggregateSnapshot {
        AggregateSnapshot::merge(std::iter::once(&*self.aggregates), |t| t)
    }

    /// The slot `key` may use for `seg`, as the kernel's `flow_slot` decides (a slot it may take is
    /// handed back empty, its old flow kept for the report); `None` when another flow keeps it.
    fn slot_for(&mut self, key: &FlowKey, seg: &Segment) -> Option<usize> {
        let i = key.slot(0, self.mask) as usize;
        let c = &mut self.counters[(seg.hook & 1) as usize];
        let entry = &mut self.slots[i];
        if entry.holds(key) {
            return Some(i);
        }
        if !may_take_slot(entry, seg, self.settings.idle_ns) {
            c.flow_insert_failures += 1;
            return None;
        }
        c.flow_inserts += 1;
        if entry.key.family != FAMILY_NONE {
            let leaving = if seg.now.saturating_sub(entry.last_seen) > self.settings.idle_ns { Leaving::Idle } else { Leaving::Evicted };
            self.evicted.push((*entry, leaving));
        }
        *entry = FlowEntry::default();
        Some(i)
    }

    /// Count one TCP segment as the kernel would; returns the ring-buffer event if it is notable.
    /// (No event rate limit: offline there is no line rate to protect.)
    pub fn segment(&mut self, ep: &Endpoints, seg: &Segment, window: u16, payload: &[u8]) -> Option<PacketEvent> {
        let hook = (seg.hook & 1) as usize;
        self.counters[hook].count_tcp(seg.flags);
        let (key, side) = FlowKey::canonical(ep);
        let slot = if budgeted_syn(seg) && !self.counters[hook].take_syn_budget(seg.now, self.settings.syn_track_rate) {
            None
        } else {
            self.slot_for(&key, seg)
        };
        let history = slot.map(|i| &self.slots[i]).filter(|e| e.key.family != FAMILY_NONE);
        let reasons = notable_reasons(history, side, seg);
        if Aggregates::concerns(history, side, seg) {
            self.aggregates.count(history, side, ep, seg, reasons, service_idle(self.settings.idle_ns));
        }
        let event = (reasons != 0).then(|| {
            self.counters[hook].events += 1;
            let mut ev = PacketEvent {
                ts_ns: seg.now,
                flow_before: history.copied().unwrap_or_default(),
                src: ep.src,
                dst: ep.dst,
                seq: seg.seq,
                ack: seg.ack,
                payload_len: seg.payload_len,
                ip_len: seg.ip_len,
                sport: ep.sport,
                dport: ep.dport,
                window,
                family: ep.family,
                hook: seg.hook,
                flags: seg.flags,
                ttl: seg.ttl,
                reasons,
                tracked: if slot.is_some() { EVENT_TRACKED } else { 0 },
                captured_len: 0,
                cpu: 0,
                action: 0,
                _pad: 0,
                ip_id: seg.ip_id,
                _pad3: 0,
                payload: [0; EVENT_PAYLOAD_MAX],
                frame_len: 0,
                frame_captured: 0,
                _pad2: [0; 2],
                frame: [0; EVENT_FRAME_MAX],
            };
            let n = payload.len().min(EVENT_PAYLOAD_MAX).min(seg.payload_len as usize);
            ev.payload[..n].copy_from_slice(&payload[..n]);
            ev.captured_len = n as u8;
            ev
        });
        if let Some(i) = slot {
            let entry = &mut self.slots[i];
            // A new connection on a closed flow's endpoints (see `starts_anew`): the old flow's
            // last changes go to the detectors, and the flow to the report, before the slot
            // starts afresh — what the agent learns from this SYN's event.
            let anew = reasons & NOTABLE_NEW_CONNECTION != 0;
            if anew {
                self.counters[hook].flow_inserts += 1;
                let same = self.shadow[i].key == entry.key && self.shadow[i].first_seen == entry.first_seen;
                let before = if same { self.shadow[i] } else { FlowEntry::default() };
                self.restarted.push(FlowDelta { iface: Arc::from(""), now: *entry, before });
                self.evicted.push((*entry, Leaving::Idle));
                self.shadow[i] = FlowEntry::default();
            }
            if entry.key.family == FAMILY_NONE || anew {
                entry.start(&key, side, seg.now);
            }
            entry.apply(side, seg);
            if !self.dirty[i] {
                self.dirty[i] = true;
                self.changed.push(i as u32);
            }
        }
        event
    }

    /// Flows changed since the last call, like the kernel poller's scan, oldest first (those a new
    /// connection on their endpoints ended, first of all).
    pub fn take_deltas(&mut self, iface: &Arc<str>) -> Vec<FlowDelta> {
        let mut out: Vec<FlowDelta> = Vec::with_capacity(self.changed.len() + self.restarted.len());
        for mut d in self.restarted.drain(..) {
            d.iface = iface.clone();
            out.push(d);
        }
        for i in self.changed.drain(..).map(|i| i as usize) {
            self.dirty[i] = false;
            let now = self.slots[i];
            if now.key.family == FAMILY_NONE {
                continue;
            }
            // A slot taken over since the last take holds a new flow (another key, or a new
            // connection on the same endpoints): nothing of it came before.
            let same = self.shadow[i].key == now.key && self.shadow[i].first_seen == now.first_seen;
            let before = if same { self.shadow[i] } else { FlowEntry::default() };
            self.shadow[i] = now;
            out.push(FlowDelta { iface: iface.clone(), now, before });
        }
        out.sort_by_key(|d| (d.now.first_seen, d.now.key.slot(0, u32::MAX)));
        out
    }

    pub fn flows(&self) -> impl Iterator<Item = &FlowEntry> {
        self.slots.iter().filter(|e| e.key.family != FAMILY_NONE)
    }

    /// Forget flows idle since before `cutoff_ns` and return them with those that lost their slot
    /// since the last call: every flow leaves the table through here or [`SoftTable::flows`].
    pub fn expire(&mut self, cutoff_ns: u64) -> Vec<(FlowEntry, Leaving)> {
        let mut out = std::mem::take(&mut self.evicted);
        for (i, e) in self.slots.iter_mut().enumerate() {
            if e.key.family != FAMILY_NONE && e.last_seen < cutoff_ns {
                out.push((*e, Leaving::Idle));
                *e = FlowEntry::default();
                self.shadow[i] = FlowEntry::default();
            }
        }
        out
    }

    /// Flows held now.
    pub fn len(&self) -> usize {
        self.flows().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use probe_common::flags::{ACK, SYN};
    use probe_common::flow::FAMILY_V4;

    use super::*;

    fn ep(i: u32) -> Endpoints {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&(0x0b00_0000 + i).to_be_bytes());
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 0, 1]);
        Endpoints { src, dst, sport: 40000, dport: 80, family: FAMILY_V4 }
    }

    fn seg(flags: u8, hook: u8, now: u64) -> Segment {
        Segment { flags, ttl: 64, ip_id: 0, hook, seq: 1, ack: 0, payload_len: 0, ip_len: 40, now }
    }

    /// A spoofed flood larger than the table fills it and no more, never pushes out the real
    /// connection that held a slot, and past the SYN budget counts SYNs without slots at all.
    #[test]
    fn a_flood_is_bounded_by_the_table_and_the_syn_budget() {
        let settings = TableSettings { capacity: 1024, idle_ns: 120_000_000_000, syn_track_rate: 100 };
        let mut t = SoftTable::with(settings);
        // A real connection: its SYN, our SYN/ACK, its ACK.
        let real = ep(1_000_000);
        t.segment(&real, &seg(SYN, 0, 1), 0, &[]);
        let back = Endpoints { src: real.dst, dst: real.src, sport: real.dport, dport: real.sport, family: FAMILY_V4 };
        t.segment(&back, &seg(SYN | ACK, 1, 2), 0, &[]);
        t.segment(&real, &seg(ACK, 0, 3), 0, &[]);
        for i in 0..100_000 {
            t.segment(&ep(i), &seg(SYN, 0, 10 + i as u64), 0, &[]);
        }
        assert!(t.len() <= 1024);
        assert_eq!(t.counters[0].syns_untracked, 100_000 - 99, "one second's budget, less the real SYN");
        assert!(t.flows().any(|e| e.holds(&FlowKey::canonical(&real).0)), "the real connection keeps its slot");
        let deltas = t.take_deltas(&Arc::from("t"));
        assert_eq!(deltas.len(), t.len());
        assert!(deltas.windows(2).all(|w| w[0].now.first_seen <= w[1].now.first_seen));
    }

    /// A slot taken over hands its old flow to the report, and an idle flow leaves at expiry;
    /// a flow that found its slot held by a live one was never in the table.
    #[test]
    fn flows_leave_by_eviction_or_idleness_and_are_returned() {
        let mut t = SoftTable::with(TableSettings { capacity: 64, idle_ns: 1000, syn_track_rate: 0 });
        for i in 0..500 {
            t.segment(&ep(i), &seg(SYN, 0, 10 * i as u64), 0, &[]);
        }
        let evicted = t.evicted.len();
        let gone = t.expire(u64::MAX);
        let c = &t.counters[0];
        assert!(evicted > 0 && c.flow_insert_failures > 0);
        assert_eq!(gone.len() as u64, c.flow_inserts, "every flow that had a slot comes back once");
        assert_eq!(c.flow_inserts + c.flow_insert_failures, 500);
        assert!(t.is_empty());
    }
}
