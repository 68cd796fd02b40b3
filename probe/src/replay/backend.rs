//! Where replayed packets are counted: [`SoftBackend`] runs the shared probe-common logic over a
//! hash map; [`KernelBackend`] feeds each frame to the real XDP (towards us) or TC (from us) program
//! with BPF_PROG_TEST_RUN and reads the maps with the live poller's code.

use std::sync::Arc;

use aya::{
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use probe_common::{
    counters::{HOOKS, HookCounters, ParseError},
    event::PacketEvent,
    flow::FlowEntry,
    maps::{PROG_TC, PROG_XDP},
};

use super::decode::{self, Decoded, UnsupportedLink};
use crate::{
    capture::Frame,
    flows::{FlowDelta, FlowTracker},
    flowtable::FlowTable,
    loader::{self, LoadError, LoadOptions, Probe},
    poller,
    softtable::SoftTable,
};

pub trait Backend {
    /// Count one frame, sent towards us (`hook` 0) or by us (1); return its notable events.
    fn feed(&mut self, frame: &Frame, hook: u8) -> Result<Vec<PacketEvent>, UnsupportedLink>;
    /// Flows changed since the last call.
    fn take_deltas(&mut self, iface: &Arc<str>) -> Vec<FlowDelta>;
    /// Forget flows idle since before `cutoff_ns` and return them (bounded memory).
    fn expire(&mut self, cutoff_ns: u64) -> Vec<FlowEntry>;
    fn counters(&self) -> [HookCounters; HOOKS as usize];
    /// Every flow still held.
    fn flows(&self) -> Vec<FlowEntry>;
    /// Add to an event's timestamp to get its capture time.
    fn clock_offset(&self) -> i64;
}

#[derive(Default)]
pub struct SoftBackend {
    table: SoftTable,
}

impl Backend for SoftBackend {
    fn feed(&mut self, frame: &Frame, hook: u8) -> Result<Vec<PacketEvent>, UnsupportedLink> {
        let c = &mut self.table.counters[hook as usize];
        match decode::decode(frame.link_type, &frame.data)? {
            Decoded::Tcp { endpoints, mut segment, window, payload } => {
                segment.hook = hook;
                segment.now = frame.ts_ns;
                Ok(self.table.segment(&endpoints, &segment, window, payload).into_iter().collect())
            }
            Decoded::Protocol(slot) => {
                c.protocols[slot] += 1;
                Ok(vec![])
            }
            Decoded::Error(reason) => {
                c.parse_errors[reason as usize] += 1;
                Ok(vec![])
            }
        }
    }

    fn take_deltas(&mut self, iface: &Arc<str>) -> Vec<FlowDelta> {
        self.table.take_deltas(iface)
    }

    fn expire(&mut self, cutoff_ns: u64) -> Vec<FlowEntry> {
        self.table.expire(cutoff_ns)
    }

    fn counters(&self) -> [HookCounters; HOOKS as usize] {
        self.table.counters
    }

    fn flows(&self) -> Vec<FlowEntry> {
        self.table.flows().copied().collect()
    }

    fn clock_offset(&self) -> i64 {
        0
    }
}

pub struct KernelBackend {
    probe: Probe,
    ring: RingBuf<MapData>,
    table: FlowTable,
    tracker: FlowTracker,
    /// Frames the kernel never saw (no Ethernet form), by hook.
    unconvertible: [u64; HOOKS as usize],
    offset: i64,
}

impl KernelBackend {
    /// Load the programs (not attached) on this CPU; the rate limit is lifted, there is no line to protect.
    pub fn new(object: &[u8]) -> Result<Self, LoadError> {
        // One CPU: one flow-table partition, and events in order.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
        let options = LoadOptions { flow_capacity: 1 << 20, flow_idle_ns: u64::MAX / 2, event_rate: 10_000_000, ebpf_log: false };
        let mut probe = loader::load(object, options)?;
        let map = probe.ebpf.take_map(probe_common::maps::EVENTS).ok_or(LoadError::Missing("EVENTS"))?;
        let ring = RingBuf::try_from(map).map_err(|_| LoadError::Missing("EVENTS ring buffer"))?;
        let slots = probe.geometry.slots();
        let table = FlowTable::map(&probe.ebpf, slots).map_err(|_| LoadError::Missing("FLOWS (mmap)"))?;
        Ok(KernelBackend { tracker: FlowTracker::new(slots as usize), probe, ring, table, unconvertible: [0; 2], offset: 0 })
    }
}

fn kernel_now() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl Backend for KernelBackend {
    fn feed(&mut self, frame: &Frame, hook: u8) -> Result<Vec<PacketEvent>, UnsupportedLink> {
        let Some(eth) = decode::to_ethernet(frame.link_type, &frame.data)? else {
            self.unconvertible[hook as usize] += 1;
            return Ok(vec![]);
        };
        // BPF_PROG_TEST_RUN needs a whole Ethernet header.
        if eth.len() < 14 {
            self.unconvertible[hook as usize] += 1;
            return Ok(vec![]);
        }
        self.offset = frame.ts_ns as i64 - kernel_now();
        let opts = TestRunOptions { data_in: Some(&eth), ..Default::default() };
        let ran = if hook == 0 {
            let p: Option<&mut Xdp> = self.probe.ebpf.program_mut(PROG_XDP).and_then(|p| p.try_into().ok());
            p.map(|p| p.test_run(opts))
        } else {
            let p: Option<&mut SchedClassifier> = self.probe.ebpf.program_mut(PROG_TC).and_then(|p| p.try_into().ok());
            p.map(|p| p.test_run(opts))
        };
        if let Some(Err(e)) = ran {
            tracing::warn!(error = %e, "BPF_PROG_TEST_RUN failed for a frame");
        }
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            events.extend(crate::events::decode(&item));
        }
        for ev in &mut events {
            self.probe.clock.entry_to_ns(&mut ev.flow_before);
        }
        Ok(events)
    }

    fn take_deltas(&mut self, iface: &Arc<str>) -> Vec<FlowDelta> {
        let clock = self.probe.clock;
        let mut deltas = self.tracker.scan(&self.table, iface, clock.now_ticks(), u64::MAX / 2).deltas;
        for d in &mut deltas {
            clock.entry_to_ns(&mut d.now);
            clock.entry_to_ns(&mut d.before);
        }
        deltas
    }

    fn expire(&mut self, _cutoff_ns: u64) -> Vec<FlowEntry> {
        Vec::new()
    }

    fn counters(&self) -> [HookCounters; HOOKS as usize] {
        let mut c = poller::read_counters(&self.probe).unwrap_or_default();
        for (hook, n) in self.unconvertible.iter().enumerate() {
            c[hook].parse_errors[ParseError::TruncatedEthernet as usize] += n;
        }
        c
    }

    fn flows(&self) -> Vec<FlowEntry> {
        let mut out: std::collections::HashMap<probe_common::flow::FlowKey, FlowEntry> = Default::default();
        for i in 0..self.table.slots() {
            let e = self.table.read(i);
            if e.key.family != probe_common::flow::FAMILY_NONE {
                crate::flows::merge(out.entry(e.key).or_default(), &e);
            }
        }
        out.into_values()
            .map(|mut e| {
                self.probe.clock.entry_to_ns(&mut e);
                e
            })
            .collect()
    }

    fn clock_offset(&self) -> i64 {
        self.offset
    }
}
