//! Scenarios that run once per store: [`Kind`], the surroundings of one run ([`Env`]:
//! the store, a `redis-server` for [`Kind::Redis`], and the HTTP origin), and the
//! `on_both_stores!` macro that turns each `async fn name(kind: Kind)` into a test per
//! store. A test file adds its own `impl Env` methods.

use super::access::ProxyConfig;
use super::origin::TestOrigin;
use super::redis::RedisServer;

/// Which store a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The in-process store.
    Memory,
    /// A real `redis-server` started for the scenario.
    Redis,
}

/// A scenario's surroundings: the store and the HTTP origin.
pub struct Env {
    /// The Redis server, for [`Kind::Redis`].
    pub redis: Option<RedisServer>,
    /// The origin.
    pub origin: TestOrigin,
}

impl Env {
    /// Starts the store of `kind` and an origin.
    pub async fn new(kind: Kind) -> Env {
        Env {
            redis: (kind == Kind::Redis).then(RedisServer::start),
            origin: TestOrigin::start().await,
        }
    }

    /// The `store.url` of this run.
    pub fn store_url(&self) -> String {
        self.redis
            .as_ref()
            .map_or_else(|| "memory://".to_string(), RedisServer::url)
    }

    /// A config on this store that trusts 127.0.0.1's `X-Forwarded-For`.
    pub fn config(&self) -> ProxyConfig {
        ProxyConfig::trusting_loopback(&self.store_url())
    }
}

/// Runs each named scenario `async fn name(kind: Kind)` once per store (`Kind` must be
/// in scope of the calling module).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Redis).await
                }
            )*
        }
    };
}
