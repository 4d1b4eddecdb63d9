//! FileProxy: an authenticated edge proxy for HLS video.
//!
//! A request flows top to bottom through small modules, one job each:
//! `server` (listeners, TLS, limits) → `pipeline` (routing, client identity,
//! classification) → `access` (whitelist → session → playlist token and count, plain
//! logic over a [`store::Store`]) → `origin` (HTTP pool or files) → `stream` (bounded,
//! backpressured body) → accounting (counters, traffic, access log). The SPEC §9
//! protections are policy rules in `access` plus the HTTP-side `protect` (playlist
//! rewriting, operator-view events, live transfers), the `api` routes and
//! `admin::views`.

pub mod access;
pub mod access_log;
pub mod admin;
pub mod api;
pub mod app;
pub mod cache;
pub mod clock;
pub mod config;
pub mod content_check;
pub mod ctx;
pub mod exchange;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod origin_url;
pub mod overload;
pub mod pipeline;
pub mod protect;
pub mod quickstart;
pub mod reload;
pub mod request;
pub mod rescue;
pub mod response;
pub mod sealed_bytes;
pub mod serve;
pub mod server;
pub mod store;
pub mod store_url;
pub mod stream;
pub mod systemd;
pub mod telemetry;
pub mod traffic;
pub mod ua;
pub mod viewer_controls;
