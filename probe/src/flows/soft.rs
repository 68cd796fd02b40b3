//! The kernel program's per-packet work, in userspace: the same probe-common functions
//! (`notable_reasons`, `FlowEntry::apply`) over a hash map instead of the kernel's slots. Offline
//! replay and the detector tests run packets through it, so they judge exactly what the kernel
//! would have counted.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use probe_common::{
    aggregate::Aggregates,
    counters::{HOOKS, HookCounters},
    event::{EVENT_FRAME_MAX, EVENT_PAYLOAD_MAX, EVENT_TRACKED, PacketEvent},
    flow::{Endpoints, FlowEntry, FlowKey, Segment, notable_reasons},
};

use super::{FlowDelta, aggregate::AggregateSnapshot};

/// How long a service's aggregate bucket stays its own without inbound SYNs (the kernel uses an
/// eighth of the flow idle time: 15 s by default).
const SERVICE_IDLE_NS: u64 = 15_000_000_000;

#[derive(Default)]
pub struct SoftTable {
    flows: HashMap<FlowKey, FlowEntry>,
    at_last_take: HashMap<FlowKey, FlowEntry>,
    changed: HashSet<FlowKey>,
    pub counters: [HookCounters; HOOKS as usize],
    /// The flood-proof aggregates, one "CPU"'s worth.
    aggregates: Box<Aggregates>,
}

impl SoftTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The aggregates so far (timestamps are already ns).
    pub fn aggregates(&self) -> AggregateSnapshot {
        AggregateSnapshot::merge(std::iter::once(&*self.aggregates), |t| t)
    }

    /// Count one TCP segment as the kernel would; returns the ring-buffer event if it is notable.
    /// (No rate limit: offline there is no line rate to protect.)
    pub fn segment(&mut self, ep: &Endpoints, seg: &Segment, window: u16, payload: &[u8]) -> Option<PacketEvent> {
        let c = &mut self.counters[(seg.hook & 1) as usize];
        c.count_tcp(seg.flags);
        let (key, side) = FlowKey::canonical(ep);
        let is_new = !self.flows.contains_key(&key);
        if is_new {
            c.flow_inserts += 1;
        }
        let entry = self.flows.entry(key).or_default();
        let history = (!is_new).then_some(&*entry);
        let reasons = notable_reasons(history, side, seg);
        if Aggregates::concerns(history, side, seg) {
            self.aggregates.count(history, side, ep, seg, reasons, SERVICE_IDLE_NS);
        }
        let event = (reasons != 0).then(|| {
            c.events += 1;
            let mut ev = PacketEvent {
                ts_ns: seg.now,
                flow_before: if is_new { FlowEntry::default() } else { *entry },
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
                tracked: EVENT_TRACKED,
                captured_len: 0,
                cpu: 0,
                action: 0,
                _pad: [0; 4],
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
        if is_new {
            entry.start(&key, side, seg.now);
        }
        entry.apply(side, seg);
        self.changed.insert(key);
        event
    }

    /// Flows changed since the last call, like the kernel poller's scan.
    pub fn take_deltas(&mut self, iface: &Arc<str>) -> Vec<FlowDelta> {
        let mut keys: Vec<FlowKey> = self.changed.drain().collect();
        keys.sort_by_key(|k| self.flows[k].first_seen);
        keys.into_iter()
            .map(|k| {
                let now = self.flows[&k];
                let before = self.at_last_take.insert(k, now).unwrap_or_default();
                FlowDelta { iface: iface.clone(), now, before }
            })
            .collect()
    }

    pub fn flows(&self) -> impl Iterator<Item = &FlowEntry> {
        self.flows.values()
    }

    /// Forget flows idle since before `cutoff_ns` and return them (bounded memory on long captures).
    pub fn expire(&mut self, cutoff_ns: u64) -> Vec<FlowEntry> {
        let gone: Vec<FlowKey> = self.flows.iter().filter(|(_, e)| e.last_seen < cutoff_ns).map(|(k, _)| *k).collect();
        let out = gone.iter().filter_map(|k| self.flows.remove(k)).collect();
        for k in &gone {
            self.at_last_take.remove(k);
            self.changed.remove(k);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}
