//! Independent ground truth and real wire traffic for the shared captures: tshark's per-direction
//! flags counts (through ../shared/oracles/flags-by-direction.sh), and a sender that plays a
//! capture onto the lab's veth — frames from the home address leave through the home interface
//! (the TC egress hook sees them), all others arrive from the peer (the XDP ingress hook sees them).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::Command,
    time::Duration,
};

use crate::lab::{HOME_IF, Lab, PEER_IF, in_netns};

/// (direction "in"/"out", flags byte) → packets, as tshark counts them.
pub fn tshark_flags_by_direction(pcap: &Path, home_ip: &str) -> BTreeMap<(String, u8), u64> {
    let script = crate::shared_dir().join("oracles/flags-by-direction.sh");
    let out = Command::new("bash").arg(&script).arg(pcap).arg(home_ip).output().expect("running the tshark oracle");
    assert!(out.status.success(), "oracle failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut section = "";
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        if let Some(s) = line.strip_prefix("== ") {
            section = if s.starts_with("count direction") { "dir" } else { "" };
            continue;
        }
        if section != "dir" {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [n, dir, byte] = f[..] {
            let byte = u8::from_str_radix(byte.trim_start_matches("0x"), 16).expect("hex flags");
            counts.insert((dir.to_string(), byte), n.parse().expect("count"));
        }
    }
    counts
}

/// Each packet's `fields` as tshark prints them (`-T fields`), one vector per packet.
pub fn tshark_fields(pcap: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(pcap).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("running tshark");
    assert!(out.status.success(), "tshark cannot read {}: {}", pcap.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

/// An AF_PACKET socket bound to `iface` inside namespace `ns`.
pub fn packet_socket(ns: &str, iface: &'static str) -> OwnedFd {
    in_netns(ns, move || {
        // SAFETY: plain socket calls with valid arguments; the fd is owned right away.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let name = std::ffi::CString::new(iface).unwrap();
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            let rc = libc::bind(fd.as_raw_fd(), (&raw const sll).cast(), size_of::<libc::sockaddr_ll>() as u32);
            assert_eq!(rc, 0, "bind to {iface}: {}", std::io::Error::last_os_error());
            fd
        }
    })
}

fn send(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: a bound packet socket and a valid buffer.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(n, frame.len() as isize, "send: {}", std::io::Error::last_os_error());
}

/// The source address of an Ethernet frame's IP packet.
pub fn source_ip(frame: &[u8]) -> Option<IpAddr> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    match p.net? {
        etherparse::NetSlice::Ipv4(ip) => Some(IpAddr::V4(ip.header().source_addr())),
        etherparse::NetSlice::Ipv6(ip) => Some(IpAddr::V6(ip.header().source_addr())),
        _ => None,
    }
}

/// Send every frame of `pcap` on the wire, in order: the home address's frames out of the home
/// interface, the rest in from the peer. Returns (in, out) frame counts.
pub fn replay_on_wire(lab: &Lab, pcap: &Path, home_ip: IpAddr) -> (usize, usize) {
    replay(lab, pcap, home_ip, false)
}

/// Like [`replay_on_wire`], keeping the capture's own gaps between frames (each capped at 3 s), for
/// detectors that reason about time (two RSTs within 2 s, ...).
pub fn replay_on_wire_timed(lab: &Lab, pcap: &Path, home_ip: IpAddr) -> (usize, usize) {
    replay(lab, pcap, home_ip, true)
}

/// Runs `f` with the calling thread pinned to CPU 0, then restores its CPU mask. The kernel
/// programs keep flow history per CPU (the bpf target has no atomics), as a NIC's receive queues
/// keep one flow on one CPU; a test sender that wandered between CPUs mid-capture would split
/// flows no NIC would, and the history-based verdicts (TTL changes, RSTs after data) would see
/// half of it.
fn on_one_cpu<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain affinity calls on the current thread with a properly sized, initialised set.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        let saved = libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut old) == 0;
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut one);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one);
        let out = f();
        if saved {
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &old);
        }
        out
    }
}

fn replay(lab: &Lab, pcap: &Path, home_ip: IpAddr, timed: bool) -> (usize, usize) {
    on_one_cpu(|| send_capture(lab, pcap, home_ip, timed))
}

fn send_capture(lab: &Lab, pcap: &Path, home_ip: IpAddr, timed: bool) -> (usize, usize) {
    let home = packet_socket(&lab.home, HOME_IF);
    let peer = packet_socket(&lab.peer, PEER_IF);
    let (mut n_in, mut n_out) = (0, 0);
    let mut last_ts = None;
    for frame in probe::replay::capture::CaptureReader::open(pcap).expect("readable capture") {
        let frame = frame.expect("well-formed capture");
        let gap = match last_ts {
            Some(t) if timed => Duration::from_nanos(frame.ts_ns.saturating_sub(t)).min(Duration::from_secs(3)),
            _ => Duration::from_millis(2),
        };
        last_ts = Some(frame.ts_ns);
        std::thread::sleep(gap);
        if source_ip(&frame.data) == Some(home_ip) {
            send(&home, &frame.data);
            n_out += 1;
        } else {
            send(&peer, &frame.data);
            n_in += 1;
        }
    }
    (n_in, n_out)
}

/// TCP packets per (direction, flags byte) by tshark, judged by the innermost IP header's addresses
/// (`-E occurrence=l`): what a tunnel carries, not the tunnel's own endpoints. `homes`: addresses.
pub fn tshark_inner_flags_by_direction(pcap: &Path, homes: &[&str]) -> BTreeMap<(String, u8), u64> {
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "tcp && !icmp && !icmpv6", "-T", "fields", "-E", "occurrence=l"])
        .args(["-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "tcp.flags"])
        .output()
        .expect("running tshark");
    assert!(out.status.success(), "tshark cannot read {}: {}", pcap.display(), String::from_utf8_lossy(&out.stderr));
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [s4, d4, s6, d6, flags] = f[..] else { continue };
        // A packet with headers of both families (6in4, 4in6) is judged by the family whose
        // addresses are the story's: the other one is the tunnel's.
        let (s, d) = if homes.contains(&s6) || homes.contains(&d6) || s4.is_empty() { (s6, d6) } else { (s4, d4) };
        let dir = if homes.contains(&d) {
            "in"
        } else if homes.contains(&s) {
            "out"
        } else {
            "other"
        };
        let byte = u8::from_str_radix(&flags[flags.len().saturating_sub(2)..], 16).expect("hex flags");
        *counts.entry((dir.to_string(), byte)).or_insert(0) += 1;
    }
    counts
}
