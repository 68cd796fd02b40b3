//! Each detector against real traffic in a namespace lab — the kernel's TCP stack, hping3 and
//! scapy — through the real programs and the agent: every scenario must raise exactly its expected
//! detector and verdict, and ordinary traffic nothing.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::Stdio,
    time::Duration,
};

use tests::{
    agent::Agent,
    lab::{HOME_IP, Lab, PEER_IF, PEER_IP, in_netns, spawn_in_netns},
    privileged, tool,
    verdicts::{assert_exactly, latest_by_source},
    workspace_root,
};

const PY: &str = "/usr/bin/python3";

fn ready(test: &str, tools: &[&str]) -> bool {
    privileged(test) && tools.iter().all(|t| tool(test, t))
}

fn stop_and_collect(mut agent: Agent) -> Vec<serde_json::Value> {
    agent.settle();
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    agent.alerts()
}

#[test]
fn normal_traffic_raises_nothing() {
    if !ready("normal_traffic_raises_nothing", &[]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let listener = in_netns(&lab.home, || TcpListener::bind((HOME_IP, 8080)).unwrap());
    let server = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhi").unwrap();
        }
    });
    spawn_in_netns(&lab.peer, || {
        for _ in 0..3 {
            let mut s = TcpStream::connect((HOME_IP, 8080)).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
        }
        for p in [81, 82, 83] {
            assert!(TcpStream::connect((HOME_IP, p)).is_err());
        }
    })
    .join()
    .unwrap();
    server.join().unwrap();
    assert_exactly("normal traffic", &stop_and_collect(agent), &[]);
}

#[test]
fn spoofed_victims_syn_acks_and_resets_are_backscatter() {
    if !ready("spoofed_victims_syn_acks_and_resets_are_backscatter", &["hping3"]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    // Victims answer SYNs someone forged with our address: SYN/ACKs from 198.51.100.7:443 ...
    lab.exec(&lab.peer, &format!("hping3 -q -c 10 -i u10000 -S -A -a 198.51.100.7 -s 443 -k -p ++20000 {HOME_IP} >/dev/null 2>&1; true"));
    // ... and RST/ACKs from 203.0.113.50:8081 for connections we never opened.
    lab.exec(&lab.peer, &format!("hping3 -q -c 10 -i u10000 -R -A -a 203.0.113.50 -s 8081 -k -p ++30000 {HOME_IP} >/dev/null 2>&1; true"));
    let alerts = stop_and_collect(agent);
    assert_exactly("backscatter", &alerts, &[("backscatter_synack", "backscatter"), ("backscatter_rst", "backscatter")]);
    let latest = latest_by_source(&alerts);
    let synack = &latest[&("backscatter_synack".into(), "198.51.100.7".into())];
    assert_eq!(synack["packets"].as_u64(), Some(10));
    assert_eq!(synack["evidence"]["our_rst_answers"].as_u64(), Some(10), "our kernel answered every SYN/ACK with a RST");
    assert_eq!(latest[&("backscatter_rst".into(), "203.0.113.50".into())]["packets"].as_u64(), Some(10));
}

#[test]
fn go_away_responder_is_a_storm_reset_cause() {
    if !ready("go_away_responder_is_a_storm_reset_cause", &["/usr/bin/python3"]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let script = workspace_root().join("tests/scripts/goaway_responder.py");
    let mut responder = lab
        .command(&lab.peer, PY)
        .arg(&script)
        .args([PEER_IF, "192.0.2.80", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(responder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "responder started");
    // Our host connects to three ports of the responder through the kernel's TCP stack.
    spawn_in_netns(&lab.home, || {
        for port in [6667u16, 445, 80] {
            let e = TcpStream::connect_timeout(&format!("192.0.2.80:{port}").parse().unwrap(), Duration::from_secs(5)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "port {port}: {e}");
        }
    })
    .join()
    .unwrap();
    let _ = responder.wait();
    let alerts = stop_and_collect(agent);
    assert_exactly("go away", &alerts, &[("rst_payload", "reset-cause")]);
    let last = alerts.last().unwrap();
    assert_eq!(last["evidence"]["signature"], "storm-goaway");
    assert_eq!(last["evidence"]["payload_text"], "Go away, we're not home");
    assert_eq!((last["packets"].as_u64(), last["evidence"]["our_syns_before"].as_u64()), (Some(3), Some(3)));
    assert_eq!(last["host_role"], "possibly-compromised");
}

#[test]
fn forged_resets_from_a_third_namespace_are_injection() {
    if !ready("forged_resets_from_a_third_namespace_are_injection", &["/usr/bin/python3"]) {
        return;
    }
    let mut lab = Lab::new();
    let third = lab.add_third_party();
    let agent = Agent::start(&lab, &[]);
    // A live connection: our host is the client of a server at the peer.
    let listener = in_netns(&lab.peer, || TcpListener::bind((PEER_IP, 9000)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hello from the server\n").unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        s
    });
    let client = in_netns(&lab.home, || {
        let mut c = TcpStream::connect((PEER_IP, 9000)).unwrap();
        let mut buf = [0u8; 22];
        c.read_exact(&mut buf).unwrap();
        c
    });
    let client_port = client.local_addr().unwrap().port();
    // The third party forges two RSTs in the server's name, far apart in sequence space; routed
    // through the peer, they arrive one hop further away than the real server's packets.
    let script = workspace_root().join("tests/scripts/forge_rsts.py");
    let out = lab
        .command(&third, PY)
        .arg(&script)
        .args([PEER_IP, "9000", HOME_IP, &client_port.to_string(), "64", "1000", "900000000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(client);
    drop(server.join().unwrap());
    let alerts = stop_and_collect(agent);
    assert_exactly("forged RSTs", &alerts, &[("rst_injection", "injection-suspected")]);
    let signs = alerts
        .iter()
        .flat_map(|a| a["evidence"]["signs"].as_array().cloned().unwrap_or_default())
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(signs.contains("TTL 63"), "the forged RST's TTL differs from the server's: {signs}");
}

#[test]
fn syn_probes_to_many_ports_are_a_scan() {
    if !ready("syn_probes_to_many_ports_are_a_scan", &["hping3"]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    lab.exec(&lab.peer, &format!("hping3 -q -S -c 30 -i u5000 -s 61000 -k -p ++1 {HOME_IP} >/dev/null 2>&1; true"));
    let alerts = stop_and_collect(agent);
    assert_exactly("SYN scan", &alerts, &[("scan", "scan")]);
    let last = alerts.last().unwrap();
    assert_eq!(last["evidence"]["probe"], "SYN");
    assert_eq!(last["src_ip"], PEER_IP);
    assert!(last["evidence"]["ports"].as_u64().unwrap() >= 25, "{last}");
}

#[test]
fn spoofed_syn_flood_on_an_open_port_is_a_flood() {
    if !ready("spoofed_syn_flood_on_an_open_port_is_a_flood", &["hping3"]) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    // A listening service that never accepts: every spoofed SYN stays half-open.
    let listener = in_netns(&lab.home, || TcpListener::bind((HOME_IP, 8080)).unwrap());
    lab.exec(&lab.peer, &format!("hping3 -q -S --rand-source -p 8080 -c 300 -i u2000 {HOME_IP} >/dev/null 2>&1; true"));
    let alerts = stop_and_collect(agent);
    drop(listener);
    assert_exactly("SYN flood", &alerts, &[("syn_flood", "flood")]);
    let last = alerts.last().unwrap();
    assert_eq!(last["dest_port"].as_u64(), Some(8080));
    assert!(last["evidence"]["half_open"].as_u64().unwrap() >= 50, "{last}");
    assert!(last["evidence"]["sources"].as_u64().unwrap() >= 50, "spoofed sources: {last}");
}
