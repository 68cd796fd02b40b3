//! Sensor mode's packet rate through a veth next to an empty `xdp_drop` program, measured in the
//! same run on the same lab, round by round; and the AF_XDP path's rate when every frame is
//! notable. Run through `cargo xtask bench`, which puts the table in BENCHMARKS.md. Needs root.
//!
//! The load is a spoofed SYN flood (every packet a new flow, flagprobe's worst case) sent as fast as
//! one CPU can: prebuilt frames from 4096 random sources through an AF_PACKET socket with
//! `sendmmsg`, bypassing the qdisc (hping3 tops out near 150 k packets/s here, too slow to show a
//! program's cost). The count is the veth's own `rx_queue_*_xdp_packets`, so both programs are
//! counted by the kernel the same way.

use std::{
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use probe_common::flags::{FIN, SYN};
use tests::{
    agent::Agent,
    bpf,
    frames::TcpFrame,
    lab::{HOME_IF, HOME_IP, Lab, PEER_IF, in_netns},
    metrics_text, oracle,
};

/// Packets the home veth's XDP program has run on, over all queues.
fn xdp_packets(lab: &Lab) -> u64 {
    let out = lab.exec(&lab.home, &format!("ethtool -S {HOME_IF}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.starts_with("rx_queue_") && k.ends_with("_xdp_packets"))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// Flood the home address from the peer for `seconds` with TCP segments carrying `flags` from
/// random sources; packets/s through the home veth's XDP program.
fn flood(lab: &Lab, seconds: u64, flags: u8) -> f64 {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let frames: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = seed.to_be_bytes();
            TcpFrame::v4([b[0] | 1, b[1], b[2], b[3]], 1024 + (b[4] as u16) * 200, [10, 77, 0, 2], 8080, flags).build()
        })
        .collect();
    let socket = oracle::packet_socket(&lab.peer, PEER_IF);
    let before = xdp_packets(lab);
    let t = Instant::now();
    let sender = std::thread::spawn(move || {
        // One CPU, as a single sender would: the other runs the agent.
        // SAFETY: a zeroed cpu_set_t with one bit set.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
            let on = 1i32;
            libc::setsockopt(socket.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, (&raw const on).cast(), 4);
        }
        let mut iov: Vec<libc::iovec> = frames.iter().map(|f| libc::iovec { iov_base: f.as_ptr() as *mut _, iov_len: f.len() }).collect();
        // SAFETY: zeroed mmsghdr is valid; each points at one iovec that outlives the calls.
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let end = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < end {
            for chunk in msgs.chunks_mut(64) {
                // SAFETY: a bound packet socket and `chunk.len()` valid headers.
                unsafe { libc::sendmmsg(socket.as_raw_fd(), chunk.as_mut_ptr(), chunk.len() as u32, 0) };
            }
        }
    });
    sender.join().expect("sender");
    std::thread::sleep(Duration::from_millis(100));
    (xdp_packets(lab) - before) as f64 / t.elapsed().as_secs_f64()
}

/// The median; of an even count, the mean of the middle two.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n.is_multiple_of(2) { (v[n / 2 - 1] + v[n / 2]) / 2.0 } else { v[n / 2] }
}

fn sensor(lab: &Lab, extra: &[&str]) -> Agent {
    let mut args = vec!["--mode", "sensor", "--alert-format", "off", "--evidence", "off"];
    args.extend_from_slice(extra);
    let agent = Agent::start_in(&lab.home, HOME_IF, &format!("{HOME_IP}/32"), &[], &args);
    agent.settle();
    agent
}

/// Packets/s with an empty `xdp_drop` on the home veth.
fn empty_drop_rate(lab: &Lab, ifindex: u32, seconds: u64) -> f64 {
    let prog = bpf::xdp_returning(bpf::XDP_DROP);
    let link = in_netns(&lab.home, move || bpf::attach_xdp(&prog, ifindex));
    let rate = flood(lab, seconds, SYN);
    drop(link);
    rate
}

/// Packets/s with flagprobe in sensor mode on the home veth.
fn sensor_rate(lab: &Lab, seconds: u64) -> f64 {
    let mut agent = sensor(lab, &[]);
    let rate = flood(lab, seconds, SYN);
    let _ = agent.stop();
    rate
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let (seconds, rounds) = (arg("--seconds", 8), arg("--rounds", 3));
    let lab = Lab::new();
    let ifindex = in_netns(&lab.home, || unsafe { libc::if_nametoindex(c"fp-home".as_ptr()) });
    assert!(ifindex > 0, "{HOME_IF} in the lab");
    println!();
    println!("## Sensor mode: packets/s through a veth");
    println!();
    println!(
        "A spoofed SYN flood (4096 random sources, AF_PACKET `sendmmsg` from one CPU) from the peer into a veth whose XDP program (driver mode) is either an empty \
         `xdp_drop` or flagprobe in sensor mode (`--mode sensor`, copies dropped after counting); the veth's own \
         `rx_queue_*_xdp_packets` counts both. {rounds} rounds of {seconds} s each; odd rounds run the empty program first, even rounds flagprobe."
    );
    println!();
    println!("| round | empty xdp_drop, packets/s | flagprobe sensor, packets/s | ratio |");
    println!("|---|---:|---:|---:|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        // The VM drifts over a run: odd rounds measure the empty program first, even rounds
        // flagprobe first, so a drift favours neither.
        let (empty, ours) = if round % 2 == 1 {
            let empty = empty_drop_rate(&lab, ifindex, seconds);
            (empty, sensor_rate(&lab, seconds))
        } else {
            let ours = sensor_rate(&lab, seconds);
            (empty_drop_rate(&lab, ifindex, seconds), ours)
        };
        ratios.push(ours / empty);
        println!("| {round} | {empty:.0} | {ours:.0} | {:.2} |", ours / empty);
    }
    println!();
    println!(
        "Sensor-mode rate as a share of the empty xdp_drop's (median of rounds): **{:.1} %** (target at least 90 %).",
        median(ratios) * 100.0
    );

    // The AF_XDP path: every frame notable (SYN+FIN), the event rate limit raised out of the way.
    let mut agent = sensor(&lab, &["--event-rate", "10000000"]);
    let m0 = agent.metrics();
    let t = Instant::now();
    let through = flood(&lab, seconds, SYN | FIN);
    std::thread::sleep(Duration::from_millis(500));
    let m = agent.metrics();
    let secs = t.elapsed().as_secs_f64();
    let frames = |m: &str, outcome: &str| metrics_text::sum(m, "flagprobe_sensor_frames_total", &[("outcome", outcome)]);
    let (sent, read) = (frames(&m, "to_socket") - frames(&m0, "to_socket"), frames(&m, "read") - frames(&m0, "read"));
    let _ = agent.stop();
    println!();
    println!(
        "AF_XDP path (the same flood with SYN+FIN, every frame notable, `--event-rate 10000000`, copy mode on veth): {through:.0} packets/s \
         through XDP, {:.0} frames/s redirected whole to the socket, {:.0} frames/s read by the agent ({:.2} of those redirected).",
        sent / secs,
        read / secs,
        read / sent.max(1.0)
    );
}
