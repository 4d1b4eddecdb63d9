//! `GET /health`: liveness and readiness — store reachability and round-trip latency,
//! origin pool state, version. `503` when the store is down. Never any secret, and
//! never an error text of the store or the origin (a fixed word; details go to the log).

use std::time::Duration;

use http::{Response, StatusCode};

use crate::app::App;
use crate::response::{self, Body};

/// Answers `/health`.
pub async fn handle(app: &App) -> Response<Body> {
    let timeout = Duration::from_millis(app.config.store.op_timeout_ms);
    let store = match tokio::time::timeout(timeout, app.store.ping()).await {
        Ok(Ok(latency)) => serde_json::json!({
            "kind": app.store.kind(),
            "reachable": true,
            "latency_ms": latency.as_secs_f64() * 1000.0,
        }),
        // SPEC §10: no store or library text (addresses, messages) in the answer.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: store ping failed");
            serde_json::json!({
                "kind": app.store.kind(), "reachable": false, "error": "unavailable",
            })
        }
        Err(_) => {
            tracing::warn!(?timeout, "health: store ping timed out");
            serde_json::json!({
                "kind": app.store.kind(), "reachable": false, "error": "timeout",
            })
        }
    };
    let ok = store["reachable"].as_bool().unwrap_or(false);
    let body = serde_json::json!({
        // SPEC §11: "degraded" (503) while the store is unreachable.
        "status": if ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": app.started.elapsed().as_secs(),
        "store": store,
        "origin": app.origin.pool_state(),
        "server": server_figures(app),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = response::json(status, &body);
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// Live gauges and cumulative counts of the viewer surface.
fn server_figures(app: &App) -> serde_json::Value {
    let live = crate::admin::stats::live(app);
    let t = app.metrics.totals(&live);
    serde_json::json!({
        "connections": live.connections,
        "requests": t.requests,
        "active_transfers": live.transfers,
        "bytes_delivered": t.bytes,
        "client_closed": t.client_closed,
    })
}
