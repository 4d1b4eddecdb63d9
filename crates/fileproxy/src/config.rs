//! Typed configuration: TOML file, `FILEPROXY_<SECTION>__<KEY>` overrides, validation.
//!
//! Every key of SPEC.md §8 lives here with its default. Parse, don't validate: a key
//! whose type knows the rule is read into that type ([`SocketAddr`], [`Network`],
//! [`OriginUrl`], [`StoreLocation`], [`Secret`]), so a bad value fails while the file
//! is read, with a message naming the key and the value; unknown keys are errors too
//! (`deny_unknown_fields`), and `check-config` lists every such key in one run
//! ([`Config::load`]). What no type can say (ranges, one key against another) is
//! checked by each section's `validate`, next to its struct; [`Config::validate`]
//! runs them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod load;
mod secret;
mod types;

pub use crate::origin_url::OriginUrl;
pub use secret::Secret;
use types::{listen_addr, optional_listen_addr};
pub use types::{parse_net, redact_url, Network, StoreLocation, TlsFiles};

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "FILEPROXY_";

/// The whole configuration of one FileProxy process.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners, limits and shutdown.
    pub server: ServerConfig,
    /// Where files come from.
    pub origin: OriginConfig,
    /// Where shared state lives.
    pub store: StoreConfig,
    /// Secrets and access-policy knobs.
    pub auth: AuthConfig,
    /// Cross-origin resource sharing.
    pub cors: CorsConfig,
    /// Per-uid traffic reporting.
    pub traffic: TrafficConfig,
    /// Second-generation protections.
    pub protect: ProtectConfig,
    /// Socket tuning of the viewer-facing connections.
    pub sockets: SocketConfig,
    /// Logging.
    pub log: LogConfig,
    /// Viewer controls: concurrent streams and traffic quota per uid.
    pub limits: LimitsConfig,
    /// Segment cache and request coalescing.
    pub cache: CacheConfig,
}

/// `[cache]`: the in-memory segment cache.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes of origin answers held in memory (0 = cache off).
    pub max_bytes: u64,
    /// Largest object kept; larger ones stream through uncached.
    pub max_object_bytes: u64,
    /// Lifetime of a cached playlist in milliseconds (0 = playlists never cached).
    pub playlist_ttl_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 268_435_456,
            max_object_bytes: 33_554_432,
            playlist_ttl_ms: 0,
        }
    }
}

/// `[server]`: listeners, connection limits and shutdown.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Viewer listener address (HTTP/1.1 and HTTP/2).
    #[serde(with = "listen_addr")]
    pub listen: SocketAddr,
    /// Optional admin listener; admin routes there need no token. Empty = off.
    #[serde(with = "optional_listen_addr")]
    pub admin_listen: Option<SocketAddr>,
    /// Seconds in-flight transfers may run after SIGTERM/SIGINT.
    pub shutdown_grace_s: u64,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` are believed (addresses or CIDRs).
    pub trusted_proxies: Vec<Network>,
    /// PEM certificate chain; with `tls_key` turns on HTTPS.
    pub tls_cert: PathBuf,
    /// PEM private key.
    pub tls_key: PathBuf,
    /// Maximum concurrent client connections; further connections wait in the backlog.
    pub max_connections: usize,
    /// Seconds from accept for protocol detection, TLS handshake and the first request
    /// head; also the time a later request head may take once its first byte arrived.
    pub header_read_timeout_s: u64,
    /// Maximum number of request headers (more → 431).
    pub max_headers: usize,
    /// Maximum size of the request head in bytes (larger → 431).
    pub max_header_bytes: usize,
    /// HTTP/2 initial per-stream receive window in bytes (0 = adaptive BDP window).
    pub h2_stream_window: u32,
    /// HTTP/2 initial connection receive window in bytes (0 = adaptive BDP window).
    pub h2_connection_window: u32,
    /// HTTP/2 maximum concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Seconds an idle HTTP/1.1 keep-alive connection is kept open.
    pub keepalive_timeout_s: u64,
    /// Seconds an HTTP/2 connection with no open stream is kept before `GOAWAY`.
    pub h2_idle_timeout_s: u64,
    /// Connections one client address (TCP peer) may hold at once; 0 = no cap.
    pub max_connections_per_ip: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 10080)),
            admin_listen: None,
            shutdown_grace_s: 30,
            trusted_proxies: Vec::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            max_connections: 10_000,
            header_read_timeout_s: 10,
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            h2_stream_window: 0,
            h2_connection_window: 0,
            h2_max_concurrent_streams: 256,
            keepalive_timeout_s: 60,
            h2_idle_timeout_s: 60,
            max_connections_per_ip: 256,
        }
    }
}

impl ServerConfig {
    /// The HTTPS listener's files: both keys set → `Some`, neither → `None` (plain
    /// HTTP), one alone → the message naming both keys.
    pub fn tls(&self) -> Result<Option<TlsFiles>, &'static str> {
        TlsFiles::from_keys(&self.tls_cert, &self.tls_key)
    }

    fn validate(&self, errs: &mut Vec<String>) {
        if let Err(why) = self.tls() {
            errs.push(why.into());
        }
        for (k, v) in [
            ("server.tls_cert", &self.tls_cert),
            ("server.tls_key", &self.tls_key),
        ] {
            if !v.as_os_str().is_empty() && !v.is_file() {
                errs.push(format!("{k} = {v:?}: file not found"));
            }
        }
        at_least(errs, "server.max_connections", self.max_connections, 1);
        at_least(
            errs,
            "server.header_read_timeout_s",
            self.header_read_timeout_s,
            1,
        );
        at_least(
            errs,
            "server.keepalive_timeout_s",
            self.keepalive_timeout_s,
            1,
        );
        at_least(errs, "server.h2_idle_timeout_s", self.h2_idle_timeout_s, 1);
        at_least(errs, "server.max_headers", self.max_headers, 1);
        at_least(errs, "server.max_header_bytes", self.max_header_bytes, 1024);
    }
}

/// `[origin]`: the server that holds the files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    /// `http://…`, `https://…` or `file:///folder`.
    pub url: OriginUrl,
    /// `Host` header sent to the origin; empty → the origin's own.
    pub host_header: String,
    /// Verify the origin's TLS certificate.
    pub tls_verify: bool,
    /// Connect timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time to first byte allowed for playlists, in milliseconds.
    pub playlist_timeout_ms: u64,
    /// Time to first byte allowed for everything else, in milliseconds.
    pub timeout_ms: u64,
    /// Idle pooled connections kept per origin host.
    pub pool_max_idle_per_host: usize,
    /// Seconds an idle pooled connection is kept.
    pub pool_idle_timeout_s: u64,
    /// Size of each body chunk read from a file origin, in bytes.
    pub chunk_bytes: usize,
    /// Bytes buffered per transfer between origin and viewer (backpressure bound).
    pub buffer_bytes: usize,
    /// Origin requests in flight at once (until their body ends), on every path.
    pub max_in_flight: usize,
    /// Milliseconds a request may wait for an origin slot before `503` + `Retry-After: 1`.
    pub queue_timeout_ms: u64,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:27804"
                .parse()
                .unwrap_or_else(|why| unreachable!("default origin.url: {why}")),
            host_header: String::new(),
            tls_verify: true,
            connect_timeout_ms: 15_000,
            playlist_timeout_ms: 30_000,
            timeout_ms: 120_000,
            pool_max_idle_per_host: 64,
            pool_idle_timeout_s: 60,
            chunk_bytes: 64 * 1024,
            buffer_bytes: 64 * 1024,
            max_in_flight: 1024,
            queue_timeout_ms: 5_000,
        }
    }
}

impl OriginConfig {
    fn validate(&self, errs: &mut Vec<String>) {
        at_least(errs, "origin.queue_timeout_ms", self.queue_timeout_ms, 1);
        at_least(errs, "origin.max_in_flight", self.max_in_flight, 1);
        positive(errs, "origin.connect_timeout_ms", self.connect_timeout_ms);
        positive(errs, "origin.playlist_timeout_ms", self.playlist_timeout_ms);
        positive(errs, "origin.timeout_ms", self.timeout_ms);
        if !(4096..=16 * 1024 * 1024).contains(&self.chunk_bytes) {
            errs.push("origin.chunk_bytes must be between 4096 and 16777216".into());
        }
        if self.buffer_bytes < self.chunk_bytes {
            errs.push("origin.buffer_bytes must be at least origin.chunk_bytes".into());
        }
    }
}

/// `[store]`: shared state.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory://`, `redis://[:password@]host:port/db`, `rediss://…`, `redis+cluster://h1:p1,h2:p2`,
    /// `redis+sentinel://[:password@]s1:p1,s2:p2/<master>[/db][?sentinel_password=…]`.
    pub url: StoreLocation,
    /// Timeout of one store operation in milliseconds.
    pub op_timeout_ms: u64,
    /// PEM file of the CA that signed the Redis server's certificate (`rediss://`);
    /// empty → the bundled public (webpki) roots.
    pub tls_ca_file: String,
    /// Seconds a recent allow decision keeps a viewer's segments, keys and static files
    /// flowing while the store fails; 0 = off.
    pub outage_grace_s: u64,
    /// Deferred store writes (session extensions) running at once; more are dropped and counted.
    pub max_background_writes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "memory://"
                .parse()
                .unwrap_or_else(|why| unreachable!("default store.url: {why}")),
            op_timeout_ms: 2_000,
            tls_ca_file: String::new(),
            outage_grace_s: 60,
            max_background_writes: 1024,
        }
    }
}

impl StoreConfig {
    fn validate(&self, errs: &mut Vec<String>) {
        at_least(
            errs,
            "store.max_background_writes",
            self.max_background_writes,
            1,
        );
        positive(errs, "store.op_timeout_ms", self.op_timeout_ms);
    }
}

/// One class's playlist limit.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClassLimit {
    /// Playlist requests allowed per window.
    pub limit: u64,
    /// Window length in seconds, starting at the first request.
    pub window_s: u64,
}

/// `[auth.playlist_limits]`: per-class and per-browser playlist limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaylistLimits {
    /// Download tools (wget, curl, ffmpeg, …).
    pub download_tool: ClassLimit,
    /// Mobile browsers.
    pub mobile_browser: ClassLimit,
    /// Desktop browsers.
    pub desktop_browser: ClassLimit,
    /// Anything else.
    pub unknown: ClassLimit,
    /// Per browser name overrides of the limit (window stays the class's).
    pub browsers: BTreeMap<String, u64>,
}

impl Default for PlaylistLimits {
    fn default() -> Self {
        Self {
            download_tool: ClassLimit {
                limit: 1,
                window_s: 60,
            },
            mobile_browser: ClassLimit {
                limit: 1,
                window_s: 180,
            },
            desktop_browser: ClassLimit {
                limit: 1,
                window_s: 120,
            },
            unknown: ClassLimit {
                limit: 1,
                window_s: 60,
            },
            browsers: BTreeMap::new(),
        }
    }
}

impl PlaylistLimits {
    fn validate(&self, errs: &mut Vec<String>) {
        for (name, cl) in [
            ("download_tool", self.download_tool),
            ("mobile_browser", self.mobile_browser),
            ("desktop_browser", self.desktop_browser),
            ("unknown", self.unknown),
        ] {
            if cl.window_s == 0 {
                errs.push(format!(
                    "auth.playlist_limits.{name}.window_s must be greater than 0"
                ));
            }
        }
        for name in self.browsers.keys() {
            if !crate::ua::browser_names().any(|n| n == name) {
                let known: Vec<&str> = crate::ua::browser_names().collect();
                errs.push(format!(
                    "auth.playlist_limits.browsers: unknown browser name {name:?} (known: {})",
                    known.join(" ")
                ));
            }
        }
    }
}

/// `[auth]`: secrets and the access-policy knobs (the viewer flow of `docs/routes.md`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC key for playlist tokens (required).
    pub secret: Secret,
    /// Bearer key for `POST /api/whitelist` (required).
    pub whitelist_api_key: Secret,
    /// Bearer token for admin routes on the main listener; empty → admin routes 404 there.
    pub admin_token: Secret,
    /// Non-empty → allowed `enc.key` requests get 302 to `<base><path>`.
    pub safe_key_redirect_base: String,
    /// Add `Secure` to the session cookie.
    pub cookie_secure: bool,
    /// Suffixes that skip every viewer check.
    pub skip_validation_suffixes: Vec<String>,
    /// Session TTL in seconds.
    pub session_ttl_s: u64,
    /// TTL of `user_active_session` in seconds.
    pub user_session_ttl_s: u64,
    /// TTL of whitelist entries in seconds.
    pub ip_access_ttl_s: u64,
    /// Key paths kept per (network, UA) entry.
    pub max_paths_per_cidr: usize,
    /// IPv6 prefixes a viewer's address is also looked up under.
    pub ipv6_prefixes: Vec<u8>,
    /// Addresses or CIDRs that pass whitelist and session with uid `fixed_whitelist`.
    pub fixed_ip_whitelist: Vec<Network>,
    /// Playlist access-count limits.
    pub playlist_limits: PlaylistLimits,
}

/// The default skip-validation suffixes.
pub fn default_skip_validation_suffixes() -> Vec<String> {
    [
        ".webp", ".php", ".js", ".css", ".ico", ".txt", ".woff", ".woff2", ".ttf", ".png", ".jpg",
        ".jpeg", ".gif", ".svg",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            secret: Secret::default(),
            whitelist_api_key: Secret::default(),
            admin_token: Secret::default(),
            safe_key_redirect_base: String::new(),
            cookie_secure: false,
            skip_validation_suffixes: default_skip_validation_suffixes(),
            session_ttl_s: 7200,
            user_session_ttl_s: 14400,
            ip_access_ttl_s: 3600,
            max_paths_per_cidr: 3,
            ipv6_prefixes: vec![64, 56, 48],
            fixed_ip_whitelist: Vec::new(),
            playlist_limits: PlaylistLimits::default(),
        }
    }
}

impl AuthConfig {
    fn validate(&self, errs: &mut Vec<String>) {
        positive(errs, "auth.session_ttl_s", self.session_ttl_s);
        positive(errs, "auth.user_session_ttl_s", self.user_session_ttl_s);
        positive(errs, "auth.ip_access_ttl_s", self.ip_access_ttl_s);
        at_least(errs, "auth.max_paths_per_cidr", self.max_paths_per_cidr, 1);
        for p in &self.ipv6_prefixes {
            if *p == 0 || *p > 128 {
                errs.push(format!(
                    "auth.ipv6_prefixes: {p} is not a prefix length between 1 and 128"
                ));
            }
        }
        no_empty_suffix(
            errs,
            "auth.skip_validation_suffixes",
            &self.skip_validation_suffixes,
        );
        self.playlist_limits.validate(errs);
        let base = &self.safe_key_redirect_base;
        if !(base.is_empty()
            || base.starts_with("http://")
            || base.starts_with("https://")
            || base.starts_with('/'))
        {
            errs.push("auth.safe_key_redirect_base must start with http://, https:// or /".into());
        }
    }
}

/// `[cors]`: origins allowed to read responses.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://site.example`) allowed; `*` allows any.
    pub allow_origins: Vec<String>,
}

impl CorsConfig {
    fn validate(&self, errs: &mut Vec<String>) {
        for o in &self.allow_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                errs.push(format!(
                    "cors.allow_origins: {o:?} is not an origin like https://site.example"
                ));
            }
        }
    }
}

/// `[traffic]`: per-uid traffic reporting (`docs/traffic-report.md`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficConfig {
    /// Receiver URL; empty → reporting off (still counted in `/traffic`).
    pub report_url: String,
    /// Bearer key sent to the receiver.
    pub api_key: Secret,
    /// Seconds between reports.
    pub interval_s: u64,
    /// Bytes a uid must reach before it is reported.
    pub min_bytes: u64,
    /// Where unsent batches are spooled: `dir` (a folder, see `spool_dir`) or `store`.
    pub spool: String,
    /// Spool folder; empty → `$STATE_DIRECTORY/traffic`, else `fileproxy-state/traffic`.
    pub spool_dir: String,
    /// `worker_id` of the reports, and the store spool's name; empty → `<hostname>:<listen port>`.
    /// Must stay the same across restarts for a store spool to be picked up again.
    pub worker_id: String,
    /// Time allowed for one report delivery (connect to answer), in milliseconds.
    pub timeout_ms: u64,
    /// Longest pause between delivery retries, in seconds (backoff doubles from 1 s).
    pub retry_max_s: u64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            report_url: String::new(),
            api_key: Secret::default(),
            interval_s: 10,
            min_bytes: 1_048_576,
            spool: "dir".into(),
            spool_dir: String::new(),
            worker_id: String::new(),
            timeout_ms: 10_000,
            retry_max_s: 300,
        }
    }
}

impl TrafficConfig {
    fn validate(&self, errs: &mut Vec<String>) {
        if !matches!(self.spool.as_str(), "dir" | "store") {
            errs.push(format!(
                "traffic.spool = {:?}: expected \"dir\" or \"store\"",
                self.spool
            ));
        }
        positive(errs, "traffic.interval_s", self.interval_s);
        positive(errs, "traffic.timeout_ms", self.timeout_ms);
        positive(errs, "traffic.retry_max_s", self.retry_max_s);
        let report_url_ok = |u: &str| {
            u.parse::<http::Uri>().is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
            })
        };
        if !self.report_url.is_empty() && !report_url_ok(&self.report_url) {
            errs.push(format!(
                "traffic.report_url = {:?}: expected http://host[:port]/path or https://…",
                self.report_url
            ));
        }
    }
}

/// `[protect]`: second-generation protections (key protection, token replay, admissions).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtectConfig {
    /// Rewrite playlists' key URIs and require per-key tokens.
    pub key_protection: bool,
    /// Uses allowed per key token.
    pub key_max_uses: u64,
    /// Window of the key-use counter in seconds.
    pub key_use_ttl_s: u64,
    /// Limit uses of each (token, uid, path).
    pub token_replay: bool,
    /// Uses allowed per token.
    pub token_max_uses: u64,
    /// Window of the token-use counter in seconds.
    pub token_replay_ttl_s: u64,
    /// Admitted (network, UA) pairs kept per uid; admitting one more deletes the
    /// entry of the least recently admitted pair (0 = no cap).
    pub max_pairs_per_uid: usize,
    /// Enable `POST /api/static-whitelist` and the static-file admission rule.
    pub static_whitelist: bool,
    /// Suffixes a static-file admission opens.
    pub static_suffixes: Vec<String>,
    /// Enable the front-end (JS) admission API and its fallback rule.
    pub js_whitelist: bool,
    /// HMAC key of front-end admission signatures (required when `js_whitelist = true`).
    pub js_whitelist_secret: Secret,
    /// Seconds a front-end admission lasts.
    pub js_whitelist_ttl_s: u64,
    /// Key paths kept per (uid, User-Agent, IP) front-end admission.
    pub js_max_paths: usize,
    /// Enable `POST /api/file/check` and `/api/file/check/batch`.
    pub file_check: bool,
    /// Largest playlist rewritten, in bytes (larger → 502 with a log line).
    pub max_playlist_bytes: usize,
    /// Entries kept in each operator-view list (in memory and in the store).
    pub event_log_capacity: usize,
    /// TTL of the operator-view lists in the store, in seconds (reset on each push).
    pub event_log_ttl_s: u64,
}

impl Default for ProtectConfig {
    fn default() -> Self {
        Self {
            key_protection: false,
            key_max_uses: 1,
            key_use_ttl_s: 9600,
            token_replay: false,
            token_max_uses: 1,
            token_replay_ttl_s: 9600,
            max_pairs_per_uid: 5,
            static_whitelist: true,
            static_suffixes: [
                ".jpg", ".jpeg", ".png", ".gif", ".svg", ".css", ".js", ".woff", ".woff2", ".ttf",
                ".eot", ".ico", ".txt",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            js_whitelist: false,
            js_whitelist_secret: Secret::default(),
            js_whitelist_ttl_s: 3600,
            js_max_paths: 3,
            file_check: true,
            max_playlist_bytes: 4 * 1024 * 1024,
            event_log_capacity: 1000,
            event_log_ttl_s: 86400,
        }
    }
}

impl ProtectConfig {
    fn validate(&self, errs: &mut Vec<String>) {
        positive(errs, "protect.key_use_ttl_s", self.key_use_ttl_s);
        positive(errs, "protect.token_replay_ttl_s", self.token_replay_ttl_s);
        positive(errs, "protect.js_whitelist_ttl_s", self.js_whitelist_ttl_s);
        positive(errs, "protect.event_log_ttl_s", self.event_log_ttl_s);
        no_empty_suffix(errs, "protect.static_suffixes", &self.static_suffixes);
        at_least(errs, "protect.key_max_uses", self.key_max_uses, 1);
        at_least(errs, "protect.token_max_uses", self.token_max_uses, 1);
        at_least(errs, "protect.js_max_paths", self.js_max_paths, 1);
        at_least(
            errs,
            "protect.max_playlist_bytes",
            self.max_playlist_bytes,
            1024,
        );
        if !(1..=100_000).contains(&self.event_log_capacity) {
            errs.push("protect.event_log_capacity must be between 1 and 100000".into());
        }
        if self.js_whitelist && self.js_whitelist_secret.is_empty() {
            errs.push(
                "protect.js_whitelist_secret is required when protect.js_whitelist = true".into(),
            );
        }
    }
}

/// `[sockets]`: tuning of viewer-facing TCP sockets.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    /// Congestion control algorithm (`bbr`, `cubic`, …; empty = system default).
    pub congestion_control: String,
    /// `congestion_control` is set only on connections whose handshake RTT is at least
    /// this many microseconds; nearer peers (a load balancer, the same LAN) keep the
    /// system default. 0 = every connection.
    pub congestion_control_min_rtt_us: u32,
    /// SO_SNDBUF in bytes (0 = kernel autotuning).
    pub send_buffer_bytes: usize,
    /// SO_RCVBUF in bytes (0 = kernel autotuning).
    pub recv_buffer_bytes: usize,
    /// TCP_NODELAY on viewer sockets.
    pub nodelay: bool,
    /// Listen backlog.
    pub backlog: u32,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            congestion_control: "bbr".into(),
            congestion_control_min_rtt_us: 1000,
            send_buffer_bytes: 0,
            recv_buffer_bytes: 0,
            nodelay: true,
            backlog: 4096,
        }
    }
}

impl SocketConfig {
    fn validate(&self, errs: &mut Vec<String>) {
        let cc = &self.congestion_control;
        if !cc.is_empty() && !cc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            errs.push(format!(
                "sockets.congestion_control = {cc:?}: not an algorithm name"
            ));
        }
    }
}

/// `[limits]`: viewer controls per uid, cluster-wide through the store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Streams (client IP, UA, key path) a uid may have at once; 0 = no limit.
    pub max_streams_per_uid: u64,
    /// A stream ends this many seconds after its last request.
    pub stream_idle_s: u64,
    /// Bytes a uid may receive per window; 0 = no quota.
    pub uid_quota_bytes: u64,
    /// Length of a quota window in seconds.
    pub uid_quota_window_s: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_streams_per_uid: 0,
            stream_idle_s: 30,
            uid_quota_bytes: 0,
            uid_quota_window_s: 3600,
        }
    }
}

impl LimitsConfig {
    fn validate(&self, errs: &mut Vec<String>) {
        positive(errs, "limits.stream_idle_s", self.stream_idle_s);
        positive(errs, "limits.uid_quota_window_s", self.uid_quota_window_s);
    }
}

/// `[log]`: application and access logs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Level filter (`error`, `warn`, `info`, `debug`, `trace` or an `EnvFilter` string).
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    /// Access log destination: `stdout`, `off`, or a file path.
    pub access_log: String,
    /// Rotate the access log file past this many bytes (0 = never).
    pub access_log_max_bytes: u64,
    /// Rotated access log files kept.
    pub access_log_keep: usize,
    /// Lines queued for the access-log writer; past this lines are dropped (and
    /// counted) rather than slowing requests down.
    pub access_log_buffer: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            access_log: "stdout".into(),
            access_log_max_bytes: 100 * 1024 * 1024,
            access_log_keep: 5,
            access_log_buffer: 8192,
        }
    }
}

impl LogConfig {
    fn validate(&self, errs: &mut Vec<String>) {
        at_least(errs, "log.access_log_buffer", self.access_log_buffer, 1);
        if !matches!(self.format.as_str(), "text" | "json") {
            errs.push(format!(
                "log.format = {:?}: expected \"text\" or \"json\"",
                self.format
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            errs.push(format!(
                "log.level = {:?}: not a valid level or filter",
                self.level
            ));
        }
    }
}

/// `{key} must be at least {min}` when `value` is below `min`.
fn at_least<T: PartialOrd + std::fmt::Display>(
    errs: &mut Vec<String>,
    key: &str,
    value: T,
    min: T,
) {
    if value < min {
        errs.push(format!("{key} must be at least {min}"));
    }
}

/// `{key} must be greater than 0` when `value` is 0 (durations and windows).
fn positive(errs: &mut Vec<String>, key: &str, value: u64) {
    if value == 0 {
        errs.push(format!("{key} must be greater than 0"));
    }
}

/// `{key}: empty suffix` for each empty entry of a suffix list.
fn no_empty_suffix(errs: &mut Vec<String>, key: &str, suffixes: &[String]) {
    for s in suffixes {
        if s.is_empty() {
            errs.push(format!("{key}: empty suffix"));
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or named unknown keys.
    #[error("{0}")]
    Parse(String),
    /// One or more keys have bad values.
    #[error("invalid configuration:\n{}", .0.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads a file (or defaults when `None`), applies environment overrides, validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(format!("config file: {e}")))?;
        load::apply_env_overrides(&mut table, env)?;
        load::deserialize_reporting_every_key(table)
    }

    /// Checks what the types of the keys cannot (ranges, one key against another);
    /// returns every problem found, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        self.server.validate(&mut errs);
        self.origin.validate(&mut errs);
        self.store.validate(&mut errs);
        self.auth.validate(&mut errs);
        self.cors.validate(&mut errs);
        self.traffic.validate(&mut errs);
        self.protect.validate(&mut errs);
        self.sockets.validate(&mut errs);
        self.log.validate(&mut errs);
        self.limits.validate(&mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errs))
        }
    }

    /// Checks that the secrets a server needs are present (not needed by `sign`).
    pub fn validate_secrets(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        if self.auth.secret.is_empty() {
            errs.push(
                "auth.secret is required (set it in the file or FILEPROXY_AUTH__SECRET)".into(),
            );
        }
        if self.auth.whitelist_api_key.is_empty() {
            errs.push(
                "auth.whitelist_api_key is required (set it in the file or FILEPROXY_AUTH__WHITELIST_API_KEY)"
                    .into(),
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errs))
        }
    }
}

/// Every leaf key of the configuration as `section.key` (nested tables joined by `.`),
/// with its default rendered as TOML — for documentation checks.
pub fn default_keys() -> Vec<(String, String)> {
    config_keys(&Config::default()).into_iter().collect()
}

/// Every leaf key of `cfg` (as [`default_keys`] names them) with its value as TOML.
pub fn config_keys(cfg: &Config) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) if !(prefix.ends_with("browsers")) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = toml::Value::try_from(cfg) {
        walk("", &v, &mut out);
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::Parse(e.to_string()))?;
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::load_with_env(Some(&p), &env)
    }

    #[test]
    fn defaults_match_spec() {
        let c = Config::default();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:10080");
        assert_eq!(c.server.admin_listen, None);
        assert_eq!(c.server.shutdown_grace_s, 30);
        assert_eq!(c.origin.connect_timeout_ms, 15000);
        assert_eq!(c.origin.playlist_timeout_ms, 30000);
        assert_eq!(c.origin.timeout_ms, 120000);
        assert_eq!(c.store.url.expose(), "memory://");
        assert_eq!(c.origin.url.as_str(), "http://127.0.0.1:27804");
        assert_eq!(c.auth.session_ttl_s, 7200);
        assert_eq!(c.auth.max_paths_per_cidr, 3);
        assert_eq!(c.auth.ipv6_prefixes, vec![64, 56, 48]);
        assert_eq!(c.auth.playlist_limits.mobile_browser.window_s, 180);
        assert_eq!(c.traffic.min_bytes, 1_048_576);
        assert_eq!(c.protect.key_use_ttl_s, 9600);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n", &[]).unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let err = load("[nosuch]\na = 1\n", &[]).unwrap_err();
        assert!(err.to_string().contains("nosuch"), "{err}");
    }

    #[test]
    fn every_bad_key_is_named_in_one_go() {
        let err = load(
            "top = 1\n[server]\nbogus = 1\nlisten = \"nowhere\"\ntrusted_proxies = [1]\n\
             [auth]\nmax_paths_per_cidr = \"a\"\n[auth.playlist_limits.unknown]\nlimt = 1\n\
             [nosuch]\na = 1\n[origin]\nurl = \"ftp://a\"\n",
            &[("FILEPROXY_STORE__URLL", "x")],
        )
        .unwrap_err();
        let msg = err.to_string();
        for key in [
            "top",
            "server.bogus",
            "server.trusted_proxies",
            "auth.max_paths_per_cidr",
            "auth.playlist_limits.unknown.limt",
            "nosuch",
            "store.urll",
            // Value problems of keys that did parse are listed too.
            "server.listen",
            "origin.url",
        ] {
            assert!(msg.contains(key), "{key} missing in {msg}");
        }
        let one = load("[server]\nbogus = 1\n", &[]).unwrap_err().to_string();
        assert!(
            one.contains("configuration key server.bogus: unknown field"),
            "{one}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let err = load("[server]\nshutdown_grace_s = \"soon\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("shutdown_grace_s"), "{err}");
    }

    #[test]
    fn env_overrides_apply_and_unknown_env_keys_fail() {
        let c = load(
            "[auth]\nsecret = \"file\"\n",
            &[
                ("FILEPROXY_AUTH__SECRET", "env-secret"),
                ("FILEPROXY_SERVER__SHUTDOWN_GRACE_S", "5"),
                ("FILEPROXY_CORS__ALLOW_ORIGINS", "[\"https://a.example\"]"),
                ("FILEPROXY_AUTH__PLAYLIST_LIMITS__BROWSERS", "{ qq = 2 }"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.auth.secret.expose(), "env-secret");
        assert_eq!(c.server.shutdown_grace_s, 5);
        assert_eq!(c.cors.allow_origins, vec!["https://a.example"]);
        assert_eq!(c.auth.playlist_limits.browsers.get("qq"), Some(&2));
        let err = load("", &[("FILEPROXY_SERVER__NOPE", "1")]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn string_keys_take_env_values_verbatim() {
        let c = load(
            "",
            &[
                ("FILEPROXY_AUTH__SECRET", "12345"),
                ("FILEPROXY_AUTH__WHITELIST_API_KEY", "1979-05-27T07:32:00Z"),
                ("FILEPROXY_AUTH__ADMIN_TOKEN", "\"abc\""),
                ("FILEPROXY_TRAFFIC__API_KEY", "true"),
                ("FILEPROXY_TRAFFIC__WORKER_ID", "[1, 2]"),
                ("FILEPROXY_LOG__LEVEL", "  warn  "),
            ],
        )
        .unwrap();
        assert_eq!(c.auth.secret.expose(), "12345");
        assert_eq!(c.auth.whitelist_api_key.expose(), "1979-05-27T07:32:00Z");
        assert_eq!(c.auth.admin_token.expose(), "\"abc\"");
        assert_eq!(c.traffic.api_key.expose(), "true");
        assert_eq!(c.traffic.worker_id, "[1, 2]");
        assert_eq!(c.log.level, "  warn  ");
    }

    #[test]
    fn non_string_keys_parse_env_values_as_their_type() {
        let c = load(
            "",
            &[
                ("FILEPROXY_SERVER__MAX_CONNECTIONS", "77"),
                ("FILEPROXY_AUTH__COOKIE_SECURE", "true"),
                ("FILEPROXY_AUTH__IPV6_PREFIXES", "[64]"),
                (
                    "FILEPROXY_AUTH__PLAYLIST_LIMITS__UNKNOWN",
                    "{ limit = 4, window_s = 30 }",
                ),
                ("FILEPROXY_AUTH__PLAYLIST_LIMITS__BROWSERS__QQ", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.max_connections, 77);
        assert!(c.auth.cookie_secure);
        assert_eq!(c.auth.ipv6_prefixes, vec![64]);
        assert_eq!(c.auth.playlist_limits.unknown.limit, 4);
        assert_eq!(c.auth.playlist_limits.unknown.window_s, 30);
        assert_eq!(c.auth.playlist_limits.browsers.get("qq"), Some(&3));
        let err = load("", &[("FILEPROXY_SERVER__MAX_CONNECTIONS", "many")]).unwrap_err();
        assert!(err.to_string().contains("server.max_connections"), "{err}");
    }

    #[test]
    fn bad_values_each_named() {
        // The types of these keys refuse the values while the file is read, each
        // message naming the key and the value.
        let msg = load(
            "[server]\nlisten = \"nowhere\"\ntrusted_proxies = [\"x.y\"]\nadmin_listen = \"here\"\n\
             [origin]\nurl = \"ftp://a\"\n[store]\nurl = \"mongo://a\"\n\
             [auth]\nfixed_ip_whitelist = [\"10.0.0.0/8\", \"10.0.0.0/99\"]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for line in [
            "server.listen: \"nowhere\": expected host:port such as \"127.0.0.1:10080\"",
            "server.admin_listen: \"here\": expected host:port or empty",
            "server.trusted_proxies[0]: \"x.y\" is not an IP address or CIDR",
            "auth.fixed_ip_whitelist[1]: \"10.0.0.0/99\" is not an IP address or CIDR",
            "origin.url: \"ftp://a\": expected http://host:port",
            "store.url: \"mongo://a\": expected memory://",
        ] {
            assert!(msg.contains(line), "{line:?} missing in {msg}");
        }
    }

    #[test]
    fn store_password_never_in_messages() {
        for url in ["redis+cluster://:hunter2@", "mongo://:hunter2@h"] {
            let msg = load(&format!("[store]\nurl = \"{url}\"\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("store.url") && !msg.contains("hunter2"),
                "{msg}"
            );
        }
    }

    #[test]
    fn typed_keys_read_and_write_their_text() {
        let c = load(
            "[server]\nlisten = \"[::1]:8080\"\nadmin_listen = \"127.0.0.1:9\"\n\
             trusted_proxies = [\"10.1.2.3/8\", \"::1\"]\n\
             [store]\nurl = \"redis://:pw@h:6379/2\"\n",
            &[("FILEPROXY_ORIGIN__URL", "file:///srv/media")],
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert_eq!(c.server.admin_listen.map(|a| a.port()), Some(9));
        let nets: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.net().to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128"]);
        assert!(matches!(
            c.store.url.kind(),
            crate::store_url::StoreUrl::Redis { .. }
        ));
        assert!(matches!(
            c.origin.url.target(),
            crate::origin_url::OriginTarget::File(root) if root == "/srv/media"
        ));
        // Serialized back as written (what reload compares and `/whitelist-info` shows).
        let keys = config_keys(&c);
        assert_eq!(keys["server.listen"], "\"[::1]:8080\"");
        assert_eq!(keys["server.trusted_proxies"], "[\"10.1.2.3/8\", \"::1\"]");
        assert_eq!(keys["store.url"], "\"redis://:pw@h:6379/2\"");
        assert_eq!(
            config_keys(&Config::default())["server.admin_listen"],
            "\"\""
        );
        // `Debug` shows the store URL redacted.
        assert!(!format!("{c:?}").contains(":pw@"));
    }

    #[test]
    fn tls_files_are_both_or_neither() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "x").unwrap();
        let mut c = Config::default();
        assert_eq!(c.server.tls(), Ok(None));
        c.server.tls_cert = cert.clone();
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("server.tls_cert and server.tls_key: set both or neither"),
            "{msg}"
        );
        c.server.tls_key = dir.path().join("missing.pem");
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("server.tls_key = ") && msg.contains("file not found"),
            "{msg}"
        );
        assert!(!msg.contains("server.tls_cert ="), "{msg}");
        c.server.tls_key = cert.clone();
        assert!(c.validate().is_ok());
        assert_eq!(c.server.tls().unwrap().map(|f| f.key), Some(cert));
    }

    #[test]
    fn overload_values_each_named() {
        let c = load(
            "[server]\nkeepalive_timeout_s = 0\nh2_idle_timeout_s = 0\n[origin]\nmax_in_flight = 0\nqueue_timeout_ms = 0\n[store]\nmax_background_writes = 0\n[traffic]\nspool = \"redis\"\n",
            &[],
        )
        .unwrap();
        let msg = c.validate().unwrap_err().to_string();
        for key in [
            "server.keepalive_timeout_s",
            "server.h2_idle_timeout_s",
            "origin.max_in_flight",
            "origin.queue_timeout_ms",
            "store.max_background_writes",
            "traffic.spool",
        ] {
            assert!(msg.contains(key), "{key} missing in {msg}");
        }
    }

    #[test]
    fn unknown_browser_names_are_named() {
        let mut c = Config::default();
        c.auth.playlist_limits.browsers.insert("qq".into(), 2);
        c.auth.playlist_limits.browsers.insert("curl".into(), 3);
        assert!(c.validate().is_ok());
        c.auth.playlist_limits.browsers.insert("netscape".into(), 2);
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("auth.playlist_limits.browsers") && msg.contains("netscape"),
            "{msg}"
        );
    }

    #[test]
    fn secrets_never_in_debug() {
        let mut c = Config::default();
        c.auth.secret = "s3cr3t-value".into();
        c.auth.admin_token = "adm1n-value".into();
        c.traffic.api_key = "k3y-value".into();
        c.auth.whitelist_api_key = "wh1te-value".into();
        c.protect.js_whitelist_secret = "j5-value".into();
        let dbg = format!("{c:?}");
        for s in ["s3cr3t", "adm1n", "k3y", "wh1te", "j5-"] {
            assert!(!dbg.contains(s), "{s} in {dbg}");
        }
        assert!(dbg.contains("secret: <redacted>"), "{dbg}");
    }

    #[test]
    fn redacts_store_password() {
        assert_eq!(redact_url("redis://:pw@h:6379/2"), "redis://***@h:6379/2");
        assert_eq!(redact_url("memory://"), "memory://");
    }
}
