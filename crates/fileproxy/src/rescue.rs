//! The one place where a refusal or failure of the viewer flow becomes a response
//! (linkerd's "rescue"): policy refusals and redirects, malformed paths, origin
//! errors, and failures of the SPEC §9 playlist rewriting. Each is logged here once.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::access::canonical_path::PathError;
use crate::access::{self, DenyReason};
use crate::content_check;
use crate::ctx::RequestCtx;
use crate::origin::OriginError;
use crate::protect::serve_playlist::PlaylistError;
use crate::response::{self, Body};

/// Why the viewer flow stopped before streaming an origin answer.
#[derive(Debug)]
pub enum Failure {
    /// The path is ambiguous or cannot be asked of any origin (`400 Bad Request: <why>`,
    /// SPEC §10), refused before any store or origin work.
    BadPath {
        /// The path as sent.
        path: String,
        /// What is wrong with it.
        why: PathError,
    },
    /// The origin answered playlist content to a request that did not pass the
    /// playlist checks (SPEC §10 content check).
    ContentClass {
        /// The canonical path.
        path: String,
        /// What gave the content away.
        why: content_check::Refusal,
    },
    /// The access policy refused the request (SPEC's exact texts).
    Deny {
        /// HTTP status (400, 403, or 503 when the store failed).
        status: u16,
        /// Response body text.
        body: String,
        /// Metrics label.
        reason: DenyReason,
        /// The decoded path (log line).
        path: String,
    },
    /// Safe-key redirect (SPEC §2 step 4).
    Redirect {
        /// The `Location` value.
        location: String,
    },
    /// The origin could not answer (SPEC §2 step 8).
    Origin {
        /// What went wrong.
        error: OriginError,
        /// The path asked of the origin.
        path: String,
    },
    /// A key-protected playlist could not be rewritten (SPEC §9).
    Rewrite {
        /// What went wrong.
        error: PlaylistError,
        /// The playlist's path.
        path: String,
    },
}

impl Failure {
    /// The response for this failure; refusals are noted in `ctx` for the metrics.
    pub fn into_response(self, ctx: &mut RequestCtx) -> Response<Body> {
        match self {
            Failure::BadPath { path, why } => {
                tracing::info!(peer = %ctx.conn.peer, %path, %why, "rejected malformed path");
                response::text(StatusCode::BAD_REQUEST, why.text())
            }
            Failure::ContentClass { path, why } => {
                tracing::warn!(%path, client_ip = %ctx.client_ip, why = why.as_str(), "content check: playlist content refused to a request that did not pass the playlist checks");
                ctx.refused = Some(DenyReason::ContentClass);
                response::text(StatusCode::FORBIDDEN, content_check::DENY_TEXT)
            }
            Failure::Deny {
                status,
                body,
                reason,
                path,
            } => {
                tracing::info!(client_ip = %ctx.client_ip, %path, status, reason = reason.as_str(), "request denied");
                ctx.refused = Some(reason);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                response::text(status, body)
            }
            Failure::Redirect { location } => {
                let mut r = response::empty_with(StatusCode::FOUND);
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(access::REDIRECT_CACHE_CONTROL),
                );
                r
            }
            Failure::Origin { error, path } => match error {
                OriginError::Timeout(after) => {
                    tracing::warn!(%path, ?after, "origin timed out");
                    response::text(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout")
                }
                OriginError::Unreachable(why) => {
                    tracing::warn!(%path, %why, "origin unreachable");
                    response::text(StatusCode::BAD_GATEWAY, "Bad Gateway")
                }
                OriginError::BadPath(why) => {
                    tracing::info!(%path, %why, "path refused by origin");
                    response::text(StatusCode::BAD_REQUEST, format!("Bad Request: {why}"))
                }
                OriginError::Busy => crate::overload::busy_response(),
            },
            Failure::Rewrite { error, path } => {
                tracing::warn!(%path, %error, "key-protected playlist not served");
                let (status, text) = error.answer();
                response::text(status, text)
            }
        }
    }

    /// Whether FileProxy's CORS headers go on this answer (refusals and redirects of
    /// the viewer flow carry them, as allowed answers do).
    pub fn carries_cors(&self) -> bool {
        matches!(self, Failure::Deny { .. } | Failure::Redirect { .. })
    }
}
