//! In-process [`Store`]: the default (`memory://`), for a single FileProxy process.
//!
//! Semantics follow Redis: a key past its TTL is invisible (and removed on touch),
//! `get_many` reads lists as missing (like `MGET`), other type mix-ups are
//! [`StoreError::Malformed`] (like `WRONGTYPE`). TTLs have millisecond granularity and
//! are clamped like [`super::ttl_millis`] so both backends agree.
//!
//! Keys are spread over [`SHARDS`] shards, each behind a short-held `std` mutex that
//! is never held across an `.await`, so every method is atomic per key and cheap.
//! Memory stays bounded: a shard sweeps its expired entries whenever it has grown to
//! twice its size after the previous sweep (amortised O(1) per insert), and
//! [`MemoryStore::spawn_sweeper`] adds a periodic sweep for idle shards.
//!
//! Time is `tokio::time::Instant`, so tests running on a paused Tokio clock control
//! expiry.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{ttl_millis, MemberTouch, Store, StoreError, WindowCount, Write};

/// Number of independently locked shards.
pub const SHARDS: usize = 32;

/// A shard is never swept below this many entries (sweeping tiny maps is wasted work).
const MIN_SWEEP_LEN: usize = 1024;

const WRONGTYPE: &str = "WRONGTYPE operation against a key holding the wrong kind of value";

enum Value {
    Str(String),
    List(VecDeque<String>),
    /// A scored set (Redis sorted set): member → score.
    Scores(HashMap<String, u64>),
}

struct Entry {
    value: Value,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        match self.expires {
            Some(e) => e > now,
            None => true,
        }
    }
}

struct Shard {
    map: HashMap<String, Entry>,
    /// Sweep when `map.len()` reaches this.
    sweep_at: usize,
}

impl Shard {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
            sweep_at: MIN_SWEEP_LEN,
        }
    }

    /// The live entry of `key`; an expired one is removed and reads as missing.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        let expired = !self.map.get(key)?.live(now);
        if expired {
            self.map.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    fn insert(&mut self, key: &str, entry: Entry, now: Instant) {
        if let Some(slot) = self.map.get_mut(key) {
            *slot = entry;
            return;
        }
        self.map.insert(key.to_owned(), entry);
        if self.map.len() >= self.sweep_at {
            self.sweep(now);
        }
    }

    /// Drops expired entries; returns how many.
    fn sweep(&mut self, now: Instant) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.live(now));
        self.sweep_at = MIN_SWEEP_LEN.max(self.map.len().saturating_mul(2));
        before - self.map.len()
    }
}

/// Deadline `ttl` from `now` (TTL clamped like Redis's millisecond `PX`).
fn deadline(now: Instant, ttl: Duration) -> Option<Instant> {
    now.checked_add(Duration::from_millis(ttl_millis(ttl)))
}

fn left(now: Instant, expires: Option<Instant>) -> Duration {
    expires.map_or(Duration::ZERO, |e| e.saturating_duration_since(now))
}

/// In-process store with Redis-like TTLs, sharded for concurrency.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn lock_index(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A poisoned shard only means another thread panicked while holding it; the
        // map itself is never left half-updated by our code, so keep using it.
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        // SHARDS is tiny, so the modulo always fits in usize.
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        self.lock_index(i)
    }

    /// Removes every expired entry now; returns how many were dropped.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        (0..self.shards.len())
            .map(|i| self.lock_index(i).sweep(now))
            .sum()
    }

    /// Entries held, including expired ones not swept yet (for memory accounting).
    pub fn entries(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock_index(i).map.len())
            .sum()
    }

    /// Spawns a task sweeping expired entries every `every`; it ends when the store is
    /// dropped. Must be called inside a Tokio runtime.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = every.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { break };
                let swept = store.sweep();
                if swept > 0 {
                    tracing::debug!(swept, "memory store swept expired entries");
                }
            }
        })
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let now = Instant::now();
        Ok(keys
            .iter()
            .map(|k| match self.shard(k).live(k, now) {
                Some(Entry {
                    value: Value::Str(s),
                    ..
                }) => Some(s.clone()),
                _ => None,
            })
            .collect())
    }

    async fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        let now = Instant::now();
        for w in writes {
            match w {
                Write::Set { key, value, ttl } => {
                    let entry = Entry {
                        value: Value::Str(value.clone()),
                        expires: deadline(now, *ttl),
                    };
                    self.shard(key).insert(key, entry, now);
                }
                Write::Expire { key, ttl } => {
                    if let Some(e) = self.shard(key).live(key, now) {
                        e.expires = deadline(now, *ttl);
                    }
                }
                Write::Delete { key } => {
                    self.shard(key).map.remove(key.as_str());
                }
            }
        }
        Ok(())
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let now = Instant::now();
        Ok(self
            .shard(key)
            .live(key, now)
            .and_then(|e| e.expires)
            .map(|e| e.saturating_duration_since(now)))
    }

    async fn incr_window(&self, key: &str, window: Duration) -> Result<WindowCount, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        if let Some(e) = shard.live(key, now) {
            let Value::Str(s) = &mut e.value else {
                return Err(StoreError::Malformed(WRONGTYPE.into()));
            };
            let n = s
                .parse::<i64>()
                .ok()
                .and_then(|n| n.checked_add(1))
                .ok_or_else(|| {
                    StoreError::Malformed("value is not an integer or out of range".into())
                })?;
            *s = n.to_string();
            if e.expires.is_none() {
                e.expires = deadline(now, window);
            }
            let count = u64::try_from(n)
                .map_err(|_| StoreError::Malformed(format!("counter is negative: {n}")))?;
            return Ok(WindowCount {
                count,
                ttl: left(now, e.expires),
            });
        }
        let expires = deadline(now, window);
        let entry = Entry {
            value: Value::Str("1".into()),
            expires,
        };
        shard.insert(key, entry, now);
        Ok(WindowCount {
            count: 1,
            ttl: left(now, expires),
        })
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let matches = match shard.live(key, now) {
            None => expected.is_none(),
            Some(Entry {
                value: Value::Str(cur),
                ..
            }) => expected == Some(cur.as_str()),
            Some(_) => return Err(StoreError::Malformed(WRONGTYPE.into())),
        };
        if matches {
            let entry = Entry {
                value: Value::Str(new.to_owned()),
                expires: deadline(now, ttl),
            };
            shard.insert(key, entry, now);
        }
        Ok(matches)
    }

    async fn push_capped(
        &self,
        key: &str,
        value: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        match shard.live(key, now) {
            Some(e) => {
                let Value::List(list) = &mut e.value else {
                    return Err(StoreError::Malformed(WRONGTYPE.into()));
                };
                if cap == 0 {
                    shard.map.remove(key);
                    return Ok(());
                }
                list.push_front(value.to_owned());
                list.truncate(cap);
                e.expires = deadline(now, ttl);
            }
            None if cap == 0 => {}
            None => {
                let entry = Entry {
                    value: Value::List(VecDeque::from([value.to_owned()])),
                    expires: deadline(now, ttl),
                };
                shard.insert(key, entry, now);
            }
        }
        Ok(())
    }

    async fn list_range(&self, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        match self.shard(key).live(key, now) {
            None => Ok(Vec::new()),
            Some(Entry {
                value: Value::List(list),
                ..
            }) => Ok(list.iter().take(limit).cloned().collect()),
            Some(_) => Err(StoreError::Malformed(WRONGTYPE.into())),
        }
    }

    async fn touch_member(
        &self,
        key: &str,
        member: &str,
        now_ms: u64,
        idle: Duration,
        max: u64,
    ) -> Result<MemberTouch, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let cutoff = now_ms.saturating_sub(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX));
        if shard.live(key, now).is_none() {
            let entry = Entry {
                value: Value::Scores(HashMap::new()),
                expires: deadline(now, idle),
            };
            shard.insert(key, entry, now);
        }
        let Some(e) = shard.live(key, now) else {
            return Err(StoreError::Malformed("scored set vanished".into()));
        };
        let Value::Scores(set) = &mut e.value else {
            return Err(StoreError::Malformed(WRONGTYPE.into()));
        };
        set.retain(|_, score| *score >= cutoff);
        let admitted = if let Some(score) = set.get_mut(member) {
            *score = now_ms;
            true
        } else if (set.len() as u64) < max {
            set.insert(member.to_owned(), now_ms);
            true
        } else {
            false
        };
        let count = set.len() as u64;
        if count == 0 {
            shard.map.remove(key);
        } else {
            e.expires = deadline(now, idle);
        }
        Ok(MemberTouch { admitted, count })
    }

    async fn members_since(
        &self,
        key: &str,
        since_ms: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let now = Instant::now();
        match self.shard(key).live(key, now) {
            None => Ok(Vec::new()),
            Some(Entry {
                value: Value::Scores(set),
                ..
            }) => {
                let mut out: Vec<(String, u64)> = set
                    .iter()
                    .filter(|(_, s)| **s >= since_ms)
                    .map(|(m, s)| (m.clone(), *s))
                    .collect();
                out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                Ok(out)
            }
            Some(_) => Err(StoreError::Malformed(WRONGTYPE.into())),
        }
    }

    async fn incr_by_once(
        &self,
        key: &str,
        marker: &str,
        by: u64,
        window: Duration,
    ) -> Result<u64, StoreError> {
        let now = Instant::now();
        let by = i64::try_from(by)
            .map_err(|_| StoreError::Malformed("increment out of range".into()))?;
        // The marker first (its own shard lock, released before the counter's): a
        // marker that exists means this batch was counted already.
        let fresh = {
            let mut shard = self.shard(marker);
            match shard.live(marker, now) {
                Some(Entry {
                    value: Value::Str(_),
                    ..
                }) => false,
                Some(_) => return Err(StoreError::Malformed(WRONGTYPE.into())),
                None => {
                    let entry = Entry {
                        value: Value::Str("1".into()),
                        expires: deadline(now, window),
                    };
                    shard.insert(marker, entry, now);
                    true
                }
            }
        };
        let mut shard = self.shard(key);
        let current = match shard.live(key, now) {
            Some(Entry {
                value: Value::Str(s),
                ..
            }) => s
                .parse::<i64>()
                .map_err(|_| StoreError::Malformed("value is not an integer".into()))?,
            Some(_) => return Err(StoreError::Malformed(WRONGTYPE.into())),
            None => 0,
        };
        let n = if fresh {
            let n = current
                .checked_add(by)
                .ok_or_else(|| StoreError::Malformed("increment overflows".into()))?;
            match shard.live(key, now) {
                Some(e) => {
                    e.value = Value::Str(n.to_string());
                    if e.expires.is_none() {
                        e.expires = deadline(now, window);
                    }
                }
                None => {
                    let entry = Entry {
                        value: Value::Str(n.to_string()),
                        expires: deadline(now, window),
                    };
                    shard.insert(key, entry, now);
                }
            }
            n
        } else {
            current
        };
        u64::try_from(n).map_err(|_| StoreError::Malformed(format!("counter is negative: {n}")))
    }

    async fn ping(&self) -> Result<Duration, StoreError> {
        let start = std::time::Instant::now();
        drop(self.lock_index(0));
        Ok(start.elapsed())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserting round after round of short-lived keys must not grow the map without
    /// bound: amortised sweeps keep it near the live set.
    #[tokio::test(start_paused = true)]
    async fn amortised_sweep_bounds_memory() {
        let s = MemoryStore::new();
        let per_round = 40_000;
        for round in 0..8 {
            for i in 0..per_round {
                s.set(&format!("r{round}:{i}"), "x", Duration::from_secs(1))
                    .await
                    .unwrap();
            }
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        // 8 rounds inserted 320k keys; at most the last round plus sweep slack remain.
        let held = s.entries();
        assert!(held <= 3 * per_round, "{held} entries held");
        assert_eq!(s.get("r0:1").await.unwrap(), None);
        assert_eq!(s.sweep(), held);
        assert_eq!(s.entries(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_sweeper_empties_idle_store_and_stops_with_it() {
        let s = Arc::new(MemoryStore::new());
        let task = s.spawn_sweeper(Duration::from_secs(5));
        for i in 0..100 {
            s.set(&format!("k{i}"), "v", Duration::from_secs(1))
                .await
                .unwrap();
        }
        assert_eq!(s.entries(), 100);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(s.entries(), 0);
        drop(s);
        tokio::time::sleep(Duration::from_secs(6)).await;
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn window_is_not_extended_and_restarts_after_expiry() {
        let s = MemoryStore::new();
        let w = Duration::from_secs(60);
        assert_eq!(s.incr_window("c", w).await.unwrap().ttl, w);
        tokio::time::advance(Duration::from_secs(59)).await;
        let c = s.incr_window("c", w).await.unwrap();
        assert_eq!((c.count, c.ttl), (2, Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        let c = s.incr_window("c", w).await.unwrap();
        assert_eq!((c.count, c.ttl), (1, w));
    }
}
