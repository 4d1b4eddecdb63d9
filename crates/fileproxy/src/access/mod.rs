//! The access policy of SPEC §2 steps 2–6, §2.1, §3 and §4 as plain logic over a
//! [`Store`]: no HTTP types in here, one rule per function, each in the module named
//! for what it decides ([`keypath`], [`classify`], [`client_ip`], [`token`],
//! [`network`], [`ua`], [`whitelist`], [`session`], [`playlist`], [`cors`]).
//!
//! [`Policy::decide`] runs the steps in SPEC order: skip-validation suffix → (key-file
//! token, §9) → (fixed IP whitelist, §9) → whitelist (static-file and front-end
//! admissions as fallbacks, §9) → safe-key redirect → session → playlist checks →
//! (key-use or token-replay counter, §9); see [`protect`] for the §9 parts.
//! Its writes that need not delay the answer (session creation and extension) are
//! returned as [`Pending`] work for the caller to run with [`Policy::complete`],
//! typically in a spawned task.
//!
//! Store round trips per request (critical path = before the decision is known):
//!
//! | request | critical path | deferred ([`Pending`]) |
//! |---|---|---|
//! | skip-validation suffix | 0 | 0 |
//! | fixed-whitelist IP | 0 (playlist: the two counters) | 0 |
//! | refused by the whitelist | 1 | 0 |
//! | `enc.key` with safe-key redirect | 1 | 0 |
//! | **segment/key/other, session in the latest index (the common case)** | **1**: one `get_many` of the whitelist key(s) (IPv4: 1 key; IPv6: 1 + `ipv6_prefixes`) and the session keys | 3 (session CAS read + swap, one batch extending the index keys) |
//! | with `uid`, its session not the latest | 2 (+ `session:{id}`) | 3 |
//! | no session in our index, no `uid` | 2 (+ the whitelist uid's `ip_ua_session`), 3 when that finds a Python-created session | 0 or 3 |
//! | no session, `uid` given (session created) | 1 | 2 (one batch of 4 sets, then the uid's session index) |
//! | playlist (`.m3u8`) | as above + 2 (`incr_window` of the Python-format and the canonical counter, sent concurrently: 1 round trip of latency) | as above |
//! | `POST /api/whitelist` | 2 per attempt (read + compare-and-set) + pair record (2 per attempt, + 1 delete on eviction) + 1 read of the revocation feed (+ a write and a bump when it lifts a mark) + 1 admission log | 0 |
//! | key file under key protection | as above + 1 (`incr_window`) | as above |
//! | `uid` + `token` with token replay on | as above + 1 (`incr_window`) | as above |
//!
//! Static-file and front-end admissions add their keys to the first `get_many`
//! (static: only for `protect.static_suffixes` paths; front-end: one key when
//! `protect.js_whitelist` is on), so they cost no extra round trip.
//!
//! Viewer controls (SPEC §13, [`controls`]) on a request with an effective uid:
//!
//! | check | knob | critical path | deferred |
//! |---|---|---|---|
//! | revoked uid (effective, token's, or a revoked viewer on a whitelist miss) | always | 0 (local copy of the feed, polled every 250 ms) | 0 |
//! | concurrent streams | `limits.max_streams_per_uid > 0` | +1 (`touch_member`), only with a key path | 0 |
//! | traffic quota | `limits.uid_quota_bytes > 0` | +1 (`get` of the window counter) | 0 (bytes go to the store in per-second batches, `incr_by_once`) |
//!
//! With both knobs on the two operations are sent concurrently (one round trip of
//! latency). A created session also records its id in `uid_sessions:{uid}` (one
//! `push_capped` after the creation batch) so `POST /api/revoke` finds it without a scan.

pub mod canonical_path;
pub mod classify;
pub mod client_ip;
pub mod compat;
pub mod controls;
pub mod cors;
pub mod counting;
mod fallback;
pub mod grace;
pub mod js;
pub mod keypath;
pub mod keyprotect;
pub mod limits;
pub mod network;
pub mod pairs;
pub mod playlist;
pub mod protect_rules;
pub mod query;
pub mod replay;
pub mod revoke;
pub mod session;
pub mod static_file;
pub mod token;
pub mod uid_index;
pub use crate::ua;
pub mod whitelist;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, Network, PlaylistLimits, Secret};
use crate::store::{SharedStore, StoreError, Write};
use protect_rules::ProtectRules;

use classify::{classify, FileClass, SuffixSet};
use client_ip::canonical_ip;
use keypath::key_path;
use network::ua_hash;
use playlist::{PlaylistCount, PlaylistDeny, PlaylistParams};
use session::{FirstRead, FoundVia, SessionTouch, SessionTtls, Viewer};
use whitelist::{AdmitError, WhitelistMiss};

/// The uid of requests from `auth.fixed_ip_whitelist` addresses (SPEC §9).
pub const FIXED_WHITELIST_UID: &str = "fixed_whitelist";

/// `Cache-Control` of a safe-key redirect (SPEC §2 step 4).
pub const REDIRECT_CACHE_CONTROL: &str = "no-cache, no-store, must-revalidate";

/// `503` text when the store cannot be read (the policy fails closed).
pub const STORE_UNAVAILABLE_TEXT: &str = playlist::COUNT_UNAVAILABLE_TEXT;

/// One viewer request as the policy sees it (the HTTP layer fills it in).
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The client IP, already resolved with [`client_ip::client_ip_from_headers`].
    pub client_ip: IpAddr,
    /// The `User-Agent` header (empty when absent).
    pub user_agent: &'a str,
    /// The percent-decoded request path, with its leading `/`.
    pub path: &'a str,
    /// `uid` query parameter.
    pub uid: Option<&'a str>,
    /// `expires` query parameter.
    pub expires: Option<&'a str>,
    /// `token` query parameter.
    pub token: Option<&'a str>,
    /// `{scheme}://{Host}{path}?{query}` exactly as the viewer sent path and query (§4).
    pub full_url: &'a str,
    /// Value of the `session_id_fileserver` cookie.
    pub session_cookie: Option<&'a str>,
    /// Current Unix time in seconds.
    pub now: u64,
    /// A `HEAD` request: checked like a `GET`, but its playlist count, key use and
    /// token use are read, not spent (SPEC §4, §10).
    pub head: bool,
}

/// Why a request was refused (a metrics label; see [`DenyReason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// The path has no key path (SPEC §2.1).
    NoKeyPath,
    /// No whitelist entry for the viewer's networks and User-Agent.
    WhitelistNoEntry,
    /// Whitelist entries exist but none admits this key path.
    WhitelistPathNotAdmitted,
    /// Whitelist or session state could not be read (fail closed).
    StoreUnavailable,
    /// Playlist without an effective uid.
    PlaylistNoUid,
    /// Playlist without `uid`, `expires` or `token`.
    PlaylistMissingParams,
    /// Playlist token does not match (or `expires` is not a timestamp).
    PlaylistBadToken,
    /// Playlist token expired.
    PlaylistExpired,
    /// Playlist access count over the limit.
    PlaylistLimit,
    /// Playlist access counter unreachable (fail closed).
    PlaylistCountUnavailable,
    /// Key file without `uid` or `token` (§9).
    KeyMissingAuth,
    /// Key file without `expires` (§9).
    KeyMissingExpires,
    /// Key file token invalid or expired (§9).
    KeyBadToken,
    /// Key token used `key_max_uses` times already (§9).
    KeyReplay,
    /// Key-use counter unreachable (fail closed).
    KeyCountUnavailable,
    /// Token used `token_max_uses` times already (§9).
    TokenReplay,
    /// Token-use counter unreachable (fail closed).
    TokenReplayUnavailable,
    /// The uid would have more than `limits.max_streams_per_uid` streams (§13).
    StreamLimit,
    /// The uid (or the viewer's deleted admission's uid) is revoked (§13).
    Revoked,
    /// The uid is past `limits.uid_quota_bytes` in this window (§13).
    QuotaExceeded,
    /// The origin answered playlist content to a request that did not pass the
    /// playlist checks (SPEC §10 content check, the `content_check` module).
    ContentClass,
}

impl DenyReason {
    /// Every reason, in declaration order.
    pub const ALL: [DenyReason; 21] = [
        DenyReason::NoKeyPath,
        DenyReason::WhitelistNoEntry,
        DenyReason::WhitelistPathNotAdmitted,
        DenyReason::StoreUnavailable,
        DenyReason::PlaylistNoUid,
        DenyReason::PlaylistMissingParams,
        DenyReason::PlaylistBadToken,
        DenyReason::PlaylistExpired,
        DenyReason::PlaylistLimit,
        DenyReason::PlaylistCountUnavailable,
        DenyReason::KeyMissingAuth,
        DenyReason::KeyMissingExpires,
        DenyReason::KeyBadToken,
        DenyReason::KeyReplay,
        DenyReason::KeyCountUnavailable,
        DenyReason::TokenReplay,
        DenyReason::TokenReplayUnavailable,
        DenyReason::StreamLimit,
        DenyReason::Revoked,
        DenyReason::QuotaExceeded,
        DenyReason::ContentClass,
    ];

    /// Stable snake_case name for metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoKeyPath => "no_key_path",
            DenyReason::WhitelistNoEntry => "whitelist_no_entry",
            DenyReason::WhitelistPathNotAdmitted => "whitelist_path_not_admitted",
            DenyReason::StoreUnavailable => "store_unavailable",
            DenyReason::PlaylistNoUid => "playlist_no_uid",
            DenyReason::PlaylistMissingParams => "playlist_missing_params",
            DenyReason::PlaylistBadToken => "playlist_bad_token",
            DenyReason::PlaylistExpired => "playlist_expired",
            DenyReason::PlaylistLimit => "playlist_limit",
            DenyReason::PlaylistCountUnavailable => "playlist_count_unavailable",
            DenyReason::KeyMissingAuth => "key_missing_auth",
            DenyReason::KeyMissingExpires => "key_missing_expires",
            DenyReason::KeyBadToken => "key_bad_token",
            DenyReason::KeyReplay => "key_replay",
            DenyReason::KeyCountUnavailable => "key_count_unavailable",
            DenyReason::TokenReplay => "token_replay",
            DenyReason::TokenReplayUnavailable => "token_replay_unavailable",
            DenyReason::StreamLimit => "stream_limit",
            DenyReason::Revoked => "revoked",
            DenyReason::QuotaExceeded => "quota_exceeded",
            DenyReason::ContentClass => "content_class",
        }
    }

    /// Whether the refusal comes from a store failure rather than from the viewer.
    pub fn is_store_failure(self) -> bool {
        matches!(
            self,
            DenyReason::StoreUnavailable
                | DenyReason::PlaylistCountUnavailable
                | DenyReason::KeyCountUnavailable
                | DenyReason::TokenReplayUnavailable
        )
    }

    /// Whether the refusal is a replay (token or key uses exhausted, §9).
    pub fn is_replay(self) -> bool {
        matches!(self, DenyReason::KeyReplay | DenyReason::TokenReplay)
    }
}

/// What happened to the viewer's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutcome {
    /// No session step (skip-validation, fixed whitelist) or none found and no `uid`.
    None,
    /// A new session was created (its writes are in [`Allow::pending`]).
    Created {
        /// The session uuid (also in the cookie).
        id: String,
    },
    /// An existing session was used (its extension is in [`Allow::pending`]).
    Reused {
        /// The session uuid.
        id: String,
        /// How it was found.
        via: FoundVia,
    },
}

/// Which whitelist rule let the request through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhitelistOutcome {
    /// Skip-validation suffix: no check at all.
    Skipped,
    /// The client IP is in `auth.fixed_ip_whitelist`.
    Fixed,
    /// The entry of this network admitted the key path.
    Entry {
        /// The matching network.
        network: IpNet,
    },
    /// A static-suffix path let through by a static-file admission, or by any path
    /// whitelist entry, of this network (§9).
    Static {
        /// The matching network.
        network: IpNet,
    },
    /// A front-end (JS) admission of the client's IP and UA admitted the key path (§9).
    Js,
}

/// Store work deferred past the decision; run it with [`Policy::complete`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// Writes of a newly created session (one batch).
    pub writes: Vec<Write>,
    /// Extension of a reused session.
    pub touch: Option<SessionTouch>,
    /// (uid, session id) of a newly created session, for the uid's session index
    /// that `POST /api/revoke` reads (SPEC §13).
    pub created: Option<(String, String)>,
}

impl Pending {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.touch.is_none()
    }
}

/// An allowed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// The suffix class (SPEC §2 step 2).
    pub class: FileClass,
    /// The key path (SPEC §2.1; may be empty for skip-validation requests).
    pub key_path: String,
    /// The effective uid (session's, else whitelist's), for traffic accounting.
    pub uid: Option<String>,
    /// A `Set-Cookie` header value to send (new session).
    pub set_cookie: Option<String>,
    /// What happened to the session.
    pub session: SessionOutcome,
    /// Which whitelist rule applied.
    pub whitelist: WhitelistOutcome,
    /// For playlists: UA class, limit and count after this request.
    pub playlist: Option<PlaylistCount>,
    /// For key files under key protection: uses of this key token so far (§9).
    pub key_uses: Option<u64>,
    /// With token replay on: uses of this (token, uid, path) so far (§9).
    pub token_uses: Option<u64>,
    /// Deferred store writes.
    pub pending: Pending,
}

/// The policy's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Fetch from the origin (SPEC §2 step 7).
    Allow(Box<Allow>),
    /// Answer with `status` and the plain-text `body`.
    Deny {
        /// HTTP status (400, 403, or 503 when the store failed).
        status: u16,
        /// Response body text (SPEC's exact texts).
        body: String,
        /// Metrics label.
        reason: DenyReason,
    },
    /// Answer `302` with `Location: location` and `Cache-Control:`
    /// [`REDIRECT_CACHE_CONTROL`] (safe-key redirect).
    Redirect {
        /// `<safe_key_redirect_base><path without leading />`, the (decoded) path
        /// percent-encoded again with [`token::encode_path`] so the value is a URI
        /// naming that same path (`#`, `?`, `%`, spaces, controls, UTF-8).
        location: String,
    },
}

impl Decision {
    fn deny(status: u16, body: impl Into<String>, reason: DenyReason) -> Self {
        Decision::Deny {
            status,
            body: body.into(),
            reason,
        }
    }

    fn store_down(err: &StoreError) -> Self {
        tracing::warn!(error = %err, "access store unavailable: request refused (fail closed)");
        Decision::deny(503, STORE_UNAVAILABLE_TEXT, DenyReason::StoreUnavailable)
    }

    fn whitelist_miss(miss: WhitelistMiss) -> Self {
        let reason = match miss {
            WhitelistMiss::NoKeyPath => DenyReason::NoKeyPath,
            WhitelistMiss::NoEntry => DenyReason::WhitelistNoEntry,
            WhitelistMiss::PathNotAdmitted => DenyReason::WhitelistPathNotAdmitted,
        };
        Decision::deny(403, whitelist::DENY_PATH_TEXT, reason)
    }

    fn playlist(d: &PlaylistDeny) -> Self {
        let reason = match d {
            PlaylistDeny::NoUid => DenyReason::PlaylistNoUid,
            PlaylistDeny::MissingParams => DenyReason::PlaylistMissingParams,
            PlaylistDeny::BadToken(_) => DenyReason::PlaylistBadToken,
            PlaylistDeny::Expired => DenyReason::PlaylistExpired,
            PlaylistDeny::LimitExceeded { .. } => DenyReason::PlaylistLimit,
            PlaylistDeny::Store(e) => {
                tracing::warn!(error = %e, "playlist access counter unavailable: request refused (fail closed)");
                DenyReason::PlaylistCountUnavailable
            }
        };
        let (status, body) = d.response();
        Decision::deny(status, body, reason)
    }
}

/// The access policy: configuration, precomputed sets and the store.
pub struct Policy {
    store: SharedStore,
    secret: Vec<u8>,
    whitelist_api_key: Secret,
    skip: SuffixSet,
    fixed: Vec<IpNet>,
    ipv6_prefixes: Vec<u8>,
    ttls: SessionTtls,
    session_ttl_s: u64,
    ip_access_ttl: Duration,
    max_paths_per_cidr: usize,
    limits: PlaylistLimits,
    safe_key_redirect_base: String,
    cookie_secure: bool,
    rules: ProtectRules,
    /// Recent allow decisions for the store outage grace (SPEC §11, [`grace`]).
    grace: std::sync::Arc<grace::OutageGrace>,
    grace_allowed: prometheus_client::metrics::counter::Counter,
    controls: controls::Controls,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

fn ts(now: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX)
}

/// Strips an optional `Bearer ` scheme from an `Authorization` value.
fn bearer_token(v: &str) -> &str {
    query::bearer_credential(v).unwrap_or(v.trim())
}

impl Policy {
    /// Builds the policy from `[auth]` and a store.
    pub fn new(auth: &AuthConfig, store: SharedStore) -> Self {
        Self {
            store,
            secret: auth.secret.expose().as_bytes().to_vec(),
            whitelist_api_key: auth.whitelist_api_key.clone(),
            skip: SuffixSet::new(&auth.skip_validation_suffixes),
            fixed: auth.fixed_ip_whitelist.iter().map(Network::net).collect(),
            ipv6_prefixes: auth.ipv6_prefixes.clone(),
            ttls: SessionTtls {
                session: Duration::from_secs(auth.session_ttl_s.max(1)),
                user: Duration::from_secs(auth.user_session_ttl_s.max(1)),
            },
            session_ttl_s: auth.session_ttl_s.max(1),
            ip_access_ttl: Duration::from_secs(auth.ip_access_ttl_s.max(1)),
            max_paths_per_cidr: auth.max_paths_per_cidr.max(1),
            limits: auth.playlist_limits.clone(),
            safe_key_redirect_base: auth.safe_key_redirect_base.clone(),
            cookie_secure: auth.cookie_secure,
            rules: ProtectRules::default(),
            grace: std::sync::Arc::new(grace::OutageGrace::new(0, 1)),
            grace_allowed: Default::default(),
            controls: controls::Controls::default(),
        }
    }

    /// The store the policy uses.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Whether `ip` is in `auth.fixed_ip_whitelist`.
    pub fn is_fixed_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.fixed.iter().any(|n| n.contains(&ip))
    }

    /// Decides a viewer request (SPEC §2 steps 2–6, §9). Never panics; store failures
    /// refuse the request with `503` ([`DenyReason::is_store_failure`]).
    pub async fn decide(&self, req: &AccessRequest<'_>) -> Decision {
        let key_file = self.is_protected_key(req.path);
        if key_file {
            if let Err(d) = self.precheck_key(req) {
                return d;
            }
        }
        let decision = self.decide_access(req).await;
        let decision = self.count_uses(req, key_file, decision).await;
        self.apply_outage_grace(req, decision)
    }

    /// SPEC §2 steps 2–6 with the §9 whitelist fallbacks.
    async fn decide_access(&self, req: &AccessRequest<'_>) -> Decision {
        let path = req.path;
        let class = classify(path);
        let kp = key_path(path);
        if classify::skips_validation(path, &self.skip) {
            return Decision::Allow(Box::new(Allow {
                class,
                key_path: kp.to_string(),
                uid: None,
                set_cookie: None,
                session: SessionOutcome::None,
                whitelist: WhitelistOutcome::Skipped,
                playlist: None,
                key_uses: None,
                token_uses: None,
                pending: Pending::default(),
            }));
        }
        let ip = canonical_ip(req.client_ip);
        let redirect =
            (class == FileClass::Key && !self.safe_key_redirect_base.is_empty()).then(|| {
                format!(
                    "{}{}",
                    self.safe_key_redirect_base,
                    token::encode_path(path.strip_prefix('/').unwrap_or(path))
                )
            });
        let mut allow = Allow {
            class,
            key_path: kp.to_string(),
            uid: None,
            set_cookie: None,
            session: SessionOutcome::None,
            whitelist: WhitelistOutcome::Fixed,
            playlist: None,
            key_uses: None,
            token_uses: None,
            pending: Pending::default(),
        };
        if self.is_fixed_ip(ip) {
            if let Some(location) = redirect {
                return Decision::Redirect { location };
            }
            allow.uid = Some(FIXED_WHITELIST_UID.to_string());
        } else {
            if kp.is_empty() && !self.static_admissible(path) {
                return Decision::whitelist_miss(WhitelistMiss::NoKeyPath);
            }
            if let Err(d) = self
                .whitelist_and_session(req, ip, kp, redirect, &mut allow)
                .await
            {
                return d;
            }
        }
        // Viewer controls (SPEC §13): revoked, quota, concurrent streams.
        if let Err(d) = self
            .check_controls(req, ip, &ua_hash(req.user_agent), &allow)
            .await
        {
            return d;
        }
        if class == FileClass::Playlist {
            match self.check_playlist(req, ip, allow.uid.as_deref()).await {
                Ok(count) => allow.playlist = Some(count),
                Err(d) => return Decision::playlist(&d),
            }
        }
        Decision::Allow(Box::new(allow))
    }

    /// Steps 3–5: whitelist check, safe-key redirect, session lookup or creation.
    /// `Err` carries the final decision (refusal or redirect).
    async fn whitelist_and_session(
        &self,
        req: &AccessRequest<'_>,
        ip: IpAddr,
        kp: &str,
        redirect: Option<String>,
        allow: &mut Allow,
    ) -> Result<(), Decision> {
        let uah = ua_hash(req.user_agent);
        let cands = whitelist::candidates(ip, &uah, &self.ipv6_prefixes);
        let cookie_id = req.session_cookie.and_then(session::cookie_session_id);
        let uid_param = req.uid.filter(|u| !u.is_empty());
        let mut viewer = Viewer {
            ip,
            user_agent: req.user_agent,
            ua_hash: &uah,
            key_path: kp,
            uid: uid_param,
            cookie_id: cookie_id.as_deref(),
            whitelist_uid: None,
        };
        // One round trip: whitelist candidates, the §9 fallbacks' keys and (unless
        // redirecting) session keys.
        let first = FirstRead::for_viewer(&viewer);
        let fallback = self.fallback_keys(req.path, ip, &uah);
        let mut keys: Vec<String> = cands.iter().map(|c| c.key.clone()).collect();
        keys.extend(fallback.keys());
        if redirect.is_none() {
            keys.extend(first.keys());
        }
        let values = match self.store.get_many(&keys).await {
            Ok(v) if v.len() == keys.len() => v,
            Ok(v) => {
                let e =
                    StoreError::Malformed(format!("{} values for {} keys", v.len(), keys.len()));
                return Err(Decision::store_down(&e));
            }
            Err(e) => return Err(Decision::store_down(&e)),
        };
        let (wl_values, rest) = values.split_at(cands.len());
        let (fb_values, session_values) = rest.split_at(fallback.len());
        let hit = match whitelist::check_whitelist(&cands, wl_values, kp, req.path) {
            Ok(hit) => {
                allow.whitelist = WhitelistOutcome::Entry {
                    network: hit.network,
                };
                hit
            }
            Err(miss) => match fallback.resolve(self, &cands, wl_values, fb_values, kp, req) {
                Some(fallback::Fallback::Static { network, uid }) => {
                    // Static files need no session (their path may have no key path).
                    allow.whitelist = WhitelistOutcome::Static { network };
                    allow.uid = uid;
                    return Ok(());
                }
                Some(fallback::Fallback::Js(hit)) => {
                    allow.whitelist = WhitelistOutcome::Js;
                    hit
                }
                None => return Err(self.miss_or_revoked(req, ip, &uah, kp, miss)),
            },
        };
        if let Some(location) = redirect {
            // Safe-key redirect (step 4) comes before the session step.
            return Err(Decision::Redirect { location });
        }
        viewer.whitelist_uid = hit.uid.as_deref();
        let fv = first.split(session_values);
        let found = session::find_session(&*self.store, &viewer, &fv)
            .await
            .map_err(|e| Decision::store_down(&e))?;
        match found {
            Some(f) => {
                allow.uid = Some(f.session.uid.clone())
                    .filter(|u| !u.is_empty())
                    .or(hit.uid);
                allow.session = SessionOutcome::Reused {
                    id: f.session.id.clone(),
                    via: f.via,
                };
                allow.pending.touch = Some(SessionTouch {
                    session: f.session,
                    ua_hash: uah.clone(),
                    now: ts(req.now),
                });
            }
            None => match uid_param {
                Some(uid) => {
                    let (id, writes) =
                        session::create_session(&viewer, uid, req.path, ts(req.now), self.ttls);
                    allow.set_cookie = Some(session::set_cookie_value(
                        &id,
                        self.session_ttl_s,
                        self.cookie_secure,
                    ));
                    allow.pending.created = Some((uid.to_string(), id.clone()));
                    allow.session = SessionOutcome::Created { id };
                    allow.pending.writes = writes;
                    allow.uid = Some(uid.to_string());
                }
                None => allow.uid = hit.uid,
            },
        }
        Ok(())
    }

    /// Step 6: effective uid, parameters, token, then the access count.
    async fn check_playlist(
        &self,
        req: &AccessRequest<'_>,
        ip: IpAddr,
        effective_uid: Option<&str>,
    ) -> Result<PlaylistCount, PlaylistDeny> {
        let params = PlaylistParams {
            uid: req.uid,
            expires: req.expires,
            token: req.token,
        };
        let uid = playlist::check_playlist_request(
            &self.secret,
            effective_uid,
            &params,
            req.path,
            req.now,
        )?;
        let counted = playlist::CountedRequest {
            full_url: req.full_url,
            path: req.path,
            expires: req.expires.unwrap_or(""),
            token: req.token.unwrap_or(""),
            spend: !req.head,
        };
        playlist::count_playlist_access(
            &*self.store,
            &self.limits,
            uid,
            &counted,
            ip,
            req.user_agent,
        )
        .await
    }

    /// Runs deferred store work of an allowed request (session creation or extension).
    pub async fn complete(&self, pending: Pending) -> Result<(), StoreError> {
        if !pending.writes.is_empty() {
            self.store.write(&pending.writes).await?;
        }
        if let Some((uid, id)) = &pending.created {
            uid_index::index_session(&*self.store, uid, id, self.ttls.user).await?;
        }
        if let Some(t) = pending.touch {
            session::touch_session(&*self.store, &t, self.ttls).await?;
        }
        Ok(())
    }

    /// Whether an `Authorization` value (`Bearer <key>` or the bare key) carries the
    /// whitelist API key; compared in constant time; always false when none is set.
    pub fn whitelist_key_ok(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.map(bearer_token) else {
            return false;
        };
        !self.whitelist_api_key.is_empty()
            && bool::from(
                given
                    .as_bytes()
                    .ct_eq(self.whitelist_api_key.expose().as_bytes()),
            )
    }

    /// `POST /api/whitelist` (SPEC §3): checks the bearer key (`Authorization` value),
    /// validates the body, merges the admission into its entry (concurrent admissions
    /// all land) and returns the `200` JSON. Errors map to status + `{"error": …}`
    /// via [`AdmitError::status`] and [`AdmitError::body`].
    pub async fn admit(
        &self,
        body: &[u8],
        authorization: Option<&str>,
        now: u64,
    ) -> Result<Value, AdmitError> {
        if !self.whitelist_key_ok(authorization) {
            return Err(AdmitError::Unauthorized);
        }
        let adm = whitelist::parse_admission(body)?;
        let (entry, info) = whitelist::store_admission(
            &*self.store,
            &adm,
            ts(now),
            self.max_paths_per_cidr,
            self.ip_access_ttl,
        )
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "whitelist admission failed: store"))?;
        let pairs = self
            .record_admitted_pair(&adm.uid, &adm.network, &adm.ua_hash, now)
            .await?;
        // A new admission lifts a revocation of the uid (SPEC §13).
        let lifted = self.lift_revocation(&adm.uid, now).await?;
        self.log_admission(
            "whitelist",
            &adm.uid,
            &adm.network,
            &adm.ua_hash,
            &adm.key_path,
            &adm.key(),
            now,
        )
        .await;
        let mut v = whitelist::admission_response(
            &adm,
            &entry,
            &info,
            self.ip_access_ttl.as_secs(),
            self.max_paths_per_cidr,
        );
        if let Some(obj) = v.as_object_mut() {
            obj.insert("uid_pairs".into(), json!(pairs));
            if lifted {
                obj.insert("revocation_lifted".into(), json!(true));
            }
        }
        Ok(v)
    }

    /// `/debug/browser`: the UA class, browser name, limit and window.
    pub fn explain_browser(&self, user_agent: &str) -> Value {
        let info = ua::classify_user_agent(user_agent);
        let limit = limits::playlist_limit(&info, &self.limits);
        json!({
            "user_agent": user_agent,
            "class": info.class.as_str(),
            "browser": info.name,
            "limit": limit.limit,
            "window_s": limit.window_s,
            "ua_hash": ua_hash(user_agent),
        })
    }

    /// `/debug/ip-whitelist`: the candidate networks and keys of a viewer, the entry
    /// found under each and whether it admits `path` (reads only).
    pub async fn explain_whitelist(
        &self,
        ip: IpAddr,
        user_agent: &str,
        path: &str,
    ) -> Result<Value, StoreError> {
        let ip = canonical_ip(ip);
        let uah = ua_hash(user_agent);
        let kp = key_path(path);
        let cands = whitelist::candidates(ip, &uah, &self.ipv6_prefixes);
        let keys: Vec<String> = cands.iter().map(|c| c.key.clone()).collect();
        let values = self.store.get_many(&keys).await?;
        let fixed = self.is_fixed_ip(ip);
        let verdict = whitelist::check_whitelist(&cands, &values, kp, path);
        Ok(json!({
            "ip": ip.to_string(),
            "ua_hash": uah,
            "path": path,
            "key_path": kp,
            "fixed_ip_whitelist": fixed,
            "allowed": fixed || verdict.is_ok(),
            "matched_network": verdict.as_ref().ok().map(|h| h.network.to_string()),
            "uid": verdict.as_ref().ok().and_then(|h| h.uid.clone()),
            "candidates": whitelist::explain(&cands, &values, kp, path),
        }))
    }

    /// `/debug/session`: which session the lookup of SPEC §2 step 5 finds for a viewer
    /// (reads only; nothing is created or extended).
    pub async fn explain_session(
        &self,
        ip: IpAddr,
        user_agent: &str,
        uid: Option<&str>,
        path: &str,
        cookie: Option<&str>,
    ) -> Result<Value, StoreError> {
        let ip = canonical_ip(ip);
        let uah = ua_hash(user_agent);
        let kp = key_path(path);
        let cands = whitelist::candidates(ip, &uah, &self.ipv6_prefixes);
        let wl_keys: Vec<String> = cands.iter().map(|c| c.key.clone()).collect();
        let wl_values = self.store.get_many(&wl_keys).await?;
        let wl_uid = whitelist::check_whitelist(&cands, &wl_values, kp, path)
            .ok()
            .and_then(|h| h.uid);
        let cookie_id = cookie.and_then(session::cookie_session_id);
        let viewer = Viewer {
            ip,
            user_agent,
            ua_hash: &uah,
            key_path: kp,
            uid: uid.filter(|u| !u.is_empty()),
            cookie_id: cookie_id.as_deref(),
            whitelist_uid: wl_uid.as_deref(),
        };
        let first = FirstRead::for_viewer(&viewer);
        let values = self.store.get_many(&first.keys()).await?;
        let found = session::find_session(&*self.store, &viewer, &first.split(&values)).await?;
        let record = match &found {
            Some(f) => self
                .store
                .get(&session::session_key(&f.session.id))
                .await?
                .and_then(|r| session::SessionRecord::parse(&r)),
            None => None,
        };
        Ok(json!({
            "ip": ip.to_string(),
            "ua_hash": uah,
            "key_path": kp,
            "whitelist_uid": wl_uid,
            "keys": first.keys(),
            "found": found,
            "record": record,
        }))
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_protect;
