//! What the host itself says about its network: the default-route interface and its own addresses,
//! the defaults for `--iface` and `--home-net`.

use std::{
    ffi::CStr,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;

/// The interface of the IPv4 default route (`/proc/net/route`), else of the IPv6 one.
pub fn default_route_iface() -> io::Result<String> {
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        // Iface Destination Gateway Flags ... Metric Mask: pick the lowest-metric 0.0.0.0/0.
        let best = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000")
                    .then(|| (f[6].parse::<u32>().unwrap_or(u32::MAX), f[0].to_string()))
            })
            .min();
        if let Some((_, name)) = best {
            return Ok(name);
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 10 && f[0] == "00000000000000000000000000000000" && f[1] == "00" && f[9] != "lo" {
                return Ok(f[9].to_string());
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, "no default route; pass --iface"))
}

/// Every address assigned to this host (loopback excluded), each as a host route.
pub fn local_addresses() -> io::Result<Vec<IpNet>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; we only read it in between.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if name == "lo" {
            continue;
        }
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        let addr = match family {
            libc::AF_INET => {
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        let net = IpNet::from(addr);
        if !out.contains(&net) {
            out.push(net);
        }
    }
    unsafe { libc::freeifaddrs(head) };
    if out.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "this host has no addresses; pass --home-net"));
    }
    Ok(out)
}
