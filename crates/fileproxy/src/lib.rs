//! FileProxy: an authenticated edge proxy for HLS video.
//!
//! A request flows top to bottom through small modules, one job each:
//! `server` (listeners, TLS, limits) → `client_ip` (trusted proxies) → `classify`
//! (suffix, key path) → `access` (whitelist → session → playlist token and count,
//! plain logic over a [`store::Store`]) → `origin` (HTTP pool or files) → `stream`
//! (bounded, backpressured body) → accounting (metrics, traffic, access log).

pub mod access;
pub mod config;
pub mod origin;
pub mod store;
