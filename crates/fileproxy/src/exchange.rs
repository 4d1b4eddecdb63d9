//! The logging phase (SPEC §2 step 9, §5): every response, whatever produced it,
//! leaves through [`finish`], which wraps its body in the one [`TransferBody`] of the
//! request. When the body ends — completed, failed at the origin, or abandoned by the
//! viewer — [`Accounting`] records the request once, from its [`RequestCtx`]: metrics
//! (route and status class, time to first and last byte, bytes, client-closed), the
//! effective uid's traffic, the access-log line (status 499 when the viewer left
//! early), and for a streamed origin answer its `/active-transfers` entry.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Method, Response};
use http_body_util::BodyExt;

use crate::access::{SessionOutcome, WhitelistOutcome};
use crate::access_log::Entry;
use crate::app::App;
use crate::ctx::RequestCtx;
use crate::metrics::{Route, WhitelistResult};
use crate::response::Body;
use crate::stream::{Outcome, TransferBody, TransferObserver, TransferReport};

/// Counts the decision facts in `ctx` and wraps the body of `resp` so the request is
/// accounted for when the body ends.
pub fn finish(app: &Arc<App>, mut ctx: RequestCtx, resp: Response<Body>) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    if let Some(reason) = ctx.refused {
        app.metrics.record_denial(reason);
    }
    if let Some(f) = &ctx.viewer {
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
    app.gauges.active_transfers.fetch_add(1, Ordering::Relaxed);
    let started = ctx.started;
    let live = ctx.live.take();
    let observer: Box<dyn TransferObserver> = Box::new(Accounting {
        app: Arc::clone(app),
        head: started.elapsed(),
        status: parts.status.as_u16(),
        ctx,
    });
    let observer = match live {
        Some(meta) => app.protect.track(meta, observer),
        None => observer,
    };
    let body = TransferBody::new(body, started, observer);
    Response::from_parts(parts, body.boxed_unsync())
}

/// Runs once when a response body ends.
struct Accounting {
    app: Arc<App>,
    ctx: RequestCtx,
    /// Time until the response head was ready.
    head: Duration,
    status: u16,
}

impl TransferObserver for Accounting {
    fn finish(self: Box<Self>, report: TransferReport) {
        let Accounting {
            app,
            ctx,
            head,
            status,
        } = *self;
        app.gauges.active_transfers.fetch_sub(1, Ordering::Relaxed);
        // hyper never polls the body of a HEAD answer: dropping it is not a viewer leaving.
        let outcome = if ctx.method == Method::HEAD && report.bytes == 0 {
            Outcome::Completed
        } else {
            report.outcome
        };
        let closed = outcome == Outcome::ClientClosed;
        let route: Route = ctx.route;
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
                tracing::debug!(
                    client_ip = %ctx.client_ip,
                    uid = ?ctx.uid(),
                    status = 499,
                    bytes = report.bytes,
                    "viewer closed the connection"
                );
            }
            Outcome::OriginError => {
                tracing::warn!(path = ?ctx.origin_path, uid = ?ctx.uid(), status, bytes = report.bytes, "origin failed mid-transfer");
            }
        }
        if let Some(f) = &ctx.viewer {
            if let Some(uid) = f.uid.as_deref().filter(|u| !u.is_empty()) {
                app.traffic
                    .record(uid, report.bytes, f.class, ctx.client_ip, f.session_id());
                app.policy
                    .controls()
                    .record_bytes(uid, report.bytes, crate::clock::unix_secs());
            }
        }
        if app.access_log.enabled() {
            let target = ctx.target.as_ref().map_or("/", |t| t.as_str());
            let text = |v: &Option<HeaderValue>| -> Option<String> {
                v.as_ref()
                    .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            };
            let (referer, user_agent) = (text(&ctx.referer), text(&ctx.user_agent));
            app.access_log.log(&Entry {
                client_ip: ctx.client_ip,
                unix: ctx.unix,
                method: ctx.method.as_str(),
                target,
                version: ctx.version,
                status: if closed { 499 } else { status },
                bytes: report.bytes,
                referer: referer.as_deref(),
                user_agent: user_agent.as_deref(),
            });
        }
    }
}
