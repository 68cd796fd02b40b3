//! Port and host scans: one source sending probes — SYN, FIN, NULL, XMAS or bare ACK — to many ports
//! or hosts of ours. The probe type is read off the exact flag combinations the source sent on each
//! flow it opened, and every type the source used is named in its one alert. FIN, NULL and XMAS
//! probes are crafted (no TCP stack sends them to open a conversation), so a small sweep of them is
//! a scan already: a handful of ports, not the dozens a SYN sweep needs to stand out from clients.

use std::net::IpAddr;

use probe_common::flags::{ACK, FIN, PSH, URG};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Detector, DetectorConfig, FlowView, Invalid, check_at_least_one, check_window,
    window::{CappedSet, Windowed},
};
use crate::alert::{Alert, AlertDraft, HostRole, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub enabled: bool,
    pub window_secs: u64,
    /// Distinct (host, port) pairs of ours one source must probe.
    pub min_ports: usize,
    /// ... or distinct hosts of ours.
    pub min_hosts: usize,
    /// ... or distinct (host, port) pairs probed with FIN, NULL or XMAS probes.
    pub min_stealth_ports: usize,
}

impl Default for Config {
    fn default() -> Self {
        // Five hosts: every target counted ended without a byte of data (refused, unanswered, or
        // reset by the source itself), which no client does to five hosts of one network in a
        // minute, and home and small-office networks have only a handful of hosts to sweep.
        Config { enabled: true, window_secs: 60, min_ports: 15, min_hosts: 5, min_stealth_ports: 3 }
    }
}

impl DetectorConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_window("window-secs", self.window_secs)?;
        check_at_least_one("min-ports", self.min_ports as u64)?;
        check_at_least_one("min-hosts", self.min_hosts as u64)?;
        check_at_least_one("min-stealth-ports", self.min_stealth_ports as u64)?;
        Ok(())
    }

    fn build(&self) -> Box<dyn Detector> {
        Box::new(Scan::new(self.clone()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    Syn,
    Fin,
    Null,
    Xmas,
    Ack,
    /// A full handshake the source resets at once, without a byte of data (connect() scans, and
    /// host discovery without privileges): a client opens a connection to talk.
    Connect,
}

const PROBES: [Probe; 6] = [Probe::Syn, Probe::Fin, Probe::Null, Probe::Xmas, Probe::Ack, Probe::Connect];

impl Probe {
    /// Crafted by hand: no TCP stack opens a conversation with it.
    fn stealth(self) -> bool {
        matches!(self, Probe::Fin | Probe::Null | Probe::Xmas)
    }

    fn name(self) -> &'static str {
        match self {
            Probe::Syn => "SYN",
            Probe::Fin => "FIN",
            Probe::Null => "NULL",
            Probe::Xmas => "XMAS",
            Probe::Ack => "ACK",
            Probe::Connect => "connect",
        }
    }
    fn meaning(self) -> &'static str {
        match self {
            Probe::Syn => {
                "half-open SYN probes: a SYN per port, never completing the handshake (Nmap -sS); open ports answer SYN/ACK, closed ones RST"
            }
            Probe::Fin => {
                "FIN probes (Nmap -sF): a bare FIN that closed ports answer with RST and open ports ignore, meant to slip past simple filters"
            }
            Probe::Null => "NULL probes (Nmap -sN): segments with no flag set at all, which no TCP stack sends, to map ports past filters",
            Probe::Xmas => "XMAS probes (Nmap -sX): FIN+PSH+URG \"lit up like a Christmas tree\", to map ports past filters",
            Probe::Ack => "ACK probes (Nmap -sA): bare ACKs for connections that do not exist, to map which ports a firewall filters",
            Probe::Connect => {
                "connect probes (Nmap -sT, or its host discovery without root): a full handshake reset at once by the prober, without a byte of data"
            }
        }
    }
}

/// What kind of probe the remote sent on this flow, if it looks like one.
fn classify(f: &FlowView<'_>) -> Option<Probe> {
    if !f.remote_initiated() {
        return None;
    }
    let (r, _) = f.side(f.remote());
    let only =
        |flags: u8| r.combos.iter().enumerate().all(|(w, bits)| *bits == if w == (flags >> 6) as usize { 1u64 << (flags & 63) } else { 0 });
    if r.syn > 0 && r.data == 0 && r.pure_ack == 0 && r.fin == 0 {
        Some(Probe::Syn)
    } else if r.syn > 0 && r.data == 0 && r.fin == 0 && r.rst > 0 && f.side(f.local).0.data == 0 {
        Some(Probe::Connect)
    } else if only(FIN) {
        Some(Probe::Fin)
    } else if only(0) {
        Some(Probe::Null)
    } else if only(FIN | PSH | URG) {
        Some(Probe::Xmas)
    } else if only(ACK) && r.data == 0 && f.side(f.local).0.syn_ack == 0 {
        Some(Probe::Ack)
    } else {
        None
    }
}

/// What one source probed within the window.
struct ProbeRecord {
    iface: String,
    first_seen: u64,
    last_seen: u64,
    packets: u64,
    targets: CappedSet<(IpAddr, u16)>,
    stealth_targets: CappedSet<(IpAddr, u16)>,
    hosts: CappedSet<IpAddr>,
    /// Flows per probe type, indexed by `Probe as usize` (an array, not a map: a spoofed flood
    /// makes a record per source, and a map's node per record was megabytes).
    probes: [u64; PROBES.len()],
    answered_open: u64,
}

impl ProbeRecord {
    /// The probe types it used, with their flow counts, in `Probe`'s order.
    fn used(&self) -> impl Iterator<Item = (Probe, u64)> + '_ {
        PROBES.iter().map(|&p| (p, self.probes[p as usize])).filter(|&(_, n)| n > 0)
    }

    /// The probe type it used most (the first in `Probe`'s order on a tie).
    fn main_probe(&self) -> Probe {
        self.used().fold((Probe::Syn, 0), |best, (p, n)| if n > best.1 { (p, n) } else { best }).0
    }
}

pub struct Scan {
    config: Config,
    records: Windowed<IpAddr, ProbeRecord>,
}

impl Scan {
    pub fn new(config: Config) -> Self {
        let w = config.window_secs * 1_000_000_000;
        Scan { config, records: Windowed::new(w, 20_000) }
    }
}

impl Detector for Scan {
    fn observe_flows(&mut self, now_ns: u64, flows: &[FlowView<'_>]) -> Vec<Alert> {
        let mut touched = Vec::new();
        for f in flows {
            let Some(probe) = classify(f) else { continue };
            let (r, r0) = f.side(f.remote());
            let (l, l0) = f.side(f.local);
            let t = self.records.touch(f.remote_addr(), now_ns, || ProbeRecord {
                iface: f.iface.to_string(),
                first_seen: f.first_seen(),
                last_seen: 0,
                packets: 0,
                targets: CappedSet::new(65_536),
                stealth_targets: CappedSet::new(4096),
                hosts: CappedSet::new(4096),
                probes: [0; PROBES.len()],
                answered_open: 0,
            });
            t.last_seen = t.last_seen.max(f.last_seen());
            t.packets += (r.packets - r0.packets) as u64;
            let target = (f.local_addr(), f.local_port());
            t.targets.insert(target);
            if probe.stealth() {
                t.stealth_targets.insert(target);
            }
            if r0.packets == 0 {
                t.probes[probe as usize] += 1;
            }
            t.hosts.insert(f.local_addr());
            t.answered_open += u64::from(l.syn_ack > l0.syn_ack);
            touched.push(f.remote_addr());
        }
        touched.sort();
        touched.dedup();
        let mut alerts = Vec::new();
        for src in touched {
            let Some(t) = self.records.get(&src) else { continue };
            if t.targets.len() >= self.config.min_ports
                || t.hosts.len() >= self.config.min_hosts
                || t.stealth_targets.len() >= self.config.min_stealth_ports
            {
                alerts.push(render(src, t, now_ns));
            }
        }
        alerts
    }

    fn expire(&mut self, now_ns: u64) {
        self.records.expire(now_ns);
    }
}

fn render(src: IpAddr, t: &ProbeRecord, now_ns: u64) -> Alert {
    let ports = t.targets.len() as u64 + t.targets.overflow;
    let hosts = t.hosts.len();
    let main = t.main_probe();
    let kinds: Vec<String> = t.used().map(|(p, n)| format!("{} ×{n}", p.name())).collect();
    let what = if kinds.len() == 1 { format!("{} scan", main.name()) } else { format!("Port scan ({})", kinds.join(", ")) };
    let summary = format!("{what} from {src}: {ports} ports on {hosts} of our hosts probed");
    let meanings: Vec<&str> = t.used().map(|(p, _)| p.meaning()).collect();
    let explanation = format!(
        "{src} sent {}: {ports} (host, port) targets of ours in the window. This is reconnaissance — someone mapping what \
         we run, by hand or as an automated Internet-wide sweep. {} of the probed ports answered as open. Our host is the \
         target, not the culprit; make sure only the services you mean to expose are reachable, and block {src} if it keeps on.",
        meanings.join("; and "),
        t.answered_open
    );
    let sample: Vec<String> = t.targets.iter().take(20).map(|(a, p)| format!("{a}:{p}")).collect();
    let probes: serde_json::Map<String, serde_json::Value> = t.used().map(|(p, n)| (p.name().to_string(), json!(n))).collect();
    AlertDraft {
        detector: "scan",
        severity: Severity::Medium,
        verdict: "scan",
        host_role: HostRole::Victim,
        key: src.to_string(),
        iface: t.iface.clone(),
        src: Some((src, None)),
        dest: (hosts == 1).then(|| t.hosts.iter().next().map(|a| (*a, None))).flatten(),
        first_seen_ns: t.first_seen,
        last_seen_ns: t.last_seen,
        packets: t.packets,
        flows: ports,
    }
    .build(
        now_ns,
        summary,
        explanation,
        json!({
            "probe": main.name(), "probes": probes, "ports": ports, "stealth_ports": t.stealth_targets.len(),
            "hosts": hosts, "open_answers": t.answered_open, "sample": sample,
        }),
    )
}

#[cfg(test)]
mod tests {
    use probe_common::flags::{RST, SYN};

    use super::*;
    use crate::detect::testkit::{Pkt, S, Script, pkt};

    #[test]
    fn syn_probes_to_many_ports_are_a_syn_scan() {
        let mut s = Script::new();
        let mut d = Scan::new(Config::default());
        for p in 1..=20u16 {
            s.send(S, pkt("192.0.2.66", 61000, "10.0.0.2", p, SYN));
            s.send(S, pkt("10.0.0.2", p, "192.0.2.66", 61000, RST | ACK));
        }
        let alerts = s.poll(&mut d, 2 * S);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].verdict, alerts[0].evidence["probe"].as_str()), ("scan", Some("SYN")));
        assert_eq!(alerts[0].flows, 20);
    }

    /// A stateless scanner (masscan, zmap): one SYN per host, never retransmitted; the open
    /// hosts' SYN/ACKs are reset by the scanner's own kernel, the closed ones refuse.
    #[test]
    fn a_stateless_sweep_one_syn_per_host_is_a_scan() {
        let mut s = Script::new();
        let mut d = Scan::new(Config::default());
        for h in 1..=6u16 {
            let host = format!("10.0.0.{h}");
            s.send(S, pkt("192.0.2.90", 61000, &host, 80, SYN));
            if h % 2 == 0 {
                s.send(S, pkt(&host, 80, "192.0.2.90", 61000, SYN | ACK));
                s.send(S + 1, pkt("192.0.2.90", 61000, &host, 80, RST));
            } else {
                s.send(S, pkt(&host, 80, "192.0.2.90", 61000, RST | ACK));
            }
        }
        let a = s.poll(&mut d, 2 * S);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].verdict, a[0].evidence["probe"].as_str()), ("scan", Some("SYN")));
    }

    /// A slow vertical scan, a port every 30 s (nmap -T1 waits 15 s): each probe comes within the
    /// window of the last, so the record lives on and the ports add up.
    #[test]
    fn a_slow_scan_adds_up_across_minutes() {
        let mut s = Script::new();
        let mut d = Scan::new(Config::default());
        let mut raised = Vec::new();
        for p in 1..=15u16 {
            let t = p as u64 * 30 * S;
            s.send(t, pkt("192.0.2.91", 61000, "10.0.0.2", 1000 + p, SYN));
            s.send(t, pkt("10.0.0.2", 1000 + p, "192.0.2.91", 61000, RST | ACK));
            d.expire(t + S);
            raised.extend(s.poll(&mut d, t + S).into_iter().map(|a| (p, a.flows)));
        }
        assert_eq!(raised, [(15, 15)], "raised at the 15th port, 7 minutes in");
    }

    #[test]
    fn xmas_and_null_probes_are_named() {
        let mut s = Script::new();
        let mut d = Scan::new(Config::default());
        for p in 1..=16u16 {
            s.send(S, pkt("192.0.2.77", 40000, "10.0.0.2", p, FIN | PSH | URG));
            s.send(S, pkt("192.0.2.78", 40000, "10.0.0.2", p, 0));
        }
        let mut probes: Vec<String> = s.poll(&mut d, 2 * S).iter().map(|a| a.evidence["probe"].as_str().unwrap().to_string()).collect();
        probes.sort();
        assert_eq!(probes, ["NULL", "XMAS"]);
    }

    #[test]
    fn a_small_sweep_of_stealth_probes_is_a_scan_naming_every_probe_type() {
        let mut s = Script::new();
        let mut d = Scan::new(Config::default());
        s.send(S, pkt("192.0.2.90", 43067, "10.0.0.2", 3389, SYN));
        s.send(S, pkt("10.0.0.2", 3389, "192.0.2.90", 43067, RST | ACK));
        for (port, flags) in [(3390, FIN), (3391, 0), (3392, FIN | PSH | URG)] {
            s.send(S, pkt("192.0.2.90", 60000 + port, "10.0.0.2", port, flags));
            s.send(S, pkt("10.0.0.2", port, "192.0.2.90", 60000 + port, RST | ACK));
        }
        let a = s.poll(&mut d, 2 * S);
        assert_eq!(a.len(), 1, "one alert for the source");
        assert_eq!((a[0].flows, a[0].evidence["stealth_ports"].as_u64()), (4, Some(3)));
        for kind in ["SYN ×1", "FIN ×1", "NULL ×1", "XMAS ×1"] {
            assert!(a[0].summary.contains(kind), "{}", a[0].summary);
        }
    }

    #[test]
    fn a_sweep_of_five_hosts_with_refusals_and_connects_reset_at_once_is_a_scan() {
        // nmap host discovery over a LAN: SYNs to port 80 of each host; closed ones refuse, open
        // ones complete the handshake and the prober resets it without a byte of data.
        let mut s = Script::new();
        let mut d = Scan::new(Config::default());
        for (i, host) in ["10.0.0.1", "10.0.0.5", "10.0.0.9"].into_iter().enumerate() {
            let sp = 58000 + i as u16;
            s.send(S, pkt("192.0.2.71", sp, host, 80, SYN));
            s.send(S, pkt(host, 80, "192.0.2.71", sp, RST | ACK));
        }
        for (i, host) in ["10.0.0.12", "10.0.0.13"].into_iter().enumerate() {
            let sp = 58100 + i as u16;
            s.send(S, pkt("192.0.2.71", sp, host, 80, SYN));
            s.send(S, pkt(host, 80, "192.0.2.71", sp, SYN | ACK));
            s.send(S, pkt("192.0.2.71", sp, host, 80, ACK));
            s.send(S, pkt("192.0.2.71", sp, host, 80, RST | ACK));
        }
        let a = s.poll(&mut d, 2 * S);
        assert_eq!(a.len(), 1, "{:#?}", a.iter().map(|a| &a.summary).collect::<Vec<_>>());
        assert!(a[0].summary.contains("on 5 of our hosts"), "{}", a[0].summary);
        assert!(a[0].explanation.contains("connect probes"), "{}", a[0].explanation);
    }

    #[test]
    fn a_client_talking_to_five_of_our_hosts_is_not_a_scan() {
        let mut s = Script::new();
        let mut d = Scan::new(Config::default());
        for (i, host) in ["10.0.0.1", "10.0.0.5", "10.0.0.9", "10.0.0.12", "10.0.0.13", "10.0.0.14"].into_iter().enumerate() {
            let sp = 58000 + i as u16;
            s.send(S, pkt("192.0.2.71", sp, host, 443, SYN));
            s.send(S, pkt(host, 443, "192.0.2.71", sp, SYN | ACK));
            s.send(S, pkt("192.0.2.71", sp, host, 443, ACK));
            s.send(S, Pkt { payload: b"hello", ..pkt("192.0.2.71", sp, host, 443, PSH | ACK) });
            s.send(S, pkt("192.0.2.71", sp, host, 443, RST | ACK));
        }
        assert!(s.poll(&mut d, 2 * S).is_empty());
    }

    #[test]
    fn two_stealth_probes_are_not_yet_a_scan() {
        let mut s = Script::new();
        let mut d = Scan::new(Config::default());
        for (port, flags) in [(3390, FIN), (3391, 0)] {
            s.send(S, pkt("192.0.2.91", 60000 + port, "10.0.0.2", port, flags));
        }
        assert!(s.poll(&mut d, 2 * S).is_empty());
    }

    #[test]
    fn a_few_closed_ports_and_normal_clients_are_not_a_scan() {
        let mut s = Script::new();
        let mut d = Scan::new(Config::default());
        for p in [81, 82, 83] {
            s.send(S, pkt("192.0.2.1", 40000 + p, "10.0.0.2", p, SYN));
            s.send(S, pkt("10.0.0.2", p, "192.0.2.1", 40000 + p, RST | ACK));
        }
        for i in 0..30u16 {
            s.send(S, pkt("192.0.2.2", 50000 + i, "10.0.0.2", 443, SYN));
            s.send(S, pkt("10.0.0.2", 443, "192.0.2.2", 50000 + i, SYN | ACK));
            s.send(S, pkt("192.0.2.2", 50000 + i, "10.0.0.2", 443, ACK));
        }
        assert!(s.poll(&mut d, 2 * S).is_empty());
    }
}
