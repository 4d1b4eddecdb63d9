//! The stream of a plain-TCP connection. Body bytes that live in a sealed file
//! ([`crate::sealed_bytes`], complete cached objects) go out with `sendfile(2)`, so the
//! kernel references their pages instead of copying them into the socket; everything
//! else (heads, TLS records are never here, uncached bodies) goes out with `writev`.
//! hyper hands its queued head and body frames to `poll_write_vectored` as they are,
//! so the slices it passes still point into the cached object's mapping.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::sealed_bytes;

/// A TCP stream whose writes send sealed bytes with `sendfile(2)`.
#[derive(Debug)]
pub struct SendfileStream {
    inner: TcpStream,
    /// Bytes sent with `sendfile` (`fileproxy_cache_sendfile_bytes`).
    sent: Counter,
}

impl SendfileStream {
    /// `inner`, counting what it sends from sealed files in `sent`.
    pub fn new(inner: TcpStream, sent: Counter) -> Self {
        SendfileStream { inner, sent }
    }
}

/// Runs the non-blocking socket call `op` once the socket is writable, until it does
/// not report `WouldBlock` (tokio clears the readiness it acted on).
fn poll_send(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    mut op: impl FnMut(RawFd) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    let fd = stream.as_raw_fd();
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_io(Interest::WRITABLE, || op(fd)) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            r => return Poll::Ready(r),
        }
    }
}

/// `sendfile(2)` of `len` bytes of `file` from `offset` to `socket`.
fn sendfile(socket: RawFd, file: RawFd, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "sendfile offset"))?;
    // SAFETY: both descriptors are open for the duration of the call (the socket is
    // ours; the file belongs to a `Bytes` the caller is writing), `off` is a valid
    // pointer, and the kernel reads at most `len` bytes of the file.
    let n = unsafe { libc::sendfile(socket, file, &mut off, len) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `sendmsg(2)` of `bufs` with `MSG_MORE`: the sealed bytes that follow are sent next,
/// so the head does not leave as a packet of its own.
fn send_more(socket: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero `msghdr` is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (std guarantees it).
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize);
    // SAFETY: `msg` points at `bufs`, which outlive the call; the kernel only reads them.
    let n = unsafe { libc::sendmsg(socket, &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(b)])
    }

    /// One socket call per poll: the slices before the first sealed one (with
    /// `MSG_MORE`), or that sealed slice (`sendfile`), or all of them when none is sealed.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first_sealed = bufs
            .iter()
            .enumerate()
            .find_map(|(i, b)| sealed_bytes::locate(b).map(|at| (i, at)));
        let plain_before = |i: usize| bufs[..i].iter().any(|b| !b.is_empty());
        match first_sealed {
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            Some((i, _)) if plain_before(i) => {
                poll_send(&this.inner, cx, |s| send_more(s, &bufs[..i]))
            }
            Some((i, (file, offset))) => {
                let len = bufs[i].len();
                let n = ready!(poll_send(&this.inner, cx, |s| sendfile(
                    s, file, offset, len
                )))?;
                this.sent.inc_by(n as u64);
                Poll::Ready(Ok(n))
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Writes `bufs` through a `SendfileStream` over real loopback TCP, reading the other
    /// end with pauses so that sends block part-way; returns what arrived
    /// and the bytes counted as sent by `sendfile`.
    async fn send_through(bufs: Vec<Bytes>) -> (Vec<u8>, u64) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
                if got.len() % (256 * 1024) < buf.len() {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
        });
        let sent = Counter::default();
        let mut w = SendfileStream::new(TcpStream::connect(addr).await.unwrap(), sent.clone());
        let mut queue: Vec<Bytes> = bufs;
        while queue.iter().any(|b| !b.is_empty()) {
            let slices: Vec<IoSlice<'_>> = queue.iter().map(|b| IoSlice::new(b)).collect();
            let mut n = w.write_vectored(&slices).await.unwrap();
            assert!(n > 0);
            for b in &mut queue {
                let k = n.min(b.len());
                let _ = b.split_to(k);
                n -= k;
            }
        }
        w.shutdown().await.unwrap();
        drop(w);
        (reader.await.unwrap(), sent.get())
    }

    #[tokio::test]
    async fn sealed_slices_go_out_by_sendfile_between_heap_slices_in_order() {
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = sealed_bytes::seal(&[Bytes::from(body.clone())], body.len(), false).unwrap();
        let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-length: 999\r\n\r\n");
        let piece = sealed.slice(1_000..2_500_000);
        let tail = Bytes::from_static(b"\r\n0\r\n\r\n");
        let (got, sent) = send_through(vec![head.clone(), piece.clone(), tail.clone()]).await;
        let want: Vec<u8> = [&head[..], &piece[..], &tail[..]].concat();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes arrived out of order or changed");
        assert_eq!(
            sent,
            piece.len() as u64,
            "the sealed slice went by sendfile"
        );
    }

    #[tokio::test]
    async fn heap_only_writes_are_plain_writev() {
        let parts = vec![Bytes::from(vec![1u8; 70_000]), Bytes::from(vec![2u8; 5])];
        let (got, sent) = send_through(parts).await;
        assert_eq!(got.len(), 70_005);
        assert_eq!(&got[69_998..], &[1, 1, 2, 2, 2, 2, 2]);
        assert_eq!(sent, 0);
    }
}
