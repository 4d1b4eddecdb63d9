"""Paths, fixed addresses and small helpers shared by the benchmark runner's modules."""
import os
import string
import subprocess
import time


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
    # The same with every SPEC §13 viewer control on (streams, quota; revocation is always on).
    "fileproxy-redis-limits": dict(kind="fileproxy", config="peers/fileproxy/redis-limits.toml.tmpl", redis=True, auth=True),
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


def pacing_delay_ms(connections, rate):
    """The wait of each wrk connection between requests for about `rate` req/s in all (--rate)."""
    return max(1, round(connections * 1000 / rate))
