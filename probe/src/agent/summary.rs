//! The live terminal summary: one line per interface, totals since start, the busiest flags
//! combinations first. Written to stderr so stdout stays clean for machine-readable output.

use probe_common::{
    counters::{HOOK_EGRESS, HOOK_INGRESS, HookCounters, PROTO_TCP},
    flags,
};

/// `S 12, SA 3, A 1.2k` — the `top` most frequent combinations.
pub fn top_flags(c: &HookCounters, top: usize) -> String {
    let mut v: Vec<(u64, u8)> = c.flags.iter().enumerate().filter(|(_, n)| **n > 0).map(|(f, n)| (*n, f as u8)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let parts: Vec<String> = v.iter().take(top).map(|(n, f)| format!("{} {}", flags::letters(*f), human(*n))).collect();
    if parts.is_empty() { "-".to_string() } else { parts.join(", ") }
}

fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// Share of TCP packets with RST set, in percent.
fn rst_share(c: &HookCounters) -> f64 {
    let tcp = c.protocols[PROTO_TCP];
    let rst: u64 = c.flags.iter().enumerate().filter(|(f, _)| *f as u8 & flags::RST != 0).map(|(_, n)| n).sum();
    if tcp == 0 { 0.0 } else { 100.0 * rst as f64 / tcp as f64 }
}

pub fn line(iface: &str, mode: &str, c: &[HookCounters; 2], live_flows: u64, capacity: u32) -> String {
    let (i, e) = (&c[HOOK_INGRESS as usize], &c[HOOK_EGRESS as usize]);
    format!(
        "{iface} [{mode}] in: {} tcp ({}; RST {:.1}%) | out: {} tcp ({}; RST {:.1}%) | flows {live_flows}/{capacity}, insert failures {}, SYNs untracked {} | events {} (suppressed {}, ring full {})",
        human(i.protocols[PROTO_TCP]),
        top_flags(i, 5),
        rst_share(i),
        human(e.protocols[PROTO_TCP]),
        top_flags(e, 5),
        rst_share(e),
        i.flow_insert_failures + e.flow_insert_failures,
        human(i.syns_untracked),
        i.events + e.events,
        i.events_suppressed + e.events_suppressed,
        i.events_ringbuf_full + e.events_ringbuf_full,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_flags_orders_by_count() {
        let mut c = HookCounters::default();
        c.flags[0x10] = 1500;
        c.flags[0x02] = 3;
        c.flags[0x12] = 3;
        assert_eq!(top_flags(&c, 2), "A 1.5k, S 3");
        assert_eq!(top_flags(&HookCounters::default(), 2), "-");
    }
}
