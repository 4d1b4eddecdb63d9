//! The accounting stage (SPEC §2 step 9, §5): every response, whatever produced it,
//! leaves through [`Exchange::finish`], which wraps its body in a [`TransferBody`].
//! When the body ends — completed, failed at the origin, or abandoned by the viewer —
//! [`Accounting`] records the request once: metrics (route and status class, time to
//! first and last byte, bytes, client-closed), the effective uid's traffic, and the
//! access-log line (status 499 when the viewer left early).
//!
//! Stages deeper in the pipeline pass what they learned up as response extensions:
//! [`ViewerFacts`] for an allowed viewer request, [`Refused`] for a policy refusal.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;

use crate::access::classify::{classify, FileClass};
use crate::access::client_ip;
use crate::access::{Allow, DenyReason, SessionOutcome, WhitelistOutcome};
use crate::access_log::Entry;
use crate::admin;
use crate::app::Surface;
use crate::app::{App, ConnInfo};
use crate::metrics::{Route, WhitelistResult};
use crate::response::Body;
use crate::stream::{Outcome, TransferBody, TransferObserver, TransferReport};

/// What the viewer flow learned about an allowed request (a response extension).
#[derive(Debug, Clone)]
pub struct ViewerFacts {
    /// Suffix class of the decoded path.
    pub class: FileClass,
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
            uid: a.uid.clone(),
            session: a.session.clone(),
            whitelist: a.whitelist.clone(),
        }
    }

    fn session_id(&self) -> Option<&str> {
        match &self.session {
            SessionOutcome::Created { id } | SessionOutcome::Reused { id, .. } => Some(id),
            SessionOutcome::None => None,
        }
    }
}

/// The access policy refused the request for this reason (a response extension).
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub DenyReason);

/// One request on its way through the pipeline, as accounting needs to know it.
#[derive(Debug)]
pub struct Exchange {
    started: Instant,
    unix: i64,
    route: Route,
    method: Method,
    version: Version,
    target: Option<http::uri::PathAndQuery>,
    client_ip: IpAddr,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
}

/// The route class of a request path.
fn route_of(surface: Surface, path: &str) -> Route {
    if surface == Surface::Admin || path == "/health" || admin::is_admin_path(path) {
        Route::Admin
    } else if path == "/api" || path.starts_with("/api/") {
        Route::Api
    } else {
        Route::from_class(classify(path))
    }
}

impl Exchange {
    /// Notes what accounting needs from the request before it is consumed.
    pub fn begin<B>(app: &App, conn: &ConnInfo, req: &Request<B>, started: Instant) -> Exchange {
        let h = req.headers();
        let client_ip = client_ip::client_ip_from_headers(conn.peer.ip(), h, &app.trusted);
        let logging = app.access_log.enabled();
        Exchange {
            started,
            unix: i64::try_from(crate::pipeline::unix_now()).unwrap_or(i64::MAX),
            route: route_of(conn.surface, req.uri().path()),
            method: req.method().clone(),
            version: req.version(),
            target: if logging {
                req.uri().path_and_query().cloned()
            } else {
                None
            },
            client_ip,
            referer: if logging {
                h.get(header::REFERER).cloned()
            } else {
                None
            },
            user_agent: if logging {
                h.get(header::USER_AGENT).cloned()
            } else {
                None
            },
        }
    }

    /// Counts the decision facts carried by `resp` and wraps its body so the request
    /// is accounted for when the body ends.
    pub fn finish(self, app: &Arc<App>, resp: Response<Body>) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        let facts = parts.extensions.remove::<ViewerFacts>();
        if let Some(Refused(reason)) = parts.extensions.remove::<Refused>() {
            app.metrics.record_denial(reason);
        }
        if let Some(f) = &facts {
            match &f.session {
                SessionOutcome::Created { .. } => app.metrics.record_session(true),
                SessionOutcome::Reused { .. } => app.metrics.record_session(false),
                SessionOutcome::None => {}
            }
            app.metrics.record_whitelist(match f.whitelist {
                WhitelistOutcome::Entry { .. } => WhitelistResult::Hit,
                WhitelistOutcome::Fixed => WhitelistResult::Fixed,
                WhitelistOutcome::Skipped => WhitelistResult::Skipped,
                WhitelistOutcome::Static { .. } => WhitelistResult::Static,
                WhitelistOutcome::Js => WhitelistResult::Js,
            });
        }
        app.counters
            .active_transfers
            .fetch_add(1, Ordering::Relaxed);
        let started = self.started;
        let observer = Box::new(Accounting {
            app: Arc::clone(app),
            head: started.elapsed(),
            status: parts.status.as_u16(),
            facts,
            ex: self,
        });
        let body = TransferBody::new(body, started, observer);
        Response::from_parts(parts, body.boxed_unsync())
    }
}

/// Runs once when a response body ends.
struct Accounting {
    app: Arc<App>,
    ex: Exchange,
    /// Time until the response head was ready.
    head: Duration,
    status: u16,
    facts: Option<ViewerFacts>,
}

impl TransferObserver for Accounting {
    fn finish(self: Box<Self>, report: TransferReport) {
        let Accounting {
            app,
            ex,
            head,
            status,
            facts,
        } = *self;
        let c = &app.counters;
        c.active_transfers.fetch_sub(1, Ordering::Relaxed);
        c.bytes_delivered.fetch_add(report.bytes, Ordering::Relaxed);
        // hyper never polls the body of a HEAD answer: dropping it is not a viewer leaving.
        let outcome = if ex.method == Method::HEAD && report.bytes == 0 {
            Outcome::Completed
        } else {
            report.outcome
        };
        let closed = outcome == Outcome::ClientClosed;
        let route = facts
            .as_ref()
            .map(|f| Route::from_class(f.class))
            .unwrap_or(ex.route);
        let first_byte = report.first_byte.unwrap_or(head);
        app.metrics.record_response(
            route,
            status,
            report.bytes,
            first_byte,
            report.total,
            closed,
        );
        match outcome {
            Outcome::Completed => {}
            Outcome::ClientClosed => {
                c.client_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    client_ip = %ex.client_ip,
                    uid = ?facts.as_ref().and_then(|f| f.uid.as_deref()),
                    status = 499,
                    bytes = report.bytes,
                    "viewer closed the connection"
                );
            }
            Outcome::OriginError => {
                tracing::warn!(status, bytes = report.bytes, "origin failed mid-transfer");
            }
        }
        if let Some(f) = &facts {
            if let Some(uid) = f.uid.as_deref().filter(|u| !u.is_empty()) {
                app.traffic
                    .record(uid, report.bytes, f.class, ex.client_ip, f.session_id());
            }
        }
        if app.access_log.enabled() {
            let target = ex.target.as_ref().map_or("/", |t| t.as_str());
            let text = |v: &Option<HeaderValue>| -> Option<String> {
                v.as_ref()
                    .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            };
            let (referer, user_agent) = (text(&ex.referer), text(&ex.user_agent));
            app.access_log.log(&Entry {
                client_ip: ex.client_ip,
                unix: ex.unix,
                method: ex.method.as_str(),
                target,
                version: ex.version,
                status: if closed { 499 } else { status },
                bytes: report.bytes,
                referer: referer.as_deref(),
                user_agent: user_agent.as_deref(),
            });
        }
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
