//! Per-packet cost of flagprobe's XDP program inside the kernel, as a ratio to an empty XDP program
//! measured in the same run (BPF_PROG_TEST_RUN). Run through `cargo xtask bench`, which writes the
//! table to BENCHMARKS.md. Needs root.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use aya::programs::Xdp;
use probe::kernel::{LoadOptions, loader};
use probe_common::{
    flags::{ACK, PSH, RST, SYN},
    maps::{DEFAULT_EVENT_RATE, DEFAULT_FLOW_CAPACITY, PROG_XDP},
};
use tests::frames::{Encap, TcpFrame};

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `r0 = XDP_PASS; exit`: the baseline every number is compared with.
fn empty_xdp() -> OwnedFd {
    tests::bpf::xdp_returning(tests::bpf::XDP_PASS)
}

/// Mean ns per run over `repeat` runs of `frame` (the kernel's own clock, truncated to 1 ns).
fn test_run(fd: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> (u32, u32) {
    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    let mut a = TestRun {
        prog_fd: fd.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    tests::bpf::bpf(BPF_PROG_TEST_RUN, &mut a, "BPF_PROG_TEST_RUN");
    (a.retval, a.duration)
}

/// BPF instructions each of `frames` executes in turn in the loaded program `fd`, its state
/// carried from one to the next, from tests/scripts/bpf_insn_count.py (which interprets the
/// verified program; needs python3 and bpftool). `None` when the tools are missing.
fn insn_counts(fd: BorrowedFd<'_>, frames: &[&[u8]]) -> Option<Vec<u64>> {
    let script = tests::workspace_root().join("tests/scripts/bpf_insn_count.py");
    let hex = frames.iter().map(|f| f.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let out = std::process::Command::new("python3").arg(script).arg(tests::bpf::prog_info(fd).0.to_string()).args(hex).output().ok()?;
    if !out.status.success() {
        eprintln!("bpf_insn_count.py: {}", String::from_utf8_lossy(&out.stderr).trim());
        return None;
    }
    let counts: Vec<u64> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    (counts.len() == frames.len()).then_some(counts)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Row {
    frame: &'static str,
    prog: f64,
    empty: f64,
    diff: f64,
    /// The reference build's diff over empty in the same rounds, when one was given.
    reference: Option<f64>,
}

/// The client's ACK on an established flow: the server answered its SYN. The figure the issue's
/// target is about, and what xdp-cost's `ack-v4-established` measures past its first round.
const ESTABLISHED: &str = "ack-v4-established";
/// The same ACK before the server ever answered: a half-open flow still to prove itself, which
/// pays that test on every packet.
const NEVER_ANSWERED: &str = "ack-v4, server never answered";

/// Flow-table slots of the reference build: its default then, split per CPU by the same rule its
/// loader had and ours has ([`loader::FlowGeometry`]).
const REFERENCE_SLOTS: u32 = 262_144;

/// Load the reference build's XDP program (`--reference OBJ`): the object the flood issue measured,
/// rebuilt from git by `cargo xtask bench`, at its own default table size, logging off. Its
/// counters stay zero (no agent): an idle threshold of 0 lets a new flow take any held slot, as
/// under xdp-cost.
fn load_reference(path: &str) -> (aya::Ebpf, OwnedFd) {
    let cpus = aya::util::nr_cpus().expect("possible CPUs") as u32;
    let geometry = loader::FlowGeometry::for_capacity(REFERENCE_SLOTS, cpus);
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading the reference object {path}: {e}"));
    let mut ebpf = aya::EbpfLoader::new()
        .map_max_entries("FLOWS", geometry.slots())
        .override_global("FLOW_SLOT_MASK", &(geometry.slots_per_cpu - 1), true)
        .override_global(aya_log::LEVEL, &0u8, true)
        .load(&bytes)
        .expect("loading the reference object");
    let prog: &mut Xdp = ebpf.program_mut(PROG_XDP).expect("reference: XDP program").try_into().unwrap();
    prog.load().expect("reference: verifier");
    let fd = prog.fd().unwrap().as_fd().try_clone_to_owned().unwrap();
    (ebpf, fd)
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    kb / 1024.0
}

/// The flood soak: a max-rate spoofed SYN flood (hping3 --flood --rand-source -S) on a listening
/// port of a lab, `seconds` long, against the agent at its default settings. Reports what the
/// interface received next to what was counted, the agent's memory (idle and peak), the poll
/// duration's 99th percentile (from the agent's own histogram), /healthz every second, and how
/// long until the syn_flood alert, with how many lines it took.
fn flood_soak(seconds: u64) {
    use std::time::{Duration, Instant};
    use tests::{agent::Agent, lab::Lab, metrics_text};
    let lab = Lab::new();
    let listener = tests::lab::in_netns(&lab.home, || std::net::TcpListener::bind(("10.77.0.2", 8080)).unwrap());
    let agent = Agent::start(&lab, &["--alert-format", "off"]);
    agent.settle();
    let idle = rss_mib(agent.pid());
    let rx = || {
        let out = lab.exec(&lab.home, &format!("cat /sys/class/net/{}/statistics/rx_packets", tests::lab::HOME_IF));
        String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap()
    };
    let polls = |m: &str, le: &str| metrics_text::sum(m, "flagprobe_poll_duration_seconds_bucket", &[("le", le)]);
    let m0 = agent.metrics();
    let (rx0, counted0) = (rx(), metrics_text::sum(&m0, "flagprobe_packets_total", &[("hook", "ingress")]));
    let started = Instant::now();
    let mut flood = lab
        .command(&lab.peer, "timeout")
        .args([&seconds.to_string(), "hping3", "--flood", "-q", "-S", "--rand-source", "-p", "8080", "10.77.0.2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hping3");
    let (mut peak, mut checks, mut unhealthy, mut lag) = (idle, 0, 0, None::<f64>);
    let mut next_check = Instant::now();
    while flood.try_wait().ok().flatten().is_none() {
        peak = peak.max(rss_mib(agent.pid()));
        if lag.is_none() && agent.alerts().iter().any(|a| a["detector"] == "syn_flood") {
            lag = Some(started.elapsed().as_secs_f64());
        }
        if Instant::now() >= next_check {
            checks += 1;
            if agent.get("/healthz").map(|r| r.0) != Some(200) {
                unhealthy += 1;
            }
            next_check += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.settle();
    let m = agent.metrics();
    let received = rx() - rx0;
    let counted = metrics_text::sum(&m, "flagprobe_packets_total", &[("hook", "ingress")]) - counted0;
    let buckets = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.015", "0.02", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "+Inf"];
    let total = polls(&m, "+Inf") - polls(&m0, "+Inf");
    let p99 = buckets.iter().find(|le| polls(&m, le) - polls(&m0, le) >= 0.99 * total).copied().unwrap_or("+Inf");
    let lines = agent.alerts().iter().filter(|a| a["detector"] == "syn_flood").count();
    drop(listener);
    println!();
    println!("## Flood soak: {seconds} s of a spoofed SYN flood");
    println!();
    println!("`hping3 --flood --rand-source -S` on a listening port of a veth lab (driver-mode XDP), agent at its defaults.");
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| packets the interface received | {received} |");
    println!("| packets flagprobe counted (ingress) | {counted:.0} ({:.4} of received) |", counted / received.max(1) as f64);
    println!("| agent RSS idle / peak, MiB | {idle:.1} / {peak:.1} ({:.2}x) |", peak / idle);
    println!("| poll duration, 99th percentile (bucket bound), s | <= {p99} ({total:.0} polls) |");
    println!("| /healthz not 200 | {unhealthy} of {checks} checks, one a second |");
    println!("| first syn_flood alert after the flood started, s | {} |", lag.map_or("none".into(), |l| format!("{l:.1}")));
    println!("| syn_flood alert lines | {lines} |");
}

/// `flagprobe replay` on a large spoofed-flood capture: the real stopddos SYN flood, replayed
/// `copies` times as one stream.
fn replay_flood(copies: usize) {
    let file = tests::shared_dir().join("pcaps/external/stopddos/synflood-spoofed.pcap");
    let frames = 37_841 * copies as u64;
    let bin = tests::agent::binary();
    let t = std::time::Instant::now();
    let out = std::process::Command::new(&bin)
        .args(["replay", "--home-net", "10.10.10.10/32", "--alerts", "/dev/null", "--format", "json"])
        .args(std::iter::repeat_n(&file, copies))
        .output()
        .expect("flagprobe replay");
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!();
    println!(
        "Replay of a spoofed flood: stopddos/synflood-spoofed.pcap {copies} times as one stream ({frames} SYNs): {secs:.2} s, {:.0} packets/s.",
        frames as f64 / secs
    );
}

/// Mean cost of a new flow: 4096 SYNs a round, each from a new source (repeat 1 each, so both
/// sides include the test-run set-up; the difference is the program's own cost). `n` numbers the
/// sources across calls, so every call's flows are new.
fn new_flow_row(
    frame: &'static str,
    empty: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    reference: Option<BorrowedFd<'_>>,
    rounds: u32,
    n: &mut u32,
) -> Row {
    let (mut pr, mut er, mut dr, mut rr) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (mut tp, mut te, mut tr) = (0f64, 0f64, 0f64);
        for _ in 0..4096 {
            *n += 1;
            let src = [198, 18 + (*n >> 24) as u8 % 2, (*n >> 8) as u8, *n as u8];
            let f = TcpFrame::v4(src, 1024 + (*n % 50000) as u16, [10, 200, 0, 2], 80, SYN).build();
            let e = test_run(empty, &f, 1).1 as f64;
            te += e;
            tp += test_run(prog, &f, 1).1 as f64;
            if let Some(r) = reference {
                tr += test_run(r, &f, 1).1 as f64 - e;
            }
        }
        pr.push(tp / 4096.0);
        er.push(te / 4096.0);
        dr.push((tp - te) / 4096.0);
        rr.push(tr / 4096.0);
    }
    Row { frame, prog: median(&mut pr), empty: median(&mut er), diff: median(&mut dr), reference: reference.map(|_| median(&mut rr)) }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--flood") {
        let seconds = args.iter().position(|a| a == "--seconds").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(60);
        flood_soak(seconds);
        replay_flood(20);
        return;
    }
    let arg = |name: &str, default: u32| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let repeat = arg("--repeat", 1_000_000);
    let rounds = arg("--rounds", 15);
    // Pin to one CPU so the per-CPU partition and caches stay put.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
    let options = LoadOptions {
        flow_capacity: DEFAULT_FLOW_CAPACITY,
        flow_idle_ns: 120_000_000_000,
        event_rate: DEFAULT_EVENT_RATE,
        ebpf_log: false,
        ..LoadOptions::default()
    };
    let mut p = loader::load(&tests::ebpf_object(), options).expect("loading the program (root?)");
    let prog: &mut Xdp = p.ebpf.program_mut(PROG_XDP).unwrap().try_into().unwrap();
    let fd = prog.fd().unwrap().as_fd().try_clone_to_owned().unwrap();
    let empty = empty_xdp();
    let reference = args.iter().position(|a| a == "--reference").and_then(|i| args.get(i + 1)).map(|p| load_reference(p));
    let reference_fd = reference.as_ref().map(|(_, fd)| fd.as_fd());

    let (c, s) = ([10, 200, 0, 1], [10, 200, 0, 2]);
    let syn = TcpFrame::v4(c, 40000, s, 80, SYN).build();
    let ack = TcpFrame::v4(c, 40000, s, 80, ACK).build();
    let syn_ack = TcpFrame::v4(s, 80, c, 40000, SYN | ACK).build();
    let mut rst = TcpFrame::v4(s, 80, c, 40000, RST | ACK);
    rst.payload = b"Go away, we're not home".to_vec();
    let syn6 = TcpFrame::v6("fd00::1", 40000, "fd00::2", 80, SYN).build();
    let mut vlan = TcpFrame::v4(c, 40000, s, 80, PSH | ACK);
    vlan.vlans = vec![0x8100];
    let frames: Vec<(&'static str, Vec<u8>)> = vec![
        ("syn-v4 (one flow, repeated: past the SYN budget)", syn),
        // The client's ACK before the server ever answered: a half-open flow, not yet proven.
        (NEVER_ANSWERED, ack.clone()),
        // The same flow once the server has answered: established, as a real connection is (and
        // as xdp-cost's flow is from its second round on, after its server's RST).
        ("syn-ack-v4 (the server answers)", syn_ack),
        (ESTABLISHED, ack.clone()),
        // The same established flow's ACK through each way in that a tunnel adds: the parser's
        // extra layers (the reference build counts these as other protocols, not as TCP).
        ("established-ack-v4 in PPPoE", Encap::Pppoe.wrap(&ack)),
        ("established-ack-v4 in GRE (keyed)", Encap::Gre { key: true, seq: false }.wrap(&ack)),
        ("established-ack-v4 in VXLAN", Encap::Vxlan(4789).wrap(&ack)),
        ("rst-payload-v4 (rate-limited events)", rst.build()),
        ("syn-v6", syn6),
        ("data-v4-vlan", vlan.build()),
        ("garbage (20 B)", TcpFrame::v4(c, 1, s, 2, SYN).build()[..20].to_vec()),
    ];
    let mut rows = Vec::new();
    for (name, frame) in &frames {
        let (mut pr, mut er, mut dr, mut rr) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let (_, e) = test_run(empty.as_fd(), frame, repeat);
            let (ret, t) = test_run(fd.as_fd(), frame, repeat);
            assert_eq!(ret, 2, "{name}: verdict must be XDP_PASS");
            pr.push(t as f64);
            er.push(e as f64);
            dr.push(t as f64 - e as f64);
            if let Some(r) = reference_fd {
                rr.push(test_run(r, frame, repeat).1 as f64 - e as f64);
            }
        }
        let reference = (!rr.is_empty()).then(|| median(&mut rr));
        rows.push(Row { frame: name, prog: median(&mut pr), empty: median(&mut er), diff: median(&mut dr), reference });
    }
    // New flows: a spoofed flood, every packet a new 5-tuple; at the default SYN budget, and with
    // every SYN tracked, as a connection's first packet (or our answer to an untracked SYN) is.
    let mut n = 0u32;
    rows.push(new_flow_row("new-flow-v4 (spoofed flood, 4096/round)", empty.as_fd(), fd.as_fd(), reference_fd, rounds, &mut n));
    let mut all = loader::load(&tests::ebpf_object(), LoadOptions { syn_track_rate: 0, ..options }).expect("loading the program again");
    let prog_all: &mut Xdp = all.ebpf.program_mut(PROG_XDP).unwrap().try_into().unwrap();
    let fd_all = prog_all.fd().unwrap().as_fd().try_clone_to_owned().unwrap();
    rows.push(new_flow_row(
        "new-flow-v4, every SYN tracked (--syn-track-rate 0)",
        empty.as_fd(),
        fd_all.as_fd(),
        reference_fd,
        rounds,
        &mut n,
    ));

    if reference_fd.is_some() {
        println!("| frame | flagprobe ns | empty XDP ns | diff ns | ratio | reference build diff ns | diff / reference diff |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
    } else {
        println!("| frame | flagprobe ns | empty XDP ns | diff ns | ratio |");
        println!("|---|---:|---:|---:|---:|");
    }
    for r in &rows {
        print!("| {} | {:.1} | {:.1} | {:+.1} | {:.2} |", r.frame, r.prog, r.empty, r.diff, r.prog / r.empty.max(1.0));
        match r.reference {
            Some(d) => println!(" {d:+.1} | {:.2} |", r.diff / d.max(1.0)),
            None => println!(),
        }
    }
    let ack = rows.iter().find(|r| r.frame == ESTABLISHED).unwrap();
    let half_open = rows.iter().find(|r| r.frame == NEVER_ANSWERED).unwrap();
    let new_flow = rows.iter().find(|r| r.frame.starts_with("new-flow-v4 (")).unwrap();
    println!();
    println!(
        "summary: ack-v4-established {:+.1} ns over empty XDP (never answered {:+.1} ns); new flow {:+.1} ns; repeat {repeat}, {rounds} rounds, flow table {DEFAULT_FLOW_CAPACITY} slots",
        ack.diff, half_open.diff, new_flow.diff
    );
    if let (Some(a), Some(h), Some(n)) = (ack.reference, half_open.reference, new_flow.reference) {
        println!(
            "reference build in the same rounds: ack-v4-established {a:+.1} ns (never answered {h:+.1} ns), new flow {n:+.1} ns over empty XDP ({REFERENCE_SLOTS} slots)"
        );
    }
    // Instructions per packet: exact, where the nanoseconds above drift by several ns a run. The
    // same frames as above: the ACK after its flow's SYN, a new flow's SYN (within the budget),
    // and the ACK again once the server has answered.
    let new_syn = TcpFrame::v4([198, 18, 0, 1], 1024, s, 80, SYN).build();
    let sequence: [&[u8]; 7] = [&frames[0].1, &frames[1].1, &frames[1].1, &new_syn, &frames[2].1, &frames[3].1, &frames[3].1];
    let rows = [(NEVER_ANSWERED, 2), ("new flow, tracked (its SYN)", 3), (ESTABLISHED, 6)];
    if let Some(ours) = insn_counts(fd.as_fd(), &sequence) {
        let reference = reference_fd.and_then(|r| insn_counts(r, &sequence));
        println!();
        println!("| packet | flagprobe BPF instructions | reference build | ratio |");
        println!("|---|---:|---:|---:|");
        for (name, i) in rows {
            match &reference {
                Some(r) => println!("| {name} | {} | {} | {:.2} |", ours[i], r[i], ours[i] as f64 / r[i] as f64),
                None => println!("| {name} | {} | – | – |", ours[i]),
            }
        }
    }
    // How close the program is to the verifier's limit: a change that crosses it does not load.
    println!();
    print!("verifier: {} instructions walked to accept flagprobe_ingress (limit 1000000)", tests::bpf::prog_info(fd.as_fd()).1);
    match reference_fd {
        Some(r) => println!("; the reference build: {}", tests::bpf::prog_info(r).1),
        None => println!(),
    }
}
