//! Which capabilities the agent needs, proven: as an unprivileged user with CAP_BPF, CAP_PERFMON
//! and CAP_NET_ADMIN it attaches and counts; without any one of them it fails to start, with an
//! error saying what it could not do. deploy/systemd/flagprobe.service grants exactly these.

use std::process::Command;

use tests::{
    agent::{Agent, binary},
    lab::{HOME_IF, HOME_IP, Lab},
    metrics_text, privileged, tool,
};

fn setpriv(caps: &str) -> Vec<String> {
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        .into_iter()
        .map(String::from)
        .chain([format!("--inh-caps=-all,{caps}"), format!("--ambient-caps=-all,{caps}"), format!("--bounding-set=-all,{caps}")])
        .collect()
}

#[test]
fn exactly_bpf_perfmon_and_net_admin_are_needed() {
    if !privileged("exactly_bpf_perfmon_and_net_admin_are_needed") || !tool("capabilities", "setpriv") {
        return;
    }
    let lab = Lab::new();
    let all = setpriv("+bpf,+perfmon,+net_admin");
    let wrapper: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut agent = Agent::start_wrapped(&lab, &format!("{HOME_IP}/32"), &wrapper, &["--alert-format", "off"]);
    lab.exec(&lab.peer, "timeout 2 bash -c 'exec 3<>/dev/tcp/10.77.0.2/81' 2>/dev/null; true");
    agent.settle();
    assert_eq!(metrics_text::tcp(&agent.metrics(), "ingress", "S"), 1, "counts as an unprivileged user");
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");

    for (without, caps, says) in [
        ("CAP_BPF", "+perfmon,+net_admin", "map"),
        ("CAP_PERFMON", "+bpf,+net_admin", "BPF_PROG_LOAD"),
        // The sensor's AF_XDP socket map is the first object that needs it.
        ("CAP_NET_ADMIN", "+bpf,+perfmon", "XSKS"),
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.home])
            .args(setpriv(caps))
            .arg(binary())
            .args(["run", "--iface", HOME_IF, "--home-net", HOME_IP, "--metrics-addr", "127.0.0.1:9751", "--summary-interval", "0s"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "without {without} the agent must not start");
        assert!(stderr.contains(says), "without {without}: {stderr}");
    }
}
