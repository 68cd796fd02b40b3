//! Hand-built Ethernet frames for BPF_PROG_TEST_RUN: TCP over IPv4 (with options) or IPv6 (with
//! extension headers), behind zero, one or two VLAN tags. Checksums are left zero: the program never
//! reads them.

use std::net::IpAddr;

#[derive(Clone, Debug)]
pub struct TcpFrame {
    /// TPIDs of the VLAN tags, outermost first (0x88a8, 0x8100).
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub ttl: u8,
    /// IPv4 options (padded to 4 bytes).
    pub ipv4_options: Vec<u8>,
    /// IPv6 extension header types, in order (0 hop-by-hop, 43 routing, 44 fragment, 60 dest opts).
    pub ipv6_ext: Vec<u8>,
    pub payload: Vec<u8>,
}

impl TcpFrame {
    pub fn v4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> TcpFrame {
        TcpFrame {
            vlans: vec![],
            src: IpAddr::from(src),
            dst: IpAddr::from(dst),
            sport,
            dport,
            flags,
            seq: 1000,
            ack: 0,
            ttl: 64,
            ipv4_options: vec![],
            ipv6_ext: vec![],
            payload: vec![],
        }
    }

    pub fn v6(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> TcpFrame {
        TcpFrame { src: src.parse().unwrap(), dst: dst.parse().unwrap(), ..TcpFrame::v4([0; 4], sport, [0; 4], dport, flags) }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        for tpid in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&100u16.to_be_bytes());
        }
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.extend_from_slice(&[5 << 4, self.flags, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(&self.payload);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let mut opts = self.ipv4_options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0);
                }
                let ihl = 5 + opts.len() / 4;
                let total = (ihl * 4 + tcp.len()) as u16;
                f.push(0x40 | ihl as u8);
                f.push(0);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&[0, 1, 0x40, 0, self.ttl, 6, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&opts);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let mut ext = Vec::new();
                for (i, kind) in self.ipv6_ext.iter().enumerate() {
                    let next = *self.ipv6_ext.get(i + 1).unwrap_or(&6);
                    match kind {
                        44 => ext.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 1]),
                        // One 8-octet unit of padding options (PadN).
                        _ => ext.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
                    }
                }
                let first = *self.ipv6_ext.first().unwrap_or(&6);
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&((ext.len() + tcp.len()) as u16).to_be_bytes());
                f.push(first);
                f.push(self.ttl);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&ext);
            }
            _ => panic!("mixed address families"),
        }
        f.extend_from_slice(&tcp);
        f
    }
}

/// A tunnel to put a whole Ethernet frame (from [`TcpFrame::build`]) into, as the frame on the
/// wire would carry it: outer Ethernet, then the tunnel's headers (outer addresses 192.0.2.1 →
/// 192.0.2.2, or 2001:db8::1 → 2001:db8::2), then the inner packet (with its Ethernet header only
/// where the tunnel carries Ethernet: gretap, VXLAN, Geneve).
#[derive(Clone, Copy, Debug)]
pub enum Encap {
    Pppoe,
    Gre {
        key: bool,
        seq: bool,
    },
    GreTap,
    /// VXLAN on this UDP port.
    Vxlan(u16),
    /// IP in IPv4 (protocol 4 or 41 by the inner version).
    IpInIp,
    /// IP in IPv6.
    IpInIp6,
    Geneve,
    Teredo,
    /// PPTP's enhanced GRE (version 1), carrying PPP.
    Pptp,
}

const OUTER_MACS: [u8; 12] = [0x02, 0, 0, 0, 0, 0x0a, 0x02, 0, 0, 0, 0, 0x0b];

impl Encap {
    pub fn wrap(self, inner_frame: &[u8]) -> Vec<u8> {
        let ip = &inner_frame[14..];
        let inner_v6 = ip[0] >> 4 == 6;
        let ip_proto = if inner_v6 { 41 } else { 4 };
        let ip_ethertype: u16 = if inner_v6 { 0x86dd } else { 0x0800 };
        let mut f = OUTER_MACS.to_vec();
        match self {
            Encap::Pppoe => {
                f.extend_from_slice(&0x8864u16.to_be_bytes());
                f.extend_from_slice(&[0x11, 0x00, 0x00, 0x01]);
                f.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
                f.extend_from_slice(&(if inner_v6 { 0x0057u16 } else { 0x0021 }).to_be_bytes());
                f.extend_from_slice(ip);
            }
            Encap::Gre { key, seq } => {
                let mut gre = Vec::new();
                let flags: u16 = if key { 0x2000 } else { 0 } | if seq { 0x1000 } else { 0 };
                gre.extend_from_slice(&flags.to_be_bytes());
                gre.extend_from_slice(&ip_ethertype.to_be_bytes());
                if key {
                    gre.extend_from_slice(&42u32.to_be_bytes());
                }
                if seq {
                    gre.extend_from_slice(&7u32.to_be_bytes());
                }
                gre.extend_from_slice(ip);
                outer_v4(&mut f, 47, &gre);
            }
            Encap::GreTap => {
                let mut gre = vec![0, 0, 0x65, 0x58];
                gre.extend_from_slice(inner_frame);
                outer_v4(&mut f, 47, &gre);
            }
            Encap::Pptp => {
                // Key present, version 1, protocol 0x880b (PPP); payload length and call id.
                let mut gre = vec![0x20, 0x01, 0x88, 0x0b, 0, 0, 0, 1];
                gre.extend_from_slice(&[0xff, 0x03, 0x00, 0x21]);
                gre.extend_from_slice(ip);
                outer_v4(&mut f, 47, &gre);
            }
            Encap::Vxlan(port) => outer_v4(&mut f, 17, &udp(49152, port, &[&[0x08, 0, 0, 0, 0, 0, 42, 0][..], inner_frame].concat())),
            Encap::Geneve => outer_v4(&mut f, 17, &udp(49152, 6081, &[&[0, 0, 0x65, 0x58, 0, 0, 42, 0][..], inner_frame].concat())),
            Encap::Teredo => outer_v4(&mut f, 17, &udp(3544, 50000, ip)),
            Encap::IpInIp => outer_v4(&mut f, ip_proto, ip),
            Encap::IpInIp6 => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(ip.len() as u16).to_be_bytes());
                f.push(ip_proto);
                f.push(64);
                f.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
                f.extend_from_slice(&"2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
                f.extend_from_slice(ip);
            }
        }
        f
    }
}

fn outer_v4(f: &mut Vec<u8>, proto: u8, body: &[u8]) {
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + body.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
    f.extend_from_slice(body);
}

fn udp(sport: u16, dport: u16, body: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(body);
    u
}
