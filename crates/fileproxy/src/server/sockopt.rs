//! Socket options of viewer-facing TCP sockets: backlog, TCP_NODELAY, buffer sizes and
//! the congestion control algorithm (default `bbr`, the biggest single lever on lossy,
//! high-latency paths; falls back to the system default with one log line). The
//! algorithm is set only where the handshake showed a path long enough for it to
//! matter (`congestion_control_min_rtt_us`): on a sub-millisecond path BBR gains nothing
//! and, without the `fq` qdisc, paces every packet with a timer of its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::config::SocketConfig;

static CC_FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// Binds a non-blocking listener with `SO_REUSEADDR` and the given backlog.
pub fn bind_listener(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

/// Raises the soft open-files limit to the hard one (as nginx's `worker_rlimit_nofile`
/// and Go's runtime do): every connection, origin connection and sealed cached object
/// holds a descriptor, and a soft limit of 1,024 is far below `max_connections`.
/// Returns the limit in force afterwards.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    // SAFETY: an all-zero `rlimit` is valid; `getrlimit` fills it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid resource and pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The kernel refuses more than `fs.nr_open`, even under an unlimited hard limit.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(1 << 20);
    let target = lim.rlim_max.min(nr_open);
    if lim.rlim_cur < target {
        lim.rlim_cur = target;
        // SAFETY: a valid resource and pointer; raising the soft limit up to the hard
        // one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Which congestion control an accepted connection was left with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    /// `sockets.congestion_control` was set on it.
    Configured,
    /// It kept the system default: none configured, a near peer, or the algorithm is
    /// not available.
    SystemDefault,
}

/// Applies `[sockets]` to an accepted connection; failures are logged, never fatal.
pub fn tune_accepted(stream: &TcpStream, cfg: &SocketConfig) -> Congestion {
    if cfg.nodelay {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY failed");
        }
    }
    let sock = socket2::SockRef::from(stream);
    if cfg.send_buffer_bytes > 0 {
        if let Err(e) = sock.set_send_buffer_size(cfg.send_buffer_bytes) {
            tracing::debug!(error = %e, "SO_SNDBUF failed");
        }
    }
    if cfg.recv_buffer_bytes > 0 {
        if let Err(e) = sock.set_recv_buffer_size(cfg.recv_buffer_bytes) {
            tracing::debug!(error = %e, "SO_RCVBUF failed");
        }
    }
    if cfg.congestion_control.is_empty() || is_near(stream, cfg.congestion_control_min_rtt_us) {
        return Congestion::SystemDefault;
    }
    if set_congestion_control(&sock, &cfg.congestion_control) {
        Congestion::Configured
    } else {
        Congestion::SystemDefault
    }
}

/// Whether the handshake RTT the kernel measured is below `min_rtt_us` (an unknown RTT,
/// as after a SYN cookie, is not near).
fn is_near(stream: &TcpStream, min_rtt_us: u32) -> bool {
    min_rtt_us > 0 && handshake_rtt_us(stream).is_some_and(|rtt| rtt < min_rtt_us)
}

/// The smoothed RTT of a just-accepted connection in microseconds: the kernel seeds it
/// from the SYN-ACK's round trip; `None` when unknown.
#[cfg(target_os = "linux")]
pub fn handshake_rtt_us(stream: &TcpStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero `tcp_info` is a valid value of this plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the socket is open; `info` is writable for `len` bytes and the kernel
    // writes at most `len` and updates it.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let covers_rtt = len as usize >= std::mem::offset_of!(libc::tcp_info, tcpi_rttvar);
    (rc == 0 && covers_rtt && info.tcpi_rtt > 0).then_some(info.tcpi_rtt)
}

/// The handshake RTT (not available on this OS).
#[cfg(not(target_os = "linux"))]
pub fn handshake_rtt_us(_stream: &TcpStream) -> Option<u32> {
    None
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn set_congestion_control(sock: &socket2::SockRef<'_>, name: &str) -> bool {
    let set = sock.set_tcp_congestion(name.as_bytes());
    if let Err(e) = &set {
        if !CC_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                algorithm = name,
                error = %e,
                "congestion control not available; using the system default \
                 (load it with `modprobe tcp_{name}` or list net.ipv4.tcp_available_congestion_control)"
            );
        }
    }
    set.is_ok()
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn set_congestion_control(_sock: &socket2::SockRef<'_>, name: &str) -> bool {
    if !CC_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            algorithm = name,
            "congestion control selection unsupported on this OS"
        );
    }
    false
}

/// Reads the congestion control algorithm of a connected socket (Linux), for tests.
#[cfg(target_os = "linux")]
pub fn congestion_control_of(stream: &TcpStream) -> Option<String> {
    let sock = socket2::SockRef::from(stream);
    sock.tcp_congestion().ok().map(|v| {
        String::from_utf8_lossy(&v)
            .trim_end_matches('\0')
            .to_string()
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The server end of a fresh loopback connection, and its client end.
    async fn accepted() -> (TcpStream, TcpStream) {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    #[tokio::test]
    async fn sets_requested_congestion_control_or_keeps_default() {
        let (server, _client) = accepted().await;
        let before = congestion_control_of(&server).unwrap();
        let available = available();
        let cfg = SocketConfig {
            congestion_control: "bbr".into(),
            congestion_control_min_rtt_us: 0,
            ..SocketConfig::default()
        };
        let applied = tune_accepted(&server, &cfg);
        let after = congestion_control_of(&server).unwrap();
        if available.split_whitespace().any(|a| a == "bbr") {
            assert_eq!(after, "bbr");
            assert_eq!(applied, Congestion::Configured);
        } else {
            assert_eq!(after, before, "fallback keeps the system default");
            assert_eq!(applied, Congestion::SystemDefault);
        }
        let cfg = SocketConfig {
            congestion_control: "no_such_cc".into(),
            congestion_control_min_rtt_us: 0,
            ..SocketConfig::default()
        };
        assert_eq!(tune_accepted(&server, &cfg), Congestion::SystemDefault);
        assert_eq!(congestion_control_of(&server).unwrap(), after);
    }

    /// The algorithms this kernel offers, space-separated.
    fn available() -> String {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
            .unwrap_or_default()
    }

    /// An algorithm the system default is not (so that setting it shows), if any.
    fn other_than(default: &str) -> Option<String> {
        available()
            .split_whitespace()
            .find(|a| *a != default)
            .map(str::to_string)
    }

    #[tokio::test]
    async fn the_algorithm_is_set_only_where_the_handshake_rtt_reaches_the_threshold() {
        let (near, _near_client) = accepted().await;
        let (far, _far_client) = accepted().await;
        let default = congestion_control_of(&near).unwrap();
        let Some(algorithm) = other_than(&default) else {
            panic!("the kernel offers only {default:?}: nothing to tell the cases apart");
        };
        let rtt = handshake_rtt_us(&near).expect("the kernel measured the handshake");
        assert!(
            rtt > 0 && rtt < 1_000_000,
            "loopback handshake RTT {rtt} µs"
        );

        // A threshold above this path's RTT: a near peer, left at the system default.
        let cfg = SocketConfig {
            congestion_control: algorithm.clone(),
            congestion_control_min_rtt_us: 1_000_000,
            ..SocketConfig::default()
        };
        assert_eq!(tune_accepted(&near, &cfg), Congestion::SystemDefault);
        assert_eq!(congestion_control_of(&near).unwrap(), default);

        // A threshold of 1 µs: every measured path reaches it.
        let cfg = SocketConfig {
            congestion_control_min_rtt_us: 1,
            ..cfg
        };
        assert_eq!(tune_accepted(&far, &cfg), Congestion::Configured);
        assert_eq!(congestion_control_of(&far).unwrap(), algorithm);
    }
}
