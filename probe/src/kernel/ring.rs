//! The ring-buffer reader: one thread per interface waits on the ring buffer's fd and forwards each
//! [`PacketEvent`] to the engine over a bounded channel. A full channel drops the event and counts
//! it — the reader never blocks the kernel's producer for long. When told to stop it drains what
//! the kernel has already written first, so a shutdown loses no event.

use std::{
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use aya::maps::{MapData, RingBuf};
use crossbeam_channel::{Sender, TrySendError};
use probe_common::event::PacketEvent;

use prometheus::IntCounter;

/// An event and the interface it came from.
#[derive(Clone, Copy)]
pub struct IfaceEvent {
    pub iface_index: usize,
    pub event: PacketEvent,
}

/// Decode one ring-buffer record; `None` if it is too short (a different object version).
pub fn decode(bytes: &[u8]) -> Option<PacketEvent> {
    (bytes.len() >= size_of::<PacketEvent>()).then(|| {
        // SAFETY: long enough; PacketEvent is plain old data.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<PacketEvent>()) }
    })
}

/// The counters a reader keeps: events read, and events dropped because the engine's queue was full.
pub struct ReaderCounters {
    pub received: IntCounter,
    pub dropped: IntCounter,
}

pub fn spawn(
    iface: Arc<str>,
    iface_index: usize,
    mut ring: RingBuf<MapData>,
    tx: Sender<IfaceEvent>,
    stop: Arc<AtomicBool>,
    counters: ReaderCounters,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("events-{iface}")).spawn(move || {
        let mut pfd = libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if !stopping {
                // SAFETY: one valid pollfd; the timeout bounds how long a shutdown waits.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
            while let Some(item) = ring.next() {
                let Some(event) = decode(&item) else { continue };
                drop(item);
                counters.received.inc();
                match tx.try_send(IfaceEvent { iface_index, event }) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => counters.dropped.inc(),
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
            if stopping {
                return;
            }
        }
    })
}
