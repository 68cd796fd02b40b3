//! The kernel's flow table, mapped into our address space (`BPF_F_MMAPABLE`): read in place, no
//! syscall per flow. The kernel keeps writing while we read, so a slot can be caught mid-update;
//! every field is a plain counter, so the worst case is a value one packet old, fixed next poll.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::{Ebpf, maps::Map};
use probe_common::{
    flow::{FlowEntry, FlowKey},
    maps::FLOWS,
};

#[derive(Debug, thiserror::Error)]
pub enum FlowTableError {
    /// The object has no `FLOWS` array.
    #[error("the eBPF object has no {FLOWS} array")]
    Missing,
    /// mmap of the map failed (kernel without BPF_F_MMAPABLE support?).
    #[error("mapping the flow table: {0}")]
    Mmap(std::io::Error),
}

pub struct FlowTable {
    base: NonNull<FlowEntry>,
    slots: usize,
    bytes: usize,
}

// SAFETY: the mapping is shared memory we only read; it lives until drop.
unsafe impl Send for FlowTable {}

impl FlowTable {
    /// Map the `FLOWS` array of `ebpf`, which holds `slots` entries.
    pub fn map(ebpf: &Ebpf, slots: u32) -> Result<FlowTable, FlowTableError> {
        let Some(Map::Array(data)) = ebpf.map(FLOWS) else {
            return Err(FlowTableError::Missing);
        };
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = (slots as usize * size_of::<FlowEntry>()).next_multiple_of(page);
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a read-only shared mapping of a map fd; the kernel checks size and flags.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(FlowTableError::Mmap(std::io::Error::last_os_error()));
        }
        let base = NonNull::new(ptr.cast::<FlowEntry>()).ok_or(FlowTableError::Mmap(std::io::ErrorKind::InvalidData.into()))?;
        Ok(FlowTable { base, slots: slots as usize, bytes })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Every partition's copy of `key`'s flow except `skip_cpu`'s, from the kernel's slot formula.
    pub fn copies_of(&self, key: &FlowKey, slots_per_cpu: u32, skip_cpu: u32) -> Vec<FlowEntry> {
        let cpus = self.slots as u32 / slots_per_cpu.max(1);
        (0..cpus)
            .filter(|&cpu| cpu != skip_cpu)
            .map(|cpu| self.read(key.slot(cpu, slots_per_cpu - 1) as usize))
            .filter(|e| e.key.family != probe_common::flow::FAMILY_NONE && e.key == *key)
            .collect()
    }

    /// What changes with every packet counted in slot `i`: its `last_seen` and each side's
    /// packet count. `last_seen` alone is in jiffies, and two packets of one flow within one
    /// jiffy (a SYN/ACK and the RST our kernel answers it with, microseconds apart) leave it
    /// equal: a poll that read the slot between them would never see the second.
    pub fn stamp(&self, i: usize) -> (u64, u32, u32) {
        assert!(i < self.slots);
        // SAFETY: in bounds of the mapping; aligned u64 and u32 reads are not torn on our targets.
        unsafe {
            let e = self.base.as_ptr().add(i);
            (
                std::ptr::read_volatile(&raw const (*e).last_seen),
                std::ptr::read_volatile(&raw const (*e).sides[0].packets),
                std::ptr::read_volatile(&raw const (*e).sides[1].packets),
            )
        }
    }

    /// A copy of slot `i`.
    #[inline]
    pub fn read(&self, i: usize) -> FlowEntry {
        assert!(i < self.slots);
        // SAFETY: in bounds; FlowEntry is plain old data, any bit pattern is valid.
        unsafe { std::ptr::read_volatile(self.base.as_ptr().add(i)) }
    }
}

impl Drop for FlowTable {
    fn drop(&mut self) {
        // SAFETY: the mapping we made in `map`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}
