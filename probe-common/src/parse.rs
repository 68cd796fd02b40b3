//! The one header parser: a bounds-checked cursor over packet memory for Ethernet, up to two VLAN
//! tags, IPv4 (options included), IPv6 (up to six extension headers) and TCP. The kernel program
//! runs it over `[data, data_end)`; replay runs it over a captured frame. Every read is checked
//! against the end of the packet in a form the verifier follows, and nothing here touches a map,
//! so live and replay parse with the same code instead of two parsers kept in step.

use core::marker::PhantomData;

use crate::{
    counters::{PROTO_ICMP, PROTO_ICMPV6, PROTO_NON_IP, PROTO_OTHER_IP, PROTO_UDP, ParseError},
    flow::{Endpoints, FAMILY_V4, FAMILY_V6, Segment, v4_bytes},
};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_PPPOE_SESSION: u16 = 0x8864;
/// Transparent Ethernet bridging: an Ethernet frame inside GRE (gretap).
const ETH_P_TEB: u16 = 0x6558;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;

const GRE_CSUM: u16 = 0x8000;
const GRE_ROUTING: u16 = 0x4000;
const GRE_KEY: u16 = 0x2000;
const GRE_SEQ: u16 = 0x1000;
const GRE_VERSION: u16 = 0x0007;

/// VXLAN's IANA port; [`ParseOptions::vxlan_port`] is what the parser uses (a site may run another).
pub const VXLAN_PORT_DEFAULT: u16 = 4789;
const UDP_GENEVE: u16 = 6081;
const UDP_TEREDO: u16 = 3544;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_GRE: u8 = 47;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;

/// Deepest header offset we follow; keeps every offset small and bounded for the verifier.
const MAX_HEADER_OFFSET: usize = 1024;

/// A TCP segment found in a packet.
#[derive(Clone, Copy)]
pub struct TcpPacket {
    pub endpoints: Endpoints,
    /// Everything but the clock.
    pub segment: Segment,
    /// Offset of the first payload byte from the packet start.
    pub payload_offset: usize,
    pub window: u16,
    /// What carried it, if anything.
    pub tunnel: Tunnel,
}

/// The tunnel a segment came through: the outermost one's kind (`TUNNEL_*`) and where its outer
/// header starts in the frame (for userspace to read its addresses from the frame copy: the
/// kernel carries nothing more per packet), and how many tunnels were nested.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Tunnel {
    pub kind: u8,
    pub depth: u8,
    pub outer_offset: u16,
}

pub const TUNNEL_NONE: u8 = 0;
pub const TUNNEL_PPPOE: u8 = 1;
pub const TUNNEL_GRE: u8 = 2;
pub const TUNNEL_VXLAN: u8 = 3;
/// IPv4 inside IP (protocol 4: IPIP from an IPv4 header, 4in6 from an IPv6 one).
pub const TUNNEL_IPIP: u8 = 4;
/// IPv6 inside IP (protocol 41: 6in4, or IPv6 in IPv6).
pub const TUNNEL_IP6: u8 = 5;
pub const TUNNEL_NAMES: [&str; 6] = ["", "pppoe", "gre", "vxlan", "ipip", "ip6"];

/// Tunnels opened one inside another before the parser gives up (`too_deep`): a PPPoE WAN carrying
/// a GRE site link is two; more is rare, and each level is more for the verifier to walk.
pub const MAX_ENCAPSULATIONS: usize = 2;
/// Layers walked at most: Ethernet, then per tunnel an outer IP and an inner Ethernet, then IP.
const LAYERS: usize = 2 + 2 * MAX_ENCAPSULATIONS + 1;

/// How to read a frame: where it starts, and which UDP port carries VXLAN.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ParseOptions {
    pub link: Link,
    pub vxlan_port: u16,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions { link: Link::Ethernet, vxlan_port: VXLAN_PORT_DEFAULT }
    }
}

/// Where a frame starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Link {
    Ethernet,
    /// An L3 device: IPv4 or IPv6 from the first byte.
    Ip,
}

const LAYER_ETHERNET: u8 = 0;
const LAYER_IPV4: u8 = 1;
const LAYER_IPV6: u8 = 2;

/// One layer's outcome: the segment, or the next layer (`LAYER_*`) and where it starts, with the
/// tunnel (`TUNNEL_*`) whose inside it is, if any.
enum Step {
    Tcp(TcpPacket),
    Next { layer: u8, offset: usize, tunnel: u8 },
}

#[inline(always)]
fn next(layer: u8, offset: usize) -> Step {
    Step::Next { layer, offset, tunnel: TUNNEL_NONE }
}

#[inline(always)]
fn inner(tunnel: u8, layer: u8, offset: usize) -> Step {
    Step::Next { layer, offset, tunnel }
}

/// Why a packet is not a TCP segment we count per flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTcp {
    /// A well-formed packet of another protocol (a `PROTO_*` slot).
    Protocol(usize),
    /// Malformed or truncated.
    Error(ParseError),
    /// A TCP header whose data offset is impossible: counted as `bad_tcp_offset`, and its flags
    /// byte (read from the header's fixed part) in the histogram, in the direction of its endpoints.
    BadOffset { endpoints: Endpoints, flags: u8 },
}

#[repr(C)]
struct Ipv4Header {
    version_ihl: u8,
    tos: u8,
    total_len: [u8; 2],
    id: [u8; 2],
    frag: [u8; 2],
    ttl: u8,
    protocol: u8,
    checksum: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
struct Ipv6Header {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

#[repr(C)]
struct TcpHeader {
    sport: [u8; 2],
    dport: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    offset_reserved: u8,
    flags: u8,
    window: [u8; 2],
}

/// Packet memory `[start, end)`, borrowed for `'a`. Addresses rather than a slice, because that
/// is what XDP and TC hand the kernel program, and the verifier follows `p + size > end` checks.
#[derive(Clone, Copy)]
pub struct Cursor<'a> {
    start: usize,
    end: usize,
    bytes: PhantomData<&'a [u8]>,
}

impl Cursor<'static> {
    /// The kernel's packet pointers.
    ///
    /// # Safety
    /// `[start, end)` must be readable for as long as the cursor and what it returns are used (in a
    /// BPF program: the packet, until a helper that may move it, such as a pull, is called).
    #[inline(always)]
    pub unsafe fn from_raw(start: usize, end: usize) -> Self {
        Cursor { start, end, bytes: PhantomData }
    }
}

impl<'a> Cursor<'a> {
    /// A captured frame.
    #[inline(always)]
    pub fn from_slice(frame: &'a [u8]) -> Self {
        let start = frame.as_ptr() as usize;
        Cursor { start, end: start + frame.len(), bytes: PhantomData }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// A `T` at `offset`, or `None` when it would run past the end.
    #[inline(always)]
    fn at<T>(&self, offset: usize) -> Option<&'a T> {
        if offset > MAX_HEADER_OFFSET {
            return None;
        }
        let p = self.start + offset;
        if p + core::mem::size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: in bounds (checked above); every header type has alignment 1.
        Some(unsafe { &*(p as *const T) })
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// Parse a frame down to its TCP header, through up to [`MAX_ENCAPSULATIONS`] tunnels: the
/// segment is the innermost packet's (its addresses, ports and TTL), and [`TcpPacket::tunnel`] says
/// what carried it. `link` is where the frame starts: Ethernet, or IP on an L3 device (`ppp0`,
/// `gre0`, `wg0`), whose first nibble says which version.
#[inline(always)]
pub fn parse_link(pkt: &Cursor<'_>, opts: ParseOptions) -> Result<TcpPacket, NotTcp> {
    // Plain integers, not an enum with payloads: LLVM leaves an unused payload undefined, and the
    // verifier refuses a copy of a register no path wrote.
    let (mut layer, mut offset) = match opts.link {
        Link::Ethernet => (LAYER_ETHERNET, 0),
        Link::Ip => {
            let first: &u8 = pkt.at(0).ok_or(NotTcp::Error(ParseError::TruncatedIpv4))?;
            (if first >> 4 == 6 { LAYER_IPV6 } else { LAYER_IPV4 }, 0)
        }
    };
    let mut tunnel = Tunnel::default();
    // Each tunnel costs at most two layers (outer IP, then Ethernet or not) before the inner IP.
    for _ in 0..LAYERS {
        let step = match layer {
            LAYER_ETHERNET => ethernet(pkt, offset)?,
            LAYER_IPV4 => parse_ipv4(pkt, offset, opts.vxlan_port)?,
            _ => parse_ipv6(pkt, offset, opts.vxlan_port)?,
        };
        match step {
            Step::Tcp(mut tcp) => {
                tcp.tunnel = tunnel;
                return Ok(tcp);
            }
            Step::Next { layer: next, offset: at, tunnel: kind } => {
                if kind != TUNNEL_NONE {
                    if tunnel.depth as usize >= MAX_ENCAPSULATIONS {
                        return Err(NotTcp::Error(ParseError::TooDeep));
                    }
                    // The outermost tunnel names the path (the interface's own side of it).
                    if tunnel.depth == 0 {
                        tunnel.kind = kind;
                        tunnel.outer_offset = offset as u16;
                    }
                    tunnel.depth += 1;
                }
                layer = next;
                offset = at;
            }
        }
    }
    Err(NotTcp::Error(ParseError::TooDeep))
}

/// Parse an Ethernet frame down to its TCP header (see [`parse_link`]).
#[inline(always)]
pub fn parse(pkt: &Cursor<'_>) -> Result<TcpPacket, NotTcp> {
    parse_link(pkt, ParseOptions::default())
}

/// Ethernet, up to two VLAN tags, and a PPPoE session header: the IP layer that follows.
#[inline(always)]
fn ethernet(pkt: &Cursor<'_>, start: usize) -> Result<Step, NotTcp> {
    use NotTcp::{Error, Protocol};
    let ethertype: &[u8; 2] = pkt.at(start + 12).ok_or(Error(ParseError::TruncatedEthernet))?;
    let mut ethertype = be16(*ethertype);
    let mut offset = start + 14;
    // Up to two tags (802.1ad outer, 802.1Q inner); each is 4 bytes: TCI, then the next EtherType.
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let inner: &[u8; 2] = pkt.at(offset + 2).ok_or(Error(ParseError::TruncatedVlan))?;
        ethertype = be16(*inner);
        offset += 4;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(Error(ParseError::TooManyVlans));
    }
    match ethertype {
        ETH_P_IPV4 => Ok(next(LAYER_IPV4, offset)),
        ETH_P_IPV6 => Ok(next(LAYER_IPV6, offset)),
        // A DSL gateway's WAN: version/type, code (0 in a session), session id, length, then the
        // PPP protocol. Its LCP and IPCP keep-alives are not IP and are counted as such.
        ETH_P_PPPOE_SESSION => {
            let ppp: &[u8; 8] = pkt.at(offset).ok_or(Error(ParseError::TruncatedEthernet))?;
            let layer = match be16([ppp[6], ppp[7]]) {
                PPP_IPV4 => LAYER_IPV4,
                PPP_IPV6 => LAYER_IPV6,
                _ => return Err(Protocol(PROTO_NON_IP)),
            };
            Ok(inner(TUNNEL_PPPOE, layer, offset + 8))
        }
        _ => Err(Protocol(PROTO_NON_IP)),
    }
}

/// What an IP header carries when it is a tunnel: the inner layer, or `None` for a protocol that
/// is no tunnel we open. GRE and UDP are looked into; the rest are IP in IP.
#[inline(always)]
fn tunnel_in(pkt: &Cursor<'_>, proto: u8, offset: usize, vxlan_port: u16) -> Result<Option<Step>, NotTcp> {
    use NotTcp::Error;
    let step = match proto {
        IPPROTO_IPIP => inner(TUNNEL_IPIP, LAYER_IPV4, offset),
        IPPROTO_IPV6 => inner(TUNNEL_IP6, LAYER_IPV6, offset),
        IPPROTO_GRE => {
            // Flags and version, then the protocol; checksum, key and sequence number follow when
            // their bits say so (RFC 2890). Version 1 is PPTP's, and routing (RFC 1701) is obsolete.
            let gre: &[u8; 4] = pkt.at(offset).ok_or(Error(ParseError::TruncatedIpv4))?;
            let flags = be16([gre[0], gre[1]]);
            if flags & (GRE_ROUTING | GRE_VERSION) != 0 {
                return Err(Error(ParseError::EncapsulatedGreOther));
            }
            let words = 1 + (flags & GRE_CSUM != 0) as usize + (flags & GRE_KEY != 0) as usize + (flags & GRE_SEQ != 0) as usize;
            let layer = match be16([gre[2], gre[3]]) {
                ETH_P_IPV4 => LAYER_IPV4,
                ETH_P_IPV6 => LAYER_IPV6,
                ETH_P_TEB => LAYER_ETHERNET,
                _ => return Err(Error(ParseError::EncapsulatedGreOther)),
            };
            inner(TUNNEL_GRE, layer, offset + words * 4)
        }
        IPPROTO_UDP => {
            let udp: &[u8; 4] = pkt.at(offset).ok_or(Error(ParseError::TruncatedIpv4))?;
            let (sport, dport) = (be16([udp[0], udp[1]]), be16([udp[2], udp[3]]));
            if dport == vxlan_port {
                // Flags (I: a VNI follows), reserved, VNI, reserved; then the inner Ethernet frame.
                return Ok(Some(inner(TUNNEL_VXLAN, LAYER_ETHERNET, offset + 16)));
            }
            if dport == UDP_GENEVE {
                return Err(Error(ParseError::EncapsulatedGeneve));
            }
            if sport == UDP_TEREDO || dport == UDP_TEREDO {
                return Err(Error(ParseError::EncapsulatedTeredo));
            }
            return Ok(None);
        }
        _ => return Ok(None),
    };
    Ok(Some(step))
}

#[inline(always)]
fn other_protocol(proto: u8) -> NotTcp {
    NotTcp::Protocol(match proto {
        IPPROTO_UDP => PROTO_UDP,
        IPPROTO_ICMP => PROTO_ICMP,
        IPPROTO_ICMPV6 => PROTO_ICMPV6,
        _ => PROTO_OTHER_IP,
    })
}

#[inline(always)]
fn parse_ipv4(pkt: &Cursor<'_>, offset: usize, vxlan_port: u16) -> Result<Step, NotTcp> {
    use NotTcp::Error;
    let ip: &Ipv4Header = pkt.at(offset).ok_or(Error(ParseError::TruncatedIpv4))?;
    let ihl = ((ip.version_ihl & 0x0f) as usize) * 4;
    let total_len = be16(ip.total_len) as usize;
    if ip.version_ihl >> 4 != 4 || ihl < 20 || total_len < ihl {
        return Err(Error(ParseError::BadIpv4Header));
    }
    // A non-zero fragment offset: this piece has no TCP header (nor a tunnel's inner header).
    if be16(ip.frag) & 0x1fff != 0 {
        return if ip.protocol == IPPROTO_TCP { Err(Error(ParseError::Fragment)) } else { Err(other_protocol(ip.protocol)) };
    }
    if ip.protocol != IPPROTO_TCP {
        return match tunnel_in(pkt, ip.protocol, offset + ihl, vxlan_port)? {
            Some(step) => Ok(step),
            None => Err(other_protocol(ip.protocol)),
        };
    }
    let ep = Endpoints { src: v4_bytes(ip.src), dst: v4_bytes(ip.dst), sport: 0, dport: 0, family: FAMILY_V4 };
    parse_tcp(pkt, offset + ihl, offset + total_len, ep, ip.ttl, total_len as u32).map(Step::Tcp)
}

#[inline(always)]
fn parse_ipv6(pkt: &Cursor<'_>, offset: usize, vxlan_port: u16) -> Result<Step, NotTcp> {
    use NotTcp::Error;
    let ip: &Ipv6Header = pkt.at(offset).ok_or(Error(ParseError::TruncatedIpv6))?;
    let payload_len = be16(ip.payload_len) as usize;
    let ip_end = offset + 40 + payload_len;
    let mut next = ip.next_header;
    let mut l4 = offset + 40;
    let mut found = false;
    for _ in 0..6 {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Next header, then length in 8-octet units not counting the first 8.
                let ext: &[u8; 2] = pkt.at(l4).ok_or(Error(ParseError::TruncatedIpv6Extension))?;
                next = ext[0];
                l4 += (ext[1] as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let ext: &[u8; 4] = pkt.at(l4).ok_or(Error(ParseError::TruncatedIpv6Extension))?;
                if be16([ext[2], ext[3]]) & 0xfff8 != 0 {
                    return Err(Error(ParseError::Fragment));
                }
                next = ext[0];
                l4 += 8;
            }
            _ => {
                found = true;
                break;
            }
        }
    }
    if !found && matches!(next, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT) {
        return Err(Error(ParseError::TooManyIpv6Extensions));
    }
    if next != IPPROTO_TCP {
        return match tunnel_in(pkt, next, l4, vxlan_port)? {
            Some(step) => Ok(step),
            None => Err(other_protocol(next)),
        };
    }
    let ep = Endpoints { src: ip.src, dst: ip.dst, sport: 0, dport: 0, family: FAMILY_V6 };
    parse_tcp(pkt, l4, ip_end, ep, ip.hop_limit, (payload_len + 40) as u32).map(Step::Tcp)
}

#[inline(always)]
fn parse_tcp(pkt: &Cursor<'_>, offset: usize, ip_end: usize, mut ep: Endpoints, ttl: u8, ip_len: u32) -> Result<TcpPacket, NotTcp> {
    use NotTcp::Error;
    let tcp: &TcpHeader = pkt.at(offset).ok_or(Error(ParseError::TruncatedTcp))?;
    let data_offset = ((tcp.offset_reserved >> 4) as usize) * 4;
    let payload_offset = offset + data_offset;
    ep.sport = be16(tcp.sport);
    ep.dport = be16(tcp.dport);
    if data_offset < 20 || payload_offset > ip_end {
        return Err(NotTcp::BadOffset { endpoints: ep, flags: tcp.flags });
    }
    let segment = Segment {
        flags: tcp.flags,
        ttl,
        hook: 0,
        seq: be32(tcp.seq),
        ack: be32(tcp.ack),
        payload_len: (ip_end - payload_offset) as u32,
        ip_len,
        now: 0,
    };
    Ok(TcpPacket { endpoints: ep, segment, payload_offset, window: be16(tcp.window), tunnel: Tunnel::default() })
}
