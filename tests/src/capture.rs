//! tcpdump on a lab interface, for tshark to count: the independent view flagprobe's counts are
//! compared with.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

pub struct Capture {
    child: Child,
    path: PathBuf,
}

impl Capture {
    /// Capture TCP on `iface` in namespace `ns` into `<tmp>/<name>.pcap`; returns once the
    /// capture is open.
    pub fn start(ns: &str, iface: &str, name: &str) -> Capture {
        Self::start_filtered(ns, iface, name, "tcp")
    }

    /// The same with a capture filter of the caller's (a tunnel's underlay carries TCP inside UDP
    /// or GRE, which `tcp` would leave out).
    pub fn start_filtered(ns: &str, iface: &str, name: &str, filter: &str) -> Capture {
        let path = std::env::temp_dir().join(format!("{name}.pcap"));
        // --immediate-mode: otherwise packets wait in the capture ring until a block times out, and
        // a SIGINT before that loses them.
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "--immediate-mode", "-i", iface, "-U", "-n", "-w"])
            .arg(&path)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // tcpdump says "listening on IF" once its capture is open: from then on it sees every packet.
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        while !said.contains("listening on") {
            let n = std::io::BufRead::read_line(&mut stderr, &mut said).unwrap();
            assert!(n > 0, "tcpdump did not start: {said}");
        }
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Capture { child, path }
    }

    /// Stop once the file has stopped growing; the capture's path.
    pub fn finish(mut self) -> PathBuf {
        // Let the last ACKs land first: tcpdump -U writes each packet as it comes.
        quiet(&self.path);
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        self.path
    }
}

/// Wait until `path` stops growing across two looks a poll apart.
fn quiet(path: &Path) {
    let size = || std::fs::metadata(path).map_or(0, |m| m.len());
    let mut last = size();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = size();
        if now == last {
            return;
        }
        last = now;
    }
}
