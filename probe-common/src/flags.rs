//! The TCP flags byte (tcp[13]: CWR ECE URG ACK PSH RST SYN FIN): names, Snort-style letters and the
//! classes the detectors reason about.

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// Snort's letter order (S F R P A U E C) with the bit each letter stands for.
const LETTERS: [(u8, u8); 8] = [(SYN, b'S'), (FIN, b'F'), (RST, b'R'), (PSH, b'P'), (ACK, b'A'), (URG, b'U'), (ECE, b'E'), (CWR, b'C')];

/// A flags byte rendered as Snort-style letters; at most eight, `0` when no flag is set.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Letters {
    buf: [u8; 8],
    len: u8,
}

impl Letters {
    pub fn as_str(&self) -> &str {
        // Only ASCII letters or '0' are ever written.
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("?")
    }
}

impl core::fmt::Display for Letters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::fmt::Debug for Letters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `0x12` → `SA`, `0x14` → `RA`, `0x29` → `FPU`, `0` → `0`.
pub fn letters(flags: u8) -> Letters {
    let mut out = Letters { buf: [0; 8], len: 0 };
    for (bit, letter) in LETTERS {
        if flags & bit != 0 {
            out.buf[out.len as usize] = letter;
            out.len += 1;
        }
    }
    if out.len == 0 {
        out.buf[0] = b'0';
        out.len = 1;
    }
    out
}

/// The inverse of [`letters`]: accepts the letters in any order, once each, or `0`.
pub fn parse_letters(text: &str) -> Option<u8> {
    if text == "0" {
        return Some(0);
    }
    if text.is_empty() {
        return None;
    }
    let mut flags = 0u8;
    for c in text.bytes() {
        let (bit, _) = LETTERS.iter().find(|(_, l)| *l == c.to_ascii_uppercase())?;
        if flags & bit != 0 {
            return None;
        }
        flags |= bit;
    }
    Some(flags)
}

/// Why a flags byte is one that no correct TCP stack sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InvalidKind {
    /// No flag at all: Nmap's NULL scan.
    Null,
    /// FIN+PSH+URG without ACK: Nmap's XMAS scan.
    Xmas,
    /// Every one of the six classic flags set ("Christmas tree" in its literal form).
    AllFlags,
    SynFin,
    SynRst,
    FinRst,
    /// FIN without ACK: every segment after the handshake carries ACK (RFC 9293 3.10.7).
    FinNoAck,
    /// Some other combination without ACK that is neither a SYN nor a RST.
    NoAck,
}

impl InvalidKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Xmas => "xmas",
            Self::AllFlags => "all-flags",
            Self::SynFin => "syn-fin",
            Self::SynRst => "syn-rst",
            Self::FinRst => "fin-rst",
            Self::FinNoAck => "fin-without-ack",
            Self::NoAck => "no-ack",
        }
    }
}

/// The six classic flags; ECE and CWR are ECN signalling and never make a combination invalid.
const CLASSIC: u8 = FIN | SYN | RST | PSH | ACK | URG;

/// `Some(kind)` when `flags` is a combination no correct stack sends.
pub fn invalid_kind(flags: u8) -> Option<InvalidKind> {
    let f = flags & CLASSIC;
    let kind = if f == 0 {
        InvalidKind::Null
    } else if f == CLASSIC {
        InvalidKind::AllFlags
    } else if f == FIN | PSH | URG {
        InvalidKind::Xmas
    } else if f & (SYN | FIN) == SYN | FIN {
        InvalidKind::SynFin
    } else if f & (SYN | RST) == SYN | RST {
        InvalidKind::SynRst
    } else if f & (FIN | RST) == FIN | RST {
        InvalidKind::FinRst
    } else if f & ACK != 0 || f == SYN || f == RST {
        return None;
    } else if f & FIN != 0 {
        InvalidKind::FinNoAck
    } else {
        InvalidKind::NoAck
    };
    Some(kind)
}

/// True when `flags` is a combination no correct stack sends.
#[inline(always)]
pub fn is_invalid(flags: u8) -> bool {
    // Spelled without `invalid_kind` so the eBPF program gets a few ALU ops, not a match.
    let f = flags & CLASSIC;
    let no_ack_ok = f == SYN || f == RST;
    f == 0 || f & (SYN | FIN) == SYN | FIN || f & (SYN | RST) == SYN | RST || f & (FIN | RST) == FIN | RST || (f & ACK == 0 && !no_ack_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_follow_snort_order() {
        assert_eq!(letters(SYN | ACK).as_str(), "SA");
        assert_eq!(letters(RST | ACK).as_str(), "RA");
        assert_eq!(letters(FIN | PSH | URG).as_str(), "FPU");
        assert_eq!(letters(0).as_str(), "0");
        assert_eq!(letters(0xff).as_str(), "SFRPAUEC");
        assert_eq!(letters(SYN | ECE | CWR).as_str(), "SEC");
    }

    #[test]
    fn letters_round_trip_for_every_byte() {
        for f in 0..=255u8 {
            assert_eq!(parse_letters(letters(f).as_str()), Some(f), "flags {f:#04x}");
        }
    }

    #[test]
    fn parse_rejects_junk() {
        assert_eq!(parse_letters("SS"), None);
        assert_eq!(parse_letters("X"), None);
        assert_eq!(parse_letters(""), None);
        assert_eq!(parse_letters("as"), Some(SYN | ACK));
    }

    #[test]
    fn invalid_kinds() {
        assert_eq!(invalid_kind(0), Some(InvalidKind::Null));
        assert_eq!(invalid_kind(0x29), Some(InvalidKind::Xmas));
        assert_eq!(invalid_kind(0xff), Some(InvalidKind::AllFlags));
        assert_eq!(invalid_kind(0x03), Some(InvalidKind::SynFin));
        assert_eq!(invalid_kind(0x2b), Some(InvalidKind::SynFin));
        assert_eq!(invalid_kind(0x06), Some(InvalidKind::SynRst));
        assert_eq!(invalid_kind(0x15), Some(InvalidKind::FinRst));
        assert_eq!(invalid_kind(0x01), Some(InvalidKind::FinNoAck));
        assert_eq!(invalid_kind(0x20), Some(InvalidKind::NoAck));
        for ok in [0x02, 0xc2, 0x12, 0x52, 0x10, 0x18, 0x11, 0x19, 0x04, 0x14, 0x1c] {
            assert_eq!(invalid_kind(ok), None, "{ok:#04x}");
        }
    }

    #[test]
    fn fast_check_agrees_with_kinds() {
        for f in 0..=255u8 {
            assert_eq!(is_invalid(f), invalid_kind(f).is_some(), "{f:#04x}");
        }
    }
}
