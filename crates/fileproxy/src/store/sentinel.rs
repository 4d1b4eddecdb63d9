//! Redis Sentinel for the Redis store: finds the current master
//! through the sentinels and follows failovers without a restart.
//!
//! redis-rs's own `SentinelClient` looks the master up once and hands back a plain
//! connection; nothing looks again after a failover or on `READONLY`, and a
//! `ConnectionManager` on top would reconnect to the old address. So this layer keeps
//! the lookup itself (the protocol is still redis-rs's: its clients, commands and
//! multiplexed connections):
//!
//! * **Discovery** asks the sentinels in turn `SENTINEL get-master-addr-by-name
//!   <name>`, connects to that address and checks it with `ROLE` (it must say
//!   `master`); the first sentinel whose answer passes wins. Every step is bounded by
//!   `store.op_timeout_ms`.
//! * **Re-discovery** runs when an operation meets a broken connection, an I/O error, a
//!   `READONLY`, `LOADING` or `MASTERDOWN` reply, or runs out of time (the operation is
//!   dropped by the store's deadline). It is single-flight (any number of failing
//!   operations share one lookup, which runs in its own task so no caller's deadline
//!   cancels it) and rate-limited ([`MIN_INTERVAL`]); a failed lookup keeps the old
//!   connection, which may still come back.
//! * **Retry**: an operation is sent once more on the new master when that is safe:
//!   reads always, writes only when the reply proves they were not applied
//!   (`READONLY`, `LOADING`, `MASTERDOWN`) — never after an I/O error or a timeout,
//!   where a write may have landed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    Role, ServerErrorKind, Value,
};
use tokio::sync::watch;

use crate::store_url::SentinelUrl;

/// Shortest time between two lookups of the master.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// The master as last found: its address and a connection to it.
#[derive(Clone)]
struct Master {
    addr: String,
    conn: MultiplexedConnection,
}

#[derive(Default)]
struct State {
    master: Option<Master>,
    /// Bumped with every new master connection.
    generation: u64,
    discovering: bool,
    last_start: Option<Instant>,
    /// Why the last lookup failed (passwords scrubbed); `None` after a success.
    last_error: Option<String>,
}

struct Inner {
    url: SentinelUrl,
    /// One client per sentinel, in the URL's order.
    sentinels: Vec<Client>,
    /// Connections to the sentinels, made on demand and dropped on error.
    sentinel_conns: Mutex<Vec<Option<MultiplexedConnection>>>,
    op_timeout: Duration,
    secrets: Vec<String>,
    state: Mutex<State>,
    /// Counts finished lookups; waiters watch it.
    finished: watch::Sender<u64>,
}

/// The sentinel-managed master of one `redis+sentinel://` URL. Cheap to clone.
#[derive(Clone)]
pub struct SentinelMaster {
    inner: Arc<Inner>,
}

impl SentinelMaster {
    /// Builds the clients (no connection yet). `secrets` are scrubbed from every logged
    /// or returned message.
    pub fn new(url: SentinelUrl, op_timeout: Duration, secrets: Vec<String>) -> RedisResult<Self> {
        let auth = url
            .sentinel_password
            .as_ref()
            .map(|pw| format!(":{pw}@"))
            .unwrap_or_default();
        let sentinels = url
            .sentinels
            .iter()
            .map(|h| Client::open(format!("redis://{auth}{h}")))
            .collect::<RedisResult<Vec<_>>>()?;
        let conns = sentinels.iter().map(|_| None).collect();
        let (finished, _) = watch::channel(0);
        Ok(SentinelMaster {
            inner: Arc::new(Inner {
                url,
                sentinels,
                sentinel_conns: Mutex::new(conns),
                op_timeout,
                secrets,
                state: Mutex::new(State::default()),
                finished,
            }),
        })
    }

    /// `host:port` of the master in use, if one was found.
    pub fn master_addr(&self) -> Option<String> {
        lock(&self.inner.state)
            .master
            .as_ref()
            .map(|m| m.addr.clone())
    }

    /// A connection-like handle for redis-rs commands and scripts.
    pub fn conn(&self) -> SentinelConn {
        SentinelConn {
            master: self.clone(),
        }
    }

    /// The current master connection, looking the master up when none is known yet.
    async fn current(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let generation = {
            let st = lock(&self.inner.state);
            if let Some(m) = &st.master {
                return Ok((st.generation, m.conn.clone()));
            }
            st.generation
        };
        self.rediscover(generation).await?;
        let st = lock(&self.inner.state);
        match &st.master {
            Some(m) => Ok((st.generation, m.conn.clone())),
            None => Err(self.inner.no_master(&st)),
        }
    }

    /// The connection of `failed` generation failed: makes sure a lookup runs (or waits
    /// for the one running) unless a newer connection is already there. `Ok` when a
    /// master newer than `failed` is in place afterwards.
    async fn rediscover(&self, failed: u64) -> RedisResult<()> {
        let mut finished = {
            let mut st = lock(&self.inner.state);
            if st.generation != failed && st.master.is_some() {
                return Ok(());
            }
            if !st.discovering {
                if st.last_start.is_some_and(|t| t.elapsed() < MIN_INTERVAL) {
                    return Err(self.inner.no_master(&st));
                }
                self.start_lookup(&mut st);
            }
            // Subscribed under the lock: the lookup's end cannot be missed.
            self.inner.finished.subscribe()
        };
        let _ = finished.changed().await;
        let st = lock(&self.inner.state);
        if st.generation != failed && st.master.is_some() {
            Ok(())
        } else {
            Err(self.inner.no_master(&st))
        }
    }

    /// An operation on `generation` ran out of time: starts a lookup in the background
    /// (if that connection is still current and the rate limit allows), waits for none.
    fn suspect(&self, generation: u64) {
        let mut st = lock(&self.inner.state);
        let due = !st.last_start.is_some_and(|t| t.elapsed() < MIN_INTERVAL);
        if st.generation == generation && !st.discovering && due {
            self.start_lookup(&mut st);
        }
    }

    /// Spawns one lookup; `st` must be locked and not discovering.
    fn start_lookup(&self, st: &mut State) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        st.discovering = true;
        st.last_start = Some(Instant::now());
        let inner = Arc::clone(&self.inner);
        rt.spawn(async move {
            let found = inner.discover().await;
            {
                let mut st = lock(&inner.state);
                st.discovering = false;
                match found {
                    Ok(m) => {
                        let changed = !st.master.as_ref().is_some_and(|old| old.addr == m.addr);
                        if changed || st.last_error.is_some() {
                            tracing::info!(
                                master = %m.addr,
                                name = %inner.url.master,
                                "store: sentinel master in use"
                            );
                        }
                        st.master = Some(m);
                        st.generation += 1;
                        st.last_error = None;
                    }
                    Err(why) => {
                        if st.last_error.is_none() {
                            tracing::warn!(
                                name = %inner.url.master,
                                error = %why,
                                "store: no sentinel master reachable; retrying on use"
                            );
                        } else {
                            tracing::debug!(error = %why, "store: sentinel lookup failed");
                        }
                        st.last_error = Some(why);
                    }
                }
            }
            inner.finished.send_modify(|n| *n += 1);
        });
    }

    /// Sends `req` to the master, re-discovering and retrying once when safe.
    async fn call(&self, req: Req<'_>) -> RedisResult<Reply> {
        let read_only = req.read_only();
        let mut retried = false;
        loop {
            let (generation, mut conn) = self.current().await?;
            let mut watch = Deadline {
                master: self,
                generation,
                started: Instant::now(),
                armed: true,
            };
            let result = req.send(&mut conn).await;
            watch.armed = false;
            let err = match result {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            let Some(failure) = failover_error(&err) else {
                return Err(err);
            };
            let replaced = self.rediscover(generation).await.is_ok();
            let safe = failure == Failure::Refused || read_only;
            if retried || !replaced || !safe {
                return Err(err);
            }
            retried = true;
        }
    }
}

/// Starts a lookup when an operation is dropped (by the store's deadline) after
/// nearly the whole `op_timeout`: the master may be frozen or cut off.
struct Deadline<'a> {
    master: &'a SentinelMaster,
    generation: u64,
    started: Instant,
    armed: bool,
}

impl Drop for Deadline<'_> {
    fn drop(&mut self) {
        let inner = &self.master.inner;
        if self.armed && self.started.elapsed() >= inner.op_timeout.mul_f32(0.9) {
            self.master.suspect(self.generation);
        }
    }
}

impl Inner {
    /// The error of an operation that has no master to go to.
    fn no_master(&self, st: &State) -> RedisError {
        let why = st
            .last_error
            .clone()
            .unwrap_or_else(|| "lookup pending".to_string());
        RedisError::from((
            ErrorKind::Io,
            "no Redis master reachable through the sentinels",
            why,
        ))
    }

    fn scrub(&self, mut msg: String) -> String {
        for s in &self.secrets {
            msg = msg.replace(s.as_str(), "***");
        }
        msg
    }

    /// Asks each sentinel in turn; returns the first master its answer names that
    /// confirms with `ROLE`.
    async fn discover(&self) -> Result<Master, String> {
        let mut why = Vec::new();
        for i in 0..self.sentinels.len() {
            let addr = match self.ask_sentinel(i).await {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    why.push(format!("sentinel {i}: master unknown"));
                    continue;
                }
                Err(e) => {
                    why.push(format!("sentinel {i}: {e}"));
                    continue;
                }
            };
            match self.connect_master(&addr).await {
                Ok(conn) => return Ok(Master { addr, conn }),
                Err(e) => why.push(format!("master {addr} (from sentinel {i}): {e}")),
            }
        }
        Err(self.scrub(why.join("; ")))
    }

    /// `SENTINEL get-master-addr-by-name` on sentinel `i`: `host:port`, or `None` when
    /// it does not know the name.
    async fn ask_sentinel(&self, i: usize) -> RedisResult<Option<String>> {
        let cached = lock(&self.sentinel_conns).get(i).cloned().flatten();
        let mut conn = match cached {
            Some(c) => c,
            None => {
                let c = self.sentinels[i]
                    .get_multiplexed_async_connection_with_config(&self.conn_config())
                    .await?;
                if let Some(slot) = lock(&self.sentinel_conns).get_mut(i) {
                    *slot = Some(c.clone());
                }
                c
            }
        };
        let answer: RedisResult<Option<(String, u16)>> = bounded(
            self.op_timeout,
            ::redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.url.master)
                .query_async(&mut conn),
        )
        .await;
        if answer.is_err() {
            if let Some(slot) = lock(&self.sentinel_conns).get_mut(i) {
                *slot = None;
            }
        }
        Ok(answer?.map(|(host, port)| {
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }))
    }

    /// Connects to `addr` with the data nodes' credentials and database; succeeds only
    /// if `ROLE` says master.
    async fn connect_master(&self, addr: &str) -> RedisResult<MultiplexedConnection> {
        let node = format!("redis://{}{addr}/{}", self.url.userinfo, self.url.db);
        let client = Client::open(node)?;
        let mut conn = bounded(
            self.op_timeout,
            client.get_multiplexed_async_connection_with_config(&self.conn_config()),
        )
        .await?;
        let role: Role =
            bounded(self.op_timeout, ::redis::cmd("ROLE").query_async(&mut conn)).await?;
        match role {
            Role::Primary { .. } => Ok(conn),
            _ => Err(RedisError::from((ErrorKind::Client, "not a master (ROLE)"))),
        }
    }

    fn conn_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(self.op_timeout))
    }
}

/// `fut` within `limit`, a timeout being an I/O error like the others.
async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "sentinel lookup step timed out",
        ))),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How an error points at a failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The node refused the command (`READONLY`, `LOADING`, `MASTERDOWN`): nothing
    /// was applied.
    Refused,
    /// The connection broke or timed out: the command may or may not have run.
    Lost,
}

fn failover_error(e: &RedisError) -> Option<Failure> {
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::ReadOnly | ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown,
        ) => Some(Failure::Refused),
        _ if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error() =>
        {
            Some(Failure::Lost)
        }
        // A script's inner error carries the node's code in its text.
        _ if e.to_string().contains("READONLY") => Some(Failure::Refused),
        _ => None,
    }
}

/// Commands that only read (or load a script), so sending them twice is harmless.
const READS: &[&[u8]] = &[
    b"GET", b"MGET", b"PTTL", b"TTL", b"LRANGE", b"ZRANGE", b"PING", b"SCRIPT", b"ROLE", b"EXISTS",
];

fn is_read(cmd: &Cmd) -> bool {
    match cmd.args_iter().next() {
        Some(::redis::Arg::Simple(name)) => READS.iter().any(|r| r.eq_ignore_ascii_case(name)),
        _ => false,
    }
}

/// One request as redis-rs hands it to a connection.
enum Req<'a> {
    One(&'a Cmd),
    Many(&'a Pipeline, usize, usize),
}

enum Reply {
    One(Value),
    Many(Vec<Value>),
}

impl Req<'_> {
    fn read_only(&self) -> bool {
        match self {
            Req::One(c) => is_read(c),
            Req::Many(p, _, _) => p.cmd_iter().all(is_read),
        }
    }

    async fn send(&self, conn: &mut MultiplexedConnection) -> RedisResult<Reply> {
        match self {
            Req::One(c) => conn.req_packed_command(c).await.map(Reply::One),
            Req::Many(p, offset, count) => conn
                .req_packed_commands(p, *offset, *count)
                .await
                .map(Reply::Many),
        }
    }
}

fn mismatch() -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "sentinel connection: reply shape mismatch",
    ))
}

/// A redis-rs connection to whatever master the sentinels name now.
#[derive(Clone)]
pub struct SentinelConn {
    master: SentinelMaster,
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.master.call(Req::One(cmd)).await? {
                Reply::One(v) => Ok(v),
                Reply::Many(_) => Err(mismatch()),
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.master.call(Req::Many(cmd, offset, count)).await? {
                Reply::Many(v) => Ok(v),
                Reply::One(_) => Err(mismatch()),
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.master.inner.url.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_told_from_writes() {
        assert!(is_read(::redis::cmd("MGET").arg("a")));
        assert!(is_read(::redis::cmd("script").arg("load")));
        assert!(!is_read(::redis::cmd("SET").arg("a").arg("b")));
        assert!(!is_read(::redis::cmd("EVALSHA").arg("x")));
        let mut p = ::redis::pipe();
        p.cmd("SET")
            .arg("a")
            .arg("b")
            .cmd("PEXPIRE")
            .arg("a")
            .arg(1);
        assert!(!Req::Many(&p, 0, 2).read_only());
    }

    #[test]
    fn failover_errors_are_classified() {
        let ro = RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        assert_eq!(failover_error(&ro), Some(Failure::Refused));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(failover_error(&io), Some(Failure::Lost));
        let wrongtype = RedisError::from((ErrorKind::Client, "WRONGTYPE"));
        assert_eq!(failover_error(&wrongtype), None);
    }
}
