//! Opt-in inline drop on a gateway (`--drop unsolicited-synack`): the victim's SYN/ACKs never reach
//! our kernel, so it sends no backscatter RST, and the alert is still raised and says so; ordinary
//! connections both ways are untouched. `--drop-dry-run` drops nothing and counts the same.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

use tests::{
    agent::Agent,
    capture::Capture,
    lab::{HOME_IP, Lab, PEER_IF, PEER_IP, in_netns},
    metrics_text, oracle, privileged, stories, tool,
    verdicts::{assert_exactly, latest_by_source},
};

/// The home host opens a connection to the peer and they exchange a line each way.
fn a_connection_we_open(lab: &Lab) {
    let listener = in_netns(&lab.peer, || TcpListener::bind((PEER_IP, 9100)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hello\n").unwrap();
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).unwrap();
    });
    in_netns(&lab.home, || {
        let mut c = TcpStream::connect((PEER_IP, 9100)).unwrap();
        let mut buf = [0u8; 6];
        c.read_exact(&mut buf).unwrap();
        c.write_all(b"thanks").unwrap();
    });
    server.join().unwrap();
}

/// Run the backscatter story and ordinary traffic under `args`; returns the alerts, the metrics
/// and our RSTs to the victim as the peer's side of the wire saw them.
fn run(args: &[&str]) -> (Vec<serde_json::Value>, String, usize) {
    let lab = Lab::new();
    let mut agent = Agent::start(&lab, args);
    let wire = Capture::start(&lab.peer, PEER_IF, &format!("{}-drop", lab.peer));
    stories::backscatter(&lab);
    stories::normal_traffic(&lab);
    a_connection_we_open(&lab);
    let pcap = wire.finish();
    agent.settle();
    agent.wait_for_alert("backscatter_synack");
    let metrics = agent.metrics();
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    let rows = oracle::tshark_fields(&pcap, &["ip.src", "ip.dst", "tcp.flags.str"]);
    let our_rsts = rows.iter().filter(|r| r[0] == HOME_IP && r[1] == "198.51.100.7" && r[2].contains('R')).count();
    (agent.alerts(), metrics, our_rsts)
}

fn dropped(metrics: &str, dry_run: &str) -> u64 {
    metrics_text::sum(metrics, "flagprobe_dropped_packets_total", &[("reason", "unsolicited-synack"), ("dry_run", dry_run)]) as u64
}

#[test]
fn dropping_unsolicited_syn_acks_silences_our_backscatter_and_says_so() {
    let test = "dropping_unsolicited_syn_acks_silences_our_backscatter_and_says_so";
    if !privileged(test) || !["hping3", "tshark", "tcpdump"].iter().all(|t| tool(test, t)) {
        return;
    }
    let (alerts, metrics, our_rsts) = run(&["--drop", "unsolicited-synack"]);
    assert_eq!(our_rsts, 0, "our kernel never saw the 10 SYN/ACKs, so it sent no RST");
    assert_eq!((dropped(&metrics, "false"), dropped(&metrics, "true")), (10, 0), "exactly the victim's SYN/ACKs:\n{metrics}");
    assert_exactly("drop", &alerts, &[("backscatter_synack", "backscatter"), ("backscatter_rst", "backscatter")]);
    let synack = &latest_by_source(&alerts)[&("backscatter_synack".into(), "198.51.100.7".into())];
    assert_eq!(synack["evidence"]["dropped_by_flagprobe"]["dropped"].as_u64(), Some(10), "{synack}");
    assert_eq!(synack["evidence"]["our_rst_answers"].as_u64(), Some(0));
    let text = synack["explanation"].as_str().unwrap();
    assert!(text.contains("flagprobe dropped 10 such packets") && text.contains("sent no RST"), "{text}");
}

#[test]
fn a_dry_run_drops_nothing_and_counts_the_same() {
    let test = "a_dry_run_drops_nothing_and_counts_the_same";
    if !privileged(test) || !["hping3", "tshark", "tcpdump"].iter().all(|t| tool(test, t)) {
        return;
    }
    let (alerts, metrics, our_rsts) = run(&["--drop", "unsolicited-synack", "--drop-dry-run"]);
    assert_eq!(our_rsts, 10, "nothing dropped: our kernel answered every SYN/ACK");
    assert_eq!((dropped(&metrics, "false"), dropped(&metrics, "true")), (0, 10), "{metrics}");
    let synack = &latest_by_source(&alerts)[&("backscatter_synack".into(), "198.51.100.7".into())];
    assert_eq!(synack["evidence"]["our_rst_answers"].as_u64(), Some(10));
    assert_eq!(synack["evidence"]["dropped_by_flagprobe"]["would_drop"].as_u64(), Some(10), "{synack}");
    assert!(synack["explanation"].as_str().unwrap().contains("would have dropped 10"), "{synack}");
}
