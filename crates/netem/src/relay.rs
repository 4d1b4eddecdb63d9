//! The relay: one thread, one `ppoll` loop over both TUN descriptors and a signalfd.
//!
//! Each wake-up reads a bounded batch of packets from each TUN (so neither direction can
//! starve the other), offers them to the direction's [`Direction`], and writes every packet
//! whose delivery time has come to the opposite TUN. The `ppoll` timeout is the earliest
//! pending delivery, with nanosecond resolution (timer slack is set to 1 ns).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use rand::rngs::StdRng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::packet::{flow_key, FlowKey, FlowKeyKind};
use crate::sched::{DirStats, Direction, LinkParams, Verdict};
use crate::tun::Tun;

/// Packets read from one TUN per wake-up before the other side gets a turn.
const BATCH: usize = 64;
/// Most spare packet buffers kept for reuse.
const POOL_MAX: usize = 8192;

/// A packet buffer from the pool and the length of the packet in it.
pub struct Packet {
    buf: Box<[u8]>,
    len: usize,
}

/// A direction of the relay as the event loop uses it.
pub type RelayDirection = Direction<Packet, FlowKey, StdRng>;

/// What a signal asks the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, SIGINT or SIGHUP: stop.
    Stop,
    /// SIGUSR1: report the counters and keep going.
    Report,
}

/// SIGINT, SIGTERM, SIGHUP and SIGUSR1 delivered through a descriptor instead of handlers.
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks the signals for this thread (inherited by threads spawned later) and opens
    /// the descriptor that receives them. Call before anything that must not be interrupted.
    pub fn new() -> Result<Self> {
        // SAFETY: sigset_t is plain data; the calls only touch it and the signal mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
                libc::sigaddset(&mut set, s);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(Error::last_os("block signals"));
            }
            let raw = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if raw < 0 {
                return Err(Error::last_os("signalfd"));
            }
            Ok(Self {
                fd: OwnedFd::from_raw_fd(raw),
            })
        }
    }

    /// The next pending signal, if any.
    pub fn next(&self) -> Option<Signal> {
        loop {
            // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n != size as isize {
                return None;
            }
            match info.ssi_signo as i32 {
                libc::SIGUSR1 => return Some(Signal::Report),
                libc::SIGINT | libc::SIGTERM | libc::SIGHUP => return Some(Signal::Stop),
                _ => continue,
            }
        }
    }
}

/// Counters of both directions plus kernel-side drops, as printed and written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds since the relay started.
    pub elapsed_s: f64,
    /// Seed of the loss/jitter generator.
    pub seed: u64,
    /// Client to server.
    pub up: DirStats,
    /// Server to client.
    pub down: DirStats,
    /// Packets the client-side TUN dropped because the relay did not read them in time.
    pub client_tun_tx_dropped: Option<u64>,
    /// Same for the server-side TUN.
    pub server_tun_tx_dropped: Option<u64>,
}

impl Report {
    /// A multi-line human summary.
    pub fn human(&self) -> String {
        fn dir(name: &str, s: &DirStats) -> String {
            let late_mean = s.late_us_sum.checked_div(s.relayed_packets).unwrap_or(0);
            format!(
                "  {name}: rx {} pkts / {} B, relayed {} pkts / {} B, dropped: loss {}, queue {}, \
                 write {}; in flight {}, max backlog {} B, flows {} (peak {}), \
                 late mean {} us max {} us",
                s.rx_packets,
                s.rx_bytes,
                s.relayed_packets,
                s.relayed_bytes,
                s.dropped_loss,
                s.dropped_queue,
                s.dropped_write,
                s.in_flight_packets,
                s.max_backlog_bytes,
                s.flows_active,
                s.flows_peak,
                late_mean,
                s.late_us_max,
            )
        }
        let opt = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        format!(
            "netem: after {:.1} s (seed {})\n{}\n{}\n  kernel TUN tx drops: client side {}, server side {}",
            self.elapsed_s,
            self.seed,
            dir("up   (client->server)", &self.up),
            dir("down (server->client)", &self.down),
            opt(self.client_tun_tx_dropped),
            opt(self.server_tun_tx_dropped),
        )
    }
}

/// The two TUN devices and the two directions between them.
pub struct Relay {
    client: Tun,
    server: Tun,
    up: RelayDirection,
    down: RelayDirection,
    per_flow: Option<FlowKeyKind>,
    buf_len: usize,
    pool: Vec<Box<[u8]>>,
    start: Instant,
    write_errors_logged: u32,
}

impl Relay {
    /// A relay between `client` and `server` TUNs; `per_flow` selects per-flow links keyed
    /// by that kind (else one shared link per direction); `mtu` sizes the buffers.
    pub fn new(
        client: Tun,
        server: Tun,
        up: RelayDirection,
        down: RelayDirection,
        per_flow: Option<FlowKeyKind>,
        mtu: u32,
    ) -> Self {
        Self {
            client,
            server,
            up,
            down,
            per_flow,
            // Room for a packet larger than the MTU, so one is seen whole, never truncated.
            buf_len: mtu as usize + 256,
            pool: Vec::new(),
            start: Instant::now(),
            write_errors_logged: 0,
        }
    }

    /// Parameters of the client-to-server direction.
    pub fn up_params(&self) -> &LinkParams {
        self.up.params()
    }

    /// Parameters of the server-to-client direction.
    pub fn down_params(&self) -> &LinkParams {
        self.down.params()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counters without the kernel-side drops (which need a subprocess to read).
    pub fn snapshot(&self, seed: u64) -> Report {
        Report {
            elapsed_s: self.start.elapsed().as_secs_f64(),
            seed,
            up: self.up.stats(),
            down: self.down.stats(),
            client_tun_tx_dropped: None,
            server_tun_tx_dropped: None,
        }
    }

    /// Runs until a stop signal arrives; calls `on_report` for every SIGUSR1.
    pub fn run(&mut self, signals: &SignalFd, mut on_report: impl FnMut(&Relay)) -> Result<()> {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        loop {
            let now = self.flush();
            let next = [self.up.next_due(), self.down.next_due()]
                .into_iter()
                .flatten()
                .min();
            let ts = next.map(|t| {
                let d = t.saturating_sub(now);
                libc::timespec {
                    tv_sec: (d / 1_000_000_000) as libc::time_t,
                    tv_nsec: (d % 1_000_000_000) as libc::c_long,
                }
            });
            let mut fds = [
                pollfd(self.client.as_raw_fd()),
                pollfd(self.server.as_raw_fd()),
                pollfd(signals.fd.as_raw_fd()),
            ];
            let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
            // SAFETY: fds is a valid array of 3 pollfd; ts_ptr is null or points to ts.
            let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 3, ts_ptr, std::ptr::null()) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Sys {
                    what: "ppoll".into(),
                    source: e,
                });
            }
            if fds[2].revents != 0 {
                while let Some(sig) = signals.next() {
                    match sig {
                        Signal::Stop => return Ok(()),
                        Signal::Report => on_report(self),
                    }
                }
            }
            for (i, from_client) in [(0, true), (1, false)] {
                let ev = fds[i].revents;
                if ev & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    return Err(Error::Sys {
                        what: format!(
                            "poll on the {} TUN",
                            if from_client { "client" } else { "server" }
                        ),
                        source: io::Error::other(format!("revents {ev:#x}")),
                    });
                }
                if ev & libc::POLLIN != 0 {
                    self.ingest(from_client)?;
                }
            }
        }
    }

    /// Reads up to [`BATCH`] packets from one side and offers them to its direction.
    fn ingest(&mut self, from_client: bool) -> Result<()> {
        for _ in 0..BATCH {
            let mut buf = self
                .pool
                .pop()
                .unwrap_or_else(|| vec![0u8; self.buf_len].into_boxed_slice());
            let tun = if from_client {
                &self.client
            } else {
                &self.server
            };
            let len = match tun.recv(&mut buf) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    self.recycle(buf);
                    return Ok(());
                }
                Err(source) => {
                    return Err(Error::Sys {
                        what: format!("read from {}", tun.name()),
                        source,
                    })
                }
            };
            let now = self.now();
            let key = self
                .per_flow
                .map(|kind| flow_key(&buf[..len], from_client, kind));
            let dir = if from_client {
                &mut self.up
            } else {
                &mut self.down
            };
            match dir.offer(now, len, key, Packet { buf, len }) {
                Verdict::Queued { .. } => {}
                Verdict::DroppedLoss(p) | Verdict::DroppedQueue(p) => self.recycle(p.buf),
            }
        }
        Ok(())
    }

    fn recycle(&mut self, buf: Box<[u8]>) {
        if self.pool.len() < POOL_MAX {
            self.pool.push(buf);
        }
    }

    /// Writes every due packet to its egress TUN; returns the clock reading used.
    fn flush(&mut self) -> u64 {
        let now = self.now();
        for to_server in [true, false] {
            loop {
                let (dir, tun) = if to_server {
                    (&mut self.up, &self.server)
                } else {
                    (&mut self.down, &self.client)
                };
                let Some((due, pkt)) = dir.pop_due(now) else {
                    break;
                };
                match tun.send(&pkt.buf[..pkt.len]) {
                    Ok(()) => dir.record_relayed(pkt.len, now.saturating_sub(due)),
                    Err(e) => {
                        dir.record_write_failed();
                        if self.write_errors_logged < 10 {
                            self.write_errors_logged += 1;
                            eprintln!("netem: write to {} failed: {e}", tun.name());
                        }
                    }
                }
                self.recycle(pkt.buf);
            }
        }
        now
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
