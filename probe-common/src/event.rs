//! The ring-buffer record for a notable segment (see [`crate::flow::notable_reasons`]).
//!
//! It carries the segment as sent (source → destination, not canonical), its first payload bytes, and
//! the flow entry as it was *before* the segment. With those, userspace can re-run the same update
//! and judge the segment against the flow's history (earlier TTLs, earlier RSTs, the SYN it answers)
//! without another map lookup.

use crate::flow::{Endpoints, FlowEntry, Segment};

/// Payload bytes copied into an event; a RST's reset-cause text is usually shorter.
pub const EVENT_PAYLOAD_MAX: usize = 64;

/// Bytes of the raw frame copied into an event, from its first byte: Ethernet, a VLAN tag, an IPv6
/// header and a TCP header with every option (122 bytes) plus 64 bytes of payload, rounded up.
/// This is what the evidence pcapng holds for each notable packet.
pub const EVENT_FRAME_MAX: usize = 192;

/// `PacketEvent::tracked`: the flow had a slot, so `flow_before` is its real history.
pub const EVENT_TRACKED: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketEvent {
    /// Monotonic ns (bpf_ktime_get_ns).
    pub ts_ns: u64,
    pub flow_before: FlowEntry,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub seq: u32,
    pub ack: u32,
    pub payload_len: u32,
    pub ip_len: u32,
    pub sport: u16,
    pub dport: u16,
    pub window: u16,
    pub family: u8,
    pub hook: u8,
    pub flags: u8,
    pub ttl: u8,
    /// `NOTABLE_*` bits.
    pub reasons: u8,
    /// `EVENT_TRACKED` or 0.
    pub tracked: u8,
    /// How many of `payload`'s bytes are valid.
    pub captured_len: u8,
    /// The CPU that saw the packet: `flow_before` is that CPU's partition of the flow table only.
    pub cpu: u16,
    /// `action::ACTION_*`: passed, dropped, or would have been dropped (dry run).
    pub action: u8,
    pub _pad: u8,
    /// IPv4 identification (0 for IPv6): judged against the sender's own sequence
    /// ([`crate::flow::FlowEntry::ip_id_runs`]).
    pub ip_id: u16,
    pub _pad3: u8,
    pub payload: [u8; EVENT_PAYLOAD_MAX],
    /// The frame's length on the wire (what the hook saw).
    pub frame_len: u32,
    /// How many of `frame`'s bytes are valid.
    pub frame_captured: u16,
    pub _pad2: [u8; 2],
    /// The frame's first bytes, as the hook saw them (Ethernet first).
    pub frame: [u8; EVENT_FRAME_MAX],
}
const _: () = assert!(core::mem::size_of::<PacketEvent>() == 8 + 296 + 32 + 16 + 8 + 8 + 8 + 64 + 8 + EVENT_FRAME_MAX);

impl PacketEvent {
    pub fn endpoints(&self) -> Endpoints {
        Endpoints { src: self.src, dst: self.dst, sport: self.sport, dport: self.dport, family: self.family }
    }

    pub fn segment(&self) -> Segment {
        Segment {
            flags: self.flags,
            ttl: self.ttl,
            ip_id: self.ip_id,
            hook: self.hook,
            seq: self.seq,
            ack: self.ack,
            payload_len: self.payload_len,
            ip_len: self.ip_len,
            now: self.ts_ns,
        }
    }

    /// The captured payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload[..(self.captured_len as usize).min(EVENT_PAYLOAD_MAX)]
    }

    /// The captured head of the frame.
    pub fn frame(&self) -> &[u8] {
        &self.frame[..(self.frame_captured as usize).min(EVENT_FRAME_MAX)]
    }

    /// Keep the head of `frame` (a whole Ethernet frame) as this event's copy, as the kernel does.
    pub fn set_frame(&mut self, frame: &[u8]) {
        let n = frame.len().min(EVENT_FRAME_MAX);
        self.frame[..n].copy_from_slice(&frame[..n]);
        self.frame_captured = n as u16;
        self.frame_len = frame.len() as u32;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers and byte arrays, explicit padding.
    unsafe impl aya::Pod for super::PacketEvent {}
}
