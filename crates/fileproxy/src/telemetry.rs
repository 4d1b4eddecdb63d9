//! Live gauges shared by the listeners and the logging phase: open connections and
//! transfers streaming right now. Cumulative counts (requests, bytes, client-closed)
//! live in the one metrics registry ([`crate::metrics::Metrics`]).
//!
//! Plain atomics, so the hot path pays one relaxed add per event.

use std::sync::atomic::AtomicU64;

/// Process-wide live gauges.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Open client connections.
    pub connections: AtomicU64,
    /// Transfers currently streaming a body.
    pub active_transfers: AtomicU64,
}
