//! One cached origin answer: its head, and its body as a list of shared immutable
//! chunks that grows while the fill runs. Readers (viewers' response bodies) walk the
//! list and wait on a `watch` channel for more; a late reader first gets the chunks
//! already received. N readers of one object share one copy of its bytes.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{watch, Notify};

use crate::origin::conditional::Validators;
use crate::origin::OriginBody;

/// Size of the pieces a complete object's chunks are joined into.
const PIECE_BYTES: u64 = 256 * 1024;
/// Smallest complete object copied into a sealed file for `sendfile` (smaller ones,
/// playlists and keys, gain nothing from it and would each hold a descriptor).
const SEAL_MIN_BYTES: u64 = 64 * 1024;

/// How far a fill has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Chunks are still arriving.
    Filling,
    /// Every byte arrived.
    Complete,
    /// The origin failed mid-way (or the fill was abandoned): readers error out.
    Failed,
}

/// The mutable part of an object.
#[derive(Debug)]
struct FillState {
    /// Chunks not trimmed, in order; `chunks[0]` has absolute index `base`.
    chunks: VecDeque<Bytes>,
    /// Absolute index of `chunks[0]` (non-zero only once trimmed).
    base: usize,
    /// Bytes received so far.
    received: u64,
    /// Bytes in `chunks`.
    buffered: u64,
    /// Bytes charged to the cache past `received`: the padding of a sealed copy
    /// rounded up to a huge page ([`crate::sealed_bytes::padding`]).
    padding: u64,
    /// Fill progress.
    end: End,
    /// Still in the cache index. Once not, chunks every reader has passed are freed.
    cached: bool,
    /// Reader id → absolute index of the next chunk it reads.
    cursors: HashMap<u64, usize>,
    /// Next reader id.
    next_reader: u64,
    /// Bumped when the chunks are joined into one ([`Object::compact`]): readers then
    /// find their place again by byte offset.
    generation: u64,
}

/// A cached (or being cached) origin `200` answer.
#[derive(Debug)]
pub(crate) struct Object {
    /// The origin's response headers.
    pub(crate) headers: HeaderMap,
    /// The body length the origin announced, if any.
    pub(crate) len: Option<u64>,
    /// `ETag` / `Last-Modified` of the answer.
    pub(crate) validators: Validators,
    /// When the object stops being served from the cache (`max-age`, playlist TTL).
    pub(crate) expires: Option<Instant>,
    /// Chunks and progress.
    state: Mutex<FillState>,
    /// Bumped on every new chunk and at the end of the fill.
    progress: watch::Sender<u64>,
    /// Signalled when a reader advances or leaves (an uncached fill waits on it).
    drained: Notify,
}

impl Object {
    /// A new, empty object being filled.
    pub(crate) fn new(headers: HeaderMap, len: Option<u64>, expires: Option<Instant>) -> Self {
        Object {
            validators: Validators::from_headers(&headers),
            headers,
            len,
            expires,
            state: Mutex::new(FillState {
                chunks: VecDeque::new(),
                base: 0,
                received: 0,
                buffered: 0,
                padding: 0,
                end: End::Filling,
                cached: true,
                cursors: HashMap::new(),
                next_reader: 0,
                generation: 0,
            }),
            progress: watch::Sender::new(0),
            drained: Notify::new(),
        }
    }

    /// Locks the state (a poisoned lock is still usable: the state stays consistent
    /// between statements).
    fn state(&self) -> MutexGuard<'_, FillState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a chunk and wakes the readers.
    pub(crate) fn push(&self, chunk: Bytes) {
        {
            let mut st = self.state();
            st.received += chunk.len() as u64;
            st.buffered += chunk.len() as u64;
            st.chunks.push_back(chunk);
        }
        self.progress.send_modify(|v| *v += 1);
    }

    /// Ends the fill (complete or failed) and wakes the readers.
    pub(crate) fn finish(&self, end: End) {
        {
            let mut st = self.state();
            if st.end == End::Filling {
                st.end = end;
            }
        }
        self.progress.send_modify(|v| *v += 1);
    }

    /// Joins the chunks of a complete, cached object into pieces of [`PIECE_BYTES`]
    /// (one copy per fill), so that a hit hands the connection a few large frames:
    /// hyper writes one body frame per `writev` (its write buffer is bounded by the
    /// 16 KiB head limit), and the origin's reads are typically 16–64 KiB. Objects of
    /// [`SEAL_MIN_BYTES`] or more are copied into a sealed file
    /// ([`crate::sealed_bytes`]) that plain-TCP connections send with `sendfile`; when
    /// that fails (say, out of descriptors) the pieces are heap copies as before. Pieces
    /// stay small enough that delivered bytes are counted, and a transfer can be cut, at
    /// most a piece apart.
    ///
    /// `padded` says the cache has charged [`Object::padding_wanted`] for this object
    /// ([`Object::set_padding`]); returns whether a padded sealed copy was made.
    pub(crate) fn compact(&self, padded: bool) -> bool {
        let joinable = |st: &FillState| {
            st.end == End::Complete && st.cached && st.base == 0 && st.generation == 0
        };
        // Copied outside the lock (the chunks of a complete object no longer change;
        // only an eviction can take them away meanwhile).
        let (parts, size) = {
            let st = self.state();
            if !joinable(&st) {
                return false;
            }
            (st.chunks.iter().cloned().collect::<Vec<_>>(), st.buffered)
        };
        let Some((pieces, sealed)) = join(&parts, size, padded) else {
            return false;
        };
        let mut st = self.state();
        if !joinable(&st) || st.chunks.len() != parts.len() {
            return false;
        }
        st.chunks = pieces;
        st.generation += 1;
        for cursor in st.cursors.values_mut() {
            *cursor = 0;
        }
        padded && sealed
    }

    /// The padding a sealed copy of this complete object would take
    /// ([`crate::sealed_bytes::padding`]); 0 for objects that are not sealed.
    pub(crate) fn padding_wanted(&self) -> u64 {
        let size = self.state().buffered;
        match usize::try_from(size) {
            Ok(n) if size >= SEAL_MIN_BYTES => crate::sealed_bytes::padding(n) as u64,
            _ => 0,
        }
    }

    /// Records the padding bytes the cache has charged for this object.
    pub(crate) fn set_padding(&self, n: u64) {
        self.state().padding = n;
    }

    /// Bytes charged to the cache for this object: received plus padding.
    pub(crate) fn charged(&self) -> u64 {
        let st = self.state();
        st.received + st.padding
    }

    /// How the fill stands.
    pub(crate) fn end(&self) -> End {
        self.state().end
    }

    /// Bytes received so far.
    pub(crate) fn received(&self) -> u64 {
        self.state().received
    }

    /// The body size when known: announced, or counted once complete.
    pub(crate) fn size(&self) -> Option<u64> {
        let st = self.state();
        match (self.len, st.end) {
            (Some(n), _) => Some(n),
            (None, End::Complete) => Some(st.received),
            _ => None,
        }
    }

    /// Marks the object as no longer in the cache: from now on chunks every reader
    /// has passed are freed.
    pub(crate) fn uncache(&self) {
        let mut st = self.state();
        st.cached = false;
        trim(&mut st);
    }

    /// Bytes held for readers and number of readers (what an uncached fill waits on).
    pub(crate) fn backlog(&self) -> (u64, usize) {
        let st = self.state();
        (st.buffered, st.cursors.len())
    }

    /// Waits until a reader advances or leaves, checking `ready` first (no missed
    /// wake-up: the waiter is registered before the check).
    pub(crate) async fn wait_drained(&self, ready: impl Fn(u64, usize) -> bool) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (buffered, readers) = self.backlog();
            if ready(buffered, readers) {
                return;
            }
            notified.await;
        }
    }

    /// Reserves a reader's place at the start of the body before the reader exists
    /// (so a fill that leaves the cache does not free chunks it will need).
    pub(crate) fn seat(self: &Arc<Self>) -> Seat {
        let mut st = self.state();
        let id = st.next_reader;
        st.next_reader += 1;
        st.cursors.insert(id, 0);
        Seat {
            obj: Arc::clone(self),
            id: Some(id),
        }
    }

    /// A reader of bytes `start..end` (`end = None`: to the end of the body), in
    /// `seat` when given.
    pub(crate) fn reader(
        self: &Arc<Self>,
        seat: Option<Seat>,
        start: u64,
        end: Option<u64>,
    ) -> Reader {
        let mut seat = seat.unwrap_or_else(|| self.seat());
        let id = seat.id.take().unwrap_or(u64::MAX);
        let generation = self.state().generation;
        Reader {
            obj: Arc::clone(self),
            id,
            generation,
            next: 0,
            offset: 0,
            start,
            end: end.unwrap_or(u64::MAX),
            progress: self.progress.subscribe(),
        }
    }
}

/// A reader's reserved place; released on drop unless a reader took it.
pub(crate) struct Seat {
    /// The object.
    obj: Arc<Object>,
    /// The reserved cursor id (taken by the reader).
    id: Option<u64>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut st = self.obj.state();
            st.cursors.remove(&id);
            trim(&mut st);
            drop(st);
            self.obj.drained.notify_waiters();
        }
    }
}

/// The pieces `parts` (`size` bytes) are joined into, and whether they are sealed:
/// slices of one sealed file (`padded` to a huge page if asked) when the object is
/// large enough and sealing works, else heap pieces; `None` when the object stays on
/// the heap and its parts are already no more than the pieces would be.
fn join(parts: &[Bytes], size: u64, padded: bool) -> Option<(VecDeque<Bytes>, bool)> {
    let count = size.div_ceil(PIECE_BYTES) as usize;
    let sealable = usize::try_from(size)
        .ok()
        .filter(|_| size >= SEAL_MIN_BYTES);
    if let Some(n) = sealable {
        match crate::sealed_bytes::seal(parts, n, padded) {
            Ok(all) => {
                let piece = PIECE_BYTES as usize;
                return Some((
                    (0..count)
                        .map(|i| all.slice(i * piece..((i + 1) * piece).min(n)))
                        .collect(),
                    true,
                ));
            }
            Err(e) => tracing::debug!(error = %e, "cache object not sealed; kept on the heap"),
        }
    }
    if parts.len() <= count {
        return None;
    }
    let piece = |left: u64| BytesMut::with_capacity(left.min(PIECE_BYTES) as usize);
    let mut pieces = VecDeque::with_capacity(count);
    let mut left = size;
    let mut cur = piece(left);
    for c in parts {
        let mut c = &c[..];
        while !c.is_empty() {
            let n = c.len().min(cur.capacity() - cur.len());
            cur.extend_from_slice(&c[..n]);
            c = &c[n..];
            if cur.len() == cur.capacity() {
                left -= cur.len() as u64;
                pieces.push_back(std::mem::replace(&mut cur, piece(left)).freeze());
            }
        }
    }
    if !cur.is_empty() {
        pieces.push_back(cur.freeze());
    }
    Some((pieces, false))
}

/// Frees the chunks every reader has passed (only once the object left the cache).
fn trim(st: &mut FillState) {
    if st.cached {
        return;
    }
    let min = st.cursors.values().copied().min().unwrap_or(usize::MAX);
    while st.base < min {
        let Some(c) = st.chunks.pop_front() else {
            break;
        };
        st.buffered -= c.len() as u64;
        st.base += 1;
    }
}

/// One viewer's walk through an object's chunks.
pub(crate) struct Reader {
    /// The object read.
    obj: Arc<Object>,
    /// This reader's id among the object's cursors.
    id: u64,
    /// The object's chunk generation `next` and `offset` refer to.
    generation: u64,
    /// Absolute index of the next chunk.
    next: usize,
    /// Absolute byte offset of chunk `next`.
    offset: u64,
    /// First byte wanted.
    start: u64,
    /// One past the last byte wanted.
    end: u64,
    /// Fill progress notifications.
    progress: watch::Receiver<u64>,
}

impl Reader {
    /// The next piece of the wanted range; `None` at its end.
    pub(crate) async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if self.offset >= self.end {
                return None;
            }
            // Marked seen before looking, so a chunk pushed after the look wakes us.
            self.progress.borrow_and_update();
            {
                let mut st = self.obj.state();
                if st.generation != self.generation {
                    // The chunks were joined into pieces: go on from the same byte.
                    self.generation = st.generation;
                    self.start = self.start.max(self.offset);
                    self.next = 0;
                    self.offset = 0;
                }
                if self.next < st.base {
                    return Some(Err(io::Error::other(
                        "cached object was released before this reader started",
                    )));
                }
                if let Some(chunk) = st.chunks.get(self.next - st.base).cloned() {
                    self.next += 1;
                    st.cursors.insert(self.id, self.next);
                    if !st.cached {
                        trim(&mut st);
                        self.obj.drained.notify_waiters();
                    }
                    drop(st);
                    let chunk_start = self.offset;
                    self.offset += chunk.len() as u64;
                    let from = self.start.saturating_sub(chunk_start);
                    let to = (self.end - chunk_start).min(chunk.len() as u64);
                    if from >= to {
                        continue;
                    }
                    return Some(Ok(chunk.slice(from as usize..to as usize)));
                }
                match st.end {
                    End::Complete => return None,
                    End::Failed => {
                        return Some(Err(io::Error::other(
                            "origin failed while the cache was filling",
                        )))
                    }
                    End::Filling => {}
                }
            }
            if self.progress.changed().await.is_err() {
                return Some(Err(io::Error::other("cache fill ended")));
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut st = self.obj.state();
        st.cursors.remove(&self.id);
        trim(&mut st);
        drop(st);
        self.obj.drained.notify_waiters();
    }
}

/// A response body streaming `len` bytes (when known) from a [`Reader`].
pub(crate) fn body(
    reader: Reader,
    len: Option<u64>,
    served: prometheus_client::metrics::counter::Counter,
) -> OriginBody {
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        r.next().await.map(|item| (item.map(Frame::data), r))
    });
    CachedBody {
        inner: http_body_util::StreamBody::new(stream).boxed_unsync(),
        remaining: len,
        served,
    }
    .boxed_unsync()
}

/// Counts served bytes and reports an exact size when known.
struct CachedBody {
    /// The chunk stream.
    inner: OriginBody,
    /// Bytes still to come, when known.
    remaining: Option<u64>,
    /// `cache_served_bytes`.
    served: prometheus_client::metrics::counter::Counter,
}

impl Body for CachedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let n = data.len() as u64;
                this.served.inc_by(n);
                if let Some(r) = this.remaining.as_mut() {
                    *r = r.saturating_sub(n);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rest(r: &mut Reader) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(piece) = r.next().await {
            out.extend_from_slice(&piece.expect("piece"));
        }
        out
    }

    #[tokio::test]
    async fn compacting_keeps_every_reader_at_its_byte() {
        let n = 3 * PIECE_BYTES as usize - 100;
        let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let obj = Arc::new(Object::new(HeaderMap::new(), Some(n as u64), None));
        for part in body.chunks(1000) {
            obj.push(Bytes::copy_from_slice(part));
        }
        obj.finish(End::Complete);
        // One reader one chunk in, one ranged reader, then the join.
        let mut whole = obj.reader(None, 0, None);
        let first = whole.next().await.expect("piece").expect("ok");
        assert_eq!(first.len(), 1000);
        let mut ranged = obj.reader(None, 1500, Some(300_000));
        obj.compact(false);
        let sizes: Vec<usize> = obj.state().chunks.iter().map(Bytes::len).collect();
        let p = PIECE_BYTES as usize;
        assert_eq!(sizes, [p, p, p - 100]);
        let sealed = |st: &FillState| {
            st.chunks
                .iter()
                .all(|c| crate::sealed_bytes::locate(c).is_some())
        };
        assert!(
            sealed(&obj.state()),
            "a large object's pieces live in a sealed file"
        );
        let mut got = first.to_vec();
        got.extend(rest(&mut whole).await);
        assert_eq!(got, body);
        assert_eq!(rest(&mut ranged).await, &body[1500..300_000]);
        // A reader after the join gets the object in pieces.
        let mut late = obj.reader(None, 0, None);
        let piece = late.next().await.expect("piece").expect("ok");
        assert_eq!(piece.len(), p);
        assert_eq!(rest(&mut late).await, &body[p..]);
        // Already joined: nothing to do.
        obj.compact(false);
        assert_eq!(obj.state().generation, 1);
    }

    #[test]
    fn only_a_complete_cached_object_is_joined() {
        let obj = Object::new(HeaderMap::new(), None, None);
        obj.push(Bytes::from_static(b"ab"));
        obj.push(Bytes::from_static(b"cd"));
        obj.compact(false);
        assert_eq!(obj.state().chunks.len(), 2, "still filling");
        obj.finish(End::Complete);
        obj.compact(false);
        assert_eq!(obj.state().chunks.len(), 1, "joined");
        assert!(
            crate::sealed_bytes::locate(&obj.state().chunks[0]).is_none(),
            "small: heap"
        );
        // One large chunk already: not joined, but sealed.
        let obj = Object::new(HeaderMap::new(), None, None);
        obj.push(Bytes::from(vec![9u8; SEAL_MIN_BYTES as usize]));
        obj.finish(End::Complete);
        obj.compact(false);
        let st = obj.state();
        assert_eq!(st.chunks.len(), 1);
        assert!(
            crate::sealed_bytes::locate(&st.chunks[0]).is_some(),
            "sealed"
        );
        drop(st);
        let obj = Object::new(HeaderMap::new(), None, None);
        obj.push(Bytes::from_static(b"ab"));
        obj.push(Bytes::from_static(b"cd"));
        assert_eq!(obj.state().chunks.len(), 2, "still filling");
        obj.finish(End::Complete);
        obj.uncache();
        obj.compact(false);
        assert_eq!(obj.state().chunks.len(), 0, "uncached: trimmed, not joined");
    }
}
