//! `fileproxy serve`: builds the shared [`App`], binds the listeners and runs until
//! SIGTERM/SIGINT, then drains in-flight transfers for `server.shutdown_grace_s`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::client_ip::TrustedProxies;
use crate::access::Policy;
use crate::access_log::AccessLog;
use crate::config::{redact_url, Config};
use crate::metrics::window::Window;
use crate::metrics::Metrics;
use crate::origin::Origin;
use crate::pipeline::App;
use crate::server::{self, BoundListener, Surface};
use crate::store::timed::TimedStore;
use crate::telemetry::Counters;
use crate::traffic::Traffic;

/// Builds the application state (store connection, origin client) from a validated config.
pub async fn build_app(config: Config) -> anyhow::Result<Arc<App>> {
    let metrics = Arc::new(Metrics::new());
    let store = crate::store::open(&config.store)
        .await
        .with_context(|| format!("store.url = {}", redact_url(&config.store.url)))?;
    let store = TimedStore::wrap(store, Arc::clone(&metrics));
    let origin = Origin::from_config(&config.origin).context("origin")?;
    let policy = Policy::new(&config.auth, store.clone()).with_protect(&config.protect);
    let trusted = TrustedProxies::new(&config.server.trusted_proxies);
    let protect = crate::protect::Protect::new(&config, store.clone());
    let traffic = Traffic::start(
        &config.traffic,
        &config.server.listen,
        store.clone(),
        Arc::clone(&metrics),
    )
    .await
    .context("traffic")?;
    let access_log = AccessLog::start(&config.log, metrics.access_log_dropped.clone())?;
    let app = Arc::new(App {
        config,
        store,
        origin,
        policy,
        trusted,
        counters: Counters::default(),
        background: TaskTracker::new(),
        protect,
        started: Instant::now(),
        metrics,
        window: Window::default(),
        traffic,
        access_log,
    });
    crate::admin::stats::spawn_sampler(&app);
    Ok(app)
}

/// Runs the server until `shutdown` is cancelled (or a signal arrives when `signals`).
pub async fn run(config: Config, shutdown: CancellationToken, signals: bool) -> anyhow::Result<()> {
    let tls = if config.server.tls_cert.is_empty() {
        None
    } else {
        Some(server::tls::acceptor(
            Path::new(&config.server.tls_cert),
            Path::new(&config.server.tls_key),
        )?)
    };
    let main_addr: SocketAddr = config.server.listen.parse().context("server.listen")?;
    let main = BoundListener::bind(main_addr, Surface::Main, &config.sockets, tls)?;
    let admin = if config.server.admin_listen.is_empty() {
        None
    } else {
        let addr: SocketAddr = config
            .server
            .admin_listen
            .parse()
            .context("server.admin_listen")?;
        Some(BoundListener::bind(
            addr,
            Surface::Admin,
            &config.sockets,
            None,
        )?)
    };
    let grace = Duration::from_secs(config.server.shutdown_grace_s);
    let app = build_app(config).await?;
    tracing::info!(
        listen = %main.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin.as_ref().and_then(|a| a.local_addr().ok()).map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        tls = !app.config.server.tls_cert.is_empty(),
        origin = %app.origin.describe_url("/"),
        store = app.store.kind(),
        version = env!("CARGO_PKG_VERSION"),
        "FileProxy listening"
    );
    if signals {
        let token = shutdown.clone();
        tokio::spawn(async move {
            server::shutdown_signal().await;
            tracing::info!("shutdown signal received");
            token.cancel();
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server::serve(main, app.clone(), shutdown.clone(), grace));
    if let Some(admin) = admin {
        tasks.spawn(server::serve(admin, app.clone(), shutdown.clone(), grace));
    }
    while tasks.join_next().await.is_some() {}
    // Deferred session writes still in flight are finished, not dropped.
    app.background.close();
    if tokio::time::timeout(Duration::from_secs(5), app.background.wait())
        .await
        .is_err()
    {
        tracing::warn!("some deferred store writes did not finish within 5 s");
    }
    // Unreported traffic goes to the spool; queued access-log lines to their sink.
    app.traffic.shutdown().await;
    let log_app = app.clone();
    let _ = tokio::task::spawn_blocking(move || log_app.access_log.close()).await;
    tracing::info!("FileProxy stopped");
    Ok(())
}
