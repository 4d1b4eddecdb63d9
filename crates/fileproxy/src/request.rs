//! Request helpers every route shares: header text, query parameters, a small bounded
//! body and the "method not allowed" answer (the client address is
//! `access::client_ip::client_ip_from_headers`, resolved once into the request context).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, AsHeaderName, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access::query;
use crate::app::App;
use crate::response::{self, Body};

/// Largest JSON body accepted by the admission APIs.
pub const MAX_API_BODY: usize = 64 * 1024;

/// A header's value as text (absent or not visible ASCII → `None`).
pub fn header_str(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The first value of query parameter `name` in a raw query string, percent-decoded
/// (`+` as space); `None` when absent.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query::query_value(query, name).map(std::borrow::Cow::into_owned)
}

/// [`query_param`] over a request's own query string.
pub fn param<B>(req: &Request<B>, name: &str) -> Option<String> {
    query_param(req.uri().query()?, name)
}

/// Reads a request body of at most [`MAX_API_BODY`] bytes within the header-read
/// timeout; the error is the response to send (413, 400 or 408).
pub async fn read_small_body(app: &App, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let limit = Duration::from_secs(app.config.server.header_read_timeout_s);
    let body = http_body_util::Limited::new(req.into_body(), MAX_API_BODY);
    match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(response::json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({"error": format!("request body larger than {MAX_API_BODY} bytes")}),
        )),
        Ok(Err(_)) => Err(response::json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "request body could not be read"}),
        )),
        Err(_) => Err(response::json(
            StatusCode::REQUEST_TIMEOUT,
            &serde_json::json!({"error": "request body not received in time"}),
        )),
    }
}

/// `405 Method Not Allowed` with `Allow: allow`.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = response::text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_decode() {
        let req = Request::get("/debug/browser?ua=Mozilla%2F5.0+(X11)&x=1&empty=")
            .body(())
            .unwrap();
        assert_eq!(param(&req, "ua").as_deref(), Some("Mozilla/5.0 (X11)"));
        assert_eq!(param(&req, "x").as_deref(), Some("1"));
        assert_eq!(param(&req, "empty").as_deref(), Some(""));
        assert_eq!(param(&req, "nope"), None);
        assert_eq!(
            query_param("a=1&uid=x%20y&uid=z", "uid").as_deref(),
            Some("x y")
        );
        assert_eq!(query_param("js_path=", "js_path").as_deref(), Some(""));
        assert_eq!(query_param("sign", "sign").as_deref(), Some(""));
        assert_eq!(query_param("", "uid"), None);
    }

    #[test]
    fn method_not_allowed_names_the_methods() {
        let r = method_not_allowed("GET, HEAD");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    }
}
