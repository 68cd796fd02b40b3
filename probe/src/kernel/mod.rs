//! Everything that holds an aya handle: loading and attaching the programs ([`loader`]), the
//! kernel's clocks ([`clock`]), the mmap'd flow table ([`flowtable`]) and the ring-buffer reader
//! ([`ring`]), a sensor's AF_XDP socket for whole notable frames ([`xsk`]), and what the running
//! kernel lacks ([`features`]). Above this line the agent deals in probe-common types and wall-clock nanoseconds
//! only: every kernel timestamp is converted here, once.

pub mod clock;
pub mod features;
pub mod flowtable;
pub mod loader;
pub mod ring;
pub mod xsk;

use serde::{Deserialize, Serialize};

pub use loader::{LoadError, LoadOptions, Probe};

/// How XDP is attached (the `xdp-mode` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    /// Driver (native) mode, falling back to generic (skb) mode.
    #[default]
    Auto,
    Driver,
    Generic,
}

/// Where flagprobe sits (the `mode` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// On the host or router the traffic belongs to: XDP on ingress, TC on egress, packets pass
    /// (or are dropped, with `--drop`).
    #[default]
    Gateway,
    /// On a mirror or TAP port: both directions arrive as copies on ingress, direction comes from
    /// the home networks, copies are dropped after counting (`--sensor-pass` passes them).
    Sensor,
}
