//! A max-rate spoofed SYN flood (hping3 --flood --rand-source) against a small flow table: the agent
//! stays up and healthy, the histogram counts every packet, and what the table and the event rate
//! limit could not take is counted — nothing is silent.

use tests::{agent::Agent, lab::Lab, metrics_text, privileged, tool};

#[test]
fn a_spoofed_flood_is_counted_never_silent() {
    if !privileged("a_spoofed_flood_is_counted_never_silent") || !tool("flood", "hping3") {
        return;
    }
    // A max-rate flood takes both cores: no other lab runs meanwhile.
    let alone = tests::lab::exclusive();
    let lab = Lab::new_alone(&alone);
    let agent = Agent::start(&lab, &["--flow-capacity", "4096", "--event-rate", "100", "--alert-format", "off"]);
    // Unsolicited SYN/ACKs from random forged sources: every one is a new flow and an event, and our
    // kernel answers each with a RST (egress), so both hooks are busy.
    lab.exec(&lab.peer, "timeout 3 hping3 --flood -q -S -A --rand-source -p 8080 10.77.0.2 >/dev/null 2>&1; true");
    agent.settle();
    assert_eq!(agent.get("/healthz").map(|r| r.0), Some(200), "still healthy after the flood");
    let m = agent.metrics();
    let sa = metrics_text::tcp(&m, "ingress", "SA");
    let inserts = metrics_text::sum(&m, "flagprobe_flow_inserts_total", &[]) as u64;
    let failures = metrics_text::sum(&m, "flagprobe_flow_insert_failures_total", &[]) as u64;
    let suppressed = metrics_text::sum(&m, "flagprobe_events_suppressed_total", &[]) as u64;
    let events = metrics_text::sum(&m, "flagprobe_events_total", &[]) as u64;
    let dropped = metrics_text::sum(&m, "flagprobe_events_dropped_total", &[]) as u64;
    let received = metrics_text::sum(&m, "flagprobe_events_received_total", &[]) as u64;
    assert!(sa > 10_000, "a flood reached the hook: {sa} SYN/ACKs");
    assert!(failures > 0, "a 4096-slot table overflows and says so");
    // Each SYN/ACK from a random source opens a flow: it is inserted or its packet fails to find a
    // slot (and so does our RST answering it). The table never holds more than its capacity.
    let rst = metrics_text::tcp(&m, "egress", "R");
    assert!(inserts <= 4096, "at most the table's capacity: {inserts}");
    assert!(inserts + failures >= sa, "every new flow inserted or counted: {inserts} + {failures} vs {sa} SYN/ACKs");
    assert!(inserts + failures <= sa + rst, "no packet counted twice: {inserts} + {failures} vs {sa} + {rst}");
    assert!(suppressed > 0, "the per-CPU event rate limit held events back, counted");
    assert!(events + suppressed >= sa, "every notable SYN/ACK was sent or counted as suppressed: {events} + {suppressed} vs {sa}");
    assert_eq!(received + dropped, events, "every event sent was read or counted as dropped");
    // Random forged sources make every SYN/ACK a different "victim": the log must not flood.
    let mut agent = agent;
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    let m = m.clone();
    let held_back = metrics_text::sum(&m, "flagprobe_alerts_suppressed_total", &[]) as u64;
    let lines = agent.alerts().len() as u64;
    assert!(held_back > 0, "new alert keys beyond the budget are counted");
    assert!(lines <= 2 * probe::alert::dedup::NEW_KEYS_PER_WINDOW * 8, "at most the budget per detector (plus updates): {lines} lines");
}
