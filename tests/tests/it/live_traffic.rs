//! The agent as an operator runs it, in a namespace lab, watching real traffic from the kernel's TCP
//! stack and hping3 — in driver and in generic XDP mode. Counts are scraped from /metrics over HTTP
//! and compared with tcpdump's capture of the same interface (counted by tshark), egress included.
//! Finally the agent gets SIGTERM and must leave no program behind.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use tests::{
    agent::Agent,
    capture::Capture,
    lab::{HOME_IF, HOME_IP, Lab, PEER_IP, spawn_in_netns},
    metrics_text::{self, tcp},
    oracle, privileged, tool,
};

/// An HTTP/1.0 exchange through the kernel's TCP stack: server in home, client in peer.
fn http_exchange(lab: &Lab) {
    let ready = std::sync::Arc::new(std::sync::Barrier::new(2));
    let r = ready.clone();
    let server = spawn_in_netns(&lab.home, move || {
        let l = TcpListener::bind((HOME_IP, 8080)).unwrap();
        r.wait();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"GET /"));
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    });
    ready.wait();
    let client = spawn_in_netns(&lab.peer, || {
        let mut s = TcpStream::connect((HOME_IP, 8080)).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.ends_with("hello"), "{body}");
    });
    client.join().unwrap();
    server.join().unwrap();
}

/// Connect attempts from peer to closed ports of home: each is SYN → RST/ACK.
fn closed_ports(lab: &Lab, ports: &[u16]) {
    let ports = ports.to_vec();
    spawn_in_netns(&lab.peer, move || {
        for p in ports {
            let e = TcpStream::connect_timeout(&format!("{HOME_IP}:{p}").parse().unwrap(), Duration::from_secs(2)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        }
    })
    .join()
    .unwrap();
}

fn tcpdump(lab: &Lab) -> Capture {
    Capture::start(&lab.home, HOME_IF, &format!("{}-live", lab.home))
}

/// tshark's in/out counts mapped to our hooks.
fn expected_by_hook(pcap: &std::path::Path) -> BTreeMap<(String, u8), u64> {
    oracle::tshark_flags_by_direction(pcap, HOME_IP)
        .into_iter()
        .map(|((dir, f), n)| ((if dir == "in" { "ingress" } else { "egress" }.to_string(), f), n))
        .collect()
}

/// Program ids the process `pid` holds open, from /proc/PID/fdinfo (`prog_id:` lines).
fn programs_held_by(pid: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        ids.extend(info.lines().filter_map(|l| l.strip_prefix("prog_id:")).filter_map(|v| v.trim().parse::<u64>().ok()));
    }
    ids.sort();
    ids.dedup();
    ids
}

fn live_scenario(mode: &str) {
    let test = format!("live_traffic_{mode}");
    if !privileged(&test) || !tool(&test, "tcpdump") || !tool(&test, "tshark") || !tool(&test, "hping3") || !tool(&test, "bpftool") {
        return;
    }
    let lab = Lab::new();
    let mut agent = Agent::start(&lab, &["--xdp-mode", mode]);
    let attached = lab.exec(&lab.home, &format!("ip -d link show {HOME_IF}"));
    let link = String::from_utf8_lossy(&attached.stdout);
    let want = if mode == "driver" { "xdp " } else { "xdpgeneric" };
    assert!(link.contains(want), "XDP attached in {mode} mode: {link}");
    assert!(agent.metrics().contains(&format!("flagprobe_xdp_mode{{iface=\"{HOME_IF}\",mode=\"{mode}\"}} 1")));

    // 1. A full HTTP exchange, checked against tcpdump + tshark on the same interface.
    let cap = tcpdump(&lab);
    let before = metrics_text::tcp_by_hook(&agent.metrics());
    http_exchange(&lab);
    let pcap = cap.finish();
    agent.settle();
    let after = metrics_text::tcp_by_hook(&agent.metrics());
    let counted: BTreeMap<(String, u8), u64> =
        after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect();
    assert_eq!(counted, expected_by_hook(&pcap), "HTTP exchange: flagprobe (left) vs tshark on tcpdump's capture (right)");
    assert_eq!(counted.get(&("ingress".into(), 0x02)), Some(&1), "one SYN in");
    assert_eq!(counted.get(&("egress".into(), 0x12)), Some(&1), "one SYN/ACK out");

    // 2. Connects to closed ports: SYN in, RST/ACK out, exactly.
    let m0 = agent.metrics();
    closed_ports(&lab, &[81, 82, 83]);
    agent.settle();
    let m1 = agent.metrics();
    assert_eq!(tcp(&m1, "ingress", "S") - tcp(&m0, "ingress", "S"), 3);
    assert_eq!(tcp(&m1, "egress", "RA") - tcp(&m0, "egress", "RA"), 3);

    // 3. Backscatter: unsolicited SYN/ACKs, each answered by the kernel with a bare RST.
    lab.exec(&lab.peer, &format!("hping3 -q -c 5 -i u20000 -S -A -p 8080 -s 5000 {HOME_IP} 2>/dev/null; true"));
    agent.settle();
    let m2 = agent.metrics();
    assert_eq!(tcp(&m2, "ingress", "SA") - tcp(&m1, "ingress", "SA"), 5);
    assert_eq!(tcp(&m2, "egress", "R") - tcp(&m1, "egress", "R"), 5);
    assert!(metrics_text::sum(&m2, "flagprobe_events_total", &[]) >= 5.0, "unsolicited SYN/ACKs and RSTs are events");
    assert_eq!(metrics_text::sum(&m2, "flagprobe_parse_errors_total", &[]), 0.0);
    assert!(metrics_text::sum(&m2, "flagprobe_flows", &[]) >= 5.0);
    let _ = PEER_IP;

    // 4. SIGTERM: a clean exit, no program left on the interface or in the kernel.
    let held = programs_held_by(agent.pid());
    assert!(held.len() >= 2, "the agent holds its XDP and TC programs: {held:?}");
    let (status, log) = agent.stop();
    assert!(status.success(), "exit status {status}: {log}");
    let link = String::from_utf8_lossy(&lab.exec(&lab.home, &format!("ip -d link show {HOME_IF}")).stdout).to_string();
    assert!(!link.contains("xdp"), "XDP left attached: {link}");
    for id in held {
        let still = Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]).output().unwrap();
        assert!(!still.status.success(), "program {id} still loaded after the agent exited");
    }
}

#[test]
fn live_traffic_driver() {
    live_scenario("driver");
}

#[test]
fn live_traffic_generic() {
    live_scenario("generic");
}
