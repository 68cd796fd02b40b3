//! A two-namespace lab: `home` (the monitored host, 10.77.0.2) and `peer` (10.77.0.1, also owning
//! 198.51.100.0/24 and 203.0.113.0/24), joined by a veth pair — or, in [`Lab::new_hub`], by a hub
//! whose mirror port leads to a `sensor` namespace. Everything is removed on drop.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::{
        RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicU32, Ordering},
    },
};

pub const HOME_IP: &str = "10.77.0.2";
pub const PEER_IP: &str = "10.77.0.1";
/// Inside the home namespace.
pub const HOME_IF: &str = "fp-home";
pub const PEER_IF: &str = "fp-peer";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Labs share the machine's two cores: every lab holds this shared, and a test whose traffic would
/// disturb the others' timing (a max-rate flood, the demo's own labs) holds it exclusively, so it
/// runs alone in the one test binary.
static LABS: RwLock<()> = RwLock::new(());

/// Hold while a machine-wide disturbance runs; no lab exists meanwhile.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    LABS.write().unwrap_or_else(|e| e.into_inner())
}

fn shared() -> RwLockReadGuard<'static, ()> {
    LABS.read().unwrap_or_else(|e| e.into_inner())
}

/// Run a command; panic with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn sh(script: &str) -> Output {
    run(Command::new("sh").args(["-c", script]))
}

pub struct Lab {
    pub home: String,
    pub peer: String,
    /// A third party behind the peer (see [`Lab::add_third_party`]).
    pub third: Option<String>,
    /// [`Lab::new_hub`]: the namespace holding the hub (a bridge), and the sensor's namespace.
    pub hub: Option<String>,
    pub sensor: Option<String>,
    /// Shared hold on the labs (`None` inside an [`exclusive`] hold, which the test keeps).
    _share: Option<RwLockReadGuard<'static, ()>>,
}

/// The third party's own address; it forges others'.
pub const THIRD_IP: &str = "10.78.0.2";

/// [`Lab::new_hub`]: the sensor's interface, in the sensor namespace, and its hub port.
pub const MIRROR_IF: &str = "fp-mirror";
pub const MIRROR_PORT: &str = "hb-mon";

impl Lab {
    /// A fresh lab with unique namespace names; offloads off so every packet is one wire segment.
    pub fn new() -> Lab {
        Self::build(Some(shared()))
    }

    /// A lab for a test that already holds [`exclusive`].
    pub fn new_alone(_held: &RwLockWriteGuard<'static, ()>) -> Lab {
        Self::build(None)
    }

    fn build(share: Option<RwLockReadGuard<'static, ()>>) -> Lab {
        let id = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let lab = Lab { home: format!("fph-{id}"), peer: format!("fpp-{id}"), third: None, hub: None, sensor: None, _share: share };
        let (h, p) = (&lab.home, &lab.peer);
        sh(&format!(
            "set -e
            ip netns add {h}; ip netns add {p}
            ip link add {HOME_IF} netns {h} type veth peer name {PEER_IF} netns {p}
            for ns in {h} {p}; do
              ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
              ip -n $ns link set lo up
            done
            ip -n {h} addr add {HOME_IP}/24 dev {HOME_IF}
            ip -n {p} addr add {PEER_IP}/24 dev {PEER_IF}
            ip -n {p} addr add 198.51.100.1/24 dev {PEER_IF}
            ip -n {p} addr add 203.0.113.1/24 dev {PEER_IF}
            ip -n {h} link set {HOME_IF} up; ip -n {p} link set {PEER_IF} up
            ip -n {h} route add default via {PEER_IP}
            ip netns exec {h} ethtool -K {HOME_IF} tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
            ip netns exec {p} ethtool -K {PEER_IF} tso off gso off gro off tx off rx off >/dev/null 2>&1 || true"
        ));
        lab
    }

    /// The same two hosts with a hub between them instead of a cable: a bridge that forgets every
    /// address at once (ageing 0), so it floods each frame to all its ports, one of which leads
    /// to the `sensor` namespace's [`MIRROR_IF`] — a mirror port that sees both directions.
    pub fn new_hub() -> Lab {
        let id = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let (h, p, x, s) = (format!("fph-{id}"), format!("fpp-{id}"), format!("fpx-{id}"), format!("fps-{id}"));
        let lab =
            Lab { home: h.clone(), peer: p.clone(), third: None, hub: Some(x.clone()), sensor: Some(s.clone()), _share: Some(shared()) };
        sh(&format!(
            "set -e
            for ns in {h} {p} {x} {s}; do ip netns add $ns; ip -n $ns link set lo up; done
            ip -n {x} link add br0 type bridge ageing_time 0 stp_state 0
            ip link add {HOME_IF} netns {h} type veth peer name hb-home netns {x}
            ip link add {PEER_IF} netns {p} type veth peer name hb-peer netns {x}
            ip link add {MIRROR_IF} netns {s} type veth peer name {MIRROR_PORT} netns {x}
            for port in hb-home hb-peer {MIRROR_PORT}; do ip -n {x} link set $port master br0; ip -n {x} link set $port up; done
            ip -n {x} link set br0 up
            for ns in {h} {p} {s}; do
              ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
            done
            ip -n {h} addr add {HOME_IP}/24 dev {HOME_IF}
            ip -n {p} addr add {PEER_IP}/24 dev {PEER_IF}
            ip -n {p} addr add 198.51.100.1/24 dev {PEER_IF}
            ip -n {p} addr add 203.0.113.1/24 dev {PEER_IF}
            ip -n {h} link set {HOME_IF} up; ip -n {p} link set {PEER_IF} up; ip -n {s} link set {MIRROR_IF} up
            ip -n {h} route add default via {PEER_IP}
            for pair in {h}:{HOME_IF} {p}:{PEER_IF} {s}:{MIRROR_IF} {x}:hb-home {x}:hb-peer {x}:{MIRROR_PORT}; do
              ip netns exec ${{pair%%:*}} ethtool -K ${{pair#*:}} tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
            done"
        ));
        lab
    }

    /// A third namespace behind the peer, which routes for it and lets it forge the peer's own
    /// address (accept_local, no reverse-path filter): an on-path injector's view of the home host.
    pub fn add_third_party(&mut self) -> String {
        let t = self.home.replacen("fph-", "fpt-", 1);
        let p = &self.peer;
        sh(&format!(
            "set -e
            ip netns add {t}
            ip link add fp-third netns {t} type veth peer name fp-tp netns {p}
            ip -n {t} link set lo up; ip -n {t} link set fp-third up; ip -n {p} link set fp-tp up
            ip -n {t} addr add {THIRD_IP}/24 dev fp-third; ip -n {p} addr add 10.78.0.1/24 dev fp-tp
            ip -n {t} route add default via 10.78.0.1
            ip netns exec {p} sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
              net.ipv4.conf.all.accept_local=1 net.ipv4.conf.fp-tp.accept_local=1 net.ipv4.conf.fp-tp.rp_filter=0"
        ));
        self.third = Some(t.clone());
        t
    }

    /// Run `script` with `sh -c` inside namespace `ns`.
    pub fn exec(&self, ns: &str, script: &str) -> Output {
        run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]))
    }

    /// A `Command` that runs inside namespace `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.third, &self.hub, &self.sensor].into_iter().flatten() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.home]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.peer]).status();
    }
}

/// Run `f` on a thread that has joined network namespace `ns`; sockets it opens live there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(ns, f).join().expect("netns thread panicked")
}

/// Like [`in_netns`], without waiting.
pub fn spawn_in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: a valid namespace fd; only this thread changes namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}
