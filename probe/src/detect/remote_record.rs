//! What one remote did to us over a window, like CAIDA's backscatter attack records: when, how many
//! packets and flows, which of our ports and addresses, which of its ports, the peak rate. Shared by
//! the two backscatter detectors.

use std::net::IpAddr;

use super::{
    FlowView,
    window::{CappedSet, PerMinute},
};

pub struct RemoteRecord {
    pub iface: String,
    pub first_seen: u64,
    pub last_seen: u64,
    pub packets: u64,
    pub flows: u64,
    /// A second, detector-specific count (our RST answers; RSTs with ACK).
    pub answers: u64,
    pub local_ports: CappedSet<u16>,
    pub local_addrs: CappedSet<IpAddr>,
    pub remote_ports: CappedSet<u16>,
    pub rate: PerMinute,
}

impl RemoteRecord {
    pub fn new(f: &FlowView<'_>) -> Self {
        RemoteRecord {
            iface: f.iface.to_string(),
            first_seen: f.first_seen(),
            last_seen: 0,
            packets: 0,
            flows: 0,
            answers: 0,
            local_ports: CappedSet::new(4096),
            local_addrs: CappedSet::new(64),
            remote_ports: CappedSet::new(64),
            rate: PerMinute::default(),
        }
    }

    /// Count `packets` more from flow `f` (`new_flow` the first time the flow is counted).
    pub fn add(&mut self, f: &FlowView<'_>, packets: u64, new_flow: bool, answers: u64) {
        self.first_seen = self.first_seen.min(f.first_seen());
        self.last_seen = self.last_seen.max(f.last_seen());
        self.packets += packets;
        self.flows += u64::from(new_flow);
        self.answers += answers;
        self.local_ports.insert(f.local_port());
        self.local_addrs.insert(f.local_addr());
        self.remote_ports.insert(f.remote_port());
        self.rate.add(f.last_seen(), packets);
    }

    pub fn distinct_local_ports(&self) -> u64 {
        self.local_ports.len() as u64 + self.local_ports.overflow
    }

    pub fn remote_ports(&self) -> Vec<u16> {
        self.remote_ports.iter().copied().collect()
    }

    /// `addr:port` when the remote used one port, else the address.
    pub fn service(&self, remote: IpAddr) -> String {
        match self.remote_ports().as_slice() {
            [p] => format!("{remote}:{p}"),
            _ => remote.to_string(),
        }
    }

    pub fn local_addrs(&self) -> Vec<String> {
        self.local_addrs.iter().map(|a| a.to_string()).collect()
    }
}
