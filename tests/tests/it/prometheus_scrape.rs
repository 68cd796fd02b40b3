//! A real Prometheus server (Debian's package) scrapes the agent inside the lab, and a PromQL query
//! returns the expected series; `promtool check metrics` accepts the exposition.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tests::{
    agent::{Agent, METRICS_ADDR, http_get},
    lab::{Lab, in_netns},
    privileged, tool,
};

const PROM_ADDR: &str = "127.0.0.1:9090";

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"_-.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[test]
fn prometheus_scrapes_the_agent_and_promtool_accepts_the_metrics() {
    let test = "prometheus_scrapes_the_agent_and_promtool_accepts_the_metrics";
    if !privileged(test) || !tool(test, "prometheus") || !tool(test, "promtool") {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    // Three refused connects: three SYNs in, three RST/ACKs out.
    lab.exec(&lab.peer, "for p in 81 82 83; do timeout 2 bash -c \"exec 3<>/dev/tcp/10.77.0.2/$p\" 2>/dev/null; done; true");
    agent.settle();

    let metrics = agent.metrics();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = std::env::temp_dir().join(format!("{}-prom", lab.home));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: flagprobe\n    static_configs:\n      - targets: ['{METRICS_ADDR}']\n")).unwrap();
    let mut prom = lab
        .command(&lab.home, "prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={PROM_ADDR}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let query = url_encode(r#"sum(flagprobe_tcp_packets_total{hook="ingress",flags="S"})"#);
    let up = url_encode(r#"up{job="flagprobe"}"#);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let result = loop {
        let path = format!("/api/v1/query?query={query}");
        let answer = in_netns(&lab.home, move || http_get(PROM_ADDR, &path));
        if let Some((200, body)) = answer {
            if body.contains(r#""value":["#) {
                break body;
            }
            last = body;
        }
        if Instant::now() > deadline {
            let _ = prom.kill();
            panic!("Prometheus never returned the series; last answer: {last}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let up_answer = in_netns(&lab.home, move || http_get(PROM_ADDR, &format!("/api/v1/query?query={up}")));
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(result.contains(r#""3"]"#), "three SYNs in, as Prometheus saw them: {result}");
    assert!(up_answer.is_some_and(|(_, b)| b.contains(r#""1"]"#)), "the scrape target is up");
}
