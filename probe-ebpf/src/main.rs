//! flagprobe's kernel side: an XDP program on ingress and a TC (clsact/tcx) program on egress —
//! XDP never sees the host's own replies — that share one set of maps. Each packet is parsed to its
//! TCP header, counted in the hook's exact flags histogram and its flow's slot, and sent to the
//! agent through the ring buffer when it is notable. Nothing is dropped unless the operator asked
//! (`--drop`, gateway) or the packets are a mirror port's copies (sensor mode); parse failures are
//! counted by reason and the packet passes.
//!
//! In sensor mode only the XDP program is attached: both directions arrive on ingress, the home
//! networks say which way each went, and notable frames go whole to an AF_XDP socket.
#![no_std]
#![no_main]

mod config;
mod flow;

use aya_ebpf::{
    bindings::{
        TC_ACT_UNSPEC,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    helpers::{bpf_ktime_get_ns, generated::bpf_jiffies64},
    macros::{classifier, map, raw_tracepoint, xdp},
    maps::{Array, PerCpuArray, RingBuf, XskMap},
    programs::{RawTracePointContext, TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use probe_common::{
    action::{MODE_SENSOR, MODE_SENSOR_PASS},
    aggregate::Aggregates,
    counters::{HOOK_EGRESS, HOOK_INGRESS, HOOKS, HookCounters, ParseError},
    flow::FlowEntry,
    maps::{EVENTS_BYTES, FLOWS_ELF_ENTRIES, XSK_QUEUES_MAX},
    parse::{self, Cursor, NotTcp},
};

use crate::flow::{OUT_DROP, OUT_EVENT, PayloadSource};

/// `BPF_F_MMAPABLE`: the agent maps the flow table into its address space and reads it in place.
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map(name = "FLOWS")]
static FLOWS: Array<FlowEntry> = Array::with_max_entries(FLOWS_ELF_ENTRIES, BPF_F_MMAPABLE);

#[map(name = "HOOK_COUNTERS")]
static HOOK_COUNTERS: PerCpuArray<HookCounters> = PerCpuArray::with_max_entries(HOOKS, 0);

/// Flood-proof aggregates (services, distinct-source sketches, heavy hitters): one per CPU.
#[map(name = "AGGREGATES")]
static AGGREGATES: PerCpuArray<Aggregates> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Sensor mode: the agent's AF_XDP socket for each receive queue.
#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(XSK_QUEUES_MAX, 0);

/// `[jiffies, monotonic ns]` as sampled by [`flagprobe_clock`].
#[map(name = "CLOCK")]
static CLOCK: Array<[u64; 2]> = Array::with_max_entries(1, 0);

/// Never attached: the agent runs it with BPF_PROG_TEST_RUN to sample both clocks at once, which
/// tells it HZ and how to turn the flow table's jiffies into time. Packet counts are untouched.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn flagprobe_clock(_ctx: RawTracePointContext) -> i32 {
    if let Some(slot) = CLOCK.get_ptr_mut(0) {
        // SAFETY: a map value pointer for one [u64; 2].
        unsafe { *slot = [bpf_jiffies64(), bpf_ktime_get_ns()] };
    }
    0
}

#[xdp]
pub fn flagprobe_ingress(ctx: XdpContext) -> u32 {
    let mode = config::program_mode();
    // Fail open: whatever goes wrong, the outcome is 0 and the packet passes (a gateway) or its
    // copy is released (a sensor).
    let outcome = try_ingress(&ctx, mode).unwrap_or(0);
    if mode & MODE_SENSOR == 0 {
        return if outcome & OUT_DROP != 0 { XDP_DROP } else { XDP_PASS };
    }
    let done = if mode & MODE_SENSOR_PASS != 0 { XDP_PASS } else { XDP_DROP };
    if outcome & OUT_EVENT == 0 {
        return done;
    }
    // A notable frame goes whole to the agent's socket on this queue; with none there, the
    // redirect falls back to `done`.
    let queue = unsafe { (*ctx.ctx).rx_queue_index };
    let (action, delivered) = match XSKS.redirect(queue, done as u64) {
        Ok(a) => (a, true),
        Err(a) => (a, false),
    };
    if let Ok(c) = counters(HOOK_INGRESS) {
        if delivered {
            c.frames_to_socket += 1;
        } else {
            c.frames_to_socket_failed += 1;
        }
    }
    action
}

#[classifier]
pub fn flagprobe_egress(ctx: TcContext) -> i32 {
    let _ = try_egress(&ctx);
    // UNSPEC: let any later filter decide; we only count.
    TC_ACT_UNSPEC
}

struct Xdp<'a>(&'a XdpContext);

impl PayloadSource for Xdp<'_> {
    #[inline(always)]
    fn load(&self, offset: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_xdp_load_bytes(self.0.ctx.cast(), offset, dst.cast(), len) == 0 }
    }
}

struct Tc<'a>(&'a TcContext);

impl PayloadSource for Tc<'_> {
    #[inline(always)]
    fn load(&self, offset: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_skb_load_bytes(self.0.skb.skb.cast_const().cast(), offset, dst.cast(), len) == 0 }
    }
}

#[inline(always)]
fn try_ingress(ctx: &XdpContext, mode: u32) -> Result<u8, ()> {
    let counters = counters(HOOK_INGRESS)?;
    // SAFETY: XDP's packet pointers, used only within this call.
    let pkt = unsafe { Cursor::from_raw(ctx.data(), ctx.data_end()) };
    // Multi-buffer frames: the tail is not in [data, data_end) but load_bytes reaches it.
    let outcome = match locate_and_parse(counters, &pkt) {
        Ok(mut tcp) => {
            // A sensor's packets take their direction from the home networks; a gateway's from
            // the hook. Non-TCP packets and parse errors stay under ingress either way.
            let hook = if mode & MODE_SENSOR != 0 { config::home_nets().hook_for(&tcp.endpoints) } else { HOOK_INGRESS as u8 };
            let counters = if hook == HOOK_INGRESS as u8 { counters } else { self::counters(HOOK_EGRESS)? };
            flow::count_tcp(&Xdp(ctx), counters, &mut tcp, hook, pkt.len())
        }
        Err(NotTcp::Protocol(slot)) => {
            counters.count_protocol(slot);
            0
        }
        Err(NotTcp::Error(reason)) => {
            counters.count_parse_error(reason);
            // Compiled out by the verifier unless the agent runs with --ebpf-log (level frozen at load).
            debug!(ctx, "ingress: passed a malformed packet, parse error {}", reason as u8);
            0
        }
        Err(NotTcp::BadOffset { endpoints, flags }) => {
            let hook = if mode & MODE_SENSOR != 0 { config::home_nets().hook_for(&endpoints) } else { HOOK_INGRESS as u8 };
            let counters = if hook == HOOK_INGRESS as u8 { counters } else { self::counters(HOOK_EGRESS)? };
            counters.count_tcp(flags);
            counters.count_parse_error(ParseError::BadTcpOffset);
            0
        }
    };
    Ok(outcome)
}

#[inline(always)]
fn try_egress(ctx: &TcContext) -> Result<(), ()> {
    let counters = counters(HOOK_EGRESS)?;
    let skb_len = ctx.len() as usize;
    // Locally built packets may keep headers outside the linear area: pull them in first, then
    // take the packet pointers once (a pull invalidates earlier ones).
    let linear = ctx.data_end() - ctx.data();
    if linear < skb_len && linear < 128 {
        let want = if skb_len < 128 { skb_len as u32 } else { 128 };
        let _ = ctx.pull_data(want);
    }
    // SAFETY: the packet pointers after the pull, used only within this call.
    let pkt = unsafe { Cursor::from_raw(ctx.data(), ctx.data_end()) };
    if let Some(reason) = handle(&Tc(ctx), counters, &pkt, HOOK_EGRESS as u8, skb_len) {
        debug!(ctx, "egress: passed a malformed packet, parse error {}", reason as u8);
    }
    Ok(())
}

/// The one parser in two steps: find the innermost IP packet (through any tunnel), then read the
/// segment there. Inside a tunnel the walk's state goes through memory before each IP layer and
/// before the segment is read: each tunnel is another way in, a different set of constants to the
/// verifier, which would walk everything after once per way (past 1M instructions); passed through
/// memory it is one unknown word, and the walks of all tunnels meet. A packet without a tunnel
/// keeps it in registers, as before tunnels were opened: its few ways in (VLAN tags, IP version)
/// are walked as they always were, and it pays no memory round trip.
#[inline(always)]
fn locate_and_parse(counters: &mut HookCounters, pkt: &Cursor<'_>) -> Result<parse::TcpPacket, NotTcp> {
    let at = parse::locate(pkt, config::parse_options(), &mut |state| flow::opaque(counters, state))?;
    let at = if at.in_tunnel() { parse::Located(flow::opaque(counters, at.0)) } else { at };
    parse::parse_at(pkt, at)
}

#[inline(always)]
fn counters(hook: u32) -> Result<&'static mut HookCounters, ()> {
    // SAFETY: per-CPU value, only this CPU touches it while the program runs.
    HOOK_COUNTERS.get_ptr_mut(hook).map(|p| unsafe { &mut *p }).ok_or(())
}

/// Count one egress packet; the parse error, if any, for the caller to log.
#[inline(always)]
fn handle<P: PayloadSource>(src: &P, counters: &mut HookCounters, pkt: &Cursor<'_>, hook: u8, frame_len: usize) -> Option<ParseError> {
    match locate_and_parse(counters, pkt) {
        Ok(mut tcp) => {
            // Egress never drops and never redirects: the outcome is for XDP only.
            let _ = flow::count_tcp(src, counters, &mut tcp, hook, frame_len);
        }
        Err(NotTcp::Protocol(slot)) => counters.count_protocol(slot),
        Err(NotTcp::Error(reason)) => {
            counters.count_parse_error(reason);
            return Some(reason);
        }
        Err(NotTcp::BadOffset { flags, .. }) => {
            counters.count_tcp(flags);
            counters.count_parse_error(ParseError::BadTcpOffset);
            return Some(ParseError::BadTcpOffset);
        }
    }
    None
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
