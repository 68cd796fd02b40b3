//! Every metric flagprobe exports, declared once. Prefix `flagprobe_`, base units, counters end in
//! `_total`, and label values come from small fixed sets (interface, hook, direction, flags letters,
//! protocol, reason) — never addresses or ports, which belong in alerts.

use probe_common::{
    action::DROP_REASON_NAMES,
    counters::{DIRECTION_NAMES, HOOK_NAMES, HookCounters, PARSE_ERROR_NAMES, PROTO_NAMES},
    flags,
};
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    pub registry: Registry,
    pub tcp_packets: IntCounterVec,
    pub packets: IntCounterVec,
    pub parse_errors: IntCounterVec,
    pub flows: IntGaugeVec,
    pub flow_table_capacity: IntGaugeVec,
    pub flow_inserts: IntCounterVec,
    pub flow_insert_failures: IntCounterVec,
    pub syns_untracked: IntCounterVec,
    pub events: IntCounterVec,
    pub events_suppressed: IntCounterVec,
    pub events_dropped: IntCounterVec,
    pub events_received: IntCounterVec,
    pub poll_duration: Histogram,
    pub xdp_mode: IntGaugeVec,
    pub alerts: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub alerts_suppressed: IntCounterVec,
    pub evidence_files: IntCounterVec,
    pub syslog_messages: IntCounterVec,
    pub session_records: IntCounterVec,
    pub ipfix_records: IntCounterVec,
    pub dropped_packets: IntCounterVec,
    pub sensor_frames: IntCounterVec,
    pub backscatter_packets: IntCounterVec,
    pub rst_payload_packets: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub up_since: IntGauge,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("metric registered once");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let poll_duration = Histogram::with_opts(
            HistogramOpts::new("flagprobe_poll_duration_seconds", "Time to read the kernel maps and process one poll.")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
        )
        .expect("valid metric");
        r.register(Box::new(poll_duration.clone())).expect("metric registered once");
        let up_since = IntGauge::new("flagprobe_start_time_seconds", "Unix time the agent started.").expect("valid metric");
        r.register(Box::new(up_since.clone())).expect("metric registered once");
        let m = Metrics {
            tcp_packets: counter(
                &r,
                "flagprobe_tcp_packets_total",
                "TCP packets by exact flags byte (Snort letters S F R P A U E C; 0 = none).",
                &["iface", "hook", "direction", "flags"],
            ),
            packets: counter(
                &r,
                "flagprobe_packets_total",
                "Packets by protocol; direction in = towards a home address (sensor: non-TCP packets count as in).",
                &["iface", "hook", "direction", "protocol"],
            ),
            dropped_packets: counter(
                &r,
                "flagprobe_dropped_packets_total",
                "Inbound packets dropped on request (--drop), by reason; dry_run=\"true\": what --drop-dry-run would have dropped.",
                &["iface", "reason", "dry_run"],
            ),
            sensor_frames: counter(
                &r,
                "flagprobe_sensor_frames_total",
                "Sensor mode: notable frames sent whole to the AF_XDP socket (to_socket), refused for want of one (no_socket), read by the agent (read).",
                &["iface", "outcome"],
            ),
            parse_errors: counter(&r, "flagprobe_parse_errors_total", "Packets passed unparsed, by reason.", &["iface", "reason"]),
            flows: gauge(&r, "flagprobe_flows", "Flow-table slots holding a flow seen within the idle timeout.", &["iface"]),
            flow_table_capacity: gauge(&r, "flagprobe_flow_table_capacity", "Flow-table slots.", &["iface"]),
            flow_inserts: counter(&r, "flagprobe_flow_inserts_total", "New flows given a slot.", &["iface"]),
            flow_insert_failures: counter(
                &r,
                "flagprobe_flow_insert_failures_total",
                "Packets of untracked flows: their slot held another live flow (each such packet counts).",
                &["iface"],
            ),
            syns_untracked: counter(
                &r,
                "flagprobe_syns_untracked_total",
                "Inbound SYNs over the per-CPU tracking budget (syn-track-rate): counted in the histogram and the flood aggregates, not in a flow.",
                &["iface"],
            ),
            events: counter(&r, "flagprobe_events_total", "Notable packets sent to the agent through the ring buffer.", &["iface"]),
            events_suppressed: counter(
                &r,
                "flagprobe_events_suppressed_total",
                "Notable packets held back by the kernel's per-CPU rate limit.",
                &["iface"],
            ),
            events_dropped: counter(
                &r,
                "flagprobe_events_dropped_total",
                "Notable packets lost: ring buffer full, or the agent's queue full.",
                &["iface", "reason"],
            ),
            events_received: counter(&r, "flagprobe_events_received_total", "Ring-buffer events the agent read.", &["iface"]),
            alerts_suppressed: counter(
                &r,
                "flagprobe_alerts_suppressed_total",
                "Alerts held back: a detector opened too many new keys in one window, or folded them into one incident's alert.",
                &["detector"],
            ),
            syslog_messages: counter(
                &r,
                "flagprobe_syslog_messages_total",
                "Alerts sent to syslog (--syslog) by outcome: sent, or lost (queue full, collector down, send failed).",
                &["outcome"],
            ),
            session_records: counter(
                &r,
                "flagprobe_session_records_total",
                "Session records (--sessions) by outcome: written, or lost (queue full, file not writable).",
                &["outcome"],
            ),
            ipfix_records: counter(
                &r,
                "flagprobe_ipfix_records_total",
                "IPFIX flow records (--ipfix, one per direction) by outcome: sent, or lost (queue full, send failed).",
                &["outcome"],
            ),
            evidence_files: counter(
                &r,
                "flagprobe_evidence_files_total",
                "Evidence pcapng files by outcome: written (an alert's packets), removed (oldest, to stay under the size cap), failed.",
                &["outcome"],
            ),
            config_reloads: counter(&r, "flagprobe_config_reloads_total", "SIGHUP reloads by result (success, failure).", &["result"]),
            alerts: counter(
                &r,
                "flagprobe_alerts_total",
                "Alert lines written (first alerts and their updates).",
                &["detector", "severity"],
            ),
            backscatter_packets: counter(
                &r,
                "flagprobe_backscatter_packets_total",
                "Backscatter packets: unsolicited SYN/ACKs and RSTs for connections we never opened.",
                &["kind"],
            ),
            rst_payload_packets: counter(
                &r,
                "flagprobe_rst_payload_packets_total",
                "RSTs carrying a reset-cause text, by matched signature (none: no match).",
                &["signature"],
            ),
            xdp_mode: gauge(&r, "flagprobe_xdp_mode", "1 for the XDP mode in effect per interface.", &["iface", "mode"]),
            build_info: gauge(&r, "flagprobe_build_info", "Always 1; labels say which build runs.", &["version"]),
            poll_duration,
            up_since,
            registry: r,
        };
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for result in ["success", "failure"] {
            m.config_reloads.with_label_values(&[result]);
        }
        for kind in ["syn-ack", "rst"] {
            m.backscatter_packets.with_label_values(&[kind]);
        }
        for outcome in ["sent", "lost"] {
            m.syslog_messages.with_label_values(&[outcome]);
            m.ipfix_records.with_label_values(&[outcome]);
        }
        for outcome in ["written", "lost"] {
            m.session_records.with_label_values(&[outcome]);
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        m.up_since.set(now as i64);
        m
    }

    /// Add what the kernel counted between `before` and `now` (both summed over CPUs) for one
    /// direction (a gateway's hook; a sensor counts both on its one XDP hook, `mirror`).
    pub fn add_hook_counters(&self, iface: &str, hook: usize, sensor: bool, before: &HookCounters, now: &HookCounters) {
        let hook_name = if sensor { "mirror" } else { HOOK_NAMES[hook] };
        let direction = DIRECTION_NAMES[hook];
        for (f, (a, b)) in before.flags.iter().zip(now.flags.iter()).enumerate() {
            if b > a {
                self.tcp_packets.with_label_values(&[iface, hook_name, direction, flags::letters(f as u8).as_str()]).inc_by(b - a);
            }
        }
        for (p, (a, b)) in before.protocols.iter().zip(now.protocols.iter()).enumerate() {
            if b > a {
                self.packets.with_label_values(&[iface, hook_name, direction, PROTO_NAMES[p]]).inc_by(b - a);
            }
        }
        for (r, (a, b)) in before.parse_errors.iter().zip(now.parse_errors.iter()).enumerate() {
            if b > a {
                self.parse_errors.with_label_values(&[iface, PARSE_ERROR_NAMES[r]]).inc_by(b - a);
            }
        }
        let add = |c: &IntCounterVec, labels: &[&str], a: u64, b: u64| {
            if b > a {
                c.with_label_values(labels).inc_by(b - a);
            }
        };
        add(&self.flow_inserts, &[iface], before.flow_inserts, now.flow_inserts);
        add(&self.flow_insert_failures, &[iface], before.flow_insert_failures, now.flow_insert_failures);
        add(&self.syns_untracked, &[iface], before.syns_untracked, now.syns_untracked);
        add(&self.events, &[iface], before.events, now.events);
        add(&self.events_suppressed, &[iface], before.events_suppressed, now.events_suppressed);
        add(&self.events_dropped, &[iface, "ringbuf_full"], before.events_ringbuf_full, now.events_ringbuf_full);
        for (r, name) in DROP_REASON_NAMES.iter().enumerate() {
            add(&self.dropped_packets, &[iface, name, "false"], before.dropped[r], now.dropped[r]);
            add(&self.dropped_packets, &[iface, name, "true"], before.would_drop[r], now.would_drop[r]);
        }
        add(&self.sensor_frames, &[iface, "to_socket"], before.frames_to_socket, now.frames_to_socket);
        add(&self.sensor_frames, &[iface, "no_socket"], before.frames_to_socket_failed, now.frames_to_socket_failed);
    }

    /// Make the per-interface series exist from the start, at zero, so rates and alerts work before
    /// the first packet.
    pub fn init_iface(&self, iface: &str, capacity: u64, xdp_mode: &str) {
        self.flow_table_capacity.with_label_values(&[iface]).set(capacity as i64);
        self.flows.with_label_values(&[iface]).set(0);
        self.xdp_mode.with_label_values(&[iface, xdp_mode]).set(1);
        for c in [
            &self.flow_inserts,
            &self.flow_insert_failures,
            &self.syns_untracked,
            &self.events,
            &self.events_suppressed,
            &self.events_received,
        ] {
            c.with_label_values(&[iface]);
        }
        for reason in ["ringbuf_full", "agent_queue_full"] {
            self.events_dropped.with_label_values(&[iface, reason]);
        }
        for reason in DROP_REASON_NAMES {
            for dry_run in ["false", "true"] {
                self.dropped_packets.with_label_values(&[iface, reason, dry_run]);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding never fails");
        String::from_utf8(buf).unwrap_or_default()
    }
}
