//! The agent as a real process inside the lab's home namespace, started the way an operator would
//! (`flagprobe run ...`), stopped with SIGTERM, and scraped over HTTP.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::lab::{HOME_IF, HOME_IP, Lab, in_netns};

pub const METRICS_ADDR: &str = "127.0.0.1:9750";

pub fn binary() -> PathBuf {
    std::env::var_os("FLAGPROBE_BIN").map(PathBuf::from).unwrap_or_else(|| crate::workspace_root().join("target/debug/flagprobe"))
}

pub struct Agent {
    pub ns: String,
    child: Option<Child>,
    pub stderr_path: PathBuf,
    pub stdout_path: PathBuf,
    /// The `--alerts` JSON-lines file.
    pub alerts_path: PathBuf,
    /// The `--evidence` directory (emptied at start).
    pub evidence_dir: PathBuf,
}

impl Agent {
    /// Start `flagprobe run` in the lab's home namespace on its veth, home net = 10.77.0.2, with
    /// `extra` arguments; wait until /healthz answers.
    pub fn start(lab: &Lab, extra: &[&str]) -> Agent {
        Self::start_with_home(lab, &format!("{HOME_IP}/32"), extra)
    }

    /// Like [`Agent::start`] with another home network (for captures of other hosts).
    pub fn start_with_home(lab: &Lab, home_net: &str, extra: &[&str]) -> Agent {
        Self::start_wrapped(lab, home_net, &[], extra)
    }

    /// Like [`Agent::start_with_home`], run through `wrapper` (e.g. setpriv dropping privileges).
    pub fn start_wrapped(lab: &Lab, home_net: &str, wrapper: &[&str], extra: &[&str]) -> Agent {
        Self::start_in(&lab.home, HOME_IF, home_net, wrapper, extra)
    }

    /// A sensor in a hub lab's sensor namespace on its mirror port (`--mode sensor`), home net
    /// 10.77.0.2.
    pub fn start_sensor(lab: &Lab, extra: &[&str]) -> Agent {
        let ns = lab.sensor.as_deref().expect("a hub lab (Lab::new_hub)");
        let mut args = vec!["--mode", "sensor"];
        args.extend_from_slice(extra);
        Self::start_in(ns, crate::lab::MIRROR_IF, &format!("{HOME_IP}/32"), &[], &args)
    }

    /// `flagprobe run` in namespace `ns` on `iface`; files are named after the namespace.
    pub fn start_in(ns: &str, iface: &str, home_net: &str, wrapper: &[&str], extra: &[&str]) -> Agent {
        let dir = std::env::temp_dir();
        let stderr_path = dir.join(format!("{ns}-agent.err"));
        let stdout_path = dir.join(format!("{ns}-agent.out"));
        let alerts_path = dir.join(format!("{ns}-alerts.jsonl"));
        let _ = std::fs::remove_file(&alerts_path);
        let evidence_dir = dir.join(format!("{ns}-evidence"));
        let _ = std::fs::remove_dir_all(&evidence_dir);
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(wrapper)
            .arg(binary())
            .args(["run", "--iface", iface, "--metrics-addr", METRICS_ADDR, "--poll-interval", "200ms"])
            .args(if extra.contains(&"--alert-format") { &[][..] } else { &["--alert-format", "json"][..] })
            .args(["--alerts", &alerts_path.display().to_string(), "--home-net", home_net])
            .args(if extra.contains(&"--evidence") { vec![] } else { vec!["--evidence".to_string(), evidence_dir.display().to_string()] })
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary().display()));
        let mut agent = Agent { ns: ns.to_string(), child: Some(child), stderr_path, stdout_path, alerts_path, evidence_dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited with {status} before serving:\n{}", agent.stderr());
            }
            if agent.get("/healthz").is_some_and(|(code, _)| code == 200) {
                return agent;
            }
            assert!(Instant::now() < deadline, "agent never became healthy:\n{}", agent.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The agent's pid (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Every alert line written so far (stop the agent first to include the final updates).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.alerts_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alert line is JSON ({e}): {l}")))
            .collect()
    }

    /// Wait (up to 30 s) until an alert of `detector` has been written: a verdict that waits for
    /// our host's reaction comes after its grace period.
    pub fn wait_for_alert(&self, detector: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.alerts().iter().any(|a| a["detector"] == detector) {
            assert!(Instant::now() < deadline, "no {detector} alert within 30 s:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// GET `path` from the agent inside its namespace: (status code, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let path = path.to_string();
        in_netns(&self.ns, move || http_get(METRICS_ADDR, &path))
    }

    pub fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics").expect("/metrics answers");
        assert_eq!(code, 200);
        body
    }

    /// Wait until the agent has caught up: every event the kernel sent has been read, and two
    /// scrapes a poll apart agree on every packet, flow and event count. Then every packet already
    /// on the wire is in the metrics and has been judged (stop the agent for the last updates).
    pub fn settle(&self) {
        self.settle_after(0, 0);
    }

    /// Like [`Agent::settle`], first waiting for at least `ingress` and `egress` packets.
    pub fn settle_after(&self, ingress: u64, egress: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut previous: Option<Vec<u64>> = None;
        loop {
            let m = self.metrics();
            let sum = |name: &str, labels: &[(&str, &str)]| crate::metrics_text::sum(&m, name, labels) as u64;
            // The reader counts an event as received before it queues it (a full queue then
            // counts a drop), so received reaching sent means the ring is read to the end.
            let (sent, read) = (sum("flagprobe_events_total", &[]), sum("flagprobe_events_received_total", &[]));
            let (inn, out) =
                (sum("flagprobe_packets_total", &[("direction", "in")]), sum("flagprobe_packets_total", &[("direction", "out")]));
            let now = vec![inn, out, sent, read, sum("flagprobe_flow_inserts_total", &[])];
            let caught_up = inn >= ingress && out >= egress && read >= sent;
            if caught_up && previous.as_ref() == Some(&now) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not settle: in {inn}/{ingress}, out {out}/{egress}, events read {read} of {sent}\n{}",
                self.stderr()
            );
            previous = caught_up.then_some(now);
            // One poll interval (the tests run the agent with 200 ms).
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGTERM and wait; returns the exit status and stderr.
    pub fn stop(&mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        // `ip netns exec` execs the agent, so the child pid is the agent's.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, self.stderr());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent did not stop within 10 s of SIGTERM:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(300));
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal HTTP/1.0 GET: (status code, body), or None when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}
