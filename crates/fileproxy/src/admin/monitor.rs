//! `GET /monitor`: a self-contained live dashboard (HTML, CSS and JS embedded in the
//! binary; charts drawn on `<canvas>` with plain code; no external resources). It polls
//! `/stats` every second and draws the last minute: requests/s, latency P50/P95/P99
//! (time to last and to first byte), errors/s, bytes/s, active connections and
//! transfers, sessions created/reused per second.
//!
//! Open it on the admin listener (no token), or on the main listener with the
//! `Authorization: Bearer` header; a `?token=` in the URL is refused like a missing
//! token (SPEC §10), so it never lands in logs or browser history.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::response::{self, Body};

/// The page.
const PAGE: &str = include_str!("monitor.html");

/// Content-Security-Policy of the page: nothing but itself and `/stats`.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// Answers `/monitor`.
pub fn handle() -> Response<Body> {
    let mut r = Response::new(response::full(PAGE));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_is_self_contained() {
        let page = super::PAGE;
        assert!(page.contains("<canvas") || page.contains("createElement(\"canvas\")"));
        for external in [
            "http://",
            "https://",
            "<script src",
            "stylesheet",
            "@import",
        ] {
            assert!(!page.contains(external), "page must not load {external}");
        }
    }
}
