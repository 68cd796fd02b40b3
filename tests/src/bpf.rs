//! Baseline XDP programs for the benchmarks, loaded and attached with raw bpf(2) calls: a program
//! that only returns an action is what flagprobe's cost is measured against. Also the raw calls the
//! benchmarks make on loaded programs (test runs, program info).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub const XDP_DROP: u8 = 1;
pub const XDP_PASS: u8 = 2;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_XDP`, the attach type of an XDP link.
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_DRV_MODE`: native (driver) mode, as flagprobe attaches.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `r0 = action; exit`, loaded with BPF_PROG_LOAD.
pub fn xdp_returning(action: u8) -> OwnedFd {
    #[repr(C)]
    #[derive(Default)]
    struct Load {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, action, 0, 0, 0]), u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0])];
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"fp_empty\0");
    let mut attr = Load {
        prog_type: 6, // XDP
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: c"GPL".as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_XDP,
        ..Default::default()
    };
    bpf_fd(BPF_PROG_LOAD, &mut attr, "loading the empty XDP program")
}

/// Attach `prog` in driver mode to interface `ifindex` of the calling thread's namespace; the
/// program stays attached while the returned link lives.
pub fn attach_xdp(prog: &OwnedFd, ifindex: u32) -> OwnedFd {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    #[derive(Default)]
    struct Link {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        _rest: [u64; 4],
    }
    let mut attr = Link {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
        ..Default::default()
    };
    bpf_fd(BPF_LINK_CREATE, &mut attr, "attaching the XDP program")
}

/// A loaded program's id and the instructions the verifier walked to accept it
/// (BPF_OBJ_GET_INFO_BY_FD: `bpf_prog_info.id` at byte 4, `verified_insns` at byte 216; the
/// kernel fills only the bytes asked for).
pub fn prog_info(prog: BorrowedFd<'_>) -> (u32, u32) {
    #[repr(C)]
    struct InfoAttr {
        fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = [0u32; 56];
    let mut attr = InfoAttr { fd: prog.as_raw_fd() as u32, info_len: size_of_val(&info) as u32, info: info.as_mut_ptr() as u64 };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr, "BPF_OBJ_GET_INFO_BY_FD");
    (info[1], info[216 / 4])
}

/// A bpf(2) command; its return value. `attr` is the command's `#[repr(C)]` attribute, and any
/// buffer it points at must outlive the call.
pub fn bpf<T>(cmd: libc::c_long, attr: &mut T, what: &str) -> i64 {
    // SAFETY: `attr` is a live, correctly sized attribute for `cmd` (each caller's struct).
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
    assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
    rc
}

/// A bpf(2) command that returns a new descriptor.
fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T, what: &str) -> OwnedFd {
    let fd = bpf(cmd, attr, what);
    // SAFETY: a fresh descriptor we own.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}
