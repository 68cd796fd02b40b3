//! The real programs in the real kernel, fed crafted frames with BPF_PROG_TEST_RUN: the histogram,
//! protocol and parse-error counters and the flow table must come out exactly as expected, and no
//! frame may ever get XDP_ABORTED (or anything but PASS).

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use probe::{
    flows::FlowTracker,
    kernel::{LoadOptions, Probe, flowtable::FlowTable, loader},
};
use probe_common::{
    counters::{HOOK_EGRESS, HOOK_INGRESS, PARSE_ERROR_NAMES, PROTO_NAMES, ParseError},
    event::PacketEvent,
    flags::{ACK, FIN, PSH, RST, SYN},
    flow::{NOTABLE_RST, NOTABLE_RST_PAYLOAD, Side},
    maps::{EVENTS, PROG_TC, PROG_XDP},
};
use tests::{
    frames::{Encap, TcpFrame},
    privileged,
};

const XDP_PASS: u32 = 2;
const TC_ACT_UNSPEC: u32 = u32::MAX;

fn probe() -> Probe {
    let opts =
        LoadOptions { flow_capacity: 4096, flow_idle_ns: 120_000_000_000, event_rate: 1000, ebpf_log: false, ..LoadOptions::default() };
    loader::load(&tests::ebpf_object(), opts).expect("the object loads and verifies")
}

fn xdp(p: &mut Probe, frame: &[u8]) -> u32 {
    let prog: &mut Xdp = p.ebpf.program_mut(PROG_XDP).unwrap().try_into().unwrap();
    prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() }).expect("test run").return_value
}

fn tc(p: &mut Probe, frame: &[u8]) -> u32 {
    let prog: &mut SchedClassifier = p.ebpf.program_mut(PROG_TC).unwrap().try_into().unwrap();
    prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() }).expect("test run").return_value
}

fn proto(name: &str) -> usize {
    PROTO_NAMES.iter().position(|n| *n == name).unwrap()
}

#[test]
fn every_header_shape_is_counted_exactly() {
    if !privileged("every_header_shape_is_counted_exactly") {
        return;
    }
    let mut p = probe();
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let mut with_opts = TcpFrame::v4(b, 80, a, 40000, SYN | ACK);
    with_opts.ipv4_options = vec![0x94, 0x04, 0, 0, 1, 1, 1, 0]; // router alert + NOPs + EOL
    let mut v6_ext = TcpFrame::v6("fd00::1", 40001, "fd00::2", 443, ACK);
    v6_ext.ipv6_ext = vec![0, 43, 60];
    let mut v6_first_frag = TcpFrame::v6("fd00::1", 40002, "fd00::2", 443, SYN);
    v6_first_frag.ipv6_ext = vec![44];
    let mut vlan = TcpFrame::v4(a, 40000, b, 80, FIN | ACK);
    vlan.vlans = vec![0x8100];
    let mut qinq = TcpFrame::v4(b, 80, a, 40000, RST | ACK);
    qinq.vlans = vec![0x88a8, 0x8100];
    let frames = [TcpFrame::v4(a, 40000, b, 80, SYN), with_opts, v6_ext, v6_first_frag, vlan, qinq];
    for f in &frames {
        assert_eq!(xdp(&mut p, &f.build()), XDP_PASS, "{f:?}");
    }
    let c = p.counters().unwrap()[HOOK_INGRESS as usize];
    let expected: &[(u8, u64)] = &[(SYN, 2), (SYN | ACK, 1), (ACK, 1), (FIN | ACK, 1), (RST | ACK, 1)];
    for f in 0..=255u8 {
        let want = expected.iter().find(|(e, _)| *e == f).map_or(0, |(_, n)| *n);
        assert_eq!(c.flags[f as usize], want, "flags {f:#04x}");
    }
    assert_eq!(c.protocols[proto("tcp")], 6);
    assert_eq!(c.parse_errors.iter().sum::<u64>(), 0, "no parse errors: {:?}", c.parse_errors);

    // Flow table: the v4 handshake pieces share one flow; the two v6 flows are separate.
    let table = FlowTable::map(&p.ebpf, p.geometry.slots()).unwrap();
    let mut tracker = FlowTracker::new(p.geometry.slots() as usize, p.geometry.slots_per_cpu);
    let mut deltas = Vec::new();
    tracker.scan(&table, &"test".into(), p.clock.now_ticks(), u64::MAX, |d| deltas.extend_from_slice(d));
    assert_eq!(deltas.len(), 3, "{:#?}", deltas.iter().map(|d| d.now.key).collect::<Vec<_>>());
    let v4 = deltas.iter().find(|d| d.now.key.family == 4).unwrap();
    let (lo, hi) = (&v4.now.sides[Side::Lo.index()], &v4.now.sides[Side::Hi.index()]);
    // 10.0.0.1:40000 is Lo (lower address), the server 10.0.0.2:80 is Hi.
    assert_eq!((lo.packets, lo.syn, lo.fin), (2, 1, 1));
    assert_eq!((hi.packets, hi.syn_ack, hi.rst, hi.rst_ack), (2, 1, 1, 1));
    assert_eq!(v4.now.initiator, Side::Lo as u8);
    assert!(v4.now.saw_combo(Side::Hi, SYN | ACK) && v4.now.saw_combo(Side::Hi, RST | ACK));
    assert_eq!(lo.first_ttl, 64);
    assert!(v4.is_new());
}

#[test]
fn malformed_frames_pass_and_are_counted_by_reason() {
    if !privileged("malformed_frames_pass_and_are_counted_by_reason") {
        return;
    }
    let mut p = probe();
    let good = TcpFrame::v4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, SYN).build();
    let mut three_tags = TcpFrame::v4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, SYN);
    three_tags.vlans = vec![0x88a8, 0x8100, 0x8100];
    let mut bad_offset = good.clone();
    bad_offset[14 + 20 + 12] = 2 << 4;
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let mut fragment = good.clone();
    fragment[14 + 6] = 0x00;
    fragment[14 + 7] = 0x10;
    let mut v6_deep = TcpFrame::v6("fd00::1", 1, "fd00::2", 2, SYN);
    v6_deep.ipv6_ext = vec![0, 60, 60, 60, 60, 60, 60];
    let mut v6_frag = TcpFrame::v6("fd00::1", 1, "fd00::2", 2, SYN).build();
    let mut v6f = TcpFrame::v6("fd00::1", 1, "fd00::2", 2, SYN);
    v6f.ipv6_ext = vec![44];
    v6_frag.clone_from(&v6f.build());
    v6_frag[14 + 40 + 3] = 0x10; // fragment offset 2
    let mut vlan_cut = good[..16].to_vec();
    vlan_cut[12..14].copy_from_slice(&[0x81, 0x00]);
    let mut udp = good.clone();
    udp[14 + 9] = 17;
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let cases: Vec<(Vec<u8>, Result<ParseError, &str>)> = vec![
        // BPF_PROG_TEST_RUN refuses frames under 14 bytes, so a cut Ethernet header is a cut tag.
        (vlan_cut, Ok(ParseError::TruncatedVlan)),
        (good[..16].to_vec(), Ok(ParseError::TruncatedIpv4)),
        (good[..14 + 20 + 10].to_vec(), Ok(ParseError::TruncatedTcp)),
        (three_tags.build(), Ok(ParseError::TooManyVlans)),
        (bad_offset, Ok(ParseError::BadTcpOffset)),
        (bad_ihl, Ok(ParseError::BadIpv4Header)),
        (fragment, Ok(ParseError::Fragment)),
        (v6_deep.build(), Ok(ParseError::TooManyIpv6Extensions)),
        (v6_frag, Ok(ParseError::Fragment)),
        (TcpFrame::v6("fd00::1", 1, "fd00::2", 2, SYN).build()[..30].to_vec(), Ok(ParseError::TruncatedIpv6)),
        (udp, Err("udp")),
        (arp, Err("non_ip")),
    ];
    for (frame, _) in &cases {
        assert_eq!(xdp(&mut p, frame), XDP_PASS, "a malformed frame must pass: {frame:02x?}");
    }
    let c = p.counters().unwrap()[HOOK_INGRESS as usize];
    let mut want_errors = [0u64; PARSE_ERROR_NAMES.len()];
    let mut want_protos = [0u64; PROTO_NAMES.len()];
    for (_, outcome) in &cases {
        match outcome {
            Ok(reason) => want_errors[*reason as usize] += 1,
            Err(name) => want_protos[proto(name)] += 1,
        }
    }
    assert_eq!(c.parse_errors, want_errors, "parse errors by reason ({PARSE_ERROR_NAMES:?})");
    // The bad-offset SYN is a TCP packet, as tshark counts it too.
    want_protos[proto("tcp")] += 1;
    assert_eq!(c.protocols, want_protos);
    // The one segment with a bad data offset still has its flags byte, which tshark counts too.
    assert_eq!(c.flags.iter().sum::<u64>(), 1, "only the bad-offset SYN reached the histogram");
    assert_eq!(c.flags[SYN as usize], 1);
}

/// Every encapsulation the parser opens, through the real program: the inner segment is counted
/// and tracked under the inner addresses, exactly once; the ones it leaves closed are counted
/// under their own reason, never silently.
#[test]
fn tunnels_are_opened_to_the_inner_segment() {
    if !privileged("tunnels_are_opened_to_the_inner_segment") {
        return;
    }
    let mut p = probe();
    let inner = TcpFrame::v4([10, 9, 0, 1], 40000, [10, 9, 0, 2], 80, SYN).build();
    let inner6 = TcpFrame::v6("fd09::1", 40000, "fd09::2", 80, SYN | ACK).build();
    let opened: Vec<(&str, Vec<u8>, u8)> = vec![
        ("pppoe", Encap::Pppoe.wrap(&inner), SYN),
        ("pppoe v6", Encap::Pppoe.wrap(&inner6), SYN | ACK),
        ("gre", Encap::Gre { key: false, seq: false }.wrap(&inner), SYN),
        ("gre keyed+sequenced", Encap::Gre { key: true, seq: true }.wrap(&inner), SYN),
        ("gretap", Encap::GreTap.wrap(&inner), SYN),
        ("vxlan", Encap::Vxlan(4789).wrap(&inner), SYN),
        ("ipip", Encap::IpInIp.wrap(&inner), SYN),
        ("6in4", Encap::IpInIp.wrap(&inner6), SYN | ACK),
        ("4in6", Encap::IpInIp6.wrap(&inner), SYN),
        ("6in6", Encap::IpInIp6.wrap(&inner6), SYN | ACK),
        ("pppoe carrying gre", Encap::Pppoe.wrap(&Encap::Gre { key: true, seq: false }.wrap(&inner)), SYN),
    ];
    for (what, frame, _) in &opened {
        assert_eq!(xdp(&mut p, frame), XDP_PASS, "{what}");
    }
    let c = p.counters().unwrap()[HOOK_INGRESS as usize];
    assert_eq!(c.parse_errors.iter().sum::<u64>(), 0, "all opened: {:?}", c.parse_errors);
    assert_eq!(c.flags[SYN as usize], opened.iter().filter(|o| o.2 == SYN).count() as u64);
    assert_eq!(c.flags[(SYN | ACK) as usize], opened.iter().filter(|o| o.2 == SYN | ACK).count() as u64);
    assert_eq!(c.protocols[proto("tcp")], opened.len() as u64);
    // Two flows, both under the inner addresses (the outer ones never make a flow).
    let table = FlowTable::map(&p.ebpf, p.geometry.slots()).unwrap();
    let mut tracker = FlowTracker::new(p.geometry.slots() as usize, p.geometry.slots_per_cpu);
    let mut keys = Vec::new();
    tracker.scan(&table, &"test".into(), p.clock.now_ticks(), u64::MAX, |d| keys.extend(d.iter().map(|d| d.now.key)));
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.addr_lo[..2] == [10, 9] || k.addr_lo[..2] == [0xfd, 0x09]), "{keys:?}");

    let mut p = probe();
    let three_deep = Encap::Pppoe.wrap(&Encap::Gre { key: false, seq: false }.wrap(&Encap::IpInIp.wrap(&inner)));
    let closed: Vec<(Vec<u8>, ParseError)> = vec![
        (Encap::Geneve.wrap(&inner), ParseError::EncapsulatedGeneve),
        (Encap::Teredo.wrap(&inner6), ParseError::EncapsulatedTeredo),
        (Encap::Pptp.wrap(&inner), ParseError::EncapsulatedGreOther),
        (three_deep, ParseError::TooDeep),
    ];
    let mut want = [0u64; PARSE_ERROR_NAMES.len()];
    for (frame, reason) in &closed {
        assert_eq!(xdp(&mut p, frame), XDP_PASS, "{reason:?}");
        want[*reason as usize] += 1;
    }
    let c = p.counters().unwrap()[HOOK_INGRESS as usize];
    assert_eq!(c.parse_errors, want, "counted by reason ({PARSE_ERROR_NAMES:?})");
    assert_eq!(c.flags.iter().sum::<u64>(), 0);
}

#[test]
fn egress_hook_counts_into_its_own_histogram() {
    if !privileged("egress_hook_counts_into_its_own_histogram") {
        return;
    }
    let mut p = probe();
    let syn_ack = TcpFrame::v4([10, 0, 0, 2], 80, [10, 0, 0, 1], 40000, SYN | ACK).build();
    let data = TcpFrame { payload: b"hello".to_vec(), ..TcpFrame::v4([10, 0, 0, 2], 80, [10, 0, 0, 1], 40000, PSH | ACK) }.build();
    assert_eq!(tc(&mut p, &syn_ack), TC_ACT_UNSPEC);
    assert_eq!(tc(&mut p, &data), TC_ACT_UNSPEC);
    let c = p.counters().unwrap();
    assert_eq!(c[HOOK_EGRESS as usize].flags[(SYN | ACK) as usize], 1);
    assert_eq!(c[HOOK_EGRESS as usize].flags[(PSH | ACK) as usize], 1);
    assert_eq!(c[HOOK_INGRESS as usize].flags.iter().sum::<u64>(), 0);
}

#[test]
fn rst_with_payload_reaches_the_ring_buffer_with_its_text() {
    if !privileged("rst_with_payload_reaches_the_ring_buffer_with_its_text") {
        return;
    }
    let mut p = probe();
    let syn = TcpFrame::v4([10, 77, 0, 2], 40000, [10, 77, 0, 1], 6667, SYN);
    let mut rst = TcpFrame::v4([10, 77, 0, 1], 6667, [10, 77, 0, 2], 40000, RST | ACK);
    rst.payload = b"Go away, we're not home".to_vec();
    rst.ttl = 128;
    rst.ack = 1001;
    assert_eq!(tc(&mut p, &syn.build()), TC_ACT_UNSPEC);
    assert_eq!(xdp(&mut p, &rst.build()), XDP_PASS);
    let mut ring = aya::maps::RingBuf::try_from(p.ebpf.take_map(EVENTS).unwrap()).unwrap();
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        events.push(probe::kernel::ring::decode(&item).expect("full event"));
    }
    let rsts: Vec<&PacketEvent> = events.iter().filter(|e| e.flags & RST != 0).collect();
    assert_eq!(rsts.len(), 1, "one RST event");
    let e = rsts[0];
    assert_eq!(e.payload(), b"Go away, we're not home");
    assert_eq!(e.reasons & (NOTABLE_RST | NOTABLE_RST_PAYLOAD), NOTABLE_RST | NOTABLE_RST_PAYLOAD);
    assert_eq!((e.ttl, e.sport, e.dport, e.ack, e.payload_len), (128, 6667, 40000, 1001, 23));
    // The flow's history as it was before the RST: our SYN, sent on egress.
    let our_side = if e.flow_before.key.addr_lo[..4] == [10, 77, 0, 2] { Side::Lo } else { Side::Hi };
    assert_eq!(e.flow_before.sides[our_side.index()].syn, 1);
    assert_eq!(e.flow_before.sides[our_side.index()].syn_seq, 1000);
    let c = p.counters().unwrap();
    assert_eq!(c[0].events + c[1].events, events.len() as u64);
}

#[test]
fn full_table_counts_insert_failures_and_keeps_the_histogram_exact() {
    if !privileged("full_table_counts_insert_failures_and_keeps_the_histogram_exact") {
        return;
    }
    // The smallest table: 64 slots per CPU. Test runs stay on one CPU, so 64 slots take 500 flows.
    let opts =
        LoadOptions { flow_capacity: 64, flow_idle_ns: 120_000_000_000, event_rate: 1000, ebpf_log: false, ..LoadOptions::default() };
    let mut p = loader::load(&tests::ebpf_object(), opts).unwrap();
    for i in 0..500u32 {
        let f = TcpFrame::v4([192, 0, 2, (i % 250) as u8 + 1], 1024 + i as u16, [10, 0, 0, 2], 80, SYN).build();
        assert_eq!(xdp(&mut p, &f), XDP_PASS);
    }
    let c = p.counters().unwrap()[HOOK_INGRESS as usize];
    assert_eq!(c.flags[SYN as usize], 500, "the histogram never loses a packet");
    assert_eq!(c.flow_inserts + c.flow_insert_failures, 500, "every new flow is inserted or counted as a failure");
    assert!(c.flow_insert_failures >= 500 - 64, "at most 64 slots on this CPU: {c:?}");
}

/// A poll that reads a slot between two packets of its flow sees the second at the next poll,
/// even within one jiffy: the SYN/ACK and the RST our kernel answers it with are microseconds
/// apart, and a flow's `last_seen` (jiffies) alone stays the same across them.
#[test]
fn a_packet_right_after_a_poll_is_seen_at_the_next() {
    if !privileged("a_packet_right_after_a_poll_is_seen_at_the_next") {
        return;
    }
    let mut p = probe();
    let table = FlowTable::map(&p.ebpf, p.geometry.slots()).unwrap();
    let mut tracker = FlowTracker::new(p.geometry.slots() as usize, p.geometry.slots_per_cpu);
    let scan = |tracker: &mut FlowTracker, p: &Probe| {
        let mut deltas = Vec::new();
        tracker.scan(&table, &"test".into(), p.clock.now_ticks(), u64::MAX, |d| deltas.extend_from_slice(d));
        deltas
    };
    for round in 0..20u16 {
        let port = 30000 + round;
        assert_eq!(xdp(&mut p, &TcpFrame::v4([198, 51, 100, 7], 443, [10, 0, 0, 2], port, SYN | ACK).build()), XDP_PASS);
        assert_eq!(scan(&mut tracker, &p).len(), 1, "round {round}: the SYN/ACK's flow");
        tc(&mut p, &TcpFrame::v4([10, 0, 0, 2], port, [198, 51, 100, 7], 443, RST).build());
        let deltas = scan(&mut tracker, &p);
        assert_eq!(deltas.len(), 1, "round {round}: our RST, right after the poll");
        let ours = &deltas[0].now.sides[Side::Lo.index()];
        assert_eq!((ours.packets, ours.rst), (1, 1), "round {round}");
    }
}

/// Collects aya-log records in memory.
struct Collect(std::sync::Mutex<Vec<String>>);

impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

#[test]
fn kernel_logging_is_off_unless_asked_for() {
    if !privileged("kernel_logging_is_off_unless_asked_for") {
        return;
    }
    let truncated = TcpFrame::v4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, SYN).build()[..20].to_vec();
    for on in [false, true] {
        let opts =
            LoadOptions { flow_capacity: 4096, flow_idle_ns: 120_000_000_000, event_rate: 1000, ebpf_log: on, ..LoadOptions::default() };
        let mut p = loader::load(&tests::ebpf_object(), opts).unwrap();
        let sink: &'static Collect = Box::leak(Box::new(Collect(std::sync::Mutex::new(vec![]))));
        let mut logger = aya_log::EbpfLogger::init_with_logger(&mut p.ebpf, sink).unwrap();
        assert_eq!(xdp(&mut p, &truncated), XDP_PASS);
        logger.flush();
        let records = sink.0.lock().unwrap().clone();
        if on {
            assert_eq!(records, ["ingress: passed a malformed packet, parse error 3"], "the record names the reason (truncated_ipv4)");
        } else {
            assert!(records.is_empty(), "off means nothing logged: {records:?}");
        }
    }
}
