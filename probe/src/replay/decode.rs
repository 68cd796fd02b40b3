//! A captured frame → what the kernel program would have parsed from it: a TCP segment with its
//! endpoints, another protocol, or a parse-error reason. Headers are sliced with etherparse (lax,
//! so a short snaplen still yields the headers); lengths come from the IP header, as in the kernel,
//! so a truncated capture still counts the payload the packet really had.

use etherparse::{EtherType, IpNumber, LaxNetSlice, LaxSlicedPacket, TcpSlice};
use pcap_parser::Linktype;
use probe_common::{
    counters::{PROTO_ICMP, PROTO_ICMPV6, PROTO_NON_IP, PROTO_OTHER_IP, PROTO_UDP, ParseError},
    flow::{Endpoints, FAMILY_V4, FAMILY_V6, Segment},
};

/// Linux cooked capture v2 (not in every crate's table).
const LINKTYPE_LINUX_SLL2: i32 = 276;
/// Raw IP link types: DLT_RAW on most systems, its OpenBSD number, and the per-version ones.
const RAW_IP: [i32; 5] = [101, 12, 14, 228, 229];

pub enum Decoded<'a> {
    Tcp { endpoints: Endpoints, segment: Segment, window: u16, payload: &'a [u8] },
    Protocol(usize),
    Error(ParseError),
}

#[derive(Debug, thiserror::Error)]
#[error("link type {0} is not supported (Ethernet, Linux cooked SLL/SLL2 and raw IP are)")]
pub struct UnsupportedLink(pub i32);

/// Where the network layer starts, or how to slice it.
fn slice(link: Linktype, data: &[u8]) -> Result<Option<LaxSlicedPacket<'_>>, UnsupportedLink> {
    Ok(match link.0 {
        1 => LaxSlicedPacket::from_ethernet(data).ok(),
        113 => {
            (data.len() >= 16).then(|| LaxSlicedPacket::from_ether_type(EtherType(u16::from_be_bytes([data[14], data[15]])), &data[16..]))
        }
        LINKTYPE_LINUX_SLL2 => {
            (data.len() >= 20).then(|| LaxSlicedPacket::from_ether_type(EtherType(u16::from_be_bytes([data[0], data[1]])), &data[20..]))
        }
        l if RAW_IP.contains(&l) => LaxSlicedPacket::from_ip(data).ok(),
        other => return Err(UnsupportedLink(other)),
    })
}

/// An Ethernet frame carrying the same network layer (for feeding the kernel program).
pub fn to_ethernet(link: Linktype, data: &[u8]) -> Result<Option<Vec<u8>>, UnsupportedLink> {
    let (ethertype, l3) = match link.0 {
        1 => return Ok(Some(data.to_vec())),
        113 if data.len() >= 16 => ([data[14], data[15]], &data[16..]),
        LINKTYPE_LINUX_SLL2 if data.len() >= 20 => ([data[0], data[1]], &data[20..]),
        l if RAW_IP.contains(&l) && !data.is_empty() => (if data[0] >> 4 == 6 { [0x86, 0xdd] } else { [0x08, 0x00] }, data),
        113 | LINKTYPE_LINUX_SLL2 => return Ok(None),
        l if RAW_IP.contains(&l) => return Ok(None),
        other => return Err(UnsupportedLink(other)),
    };
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, ethertype[0], ethertype[1]];
    f.extend_from_slice(l3);
    Ok(Some(f))
}

fn other(proto: IpNumber) -> usize {
    match proto {
        IpNumber::UDP => PROTO_UDP,
        IpNumber::ICMP => PROTO_ICMP,
        IpNumber::IPV6_ICMP => PROTO_ICMPV6,
        _ => PROTO_OTHER_IP,
    }
}

/// Decode one frame the way the kernel program parses it.
pub fn decode(link: Linktype, data: &[u8]) -> Result<Decoded<'_>, UnsupportedLink> {
    use Decoded::{Error, Protocol};
    let Some(p) = slice(link, data)? else { return Ok(Error(ParseError::TruncatedEthernet)) };
    if p.link_exts.len() > 2 {
        return Ok(Error(ParseError::TooManyVlans));
    }
    let (mut endpoints, ttl, ip_len, l4_start, payload) = match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let pl = ip.payload();
            if pl.ip_number != IpNumber::TCP {
                return Ok(Protocol(other(pl.ip_number)));
            }
            if h.fragments_offset().value() != 0 {
                return Ok(Error(ParseError::Fragment));
            }
            let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
            src[..4].copy_from_slice(&h.source());
            dst[..4].copy_from_slice(&h.destination());
            let ep = Endpoints { src, dst, sport: 0, dport: 0, family: FAMILY_V4 };
            (ep, h.ttl(), h.total_len() as usize, h.ihl() as usize * 4, pl.payload)
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let pl = ip.payload();
            if pl.fragmented {
                return Ok(Error(ParseError::Fragment));
            }
            if pl.ip_number != IpNumber::TCP {
                return Ok(Protocol(other(pl.ip_number)));
            }
            let ep = Endpoints { src: h.source(), dst: h.destination(), sport: 0, dport: 0, family: FAMILY_V6 };
            (ep, h.hop_limit(), h.payload_length() as usize + 40, 40 + ip.extensions().slice().len(), pl.payload)
        }
        Some(LaxNetSlice::Arp(_)) | None => {
            return Ok(match p.stop_err {
                Some((_, etherparse::err::Layer::Ipv4Header)) => Error(ParseError::TruncatedIpv4),
                Some((_, etherparse::err::Layer::Ipv6Header)) => Error(ParseError::TruncatedIpv6),
                Some((_, etherparse::err::Layer::VlanHeader)) => Error(ParseError::TruncatedVlan),
                Some(_) if p.net.is_none() && is_ip(&p) => Error(ParseError::BadIpv4Header),
                _ => Protocol(PROTO_NON_IP),
            });
        }
    };
    let tcp = match TcpSlice::from_slice(payload) {
        Ok(t) => t,
        Err(etherparse::err::tcp::HeaderSliceError::Len(_)) => return Ok(Error(ParseError::TruncatedTcp)),
        Err(_) => return Ok(Error(ParseError::BadTcpOffset)),
    };
    let header_end = l4_start + tcp.header_len();
    if header_end > ip_len {
        return Ok(Error(ParseError::BadTcpOffset));
    }
    endpoints.sport = tcp.source_port();
    endpoints.dport = tcp.destination_port();
    let segment = Segment {
        flags: tcp.slice()[13],
        ttl,
        hook: 0,
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        payload_len: (ip_len - header_end) as u32,
        ip_len: ip_len as u32,
        now: 0,
    };
    Ok(Decoded::Tcp { endpoints, segment, window: tcp.window_size(), payload: tcp.payload() })
}

fn is_ip(p: &LaxSlicedPacket<'_>) -> bool {
    matches!(p.stop_err, Some((_, etherparse::err::Layer::Ipv4Header | etherparse::err::Layer::Ipv6Header)))
}

#[cfg(test)]
mod tests {
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
        let Decoded::Tcp { endpoints, segment, payload, .. } = decode(Linktype::ETHERNET, &frame).unwrap() else { panic!("tcp") };
        assert_eq!((endpoints.sport, endpoints.dport, endpoints.family), (1234, 80, FAMILY_V4));
        assert_eq!((segment.flags, segment.ttl, segment.seq, segment.ack, segment.payload_len, segment.ip_len), (0x14, 61, 7, 9, 7, 47));
        assert_eq!(payload, b"Go away");
    }

    #[test]
    fn raw_ip_and_cooked_frames_decode_alike() {
        let frame = tcp_v4(0x12, b"");
        let raw = &frame[14..];
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(raw);
        for (lt, data) in [(Linktype(101), raw.to_vec()), (Linktype(113), sll)] {
            let Decoded::Tcp { segment, .. } = decode(lt, &data).unwrap() else { panic!("tcp via {lt:?}") };
            assert_eq!(segment.flags, 0x12);
            let eth = to_ethernet(lt, &data).unwrap().unwrap();
            assert!(matches!(decode(Linktype::ETHERNET, &eth).unwrap(), Decoded::Tcp { .. }));
        }
    }

    #[test]
    fn truncated_and_odd_frames_are_counted_not_fatal() {
        let frame = tcp_v4(0x12, b"");
        assert!(matches!(decode(Linktype::ETHERNET, &frame[..14 + 20 + 8]).unwrap(), Decoded::Error(ParseError::TruncatedTcp)));
        assert!(matches!(decode(Linktype::ETHERNET, &frame[..5]).unwrap(), Decoded::Error(ParseError::TruncatedEthernet)));
        assert!(decode(Linktype(147), &frame).is_err(), "unknown link type is an error for the file");
    }
}
