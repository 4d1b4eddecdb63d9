//! Viewer controls of SPEC §13 as plain logic over the [`Store`]: concurrent streams
//! per uid, revocation marks, and per-uid traffic quotas. No HTTP types in here; the
//! runtime side (polling the revocation feed, flushing quota batches, cutting live
//! transfers, `POST /api/revoke`) is the `viewer_controls` module.
//!
//! - **Streams.** A uid's streams are the members of the sorted set
//!   `uid_streams:{<uid>}` (member `"{ip}|{ua_hash}|{key path}"`, score = last request
//!   in Unix milliseconds); [`Store::touch_member`] prunes the idle ones, refreshes or
//!   adds this one, or refuses a newcomer past `limits.max_streams_per_uid` — one
//!   atomic step, one round trip, one key (so one Cluster slot).
//! - **Quota.** Bytes delivered are batched per instance ([`QuotaLedger`]) and added
//!   every second to `uid_quota:{<uid>}:<window number>` with
//!   [`Store::incr_by_once`], whose per-batch marker `uid_quota_batch:{<uid>}:…` (same
//!   hash tag, same slot) makes a retried batch count once. A request reads the
//!   counter (one `get`) and adds the bytes this instance has not flushed yet.
//! - **Revocation.** `POST /api/revoke` writes the uid into the feed
//!   `fileproxy:revocations` (JSON map uid → [`RevokedUid`], entries live
//!   `auth.ip_access_ttl_s`) and bumps `fileproxy:revocations:seq`. Every instance
//!   polls the sequence number every [`REVOCATION_POLL`] and reloads the map when it
//!   moved, so the check on the request path is a local lookup ([`Revocations`]):
//!   **zero** round trips. The local copy is kept when the store is unreachable, so
//!   revocations stay honoured during an outage ([`Revocations::is_revoked`] is the
//!   hook for the store-outage memory of SPEC §11).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::client_ip::canonical_ip;
use super::{Allow, Decision, DenyReason, Policy, FIXED_WHITELIST_UID};
use crate::config::LimitsConfig;
use crate::store::{Store, StoreError, MAX_TTL};

/// How often an instance polls the revocation feed (well inside SPEC's 1 s).
pub const REVOCATION_POLL: Duration = Duration::from_millis(250);

/// How often an instance flushes its quota batches to the store.
pub const QUOTA_FLUSH: Duration = Duration::from_secs(1);

/// The revocation feed: JSON map uid → [`RevokedUid`].
pub const REVOCATIONS_KEY: &str = "fileproxy:revocations";

/// Bumped after every change of [`REVOCATIONS_KEY`]; instances poll it.
pub const REVOCATIONS_SEQ_KEY: &str = "fileproxy:revocations:seq";

/// Viewers (network + UA hash) remembered per revoked uid.
const MAX_VIEWERS: usize = 256;

/// `403` text of a refused extra stream.
pub fn streams_text(uid: &str) -> String {
    format!("Access Denied 100410 too many concurrent streams for uid:{uid}")
}

/// `403` text of a revoked uid.
pub fn revoked_text(uid: &str) -> String {
    format!("Access Denied 100403 revoked uid:{uid}")
}

/// `403` text of a uid past its traffic quota.
pub fn quota_text(uid: &str) -> String {
    format!("Access Denied 100429 traffic quota exceeded for uid:{uid}")
}

/// `uid_streams:{<uid>}` (hash-tagged by uid).
pub fn streams_key(uid: &str) -> String {
    format!("uid_streams:{{{uid}}}")
}

/// The stream member of a viewer: `"{ip}|{ua_hash}|{key path}"`.
pub fn stream_member(ip: IpAddr, ua_hash: &str, kp: &str) -> String {
    format!("{}|{ua_hash}|{kp}", canonical_ip(ip))
}

/// The number of the quota window holding `now` (Unix seconds).
pub fn quota_window(now: u64, window_s: u64) -> u64 {
    now / window_s.max(1)
}

/// `uid_quota:{<uid>}:<window>`.
pub fn quota_key(uid: &str, window: u64) -> String {
    format!("uid_quota:{{{uid}}}:{window}")
}

/// `uid_quota_batch:{<uid>}:<window>:<batch id>` (same slot as [`quota_key`]).
pub fn quota_marker(uid: &str, window: u64, batch: &str) -> String {
    format!("uid_quota_batch:{{{uid}}}:{window}:{batch}")
}

/// One revoked uid, as written to the feed and held by every instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedUid {
    /// Every key path is revoked.
    #[serde(default)]
    pub all: bool,
    /// Revoked key paths (when not `all`).
    #[serde(default)]
    pub key_paths: Vec<String>,
    /// When it was (last) revoked, Unix seconds.
    #[serde(default)]
    pub at: i64,
    /// When the mark lapses, Unix seconds.
    #[serde(default)]
    pub until: i64,
    /// Viewers whose admissions were deleted, as `"{network}|{ua_hash}"`: a request of
    /// theirs that no whitelist entry admits any more is still attributed to the uid.
    #[serde(default)]
    pub viewers: Vec<String>,
}

impl RevokedUid {
    /// Whether the mark covers key path `kp` at `now`.
    pub fn covers(&self, kp: &str, now: i64) -> bool {
        self.until > now && (self.all || self.key_paths.iter().any(|p| p == kp))
    }

    /// Merges a newer revocation of the same uid into this one.
    pub fn merge(&mut self, newer: RevokedUid) {
        if newer.all {
            self.all = true;
            self.key_paths.clear();
        } else if !self.all {
            for kp in newer.key_paths {
                if !self.key_paths.contains(&kp) {
                    self.key_paths.push(kp);
                }
            }
        }
        self.at = self.at.max(newer.at);
        self.until = self.until.max(newer.until);
        for v in newer.viewers {
            if !self.viewers.contains(&v) {
                self.viewers.push(v);
            }
        }
        let excess = self.viewers.len().saturating_sub(MAX_VIEWERS);
        self.viewers.drain(..excess);
    }
}

/// `"{network}|{ua_hash}"` of a viewer tombstone.
pub fn viewer_tag(net: &IpNet, ua_hash: &str) -> String {
    format!("{net}|{ua_hash}")
}

/// Parses the feed map; junk reads as empty, lapsed entries are dropped.
pub fn parse_feed(raw: Option<&str>, now: i64) -> BTreeMap<String, RevokedUid> {
    let mut map: BTreeMap<String, RevokedUid> = raw
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    map.retain(|_, r| r.until > now);
    map
}

#[derive(Debug, Default)]
struct RevState {
    /// The feed sequence number this copy reflects (0 = no feed seen yet).
    seq: u64,
    map: BTreeMap<String, RevokedUid>,
    /// Parsed viewer tombstones: (network, UA hash, uid).
    viewers: Vec<(IpNet, String, String)>,
}

/// This instance's copy of the revocation feed (read on every request, no I/O).
#[derive(Debug, Default)]
pub struct Revocations {
    state: RwLock<RevState>,
}

impl Revocations {
    /// Whether `uid` is revoked for key path `kp` at `now`. The store-outage memory
    /// of SPEC §11 must call this before it lets a remembered viewer through.
    pub fn is_revoked(&self, uid: &str, kp: &str, now: i64) -> bool {
        self.state
            .read()
            .map(|s| s.map.get(uid).is_some_and(|r| r.covers(kp, now)))
            .unwrap_or(false)
    }

    /// The revoked uid a viewer (IP, UA hash) was attributed to before its
    /// admissions were deleted, when the mark covers `kp`.
    pub fn revoked_viewer(&self, ip: IpAddr, ua_hash: &str, kp: &str, now: i64) -> Option<String> {
        let ip = canonical_ip(ip);
        let s = self.state.read().ok()?;
        s.viewers
            .iter()
            .filter(|(net, ua, _)| ua == ua_hash && net.contains(&ip))
            .map(|(_, _, uid)| uid)
            .find(|uid| s.map.get(*uid).is_some_and(|r| r.covers(kp, now)))
            .cloned()
    }

    /// The mark of `uid`, if any (lapsed or not).
    pub fn get(&self, uid: &str) -> Option<RevokedUid> {
        self.state.read().ok()?.map.get(uid).cloned()
    }

    /// Whether no uid is revoked.
    pub fn is_empty(&self) -> bool {
        self.state.read().map(|s| s.map.is_empty()).unwrap_or(true)
    }

    /// A copy of every mark.
    pub fn snapshot(&self) -> BTreeMap<String, RevokedUid> {
        self.state.read().map(|s| s.map.clone()).unwrap_or_default()
    }

    /// Replaces the copy with `map` (as read from the feed at sequence `seq`), unless
    /// the copy already reflects a later sequence (a poll that read the feed before
    /// this instance's own revocation must not undo it).
    pub fn replace(&self, map: BTreeMap<String, RevokedUid>, seq: u64) {
        let viewers = map
            .iter()
            .flat_map(|(uid, r)| {
                r.viewers.iter().filter_map(move |v| {
                    let (net, ua) = v.rsplit_once('|')?;
                    Some((net.parse::<IpNet>().ok()?, ua.to_string(), uid.clone()))
                })
            })
            .collect();
        if let Ok(mut s) = self.state.write() {
            if seq >= s.seq {
                *s = RevState { seq, map, viewers };
            }
        }
    }

    fn seq(&self) -> u64 {
        self.state.read().map(|s| s.seq).unwrap_or(0)
    }

    /// Polls the feed: one `get` of the sequence number, plus one of the map when it
    /// moved. On a store error the copy is kept as it is (and the error returned).
    pub async fn sync(&self, store: &dyn Store, now: i64) -> Result<bool, StoreError> {
        let seq = store
            .get(REVOCATIONS_SEQ_KEY)
            .await?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let seen = self.seq();
        if seq == seen {
            // Nothing new; just let lapsed marks go.
            if let Ok(mut s) = self.state.write() {
                s.map.retain(|_, r| r.until > now);
            }
            return Ok(false);
        }
        let raw = store.get(REVOCATIONS_KEY).await?;
        self.replace(parse_feed(raw.as_deref(), now), seq);
        Ok(true)
    }
}

/// Bumps the feed's sequence number (after a change of the map).
pub async fn bump_feed(store: &dyn Store) -> Result<u64, StoreError> {
    Ok(store.incr_window(REVOCATIONS_SEQ_KEY, MAX_TTL).await?.count)
}

/// One quota batch: bytes of one uid in one window, with a stable id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Batch {
    uid: String,
    window: u64,
    bytes: u64,
    id: String,
}

/// Bytes delivered by this instance and not yet counted in the store.
#[derive(Debug)]
pub struct QuotaLedger {
    /// (uid, window) → bytes since the last flush.
    pending: Mutex<HashMap<(String, u64), u64>>,
    /// Batches cut from `pending`, each with its id, until the store confirms them.
    unsent: Mutex<Vec<Batch>>,
    /// Random per process; batch ids are `{instance}-{n}`.
    instance: String,
    next: AtomicU64,
}

impl Default for QuotaLedger {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            unsent: Mutex::default(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            next: AtomicU64::new(0),
        }
    }
}

impl QuotaLedger {
    /// Adds `bytes` delivered to `uid` in window `window`.
    pub fn record(&self, uid: &str, window: u64, bytes: u64) {
        if bytes == 0 {
            return;
        }
        if let Ok(mut p) = self.pending.lock() {
            let slot = p.entry((uid.to_string(), window)).or_insert(0);
            *slot = slot.saturating_add(bytes);
        }
    }

    /// Bytes of `uid` in `window` this instance has not had confirmed by the store.
    pub fn local(&self, uid: &str, window: u64) -> u64 {
        let pending = self
            .pending
            .lock()
            .ok()
            .and_then(|p| p.get(&(uid.to_string(), window)).copied())
            .unwrap_or(0);
        let unsent: u64 = self
            .unsent
            .lock()
            .map(|u| {
                u.iter()
                    .filter(|b| b.uid == uid && b.window == window)
                    .map(|b| b.bytes)
                    .sum()
            })
            .unwrap_or(0);
        pending.saturating_add(unsent)
    }

    /// Sends every batch to the store ([`Store::incr_by_once`], so a batch whose
    /// answer was lost and is sent again counts once). Batches that fail stay for the
    /// next flush; those of windows already over are dropped. Returns (sent, kept).
    pub async fn flush(&self, store: &dyn Store, current: u64, window: Duration) -> (usize, usize) {
        let drained: Vec<((String, u64), u64)> = match self.pending.lock() {
            Ok(mut p) => p.drain().collect(),
            Err(_) => Vec::new(),
        };
        let batches: Vec<Batch> = {
            let Ok(mut u) = self.unsent.lock() else {
                return (0, 0);
            };
            for ((uid, w), bytes) in drained {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                u.push(Batch {
                    uid,
                    window: w,
                    bytes,
                    id: format!("{}-{n}", self.instance),
                });
            }
            // A counter of an ended window no longer refuses anyone.
            u.retain(|b| b.window >= current);
            u.clone()
        };
        let mut sent = Vec::new();
        for b in &batches {
            let key = quota_key(&b.uid, b.window);
            let marker = quota_marker(&b.uid, b.window, &b.id);
            match store.incr_by_once(&key, &marker, b.bytes, window).await {
                Ok(_) => sent.push(b.id.clone()),
                Err(e) => {
                    tracing::warn!(uid = %b.uid, bytes = b.bytes, error = %e, "quota batch not counted yet; retrying");
                    break;
                }
            }
        }
        let kept = match self.unsent.lock() {
            Ok(mut u) => {
                u.retain(|b| !sent.contains(&b.id));
                u.len()
            }
            Err(_) => 0,
        };
        (sent.len(), kept)
    }
}

/// The viewer-control state of a [`Policy`].
#[derive(Debug, Default)]
pub struct Controls {
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// This instance's copy of the revocation feed.
    pub revocations: std::sync::Arc<Revocations>,
    /// Bytes not yet counted in the store.
    pub quota: std::sync::Arc<QuotaLedger>,
}

impl Controls {
    /// The controls of `[limits]`.
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            limits: limits.clone(),
            ..Self::default()
        }
    }

    /// Whether concurrent streams are limited.
    pub fn streams_on(&self) -> bool {
        self.limits.max_streams_per_uid > 0
    }

    /// Whether a traffic quota is set.
    pub fn quota_on(&self) -> bool {
        self.limits.uid_quota_bytes > 0
    }

    /// The quota window length.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.limits.uid_quota_window_s.max(1))
    }

    /// The quota window holding `now`.
    pub fn window_of(&self, now: u64) -> u64 {
        quota_window(now, self.limits.uid_quota_window_s)
    }

    /// Accounts bytes delivered to `uid` (the end of a transfer); no-op when the
    /// quota is off.
    pub fn record_bytes(&self, uid: &str, bytes: u64, now: u64) {
        if self.quota_on() && uid != FIXED_WHITELIST_UID {
            self.quota.record(uid, self.window_of(now), bytes);
        }
    }
}

/// A uid subject to streams and quota: non-empty and not the fixed-whitelist one.
fn controlled(uid: Option<&str>) -> Option<&str> {
    uid.filter(|u| !u.is_empty() && *u != FIXED_WHITELIST_UID)
}

/// `now` (Unix seconds) in milliseconds: the wall clock's when it is in that second
/// (so a slot frees `stream_idle_s` after the last request, not up to 1 s later),
/// else `now * 1000` (a request with a synthetic time).
fn now_millis(now: u64) -> u64 {
    let wall = crate::clock::unix_ms();
    if wall / 1000 == now {
        wall
    } else {
        now.saturating_mul(1000)
    }
}

fn i64_of(now: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX)
}

impl Policy {
    /// Applies `[limits]` (SPEC §13) to the policy.
    pub fn with_limits(mut self, limits: &LimitsConfig) -> Self {
        self.controls = Controls::new(limits);
        self
    }

    /// The viewer-control state (revocation copy, quota ledger, limits).
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// SPEC §13 for an allowed request, before its playlist checks: a revoked uid
    /// (effective or the token's) is refused with no store work; then, when on, the
    /// quota counter is read and the stream touched (concurrently: one round trip of
    /// latency, one store operation each).
    pub(super) async fn check_controls(
        &self,
        req: &super::AccessRequest<'_>,
        ip: IpAddr,
        ua_hash: &str,
        allow: &Allow,
    ) -> Result<(), Decision> {
        let now = i64_of(req.now);
        let kp = allow.key_path.as_str();
        let token_uid = req.uid.filter(|u| !u.is_empty());
        for uid in [allow.uid.as_deref(), token_uid].into_iter().flatten() {
            if self.controls.revocations.is_revoked(uid, kp, now) {
                return Err(Decision::deny(403, revoked_text(uid), DenyReason::Revoked));
            }
        }
        let Some(uid) = controlled(allow.uid.as_deref()) else {
            return Ok(());
        };
        let c = &self.controls;
        let quota = async {
            if !c.quota_on() {
                return Ok(None);
            }
            let w = c.window_of(req.now);
            let stored = self
                .store
                .get(&quota_key(uid, w))
                .await?
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            Ok::<_, StoreError>(Some(stored.saturating_add(c.quota.local(uid, w))))
        };
        let streams = async {
            if !c.streams_on() || kp.is_empty() {
                return Ok(None);
            }
            let idle = Duration::from_secs(c.limits.stream_idle_s.max(1));
            let now_ms = now_millis(req.now);
            self.store
                .touch_member(
                    &streams_key(uid),
                    &stream_member(ip, ua_hash, kp),
                    now_ms,
                    idle,
                    c.limits.max_streams_per_uid,
                )
                .await
                .map(Some)
        };
        let (used, touch) = tokio::join!(quota, streams);
        let used = used.map_err(|e| Decision::store_down(&e))?;
        let touch = touch.map_err(|e| Decision::store_down(&e))?;
        if used.is_some_and(|u| u >= c.limits.uid_quota_bytes) {
            return Err(Decision::deny(
                403,
                quota_text(uid),
                DenyReason::QuotaExceeded,
            ));
        }
        if touch.is_some_and(|t| !t.admitted) {
            return Err(Decision::deny(
                403,
                streams_text(uid),
                DenyReason::StreamLimit,
            ));
        }
        Ok(())
    }

    /// A whitelist refusal, unless the viewer (or the request's token uid) belongs to
    /// a revoked uid: then the revoked text (SPEC §13: every request attributed to it).
    pub(super) fn miss_or_revoked(
        &self,
        req: &super::AccessRequest<'_>,
        ip: IpAddr,
        ua_hash: &str,
        kp: &str,
        miss: super::whitelist::WhitelistMiss,
    ) -> Decision {
        let now = i64_of(req.now);
        let r = &self.controls.revocations;
        let by_token = req
            .uid
            .filter(|u| !u.is_empty() && r.is_revoked(u, kp, now))
            .map(str::to_string);
        match by_token.or_else(|| r.revoked_viewer(ip, ua_hash, kp, now)) {
            Some(uid) => Decision::deny(403, revoked_text(&uid), DenyReason::Revoked),
            None => Decision::whitelist_miss(miss),
        }
    }

    /// What an operator needs to see about a uid (`/debug/uid`): live streams, quota
    /// use in the current window, revoked state. Reads only.
    pub async fn explain_uid(&self, uid: &str, now: u64) -> Result<serde_json::Value, StoreError> {
        let c = &self.controls;
        let idle_ms = c.limits.stream_idle_s.max(1).saturating_mul(1000);
        let since = now_millis(now).saturating_sub(idle_ms);
        let streams = self.store.members_since(&streams_key(uid), since).await?;
        let w = c.window_of(now);
        let stored = self
            .store
            .get(&quota_key(uid, w))
            .await?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let local = c.quota.local(uid, w);
        let window_s = c.limits.uid_quota_window_s.max(1);
        let mark = c.revocations.get(uid);
        let revoked = mark.as_ref().is_some_and(|m| m.until > i64_of(now));
        Ok(serde_json::json!({
            "uid": uid,
            "streams": {
                "max": c.limits.max_streams_per_uid,
                "idle_s": c.limits.stream_idle_s,
                "live": streams.len(),
                "list": streams.iter().map(|(m, last)| {
                    let mut parts = m.splitn(3, '|');
                    serde_json::json!({
                        "client_ip": parts.next(),
                        "ua_hash": parts.next(),
                        "key_path": parts.next(),
                        "last_seen_ms": last,
                    })
                }).collect::<Vec<_>>(),
            },
            "quota": {
                "limit_bytes": c.limits.uid_quota_bytes,
                "window_s": window_s,
                "window_start": w.saturating_mul(window_s),
                "window_end": (w + 1).saturating_mul(window_s),
                "used_bytes": stored.saturating_add(local),
                "unflushed_bytes": local,
                "exceeded": c.quota_on() && stored.saturating_add(local) >= c.limits.uid_quota_bytes,
            },
            "revoked": revoked,
            "revocation": mark.filter(|_| revoked).map(|m| serde_json::json!({
                "all": m.all,
                "key_paths": m.key_paths,
                "at": m.at,
                "until": m.until,
            })),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn keys_share_the_uid_hash_tag() {
        assert_eq!(streams_key("u1"), "uid_streams:{u1}");
        assert_eq!(quota_key("u1", 7), "uid_quota:{u1}:7");
        assert_eq!(quota_marker("u1", 7, "b"), "uid_quota_batch:{u1}:7:b");
        assert_eq!(
            stream_member("::ffff:1.2.3.4".parse().unwrap(), "abcd0123", "kp"),
            "1.2.3.4|abcd0123|kp"
        );
        assert_eq!(quota_window(7199, 3600), 1);
    }

    #[test]
    fn marks_cover_key_paths_and_lapse() {
        let mut r = RevokedUid {
            all: false,
            key_paths: vec!["a".into()],
            at: 10,
            until: 100,
            viewers: vec![],
        };
        assert!(r.covers("a", 50));
        assert!(!r.covers("b", 50));
        assert!(!r.covers("a", 100));
        r.merge(RevokedUid {
            all: false,
            key_paths: vec!["b".into()],
            at: 20,
            until: 200,
            viewers: vec!["1.2.3.0/24|abcd0123".into()],
        });
        assert!(r.covers("b", 150) && r.covers("a", 150));
        r.merge(RevokedUid {
            all: true,
            key_paths: vec![],
            at: 30,
            until: 120,
            viewers: vec![],
        });
        assert!(r.all && r.covers("zzz", 150));
        assert_eq!(r.until, 200);
    }

    #[tokio::test]
    async fn feed_sync_and_viewer_tombstones() {
        let store = MemoryStore::new();
        let rev = Revocations::default();
        assert!(
            !rev.sync(&store, 0).await.unwrap(),
            "no feed yet: nothing to load"
        );
        let mut map = BTreeMap::new();
        map.insert(
            "u".to_string(),
            RevokedUid {
                all: true,
                key_paths: vec![],
                at: 1,
                until: 1000,
                viewers: vec!["10.0.0.0/24|abcd0123".into()],
            },
        );
        store
            .set(
                REVOCATIONS_KEY,
                &serde_json::to_string(&map).unwrap(),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        bump_feed(&store).await.unwrap();
        assert!(rev.sync(&store, 5).await.unwrap());
        assert!(rev.is_revoked("u", "anything", 5));
        assert!(!rev.is_revoked("v", "anything", 5));
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(
            rev.revoked_viewer(ip, "abcd0123", "kp", 5).as_deref(),
            Some("u")
        );
        assert_eq!(rev.revoked_viewer(ip, "ffff0000", "kp", 5), None);
        // Unchanged sequence: no reload; lapsed marks are dropped locally.
        assert!(!rev.sync(&store, 6).await.unwrap());
        rev.sync(&store, 2000).await.unwrap();
        assert!(!rev.is_revoked("u", "kp", 2000));
    }

    #[tokio::test]
    async fn quota_batches_count_once_and_survive_failures() {
        let store = MemoryStore::new();
        let l = QuotaLedger::default();
        l.record("u", 5, 100);
        l.record("u", 5, 50);
        l.record("v", 5, 1);
        assert_eq!(l.local("u", 5), 150);
        assert_eq!(l.flush(&store, 5, Duration::from_secs(60)).await, (2, 0));
        assert_eq!(l.local("u", 5), 0);
        assert_eq!(
            store.get(&quota_key("u", 5)).await.unwrap().as_deref(),
            Some("150")
        );
        // Bytes of ended windows are dropped at the next flush.
        l.record("u", 4, 10);
        assert_eq!(l.flush(&store, 5, Duration::from_secs(60)).await, (0, 0));
    }
}
