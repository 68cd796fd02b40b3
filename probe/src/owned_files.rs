//! How flagprobe creates the files it writes (evidence files, the alerts file): never through a
//! symbolic link someone planted at the name, and with temporary names nobody can guess. It runs
//! as root on a gateway and its names are predictable (an alert's id comes from the traffic), so
//! an open that followed a link would let anyone who can write into the directory overwrite any
//! file on the machine. A leaf: std and libc only.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

/// Files flagprobe creates are readable by its group, written by itself only.
const MODE: u32 = 0o640;

/// Open `path` for appending, creating it if missing; a symbolic link at `path` is an error (the
/// caller names the path).
pub fn open_append(path: &Path) -> io::Result<File> {
    no_link(OpenOptions::new().create(true).append(true).mode(MODE).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path))
}

/// Create `path` or empty it (an output the operator named, such as replay's `--metrics-out`); a
/// symbolic link at `path` is an error (the caller names the path).
pub fn create(path: &Path) -> io::Result<File> {
    no_link(
        OpenOptions::new().create(true).write(true).truncate(true).mode(MODE).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path),
    )
}

fn no_link(opened: io::Result<File>) -> io::Result<File> {
    opened.map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            io::Error::new(e.kind(), "it is a symbolic link; flagprobe does not write through links")
        } else {
            e
        }
    })
}

/// Replace `path` with `body` at once: written under a fresh random name in the same directory,
/// created exclusively (so never through a link, and never into another process's file), then
/// renamed over `path`. A rename replaces a link planted at `path` itself, never the link's target,
/// and a reader never sees half a file.
pub fn replace(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    for _ in 0..8 {
        let tmp = dir.join(format!(".{name}.{:016x}.partial", random()));
        let mut file =
            match OpenOptions::new().write(true).create_new(true).mode(MODE).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&tmp) {
                Ok(f) => f,
                // Someone holds that name already: draw another.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(named(e, &tmp)),
            };
        let written = file.write_all(body).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        return written.map_err(|e| named(e, path));
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{}: no free temporary name in eight tries", path.display())))
}

/// The error with the path in it, and a link refused in words rather than "too many levels of
/// symbolic links".
fn named(e: io::Error, path: &Path) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(e.kind(), format!("{} is a symbolic link; flagprobe does not write through links", path.display()));
    }
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// 64 random bits from the kernel (time and pid would be guessable).
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: an 8-byte buffer we own; on failure the bytes stay zero and the exclusive create
    // still refuses any name that exists.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    u64::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("flagprobe-owned-{name}-{}-{:x}", std::process::id(), random()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_link_planted_at_the_name_is_replaced_not_followed() {
        let d = dir("replace");
        let victim = d.join("victim.txt");
        std::fs::write(&victim, "keep me").unwrap();
        let target = d.join("rst_payload-0123456789abcdef.pcapng");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        replace(&target, b"evidence").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(!std::fs::symlink_metadata(&target).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"evidence");
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "no temporary file left: {left:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn appending_through_a_planted_link_is_refused_by_name() {
        let d = dir("append");
        let victim = d.join("victim.txt");
        std::fs::write(&victim, "keep me").unwrap();
        let alerts = d.join("alerts.jsonl");
        std::os::unix::fs::symlink(&victim, &alerts).unwrap();
        let e = open_append(&alerts).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        let plain = d.join("plain.jsonl");
        open_append(&plain).unwrap().write_all(b"x\n").unwrap();
        open_append(&plain).unwrap().write_all(b"y\n").unwrap();
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "x\ny\n");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
