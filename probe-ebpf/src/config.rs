//! Load-time settings: globals in `.rodata` that the agent sets before loading, so the verifier sees
//! them as constants. Read through `read_volatile` so the compiler keeps the load.

/// Slots per CPU minus one (slots per CPU is a power of two).
#[unsafe(no_mangle)]
static FLOW_SLOT_MASK: u32 = probe_common::maps::FLOWS_ELF_ENTRIES - 1;

#[unsafe(no_mangle)]
static EVENT_RATE_PER_SEC: u64 = probe_common::maps::DEFAULT_EVENT_RATE;

#[inline(always)]
pub fn flow_slot_mask() -> u32 {
    unsafe { core::ptr::read_volatile(&FLOW_SLOT_MASK) }
}

#[inline(always)]
pub fn event_rate() -> u64 {
    unsafe { core::ptr::read_volatile(&EVENT_RATE_PER_SEC) }
}
