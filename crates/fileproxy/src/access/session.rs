//! Viewer sessions (SPEC §2 step 5, §6).
//!
//! Keys (the first three are the Python version's, values as it writes them):
//! - `session:{uuid}` → [`SessionRecord`] JSON, TTL `session_ttl_s`;
//! - `ip_ua_session:{ip}:{ua_hash}:{uid}:{key_path}` → uuid, TTL `session_ttl_s`;
//! - `user_active_session:{uid}:{ip}` → uuid, TTL `user_session_ttl_s` (set when a
//!   session is created, afterwards only its TTL is extended);
//! - ours: `fp:latest:{<ip>:<ua_hash>}:<key_path>` → [`LatestSession`] JSON, TTL
//!   `session_ttl_s`: the most recently active session of (IP, UA, key path), any uid,
//!   with a copy of the session's immutable fields so a decision needs no second read.
//!   The hash tag `{ip:ua_hash}` keeps one viewer's keys in one Redis Cluster slot
//!   while spreading viewers over all slots.
//!
//! Lookup (SPEC §2 step 5), with every read a direct key (never a scan):
//! (a) request uid → `ip_ua_session` → session (skipping the second read when the
//!     latest index already names the same session);
//! (b) the latest index of (IP, UA, key path);
//! then, for sessions the Python version created (it writes no latest index):
//! (c) the `session_id_fileserver` cookie's `session:{uuid}`;
//! (d) the whitelist uid's `ip_ua_session` → session.
//! A found session must match the request's IP and User-Agent exactly (and, for (c),
//! its key path), otherwise it is ignored.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::client_ip::canonical_ip;
use super::compat;
use crate::store::{update_json, Store, StoreError, Write};

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "session_id_fileserver";

/// `session_type` written in sessions we create.
pub const SESSION_TYPE: &str = "ip_ua_based";

/// A session `session:{uuid}` as the Python version writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The viewer's uid.
    #[serde(default, deserialize_with = "compat::string")]
    pub uid: String,
    /// The viewer's IP address.
    #[serde(default, deserialize_with = "compat::string")]
    pub client_ip: String,
    /// The viewer's User-Agent.
    #[serde(default, deserialize_with = "compat::string")]
    pub user_agent: String,
    /// The request path that created the session.
    #[serde(default, deserialize_with = "compat::string")]
    pub path: String,
    /// The key path of that request.
    #[serde(default, deserialize_with = "compat::string")]
    pub key_path: String,
    /// Creation time (Unix seconds).
    #[serde(default, deserialize_with = "compat::int")]
    pub created_at: i64,
    /// Last use (Unix seconds).
    #[serde(default, deserialize_with = "compat::int")]
    pub last_activity: i64,
    /// Process id of the creator.
    #[serde(default, deserialize_with = "compat::int")]
    pub worker_pid: i64,
    /// Requests served with this session.
    #[serde(default, deserialize_with = "compat::int")]
    pub access_count: i64,
    /// Kind of session.
    #[serde(default, deserialize_with = "compat::string")]
    pub session_type: String,
    /// Fields we do not know, kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SessionRecord {
    /// Parses a stored session; `None` when it is not a JSON object.
    pub fn parse(raw: &str) -> Option<Self> {
        serde_json::from_str(raw).ok()
    }
}

/// Our latest-session index value: the session id and its immutable fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestSession {
    /// The session uuid.
    pub id: String,
    /// Its uid.
    #[serde(default)]
    pub uid: String,
    /// Its IP address.
    #[serde(default)]
    pub client_ip: String,
    /// Its User-Agent.
    #[serde(default)]
    pub user_agent: String,
    /// Its key path.
    #[serde(default)]
    pub key_path: String,
    /// Its creation time.
    #[serde(default)]
    pub created_at: i64,
}

impl LatestSession {
    fn of(id: &str, r: &SessionRecord) -> Self {
        Self {
            id: id.to_string(),
            uid: r.uid.clone(),
            client_ip: r.client_ip.clone(),
            user_agent: r.user_agent.clone(),
            key_path: r.key_path.clone(),
            created_at: r.created_at,
        }
    }
}

/// `session:{uuid}`.
pub fn session_key(id: &str) -> String {
    format!("session:{id}")
}

/// `ip_ua_session:{ip}:{ua_hash}:{uid}:{key_path}`.
pub fn ip_ua_session_key(ip: IpAddr, ua_hash: &str, uid: &str, kp: &str) -> String {
    format!("ip_ua_session:{ip}:{ua_hash}:{uid}:{kp}")
}

/// `user_active_session:{uid}:{ip}`.
pub fn user_active_session_key(uid: &str, ip: IpAddr) -> String {
    format!("user_active_session:{uid}:{ip}")
}

/// Our `fp:latest:{<ip>:<ua_hash>}:<key_path>`.
pub fn latest_key(ip: IpAddr, ua_hash: &str, kp: &str) -> String {
    format!("fp:latest:{{{ip}:{ua_hash}}}:{kp}")
}

/// A cookie value as a canonical (lowercase, hyphenated) uuid; `None` when it is not a
/// uuid, so arbitrary cookie text never becomes part of a store key.
pub fn cookie_session_id(cookie: &str) -> Option<String> {
    uuid::Uuid::parse_str(cookie.trim())
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie_value(id: &str, ttl_s: u64, secure: bool) -> String {
    let mut v = format!("{COOKIE_NAME}={id}; Path=/; Max-Age={ttl_s}; HttpOnly; SameSite=Lax");
    if secure {
        v.push_str("; Secure");
    }
    v
}

/// Who is asking: the request's identity as the session rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// Client IP (canonical).
    pub ip: IpAddr,
    /// Full User-Agent.
    pub user_agent: &'a str,
    /// Its hash.
    pub ua_hash: &'a str,
    /// Key path of the request.
    pub key_path: &'a str,
    /// `uid` query parameter, when non-empty.
    pub uid: Option<&'a str>,
    /// Session id named by the cookie (already validated as a uuid).
    pub cookie_id: Option<&'a str>,
    /// The whitelist entry's uid.
    pub whitelist_uid: Option<&'a str>,
}

/// Whether a stored IP string is the request's IP.
fn same_ip(stored: &str, ip: IpAddr) -> bool {
    match stored.trim().parse::<IpAddr>() {
        Ok(s) => canonical_ip(s) == ip,
        Err(_) => false,
    }
}

/// Whether a session's IP and User-Agent are exactly the request's.
pub fn matches_viewer(client_ip: &str, user_agent: &str, v: &Viewer<'_>) -> bool {
    user_agent == v.user_agent && same_ip(client_ip, v.ip)
}

/// The keys of the first (batched) read, in this order: the (a) index when the request
/// has a uid, the latest index, the cookie's session when there is a cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRead {
    /// `ip_ua_session` for the request uid.
    pub by_uid: Option<String>,
    /// Our latest index.
    pub latest: String,
    /// `session:{cookie}`.
    pub cookie: Option<String>,
}

impl FirstRead {
    /// The keys for a viewer.
    pub fn for_viewer(v: &Viewer<'_>) -> Self {
        Self {
            by_uid: v
                .uid
                .map(|u| ip_ua_session_key(v.ip, v.ua_hash, u, v.key_path)),
            latest: latest_key(v.ip, v.ua_hash, v.key_path),
            cookie: v.cookie_id.map(session_key),
        }
    }

    /// The keys as a list for `get_many`.
    pub fn keys(&self) -> Vec<String> {
        let mut k = Vec::with_capacity(3);
        k.extend(self.by_uid.clone());
        k.push(self.latest.clone());
        k.extend(self.cookie.clone());
        k
    }

    /// Splits the values read for [`FirstRead::keys`] back into (by_uid, latest, cookie).
    pub fn split(&self, values: &[Option<String>]) -> FirstValues {
        let mut it = values.iter().cloned();
        let by_uid = if self.by_uid.is_some() {
            it.next().flatten()
        } else {
            None
        };
        let latest = it.next().flatten();
        let cookie = if self.cookie.is_some() {
            it.next().flatten()
        } else {
            None
        };
        FirstValues {
            by_uid,
            latest,
            cookie,
        }
    }
}

/// The values of a [`FirstRead`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstValues {
    /// Session id from the (a) index.
    pub by_uid: Option<String>,
    /// Latest index JSON.
    pub latest: Option<String>,
    /// Cookie session JSON.
    pub cookie: Option<String>,
}

/// How a session was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundVia {
    /// (a): the index of (IP, UA, request uid, key path).
    RequestUid,
    /// (b): our latest-session index.
    Latest,
    /// (c): the session cookie (a Python-created session).
    Cookie,
    /// (d): the index of (IP, UA, whitelist uid, key path) (a Python-created session).
    WhitelistUid,
}

/// A session that may be used for this request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundSession {
    /// Its immutable fields.
    pub session: LatestSession,
    /// How it was found.
    pub via: FoundVia,
}

fn latest_matching(raw: Option<&str>, v: &Viewer<'_>) -> Option<LatestSession> {
    let l: LatestSession = serde_json::from_str(raw?).ok()?;
    (!l.id.is_empty() && matches_viewer(&l.client_ip, &l.user_agent, v)).then_some(l)
}

fn record_matching(id: &str, raw: Option<&str>, v: &Viewer<'_>) -> Option<LatestSession> {
    let r = SessionRecord::parse(raw?)?;
    matches_viewer(&r.client_ip, &r.user_agent, v).then(|| LatestSession::of(id, &r))
}

/// Finds the viewer's session from the first read's values, reading more keys only
/// when needed: (a) when the latest index does not already name the (a) session (one
/// read), (d) for Python-created sessions (two reads). See the module docs.
pub async fn find_session(
    store: &dyn Store,
    v: &Viewer<'_>,
    first: &FirstValues,
) -> Result<Option<FoundSession>, StoreError> {
    let latest = latest_matching(first.latest.as_deref(), v);
    // (a) the session of the request's uid.
    if let (Some(uid), Some(id)) = (v.uid, first.by_uid.as_deref()) {
        let id = id.trim();
        if let Some(l) = latest.as_ref().filter(|l| l.id == id && l.uid == uid) {
            return Ok(Some(FoundSession {
                session: l.clone(),
                via: FoundVia::RequestUid,
            }));
        }
        if !id.is_empty() {
            let raw = store.get(&session_key(id)).await?;
            if let Some(s) = record_matching(id, raw.as_deref(), v) {
                return Ok(Some(FoundSession {
                    session: s,
                    via: FoundVia::RequestUid,
                }));
            }
        }
    }
    // (b) the latest session of (IP, UA, key path), any uid.
    if let Some(l) = latest {
        return Ok(Some(FoundSession {
            session: l,
            via: FoundVia::Latest,
        }));
    }
    // (c) the cookie's session, if it is this viewer's, for this key path.
    if let Some(id) = v.cookie_id {
        if let Some(s) =
            record_matching(id, first.cookie.as_deref(), v).filter(|s| s.key_path == v.key_path)
        {
            return Ok(Some(FoundSession {
                session: s,
                via: FoundVia::Cookie,
            }));
        }
    }
    // (d) the whitelist uid's session (unless that is the uid already tried in (a)).
    if let Some(wuid) = v.whitelist_uid.filter(|w| Some(*w) != v.uid) {
        let key = ip_ua_session_key(v.ip, v.ua_hash, wuid, v.key_path);
        if let Some(id) = store.get(&key).await? {
            let id = id.trim();
            if !id.is_empty() {
                let raw = store.get(&session_key(id)).await?;
                if let Some(s) = record_matching(id, raw.as_deref(), v) {
                    return Ok(Some(FoundSession {
                        session: s,
                        via: FoundVia::WhitelistUid,
                    }));
                }
            }
        }
    }
    Ok(None)
}

/// TTLs of the session keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTtls {
    /// `session:*`, `ip_ua_session:*` and our index.
    pub session: Duration,
    /// `user_active_session:*`.
    pub user: Duration,
}

/// A new session for `uid`: its id and the writes that store it (one batch).
pub fn create_session(
    v: &Viewer<'_>,
    uid: &str,
    path: &str,
    now: i64,
    ttls: SessionTtls,
) -> (String, Vec<Write>) {
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let record = SessionRecord {
        uid: uid.to_string(),
        client_ip: v.ip.to_string(),
        user_agent: v.user_agent.to_string(),
        path: path.to_string(),
        key_path: v.key_path.to_string(),
        created_at: now,
        last_activity: now,
        worker_pid: i64::from(std::process::id()),
        access_count: 1,
        session_type: SESSION_TYPE.to_string(),
        extra: Map::new(),
    };
    let latest = LatestSession::of(&id, &record);
    let mut writes = Vec::with_capacity(4);
    if let (Ok(rec), Ok(lat)) = (
        serde_json::to_string(&record),
        serde_json::to_string(&latest),
    ) {
        writes.push(Write::Set {
            key: session_key(&id),
            value: rec,
            ttl: ttls.session,
        });
        writes.push(Write::Set {
            key: ip_ua_session_key(v.ip, v.ua_hash, uid, v.key_path),
            value: id.clone(),
            ttl: ttls.session,
        });
        writes.push(Write::Set {
            key: user_active_session_key(uid, v.ip),
            value: id.clone(),
            ttl: ttls.user,
        });
        writes.push(Write::Set {
            key: latest_key(v.ip, v.ua_hash, v.key_path),
            value: lat,
            ttl: ttls.session,
        });
    }
    (id, writes)
}

/// The deferred extension of a found session (SPEC §2 step 5: TTL reset,
/// `last_activity` and `access_count` updated), run off the request's critical path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTouch {
    /// The session's immutable fields.
    pub session: LatestSession,
    /// The viewer's UA hash.
    pub ua_hash: String,
    /// When it was used.
    pub now: i64,
}

/// Applies a [`SessionTouch`]: updates the session record with a compare-and-set loop
/// (so concurrent requests all count), then in one batch extends `ip_ua_session` and
/// `user_active_session` and re-points our latest index at it (fresh TTL). A session
/// that expired meanwhile is not recreated and its index entry is removed.
pub async fn touch_session(
    store: &dyn Store,
    t: &SessionTouch,
    ttls: SessionTtls,
) -> Result<(), StoreError> {
    let s = &t.session;
    let Ok(ip) = s.client_ip.trim().parse::<IpAddr>().map(canonical_ip) else {
        return Ok(());
    };
    let latest = latest_key(ip, &t.ua_hash, &s.key_path);
    let updated = update_json(store, &session_key(&s.id), ttls.session, |cur| {
        let mut r = SessionRecord::parse(cur?)?;
        r.last_activity = r.last_activity.max(t.now);
        r.access_count = r.access_count.saturating_add(1);
        serde_json::to_string(&r).ok()
    })
    .await?;
    if updated.is_none() {
        return store.write(&[Write::Delete { key: latest }]).await;
    }
    let mut writes = vec![
        Write::Expire {
            key: ip_ua_session_key(ip, &t.ua_hash, &s.uid, &s.key_path),
            ttl: ttls.session,
        },
        Write::Expire {
            key: user_active_session_key(&s.uid, ip),
            ttl: ttls.user,
        },
    ];
    if let Ok(value) = serde_json::to_string(s) {
        writes.push(Write::Set {
            key: latest,
            value,
            ttl: ttls.session,
        });
    }
    store.write(&writes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keys() {
        assert_eq!(
            ip_ua_session_key(ip("1.2.3.4"), "abcd1234", "u", "kp"),
            "ip_ua_session:1.2.3.4:abcd1234:u:kp"
        );
        assert_eq!(
            user_active_session_key("u", ip("2001:db8::1")),
            "user_active_session:u:2001:db8::1"
        );
        assert_eq!(
            latest_key(ip("1.2.3.4"), "abcd1234", "kp"),
            "fp:latest:{1.2.3.4:abcd1234}:kp"
        );
        assert_eq!(session_key("x"), "session:x");
    }

    #[test]
    fn cookies() {
        let id = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
        assert_eq!(
            cookie_session_id(id).as_deref(),
            Some("6f9619ff-8b86-d011-b42d-00c04fc964ff")
        );
        assert_eq!(cookie_session_id("x:*"), None);
        assert_eq!(cookie_session_id(""), None);
        assert_eq!(
            set_cookie_value("abc", 7200, false),
            "session_id_fileserver=abc; Path=/; Max-Age=7200; HttpOnly; SameSite=Lax"
        );
        assert!(set_cookie_value("abc", 1, true).ends_with("; Secure"));
    }

    #[test]
    fn python_sessions_parse() {
        let raw = r#"{"uid": 5, "client_ip": "1.2.3.4", "user_agent": "UA", "path": "/a/b.m3u8", "key_path": "a",
                      "created_at": 1700000000.9, "last_activity": 1700000001, "worker_pid": 77, "access_count": 3,
                      "session_type": "m3u8", "other": true}"#;
        let r = SessionRecord::parse(raw).unwrap();
        assert_eq!(
            (r.uid.as_str(), r.created_at, r.access_count),
            ("5", 1_700_000_000, 3)
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["other"], Value::Bool(true));
        let minimal = SessionRecord::parse("{}").unwrap();
        assert_eq!(minimal.access_count, 0);
        assert!(SessionRecord::parse("[]").is_none());
    }

    #[test]
    fn viewer_matching_is_exact() {
        let v = Viewer {
            ip: ip("1.2.3.4"),
            user_agent: "UA",
            ua_hash: "h",
            key_path: "k",
            uid: None,
            cookie_id: None,
            whitelist_uid: None,
        };
        assert!(matches_viewer("1.2.3.4", "UA", &v));
        assert!(matches_viewer("::ffff:1.2.3.4", "UA", &v));
        assert!(!matches_viewer("1.2.3.5", "UA", &v));
        assert!(!matches_viewer("1.2.3.4", "ua", &v));
        assert!(!matches_viewer("1.2.3.4", "UA ", &v));
        assert!(!matches_viewer("", "UA", &v));
    }

    #[test]
    fn first_read_layout() {
        let v = Viewer {
            ip: ip("1.2.3.4"),
            user_agent: "UA",
            ua_hash: "h",
            key_path: "k",
            uid: Some("u"),
            cookie_id: Some("c"),
            whitelist_uid: None,
        };
        let f = FirstRead::for_viewer(&v);
        assert_eq!(
            f.keys(),
            [
                "ip_ua_session:1.2.3.4:h:u:k",
                "fp:latest:{1.2.3.4:h}:k",
                "session:c"
            ]
        );
        let vals = f.split(&[Some("a".into()), None, Some("c".into())]);
        assert_eq!(vals.by_uid.as_deref(), Some("a"));
        assert_eq!(vals.latest, None);
        assert_eq!(vals.cookie.as_deref(), Some("c"));
        let v2 = Viewer {
            uid: None,
            cookie_id: None,
            ..v
        };
        let f2 = FirstRead::for_viewer(&v2);
        assert_eq!(f2.keys(), ["fp:latest:{1.2.3.4:h}:k"]);
        assert_eq!(f2.split(&[Some("l".into())]).latest.as_deref(), Some("l"));
    }
}
