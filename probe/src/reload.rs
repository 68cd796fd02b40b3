//! What a SIGHUP may change and what it may not: detector thresholds and signatures, the alert
//! window and the alert sinks are swapped in place; interfaces, addresses and kernel sizes need a
//! restart and are only reported.

use crate::config::Config;

/// The reloadable settings that differ, named as in the config file.
pub fn changed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&old.detectors, &new.detectors);
    let pairs = [
        ("detectors.backscatter-synack", format!("{:?}", a.backscatter_synack), format!("{:?}", b.backscatter_synack)),
        ("detectors.backscatter-rst", format!("{:?}", a.backscatter_rst), format!("{:?}", b.backscatter_rst)),
        ("detectors.rst-payload", format!("{:?}", a.rst_payload), format!("{:?}", b.rst_payload)),
        ("detectors.rst-injection", format!("{:?}", a.rst_injection), format!("{:?}", b.rst_injection)),
        ("detectors.rst-storm", format!("{:?}", a.rst_storm), format!("{:?}", b.rst_storm)),
        ("detectors.scan", format!("{:?}", a.scan), format!("{:?}", b.scan)),
        ("detectors.invalid-flags", format!("{:?}", a.invalid_flags), format!("{:?}", b.invalid_flags)),
        ("detectors.syn-flood", format!("{:?}", a.syn_flood), format!("{:?}", b.syn_flood)),
        ("alert-window", format!("{:?}", old.alert_window), format!("{:?}", new.alert_window)),
        ("alerts", format!("{:?}", old.alerts_path), format!("{:?}", new.alerts_path)),
        ("alert-format", format!("{:?}", old.alert_format), format!("{:?}", new.alert_format)),
    ];
    for (name, x, y) in pairs {
        if x != y {
            out.push(name.to_string());
        }
    }
    out
}

/// Settings that differ but only take effect after a restart.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let checks: [(&'static str, bool); 9] = [
        ("iface", old.ifaces != new.ifaces),
        ("home-net", old.home_nets != new.home_nets),
        ("metrics-addr", old.metrics_addr != new.metrics_addr),
        ("poll-interval", old.poll_interval != new.poll_interval),
        ("xdp-mode", old.xdp_mode != new.xdp_mode),
        ("flow-capacity", old.flow_capacity != new.flow_capacity),
        ("flow-idle", old.flow_idle != new.flow_idle),
        ("event-rate", old.event_rate != new.event_rate),
        ("ebpf-object", old.ebpf_object != new.ebpf_object),
    ];
    for (name, differs) in checks {
        if differs {
            out.push(name);
        }
    }
    out
}
