//! Backscatter, SYN/ACK kind: SYN/ACKs arriving on connections this host never asked for. Someone
//! SYN-floods a victim with our address forged as the source; the victim's SYN/ACKs come to us and
//! our kernel answers each with a RST. Aggregated per victim, like CAIDA's backscatter attack records.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Detector, DetectorConfig, Invalid, Tally, check_window, FlowView, remote_record::RemoteRecord, window::Windowed};
use crate::alert::{Alert, AlertDraft, HostRole, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub enabled: bool,
    /// A victim record lives this long after its last SYN/ACK (seconds).
    pub window_secs: u64,
    /// SYN/ACKs from one victim before we say anything.
    pub min_packets: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true, window_secs: 60, min_packets: 1 }
    }
}

impl DetectorConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_window("window-secs", self.window_secs)?;
        Ok(())
    }

    fn build(&self) -> Box<dyn Detector> {
        Box::new(BackscatterSynAck::new(self.clone()))
    }
}

pub struct BackscatterSynAck {
    config: Config,
    victims: Windowed<IpAddr, RemoteRecord>,
    packets_seen: u64,
}

impl BackscatterSynAck {
    pub fn new(config: Config) -> Self {
        let window = config.window_secs * 1_000_000_000;
        BackscatterSynAck { config, victims: Windowed::new(window, 10_000), packets_seen: 0 }
    }
}

impl Detector for BackscatterSynAck {
    fn observe_flows(&mut self, now_ns: u64, flows: &[FlowView<'_>]) -> Vec<Alert> {
        let mut touched = std::collections::HashSet::new();
        for f in flows {
            let (r, r0) = f.side(f.remote());
            let (l, l0) = f.side(f.local);
            let new = r.syn_ack - r0.syn_ack;
            let new_rsts = l.rst - l0.rst;
            // Solicited: we sent a SYN on this connection. Our RST may land a poll after its SYN/ACK.
            if r.syn_ack == 0 || l.syn > 0 || (new == 0 && new_rsts == 0) {
                continue;
            }
            self.packets_seen += new as u64;
            let victim = f.remote_addr();
            self.victims.touch(victim, now_ns, || RemoteRecord::new(f)).add(f, new as u64, r0.syn_ack == 0, new_rsts as u64);
            touched.insert(victim);
        }
        let mut alerts = Vec::new();
        for victim in touched {
            let Some(v) = self.victims.get(&victim) else { continue };
            if v.packets < self.config.min_packets {
                continue;
            }
            alerts.push(render(victim, v, now_ns));
        }
        alerts
    }

    fn expire(&mut self, now_ns: u64) {
        self.victims.expire(now_ns);
    }

    fn take_tallies(&mut self) -> Vec<Tally> {
        let packets = std::mem::take(&mut self.packets_seen);
        if packets == 0 { vec![] } else { vec![Tally::Backscatter { kind: "syn-ack", packets }] }
    }
}

fn render(victim: IpAddr, v: &RemoteRecord, now_ns: u64) -> Alert {
    let ours = v.local_addrs();
    let ours_text = ours.join(", ");
    let vports = v.remote_ports();
    let service = v.service(victim);
    let summary = format!(
        "Backscatter: {service} sent {} SYN/ACKs to {} of our ports that we never asked for; someone is SYN-flooding it with our address forged",
        v.packets,
        v.distinct_local_ports()
    );
    let explanation = format!(
        "A SYN/ACK is the second step of a TCP handshake: it answers a SYN. This host ({ours_text}) sent no SYN on any of these \
         {} connections, so the SYNs that {service} is answering were not ours: someone is flooding {victim} with SYNs and \
         writing our address in them as the source, and {victim}'s replies come back to us. Our kernel answered {} of them \
         with a RST, which is the normal, correct reaction to a SYN/ACK nobody asked for; those outgoing RSTs are why an IDS \
         may report this host 'talking to' {victim} (the 2007 \"Known Bot C&C\" false positive was exactly this). \
         This host is a bystander, not compromised, and nothing needs fixing here; {victim} is the one under attack.",
        v.flows, v.answers
    );
    let evidence = json!({
        "kind": "syn-ack",
        "victim": victim,
        "victim_ports": vports,
        "local_addresses": ours,
        "local_ports_distinct": v.distinct_local_ports(),
        "our_rst_answers": v.answers,
        "peak_packets_per_minute": v.rate.peak,
        "flags_seen": { "remote": ["SA"], "local": if v.answers > 0 { vec!["R"] } else { vec![] } },
    });
    AlertDraft {
        detector: "backscatter_synack",
        severity: Severity::Low,
        verdict: "backscatter",
        host_role: HostRole::Bystander,
        key: victim.to_string(),
        iface: v.iface.clone(),
        src: Some((victim, (vports.len() == 1).then(|| vports[0]))),
        dest: v.local_addrs.iter().next().map(|a| (*a, None)),
        first_seen_ns: v.first_seen,
        last_seen_ns: v.last_seen,
        packets: v.packets,
        flows: v.flows,
    }
    .build(now_ns, summary, explanation, evidence)
}

#[cfg(test)]
mod tests {
    use probe_common::flags::{ACK, RST, SYN};

    use super::*;
    use crate::detect::testkit::{S, Script, pkt};

    #[test]
    fn unsolicited_syn_acks_answered_by_rst_are_backscatter_per_victim() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        for i in 0..10u16 {
            s.send(100 * S + i as u64, pkt("198.51.100.7", 443, "10.0.0.2", 30000 + i, SYN | ACK));
            s.send(100 * S + i as u64 + 1, pkt("10.0.0.2", 30000 + i, "198.51.100.7", 443, RST));
        }
        let alerts = s.poll(&mut d, 101 * S);
        assert_eq!(alerts.len(), 1, "one alert per victim");
        let a = &alerts[0];
        assert_eq!((a.verdict, a.packets, a.flows, a.host_role), ("backscatter", 10, 10, HostRole::Bystander));
        assert_eq!(a.src_ip, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(a.evidence["our_rst_answers"], 10);
        assert_eq!(a.evidence["local_ports_distinct"], 10);
        assert!(a.explanation.contains("not compromised"));
        assert_eq!(d.take_tallies(), vec![Tally::Backscatter { kind: "syn-ack", packets: 10 }]);
    }

    #[test]
    fn our_rst_in_the_next_poll_still_counts_as_our_answer() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        s.send(S, pkt("198.51.100.7", 443, "10.0.0.2", 30000, SYN | ACK));
        assert_eq!(s.poll(&mut d, S + 1)[0].evidence["our_rst_answers"], 0);
        s.send(S + 2, pkt("10.0.0.2", 30000, "198.51.100.7", 443, RST));
        let a = s.poll(&mut d, S + 3);
        assert_eq!((a[0].packets, a[0].flows, a[0].evidence["our_rst_answers"].as_u64()), (1, 1, Some(1)));
    }

    #[test]
    fn our_own_handshakes_are_not_backscatter() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        s.send(S, pkt("10.0.0.2", 40000, "192.0.2.1", 80, SYN));
        s.send(S + 1, pkt("192.0.2.1", 80, "10.0.0.2", 40000, SYN | ACK));
        s.send(S + 2, pkt("10.0.0.2", 40000, "192.0.2.1", 80, ACK));
        assert!(s.poll(&mut d, 2 * S).is_empty());
        // Inbound connection: their SYN, our SYN/ACK — our SYN/ACK is outbound, not backscatter.
        s.send(3 * S, pkt("192.0.2.9", 5555, "10.0.0.2", 22, SYN));
        s.send(3 * S + 1, pkt("10.0.0.2", 22, "192.0.2.9", 5555, SYN | ACK));
        assert!(s.poll(&mut d, 4 * S).is_empty());
    }
}
