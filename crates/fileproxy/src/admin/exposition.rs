//! `GET /metrics`: the Prometheus (OpenMetrics) text exposition of SPEC §5's figures.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::app::App;
use crate::metrics::CONTENT_TYPE;
use crate::response::{self, Body};

/// Answers `/metrics`.
pub fn handle(app: &App) -> Response<Body> {
    let text = app.metrics.render(&super::stats::live(app));
    let mut r = Response::new(response::full(text));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}
