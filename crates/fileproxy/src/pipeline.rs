//! The request pipeline: route → client identity → classify → access policy → origin
//! → response stream → accounting. `handle` reads top to bottom as those stages.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access::classify::FileClass;
use crate::access::client_ip;
use crate::access::{self, cors, query, AccessRequest, Allow, Decision, SessionOutcome};
use crate::admin;

use crate::app::{App, ConnInfo, Surface};
use crate::config::Config;
use crate::exchange::{Exchange, Refused, ViewerFacts};
use crate::health;
use crate::origin::{FetchClass, OriginError, OriginRequest};
use crate::response::{self, filter_origin_headers, Body};
use crate::stream::{Outcome, TransferBody, TransferObserver, TransferReport};

/// Viewer headers forwarded to the origin (SPEC §2 step 7).
const FORWARDED: [header::HeaderName; 5] = [
    header::USER_AGENT,
    header::RANGE,
    header::IF_RANGE,
    header::IF_MODIFIED_SINCE,
    header::IF_NONE_MATCH,
];

/// Largest JSON body accepted by the admission APIs.
const MAX_API_BODY: usize = 64 * 1024;

/// Handles one request; never fails (errors become 4xx/5xx responses).
pub async fn handle(app: Arc<App>, conn: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    app.counters.requests.fetch_add(1, Ordering::Relaxed);
    // Accounting stage (metrics, traffic, access log) for every response: `exchange`.
    let exchange = Exchange::begin(&app, &conn, &req, started);
    let resp = dispatch(&app, &conn, req, started).await;
    exchange.finish(&app, resp)
}

/// Routes a request (SPEC §1).
async fn dispatch(
    app: &Arc<App>,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/health") => health::handle(app).await,
        _ if admin::is_admin_path(path) => match admin::refusal(app, conn, &req) {
            None => admin::route(app, conn, req).await,
            Some(refused) => refused,
        },
        _ if conn.surface == Surface::Admin => response::text(StatusCode::NOT_FOUND, "Not Found"),
        (&Method::POST, "/api/whitelist") => admit(app, conn, req).await,
        _ if crate::api::is_api_path(path) => crate::api::route(app, conn, req).await,
        (&Method::OPTIONS, _) => preflight(app, &req),
        (&Method::GET | &Method::HEAD, _) => proxy(app, conn, req, started).await,
        _ => {
            let mut r = response::text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            r
        }
    }
}

/// A header's value as text (absent or not visible ASCII → `None`).
fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub use crate::clock::unix_secs as unix_now;

/// Adds FileProxy's CORS headers for the request's `Origin` (SPEC §1, `cors.allow_origins`).
fn add_cors(cfg: &Config, origin: Option<&str>, resp: &mut Response<Body>) {
    for (name, value) in cors::response_headers(&cfg.cors, origin) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().append(name, v);
        }
    }
}

/// `OPTIONS`: CORS pre-flight for the configured origins.
fn preflight(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    let origin = header_str(h, header::ORIGIN);
    let acrh = header_str(h, header::ACCESS_CONTROL_REQUEST_HEADERS);
    match cors::preflight_headers(&app.config.cors, origin, acrh) {
        Some(headers) => {
            let mut r = Response::new(response::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            for (name, value) in headers {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    r.headers_mut().append(name, v);
                }
            }
            r
        }
        None => response::text(StatusCode::FORBIDDEN, "CORS origin not allowed"),
    }
}

/// Reads a request body of at most [`MAX_API_BODY`] bytes within the header timeout.
pub(crate) async fn read_small_body(
    app: &App,
    req: Request<Incoming>,
) -> Result<Bytes, Response<Body>> {
    let limit = Duration::from_secs(app.config.server.header_read_timeout_s);
    let body = http_body_util::Limited::new(req.into_body(), MAX_API_BODY);
    match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(response::json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({"error": format!("request body larger than {MAX_API_BODY} bytes")}),
        )),
        Ok(Err(_)) => Err(response::json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "request body could not be read"}),
        )),
        Err(_) => Err(response::json(
            StatusCode::REQUEST_TIMEOUT,
            &serde_json::json!({"error": "request body not received in time"}),
        )),
    }
}

/// `POST /api/whitelist` (SPEC §3).
async fn admit(app: &App, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let auth = header_str(req.headers(), header::AUTHORIZATION).map(str::to_owned);
    let body = match read_small_body(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match app.policy.admit(&body, auth.as_deref(), unix_now()).await {
        Ok(v) => response::json(StatusCode::OK, &v),
        Err(e) => {
            tracing::info!(peer = %conn.peer, status = e.status(), error = %e, "whitelist admission refused");
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            response::json(status, &e.body())
        }
    }
}

/// The viewer flow of SPEC §2: identity → access policy → origin → stream.
async fn proxy(
    app: &Arc<App>,
    conn: &ConnInfo,
    req: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    let raw_path = req.uri().path().to_string();
    let decoded = match decode_path(&raw_path) {
        Ok(p) => p,
        Err(why) => {
            tracing::info!(peer = %conn.peer, path = %raw_path, why, "rejected malformed path");
            return response::text(StatusCode::BAD_REQUEST, format!("Bad Request: {why}"));
        }
    };
    let h = req.headers();
    let client_ip = client_ip::client_ip(
        conn.peer.ip(),
        header_str(h, "x-forwarded-for"),
        header_str(h, "x-real-ip"),
        &app.trusted,
    );
    let cors_origin = header_str(h, header::ORIGIN).map(str::to_owned);
    let raw_query = req.uri().query();
    let q = query::parse_query(raw_query.unwrap_or(""));
    let host = header_str(h, header::HOST)
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let scheme = if conn.tls { "https" } else { "http" };
    let full_url = query::full_url(scheme, host, &raw_path, raw_query);
    let cookie = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(query::session_cookie);
    let areq = AccessRequest {
        client_ip,
        user_agent: header_str(h, header::USER_AGENT).unwrap_or(""),
        path: &decoded,
        uid: q.uid.as_deref(),
        expires: q.expires.as_deref(),
        token: q.token.as_deref(),
        full_url: &full_url,
        session_cookie: cookie,
        now: unix_now(),
    };
    let decision = app.policy.decide(&areq).await;
    let key_file = app.policy.is_protected_key(&decoded);
    app.protect
        .observe(&areq, &decision, key_file, req.method().as_str());
    let allow = match decision {
        Decision::Allow(a) => a,
        Decision::Deny {
            status,
            body,
            reason,
        } => {
            tracing::info!(%client_ip, path = %decoded, status, reason = reason.as_str(), "request denied");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            let mut r = response::text(status, body);
            add_cors(&app.config, cors_origin.as_deref(), &mut r);
            r.extensions_mut().insert(Refused(reason));
            return r;
        }
        Decision::Redirect { location } => {
            let mut r = response::empty_with(StatusCode::FOUND);
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(access::REDIRECT_CACHE_CONTROL),
            );
            add_cors(&app.config, cors_origin.as_deref(), &mut r);
            return r;
        }
    };
    let facts = ViewerFacts::from_allow(&allow);
    let Allow {
        class,
        uid,
        set_cookie,
        session,
        pending,
        ..
    } = *allow;
    if !pending.is_empty() {
        if matches!(session, SessionOutcome::Created { .. }) {
            // The cookie we are about to send must name a session that exists.
            if let Err(e) = app.policy.complete(pending).await {
                tracing::warn!(error = %e, "session could not be created");
            }
        } else {
            let bg = app.clone();
            app.background.spawn(async move {
                if let Err(e) = bg.policy.complete(pending).await {
                    tracing::warn!(error = %e, "session extension failed");
                }
            });
        }
    }
    let fetch_class = if class == FileClass::Playlist {
        FetchClass::Playlist
    } else {
        FetchClass::Other
    };
    let signing = app
        .protect
        .playlist_signing(class, q.uid.as_deref(), q.expires.as_deref());
    let mut resp = fetch_and_stream(
        app,
        &req,
        raw_path,
        client_ip,
        fetch_class,
        uid,
        started,
        signing,
    )
    .await;
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    add_cors(&app.config, cors_origin.as_deref(), &mut resp);
    resp.extensions_mut().insert(facts);
    resp
}

/// Fetches from the origin and streams the answer back (SPEC §2 steps 7–8); with
/// `signing`, the whole playlist is fetched and served rewritten (SPEC §9).
#[allow(clippy::too_many_arguments)]
async fn fetch_and_stream(
    app: &Arc<App>,
    req: &Request<Incoming>,
    raw_path: String,
    client_ip: IpAddr,
    class: FetchClass,
    uid: Option<String>,
    started: Instant,
    signing: Option<crate::protect::PlaylistSigning>,
) -> Response<Body> {
    let mut headers = HeaderMap::new();
    // A rewritten playlist is fetched whole: no range or conditional headers.
    let forwarded = if signing.is_some() {
        &FORWARDED[..1]
    } else {
        &FORWARDED[..]
    };
    for name in forwarded.iter() {
        if let Some(v) = req.headers().get(name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    let origin_req = OriginRequest {
        method: if req.method() == Method::HEAD && signing.is_none() {
            Method::HEAD
        } else {
            Method::GET
        },
        path: raw_path.clone(),
        headers,
        client_ip,
        class,
    };
    // The segment cache (SPEC §12) answers here when it can, behind the policy.
    let resp = match crate::cache::fetch(app, origin_req).await {
        Ok(r) => r,
        Err(OriginError::Timeout(after)) => {
            tracing::warn!(path = %raw_path, ?after, "origin timed out");
            return response::text(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout");
        }
        Err(OriginError::Unreachable(why)) => {
            tracing::warn!(path = %raw_path, %why, "origin unreachable");
            return response::text(StatusCode::BAD_GATEWAY, "Bad Gateway");
        }
        Err(OriginError::BadPath(why)) => {
            tracing::info!(path = %raw_path, %why, "path refused by origin");
            return response::text(StatusCode::BAD_REQUEST, format!("Bad Request: {why}"));
        }
    };
    let (mut parts, body) = resp.into_parts();
    filter_origin_headers(&mut parts.headers);
    if parts.status.as_u16() >= 400 {
        // Origin errors pass through with their status and an empty body.
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_ENCODING);
        if parts.status != StatusCode::RANGE_NOT_SATISFIABLE {
            parts.headers.remove(header::CONTENT_RANGE);
        }
        drop(body);
        app.protect.record_origin_status(
            client_ip,
            req.method().as_str(),
            &raw_path,
            uid.as_deref(),
            parts.status.as_u16(),
            started,
        );
        return Response::from_parts(parts, response::empty());
    }
    let body = match &signing {
        Some(s) if parts.status == StatusCode::OK => {
            let head = req.method() == Method::HEAD;
            match app
                .protect
                .rewrite(&mut parts, body, s, &raw_path, head)
                .await
            {
                Ok(b) => b,
                Err(resp) => return resp,
            }
        }
        _ => body,
    };
    let live = crate::protect::transfers::TransferMeta {
        method: req.method().to_string(),
        path: raw_path.clone(),
        uid: uid.clone(),
        client_ip,
        status: parts.status.as_u16(),
        total: http_body::Body::size_hint(&body).exact(),
        user_agent: header_str(req.headers(), header::USER_AGENT)
            .unwrap_or("")
            .to_string(),
        started,
    };
    let observer = Box::new(Accounting {
        path: raw_path,
        status: parts.status,
        uid,
    });
    let observer = app.protect.track(live, observer);
    let body = TransferBody::new(body, started, observer);
    Response::from_parts(parts, body.boxed_unsync())
}

/// Origin-side end of a transfer: logs an origin failing mid-way. Counters, traffic
/// and the access log are the `exchange` stage's job, which wraps every response.
struct Accounting {
    path: String,
    status: StatusCode,
    uid: Option<String>,
}

impl TransferObserver for Accounting {
    fn finish(self: Box<Self>, report: TransferReport) {
        if report.outcome == Outcome::OriginError {
            tracing::warn!(path = %self.path, uid = ?self.uid, status = self.status.as_u16(), bytes = report.bytes, "origin failed mid-transfer");
        }
    }
}

/// Percent-decodes a request path and refuses paths no origin should see:
/// invalid UTF-8, NUL, backslashes, `.`/`..` segments.
pub fn decode_path(raw: &str) -> Result<String, &'static str> {
    if !raw.starts_with('/') {
        return Err("path must start with /");
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "path is not valid UTF-8")?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err("invalid character in path");
    }
    if decoded.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err("dot segments are not allowed");
    }
    Ok(decoded.into_owned())
}
