//! The admin surface (SPEC §1): reachable on `server.admin_listen` without a token, or
//! on the main listener only with `Authorization: Bearer <admin_token>` — and not at
//! all (404) there when `admin_token` is empty. Each route lives in its own module.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::pipeline::{App, ConnInfo};
use crate::response::{self, Body};
use crate::server::Surface;

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
pub fn refusal(app: &App, conn: &ConnInfo, req: &Request<Incoming>) -> Option<Response<Body>> {
    if conn.surface == Surface::Admin {
        return None;
    }
    let token = app.config.auth.admin_token.as_bytes();
    if token.is_empty() {
        return Some(response::text(StatusCode::NOT_FOUND, "Not Found"));
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let v = v.trim();
            v.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .map(|_| v[7..].trim())
        });
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
pub async fn route(app: &App, req: Request<Incoming>) -> Response<Body> {
    if views::is_view_path(req.uri().path()) {
        return views::route(app, &req).await;
    }
    tracing::debug!(
        path = req.uri().path(),
        store = app.store.kind(),
        "admin route not available"
    );
    response::text(StatusCode::NOT_FOUND, "Not Found")
}
