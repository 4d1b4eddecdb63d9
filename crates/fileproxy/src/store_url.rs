//! `store.url`, parsed once: the one [`FromStr`] behind both `check-config` (config
//! validation) and `store::open`, so the two cannot disagree about which URLs
//! are stores.

use std::str::FromStr;

/// What a `store.url` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory://`: the in-process store.
    Memory,
    /// `redis://`, `rediss://` (TLS), `redis+cluster://`, `rediss+cluster://`.
    Redis {
        /// TLS to the server(s) (`rediss…`).
        tls: bool,
        /// Redis Cluster (`…+cluster`).
        cluster: bool,
    },
}

impl FromStr for StoreUrl {
    type Err = &'static str;

    /// Parses the scheme (and checks there is something after it); the message never
    /// contains the URL, which may hold a password.
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str =
            "expected memory://, redis://, rediss://, redis+cluster:// or rediss+cluster://";
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(EXPECTED);
        };
        let (tls, cluster) = match scheme {
            "memory" if rest.is_empty() => return Ok(StoreUrl::Memory),
            "memory" => return Err("memory:// takes nothing after the scheme"),
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            _ => return Err(EXPECTED),
        };
        let hosts = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        if hosts.is_empty() || hosts.starts_with('/') {
            return Err("no Redis host given");
        }
        Ok(StoreUrl::Redis { tls, cluster })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_the_store_opens() {
        assert_eq!("memory://".parse(), Ok(StoreUrl::Memory));
        for (url, tls, cluster) in [
            ("redis://h:6379/0", false, false),
            ("rediss://:pw@h:6380", true, false),
            ("redis+cluster://a:1,b:2", false, true),
            ("rediss+cluster://a:1,b:2", true, true),
        ] {
            assert_eq!(url.parse(), Ok(StoreUrl::Redis { tls, cluster }), "{url}");
        }
        for bad in [
            "memory://x",
            "mongo://a",
            "redis://",
            "redis:///0",
            "h:6379",
            "",
        ] {
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad}");
        }
        let msg = "redis://:s3cret@".parse::<StoreUrl>().unwrap_err();
        assert!(!msg.contains("s3cret"));
    }
}
