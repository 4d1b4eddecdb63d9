//! `GET /stats`: the figures of `/metrics` as JSON, with P50/P95/P99 and rates over
//! the last minute (and the last 5 s), plus one point per second of that minute for
//! the charts of `/monitor`. Also the 1 Hz sampler feeding that window.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::json;

use crate::app::App;
use crate::metrics::window::SAMPLE_EVERY;
use crate::metrics::{percentiles_ms, Live, Route, STATUS_CLASSES};
use crate::response::{self, Body};

/// The figures owned by other parts (connections, origin pool, traffic), now.
pub fn live(app: &App) -> Live {
    let (traffic_pending_uids, traffic_pending_bytes, traffic_spooled_batches) =
        app.traffic.gauges();
    Live {
        connections: app.gauges.connections.load(Ordering::Relaxed),
        transfers: app.gauges.active_transfers.load(Ordering::Relaxed),
        pool: app.origin.pool_state(),
        traffic_pending_uids,
        traffic_pending_bytes,
        traffic_spooled_batches,
        uptime: app.started.elapsed(),
    }
}

/// Starts the task that samples the totals once a second into `app.window`; it ends
/// when the app is dropped.
pub fn spawn_sampler(app: &Arc<App>) {
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { break };
            let totals = app.metrics.totals(&live(&app));
            app.window.push(totals);
        }
    });
}

/// Answers `/stats`.
pub fn handle(app: &App) -> Response<Body> {
    let live = live(app);
    let t = app.metrics.totals(&live);
    let mut by_status = serde_json::Map::new();
    for (class, n) in STATUS_CLASSES.iter().zip(t.by_status) {
        by_status.insert((*class).into(), n.into());
    }
    let mut by_route = serde_json::Map::new();
    for (route, n) in Route::ALL.iter().zip(t.by_route) {
        by_route.insert(route.as_str().into(), n.into());
    }
    let mut body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": live.uptime.as_secs(),
        "now_unix_ms": crate::clock::unix_ms(),
        "totals": {
            "requests": t.requests,
            "by_status": by_status,
            "by_route": by_route,
            "bytes_delivered": t.bytes,
            "client_closed": t.client_closed,
            "sessions_created": t.sessions_created,
            "sessions_reused": t.sessions_reused,
            "store_errors": t.store_errors,
        },
        "gauges": {
            "active_connections": live.connections,
            "active_transfers": live.transfers,
            "origin": live.pool,
            "traffic_pending_uids": live.traffic_pending_uids,
            "traffic_pending_bytes": live.traffic_pending_bytes,
            "traffic_spooled_batches": live.traffic_spooled_batches,
        },
        "latency_ms_since_start": {
            "time_to_first_byte": percentiles_ms(&t.ttfb),
            "time_to_last_byte": percentiles_ms(&t.ttlb),
            "store": percentiles_ms(&t.store),
        },
        "breakdown": app.metrics.breakdown(),
        "cache": app.metrics.cache.stats(),
        // The Sentinel master in use (`host:port`), here rather than in the public
        // /health, which names no address.
        "store": { "kind": app.store.kind(), "master": app.store.topology() },
    });
    if let (serde_json::Value::Object(m), serde_json::Value::Object(w)) =
        (&mut body, app.window.views(&t))
    {
        m.extend(w);
    }
    response::json(StatusCode::OK, &body)
}
