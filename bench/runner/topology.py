"""Network namespaces and links of a scenario, and HTTP probes across them."""
import json
import os
import re
import signal
import time

from common import (
    CLI_ADDR,
    NS_CLI,
    NS_LO,
    NS_ORG,
    NS_SRV,
    ORG_ADDR,
    ORIGIN_PORT,
    PEER_PORT,
    SRV_ADDR,
    SRV_ORG_ADDR,
    WORK,
    log,
    sh,
)
from sampling import Proc


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
