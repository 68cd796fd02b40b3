//! The command line: `flagprobe run | replay | sessions | check-config` (and the hidden `assets`). Each
//! subcommand's arguments belong to the module that runs it; this file only names them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{config::RunArgs, replay::ReplayArgs, sessions::query::SessionsArgs};

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
    Run(Box<RunArgs>),
    /// Replay captures through the same flow logic and detectors (offline, or --kernel).
    Replay(Box<ReplayArgs>),
    /// Query session records: which connections involved an address, and what flags each side sent.
    Sessions(Box<SessionsArgs>),
    /// Validate a config file (default /etc/flagprobe/flagprobe.toml) and print the effective configuration.
    CheckConfig { path: Option<PathBuf> },
    /// Write the man pages and shell completions into DIR (the package build's step).
    #[command(hide = true)]
    Assets { dir: PathBuf },
}
