//! Reading capture files (pcap, pcapng, either gzip-compressed) as a stream of frames with their
//! link type and timestamp, in bounded memory. Errors name the file and the byte offset.

use std::{fs::File, io::Read, path::Path};

use pcap_parser::{Block, Linktype, PcapBlockOwned, PcapError, traits::PcapReaderIterator};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    pub link_type: Linktype,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened.
    #[error("{path}: {source}")]
    Open { path: String, source: std::io::Error },
    /// Not a pcap or pcapng file.
    #[error("{path}: not a pcap or pcapng file")]
    NotACapture { path: String },
    /// The file ends in the middle of a record.
    #[error("{path}: truncated record at byte offset {offset}")]
    Truncated { path: String, offset: u64 },
    /// A record does not parse.
    #[error("{path}: corrupt record at byte offset {offset}: {problem}")]
    Corrupt { path: String, offset: u64, problem: String },
}

/// A streaming reader; iterate it for frames.
pub struct CaptureReader {
    path: String,
    inner: Box<dyn PcapReaderIterator + Send>,
    /// Link type and ts resolution (units per second) per pcapng interface; one entry for pcap.
    interfaces: Vec<(Linktype, u64, i64)>,
    done: bool,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl CaptureReader {
    /// Read a capture from memory or any reader; `name` stands for the file in errors.
    pub fn from_reader(name: &str, source: Box<dyn Read + Send>) -> Result<Self, CaptureError> {
        let inner = pcap_parser::create_reader(1 << 20, source).map_err(|_| CaptureError::NotACapture { path: name.to_string() })?;
        Ok(CaptureReader { path: name.to_string(), inner, interfaces: Vec::new(), done: false })
    }

    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let name = path.display().to_string();
        let open_err = |source| CaptureError::Open { path: name.clone(), source };
        let mut file = File::open(path).map_err(open_err)?;
        let mut magic = [0u8; 2];
        let gz = file.read_exact(&mut magic).is_ok() && magic == GZIP_MAGIC;
        let file = File::open(path).map_err(open_err)?;
        let source: Box<dyn Read + Send> = if gz { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
        let inner = pcap_parser::create_reader(1 << 20, source).map_err(|_| CaptureError::NotACapture { path: name.clone() })?;
        Ok(CaptureReader { path: name, inner, interfaces: Vec::new(), done: false })
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        loop {
            let offset = self.inner.consumed() as u64;
            match self.inner.next() {
                Ok((len, block)) => {
                    let frame = match block {
                        PcapBlockOwned::LegacyHeader(h) => {
                            let nanos = h.magic_number == 0xa1b2_3c4d || h.magic_number == 0x4d3c_b2a1;
                            self.interfaces = vec![(h.network, if nanos { 1_000_000_000 } else { 1_000_000 }, 0)];
                            None
                        }
                        PcapBlockOwned::Legacy(b) => {
                            let (lt, res, _) = self.interfaces.first().copied().unwrap_or((Linktype::ETHERNET, 1_000_000, 0));
                            let ts_ns = b.ts_sec as u64 * 1_000_000_000 + b.ts_usec as u64 * (1_000_000_000 / res);
                            Some(Frame { ts_ns, link_type: lt, data: b.data[..(b.caplen as usize).min(b.data.len())].to_vec() })
                        }
                        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                            self.interfaces.clear();
                            None
                        }
                        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                            self.interfaces.push((idb.linktype, idb.ts_resolution().unwrap_or(1_000_000), idb.ts_offset()));
                            None
                        }
                        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                            let (lt, res, off) = self
                                .interfaces
                                .get(epb.if_id as usize)
                                .copied()
                                .ok_or_else(|| corrupt(&self.path, offset, "packet names an undeclared interface"))?;
                            let units = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                            let ts_ns = (units as u128 * 1_000_000_000 / res.max(1) as u128) as u64 + (off.max(0) as u64) * 1_000_000_000;
                            Some(Frame { ts_ns, link_type: lt, data: epb.data[..(epb.caplen as usize).min(epb.data.len())].to_vec() })
                        }
                        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                            let (lt, _, _) = self
                                .interfaces
                                .first()
                                .copied()
                                .ok_or_else(|| corrupt(&self.path, offset, "packet before any interface"))?;
                            Some(Frame { ts_ns: 0, link_type: lt, data: spb.data.to_vec() })
                        }
                        PcapBlockOwned::NG(_) => None,
                    };
                    self.inner.consume(len);
                    if frame.is_some() {
                        return Ok(frame);
                    }
                }
                Err(PcapError::Eof) => return Ok(None),
                Err(PcapError::Incomplete(_)) => {
                    let before = self.inner.position();
                    if let Err(e) = self.inner.refill() {
                        return Err(corrupt(&self.path, offset, in_words(&e)));
                    }
                    if self.inner.position() == before && matches!(self.inner.next(), Err(PcapError::Incomplete(_))) {
                        return Err(CaptureError::Truncated { path: self.path.clone(), offset });
                    }
                }
                Err(PcapError::UnexpectedEof) => {
                    return Err(CaptureError::Truncated { path: self.path.clone(), offset });
                }
                Err(e) => return Err(corrupt(&self.path, offset, in_words(&e))),
            }
        }
    }
}

/// The reader's error in words: its variant names (`BufferTooSmall`) mean nothing to an operator.
fn in_words<I>(e: &PcapError<I>) -> &'static str {
    match e {
        PcapError::BufferTooSmall => "a record larger than the reader's buffer (no real capture has one)",
        PcapError::HeaderNotRecognized => "a block that is neither pcap nor pcapng",
        PcapError::ReadError => "the file could not be read",
        PcapError::Eof | PcapError::UnexpectedEof | PcapError::Incomplete(_) => "the file ends inside a record",
        PcapError::NomError(..) | PcapError::OwnedNomError(..) => "a malformed block",
    }
}

fn corrupt(path: &str, offset: u64, problem: &str) -> CaptureError {
    CaptureError::Corrupt { path: path.to_string(), offset, problem: problem.to_string() }
}

impl Iterator for CaptureReader {
    type Item = Result<Frame, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_frame().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}
