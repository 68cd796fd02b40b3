//! Everything that holds an aya handle: loading and attaching the programs ([`loader`]), the
//! kernel's clocks ([`clock`]), the mmap'd flow table ([`flowtable`]) and the ring-buffer reader
//! ([`ring`]). Above this line the agent deals in probe-common types and wall-clock nanoseconds
//! only: every kernel timestamp is converted here, once.

pub mod clock;
pub mod flowtable;
pub mod loader;
pub mod ring;

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
