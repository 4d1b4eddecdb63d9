//! An HTTP(S) origin server behind a keep-alive connection pool (SPEC §2 steps 7–8).
//!
//! * **Pool.** One `hyper_util` legacy [`Client`] over an [`HttpConnector`] (connect
//!   timeout, `TCP_NODELAY`, TCP keepalive) wrapped by a counting layer and by
//!   `hyper_rustls` for `https://` (webpki roots, or any certificate when
//!   `origin.tls_verify = false`). HTTP/1.1 to the origin; h2 when an `https` origin
//!   offers it through ALPN.
//! * **Timeouts.** Connect: `origin.connect_timeout_ms`. First byte (response head):
//!   `origin.playlist_timeout_ms` for playlists, `origin.timeout_ms` otherwise. Between
//!   two body chunks: `origin.timeout_ms`, so a stalled origin cannot hold a transfer.
//! * **Cancellation.** The body owns the pooled connection; dropping it mid-stream (the
//!   viewer went away) makes hyper close that connection at once — no drain, no task
//!   left behind. A body read to its end returns the connection to the pool.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{
    FetchClass, InFlightGuard, OriginBody, OriginError, OriginRequest, PoolCounters, PoolState,
};
use crate::config::OriginConfig;
use crate::origin_url::OriginTarget;

/// TCP keepalive probe interval on origin connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// The connector stack: TCP (counted) under optional TLS.
type Connector = HttpsConnector<CountingConnector>;

/// An HTTP(S) origin with its connection pool.
#[derive(Debug)]
pub struct HttpOrigin {
    /// The pooled client (boxed: it is large, and [`super::Origin`] holds us by value).
    client: Box<Client<Connector, Empty<Bytes>>>,
    /// `http` or `https`.
    scheme: Scheme,
    /// `host[:port]` of the origin (no credentials).
    authority: Authority,
    /// Path prefix of `origin.url` without trailing `/` (often empty).
    base_path: String,
    /// `Host` sent instead of the origin's own, when configured.
    host_header: Option<HeaderValue>,
    /// Connect timeout.
    connect_timeout: Duration,
    /// First-byte timeout of playlists.
    playlist_timeout: Duration,
    /// First-byte timeout of everything else, and idle timeout between body chunks.
    timeout: Duration,
    /// `http` or `https` (for [`PoolState::kind`]).
    kind: &'static str,
    /// Pool figures.
    counters: Arc<PoolCounters>,
}

impl HttpOrigin {
    /// Builds the pool for `cfg.url` (`http://host:port[/base]` or `https://…`, parsed
    /// with its scheme, host and absence of credentials checked when read).
    pub fn new(cfg: &OriginConfig) -> anyhow::Result<Self> {
        let OriginTarget::Http(uri) = cfg.url.target() else {
            anyhow::bail!("origin.url {:?}: expected http or https", cfg.url.as_str());
        };
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            anyhow::bail!("origin.url {:?}: no host", cfg.url.as_str());
        };
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let host_header = if cfg.host_header.is_empty() {
            None
        } else {
            Some(HeaderValue::from_str(&cfg.host_header).map_err(|_| {
                anyhow::anyhow!(
                    "origin.host_header {:?}: not a valid header value",
                    cfg.host_header
                )
            })?)
        };
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let https = scheme == Scheme::HTTPS;
        let counters = Arc::new(PoolCounters::default());

        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        tcp.set_connect_timeout(Some(connect_timeout));
        let counting = CountingConnector {
            inner: tcp,
            counters: Arc::clone(&counters),
        };
        if https && !cfg.tls_verify {
            tracing::warn!(
                "origin.tls_verify = false: the origin's TLS certificate is NOT verified"
            );
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(cfg.tls_verify)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(counting);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(cfg.pool_idle_timeout_s))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // Bounds what is read ahead from the origin per transfer: hyper grows its
            // read buffer up to this size while the viewer is slower than the origin.
            .http1_max_buf_size(cfg.buffer_bytes.max(8192))
            // An https origin speaking h2: size the receive windows by the measured
            // bandwidth-delay product, so a far origin is not capped at 64 KiB per RTT.
            // Unread data stays bounded: capacity is released only as the viewer consumes.
            .http2_adaptive_window(true)
            .build(connector);

        Ok(HttpOrigin {
            client: Box::new(client),
            scheme,
            authority,
            base_path,
            host_header,
            connect_timeout,
            playlist_timeout: Duration::from_millis(cfg.playlist_timeout_ms),
            timeout: Duration::from_millis(cfg.timeout_ms),
            kind: if https { "https" } else { "http" },
            counters,
        })
    }

    /// Pool figures: fetches in flight, connections opened, connect timeouts.
    pub fn pool_state(&self) -> PoolState {
        self.counters.snapshot(self.kind)
    }

    /// The origin URL `path` is fetched from (never holds credentials).
    pub fn url_for(&self, path: &str) -> String {
        let sep = if path.starts_with('/') { "" } else { "/" };
        format!(
            "{}://{}{}{sep}{path}",
            self.scheme, self.authority, self.base_path
        )
    }

    /// `GET`/`HEAD <origin><path>` with the viewer's forwarded headers; the body
    /// streams with an idle timeout and holds the connection until read or dropped.
    pub async fn fetch(&self, req: OriginRequest) -> Result<Response<OriginBody>, OriginError> {
        let guard = InFlightGuard::start(&self.counters);
        let uri: Uri = self
            .url_for(&req.path)
            .parse()
            .map_err(|e| OriginError::BadPath(format!("{e}")))?;
        let mut request = Request::builder()
            .method(req.method.clone())
            .uri(uri)
            .body(Empty::<Bytes>::new())
            .map_err(|e| OriginError::BadPath(format!("{e}")))?;
        let headers = request.headers_mut();
        for (name, value) in &req.headers {
            if forwardable(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(host) = &self.host_header {
            headers.insert(header::HOST, host.clone());
        }
        if let Ok(xff) = HeaderValue::from_str(&req.client_ip.to_string()) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), xff);
        }

        let first_byte = match req.class {
            FetchClass::Playlist => self.playlist_timeout,
            FetchClass::Other => self.timeout,
        };
        let response = match tokio::time::timeout(first_byte, self.client.request(request)).await {
            Err(_elapsed) => return Err(OriginError::Timeout(first_byte)),
            Ok(Err(e)) => return Err(self.classify(&e)),
            Ok(Ok(r)) => r,
        };
        let (parts, body) = response.into_parts();
        let body = IdleTimeoutBody {
            inner: body,
            sleep: Box::pin(tokio::time::sleep(self.timeout)),
            idle: self.timeout,
            guard: Some(guard),
            done: false,
        };
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }

    /// A redirect `Location` that points at this origin — its scheme and authority, or
    /// the configured `host_header` — as a path on FileProxy (nginx `proxy_redirect
    /// default`): the origin's base path is taken off, the rest kept. `None` for a
    /// relative or foreign `Location`, which is passed through.
    pub fn local_location(&self, location: &str) -> Option<String> {
        let uri: Uri = location.trim().parse().ok()?;
        let (scheme, authority) = (uri.scheme()?, uri.authority()?);
        let ours = (scheme == &self.scheme
            && authority
                .as_str()
                .eq_ignore_ascii_case(self.authority.as_str()))
            || self
                .host_header
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .is_some_and(|h| authority.as_str().eq_ignore_ascii_case(h));
        if !ours {
            return None;
        }
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let rest = match pq.strip_prefix(self.base_path.as_str()) {
            Some(r)
                if !self.base_path.is_empty() && (r.is_empty() || r.starts_with(['/', '?'])) =>
            {
                r
            }
            _ => pq,
        };
        Some(if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        })
    }

    /// Connect timeout → [`OriginError::Timeout`]; anything else → `Unreachable`.
    fn classify(&self, e: &hyper_util::client::legacy::Error) -> OriginError {
        if e.is_connect() && has_timed_out(e) {
            OriginError::Timeout(self.connect_timeout)
        } else {
            OriginError::Unreachable(error_chain(e))
        }
    }
}

/// Headers the pipeline may hand over that must not travel to the origin: hop-by-hop
/// ones, and those the origin client sets itself.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "x-forwarded-for"
    )
}

/// Does any error in the chain say "timed out"?
fn has_timed_out(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// `outer: cause: root cause` in one line.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}

/// Rustls client settings: webpki roots, or (`verify = false`) any certificate.
fn tls_config(verify: bool) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let config = if verify {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    };
    Ok(config)
}

/// Accepts any server certificate (`origin.tls_verify = false`); handshake signatures
/// are still checked against the presented certificate's key.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TCP connector that counts connections opened and connect timeouts.
#[derive(Debug, Clone)]
struct CountingConnector {
    /// The real connector.
    inner: HttpConnector,
    /// Where the counts go.
    counters: Arc<PoolCounters>,
}

/// Future of one [`CountingConnector`] connect.
type ConnectFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl tower_service::Service<Uri> for CountingConnector {
    type Response = CountedConn;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = ConnectFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let counters = Arc::clone(&self.counters);
        Box::pin(async move {
            match connecting.await {
                Ok(stream) => {
                    counters.connection_opened();
                    Ok(CountedConn {
                        inner: stream,
                        counters,
                    })
                }
                Err(e) => {
                    if has_timed_out(&e) {
                        counters.connect_timed_out();
                    }
                    Err(e)
                }
            }
        })
    }
}

/// An origin TCP connection that counts itself closed when the pool drops it (for
/// the open/idle figures of [`PoolState`]).
#[derive(Debug)]
struct CountedConn {
    /// The TCP stream.
    inner: TokioIo<tokio::net::TcpStream>,
    /// Where the close is counted.
    counters: Arc<PoolCounters>,
}

impl Drop for CountedConn {
    fn drop(&mut self) {
        self.counters.connection_closed();
    }
}

impl Connection for CountedConn {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

impl hyper::rt::Read for CountedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for CountedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

/// The origin's body: hyper errors as `io::Error`, an idle timeout between frames,
/// and the in-flight count released when it ends or is dropped.
struct IdleTimeoutBody {
    /// The response body (owns the pooled connection).
    inner: Incoming,
    /// Fires when no frame arrived for `idle`.
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Longest wait for the next frame.
    idle: Duration,
    /// In-flight count, released at the end.
    guard: Option<InFlightGuard>,
    /// Ended (EOF, error or timeout): poll no further.
    done: bool,
}

impl IdleTimeoutBody {
    /// Marks the body as over and releases the in-flight count.
    fn finish(&mut self) {
        self.done = true;
        self.guard = None;
    }
}

impl Body for IdleTimeoutBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.sleep.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish();
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.finish();
                    Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("origin sent nothing for {:?}", this.idle),
                    ))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> OriginConfig {
        OriginConfig {
            url: url.parse().unwrap(),
            ..OriginConfig::default()
        }
    }

    #[tokio::test]
    async fn url_for_keeps_base_path() {
        let o = HttpOrigin::new(&cfg("http://127.0.0.1:9/base/")).unwrap();
        assert_eq!(o.url_for("/a/b.ts"), "http://127.0.0.1:9/base/a/b.ts");
        let o = HttpOrigin::new(&cfg("https://origin.example")).unwrap();
        assert_eq!(o.url_for("/a%20b.ts"), "https://origin.example/a%20b.ts");
        assert_eq!(o.pool_state().kind, "https");
    }

    #[tokio::test]
    async fn redirects_to_the_origin_become_local_paths() {
        let o = HttpOrigin::new(&cfg("http://10.0.0.5:8080/base/")).unwrap();
        let l = |s: &str| o.local_location(s);
        assert_eq!(
            l("http://10.0.0.5:8080/base/a/b.ts?x=1").as_deref(),
            Some("/a/b.ts?x=1")
        );
        assert_eq!(l("HTTP://10.0.0.5:8080/other").as_deref(), Some("/other"));
        assert_eq!(l("http://10.0.0.5:8080").as_deref(), Some("/"));
        assert_eq!(
            l("http://10.0.0.5:8080/basement").as_deref(),
            Some("/basement")
        );
        assert_eq!(
            l("https://10.0.0.5:8080/base/a"),
            None,
            "another scheme is another site"
        );
        assert_eq!(l("http://cdn.example/a"), None);
        assert_eq!(l("/relative/path"), None);
        assert_eq!(l("not a uri at all"), None);
        let mut c = cfg("http://10.0.0.5:8080");
        c.host_header = "media.internal".into();
        let o = HttpOrigin::new(&c).unwrap();
        assert_eq!(
            o.local_location("https://MEDIA.internal/a/b.m3u8")
                .as_deref(),
            Some("/a/b.m3u8")
        );
    }

    #[tokio::test]
    async fn rejects_bad_config() {
        // Not an HTTP origin, or with credentials: refused when `origin.url` is read.
        for bad in ["ftp://x", "http://user:pw@x"] {
            assert!(
                bad.parse::<crate::origin_url::OriginUrl>().is_err(),
                "{bad}"
            );
        }
        assert!(HttpOrigin::new(&cfg("file:///srv")).is_err());
        let mut c = cfg("http://x");
        c.host_header = "bad\nvalue".into();
        assert!(HttpOrigin::new(&c).is_err());
    }
}
