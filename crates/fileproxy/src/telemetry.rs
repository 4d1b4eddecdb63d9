//! Live counters shared by the listeners and the pipeline, read by `/health`.
//!
//! Kept as plain atomics so the hot path pays one relaxed add per event.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide live counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Open client connections.
    pub connections: AtomicU64,
    /// Requests received.
    pub requests: AtomicU64,
    /// Transfers currently streaming a body.
    pub active_transfers: AtomicU64,
    /// Body bytes delivered to viewers.
    pub bytes_delivered: AtomicU64,
    /// Transfers the viewer abandoned mid-way.
    pub client_closed: AtomicU64,
}

impl Counters {
    /// A consistent-enough snapshot for JSON views.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "connections": self.connections.load(Ordering::Relaxed),
            "requests": self.requests.load(Ordering::Relaxed),
            "active_transfers": self.active_transfers.load(Ordering::Relaxed),
            "bytes_delivered": self.bytes_delivered.load(Ordering::Relaxed),
            "client_closed": self.client_closed.load(Ordering::Relaxed),
        })
    }
}
