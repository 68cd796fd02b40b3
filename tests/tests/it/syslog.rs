//! Alerts into a real rsyslog (Debian's), as a gateway's own log pipeline takes them: one RFC 5424
//! message per alert line over a unix socket, UDP and TCP (octet counting), parsed by rsyslog's
//! own RFC 5424 parser; traffic text that cannot forge a message or a field; and an agent that
//! keeps running, healthy, counting what it lost when the collector stops.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    agent::{Agent, binary},
    frames::TcpFrame,
    lab::Lab,
    metrics_text, privileged, shared_dir, stories, tool,
};

/// What rsyslog parsed out of one message: one line of its output file, fields split by tabs
/// (flagprobe escapes control characters, so a tab in a field cannot occur).
#[derive(Debug, Clone)]
struct Received {
    input: String,
    facility: String,
    severity: String,
    app: String,
    msgid: String,
    sd: String,
    msg: String,
}

/// rsyslogd in the foreground with its own config, socket, ports and output under a temp dir.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    udp: u16,
    tcp: u16,
}

/// A port free right now on 127.0.0.1 (TCP and UDP both asked).
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Rsyslog {
    fn start(name: &str) -> Rsyslog {
        let dir = std::env::temp_dir().join(format!("fp-rsyslog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (udp, tcp) = (free_port(), free_port());
        let d = dir.display();
        // The unix socket's special parser is off so that rsyslog parses the message as RFC 5424,
        // as it does for the network inputs.
        let conf = format!(
            r#"global(workDirectory="{d}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{d}/log.sock" UseSpecialParser="off" ParseHostname="on" UseSysTimeStamp="off")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="fields" type="list") {{
  property(name="inputname") constant(value="\t") property(name="syslogfacility-text") constant(value="\t")
  property(name="syslogseverity-text") constant(value="\t") property(name="app-name") constant(value="\t")
  property(name="msgid") constant(value="\t") property(name="structured-data") constant(value="\t")
  property(name="msg") constant(value="\n")
}}
*.* action(type="omfile" file="{d}/out.log" template="fields")
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .expect("rsyslogd starts");
        let r = Rsyslog { child: Some(child), dir, udp, tcp };
        r.wait_ready();
        r
    }

    /// Until the socket exists and both ports listen.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ss = Command::new("ss").args(["-lntu"]).output().unwrap();
            let ss = String::from_utf8_lossy(&ss.stdout);
            let listens = |p: u16| ss.contains(&format!("127.0.0.1:{p} "));
            if self.socket().exists() && listens(self.udp) && listens(self.tcp) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not come up: {}",
                std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("log.sock")
    }

    fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(self.dir.join("out.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(7, '\t').collect();
                assert_eq!(f.len(), 7, "seven fields: {l}");
                Received {
                    input: f[0].into(),
                    facility: f[1].into(),
                    severity: f[2].into(),
                    app: f[3].into(),
                    msgid: f[4].into(),
                    sd: f[5].into(),
                    msg: f[6].into(),
                }
            })
            .collect()
    }

    /// The messages from `input`, once `n` of them arrived (rsyslog writes them out shortly after).
    fn wait_for(&self, input: &str, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got: Vec<Received> = self.received().into_iter().filter(|r| r.input == input).collect();
            if got.len() >= n || Instant::now() > deadline {
                // A little longer: more than `n` would be a failure to see.
                std::thread::sleep(Duration::from_millis(300));
                return self.received().into_iter().filter(|r| r.input == input).collect();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// RFC 5424's structured data: (SD-ID, [(name, value unescaped)]) per element; panics on text
/// that is not well-formed, which is what a forged field would make it.
fn parse_sd(sd: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut chars = sd.chars().peekable();
    while let Some(c) = chars.next() {
        assert_eq!(c, '[', "an element starts with [: {sd}");
        let id: String = std::iter::from_fn(|| chars.next_if(|c| *c != ' ' && *c != ']')).collect();
        let mut params = Vec::new();
        loop {
            match chars.next() {
                Some(']') => break,
                Some(' ') => {
                    let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
                    assert_eq!((chars.next(), chars.next()), (Some('='), Some('"')), "{sd}");
                    let mut value = String::new();
                    loop {
                        match chars.next().unwrap_or_else(|| panic!("unterminated value: {sd}")) {
                            '\\' if matches!(chars.peek(), Some('"' | '\\' | ']')) => value.push(chars.next().unwrap()),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    params.push((name, value));
                }
                other => panic!("unexpected {other:?} in {sd}"),
            }
        }
        out.push((id, params));
    }
    out
}

fn param<'a>(sd: &'a [(String, Vec<(String, String)>)], name: &str) -> Option<&'a str> {
    sd.first()?.1.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The syslog severity an alert's severity becomes (rsyslog's names).
fn expected_severity(alert: &Value) -> &'static str {
    match alert["severity"].as_str().unwrap() {
        "high" => "crit",
        "medium" => "warning",
        "low" => "notice",
        _ => "info",
    }
}

/// Replay `captures` with `--syslog target`, alerts as JSON lines into a file: the alert lines.
fn replay(captures: &[PathBuf], target: &str, home: &str, tag: &str) -> Vec<Value> {
    let alerts = std::env::temp_dir().join(format!("fp-syslog-{tag}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&alerts);
    let out = Command::new(binary())
        .arg("replay")
        .args(captures)
        .args(["--home-net", home, "--syslog", target, "--syslog-facility", "local3", "--alerts"])
        .arg(&alerts)
        .output()
        .unwrap();
    assert!(out.status.success(), "replay: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = std::fs::read_to_string(&alerts).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let _ = std::fs::remove_file(&alerts);
    lines
}

/// Each alert line is exactly one message, and each message one alert line: the detector as
/// MSGID, the alert's id, verdict, role and addresses as structured data, the summary as MSG.
fn assert_one_message_per_alert(alerts: &[Value], got: &[Received], how: &str) {
    assert_eq!(got.len(), alerts.len(), "{how}: one message per alert line: {got:#?}\n{alerts:#?}");
    let mut unmatched: Vec<&Received> = got.iter().collect();
    for a in alerts {
        let pos = unmatched
            .iter()
            .position(|r| {
                let sd = parse_sd(&r.sd);
                param(&sd, "id") == a["id"].as_str()
                    && r.msg == a["summary"].as_str().unwrap()
                    && r.msgid == a["detector"].as_str().unwrap()
            })
            .unwrap_or_else(|| panic!("{how}: no message for alert {a}\nmessages: {unmatched:#?}"));
        let r = unmatched.remove(pos);
        let sd = parse_sd(&r.sd);
        assert_eq!(sd.len(), 1, "{how}: one SD element: {}", r.sd);
        assert_eq!(sd[0].0, "flagprobe@32473");
        assert_eq!(
            (r.app.as_str(), r.facility.as_str(), r.severity.as_str()),
            ("flagprobe", "local3", expected_severity(a)),
            "{how}: {r:?}"
        );
        assert_eq!(param(&sd, "verdict"), a["verdict"].as_str(), "{how}");
        assert_eq!(param(&sd, "host_role"), a["host_role"].as_str(), "{how}");
        assert_eq!(param(&sd, "src_ip"), a["src_ip"].as_str(), "{how}");
        assert_eq!(param(&sd, "dest_ip"), a["dest_ip"].as_str(), "{how}");
    }
}

#[test]
fn replay_sends_one_rfc5424_message_per_alert_over_unix_udp_and_tcp() {
    if !tool("replay_sends_one_rfc5424_message_per_alert", "rsyslogd") {
        return;
    }
    let rsyslog = Rsyslog::start("stories");
    let scenarios = shared_dir().join("pcaps/scenarios");
    let stories = [scenarios.join("s03_backscatter.pcap"), scenarios.join("s06_storm_goaway.pcap")];
    let targets = [
        (format!("unix:{}", rsyslog.socket().display()), "imuxsock"),
        (format!("udp:127.0.0.1:{}", rsyslog.udp), "imudp"),
        (format!("tcp:127.0.0.1:{}", rsyslog.tcp), "imtcp"),
    ];
    for (target, input) in &targets {
        let mut alerts = Vec::new();
        for story in &stories {
            // The home host the stories' captures were made on (their README).
            alerts.extend(replay(std::slice::from_ref(story), target, "10.77.0.2/32", input));
        }
        assert!(alerts.iter().any(|a| a["detector"] == "backscatter_synack"), "the backscatter story alerts: {alerts:#?}");
        assert!(alerts.iter().any(|a| a["detector"] == "rst_payload"), "the Go away story alerts: {alerts:#?}");
        let got = rsyslog.wait_for(input, alerts.len());
        assert_one_message_per_alert(&alerts, &got, target);
        println!("{target}: {} alert lines, {} messages; e.g. {:?}", alerts.len(), got.len(), got[0]);
    }
}

/// A pcap of the home host's SYN answered by a RST/ACK carrying `payload`.
fn rst_with_payload_pcap(path: &Path, payload: &[u8]) {
    let mut syn = TcpFrame::v4([192, 0, 2, 2], 40000, [198, 51, 100, 9], 80, 0x02);
    syn.seq = 5000;
    let mut rst = TcpFrame::v4([198, 51, 100, 9], 80, [192, 0, 2, 2], 40000, 0x14);
    rst.ack = 5001;
    rst.payload = payload.to_vec();
    // The classic pcap header: magic, version 2.4, zone, accuracy, snap length, Ethernet.
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for (i, frame) in [syn.build(), rst.build()].iter().enumerate() {
        for word in [1_700_000_000u32, i as u32 * 1000, frame.len() as u32, frame.len() as u32] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(frame);
    }
    std::fs::File::create(path).unwrap().write_all(&out).unwrap();
}

#[test]
fn a_hostile_rst_payload_arrives_as_one_message_with_its_structured_data_intact() {
    if !tool("a_hostile_rst_payload_arrives_as_one_message", "rsyslogd") {
        return;
    }
    let rsyslog = Rsyslog::start("hostile");
    // A newline, then what a forged second message and a forged field would look like (within
    // the 64 bytes of payload an event carries).
    let payload = b"bye\n<9>1 - gw flagprobe 1 scan [x@1 id=\"0\"] \\ \" ]";
    let pcap = rsyslog.dir.join("hostile.pcap");
    rst_with_payload_pcap(&pcap, payload);
    for (target, input) in [
        (format!("tcp:127.0.0.1:{}", rsyslog.tcp), "imtcp"),
        (format!("udp:127.0.0.1:{}", rsyslog.udp), "imudp"),
        (format!("unix:{}", rsyslog.socket().display()), "imuxsock"),
    ] {
        let alerts = replay(std::slice::from_ref(&pcap), &target, "192.0.2.2/32", &format!("hostile-{input}"));
        let rst = alerts.iter().find(|a| a["detector"] == "rst_payload").unwrap_or_else(|| panic!("a rst_payload alert: {alerts:#?}"));
        let got = rsyslog.wait_for(input, alerts.len());
        assert_one_message_per_alert(&alerts, &got, &target);
        let message = got.iter().find(|r| r.msgid == "rst_payload").unwrap();
        let sd = parse_sd(&message.sd);
        let text = rst["evidence"]["payload_text"].as_str().unwrap();
        assert!(text.contains("\" ]") && text.contains('\\'), "the payload keeps its quote, bracket and backslash: {text}");
        assert_eq!(param(&sd, "payload"), Some(text), "{target}: the payload, unescaped, is the alert's: {}", message.sd);
        assert_eq!(param(&sd, "id"), rst["id"].as_str(), "{target}: the alert's own id, not the forged one");
        assert!(!got.iter().any(|r| r.msgid == "scan"), "{target}: no forged message: {got:#?}");
        println!("{target}: {message:?}");
    }
}

#[test]
fn the_agent_keeps_running_and_counts_losses_when_the_collector_stops() {
    if !privileged("the_agent_keeps_running_and_counts_losses_when_the_collector_stops")
        || !tool("the_agent_keeps_running_and_counts_losses", "rsyslogd")
        || !tool("the_agent_keeps_running_and_counts_losses", "hping3")
    {
        return;
    }
    let mut rsyslog = Rsyslog::start("live");
    let lab = Lab::new();
    let target = format!("unix:{}", rsyslog.socket().display());
    let mut agent = Agent::start(&lab, &["--syslog", &target, "--syslog-facility", "local3"]);
    let sent = |agent: &Agent| metrics_text::sum(&agent.metrics(), "flagprobe_syslog_messages_total", &[("outcome", "sent")]);
    let lost = |agent: &Agent| metrics_text::sum(&agent.metrics(), "flagprobe_syslog_messages_total", &[("outcome", "lost")]);
    stories::backscatter(&lab);
    stories::go_away(&lab);
    agent.wait_for_alert("backscatter_synack");
    agent.wait_for_alert("rst_payload");
    agent.settle();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent(&agent) < agent.alerts().len() as f64 {
        assert!(Instant::now() < deadline, "every alert line sent: {} of {}", sent(&agent), agent.alerts().len());
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = agent.alerts();
    let got = rsyslog.wait_for("imuxsock", before.len());
    assert_one_message_per_alert(&before, &got, "live, unix socket");
    assert_eq!(lost(&agent), 0.0);

    rsyslog.stop();
    stories::syn_scan(&lab, 3000);
    agent.wait_for_alert("scan");
    agent.settle();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent(&agent) + lost(&agent) < agent.alerts().len() as f64 {
        assert!(Instant::now() < deadline, "every alert line sent or counted lost:\n{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = agent.alerts().len() - before.len();
    assert!(after >= 1);
    assert_eq!(lost(&agent), after as f64, "each alert after the collector stopped is counted lost");
    assert_eq!(agent.get("/healthz").map(|(code, _)| code), Some(200), "healthy:\n{}", agent.stderr());
    let (status, stderr) = agent.stop();
    assert!(status.success(), "a clean exit: {stderr}");
    assert_eq!(
        stderr.matches("syslog collector unreachable").count() + stderr.matches("syslog send failed").count(),
        1,
        "one warning, not one per alert:\n{stderr}"
    );
}

/// A site file's `syslog` is the live agent's collector: replay with that file sends nothing there
/// (its alerts are last night's); `--syslog` on replay's own command line does.
#[test]
fn replay_sends_to_syslog_only_when_its_command_line_says_so() {
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    collector.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let target = format!("udp:{}", collector.local_addr().unwrap());
    let dir = std::env::temp_dir().join(format!("fp-syslog-site-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let site = dir.join("site.toml");
    std::fs::write(&site, format!("syslog = \"{target}\"\n")).unwrap();
    let capture = shared_dir().join("pcaps/scenarios/s06_storm_goaway.pcap");
    let replay = |extra: &[&str]| {
        let out = Command::new(binary())
            .arg("replay")
            .arg(&capture)
            .args(["--home-net", "10.77.0.2/32", "--config"])
            .arg(&site)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let alerts = replay(&[]);
    assert!(alerts.contains("rst_payload"), "the story alerts: {alerts}");
    let mut buf = [0u8; 4096];
    assert!(collector.recv(&mut buf).is_err(), "nothing sent to the file's collector");
    replay(&["--syslog", &target]);
    let n = collector.recv(&mut buf).expect("--syslog on the command line sends");
    assert!(String::from_utf8_lossy(&buf[..n]).contains(" flagprobe "), "{}", String::from_utf8_lossy(&buf[..n]));
    let _ = std::fs::remove_dir_all(&dir);
}
