//! The request context: created once per request by [`RequestCtx::new`], it owns what
//! every phase needs or learns — connection, client IP, route, start time, and the
//! decision facts (uid, key path, session, whitelist rule, refusal, live transfer) —
//! and ends in the logging phase (`exchange::finish`). Nothing travels on
//! the side (no response extensions).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Version};

use crate::access::classify::{classify, FileClass};
use crate::access::{Allow, DenyReason, SessionOutcome, WhitelistOutcome};
use crate::admin;
use crate::app::{App, ConnInfo, Surface};
use crate::metrics::Route;
use crate::protect::transfers::TransferMeta;
use crate::request;

/// What the viewer flow learned about an allowed request.
#[derive(Debug, Clone)]
pub struct ViewerFacts {
    /// Suffix class of the decoded path.
    pub class: FileClass,
    /// The key path (SPEC §2.1; empty for skip-validation requests).
    pub key_path: String,
    /// The effective uid (traffic is added to it).
    pub uid: Option<String>,
    /// Session created, reused, or none.
    pub session: SessionOutcome,
    /// Which whitelist rule let the request through.
    pub whitelist: WhitelistOutcome,
}

impl ViewerFacts {
    /// The facts of an allowed request.
    pub fn from_allow(a: &Allow) -> ViewerFacts {
        ViewerFacts {
            class: a.class,
            key_path: a.key_path.clone(),
            uid: a.uid.clone(),
            session: a.session.clone(),
            whitelist: a.whitelist.clone(),
        }
    }

    /// The session id, when a session was found or created.
    pub fn session_id(&self) -> Option<&str> {
        match &self.session {
            SessionOutcome::Created { id } | SessionOutcome::Reused { id, .. } => Some(id),
            SessionOutcome::None => None,
        }
    }
}

/// One request on its way through the phases.
#[derive(Debug)]
pub struct RequestCtx {
    /// When the request arrived.
    pub started: Instant,
    /// The same instant in Unix seconds (access log).
    pub unix: i64,
    /// The connection it arrived on.
    pub conn: Arc<ConnInfo>,
    /// The client address (SPEC §2 step 1), resolved once.
    pub client_ip: IpAddr,
    /// The route class (metrics label); refined to the file class once allowed.
    pub route: Route,
    /// The request method.
    pub method: Method,
    /// The HTTP version.
    pub version: Version,
    /// Path and query as sent (kept only when the access log is on).
    pub target: Option<http::uri::PathAndQuery>,
    /// `Referer` (kept only when the access log is on).
    pub referer: Option<HeaderValue>,
    /// `User-Agent` as sent.
    pub user_agent: Option<HeaderValue>,
    /// `Origin` (CORS).
    pub cors_origin: Option<String>,
    /// Facts of an allowed viewer request.
    pub viewer: Option<ViewerFacts>,
    /// The access policy refused the request for this reason.
    pub refused: Option<DenyReason>,
    /// A streamed origin answer to show in `/active-transfers` while it lasts.
    pub live: Option<TransferMeta>,
    /// The path asked of the origin (for the origin-failure log line).
    pub origin_path: Option<String>,
}

/// The route class of a request path.
pub fn route_of(surface: Surface, path: &str) -> Route {
    if surface == Surface::Admin || path == "/health" || admin::is_admin_path(path) {
        Route::Admin
    } else if path == "/api" || path.starts_with("/api/") {
        Route::Api
    } else {
        Route::from_class(classify(path))
    }
}

impl RequestCtx {
    /// The context of `req`, before any phase runs.
    pub fn new<B>(app: &App, conn: Arc<ConnInfo>, req: &Request<B>) -> RequestCtx {
        let started = Instant::now();
        let h = req.headers();
        let logging = app.access_log.enabled();
        RequestCtx {
            started,
            unix: i64::try_from(crate::clock::unix_secs()).unwrap_or(i64::MAX),
            client_ip: crate::access::client_ip::client_ip_from_headers(
                conn.peer.ip(),
                h,
                &app.trusted,
            ),
            route: route_of(conn.surface, req.uri().path()),
            conn,
            method: req.method().clone(),
            version: req.version(),
            target: logging
                .then(|| req.uri().path_and_query().cloned())
                .flatten(),
            referer: logging.then(|| h.get(header::REFERER).cloned()).flatten(),
            user_agent: h.get(header::USER_AGENT).cloned(),
            cors_origin: request::header_str(h, header::ORIGIN).map(str::to_owned),
            viewer: None,
            refused: None,
            live: None,
            origin_path: None,
        }
    }

    /// The `User-Agent` as text (empty when absent or not visible ASCII).
    pub fn user_agent(&self) -> &str {
        self.user_agent
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The effective uid of an allowed viewer request.
    pub fn uid(&self) -> Option<&str> {
        self.viewer.as_ref().and_then(|v| v.uid.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_classes() {
        assert_eq!(route_of(Surface::Main, "/a/b/i.m3u8"), Route::Playlist);
        assert_eq!(route_of(Surface::Main, "/a/b/s.TS"), Route::Segment);
        assert_eq!(route_of(Surface::Main, "/a/b/enc.key"), Route::Key);
        assert_eq!(route_of(Surface::Main, "/a/x.png"), Route::Static);
        assert_eq!(route_of(Surface::Main, "/a/x.mp4"), Route::Default);
        assert_eq!(route_of(Surface::Main, "/api/whitelist"), Route::Api);
        assert_eq!(route_of(Surface::Main, "/metrics"), Route::Admin);
        assert_eq!(route_of(Surface::Main, "/health"), Route::Admin);
        assert_eq!(route_of(Surface::Admin, "/a/b/s.ts"), Route::Admin);
    }
}
