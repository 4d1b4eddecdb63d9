//! Event lists behind the operator views (SPEC §9): recent requests, refusals, replays
//! and key-file accesses, newest first, each bounded by `protect.event_log_capacity`.
//!
//! Every event goes into a per-process ring in memory. Refusals, replays and key
//! accesses are also pushed to capped store lists
//! ([`crate::access::protect_rules::log_keys`]) so the views show the events of every
//! process sharing the store: one background task per process writes them in the order
//! they happened, fed by a bounded queue of [`PUSH_QUEUE`] events; when the queue is
//! full (store slow or down) further events stay in memory only (counted as
//! `store_push_dropped`), so the response path never waits for the store. Events still
//! queued when the process exits are lost (they are views, not records). Recent
//! requests stay in memory (one store write per request would cost more than the view
//! is worth). The views read the store list and fall back to memory when it fails.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::access::protect_rules::log_keys;
use crate::access::{AccessRequest, Decision};
use crate::store::SharedStore;

/// Events waiting to be written to the store, at most.
pub const PUSH_QUEUE: usize = 1024;

/// Which list a view reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// Every request answered (memory only).
    Recent,
    /// Refused viewer requests.
    Denied,
    /// Token and key replays.
    Replay,
    /// Key-file requests under key protection.
    KeyAccess,
}

impl LogKind {
    /// The store list of this kind (`None`: memory only).
    pub fn store_key(self) -> Option<&'static str> {
        match self {
            LogKind::Recent => None,
            LogKind::Denied => Some(log_keys::DENIED),
            LogKind::Replay => Some(log_keys::REPLAY),
            LogKind::KeyAccess => Some(log_keys::KEY_ACCESS),
        }
    }
}

/// A bounded ring, newest at the front.
#[derive(Debug)]
struct Ring<T> {
    cap: usize,
    items: Mutex<VecDeque<T>>,
}

impl<T: Clone> Ring<T> {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            items: Mutex::new(VecDeque::with_capacity(cap.min(1024))),
        }
    }

    fn push(&self, v: T) {
        if let Ok(mut g) = self.items.lock() {
            g.push_front(v);
            g.truncate(self.cap);
        }
    }

    fn newest(&self, limit: usize) -> Vec<T> {
        self.items
            .lock()
            .map(|g| g.iter().take(limit).cloned().collect())
            .unwrap_or_default()
    }
}

/// Lifetime totals of this process.
#[derive(Debug, Default)]
struct Totals {
    recorded: AtomicU64,
    denied: AtomicU64,
    replays: AtomicU64,
    key_allowed: AtomicU64,
    key_denied: AtomicU64,
    pushes_dropped: AtomicU64,
    reasons: Mutex<BTreeMap<&'static str, u64>>,
}

/// One answered request in the recent ring. Typed rather than a JSON value: one is
/// built, and the oldest dropped, for every request, so it holds a handful of
/// allocations instead of a map of them; it becomes JSON when a view reads it. Fields
/// are in the order the JSON has always shown them (alphabetical).
#[derive(Debug, Clone, Serialize)]
struct RecentAccess {
    bytes: u64,
    client_ip: std::net::IpAddr,
    duration_ms: f64,
    first_byte_ms: Option<f64>,
    method: Box<str>,
    outcome: Box<str>,
    path: Box<str>,
    reason: Option<Box<str>>,
    status: u16,
    ts: u64,
    uid: Option<Box<str>>,
    user_agent: Box<str>,
}

/// The event lists of one process.
pub struct EventLog {
    cap: usize,
    store: SharedStore,
    /// Queue of the store writer; `None` outside a Tokio runtime (memory only).
    queue: Option<mpsc::Sender<(&'static str, String)>>,
    /// Every request answered (memory only).
    recent: Ring<RecentAccess>,
    /// The lists that are also in the store.
    rings: HashMap<LogKind, Ring<Value>>,
    totals: Arc<Totals>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

/// A finished (or refused) request for the recent list.
#[derive(Debug, Clone)]
pub struct AccessEvent<'a> {
    /// Client IP.
    pub client_ip: std::net::IpAddr,
    /// `GET` or `HEAD`.
    pub method: &'a str,
    /// Request path (no query).
    pub path: &'a str,
    /// Effective uid.
    pub uid: Option<&'a str>,
    /// Status sent.
    pub status: u16,
    /// Body bytes delivered.
    pub bytes: u64,
    /// How it ended (`completed`, `client_closed`, `origin_error`, `denied`, …).
    pub outcome: &'a str,
    /// Refusal reason, if refused.
    pub reason: Option<&'a str>,
    /// Time to first byte in milliseconds.
    pub first_byte_ms: Option<f64>,
    /// Total time in milliseconds.
    pub duration_ms: f64,
    /// User-Agent.
    pub user_agent: &'a str,
}

use crate::clock::unix_secs as unix_now;

/// Writes queued events to their store lists, one at a time, in order.
async fn store_writer(
    mut rx: mpsc::Receiver<(&'static str, String)>,
    store: SharedStore,
    cap: usize,
    ttl: Duration,
) {
    while let Some((key, raw)) = rx.recv().await {
        if let Err(e) = store.push_capped(key, &raw, cap, ttl).await {
            tracing::debug!(error = %e, list = key, "operator-view event not stored");
        }
    }
}

impl EventLog {
    /// An empty log holding `cap` events per list, store lists with `ttl`. Inside a
    /// Tokio runtime it starts the store writer task (it ends with the log).
    pub fn new(cap: usize, ttl: Duration, store: SharedStore) -> Self {
        let cap = cap.max(1);
        let rings = [LogKind::Denied, LogKind::Replay, LogKind::KeyAccess]
            .into_iter()
            .map(|k| (k, Ring::new(cap)))
            .collect();
        let totals = Arc::new(Totals::default());
        let queue = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (tx, rx) = mpsc::channel(PUSH_QUEUE);
            rt.spawn(store_writer(rx, store.clone(), cap, ttl));
            tx
        });
        Self {
            cap,
            store,
            queue,
            recent: Ring::new(cap),
            rings,
            totals,
        }
    }

    /// The capacity of each list.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn ring(&self, kind: LogKind) -> Option<&Ring<Value>> {
        self.rings.get(&kind)
    }

    /// Adds an event to a list (memory, and the store list in the background).
    fn record(&self, kind: LogKind, v: Value) {
        if let Some(key) = kind.store_key() {
            self.push_to_store(key, &v);
        }
        if let Some(r) = self.ring(kind) {
            r.push(v);
        }
    }

    fn push_to_store(&self, key: &'static str, v: &Value) {
        let queued = self
            .queue
            .as_ref()
            .is_some_and(|q| q.try_send((key, v.to_string())).is_ok());
        if !queued {
            self.totals.pushes_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a request that produced a response (transfer end, origin error, or
    /// refusal) in the recent list.
    pub fn record_access(&self, ev: &AccessEvent<'_>) {
        self.totals.recorded.fetch_add(1, Ordering::Relaxed);
        self.recent.push(RecentAccess {
            ts: unix_now(),
            client_ip: ev.client_ip,
            method: ev.method.into(),
            path: ev.path.into(),
            uid: ev.uid.map(Into::into),
            status: ev.status,
            bytes: ev.bytes,
            outcome: ev.outcome.into(),
            reason: ev.reason.map(Into::into),
            first_byte_ms: ev.first_byte_ms,
            duration_ms: ev.duration_ms,
            user_agent: ev.user_agent.into(),
        });
    }

    /// Records what the policy decided about a viewer request: refusals (denied list,
    /// and replay list for replays) and, for key files under key protection, every
    /// decision (key-access list). Tokens are never recorded.
    pub fn record_decision(&self, req: &AccessRequest<'_>, decision: &Decision, key_file: bool) {
        let base = |extra: Value| {
            let mut v = json!({
                "ts": req.now,
                "client_ip": req.client_ip.to_string(),
                "path": req.path,
                "uid": req.uid,
                "user_agent": req.user_agent,
            });
            if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            v
        };
        match decision {
            Decision::Deny {
                status,
                body,
                reason,
            } => {
                self.totals.denied.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = self.totals.reasons.lock() {
                    *g.entry(reason.as_str()).or_insert(0) += 1;
                }
                let ev =
                    base(json!({"status": status, "reason": reason.as_str(), "message": body}));
                if reason.is_replay() {
                    self.totals.replays.fetch_add(1, Ordering::Relaxed);
                    self.record(LogKind::Replay, ev.clone());
                }
                if key_file {
                    self.totals.key_denied.fetch_add(1, Ordering::Relaxed);
                    self.record(
                        LogKind::KeyAccess,
                        base(
                            json!({"allowed": false, "status": status, "reason": reason.as_str()}),
                        ),
                    );
                }
                self.record(LogKind::Denied, ev);
            }
            Decision::Allow(a) if key_file => {
                self.totals.key_allowed.fetch_add(1, Ordering::Relaxed);
                self.record(
                    LogKind::KeyAccess,
                    base(json!({"allowed": true, "status": 200, "uses": a.key_uses})),
                );
            }
            Decision::Redirect { .. } if key_file => {
                self.totals.key_allowed.fetch_add(1, Ordering::Relaxed);
                self.record(
                    LogKind::KeyAccess,
                    base(json!({"allowed": true, "status": 302})),
                );
            }
            _ => {}
        }
    }

    /// The newest `limit` events of a list and where they came from (`store` or
    /// `memory`).
    pub async fn list(&self, kind: LogKind, limit: usize) -> (Vec<Value>, &'static str) {
        let limit = limit.clamp(1, self.cap);
        if kind == LogKind::Recent {
            let items = self
                .recent
                .newest(limit)
                .iter()
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect();
            return (items, "memory");
        }
        if let Some(key) = kind.store_key() {
            match self.store.list_range(key, limit).await {
                Ok(items) => {
                    return (
                        items
                            .iter()
                            .filter_map(|s| serde_json::from_str(s).ok())
                            .collect(),
                        "store",
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, list = key, "operator view: store list unreadable, showing this process's events");
                }
            }
        }
        (
            self.ring(kind).map(|r| r.newest(limit)).unwrap_or_default(),
            "memory",
        )
    }

    /// `/api/access-logs/summary`: lifetime totals of this process and figures over
    /// its newest `limit` recent requests.
    pub fn summary(&self, limit: usize) -> Value {
        let recent = self.recent.newest(limit.clamp(1, self.cap));
        let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
        let mut paths: HashMap<String, u64> = HashMap::new();
        let mut uids: HashMap<String, u64> = HashMap::new();
        let mut ips: HashMap<String, u64> = HashMap::new();
        let mut bytes = 0u64;
        for e in &recent {
            *by_status.entry(e.status.to_string()).or_insert(0) += 1;
            *by_outcome.entry(e.outcome.to_string()).or_insert(0) += 1;
            *paths.entry(e.path.to_string()).or_insert(0) += 1;
            if let Some(u) = &e.uid {
                *uids.entry(u.to_string()).or_insert(0) += 1;
            }
            *ips.entry(e.client_ip.to_string()).or_insert(0) += 1;
            bytes += e.bytes;
        }
        let top = |m: HashMap<String, u64>| {
            let mut v: Vec<(String, u64)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(10);
            v.into_iter()
                .map(|(k, n)| json!({"key": k, "count": n}))
                .collect::<Vec<_>>()
        };
        let t = &self.totals;
        let reasons = t.reasons.lock().map(|g| g.clone()).unwrap_or_default();
        json!({
            "source": "memory",
            "totals": {
                "requests_recorded": t.recorded.load(Ordering::Relaxed),
                "denied": t.denied.load(Ordering::Relaxed),
                "replays": t.replays.load(Ordering::Relaxed),
                "key_allowed": t.key_allowed.load(Ordering::Relaxed),
                "key_denied": t.key_denied.load(Ordering::Relaxed),
                "denied_by_reason": reasons,
                "store_push_dropped": t.pushes_dropped.load(Ordering::Relaxed),
            },
            "window": {
                "requests": recent.len(),
                "newest_ts": recent.first().map(|e| e.ts),
                "oldest_ts": recent.last().map(|e| e.ts),
                "bytes": bytes,
                "by_status": by_status,
                "by_outcome": by_outcome,
                "top_paths": top(paths),
                "top_uids": top(uids),
                "top_client_ips": top(ips),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::DenyReason;
    use crate::store::memory::MemoryStore;

    fn req<'a>(path: &'a str) -> AccessRequest<'a> {
        AccessRequest {
            client_ip: "10.0.0.1".parse().unwrap(),
            user_agent: "UA",
            path,
            uid: Some("u"),
            expires: None,
            token: Some("secret-token-value"),
            full_url: "http://h/x",
            session_cookie: None,
            now: 5,
            head: false,
        }
    }

    #[tokio::test]
    async fn lists_are_bounded_newest_first_and_shared_through_the_store() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let log = EventLog::new(3, Duration::from_secs(60), store.clone());
        for i in 0..5 {
            let path = format!("/a/b/{i}.key");
            let d = Decision::Deny {
                status: 403,
                body: "no".into(),
                reason: if i == 4 {
                    DenyReason::KeyReplay
                } else {
                    DenyReason::KeyBadToken
                },
            };
            log.record_decision(&req(&path), &d, true);
        }
        // The writer drains the queue in order; wait until the last event landed.
        for attempt in 0.. {
            let newest = store.list_range(log_keys::KEY_ACCESS, 1).await.unwrap();
            if matches!(newest.first(), Some(s) if s.contains("4.key")) {
                break;
            }
            assert!(attempt < 100_000, "store writer never caught up");
            tokio::task::yield_now().await;
        }
        let (denied, src) = log.list(LogKind::Denied, 100).await;
        assert_eq!(src, "store");
        assert_eq!(denied.len(), 3);
        assert_eq!(denied[0]["path"], "/a/b/4.key");
        assert_eq!(denied[2]["path"], "/a/b/2.key");
        let (replays, _) = log.list(LogKind::Replay, 10).await;
        assert_eq!(replays.len(), 1);
        assert_eq!(replays[0]["reason"], "key_replay");
        let (keys, _) = log.list(LogKind::KeyAccess, 2).await;
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["allowed"], false);
        // Another process's log sees the same store lists.
        let other = EventLog::new(3, Duration::from_secs(60), store);
        assert_eq!(other.list(LogKind::Denied, 10).await.0.len(), 3);
        // Tokens never appear.
        assert!(!format!("{denied:?}").contains("secret-token-value"));
        let s = log.summary(10);
        assert_eq!(s["totals"]["denied"], 5);
        assert_eq!(s["totals"]["denied_by_reason"]["key_bad_token"], 4);
    }

    #[tokio::test]
    async fn recent_ring_and_summary() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let log = EventLog::new(2, Duration::from_secs(60), store);
        for (p, b) in [("/x/1.ts", 10), ("/x/2.ts", 20), ("/x/2.ts", 30)] {
            log.record_access(&AccessEvent {
                client_ip: "10.0.0.1".parse().unwrap(),
                method: "GET",
                path: p,
                uid: Some("u"),
                status: 200,
                bytes: b,
                outcome: "completed",
                reason: None,
                first_byte_ms: Some(1.0),
                duration_ms: 2.0,
                user_agent: "UA",
            });
        }
        let s = log.summary(100);
        assert_eq!(s["window"]["requests"], 2);
        assert_eq!(s["window"]["bytes"], 50);
        assert_eq!(
            s["window"]["top_paths"][0],
            json!({"key": "/x/2.ts", "count": 2})
        );
        assert_eq!(s["totals"]["requests_recorded"], 3);
        assert!(s["window"]["newest_ts"].as_u64().unwrap() > 1_700_000_000);
        let (items, src) = log.list(LogKind::Recent, 10).await;
        assert_eq!(src, "memory");
        assert_eq!(items.len(), 2);
        let ts = items[0]["ts"].as_u64().unwrap();
        // The shape the view has always shown: every key, alphabetical, nulls kept.
        assert_eq!(
            items[0].to_string(),
            json!({
                "bytes": 30, "client_ip": "10.0.0.1", "duration_ms": 2.0,
                "first_byte_ms": 1.0, "method": "GET", "outcome": "completed",
                "path": "/x/2.ts", "reason": null, "status": 200, "ts": ts,
                "uid": "u", "user_agent": "UA",
            })
            .to_string()
        );
        assert_eq!(items[1]["bytes"], 20);
    }
}
