//! `netem`: command-line entry point (parses arguments, hands over to `netem::setup`).

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use netem::packet::FlowKeyKind;
use netem::sched::{LinkParams, NS_PER_SEC};
use netem::setup::{self, UpConfig};

/// Userspace network emulator: two network namespaces joined by a TUN<->TUN relay that
/// applies delay, jitter, loss, a bit-rate and a bounded queue to each direction.
#[derive(Parser, Debug)]
#[command(name = "netem", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create the namespaces and relay between them in the foreground until
    /// SIGTERM/SIGINT (SIGUSR1 prints the counters); everything is removed on exit.
    Up(Box<UpArgs>),
    /// Remove namespaces left behind (e.g. after `up` was killed with SIGKILL).
    Down {
        #[command(flatten)]
        ns: NsArgs,
        /// Also SIGTERM the processes still running inside them.
        #[arg(long)]
        kill: bool,
    },
}

#[derive(Args, Debug)]
struct NsArgs {
    /// Name of the clients' network namespace.
    #[arg(long, default_value = "fpc")]
    clients_ns: String,
    /// Name of the servers' network namespace.
    #[arg(long, default_value = "fps")]
    servers_ns: String,
}

#[derive(Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    ns: NsArgs,
    /// Client-side address (repeat for more; private ranges only). The first is the source.
    #[arg(long = "client-addr", default_value = "10.77.0.1")]
    client_addrs: Vec<IpAddr>,
    /// Server-side address (repeat for more; private ranges only).
    #[arg(long = "server-addr", default_value = "10.77.0.2")]
    server_addrs: Vec<IpAddr>,
    /// TUN device name inside the clients' namespace.
    #[arg(long, default_value = "tun-c")]
    client_dev: String,
    /// TUN device name inside the servers' namespace.
    #[arg(long, default_value = "tun-s")]
    server_dev: String,
    /// MTU of both TUN devices.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Kernel TUN queue in packets (a packet the relay has not read yet waits there; when
    /// full the kernel drops, counted as "kernel TUN tx drops").
    #[arg(long, default_value_t = 5000)]
    txqueuelen: u32,

    /// Bit-rate of each direction in Mbit/s (10^6 bit/s); 0 = unlimited.
    #[arg(long, default_value_t = 0.0)]
    rate_mbit: f64,
    /// One-way delay of each direction in ms (RTT = twice this).
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Uniform jitter ± this many ms on each direction (order is kept unless --reorder).
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Random loss of each direction in percent.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Queue of each link in KiB (1024 bytes); tail drop. Default: max(rate × RTT, 64 KiB).
    #[arg(long)]
    queue_kb: Option<f64>,

    /// Client→server bit-rate in Mbit/s (overrides --rate-mbit).
    #[arg(long)]
    up_rate_mbit: Option<f64>,
    /// Server→client bit-rate in Mbit/s (overrides --rate-mbit).
    #[arg(long)]
    down_rate_mbit: Option<f64>,
    /// Client→server one-way delay in ms.
    #[arg(long)]
    up_delay_ms: Option<f64>,
    /// Server→client one-way delay in ms.
    #[arg(long)]
    down_delay_ms: Option<f64>,
    /// Client→server jitter in ms.
    #[arg(long)]
    up_jitter_ms: Option<f64>,
    /// Server→client jitter in ms.
    #[arg(long)]
    down_jitter_ms: Option<f64>,
    /// Client→server loss in percent.
    #[arg(long)]
    up_loss: Option<f64>,
    /// Server→client loss in percent.
    #[arg(long)]
    down_loss: Option<f64>,
    /// Client→server queue in KiB.
    #[arg(long)]
    up_queue_kb: Option<f64>,
    /// Server→client queue in KiB.
    #[arg(long)]
    down_queue_kb: Option<f64>,

    /// Give every flow its own link (rate, queue) instead of one shared bottleneck:
    /// "N viewers each on their own X Mbit/s link".
    #[arg(long)]
    per_flow: bool,
    /// What identifies a flow with --per-flow.
    #[arg(long, value_enum, default_value_t = FlowKeyKind::Tuple)]
    flow_key: FlowKeyKind,
    /// Let jitter reorder packets.
    #[arg(long)]
    reorder: bool,
    /// Seed for loss and jitter (default: from the clock, printed at start).
    #[arg(long)]
    seed: Option<u64>,

    /// TCP congestion control default in both namespaces (e.g. cubic, bbr).
    #[arg(long)]
    cc: Option<String>,
    /// TCP congestion control default in the clients' namespace (overrides --cc).
    #[arg(long)]
    cc_client: Option<String>,
    /// TCP congestion control default in the servers' namespace (overrides --cc).
    #[arg(long)]
    cc_server: Option<String>,
    /// Extra sysctl KEY=VALUE inside the clients' namespace (repeatable).
    #[arg(long = "sysctl-client", value_parser = parse_kv)]
    sysctl_client: Vec<(String, String)>,
    /// Extra sysctl KEY=VALUE inside the servers' namespace (repeatable).
    #[arg(long = "sysctl-server", value_parser = parse_kv)]
    sysctl_server: Vec<(String, String)>,

    /// Write the counters as JSON here (on SIGUSR1 and on exit).
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Write this file (JSON with the pid) once the namespaces are ready.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// SIGTERM processes still inside stale namespaces of the same names before removing them.
    #[arg(long)]
    kill_stale: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn non_negative(name: &str, v: f64) -> anyhow::Result<f64> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a non-negative number, got {v}");
    }
    Ok(v)
}

/// Milliseconds (fractional) to nanoseconds.
fn ms(name: &str, v: f64) -> anyhow::Result<u64> {
    Ok((non_negative(name, v)? * 1e6).round() as u64)
}

fn link(
    a: &UpArgs,
    dir: &str,
    rate: Option<f64>,
    delay: Option<f64>,
    jitter: Option<f64>,
    loss: Option<f64>,
    queue: Option<f64>,
) -> anyhow::Result<LinkParams> {
    let rate_bps = (non_negative(&format!("{dir}-rate-mbit"), rate.unwrap_or(a.rate_mbit))? * 1e6)
        .round() as u64;
    let delay_ns = ms(&format!("{dir}-delay-ms"), delay.unwrap_or(a.delay_ms))?;
    let loss = non_negative(&format!("{dir}-loss"), loss.unwrap_or(a.loss))?;
    if loss > 100.0 {
        bail!("--{dir}-loss is a percentage, got {loss}");
    }
    let queue_bytes = match queue.or(a.queue_kb) {
        Some(kb) => (non_negative(&format!("{dir}-queue-kb"), kb)? * 1024.0).round() as u64,
        None => {
            // One bandwidth-delay product of the round trip, at least 64 KiB.
            let rtt_s = 2.0 * delay_ns as f64 / NS_PER_SEC as f64;
            ((rate_bps as f64 / 8.0 * rtt_s) as u64).max(64 * 1024)
        }
    };
    Ok(LinkParams {
        rate_bps,
        delay_ns,
        jitter_ns: ms(&format!("{dir}-jitter-ms"), jitter.unwrap_or(a.jitter_ms))?,
        loss: loss / 100.0,
        queue_bytes,
        allow_reorder: a.reorder,
    })
}

fn config(a: UpArgs) -> anyhow::Result<UpConfig> {
    let up = link(
        &a,
        "up",
        a.up_rate_mbit,
        a.up_delay_ms,
        a.up_jitter_ms,
        a.up_loss,
        a.up_queue_kb,
    )?;
    let down = link(
        &a,
        "down",
        a.down_rate_mbit,
        a.down_delay_ms,
        a.down_jitter_ms,
        a.down_loss,
        a.down_queue_kb,
    )?;
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let cc_sysctls = |cc: Option<&String>| {
        cc.map(|c| (netem::netns::CC_KEY.to_string(), c.clone()))
            .into_iter()
    };
    let client_sysctls = cc_sysctls(a.cc_client.as_ref().or(a.cc.as_ref()))
        .chain(a.sysctl_client)
        .collect();
    let server_sysctls = cc_sysctls(a.cc_server.as_ref().or(a.cc.as_ref()))
        .chain(a.sysctl_server)
        .collect();
    Ok(UpConfig {
        clients_ns: a.ns.clients_ns,
        servers_ns: a.ns.servers_ns,
        client_addrs: a.client_addrs,
        server_addrs: a.server_addrs,
        client_dev: a.client_dev,
        server_dev: a.server_dev,
        mtu: a.mtu,
        txqueuelen: a.txqueuelen,
        up,
        down,
        per_flow: a.per_flow.then_some(a.flow_key),
        seed,
        client_sysctls,
        server_sysctls,
        stats_json: a.stats_json,
        ready_file: a.ready_file,
        kill_stale: a.kill_stale,
    })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Up(args) => {
            let cfg = config(*args)?;
            setup::up(&cfg).context("netem up")?;
        }
        Cmd::Down { ns, kill } => {
            setup::down(&ns.clients_ns, &ns.servers_ns, kill).context("netem down")?;
        }
    }
    Ok(())
}
