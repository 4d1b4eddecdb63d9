//! Origins: where the bytes come from — an HTTP(S) server through a connection pool,
//! or a local folder (`file://`).
//!
//! The pipeline hands an [`OriginRequest`] to [`Origin::fetch`] and gets back the
//! origin's response with a streaming body. Header filtering towards the viewer
//! (hop-by-hop, CORS) is the pipeline's job, not the origin's.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use http_body_util::combinators::UnsyncBoxBody;

pub(crate) mod conditional;
pub mod file;
pub mod http_origin;

/// A response body as streamed from an origin.
pub type OriginBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Which first-byte timeout applies to a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchClass {
    /// `.m3u8` playlists (`origin.playlist_timeout_ms`).
    Playlist,
    /// Everything else (`origin.timeout_ms`).
    Other,
}

/// What the pipeline asks of an origin.
#[derive(Debug, Clone)]
pub struct OriginRequest {
    /// `GET` or `HEAD`.
    pub method: Method,
    /// The path to fetch, percent-encoded with a leading `/` and no query string: for
    /// viewer requests the canonical path's [`origin_path`] (SPEC §10), the very path
    /// the policy classified.
    ///
    /// [`origin_path`]: crate::access::canonical_path::CanonicalPath::origin_path
    pub path: String,
    /// Viewer headers to forward: `User-Agent`, `Range`, `If-Range`,
    /// `If-Modified-Since`, `If-None-Match` (only those present).
    pub headers: HeaderMap,
    /// The viewer's address, sent as `X-Forwarded-For` to HTTP origins.
    pub client_ip: IpAddr,
    /// Playlist or other (selects the timeout).
    pub class: FetchClass,
}

/// Why a fetch failed before a response could be streamed.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// Connection refused, reset, DNS failure, TLS failure, broken response → 502.
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    /// Connect or first byte past its timeout → 504.
    #[error("origin timed out after {0:?}")]
    Timeout(Duration),
    /// The path cannot be served (escapes the root, invalid encoding) → 400.
    #[error("bad path: {0}")]
    BadPath(String),
    /// No origin slot freed within `origin.queue_timeout_ms` → 503 + `Retry-After: 1`.
    #[error("origin busy: no slot within the queue timeout")]
    Busy,
}

/// Connection-pool figures for `/health` and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PoolState {
    /// `http`, `https` or `file`.
    pub kind: &'static str,
    /// Fetches currently in flight (connections in use).
    pub in_flight: u64,
    /// New connections opened so far.
    pub connections_opened: u64,
    /// Connect attempts that timed out so far.
    pub connect_timeouts: u64,
    /// Connections open now (in use or idle in the pool).
    pub open_connections: u64,
    /// Open connections not carrying a fetch (`open_connections - in_flight`, floored
    /// at 0; an HTTP/2 connection carrying several fetches counts once).
    pub idle_connections: u64,
}

/// Live counters behind [`PoolState`], shared by an origin and its bodies.
#[derive(Debug, Default)]
pub(crate) struct PoolCounters {
    /// Fetches started and not yet finished (body ended or dropped).
    in_flight: AtomicU64,
    /// Connections opened.
    connections_opened: AtomicU64,
    /// Connect attempts that timed out.
    connect_timeouts: AtomicU64,
    /// Connections closed (dropped by the pool).
    connections_closed: AtomicU64,
}

impl PoolCounters {
    /// The figures now, labelled with `kind`.
    pub(crate) fn snapshot(&self, kind: &'static str) -> PoolState {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let opened = self.connections_opened.load(Ordering::Relaxed);
        let open = opened.saturating_sub(self.connections_closed.load(Ordering::Relaxed));
        PoolState {
            kind,
            in_flight,
            connections_opened: opened,
            connect_timeouts: self.connect_timeouts.load(Ordering::Relaxed),
            open_connections: open,
            idle_connections: open.saturating_sub(in_flight),
        }
    }

    /// Counts one connection closed.
    pub(crate) fn connection_closed(&self) {
        self.connections_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one new connection.
    pub(crate) fn connection_opened(&self) {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one connect timeout.
    pub(crate) fn connect_timed_out(&self) {
        self.connect_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Holds one unit of `in_flight` until dropped (moved into the response body).
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<PoolCounters>);

impl InFlightGuard {
    /// Counts a fetch as started.
    pub(crate) fn start(counters: &Arc<PoolCounters>) -> Self {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(Arc::clone(counters))
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The configured origin.
pub enum Origin {
    /// An HTTP(S) origin server behind a connection pool.
    Http(http_origin::HttpOrigin),
    /// A local folder.
    File(file::FileOrigin),
}

impl Origin {
    /// Builds the origin named by `cfg.url`.
    pub fn from_config(cfg: &crate::config::OriginConfig) -> anyhow::Result<Origin> {
        match cfg.url.target() {
            crate::origin_url::OriginTarget::File(root) => {
                Ok(Origin::File(file::FileOrigin::new(root, cfg)?))
            }
            crate::origin_url::OriginTarget::Http(_) => {
                Ok(Origin::Http(http_origin::HttpOrigin::new(cfg)?))
            }
        }
    }

    /// Fetches `req.path` from the origin.
    pub async fn fetch(&self, req: OriginRequest) -> Result<Response<OriginBody>, OriginError> {
        match self {
            Origin::Http(o) => o.fetch(req).await,
            Origin::File(o) => o.fetch(req).await,
        }
    }

    /// Rewrites a redirect's `Location` that points at the origin into a path on
    /// FileProxy (SPEC §10: the origin's address never reaches a viewer).
    pub fn rewrite_redirect(&self, status: http::StatusCode, headers: &mut HeaderMap) {
        if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
            return;
        }
        let Origin::Http(o) = self else { return };
        let local = headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| o.local_location(l))
            .and_then(|l| http::HeaderValue::from_str(&l).ok());
        if let Some(v) = local {
            headers.insert(http::header::LOCATION, v);
        }
    }

    /// Pool figures for `/health` and metrics.
    pub fn pool_state(&self) -> PoolState {
        match self {
            Origin::Http(o) => o.pool_state(),
            Origin::File(o) => o.pool_state(),
        }
    }

    /// The origin's base URL for `/probe/backend` (no credentials).
    pub fn describe_url(&self, path: &str) -> String {
        match self {
            Origin::Http(o) => o.url_for(path),
            Origin::File(o) => o.url_for(path),
        }
    }
}
