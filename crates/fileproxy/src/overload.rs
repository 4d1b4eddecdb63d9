//! Overload bounds of SPEC §11 outside the listener: the origin in-flight gate
//! ([`GatedOrigin`]: at most `origin.max_in_flight` origin requests, each holding its
//! slot until its body ends; a request that waits longer than `origin.queue_timeout_ms`
//! is answered `503` + `Retry-After: 1`), the bound on deferred store writes
//! ([`Overload::spawn_background`]: past `store.max_background_writes` they are dropped
//! and counted, never queued), and the counters of every §11 refusal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::origin::{Origin, OriginBody, OriginError, OriginRequest};

/// Counters of the §11 bounds (registered in the app's `/metrics` registry).
#[derive(Debug, Clone, Default)]
pub struct OverloadMetrics {
    /// Connections closed at once because their address held `max_connections_per_ip`.
    pub connections_refused_per_ip: Counter,
    /// Connections closed by a deadline, by phase (`handshake`, `first_request`,
    /// `header`, `keepalive`, `h2_idle`).
    pub connections_timed_out: Family<Vec<(String, String)>, Counter>,
    /// Requests answered 503 because no origin slot freed within `queue_timeout_ms`.
    pub origin_queue_timeouts: Counter,
    /// Deferred store writes dropped because `max_background_writes` were running.
    pub background_writes_dropped: Counter,
    /// Deferred store writes running now (at most `max_background_writes`).
    pub background_writes_in_flight: Gauge,
    /// Requests allowed from the outage-grace memory while the store failed.
    pub outage_grace_allowed: Counter,
    /// Transfers cut when `shutdown_grace_s` ran out.
    pub shutdown_cut_connections: Counter,
}

impl OverloadMetrics {
    /// Creates the counters and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = OverloadMetrics::default();
        registry.register(
            "connections_refused_per_ip",
            "Connections closed at once because their client address held server.max_connections_per_ip",
            m.connections_refused_per_ip.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed by a deadline, by phase",
            m.connections_timed_out.clone(),
        );
        registry.register(
            "origin_queue_timeouts",
            "Requests answered 503 because no origin slot freed within origin.queue_timeout_ms",
            m.origin_queue_timeouts.clone(),
        );
        registry.register(
            "background_writes_dropped",
            "Deferred store writes dropped because store.max_background_writes were running",
            m.background_writes_dropped.clone(),
        );
        registry.register(
            "background_writes_in_flight",
            "Deferred store writes running now (at most store.max_background_writes)",
            m.background_writes_in_flight.clone(),
        );
        registry.register(
            "outage_grace_allowed",
            "Requests allowed from the recent-decision memory while the store failed",
            m.outage_grace_allowed.clone(),
        );
        registry.register(
            "shutdown_cut_connections",
            "Connections cut when server.shutdown_grace_s ran out",
            m.shutdown_cut_connections.clone(),
        );
        m
    }

    /// Counts one connection closed by the deadline of `phase`.
    pub fn timed_out(&self, phase: &str) {
        self.connections_timed_out
            .get_or_create(&vec![("phase".to_string(), phase.to_string())])
            .inc();
    }
}

/// The bound on deferred store writes.
#[derive(Debug)]
pub struct Overload {
    background: Arc<Semaphore>,
    metrics: OverloadMetrics,
}

impl Overload {
    /// At most `max_background` deferred writes at once.
    pub fn new(max_background: usize, metrics: OverloadMetrics) -> Self {
        Overload {
            background: Arc::new(Semaphore::new(max_background.max(1))),
            metrics,
        }
    }

    /// Spawns `work` on `tracker` if a background slot is free; otherwise drops it,
    /// counts it and returns false.
    pub fn spawn_background<F>(&self, tracker: &TaskTracker, work: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match Arc::clone(&self.background).try_acquire_owned() {
            Ok(permit) => {
                let in_flight = InFlight::enter(&self.metrics.background_writes_in_flight);
                tracker.spawn(async move {
                    work.await;
                    drop(in_flight);
                    drop(permit);
                });
                true
            }
            Err(_) => {
                self.metrics.background_writes_dropped.inc();
                tracing::debug!("deferred store write dropped: too many running");
                false
            }
        }
    }
}

/// One running deferred write on the in-flight gauge (left on drop, even if the task
/// is cancelled).
struct InFlight(Gauge);

impl InFlight {
    fn enter(g: &Gauge) -> Self {
        g.inc();
        InFlight(g.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The origin behind the in-flight gate. Derefs to [`Origin`] for everything else
/// (pool state, URLs); [`GatedOrigin::fetch`] is the only way to the origin.
pub struct GatedOrigin {
    origin: Origin,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    metrics: OverloadMetrics,
}

impl std::ops::Deref for GatedOrigin {
    type Target = Origin;
    fn deref(&self) -> &Origin {
        &self.origin
    }
}

impl GatedOrigin {
    /// Puts `origin` behind `max_in_flight` slots; waits at most `queue_timeout` for one.
    pub fn new(
        origin: Origin,
        max_in_flight: usize,
        queue_timeout: Duration,
        metrics: OverloadMetrics,
    ) -> Self {
        GatedOrigin {
            origin,
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
            queue_timeout,
            metrics,
        }
    }

    /// Origin slots free now.
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// Waits for a slot, then fetches; the slot is held until the body ends or is dropped.
    pub async fn fetch(&self, req: OriginRequest) -> Result<Response<OriginBody>, OriginError> {
        let permit =
            match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned())
                .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(_)) | Err(_) => {
                    self.metrics.origin_queue_timeouts.inc();
                    return Err(OriginError::Busy);
                }
            };
        let resp = self.origin.fetch(req).await?;
        Ok(resp.map(|body| {
            SlotBody {
                inner: body,
                permit: Some(permit),
            }
            .boxed_unsync()
        }))
    }
}

/// The answer to a request that found no origin slot: `503` with `Retry-After: 1`.
pub fn busy_response() -> Response<crate::response::Body> {
    let mut r = crate::response::text(http::StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    r
}

/// An origin body holding its in-flight slot until it ends or is dropped.
struct SlotBody {
    inner: OriginBody,
    permit: Option<OwnedSemaphorePermit>,
}

impl HttpBody for SlotBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn background_past_the_bound_is_dropped_and_counted() {
        let m = OverloadMetrics::default();
        let o = Overload::new(2, m.clone());
        let t = TaskTracker::new();
        let (tx, rx) = tokio::sync::watch::channel(false);
        for _ in 0..2 {
            let mut rx = rx.clone();
            assert!(o.spawn_background(&t, async move {
                let _ = rx.wait_for(|v| *v).await;
            }));
        }
        assert!(!o.spawn_background(&t, async {}));
        assert_eq!(m.background_writes_dropped.get(), 1);
        assert_eq!(m.background_writes_in_flight.get(), 2);
        tx.send(true).unwrap();
        t.close();
        t.wait().await;
        assert_eq!(m.background_writes_in_flight.get(), 0);
        assert!(o.spawn_background(&t, async {}));
    }
}
