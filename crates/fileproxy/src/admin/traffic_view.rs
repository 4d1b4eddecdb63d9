//! `GET /traffic?limit=N`: per-uid traffic — bytes pending in memory, waiting in
//! spooled batches, and reported — with the delivery state (no API key).

use http::{Request, Response, StatusCode};

use crate::app::App;
use crate::response::{self, Body};

use super::AdminError;

/// Default and largest `limit`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// Answers `/traffic`.
pub fn handle<B>(app: &App, req: &Request<B>) -> Result<Response<Body>, AdminError> {
    let limit = match crate::request::param(req, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n.min(MAX_LIMIT),
            Err(_) => {
                return Err(AdminError::BadRequest(
                    "limit: expected a non-negative integer".into(),
                ))
            }
        },
    };
    Ok(response::json(
        StatusCode::OK,
        &app.traffic.view_json(limit),
    ))
}
