//! The TOML config file: its shape (every `run` flag as a kebab-case key, plus `[detectors.*]`),
//! loading with errors that name the key and line, and rendering the effective configuration for
//! `flagprobe check-config`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    config::{AlertFormat, Config, ConfigError, DEFAULT_CONFIG_PATH, XdpMode},
    detect::DetectorsConfig,
};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub iface: Option<Vec<String>>,
    pub home_net: Option<Vec<String>>,
    pub metrics_addr: Option<String>,
    pub poll_interval: Option<String>,
    pub xdp_mode: Option<XdpMode>,
    pub flow_capacity: Option<u32>,
    pub flow_idle: Option<String>,
    pub event_rate: Option<u64>,
    pub summary_interval: Option<String>,
    pub ebpf_object: Option<PathBuf>,
    pub alerts: Option<PathBuf>,
    pub alert_format: Option<AlertFormat>,
    pub alert_window: Option<String>,
    pub detectors: Option<DetectorsConfig>,
}

/// Parse config text; errors name the key path (`detectors.scan.min-ports`) and the line.
pub fn parse(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::File { path: path.into(), problem: one_line(&e.to_string()) })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        if key.is_empty() || key == "." {
            ConfigError::File { path: path.into(), problem: format!("{}{at}", one_line(inner.message())) }
        } else {
            ConfigError::Invalid { field: format!("{key}{at}"), problem: one_line(inner.message()) }
        }
    })
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The file named by `--config` (must exist), else the default path if it exists, else nothing.
pub fn load(explicit: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>), ConfigError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
        None => return Ok((FileConfig::default(), None)),
    };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File { path: name.clone(), problem: e.to_string() })?;
    Ok((parse(&text, &name)?, Some(path)))
}

/// The effective configuration as a config file would say it.
pub fn render(c: &Config) -> String {
    let secs = |d: std::time::Duration| match d.as_millis() {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    };
    let f = FileConfig {
        iface: Some(c.ifaces.clone()),
        home_net: Some(c.home_nets.iter().map(|n| n.to_string()).collect()),
        metrics_addr: Some(c.metrics_addr.to_string()),
        poll_interval: Some(secs(c.poll_interval)),
        xdp_mode: Some(c.xdp_mode),
        flow_capacity: Some(c.flow_capacity),
        flow_idle: Some(secs(c.flow_idle)),
        event_rate: Some(c.event_rate),
        summary_interval: Some(c.summary_interval.map(secs).unwrap_or_else(|| "0s".into())),
        ebpf_object: c.ebpf_object.clone(),
        alerts: c.alerts_path.clone(),
        alert_format: Some(c.alert_format),
        alert_window: Some(secs(c.alert_window)),
        detectors: Some(c.detectors.clone()),
    };
    toml::to_string_pretty(&f).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let f = parse(
            r#"
            iface = ["eth1"]
            home-net = ["192.0.2.0/24"]
            poll-interval = "2s"
            xdp-mode = "generic"
            [detectors.scan]
            min-ports = 30
            [[detectors.rst-payload.signatures]]
            name = "acme"
            pattern = "ACME reset"
            severity = "high"
            explanation = "Our ACME appliance resets idle sessions with this text."
            "#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(f.xdp_mode, Some(XdpMode::Generic));
        let d = f.detectors.unwrap();
        assert_eq!(d.scan.min_ports, 30);
        assert_eq!(d.rst_payload.signatures[0].name, "acme");
    }

    #[test]
    fn errors_are_one_line_naming_the_key() {
        let e = parse("poll-interval = 5\n", "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("invalid poll-interval (line 1):"), "{e}");
        let e = parse("[detectors.scan]\nmin-ports = \"many\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("invalid detectors.scan.min-ports (line 2):"), "{e}");
        let e = parse("colour = \"blue\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("colour") && !e.contains('\n'), "{e}");
        let e = parse("[detectors]\nscan = 3\n", "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("invalid detectors.scan"), "{e}");
        let e = parse("iface = [\n", "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:") && !e.contains('\n'), "{e}");
    }
}
