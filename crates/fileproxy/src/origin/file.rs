//! A local folder as origin (`file:///srv/media`), SPEC §9 "File origin details".
//!
//! * **Path mapping.** The request path must be canonical
//!   ([`crate::access::canonical_path`]): a `..` or `.` component (also when written
//!   `%2e%2e`), an empty segment (`//`, trailing `/`), `;`, an encoded `/`, a
//!   backslash, a NUL byte or a path that is not UTF-8 once decoded is refused with
//!   [`OriginError::BadPath`] (→ `400`), never normalised: such a path is an attack or
//!   a broken client, never a file. A path that is
//!   well-formed but does not name a regular file inside the root — missing, a
//!   directory, or a symlink resolving outside the root — gets a real `404` response,
//!   so nothing tells a viewer what lies outside the folder.
//! * **Responses.** `200` / `206` / `304` / `416` with `Accept-Ranges: bytes`, a strong
//!   `ETag` (size + modification time), `Last-Modified`, a media type and cache headers
//!   by file type. Conditionals follow RFC 9110 §13.2.2: `If-None-Match` wins over
//!   `If-Modified-Since`; `If-Range` (entity tag or date) falls back to a full `200`
//!   when it does not match. Only single ranges (`bytes=a-b`, `a-`, `-n`) are served;
//!   anything else in `Range` is answered `416` with `Content-Range: bytes */<size>`.
//! * **Body.** Streamed in `origin.chunk_bytes` reads from the open file; only the
//!   requested range is read, never the whole file into memory.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::conditional::{Answer, Validators};
use super::{InFlightGuard, OriginBody, OriginError, OriginRequest, PoolCounters, PoolState};
use crate::access::canonical_path::CanonicalPath;
use crate::config::OriginConfig;

/// A local folder serving files with ranges, validators and cache headers.
#[derive(Debug)]
pub struct FileOrigin {
    /// Canonical absolute root; every served file lies under it.
    root: PathBuf,
    /// Bytes per read of a body chunk.
    chunk_bytes: usize,
    /// `in_flight` figures (no connections for files).
    counters: Arc<PoolCounters>,
}

impl FileOrigin {
    /// Opens the folder `root` (the part of `file://…` after the scheme), which must
    /// exist and be a directory; it is canonicalized once here.
    pub fn new(root: &str, cfg: &OriginConfig) -> anyhow::Result<Self> {
        let canonical = std::fs::canonicalize(root)
            .map_err(|e| anyhow::anyhow!("origin folder {root:?}: {e}"))?;
        if !canonical.is_dir() {
            anyhow::bail!("origin folder {root:?} is not a directory");
        }
        Ok(FileOrigin {
            root: canonical,
            chunk_bytes: cfg.chunk_bytes.max(1),
            counters: Arc::default(),
        })
    }

    /// The canonical root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pool figures: `kind = "file"`, `in_flight` = bodies being streamed.
    pub fn pool_state(&self) -> PoolState {
        self.counters.snapshot("file")
    }

    /// `file://<root><path>` for `/probe/backend`.
    pub fn url_for(&self, path: &str) -> String {
        let sep = if path.starts_with('/') { "" } else { "/" };
        format!("file://{}{sep}{path}", self.root.display())
    }

    /// Serves `req.path` from the folder (see the module docs for the rules).
    pub async fn fetch(&self, req: OriginRequest) -> Result<Response<OriginBody>, OriginError> {
        let guard = InFlightGuard::start(&self.counters);
        let head = match req.method {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                return Ok(empty_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &[(header::ALLOW, HeaderValue::from_static("GET, HEAD"))],
                ))
            }
        };
        let relative = sanitize(&req.path)?;
        let Some(canonical) = self.resolve(&relative).await else {
            return Ok(not_found());
        };
        let mut file = match open_no_follow(&canonical).await {
            Ok(f) => f,
            Err(e) => return open_error(&canonical, e),
        };
        let meta = match file.metadata().await {
            Ok(m) => m,
            Err(e) => return open_error(&canonical, e),
        };
        if !meta.is_file() {
            return Ok(not_found());
        }
        let size = meta.len();
        let validators = Validators::for_file(size, meta.modified().ok());
        let kind = FileKind::of(&relative);

        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        validators.write(&mut headers);
        kind.write_cache_headers(&mut headers);

        let answer = Answer::decide(&validators, &req.headers, size, &mut headers);
        let (start, len) = match answer {
            Answer::NotModified | Answer::Unsatisfiable => {
                return Ok(with_headers(answer.status(), headers, empty_body()));
            }
            Answer::Full => (0, size),
            Answer::Partial { start, len } => (start, len),
        };
        let status = answer.status();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(kind.content_type),
        );
        if head || len == 0 {
            return Ok(with_headers(status, headers, empty_body()));
        }
        if start > 0 {
            if let Err(e) = file.seek(io::SeekFrom::Start(start)).await {
                return Err(OriginError::Unreachable(format!("seek: {e}")));
            }
        }
        let body = FileBody {
            reader: Some(file.take(len)),
            remaining: len,
            chunk_bytes: self.chunk_bytes,
            buf: BytesMut::new(),
            guard: Some(guard),
        };
        Ok(with_headers(status, headers, body.boxed_unsync()))
    }

    /// Canonicalizes `root/relative`; `None` when it does not exist or resolves
    /// (through a symlink) outside the root.
    async fn resolve(&self, relative: &Path) -> Option<PathBuf> {
        let joined = self.root.join(relative);
        let canonical = tokio::fs::canonicalize(&joined).await.ok()?;
        if canonical.starts_with(&self.root) {
            Some(canonical)
        } else {
            tracing::debug!(path = %relative.display(), "file origin: path resolves outside the root");
            None
        }
    }
}

/// Opens `path` for reading, refusing a symlink in its last component (the path is
/// canonical, so one appearing here was swapped in after the check).
async fn open_no_follow(path: &Path) -> io::Result<tokio::fs::File> {
    let mut opts = tokio::fs::OpenOptions::new();
    opts.read(true);
    // O_NONBLOCK: opening a FIFO must not hang (it is then refused as not a file);
    // it changes nothing for regular files.
    #[cfg(unix)]
    opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    opts.open(path).await
}

/// Maps a failure to open or stat an existing path: not there / not a plain file →
/// 404, not readable → 403, anything else → the origin is broken (502).
fn open_error(path: &Path, e: io::Error) -> Result<Response<OriginBody>, OriginError> {
    match e.kind() {
        io::ErrorKind::NotFound => Ok(not_found()),
        io::ErrorKind::PermissionDenied => Ok(empty_response(StatusCode::FORBIDDEN, &[])),
        _ if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) => {
            Ok(not_found())
        }
        _ => Err(OriginError::Unreachable(format!(
            "open {}: {e}",
            path.display()
        ))),
    }
}

/// Turns the request path into a relative path of plain components. The path must be
/// canonical ([`CanonicalPath`], SPEC §10): an empty segment, `;`, an encoded `/`, a
/// dot segment, NUL, backslash or invalid UTF-8 is refused, never dropped or
/// normalised, so the file served is the file the policy classified.
pub(crate) fn sanitize(raw: &str) -> Result<PathBuf, OriginError> {
    let canonical = CanonicalPath::parse(raw).map_err(|e| OriginError::BadPath(e.to_string()))?;
    Ok(canonical.segments().collect())
}

/// Media type and cache policy of a file, from its suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKind {
    /// `Content-Type` value.
    content_type: &'static str,
    /// Cache class.
    cache: CacheClass,
}

/// Cache-Control classes of SPEC §9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheClass {
    /// `.m3u8`: never cached.
    Playlist,
    /// `.ts`: 5 minutes.
    Segment,
    /// Images, styles, scripts, fonts: 1 hour.
    Static,
    /// Everything else: 10 minutes.
    Other,
}

impl FileKind {
    /// The kind of the file at `path` (suffix compared case-insensitively).
    fn of(path: &Path) -> FileKind {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let (content_type, cache) = match ext.as_str() {
            "m3u8" => ("application/vnd.apple.mpegurl", CacheClass::Playlist),
            "ts" => ("video/mp2t", CacheClass::Segment),
            "key" => ("application/octet-stream", CacheClass::Other),
            "jpg" | "jpeg" => ("image/jpeg", CacheClass::Static),
            "png" => ("image/png", CacheClass::Static),
            "gif" => ("image/gif", CacheClass::Static),
            "webp" => ("image/webp", CacheClass::Static),
            "svg" => ("image/svg+xml", CacheClass::Static),
            "ico" => ("image/x-icon", CacheClass::Static),
            "css" => ("text/css; charset=utf-8", CacheClass::Static),
            "js" => ("text/javascript; charset=utf-8", CacheClass::Static),
            "woff" => ("font/woff", CacheClass::Static),
            "woff2" => ("font/woff2", CacheClass::Static),
            "ttf" => ("font/ttf", CacheClass::Static),
            "otf" => ("font/otf", CacheClass::Other),
            "eot" => ("application/vnd.ms-fontobject", CacheClass::Other),
            "txt" => ("text/plain; charset=utf-8", CacheClass::Other),
            "html" | "htm" => ("text/html; charset=utf-8", CacheClass::Other),
            "json" => ("application/json", CacheClass::Other),
            "vtt" => ("text/vtt; charset=utf-8", CacheClass::Other),
            "mp4" | "m4v" => ("video/mp4", CacheClass::Other),
            "m4s" => ("video/iso.segment", CacheClass::Other),
            "aac" => ("audio/aac", CacheClass::Other),
            "mp3" => ("audio/mpeg", CacheClass::Other),
            _ => ("application/octet-stream", CacheClass::Other),
        };
        FileKind {
            content_type,
            cache,
        }
    }

    /// Adds `Cache-Control` (and for playlists `Pragma` and `Expires`).
    fn write_cache_headers(&self, headers: &mut HeaderMap) {
        let cc = match self.cache {
            CacheClass::Playlist => {
                headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
                headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
                "no-cache, no-store, must-revalidate"
            }
            CacheClass::Segment => "public, max-age=300",
            CacheClass::Static => "public, max-age=3600",
            CacheClass::Other => "public, max-age=600",
        };
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
}

/// An empty body.
fn empty_body() -> OriginBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with `status`, `headers` and `body`.
fn with_headers(status: StatusCode, headers: HeaderMap, body: OriginBody) -> Response<OriginBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// An empty response with `status`, `Content-Length: 0` and `extra` headers.
fn empty_response(
    status: StatusCode,
    extra: &[(header::HeaderName, HeaderValue)],
) -> Response<OriginBody> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    for (k, v) in extra {
        headers.insert(k.clone(), v.clone());
    }
    with_headers(status, headers, empty_body())
}

/// The `404` for anything that is not a servable file.
fn not_found() -> Response<OriginBody> {
    empty_response(StatusCode::NOT_FOUND, &[])
}

/// Streams a byte range from an open, positioned file in chunks of `chunk_bytes`
/// (a chunk is filled by as many reads as it takes, so a large `chunk_bytes` is not
/// wasted on small reads).
struct FileBody {
    /// The file limited to the range; `None` once finished.
    reader: Option<tokio::io::Take<tokio::fs::File>>,
    /// Bytes not yet read from the file.
    remaining: u64,
    /// Bytes per chunk.
    chunk_bytes: usize,
    /// The chunk being filled (read, not yet sent).
    buf: BytesMut,
    /// Released when the body ends or is dropped.
    guard: Option<InFlightGuard>,
}

impl FileBody {
    /// Closes the file and releases the in-flight count.
    fn finish(&mut self) {
        self.reader = None;
        self.guard = None;
        self.remaining = 0;
        self.buf = BytesMut::new();
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(reader) = this.reader.as_mut() else {
                return Poll::Ready(None);
            };
            if this.remaining == 0 {
                let chunk = std::mem::take(&mut this.buf).freeze();
                this.finish();
                return Poll::Ready((!chunk.is_empty()).then(|| Ok(Frame::data(chunk))));
            }
            if this.buf.capacity() == 0 {
                let want = usize::try_from(this.remaining)
                    .unwrap_or(usize::MAX)
                    .min(this.chunk_bytes);
                this.buf = BytesMut::with_capacity(want);
            }
            match tokio_util::io::poll_read_buf(Pin::new(reader), cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.finish();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Ok(0)) => {
                    this.finish();
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being sent",
                    ))));
                }
                Poll::Ready(Ok(n)) => {
                    this.remaining = this.remaining.saturating_sub(n as u64);
                    if this.buf.len() == this.buf.capacity() && this.remaining > 0 {
                        let chunk = std::mem::take(&mut this.buf).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reader.is_none() || (self.remaining == 0 && self.buf.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining + self.buf.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_refuses_escapes() {
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/a/..%2f..%2fetc",
            "/a\\..\\b",
            "/a%5c..%5cb",
            "/a%00b",
            "/%ff",
        ] {
            assert!(
                matches!(sanitize(bad), Err(OriginError::BadPath(_))),
                "{bad}"
            );
        }
        assert_eq!(
            sanitize("/media/demo/a%20b.ts").unwrap(),
            PathBuf::from("media/demo/a b.ts")
        );
        // Nothing is normalised silently (SPEC §10): empty and `.` segments are refused.
        for ambiguous in [
            "//x//y",
            "/media/demo/./a.ts",
            "/v/abc/index.m3u8/",
            "/v/abc/enc.key//",
            "/v/abc/index.m3u8;x",
            "/v%2Fabc/enc.key",
        ] {
            assert!(
                matches!(sanitize(ambiguous), Err(OriginError::BadPath(_))),
                "{ambiguous}"
            );
        }
        assert_eq!(sanitize("/").unwrap(), PathBuf::new());
        // Double encoding is a literal name, not a traversal.
        assert_eq!(sanitize("/%252e%252e").unwrap(), PathBuf::from("%2e%2e"));
    }

    #[test]
    fn kinds() {
        let k = |p: &str| FileKind::of(Path::new(p));
        assert_eq!(
            k("a/index.M3U8").content_type,
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(k("a/index.m3u8").cache, CacheClass::Playlist);
        assert_eq!(k("a/s.ts").content_type, "video/mp2t");
        assert_eq!(k("a/s.ts").cache, CacheClass::Segment);
        assert_eq!(k("a/enc.key").content_type, "application/octet-stream");
        assert_eq!(k("a/enc.key").cache, CacheClass::Other);
        for s in [
            "jpg", "jpeg", "png", "gif", "css", "js", "woff", "woff2", "ttf", "svg", "webp", "ico",
        ] {
            assert_eq!(k(&format!("x.{s}")).cache, CacheClass::Static, "{s}");
        }
        assert_eq!(k("x.txt").cache, CacheClass::Other);
        assert_eq!(k("noext").content_type, "application/octet-stream");
    }
}
