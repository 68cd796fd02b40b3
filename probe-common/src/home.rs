//! Which way a packet goes when the hook cannot say: on a mirror or TAP port both directions arrive
//! on ingress, so "ours" comes from the home networks. The sensor program and replay both decide
//! with [`HomePrefixes::hook_for`], so a capture and the live port agree on direction.
//!
//! The prefixes are a load-time global (`.rodata`): a short list compared word by word costs a few
//! ns per packet, where a trie lookup is a helper call and a map.

use crate::{
    flow::{Endpoints, FAMILY_V4, addr_words},
    hook::{HOOK_EGRESS, HOOK_INGRESS},
};

/// Home networks the kernel program can hold; more is a configuration error naming `home-net`.
pub const HOME_PREFIXES_MAX: usize = 32;

/// One network in the contract's 16-byte address form (IPv4 in the first four bytes).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HomePrefix {
    /// The network address, host bits zero, as [`addr_words`] reads it.
    pub net: [u64; 2],
    pub mask: [u64; 2],
    /// `FAMILY_V4` or `FAMILY_V6`; 0 marks an unused entry.
    pub family: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<HomePrefix>() == 40);

#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HomePrefixes {
    pub count: u32,
    pub _pad: u32,
    pub nets: [HomePrefix; HOME_PREFIXES_MAX],
}
const _: () = assert!(core::mem::size_of::<HomePrefixes>() == 8 + 40 * HOME_PREFIXES_MAX);

impl Default for HomePrefixes {
    fn default() -> Self {
        HomePrefixes { count: 0, _pad: 0, nets: [HomePrefix::default(); HOME_PREFIXES_MAX] }
    }
}

impl HomePrefix {
    /// The network of `prefix_len` bits at `addr` (16-byte form) in `family`.
    pub fn new(addr: [u8; 16], prefix_len: u8, family: u8) -> HomePrefix {
        let bits = if family == FAMILY_V4 { prefix_len.min(32) } else { prefix_len.min(128) };
        let mut mask = [0u8; 16];
        for (i, m) in mask.iter_mut().enumerate() {
            let have = (bits as usize).saturating_sub(i * 8).min(8);
            *m = if have == 0 { 0 } else { 0xffu8 << (8 - have) };
        }
        let mut net = addr;
        for (n, m) in net.iter_mut().zip(mask.iter()) {
            *n &= m;
        }
        let words = |b: [u8; 16]| {
            [u64::from_ne_bytes(b[..8].try_into().unwrap_or([0; 8])), u64::from_ne_bytes(b[8..].try_into().unwrap_or([0; 8]))]
        };
        HomePrefix { net: words(net), mask: words(mask), family, _pad: [0; 7] }
    }
}

impl HomePrefixes {
    /// Whether `addr` (16-byte form, 8-aligned) of `family` is in one of the networks. Fields are
    /// read through `read_volatile`: in the kernel this is a `.rodata` global the agent fills at
    /// load, and the compiler must not fold the empty list it was compiled with.
    #[inline(always)]
    pub fn contains(&self, addr: &[u8; 16], family: u8) -> bool {
        let a = addr_words(addr);
        // SAFETY: reads of plain fields of a live struct.
        let count = unsafe { core::ptr::read_volatile(&self.count) } as usize;
        for i in 0..HOME_PREFIXES_MAX {
            if i >= count {
                break;
            }
            let p = &self.nets[i];
            // SAFETY: as above.
            // One word at a time: an [u64; 2] read is an i128 load, sixteen byte loads in eBPF.
            let (fam, n0, n1, m0, m1) = unsafe {
                (
                    core::ptr::read_volatile(&p.family),
                    core::ptr::read_volatile(&p.net[0]),
                    core::ptr::read_volatile(&p.net[1]),
                    core::ptr::read_volatile(&p.mask[0]),
                    core::ptr::read_volatile(&p.mask[1]),
                )
            };
            if fam == family && a[0] & m0 == n0 && a[1] & m1 == n1 {
                return true;
            }
        }
        false
    }

    /// The hook a gateway would have seen this packet on: from a home address is egress (from us),
    /// anything else ingress (towards us), as replay has always counted.
    #[inline(always)]
    pub fn hook_for(&self, ep: &Endpoints) -> u8 {
        if self.contains(&ep.src, ep.family) { HOOK_EGRESS as u8 } else { HOOK_INGRESS as u8 }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] integers and arrays with explicit padding.
    unsafe impl aya::Pod for super::HomePrefixes {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{FAMILY_V6, v4_bytes as v4};

    /// Addresses as the kernel hands them over: 8-aligned (see `addr_words`).
    #[repr(align(8))]
    struct Aligned([u8; 16]);

    fn has(h: &HomePrefixes, a: [u8; 16], family: u8) -> bool {
        h.contains(&Aligned(a).0, family)
    }

    #[test]
    fn prefixes_match_by_family_and_bits() {
        let mut h = HomePrefixes::default();
        h.nets[0] = HomePrefix::new(v4([10, 77, 0, 9]), 24, FAMILY_V4);
        let mut v6 = [0u8; 16];
        v6[..2].copy_from_slice(&[0xfd, 0x00]);
        h.nets[1] = HomePrefix::new(v6, 8, FAMILY_V6);
        h.count = 2;
        assert!(has(&h, v4([10, 77, 0, 200]), FAMILY_V4));
        assert!(!has(&h, v4([10, 77, 1, 2]), FAMILY_V4));
        assert!(!has(&h, v4([10, 77, 0, 2]), FAMILY_V6), "same bytes, other family");
        let mut inside = [0u8; 16];
        inside[0] = 0xfd;
        inside[15] = 7;
        assert!(has(&h, inside, FAMILY_V6));
        inside[0] = 0xfe;
        assert!(!has(&h, inside, FAMILY_V6));
        h.count = 1;
        assert!(!has(&h, [0xfd; 16], FAMILY_V6), "entries past count are ignored");
    }

    #[test]
    fn a_zero_length_prefix_is_everything_and_direction_follows_the_source() {
        let mut h = HomePrefixes::default();
        h.nets[0] = HomePrefix::new(v4([192, 0, 2, 1]), 32, FAMILY_V4);
        h.count = 1;
        let out = Endpoints { src: v4([192, 0, 2, 1]), dst: v4([8, 8, 8, 8]), sport: 1, dport: 2, family: FAMILY_V4 };
        let inbound = Endpoints { src: out.dst, dst: out.src, ..out };
        assert_eq!((h.hook_for(&out), h.hook_for(&inbound)), (HOOK_EGRESS as u8, HOOK_INGRESS as u8));
        h.nets[0] = HomePrefix::new(v4([1, 2, 3, 4]), 0, FAMILY_V4);
        assert!(has(&h, v4([203, 0, 113, 9]), FAMILY_V4));
    }
}
