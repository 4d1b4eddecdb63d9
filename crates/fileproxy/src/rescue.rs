//! The one place where a refusal or failure becomes a response (linkerd's "rescue"):
//! of the viewer flow (policy refusals and redirects, malformed paths, origin errors,
//! failures of the SPEC §9 playlist rewriting), of the admission APIs
//! ([`ApiError`]: admissions, revocations, file checks, unreadable bodies), of the
//! admin surface ([`AdminError`]: the token gate, bad input, store failures), refused
//! CORS preflights, and the routing answers (`404`, `405`). Handlers return the typed error; each is logged
//! here once, and its status and body are decided here.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use crate::access::canonical_path::PathError;
use crate::access::{self, DenyReason};
use crate::admin::AdminError;
use crate::api::ApiError;
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
    /// An admission API refused (JSON `{"error": …}` answers).
    Api(ApiError),
    /// The admin surface refused or could not answer.
    Admin(AdminError),
    /// A CORS preflight from an origin not in `cors.allow_origins` (`403`).
    CorsPreflight,
    /// Nothing is routed at this path on this listener (`404 Not Found`).
    NotFound,
    /// The route does not take this method (`405`, `Allow` lists the ones it takes).
    MethodNotAllowed {
        /// The `Allow` value.
        allow: &'static str,
    },
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<AdminError> for Failure {
    fn from(e: AdminError) -> Self {
        Failure::Admin(e)
    }
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
            Failure::Api(e) => api_response(ctx, e),
            Failure::Admin(e) => {
                let no_store = e.from_a_route();
                let mut r = admin_response(ctx, e);
                if no_store {
                    r.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                }
                r
            }
            Failure::CorsPreflight => {
                response::text(StatusCode::FORBIDDEN, "CORS origin not allowed")
            }
            Failure::NotFound => not_found(),
            Failure::MethodNotAllowed { allow } => method_not_allowed(allow),
        }
    }

    /// Whether FileProxy's CORS headers go on this answer (refusals and redirects of
    /// the viewer flow carry them, as allowed answers do).
    pub fn carries_cors(&self) -> bool {
        matches!(self, Failure::Deny { .. } | Failure::Redirect { .. })
    }
}

/// `404 Not Found` (plain text).
fn not_found() -> Response<Body> {
    response::text(StatusCode::NOT_FOUND, "Not Found")
}

/// `405 Method Not Allowed` with `Allow: allow`.
fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = response::text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A JSON `{"error": message}` answer.
fn json_error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    response::json(status, &json!({ "error": message.to_string() }))
}

/// The status of a typed error that reports its own as a number.
fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// The answer to an admission-API refusal (SPEC §3, §9, §13).
fn api_response(ctx: &RequestCtx, e: ApiError) -> Response<Body> {
    let peer = ctx.conn.peer;
    match e {
        ApiError::Admission { api, error } => {
            tracing::info!(%peer, api = api.as_str(), status = error.status(), %error, "admission refused");
            response::json(status_of(error.status()), &error.body())
        }
        ApiError::Js(error) => {
            tracing::info!(%peer, status = error.status(), %error, "front-end admission refused");
            response::json(status_of(error.status()), &error.body())
        }
        ApiError::JsCheck(error) => {
            tracing::info!(%peer, status = error.status(), %error, "front-end admission check failed");
            response::json(
                status_of(error.status()),
                &json!({"allowed": false, "error": error.to_string()}),
            )
        }
        ApiError::Revoke(error) => {
            tracing::info!(%peer, status = error.status(), %error, "revocation refused");
            response::json(status_of(error.status()), &error.body())
        }
        ApiError::FileCheck(error) => {
            tracing::info!(%peer, status = error.status().as_u16(), %error, "file check refused");
            json_error(error.status(), &error)
        }
        ApiError::Body(error) => {
            tracing::info!(%peer, status = error.status().as_u16(), %error, "API request body refused");
            json_error(error.status(), error)
        }
        ApiError::MethodNotAllowed(allow) => method_not_allowed(allow),
        ApiError::NotFound => not_found(),
    }
}

/// The answer to an admin refusal or failure (SPEC §1, §9).
fn admin_response(ctx: &RequestCtx, e: AdminError) -> Response<Body> {
    match e {
        AdminError::Disabled => not_found(),
        AdminError::TokenMissing => {
            let mut r = response::text(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: admin token required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fileproxy-admin\""),
            );
            r
        }
        AdminError::TokenWrong { path } => {
            tracing::info!(peer = %ctx.conn.peer, %path, "admin request with a wrong token");
            response::text(StatusCode::FORBIDDEN, "Forbidden: wrong admin token")
        }
        AdminError::MethodNotAllowed => method_not_allowed("GET, HEAD"),
        AdminError::NotFound { path } => {
            tracing::debug!(%path, "admin route not available");
            not_found()
        }
        AdminError::BadRequest(why) => json_error(StatusCode::BAD_REQUEST, why),
        AdminError::DebugStore(why) => {
            json_error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {why}"))
        }
        AdminError::UnknownDebugRoute => json_error(
            StatusCode::NOT_FOUND,
            "unknown debug route; try /debug/browser, /debug/cidr, /debug/ip-whitelist, /debug/session, /debug/uid",
        ),
        AdminError::ViewStore { view, error } => {
            tracing::warn!(view, %error, "admin view: store unavailable");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_not_allowed_names_the_methods() {
        let r = method_not_allowed("GET, HEAD");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    }
}
