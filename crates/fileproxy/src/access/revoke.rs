//! `POST /api/revoke` `{uid, key_path?}` (SPEC §13) as policy logic: finds what the uid
//! was admitted to through index keys — `uid_ua_ip_pairs:{uid}` (its (network, UA)
//! pairs, hence its `ip_cidr_access` and `static_file_access` entries),
//! `uid_sessions:{uid}` (ids of the sessions we created for it) and
//! `uid_js_admissions:{uid}` (its front-end admission keys) — never a scan; marks the
//! uid revoked in the feed of [`super::controls`] first (so every instance refuses it
//! within a poll), then deletes those entries (only key path `key_path` when given).
//! A later `POST /api/whitelist` for the uid lifts the mark ([`Policy::lift_revocation`]).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Value};

use super::controls::{bump_feed, parse_feed, viewer_tag, RevokedUid, REVOCATIONS_KEY};
use super::js::JsEntry;
use super::keypath::key_path;
use super::network::{ua_hash, whitelist_key};
use super::pairs::{pairs_key, parse_pairs};
use super::session::{
    ip_ua_session_key, latest_key, session_key, user_active_session_key, LatestSession,
    SessionRecord,
};
use super::static_file::{static_key, StaticEntry};
use super::uid_index::{uid_js_key, uid_sessions_key, INDEX_CAP};
use super::whitelist::WhitelistEntry;
use super::{ts, Policy};
use crate::store::{update_json, StoreError, Write};

/// Why a revocation was refused; each maps to a status and `{"error": …}`.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// Wrong or missing bearer key (403).
    #[error("invalid API key")]
    Unauthorized,
    /// The body is not a JSON object (400).
    #[error("invalid JSON body")]
    BadJson,
    /// `uid` missing or empty (400).
    #[error("missing required field: uid")]
    MissingUid,
    /// A non-empty `key_path` names no key path (400).
    #[error("key_path has no key path")]
    BadKeyPath,
    /// The store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RevokeError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            RevokeError::Unauthorized => 403,
            RevokeError::BadJson | RevokeError::MissingUid | RevokeError::BadKeyPath => 400,
            RevokeError::Store(_) => 503,
        }
    }

    /// JSON body (store details stay in the log).
    pub fn body(&self) -> Value {
        match self {
            RevokeError::Store(_) => json!({"error": "store unavailable"}),
            e => json!({"error": e.to_string()}),
        }
    }
}

/// What a revocation deleted (the `revoked` object of the answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RevokeCounts {
    /// Key paths taken out of whitelist entries.
    pub whitelist_paths: usize,
    /// Sessions deleted.
    pub sessions: usize,
    /// (network, UA) pairs dropped.
    pub pairs: usize,
    /// Front-end admissions withdrawn.
    pub js_admissions: usize,
}

/// The outcome of a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The uid.
    pub uid: String,
    /// The key path revoked, `None` = all.
    pub key_path: Option<String>,
    /// What was deleted.
    pub counts: RevokeCounts,
    /// The mark now in force.
    pub mark: RevokedUid,
}

impl Revoked {
    /// The `200` JSON, given the transfers cut on this instance.
    pub fn response(&self, transfers_cut: usize) -> Value {
        json!({
            "uid": self.uid,
            "key_path": self.key_path,
            "revoked": self.counts,
            "transfers_cut": transfers_cut,
            "until": self.mark.until,
        })
    }
}

/// Parses `{uid, key_path?}` (a numeric uid is accepted; `key_path` may be a key
/// path or any path holding one).
pub fn parse_revoke(body: &[u8]) -> Result<(String, Option<String>), RevokeError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| RevokeError::BadJson)?;
    let obj = v.as_object().ok_or(RevokeError::BadJson)?;
    let uid = match obj.get("uid") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(RevokeError::MissingUid),
    };
    let kp = match obj.get("key_path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => {
            let s = s.trim();
            let kp = if s.contains('/') { key_path(s) } else { s };
            if kp.is_empty() {
                return Err(RevokeError::BadKeyPath);
            }
            Some(kp.to_string())
        }
        Some(_) => return Err(RevokeError::BadKeyPath),
    };
    Ok((uid, kp))
}

fn net_of(s: &str) -> Option<IpNet> {
    let s = s.trim().replace('_', "/");
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl Policy {
    /// `POST /api/revoke` after the bearer key was checked: marks `uid` revoked and
    /// deletes its admissions and sessions (SPEC §13). The caller cuts live transfers.
    pub async fn revoke(&self, body: &[u8], now: u64) -> Result<Revoked, RevokeError> {
        let (uid, kp) = parse_revoke(body)?;
        let store = &*self.store;
        let now_i = ts(now);
        // 1. Reads: the uid's pairs, session ids and front-end keys.
        let pairs = store
            .get(&pairs_key(&uid))
            .await?
            .map(|r| parse_pairs(&r))
            .unwrap_or_default();
        let mut ids = store.list_range(&uid_sessions_key(&uid), INDEX_CAP).await?;
        dedup(&mut ids);
        let mut js_keys = store.list_range(&uid_js_key(&uid), INDEX_CAP).await?;
        dedup(&mut js_keys);
        let session_keys: Vec<String> = ids.iter().map(|i| session_key(i)).collect();
        let sessions: Vec<(String, SessionRecord)> = store
            .get_many(&session_keys)
            .await?
            .into_iter()
            .zip(&ids)
            .filter_map(|(raw, id)| Some((id.clone(), SessionRecord::parse(&raw?)?)))
            .filter(|(_, s)| s.uid == uid && kp.as_ref().map_or(true, |k| &s.key_path == k))
            .collect();
        let mut viewers = Vec::new();
        for p in &pairs {
            if let Some(net) = net_of(&p.ip_pattern) {
                viewers.push(viewer_tag(&net, &p.ua_hash));
            }
        }
        for (_, s) in &sessions {
            if let Some(net) = net_of(&s.client_ip) {
                viewers.push(viewer_tag(&net, &ua_hash(&s.user_agent)));
            }
        }
        // 2. The mark first: from the next poll on, every instance refuses the uid.
        let mark = RevokedUid {
            all: kp.is_none(),
            key_paths: kp.iter().cloned().collect(),
            at: now_i,
            until: now_i.saturating_add(ts(self.ip_access_ttl.as_secs())),
            viewers,
        };
        let mut merged = mark.clone();
        let mut feed = None;
        update_json(store, REVOCATIONS_KEY, self.ip_access_ttl, |cur| {
            let mut map = parse_feed(cur, now_i);
            match map.get_mut(&uid) {
                Some(r) => r.merge(mark.clone()),
                None => {
                    map.insert(uid.clone(), mark.clone());
                }
            }
            merged = map.get(&uid).cloned().unwrap_or_else(|| mark.clone());
            let raw = serde_json::to_string(&map).ok()?;
            feed = Some(map);
            Some(raw)
        })
        .await?;
        let seq = bump_feed(store).await?;
        if let Some(map) = feed {
            self.controls.revocations.replace(map, seq);
        }
        // 3. Deletions.
        let whitelist_paths = self.revoke_entries(&uid, kp.as_deref(), &pairs).await?;
        let (js_admissions, js_viewers) = self.revoke_js(&uid, kp.as_deref(), &js_keys).await?;
        let mut counts = RevokeCounts {
            whitelist_paths,
            sessions: self.revoke_sessions(&uid, kp.as_deref(), &sessions).await?,
            pairs: 0,
            js_admissions,
        };
        if kp.is_none() {
            counts.pairs = pairs.len();
            store
                .write(&[
                    Write::Delete {
                        key: pairs_key(&uid),
                    },
                    Write::Delete {
                        key: uid_sessions_key(&uid),
                    },
                    Write::Delete {
                        key: uid_js_key(&uid),
                    },
                ])
                .await?;
        }
        if !js_viewers.is_empty() {
            // Front-end admissions are per exact address: remember those viewers too.
            let extra = RevokedUid {
                viewers: js_viewers,
                ..mark.clone()
            };
            let mut feed = None;
            update_json(store, REVOCATIONS_KEY, self.ip_access_ttl, |cur| {
                let mut map = parse_feed(cur, now_i);
                map.entry(uid.clone())
                    .and_modify(|r| r.merge(extra.clone()))
                    .or_insert_with(|| extra.clone());
                merged = map.get(&uid).cloned().unwrap_or_else(|| extra.clone());
                let raw = serde_json::to_string(&map).ok()?;
                feed = Some(map);
                Some(raw)
            })
            .await?;
            let seq = bump_feed(store).await?;
            if let Some(map) = feed {
                self.controls.revocations.replace(map, seq);
            }
        }
        tracing::info!(uid = %uid, key_path = ?kp, ?counts, "uid revoked");
        Ok(Revoked {
            uid,
            key_path: kp,
            counts,
            mark: merged,
        })
    }

    /// Takes the key path (or every path) out of the uid's whitelist entries and, when
    /// revoking all, deletes its static-file entries. Returns key paths removed.
    async fn revoke_entries(
        &self,
        uid: &str,
        kp: Option<&str>,
        pairs: &[super::pairs::PairRecord],
    ) -> Result<usize, StoreError> {
        let store = &*self.store;
        let mut removed = 0;
        let mut deletes = Vec::new();
        for p in pairs {
            let Some(net) = net_of(&p.ip_pattern) else {
                continue;
            };
            let key = whitelist_key(&net, &p.ua_hash);
            let mut n = 0;
            let mut empty = false;
            update_json(store, &key, self.ip_access_ttl, |cur| {
                let mut e = WhitelistEntry::parse(cur?)?;
                if e.uid != uid {
                    return None;
                }
                let before = e.allowed_paths().count();
                match kp {
                    None => e.paths.clear(),
                    Some(k) => e.paths.retain(|x| x.key_path != k),
                }
                if kp.is_none() || e.key_path == kp.unwrap_or_default() {
                    e.key_path = e
                        .paths
                        .last()
                        .map(|x| x.key_path.clone())
                        .unwrap_or_default();
                }
                let after = e.allowed_paths().count();
                n = before - after.min(before);
                empty = after == 0;
                if n == 0 {
                    return None;
                }
                serde_json::to_string(&e).ok()
            })
            .await?;
            removed += n;
            if empty && n > 0 {
                deletes.push(Write::Delete { key });
            }
            if kp.is_none() {
                let skey = static_key(&net, &p.ua_hash);
                if let Some(raw) = store.get(&skey).await? {
                    if StaticEntry::parse(&raw).is_some_and(|s| s.uid == uid) {
                        deletes.push(Write::Delete { key: skey });
                    }
                }
            }
        }
        store.write(&deletes).await?;
        Ok(removed)
    }

    /// Withdraws the uid's front-end admissions (that key path only, when given).
    /// Returns (admissions changed, viewer tags of their addresses).
    async fn revoke_js(
        &self,
        uid: &str,
        kp: Option<&str>,
        keys: &[String],
    ) -> Result<(usize, Vec<String>), StoreError> {
        let mut changed = 0;
        let mut viewers = Vec::new();
        for key in keys {
            let mut hit: Option<String> = None;
            update_json(&*self.store, key, self.rules.js_ttl, |cur| {
                hit = None;
                let mut e = JsEntry::parse(cur?)?;
                let g = e.uids.get_mut(uid)?;
                match kp {
                    None => {
                        e.uids.remove(uid);
                    }
                    Some(k) => {
                        let before = g.paths.len();
                        g.paths.retain(|p| p.key_path != k);
                        if g.paths.len() == before {
                            return None;
                        }
                        if g.paths.is_empty() && !g.all {
                            e.uids.remove(uid);
                        }
                    }
                }
                let ip = e.client_ip.parse::<IpAddr>().ok();
                hit = ip.map(|ip| viewer_tag(&IpNet::from(ip), &e.ua_hash));
                serde_json::to_string(&e).ok()
            })
            .await?;
            if let Some(v) = hit {
                changed += 1;
                viewers.push(v);
            }
        }
        Ok((changed, viewers))
    }

    /// Deletes the given sessions of the uid and their index keys.
    async fn revoke_sessions(
        &self,
        uid: &str,
        kp: Option<&str>,
        sessions: &[(String, SessionRecord)],
    ) -> Result<usize, StoreError> {
        let store = &*self.store;
        let mut deletes = Vec::new();
        let mut latest = Vec::new();
        for (id, s) in sessions {
            let Ok(ip) = s.client_ip.parse::<IpAddr>() else {
                deletes.push(Write::Delete {
                    key: session_key(id),
                });
                continue;
            };
            let uah = ua_hash(&s.user_agent);
            deletes.push(Write::Delete {
                key: session_key(id),
            });
            deletes.push(Write::Delete {
                key: ip_ua_session_key(ip, &uah, uid, &s.key_path),
            });
            if kp.is_none() {
                deletes.push(Write::Delete {
                    key: user_active_session_key(uid, ip),
                });
            }
            latest.push((id.clone(), latest_key(ip, &uah, &s.key_path)));
        }
        let keys: Vec<String> = latest.iter().map(|(_, k)| k.clone()).collect();
        let values = store.get_many(&keys).await?;
        for ((id, key), raw) in latest.into_iter().zip(values) {
            let points_here = raw
                .and_then(|r| serde_json::from_str::<LatestSession>(&r).ok())
                .is_some_and(|l| l.id == id);
            if points_here {
                deletes.push(Write::Delete { key });
            }
        }
        store.write(&deletes).await?;
        Ok(sessions.len())
    }

    /// Lifts the uid's revocation mark (a new `POST /api/whitelist` for it). One read
    /// of the feed when the uid is not revoked. Returns whether a mark was lifted.
    pub async fn lift_revocation(&self, uid: &str, now: u64) -> Result<bool, StoreError> {
        let now_i = ts(now);
        let mut feed = None;
        let wrote = update_json(&*self.store, REVOCATIONS_KEY, self.ip_access_ttl, |cur| {
            let mut map = parse_feed(cur, now_i);
            map.remove(uid)?;
            let raw = serde_json::to_string(&map).ok()?;
            feed = Some(map);
            Some(raw)
        })
        .await?;
        if wrote.is_none() {
            return Ok(false);
        }
        let seq = bump_feed(&*self.store).await?;
        if let Some(map) = feed {
            self.controls.revocations.replace(map, seq);
        }
        tracing::info!(uid, "revocation lifted by a new admission");
        Ok(true)
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    v.retain(|x| seen.insert(x.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bodies() {
        assert_eq!(
            parse_revoke(br#"{"uid": "u1"}"#).unwrap(),
            ("u1".to_string(), None)
        );
        assert_eq!(
            parse_revoke(br#"{"uid": 7, "key_path": "/vod/abc/i.m3u8"}"#).unwrap(),
            ("7".to_string(), Some("abc".to_string()))
        );
        assert_eq!(
            parse_revoke(br#"{"uid": "u", "key_path": "abc"}"#)
                .unwrap()
                .1,
            Some("abc".to_string())
        );
        assert!(matches!(parse_revoke(b"[]"), Err(RevokeError::BadJson)));
        assert!(matches!(
            parse_revoke(br#"{"uid": ""}"#),
            Err(RevokeError::MissingUid)
        ));
        assert!(matches!(
            parse_revoke(br#"{"uid": "u", "key_path": 3}"#),
            Err(RevokeError::BadKeyPath)
        ));
    }
}
