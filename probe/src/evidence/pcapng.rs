//! A minimal pcapng writer: one section, one Ethernet interface per name, enhanced packet blocks
//! with nanosecond timestamps and a comment each (the alert's id). Wireshark and tshark read it;
//! replay reads it back. Written whole, so a file on disk is always complete.

use std::io::{self, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;

/// One packet for the file.
pub struct Packet<'a> {
    /// Index into the interface names given to [`write`].
    pub interface: u32,
    /// Wall-clock ns.
    pub ts_ns: u64,
    /// The bytes kept (the head of the frame).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub wire_len: u32,
    pub comment: &'a str,
}

fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let total = (12 + body.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}

/// The whole file: a section header, one interface block per name, then the packets.
pub fn write(out: &mut impl Write, interfaces: &[&str], packets: &[Packet<'_>]) -> io::Result<()> {
    let mut body = Vec::new();
    body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(-1i64).to_le_bytes());
    option(&mut body, OPT_END, &[]);
    block(out, SHB, &body)?;
    for name in interfaces {
        let mut body = Vec::new();
        body.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        option(&mut body, IF_NAME, name.as_bytes());
        option(&mut body, IF_TSRESOL, &[9]);
        option(&mut body, OPT_END, &[]);
        block(out, IDB, &body)?;
    }
    for p in packets {
        let mut body = Vec::with_capacity(32 + p.data.len() + p.comment.len());
        body.extend_from_slice(&p.interface.to_le_bytes());
        body.extend_from_slice(&((p.ts_ns >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(p.ts_ns as u32).to_le_bytes());
        body.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        body.extend_from_slice(&p.wire_len.max(p.data.len() as u32).to_le_bytes());
        body.extend_from_slice(p.data);
        body.resize(body.len().next_multiple_of(4), 0);
        option(&mut body, OPT_COMMENT, p.comment.as_bytes());
        option(&mut body, OPT_END, &[]);
        block(out, EPB, &body)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::capture::CaptureReader;

    #[test]
    fn what_is_written_reads_back_with_its_times_and_lengths() {
        let frame: Vec<u8> = (0..74u8).collect();
        let mut file = Vec::new();
        let packets = [
            Packet { interface: 0, ts_ns: 1_700_000_000_123_456_789, data: &frame, wire_len: 74, comment: "flagprobe alert 1" },
            Packet { interface: 1, ts_ns: 1_700_000_001_000_000_001, data: &frame[..60], wire_len: 1514, comment: "x" },
        ];
        write(&mut file, &["eth0", "eth1"], &packets).unwrap();
        let reader = CaptureReader::from_reader("mem", Box::new(std::io::Cursor::new(file))).unwrap();
        let frames: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!((frames[0].ts_ns, frames[0].data.as_slice()), (1_700_000_000_123_456_789, frame.as_slice()));
        assert_eq!((frames[1].ts_ns, frames[1].data.len()), (1_700_000_001_000_000_001, 60));
    }
}
