//! The one canonical path of a viewer request (SPEC §10 "One path"): produced once
//! from the request URI, then used by the policy (classify, key path, token message)
//! *and* sent to the origin, so the class the policy applied is the class of the
//! file the origin is asked for.
//!
//! [`CanonicalPath::parse`] percent-decodes the path and refuses, before any store or
//! origin work, everything two parties could read differently:
//!
//! * an empty segment (`//` anywhere, a trailing `/` — `/` itself aside), a `;` path
//!   parameter (also written `%3B`), an encoded `/` (`%2F`, any case, also
//!   double-encoded `%252F`) → [`PathError::Ambiguous`], `400 Bad Request: ambiguous path`;
//! * `.` / `..` segments, NUL, backslash, invalid UTF-8, no leading `/` (the refusals
//!   FileProxy always had).
//!
//! [`CanonicalPath::origin_path`] writes the decoded path percent-encoded again with
//! [`encode_path`], so both origin kinds see one spelling of one file.

use std::fmt;

use percent_encoding::percent_decode_str;

use super::token::encode_path;

/// Why a request path was refused (`400`, text [`PathError::text`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty segment, `;` parameter or encoded `/`.
    #[error("ambiguous path")]
    Ambiguous,
    /// The path does not start with `/`.
    #[error("path must start with /")]
    NotAbsolute,
    /// Not UTF-8 once percent-decoded.
    #[error("path is not valid UTF-8")]
    NotUtf8,
    /// NUL or backslash.
    #[error("invalid character in path")]
    BadCharacter,
    /// A `.` or `..` segment.
    #[error("dot segments are not allowed")]
    DotSegment,
}

impl PathError {
    /// The `400` body: `Bad Request: <reason>` (`Bad Request: ambiguous path`, …).
    pub fn text(self) -> String {
        format!("Bad Request: {self}")
    }
}

/// A percent-decoded request path that every stage agrees on (leading `/`, no empty,
/// `.` or `..` segment, no `;`, no NUL or backslash).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CanonicalPath {
    decoded: String,
}

/// Whether `s` contains `needle` (ASCII) ignoring case.
fn contains_ignore_case(s: &str, needle: &str) -> bool {
    s.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

impl CanonicalPath {
    /// Parses the path of a request URI (as sent: percent-encoded, no query).
    pub fn parse(raw: &str) -> Result<CanonicalPath, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        // An encoded `/` would be one segment to us and two to many origins.
        if contains_ignore_case(raw, "%2f") {
            return Err(PathError::Ambiguous);
        }
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathError::NotUtf8)?;
        if decoded.contains('\0') || decoded.contains('\\') {
            return Err(PathError::BadCharacter);
        }
        // `;` starts a path parameter for Tomcat, Jetty, Spring (`/x.m3u8;.ts`), and a
        // double-encoded `/` becomes a separator for an origin that decodes once more.
        if decoded.contains(';') || contains_ignore_case(&decoded, "%2f") {
            return Err(PathError::Ambiguous);
        }
        if decoded != "/" {
            let mut dots = false;
            for seg in decoded[1..].split('/') {
                match seg {
                    "" => return Err(PathError::Ambiguous),
                    "." | ".." => dots = true,
                    _ => {}
                }
            }
            if dots {
                return Err(PathError::DotSegment);
            }
        }
        Ok(CanonicalPath {
            decoded: decoded.into_owned(),
        })
    }

    /// The decoded path with its leading `/` (what the policy classifies).
    pub fn as_str(&self) -> &str {
        &self.decoded
    }

    /// The decoded path without its leading `/` (the token message's `path`).
    pub fn bare(&self) -> &str {
        &self.decoded[1..]
    }

    /// The path to ask the origin for: the decoded path percent-encoded again.
    pub fn origin_path(&self) -> String {
        encode_path(&self.decoded)
    }

    /// The path's segments after the leading `/` (none for `/`).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.bare().split('/').filter(|s| !s.is_empty())
    }
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.decoded)
    }
}

impl AsRef<str> for CanonicalPath {
    fn as_ref(&self) -> &str {
        &self.decoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<String, PathError> {
        CanonicalPath::parse(s).map(|c| c.as_str().to_string())
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for bad in [
            "/vod/2024-05-01/abc/720p/index.m3u8/",
            "/vod/abc/enc.key//",
            "//vod/abc/enc.key",
            "/vod//abc/enc.key",
            "/vod/abc/index.m3u8;.ts",
            "/vod/abc;x=1/index.m3u8",
            "/vod/abc/index.m3u8%3B.ts",
            "/vod/abc%2Findex.m3u8",
            "/vod/abc%2findex.m3u8",
            "/vod/abc%252Findex.m3u8",
            "/a/",
        ] {
            assert_eq!(p(bad), Err(PathError::Ambiguous), "{bad}");
        }
        assert_eq!(
            PathError::Ambiguous.text(),
            "Bad Request: ambiguous path",
            "SPEC §10's exact text"
        );
    }

    #[test]
    fn older_refusals_are_kept() {
        assert_eq!(p("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(p(""), Err(PathError::NotAbsolute));
        assert_eq!(p("/%ff"), Err(PathError::NotUtf8));
        assert_eq!(p("/a%00b"), Err(PathError::BadCharacter));
        assert_eq!(p("/a%5cb"), Err(PathError::BadCharacter));
        for dots in ["/a/../b", "/a/./b", "/%2e%2e/x", "/a/.", "/.."] {
            assert_eq!(p(dots), Err(PathError::DotSegment), "{dots}");
        }
        assert_eq!(
            PathError::DotSegment.text(),
            "Bad Request: dot segments are not allowed"
        );
    }

    #[test]
    fn decoding_and_origin_spelling() {
        let c = CanonicalPath::parse("/vod/a%20b/%69ndex.M3U8").unwrap();
        assert_eq!(c.as_str(), "/vod/a b/index.M3U8");
        assert_eq!(c.bare(), "vod/a b/index.M3U8");
        assert_eq!(c.origin_path(), "/vod/a%20b/index.M3U8");
        assert_eq!(
            c.segments().collect::<Vec<_>>(),
            ["vod", "a b", "index.M3U8"]
        );
        let root = CanonicalPath::parse("/").unwrap();
        assert_eq!((root.as_str(), root.bare()), ("/", ""));
        assert_eq!(root.segments().count(), 0);
        // A literal `%` in a name survives the round trip as itself.
        let c = CanonicalPath::parse("/a/100%25.ts").unwrap();
        assert_eq!(c.as_str(), "/a/100%.ts");
        assert_eq!(c.origin_path(), "/a/100%25.ts");
        let u = CanonicalPath::parse("/视频/abc/index.m3u8").unwrap();
        assert_eq!(CanonicalPath::parse(&u.origin_path()).unwrap(), u);
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2F".to_string()),
            Just("%252f".to_string()),
            Just(";".to_string()),
            Just("%3b".to_string()),
            Just("%00".to_string()),
            Just("%ff".to_string()),
            Just("%".to_string()),
            Just("index.m3u8".to_string()),
            Just("enc.key".to_string()),
            Just("2024-05-01".to_string()),
            "[a-zA-Z0-9 ._~%-]{1,8}",
            "\\PC{1,4}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any input: no panic, and an accepted path is canonical — re-parsing the
        /// origin spelling gives the same value, with no empty or dot segment.
        #[test]
        fn accepted_paths_are_fixed_points(
            segs in proptest::collection::vec(segment(), 0..6),
            trailing in any::<bool>(),
            junk in "\\PC{0,30}",
        ) {
            let mut raw = format!("/{}", segs.join("/"));
            if trailing {
                raw.push('/');
            }
            for input in [raw.as_str(), junk.as_str()] {
                if let Ok(c) = CanonicalPath::parse(input) {
                    let again = CanonicalPath::parse(&c.origin_path());
                    prop_assert_eq!(again.as_ref(), Ok(&c));
                    prop_assert!(!c.as_str().contains("//"));
                    prop_assert!(!c.as_str().contains(';'));
                    prop_assert!(c.as_str() == "/" || !c.as_str().ends_with('/'));
                    prop_assert!(c.segments().all(|s| s != "." && s != ".."));
                }
            }
        }
    }
}
