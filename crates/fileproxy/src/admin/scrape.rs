//! `GET /metrics`: SPEC §5's figures as Prometheus text format 0.0.4, or as OpenMetrics
//! text when the scraper's `Accept` asks for it (SPEC §14).

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::app::App;
use crate::metrics::exposition::{self, Format};
use crate::response::{self, Body};

/// Answers `/metrics` in the format the request's `Accept` header negotiates.
pub fn handle<B>(app: &App, req: &Request<B>) -> Response<Body> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = exposition::negotiate(accept);
    let om = app.metrics.render(&super::stats::live(app));
    let text = match format {
        Format::OpenMetrics => om,
        Format::Text004 => exposition::openmetrics_to_text004(&om),
    };
    let mut r = Response::new(response::full(text));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}
