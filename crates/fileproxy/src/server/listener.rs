//! Accept loop: binds a listener, tunes each socket, optionally terminates TLS and hands
//! the connection to hyper (HTTP/1.1 with keep-alive, HTTP/2 by prior knowledge or ALPN).
//!
//! Limits live here: concurrent connections (a semaphore; further clients wait in the
//! kernel backlog), connections per client address, request-head size and header count
//! (hyper answers 431); the deadline of every connection phase is [`conn`]'s job.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{App, ConnInfo, Surface};
use crate::config::{ServerConfig, SocketConfig};
use crate::pipeline;
use crate::reload::LiveApp;
use crate::response::Body;
use crate::server::conn::{
    self, ConnIo, ConnState, Deadlines, GuardedBody, PerIp, Phase, Proto, TrackedExec,
};
use crate::server::sendfile_io::SendfileStream;
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

/// The HTTP/1.1 and HTTP/2 connection builders of `[server]`.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TrackedExec>,
}

/// Builds the hyper connection builders from `[server]`. hyper's own header-read timer is
/// off: [`conn`] applies `header_read_timeout_s` from accept and from each head's first
/// byte, and `keepalive_timeout_s` to idle connections.
fn http_builders(cfg: &ServerConfig, exec: TrackedExec) -> Builders {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None)
        .max_headers(cfg.max_headers)
        .max_buf_size(cfg.max_header_bytes.max(8192));
    let mut h2 = http2::Builder::new(exec);
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
    Builders { h1, h2 }
}

/// Serves `listener` until `shutdown` fires, then lets open connections finish
/// for up to `grace`; connections still open then are cut (their transfers accounted)
/// before this returns. Listener settings come from the `App`
/// in force when it starts; each request gets the one in force when it arrives (SIGHUP).
pub async fn serve(
    listener: BoundListener,
    live: Arc<LiveApp>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let app = live.current();
    let cfg = &app.config.server;
    let tracker = TaskTracker::new();
    let cut = CancellationToken::new();
    let exec = TrackedExec {
        tracker: tracker.clone(),
        cut: cut.clone(),
    };
    let builders = Arc::new(http_builders(cfg, exec));
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let per_ip = PerIp::new(cfg.max_connections_per_ip);
    let deadlines = Deadlines::from_config(cfg);
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
        let accepted = Instant::now();
        let Some(ip_slot) = per_ip.try_enter(peer.ip()) else {
            // Past `max_connections_per_ip`: closed at once; other addresses unaffected.
            app.metrics.overload.connections_refused_per_ip.inc();
            tracing::debug!(%peer, "connection refused: too many from this address");
            drop(stream);
            continue;
        };
        match sockopt::tune_accepted(&stream, &app.config.sockets) {
            sockopt::Congestion::Configured => app.metrics.congestion_configured.inc(),
            sockopt::Congestion::SystemDefault => app.metrics.congestion_system_default.inc(),
        };
        let conn = ConnInfo {
            peer,
            surface,
            tls: listener.tls.is_some(),
        };
        let task = Connection {
            app: app.clone(),
            live: live.clone(),
            builders: builders.clone(),
            deadlines,
            shutdown: shutdown.clone(),
            cut: cut.clone(),
            accepted,
        };
        let tls = listener.tls.clone();
        tracker.spawn(async move {
            task.app.gauges.connections.fetch_add(1, Ordering::Relaxed);
            let app = task.app.clone();
            task.run(stream, tls, conn).await;
            app.gauges.connections.fetch_sub(1, Ordering::Relaxed);
            drop(ip_slot);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(?local, ?surface, "stopped accepting; draining connections");
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(?local, "grace period over; cutting remaining transfers");
        cut.cancel();
        // Cut connections drop their bodies at once (accounting runs in the drop).
        if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(?local, "some connections did not end after the cut");
        }
    }
}

/// One accepted connection and what it needs to run.
struct Connection {
    /// The `App` in force when the connection was accepted (its metrics).
    app: Arc<App>,
    /// The `App` in force now: each request takes it when it starts (SIGHUP reload).
    live: Arc<LiveApp>,
    builders: Arc<Builders>,
    deadlines: Deadlines,
    shutdown: CancellationToken,
    cut: CancellationToken,
    accepted: Instant,
}

impl Connection {
    /// TLS handshake and protocol detection under the first deadline, then HTTP.
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>, conn: ConnInfo) {
        let peer = conn.peer;
        let socket = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let deadline = tokio::time::Instant::from_std(self.accepted + self.deadlines.header);
        let shutdown = self.shutdown.clone();
        match tls {
            None => {
                let sent = self.app.metrics.cache.sendfile_bytes.clone();
                let mut io = SendfileStream::new(stream, sent);
                let detected = tokio::select! {
                    r = tokio::time::timeout_at(deadline, conn::detect(&mut io)) => r,
                    _ = shutdown.cancelled() => return,
                };
                self.serve_detected(io, detected, conn, socket).await;
            }
            Some(acceptor) => {
                let handshake = async {
                    let mut io = acceptor.accept(stream).await?;
                    let d = conn::detect(&mut io).await?;
                    Ok::<_, std::io::Error>((io, d))
                };
                let r = tokio::select! {
                    r = tokio::time::timeout_at(deadline, handshake) => r,
                    _ = shutdown.cancelled() => return,
                };
                match r {
                    Ok(Ok((io, d))) => self.serve_detected(io, Ok(Ok(d)), conn, socket).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        self.app
                            .metrics
                            .overload
                            .timed_out(Phase::Handshake.as_str());
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn serve_detected<I>(
        self,
        io: I,
        detected: Result<std::io::Result<Option<(Proto, Bytes)>>, tokio::time::error::Elapsed>,
        conn: ConnInfo,
        socket: std::os::fd::RawFd,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = conn.peer;
        let (proto, prefix) = match detected {
            Ok(Ok(Some(d))) => d,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection failed before a request");
                return;
            }
            Err(_) => {
                self.app
                    .metrics
                    .overload
                    .timed_out(Phase::Handshake.as_str());
                tracing::debug!(%peer, "no protocol within header_read_timeout_s; closed");
                return;
            }
        };
        let state = ConnState::new(self.accepted, Some(socket));
        let io = TokioIo::new(ConnIo::new(io, prefix, state.clone()));
        let svc = service(self.live.clone(), Arc::new(conn), state.clone());
        match proto {
            Proto::Http1 => {
                let c = self.builders.h1.serve_connection(io, svc);
                self.drive(c, proto, &state, peer).await
            }
            Proto::Http2 => {
                let c = self.builders.h2.serve_connection(io, svc);
                self.drive(c, proto, &state, peer).await
            }
        }
    }

    /// Runs one HTTP connection until it ends, a deadline closes it, or the shutdown
    /// grace is over.
    async fn drive<C>(self, conn: C, proto: Proto, state: &ConnState, peer: SocketAddr)
    where
        C: GracefulConnection,
    {
        let mut conn = std::pin::pin!(conn);
        let mut closing = false;
        let mut shutdown_seen = false;
        let mut cap: Option<tokio::time::Instant> = None;
        loop {
            let cap_sleep = async {
                match cap {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        // Resets, slow-header cut-offs and viewers leaving are normal.
                        tracing::debug!(%peer, error = %e, "connection ended with error");
                    }
                    return;
                }
                phase = state.watchdog(proto, self.deadlines), if !closing => {
                    self.app.metrics.overload.timed_out(phase.as_str());
                    tracing::debug!(%peer, phase = phase.as_str(), "connection deadline passed");
                    if phase.is_hard(proto) {
                        return;
                    }
                    conn.as_mut().graceful_shutdown_now();
                    closing = true;
                    // A peer that never acknowledges the GOAWAY is dropped after a while.
                    cap = Some(tokio::time::Instant::now() + self.deadlines.header);
                }
                _ = self.shutdown.cancelled(), if !shutdown_seen => {
                    shutdown_seen = true;
                    if !closing {
                        conn.as_mut().graceful_shutdown_now();
                        closing = true;
                    }
                }
                _ = cap_sleep => return,
                _ = self.cut.cancelled() => {
                    self.app.metrics.overload.shutdown_cut_connections.inc();
                    tracing::info!(%peer, "shutdown grace over: connection cut");
                    return;
                }
            }
        }
    }
}

/// A hyper connection that can be asked to shut down gracefully.
trait GracefulConnection: Future<Output = Result<(), hyper::Error>> {
    /// Starts a graceful shutdown (HTTP/1.1: after the current response; HTTP/2: GOAWAY).
    fn graceful_shutdown_now(self: Pin<&mut Self>);
}

impl<I, S> GracefulConnection for http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    fn graceful_shutdown_now(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> GracefulConnection for http2::Connection<I, S, TrackedExec>
where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S::Future: Send + 'static,
    TrackedExec: hyper::rt::bounds::Http2ServerConnExec<S::Future, Body>,
{
    fn graceful_shutdown_now(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The per-connection service: counts each request as open until its body ends, and
/// turns a panicking handler into a 500.
fn service(
    live: Arc<LiveApp>,
    conn: Arc<ConnInfo>,
    state: Arc<ConnState>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = http::Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<Body>, std::convert::Infallible>> + Send,
> + Clone {
    service_fn(move |req| {
        // The configuration in force when this request starts (SIGHUP swaps it).
        let app: Arc<App> = live.current();
        let conn = conn.clone();
        let guard = state.request_started();
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
            Ok::<_, std::convert::Infallible>(resp.map(|b| GuardedBody::wrap(b, guard)))
        }
    })
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
