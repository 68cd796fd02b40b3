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

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
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
}

/// Why a packet is not a TCP segment we count per flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTcp {
    /// A well-formed packet of another protocol (a `PROTO_*` slot).
    Protocol(usize),
    /// Malformed or truncated.
    Error(ParseError),
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

/// Parse a frame down to its TCP header.
#[inline(always)]
pub fn parse(pkt: &Cursor<'_>) -> Result<TcpPacket, NotTcp> {
    use NotTcp::{Error, Protocol};
    let ethertype: &[u8; 2] = pkt.at(12).ok_or(Error(ParseError::TruncatedEthernet))?;
    let mut ethertype = be16(*ethertype);
    let mut offset = 14;
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
        ETH_P_IPV4 => parse_ipv4(pkt, offset),
        ETH_P_IPV6 => parse_ipv6(pkt, offset),
        _ => Err(Protocol(PROTO_NON_IP)),
    }
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
fn parse_ipv4(pkt: &Cursor<'_>, offset: usize) -> Result<TcpPacket, NotTcp> {
    use NotTcp::Error;
    let ip: &Ipv4Header = pkt.at(offset).ok_or(Error(ParseError::TruncatedIpv4))?;
    let ihl = ((ip.version_ihl & 0x0f) as usize) * 4;
    let total_len = be16(ip.total_len) as usize;
    if ip.version_ihl >> 4 != 4 || ihl < 20 || total_len < ihl {
        return Err(Error(ParseError::BadIpv4Header));
    }
    if ip.protocol != IPPROTO_TCP {
        return Err(other_protocol(ip.protocol));
    }
    // A non-zero fragment offset: this piece has no TCP header.
    if be16(ip.frag) & 0x1fff != 0 {
        return Err(Error(ParseError::Fragment));
    }
    let ep = Endpoints { src: v4_bytes(ip.src), dst: v4_bytes(ip.dst), sport: 0, dport: 0, family: FAMILY_V4 };
    parse_tcp(pkt, offset + ihl, offset + total_len, ep, ip.ttl, total_len as u32)
}

#[inline(always)]
fn parse_ipv6(pkt: &Cursor<'_>, offset: usize) -> Result<TcpPacket, NotTcp> {
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
        return Err(other_protocol(next));
    }
    let ep = Endpoints { src: ip.src, dst: ip.dst, sport: 0, dport: 0, family: FAMILY_V6 };
    parse_tcp(pkt, l4, ip_end, ep, ip.hop_limit, (payload_len + 40) as u32)
}

#[inline(always)]
fn parse_tcp(pkt: &Cursor<'_>, offset: usize, ip_end: usize, mut ep: Endpoints, ttl: u8, ip_len: u32) -> Result<TcpPacket, NotTcp> {
    use NotTcp::Error;
    let tcp: &TcpHeader = pkt.at(offset).ok_or(Error(ParseError::TruncatedTcp))?;
    let data_offset = ((tcp.offset_reserved >> 4) as usize) * 4;
    let payload_offset = offset + data_offset;
    if data_offset < 20 || payload_offset > ip_end {
        return Err(Error(ParseError::BadTcpOffset));
    }
    ep.sport = be16(tcp.sport);
    ep.dport = be16(tcp.dport);
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
    Ok(TcpPacket { endpoints: ep, segment, payload_offset, window: be16(tcp.window) })
}
