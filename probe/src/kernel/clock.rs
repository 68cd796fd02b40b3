//! Time, once, at the kernel boundary. The flow table stamps flows in jiffies (the cheapest clock a
//! packet can read) and events carry the monotonic clock; everything above this module sees
//! wall-clock ns. Two samples of `[jiffies, ns]`, taken by test-running the never-attached
//! `flagprobe_clock` program, give HZ and the origin; [`ToWall`] adds wall minus monotonic.
//! This is the agent's only reader of the system clocks.

use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{RawTracePoint, RawTracePointRunOptions, TestRun},
};
use probe_common::{
    event::PacketEvent,
    flow::FlowEntry,
    maps::{CLOCK, PROG_CLOCK},
};

/// The HZ values Linux is built with.
const KNOWN_HZ: [u64; 5] = [100, 250, 300, 1000, 1200];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub hz: u64,
    /// A sample: this many jiffies were this many monotonic ns.
    tick0: u64,
    ns0: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// The object lacks the clock program or map.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// Loading or test-running the clock program failed.
    #[error("sampling the kernel clocks: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// Reading the sample failed.
    #[error("reading the clock sample: {0}")]
    Map(#[from] aya::maps::MapError),
}

fn sample(ebpf: &mut Ebpf) -> Result<(u64, u64), ClockError> {
    let prog: &mut RawTracePoint = ebpf.program_mut(PROG_CLOCK).ok_or(ClockError::Missing(PROG_CLOCK))?.try_into()?;
    prog.test_run(RawTracePointRunOptions::new())?;
    let map: Array<&MapData, [u64; 2]> = Array::try_from(ebpf.map(CLOCK).ok_or(ClockError::Missing(CLOCK))?)?;
    let [j, ns] = map.get(&0, 0)?;
    Ok((j, ns))
}

impl Clock {
    /// Load the clock program (if needed) and calibrate from two samples `gap` apart.
    pub fn calibrate(ebpf: &mut Ebpf, gap: std::time::Duration) -> Result<Clock, ClockError> {
        let prog: &mut RawTracePoint = ebpf.program_mut(PROG_CLOCK).ok_or(ClockError::Missing(PROG_CLOCK))?.try_into()?;
        if prog.fd().is_err() {
            prog.load()?;
        }
        let (j1, n1) = sample(ebpf)?;
        std::thread::sleep(gap);
        let (j2, n2) = sample(ebpf)?;
        Ok(Clock::from_samples((j1, n1), (j2, n2)))
    }

    /// HZ is the known value nearest to what the two samples show.
    pub fn from_samples((j1, n1): (u64, u64), (j2, n2): (u64, u64)) -> Clock {
        let measured = (j2.saturating_sub(j1)) as f64 * 1e9 / (n2.saturating_sub(n1)).max(1) as f64;
        let hz =
            KNOWN_HZ.iter().copied().min_by(|a, b| (*a as f64 - measured).abs().total_cmp(&(*b as f64 - measured).abs())).unwrap_or(250);
        Clock { hz, tick0: j2, ns0: n2 }
    }

    pub fn ns_per_tick(&self) -> u64 {
        1_000_000_000 / self.hz
    }

    /// Jiffies → monotonic ns (within one jiffy). 0 stays 0: it means "never".
    pub fn to_ns(&self, ticks: u64) -> u64 {
        if ticks == 0 {
            return 0;
        }
        let delta = (ticks as i128 - self.tick0 as i128) * self.ns_per_tick() as i128;
        (self.ns0 as i128 + delta).max(1) as u64
    }

    /// A duration → jiffies, rounded up.
    pub fn ticks_for(&self, d: std::time::Duration) -> u64 {
        (d.as_nanos() as u64).div_ceil(self.ns_per_tick())
    }

    /// Jiffies now, from the monotonic clock.
    pub fn now_ticks(&self) -> u64 {
        let now = monotonic_now_ns();
        (self.tick0 as i128 + (now as i128 - self.ns0 as i128) / self.ns_per_tick() as i128).max(0) as u64
    }

    /// Kernel timestamps → wall-clock ns, as the clocks stand now.
    pub fn to_wall(self) -> ToWall {
        self.with_offset(wall_now_ns() as i64 - monotonic_now_ns() as i64)
    }

    /// Kernel timestamps → another timeline: monotonic ns plus `offset` (replay through the kernel
    /// puts packets at their capture time this way).
    pub fn with_offset(self, offset: i64) -> ToWall {
        ToWall { clock: self, offset }
    }
}

/// Converts kernel timestamps (jiffies in flows, monotonic ns in events) to wall-clock ns.
#[derive(Debug, Clone, Copy)]
pub struct ToWall {
    clock: Clock,
    /// Wall minus monotonic, ns.
    offset: i64,
}

impl ToWall {
    /// Monotonic ns → wall ns. 0 stays 0: it means "never".
    pub fn mono(&self, ns: u64) -> u64 {
        if ns == 0 { 0 } else { (ns as i64 + self.offset).max(1) as u64 }
    }

    /// Jiffies → wall ns. 0 stays 0.
    pub fn jiffies(&self, ticks: u64) -> u64 {
        self.mono(self.clock.to_ns(ticks))
    }

    /// Every timestamp of a kernel flow entry.
    pub fn entry(&self, e: &mut FlowEntry) {
        e.first_seen = self.jiffies(e.first_seen);
        e.last_seen = self.jiffies(e.last_seen);
        for s in &mut e.sides {
            s.last_rst_at = self.jiffies(s.last_rst_at);
        }
    }

    /// A ring-buffer event: its own timestamp (monotonic) and its flow history (jiffies).
    pub fn event(&self, ev: &mut PacketEvent) {
        ev.ts_ns = self.mono(ev.ts_ns);
        self.entry(&mut ev.flow_before);
    }
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock ns now.
pub fn wall_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_is_read_off_two_samples() {
        let c = Clock::from_samples((4_294_000_000, 10_000_000_000), (4_294_000_025, 10_100_000_000));
        assert_eq!(c.hz, 250);
        assert_eq!(c.to_ns(4_294_000_026), 10_104_000_000);
        assert_eq!(c.to_ns(0), 0);
        assert_eq!(c.ticks_for(std::time::Duration::from_secs(120)), 30_000);
        let c = Clock::from_samples((0, 0), (101, 100_500_000));
        assert_eq!(c.hz, 1000);
        let w = c.with_offset(5_000);
        assert_eq!((w.jiffies(0), w.jiffies(101), w.mono(7)), (0, 100_505_000, 5_007));
    }
}
