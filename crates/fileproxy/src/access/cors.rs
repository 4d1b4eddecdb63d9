//! CORS decisions for `cors.allow_origins` (exact origins, or `*` for any): which
//! `Access-Control-Allow-Origin` to send and the pre-flight header set. Header names
//! and values are plain strings so this stays free of HTTP types.

use crate::config::CorsConfig;

/// Methods a viewer may use cross-origin.
pub const ALLOW_METHODS: &str = "GET, HEAD, OPTIONS";
/// Request headers allowed when the pre-flight does not ask for specific ones.
pub const ALLOW_HEADERS: &str =
    "Range, If-Range, If-Modified-Since, If-None-Match, Authorization, Content-Type";
/// Response headers a page's script may read.
pub const EXPOSE_HEADERS: &str = "Content-Length, Content-Range, Accept-Ranges, Content-Type";
/// How long a browser may cache a pre-flight answer, in seconds.
pub const MAX_AGE_S: &str = "86400";

/// The `Access-Control-Allow-Origin` value for a request's `Origin` header, or `None`
/// when the origin is not allowed (or absent). `*` in the config answers `*`;
/// otherwise the matching configured origin (compared case-insensitively, ignoring a
/// trailing `/` in the config) is echoed.
pub fn allow_origin<'a>(cfg: &'a CorsConfig, origin: Option<&str>) -> Option<&'a str> {
    let origin = origin?.trim();
    if origin.is_empty() {
        return None;
    }
    let mut wildcard = None;
    for o in &cfg.allow_origins {
        if o == "*" {
            wildcard = Some(o.as_str());
        } else if o.trim_end_matches('/').eq_ignore_ascii_case(origin) {
            return Some(o.trim_end_matches('/'));
        }
    }
    wildcard
}

/// The CORS headers of an ordinary (non-pre-flight) response; empty when the origin
/// is not allowed. Specific origins also get `Access-Control-Allow-Credentials` (the
/// session cookie) and `Vary: Origin`.
pub fn response_headers(cfg: &CorsConfig, origin: Option<&str>) -> Vec<(&'static str, String)> {
    let Some(allowed) = allow_origin(cfg, origin) else {
        return Vec::new();
    };
    let mut h = vec![
        ("Access-Control-Allow-Origin", allowed.to_string()),
        ("Access-Control-Expose-Headers", EXPOSE_HEADERS.to_string()),
    ];
    if allowed != "*" {
        h.push(("Access-Control-Allow-Credentials", "true".to_string()));
        h.push(("Vary", "Origin".to_string()));
    }
    h
}

/// The headers of a `204` pre-flight answer, or `None` when the origin is not allowed
/// (answer `403` without CORS headers). `request_headers` is the pre-flight's
/// `Access-Control-Request-Headers`; it is echoed when it is a plain list of header
/// names, else [`ALLOW_HEADERS`] is sent.
pub fn preflight_headers(
    cfg: &CorsConfig,
    origin: Option<&str>,
    request_headers: Option<&str>,
) -> Option<Vec<(&'static str, String)>> {
    let mut h = response_headers(cfg, origin);
    if h.is_empty() {
        return None;
    }
    let allow_headers = match request_headers.map(str::trim) {
        Some(r) if !r.is_empty() && is_header_name_list(r) => r.to_string(),
        _ => ALLOW_HEADERS.to_string(),
    };
    h.push(("Access-Control-Allow-Methods", ALLOW_METHODS.to_string()));
    h.push(("Access-Control-Allow-Headers", allow_headers));
    h.push(("Access-Control-Max-Age", MAX_AGE_S.to_string()));
    Some(h)
}

fn is_header_name_list(s: &str) -> bool {
    s.len() <= 1024
        && s.split(',').all(|n| {
            let n = n.trim();
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(o: &[&str]) -> CorsConfig {
        CorsConfig {
            allow_origins: o.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn exact_and_wildcard() {
        let c = cfg(&["https://a.example", "https://b.example/"]);
        assert_eq!(
            allow_origin(&c, Some("https://a.example")),
            Some("https://a.example")
        );
        assert_eq!(
            allow_origin(&c, Some("https://B.example")),
            Some("https://b.example")
        );
        assert_eq!(allow_origin(&c, Some("https://evil.example")), None);
        assert_eq!(allow_origin(&c, Some("https://a.example.evil")), None);
        assert_eq!(allow_origin(&c, None), None);
        assert_eq!(allow_origin(&cfg(&[]), Some("https://a.example")), None);
        let w = cfg(&["*", "https://a.example"]);
        assert_eq!(allow_origin(&w, Some("https://x.example")), Some("*"));
        assert_eq!(
            allow_origin(&w, Some("https://a.example")),
            Some("https://a.example")
        );
        assert_eq!(allow_origin(&w, Some("")), None);
    }

    #[test]
    fn header_sets() {
        let c = cfg(&["https://a.example"]);
        let h = response_headers(&c, Some("https://a.example"));
        assert!(h.contains(&("Access-Control-Allow-Credentials", "true".into())));
        assert!(h.contains(&("Vary", "Origin".into())));
        assert!(response_headers(&c, Some("https://z.example")).is_empty());
        let star = response_headers(&cfg(&["*"]), Some("https://z.example"));
        assert!(star.contains(&("Access-Control-Allow-Origin", "*".into())));
        assert!(!star
            .iter()
            .any(|(k, _)| *k == "Access-Control-Allow-Credentials"));

        let p = preflight_headers(&c, Some("https://a.example"), Some("range, x-custom")).unwrap();
        assert!(p.contains(&("Access-Control-Allow-Headers", "range, x-custom".into())));
        assert!(p.contains(&("Access-Control-Allow-Methods", ALLOW_METHODS.into())));
        let p = preflight_headers(&c, Some("https://a.example"), Some("bad header\r\n")).unwrap();
        assert!(p.contains(&("Access-Control-Allow-Headers", ALLOW_HEADERS.into())));
        assert!(preflight_headers(&c, Some("https://z.example"), None).is_none());
    }
}
