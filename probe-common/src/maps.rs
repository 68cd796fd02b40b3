//! Map and global names and their default sizes; the eBPF program declares these maps and the agent
//! opens them by the same names.

/// Flow table: an mmap-able array split into one partition per CPU (see the kernel's `flow.rs`).
pub const FLOWS: &str = "FLOWS";
/// Per-CPU array of [`crate::counters::HookCounters`], one per hook.
pub const HOOK_COUNTERS: &str = "HOOK_COUNTERS";
/// Ring buffer of [`crate::event::PacketEvent`].
pub const EVENTS: &str = "EVENTS";
/// Per-CPU array of one `aggregate::Aggregates`: the counts a flood cannot push out.
pub const AGGREGATES: &str = "AGGREGATES";

/// Flow-table slots over all CPUs, unless configured otherwise. 32768 slots are 9 MiB in the kernel
/// and as much again in the agent's copy. Verdicts on floods come from the aggregates, not from the
/// table, and flood packets never push a proven connection out, so the table need only hold the
/// real connections; a busy gateway raises it with `--flow-capacity`.
pub const DEFAULT_FLOW_CAPACITY: u32 = 32_768;
/// Slots the object file declares; the loader resizes to `slots_per_cpu * possible CPUs`.
pub const FLOWS_ELF_ENTRIES: u32 = 1024;
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Global (a `.rodata` constant set at load): slots per CPU minus one; slots per CPU is a power of two.
pub const GLOBAL_FLOW_SLOT_MASK: &str = "FLOW_SLOT_MASK";
/// Global: ring-buffer events each CPU may send per second per hook.
pub const GLOBAL_EVENT_RATE: &str = "EVENT_RATE_PER_SEC";

/// Global: `action::MODE_*` bits (sensor, sensor-pass, drop dry run).
pub const GLOBAL_PROGRAM_MODE: &str = "PROGRAM_MODE";
/// Global: `action::DROP_*` bits the operator chose (`--drop`), 0 for none.
pub const GLOBAL_DROP_POLICY: &str = "DROP_POLICY";
/// Global: `home::HomePrefixes`, what a sensor's packets are counted against for direction.
pub const GLOBAL_HOME_NETS: &str = "HOME_NETS";
/// Global: inbound SYNs per second per CPU tracked in the flow table (0: all); the rest are counted
/// in the histogram and the aggregates only (`HookCounters::take_syn_budget`).
pub const GLOBAL_SYN_TRACK_RATE: &str = "SYN_TRACK_RATE_PER_SEC";
/// Inbound SYNs per second per CPU tracked in the flow table unless configured otherwise: far more
/// than a gateway's real connections open, far less than a spoofed flood sends.
pub const DEFAULT_SYN_TRACK_RATE: u64 = 2_000;
/// Global: the UDP port opened as VXLAN (`parse::ParseOptions::vxlan_port`), as a u32.
pub const GLOBAL_VXLAN_PORT: &str = "VXLAN_PORT";
/// Global: 1 when the interface has no Ethernet header (frames start at IP), else 0.
pub const GLOBAL_LINK_IP: &str = "LINK_IP";
/// Global: partitions of the flow table (possible CPUs); a drop check reads every one.
pub const GLOBAL_FLOW_PARTITIONS: &str = "FLOW_PARTITIONS";

/// Sensor mode: XSKMAP of AF_XDP sockets by receive queue, where notable frames go whole.
pub const XSKS: &str = "XSKS";
pub const XSK_QUEUES_MAX: u32 = 64;

/// One entry, `[jiffies, monotonic ns]`, written by [`PROG_CLOCK`] when the agent test-runs it: how
/// the agent learns to turn the flow table's jiffies into time.
pub const CLOCK: &str = "CLOCK";
pub const DEFAULT_EVENT_RATE: u64 = 5_000;

/// Names of the programs in the object file.
pub const PROG_XDP: &str = "flagprobe_ingress";
pub const PROG_TC: &str = "flagprobe_egress";
/// A raw-tracepoint program never attached, only run with BPF_PROG_TEST_RUN to sample both clocks.
pub const PROG_CLOCK: &str = "flagprobe_clock";
