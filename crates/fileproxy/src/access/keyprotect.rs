//! Key protection (SPEC §9): the checks of a key-file request (`.key`, `enc.key`) and
//! its per-token use counter, and the key token written into rewritten playlists.
//!
//! A key token is the lowercase hex HMAC-SHA256(secret, `"{uid}:{path}:{expires}"`)
//! where `path` is the key file's path without its leading `/`; `uid` and `expires`
//! are the playlist's. A key request must carry `uid`, `token` and `expires`, its token
//! must match (hex or base64url) and not be expired, and each token fetches the key at
//! most `key_max_uses` times per `key_use_ttl_s` window, counted atomically under
//! `key_protect:access:{first 32 hex of sha256 of "{token}:{uid}:{path}"}`.

use std::time::Duration;

use super::replay::{count_capped, use_digest};
use super::token::{canonical_hex, hex_token, verify_playlist_token, TokenError};
use crate::store::{Store, StoreError, WindowCount};

/// `403` text: `uid` or `token` missing.
pub const MISSING_AUTH_TEXT: &str = "Access Denied: Missing authentication parameters for key file";
/// `403` text: `expires` missing.
pub const MISSING_EXPIRES_TEXT: &str = "Access Denied: Missing expires parameter for key file";
/// `403` text: token does not match or has expired.
pub const BAD_TOKEN_TEXT: &str = "Access Denied: Key file token invalid or expired";
/// `403` text: the token has fetched the key `key_max_uses` times already.
pub const REPLAY_TEXT: &str =
    "Access Denied: Key file replay detected: maximum usage count exceeded";

/// Why a key-file request was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyDeny {
    /// `uid` or `token` missing or empty.
    #[error("missing uid or token")]
    MissingAuth,
    /// `expires` missing or empty.
    #[error("missing expires")]
    MissingExpires,
    /// The token does not match, `expires` is not a timestamp, or it has passed.
    #[error("key token refused: {0}")]
    BadToken(TokenError),
    /// The token has been used `max` times in the current window.
    #[error("key token used {count} times (max {max})")]
    Replay {
        /// Uses counted, this one included.
        count: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The counter could not be reached (fail closed).
    #[error("key-use counter unavailable: {0}")]
    Store(StoreError),
}

impl KeyDeny {
    /// HTTP status and body text of this refusal.
    pub fn response(&self) -> (u16, &'static str) {
        match self {
            KeyDeny::MissingAuth => (403, MISSING_AUTH_TEXT),
            KeyDeny::MissingExpires => (403, MISSING_EXPIRES_TEXT),
            KeyDeny::BadToken(_) => (403, BAD_TOKEN_TEXT),
            KeyDeny::Replay { .. } => (403, REPLAY_TEXT),
            KeyDeny::Store(_) => (503, super::counting::COUNT_UNAVAILABLE_TEXT),
        }
    }
}

/// The key token of a key file for a playlist's `uid` and `expires` (lowercase hex);
/// `key_file_path` may be given with or without its leading `/`.
pub fn key_token(secret: &[u8], uid: &str, key_file_path: &str, expires: &str) -> String {
    let bare = key_file_path.strip_prefix('/').unwrap_or(key_file_path);
    hex_token(secret, uid, bare, expires)
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

/// The checks that need no store, in this order: `uid` and `token` present, `expires`
/// present, token valid and not expired. `path` is the percent-decoded request path.
pub fn check_key_request(
    secret: &[u8],
    path: &str,
    uid: Option<&str>,
    expires: Option<&str>,
    token: Option<&str>,
    now: u64,
) -> Result<(), KeyDeny> {
    let (Some(uid), Some(token)) = (non_empty(uid), non_empty(token)) else {
        return Err(KeyDeny::MissingAuth);
    };
    let expires = non_empty(expires).ok_or(KeyDeny::MissingExpires)?;
    let bare = path.strip_prefix('/').unwrap_or(path);
    verify_playlist_token(secret, uid, bare, expires, token, now).map_err(KeyDeny::BadToken)
}

/// `key_protect:access:{first 32 hex of sha256 of "{token}:{uid}:{path}"}` with `path`
/// without its leading `/` and the token in its hex form (so the hex and base64url
/// forms of one token share a counter).
pub fn key_use_key(token: &str, uid: &str, path: &str) -> String {
    let mut digest = use_digest(&canonical_hex(token), uid, path);
    digest.truncate(32);
    format!("key_protect:access:{digest}")
}

/// Counts one use of a key token (atomically; the window starts at the first use) and
/// refuses it past `max`. A store failure refuses too (fail closed). `spend = false`
/// (a `HEAD` of the key file, SPEC §10) checks it like a `GET` and spends no use.
pub async fn count_key_use(
    store: &dyn Store,
    token: &str,
    uid: &str,
    path: &str,
    max: u64,
    window: Duration,
    spend: bool,
) -> Result<WindowCount, KeyDeny> {
    let key = key_use_key(token, uid, path);
    count_capped(store, &key, max, window, spend, KeyDeny::Store, |wc| {
        KeyDeny::Replay {
            count: wc.count,
            max,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::token::playlist_token;
    use crate::store::memory::MemoryStore;
    use proptest::prelude::*;

    const S: &[u8] = b"secret";

    #[test]
    fn order_and_texts() {
        let tok = key_token(S, "u", "/v/abc/enc.key", "100");
        let chk = |uid, exp, t, now| check_key_request(S, "/v/abc/enc.key", uid, exp, t, now);
        assert!(chk(Some("u"), Some("100"), Some(tok.as_str()), 100).is_ok());
        // Missing uid/token beats missing expires.
        for (u, t) in [
            (None, Some(tok.as_str())),
            (Some("u"), None),
            (Some(""), Some("x")),
        ] {
            let e = chk(u, None, t, 0).unwrap_err();
            assert_eq!(e.response(), (403, MISSING_AUTH_TEXT));
        }
        let e = chk(Some("u"), Some(""), Some(&tok), 0).unwrap_err();
        assert_eq!(e.response(), (403, MISSING_EXPIRES_TEXT));
        for (exp, now) in [("100", 101), ("99", 0), ("x", 0)] {
            let e = chk(Some("u"), Some(exp), Some(&tok), now).unwrap_err();
            assert_eq!(e.response(), (403, BAD_TOKEN_TEXT));
        }
        // The base64url form of the same MAC is accepted too.
        let b64 = playlist_token(S, "u", "v/abc/enc.key", "100");
        assert!(chk(Some("u"), Some("100"), Some(b64.as_str()), 0).is_ok());
        assert_eq!(
            KeyDeny::Replay { count: 2, max: 1 }.response(),
            (403, REPLAY_TEXT)
        );
    }

    #[test]
    fn counter_key_matches_python() {
        // python3 -c 'import hashlib;print(hashlib.sha256(b"abc:u1:media/demo/enc.key").hexdigest()[:32])'
        assert_eq!(
            key_use_key("abc", "u1", "/media/demo/enc.key"),
            "key_protect:access:d1df5b2469a28ce8388ce52800f2fc75"
        );
        let h = key_token(S, "u", "a/enc.key", "9");
        let b = playlist_token(S, "u", "a/enc.key", "9");
        assert_eq!(
            key_use_key(&h, "u", "a/enc.key"),
            key_use_key(&b, "u", "a/enc.key")
        );
    }

    #[tokio::test]
    async fn uses_are_limited() {
        let store = MemoryStore::new();
        let w = Duration::from_secs(60);
        assert_eq!(
            count_key_use(&store, "t", "u", "a/k.key", 2, w, true)
                .await
                .unwrap()
                .count,
            1
        );
        assert_eq!(
            count_key_use(&store, "t", "u", "a/k.key", 2, w, true)
                .await
                .unwrap()
                .count,
            2
        );
        let e = count_key_use(&store, "t", "u", "a/k.key", 2, w, true)
            .await
            .unwrap_err();
        assert!(matches!(e, KeyDeny::Replay { count: 3, max: 2 }));
        // Another uid, path or token has its own counter.
        assert!(count_key_use(&store, "t", "v", "a/k.key", 1, w, true)
            .await
            .is_ok());
        assert!(count_key_use(&store, "t", "u", "b/k.key", 1, w, true)
            .await
            .is_ok());
        assert!(count_key_use(&store, "t2", "u", "a/k.key", 1, w, true)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn head_checks_like_get_and_spends_nothing() {
        let store = MemoryStore::new();
        let w = Duration::from_secs(60);
        for _ in 0..3 {
            let wc = count_key_use(&store, "t", "u", "a/k.key", 1, w, false)
                .await
                .unwrap();
            assert_eq!(wc.count, 1, "a HEAD sees the use a GET would make");
        }
        count_key_use(&store, "t", "u", "a/k.key", 1, w, true)
            .await
            .unwrap();
        let e = count_key_use(&store, "t", "u", "a/k.key", 1, w, false)
            .await
            .unwrap_err();
        assert!(matches!(e, KeyDeny::Replay { count: 2, max: 1 }));
        assert_eq!(
            store.get(&key_use_key("t", "u", "a/k.key")).await.unwrap(),
            Some("1".into())
        );
    }

    proptest! {
        #[test]
        fn signed_keys_verify(uid in "\\PC{1,12}", path in "/?[a-zA-Z0-9._ -][a-zA-Z0-9/._ -]{0,29}", exp in 0u64..4_000_000_000) {
            let e = exp.to_string();
            let tok = key_token(S, &uid, &path, &e);
            let req_path = format!("/{}", path.strip_prefix('/').unwrap_or(&path));
            prop_assert!(check_key_request(S, &req_path, Some(&uid), Some(&e), Some(&tok), exp).is_ok());
            let late = check_key_request(S, &req_path, Some(&uid), Some(&e), Some(&tok), exp + 1);
            prop_assert!(matches!(late, Err(KeyDeny::BadToken(TokenError::Expired))));
            let other = format!("{req_path}x");
            prop_assert!(check_key_request(S, &other, Some(&uid), Some(&e), Some(&tok), 0).is_err());
        }

        #[test]
        fn never_panics(u in "\\PC{0,10}", e in "\\PC{0,22}", t in "\\PC{0,70}", p in "\\PC{0,30}") {
            let _ = check_key_request(S, &p, Some(&u), Some(&e), Some(&t), 0);
            let _ = key_use_key(&t, &u, &p);
        }
    }
}
