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
import datetime
import os
import resource
import sys
import tomllib
from collections import defaultdict

from common import BENCH, DEFAULT_PEERS, PEERS, REPO, SMOKE_PEERS, WORK, log, sh
from topology import Topology
from report import fmt, summarize, write_report
from peers import one_run


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
    ap.add_argument("--fileproxy-cc-min-rtt-us", type=int, default=None,
                    help="FileProxy's sockets.congestion_control_min_rtt_us: peers with a shorter handshake RTT keep "
                         "the route's algorithm (unset: FileProxy's default, 1000; 0 = --fileproxy-cc on every connection)")
    ap.add_argument("--fileproxy-bin", default=os.environ.get("FILEPROXY_BIN",
                                                              os.path.join(REPO, "target", "release", "fileproxy")))
    ap.add_argument("--netem-bin", default=os.environ.get("NETEM_BIN", os.path.join(REPO, "target", "release", "netem")))
    ap.add_argument("--netem-arg", action="append", default=[], help="extra argument passed to `netem up`")
    ap.add_argument("--slow-origin", action="store_true", help="put the origin behind its own emulated link")
    ap.add_argument("--origin-delay-ms", type=float, default=20)
    ap.add_argument("--origin-rate-mbit", type=float, default=200)
    ap.add_argument("--origin-loss-pct", type=float, default=0)
    ap.add_argument("--origin-queue-kb", type=int, default=0, help="0 = netem's default")
    ap.add_argument("--rate", type=float, default=None,
                    help="wrk mode: pace the load to about this many req/s in all (each connection waits "
                         "connections/rate between requests), so the machine is not saturated and CPU per "
                         "request compares peers at one request rate (default: as fast as possible)")
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
    if a.rate is not None:
        if scn.get("mode") != "wrk" or a.rate <= 0:
            ap.error("--rate needs a wrk scenario (segments) and a positive rate")
        scn["rate"] = a.rate
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
