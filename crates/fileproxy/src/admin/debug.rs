//! `GET /debug/…`: explain a decision of the access policy (reads only).
//!
//! * `/debug/browser?ua=` — UA class, browser name, playlist limit and window.
//! * `/debug/cidr?ip=&cidr=` — whether an address is in a network, and the network an
//!   admission of that address is stored under.
//! * `/debug/ip-whitelist?ip=&path=` — which whitelist entry (if any) admits the path.
//! * `/debug/session?uid=&path=` — which session the lookup of SPEC §2 step 5 finds.
//! * `/debug/uid?uid=` — a uid's viewer controls (SPEC §13): live streams, quota use,
//!   whether it is revoked.
//!
//! The User-Agent is the `ua` parameter, else the request's own; `/debug/session`
//! uses the `ip` parameter, else the caller's address, and the caller's session
//! cookie. Bad input → `400 {"error": …}`; store unreachable → `503 {"error": …}`
//! (an [`AdminError`], answered by the rescue module).

use std::net::IpAddr;

use http::header;
use http::{Request, Response, StatusCode};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::json;

use crate::access::client_ip::canonical_ip;
use crate::access::query;
use crate::app::{App, ConnInfo};
use crate::config::parse_net;
use crate::response::{self, Body};

use super::AdminError;
use crate::request::param as query_param;

/// Answers a `/debug/…` route.
pub async fn handle<B>(
    app: &App,
    conn: &ConnInfo,
    req: &Request<B>,
) -> Result<Response<Body>, AdminError> {
    let ua = query_param(req, "ua").unwrap_or_else(|| {
        req.headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    });
    let result = match req.uri().path() {
        "/debug/browser" => Ok(app.policy.explain_browser(&ua)),
        "/debug/cidr" => cidr(req),
        "/debug/ip-whitelist" => match (ip_param(req, "ip", None), path_param(req)) {
            (Ok(ip), Ok(path)) => store_answer(app.policy.explain_whitelist(ip, &ua, &path).await),
            (Err(r), _) | (_, Err(r)) => Err(r),
        },
        "/debug/session" => {
            let caller = crate::access::client_ip::client_ip_from_headers(
                conn.peer.ip(),
                req.headers(),
                &app.trusted,
            );
            let cookie = req
                .headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(query::session_cookie);
            let uid = query_param(req, "uid").filter(|u| !u.is_empty());
            match (ip_param(req, "ip", Some(caller)), path_param(req)) {
                (Ok(ip), Ok(path)) => store_answer(
                    app.policy
                        .explain_session(ip, &ua, uid.as_deref(), &path, cookie)
                        .await,
                ),
                (Err(r), _) | (_, Err(r)) => Err(r),
            }
        }
        "/debug/uid" => match query_param(req, "uid").filter(|u| !u.is_empty()) {
            Some(uid) => store_answer(
                app.policy
                    .explain_uid(&uid, crate::clock::unix_secs())
                    .await,
            ),
            None => Err(AdminError::BadRequest("missing uid".into())),
        },
        _ => Err(AdminError::UnknownDebugRoute),
    };
    result.map(|v| response::json(StatusCode::OK, &v))
}

fn store_answer(
    r: Result<serde_json::Value, crate::store::StoreError>,
) -> Result<serde_json::Value, AdminError> {
    r.map_err(|e| AdminError::DebugStore(e.to_string()))
}

/// The IP address in parameter `name` (or `default` when absent).
fn ip_param<B>(
    req: &Request<B>,
    name: &str,
    default: Option<IpAddr>,
) -> Result<IpAddr, AdminError> {
    match query_param(req, name).filter(|v| !v.trim().is_empty()) {
        Some(v) => v
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| AdminError::BadRequest(format!("{name}: {v:?} is not an IP address"))),
        None => default.ok_or_else(|| AdminError::BadRequest(format!("{name}: required"))),
    }
}

/// The `path` parameter (required; a leading `/` is added when missing).
fn path_param<B>(req: &Request<B>) -> Result<String, AdminError> {
    let p = query_param(req, "path").unwrap_or_default();
    let p = p.trim();
    if p.is_empty() {
        return Err(AdminError::BadRequest(
            "path: required, e.g. path=/vod/abc/index.m3u8".into(),
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(AdminError::BadRequest(
            "path: control characters are not allowed".into(),
        ));
    }
    Ok(if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    })
}

/// The network an admission of `ip` is stored under (SPEC §3: IPv4 → /24, IPv6 as given).
fn admission_network(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(v4) => Ipv4Net::new(v4, 24).map(|n| IpNet::V4(n.trunc())),
        IpAddr::V6(v6) => Ipv6Net::new(v6, 128).map(IpNet::V6),
    }
    .unwrap_or_else(|_| IpNet::from(ip))
}

fn cidr<B>(req: &Request<B>) -> Result<serde_json::Value, AdminError> {
    let ip = canonical_ip(ip_param(req, "ip", None)?);
    let raw = query_param(req, "cidr").unwrap_or_default();
    if raw.trim().is_empty() {
        return Err(AdminError::BadRequest(
            "cidr: required, e.g. cidr=10.0.0.0/8".into(),
        ));
    }
    let net = parse_net(&raw).ok_or_else(|| {
        AdminError::BadRequest(format!("cidr: {raw:?} is not an IP address or CIDR"))
    })?;
    Ok(json!({
        "ip": ip.to_string(),
        "cidr": raw.trim(),
        "network": net.to_string(),
        "prefix_len": net.prefix_len(),
        "matches": net.contains(&ip),
        "admission_network": admission_network(ip).to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_explains() {
        let req = Request::get("/debug/cidr?ip=10.1.2.3&cidr=10.0.0.0/8")
            .body(())
            .unwrap();
        let v = cidr(&req).unwrap();
        assert_eq!(v["matches"], true);
        assert_eq!(v["admission_network"], "10.1.2.0/24");
        let req = Request::get("/debug/cidr?ip=2001:db8::1&cidr=2001:db9::/32")
            .body(())
            .unwrap();
        let v = cidr(&req).unwrap();
        assert_eq!(v["matches"], false);
        assert_eq!(v["admission_network"], "2001:db8::1/128");
    }

    #[test]
    fn bad_input_is_400() {
        for uri in [
            "/debug/cidr?ip=nope&cidr=10.0.0.0/8",
            "/debug/cidr?ip=10.0.0.1&cidr=10.0.0.0/99",
            "/debug/cidr?ip=10.0.0.1",
        ] {
            let req = Request::get(uri).body(()).unwrap();
            assert!(
                matches!(cidr(&req), Err(AdminError::BadRequest(_))),
                "{uri}"
            );
        }
        let req = Request::get("/debug/x?path=").body(()).unwrap();
        assert!(matches!(path_param(&req), Err(AdminError::BadRequest(_))));
    }
}
