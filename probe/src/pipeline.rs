//! The detection pipeline, shared by the live engine and offline replay: flow changes and notable
//! packets go to every detector from our side's point of view; their alerts pass the deduplicator
//! and reach the sinks, counted in the metrics. Everything arrives in wall-clock ns (capture time
//! in replay): the kernel boundary converted it.

use std::collections::VecDeque;
use std::sync::Arc;

use probe_common::{
    event::PacketEvent,
    flow::{FlowEntry, Side},
};

use crate::{
    alert::{Alert, AlertSinks, Deduper},
    detect::{self, AggregateView, Detector, DetectorsConfig, EventView, FlowView, HomeNets, Tally, addr},
    evidence::Evidence,
    flows::{FlowDelta, Leaving, aggregate::AggregateSnapshot},
    metrics::Metrics,
    sessions::log::SessionLog,
    tunnel::{Tunnel, TunnelsSeen, with_ethernet_header},
};

pub struct Pipeline {
    detectors: Vec<Box<dyn Detector>>,
    home: HomeNets,
    dedup: Deduper,
    sinks: Arc<AlertSinks>,
    metrics: Arc<Metrics>,
    /// Every alert line written, for replay's summary.
    pub written: Vec<Alert>,
    keep_written: bool,
    evidence: Option<Evidence>,
    /// Which tunnel carried the traffic between two addresses, for the alerts about them.
    tunnels: TunnelsSeen,
    /// Interfaces without an Ethernet header: their frames start at IP.
    l3_ifaces: Vec<String>,
    /// The latest alerts written with an evidence file, for frames that arrive after them.
    evidence_written: VecDeque<Alert>,
    /// Session records of the flows that leave the table, naming the alerts about them.
    sessions: Option<SessionLog>,
}

/// How many recently written alerts a late frame is matched against.
const EVIDENCE_WATCH: usize = 64;

impl Pipeline {
    pub fn new(
        config: &DetectorsConfig,
        home: HomeNets,
        window: std::time::Duration,
        sinks: Arc<AlertSinks>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Pipeline {
            detectors: detect::all(config),
            home,
            dedup: Deduper::new(window),
            sinks,
            metrics,
            written: vec![],
            keep_written: false,
            evidence: None,
            tunnels: TunnelsSeen::default(),
            l3_ifaces: vec![],
            evidence_written: VecDeque::new(),
            sessions: None,
        }
    }

    /// Write a session record for each flow that leaves the table ([`Pipeline::ended`]).
    pub fn with_sessions(mut self, sessions: SessionLog) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Flows that left the table (or are due an interval record), timestamps in wall-clock ns.
    pub fn ended(&mut self, iface: &str, flows: &[(FlowEntry, Leaving)]) {
        if let Some(s) = &mut self.sessions {
            s.ended(iface, flows);
        }
    }

    /// Shutdown: the records of every connection still open are about to come at once; they wait
    /// for the writer instead of being lost to a full queue.
    pub fn sessions_shutting_down(&mut self) {
        if let Some(s) = &mut self.sessions {
            s.wait_for_room();
        }
    }

    /// The session writer drains its queue and stops (shutdown, end of replay).
    pub fn close_sessions(&mut self) {
        if let Some(s) = &mut self.sessions {
            s.finish();
        }
    }

    /// New detector settings (a reload): detectors start afresh; pending alert updates are written first.
    pub fn reconfigure(&mut self, config: &DetectorsConfig, window: std::time::Duration) {
        self.finish();
        self.detectors = detect::all(config);
        self.dedup = Deduper::new(window);
    }

    /// Keep a copy of every alert written (replay reports them at the end).
    pub fn keep_written(mut self) -> Self {
        self.keep_written = true;
        self
    }

    /// Interfaces whose frames start at the IP header (no Ethernet header).
    pub fn with_l3_ifaces(mut self, ifaces: Vec<String>) -> Self {
        self.l3_ifaces = ifaces;
        self
    }

    /// Write each alert's packets into a pcapng file beside it.
    pub fn with_evidence(mut self, evidence: Evidence) -> Self {
        self.evidence = Some(evidence);
        self
    }

    /// A notable frame whole (a sensor's AF_XDP socket), for the evidence files.
    pub fn whole_frame(&mut self, frame: Vec<u8>) {
        if let Some(e) = &mut self.evidence {
            e.keep_whole(frame);
        }
    }

    fn emit(&mut self, mut alert: Alert) {
        if let (Some(a), Some(b)) = (alert.src_ip, alert.dest_ip)
            && let Some(t) = self.tunnels.between(a, b)
            && alert.tunnel.is_none()
        {
            alert.summary = format!("{} (inside {t})", alert.summary);
            alert.tunnel = Some(t.json());
        }
        if let Some(e) = &mut self.evidence {
            // A file is written (or rewritten, for an update) when the alert has packets to show.
            match e.attach(&mut alert) {
                Ok(()) if alert.evidence.get("pcap").is_some() => self.metrics.evidence_files.with_label_values(&["written"]).inc(),
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, detector = alert.detector, "could not write the alert's evidence file");
                    self.metrics.evidence_files.with_label_values(&["failed"]).inc();
                }
            }
            self.metrics.evidence_files.with_label_values(&["removed"]).inc_by(e.take_removed());
            if alert.evidence.get("pcap").is_some() {
                self.evidence_written.retain(|w| (w.detector, &w.key) != (alert.detector, &alert.key));
                if self.evidence_written.len() == EVIDENCE_WATCH {
                    self.evidence_written.pop_front();
                }
                self.evidence_written.push_back(alert.clone());
            }
        }
        self.metrics.alerts.with_label_values(&[alert.detector, alert.severity.name()]).inc();
        if let Some(s) = &mut self.sessions {
            s.alert(&alert);
        }
        self.sinks.emit(&alert);
        if self.keep_written {
            self.written.push(alert);
        }
    }

    fn offer(&mut self, mut alerts: Vec<Alert>) {
        // Detectors walk hash maps: their order is the process's, not the traffic's.
        crate::alert::dedup::sort(&mut alerts);
        for a in alerts {
            if let Some(a) = self.dedup.offer(a) {
                self.emit(a);
            }
        }
    }

    /// Flows that changed since the last poll.
    pub fn flows(&mut self, now_ns: u64, deltas: &[FlowDelta]) {
        let views: Vec<FlowView<'_>> = deltas
            .iter()
            .filter_map(|d| {
                let local = self.home.local_side(&d.now.key, Side::from_index(d.now.initiator))?;
                Some(FlowView { iface: &d.iface, now: &d.now, before: &d.before, local })
            })
            .collect();
        tracing::debug!(deltas = deltas.len(), ours = views.len(), "flows changed");
        let mut alerts = Vec::new();
        for d in &mut self.detectors {
            alerts.extend(d.observe_flows(now_ns, &views));
        }
        self.offer(alerts);
    }

    /// The flood-proof aggregates of one interface, as of this poll.
    pub fn aggregates(&mut self, now_ns: u64, iface: &str, snapshot: &AggregateSnapshot) {
        let view = AggregateView { iface, snapshot, home: &self.home };
        let mut alerts = Vec::new();
        for d in &mut self.detectors {
            alerts.extend(d.observe_aggregates(now_ns, &view));
        }
        self.offer(alerts);
    }

    /// One notable packet.
    pub fn event(&mut self, iface: &str, ev: &PacketEvent) {
        let framed;
        let ev = if self.l3_ifaces.iter().any(|i| i == iface) {
            framed = with_ethernet_header(ev);
            &framed
        } else {
            ev
        };
        let (src, dst) = (addr(ev.src, ev.family), addr(ev.dst, ev.family));
        let (from_local, to_local) = (self.home.contains(src), self.home.contains(dst));
        if !from_local && !to_local {
            return;
        }
        if let Some(t) = Tunnel::of(ev.frame()) {
            self.tunnels.note(src, dst, t);
        }
        // Kept before the detectors look, so an alert this packet raises holds it.
        if let Some(e) = &mut self.evidence
            && e.keep(iface, ev)
        {
            // Live, the poller counts a flow's packets beside the reader of their events: an alert
            // can be written from the counts before some of its packets' frames arrive, and then
            // its file is short. A frame that belongs to an alert already written makes that
            // alert a pending update, written (with its file) when its window ends or at shutdown.
            for a in self.evidence_written.iter().filter(|a| e.last_kept_belongs(a)) {
                self.dedup.refresh(a.clone());
            }
        }
        let view = EventView { iface, event: ev, at_ns: ev.ts_ns, from_local, to_local };
        let mut alerts = Vec::new();
        for d in &mut self.detectors {
            alerts.extend(d.observe_event(&view));
        }
        self.offer(alerts);
    }

    /// Once per poll: expire detector state, write due updates, move tallies into the metrics.
    pub fn tick(&mut self, now_ns: u64) {
        for d in &mut self.detectors {
            d.expire(now_ns);
        }
        self.take_tallies();
        for a in self.dedup.flush(now_ns) {
            self.emit(a);
        }
        self.count_suppressed();
    }

    /// Detector tallies into their metrics.
    fn take_tallies(&mut self) {
        for d in &mut self.detectors {
            for t in d.take_tallies() {
                match t {
                    Tally::Backscatter { kind, packets } => self.metrics.backscatter_packets.with_label_values(&[kind]).inc_by(packets),
                    Tally::RstPayload { signature, packets } => {
                        self.metrics.rst_payload_packets.with_label_values(&[&signature]).inc_by(packets)
                    }
                    Tally::HeldBack { detector, alerts } => self.metrics.alerts_suppressed.with_label_values(&[detector]).inc_by(alerts),
                }
            }
        }
    }

    fn count_suppressed(&mut self) {
        for (detector, n) in self.dedup.take_suppressed() {
            tracing::warn!(
                detector,
                held_back = n,
                "alert budget reached: further new alerts of this detector are counted, not written, until the window ends"
            );
            self.metrics.alerts_suppressed.with_label_values(&[detector]).inc_by(n);
        }
    }

    /// The end of a capture: what waits for a reaction that can no longer come is judged now.
    pub fn end_of_input(&mut self, now_ns: u64) {
        let mut alerts = Vec::new();
        for d in &mut self.detectors {
            alerts.extend(d.end_of_input(now_ns));
        }
        self.offer(alerts);
    }

    /// At the end (shutdown, end of replay): write every pending update.
    pub fn finish(&mut self) {
        self.take_tallies();
        for a in self.dedup.flush_all() {
            self.emit(a);
        }
        self.count_suppressed();
    }
}
