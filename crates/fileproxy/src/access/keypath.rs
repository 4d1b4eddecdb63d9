//! The key path rule of SPEC §2.1: which folder of a path identifies one video.
//!
//! Split the path on `/`. If a component starts with a date `YYYY-MM-DD`, the key
//! path is the component right after the first such one (empty when the date
//! component is the last one). Otherwise it is the name of the folder that holds the
//! file (the second-to-last component). An empty key path means "no access".

/// The key path of `path` (a request path with or without its leading `/`).
///
/// `/vod/2024-05-01/abc123/720p/seg1.ts` → `abc123`; `/media/xyz/index.m3u8` → `xyz`;
/// `/index.m3u8` → `` (no access).
pub fn key_path(path: &str) -> &str {
    let mut parts = path.split('/');
    // First pass: the component after the first date-led one.
    let mut dated = path.split('/');
    while let Some(part) = dated.next() {
        if starts_with_date(part) {
            return dated.next().unwrap_or("");
        }
    }
    // No date: the folder holding the file (second-to-last component).
    let mut prev = "";
    let mut last = parts.next().unwrap_or("");
    for part in parts {
        prev = last;
        last = part;
    }
    prev
}

/// Whether `s` starts with `YYYY-MM-DD` (ASCII digits, hyphens at positions 4 and 7).
pub fn starts_with_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 10 {
        return false;
    }
    b[..10].iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        _ => c.is_ascii_digit(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_examples() {
        assert_eq!(key_path("/vod/2024-05-01/abc123/720p/seg1.ts"), "abc123");
        assert_eq!(key_path("/media/xyz/index.m3u8"), "xyz");
    }

    #[test]
    fn odd_paths() {
        let cases = [
            ("", ""),
            ("/", ""),
            ("//", ""),
            ("/index.m3u8", ""),
            ("index.m3u8", ""),
            ("xyz/index.m3u8", "xyz"),
            ("/a/b/", "b"),
            ("/a//b.ts", ""),
            ("/2024-05-01", ""),
            ("/vod/2024-05-01", ""),
            ("/vod/2024-05-01/", ""),
            ("/vod/2024-05-01/index.m3u8", "index.m3u8"),
            ("/2024-05-01T10/abc/x.ts", "abc"),
            ("/2024-05-01x/abc/x.ts", "abc"),
            ("/2024-5-01/abc/x.ts", "abc"),
            ("/20240501/abc/x.ts", "abc"),
            ("/a/2024-05-01/b/2023-01-01/c/x.ts", "b"),
            ("/a/b/c/d/e.ts", "d"),
            ("/视频/剧集/index.m3u8", "剧集"),
            ("/a/２０２４-05-01/b/x.ts", "b"),
            ("/x/y.ts?uid=1", "x"),
        ];
        for (p, want) in cases {
            assert_eq!(key_path(p), want, "path {p:?}");
        }
    }

    #[test]
    fn date_prefix() {
        assert!(starts_with_date("2024-05-01"));
        assert!(starts_with_date("2024-05-01_extra"));
        assert!(!starts_with_date("2024-05-0"));
        assert!(!starts_with_date("2024_05_01"));
        assert!(!starts_with_date("a2024-05-01"));
        assert!(!starts_with_date("２０２４-05-01"));
    }

    proptest! {
        #[test]
        fn never_panics_and_is_a_component(p in "\\PC{0,80}") {
            let k = key_path(&p);
            prop_assert!(!k.contains('/'));
            prop_assert!(k.is_empty() || p.split('/').any(|c| c == k));
        }

        #[test]
        fn folder_rule_without_dates(
            dirs in proptest::collection::vec("[a-z0-9_.]{1,12}", 1..6),
            file in "[a-z0-9]{1,8}\\.(ts|m3u8|key)",
        ) {
            let p = format!("/{}/{}", dirs.join("/"), file);
            prop_assert_eq!(key_path(&p), dirs.last().map(String::as_str).unwrap_or(""));
        }

        #[test]
        fn date_rule(
            pre in proptest::collection::vec("[a-z]{1,6}", 0..3),
            y in 1000u32..9999, m in 1u32..13, d in 1u32..29,
            tail in "[a-zA-Z_]{0,4}",
            key in "[a-z0-9]{1,12}",
            post in proptest::collection::vec("[a-z0-9]{1,6}", 0..3),
        ) {
            let mut parts: Vec<String> = pre.clone();
            parts.push(format!("{y:04}-{m:02}-{d:02}{tail}"));
            parts.push(key.clone());
            parts.extend(post);
            parts.push("f.ts".into());
            let p = format!("/{}", parts.join("/"));
            prop_assert_eq!(key_path(&p), key.as_str());
        }
    }
}
