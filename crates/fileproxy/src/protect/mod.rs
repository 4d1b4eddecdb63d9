//! SPEC §9 on the HTTP side of the pipeline: key-protected playlists are rewritten
//! ([`rewrite`], [`playlist`]), policy decisions and finished transfers feed the
//! operator views ([`events`]), and live transfers are tracked ([`transfers`]).
//! The rules themselves (key tokens and counters, token replay, admissions) are plain
//! policy logic in [`crate::access`].

pub mod events;
pub mod rewrite;
pub mod serve_playlist;
pub mod transfers;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::response::Parts;
use serve_playlist::PlaylistError;

use crate::access::classify::FileClass;
use crate::access::{AccessRequest, Decision};
use crate::config::Config;
use crate::origin::OriginBody;
use crate::response::Body;
use crate::store::SharedStore;
use crate::stream::TransferObserver;

use events::{AccessEvent, EventLog};
use rewrite::KeySigner;
use transfers::{TransferMeta, Transfers};

/// The `uid` and `expires` a playlist's key URIs are signed with (the playlist's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistSigning {
    /// The playlist request's `uid`.
    pub uid: String,
    /// The playlist request's `expires`.
    pub expires: String,
}

/// Shared §9 state of the HTTP side.
pub struct Protect {
    /// Operator-view event lists.
    pub events: Arc<EventLog>,
    /// Live transfers.
    pub transfers: Arc<Transfers>,
    secret: Vec<u8>,
    key_protection: bool,
    max_playlist_bytes: usize,
    playlist_timeout: Duration,
}

impl std::fmt::Debug for Protect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protect")
            .field("key_protection", &self.key_protection)
            .field("max_playlist_bytes", &self.max_playlist_bytes)
            .finish_non_exhaustive()
    }
}

impl Protect {
    /// Builds the §9 state (inside Tokio: starts the event store writer).
    pub fn new(cfg: &Config, store: SharedStore) -> Self {
        Self {
            events: Arc::new(EventLog::new(
                cfg.protect.event_log_capacity,
                Duration::from_secs(cfg.protect.event_log_ttl_s.max(1)),
                store,
            )),
            transfers: Arc::new(Transfers::default()),
            secret: cfg.auth.secret.expose().as_bytes().to_vec(),
            key_protection: cfg.protect.key_protection,
            max_playlist_bytes: cfg.protect.max_playlist_bytes,
            playlist_timeout: Duration::from_millis(cfg.origin.playlist_timeout_ms.max(1)),
        }
    }

    /// The same event lists and live transfers with the settings of a reloaded `cfg`.
    pub fn reconfigured(&self, cfg: &Config) -> Self {
        Self {
            events: Arc::clone(&self.events),
            transfers: Arc::clone(&self.transfers),
            secret: cfg.auth.secret.expose().as_bytes().to_vec(),
            key_protection: cfg.protect.key_protection,
            max_playlist_bytes: cfg.protect.max_playlist_bytes,
            playlist_timeout: Duration::from_millis(cfg.origin.playlist_timeout_ms.max(1)),
        }
    }

    /// Whether an allowed request's response must be rewritten: a playlist under key
    /// protection with its `uid` and `expires` (which the playlist check required).
    pub fn playlist_signing(
        &self,
        class: FileClass,
        uid: Option<&str>,
        expires: Option<&str>,
    ) -> Option<PlaylistSigning> {
        if !self.key_protection || class != FileClass::Playlist {
            return None;
        }
        match (
            uid.filter(|u| !u.is_empty()),
            expires.filter(|e| !e.is_empty()),
        ) {
            (Some(uid), Some(expires)) => Some(PlaylistSigning {
                uid: uid.to_string(),
                expires: expires.to_string(),
            }),
            _ => None,
        }
    }

    /// Rewrites an origin `200` playlist (bounded read, signed key URIs, fresh
    /// headers); `Err` says why it cannot be served (the rescue turns it into 502/504).
    pub async fn rewrite(
        &self,
        parts: &mut Parts,
        body: OriginBody,
        signing: &PlaylistSigning,
        raw_path: &str,
        head: bool,
    ) -> Result<Body, PlaylistError> {
        let signer = KeySigner {
            secret: &self.secret,
            uid: &signing.uid,
            expires: &signing.expires,
            playlist_path: raw_path,
        };
        serve_playlist::rewrite_response(
            parts,
            body,
            &signer,
            self.max_playlist_bytes,
            self.playlist_timeout,
            head,
        )
        .await
    }

    /// Feeds a policy decision to the operator views (refusals also go to the recent
    /// list).
    pub fn observe(
        &self,
        req: &AccessRequest<'_>,
        decision: &Decision,
        key_file: bool,
        method: &str,
    ) {
        self.events.record_decision(req, decision, key_file);
        if let Decision::Deny { status, reason, .. } = decision {
            self.events.record_access(&AccessEvent {
                client_ip: req.client_ip,
                method,
                path: req.path,
                uid: req.uid,
                status: *status,
                bytes: 0,
                outcome: "denied",
                reason: Some(reason.as_str()),
                first_byte_ms: None,
                duration_ms: 0.0,
                user_agent: req.user_agent,
            });
        }
    }

    /// Records an origin error status passed through with an empty body.
    pub fn record_origin_status(
        &self,
        client_ip: IpAddr,
        method: &str,
        path: &str,
        uid: Option<&str>,
        status: u16,
        started: Instant,
    ) {
        self.events.record_access(&AccessEvent {
            client_ip,
            method,
            path,
            uid,
            status,
            bytes: 0,
            outcome: "origin_status",
            reason: None,
            first_byte_ms: None,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            user_agent: "",
        });
    }

    /// Wraps a transfer's observer so `/active-transfers` shows it while it streams.
    pub fn track(
        &self,
        meta: TransferMeta,
        inner: Box<dyn TransferObserver>,
    ) -> Box<dyn TransferObserver> {
        self.transfers.track(&self.events, meta, inner)
    }
}
