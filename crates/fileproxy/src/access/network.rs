//! Networks and keys of the IP whitelist (SPEC §3, §6): IPv4 widened to `/24`, IPv6
//! kept as given (`/128` for one address), the bounded set of networks a viewer is
//! looked up under, and the Python-compatible Redis key.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use md5::{Digest, Md5};

use super::client_ip::canonical_ip;

/// Why a `clientIp` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// Not an IP address or CIDR.
    #[error("clientIp is not an IP address or CIDR")]
    NotAnAddress,
}

/// The `/24` network of an IPv4 address.
pub fn widen_v4(ip: Ipv4Addr) -> IpNet {
    let o = ip.octets();
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(o[0], o[1], o[2], 0), 24))
}

/// The `/128` network of one IPv6 address.
pub fn single_v6(ip: Ipv6Addr) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(ip, 128))
}

/// The network an admitted `clientIp` covers: IPv4 (also IPv4-mapped IPv6, and the
/// address written in an IPv4 CIDR, as the Python version does) → its `/24`; an IPv6
/// address → `/128`; an IPv6 CIDR → kept (truncated to its network address).
pub fn admission_network(client_ip: &str) -> Result<IpNet, NetworkError> {
    let s = client_ip.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(address_network(ip));
    }
    let net: IpNet = s.parse().map_err(|_| NetworkError::NotAnAddress)?;
    Ok(match net {
        IpNet::V4(n) => widen_v4(n.addr()),
        IpNet::V6(n) => match n.addr().to_ipv4_mapped() {
            Some(v4) if n.prefix_len() >= 96 => widen_v4(v4),
            _ => IpNet::V6(n.trunc()),
        },
    })
}

/// The network a single address is admitted under (IPv4 `/24`, IPv6 `/128`).
pub fn address_network(ip: IpAddr) -> IpNet {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => widen_v4(v4),
        IpAddr::V6(v6) => single_v6(v6),
    }
}

/// The networks a viewer's address is looked up under, most specific first:
/// IPv4 → its `/24`; IPv6 → `/128`, then each of `ipv6_prefixes` (bounded, no scan).
pub fn lookup_networks(ip: IpAddr, ipv6_prefixes: &[u8]) -> Vec<IpNet> {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => vec![widen_v4(v4)],
        IpAddr::V6(v6) => {
            let mut out = Vec::with_capacity(1 + ipv6_prefixes.len());
            out.push(single_v6(v6));
            for &p in ipv6_prefixes {
                if let Ok(n) = Ipv6Net::new(v6, p) {
                    let n = IpNet::V6(n.trunc());
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
            out
        }
    }
}

/// The network as written inside keys: `/` replaced by `_` (`180.98.66.0_24`).
pub fn network_key_part(net: &IpNet) -> String {
    let mut s = String::with_capacity(48);
    let _ = write!(s, "{}_{}", net.network(), net.prefix_len());
    s
}

/// The whitelist key `ip_cidr_access:{network with / replaced by _}:{ua_hash}`.
pub fn whitelist_key(net: &IpNet, ua_hash: &str) -> String {
    format!("ip_cidr_access:{}:{}", network_key_part(net), ua_hash)
}

/// The UA hash: first 8 lowercase hex characters of MD5(User-Agent).
pub fn ua_hash(user_agent: &str) -> String {
    let digest = Md5::digest(user_agent.as_bytes());
    hex::encode(&digest[..4])
}

/// A few example addresses inside `net` (first, middle and last) for the admission
/// response's `cidr_examples`.
pub fn cidr_examples(net: &IpNet) -> Vec<String> {
    match net {
        IpNet::V4(n) => {
            let base = u32::from(n.network());
            let size = 1u64 << (32 - u32::from(n.prefix_len()));
            let picks: Vec<u64> = if size <= 2 {
                (0..size).collect()
            } else {
                vec![1, size / 2, size - 2]
            };
            picks
                .into_iter()
                .map(|o| Ipv4Addr::from(base.wrapping_add(o as u32)).to_string())
                .collect()
        }
        IpNet::V6(n) => {
            let base = u128::from(n.network());
            let bits = 128 - u32::from(n.prefix_len());
            if bits == 0 {
                return vec![n.network().to_string()];
            }
            let last = if bits >= 128 {
                u128::MAX
            } else {
                (1u128 << bits) - 1
            };
            let picks: Vec<u128> = if last < 3 {
                (0..=last).collect()
            } else {
                vec![1, last / 2 + 1, last]
            };
            picks
                .into_iter()
                .map(|o| Ipv6Addr::from(base.wrapping_add(o)).to_string())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn admission_widening() {
        let cases = [
            ("180.98.66.2", "180.98.66.0/24"),
            (" 180.98.66.2 ", "180.98.66.0/24"),
            ("180.98.66.0/24", "180.98.66.0/24"),
            ("180.98.66.77/32", "180.98.66.0/24"),
            ("180.98.66.77/28", "180.98.66.0/24"),
            ("10.1.2.3/16", "10.1.2.0/24"),
            ("::ffff:180.98.66.2", "180.98.66.0/24"),
            ("::ffff:180.98.66.2/128", "180.98.66.0/24"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("2001:DB8:0:0::1", "2001:db8::1/128"),
            ("2001:db8::1/64", "2001:db8::/64"),
            ("2001:db8:1:2::/56", "2001:db8:1::/56"),
            ("::1", "::1/128"),
        ];
        for (input, want) in cases {
            assert_eq!(
                admission_network(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
        for bad in [
            "",
            "x",
            "1.2.3",
            "1.2.3.4/33",
            "2001:db8::/129",
            "1.2.3.4/",
            "::g",
        ] {
            assert_eq!(
                admission_network(bad),
                Err(NetworkError::NotAnAddress),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_match_python() {
        // python3: hashlib.md5(b"Mozilla/5.0").hexdigest()[:8]
        assert_eq!(ua_hash("Mozilla/5.0"), "0e3c1d55");
        assert_eq!(ua_hash(""), "d41d8cd9");
        assert_eq!(ua_hash("curl/8.0"), KNOWN_CURL_HASH);
        let net = admission_network("180.98.66.2").unwrap();
        assert_eq!(
            whitelist_key(&net, "d41d8cd9"),
            "ip_cidr_access:180.98.66.0_24:d41d8cd9"
        );
        let v6 = admission_network("2001:db8::/64").unwrap();
        assert_eq!(network_key_part(&v6), "2001:db8::_64");
    }

    const KNOWN_CURL_HASH: &str = "299e8ec9";

    #[test]
    fn lookup_candidates() {
        assert_eq!(
            lookup_networks(ip("180.98.66.2"), &[64, 56, 48]),
            vec![admission_network("180.98.66.0/24").unwrap()]
        );
        assert_eq!(
            lookup_networks(ip("::ffff:180.98.66.2"), &[64]),
            vec![admission_network("180.98.66.0/24").unwrap()]
        );
        let got: Vec<String> = lookup_networks(ip("2001:db8:1:2:3:4:5:6"), &[64, 56, 48, 64])
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "2001:db8:1:2:3:4:5:6/128",
                "2001:db8:1:2::/64",
                "2001:db8:1::/56",
                "2001:db8:1::/48"
            ]
        );
        assert_eq!(lookup_networks(ip("::1"), &[]).len(), 1);
    }

    #[test]
    fn examples() {
        assert_eq!(
            cidr_examples(&admission_network("180.98.66.2").unwrap()),
            ["180.98.66.1", "180.98.66.128", "180.98.66.254"]
        );
        assert_eq!(cidr_examples(&admission_network("::1").unwrap()), ["::1"]);
        assert_eq!(cidr_examples(&"::/0".parse().unwrap()).len(), 3);
        assert_eq!(cidr_examples(&"1.2.3.4/32".parse().unwrap()), ["1.2.3.4"]);
        assert_eq!(cidr_examples(&"2001:db8::/127".parse().unwrap()).len(), 2);
    }

    proptest! {
        #[test]
        fn v4_admission_and_lookup_agree(a in any::<u32>(), suffix in 0u8..=32, mapped in any::<bool>()) {
            let addr = Ipv4Addr::from(a);
            let forms = [
                addr.to_string(),
                format!("{addr}/{suffix}"),
                if mapped { format!("::ffff:{addr}") } else { addr.to_string() },
            ];
            for f in &forms {
                let net = admission_network(f).unwrap();
                prop_assert_eq!(net.prefix_len(), 24);
                let o = addr.octets();
                prop_assert_eq!(net.network(), IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], 0)));
            }
            // A viewer anywhere in the /24 finds the entry with its single candidate.
            let net = admission_network(&forms[0]).unwrap();
            let viewer = Ipv4Addr::from((a & 0xffff_ff00) | (a.rotate_left(7) & 0xff));
            prop_assert_eq!(lookup_networks(IpAddr::V4(viewer), &[64]), vec![net]);
            let mapped_viewer = IpAddr::V6(viewer.to_ipv6_mapped());
            prop_assert_eq!(lookup_networks(mapped_viewer, &[64]), vec![net]);
        }

        #[test]
        fn v6_admission_and_lookup_agree(a in any::<u128>(), p in prop::sample::select(vec![48u8, 56, 64, 128]), host in any::<u128>()) {
            let addr = Ipv6Addr::from(a);
            prop_assume!(addr.to_ipv4_mapped().is_none());
            let net = admission_network(&format!("{addr}/{p}")).unwrap();
            prop_assert_eq!(net.prefix_len(), p);
            prop_assert!(net.contains(&IpAddr::V6(addr)));
            // Any viewer inside the admitted network has it among its candidates.
            let mask = if p == 128 { 0 } else { u128::MAX >> p };
            let viewer = Ipv6Addr::from((a & !mask) | (host & mask));
            prop_assume!(viewer.to_ipv4_mapped().is_none());
            prop_assert!(lookup_networks(IpAddr::V6(viewer), &[64, 56, 48]).contains(&net));
            // A single address is admitted as /128 and found first.
            let single = admission_network(&addr.to_string()).unwrap();
            prop_assert_eq!(single.prefix_len(), 128);
            prop_assert_eq!(lookup_networks(IpAddr::V6(addr), &[64])[0], single);
        }

        #[test]
        fn never_panics(s in "\\PC{0,50}") {
            let _ = admission_network(&s);
        }
    }
}
