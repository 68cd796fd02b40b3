//! The kernel's flow table stamps flows in jiffies (the cheapest clock a packet can read); the
//! agent turns them into monotonic ns. Two samples of `[jiffies, ns]`, taken by test-running the
//! never-attached `flagprobe_clock` program, give HZ and the origin.

use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{RawTracePoint, RawTracePointRunOptions, TestRun},
};
use probe_common::{
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
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        (self.tick0 as i128 + (now as i128 - self.ns0 as i128) / self.ns_per_tick() as i128).max(0) as u64
    }

    /// Every timestamp of a kernel flow entry, to monotonic ns.
    pub fn entry_to_ns(&self, e: &mut FlowEntry) {
        e.first_seen = self.to_ns(e.first_seen);
        e.last_seen = self.to_ns(e.last_seen);
        for s in &mut e.sides {
            s.last_rst_at = self.to_ns(s.last_rst_at);
        }
    }
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
    }
}
