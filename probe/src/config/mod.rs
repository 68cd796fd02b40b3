//! Every setting of `flagprobe run`, declared once in [`Settings`]: the same struct is the command
//! line (clap), the TOML file (serde), the `check-config` rendering and what SIGHUP compares. The
//! command line wins over the file, key by key; then [`Config::resolve`] fills the defaults and
//! validates into one typed [`Config`]. Every error is one line naming the field.
//!
//! This module sits at the top of the library: it assembles the subsystems' own setting types
//! (detector configs, the XDP mode, the alert format) and nothing below imports it: only the
//! command line and the two commands that take these settings, the agent and replay.

pub mod file;
pub mod netinfo;
pub mod reload;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::Args;
use ipnet::IpNet;
use probe_common::{
    action::{DROP_REASON_NAMES, MODE_DROP_DRY_RUN, MODE_SENSOR, MODE_SENSOR_PASS},
    home::HomePrefixes,
};
use serde::{Deserialize, Serialize};

use crate::{
    alert::{AlertFormat, syslog::SyslogConfig},
    detect::{self, DetectorsConfig},
    kernel::{Mode, XdpMode},
    sessions::log::SessionsConfig,
    units::{self, DurationRange, parse_duration_in, parse_net},
};

/// Where the config file is looked for when `--config` is not given (absent is fine).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/flagprobe/flagprobe.toml";

/// Every setting, as a flag (`--poll-interval 1s`) and as a config-file key (`poll-interval =
/// "1s"`) of the same kebab-case name. Unset means "from the file, else the default"; after
/// [`Config::resolve`] every field is set (the effective configuration).
#[derive(Debug, Args, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Interface to watch (repeatable). Default: the interface that holds the default route.
    #[arg(long = "iface", short = 'i')]
    pub iface: Option<Vec<String>>,
    /// A network of ours (repeatable). Default: the addresses assigned to this host.
    #[arg(long = "home-net")]
    pub home_net: Option<Vec<String>>,
    /// Where /metrics, /alerts, /healthz are served [default: 127.0.0.1:9750].
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// How often the maps are read, e.g. `1s`, `500ms` [default: 1s].
    #[arg(long)]
    pub poll_interval: Option<String>,
    /// XDP attach mode [default: auto: driver, falling back to generic].
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,
    /// Where flagprobe sits: `gateway`, on the traffic's own host or router, or `sensor`, on a
    /// mirror or TAP port (needs --home-net) [default: gateway].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Sensor mode: pass the mirrored copies on to this host's stack instead of dropping them once
    /// counted.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub sensor_pass: Option<bool>,
    /// Gateway mode: drop inbound packets of these kinds, never one of a flow our host sent on:
    /// `unsolicited-synack`, `invalid-flags` (comma-separated) [default: none].
    #[arg(long, value_delimiter = ',')]
    pub drop: Option<Vec<String>>,
    /// Count what --drop would drop, in the same metric, and drop nothing.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub drop_dry_run: Option<bool>,
    /// Flow-table slots over all CPUs, rounded up to a power of two per CPU [default: 32768].
    #[arg(long)]
    pub flow_capacity: Option<u32>,
    /// A flow quiet this long gives up its slot to a new flow [default: 120s].
    #[arg(long)]
    pub flow_idle: Option<String>,
    /// Ring-buffer events per second each CPU may send, per hook [default: 5000].
    #[arg(long)]
    pub event_rate: Option<u64>,
    /// Inbound SYNs per second each CPU tracks in the flow table; past it (a flood) they are
    /// counted in the histogram and the flood aggregates only, and our answer starts the flow;
    /// 0 tracks every one [default: 2000].
    #[arg(long)]
    pub syn_track_rate: Option<u64>,
    /// The UDP port whose datagrams are opened as VXLAN to count the TCP inside [default: 4789].
    #[arg(long)]
    pub vxlan_port: Option<u16>,
    /// How often the live summary is printed; `0s` turns it off [default: 5s].
    #[arg(long)]
    pub summary_interval: Option<String>,
    /// The eBPF object to load instead of the one built into the binary.
    #[arg(long)]
    pub ebpf_object: Option<PathBuf>,
    /// Append alerts as JSON lines to this file (never truncated).
    #[arg(long)]
    pub alerts: Option<PathBuf>,
    /// Send each alert to syslog as an RFC 5424 message: `unix:/dev/log`, `udp:HOST:PORT`, or
    /// `tcp:HOST:PORT` (octet-counted, RFC 6587) [default: off].
    #[arg(long, value_name = "TARGET")]
    pub syslog: Option<String>,
    /// The facility of those messages: `daemon`, `auth` (or `security`), `local0` to `local7`
    /// [default: daemon].
    #[arg(long)]
    pub syslog_facility: Option<String>,
    /// Write a session record (Zeek conn.log fields, JSON lines) for every TCP connection when it
    /// ends, into this file, rotated by size [default: off].
    #[arg(long)]
    pub sessions: Option<PathBuf>,
    /// The session files together (the one written and the gzip'd older ones) stay under this many
    /// MiB [default: 100].
    #[arg(long)]
    pub sessions_max_mb: Option<u64>,
    /// How many session files are kept, the one written included [default: 10].
    #[arg(long)]
    pub sessions_files: Option<u32>,
    /// A connection open this long gets a record so far (`close: interval`) each time; `0s` writes
    /// records only when connections end [default: 1h].
    #[arg(long)]
    pub sessions_interval: Option<String>,
    /// Export every connection to this IPFIX collector (RFC 7011 over UDP), `HOST:PORT` [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    pub ipfix: Option<String>,
    /// Alerts on stdout [default: auto: text on a terminal, JSON lines otherwise].
    #[arg(long, value_enum)]
    pub alert_format: Option<AlertFormat>,
    /// One alert per detector and key per this window; changes come as one updated line [default: 60s].
    #[arg(long)]
    pub alert_window: Option<String>,
    /// Where each alert's packets are written as a pcapng file, or `off` [default:
    /// /var/lib/flagprobe/evidence; when that cannot be created, off with a warning].
    #[arg(long)]
    pub evidence: Option<String>,
    /// Evidence files together stay under this many MiB; the oldest go first [default: 256].
    #[arg(long)]
    pub evidence_max_mb: Option<u64>,
    /// Accept an evidence directory that other users can write or that another user owns
    /// [default: false: such a directory is refused].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub evidence_shared_dir: Option<bool>,
    /// Log malformed packets from inside the kernel programs (aya-log). Off by default: the level is
    /// frozen at load, so when off the verifier removes the logging code entirely.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub ebpf_log: Option<bool>,
    /// Detector thresholds and switches: `[detectors.NAME]` tables in the file, `--set
    /// detectors.NAME.KEY=VALUE` on the command line.
    #[arg(skip)]
    pub detectors: Option<DetectorsConfig>,
}

/// `flagprobe run`'s command line: every [`Settings`] flag, plus where the file is and overrides.
#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// The TOML config file (default /etc/flagprobe/flagprobe.toml if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Any config-file key, e.g. `--set detectors.scan.min-ports=20` (repeatable; wins over the file).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub settings: Settings,
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub ifaces: Vec<String>,
    pub home_nets: Vec<IpNet>,
    pub metrics_addr: SocketAddr,
    pub poll_interval: Duration,
    pub xdp_mode: XdpMode,
    pub mode: Mode,
    /// The home networks as the sensor program holds them (empty on a gateway, whose program
    /// takes direction from its hooks and never reads them).
    pub home_prefixes: HomePrefixes,
    pub sensor_pass: bool,
    /// `action::DROP_*` bits.
    pub drop_policy: u8,
    pub drop_dry_run: bool,
    pub flow_capacity: u32,
    pub flow_idle: Duration,
    pub event_rate: u64,
    pub syn_track_rate: u64,
    pub vxlan_port: u16,
    pub summary_interval: Option<Duration>,
    pub ebpf_object: Option<PathBuf>,
    pub alerts_path: Option<PathBuf>,
    pub syslog: Option<SyslogConfig>,
    pub sessions: SessionsConfig,
    pub alert_format: AlertFormat,
    pub alert_window: Duration,
    pub evidence: Evidence,
    pub detectors: DetectorsConfig,
    pub ebpf_log: bool,
    /// The effective settings, defaults filled in: what `check-config` prints and a reload compares.
    pub settings: Settings,
    /// The file these came from, if any (what SIGHUP re-reads).
    pub source: Option<PathBuf>,
    /// The command line, kept so a reload applies it over the re-read file again.
    pub cli: RunArgs,
}

/// Where evidence files go.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    Off,
    /// `explicit`: the operator named the directory, so failing to create it is an error; the
    /// default directory may be unavailable (an unprivileged run) and then evidence is off.
    Dir {
        path: PathBuf,
        max_bytes: u64,
        explicit: bool,
        /// `evidence-shared-dir`: a directory others can write is accepted.
        shared_ok: bool,
    },
}

/// The default evidence directory (systemd's StateDirectory=flagprobe).
pub const DEFAULT_EVIDENCE_DIR: &str = "/var/lib/flagprobe/evidence";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field's value does not parse or is out of range.
    #[error("invalid {field}: {problem}")]
    Invalid { field: String, problem: String },
    /// A default could not be worked out from the system.
    #[error("cannot choose a default for {field}: {problem}")]
    NoDefault { field: &'static str, problem: String },
    /// The config file could not be read.
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
}

pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), problem: problem.into() }
}

impl From<detect::Invalid> for ConfigError {
    fn from(e: detect::Invalid) -> Self {
        invalid(format!("detectors.{}", e.field), e.problem)
    }
}

fn duration(field: &'static str, text: &str, range: &DurationRange) -> Result<Duration, ConfigError> {
    parse_duration_in(text, range).map_err(|p| invalid(field, p))
}

/// Whether an IPFIX `target` is `HOST:PORT` (for a one-line error at start-up).
fn ipfix_target(target: &str) -> Result<(), String> {
    let (host, port) = target.rsplit_once(':').ok_or_else(|| format!("`{target}` is not HOST:PORT"))?;
    port.parse::<u16>().map_err(|_| format!("`{port}` is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || (host.parse::<IpAddr>().is_err() && host.contains(char::is_whitespace)) {
        return Err(format!("`{target}` is not HOST:PORT"));
    }
    Ok(())
}

/// The `sessions` file the config at `path` (else the default one, if it exists) names: where
/// `flagprobe sessions` reads when given no files. `None`: no file, or no such key.
pub fn sessions_file(path: Option<&std::path::Path>) -> Result<Option<PathBuf>, ConfigError> {
    let loaded = file::load(file::run_path(path).as_deref(), &[])?;
    Ok(loaded.table.get("sessions").and_then(|v| v.as_str()).map(PathBuf::from))
}

/// The `sessions*` and `ipfix` settings, validated, defaults filled in (off when neither
/// `sessions` nor `ipfix` is set; the others are checked even then).
pub fn sessions(s: &mut Settings) -> Result<SessionsConfig, ConfigError> {
    let max_mb = *s.sessions_max_mb.get_or_insert(100);
    if max_mb == 0 || max_mb > 1 << 20 {
        return Err(invalid("sessions-max-mb", "must be between 1 and 1048576"));
    }
    let files = *s.sessions_files.get_or_insert(10);
    if files == 0 || files > 99 {
        return Err(invalid("sessions-files", "must be between 1 and 99"));
    }
    let interval = duration("sessions-interval", s.sessions_interval.get_or_insert_with(|| "1h".into()), &units::SESSIONS_INTERVAL)?;
    if !interval.is_zero() && interval < Duration::from_secs(60) {
        return Err(invalid("sessions-interval", format!("must be {}", units::SESSIONS_INTERVAL.text)));
    }
    if let Some(t) = &s.ipfix {
        ipfix_target(t).map_err(|p| invalid("ipfix", p))?;
    }
    if s.sessions.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(invalid("sessions", "give a file"));
    }
    Ok(SessionsConfig {
        path: s.sessions.clone(),
        cap_bytes: max_mb << 20,
        files,
        interval: (!interval.is_zero()).then_some(interval),
        ipfix: s.ipfix.clone(),
    })
}

/// The `syslog` and `syslog-facility` settings, validated (off when `syslog` is unset; the
/// facility is checked even then, so a typo is caught before the day it is switched on).
pub fn syslog(s: &Settings) -> Result<Option<SyslogConfig>, ConfigError> {
    let facility = s.syslog_facility.as_deref();
    let parsed = SyslogConfig::parse(s.syslog.as_deref().unwrap_or("unix:/dev/log"), facility).map_err(|(field, p)| invalid(field, p))?;
    Ok(s.syslog.is_some().then_some(parsed))
}

impl RunArgs {
    /// Read the config file (if any) with `--set` applied, put these flags over it key by key,
    /// fill defaults from the system, and validate.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let loaded = file::load(file::run_path(self.config.as_deref()).as_deref(), &self.set)?;
        let (settings, table) = over_file(&loaded, &self.settings)?;
        Config::resolve(settings, loaded.path.clone(), self).map_err(|e| loaded.place(e, &table))
    }
}

/// `flags` put over the file's settings key by key; also the merged table, to place errors.
fn over_file(loaded: &file::Loaded, flags: &Settings) -> Result<(Settings, toml::Table), ConfigError> {
    let mut table = loaded.table.clone();
    let flags = toml::Table::try_from(flags).map_err(|e| invalid("command line", e.to_string()))?;
    table.extend(flags);
    Ok((file::from_table(table.clone(), "command line")?, table))
}

/// What replay takes from `run`'s settings: the file (only one named: replay's output must not
/// depend on the machine), `--set`, and the flags over them, resolved by the same code as `run`'s
/// ([`Judging`]). The rest of the settings (returned with their defaults unfilled) are replay's to
/// interpret: `home-net`, `alerts`, `evidence`, `ebpf-object`.
pub fn for_replay(config: Option<&std::path::Path>, sets: &[String], flags: &Settings) -> Result<(Settings, Judging), ConfigError> {
    let loaded = file::load(config, sets)?;
    let (mut settings, table) = over_file(&loaded, flags)?;
    let judging = Judging::resolve(&mut settings).map_err(|e| loaded.place(e, &table))?;
    Ok((settings, judging))
}

/// The settings that say how traffic is counted and judged, the same in `run` and in replay: the
/// flow table's size and rules, what is opened as VXLAN, the alert window and the detectors.
#[derive(Debug, Clone)]
pub struct Judging {
    pub flow_capacity: u32,
    pub flow_idle: Duration,
    pub syn_track_rate: u64,
    pub vxlan_port: u16,
    pub alert_window: Duration,
    pub detectors: DetectorsConfig,
}

impl Judging {
    /// Fill these settings' defaults into `s`, validate, and type them.
    pub fn resolve(s: &mut Settings) -> Result<Judging, ConfigError> {
        let text = |v: &mut Option<String>, default: &str| v.get_or_insert_with(|| default.to_string()).clone();
        let flow_idle = duration("flow-idle", &text(&mut s.flow_idle, "120s"), &units::FLOW_IDLE)?;
        let alert_window = duration("alert-window", &text(&mut s.alert_window, "60s"), &units::ALERT_WINDOW)?;
        let flow_capacity = *s.flow_capacity.get_or_insert(probe_common::maps::DEFAULT_FLOW_CAPACITY);
        if !(1024..=1 << 26).contains(&flow_capacity) {
            return Err(invalid("flow-capacity", format!("{flow_capacity} is outside 1024..=67108864")));
        }
        let syn_track_rate = *s.syn_track_rate.get_or_insert(probe_common::maps::DEFAULT_SYN_TRACK_RATE);
        if syn_track_rate > 10_000_000 {
            return Err(invalid("syn-track-rate", "must be between 0 and 10000000"));
        }
        let vxlan_port = *s.vxlan_port.get_or_insert(probe_common::parse::VXLAN_PORT_DEFAULT);
        if vxlan_port == 0 {
            return Err(invalid("vxlan-port", "must be a UDP port, 1 to 65535"));
        }
        let detectors = s.detectors.get_or_insert_with(DetectorsConfig::default).clone();
        detectors.validate()?;
        Ok(Judging { flow_capacity, flow_idle, syn_track_rate, vxlan_port, alert_window, detectors })
    }
}

/// `check-config` and a SIGHUP reload over config text instead of a file, for the fuzz target:
/// the text validated and rendered as `check-config` does, then applied as a reload over the
/// defaults, as the running agent would. Every input ends in a result; a panic is a bug.
pub fn exercise(text: &str) {
    let Ok(settings) = file::parse(text, "fuzz") else { return };
    let cli = RunArgs::default();
    if let Ok(config) = Config::resolve(settings.clone(), None, cli.clone()) {
        let _ = config.render();
    }
    let running = Settings::default();
    let _ = reload::needs_restart(&reload::changed(&running, &settings));
    let _ = Config::resolve(reload::in_force(&running, &settings), None, cli);
}

impl Config {
    /// Fill every unset setting with its default, validate, and type it.
    pub fn resolve(mut s: Settings, source: Option<PathBuf>, cli: RunArgs) -> Result<Config, ConfigError> {
        let text = |v: &mut Option<String>, default: &str| v.get_or_insert_with(|| default.to_string()).clone();
        let metrics_text = text(&mut s.metrics_addr, "127.0.0.1:9750");
        let metrics_addr = metrics_text.parse().map_err(|_| invalid("metrics-addr", format!("`{metrics_text}` is not an address:port")))?;
        let poll_interval = duration("poll-interval", &text(&mut s.poll_interval, "1s"), &units::POLL_INTERVAL)?;
        let Judging { flow_capacity, flow_idle, syn_track_rate, vxlan_port, alert_window, detectors } = Judging::resolve(&mut s)?;
        let summary = duration("summary-interval", &text(&mut s.summary_interval, "5s"), &units::SUMMARY_INTERVAL)?;
        let event_rate = *s.event_rate.get_or_insert(probe_common::maps::DEFAULT_EVENT_RATE);
        if event_rate == 0 || event_rate > 10_000_000 {
            return Err(invalid("event-rate", "must be between 1 and 10000000"));
        }
        let mode = *s.mode.get_or_insert_default();
        let mut home_nets = Vec::new();
        for text in s.home_net.iter().flatten() {
            home_nets.push(parse_net(text).map_err(|p| invalid("home-net", p))?);
        }
        let mut home_prefixes = HomePrefixes::default();
        if mode == Mode::Sensor {
            if home_nets.is_empty() {
                return Err(invalid("home-net", "sensor mode needs the networks it watches: give --home-net CIDR"));
            }
            home_prefixes = detect::HomeNets(home_nets.clone()).prefixes().map_err(|p| invalid("home-net", p))?;
        }
        if home_nets.is_empty() {
            home_nets = netinfo::local_addresses().map_err(|e| ConfigError::NoDefault { field: "home-net", problem: e.to_string() })?;
        }
        s.home_net = Some(home_nets.iter().map(|n| n.to_string()).collect());
        let mut ifaces = s.iface.clone().unwrap_or_default();
        for name in &ifaces {
            if name.is_empty() || name.len() > 15 || name.contains('/') || name.contains(char::is_whitespace) {
                return Err(invalid("iface", format!("`{name}` is not an interface name")));
            }
        }
        if ifaces.is_empty() {
            let name = netinfo::default_route_iface().map_err(|e| ConfigError::NoDefault { field: "iface", problem: e.to_string() })?;
            ifaces.push(name);
        }
        ifaces.dedup();
        s.iface = Some(ifaces.clone());
        let explicit = s.evidence.is_some();
        let evidence_dir = text(&mut s.evidence, DEFAULT_EVIDENCE_DIR);
        let max_mb = *s.evidence_max_mb.get_or_insert(256);
        if max_mb == 0 || max_mb > 1 << 20 {
            return Err(invalid("evidence-max-mb", "must be between 1 and 1048576"));
        }
        let evidence = match evidence_dir.as_str() {
            "off" => Evidence::Off,
            "" => return Err(invalid("evidence", "give a directory, or `off`")),
            dir => Evidence::Dir {
                path: PathBuf::from(dir),
                max_bytes: max_mb << 20,
                explicit,
                shared_ok: *s.evidence_shared_dir.get_or_insert(false),
            },
        };
        let sensor_pass = *s.sensor_pass.get_or_insert(false);
        if sensor_pass && mode != Mode::Sensor {
            return Err(invalid("sensor-pass", "only a sensor (--mode sensor) has copies to pass"));
        }
        let mut drop_policy = 0u8;
        for name in s.drop.get_or_insert_with(Vec::new).iter() {
            let Some(bit) = DROP_REASON_NAMES.iter().position(|n| *n == name.trim()) else {
                return Err(invalid("drop", format!("`{name}` is not a drop reason (one of: {})", DROP_REASON_NAMES.join(", "))));
            };
            drop_policy |= 1 << bit;
        }
        if drop_policy != 0 && mode == Mode::Sensor {
            return Err(invalid("drop", "a sensor sees copies: only a gateway (--mode gateway) can drop"));
        }
        let drop_dry_run = *s.drop_dry_run.get_or_insert(false);
        if drop_dry_run && drop_policy == 0 {
            return Err(invalid("drop-dry-run", "give the reasons to count with --drop REASON,..."));
        }
        Ok(Config {
            ifaces,
            home_nets,
            metrics_addr,
            poll_interval,
            xdp_mode: *s.xdp_mode.get_or_insert_default(),
            mode,
            home_prefixes,
            sensor_pass,
            drop_policy,
            drop_dry_run,
            flow_capacity,
            flow_idle,
            event_rate,
            syn_track_rate,
            vxlan_port,
            summary_interval: (!summary.is_zero()).then_some(summary),
            ebpf_object: s.ebpf_object.clone(),
            alerts_path: s.alerts.clone(),
            syslog: {
                s.syslog_facility.get_or_insert_with(|| "daemon".into());
                syslog(&s)?
            },
            sessions: sessions(&mut s)?,
            alert_format: *s.alert_format.get_or_insert_default(),
            alert_window,
            evidence,
            detectors,
            ebpf_log: *s.ebpf_log.get_or_insert(false),
            settings: s,
            source,
            cli,
        })
    }

    /// The program's `action::MODE_*` bits for this configuration.
    pub fn program_mode(&self) -> u32 {
        let mut bits = 0;
        if self.mode == Mode::Sensor {
            bits |= MODE_SENSOR;
            if self.sensor_pass {
                bits |= MODE_SENSOR_PASS;
            }
        }
        if self.drop_dry_run {
            bits |= MODE_DROP_DRY_RUN;
        }
        bits
    }

    /// The effective configuration as a config file would say it.
    pub fn render(&self) -> String {
        toml::to_string_pretty(&self.settings).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["flagprobe", "run", "--iface", "eth9", "--home-net", "10.0.0.0/8"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => *a,
            _ => unreachable!("run was parsed"),
        }
    }

    fn config(a: RunArgs) -> Result<Config, ConfigError> {
        Config::resolve(a.settings.clone(), None, a)
    }

    #[test]
    fn defaults_are_sane() {
        let c = config(args(&[])).unwrap();
        assert_eq!(c.metrics_addr, "127.0.0.1:9750".parse().unwrap());
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(c.xdp_mode, XdpMode::Auto);
        assert_eq!(c.flow_capacity, probe_common::maps::DEFAULT_FLOW_CAPACITY);
        assert_eq!(c.ifaces, ["eth9"]);
        assert_eq!(c.home_nets, ["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert!(!c.ebpf_log);
    }

    #[test]
    fn errors_name_the_field() {
        let e = config(args(&["--poll-interval", "soon"])).unwrap_err().to_string();
        assert!(e.starts_with("invalid poll-interval:"), "{e}");
        let e = config(args(&["--metrics-addr", "nowhere"])).unwrap_err().to_string();
        assert!(e.starts_with("invalid metrics-addr:"), "{e}");
        let e = config(args(&["--home-net", "10.0.0.0/33"])).unwrap_err().to_string();
        assert!(e.starts_with("invalid home-net:"), "{e}");
        let e = config(args(&["--flow-capacity", "12"])).unwrap_err().to_string();
        assert!(e.starts_with("invalid flow-capacity:"), "{e}");
        assert!(Cli::try_parse_from(["flagprobe", "run", "--xdp-mode", "turbo"]).is_err());
    }

    #[test]
    fn modes_and_drop_reasons_are_checked_together() {
        let c = config(args(&["--drop", "unsolicited-synack,invalid-flags", "--drop-dry-run"])).unwrap();
        assert_eq!((c.drop_policy, c.program_mode()), (0b11, MODE_DROP_DRY_RUN));
        let c = config(args(&["--mode", "sensor", "--sensor-pass"])).unwrap();
        assert_eq!(c.program_mode(), MODE_SENSOR | MODE_SENSOR_PASS);
        let e = config(args(&["--drop", "rst"])).unwrap_err().to_string();
        assert!(e.starts_with("invalid drop: `rst` is not a drop reason"), "{e}");
        let e = config(args(&["--mode", "sensor", "--drop", "invalid-flags"])).unwrap_err().to_string();
        assert!(e.starts_with("invalid drop:"), "{e}");
        let e = config(args(&["--drop-dry-run"])).unwrap_err().to_string();
        assert!(e.starts_with("invalid drop-dry-run:"), "{e}");
        let e = config(args(&["--sensor-pass"])).unwrap_err().to_string();
        assert!(e.starts_with("invalid sensor-pass:"), "{e}");
        let argv = ["flagprobe", "run", "--iface", "eth9", "--mode", "sensor"];
        let Command::Run(a) = Cli::try_parse_from(argv).unwrap().command else { unreachable!("run was parsed") };
        let e = config(*a).unwrap_err().to_string();
        assert!(e.starts_with("invalid home-net: sensor mode needs"), "{e}");
    }

    #[test]
    fn the_command_line_wins_over_the_file_key_by_key() {
        let dir = std::env::temp_dir().join(format!("fp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.toml");
        std::fs::write(&path, "poll-interval = \"3s\"\nflow-capacity = 4096\nebpf-log = true\n").unwrap();
        let mut a = args(&["--poll-interval", "2s"]);
        a.config = Some(path);
        let c = a.into_config().unwrap();
        assert_eq!((c.poll_interval, c.flow_capacity, c.ebpf_log), (Duration::from_secs(2), 4096, true));
    }

    #[test]
    fn ebpf_log_is_a_switch_on_the_command_line() {
        assert_eq!(args(&["--ebpf-log"]).settings.ebpf_log, Some(true));
        assert_eq!(args(&["--ebpf-log=false"]).settings.ebpf_log, Some(false));
        assert_eq!(args(&[]).settings.ebpf_log, None);
    }

    #[test]
    fn the_rendering_reads_back_as_the_same_configuration() {
        let c = config(args(&["--summary-interval", "0s"])).unwrap();
        let again: Settings = toml::from_str(&c.render()).unwrap();
        assert_eq!(again, c.settings, "every setting, defaults included, survives the round trip");
        assert!(c.render().contains("[detectors.scan]"), "{}", c.render());
    }
}
