//! A real HTTP origin on 127.0.0.1 for integration tests (hyper, in-process).
//!
//! Routes: `/files/<name>` serves registered content with single-range and ETag
//! support; `/sloppy/<name>` serves the same names the way a sloppy server maps paths
//! (`%2F` decoded, empty segments and `;` parameters dropped, `.bak` stripped, case
//! ignored); `/redirect/<name>` answers `302` to `http://<Host>/files/<name>`;
//! `/hang/...` accepts and never answers; `/trickle/...` sends a byte every
//! 100 ms forever; `/gen/<n>` (and `/slow/<n>`, in 10 chunks 200 ms apart) stream `n`
//! pattern bytes, `/nostore/<n>` and `/private/<n>` the same with that
//! `Cache-Control`, `/chunked/<n>` without a length; while `fail_mid` is set those
//! bodies fail half-way. Anything else is 404. It counts accepted and open connections
//! and records every request.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Shared state of a test origin.
#[derive(Default)]
pub struct OriginState {
    /// Content by name.
    pub files: Mutex<HashMap<String, Bytes>>,
    /// Connections accepted so far.
    pub accepted: AtomicU64,
    /// Connections currently open.
    pub open: AtomicU64,
    /// Request headers of the last request.
    pub last_headers: Mutex<Option<http::HeaderMap>>,
    /// Method and path of every request, in order.
    pub requests: Mutex<Vec<(http::Method, String)>>,
    /// While set, generated bodies fail after half their bytes.
    pub fail_mid: std::sync::atomic::AtomicBool,
    /// `/gated/<n>` bodies send their first half, then wait until this is set.
    pub release: std::sync::atomic::AtomicBool,
}

/// A running test origin.
pub struct TestOrigin {
    /// Its address.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<OriginState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

impl TestOrigin {
    /// Starts the origin on the current tokio runtime.
    pub async fn start() -> TestOrigin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(OriginState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.accepted.fetch_add(1, Ordering::SeqCst);
                st.open.fetch_add(1, Ordering::SeqCst);
                let st2 = st.clone();
                tokio::spawn(async move {
                    let st_svc = st2.clone();
                    let svc = service_fn(move |req| {
                        let st3 = st_svc.clone();
                        async move { Ok::<_, Infallible>(route(&st3, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    st2.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TestOrigin { addr, state, task }
    }

    /// Registers content under `/files/<name>`.
    pub fn put(&self, name: &str, content: impl Into<Bytes>) {
        self.state
            .files
            .lock()
            .expect("lock")
            .insert(name.to_string(), content.into());
    }

    /// How many requests for `path` arrived so far.
    pub fn count(&self, path: &str) -> usize {
        let seen = self.state.requests.lock().expect("lock");
        seen.iter().filter(|(_, p)| p == path).count()
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

async fn route(st: &Arc<OriginState>, req: Request<Incoming>) -> Response<Body> {
    *st.last_headers.lock().expect("lock") = Some(req.headers().clone());
    let path = req.uri().path().to_string();
    st.requests
        .lock()
        .expect("lock")
        .push((req.method().clone(), path.clone()));
    if path.starts_with("/hang/") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if path.starts_with("/trickle/") {
        let s = futures_util::stream::unfold((), |_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((
                Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x"))),
                (),
            ))
        });
        return Response::new(StreamBody::new(s).boxed());
    }
    let fail = st.fail_mid.load(Ordering::SeqCst);
    if let Some(n) = path.strip_prefix("/gen/").and_then(leading_number) {
        return generated(n, Duration::ZERO, fail);
    }
    if let Some(n) = path.strip_prefix("/slow/").and_then(leading_number) {
        return generated(n, Duration::from_millis(200), fail);
    }
    for (prefix, cc) in [
        ("/nostore/", "no-store"),
        ("/private/", "private, max-age=60"),
    ] {
        if let Some(n) = path.strip_prefix(prefix).and_then(leading_number) {
            let mut r = generated(n, Duration::ZERO, fail);
            r.headers_mut()
                .insert("cache-control", cc.parse().expect("hv"));
            return r;
        }
    }
    if let Some(n) = path.strip_prefix("/gated/").and_then(leading_number) {
        return gated(n, Arc::clone(st));
    }
    if let Some(n) = path.strip_prefix("/chunked/").and_then(leading_number) {
        let mut r = generated(n, Duration::ZERO, fail);
        r.headers_mut().remove("content-length");
        return r;
    }
    if let Some(rest) = path.strip_prefix("/redirect/") {
        // Points back at the origin itself, as an origin behind FileProxy would.
        let host = req
            .headers()
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1");
        let mut r = status(StatusCode::FOUND);
        r.headers_mut().insert(
            "location",
            format!("http://{host}/files/{rest}").parse().expect("hv"),
        );
        return r;
    }
    let sloppy;
    let name = if let Some(rest) = path.strip_prefix("/sloppy/") {
        // A sloppy server: decodes `%2F`, drops empty segments and `;` parameters,
        // maps `x.bak` to `x`, and looks names up ignoring case.
        let decoded = rest.replace("%2F", "/").replace("%2f", "/");
        let mut segs: Vec<&str> = decoded
            .split('/')
            .map(|s| s.split(';').next().unwrap_or(""))
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(last) = segs.last_mut() {
            *last = last.strip_suffix(".bak").unwrap_or(last);
        }
        let wanted = segs.join("/").to_ascii_lowercase();
        sloppy = st
            .files
            .lock()
            .expect("lock")
            .keys()
            .find(|k| k.to_ascii_lowercase() == wanted)
            .cloned()
            .unwrap_or(wanted);
        sloppy.as_str()
    } else if let Some(name) = path.strip_prefix("/files/") {
        name
    } else {
        return status(StatusCode::NOT_FOUND);
    };
    let Some(content) = st.files.lock().expect("lock").get(name).cloned() else {
        let mut r = status(StatusCode::NOT_FOUND);
        r.headers_mut()
            .insert("access-control-allow-origin", "*".parse().expect("hv"));
        return r;
    };
    let etag = format!("\"len-{}\"", content.len());
    if req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        let mut r = status(StatusCode::NOT_MODIFIED);
        r.headers_mut().insert("etag", etag.parse().expect("hv"));
        return r;
    }
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    let mut r = match range {
        Some((a, b)) if a <= b && b < content.len() => {
            let mut r = Response::new(full(content.slice(a..=b)));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                "content-range",
                format!("bytes {a}-{b}/{}", content.len())
                    .parse()
                    .expect("hv"),
            );
            r
        }
        _ => Response::new(full(content.clone())),
    };
    let h = r.headers_mut();
    h.insert("etag", etag.parse().expect("hv"));
    h.insert("content-type", "video/mp2t".parse().expect("hv"));
    h.insert(
        "access-control-allow-origin",
        "https://evil.example".parse().expect("hv"),
    );
    h.insert("keep-alive", "timeout=5".parse().expect("hv"));
    if req.method() == http::Method::HEAD {
        h.insert(
            "content-length",
            content.len().to_string().parse().expect("hv"),
        );
        let (parts, _) = r.into_parts();
        return Response::from_parts(parts, full(Bytes::new()));
    }
    r
}

fn leading_number(s: &str) -> Option<u64> {
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Streams `n` bytes of a repeating pattern in 64 KiB chunks (or 10 chunks with a
/// pause between them when `pause` is non-zero) without holding them in memory; with
/// `fail`, the body errors once half the bytes are out.
fn generated(n: u64, pause: Duration, fail: bool) -> Response<Body> {
    let chunk: u64 = if pause.is_zero() {
        64 * 1024
    } else {
        n.div_ceil(10).max(1)
    };
    // One shared buffer of the pattern; every chunk is a cheap slice of it.
    let pattern: Bytes = (0..chunk + 251)
        .map(pattern_byte)
        .collect::<Vec<u8>>()
        .into();
    let s = futures_util::stream::unfold(0u64, move |sent| {
        let pattern = pattern.clone();
        async move {
            if sent >= n {
                return None;
            }
            if fail && sent >= n / 2 {
                return Some((Err(std::io::Error::other("origin failed mid-body")), n));
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let len = chunk.min(n - sent);
            let start = (sent % 251) as usize;
            let data = pattern.slice(start..start + len as usize);
            Some((Ok::<_, std::io::Error>(Frame::data(data)), sent + len))
        }
    });
    let mut r = Response::new(StreamBody::new(s).boxed());
    r.headers_mut()
        .insert("content-length", n.to_string().parse().expect("hv"));
    r
}

/// `n` pattern bytes in two halves: the first at once, the second once
/// `state.release` is set (checked every 10 ms).
fn gated(n: u64, state: Arc<OriginState>) -> Response<Body> {
    let half = n / 2;
    let piece =
        |from: u64, to: u64| -> Bytes { (from..to).map(pattern_byte).collect::<Vec<u8>>().into() };
    let first = piece(0, half);
    let second = piece(half, n);
    let s = futures_util::stream::unfold(0u8, move |step| {
        let (first, second, state) = (first.clone(), second.clone(), state.clone());
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(Frame::data(first)), 1)),
                1 => {
                    while !state.release.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Some((Ok(Frame::data(second)), 2))
                }
                _ => None,
            }
        }
    });
    let mut r = Response::new(StreamBody::new(s).boxed());
    r.headers_mut()
        .insert("content-length", n.to_string().parse().expect("hv"));
    r
}

/// The byte at offset `i` of a `/gen/` or `/slow/` body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

fn status(s: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = s;
    r
}
