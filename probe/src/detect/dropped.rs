//! What flagprobe itself dropped (`--drop`) or would have (`--drop-dry-run`), per sender, from the
//! events' `action`: an alert about packets we dropped must say so, since our host's reaction to
//! them (the backscatter RST, the answer to a crafted combination) then never happened.

use std::net::IpAddr;

use probe_common::action::{ACTION_DROPPED, ACTION_WOULD_DROP};
use serde_json::{Value, json};

use super::{EventView, window::Windowed};

#[derive(Default, Clone, Copy)]
struct Counts {
    dropped: u64,
    would_drop: u64,
}

/// Dropped events by the address that sent them.
pub struct Dropped {
    by_sender: Windowed<IpAddr, Counts>,
    /// The reason's name as the operator gave it (`unsolicited-synack`, `invalid-flags`).
    reason: &'static str,
}

impl Dropped {
    pub fn new(reason: &'static str, window_ns: u64) -> Self {
        Dropped { by_sender: Windowed::new(window_ns, 10_000), reason }
    }

    /// Count `ev` if flagprobe dropped it (or would have); the caller says it is of this reason.
    /// True when counted: an alert already written about its sender is out of date.
    pub fn observe(&mut self, ev: &EventView<'_>) -> bool {
        let action = ev.event.action;
        if action != ACTION_DROPPED && action != ACTION_WOULD_DROP {
            return false;
        }
        let c = self.by_sender.touch(ev.src(), ev.at_ns, Counts::default);
        if action == ACTION_DROPPED {
            c.dropped += 1;
        } else {
            c.would_drop += 1;
        }
        true
    }

    /// A sentence for the alert about `sender`'s packets, if any were dropped.
    pub fn sentence(&self, sender: IpAddr, consequence: &str) -> Option<String> {
        let c = self.by_sender.get(&sender)?;
        let reason = self.reason;
        Some(if c.dropped > 0 {
            format!(
                "flagprobe dropped {} such packets from {sender} on arrival, as configured (--drop {reason}), so {consequence}.",
                c.dropped
            )
        } else {
            format!(
                "--drop-dry-run: flagprobe would have dropped {} such packets from {sender} (--drop {reason}); it dropped none.",
                c.would_drop
            )
        })
    }

    /// The alert's evidence field: `{"reason", "dropped", "would_drop"}`, or null.
    pub fn evidence(&self, sender: IpAddr) -> Value {
        self.by_sender
            .get(&sender)
            .map_or(Value::Null, |c| json!({ "reason": self.reason, "dropped": c.dropped, "would_drop": c.would_drop }))
    }

    pub fn expire(&mut self, now_ns: u64) {
        self.by_sender.expire(now_ns);
    }
}
