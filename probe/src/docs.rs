//! `flagprobe assets DIR` (hidden): the man pages and shell completions, generated from the same
//! clap definitions as `--help`, so the installed documentation cannot drift from the binary.
//! The package build runs it; nothing else does.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Where each shell looks for a package's completions, relative to `/usr/share` (Debian's paths:
/// bash-completion's, zsh's vendor directory, fish's vendor directory), with the file name.
pub const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash-completion/completions/flagprobe"),
    (Shell::Zsh, "zsh/vendor-completions/_flagprobe"),
    (Shell::Fish, "fish/vendor_completions.d/flagprobe.fish"),
];

/// Writes `DIR/man/man8/flagprobe.8.gz`, one `flagprobe-SUBCOMMAND.8.gz` per visible subcommand,
/// and `DIR/completions/<path above>`; returns the files written.
pub fn write_assets(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man_dir = dir.join("man/man8");
    std::fs::create_dir_all(&man_dir)?;
    let mut pages = vec![cmd.clone()];
    pages.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    for page in pages {
        // Section 8: an administrator's daemon, as Debian files fastnetmon and suricata.
        let man =
            clap_mangen::Man::new(page).section("8").source(concat!("flagprobe ", env!("CARGO_PKG_VERSION"))).manual("flagprobe manual");
        let mut roff = Vec::new();
        man.render(&mut roff)?;
        let path = man_dir.join(format!("{}.gz", man.get_filename()));
        write_gzip(&path, &roff)?;
        written.push(path);
    }
    for (shell, rel) in COMPLETIONS {
        let path = dir.join("completions").join(rel);
        std::fs::create_dir_all(path.parent().expect("a file under completions/"))?;
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, "flagprobe", &mut text);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

/// gzip at the best level with no name and no time in the header (`gzip -9n`, what Debian policy
/// asks of man pages), so two builds of the same source give the same bytes.
fn write_gzip(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut gz = flate2::GzBuilder::new().mtime(0).write(std::fs::File::create(path)?, flate2::Compression::best());
    gz.write_all(data)?;
    gz.finish()?.sync_all()
}
