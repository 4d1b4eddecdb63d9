//! A [`Store`] decorator that times every operation of the store it wraps and counts
//! failures, per operation (`fileproxy_store_operation_seconds{op}`,
//! `fileproxy_store_errors_total{op}`). Behaviour is otherwise the inner store's.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Metrics, StoreOp};
use crate::store::{MemberTouch, SharedStore, Store, StoreError, WindowCount, Write};

/// Wraps a store and records each operation's latency and outcome.
pub struct TimedStore {
    inner: SharedStore,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    /// Wraps `inner`; figures go to `metrics`.
    pub fn wrap(inner: SharedStore, metrics: Arc<Metrics>) -> SharedStore {
        Arc::new(TimedStore { inner, metrics })
    }

    async fn timed<T>(
        &self,
        op: StoreOp,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let r = fut.await;
        self.metrics.record_store(op, start.elapsed(), r.is_ok());
        r
    }
}

#[async_trait]
impl Store for TimedStore {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        self.timed(StoreOp::GetMany, self.inner.get_many(keys))
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.timed(StoreOp::Get, self.inner.get(key)).await
    }

    async fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        self.timed(StoreOp::Write, self.inner.write(writes)).await
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.timed(StoreOp::Set, self.inner.set(key, value, ttl))
            .await
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        self.timed(StoreOp::Ttl, self.inner.ttl(key)).await
    }

    async fn incr_window(&self, key: &str, window: Duration) -> Result<WindowCount, StoreError> {
        self.timed(StoreOp::IncrWindow, self.inner.incr_window(key, window))
            .await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.timed(
            StoreOp::CompareAndSet,
            self.inner.compare_and_set(key, expected, new, ttl),
        )
        .await
    }

    async fn push_capped(
        &self,
        key: &str,
        value: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.timed(
            StoreOp::PushCapped,
            self.inner.push_capped(key, value, cap, ttl),
        )
        .await
    }

    async fn list_range(&self, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.timed(StoreOp::ListRange, self.inner.list_range(key, limit))
            .await
    }

    async fn touch_member(
        &self,
        key: &str,
        member: &str,
        now_ms: u64,
        idle: Duration,
        max: u64,
    ) -> Result<MemberTouch, StoreError> {
        self.timed(
            StoreOp::TouchMember,
            self.inner.touch_member(key, member, now_ms, idle, max),
        )
        .await
    }

    async fn members_since(
        &self,
        key: &str,
        since_ms: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.timed(
            StoreOp::MembersSince,
            self.inner.members_since(key, since_ms),
        )
        .await
    }

    async fn incr_by_once(
        &self,
        key: &str,
        marker: &str,
        by: u64,
        window: Duration,
    ) -> Result<u64, StoreError> {
        self.timed(
            StoreOp::IncrByOnce,
            self.inner.incr_by_once(key, marker, by, window),
        )
        .await
    }

    async fn ping(&self) -> Result<Duration, StoreError> {
        self.timed(StoreOp::Ping, self.inner.ping()).await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn topology(&self) -> Option<String> {
        self.inner.topology()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn times_each_operation() {
        let metrics = Arc::new(Metrics::new());
        let store = TimedStore::wrap(Arc::new(MemoryStore::new()), metrics.clone());
        store.set("a", "1", Duration::from_secs(5)).await.unwrap();
        assert_eq!(store.get("a").await.unwrap().as_deref(), Some("1"));
        assert!(store.incr_window("a", Duration::from_secs(5)).await.is_ok());
        assert_eq!(store.kind(), "memory");
        let text = metrics.render(&crate::metrics::Live::default());
        assert!(text.contains("fileproxy_store_operation_seconds_count{op=\"set\"} 1"));
        assert!(text.contains("fileproxy_store_operation_seconds_count{op=\"get\"} 1"));
        assert!(text.contains("fileproxy_store_operation_seconds_count{op=\"incr_window\"} 1"));
        assert!(text.contains("fileproxy_store_errors_total{op=\"set\"} 0"));
        assert!(metrics.totals(&Default::default()).store.count() >= 3);
    }
}
