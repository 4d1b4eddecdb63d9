//! The cache's eviction order: least recently used first, over a byte budget.
//!
//! [`Lru`] keeps the complete objects by last-use tick (a `BTreeMap`: segment objects
//! are few — hundreds per GiB — and large, so `O(log n)` bookkeeping is noise next to
//! the bytes) and the bytes charged against the bound. Each entry's position is a
//! plain `u64` the owner keeps next to its object, so a hit moves the key without
//! cloning it. It knows nothing of fills or objects: the cache owns the key → object
//! map and tells this order what was used, inserted and removed.
//!
//! It is public so that `bench/cache_policy` can replay traces against this very code
//! (see the choice of policy in the README's crate choices).

use std::collections::BTreeMap;

/// Keys in last-use order plus the bytes charged.
#[derive(Debug)]
pub struct Lru<K> {
    /// Entries by last-use tick, oldest first.
    order: BTreeMap<u64, K>,
    /// Use counter: the next position.
    tick: u64,
    /// Bytes charged (entries in the order, and whatever the owner charged besides).
    held: u64,
}

impl<K> Default for Lru<K> {
    fn default() -> Self {
        Lru {
            order: BTreeMap::new(),
            tick: 0,
            held: 0,
        }
    }
}

impl<K> Lru<K> {
    /// An empty order with nothing charged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes charged now.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Entries in the order.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the order has no entries.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Charges `n` bytes.
    pub fn charge(&mut self, n: u64) {
        self.held += n;
    }

    /// Gives `n` bytes back.
    pub fn discharge(&mut self, n: u64) {
        self.held = self.held.saturating_sub(n);
    }

    /// Puts `key` at the most recently used end; returns its position.
    pub fn push(&mut self, key: K) -> u64 {
        self.tick += 1;
        self.order.insert(self.tick, key);
        self.tick
    }

    /// Marks the entry at `pos` used now; returns its new position (`pos` itself if
    /// there is no such entry).
    pub fn touch(&mut self, pos: u64) -> u64 {
        match self.order.remove(&pos) {
            Some(key) => self.push(key),
            None => pos,
        }
    }

    /// Takes the entry at `pos` out of the order (its bytes stay charged).
    pub fn remove(&mut self, pos: u64) -> Option<K> {
        self.order.remove(&pos)
    }

    /// Makes room for `n` more bytes under `max`: while they would not fit, the least
    /// recently used entry is handed to `evict`, which drops it and returns the bytes it
    /// held (discharged here). Charges `n` and returns `true` if they fit then; returns
    /// `false`, charging nothing, when the order ran empty first.
    pub fn make_room(&mut self, n: u64, max: u64, mut evict: impl FnMut(K) -> u64) -> bool {
        while self.held + n > max {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            let freed = evict(key);
            self.discharge(freed);
        }
        let fits = self.held + n <= max;
        if fits {
            self.charge(n);
        }
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_goes_first_and_a_touched_entry_survives() {
        let mut lru = Lru::new();
        let mut pos = std::collections::HashMap::new();
        for k in ["a", "b", "c"] {
            assert!(lru.make_room(100, 300, |_| unreachable!()));
            pos.insert(k, lru.push(k));
        }
        let a = pos["a"];
        pos.insert("a", lru.touch(a));
        let mut evicted = Vec::new();
        assert!(lru.make_room(100, 300, |k| {
            evicted.push(k);
            100
        }));
        assert_eq!(evicted, ["b"]);
        assert_eq!(lru.held(), 300);
        assert_eq!(lru.len(), 2);
        // Nothing evictable left and it still does not fit: nothing charged.
        assert!(lru.remove(pos["a"]).is_some() && lru.remove(pos["c"]).is_some());
        assert!(!lru.make_room(1, 300, |_| 0));
        assert_eq!(lru.held(), 300);
    }
}
