//! What a replay found, beyond the alerts: the flags histogram by direction, flows by outcome, the
//! verdicts, the busiest remotes, throughput — as text or one JSON object — plus the per-flow lines
//! of `--flows-out`.

use std::{collections::HashMap, io::Write, net::IpAddr};

use probe_common::{
    counters::{HOOK_EGRESS, HOOK_INGRESS, HookCounters, PARSE_ERROR_NAMES, PROTO_NAMES},
    flags,
    flow::{FlowEntry, Side, SideStats},
};
use serde_json::{Value, json};

use crate::{
    alert::{Alert, rfc3339},
    detect::{HomeNets, addr},
};

/// Alerts per (detector, verdict), counting a key's updates once.
fn distinct_alerts(alerts: &[Alert]) -> HashMap<(&'static str, &'static str), u64> {
    let keys: std::collections::HashSet<(&str, &str, &str)> = alerts.iter().map(|a| (a.detector, a.verdict, a.key.as_str())).collect();
    let mut out = HashMap::new();
    for (d, v, _) in keys {
        *out.entry((d, v)).or_default() += 1;
    }
    out
}

/// This process's peak resident memory so far (`VmHWM`), as the kernel counts it; 0 if unknown.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

/// Packets the flow table had no slot for, over both hooks.
fn untracked(counters: &[HookCounters; 2]) -> u64 {
    counters.iter().map(|c| c.flow_insert_failures + c.syns_untracked).sum()
}

/// How a flow ended up, in a word.
pub fn outcome(e: &FlowEntry) -> &'static str {
    let init = Side::from_index(e.initiator);
    let (a, b) = (&e.sides[init.index()], &e.sides[init.other().index()]);
    let handshake = a.syn > 0 && b.syn_ack > 0;
    if a.syn == 0 && (a.syn_ack > 0 || a.packets == a.rst) {
        "unsolicited"
    } else if a.syn > 0 && b.packets == 0 {
        "unanswered"
    } else if a.syn > 0 && b.syn_ack == 0 && b.rst > 0 {
        "refused"
    } else if handshake && a.pure_ack + a.data == 0 && a.rst == 0 {
        "half-open"
    } else if handshake && (a.rst > 0 || b.rst > 0) {
        "reset"
    } else if handshake && a.fin > 0 && b.fin > 0 {
        "closed"
    } else if handshake {
        "established"
    } else if a.invalid + b.invalid > 0 {
        "invalid"
    } else {
        "other"
    }
}

fn side_json(e: &FlowEntry, side: Side, s: &SideStats) -> Value {
    let (a, port) = e.key.endpoint(side);
    let combos: Vec<String> = (0..=255u8).filter(|f| e.saw_combo(side, *f)).map(|f| flags::letters(f).to_string()).collect();
    json!({
        "addr": addr(a, e.key.family), "port": port, "packets": s.packets, "bytes": s.bytes,
        "syn": s.syn, "syn_ack": s.syn_ack, "pure_ack": s.pure_ack, "data": s.data, "fin": s.fin,
        "rst": s.rst, "rst_ack": s.rst_ack, "rst_payload": s.rst_payload, "invalid": s.invalid,
        "data_after_rst": s.data_after_rst, "first_ttl": s.first_ttl, "flags_seen": combos,
    })
}

/// One `--flows-out` line.
pub fn flow_json(e: &FlowEntry) -> Value {
    json!({
        "first_seen": rfc3339(e.first_seen), "last_seen": rfc3339(e.last_seen), "outcome": outcome(e),
        "initiator": if e.initiator == 0 { "a" } else { "b" },
        "a": side_json(e, Side::Lo, &e.sides[0]), "b": side_json(e, Side::Hi, &e.sides[1]),
    })
}

/// Running totals over every flow that leaves the table.
#[derive(Default)]
pub struct Report {
    pub outcomes: HashMap<&'static str, u64>,
    remotes: HashMap<IpAddr, u64>,
    remotes_dropped: u64,
    pub frames: u64,
    pub files: Vec<(String, Option<String>)>,
}

const MAX_REMOTES: usize = 100_000;

impl Report {
    pub fn absorb(&mut self, e: &FlowEntry, home: &HomeNets, mut flows_out: Option<&mut dyn Write>) {
        *self.outcomes.entry(outcome(e)).or_default() += 1;
        for side in [Side::Lo, Side::Hi] {
            let ip = addr(e.key.endpoint(side).0, e.key.family);
            if home.contains(ip) {
                continue;
            }
            let n = (e.sides[0].packets + e.sides[1].packets) as u64;
            if self.remotes.len() < MAX_REMOTES || self.remotes.contains_key(&ip) {
                *self.remotes.entry(ip).or_default() += n;
            } else {
                self.remotes_dropped += n;
            }
        }
        if let Some(w) = flows_out.as_mut() {
            let _ = writeln!(w, "{}", flow_json(e));
        }
    }

    fn top_remotes(&self, n: usize) -> Vec<(IpAddr, u64)> {
        let mut v: Vec<(IpAddr, u64)> = self.remotes.iter().map(|(a, c)| (*a, *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    pub fn to_json(&self, counters: &[HookCounters; 2], alerts: &[Alert], home: &str, seconds: f64) -> Value {
        let hist = |c: &HookCounters| -> Value {
            let m: serde_json::Map<String, Value> = c
                .flags
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(f, n)| (format!("0x{f:02x} {}", flags::letters(f as u8)), json!(n)))
                .collect();
            Value::Object(m)
        };
        let named = |names: &[&str], values: &[u64]| -> Value {
            Value::Object(names.iter().zip(values).filter(|(_, n)| **n > 0).map(|(k, n)| (k.to_string(), json!(n))).collect())
        };
        let mut verdicts: HashMap<String, u64> = HashMap::new();
        for ((d, v), n) in distinct_alerts(alerts) {
            verdicts.insert(format!("{d}/{v}"), n);
        }
        let (i, o) = (&counters[HOOK_INGRESS as usize], &counters[HOOK_EGRESS as usize]);
        json!({
            "summary": "replay",
            "home": home,
            "files": self.files.iter().map(|(f, e)| json!({"file": f, "error": e})).collect::<Vec<_>>(),
            "frames": self.frames,
            "seconds": seconds,
            "packets_per_second": if seconds > 0.0 { self.frames as f64 / seconds } else { 0.0 },
            "flags_in": hist(i), "flags_out": hist(o),
            "protocols_in": named(&PROTO_NAMES, &i.protocols), "protocols_out": named(&PROTO_NAMES, &o.protocols),
            "parse_errors": named(&PARSE_ERROR_NAMES, &i.parse_errors.iter().zip(o.parse_errors.iter()).map(|(a, b)| a + b).collect::<Vec<_>>()),
            "flows_by_outcome": self.outcomes,
            "untracked_packets": untracked(counters),
            "peak_rss_bytes": peak_rss_bytes(),
            "verdicts": verdicts,
            "top_remotes": self.top_remotes(10).into_iter().map(|(a, n)| json!({"addr": a, "packets": n})).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self, counters: &[HookCounters; 2], alerts: &[Alert], home: &str, seconds: f64) -> String {
        let mut t = String::new();
        t.push_str(&format!("\n== replay summary (ours: {home})\n"));
        for (f, e) in &self.files {
            t.push_str(&format!("file {f}: {}\n", e.as_deref().unwrap_or("read completely")));
        }
        for (name, c) in [("in (towards us)", &counters[0]), ("out (from us)", &counters[1])] {
            let mut v: Vec<(u8, u64)> = c.flags.iter().enumerate().filter(|(_, n)| **n > 0).map(|(f, n)| (f as u8, *n)).collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let parts: Vec<String> = v.iter().map(|(f, n)| format!("{} {n}", flags::letters(*f))).collect();
            t.push_str(&format!("TCP flags {name}: {}\n", if parts.is_empty() { "-".into() } else { parts.join(", ") }));
        }
        let mut outcomes: Vec<_> = self.outcomes.iter().collect();
        outcomes.sort();
        t.push_str(&format!("flows by outcome: {}\n", outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")));
        let n = untracked(counters);
        if n > 0 {
            t.push_str(&format!(
                "not in the flow table: {n} packets (the table was full or the second's SYN budget spent, as on the agent; \
                 counted above and in the flood aggregates: --flow-capacity, --syn-track-rate)\n"
            ));
        }
        let mut vs: Vec<_> = distinct_alerts(alerts).into_iter().collect();
        vs.sort();
        t.push_str(&format!(
            "verdicts: {}\n",
            if vs.is_empty() {
                "none".into()
            } else {
                vs.iter().map(|((d, v), n)| format!("{v} ({d}) x{n}")).collect::<Vec<_>>().join(", ")
            }
        ));
        let top = self.top_remotes(5);
        t.push_str(&format!("top remotes: {}\n", top.iter().map(|(a, n)| format!("{a} ({n} packets)")).collect::<Vec<_>>().join(", ")));
        let pps = if seconds > 0.0 { self.frames as f64 / seconds } else { 0.0 };
        t.push_str(&format!("{} frames in {seconds:.2} s: {pps:.0} packets/s, {} MiB at most\n", self.frames, peak_rss_bytes() >> 20));
        t
    }
}
