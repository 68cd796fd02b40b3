//! Reading values out of the Prometheus text format.

/// Sum of every sample of `name` whose labels include all of `labels` (`key="value"` pairs).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels.iter().all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// `flagprobe_tcp_packets_total` for one hook and flags letters.
pub fn tcp(text: &str, hook: &str, flags: &str) -> u64 {
    sum(text, "flagprobe_tcp_packets_total", &[("hook", hook), ("flags", flags)]) as u64
}

/// Every (hook, flags byte) → count in `flagprobe_tcp_packets_total`.
pub fn tcp_by_hook(text: &str) -> std::collections::BTreeMap<(String, u8), u64> {
    tcp_by_label(text, "hook")
}

/// Every (direction `in`/`out`, flags byte) → count in `flagprobe_tcp_packets_total`.
pub fn tcp_by_direction(text: &str) -> std::collections::BTreeMap<(String, u8), u64> {
    tcp_by_label(text, "direction")
}

fn tcp_by_label(text: &str, key: &str) -> std::collections::BTreeMap<(String, u8), u64> {
    let mut out = std::collections::BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with("flagprobe_tcp_packets_total{")) {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let label = |k: &str| series.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).map(str::to_string);
        let (Some(hook), Some(flags)) = (label(key), label("flags")) else {
            continue;
        };
        let byte = probe_common::flags::parse_letters(&flags).expect("metric flags are valid letters");
        *out.entry((hook, byte)).or_insert(0) += value.parse::<f64>().unwrap_or(0.0) as u64;
    }
    out
}
