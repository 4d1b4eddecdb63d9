//! The cache's figures (SPEC §12): hits, misses, coalesced waiters, bytes served from
//! the cache and fetched from the origin by fills, evictions, bytes held.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Handles to the cache counters (cheap clones of shared atomics).
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    /// Requests answered from a complete cached object.
    pub hits: Counter,
    /// Requests that found nothing cached (a fill started, or went to the origin).
    pub misses: Counter,
    /// Requests that joined a fill in flight instead of fetching again.
    pub coalesced: Counter,
    /// Body bytes served to viewers out of cached objects.
    pub served_bytes: Counter,
    /// Of `served_bytes`, those sent with `sendfile(2)` from a sealed copy (no user copy).
    pub sendfile_bytes: Counter,
    /// Body bytes fills fetched from the origin.
    pub origin_bytes: Counter,
    /// Complete objects evicted to make room.
    pub evictions: Counter,
    /// Bytes held by the cache now (complete objects and fills in flight).
    pub held_bytes: Gauge,
}

impl CacheMetrics {
    /// Registers every figure (`fileproxy_cache_…`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cache_hits",
            "Requests answered from a complete cached object",
            self.hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Requests that found nothing cached (a fill started, or the request went to the origin)",
            self.misses.clone(),
        );
        registry.register(
            "cache_coalesced",
            "Requests that joined a cache fill in flight instead of fetching from the origin",
            self.coalesced.clone(),
        );
        registry.register(
            "cache_served_bytes",
            "Body bytes served to viewers from cached objects",
            self.served_bytes.clone(),
        );
        registry.register(
            "cache_sendfile_bytes",
            "Body bytes sent to plain-TCP viewers with sendfile from sealed cached objects (no copy through user memory)",
            self.sendfile_bytes.clone(),
        );
        registry.register(
            "cache_origin_bytes",
            "Body bytes cache fills fetched from the origin",
            self.origin_bytes.clone(),
        );
        registry.register(
            "cache_evictions",
            "Cached objects evicted to make room",
            self.evictions.clone(),
        );
        registry.register(
            "cache_held_bytes",
            "Bytes held by the cache (complete objects and fills in flight)",
            self.held_bytes.clone(),
        );
    }

    /// `/stats`: the figures and the hit ratio (hits and coalesced over lookups).
    pub fn stats(&self) -> serde_json::Value {
        let (hits, misses, coalesced) = (self.hits.get(), self.misses.get(), self.coalesced.get());
        let lookups = hits + misses + coalesced;
        let ratio = if lookups == 0 {
            0.0
        } else {
            (hits + coalesced) as f64 / lookups as f64
        };
        serde_json::json!({
            "hits": hits,
            "misses": misses,
            "coalesced": coalesced,
            "hit_ratio": ratio,
            "served_bytes": self.served_bytes.get(),
            "sendfile_bytes": self.sendfile_bytes.get(),
            "origin_bytes": self.origin_bytes.get(),
            "evictions": self.evictions.get(),
            "held_bytes": self.held_bytes.get(),
        })
    }
}
