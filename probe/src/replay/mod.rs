//! `flagprobe replay`: captures through the same flow logic and detectors as `flagprobe run`, with
//! packet timestamps as the clock, so a capture gets the alerts the live traffic would have got.
//! `--kernel` sends every frame through the real programs instead (BPF_PROG_TEST_RUN) and reads
//! the maps with the live poller — one switch that shows kernel and userspace agree.

mod backend;
pub mod capture;
pub mod decode;
pub mod report;

use std::{
    collections::HashMap,
    io::{BufWriter, IsTerminal, Write},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use probe_common::{
    flow::FlowEntry,
    home::HomePrefixes,
    parse::{NotTcp, ParseOptions},
};

use self::{
    backend::{Backend, Frame, KernelBackend, KernelBackendError, SoftBackend},
    capture::{CaptureError, CaptureReader},
    decode::UnsupportedLink,
    report::Report,
};
use crate::{
    alert::{AlertSinks, TerminalFormat},
    config::{self, ConfigError, Settings},
    detect::{DetectorsConfig, HomeNets, addr},
    evidence::Evidence,
    flows::{Leaving, TableSettings},
    kernel::loader,
    metrics::Metrics,
    pipeline::Pipeline,
    sessions::log::SessionLog,
    units::parse_net,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `run`'s settings that describe the live process, not the traffic: hidden from replay's help and
/// refused on its command line (a config file may hold them; replay ignores them there).
const RUN_ONLY: [&str; 14] = [
    "iface",
    "metrics-addr",
    "poll-interval",
    "xdp-mode",
    "mode",
    "sensor-pass",
    "drop",
    "drop-dry-run",
    "event-rate",
    "summary-interval",
    "alert-format",
    "evidence-shared-dir",
    "ebpf-log",
    // Replay writes a connection's record when it ends: the capture's clock has no "so far".
    "sessions-interval",
];

#[derive(Debug, Args, Clone)]
#[command(
    mut_arg("iface", |a| a.hide(true)), mut_arg("metrics_addr", |a| a.hide(true)),
    mut_arg("poll_interval", |a| a.hide(true)), mut_arg("xdp_mode", |a| a.hide(true)),
    mut_arg("mode", |a| a.hide(true)), mut_arg("sensor_pass", |a| a.hide(true)), mut_arg("drop", |a| a.hide(true)),
    mut_arg("drop_dry_run", |a| a.hide(true)), mut_arg("event_rate", |a| a.hide(true)),
    mut_arg("summary_interval", |a| a.hide(true)), mut_arg("alert_format", |a| a.hide(true)),
    mut_arg("evidence_shared_dir", |a| a.hide(true)), mut_arg("ebpf_log", |a| a.hide(true)),
    mut_arg("sessions_interval", |a| a.hide(true)),
    mut_arg("home_net", |a| a.help("A network of ours (repeatable). Default: the busiest address of the first packets, said aloud")),
    mut_arg("alerts", |a| a.help("Alerts as JSON lines into this file instead of stdout (in --format)")),
    mut_arg("evidence", |a| a.help("Write each alert's packets as a pcapng file into this directory [default: off]")),
    mut_arg("evidence_max_mb", |a| a.help("Evidence files together stay under this many MiB; the oldest go first [default: no cap]")),
    mut_arg("syn_track_rate", |a| a.help("Inbound SYNs per second tracked in the flow table, as one CPU of the agent; past it they \
        are counted in the histogram and the flood aggregates only; 0 tracks every one [default: 2000]")),
)]
pub struct ReplayArgs {
    /// pcap or pcapng files (gzip-compressed too), replayed in order as one stream.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// How stdout shows alerts and the summary.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the final metrics in Prometheus text format here.
    #[arg(long)]
    pub metrics_out: Option<PathBuf>,
    /// Write one JSON line per flow, with its per-side counts, here.
    #[arg(long)]
    pub flows_out: Option<PathBuf>,
    /// Run every frame through the real kernel programs (root).
    #[arg(long)]
    pub kernel: bool,
    /// A config file of `run`'s (only this one: replay never reads /etc/flagprobe/flagprobe.toml
    /// on its own). Its detectors, flow table, alert window and the keys below apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Any config-file key, e.g. `--set detectors.scan.min-ports=20` (repeatable; wins over the file).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The settings `run` takes, declared once there.
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A flag's value is wrong.
    #[error("invalid {field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    /// An output file could not be written.
    #[error("{path}: {source}")]
    Output { path: String, source: std::io::Error },
    /// --kernel could not load the programs.
    #[error(transparent)]
    Load(#[from] crate::kernel::LoadError),
    /// --kernel could not set up its maps.
    #[error(transparent)]
    Kernel(#[from] KernelBackendError),
    /// A capture could not be read to its end; what was read before was reported.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A capture's link type is not one we read; what was read before was reported.
    #[error("{path}: {source}")]
    Link { path: String, source: UnsupportedLink },
    /// A setting (file, `--set` or flag) is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The session file or the IPFIX collector cannot be opened.
    #[error(transparent)]
    Sessions(#[from] crate::sessions::log::SessionsError),
    /// A capture named on the command line cannot be opened: said before anything is replayed.
    #[error("{path}: {source}")]
    Input { path: String, source: std::io::Error },
}

/// Polls of the flow table happen every second of capture time, as live.
const POLL_NS: u64 = 1_000_000_000;
/// A frame whose link type we cannot read, as a parse verdict.
const NOT_DECODED: NotTcp = NotTcp::Protocol(probe_common::counters::PROTO_NON_IP);
/// How many frames the home guess looks at.
const HOME_GUESS_FRAMES: usize = 10_000;

/// The busiest address among the first TCP packets, and why.
fn guess_home(files: &[PathBuf]) -> Option<(IpAddr, String)> {
    let mut counts: HashMap<IpAddr, (u64, usize)> = HashMap::new();
    let mut tcp = 0u64;
    let mut seen = 0;
    'files: for f in files {
        let Ok(reader) = CaptureReader::open(f) else { continue };
        for frame in reader {
            let Ok(frame) = frame else { break };
            seen += 1;
            if seen > HOME_GUESS_FRAMES {
                break 'files;
            }
            if let Ok(tcp_packet) = decode::decode(frame.link_type, &frame.data).map(|d| d.parse()).unwrap_or(Err(NOT_DECODED)) {
                let e = tcp_packet.endpoints;
                tcp += 1;
                let (src, dst) = (addr(e.src, e.family), addr(e.dst, e.family));
                // Once per packet, even when it goes from an address to itself (loopback).
                for a in if src == dst { vec![src] } else { vec![src, dst] } {
                    let order = counts.len();
                    counts.entry(a).or_insert((0, order)).0 += 1;
                }
            }
        }
    }
    let mut ranked: Vec<(IpAddr, (u64, usize))> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    let (ip, (n, _)) = *ranked.first()?;
    let mut why = format!("no --home-net given: treating {ip} as ours, the busiest address (in {n} of the first {tcp} TCP packets)");
    // Two hosts talking only to each other tie: say so, or a scanner may be called "our host".
    if let Some((other, _)) = ranked.get(1).filter(|(_, (m, _))| *m == n) {
        why.push_str(&format!("; {other} is as busy, and {ip} was seen first: give --home-net to say which is ours"));
    }
    Some((ip, why))
}

fn create(path: &Path) -> Result<BufWriter<std::fs::File>, ReplayError> {
    crate::owned_files::create(path).map(BufWriter::new).map_err(|source| ReplayError::Output { path: path.display().to_string(), source })
}

/// One capture stream through a backend and the detection pipeline, polled every second of
/// capture time as the live agent polls every second. `run` and `exercise` both drive this.
struct Replayer {
    backend: Box<dyn Backend>,
    pipeline: Pipeline,
    /// The home networks as the sensor program holds them: direction is decided by the same code.
    prefixes: HomePrefixes,
    iface: Arc<str>,
    next_poll: Option<u64>,
    last_ts: u64,
    idle_ns: u64,
    parse: ParseOptions,
}

impl Replayer {
    fn new(
        backend: Box<dyn Backend>,
        pipeline: Pipeline,
        prefixes: HomePrefixes,
        iface: &str,
        idle: Duration,
        parse: ParseOptions,
    ) -> Self {
        Replayer {
            backend,
            pipeline,
            prefixes,
            iface: Arc::from(iface),
            next_poll: None,
            last_ts: 0,
            idle_ns: idle.as_nanos() as u64,
            parse,
        }
    }

    /// Decode once, count, judge its events; at each capture second, poll. Returns the flows that
    /// left the table (for the report; their session records are written), or the link type we
    /// cannot read.
    fn frame(&mut self, frame: &capture::Frame) -> Result<Vec<FlowEntry>, UnsupportedLink> {
        self.last_ts = self.last_ts.max(frame.ts_ns);
        let decoded = decode::decode(frame.link_type, &frame.data)?;
        let parsed = decoded.parse_with(self.parse);
        // Towards us is ingress (XDP), from us is egress (TC), exactly as on a gateway.
        let hook = match &parsed {
            Ok(t) => self.prefixes.hook_for(&t.endpoints),
            Err(NotTcp::BadOffset { endpoints, .. }) => self.prefixes.hook_for(endpoints),
            Err(_) => 0,
        };
        let events = self.backend.feed(&Frame { decoded: &decoded, parsed: &parsed, hook, ts_ns: frame.ts_ns });
        for ev in &events {
            self.pipeline.event(&self.iface, ev);
        }
        let due = self.next_poll.get_or_insert(frame.ts_ns + POLL_NS);
        if frame.ts_ns < *due {
            return Ok(vec![]);
        }
        *due = frame.ts_ns + POLL_NS;
        self.poll(frame.ts_ns);
        let left = self.backend.expire(frame.ts_ns.saturating_sub(self.idle_ns));
        self.pipeline.ended(&self.iface, &left);
        Ok(left.into_iter().map(|(e, _)| e).collect())
    }

    fn poll(&mut self, now_ns: u64) {
        let deltas = self.backend.take_deltas(&self.iface);
        self.pipeline.flows(now_ns, &deltas);
        self.pipeline.aggregates(now_ns, &self.iface, &self.backend.aggregates());
        self.pipeline.tick(now_ns);
    }

    /// The last poll and every pending alert update; then the flows still held, which the report
    /// and the session records take as ended (in a stable order: the kernel's table is read in
    /// its slot order, which is not the traffic's).
    fn finish(&mut self) -> Vec<FlowEntry> {
        self.poll(self.last_ts);
        self.pipeline.end_of_input(self.last_ts);
        self.pipeline.finish();
        let mut held = self.backend.flows();
        held.sort_by_key(|e| (e.first_seen, e.key.addr_lo, e.key.port_lo, e.key.addr_hi, e.key.port_hi));
        let left: Vec<(FlowEntry, Leaving)> = held.iter().map(|e| (*e, Leaving::Shutdown)).collect();
        self.pipeline.ended(&self.iface, &left);
        self.pipeline.close_sessions();
        held
    }
}

/// An error's text for the report's line about its file, which already names the file.
fn without_path(text: &str, path: &str) -> String {
    text.strip_prefix(path).and_then(|t| t.strip_prefix(": ")).unwrap_or(text).to_string()
}

/// Replay; returns Err only after the report for everything read has been written.
pub fn run(args: ReplayArgs) -> Result<(), ReplayError> {
    let given =
        toml::Table::try_from(&args.settings).map_err(|e| ReplayError::Invalid { field: "command line", problem: e.to_string() })?;
    if let Some(key) = RUN_ONLY.iter().find(|k| given.contains_key(**k)) {
        return Err(ReplayError::Invalid { field: "command line", problem: format!("--{key} is a setting of `run` only") });
    }
    // A file that cannot be opened is a typo, and one that is no capture at all a wrong name: one
    // line each, before anything is replayed and with no report of nothing (exit 2 and 1).
    for file in &args.files {
        match CaptureReader::open(file) {
            Ok(_) => {}
            Err(CaptureError::Open { path, source }) => return Err(ReplayError::Input { path, source }),
            Err(e) => return Err(e.into()),
        }
    }
    let (settings, judging) = config::for_replay(args.config.as_deref(), &args.set, &args.settings)?;
    let mut home_nets: Vec<IpNet> = Vec::new();
    for h in settings.home_net.iter().flatten() {
        home_nets.push(parse_net(h).map_err(|p| ReplayError::Invalid { field: "home-net", problem: p })?);
    }
    if home_nets.is_empty() {
        match guess_home(&args.files) {
            Some((ip, why)) => {
                eprintln!("flagprobe: {why}");
                home_nets.push(IpNet::from(ip));
            }
            None => eprintln!("flagprobe: no --home-net given and no TCP packet to guess from: nothing counts as ours"),
        }
    }
    let home_text = home_nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
    let home = HomeNets(home_nets);
    let prefixes = home.prefixes().map_err(|p| ReplayError::Invalid { field: "home-net", problem: p })?;

    let alerts_file = settings.alerts.clone().filter(|p| p.as_os_str() != "-");
    let terminal = match (&alerts_file, args.format) {
        (Some(_), _) => TerminalFormat::Off,
        (None, Format::Json) => TerminalFormat::Json,
        (None, Format::Text) => TerminalFormat::Text,
    };
    let metrics = Arc::new(Metrics::new());
    // Syslog only when asked on replay's own command line: a site file's collector is the live
    // agent's, and a replay of last night must not land in it as if it happened now.
    let syslog = config::syslog(&args.settings)?;
    let sinks = Arc::new(AlertSinks::new(terminal, alerts_file.as_deref(), syslog.as_ref(), metrics.syslog_messages.clone()).map_err(
        |source| ReplayError::Output { path: alerts_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(), source },
    )?);
    // Alerts are deduplicated within the alert window of capture time, as live.
    let mut pipeline = Pipeline::new(&judging.detectors, home.clone(), judging.alert_window, sinks, metrics.clone()).keep_written();
    if let Some(dir) = settings.evidence.as_deref().filter(|d| *d != "off") {
        // No size cap unless one is set: a replay's evidence is what the operator asked for.
        let max_bytes = settings.evidence_max_mb.map_or(u64::MAX, |mb| mb << 20);
        let evidence =
            Evidence::new(Path::new(dir), max_bytes, false).map_err(|source| ReplayError::Output { path: dir.to_string(), source })?;
        pipeline = pipeline.with_evidence(evidence);
    }
    // Records and export only when asked on replay's own command line, as syslog.
    let sessions = config::sessions(&mut args.settings.clone())?;
    if sessions.wanted() {
        // Replay waits for the writer rather than losing a record.
        pipeline = pipeline.with_sessions(SessionLog::start(&sessions, metrics.clone(), true)?);
    }
    let idle = judging.flow_idle;
    let backend: Box<dyn Backend> = if args.kernel {
        let object = loader::object_bytes(settings.ebpf_object.as_deref())?;
        Box::new(KernelBackend::new(&object, judging.vxlan_port)?)
    } else {
        Box::new(SoftBackend::new(TableSettings {
            capacity: judging.flow_capacity,
            idle_ns: idle.as_nanos() as u64,
            syn_track_rate: judging.syn_track_rate,
        }))
    };
    let parse = ParseOptions { vxlan_port: judging.vxlan_port, ..ParseOptions::default() };
    let mut replayer = Replayer::new(backend, pipeline, prefixes, "replay", idle, parse);
    let mut flows_out = match &args.flows_out {
        Some(p) => Some(create(p)?),
        None => None,
    };

    let mut report = Report::default();
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut failure: Option<ReplayError> = None;
    for file in &args.files {
        let name = file.display().to_string();
        let reader = match CaptureReader::open(file) {
            Ok(r) => r,
            Err(e) => {
                report.files.push((name.clone(), Some(without_path(&e.to_string(), &name))));
                failure.get_or_insert(e.into());
                continue;
            }
        };
        let mut error: Option<ReplayError> = None;
        for frame in reader {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    error = Some(e.into());
                    break;
                }
            };
            report.frames += 1;
            match replayer.frame(&frame) {
                Ok(idle_flows) => {
                    for e in idle_flows {
                        report.absorb(&e, &home, flows_out.as_mut().map(|w| w as &mut dyn Write));
                    }
                }
                Err(source) => {
                    error = Some(ReplayError::Link { path: name.clone(), source });
                    break;
                }
            }
            if progress && last_progress.elapsed() > Duration::from_millis(250) {
                last_progress = Instant::now();
                eprint!("\r{name}: {} frames", report.frames);
            }
        }
        if progress {
            eprint!("\r\x1b[K");
        }
        report.files.push((name.clone(), error.as_ref().map(|e| without_path(&e.to_string(), &name))));
        if let Some(e) = error {
            failure.get_or_insert(e);
        }
    }
    for e in replayer.finish() {
        report.absorb(&e, &home, flows_out.as_mut().map(|w| w as &mut dyn Write));
    }
    if let (Some(w), Some(p)) = (flows_out.as_mut(), &args.flows_out) {
        w.flush().map_err(|source| ReplayError::Output { path: p.display().to_string(), source })?;
    }
    let counters = replayer.backend.counters();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(p) = &args.metrics_out {
        let zero = Default::default();
        for (hook, c) in counters.iter().enumerate() {
            metrics.add_hook_counters(&replayer.iface, hook, false, &zero, c);
        }
        crate::owned_files::create(p)
            .and_then(|mut f| std::io::Write::write_all(&mut f, metrics.render().as_bytes()))
            .map_err(|source| ReplayError::Output { path: p.display().to_string(), source })?;
    }
    let written = &replayer.pipeline.written;
    let mut out = std::io::stdout().lock();
    let _ = match args.format {
        Format::Json => writeln!(out, "{}", report.to_json(&counters, written, &home_text, seconds)),
        Format::Text => write!(out, "{}", report.to_text(&counters, written, &home_text, seconds)),
    };
    let _ = out.flush();
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// The whole userspace path — capture parsing, header decoding, the flow logic and every detector —
/// over bytes in memory, with no output. For fuzzing: it must never panic, whatever the bytes.
/// Returns the frames read.
pub fn exercise(bytes: &[u8]) -> u64 {
    let Ok(reader) = CaptureReader::from_reader("input", Box::new(std::io::Cursor::new(bytes.to_vec()))) else { return 0 };
    let home = HomeNets(vec!["10.0.0.0/8".parse().expect("valid net")]);
    let metrics = Arc::new(Metrics::new());
    let sinks = Arc::new(AlertSinks::new(TerminalFormat::Off, None, None, metrics.syslog_messages.clone()).expect("no file to open"));
    let pipeline = Pipeline::new(&DetectorsConfig::default(), home.clone(), Duration::from_secs(60), sinks, metrics);
    let prefixes = home.prefixes().expect("one network fits");
    // A small table: every fuzz input allocates its own, and the inputs are small captures.
    let table = TableSettings { capacity: 1024, ..TableSettings::default() };
    let mut replayer =
        Replayer::new(Box::new(SoftBackend::new(table)), pipeline, prefixes, "fuzz", Duration::from_secs(120), ParseOptions::default());
    let mut frames = 0;
    for frame in reader.take(100_000) {
        let Ok(frame) = frame else { break };
        frames += 1;
        if replayer.frame(&frame).is_err() {
            break;
        }
    }
    replayer.finish();
    frames
}
