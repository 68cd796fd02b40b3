//! TCP inside tunnels: PPPoE (a DSL gateway's WAN), GRE (plain, keyed, sequenced, gretap), VXLAN,
//! IP-in-IP, 6in4, 4in6 and 6in6 are opened and counted under the inner addresses, exactly as tshark
//! counts the inner packets, in replay and through the kernel; the founding backscatter story inside
//! PPPoE raises the same alert as on plain Ethernet and names the tunnel; what is not opened
//! (Geneve, Teredo, PPTP's GRE, three tunnels deep) is counted under its own reason. Live: a VXLAN
//! tunnel between two namespaces, watched on the underlay and on the tunnel device; PPPoE frames on
//! a veth pair; a tun device (no Ethernet header), where both hooks read from the IP header.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use tests::{
    agent::Agent,
    capture::Capture,
    lab::{HOME_IF, HOME_IP, Lab, PEER_IP},
    metrics_text, oracle, privileged, tool, workspace_root,
};

use crate::replay::replay;

const HOME6: &str = "fd77::2";

/// The two captures of `tests/scripts/tunnels.py`: (opened, closed).
fn captures(vxlan_port: u16) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("fp-tunnels-{}-{vxlan_port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (opened, closed) = (dir.join("opened.pcap"), dir.join("closed.pcap"));
    let out = Command::new("/usr/bin/python3")
        .arg(workspace_root().join("tests/scripts/tunnels.py"))
        .args([&opened, &closed])
        .arg(vxlan_port.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "tunnels.py: {}", String::from_utf8_lossy(&out.stderr));
    (opened, closed)
}

fn counted(metrics: &str) -> BTreeMap<(String, u8), u64> {
    metrics_text::tcp_by_direction(metrics)
        .into_iter()
        .map(|((hook, flags), n)| ((if hook == "ingress" || hook == "in" { "in" } else { "out" }).to_string(), flags, n))
        .fold(BTreeMap::new(), |mut m, (d, f, n)| {
            *m.entry((d, f)).or_insert(0) += n;
            m
        })
}

fn parse_errors(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for l in metrics.lines().filter(|l| l.starts_with("flagprobe_parse_errors_total{")) {
        let reason = l.split("reason=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string();
        let n = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
        if n > 0 {
            *out.entry(reason).or_insert(0) += n;
        }
    }
    out
}

fn check_replay(opened: &Path, closed: &Path, kernel: bool) {
    let how = if kernel { "replay --kernel" } else { "replay" };
    let r = replay(&[opened.to_path_buf()], &[HOME_IP, HOME6], kernel);
    assert!(r.status.success(), "{how}: {}", r.stderr);
    let tshark: BTreeMap<(String, u8), u64> =
        oracle::tshark_inner_flags_by_direction(opened, &[HOME_IP, HOME6]).into_iter().filter(|((d, _), _)| d != "other").collect();
    assert_eq!(counted(&r.metrics), tshark, "{how} (left) vs tshark's inner packets (right)");
    assert!(parse_errors(&r.metrics).is_empty(), "{how}: every tunnel opened: {:?}", parse_errors(&r.metrics));
    // 12 connections, one in each way in, each a separate flow under its inner addresses.
    let summary: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["flows_by_outcome"]["closed"], 12, "{how}: {summary}");
    // The founding story inside PPPoE: the same verdict as on Ethernet, naming the tunnel.
    let backscatter: Vec<&serde_json::Value> = r.alerts.iter().filter(|a| a["detector"] == "backscatter_synack").collect();
    assert!(!backscatter.is_empty(), "{how}: backscatter inside PPPoE: {:?}", r.alerts);
    for a in &backscatter {
        assert_eq!(a["tunnel"]["kind"], "pppoe", "{a}");
        assert!(a["summary"].as_str().unwrap().ends_with("(inside PPPoE)"), "{a}");
        assert_eq!(a["src_ip"], "198.51.100.7");
    }

    let r = replay(&[closed.to_path_buf()], &[HOME_IP, HOME6], kernel);
    assert!(r.status.success(), "{how}: {}", r.stderr);
    let want: BTreeMap<String, u64> =
        [("encapsulated_geneve", 2), ("encapsulated_teredo", 2), ("encapsulated_gre_other", 2), ("too_deep", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    assert_eq!(parse_errors(&r.metrics), want, "{how}: what stays closed is counted by reason");
    assert!(counted(&r.metrics).is_empty(), "{how}: nothing counted as TCP");
}

#[test]
fn every_tunnel_is_opened_and_counted_as_tshark_counts_its_inside() {
    if !tool("every_tunnel_is_opened", "tshark") || !tool("every_tunnel_is_opened", "/usr/bin/python3") {
        return;
    }
    let (opened, closed) = captures(4789);
    check_replay(&opened, &closed, false);
}

#[test]
fn every_tunnel_is_opened_by_the_kernel_program_alike() {
    if !privileged("every_tunnel_is_opened_by_the_kernel_program_alike") || !tool("every_tunnel_is_opened_by_the_kernel", "tshark") {
        return;
    }
    let (opened, closed) = captures(4789);
    check_replay(&opened, &closed, true);
}

#[test]
fn vxlan_on_another_port_is_opened_when_told() {
    if !tool("vxlan_on_another_port", "/usr/bin/python3") {
        return;
    }
    // Linux's own VXLAN default before IANA's port: 8472.
    let (opened, _) = captures(8472);
    let vxlan_only = |extra: &[&str]| {
        let out = Command::new(tests::agent::binary())
            .arg("replay")
            .arg(&opened)
            .args(["--home-net", HOME_IP, "--home-net", HOME6, "--format", "json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let summary: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
        summary["flows_by_outcome"]["closed"].as_u64().unwrap_or(0)
    };
    assert_eq!(vxlan_only(&[]), 11, "on 8472 without being told, the VXLAN connection is plain UDP");
    assert_eq!(vxlan_only(&["--vxlan-port", "8472"]), 12, "told, it is opened");
}

/// Run `script` in `ns` and panic with its output if it fails.
fn sh_in(lab: &Lab, ns: &str, script: &str) {
    lab.exec(ns, script);
}

#[test]
fn a_live_vxlan_tunnel_counts_exactly_on_the_underlay_and_on_the_tunnel() {
    let test = "a_live_vxlan_tunnel_counts_exactly";
    if !privileged(test) || !tool(test, "tshark") || !tool(test, "tcpdump") {
        return;
    }
    let lab = Lab::new();
    // A VXLAN link over the lab's veth: home 10.99.0.2, peer 10.99.0.1 inside it, its MTU 50 bytes
    // below the underlay's as deployments set it (else the outer packets are fragmented).
    for (ns, local, remote, inner) in [(&lab.home, HOME_IP, PEER_IP, "10.99.0.2"), (&lab.peer, PEER_IP, HOME_IP, "10.99.0.1")] {
        sh_in(
            &lab,
            ns,
            &format!(
                "ip link add fpvx0 type vxlan id 42 local {local} remote {remote} dstport 4789 && ip link set fpvx0 mtu 1450 \
                 && ip addr add {inner}/24 dev fpvx0 \
                 && ip link set fpvx0 up && ethtool -K fpvx0 tso off gso off gro off tx off rx off >/dev/null 2>&1; true"
            ),
        );
    }
    let underlay = Agent::start_in(&lab.home, HOME_IF, "10.99.0.2/32", &[], &[]);
    let capture =
        Capture::start_filtered(&lab.home, HOME_IF, &format!("{}-underlay", lab.home), "udp port 4789 or (ip[6:2] & 0x1fff != 0)");
    // A real connection through the tunnel (the kernel's TCP stack both ends), and a refused one.
    lab.exec(&lab.peer, "timeout 10 python3 -c \"import socket; s=socket.socket(); s.bind(('10.99.0.1', 8080)); s.listen(); c,_=s.accept(); c.sendall(b'x'*3000); c.close()\" >/dev/null 2>&1 & sleep 0.5");
    lab.exec(&lab.home, "python3 -c \"import socket; s=socket.create_connection(('10.99.0.1', 8080), 5); [None for _ in iter(lambda: s.recv(4096), b'')]; s.close()\"; python3 -c \"import socket; socket.create_connection(('10.99.0.1', 8081), 2)\" 2>/dev/null; true");
    let pcap = capture.finish();
    underlay.settle();
    let tshark: BTreeMap<(String, u8), u64> =
        oracle::tshark_inner_flags_by_direction(&pcap, &["10.99.0.2"]).into_iter().filter(|((d, _), _)| d != "other").collect();
    assert!(tshark.values().sum::<u64>() >= 8, "the connection crossed the tunnel: {tshark:?}");
    assert_eq!(counted(&underlay.metrics()), tshark, "agent on the underlay (left) vs tshark's inner packets (right)");
    drop(underlay);

    // The same traffic watched on the tunnel device itself: plain Ethernet inside, no tunnel.
    let on_tunnel = Agent::start_in(&lab.home, "fpvx0", "10.99.0.2/32", &[], &[]);
    let capture = Capture::start(&lab.home, "fpvx0", &format!("{}-vxlan", lab.home));
    lab.exec(&lab.peer, "timeout 10 python3 -c \"import socket; s=socket.socket(); s.bind(('10.99.0.1', 8082)); s.listen(); c,_=s.accept(); c.sendall(b'y'*2000); c.close()\" >/dev/null 2>&1 & sleep 0.5");
    lab.exec(&lab.home, "python3 -c \"import socket; s=socket.create_connection(('10.99.0.1', 8082), 5); [None for _ in iter(lambda: s.recv(4096), b'')]; s.close()\"");
    let pcap = capture.finish();
    on_tunnel.settle();
    let tshark: BTreeMap<(String, u8), u64> =
        oracle::tshark_inner_flags_by_direction(&pcap, &["10.99.0.2"]).into_iter().filter(|((d, _), _)| d != "other").collect();
    assert_eq!(counted(&on_tunnel.metrics()), tshark, "agent on the VXLAN device (left) vs tshark on it (right)");
}

#[test]
fn pppoe_session_frames_on_the_wire_are_counted_under_their_inner_addresses() {
    let test = "pppoe_session_frames_on_the_wire";
    if !privileged(test) || !tool(test, "/usr/bin/python3") {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    // The peer plays a PPPoE access concentrator: SYN/ACKs and data towards the home address,
    // inside PPPoE session frames (the home kernel has no PPPoE session and drops them after XDP).
    let script = format!(
        "from scapy.all import Ether, PPPoE, IP, TCP, Raw, sendp
pkts = [Ether(dst='ff:ff:ff:ff:ff:ff')/PPPoE(sessionid=9)/Raw(b'\\x00\\x21')/IP(src='198.51.100.7', dst='{HOME_IP}')/TCP(sport=443, dport=20000+i, flags='SA') for i in range(5)]
pkts += [Ether(dst='ff:ff:ff:ff:ff:ff')/PPPoE(sessionid=9)/Raw(b'\\x00\\x21')/IP(src='203.0.113.9', dst='{HOME_IP}')/TCP(sport=80, dport=30000, flags='PA')/Raw(b'hello') for i in range(3)]
sendp(pkts, iface='fp-peer', verbose=False)"
    );
    let out = lab.command(&lab.peer, "/usr/bin/python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agent.settle_after(8, 0);
    let c = counted(&agent.metrics());
    assert_eq!(c.get(&("in".to_string(), 0x12)), Some(&5), "{c:?}");
    assert_eq!(c.get(&("in".to_string(), 0x18)), Some(&3), "{c:?}");
}

#[test]
fn a_device_without_ethernet_header_is_read_from_its_ip_header() {
    let test = "a_device_without_ethernet_header";
    if !privileged(test) || !tool(test, "/usr/bin/python3") {
        return;
    }
    let lab = Lab::new();
    // A tun device in the home namespace (an L3 device, as ppp0, gre0 or wg0 are): what a program
    // writes into it arrives as received IP packets, with no Ethernet header in front.
    lab.exec(&lab.home, "ip tuntap add dev fptun0 mode tun && ip addr add 10.88.0.2/24 dev fptun0 && ip link set fptun0 up");
    let mut agent = Agent::start_in(&lab.home, "fptun0", "10.88.0.2/32", &[], &[]);
    assert!(agent.stderr().contains("no Ethernet header"), "the agent says how it reads this device:\n{}", agent.stderr());
    // Unsolicited SYN/ACKs written into the device: our kernel answers each with a RST, which
    // leaves through the same device (the egress hook, also without an Ethernet header).
    let script = "import fcntl, os, struct, time
from scapy.all import IP, TCP, raw
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'fptun0', 0x0001 | 0x1000))
for i in range(6):
    os.write(fd, raw(IP(src='10.88.0.1', dst='10.88.0.2')/TCP(sport=443, dport=21000+i, flags='SA', seq=5, ack=9)))
time.sleep(1)";
    let out = lab.command(&lab.home, "/usr/bin/python3").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agent.settle_after(6, 6);
    let c = counted(&agent.metrics());
    assert_eq!(c.get(&("in".to_string(), 0x12)), Some(&6), "the SYN/ACKs, read from their IP header: {c:?}");
    assert_eq!(c.get(&("out".to_string(), 0x04)), Some(&6), "our kernel's RSTs on egress: {c:?}");
    assert!(parse_errors(&agent.metrics()).is_empty(), "nothing misread: {:?}", parse_errors(&agent.metrics()));
    // The verdict, and its evidence file readable as Ethernet frames (an Ethernet header is put in
    // front of what the device carried, as for a raw-IP capture). Stopped, the agent has written
    // the incident's last update, whose evidence holds all of it and what the alert counts.
    agent.wait_for_alert("backscatter_synack");
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    let alerts = agent.alerts();
    let lines: Vec<String> = alerts
        .iter()
        .map(|a| {
            format!(
                "{} {} packets {} answers {} {}",
                a["detector"], a["verdict"], a["packets"], a["evidence"]["our_rst_answers"], a["evidence"]["pcap_packets"]
            )
        })
        .collect();
    let alert = alerts.into_iter().rev().find(|a| a["detector"] == "backscatter_synack").unwrap();
    let pcap = alert["evidence"]["pcap"].as_str().unwrap_or_else(|| panic!("evidence written: {alert}"));
    let rows = oracle::tshark_fields(Path::new(pcap), &["ip.src", "tcp.flags"]);
    let count = |src: &str, flags: &str| rows.iter().filter(|r| r[0] == src && r[1] == flags).count() as u64;
    let (syn_acks, rsts) = (count("10.88.0.1", "0x0012"), count("10.88.0.2", "0x0004"));
    assert_eq!((syn_acks, rsts, rows.len()), (6, 6, 12), "the SYN/ACKs and our RSTs: {rows:?}; the alerts: {lines:#?}");
    assert_eq!(
        (Some(syn_acks), Some(rsts)),
        (alert["packets"].as_u64(), alert["evidence"]["our_rst_answers"].as_u64()),
        "the evidence holds what the alert counts: {rows:?}; the alerts: {lines:#?}"
    );
}
