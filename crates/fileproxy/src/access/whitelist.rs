//! The IP whitelist (SPEC §2 step 3, §3, §6): the Python-compatible entry JSON, the
//! admission merge (FIFO of key paths, refresh on re-add), and the check of a viewer's
//! request against the entries of its networks.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use super::compat;
use super::keypath::key_path;
use super::network::{
    admission_network, cidr_examples, lookup_networks, ua_hash, whitelist_key, NetworkError,
};
use crate::store::{update_json, Store, StoreError};

/// The body text of a refused whitelist check (SPEC §2 step 3).
pub const DENY_PATH_TEXT: &str = "Access Denied 100020 path";

/// One admitted key path of an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathEntry {
    /// The key path (SPEC §2.1).
    #[serde(default, deserialize_with = "compat::string")]
    pub key_path: String,
    /// When it was admitted or last re-admitted (Unix seconds).
    #[serde(default, deserialize_with = "compat::int")]
    pub created_at: i64,
    /// Fields we do not know, kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A whitelist entry `ip_cidr_access:{net}:{ua_hash}` as the Python version writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhitelistEntry {
    /// The uid last admitted (the fallback uid of SPEC §2 step 3).
    #[serde(default, deserialize_with = "compat::string")]
    pub uid: String,
    /// The key path last admitted.
    #[serde(default, deserialize_with = "compat::string")]
    pub key_path: String,
    /// Admitted key paths, oldest first, at most `max_paths_per_cidr`.
    #[serde(default, deserialize_with = "path_list")]
    pub paths: Vec<PathEntry>,
    /// The networks this entry was admitted under.
    #[serde(default, deserialize_with = "compat::string_list")]
    pub ip_patterns: Vec<String>,
    /// The admitted User-Agent.
    #[serde(default, deserialize_with = "compat::string")]
    pub user_agent: String,
    /// When the entry was first written (Unix seconds).
    #[serde(default, deserialize_with = "compat::int")]
    pub created_at: i64,
    /// Process id of the last writer.
    #[serde(default, deserialize_with = "compat::int")]
    pub worker_pid: i64,
    /// Fields we do not know, kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PathEntry {
    /// The entry an object of `paths` holds, read as its `Deserialize` would (every
    /// field lenient, unknown ones kept) without a second pass through `serde`.
    fn from_object(mut obj: Map<String, Value>) -> Self {
        let key_path = match obj.remove("key_path") {
            Some(Value::String(s)) => s,
            Some(v) => compat::value_to_string(&v),
            None => String::new(),
        };
        let created_at = obj
            .remove("created_at")
            .map_or(0, |v| compat::value_to_int(&v));
        Self {
            key_path,
            created_at,
            extra: obj,
        }
    }
}

/// `paths` items may be objects or (in older entries) bare key-path strings.
fn path_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathEntry>, D::Error> {
    let Value::Array(items) = Value::deserialize(d)? else {
        return Ok(Vec::new());
    };
    Ok(items
        .into_iter()
        .filter_map(|item| match item {
            Value::String(s) if !s.is_empty() => Some(PathEntry {
                key_path: s,
                created_at: 0,
                extra: Map::new(),
            }),
            Value::Object(obj) => {
                Some(PathEntry::from_object(obj)).filter(|p| !p.key_path.is_empty())
            }
            _ => None,
        })
        .collect())
}

impl WhitelistEntry {
    /// Parses a stored entry; `None` when it is not a JSON object.
    pub fn parse(raw: &str) -> Option<Self> {
        serde_json::from_str(raw).ok()
    }

    /// The admitted key paths: `paths`, or `key_path` alone for entries without paths.
    pub fn allowed_paths(&self) -> impl Iterator<Item = &str> {
        let single = if self.paths.is_empty() && !self.key_path.is_empty() {
            Some(self.key_path.as_str())
        } else {
            None
        };
        self.paths.iter().map(|p| p.key_path.as_str()).chain(single)
    }

    /// Whether a request for `path` with key path `kp` is allowed by this entry: `kp`
    /// is one of the entry's paths and occurs (case-insensitively) in `path`.
    pub fn allows(&self, kp: &str, path: &str) -> bool {
        !kp.is_empty()
            && self
                .allowed_paths()
                .any(|p| p == kp && contains_ignore_case(path, p))
    }

    /// The uid, `None` when empty.
    pub fn uid(&self) -> Option<&str> {
        Some(self.uid.as_str()).filter(|u| !u.is_empty())
    }
}

fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// What an admission adds (the validated body of `POST /api/whitelist`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The viewer's uid.
    pub uid: String,
    /// The key path of the admitted path.
    pub key_path: String,
    /// The network admitted (IPv4 `/24`, IPv6 as given).
    pub network: IpNet,
    /// The viewer's User-Agent.
    pub user_agent: String,
    /// First 8 hex chars of MD5(User-Agent).
    pub ua_hash: String,
}

impl Admission {
    /// The store key of the entry this admission writes.
    pub fn key(&self) -> String {
        whitelist_key(&self.network, &self.ua_hash)
    }
}

/// Why an admission was refused; each maps to a status and a JSON `{"error": …}`.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// Wrong or missing bearer key (403).
    #[error("invalid or missing API key")]
    Unauthorized,
    /// The body is not a JSON object (400).
    #[error("invalid JSON body")]
    BadJson,
    /// A required field is missing or empty (400).
    #[error("missing required field: {0}")]
    MissingField(&'static str),
    /// `clientIp` is not an IP address or CIDR (400).
    #[error("clientIp is not an IP address or CIDR")]
    BadClientIp,
    /// `path` has no key path (400).
    #[error("path has no key path")]
    NoKeyPath,
    /// The store failed (503).
    #[error("whitelist store unavailable")]
    Store(#[from] StoreError),
}

impl AdmitError {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            AdmitError::Unauthorized => 403,
            AdmitError::Store(_) => 503,
            _ => 400,
        }
    }

    /// The JSON body `{"error": "<message>"}` (never includes secrets or store details).
    pub fn body(&self) -> Value {
        json!({ "error": self.to_string() })
    }
}

impl From<NetworkError> for AdmitError {
    fn from(_: NetworkError) -> Self {
        AdmitError::BadClientIp
    }
}

/// Validates the JSON body `{"uid", "path", "clientIp", "UserAgent"}` (all required,
/// non-empty; a numeric uid is accepted) into an [`Admission`].
pub fn parse_admission(body: &[u8]) -> Result<Admission, AdmitError> {
    let [uid, path, client_ip, user_agent] =
        required_fields(body, ["uid", "path", "clientIp", "UserAgent"])?;
    let network = admission_network(&client_ip)?;
    let kp = key_path(&admission_path(&path)).to_string();
    if kp.is_empty() {
        return Err(AdmitError::NoKeyPath);
    }
    Ok(Admission {
        uid,
        key_path: kp,
        network,
        ua_hash: ua_hash(&user_agent),
        user_agent,
    })
}

/// The string values of `names` in a JSON object body, checked in order: each must be
/// present and not blank (numbers are accepted and written as strings).
pub(super) fn required_fields<const N: usize>(
    body: &[u8],
    names: [&'static str; N],
) -> Result<[String; N], AdmitError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| AdmitError::BadJson)?;
    let obj = v.as_object().ok_or(AdmitError::BadJson)?;
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, name) in out.iter_mut().zip(names) {
        let s = obj
            .get(name)
            .map(compat::value_to_string)
            .unwrap_or_default();
        if s.trim().is_empty() {
            return Err(AdmitError::MissingField(name));
        }
        *slot = s;
    }
    Ok(out)
}

/// The request path inside an admitted `path`, which may be a full URL, carry a query,
/// or be percent-encoded: `https://h/a/b/i.m3u8?x=1` → `/a/b/i.m3u8`.
pub fn admission_path(path: &str) -> String {
    let mut p = path.trim();
    if let Some((_, rest)) = p.split_once("://") {
        p = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let p = p.split(['?', '#']).next().unwrap_or("");
    percent_decode_str(p).decode_utf8_lossy().into_owned()
}

/// What a merge did, for the admission response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergeInfo {
    /// Whether an entry existed before.
    pub existed: bool,
    /// IP patterns this admission added to the entry (0 or 1).
    pub patterns_new: usize,
    /// IP patterns in the entry after the merge.
    pub patterns_merged: usize,
    /// Key paths dropped to stay within `max_paths_per_cidr`.
    pub dropped: Vec<String>,
}

/// Merges an admission into the stored entry (`None` = absent or unreadable): the key
/// path is appended (or, when present, refreshed and moved to the newest place), the
/// oldest paths beyond `max_paths` are dropped, uid/user agent/key_path take the new
/// values, and unknown fields are kept.
pub fn merge_admission(
    existing: Option<WhitelistEntry>,
    adm: &Admission,
    now: i64,
    max_paths: usize,
    worker_pid: i64,
) -> (WhitelistEntry, MergeInfo) {
    let network = adm.network.to_string();
    let mut info = MergeInfo {
        existed: existing.is_some(),
        ..MergeInfo::default()
    };
    let mut entry = existing.unwrap_or_else(|| WhitelistEntry {
        uid: String::new(),
        key_path: String::new(),
        paths: Vec::new(),
        ip_patterns: Vec::new(),
        user_agent: String::new(),
        created_at: now,
        worker_pid,
        extra: Map::new(),
    });
    if entry.paths.is_empty() && !entry.key_path.is_empty() {
        // An entry without `paths` admitted its `key_path` alone.
        entry.paths.push(PathEntry {
            key_path: entry.key_path.clone(),
            created_at: entry.created_at,
            extra: Map::new(),
        });
    }
    let mut refreshed = entry
        .paths
        .iter()
        .position(|p| p.key_path == adm.key_path)
        .map(|i| entry.paths.remove(i))
        .unwrap_or_else(|| PathEntry {
            key_path: adm.key_path.clone(),
            created_at: now,
            extra: Map::new(),
        });
    refreshed.created_at = now;
    entry.paths.push(refreshed);
    // Oldest first; stable, so equal timestamps keep their admission order.
    entry.paths.sort_by_key(|p| p.created_at);
    let max_paths = max_paths.max(1);
    while entry.paths.len() > max_paths {
        let dropped = entry.paths.remove(0);
        info.dropped.push(dropped.key_path);
    }
    if !entry.ip_patterns.contains(&network) {
        entry.ip_patterns.push(network);
        info.patterns_new = 1;
    }
    info.patterns_merged = entry.ip_patterns.len();
    entry.uid = adm.uid.clone();
    entry.key_path = adm.key_path.clone();
    entry.user_agent = adm.user_agent.clone();
    entry.worker_pid = worker_pid;
    if entry.created_at == 0 {
        entry.created_at = now;
    }
    (entry, info)
}

/// Writes an admission with an optimistic compare-and-set loop, so concurrent
/// admissions of one entry all land; the entry's TTL is reset. Returns the entry
/// written and what the merge did.
pub async fn store_admission(
    store: &dyn Store,
    adm: &Admission,
    now: i64,
    max_paths: usize,
    ttl: Duration,
) -> Result<(WhitelistEntry, MergeInfo), StoreError> {
    let pid = i64::from(std::process::id());
    let mut last: Option<(WhitelistEntry, MergeInfo)> = None;
    update_json(store, &adm.key(), ttl, |cur| {
        let existing = cur.and_then(WhitelistEntry::parse);
        let (entry, info) = merge_admission(existing, adm, now, max_paths, pid);
        let raw = serde_json::to_string(&entry).ok()?;
        last = Some((entry, info));
        Some(raw)
    })
    .await?;
    last.ok_or_else(|| StoreError::Malformed("whitelist entry not serialisable".into()))
}

/// The `200` JSON answer of an admission (SPEC §3).
pub fn admission_response(
    adm: &Admission,
    entry: &WhitelistEntry,
    info: &MergeInfo,
    ttl_s: u64,
    max_paths: usize,
) -> Value {
    let paths: Vec<&str> = entry.paths.iter().map(|p| p.key_path.as_str()).collect();
    json!({
        "message": if info.existed {
            "IP whitelist entry updated"
        } else {
            "IP whitelist entry created"
        },
        "key_path": adm.key_path,
        "ip_pattern": adm.network.to_string(),
        "cidr_examples": cidr_examples(&adm.network),
        "ua_hash": adm.ua_hash,
        "ttl": ttl_s,
        "patterns_merged": info.patterns_merged,
        "patterns_new": info.patterns_new,
        "multi_path_info": {
            "max_paths_per_cidr": max_paths,
            "current_path": adm.key_path,
            "paths": paths,
            "dropped_paths": info.dropped,
        },
    })
}

/// One network a viewer is looked up under, with its store key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The network.
    pub network: IpNet,
    /// `ip_cidr_access:{net}:{ua_hash}`.
    pub key: String,
}

/// The keys a viewer's entry may live under, most specific first (bounded; no scan).
pub fn candidates(ip: IpAddr, ua_hash: &str, ipv6_prefixes: &[u8]) -> Vec<Candidate> {
    candidates_keyed(ip, ua_hash, ipv6_prefixes, whitelist_key)
}

/// The viewer's lookup networks, most specific first, each with its key by `key_of`.
pub(super) fn candidates_keyed(
    ip: IpAddr,
    ua_hash: &str,
    ipv6_prefixes: &[u8],
    key_of: fn(&IpNet, &str) -> String,
) -> Vec<Candidate> {
    lookup_networks(ip, ipv6_prefixes)
        .into_iter()
        .map(|network| Candidate {
            key: key_of(&network, ua_hash),
            network,
        })
        .collect()
}

/// An entry that allowed a request.
#[derive(Debug, Clone, PartialEq)]
pub struct WhitelistHit {
    /// The network whose entry matched.
    pub network: IpNet,
    /// The entry's uid (the fallback uid), `None` when empty.
    pub uid: Option<String>,
}

/// Why the whitelist refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhitelistMiss {
    /// The request path has no key path.
    NoKeyPath,
    /// No entry exists for the viewer's networks and User-Agent.
    NoEntry,
    /// Entries exist but none admits this key path.
    PathNotAdmitted,
}

/// The whitelist check of SPEC §2 step 3 over the values read for `candidates` (same
/// order): the first entry that admits `kp` and whose path occurs in `path` wins.
pub fn check_whitelist(
    candidates: &[Candidate],
    values: &[Option<String>],
    kp: &str,
    path: &str,
) -> Result<WhitelistHit, WhitelistMiss> {
    if kp.is_empty() {
        return Err(WhitelistMiss::NoKeyPath);
    }
    let mut any = false;
    for (c, v) in candidates.iter().zip(values) {
        let Some(entry) = v.as_deref().and_then(WhitelistEntry::parse) else {
            continue;
        };
        any = true;
        if entry.allows(kp, path) {
            return Ok(WhitelistHit {
                network: c.network,
                uid: entry.uid().map(str::to_string),
            });
        }
    }
    Err(if any {
        WhitelistMiss::PathNotAdmitted
    } else {
        WhitelistMiss::NoEntry
    })
}

/// One candidate's part of a whitelist explanation (`/debug/ip-whitelist`).
#[derive(Debug, Clone, Serialize)]
pub struct CandidateReport {
    /// The network looked up.
    pub network: String,
    /// Its store key.
    pub key: String,
    /// The entry found there, if any.
    pub entry: Option<WhitelistEntry>,
    /// Whether this entry admits the request.
    pub allows: bool,
}

/// Explains a whitelist decision: every candidate with its entry and verdict.
pub fn explain(
    candidates: &[Candidate],
    values: &[Option<String>],
    kp: &str,
    path: &str,
) -> Vec<CandidateReport> {
    candidates
        .iter()
        .zip(values)
        .map(|(c, v)| {
            let entry = v.as_deref().and_then(WhitelistEntry::parse);
            CandidateReport {
                network: c.network.to_string(),
                key: c.key.clone(),
                allows: entry.as_ref().is_some_and(|e| e.allows(kp, path)),
                entry,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn adm(kp: &str) -> Admission {
        parse_admission(
            json!({"uid": "u1", "path": format!("/vod/{kp}/index.m3u8"), "clientIp": "1.2.3.4", "UserAgent": "UA"})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn a_path_object_reads_as_its_deserialize_would() {
        let scalars = [
            json!("/vod/a"),
            json!(12),
            json!(1.5),
            json!(true),
            json!(null),
            json!([1]),
            json!({"x": 1}),
            json!(" 42 "),
        ];
        for kp in scalars.iter().map(Some).chain([None]) {
            for at in scalars.iter().map(Some).chain([None]) {
                let mut obj = Map::new();
                obj.insert("note".into(), json!("kept"));
                if let Some(v) = kp {
                    obj.insert("key_path".into(), v.clone());
                }
                if let Some(v) = at {
                    obj.insert("created_at".into(), v.clone());
                }
                let by_serde: PathEntry =
                    serde_json::from_value(Value::Object(obj.clone())).unwrap();
                assert_eq!(
                    PathEntry::from_object(obj),
                    by_serde,
                    "key_path {kp:?}, created_at {at:?}"
                );
            }
        }
    }

    #[test]
    fn parse_body() {
        let a = adm("abc");
        assert_eq!(a.key_path, "abc");
        assert_eq!(a.network.to_string(), "1.2.3.0/24");
        assert_eq!(
            a.key(),
            format!("ip_cidr_access:1.2.3.0_24:{}", ua_hash("UA"))
        );
        let numeric = parse_admission(
            br#"{"uid": 42, "path": "/a/b/c.m3u8", "clientIp": "2001:db8::1", "UserAgent": "x", "extra": 1}"#,
        )
        .unwrap();
        assert_eq!(numeric.uid, "42");
        assert_eq!(numeric.network.to_string(), "2001:db8::1/128");

        let err = |b: &str| parse_admission(b.as_bytes()).unwrap_err();
        assert!(matches!(err("nope"), AdmitError::BadJson));
        assert!(matches!(err("[1]"), AdmitError::BadJson));
        assert!(matches!(
            err(r#"{"path":"/a/b.ts","clientIp":"1.2.3.4","UserAgent":"x"}"#),
            AdmitError::MissingField("uid")
        ));
        assert!(matches!(
            err(r#"{"uid":"","path":"/a/b.ts","clientIp":"1.2.3.4","UserAgent":"x"}"#),
            AdmitError::MissingField("uid")
        ));
        assert!(matches!(
            err(r#"{"uid":"u","path":"/a/b.ts","clientIp":"1.2.3.4"}"#),
            AdmitError::MissingField("UserAgent")
        ));
        assert!(matches!(
            err(r#"{"uid":"u","path":"/a/b.ts","clientIp":"1.2.3","UserAgent":"x"}"#),
            AdmitError::BadClientIp
        ));
        assert!(matches!(
            err(r#"{"uid":"u","path":"/b.ts","clientIp":"1.2.3.4","UserAgent":"x"}"#),
            AdmitError::NoKeyPath
        ));
        assert_eq!(err("nope").status(), 400);
        assert_eq!(AdmitError::Unauthorized.status(), 403);
        assert_eq!(
            AdmitError::MissingField("uid").body(),
            json!({"error": "missing required field: uid"})
        );
    }

    #[test]
    fn admission_paths() {
        assert_eq!(
            admission_path("https://h.example/a/b/i.m3u8?x=1#f"),
            "/a/b/i.m3u8"
        );
        assert_eq!(admission_path("/a/%E8%A7%86/i.m3u8"), "/a/视/i.m3u8");
        assert_eq!(admission_path("https://h.example"), "/");
        assert_eq!(admission_path(" /a/b/c.ts "), "/a/b/c.ts");
    }

    #[test]
    fn fifo_refresh_and_drop() {
        let mut e = None;
        for (t, kp) in [(10, "a"), (11, "b"), (12, "c")] {
            e = Some(merge_admission(e, &adm(kp), t, 3, 1).0);
        }
        let e3 = e.clone().unwrap();
        let names = |e: &WhitelistEntry| {
            e.paths
                .iter()
                .map(|p| p.key_path.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&e3), ["a", "b", "c"]);
        // Re-adding `a` refreshes it; the fourth then drops `b`, the oldest.
        let (e4, info) = merge_admission(Some(e3), &adm("a"), 13, 3, 1);
        assert_eq!(names(&e4), ["b", "c", "a"]);
        assert!(info.dropped.is_empty() && info.existed);
        assert_eq!((info.patterns_new, info.patterns_merged), (0, 1));
        let (e5, info) = merge_admission(Some(e4), &adm("d"), 14, 3, 1);
        assert_eq!(names(&e5), ["c", "a", "d"]);
        assert_eq!(info.dropped, ["b"]);
        assert_eq!(e5.key_path, "d");
        assert_eq!(e5.created_at, 10);
        assert_eq!(e5.paths[1].created_at, 13);
    }

    #[test]
    fn python_entries_are_read_and_extras_kept() {
        let raw = r#"{"uid": 7, "key_path": "k2", "paths": [{"key_path": "k1", "created_at": 1700000000.5, "note": "x"}, "k2", 5, null],
                      "ip_patterns": ["1.2.3.0/24"], "user_agent": "UA", "created_at": 1700000000.25, "worker_pid": 1234, "future": {"a": 1}}"#;
        let e = WhitelistEntry::parse(raw).unwrap();
        assert_eq!(e.uid, "7");
        assert_eq!(e.allowed_paths().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(e.paths[0].created_at, 1_700_000_000);
        let again: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(again["future"], json!({"a": 1}));
        assert_eq!(again["paths"][0]["note"], json!("x"));
        // Minimal entries: only key_path.
        let e = WhitelistEntry::parse(r#"{"key_path": "k"}"#).unwrap();
        assert!(e.allows("k", "/x/k/i.m3u8"));
        assert_eq!(e.uid(), None);
        // Null fields and junk.
        let e =
            WhitelistEntry::parse(r#"{"uid": null, "paths": null, "ip_patterns": "1.2.3.0/24"}"#)
                .unwrap();
        assert_eq!(e.ip_patterns, ["1.2.3.0/24"]);
        assert!(WhitelistEntry::parse("[]").is_none());
        assert!(WhitelistEntry::parse("not json").is_none());
    }

    #[test]
    fn entry_json_has_python_fields() {
        let (e, _) = merge_admission(None, &adm("abc"), 100, 3, 99);
        let v = serde_json::to_value(&e).unwrap();
        for k in [
            "uid",
            "key_path",
            "paths",
            "ip_patterns",
            "user_agent",
            "created_at",
            "worker_pid",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["paths"], json!([{"key_path": "abc", "created_at": 100}]));
        assert_eq!(v["ip_patterns"], json!(["1.2.3.0/24"]));
    }

    #[test]
    fn check_rules() {
        let ip: IpAddr = "1.2.3.99".parse().unwrap();
        let c = candidates(ip, &ua_hash("UA"), &[64]);
        let (e, _) = merge_admission(None, &adm("abc"), 1, 3, 1);
        let v = vec![Some(serde_json::to_string(&e).unwrap())];
        let hit = check_whitelist(&c, &v, "abc", "/vod/abc/1.ts").unwrap();
        assert_eq!(hit.uid.as_deref(), Some("u1"));
        assert_eq!(
            check_whitelist(&c, &v, "abd", "/vod/abd/1.ts"),
            Err(WhitelistMiss::PathNotAdmitted)
        );
        assert_eq!(
            check_whitelist(&c, &v, "", "/1.ts"),
            Err(WhitelistMiss::NoKeyPath)
        );
        assert_eq!(
            check_whitelist(&c, &[None], "abc", "/vod/abc/1.ts"),
            Err(WhitelistMiss::NoEntry)
        );
        assert_eq!(
            check_whitelist(&c, &[Some("junk".into())], "abc", "/vod/abc/1.ts"),
            Err(WhitelistMiss::NoEntry)
        );
        assert!(explain(&c, &v, "abc", "/vod/abc/1.ts")[0].allows);
    }

    #[test]
    fn response_fields() {
        let a = adm("abc");
        let (e, info) = merge_admission(None, &a, 1, 3, 1);
        let r = admission_response(&a, &e, &info, 3600, 3);
        for k in [
            "message",
            "key_path",
            "ip_pattern",
            "cidr_examples",
            "ua_hash",
            "ttl",
            "patterns_merged",
            "patterns_new",
        ] {
            assert!(r.get(k).is_some(), "{k}");
        }
        assert_eq!(r["multi_path_info"]["max_paths_per_cidr"], json!(3));
        assert_eq!(r["multi_path_info"]["current_path"], json!("abc"));
        assert_eq!(r["ip_pattern"], json!("1.2.3.0/24"));
        assert_eq!(r["ttl"], json!(3600));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn merge_keeps_at_most_max_and_newest(ops in proptest::collection::vec(0u8..6, 1..30), max in 1usize..5) {
            let mut e = None;
            for (t, k) in ops.iter().enumerate() {
                let kp = format!("k{k}");
                let (next, _) = merge_admission(e, &adm(&kp), t as i64, max, 1);
                prop_assert!(next.paths.len() <= max);
                prop_assert_eq!(&next.paths.last().unwrap().key_path, &kp);
                let mut seen: Vec<&str> = next.paths.iter().map(|p| p.key_path.as_str()).collect();
                seen.dedup();
                prop_assert_eq!(seen.len(), next.paths.len());
                e = Some(next);
            }
        }

        /// Admission bodies shaped like the real ones, every field of any JSON type
        /// (the three admission APIs' parsers): no panic, whatever the values.
        #[test]
        fn admission_bodies_never_panic(fields in proptest::collection::vec((
            prop_oneof![Just("uid".to_string()), Just("path".to_string()), Just("clientIp".to_string()), Just("UserAgent".to_string()), Just("jsPath".to_string()), "\\PC{0,6}"],
            prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                "\\PC{0,40}".prop_map(serde_json::Value::from),
                "[0-9a-f.:/]{0,43}".prop_map(serde_json::Value::from),
                "(https?://[a-z.]{1,8})?(/[a-z0-9%.;-]{0,8}){0,5}".prop_map(serde_json::Value::from),
                proptest::collection::vec("\\PC{0,5}", 0..3).prop_map(serde_json::Value::from),
            ],
        ), 0..7)) {
            let obj: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .collect();
            let body = serde_json::Value::Object(obj).to_string();
            let _ = parse_admission(body.as_bytes());
            let _ = crate::access::static_file::parse_static_admission(body.as_bytes());
        }

        #[test]
        fn never_panics_on_junk(s in "\\PC{0,200}") {
            let _ = WhitelistEntry::parse(&s);
            let _ = parse_admission(s.as_bytes());
        }
    }
}
