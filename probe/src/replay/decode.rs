//! A captured frame → what the kernel program would have parsed from it. Only the link layer is
//! ours: every link type is brought to an Ethernet frame (borrowed when it already is one), and the
//! kernel's own parser (`probe_common::parse`) does the rest, so replay and live parse alike.

use std::borrow::Cow;

use pcap_parser::Linktype;
use probe_common::{
    counters::ParseError,
    parse::{self, Cursor, NotTcp, TcpPacket},
};

/// BSD loopback: a 4-byte address family in the capturing host's byte order (DLT_NULL).
const LINKTYPE_NULL: i32 = 0;
/// OpenBSD loopback: the same in network byte order (DLT_LOOP).
const LINKTYPE_LOOP: i32 = 108;
/// Linux cooked capture v1 and v2.
const LINKTYPE_LINUX_SLL: i32 = 113;
const LINKTYPE_LINUX_SLL2: i32 = 276;
/// PPP (DLT_PPP: RFC 1662 framing, address and control bytes optional) and Cisco HDLC
/// (DLT_C_HDLC: address, control, then an EtherType), as routers' serial links are captured.
const LINKTYPE_PPP: i32 = 9;
const LINKTYPE_C_HDLC: i32 = 104;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
/// Raw IP link types: DLT_RAW on most systems, its OpenBSD number, and the per-version ones.
const RAW_IP: [i32; 5] = [101, 12, 14, 228, 229];
/// AF_INET everywhere; AF_INET6 as NetBSD/OpenBSD, FreeBSD and macOS number it.
const AF_INET: u32 = 2;
const AF_INET6: [u32; 3] = [24, 28, 30];

const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];

#[derive(Debug, thiserror::Error)]
#[error("link type {0} is not supported (Ethernet, Linux cooked SLL/SLL2, raw IP, PPP, Cisco HDLC and BSD loopback are)")]
pub struct UnsupportedLink(pub i32);

/// One frame as the kernel would have seen it.
pub struct Decoded<'a> {
    /// The frame as Ethernet, or `None` when its link header is cut short.
    pub ethernet: Option<Cow<'a, [u8]>>,
}

impl Decoded<'_> {
    /// The kernel parser's verdict on the frame.
    pub fn parse(&self) -> Result<TcpPacket, NotTcp> {
        self.parse_with(parse::ParseOptions::default())
    }

    /// The same with the site's settings (its VXLAN port).
    pub fn parse_with(&self, opts: parse::ParseOptions) -> Result<TcpPacket, NotTcp> {
        match &self.ethernet {
            Some(eth) => parse::parse_link(&Cursor::from_slice(eth), opts),
            None => Err(NotTcp::Error(ParseError::TruncatedEthernet)),
        }
    }

    /// The TCP payload bytes present in the capture.
    pub fn payload(&self, tcp: &TcpPacket) -> &[u8] {
        self.ethernet.as_deref().and_then(|eth| eth.get(tcp.payload_offset..)).unwrap_or(&[])
    }
}

/// Bring `data` of link type `link` to an Ethernet frame.
pub fn decode(link: Linktype, data: &[u8]) -> Result<Decoded<'_>, UnsupportedLink> {
    let ethertype = match link.0 {
        1 => return Ok(Decoded { ethernet: Some(Cow::Borrowed(data)) }),
        LINKTYPE_LINUX_SLL => data.get(14..16).map(|t| ([t[0], t[1]], 16)),
        LINKTYPE_LINUX_SLL2 => data.get(0..2).map(|t| ([t[0], t[1]], 20)),
        l if RAW_IP.contains(&l) => data.first().map(|b| (if b >> 4 == 6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 }, 0)),
        LINKTYPE_C_HDLC => data.get(2..4).map(|t| ([t[0], t[1]], 4)),
        LINKTYPE_PPP => ppp(data),
        l @ (LINKTYPE_NULL | LINKTYPE_LOOP) => data.get(0..4).map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            // DLT_NULL is in the byte order of the host that captured; try both.
            let family = if l == LINKTYPE_LOOP { u32::from_be_bytes(b) } else { u32::from_le_bytes(b).min(u32::from_be_bytes(b)) };
            let ethertype = match family {
                AF_INET => ETHERTYPE_IPV4,
                f if AF_INET6.contains(&f) => ETHERTYPE_IPV6,
                // Not IP: the parser counts it as such.
                _ => [0, 0],
            };
            (ethertype, 4)
        }),
        other => return Err(UnsupportedLink(other)),
    };
    let Some((ethertype, header)) = ethertype else { return Ok(Decoded { ethernet: None }) };
    let l3 = data.get(header..).unwrap_or(&[]);
    let mut frame = Vec::with_capacity(14 + l3.len());
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, ethertype[0], ethertype[1]]);
    frame.extend_from_slice(l3);
    Ok(Decoded { ethernet: Some(Cow::Owned(frame)) })
}

/// A PPP frame's protocol as an EtherType, and where the packet starts: `ff 03` (address and
/// control) may be left out, and a protocol field with an odd first byte is one byte long (RFC 1661).
fn ppp(data: &[u8]) -> Option<([u8; 2], usize)> {
    let start = if data.starts_with(&[0xff, 0x03]) { 2 } else { 0 };
    let first = *data.get(start)?;
    let (protocol, header) =
        if first & 1 == 1 { (first as u16, start + 1) } else { (u16::from_be_bytes([first, *data.get(start + 1)?]), start + 2) };
    let ethertype = match protocol {
        PPP_IPV4 => ETHERTYPE_IPV4,
        PPP_IPV6 => ETHERTYPE_IPV6,
        // LCP, IPCP and the rest: not IP, counted as such.
        _ => [0, 0],
    };
    Some((ethertype, header))
}

#[cfg(test)]
mod tests {
    use probe_common::flow::FAMILY_V4;

    use super::*;

    fn tcp_v4(flags: u8, payload: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [3; 6]).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 61).tcp(1234, 80, 7, 1024);
        let b = match flags {
            0x12 => b.syn().ack(9),
            _ => b.rst().ack(9),
        };
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn ethernet_tcp_gives_the_kernels_fields() {
        let frame = tcp_v4(0x14, b"Go away");
        let d = decode(Linktype::ETHERNET, &frame).unwrap();
        let tcp = d.parse().unwrap();
        let (e, s) = (&tcp.endpoints, &tcp.segment);
        assert_eq!((e.sport, e.dport, e.family), (1234, 80, FAMILY_V4));
        assert_eq!((s.flags, s.ttl, s.seq, s.ack, s.payload_len, s.ip_len), (0x14, 61, 7, 9, 7, 47));
        assert_eq!(d.payload(&tcp), b"Go away");
    }

    #[test]
    fn raw_ip_cooked_and_loopback_frames_decode_alike() {
        let frame = tcp_v4(0x12, b"");
        let raw = &frame[14..];
        let with_header = |h: &[u8]| [h, raw].concat();
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&ETHERTYPE_IPV4);
        let mut sll2 = ETHERTYPE_IPV4.to_vec();
        sll2.extend_from_slice(&[0; 18]);
        for (lt, data) in [
            (101, raw.to_vec()),
            (LINKTYPE_LINUX_SLL, with_header(&sll)),
            (LINKTYPE_LINUX_SLL2, with_header(&sll2)),
            (LINKTYPE_NULL, with_header(&2u32.to_le_bytes())),
            (LINKTYPE_NULL, with_header(&2u32.to_be_bytes())),
            (LINKTYPE_LOOP, with_header(&2u32.to_be_bytes())),
            (LINKTYPE_C_HDLC, with_header(&[0x0f, 0x00, 0x08, 0x00])),
            (LINKTYPE_PPP, with_header(&[0xff, 0x03, 0x00, 0x21])),
            // Address and control left out, and the protocol compressed to one byte.
            (LINKTYPE_PPP, with_header(&[0x21])),
        ] {
            let tcp = decode(Linktype(lt), &data).unwrap().parse().unwrap_or_else(|e| panic!("tcp via {lt}: {e:?}"));
            assert_eq!(tcp.segment.flags, 0x12, "via {lt}");
        }
    }

    #[test]
    fn truncated_and_odd_frames_are_counted_not_fatal() {
        let frame = tcp_v4(0x12, b"");
        let err = |lt: i32, data: &[u8]| decode(Linktype(lt), data).unwrap().parse().err();
        assert_eq!(err(1, &frame[..14 + 20 + 8]), Some(NotTcp::Error(ParseError::TruncatedTcp)));
        assert_eq!(err(1, &frame[..5]), Some(NotTcp::Error(ParseError::TruncatedEthernet)));
        assert_eq!(err(LINKTYPE_NULL, &[2, 0]), Some(NotTcp::Error(ParseError::TruncatedEthernet)));
        assert!(matches!(err(LINKTYPE_NULL, &[7, 0, 0, 0, 1, 2]), Some(NotTcp::Protocol(_))), "not IP");
        assert!(decode(Linktype(147), &frame).is_err(), "unknown link type is an error for the file");
        assert!(matches!(err(LINKTYPE_PPP, &[0xff, 0x03, 0xc0, 0x21, 1, 1, 0, 4]), Some(NotTcp::Protocol(_))), "LCP is not IP");
    }
}
