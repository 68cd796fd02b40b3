//! Backscatter, RST kind: resets arriving on connections this host never opened. Someone sent
//! packets to the remote with our address forged (SYNs to its closed ports, say), and its RSTs come
//! to us. Aggregated per remote. Thousands of remotes with a RST or two each are a flood at us,
//! not backscatter ([`super::reflection`]).

use std::net::IpAddr;

use std::collections::HashSet;

use probe_common::{flags::RST, flow::NOTABLE_INVALID};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    AggregateView, Detector, DetectorConfig, EventView, FlowView, Invalid, Tally, check_at_least_one, check_window,
    reflection::{self, Reflections},
    remote_record::RemoteRecord,
    window::Windowed,
};
use crate::alert::{Alert, AlertDraft, HostRole, Severity};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub enabled: bool,
    pub window_secs: u64,
    pub min_packets: u64,
    /// Distinct senders of unsolicited RSTs within `reflection-window-secs` that make a flood at
    /// us rather than backscatter.
    pub reflection_min_senders: u64,
    pub reflection_window_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true, window_secs: 60, min_packets: 1, reflection_min_senders: 100, reflection_window_secs: 10 }
    }
}

impl DetectorConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_window("window-secs", self.window_secs)?;
        check_window("reflection-window-secs", self.reflection_window_secs)?;
        check_at_least_one("reflection-min-senders", self.reflection_min_senders)?;
        Ok(())
    }

    fn build(&self) -> Box<dyn Detector> {
        Box::new(BackscatterRst::new(self.clone()))
    }
}

pub struct BackscatterRst {
    config: Config,
    remotes: Windowed<IpAddr, RemoteRecord>,
    /// Remotes with news since the last alerts were written.
    touched: HashSet<IpAddr>,
    reflections: Reflections,
}

impl BackscatterRst {
    pub fn new(config: Config) -> Self {
        let window = config.window_secs * 1_000_000_000;
        BackscatterRst {
            remotes: Windowed::new(window, 10_000),
            touched: HashSet::new(),
            reflections: Reflections::new(&reflection::RST, config.reflection_window_secs, config.reflection_min_senders),
            config,
        }
    }
}

impl Detector for BackscatterRst {
    /// Whom unsolicited RSTs hit, for a reflection incident's alert: a RST from outside on a
    /// connection we sent nothing on (as the flow stood before it), with no crafted flags.
    fn observe_event(&mut self, ev: &EventView<'_>) -> Vec<Alert> {
        let e = ev.event;
        let (sender, receiver) = ev.sides();
        let before = &e.flow_before;
        if e.flags & RST != 0
            && e.reasons & NOTABLE_INVALID == 0
            && ev.to_local
            && !ev.from_local
            && before.sides[receiver.index()].packets == 0
            && before.sides[sender.index()].invalid == 0
        {
            self.reflections.target(ev.iface, ev.dst(), ev.at_ns);
        }
        Vec::new()
    }

    fn observe_flows(&mut self, now_ns: u64, flows: &[FlowView<'_>]) -> Vec<Alert> {
        for f in flows {
            let (r, r0) = f.side(f.remote());
            let (l, _) = f.side(f.local);
            let new = r.rst - r0.rst;
            // We took part in this connection: its resets are a normal ending, not backscatter. And a
            // sender of invalid combinations (SYN+RST, all flags) is crafting probes, not answering.
            if new == 0 || l.packets > 0 || r.invalid > 0 {
                continue;
            }
            self.reflections.count(new as u64);
            let remote = f.remote_addr();
            self.remotes.touch(remote, now_ns, || RemoteRecord::new(f)).add(f, new as u64, r0.rst == 0, (r.rst_ack - r0.rst_ack) as u64);
            self.touched.insert(remote);
        }
        Vec::new()
    }

    /// The alerts are written here, after the flows of the same poll: a flood of senders first
    /// decides whether the per-remote records are backscatter at all.
    fn observe_aggregates(&mut self, now_ns: u64, view: &AggregateView<'_>) -> Vec<Alert> {
        self.reflections.observe(now_ns, view);
        let touched = std::mem::take(&mut self.touched);
        self.reflections.alerts(now_ns, touched, &self.remotes, self.config.min_packets, Some(view.iface), |r, e| render(r, e, now_ns))
    }

    /// A capture has no next poll: what waits for one is written now.
    fn end_of_input(&mut self, now_ns: u64) -> Vec<Alert> {
        let touched = std::mem::take(&mut self.touched);
        self.reflections.alerts(now_ns, touched, &self.remotes, self.config.min_packets, None, |r, e| render(r, e, now_ns))
    }

    fn expire(&mut self, now_ns: u64) {
        self.remotes.expire(now_ns);
    }

    fn take_tallies(&mut self) -> Vec<Tally> {
        self.reflections.tallies()
    }
}

fn render(remote: IpAddr, e: &RemoteRecord, now_ns: u64) -> Alert {
    let ours = e.local_addrs();
    let rports = e.remote_ports();
    let service = e.service(remote);
    let summary = format!(
        "Backscatter: {service} sent {} RSTs on {} connections this host never opened; someone forged our address towards it",
        e.packets, e.flows
    );
    let explanation = format!(
        "A RST ends a connection, but this host ({}) sent nothing on any of these connections. The usual reason is \
         backscatter: someone sent packets to {remote} (for example SYNs to closed ports, or packets a firewall rejects) \
         with our address forged as the source, and {remote} answered the address it saw. This host is a bystander, not \
         compromised; {remote} is the one being hit.",
        ours.join(", ")
    );
    let evidence = json!({
        "kind": "rst",
        "remote": remote,
        "remote_ports": rports,
        "local_addresses": ours,
        "local_ports_distinct": e.distinct_local_ports(),
        "rst_with_ack": e.answers,
        "bare_rst": e.packets - e.answers,
        "peak_packets_per_minute": e.rate.peak,
        "flags_seen": { "remote": if e.answers > 0 { vec!["RA"] } else { vec!["R"] }, "local": Vec::<&str>::new() },
    });
    AlertDraft {
        detector: "backscatter_rst",
        severity: Severity::Low,
        verdict: "backscatter",
        host_role: HostRole::Bystander,
        key: remote.to_string(),
        iface: e.iface.clone(),
        src: Some((remote, (rports.len() == 1).then(|| rports[0]))),
        dest: e.local_addrs.iter().next().map(|a| (*a, None)),
        first_seen_ns: e.first_seen,
        last_seen_ns: e.last_seen,
        packets: e.packets,
        flows: e.flows,
    }
    .build(now_ns, summary, explanation, evidence)
}

#[cfg(test)]
mod tests {
    use probe_common::flags::{ACK, RST, SYN};

    use super::*;
    use crate::detect::testkit::{S, Script, nth_remote, pkt};

    #[test]
    fn resets_for_connections_we_never_opened_are_backscatter() {
        let mut s = Script::new();
        let mut d = BackscatterRst::new(Config::default());
        for i in 0..10u16 {
            s.send(5 * S + i as u64, pkt("203.0.113.50", 8081, "10.0.0.2", 20000 + i, RST | ACK));
        }
        let alerts = s.poll(&mut d, 6 * S);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].verdict, alerts[0].packets, alerts[0].flows), ("backscatter", 10, 10));
        assert_eq!(alerts[0].evidence["rst_with_ack"], 10);
    }

    #[test]
    fn resets_from_a_thousand_senders_are_one_flood_at_us() {
        let mut s = Script::new();
        let mut d = BackscatterRst::new(Config::default());
        for i in 0..1000u32 {
            let src = nth_remote(i);
            s.send(S, pkt(&src, 443, "10.0.0.2", 1024 + i as u16, RST | ACK));
        }
        // The events come first, as in the pipeline: they say whom the packets hit.
        assert!(s.events_to(&mut d).is_empty());
        let a = s.poll(&mut d, 2 * S);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].verdict, a[0].host_role, a[0].detector), ("reflection", HostRole::Victim, "backscatter_rst"));
        assert_eq!(a[0].dest_ip, Some("10.0.0.2".parse().unwrap()));
        assert!(a[0].summary.starts_with("RST reflection flood at 10.0.0.2:") && !a[0].explanation.contains("SYN/ACK"), "{}", a[0].summary);
        // One per sender the table held: a few share a slot, as in the kernel's direct-mapped
        // table, and are judged by their events alone.
        let held = s.table.len() as u64;
        assert!(held > 950, "{held}");
        assert_eq!(a[0].evidence["per_sender_alerts_held_back"], held);
    }

    #[test]
    fn crafted_probes_with_rst_set_are_not_backscatter() {
        let mut s = Script::new();
        let mut d = BackscatterRst::new(Config::default());
        s.send(S, pkt("192.0.2.1", 1000, "10.0.0.2", 80, SYN | RST));
        s.send(S, pkt("192.0.2.1", 1001, "10.0.0.2", 80, 0xff));
        assert!(s.poll(&mut d, 2 * S).is_empty());
    }

    #[test]
    fn a_refused_connect_of_ours_is_not_backscatter() {
        let mut s = Script::new();
        let mut d = BackscatterRst::new(Config::default());
        s.send(S, pkt("10.0.0.2", 40000, "192.0.2.1", 81, SYN));
        s.send(S + 1, pkt("192.0.2.1", 81, "10.0.0.2", 40000, RST | ACK));
        assert!(s.poll(&mut d, 2 * S).is_empty());
        // Nor is a reset that ends an established connection of ours.
        s.send(3 * S, pkt("10.0.0.2", 40001, "192.0.2.1", 80, SYN));
        s.send(3 * S + 1, pkt("192.0.2.1", 80, "10.0.0.2", 40001, SYN | ACK));
        s.send(3 * S + 2, pkt("10.0.0.2", 40001, "192.0.2.1", 80, ACK));
        s.send(3 * S + 3, pkt("192.0.2.1", 80, "10.0.0.2", 40001, RST));
        assert!(s.poll(&mut d, 4 * S).is_empty());
    }
}
