//! The shared application state: [`App`] (built once by [`build_app`]) and the facts
//! of the connection a request arrived on ([`ConnInfo`], [`Surface`]). A leaf of the
//! request path: it imports only the parts it holds, and the routes depend on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio_util::task::TaskTracker;

use crate::access::client_ip::TrustedProxies;
use crate::access::Policy;
use crate::access_log::AccessLog;
use crate::config::Config;
use crate::metrics::timed_store::TimedStore;
use crate::metrics::window::Window;
use crate::metrics::Metrics;
use crate::origin::Origin;
use crate::overload::{GatedOrigin, Overload};
use crate::store::SharedStore;
use crate::telemetry::Gauges;
use crate::traffic::Traffic;

/// Everything a request needs, built at start-up and shared by all connections.
///
/// A `SIGHUP` reload (the `reload` module) builds a new `App` from the new configuration
/// that shares this one's long-lived parts (store, origin, counters, metrics, traffic,
/// access log, …: the `Arc` fields) and swaps it in; each request holds the `App` that
/// was current when it started.
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// Shared state.
    pub store: SharedStore,
    /// Where files come from, behind the in-flight gate (SPEC §11).
    pub origin: Arc<GatedOrigin>,
    /// The bound on deferred store writes (SPEC §11).
    pub overload: Arc<Overload>,
    /// The access policy (SPEC §2 steps 2–6, §3, §4).
    pub policy: Policy,
    /// Peers whose forwarding headers are believed.
    pub trusted: TrustedProxies,
    /// Live gauges (connections, transfers).
    pub gauges: Arc<Gauges>,
    /// Deferred store writes still running (awaited on shutdown).
    pub background: TaskTracker,
    /// SPEC §9 state: playlist rewriting, operator-view events, live transfers.
    pub protect: crate::protect::Protect,
    /// When the process started.
    pub started: Instant,
    /// Metrics of SPEC §5 (`/metrics`, `/stats`).
    pub metrics: Arc<Metrics>,
    /// The last minute of figures (`/stats`, `/monitor`).
    pub window: Arc<Window>,
    /// Per-uid traffic accounting and reporting.
    pub traffic: Arc<Traffic>,
    /// The access log.
    pub access_log: Arc<AccessLog>,
    /// The segment cache (SPEC §12); passes requests through while `cache.max_bytes = 0`.
    pub cache: Arc<crate::cache::SegmentCache>,
}

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Which listener accepted it.
    pub surface: Surface,
    /// Whether TLS was terminated.
    pub tls: bool,
}

/// Which surface a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Viewers (admin routes need the bearer admin token).
    Main,
    /// Operators (`server.admin_listen`; admin routes need no token).
    Admin,
}

/// Builds the application state (store connection, origin client) from a validated config.
pub async fn build_app(config: Config) -> anyhow::Result<Arc<App>> {
    let metrics = Arc::new(Metrics::new());
    let store = crate::store::open(&config.store)
        .await
        .with_context(|| format!("store.url = {}", config.store.url))?;
    let store = TimedStore::wrap(store, Arc::clone(&metrics));
    let origin = Arc::new(GatedOrigin::new(
        Origin::from_config(&config.origin).context("origin")?,
        config.origin.max_in_flight,
        std::time::Duration::from_millis(config.origin.queue_timeout_ms),
        metrics.overload.clone(),
    ));
    let overload = Overload::new(config.store.max_background_writes, metrics.overload.clone());
    let policy = Policy::new(&config.auth, store.clone())
        .with_protect(&config.protect)
        .with_outage_grace(
            config.store.outage_grace_s,
            metrics.overload.outage_grace_allowed.clone(),
        )
        .with_limits(&config.limits);
    let trusted = TrustedProxies::new(&config.server.trusted_proxies);
    let protect = crate::protect::Protect::new(&config, store.clone());
    let traffic = Traffic::start(
        &config.traffic,
        config.server.listen.port(),
        store.clone(),
        Arc::clone(&metrics),
    )
    .await
    .context("traffic")?;
    let access_log = AccessLog::start(&config.log, metrics.access_log_dropped.clone())?;
    let cache = crate::cache::SegmentCache::new(&config.cache, metrics.cache.clone());
    let app = Arc::new(App {
        config,
        store,
        origin,
        overload: Arc::new(overload),
        policy,
        trusted,
        gauges: Arc::default(),
        background: TaskTracker::new(),
        protect,
        started: Instant::now(),
        metrics,
        window: Arc::default(),
        traffic,
        access_log: Arc::new(access_log),
        cache,
    });
    Ok(app)
}
