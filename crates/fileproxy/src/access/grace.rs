//! Store outage grace (SPEC §11): an in-process memory of recent allow decisions, keyed
//! by (client IP, User-Agent, key path). When the store fails (an error, not a denial),
//! a viewer allowed within the last `store.outage_grace_s` keeps getting segments, keys
//! and static files of that key path; playlists, admissions and everyone else still
//! fail closed. Plain logic: a bounded map, no I/O.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;

use super::classify::{classify, FileClass};
use super::client_ip::canonical_ip;
use super::controls::revoked_text;
use super::keypath::key_path;
use super::{
    AccessRequest, Allow, Decision, DenyReason, Pending, Policy, SessionOutcome, WhitelistOutcome,
};

/// Most viewers remembered at once (about 100 bytes each).
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    ip: IpAddr,
    /// 64-bit hash of the full User-Agent (the UA itself need not be kept).
    ua: u64,
    key_path: String,
}

#[derive(Debug, Clone)]
struct Remembered {
    /// Unix seconds of the last allow decision.
    at: u64,
    /// The effective uid of that decision.
    uid: Option<String>,
}

/// The memory of recent allow decisions.
#[derive(Debug)]
pub struct OutageGrace {
    window_s: u64,
    max_entries: usize,
    map: Mutex<HashMap<Key, Remembered>>,
}

/// Whether a file class may be served from the memory during an outage.
pub fn class_covered(class: FileClass) -> bool {
    matches!(
        class,
        FileClass::Segment | FileClass::Key | FileClass::Static
    )
}

fn ua_key(ua: &str) -> u64 {
    let mut h = DefaultHasher::new();
    ua.hash(&mut h);
    h.finish()
}

impl OutageGrace {
    /// Remembers decisions for `window_s` seconds (0 = off), at most `max_entries`.
    pub fn new(window_s: u64, max_entries: usize) -> Self {
        OutageGrace {
            window_s,
            max_entries: max_entries.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the grace is on.
    pub fn enabled(&self) -> bool {
        self.window_s > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Remembered>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that the viewer was allowed for `key_path` at `now` (Unix seconds).
    pub fn remember(&self, ip: IpAddr, ua: &str, key_path: &str, uid: Option<&str>, now: u64) {
        if !self.enabled() || key_path.is_empty() {
            return;
        }
        let key = Key {
            ip,
            ua: ua_key(ua),
            key_path: key_path.to_string(),
        };
        let mut map = self.lock();
        if !map.contains_key(&key) && map.len() >= self.max_entries {
            let window = self.window_s;
            map.retain(|_, r| now.saturating_sub(r.at) <= window);
            if map.len() >= self.max_entries {
                // Still full of live entries: keep the newer half.
                let half = window / 2;
                map.retain(|_, r| now.saturating_sub(r.at) <= half);
            }
            if map.len() >= self.max_entries {
                map.clear();
            }
        }
        map.insert(
            key,
            Remembered {
                at: now,
                uid: uid.map(str::to_owned),
            },
        );
    }

    /// The uid of the viewer's allow decision for `key_path` if it is at most
    /// `outage_grace_s` old; `None` when there is none (the request fails closed).
    pub fn recall(&self, ip: IpAddr, ua: &str, key_path: &str, now: u64) -> Option<Option<String>> {
        if !self.enabled() || key_path.is_empty() {
            return None;
        }
        let key = Key {
            ip,
            ua: ua_key(ua),
            key_path: key_path.to_string(),
        };
        let map = self.lock();
        let r = map.get(&key)?;
        (now.saturating_sub(r.at) <= self.window_s).then(|| r.uid.clone())
    }

    /// Forgets every decision of `uid` (for `key_path` only, when given), so a revoked
    /// viewer gets no grace. Returns how many were forgotten.
    pub fn forget_uid(&self, uid: &str, key_path: Option<&str>) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|k, r| {
            !(r.uid.as_deref() == Some(uid) && key_path.map_or(true, |kp| kp == k.key_path))
        });
        before - map.len()
    }

    /// Viewers remembered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Policy {
    /// Turns on the outage grace: `window_s` seconds (0 = off); `allowed` counts the
    /// requests it lets through.
    pub fn with_outage_grace(mut self, window_s: u64, allowed: Counter) -> Self {
        self.grace = std::sync::Arc::new(OutageGrace::new(window_s, MAX_ENTRIES));
        self.grace_allowed = allowed;
        self
    }

    /// This policy with the running state of `old`: its revocation copy, quota ledger
    /// and outage-grace memory. A `SIGHUP` reload builds a new policy from the new file
    /// but must not forget who is revoked, which bytes are unsent, or whom it just
    /// allowed (SPEC §11, §13, §14).
    pub fn with_state_of(mut self, old: &Policy) -> Self {
        self.controls.revocations = std::sync::Arc::clone(&old.controls.revocations);
        self.controls.quota = std::sync::Arc::clone(&old.controls.quota);
        self.grace = std::sync::Arc::clone(&old.grace);
        self.grace_allowed = old.grace_allowed.clone();
        self
    }

    /// The memory of recent allow decisions (revocation forgets a uid's with
    /// [`OutageGrace::forget_uid`]).
    pub fn outage_grace(&self) -> &OutageGrace {
        &self.grace
    }

    /// Remembers an allow decision, or turns a store-failure refusal of a covered class
    /// into an allow when the viewer was allowed for that key path within the grace.
    pub(super) fn apply_outage_grace(
        &self,
        req: &AccessRequest<'_>,
        decision: Decision,
    ) -> Decision {
        if !self.grace.enabled() {
            return decision;
        }
        let ip = canonical_ip(req.client_ip);
        match &decision {
            Decision::Allow(a) => {
                // Skip-validation requests prove nothing about the viewer.
                if a.whitelist != WhitelistOutcome::Skipped {
                    self.grace
                        .remember(ip, req.user_agent, &a.key_path, a.uid.as_deref(), req.now);
                }
                decision
            }
            Decision::Deny { reason, .. } if reason.is_store_failure() => {
                let class = classify(req.path);
                if !class_covered(class) {
                    return decision;
                }
                let kp = key_path(req.path);
                let Some(uid) = self.grace.recall(ip, req.user_agent, kp, req.now) else {
                    return decision;
                };
                // Revocations are honoured by this memory too (SPEC §11, §13): the
                // revocation feed is this instance's own copy, readable while the store is down.
                let now = i64::try_from(req.now).unwrap_or(i64::MAX);
                if let Some(u) = uid.as_deref() {
                    if self.controls().revocations.is_revoked(u, kp, now) {
                        return Decision::deny(403, revoked_text(u), DenyReason::Revoked);
                    }
                }
                self.grace_allowed.inc();
                tracing::info!(%ip, path = %req.path, uid = ?uid, "store unavailable: allowed from the outage grace");
                // Not remembered again: the grace runs from the last store-backed allow.
                Decision::Allow(Box::new(Allow {
                    class,
                    key_path: kp.to_string(),
                    uid,
                    set_cookie: None,
                    session: SessionOutcome::None,
                    // The last store-backed decision admitted this viewer.
                    whitelist: WhitelistOutcome::Fixed,
                    playlist: None,
                    key_uses: None,
                    token_uses: None,
                    pending: Pending::default(),
                }))
            }
            _ => decision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn recalls_within_the_window_only() {
        let g = OutageGrace::new(60, 10);
        g.remember(ip("1.2.3.4"), "UA", "kp", Some("u1"), 1000);
        assert_eq!(
            g.recall(ip("1.2.3.4"), "UA", "kp", 1060),
            Some(Some("u1".into()))
        );
        assert_eq!(g.recall(ip("1.2.3.4"), "UA", "kp", 1061), None);
        assert_eq!(g.recall(ip("1.2.3.5"), "UA", "kp", 1001), None);
        assert_eq!(g.recall(ip("1.2.3.4"), "UA2", "kp", 1001), None);
        assert_eq!(g.recall(ip("1.2.3.4"), "UA", "other", 1001), None);
    }

    #[test]
    fn off_remembers_nothing() {
        let g = OutageGrace::new(0, 10);
        g.remember(ip("1.2.3.4"), "UA", "kp", Some("u1"), 1000);
        assert!(g.is_empty());
        assert_eq!(g.recall(ip("1.2.3.4"), "UA", "kp", 1000), None);
    }

    #[test]
    fn bounded() {
        let g = OutageGrace::new(60, 4);
        for i in 0..50u64 {
            g.remember(ip(&format!("10.0.0.{i}")), "UA", "kp", None, 1000 + i);
            assert!(g.len() <= 4);
        }
        assert!(g.recall(ip("10.0.0.49"), "UA", "kp", 1050).is_some());
    }

    #[test]
    fn forget_uid_by_key_path() {
        let g = OutageGrace::new(60, 10);
        g.remember(ip("1.1.1.1"), "UA", "a", Some("u1"), 1000);
        g.remember(ip("1.1.1.1"), "UA", "b", Some("u1"), 1000);
        g.remember(ip("1.1.1.1"), "UA2", "a", Some("u2"), 1000);
        g.remember(ip("2.2.2.2"), "UA", "a", Some("u2"), 1000);
        assert_eq!(g.forget_uid("u1", Some("a")), 1);
        assert!(g.recall(ip("1.1.1.1"), "UA", "b", 1000).is_some());
        assert_eq!(g.forget_uid("u2", None), 2);
        assert_eq!(g.recall(ip("2.2.2.2"), "UA", "a", 1000), None);
    }

    #[test]
    fn classes() {
        assert!(class_covered(FileClass::Segment));
        assert!(class_covered(FileClass::Key));
        assert!(class_covered(FileClass::Static));
        assert!(!class_covered(FileClass::Playlist));
        assert!(!class_covered(FileClass::Default));
    }
}
