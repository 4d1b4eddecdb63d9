//! `GET /probe/backend?path=/x/y.ts`: fetches `path` from the origin without any
//! viewer check and says what came back:
//! `{status, backend_status, reason, content_type, content_length, backend_url, elapsed_ms}`
//! where `status` is `"ok"` (origin answered below 400) or `"error"`. The body is not
//! read. `400` when `path` is empty or contains `..` (or control characters).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::access::classify::{classify, FileClass};
use crate::access::token::encode_path;
use crate::app::App;
use crate::origin::{FetchClass, OriginRequest};
use crate::response::{self, Body};

use super::AdminError;

/// Checks the `path` parameter; `Err` carries the reason for the `400`.
pub fn validate(path: Option<&str>) -> Result<String, &'static str> {
    let path = path.map(str::trim).unwrap_or("");
    if path.is_empty() {
        return Err("path: required, e.g. /probe/backend?path=/vod/abc/seg1.ts");
    }
    if path.contains("..") {
        return Err("path: must not contain \"..\"");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err("path: control characters and backslashes are not allowed");
    }
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
}

/// Answers `/probe/backend`.
pub async fn handle<B>(app: &App, req: &Request<B>) -> Result<Response<Body>, AdminError> {
    let path = validate(crate::request::param(req, "path").as_deref())
        .map_err(|why| AdminError::BadRequest(why.into()))?;
    // Encoded as the file-check API does, so both ask the origin for the same URL.
    let encoded = encode_path(&path);
    let backend_url = app.origin.describe_url(&encoded);
    let class = if classify(&path) == FileClass::Playlist {
        FetchClass::Playlist
    } else {
        FetchClass::Other
    };
    let started = Instant::now();
    let fetched = app
        .origin
        .fetch(OriginRequest {
            method: Method::GET,
            path: encoded,
            headers: HeaderMap::new(),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            class,
        })
        .await;
    let elapsed_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let body = match fetched {
        Ok(resp) => {
            let status = resp.status();
            let text = |name: header::HeaderName| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            json!({
                "status": if status.as_u16() < 400 { "ok" } else { "error" },
                "backend_status": status.as_u16(),
                "reason": status.canonical_reason().unwrap_or(""),
                "content_type": text(header::CONTENT_TYPE),
                "content_length": text(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()),
                "backend_url": backend_url,
                "elapsed_ms": elapsed_ms,
            })
        }
        Err(e) => json!({
            "status": "error",
            "backend_status": null,
            "reason": e.to_string(),
            "content_type": null,
            "content_length": null,
            "backend_url": backend_url,
            "elapsed_ms": elapsed_ms,
        }),
    };
    Ok(response::json(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate(None).is_err());
        assert!(validate(Some("  ")).is_err());
        assert!(validate(Some("/a/../b.ts")).is_err());
        assert!(validate(Some("/a/..")).is_err());
        assert!(validate(Some("/a/\u{0}.ts")).is_err());
        assert_eq!(validate(Some("a/b.ts")).unwrap(), "/a/b.ts");
        assert_eq!(validate(Some("/a/b c.ts")).unwrap(), "/a/b c.ts");
    }
}
