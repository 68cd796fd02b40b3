//! One alert per detector and key per window, and a per-detector budget of new keys per window: a
//! flood of distinct keys (one per forged source) is counted, not written line by line.

use std::{collections::HashMap, time::Duration};

use super::Alert;

/// One alert per detector and key per window; later changes wait, and go out as one updated
/// line when the window has passed (or at [`Deduper::flush_all`]).
pub struct Deduper {
    window_ns: u64,
    last_emit: HashMap<(&'static str, String), u64>,
    pending: HashMap<(&'static str, String), Alert>,
    /// Bound on remembered keys: a flood of distinct keys must not grow memory without end.
    max_keys: usize,
    /// New keys each detector may open per window; beyond it alerts are held back and counted.
    new_keys_per_window: u64,
    /// Per detector: (window start, new keys this window, alerts held back this window).
    budget: HashMap<&'static str, (u64, u64, u64)>,
    /// Alerts held back since the last [`Deduper::take_suppressed`], per detector.
    suppressed: HashMap<&'static str, u64>,
}

/// New alert keys per detector per window before the rest are only counted.
pub const NEW_KEYS_PER_WINDOW: u64 = 50;

impl Deduper {
    pub fn new(window: Duration) -> Self {
        Deduper {
            window_ns: window.as_nanos() as u64,
            last_emit: HashMap::new(),
            pending: HashMap::new(),
            max_keys: 100_000,
            new_keys_per_window: NEW_KEYS_PER_WINDOW,
            budget: HashMap::new(),
            suppressed: HashMap::new(),
        }
    }

    /// Alerts held back by the per-detector budget since the last call (for the metrics).
    pub fn take_suppressed(&mut self) -> Vec<(&'static str, u64)> {
        self.suppressed.drain().collect()
    }

    /// The alert to emit now, if any.
    pub fn offer(&mut self, alert: Alert) -> Option<Alert> {
        let id = (alert.detector, alert.key.clone());
        let last = self.last_emit.get(&id).copied();
        match last {
            Some(at) if alert.at_ns.saturating_sub(at) < self.window_ns => {
                self.pending.insert(id, alert);
                None
            }
            None if !self.within_budget(alert.detector, alert.at_ns) => None,
            _ => {
                if self.last_emit.len() >= self.max_keys {
                    let cutoff = alert.at_ns.saturating_sub(self.window_ns);
                    self.last_emit.retain(|_, at| *at >= cutoff);
                }
                self.last_emit.insert(id.clone(), alert.at_ns);
                self.pending.remove(&id);
                Some(alert)
            }
        }
    }

    /// `alert` (as last written) again as a pending update, unless an update of it is pending
    /// already (which is newer, and will carry the same refresh when written).
    pub fn refresh(&mut self, alert: Alert) {
        let id = (alert.detector, alert.key.clone());
        if self.last_emit.contains_key(&id) {
            self.pending.entry(id).or_insert(alert);
        }
    }

    /// Count a new key against its detector's budget for this window.
    fn within_budget(&mut self, detector: &'static str, at_ns: u64) -> bool {
        let window = self.window_ns;
        let b = self.budget.entry(detector).or_insert((at_ns, 0, 0));
        if at_ns.saturating_sub(b.0) >= window {
            *b = (at_ns, 0, 0);
        }
        if b.1 < self.new_keys_per_window {
            b.1 += 1;
            return true;
        }
        b.2 += 1;
        *self.suppressed.entry(detector).or_default() += 1;
        false
    }

    /// Pending updates whose window has passed by `now_ns`.
    pub fn flush(&mut self, now_ns: u64) -> Vec<Alert> {
        let due: Vec<_> = self
            .pending
            .keys()
            .filter(|id| self.last_emit.get(*id).is_none_or(|at| now_ns.saturating_sub(*at) >= self.window_ns))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for id in due {
            if let Some(mut a) = self.pending.remove(&id) {
                self.last_emit.insert(id, now_ns);
                a.at_ns = now_ns;
                out.push(a);
            }
        }
        sort(&mut out);
        out
    }

    /// Every pending update, now (shutdown, end of a replay).
    pub fn flush_all(&mut self) -> Vec<Alert> {
        let mut out: Vec<Alert> = self.pending.drain().map(|(_, a)| a).collect();
        sort(&mut out);
        out
    }
}

/// Alerts in an order that does not depend on a hash map's: by time, then by what they are about.
/// Replaying one capture twice writes the same lines in the same order.
pub fn sort(alerts: &mut [Alert]) {
    alerts.sort_by(|a, b| (a.at_ns, a.first_seen_ns, a.detector, &a.id).cmp(&(b.at_ns, b.first_seen_ns, b.detector, &b.id)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::test_alert as alert;

    #[test]
    fn a_refresh_is_a_pending_update_that_never_replaces_a_newer_one() {
        let mut d = Deduper::new(Duration::from_secs(60));
        let written = d.offer(alert("a", 100, 1)).unwrap();
        d.refresh(written.clone());
        let out = d.flush_all();
        assert_eq!(out.len(), 1, "the written alert again, for its evidence");
        assert_eq!(out[0].packets, 1);
        let written = d.offer(alert("b", 100, 1)).unwrap();
        assert!(d.offer(alert("b", 110, 7)).is_none());
        d.refresh(written);
        let out = d.flush_all();
        assert_eq!((out.len(), out[0].packets), (1, 7), "the newer pending update stays");
        d.refresh(alert("never-written", 100, 1));
        assert!(d.flush_all().is_empty(), "only an alert that was written is refreshed");
    }

    #[test]
    fn one_alert_per_key_per_window_then_an_update() {
        let mut d = Deduper::new(Duration::from_secs(60));
        assert!(d.offer(alert("a", 100, 1)).is_some());
        assert!(d.offer(alert("a", 110, 5)).is_none());
        assert!(d.offer(alert("b", 111, 1)).is_some(), "another key is independent");
        assert!(d.offer(alert("a", 120, 9)).is_none());
        assert!(d.flush(150 * 1_000_000_000).is_empty(), "window not over");
        let updates = d.flush(161 * 1_000_000_000);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].packets, 9, "the latest counts");
        assert!(d.flush_all().is_empty());
    }

    #[test]
    fn a_flood_of_new_keys_is_capped_and_counted() {
        let mut d = Deduper::new(Duration::from_secs(60));
        let emitted = (0..500).filter(|i| d.offer(alert(&format!("victim-{i}"), 100, 1)).is_some()).count();
        assert_eq!(emitted as u64, NEW_KEYS_PER_WINDOW);
        assert_eq!(d.take_suppressed(), vec![("test", 500 - NEW_KEYS_PER_WINDOW)]);
        assert!(d.offer(alert("victim-0", 110, 2)).is_none(), "known keys still update");
        assert!(d.offer(alert("fresh", 200, 1)).is_some(), "a new window, a new budget");
    }
}
