//! The kernel's flood-proof aggregates (probe-common's `aggregate`), merged across CPUs into one
//! snapshot per poll: service counters add up, HyperLogLog registers take the maximum, heavy
//! hitters add up by address. Detectors compare two snapshots; nothing here needs a flow slot.

use std::{collections::HashMap, net::IpAddr};

use probe_common::{
    aggregate::{
        Aggregates, SERVICE_REGISTERS, SKETCH_REGISTERS, SVC_COMPLETED, SVC_RST_OUT, SVC_SYN_ACK_OUT, SVC_SYN_IN, hll_estimate, hll_merge,
    },
    flow::ip_addr as addr,
};

/// One local service over all CPUs. Counters are cumulative since its bucket was claimed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceTotals {
    /// First and last inbound SYN, wall-clock ns (capture time in replay).
    pub first_seen: u64,
    pub last_seen: u64,
    pub syn_in: u64,
    pub syn_ack_out: u64,
    pub rst_out: u64,
    pub completed: u64,
    pub sources: [u8; SERVICE_REGISTERS],
}

impl ServiceTotals {
    /// Distinct sources of its SYNs, estimated.
    pub fn distinct_sources(&self) -> f64 {
        hll_estimate(&self.sources)
    }
}

/// A remote seen in flood-shaped traffic: approximate packet count and `REMOTE_*` kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteCount {
    pub addr: IpAddr,
    pub count: u64,
    pub kinds: u8,
}

/// Every CPU's aggregates, merged.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSnapshot {
    pub services: HashMap<(IpAddr, u16), ServiceTotals>,
    pub syn_ack_sources: [u8; SKETCH_REGISTERS],
    pub rst_sources: [u8; SKETCH_REGISTERS],
    /// Busiest first.
    pub remotes: Vec<RemoteCount>,
    pub syn_in: u64,
    pub unsolicited_syn_ack: u64,
    pub unsolicited_rst: u64,
    pub service_overflow: u64,
}

impl Default for AggregateSnapshot {
    fn default() -> Self {
        AggregateSnapshot {
            services: HashMap::new(),
            syn_ack_sources: [0; SKETCH_REGISTERS],
            rst_sources: [0; SKETCH_REGISTERS],
            remotes: Vec::new(),
            syn_in: 0,
            unsolicited_syn_ack: 0,
            unsolicited_rst: 0,
            service_overflow: 0,
        }
    }
}

impl AggregateSnapshot {
    /// Merge per-CPU values; `to_wall` turns the producer's timestamps into wall-clock ns.
    pub fn merge<'a>(cpus: impl IntoIterator<Item = &'a Aggregates>, to_wall: impl Fn(u64) -> u64) -> Self {
        let mut out = AggregateSnapshot::default();
        let mut remotes: HashMap<IpAddr, (u64, u8)> = HashMap::new();
        for a in cpus {
            out.syn_in += a.syn_in;
            out.unsolicited_syn_ack += a.unsolicited_syn_ack;
            out.unsolicited_rst += a.unsolicited_rst;
            out.service_overflow += a.service_overflow;
            hll_merge(&mut out.syn_ack_sources, &a.syn_ack_sources);
            hll_merge(&mut out.rst_sources, &a.rst_sources);
            for s in a.services.iter().filter(|s| s.family != 0) {
                let (first, last) = (to_wall(s.first_seen), to_wall(s.last_seen));
                let t = out.services.entry((addr(s.addr, s.family), s.port)).or_insert(ServiceTotals {
                    first_seen: first,
                    last_seen: last,
                    syn_in: 0,
                    syn_ack_out: 0,
                    rst_out: 0,
                    completed: 0,
                    sources: [0; SERVICE_REGISTERS],
                });
                t.first_seen = t.first_seen.min(first);
                t.last_seen = t.last_seen.max(last);
                t.syn_in += u64::from(s.counts[SVC_SYN_IN]);
                t.syn_ack_out += u64::from(s.counts[SVC_SYN_ACK_OUT]);
                t.rst_out += u64::from(s.counts[SVC_RST_OUT]);
                t.completed += u64::from(s.counts[SVC_COMPLETED]);
                hll_merge(&mut t.sources, &s.sources);
            }
            for r in a.remotes.iter().filter(|r| r.count > 0) {
                let e = remotes.entry(addr(r.addr, r.family)).or_default();
                e.0 += u64::from(r.count);
                e.1 |= r.kinds;
            }
        }
        out.remotes = remotes.into_iter().map(|(addr, (count, kinds))| RemoteCount { addr, count, kinds }).collect();
        out.remotes.sort_by(|a, b| b.count.cmp(&a.count).then(a.addr.cmp(&b.addr)));
        out
    }

    /// The `n` busiest remotes that sent `kind` (a `REMOTE_*` bit), with their approximate counts.
    pub fn top(&self, kind: u8, n: usize) -> Vec<(IpAddr, u64)> {
        self.remotes.iter().filter(|r| r.kinds & kind != 0).take(n).map(|r| (r.addr, r.count)).collect()
    }
}
