//! The admission APIs of the main listener: the §3 whitelist admission and the SPEC §9
//! static-file admission, front-end (JS) admission and its check, and the origin file
//! check, and the revocation of SPEC §13. Each handler reads the request, asks the
//! policy (or the origin), and answers JSON; a refusal is an [`ApiError`], which the
//! rescue module (the one place where errors become responses) answers and logs.
//! Switched-off features answer `404`.
//!
//! | route | auth | |
//! |---|---|---|
//! | `POST /api/whitelist` `{uid, path, clientIp, UserAgent}` | bearer whitelist key | always |
//! | `POST /api/revoke` `{uid, key_path?}` | bearer whitelist key | always (cuts transfers through `viewer_controls`) |
//! | `POST /api/static-whitelist` `{uid, clientIp, UserAgent}` | bearer whitelist key | `protect.static_whitelist` |
//! | `GET\|POST /api/js-whitelist` | bearer key + `{uid, jsPath}` (POST), or `?uid&js_path&expires&sign` | `protect.js_whitelist` |
//! | `GET /api/js-whitelist/check?js_path=&uid=` | the caller's own IP + UA | `protect.js_whitelist` |
//! | `POST /api/file/check` `{path}` | bearer whitelist key | `protect.file_check` |
//! | `POST /api/file/check/batch` `{paths: [1..100]}` | bearer whitelist key | `protect.file_check` |

pub mod file_check;

use std::sync::Arc;

use http::header;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::js::{JsCredentials, JsError};
use crate::access::revoke::RevokeError;
use crate::access::whitelist::AdmitError;
use crate::app::{App, ConnInfo};
use crate::clock::unix_secs as unix_now;
use crate::ctx::RequestCtx;
use crate::request::{header_str, query_param, read_small_body, BodyError};
use crate::response::{self, Body};

use file_check::FileCheckError;

/// Whether `path` is one of this module's routes.
pub fn is_api_path(path: &str) -> bool {
    matches!(
        path,
        "/api/whitelist"
            | "/api/revoke"
            | "/api/static-whitelist"
            | "/api/js-whitelist"
            | "/api/js-whitelist/check"
            | "/api/file/check"
            | "/api/file/check/batch"
    )
}

/// Which of the two body-admission APIs refused (named in the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionApi {
    /// `POST /api/whitelist` (SPEC §3).
    Whitelist,
    /// `POST /api/static-whitelist`.
    Static,
}

impl AdmissionApi {
    /// The API's name in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            AdmissionApi::Whitelist => "whitelist",
            AdmissionApi::Static => "static",
        }
    }
}

/// Why an admission-API request was refused; each variant keeps the typed error, and
/// the rescue module gives it its status, JSON body and log line.
#[derive(Debug)]
pub enum ApiError {
    /// A whitelist or static-file admission refused.
    Admission {
        /// Which API.
        api: AdmissionApi,
        /// Why.
        error: AdmitError,
    },
    /// A front-end (JS) admission refused.
    Js(JsError),
    /// The front-end admission check could not look (`{"allowed": false, "error": …}`).
    JsCheck(JsError),
    /// A revocation refused.
    Revoke(RevokeError),
    /// A file check refused.
    FileCheck(FileCheckError),
    /// The JSON body could not be read.
    Body(BodyError),
    /// The route does not take this method (`Allow` lists the ones it takes).
    MethodNotAllowed(&'static str),
    /// The feature behind the route is switched off.
    NotFound,
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        ApiError::Body(e)
    }
}

/// The handler's answer, or why it refused.
type ApiResult = Result<Response<Body>, ApiError>;

/// Answers one of this module's routes.
pub async fn route(app: &Arc<App>, ctx: &RequestCtx, req: Request<Incoming>) -> ApiResult {
    let p = &app.config.protect;
    let conn: &ConnInfo = &ctx.conn;
    let method = req.method().clone();
    let only = |allowed: &[Method], allow: &'static str| {
        if allowed.contains(&method) {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed(allow))
        }
    };
    match req.uri().path() {
        "/api/static-whitelist" if !p.static_whitelist => Err(ApiError::NotFound),
        "/api/js-whitelist" | "/api/js-whitelist/check" if !p.js_whitelist => {
            Err(ApiError::NotFound)
        }
        "/api/file/check" | "/api/file/check/batch" if !p.file_check => Err(ApiError::NotFound),
        "/api/whitelist" => {
            only(&[Method::POST], "POST")?;
            admit(app, req, AdmissionApi::Whitelist).await
        }
        "/api/static-whitelist" => {
            only(&[Method::POST], "POST")?;
            admit(app, req, AdmissionApi::Static).await
        }
        "/api/revoke" => {
            only(&[Method::POST], "POST")?;
            revoke(app, req).await
        }
        "/api/js-whitelist" => {
            only(&[Method::GET, Method::POST], "GET, POST")?;
            js_whitelist(app, ctx, req).await
        }
        "/api/js-whitelist/check" => {
            only(&[Method::GET], "GET")?;
            js_check(app, ctx, &req).await.map_err(ApiError::JsCheck)
        }
        "/api/file/check" => {
            only(&[Method::POST], "POST")?;
            file_check::single(app, conn, req)
                .await
                .map_err(ApiError::FileCheck)
        }
        "/api/file/check/batch" => {
            only(&[Method::POST], "POST")?;
            file_check::batch(app, conn, req)
                .await
                .map_err(ApiError::FileCheck)
        }
        _ => Err(ApiError::NotFound),
    }
}

/// `POST /api/whitelist` (SPEC §3) and `POST /api/static-whitelist`.
async fn admit(app: &App, req: Request<Incoming>, api: AdmissionApi) -> ApiResult {
    let refused = |error| ApiError::Admission { api, error };
    let auth = header_str(req.headers(), header::AUTHORIZATION).map(str::to_owned);
    // The bearer key is checked before a byte of the body is read (SPEC §10).
    if !app.policy.whitelist_key_ok(auth.as_deref()) {
        return Err(refused(AdmitError::Unauthorized));
    }
    let body = read_small_body(app, req).await?;
    let admitted = match api {
        AdmissionApi::Whitelist => app.policy.admit(&body, auth.as_deref(), unix_now()).await,
        AdmissionApi::Static => {
            app.policy
                .admit_static(&body, auth.as_deref(), unix_now())
                .await
        }
    };
    admitted
        .map(|v| response::json(StatusCode::OK, &v))
        .map_err(refused)
}

/// `POST /api/revoke` `{uid, key_path?}` (bearer whitelist key, checked before the
/// body is read): `200 {"uid", "revoked": {"whitelist_paths", "sessions", "pairs",
/// "js_admissions"}, "transfers_cut"}`.
async fn revoke(app: &App, req: Request<Incoming>) -> ApiResult {
    let auth = header_str(req.headers(), header::AUTHORIZATION);
    if !app.policy.whitelist_key_ok(auth) {
        return Err(ApiError::Revoke(RevokeError::Unauthorized));
    }
    let body = read_small_body(app, req).await?;
    let done = app
        .policy
        .revoke(&body, unix_now())
        .await
        .map_err(ApiError::Revoke)?;
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let cut = crate::viewer_controls::cut_revoked(app, now, Some(&done.uid));
    Ok(response::json(StatusCode::OK, &done.response(cut)))
}

/// `GET|POST /api/js-whitelist`.
async fn js_whitelist(app: &App, ctx: &RequestCtx, req: Request<Incoming>) -> ApiResult {
    let h = req.headers();
    let ip = ctx.client_ip;
    let ua = header_str(h, header::USER_AGENT).unwrap_or("").to_string();
    let auth = header_str(h, header::AUTHORIZATION).map(str::to_owned);
    let query = req.uri().query().unwrap_or("").to_string();
    let bearer = req.method() == Method::POST && auth.is_some();
    // A POST by bearer key: the key is checked before a byte of the body is read.
    if bearer && !app.policy.whitelist_key_ok(auth.as_deref()) {
        return Err(ApiError::Js(JsError::Unauthorized));
    }
    let body = if bearer {
        read_small_body(app, req).await?
    } else {
        bytes::Bytes::new()
    };
    let (uid, js_path, expires, sign) = (
        query_param(&query, "uid"),
        query_param(&query, "js_path"),
        query_param(&query, "expires"),
        query_param(&query, "sign"),
    );
    let creds = match (&auth, bearer) {
        (Some(a), true) => JsCredentials::Bearer {
            authorization: a,
            body: &body,
        },
        _ => JsCredentials::Signed {
            uid: uid.as_deref(),
            js_path: js_path.as_deref(),
            expires: expires.as_deref(),
            sign: sign.as_deref(),
        },
    };
    let v = app
        .policy
        .admit_js(creds, ip, &ua, unix_now())
        .await
        .map_err(ApiError::Js)?;
    Ok(response::json(StatusCode::OK, &v))
}

/// `GET /api/js-whitelist/check?js_path=&uid=`: `200` when the caller's IP and UA are
/// admitted, `403` otherwise.
async fn js_check(
    app: &App,
    ctx: &RequestCtx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, JsError> {
    let h = req.headers();
    let ip = ctx.client_ip;
    let ua = header_str(h, header::USER_AGENT).unwrap_or("");
    let query = req.uri().query().unwrap_or("");
    let js_path = query_param(query, "js_path").unwrap_or_default();
    let uid = query_param(query, "uid");
    let (allowed, v) = app
        .policy
        .check_js(ip, ua, &js_path, uid.as_deref(), unix_now())
        .await?;
    let status = if allowed {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    };
    Ok(response::json(status, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths() {
        assert!(is_api_path("/api/file/check/batch"));
        assert!(is_api_path("/api/whitelist"));
        assert!(!is_api_path("/api/whitelist/x"));
    }
}
