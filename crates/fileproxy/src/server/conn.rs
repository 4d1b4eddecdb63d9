//! One client connection from accept to close, with a deadline on every phase (SPEC §11):
//!
//! - TLS handshake, protocol detection and the first request head: `header_read_timeout_s`
//!   from accept. Detection is ours: the first bytes are read (at most the 24 of the
//!   HTTP/2 preface) under that deadline, then replayed to the HTTP/1.1 or HTTP/2
//!   connection, so a silent socket or half a preface is closed on time.
//! - a later HTTP/1.1 request head: `header_read_timeout_s` from its first byte;
//! - an idle HTTP/1.1 keep-alive connection: `keepalive_timeout_s`;
//! - an HTTP/2 connection with no open stream: `h2_idle_timeout_s`, then `GOAWAY`
//!   (pings do not count: the service counts open requests with a guard that lives until
//!   the response body ends).
//!
//! "Idle" means the peer has nothing left to receive: a response body ends when its last
//! byte is handed to the kernel, and a slow viewer may take minutes to drain a large
//! socket buffer after that. When an idle deadline passes while the socket's send queue
//! still holds bytes (`SIOCOUTQ`) and the peer acknowledged more since the last look
//! (`TCP_INFO`), the idle clock restarts, so a viewer that is still downloading is not
//! cut off between segments; a queue that made no progress for a whole period is
//! closed as before.
//!
//! On shutdown each connection is closed gracefully; when the grace runs out the
//! listener cancels `cut` and the connection (with HTTP/2 stream tasks) is dropped, which
//! drops the response bodies and so accounts their delivered bytes.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::client_ip::canonical_ip;
use crate::config::ServerConfig;
use crate::response::Body;

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The deadlines of `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Handshake + detection + first request head, and each later head from its first byte.
    pub header: Duration,
    /// Idle HTTP/1.1 keep-alive connection.
    pub keepalive: Duration,
    /// HTTP/2 connection with no open stream.
    pub h2_idle: Duration,
}

impl Deadlines {
    /// From `[server]`.
    pub fn from_config(cfg: &ServerConfig) -> Self {
        Deadlines {
            header: Duration::from_secs(cfg.header_read_timeout_s.max(1)),
            keepalive: Duration::from_secs(cfg.keepalive_timeout_s.max(1)),
            h2_idle: Duration::from_secs(cfg.h2_idle_timeout_s.max(1)),
        }
    }
}

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (prior knowledge or ALPN).
    Http2,
}

/// Reads the first bytes of `io` until they tell HTTP/2 (the whole preface) from
/// HTTP/1.1 (any byte off the preface). `None`: the peer closed first.
pub async fn detect<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Option<(Proto, Bytes)>> {
    let mut buf = [0u8; 24];
    let mut n = 0;
    while n < buf.len() {
        let got = io.read(&mut buf[n..]).await?;
        if got == 0 {
            return Ok(None);
        }
        n += got;
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some((Proto::Http1, Bytes::copy_from_slice(&buf[..n]))));
        }
    }
    Ok(Some((Proto::Http2, Bytes::copy_from_slice(&buf))))
}

/// What the watchdog of one connection sees.
#[derive(Debug)]
pub struct ConnState {
    base: Instant,
    /// Requests (streams) whose response body has not ended yet.
    open: AtomicUsize,
    /// Whether any request arrived yet.
    started_any: AtomicBool,
    /// Milliseconds since `base` when `open` last dropped to 0.
    idle_since_ms: AtomicU64,
    /// Milliseconds since `base` + 1 of the first byte read while idle (0 = none).
    head_started_ms: AtomicU64,
    /// The connection's TCP socket, for its send-queue length (`None` in unit tests).
    socket: Option<RawFd>,
    /// Bytes acknowledged when an idle deadline last passed (`u64::MAX` = no look yet).
    last_acked: AtomicU64,
    wake: Notify,
}

impl ConnState {
    /// A connection accepted at `base` on TCP socket `socket` (which must stay open
    /// while the watchdog runs: the connection owns it).
    pub fn new(base: Instant, socket: Option<RawFd>) -> Arc<Self> {
        Arc::new(ConnState {
            base,
            open: AtomicUsize::new(0),
            started_any: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            socket,
            last_acked: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
        })
    }

    /// Whether an idle deadline that just passed should wait one more period because the
    /// viewer is still receiving: the peer acknowledged bytes since the last look (the
    /// first look: bytes are still queued).
    fn still_draining(&self, phase: Phase) -> bool {
        if !matches!(phase, Phase::Keepalive | Phase::H2Idle) {
            return false;
        }
        let Some(q) = self.socket.and_then(send_queue) else {
            return false;
        };
        let last = self.last_acked.swap(q.acked, Ordering::AcqRel);
        // A queue that emptied during the last period was busy until moments ago: it
        // gets one more period, counted from now.
        let progressed = if last == u64::MAX {
            q.unsent > 0
        } else {
            q.acked > last
        };
        if !progressed {
            return false;
        }
        self.idle_since_ms.store(self.now_ms(), Ordering::Release);
        true
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts a request as open until the returned guard is dropped.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.started_any.store(true, Ordering::Release);
        self.head_started_ms.store(0, Ordering::Release);
        self.last_acked.store(u64::MAX, Ordering::Release);
        RequestGuard(Arc::clone(self))
    }

    fn bytes_read(&self) {
        if self.open.load(Ordering::Acquire) == 0
            && self.head_started_ms.load(Ordering::Acquire) == 0
        {
            self.head_started_ms
                .store(self.now_ms().saturating_add(1), Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// When (ms since accept) and why the connection must be closed, given what it is
    /// doing now; `None` while a request is open.
    fn deadline(&self, proto: Proto, d: &Deadlines) -> Option<(u64, Phase)> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = |t: Duration| u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        let header = ms(d.header);
        if !self.started_any.load(Ordering::Acquire) {
            return Some((header, Phase::FirstRequest));
        }
        let idle = self.idle_since_ms.load(Ordering::Acquire);
        match proto {
            Proto::Http1 => match self.head_started_ms.load(Ordering::Acquire) {
                0 => Some((idle.saturating_add(ms(d.keepalive)), Phase::Keepalive)),
                hs => Some((hs.saturating_sub(1).saturating_add(header), Phase::Header)),
            },
            Proto::Http2 => Some((idle.saturating_add(ms(d.h2_idle)), Phase::H2Idle)),
        }
    }

    /// Waits until a deadline of the connection passes; returns its phase.
    pub async fn watchdog(&self, proto: Proto, d: Deadlines) -> Phase {
        loop {
            let notified = self.wake.notified();
            match self.deadline(proto, &d) {
                None => notified.await,
                Some((at, phase)) => {
                    let now = self.now_ms();
                    if now >= at {
                        if self.still_draining(phase) {
                            continue;
                        }
                        return phase;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(at - now)) => {}
                        _ = notified => {}
                    }
                }
            }
        }
    }
}

/// The send queue of TCP socket `fd`: bytes not yet acknowledged by the peer
/// (`SIOCOUTQ`) and bytes acknowledged since the connection opened
/// (`TCP_INFO.tcpi_bytes_acked`); `None` when the kernel cannot tell.
fn send_queue(fd: RawFd) -> Option<SendQueue> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: `fd` is the connection's socket, open for as long as the watchdog that
    // calls this runs; SIOCOUTQ writes one `c_int` through the valid pointer given.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unsent as *mut libc::c_int) };
    if rc != 0 {
        return None;
    }
    // SAFETY: an all-zero `tcp_info` is a valid value of this plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: as above for `fd`; the kernel writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    Some(SendQueue {
        unsent: u64::try_from(unsent).ok()?,
        acked: info.tcpi_bytes_acked,
    })
}

/// What [`send_queue`] reads off a socket.
#[derive(Debug, Clone, Copy)]
struct SendQueue {
    /// Bytes handed to the kernel and not yet acknowledged.
    unsent: u64,
    /// Bytes the peer acknowledged so far (grows while it reads).
    acked: u64,
}

/// Which deadline closed a connection (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TLS handshake or protocol detection.
    Handshake,
    /// No first request (head) within `header_read_timeout_s` of accept.
    FirstRequest,
    /// A later HTTP/1.1 request head took longer than `header_read_timeout_s`.
    Header,
    /// Idle HTTP/1.1 keep-alive past `keepalive_timeout_s`.
    Keepalive,
    /// HTTP/2 with no open stream past `h2_idle_timeout_s`.
    H2Idle,
}

impl Phase {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::FirstRequest => "first_request",
            Phase::Header => "header",
            Phase::Keepalive => "keepalive",
            Phase::H2Idle => "h2_idle",
        }
    }

    /// Whether the connection is closed at once rather than shut down gracefully
    /// (an HTTP/1.1 head in progress would otherwise be waited for).
    pub fn is_hard(self, proto: Proto) -> bool {
        proto == Proto::Http1 && matches!(self, Phase::FirstRequest | Phase::Header)
    }
}

/// Holds one open request of a connection (moved into the response body).
#[derive(Debug)]
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let s = &self.0;
        s.idle_since_ms.store(s.now_ms(), Ordering::Release);
        if s.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            s.wake.notify_one();
        }
    }
}

/// A response body that keeps its request counted as open until it ends.
pub struct GuardedBody {
    inner: Body,
    guard: Option<RequestGuard>,
}

impl GuardedBody {
    /// Wraps `inner`.
    pub fn wrap(inner: Body, guard: RequestGuard) -> Body {
        GuardedBody {
            inner,
            guard: Some(guard),
        }
        .boxed_unsync()
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The connection's IO: replays the detected first bytes, and notes reads for the
    /// header deadline.
    pub struct ConnIo<I> {
        prefix: Bytes,
        #[pin]
        inner: I,
        state: Arc<ConnState>,
    }
}

impl<I> ConnIo<I> {
    /// `inner` with `prefix` (already read) replayed first.
    pub fn new(inner: I, prefix: Bytes, state: Arc<ConnState>) -> Self {
        ConnIo {
            prefix,
            inner,
            state,
        }
    }
}

impl<I: AsyncRead> AsyncRead for ConnIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.bytes_read();
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for ConnIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The executor of HTTP/2 stream tasks: tracked (shutdown waits for them) and dropped
/// when the grace runs out (`cut`), so their bodies are accounted before exit.
#[derive(Clone)]
pub struct TrackedExec {
    /// Where tasks are tracked.
    pub tracker: TaskTracker,
    /// Cancelled when the shutdown grace is over.
    pub cut: CancellationToken,
}

impl<F> hyper::rt::Executor<F> for TrackedExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            let _ = cut.run_until_cancelled(fut).await;
        });
    }
}

/// Connections per client address (`server.max_connections_per_ip`).
#[derive(Debug)]
pub struct PerIp {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// At most `max` connections per address; 0 = no cap.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerIp {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a connection slot of `ip`, or `None` when it holds `max` already.
    pub fn try_enter(self: &Arc<Self>, ip: IpAddr) -> Option<IpGuard> {
        if self.max == 0 {
            return Some(IpGuard(None));
        }
        let ip = canonical_ip(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpGuard(Some((Arc::clone(self), ip))))
    }
}

/// One connection slot of an address (released on drop).
#[derive(Debug)]
pub struct IpGuard(Option<(Arc<PerIp>, IpAddr)>);

impl Drop for IpGuard {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = self.0.take() {
            let mut counts = per_ip.counts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = counts.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_caps_one_address_only() {
        let p = PerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = p.try_enter(a).unwrap();
        let _g2 = p.try_enter(a).unwrap();
        assert!(p.try_enter(a).is_none());
        assert!(p.try_enter(b).is_some());
        drop(g1);
        assert!(p.try_enter(a).is_some());
        assert!(PerIp::new(0).try_enter(a).is_some());
    }

    #[tokio::test]
    async fn detect_tells_h2_preface_from_http1() {
        let mut h2: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest";
        let (p, b) = detect(&mut h2).await.unwrap().unwrap();
        assert_eq!((p, b.len()), (Proto::Http2, 24));
        let mut h1: &[u8] = b"GET / HTTP/1.1\r\n";
        let (p, b) = detect(&mut h1).await.unwrap().unwrap();
        assert_eq!(p, Proto::Http1);
        assert_eq!(&b[..], b"GET / HTTP/1.1\r\n");
        let mut half: &[u8] = b"PRI * HTTP/2";
        assert!(detect(&mut half).await.unwrap().is_none());
    }

    /// Polls `f` until it holds (the kernel moves loopback data asynchronously).
    fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..500 {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn an_idle_deadline_waits_while_the_viewer_still_drains_the_socket() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut viewer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        // The response's last byte is handed to the kernel; the viewer has read none.
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0usize;
        loop {
            match server.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let s = ConnState::new(Instant::now(), Some(server.as_raw_fd()));
        drop(s.request_started());
        let fd = server.as_raw_fd();
        let unsent = |fd| send_queue(fd).unwrap().unsent;
        assert!(unsent(fd) > 0, "the send queue holds the bytes");
        // First look: bytes queued → one more period.
        assert!(s.still_draining(Phase::Keepalive));
        // A whole period without progress → closed as before.
        assert!(!s.still_draining(Phase::Keepalive));
        // The viewer reads some: the queue shrinks → one more period.
        let before = send_queue(fd).unwrap().acked;
        let mut buf = vec![0u8; 256 * 1024];
        let mut read = viewer.read(&mut buf).unwrap();
        assert!(eventually(|| send_queue(fd).unwrap().acked > before));
        assert!(s.still_draining(Phase::H2Idle));
        // Deadlines that are not about idleness never wait.
        assert!(!s.still_draining(Phase::Header));
        // Everything read during the period: one more period from now, then idle for real.
        while read < written {
            read += viewer.read(&mut buf).unwrap();
        }
        assert!(eventually(|| unsent(fd) == 0));
        assert!(s.still_draining(Phase::Keepalive));
        assert!(!s.still_draining(Phase::Keepalive));
    }

    #[tokio::test]
    async fn idle_deadlines_follow_the_state() {
        let d = Deadlines {
            header: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            h2_idle: Duration::from_secs(30),
        };
        let s = ConnState::new(Instant::now(), None);
        assert_eq!(
            s.deadline(Proto::Http1, &d),
            Some((10_000, Phase::FirstRequest))
        );
        let g = s.request_started();
        assert_eq!(s.deadline(Proto::Http1, &d), None);
        drop(g);
        assert_eq!(
            s.deadline(Proto::Http2, &d).map(|x| x.1),
            Some(Phase::H2Idle)
        );
        assert_eq!(
            s.deadline(Proto::Http1, &d).map(|x| x.1),
            Some(Phase::Keepalive)
        );
        s.bytes_read();
        assert_eq!(
            s.deadline(Proto::Http1, &d).map(|x| x.1),
            Some(Phase::Header)
        );
    }
}
