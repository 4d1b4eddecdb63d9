#!/usr/bin/env python3
"""Memory with many slow viewers of one object (issue 12's memory goal).

N viewers (default 1,000) fetch the same object (default 4 MB) through FileProxy and
read it at 16 KiB every 0.5 s, each on its own connection with a small receive buffer,
so the proxy has to hold each response open for the whole transfer. The script samples
the proxy's RSS, peak RSS (VmHWM) and thread count from /proc while they read, and
reports them with how many bytes the viewers got and how many requests the origin saw.

    python3 bench/slow_viewers.py --fileproxy-bin target/release/fileproxy --origin file
    python3 bench/slow_viewers.py --fileproxy-bin target/release/fileproxy --origin http
    python3 bench/slow_viewers.py ... --cache off     # the same without the segment cache

Needs only the Python standard library. The origin is the folder itself (`file://`) or
a small threaded HTTP server on loopback that counts its requests. The viewer path is a
`.ts` segment admitted by `auth.fixed_ip_whitelist = ["127.0.0.1"]`, so every request
goes through the access policy as a real one does. `--json FILE` appends the result.
"""

import argparse
import asyncio
import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder and counts GET requests."""

    count = 0
    lock = threading.Lock()

    def do_GET(self):
        with CountingHandler.lock:
            CountingHandler.count += 1
        super().do_GET()

    def log_message(self, *args):
        pass


class ThreadedServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 2048


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
            elif k == "Threads":
                out[k] = int(v)
    return out


async def viewer(port, path, chunk, interval, rcvbuf, got, errors):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=chunk)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: slow-viewer/1.0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not (head.startswith(b"HTTP/1.") and head[8:13] == b" 200 "):
            errors.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            writer.close()
            return
        n = 0
        while True:
            data = await reader.read(chunk)
            if not data:
                break
            n += len(data)
            await asyncio.sleep(interval)
        got.append(n)
        writer.close()
    except Exception as e:  # noqa: BLE001 - a failed viewer is reported, not fatal
        errors.append(repr(e))
        sock.close()


async def run_viewers(args, port, pid, samples):
    got, errors = [], []
    tasks = []
    for _ in range(args.viewers):
        tasks.append(asyncio.create_task(viewer(port, "/media/seg.ts", args.chunk, args.interval, args.rcvbuf, got, errors)))
        await asyncio.sleep(args.ramp / args.viewers)
    done = asyncio.gather(*tasks)
    while not done.done():
        samples.append(proc_status(pid))
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout=args.sample)
        except asyncio.TimeoutError:
            pass
    return got, errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fileproxy-bin", default="target/release/fileproxy")
    ap.add_argument("--origin", choices=["file", "http"], default="file")
    ap.add_argument("--cache", choices=["on", "off"], default="on")
    ap.add_argument("--viewers", type=int, default=1000)
    ap.add_argument("--size", type=int, default=4_000_000)
    ap.add_argument("--chunk", type=int, default=16 * 1024)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--rcvbuf", type=int, default=16 * 1024, help="viewer SO_RCVBUF")
    ap.add_argument("--ramp", type=float, default=5.0, help="seconds over which viewers start")
    ap.add_argument("--sample", type=float, default=0.5)
    ap.add_argument("--json", help="append the result as one JSON line to this file")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    media = os.path.join(tmp.name, "media")
    os.makedirs(media)
    with open(os.path.join(media, "seg.ts"), "wb") as f:
        f.write(os.urandom(args.size))

    server = None
    if args.origin == "http":
        oport = free_port()
        handler = lambda *a, **k: CountingHandler(*a, directory=tmp.name, **k)  # noqa: E731
        server = ThreadedServer(("127.0.0.1", oport), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        origin_url = f"http://127.0.0.1:{oport}"
    else:
        origin_url = f"file://{tmp.name}"

    port = free_port()
    cache = "" if args.cache == "on" else "max_bytes = 0"
    cfg = os.path.join(tmp.name, "fileproxy.toml")
    with open(cfg, "w") as f:
        f.write(
            f'[server]\nlisten = "127.0.0.1:{port}"\nshutdown_grace_s = 1\n'
            # Every viewer is 127.0.0.1: lift the per-address connection cap (256).
            f'max_connections_per_ip = 0\n'
            f'[origin]\nurl = "{origin_url}"\n'
            f'[auth]\nsecret = "bench-secret-0123456789"\nwhitelist_api_key = "bench-key"\n'
            f'fixed_ip_whitelist = ["127.0.0.1"]\n'
            f'[cache]\n{cache}\n'
            f'[log]\nlevel = "warn"\naccess_log = "off"\n'
        )
    proc = subprocess.Popen([args.fileproxy_bin, "serve", "--config", cfg], stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    sys.exit("fileproxy did not start")
                time.sleep(0.05)
        base = proc_status(proc.pid)
        samples = []
        started = time.time()
        got, errors = asyncio.run(run_viewers(args, port, proc.pid, samples))
        took = time.time() - started
        end = proc_status(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if server:
            server.shutdown()
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "origin": args.origin,
        "cache": args.cache,
        "viewers": args.viewers,
        "object_bytes": args.size,
        "read": f"{args.chunk} B every {args.interval} s",
        "complete_viewers": sum(1 for n in got if n >= args.size),
        "failed_viewers": len(errors),
        "first_errors": errors[:3],
        "seconds": round(took, 1),
        "rss_idle_mib": round(base["VmRSS"] / 2**20, 1),
        "rss_max_sampled_mib": round(max(s["VmRSS"] for s in samples) / 2**20, 1) if samples else None,
        "peak_rss_mib": round(end["VmHWM"] / 2**20, 1),
        "threads_max": max(s["Threads"] for s in samples) if samples else end["Threads"],
        "origin_requests": CountingHandler.count if args.origin == "http" else None,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
