//! Backscatter, SYN/ACK kind: SYN/ACKs arriving on connections this host never asked for. Someone
//! SYN-floods a victim with our address forged as the source; the victim's SYN/ACKs come to us and
//! our kernel answers each with a RST. Aggregated per victim, like CAIDA's backscatter attack records.
//!
//! A SYN/ACK alone proves nothing: the capture or the agent may have started mid-handshake, or the
//! gateway may route our SYN out another interface. The verdict waits for our reaction. Our RST
//! means no socket asked for it (backscatter); our ACK or data, or the remote's data, means a
//! connection whose SYN we did not see (no alert); silence for the grace period counts as
//! unsolicited (a firewall dropped it, or the capture holds one direction). Many senders with a
//! packet or two each are a reflection flood at us, not backscatter ([`super::reflection`]).

use std::{collections::HashSet, net::IpAddr};

use probe_common::{
    action::DROP_REASON_NAMES,
    flow::{FlowEntry, FlowKey, NOTABLE_UNSOLICITED_SYN_ACK, Side},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    AggregateView, Detector, DetectorConfig, EventView, FlowView, Invalid, Tally, check_at_least_one, check_window,
    dropped::Dropped,
    reflection::{self, Reflections},
    remote_record::RemoteRecord,
    window::Windowed,
};
use crate::alert::{Alert, AlertDraft, HostRole, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub enabled: bool,
    /// A victim record lives this long after its last SYN/ACK (seconds).
    pub window_secs: u64,
    /// SYN/ACKs from one victim before we say anything.
    pub min_packets: u64,
    /// How long a SYN/ACK waits for our reaction (RST, ACK, data) before silence is the verdict.
    pub grace_secs: u64,
    /// Distinct senders of unsolicited SYN/ACKs within `reflection-window-secs` that make a
    /// reflection flood at us rather than backscatter.
    pub reflection_min_senders: u64,
    pub reflection_window_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true, window_secs: 60, min_packets: 1, grace_secs: 3, reflection_min_senders: 100, reflection_window_secs: 10 }
    }
}

impl DetectorConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_window("window-secs", self.window_secs)?;
        check_window("grace-secs", self.grace_secs)?;
        check_window("reflection-window-secs", self.reflection_window_secs)?;
        check_at_least_one("reflection-min-senders", self.reflection_min_senders)?;
        Ok(())
    }

    fn build(&self) -> Box<dyn Detector> {
        Box::new(BackscatterSynAck::new(self.clone()))
    }
}

/// A flow that brought us a SYN/ACK we did not ask for, waiting for our reaction or judged.
struct Pending {
    iface: String,
    entry: FlowEntry,
    local: Side,
    /// When its first SYN/ACK was seen by a poll.
    since: u64,
    /// Our ACK or data, or the remote's data: a connection whose SYN we missed.
    connection: bool,
    judged: bool,
    /// What the victim record already holds of this flow: SYN/ACKs, our RSTs.
    counted: (u32, u32),
}

impl Pending {
    fn view(&self) -> FlowView<'_> {
        FlowView { iface: &self.iface, now: &self.entry, before: &self.entry, local: self.local }
    }
}

pub struct BackscatterSynAck {
    config: Config,
    victims: Windowed<IpAddr, RemoteRecord>,
    flows: Windowed<FlowKey, Pending>,
    /// Victims with news since the last alerts were written.
    touched: HashSet<IpAddr>,
    reflections: Reflections,
    /// SYN/ACKs flagprobe dropped (`--drop unsolicited-synack`), by victim.
    dropped: Dropped,
    /// Each waiting flow's first SYN/ACK sequence number, and whether a later one differed.
    isns: Windowed<FlowKey, (u32, bool)>,
}

impl BackscatterSynAck {
    pub fn new(config: Config) -> Self {
        let window = config.window_secs * 1_000_000_000;
        BackscatterSynAck {
            victims: Windowed::new(window, 10_000),
            flows: Windowed::new(window, 16_384),
            touched: HashSet::new(),
            reflections: Reflections::new(&reflection::SYN_ACK, config.reflection_window_secs, config.reflection_min_senders),
            dropped: Dropped::new(DROP_REASON_NAMES[0], window),
            isns: Windowed::new(window, 16_384),
            config,
        }
    }

    /// Add what `p`'s flow did since it was last counted to its victim's record.
    fn judge(victims: &mut Windowed<IpAddr, RemoteRecord>, touched: &mut HashSet<IpAddr>, p: &mut Pending, now_ns: u64) -> u64 {
        let f = p.view();
        let (r, l) = (&f.now.sides[f.remote().index()], &f.now.sides[f.local.index()]);
        let new = r.syn_ack.saturating_sub(p.counted.0);
        let answers = l.rst.saturating_sub(p.counted.1);
        let victim = f.remote_addr();
        victims.touch(victim, now_ns, || RemoteRecord::new(&f)).add(&f, u64::from(new), !p.judged, u64::from(answers));
        touched.insert(victim);
        p.counted = (r.syn_ack, l.rst);
        p.judged = true;
        u64::from(new)
    }
}

impl BackscatterSynAck {
    /// Flows our host has not reacted to for `grace_ns`: their silence is the verdict. Not for a
    /// flow whose SYN/ACKs changed their sequence number: a flood's victim retransmits the one
    /// SYN/ACK it sent, with the same number, while new numbers answer new SYNs on the same ports
    /// (our own SYN, retransmitted, that this capture or this hook did not see, answered by a SYN
    /// proxy each time): silence is no verdict there, and our RST still is one.
    fn judge_silent(&mut self, now_ns: u64, grace_ns: u64) {
        let isns = &self.isns;
        for p in self.flows.values_mut() {
            let renumbered = isns.get(&p.entry.key).is_some_and(|(_, changed)| *changed);
            if !p.judged && !p.connection && !renumbered && now_ns.saturating_sub(p.since) >= grace_ns {
                self.reflections.count(Self::judge(&mut self.victims, &mut self.touched, p, now_ns));
            }
        }
    }

    /// One alert per victim with news (unless a reflection flood absorbs it), and the reflection
    /// incidents' updates for `iface` (all of them at the end of the input).
    fn alerts(&mut self, now_ns: u64, iface: Option<&str>) -> Vec<Alert> {
        let touched = std::mem::take(&mut self.touched);
        let dropped = &self.dropped;
        self.reflections.alerts(now_ns, touched, &self.victims, self.config.min_packets, iface, |v, r| render(v, r, dropped, now_ns))
    }
}

impl Detector for BackscatterSynAck {
    fn observe_event(&mut self, ev: &EventView<'_>) -> Vec<Alert> {
        if ev.event.reasons & NOTABLE_UNSOLICITED_SYN_ACK != 0 {
            // An event can come after the poll that already counted its flow (the ring buffer's
            // reader runs beside the poller): the victim's alert is written again with it.
            if self.dropped.observe(ev) && self.victims.get(&ev.src()).is_some() {
                self.touched.insert(ev.src());
            }
            if ev.to_local && !ev.from_local {
                self.reflections.target(ev.iface, ev.dst(), ev.at_ns);
            }
            let (key, _) = FlowKey::canonical(&ev.event.endpoints());
            let isn = ev.event.seq;
            let seen = self.isns.touch(key, ev.at_ns, || (isn, false));
            seen.1 |= seen.0 != isn;
        }
        Vec::new()
    }

    fn observe_flows(&mut self, now_ns: u64, flows: &[FlowView<'_>]) -> Vec<Alert> {
        for f in flows {
            let (r, _) = f.side(f.remote());
            let (l, _) = f.side(f.local);
            // Solicited: we sent a SYN on this connection. Not backscatter either when the remote
            // opened it (its SYN, our SYN/ACK: an odd client answering with a SYN/ACK of its own):
            // a flood's victim only ever answers SYNs that someone else sent in our name.
            if r.syn_ack == 0 || l.syn > 0 || r.syn > 0 || l.syn_ack > 0 {
                continue;
            }
            let p = self.flows.touch(f.now.key, now_ns, || Pending {
                iface: f.iface.to_string(),
                entry: *f.now,
                local: f.local,
                since: now_ns,
                connection: false,
                judged: false,
                counted: (0, 0),
            });
            p.entry = *f.now;
            // A connection whose SYN we missed: our ACK or data, or anything but SYN/ACKs and RSTs
            // from the remote (a victim of a SYN flood sends nothing else on a half-open connection).
            if l.pure_ack + l.data + l.fin > 0 || r.data + r.pure_ack + r.fin > 0 {
                p.connection = true;
            }
            // Our RST settles it at once; a flow already judged adds what it did since.
            if !p.connection && (l.rst > 0 || p.judged) {
                self.reflections.count(Self::judge(&mut self.victims, &mut self.touched, p, now_ns));
            }
        }
        Vec::new()
    }

    /// The alerts are written here, after the flows of the same poll: a flood of senders first
    /// decides whether the per-victim records are backscatter at all.
    fn observe_aggregates(&mut self, now_ns: u64, view: &AggregateView<'_>) -> Vec<Alert> {
        self.judge_silent(now_ns, self.config.grace_secs * 1_000_000_000);
        self.reflections.observe(now_ns, view);
        self.alerts(now_ns, Some(view.iface))
    }

    /// A capture has no "later": a SYN/ACK still waiting for our reaction got none.
    fn end_of_input(&mut self, now_ns: u64) -> Vec<Alert> {
        self.judge_silent(now_ns, 0);
        self.alerts(now_ns, None)
    }

    fn expire(&mut self, now_ns: u64) {
        self.victims.expire(now_ns);
        self.flows.expire(now_ns);
        self.dropped.expire(now_ns);
        self.isns.expire(now_ns);
    }

    fn take_tallies(&mut self) -> Vec<Tally> {
        self.reflections.tallies()
    }
}

fn render(victim: IpAddr, v: &RemoteRecord, dropped: &Dropped, now_ns: u64) -> Alert {
    let ours = v.local_addrs();
    let ours_text = ours.join(", ");
    let vports = v.remote_ports();
    let service = v.service(victim);
    let summary = format!(
        "Backscatter: {service} sent {} to {} of our ports that we never asked for; someone is SYN-flooding it with our address forged",
        crate::alert::counted(v.packets, "SYN/ACK"),
        v.distinct_local_ports()
    );
    let drop_words =
        dropped.sentence(victim, "our kernel never saw them and sent no RST back: there is no outgoing packet for an IDS to flag");
    let reaction = if let Some(words) = drop_words.as_ref().filter(|_| v.answers == 0) {
        words.clone()
    } else if v.answers > 0 {
        format!(
            "Our kernel answered {} of them with a RST, which is the normal, correct reaction to a SYN/ACK nobody asked \
             for; those outgoing RSTs are why an IDS may report this host 'talking to' {victim} (the 2007 \"Known Bot \
             C&C\" false positive was exactly this).",
            v.answers
        )
    } else {
        "Nothing came back from this host, neither a RST nor an ACK: a firewall in front of it dropped them, or this \
         capture holds only the inbound direction."
            .to_string()
    };
    let reaction = match drop_words.filter(|_| v.answers > 0) {
        Some(dry_run) => format!("{reaction} {dry_run}"),
        None => reaction,
    };
    let explanation = format!(
        "A SYN/ACK is the second step of a TCP handshake: it answers a SYN. This host ({ours_text}) sent no SYN on any of \
         these {} connections and did not go on with them, so the SYNs that {service} is answering were not ours: \
         someone is flooding {victim} with SYNs and writing our address in them as the source, and {victim}'s replies \
         come back to us. {reaction} This host is a bystander, not compromised, and nothing needs fixing here; {victim} \
         is the one under attack.",
        v.flows
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
        "dropped_by_flagprobe": dropped.evidence(victim),
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
    use probe_common::flags::{ACK, PSH, RST, SYN};

    use super::*;
    use crate::detect::testkit::{Pkt, S, Script, nth_remote, pkt};

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
    fn our_rst_in_the_next_poll_settles_it() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        s.send(S, pkt("198.51.100.7", 443, "10.0.0.2", 30000, SYN | ACK));
        assert!(s.poll(&mut d, S + 1).is_empty(), "a SYN/ACK alone proves nothing yet");
        s.send(S + 2, pkt("10.0.0.2", 30000, "198.51.100.7", 443, RST));
        // Settled, and written a poll later: one packet is each sender's share of a reflection
        // flood, which the next poll tells apart.
        assert!(s.poll(&mut d, S + 3).is_empty());
        let a = s.poll(&mut d, S + 4);
        assert_eq!((a[0].packets, a[0].flows, a[0].evidence["our_rst_answers"].as_u64()), (1, 1, Some(1)));
    }

    #[test]
    fn a_syn_ack_we_go_on_with_is_a_connection_whose_syn_we_missed() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        // Capture started mid-handshake: their SYN/ACK, our ACK and request, their data.
        s.send(S, pkt("198.51.100.7", 80, "10.0.0.2", 30000, SYN | ACK));
        s.send(S + 1, pkt("10.0.0.2", 30000, "198.51.100.7", 80, ACK));
        s.send(S + 2, Pkt { payload: b"GET / HTTP/1.1\r\n\r\n", ..pkt("10.0.0.2", 30000, "198.51.100.7", 80, ACK | PSH) });
        // Asymmetric routing: our ACK left by another interface; only their data shows it.
        s.send(S, pkt("198.51.100.8", 80, "10.0.0.2", 30001, SYN | ACK));
        s.send(S + 3, Pkt { payload: &[0; 100], ..pkt("198.51.100.8", 80, "10.0.0.2", 30001, ACK) });
        assert!(s.poll(&mut d, S + 4).is_empty());
        assert!(s.poll(&mut d, 10 * S).is_empty(), "not after the grace period either");
        assert!(s.end(&mut d, 11 * S).is_empty(), "nor at the end of the capture");
    }

    #[test]
    fn syn_acks_with_new_sequence_numbers_and_no_answer_are_no_verdict() {
        // nDPI's multiple-synack-different-seq: four SYN/ACKs over 29 s, three ISNs, our answer
        // not in the capture until our data (a SYN proxy answering our retransmitted SYN anew).
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        for (t, isn) in [(0, 238_755_595u32), (2, 238_755_595), (13, 2_859_879_429), (28, 2_829_651_200)] {
            s.send(S + t * S, Pkt { seq: isn, ..pkt("192.0.2.10", 443, "10.0.0.2", 59927, SYN | ACK) });
        }
        let mut alerts = s.events_to(&mut d);
        alerts.extend(s.poll(&mut d, 40 * S));
        alerts.extend(s.end(&mut d, 60 * S));
        assert!(alerts.is_empty(), "{:#?}", alerts.iter().map(|a| &a.summary).collect::<Vec<_>>());
        // The same victim retransmitting one SYN/ACK, unanswered: still unsolicited.
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        for t in [0, 1, 3] {
            s.send(S + t * S, Pkt { seq: 777, ..pkt("192.0.2.10", 443, "10.0.0.2", 59928, SYN | ACK) });
        }
        let mut alerts = s.events_to(&mut d);
        alerts.extend(s.end(&mut d, 60 * S));
        assert_eq!(alerts.len(), 1, "{:#?}", alerts.iter().map(|a| &a.summary).collect::<Vec<_>>());
    }

    #[test]
    fn odd_handshakes_of_a_connection_are_not_backscatter() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        // A client that answers our SYN/ACK with a SYN/ACK of its own, then ACKs.
        s.send(S, pkt("198.51.100.9", 40005, "10.0.0.2", 8080, SYN));
        s.send(S + 1, pkt("10.0.0.2", 8080, "198.51.100.9", 40005, SYN | ACK));
        s.send(S + 2, pkt("198.51.100.9", 40005, "10.0.0.2", 8080, SYN | ACK));
        s.send(S + 3, pkt("198.51.100.9", 40005, "10.0.0.2", 8080, ACK));
        // A SYN/ACK whose SYN we did not see, followed by the remote's own ACK.
        s.send(S + 4, pkt("198.51.100.9", 40007, "10.0.0.2", 8080, SYN | ACK));
        s.send(S + 5, pkt("198.51.100.9", 40007, "10.0.0.2", 8080, ACK));
        let mut alerts = s.poll(&mut d, 2 * S);
        alerts.extend(s.end(&mut d, 10 * S));
        assert!(alerts.is_empty(), "{:#?}", alerts.iter().map(|a| &a.summary).collect::<Vec<_>>());
    }

    #[test]
    fn silence_for_the_grace_period_is_unsolicited_and_says_we_did_not_answer() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        // The victim retransmits its unanswered SYN/ACK: one flow, three packets.
        for t in [S, 2 * S, 4 * S] {
            s.send(t, pkt("198.51.100.7", 443, "10.0.0.2", 30000, SYN | ACK));
        }
        assert!(s.poll(&mut d, S + 1).is_empty());
        assert!(s.poll(&mut d, 3 * S).is_empty(), "still within the grace period");
        let a = s.poll(&mut d, 4 * S + 1);
        assert_eq!((a.len(), a[0].flows, a[0].evidence["our_rst_answers"].as_u64()), (1, 1, Some(0)));
        assert!(a[0].explanation.contains("Nothing came back"), "{}", a[0].explanation);
        assert_eq!(a[0].packets, 3);
    }

    /// The ring buffer's reader runs beside the poller: an event may come after the poll that
    /// counted its flow. Its drop is then in the victim's next alert, not lost.
    #[test]
    fn a_drop_seen_after_its_poll_updates_the_alert() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        for port in [30000u16, 30001] {
            s.send(S, pkt("198.51.100.7", 443, "10.0.0.2", port, SYN | ACK));
            s.send(S + 1, pkt("10.0.0.2", port, "198.51.100.7", 443, RST));
        }
        let a = s.poll(&mut d, 2 * S);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].evidence["dropped_by_flagprobe"], serde_json::Value::Null, "{}", a[0].evidence);
        for ev in s.events.iter_mut().filter(|e| e.flags == SYN | ACK) {
            ev.action = probe_common::action::ACTION_WOULD_DROP;
        }
        assert!(s.events_to(&mut d).is_empty());
        let a = s.poll(&mut d, 3 * S);
        assert_eq!(a.len(), 1, "the victim's alert again");
        assert_eq!(a[0].evidence["dropped_by_flagprobe"]["would_drop"], 2, "{}", a[0].evidence);
    }

    #[test]
    fn a_capture_that_ends_while_a_syn_ack_waits_judges_it_unanswered() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        s.send(S, pkt("198.51.100.7", 443, "10.0.0.2", 30000, SYN | ACK));
        let a = s.end(&mut d, S + 1000);
        assert_eq!((a.len(), a[0].verdict, a[0].host_role), (1, "backscatter", HostRole::Bystander));
    }

    #[test]
    fn many_reflectors_with_a_packet_each_are_one_reflection_flood_at_us() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        for i in 0..1000u32 {
            let src = nth_remote(i);
            s.send(S, pkt(&src, 80, "10.0.0.2", 1024 + i as u16, SYN | ACK));
            s.send(S + 1, pkt("10.0.0.2", 1024 + i as u16, &src, 80, RST));
        }
        // The events come first, as in the pipeline: they say whom the packets hit.
        assert!(s.events_to(&mut d).is_empty());
        let a = s.poll(&mut d, 2 * S);
        assert_eq!(a.len(), 1, "one incident, no per-reflector alerts: {:?}", a.iter().map(|a| &a.summary).collect::<Vec<_>>());
        let a = &a[0];
        assert_eq!((a.verdict, a.host_role, a.severity), ("reflection", HostRole::Victim, Severity::High));
        let n = a.evidence["reflectors_estimate"].as_u64().unwrap();
        assert!((800..1200).contains(&n), "about 1000 reflectors: {n}");
        // One per sender the table held: a few share a slot, as in the kernel's direct-mapped
        // table, and are judged by their events alone (our RST may take an unproven flow's slot).
        let held = a.evidence["per_sender_alerts_held_back"].as_u64().unwrap();
        assert!((950..=s.table.len() as u64).contains(&held), "{held}");
        assert!(!a.explanation.contains("bystander,") && a.explanation.contains("target"));
        // The attacked address is named, and the incident starts with its first packet, not
        // with the poll that counted it.
        assert_eq!(a.dest_ip, Some("10.0.0.2".parse().unwrap()));
        assert!(a.summary.starts_with("SYN/ACK reflection flood at 10.0.0.2:"), "{}", a.summary);
        assert!(a.explanation.starts_with("10.0.0.2 received") && a.explanation.contains("10.0.0.2 is the target"), "{}", a.explanation);
        assert_eq!(a.first_seen, crate::alert::rfc3339(S));
        let tallies = d.take_tallies();
        assert!(tallies.contains(&Tally::HeldBack { detector: "backscatter_synack", alerts: held }), "{tallies:?}");
    }

    #[test]
    fn one_flooded_victim_hitting_many_of_our_ports_stays_backscatter() {
        let mut s = Script::new();
        let mut d = BackscatterSynAck::new(Config::default());
        for i in 0..1000u16 {
            s.send(S, pkt("198.51.100.7", 80, "10.0.0.2", 1024 + i, SYN | ACK));
            s.send(S + 1, pkt("10.0.0.2", 1024 + i, "198.51.100.7", 80, RST));
        }
        let a = s.poll(&mut d, 2 * S);
        assert_eq!((a.len(), a[0].verdict, a[0].host_role), (1, "backscatter", HostRole::Bystander));
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
