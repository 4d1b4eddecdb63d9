//! Playlist tokens (SPEC §2 step 6): HMAC-SHA256 over `"{uid}:{path}:{expires}"`,
//! written base64url without padding (a 64-char lowercase hex digest is accepted too),
//! compared in constant time; and [`sign_url`] for `fileproxy sign`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `expires` is not a non-negative integer.
    #[error("expires is not a unix timestamp")]
    BadExpires,
    /// `expires` lies in the past.
    #[error("token expired")]
    Expired,
    /// The token does not match the HMAC of uid, path and expires.
    #[error("token does not match")]
    Mismatch,
}

/// The raw HMAC-SHA256(secret, `"{uid}:{path}:{expires}"`).
pub fn token_mac(secret: &[u8], uid: &str, path: &str, expires: &str) -> [u8; 32] {
    // new_from_slice accepts keys of any length for HMAC, so this never fails.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(uid.as_bytes());
    mac.update(b":");
    mac.update(path.as_bytes());
    mac.update(b":");
    mac.update(expires.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The playlist token for `uid`, `path` (without leading `/`) and `expires`, base64url
/// without padding.
pub fn playlist_token(secret: &[u8], uid: &str, path: &str, expires: &str) -> String {
    URL_SAFE_NO_PAD.encode(token_mac(secret, uid, path, expires))
}

/// The lowercase hex form of the same HMAC (accepted too; SPEC §9 key tokens use it).
pub fn hex_token(secret: &[u8], uid: &str, path: &str, expires: &str) -> String {
    hex::encode(token_mac(secret, uid, path, expires))
}

/// Whether `token` is the base64url-no-pad or lowercase-hex form of `mac`, compared in
/// constant time (only the token's length, which is public, decides the form).
pub fn token_matches(mac: &[u8; 32], token: &str) -> bool {
    let t = token.as_bytes();
    if t.len() == 64 {
        let mut hex_buf = [0u8; 64];
        // hex::encode_to_slice writes lowercase; fails only on a size mismatch.
        if hex::encode_to_slice(mac, &mut hex_buf).is_err() {
            return false;
        }
        bool::from(hex_buf.ct_eq(t))
    } else if t.len() == 43 {
        let mut b64_buf = [0u8; 43];
        match URL_SAFE_NO_PAD.encode_slice(mac, &mut b64_buf) {
            Ok(43) => bool::from(b64_buf.ct_eq(t)),
            _ => false,
        }
    } else {
        false
    }
}

/// The 32 MAC bytes a token carries, when it is in one of the two accepted forms
/// (64 lowercase hex characters, or 43 base64url characters without padding).
pub fn token_bytes(token: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    match token.len() {
        64 if token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            hex::decode_to_slice(token, &mut out).ok()?;
            Some(out)
        }
        43 => match URL_SAFE_NO_PAD.decode_slice(token, &mut out) {
            Ok(32) => Some(out),
            _ => None,
        },
        _ => None,
    }
}

/// The token in lowercase hex when it is in an accepted form, else as given: both
/// forms of one MAC then count as one token (key-use counters, SPEC §9).
pub fn canonical_hex(token: &str) -> String {
    token_bytes(token).map_or_else(|| token.to_string(), hex::encode)
}

/// The token in base64url without padding when it is in an accepted form, else as
/// given (token-replay counters: the playlist token's usual form, SPEC §9).
pub fn canonical_b64(token: &str) -> String {
    token_bytes(token).map_or_else(|| token.to_string(), |b| URL_SAFE_NO_PAD.encode(b))
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn encode_query_value(v: &str) -> String {
    utf8_percent_encode(v, QUERY_VALUE).to_string()
}

/// Parses `expires` as Unix seconds (ASCII digits only, as the signer writes it).
pub fn parse_expires(expires: &str) -> Option<u64> {
    if expires.is_empty() || expires.len() > 20 || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    expires.parse().ok()
}

/// Checks a playlist token: `expires` an integer not in the past (`expires >= now`),
/// and `token` the HMAC of `"{uid}:{path}:{expires}"` (path without leading `/`).
pub fn verify_playlist_token(
    secret: &[u8],
    uid: &str,
    path: &str,
    expires: &str,
    token: &str,
    now: u64,
) -> Result<(), TokenError> {
    let exp = parse_expires(expires).ok_or(TokenError::BadExpires)?;
    // Compute the MAC even when expired so timing does not tell which check failed.
    let ok = token_matches(&token_mac(secret, uid, path, expires), token);
    if exp < now {
        return Err(TokenError::Expired);
    }
    if ok {
        Ok(())
    } else {
        Err(TokenError::Mismatch)
    }
}

/// Characters escaped in a query value (everything but unreserved characters).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Characters escaped in a path (keeps `/` and the usual safe characters).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// A path written as it must appear in a URI: `%`, `#`, `?`, spaces, controls and
/// non-ASCII percent-encoded, `/` and the other path characters kept.
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

/// A signed playlist URL `"/a/b.m3u8?uid=U&expires=E&token=T"` valid until `now + ttl`.
///
/// `path` may be given with or without its leading `/`; the token is computed over
/// the path without it, as the proxy checks it after percent-decoding. The path and
/// uid are percent-encoded in the URL.
pub fn sign_url(secret: &[u8], uid: &str, path: &str, ttl: u64, now: u64) -> String {
    let bare = path.strip_prefix('/').unwrap_or(path);
    let expires = now.saturating_add(ttl).to_string();
    let token = playlist_token(secret, uid, bare, &expires);
    format!(
        "/{}?uid={}&expires={}&token={}",
        encode_path(bare),
        utf8_percent_encode(uid, QUERY_VALUE),
        expires,
        token
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"test-secret";

    #[test]
    fn known_vector() {
        // python3 -c 'import hmac,hashlib,base64;d=hmac.new(b"test-secret",b"u1:vod/abc/index.m3u8:1700000000",hashlib.sha256).digest();print(base64.urlsafe_b64encode(d).rstrip(b"=").decode(), d.hex())'
        let t = playlist_token(SECRET, "u1", "vod/abc/index.m3u8", "1700000000");
        let h = hex_token(SECRET, "u1", "vod/abc/index.m3u8", "1700000000");
        assert_eq!(t.len(), 43);
        assert_eq!(h.len(), 64);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&t).unwrap(),
            hex::decode(&h).unwrap()
        );
        assert_eq!(t, KNOWN_B64);
        assert_eq!(h, KNOWN_HEX);
    }

    const KNOWN_B64: &str = "zCVE_R-Lc3LkzpDvVjZZ_TDU_75n1NlbfrW-UctYjSc";
    const KNOWN_HEX: &str = "cc2544fd1f8b7372e4ce90ef563659fd30d4ffbe67d4d95b7eb5be51cb588d27";

    #[test]
    fn verify_accepts_both_forms_until_expiry() {
        let t = playlist_token(SECRET, "u1", "a/b.m3u8", "100");
        let h = hex_token(SECRET, "u1", "a/b.m3u8", "100");
        assert_eq!(
            verify_playlist_token(SECRET, "u1", "a/b.m3u8", "100", &t, 50),
            Ok(())
        );
        assert_eq!(
            verify_playlist_token(SECRET, "u1", "a/b.m3u8", "100", &h, 100),
            Ok(())
        );
        assert_eq!(
            verify_playlist_token(SECRET, "u1", "a/b.m3u8", "100", &t, 101),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_playlist_token(SECRET, "u1", "a/b.m3u8", "100", &h.to_uppercase(), 50),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            verify_playlist_token(SECRET, "u1", "a/b.m3u8", "1e3", &t, 50),
            Err(TokenError::BadExpires)
        );
        assert_eq!(
            verify_playlist_token(SECRET, "u1", "a/b.m3u8", "-1", &t, 0),
            Err(TokenError::BadExpires)
        );
        assert_eq!(
            verify_playlist_token(b"other", "u1", "a/b.m3u8", "100", &t, 50),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            verify_playlist_token(SECRET, "u1", "a/b.m3u8", "100", &format!("{t}="), 50),
            Err(TokenError::Mismatch)
        );
    }

    #[test]
    fn sign_url_round_trips() {
        let url = sign_url(SECRET, "user 1&x", "/a/b.m3u8", 3600, 1_000);
        assert!(
            url.starts_with("/a/b.m3u8?uid=user%201%26x&expires=4600&token="),
            "{url}"
        );
        let token = url.rsplit_once("token=").unwrap().1;
        assert_eq!(
            verify_playlist_token(SECRET, "user 1&x", "a/b.m3u8", "4600", token, 4600),
            Ok(())
        );
        assert_eq!(
            sign_url(SECRET, "u", "a/b.m3u8", 1, 1),
            sign_url(SECRET, "u", "/a/b.m3u8", 1, 1)
        );
        assert!(sign_url(SECRET, "u", "/a b/c?.m3u8", 1, 1).starts_with("/a%20b/c%3F.m3u8?"));
    }

    #[test]
    fn canonical_forms() {
        let h = hex_token(SECRET, "u", "p", "1");
        let b = playlist_token(SECRET, "u", "p", "1");
        assert_eq!(canonical_hex(&b), h);
        assert_eq!(canonical_hex(&h), h);
        assert_eq!(canonical_b64(&h), b);
        assert_eq!(canonical_b64(&b), b);
        // Anything else is kept as given (uppercase hex is not an accepted form).
        assert_eq!(canonical_hex(&h.to_uppercase()), h.to_uppercase());
        assert_eq!(canonical_b64("abc"), "abc");
        assert_eq!(token_bytes(&format!("{b}=")), None);
        assert_eq!(encode_query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    proptest! {
        #[test]
        fn token_forms_round_trip(mac in proptest::array::uniform32(any::<u8>())) {
            let h = hex::encode(mac);
            let b = URL_SAFE_NO_PAD.encode(mac);
            prop_assert_eq!(token_bytes(&h), Some(mac));
            prop_assert_eq!(token_bytes(&b), Some(mac));
            prop_assert!(token_matches(&mac, &h) && token_matches(&mac, &b));
            prop_assert_eq!(canonical_hex(&b), h.clone());
            prop_assert_eq!(canonical_b64(&h), b);
        }

        #[test]
        fn token_bytes_never_panics(t in "\\PC{0,70}") {
            if let Some(mac) = token_bytes(&t) {
                prop_assert!(token_matches(&mac, &t));
            }
        }

        #[test]
        fn any_change_is_rejected(
            uid in "[a-zA-Z0-9_-]{1,12}", uid2 in "[a-zA-Z0-9_-]{1,12}",
            path in "[a-z0-9/._-]{1,30}", path2 in "[a-z0-9/._-]{1,30}",
            exp in 1_000u64..2_000_000_000, exp2 in 1_000u64..2_000_000_000,
            pos in 0usize..64, hex_form in any::<bool>(),
        ) {
            let now = 0;
            let e = exp.to_string();
            let tok = if hex_form { hex_token(SECRET, &uid, &path, &e) } else { playlist_token(SECRET, &uid, &path, &e) };
            prop_assert_eq!(verify_playlist_token(SECRET, &uid, &path, &e, &tok, now), Ok(()));
            if uid2 != uid {
                prop_assert!(verify_playlist_token(SECRET, &uid2, &path, &e, &tok, now).is_err());
            }
            if path2 != path {
                prop_assert!(verify_playlist_token(SECRET, &uid, &path2, &e, &tok, now).is_err());
            }
            if exp2 != exp {
                prop_assert!(verify_playlist_token(SECRET, &uid, &path, &exp2.to_string(), &tok, now).is_err());
            }
            // Flip one character of the token to another valid alphabet character.
            let mut bytes = tok.clone().into_bytes();
            let i = pos % bytes.len();
            bytes[i] = match bytes[i] { b'a' => b'b', b'0' => b'1', _ => b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(verify_playlist_token(SECRET, &uid, &path, &e, &changed, now).is_err());
            // Truncated or extended tokens are refused.
            prop_assert!(verify_playlist_token(SECRET, &uid, &path, &e, &tok[..tok.len() - 1], now).is_err());
            let longer = format!("{tok}a");
            prop_assert!(verify_playlist_token(SECRET, &uid, &path, &e, &longer, now).is_err());
        }

        #[test]
        fn never_panics(tok in "\\PC{0,70}", exp in "\\PC{0,22}") {
            let _ = verify_playlist_token(SECRET, "u", "p", &exp, &tok, 0);
        }
    }
}
