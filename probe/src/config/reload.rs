//! What a SIGHUP may change in place and what needs a restart. Both are worked out from the
//! effective [`Settings`] tables, key by key, so a setting cannot be silently dropped: a key that
//! differs is either in [`RELOADABLE`] (the engine applies it) or reported as needing a restart.

use super::Settings;

/// Keys (and whole sections) the running agent applies in place. Everything else is fixed at load
/// (interfaces, table sizes, the eBPF object and its frozen log level, the metrics socket).
pub const RELOADABLE: &[&str] = &["detectors", "alert-window", "alerts", "alert-format", "summary-interval", "syslog", "syslog-facility"];

/// Every key whose value differs, dotted (`detectors.scan.min-ports`, `poll-interval`).
pub fn changed(old: &Settings, new: &Settings) -> Vec<String> {
    let table = |s: &Settings| toml::Table::try_from(s).unwrap_or_default();
    let mut out = Vec::new();
    diff("", &toml::Value::Table(table(old)), &toml::Value::Table(table(new)), &mut out);
    out
}

fn diff(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(&join(k), p, q, out),
                    (p, q) if p != q => out.push(join(k)),
                    _ => {}
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// Whether a changed key takes effect without a restart.
pub fn reloadable(key: &str) -> bool {
    RELOADABLE.iter().any(|r| key == *r || key.strip_prefix(r).is_some_and(|rest| rest.starts_with('.')))
}

/// The top-level settings among `changed` that only a restart applies.
pub fn needs_restart(changed: &[String]) -> Vec<String> {
    let mut out: Vec<String> = changed.iter().filter(|k| !reloadable(k)).map(|k| k.split('.').next().unwrap_or(k).to_string()).collect();
    out.dedup();
    out
}

/// `new` with the restart-only keys kept as `running` has them: the settings actually in force
/// after a reload, so the next reload compares against reality.
pub fn in_force(running: &Settings, new: &Settings) -> Settings {
    let (Ok(old), Ok(mut merged)) = (toml::Table::try_from(running), toml::Table::try_from(new)) else { return running.clone() };
    for key in needs_restart(&changed(running, new)) {
        match old.get(&key) {
            Some(v) => merged.insert(key, v.clone()),
            None => merged.remove(&key),
        };
    }
    merged.try_into().unwrap_or_else(|_| running.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_text: &str) -> Settings {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn every_differing_key_is_named_and_sorted_into_reload_or_restart() {
        let a = settings("poll-interval = \"1s\"\nsummary-interval = \"5s\"\nebpf-log = false\n[detectors.scan]\nmin-ports = 15\n");
        let b = settings("poll-interval = \"2s\"\nsummary-interval = \"0s\"\nebpf-log = true\n[detectors.scan]\nmin-ports = 20\n");
        let c = changed(&a, &b);
        for key in ["poll-interval", "summary-interval", "ebpf-log", "detectors.scan.min-ports"] {
            assert!(c.contains(&key.to_string()), "{key} in {c:?}");
        }
        assert_eq!(needs_restart(&c), ["ebpf-log", "poll-interval"]);
        let kept = in_force(&a, &b);
        assert_eq!(kept.poll_interval.as_deref(), Some("1s"), "restart-only keys keep what runs");
        assert_eq!(kept.summary_interval.as_deref(), Some("0s"), "reloadable keys take the new value");
        assert_eq!(kept.detectors.unwrap().scan.min_ports, 20);
    }

    #[test]
    fn a_key_only_one_side_has_counts_as_changed() {
        let c = changed(&settings(""), &settings("alerts = \"/tmp/a.jsonl\"\n"));
        assert_eq!(c, ["alerts"]);
        assert!(needs_restart(&c).is_empty());
    }
}
