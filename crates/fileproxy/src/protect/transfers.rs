//! Live transfers for `/active-transfers` (SPEC §9): bytes, speed, progress and
//! first-byte latency of every body being streamed right now.
//!
//! [`Transfers::track`] wraps the pipeline's accounting observer: the wrapper updates
//! two atomics per frame ([`TransferObserver::progress`]), removes the transfer from
//! the registry when it ends, records it in the recent-requests list, and then hands
//! the report to the wrapped observer unchanged. Memory is bounded by the number of
//! live transfers (itself bounded by `server.max_connections` and HTTP/2 streams).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use serde_json::{json, Value};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::events::{AccessEvent, EventLog};
use crate::stream::{Outcome, TransferObserver, TransferReport};

/// Marks "no first byte yet".
const NONE: u64 = u64::MAX;

/// What is known about a transfer when it starts.
#[derive(Debug, Clone)]
pub struct TransferMeta {
    /// `GET` or `HEAD`.
    pub method: String,
    /// Request path (no query).
    pub path: String,
    /// Effective uid.
    pub uid: Option<String>,
    /// Client IP.
    pub client_ip: IpAddr,
    /// Status sent.
    pub status: u16,
    /// Body length when known (`Content-Length`).
    pub total: Option<u64>,
    /// User-Agent.
    pub user_agent: String,
    /// When the request arrived.
    pub started: Instant,
    /// Cancelled to cut the transfer (a revoked uid, SPEC §13); its body is wrapped
    /// in a [`CutBody`] holding the same token.
    pub cut: CancellationToken,
}

/// One live transfer.
#[derive(Debug)]
struct Live {
    id: u64,
    meta: TransferMeta,
    started_unix: u64,
    bytes: AtomicU64,
    first_byte_us: AtomicU64,
}

/// The registry of live transfers.
#[derive(Debug, Default)]
pub struct Transfers {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Live>>>,
}

/// The observer wrapper returned by [`Transfers::track`].
struct Tracked {
    live: Arc<Live>,
    transfers: Arc<Transfers>,
    events: Arc<EventLog>,
    inner: Box<dyn TransferObserver>,
}

impl TransferObserver for Tracked {
    fn progress(&mut self, bytes: u64) {
        self.live.bytes.store(bytes, Ordering::Relaxed);
        if bytes > 0 && self.live.first_byte_us.load(Ordering::Relaxed) == NONE {
            let us =
                u64::try_from(self.live.meta.started.elapsed().as_micros()).unwrap_or(NONE - 1);
            self.live.first_byte_us.store(us, Ordering::Relaxed);
        }
        self.inner.progress(bytes);
    }

    fn finish(self: Box<Self>, report: TransferReport) {
        let Tracked {
            live,
            transfers,
            events,
            inner,
        } = *self;
        if let Ok(mut g) = transfers.live.lock() {
            g.remove(&live.id);
        }
        let m = &live.meta;
        events.record_access(&AccessEvent {
            client_ip: m.client_ip,
            method: &m.method,
            path: &m.path,
            uid: m.uid.as_deref(),
            status: m.status,
            bytes: report.bytes,
            outcome: match report.outcome {
                Outcome::Completed => "completed",
                Outcome::ClientClosed => "client_closed",
                Outcome::OriginError => "origin_error",
            },
            reason: None,
            first_byte_ms: report.first_byte.map(|d| d.as_secs_f64() * 1000.0),
            duration_ms: report.total.as_secs_f64() * 1000.0,
            user_agent: &m.user_agent,
        });
        inner.finish(report);
    }
}

impl Transfers {
    /// Registers a transfer and returns the observer to give its body: it reports to
    /// `inner` exactly as `inner` would have been reported to.
    pub fn track(
        self: &Arc<Self>,
        events: &Arc<EventLog>,
        meta: TransferMeta,
        inner: Box<dyn TransferObserver>,
    ) -> Box<dyn TransferObserver> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let live = Arc::new(Live {
            id,
            meta,
            started_unix: crate::clock::unix_secs(),
            bytes: AtomicU64::new(0),
            first_byte_us: AtomicU64::new(NONE),
        });
        if let Ok(mut g) = self.live.lock() {
            g.insert(id, live.clone());
        }
        Box::new(Tracked {
            live,
            transfers: self.clone(),
            events: events.clone(),
            inner,
        })
    }

    /// Number of live transfers.
    pub fn len(&self) -> usize {
        self.live.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Whether no transfer is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cuts every live transfer `pred` selects (its body ends with an error, so the
    /// viewer's connection or stream is reset); returns how many were cut now.
    pub fn cut_where(&self, pred: impl Fn(&TransferMeta) -> bool) -> usize {
        let live: Vec<Arc<Live>> = self
            .live
            .lock()
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default();
        live.iter()
            .filter(|l| !l.meta.cut.is_cancelled() && pred(&l.meta))
            .inspect(|l| l.meta.cut.cancel())
            .count()
    }

    /// The newest `limit` live transfers with their figures.
    pub fn snapshot(&self, limit: usize) -> Vec<Value> {
        let mut live: Vec<Arc<Live>> = self
            .live
            .lock()
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default();
        live.sort_by_key(|l| std::cmp::Reverse(l.id));
        live.truncate(limit);
        live.iter()
            .map(|l| {
                let m = &l.meta;
                let bytes = l.bytes.load(Ordering::Relaxed);
                let fb = l.first_byte_us.load(Ordering::Relaxed);
                let elapsed = m.started.elapsed().as_secs_f64();
                let since_first = if fb == NONE {
                    0.0
                } else {
                    elapsed - fb as f64 / 1e6
                };
                let speed = if since_first > 0.0 {
                    bytes as f64 / since_first
                } else {
                    0.0
                };
                json!({
                    "id": l.id,
                    "started_at": l.started_unix,
                    "elapsed_s": elapsed,
                    "method": m.method,
                    "path": m.path,
                    "uid": m.uid,
                    "client_ip": m.client_ip.to_string(),
                    "status": m.status,
                    "bytes": bytes,
                    "total_bytes": m.total,
                    "progress": m.total.filter(|t| *t > 0).map(|t| bytes as f64 / t as f64),
                    "speed_bytes_per_s": speed,
                    "first_byte_ms": (fb != NONE).then(|| fb as f64 / 1000.0),
                    "user_agent": m.user_agent,
                })
            })
            .collect()
    }
}

/// A response body that ends with an error as soon as its token is cancelled
/// ([`Transfers::cut_where`]), even while it waits for the origin.
pub struct CutBody {
    inner: crate::response::Body,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl CutBody {
    /// Wraps `inner`; cancelling `token` cuts it.
    pub fn new(inner: crate::response::Body, token: CancellationToken) -> Self {
        Self {
            inner,
            cut: Box::pin(token.cancelled_owned()),
            done: false,
        }
    }
}

impl http_body::Body for CutBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.cut.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Some(Err(std::io::Error::other(
                "transfer cut: uid revoked",
            ))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::time::Duration;

    struct Inner(Arc<Mutex<Vec<u64>>>);
    impl TransferObserver for Inner {
        fn progress(&mut self, bytes: u64) {
            if let Ok(mut g) = self.0.lock() {
                g.push(bytes);
            }
        }
        fn finish(self: Box<Self>, report: TransferReport) {
            if let Ok(mut g) = self.0.lock() {
                g.push(1_000_000 + report.bytes);
            }
        }
    }

    #[tokio::test]
    async fn tracks_progress_and_forwards_reports() {
        let t = Arc::new(Transfers::default());
        let ev = Arc::new(EventLog::new(
            10,
            Duration::from_secs(60),
            Arc::new(MemoryStore::new()),
        ));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let meta = TransferMeta {
            method: "GET".into(),
            path: "/a/b.ts".into(),
            uid: Some("u".into()),
            client_ip: "10.0.0.1".parse().unwrap(),
            status: 200,
            total: Some(100),
            user_agent: "UA".into(),
            started: Instant::now(),
            cut: CancellationToken::new(),
        };
        let mut obs = t.track(&ev, meta, Box::new(Inner(seen.clone())));
        assert_eq!(t.len(), 1);
        obs.progress(25);
        let snap = t.snapshot(10);
        assert_eq!(snap[0]["bytes"], 25);
        assert_eq!(snap[0]["progress"], 0.25);
        assert!(snap[0]["first_byte_ms"].is_number());
        obs.finish(TransferReport {
            bytes: 100,
            outcome: Outcome::Completed,
            first_byte: Some(Duration::from_millis(1)),
            total: Duration::from_millis(2),
        });
        assert!(t.is_empty());
        assert_eq!(t.cut_where(|_| true), 0, "nothing live to cut");
        assert_eq!(*seen.lock().unwrap(), vec![25, 1_000_100]);
        assert_eq!(ev.summary(10)["window"]["bytes"], 100);
    }
}

#[cfg(test)]
mod cut_tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A cut body waiting on a body that never yields still ends at once, with an error.
    #[tokio::test]
    async fn cut_ends_a_pending_body() {
        let stream = futures_util::stream::pending::<
            Result<http_body::Frame<bytes::Bytes>, std::io::Error>,
        >();
        let inner = http_body_util::StreamBody::new(stream).boxed_unsync();
        let token = CancellationToken::new();
        let mut body = CutBody::new(inner, token.clone());
        let cutter = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            token.cancel();
        });
        let frame = body.frame().await;
        assert!(matches!(frame, Some(Err(_))), "{frame:?}");
        assert!(body.frame().await.is_none());
        cutter.await.unwrap();
    }
}
