//! RSTs that carry data. RFC 1122 (4.2.2.12) lets a RST carry text explaining the reset; few stacks
//! send any, so the text is a fingerprint of whatever sent it. Known texts are signatures with their
//! story; the first built-in is the Storm-botnet-era "Go away, we're not home".

use std::net::IpAddr;

use probe_common::flow::NOTABLE_RST_PAYLOAD;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Detector, DetectorConfig, EventView, Invalid, Tally, check_window,
    window::{CappedSet, Windowed},
};
use crate::alert::{Alert, AlertDraft, HostRole, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Signature {
    /// Short name, also the `signature` label of `flagprobe_rst_payload_packets_total`.
    pub name: String,
    /// Matched as a substring of the payload.
    pub pattern: String,
    pub severity: Severity,
    /// What is known about this text, in plain words.
    pub explanation: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub enabled: bool,
    /// Use the built-in signatures (before the configured ones).
    pub builtin_signatures: bool,
    pub signatures: Vec<Signature>,
    pub window_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true, builtin_signatures: true, signatures: vec![], window_secs: 300 }
    }
}

impl DetectorConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_window("window-secs", self.window_secs)?;
        validate_signatures(&self.signatures)?;
        Ok(())
    }

    fn build(&self) -> Box<dyn Detector> {
        Box::new(RstPayload::new(self.clone()))
    }
}

/// Own signatures need a pattern, and a name fit to be a metric label.
fn validate_signatures(signatures: &[Signature]) -> Result<(), Invalid> {
    for (i, s) in signatures.iter().enumerate() {
        if s.pattern.is_empty() {
            return Err(Invalid::new(format!("signatures[{i}].pattern"), "must not be empty"));
        }
        if s.name.is_empty() || s.name.len() > 64 || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Invalid::new(format!("signatures[{i}].name"), "use 1-64 letters, digits, - or _ (it becomes a metric label)"));
        }
    }
    Ok(())
}

/// The signatures flagprobe ships with.
pub fn builtin() -> Vec<Signature> {
    vec![Signature {
        name: "storm-goaway".into(),
        pattern: "Go away, we're not home".into(),
        severity: Severity::Medium,
        explanation: "This exact reset text is what Snort VRT rule 1:27962, \"MALWARE-CNC Win.Trojan.Storm botnet connection \
            reset\", looks for in RST/ACKs: it is tied to the Storm botnet (also called Peacomm or Nuwar), the peer-to-peer \
            spam botnet of 2007-2008. Operators have seen it come back after their hosts sent one to three SYNs to the \
            sender. It means the remote machine refused our connection with a message instead of a silent reset, which \
            ordinary TCP stacks never do. Ask which process on our host opened these connections: software looking for \
            botnet peers would, and so would a scanner or a sandbox. The text alone does not prove an infection on \
            either side; the remote may be a sinkhole or honeypot that imitates Storm's responder."
            .into(),
    }]
}

struct Record {
    iface: String,
    first_seen: u64,
    last_seen: u64,
    packets: u64,
    our_syns: u64,
    /// Every connection the record counted, as (remote port, our address, our port): the alert
    /// names a port only when all its RSTs share it, so that its summary, its ports and its
    /// evidence file describe the same packets.
    connections: CappedSet<(u16, IpAddr, u16)>,
    text: String,
    /// What the payload is: `text`, `binary` or `rst-diagnostic`.
    kind: &'static str,
    hex: String,
    ttl: u8,
    inbound: bool,
}

pub struct RstPayload {
    signatures: Vec<Signature>,
    records: Windowed<(IpAddr, String), Record>,
    /// Packets per signature name ("none" for unmatched text) since the last drain.
    pub tallies: Vec<(String, u64)>,
}

/// Payload bytes as text: printable ASCII kept, everything else as `\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// The RST-diagnostic payload's magic cookie (draft-boucadair-tcpm-rst-diagnostic-payload): a
/// 16-bit reason code follows, then an optional description.
const RST_DIAGNOSTIC_COOKIE: [u8; 2] = [0x33, 0xaa];

/// The payload in words an operator can read: (kind, rendering). Text stays text; a payload that
/// is mostly not printable is binary and shown as hex, never as a string of escapes; the
/// RST-diagnostic format is decoded to its reason code.
fn describe(bytes: &[u8]) -> (&'static str, String) {
    if bytes.len() >= 4 && bytes[..2] == RST_DIAGNOSTIC_COOKIE {
        let code = u16::from_be_bytes([bytes[2], bytes[3]]);
        let rest: Vec<u8> = bytes[4..].iter().copied().take_while(|&b| b != 0).collect();
        let description = if rest.is_empty() { String::new() } else { format!(": {}", printable(&rest)) };
        return ("rst-diagnostic", format!("RST diagnostic, reason code {code}{description}"));
    }
    let readable = bytes.iter().filter(|&&b| (0x20..0x7f).contains(&b) || b"\t\r\n".contains(&b)).count();
    if readable * 4 >= bytes.len() * 3 {
        ("text", printable(bytes))
    } else {
        ("binary", format!("{} bytes: {}", bytes.len(), hex(bytes, " ")))
    }
}

fn hex(bytes: &[u8], sep: &str) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(sep)
}

impl RstPayload {
    pub fn new(config: Config) -> Self {
        let mut signatures = if config.builtin_signatures { builtin() } else { vec![] };
        signatures.extend(config.signatures.iter().cloned());
        let window = config.window_secs * 1_000_000_000;
        RstPayload { signatures, records: Windowed::new(window, 10_000), tallies: vec![] }
    }

    fn tally(&mut self, name: &str) {
        match self.tallies.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => *c += 1,
            None => self.tallies.push((name.to_string(), 1)),
        }
    }
}

/// The one value every item shares (and none went uncounted: `complete`), else none.
fn only<T: Copy + PartialEq>(complete: bool, mut values: impl Iterator<Item = T>) -> Option<T> {
    let first = values.next()?;
    (complete && values.all(|v| v == first)).then_some(first)
}

impl Detector for RstPayload {
    fn observe_event(&mut self, ev: &EventView<'_>) -> Vec<Alert> {
        let e = ev.event;
        if e.reasons & NOTABLE_RST_PAYLOAD == 0 {
            return vec![];
        }
        let text = printable(e.payload());
        let sig = self.signatures.iter().position(|s| text.contains(&s.pattern));
        let (kind, shown) = describe(e.payload());
        let sig_name = sig.map_or("none".to_string(), |i| self.signatures[i].name.clone());
        self.tally(&sig_name);
        let (_, receiver) = ev.sides();
        let inbound = !ev.from_local;
        // Our SYNs that this RST answers: what the receiving (local) side had sent before it.
        let our_syns = if inbound { e.flow_before.sides[receiver.index()].syn as u64 } else { 0 };
        let r = self.records.touch((ev.src(), sig_name.clone()), ev.at_ns, || Record {
            iface: ev.iface.to_string(),
            first_seen: ev.at_ns,
            last_seen: ev.at_ns,
            packets: 0,
            our_syns: 0,
            connections: CappedSet::new(64),
            text: shown,
            kind,
            hex: hex(e.payload(), ""),
            ttl: e.ttl,
            inbound,
        });
        r.last_seen = ev.at_ns;
        r.packets += 1;
        r.our_syns += our_syns;
        r.connections.insert((e.sport, ev.dst(), e.dport));
        let complete = r.connections.overflow == 0;
        let remote_port = only(complete, r.connections.iter().map(|c| c.0));
        let local_addr = only(complete, r.connections.iter().map(|c| c.1));
        let local_port = only(complete, r.connections.iter().map(|c| c.2));
        let mut remote_ports: Vec<u16> = r.connections.iter().map(|c| c.0).collect();
        remote_ports.sort();
        remote_ports.dedup();
        let signature = sig.map(|i| &self.signatures[i]);
        let (severity, verdict_words) = match signature {
            Some(s) => (s.severity, format!("matches the known reset text \"{}\" ({})", s.pattern, s.name)),
            None => (Severity::Low, "is not a text flagprobe knows".to_string()),
        };
        let src = ev.src();
        let direction = if r.inbound { "to this host" } else { "from this host" };
        let from = match remote_port {
            Some(p) => format!("{src}:{p}"),
            None => format!("{src} (ports {})", remote_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")),
        };
        let what = match r.kind {
            "text" => format!("a reset-cause text {direction} from {from}: \"{}\"", r.text),
            _ => format!("a {} payload {direction} from {from} ({})", r.kind, r.text),
        };
        let summary = format!("RST with {what} ({} so far; {} of our SYNs preceded)", r.packets, r.our_syns);
        let role = if signature.is_some() && r.our_syns > 0 { HostRole::PossiblyCompromised } else { HostRole::Observer };
        let mut explanation = format!(
            "{src} ended the connection with a RST that carries text (RFC 1122 4.2.2.12 allows a reset to say why; ordinary \
             stacks send none). The text {verdict_words}. It came after {} SYN(s) from our side, so our host started \
             these connections. ",
            r.our_syns
        );
        if let Some(s) = signature {
            explanation.push_str(&s.explanation);
        } else {
            explanation.push_str("Look at the text and at which program on our host opened the connection.");
        }
        let evidence = json!({
            "payload_text": r.text,
            "payload_kind": r.kind,
            "payload_hex": r.hex,
            "payload_len": e.payload_len,
            "signature": sig_name,
            "our_syns_before": r.our_syns,
            "rst_ttl": r.ttl,
            "flags": probe_common::flags::letters(e.flags).to_string(),
            "seq": e.seq,
            "ack": e.ack,
            "remote_ports": remote_ports,
            "connections": r.connections.len() as u64 + r.connections.overflow,
        });
        let alert = AlertDraft {
            detector: "rst_payload",
            severity,
            verdict: "reset-cause",
            host_role: role,
            key: format!("{src}|{sig_name}"),
            iface: r.iface.clone(),
            src: Some((src, remote_port)),
            dest: local_addr.map(|a| (a, local_port)),
            first_seen_ns: r.first_seen,
            last_seen_ns: r.last_seen,
            packets: r.packets,
            flows: r.packets,
        }
        .build(ev.at_ns, summary, explanation, evidence);
        vec![alert]
    }

    fn expire(&mut self, now_ns: u64) {
        self.records.expire(now_ns);
    }

    fn take_tallies(&mut self) -> Vec<Tally> {
        std::mem::take(&mut self.tallies).into_iter().map(|(signature, packets)| Tally::RstPayload { signature, packets }).collect()
    }
}

#[cfg(test)]
mod tests {
    use probe_common::flags::{ACK, RST, SYN};

    use super::*;
    use crate::detect::testkit::{S, Script, pkt};

    #[test]
    fn binary_payloads_are_hex_and_rst_diagnostics_are_decoded() {
        assert_eq!(describe(b"Go away, we're not home"), ("text", "Go away, we're not home".to_string()));
        assert_eq!(describe(&[0x33, 0xaa, 0, 1, 0, 0, 0, 0]), ("rst-diagnostic", "RST diagnostic, reason code 1".to_string()));
        assert_eq!(describe(&[0x33, 0xaa, 0, 7, b'b', b'y', b'e']).1, "RST diagnostic, reason code 7: bye");
        assert_eq!(describe(&[0x80, 0xff, 0x01, b'a']), ("binary", "4 bytes: 80 ff 01 61".to_string()));
    }

    #[test]
    fn go_away_after_our_syns_matches_the_storm_signature() {
        let mut s = Script::new();
        let mut d = RstPayload::new(Config::default());
        let mut alerts = vec![];
        for (i, port) in [6667u16, 445, 80].into_iter().enumerate() {
            let t = S * (10 + i as u64);
            s.send(t, pkt("10.0.0.2", 47000 + i as u16, "192.0.2.1", port, SYN));
            let mut rst = pkt("192.0.2.1", port, "10.0.0.2", 47000 + i as u16, RST | ACK);
            rst.payload = b"Go away, we're not home";
            rst.ttl = 128;
            s.send(t + 1, rst);
            alerts.extend(s.events_to(&mut d));
        }
        assert_eq!(alerts.len(), 3, "one per RST; dedup happens in the sink");
        let last = alerts.last().unwrap();
        assert_eq!((last.verdict, last.packets, last.severity), ("reset-cause", 3, Severity::Medium));
        assert_eq!(last.evidence["signature"], "storm-goaway");
        assert_eq!(last.evidence["payload_text"], "Go away, we're not home");
        assert_eq!(last.evidence["our_syns_before"], 3);
        assert!(last.explanation.contains("1:27962"));
        assert_eq!(d.tallies, vec![("storm-goaway".to_string(), 3)]);
        // The first names its one connection; the update spans three, and names no single port
        // where the summary lists three: its ports, its summary and its packets agree.
        assert_eq!((alerts[0].src_port, alerts[0].dest_port), (Some(6667), Some(47000)));
        assert!(alerts[0].summary.contains("from 192.0.2.1:6667:"), "{}", alerts[0].summary);
        assert_eq!((last.src_port, last.dest_ip, last.dest_port), (None, Some("10.0.0.2".parse().unwrap()), None));
        assert!(last.summary.contains("from 192.0.2.1 (ports 80, 445, 6667):"), "{}", last.summary);
        assert_eq!(last.evidence["connections"], 3);
    }

    #[test]
    fn unknown_text_is_reported_without_a_signature_and_plain_rsts_are_ignored() {
        let mut s = Script::new();
        let mut d = RstPayload::new(Config::default());
        let mut rst = pkt("192.0.2.1", 80, "10.0.0.2", 5000, RST | ACK);
        rst.payload = b"bye\x00";
        s.send(S, rst);
        s.send(2 * S, pkt("192.0.2.1", 81, "10.0.0.2", 5001, RST | ACK));
        let alerts = s.events_to(&mut d);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].severity, alerts[0].evidence["payload_text"].as_str()), (Severity::Low, Some("bye\\x00")));
    }
}
