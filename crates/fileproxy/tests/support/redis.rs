//! Real `redis-server` processes for tests: on a free loopback port, no persistence,
//! killed on drop. Supports a password, TLS (certificates made with rcgen), pausing
//! (SIGSTOP/SIGCONT), stop/restart on the same port, small Redis Clusters, and a
//! master with a replica watched by three sentinels.

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server may take to accept connections after being started.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// A port nobody listens on right now, for a server another process will bind.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`): a port the OS hands
/// out for `bind(0)` lies inside that range, where any test's outgoing connection may
/// take it before the server binds it ("Address already in use"). Below it, only an
/// explicit bind can, and every test binds through here: ports go round a per-process
/// sequence that starts at an offset drawn from the process id, and each is checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FLOOR: u32 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_start.saturating_sub(FLOOR);
    if span >= 1_000 {
        let base = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = FLOOR + (base + n) % span;
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// PEM files of a throwaway CA and a server certificate for 127.0.0.1/localhost.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate (give it to clients as trust root).
    pub ca: PathBuf,
    /// Server certificate, signed by the CA.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Generates a CA and a server certificate into `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fileproxy test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();

        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&files.ca, ca_cert.pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

/// Options of a [`RedisServer`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    password: Option<String>,
    tls: Option<TlsFiles>,
    cluster: bool,
    port: Option<u16>,
    extra: Vec<String>,
    /// Config file text of a sentinel (runs `redis-server <file> --sentinel`).
    sentinel_conf: Option<String>,
}

impl RedisServerBuilder {
    /// Requires this password (`--requirepass`).
    pub fn password(mut self, pw: &str) -> Self {
        self.password = Some(pw.to_string());
        self
    }

    /// Serves TLS only (`--tls-port`, plain port off).
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Runs as a Redis Cluster node.
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Listens on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Runs as a sentinel with this config file text (written into the server's own
    /// folder, which the sentinel rewrites).
    pub fn sentinel(mut self, conf: &str) -> Self {
        self.sentinel_conf = Some(conf.to_string());
        self
    }

    /// Adds raw `redis-server` arguments.
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }

    /// Starts the server, panicking with its log on failure.
    pub fn start(self) -> RedisServer {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server; `Err` carries the reason and the server's log.
    pub fn try_start(self) -> Result<RedisServer, String> {
        let fixed = self.port;
        let mut last = String::new();
        // A free port can be taken by someone else before redis-server binds it: retry.
        for _ in 0..5 {
            let mut server = RedisServer {
                port: fixed.unwrap_or_else(free_port),
                child: None,
                bus_port: if self.cluster { free_port() } else { 0 },
                opts: Box::new(self.clone()),
                dir: tempfile::tempdir().map_err(|e| e.to_string())?,
                paused: false,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) if fixed.is_some() => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// A running `redis-server` child process.
pub struct RedisServer {
    /// Port it listens on (the TLS port when TLS is on).
    pub port: u16,
    child: Option<Child>,
    /// Cluster bus port (kept across restarts).
    bus_port: u16,
    opts: Box<RedisServerBuilder>,
    dir: tempfile::TempDir,
    paused: bool,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .finish()
    }
}

impl RedisServer {
    /// Starts a plain server on a free port.
    pub fn start() -> RedisServer {
        Self::builder().start()
    }

    /// Options for a server.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// `redis://[:password@]127.0.0.1:port` (`rediss://` with TLS); the password is
    /// percent-encoded.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}127.0.0.1:{}", self.userinfo(), self.port)
    }

    /// `:password@` (percent-encoded) or empty.
    pub fn userinfo(&self) -> String {
        match &self.opts.password {
            Some(pw) => format!(
                ":{}@",
                percent_encoding::utf8_percent_encode(pw, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => String::new(),
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's working directory (holds its log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<(), String> {
        // A restart must not see the previous run's "ready" line.
        let _ = std::fs::remove_file(self.log_path());
        let mut cmd = Command::new("redis-server");
        if let Some(conf) = &self.opts.sentinel_conf {
            let path = self.dir.path().join("sentinel.conf");
            std::fs::write(&path, conf).map_err(|e| e.to_string())?;
            cmd.arg(path).arg("--sentinel");
        }
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path());
        match &self.opts.tls {
            Some(t) => {
                cmd.arg("--port")
                    .arg("0")
                    .arg("--tls-port")
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&t.cert)
                    .arg("--tls-key-file")
                    .arg(&t.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&t.ca)
                    .arg("--tls-auth-clients")
                    .arg("no");
                if self.opts.cluster {
                    cmd.arg("--tls-cluster").arg("yes");
                }
            }
            None => {
                cmd.arg("--port").arg(self.port.to_string());
            }
        }
        if let Some(pw) = &self.opts.password {
            cmd.arg("--requirepass").arg(pw);
            if self.opts.cluster {
                cmd.arg("--masterauth").arg(pw);
            }
        }
        if self.opts.cluster {
            cmd.arg("--cluster-enabled")
                .arg("yes")
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"))
                .arg("--cluster-node-timeout")
                .arg("5000")
                // The bus port defaults to port + 10000, which may be taken or > 65535.
                .arg("--cluster-port")
                .arg(self.bus_port.to_string());
        }
        cmd.args(&self.opts.extra);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let deadline = Instant::now() + READY_WITHIN;
        let addr: SocketAddr = self.addr().parse().map_err(|e| format!("{e}"))?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                return Err(format!(
                    "redis-server on port {} exited ({status}): {stderr}\n{}",
                    self.port,
                    self.log()
                ));
            }
            if self.answers(addr) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} not ready in {READY_WITHIN:?}\n{}",
                    self.port,
                    self.log()
                ));
            }
            sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Whether our server listens (plain: answers PING, even with NOAUTH).
    fn answers(&self, addr: SocketAddr) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        if self.opts.tls.is_some() {
            // The log line proves it is ours and fully started.
            return self.log().contains("Ready to accept connections");
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(1) if b[0] == b'+' || b[0] == b'-')
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// Stops the server if running and starts it again on the same port (empty).
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The old socket may linger for a moment; retry briefly.
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            sleep(Duration::from_millis(100));
        }
        panic!("restart failed: {last}");
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// Unfreezes a paused process (SIGCONT).
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    fn signal(&self, sig: libc::c_int) {
        let child = self.child.as_ref().expect("server not running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Runs `redis-cli` against this server (with its password and TLS) and returns
    /// stdout, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string());
        if let Some(pw) = &self.opts.password {
            cmd.arg("--no-auth-warning").arg("-a").arg(pw);
        }
        if let Some(t) = &self.opts.tls {
            cmd.arg("--tls").arg("--cacert").arg(&t.ca);
        }
        cli_output(cmd.args(args))
    }
}

impl RedisServer {
    /// Waits until every replica of this primary has acknowledged all its writes, by
    /// replication offsets (Redis replicates asynchronously, and `WAIT` from a fresh
    /// client only covers that client's own writes). Panics after `limit`.
    pub fn wait_replicated(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let info = self.cli(&["INFO", "replication"]);
            let primary: Option<u64> = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
                .and_then(|v| v.trim().parse().ok());
            let replicas: Vec<u64> = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("offset="))
                .filter_map(|l| {
                    l.split(',')
                        .find_map(|kv| kv.strip_prefix("offset="))
                        .and_then(|v| v.trim().parse().ok())
                })
                .collect();
            if let Some(primary) = primary {
                if !replicas.is_empty() && replicas.iter().all(|r| *r >= primary) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "replicas never caught up with the primary on {}: {info}",
                self.port
            );
            sleep(Duration::from_millis(50));
        }
    }
}

fn cli_output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run redis-cli");
    assert!(
        out.status.success(),
        "redis-cli failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster, each node a [`RedisServer`] (primaries only, or with replicas).
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
    scheme: &'static str,
}

impl RedisCluster {
    /// Starts `n` (≥ 3) cluster nodes, creates the cluster over them and waits until
    /// every node reports `cluster_state:ok`.
    pub fn start(n: usize, base: RedisServerBuilder) -> Result<RedisCluster, String> {
        Self::start_replicated(n, 0, base)
    }

    /// Starts `primaries` (≥ 3) primaries with `replicas` replicas each (nodes
    /// `0..primaries` are the primaries), and waits until every node is ok. With
    /// replicas, `base` should lower `--cluster-node-timeout` for a quick failover.
    pub fn start_replicated(
        primaries: usize,
        replicas: usize,
        base: RedisServerBuilder,
    ) -> Result<RedisCluster, String> {
        let tls = base.tls.clone();
        let password = base.password.clone();
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(base.clone().cluster().try_start()?);
        }
        let mut cmd = Command::new("redis-cli");
        if let Some(pw) = &password {
            cmd.arg("--no-auth-warning").arg("-a").arg(pw);
        }
        if let Some(t) = &tls {
            cmd.arg("--tls").arg("--cacert").arg(&t.ca);
        }
        cmd.arg("--cluster").arg("create");
        for node in &nodes {
            cmd.arg(node.addr());
        }
        cmd.arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes");
        let out = cmd.output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = RedisCluster {
            scheme: if tls.is_some() {
                "rediss+cluster"
            } else {
                "redis+cluster"
            },
            nodes,
        };
        cluster.wait_ok()?;
        if replicas > 0 {
            cluster.wait_replicas_synced()?;
        }
        Ok(cluster)
    }

    /// Waits (up to 30 s) until every replica's link to its primary is up (a replica
    /// that never synced cannot take over).
    pub fn wait_replicas_synced(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let info = node.cli(&["INFO", "replication"]);
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("replica {} never synced: {info}", node.addr()));
                }
                sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Waits (up to 30 s) until every node reports `cluster_state:ok`.
    pub fn wait_ok(&self) -> Result<(), String> {
        self.wait_ok_except(&[])
    }

    /// Like [`RedisCluster::wait_ok`], skipping the nodes at `skip` (stopped ones).
    pub fn wait_ok_except(&self, skip: &[usize]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, node) in self.nodes.iter().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            loop {
                let info = node.cli(&["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("cluster not ok on {}: {info}", node.addr()));
                }
                sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Whether node `i` is a primary now (`ROLE`).
    pub fn is_primary(&self, i: usize) -> bool {
        self.nodes[i].cli(&["ROLE"]).starts_with("master")
    }

    /// `redis+cluster://[:password@]h1:p1,h2:p2,…` (`rediss+cluster://` with TLS).
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(RedisServer::addr).collect();
        let userinfo = self.nodes.first().map(|n| n.userinfo()).unwrap_or_default();
        format!("{}://{userinfo}{}", self.scheme, addrs.join(","))
    }
}

/// A master and one replica (`--replicaof`) watched by three sentinels as
/// [`RedisSentinels::NAME`] (quorum 2, down after 1 s, failover timeout 3 s).
#[derive(Debug)]
pub struct RedisSentinels {
    /// Data nodes: `[0]` starts as the master, `[1]` as its replica.
    pub nodes: Vec<RedisServer>,
    /// The three sentinels.
    pub sentinels: Vec<RedisServer>,
    password: Option<String>,
    sentinel_password: Option<String>,
}

impl RedisSentinels {
    /// The monitored master's name.
    pub const NAME: &'static str = "m";

    /// Starts everything; `password` protects the data nodes (`requirepass` +
    /// `masterauth`), `sentinel_password` the sentinels. Waits until the replica is in
    /// sync and every sentinel knows the replica and the two other sentinels.
    pub fn start(
        password: Option<&str>,
        sentinel_password: Option<&str>,
    ) -> Result<RedisSentinels, String> {
        let mut base = RedisServer::builder()
            .arg("--repl-diskless-sync-delay")
            .arg("0");
        if let Some(pw) = password {
            base = base.password(pw).arg("--masterauth").arg(pw);
        }
        let master = base.clone().try_start()?;
        let replica = base
            .arg("--replicaof")
            .arg("127.0.0.1")
            .arg(&master.port.to_string())
            .try_start()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = replica.cli(&["INFO", "replication"]);
            if info.contains("master_link_status:up") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("replica never synced: {info}"));
            }
            sleep(Duration::from_millis(100));
        }
        let mut conf = format!(
            "sentinel resolve-hostnames no\n\
             sentinel monitor {name} 127.0.0.1 {port} 2\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 3000\n",
            name = Self::NAME,
            port = master.port
        );
        if let Some(pw) = password {
            conf.push_str(&format!("sentinel auth-pass {} {pw:?}\n", Self::NAME));
        }
        if let Some(pw) = sentinel_password {
            conf.push_str(&format!("sentinel sentinel-pass {pw:?}\n"));
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let mut b = RedisServer::builder().sentinel(&conf);
            if let Some(pw) = sentinel_password {
                b = b.password(pw);
            }
            sentinels.push(b.try_start()?);
        }
        let set = RedisSentinels {
            nodes: vec![master, replica],
            sentinels,
            password: password.map(str::to_string),
            sentinel_password: sentinel_password.map(str::to_string),
        };
        // Each sentinel must know the replica and the others, or no failover happens.
        for s in &set.sentinels {
            loop {
                let m = set.sentinel_view(s);
                let field = |k: &str| m.get(k).cloned().unwrap_or_default();
                if field("num-slaves") == "1" && field("num-other-sentinels") == "2" {
                    break;
                }
                if Instant::now() > deadline + Duration::from_secs(30) {
                    return Err(format!("sentinel {} never saw everyone: {m:?}", s.port));
                }
                sleep(Duration::from_millis(100));
            }
        }
        Ok(set)
    }

    /// `SENTINEL MASTER <name>` of sentinel `s`, as field → value.
    fn sentinel_view(&self, s: &RedisServer) -> std::collections::BTreeMap<String, String> {
        let out = s.cli(&["SENTINEL", "MASTER", Self::NAME]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter_map(|kv| Some((kv.first()?.to_string(), kv.get(1)?.to_string())))
            .collect()
    }

    /// `redis+sentinel://[:password@]127.0.0.1:s1,…/m[?sentinel_password=…]`
    /// (passwords percent-encoded).
    pub fn url(&self) -> String {
        let enc = |pw: &str| {
            percent_encoding::utf8_percent_encode(pw, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        };
        let userinfo = self
            .password
            .as_deref()
            .map(|pw| format!(":{}@", enc(pw)))
            .unwrap_or_default();
        let hosts: Vec<String> = self.sentinels.iter().map(RedisServer::addr).collect();
        let query = self
            .sentinel_password
            .as_deref()
            .map(|pw| format!("?sentinel_password={}", enc(pw)))
            .unwrap_or_default();
        format!(
            "redis+sentinel://{userinfo}{}/{}{query}",
            hosts.join(","),
            Self::NAME
        )
    }

    /// Which data node says `ROLE` master now (skipping stopped ones).
    pub fn master_index(&self, skip: &[usize]) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|i| !skip.contains(i))
            .find(|&i| self.nodes[i].cli(&["ROLE"]).starts_with("master"))
    }

    /// Waits (up to 60 s) until node `to` is master and every live sentinel names it.
    pub fn wait_master(&self, to: usize) -> Result<Duration, String> {
        let start = Instant::now();
        let want = self.nodes[to].port.to_string();
        loop {
            let is_master = self.nodes[to].cli(&["ROLE"]).starts_with("master");
            let named = self.sentinels.iter().all(|s| {
                s.cli(&["SENTINEL", "get-master-addr-by-name", Self::NAME])
                    .lines()
                    .nth(1)
                    == Some(want.as_str())
            });
            if is_master && named {
                return Ok(start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("node {to} never became the named master"));
            }
            sleep(Duration::from_millis(50));
        }
    }
}

/// A loopback TCP relay in front of a server that holds every byte sent to it for an
/// adjustable delay (order kept, nothing lost): a slow network or a slow Redis, for
/// real clients on real sockets.
#[derive(Debug)]
pub struct SlowLink {
    /// Where clients connect.
    pub addr: SocketAddr,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SlowLink {
    /// Starts relaying to `target` (no delay yet). Needs a Tokio runtime.
    pub async fn start(target: SocketAddr) -> SlowLink {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let delay_ms = std::sync::Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let delay = delay.clone();
                let (mut client_r, mut client_w) = client.into_split();
                let (mut server_r, mut server_w) = server.into_split();
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
                // Client → server: every chunk waits out the delay set when it arrived.
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = client_r.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let at =
                            Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
                        if tx.send((at, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((at, chunk)) = rx.recv().await {
                        tokio::time::sleep_until(at.into()).await;
                        if server_w.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
                });
            }
        });
        SlowLink { addr, delay_ms }
    }

    /// Holds each byte sent from now on for `d`.
    pub fn set_delay(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}
