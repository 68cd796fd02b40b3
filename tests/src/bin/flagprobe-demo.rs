//! The newcomer's first run (`cargo xtask demo`): a gateway running flagprobe, an "internet" peer
//! and a third party, each a network namespace; the stories play with real tools and the alerts
//! show as they arrive; then a metrics summary, and everything is torn down (on Ctrl-C too).
//! Nothing leaves the namespaces. `--check` exits non-zero unless every story raised its alert.

use std::{
    io::{Read, Seek, SeekFrom, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tests::{agent::Agent, lab::Lab, metrics_text, stories};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Copy what the agent writes to stdout (its alerts, as text) onto ours, as it comes.
fn follow(path: std::path::PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut pos = 0;
        loop {
            let done = stop.load(Ordering::SeqCst);
            if let Ok(mut f) = std::fs::File::open(&path) {
                let _ = f.seek(SeekFrom::Start(pos));
                let mut buf = String::new();
                if f.read_to_string(&mut buf).is_ok() && !buf.is_empty() {
                    pos += buf.len() as u64;
                    print!("{buf}");
                    let _ = std::io::stdout().flush();
                }
            }
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

fn story(n: u32, title: &str, what: &str) -> bool {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return false;
    }
    println!("\n\x1b[1m=== {n}. {title}\x1b[0m\n    {what}\n");
    true
}

fn main() {
    let check = std::env::args().any(|a| a == "--check");
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("flagprobe-demo: needs root (network namespaces, eBPF)");
        std::process::exit(2);
    }
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    println!("Building the lab: gateway 10.77.0.2 (runs flagprobe) <-veth-> internet 10.77.0.1 <-veth-> third party 10.78.0.2");
    let mut lab = Lab::new();
    lab.add_third_party();
    let mut agent = Agent::start(&lab, &["--alert-format", "text", "--alert-window", "3s"]);
    let stop = Arc::new(AtomicBool::new(false));
    let follower = follow(agent.stdout_path.clone(), stop.clone());
    let pause = || std::thread::sleep(Duration::from_millis(1500));

    if story(
        1,
        "Backscatter",
        "Someone floods 198.51.100.7 and 203.0.113.50 with SYNs forged with the gateway's address. Their answers come to us.",
    ) {
        stories::backscatter(&lab);
        pause();
    }
    if story(
        2,
        "\"Go away, we're not home\"",
        "The gateway connects to 192.0.2.80, which refuses each SYN with a RST/ACK carrying that text.",
    ) {
        stories::go_away(&lab);
        pause();
    }
    if story(3, "Forged resets", "While the gateway talks to 10.77.0.1:9000, a third party injects RSTs in the server's name.") {
        stories::forged_resets(&lab);
        pause();
    }
    if story(4, "A port scan", "10.77.0.1 sends SYN probes to 30 ports of the gateway.") {
        stories::syn_scan(&lab, 61000);
        pause();
    }
    if story(5, "A SYN flood", "300 SYNs from forged random sources to a service on the gateway that never completes them.") {
        stories::syn_flood(&lab);
        pause();
    }
    if story(6, "Normal traffic", "HTTP exchanges and refused connects: these raise nothing.") {
        stories::normal_traffic(&lab);
        pause();
    }

    let metrics = agent.metrics();
    let (status, _) = agent.stop();
    stop.store(true, Ordering::SeqCst);
    let _ = follower.join();
    println!("\n\x1b[1m=== Metrics summary\x1b[0m (scraped from /metrics)");
    let tcp = |hook: &str| metrics_text::sum(&metrics, "flagprobe_tcp_packets_total", &[("hook", hook)]);
    println!("    TCP packets in: {}, out: {}", tcp("ingress"), tcp("egress"));
    for d in ["backscatter_synack", "backscatter_rst", "rst_payload", "rst_injection", "scan", "syn_flood", "invalid_flags", "rst_storm"] {
        let n = metrics_text::sum(&metrics, "flagprobe_alerts_total", &[("detector", d)]);
        if n > 0.0 {
            println!("    alerts from {d}: {n}");
        }
    }
    println!("    backscatter packets: {}", metrics_text::sum(&metrics, "flagprobe_backscatter_packets_total", &[]));
    println!(
        "    reset-cause texts (storm-goaway): {}",
        metrics_text::sum(&metrics, "flagprobe_rst_payload_packets_total", &[("signature", "storm-goaway")])
    );
    println!("\nTearing the lab down.");
    let alerts = agent.alerts();
    drop(agent);
    drop(lab);
    if INTERRUPTED.load(Ordering::SeqCst) {
        println!("Interrupted; everything is removed.");
        std::process::exit(130);
    }
    if check {
        let raised: std::collections::BTreeSet<String> = alerts.iter().map(|a| a["detector"].as_str().unwrap_or("").to_string()).collect();
        let wanted = ["backscatter_synack", "backscatter_rst", "rst_payload", "rst_injection", "scan", "syn_flood"];
        let missing: Vec<&str> = wanted.iter().copied().filter(|w| !raised.contains(*w)).collect();
        if !status.success() || !missing.is_empty() {
            eprintln!("demo check failed: agent exit {status}, missing alerts from {missing:?}; raised {raised:?}");
            std::process::exit(1);
        }
        println!("demo check: every story raised its alert ({})", wanted.join(", "));
    }
}
