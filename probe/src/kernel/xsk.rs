//! A sensor's AF_XDP sockets: the XDP program redirects each notable frame, whole, to the socket
//! bound to its receive queue, so the evidence file holds the frame as it was on the wire instead
//! of the ring buffer's head of it. Receive only: one UMEM per socket, a fill ring the reader keeps
//! stocked, and the RX ring it drains. Zero-copy where the driver allows, copy mode otherwise (veth).
//!
//! Written against the kernel's UAPI (`linux/if_xdp.h`) directly: the rings are four mmap'd arrays
//! with a producer and a consumer index each, and nothing more is needed to read frames.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::atomic::{AtomicU32, Ordering},
};

/// UMEM chunk size: frames up to 2048 bytes less the kernel's headroom fit; a larger one is not
/// delivered (the kernel counts it in the socket's statistics) and the ring buffer's head stands in.
const CHUNK: u32 = 2048;
/// Chunks per socket, and the depth of each ring (a power of two).
const CHUNKS: u32 = 1024;

/// An mmap'd ring: producer and consumer indexes and the descriptor array.
struct Ring {
    base: *mut u8,
    len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    desc: *mut u8,
}

impl Ring {
    /// Map ring `pgoff` of `fd` with `off`'s layout and `entry` bytes per descriptor.
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, pgoff: u64, entry: usize) -> io::Result<Ring> {
        let len = off.desc as usize + CHUNKS as usize * entry;
        // SAFETY: a shared mapping of the socket's ring, unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as i64,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = base.cast::<u8>();
        // SAFETY: offsets inside the mapping, as the kernel reported them.
        unsafe {
            Ok(Ring {
                base,
                len,
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                desc: base.add(off.desc as usize),
            })
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: a u32 in the live mapping, shared with the kernel: accessed atomically only.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// One bound AF_XDP socket and its UMEM.
pub struct XskSocket {
    fd: OwnedFd,
    umem: *mut u8,
    umem_len: usize,
    fill: Ring,
    rx: Ring,
    _completion: Ring,
    /// "zero-copy" or "copy".
    pub mode: &'static str,
}

// SAFETY: the mappings belong to this socket alone and are used by one thread at a time.
unsafe impl Send for XskSocket {}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn set<T>(fd: RawFd, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T of the size given.
    check(unsafe { libc::setsockopt(fd, libc::SOL_XDP, opt, (value as *const T).cast(), size_of::<T>() as libc::socklen_t) })
}

impl XskSocket {
    /// A socket bound to queue `queue` of interface `ifindex`, its fill ring stocked.
    pub fn open(ifindex: u32, queue: u32) -> io::Result<XskSocket> {
        // SAFETY: plain syscalls; every result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        check(raw)?;
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem_len = (CHUNK * CHUNKS) as usize;
        // SAFETY: an anonymous private mapping, unmapped in Drop.
        let umem = unsafe {
            libc::mmap(std::ptr::null_mut(), umem_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if umem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let umem = umem.cast::<u8>();
        let socket = Self::setup(fd, umem, umem_len, ifindex, queue);
        if socket.is_err() {
            // SAFETY: the mapping above; nothing else refers to it on this path.
            unsafe { libc::munmap(umem.cast(), umem_len) };
        }
        socket
    }

    fn setup(fd: OwnedFd, umem: *mut u8, umem_len: usize, ifindex: u32, queue: u32) -> io::Result<XskSocket> {
        let raw = fd.as_raw_fd();
        let reg =
            libc::xdp_umem_reg { addr: umem as u64, len: umem_len as u64, chunk_size: CHUNK, headroom: 0, flags: 0, tx_metadata_len: 0 };
        set(raw, libc::XDP_UMEM_REG, &reg)?;
        for opt in [libc::XDP_UMEM_FILL_RING, libc::XDP_UMEM_COMPLETION_RING, libc::XDP_RX_RING] {
            set(raw, opt, &CHUNKS)?;
        }
        // SAFETY: an all-zero xdp_mmap_offsets is valid; the kernel fills it.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is writable for `len` bytes.
        check(unsafe {
            libc::getsockopt(raw, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS, (&mut off as *mut libc::xdp_mmap_offsets).cast(), &mut len)
        })?;
        let rx = Ring::map(raw, &off.rx, libc::XDP_PGOFF_RX_RING as u64, size_of::<libc::xdp_desc>())?;
        let fill = Ring::map(raw, &off.fr, libc::XDP_UMEM_PGOFF_FILL_RING, 8)?;
        let completion = Ring::map(raw, &off.cr, libc::XDP_UMEM_PGOFF_COMPLETION_RING, 8)?;
        // Every chunk goes to the kernel up front.
        for i in 0..CHUNKS {
            // SAFETY: slot i of the fill ring's CHUNKS u64 descriptors.
            unsafe { fill.desc.cast::<u64>().add(i as usize).write(u64::from(i * CHUNK)) };
        }
        fill.producer().store(CHUNKS, Ordering::Release);
        let mut socket = XskSocket { fd, umem, umem_len, fill, rx, _completion: completion, mode: "zero-copy" };
        if socket.bind(ifindex, queue, libc::XDP_ZEROCOPY).is_err() {
            socket.bind(ifindex, queue, libc::XDP_COPY)?;
            socket.mode = "copy";
        }
        Ok(socket)
    }

    fn bind(&self, ifindex: u32, queue: u32, flags: u16) -> io::Result<()> {
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: a valid sockaddr_xdp of the size given.
        check(unsafe {
            libc::bind(self.fd.as_raw_fd(), (&addr as *const libc::sockaddr_xdp).cast(), size_of::<libc::sockaddr_xdp>() as libc::socklen_t)
        })
    }

    /// Hand every received frame to `each`, then give its chunk back to the kernel. Returns how
    /// many were read.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) -> u32 {
        let cons = self.rx.consumer().load(Ordering::Relaxed);
        let prod = self.rx.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons);
        if n == 0 {
            return 0;
        }
        let fill_at = self.fill.producer().load(Ordering::Relaxed);
        for i in 0..n {
            let slot = (cons.wrapping_add(i) & (CHUNKS - 1)) as usize;
            // SAFETY: slot < CHUNKS descriptors in the RX ring, published by the producer index.
            let desc = unsafe { self.rx.desc.cast::<libc::xdp_desc>().add(slot).read() };
            let (addr, len) = (desc.addr as usize, desc.len as usize);
            if addr + len <= self.umem_len {
                // SAFETY: inside the UMEM, written by the kernel before it moved the producer.
                each(unsafe { std::slice::from_raw_parts(self.umem.add(addr), len) });
            }
            // The chunk's base goes back to the fill ring (the descriptor may point past it).
            let chunk = desc.addr & !u64::from(CHUNK - 1);
            let fslot = (fill_at.wrapping_add(i) & (CHUNKS - 1)) as usize;
            // SAFETY: the fill ring holds CHUNKS descriptors and at most CHUNKS chunks are out.
            unsafe { self.fill.desc.cast::<u64>().add(fslot).write(chunk) };
        }
        self.rx.consumer().store(prod, Ordering::Release);
        self.fill.producer().store(fill_at.wrapping_add(n), Ordering::Release);
        n
    }

    /// Frames the kernel could not deliver (ring full, frame too large for a chunk).
    pub fn dropped(&self) -> u64 {
        // SAFETY: zeroed is a valid xdp_statistics; the kernel fills it.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `st` is writable for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut st as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        if rc < 0 { 0 } else { st.rx_dropped + st.rx_invalid_descs + st.rx_ring_full }
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for XskSocket {
    fn drop(&mut self) {
        // SAFETY: the UMEM mapping made in `open`; the rings unmap themselves after this.
        unsafe { libc::munmap(self.umem.cast(), self.umem_len) };
    }
}

/// Receive queues of `iface` (at least one), from sysfs.
pub fn rx_queues(iface: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count() as u32)
        .unwrap_or(1)
        .max(1)
}

/// A whole notable frame and the interface it came from.
pub struct IfaceFrame {
    pub iface_index: usize,
    pub frame: Vec<u8>,
}

/// One thread per sensor interface: waits on its sockets and forwards each frame to the engine
/// over a bounded channel (a full channel drops the frame; the event's head of it remains).
pub fn spawn_reader(
    iface: &str,
    iface_index: usize,
    mut sockets: Vec<XskSocket>,
    tx: crossbeam_channel::Sender<IfaceFrame>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    read: prometheus::IntCounter,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("frames-{iface}")).spawn(move || {
        let mut pfds: Vec<libc::pollfd> =
            sockets.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: valid pollfds; the timeout bounds how long a shutdown waits.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
            for socket in &mut sockets {
                let n = socket.drain(|frame| {
                    let _ = tx.try_send(IfaceFrame { iface_index, frame: frame.to_vec() });
                });
                read.inc_by(u64::from(n));
            }
        }
    })
}
