//! Where records go: a writer thread owns the record file and the IPFIX socket, so neither a slow
//! disk nor a slow network holds up the engine. Live, records that find the queue full are counted
//! as lost; replay waits instead, and loses none.

use std::{path::PathBuf, sync::Arc, thread::JoinHandle, time::Duration};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use probe_common::flow::FlowEntry;

use super::{
    AlertMemory, AlertsAbout, Close,
    ipfix::{Exporter, Outcome},
    record,
    rotate::RotatingFile,
    zeek,
};
use crate::{alert::Alert, flows::Leaving, metrics::Metrics};

/// Where session records go, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionsConfig {
    /// The JSON-lines file (rotated by size), if any.
    pub path: Option<PathBuf>,
    /// Its files together stay under this many bytes.
    pub cap_bytes: u64,
    /// How many files: the one written and the compressed older ones.
    pub files: u32,
    /// How often a long connection's record so far is written (`None`: only when it ends).
    pub interval: Option<Duration>,
    /// IPFIX collector, `HOST:PORT`, if any.
    pub ipfix: Option<String>,
}

impl SessionsConfig {
    pub fn wanted(&self) -> bool {
        self.path.is_some() || self.ipfix.is_some()
    }
}

/// A flow on its way to the writer, which makes its record (and IPFIX records): the engine
/// thread only copies it and names the alerts about it.
struct Item {
    entry: FlowEntry,
    leaving: Leaving,
    iface: Arc<str>,
    about: AlertsAbout,
}

/// Records queued live before new ones are counted as lost: about a second of a flood's table
/// turnover (the SYN budget lets a few thousand new flows a second in), which the writer drains
/// many times faster; about 2 MiB when full.
const QUEUE: usize = 2048;

pub struct SessionLog {
    tx: Option<Sender<Item>>,
    thread: Option<JoinHandle<()>>,
    alerts: AlertMemory,
    /// Replay: wait for room instead of losing a record.
    wait: bool,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error("sessions file {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("ipfix collector {target}: {source}")]
    Ipfix { target: String, source: std::io::Error },
}

impl SessionLog {
    /// Open the file and the socket here, so a bad path or address is a one-line error at start.
    pub fn start(config: &SessionsConfig, metrics: Arc<Metrics>, wait: bool) -> Result<Self, SessionsError> {
        let file = match &config.path {
            Some(p) => Some(
                RotatingFile::open(p, config.cap_bytes, config.files)
                    .map_err(|source| SessionsError::File { path: p.display().to_string(), source })?,
            ),
            None => None,
        };
        let exporter = match &config.ipfix {
            Some(t) => Some(Exporter::connect(t).map_err(|source| SessionsError::Ipfix { target: t.clone(), source })?),
            None => None,
        };
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("sessions".into())
            .spawn(move || writer(rx, file, exporter, &m))
            .map_err(|source| SessionsError::File { path: "(writer thread)".into(), source })?;
        Ok(SessionLog { tx: Some(tx), thread: Some(thread), alerts: AlertMemory::default(), wait, metrics })
    }

    /// An alert written: named in the records of the connections it was about.
    pub fn alert(&mut self, alert: &Alert) {
        self.alerts.remember(alert);
    }

    /// Flows that left (timestamps in wall-clock ns).
    pub fn ended(&mut self, iface: &str, flows: &[(FlowEntry, Leaving)]) {
        let Some(tx) = &self.tx else { return };
        let iface: Arc<str> = Arc::from(iface);
        for (e, leaving) in flows {
            let item = Item { entry: *e, leaving: *leaving, iface: iface.clone(), about: self.alerts.about(e) };
            let sent = if self.wait {
                tx.send(item).is_ok()
            } else {
                match tx.try_send(item) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
                }
            };
            if !sent {
                self.metrics.session_records.with_label_values(&["lost"]).inc();
            }
        }
    }

    /// From now on wait for room rather than lose a record (shutdown: no packet waits behind us).
    pub fn wait_for_room(&mut self) {
        self.wait = true;
    }

    /// Write everything queued and stop the writer.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SessionLog {
    fn drop(&mut self) {
        self.finish();
    }
}

fn writer(rx: Receiver<Item>, mut file: Option<RotatingFile>, mut exporter: Option<Exporter>, metrics: &Metrics) {
    let mut failing = false;
    let count = |o: Outcome| {
        metrics.ipfix_records.with_label_values(&["sent"]).inc_by(o.sent);
        metrics.ipfix_records.with_label_values(&["lost"]).inc_by(o.lost);
    };
    loop {
        let item = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => {
                // Quiet: what is buffered goes out, so a reader or collector sees it within a second.
                if let Some(f) = &mut file {
                    let _ = f.flush();
                }
                if let Some(x) = &mut exporter {
                    count(x.flush());
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let (orig, _) = zeek::originator(&item.entry);
        if let Some(f) = &mut file {
            let line = serde_json::to_string(&record(&item.entry, item.leaving, &item.iface, &item.about)).unwrap_or_default();
            match f.write_line(&line) {
                Ok(()) => {
                    if failing {
                        tracing::info!("session records are written again");
                        failing = false;
                    }
                    metrics.session_records.with_label_values(&["written"]).inc();
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "cannot write session records; counting them as lost until it works again");
                        failing = true;
                    }
                    metrics.session_records.with_label_values(&["lost"]).inc();
                }
            }
        }
        // A connection's interval records would count it twice at a collector, which sums
        // `packetDeltaCount`: only its final record is exported.
        let close = Close::of(&item.entry, orig, item.leaving);
        if let Some(x) = &mut exporter
            && close != Close::Interval
        {
            count(x.add(&item.entry, orig, close));
        }
    }
    if let Some(f) = &mut file {
        let _ = f.flush();
    }
    if let Some(x) = &mut exporter {
        count(x.flush());
    }
}
