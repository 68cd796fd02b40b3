//! `flagprobe`: parse the command line, set up logging, run the library, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use probe::{
    cli::{Cli, Command},
    config::{DEFAULT_CONFIG_PATH, RunArgs},
};

/// Exit code for a configuration that does not validate (nothing was attached).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A filter that does not parse would silently log at another level than asked: an error.
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("flagprobe: invalid --log `{}`: {e} (a level such as info or debug, or directives like probe=debug)", cli.log);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let outcome = match cli.command {
        Command::CheckConfig { path } => {
            let path = path.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
            RunArgs { config: Some(path.clone()), ..Default::default() }
                .into_config()
                .map(|c| {
                    println!("# {}: valid. Effective configuration (defaults filled in):\n{}", path.display(), c.render());
                })
                .map_err(|e| (e.to_string(), EXIT_CONFIG))
        }
        Command::Assets { dir } => probe::docs::write_assets(&dir)
            .map(|files| println!("wrote {} files under {}", files.len(), dir.display()))
            .map_err(|e| (format!("{}: {e}", dir.display()), 1)),
        // A setting that does not validate, or an input that is not there, is a configuration
        // error (2); a capture that cannot be read, 1.
        Command::Replay(args) => probe::replay::run(*args).map_err(|e| {
            let code = if matches!(
                e,
                probe::replay::ReplayError::Invalid { .. }
                    | probe::replay::ReplayError::Config(_)
                    | probe::replay::ReplayError::Input { .. }
            ) {
                EXIT_CONFIG
            } else {
                1
            };
            (e.to_string(), code)
        }),
        Command::Sessions(args) => {
            let configured = if args.files.is_empty() { probe::config::sessions_file(args.config.as_deref()) } else { Ok(None) };
            match configured {
                Err(e) => Err((e.to_string(), EXIT_CONFIG)),
                Ok(configured) => {
                    probe::sessions::query::run(&args, configured.as_deref(), &mut std::io::stdout().lock()).map(drop).map_err(|e| {
                        let code = if matches!(e, probe::sessions::query::QueryError::Read { .. }) { 1 } else { EXIT_CONFIG };
                        (e.to_string(), code)
                    })
                }
            }
        }
        Command::Run(args) => match (*args).into_config() {
            Err(e) => Err((e.to_string(), EXIT_CONFIG)),
            Ok(config) => run(config).map_err(|e| (e, 1)),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, code)) => {
            eprintln!("flagprobe: {message}");
            ExitCode::from(code)
        }
    }
}

/// The agent on a small tokio runtime, until SIGINT or SIGTERM; SIGHUP reloads.
fn run(config: probe::config::Config) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    let (reload_tx, reload_rx) = crossbeam_channel::unbounded();
    runtime.spawn(forward_sighup(reload_tx));
    runtime.block_on(probe::run(config, shutdown_signal(), reload_rx)).map_err(|e| e.to_string())
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
