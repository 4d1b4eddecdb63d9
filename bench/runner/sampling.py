"""Processes and /proc: starting and stopping the parts, and sampling their CPU and memory."""
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict

from common import CLK, PAGE, WORK


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
