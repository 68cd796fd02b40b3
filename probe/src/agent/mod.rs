//! `flagprobe run`: the live agent. [`run`] loads and attaches one copy of the programs per
//! interface, starts a ring-buffer reader thread per interface, the engine thread and the HTTP
//! server, and tears everything down when `shutdown` resolves.
//!
//! Why the engine is a std thread beside tokio: its work is blocking and CPU-bound (reading the
//! mmap'd flow table, running detectors), and it must keep its pace when the HTTP side is busy. It
//! waits on a crossbeam channel fed by the reader threads, with the poll deadline as timeout. Only
//! the HTTP server and the signals live on tokio, where waiting on sockets is what it is good at.

pub mod engine;
pub mod http;
pub mod poller;
pub mod summary;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use probe_common::action::DROP_REASON_NAMES;

use crate::{
    alert::AlertSinks,
    config::{self, Config},
    detect::HomeNets,
    evidence::Evidence,
    kernel::{self, LoadOptions, ring},
    metrics::Metrics,
    pipeline::Pipeline,
    sessions::log::SessionLog,
};
use engine::Engine;
use http::Health;
use poller::IfacePoller;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Loading or attaching the eBPF programs, or reading their maps, failed.
    #[error(transparent)]
    Load(#[from] kernel::LoadError),
    /// The flow table could not be mapped.
    #[error(transparent)]
    FlowTable(#[from] kernel::flowtable::FlowTableError),
    /// The metrics address could not be bound.
    #[error("binding the metrics address {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    /// The alerts file could not be opened for appending.
    #[error("opening the alerts file {}: {source}", path.display())]
    Alerts { path: std::path::PathBuf, source: std::io::Error },
    /// The evidence directory given could not be created.
    #[error("invalid evidence: {}: {source}", path.display())]
    Evidence { path: std::path::PathBuf, source: std::io::Error },
    /// The session file or the IPFIX collector could not be opened.
    #[error(transparent)]
    Sessions(#[from] crate::sessions::log::SessionsError),
    /// A thread could not be started.
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
}

/// Events waiting for the engine, at most. The queue is allocated whole (4096 × 640 B = 2.6 MiB
/// now that an event carries its frame's head); the kernel's ring buffer absorbs bursts before it,
/// and a full queue is counted (`events_dropped_total{reason="agent_queue_full"}`).
const EVENT_QUEUE: usize = 4096;

/// Whole frames waiting for the engine (sensor mode), at most: each is allocated at its size.
const FRAME_QUEUE: usize = 1024;

/// Run the agent until `shutdown` resolves; then detach everything and return.
/// `reload` delivers one message per SIGHUP.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>, reload: crossbeam_channel::Receiver<()>) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let object = kernel::loader::object_bytes(config.ebpf_object.as_deref())?;
    let options = LoadOptions {
        flow_capacity: config.flow_capacity,
        flow_idle_ns: config.flow_idle.as_nanos() as u64,
        event_rate: config.event_rate,
        syn_track_rate: config.syn_track_rate,
        ebpf_log: config.ebpf_log,
        mode: config.program_mode(),
        drop_policy: config.drop_policy,
        home: config.home_prefixes,
        vxlan_port: config.vxlan_port,
        link_ip: false,
    };
    let listener =
        tokio::net::TcpListener::bind(config.metrics_addr).await.map_err(|source| RunError::Bind { addr: config.metrics_addr, source })?;

    // Two stop flags, because the order matters at shutdown: the ring readers drain what the kernel
    // has written and stop first; only then does the engine judge what is queued and poll a last time.
    let readers_stop = Arc::new(AtomicBool::new(false));
    let engine_stop = Arc::new(AtomicBool::new(false));
    let mut log_readers = Vec::new();
    let mut pollers = Vec::new();
    if config.drop_policy != 0 {
        let reasons: Vec<&str> =
            DROP_REASON_NAMES.iter().enumerate().filter(|(i, _)| config.drop_policy & (1 << i) != 0).map(|(_, n)| *n).collect();
        tracing::warn!(
            ifaces = ?config.ifaces,
            ?reasons,
            dry_run = config.drop_dry_run,
            "inline drop is on: inbound packets of these kinds on flows our host never sent on are dropped"
        );
    }
    if let Some(release) = kernel::features::running() {
        for line in kernel::features::fallbacks(release) {
            tracing::info!("{line}");
        }
    }
    // Opened before anything is attached: a session file that cannot be written is a one-line
    // error, not an agent running without the records it was asked for.
    let sessions = match config.sessions.wanted() {
        true => Some(SessionLog::start(&config.sessions, metrics.clone(), false)?),
        false => None,
    };
    // Sensors' whole notable frames; the queue holds a second of the default event rate.
    let (frames_tx, frames_rx) = crossbeam_channel::bounded(FRAME_QUEUE);
    let mut frame_readers = Vec::new();
    for (index, iface) in config.ifaces.iter().enumerate() {
        let link_ip = kernel::features::link_is_ip(iface);
        if link_ip {
            tracing::info!(iface, "no Ethernet header on this interface: its frames are read from the IP header");
        }
        let mut probe = kernel::loader::load(&object, LoadOptions { link_ip, ..options })?;
        log_readers.extend(probe.start_log_reader(readers_stop.clone()));
        let mode = probe.attach(iface, config.xdp_mode)?;
        if options.sensor() {
            let sockets = probe.open_sockets(iface)?;
            let copy = sockets.first().map_or("none", |s| s.mode);
            tracing::info!(iface, xdp_mode = mode, sockets = sockets.len(), af_xdp = copy, home_nets = ?config.home_nets,
                "sensor: XDP on ingress, direction from the home networks, notable frames whole through AF_XDP");
            let read = metrics.sensor_frames.with_label_values(&[iface.as_str(), "read"]);
            frame_readers.push(
                kernel::xsk::spawn_reader(iface, index, sockets, frames_tx.clone(), readers_stop.clone(), read)
                    .map_err(RunError::Thread)?,
            );
        } else {
            tracing::info!(iface, xdp_mode = mode, flow_slots = probe.geometry.slots(), "attached: XDP on ingress, TC on egress");
        }
        let mut poller = IfacePoller::new(iface, mode, probe)?;
        if sessions.is_some() {
            poller = poller.with_sessions(config.sessions.interval);
        }
        metrics.init_iface(iface, poller.capacity() as u64, mode);
        pollers.push(poller);
    }
    tracing::info!(addr = %config.metrics_addr, home_nets = ?config.home_nets, "serving /metrics and /healthz");

    let (tx, rx) = crossbeam_channel::bounded(EVENT_QUEUE);
    let mut readers = Vec::new();
    for (i, p) in pollers.iter_mut().enumerate() {
        let events = p.take_events()?;
        let counters = ring::ReaderCounters {
            received: metrics.events_received.with_label_values(&[&p.iface]),
            dropped: metrics.events_dropped.with_label_values(&[&p.iface, "agent_queue_full"]),
        };
        readers.push(ring::spawn(p.iface.clone(), i, events, tx.clone(), readers_stop.clone(), counters).map_err(RunError::Thread)?);
    }
    drop(tx);
    drop(frames_tx);
    let frames_rx = if frame_readers.is_empty() { crossbeam_channel::never() } else { frames_rx };

    let health = Arc::new(Health { last_poll_unix_ms: AtomicU64::new(0), poll_interval: config.poll_interval });
    let sinks = Arc::new(
        AlertSinks::new(
            config.alert_format.resolve(),
            config.alerts_path.as_deref(),
            config.syslog.as_ref(),
            metrics.syslog_messages.clone(),
        )
        .map_err(|source| RunError::Alerts { path: config.alerts_path.clone().unwrap_or_default(), source })?,
    );
    let l3: Vec<String> = config.ifaces.iter().filter(|i| kernel::features::link_is_ip(i)).cloned().collect();
    let mut pipeline =
        Pipeline::new(&config.detectors, HomeNets(config.home_nets.clone()), config.alert_window, sinks.clone(), metrics.clone())
            .with_l3_ifaces(l3);
    if let Some(s) = sessions {
        pipeline = pipeline.with_sessions(s);
    }
    if let config::Evidence::Dir { path, max_bytes, explicit, shared_ok } = &config.evidence {
        match Evidence::new(path, *max_bytes, *shared_ok) {
            Ok(e) => pipeline = pipeline.with_evidence(e),
            Err(source) if *explicit => return Err(RunError::Evidence { path: path.clone(), source }),
            Err(error) => tracing::warn!(
                %error,
                dir = %path.display(),
                "evidence is off: the default directory cannot be created (give --evidence DIR, or --evidence off)"
            ),
        }
    }
    let engine = Engine::new(pollers, rx, frames_rx, metrics.clone(), health.clone(), pipeline, sinks.clone(), config, reload);
    let stop = engine_stop.clone();
    let engine = std::thread::Builder::new().name("engine".into()).spawn(move || engine.run(&stop)).map_err(RunError::Thread)?;
    let server = tokio::spawn(http::serve(listener, metrics, health, sinks));

    shutdown.await;
    tracing::info!("shutting down: detaching programs");
    let _ = tokio::task::spawn_blocking(move || {
        readers_stop.store(true, Ordering::Relaxed);
        for r in readers.into_iter().chain(log_readers).chain(frame_readers) {
            let _ = r.join();
        }
        engine_stop.store(true, Ordering::Relaxed);
        let _ = engine.join();
    })
    .await;
    server.abort();
    tracing::info!("detached; bye");
    Ok(())
}
