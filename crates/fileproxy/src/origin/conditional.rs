//! HTTP conditionals and single byte ranges (RFC 9110 §13, §14), shared by the file
//! origin and the segment cache so both answer `304` / `206` / `416` the same way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

/// A representation's validators.
#[derive(Debug, Clone, Default)]
pub(crate) struct Validators {
    /// Entity tag, quoted (with its `W/` prefix when weak), if any.
    etag: Option<String>,
    /// Modification time truncated to whole seconds (HTTP date precision).
    modified: Option<SystemTime>,
}

impl Validators {
    /// Validators of a file of `size` bytes last modified at `mtime`: a strong tag
    /// `"<size hex>-<mtime ns hex>"`.
    pub(crate) fn for_file(size: u64, mtime: Option<SystemTime>) -> Self {
        let since_epoch = mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        let nanos = since_epoch.map(|d| d.as_nanos()).unwrap_or(0);
        Validators {
            etag: Some(format!("\"{size:x}-{nanos:x}\"")),
            modified: since_epoch.map(|d| UNIX_EPOCH + Duration::from_secs(d.as_secs())),
        }
    }

    /// The validators an origin sent (`ETag`, `Last-Modified`), as far as readable.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        Validators {
            etag: text(header::ETAG).map(|s| s.trim().to_string()),
            modified: text(header::LAST_MODIFIED).and_then(|s| httpdate::parse_http_date(s).ok()),
        }
    }

    /// Adds `ETag` and `Last-Modified`.
    pub(crate) fn write(&self, headers: &mut HeaderMap) {
        if let Some(v) = self
            .etag
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
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
    pub(crate) fn not_modified(&self, req: &HeaderMap) -> bool {
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
        let ours = self
            .etag
            .as_deref()
            .map(|t| t.strip_prefix("W/").unwrap_or(t));
        s.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || Some(tag.strip_prefix("W/").unwrap_or(tag)) == ours)
    }

    /// RFC 9110 §13.1.5: with no `If-Range` the range applies; with one, only when
    /// it is our strong entity tag or exactly our `Last-Modified` date.
    pub(crate) fn if_range_matches(&self, req: &HeaderMap) -> bool {
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
            return self.etag.as_deref() == Some(s);
        }
        match (httpdate::parse_http_date(s), self.modified) {
            (Ok(date), Some(modified)) => date == modified,
            _ => false,
        }
    }
}

/// How to answer a GET/HEAD for a representation of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `304 Not Modified`.
    NotModified,
    /// `200` with the whole body.
    Full,
    /// `206` with bytes `start..start + len`.
    Partial {
        /// First byte.
        start: u64,
        /// Byte count.
        len: u64,
    },
    /// `416` with `Content-Range: bytes */<size>`.
    Unsatisfiable,
}

impl Answer {
    /// Decides the answer to `req` (conditionals first, then `Range` when `If-Range`
    /// allows it) and sets `Content-Range` / `Content-Length` in `headers` to match.
    pub(crate) fn decide(
        validators: &Validators,
        req: &HeaderMap,
        size: u64,
        headers: &mut HeaderMap,
    ) -> Answer {
        if validators.not_modified(req) {
            return Answer::NotModified;
        }
        let range = match req.get(header::RANGE) {
            Some(value) if validators.if_range_matches(req) => parse_range(value, size),
            _ => RangeDecision::Full,
        };
        match range {
            RangeDecision::Full => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
                Answer::Full
            }
            RangeDecision::Partial { start, end } => {
                let content_range = format!("bytes {start}-{end}/{size}");
                if let Ok(v) = HeaderValue::from_str(&content_range) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                let len = end - start + 1;
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                Answer::Partial { start, len }
            }
            RangeDecision::Unsatisfiable => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                headers.remove(header::CONTENT_TYPE);
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
                Answer::Unsatisfiable
            }
        }
    }

    /// The status code of this answer.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Answer::NotModified => StatusCode::NOT_MODIFIED,
            Answer::Full => StatusCode::OK,
            Answer::Partial { .. } => StatusCode::PARTIAL_CONTENT,
            Answer::Unsatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
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
}
