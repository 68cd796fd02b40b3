//! Per interface, per poll: read the hook counters (summed over CPUs) and the flow table, feed the
//! counter deltas to the metrics, and hand the changed flows on as [`FlowDelta`]s.

use std::sync::Arc;

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use probe_common::{
    counters::{HOOKS, HookCounters},
    event::PacketEvent,
    flow::FlowKey,
    maps::{EVENTS, HOOK_COUNTERS},
};

use crate::{
    flows::{FlowDelta, FlowTracker, merge},
    flowtable::{FlowTable, FlowTableError},
    loader::Probe,
    metrics::Metrics,
};

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Reading a map failed.
    #[error("reading {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    /// The object lacks a map.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// The flow table could not be mapped.
    #[error(transparent)]
    FlowTable(#[from] FlowTableError),
}

/// What one poll of one interface found.
pub struct PollOutput {
    pub counters: [HookCounters; HOOKS as usize],
    pub deltas: Vec<FlowDelta>,
    pub live_flows: u64,
}

pub struct IfacePoller {
    pub iface: Arc<str>,
    pub xdp_mode: &'static str,
    probe: Probe,
    table: FlowTable,
    tracker: FlowTracker,
    last: [HookCounters; HOOKS as usize],
}

/// The hook counters of a loaded probe, summed over CPUs.
pub fn read_counters(probe: &Probe) -> Result<[HookCounters; HOOKS as usize], PollError> {
    let map = probe.ebpf.map(HOOK_COUNTERS).ok_or(PollError::Missing(HOOK_COUNTERS))?;
    let array: PerCpuArray<&MapData, HookCounters> =
        PerCpuArray::try_from(map).map_err(|source| PollError::Map { map: HOOK_COUNTERS, source })?;
    let mut out = [HookCounters::default(); HOOKS as usize];
    for (hook, total) in out.iter_mut().enumerate() {
        let values = array.get(&(hook as u32), 0).map_err(|source| PollError::Map { map: HOOK_COUNTERS, source })?;
        for cpu in values.iter() {
            total.add(cpu);
        }
    }
    Ok(out)
}

impl IfacePoller {
    pub fn new(iface: &str, xdp_mode: &'static str, probe: Probe) -> Result<Self, PollError> {
        let slots = probe.geometry.slots();
        let table = FlowTable::map(&probe.ebpf, slots)?;
        Ok(IfacePoller {
            iface: iface.into(),
            xdp_mode,
            tracker: FlowTracker::new(slots as usize),
            table,
            probe,
            last: [HookCounters::default(); HOOKS as usize],
        })
    }

    pub fn capacity(&self) -> u32 {
        self.probe.geometry.slots()
    }

    /// Take the ring buffer for a reader thread.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, PollError> {
        let map: Map = self.probe.ebpf.take_map(EVENTS).ok_or(PollError::Missing(EVENTS))?;
        RingBuf::try_from(map).map_err(|source| PollError::Map { map: EVENTS, source })
    }

    /// The flow's history before `ev`, over all CPUs, in ns: the event carries its own CPU's
    /// partition; the other partitions (egress often runs on another CPU than ingress) are read in
    /// place; then jiffies become ns like the event's own timestamp.
    pub fn complete_history(&self, ev: &mut PacketEvent) {
        let (key, _) = FlowKey::canonical(&ev.endpoints());
        for other in self.table.copies_of(&key, self.probe.geometry.slots_per_cpu, ev.cpu as u32) {
            merge(&mut ev.flow_before, &other);
        }
        self.probe.clock.entry_to_ns(&mut ev.flow_before);
    }

    pub fn poll(&mut self, metrics: &Metrics) -> Result<PollOutput, PollError> {
        let counters = read_counters(&self.probe)?;
        for (hook, (before, now)) in self.last.iter().zip(counters.iter()).enumerate() {
            metrics.add_hook_counters(&self.iface, hook, before, now);
        }
        self.last = counters;
        let clock = self.probe.clock;
        let idle = clock.ticks_for(std::time::Duration::from_nanos(self.probe.options.flow_idle_ns));
        let mut scan = self.tracker.scan(&self.table, &self.iface, clock.now_ticks(), idle);
        for d in &mut scan.deltas {
            clock.entry_to_ns(&mut d.now);
            clock.entry_to_ns(&mut d.before);
        }
        metrics.flows.with_label_values(&[&self.iface]).set(scan.live_flows as i64);
        Ok(PollOutput { counters, deltas: scan.deltas, live_flows: scan.live_flows })
    }
}
