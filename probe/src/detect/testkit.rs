//! Scripted traffic for detector tests: packets go through the same flow logic as the kernel
//! ([`SoftTable`]), then to a detector as flow views or event views. Home is 10.0.0.0/24.

use std::sync::Arc;

use probe_common::flow::{Endpoints, Segment};

use super::{AggregateView, Detector, EventView, FlowView, HomeNets};
use crate::{alert::Alert, flows::SoftTable};

pub const S: u64 = 1_000_000_000;

pub struct Script {
    pub table: SoftTable,
    pub home: HomeNets,
    pub events: Vec<probe_common::event::PacketEvent>,
}

pub struct Pkt<'a> {
    pub src: &'a str,
    pub sport: u16,
    pub dst: &'a str,
    pub dport: u16,
    pub flags: u8,
    pub payload: &'a [u8],
    pub ttl: u8,
    pub seq: u32,
    pub ack: u32,
    /// IPv4 identification (the event's frame copy carries it).
    pub ip_id: u16,
}

/// The `i`-th of many distinct remote addresses (198.18.0.0/15, benchmarking space): a flood's
/// spoofed sources or a reflection's reflectors.
pub fn nth_remote(i: u32) -> String {
    format!("198.18.{}.{}", i / 250, i % 250 + 1)
}

/// A packet with defaults: no payload, TTL 64, seq 1000, ack 0.
pub fn pkt<'a>(src: &'a str, sport: u16, dst: &'a str, dport: u16, flags: u8) -> Pkt<'a> {
    Pkt { src, sport, dst, dport, flags, payload: &[], ttl: 64, seq: 1000, ack: 0, ip_id: 0 }
}

fn bytes(ip: &str) -> ([u8; 16], u8) {
    probe_common::flow::addr_bytes(ip.parse().unwrap())
}

impl Default for Script {
    fn default() -> Self {
        Self::new()
    }
}

impl Script {
    pub fn new() -> Self {
        Script { table: SoftTable::new(), home: HomeNets(vec!["10.0.0.0/24".parse().unwrap()]), events: vec![] }
    }

    /// Send `p` at time `t_ns`; its event (if notable) is kept for [`Script::events_to`].
    pub fn send(&mut self, t_ns: u64, p: Pkt<'_>) {
        let (src, family) = bytes(p.src);
        let (dst, _) = bytes(p.dst);
        let ep = Endpoints { src, dst, sport: p.sport, dport: p.dport, family };
        let hook = if self.home.contains(p.src.parse().unwrap()) { 1 } else { 0 };
        let v4 = family == probe_common::flow::FAMILY_V4;
        let seg = Segment {
            flags: p.flags,
            ttl: p.ttl,
            ip_id: if v4 { p.ip_id } else { 0 },
            hook,
            seq: p.seq,
            ack: p.ack,
            payload_len: p.payload.len() as u32,
            ip_len: 40 + p.payload.len() as u32,
            now: t_ns,
        };
        if let Some(mut ev) = self.table.segment(&ep, &seg, 1024, p.payload) {
            if v4 {
                // The frame's head as the kernel copies it: Ethernet, then the IPv4 header.
                let mut frame = vec![0u8; 14 + 20 + 20];
                frame[12..14].copy_from_slice(&[0x08, 0x00]);
                frame[14] = 0x45;
                frame[16..18].copy_from_slice(&40u16.to_be_bytes());
                frame[46] = 5 << 4;
                frame[18..20].copy_from_slice(&p.ip_id.to_be_bytes());
                frame[22] = p.ttl;
                frame[23] = 6;
                frame[26..30].copy_from_slice(&src[..4]);
                frame[30..34].copy_from_slice(&dst[..4]);
                ev.set_frame(&frame);
            }
            self.events.push(ev);
        }
    }

    /// Poll: the flows changed since the last poll through `d.observe_flows`, then the aggregates
    /// through `d.observe_aggregates`, at `now_ns`.
    pub fn poll(&mut self, d: &mut dyn Detector, now_ns: u64) -> Vec<Alert> {
        let deltas = self.table.take_deltas(&Arc::from("eth0"));
        let views: Vec<FlowView<'_>> = deltas
            .iter()
            .filter_map(|dl| {
                let local = self.home.local_side(&dl.now.key, probe_common::flow::Side::from_index(dl.now.initiator))?;
                Some(FlowView { iface: "eth0", now: &dl.now, before: &dl.before, local })
            })
            .collect();
        let mut alerts = d.observe_flows(now_ns, &views);
        let snapshot = self.table.aggregates();
        alerts.extend(d.observe_aggregates(now_ns, &AggregateView { iface: "eth0", snapshot: &snapshot, home: &self.home }));
        alerts
    }

    /// The end of the input: a last poll at `now_ns`, then `d.end_of_input`, as replay ends.
    pub fn end(&mut self, d: &mut dyn Detector, now_ns: u64) -> Vec<Alert> {
        let mut alerts = self.poll(d, now_ns);
        alerts.extend(d.end_of_input(now_ns));
        alerts
    }

    /// Every event so far, through `d.observe_event`.
    pub fn events_to(&mut self, d: &mut dyn Detector) -> Vec<Alert> {
        let mut out = Vec::new();
        for ev in self.events.drain(..) {
            let from_local = self.home.contains(super::addr(ev.src, ev.family));
            let to_local = self.home.contains(super::addr(ev.dst, ev.family));
            let view = EventView { iface: "eth0", event: &ev, at_ns: ev.ts_ns, from_local, to_local };
            out.extend(d.observe_event(&view));
        }
        out
    }
}
