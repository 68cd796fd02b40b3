//! The detection pipeline, shared by the live engine and offline replay: flow changes and notable
//! packets go to every detector from our side's point of view; their alerts pass the deduplicator
//! and reach the sinks, counted in the metrics.

use std::sync::Arc;

use probe_common::{event::PacketEvent, flow::Side};

use crate::{
    alert::{Alert, AlertSinks, Deduper},
    detect::{self, Detector, DetectorsConfig, EventView, FlowView, HomeNets, addr},
    flows::FlowDelta,
    metrics::Metrics,
};

pub struct Judge {
    detectors: Vec<Box<dyn Detector>>,
    home: HomeNets,
    dedup: Deduper,
    sinks: Arc<AlertSinks>,
    metrics: Arc<Metrics>,
    /// Every alert line written, for replay's summary.
    pub written: Vec<Alert>,
    keep_written: bool,
}

impl Judge {
    pub fn new(
        config: &DetectorsConfig,
        home: HomeNets,
        window: std::time::Duration,
        sinks: Arc<AlertSinks>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Judge { detectors: detect::all(config), home, dedup: Deduper::new(window), sinks, metrics, written: vec![], keep_written: false }
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

    fn emit(&mut self, alert: Alert) {
        self.metrics.alerts.with_label_values(&[alert.detector, alert.severity.name()]).inc();
        self.sinks.emit(&alert);
        if self.keep_written {
            self.written.push(alert);
        }
    }

    fn offer(&mut self, alerts: Vec<Alert>) {
        for a in alerts {
            if let Some(a) = self.dedup.offer(a) {
                self.emit(a);
            }
        }
    }

    /// Flows that changed since the last poll. `clock_offset_ns` turns their kernel timestamps
    /// into wall-clock time.
    pub fn flows(&mut self, now_ns: u64, deltas: &[FlowDelta], clock_offset_ns: i64) {
        let views: Vec<FlowView<'_>> = deltas
            .iter()
            .filter_map(|d| {
                let local = self.home.local_side(&d.now.key, Side::from_index(d.now.initiator))?;
                Some(FlowView { iface: &d.iface, now: &d.now, before: &d.before, local, clock_offset_ns })
            })
            .collect();
        tracing::debug!(deltas = deltas.len(), ours = views.len(), "flows changed");
        let mut alerts = Vec::new();
        for d in &mut self.detectors {
            alerts.extend(d.observe_flows(now_ns, &views));
        }
        self.offer(alerts);
    }

    /// One notable packet.
    pub fn event(&mut self, iface: &str, ev: &PacketEvent, clock_offset_ns: i64) {
        let (src, dst) = (addr(ev.src, ev.family), addr(ev.dst, ev.family));
        let from_local = self.home.contains(src);
        if !from_local && !self.home.contains(dst) {
            return;
        }
        let view = EventView { iface, event: ev, at_ns: (ev.ts_ns as i64 + clock_offset_ns).max(0) as u64, from_local, clock_offset_ns };
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
            for (metric, label, n) in d.take_tallies() {
                self.metrics.add_tally(metric, &label, n);
            }
        }
        for a in self.dedup.flush(now_ns) {
            self.emit(a);
        }
        self.count_suppressed();
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

    /// At the end (shutdown, end of replay): write every pending update.
    pub fn finish(&mut self) {
        for d in &mut self.detectors {
            for (metric, label, n) in d.take_tallies() {
                self.metrics.add_tally(metric, &label, n);
            }
        }
        for a in self.dedup.flush_all() {
            self.emit(a);
        }
        self.count_suppressed();
    }
}

/// Wall-clock ns now.
pub fn wall_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Wall clock minus the kernel's monotonic clock, in ns: add it to a kernel timestamp.
pub fn monotonic_to_wall_offset() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
    wall_now_ns() as i64 - mono
}
