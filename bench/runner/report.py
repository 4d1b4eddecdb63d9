"""Parsing load-generator output, statistics over runs, and the Markdown/JSON/PNG report."""
import csv
import json
import os
import platform
import re
import statistics
from collections import Counter

from common import REPO, log, pacing_delay_ms, sh


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
    # Every sampled process (peer, origin, Redis, load generator, link emulator): on loopback the
    # receiving side's kernel work runs in whichever process is on the CPU when a packet arrives,
    # so the split between peer and load generator moves with scheduling; the sum does not.
    s["all_cpu_per_1k"] = med([sum(r["usage"]["cpu_s"].values()) / r["media_ok"] * 1000 if r["media_ok"] else None
                               for r in good])
    s["peer_cpu_pct"] = med([c / r["usage"]["wall_s"] * 100 if c is not None else None for c, r in zip(peer_cpu, good)])
    s["rss_mib"] = med(col(lambda r: r["usage"]["peak_rss_kb"].get("peer", 0) / 1024 if "peer" in r["usage"]["peak_rss_kb"] else None))
    s["pss_mib"] = med(col(lambda r: r["usage"]["peak_pss_kb"].get("peer", 0) / 1024 if "peer" in r["usage"]["peak_pss_kb"] else None))
    s["procs"] = max(col(lambda r: r["usage"]["procs"].get("peer", 0)))
    s["origin_conns"] = med(col(lambda r: r["origin_conns"]))
    s["origin_requests"] = med(col(lambda r: r.get("origin_requests")))
    s["client_conns"] = med(col(lambda r: r.get("client_conns")))
    oc = [r["origin_counts"] for r in good if r.get("origin_counts")]
    if oc:
        s["origin_counts"] = {k: med([c[k] for c in oc if c.get(k) is not None])
                              for k in ("segments", "per_segment_min", "per_segment_mean", "per_segment_max",
                                        "segment_bytes", "bytes")}
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
             f"FileProxy sets `sockets.congestion_control = \"{args.fileproxy_cc}\"` on its own sockets whose "
             f"handshake RTT is at least `congestion_control_min_rtt_us = "
             f"{1000 if args.fileproxy_cc_min_rtt_us is None else args.fileproxy_cc_min_rtt_us}` µs "
             f"(nearer ones keep the route's; "
             f"{'its default' if args.fileproxy_cc_min_rtt_us is None else 'set by --fileproxy-cc-min-rtt-us'})")
    if wrk:
        L.append(f"- **Load**: wrk, 2 threads, {scn['connections']} keep-alive connections, {scn['duration_s']} s, "
                 f"rotating over the `{scn['rendition']}` segments of 3 videos; "
                 + (f"paced to about {scn['rate']:,.0f} req/s in all (`--rate`: each connection waits "
                    f"{pacing_delay_ms(scn['connections'], scn['rate'])} ms between requests), so the machine "
                    f"has spare CPU and every peer's CPU per request is taken at the same request rate"
                    if scn.get("rate") else "as fast as the peer answers"))
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
                 "peer CPU s / 1k req | all CPU s / 1k req | origin conns / req | load-gen CPU % | host busy % |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    else:
        L.append("| peer | req/s | goodput Mbit/s | segment TTFB P50 / P95 / P99 ms | segment total P50 / P95 / P99 ms "
                 "| playlist P50 / P99 ms | errors | peak RSS MiB (PSS) | peer CPU s / 1k req (+redis) "
                 "| origin conns / req | viewer conns | load-gen CPU % | host busy % |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        if "rps" not in s:
            L.append(f"| {s['peer']} | FAILED: {'; '.join(' '.join(x.split())[:160] for x in s['failures'])} |" + " |" * (10 if wrk else 12))
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
                     f"| {cpu} | {fmt(s['all_cpu_per_1k'], 2)} | {fmt(s['origin_conns'])} / {fmt(s['origin_requests'])} "
                     f"| {fmt(s['loadgen_cpu_pct'])} | {fmt(s['host_busy_pct'])} |")
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
             "completed media requests over the whole run, Redis's own CPU in brackets; "
             + ("**all CPU s / 1k req** = the same for every process the run started (peer, origin, Redis, load "
                "generator) together: on loopback the kernel's work of receiving a packet is charged to whichever "
                "process is on the CPU when it arrives, the sender or the reader, so the peer's share moves with "
                "scheduling while the sum does not; " if wrk else "") + "**origin conns / req** = TCP "
             "connections the origin accepted / requests it answered during the run (nginx stub_status); "
             "**viewer conns** = TCP connections "
             "the viewers opened (one per viewer unless the peer closed a keep-alive connection); **load-gen CPU %** = the "
             "players' CPU as % of one core (their share of the 2 cores); **host busy %** = whole-machine CPU busy.")
    oc = [(s["peer"], s["origin_counts"]) for s in summaries if s.get("origin_counts")]
    if oc:
        L.append("")
        L.append("Origin requests per distinct segment (from the origin's access log; min / mean / max over the "
                 "segments it was asked for at all — 1 / 1 / 1 is perfect coalescing) and bytes the origin sent:")
        L.append("")
        L.append("| peer | distinct segments | origin requests per segment min / mean / max | segment MB from origin "
                 "| all MB from origin |")
        L.append("|---|---|---|---|---|")
        for peer, c in oc:
            mb = lambda x: None if x is None else x / 1e6  # noqa: E731
            L.append(f"| {peer} | {fmt(c['segments'])} | {fmt(c['per_segment_min'])} / {fmt(c['per_segment_mean'], 2)} / "
                     f"{fmt(c['per_segment_max'])} | {fmt(mb(c['segment_bytes']), 1)} | {fmt(mb(c['bytes']), 1)} |")
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
    bars = [s for s in summaries if "rps" in s and s["rps"][0] is not None]
    if scn.get("mode") == "wrk" and bars:
        out.append(("req/s, CPU per request and latency by peer", bar_plot(plt, scn, bars, outdir, stem)))
    return out


def bar_plot(plt, scn, bars, outdir, stem):
    """wrk runs have no per-segment times: req/s (min–max over runs), CPU s / 1k req (the
    peer's and every process's) and latency P99, one bar group per peer."""
    names = [s["peer"] for s in bars]
    x = range(len(bars))
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(12, 4.2))
    med = [s["rps"][0] for s in bars]
    lo = [m - (s["rps"][1][0] if s["rps"][1][0] is not None else m) for m, s in zip(med, bars)]
    hi = [(s["rps"][1][1] if s["rps"][1][1] is not None else m) - m for m, s in zip(med, bars)]
    a1.bar(x, med, yerr=[lo, hi], capsize=3, color="tab:blue")
    a1.set_title("req/s (median; bars: min–max)", fontsize=10)
    w = 0.4
    a2.bar([i - w / 2 for i in x], [s["cpu_per_1k"] or 0 for s in bars], w, label="peer")
    a2.bar([i + w / 2 for i in x], [s["all_cpu_per_1k"] or 0 for s in bars], w, label="every process")
    a2.set_title("CPU s / 1k requests", fontsize=10)
    a2.legend(fontsize=8)
    a3.bar(x, [s["total_ms"][2] or 0 for s in bars], color="tab:red")
    a3.set_title("latency P99, ms", fontsize=10)
    for a in (a1, a2, a3):
        a.set_xticks(list(x))
        a.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        a.grid(True, axis="y", alpha=0.3)
    paced = f", paced to ≈ {scn['rate']:,.0f} req/s" if scn.get("rate") else ""
    fig.suptitle(f"{scn['name']}: wrk, {scn['connections']} keep-alive connections{paced}", fontsize=10)
    fn = f"{stem}-bars.png"
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, fn), dpi=110)
    plt.close(fig)
    return fn
