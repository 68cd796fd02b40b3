//! The two hooks a packet is counted at, by index: a leaf every other module may name without
//! importing the counters (which would close a circle through the flow logic).

/// Array index of the XDP ingress hook's counters (in sensor mode: packets towards a home address).
pub const HOOK_INGRESS: u32 = 0;
/// Array index of the TC egress hook's counters (in sensor mode: packets from a home address).
pub const HOOK_EGRESS: u32 = 1;
pub const HOOKS: u32 = 2;
pub const HOOK_NAMES: [&str; HOOKS as usize] = ["ingress", "egress"];
