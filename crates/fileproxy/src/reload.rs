//! `SIGHUP` reload (SPEC §14): the configuration file is read and validated again; if it
//! is good, a new [`App`] built from it is swapped in atomically and every request that
//! starts afterwards sees it, while requests and transfers already running keep the
//! `App` they started with. Listeners are untouched.
//!
//! What a reload changes: the policy knobs and secrets (`[auth]`, `[protect]` rules,
//! `[cors]`), `server.trusted_proxies`, socket options of newly accepted connections,
//! `log.level`, the `[traffic]` receiver, key, interval and threshold
//! ([`crate::traffic::Traffic::reconfigure`]), the `[cache]` bounds
//! ([`crate::cache::SegmentCache::reconfigure`]: the cached objects stay), and any key
//! read per request from
//! `app.config`. Keys that only take
//! effect at start ([`RESTART_ONLY`]: listen addresses, TLS files, the store, the
//! origin, …) keep their running value and are named in a warning when the file
//! changed them. A file that fails to load or validate changes nothing: the error is
//! logged and counted in `fileproxy_config_reloads_total{result="failed"}`.
//!
//! Parts built from configuration that must keep their state across a reload (store
//! connection, origin pool, counters, metrics, traffic accounting, access log, event
//! lists) are shared between the old and the new `App` in [`reconfigure`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::access::client_ip::TrustedProxies;
use crate::access::Policy;
use crate::app::App;
use crate::config::{config_keys, Config, ConfigError};

/// Keys (exact, or a `section.` prefix) that need a restart to take effect.
pub const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.admin_listen",
    "server.tls_cert",
    "server.tls_key",
    "server.max_connections",
    "server.header_read_timeout_s",
    "server.max_headers",
    "server.max_header_bytes",
    "server.h2_stream_window",
    "server.h2_connection_window",
    "server.h2_max_concurrent_streams",
    "server.shutdown_grace_s",
    "sockets.backlog",
    "origin.",
    "store.",
    "log.format",
    "log.access_log",
    "log.access_log_max_bytes",
    "log.access_log_keep",
    "log.access_log_buffer",
    "traffic.spool_dir",
    "traffic.worker_id",
    "protect.event_log_capacity",
    "protect.event_log_ttl_s",
];

/// Whether `key` (dotted) is one of [`RESTART_ONLY`].
pub fn is_restart_only(key: &str) -> bool {
    RESTART_ONLY.iter().any(|r| {
        if r.ends_with('.') {
            key.starts_with(r)
        } else {
            key == *r || key.starts_with(&format!("{r}."))
        }
    })
}

/// The `App` in force, swapped by reloads; requests load it once at their start.
pub struct LiveApp {
    current: ArcSwap<App>,
    /// The file reloads read; `None` for the quick start (nothing to re-read).
    path: Option<PathBuf>,
}

impl LiveApp {
    /// Wraps the `App` built at start-up; `path` is the file `serve` was given.
    pub fn new(app: Arc<App>, path: Option<PathBuf>) -> Arc<LiveApp> {
        Arc::new(LiveApp {
            current: ArcSwap::new(app),
            path,
        })
    }

    /// The `App` in force now.
    pub fn current(&self) -> Arc<App> {
        self.current.load_full()
    }

    /// Re-reads the file and swaps in the new configuration (see the module doc).
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let Some(path) = self.path.as_deref() else {
            return Err(ReloadError::NoFile);
        };
        let current = self.current();
        let result = load_new(path).and_then(|new| {
            let plan = plan(&current.config, new)?;
            if plan.changed.iter().any(|k| k.starts_with("traffic.")) {
                current
                    .traffic
                    .reconfigure(&plan.config.traffic)
                    .map_err(|e| ReloadError::Apply(format!("{e:#}")))?;
            }
            if plan.changed.iter().any(|k| k == "log.level") {
                crate::logging::set_level(&plan.config.log.level)
                    .map_err(|e| ReloadError::Apply(format!("log.level: {e:#}")))?;
            }
            Ok(plan)
        });
        match result {
            Ok(plan) => {
                let app = reconfigure(&current, plan.config);
                self.current.store(Arc::new(app));
                current.metrics.config_reloads_ok.inc();
                Ok(Reloaded {
                    changed: plan.changed,
                    restart_needed: plan.restart_needed,
                })
            }
            Err(e) => {
                current.metrics.config_reloads_failed.inc();
                Err(e)
            }
        }
    }
}

/// What a successful reload changed (key names only: never values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys whose new value is now in force.
    pub changed: Vec<String>,
    /// Keys the file changed that keep their running value until a restart.
    pub restart_needed: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The quick start runs without a file.
    #[error("no configuration file (quick start): nothing to reload")]
    NoFile,
    /// The file did not load or validate.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The new configuration could not be applied.
    #[error("{0}")]
    Apply(String),
}

/// Loads and validates the file as `serve` would at start.
fn load_new(path: &Path) -> Result<Config, ReloadError> {
    let cfg = Config::load(Some(path))?;
    cfg.validate()?;
    cfg.validate_secrets()?;
    Ok(cfg)
}

/// A validated new configuration with the restart-only keys set back to the running ones.
struct Plan {
    config: Config,
    changed: Vec<String>,
    restart_needed: Vec<String>,
}

/// Compares `old` and `new` key by key; restart-only keys keep `old`'s value, so the
/// configuration in force always says what is actually running.
fn plan(old: &Config, new: Config) -> Result<Plan, ReloadError> {
    let before = config_keys(old);
    let after = config_keys(&new);
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    let (mut changed, mut restart_needed) = (Vec::new(), Vec::new());
    for k in keys {
        if before.get(k) != after.get(k) {
            if is_restart_only(k) {
                restart_needed.push(k.clone());
            } else {
                changed.push(k.clone());
            }
        }
    }
    if restart_needed.is_empty() {
        return Ok(Plan {
            config: new,
            changed,
            restart_needed,
        });
    }
    let to_value =
        |c: &Config| toml::Value::try_from(c).map_err(|e| ReloadError::Apply(e.to_string()));
    let old_v = to_value(old)?;
    let mut new_v = to_value(&new)?;
    for key in &restart_needed {
        copy_key(&old_v, &mut new_v, key);
    }
    let config: Config = new_v
        .try_into()
        .map_err(|e: toml::de::Error| ReloadError::Apply(e.to_string()))?;
    Ok(Plan {
        config,
        changed,
        restart_needed,
    })
}

/// Sets the dotted `key` of `to` to its value in `from` (removing it when `from` has none).
fn copy_key(from: &toml::Value, to: &mut toml::Value, key: &str) {
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut src = Some(from);
    for p in parents {
        src = src.and_then(|v| v.get(p));
    }
    let value = src.and_then(|v| v.get(last)).cloned();
    let mut dst = to;
    for p in parents {
        let Some(table) = dst.as_table_mut() else {
            return;
        };
        dst = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    if let Some(table) = dst.as_table_mut() {
        match value {
            Some(v) => {
                table.insert(last.to_string(), v);
            }
            None => {
                table.remove(*last);
            }
        }
    }
}

/// A new `App` for `config` sharing `old`'s long-lived parts; the parts built from
/// configuration alone (policy, trusted proxies, §9 settings) are built anew.
///
/// A part added to [`App`] must be placed here: shared (its state survives a reload,
/// and it reads new settings itself if any) or rebuilt from `config`.
pub fn reconfigure(old: &App, config: Config) -> App {
    let policy = Policy::new(&config.auth, old.store.clone())
        .with_protect(&config.protect)
        .with_limits(&config.limits)
        .with_state_of(&old.policy);
    let trusted = TrustedProxies::new(&config.server.trusted_proxies);
    let protect = old.protect.reconfigured(&config);
    App {
        store: old.store.clone(),
        origin: Arc::clone(&old.origin),
        overload: Arc::clone(&old.overload),
        policy,
        trusted,
        gauges: Arc::clone(&old.gauges),
        background: old.background.clone(),
        protect,
        started: old.started,
        metrics: Arc::clone(&old.metrics),
        window: Arc::clone(&old.window),
        traffic: Arc::clone(&old.traffic),
        access_log: Arc::clone(&old.access_log),
        cache: {
            old.cache.reconfigure(&config.cache);
            Arc::clone(&old.cache)
        },
        config,
    }
}

/// Reloads on every `SIGHUP` until the process ends, logging what happened.
pub fn spawn_on_sighup(live: Arc<LiveApp>) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: configuration reload off");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            crate::systemd::reloading();
            log_outcome(&live.reload());
            crate::systemd::ready();
        }
    });
}

/// One log line (or two) per reload: what changed, what needs a restart, or why nothing did.
fn log_outcome(outcome: &Result<Reloaded, ReloadError>) {
    match outcome {
        Ok(r) => {
            tracing::info!(
                changed = %r.changed.join(" "),
                "configuration reloaded (SIGHUP)"
            );
            if !r.restart_needed.is_empty() {
                tracing::warn!(
                    keys = %r.restart_needed.join(" "),
                    "configuration keys changed that need a restart; their running values stay"
                );
            }
        }
        Err(ReloadError::NoFile) => {
            tracing::warn!("SIGHUP: no configuration file (quick start): nothing to reload")
        }
        Err(e) => tracing::error!(
            error = %e,
            "configuration reload (SIGHUP) failed; the running configuration stays"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys() {
        assert!(is_restart_only("server.listen"));
        assert!(is_restart_only("store.url"));
        assert!(is_restart_only("origin.timeout_ms"));
        assert!(is_restart_only("log.access_log"));
        assert!(!is_restart_only("log.level"));
        assert!(!is_restart_only("server.trusted_proxies"));
        assert!(!is_restart_only("auth.secret"));
        assert!(!is_restart_only("server.listen_extra"));
    }

    #[test]
    fn plan_keeps_restart_only_values_and_names_keys() {
        let old = Config::default();
        let mut new = Config::default();
        new.auth.secret = "new-secret".into();
        new.auth.playlist_limits.unknown.limit = 5;
        new.server.listen = "127.0.0.1:1".parse().unwrap();
        new.store.url = "redis://127.0.0.1:1/0".parse().unwrap();
        let p = plan(&old, new).unwrap();
        assert_eq!(
            p.changed,
            vec!["auth.playlist_limits.unknown.limit", "auth.secret"]
        );
        assert_eq!(p.restart_needed, vec!["server.listen", "store.url"]);
        assert_eq!(p.config.auth.secret.expose(), "new-secret");
        assert_eq!(p.config.auth.playlist_limits.unknown.limit, 5);
        assert_eq!(p.config.server.listen, old.server.listen);
        assert_eq!(p.config.store.url, old.store.url);
    }

    #[test]
    fn plan_of_an_unchanged_file_changes_nothing() {
        let p = plan(&Config::default(), Config::default()).unwrap();
        assert!(p.changed.is_empty() && p.restart_needed.is_empty());
    }
}
