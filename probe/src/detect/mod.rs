//! Detectors: pure judges of flow changes and notable packets. Each lives in its own file with its
//! config (a `#[serde(default)]` struct) and its tests; time is always a parameter. A new detector is
//! one file and one line in [`all`].
//!
//! "Ours" is decided by the home networks: of a flow's two endpoints, the one inside them is local.
//! Flows with no local endpoint are not ours to judge and are skipped.

mod dropped;
mod reflection;
mod remote_record;
mod window;

use std::net::IpAddr;

use ipnet::IpNet;
use probe_common::{
    event::PacketEvent,
    flow::{FlowEntry, FlowKey, Side, SideStats, addr_bytes},
    home::{HOME_PREFIXES_MAX, HomePrefix, HomePrefixes},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{alert::Alert, flows::aggregate::AggregateSnapshot};

/// Which addresses are ours.
#[derive(Debug, Clone, Default)]
pub struct HomeNets(pub Vec<IpNet>);

impl HomeNets {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The networks as the kernel program (and replay, for direction) holds them; an error when
    /// there are more than it has room for.
    pub fn prefixes(&self) -> Result<HomePrefixes, String> {
        if self.0.len() > HOME_PREFIXES_MAX {
            return Err(format!("at most {HOME_PREFIXES_MAX} networks decide direction, {} given", self.0.len()));
        }
        let mut out = HomePrefixes { count: self.0.len() as u32, ..HomePrefixes::default() };
        for (slot, net) in out.nets.iter_mut().zip(&self.0) {
            let (bytes, family) = addr_bytes(net.network());
            *slot = HomePrefix::new(bytes, net.prefix_len(), family);
        }
        Ok(out)
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
pub use probe_common::flow::ip_addr as addr;

/// A flow that changed since the last poll, from our side's point of view. Its timestamps are
/// wall-clock ns (capture time in replay): the kernel boundary converted them.
pub struct FlowView<'a> {
    pub iface: &'a str,
    pub now: &'a FlowEntry,
    pub before: &'a FlowEntry,
    pub local: Side,
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
    pub fn first_seen(&self) -> u64 {
        self.now.first_seen
    }
    pub fn last_seen(&self) -> u64 {
        self.now.last_seen
    }
    pub fn remote_initiated(&self) -> bool {
        self.now.initiator == self.remote() as u8
    }
}

/// A notable packet from the ring buffer, from our side's point of view. The event's timestamp
/// and its flow history are wall-clock ns, like [`FlowView`]'s.
pub struct EventView<'a> {
    pub iface: &'a str,
    pub event: &'a PacketEvent,
    /// Wall-clock ns of the packet.
    pub at_ns: u64,
    /// True when the packet's sender is a home address; false when it came from outside.
    pub from_local: bool,
    /// True when the packet's receiver is a home address (both are, on a loopback capture).
    pub to_local: bool,
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

/// The flood-proof aggregates of one interface (cumulative; a detector keeps what it needs to
/// diff), with the home networks to tell our services from others.
pub struct AggregateView<'a> {
    pub iface: &'a str,
    pub snapshot: &'a AggregateSnapshot,
    pub home: &'a HomeNets,
}

/// Every detector's contract.
pub trait Detector: Send {
    /// Flows that changed since the last poll.
    fn observe_flows(&mut self, _now_ns: u64, _flows: &[FlowView<'_>]) -> Vec<Alert> {
        Vec::new()
    }
    /// The aggregates a flood cannot push out, once per poll.
    fn observe_aggregates(&mut self, _now_ns: u64, _view: &AggregateView<'_>) -> Vec<Alert> {
        Vec::new()
    }
    /// One notable packet, as it arrives.
    fn observe_event(&mut self, _event: &EventView<'_>) -> Vec<Alert> {
        Vec::new()
    }
    /// The input has ended (end of a capture): nothing more will come, so judge what waits for a
    /// reaction that can no longer arrive.
    fn end_of_input(&mut self, _now_ns: u64) -> Vec<Alert> {
        Vec::new()
    }
    /// Forget state older than the detector's window (called every poll).
    fn expire(&mut self, _now_ns: u64) {}
    /// Counts for detector-level metrics since the last call.
    fn take_tallies(&mut self) -> Vec<Tally> {
        Vec::new()
    }
}

/// A detector-level count on its way to a metric; the pipeline maps each kind to its metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// `flagprobe_backscatter_packets_total{kind}`: `syn-ack` or `rst`.
    Backscatter { kind: &'static str, packets: u64 },
    /// `flagprobe_rst_payload_packets_total{signature}`: a signature name, or `none`.
    RstPayload { signature: String, packets: u64 },
    /// `flagprobe_alerts_suppressed_total{detector}`: alerts a detector folded into an incident
    /// instead of writing them (the incident's alert says how many).
    HeldBack { detector: &'static str, alerts: u64 },
}

/// A detector setting that parses but makes no sense: the key below `detectors.` and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Invalid { field: field.into(), problem: problem.into() }
    }

    /// The same error, named under a detector's section (`scan` + `min-ports` → `scan.min-ports`).
    fn under(self, section: &str) -> Self {
        Invalid { field: format!("{section}.{}", self.field), problem: self.problem }
    }
}

/// A window in seconds: at least one, at most a day.
pub fn check_window(field: &str, secs: u64) -> Result<(), Invalid> {
    if secs == 0 || secs > 86_400 {
        return Err(Invalid::new(field, "must be between 1 and 86400 seconds"));
    }
    Ok(())
}

/// A threshold that must be at least one.
pub fn check_at_least_one(field: &str, value: u64) -> Result<(), Invalid> {
    if value == 0 {
        return Err(Invalid::new(field, "must be at least 1"));
    }
    Ok(())
}

/// What each detector's `Config` (a `#[serde(default)]` struct in the detector's own file) offers.
pub trait DetectorConfig: Default + Clone + PartialEq + Serialize + DeserializeOwned + std::fmt::Debug {
    /// Whether the detector runs at all (`enabled = false` leaves it out of [`all`]).
    fn enabled(&self) -> bool;
    /// What serde cannot check: values that parse but make no sense; fields named within the section.
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
    /// The detector, configured.
    fn build(&self) -> Box<dyn Detector>;
}

/// The detectors, in a stable order. Adding one is its file plus one line here: the macro declares
/// the module, its `[detectors.NAME]` section (kebab-case), its validation and its place in [`all`].
macro_rules! detectors {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name;)*

        /// Thresholds and switches for every detector: one section per detector file.
        #[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
        #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
        pub struct DetectorsConfig {
            $(pub $name: $name::Config,)*
        }

        impl DetectorsConfig {
            /// Every section's own validation; errors name `NAME.KEY`.
            pub fn validate(&self) -> Result<(), Invalid> {
                $(DetectorConfig::validate(&self.$name).map_err(|e| e.under(&stringify!($name).replace('_', "-")))?;)*
                Ok(())
            }
        }

        /// The enabled detectors, in a stable order.
        pub fn all(config: &DetectorsConfig) -> Vec<Box<dyn Detector>> {
            let mut out = Vec::new();
            $(if config.$name.enabled() {
                out.push(config.$name.build());
            })*
            out
        }
    };
}

detectors! {
    backscatter_synack,
    backscatter_rst,
    rst_payload,
    rst_injection,
    rst_storm,
    scan,
    invalid_flags,
    syn_flood,
}

#[cfg(test)]
pub mod testkit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_detector_and_the_key() {
        let mut c = DetectorsConfig::default();
        assert_eq!(c.validate(), Ok(()));
        c.scan.min_ports = 0;
        assert_eq!(c.validate().unwrap_err().field, "scan.min-ports");
        let mut c = DetectorsConfig::default();
        c.rst_storm.window_secs = 0;
        assert_eq!(c.validate().unwrap_err().field, "rst-storm.window-secs");
    }

    #[test]
    fn a_disabled_detector_is_left_out() {
        let mut c = DetectorsConfig::default();
        let n = all(&c).len();
        c.scan.enabled = false;
        assert_eq!(all(&c).len(), n - 1);
    }
}
