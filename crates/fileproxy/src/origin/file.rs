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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

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
        let validators = Validators::new(size, meta.modified().ok());
        let kind = FileKind::of(&relative);

        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        validators.write(&mut headers);
        kind.write_cache_headers(&mut headers);

        if validators.not_modified(&req.headers) {
            return Ok(with_headers(
                StatusCode::NOT_MODIFIED,
                headers,
                empty_body(),
            ));
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(kind.content_type),
        );

        let range = match req.headers.get(header::RANGE) {
            Some(value) if validators.if_range_matches(&req.headers) => parse_range(value, size),
            _ => RangeDecision::Full,
        };
        let (status, start, len) = match range {
            RangeDecision::Full => (StatusCode::OK, 0, size),
            RangeDecision::Partial { start, end } => {
                let content_range = format!("bytes {start}-{end}/{size}");
                if let Ok(v) = HeaderValue::from_str(&content_range) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            RangeDecision::Unsatisfiable => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                headers.remove(header::CONTENT_TYPE);
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
                return Ok(with_headers(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    headers,
                    empty_body(),
                ));
            }
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
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

/// A file's validators.
#[derive(Debug)]
struct Validators {
    /// Strong entity tag, quoted: `"<size hex>-<mtime ns hex>"`.
    etag: String,
    /// Modification time truncated to whole seconds (HTTP date precision).
    modified: Option<SystemTime>,
}

impl Validators {
    /// Validators of a file of `size` bytes last modified at `mtime`.
    fn new(size: u64, mtime: Option<SystemTime>) -> Self {
        let since_epoch = mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        let nanos = since_epoch.map(|d| d.as_nanos()).unwrap_or(0);
        Validators {
            etag: format!("\"{size:x}-{nanos:x}\""),
            modified: since_epoch.map(|d| UNIX_EPOCH + Duration::from_secs(d.as_secs())),
        }
    }

    /// Adds `ETag` and `Last-Modified`.
    fn write(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            headers.insert(header::ETAG, v);
        }
        if let Some(t) = self.modified {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(t)) {
                headers.insert(header::LAST_MODIFIED, v);
            }
        }
    }

    /// RFC 9110 §13.2.2 steps 3–4 for GET/HEAD: `If-None-Match` (weak comparison)
    /// when present, else `If-Modified-Since`.
    fn not_modified(&self, req: &HeaderMap) -> bool {
        if req.contains_key(header::IF_NONE_MATCH) {
            return req
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .any(|v| self.none_match_hits(v));
        }
        let (Some(ims), Some(modified)) = (req.get(header::IF_MODIFIED_SINCE), self.modified)
        else {
            return false;
        };
        match ims.to_str().ok().map(httpdate::parse_http_date) {
            Some(Ok(since)) => modified <= since,
            _ => false,
        }
    }

    /// Does one `If-None-Match` field value name our tag (or `*`)?
    fn none_match_hits(&self, value: &HeaderValue) -> bool {
        let Ok(s) = value.to_str() else {
            return false;
        };
        s.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag)
    }

    /// RFC 9110 §13.1.5: with no `If-Range` the range applies; with one, only when
    /// it is our strong entity tag or exactly our `Last-Modified` date.
    fn if_range_matches(&self, req: &HeaderMap) -> bool {
        let Some(value) = req.get(header::IF_RANGE) else {
            return true;
        };
        let Ok(s) = value.to_str() else {
            return false;
        };
        let s = s.trim();
        if s.starts_with("W/") {
            return false;
        }
        if s.starts_with('"') {
            return s == self.etag;
        }
        match (httpdate::parse_http_date(s), self.modified) {
            (Ok(date), Some(modified)) => date == modified,
            _ => false,
        }
    }
}

/// What a `Range` header asks for, against a file of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeDecision {
    /// Serve the whole file.
    Full,
    /// Serve bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// `416`: not a single satisfiable byte range.
    Unsatisfiable,
}

/// Parses one of `bytes=a-b`, `bytes=a-`, `bytes=-n`; anything else (other units,
/// several ranges, bad syntax, a range beyond the end) is unsatisfiable.
fn parse_range(value: &HeaderValue, size: u64) -> RangeDecision {
    use RangeDecision::*;
    let Some((unit, spec)) = value.to_str().ok().and_then(|s| s.trim().split_once('=')) else {
        return Unsatisfiable;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Unsatisfiable;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Unsatisfiable;
    };
    let (first, last) = (first.trim(), last.trim());
    if size == 0 {
        return Unsatisfiable;
    }
    match (digits(first), digits(last)) {
        // -n: the last n bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 {
                Unsatisfiable
            } else {
                Partial {
                    start: size.saturating_sub(n),
                    end: size - 1,
                }
            }
        }
        // a-
        (Some(a), None) if last.is_empty() => {
            if a >= size {
                Unsatisfiable
            } else {
                Partial {
                    start: a,
                    end: size - 1,
                }
            }
        }
        // a-b
        (Some(a), Some(b)) => {
            if a > b || a >= size {
                Unsatisfiable
            } else {
                Partial {
                    start: a,
                    end: b.min(size - 1),
                }
            }
        }
        _ => Unsatisfiable,
    }
}

/// A non-empty run of ASCII digits as a number (saturating at `u64::MAX`).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
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

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn range_forms() {
        use RangeDecision::*;
        let r = |s: &str| parse_range(&hv(s), 100);
        assert_eq!(r("bytes=0-9"), Partial { start: 0, end: 9 });
        assert_eq!(r("bytes=10-"), Partial { start: 10, end: 99 });
        assert_eq!(r("bytes=-10"), Partial { start: 90, end: 99 });
        assert_eq!(r("bytes=-1000"), Partial { start: 0, end: 99 });
        assert_eq!(r("bytes=90-1000"), Partial { start: 90, end: 99 });
        assert_eq!(r("BYTES = 5-5"), Partial { start: 5, end: 5 });
        assert_eq!(
            r("bytes=99-99999999999999999999999"),
            Partial { start: 99, end: 99 }
        );
        for bad in [
            "bytes=100-",
            "bytes=100-200",
            "bytes=-0",
            "bytes=5-4",
            "bytes=0-1,5-6",
            "bytes=a-b",
            "bytes=-",
            "bytes=",
            "bytes 0-1",
            "items=0-1",
            "bytes=0-1-2",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(r(bad), Unsatisfiable, "{bad}");
        }
        assert_eq!(parse_range(&hv("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(&hv("bytes=-5"), 0), Unsatisfiable);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any `Range` value a client can send: no panic, and a served range lies
        /// inside the file.
        #[test]
        fn range_parser_never_panics(v in "(bytes|BYTES|items)?=?[0-9 ,-]{0,24}|\\PC{0,40}", size in proptest::prelude::any::<u64>()) {
            if let Ok(hv) = HeaderValue::from_str(&v) {
                if let RangeDecision::Partial { start, end } = parse_range(&hv, size) {
                    proptest::prop_assert!(start <= end && end < size, "{v} of {size}: {start}-{end}");
                }
            }
        }
    }

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
