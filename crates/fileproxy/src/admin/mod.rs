//! The admin surface (SPEC §1): reachable on `server.admin_listen` without a token, or
//! on the main listener only with `Authorization: Bearer <admin_token>` — and not at
//! all (404) there when `admin_token` is empty. Each route lives in its own module.
//!
//! `/monitor` alone also accepts the token as `?token=` on the main listener, so a
//! browser can open the page; the page then sends it as a bearer header to `/stats`.
//! No admin answer ever carries a secret (tokens, keys, store passwords).

pub mod debug;
pub mod metrics;
pub mod monitor;
pub mod probe;
pub mod stats;
pub mod traffic;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::access::query;
use crate::app::Surface;
use crate::app::{App, ConnInfo};
use crate::response::{self, Body};

pub mod views;

/// Whether `path` names an admin route (they are never proxied to the origin).
pub fn is_admin_path(path: &str) -> bool {
    matches!(
        path,
        "/metrics"
            | "/stats"
            | "/traffic"
            | "/monitor"
            | "/probe/backend"
            | "/active-transfers"
            | "/whitelist-info"
    ) || path.starts_with("/debug/")
        || path.starts_with("/api/access-logs/")
        || path == "/api/replay-logs"
        || path == "/api/key-access-logs"
}

/// Checks the caller may use admin routes; `Some` carries the refusal to send.
pub fn refusal<B>(app: &App, conn: &ConnInfo, req: &Request<B>) -> Option<Response<Body>> {
    if conn.surface == Surface::Admin {
        return None;
    }
    let token = app.config.auth.admin_token.as_bytes();
    if token.is_empty() {
        return Some(response::text(StatusCode::NOT_FOUND, "Not Found"));
    }
    let from_query = (req.uri().path() == "/monitor")
        .then(|| query_param(req, "token"))
        .flatten();
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(query::bearer_credential)
        .or(from_query.as_deref());
    match presented {
        None => {
            let mut r = response::text(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: admin token required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fileproxy-admin\""),
            );
            Some(r)
        }
        Some(p) if bool::from(p.as_bytes().ct_eq(token)) => None,
        Some(_) => {
            tracing::info!(peer = %conn.peer, path = req.uri().path(), "admin request with a wrong token");
            Some(response::text(
                StatusCode::FORBIDDEN,
                "Forbidden: wrong admin token",
            ))
        }
    }
}

/// Answers an admin route (the caller has already passed [`refusal`]).
pub async fn route(app: &App, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = response::text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if views::is_view_path(req.uri().path()) {
        return views::route(app, &req).await;
    }
    let mut resp = match req.uri().path() {
        "/metrics" => metrics::handle(app, &req),
        "/stats" => stats::handle(app),
        "/traffic" => traffic::handle(app, &req),
        "/probe/backend" => probe::handle(app, &req).await,
        "/monitor" => monitor::handle(),
        p if p.starts_with("/debug/") => debug::handle(app, conn, &req).await,
        p => {
            tracing::debug!(path = p, "admin route not available");
            response::text(StatusCode::NOT_FOUND, "Not Found")
        }
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The first value of query parameter `name`, percent-decoded (`+` is a space);
/// `None` when absent or not valid UTF-8.
pub fn query_param<B>(req: &Request<B>, name: &str) -> Option<String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    query::query_pairs(req.uri().query()?)
        .find_map(|(k, v)| (decode(k)? == name).then(|| decode(v)).flatten())
}

/// A `400` JSON answer `{"error": why}`.
pub fn bad_request(why: impl Into<String>) -> Response<Body> {
    response::json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": why.into() }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_decode() {
        let req = Request::get("/debug/browser?ua=Mozilla%2F5.0+(X11)&x=1&empty=")
            .body(())
            .unwrap();
        assert_eq!(
            query_param(&req, "ua").as_deref(),
            Some("Mozilla/5.0 (X11)")
        );
        assert_eq!(query_param(&req, "x").as_deref(), Some("1"));
        assert_eq!(query_param(&req, "empty").as_deref(), Some(""));
        assert_eq!(query_param(&req, "nope"), None);
    }
}
