//! Suffix classes of SPEC §2 step 2 and the skip-validation check, case-insensitive.

/// What kind of file a request path names (SPEC §2 step 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileClass {
    /// `.m3u8`: a playlist, subject to the token and access-count checks.
    Playlist,
    /// `.ts`: a media segment.
    Segment,
    /// Ends with `enc.key`: an encryption key (safe-key redirect applies).
    Key,
    /// Images, style sheets, scripts and fonts.
    Static,
    /// Anything else.
    Default,
}

impl FileClass {
    /// Short lowercase name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FileClass::Playlist => "playlist",
            FileClass::Segment => "segment",
            FileClass::Key => "key",
            FileClass::Static => "static",
            FileClass::Default => "default",
        }
    }
}

/// Suffixes of the static class (SPEC §2 step 2).
const STATIC_SUFFIXES: &[&str] = &[
    ".jpg", ".jpeg", ".png", ".gif", ".css", ".js", ".woff", ".woff2", ".ttf",
];

/// Whether `s` ends with `suffix`, ignoring ASCII case (never panics on UTF-8 input).
pub fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    let (s, suffix) = (s.as_bytes(), suffix.as_bytes());
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// The class of a request path by its suffix, case-insensitive.
pub fn classify(path: &str) -> FileClass {
    if ends_with_ignore_case(path, ".m3u8") {
        FileClass::Playlist
    } else if ends_with_ignore_case(path, ".ts") {
        FileClass::Segment
    } else if ends_with_ignore_case(path, "enc.key") {
        FileClass::Key
    } else if STATIC_SUFFIXES
        .iter()
        .any(|s| ends_with_ignore_case(path, s))
    {
        FileClass::Static
    } else {
        FileClass::Default
    }
}

/// Whether `path` names a key file in the sense of SPEC §9 (`.key`, `enc.key`).
pub fn is_key_file(path: &str) -> bool {
    ends_with_ignore_case(path, ".key")
}

/// A set of suffixes matched case-insensitively (skip-validation, static admission).
#[derive(Debug, Clone, Default)]
pub struct SuffixSet {
    suffixes: Vec<String>,
}

impl SuffixSet {
    /// Builds the set from configured suffixes (empty entries are ignored).
    pub fn new<S: AsRef<str>>(suffixes: &[S]) -> Self {
        Self {
            suffixes: suffixes
                .iter()
                .map(|s| s.as_ref().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    /// Whether `path` ends with one of the suffixes, ignoring ASCII case.
    pub fn matches(&self, path: &str) -> bool {
        self.suffixes.iter().any(|s| ends_with_ignore_case(path, s))
    }
}

/// Whether `path` skips every viewer check (SPEC §2 step 2: straight to the origin).
pub fn skips_validation(path: &str, skip: &SuffixSet) -> bool {
    skip.matches(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_skip_validation_suffixes;
    use proptest::prelude::*;

    #[test]
    fn classes() {
        let cases = [
            ("/a/b/index.m3u8", FileClass::Playlist),
            ("/a/b/INDEX.M3U8", FileClass::Playlist),
            ("/a/b/seg1.ts", FileClass::Segment),
            ("/a/b/SEG1.Ts", FileClass::Segment),
            ("/a/b/enc.key", FileClass::Key),
            ("/a/b/ENC.KEY", FileClass::Key),
            ("/a/b/myenc.key", FileClass::Key),
            ("/a/b/other.key", FileClass::Default),
            ("/a/b/p.JPG", FileClass::Static),
            ("/a/b/p.jpeg", FileClass::Static),
            ("/a/b/s.css", FileClass::Static),
            ("/a/b/s.js", FileClass::Static),
            ("/a/b/f.woff2", FileClass::Static),
            ("/a/b/f.ttf", FileClass::Static),
            ("/a/b/f.mp4", FileClass::Default),
            ("/a/b/m3u8", FileClass::Default),
            ("/a/b/ts", FileClass::Default),
            ("", FileClass::Default),
            ("/ü.ts", FileClass::Segment),
            ("/ü", FileClass::Default),
        ];
        for (p, c) in cases {
            assert_eq!(classify(p), c, "{p}");
        }
        assert!(is_key_file("/a/x.KEY"));
        assert!(!is_key_file("/a/x.keys"));
    }

    #[test]
    fn skip_validation_defaults() {
        let skip = SuffixSet::new(&default_skip_validation_suffixes());
        for p in [
            "/a.webp", "/x/y.PHP", "/x/y.Js", "/f.woff2", "/i.SVG", "/t.txt",
        ] {
            assert!(skips_validation(p, &skip), "{p}");
        }
        for p in ["/a/b.ts", "/a/b.m3u8", "/a/enc.key", "/a/b.mp4", "/a/webp"] {
            assert!(!skips_validation(p, &skip), "{p}");
        }
        let custom = SuffixSet::new(&[".TS", ""]);
        assert!(custom.matches("/a/b.ts"));
        assert!(!custom.matches("/a/b.m3u8"));
    }

    proptest! {
        #[test]
        fn case_never_matters(p in "[a-zA-Z0-9/._-]{0,40}", suffix in "(m3u8|ts|enc\\.key|jpg|css|mp4)") {
            let path = format!("{p}.{suffix}");
            prop_assert_eq!(classify(&path), classify(&path.to_ascii_uppercase()));
            prop_assert_eq!(classify(&path), classify(&path.to_ascii_lowercase()));
        }

        #[test]
        fn never_panics(p in "\\PC{0,40}") {
            let _ = classify(&p);
            let _ = SuffixSet::new(&[".ü", ".ts"]).matches(&p);
        }
    }
}
