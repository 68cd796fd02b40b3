//! The deployment files under deploy/ are checked by the tools that will consume them: systemd's
//! verifier, promtool (syntax and the rules' own unit tests), and for the Grafana dashboard a JSON
//! parse plus the rule that every metric a panel or an alert queries is one the agent exports.

use std::{collections::BTreeSet, process::Command};

use probe::metrics::Metrics;
use probe_common::counters::HookCounters;
use tests::{privileged, tool, workspace_root};

fn deploy(path: &str) -> std::path::PathBuf {
    workspace_root().join("deploy").join(path)
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if !privileged("systemd_unit_passes_systemd_analyze_verify") || !tool("systemd-analyze", "systemd-analyze") {
        return;
    }
    let unit = deploy("systemd/flagprobe.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in the unit");
    }
    // The verifier wants ExecStart to exist: put the binary there in a private mount namespace
    // only, over a copy of /usr/sbin. The man page the unit names comes with the package (whose
    // test verifies the installed unit with it); from the source tree it is not installed yet.
    let script = format!(
        "d=$(mktemp -d) && cp -a /usr/sbin/. $d/ && mount --bind $d /usr/sbin && cp {} /usr/sbin/flagprobe && \
         systemd-analyze verify --man=no {}; rc=$?; umount /usr/sbin; rm -rf $d; exit $rc",
        tests::agent::binary().display(),
        unit.display()
    );
    let out = Command::new("unshare").args(["--mount", "sh", "-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_rules_check_and_pass_their_unit_tests() {
    if !tool("prometheus_rules", "promtool") {
        return;
    }
    for args in [vec!["check", "rules", "flagprobe-rules.yml"], vec!["test", "rules", "flagprobe-rules.test.yml"]] {
        let out = Command::new("promtool").args(&args).current_dir(deploy("prometheus")).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every metric family the agent exports (with one series each, so none is left out).
fn exported() -> BTreeSet<String> {
    let m = Metrics::new();
    m.init_iface("eth0", 1024, "driver");
    let mut c = HookCounters::default();
    c.flags[0x12] = 1;
    c.protocols[0] = 1;
    c.parse_errors[0] = 1;
    m.add_hook_counters("eth0", 0, false, &HookCounters::default(), &c);
    m.alerts.with_label_values(&["scan", "medium"]).inc();
    m.rst_payload_packets.with_label_values(&["storm-goaway"]).inc();
    m.poll_duration.observe(0.001);
    m.render().lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap().to_string()).collect()
}

/// `flagprobe_*` names in a query, histogram suffixes folded into their family.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("flagprobe_") {
        let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let family = ["_bucket", "_sum", "_count"].iter().fold(name.clone(), |n, s| n.strip_suffix(s).map(str::to_string).unwrap_or(n));
        out.insert(family);
    }
    out
}

#[test]
fn grafana_dashboard_is_importable_and_queries_real_metrics() {
    let text = std::fs::read_to_string(deploy("grafana/flagprobe-dashboard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 30, "schemaVersion set");
    assert!(d["uid"].is_string() && d["title"].is_string());
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["type"] == "datasource" && v["name"] == "datasource"), "datasource is a variable");
    let panels = d["panels"].as_array().unwrap();
    let mut queried = BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {} uses the datasource variable", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            queried.extend(referenced(t["expr"].as_str().unwrap()));
        }
    }
    let titles: String = panels.iter().map(|p| p["title"].as_str().unwrap_or("").to_lowercase()).collect::<Vec<_>>().join("|");
    for must in [
        "flags mix",
        "heatmap",
        "rst share",
        "backscatter",
        "alerts by detector",
        "flow table fill",
        "insert failures",
        "suppressed",
        "poll duration",
    ] {
        assert!(titles.contains(must), "a panel for {must}: {titles}");
    }
    let exported = exported();
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(missing.is_empty(), "dashboard queries metrics the agent does not export: {missing:?}");
    let rules = std::fs::read_to_string(deploy("prometheus/flagprobe-rules.yml")).unwrap();
    let missing: Vec<String> = referenced(&rules).difference(&exported).cloned().collect();
    assert!(missing.is_empty(), "alert rules query unknown metrics: {missing:?}");
}

/// Keys whose commented value in the shipped file is an example, not the default: the default is
/// the machine's (interfaces, addresses) or off.
const EXAMPLE_KEYS: [&str; 7] = ["iface", "home-net", "ebpf-object", "alerts", "syslog", "sessions", "ipfix"];

/// The shipped file with every `# key = value` and `# [table]` line uncommented but the example
/// keys' and the example signature's (which would add a signature).
fn uncommented(text: &str) -> String {
    let mut out = String::new();
    let mut in_example = false;
    for line in text.lines() {
        let body = line.strip_prefix("# ").unwrap_or("");
        in_example = (in_example && !line.is_empty()) || body.starts_with("[[");
        let key = body.split(" = ").next().unwrap_or("");
        let is_setting = (body.contains(" = ") && key.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            || (body.starts_with("[detectors.") && body.ends_with(']'));
        if is_setting && !in_example && !EXAMPLE_KEYS.contains(&key) {
            out.push_str(body);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn check_config(path: &std::path::Path) -> String {
    let out = Command::new(tests::agent::binary()).arg("check-config").arg(path).output().unwrap();
    assert!(out.status.success(), "check-config {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    // The first line names the file.
    String::from_utf8_lossy(&out.stdout).lines().skip(1).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_shipped_config_holds_every_key_commented_with_its_default() {
    let shipped = deploy("flagprobe.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    // Every setting of `run` (the flags are the keys) and every detector table is in the file.
    let run = <probe::config::RunArgs as clap::Args>::augment_args(clap::Command::new("run"));
    for arg in run.get_arguments().filter_map(|a| a.get_long()).filter(|l| !["config", "set"].contains(l)) {
        assert!(text.contains(&format!("\n# {arg} = ")), "{arg} is in the shipped file");
    }
    let dir = std::env::temp_dir().join(format!("fp-shipped-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let defaults = check_config(&empty);
    for line in defaults.lines().filter(|l| l.starts_with("[detectors.") || l.contains(" = ")) {
        let key = line.split(" = ").next().unwrap();
        assert!(text.contains(&format!("\n# {key}")) || line.starts_with(' ') || line.starts_with('"'), "{line} is in the shipped file");
    }
    // As shipped: valid, and all defaults. Uncommented: the same effective configuration.
    assert_eq!(check_config(&shipped), defaults);
    let edited = dir.join("uncommented.toml");
    std::fs::write(&edited, uncommented(&text)).unwrap();
    assert_eq!(check_config(&edited), defaults, "uncommented:\n{}", uncommented(&text));
    let _ = std::fs::remove_dir_all(&dir);
}
