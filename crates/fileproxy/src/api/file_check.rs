//! `POST /api/file/check {path}` → `{path, exists, error}` and
//! `POST /api/file/check/batch {paths: [1..100]}` → `{results, total, exists_count,
//! not_found_count, error_count}` (SPEC §9, bearer whitelist key): does the origin
//! have the file? One `HEAD` through [`crate::origin::Origin::fetch`] per path (HTTP
//! origins get a real `HEAD`; file origins answer it from the file's metadata), at most
//! [`BATCH_CONCURRENCY`] at once. `error` is `null` or a short reason; a plain `404`
//! or `410` is `exists: false` with no error.

use futures_util::StreamExt;
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::access::token::encode_path;
use crate::access::whitelist::admission_path;
use crate::app::{App, ConnInfo};
use crate::origin::{FetchClass, OriginError, OriginRequest};
use crate::request::{read_small_body, BodyError};
use crate::response::{self, Body};

/// Most paths in one batch.
pub const MAX_BATCH: usize = 100;

/// Origin checks of one batch running at once.
pub const BATCH_CONCURRENCY: usize = 8;

/// The answer for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    /// Whether the origin has it.
    pub exists: bool,
    /// Why the check failed, when it did.
    pub error: Option<String>,
}

impl FileStatus {
    fn json(&self, path: &str) -> Value {
        json!({"path": path, "exists": self.exists, "error": self.error})
    }
}

/// The origin path of a checked path (`None` when it cannot be asked for): a full
/// URL, a query or percent-encoding are accepted; dot segments are refused.
pub fn origin_path(path: &str) -> Option<String> {
    let p = admission_path(path);
    let p = if p.starts_with('/') {
        p
    } else {
        format!("/{p}")
    };
    if p == "/" || p.contains('\0') || p.contains('\\') {
        return None;
    }
    if p.split('/').any(|seg| seg == ".." || seg == ".") {
        return None;
    }
    Some(encode_path(&p))
}

/// Asks the origin for one path.
pub async fn check_path(app: &App, conn: &ConnInfo, path: &str) -> FileStatus {
    let Some(origin_path) = origin_path(path) else {
        return FileStatus {
            exists: false,
            error: Some("invalid path".into()),
        };
    };
    let req = OriginRequest {
        method: Method::HEAD,
        path: origin_path,
        headers: HeaderMap::new(),
        client_ip: conn.peer.ip(),
        class: FetchClass::Other,
    };
    match app.origin.fetch(req).await {
        Ok(resp) => {
            let s = resp.status();
            drop(resp);
            if s.is_success() {
                FileStatus {
                    exists: true,
                    error: None,
                }
            } else if s == StatusCode::NOT_FOUND || s == StatusCode::GONE {
                FileStatus {
                    exists: false,
                    error: None,
                }
            } else {
                FileStatus {
                    exists: false,
                    error: Some(format!("origin status {}", s.as_u16())),
                }
            }
        }
        Err(e) => FileStatus {
            exists: false,
            error: Some(
                match e {
                    OriginError::Timeout(_) => "origin timed out",
                    OriginError::Unreachable(_) => "origin unreachable",
                    OriginError::BadPath(_) => "invalid path",
                    OriginError::Busy => "origin busy",
                }
                .into(),
            ),
        },
    }
}

/// Why a file check was refused; each maps to a status and `{"error": …}` (answered
/// by the rescue module).
#[derive(Debug, thiserror::Error)]
pub enum FileCheckError {
    /// Wrong or missing bearer key (403).
    #[error("invalid or missing API key")]
    Unauthorized,
    /// The body could not be read (413, 400 or 408).
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The body is not a JSON object (400).
    #[error("invalid JSON body")]
    BadJson,
    /// A required field is missing or empty (400).
    #[error("missing required field: {0}")]
    MissingField(&'static str),
    /// `paths` is empty or longer than [`MAX_BATCH`] (400).
    #[error("paths must hold 1 to {MAX_BATCH} entries")]
    BatchSize,
    /// An entry of `paths` is not a string (400).
    #[error("paths must be strings")]
    NotStrings,
}

impl FileCheckError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            FileCheckError::Unauthorized => StatusCode::FORBIDDEN,
            FileCheckError::Body(e) => e.status(),
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks the bearer key and reads the JSON body.
async fn authorized_json(app: &App, req: Request<Incoming>) -> Result<Value, FileCheckError> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if !app.policy.whitelist_key_ok(auth.as_deref()) {
        return Err(FileCheckError::Unauthorized);
    }
    let body = read_small_body(app, req).await?;
    let v: Value = serde_json::from_slice(&body).map_err(|_| FileCheckError::BadJson)?;
    if !v.is_object() {
        return Err(FileCheckError::BadJson);
    }
    Ok(v)
}

/// `POST /api/file/check`.
pub async fn single(
    app: &App,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, FileCheckError> {
    let v = authorized_json(app, req).await?;
    let path = v
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or(FileCheckError::MissingField("path"))?;
    let st = check_path(app, conn, path).await;
    Ok(response::json(StatusCode::OK, &st.json(path)))
}

/// `POST /api/file/check/batch`.
pub async fn batch(
    app: &App,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, FileCheckError> {
    let v = authorized_json(app, req).await?;
    let items = v
        .get("paths")
        .and_then(Value::as_array)
        .ok_or(FileCheckError::MissingField("paths"))?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(FileCheckError::BatchSize);
    }
    let paths = items
        .iter()
        .map(|p| p.as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .ok_or(FileCheckError::NotStrings)?;
    let results: Vec<(String, FileStatus)> = futures_util::stream::iter(paths)
        .map(|p| async move {
            let st = if p.is_empty() {
                FileStatus {
                    exists: false,
                    error: Some("invalid path".into()),
                }
            } else {
                check_path(app, conn, &p).await
            };
            (p, st)
        })
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await;
    let exists = results.iter().filter(|(_, s)| s.exists).count();
    let errors = results.iter().filter(|(_, s)| s.error.is_some()).count();
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "results": results.iter().map(|(p, s)| s.json(p)).collect::<Vec<_>>(),
            "total": results.len(),
            "exists_count": exists,
            "not_found_count": results.len() - exists - errors,
            "error_count": errors,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_paths() {
        assert_eq!(origin_path("/a/b c.ts").as_deref(), Some("/a/b%20c.ts"));
        assert_eq!(origin_path("a/b.ts").as_deref(), Some("/a/b.ts"));
        assert_eq!(
            origin_path("https://h.example/a/%E8%A7%86.ts?x=1").as_deref(),
            Some("/a/%E8%A7%86.ts")
        );
        for bad in ["/", "", "/a/../b", "/a/./b", "a\\b", "/%2e%2e/x"] {
            assert_eq!(origin_path(bad), None, "{bad}");
        }
    }
}
