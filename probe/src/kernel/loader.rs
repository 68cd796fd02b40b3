//! Load the eBPF object with this run's sizes, attach XDP on ingress and TC on egress, and say which
//! XDP mode we got. Dropping [`Probe`] detaches both programs (aya owns the links).

use std::path::Path;

use std::os::fd::AsRawFd;

use aya::maps::{MapData, PerCpuArray, PerCpuValues, XskMap};
use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode},
};
use probe_common::{
    aggregate::Aggregates,
    counters::{HOOKS, HookCounters},
    home::HomePrefixes,
    maps::{
        AGGREGATES, EVENTS, FLOWS, GLOBAL_DROP_POLICY, GLOBAL_EVENT_RATE, GLOBAL_FLOW_PARTITIONS, GLOBAL_FLOW_SLOT_MASK, GLOBAL_HOME_NETS,
        GLOBAL_LINK_IP, GLOBAL_PROGRAM_MODE, GLOBAL_SYN_TRACK_RATE, GLOBAL_VXLAN_PORT, HOOK_COUNTERS, PROG_TC, PROG_XDP, XSK_QUEUES_MAX,
        XSKS,
    },
};

use super::{
    XdpMode,
    clock::{Clock, ClockError},
    xsk::{self, XskSocket},
};

/// The object `cargo xtask build-ebpf` produced when this binary was built (empty if it had not).
static EMBEDDED_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flagprobe-ebpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The running kernel is older than the programs can load on.
    #[error("{0}")]
    KernelTooOld(String),
    /// No object was embedded at build time and none was given.
    #[error("this flagprobe was built without its eBPF object: build it with `cargo xtask build`, or pass --ebpf-object")]
    NoObject,
    /// Reading `--ebpf-object` failed.
    #[error("reading eBPF object {path}: {source}")]
    ReadObject { path: String, source: std::io::Error },
    /// The kernel refused the object (verifier, permissions, missing feature).
    #[error("loading the eBPF object: {0} (are you root, with CAP_BPF and CAP_NET_ADMIN?)")]
    Load(#[from] aya::EbpfError),
    /// The object lacks a program or map this agent needs.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// The kernel refused a program.
    #[error("{what}: {}", short(source))]
    Program { what: String, source: ProgramError },
    /// A map could not be read.
    #[error("reading {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    /// Counting CPUs failed.
    #[error("reading the possible CPUs: {0}")]
    Cpus(std::io::Error),
    /// The kernel clocks could not be sampled.
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// An AF_XDP socket for the sensor's whole frames could not be set up.
    #[error("AF_XDP socket on {iface}: {source}{}", socket_hint(source))]
    Socket { iface: String, source: std::io::Error },
    /// Writing the idle setting into the counters failed.
    #[error("initialising {HOOK_COUNTERS}: {0}")]
    Counters(aya::maps::MapError),
}

/// What to change when the socket family itself is refused: under systemd that is the unit's
/// `RestrictAddressFamilies=` (a seccomp filter answers EAFNOSUPPORT), which the sensor drop-in adds.
fn socket_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) => {
            " (under systemd, sensor mode needs RestrictAddressFamilies=AF_XDP: install flagprobe-sensor.conf as a drop-in)"
        }
        Some(libc::EPERM) => " (sensor mode needs CAP_NET_RAW and CAP_IPC_LOCK besides the gateway's capabilities)",
        _ => "",
    }
}

/// A verifier log runs to thousands of lines: keep the head and the tail, where the reason is.
fn short(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 30 {
        return text;
    }
    format!("{}\n  [... {} verifier lines ...]\n{}", lines[..3].join("\n"), lines.len() - 15, lines[lines.len() - 12..].join("\n"))
}

/// Sizes and limits fixed at load time.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Flow-table slots over all CPUs.
    pub flow_capacity: u32,
    pub flow_idle_ns: u64,
    pub event_rate: u64,
    /// Inbound SYNs per second per CPU tracked in the flow table (0: all).
    pub syn_track_rate: u64,
    /// Kernel-side debug logs (aya-log); off freezes the level at 0 and the verifier drops them.
    pub ebpf_log: bool,
    /// `action::MODE_*` bits: gateway (0) or sensor, sensor-pass, drop dry run.
    pub mode: u32,
    /// `action::DROP_*` bits (`--drop`), 0 for none.
    pub drop_policy: u8,
    /// The home networks, for a sensor's direction.
    pub home: HomePrefixes,
    /// The UDP port opened as VXLAN.
    pub vxlan_port: u16,
    /// The interface has no Ethernet header: its frames start at the IP header.
    pub link_ip: bool,
}

impl Default for LoadOptions {
    /// A gateway at the default sizes, dropping nothing.
    fn default() -> Self {
        LoadOptions {
            flow_capacity: probe_common::maps::DEFAULT_FLOW_CAPACITY,
            flow_idle_ns: 120_000_000_000,
            event_rate: probe_common::maps::DEFAULT_EVENT_RATE,
            syn_track_rate: probe_common::maps::DEFAULT_SYN_TRACK_RATE,
            ebpf_log: false,
            mode: 0,
            drop_policy: 0,
            home: HomePrefixes::default(),
            vxlan_port: probe_common::parse::VXLAN_PORT_DEFAULT,
            link_ip: false,
        }
    }
}

impl LoadOptions {
    /// Sensor mode: only the XDP program is attached.
    pub fn sensor(&self) -> bool {
        self.mode & probe_common::action::MODE_SENSOR != 0
    }
}

/// aya-log's level numbers: 0 logs nothing, 4 is debug.
const LOG_OFF: u8 = 0;
const LOG_DEBUG: u8 = 4;

/// The table's geometry: `cpus` partitions of `slots_per_cpu` slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowGeometry {
    pub cpus: u32,
    pub slots_per_cpu: u32,
}

impl FlowGeometry {
    pub fn for_capacity(capacity: u32, cpus: u32) -> Self {
        let per_cpu = capacity.div_ceil(cpus.max(1)).max(64).next_power_of_two();
        FlowGeometry { cpus, slots_per_cpu: per_cpu }
    }
    pub fn slots(&self) -> u32 {
        self.cpus * self.slots_per_cpu
    }
}

/// A loaded (and maybe attached) copy of the programs and their maps.
pub struct Probe {
    pub ebpf: Ebpf,
    pub geometry: FlowGeometry,
    pub options: LoadOptions,
    /// How to read the flow table's jiffies.
    pub clock: Clock,
}

/// The object to load: `--ebpf-object` or the embedded one.
pub fn object_bytes(path: Option<&Path>) -> Result<Vec<u8>, LoadError> {
    match path {
        Some(p) => std::fs::read(p).map_err(|source| LoadError::ReadObject { path: p.display().to_string(), source }),
        None if EMBEDDED_OBJECT.is_empty() => Err(LoadError::NoObject),
        None => Ok(EMBEDDED_OBJECT.to_vec()),
    }
}

/// Load both programs into the kernel without attaching them (tests run them with
/// BPF_PROG_TEST_RUN; [`Probe::attach`] attaches).
pub fn load(object: &[u8], options: LoadOptions) -> Result<Probe, LoadError> {
    if let Some(why) = super::features::running().and_then(super::features::too_old) {
        return Err(LoadError::KernelTooOld(why));
    }
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| LoadError::Cpus(e))? as u32;
    let geometry = FlowGeometry::for_capacity(options.flow_capacity, cpus);
    let mask = geometry.slots_per_cpu - 1;
    let drop_policy = u32::from(options.drop_policy);
    let (vxlan_port, link_ip) = (u32::from(options.vxlan_port), u32::from(options.link_ip));
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(FLOWS, geometry.slots())
        .override_global(GLOBAL_FLOW_SLOT_MASK, &mask, true)
        .override_global(GLOBAL_FLOW_PARTITIONS, &geometry.cpus, true)
        .override_global(GLOBAL_PROGRAM_MODE, &options.mode, true)
        .override_global(GLOBAL_DROP_POLICY, &drop_policy, true)
        .override_global(GLOBAL_HOME_NETS, &options.home, true)
        .override_global(GLOBAL_EVENT_RATE, &options.event_rate, true)
        .override_global(GLOBAL_SYN_TRACK_RATE, &options.syn_track_rate, true)
        .override_global(GLOBAL_VXLAN_PORT, &vxlan_port, true)
        .override_global(GLOBAL_LINK_IP, &link_ip, true)
        .override_global(aya_log::LEVEL, if options.ebpf_log { &LOG_DEBUG } else { &LOG_OFF }, true)
        .load(object)?;
    for name in [FLOWS, HOOK_COUNTERS, EVENTS, AGGREGATES] {
        ebpf.map(name).ok_or(LoadError::Missing(name))?;
    }
    let xdp: &mut Xdp = program(&mut ebpf, PROG_XDP)?;
    xdp.load().map_err(|source| LoadError::Program { what: format!("loading {PROG_XDP}"), source })?;
    let tc: &mut SchedClassifier = program(&mut ebpf, PROG_TC)?;
    tc.load().map_err(|source| LoadError::Program { what: format!("loading {PROG_TC}"), source })?;
    let clock = Clock::calibrate(&mut ebpf, std::time::Duration::from_millis(60))?;
    set_counter_settings(&mut ebpf, clock.ticks_for(std::time::Duration::from_nanos(options.flow_idle_ns)), clock.hz)?;
    Ok(Probe { ebpf, geometry, options, clock })
}

/// Write the settings only the agent can compute (it knows HZ) into every CPU's counters, before
/// anything is attached: the idle threshold and one second, both in jiffies.
fn set_counter_settings(ebpf: &mut Ebpf, idle_ticks: u64, hz: u64) -> Result<(), LoadError> {
    let map = ebpf.map_mut(HOOK_COUNTERS).ok_or(LoadError::Missing(HOOK_COUNTERS))?;
    let mut array: PerCpuArray<&mut aya::maps::MapData, HookCounters> = PerCpuArray::try_from(map).map_err(LoadError::Counters)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| LoadError::Cpus(e))?;
    for hook in 0..HOOKS {
        let settings = HookCounters { flow_idle_ticks: idle_ticks, syn_window_ticks: hz, ..HookCounters::default() };
        let values = PerCpuValues::try_from(vec![settings; cpus]).map_err(|e| LoadError::Counters(aya::maps::MapError::from(e)))?;
        array.set(hook, values, 0).map_err(LoadError::Counters)?;
    }
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(LoadError::Missing(name))?;
    prog.try_into().map_err(|source| LoadError::Program { what: format!("{name} has the wrong type"), source })
}

impl Probe {
    /// The hook counters, summed over CPUs.
    pub fn counters(&self) -> Result<[HookCounters; HOOKS as usize], LoadError> {
        let map = self.ebpf.map(HOOK_COUNTERS).ok_or(LoadError::Missing(HOOK_COUNTERS))?;
        let array: PerCpuArray<&MapData, HookCounters> =
            PerCpuArray::try_from(map).map_err(|source| LoadError::Map { map: HOOK_COUNTERS, source })?;
        let mut out = [HookCounters::default(); HOOKS as usize];
        for (hook, total) in out.iter_mut().enumerate() {
            let values = array.get(&(hook as u32), 0).map_err(|source| LoadError::Map { map: HOOK_COUNTERS, source })?;
            for cpu in values.iter() {
                total.add(cpu);
            }
        }
        Ok(out)
    }

    /// Every CPU's flood-proof aggregates (timestamps in jiffies).
    pub fn aggregates(&self) -> Result<Vec<Aggregates>, LoadError> {
        let map = self.ebpf.map(AGGREGATES).ok_or(LoadError::Missing(AGGREGATES))?;
        let array: PerCpuArray<&MapData, Aggregates> =
            PerCpuArray::try_from(map).map_err(|source| LoadError::Map { map: AGGREGATES, source })?;
        let values = array.get(&0, 0).map_err(|source| LoadError::Map { map: AGGREGATES, source })?;
        Ok(values.iter().copied().collect())
    }

    /// Forward the programs' log records to our logger (tracing, through the `log` bridge) from a
    /// thread of their own; only with `ebpf_log`.
    pub fn start_log_reader(&mut self, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Option<std::thread::JoinHandle<()>> {
        if !self.options.ebpf_log {
            return None;
        }
        let mut logger = match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "kernel-side logging unavailable");
                return None;
            }
        };
        std::thread::Builder::new()
            .name("ebpf-log".into())
            .spawn(move || {
                use std::os::fd::AsRawFd;
                let mut pfd = libc::pollfd { fd: logger.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: one valid pollfd; the timeout bounds how long a shutdown waits.
                    unsafe { libc::poll(&mut pfd, 1, 200) };
                    logger.flush();
                }
            })
            .ok()
    }

    /// Sensor mode: one AF_XDP socket per receive queue of `iface` (the program is attached), each
    /// registered in the XSKS map so notable frames reach it whole.
    pub fn open_sockets(&mut self, iface: &str) -> Result<Vec<XskSocket>, LoadError> {
        let name = std::ffi::CString::new(iface)
            .map_err(|_| LoadError::Socket { iface: iface.into(), source: std::io::ErrorKind::InvalidInput.into() })?;
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(LoadError::Socket { iface: iface.into(), source: std::io::Error::last_os_error() });
        }
        let map = self.ebpf.map_mut(XSKS).ok_or(LoadError::Missing(XSKS))?;
        let mut xsks: XskMap<&mut MapData> = XskMap::try_from(map).map_err(|source| LoadError::Map { map: XSKS, source })?;
        let mut sockets = Vec::new();
        for queue in 0..xsk::rx_queues(iface).min(XSK_QUEUES_MAX) {
            let socket = XskSocket::open(ifindex, queue).map_err(|source| LoadError::Socket { iface: iface.into(), source })?;
            xsks.set(queue, socket.as_raw_fd(), 0).map_err(|source| LoadError::Map { map: XSKS, source })?;
            sockets.push(socket);
        }
        Ok(sockets)
    }

    /// Attach XDP (ingress) and, unless a sensor, TC (egress) to `iface`; returns the XDP mode in effect.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<&'static str, LoadError> {
        let xdp: &mut Xdp = program(&mut self.ebpf, PROG_XDP)?;
        let attach = |xdp: &mut Xdp, m: AyaXdpMode| xdp.attach(iface, m).map(|_| ());
        let used = match mode {
            XdpMode::Driver => attach(xdp, AyaXdpMode::Driver).map(|_| "driver"),
            XdpMode::Generic => attach(xdp, AyaXdpMode::Skb).map(|_| "generic"),
            XdpMode::Auto => match attach(xdp, AyaXdpMode::Driver) {
                Ok(()) => Ok("driver"),
                Err(e) => {
                    tracing::warn!(iface, error = %e, "driver-mode XDP refused; falling back to generic (skb) mode, which costs more per packet");
                    attach(xdp, AyaXdpMode::Skb).map(|_| "generic")
                }
            },
        }
        .map_err(|source| LoadError::Program { what: format!("attaching XDP to {iface}"), source })?;
        if self.options.sensor() {
            // A mirror port carries copies both ways on ingress; nothing of ours leaves through it.
            return Ok(used);
        }
        let tc: &mut SchedClassifier = program(&mut self.ebpf, PROG_TC)?;
        // Kernels >= 6.6 attach through tcx and need no qdisc; older ones want clsact, which an
        // interface may already have (adding it again fails harmlessly).
        let clsact = aya::programs::tc::qdisc_add_clsact(iface);
        tc.attach(iface, TcAttachType::Egress).map_err(|source| {
            let what = match clsact {
                // Without the egress hook every answer to our own SYNs would look unsolicited:
                // refuse rather than run half-blind.
                Err(e) if !e.to_string().contains("exists") => format!(
                    "attaching TC egress to {iface} (the clsact qdisc could not be added: {e}; before Linux 6.6 TC programs \
                     need the sch_ingress and cls_bpf modules: `modprobe sch_ingress cls_bpf`)"
                ),
                _ => format!("attaching TC egress to {iface}"),
            };
            LoadError::Program { what, source }
        })?;
        Ok(used)
    }
}
