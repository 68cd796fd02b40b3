//! flagprobe's agent: loads the eBPF programs, reads what they count, and explains it.
//!
//! # Layout
//! Top to bottom; a module imports only what is listed below it.
//! - [`docs`]: the man pages and shell completions, from the command line's definitions.
//! - [`cli`]: the command line (`run`, `replay`, `check-config`), each subcommand's arguments
//!   owned by the module that runs it.
//! - [`config`]: every setting declared once ([`config::Settings`]), command line over file,
//!   defaults, validation, and what SIGHUP may change. Assembles the subsystems' own setting types;
//!   nothing below imports it.
//! - [`agent`]: `flagprobe run`: the engine thread, the per-interface poller, HTTP, the summary line.
//! - [`replay`]: `flagprobe replay`: captures through the same logic and detectors, or `--kernel`.
//! - [`pipeline`]: flow changes and notable packets → detectors → dedup → sinks and metrics (live
//!   and replay alike).
//! - [`detect`]: the detectors, one file each, pure, time as a parameter.
//! - [`flows`]: flow-table slots → flows changed since the last poll, merged across CPUs; and the
//!   same per-packet logic over the same kind of bounded table ([`flows::SoftTable`]).
//! - [`kernel`]: everything that holds an aya handle: load/attach, the clocks (the one place
//!   kernel time becomes wall-clock time), the mmap'd flow table, the ring-buffer reader.
//! - [`alert`]: the alert type, its renderings, dedup and sinks.
//! - [`metrics`]: every exported metric, declared once.
//! - [`units`]: durations and networks as text (a leaf).
//! - [`owned_files`]: files created without following a planted link, temporary names nobody can
//!   guess (a leaf).

pub mod agent;
pub mod alert;
pub mod cli;
pub mod config;
pub mod detect;
pub mod docs;
pub mod evidence;
pub mod flows;
pub mod kernel;
pub mod metrics;
pub mod owned_files;
pub mod pipeline;
pub mod replay;
pub mod sessions;
pub mod tunnel;
pub mod units;

pub use agent::{RunError, run};
