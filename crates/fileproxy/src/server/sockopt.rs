//! Socket options of viewer-facing TCP sockets: backlog, TCP_NODELAY, buffer sizes and
//! the congestion control algorithm (default `bbr`, the biggest single lever on lossy,
//! high-latency paths; falls back to the system default with one log line).

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

/// Applies `[sockets]` to an accepted connection; failures are logged, never fatal.
pub fn tune_accepted(stream: &TcpStream, cfg: &SocketConfig) {
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
    if !cfg.congestion_control.is_empty() {
        set_congestion_control(&sock, &cfg.congestion_control);
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn set_congestion_control(sock: &socket2::SockRef<'_>, name: &str) {
    if let Err(e) = sock.set_tcp_congestion(name.as_bytes()) {
        if !CC_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                algorithm = name,
                error = %e,
                "congestion control not available; using the system default \
                 (load it with `modprobe tcp_{name}` or list net.ipv4.tcp_available_congestion_control)"
            );
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn set_congestion_control(_sock: &socket2::SockRef<'_>, name: &str) {
    if !CC_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            algorithm = name,
            "congestion control selection unsupported on this OS"
        );
    }
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

    #[tokio::test]
    async fn sets_requested_congestion_control_or_keeps_default() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let before = congestion_control_of(&server).unwrap();
        let available =
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
                .unwrap_or_default();
        let cfg = SocketConfig {
            congestion_control: "bbr".into(),
            ..SocketConfig::default()
        };
        tune_accepted(&server, &cfg);
        let after = congestion_control_of(&server).unwrap();
        if available.split_whitespace().any(|a| a == "bbr") {
            assert_eq!(after, "bbr");
        } else {
            assert_eq!(after, before, "fallback keeps the system default");
        }
        let cfg = SocketConfig {
            congestion_control: "no_such_cc".into(),
            ..SocketConfig::default()
        };
        tune_accepted(&server, &cfg);
        assert_eq!(congestion_control_of(&server).unwrap(), after);
    }
}
