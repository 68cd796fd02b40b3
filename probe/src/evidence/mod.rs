//! Evidence with every alert: the packets behind it, in a pcapng file Wireshark and tshark open.
//! "If we weren't collecting independent, content-neutral, non-alert-triggered full content data,
//! we wouldn't have the first SYN ACK packet": the kernel copies the head of every notable frame
//! into its event (headers and 64 payload bytes), the last of them are kept here, and each alert
//! line takes those of its subject: the addresses and ports it names, on its interface, within its
//! time span. Each packet carries the alert's id as its comment; the alert's `evidence.pcap`
//! names the file. Disk use is bounded: past the cap, the oldest files go first (counted).
//!
//! A sensor also receives every notable frame whole through its AF_XDP socket; those are kept
//! beside the heads, matched to them by content, and written instead of the head when present.

pub mod pcapng;

use std::{
    collections::VecDeque,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use probe_common::event::{EVENT_FRAME_MAX, PacketEvent};

use crate::{alert::Alert, detect::addr};

/// Notable frames kept for the next alerts, over all interfaces (about half a MiB, allocated as it
/// fills; a flood's notable packets would otherwise cost the agent its memory bound).
const RECENT: usize = 2048;
/// Packets in one alert's file, the newest of its subject's.
const PER_ALERT: usize = 256;
/// Frames this far outside an alert's first/last seen still belong to it (our answer may follow).
const SLACK_NS: u64 = 2_000_000_000;

/// Whole frames from a sensor's socket kept for matching (at most this many, about 0.75 MiB).
const WHOLE: usize = 512;

/// What matches a whole frame to the event's head of it: its length and its first bytes.
fn fingerprint(head: &[u8], wire_len: u32) -> u64 {
    crate::alert::fnv1a(&[&wire_len.to_le_bytes(), &head[..head.len().min(EVENT_FRAME_MAX)]])
}

/// One frame, inline: no allocation per packet.
struct Kept {
    /// Index into [`Evidence::ifaces`].
    iface: u16,
    len: u16,
    wire_len: u32,
    at_ns: u64,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    frame: [u8; EVENT_FRAME_MAX],
}

impl Kept {
    fn frame(&self) -> &[u8] {
        &self.frame[..self.len as usize]
    }
}

/// The evidence writer: recent notable frames, and the files written, oldest first.
pub struct Evidence {
    dir: PathBuf,
    max_bytes: u64,
    /// Interface names, each once.
    ifaces: Vec<String>,
    recent: VecDeque<Kept>,
    /// Whole frames from a sensor's socket, by [`fingerprint`].
    whole: VecDeque<(u64, Vec<u8>)>,
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
    /// Files removed to stay under the cap, since the last call to [`Evidence::take_removed`].
    removed: u64,
}

impl Evidence {
    /// Write into `dir` (created if missing), at most `max_bytes` of files. Files already there
    /// count against the cap, oldest first, so a restart does not forget them.
    /// The directory must be flagprobe's own: owned by its user and writable by nobody else,
    /// unless `shared_ok` (the `evidence-shared-dir` setting): a file another user planted
    /// there is not evidence, and the cap must never rotate it away as if it were.
    pub fn new(dir: &Path, max_bytes: u64, shared_ok: bool) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        if !shared_ok {
            own_directory(dir)?;
        }
        let mut existing: Vec<(std::time::SystemTime, PathBuf, u64)> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            // Only files of ours count, and only ours are ever removed: an operator's own
            // captures in the directory are not evidence to rotate.
            .filter(|e| e.file_name().to_str().is_some_and(is_evidence_name))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, e.path(), m.len()))
            })
            .collect();
        existing.sort();
        let bytes = existing.iter().map(|e| e.2).sum();
        let files = existing.into_iter().map(|(_, p, n)| (p, n)).collect();
        Ok(Evidence {
            dir: dir.to_path_buf(),
            max_bytes,
            ifaces: Vec::new(),
            recent: VecDeque::new(),
            whole: VecDeque::new(),
            files,
            bytes,
            removed: 0,
        })
    }

    /// Keep a notable packet's frame (events without one, such as from a one-way link shim, are
    /// skipped); true when it was kept.
    pub fn keep(&mut self, iface: &str, ev: &PacketEvent) -> bool {
        if ev.frame().is_empty() {
            return false;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        let index = match self.ifaces.iter().position(|n| n == iface) {
            Some(i) => i,
            None => {
                self.ifaces.push(iface.to_string());
                self.ifaces.len() - 1
            }
        };
        self.recent.push_back(Kept {
            iface: index as u16,
            len: ev.frame().len() as u16,
            wire_len: ev.frame_len,
            at_ns: ev.ts_ns,
            src: (addr(ev.src, ev.family), ev.sport),
            dst: (addr(ev.dst, ev.family), ev.dport),
            frame: ev.frame,
        });
        true
    }

    /// Whether the frame kept last belongs to `alert` (see [`Evidence::attach`]).
    pub fn last_kept_belongs(&self, alert: &Alert) -> bool {
        let Some(iface) = self.ifaces.iter().position(|n| *n == alert.iface) else { return false };
        self.recent.back().is_some_and(|k| usize::from(k.iface) == iface && belongs(k, alert))
    }

    /// Keep a whole notable frame (a sensor's socket): written in place of its event's head.
    pub fn keep_whole(&mut self, frame: Vec<u8>) {
        if self.whole.len() == WHOLE {
            self.whole.pop_front();
        }
        self.whole.push_back((fingerprint(&frame, frame.len() as u32), frame));
    }

    /// Write the file for `alert` (replacing an earlier version of the same incident) and name it
    /// in `alert.evidence.pcap`. Nothing is written when no kept packet belongs to it.
    pub fn attach(&mut self, alert: &mut Alert) -> io::Result<()> {
        let Some(iface) = self.ifaces.iter().position(|n| *n == alert.iface) else { return Ok(()) };
        let mut picked: Vec<&Kept> =
            self.recent.iter().rev().filter(|k| usize::from(k.iface) == iface && belongs(k, alert)).take(PER_ALERT).collect();
        if picked.is_empty() {
            return Ok(());
        }
        picked.reverse();
        let comment = format!("flagprobe alert {} ({}): {}", alert.id, alert.detector, alert.summary);
        let packets: Vec<pcapng::Packet<'_>> = picked
            .iter()
            .map(|k| pcapng::Packet { interface: 0, ts_ns: k.at_ns, data: best(&self.whole, k), wire_len: k.wire_len, comment: &comment })
            .collect();
        let mut body = Vec::new();
        pcapng::write(&mut body, &[alert.iface.as_str()], &packets)?;
        let count = packets.len();
        let path = self.dir.join(format!("{}-{}.pcapng", alert.detector, alert.id));
        crate::owned_files::replace(&path, &body)?;
        if let Some(i) = self.files.iter().position(|(p, _)| *p == path) {
            let (_, n) = self.files.remove(i).expect("position is in range");
            self.bytes -= n;
        }
        self.files.push_back((path.clone(), body.len() as u64));
        self.bytes += body.len() as u64;
        while self.bytes > self.max_bytes && self.files.len() > 1 {
            let (old, n) = self.files.pop_front().expect("more than one file");
            let _ = std::fs::remove_file(&old);
            self.bytes -= n;
            self.removed += 1;
        }
        if let Some(obj) = alert.evidence.as_object_mut() {
            obj.insert("pcap".into(), serde_json::json!(path.display().to_string()));
            obj.insert("pcap_packets".into(), serde_json::json!(count));
        }
        Ok(())
    }

    /// Files removed to honour the cap since the last call.
    pub fn take_removed(&mut self) -> u64 {
        std::mem::take(&mut self.removed)
    }
}

/// An error unless `dir` is owned by this process's user and writable by no one else.
fn own_directory(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let why = if meta.uid() != me {
        format!("it belongs to user {}, not to flagprobe's ({me})", meta.uid())
    } else if meta.mode() & 0o022 != 0 {
        format!("others can write into it (mode {:o})", meta.mode() & 0o7777)
    } else {
        return Ok(());
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{why}: give a directory only flagprobe's user can write, or set evidence-shared-dir = true"),
    ))
}

/// Whether `name` is one flagprobe gives an evidence file: `DETECTOR-ID.pcapng`, the detector in
/// lower case and underscores, the id sixteen hex digits.
fn is_evidence_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".pcapng") else { return false };
    let Some((detector, id)) = stem.rsplit_once('-') else { return false };
    !detector.is_empty()
        && detector.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        && id.len() == 16
        && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The whole frame behind a kept head, else the head.
fn best<'a>(whole: &'a VecDeque<(u64, Vec<u8>)>, k: &'a Kept) -> &'a [u8] {
    let want = fingerprint(k.frame(), k.wire_len);
    whole.iter().rev().find(|(f, w)| *f == want && w.len() == k.wire_len as usize).map_or(k.frame(), |(_, w)| w.as_slice())
}

/// Whether a kept frame (of the alert's interface) is about the alert's subject: its time span,
/// and every address (and port) the alert names. An alert naming no address (a reflection flood
/// at us) takes what its interface saw in its span.
fn belongs(k: &Kept, a: &Alert) -> bool {
    if k.at_ns + SLACK_NS < a.first_seen_ns || k.at_ns > a.last_seen_ns.max(a.at_ns) + SLACK_NS {
        return false;
    }
    let names = |ip: Option<IpAddr>, port: Option<u16>| match ip {
        None => true,
        Some(ip) => [k.src, k.dst].iter().any(|&(a, p)| a == ip && port.is_none_or(|want| want == p)),
    };
    names(a.src_ip, a.src_port) && names(a.dest_ip, a.dest_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::test_alert;

    fn event(src: [u8; 4], dst: [u8; 4], ts_ns: u64) -> PacketEvent {
        let mut ev: PacketEvent = unsafe { std::mem::zeroed() };
        ev.src = probe_common::flow::v4_bytes(src);
        ev.dst = probe_common::flow::v4_bytes(dst);
        ev.family = probe_common::flow::FAMILY_V4;
        ev.ts_ns = ts_ns;
        ev.set_frame(&[0xab; 80]);
        ev
    }

    #[test]
    fn an_alert_gets_its_subjects_packets_and_the_cap_removes_the_oldest_files() {
        let dir = std::env::temp_dir().join(format!("fp-evidence-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut e = Evidence::new(&dir, 600, false).unwrap();
        e.keep("eth0", &event([198, 51, 100, 7], [10, 0, 0, 2], 5_000_000_000));
        e.keep("eth0", &event([10, 0, 0, 2], [198, 51, 100, 7], 5_000_000_100));
        e.keep("eth0", &event([192, 0, 2, 1], [10, 0, 0, 2], 5_000_000_200));
        let mut a = test_alert("198.51.100.7", 5, 1);
        a.src_ip = Some("198.51.100.7".parse().unwrap());
        e.attach(&mut a).unwrap();
        assert_eq!(a.evidence["pcap_packets"], 2, "the victim's SYN/ACK and our RST, not the other host's");
        let first = PathBuf::from(a.evidence["pcap"].as_str().unwrap());
        assert!(first.exists());
        let mut b = test_alert("192.0.2.1", 5, 1);
        b.src_ip = Some("192.0.2.1".parse().unwrap());
        e.attach(&mut b).unwrap();
        assert!(!first.exists(), "over 600 bytes: the oldest file went");
        assert_eq!(e.take_removed(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_frame_kept_after_its_alert_was_written_is_told_apart() {
        let dir = std::env::temp_dir().join(format!("fp-evidence-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut e = Evidence::new(&dir, 1 << 20, false).unwrap();
        e.keep("eth0", &event([198, 51, 100, 7], [10, 0, 0, 2], 5_000_000_000));
        let mut a = test_alert("198.51.100.7", 5, 1);
        a.src_ip = Some("198.51.100.7".parse().unwrap());
        e.attach(&mut a).unwrap();
        assert_eq!(a.evidence["pcap_packets"], 1);
        // Our RST answering it, read after the alert was written: it belongs, another host's does not.
        assert!(e.keep("eth0", &event([10, 0, 0, 2], [198, 51, 100, 7], 5_000_000_100)));
        assert!(e.last_kept_belongs(&a));
        e.attach(&mut a).unwrap();
        assert_eq!(a.evidence["pcap_packets"], 2, "rewritten, the file holds it");
        assert!(e.keep("eth0", &event([192, 0, 2, 1], [10, 0, 0, 2], 5_000_000_200)));
        assert!(!e.last_kept_belongs(&a));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cap_counts_and_removes_only_files_flagprobe_wrote() {
        let dir = std::env::temp_dir().join(format!("fp-evidence-own-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The operator's own capture, far over the cap, and a file of ours from an earlier run.
        std::fs::write(dir.join("operator-capture.pcapng"), vec![0u8; 10_000]).unwrap();
        std::fs::write(dir.join("scan-0123456789abcdef.pcapng"), vec![0u8; 500]).unwrap();
        let mut e = Evidence::new(&dir, 600, false).unwrap();
        e.keep("eth0", &event([198, 51, 100, 7], [10, 0, 0, 2], 5_000_000_000));
        let mut a = test_alert("198.51.100.7", 5, 1);
        a.src_ip = Some("198.51.100.7".parse().unwrap());
        e.attach(&mut a).unwrap();
        assert_eq!(e.take_removed(), 1, "our earlier file made room");
        assert!(!dir.join("scan-0123456789abcdef.pcapng").exists());
        assert_eq!(std::fs::metadata(dir.join("operator-capture.pcapng")).unwrap().len(), 10_000, "the operator's file is untouched");
        assert!(is_evidence_name("rst_payload-00ff00ff00ff00ff.pcapng"));
        for other in
            ["capture.pcapng", "rst_payload-00FF00FF00FF00FF.pcapng", "x-123.pcapng", "-0123456789abcdef.pcapng", "a-0123456789abcdef.pcap"]
        {
            assert!(!is_evidence_name(other), "{other}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_others_can_write_is_refused_unless_allowed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fp-evidence-shared-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Evidence::new(&dir, 600, false).err().expect("refused");
        assert!(e.to_string().contains("others can write into it (mode 777)"), "{e}");
        assert!(Evidence::new(&dir, 600, true).is_ok(), "evidence-shared-dir = true accepts it");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(Evidence::new(&dir, 600, false).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_sensors_whole_frame_replaces_the_events_head() {
        let dir = std::env::temp_dir().join(format!("fp-evidence-whole-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut e = Evidence::new(&dir, 1 << 20, false).unwrap();
        let whole: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut ev = event([198, 51, 100, 7], [10, 0, 0, 2], 5_000_000_000);
        ev.set_frame(&whole);
        e.keep("eth0", &ev);
        let mut a = test_alert("198.51.100.7", 5, 1);
        a.src_ip = Some("198.51.100.7".parse().unwrap());
        e.attach(&mut a).unwrap();
        let path = PathBuf::from(a.evidence["pcap"].as_str().unwrap());
        let head_only = std::fs::metadata(&path).unwrap().len();
        let mut other = whole.clone();
        other[250] ^= 1;
        e.keep_whole(other[..299].to_vec());
        e.attach(&mut a).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), head_only, "a frame of another length is not this one");
        e.keep_whole(whole.clone());
        e.attach(&mut a).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), head_only + 300 - EVENT_FRAME_MAX as u64, "the whole 300 bytes");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
