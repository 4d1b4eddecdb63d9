#!/usr/bin/env python3
"""Virtual HLS viewers: the benchmark's load generator.

Each viewer behaves like an HLS player on its own keep-alive connection:
  1. (optional) the site backend admits it: POST /api/whitelist {uid, path, clientIp, UserAgent}
  2. GET the signed playlist  …/index.m3u8?uid=U&expires=E&token=T
  3. GET the key named by #EXT-X-KEY, then every segment in order
  4. a new viewer (new uid, new User-Agent suffix, new connection) takes its place.
Pacing: `greedy` fetches back to back (capacity); `realtime` starts playing after the
first segment and keeps at most --buffer-s seconds buffered, counting stalls.

Every request is written as one CSV row (see FIELDS) to <out>/p<i>.csv; the process's
own CPU time goes to <out>/p<i>.json, so the runner can check that the load generator
was not the bottleneck. Runs are bounded by --duration (seconds) and --max-requests.

  hlsload.py --base http://127.0.0.1:10080 --viewers 50 --duration 30 --out /tmp/x \
      --videos 8 --rendition hi --admit --api-key K --secret S --client-ip 127.0.0.1
"""
import argparse
import asyncio
import base64
import csv
import hashlib
import hmac
import json
import os
import random
import resource
import subprocess
import sys
import time
from urllib.parse import urljoin, urlsplit

import aiohttp

FIELDS = ["t_start", "t_end", "kind", "status", "err", "ttfb", "total", "bytes", "viewer", "stall_s"]
DATE = "2024-05-01"
UA_BASE = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/124.0.0.0 Safari/537.36")


def sign(secret, uid, path, expires):
    d = hmac.new(secret.encode(), f"{uid}:{path}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


def error_kind(exc):
    """Short, stable name of a failed request's cause."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnect"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "payload"
    if isinstance(exc, (aiohttp.ClientOSError, ConnectionResetError)):
        return "reset"
    return type(exc).__name__


class Gen:
    def __init__(self, a, index):
        self.a = a
        self.index = index
        self.t0 = time.monotonic()
        self.deadline = self.t0 + a.duration
        self.rows = []
        self.requests = 0
        self.incomplete = 0
        self.connections = 0
        self.trace = aiohttp.TraceConfig()
        self.trace.on_connection_create_end.append(self.on_conn)
        self.rng = random.Random(a.seed * 1000 + index)
        self.timeout = aiohttp.ClientTimeout(total=a.timeout_s, connect=min(15, a.timeout_s))

    async def on_conn(self, session, ctx, params):
        """Counts the TCP connections the viewers open (a closed keep-alive means one more)."""
        self.connections += 1

    def now(self):
        return time.monotonic() - self.t0

    def budget_left(self):
        return time.monotonic() < self.deadline and self.requests < self.a.max_requests

    async def fetch(self, session, kind, url, viewer, method="GET", **kw):
        """One request; returns (status, body or None). Body is kept only for small kinds."""
        self.requests += 1
        t = time.monotonic()
        status, err, ttfb, n, body = 0, "", None, 0, None
        try:
            async with session.request(method, url, **kw) as resp:
                ttfb = time.monotonic() - t
                status = resp.status
                if kind in ("playlist", "admit"):
                    body = await resp.read()
                    n = len(body)
                else:
                    while True:
                        chunk = await resp.content.readany()
                        if not chunk:
                            break
                        n += len(chunk)
                cl = resp.content_length
                if cl is not None and n != cl and method != "HEAD":
                    err = "short_body"
        except asyncio.CancelledError:
            self.incomplete += 1
            raise
        except Exception as e:  # noqa: BLE001 - every failure is a data point
            err = error_kind(e)
        end = time.monotonic()
        if not err and status >= 400:
            err = f"http_{status}"
        self.rows.append([round(t - self.t0, 4), round(end - self.t0, 4), kind, status, err,
                          round(ttfb, 5) if ttfb is not None else "", round(end - t, 5), n, viewer, ""])
        return status, err, body

    async def viewer(self, vid):
        a = self.a
        life = 0
        await asyncio.sleep(self.rng.uniform(0, a.ramp_s))
        while self.budget_left():
            life += 1
            tag = f"{self.index}.{vid}.{life}"
            uid = f"u{self.index}x{vid}x{life}"
            ua = f"{UA_BASE} fpb/{tag}"
            video = f"v{self.rng.randrange(1, a.videos + 1):04d}"
            ppath = f"/vod/{DATE}/{video}/{a.rendition}/index.m3u8"
            conn = aiohttp.TCPConnector(limit=1, force_close=False, enable_cleanup_closed=False)
            async with aiohttp.ClientSession(connector=conn, timeout=self.timeout,
                                             cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                                             headers={"User-Agent": ua}, trace_configs=[self.trace]) as s:
                ok = await self.play(s, tag, uid, ua, ppath)
            if not ok and self.budget_left():
                await asyncio.sleep(1.0)  # a failed player retries after a pause, not in a hot loop

    async def play(self, s, tag, uid, ua, ppath):
        a = self.a
        if a.admit:
            st, err, _ = await self.fetch(
                s, "admit", a.base + "/api/whitelist", tag, method="POST",
                json={"uid": uid, "path": ppath, "clientIp": a.client_ip, "UserAgent": ua},
                headers={"Authorization": f"Bearer {a.api_key}"})
            if err:
                return False
        expires = int(time.time()) + 3600
        url = f"{a.base}{ppath}?uid={uid}&expires={expires}&token={sign(a.secret, uid, ppath[1:], expires)}"
        if not self.budget_left():
            return True
        st, err, body = await self.fetch(s, "playlist", url, tag)
        if err:
            return False
        key_uri, segs, seg_dur = None, [], 10.0
        for line in body.decode("utf-8", "replace").splitlines():
            line = line.strip()
            if line.startswith("#EXT-X-KEY") and 'URI="' in line:
                key_uri = line.split('URI="', 1)[1].split('"', 1)[0]
            elif line.startswith("#EXTINF:"):
                seg_dur = float(line[8:].split(",", 1)[0])
            elif line and not line.startswith("#"):
                segs.append(line)
        base = f"{a.base}{ppath}"
        if key_uri:
            st, err, _ = await self.fetch(s, "key", urljoin(base, key_uri), tag)
            if err:
                return False
        play_start = None
        buffered = 0.0   # seconds of media downloaded
        stalled = 0.0
        for seg in segs:
            if not self.budget_left():
                return True
            if a.pace == "realtime" and play_start is not None:
                ahead = buffered - (time.monotonic() - play_start - stalled)
                if ahead > a.buffer_s:
                    await asyncio.sleep(min(ahead - a.buffer_s, max(0.0, self.deadline - time.monotonic())))
            st, err, _ = await self.fetch(s, "segment", urljoin(base, seg), tag)
            if err:
                return False
            if a.pace == "realtime":
                now = time.monotonic()
                if play_start is None:
                    play_start = now
                else:
                    played = now - play_start - stalled
                    if played > buffered:      # the buffer ran dry before this segment arrived
                        stall = played - buffered
                        stalled += stall
                        self.rows[-1][9] = round(stall, 3)
                buffered += seg_dur
        return True

    async def run(self):
        tasks = [asyncio.create_task(self.viewer(v)) for v in range(self.a.viewers)]
        remaining = self.deadline - time.monotonic()
        done, pending = await asyncio.wait(tasks, timeout=max(0.0, remaining) + self.a.grace_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def child_main(a):
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    g = Gen(a, a.proc_index)
    asyncio.run(g.run())
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"p{a.proc_index}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        w.writerows(g.rows)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.path.join(a.out, f"p{a.proc_index}.json"), "w") as f:
        json.dump({"cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_kb": ru.ru_maxrss, "requests": g.requests,
                   "incomplete": g.incomplete, "connections": g.connections, "wall_s": time.monotonic() - g.t0}, f)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="http://host:port of the peer")
    ap.add_argument("--viewers", type=int, default=10, help="concurrent viewers (over all processes)")
    ap.add_argument("--duration", type=float, default=30, help="seconds; no request starts after it")
    ap.add_argument("--grace-s", type=float, default=2.0, help="wait for in-flight requests past the end")
    ap.add_argument("--max-requests", type=int, default=1_000_000, help="per process")
    ap.add_argument("--ramp-s", type=float, default=2.0, help="viewers start spread over this many seconds")
    ap.add_argument("--timeout-s", type=float, default=60.0, help="per request")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--rendition", default="hi")
    ap.add_argument("--pace", choices=["greedy", "realtime"], default="greedy")
    ap.add_argument("--buffer-s", type=float, default=30.0, help="realtime: max seconds buffered ahead")
    ap.add_argument("--admit", action="store_true", help="admit each viewer via POST /api/whitelist")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--secret", default="")
    ap.add_argument("--client-ip", default="127.0.0.1", help="viewer address as the peer sees it")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--procs", type=int, default=1, help="worker processes (viewers split between them)")
    ap.add_argument("--proc-index", type=int, default=-1, help=argparse.SUPPRESS)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    a.base = a.base.rstrip("/")
    urlsplit(a.base)
    if a.proc_index >= 0:
        return child_main(a)
    # Parent: start --procs children with their share of viewers, wait for all.
    children = []
    for i in range(a.procs):
        share = a.viewers // a.procs + (1 if i < a.viewers % a.procs else 0)
        if share == 0:
            continue
        argv = [sys.executable, os.path.abspath(__file__)] + [x for x in sys.argv[1:]]
        argv += ["--proc-index", str(i), "--viewers", str(share)]
        children.append(subprocess.Popen(argv))
    rc = 0
    for c in children:
        rc |= c.wait()
    return rc


if __name__ == "__main__":
    sys.exit(main())
