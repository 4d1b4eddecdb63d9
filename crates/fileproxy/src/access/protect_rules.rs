//! The SPEC §9 rules as the policy applies them: [`ProtectRules`] (from `[protect]`),
//! the use counters that run once a request is otherwise allowed (key uses, token
//! replay), the per-uid pair cap hook of admissions, and the admission log behind
//! `/whitelist-info`.
//!
//! Order inside [`Policy::decide`]: skip-validation suffix → key-file parameters and
//! token (no store) → fixed IP / whitelist (static and front-end admissions as
//! fallbacks) → safe-key redirect → session → playlist checks → key-use counter (key
//! files) or token-replay counter (other requests carrying `uid` and `token`). The
//! counters run last so a refused request never spends a use.

use std::time::Duration;

use ipnet::IpNet;
use serde_json::json;

use super::classify::SuffixSet;
use super::keyprotect::{self, KeyDeny};
use super::replay::{self, ReplayDeny};
use super::{ts, AccessRequest, Decision, DenyReason, Policy, WhitelistOutcome};
use crate::config::ProtectConfig;
use crate::store::StoreError;

/// Store lists behind the operator views (capped, newest first).
pub mod log_keys {
    /// Admissions (whitelist, static, front-end) for `/whitelist-info`.
    pub const ADMISSIONS: &str = "fp:log:admissions";
    /// Refused viewer requests for `/api/access-logs/denied`.
    pub const DENIED: &str = "fp:log:denied";
    /// Token and key replays for `/api/replay-logs`.
    pub const REPLAY: &str = "fp:log:replay";
    /// Key-file requests under key protection for `/api/key-access-logs`.
    pub const KEY_ACCESS: &str = "fp:log:key_access";
}

/// `[protect]` as the policy uses it.
#[derive(Clone)]
pub struct ProtectRules {
    /// Key-file requests need a key token, limited uses.
    pub key_protection: bool,
    /// Uses per key token.
    pub key_max_uses: u64,
    /// Window of the key-use counter.
    pub key_use_ttl: Duration,
    /// Requests carrying `uid` and `token` are counted.
    pub token_replay: bool,
    /// Uses per token.
    pub token_max_uses: u64,
    /// Window of the token counter.
    pub token_replay_ttl: Duration,
    /// Pairs per uid (0 = no cap).
    pub max_pairs_per_uid: usize,
    /// Static-file admission on.
    pub static_whitelist: bool,
    /// Suffixes a static admission opens.
    pub static_suffixes: SuffixSet,
    /// The same, as configured (for responses).
    pub static_suffix_list: Vec<String>,
    /// Front-end admission on.
    pub js_whitelist: bool,
    /// HMAC key of front-end signatures.
    pub js_secret: Vec<u8>,
    /// Lifetime of a front-end admission.
    pub js_ttl: Duration,
    /// Key paths per (uid, UA, IP) front-end admission.
    pub js_max_paths: usize,
    /// Entries kept in each operator-view list.
    pub log_capacity: usize,
    /// TTL of those lists in the store.
    pub log_ttl: Duration,
}

impl std::fmt::Debug for ProtectRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtectRules")
            .field("key_protection", &self.key_protection)
            .field("token_replay", &self.token_replay)
            .field("static_whitelist", &self.static_whitelist)
            .field("js_whitelist", &self.js_whitelist)
            .finish_non_exhaustive()
    }
}

impl ProtectRules {
    /// Builds the rules from `[protect]`.
    pub fn new(cfg: &ProtectConfig) -> Self {
        Self {
            key_protection: cfg.key_protection,
            key_max_uses: cfg.key_max_uses.max(1),
            key_use_ttl: Duration::from_secs(cfg.key_use_ttl_s.max(1)),
            token_replay: cfg.token_replay,
            token_max_uses: cfg.token_max_uses.max(1),
            token_replay_ttl: Duration::from_secs(cfg.token_replay_ttl_s.max(1)),
            max_pairs_per_uid: cfg.max_pairs_per_uid,
            static_whitelist: cfg.static_whitelist,
            static_suffixes: SuffixSet::new(&cfg.static_suffixes),
            static_suffix_list: cfg.static_suffixes.clone(),
            js_whitelist: cfg.js_whitelist,
            js_secret: cfg.js_whitelist_secret.expose().as_bytes().to_vec(),
            js_ttl: Duration::from_secs(cfg.js_whitelist_ttl_s.max(1)),
            js_max_paths: cfg.js_max_paths.max(1),
            log_capacity: cfg.event_log_capacity.max(1),
            log_ttl: Duration::from_secs(cfg.event_log_ttl_s.max(1)),
        }
    }
}

impl Default for ProtectRules {
    fn default() -> Self {
        Self::new(&ProtectConfig::default())
    }
}

impl Decision {
    pub(super) fn key(d: &KeyDeny) -> Self {
        let reason = match d {
            KeyDeny::MissingAuth => DenyReason::KeyMissingAuth,
            KeyDeny::MissingExpires => DenyReason::KeyMissingExpires,
            KeyDeny::BadToken(_) => DenyReason::KeyBadToken,
            KeyDeny::Replay { .. } => DenyReason::KeyReplay,
            KeyDeny::Store(e) => {
                tracing::warn!(error = %e, "key-use counter unavailable: request refused (fail closed)");
                DenyReason::KeyCountUnavailable
            }
        };
        let (status, body) = d.response();
        Decision::deny(status, body, reason)
    }

    pub(super) fn replay(d: &ReplayDeny) -> Self {
        let reason = match d {
            ReplayDeny::Exceeded { .. } => DenyReason::TokenReplay,
            ReplayDeny::Store(e) => {
                tracing::warn!(error = %e, "token-use counter unavailable: request refused (fail closed)");
                DenyReason::TokenReplayUnavailable
            }
        };
        let (status, body) = d.response();
        Decision::deny(status, body, reason)
    }
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

impl Policy {
    /// Applies `[protect]` (SPEC §9) to the policy.
    pub fn with_protect(mut self, cfg: &ProtectConfig) -> Self {
        self.rules = ProtectRules::new(cfg);
        self
    }

    /// The §9 rules in force.
    pub fn rules(&self) -> &ProtectRules {
        &self.rules
    }

    /// Whether a request path is a key file under key protection (and not skipped).
    pub fn is_protected_key(&self, path: &str) -> bool {
        self.rules.key_protection
            && super::classify::is_key_file(path)
            && !super::classify::skips_validation(path, &self.skip)
    }

    /// The key-file checks that need no store (parameters, token, expiry).
    pub(super) fn precheck_key(&self, req: &AccessRequest<'_>) -> Result<(), Decision> {
        keyprotect::check_key_request(
            &self.secret,
            req.path,
            req.uid,
            req.expires,
            req.token,
            req.now,
        )
        .map_err(|d| Decision::key(&d))
    }

    /// The use counters of an otherwise allowed (or redirected) request: key uses for
    /// protected key files, token replay for other requests carrying `uid` and `token`.
    pub(super) async fn count_uses(
        &self,
        req: &AccessRequest<'_>,
        key_file: bool,
        mut decision: Decision,
    ) -> Decision {
        let skipped = match &decision {
            Decision::Deny { .. } => return decision,
            Decision::Allow(a) => a.whitelist == WhitelistOutcome::Skipped,
            Decision::Redirect { .. } => false,
        };
        let (Some(uid), Some(token)) = (non_empty(req.uid), non_empty(req.token)) else {
            return decision;
        };
        if key_file {
            match keyprotect::count_key_use(
                &*self.store,
                token,
                uid,
                req.path,
                self.rules.key_max_uses,
                self.rules.key_use_ttl,
                !req.head,
            )
            .await
            {
                Ok(wc) => {
                    if let Decision::Allow(a) = &mut decision {
                        a.key_uses = Some(wc.count);
                    }
                }
                Err(d) => return Decision::key(&d),
            }
        } else if self.rules.token_replay && !skipped {
            match replay::count_token_use(
                &*self.store,
                token,
                uid,
                req.path,
                self.rules.token_max_uses,
                self.rules.token_replay_ttl,
                !req.head,
            )
            .await
            {
                Ok(wc) => {
                    if let Decision::Allow(a) = &mut decision {
                        a.token_uses = Some(wc.count);
                    }
                }
                Err(d) => return Decision::replay(&d),
            }
        }
        decision
    }

    /// Records an admitted (network, UA) pair for the per-uid cap (SPEC §9); evicted
    /// pairs' entries are deleted.
    pub(super) async fn record_admitted_pair(
        &self,
        uid: &str,
        net: &IpNet,
        ua_hash: &str,
        now: u64,
    ) -> Result<super::pairs::PairInfo, StoreError> {
        super::pairs::record_pair(
            &*self.store,
            uid,
            net,
            ua_hash,
            ts(now),
            self.rules.max_pairs_per_uid,
            self.ip_access_ttl,
        )
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "per-uid pair record failed: store"))
    }

    /// Appends an admission to the capped admission log (`/whitelist-info`); a store
    /// failure is logged, never fatal to the admission.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn log_admission(
        &self,
        kind: &str,
        uid: &str,
        net: &IpNet,
        ua_hash: &str,
        key_path: &str,
        key: &str,
        now: u64,
    ) {
        let item = json!({
            "ts": now,
            "kind": kind,
            "uid": uid,
            "ip_pattern": net.to_string(),
            "ua_hash": ua_hash,
            "key_path": key_path,
            "key": key,
        });
        if let Err(e) = self
            .store
            .push_capped(
                log_keys::ADMISSIONS,
                &item.to_string(),
                self.rules.log_capacity,
                self.rules.log_ttl,
            )
            .await
        {
            tracing::warn!(error = %e, "admission log not written: store");
        }
    }
}
