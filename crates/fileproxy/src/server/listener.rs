//! Accept loop: binds a listener, tunes each socket, optionally terminates TLS and hands
//! the connection to hyper (HTTP/1.1 with keep-alive, HTTP/2 by prior knowledge or ALPN).
//!
//! Limits live here: concurrent connections (a semaphore; further clients wait in the
//! kernel backlog), request-head size and header count (hyper answers 431), a
//! header-read timeout that cuts off slowloris clients, and a TLS handshake timeout.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::app::{App, ConnInfo, Surface};
use crate::config::{ServerConfig, SocketConfig};
use crate::pipeline;
use crate::reload::LiveApp;
use crate::server::sockopt;

/// A bound listener, ready to serve.
pub struct BoundListener {
    tcp: TcpListener,
    surface: Surface,
    tls: Option<TlsAcceptor>,
}

impl BoundListener {
    /// Binds `addr` with the configured backlog.
    pub fn bind(
        addr: SocketAddr,
        surface: Surface,
        sockets: &SocketConfig,
        tls: Option<TlsAcceptor>,
    ) -> anyhow::Result<Self> {
        let tcp = sockopt::bind_listener(addr, sockets.backlog)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        Ok(Self { tcp, surface, tls })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Builds the hyper connection builder from `[server]`.
fn http_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(cfg.header_read_timeout_s))
        .max_headers(cfg.max_headers)
        .max_buf_size(cfg.max_header_bytes.max(8192));
    let mut h2 = b.http2();
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(cfg.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    if cfg.h2_stream_window == 0 && cfg.h2_connection_window == 0 {
        // BDP-adaptive windows: a fixed 64 KiB window over 200 ms caps a stream at
        // 2.6 Mbit/s, so let hyper grow the window with the measured bandwidth-delay product.
        h2.adaptive_window(true);
    } else {
        h2.initial_stream_window_size(cfg.h2_stream_window.max(65_535))
            .initial_connection_window_size(cfg.h2_connection_window.max(65_535));
    }
    b
}

/// Serves `listener` until `shutdown` fires, then lets open connections finish
/// for up to `grace` before returning. Listener settings come from the `App` in force
/// when it starts; each request gets the one in force when it arrives (SIGHUP reload).
pub async fn serve(
    listener: BoundListener,
    live: Arc<LiveApp>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let app = live.current();
    let cfg = &app.config.server;
    let builder = Arc::new(http_builder(cfg));
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let graceful = GracefulShutdown::new();
    let handshake_timeout = Duration::from_secs(cfg.header_read_timeout_s);
    let surface = listener.surface;
    let local = listener.local_addr().ok();

    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let app = live.current();
        sockopt::tune_accepted(&stream, &app.config.sockets);
        let conn = ConnInfo {
            peer,
            surface,
            tls: listener.tls.is_some(),
        };
        let live = live.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = listener.tls.clone();
        tokio::spawn(async move {
            app.counters.connections.fetch_add(1, Ordering::Relaxed);
            match tls {
                None => serve_io(stream, conn, live, &builder, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_io(tls_stream, conn, live, &builder, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            app.counters.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(?local, ?surface, "stopped accepting; draining connections");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?local, "grace period over; closing remaining connections");
    }
}

async fn serve_io<I>(
    io: I,
    conn: ConnInfo,
    live: Arc<LiveApp>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let svc = service_fn(move |req| {
        // The configuration in force when this request starts (SIGHUP swaps it).
        let app: Arc<App> = live.current();
        let conn = conn.clone();
        async move {
            // A bug must never take the connection (or the process) down with it:
            // a panicking handler becomes a 500 and an error log line.
            let fut = std::panic::AssertUnwindSafe(pipeline::handle(app, conn, req));
            let resp = match futures_util::FutureExt::catch_unwind(fut).await {
                Ok(resp) => resp,
                Err(_) => {
                    tracing::error!("request handler panicked; answered 500");
                    crate::response::text(
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal Server Error",
                    )
                }
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let fut = builder.serve_connection(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(fut).await {
        // Resets, slow-header cut-offs and viewers leaving are normal on the internet.
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
