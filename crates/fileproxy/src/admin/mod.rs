//! The admin surface (SPEC §1): reachable on `server.admin_listen` without a token, or
//! on the main listener only with `Authorization: Bearer <admin_token>` — and not at
//! all (404) there when `admin_token` is empty. Each route lives in its own module.
//!
//! Nothing here builds an error answer: a refusal or failure is an [`AdminError`],
//! answered and logged by the rescue module.
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
use http::{Method, Request, Response};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::access::query;
use crate::app::Surface;
use crate::app::{App, ConnInfo};
use crate::response::Body;
use crate::store::StoreError;

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

/// Why an admin request got no answer from its route; the rescue module (the one
/// place where errors become responses) gives each its status, body and log line.
#[derive(Debug)]
pub enum AdminError {
    /// No `auth.admin_token`: admin routes do not exist on the main listener (`404`).
    Disabled,
    /// No bearer token presented (`401` with `WWW-Authenticate`).
    TokenMissing,
    /// A wrong token (`403`).
    TokenWrong {
        /// The admin route asked for.
        path: String,
    },
    /// Admin routes take `GET` and `HEAD` only (`405`).
    MethodNotAllowed,
    /// No such admin route (`404`).
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// Bad input (`400 {"error": why}`).
    BadRequest(String),
    /// A `/debug/…` question could not read the store (`503 {"error": "store: …"}`).
    DebugStore(String),
    /// No such `/debug/…` route (`404 {"error": …}` listing the routes).
    UnknownDebugRoute,
    /// An operator view could not read the store (`503 {"error": "store unavailable"}`).
    ViewStore {
        /// The view.
        view: &'static str,
        /// What the store said (logged, never answered).
        error: StoreError,
    },
}

impl AdminError {
    /// Whether the answer carries `Cache-Control: no-store`, as every answer of an
    /// admin route does (the gate's refusals and the `405` come before any route).
    pub fn from_a_route(&self) -> bool {
        !matches!(
            self,
            AdminError::Disabled
                | AdminError::TokenMissing
                | AdminError::TokenWrong { .. }
                | AdminError::MethodNotAllowed
        )
    }
}

/// Checks the caller may use admin routes.
pub fn refusal<B>(app: &App, conn: &ConnInfo, req: &Request<B>) -> Result<(), AdminError> {
    if conn.surface == Surface::Admin {
        return Ok(());
    }
    let token = app.config.auth.admin_token.expose().as_bytes();
    if token.is_empty() {
        return Err(AdminError::Disabled);
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(query::bearer_credential);
    match presented {
        None => Err(AdminError::TokenMissing),
        Some(p) if bool::from(p.as_bytes().ct_eq(token)) => Ok(()),
        Some(_) => Err(AdminError::TokenWrong {
            path: req.uri().path().to_string(),
        }),
    }
}

/// Answers an admin route (the caller has already passed [`refusal`]); every answer
/// carries `Cache-Control: no-store`.
pub async fn route(
    app: &App,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, AdminError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(AdminError::MethodNotAllowed);
    }
    let mut resp = if views::is_view_path(req.uri().path()) {
        views::route(app, &req).await?
    } else {
        match req.uri().path() {
            "/metrics" => scrape::handle(app, &req),
            "/stats" => stats::handle(app),
            "/traffic" => traffic_view::handle(app, &req)?,
            "/probe/backend" => probe::handle(app, &req).await?,
            "/monitor" => monitor::handle(),
            p if p.starts_with("/debug/") => debug::handle(app, conn, &req).await?,
            p => {
                return Err(AdminError::NotFound {
                    path: p.to_string(),
                })
            }
        }
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
