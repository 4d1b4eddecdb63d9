//! The key-protection playlist rewriter (SPEC §9): a pure, byte-exact transformation.
//!
//! Every `#EXT-X-KEY:` line's `URI` attribute (double-quoted, single-quoted or bare;
//! an absolute `http(s)` URL, a network-path `//host/…`, an absolute path, or a path
//! relative to the playlist's folder) gets `uid`, `expires` and `token` query
//! parameters appended after any query it already has (its own `uid`, `expires` and
//! `token` are dropped first, so rewriting is idempotent). The token is
//! [`key_token`]: lowercase hex HMAC-SHA256(secret, `"{uid}:{path}:{expires}"`) over
//! the key file's resolved, percent-decoded path without its leading `/` — exactly
//! what the key-file check computes when the player requests that URI. Every other
//! byte of the playlist (other lines, other attributes, line endings) is kept.
//!
//! URIs with another scheme (`data:`, `skd:` …) are not fetched over HTTP and are left
//! alone. A key line that is not UTF-8, has an unterminated quote, an attribute without
//! `=`, or an empty `URI` is refused as a whole ([`RewriteError`]): serving it unsigned
//! would only make the key unfetchable later.

use percent_encoding::percent_decode_str;

use crate::access::keyprotect::key_token;
use crate::access::token::encode_query_value;

/// The tag whose `URI` is signed.
pub const KEY_TAG: &[u8] = b"#EXT-X-KEY:";

/// What signs the key URIs of one playlist response.
#[derive(Debug, Clone, Copy)]
pub struct KeySigner<'a> {
    /// HMAC key (`auth.secret`).
    pub secret: &'a [u8],
    /// The playlist request's `uid`.
    pub uid: &'a str,
    /// The playlist request's `expires`, as written.
    pub expires: &'a str,
    /// The playlist's request path as the viewer sent it (percent-encoded, leading `/`,
    /// no query): relative key URIs resolve against its folder.
    pub playlist_path: &'a str,
}

/// Why a playlist could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// A key line is not UTF-8.
    #[error("line {line}: #EXT-X-KEY line is not UTF-8")]
    NotUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// A key line's attribute list cannot be parsed, or its `URI` is empty.
    #[error("line {line}: malformed #EXT-X-KEY attribute list")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
}

/// Rewrites a playlist body; see the module docs.
pub fn rewrite_playlist(input: &[u8], s: &KeySigner<'_>) -> Result<Vec<u8>, RewriteError> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 256);
    for (i, piece) in input.split_inclusive(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let content_len = if piece.ends_with(b"\r\n") {
            piece.len() - 2
        } else if piece.ends_with(b"\n") {
            piece.len() - 1
        } else {
            piece.len()
        };
        let (content, end) = piece.split_at(content_len);
        if !content.starts_with(KEY_TAG) {
            out.extend_from_slice(piece);
            continue;
        }
        let text = std::str::from_utf8(content).map_err(|_| RewriteError::NotUtf8 { line })?;
        let rewritten = rewrite_key_line(text, s).ok_or(RewriteError::Malformed { line })?;
        out.extend_from_slice(rewritten.as_bytes());
        out.extend_from_slice(end);
    }
    Ok(out)
}

/// The span of an attribute value inside an attribute list (quotes excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

/// Finds the `URI` value of an attribute list; `None` when the list is malformed,
/// `Some(None)` when it has no `URI` (e.g. `METHOD=NONE`).
fn find_uri(attrs: &str) -> Option<Option<Span>> {
    let b = attrs.as_bytes();
    let len = b.len();
    let mut i = 0;
    let mut uri = None;
    while i < len {
        while i < len && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i == len {
            break;
        }
        let name_start = i;
        while i < len && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        if i == len || b[i] == b',' {
            return None;
        }
        let name = attrs[name_start..i].trim();
        if name.is_empty() {
            return None;
        }
        i += 1;
        let span = if i < len && matches!(b[i], b'"' | b'\'') {
            let q = b[i];
            let start = i + 1;
            let close = b[start..].iter().position(|&c| c == q)? + start;
            i = close + 1;
            Span { start, end: close }
        } else {
            let start = i;
            while i < len && b[i] != b',' {
                i += 1;
            }
            let mut end = i;
            while end > start && matches!(b[end - 1], b' ' | b'\t') {
                end -= 1;
            }
            Span { start, end }
        };
        if name.eq_ignore_ascii_case("URI") && uri.is_none() {
            uri = Some(span);
        }
        while i < len && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i < len {
            if b[i] != b',' {
                return None;
            }
            i += 1;
        }
    }
    Some(uri)
}

/// Rewrites one `#EXT-X-KEY:` line (without its terminator); `None` when malformed.
fn rewrite_key_line(line: &str, s: &KeySigner<'_>) -> Option<String> {
    let prefix = KEY_TAG.len();
    let attrs = &line[prefix..];
    let Some(span) = find_uri(attrs)? else {
        return Some(line.to_string());
    };
    let value = &attrs[span.start..span.end];
    if value.trim().is_empty() {
        return None;
    }
    let Some(signed) = sign_uri(value, s) else {
        return Some(line.to_string());
    };
    let mut out = String::with_capacity(line.len() + signed.len());
    out.push_str(&line[..prefix + span.start]);
    out.push_str(&signed);
    out.push_str(&line[prefix + span.end..]);
    Some(out)
}

/// Whether a query piece is one of the parameters we write.
fn is_ours(piece: &str) -> bool {
    let name = piece.split('=').next().unwrap_or("");
    matches!(name, "uid" | "expires" | "token")
}

/// Signs one key URI: keeps its path and query as written (minus our parameters) and
/// appends `uid`, `expires`, `token`. `None` for URIs not fetched over HTTP.
pub fn sign_uri(uri: &str, s: &KeySigner<'_>) -> Option<String> {
    let (before_frag, frag) = match uri.find('#') {
        Some(i) => (&uri[..i], &uri[i..]),
        None => (uri, ""),
    };
    let (path_part, query) = match before_frag.find('?') {
        Some(i) => (&before_frag[..i], Some(&before_frag[i + 1..])),
        None => (before_frag, None),
    };
    let abs = resolve_path(path_part, s.playlist_path)?;
    let decoded = percent_decode_str(&abs).decode_utf8_lossy();
    let token = key_token(s.secret, s.uid, &decoded, s.expires);
    let mut out = String::with_capacity(uri.len() + token.len() + s.uid.len() + 40);
    out.push_str(path_part);
    out.push('?');
    for piece in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty() && !is_ours(p))
    {
        out.push_str(piece);
        out.push('&');
    }
    out.push_str("uid=");
    out.push_str(&encode_query_value(s.uid));
    out.push_str("&expires=");
    out.push_str(&encode_query_value(s.expires));
    out.push_str("&token=");
    out.push_str(&token);
    out.push_str(frag);
    Some(out)
}

/// The scheme of a URI reference, if it has one (`http:`, `data:` …).
fn scheme(uri: &str) -> Option<&str> {
    let colon = uri.find(':')?;
    let s = &uri[..colon];
    let mut chars = s.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(s)
}

/// The path part after an authority (`//host:port/path` → `/path`, or `/`).
fn after_authority(rest: &str) -> &str {
    let rest = &rest[2..];
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// Resolves the path of a URI reference (no query or fragment) against the playlist
/// path as a player does (RFC 3986 §5.2); `None` for schemes other than http(s).
pub fn resolve_path(path_part: &str, base: &str) -> Option<String> {
    let merged = if let Some(sch) = scheme(path_part) {
        if !(sch.eq_ignore_ascii_case("http") || sch.eq_ignore_ascii_case("https")) {
            return None;
        }
        let rest = &path_part[sch.len() + 1..];
        if !rest.starts_with("//") {
            return None;
        }
        after_authority(rest).to_string()
    } else if path_part.starts_with("//") {
        after_authority(path_part).to_string()
    } else if path_part.starts_with('/') {
        path_part.to_string()
    } else if path_part.is_empty() {
        base.to_string()
    } else {
        let folder = base.rfind('/').map_or("/", |i| &base[..=i]);
        let folder = if folder.starts_with('/') { folder } else { "/" };
        format!("{folder}{path_part}")
    };
    Some(remove_dot_segments(&merged))
}

/// RFC 3986 §5.2.4 on an absolute path.
pub fn remove_dot_segments(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    let n = segs.len();
    for (i, seg) in segs.iter().enumerate().skip(1) {
        let last = i + 1 == n;
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::keyprotect::check_key_request;
    use crate::access::query::parse_query;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"k3y-secret";

    fn signer(path: &str) -> KeySigner<'_> {
        KeySigner {
            secret: SECRET,
            uid: "user 1",
            expires: "2000000000",
            playlist_path: path,
        }
    }

    fn tok(path: &str) -> String {
        key_token(SECRET, "user 1", path, "2000000000")
    }

    #[test]
    fn every_uri_form() {
        let s = signer("/media/demo/index.m3u8");
        let q = |p: &str| format!("uid=user%201&expires=2000000000&token={}", tok(p));
        let cases = [
            (
                r#"#EXT-X-KEY:METHOD=AES-128,URI="enc.key",IV=0x01"#,
                format!(
                    r#"#EXT-X-KEY:METHOD=AES-128,URI="enc.key?{}",IV=0x01"#,
                    q("media/demo/enc.key")
                ),
            ),
            (
                "#EXT-X-KEY:METHOD=AES-128,URI='keys/enc.key?v=2'",
                format!(
                    "#EXT-X-KEY:METHOD=AES-128,URI='keys/enc.key?v=2&{}'",
                    q("media/demo/keys/enc.key")
                ),
            ),
            (
                "#EXT-X-KEY:METHOD=AES-128,URI=../k/enc.key,IV=0x02",
                format!(
                    "#EXT-X-KEY:METHOD=AES-128,URI=../k/enc.key?{},IV=0x02",
                    q("media/k/enc.key")
                ),
            ),
            (
                r#"#EXT-X-KEY:METHOD=AES-128,URI="/abs/enc.key""#,
                format!(
                    r#"#EXT-X-KEY:METHOD=AES-128,URI="/abs/enc.key?{}""#,
                    q("abs/enc.key")
                ),
            ),
            (
                r#"#EXT-X-KEY:METHOD=AES-128,URI="https://cdn.example:8443/x/enc.key?a=1&token=old#f""#,
                format!(
                    r#"#EXT-X-KEY:METHOD=AES-128,URI="https://cdn.example:8443/x/enc.key?a=1&{}#f""#,
                    q("x/enc.key")
                ),
            ),
            (
                r#"#EXT-X-KEY:METHOD=AES-128, URI="//other.example/y/a%20b.key""#,
                format!(
                    r#"#EXT-X-KEY:METHOD=AES-128, URI="//other.example/y/a%20b.key?{}""#,
                    q("y/a b.key")
                ),
            ),
        ];
        for (input, want) in cases {
            let got = rewrite_playlist(input.as_bytes(), &s).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), want, "{input}");
        }
        // Left alone: no URI, other schemes, other tags.
        for same in [
            "#EXT-X-KEY:METHOD=NONE",
            r#"#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://key-id""#,
            r#"#EXT-X-KEY:METHOD=AES-128,URI="data:text/plain;base64,AAAA""#,
            r#"#EXT-X-SESSION-KEY:METHOD=AES-128,URI="enc.key""#,
            r#"#EXT-X-MAP:URI="init.mp4""#,
            "#EXT-x-key:METHOD=AES-128,URI=\"enc.key\"",
        ] {
            let got = rewrite_playlist(same.as_bytes(), &s).unwrap();
            assert_eq!(got, same.as_bytes());
        }
        // Refused: malformed key lines.
        for bad in [
            r#"#EXT-X-KEY:METHOD=AES-128,URI="enc.key"#,
            "#EXT-X-KEY:METHOD=AES-128,URI=",
            r#"#EXT-X-KEY:METHOD=AES-128,URI="""#,
            "#EXT-X-KEY:METHOD,URI=enc.key",
            r#"#EXT-X-KEY:URI="a"x,METHOD=AES-128"#,
        ] {
            assert_eq!(
                rewrite_playlist(format!("#EXTM3U\n{bad}\n").as_bytes(), &s),
                Err(RewriteError::Malformed { line: 2 }),
                "{bad}"
            );
        }
        assert_eq!(
            rewrite_playlist(b"#EXTM3U\r\n#EXT-X-KEY:URI=\"\xff\"\r\n", &s),
            Err(RewriteError::NotUtf8 { line: 2 })
        );
    }

    #[test]
    fn sample_playlist() {
        let input = include_bytes!("../../../../sample-media/media/demo/index.m3u8");
        let s = signer("/media/demo/index.m3u8");
        let out = rewrite_playlist(input, &s).unwrap();
        let (a, b) = (
            String::from_utf8_lossy(input),
            String::from_utf8_lossy(&out),
        );
        let changed: Vec<(&str, &str)> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).collect();
        assert_eq!(changed.len(), 1, "{b}");
        assert!(changed[0].1.contains(&tok("media/demo/enc.key")));
        assert_eq!(rewrite_playlist(&out, &s).unwrap(), out);
    }

    #[test]
    fn dot_segments() {
        assert_eq!(remove_dot_segments("/a/b/../c"), "/a/c");
        assert_eq!(remove_dot_segments("/a/b/.."), "/a/");
        assert_eq!(remove_dot_segments("/a/./b/."), "/a/b/");
        assert_eq!(remove_dot_segments("/../../x"), "/x");
        assert_eq!(remove_dot_segments("/"), "/");
        assert_eq!(
            resolve_path("k.key", "/index.m3u8").as_deref(),
            Some("/k.key")
        );
        assert_eq!(resolve_path("HTTP://h", "/a/i.m3u8").as_deref(), Some("/"));
        assert_eq!(resolve_path("ftp://h/k", "/a/i.m3u8"), None);
        assert_eq!(resolve_path("enc:key", "/a/i.m3u8"), None);
    }

    /// A URI the way a player requests it: resolved with an independent RFC 3986
    /// implementation (the `url` crate), path percent-decoded, query parsed.
    fn player_request(base: &str, uri: &str) -> (String, String) {
        let base = reqwest::Url::parse(&format!("http://viewer.example{base}")).unwrap();
        let u = base.join(uri).unwrap();
        let path = percent_decode_str(u.path())
            .decode_utf8()
            .unwrap()
            .into_owned();
        (path, u.query().unwrap_or("").to_string())
    }

    fn key_uri(line: &str) -> String {
        let attrs = &line[KEY_TAG.len()..];
        let span = find_uri(attrs).unwrap().unwrap();
        attrs[span.start..span.end].to_string()
    }

    fn seg() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-zA-Z0-9_-]{1,8}",
            1 => Just("..".to_string()),
            1 => Just(".".to_string()),
            1 => "[a-z]{1,4}%20[a-z]{1,3}",
        ]
    }

    fn uri() -> impl Strategy<Value = String> {
        let path = (
            proptest::collection::vec(seg(), 0..4),
            "[a-z0-9]{1,6}\\.key",
        );
        let form = 0u8..5;
        let query = proptest::option::of(prop_oneof![
            "[a-z]{1,4}=[a-z0-9]{0,4}",
            Just("uid=old&token=stale&v=1".to_string()),
            Just("expires=1".to_string()),
        ]);
        (path, form, query).prop_map(|((dirs, file), form, query)| {
            let mut p = dirs.join("/");
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(&file);
            let base = match form {
                0 => p,
                1 => format!("/{p}"),
                2 => format!("http://cdn.example/{p}"),
                3 => format!("https://cdn.example:444/{p}"),
                _ => format!("//cdn.example/{p}"),
            };
            match query {
                Some(q) => format!("{base}?{q}"),
                None => base,
            }
        })
    }

    fn key_line() -> impl Strategy<Value = String> {
        (uri(), 0u8..3, any::<bool>()).prop_map(|(u, quote, iv_first)| {
            let v = match quote {
                0 => format!("\"{u}\""),
                1 => format!("'{u}'"),
                _ => u,
            };
            if iv_first {
                format!("#EXT-X-KEY:METHOD=AES-128,IV=0x0A,URI={v},KEYFORMAT=\"identity\"")
            } else {
                format!("#EXT-X-KEY:METHOD=AES-128,URI={v}")
            }
        })
    }

    fn other_line() -> impl Strategy<Value = String> {
        prop_oneof![
            "[^\r\n]{0,40}".prop_filter("not a key line", |l| !l.starts_with("#EXT-X-KEY:")),
            Just("#EXTINF:1.0,".to_string()),
            Just("#EXT-X-KEY".to_string()),
            "seg[0-9]{1,3}\\.ts",
        ]
    }

    fn playlist() -> impl Strategy<Value = (Vec<(bool, String)>, Vec<&'static str>)> {
        let line = prop_oneof![
            3 => other_line().prop_map(|l| (false, l)),
            1 => key_line().prop_map(|l| (true, l)),
        ];
        (
            proptest::collection::vec(line, 0..12),
            proptest::collection::vec(prop_oneof![Just("\n"), Just("\r\n")], 12),
        )
    }

    fn base_path() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec("[a-z0-9]{1,6}", 0..4),
            "[a-z]{1,6}\\.m3u8",
        )
            .prop_map(|(d, f)| {
                format!(
                    "/{}",
                    d.into_iter().chain([f]).collect::<Vec<_>>().join("/")
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any bytes an origin may send as a playlist, key lines included: no panic,
        /// and the output never shrinks (only key URIs grow).
        #[test]
        fn rewriter_never_panics_on_bytes(
            pieces in proptest::collection::vec(prop_oneof![
                Just(b"#EXT-X-KEY:".to_vec()),
                Just(b"URI=".to_vec()),
                Just(b"\"".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"?#&=".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..12),
            ], 0..24),
            base in "/[a-z0-9%/.]{0,20}",
        ) {
            let input: Vec<u8> = pieces.concat();
            let s = KeySigner { secret: b"k", uid: "u", expires: "1", playlist_path: &base };
            if let Ok(out) = rewrite_playlist(&input, &s) {
                prop_assert!(out.len() >= input.len());
            }
        }

        #[test]
        fn rewriting_keeps_other_lines_and_signs_every_key_uri(
            (lines, ends) in playlist(), base in base_path(), final_newline in any::<bool>(),
        ) {
            let mut input = String::new();
            for (i, (_, l)) in lines.iter().enumerate() {
                input.push_str(l);
                if i + 1 < lines.len() || final_newline {
                    input.push_str(ends[i]);
                }
            }
            let s = signer(&base);
            let out = rewrite_playlist(input.as_bytes(), &s).unwrap();
            let out = String::from_utf8(out).unwrap();
            let in_lines: Vec<&str> = input.split_inclusive('\n').collect();
            let out_lines: Vec<&str> = out.split_inclusive('\n').collect();
            prop_assert_eq!(in_lines.len(), out_lines.len());
            for ((is_key, _), (a, b)) in lines.iter().zip(in_lines.iter().zip(&out_lines)) {
                if !is_key {
                    // Non-key lines are byte-identical, terminators included.
                    prop_assert_eq!(a, b);
                    continue;
                }
                prop_assert_eq!(a.ends_with("\r\n"), b.ends_with("\r\n"));
                let line = b.trim_end_matches(['\r', '\n']);
                let uri = key_uri(line);
                // Everything but the URI value is unchanged.
                let a_line = a.trim_end_matches(['\r', '\n']);
                let old = key_uri(a_line);
                prop_assert_eq!(a_line.replacen(&old, &uri, 1), line.to_string());
                // The player's request for it passes the key-file check.
                let (path, query) = player_request(&base, &uri);
                let q = parse_query(&query);
                prop_assert_eq!(q.uid.as_deref(), Some("user 1"));
                prop_assert!(check_key_request(
                    SECRET, &path, q.uid.as_deref(), q.expires.as_deref(), q.token.as_deref(), 2_000_000_000,
                ).is_ok(), "{} -> {} {}", uri, path, query);
                // Exactly one of each parameter of ours.
                for name in ["uid=", "expires=", "token="] {
                    prop_assert_eq!(query.split('&').filter(|p| p.starts_with(name)).count(), 1);
                }
            }
            // Idempotent: an already signed playlist is rewritten to itself.
            let again = rewrite_playlist(out.as_bytes(), &s).unwrap();
            prop_assert_eq!(again, out.as_bytes());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_are_idempotent_or_refused(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            key_prefix in any::<bool>(),
        ) {
            let mut input = if key_prefix { b"#EXT-X-KEY:".to_vec() } else { Vec::new() };
            input.extend_from_slice(&body);
            let s = signer("/a/b/i.m3u8");
            match rewrite_playlist(&input, &s) {
                Ok(out) => prop_assert_eq!(rewrite_playlist(&out, &s), Ok(out.clone())),
                Err(e) => prop_assert_eq!(rewrite_playlist(&input, &s), Err(e)),
            }
        }
    }
}
