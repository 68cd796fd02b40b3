//! Sensor mode's packet rate through a veth next to an empty `xdp_drop` program, measured in the
//! same run on the same lab, round by round; and the AF_XDP path's rate when every frame is
//! notable. Run through `cargo xtask bench`, which puts the table in BENCHMARKS.md. Needs root.
//!
//! The load is hping3's spoofed SYN flood (every packet a new flow, flagprobe's worst case); the
//! count is the veth's own `rx_queue_*_xdp_packets`, so both programs are counted by the kernel
//! the same way.

use std::time::{Duration, Instant};

use tests::{
    agent::Agent,
    bpf,
    lab::{HOME_IF, HOME_IP, Lab, in_netns},
    metrics_text,
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

/// Flood the home address from the peer for `seconds` with hping3 (`flags` such as `-S`);
/// packets/s through the home veth's XDP program.
fn flood(lab: &Lab, seconds: u64, flags: &str) -> f64 {
    let before = xdp_packets(lab);
    let t = Instant::now();
    lab.exec(&lab.peer, &format!("timeout {seconds} hping3 --flood -q {flags} --rand-source -p 8080 {HOME_IP} >/dev/null 2>&1; true"));
    (xdp_packets(lab) - before) as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn sensor(lab: &Lab, extra: &[&str]) -> Agent {
    let mut args = vec!["--mode", "sensor", "--alert-format", "off", "--evidence", "off"];
    args.extend_from_slice(extra);
    let agent = Agent::start_in(&lab.home, HOME_IF, &format!("{HOME_IP}/32"), &[], &args);
    agent.settle();
    agent
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
        "`hping3 --flood --rand-source -S` from the peer into a veth whose XDP program (driver mode) is either an empty \
         `xdp_drop` or flagprobe in sensor mode (`--mode sensor`, copies dropped after counting); the veth's own \
         `rx_queue_*_xdp_packets` counts both. {rounds} rounds of {seconds} s each, alternating."
    );
    println!();
    println!("| round | empty xdp_drop, packets/s | flagprobe sensor, packets/s | ratio |");
    println!("|---|---:|---:|---:|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let empty = {
            let prog = bpf::xdp_returning(bpf::XDP_DROP);
            let link = in_netns(&lab.home, move || bpf::attach_xdp(&prog, ifindex));
            let rate = flood(&lab, seconds, "-S");
            drop(link);
            rate
        };
        let mut agent = sensor(&lab, &[]);
        let ours = flood(&lab, seconds, "-S");
        let _ = agent.stop();
        ratios.push(ours / empty);
        println!("| {round} | {empty:.0} | {ours:.0} | {:.2} |", ours / empty);
    }
    println!();
    println!(
        "Sensor-mode rate as a share of the empty xdp_drop's (median of rounds): **{:.0} %** (target at least 90 %).",
        median(ratios) * 100.0
    );

    // The AF_XDP path: every frame notable (SYN+FIN), the event rate limit raised out of the way.
    let mut agent = sensor(&lab, &["--event-rate", "10000000"]);
    let m0 = agent.metrics();
    let t = Instant::now();
    let through = flood(&lab, seconds, "-S -F");
    std::thread::sleep(Duration::from_millis(500));
    let m = agent.metrics();
    let secs = t.elapsed().as_secs_f64();
    let frames = |m: &str, outcome: &str| metrics_text::sum(m, "flagprobe_sensor_frames_total", &[("outcome", outcome)]);
    let (sent, read) = (frames(&m, "to_socket") - frames(&m0, "to_socket"), frames(&m, "read") - frames(&m0, "read"));
    let _ = agent.stop();
    println!();
    println!(
        "AF_XDP path (`hping3 --flood -S -F`, every frame notable, `--event-rate 10000000`, copy mode on veth): {through:.0} packets/s \
         through XDP, {:.0} frames/s redirected whole to the socket, {:.0} frames/s read by the agent ({:.2} of those redirected).",
        sent / secs,
        read / secs,
        read / sent.max(1.0)
    );
}
