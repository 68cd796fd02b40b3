//! `cargo xtask`: everything beyond plain cargo — the toolchain set-up, the eBPF build with the
//! pinned nightly, the agent run, the whole test suite and the benchmarks.

mod bench;
mod build;
mod demo;
mod fuzz;
mod package;
mod run;
mod setup;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install whatever is missing: apt packages, the pinned nightly with rust-src, bpf-linker.
    Setup,
    /// Build the eBPF object with the pinned nightly.
    BuildEbpf,
    /// Build the eBPF object and the agent (release).
    Build,
    /// Set up, build, and run the agent on this host (arguments after `--` go to `flagprobe run`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run every test, privileged ones included.
    Test {
        /// Extra arguments for `cargo test`, e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot Debian's kernels under qemu (6.1 and 6.12 unless named) and run the kernel-facing tests
    /// inside each: load and verify in every mode, BPF_PROG_TEST_RUN, replay --kernel, live stories.
    VmTest {
        /// A kernel line ("6.1", "6.12"), a Debian package name (`linux-image-...-amd64`) or a .deb.
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Test-name filters to run instead of the default set.
        #[arg(trailing_var_arg = true)]
        filters: Vec<String>,
    },
    /// Build flagprobe_<version>_amd64.deb and _arm64.deb into target/debian (cargo-deb, lintian).
    Package {
        /// The package version, revision included (default: the crate's, revision 1).
        #[arg(long)]
        deb_version: Option<String>,
    },
    /// A lab of network namespaces playing every story, alerts shown as they arrive (root).
    Demo,
    /// Fuzz the capture → decode → flow → detector path with cargo-fuzz for a while.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Measure the kernel program's per-packet cost against an empty XDP program; writes BENCHMARKS.md.
    Bench {
        /// BPF_PROG_TEST_RUN repeat count per measurement.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Rounds (pairs of empty/program runs) per frame.
        #[arg(long, default_value_t = 15)]
        rounds: u32,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::all(),
        Cmd::BuildEbpf => build::ebpf(),
        Cmd::Build => build::all(true),
        Cmd::Run { args } => run::run(&args),
        Cmd::Test { args } => test::run(&args),
        Cmd::Bench { repeat, rounds } => bench::run(repeat, rounds),
        Cmd::Fuzz { seconds } => fuzz::run(seconds),
        Cmd::VmTest { kernels, filters } => test::vm(&kernels, &filters),
        Cmd::Package { deb_version } => package::run(deb_version.as_deref()).map(drop),
        Cmd::Demo => demo::run(),
    }
}
