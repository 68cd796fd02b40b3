//! Per interface, per poll: read the hook counters (summed over CPUs) and the flow table, feed the
//! counter deltas to the metrics, and hand the changed flows on as [`FlowDelta`]s in wall-clock ns.

use std::sync::Arc;

use aya::maps::{Map, MapData, RingBuf};
use probe_common::{
    counters::{HOOKS, HookCounters},
    event::PacketEvent,
    flow::{FlowEntry, FlowKey, NOTABLE_NEW_CONNECTION},
    maps::EVENTS,
};

use crate::{
    flows::{FlowDelta, FlowTracker, Leaving, aggregate::AggregateSnapshot, merge},
    kernel::{
        LoadError, Probe,
        flowtable::{FlowTable, FlowTableError},
    },
    metrics::Metrics,
};

/// What one poll of one interface found (its changed flows went to the poll's sink).
pub struct PollOutput {
    pub counters: [HookCounters; HOOKS as usize],
    pub live_flows: u64,
    /// The flood-proof aggregates, merged over CPUs, in wall-clock ns.
    pub aggregates: AggregateSnapshot,
    /// Flows that left the table (or are due an interval record), in wall-clock ns; empty unless
    /// session records are on.
    pub ended: Vec<(FlowEntry, Leaving)>,
}

pub struct IfacePoller {
    pub iface: Arc<str>,
    pub xdp_mode: &'static str,
    probe: Probe,
    table: FlowTable,
    tracker: FlowTracker,
    last: [HookCounters; HOOKS as usize],
}

impl IfacePoller {
    pub fn new(iface: &str, xdp_mode: &'static str, probe: Probe) -> Result<Self, FlowTableError> {
        let slots = probe.geometry.slots();
        let table = FlowTable::map(&probe.ebpf, slots)?;
        Ok(IfacePoller {
            iface: iface.into(),
            xdp_mode,
            tracker: FlowTracker::new(slots as usize, probe.geometry.slots_per_cpu),
            table,
            probe,
            last: [HookCounters::default(); HOOKS as usize],
        })
    }

    /// Hand out the flows that end, for session records; a long connection's record so far every
    /// `interval`.
    pub fn with_sessions(mut self, interval: Option<std::time::Duration>) -> Self {
        let ticks = interval.map_or(0, |d| self.probe.clock.ticks_for(d).max(1));
        self.tracker = std::mem::replace(&mut self.tracker, FlowTracker::new(0, 1)).with_sessions(ticks);
        self
    }

    /// The flows whose records are not written yet, as ended now (shutdown), in wall-clock ns.
    pub fn remaining(&mut self) -> Vec<(FlowEntry, Leaving)> {
        let wall = self.probe.clock.to_wall();
        let mut out = self.tracker.remaining();
        for (e, _) in &mut out {
            wall.entry(e);
        }
        out
    }

    pub fn capacity(&self) -> u32 {
        self.probe.geometry.slots()
    }

    /// Take the ring buffer for a reader thread.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map: Map = self.probe.ebpf.take_map(EVENTS).ok_or(LoadError::Missing(EVENTS))?;
        RingBuf::try_from(map).map_err(|source| LoadError::Map { map: EVENTS, source })
    }

    /// An event ready to judge: its flow's history before it over all CPUs (the event carries its
    /// own CPU's partition; the other partitions, since egress often runs on another CPU than
    /// ingress, are read in place), and every timestamp in wall-clock ns.
    /// A SYN that started a new connection on a closed flow's endpoints also returns the old
    /// flow's last changes, for the detectors (its record is written at the next poll).
    pub fn complete_event(&mut self, ev: &mut PacketEvent) -> Option<FlowDelta> {
        let (key, _) = FlowKey::canonical(&ev.endpoints());
        for other in self.table.copies_of(&key, self.probe.geometry.slots_per_cpu, ev.cpu as u32) {
            merge(&mut ev.flow_before, &other);
        }
        let wall = self.probe.clock.to_wall();
        let restarted = (ev.reasons & NOTABLE_NEW_CONNECTION != 0).then(|| self.tracker.restarted(&self.iface, &ev.flow_before)).flatten();
        wall.event(ev);
        restarted.map(|mut d| {
            wall.entry(&mut d.now);
            wall.entry(&mut d.before);
            d
        })
    }

    /// Read the counters and the aggregates, and hand the changed flows to `sink` in chunks.
    pub fn poll(&mut self, metrics: &Metrics, mut sink: impl FnMut(&[FlowDelta])) -> Result<PollOutput, LoadError> {
        let counters = self.probe.counters()?;
        for (hook, (before, now)) in self.last.iter().zip(counters.iter()).enumerate() {
            metrics.add_hook_counters(&self.iface, hook, self.probe.options.sensor(), before, now);
        }
        self.last = counters;
        let clock = self.probe.clock;
        let idle = clock.ticks_for(std::time::Duration::from_nanos(self.probe.options.flow_idle_ns));
        let wall = clock.to_wall();
        let live_flows = self.tracker.scan(&self.table, &self.iface, clock.now_ticks(), idle, |deltas| {
            for d in deltas.iter_mut() {
                wall.entry(&mut d.now);
                wall.entry(&mut d.before);
            }
            sink(deltas);
        });
        metrics.flows.with_label_values(&[&self.iface]).set(live_flows as i64);
        let mut ended = self.tracker.take_ended();
        for (e, _) in &mut ended {
            wall.entry(e);
        }
        let aggregates = AggregateSnapshot::merge(&self.probe.aggregates()?, |t| wall.jiffies(t));
        Ok(PollOutput { counters, live_flows, aggregates, ended })
    }
}
