//! `netem up` and `netem down`: namespaces, TUN devices, addresses, routes, sysctls, and
//! the relay in the foreground until a stop signal.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::netns;
use crate::packet::FlowKeyKind;
use crate::relay::{Relay, Report, SignalFd};
use crate::sched::{Direction, LinkParams};
use crate::tun;

/// Everything `netem up` needs, already validated by [`UpConfig::validate`].
#[derive(Debug, Clone, Serialize)]
pub struct UpConfig {
    /// Namespace holding the clients.
    pub clients_ns: String,
    /// Namespace holding the servers.
    pub servers_ns: String,
    /// Addresses of the client side (the first is the default source).
    pub client_addrs: Vec<IpAddr>,
    /// Addresses of the server side.
    pub server_addrs: Vec<IpAddr>,
    /// TUN device name inside the clients namespace.
    pub client_dev: String,
    /// TUN device name inside the servers namespace.
    pub server_dev: String,
    /// MTU of both TUN devices.
    pub mtu: u32,
    /// Kernel queue (packets) between each namespace's stack and the relay's reads.
    pub txqueuelen: u32,
    /// Client-to-server link.
    pub up: LinkParams,
    /// Server-to-client link.
    pub down: LinkParams,
    /// `Some(kind)`: one link per flow keyed by `kind`; `None`: one shared link.
    pub per_flow: Option<FlowKeyKind>,
    /// Seed of the loss/jitter generators.
    pub seed: u64,
    /// sysctls set inside the clients namespace, in order.
    pub client_sysctls: Vec<(String, String)>,
    /// sysctls set inside the servers namespace, in order.
    pub server_sysctls: Vec<(String, String)>,
    /// Where to write the JSON counters (on SIGUSR1 and on exit).
    pub stats_json: Option<PathBuf>,
    /// File written (JSON with the pid) once everything is up.
    pub ready_file: Option<PathBuf>,
    /// SIGTERM processes found inside stale namespaces before removing them.
    pub kill_stale: bool,
}

impl UpConfig {
    /// Checks names, addresses and parameters; the error names the argument and the fix.
    pub fn validate(&self) -> Result<()> {
        netns::validate_name(&self.clients_ns)?;
        netns::validate_name(&self.servers_ns)?;
        if self.clients_ns == self.servers_ns {
            return invalid("namespaces", "--clients-ns and --servers-ns must differ");
        }
        for dev in [&self.client_dev, &self.server_dev] {
            let ok = !dev.is_empty()
                && dev.len() <= tun::MAX_IFNAME
                && dev
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
            if !ok {
                return invalid("device name", format!("{dev:?}: 1-15 of A-Z a-z 0-9 - _"));
            }
        }
        if self.client_addrs.is_empty() || self.server_addrs.is_empty() {
            return invalid("address", "at least one client and one server address");
        }
        for a in self.client_addrs.iter().chain(&self.server_addrs) {
            netns::validate_private(*a)?;
        }
        if self
            .client_addrs
            .iter()
            .any(|a| self.server_addrs.contains(a))
        {
            return invalid("address", "client and server addresses must differ");
        }
        if !(576..=65535).contains(&self.mtu) {
            return invalid("--mtu", format!("{} is outside 576..=65535", self.mtu));
        }
        for (name, p) in [("up", &self.up), ("down", &self.down)] {
            if !(0.0..=1.0).contains(&p.loss) {
                return invalid("--loss", format!("{name}: must be 0..=100 percent"));
            }
            if p.rate_bps > 0 && p.queue_bytes < u64::from(self.mtu) {
                return invalid(
                    "--queue-kb",
                    format!(
                        "{name}: {} bytes cannot hold one {}-byte packet; raise it",
                        p.queue_bytes, self.mtu
                    ),
                );
            }
        }
        Ok(())
    }
}

fn invalid<T>(what: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Invalid {
        what,
        detail: detail.into(),
    })
}

/// Checks the process can create namespaces and TUN devices.
pub fn check_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return invalid(
            "user",
            "netem must run as root (namespaces and TUN devices)",
        );
    }
    if !Path::new("/dev/net/tun").exists() {
        return invalid("system", "/dev/net/tun is missing (modprobe tun)");
    }
    Ok(())
}

/// Removes a namespace if it exists, first SIGTERM-ing its processes when `kill` is set.
/// Returns whether there was one.
pub fn remove_namespace(name: &str, kill: bool) -> Result<bool> {
    if !netns::exists(name) {
        return Ok(false);
    }
    let pids = netns::pids(name).unwrap_or_default();
    if !pids.is_empty() {
        if kill {
            let killed = netns::kill_all(name)?;
            eprintln!("netem: sent SIGTERM to {killed:?} in namespace {name}");
        } else {
            eprintln!(
                "netem: processes {pids:?} are still in namespace {name}; they keep running \
                 in a detached namespace (use --kill to stop them)"
            );
        }
    }
    netns::delete(name)?;
    Ok(true)
}

/// `netem down`: removes both namespaces if present (after a crash, or a forgotten `up`).
pub fn down(clients_ns: &str, servers_ns: &str, kill: bool) -> Result<()> {
    netns::validate_name(clients_ns)?;
    netns::validate_name(servers_ns)?;
    for ns in [clients_ns, servers_ns] {
        if remove_namespace(ns, kill)? {
            eprintln!("netem: removed namespace {ns}");
        }
    }
    Ok(())
}

/// Deletes the namespaces it holds when dropped, so every exit path of `up` cleans up.
struct NamespaceGuard {
    names: Vec<String>,
}

impl NamespaceGuard {
    /// Deletes the namespaces now and reports failures (`Drop` can only log them).
    fn teardown(mut self) -> Result<()> {
        let mut first_err = None;
        for ns in std::mem::take(&mut self.names) {
            if let Err(e) = netns::delete(&ns) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        for ns in &self.names {
            if let Err(e) = netns::delete(ns) {
                eprintln!("netem: could not remove namespace {ns}: {e}");
            }
        }
    }
}

/// The JSON written to `--stats-json`.
#[derive(Serialize)]
struct StatsFile<'a> {
    config: &'a UpConfig,
    #[serde(flatten)]
    report: &'a Report,
}

/// The JSON written to `--ready-file`.
#[derive(Serialize)]
struct ReadyFile<'a> {
    pid: u32,
    config: &'a UpConfig,
}

/// Writes `value` as JSON to `path` atomically (temporary file, then rename).
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let io_err = |source| Error::Sys {
        what: format!("write {}", path.display()),
        source,
    };
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| io_err(std::io::Error::other(e.to_string())))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, body).map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)
}

/// Prints the counters (with the kernel's TUN drops) and writes the JSON file if asked.
fn report(cfg: &UpConfig, relay: &Relay) -> Report {
    let mut r = relay.snapshot(cfg.seed);
    r.client_tun_tx_dropped = netns::tun_tx_dropped(&cfg.clients_ns, &cfg.client_dev);
    r.server_tun_tx_dropped = netns::tun_tx_dropped(&cfg.servers_ns, &cfg.server_dev);
    eprintln!("{}", r.human());
    if let Some(path) = &cfg.stats_json {
        if let Err(e) = write_json(
            path,
            &StatsFile {
                config: cfg,
                report: &r,
            },
        ) {
            eprintln!("netem: {e}");
        }
    }
    r
}

/// `netem up`: builds both namespaces and runs the relay until SIGTERM/SIGINT/SIGHUP,
/// then prints the counters and removes everything it created. Returns the final counters.
pub fn up(cfg: &UpConfig) -> Result<Report> {
    cfg.validate()?;
    check_privileges()?;
    // Signals are blocked from here on: a ^C during set-up is handled by the loop (which
    // then exits at once) instead of killing us half-way, and teardown always runs.
    let signals = SignalFd::new()?;
    for ns in [&cfg.clients_ns, &cfg.servers_ns] {
        if remove_namespace(ns, cfg.kill_stale)? {
            eprintln!("netem: removed stale namespace {ns}");
        }
    }
    let mut guard = NamespaceGuard { names: Vec::new() };
    for ns in [&cfg.clients_ns, &cfg.servers_ns] {
        netns::add(ns)?;
        guard.names.push(ns.clone());
    }
    let client = tun::open_in_netns(&netns::path(&cfg.clients_ns), &cfg.client_dev)?;
    let server = tun::open_in_netns(&netns::path(&cfg.servers_ns), &cfg.server_dev)?;
    netns::configure_link(
        &cfg.clients_ns,
        &cfg.client_dev,
        cfg.mtu,
        cfg.txqueuelen,
        &cfg.client_addrs,
        &cfg.server_addrs,
    )?;
    netns::configure_link(
        &cfg.servers_ns,
        &cfg.server_dev,
        cfg.mtu,
        cfg.txqueuelen,
        &cfg.server_addrs,
        &cfg.client_addrs,
    )?;
    for (ns, list) in [
        (&cfg.clients_ns, &cfg.client_sysctls),
        (&cfg.servers_ns, &cfg.server_sysctls),
    ] {
        for (k, v) in list {
            if k == netns::CC_KEY {
                netns::set_congestion_control(ns, v)?;
            } else {
                netns::sysctl(ns, k, v)?;
            }
        }
    }
    let up = Direction::new(cfg.up, StdRng::seed_from_u64(cfg.seed));
    let down = Direction::new(
        cfg.down,
        StdRng::seed_from_u64(cfg.seed ^ 0x9e37_79b9_7f4a_7c15),
    );
    let mut relay = Relay::new(client, server, up, down, cfg.per_flow, cfg.mtu);
    let cc = |ns: &str| netns::sysctl_get(ns, netns::CC_KEY).unwrap_or_else(|_| "?".into());
    eprintln!(
        "netem: up: {} {:?} (cc {}) <-> {} {:?} (cc {}); up {}; down {}; {}; seed {}; pid {}",
        cfg.clients_ns,
        cfg.client_addrs,
        cc(&cfg.clients_ns),
        cfg.servers_ns,
        cfg.server_addrs,
        cc(&cfg.servers_ns),
        describe(relay.up_params()),
        describe(relay.down_params()),
        cfg.per_flow
            .map_or("one shared link per direction".to_string(), |k| format!(
                "per-flow links keyed by {k:?}"
            )),
        cfg.seed,
        std::process::id(),
    );
    if let Some(path) = &cfg.ready_file {
        write_json(
            path,
            &ReadyFile {
                pid: std::process::id(),
                config: cfg,
            },
        )?;
    }
    let run = relay.run(&signals, |r| {
        report(cfg, r);
    });
    let last = report(cfg, &relay);
    drop(relay); // closes both TUNs: the devices disappear
    let down = guard.teardown();
    run?;
    down?;
    eprintln!(
        "netem: down: removed {} and {}",
        cfg.clients_ns, cfg.servers_ns
    );
    Ok(last)
}

/// One-line description of a direction's parameters.
pub fn describe(p: &LinkParams) -> String {
    let rate = if p.rate_bps == 0 {
        "unlimited".to_string()
    } else {
        format!("{} Mbit/s", p.rate_bps as f64 / 1e6)
    };
    format!(
        "{rate}, delay {} ms ± {} ms, loss {}%, queue {} B{}",
        p.delay_ns as f64 / 1e6,
        p.jitter_ns as f64 / 1e6,
        p.loss * 100.0,
        p.queue_bytes,
        if p.allow_reorder {
            ", reordering allowed"
        } else {
            ""
        }
    )
}
