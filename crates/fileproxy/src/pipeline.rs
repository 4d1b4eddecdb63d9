//! The request pipeline: route → client identity → classify → access policy → origin
//! → response stream → accounting. `handle` reads top to bottom as those stages.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::Config;
use crate::health;
use crate::origin::{FetchClass, Origin, OriginError, OriginRequest};
use crate::response::{self, filter_origin_headers, Body};
use crate::server::Surface;
use crate::store::SharedStore;
use crate::stream::{Outcome, TransferBody, TransferObserver, TransferReport};
use crate::telemetry::Counters;

/// Everything a request needs, built once at start-up and shared by all connections.
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// Shared state.
    pub store: SharedStore,
    /// Where files come from.
    pub origin: Origin,
    /// Live counters.
    pub counters: Counters,
    /// When the process started.
    pub started: Instant,
}

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Which listener accepted it.
    pub surface: Surface,
    /// Whether TLS was terminated.
    pub tls: bool,
}

/// Viewer headers forwarded to the origin (SPEC §2 step 7).
const FORWARDED: [header::HeaderName; 5] = [
    header::USER_AGENT,
    header::RANGE,
    header::IF_RANGE,
    header::IF_MODIFIED_SINCE,
    header::IF_NONE_MATCH,
];

/// Handles one request; never fails (errors become 4xx/5xx responses).
pub async fn handle(app: Arc<App>, conn: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    app.counters.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/health") => health::handle(&app).await,
        _ if conn.surface == Surface::Admin => response::text(StatusCode::NOT_FOUND, "Not Found"),
        (&Method::GET | &Method::HEAD, _) => proxy(&app, &conn, req, started).await,
        _ => {
            let mut r = response::text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            r
        }
    }
}

/// The viewer flow of SPEC §2.
async fn proxy(
    app: &Arc<App>,
    conn: &ConnInfo,
    req: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    let raw_path = req.uri().path().to_string();
    let decoded = match decode_path(&raw_path) {
        Ok(p) => p,
        Err(why) => {
            tracing::info!(peer = %conn.peer, path = %raw_path, why, "rejected malformed path");
            return response::text(StatusCode::BAD_REQUEST, format!("Bad Request: {why}"));
        }
    };
    let client_ip = conn.peer.ip();
    let class = if decoded.to_ascii_lowercase().ends_with(".m3u8") {
        FetchClass::Playlist
    } else {
        FetchClass::Other
    };
    fetch_and_stream(app, &req, raw_path, client_ip, class, started).await
}

/// Fetches from the origin and streams the answer back (SPEC §2 steps 7–8).
async fn fetch_and_stream(
    app: &Arc<App>,
    req: &Request<Incoming>,
    raw_path: String,
    client_ip: IpAddr,
    class: FetchClass,
    started: Instant,
) -> Response<Body> {
    let mut headers = HeaderMap::new();
    for name in FORWARDED.iter() {
        if let Some(v) = req.headers().get(name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    let origin_req = OriginRequest {
        method: if req.method() == Method::HEAD {
            Method::HEAD
        } else {
            Method::GET
        },
        path: raw_path.clone(),
        headers,
        client_ip,
        class,
    };
    let resp = match app.origin.fetch(origin_req).await {
        Ok(r) => r,
        Err(OriginError::Timeout(after)) => {
            tracing::warn!(path = %raw_path, ?after, "origin timed out");
            return response::text(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout");
        }
        Err(OriginError::Unreachable(why)) => {
            tracing::warn!(path = %raw_path, %why, "origin unreachable");
            return response::text(StatusCode::BAD_GATEWAY, "Bad Gateway");
        }
        Err(OriginError::BadPath(why)) => {
            tracing::info!(path = %raw_path, %why, "path refused by origin");
            return response::text(StatusCode::BAD_REQUEST, format!("Bad Request: {why}"));
        }
    };
    let (mut parts, body) = resp.into_parts();
    filter_origin_headers(&mut parts.headers);
    if parts.status.as_u16() >= 400 {
        // Origin errors pass through with their status and an empty body.
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_ENCODING);
        if parts.status != StatusCode::RANGE_NOT_SATISFIABLE {
            parts.headers.remove(header::CONTENT_RANGE);
        }
        drop(body);
        return Response::from_parts(parts, response::empty());
    }
    app.counters
        .active_transfers
        .fetch_add(1, Ordering::Relaxed);
    let observer = Box::new(Accounting {
        app: app.clone(),
        path: raw_path,
        status: parts.status,
    });
    let body = TransferBody::new(body, started, observer);
    Response::from_parts(parts, http_body_util::BodyExt::boxed_unsync(body))
}

/// Accounting stage: runs once when a transfer ends.
struct Accounting {
    app: Arc<App>,
    path: String,
    status: StatusCode,
}

impl TransferObserver for Accounting {
    fn finish(self: Box<Self>, report: TransferReport) {
        let c = &self.app.counters;
        c.active_transfers.fetch_sub(1, Ordering::Relaxed);
        c.bytes_delivered.fetch_add(report.bytes, Ordering::Relaxed);
        match report.outcome {
            Outcome::Completed => {}
            Outcome::ClientClosed => {
                c.client_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(path = %self.path, status = 499, bytes = report.bytes, "viewer closed the connection");
            }
            Outcome::OriginError => {
                tracing::warn!(path = %self.path, status = self.status.as_u16(), bytes = report.bytes, "origin failed mid-transfer");
            }
        }
    }
}

/// Percent-decodes a request path and refuses paths no origin should see:
/// invalid UTF-8, NUL, backslashes, `.`/`..` segments.
pub fn decode_path(raw: &str) -> Result<String, &'static str> {
    if !raw.starts_with('/') {
        return Err("path must start with /");
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "path is not valid UTF-8")?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err("invalid character in path");
    }
    if decoded.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err("dot segments are not allowed");
    }
    Ok(decoded.into_owned())
}
