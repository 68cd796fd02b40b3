//! Alerts into the gateway's own log pipeline: one RFC 5424 message per alert line, over a unix
//! datagram socket (`/dev/log`), UDP (RFC 5426) or TCP with octet counting (RFC 6587).
//!
//! A thread owns the socket. The engine formats the message and hands it over through a bounded
//! queue without ever waiting: a full queue, a collector that is down or a send that fails is a
//! lost message, counted in `flagprobe_syslog_messages_total{outcome="lost"}`. A collector that
//! went away is tried again at most once a second, so a dead one costs nothing per alert.

use std::{
    io::Write,
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use prometheus::IntCounterVec;

use super::{Alert, Severity};

/// Messages waiting for the socket; past this, new ones are lost (and counted), never waited for.
const QUEUE: usize = 4096;
/// A message is cut to this many octets: RFC 5426 asks every receiver to take 2048 over UDP, and
/// one size for every transport keeps the three the same.
const MAX_MESSAGE: usize = 2048;
/// How long a send or a TCP connect may take before the message is lost; also the pause before a
/// collector that failed is tried again.
const PATIENCE: Duration = Duration::from_secs(1);
/// The structured-data id: `flagprobe@` and an enterprise number. 32473 is the one RFC 5612
/// reserves for documentation and examples: flagprobe has no number of its own.
const SD_ID: &str = "flagprobe@32473";

/// Where the messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Unix(PathBuf),
    Udp(String),
    Tcp(String),
}

/// The `syslog` and `syslog-facility` settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    pub transport: Transport,
    /// RFC 5424's facility number.
    pub facility: u8,
}

/// Facility names and their RFC 5424 numbers (`security` is `auth`'s other name).
const FACILITIES: [(&str, u8); 11] = [
    ("daemon", 3),
    ("auth", 4),
    ("security", 4),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

impl SyslogConfig {
    /// `target` is `unix:PATH`, `udp:HOST:PORT` or `tcp:HOST:PORT`; `facility` a name above
    /// (default `daemon`). The error is the problem, for the caller to name the field.
    pub fn parse(target: &str, facility: Option<&str>) -> Result<SyslogConfig, (&'static str, String)> {
        let transport = match target.split_once(':') {
            Some(("unix", path)) if path.starts_with('/') => Transport::Unix(path.into()),
            Some(("udp", addr)) if host_port(addr) => Transport::Udp(addr.to_string()),
            Some(("tcp", addr)) if host_port(addr) => Transport::Tcp(addr.to_string()),
            _ => {
                return Err((
                    "syslog",
                    format!("`{target}` is not unix:/PATH, udp:HOST:PORT or tcp:HOST:PORT (e.g. unix:/dev/log, udp:127.0.0.1:514)"),
                ));
            }
        };
        let name = facility.unwrap_or("daemon");
        let Some(&(_, facility)) = FACILITIES.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
            return Err(("syslog-facility", format!("`{name}` is not one of {}", names.join(", "))));
        };
        Ok(SyslogConfig { transport, facility })
    }
}

/// `HOST:PORT` with a port number (`[v6]:PORT` too).
fn host_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
}

/// The severity an alert's severity becomes: high is critical, medium a warning, low a notice,
/// info informational (RFC 5424's numbers). Nothing flagprobe sees makes the system unusable.
fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::High => 2,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// One RFC 5424 message for `alert`. Text from the traffic (a RST's payload in the summary) can
/// neither end the message nor forge a field: control characters become `\xNN` everywhere, and
/// inside structured data `"`, `\` and `]` are escaped with a backslash as section 6.3.3 says.
pub fn format(alert: &Alert, facility: u8, hostname: &str, procid: u32) -> Vec<u8> {
    let pri = u16::from(facility) * 8 + u16::from(syslog_severity(alert.severity));
    let mut sd = format!("[{SD_ID}");
    let mut param = |name: &str, value: &str| {
        sd.push_str(&format!(" {name}=\"{}\"", sd_escape(value)));
    };
    param("id", &alert.id);
    param("severity", alert.severity.name());
    param("verdict", alert.verdict);
    param("host_role", &role_name(alert));
    param("iface", &alert.iface);
    for (name, value) in [("src_ip", alert.src_ip), ("dest_ip", alert.dest_ip)] {
        if let Some(ip) = value {
            param(name, &ip.to_string());
        }
    }
    for (name, value) in [("src_port", alert.src_port), ("dest_port", alert.dest_port)] {
        if let Some(port) = value {
            param(name, &port.to_string());
        }
    }
    param("packets", &alert.packets.to_string());
    if let Some(text) = alert.evidence.get("payload_text").and_then(|v| v.as_str()) {
        param("payload", text);
    }
    sd.push(']');
    let header =
        format!("<{pri}>1 {} {} flagprobe {procid} {} {sd} ", alert.timestamp, header_field(hostname), header_field(alert.detector));
    let mut out = header.into_bytes();
    let msg = escape_controls(&alert.summary);
    let room = MAX_MESSAGE.saturating_sub(out.len());
    let mut cut = msg.len().min(room);
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    out.extend_from_slice(&msg.as_bytes()[..cut]);
    out
}

fn role_name(alert: &Alert) -> String {
    serde_json::to_value(alert.host_role).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// A header field is printable ASCII without spaces (RFC 5424 section 6): anything else becomes
/// `_`, and an empty one the nil value.
fn header_field(text: &str) -> String {
    let clean: String = text.chars().take(255).map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect();
    if clean.is_empty() { "-".into() } else { clean }
}

fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn sd_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in escape_controls(text).chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The sending side: formats on the caller's thread, queues without waiting.
pub struct SyslogSender {
    tx: Option<Sender<Vec<u8>>>,
    done: Receiver<()>,
    facility: u8,
    hostname: String,
    outcomes: IntCounterVec,
}

impl SyslogSender {
    /// Start the thread that owns the socket; it connects on the first message.
    pub fn start(config: &SyslogConfig, outcomes: IntCounterVec) -> SyslogSender {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let transport = config.transport.clone();
        let counts = outcomes.clone();
        std::thread::Builder::new()
            .name("syslog".into())
            .spawn(move || {
                deliver(&rx, &transport, &counts);
                let _ = done_tx.send(());
            })
            .expect("spawning the syslog thread");
        SyslogSender { tx: Some(tx), done, facility: config.facility, hostname: hostname(), outcomes }
    }

    pub fn send(&self, alert: &Alert) {
        let message = format(alert, self.facility, &self.hostname, std::process::id());
        match self.tx.as_ref().map(|tx| tx.try_send(message)) {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => self.outcomes.with_label_values(&["lost"]).inc(),
        }
    }
}

impl Drop for SyslogSender {
    /// Let the thread send what is queued, for a bounded time: a stalled collector must not hold
    /// up the agent's exit (what is left is lost with the process).
    fn drop(&mut self) {
        self.tx = None;
        let _ = self.done.recv_timeout(PATIENCE * 3);
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    if ok { String::from_utf8_lossy(&buf[..end]).into_owned() } else { String::new() }
}

enum Conn {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Conn {
    fn open(transport: &Transport) -> std::io::Result<Conn> {
        match transport {
            Transport::Unix(path) => {
                let socket = UnixDatagram::unbound()?;
                socket.connect(path)?;
                socket.set_write_timeout(Some(PATIENCE))?;
                Ok(Conn::Unix(socket))
            }
            Transport::Udp(addr) => {
                let to = resolve(addr)?;
                let socket = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
                socket.connect(to)?;
                Ok(Conn::Udp(socket))
            }
            Transport::Tcp(addr) => {
                let stream = TcpStream::connect_timeout(&resolve(addr)?, PATIENCE)?;
                stream.set_write_timeout(Some(PATIENCE))?;
                stream.set_nodelay(true)?;
                Ok(Conn::Tcp(stream))
            }
        }
    }

    fn send(&mut self, message: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.send(message).map(drop),
            Conn::Udp(s) => s.send(message).map(drop),
            // RFC 6587 octet counting: the length, a space, the message; a newline inside a
            // message can then never start another.
            Conn::Tcp(s) => {
                let mut framed = format!("{} ", message.len()).into_bytes();
                framed.extend_from_slice(message);
                s.write_all(&framed)
            }
        }
    }
}

fn resolve(addr: &str) -> std::io::Result<std::net::SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr}: no address")))
}

/// The socket's thread: every queued message is sent or counted lost. Only the changes between
/// reachable and not are logged, so a dead collector does not flood the agent's own log.
fn deliver(rx: &Receiver<Vec<u8>>, transport: &Transport, outcomes: &IntCounterVec) {
    let mut conn: Option<Conn> = None;
    let mut retry_at = Instant::now();
    let mut down = false;
    for message in rx {
        if conn.is_none() && Instant::now() >= retry_at {
            match Conn::open(transport) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    retry_at = Instant::now() + PATIENCE;
                    if !down {
                        tracing::warn!(error = %e, ?transport, "syslog collector unreachable: alerts to it are lost (counted) until it is back");
                        down = true;
                    }
                }
            }
        }
        match conn.as_mut().map(|c| c.send(&message)) {
            Some(Ok(())) => {
                outcomes.with_label_values(&["sent"]).inc();
                if down {
                    tracing::info!(?transport, "syslog collector reachable again");
                    down = false;
                }
            }
            Some(Err(e)) => {
                outcomes.with_label_values(&["lost"]).inc();
                conn = None;
                retry_at = Instant::now() + PATIENCE;
                if !down {
                    tracing::warn!(error = %e, ?transport, "syslog send failed: alerts to it are lost (counted) until it is back");
                    down = true;
                }
            }
            None => outcomes.with_label_values(&["lost"]).inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(summary: &str, payload: Option<&str>) -> Alert {
        let draft = super::super::AlertDraft {
            detector: "rst_payload",
            severity: Severity::Medium,
            verdict: "rst-with-payload",
            host_role: super::super::HostRole::Observer,
            key: "k".into(),
            iface: "eth0".into(),
            src: Some(("10.77.0.1".parse().unwrap(), Some(80))),
            dest: Some(("192.0.2.2".parse().unwrap(), None)),
            first_seen_ns: 1,
            last_seen_ns: 2,
            packets: 3,
            flows: 1,
        };
        let evidence = payload.map_or(serde_json::json!({}), |p| serde_json::json!({ "payload_text": p }));
        draft.build(1_700_000_000_000_000_000, summary.into(), String::new(), evidence)
    }

    #[test]
    fn an_alert_is_one_rfc5424_message_with_its_fields_as_structured_data() {
        let text = String::from_utf8(format(&alert("RST with a text payload", None), 3, "gw1", 42)).unwrap();
        let expected_head = "<28>1 2023-11-14T22:13:20.000000Z gw1 flagprobe 42 rst_payload [flagprobe@32473 id=\"";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(text.contains(" severity=\"medium\" verdict=\"rst-with-payload\" host_role=\"observer\" iface=\"eth0\""), "{text}");
        assert!(text.contains(" src_ip=\"10.77.0.1\" dest_ip=\"192.0.2.2\" src_port=\"80\" packets=\"3\"]"), "{text}");
        assert!(text.ends_with("] RST with a text payload"), "{text}");
    }

    #[test]
    fn traffic_text_cannot_end_the_message_or_forge_a_field() {
        let payload = "bye\n<13>1 - evil\" x=\"y] \\";
        let text = String::from_utf8(format(&alert(&format!("payload {payload}"), Some(payload)), 3, "gw 1\n", 7)).unwrap();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains(" payload=\"bye\\\\x0a<13>1 - evil\\\" x=\\\"y\\] \\\\\"]"), "{text}");
        assert!(text.contains(" gw_1_ flagprobe "), "{text}");
        assert!(text.ends_with("] payload bye\\x0a<13>1 - evil\" x=\"y] \\"), "{text}");
    }

    #[test]
    fn a_long_summary_is_cut_to_the_size_every_receiver_takes() {
        let text = format(&alert(&"é".repeat(3000), None), 3, "gw1", 7);
        assert!(text.len() <= MAX_MESSAGE && text.len() > MAX_MESSAGE - 2);
        assert!(String::from_utf8(text).is_ok());
    }

    #[test]
    fn targets_and_facilities_parse_or_say_what_is_wrong() {
        let c = SyslogConfig::parse("udp:127.0.0.1:514", None).unwrap();
        assert_eq!((c.transport, c.facility), (Transport::Udp("127.0.0.1:514".into()), 3));
        assert_eq!(SyslogConfig::parse("tcp:[::1]:6514", Some("local3")).unwrap().facility, 19);
        assert_eq!(SyslogConfig::parse("unix:/dev/log", Some("security")).unwrap().transport, Transport::Unix("/dev/log".into()));
        for bad in ["udp:127.0.0.1", "tcp::514", "unix:dev/log", "/dev/log", "http:x:1"] {
            assert_eq!(SyslogConfig::parse(bad, None).unwrap_err().0, "syslog", "{bad}");
        }
        assert_eq!(SyslogConfig::parse("unix:/dev/log", Some("kern")).unwrap_err().0, "syslog-facility");
    }

    #[test]
    fn a_collector_that_is_down_costs_a_counted_loss_not_a_wait() {
        let counts = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["outcome"]).unwrap();
        // A TCP port nobody listens on: the connect is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = SyslogConfig::parse(&format!("tcp:127.0.0.1:{port}"), None).unwrap();
        let sender = SyslogSender::start(&config, counts.clone());
        for _ in 0..10 {
            sender.send(&alert("x", None));
        }
        drop(sender);
        assert_eq!((counts.with_label_values(&["lost"]).get(), counts.with_label_values(&["sent"]).get()), (10, 0));
    }
}
