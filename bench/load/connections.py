#!/usr/bin/env python3
"""Connection load and soak test for FileProxy (SPEC §11; not run in CI).

Starts the `fileproxy` binary in front of a `file://` origin folder, then holds
--conns keep-alive connections on loopback, --streams of which stream a large segment
at --stream-kbps each (re-requesting when done); the others send `GET /health` every
--idle-request-s seconds (inside keepalive_timeout_s). Every sample-s seconds it reads
the proxy's RSS and CPU time from /proc. At the end it prints (and writes to --out) one
JSON object: errors by kind, requests, bytes, peak RSS, mean CPU, and the RSS slope in
MiB/hour over the run after the first minute (the soak figure). A request refused on a
keep-alive connection the server had closed as idle (before any byte of an answer) is
retried on a new connection, as HTTP clients do, and counted as a reconnect, not an
error.

  # the load test: 10,000 connections, 1,000 streaming, 2 minutes
  bench/load/connections.py --binary target/release/fileproxy --conns 10000 --streams 1000 --duration 120
  # the soak: 30 minutes, RSS slope
  bench/load/connections.py --binary target/release/fileproxy --duration 1800 --soak

Standard library only. Needs `ulimit -n` above conns + streams + a few hundred, for
this process and for the proxy.
"""
import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SEGMENT_BYTES = 8 * 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_figures(pid):
    """(rss bytes, peak rss bytes, cpu seconds) of a process."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return rss, hwm, cpu


def slope_mib_per_hour(samples):
    """Least-squares slope of RSS over time, in MiB per hour."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mt) * (r - mr) for t, r in samples)
    return cov / var * 3600 / (1 << 20)


class Stats:
    def __init__(self):
        self.errors = {}
        self.requests = 0
        self.bytes = 0
        self.open = 0
        self.reconnects = 0

    def error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return status, length


async def connection(port, stats, stop, streaming, args):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        stats.error(f"connect:{e.__class__.__name__}")
        return
    stats.open += 1
    path = "/v/seg.ts" if streaming else "/health"
    chunk = 16 * 1024
    pause = chunk / (args.stream_kbps * 1024) if streaming else 0
    reused = False
    try:
        while not stop.is_set():
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: connload\r\n\r\n".encode())
            try:
                await writer.drain()
                status, length = await read_head(reader)
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
                partial = getattr(e, "partial", b"")
                if not (reused and not partial):
                    raise
                # The server closed an idle keep-alive connection before this request
                # reached it: what every HTTP client does is retry on a new connection.
                # Counted apart from errors (a whole 8 MiB segment can sit in this
                # client's kernel receive buffer, so the server saw the connection idle).
                stats.reconnects += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                reused = False
                continue
            reused = True
            stats.requests += 1
            if status != 200:
                stats.error(f"status:{status}")
            left = length
            while left > 0:
                data = await reader.read(min(chunk, left))
                if not data:
                    raise ConnectionError("closed mid-body")
                left -= len(data)
                stats.bytes += len(data)
                if pause:
                    await asyncio.sleep(pause)
                if stop.is_set():
                    break
            if not streaming:
                try:
                    await asyncio.wait_for(stop.wait(), args.idle_request_s)
                except asyncio.TimeoutError:
                    pass
    except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
        if not stop.is_set():
            stats.error(f"io:{e.__class__.__name__}")
    finally:
        stats.open -= 1
        writer.close()


async def run(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.conns + 512
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    work = tempfile.mkdtemp(prefix="fp-connload-")
    media = os.path.join(work, "media", "v")
    os.makedirs(media)
    with open(os.path.join(media, "seg.ts"), "wb") as f:
        f.truncate(SEGMENT_BYTES)
    port = free_port()
    cfg = os.path.join(work, "fileproxy.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{port}"
max_connections = {args.conns + 1000}
max_connections_per_ip = 0
shutdown_grace_s = 5
[origin]
url = "file://{os.path.join(work, 'media')}"
[auth]
secret = "connload-secret"
whitelist_api_key = "connload-key"
fixed_ip_whitelist = ["127.0.0.1"]
[log]
level = "warn"
access_log = "off"
""")
    proxy = subprocess.Popen([os.path.abspath(args.binary), "serve", "--config", cfg], cwd=work,
                             stderr=open(os.path.join(work, "stderr.log"), "w"))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    if proxy.poll() is not None:
        sys.exit("fileproxy exited at start:\n" + open(os.path.join(work, "stderr.log")).read())
    stats = Stats()
    stop = asyncio.Event()
    tasks = []
    started = time.monotonic()
    _, _, cpu0 = proc_figures(proxy.pid)
    for i in range(args.conns):
        tasks.append(asyncio.create_task(connection(port, stats, stop, i < args.streams, args)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # do not overflow the listen backlog
    samples = []
    peak = 0
    while time.monotonic() - started < args.duration:
        await asyncio.sleep(args.sample_s)
        if proxy.poll() is not None:
            stats.error("proxy exited")
            break
        rss, hwm, _ = proc_figures(proxy.pid)
        peak = max(peak, hwm)
        t = time.monotonic() - started
        samples.append((t, rss))
        print(f"t={t:6.0f}s open={stats.open} requests={stats.requests} "
              f"MiB={stats.bytes >> 20} rss={rss >> 20}MiB errors={sum(stats.errors.values())} "
              f"reconnects={stats.reconnects}",
              file=sys.stderr)
    elapsed = time.monotonic() - started
    rss, hwm, cpu1 = proc_figures(proxy.pid)
    stop.set()
    # Connections end at their next read; any still waiting after 15 s are cancelled so
    # the figures are always written.
    _, pending = await asyncio.wait(tasks, timeout=15)
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    proxy.terminate()
    code = proxy.wait(timeout=30)
    settled = [s for s in samples if s[0] >= 60] if args.soak else samples
    out = {
        "conns": args.conns, "streams": args.streams, "duration_s": round(elapsed),
        "binary": args.binary, "requests": stats.requests, "bytes": stats.bytes,
        "errors": stats.errors, "reconnects": stats.reconnects, "cancelled_at_end": len(pending), "peak_rss_mib": round(max(peak, hwm) / (1 << 20), 1),
        "final_rss_mib": round(rss / (1 << 20), 1),
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "rss_slope_mib_per_hour": (None if slope_mib_per_hour(settled) is None
                                   else round(slope_mib_per_hour(settled), 2)),
        "exit_code": code,
    }
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="target/release/fileproxy")
    p.add_argument("--conns", type=int, default=10000)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--stream-kbps", type=float, default=64.0, help="KiB/s read per streaming connection")
    p.add_argument("--idle-request-s", type=float, default=20.0)
    p.add_argument("--duration", type=float, default=120.0)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--soak", action="store_true", help="slope over samples after the first minute")
    p.add_argument("--out")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
