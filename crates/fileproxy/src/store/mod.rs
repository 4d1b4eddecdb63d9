//! Shared state: one [`Store`] trait, an in-process implementation and a Redis one.
//!
//! The access policy only talks to this trait, so the same rules run in one process
//! (`memory://`) or across many processes sharing Redis (`redis://`, `rediss://`,
//! `redis+cluster://`, `redis+sentinel://`). Values are strings (JSON for structured entries, as the Python
//! version writes them); keys are SPEC.md §6's.
//!
//! Both backends behave alike (one conformance suite, `tests/store_conformance.rs`,
//! runs against each): TTLs are whole milliseconds clamped by [`ttl_millis`], expired
//! keys are invisible, `get_many` reads a list as missing (like `MGET`), other type
//! mix-ups are [`StoreError::Malformed`]. Atomic operations touch one key each, so on
//! Redis Cluster they need no hash tags; `get_many` and `write` may span slots.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::StoreConfig;

pub mod memory;
pub mod redis;
pub mod sentinel;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The operation did not finish within `store.op_timeout_ms`.
    #[error("store operation timed out")]
    Timeout,
    /// A stored value was not what the caller expected (e.g. not an integer).
    #[error("store value malformed: {0}")]
    Malformed(String),
    /// [`update_json`] kept losing its compare-and-set to concurrent writers.
    #[error("store update of {key:?} gave up after {attempts} conflicting attempts")]
    Contended {
        /// Key being updated.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// Result of an atomic windowed increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// The counter's value after this increment (1 on the first call of a window).
    pub count: u64,
    /// Time left in the window.
    pub ttl: Duration,
}

/// Result of [`Store::touch_member`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberTouch {
    /// Whether the member is in the set now (refreshed, or added below the cap).
    pub admitted: bool,
    /// Members in the set after this step.
    pub count: u64,
}

/// One write of a batch sent in a single round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value` with a TTL.
    Set {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Time to live.
        ttl: Duration,
    },
    /// Reset the TTL of `key` if it exists.
    Expire {
        /// Key.
        key: String,
        /// Time to live.
        ttl: Duration,
    },
    /// Delete `key`.
    Delete {
        /// Key.
        key: String,
    },
}

/// Shared key-value state with TTLs, atomic counters and compare-and-set.
///
/// Every method is one round trip to the backing store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads several keys at once; missing or expired keys are `None`.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError>;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut v = self.get_many(&[key.to_string()]).await?;
        Ok(v.pop().flatten())
    }

    /// Applies several writes in one round trip (not atomic as a group).
    async fn write(&self, writes: &[Write]) -> Result<(), StoreError>;

    /// Sets one key with a TTL.
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.write(&[Write::Set {
            key: key.to_string(),
            value: value.to_string(),
            ttl,
        }])
        .await
    }

    /// Remaining TTL of `key`; `None` when missing or without expiry.
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError>;

    /// Atomically increments `key` by one; the window (TTL) is set in the same step
    /// when the counter is created (or found without a TTL), never extended after.
    async fn incr_window(&self, key: &str, window: Duration) -> Result<WindowCount, StoreError>;

    /// Atomically sets `key` to `new` (with `ttl`) only if its current value equals
    /// `expected` (`None` = key absent). Returns whether the swap happened.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Prepends `value` to the list at `key`, trims it to `cap` entries, resets its TTL.
    async fn push_capped(
        &self,
        key: &str,
        value: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Reads up to `limit` entries of a list, newest first.
    async fn list_range(&self, key: &str, limit: usize) -> Result<Vec<String>, StoreError>;

    /// In the scored set at `key`, one atomic step: drops members last seen before
    /// `now_ms - idle`, then adds `member` (or refreshes it) with score `now_ms` —
    /// unless it is new and the set already holds `max` members, when nothing is added
    /// (`admitted: false`). The set's TTL becomes `idle`.
    async fn touch_member(
        &self,
        key: &str,
        member: &str,
        now_ms: u64,
        idle: Duration,
        max: u64,
    ) -> Result<MemberTouch, StoreError>;

    /// Members of the scored set at `key` whose score is at least `since_ms`, with
    /// their scores, highest first (reads only).
    async fn members_since(
        &self,
        key: &str,
        since_ms: u64,
    ) -> Result<Vec<(String, u64)>, StoreError>;

    /// Adds `by` to the counter at `key` once per `marker`: the first call with a
    /// marker key creates it and increments; a retry with the same marker changes
    /// nothing (so a batch sent again after a lost answer is not counted twice). The
    /// counter gets the TTL `window` when created (never extended); the marker lives
    /// `window` too. Returns the counter's value. On Redis Cluster `key` and `marker`
    /// must share a slot (one hash tag).
    async fn incr_by_once(
        &self,
        key: &str,
        marker: &str,
        by: u64,
        window: Duration,
    ) -> Result<u64, StoreError>;

    /// One round trip to the store; returns its latency.
    async fn ping(&self) -> Result<Duration, StoreError>;

    /// Short name of the backend for `/health` (`memory`, `redis`, `redis-cluster`,
    /// `redis-sentinel`).
    fn kind(&self) -> &'static str;

    /// Where the backend points now, for `/health` (the Sentinel master's
    /// `host:port`); never a password. `None` when there is nothing to say.
    fn topology(&self) -> Option<String> {
        None
    }
}

/// A shared handle to the configured store.
pub type SharedStore = Arc<dyn Store>;

/// Longest TTL either backend stores (ten years); longer ones are clamped to it.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A TTL as whole milliseconds as both backends apply it: at least 1 ms (Redis
/// rejects `PX 0`), at most [`MAX_TTL`].
pub fn ttl_millis(ttl: Duration) -> u64 {
    let max = MAX_TTL.as_millis();
    u64::try_from(ttl.as_millis().clamp(1, max)).unwrap_or(u64::MAX)
}

/// How often the in-process store sweeps expired entries in the background.
const MEMORY_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Opens the store named by `store.url`.
///
/// `memory://` gives a fresh [`memory::MemoryStore`] with a background sweeper.
/// `redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://` and
/// `redis+sentinel://` give a [`redis::RedisStore`] (the URL was parsed when the
/// configuration was read). An unreadable `store.tls_ca_file` is an error, but an
/// unreachable Redis is not: the store is returned anyway (a warning is logged), its
/// operations fail with [`StoreError::Unavailable`] or [`StoreError::Timeout`] until
/// Redis answers, and it reconnects by itself, so the server can start and report the
/// outage on `/health`. Must run inside Tokio.
pub async fn open(cfg: &StoreConfig) -> anyhow::Result<SharedStore> {
    match cfg.url.kind() {
        crate::store_url::StoreUrl::Memory => {
            let store = Arc::new(memory::MemoryStore::new());
            store.spawn_sweeper(MEMORY_SWEEP_EVERY);
            Ok(store)
        }
        crate::store_url::StoreUrl::Redis { .. } | crate::store_url::StoreUrl::Sentinel => {
            Ok(Arc::new(redis::RedisStore::open(cfg).await?))
        }
    }
}

/// Attempts [`update_json`] makes before giving up with [`StoreError::Contended`].
pub const UPDATE_ATTEMPTS: u32 = 64;

/// Read-modify-write of one key without locks: reads the value, lets `f` compute the
/// new one, and writes it with [`Store::compare_and_set`] (and `ttl`) only if nobody
/// changed the key in between; otherwise reads again and retries, at most
/// [`UPDATE_ATTEMPTS`] times. `f` sees the current value (`None` = absent) and returns
/// the new value, or `None` to leave the key unchanged. Returns the value written, or
/// `None` when `f` declined.
///
/// Every failed swap means another writer succeeded, so with fewer than
/// [`UPDATE_ATTEMPTS`] concurrent writers on one key every update lands.
pub async fn update_json<F>(
    store: &dyn Store,
    key: &str,
    ttl: Duration,
    mut f: F,
) -> Result<Option<String>, StoreError>
where
    F: FnMut(Option<&str>) -> Option<String>,
{
    for attempt in 0..UPDATE_ATTEMPTS {
        let current = store.get(key).await?;
        let Some(new) = f(current.as_deref()) else {
            return Ok(None);
        };
        if store
            .compare_and_set(key, current.as_deref(), &new, ttl)
            .await?
        {
            return Ok(Some(new));
        }
        // Lost the race: back off a little (randomised) so contenders spread out.
        if attempt < 2 {
            tokio::task::yield_now().await;
        } else {
            let micros = {
                use rand::Rng;
                let cap = 200 * u64::from(attempt.min(20));
                rand::thread_rng().gen_range(0..=cap)
            };
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
    }
    Err(StoreError::Contended {
        key: key.to_string(),
        attempts: UPDATE_ATTEMPTS,
    })
}
