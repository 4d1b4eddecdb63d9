#!/usr/bin/env python3
"""FileProxy benchmark runner: one scenario, several peers, several runs, one report.

    bench/run.sh SCENARIO [PEER …] [--runs N] [--cc cubic|bbr] [--slow-origin] …
    bench/run.sh --smoke

For every run and peer it: starts a fresh origin (Debian's nginx on the generated media
tree), a fresh redis-server when the peer needs one, the peer itself, then the load
(virtual HLS viewers, or wrk for plain segment fetches) from the client side of the
link; samples the peer's processes in /proc; stops everything; and finally writes
bench/results/<date>-<scenario>[-tag].md (+ .json and PNG plots).

Everything runs inside network namespaces this runner creates (fpb-*): on their own
loopback, or across the emulated link (crates/netem). Nothing leaves the machine.
Run as root (namespaces). See bench/README.md.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import statistics
import string
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter, defaultdict

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
VENV_PY = os.path.join(BENCH, ".venv", "bin", "python")
VENV_BIN = os.path.join(BENCH, ".venv", "bin")
WORK = os.path.join(BENCH, ".work")
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

NS_LO, NS_CLI, NS_SRV, NS_ORG = "fpb-lo", "fpb-cli", "fpb-srv", "fpb-org"
CLI_ADDR, SRV_ADDR = "10.77.0.1", "10.77.0.2"          # viewer link (private, inside our namespaces)
SRV_ORG_ADDR, ORG_ADDR = "10.78.0.1", "10.78.0.2"      # slow-origin link
PEER_PORT, ORIGIN_PORT, REDIS_PORT = 10080, 27804, 26379

PEERS = {
    "fileproxy-redis": dict(kind="fileproxy", config="peers/fileproxy/redis.toml.tmpl", redis=True, auth=True),
    "fileproxy-mem": dict(kind="fileproxy", config="peers/fileproxy/memory.toml.tmpl", redis=False, auth=True),
    "fileproxy-nocache": dict(kind="fileproxy", config="peers/fileproxy/memory-nocache.toml.tmpl", redis=False,
                              auth=True),
    "aiohttp": dict(kind="gunicorn", dir="peers/aiohttp", redis=True, auth=True),
    "fastapi": dict(kind="gunicorn", dir="peers/fastapi", redis=True, auth=True),
    "nginx": dict(kind="nginx", config="peers/nginx/proxy.conf.tmpl", redis=False, auth=False),
    "nginx-cache": dict(kind="nginx", config="peers/nginx/proxy-cache.conf.tmpl", redis=False, auth=False),
    "direct": dict(kind="direct", redis=False, auth=False),
}
DEFAULT_PEERS = ["fileproxy-redis", "fileproxy-mem", "aiohttp", "fastapi", "nginx", "nginx-cache", "direct"]
SMOKE_PEERS = ["aiohttp", "nginx"]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*cmd, check=True, capture=True, env=None, timeout=60):
    r = subprocess.run(cmd, capture_output=capture, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {(r.stderr or '').strip()}")
    return r


def render(template_rel, out_path, **values):
    """Fill a $name template (nginx's own $vars are written $$var in it)."""
    with open(os.path.join(BENCH, template_rel)) as f:
        text = f.read()
    tmpl = string.Template(text)
    missing = {m.group("named") or m.group("braced") for m in tmpl.pattern.finditer(text)} - set(values) - {None}
    if missing:
        raise RuntimeError(f"{template_rel}: no value for {sorted(missing)}")
    with open(out_path, "w") as f:
        f.write(tmpl.substitute(values))
    return out_path


# ---------------------------------------------------------------- processes and /proc

class Proc:
    """A process we started (own session, so its group is ours alone to stop)."""

    def __init__(self, name, argv, ns=None, env=None, logdir=WORK):
        self.name = name
        full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        self.logf = open(os.path.join(logdir, f"{name}.log"), "ab")
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen(full, stdout=self.logf, stderr=subprocess.STDOUT, env=e, start_new_session=True)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=15):
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(5)
        self.logf.close()
        return self.p.returncode

    def tail(self, n=20):
        try:
            with open(self.logf.name, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


def proc_table():
    """pid -> (ppid, utime+stime ticks, cutime+cstime ticks, rss pages) for every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        # rest[0] = state (field 3); utime = field 14 → rest[11]
        out[int(d)] = (int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14]), int(rest[21]))
    return out


def tree(table, root):
    kids = defaultdict(list)
    for pid, v in table.items():
        kids[v[0]].append(pid)
    seen, stack = [], [root]
    while stack:
        p = stack.pop()
        if p in table:
            seen.append(p)
            stack.extend(kids.get(p, []))
    return seen


def pss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def host_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class Sampler(threading.Thread):
    """Samples CPU and memory of named process trees every `period` seconds."""

    def __init__(self, roots, period=0.5):
        super().__init__(daemon=True)
        self.roots = roots          # name -> pid
        self.period = period
        self.stop_ev = threading.Event()
        self.peak_rss = defaultdict(int)
        self.peak_pss = defaultdict(int)
        self.peak_procs = defaultdict(int)
        self.series = defaultdict(list)   # name -> [(t, cpu_ticks)]
        self.max_ticks = defaultdict(int)  # a tree's CPU never goes down; its root may exit first
        self.first = self.last = None
        self.t0 = time.monotonic()

    def cpu(self, table, name):
        pids = tree(table, self.roots[name])
        root = table.get(self.roots[name])
        ticks = sum(table[p][1] for p in pids) + (root[2] if root else 0)
        return ticks, pids

    def snap(self, with_pss):
        table = proc_table()
        t = time.monotonic() - self.t0
        snap = {"t": t, "host": host_busy(), "cpu": {}}
        for name in self.roots:
            ticks, pids = self.cpu(table, name)
            self.max_ticks[name] = max(self.max_ticks[name], ticks)
            snap["cpu"][name] = self.max_ticks[name]
            self.series[name].append((t, ticks))
            self.peak_rss[name] = max(self.peak_rss[name], sum(table[p][3] for p in pids) * PAGE // 1024)
            self.peak_procs[name] = max(self.peak_procs[name], len(pids))
            if with_pss:
                self.peak_pss[name] = max(self.peak_pss[name], pss_kb(pids))
        return snap

    def run(self):
        i = 0
        self.first = self.last = self.snap(True)
        while not self.stop_ev.wait(self.period):
            i += 1
            self.last = self.snap(i % 2 == 0)

    def finish(self):
        self.stop_ev.set()
        self.join()
        self.last = self.snap(True)
        cpu = {n: (self.last["cpu"][n] - self.first["cpu"][n]) / CLK for n in self.roots}
        hb = (self.last["host"][0] - self.first["host"][0]) / max(1, self.last["host"][1] - self.first["host"][1])
        return {"cpu_s": cpu, "peak_rss_kb": dict(self.peak_rss), "peak_pss_kb": dict(self.peak_pss),
                "procs": dict(self.peak_procs), "host_busy": hb, "wall_s": self.last["t"] - self.first["t"]}


# ---------------------------------------------------------------- topology

def ns_exists(name):
    return os.path.exists(f"/run/netns/{name}")


def ns_add(name):
    if ns_exists(name):
        sh("ip", "netns", "del", name, check=False)
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")


def set_congctl(ns, algo):
    """Make every route of the namespace carry `congctl ALGO`.

    The server namespace cannot change its default congestion control to one outside
    the host's allowed list (cubic here), but a route's congctl applies to every TCP
    socket using that route, accepted ones included; a program may still pick its own
    per socket (TCP_CONGESTION), as FileProxy does.
    """
    for table in ("main", "local"):
        r = sh("ip", "-n", ns, "route", "show", "table", table, check=False)
        for line in r.stdout.splitlines():
            words = line.split()
            if not words or words[0] in ("broadcast", "multicast", "unreachable"):
                continue
            if "congctl" in words:
                i = words.index("congctl")
                del words[i:i + 2]
            words = [w for w in words if w not in ("linkdown",)]
            res = sh("ip", "-n", ns, "route", "change", "table", table, *words, "congctl", algo, check=False)
            if res.returncode != 0:
                log(f"warning: could not set congctl {algo} on route '{line}' in {ns}: {res.stderr.strip()}")


class Topology:
    """Namespaces and links for one scenario; addresses the parts use to reach each other.

    loopback: viewers, peer, redis and origin share namespace fpb-lo and talk on 127.0.0.1.
    netem:    `netem up` creates fpb-cli (viewers) and fpb-srv (peer, redis, origin) joined
              by its emulated link; without a netem binary a plain veth pair is used.
    --slow-origin (loopback scenarios): `netem up` creates fpb-lo (viewers, peer, redis)
              and fpb-org (origin) joined by an emulated link, so only the origin is far.
    """

    def __init__(self, scn, args):
        self.scn, self.args = scn, args
        self.links = []
        self.namespaces = []
        self.desc = ""

    def have_netem(self):
        return bool(self.args.netem_bin) and os.path.exists(self.args.netem_bin)

    def up(self):
        a, s = self.args, self.scn
        if s["link"] == "loopback":
            self.cli_ns = self.srv_ns = self.org_ns = NS_LO
            self.peer_addr = self.client_ip = "127.0.0.1"
            self.peer_listen = f"127.0.0.1:{PEER_PORT}"
            self.origin_hostport = f"127.0.0.1:{ORIGIN_PORT}"
            self.desc = "loopback inside one private namespace (no link emulation)"
            if a.slow_origin:
                if not self.have_netem():
                    raise SystemExit("--slow-origin needs the netem binary (cargo build --release -p netem)")
                self.org_ns = NS_ORG
                self.origin_hostport = f"{ORG_ADDR}:{ORIGIN_PORT}"
                o = dict(delay_ms=a.origin_delay_ms, jitter_ms=0, rate_mbit=a.origin_rate_mbit,
                         loss_pct=a.origin_loss_pct, per_flow=False, queue_kb=a.origin_queue_kb)
                self.desc += "; origin behind " + self.netem(NS_LO, NS_ORG, SRV_ORG_ADDR, ORG_ADDR, o, "origin")
            else:
                ns_add(NS_LO)
                self.namespaces = [NS_LO]
        else:
            if a.slow_origin:
                raise SystemExit("--slow-origin is supported with loopback scenarios (viewers near, origin far)")
            self.cli_ns, self.srv_ns = NS_CLI, NS_SRV
            self.org_ns = NS_SRV
            self.peer_addr, self.client_ip = SRV_ADDR, CLI_ADDR
            self.peer_listen = f"0.0.0.0:{PEER_PORT}"
            self.origin_hostport = f"127.0.0.1:{ORIGIN_PORT}"
            if self.have_netem():
                self.desc = self.netem(NS_CLI, NS_SRV, CLI_ADDR, SRV_ADDR, s, "viewers")
            else:
                self.desc = self.veth(NS_CLI, NS_SRV, CLI_ADDR, SRV_ADDR)
        self.origin_direct = (self.origin_hostport if s["link"] == "loopback"
                              else f"{self.peer_addr}:{ORIGIN_PORT}")
        for ns in sorted({self.srv_ns, self.org_ns}):
            set_congctl(ns, a.cc)
        return self

    def netem(self, cns, sns, caddr, saddr, s, tag):
        a = self.args
        ready = os.path.join(WORK, f"netem-{tag}.ready")
        stats = os.path.join(WORK, f"netem-{tag}.json")
        for f in (ready, stats):
            if os.path.exists(f):
                os.unlink(f)
        argv = [a.netem_bin, "up", "--clients-ns", cns, "--servers-ns", sns, "--client-addr", caddr,
                "--server-addr", saddr, "--rate-mbit", str(s["rate_mbit"]), "--delay-ms", str(s["delay_ms"]),
                "--jitter-ms", str(s.get("jitter_ms", 0)), "--loss", str(s["loss_pct"]),
                "--ready-file", ready, "--stats-json", stats]
        if s.get("queue_kb"):
            argv += ["--queue-kb", str(s["queue_kb"])]
        if s.get("per_flow"):
            argv += ["--per-flow"]
        argv += a.netem_arg
        p = Proc(f"netem-{tag}", argv)
        self.links.append((p, cns, sns, stats))
        end = time.monotonic() + 20
        while not os.path.exists(ready):
            if not p.alive() or time.monotonic() > end:
                raise RuntimeError(f"netem link {tag} did not come up:\n{p.tail()}")
            time.sleep(0.1)
        if not wait_tcp_path(cns, saddr, p):
            raise RuntimeError(f"netem link {tag}: {saddr} unreachable from {cns}:\n{p.tail()}")
        return (f"netem (userspace TUN relay, crates/netem): one-way delay {s['delay_ms']} ms ± "
                f"{s.get('jitter_ms', 0)} ms, {s['rate_mbit']} Mbit/s {'per flow' if s.get('per_flow') else 'shared'}, "
                f"loss {s['loss_pct']} % each way, queue {s.get('queue_kb') or 'default'} KiB")

    def veth(self, cns, sns, caddr, saddr):
        for ns in (cns, sns):
            ns_add(ns)
            self.namespaces.append(ns)
        sh("ip", "link", "add", "fpbv-c", "netns", cns, "type", "veth", "peer", "name", "fpbv-s", "netns", sns)
        sh("ip", "-n", cns, "addr", "add", f"{caddr}/30", "dev", "fpbv-c")
        sh("ip", "-n", sns, "addr", "add", f"{saddr}/30", "dev", "fpbv-s")
        sh("ip", "-n", cns, "link", "set", "fpbv-c", "up")
        sh("ip", "-n", sns, "link", "set", "fpbv-s", "up")
        return "veth pair WITHOUT emulation (no netem binary found): the scenario's link figures were NOT applied"

    def link_stats(self):
        out = {}
        for p, _, _, stats in self.links:
            try:
                os.kill(p.pid, signal.SIGUSR1)
                time.sleep(0.3)
                with open(stats) as f:
                    out[p.name] = json.load(f)
            except (OSError, ValueError):
                pass
        return out

    def down(self):
        for p, cns, sns, _ in self.links:
            p.stop()
            sh(self.args.netem_bin, "down", "--clients-ns", cns, "--servers-ns", sns, check=False)
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)


def wait_tcp_path(ns, addr, proc, timeout=15):
    """Wait until `addr` answers ping from namespace `ns` (the link is up)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and not proc.alive():
            return False
        r = sh("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", addr, check=False)
        if r.returncode == 0:
            return True
        time.sleep(0.3)
    return False


def http_status(ns, url, timeout=2.0, method="GET", data=None, headers=()):
    argv = ["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
            str(timeout), "-X", method, url]
    for h in headers:
        argv += ["-H", h]
    if data is not None:
        argv += ["--data", data]
    r = sh(*argv, check=False)
    try:
        return int(r.stdout.strip() or 0)
    except ValueError:
        return 0


def http_get(ns, url, timeout=2.0):
    r = sh("ip", "netns", "exec", ns, "curl", "-s", "--max-time", str(timeout), url, check=False)
    return r.stdout


def wait_http(ns, url, proc, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and not proc.alive():
            return False
        if http_status(ns, url, timeout=1) > 0:
            return True
        time.sleep(0.2)
    return False


def origin_accepts(topo, field=1):
    """The origin's accepted connections (field 1) or requests (field 3) so far."""
    text = http_get(topo.org_ns, f"http://127.0.0.1:{ORIGIN_PORT}/nginx_status")
    m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", text)
    return int(m.group(field)) if m else None


# ---------------------------------------------------------------- one run

def start_origin(topo, media_dir, rundir):
    conf = render("origin/nginx.conf.tmpl", os.path.join(rundir, "origin.conf"), work=rundir, media=media_dir,
                  origin_listen=f"0.0.0.0:{ORIGIN_PORT}")
    p = Proc("origin", ["nginx", "-c", conf, "-p", rundir], ns=topo.org_ns, logdir=rundir)
    url = f"http://127.0.0.1:{ORIGIN_PORT}/nginx_status"
    if not wait_http(topo.org_ns, url, p, 10):
        raise RuntimeError(f"origin nginx did not start:\n{p.tail()}")
    return p


def start_redis(topo, rundir):
    p = Proc("redis", ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no", "--dir", rundir, "--maxclients", "20000"], ns=topo.srv_ns, logdir=rundir)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        r = sh("ip", "netns", "exec", topo.srv_ns, "redis-cli", "-p", str(REDIS_PORT), "ping", check=False)
        if "PONG" in r.stdout:
            return p
        time.sleep(0.1)
    raise RuntimeError(f"redis-server did not start:\n{p.tail()}")


def start_peer(name, topo, rundir, keys, args):
    spec = PEERS[name]
    kind = spec["kind"]
    if kind == "direct":
        return None, f"http://{topo.origin_direct}"
    base = f"http://{topo.peer_addr}:{PEER_PORT}"
    if kind == "fileproxy":
        conf = render(spec["config"], os.path.join(rundir, f"{name}.toml"), peer_listen=topo.peer_listen,
                      origin_url=f"http://{topo.origin_hostport}", redis_hostport=f"127.0.0.1:{REDIS_PORT}",
                      secret=keys["secret"], api_key=keys["api_key"], fp_cc=args.fileproxy_cc)
        p = Proc(name, [args.fileproxy_bin, "serve", "--config", conf], ns=topo.srv_ns, logdir=rundir)
        probe = f"{base}/health"
    elif kind == "gunicorn":
        env = {"PEER_BIND": topo.peer_listen, "PEER_ORIGIN": f"http://{topo.origin_hostport}",
               "PEER_REDIS": f"redis://127.0.0.1:{REDIS_PORT}/0", "PEER_SECRET": keys["secret"],
               "PEER_WHITELIST_KEY": keys["api_key"]}
        d = os.path.join(BENCH, spec["dir"])
        p = Proc(name, [os.path.join(VENV_BIN, "gunicorn"), "-c", os.path.join(d, "gunicorn.conf.py"),
                        "--chdir", d, "app:app"], ns=topo.srv_ns, env=env, logdir=rundir)
        probe = f"{base}/health"
    else:  # nginx
        conf = render(spec["config"], os.path.join(rundir, f"{name}.conf"), work=rundir,
                      origin_hostport=topo.origin_hostport, peer_listen=topo.peer_listen)
        p = Proc(name, ["nginx", "-c", conf, "-p", rundir], ns=topo.srv_ns, logdir=rundir)
        probe = f"{base}/"
    # Probe from the server namespace on its own address (not across the emulated link).
    local_probe = probe.replace(topo.peer_addr, "127.0.0.1") if topo.peer_addr != "127.0.0.1" else probe
    if not wait_http(topo.srv_ns, local_probe, p, 30):
        raise RuntimeError(f"peer {name} did not start:\n{p.tail()}")
    if kind == "gunicorn":
        # gunicorn answers as soon as the first worker is up; give the others a moment.
        end = time.monotonic() + 15
        while time.monotonic() < end and len(tree(proc_table(), p.pid)) < 1 + int(os.environ.get("PEER_WORKERS", "4")):
            time.sleep(0.2)
    return p, base


def run_hls(scn, topo, base, spec, keys, rundir, args):
    out = os.path.join(rundir, "load")
    argv = [VENV_PY, os.path.join(BENCH, "load", "hlsload.py"), "--base", base, "--viewers", str(scn["viewers"]),
            "--duration", str(scn["duration_s"]), "--timeout-s", str(scn["timeout_s"]),
            "--videos", str(scn["media_cfg"]["videos"]), "--rendition", scn["rendition"], "--pace", scn["pace"],
            "--ramp-s", str(min(5.0, scn["warmup_s"])), "--client-ip", topo.client_ip, "--procs", str(args.load_procs),
            "--seed", str(args.seed), "--out", out, "--max-requests", str(args.max_requests)]
    if spec["auth"]:
        argv += ["--admit", f"--api-key={keys['api_key']}", f"--secret={keys['secret']}"]
    return Proc("load", argv, ns=topo.cli_ns, logdir=rundir), out


def admit_for_wrk(topo, base, keys, ua, paths):
    for i, p in enumerate(paths):
        body = json.dumps({"uid": f"wrk{i}", "path": p, "clientIp": topo.client_ip, "UserAgent": ua})
        st = http_status(topo.cli_ns, f"{base}/api/whitelist", method="POST", data=body, timeout=10,
                         headers=(f"Authorization: Bearer {keys['api_key']}", "Content-Type: application/json"))
        if st != 200:
            raise RuntimeError(f"whitelist admission for wrk failed: HTTP {st}")


def run_wrk(scn, topo, base, spec, keys, rundir, args):
    media = scn["media_cfg"]
    videos = [f"v{v:04d}" for v in range(1, min(3, media["videos"]) + 1)]   # ≤ max_paths_per_cidr
    paths = [f"/vod/2024-05-01/{v}/{scn['rendition']}/seg_{s:05d}.ts" for v in videos
             for s in range(1, media["segments"] + 1)]
    ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36 wrk"
    if spec["auth"]:
        admit_for_wrk(topo, base, keys, ua, [f"/vod/2024-05-01/{v}/{scn['rendition']}/index.m3u8" for v in videos])
    env = {"FPB_PATHS": " ".join(paths), "FPB_UA": ua}
    argv = ["wrk", "-t", "2", "-c", str(scn["connections"]), "-d", f"{int(round(scn['duration_s']))}s", "--timeout",
            f"{int(round(scn['timeout_s']))}s", "-s", os.path.join(BENCH, "load", "segments.lua"), base + paths[0]]
    return Proc("load", argv, ns=topo.cli_ns, env=env, logdir=rundir), None


def check_auth(topo, base, keys):
    """Smoke: an auth peer must refuse what SPEC §2 refuses and serve what it allows."""
    ua = "fpb-check/1.0"
    h = (f"User-Agent: {ua}",)
    pl = "/vod/2024-05-01/v0001/hi/index.m3u8"
    seg = "/vod/2024-05-01/v0001/hi/seg_00001.ts"
    exp = int(time.time()) + 600
    good = f"{base}{pl}?uid=chk&expires={exp}&token={sign_token(keys['secret'], 'chk', pl[1:], exp)}"
    steps = [
        ("segment before admission", lambda: http_status(topo.cli_ns, base + seg, headers=h), 403),
        ("admission with a wrong key", lambda: http_status(
            topo.cli_ns, f"{base}/api/whitelist", method="POST", headers=("Authorization: Bearer nope",),
            data=json.dumps({"uid": "chk", "path": pl, "clientIp": topo.client_ip, "UserAgent": ua})), 403),
        ("admission", lambda: http_status(
            topo.cli_ns, f"{base}/api/whitelist", method="POST", data=json.dumps(
                {"uid": "chk", "path": pl, "clientIp": topo.client_ip, "UserAgent": ua}),
            headers=(f"Authorization: Bearer {keys['api_key']}", "Content-Type: application/json")), 200),
        ("playlist with a bad token", lambda: http_status(
            topo.cli_ns, f"{base}{pl}?uid=chk&expires={exp}&token=AAAA", headers=h), 403),
        ("playlist with a good token", lambda: http_status(topo.cli_ns, good, headers=h), 200),
        ("same playlist again (access count, limit 1)", lambda: http_status(topo.cli_ns, good, headers=h), 403),
        ("segment after admission", lambda: http_status(topo.cli_ns, base + seg, headers=h), 200),
        ("other video's segment", lambda: http_status(
            topo.cli_ns, base + seg.replace("v0001", "v0002"), headers=h), 403),
    ]
    for what, call, want in steps:
        got = call()
        if got != want:
            raise RuntimeError(f"auth check '{what}': HTTP {got}, expected {want}")


def sign_token(secret, uid, path, expires):
    import base64
    import hashlib
    import hmac
    d = hmac.new(secret.encode(), f"{uid}:{path}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


def one_run(peer, scn, topo, media_dir, args, run_idx):
    spec = PEERS[peer]
    rundir = os.path.join(WORK, "runs", f"{scn['name']}-{peer}-{run_idx}")
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(os.path.join(rundir, "tmp"))
    keys = {"secret": secrets.token_hex(24), "api_key": secrets.token_hex(24)}
    procs = []
    result = {"peer": peer, "run": run_idx}
    try:
        origin = start_origin(topo, media_dir, rundir)
        procs.append(origin)
        redis = start_redis(topo, rundir) if spec["redis"] else None
        if redis:
            procs.append(redis)
        peer_p, base = start_peer(peer, topo, rundir, keys, args)
        if peer_p:
            procs.append(peer_p)
        if args.smoke and spec["auth"]:
            check_auth(topo, base, keys)
            result["auth_checked"] = True
        time.sleep(0.5)
        accepts0 = origin_accepts(topo)
        requests0 = origin_accepts(topo, 3)
        roots = {"origin": origin.pid}
        if peer_p:
            roots["peer"] = peer_p.pid
        if redis:
            roots["redis"] = redis.pid
        runner = run_wrk if scn.get("mode") == "wrk" else run_hls
        load, outdir = runner(scn, topo, base, spec, keys, rundir, args)
        roots["load"] = load.pid
        for lp, *_ in topo.links:
            roots[lp.name] = lp.pid
        sampler = Sampler(roots)
        sampler.start()
        hard_limit = scn["duration_s"] + 60
        try:
            load.p.wait(hard_limit)
        except subprocess.TimeoutExpired:
            log(f"load generator exceeded {hard_limit} s; stopping it")
        usage = sampler.finish()
        load_rc = load.stop()
        accepts1 = origin_accepts(topo)
        if accepts1 is not None:
            accepts1 -= 1  # this status request's own connection
        requests1 = origin_accepts(topo, 3)
        if requests1 is not None:
            requests1 -= 2  # the two status requests since requests0 was read
        if peer_p and not peer_p.alive():
            result["peer_died"] = peer_p.tail()
        result.update(usage=usage, load_rc=load_rc,
                      origin_conns=(accepts1 - accepts0) if None not in (accepts0, accepts1) else None,
                      origin_requests=(requests1 - requests0) if None not in (requests0, requests1) else None)
        if load_rc != 0:
            raise RuntimeError(f"load generator exited with {load_rc}: {load.tail(5)}")
        if scn.get("mode") == "wrk":
            result.update(parse_wrk(load, scn))
        else:
            result.update(parse_hls(outdir, scn))
        result["load_tail"] = load.tail(5) if load_rc else ""
    except Exception as e:  # noqa: BLE001 - a failed peer is a result, not a crash
        result["failed"] = str(e)
        log(f"{peer} run {run_idx}: FAILED: {e}")
    finally:
        for p in reversed(procs):
            p.stop()
    return result


# ---------------------------------------------------------------- parsing and statistics

def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def parse_hls(outdir, scn):
    rows = []
    lg_cpu, lg_wall, incomplete, conns = 0.0, 0.0, 0, 0
    for fn in sorted(os.listdir(outdir)) if os.path.isdir(outdir) else []:
        path = os.path.join(outdir, fn)
        if fn.endswith(".csv"):
            with open(path) as f:
                for r in csv.DictReader(f):
                    rows.append(r)
        elif fn.endswith(".json"):
            with open(path) as f:
                j = json.load(f)
            lg_cpu += j["cpu_s"]
            lg_wall = max(lg_wall, j["wall_s"])
            incomplete += j["incomplete"]
            conns += j.get("connections", 0)
    w0, w1 = scn["warmup_s"], scn["duration_s"]
    span = w1 - w0
    media = [r for r in rows if r["kind"] in ("playlist", "key", "segment")]
    ok = [r for r in media if not r["err"]]
    in_win = [r for r in ok if w0 <= float(r["t_end"]) <= w1]
    seg_ok = [r for r in ok if r["kind"] == "segment" and float(r["t_start"]) >= w0]
    pl_ok = [r for r in ok if r["kind"] == "playlist" and float(r["t_start"]) >= w0]
    errors = Counter(f"{r['kind']}:{r['err']}" for r in rows if r["err"])
    stalls = [float(r["stall_s"]) for r in rows if r.get("stall_s")]
    res = {
        "requests_total": len(rows), "media_ok": len(ok), "segments_ok": sum(1 for r in ok if r["kind"] == "segment"),
        "playlists_ok": sum(1 for r in ok if r["kind"] == "playlist"),
        "rps": len(in_win) / span, "goodput_mbit": sum(int(r["bytes"]) for r in in_win) * 8 / span / 1e6,
        "ttfb_ms": [None if not seg_ok else pct([float(r["ttfb"]) * 1000 for r in seg_ok], q) for q in (50, 95, 99)],
        "total_ms": [None if not seg_ok else pct([float(r["total"]) * 1000 for r in seg_ok], q) for q in (50, 95, 99)],
        "playlist_ms": [None if not pl_ok else pct([float(r["total"]) * 1000 for r in pl_ok], q) for q in (50, 99)],
        "errors": dict(errors), "error_count": sum(errors.values()), "incomplete": incomplete,
        "stalls": len(stalls), "stall_s": sum(stalls), "loadgen_cpu_s": lg_cpu, "loadgen_wall_s": lg_wall,
        "client_conns": conns,
        "seg_totals_ms": [float(r["total"]) * 1000 for r in seg_ok],
        "timeline": timeline([r for r in ok], scn["duration_s"]),
    }
    return res


def timeline(rows, duration):
    """Goodput per 1 s bin, each request's bytes spread evenly from first byte to last."""
    bins = [0.0] * (int(duration) + 3)
    for r in rows:
        t0 = float(r["t_start"]) + float(r["ttfb"] or 0)
        t1 = float(r["t_end"])
        b = int(r["bytes"])
        if t1 <= t0:
            i = min(int(t1), len(bins) - 1)
            bins[i] += b
            continue
        rate = b / (t1 - t0)
        t = t0
        while t < t1:
            i = int(t)
            if i >= len(bins):
                break
            nxt = min(t1, i + 1)
            bins[i] += rate * (nxt - t)
            t = nxt
    return [x * 8 / 1e6 for x in bins]


def parse_wrk(load, scn):
    text = load.tail(200)
    m = re.search(r"FPB_JSON (\{.*\})", text)
    if not m:
        raise RuntimeError(f"wrk printed no summary:\n{text}")
    j = json.loads(m.group(1))
    d = j["duration_us"] / 1e6
    errors = {k: j[k] for k in ("connect", "read", "write", "status", "timeout") if j[k]}
    return {"wrk_threads": 2, "requests_total": j["requests"], "media_ok": j["requests"] - j["status"], "rps": j["requests"] / d,
            "goodput_mbit": j["bytes"] * 8 / d / 1e6, "ttfb_ms": [None, None, None],
            "total_ms": [j["lat_p50_us"] / 1000, j["lat_p95_us"] / 1000, j["lat_p99_us"] / 1000],
            "playlist_ms": [None, None], "errors": errors, "error_count": sum(errors.values()), "incomplete": 0,
            "stalls": 0, "stall_s": 0.0, "loadgen_cpu_s": None, "client_conns": scn["connections"], "seg_totals_ms": [], "timeline": [],
            "segments_ok": j["requests"] - j["status"], "playlists_ok": 0}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def summarize(peer, runs):
    good = [r for r in runs if "failed" not in r]
    s = {"peer": peer, "runs": len(runs), "failed_runs": len(runs) - len(good),
         "failures": [r["failed"] for r in runs if "failed" in r]}
    if not good:
        return s

    def col(f):
        return [f(r) for r in good]

    s["rps"] = (med(col(lambda r: r["rps"])), spread(col(lambda r: r["rps"])))
    s["goodput"] = (med(col(lambda r: r["goodput_mbit"])), spread(col(lambda r: r["goodput_mbit"])))
    for k in ("ttfb_ms", "total_ms"):
        s[k] = [med(col(lambda r, i=i: r[k][i])) for i in range(3)]
    s["playlist_ms"] = [med(col(lambda r, i=i: r["playlist_ms"][i])) for i in range(2)]
    s["p99_spread"] = spread(col(lambda r: r["total_ms"][2]))
    errs = Counter()
    for r in good:
        errs.update(r["errors"])
    s["errors"] = dict(errs)
    s["error_count"] = sum(errs.values())
    s["requests"] = sum(r["requests_total"] for r in good)
    s["media_ok"] = sum(r["media_ok"] for r in good)
    s["segments_ok"] = sum(r["segments_ok"] for r in good)
    s["stalls"] = sum(r["stalls"] for r in good)
    s["stall_s"] = sum(r["stall_s"] for r in good)
    peer_cpu = col(lambda r: r["usage"]["cpu_s"].get("peer"))
    s["cpu_per_1k"] = med([c / r["media_ok"] * 1000 if c is not None and r["media_ok"] else None
                           for c, r in zip(peer_cpu, good)])
    redis_cpu = col(lambda r: r["usage"]["cpu_s"].get("redis"))
    s["redis_cpu_per_1k"] = med([c / r["media_ok"] * 1000 if c is not None and r["media_ok"] else None
                                 for c, r in zip(redis_cpu, good)])
    s["peer_cpu_pct"] = med([c / r["usage"]["wall_s"] * 100 if c is not None else None for c, r in zip(peer_cpu, good)])
    s["rss_mib"] = med(col(lambda r: r["usage"]["peak_rss_kb"].get("peer", 0) / 1024 if "peer" in r["usage"]["peak_rss_kb"] else None))
    s["pss_mib"] = med(col(lambda r: r["usage"]["peak_pss_kb"].get("peer", 0) / 1024 if "peer" in r["usage"]["peak_pss_kb"] else None))
    s["procs"] = max(col(lambda r: r["usage"]["procs"].get("peer", 0)))
    s["origin_conns"] = med(col(lambda r: r["origin_conns"]))
    s["origin_requests"] = med(col(lambda r: r.get("origin_requests")))
    s["client_conns"] = med(col(lambda r: r.get("client_conns")))
    s["loadgen_cpu_pct"] = med(col(lambda r: (r["usage"]["cpu_s"]["load"] / r["usage"]["wall_s"] * 100)))
    s["loadgen_procs"] = max(col(lambda r: r["usage"]["procs"].get("load", 0)))
    workers = max(1, s["loadgen_procs"] - (1 if s["loadgen_procs"] > 1 else 0))  # parent only waits
    if all("wrk_threads" in r for r in good):
        workers = good[0]["wrk_threads"]
    s["loadgen_saturated"] = s["loadgen_cpu_pct"] is not None and s["loadgen_cpu_pct"] / workers > 75
    s["host_busy_pct"] = med(col(lambda r: r["usage"]["host_busy"] * 100))
    s["link_cpu_pct"] = {n: med(col(lambda r, n=n: r["usage"]["cpu_s"].get(n, 0) / r["usage"]["wall_s"] * 100))
                         for n in good[0]["usage"]["cpu_s"] if n.startswith("netem")}
    s["seg_totals_ms"] = [x for r in good for x in r["seg_totals_ms"]]
    tl = [r["timeline"] for r in good if r["timeline"]]
    s["timeline"] = [statistics.mean(v) for v in zip(*tl)] if tl else []
    s["peer_died"] = [r["peer_died"] for r in good if r.get("peer_died")]
    return s


# ---------------------------------------------------------------- report

def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def fmt_spread(v, nd=0):
    m, (lo, hi) = v
    if m is None:
        return "–"
    if lo is None or lo == hi:
        return fmt(m, nd)
    return f"{fmt(m, nd)} ({fmt(lo, nd)}–{fmt(hi, nd)})"


def machine_info():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    nginx_v = sh("nginx", "-v", check=False).stderr.strip()
    return f"{os.cpu_count()} × {cpu}, {mem:.0f} GiB, Linux {platform.release()}, {nginx_v}, Python {platform.python_version()}"


def git_rev():
    r = sh("git", "-C", REPO, "rev-parse", "--short", "HEAD", check=False)
    d = sh("git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", check=False)
    return (r.stdout.strip() or "?") + ("+dirty" if d.stdout.strip() else "")


def write_report(scn, summaries, topo_desc, args, cmdline, started, link_stats):
    os.makedirs(args.results, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    stem = f"{started:%Y-%m-%d}-{scn['name']}{tag}"
    md_path = os.path.join(args.results, stem + ".md")
    wrk = scn.get("mode") == "wrk"
    L = []
    L.append(f"# {scn['name']}{tag}: {scn['description']}")
    L.append("")
    L.append(f"- **When**: {started:%Y-%m-%d %H:%M} (UTC{started:%z}); bench commit {git_rev()}")
    L.append(f"- **Machine**: {machine_info()}; shared with other work (host CPU busy during each run is in the table)")
    L.append(f"- **Command**: `{cmdline}`")
    L.append(f"- **Link**: {topo_desc}")
    L.append(f"- **Server-side congestion control**: {args.cc} on every route of the server namespace; "
             f"FileProxy sets `sockets.congestion_control = \"{args.fileproxy_cc}\"` on its own sockets")
    if wrk:
        L.append(f"- **Load**: wrk, 2 threads, {scn['connections']} keep-alive connections, {scn['duration_s']} s, "
                 f"rotating over the `{scn['rendition']}` segments of 3 videos")
    else:
        L.append(f"- **Load**: {scn['viewers']} virtual HLS viewers ({scn['pace']} pacing, rendition "
                 f"`{scn['rendition']}`), {scn['duration_s']} s per run, first {scn['warmup_s']} s not counted; "
                 f"each viewer: admission (auth peers) → signed playlist → key → segments, keep-alive; "
                 f"then a new viewer. Per-request timeout {scn['timeout_s']} s")
    if scn.get("seed_viewers"):
        L.append(f"- **Scaling vs the seed plan** (SPEC §7: {scn['seed_viewers']} concurrent, {scn.get('seed_rate')}): "
                 f"{scn.get('scaling', 'none')}. Identical for every peer.")
    mc = scn["media_cfg"]
    L.append(f"- **Media**: {mc['videos']} videos × 3 renditions × {mc['segments']} segments of 10 s "
             f"(hi ≈ 2.0 MB, mid ≈ 0.62 MB, lo ≈ 0.25 MB per segment × size_scale {mc['size_scale']})")
    L.append(f"- **Runs**: {args.runs} per peer, peers interleaved; figures are medians, (min–max) over runs")
    L.append("")
    if wrk:
        L.append("| peer | req/s | goodput Mbit/s | latency P50 / P95 / P99 ms | errors | peak RSS MiB (PSS) | "
                 "peer CPU s / 1k req | origin conns / req | load-gen CPU % | host busy % |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
    else:
        L.append("| peer | req/s | goodput Mbit/s | segment TTFB P50 / P95 / P99 ms | segment total P50 / P95 / P99 ms "
                 "| playlist P50 / P99 ms | errors | peak RSS MiB (PSS) | peer CPU s / 1k req (+redis) "
                 "| origin conns / req | viewer conns | load-gen CPU % | host busy % |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        if "rps" not in s:
            L.append(f"| {s['peer']} | FAILED: {'; '.join(' '.join(x.split())[:160] for x in s['failures'])} |" + " |" * (9 if wrk else 12))
            continue
        errs = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "0"
        if s["failed_runs"]:
            errs += f"; {s['failed_runs']} run(s) failed"
        if s["peer_died"]:
            errs += "; peer exited during the run"
        lat = " / ".join(fmt(x) for x in s["total_ms"])
        rss = "–" if s.get("rss_mib") is None else f"{fmt(s['rss_mib'])} ({fmt(s['pss_mib'])})"
        cpu = fmt(s["cpu_per_1k"], 2)
        if s.get("redis_cpu_per_1k") is not None:
            cpu += f" (+{fmt(s['redis_cpu_per_1k'], 2)})"
        if wrk:
            mark = " ‡" if s.get("loadgen_saturated") else ""
            L.append(f"| {s['peer']}{mark} | {fmt_spread(s['rps'])} | {fmt_spread(s['goodput'])} | {lat} | {errs} | {rss} "
                     f"| {cpu} | {fmt(s['origin_conns'])} / {fmt(s['origin_requests'])} | {fmt(s['loadgen_cpu_pct'])} | {fmt(s['host_busy_pct'])} |")
        else:
            ttfb = " / ".join(fmt(x) for x in s["ttfb_ms"])
            pl = " / ".join(fmt(x) for x in s["playlist_ms"])
            mark = " ‡" if s.get("loadgen_saturated") else ""
            L.append(f"| {s['peer']}{mark} | {fmt_spread(s['rps'], 1)} | {fmt_spread(s['goodput'])} | {ttfb} | {lat} | {pl} "
                     f"| {errs} | {rss} | {cpu} | {fmt(s['origin_conns'])} / {fmt(s['origin_requests'])} | {fmt(s['client_conns'])} | {fmt(s['loadgen_cpu_pct'])} "
                     f"| {fmt(s['host_busy_pct'])} |")
    L.append("")
    L.append("Columns: **req/s** = media requests (playlist, key, segment) completed with 2xx/3xx inside the "
             "measured window, per second; **goodput** = their body bytes per second; **TTFB** = request sent → "
             "response headers received; **total** = request sent → last body byte (segments only); "
             "**errors** = every failed request of the run by kind (`kind:cause`, `http_NNN` = status); "
             "**peak RSS** = highest sum of RSS over the peer's processes (PSS in brackets: shared pages counted "
             "once); **CPU s / 1k req** = CPU seconds of the peer's processes (utime+stime from /proc) per 1000 "
             "completed media requests over the whole run, Redis's own CPU in brackets; **origin conns / req** = TCP "
             "connections the origin accepted / requests it answered during the run (nginx stub_status); "
             "**viewer conns** = TCP connections "
             "the viewers opened (one per viewer unless the peer closed a keep-alive connection); **load-gen CPU %** = the "
             "players' CPU as % of one core (their share of the 2 cores); **host busy %** = whole-machine CPU busy.")
    if any(s.get("loadgen_saturated") for s in summaries):
        L.append("")
        L.append("‡ The load generator's processes (wrk: threads) were above 75 % of a core each: this row is bounded by the "
                 "viewers (and the 2 shared cores), not only by the peer; read it as a lower bound.")
    lc = [f"{s['peer']} {', '.join(f'{k} {v:.0f} %' for k, v in s['link_cpu_pct'].items())}"
          for s in summaries if s.get("link_cpu_pct")]
    if lc:
        L.append("")
        L.append("Link emulator CPU (% of one core, median): " + "; ".join(lc) + ". It shares the 2 cores with "
                 "everything else; its drop and lateness counters are in the .json file.")
    if not wrk and any(s.get("stalls") for s in summaries):
        L.append("")
        L.append("Stalls (realtime pacing): " + ", ".join(f"{s['peer']} {s['stalls']} ({s['stall_s']:.0f} s)"
                                                          for s in summaries if "rps" in s))
    plots = make_plots(scn, summaries, args.results, stem)
    if plots:
        L.append("")
        for title, fn in plots:
            L.append(f"![{title}]({fn})")
    with open(md_path, "w") as f:
        f.write("\n".join(L) + "\n")
    slim = [{k: v for k, v in s.items() if k not in ("seg_totals_ms",)} for s in summaries]
    with open(os.path.join(args.results, stem + ".json"), "w") as f:
        json.dump({"scenario": scn, "summaries": slim, "link": topo_desc, "command": cmdline,
                   "link_counters": link_stats}, f, indent=1, default=str)
    return md_path


def make_plots(scn, summaries, outdir, stem):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plots")
        return []
    out = []
    have = [s for s in summaries if s.get("seg_totals_ms")]
    if have:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for s in have:
            v = sorted(s["seg_totals_ms"])
            ax.plot(v, [(i + 1) / len(v) for i in range(len(v))], label=f"{s['peer']} (n={len(v)})")
        ax.set_xscale("log")
        ax.set_xlabel("segment total time, ms (log)")
        ax.set_ylabel("fraction of segments")
        ax.set_title(f"{scn['name']}: segment download time CDF (all runs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fn = f"{stem}-cdf.png"
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, fn), dpi=110)
        plt.close(fig)
        out.append(("segment time CDF", fn))
    have = [s for s in summaries if s.get("timeline")]
    if have:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for s in have:
            ax.plot(range(len(s["timeline"])), s["timeline"], label=s["peer"])
        ax.axvline(scn["warmup_s"], color="grey", ls="--", lw=0.8)
        ax.set_xlim(0, scn["duration_s"])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("seconds since load start")
        ax.set_ylabel("goodput, Mbit/s")
        ax.set_title(f"{scn['name']}: goodput over time (mean of runs; dashed = end of warm-up)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fn = f"{stem}-throughput.png"
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, fn), dpi=110)
        plt.close(fig)
        out.append(("goodput over time", fn))
    return out


# ---------------------------------------------------------------- main

def ensure_media(name, cfg):
    out = os.path.join(WORK, "media", name)
    os.makedirs(out, exist_ok=True)
    sh(sys.executable, os.path.join(BENCH, "origin", "gen_media.py"), "--out", out, "--videos", str(cfg["videos"]),
       "--segments", str(cfg["segments"]), "--size-scale", str(cfg["size_scale"]), timeout=600)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", help="a section of bench/scenarios.toml")
    ap.add_argument("peers", nargs="*", help=f"peers to run (default: all of {', '.join(DEFAULT_PEERS)})")
    ap.add_argument("--smoke", action="store_true", help="60-second self-test: scenario smoke, peers "
                    f"{' '.join(SMOKE_PEERS)} (or those given); exit 1 if a peer fails to serve")
    ap.add_argument("--runs", type=int, help="runs per peer (default: the scenario's)")
    ap.add_argument("--duration", type=float, help="override duration_s")
    ap.add_argument("--viewers", type=int, help="override viewers")
    ap.add_argument("--cc", default="cubic", choices=["cubic", "bbr", "reno"],
                    help="congestion control on the server namespace's routes (default cubic)")
    ap.add_argument("--fileproxy-cc", default="bbr", help="FileProxy's sockets.congestion_control (default bbr)")
    ap.add_argument("--fileproxy-bin", default=os.environ.get("FILEPROXY_BIN",
                                                              os.path.join(REPO, "target", "release", "fileproxy")))
    ap.add_argument("--netem-bin", default=os.environ.get("NETEM_BIN", os.path.join(REPO, "target", "release", "netem")))
    ap.add_argument("--netem-arg", action="append", default=[], help="extra argument passed to `netem up`")
    ap.add_argument("--slow-origin", action="store_true", help="put the origin behind its own emulated link")
    ap.add_argument("--origin-delay-ms", type=float, default=20)
    ap.add_argument("--origin-rate-mbit", type=float, default=200)
    ap.add_argument("--origin-loss-pct", type=float, default=0)
    ap.add_argument("--origin-queue-kb", type=int, default=0, help="0 = netem's default")
    ap.add_argument("--load-procs", type=int, help="load generator processes (default: the scenario's load_procs, 1)")
    ap.add_argument("--max-requests", type=int, default=200_000, help="per load process, a hard bound")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix of the result file names (default: cc when not cubic)")
    ap.add_argument("--results", default=None, help="where reports go (default bench/results; smoke: bench/results/tmp)")
    a = ap.parse_args()
    if a.smoke:
        a.peers = ([a.scenario] if a.scenario else []) + a.peers or list(SMOKE_PEERS)
        a.scenario = "smoke"
    if a.results is None:
        a.results = os.path.join(BENCH, "results", "tmp" if a.smoke else "")
    if not a.scenario:
        ap.error("give a scenario (or --smoke)")
    with open(os.path.join(BENCH, "scenarios.toml"), "rb") as f:
        scenarios = tomllib.load(f)
    if a.scenario not in scenarios or a.scenario == "media":
        ap.error(f"unknown scenario {a.scenario}; have: {', '.join(k for k in scenarios if k != 'media')}")
    scn = dict(scenarios[a.scenario])
    scn["name"] = a.scenario
    scn["media_cfg"] = scenarios["media"][scn.get("media", "full")]
    if a.duration:
        scn["duration_s"] = a.duration
        scn["warmup_s"] = min(scn["warmup_s"], a.duration / 4)
    if a.viewers:
        scn["viewers"] = a.viewers
    if a.runs is None:
        a.runs = scn.get("runs", 1)
    if a.load_procs is None:
        a.load_procs = scn.get("load_procs", 1)
    if not a.tag and a.cc != "cubic":
        a.tag = a.cc
    peers = a.peers or list(DEFAULT_PEERS)
    for p in peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p}; have: {', '.join(PEERS)}")
    if any(PEERS[p]["kind"] == "fileproxy" for p in peers) and not os.path.exists(a.fileproxy_bin):
        if a.peers:
            ap.error(f"no FileProxy binary at {a.fileproxy_bin} (cargo build --release -p fileproxy, or --fileproxy-bin)")
        log(f"no FileProxy binary at {a.fileproxy_bin}: skipping the fileproxy peers")
        peers = [p for p in peers if PEERS[p]["kind"] != "fileproxy"]
    if scn.get("mode") == "wrk" and "direct" in peers:
        pass
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(WORK, exist_ok=True)
    started = datetime.datetime.now().astimezone()
    cmdline = "bench/run.sh " + " ".join(sys.argv[1:])
    media_dir = ensure_media(scn.get("media", "full"), scn["media_cfg"])
    topo = Topology(scn, a)
    results = defaultdict(list)
    link_stats = {}
    try:
        topo.up()
        log(f"scenario {scn['name']}: {topo.desc}; peers {' '.join(peers)}; {a.runs} run(s)")
        for i in range(1, a.runs + 1):
            for p in peers:
                log(f"run {i}/{a.runs}: {p}")
                r = one_run(p, scn, topo, media_dir, a, i)
                results[p].append(r)
                if "failed" not in r:
                    log(f"  {p}: {r['rps']:.1f} req/s, {r['goodput_mbit']:.0f} Mbit/s, "
                        f"segment total P99 {fmt(r['total_ms'][2])} ms, errors {r['error_count']}, "
                        f"peer CPU {fmt(r['usage']['cpu_s'].get('peer'), 1)} s, load-gen CPU "
                        f"{r['usage']['cpu_s']['load']:.1f} s / {r['usage']['wall_s']:.0f} s")
        link_stats = topo.link_stats()
    finally:
        topo.down()
    summaries = [summarize(p, results[p]) for p in peers]
    path = write_report(scn, summaries, topo.desc, a, cmdline, started, link_stats)
    log(f"wrote {os.path.relpath(path, REPO)}")
    bad = []
    for s in summaries:
        if "rps" not in s or s["failed_runs"]:
            bad.append(f"{s['peer']}: run failed ({'; '.join(s.get('failures', []))})")
        elif s["segments_ok"] == 0:
            bad.append(f"{s['peer']}: served no segment")
        elif a.smoke and s["error_count"]:
            bad.append(f"{s['peer']}: {s['error_count']} failed requests {s['errors']}")
        elif s["peer_died"]:
            bad.append(f"{s['peer']}: exited during the run")
    if bad:
        for b in bad:
            log("FAIL " + b)
        return 1
    if a.smoke:
        log("smoke: every peer served")
    return 0


if __name__ == "__main__":
    sys.exit(main())
