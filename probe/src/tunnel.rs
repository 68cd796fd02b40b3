//! How a segment reached us, read again from its event's frame copy (the kernel sends the frame's
//! first bytes and nothing more per packet): which tunnel carried it, with the outer addresses, so
//! an alert about traffic inside PPPoE, GRE or VXLAN can say which link it arrived on; and, for an
//! interface without an Ethernet header, the frame as Ethernet for the evidence file. Counting and
//! judging use the inner packet only; this is for the words and the evidence.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use probe_common::{
    event::{EVENT_FRAME_MAX, PacketEvent},
    parse::{self, Cursor, TUNNEL_NAMES, TUNNEL_NONE, TUNNEL_PPPOE},
};

/// An event from an interface without an Ethernet header (`ppp0`, `gre0`, `wg0`: its frame starts
/// at IP) with an Ethernet header put in front, as replay does for raw-IP captures: evidence files
/// are Ethernet pcapng, and the tunnel is read from an Ethernet frame. The frame's last 14 bytes
/// of the copy give way.
pub fn with_ethernet_header(ev: &PacketEvent) -> PacketEvent {
    let ip = ev.frame();
    let ethertype: [u8; 2] = if ip.first().is_some_and(|b| b >> 4 == 6) { [0x86, 0xdd] } else { [0x08, 0x00] };
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, ethertype[0], ethertype[1]];
    frame.extend_from_slice(&ip[..ip.len().min(EVENT_FRAME_MAX - 14)]);
    let mut out = *ev;
    out.set_frame(&frame);
    out.frame_len = ev.frame_len + 14;
    out
}

/// A tunnel as an alert names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub kind: &'static str,
    /// The outer IP header's addresses (none for PPPoE, whose outer header is Ethernet).
    pub outer: Option<(IpAddr, IpAddr)>,
}

impl Tunnel {
    /// The tunnel around the segment in `frame` (an Ethernet frame's head), if any.
    pub fn of(frame: &[u8]) -> Option<Tunnel> {
        let tcp = parse::parse(&Cursor::from_slice(frame)).ok()?;
        let t = tcp.tunnel;
        if t.kind == TUNNEL_NONE {
            return None;
        }
        let kind = TUNNEL_NAMES.get(t.kind as usize).copied().unwrap_or("tunnel");
        let outer = if t.kind == TUNNEL_PPPOE { None } else { outer_addresses(frame.get(t.outer_offset as usize..)?) };
        Some(Tunnel { kind, outer })
    }

    pub fn json(&self) -> serde_json::Value {
        match self.outer {
            Some((src, dst)) => serde_json::json!({ "kind": self.kind, "outer_src": src, "outer_dst": dst }),
            None => serde_json::json!({ "kind": self.kind }),
        }
    }
}

impl std::fmt::Display for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            "pppoe" => "PPPoE",
            "gre" => "GRE",
            "vxlan" => "VXLAN",
            "ipip" => "IP-in-IP",
            "ip6" => "IPv6-in-IP",
            other => other,
        };
        match self.outer {
            Some((src, dst)) => write!(f, "{kind} {src} → {dst}"),
            None => write!(f, "{kind}"),
        }
    }
}

/// Source and destination of the IP header at the start of `ip`.
fn outer_addresses(ip: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match ip.first()? >> 4 {
        4 => {
            let a: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let b: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            Some((Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into()))
        }
        6 => {
            let a: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let b: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            Some((Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into()))
        }
        _ => None,
    }
}

/// The tunnel last seen between two inner addresses (either way), for the alerts about them.
/// Bounded: a flood of tunnelled sources empties it rather than growing it.
#[derive(Default)]
pub struct TunnelsSeen(HashMap<(IpAddr, IpAddr), Tunnel>);

/// Pairs remembered at most; past it the map starts again.
const TUNNELS_SEEN_MAX: usize = 4096;

impl TunnelsSeen {
    pub fn note(&mut self, a: IpAddr, b: IpAddr, tunnel: Tunnel) {
        if self.0.len() >= TUNNELS_SEEN_MAX {
            self.0.clear();
        }
        self.0.insert(pair(a, b), tunnel);
    }

    pub fn between(&self, a: IpAddr, b: IpAddr) -> Option<&Tunnel> {
        self.0.get(&pair(a, b))
    }
}

fn pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    if a <= b { (a, b) } else { (b, a) }
}
