//! Flow keys read from raw IP packets (as a TUN device with `IFF_NO_PI` hands them over).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which fields make two packets belong to the same per-flow link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKeyKind {
    /// Protocol, client address and port, server address and port (one link per connection).
    Tuple,
    /// Client address and port only.
    ClientPort,
    /// Client address only (one link per client host, shared by its connections).
    ClientAddr,
}

/// The key of a per-flow link, normalised so both directions of a connection agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IP protocol number (0 unless the kind is [`FlowKeyKind::Tuple`]).
    pub proto: u8,
    /// Address of the client-side endpoint.
    pub client_addr: IpAddr,
    /// Port of the client-side endpoint (0 when unknown or not part of the key).
    pub client_port: u16,
    /// Address of the server-side endpoint (unspecified unless the kind is `Tuple`).
    pub server_addr: IpAddr,
    /// Port of the server-side endpoint (0 unless the kind is `Tuple`).
    pub server_port: u16,
}

/// Source, destination, protocol and (when present) ports of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// IP protocol number (IPv6: the first next-header value).
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 when the protocol has none or the packet is a non-first fragment).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// Whether packets of this protocol start with 16-bit source and destination ports.
fn has_ports(proto: u8) -> bool {
    // TCP, UDP, DCCP, SCTP, UDP-Lite.
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

fn port_pair(l4: &[u8]) -> Option<(u16, u16)> {
    let b = l4.get(..4)?;
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ))
}

/// Parses the addresses, protocol and ports of an IPv4 or IPv6 packet; `None` if malformed.
pub fn endpoints(pkt: &[u8]) -> Option<Endpoints> {
    match pkt.first()? >> 4 {
        4 => {
            let ihl = usize::from(pkt.first()? & 0x0f) * 4;
            if ihl < 20 || pkt.len() < ihl {
                return None;
            }
            let proto = pkt[9];
            let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            let frag_offset = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
            let (sport, dport) = if has_ports(proto) && frag_offset == 0 {
                port_pair(&pkt[ihl..]).unwrap_or((0, 0))
            } else {
                (0, 0)
            };
            Some(Endpoints {
                proto,
                src: src.into(),
                dst: dst.into(),
                sport,
                dport,
            })
        }
        6 => {
            let hdr = pkt.get(..40)?;
            let proto = hdr[6];
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&hdr[8..24]);
            d.copy_from_slice(&hdr[24..40]);
            // Extension headers are not walked: such packets key on addresses only.
            let (sport, dport) = if has_ports(proto) {
                port_pair(&pkt[40..]).unwrap_or((0, 0))
            } else {
                (0, 0)
            };
            Some(Endpoints {
                proto,
                src: Ipv6Addr::from(s).into(),
                dst: Ipv6Addr::from(d).into(),
                sport,
                dport,
            })
        }
        _ => None,
    }
}

/// The per-flow key of a packet travelling from the client side (`from_client`) or to it.
/// Malformed packets all share one key (unspecified addresses).
pub fn flow_key(pkt: &[u8], from_client: bool, kind: FlowKeyKind) -> FlowKey {
    let unspec = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let Some(e) = endpoints(pkt) else {
        return FlowKey {
            proto: 0,
            client_addr: unspec,
            client_port: 0,
            server_addr: unspec,
            server_port: 0,
        };
    };
    let (ca, cp, sa, sp) = if from_client {
        (e.src, e.sport, e.dst, e.dport)
    } else {
        (e.dst, e.dport, e.src, e.sport)
    };
    match kind {
        FlowKeyKind::Tuple => FlowKey {
            proto: e.proto,
            client_addr: ca,
            client_port: cp,
            server_addr: sa,
            server_port: sp,
        },
        FlowKeyKind::ClientPort => FlowKey {
            proto: 0,
            client_addr: ca,
            client_port: cp,
            server_addr: unspec,
            server_port: 0,
        },
        FlowKeyKind::ClientAddr => FlowKey {
            proto: 0,
            client_addr: ca,
            client_port: 0,
            server_addr: unspec,
            server_port: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn both_directions_of_a_connection_share_a_key() {
        let up = v4_tcp([10, 77, 0, 1], 40000, [10, 77, 0, 2], 443);
        let down = v4_tcp([10, 77, 0, 2], 443, [10, 77, 0, 1], 40000);
        for kind in [
            FlowKeyKind::Tuple,
            FlowKeyKind::ClientPort,
            FlowKeyKind::ClientAddr,
        ] {
            assert_eq!(flow_key(&up, true, kind), flow_key(&down, false, kind));
        }
        let k = flow_key(&up, true, FlowKeyKind::Tuple);
        assert_eq!((k.proto, k.client_port, k.server_port), (6, 40000, 443));
    }

    #[test]
    fn kinds_group_connections_differently() {
        let a = v4_tcp([10, 77, 0, 1], 40000, [10, 77, 0, 2], 443);
        let b = v4_tcp([10, 77, 0, 1], 40001, [10, 77, 0, 2], 443);
        assert_ne!(
            flow_key(&a, true, FlowKeyKind::ClientPort),
            flow_key(&b, true, FlowKeyKind::ClientPort)
        );
        assert_eq!(
            flow_key(&a, true, FlowKeyKind::ClientAddr),
            flow_key(&b, true, FlowKeyKind::ClientAddr)
        );
    }

    #[test]
    fn fragments_and_icmp_have_no_ports() {
        let mut p = v4_tcp([10, 0, 0, 1], 1, [10, 0, 0, 2], 2);
        p[7] = 1; // fragment offset 8 bytes
        assert_eq!(endpoints(&p).map(|e| (e.sport, e.dport)), Some((0, 0)));
        let mut icmp = v4_tcp([10, 0, 0, 1], 1, [10, 0, 0, 2], 2);
        icmp[9] = 1;
        assert_eq!(endpoints(&icmp).map(|e| e.sport), Some(0));
    }

    #[test]
    fn ipv6_udp() {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[6] = 17;
        p[23] = 1;
        p[39] = 2;
        p[40..42].copy_from_slice(&5353u16.to_be_bytes());
        p[42..44].copy_from_slice(&53u16.to_be_bytes());
        let e = endpoints(&p).unwrap();
        assert_eq!((e.proto, e.sport, e.dport), (17, 5353, 53));
        assert_eq!(e.dst, "::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn malformed_packets_do_not_panic() {
        for len in 0..45 {
            for first in [0x00u8, 0x45, 0x4f, 0x41, 0x60, 0xff] {
                let mut p = vec![0u8; len];
                if let Some(b) = p.first_mut() {
                    *b = first;
                }
                if len > 9 {
                    p[9] = 6;
                }
                let _ = flow_key(&p, true, FlowKeyKind::Tuple);
            }
        }
        assert_eq!(endpoints(&[0x45; 19]), None);
        assert_eq!(endpoints(&[]), None);
    }
}
