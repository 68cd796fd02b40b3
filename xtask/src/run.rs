//! `cargo xtask run`: set up, build, then become `flagprobe run` on this host.

use std::{os::unix::process::CommandExt, process::Command};

use anyhow::Result;

pub fn run(args: &[String]) -> Result<()> {
    crate::build::all(true)?;
    let bin = crate::build::agent_binary(true);
    let err = Command::new(&bin).arg("run").args(args).exec();
    Err(anyhow::anyhow!("starting {}: {err}", bin.display()))
}
