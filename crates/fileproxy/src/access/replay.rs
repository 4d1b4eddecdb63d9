//! Token replay limit (SPEC §9): a request carrying `uid` and `token` (key files aside)
//! counts one use of (token, uid, path) under
//! `token_replay:{sha256 hex of "{token}:{uid}:{path}"}`, atomically with a window that
//! starts at the first use; past `token_max_uses` it is refused with the counter's
//! remaining TTL in the text.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::counting::peek_window;
use super::token::canonical_b64;
use crate::store::{Store, StoreError, WindowCount};

/// The `403` text of an exceeded token: `max` uses, `ttl_s` seconds left in the window.
pub fn replay_text(max: u64, ttl_s: u64) -> String {
    format!(
        "Access Denied: Token has exceeded maximum usage limit ({max} uses). Please request a new token. TTL: {ttl_s}s"
    )
}

/// `token_replay:{sha256 hex of "{token}:{uid}:{path}"}` with `path` without its
/// leading `/`. A token in one of the accepted MAC forms is counted in its base64url
/// form (the playlist token's), so writing the same MAC in hex gains no extra use.
pub fn replay_key(token: &str, uid: &str, path: &str) -> String {
    format!(
        "token_replay:{}",
        use_digest(&canonical_b64(token), uid, path)
    )
}

/// Lowercase hex SHA-256 of `"{token}:{uid}:{path}"` with `path` without its leading
/// `/` (the token as given: callers pass its canonical form).
pub(super) fn use_digest(token: &str, uid: &str, path: &str) -> String {
    let bare = path.strip_prefix('/').unwrap_or(path);
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update(b":");
    h.update(uid.as_bytes());
    h.update(b":");
    h.update(bare.as_bytes());
    hex::encode(h.finalize())
}

/// Counts one use under `key` (atomically; the window starts at the first use) and
/// refuses it with `over` past `max`; a store failure refuses with `on_store` (fail
/// closed). With `spend = false` (a `HEAD` request, SPEC §4 and §10) the counter is
/// only read: the request is checked as the next use would be, and nothing is counted.
pub(super) async fn count_capped<E>(
    store: &dyn Store,
    key: &str,
    max: u64,
    window: Duration,
    spend: bool,
    on_store: fn(StoreError) -> E,
    over: impl FnOnce(WindowCount) -> E,
) -> Result<WindowCount, E> {
    let wc = if spend {
        store.incr_window(key, window).await.map_err(on_store)?
    } else {
        peek_window(store, key, max).await.map_err(on_store)?
    };
    if wc.count > max {
        return Err(over(wc));
    }
    Ok(wc)
}

/// Why a token use was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplayDeny {
    /// The token has been used more than `max` times in the window.
    #[error("token used {count} times (max {max})")]
    Exceeded {
        /// Uses counted, this one included.
        count: u64,
        /// The configured maximum.
        max: u64,
        /// Seconds left in the window (rounded up).
        ttl_s: u64,
    },
    /// The counter could not be reached (fail closed).
    #[error("token-use counter unavailable: {0}")]
    Store(StoreError),
}

impl ReplayDeny {
    /// HTTP status and body text of this refusal.
    pub fn response(&self) -> (u16, String) {
        match self {
            ReplayDeny::Exceeded { max, ttl_s, .. } => (403, replay_text(*max, *ttl_s)),
            ReplayDeny::Store(_) => (503, super::counting::COUNT_UNAVAILABLE_TEXT.into()),
        }
    }
}

/// Whole seconds left in a window, rounded up (a live counter never shows `0s`).
pub fn ttl_secs(ttl: Duration) -> u64 {
    let ms = ttl.as_millis();
    u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX)
}

/// Counts one use of (token, uid, path) and refuses it past `max`; a store failure
/// refuses too (fail closed). `spend = false` checks without counting (`HEAD`).
pub async fn count_token_use(
    store: &dyn Store,
    token: &str,
    uid: &str,
    path: &str,
    max: u64,
    window: Duration,
    spend: bool,
) -> Result<WindowCount, ReplayDeny> {
    let key = replay_key(token, uid, path);
    count_capped(store, &key, max, window, spend, ReplayDeny::Store, |wc| {
        ReplayDeny::Exceeded {
            count: wc.count,
            max,
            ttl_s: ttl_secs(wc.ttl),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::token::{hex_token, playlist_token};
    use crate::store::memory::MemoryStore;

    #[test]
    fn key_and_text_match_python() {
        // python3 -c 'import hashlib;print(hashlib.sha256(b"tok:u1:media/demo/index.m3u8").hexdigest())'
        assert_eq!(
            replay_key("tok", "u1", "/media/demo/index.m3u8"),
            "token_replay:d301dbe50068db76eb48805683960d1e7d656505f3e42121eb2effc40b2a9aa3"
        );
        assert_eq!(
            replay_text(1, 9600),
            "Access Denied: Token has exceeded maximum usage limit (1 uses). Please request a new token. TTL: 9600s"
        );
        let h = hex_token(b"k", "u", "p", "1");
        let b = playlist_token(b"k", "u", "p", "1");
        assert_eq!(replay_key(&h, "u", "p"), replay_key(&b, "u", "/p"));
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(9_600_000)), 9600);
        assert_eq!(ttl_secs(Duration::ZERO), 0);
    }

    #[tokio::test]
    async fn uses_are_limited_with_ttl() {
        let store = MemoryStore::new();
        let w = Duration::from_secs(9600);
        let wc = count_token_use(&store, "t", "u", "/a/b.ts", 1, w, true)
            .await
            .unwrap();
        assert_eq!(wc.count, 1);
        let e = count_token_use(&store, "t", "u", "a/b.ts", 1, w, true)
            .await
            .unwrap_err();
        let ReplayDeny::Exceeded { count, max, ttl_s } = e else {
            panic!("{e:?}")
        };
        assert_eq!((count, max), (2, 1));
        assert!((1..=9600).contains(&ttl_s), "{ttl_s}");
        assert_eq!(
            ReplayDeny::Exceeded { count, max, ttl_s }.response().1,
            replay_text(1, ttl_s)
        );
    }
}
