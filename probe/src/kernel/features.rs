//! What the running kernel offers the programs, said at start in plain words: the oldest kernel
//! the programs can load on, and for each later feature what falls back without it. A gateway's
//! kernel is often older than a workstation's (Debian 12 runs 6.1, OpenWrt 23.05 runs 5.15); an
//! operator should read "TC attaches through clsact" or "needs 5.18", never a verifier dump alone.
//!
//! The table is what `cargo xtask vm-test` proves on Debian's 6.1 and 6.12 and the host's own
//! kernel (the README's kernel table); below [`MINIMUM`] the programs use a helper that does not
//! exist, so loading would fail anyway, with a worse message.

/// A kernel release as `(major, minor)`.
pub type Release = (u32, u32);

/// The oldest kernel the programs load on, and why: the XDP program copies a notable packet's
/// head with `bpf_xdp_load_bytes` (5.18), which also reaches the tail of a multi-buffer frame.
/// The rest it needs came earlier: ring buffers (5.8), mmap-able arrays and `bpf_jiffies64`
/// (5.5), BPF_PROG_TEST_RUN of a raw tracepoint for the clock (5.10).
pub const MINIMUM: (Release, &str) = ((5, 18), "bpf_xdp_load_bytes, which copies a notable packet's head into its event");

/// Features newer than [`MINIMUM`] that flagprobe uses when the kernel has them, and what it
/// does instead on an older one.
pub const FALLBACKS: &[(Release, &str, &str)] =
    &[((6, 6), "tcx links for TC programs", "TC egress attaches through a clsact qdisc (added if missing) with a netlink filter")];

/// This kernel's release, from `uname -r` (`6.1.0-57-amd64` → `(6, 1)`); `None` if unreadable.
pub fn running() -> Option<Release> {
    parse(&std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
}

fn parse(release: &str) -> Option<Release> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The one-line error for a kernel below [`MINIMUM`], or `None` when it is recent enough.
pub fn too_old(release: Release) -> Option<String> {
    let ((major, minor), why) = MINIMUM;
    (release < (major, minor))
        .then(|| format!("this kernel is {}.{}; flagprobe needs Linux {major}.{minor} or newer ({why})", release.0, release.1))
}

/// One line per feature this kernel lacks, saying what falls back.
pub fn fallbacks(release: Release) -> Vec<String> {
    FALLBACKS
        .iter()
        .filter(|(since, _, _)| release < *since)
        .map(|((major, minor), feature, instead)| {
            format!("kernel {}.{} has no {feature} ({major}.{minor}+): {instead}", release.0, release.1)
        })
        .collect()
}

/// ARPHRD_ETHER: the link type of Ethernet, veth, bridges, VXLAN and gretap devices.
const ARPHRD_ETHER: u32 = 1;

/// Whether `iface` carries no Ethernet header (PPP, GRE, IPIP, SIT, WireGuard and other
/// tun-like devices: `/sys/class/net/IFACE/type` is not ARPHRD_ETHER), so its frames start at IP.
/// An interface whose type cannot be read is taken as Ethernet, as before this was asked.
pub fn link_is_ip(iface: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/type"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .is_some_and(|t| t != ARPHRD_ETHER && t != ARPHRD_LOOPBACK)
}

/// The loopback device has an all-zero Ethernet header in front of every packet.
const ARPHRD_LOOPBACK: u32 = 772;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_as_debian_and_others_write_them() {
        assert_eq!(parse("6.1.0-57-amd64\n"), Some((6, 1)));
        assert_eq!(parse("6.12.118+deb12-amd64"), Some((6, 12)));
        assert_eq!(parse("5.15.150"), Some((5, 15)));
        assert_eq!(parse("garbage"), None);
    }

    #[test]
    fn an_old_kernel_is_refused_by_name_and_a_middle_one_told_what_falls_back() {
        assert!(too_old((5, 15)).unwrap().contains("needs Linux 5.18 or newer"));
        assert_eq!(too_old((6, 1)), None);
        let lines = fallbacks((6, 1));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("clsact"), "{lines:?}");
        assert!(fallbacks((6, 12)).is_empty());
    }
}
