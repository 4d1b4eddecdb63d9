//! `fileproxy serve`: builds the shared [`App`](crate::app::App), binds the listeners and runs until
//! SIGTERM/SIGINT, then drains in-flight transfers for `server.shutdown_grace_s`; `SIGHUP`
//! reloads the configuration file ([`crate::reload`]).

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::build_app;
use crate::config::Config;
use crate::reload::LiveApp;
use crate::server::{self, BoundListener, Surface};

/// Runs the server until `shutdown` is cancelled (or a signal arrives when `signals`);
/// with `signals`, `SIGHUP` reloads `config_path` (the file `config` came from).
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: CancellationToken,
    signals: bool,
) -> anyhow::Result<()> {
    let tls_files = config.server.tls().map_err(anyhow::Error::msg)?;
    let tls = match &tls_files {
        Some(files) => Some(server::tls::acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let main = BoundListener::bind(config.server.listen, Surface::Main, &config.sockets, tls)?;
    let admin = match config.server.admin_listen {
        Some(addr) => Some(BoundListener::bind(
            addr,
            Surface::Admin,
            &config.sockets,
            None,
        )?),
        None => None,
    };
    let grace = Duration::from_secs(config.server.shutdown_grace_s);
    let app = build_app(config).await?;
    crate::admin::stats::spawn_sampler(&app);
    // Viewer controls (SPEC §13): revocation feed poller, quota batch flusher.
    crate::viewer_controls::spawn(&app);
    tracing::info!(
        listen = %main.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin.as_ref().and_then(|a| a.local_addr().ok()).map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        tls = tls_files.is_some(),
        origin = %app.origin.describe_url("/"),
        store = app.store.kind(),
        version = env!("CARGO_PKG_VERSION"),
        "FileProxy listening"
    );
    let live = LiveApp::new(app.clone(), config_path);
    if signals {
        crate::reload::spawn_on_sighup(live.clone());
        let token = shutdown.clone();
        tokio::spawn(async move {
            server::shutdown_signal().await;
            tracing::info!("shutdown signal received");
            crate::systemd::stopping();
            token.cancel();
        });
    }
    crate::systemd::ready();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server::serve(main, live.clone(), shutdown.clone(), grace));
    if let Some(admin) = admin {
        tasks.spawn(server::serve(admin, live.clone(), shutdown.clone(), grace));
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
    // Bytes not yet added to the uid quota counters (SPEC §13) are sent once more.
    crate::viewer_controls::flush_quota_now(&app).await;
    // Unreported traffic goes to the spool; queued access-log lines to their sink.
    app.traffic.shutdown().await;
    let log_app = app.clone();
    let _ = tokio::task::spawn_blocking(move || log_app.access_log.close()).await;
    tracing::info!("FileProxy stopped");
    Ok(())
}
