//! Load-time settings: globals in `.rodata` that the agent sets before loading, so the verifier sees
//! them as constants. Read through `read_volatile` so the compiler keeps the load.

use probe_common::{
    home::HomePrefixes,
    parse::{Link, ParseOptions},
};

/// Slots per CPU minus one (slots per CPU is a power of two).
#[unsafe(no_mangle)]
static FLOW_SLOT_MASK: u32 = probe_common::maps::FLOWS_ELF_ENTRIES - 1;

/// Partitions of the flow table: one per possible CPU.
#[unsafe(no_mangle)]
static FLOW_PARTITIONS: u32 = 1;

#[unsafe(no_mangle)]
static EVENT_RATE_PER_SEC: u64 = probe_common::maps::DEFAULT_EVENT_RATE;

/// Inbound SYNs per second per CPU tracked in the flow table (0: all).
#[unsafe(no_mangle)]
static SYN_TRACK_RATE_PER_SEC: u64 = probe_common::maps::DEFAULT_SYN_TRACK_RATE;

/// `action::MODE_*` bits.
#[unsafe(no_mangle)]
static PROGRAM_MODE: u32 = 0;

/// `action::DROP_*` bits (a u32 so the global is one aligned word).
#[unsafe(no_mangle)]
static DROP_POLICY: u32 = 0;

/// The UDP port whose datagrams are opened as VXLAN (`vxlan-port`).
#[unsafe(no_mangle)]
static VXLAN_PORT: u32 = probe_common::parse::VXLAN_PORT_DEFAULT as u32;

/// 1 on an interface without an Ethernet header (`ppp0`, `gre0`, `wg0`: frames start at the IP
/// header); the agent loads the program once per interface. A constant to the verifier, so the
/// branch not taken is removed and plain Ethernet pays nothing for it.
#[unsafe(no_mangle)]
static LINK_IP: u32 = 0;

/// What a sensor's packets are counted against for direction (see `probe_common::home`).
#[unsafe(no_mangle)]
static HOME_NETS: HomePrefixes = HomePrefixes {
    count: 0,
    _pad: 0,
    nets: [probe_common::home::HomePrefix { net: [0; 2], mask: [0; 2], family: 0, _pad: [0; 7] }; probe_common::home::HOME_PREFIXES_MAX],
};

#[inline(always)]
pub fn flow_slot_mask() -> u32 {
    unsafe { core::ptr::read_volatile(&FLOW_SLOT_MASK) }
}

#[inline(always)]
pub fn flow_partitions() -> u32 {
    unsafe { core::ptr::read_volatile(&FLOW_PARTITIONS) }
}

#[inline(always)]
pub fn event_rate() -> u64 {
    unsafe { core::ptr::read_volatile(&EVENT_RATE_PER_SEC) }
}

#[inline(always)]
pub fn syn_track_rate() -> u64 {
    unsafe { core::ptr::read_volatile(&SYN_TRACK_RATE_PER_SEC) }
}

#[inline(always)]
pub fn program_mode() -> u32 {
    unsafe { core::ptr::read_volatile(&PROGRAM_MODE) }
}

#[inline(always)]
pub fn drop_policy() -> u8 {
    unsafe { core::ptr::read_volatile(&DROP_POLICY) as u8 }
}

/// The home networks; `HomePrefixes` reads its fields volatile itself.
#[inline(always)]
pub fn home_nets() -> &'static HomePrefixes {
    &HOME_NETS
}

/// How to parse a frame on this program's interface.
#[inline(always)]
pub fn parse_options() -> ParseOptions {
    let vxlan_port = unsafe { core::ptr::read_volatile(&VXLAN_PORT) } as u16;
    let link = if unsafe { core::ptr::read_volatile(&LINK_IP) } != 0 { Link::Ip } else { Link::Ethernet };
    ParseOptions { link, vxlan_port }
}
