//! The admin surface (SPEC §1): reachable on `server.admin_listen` without a token, or
//! on the main listener only with `Authorization: Bearer <admin_token>` — and not at
//! all (404) there when `admin_token` is empty. Each route lives in its own module.
//!
//! The token is accepted only as a bearer header (SPEC §10): never from a query
//! string, where it would end up in logs and browser history (`/monitor?token=` is
//! refused like a missing token). No admin answer ever carries a secret.

pub mod debug;
pub mod monitor;
pub mod probe;
pub mod scrape;
pub mod stats;
pub mod traffic_view;

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
    let token = app.config.auth.admin_token.expose().as_bytes();
    if token.is_empty() {
        return Some(response::text(StatusCode::NOT_FOUND, "Not Found"));
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(query::bearer_credential);
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
        return crate::request::method_not_allowed("GET, HEAD");
    }
    if views::is_view_path(req.uri().path()) {
        return views::route(app, &req).await;
    }
    let mut resp = match req.uri().path() {
        "/metrics" => scrape::handle(app, &req),
        "/stats" => stats::handle(app),
        "/traffic" => traffic_view::handle(app, &req),
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

/// A `400` JSON answer `{"error": why}`.
pub fn bad_request(why: impl Into<String>) -> Response<Body> {
    response::json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": why.into() }),
    )
}
