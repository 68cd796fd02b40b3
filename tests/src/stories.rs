//! The traffic stories flagprobe exists for, played with real tools in a [`Lab`]: the detector
//! tests and the demo (`cargo xtask demo`) run exactly these.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::Stdio,
    time::Duration,
};

use crate::{
    lab::{HOME_IP, Lab, PEER_IF, PEER_IP, in_netns, spawn_in_netns},
    workspace_root,
};

const PY: &str = "/usr/bin/python3";

/// Ordinary use: three HTTP exchanges into the home host, then connects to three closed ports.
pub fn normal_traffic(lab: &Lab) {
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
}

/// Someone SYN-floods 198.51.100.7:443 and 203.0.113.50 with the home address forged: their
/// SYN/ACKs and RST/ACKs arrive at the home host, whose kernel answers the SYN/ACKs with RSTs.
pub fn backscatter(lab: &Lab) {
    lab.exec(&lab.peer, &format!("hping3 -q -c 10 -i u10000 -S -A -a 198.51.100.7 -s 443 -k -p ++20000 {HOME_IP} >/dev/null 2>&1; true"));
    lab.exec(&lab.peer, &format!("hping3 -q -c 10 -i u10000 -R -A -a 203.0.113.50 -s 8081 -k -p ++30000 {HOME_IP} >/dev/null 2>&1; true"));
}

/// The home host connects to three ports of 192.0.2.80, whose responder refuses each SYN with a
/// RST/ACK saying "Go away, we're not home".
pub fn go_away(lab: &Lab) {
    // 192.0.2.80 exists only as the responder's sniffer. A peer that forwards (it does once a third
    // party is added) would answer our SYNs with ICMP "network unreachable" before the responder's
    // RST; a blackhole route drops them silently instead, so the RST is the only answer.
    lab.exec(&lab.peer, "ip route replace blackhole 192.0.2.80/32");
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
    spawn_in_netns(&lab.home, || {
        for port in [6667u16, 445, 80] {
            let e = TcpStream::connect_timeout(&format!("192.0.2.80:{port}").parse().unwrap(), Duration::from_secs(5)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "port {port}: {e}");
        }
    })
    .join()
    .unwrap();
    let _ = responder.wait();
}

/// While the home host talks to a server at the peer, a third party one hop further away forges
/// two RSTs in the server's name, far apart in sequence space. Needs [`Lab::add_third_party`].
pub fn forged_resets(lab: &Lab) {
    let third = lab.third.clone().expect("a third party in the lab");
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
    let port = client.local_addr().unwrap().port().to_string();
    let script = workspace_root().join("tests/scripts/forge_rsts.py");
    let out = lab.command(&third, PY).arg(&script).args([PEER_IP, "9000", HOME_IP, &port, "64", "1000", "900000000"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(client);
    drop(server.join().unwrap());
}

/// The peer probes 30 ports of the home host with SYNs (hping3, one source port).
pub fn syn_scan(lab: &Lab, source_port: u16) {
    lab.exec(&lab.peer, &format!("hping3 -q -S -c 30 -i u5000 -s {source_port} -k -p ++1 {HOME_IP} >/dev/null 2>&1; true"));
}

/// nmap's half-open SYN scan (-sS) from the peer over 30 ports of the home host, two of them
/// open: nmap crafts its SYNs, and the peer's own kernel resets the two SYN/ACKs it never asked
/// for, with its own TTL.
pub fn nmap_syn_scan(lab: &Lab) {
    let open: Vec<TcpListener> =
        [8080u16, 8443].iter().map(|&p| in_netns(&lab.home, move || TcpListener::bind((HOME_IP, p)).unwrap())).collect();
    lab.exec(&lab.peer, &format!("nmap -sS -Pn -n -T4 --max-retries 1 -p 1-28,8080,8443 {HOME_IP} >/dev/null 2>&1; true"));
    drop(open);
}

/// A SYN/ACK reflection flood at the home host: 2000 SYN/ACKs from port 80 of random addresses
/// (someone SYNed 2000 web servers with the home address forged), one each, to rising ports.
pub fn synack_reflection(lab: &Lab) {
    lab.exec(&lab.peer, &format!("hping3 -q -S -A --rand-source -s 80 -k -p ++1024 -c 2000 -i u500 {HOME_IP} >/dev/null 2>&1; true"));
}

/// 300 SYNs from random forged sources to a home service that listens but never accepts.
pub fn syn_flood(lab: &Lab) {
    let listener = in_netns(&lab.home, || TcpListener::bind((HOME_IP, 8080)).unwrap());
    lab.exec(&lab.peer, &format!("hping3 -q -S --rand-source -p 8080 -c 300 -i u2000 {HOME_IP} >/dev/null 2>&1; true"));
    drop(listener);
}
