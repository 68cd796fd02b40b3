//! `flagprobe`: parse the command line, set up logging, run the library, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use probe::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::CheckConfig { path } => {
            let path = path.unwrap_or_else(|| probe::config::DEFAULT_CONFIG_PATH.into());
            let args = probe::config::RunArgs { config: Some(path.clone()), ..Default::default() };
            match args.into_config() {
                Ok(c) => {
                    println!(
                        "# {}: valid. Effective configuration (defaults filled in):\n{}",
                        path.display(),
                        probe::config_file::render(&c)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flagprobe: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Replay(args) => match probe::replay::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flagprobe: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let config = match args.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("flagprobe: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("flagprobe: starting the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let (reload_tx, reload_rx) = crossbeam_channel::unbounded();
            runtime.spawn(forward_sighup(reload_tx));
            match runtime.block_on(probe::run(config, shutdown_signal(), reload_rx)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flagprobe: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Each SIGHUP becomes a reload request for the engine.
async fn forward_sighup(tx: crossbeam_channel::Sender<()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        if tx.send(()).is_err() {
            return;
        }
    }
}
