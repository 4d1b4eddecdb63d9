//! `store.url`, parsed once: the one [`FromStr`] behind both `check-config` (config
//! validation) and `store::open`, so the two cannot disagree about which URLs
//! are stores. [`SentinelUrl`] takes a `redis+sentinel://` URL apart, and [`redact`]
//! hides every password a store URL can carry.

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
    /// `redis+sentinel://`: the master named by Redis Sentinel.
    Sentinel,
}

impl FromStr for StoreUrl {
    type Err = &'static str;

    /// Parses the scheme (and checks there is something after it); the message never
    /// contains the URL, which may hold a password.
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected memory://, redis://, rediss://, redis+cluster://, \
             rediss+cluster:// or redis+sentinel://";
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
            "redis+sentinel" | "rediss+sentinel" => {
                return SentinelUrl::parse(url).map(|_| StoreUrl::Sentinel);
            }
            _ => return Err(EXPECTED),
        };
        let hosts = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        if hosts.is_empty() || hosts.starts_with('/') {
            return Err("no Redis host given");
        }
        Ok(StoreUrl::Redis { tls, cluster })
    }
}

/// Default port of a sentinel named without one.
pub const SENTINEL_PORT: u16 = 26379;

/// The parts of `redis+sentinel://[[user]:password@]h1:p1[,h2:p2…]/<master>[/<db>]
/// [?sentinel_password=…]`. Userinfo and the sentinel password are kept as written
/// (percent-encoded), ready to be put into a node URL.
///
/// `rediss+sentinel://` (TLS to sentinels and data nodes) is refused: redis-rs could
/// do it, but it is not tested against real TLS sentinels here.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// `user:password@`, `:password@` or empty: the data nodes' credentials.
    pub userinfo: String,
    /// The sentinels, `host:port` each (port 26379 when left out).
    pub sentinels: Vec<String>,
    /// The monitored master's name (`sentinel monitor <name> …`).
    pub master: String,
    /// Database number on the data nodes.
    pub db: i64,
    /// Password of the sentinels (`requirepass` on them), percent-encoded.
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl SentinelUrl {
    /// Parses a `redis+sentinel://` URL; the message never contains the URL.
    pub fn parse(url: &str) -> Result<SentinelUrl, &'static str> {
        if url.starts_with("rediss+sentinel://") {
            return Err(
                "rediss+sentinel:// (TLS through Sentinel) is not supported; \
                 use redis+sentinel:// on a private network, or rediss:// / rediss+cluster://",
            );
        }
        let Some(rest) = url.strip_prefix("redis+sentinel://") else {
            return Err("expected redis+sentinel://");
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        if rest.contains('#') || query.is_some_and(|q| q.contains('#')) {
            return Err("a sentinel URL takes no #fragment");
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(i) => authority.split_at(i + 1),
            None => ("", authority),
        };
        let mut sentinels = Vec::new();
        for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            sentinels.push(sentinel_host(h)?);
        }
        if sentinels.is_empty() {
            return Err("no sentinel host given");
        }
        let mut parts = path.split('/');
        let master = parts.next().unwrap_or("");
        if master.is_empty() {
            return Err("no master name given (redis+sentinel://host:port/<master>[/<db>])");
        }
        if !master
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err("the master name may hold only letters, digits, '.', '_' and '-'");
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or("the database after the master name must be a number")?,
        };
        if parts.next().is_some_and(|p| !p.is_empty()) {
            return Err("too many path parts (redis+sentinel://host:port/<master>[/<db>])");
        }
        let mut sentinel_password = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sentinel_password", v)) if !v.is_empty() => {
                    sentinel_password = Some(v.to_string());
                }
                _ => return Err("the only query parameter is sentinel_password=<password>"),
            }
        }
        Ok(SentinelUrl {
            userinfo: userinfo.to_string(),
            sentinels,
            master: master.to_string(),
            db,
            sentinel_password,
        })
    }
}

/// `host[:port]` of one sentinel, with the default port filled in.
fn sentinel_host(h: &str) -> Result<String, &'static str> {
    const BAD: &str = "a sentinel must be host:port";
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        match v6.split_once(']') {
            Some((ip, "")) => (format!("[{ip}]"), SENTINEL_PORT),
            Some((ip, p)) => {
                let p = p.strip_prefix(':').ok_or(BAD)?;
                (format!("[{ip}]"), p.parse().map_err(|_| BAD)?)
            }
            None => return Err(BAD),
        }
    } else {
        match h.split_once(':') {
            Some((host, p)) => (host.to_string(), p.parse().map_err(|_| BAD)?),
            None => (h.to_string(), SENTINEL_PORT),
        }
    };
    if host.is_empty() || host.contains(['@', ' ']) || port == 0 {
        return Err(BAD);
    }
    Ok(format!("{host}:{port}"))
}

/// The URL with every password hidden: the userinfo becomes `***`, and the value of a
/// `sentinel_password` parameter too. For logs and error messages.
pub fn redact(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    if let Some(i) = out.find("sentinel_password=") {
        let start = i + "sentinel_password=".len();
        let end = out[start..]
            .find(['&', '#'])
            .map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
    }
    out
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
        for url in ["redis+sentinel://a:1,b:2/m", "redis+sentinel://:pw@a:1/m/3"] {
            assert_eq!(url.parse(), Ok(StoreUrl::Sentinel), "{url}");
        }
        let msg = "rediss+sentinel://:pw@a:1/m"
            .parse::<StoreUrl>()
            .unwrap_err();
        assert!(
            msg.contains("not supported") && !msg.contains("pw"),
            "{msg}"
        );
    }

    #[test]
    fn sentinel_url_parts() {
        let u = SentinelUrl::parse(
            "redis+sentinel://user:p%40ss@10.0.0.1:26380, s2 ,[::1]:7/mymaster/2?sentinel_password=s%26p",
        )
        .unwrap();
        assert_eq!(u.userinfo, "user:p%40ss@");
        assert_eq!(u.sentinels, ["10.0.0.1:26380", "s2:26379", "[::1]:7"]);
        assert_eq!(u.master, "mymaster");
        assert_eq!(u.db, 2);
        assert_eq!(u.sentinel_password.as_deref(), Some("s%26p"));
        let dbg = format!("{u:?}");
        assert!(!dbg.contains("p%40ss") && !dbg.contains("s%26p"), "{dbg}");

        let u = SentinelUrl::parse("redis+sentinel://h:1/m/").unwrap();
        assert_eq!((u.userinfo.as_str(), u.db), ("", 0));
        assert_eq!(u.sentinel_password, None);

        for bad in [
            "redis+sentinel://",
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1/m/x",
            "redis+sentinel://h:1/m/-1",
            "redis+sentinel://h:1/m/0/extra",
            "redis+sentinel://h:1/m?db=1",
            "redis+sentinel://h:1/m?sentinel_password=",
            "redis+sentinel://h:1/bad%20name",
            "redis+sentinel://:pw@/m",
        ] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad}");
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn redact_hides_every_password() {
        assert_eq!(redact("redis://:pw@h:6379/2"), "redis://***@h:6379/2");
        assert_eq!(redact("memory://"), "memory://");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(
            redact("redis+sentinel://u:pw@a:1,b:2/m/1?sentinel_password=s3c"),
            "redis+sentinel://***@a:1,b:2/m/1?sentinel_password=***"
        );
        assert_eq!(
            redact("redis+sentinel://a:1/m?sentinel_password=x@y"),
            "redis+sentinel://a:1/m?sentinel_password=***"
        );
    }
}
