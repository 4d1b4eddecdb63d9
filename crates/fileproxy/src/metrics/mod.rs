//! The figures of SPEC §5, kept as lock-free counters and histograms and exposed as
//! Prometheus text on `/metrics` and as JSON on `/stats`.
//!
//! **Crate choice.** `prometheus-client` (the Prometheus project's own Rust client) holds
//! the registry and writes the exposition text. It has no global recorder, so every
//! The application state owns its registry (tests run several in one process), its
//! counters and gauges can be read back for `/stats` from the very same atomics, and
//! it pulls in three small crates. `metrics` + `metrics-exporter-prometheus` was the
//! alternative: its handles are write-only (`/stats` would need a second copy of every
//! figure), it needs a global or thread-local recorder and a periodic upkeep task.
//! Latency histograms are our own [`LatencyHistogram`] (plugged into the registry via
//! its `EncodeMetric` trait) because `/stats` must read their buckets back.
//!
//! **Hot path.** Every label combination known in advance (route class × status class,
//! store operation, …) is resolved once at start-up into a plain handle, so recording a
//! request is a handful of relaxed atomic adds: no lock, no hash lookup, no allocation.
//! Label sets only known at run time (denial reasons) go through a `Family`, on the
//! refusal path only.
//!
//! **Names** (all prefixed `fileproxy_`; counters carry `_total` in the exposition):
//! `requests{route,status}`, `client_closed{route}`, `response_bytes{route}`,
//! `time_to_first_byte_seconds{route}`, `time_to_last_byte_seconds{route}`,
//! `sessions{outcome}`, `whitelist_lookups{result}`, `access_denials{reason}`,
//! `playlist_denials{reason}`, `store_operation_seconds{op}`, `store_errors{op}`,
//! `traffic_dropped_uids`, `traffic_dropped_bytes`, `traffic_reports{result}`,
//! `traffic_reported_bytes`, `traffic_spool_errors`, `access_log_dropped_lines`,
//! `config_reloads{result}`, and the
//! gauges read at scrape time: `active_connections`, `active_transfers`,
//! `origin_in_flight`, `origin_idle_connections`, `origin_open_connections`,
//! `origin_connections_opened`, `origin_connect_timeouts`, `traffic_pending_uids`,
//! `traffic_pending_bytes`, `traffic_spooled_batches`, `uptime_seconds`, `build_info`.

pub mod exposition;
pub mod histogram;
pub mod timed_store;
pub mod window;

use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::access::classify::FileClass;
use crate::access::DenyReason;
use crate::origin::PoolState;

pub use histogram::{HistSnapshot, LatencyHistogram};

/// `Content-Type` of [`Metrics::render`]'s text (OpenMetrics); `/metrics` negotiates
/// between it and the text format 0.0.4 in [`exposition`].
pub const CONTENT_TYPE: &str = exposition::OPENMETRICS;

/// Which kind of route a request took (the `route` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `.m3u8`.
    Playlist,
    /// `.ts`.
    Segment,
    /// `enc.key`.
    Key,
    /// Images, styles, scripts, fonts.
    Static,
    /// Any other viewer path.
    Default,
    /// `/api/…` (admission APIs).
    Api,
    /// Admin routes and `/health`.
    Admin,
}

impl Route {
    /// Every route class, in label order.
    pub const ALL: [Route; 7] = [
        Route::Playlist,
        Route::Segment,
        Route::Key,
        Route::Static,
        Route::Default,
        Route::Api,
        Route::Admin,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Playlist => "playlist",
            Route::Segment => "segment",
            Route::Key => "key",
            Route::Static => "static",
            Route::Default => "default",
            Route::Api => "api",
            Route::Admin => "admin",
        }
    }

    /// Position in [`Route::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The route of a viewer path's suffix class.
    pub fn from_class(c: FileClass) -> Route {
        match c {
            FileClass::Playlist => Route::Playlist,
            FileClass::Segment => Route::Segment,
            FileClass::Key => Route::Key,
            FileClass::Static => Route::Static,
            FileClass::Default => Route::Default,
        }
    }
}

/// Labels of the `status` class.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`STATUS_CLASSES`] of an HTTP status code.
pub fn status_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, STATUS_CLASSES.len()) - 1
}

/// A store operation (the `op` label of the store metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// `get_many`.
    GetMany,
    /// `get`.
    Get,
    /// `write`.
    Write,
    /// `set`.
    Set,
    /// `ttl`.
    Ttl,
    /// `incr_window`.
    IncrWindow,
    /// `compare_and_set`.
    CompareAndSet,
    /// `push_capped`.
    PushCapped,
    /// `list_range`.
    ListRange,
    /// `ping`.
    Ping,
    /// `touch_member` (concurrent streams, SPEC §13).
    TouchMember,
    /// `members_since`.
    MembersSince,
    /// `incr_by_once` (traffic quota, SPEC §13).
    IncrByOnce,
}

impl StoreOp {
    /// Every operation, in label order.
    pub const ALL: [StoreOp; 13] = [
        StoreOp::GetMany,
        StoreOp::Get,
        StoreOp::Write,
        StoreOp::Set,
        StoreOp::Ttl,
        StoreOp::IncrWindow,
        StoreOp::CompareAndSet,
        StoreOp::PushCapped,
        StoreOp::ListRange,
        StoreOp::Ping,
        StoreOp::TouchMember,
        StoreOp::MembersSince,
        StoreOp::IncrByOnce,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::GetMany => "get_many",
            StoreOp::Get => "get",
            StoreOp::Write => "write",
            StoreOp::Set => "set",
            StoreOp::Ttl => "ttl",
            StoreOp::IncrWindow => "incr_window",
            StoreOp::CompareAndSet => "compare_and_set",
            StoreOp::PushCapped => "push_capped",
            StoreOp::ListRange => "list_range",
            StoreOp::Ping => "ping",
            StoreOp::TouchMember => "touch_member",
            StoreOp::MembersSince => "members_since",
            StoreOp::IncrByOnce => "incr_by_once",
        }
    }

    /// Position in [`StoreOp::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Result of a whitelist lookup (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhitelistResult {
    /// An entry admitted the key path.
    Hit,
    /// No entry, or none admitting the key path (or no key path at all).
    Miss,
    /// The client IP is in `auth.fixed_ip_whitelist`.
    Fixed,
    /// Skip-validation suffix: no lookup made.
    Skipped,
    /// The path whitelist refused, a static-file admission (SPEC §9) let it through.
    Static,
    /// The path whitelist refused, a front-end (JS) admission (SPEC §9) let it through.
    Js,
}

impl WhitelistResult {
    const ALL: [WhitelistResult; 6] = [
        WhitelistResult::Hit,
        WhitelistResult::Miss,
        WhitelistResult::Fixed,
        WhitelistResult::Skipped,
        WhitelistResult::Static,
        WhitelistResult::Js,
    ];

    fn as_str(self) -> &'static str {
        match self {
            WhitelistResult::Hit => "hit",
            WhitelistResult::Miss => "miss",
            WhitelistResult::Fixed => "fixed",
            WhitelistResult::Skipped => "skipped",
            WhitelistResult::Static => "static_admission",
            WhitelistResult::Js => "js_admission",
        }
    }

    /// Position in [`WhitelistResult::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

/// One label pair.
type Label = [(&'static str, &'static str); 1];
/// Two label pairs.
type Labels2 = [(&'static str, &'static str); 2];

/// Figures read at scrape time from the parts that own them.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Open client connections.
    pub connections: u64,
    /// Response bodies being sent.
    pub transfers: u64,
    /// Origin pool figures.
    pub pool: PoolState,
    /// Uids with traffic not yet reported.
    pub traffic_pending_uids: u64,
    /// Bytes not yet reported.
    pub traffic_pending_bytes: u64,
    /// Report batches waiting in the spool.
    pub traffic_spooled_batches: u64,
    /// Seconds since start.
    pub uptime: Duration,
}

/// Every metric of the process (see the module docs for names).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: [[Counter; STATUS_CLASSES.len()]; Route::ALL.len()],
    client_closed: [Counter; Route::ALL.len()],
    bytes: [Counter; Route::ALL.len()],
    ttfb: [LatencyHistogram; Route::ALL.len()],
    ttlb: [LatencyHistogram; Route::ALL.len()],
    sessions_created: Counter,
    sessions_reused: Counter,
    whitelist: [Counter; WhitelistResult::ALL.len()],
    denials: Family<Label, Counter>,
    playlist_denials: Family<Label, Counter>,
    store_latency: [LatencyHistogram; StoreOp::ALL.len()],
    store_errors: [Counter; StoreOp::ALL.len()],
    /// Uids whose traffic was dropped (never reached `min_bytes` within 30 minutes).
    pub traffic_dropped_uids: Counter,
    /// Bytes dropped with them.
    pub traffic_dropped_bytes: Counter,
    /// Report deliveries answered 200.
    pub traffic_reports_ok: Counter,
    /// Report deliveries that failed (error, timeout or non-200).
    pub traffic_reports_failed: Counter,
    /// Bytes in batches the receiver accepted.
    pub traffic_reported_bytes: Counter,
    /// Spool writes or removals that failed.
    pub traffic_spool_errors: Counter,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Counters of the SPEC §11 bounds (connections, origin slots, background writes).
    pub overload: crate::overload::OverloadMetrics,
    /// The segment cache's figures (SPEC §12).
    pub cache: crate::cache::CacheMetrics,
    /// Viewer connections `sockets.congestion_control` was set on.
    pub congestion_configured: Counter,
    /// Viewer connections left at the system's congestion control (a near peer, none
    /// configured, or the algorithm not available).
    pub congestion_system_default: Counter,
    /// `SIGHUP` reloads that took effect.
    pub config_reloads_ok: Counter,
    /// `SIGHUP` reloads refused (the file did not load or validate; nothing changed).
    pub config_reloads_failed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fileproxy");
        let requests_f = Family::<Labels2, Counter>::default();
        let closed_f = Family::<Label, Counter>::default();
        let bytes_f = Family::<Label, Counter>::default();
        let ttfb_f = Family::<Label, LatencyHistogram>::default();
        let ttlb_f = Family::<Label, LatencyHistogram>::default();
        let sessions_f = Family::<Label, Counter>::default();
        let whitelist_f = Family::<Label, Counter>::default();
        let store_lat_f = Family::<Label, LatencyHistogram>::default();
        let store_err_f = Family::<Label, Counter>::default();
        let denials = Family::<Label, Counter>::default();
        let playlist_denials = Family::<Label, Counter>::default();

        let route = |r: usize| Route::ALL[r].as_str();
        let requests = std::array::from_fn(|r| {
            std::array::from_fn(|s| {
                requests_f
                    .get_or_create(&[("route", route(r)), ("status", STATUS_CLASSES[s])])
                    .clone()
            })
        });
        let client_closed =
            std::array::from_fn(|r| closed_f.get_or_create(&[("route", route(r))]).clone());
        let bytes = std::array::from_fn(|r| bytes_f.get_or_create(&[("route", route(r))]).clone());
        let ttfb = std::array::from_fn(|r| ttfb_f.get_or_create(&[("route", route(r))]).clone());
        let ttlb = std::array::from_fn(|r| ttlb_f.get_or_create(&[("route", route(r))]).clone());
        let sessions_created = sessions_f.get_or_create(&[("outcome", "created")]).clone();
        let sessions_reused = sessions_f.get_or_create(&[("outcome", "reused")]).clone();
        let whitelist = std::array::from_fn(|i| {
            whitelist_f
                .get_or_create(&[("result", WhitelistResult::ALL[i].as_str())])
                .clone()
        });
        let store_latency = std::array::from_fn(|i| {
            store_lat_f
                .get_or_create(&[("op", StoreOp::ALL[i].as_str())])
                .clone()
        });
        let store_errors = std::array::from_fn(|i| {
            store_err_f
                .get_or_create(&[("op", StoreOp::ALL[i].as_str())])
                .clone()
        });

        registry.register(
            "requests",
            "Requests answered, by route class and status class",
            requests_f,
        );
        registry.register(
            "client_closed",
            "Transfers the viewer abandoned before the end (logged as 499)",
            closed_f,
        );
        registry.register(
            "response_bytes",
            "Response body bytes delivered to viewers' connections",
            bytes_f,
        );
        registry.register(
            "time_to_first_byte_seconds",
            "Time from request arrival to the first body byte (or to the response head when there is no body)",
            ttfb_f,
        );
        registry.register(
            "time_to_last_byte_seconds",
            "Time from request arrival to the end of the response",
            ttlb_f,
        );
        registry.register(
            "sessions",
            "Viewer sessions created or reused by allowed requests",
            sessions_f,
        );
        registry.register(
            "whitelist_lookups",
            "Whitelist decisions of viewer requests (hit, miss, fixed IP, skipped suffix)",
            whitelist_f,
        );
        registry.register(
            "access_denials",
            "Viewer requests refused by the access policy, by reason",
            denials.clone(),
        );
        registry.register(
            "playlist_denials",
            "Playlist requests refused by the playlist checks, by reason",
            playlist_denials.clone(),
        );
        registry.register(
            "store_operation_seconds",
            "Latency of store operations, by operation",
            store_lat_f,
        );
        registry.register(
            "store_errors",
            "Store operations that failed or timed out, by operation",
            store_err_f,
        );
        let traffic_dropped_uids = Counter::default();
        let traffic_dropped_bytes = Counter::default();
        let traffic_reports = Family::<Label, Counter>::default();
        let traffic_reports_ok = traffic_reports.get_or_create(&[("result", "ok")]).clone();
        let traffic_reports_failed = traffic_reports
            .get_or_create(&[("result", "failed")])
            .clone();
        let traffic_reported_bytes = Counter::default();
        let traffic_spool_errors = Counter::default();
        let access_log_dropped = Counter::default();
        registry.register(
            "traffic_dropped_uids",
            "Uids whose traffic was dropped because they did not reach traffic.min_bytes within 30 minutes",
            traffic_dropped_uids.clone(),
        );
        registry.register(
            "traffic_dropped_bytes",
            "Bytes of uids that never qualified for a traffic report",
            traffic_dropped_bytes.clone(),
        );
        registry.register(
            "traffic_reports",
            "Traffic report deliveries, by result",
            traffic_reports,
        );
        registry.register(
            "traffic_reported_bytes",
            "Bytes in traffic report batches accepted by the receiver",
            traffic_reported_bytes.clone(),
        );
        registry.register(
            "traffic_spool_errors",
            "Traffic spool writes or removals that failed",
            traffic_spool_errors.clone(),
        );
        registry.register(
            "access_log_dropped_lines",
            "Access-log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let overload = crate::overload::OverloadMetrics::register(&mut registry);
        let cache = crate::cache::CacheMetrics::default();
        cache.register(&mut registry);
        let congestion_f = Family::<Label, Counter>::default();
        let congestion_configured = congestion_f
            .get_or_create(&[("applied", "configured")])
            .clone();
        let congestion_system_default = congestion_f
            .get_or_create(&[("applied", "system_default")])
            .clone();
        registry.register(
            "connections_congestion_control",
            "Viewer connections by the congestion control they got: configured (sockets.congestion_control) or system_default (a peer nearer than sockets.congestion_control_min_rtt_us, none configured, or not available)",
            congestion_f,
        );
        let reloads_f = Family::<Label, Counter>::default();
        let config_reloads_ok = reloads_f.get_or_create(&[("result", "ok")]).clone();
        let config_reloads_failed = reloads_f.get_or_create(&[("result", "failed")]).clone();
        registry.register(
            "config_reloads",
            "Configuration reloads on SIGHUP, by result (failed: the old configuration stays)",
            reloads_f,
        );
        Metrics {
            registry,
            requests,
            client_closed,
            bytes,
            ttfb,
            ttlb,
            sessions_created,
            sessions_reused,
            whitelist,
            denials,
            playlist_denials,
            store_latency,
            store_errors,
            traffic_dropped_uids,
            traffic_dropped_bytes,
            traffic_reports_ok,
            traffic_reports_failed,
            traffic_reported_bytes,
            traffic_spool_errors,
            access_log_dropped,
            overload,
            cache,
            congestion_configured,
            congestion_system_default,
            config_reloads_ok,
            config_reloads_failed,
        }
    }

    /// Records one finished response.
    pub fn record_response(
        &self,
        route: Route,
        status: u16,
        bytes: u64,
        first_byte: Duration,
        last_byte: Duration,
        client_closed: bool,
    ) {
        let r = route.index();
        self.requests[r][status_class(status)].inc();
        if bytes > 0 {
            self.bytes[r].inc_by(bytes);
        }
        self.ttfb[r].observe(first_byte);
        self.ttlb[r].observe(last_byte);
        if client_closed {
            self.client_closed[r].inc();
        }
    }

    /// Counts a session created (`true`) or reused.
    pub fn record_session(&self, created: bool) {
        if created {
            self.sessions_created.inc();
        } else {
            self.sessions_reused.inc();
        }
    }

    /// Counts a whitelist decision.
    pub fn record_whitelist(&self, result: WhitelistResult) {
        self.whitelist[result.index()].inc();
    }

    /// Counts a refusal by the access policy; playlist reasons are counted twice
    /// (all denials, and playlist denials).
    pub fn record_denial(&self, reason: DenyReason) {
        let label = reason.as_str();
        self.denials.get_or_create(&[("reason", label)]).inc();
        if label.starts_with("playlist_") {
            self.playlist_denials
                .get_or_create(&[("reason", label)])
                .inc();
        }
        match reason {
            DenyReason::NoKeyPath
            | DenyReason::WhitelistNoEntry
            | DenyReason::WhitelistPathNotAdmitted => self.record_whitelist(WhitelistResult::Miss),
            _ => {}
        }
    }

    /// Records one store operation.
    pub fn record_store(&self, op: StoreOp, took: Duration, ok: bool) {
        let i = op.index();
        self.store_latency[i].observe(took);
        if !ok {
            self.store_errors[i].inc();
        }
    }

    /// The OpenMetrics text exposition: registered metrics plus the live gauges.
    pub fn render(&self, live: &Live) -> String {
        let mut out = String::with_capacity(32 * 1024);
        let scrape = live_registry(live);
        // Writing into a String cannot fail; an encoder error would only truncate.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &scrape);
        let _ = encode_eof(&mut out);
        out
    }

    /// Cumulative figures now, for `/stats` and its time window.
    pub fn totals(&self, live: &Live) -> Totals {
        let mut t = Totals {
            connections: live.connections,
            transfers: live.transfers,
            sessions_created: self.sessions_created.get(),
            sessions_reused: self.sessions_reused.get(),
            ..Totals::default()
        };
        for r in 0..Route::ALL.len() {
            for (s, c) in self.requests[r].iter().enumerate() {
                let n = c.get();
                t.requests += n;
                t.by_status[s] += n;
                t.by_route[r] += n;
            }
            t.bytes += self.bytes[r].get();
            t.client_closed += self.client_closed[r].get();
            t.ttfb.add(&self.ttfb[r].snapshot());
            t.ttlb.add(&self.ttlb[r].snapshot());
        }
        for h in &self.store_latency {
            t.store.add(&h.snapshot());
        }
        t.store_errors = self.store_errors.iter().map(Counter::get).sum();
        t
    }

    /// Per-label figures for the JSON of `/stats`.
    pub fn breakdown(&self) -> serde_json::Value {
        let mut routes = serde_json::Map::new();
        for (r, route) in Route::ALL.iter().enumerate() {
            let mut statuses = serde_json::Map::new();
            for (s, c) in self.requests[r].iter().enumerate() {
                statuses.insert(STATUS_CLASSES[s].into(), c.get().into());
            }
            let ttlb = self.ttlb[r].snapshot();
            routes.insert(
                route.as_str().into(),
                serde_json::json!({
                    "requests": statuses,
                    "bytes": self.bytes[r].get(),
                    "client_closed": self.client_closed[r].get(),
                    "time_to_first_byte_ms": percentiles_ms(&self.ttfb[r].snapshot()),
                    "time_to_last_byte_ms": percentiles_ms(&ttlb),
                }),
            );
        }
        let family = |f: &Family<Label, Counter>| {
            let mut m = serde_json::Map::new();
            // Reasons are few; reading them goes through the family's lock once.
            for reason in DenyReason::ALL.map(DenyReason::as_str) {
                let v = f.get(&[("reason", reason)]).map(|c| c.get()).unwrap_or(0);
                if v > 0 {
                    m.insert(reason.to_string(), v.into());
                }
            }
            serde_json::Value::Object(m)
        };
        let mut store = serde_json::Map::new();
        for (i, op) in StoreOp::ALL.iter().enumerate() {
            let s = self.store_latency[i].snapshot();
            if s.count() > 0 || self.store_errors[i].get() > 0 {
                store.insert(
                    op.as_str().into(),
                    serde_json::json!({
                        "count": s.count(),
                        "errors": self.store_errors[i].get(),
                        "latency_ms": percentiles_ms(&s),
                    }),
                );
            }
        }
        let mut whitelist = serde_json::Map::new();
        for (i, w) in WhitelistResult::ALL.iter().enumerate() {
            whitelist.insert(w.as_str().into(), self.whitelist[i].get().into());
        }
        serde_json::json!({
            "routes": routes,
            "sessions": {
                "created": self.sessions_created.get(),
                "reused": self.sessions_reused.get(),
            },
            "whitelist": whitelist,
            "access_denials": family(&self.denials),
            "playlist_denials": family(&self.playlist_denials),
            "store": store,
            "traffic": {
                "dropped_uids": self.traffic_dropped_uids.get(),
                "dropped_bytes": self.traffic_dropped_bytes.get(),
                "reports_ok": self.traffic_reports_ok.get(),
                "reports_failed": self.traffic_reports_failed.get(),
                "reported_bytes": self.traffic_reported_bytes.get(),
                "spool_errors": self.traffic_spool_errors.get(),
            },
            "access_log_dropped_lines": self.access_log_dropped.get(),
        })
    }
}

/// `{p50, p95, p99, mean}` in milliseconds (nulls without observations).
pub fn percentiles_ms(s: &HistSnapshot) -> serde_json::Value {
    let ms = |v: Option<f64>| v.map(|x| (x * 1e6).round() / 1e3);
    serde_json::json!({
        "count": s.count(),
        "p50": ms(s.quantile(0.50)),
        "p95": ms(s.quantile(0.95)),
        "p99": ms(s.quantile(0.99)),
        "mean": ms(s.mean()),
    })
}

/// Cumulative figures at one moment (summed over labels).
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Requests answered.
    pub requests: u64,
    /// Requests by status class (index of [`STATUS_CLASSES`]).
    pub by_status: [u64; STATUS_CLASSES.len()],
    /// Requests by route (index of [`Route::ALL`]).
    pub by_route: [u64; Route::ALL.len()],
    /// Body bytes delivered.
    pub bytes: u64,
    /// Client-closed transfers.
    pub client_closed: u64,
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions reused.
    pub sessions_reused: u64,
    /// Store operations that failed.
    pub store_errors: u64,
    /// Open client connections (a gauge).
    pub connections: u64,
    /// Bodies being sent (a gauge).
    pub transfers: u64,
    /// Time to first byte, all routes.
    pub ttfb: HistSnapshot,
    /// Time to last byte, all routes.
    pub ttlb: HistSnapshot,
    /// Store operation latency, all operations.
    pub store: HistSnapshot,
}

/// A registry of the figures owned elsewhere, built for one scrape.
fn live_registry(live: &Live) -> Registry {
    let mut r = Registry::with_prefix("fileproxy");
    let g = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    r.register(
        "active_connections",
        "Open client connections",
        g(live.connections),
    );
    r.register(
        "active_transfers",
        "Response bodies being sent",
        g(live.transfers),
    );
    r.register(
        "origin_in_flight",
        "Origin fetches in flight (pool connections in use)",
        g(live.pool.in_flight),
    );
    r.register(
        "origin_open_connections",
        "Origin connections open (in use or idle in the pool)",
        g(live.pool.open_connections),
    );
    r.register(
        "origin_idle_connections",
        "Origin connections idle in the pool",
        g(live.pool.idle_connections),
    );
    r.register(
        "origin_connections_opened",
        "Origin connections opened",
        ConstCounter::new(live.pool.connections_opened),
    );
    r.register(
        "origin_connect_timeouts",
        "Origin connect attempts that timed out",
        ConstCounter::new(live.pool.connect_timeouts),
    );
    r.register(
        "traffic_pending_uids",
        "Uids with traffic not yet in a report batch",
        g(live.traffic_pending_uids),
    );
    r.register(
        "traffic_pending_bytes",
        "Bytes not yet in a report batch",
        g(live.traffic_pending_bytes),
    );
    r.register(
        "traffic_spooled_batches",
        "Traffic report batches waiting for delivery",
        g(live.traffic_spooled_batches),
    );
    r.register(
        "uptime_seconds",
        "Seconds since the process started",
        g(live.uptime.as_secs()),
    );
    r.register(
        "build",
        "Build information (always 1)",
        prometheus_client::metrics::info::Info::new(vec![(
            "version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_class(200)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(499)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class(504)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(99)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(999)], "5xx");
    }

    #[test]
    fn render_has_every_family_and_eof() {
        let m = Metrics::new();
        m.record_response(
            Route::Segment,
            200,
            1234,
            Duration::from_millis(2),
            Duration::from_millis(9),
            false,
        );
        m.record_denial(DenyReason::PlaylistMissingParams);
        m.record_store(StoreOp::GetMany, Duration::from_micros(300), true);
        let text = m.render(&Live::default());
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("fileproxy_requests_total{route=\"segment\",status=\"2xx\"} 1"));
        assert!(text.contains("fileproxy_response_bytes_total{route=\"segment\"} 1234"));
        assert!(text.contains("# TYPE fileproxy_time_to_last_byte_seconds histogram"));
        assert!(
            text.contains("fileproxy_playlist_denials_total{reason=\"playlist_missing_params\"} 1")
        );
        assert!(text.contains("fileproxy_store_operation_seconds_count{op=\"get_many\"} 1"));
        // Buckets are cumulative: 2 ms is below 2.5 ms, so every bound from there up counts it.
        assert!(
            text.contains(
                "fileproxy_time_to_first_byte_seconds_bucket{le=\"0.001\",route=\"segment\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains(
            "fileproxy_time_to_first_byte_seconds_bucket{le=\"0.0025\",route=\"segment\"} 1"
        ));
        assert!(text.contains(
            "fileproxy_time_to_first_byte_seconds_bucket{le=\"300.0\",route=\"segment\"} 1"
        ));
        assert!(text.contains(
            "fileproxy_time_to_first_byte_seconds_bucket{le=\"+Inf\",route=\"segment\"} 1"
        ));
        assert!(text.contains("fileproxy_active_connections 0"));
        let t = m.totals(&Live::default());
        assert_eq!((t.requests, t.bytes, t.ttlb.count()), (1, 1234, 1));
    }

    #[test]
    fn indexes_follow_the_label_order() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for (i, op) in StoreOp::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
        }
        for (i, w) in WhitelistResult::ALL.iter().enumerate() {
            assert_eq!(w.index(), i);
        }
        assert_eq!(STATUS_CLASSES[status_class(100)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(404)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class(599)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(0)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(u16::MAX)], "5xx");
    }

    #[test]
    fn every_deny_reason_is_listed() {
        // `DenyReason::ALL` holds every variant once, in declaration order (the
        // discriminant of the last variant bounds the count).
        for (i, r) in DenyReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        assert_eq!(DenyReason::ContentClass as usize + 1, DenyReason::ALL.len());
        let m = Metrics::new();
        m.record_denial(DenyReason::KeyReplay);
        m.record_denial(DenyReason::PlaylistLimit);
        let b = m.breakdown();
        assert_eq!(b["access_denials"]["key_replay"], 1);
        assert_eq!(b["access_denials"]["playlist_limit"], 1);
        assert_eq!(b["playlist_denials"]["playlist_limit"], 1);
        assert!(b["playlist_denials"].get("key_replay").is_none());
    }
}
