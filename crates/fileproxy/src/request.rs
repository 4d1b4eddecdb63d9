//! Request helpers every route shares: header text, query parameters and a small
//! bounded body (the client address is
//! `access::client_ip::client_ip_from_headers`, resolved once into the request context).

use std::time::Duration;

use bytes::Bytes;
use http::header::{AsHeaderName, HeaderMap};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access::query;
use crate::app::App;

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

/// Why a small request body could not be read (answered by the rescue module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// More than [`MAX_API_BODY`] bytes (413).
    #[error("request body larger than {MAX_API_BODY} bytes")]
    TooLarge,
    /// The connection failed while the body was read (400).
    #[error("request body could not be read")]
    Unreadable,
    /// Not all of it arrived within the header-read timeout (408).
    #[error("request body not received in time")]
    Timeout,
}

impl BodyError {
    /// The HTTP status of this error.
    pub fn status(self) -> StatusCode {
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Unreadable => StatusCode::BAD_REQUEST,
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// Reads a request body of at most [`MAX_API_BODY`] bytes within the header-read
/// timeout.
pub async fn read_small_body(app: &App, req: Request<Incoming>) -> Result<Bytes, BodyError> {
    let limit = Duration::from_secs(app.config.server.header_read_timeout_s);
    let body = http_body_util::Limited::new(req.into_body(), MAX_API_BODY);
    match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Unreadable),
        Err(_) => Err(BodyError::Timeout),
    }
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
}
