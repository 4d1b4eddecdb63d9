//! The segment cache and request coalescing of SPEC §12.
//!
//! It sits at the origin-fetch step, behind the access policy: the pipeline calls
//! [`fetch`] where it used to call the origin, so every request is admitted (or
//! refused) exactly as before, and the response stage sees cached bytes like origin
//! bytes.
//!
//! * **Objects** are origin `200` answers to `GET`, kept as shared immutable [`Bytes`]
//!   chunks ([`object::Object`]): N viewers of one object cost one copy.
//! * **Coalescing that streams.** The first miss for a key starts a *fill*: a task of
//!   its own that fetches the whole object from the origin and appends each chunk to
//!   the object as it arrives. Every viewer of the key — the first one, concurrent
//!   ones, later ones — reads the object's chunk list and waits on a `watch` channel
//!   for more: bytes reach all of them as they arrive, nobody polls, and a late joiner
//!   first gets the chunks already there.
//! * **Slow viewers don't pin origin connections.** The fill reads at the origin's pace
//!   whatever the readers do, so the connection goes back to the pool when the object
//!   is complete. A fill whose viewers all left keeps going (it is filling the cache),
//!   unless the answer has no announced length (it might never end, like a live
//!   stream): that fill stops with its last viewer.
//! * **Failures.** A fill that fails mid-way fails every reader's body (the connection
//!   is cut, SPEC §2 step 8) and leaves nothing cached; the next request fetches again.
//! * **Bounded.** Complete objects and fills in flight are charged against
//!   `cache.max_bytes`; complete objects are evicted least recently used first. When
//!   only fills remain and one more chunk would not fit, or an object of unknown length
//!   grows past `cache.max_object_bytes`, that fill leaves the cache and streams on to
//!   the viewers already reading it, freeing each chunk once all of them passed it (and
//!   reading the origin no faster than the slowest of them, within a 1 MiB window).
//! * **Eviction order** is plain LRU over complete objects ([`lru::Lru`]); why LRU and
//!   not a frequency-aware policy is measured in `bench/cache_policy` (README, crate
//!   choices).
//! * **Reload.** The three `[cache]` bounds are read per request and per chunk, so a
//!   `SIGHUP` applies them ([`SegmentCache::reconfigure`]) without dropping what is
//!   cached: a smaller `max_bytes` evicts down to it, `0` turns the cache off for new
//!   requests (and lets go of every complete object), a bound raised from `0` turns it on.

pub mod lru;
pub mod metrics;
pub(crate) mod object;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{oneshot, watch};

use crate::config::CacheConfig;
use crate::origin::conditional::Answer;
use crate::origin::{FetchClass, OriginBody, OriginError, OriginRequest};
use crate::overload::GatedOrigin;
use object::{End, Object};

pub use metrics::CacheMetrics;

/// Bytes an uncached fill may run ahead of its slowest reader.
const UNCACHED_WINDOW: u64 = 1 << 20;

/// Fetches `req` through the cache when it is on, else straight from the origin.
pub async fn fetch(
    cache: &Arc<SegmentCache>,
    origin: &Arc<GatedOrigin>,
    req: OriginRequest,
) -> Result<Response<OriginBody>, OriginError> {
    cache.fetch(origin, req).await
}

/// What waiters of a fill that has no response head yet learn once it has one.
#[derive(Clone)]
enum Joined {
    /// The answer is being cached: read it.
    Object(Arc<Object>),
    /// The answer is not cacheable: fetch from the origin yourself.
    Refetch,
    /// The origin could not be reached (shared so a burst does not retry N times).
    Failed(FailKind),
}

/// A clonable [`OriginError`].
#[derive(Clone)]
enum FailKind {
    /// → `OriginError::Unreachable`.
    Unreachable(String),
    /// → `OriginError::Timeout`.
    Timeout(Duration),
    /// → `OriginError::BadPath`.
    BadPath(String),
    /// → `OriginError::Busy` (no origin slot within the queue timeout).
    Busy,
}

impl FailKind {
    /// The shareable copy of `e`.
    fn of(e: &OriginError) -> FailKind {
        match e {
            OriginError::Unreachable(s) => FailKind::Unreachable(s.clone()),
            OriginError::Timeout(d) => FailKind::Timeout(*d),
            OriginError::BadPath(s) => FailKind::BadPath(s.clone()),
            OriginError::Busy => FailKind::Busy,
        }
    }

    /// Back to an error.
    fn error(self) -> OriginError {
        match self {
            FailKind::Unreachable(s) => OriginError::Unreachable(s),
            FailKind::Timeout(d) => OriginError::Timeout(d),
            FailKind::BadPath(s) => OriginError::BadPath(s),
            FailKind::Busy => OriginError::Busy,
        }
    }
}

/// One key of the index.
enum Slot {
    /// A fill waiting for the origin's response head.
    Pending {
        /// Fill id.
        id: u64,
        /// Learns what to do once the head is in.
        joined: watch::Receiver<Option<Joined>>,
    },
    /// An object being filled (`tick = None`) or complete (`tick` = its LRU position).
    Object {
        /// Fill id.
        id: u64,
        /// The object.
        obj: Arc<Object>,
        /// LRU position of a complete object.
        tick: Option<u64>,
    },
}

/// Keys, LRU order and the byte account.
#[derive(Default)]
struct Index {
    /// Key → slot.
    slots: HashMap<String, Slot>,
    /// Complete objects in last-use order; bytes charged for them and for fills in
    /// flight.
    lru: lru::Lru<String>,
}

impl Index {
    /// Whether `key` still holds the object of fill `id`.
    fn holds(&self, key: &str, id: u64) -> bool {
        matches!(self.slots.get(key), Some(Slot::Object { id: i, .. }) if *i == id)
    }

    /// Removes `key` if it still holds fill `id`, releasing its bytes.
    fn remove_fill(&mut self, key: &str, id: u64) {
        let ours = match self.slots.get(key) {
            Some(Slot::Pending { id: i, .. }) | Some(Slot::Object { id: i, .. }) => *i == id,
            None => false,
        };
        if ours {
            if let Some(slot) = self.slots.remove(key) {
                self.release(slot);
            }
        }
    }

    /// Releases a removed slot's bytes and LRU entry.
    fn release(&mut self, slot: Slot) {
        if let Slot::Object { obj, tick, .. } = slot {
            self.lru.discharge(obj.charged());
            if let Some(t) = tick {
                self.lru.remove(t);
            }
            obj.uncache();
        }
    }

    /// Evicts least recently used complete objects until `n` more bytes fit under
    /// `max`; charges them and returns `true` if they do.
    fn make_room(
        &mut self,
        n: u64,
        max: u64,
        evictions: &prometheus_client::metrics::counter::Counter,
    ) -> bool {
        let Index { slots, lru } = self;
        lru.make_room(n, max, |victim| match slots.remove(&victim) {
            Some(Slot::Object { obj, .. }) => {
                obj.uncache();
                evictions.inc();
                obj.charged()
            }
            // Only complete objects are in the order; nothing else to free.
            _ => 0,
        })
    }
}

/// The `[cache]` bounds in force, changed by a reload.
struct Bounds {
    /// `cache.max_bytes` (0: off).
    max_bytes: AtomicU64,
    /// `cache.max_object_bytes`.
    max_object_bytes: AtomicU64,
    /// `cache.playlist_ttl_ms`.
    playlist_ttl_ms: AtomicU64,
}

impl Bounds {
    /// The bounds of `cfg`.
    fn of(cfg: &CacheConfig) -> Bounds {
        Bounds {
            max_bytes: AtomicU64::new(cfg.max_bytes),
            max_object_bytes: AtomicU64::new(cfg.max_object_bytes),
            playlist_ttl_ms: AtomicU64::new(cfg.playlist_ttl_ms),
        }
    }

    /// `cache.max_bytes` now.
    fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// `cache.max_object_bytes` now.
    fn max_object_bytes(&self) -> u64 {
        self.max_object_bytes.load(Ordering::Relaxed)
    }

    /// `cache.playlist_ttl_ms` now.
    fn playlist_ttl_ms(&self) -> u64 {
        self.playlist_ttl_ms.load(Ordering::Relaxed)
    }
}

/// The cache: configuration, index and metrics.
pub struct SegmentCache {
    /// `[cache]` bounds in force.
    cfg: Bounds,
    /// Keys and byte account.
    index: Mutex<Index>,
    /// Fill ids.
    next_id: AtomicU64,
    /// Counters.
    metrics: CacheMetrics,
}

/// What a lookup found to do.
enum Step {
    /// Read this object (complete: a hit; filling: coalesced).
    Serve(Arc<Object>),
    /// Wait for the head of a fill in flight.
    Wait(watch::Receiver<Option<Joined>>),
    /// Start fill `id` and tell waiters through the sender.
    Lead(u64, watch::Sender<Option<Joined>>),
    /// Go to the origin, uncached.
    Origin,
}

/// What a fill hands the viewer that started it.
enum Lead {
    /// Read this object, in this reserved seat.
    Object(Arc<Object>, object::Seat),
    /// The origin's answer, not cacheable: streamed through as is.
    Response(Response<OriginBody>),
    /// The fetch failed.
    Failed(OriginError),
}

impl SegmentCache {
    /// The cache of `cfg` (off, passing every request to the origin, while
    /// `max_bytes = 0`).
    pub fn new(cfg: &CacheConfig, metrics: CacheMetrics) -> Arc<SegmentCache> {
        Arc::new(SegmentCache {
            cfg: Bounds::of(cfg),
            index: Mutex::new(Index::default()),
            next_id: AtomicU64::new(1),
            metrics,
        })
    }

    /// Applies reloaded bounds to new requests, keeping what is cached: a smaller
    /// `max_bytes` evicts least recently used objects down to it (`0`: all of them).
    pub fn reconfigure(&self, cfg: &CacheConfig) {
        self.cfg
            .max_object_bytes
            .store(cfg.max_object_bytes, Ordering::Relaxed);
        self.cfg
            .playlist_ttl_ms
            .store(cfg.playlist_ttl_ms, Ordering::Relaxed);
        self.cfg.max_bytes.store(cfg.max_bytes, Ordering::Relaxed);
        let mut index = self.index();
        index.make_room(0, cfg.max_bytes, &self.metrics.evictions);
        self.publish_held(&index);
    }

    /// Locks the index.
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Updates the bytes-held gauge.
    fn publish_held(&self, index: &Index) {
        self.metrics
            .held_bytes
            .set(i64::try_from(index.lru.held()).unwrap_or(i64::MAX));
    }

    /// Answers `req` from the cache, joining or starting a fill as needed.
    async fn fetch(
        self: &Arc<Self>,
        origin: &Arc<GatedOrigin>,
        req: OriginRequest,
    ) -> Result<Response<OriginBody>, OriginError> {
        let get = req.method == Method::GET;
        let cacheable_class = req.class != FetchClass::Playlist || self.cfg.playlist_ttl_ms() > 0;
        let on = self.cfg.max_bytes() > 0;
        if !on || !(get || req.method == Method::HEAD) || !cacheable_class {
            return origin.fetch(req).await;
        }
        let key = origin.describe_url(&req.path);
        // A ranged miss goes to the origin as asked (it may be a seek in a file far
        // larger than the cache); a HEAD miss too. Any other GET miss starts a fill.
        let may_lead = get && !req.headers.contains_key(header::RANGE);
        let step = {
            let mut index = self.index();
            let now = Instant::now();
            let expired = matches!(
                index.slots.get(&key),
                Some(Slot::Object { obj, tick: Some(_), .. }) if obj.expires.is_some_and(|e| e <= now)
            );
            if expired {
                if let Some(slot) = index.slots.remove(&key) {
                    index.release(slot);
                    self.publish_held(&index);
                }
            }
            let idx = &mut *index;
            let step = match idx.slots.get_mut(&key) {
                Some(Slot::Object { obj, tick: t, .. }) => {
                    let obj = Arc::clone(obj);
                    match t.as_mut() {
                        Some(t) => {
                            *t = idx.lru.touch(*t);
                            self.metrics.hits.inc();
                        }
                        // Still filling: stays out of the LRU until complete.
                        None => {
                            self.metrics.coalesced.inc();
                        }
                    }
                    Step::Serve(obj)
                }
                Some(Slot::Pending { joined, .. }) => {
                    self.metrics.coalesced.inc();
                    Step::Wait(joined.clone())
                }
                None if may_lead => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = watch::channel(None);
                    idx.slots
                        .insert(key.clone(), Slot::Pending { id, joined: rx });
                    self.metrics.misses.inc();
                    Step::Lead(id, tx)
                }
                None => {
                    self.metrics.misses.inc();
                    Step::Origin
                }
            };
            step
        };
        match step {
            Step::Serve(obj) => self.serve(origin, obj, None, req).await,
            Step::Wait(mut rx) => {
                let joined = match rx.wait_for(Option::is_some).await {
                    Ok(v) => v.clone(),
                    Err(_) => None,
                };
                match joined {
                    Some(Joined::Object(obj)) => self.serve(origin, obj, None, req).await,
                    Some(Joined::Failed(kind)) => Err(kind.error()),
                    Some(Joined::Refetch) | None => origin.fetch(req).await,
                }
            }
            Step::Lead(id, tx) => self.lead(origin, key, id, tx, req).await,
            Step::Origin => origin.fetch(req).await,
        }
    }

    /// Starts the fill of `key` as a task of its own and answers the viewer from it.
    async fn lead(
        self: &Arc<Self>,
        origin: &Arc<GatedOrigin>,
        key: String,
        id: u64,
        joined: watch::Sender<Option<Joined>>,
        req: OriginRequest,
    ) -> Result<Response<OriginBody>, OriginError> {
        let mut fill_req = req.clone();
        // The fill fetches the whole object; the viewer's conditionals are answered
        // from it.
        for name in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_RANGE,
        ] {
            fill_req.headers.remove(name);
        }
        let (lead_tx, lead_rx) = oneshot::channel();
        let (cache, origin2) = (Arc::clone(self), Arc::clone(origin));
        tokio::spawn(async move {
            cache
                .fill(&origin2, key, id, joined, lead_tx, fill_req)
                .await;
        });
        match lead_rx.await {
            Ok(Lead::Object(obj, seat)) => self.serve(origin, obj, Some(seat), req).await,
            Ok(Lead::Response(resp)) => Ok(resp),
            Ok(Lead::Failed(e)) => Err(e),
            Err(_) => Err(OriginError::Unreachable("cache fill ended early".into())),
        }
    }

    /// The fill task: fetches the object, decides whether it is cacheable, and pumps
    /// its body into the object at the origin's pace.
    async fn fill(
        &self,
        origin: &Arc<GatedOrigin>,
        key: String,
        id: u64,
        joined: watch::Sender<Option<Joined>>,
        lead: oneshot::Sender<Lead>,
        req: OriginRequest,
    ) {
        let class = req.class;
        let resp = match origin.fetch(req).await {
            Ok(r) => r,
            Err(e) => {
                self.index().remove_fill(&key, id);
                joined.send_replace(Some(Joined::Failed(FailKind::of(&e))));
                let _ = lead.send(Lead::Failed(e));
                return;
            }
        };
        let Some((len, expires)) = self.storable(&resp, class) else {
            self.index().remove_fill(&key, id);
            joined.send_replace(Some(Joined::Refetch));
            let _ = lead.send(Lead::Response(resp));
            return;
        };
        let (parts, mut body) = resp.into_parts();
        let obj = Arc::new(Object::new(parts.headers, len, expires));
        {
            let mut index = self.index();
            match index.slots.get_mut(&key) {
                Some(slot @ Slot::Pending { .. }) if slot_id(slot) == id => {
                    *slot = Slot::Object {
                        id,
                        obj: Arc::clone(&obj),
                        tick: None,
                    };
                }
                _ => obj.uncache(),
            }
        }
        joined.send_replace(Some(Joined::Object(Arc::clone(&obj))));
        drop(joined);
        let _ = lead.send(Lead::Object(Arc::clone(&obj), obj.seat()));
        // From here on the object must end, whatever happens to this task.
        let guard = FillGuard(Arc::clone(&obj));
        let max_object = self.cfg.max_object_bytes().min(self.cfg.max_bytes());
        let mut cached = true;
        loop {
            let next = if obj.len.is_none() {
                // An answer of unknown length may never end (a live stream): it is
                // only worth reading while someone is.
                tokio::select! {
                    f = body.frame() => f,
                    () = obj.wait_drained(|_, readers| readers == 0) => {
                        self.index().remove_fill(&key, id);
                        obj.finish(End::Failed);
                        return;
                    }
                }
            } else {
                body.frame().await
            };
            let frame = match next {
                None => break,
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    tracing::warn!(key = %redact_key(&key), error = %e, "origin failed while filling the cache");
                    self.index().remove_fill(&key, id);
                    obj.finish(End::Failed);
                    return;
                }
            };
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let n = chunk.len() as u64;
            self.metrics.origin_bytes.inc_by(n);
            if cached && (obj.received() + n > max_object || !self.reserve(&key, id, n)) {
                cached = false;
                let mut index = self.index();
                index.remove_fill(&key, id);
                self.publish_held(&index);
                drop(index);
                obj.uncache();
            }
            if !cached {
                obj.wait_drained(|buffered, readers| readers == 0 || buffered < UNCACHED_WINDOW)
                    .await;
                if obj.backlog().1 == 0 {
                    // Out of the cache and nobody reading: stop fetching.
                    obj.finish(End::Failed);
                    return;
                }
            }
            obj.push(chunk);
        }
        if obj.len.is_some_and(|n| n != obj.received()) {
            self.index().remove_fill(&key, id);
            obj.finish(End::Failed);
            return;
        }
        obj.finish(End::Complete);
        drop(guard);
        self.compact(&key, id, &obj).await;
        let mut index = self.index();
        let Index { slots, lru } = &mut *index;
        if let Some(Slot::Object { id: i, tick: t, .. }) = slots.get_mut(&key) {
            if *i == id {
                *t = Some(lru.push(key));
            }
        }
        self.publish_held(&index);
    }

    /// Joins complete object `obj` of fill `id` into its final pieces off the runtime's
    /// threads (a sealed copy is a copy and a huge-page collapse), charging the padding
    /// of a sealed copy first when it fits and giving it back if none was made.
    async fn compact(&self, key: &str, id: u64, obj: &Arc<Object>) {
        let pad = obj.padding_wanted();
        let padded = pad > 0 && {
            let mut index = self.index();
            let fits = index.holds(key, id)
                && index.make_room(pad, self.cfg.max_bytes(), &self.metrics.evictions);
            if fits {
                obj.set_padding(pad);
            }
            self.publish_held(&index);
            fits
        };
        let job = Arc::clone(obj);
        let used = tokio::task::spawn_blocking(move || job.compact(padded))
            .await
            .unwrap_or(false);
        if padded && !used {
            let mut index = self.index();
            if index.holds(key, id) {
                index.lru.discharge(pad);
                obj.set_padding(0);
            }
            self.publish_held(&index);
        }
    }

    /// Charges `n` more bytes to fill `id`, evicting least recently used complete
    /// objects to make room; `false` when only fills are left and it does not fit.
    fn reserve(&self, key: &str, id: u64, n: u64) -> bool {
        let mut index = self.index();
        if !index.holds(key, id) {
            return false;
        }
        let fits = index.make_room(n, self.cfg.max_bytes(), &self.metrics.evictions);
        self.publish_held(&index);
        fits
    }

    /// Whether an origin answer may be cached: `Some((announced length, expiry))`.
    fn storable(
        &self,
        resp: &Response<OriginBody>,
        class: FetchClass,
    ) -> Option<(Option<u64>, Option<Instant>)> {
        if resp.status() != StatusCode::OK {
            return None;
        }
        let h = resp.headers();
        let mut max_age = None;
        for v in h.get_all(header::CACHE_CONTROL) {
            let s = v.to_str().ok()?;
            for directive in s.split(',') {
                let d = directive.trim().to_ascii_lowercase();
                if d == "no-store" || d == "private" || d.starts_with("private=") {
                    return None;
                }
                if let Some(secs) = d.strip_prefix("max-age=") {
                    max_age = Some(secs.trim_matches('"').parse::<u64>().ok()?);
                }
            }
        }
        let mut lifetime = max_age.map(Duration::from_secs);
        if class == FetchClass::Playlist {
            let ttl = Duration::from_millis(self.cfg.playlist_ttl_ms());
            lifetime = Some(lifetime.map_or(ttl, |l| l.min(ttl)));
        }
        if lifetime.is_some_and(|l| l.is_zero()) {
            return None;
        }
        let len = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        if len.is_some_and(|n| n > self.cfg.max_object_bytes() || n > self.cfg.max_bytes()) {
            return None;
        }
        if h.contains_key(header::CONTENT_ENCODING) || h.contains_key(header::CONTENT_RANGE) {
            return None;
        }
        Some((len, lifetime.map(|l| Instant::now() + l)))
    }

    /// Answers `req` from `obj` the way the origin would: `304`, `206`, `416`, or the
    /// whole body; HEAD gets the head only. A range on an object of still unknown
    /// length goes to the origin.
    async fn serve(
        &self,
        origin: &Arc<GatedOrigin>,
        obj: Arc<Object>,
        seat: Option<object::Seat>,
        req: OriginRequest,
    ) -> Result<Response<OriginBody>, OriginError> {
        let mut headers = obj.headers.clone();
        headers.remove(header::TRANSFER_ENCODING);
        let answer = match obj.size() {
            Some(size) => Answer::decide(&obj.validators, &req.headers, size, &mut headers),
            None if obj.validators.not_modified(&req.headers) => Answer::NotModified,
            None if req.headers.contains_key(header::RANGE) => {
                return origin.fetch(req).await;
            }
            None => {
                headers.remove(header::CONTENT_LENGTH);
                Answer::Full
            }
        };
        let (start, len) = match answer {
            Answer::NotModified => {
                for name in [
                    header::CONTENT_LENGTH,
                    header::CONTENT_TYPE,
                    header::CONTENT_RANGE,
                ] {
                    headers.remove(name);
                }
                return Ok(head_only(answer.status(), headers));
            }
            Answer::Unsatisfiable => return Ok(head_only(answer.status(), headers)),
            Answer::Full => (0, obj.size()),
            Answer::Partial { start, len } => (start, Some(len)),
        };
        if req.method == Method::HEAD || len == Some(0) {
            return Ok(head_only(answer.status(), headers));
        }
        let reader = obj.reader(seat, start, len.map(|l| start + l));
        let body = object::body(reader, len, self.metrics.served_bytes.clone());
        let mut resp = Response::new(body);
        *resp.status_mut() = answer.status();
        *resp.headers_mut() = headers;
        Ok(resp)
    }
}

/// Marks the object failed if the fill task ends without finishing it (a panic in
/// the origin client, a runtime shutting down), so no reader waits forever.
struct FillGuard(Arc<Object>);

impl Drop for FillGuard {
    fn drop(&mut self) {
        if self.0.end() == End::Filling {
            self.0.finish(End::Failed);
        }
    }
}

/// The fill id of a slot.
fn slot_id(slot: &Slot) -> u64 {
    match slot {
        Slot::Pending { id, .. } | Slot::Object { id, .. } => *id,
    }
}

/// A key for logs: the path part only (origin URLs carry no credentials, but keep the
/// log lines short).
fn redact_key(key: &str) -> &str {
    key.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(key)
}

/// A response with `status`, `headers` and no body.
fn head_only(status: StatusCode, headers: HeaderMap) -> Response<OriginBody> {
    let body = http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(playlist_ttl_ms: u64) -> Arc<SegmentCache> {
        let cfg = CacheConfig {
            max_bytes: 1000,
            max_object_bytes: 100,
            playlist_ttl_ms,
        };
        SegmentCache::new(&cfg, CacheMetrics::default())
    }

    fn answer(status: u16, headers: &[(&str, &str)]) -> Response<OriginBody> {
        let mut r = head_only(StatusCode::from_u16(status).unwrap(), HeaderMap::new());
        for (k, v) in headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    #[test]
    fn what_is_stored() {
        let c = cache(0);
        let seg = FetchClass::Other;
        assert!(c.storable(&answer(200, &[]), seg).is_some());
        assert!(c.storable(&answer(206, &[]), seg).is_none());
        assert!(c.storable(&answer(404, &[]), seg).is_none());
        for cc in [
            "no-store",
            "private",
            "public, PRIVATE",
            "max-age=0",
            "private=\"x\"",
        ] {
            assert!(
                c.storable(&answer(200, &[("cache-control", cc)]), seg)
                    .is_none(),
                "{cc}"
            );
        }
        let (len, expires) = c
            .storable(
                &answer(
                    200,
                    &[
                        ("cache-control", "public, max-age=60"),
                        ("content-length", "100"),
                    ],
                ),
                seg,
            )
            .unwrap();
        assert_eq!(len, Some(100));
        let left = expires.unwrap() - Instant::now();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
        assert!(c
            .storable(&answer(200, &[("content-length", "101")]), seg)
            .is_none());
        assert!(c
            .storable(&answer(200, &[("content-encoding", "gzip")]), seg)
            .is_none());
    }

    #[test]
    fn playlists_live_playlist_ttl_ms_at_most() {
        let pl = FetchClass::Playlist;
        let c = cache(1000);
        let (_, expires) = c.storable(&answer(200, &[]), pl).unwrap();
        assert!(expires.unwrap() - Instant::now() <= Duration::from_secs(1));
        let (_, expires) = c
            .storable(&answer(200, &[("cache-control", "max-age=3600")]), pl)
            .unwrap();
        assert!(expires.unwrap() - Instant::now() <= Duration::from_secs(1));
    }
}
