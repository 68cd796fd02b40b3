//! flagprobe's agent: loads the eBPF programs, reads what they count, and explains it.
//!
//! # Layout
//! - [`capture`]: pcap/pcapng (gzip too) as a stream of frames.
//! - [`clock`]: the flow table's jiffies → monotonic ns (HZ learned from the kernel).
//! - [`config`]: command line + config file → one validated [`config::Config`]; errors name the field.
//! - [`config_file`]: the TOML file: its keys, loading, and the `check-config` rendering.
//! - [`reload`]: what SIGHUP may change in place and what needs a restart.
//! - [`netinfo`]: the host's default-route interface and own addresses (the defaults).
//! - [`loader`]: load the object with this run's sizes, attach XDP + TC, detach on drop.
//! - [`flowtable`]: the kernel's flow table mapped into memory, read in place.
//! - [`flows`]: slots → flows changed since the last poll, merged across CPU partitions.
//! - [`poller`]: per interface and poll, counters → metrics and flows → [`flows::FlowDelta`]s.
//! - [`events`]: the ring-buffer reader thread, events → a bounded channel.
//! - [`engine`]: the loop that polls and consumes events; owns the probes.
//! - [`metrics`]: every exported metric, declared once.
//! - [`http`]: `/metrics`, `/healthz` and `/alerts`.
//! - [`detect`]: the detectors, one file each, pure.
//! - [`alert`]: alerts, their renderings, dedup and sinks.
//! - [`judge`]: flows and events → detectors → dedup → sinks (live and replay).
//! - [`softtable`]: the kernel's per-packet logic over a hash map (replay, tests).
//! - [`replay`]: `flagprobe replay`, captures through the same logic and detectors.
//! - [`summary`]: the live terminal line.
//!
//! [`run`] is the whole agent with an injected shutdown future, so tests and `main` share it.

pub mod alert;
pub mod capture;
pub mod clock;
pub mod config;
pub mod config_file;
pub mod detect;
pub mod engine;
pub mod events;
pub mod flows;
pub mod flowtable;
pub mod http;
pub mod judge;
pub mod loader;
pub mod metrics;
pub mod netinfo;
pub mod poller;
pub mod reload;
pub mod replay;
pub mod softtable;
pub mod summary;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use config::Config;
use engine::Engine;
use http::Health;
use loader::LoadOptions;
use metrics::Metrics;
use poller::IfacePoller;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Loading or attaching the eBPF programs failed.
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    /// Setting up map access failed.
    #[error(transparent)]
    Poll(#[from] poller::PollError),
    /// The metrics address could not be bound.
    #[error("binding the metrics address {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    /// The alerts file could not be opened for appending.
    #[error("opening the alerts file {}: {source}", path.display())]
    Alerts { path: std::path::PathBuf, source: std::io::Error },
    /// A thread could not be started.
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
}

/// Run the agent until `shutdown` resolves; then detach everything and return.
/// `reload` delivers one message per SIGHUP.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>, reload: crossbeam_channel::Receiver<()>) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let object = loader::object_bytes(config.ebpf_object.as_deref())?;
    let options = LoadOptions {
        flow_capacity: config.flow_capacity,
        flow_idle_ns: config.flow_idle.as_nanos() as u64,
        event_rate: config.event_rate,
        ebpf_log: config.ebpf_log,
    };
    let listener =
        tokio::net::TcpListener::bind(config.metrics_addr).await.map_err(|source| RunError::Bind { addr: config.metrics_addr, source })?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut log_readers = Vec::new();
    let mut pollers = Vec::new();
    for iface in &config.ifaces {
        let mut probe = loader::load(&object, options)?;
        log_readers.extend(probe.start_log_reader(stop.clone()));
        let mode = probe.attach(iface, config.xdp_mode)?;
        tracing::info!(iface, xdp_mode = mode, flow_slots = probe.geometry.slots(), "attached: XDP on ingress, TC on egress");
        let poller = IfacePoller::new(iface, mode, probe)?;
        metrics.init_iface(iface, poller.capacity() as u64, mode);
        pollers.push(poller);
    }
    tracing::info!(addr = %config.metrics_addr, home_nets = ?config.home_nets, "serving /metrics and /healthz");

    let (tx, rx) = crossbeam_channel::bounded(65_536);
    let mut readers = Vec::new();
    for (i, p) in pollers.iter_mut().enumerate() {
        let ring = p.take_events()?;
        readers.push(events::spawn(p.iface.clone(), i, ring, tx.clone(), stop.clone(), metrics.clone()).map_err(RunError::Thread)?);
    }
    drop(tx);

    let health = Arc::new(Health { last_poll_unix_ms: AtomicU64::new(0), poll_interval: config.poll_interval });
    let sinks = Arc::new(
        alert::AlertSinks::new(config.alert_format.resolve(), config.alerts_path.as_deref())
            .map_err(|source| RunError::Alerts { path: config.alerts_path.clone().unwrap_or_default(), source })?,
    );
    let judge = judge::Judge::new(
        &config.detectors,
        detect::HomeNets(config.home_nets.clone()),
        config.alert_window,
        sinks.clone(),
        metrics.clone(),
    );
    let engine = Engine {
        pollers,
        events: rx,
        metrics: metrics.clone(),
        health: health.clone(),
        poll_interval: config.poll_interval,
        summary_interval: config.summary_interval,
        judge,
        sinks: sinks.clone(),
        config: config.clone(),
        reload,
    };
    let engine_stop = stop.clone();
    let engine = std::thread::Builder::new().name("engine".into()).spawn(move || engine.run(&engine_stop)).map_err(RunError::Thread)?;
    let server = tokio::spawn(http::serve(listener, metrics, health, sinks));

    shutdown.await;
    tracing::info!("shutting down: detaching programs");
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = engine.join();
        for r in readers.into_iter().chain(log_readers) {
            let _ = r.join();
        }
    })
    .await;
    server.abort();
    tracing::info!("detached; bye");
    Ok(())
}
