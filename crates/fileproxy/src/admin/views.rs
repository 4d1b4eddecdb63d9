//! Operator views of SPEC §9 (admin only; behind [`super::refusal`]): bounded lists,
//! newest first, `?limit=` (default [`DEFAULT_LIMIT`], at most
//! `protect.event_log_capacity`).
//!
//! | route | shows | source |
//! |---|---|---|
//! | `/api/access-logs/recent` | requests answered (transfers, refusals, origin errors) | this process |
//! | `/api/access-logs/denied` | refused viewer requests | store list (all processes) |
//! | `/api/access-logs/summary` | totals, status/outcome counts, top paths/uids/IPs | this process |
//! | `/api/replay-logs` | token and key replays | store list |
//! | `/api/key-access-logs` | key-file requests under key protection | store list |
//! | `/active-transfers` | live transfers: bytes, speed, progress, first-byte latency | this process |
//! | `/whitelist-info` | admitted entries (whitelist, static, front-end), live or gone; `?uid=` adds its pairs | store |

use std::collections::HashSet;

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::access::pairs::{pairs_key, parse_pairs};
use crate::access::protect_rules::log_keys;
use crate::app::App;
use crate::protect::events::LogKind;
use crate::request::query_param;
use crate::response::{self, Body};

use super::AdminError;

/// Items returned when `?limit=` is absent.
pub const DEFAULT_LIMIT: usize = 100;

/// Whether `path` is one of the operator views.
pub fn is_view_path(path: &str) -> bool {
    matches!(
        path,
        "/api/access-logs/recent"
            | "/api/access-logs/denied"
            | "/api/access-logs/summary"
            | "/api/replay-logs"
            | "/api/key-access-logs"
            | "/active-transfers"
            | "/whitelist-info"
    )
}

/// The `?limit=` of a view, clamped to `1..=cap`.
pub fn limit_of(query: &str, cap: usize) -> usize {
    query_param(query, "limit")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, cap.max(1))
}

fn list_body(items: Vec<Value>, limit: usize, source: &str, cap: usize) -> Value {
    json!({
        "count": items.len(),
        "limit": limit,
        "capacity": cap,
        "source": source,
        "items": items,
    })
}

/// Answers an operator view; the caller has checked [`is_view_path`] and the admin gate.
pub async fn route<B>(app: &App, req: &Request<B>) -> Result<Response<Body>, AdminError> {
    let query = req.uri().query().unwrap_or("");
    let events = &app.protect.events;
    let cap = events.capacity();
    let limit = limit_of(query, cap);
    let kind = match req.uri().path() {
        "/api/access-logs/recent" => Some(LogKind::Recent),
        "/api/access-logs/denied" => Some(LogKind::Denied),
        "/api/replay-logs" => Some(LogKind::Replay),
        "/api/key-access-logs" => Some(LogKind::KeyAccess),
        _ => None,
    };
    if let Some(kind) = kind {
        let (items, source) = events.list(kind, limit).await;
        return Ok(response::json(
            StatusCode::OK,
            &list_body(items, limit, source, cap),
        ));
    }
    match req.uri().path() {
        "/api/access-logs/summary" => Ok(response::json(StatusCode::OK, &events.summary(limit))),
        "/active-transfers" => {
            let items = app.protect.transfers.snapshot(limit);
            let mut body = list_body(items, limit, "memory", cap);
            if let Some(o) = body.as_object_mut() {
                o.insert("active".into(), json!(app.protect.transfers.len()));
            }
            Ok(response::json(StatusCode::OK, &body))
        }
        "/whitelist-info" => whitelist_info(app, query, limit).await,
        p => Err(AdminError::NotFound {
            path: p.to_string(),
        }),
    }
}

/// `/whitelist-info`: the newest admissions (from the capped admission log), each with
/// its entry as stored now (`live: false` once expired, replaced or evicted).
async fn whitelist_info(
    app: &App,
    query: &str,
    limit: usize,
) -> Result<Response<Body>, AdminError> {
    let store = &app.store;
    let unavailable = |error| AdminError::ViewStore {
        view: "whitelist-info",
        error,
    };
    let raw = match store.list_range(log_keys::ADMISSIONS, limit).await {
        Ok(r) => r,
        Err(e) => return Err(unavailable(e)),
    };
    let mut seen = HashSet::new();
    let admissions: Vec<Value> = raw
        .iter()
        .filter_map(|s| serde_json::from_str::<Value>(s).ok())
        .filter(|v| {
            v.get("key")
                .and_then(Value::as_str)
                .is_some_and(|k| seen.insert(k.to_string()))
        })
        .collect();
    let keys: Vec<String> = admissions
        .iter()
        .filter_map(|v| v.get("key").and_then(Value::as_str).map(str::to_string))
        .collect();
    let values = if keys.is_empty() {
        Vec::new()
    } else {
        match store.get_many(&keys).await {
            Ok(v) => v,
            Err(e) => return Err(unavailable(e)),
        }
    };
    let items: Vec<Value> = admissions
        .into_iter()
        .zip(values)
        .map(|(mut a, v)| {
            let entry = v
                .as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok());
            if let Some(o) = a.as_object_mut() {
                o.insert("live".into(), json!(entry.is_some()));
                o.insert("entry".into(), entry.unwrap_or(Value::Null));
            }
            a
        })
        .collect();
    let cfg = &app.config;
    let mut body = json!({
        "count": items.len(),
        "limit": limit,
        "items": items,
        "fixed_ip_whitelist": cfg.auth.fixed_ip_whitelist,
        "settings": {
            "ip_access_ttl_s": cfg.auth.ip_access_ttl_s,
            "max_paths_per_cidr": cfg.auth.max_paths_per_cidr,
            "max_pairs_per_uid": cfg.protect.max_pairs_per_uid,
            "static_whitelist": cfg.protect.static_whitelist,
            "static_suffixes": cfg.protect.static_suffixes,
            "js_whitelist": cfg.protect.js_whitelist,
            "key_protection": cfg.protect.key_protection,
            "token_replay": cfg.protect.token_replay,
        },
    });
    if let Some(uid) = query_param(query, "uid").filter(|u| !u.is_empty()) {
        let pairs = match store.get(&pairs_key(&uid)).await {
            Ok(v) => v.map(|r| parse_pairs(&r)).unwrap_or_default(),
            Err(e) => return Err(unavailable(e)),
        };
        if let Some(o) = body.as_object_mut() {
            o.insert("uid".into(), json!(uid));
            o.insert("uid_pairs".into(), json!(pairs));
        }
    }
    Ok(response::json(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(limit_of("", 1000), DEFAULT_LIMIT);
        assert_eq!(limit_of("limit=5", 1000), 5);
        assert_eq!(limit_of("limit=0", 1000), 1);
        assert_eq!(limit_of("limit=99999", 1000), 1000);
        assert_eq!(limit_of("limit=x", 50), 50);
        assert!(is_view_path("/whitelist-info"));
        assert!(!is_view_path("/metrics"));
    }
}
