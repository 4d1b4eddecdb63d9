//! The content check of SPEC §10, a response-stage guard that does not trust the path:
//! an answer whose `Content-Type` is an HLS playlist type, or whose object starts with
//! `#EXTM3U`, reaches only a request that passed the playlist checks (§2 step 6).
//! Anything else gets `403 Access Denied 100021 content class` and a warning with the
//! path. It is defence in depth for origins we do not control (one that maps
//! `/x.m3u8.bak`, `/x.php?f=x.m3u8` or PATH_INFO to a playlist).
//!
//! [`guard`] works on any response head and body (origin or, later, a cache), before
//! the head is sent:
//!
//! * `Content-Type` is compared case-insensitively (parameters ignored) with
//!   [`PLAYLIST_TYPES`];
//! * a body that starts at the object's byte 0 (`200`, or `206` with `bytes 0-…`) is
//!   peeked: data frames are held until [`PEEK_BYTES`] bytes (or the end) are seen,
//!   then replayed in front of the rest, so nothing is lost or copied;
//! * a `206` starting later says nothing about the object's start, so the first bytes
//!   are asked for separately (the caller's `object_start`, e.g. [`object_start`]: one
//!   small `Range: bytes=0-15` origin request). Only this case costs anything extra;
//!   when the start cannot be learnt the answer is refused (fail closed).

use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::response::Parts;
use http::{Method, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::cache::SegmentCache;
use crate::origin::{FetchClass, OriginBody, OriginRequest};
use crate::overload::GatedOrigin;

/// `403` text of a refused answer.
pub const DENY_TEXT: &str = "Access Denied 100021 content class";

/// HLS playlist media types (SPEC §10), lowercase.
pub const PLAYLIST_TYPES: [&str; 4] = [
    "application/vnd.apple.mpegurl",
    "application/x-mpegurl",
    "audio/mpegurl",
    "audio/x-mpegurl",
];

/// The playlist signature.
const MAGIC: &[u8] = b"#EXTM3U";

/// UTF-8 byte-order mark some writers put before it (players skip it).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes held back to look at the object's start (BOM + `#EXTM3U`).
pub const PEEK_BYTES: usize = 10;

/// Why an answer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The `Content-Type` is a playlist type.
    PlaylistType,
    /// The object starts with `#EXTM3U`.
    PlaylistBody,
    /// A ranged answer whose object start could not be learnt.
    UnknownStart,
}

impl Refusal {
    /// Short name for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PlaylistType => "playlist content type",
            Refusal::PlaylistBody => "body starts with #EXTM3U",
            Refusal::UnknownStart => "object start unknown for a ranged answer",
        }
    }
}

/// Whether a `Content-Type` value names an HLS playlist.
pub fn is_playlist_type(value: &HeaderValue) -> bool {
    let Ok(v) = value.to_str() else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    PLAYLIST_TYPES
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t))
}

/// Whether the first bytes of an object are a playlist's (`#EXTM3U`, optional BOM).
/// `start` may be shorter than [`PEEK_BYTES`] only when the object is.
pub fn starts_like_playlist(start: &[u8]) -> bool {
    let s = start.strip_prefix(BOM).unwrap_or(start);
    s.starts_with(MAGIC)
}

/// Where the body of an answer starts in the object: `Some(0)` for a `200`, the first
/// byte of a `206`'s `Content-Range`, `None` when there is no body to look at.
fn body_offset(status: StatusCode, headers: &HeaderMap) -> Option<Option<u64>> {
    match status {
        StatusCode::OK => Some(Some(0)),
        StatusCode::PARTIAL_CONTENT => {
            let first = headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|a| a.trim().parse::<u64>().ok());
            Some(first)
        }
        _ => None,
    }
}

/// Applies the content check to an answer about to be sent. `passed_playlist_checks`
/// lets everything through untouched; otherwise the body may be returned with its
/// first frames held and replayed ([`Prefixed`]). `object_start` is awaited only for
/// a `206` that does not start at byte 0.
pub async fn guard<F, Fut>(
    parts: &Parts,
    body: OriginBody,
    passed_playlist_checks: bool,
    head: bool,
    object_start: F,
) -> Result<OriginBody, Refusal>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<Bytes>>,
{
    if passed_playlist_checks {
        return Ok(body);
    }
    if parts
        .headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .any(is_playlist_type)
    {
        return Err(Refusal::PlaylistType);
    }
    if head {
        return Ok(body);
    }
    match body_offset(parts.status, &parts.headers) {
        None => Ok(body),
        Some(Some(0)) => {
            let (held, rest) = peek(body, PEEK_BYTES).await;
            let start: Vec<u8> = held
                .iter()
                .filter_map(Frame::data_ref)
                .flat_map(|d| d.iter().copied())
                .take(PEEK_BYTES)
                .collect();
            if starts_like_playlist(&start) {
                return Err(Refusal::PlaylistBody);
            }
            // A short range from byte 0 (`bytes=0-3`) shows too little of the object.
            if start.len() < PEEK_BYTES && parts.status == StatusCode::PARTIAL_CONTENT {
                match object_start().await {
                    Some(s) if starts_like_playlist(&s) => return Err(Refusal::PlaylistBody),
                    Some(_) => {}
                    None => return Err(Refusal::UnknownStart),
                }
            }
            Ok(Prefixed { held, rest }.boxed_unsync())
        }
        Some(_) => match object_start().await {
            Some(start) if starts_like_playlist(&start) => Err(Refusal::PlaylistBody),
            Some(_) => Ok(body),
            None => Err(Refusal::UnknownStart),
        },
    }
}

/// Reads frames of `body` until `want` data bytes were seen or it ends; returns them
/// and the body (`None` once it ended). A body error is held as a frame-less end: the
/// rest then reports it when polled.
async fn peek(mut body: OriginBody, want: usize) -> (VecDeque<Frame<Bytes>>, Option<OriginBody>) {
    let mut held = VecDeque::new();
    let mut seen = 0usize;
    while seen < want {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    seen += d.len();
                }
                held.push_back(frame);
            }
            // Keep the error for the viewer's stream: replay it after the held frames.
            Some(Err(e)) => {
                let failed = http_body_util::StreamBody::new(futures_util::stream::iter([Err(e)]));
                return (held, Some(failed.boxed_unsync()));
            }
            None => return (held, None),
        }
    }
    (held, Some(body))
}

/// A body whose first frames were read ahead: they are replayed, then the rest.
pub struct Prefixed {
    held: VecDeque<Frame<Bytes>>,
    rest: Option<OriginBody>,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(f) = this.held.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        match this.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && self.rest.as_ref().map_or(true, |r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self
            .held
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.len() as u64)
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map(|r| r.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0));
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(held));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

/// The first [`PEEK_BYTES`] bytes of the object at `path` (origin spelling), from one
/// small `Range: bytes=0-15` origin request; `None` when the origin does not answer
/// `200`/`206` with a body.
pub async fn object_start(
    cache: &Arc<SegmentCache>,
    origin: &Arc<GatedOrigin>,
    path: &str,
    client_ip: IpAddr,
) -> Option<Bytes> {
    let mut headers = HeaderMap::new();
    headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-15"));
    let req = OriginRequest {
        method: Method::GET,
        path: path.to_string(),
        headers,
        client_ip,
        class: FetchClass::Other,
    };
    // Through the segment cache: a cached object answers its first bytes itself.
    let resp = crate::cache::fetch(cache, origin, req).await.ok()?;
    if !matches!(resp.status(), StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
        return None;
    }
    let (held, _rest) = peek(resp.into_body(), PEEK_BYTES).await;
    let mut out = BytesMut::new();
    for d in held.iter().filter_map(Frame::data_ref) {
        out.extend_from_slice(d);
    }
    out.truncate(PEEK_BYTES);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(status: u16, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// A body delivered in the given chunks.
    fn chunked(chunks: &[&[u8]]) -> OriginBody {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    async fn run(p: &Parts, chunks: &[&[u8]], passed: bool) -> Result<Vec<u8>, Refusal> {
        let body = guard(p, chunked(chunks), passed, false, || async {
            Some(Bytes::from_static(b"#EXTM3U\n"))
        })
        .await?;
        Ok(body.collect().await.unwrap().to_bytes().to_vec())
    }

    #[tokio::test]
    async fn playlist_bodies_and_types_need_the_playlist_checks() {
        let ok = parts(200, &[("content-type", "video/mp2t")]);
        let body: &[&[u8]] = &[b"#EX", b"TM", b"3U\n#EXTINF:4,\nseg.ts\n"];
        assert_eq!(run(&ok, body, false).await, Err(Refusal::PlaylistBody));
        assert_eq!(
            run(&ok, &[b"\xEF\xBB\xBF#EXTM3U\n"], false).await,
            Err(Refusal::PlaylistBody)
        );
        assert_eq!(
            run(&ok, body, true).await.unwrap(),
            b"#EXTM3U\n#EXTINF:4,\nseg.ts\n"
        );
        for ct in [
            "application/vnd.apple.mpegurl",
            "Application/X-MPEGURL; charset=utf-8",
            "audio/mpegurl",
            "AUDIO/X-MPEGURL",
        ] {
            let p = parts(200, &[("content-type", ct)]);
            assert_eq!(
                run(&p, &[b"\x47"], false).await,
                Err(Refusal::PlaylistType),
                "{ct}"
            );
        }
        // A segment passes with every byte, whatever its chunking.
        let seg: &[&[u8]] = &[b"\x47\x40", b"", b"\x11\x10rest of the segment"];
        assert_eq!(
            run(&ok, seg, false).await.unwrap(),
            b"\x47\x40\x11\x10rest of the segment"
        );
        assert_eq!(run(&ok, &[], false).await.unwrap(), b"");
        assert_eq!(run(&ok, &[b"#EXT"], false).await.unwrap(), b"#EXT");
    }

    #[tokio::test]
    async fn ranges_look_at_the_object_start() {
        // From byte 0: the body itself is looked at.
        let p = parts(206, &[("content-range", "bytes 0-3/100")]);
        assert_eq!(
            run(&p, &[b"#EXTM3U"], false).await,
            Err(Refusal::PlaylistBody)
        );
        // Later: the object's start is asked for (here: a playlist).
        let p = parts(206, &[("content-range", "bytes 10-19/100")]);
        assert_eq!(
            run(&p, &[b"INF:4,\nseg"], false).await,
            Err(Refusal::PlaylistBody)
        );
        let seg = guard(&p, chunked(&[b"abc"]), false, false, || async {
            Some(Bytes::from_static(b"\x47\x40\x11"))
        })
        .await
        .unwrap();
        assert_eq!(seg.collect().await.unwrap().to_bytes().as_ref(), b"abc");
        let unknown = guard(&p, chunked(&[b"abc"]), false, false, || async { None }).await;
        assert_eq!(unknown.err(), Some(Refusal::UnknownStart));
        // No body (304, HEAD): nothing to look at but the type.
        let p = parts(304, &[]);
        assert!(run(&p, &[], false).await.is_ok());
        let p = parts(200, &[("content-type", "video/mp2t")]);
        assert!(
            guard(&p, chunked(&[b"#EXTM3U"]), false, true, || async { None })
                .await
                .is_ok()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any body, any chunking: refused exactly when it starts like a playlist, and
        /// otherwise delivered byte for byte.
        #[test]
        fn peek_is_lossless(body in proptest::collection::vec(any::<u8>(), 0..64), magic in any::<bool>(), cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut body = body;
            if magic {
                let mut m = MAGIC.to_vec();
                m.extend_from_slice(&body);
                body = m;
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([body.len()]) {
                chunks.push(&body[at..c]);
                at = c;
            }
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let p = parts(200, &[]);
            let got = rt.block_on(run(&p, &chunks, false));
            if starts_like_playlist(&body) {
                prop_assert_eq!(got, Err(Refusal::PlaylistBody));
            } else {
                prop_assert_eq!(got, Ok(body.clone()));
            }
        }
    }
}
