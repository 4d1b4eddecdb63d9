//! End-to-end: `netem up` builds two namespaces, a TCP transfer and a UDP burst cross the
//! relay, the round trip is at least the configured delay, the counters move, and SIGTERM
//! removes everything. Needs root and /dev/net/tun; otherwise it prints why and skips.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netem");
const DELAY_MS: u64 = 20;
const TRANSFER: usize = 256 * 1024;

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (namespaces and TUN devices need it)");
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the `ip` tool (iproute2) is not installed");
    }
    None
}

/// Stops the relay and removes the namespaces however the test ends.
struct Cleanup {
    child: Option<Child>,
    clients_ns: String,
    servers_ns: String,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(BIN)
            .args(["down", "--kill", "--clients-ns", &self.clients_ns])
            .args(["--servers-ns", &self.servers_ns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `f` on a thread that has entered namespace `ns`; sockets it creates live there.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        netem::tun::setns_net(&file, &path).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn wait_for(what: &str, child: &mut Child, log: &Path, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "netem exited ({status}) while waiting for {what}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn counter(stats: &serde_json::Value, dir: &str, name: &str) -> u64 {
    stats[dir][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{dir}.{name} missing in {stats}"))
}

#[test]
fn tcp_through_the_relay_sees_the_delay_and_moves_the_counters() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping netem namespace test: {reason}");
        return;
    }
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("netem-it-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cleanup = Cleanup {
        child: None,
        clients_ns: format!("nmt{pid}c"),
        servers_ns: format!("nmt{pid}s"),
        dir: dir.clone(),
    };
    let (cns, sns) = (cleanup.clients_ns.clone(), cleanup.servers_ns.clone());
    let (ready, stats_path, log) = (dir.join("ready"), dir.join("stats.json"), dir.join("log"));

    // A stale namespace of the same name, as a crashed run would leave: `up` replaces it.
    assert!(Command::new("ip")
        .args(["netns", "add", &cns])
        .status()
        .unwrap()
        .success());

    let delay = DELAY_MS.to_string();
    let child = Command::new(BIN)
        .args(["up", "--clients-ns", &cns, "--servers-ns", &sns])
        .args(["--client-addr", "10.199.0.1", "--server-addr", "10.199.0.2"])
        .args(["--rate-mbit", "10", "--delay-ms", &delay, "--loss", "3"])
        .args(["--queue-kb", "32", "--seed", "7"])
        .arg("--stats-json")
        .arg(&stats_path)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let child = cleanup.child.insert(child);
    wait_for("the ready file", child, &log, || ready.exists());

    // TCP: the server (in the servers' namespace) sends TRANSFER bytes to the client.
    let listener = in_netns(&sns, || TcpListener::bind("10.199.0.2:0").unwrap());
    let server_addr: SocketAddr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(&vec![7u8; TRANSFER]).unwrap();
    });
    let (connect_time, received) = in_netns(&cns, move || {
        let start = Instant::now();
        let mut conn = TcpStream::connect_timeout(&server_addr, Duration::from_secs(30)).unwrap();
        let connect_time = start.elapsed();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        (connect_time, got)
    });
    server.join().unwrap();
    assert_eq!(received.len(), TRANSFER);
    assert!(received.iter().all(|&b| b == 7));
    // The handshake crossed the link twice: it cannot have been faster than the RTT.
    assert!(
        connect_time >= Duration::from_millis(2 * DELAY_MS),
        "TCP connect took {connect_time:?}, less than the configured RTT"
    );

    // UDP: a burst far larger than the 32 KiB queue at 10 Mbit/s must be tail-dropped.
    let sink = in_netns(&sns, || UdpSocket::bind("10.199.0.2:0").unwrap());
    let sink_addr = sink.local_addr().unwrap();
    in_netns(&cns, move || {
        let sock = UdpSocket::bind("10.199.0.1:0").unwrap();
        for _ in 0..400 {
            // An occasional ENOBUFS from the local stack is fine; most datagrams get out.
            let _ = sock.send_to(&[1u8; 1200], sink_addr);
        }
    });

    // SIGUSR1 writes the counters without stopping.
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    wait_for("the SIGUSR1 stats", child, &log, || stats_path.exists());

    // SIGTERM: final counters, namespaces removed, exit status 0.
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    cleanup.child = None; // reaped: its pid must not be signalled again
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("{log_text}");
    assert!(status.success(), "netem exited with {status}");
    assert!(log_text.contains("removed stale namespace"), "{log_text}");
    for ns in [&cns, &sns] {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "{ns} left behind"
        );
    }

    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stats_path).unwrap()).unwrap();
    for d in ["up", "down"] {
        assert!(
            counter(&stats, d, "relayed_packets") > 0,
            "{d}: nothing relayed"
        );
        let accounted = counter(&stats, d, "relayed_packets")
            + counter(&stats, d, "dropped_loss")
            + counter(&stats, d, "dropped_queue")
            + counter(&stats, d, "dropped_write")
            + counter(&stats, d, "in_flight_packets");
        assert_eq!(
            counter(&stats, d, "rx_packets"),
            accounted,
            "{d}: packets unaccounted"
        );
    }
    assert!(counter(&stats, "down", "relayed_bytes") >= TRANSFER as u64);
    assert!(
        counter(&stats, "up", "dropped_queue") > 0,
        "the UDP burst was not tail-dropped"
    );
    let lost = counter(&stats, "up", "dropped_loss") + counter(&stats, "down", "dropped_loss");
    assert!(lost > 0, "3 % loss over hundreds of packets dropped none");
}
