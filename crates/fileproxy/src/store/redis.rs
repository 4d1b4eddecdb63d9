//! Redis [`Store`]: standalone (`redis://`, `rediss://`), Redis Cluster
//! (`redis+cluster://`, `rediss+cluster://`) or a master found through Redis Sentinel
//! (`redis+sentinel://`, see [`super::sentinel`]; `rediss+sentinel://` is refused).
//!
//! URLs: `redis://[[user]:password@]host:port[/db]`, `rediss://…` for TLS (rustls;
//! the server certificate is checked against `store.tls_ca_file` when set, else the
//! bundled public roots), and `redis+cluster://[[user]:password@]h1:p1,h2:p2` for a
//! cluster (the credentials apply to every node), and
//! `redis+sentinel://[[user]:password@]s1:p1,s2:p2/<master>[/db][?sentinel_password=…]`
//! (the credentials apply to the data nodes; the sentinels get `sentinel_password`).
//!
//! Standalone uses a [`ConnectionManager`], which reconnects by itself; a cluster uses
//! a [`ClusterConnection`] created on first use (and retried on every operation
//! until it succeeds), which then follows the topology and reconnects by itself.
//! Every operation is bounded by `store.op_timeout_ms` ([`StoreError::Timeout`]);
//! other failures are [`StoreError::Unavailable`] with any password scrubbed from the
//! message, or [`StoreError::Malformed`] for type errors (`WRONGTYPE`, not an
//! integer).
//!
//! Atomic operations are Lua scripts on one key (so they work on a cluster too), sent
//! with `EVALSHA` and loaded on `NOSCRIPT`.

use std::future::Future;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::Slot;
use ::redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Script, Value};
use anyhow::Context as _;
use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::sentinel::{SentinelConn, SentinelMaster};
use super::{ttl_millis, MemberTouch, Store, StoreError, WindowCount, Write};
use crate::config::StoreConfig;
use crate::store_url::StoreUrl;

/// INCR, and give the counter its window when it has none: a counter never exists
/// without a TTL, and the window is never extended. Returns `{count, pttl}`.
const INCR_WINDOW_LUA: &str = r"
local c = redis.call('INCR', KEYS[1])
local t = redis.call('PTTL', KEYS[1])
if t < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  t = tonumber(ARGV[1])
end
return {c, t}
";

/// SET PX only if the current value is ARGV[2] (ARGV[1] = '1') or absent
/// (ARGV[1] = '0'). Returns 1 when swapped.
const CAS_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
";

/// LPUSH, trim to ARGV[2] entries (0 = drop the list), PEXPIRE ARGV[3].
const PUSH_CAPPED_LUA: &str = r"
redis.call('LPUSH', KEYS[1], ARGV[1])
local cap = tonumber(ARGV[2])
if cap <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('LTRIM', KEYS[1], 0, cap - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Sorted-set step of `touch_member`: ARGV = member, now_ms, idle_ms, max.
/// Prunes scores below now - idle, refreshes or (below the cap) adds the member,
/// PEXPIREs the set. Returns `{admitted, count}`.
const TOUCH_MEMBER_LUA: &str = r"
local now = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%d', now - idle))
local admitted = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  admitted = 1
elseif redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  admitted = 1
end
if admitted == 1 then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
local n = redis.call('ZCARD', KEYS[1])
if n > 0 then
  redis.call('PEXPIRE', KEYS[1], idle)
end
return {admitted, n}
";

/// INCRBY KEYS[1] by ARGV[1] once per marker KEYS[2] (SET NX PX ARGV[2]); the
/// counter gets the TTL ARGV[2] when it has none. Returns the counter's value.
const INCR_BY_ONCE_LUA: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  local n = redis.call('INCRBY', KEYS[1], ARGV[1])
  if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  return n
end
local cur = redis.call('GET', KEYS[1])
if cur then return tonumber(cur) end
return 0
";

/// Largest list length passed to Redis (Lua numbers are doubles).
const MAX_LIST_LEN: usize = 1 << 40;

/// A connection of either kind, usable with any redis-rs command.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

enum Backend {
    Single(ConnectionManager),
    Cluster(Box<LazyCluster>),
    Sentinel(SentinelMaster),
}

/// A cluster connection made on first successful use.
struct LazyCluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

/// A [`Store`] backed by Redis or Redis Cluster.
pub struct RedisStore {
    backend: Backend,
    op_timeout: Duration,
    /// Password forms (raw and percent-decoded) scrubbed from error messages.
    secrets: Vec<String>,
    /// The URL with its password hidden, for logs.
    redacted_url: String,
    incr_window: Script,
    cas: Script,
    push_capped: Script,
    touch_member: Script,
    incr_by_once: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.redacted_url)
            .field("kind", &self.kind())
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

/// The password part of a URL's userinfo, raw and percent-decoded.
fn url_secrets(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let Some((_, raw)) = userinfo.split_once(':') else {
        return Vec::new();
    };
    password_forms(raw)
}

/// A password as written in a URL and percent-decoded (empty → none).
fn password_forms(raw: &str) -> Vec<String> {
    if raw.is_empty() {
        return Vec::new();
    }
    let mut out = vec![raw.to_string()];
    if let Ok(decoded) = percent_encoding::percent_decode_str(raw).decode_utf8() {
        if decoded != raw && !decoded.is_empty() {
            out.push(decoded.into_owned());
        }
    }
    out
}

/// `redis+cluster://[userinfo@]h1:p1,h2:p2[/db]` → one `redis://` URL per node.
fn cluster_node_urls(node_scheme: &str, rest: &str) -> anyhow::Result<Vec<String>> {
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{node_scheme}://{userinfo}{h}{tail}"))
        .collect();
    anyhow::ensure!(!nodes.is_empty(), "no cluster node given");
    Ok(nodes)
}

impl RedisStore {
    /// Builds the store from `store.url`, `store.op_timeout_ms` and
    /// `store.tls_ca_file` without waiting for Redis (connections are made on first
    /// use and re-made after failures). Must be called inside a Tokio runtime.
    pub fn new(cfg: &StoreConfig) -> anyhow::Result<Self> {
        let redacted_url = cfg.url.redacted();
        let op_timeout = Duration::from_millis(cfg.op_timeout_ms.max(1));
        let rest = cfg.url.after_scheme();
        let (tls, cluster) = match *cfg.url.kind() {
            StoreUrl::Redis { tls, cluster } => (tls, cluster),
            StoreUrl::Sentinel => (false, false),
            StoreUrl::Memory => anyhow::bail!("store.url = {redacted_url:?}: not a Redis URL"),
        };
        let certs = if cfg.tls_ca_file.is_empty() {
            None
        } else {
            anyhow::ensure!(
                tls,
                "store.tls_ca_file is set but store.url ({redacted_url:?}) does not use TLS (rediss://)"
            );
            let pem = std::fs::read(&cfg.tls_ca_file)
                .with_context(|| format!("store.tls_ca_file = {:?}", cfg.tls_ca_file))?;
            Some(::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            })
        };
        let sentinel = if matches!(cfg.url.kind(), StoreUrl::Sentinel) {
            let parsed = crate::store_url::SentinelUrl::parse(cfg.url.expose())
                .map_err(|why| anyhow::anyhow!("store.url = {redacted_url:?}: {why}"))?;
            Some(parsed)
        } else {
            None
        };
        let mut secrets = url_secrets(cfg.url.expose());
        if let Some(pw) = sentinel.as_ref().and_then(|u| u.sentinel_password.as_ref()) {
            secrets.extend(password_forms(pw));
        }
        // Name the key, and make sure no password leaks through redis-rs's message.
        let bad_url = |e: RedisError| {
            let mut msg = e.to_string();
            for s in &secrets {
                msg = msg.replace(s.as_str(), "***");
            }
            anyhow::anyhow!("store.url = {redacted_url:?}: {msg}")
        };
        let backend = if let Some(url) = sentinel {
            Backend::Sentinel(
                SentinelMaster::new(url, op_timeout, secrets.clone()).map_err(bad_url)?,
            )
        } else if cluster {
            let node_scheme = if tls { "rediss" } else { "redis" };
            let nodes = cluster_node_urls(node_scheme, rest)
                .with_context(|| format!("store.url = {redacted_url:?}"))?;
            let mut builder = ClusterClient::builder(nodes)
                .connection_timeout(op_timeout)
                .response_timeout(op_timeout);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            Backend::Cluster(Box::new(LazyCluster {
                client: builder.build().map_err(bad_url)?,
                conn: OnceCell::new(),
            }))
        } else {
            let client = match certs {
                Some(certs) => ::redis::Client::build_with_tls(cfg.url.expose(), certs),
                None => ::redis::Client::open(cfg.url.expose()),
            }
            .map_err(bad_url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(op_timeout))
                .set_response_timeout(Some(op_timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1));
            Backend::Single(
                ConnectionManager::new_lazy_with_config(client, config).map_err(bad_url)?,
            )
        };
        Ok(Self {
            backend,
            op_timeout,
            secrets,
            redacted_url,
            incr_window: Script::new(INCR_WINDOW_LUA),
            cas: Script::new(CAS_LUA),
            push_capped: Script::new(PUSH_CAPPED_LUA),
            touch_member: Script::new(TOUCH_MEMBER_LUA),
            incr_by_once: Script::new(INCR_BY_ONCE_LUA),
        })
    }

    /// [`RedisStore::new`], then one `PING`: an unreachable Redis is logged as a
    /// warning, not an error, and the store keeps trying to reconnect.
    pub async fn open(cfg: &StoreConfig) -> anyhow::Result<Self> {
        let store = Self::new(cfg)?;
        match store.ping().await {
            Ok(latency) => tracing::info!(
                url = %store.redacted_url,
                kind = store.kind(),
                latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                "store connected"
            ),
            Err(e) => tracing::warn!(
                url = %store.redacted_url,
                error = %e,
                "store unreachable at start; serving anyway and reconnecting in the background"
            ),
        }
        Ok(store)
    }

    async fn conn(&self) -> RedisResult<Conn> {
        match &self.backend {
            Backend::Single(m) => Ok(Conn::Single(m.clone())),
            Backend::Cluster(lazy) => lazy
                .conn
                .get_or_try_init(|| lazy.client.get_async_connection())
                .await
                .cloned()
                .map(Conn::Cluster),
            Backend::Sentinel(s) => Ok(Conn::Sentinel(s.conn())),
        }
    }

    fn scrub(&self, mut msg: String) -> String {
        for s in &self.secrets {
            msg = msg.replace(s.as_str(), "***");
        }
        msg
    }

    fn map_err(&self, e: RedisError) -> StoreError {
        if e.is_timeout() {
            return StoreError::Timeout;
        }
        let msg = self.scrub(e.to_string());
        let type_error = e.kind() == ::redis::ErrorKind::UnexpectedReturnType
            || e.code() == Some("WRONGTYPE")
            || msg.contains("WRONGTYPE")
            || msg.contains("not an integer");
        if type_error {
            StoreError::Malformed(msg)
        } else {
            StoreError::Unavailable(msg)
        }
    }

    /// Runs one operation under `store.op_timeout_ms`.
    async fn run<T, Fut>(&self, op: Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = RedisResult<T>>,
    {
        match tokio::time::timeout(self.op_timeout, op).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_err(e)),
        }
    }
}

fn add_write(p: &mut Pipeline, w: &Write) {
    match w {
        Write::Set { key, value, ttl } => p
            .cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl_millis(*ttl))
            .ignore(),
        Write::Expire { key, ttl } => p.cmd("PEXPIRE").arg(key).arg(ttl_millis(*ttl)).ignore(),
        Write::Delete { key } => p.cmd("DEL").arg(key).ignore(),
    };
}

fn write_key(w: &Write) -> &str {
    match w {
        Write::Set { key, .. } | Write::Expire { key, .. } | Write::Delete { key } => key,
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // On a cluster redis-rs splits a multi-slot MGET per slot and reassembles it.
        self.run(async {
            let mut c = self.conn().await?;
            ::redis::cmd("MGET").arg(keys).query_async(&mut c).await
        })
        .await
    }

    async fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.run(async {
            let mut c = self.conn().await?;
            if !matches!(c, Conn::Cluster(_)) {
                let mut p = ::redis::pipe();
                for w in writes {
                    add_write(&mut p, w);
                }
                return p.query_async::<()>(&mut c).await;
            }
            // A cluster pipeline must stay in one slot: one pipeline per slot, sent
            // concurrently, order kept within each slot.
            let mut by_slot: Vec<(Slot, Pipeline)> = Vec::new();
            for w in writes {
                let slot = Slot::for_key(write_key(w));
                let i = match by_slot.iter().position(|(s, _)| *s == slot) {
                    Some(i) => i,
                    None => {
                        by_slot.push((slot, ::redis::pipe()));
                        by_slot.len() - 1
                    }
                };
                add_write(&mut by_slot[i].1, w);
            }
            let sends = by_slot.into_iter().map(|(_, p)| {
                let mut c = c.clone();
                async move { p.query_async::<()>(&mut c).await }
            });
            futures_util::future::try_join_all(sends).await.map(|_| ())
        })
        .await
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let ms: i64 = self
            .run(async {
                let mut c = self.conn().await?;
                ::redis::cmd("PTTL").arg(key).query_async(&mut c).await
            })
            .await?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }

    async fn incr_window(&self, key: &str, window: Duration) -> Result<WindowCount, StoreError> {
        let (count, ttl): (i64, i64) = self
            .run(async {
                let mut c = self.conn().await?;
                self.incr_window
                    .key(key)
                    .arg(ttl_millis(window))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let count = u64::try_from(count)
            .map_err(|_| StoreError::Malformed(format!("counter is negative: {count}")))?;
        Ok(WindowCount {
            count,
            ttl: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
        })
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let swapped: i64 = self
            .run(async {
                let mut c = self.conn().await?;
                self.cas
                    .key(key)
                    .arg(if expected.is_some() { "1" } else { "0" })
                    .arg(expected.unwrap_or(""))
                    .arg(new)
                    .arg(ttl_millis(ttl))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(swapped == 1)
    }

    async fn push_capped(
        &self,
        key: &str,
        value: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.run(async {
            let mut c = self.conn().await?;
            self.push_capped
                .key(key)
                .arg(value)
                .arg(cap.min(MAX_LIST_LEN))
                .arg(ttl_millis(ttl))
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await?;
        Ok(())
    }

    async fn list_range(&self, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = limit.min(MAX_LIST_LEN) - 1;
        self.run(async {
            let mut c = self.conn().await?;
            ::redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(stop)
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn touch_member(
        &self,
        key: &str,
        member: &str,
        now_ms: u64,
        idle: Duration,
        max: u64,
    ) -> Result<MemberTouch, StoreError> {
        // Lua numbers are doubles: scores and the cap stay below 2^53.
        let now_ms = now_ms.min(1 << 52);
        let (admitted, count): (i64, i64) = self
            .run(async {
                let mut c = self.conn().await?;
                self.touch_member
                    .key(key)
                    .arg(member)
                    .arg(now_ms)
                    .arg(ttl_millis(idle))
                    .arg(max.min(1 << 40))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(MemberTouch {
            admitted: admitted == 1,
            count: u64::try_from(count).unwrap_or(0),
        })
    }

    async fn members_since(
        &self,
        key: &str,
        since_ms: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let pairs: Vec<(String, f64)> = self
            .run(async {
                let mut c = self.conn().await?;
                ::redis::cmd("ZRANGE")
                    .arg(key)
                    .arg("+inf")
                    .arg(since_ms.min(1 << 52))
                    .arg("BYSCORE")
                    .arg("REV")
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        // Scores are whole milliseconds below 2^53, so the conversion is exact.
        Ok(pairs
            .into_iter()
            .map(|(m, s)| (m, s.max(0.0) as u64))
            .collect())
    }

    async fn incr_by_once(
        &self,
        key: &str,
        marker: &str,
        by: u64,
        window: Duration,
    ) -> Result<u64, StoreError> {
        let by = i64::try_from(by)
            .map_err(|_| StoreError::Malformed("increment out of range".into()))?;
        let n: i64 = self
            .run(async {
                let mut c = self.conn().await?;
                self.incr_by_once
                    .key(key)
                    .key(marker)
                    .arg(by)
                    .arg(ttl_millis(window))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        u64::try_from(n).map_err(|_| StoreError::Malformed(format!("counter is negative: {n}")))
    }

    async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        self.run(async {
            let mut c = self.conn().await?;
            ::redis::cmd("PING").query_async::<Value>(&mut c).await
        })
        .await?;
        Ok(start.elapsed())
    }

    fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Single(_) => "redis",
            Backend::Cluster(_) => "redis-cluster",
            Backend::Sentinel(_) => "redis-sentinel",
        }
    }

    fn topology(&self) -> Option<String> {
        match &self.backend {
            Backend::Sentinel(s) => s.master_addr(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_carry_credentials_and_tls() {
        assert_eq!(
            cluster_node_urls("rediss", ":p%40w@a:1, b:2").unwrap(),
            ["rediss://:p%40w@a:1", "rediss://:p%40w@b:2"]
        );
        assert_eq!(
            cluster_node_urls("redis", "a:1,b:2/0").unwrap(),
            ["redis://a:1/0", "redis://b:2/0"]
        );
        assert!(cluster_node_urls("redis", " , ").is_err());
    }

    #[test]
    fn secrets_found_raw_and_decoded() {
        assert_eq!(url_secrets("redis://:p%40ss@h:1/2"), ["p%40ss", "p@ss"]);
        assert_eq!(url_secrets("redis://user:pw@h:1"), ["pw"]);
        assert!(url_secrets("redis://h:1/2").is_empty());
        assert_eq!(
            url_secrets("redis+cluster://:x@a:1,b:2"),
            ["x"],
            "cluster URL"
        );
    }

    #[tokio::test]
    async fn bad_urls_rejected_without_password() {
        // Refused by the client (the URL parses as a Redis URL) or when the
        // configuration is read; either way the password is never in the message.
        for url in [
            "redis://:hunter2@h:1/notadb",
            "redis+cluster://:hunter2@",
            "mongo://:hunter2@h",
            "redis+sentinel://:hunter2@h:1",
            "redis+sentinel://h:1/m?sentinel_password=hunter2&x=1",
            "rediss+sentinel://:hunter2@h:1/m",
        ] {
            let err = match url.parse::<crate::config::StoreLocation>() {
                Ok(loc) => {
                    let cfg = StoreConfig {
                        url: loc,
                        ..StoreConfig::default()
                    };
                    let err = format!("{:#}", RedisStore::new(&cfg).unwrap_err());
                    assert!(err.contains("store.url"), "{err}");
                    err
                }
                Err(err) => err,
            };
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn ca_file_needs_tls() {
        let cfg = StoreConfig {
            url: "redis://127.0.0.1:1".parse().unwrap(),
            tls_ca_file: "/nonexistent".into(),
            ..StoreConfig::default()
        };
        let err = format!("{:#}", RedisStore::new(&cfg).unwrap_err());
        assert!(err.contains("store.tls_ca_file"), "{err}");
    }
}
