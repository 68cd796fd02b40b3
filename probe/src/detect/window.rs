//! Bounded per-key aggregates that forget what is older than a window: the memory every
//! aggregating detector shares, capped so a flood of distinct keys cannot grow it without end.

use std::{collections::HashMap, hash::Hash};

/// Aggregates by key, each stamped with when it was last touched.
pub struct Windowed<K, V> {
    entries: HashMap<K, (u64, V)>,
    window_ns: u64,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone, V> Windowed<K, V> {
    pub fn new(window_ns: u64, max_keys: usize) -> Self {
        Windowed { entries: HashMap::new(), window_ns, max_keys }
    }

    /// The aggregate for `key`, created with `init` if new (or if it had expired).
    pub fn touch(&mut self, key: K, now_ns: u64, init: impl FnOnce() -> V) -> &mut V {
        if self.entries.len() >= self.max_keys && !self.entries.contains_key(&key) {
            self.expire(now_ns);
            if self.entries.len() >= self.max_keys {
                self.evict_oldest_tenth();
            }
        }
        let window = self.window_ns;
        let stale = self.entries.get(&key).is_some_and(|(t, _)| now_ns.saturating_sub(*t) > window);
        if stale {
            self.entries.remove(&key);
        }
        let e = self.entries.entry(key).or_insert_with(|| (now_ns, init()));
        e.0 = now_ns;
        &mut e.1
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(_, v)| v)
    }

    /// Every live aggregate, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.values_mut().map(|(_, v)| v)
    }

    /// Full, and nothing has gone quiet (a flood of distinct keys): forget the least recently
    /// touched tenth at once. One O(n) pass per n/10 new keys keeps an insert O(1) on average;
    /// evicting one entry per insert (even an arbitrary one) would make a flood quadratic.
    fn evict_oldest_tenth(&mut self) {
        let mut stamps: Vec<u64> = self.entries.values().map(|(t, _)| *t).collect();
        let nth = stamps.len() / 10;
        let (_, cutoff, _) = stamps.select_nth_unstable(nth);
        let cutoff = *cutoff;
        let mut budget = nth + 1;
        self.entries.retain(|_, (t, _)| {
            let drop = *t <= cutoff && budget > 0;
            budget -= usize::from(drop);
            !drop
        });
    }

    pub fn expire(&mut self, now_ns: u64) {
        let window = self.window_ns;
        self.entries.retain(|_, (t, _)| now_ns.saturating_sub(*t) <= window);
    }
}

/// A set that stops growing at `cap` but keeps counting (distinct ports, hosts, ...).
#[derive(Debug, Clone)]
pub struct CappedSet<T> {
    items: std::collections::BTreeSet<T>,
    cap: usize,
    /// Insertions refused because the set was full (a lower bound on what was missed).
    pub overflow: u64,
}

impl<T: Ord> CappedSet<T> {
    pub fn new(cap: usize) -> Self {
        CappedSet { items: Default::default(), cap, overflow: 0 }
    }
    pub fn insert(&mut self, v: T) {
        if self.items.len() < self.cap {
            self.items.insert(v);
        } else if !self.items.contains(&v) {
            self.overflow += 1;
        }
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

/// Packets per minute, for the peak rate CAIDA-style attack records report.
#[derive(Debug, Clone, Default)]
pub struct PerMinute {
    minute: u64,
    count: u64,
    pub peak: u64,
}

impl PerMinute {
    pub fn add(&mut self, at_ns: u64, n: u64) {
        let m = at_ns / 60_000_000_000;
        if m != self.minute {
            self.minute = m;
            self.count = 0;
        }
        self.count += n;
        self.peak = self.peak.max(self.count);
    }
}
