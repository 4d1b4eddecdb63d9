//! Per-uid traffic accounting and reporting (SPEC §5).
//!
//! * **Aggregation.** Each finished transfer adds its delivered bytes to the effective
//!   uid's figures in memory ([`Traffic::record`]: one short lock on one of
//!   [`SHARDS`] shards): bytes, requests, bytes per file class, first/last activity,
//!   and bounded sets of client IPs and sessions (hashes, at most [`MAX_UNIQUE`] each).
//! * **Batches.** Every `traffic.interval_s` the uids whose bytes reached
//!   `traffic.min_bytes` are cut into one batch with a fresh `report_id`. The batch is
//!   written durably to the spool *first*; only then are exactly the reported figures
//!   subtracted from memory. A crash in between leaves them in memory *and* the spool
//!   never holds them twice, so nothing is counted twice and nothing is lost.
//! * **Delivery.** Spooled batches are `POST`ed oldest first, byte for byte as
//!   spooled, so a retry carries the same `report_id`. Only HTTP 200 removes a batch;
//!   anything else (error, timeout, other status) keeps it and retries later with
//!   exponential backoff (1 s doubling up to `traffic.retry_max_s`). Receivers
//!   deduplicate by `report_id` (a 200 lost on the way back causes a resend).
//! * **Restarts.** On shutdown the last qualified figures are cut into a batch and the
//!   rest (uids below the threshold) are saved to the spool; on start both are picked
//!   up again. The saved figures are deleted before they are merged back in.
//! * **Dropping.** Figures of a uid that has not reached `min_bytes` within
//!   [`QUALIFY_WITHIN`] of its first byte are dropped, as the Python version does, and
//!   counted in `fileproxy_traffic_dropped_{uids,bytes}_total`.
//! * **Reporting off** (`traffic.report_url` empty): qualified figures are moved to the
//!   per-uid totals shown by `/traffic` instead of being sent.
//!
//! The payload is documented in `docs/traffic-report.md`.

pub mod spool;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::access::classify::FileClass;
use crate::clock::{iso8601, unix_f64};
use crate::config::{Secret, TrafficConfig};
use crate::metrics::Metrics;
use crate::store::SharedStore;
use spool::Spool;

/// A uid must reach `min_bytes` within this long of its first byte, or its figures
/// are dropped.
pub const QUALIFY_WITHIN: Duration = Duration::from_secs(30 * 60);

/// Distinct client IPs (and sessions) remembered per uid and batch.
pub const MAX_UNIQUE: usize = 256;

/// Lock shards of the in-memory figures.
pub const SHARDS: usize = 16;

/// Per-uid totals kept for `/traffic`'s "reported" view (beyond this, new uids are
/// not listed there; they are still reported).
const MAX_REPORTED_UIDS: usize = 100_000;

/// Largest receiver answer read (the rest is ignored).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Time allowed at shutdown for one last delivery attempt.
const SHUTDOWN_DELIVERY: Duration = Duration::from_secs(3);

/// File-class names used as `file_types` keys.
const CLASS_NAMES: [&str; 5] = ["playlist", "segment", "key", "static", "default"];

fn class_index(c: FileClass) -> usize {
    match c {
        FileClass::Playlist => 0,
        FileClass::Segment => 1,
        FileClass::Key => 2,
        FileClass::Static => 3,
        FileClass::Default => 4,
    }
}

fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// One uid's figures since its last report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Acc {
    bytes: u64,
    requests: u64,
    /// First activity (Unix seconds).
    start: f64,
    /// Last activity (Unix seconds).
    last: f64,
    /// Bytes per file class ([`CLASS_NAMES`] order).
    by_class: [u64; 5],
    /// Hashes of client IPs seen.
    ips: HashSet<u64>,
    /// Hashes of session ids seen.
    sessions: HashSet<u64>,
}

impl Acc {
    fn new(now: f64) -> Acc {
        Acc {
            start: now,
            last: now,
            ..Acc::default()
        }
    }

    fn merge(&mut self, other: &Acc) {
        self.bytes += other.bytes;
        self.requests += other.requests;
        self.start = self.start.min(other.start);
        self.last = self.last.max(other.last);
        for (a, b) in self.by_class.iter_mut().zip(other.by_class) {
            *a += b;
        }
        for ip in &other.ips {
            if self.ips.len() < MAX_UNIQUE {
                self.ips.insert(*ip);
            }
        }
        for s in &other.sessions {
            if self.sessions.len() < MAX_UNIQUE {
                self.sessions.insert(*s);
            }
        }
    }

    /// Removes figures that went into a batch; what remains came after the snapshot.
    fn subtract(&mut self, sent: &Acc) {
        self.bytes = self.bytes.saturating_sub(sent.bytes);
        self.requests = self.requests.saturating_sub(sent.requests);
        for (a, b) in self.by_class.iter_mut().zip(sent.by_class) {
            *a = a.saturating_sub(b);
        }
        self.ips.clear();
        self.sessions.clear();
        self.start = sent.last.max(self.start);
    }

    fn is_empty(&self) -> bool {
        self.bytes == 0 && self.requests == 0
    }

    /// One entry of `traffic_details`.
    fn detail(&self, uid: &str) -> Value {
        let duration = (self.last - self.start).max(0.0);
        let mut types = serde_json::Map::new();
        for (name, b) in CLASS_NAMES.iter().zip(self.by_class) {
            if b > 0 {
                types.insert((*name).into(), b.into());
            }
        }
        json!({
            "uid": uid,
            "total_bytes": self.bytes,
            "total_mb": round2(self.bytes as f64 / 1_048_576.0),
            "request_count": self.requests,
            "duration_seconds": round3(duration),
            "start_time": round3(self.start),
            "last_activity": round3(self.last),
            "file_types": types,
            "unique_ips": self.ips.len(),
            "unique_sessions": self.sessions.len(),
            "avg_bytes_per_request": if self.requests > 0 { round2(self.bytes as f64 / self.requests as f64) } else { 0.0 },
            "bytes_per_second": if duration > 0.0 { round2(self.bytes as f64 / duration) } else { self.bytes as f64 },
        })
    }
}

/// What the payload of a spooled batch says (rebuilt from its JSON after a restart).
#[derive(Debug, Clone)]
struct BatchInfo {
    report_id: String,
    /// `(uid, bytes, requests)`.
    uids: Vec<(String, u64, u64)>,
    bytes: u64,
}

impl BatchInfo {
    fn parse(body: &[u8]) -> Option<BatchInfo> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let report_id = v.get("report_id")?.as_str()?.to_string();
        let uids: Vec<(String, u64, u64)> = v
            .get("traffic_details")?
            .as_array()?
            .iter()
            .filter_map(|d| {
                Some((
                    d.get("uid")?.as_str()?.to_string(),
                    d.get("total_bytes")?.as_u64()?,
                    d.get("request_count")?.as_u64()?,
                ))
            })
            .collect();
        let bytes = uids.iter().map(|u| u.1).sum();
        Some(BatchInfo {
            report_id,
            uids,
            bytes,
        })
    }
}

/// Totals of one uid already reported.
#[derive(Debug, Clone, Default)]
struct Reported {
    bytes: u64,
    requests: u64,
    batches: u64,
    last_unix: f64,
}

/// Delivery state and the views of `/traffic`.
#[derive(Debug, Default)]
struct View {
    /// Spooled batches by name (oldest first).
    spooled: BTreeMap<String, BatchInfo>,
    /// Per-uid totals reported (or, with reporting off, counted).
    reported: HashMap<String, Reported>,
    /// Consecutive failed deliveries.
    failures: u32,
    /// When the last delivery succeeded (Unix seconds).
    last_success: Option<f64>,
    /// The last delivery error (no secrets: status or error kind).
    last_error: Option<String>,
    /// When the next retry is due.
    retry_at: Option<Instant>,
}

impl View {
    fn count_reported(&mut self, info: &BatchInfo, now: f64) {
        for (uid, bytes, requests) in &info.uids {
            if !self.reported.contains_key(uid) && self.reported.len() >= MAX_REPORTED_UIDS {
                continue;
            }
            let r = self.reported.entry(uid.clone()).or_default();
            r.bytes += bytes;
            r.requests += requests;
            r.batches += 1;
            r.last_unix = now;
        }
    }
}

/// The saved not-yet-reported figures.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    saved_at: f64,
    uids: HashMap<String, Acc>,
}

/// The HTTP client of report deliveries.
type ReportClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn report_client() -> anyhow::Result<ReportClient> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

/// The default `worker_id`: `<hostname>:<listen port>`.
pub fn default_worker_id(listen_port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fileproxy".into());
    format!("{host}:{listen_port}")
}

/// The millisecond stamp in a spooled batch name (`batch-<ms>-<report_id>.json`).
fn batch_name_ms(name: &str) -> Option<u64> {
    name.strip_prefix("batch-")?.split('-').next()?.parse().ok()
}

/// The reloadable `[traffic]` settings: receiver, key, pacing and threshold.
struct Settings {
    url: Option<Uri>,
    client: Option<ReportClient>,
    api_key: Secret,
    interval: Duration,
    min_bytes: u64,
    timeout: Duration,
    retry_max: Duration,
}

impl Settings {
    /// Settings from `cfg`; `client` is reused when given (its pooled connections stay).
    fn new(cfg: &TrafficConfig, client: Option<ReportClient>) -> anyhow::Result<Settings> {
        let url = if cfg.report_url.is_empty() {
            None
        } else {
            Some(
                cfg.report_url
                    .parse::<Uri>()
                    .map_err(|e| anyhow::anyhow!("traffic.report_url: {e}"))?,
            )
        };
        let client = match (&url, client) {
            (None, _) => None,
            (Some(_), Some(c)) => Some(c),
            (Some(_), None) => Some(report_client()?),
        };
        Ok(Settings {
            url,
            client,
            api_key: cfg.api_key.clone(),
            interval: Duration::from_secs(cfg.interval_s.max(1)),
            min_bytes: cfg.min_bytes,
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            retry_max: Duration::from_secs(cfg.retry_max_s.max(1)),
        })
    }
}

/// Per-uid traffic: aggregation, batching, spooling and delivery.
pub struct Traffic {
    /// The `[traffic]` settings a `SIGHUP` reload may replace ([`Traffic::reconfigure`]).
    settings: arc_swap::ArcSwap<Settings>,
    worker_id: String,
    shards: Vec<Mutex<HashMap<String, Acc>>>,
    spool: Spool,
    metrics: Arc<Metrics>,
    view: Mutex<View>,
    /// Serialises batch cuts and deliveries (the reporter task and shutdown).
    work: tokio::sync::Mutex<()>,
    /// Millisecond stamp of the newest spooled batch name: names sort in cut order
    /// even when two cuts fall in one millisecond or the clock steps back.
    last_batch_ms: std::sync::atomic::AtomicU64,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic")
            .field("reporting", &self.settings.load().url.is_some())
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave figures half-updated in a way
    // worth refusing service for; keep counting.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Traffic {
    /// Builds the accounting from `[traffic]` (the port of `server.listen` names the
    /// default worker id),
    /// picks up spooled batches and saved figures, and starts the reporter task.
    pub async fn start(
        cfg: &TrafficConfig,
        listen_port: u16,
        store: SharedStore,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Traffic>> {
        let worker_id = if cfg.worker_id.is_empty() {
            default_worker_id(listen_port)
        } else {
            cfg.worker_id.clone()
        };
        let spool = if cfg.spool == "store" {
            Spool::store(store, &worker_id)
        } else {
            // SPEC §11: a durable folder by default, so batches survive a restart even
            // with the in-process store.
            let dir = spool::folder(&cfg.spool_dir, std::env::var_os("STATE_DIRECTORY"));
            Spool::dir(&dir).map_err(|e| {
                anyhow::anyhow!(
                    "traffic.spool_dir = {:?} ({}): {e}",
                    cfg.spool_dir,
                    dir.display()
                )
            })?
        };
        let t = Arc::new(Traffic {
            settings: arc_swap::ArcSwap::from_pointee(Settings::new(cfg, None)?),
            worker_id,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            spool,
            metrics,
            view: Mutex::new(View::default()),
            work: tokio::sync::Mutex::new(()),
            last_batch_ms: std::sync::atomic::AtomicU64::new(0),
            stop: CancellationToken::new(),
            task: Mutex::new(None),
        });
        t.recover().await;
        let runner = Arc::clone(&t);
        let handle = tokio::spawn(async move { runner.run().await });
        *lock(&t.task) = Some(handle);
        Ok(t)
    }

    /// Takes the reloadable `[traffic]` settings of a `SIGHUP` reload (receiver URL and
    /// key, interval, threshold, timeouts); `spool_dir` and `worker_id` stay as started.
    /// Figures counted so far and spooled batches are kept.
    pub fn reconfigure(&self, cfg: &TrafficConfig) -> anyhow::Result<()> {
        let client = self.settings.load().client.clone();
        self.settings.store(Arc::new(Settings::new(cfg, client)?));
        Ok(())
    }

    /// Loads spooled batches and merges saved figures back in.
    async fn recover(&self) {
        match self.spool.load().await {
            Ok(batches) => {
                let mut view = lock(&self.view);
                for (name, body) in batches {
                    if let Some(ms) = batch_name_ms(&name) {
                        self.last_batch_ms.fetch_max(ms, Ordering::Relaxed);
                    }
                    match BatchInfo::parse(&body) {
                        Some(info) => {
                            view.spooled.insert(name, info);
                        }
                        None => {
                            tracing::warn!(batch = %name, "spooled traffic batch unreadable; left in the spool")
                        }
                    }
                }
                if !view.spooled.is_empty() {
                    tracing::info!(
                        batches = view.spooled.len(),
                        "traffic batches waiting in the spool"
                    );
                }
            }
            Err(e) => {
                self.metrics.traffic_spool_errors.inc();
                tracing::error!(error = %e, "traffic spool unreadable: earlier batches not picked up");
            }
        }
        match self.spool.take_pending().await {
            Ok(Some(body)) => match serde_json::from_slice::<Saved>(&body) {
                Ok(saved) => {
                    let n = saved.uids.len();
                    for (uid, acc) in saved.uids {
                        let mut shard = lock(self.shard(&uid));
                        shard.entry(uid).or_default().merge_into_new(&acc);
                    }
                    tracing::info!(
                        uids = n,
                        "traffic figures saved at the last shutdown picked up"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "saved traffic figures unreadable; dropped")
                }
            },
            Ok(None) => {}
            Err(e) => {
                self.metrics.traffic_spool_errors.inc();
                tracing::error!(error = %e, "saved traffic figures could not be taken from the spool; left there for the next start");
            }
        }
    }

    fn shard(&self, uid: &str) -> &Mutex<HashMap<String, Acc>> {
        let i = (hash_of(uid) % SHARDS as u64) as usize;
        &self.shards[i]
    }

    /// Adds one finished transfer to `uid`'s figures.
    pub fn record(
        &self,
        uid: &str,
        bytes: u64,
        class: FileClass,
        ip: IpAddr,
        session: Option<&str>,
    ) {
        let now = unix_f64();
        let ip_h = hash_of(ip);
        let session_h = session.map(hash_of);
        let mut shard = lock(self.shard(uid));
        let acc = match shard.get_mut(uid) {
            Some(a) => a,
            None => shard
                .entry(uid.to_string())
                .or_insert_with(|| Acc::new(now)),
        };
        acc.bytes += bytes;
        acc.requests += 1;
        acc.last = now;
        acc.by_class[class_index(class)] += bytes;
        if acc.ips.len() < MAX_UNIQUE {
            acc.ips.insert(ip_h);
        }
        if let Some(s) = session_h {
            if acc.sessions.len() < MAX_UNIQUE {
                acc.sessions.insert(s);
            }
        }
    }

    /// The reporter: cuts a batch every interval and delivers spooled batches,
    /// retrying with backoff.
    async fn run(self: Arc<Self>) {
        let mut next_cut = tokio::time::Instant::now() + self.settings.load().interval;
        let mut deliver_now = true;
        loop {
            let retry_at = lock(&self.view)
                .retry_at
                .map(tokio::time::Instant::from_std);
            let wake = match retry_at {
                Some(r) if r < next_cut => r,
                _ => next_cut,
            };
            if !deliver_now {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = self.stop.cancelled() => break,
                }
            }
            if self.stop.is_cancelled() {
                break;
            }
            let _work = self.work.lock().await;
            let now = tokio::time::Instant::now();
            if now >= next_cut {
                self.cut().await;
                next_cut = now + self.settings.load().interval;
            }
            let due = lock(&self.view)
                .retry_at
                .map_or(true, |r| Instant::now() >= r);
            if due || deliver_now {
                self.deliver(None).await;
            }
            deliver_now = false;
        }
    }

    /// Cuts a batch of the uids that reached `min_bytes`, spools it, then subtracts
    /// it from memory; drops uids that did not qualify in time. Returns whether a
    /// batch was made.
    async fn cut(&self) -> bool {
        let now = unix_f64();
        let stale_after = QUALIFY_WITHIN.as_secs_f64();
        let mut picked: Vec<(String, Acc)> = Vec::new();
        let (mut dropped_uids, mut dropped_bytes) = (0u64, 0u64);
        let min_bytes = self.settings.load().min_bytes;
        for shard in &self.shards {
            let mut m = lock(shard);
            m.retain(|uid, acc| {
                if acc.bytes >= min_bytes && acc.bytes > 0 {
                    picked.push((uid.clone(), acc.clone()));
                    true
                } else if now - acc.start >= stale_after {
                    dropped_uids += 1;
                    dropped_bytes += acc.bytes;
                    false
                } else {
                    true
                }
            });
        }
        if dropped_uids > 0 {
            self.metrics.traffic_dropped_uids.inc_by(dropped_uids);
            self.metrics.traffic_dropped_bytes.inc_by(dropped_bytes);
            tracing::info!(
                uids = dropped_uids,
                bytes = dropped_bytes,
                "traffic of uids that never reached traffic.min_bytes dropped"
            );
        }
        if picked.is_empty() {
            return false;
        }
        picked.sort_by(|a, b| a.0.cmp(&b.0));
        let report_id = uuid::Uuid::new_v4().to_string();
        let body = self.payload(&report_id, now, &picked);
        let info = BatchInfo {
            report_id: report_id.clone(),
            uids: picked
                .iter()
                .map(|(u, a)| (u.clone(), a.bytes, a.requests))
                .collect(),
            bytes: picked.iter().map(|(_, a)| a.bytes).sum(),
        };
        if self.settings.load().url.is_some() {
            let wall_ms = (now * 1000.0) as u64;
            let next = |prev: u64| wall_ms.max(prev.saturating_add(1));
            let prev =
                match self
                    .last_batch_ms
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(next(p)))
                {
                    Ok(p) | Err(p) => p,
                };
            let ms = next(prev);
            let name = format!("batch-{ms:015}-{report_id}.json");
            if let Err(e) = self.spool.put(&name, &body).await {
                // Figures stay in memory: the next cut includes them in a new batch.
                self.metrics.traffic_spool_errors.inc();
                tracing::error!(error = %e, "traffic batch could not be spooled; kept in memory");
                return false;
            }
            lock(&self.view).spooled.insert(name, info);
        } else {
            lock(&self.view).count_reported(&info, now);
        }
        for (uid, sent) in &picked {
            let mut m = lock(self.shard(uid));
            if let Some(acc) = m.get_mut(uid) {
                acc.subtract(sent);
                if acc.is_empty() {
                    m.remove(uid);
                }
            }
        }
        true
    }

    /// The JSON body of a batch (SPEC §5 fields plus `report_id`).
    fn payload(&self, report_id: &str, now: f64, picked: &[(String, Acc)]) -> Vec<u8> {
        let total_bytes: u64 = picked.iter().map(|(_, a)| a.bytes).sum();
        let total_requests: u64 = picked.iter().map(|(_, a)| a.requests).sum();
        let settings = self.settings.load();
        let details: Vec<Value> = picked.iter().map(|(u, a)| a.detail(u)).collect();
        let body = json!({
            "report_id": report_id,
            "timestamp": now as i64,
            "worker_id": self.worker_id,
            "report_interval_seconds": settings.interval.as_secs(),
            "min_bytes_threshold": settings.min_bytes,
            "total_qualified_uids": picked.len(),
            "traffic_details": details,
            "summary": {
                "total_bytes": total_bytes,
                "total_mb": round2(total_bytes as f64 / 1_048_576.0),
                "total_requests": total_requests,
                "avg_bytes_per_uid": round2(total_bytes as f64 / picked.len().max(1) as f64),
                "report_generated_at": iso8601(now as i64),
            },
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// Sends spooled batches oldest first until one fails; `limit` bounds the whole
    /// round (shutdown). Updates the backoff.
    async fn deliver(&self, limit: Option<Duration>) {
        let settings = self.settings.load_full();
        let (Some(url), Some(client)) = (&settings.url, &settings.client) else {
            return;
        };
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            let next = lock(&self.view)
                .spooled
                .iter()
                .next()
                .map(|(n, i)| (n.clone(), i.clone()));
            let Some((name, info)) = next else {
                lock(&self.view).retry_at = None;
                return;
            };
            let body = match self.spool_body(&name).await {
                Some(b) => b,
                None => {
                    // Gone from the spool (removed elsewhere or expired): forget it.
                    lock(&self.view).spooled.remove(&name);
                    continue;
                }
            };
            let mut timeout = settings.timeout;
            if let Some(d) = deadline {
                timeout = timeout.min(d.saturating_duration_since(Instant::now()));
            }
            match self
                .post(client, url, settings.api_key.expose(), body, timeout)
                .await
            {
                Ok(()) => {
                    self.metrics.traffic_reports_ok.inc();
                    self.metrics.traffic_reported_bytes.inc_by(info.bytes);
                    {
                        let mut v = lock(&self.view);
                        v.spooled.remove(&name);
                        v.count_reported(&info, unix_f64());
                        v.failures = 0;
                        v.last_success = Some(unix_f64());
                        v.last_error = None;
                    }
                    tracing::debug!(report_id = %info.report_id, uids = info.uids.len(), bytes = info.bytes, "traffic report delivered");
                    if let Err(e) = self.spool.remove(&name).await {
                        // Left on disk it would be sent again after a restart with the
                        // same report_id, which receivers ignore.
                        self.metrics.traffic_spool_errors.inc();
                        tracing::error!(error = %e, batch = %name, "delivered traffic batch could not be removed from the spool");
                    }
                }
                Err(why) => {
                    self.metrics.traffic_reports_failed.inc();
                    let mut v = lock(&self.view);
                    v.failures = v.failures.saturating_add(1);
                    let backoff = Duration::from_secs(1u64 << v.failures.saturating_sub(1).min(20))
                        .min(settings.retry_max);
                    v.retry_at = Some(Instant::now() + backoff);
                    tracing::warn!(report_id = %info.report_id, error = %why, retry_in_s = backoff.as_secs(), waiting = v.spooled.len(), "traffic report not delivered; will retry");
                    v.last_error = Some(why);
                    return;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
        }
    }

    /// The spooled body of batch `name` (re-read so a retry sends the same bytes).
    async fn spool_body(&self, name: &str) -> Option<Vec<u8>> {
        match self.spool.load_one(name).await {
            Ok(b) => b,
            Err(e) => {
                self.metrics.traffic_spool_errors.inc();
                tracing::error!(error = %e, batch = %name, "spooled traffic batch unreadable");
                None
            }
        }
    }

    /// One `POST` of a batch; `Ok` only on HTTP 200.
    async fn post(
        &self,
        client: &ReportClient,
        url: &Uri,
        api_key: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut req = Request::post(url.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {api_key}")) {
            h.insert(header::AUTHORIZATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&(unix_f64() as u64).to_string()) {
            h.insert("x-report-time", v);
        }
        let attempt = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| format!("receiver unreachable: {e}"))?;
            let status = resp.status();
            // Read (a bounded part of) the answer so the connection can be reused.
            let _ = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            if status == StatusCode::OK {
                Ok(())
            } else {
                Err(format!("receiver answered {status}"))
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("receiver timed out after {timeout:?}")),
        }
    }

    /// Stops the reporter, spools the last batch, tries one delivery, and saves the
    /// figures below the threshold for the next start.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let task = lock(&self.task).take();
        if let Some(t) = task {
            if tokio::time::timeout(self.settings.load().timeout + Duration::from_secs(1), t)
                .await
                .is_err()
            {
                tracing::warn!("traffic reporter did not stop in time");
            }
        }
        let _work = self.work.lock().await;
        self.cut().await;
        self.deliver(Some(SHUTDOWN_DELIVERY)).await;
        let mut saved = Saved {
            saved_at: unix_f64(),
            uids: HashMap::new(),
        };
        for shard in &self.shards {
            saved.uids.extend(lock(shard).drain());
        }
        if saved.uids.is_empty() {
            return;
        }
        let n = saved.uids.len();
        let body = serde_json::to_vec(&saved).unwrap_or_default();
        match self.spool.save_pending(&body).await {
            Ok(()) => tracing::info!(
                uids = n,
                "traffic figures below the threshold saved for the next start"
            ),
            Err(e) => {
                self.metrics.traffic_spool_errors.inc();
                tracing::error!(error = %e, uids = n, "traffic figures below the threshold could not be saved");
            }
        }
    }

    /// `(pending uids, pending bytes, spooled batches)` for `/metrics`.
    pub fn gauges(&self) -> (u64, u64, u64) {
        let (mut uids, mut bytes) = (0u64, 0u64);
        for shard in &self.shards {
            let m = lock(shard);
            uids += m.len() as u64;
            bytes += m.values().map(|a| a.bytes).sum::<u64>();
        }
        let spooled = lock(&self.view).spooled.len() as u64;
        (uids, bytes, spooled)
    }

    /// The JSON of `/traffic` (per-uid lists sorted by bytes, at most `limit` each).
    pub fn view_json(&self, limit: usize) -> Value {
        let now = unix_f64();
        let mut pending: Vec<(String, Acc)> = Vec::new();
        for shard in &self.shards {
            pending.extend(lock(shard).iter().map(|(u, a)| (u.clone(), a.clone())));
        }
        let pending_total: u64 = pending.iter().map(|(_, a)| a.bytes).sum();
        let pending_uids = pending.len();
        let settings = self.settings.load_full();
        pending.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then_with(|| a.0.cmp(&b.0)));
        let pending: Vec<Value> = pending
            .iter()
            .take(limit)
            .map(|(u, a)| {
                json!({
                    "uid": u,
                    "bytes": a.bytes,
                    "requests": a.requests,
                    "qualified": a.bytes >= settings.min_bytes && a.bytes > 0,
                    "age_s": round2((now - a.start).max(0.0)),
                    "idle_s": round2((now - a.last).max(0.0)),
                })
            })
            .collect();
        let v = lock(&self.view);
        let mut spooled_by_uid: HashMap<&str, u64> = HashMap::new();
        for info in v.spooled.values() {
            for (u, b, _) in &info.uids {
                *spooled_by_uid.entry(u.as_str()).or_default() += b;
            }
        }
        let mut spooled: Vec<(&str, u64)> = spooled_by_uid.into_iter().collect();
        spooled.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let mut reported: Vec<(&String, &Reported)> = v.reported.iter().collect();
        reported.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then_with(|| a.0.cmp(b.0)));
        let retry_in = v
            .retry_at
            .map(|r| round2(r.saturating_duration_since(Instant::now()).as_secs_f64()));
        json!({
            "reporting": {
                "enabled": settings.url.is_some(),
                "report_url": settings.url.as_ref().map(redact_uri),
                "worker_id": self.worker_id,
                "interval_s": settings.interval.as_secs(),
                "min_bytes": settings.min_bytes,
                "spool": match &self.spool { Spool::Dir(_) => "dir", Spool::Store { .. } => "store" },
                "spooled_batches": v.spooled.len(),
                "spooled_report_ids": v.spooled.values().take(limit).map(|i| i.report_id.clone()).collect::<Vec<_>>(),
                "consecutive_failures": v.failures,
                "last_success_unix": v.last_success.map(round3),
                "last_error": v.last_error,
                "retry_in_s": retry_in,
            },
            "pending": {
                "uids": pending_uids,
                "bytes": pending_total,
                "top": pending,
            },
            "spooled": spooled.iter().take(limit).map(|(u, b)| json!({"uid": u, "bytes": b})).collect::<Vec<_>>(),
            "reported": reported.iter().take(limit).map(|(u, r)| json!({
                "uid": u, "bytes": r.bytes, "requests": r.requests, "batches": r.batches,
                "last_report_unix": round3(r.last_unix),
            })).collect::<Vec<_>>(),
            "dropped": {
                "uids": self.metrics.traffic_dropped_uids.get(),
                "bytes": self.metrics.traffic_dropped_bytes.get(),
            },
        })
    }
}

impl Acc {
    /// Merges saved figures into a fresh default entry (keeps their start time).
    fn merge_into_new(&mut self, saved: &Acc) {
        if self.is_empty() && self.start == 0.0 {
            *self = saved.clone();
        } else {
            self.merge(saved);
        }
    }
}

/// `scheme://host[:port]/path` of a URL, without credentials or query.
fn redact_uri(u: &Uri) -> String {
    let host = u.host().unwrap_or("");
    let port = u.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{host}{port}{}",
        u.scheme_str().unwrap_or("http"),
        u.path()
    )
}

#[cfg(test)]
mod tests;
