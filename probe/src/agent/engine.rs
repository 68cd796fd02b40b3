//! The engine thread: waits for ring-buffer events and, every poll interval, polls each interface.
//! Owns the loaded probes, so when it returns they are dropped and every program is detached.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crossbeam_channel::Receiver;

use super::{http::Health, poller::IfacePoller, summary};
use crate::{
    alert::AlertSinks,
    config::{Config, reload},
    kernel::{clock, ring::IfaceEvent, xsk::IfaceFrame},
    metrics::Metrics,
    pipeline::Pipeline,
};

pub struct Engine {
    pollers: Vec<IfacePoller>,
    events: Receiver<IfaceEvent>,
    /// Whole notable frames from sensors' sockets (`never()` when there are none).
    frames: Receiver<IfaceFrame>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    pipeline: Pipeline,
    sinks: Arc<AlertSinks>,
    /// The configuration in force; a reload re-reads its file under its command line.
    config: Config,
    /// One message per SIGHUP.
    reload: Receiver<()>,
    /// The latest summary line per interface, and when the next is printed.
    latest: Vec<Option<String>>,
    next_summary: Option<Instant>,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pollers: Vec<IfacePoller>,
        events: Receiver<IfaceEvent>,
        frames: Receiver<IfaceFrame>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        pipeline: Pipeline,
        sinks: Arc<AlertSinks>,
        config: Config,
        reload: Receiver<()>,
    ) -> Self {
        let latest = vec![None; pollers.len()];
        let next_summary = config.summary_interval.map(|d| Instant::now() + d);
        Engine { pollers, events, frames, metrics, health, pipeline, sinks, config, reload, latest, next_summary }
    }

    /// Run until `stop` is set. Poll errors are logged and the loop goes on: a missed poll is
    /// caught up by the next one, since every kernel counter is cumulative.
    pub fn run(mut self, stop: &AtomicBool) {
        let poll_interval = self.config.poll_interval;
        let mut next_poll = Instant::now() + poll_interval;
        self.poll_all();
        while !stop.load(Ordering::Relaxed) {
            // Wake at least every 100 ms so a shutdown is prompt.
            let wait = next_poll.min(Instant::now() + Duration::from_millis(100));
            crossbeam_channel::select! {
                recv(self.events) -> ev => match ev {
                    Ok(ev) => {
                        // A frame's whole copy first, so the alert this event may raise finds it.
                        self.take_frames();
                        self.judge_event(ev);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                },
                recv(self.frames) -> frame => match frame {
                    Ok(f) => self.pipeline.whole_frame(f.frame),
                    Err(_) => self.frames = crossbeam_channel::never(),
                },
                default(wait.saturating_duration_since(Instant::now())) => {}
            }
            if self.reload.try_recv().is_ok() {
                self.reload_config();
            }
            if Instant::now() >= next_poll {
                self.poll_all();
                next_poll += poll_interval;
                if next_poll < Instant::now() {
                    next_poll = Instant::now() + poll_interval;
                }
            }
            if let Some(at) = self.next_summary.filter(|at| Instant::now() >= *at) {
                for line in self.latest.iter().flatten() {
                    eprintln!("{line}");
                }
                self.next_summary = self.config.summary_interval.map(|d| at.max(Instant::now() - d) + d);
            }
        }
        // The readers have stopped after draining the kernel's rings: judge everything queued,
        // take a last look at the flows, then write every pending alert update.
        self.take_frames();
        while let Ok(ev) = self.events.try_recv() {
            self.judge_event(ev);
        }
        self.poll_all();
        self.pipeline.finish();
        // The connections still open get their records (`close: shutdown`), then the writer drains.
        self.pipeline.sessions_shutting_down();
        for p in &mut self.pollers {
            let open = p.remaining();
            self.pipeline.ended(&p.iface, &open);
        }
        self.pipeline.close_sessions();
    }

    /// Re-read the config file under the original command line; apply it only if it validates.
    /// What changed is worked out key by key from the effective settings: reloadable keys are
    /// applied here, the others are reported as needing a restart and stay as they run.
    fn reload_config(&mut self) {
        let outcome = self.config.cli.clone().into_config().and_then(|new| {
            self.sinks
                .reconfigure(new.alert_format.resolve(), new.alerts_path.as_deref(), new.syslog.as_ref())
                .map_err(|e| crate::config::invalid("alerts", e.to_string()))?;
            let in_force = reload::in_force(&self.config.settings, &new.settings);
            Ok((reload::changed(&self.config.settings, &new.settings), Config::resolve(in_force, new.source, new.cli)?))
        });
        match outcome {
            Ok((changed, applied)) => {
                let restart = reload::needs_restart(&changed);
                self.pipeline.reconfigure(&applied.detectors, applied.alert_window);
                if applied.summary_interval != self.config.summary_interval {
                    self.next_summary = applied.summary_interval.map(|d| Instant::now() + d);
                }
                tracing::info!(?changed, "configuration reloaded from {:?}", applied.source);
                if !restart.is_empty() {
                    tracing::warn!(settings = ?restart, "changed in the file but only applied at the next restart");
                }
                self.config = applied;
                self.metrics.config_reloads.with_label_values(&["success"]).inc();
            }
            Err(e) => {
                tracing::error!("reload failed, keeping the last good configuration: {e}");
                // Still reopen the alerts file: logrotate's postrotate reloads to make the agent
                // leave the rotated file, and a config edited badly meanwhile must not keep it there.
                if let Err(e) = self.sinks.reconfigure(
                    self.config.alert_format.resolve(),
                    self.config.alerts_path.as_deref(),
                    self.config.syslog.as_ref(),
                ) {
                    tracing::error!("reopening the alerts file: {e}");
                }
                self.metrics.config_reloads.with_label_values(&["failure"]).inc();
            }
        }
    }

    fn take_frames(&mut self) {
        while let Ok(f) = self.frames.try_recv() {
            self.pipeline.whole_frame(f.frame);
        }
    }

    fn judge_event(&mut self, ev: IfaceEvent) {
        let IfaceEvent { iface_index, mut event } = ev;
        let poller = &mut self.pollers[iface_index];
        let restarted = poller.complete_event(&mut event);
        let iface = poller.iface.clone();
        if let Some(d) = restarted {
            self.pipeline.flows(clock::wall_now_ns(), &[d]);
        }
        self.pipeline.event(&iface, &event);
    }

    fn poll_all(&mut self) {
        let timer = self.metrics.poll_duration.start_timer();
        let now = clock::wall_now_ns();
        for (i, p) in self.pollers.iter_mut().enumerate() {
            let pipeline = &mut self.pipeline;
            match p.poll(&self.metrics, |deltas| pipeline.flows(now, deltas)) {
                Ok(out) => {
                    self.latest[i] = Some(summary::line(&p.iface, p.xdp_mode, &out.counters, out.live_flows, p.capacity()));
                    self.pipeline.aggregates(now, &p.iface, &out.aggregates);
                    self.pipeline.ended(&p.iface, &out.ended);
                }
                Err(e) => tracing::warn!(iface = %p.iface, error = %e, "poll failed"),
            }
        }
        self.pipeline.tick(now);
        timer.observe_duration();
        self.health.mark_poll();
    }
}
