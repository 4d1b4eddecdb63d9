//! Front-end (JS) admission (SPEC §9): `GET|POST /api/js-whitelist` admits the
//! caller's own IP and User-Agent for one key path (or for all, when `js_path` is
//! empty) for `protect.js_whitelist_ttl_s`, at most `protect.js_max_paths` key paths per
//! (uid, UA, IP). Two ways to authorise it: the bearer whitelist key with a JSON body
//! `{uid, jsPath}`, or query parameters `uid, js_path, expires, sign` where `sign` is
//! HMAC-SHA256(`protect.js_whitelist_secret`, `"{uid}:{js_path}:{expires}"`) in hex or
//! base64url. A viewer request the path whitelist refused is allowed when such an
//! admission of its IP and UA matches its key path.
//!
//! Stored under `js_whitelist:{ip}:{ua_hash}` (one direct read per request, never a
//! scan) as `{client_ip, user_agent, ua_hash, created_at, uids: {uid: {all, paths:
//! [{key_path, created_at}], updated_at}}}`, at most [`MAX_UIDS_PER_ENTRY`] uids.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::client_ip::canonical_ip;
use super::compat;
use super::keypath::key_path;
use super::network::ua_hash;
use super::token::{verify_playlist_token, TokenError};
use super::whitelist::{admission_path, PathEntry};
use super::{ts, Policy};
use crate::store::{update_json, StoreError};

/// Uids kept per (IP, UA) entry; the least recently admitted beyond it is dropped.
pub const MAX_UIDS_PER_ENTRY: usize = 16;

/// `js_whitelist:{ip}:{ua_hash}` (the exact address, canonical form).
pub fn js_key(ip: IpAddr, ua_hash: &str) -> String {
    format!("js_whitelist:{}:{}", canonical_ip(ip), ua_hash)
}

/// What one uid is admitted to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsGrant {
    /// Every key path (the admission had an empty `js_path`).
    #[serde(default)]
    pub all: bool,
    /// Admitted key paths, oldest first.
    #[serde(default)]
    pub paths: Vec<PathEntry>,
    /// Last admission (Unix seconds).
    #[serde(default, deserialize_with = "compat::int")]
    pub updated_at: i64,
}

impl JsGrant {
    /// Whether this grant admits key path `kp` (an empty `kp` only under `all`).
    pub fn admits(&self, kp: &str) -> bool {
        self.all || (!kp.is_empty() && self.paths.iter().any(|p| p.key_path == kp))
    }
}

/// A front-end admission entry of one (IP, UA).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsEntry {
    /// The admitted address.
    #[serde(default, deserialize_with = "compat::string")]
    pub client_ip: String,
    /// The admitted User-Agent.
    #[serde(default, deserialize_with = "compat::string")]
    pub user_agent: String,
    /// Its hash.
    #[serde(default, deserialize_with = "compat::string")]
    pub ua_hash: String,
    /// First admission (Unix seconds).
    #[serde(default, deserialize_with = "compat::int")]
    pub created_at: i64,
    /// Grants by uid.
    #[serde(default)]
    pub uids: BTreeMap<String, JsGrant>,
    /// Fields we do not know, kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl JsEntry {
    /// Parses a stored entry; `None` when it is not one.
    pub fn parse(raw: &str) -> Option<Self> {
        serde_json::from_str(raw).ok()
    }

    /// The uid whose live grant admits `kp`: `prefer` when it does, else the most
    /// recently admitted one. Grants older than `ttl_s` at `now` are ignored.
    pub fn admitting(&self, kp: &str, prefer: Option<&str>, now: i64, ttl_s: i64) -> Option<&str> {
        let live = |g: &JsGrant| g.updated_at.saturating_add(ttl_s) >= now;
        if let Some((uid, g)) = prefer.and_then(|p| self.uids.get_key_value(p)) {
            if live(g) && g.admits(kp) {
                return Some(uid.as_str());
            }
        }
        self.uids
            .iter()
            .filter(|(_, g)| live(g) && g.admits(kp))
            .max_by_key(|(_, g)| g.updated_at)
            .map(|(u, _)| u.as_str())
    }
}

/// One front-end admission to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsAdmission {
    /// The uid.
    pub uid: String,
    /// The key path; `None` = all key paths.
    pub key_path: Option<String>,
    /// The caller's address.
    pub ip: IpAddr,
    /// The caller's User-Agent.
    pub user_agent: String,
}

/// Merges an admission: the uid's grant gains the key path (refreshed when present,
/// oldest dropped beyond `max_paths`) or becomes `all`; expired grants and uids beyond
/// [`MAX_UIDS_PER_ENTRY`] (least recently admitted first) are dropped.
pub fn merge_js(
    existing: Option<JsEntry>,
    adm: &JsAdmission,
    now: i64,
    max_paths: usize,
    ttl_s: i64,
) -> JsEntry {
    let mut e = existing.unwrap_or_else(|| JsEntry {
        client_ip: canonical_ip(adm.ip).to_string(),
        user_agent: adm.user_agent.clone(),
        ua_hash: ua_hash(&adm.user_agent),
        created_at: now,
        uids: BTreeMap::new(),
        extra: Map::new(),
    });
    e.uids
        .retain(|_, g| g.updated_at.saturating_add(ttl_s) >= now);
    let g = e.uids.entry(adm.uid.clone()).or_insert_with(|| JsGrant {
        all: false,
        paths: Vec::new(),
        updated_at: now,
    });
    g.updated_at = now;
    match &adm.key_path {
        None => g.all = true,
        Some(kp) => {
            g.paths.retain(|p| &p.key_path != kp);
            g.paths.push(PathEntry {
                key_path: kp.clone(),
                created_at: now,
                extra: Map::new(),
            });
            let max = max_paths.max(1);
            while g.paths.len() > max {
                g.paths.remove(0);
            }
        }
    }
    while e.uids.len() > MAX_UIDS_PER_ENTRY {
        let oldest = e
            .uids
            .iter()
            .filter(|(u, _)| **u != adm.uid)
            .min_by_key(|(_, g)| g.updated_at)
            .map(|(u, _)| u.clone());
        match oldest {
            Some(u) => {
                e.uids.remove(&u);
            }
            None => break,
        }
    }
    if e.created_at == 0 {
        e.created_at = now;
    }
    e
}

/// Why a front-end admission was refused; each maps to a status and `{"error": …}`.
#[derive(Debug, thiserror::Error)]
pub enum JsError {
    /// Neither a bearer key nor a signature (403).
    #[error("missing API key or signature")]
    NoCredentials,
    /// Wrong bearer key (403).
    #[error("invalid API key")]
    Unauthorized,
    /// The signature does not match or `expires` is not a timestamp (403).
    #[error("invalid signature")]
    BadSignature,
    /// `expires` has passed (403).
    #[error("signature expired")]
    Expired,
    /// The body is not a JSON object (400).
    #[error("invalid JSON body")]
    BadJson,
    /// A required field or parameter is missing (400).
    #[error("missing required field: {0}")]
    MissingField(&'static str),
    /// A non-empty `js_path` names no key path (400).
    #[error("js_path has no key path")]
    NoKeyPath,
    /// The store failed (503).
    #[error("whitelist store unavailable")]
    Store(#[from] StoreError),
}

impl JsError {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            JsError::NoCredentials
            | JsError::Unauthorized
            | JsError::BadSignature
            | JsError::Expired => 403,
            JsError::Store(_) => 503,
            _ => 400,
        }
    }

    /// The JSON body `{"error": "<message>"}`.
    pub fn body(&self) -> Value {
        json!({ "error": self.to_string() })
    }
}

/// The key path a `js_path` admits: empty → `None` (all key paths); a path or URL →
/// its key path (SPEC §2.1); a bare name without `/` → that name itself.
pub fn js_key_path(js_path: &str) -> Result<Option<String>, JsError> {
    let p = js_path.trim();
    if p.is_empty() {
        return Ok(None);
    }
    if !p.contains('/') {
        return Ok(Some(p.to_string()));
    }
    let kp = key_path(&admission_path(p)).to_string();
    if kp.is_empty() {
        Err(JsError::NoKeyPath)
    } else {
        Ok(Some(kp))
    }
}

/// How a front-end admission is authorised.
#[derive(Debug, Clone, Copy)]
pub enum JsCredentials<'a> {
    /// `Authorization` value and the JSON body `{uid, jsPath}`.
    Bearer {
        /// The `Authorization` header value.
        authorization: &'a str,
        /// The request body.
        body: &'a [u8],
    },
    /// Query parameters `uid, js_path, expires, sign`.
    Signed {
        /// `uid`.
        uid: Option<&'a str>,
        /// `js_path` (absent = empty).
        js_path: Option<&'a str>,
        /// `expires`.
        expires: Option<&'a str>,
        /// `sign`.
        sign: Option<&'a str>,
    },
}

/// Checks a front-end signature: HMAC-SHA256(secret, `"{uid}:{js_path}:{expires}"`),
/// hex or base64url, compared in constant time; `expires` must not have passed.
pub fn verify_js_sign(
    secret: &[u8],
    uid: &str,
    js_path: &str,
    expires: &str,
    sign: &str,
    now: u64,
) -> Result<(), JsError> {
    if secret.is_empty() {
        return Err(JsError::BadSignature);
    }
    verify_playlist_token(secret, uid, js_path, expires, sign, now).map_err(|e| match e {
        TokenError::Expired => JsError::Expired,
        _ => JsError::BadSignature,
    })
}

fn required<'a>(v: Option<&'a str>, name: &'static str) -> Result<&'a str, JsError> {
    v.filter(|s| !s.is_empty())
        .ok_or(JsError::MissingField(name))
}

impl Policy {
    /// Authorises a front-end admission and returns (uid, js_path).
    fn js_credentials(&self, c: JsCredentials<'_>, now: u64) -> Result<(String, String), JsError> {
        match c {
            JsCredentials::Bearer {
                authorization,
                body,
            } => {
                if !self.whitelist_key_ok(Some(authorization)) {
                    return Err(JsError::Unauthorized);
                }
                let v: Value = serde_json::from_slice(body).map_err(|_| JsError::BadJson)?;
                let obj = v.as_object().ok_or(JsError::BadJson)?;
                let uid = obj
                    .get("uid")
                    .map(compat::value_to_string)
                    .unwrap_or_default();
                if uid.trim().is_empty() {
                    return Err(JsError::MissingField("uid"));
                }
                let js_path = obj
                    .get("jsPath")
                    .map(compat::value_to_string)
                    .unwrap_or_default();
                Ok((uid, js_path))
            }
            JsCredentials::Signed {
                uid,
                js_path,
                expires,
                sign,
            } => {
                let sign = sign
                    .filter(|s| !s.is_empty())
                    .ok_or(JsError::NoCredentials)?;
                let uid = required(uid, "uid")?;
                let expires = required(expires, "expires")?;
                let js_path = js_path.unwrap_or("");
                verify_js_sign(&self.rules.js_secret, uid, js_path, expires, sign, now)?;
                Ok((uid.to_string(), js_path.to_string()))
            }
        }
    }

    /// `GET|POST /api/js-whitelist` (SPEC §9): authorises the call, then admits the
    /// caller's `ip` and `user_agent` for the key path of `js_path` (all when empty).
    pub async fn admit_js(
        &self,
        creds: JsCredentials<'_>,
        ip: IpAddr,
        user_agent: &str,
        now: u64,
    ) -> Result<Value, JsError> {
        let (uid, js_path) = self.js_credentials(creds, now)?;
        let adm = JsAdmission {
            key_path: js_key_path(&js_path)?,
            uid,
            ip: canonical_ip(ip),
            user_agent: user_agent.to_string(),
        };
        let uah = ua_hash(user_agent);
        let key = js_key(adm.ip, &uah);
        let ttl_s = ts(self.rules.js_ttl.as_secs());
        let max_paths = self.rules.js_max_paths;
        let mut written: Option<JsEntry> = None;
        update_json(&*self.store, &key, self.rules.js_ttl, |cur| {
            let e = merge_js(
                cur.and_then(JsEntry::parse),
                &adm,
                ts(now),
                max_paths,
                ttl_s,
            );
            let raw = serde_json::to_string(&e).ok()?;
            written = Some(e);
            Some(raw)
        })
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "front-end admission failed: store"))?;
        // Index it under the uid so `POST /api/revoke` finds it without a scan (§13).
        if let Err(e) =
            super::uid_index::index_js(&*self.store, &adm.uid, &key, self.rules.js_ttl).await
        {
            tracing::warn!(error = %e, "front-end admission not indexed for revocation");
        }
        let grant = written.as_ref().and_then(|e| e.uids.get(&adm.uid));
        let net = ipnet::IpNet::from(adm.ip);
        self.log_admission(
            "js",
            &adm.uid,
            &net,
            &uah,
            adm.key_path.as_deref().unwrap_or("*"),
            &key,
            now,
        )
        .await;
        Ok(json!({
            "message": "Front-end access granted",
            "uid": adm.uid,
            "key_path": adm.key_path,
            "all": grant.is_some_and(|g| g.all),
            "paths": grant.map(|g| g.paths.iter().map(|p| p.key_path.clone()).collect::<Vec<_>>()).unwrap_or_default(),
            "client_ip": adm.ip.to_string(),
            "ua_hash": uah,
            "ttl": self.rules.js_ttl.as_secs(),
            "max_paths": max_paths,
        }))
    }

    /// `GET /api/js-whitelist/check`: whether the caller's IP and UA hold a live
    /// front-end admission of `uid` (any uid when empty) for `js_path`'s key path.
    /// Returns (allowed, JSON).
    pub async fn check_js(
        &self,
        ip: IpAddr,
        user_agent: &str,
        js_path: &str,
        uid: Option<&str>,
        now: u64,
    ) -> Result<(bool, Value), JsError> {
        let kp = js_key_path(js_path)?.unwrap_or_default();
        let uah = ua_hash(user_agent);
        let raw = self.store.get(&js_key(ip, &uah)).await?;
        let entry = raw.as_deref().and_then(JsEntry::parse);
        let uid = uid.filter(|u| !u.is_empty());
        let ttl_s = ts(self.rules.js_ttl.as_secs());
        let matched = entry.as_ref().and_then(|e| match uid {
            Some(u) => e
                .uids
                .get(u)
                .filter(|g| g.updated_at.saturating_add(ttl_s) >= ts(now) && g.admits(&kp))
                .map(|_| u.to_string()),
            None => e.admitting(&kp, None, ts(now), ttl_s).map(str::to_string),
        });
        Ok((
            matched.is_some(),
            json!({
                "allowed": matched.is_some(),
                "uid": matched.or(uid.map(str::to_string)),
                "key_path": kp,
                "client_ip": canonical_ip(ip).to_string(),
                "ua_hash": uah,
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::token::{hex_token, playlist_token};
    use proptest::prelude::*;

    fn adm(uid: &str, kp: Option<&str>) -> JsAdmission {
        JsAdmission {
            uid: uid.into(),
            key_path: kp.map(str::to_string),
            ip: "1.2.3.4".parse().unwrap(),
            user_agent: "UA".into(),
        }
    }

    #[test]
    fn key_paths_of_js_path() {
        assert_eq!(js_key_path("").unwrap(), None);
        assert_eq!(js_key_path("  ").unwrap(), None);
        assert_eq!(js_key_path("abc").unwrap().as_deref(), Some("abc"));
        assert_eq!(
            js_key_path("/vod/2024-05-01/abc/720p/i.m3u8")
                .unwrap()
                .as_deref(),
            Some("abc")
        );
        assert_eq!(
            js_key_path("https://h/media/demo/index.m3u8?x=1")
                .unwrap()
                .as_deref(),
            Some("demo")
        );
        assert!(matches!(js_key_path("/i.m3u8"), Err(JsError::NoKeyPath)));
    }

    #[test]
    fn merge_caps_paths_and_all() {
        let mut e = None;
        for (t, kp) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
            e = Some(merge_js(e, &adm("u", Some(kp)), t, 3, 3600));
        }
        let e = e.unwrap();
        let g = &e.uids["u"];
        let names: Vec<&str> = g.paths.iter().map(|p| p.key_path.as_str()).collect();
        assert_eq!(names, ["b", "c", "d"]);
        assert_eq!(e.admitting("b", None, 5, 3600), Some("u"));
        assert_eq!(e.admitting("a", None, 5, 3600), None);
        assert_eq!(e.admitting("", None, 5, 3600), None);
        // Expired grants no longer admit, and are dropped on the next merge.
        assert_eq!(e.admitting("b", None, 4000, 3600), None);
        let e = merge_js(Some(e), &adm("v", None), 5000, 3, 3600);
        assert!(!e.uids.contains_key("u"));
        assert_eq!(e.admitting("zzz", None, 5000, 3600), Some("v"));
        assert_eq!(e.admitting("", Some("v"), 5000, 3600), Some("v"));
        // A preferred uid wins when it admits; otherwise the most recent does.
        let e = merge_js(Some(e), &adm("w", Some("k")), 5001, 3, 3600);
        assert_eq!(e.admitting("k", None, 5001, 3600), Some("w"));
        assert_eq!(e.admitting("k", Some("v"), 5001, 3600), Some("v"));
        assert_eq!(e.admitting("k", Some("nobody"), 5001, 3600), Some("w"));
    }

    #[test]
    fn uid_count_is_bounded() {
        let mut e = None;
        for i in 0..(MAX_UIDS_PER_ENTRY as i64 + 5) {
            e = Some(merge_js(e, &adm(&format!("u{i}"), Some("k")), i, 3, 3600));
        }
        let e = e.unwrap();
        assert_eq!(e.uids.len(), MAX_UIDS_PER_ENTRY);
        assert!(!e.uids.contains_key("u0"));
        assert!(e.uids.contains_key(&format!("u{}", MAX_UIDS_PER_ENTRY + 4)));
    }

    #[test]
    fn signatures() {
        let s = b"js-secret";
        let h = hex_token(s, "u", "/m/abc/i.m3u8", "100");
        let b = playlist_token(s, "u", "/m/abc/i.m3u8", "100");
        assert!(verify_js_sign(s, "u", "/m/abc/i.m3u8", "100", &h, 100).is_ok());
        assert!(verify_js_sign(s, "u", "/m/abc/i.m3u8", "100", &b, 0).is_ok());
        assert!(matches!(
            verify_js_sign(s, "u", "/m/abc/i.m3u8", "100", &h, 101),
            Err(JsError::Expired)
        ));
        assert!(matches!(
            verify_js_sign(s, "u2", "/m/abc/i.m3u8", "100", &h, 0),
            Err(JsError::BadSignature)
        ));
        assert!(matches!(
            verify_js_sign(b"", "u", "/m/abc/i.m3u8", "100", &h, 0),
            Err(JsError::BadSignature)
        ));
        assert_eq!(JsError::Expired.status(), 403);
        assert_eq!(JsError::MissingField("uid").status(), 400);
    }

    proptest! {
        #[test]
        fn merge_bounds(ops in proptest::collection::vec((0u8..20, proptest::option::of(0u8..6)), 1..60), max in 1usize..4) {
            let mut e = None;
            for (t, (u, k)) in ops.iter().enumerate() {
                let kp = k.map(|k| format!("k{k}"));
                let next = merge_js(e, &adm(&format!("u{u}"), kp.as_deref()), t as i64, max, 3600);
                prop_assert!(next.uids.len() <= MAX_UIDS_PER_ENTRY);
                prop_assert!(next.uids.values().all(|g| g.paths.len() <= max));
                let uid = format!("u{u}");
                match &kp {
                    Some(kp) => prop_assert_eq!(next.admitting(kp, Some(&uid), t as i64, 3600), Some(uid.as_str())),
                    None => prop_assert!(next.uids[&uid].all),
                }
                e = Some(next);
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = JsEntry::parse(&s);
            let _ = js_key_path(&s);
            let _ = verify_js_sign(b"k", &s, &s, &s, &s, 0);
        }
    }
}
