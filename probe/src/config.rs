//! Command line → one validated [`Config`]. Every error names the field it is about, in one line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::{alert::TerminalFormat, detect::DetectorsConfig, netinfo};

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
    /// Attach to interfaces, count, and serve metrics until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Replay captures through the same flow logic and detectors (offline, or --kernel).
    Replay(crate::replay::ReplayArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum XdpModeArg {
    /// Driver (native) mode, falling back to generic (skb) mode.
    #[default]
    Auto,
    Driver,
    Generic,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Interface to watch (repeatable). Default: the interface that holds the default route.
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<String>,
    /// A network of ours (repeatable). Default: the addresses assigned to this host.
    #[arg(long = "home-net")]
    pub home_nets: Vec<String>,
    /// Where /metrics, /healthz are served.
    #[arg(long, default_value = "127.0.0.1:9750")]
    pub metrics_addr: String,
    /// How often the maps are read, e.g. `1s`, `500ms`.
    #[arg(long, default_value = "1s")]
    pub poll_interval: String,
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,
    /// Flow-table slots over all CPUs (rounded up to a power of two per CPU).
    #[arg(long, default_value_t = probe_common::maps::DEFAULT_FLOW_CAPACITY)]
    pub flow_capacity: u32,
    /// A flow quiet this long gives up its slot to a new flow, e.g. `120s`.
    #[arg(long, default_value = "120s")]
    pub flow_idle: String,
    /// Ring-buffer events per second each CPU may send, per hook.
    #[arg(long, default_value_t = probe_common::maps::DEFAULT_EVENT_RATE)]
    pub event_rate: u64,
    /// How often the live summary is printed (`0s` turns it off).
    #[arg(long, default_value = "5s")]
    pub summary_interval: String,
    /// The eBPF object to load instead of the one built into the binary.
    #[arg(long)]
    pub ebpf_object: Option<PathBuf>,
    /// Append alerts as JSON lines to this file (never truncated).
    #[arg(long = "alerts")]
    pub alerts_path: Option<PathBuf>,
    /// Alerts on stdout: readable text on a terminal, JSON lines otherwise (auto), or as chosen.
    #[arg(long, value_enum, default_value_t = AlertFormatArg::Auto)]
    pub alert_format: AlertFormatArg,
    /// One alert per detector and key per this window; later changes come as one updated line.
    #[arg(long, default_value = "60s")]
    pub alert_window: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AlertFormatArg {
    #[default]
    Auto,
    Text,
    Json,
    Off,
}

impl AlertFormatArg {
    /// `auto` → text on a terminal, JSON lines otherwise.
    pub fn resolve(self) -> TerminalFormat {
        use std::io::IsTerminal;
        match self {
            AlertFormatArg::Auto if std::io::stdout().is_terminal() => TerminalFormat::Text,
            AlertFormatArg::Auto | AlertFormatArg::Json => TerminalFormat::Json,
            AlertFormatArg::Text => TerminalFormat::Text,
            AlertFormatArg::Off => TerminalFormat::Off,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    Auto,
    Driver,
    Generic,
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
    pub alert_format: TerminalFormat,
    pub alert_window: Duration,
    pub detectors: DetectorsConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field's value does not parse or is out of range.
    #[error("invalid {field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    /// A default could not be worked out from the system.
    #[error("cannot choose a default for {field}: {problem}")]
    NoDefault { field: &'static str, problem: String },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, problem: problem.into() }
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
        _ => {
            return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s, m or h)"));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{text}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl RunArgs {
    /// Validate, filling defaults from the system (default-route interface, local addresses).
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let metrics_addr =
            self.metrics_addr.parse().map_err(|_| invalid("metrics-addr", format!("`{}` is not an address:port", self.metrics_addr)))?;
        let poll_interval = parse_duration(&self.poll_interval).map_err(|p| invalid("poll-interval", p))?;
        if poll_interval < Duration::from_millis(10) || poll_interval > Duration::from_secs(3600) {
            return Err(invalid("poll-interval", "must be between 10ms and 1h"));
        }
        let flow_idle = parse_duration(&self.flow_idle).map_err(|p| invalid("flow-idle", p))?;
        if flow_idle < Duration::from_secs(1) {
            return Err(invalid("flow-idle", "must be at least 1s"));
        }
        let summary = parse_duration(&self.summary_interval).map_err(|p| invalid("summary-interval", p))?;
        let alert_window = parse_duration(&self.alert_window).map_err(|p| invalid("alert-window", p))?;
        if !(1024..=1 << 26).contains(&self.flow_capacity) {
            return Err(invalid("flow-capacity", format!("{} is outside 1024..=67108864", self.flow_capacity)));
        }
        if self.event_rate == 0 || self.event_rate > 10_000_000 {
            return Err(invalid("event-rate", "must be between 1 and 10000000"));
        }
        let mut home_nets = Vec::new();
        for text in &self.home_nets {
            home_nets.push(parse_net(text).map_err(|p| invalid("home-net", p))?);
        }
        if home_nets.is_empty() {
            home_nets = netinfo::local_addresses().map_err(|e| ConfigError::NoDefault { field: "home-net", problem: e.to_string() })?;
        }
        let mut ifaces = self.ifaces.clone();
        for name in &ifaces {
            if name.is_empty() || name.len() > 15 || name.contains('/') {
                return Err(invalid("iface", format!("`{name}` is not an interface name")));
            }
        }
        if ifaces.is_empty() {
            let name = netinfo::default_route_iface().map_err(|e| ConfigError::NoDefault { field: "iface", problem: e.to_string() })?;
            ifaces.push(name);
        }
        ifaces.dedup();
        let xdp_mode = match self.xdp_mode {
            XdpModeArg::Auto => XdpMode::Auto,
            XdpModeArg::Driver => XdpMode::Driver,
            XdpModeArg::Generic => XdpMode::Generic,
        };
        Ok(Config {
            ifaces,
            home_nets,
            metrics_addr,
            poll_interval,
            xdp_mode,
            flow_capacity: self.flow_capacity,
            flow_idle,
            event_rate: self.event_rate,
            summary_interval: (!summary.is_zero()).then_some(summary),
            ebpf_object: self.ebpf_object,
            alerts_path: self.alerts_path,
            alert_format: self.alert_format.resolve(),
            alert_window,
            detectors: DetectorsConfig::default(),
        })
    }
}

/// A CIDR, or a bare address meaning a host route.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| format!("`{text}` is not a CIDR like 192.0.2.0/24"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["flagprobe", "run", "--iface", "eth9", "--home-net", "10.0.0.0/8"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => a,
            Command::Replay(_) => unreachable!("run was parsed"),
        }
    }

    #[test]
    fn defaults_are_sane() {
        let c = args(&[]).into_config().unwrap();
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
        let e = args(&["--poll-interval", "soon"]).into_config().unwrap_err().to_string();
        assert!(e.starts_with("invalid poll-interval:"), "{e}");
        let e = args(&["--metrics-addr", "nowhere"]).into_config().unwrap_err().to_string();
        assert!(e.starts_with("invalid metrics-addr:"), "{e}");
        let e = args(&["--home-net", "10.0.0.0/33"]).into_config().unwrap_err().to_string();
        assert!(e.starts_with("invalid home-net:"), "{e}");
        let e = args(&["--flow-capacity", "12"]).into_config().unwrap_err().to_string();
        assert!(e.starts_with("invalid flow-capacity:"), "{e}");
        assert!(Cli::try_parse_from(["flagprobe", "run", "--xdp-mode", "turbo"]).is_err());
    }

    #[test]
    fn bare_address_is_a_host_net() {
        assert_eq!(parse_net("192.0.2.7").unwrap(), "192.0.2.7/32".parse::<IpNet>().unwrap());
        assert_eq!(parse_net("192.0.2.7/24").unwrap(), "192.0.2.0/24".parse::<IpNet>().unwrap());
    }
}
