//! Serving a key-protected playlist (SPEC §9): the origin's body is read up to
//! `protect.max_playlist_bytes` (never buffered without bound), rewritten by
//! [`super::rewrite`], and answered with a fresh `Content-Length`,
//! `application/vnd.apple.mpegurl` and no-cache headers.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::response::Parts;
use http::StatusCode;
use http_body_util::BodyExt;

use super::rewrite::{rewrite_playlist, KeySigner, RewriteError};
use crate::origin::OriginBody;
use crate::response::{self, Body};

/// `Content-Type` of a rewritten playlist.
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";

/// Why a playlist could not be served rewritten.
#[derive(Debug, thiserror::Error)]
pub enum PlaylistError {
    /// The origin's body is larger than the cap (→ 502).
    #[error("playlist larger than protect.max_playlist_bytes ({cap} bytes)")]
    TooLarge {
        /// The cap.
        cap: usize,
    },
    /// The body is compressed; it cannot be rewritten (→ 502).
    #[error("playlist has Content-Encoding {0:?}; cannot rewrite it")]
    Encoded(String),
    /// The origin failed while sending the body (→ 502).
    #[error("origin failed while sending the playlist: {0}")]
    Origin(std::io::Error),
    /// The body did not arrive within the playlist timeout (→ 504).
    #[error("playlist body not received within {0:?}")]
    Timeout(Duration),
    /// The playlist could not be rewritten (→ 502).
    #[error("playlist not rewritable: {0}")]
    Rewrite(#[from] RewriteError),
}

impl PlaylistError {
    /// The status and plain-text body the viewer gets (no origin details).
    pub fn answer(&self) -> (StatusCode, &'static str) {
        match self {
            PlaylistError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout"),
            PlaylistError::TooLarge { .. } => (
                StatusCode::BAD_GATEWAY,
                "Bad Gateway: playlist too large to protect",
            ),
            _ => (StatusCode::BAD_GATEWAY, "Bad Gateway"),
        }
    }
}

/// Reads a whole body of at most `cap` bytes within `limit`; refuses larger ones as
/// soon as the declared length or the bytes read pass the cap.
pub async fn read_bounded(
    mut body: OriginBody,
    declared: Option<u64>,
    cap: usize,
    limit: Duration,
) -> Result<Bytes, PlaylistError> {
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(PlaylistError::TooLarge { cap });
    }
    let read = async move {
        let mut buf = BytesMut::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(PlaylistError::Origin)?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > cap {
                    return Err(PlaylistError::TooLarge { cap });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| PlaylistError::Timeout(limit))?
}

/// Rewrites an origin `200` playlist response in place: reads the body (bounded),
/// signs its key URIs and sets the headers of SPEC §9. For `HEAD` the body is empty
/// but `Content-Length` is the rewritten length.
pub async fn rewrite_response(
    parts: &mut Parts,
    body: OriginBody,
    signer: &KeySigner<'_>,
    cap: usize,
    limit: Duration,
    head: bool,
) -> Result<Body, PlaylistError> {
    if let Some(enc) = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().eq_ignore_ascii_case("identity"))
    {
        return Err(PlaylistError::Encoded(enc.to_string()));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let raw = read_bounded(body, declared, cap, limit).await?;
    let out = rewrite_playlist(&raw, signer)?;
    let h = &mut parts.headers;
    for name in [
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::ETAG,
        header::LAST_MODIFIED,
        header::TRANSFER_ENCODING,
    ] {
        h.remove(name);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len() as u64));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PLAYLIST_CONTENT_TYPE),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    parts.status = StatusCode::OK;
    Ok(if head {
        response::empty()
    } else {
        response::full(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    fn body(chunks: Vec<&'static [u8]>) -> OriginBody {
        let s = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(c)))),
        );
        StreamBody::new(s).boxed_unsync()
    }

    fn signer() -> KeySigner<'static> {
        KeySigner {
            secret: b"s",
            uid: "u",
            expires: "1",
            playlist_path: "/a/b/i.m3u8",
        }
    }

    #[tokio::test]
    async fn bounded_read() {
        let d = Duration::from_secs(5);
        let ok = read_bounded(body(vec![b"abc", b"def"]), None, 6, d)
            .await
            .unwrap();
        assert_eq!(&ok[..], b"abcdef");
        let e = read_bounded(body(vec![b"abc", b"defg"]), None, 6, d)
            .await
            .unwrap_err();
        assert!(matches!(e, PlaylistError::TooLarge { cap: 6 }));
        assert_eq!(e.answer().0, 502);
        // A declared length past the cap is refused before reading.
        let e = read_bounded(body(vec![]), Some(7), 6, d).await.unwrap_err();
        assert!(matches!(e, PlaylistError::TooLarge { .. }));
    }

    #[tokio::test]
    async fn headers_of_a_rewritten_playlist() {
        let (mut parts, _) = http::Response::new(()).into_parts();
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(40u64));
        parts
            .headers
            .insert(header::ETAG, HeaderValue::from_static("\"x\""));
        parts
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let src: &'static [u8] = b"#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k.key\"\nseg.ts\n";
        let b = Full::new(Bytes::from_static(src))
            .map_err(|n| match n {})
            .boxed_unsync();
        let out = rewrite_response(
            &mut parts,
            b,
            &signer(),
            1024,
            Duration::from_secs(5),
            false,
        )
        .await
        .unwrap();
        let bytes = out.collect().await.unwrap().to_bytes();
        assert!(bytes.len() > src.len());
        let h = &parts.headers;
        assert_eq!(h[header::CONTENT_LENGTH], bytes.len().to_string().as_str());
        assert_eq!(h[header::CONTENT_TYPE], PLAYLIST_CONTENT_TYPE);
        assert_eq!(
            h[header::CACHE_CONTROL],
            "no-cache, no-store, must-revalidate"
        );
        assert_eq!(h[header::PRAGMA], "no-cache");
        assert_eq!(h[header::EXPIRES], "0");
        assert!(h.get(header::ETAG).is_none());
        // Compressed bodies are refused.
        parts
            .headers
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let e = rewrite_response(
            &mut parts,
            body(vec![]),
            &signer(),
            1024,
            Duration::from_secs(5),
            true,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, PlaylistError::Encoded(_)));
    }
}
