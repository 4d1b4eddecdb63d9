//! Client IP of SPEC §2 step 1: the TCP peer, or the forwarded address when the peer
//! is a trusted proxy.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::Network;

/// The networks whose `X-Forwarded-For` / `X-Real-IP` headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Builds the set from `server.trusted_proxies` (addresses or CIDRs, parsed when
    /// the configuration was read).
    pub fn new(entries: &[Network]) -> Self {
        Self {
            nets: entries.iter().map(Network::net).collect(),
        }
    }

    /// Whether `peer` is one of the trusted proxies.
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = canonical_ip(peer);
        self.nets.iter().any(|n| n.contains(&peer))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// Maps an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, as dual-stack sockets report
/// IPv4 peers) to plain IPv4; other addresses are returned unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Parses one forwarded address: `1.2.3.4`, `::1`, `[::1]`, `1.2.3.4:5678`, `[::1]:80`.
pub fn parse_forwarded_ip(value: &str) -> Option<IpAddr> {
    let v = value.trim().trim_matches('"');
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Some(rest) = v.strip_prefix('[') {
        let end = rest.find(']')?;
        let tail = &rest[end + 1..];
        if !(tail.is_empty() || is_port_suffix(tail)) {
            return None;
        }
        return rest[..end].parse::<IpAddr>().ok().map(canonical_ip);
    }
    let (host, port) = v.rsplit_once(':')?;
    if !is_port_suffix(&v[host.len()..]) || port.is_empty() {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port_suffix(s: &str) -> bool {
    match s.strip_prefix(':') {
        Some(p) => !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// The client IP of a request (SPEC §2 step 1), nginx `real_ip_recursive on`.
///
/// Only when `peer` is a trusted proxy: `x_forwarded_for` (every header line, joined
/// in order with `,`) is walked from the right, skipping addresses that are
/// themselves trusted proxies; the first other address is the client. A proxy appends
/// the address it saw, so whatever a viewer wrote into the header stays to the left of
/// it and is never believed. No usable entry (absent, all trusted, or the first
/// untrusted one malformed) → `x_real_ip` → the peer. An untrusted peer's headers
/// are ignored.
pub fn client_ip(
    peer: IpAddr,
    x_forwarded_for: Option<&str>,
    x_real_ip: Option<&str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = canonical_ip(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    if let Some(ip) = x_forwarded_for.and_then(|v| rightmost_untrusted(v, trusted)) {
        return ip;
    }
    if let Some(ip) = x_real_ip.and_then(parse_forwarded_ip) {
        return ip;
    }
    peer
}

/// The first address from the right of an `X-Forwarded-For` chain that is not a
/// trusted proxy; `None` when there is none or it is malformed (empty items skipped).
fn rightmost_untrusted(chain: &str, trusted: &TrustedProxies) -> Option<IpAddr> {
    for item in chain.rsplit(',') {
        if item.trim().is_empty() {
            continue;
        }
        let ip = parse_forwarded_ip(item)?;
        if !trusted.contains(ip) {
            return Some(ip);
        }
    }
    None
}

/// [`client_ip`] over a request's headers: all `X-Forwarded-For` lines joined in
/// order, the first `X-Real-IP` (values that are not visible ASCII are ignored).
pub fn client_ip_from_headers(
    peer: IpAddr,
    headers: &http::HeaderMap,
    trusted: &TrustedProxies,
) -> IpAddr {
    if !trusted.contains(peer) {
        return canonical_ip(peer);
    }
    let lines: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let xff = (!lines.is_empty()).then(|| lines.join(","));
    let real = headers.get("x-real-ip").and_then(|v| v.to_str().ok());
    client_ip(peer, xff.as_deref(), real, trusted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(entries: &[&str]) -> Vec<Network> {
        entries.iter().map(|e| e.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_never_overridden() {
        let none = TrustedProxies::default();
        assert_eq!(
            client_ip(ip("9.9.9.9"), Some("1.2.3.4"), Some("5.6.7.8"), &none),
            ip("9.9.9.9")
        );
        let t = TrustedProxies::new(&nets(&["10.0.0.0/8"]));
        assert_eq!(
            client_ip(ip("9.9.9.9"), Some("1.2.3.4"), None, &t),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn trusted_peer_walks_xff_from_the_right_then_real_ip() {
        let t = TrustedProxies::new(&nets(&["10.0.0.0/8", "::1"]));
        let p = ip("10.1.2.3");
        assert_eq!(
            client_ip(p, Some(" 1.2.3.4 , 10.1.1.1"), Some("5.6.7.8"), &t),
            ip("1.2.3.4")
        );
        // A viewer writing an admitted address in front of its own gains nothing.
        assert_eq!(
            client_ip(p, Some("180.98.66.2, 9.9.9.9"), None, &t),
            ip("9.9.9.9")
        );
        assert_eq!(
            client_ip(
                p,
                Some("180.98.66.2, 9.9.9.9, 10.0.0.7,, 10.0.0.8"),
                None,
                &t
            ),
            ip("9.9.9.9")
        );
        // Only trusted entries, or a malformed first untrusted one: X-Real-IP, peer.
        assert_eq!(
            client_ip(p, Some("10.0.0.7, 10.0.0.8"), Some("5.6.7.8"), &t),
            ip("5.6.7.8")
        );
        assert_eq!(
            client_ip(p, Some("1.2.3.4, unknown, 10.0.0.8"), None, &t),
            p
        );
        assert_eq!(client_ip(p, None, Some("5.6.7.8"), &t), ip("5.6.7.8"));
        assert_eq!(
            client_ip(p, Some("garbage"), Some("5.6.7.8"), &t),
            ip("5.6.7.8")
        );
        assert_eq!(client_ip(p, Some("garbage"), Some("nope"), &t), p);
        assert_eq!(client_ip(p, Some(""), None, &t), p);
        assert_eq!(client_ip(p, None, None, &t), p);
        assert_eq!(
            client_ip(ip("::1"), Some("2001:db8::1"), None, &t),
            ip("2001:db8::1")
        );
        // An IPv4 peer seen through a dual-stack socket is still trusted.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), Some("1.2.3.4"), None, &t),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn forwarded_forms() {
        assert_eq!(parse_forwarded_ip("1.2.3.4:80"), Some(ip("1.2.3.4")));
        assert_eq!(
            parse_forwarded_ip("[2001:db8::1]:443"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(parse_forwarded_ip("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_forwarded_ip("\"1.2.3.4\""), Some(ip("1.2.3.4")));
        assert_eq!(parse_forwarded_ip("::ffff:1.2.3.4"), Some(ip("1.2.3.4")));
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4:",
            "1.2.3.4:x",
            "[::1]x",
            "[::1",
            "unknown",
            "1.2.3.4:123456",
        ] {
            assert_eq!(parse_forwarded_ip(bad), None, "{bad}");
        }
        assert_eq!(canonical_ip(ip("::ffff:8.8.8.8")), ip("8.8.8.8"));
        assert_eq!(canonical_ip(ip("::1")), ip("::1"));
    }

    #[test]
    fn every_header_line_is_read_in_order() {
        let t = TrustedProxies::new(&nets(&["10.0.0.0/8"]));
        let mut h = http::HeaderMap::new();
        h.append("x-forwarded-for", "180.98.66.2".parse().unwrap());
        h.append("x-forwarded-for", "9.9.9.9, 10.0.0.5".parse().unwrap());
        h.append("x-real-ip", "5.6.7.8".parse().unwrap());
        assert_eq!(
            client_ip_from_headers(ip("10.1.1.1"), &h, &t),
            ip("9.9.9.9")
        );
        assert_eq!(
            client_ip_from_headers(ip("8.8.8.8"), &h, &t),
            ip("8.8.8.8"),
            "an untrusted peer's headers are ignored"
        );
        let mut h = http::HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.append("x-forwarded-for", "10.0.0.9".parse().unwrap());
        assert_eq!(
            client_ip_from_headers(ip("10.1.1.1"), &h, &t),
            ip("1.1.1.1")
        );
        let h = http::HeaderMap::new();
        assert_eq!(
            client_ip_from_headers(ip("::ffff:10.1.1.1"), &h, &t),
            ip("10.1.1.1")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever a viewer writes in front of the address the trusted proxy appended,
        /// the client is that appended address.
        #[test]
        fn forged_prefix_is_never_believed(forged in "[0-9a-f.:, \\[\\]]{0,60}", a in any::<u32>()) {
            let t = TrustedProxies::new(&nets(&["10.0.0.0/8"]));
            let viewer = IpAddr::V4(a.into());
            prop_assume!(!t.contains(viewer));
            let chain = format!("{forged},{viewer}, 10.0.0.1");
            prop_assert_eq!(client_ip(ip("10.0.0.2"), Some(&chain), None, &t), viewer);
        }

        #[test]
        fn never_panics_and_untrusted_is_peer(xff in "\\PC{0,40}", real in "\\PC{0,40}", a in any::<u32>()) {
            let peer = IpAddr::V4(a.into());
            let none = TrustedProxies::default();
            prop_assert_eq!(client_ip(peer, Some(&xff), Some(&real), &none), peer);
            let all = TrustedProxies::new(&nets(&["0.0.0.0/0"]));
            let _ = client_ip(peer, Some(&xff), Some(&real), &all);
        }
    }
}
