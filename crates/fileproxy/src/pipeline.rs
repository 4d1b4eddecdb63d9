//! The request pipeline. [`handle`] creates one [`RequestCtx`], routes the request
//! (SPEC §1), and hands every response to the logging phase
//! ([`crate::exchange::finish`]). The viewer flow of SPEC §2 is [`proxy`], which reads
//! as its phases, in the order of Pingora's `ProxyHttp`:
//!
//! 1. [`request_filter`] — the path and the query, parsed once;
//! 2. [`access_filter`] — the access policy's decision (whitelist → session →
//!    playlist token + count, SPEC §2 steps 3–6, §9);
//! 3. [`upstream_request`] — what is asked of the origin (SPEC §2 step 7);
//! 4. the origin fetch itself;
//! 5. [`response_filter`] — the origin's answer made ours (headers, error statuses,
//!    playlist rewriting, the live-transfer record).
//!
//! Every refusal or failure leaves as a [`Failure`] through [`crate::rescue`].

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access::canonical_path::CanonicalPath;
use crate::access::classify::FileClass;
use crate::access::{cors, query, AccessRequest, Allow, Decision, SessionOutcome};
use crate::admin;
use crate::app::{App, ConnInfo, Surface};
use crate::content_check;
use crate::ctx::{RequestCtx, ViewerFacts};
use crate::health;
use crate::metrics::Route;
use crate::origin::{FetchClass, OriginBody, OriginRequest};
use crate::protect::transfers::TransferMeta;
use crate::protect::PlaylistSigning;
use crate::request::header_str;
use crate::rescue::Failure;
use crate::response::{self, filter_origin_headers, Body};

use crate::clock::unix_secs as unix_now;

/// Viewer headers forwarded to the origin (SPEC §2 step 7).
const FORWARDED: [header::HeaderName; 5] = [
    header::USER_AGENT,
    header::RANGE,
    header::IF_RANGE,
    header::IF_MODIFIED_SINCE,
    header::IF_NONE_MATCH,
];

/// Handles one request; never fails (errors become 4xx/5xx responses).
pub async fn handle(app: Arc<App>, conn: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
    let mut ctx = RequestCtx::new(&app, conn, &req);
    let resp = dispatch(&app, &mut ctx, req).await;
    crate::exchange::finish(&app, ctx, resp)
}

/// Routes a request (SPEC §1); every refusal or failure of a route is answered by
/// [`Failure::into_response`], here and nowhere else.
async fn dispatch(app: &Arc<App>, ctx: &mut RequestCtx, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let conn = Arc::clone(&ctx.conn);
    let result = match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/health") => Ok(health::handle(app).await),
        _ if admin::is_admin_path(path) => match admin::refusal(app, &conn, &req) {
            Ok(()) => admin::route(app, &conn, req).await.map_err(Failure::from),
            Err(refused) => Err(refused.into()),
        },
        _ if conn.surface == Surface::Admin => Err(Failure::NotFound),
        _ if crate::api::is_api_path(path) => crate::api::route(app, ctx, req)
            .await
            .map_err(Failure::from),
        (&Method::OPTIONS, _) => preflight(app, &req),
        (&Method::GET | &Method::HEAD, _) => {
            let result = proxy(app, ctx, &req).await;
            let (mut resp, cors) = match result {
                Ok(resp) => (resp, true),
                Err(failure) => {
                    let cors = failure.carries_cors();
                    (failure.into_response(ctx), cors)
                }
            };
            if cors {
                add_cors(app, ctx.cors_origin.as_deref(), &mut resp);
            }
            Ok(resp)
        }
        _ => Err(Failure::MethodNotAllowed {
            allow: "GET, HEAD, OPTIONS",
        }),
    };
    result.unwrap_or_else(|failure| failure.into_response(ctx))
}

/// The viewer flow of SPEC §2, phase by phase.
async fn proxy(
    app: &Arc<App>,
    ctx: &mut RequestCtx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Failure> {
    let viewer = request_filter(ctx, req)?;
    let allow = access_filter(app, ctx, req, &viewer).await?;
    let signing = app.protect.playlist_signing(
        allow.class,
        viewer.uid.as_deref(),
        viewer.expires.as_deref(),
    );
    let origin_req = upstream_request(ctx, req, &viewer, allow.class, signing.is_some());
    // The segment cache (SPEC §12) answers here when it can, behind the policy.
    let answer = crate::cache::fetch(&app.cache, &app.origin, origin_req)
        .await
        .map_err(|error| Failure::Origin {
            error,
            path: viewer.origin_path.clone(),
        })?;
    let passed_playlist_checks = allow.playlist.is_some();
    let mut resp =
        response_filter(app, ctx, answer, &viewer, signing, passed_playlist_checks).await?;
    if let Some(c) = allow
        .set_cookie
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// What the viewer asked for, parsed once (SPEC §2, §4, §10).
#[derive(Debug)]
struct ViewerRequest {
    /// The one path the policy classifies and checks and the origin is asked for.
    path: CanonicalPath,
    /// [`CanonicalPath::origin_path`]: the canonical path re-encoded for the origin.
    origin_path: String,
    /// `uid`, `expires`, `token` query parameters, decoded.
    uid: Option<String>,
    expires: Option<String>,
    token: Option<String>,
    /// `{scheme}://{Host}{path}?{query}` as sent (SPEC §4).
    full_url: String,
    /// The `session_id_fileserver` cookie.
    session_cookie: Option<String>,
}

/// Phase 1: parse the path once (refusing, before any store or origin work, what is
/// ambiguous or no origin should see), the query and the cookie.
fn request_filter(ctx: &RequestCtx, req: &Request<Incoming>) -> Result<ViewerRequest, Failure> {
    let raw_path = req.uri().path().to_string();
    let path = CanonicalPath::parse(&raw_path).map_err(|why| Failure::BadPath {
        path: raw_path.clone(),
        why,
    })?;
    let h = req.headers();
    let raw_query = req.uri().query();
    let q = query::parse_query(raw_query.unwrap_or(""));
    let host = header_str(h, header::HOST)
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let scheme = if ctx.conn.tls { "https" } else { "http" };
    let full_url = query::full_url(scheme, host, &raw_path, raw_query);
    let session_cookie = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(query::session_cookie)
        .map(str::to_owned);
    Ok(ViewerRequest {
        uid: q.uid.map(|v| v.into_owned()),
        expires: q.expires.map(|v| v.into_owned()),
        token: q.token.map(|v| v.into_owned()),
        origin_path: path.origin_path(),
        path,
        full_url,
        session_cookie,
    })
}

/// Phase 2: ask the access policy; run or schedule its deferred store writes.
async fn access_filter(
    app: &Arc<App>,
    ctx: &mut RequestCtx,
    req: &Request<Incoming>,
    viewer: &ViewerRequest,
) -> Result<Allow, Failure> {
    let areq = AccessRequest {
        client_ip: ctx.client_ip,
        user_agent: ctx.user_agent(),
        path: viewer.path.as_str(),
        uid: viewer.uid.as_deref(),
        expires: viewer.expires.as_deref(),
        token: viewer.token.as_deref(),
        full_url: &viewer.full_url,
        session_cookie: viewer.session_cookie.as_deref(),
        now: unix_now(),
        head: req.method() == Method::HEAD,
    };
    let decision = app.policy.decide(&areq).await;
    let key_file = app.policy.is_protected_key(viewer.path.as_str());
    app.protect
        .observe(&areq, &decision, key_file, req.method().as_str());
    let mut allow = match decision {
        Decision::Allow(a) => a,
        Decision::Deny {
            status,
            body,
            reason,
        } => {
            return Err(Failure::Deny {
                status,
                body,
                reason,
                path: viewer.path.as_str().to_owned(),
            })
        }
        Decision::Redirect { location } => return Err(Failure::Redirect { location }),
    };
    ctx.viewer = Some(ViewerFacts::from_allow(&allow));
    ctx.route = Route::from_class(allow.class);
    let pending = std::mem::take(&mut allow.pending);
    if !pending.is_empty() {
        if matches!(allow.session, SessionOutcome::Created { .. }) {
            // The cookie we are about to send must name a session that exists.
            if let Err(e) = app.policy.complete(pending).await {
                tracing::warn!(error = %e, "session could not be created");
            }
        } else {
            let bg = Arc::clone(app);
            // Bounded: past `store.max_background_writes` the extension is dropped and counted.
            app.overload.spawn_background(&app.background, async move {
                if let Err(e) = bg.policy.complete(pending).await {
                    tracing::warn!(error = %e, "session extension failed");
                }
            });
        }
    }
    Ok(*allow)
}

/// Phase 3: the origin request — method, path and the forwarded viewer headers. A
/// playlist that will be rewritten is fetched whole (no range or conditionals, GET
/// even for HEAD).
fn upstream_request(
    ctx: &mut RequestCtx,
    req: &Request<Incoming>,
    viewer: &ViewerRequest,
    class: FileClass,
    rewriting: bool,
) -> OriginRequest {
    let forwarded = if rewriting {
        &FORWARDED[..1]
    } else {
        &FORWARDED[..]
    };
    let mut headers = HeaderMap::new();
    for name in forwarded.iter() {
        if let Some(v) = req.headers().get(name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    ctx.origin_path = Some(viewer.origin_path.clone());
    OriginRequest {
        method: if req.method() == Method::HEAD && !rewriting {
            Method::HEAD
        } else {
            Method::GET
        },
        path: viewer.origin_path.clone(),
        headers,
        client_ip: ctx.client_ip,
        class: if class == FileClass::Playlist {
            FetchClass::Playlist
        } else {
            FetchClass::Other
        },
    }
}

/// Phase 5: the origin's answer made ours — hop-by-hop and CORS headers dropped,
/// redirects to the origin rewritten (SPEC §10), error statuses passed through with an
/// empty body (SPEC §2 step 7), playlist content refused to a request that did not
/// pass the playlist checks (SPEC §10 content check), a key-protected playlist
/// rewritten (SPEC §9), and a streamed body noted as a live transfer.
async fn response_filter(
    app: &Arc<App>,
    ctx: &mut RequestCtx,
    answer: Response<OriginBody>,
    viewer: &ViewerRequest,
    signing: Option<PlaylistSigning>,
    passed_playlist_checks: bool,
) -> Result<Response<Body>, Failure> {
    let (mut parts, body) = answer.into_parts();
    filter_origin_headers(&mut parts.headers);
    app.origin
        .rewrite_redirect(parts.status, &mut parts.headers);
    if parts.status.as_u16() >= 400 {
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_ENCODING);
        if parts.status != StatusCode::RANGE_NOT_SATISFIABLE {
            parts.headers.remove(header::CONTENT_RANGE);
        }
        drop(body);
        app.protect.record_origin_status(
            ctx.client_ip,
            ctx.method.as_str(),
            &viewer.origin_path,
            ctx.uid(),
            parts.status.as_u16(),
            ctx.started,
        );
        return Ok(Response::from_parts(parts, response::empty()));
    }
    let head = ctx.method == Method::HEAD;
    let client_ip = ctx.client_ip;
    let origin_path = &viewer.origin_path;
    let body = content_check::guard(&parts, body, passed_playlist_checks, head, || {
        content_check::object_start(&app.cache, &app.origin, origin_path, client_ip)
    })
    .await
    .map_err(|why| Failure::ContentClass {
        path: viewer.path.as_str().to_owned(),
        why,
    })?;
    let body = match &signing {
        Some(s) if parts.status == StatusCode::OK => app
            .protect
            .rewrite(&mut parts, body, s, &viewer.origin_path, head)
            .await
            .map_err(|error| Failure::Rewrite {
                error,
                path: viewer.origin_path.clone(),
            })?,
        _ => body,
    };
    // Cut when the uid is revoked (SPEC §13, `crate::viewer_controls`).
    let cut = tokio_util::sync::CancellationToken::new();
    let body = crate::protect::transfers::CutBody::new(body, cut.clone()).boxed_unsync();
    ctx.live = Some(TransferMeta {
        method: ctx.method.to_string(),
        path: viewer.origin_path.clone(),
        uid: ctx.uid().map(str::to_owned),
        client_ip: ctx.client_ip,
        status: parts.status.as_u16(),
        total: http_body::Body::size_hint(&body).exact(),
        user_agent: ctx.user_agent().to_string(),
        started: ctx.started,
        cut,
    });
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

/// Adds FileProxy's CORS headers for the request's `Origin` (SPEC §1, `cors.allow_origins`).
fn add_cors(app: &App, origin: Option<&str>, resp: &mut Response<Body>) {
    for (name, value) in cors::response_headers(&app.config.cors, origin) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().append(name, v);
        }
    }
}

/// `OPTIONS`: CORS pre-flight for the configured origins.
fn preflight(app: &App, req: &Request<Incoming>) -> Result<Response<Body>, Failure> {
    let h = req.headers();
    let origin = header_str(h, header::ORIGIN);
    let acrh = header_str(h, header::ACCESS_CONTROL_REQUEST_HEADERS);
    match cors::preflight_headers(&app.config.cors, origin, acrh) {
        Some(headers) => {
            let mut r = response::empty_with(StatusCode::NO_CONTENT);
            for (name, value) in headers {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    r.headers_mut().append(name, v);
                }
            }
            Ok(r)
        }
        None => Err(Failure::CorsPreflight),
    }
}
