//! The live record file, rotated by size: `PATH` is written; when it would pass its share of the
//! cap it is compressed to `PATH.1.gz` and the older ones move up (`PATH.2.gz`, ...), the oldest
//! dropped, so the files together stay under the cap whatever the traffic.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use std::os::unix::fs::DirBuilderExt;

use flate2::{Compression, write::GzEncoder};

use crate::owned_files;

pub struct RotatingFile {
    path: PathBuf,
    /// Each file's share of the cap: the cap over the number of files.
    max_file_bytes: u64,
    /// Files kept, the one written included.
    files: u32,
    out: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    /// Append to `path` (what an earlier run wrote stays), keeping `files` files under `cap_bytes`
    /// together. `files` 1 truncates `path` instead of rotating it.
    pub fn open(path: &Path, cap_bytes: u64, files: u32) -> io::Result<Self> {
        // The packaged example keeps records in a directory of their own under the logs
        // directory (out of logrotate's way), which the agent makes on first use.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::DirBuilder::new().mode(0o750).create(dir)?;
        }
        let file = owned_files::open_append(path)?;
        let size = file.metadata()?.len();
        let files = files.max(1);
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_file_bytes: (cap_bytes / files as u64).max(4096),
            files,
            out: BufWriter::new(file),
            size,
        })
    }

    /// One line (a newline is added).
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let n = line.len() as u64 + 1;
        if self.size > 0 && self.size + n > self.max_file_bytes {
            self.rotate()?;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += n;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}.gz"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.files > 1 {
            let _ = std::fs::remove_file(self.numbered(self.files - 1));
            for n in (1..self.files - 1).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            // Compressed under a fresh name and renamed into place, so a reader never sees half.
            let body = std::fs::read(&self.path)?;
            let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            gz.write_all(&body)?;
            owned_files::replace(&self.numbered(1), &gz.finish()?)?;
        }
        let file = owned_files::create(&self.path)?;
        self.out = BufWriter::new(file);
        self.size = 0;
        Ok(())
    }

    /// `path` and its rotated files, oldest first (what `flagprobe sessions` reads by default).
    pub fn all_files(path: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for n in (1..100).rev() {
            let mut p = path.to_path_buf().into_os_string();
            p.push(format!(".{n}.gz"));
            let p = PathBuf::from(p);
            if p.exists() {
                out.push(p);
            }
        }
        out.push(path.to_path_buf());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_stay_under_the_cap_and_keep_the_newest_lines() {
        let dir = std::env::temp_dir().join(format!("flagprobe-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sessions.jsonl");
        let mut f = RotatingFile::open(&path, 3 * 8192, 3).unwrap();
        for i in 0..5000 {
            f.write_line(&format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40))).unwrap();
        }
        f.flush().unwrap();
        let files = RotatingFile::all_files(&path);
        assert_eq!(files.len(), 3, "{files:?}");
        let total: u64 = files.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
        assert!(total <= 3 * 8192, "{total}");
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.trim_end().ends_with(&format!("{{\"n\":4999,\"pad\":\"{}\"}}", "x".repeat(40))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
