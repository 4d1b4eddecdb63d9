//! Playlist checks of SPEC §2 step 6 (in this order: effective uid, parameters, token,
//! access count) and the access counter of SPEC §4.

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::counting::peek_window;
use super::limits::playlist_limit;
use super::token::{canonical_hex, verify_playlist_token, TokenError};
use super::ua::{classify_user_agent, UaInfo};
use crate::config::{ClassLimit, PlaylistLimits};
use crate::store::{Store, StoreError};

/// `403` text: no effective uid.
pub const NO_UID_TEXT: &str = "No valid UID for .m3u8 request";
/// `400` text: a query parameter is missing.
pub const MISSING_PARAMS_TEXT: &str =
    ".m3u8 request missing required parameters (uid, expires, token)";
/// `403` text: bad or expired token.
pub const BAD_TOKEN_TEXT: &str = ".m3u8 request token invalid or expired hmac";
pub use super::counting::COUNT_UNAVAILABLE_TEXT;

/// `403` text for an exceeded access count.
pub fn limit_text(uid: &str) -> String {
    format!("Access Denied 100308 with uid:{uid}")
}

/// The counter key `m3u8_access_count_v2:{sha256 hex of "{uid}:{full_url}:{ip}"}`.
pub fn access_count_key(uid: &str, full_url: &str, ip: IpAddr) -> String {
    let mut h = Sha256::new();
    h.update(uid.as_bytes());
    h.update(b":");
    h.update(full_url.as_bytes());
    h.update(b":");
    h.update(ip.to_string().as_bytes());
    format!("m3u8_access_count_v2:{}", hex::encode(h.finalize()))
}

/// The canonical counter key of SPEC §4, beside the Python-format one:
/// `m3u8_access_count_canon:{sha256 hex of "{uid}:{path}:{expires}:{token hex}:{ip}"}`,
/// with `path` percent-decoded without its leading `/` and the token's MAC bytes in
/// lowercase hex (its hex and base64url spellings share one counter). Appending a
/// query parameter, changing the `Host` header's case or re-encoding a path character
/// gives a new Python-format URL but not a new canonical counter.
pub fn canonical_count_key(
    uid: &str,
    path: &str,
    expires: &str,
    token: &str,
    ip: IpAddr,
) -> String {
    let bare = path.strip_prefix('/').unwrap_or(path);
    let mut h = Sha256::new();
    for (i, part) in [uid, bare, expires, &canonical_hex(token), &ip.to_string()]
        .iter()
        .enumerate()
    {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    format!("m3u8_access_count_canon:{}", hex::encode(h.finalize()))
}

/// What the access counters of one playlist request are keyed on, besides uid and IP.
#[derive(Debug, Clone, Copy)]
pub struct CountedRequest<'a> {
    /// `{scheme}://{Host}{path}?{query}` as sent (the Python-format counter).
    pub full_url: &'a str,
    /// The canonical (percent-decoded) path, with its leading `/`.
    pub path: &'a str,
    /// `expires` as written.
    pub expires: &'a str,
    /// `token` as written (hex or base64url).
    pub token: &'a str,
    /// `false` for `HEAD`: the counters are read, not incremented.
    pub spend: bool,
}

/// The query parameters of a playlist request (empty values count as missing).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlaylistParams<'a> {
    /// `uid`.
    pub uid: Option<&'a str>,
    /// `expires`.
    pub expires: Option<&'a str>,
    /// `token`.
    pub token: Option<&'a str>,
}

/// Why a playlist request was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlaylistDeny {
    /// No session uid and no whitelist uid.
    #[error("no effective uid")]
    NoUid,
    /// `uid`, `expires` or `token` missing.
    #[error("missing parameters")]
    MissingParams,
    /// Token does not match or `expires` is not a timestamp.
    #[error("token invalid: {0}")]
    BadToken(TokenError),
    /// `expires` in the past.
    #[error("token expired")]
    Expired,
    /// Access count past the limit.
    #[error("access count {count} over limit {limit}")]
    LimitExceeded {
        /// The effective uid.
        uid: String,
        /// Count after this request.
        count: u64,
        /// The limit that applied.
        limit: u64,
    },
    /// The counter could not be read or incremented (fail closed).
    #[error("access counter unavailable: {0}")]
    Store(StoreError),
}

impl PlaylistDeny {
    /// HTTP status and body text of this refusal.
    pub fn response(&self) -> (u16, String) {
        match self {
            PlaylistDeny::NoUid => (403, NO_UID_TEXT.into()),
            PlaylistDeny::MissingParams => (400, MISSING_PARAMS_TEXT.into()),
            PlaylistDeny::BadToken(_) | PlaylistDeny::Expired => (403, BAD_TOKEN_TEXT.into()),
            PlaylistDeny::LimitExceeded { uid, .. } => (403, limit_text(uid)),
            PlaylistDeny::Store(_) => (503, COUNT_UNAVAILABLE_TEXT.into()),
        }
    }
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

/// The checks that need no store, in SPEC order: effective uid, parameters, token
/// (over the request path without its leading `/`). Returns the effective uid.
pub fn check_playlist_request<'a>(
    secret: &[u8],
    effective_uid: Option<&'a str>,
    params: &PlaylistParams<'_>,
    path: &str,
    now: u64,
) -> Result<&'a str, PlaylistDeny> {
    let uid = non_empty(effective_uid).ok_or(PlaylistDeny::NoUid)?;
    let (Some(q_uid), Some(expires), Some(token)) = (
        non_empty(params.uid),
        non_empty(params.expires),
        non_empty(params.token),
    ) else {
        return Err(PlaylistDeny::MissingParams);
    };
    let bare = path.strip_prefix('/').unwrap_or(path);
    verify_playlist_token(secret, q_uid, bare, expires, token, now).map_err(|e| match e {
        TokenError::Expired => PlaylistDeny::Expired,
        other => PlaylistDeny::BadToken(other),
    })?;
    Ok(uid)
}

/// The outcome of a counted playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaylistCount {
    /// The viewer's UA class and browser name.
    pub ua: UaInfo,
    /// The limit and window that applied.
    pub limit: ClassLimit,
    /// The counter after this request.
    pub count: u64,
}

/// Counts this playlist request (SPEC §4) under both counters — the Python-format one
/// ([`access_count_key`]) and the canonical one ([`canonical_count_key`]), each one
/// atomic increment, concurrently — and refuses it when either is past the UA's
/// limit. A `HEAD` (`spend = false`) is checked the same way against the counts a
/// `GET` would make, and spends nothing. A store failure refuses too (fail closed).
pub async fn count_playlist_access(
    store: &dyn Store,
    limits: &PlaylistLimits,
    uid: &str,
    req: &CountedRequest<'_>,
    ip: IpAddr,
    user_agent: &str,
) -> Result<PlaylistCount, PlaylistDeny> {
    let ua = classify_user_agent(user_agent);
    let limit = playlist_limit(&ua, limits);
    let python = access_count_key(uid, req.full_url, ip);
    let canonical = canonical_count_key(uid, req.path, req.expires, req.token, ip);
    let window = Duration::from_secs(limit.window_s.max(1));
    let count = |key: String| async move {
        if req.spend {
            store.incr_window(&key, window).await
        } else {
            peek_window(store, &key, limit.limit).await
        }
    };
    let (a, b) = futures_util::future::join(count(python), count(canonical)).await;
    let a = a.map_err(PlaylistDeny::Store)?;
    let b = b.map_err(PlaylistDeny::Store)?;
    let count = a.count.max(b.count);
    if count > limit.limit {
        return Err(PlaylistDeny::LimitExceeded {
            uid: uid.to_string(),
            count,
            limit: limit.limit,
        });
    }
    Ok(PlaylistCount { ua, limit, count })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::token::playlist_token;

    const S: &[u8] = b"k";

    fn params<'a>(u: &'a str, e: &'a str, t: &'a str) -> PlaylistParams<'a> {
        PlaylistParams {
            uid: Some(u),
            expires: Some(e),
            token: Some(t),
        }
    }

    #[test]
    fn order_and_texts() {
        let tok = playlist_token(S, "u", "a/b.m3u8", "100");
        let ok = params("u", "100", &tok);
        // No uid beats everything else.
        let e = check_playlist_request(S, None, &PlaylistParams::default(), "/a/b.m3u8", 0);
        assert_eq!(e.unwrap_err().response(), (403, NO_UID_TEXT.into()));
        let e = check_playlist_request(S, Some(""), &ok, "/a/b.m3u8", 0);
        assert!(matches!(e, Err(PlaylistDeny::NoUid)));
        // Then missing parameters (empty counts as missing).
        for p in [
            PlaylistParams { uid: None, ..ok },
            PlaylistParams {
                expires: None,
                ..ok
            },
            PlaylistParams {
                token: Some(""),
                ..ok
            },
        ] {
            let e = check_playlist_request(S, Some("u"), &p, "/a/b.m3u8", 0).unwrap_err();
            assert_eq!(e.response(), (400, MISSING_PARAMS_TEXT.into()));
        }
        // Then the token.
        assert_eq!(
            check_playlist_request(S, Some("w"), &ok, "/a/b.m3u8", 50).unwrap(),
            "w"
        );
        let e = check_playlist_request(S, Some("u"), &ok, "/a/b.m3u8", 101).unwrap_err();
        assert!(matches!(e, PlaylistDeny::Expired));
        assert_eq!(e.response(), (403, BAD_TOKEN_TEXT.into()));
        let e = check_playlist_request(S, Some("u"), &ok, "/a/c.m3u8", 50).unwrap_err();
        assert_eq!(e.response(), (403, BAD_TOKEN_TEXT.into()));
        assert_eq!(
            PlaylistDeny::LimitExceeded {
                uid: "u9".into(),
                count: 2,
                limit: 1
            }
            .response(),
            (403, "Access Denied 100308 with uid:u9".into())
        );
    }

    #[test]
    fn count_key_matches_python() {
        // python3 -c 'import hashlib;print(hashlib.sha256(b"u1:http://h/a/b.m3u8?uid=u1:1.2.3.4").hexdigest())'
        assert_eq!(
            access_count_key("u1", "http://h/a/b.m3u8?uid=u1", "1.2.3.4".parse().unwrap()),
            format!("m3u8_access_count_v2:{}", KNOWN)
        );
    }

    #[test]
    fn canonical_key_ignores_spelling() {
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let b64 = playlist_token(S, "u", "a/b.m3u8", "100");
        let hex = crate::access::token::hex_token(S, "u", "a/b.m3u8", "100");
        let k = canonical_count_key("u", "/a/b.m3u8", "100", &b64, ip);
        assert!(k.starts_with("m3u8_access_count_canon:"));
        assert_eq!(k, canonical_count_key("u", "a/b.m3u8", "100", &hex, ip));
        // python3 -c 'import hashlib;print(hashlib.sha256(b"u:a/b.m3u8:100:00ff:1.2.3.4").hexdigest())'
        assert_eq!(
            canonical_count_key("u", "/a/b.m3u8", "100", "00ff", ip),
            "m3u8_access_count_canon:505b2faf73f6cc65a4d25def6bf8841907e9c34d260843f540eb0bc87e00be62"
        );
        for other in [
            canonical_count_key("v", "/a/b.m3u8", "100", &b64, ip),
            canonical_count_key("u", "/a/c.m3u8", "100", &b64, ip),
            canonical_count_key("u", "/a/b.m3u8", "101", &b64, ip),
            canonical_count_key("u", "/a/b.m3u8", "100", &b64, "1.2.3.5".parse().unwrap()),
        ] {
            assert_ne!(k, other);
        }
    }

    #[tokio::test]
    async fn either_counter_denies_and_head_spends_nothing() {
        use crate::store::memory::MemoryStore;
        let store = MemoryStore::new();
        let limits = PlaylistLimits::default();
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let tok = playlist_token(S, "u", "a/b.m3u8", "100");
        let req = |url, spend| CountedRequest {
            full_url: url,
            path: "/a/b.m3u8",
            expires: "100",
            token: &tok,
            spend,
        };
        let run = |url: &'static str, spend: bool| {
            let r = req(url, spend);
            let store = &store;
            let limits = &limits;
            async move { count_playlist_access(store, limits, "u", &r, ip, "curl/8").await }
        };
        let url = "http://h/a/b.m3u8?uid=u&expires=100&token=t";
        for _ in 0..3 {
            assert_eq!(
                run(url, false).await.unwrap().count,
                1,
                "HEAD spends nothing"
            );
        }
        assert_eq!(run(url, true).await.unwrap().count, 1);
        assert!(matches!(
            run(url, false).await,
            Err(PlaylistDeny::LimitExceeded { count: 2, .. })
        ));
        // A new Python-format URL (extra parameter, Host case): the canonical one denies.
        for evasion in [
            "http://h/a/b.m3u8?uid=u&expires=100&token=t&x=1",
            "http://H/a/b.m3u8?uid=u&expires=100&token=t",
            "http://h/a/%62.m3u8?uid=u&expires=100&token=t",
        ] {
            let e = run(evasion, true).await.unwrap_err();
            assert!(matches!(e, PlaylistDeny::LimitExceeded { .. }), "{evasion}");
        }
    }

    const KNOWN: &str = "f25360a021bddf350f154633553588c54d6844f04130a147c8dd1176e65c9eeb";
}
