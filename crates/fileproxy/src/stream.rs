//! The response stream from origin to viewer: passes frames through one at a time
//! (hyper only polls for the next frame once the previous one is written, so the
//! bytes in flight per transfer stay bounded by the origin's chunk and socket buffers),
//! counts bytes actually delivered, and reports how the transfer ended — completed,
//! failed at the origin, or abandoned by the viewer (dropping the body drops the origin
//! connection at once).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::response::Body;

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every byte was handed to the connection.
    Completed,
    /// The origin failed mid-way (the viewer sees a truncated body / reset).
    OriginError,
    /// The viewer went away before the end (logged as 499).
    ClientClosed,
}

/// What a finished transfer reports.
#[derive(Debug, Clone, Copy)]
pub struct TransferReport {
    /// Body bytes handed to the viewer's connection.
    pub bytes: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Time from request start to the first body byte (None when no body was sent).
    pub first_byte: Option<Duration>,
    /// Time from request start to the end of the transfer.
    pub total: Duration,
}

/// Receives the report of a transfer when it ends (exactly once).
pub trait TransferObserver: Send + 'static {
    /// Called once per transfer as bytes flow (for live views); default no-op.
    fn progress(&mut self, _bytes: u64) {}
    /// Called exactly once when the transfer ends, whatever the way.
    fn finish(self: Box<Self>, report: TransferReport);
}

/// A response body that counts bytes and reports its end to an observer.
pub struct TransferBody {
    inner: Body,
    started: Instant,
    bytes: u64,
    first_byte: Option<Duration>,
    errored: bool,
    observer: Option<Box<dyn TransferObserver>>,
}

impl TransferBody {
    /// Wraps `inner`; `started` is when the request arrived.
    pub fn new(inner: Body, started: Instant, observer: Box<dyn TransferObserver>) -> Self {
        Self {
            inner,
            started,
            bytes: 0,
            first_byte: None,
            errored: false,
            observer: Some(observer),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(obs) = self.observer.take() {
            obs.finish(TransferReport {
                bytes: self.bytes,
                outcome,
                first_byte: self.first_byte,
                total: self.started.elapsed(),
            });
        }
    }
}

impl HttpBody for TransferBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.first_byte.is_none() && !data.is_empty() {
                        this.first_byte = Some(this.started.elapsed());
                    }
                    // Counted when handed to hyper: hyper asks for the next frame only
                    // after this one is queued for the socket.
                    this.bytes += data.len() as u64;
                    if let Some(obs) = this.observer.as_mut() {
                        obs.progress(this.bytes);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish(Outcome::Completed);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.errored = true;
                this.finish(Outcome::OriginError);
            }
            Poll::Ready(None) => this.finish(Outcome::Completed),
            Poll::Pending => {}
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

impl Drop for TransferBody {
    fn drop(&mut self) {
        // Dropped before the end: the viewer left (or the connection was torn down).
        let outcome = if self.errored {
            Outcome::OriginError
        } else if self.inner.is_end_stream() {
            Outcome::Completed
        } else {
            Outcome::ClientClosed
        };
        self.finish(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    struct Capture(Arc<Mutex<Option<TransferReport>>>);
    impl TransferObserver for Capture {
        fn finish(self: Box<Self>, report: TransferReport) {
            if let Ok(mut g) = self.0.lock() {
                *g = Some(report);
            }
        }
    }

    #[tokio::test]
    async fn completed_transfer_counts_bytes() {
        let slot = Arc::new(Mutex::new(None));
        let body = TransferBody::new(
            crate::response::full(vec![7u8; 1000]),
            Instant::now(),
            Box::new(Capture(slot.clone())),
        );
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 1000);
        let r = slot.lock().unwrap().unwrap();
        assert_eq!(r.bytes, 1000);
        assert_eq!(r.outcome, Outcome::Completed);
        assert!(r.first_byte.is_some());
    }

    #[tokio::test]
    async fn dropped_transfer_is_client_closed() {
        let slot = Arc::new(Mutex::new(None));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream = tokio_stream_from(rx);
        let mut body = TransferBody::new(stream, Instant::now(), Box::new(Capture(slot.clone())));
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .await
            .unwrap();
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap().len(), 3);
        drop(body);
        let r = slot.lock().unwrap().unwrap();
        assert_eq!(r.outcome, Outcome::ClientClosed);
        assert_eq!(r.bytes, 3);
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
    ) -> Body {
        let s = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        http_body_util::StreamBody::new(s).boxed_unsync()
    }
}
