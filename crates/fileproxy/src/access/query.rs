//! Request pieces the HTTP layer hands to the policy, parsed without HTTP types: the
//! `uid`/`expires`/`token` query parameters, the session cookie, and the full URL of
//! SPEC §4.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use super::session::COOKIE_NAME;

/// The query parameters the policy reads, percent-decoded (`+` as space, as form
/// decoding does); the first occurrence of each name wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams<'a> {
    /// `uid`.
    pub uid: Option<Cow<'a, str>>,
    /// `expires`.
    pub expires: Option<Cow<'a, str>>,
    /// `token`.
    pub token: Option<Cow<'a, str>>,
}

/// A query name or value percent-decoded, `+` as space, invalid UTF-8 replaced;
/// borrowed when there is nothing to decode.
pub fn decode_component(v: &str) -> Cow<'_, str> {
    if v.bytes().any(|b| b == b'%' || b == b'+') {
        let spaced = v.replace('+', " ");
        Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
    } else {
        Cow::Borrowed(v)
    }
}

/// The `name=value` pairs of a raw query string (without the `?`), not decoded; a
/// pair without `=` has an empty value.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The first value of query parameter `name` (names compared as sent), decoded by
/// [`decode_component`].
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query_pairs(query)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| decode_component(v))
}

/// The credential of an `Authorization` value with the `Bearer ` scheme (any case),
/// trimmed; `None` when the value has no such scheme.
pub fn bearer_credential(authorization: &str) -> Option<&str> {
    let v = authorization.trim();
    let (scheme, rest) = (v.get(..7)?, v.get(7..)?);
    scheme.eq_ignore_ascii_case("bearer ").then(|| rest.trim())
}

/// Parses the raw query string (without the `?`).
pub fn parse_query(query: &str) -> QueryParams<'_> {
    let mut q = QueryParams::default();
    for (name, value) in query_pairs(query) {
        let slot = match name {
            "uid" => &mut q.uid,
            "expires" => &mut q.expires,
            "token" => &mut q.token,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(decode_component(value));
        }
    }
    q
}

/// The `session_id_fileserver` value in a `Cookie` header (`a=1; session_id_fileserver=…`).
pub fn session_cookie(cookie_header: &str) -> Option<&str> {
    cookie_header.split(';').find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name.trim() == COOKIE_NAME).then(|| value.trim().trim_matches('"'))
    })
}

/// The full URL of SPEC §4: `{scheme}://{host}{raw path}?{raw query}` exactly as the
/// viewer sent path and query (no `?` when there is no query).
pub fn full_url(scheme: &str, host: &str, raw_path: &str, raw_query: Option<&str>) -> String {
    match raw_query {
        Some(q) => format!("{scheme}://{host}{raw_path}?{q}"),
        None => format!("{scheme}://{host}{raw_path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::token::{sign_url, verify_playlist_token};
    use proptest::prelude::*;

    #[test]
    fn query_params() {
        let q = parse_query("uid=a%20b&expires=12&token=x_y-z&uid=other&junk");
        assert_eq!(q.uid.as_deref(), Some("a b"));
        assert_eq!(q.expires.as_deref(), Some("12"));
        assert_eq!(q.token.as_deref(), Some("x_y-z"));
        assert_eq!(parse_query("uid=a+b").uid.as_deref(), Some("a b"));
        assert_eq!(parse_query("token").token.as_deref(), Some(""));
        assert_eq!(parse_query(""), QueryParams::default());
        assert_eq!(query_value("a=1&b=x+y&b=2", "b").as_deref(), Some("x y"));
        assert_eq!(query_value("a=1", "b"), None);
    }

    #[test]
    fn bearer() {
        assert_eq!(bearer_credential(" Bearer  k1 "), Some("k1"));
        assert_eq!(bearer_credential("bearer k"), Some("k"));
        assert_eq!(bearer_credential("Basic k"), None);
        assert_eq!(bearer_credential("k"), None);
        assert_eq!(bearer_credential("Bearer视"), None);
    }

    #[test]
    fn cookies_and_urls() {
        assert_eq!(
            session_cookie("a=1; session_id_fileserver=abc ; b=2"),
            Some("abc")
        );
        assert_eq!(session_cookie("session_id_fileserver=\"abc\""), Some("abc"));
        assert_eq!(session_cookie("xsession_id_fileserver=abc"), None);
        assert_eq!(session_cookie(""), None);
        assert_eq!(
            full_url("https", "h:8443", "/a/b.m3u8", Some("uid=1")),
            "https://h:8443/a/b.m3u8?uid=1"
        );
        assert_eq!(full_url("http", "h", "/a", None), "http://h/a");
    }

    proptest! {
        #[test]
        fn signed_urls_verify_after_parsing(uid in "\\PC{1,16}", path in "[a-z0-9/._ -]{1,20}") {
            let url = sign_url(b"k", &uid, &format!("/{path}"), 60, 1000);
            let (raw_path, query) = url.split_once('?').unwrap();
            let q = parse_query(query);
            let decoded = percent_decode_str(raw_path).decode_utf8_lossy();
            let bare = decoded.strip_prefix('/').unwrap();
            prop_assert_eq!(bare, path.as_str());
            prop_assert_eq!(q.uid.as_deref(), Some(uid.as_str()));
            prop_assert!(verify_playlist_token(b"k", q.uid.as_deref().unwrap(), bare,
                q.expires.as_deref().unwrap(), q.token.as_deref().unwrap(), 1000).is_ok());
        }

        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = parse_query(&s);
            let _ = session_cookie(&s);
        }
    }
}
