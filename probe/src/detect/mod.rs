//! Detectors: pure judges of flow changes and notable packets. Each lives in its own file with its
//! config (a `#[serde(default)]` struct) and its tests; time is always a parameter. A new detector is
//! one file and one line in [`all`].
//!
//! "Ours" is decided by the home networks: of a flow's two endpoints, the one inside them is local.
//! Flows with no local endpoint are not ours to judge and are skipped.

pub mod backscatter_rst;
pub mod backscatter_synack;
pub mod invalid_flags;
mod remote_record;
pub mod rst_injection;
pub mod rst_payload;
pub mod rst_storm;
pub mod scan;
pub mod syn_flood;
mod window;

use std::net::IpAddr;

use ipnet::IpNet;
use probe_common::{
    event::PacketEvent,
    flow::{FAMILY_V4, FlowEntry, FlowKey, Side, SideStats},
};
use serde::{Deserialize, Serialize};

use crate::alert::Alert;

/// Which addresses are ours.
#[derive(Debug, Clone, Default)]
pub struct HomeNets(pub Vec<IpNet>);

impl HomeNets {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The local side of a flow: the home endpoint; when both are home, the responder.
    pub fn local_side(&self, key: &FlowKey, initiator: Side) -> Option<Side> {
        let lo = self.contains(addr(key.addr_lo, key.family));
        let hi = self.contains(addr(key.addr_hi, key.family));
        match (lo, hi) {
            (true, true) => Some(initiator.other()),
            (true, false) => Some(Side::Lo),
            (false, true) => Some(Side::Hi),
            (false, false) => None,
        }
    }
}

/// An address from the contract's 16-byte form.
pub fn addr(bytes: [u8; 16], family: u8) -> IpAddr {
    if family == FAMILY_V4 { IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]) } else { IpAddr::from(bytes) }
}

/// A flow that changed since the last poll, from our side's point of view.
pub struct FlowView<'a> {
    pub iface: &'a str,
    pub now: &'a FlowEntry,
    pub before: &'a FlowEntry,
    pub local: Side,
    /// Add to a flow timestamp (kernel clock) to get wall-clock ns.
    pub clock_offset_ns: i64,
}

impl FlowView<'_> {
    pub fn remote(&self) -> Side {
        self.local.other()
    }
    pub fn local_addr(&self) -> IpAddr {
        addr(self.now.key.endpoint(self.local).0, self.now.key.family)
    }
    pub fn remote_addr(&self) -> IpAddr {
        addr(self.now.key.endpoint(self.remote()).0, self.now.key.family)
    }
    pub fn local_port(&self) -> u16 {
        self.now.key.endpoint(self.local).1
    }
    pub fn remote_port(&self) -> u16 {
        self.now.key.endpoint(self.remote()).1
    }
    /// What a side has sent in total, and what it had at the previous poll.
    pub fn side(&self, side: Side) -> (&SideStats, &SideStats) {
        (&self.now.sides[side.index()], &self.before.sides[side.index()])
    }
    pub fn wall(&self, kernel_ns: u64) -> u64 {
        (kernel_ns as i64 + self.clock_offset_ns).max(0) as u64
    }
    pub fn first_seen(&self) -> u64 {
        self.wall(self.now.first_seen)
    }
    pub fn last_seen(&self) -> u64 {
        self.wall(self.now.last_seen)
    }
    pub fn remote_initiated(&self) -> bool {
        self.now.initiator == self.remote() as u8
    }
}

/// A notable packet from the ring buffer, from our side's point of view.
pub struct EventView<'a> {
    pub iface: &'a str,
    pub event: &'a PacketEvent,
    /// Wall-clock ns of the packet.
    pub at_ns: u64,
    /// True when the packet's sender is a home address; false when it came from outside.
    pub from_local: bool,
    /// Add to a kernel timestamp to get wall-clock ns.
    pub clock_offset_ns: i64,
}

impl EventView<'_> {
    pub fn src(&self) -> IpAddr {
        addr(self.event.src, self.event.family)
    }
    pub fn dst(&self) -> IpAddr {
        addr(self.event.dst, self.event.family)
    }
    /// The sender's side in the flow key, and the receiver's.
    pub fn sides(&self) -> (Side, Side) {
        let (_, sender) = FlowKey::canonical(&self.event.endpoints());
        (sender, sender.other())
    }
}

/// Every detector's contract.
pub trait Detector: Send {
    fn name(&self) -> &'static str;
    /// Flows that changed since the last poll.
    fn observe_flows(&mut self, _now_ns: u64, _flows: &[FlowView<'_>]) -> Vec<Alert> {
        Vec::new()
    }
    /// One notable packet, as it arrives.
    fn observe_event(&mut self, _event: &EventView<'_>) -> Vec<Alert> {
        Vec::new()
    }
    /// Forget state older than the detector's window (called every poll).
    fn expire(&mut self, _now_ns: u64) {}
    /// Counts for detector-level metrics since the last call: (metric, label value, n).
    fn take_tallies(&mut self) -> Vec<(&'static str, String, u64)> {
        Vec::new()
    }
}

/// `flagprobe_backscatter_packets_total{kind}`.
pub const TALLY_BACKSCATTER: &str = "backscatter_packets";
/// `flagprobe_rst_payload_packets_total{signature}`.
pub const TALLY_RST_PAYLOAD: &str = "rst_payload_packets";

/// Thresholds and switches for every detector.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DetectorsConfig {
    pub backscatter_synack: backscatter_synack::Config,
    pub backscatter_rst: backscatter_rst::Config,
    pub rst_payload: rst_payload::Config,
    pub rst_injection: rst_injection::Config,
    pub rst_storm: rst_storm::Config,
    pub scan: scan::Config,
    pub invalid_flags: invalid_flags::Config,
    pub syn_flood: syn_flood::Config,
}

impl DetectorsConfig {
    /// What serde cannot check: values that parse but make no sense.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        use crate::config::invalid;
        for (i, s) in self.rst_payload.signatures.iter().enumerate() {
            if s.pattern.is_empty() {
                return Err(invalid(format!("detectors.rst-payload.signatures[{i}].pattern"), "must not be empty"));
            }
            if s.name.is_empty() || s.name.len() > 64 || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid(
                    format!("detectors.rst-payload.signatures[{i}].name"),
                    "use 1-64 letters, digits, - or _ (it becomes a metric label)",
                ));
            }
        }
        let windows = [
            ("backscatter-synack.window-secs", self.backscatter_synack.window_secs),
            ("backscatter-rst.window-secs", self.backscatter_rst.window_secs),
            ("rst-payload.window-secs", self.rst_payload.window_secs),
            ("rst-storm.window-secs", self.rst_storm.window_secs),
            ("scan.window-secs", self.scan.window_secs),
            ("invalid-flags.window-secs", self.invalid_flags.window_secs),
            ("syn-flood.window-secs", self.syn_flood.window_secs),
        ];
        for (name, secs) in windows {
            if secs == 0 || secs > 86_400 {
                return Err(invalid(format!("detectors.{name}"), "must be between 1 and 86400 seconds"));
            }
        }
        for (name, v) in [
            ("rst-storm.min-ports", self.rst_storm.min_ports),
            ("rst-storm.min-remotes", self.rst_storm.min_remotes),
            ("scan.min-ports", self.scan.min_ports),
            ("scan.min-hosts", self.scan.min_hosts),
            ("syn-flood.min-half-open", self.syn_flood.min_half_open),
        ] {
            if v == 0 {
                return Err(invalid(format!("detectors.{name}"), "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// The detectors, in a stable order.
pub fn all(config: &DetectorsConfig) -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(backscatter_synack::BackscatterSynAck::new(config.backscatter_synack.clone())),
        Box::new(backscatter_rst::BackscatterRst::new(config.backscatter_rst.clone())),
        Box::new(rst_payload::RstPayload::new(config.rst_payload.clone())),
        Box::new(rst_injection::RstInjection::new(config.rst_injection.clone())),
        Box::new(rst_storm::RstStorm::new(config.rst_storm.clone())),
        Box::new(scan::Scan::new(config.scan.clone())),
        Box::new(invalid_flags::InvalidFlags::new(config.invalid_flags.clone())),
        Box::new(syn_flood::SynFlood::new(config.syn_flood.clone())),
    ]
}

#[cfg(test)]
pub mod testkit;
