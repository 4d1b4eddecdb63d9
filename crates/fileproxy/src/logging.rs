//! Application logging: `tracing` to stderr, text or JSON, level from `log.level`
//! (`RUST_LOG` overrides it when set). The level filter can be replaced while running
//! ([`set_level`], used by the `SIGHUP` reload).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogConfig;

/// Handle of the installed level filter; absent when `RUST_LOG` decides the level.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber.
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let from_env = matches!(std::env::var("RUST_LOG"), Ok(v) if !v.is_empty());
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v)?,
        _ => EnvFilter::try_new(&cfg.level)?,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let res = if cfg.format == "json" {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    res.map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))?;
    if !from_env {
        let _ = FILTER.set(handle);
    }
    Ok(())
}

/// Replaces the level filter with `level` (an `EnvFilter` string); a no-op when
/// `RUST_LOG` set the level at start or no logger is installed.
pub fn set_level(level: &str) -> anyhow::Result<()> {
    let Some(handle) = FILTER.get() else {
        return Ok(());
    };
    let filter = EnvFilter::try_new(level)?;
    handle
        .reload(filter)
        .map_err(|e| anyhow::anyhow!("cannot change the log level: {e}"))
}
