//! Value types of configuration keys that know their own rule: each parses its TOML
//! string once (with a message naming the bad value; `serde_path_to_error` adds the
//! key), and the code that uses the key gets the parsed value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::store_url::StoreUrl;

/// Parses `1.2.3.4`, `::1`, `10.0.0.0/8` or `2001:db8::/32` into a network.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

/// An address or CIDR of `server.trusted_proxies` or `auth.fixed_ip_whitelist`: the
/// network, and the text as written (what is serialized and shown back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    text: String,
    net: IpNet,
}

impl Network {
    /// The network (an address is its /32 or /128).
    pub fn net(&self) -> IpNet {
        self.net
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_net(s) {
            Some(net) => Ok(Network {
                text: s.to_string(),
                net,
            }),
            None => Err(format!("{s:?} is not an IP address or CIDR")),
        }
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// Serde of `server.listen`: a `host:port` string.
pub mod listen_addr {
    use super::*;

    /// Writes the address as `host:port`.
    pub fn serialize<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(addr)
    }

    /// Reads `host:port`; the message names the bad value.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            D::Error::custom(format!(
                "{text:?}: expected host:port such as \"127.0.0.1:10080\""
            ))
        })
    }
}

/// Serde of `server.admin_listen`: a `host:port` string, `""` for none.
pub mod optional_listen_addr {
    use super::*;

    /// Writes the address as `host:port`, `None` as `""`.
    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }

    /// Reads `host:port` or `""`; the message names the bad value.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{text:?}: expected host:port or empty")))
    }
}

/// The certificate and key of the HTTPS listener (`server.tls_cert`, `server.tls_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The pair from the two keys (empty = unset): both → `Some`, neither → `None`,
    /// one alone is an error.
    pub fn from_keys(cert: &Path, key: &Path) -> Result<Option<TlsFiles>, &'static str> {
        match (cert.as_os_str().is_empty(), key.as_os_str().is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Ok(Some(TlsFiles {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })),
            _ => Err("server.tls_cert and server.tls_key: set both or neither"),
        }
    }
}

/// Hides the passwords of a store URL (userinfo and `sentinel_password`) for messages
/// and `/health`.
pub fn redact_url(url: &str) -> String {
    crate::store_url::redact(url)
}

/// `store.url` as configured: what it names ([`StoreUrl`], parsed once) and the text,
/// which the Redis client reads and which is only ever shown redacted (`Debug` and
/// `Display` hide the password).
#[derive(Clone, PartialEq, Eq)]
pub struct StoreLocation {
    text: String,
    kind: StoreUrl,
}

impl StoreLocation {
    /// What the URL names.
    pub fn kind(&self) -> &StoreUrl {
        &self.kind
    }

    /// The URL as written, password included: only for the client that connects.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The part after `scheme://` (userinfo, hosts, database).
    pub fn after_scheme(&self) -> &str {
        self.text.split_once("://").map_or("", |(_, rest)| rest)
    }

    /// The URL with its password hidden.
    pub fn redacted(&self) -> String {
        redact_url(&self.text)
    }
}

impl FromStr for StoreLocation {
    type Err = String;

    /// Parses with [`StoreUrl`]'s `FromStr`; the message shows the URL redacted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse() {
            Ok(kind) => Ok(StoreLocation {
                text: s.to_string(),
                kind,
            }),
            Err(why) => Err(format!("{:?}: {why}", redact_url(s))),
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for StoreLocation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for StoreLocation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_keep_their_text() {
        let n: Network = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.net().to_string(), "10.0.0.0/8");
        assert_eq!(
            toml::Value::try_from(&n).unwrap().as_str(),
            Some("10.1.2.3/8")
        );
        let a: Network = "::1".parse().unwrap();
        assert_eq!(a.net().prefix_len(), 128);
        let e = "x.y".parse::<Network>().unwrap_err();
        assert_eq!(e, "\"x.y\" is not an IP address or CIDR");
    }

    #[test]
    fn tls_pair_is_both_or_neither() {
        let (e, c) = (Path::new(""), Path::new("/c.pem"));
        assert_eq!(TlsFiles::from_keys(e, e), Ok(None));
        assert!(TlsFiles::from_keys(c, e).is_err());
        assert!(TlsFiles::from_keys(e, c).is_err());
        assert_eq!(
            TlsFiles::from_keys(c, Path::new("/k.pem")),
            Ok(Some(TlsFiles {
                cert: c.into(),
                key: "/k.pem".into()
            }))
        );
    }

    #[test]
    fn store_location_never_shows_the_password() {
        let s: StoreLocation = "redis://:pw@h:6379/2".parse().unwrap();
        assert_eq!(s.to_string(), "redis://***@h:6379/2");
        assert_eq!(format!("{s:?}"), "\"redis://***@h:6379/2\"");
        assert_eq!(s.expose(), "redis://:pw@h:6379/2");
        assert_eq!(s.after_scheme(), ":pw@h:6379/2");
        assert!(matches!(s.kind(), StoreUrl::Redis { .. }));
        let e = "mongo://:pw@h".parse::<StoreLocation>().unwrap_err();
        assert!(
            e.starts_with("\"mongo://***@h\": expected memory://"),
            "{e}"
        );
        let e = "redis+cluster://:hunter2@"
            .parse::<StoreLocation>()
            .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
