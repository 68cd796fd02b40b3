//! The programs load and pass the verifier in every mode the agent can ask for, on whatever kernel
//! runs this test: the host's, and each of Debian's kernels that `cargo xtask vm-test` boots. Each
//! mode is a separate verification (the settings are constants the verifier prunes by), so a mode
//! that no test loads could be refused on a gateway while every other test passes. Prints the
//! instructions the verifier walked per program, for BENCHMARKS.md's kernel table.

use std::os::fd::AsFd;

use aya::programs::{SchedClassifier, Xdp};
use probe::kernel::{LoadOptions, loader};
use probe_common::{
    action::{DROP_INVALID_FLAGS, DROP_UNSOLICITED_SYN_ACK, MODE_DROP_DRY_RUN, MODE_SENSOR, MODE_SENSOR_PASS},
    flow::{FAMILY_V4, FAMILY_V6},
    home::{HOME_PREFIXES_MAX, HomePrefix, HomePrefixes},
    maps::{PROG_TC, PROG_XDP},
};
use tests::privileged;

/// The most home networks a sensor takes: the longest loop the verifier walks for direction.
fn every_home_net() -> HomePrefixes {
    let mut home = HomePrefixes { count: HOME_PREFIXES_MAX as u32, ..HomePrefixes::default() };
    for (i, net) in home.nets.iter_mut().enumerate() {
        let family = if i % 2 == 0 { FAMILY_V4 } else { FAMILY_V6 };
        let mut addr = [0u8; 16];
        addr[0] = 10;
        addr[1] = i as u8;
        *net = HomePrefix::new(addr, 16, family);
    }
    home
}

#[test]
fn every_mode_loads_and_passes_the_verifier() {
    if !privileged("every_mode_loads_and_passes_the_verifier") {
        return;
    }
    let gateway = LoadOptions::default();
    let modes: [(&str, LoadOptions); 8] = [
        ("gateway", gateway),
        ("gateway+ebpf-log", LoadOptions { ebpf_log: true, ..gateway }),
        ("drop", LoadOptions { drop_policy: DROP_UNSOLICITED_SYN_ACK | DROP_INVALID_FLAGS, ..gateway }),
        ("drop-dry-run", LoadOptions { drop_policy: DROP_UNSOLICITED_SYN_ACK | DROP_INVALID_FLAGS, mode: MODE_DROP_DRY_RUN, ..gateway }),
        ("sensor", LoadOptions { mode: MODE_SENSOR, home: every_home_net(), ..gateway }),
        ("sensor-pass+ebpf-log", LoadOptions { mode: MODE_SENSOR | MODE_SENSOR_PASS, home: every_home_net(), ebpf_log: true, ..gateway }),
        // An interface without an Ethernet header (ppp0, gre0, wg0), and another VXLAN port.
        ("gateway-l3", LoadOptions { link_ip: true, ..gateway }),
        ("sensor-l3+vxlan-8472", LoadOptions { mode: MODE_SENSOR, home: every_home_net(), link_ip: true, vxlan_port: 8472, ..gateway }),
    ];
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut refused = Vec::new();
    for (name, options) in modes {
        match loader::load(&tests::ebpf_object(), options) {
            Ok(mut p) => {
                let xdp: &mut Xdp = p.ebpf.program_mut(PROG_XDP).unwrap().try_into().unwrap();
                let ingress = tests::bpf::prog_info(xdp.fd().unwrap().as_fd()).1;
                let tc: &mut SchedClassifier = p.ebpf.program_mut(PROG_TC).unwrap().try_into().unwrap();
                let egress = tests::bpf::prog_info(tc.fd().unwrap().as_fd()).1;
                println!("verifier: kernel {} mode {name}: {PROG_XDP} {ingress}, {PROG_TC} {egress} instructions walked", release.trim());
            }
            Err(e) => {
                let text = e.to_string();
                let lines: Vec<&str> = text.lines().collect();
                refused.push(format!("{name}: {}\n  ...\n{}", lines[0], lines[lines.len().saturating_sub(6)..].join("\n")));
            }
        }
    }
    assert!(refused.is_empty(), "kernel {} refused:\n{}", release.trim(), refused.join("\n"));
}
