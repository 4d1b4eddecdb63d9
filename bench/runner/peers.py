"""One run of one peer: origin, Redis, the peer, the load; what the run measured."""
import json
import os
import secrets
import shutil
import subprocess
import time

from common import BENCH, ORIGIN_PORT, PEERS, PEER_PORT, REDIS_PORT, VENV_BIN, VENV_PY, WORK, log, pacing_delay_ms, render, sh
from sampling import Proc, Sampler, proc_table, tree
from topology import http_status, origin_accepts, wait_http
from report import parse_hls, parse_wrk


# ---------------------------------------------------------------- one run

def start_origin(topo, media_dir, rundir):
    conf = render("origin/nginx.conf.tmpl", os.path.join(rundir, "origin.conf"), work=rundir, media=media_dir,
                  origin_listen=f"0.0.0.0:{ORIGIN_PORT}")
    p = Proc("origin", ["nginx", "-c", conf, "-p", rundir], ns=topo.org_ns, logdir=rundir)
    url = f"http://127.0.0.1:{ORIGIN_PORT}/nginx_status"
    if not wait_http(topo.org_ns, url, p, 10):
        raise RuntimeError(f"origin nginx did not start:\n{p.tail()}")
    return p


def origin_counts(rundir):
    """From the origin's access log: requests per distinct segment (min / mean / max over
    the segments requested at all) and body bytes sent, for segments and in total."""
    per_seg, seg_bytes, total_bytes = {}, 0, 0
    try:
        with open(os.path.join(rundir, "origin-access.log")) as f:
            for line in f:
                path, _, sent = line.rstrip("\n").rpartition(" ")
                if not path or path == "/nginx_status":
                    continue
                n = int(sent) if sent.isdigit() else 0
                total_bytes += n
                if path.endswith(".ts"):
                    per_seg[path] = per_seg.get(path, 0) + 1
                    seg_bytes += n
    except OSError:
        return None
    counts = list(per_seg.values())
    return {"segments": len(counts),
            "per_segment_min": min(counts) if counts else None,
            "per_segment_mean": sum(counts) / len(counts) if counts else None,
            "per_segment_max": max(counts) if counts else None,
            "segment_bytes": seg_bytes,
            "bytes": total_bytes}


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


def fp_cc_min_rtt_line(args):
    """`sockets.congestion_control_min_rtt_us` when asked for; else nothing (FileProxy's own
    default, and older binaries that lack the key still start)."""
    n = args.fileproxy_cc_min_rtt_us
    return "" if n is None else f"congestion_control_min_rtt_us = {n}"


def start_peer(name, topo, rundir, keys, args):
    spec = PEERS[name]
    kind = spec["kind"]
    if kind == "direct":
        return None, f"http://{topo.origin_direct}"
    base = f"http://{topo.peer_addr}:{PEER_PORT}"
    if kind == "fileproxy":
        conf = render(spec["config"], os.path.join(rundir, f"{name}.toml"), peer_listen=topo.peer_listen,
                      origin_url=f"http://{topo.origin_hostport}", redis_hostport=f"127.0.0.1:{REDIS_PORT}",
                      secret=keys["secret"], api_key=keys["api_key"], fp_cc=args.fileproxy_cc,
                      fp_cc_min_rtt_line=fp_cc_min_rtt_line(args))
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
    if scn.get("rate"):
        env["FPB_DELAY_MS"] = str(pacing_delay_ms(scn["connections"], scn["rate"]))
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
        # What the smoke checks and start-up fetched is not the run's (nginx appends
        # with O_APPEND, so truncating is enough).
        open(os.path.join(rundir, "origin-access.log"), "w").close()
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
        result["origin_counts"] = origin_counts(rundir)
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
