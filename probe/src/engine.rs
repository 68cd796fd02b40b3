//! The engine thread: waits for ring-buffer events and, every poll interval, polls each interface.
//! Owns the loaded probes, so when it returns they are dropped and every program is detached.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::{
    alert::AlertSinks,
    config::Config,
    events::IfaceEvent,
    http::Health,
    judge::{self, Judge},
    metrics::Metrics,
    poller::IfacePoller,
    summary,
};

pub struct Engine {
    pub pollers: Vec<IfacePoller>,
    pub events: Receiver<IfaceEvent>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub poll_interval: Duration,
    pub summary_interval: Option<Duration>,
    pub judge: Judge,
    pub sinks: Arc<AlertSinks>,
    /// The configuration in effect; a reload re-reads its file under its command line.
    pub config: Config,
    /// One message per SIGHUP.
    pub reload: Receiver<()>,
}

impl Engine {
    /// Run until `stop` is set. Poll errors are logged and the loop goes on: a missed poll is
    /// caught up by the next one, since every kernel counter is cumulative.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut next_poll = Instant::now() + self.poll_interval;
        let mut next_summary = self.summary_interval.map(|d| Instant::now() + d);
        let mut latest: Vec<Option<String>> = vec![None; self.pollers.len()];
        self.poll_all(&mut latest);
        while !stop.load(Ordering::Relaxed) {
            // Wake at least every 100 ms so a shutdown is prompt.
            let wait = next_poll.min(Instant::now() + Duration::from_millis(100));
            match self.events.recv_deadline(wait) {
                Ok(ev) => self.judge_event(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(50)),
            }
            if self.reload.try_recv().is_ok() {
                self.reload_config();
            }
            if Instant::now() >= next_poll {
                self.poll_all(&mut latest);
                next_poll += self.poll_interval;
                if next_poll < Instant::now() {
                    next_poll = Instant::now() + self.poll_interval;
                }
            }
            if let Some(at) = next_summary.filter(|at| Instant::now() >= *at) {
                for line in latest.iter().flatten() {
                    eprintln!("{line}");
                }
                next_summary = self.summary_interval.map(|d| at + d);
            }
        }
        // Events already read, then a last look at the flows, then every pending alert update.
        while let Ok(ev) = self.events.try_recv() {
            self.judge_event(ev);
        }
        self.poll_all(&mut latest);
        self.judge.finish();
    }

    /// Re-read the config file under the original command line; apply it only if it validates.
    fn reload_config(&mut self) {
        let outcome = self.config.cli.clone().into_config().and_then(|new| {
            self.sinks
                .reconfigure(new.alert_format.resolve(), new.alerts_path.as_deref())
                .map_err(|e| crate::config::invalid("alerts", e.to_string()))?;
            Ok(new)
        });
        match outcome {
            Ok(new) => {
                let changed = crate::reload::changed(&self.config, &new);
                let restart = crate::reload::needs_restart(&self.config, &new);
                self.judge.reconfigure(&new.detectors, new.alert_window);
                tracing::info!(?changed, "configuration reloaded from {:?}", new.source);
                if !restart.is_empty() {
                    tracing::warn!(settings = ?restart, "changed in the file but only applied at the next restart");
                }
                // Keep what needs a restart as it runs now, so later reloads compare against reality.
                let mut applied = self.config.clone();
                applied.detectors = new.detectors;
                applied.alert_window = new.alert_window;
                applied.alerts_path = new.alerts_path;
                applied.alert_format = new.alert_format;
                applied.source = new.source;
                self.config = applied;
                self.metrics.config_reloads.with_label_values(&["success"]).inc();
            }
            Err(e) => {
                tracing::error!("reload failed, keeping the last good configuration: {e}");
                self.metrics.config_reloads.with_label_values(&["failure"]).inc();
            }
        }
    }

    fn judge_event(&mut self, ev: IfaceEvent) {
        let IfaceEvent { iface_index, mut event } = ev;
        let poller = &self.pollers[iface_index];
        poller.complete_history(&mut event);
        let iface = poller.iface.clone();
        self.judge.event(&iface, &event, judge::monotonic_to_wall_offset());
    }

    fn poll_all(&mut self, latest: &mut [Option<String>]) {
        let timer = self.metrics.poll_duration.start_timer();
        let offset = judge::monotonic_to_wall_offset();
        let now = judge::wall_now_ns();
        for (i, p) in self.pollers.iter_mut().enumerate() {
            match p.poll(&self.metrics) {
                Ok(out) => {
                    latest[i] = Some(summary::line(&p.iface, p.xdp_mode, &out.counters, out.live_flows, p.capacity()));
                    self.judge.flows(now, &out.deltas, offset);
                }
                Err(e) => tracing::warn!(iface = %p.iface, error = %e, "poll failed"),
            }
        }
        self.judge.tick(now);
        timer.observe_duration();
        self.health.mark_poll();
    }
}
