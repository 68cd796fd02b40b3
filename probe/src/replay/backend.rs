//! Where replayed packets are counted: [`SoftBackend`] runs the shared probe-common logic over a
//! hash map; [`KernelBackend`] feeds each frame to the real XDP (towards us) or TC (from us) program
//! with BPF_PROG_TEST_RUN and reads the maps with the live poller's code. Either way, what comes
//! out is in capture time.

use std::sync::Arc;

use aya::{
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use probe_common::{
    counters::{HOOKS, HookCounters, ParseError},
    event::PacketEvent,
    flow::{FAMILY_NONE, FlowEntry, FlowKey, NOTABLE_NEW_CONNECTION},
    maps::{EVENTS, PROG_TC, PROG_XDP},
    parse::{NotTcp, TcpPacket},
};

use super::decode::Decoded;
use crate::{
    flows::{FlowDelta, FlowTracker, Leaving, SoftTable, TableSettings, aggregate::AggregateSnapshot, merge},
    kernel::{
        LoadError, LoadOptions, Probe,
        clock::{ToWall, monotonic_now_ns},
        flowtable::{FlowTable, FlowTableError},
        loader, ring,
    },
};

/// One frame, decoded once: its Ethernet form and the shared parser's verdict on it.
pub struct Frame<'a> {
    pub decoded: &'a Decoded<'a>,
    pub parsed: &'a Result<TcpPacket, NotTcp>,
    /// 0: towards us (XDP), 1: from us (TC).
    pub hook: u8,
    /// Capture time, ns.
    pub ts_ns: u64,
}

pub trait Backend {
    /// Count one frame; return its notable events.
    fn feed(&mut self, frame: &Frame<'_>) -> Vec<PacketEvent>;
    /// Flows changed since the last call.
    fn take_deltas(&mut self, iface: &Arc<str>) -> Vec<FlowDelta>;
    /// Forget flows idle since before `cutoff_ns` and return them (bounded memory).
    fn expire(&mut self, cutoff_ns: u64) -> Vec<(FlowEntry, Leaving)>;
    fn counters(&self) -> [HookCounters; HOOKS as usize];
    /// Every flow still held.
    fn flows(&self) -> Vec<FlowEntry>;
    /// The flood-proof aggregates so far.
    fn aggregates(&self) -> AggregateSnapshot;
}

pub struct SoftBackend {
    table: SoftTable,
}

impl SoftBackend {
    pub fn new(settings: TableSettings) -> Self {
        SoftBackend { table: SoftTable::with(settings) }
    }
}

impl Backend for SoftBackend {
    fn feed(&mut self, frame: &Frame<'_>) -> Vec<PacketEvent> {
        match frame.parsed {
            Ok(tcp) => {
                let mut segment = tcp.segment;
                segment.hook = frame.hook;
                segment.now = frame.ts_ns;
                let mut event = self.table.segment(&tcp.endpoints, &segment, tcp.window, frame.decoded.payload(tcp));
                if let (Some(ev), Some(eth)) = (&mut event, frame.decoded.ethernet.as_deref()) {
                    ev.set_frame(eth);
                }
                event.into_iter().collect()
            }
            Err(NotTcp::Protocol(slot)) => {
                self.table.counters[frame.hook as usize].count_protocol(*slot);
                vec![]
            }
            Err(NotTcp::Error(reason)) => {
                self.table.counters[frame.hook as usize].count_parse_error(*reason);
                vec![]
            }
            Err(NotTcp::BadOffset { flags, .. }) => {
                let counters = &mut self.table.counters[frame.hook as usize];
                counters.count_tcp(*flags);
                counters.count_parse_error(ParseError::BadTcpOffset);
                vec![]
            }
        }
    }

    fn take_deltas(&mut self, iface: &Arc<str>) -> Vec<FlowDelta> {
        self.table.take_deltas(iface)
    }

    fn expire(&mut self, cutoff_ns: u64) -> Vec<(FlowEntry, Leaving)> {
        self.table.expire(cutoff_ns)
    }

    fn counters(&self) -> [HookCounters; HOOKS as usize] {
        self.table.counters
    }

    fn flows(&self) -> Vec<FlowEntry> {
        self.table.flows().copied().collect()
    }

    fn aggregates(&self) -> AggregateSnapshot {
        self.table.aggregates()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelBackendError {
    /// Loading the programs or taking their maps failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The flow table could not be mapped.
    #[error(transparent)]
    FlowTable(#[from] FlowTableError),
}

pub struct KernelBackend {
    probe: Probe,
    ring: RingBuf<MapData>,
    table: FlowTable,
    tracker: FlowTracker,
    /// Frames the kernel never saw (no whole Ethernet form), by hook.
    unconvertible: [u64; HOOKS as usize],
    /// Kernel time → capture time, as of the last frame.
    to_capture: ToWall,
    /// The last changes of flows a new connection on their endpoints ended (from the SYNs'
    /// events, as the agent learns them), until the next take.
    restarted: Vec<FlowDelta>,
}

impl KernelBackend {
    /// Load the programs (not attached) on this CPU; the rate limits (events, tracked SYNs) are
    /// lifted, there is no line to protect.
    pub fn new(object: &[u8], vxlan_port: u16) -> Result<Self, KernelBackendError> {
        // One CPU: one flow-table partition, and events in order.
        // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
        let options = LoadOptions {
            flow_capacity: 1 << 20,
            flow_idle_ns: u64::MAX / 2,
            event_rate: 10_000_000,
            syn_track_rate: 0,
            ebpf_log: false,
            vxlan_port,
            ..LoadOptions::default()
        };
        let mut probe = loader::load(object, options)?;
        let map = probe.ebpf.take_map(EVENTS).ok_or(LoadError::Missing(EVENTS))?;
        let ring = RingBuf::try_from(map).map_err(|source| LoadError::Map { map: EVENTS, source })?;
        let slots = probe.geometry.slots();
        let table = FlowTable::map(&probe.ebpf, slots)?;
        let to_capture = probe.clock.with_offset(0);
        // Flows that leave the table (to another flow, or to a new connection on the same
        // endpoints) are handed out as the agent hands them, for the report and the records.
        let tracker = FlowTracker::new(slots as usize, probe.geometry.slots_per_cpu).with_sessions(0);
        Ok(KernelBackend { tracker, probe, ring, table, unconvertible: [0; 2], to_capture, restarted: Vec::new() })
    }
}

impl Backend for KernelBackend {
    fn feed(&mut self, frame: &Frame<'_>) -> Vec<PacketEvent> {
        // BPF_PROG_TEST_RUN needs a whole Ethernet header.
        let Some(eth) = frame.decoded.ethernet.as_deref().filter(|e| e.len() >= 14) else {
            self.unconvertible[frame.hook as usize] += 1;
            return vec![];
        };
        self.to_capture = self.probe.clock.with_offset(frame.ts_ns as i64 - monotonic_now_ns() as i64);
        let opts = TestRunOptions { data_in: Some(eth), ..Default::default() };
        let ran = if frame.hook == 0 {
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
            events.extend(ring::decode(&item));
        }
        for ev in &mut events {
            if ev.reasons & NOTABLE_NEW_CONNECTION != 0
                && let Some(mut d) = self.tracker.restarted(&Arc::from(""), &ev.flow_before)
            {
                self.to_capture.entry(&mut d.now);
                self.to_capture.entry(&mut d.before);
                self.restarted.push(d);
            }
            self.to_capture.event(ev);
        }
        events
    }

    fn take_deltas(&mut self, iface: &Arc<str>) -> Vec<FlowDelta> {
        let mut out: Vec<FlowDelta> = self.restarted.drain(..).map(|d| FlowDelta { iface: iface.clone(), ..d }).collect();
        let to_capture = self.to_capture;
        self.tracker.scan(&self.table, iface, self.probe.clock.now_ticks(), u64::MAX / 2, |deltas| {
            for d in deltas.iter_mut() {
                to_capture.entry(&mut d.now);
                to_capture.entry(&mut d.before);
            }
            out.extend_from_slice(deltas);
        });
        out
    }

    /// Idle flows stay (the kernel's idle time is lifted here); those that left are handed out.
    fn expire(&mut self, _cutoff_ns: u64) -> Vec<(FlowEntry, Leaving)> {
        let mut out = self.tracker.take_ended();
        for (e, _) in &mut out {
            self.to_capture.entry(e);
        }
        out
    }

    fn counters(&self) -> [HookCounters; HOOKS as usize] {
        let mut c = self.probe.counters().unwrap_or_default();
        for (hook, n) in self.unconvertible.iter().enumerate() {
            c[hook].parse_errors[ParseError::TruncatedEthernet as usize] += n;
        }
        c
    }

    fn flows(&self) -> Vec<FlowEntry> {
        let mut out: std::collections::HashMap<FlowKey, FlowEntry> = Default::default();
        for i in 0..self.table.slots() {
            let e = self.table.read(i);
            if e.key.family != FAMILY_NONE {
                merge(out.entry(e.key).or_default(), &e);
            }
        }
        out.into_values()
            .map(|mut e| {
                self.to_capture.entry(&mut e);
                e
            })
            .collect()
    }

    fn aggregates(&self) -> AggregateSnapshot {
        let cpus = self.probe.aggregates().unwrap_or_default();
        AggregateSnapshot::merge(&cpus, |t| self.to_capture.jiffies(t))
    }
}
