//! Writes a large synthetic capture for throughput benchmarks: `gen-pcap PATH FLOWS`. Each flow is a
//! client in 10.0.0.0/8 talking to a server outside — handshake, request, response, close — and every
//! tenth is a backscatter pair (an unsolicited SYN/ACK and our RST) instead: 8 or 2 packets a flow.
//!
//! `gen-pcap PATH SOURCES --flood`: a spoofed SYN flood instead, one SYN from each of SOURCES
//! addresses to our server 10.0.0.1:80 and our SYN/ACK answering it, 100k SYNs a second.

use std::io::{BufWriter, Write};

use tests::frames::TcpFrame;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (path, flows): (&str, u32) = (&args[1], args[2].parse().expect("FLOWS is a number"));
    let flood = args.get(3).is_some_and(|a| a == "--flood");
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    // pcap header: magic (µs), v2.4, zone 0, sigfigs 0, snaplen 65535, Ethernet.
    out.write_all(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0])?;
    let mut t_us: u64 = 1_700_000_000_000_000;
    let mut packets = 0u64;
    let mut write = |f: &TcpFrame, out: &mut BufWriter<std::fs::File>| -> std::io::Result<()> {
        let data = f.build();
        t_us += if flood { 5 } else { 10 };
        out.write_all(&((t_us / 1_000_000) as u32).to_le_bytes())?;
        out.write_all(&((t_us % 1_000_000) as u32).to_le_bytes())?;
        out.write_all(&(data.len() as u32).to_le_bytes())?;
        out.write_all(&(data.len() as u32).to_le_bytes())?;
        out.write_all(&data)?;
        packets += 1;
        Ok(())
    };
    for i in 0..flows {
        if flood {
            // Sources outside 10/8, each seen once, as a spoofing tool draws them.
            let src = [11 + (i >> 20) as u8, (i >> 12) as u8, (i >> 4) as u8, (i << 4) as u8 | 1];
            let sport = 1024 + (i.wrapping_mul(7919) % 60000) as u16;
            write(&TcpFrame { seq: i.wrapping_mul(2654435761), ttl: 240, ..TcpFrame::v4(src, sport, [10, 0, 0, 1], 80, 0x02) }, &mut out)?;
            write(
                &TcpFrame { seq: i, ack: i.wrapping_mul(2654435761).wrapping_add(1), ..TcpFrame::v4([10, 0, 0, 1], 80, src, sport, 0x12) },
                &mut out,
            )?;
            continue;
        }
        let client = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let server = [192, 0, 2, (i % 250) as u8 + 1];
        let cport = 1024 + (i % 60000) as u16;
        if i % 10 == 9 {
            let victim = [198, 51, 100, (i % 250) as u8 + 1];
            write(&TcpFrame::v4(victim, 443, client, cport, 0x12), &mut out)?;
            write(&TcpFrame::v4(client, cport, victim, 443, 0x04), &mut out)?;
            continue;
        }
        let c2s = |flags, payload: &[u8]| TcpFrame { payload: payload.to_vec(), ..TcpFrame::v4(client, cport, server, 80, flags) };
        let s2c = |flags, payload: &[u8]| TcpFrame { payload: payload.to_vec(), ttl: 52, ..TcpFrame::v4(server, 80, client, cport, flags) };
        for f in [
            c2s(0x02, b""),
            s2c(0x12, b""),
            c2s(0x10, b""),
            c2s(0x18, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
            s2c(0x18, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
            c2s(0x11, b""),
            s2c(0x11, b""),
            c2s(0x10, b""),
        ] {
            write(&f, &mut out)?;
        }
    }
    out.flush()?;
    eprintln!("gen-pcap: {packets} packets in {flows} flows -> {path}");
    Ok(())
}
