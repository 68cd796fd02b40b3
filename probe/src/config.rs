//! Command line and config file → one validated [`Config`]. Every setting is both a flag and a key
//! of the TOML file (same kebab-case name); the command line wins. Every error is one line naming
//! the field.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{alert::TerminalFormat, config_file::FileConfig, detect::DetectorsConfig, netinfo};

/// Where the config file is looked for when `--config` is not given (absent is fine).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/flagprobe/flagprobe.toml";

#[derive(Debug, Parser)]
#[command(name = "flagprobe", version, about = "Why did this TCP reset happen? TCP flag classifier for edge gateways (eBPF/XDP)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing's env-filter syntax), e.g. `info`, `flagprobe=debug`.
    #[arg(long, global = true, default_value = "info", env = "FLAGPROBE_LOG")]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to interfaces, count, and serve metrics until SIGINT/SIGTERM; SIGHUP reloads.
    Run(RunArgs),
    /// Replay captures through the same flow logic and detectors (offline, or --kernel).
    Replay(crate::replay::ReplayArgs),
    /// Validate a config file (default /etc/flagprobe/flagprobe.toml) and print the effective configuration.
    CheckConfig { path: Option<PathBuf> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    /// Driver (native) mode, falling back to generic (skb) mode.
    #[default]
    Auto,
    Driver,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertFormat {
    /// Text on a terminal, JSON lines otherwise.
    #[default]
    Auto,
    Text,
    Json,
    Off,
}

impl AlertFormat {
    pub fn resolve(self) -> TerminalFormat {
        use std::io::IsTerminal;
        match self {
            AlertFormat::Auto if std::io::stdout().is_terminal() => TerminalFormat::Text,
            AlertFormat::Auto | AlertFormat::Json => TerminalFormat::Json,
            AlertFormat::Text => TerminalFormat::Text,
            AlertFormat::Off => TerminalFormat::Off,
        }
    }
}

/// `flagprobe run`'s flags. Unset flags fall back to the config file, then to the defaults.
#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// The TOML config file (default /etc/flagprobe/flagprobe.toml if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Interface to watch (repeatable). Default: the interface that holds the default route.
    #[arg(long = "iface", short = 'i')]
    pub iface: Vec<String>,
    /// A network of ours (repeatable). Default: the addresses assigned to this host.
    #[arg(long = "home-net")]
    pub home_net: Vec<String>,
    /// Where /metrics, /alerts, /healthz are served [default: 127.0.0.1:9750].
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// How often the maps are read, e.g. `1s`, `500ms` [default: 1s].
    #[arg(long)]
    pub poll_interval: Option<String>,
    /// [default: auto]
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,
    /// Flow-table slots over all CPUs, rounded up to a power of two per CPU [default: 262144].
    #[arg(long)]
    pub flow_capacity: Option<u32>,
    /// A flow quiet this long gives up its slot to a new flow [default: 120s].
    #[arg(long)]
    pub flow_idle: Option<String>,
    /// Ring-buffer events per second each CPU may send, per hook [default: 5000].
    #[arg(long)]
    pub event_rate: Option<u64>,
    /// How often the live summary is printed; `0s` turns it off [default: 5s].
    #[arg(long)]
    pub summary_interval: Option<String>,
    /// The eBPF object to load instead of the one built into the binary.
    #[arg(long)]
    pub ebpf_object: Option<PathBuf>,
    /// Append alerts as JSON lines to this file (never truncated).
    #[arg(long)]
    pub alerts: Option<PathBuf>,
    /// Alerts on stdout [default: auto: text on a terminal, JSON lines otherwise].
    #[arg(long, value_enum)]
    pub alert_format: Option<AlertFormat>,
    /// One alert per detector and key per this window; changes come as one updated line [default: 60s].
    #[arg(long)]
    pub alert_window: Option<String>,
    /// Log malformed packets from inside the kernel programs (aya-log). Off by default: the level is
    /// frozen at load, so when off the verifier removes the logging code entirely.
    #[arg(long)]
    pub ebpf_log: bool,
    /// Any config-file key, e.g. `--set detectors.scan.min-ports=20` (repeatable; wins over the file).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub ifaces: Vec<String>,
    pub home_nets: Vec<IpNet>,
    pub metrics_addr: SocketAddr,
    pub poll_interval: Duration,
    pub xdp_mode: XdpMode,
    pub flow_capacity: u32,
    pub flow_idle: Duration,
    pub event_rate: u64,
    pub summary_interval: Option<Duration>,
    pub ebpf_object: Option<PathBuf>,
    pub alerts_path: Option<PathBuf>,
    pub alert_format: AlertFormat,
    pub alert_window: Duration,
    pub detectors: DetectorsConfig,
    pub ebpf_log: bool,
    /// The file these came from, if any (what SIGHUP re-reads).
    pub source: Option<PathBuf>,
    /// The command line, kept so a reload applies it over the re-read file again.
    pub cli: RunArgs,
}

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

/// `1s`, `250ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("`{text}` is not a duration like 1s or 500ms"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{text}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A CIDR, or a bare address meaning a host route.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| format!("`{text}` is not a CIDR like 192.0.2.0/24"))
}

fn duration(field: &'static str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).map_err(|p| invalid(field, p))
}

impl RunArgs {
    /// Read the config file (if any), apply these flags over it, fill defaults from the system,
    /// and validate.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let (file, source) = crate::config_file::load(self.config.as_deref(), &self.set)?;
        self.merge(file, source)
    }

    fn merge(self, f: FileConfig, source: Option<PathBuf>) -> Result<Config, ConfigError> {
        let cli = self.clone();
        let pick = |a: Vec<String>, b: Option<Vec<String>>| if a.is_empty() { b.unwrap_or_default() } else { a };
        let metrics_text = self.metrics_addr.or(f.metrics_addr).unwrap_or_else(|| "127.0.0.1:9750".into());
        let metrics_addr = metrics_text.parse().map_err(|_| invalid("metrics-addr", format!("`{metrics_text}` is not an address:port")))?;
        let poll_interval = duration("poll-interval", &self.poll_interval.or(f.poll_interval).unwrap_or_else(|| "1s".into()))?;
        if poll_interval < Duration::from_millis(10) || poll_interval > Duration::from_secs(3600) {
            return Err(invalid("poll-interval", "must be between 10ms and 1h"));
        }
        let flow_idle = duration("flow-idle", &self.flow_idle.or(f.flow_idle).unwrap_or_else(|| "120s".into()))?;
        if flow_idle < Duration::from_secs(1) {
            return Err(invalid("flow-idle", "must be at least 1s"));
        }
        let summary = duration("summary-interval", &self.summary_interval.or(f.summary_interval).unwrap_or_else(|| "5s".into()))?;
        let alert_window = duration("alert-window", &self.alert_window.or(f.alert_window).unwrap_or_else(|| "60s".into()))?;
        let flow_capacity = self.flow_capacity.or(f.flow_capacity).unwrap_or(probe_common::maps::DEFAULT_FLOW_CAPACITY);
        if !(1024..=1 << 26).contains(&flow_capacity) {
            return Err(invalid("flow-capacity", format!("{flow_capacity} is outside 1024..=67108864")));
        }
        let event_rate = self.event_rate.or(f.event_rate).unwrap_or(probe_common::maps::DEFAULT_EVENT_RATE);
        if event_rate == 0 || event_rate > 10_000_000 {
            return Err(invalid("event-rate", "must be between 1 and 10000000"));
        }
        let mut home_nets = Vec::new();
        for text in pick(self.home_net, f.home_net) {
            home_nets.push(parse_net(&text).map_err(|p| invalid("home-net", p))?);
        }
        if home_nets.is_empty() {
            home_nets = netinfo::local_addresses().map_err(|e| ConfigError::NoDefault { field: "home-net", problem: e.to_string() })?;
        }
        let mut ifaces = pick(self.iface, f.iface);
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
        let detectors = f.detectors.unwrap_or_default();
        detectors.validate()?;
        Ok(Config {
            ifaces,
            home_nets,
            metrics_addr,
            poll_interval,
            xdp_mode: self.xdp_mode.or(f.xdp_mode).unwrap_or_default(),
            flow_capacity,
            flow_idle,
            event_rate,
            summary_interval: (!summary.is_zero()).then_some(summary),
            ebpf_object: self.ebpf_object.or(f.ebpf_object),
            alerts_path: self.alerts.or(f.alerts),
            alert_format: self.alert_format.or(f.alert_format).unwrap_or_default(),
            alert_window,
            detectors,
            ebpf_log: self.ebpf_log || f.ebpf_log.unwrap_or(false),
            source,
            cli,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["flagprobe", "run", "--config", "/nonexistent-ok", "--iface", "eth9", "--home-net", "10.0.0.0/8"];
        argv.retain(|a| *a != "--config" && *a != "/nonexistent-ok");
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => a,
            _ => unreachable!("run was parsed"),
        }
    }

    fn config(a: RunArgs) -> Result<Config, ConfigError> {
        a.merge(FileConfig::default(), None)
    }

    #[test]
    fn defaults_are_sane() {
        let c = config(args(&[])).unwrap();
        assert_eq!(c.metrics_addr, "127.0.0.1:9750".parse().unwrap());
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(c.xdp_mode, XdpMode::Auto);
        assert_eq!(c.flow_capacity, 262_144);
        assert_eq!(c.ifaces, ["eth9"]);
        assert_eq!(c.home_nets, ["10.0.0.0/8".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1d").is_err());
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
    fn the_command_line_wins_over_the_file() {
        let file = FileConfig { poll_interval: Some("3s".into()), flow_capacity: Some(4096), ..Default::default() };
        let c = args(&["--poll-interval", "2s"]).merge(file, None).unwrap();
        assert_eq!((c.poll_interval, c.flow_capacity), (Duration::from_secs(2), 4096));
    }

    #[test]
    fn bare_address_is_a_host_net() {
        assert_eq!(parse_net("192.0.2.7").unwrap(), "192.0.2.7/32".parse::<IpNet>().unwrap());
        assert_eq!(parse_net("192.0.2.7/24").unwrap(), "192.0.2.0/24".parse::<IpNet>().unwrap());
    }
}
