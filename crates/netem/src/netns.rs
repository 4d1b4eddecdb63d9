//! Network namespaces and their configuration, through the `ip` and `sysctl` tools.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use crate::error::{Error, Result};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Checks a namespace name is safe as a file name under [`NETNS_DIR`].
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "namespace name",
            detail: format!("{name:?}: use 1-64 of A-Z a-z 0-9 - _ ."),
        })
    }
}

/// Checks an address is private (RFC 1918 IPv4 or IPv6 ULA `fc00::/7`), so the emulated
/// link can never shadow or reach a real network.
pub fn validate_private(addr: IpAddr) -> Result<()> {
    let ok = match addr {
        IpAddr::V4(a) => a.is_private(),
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "address",
            detail: format!("{addr} is not private; use 10/8, 172.16/12, 192.168/16 or fc00::/7"),
        })
    }
}

/// Path of the named namespace's bind mount.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Whether a namespace of this name exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Runs a command, returning its stdout; a non-zero exit is an error carrying stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let cmd = || format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            cmd: cmd(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: cmd(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Creates a named namespace.
pub fn add(name: &str) -> Result<()> {
    ip(&["netns", "add", name]).map(drop)
}

/// Deletes a named namespace (processes still inside keep an anonymous copy alive).
pub fn delete(name: &str) -> Result<()> {
    ip(&["netns", "delete", name]).map(drop)
}

/// Process ids running inside a named namespace.
pub fn pids(name: &str) -> Result<Vec<i32>> {
    Ok(ip(&["netns", "pids", name])?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Sends SIGTERM to every process inside a named namespace; returns their pids.
pub fn kill_all(name: &str) -> Result<Vec<i32>> {
    let pids = pids(name)?;
    for &pid in &pids {
        // SAFETY: plain syscall; pid came from the kernel's list for this namespace.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    Ok(pids)
}

/// Sets a sysctl inside a namespace (`ip netns exec NS sysctl -w KEY=VALUE`).
pub fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let kv = format!("{key}={value}");
    run("ip", &["netns", "exec", ns, "sysctl", "-q", "-w", &kv]).map(drop)
}

/// Host (initial namespace) list of congestion controls non-initial namespaces may use.
const HOST_ALLOWED_CC: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";
/// The sysctl holding a namespace's default TCP congestion control.
pub const CC_KEY: &str = "net.ipv4.tcp_congestion_control";

/// Sets the default TCP congestion control of a namespace.
///
/// A namespace other than the initial one may only pick an algorithm listed in the host's
/// `net.ipv4.tcp_allowed_congestion_control` (else `EPERM`). When `algo` is missing there,
/// it is added for the moment of the change and the host list is restored right after;
/// the namespace keeps its new default (the list is only checked when setting it).
pub fn set_congestion_control(ns: &str, algo: &str) -> Result<()> {
    let io = |what: &str, source| Error::Sys {
        what: format!("{what} {HOST_ALLOWED_CC}"),
        source,
    };
    let allowed = std::fs::read_to_string(HOST_ALLOWED_CC).map_err(|e| io("read", e))?;
    let allowed = allowed.trim();
    if allowed.split_whitespace().any(|a| a == algo) {
        return sysctl(ns, CC_KEY, algo);
    }
    eprintln!("netem: {algo} is not in the host's allowed congestion controls ({allowed}); adding it while setting it in {ns}");
    std::fs::write(HOST_ALLOWED_CC, format!("{allowed} {algo}")).map_err(|e| io("write", e))?;
    let set = sysctl(ns, CC_KEY, algo);
    let restore = std::fs::write(HOST_ALLOWED_CC, allowed).map_err(|e| io("restore", e));
    set.and(restore)
}

/// Reads a sysctl inside a namespace.
pub fn sysctl_get(ns: &str, key: &str) -> Result<String> {
    Ok(run("ip", &["netns", "exec", ns, "sysctl", "-n", key])?
        .trim()
        .to_string())
}

/// Brings `lo` and `dev` (with this MTU and kernel queue length) up in `ns`, gives `dev` the addresses `own` (host routes) and
/// routes each of `peers` through `dev` only. Disables IPv6 on `dev` when no address is IPv6.
pub fn configure_link(
    ns: &str,
    dev: &str,
    mtu: u32,
    txqueuelen: u32,
    own: &[IpAddr],
    peers: &[IpAddr],
) -> Result<()> {
    let mtu = mtu.to_string();
    let qlen = txqueuelen.to_string();
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    let any_v6 = own.iter().chain(peers).any(IpAddr::is_ipv6);
    if !any_v6 {
        // Keeps router solicitations and the like out of the counters. Best effort: the
        // kernel may have IPv6 disabled altogether.
        let _ = sysctl(ns, &format!("net.ipv6.conf.{dev}.disable_ipv6"), "1");
    }
    ip(&[
        "-n",
        ns,
        "link",
        "set",
        dev,
        "mtu",
        &mtu,
        "txqueuelen",
        &qlen,
        "up",
    ])?;
    for a in own {
        let cidr = format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 });
        let mut args = vec!["-n", ns, "addr", "add", &cidr, "dev", dev];
        if a.is_ipv6() {
            args.push("nodad");
        }
        ip(&args)?;
    }
    for p in peers {
        let cidr = format!("{p}/{}", if p.is_ipv4() { 32 } else { 128 });
        // Prefer the first own address of the same family as the source.
        let src = own
            .iter()
            .find(|a| a.is_ipv4() == p.is_ipv4())
            .map(|a| a.to_string());
        let mut args = vec!["-n", ns, "route", "add", &cidr, "dev", dev];
        if let Some(src) = &src {
            args.extend(["src", src.as_str()]);
        }
        ip(&args)?;
    }
    Ok(())
}

/// Kernel-side drop counter of a device in a namespace (`tx_dropped`: packets the stack
/// sent to the TUN that the relay did not read in time). `None` if it cannot be read.
pub fn tun_tx_dropped(ns: &str, dev: &str) -> Option<u64> {
    let out = ip(&["-n", ns, "-s", "-j", "link", "show", "dev", dev]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.get(0)?
        .get("stats64")?
        .get("tx")?
        .get("dropped")?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_the_directory_are_rejected() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["fpc", "fp-s_1.x"] {
            assert!(validate_name(good).is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn only_private_addresses_are_accepted() {
        for good in ["10.77.0.1", "172.16.3.4", "192.168.1.1", "fd00::1"] {
            assert!(validate_private(good.parse().unwrap()).is_ok(), "{good}");
        }
        for bad in ["8.8.8.8", "127.0.0.1", "100.64.0.1", "2001:db8::1", "::1"] {
            assert!(validate_private(bad.parse().unwrap()).is_err(), "{bad}");
        }
    }
}
