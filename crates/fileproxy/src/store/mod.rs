//! Shared state: one [`Store`] trait, an in-process implementation and a Redis one.
//!
//! The access policy only talks to this trait, so the same rules run in one process
//! (`memory://`) or across many processes sharing Redis (`redis://`, `rediss://`,
//! `redis+cluster://`). Values are strings (JSON for structured entries, as the Python
//! version writes them); keys are SPEC.md §6's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

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
}

/// Result of an atomic windowed increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// The counter's value after this increment (1 on the first call of a window).
    pub count: u64,
    /// Time left in the window.
    pub ttl: Duration,
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

    /// One round trip to the store; returns its latency.
    async fn ping(&self) -> Result<Duration, StoreError>;

    /// Short name of the backend for `/health` (`memory`, `redis`, `redis-cluster`).
    fn kind(&self) -> &'static str;
}

/// A shared handle to the configured store.
pub type SharedStore = Arc<dyn Store>;
