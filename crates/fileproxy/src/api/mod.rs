//! The admission APIs of the main listener: the §3 whitelist admission and the SPEC §9
//! static-file admission, front-end (JS) admission and its check, and the origin file
//! check. Each handler reads the request, asks the policy (or the origin), and answers
//! JSON; switched-off features answer `404`.
//!
//! | route | auth | |
//! |---|---|---|
//! | `POST /api/whitelist` `{uid, path, clientIp, UserAgent}` | bearer whitelist key | always |
//! | `POST /api/revoke` `{uid, key_path?}` | bearer whitelist key | always (`viewer_controls`) |
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
use serde_json::json;

use crate::access::js::JsCredentials;
use crate::app::{App, ConnInfo};
use crate::clock::unix_secs as unix_now;
use crate::ctx::RequestCtx;
use crate::request::{header_str, method_not_allowed, query_param, read_small_body};
use crate::response::{self, Body};

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

fn not_found() -> Response<Body> {
    response::text(StatusCode::NOT_FOUND, "Not Found")
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Answers one of this module's routes.
pub async fn route(app: &Arc<App>, ctx: &RequestCtx, req: Request<Incoming>) -> Response<Body> {
    let p = &app.config.protect;
    let conn: &ConnInfo = &ctx.conn;
    match req.uri().path() {
        "/api/whitelist" => match *req.method() {
            Method::POST => admit(app, conn, req).await,
            _ => method_not_allowed("POST"),
        },
        "/api/revoke" => match *req.method() {
            Method::POST => crate::viewer_controls::revoke_api(app, conn, req).await,
            _ => method_not_allowed("POST"),
        },
        "/api/static-whitelist" if !p.static_whitelist => not_found(),
        "/api/js-whitelist" | "/api/js-whitelist/check" if !p.js_whitelist => not_found(),
        "/api/file/check" | "/api/file/check/batch" if !p.file_check => not_found(),
        "/api/static-whitelist" => match *req.method() {
            Method::POST => static_whitelist(app, conn, req).await,
            _ => method_not_allowed("POST"),
        },
        "/api/js-whitelist" => match *req.method() {
            Method::GET | Method::POST => js_whitelist(app, ctx, req).await,
            _ => method_not_allowed("GET, POST"),
        },
        "/api/js-whitelist/check" => match *req.method() {
            Method::GET => js_check(app, ctx, &req).await,
            _ => method_not_allowed("GET"),
        },
        "/api/file/check" => match *req.method() {
            Method::POST => file_check::single(app, conn, req).await,
            _ => method_not_allowed("POST"),
        },
        "/api/file/check/batch" => match *req.method() {
            Method::POST => file_check::batch(app, conn, req).await,
            _ => method_not_allowed("POST"),
        },
        _ => not_found(),
    }
}

/// `POST /api/whitelist` (SPEC §3).
async fn admit(app: &App, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let auth = header_str(req.headers(), header::AUTHORIZATION).map(str::to_owned);
    // The bearer key is checked before a byte of the body is read (SPEC §10).
    if !app.policy.whitelist_key_ok(auth.as_deref()) {
        let e = crate::access::whitelist::AdmitError::Unauthorized;
        tracing::info!(peer = %conn.peer, status = e.status(), "whitelist admission refused: API key");
        return response::json(StatusCode::FORBIDDEN, &e.body());
    }
    let body = match read_small_body(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match app.policy.admit(&body, auth.as_deref(), unix_now()).await {
        Ok(v) => response::json(StatusCode::OK, &v),
        Err(e) => {
            tracing::info!(peer = %conn.peer, status = e.status(), error = %e, "whitelist admission refused");
            response::json(status(e.status()), &e.body())
        }
    }
}

/// `POST /api/static-whitelist`.
async fn static_whitelist(app: &App, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let auth = header_str(req.headers(), header::AUTHORIZATION).map(str::to_owned);
    // The bearer key is checked before a byte of the body is read (SPEC §10).
    if !app.policy.whitelist_key_ok(auth.as_deref()) {
        let e = crate::access::whitelist::AdmitError::Unauthorized;
        tracing::info!(peer = %conn.peer, status = e.status(), "static admission refused: API key");
        return response::json(StatusCode::FORBIDDEN, &e.body());
    }
    let body = match read_small_body(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match app
        .policy
        .admit_static(&body, auth.as_deref(), unix_now())
        .await
    {
        Ok(v) => response::json(StatusCode::OK, &v),
        Err(e) => {
            tracing::info!(peer = %conn.peer, status = e.status(), error = %e, "static admission refused");
            response::json(status(e.status()), &e.body())
        }
    }
}

/// `GET|POST /api/js-whitelist`.
async fn js_whitelist(app: &App, ctx: &RequestCtx, req: Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    let ip = ctx.client_ip;
    let ua = header_str(h, header::USER_AGENT).unwrap_or("").to_string();
    let auth = header_str(h, header::AUTHORIZATION).map(str::to_owned);
    let query = req.uri().query().unwrap_or("").to_string();
    let bearer = req.method() == Method::POST && auth.is_some();
    // A POST by bearer key: the key is checked before a byte of the body is read.
    if bearer && !app.policy.whitelist_key_ok(auth.as_deref()) {
        let e = crate::access::js::JsError::Unauthorized;
        tracing::info!(peer = %ctx.conn.peer, status = e.status(), "front-end admission refused: API key");
        return response::json(StatusCode::FORBIDDEN, &e.body());
    }
    let body = if bearer {
        match read_small_body(app, req).await {
            Ok(b) => b,
            Err(r) => return r,
        }
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
    match app.policy.admit_js(creds, ip, &ua, unix_now()).await {
        Ok(v) => response::json(StatusCode::OK, &v),
        Err(e) => {
            tracing::info!(peer = %ctx.conn.peer, status = e.status(), error = %e, "front-end admission refused");
            response::json(status(e.status()), &e.body())
        }
    }
}

/// `GET /api/js-whitelist/check?js_path=&uid=`: `200` when the caller's IP and UA are
/// admitted, `403` otherwise.
async fn js_check(app: &App, ctx: &RequestCtx, req: &Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    let ip = ctx.client_ip;
    let ua = header_str(h, header::USER_AGENT).unwrap_or("");
    let query = req.uri().query().unwrap_or("");
    let js_path = query_param(query, "js_path").unwrap_or_default();
    let uid = query_param(query, "uid");
    match app
        .policy
        .check_js(ip, ua, &js_path, uid.as_deref(), unix_now())
        .await
    {
        Ok((true, v)) => response::json(StatusCode::OK, &v),
        Ok((false, v)) => response::json(StatusCode::FORBIDDEN, &v),
        Err(e) => response::json(
            status(e.status()),
            &json!({"allowed": false, "error": e.to_string()}),
        ),
    }
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
