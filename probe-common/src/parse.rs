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
const ETH_P_MPLS_UC: u16 = 0x8847;
const ETH_P_MPLS_MC: u16 = 0x8848;
/// Cisco FabricPath: a 16-byte outer header (addresses, this EtherType, FTag and TTL) before the
/// classic Ethernet frame.
const ETH_P_FABRICPATH: u16 = 0x8903;
const FABRICPATH_HEADER: usize = 16;
/// MPLS labels read before the IP packet: a provider's stack (transport, VPN, entropy) is two or
/// three deep.
const MPLS_LABELS_MAX: usize = 4;
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

/// Where a frame's innermost IP packet is, as [`locate`] found it: the IP header's offset, the
/// TCP header's, the IP version, and the tunnel that carried it. Plain integers in one word: the
/// kernel passes it through memory, so that the verifier walks what follows once, whichever way
/// the packet came in (each tunnel is another way, and each would multiply that walk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located(pub u64);

/// Offsets are at most [`MAX_HEADER_OFFSET`] (1024): 11 bits each.
const OFFSET_BITS: u32 = 11;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

#[inline(always)]
fn fit(offset: usize) -> u64 {
    if offset > MAX_HEADER_OFFSET { OFFSET_MASK } else { offset as u64 }
}

impl Located {
    /// `tunnel`: bits 24 and up, as [`enter`] builds them. An offset past [`MAX_HEADER_OFFSET`]
    /// is kept as the largest that fits, which `Cursor::at` refuses as it refused the original.
    #[inline(always)]
    fn new(ip: usize, l4: usize, v6: bool, tunnel: u64) -> Located {
        Located(fit(ip) | fit(l4) << 11 | (v6 as u64) << 22 | tunnel)
    }

    #[inline(always)]
    fn ip(self) -> usize {
        (self.0 & OFFSET_MASK) as usize
    }

    #[inline(always)]
    fn l4(self) -> usize {
        (self.0 >> 11 & OFFSET_MASK) as usize
    }

    #[inline(always)]
    fn v6(self) -> bool {
        self.0 >> 22 & 1 == 1
    }

    /// Whether a tunnel carried the packet.
    #[inline(always)]
    pub fn in_tunnel(self) -> bool {
        self.0 & TUNNEL_BITS != 0
    }

    /// Where the innermost IP header starts.
    #[inline(always)]
    pub fn ip_offset(self) -> usize {
        self.ip()
    }

    #[inline(always)]
    pub fn tunnel(self) -> Tunnel {
        Tunnel { kind: (self.0 >> 24 & 0xf) as u8, depth: (self.0 >> 28 & 0xf) as u8, outer_offset: (self.0 >> 32 & OFFSET_MASK) as u16 }
    }
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
/// what carried it. [`locate`], then [`parse_at`].
#[inline(always)]
pub fn parse_link(pkt: &Cursor<'_>, opts: ParseOptions) -> Result<TcpPacket, NotTcp> {
    parse_at(pkt, locate(pkt, opts, &mut |state| state)?)
}

/// Parse an Ethernet frame down to its TCP header (see [`parse_link`]).
#[inline(always)]
pub fn parse(pkt: &Cursor<'_>) -> Result<TcpPacket, NotTcp> {
    parse_link(pkt, ParseOptions::default())
}

/// Walk the headers to the innermost IP packet carrying TCP, opening tunnels on the way. `link`
/// says where the frame starts: Ethernet, or IP on an L3 device (`ppp0`, `gre0`, `wg0`), whose
/// first nibble says which version. Anything else is a protocol or a parse error, as before.
///
/// `forget` receives the walk's state (one word) before each IP layer inside a tunnel, and what was
/// found at the end, and returns it: the kernel
/// passes it through memory there, so that the verifier walks each layer once however many ways
/// led to it (VLANs, PPPoE, IPv6 extension headers, each tunnel) instead of once per way, which
/// multiplies past its limit. Userspace passes it back unchanged.
///
/// The steps below return words, not `Result`s of tuples: an `Err` leaves a tuple's registers
/// undefined, LLVM spills them anyway, and the verifier refuses reading a register never written.
#[inline(always)]
pub fn locate(pkt: &Cursor<'_>, opts: ParseOptions, forget: &mut impl FnMut(u64) -> u64) -> Result<Located, NotTcp> {
    let mut state = match opts.link {
        Link::Ethernet => ethernet(pkt, 0, 0),
        // The version nibble, read with the smallest IP header around it (a one-byte read at the
        // frame's start compiles to a 32-bit pointer comparison the verifier cannot follow).
        Link::Ip => match pkt.at::<[u8; 20]>(0) {
            Some(first) => Located::new(0, 0, first[0] >> 4 == 6, 0).0,
            None => failed(ParseError::TruncatedIpv4),
        },
    };
    for _ in 0..=MAX_ENCAPSULATIONS {
        if state & FAILED != 0 {
            return Err(not_tcp(state));
        }
        // Outside any tunnel, the ways in are few (VLAN tags, the IP version) and the walk of one
        // IP layer per way is small: the round trip through memory is for tunnels' inner layers.
        let mut at = Located(if state & (TUNNEL_BITS | WANDERED) == 0 { state } else { forget(state) });
        if at.0 & MPLS_NEXT != 0 {
            let found = mpls(pkt, at.ip(), at.0 & TUNNEL_BITS & !MPLS_NEXT);
            if found & FAILED != 0 {
                return Err(not_tcp(found));
            }
            at = Located(forget(found));
        }
        let (ip, v6) = (at.ip(), at.v6());
        let upper = if v6 { ipv6_upper(pkt, ip) } else { ipv4_upper(pkt, ip) };
        if upper & FAILED != 0 {
            return Err(not_tcp(upper));
        }
        let (proto, l4) = ((upper >> 16) as u8, (upper & 0xffff) as usize);
        if proto == IPPROTO_TCP {
            return Ok(Located::new(ip, l4, v6, at.0 & TUNNEL_BITS));
        }
        let found = tunnel_in(pkt, proto, l4, opts.vxlan_port);
        if found & FAILED != 0 {
            return Err(not_tcp(found));
        }
        if found == 0 {
            return Err(other_protocol(proto));
        }
        let (kind, inner, next) = ((found >> 32) as u8, (found >> 16) as u8, (found & 0xffff) as usize);
        let tunnel = enter(at.0 & TUNNEL_BITS, kind, ip);
        state = if tunnel & FAILED != 0 {
            tunnel
        } else if inner == LAYER_ETHERNET {
            ethernet(pkt, next, tunnel)
        } else {
            Located::new(next, 0, inner == LAYER_IPV6, tunnel).0
        };
    }
    Err(if state & FAILED != 0 { not_tcp(state) } else { NotTcp::Error(ParseError::TooDeep) })
}

/// A step's failure: this bit, and the reason (a `ParseError`) or, with [`FAILED_PROTOCOL`], the
/// protocol slot of a packet that is well-formed but not TCP.
const FAILED: u64 = 1 << 63;
const FAILED_PROTOCOL: u64 = 1 << 62;
/// The tunnel's bits of a [`Located`] word.
const TUNNEL_BITS: u64 = !((1 << 24) - 1);
/// A [`Located`] word's mark for an IP layer that the Ethernet walk reached one of several ways
/// (behind FabricPath's header, or one to four MPLS labels): like a tunnel's, its word goes
/// through `forget`, or each way (a known offset to the verifier) would be walked to the end.
const WANDERED: u64 = 1 << 23;
/// A [`Located`] word's mark for an MPLS label stack at its IP offset, still to be read: `locate`
/// reads it after `forget`, so the label walk is verified once, not once per way to it (VLAN
/// tags, FabricPath, each tunnel's inner Ethernet). Above the tunnel's outer offset, below the
/// failure bits; cleared before anything else reads the word.
const MPLS_NEXT: u64 = 1 << 47;

#[inline(always)]
fn failed(reason: ParseError) -> u64 {
    FAILED | reason as u64
}

#[inline(always)]
fn failed_protocol(slot: usize) -> u64 {
    FAILED | FAILED_PROTOCOL | slot as u64
}

#[inline(always)]
fn not_tcp(word: u64) -> NotTcp {
    if word & FAILED_PROTOCOL != 0 {
        NotTcp::Protocol((word & 0xff) as usize)
    } else {
        NotTcp::Error(ParseError::from_index((word & 0xff) as u8))
    }
}

#[inline(always)]
fn protocol_slot(proto: u8) -> usize {
    match proto {
        IPPROTO_UDP => PROTO_UDP,
        IPPROTO_ICMP => PROTO_ICMP,
        IPPROTO_ICMPV6 => PROTO_ICMPV6,
        _ => PROTO_OTHER_IP,
    }
}

#[inline(always)]
fn other_protocol(proto: u8) -> NotTcp {
    NotTcp::Protocol(protocol_slot(proto))
}

/// One more tunnel around the packet (`tunnel`: a [`Located`]'s tunnel bits); the outermost one
/// names the path.
#[inline(always)]
fn enter(tunnel: u64, kind: u8, outer: usize) -> u64 {
    let depth = tunnel >> 28 & 0xf;
    if depth as usize >= MAX_ENCAPSULATIONS {
        return failed(ParseError::TooDeep);
    }
    let named = if depth == 0 { (kind as u64 & 0xf) << 24 | (outer as u64 & OFFSET_MASK) << 32 } else { tunnel & !(0xf << 28) };
    named | (depth + 1) << 28
}

/// Ethernet at `start`, up to two VLAN tags, and a PPPoE session header: the IP layer that follows
/// as a [`Located`] word (with `tunnel`, and PPPoE added to it), or a failure.
#[inline(always)]
fn ethernet(pkt: &Cursor<'_>, start: usize, tunnel: u64) -> u64 {
    let Some(ethertype) = pkt.at::<[u8; 2]>(start + 12) else { return failed(ParseError::TruncatedEthernet) };
    let mut ethertype = be16(*ethertype);
    let mut offset = start + 14;
    let mut wandered = 0;
    // A data-centre fabric's frame carries the host's Ethernet frame whole after its own header.
    if ethertype == ETH_P_FABRICPATH {
        let Some(inner) = pkt.at::<[u8; 2]>(start + FABRICPATH_HEADER + 12) else { return failed(ParseError::TruncatedEthernet) };
        ethertype = be16(*inner);
        offset = start + FABRICPATH_HEADER + 14;
        wandered = WANDERED;
    }
    // Up to two tags (802.1ad outer, 802.1Q inner); each is 4 bytes: TCI, then the next EtherType.
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(inner) = pkt.at::<[u8; 2]>(offset + 2) else { return failed(ParseError::TruncatedVlan) };
        ethertype = be16(*inner);
        offset += 4;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return failed(ParseError::TooManyVlans);
    }
    if ethertype == ETH_P_MPLS_UC || ethertype == ETH_P_MPLS_MC {
        return Located::new(offset, 0, false, tunnel).0 | WANDERED | MPLS_NEXT;
    }
    match ethertype {
        ETH_P_IPV4 => Located::new(offset, 0, false, tunnel).0 | wandered,
        ETH_P_IPV6 => Located::new(offset, 0, true, tunnel).0 | wandered,
        // A DSL gateway's WAN: version/type, code (0 in a session), session id, length, then the
        // PPP protocol. Its LCP and IPCP keep-alives are not IP and are counted as such.
        ETH_P_PPPOE_SESSION => {
            let Some(ppp) = pkt.at::<[u8; 8]>(offset) else { return failed(ParseError::TruncatedEthernet) };
            // A protocol field whose first byte is odd is one byte long (RFC 1661's compression,
            // which some peers use although RFC 2516 advises against it).
            let (protocol, header) = if ppp[6] & 1 == 1 { (ppp[6] as u16, 7) } else { (be16([ppp[6], ppp[7]]), 8) };
            let v6 = match protocol {
                PPP_IPV4 => false,
                PPP_IPV6 => true,
                _ => return failed_protocol(PROTO_NON_IP),
            };
            let tunnel = enter(tunnel, TUNNEL_PPPOE, start);
            if tunnel & FAILED != 0 {
                return tunnel;
            }
            Located::new(offset + header, 0, v6, tunnel).0
        }
        _ => failed_protocol(PROTO_NON_IP),
    }
}

/// An MPLS label stack at `offset` (a provider's link, or a capture of one): labels up to the one
/// marked bottom of stack, then the IP packet, whose version nibble says which. A stack carrying
/// anything else (a pseudowire's Ethernet, its control word) is not IP.
#[inline(always)]
fn mpls(pkt: &Cursor<'_>, mut offset: usize, tunnel: u64) -> u64 {
    for _ in 0..MPLS_LABELS_MAX {
        let Some(label) = pkt.at::<[u8; 4]>(offset) else { return failed(ParseError::TruncatedEthernet) };
        offset += 4;
        if label[2] & 1 != 0 {
            // The smallest IP header, read whole (see `locate` on one-byte reads).
            return match pkt.at::<[u8; 20]>(offset) {
                Some(ip) if ip[0] >> 4 == 4 => Located::new(offset, 0, false, tunnel).0 | WANDERED,
                Some(ip) if ip[0] >> 4 == 6 => Located::new(offset, 0, true, tunnel).0 | WANDERED,
                Some(_) => failed_protocol(PROTO_NON_IP),
                None => failed(ParseError::TruncatedIpv4),
            };
        }
    }
    failed(ParseError::TooDeep)
}

/// What an IP packet of protocol `proto` carries at `offset` when it is a tunnel we open, as
/// `kind << 32 | inner layer << 16 | inner offset`; 0 for no tunnel, or a failure. GRE and UDP are
/// looked into; the rest are IP in IP.
#[inline(always)]
fn tunnel_in(pkt: &Cursor<'_>, proto: u8, offset: usize, vxlan_port: u16) -> u64 {
    let found = |kind: u8, layer: u8, at: usize| (kind as u64) << 32 | (layer as u64) << 16 | (at as u64 & 0xffff);
    match proto {
        IPPROTO_IPIP => found(TUNNEL_IPIP, LAYER_IPV4, offset),
        IPPROTO_IPV6 => found(TUNNEL_IP6, LAYER_IPV6, offset),
        IPPROTO_GRE => {
            // Flags and version, then the protocol; checksum, key and sequence number follow when
            // their bits say so (RFC 2890). Version 1 is PPTP's, and routing (RFC 1701) is obsolete.
            let Some(gre) = pkt.at::<[u8; 4]>(offset) else { return failed(ParseError::TruncatedIpv4) };
            let flags = be16([gre[0], gre[1]]);
            if flags & (GRE_ROUTING | GRE_VERSION) != 0 {
                return failed(ParseError::EncapsulatedGreOther);
            }
            let words = 1 + (flags & GRE_CSUM != 0) as usize + (flags & GRE_KEY != 0) as usize + (flags & GRE_SEQ != 0) as usize;
            let layer = match be16([gre[2], gre[3]]) {
                ETH_P_IPV4 => LAYER_IPV4,
                ETH_P_IPV6 => LAYER_IPV6,
                ETH_P_TEB => LAYER_ETHERNET,
                _ => return failed(ParseError::EncapsulatedGreOther),
            };
            found(TUNNEL_GRE, layer, offset + words * 4)
        }
        IPPROTO_UDP => {
            let Some(udp) = pkt.at::<[u8; 4]>(offset) else { return failed(ParseError::TruncatedIpv4) };
            let (sport, dport) = (be16([udp[0], udp[1]]), be16([udp[2], udp[3]]));
            if dport == vxlan_port {
                // UDP, then VXLAN's flags, reserved, VNI and reserved: the inner Ethernet frame.
                found(TUNNEL_VXLAN, LAYER_ETHERNET, offset + 16)
            } else if dport == UDP_GENEVE {
                failed(ParseError::EncapsulatedGeneve)
            } else if sport == UDP_TEREDO || dport == UDP_TEREDO {
                failed(ParseError::EncapsulatedTeredo)
            } else {
                0
            }
        }
        _ => 0,
    }
}

/// An IPv4 header at `offset`, checked: `protocol << 16 | payload offset`, or a failure.
#[inline(always)]
fn ipv4_upper(pkt: &Cursor<'_>, offset: usize) -> u64 {
    let Some(ip) = pkt.at::<Ipv4Header>(offset) else { return failed(ParseError::TruncatedIpv4) };
    let ihl = ((ip.version_ihl & 0x0f) as usize) * 4;
    let total_len = be16(ip.total_len) as usize;
    // A total length of 0 is a packet too large to say its own (BIG TCP's GSO packets of over
    // 64 KiB, which an egress hook sees whole, and what a capture on a sending host with TSO holds
    // before the NIC fills the length in): its length is the frame's, as the kernel reads it.
    if ip.version_ihl >> 4 != 4 || ihl < 20 || (total_len < ihl && total_len != 0) {
        return failed(ParseError::BadIpv4Header);
    }
    // A non-zero fragment offset: this piece has no TCP header (nor a tunnel's inner header).
    if be16(ip.frag) & 0x1fff != 0 {
        return if ip.protocol == IPPROTO_TCP { failed(ParseError::Fragment) } else { failed_protocol(protocol_slot(ip.protocol)) };
    }
    (ip.protocol as u64) << 16 | ((offset + ihl) as u64 & 0xffff)
}

/// An IPv6 header at `offset` and its extension headers: `protocol << 16 | upper-layer offset`,
/// or a failure.
#[inline(always)]
fn ipv6_upper(pkt: &Cursor<'_>, offset: usize) -> u64 {
    let Some(ip) = pkt.at::<Ipv6Header>(offset) else { return failed(ParseError::TruncatedIpv6) };
    let mut next = ip.next_header;
    let mut l4 = offset + 40;
    let mut found = false;
    for _ in 0..6 {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Next header, then length in 8-octet units not counting the first 8.
                let Some(ext) = pkt.at::<[u8; 2]>(l4) else { return failed(ParseError::TruncatedIpv6Extension) };
                next = ext[0];
                l4 += (ext[1] as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some(ext) = pkt.at::<[u8; 4]>(l4) else { return failed(ParseError::TruncatedIpv6Extension) };
                if be16([ext[2], ext[3]]) & 0xfff8 != 0 {
                    return failed(ParseError::Fragment);
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
        return failed(ParseError::TooManyIpv6Extensions);
    }
    (next as u64) << 16 | (l4 as u64 & 0xffff)
}

/// The segment at what [`locate`] found: the innermost IP header's addresses, TTL and lengths, and
/// the TCP header.
#[inline(always)]
pub fn parse_at(pkt: &Cursor<'_>, at: Located) -> Result<TcpPacket, NotTcp> {
    use NotTcp::Error;
    let (ip, l4) = (at.ip(), at.l4());
    let mut tcp = if at.v6() {
        let h: &Ipv6Header = pkt.at(ip).ok_or(Error(ParseError::TruncatedIpv6))?;
        let payload_len = be16(h.payload_len) as usize;
        let ep = Endpoints { src: h.src, dst: h.dst, sport: 0, dport: 0, family: FAMILY_V6 };
        parse_tcp(pkt, l4, ip + 40 + payload_len, ep, (h.hop_limit, 0), (payload_len + 40) as u32)?
    } else {
        let h: &Ipv4Header = pkt.at(ip).ok_or(Error(ParseError::TruncatedIpv4))?;
        // 0: the rest of the frame (see `ipv4_upper`).
        let total_len = match be16(h.total_len) as usize {
            0 => pkt.len().saturating_sub(ip),
            n => n,
        };
        let ep = Endpoints { src: v4_bytes(h.src), dst: v4_bytes(h.dst), sport: 0, dport: 0, family: FAMILY_V4 };
        parse_tcp(pkt, l4, ip + total_len, ep, (h.ttl, be16(h.id)), total_len as u32)?
    };
    tcp.tunnel = at.tunnel();
    Ok(tcp)
}

#[inline(always)]
/// `ttl_id`: the IP header's TTL (hop limit) and IPv4 identification (0 for IPv6).
fn parse_tcp(
    pkt: &Cursor<'_>,
    offset: usize,
    ip_end: usize,
    mut ep: Endpoints,
    ttl_id: (u8, u16),
    ip_len: u32,
) -> Result<TcpPacket, NotTcp> {
    let (ttl, ip_id) = ttl_id;
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
        ip_id,
        hook: 0,
        seq: be32(tcp.seq),
        ack: be32(tcp.ack),
        payload_len: (ip_end - payload_offset) as u32,
        ip_len,
        now: 0,
    };
    Ok(TcpPacket { endpoints: ep, segment, payload_offset, window: be16(tcp.window), tunnel: Tunnel::default() })
}
