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
