"""Peer 2: the HLS auth proxy as the Python team runs it — aiohttp + uvloop + redis-py.

SPEC §2 flow with the Python-format Redis keys of §6, written the straightforward way:
sequential awaits on one shared redis.asyncio client, one shared aiohttp ClientSession
to the origin with the seed plan's pool limits (200 total / 50 per host, keep-alive
60 s, connect timeout 15 s, total 90 s), responses streamed in 16 KiB chunks.
Differences from production, all in its favour: entries are read by their exact key
(no KEYS scans), and no access log is written.

Run: gunicorn -c bench/peers/aiohttp/gunicorn.conf.py app:app  (see bench/README.md)
Environment: PEER_ORIGIN (http://host:port), PEER_REDIS (redis://…), PEER_SECRET,
PEER_WHITELIST_KEY.
"""
import json
import os
import socket
import sys
import time
import uuid
from urllib.parse import unquote

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import hlsauth as H  # noqa: E402

ORIGIN = os.environ.get("PEER_ORIGIN", "http://127.0.0.1:27804").rstrip("/")
REDIS_URL = os.environ.get("PEER_REDIS", "redis://127.0.0.1:6379/0")
SECRET = os.environ.get("PEER_SECRET", "")
WL_KEY = os.environ.get("PEER_WHITELIST_KEY", "")
SESSION_TTL = 7200
USER_SESSION_TTL = 14400
IP_ACCESS_TTL = 3600
MAX_PATHS = 3
STREAM_CHUNK_SIZE = 16 * 1024
HTTP_CONNECTOR_LIMIT = 200
HTTP_CONNECTOR_LIMIT_PER_HOST = 50
HTTP_KEEPALIVE_TIMEOUT = 60
HTTP_CONNECT_TIMEOUT = 15
HTTP_TOTAL_TIMEOUT = 90

# Per-uid traffic, aggregated in memory (reporting itself is off in the benchmark).
TRAFFIC = {}


def client_ip(request):
    """The TCP peer address (no forwarded headers are trusted in the benchmark)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return peer[0] if peer else "0.0.0.0"


def text(status, body):
    return web.Response(status=status, text=body)


async def whitelist_api(request):
    """POST /api/whitelist — admit a viewer's (network, UA) for a key path."""
    if request.headers.get("Authorization", "") != f"Bearer {WL_KEY}":
        return web.json_response({"error": "invalid api key"}, status=403)
    try:
        data = await request.json()
        uid, path, ip, ua = data["uid"], data["path"], data["clientIp"], data["UserAgent"]
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "bad request"}, status=400)
    try:
        network = H.network_of(ip)
    except ValueError:
        return web.json_response({"error": "clientIp is not an IP or CIDR"}, status=400)
    kp = H.key_path(path)
    if not kp:
        return web.json_response({"error": "path has no key path"}, status=400)
    r = request.app["redis"]
    uah = H.ua_hash(ua)
    key = H.whitelist_key(network, uah)
    now = int(time.time())
    raw = await r.get(key)
    entry = json.loads(raw) if raw else {}
    paths, merged = H.merge_paths(entry, kp, MAX_PATHS, now)
    entry.update({"uid": uid, "key_path": kp, "paths": paths, "ip_patterns": [network],
                  "user_agent": ua, "created_at": entry.get("created_at", now), "worker_pid": os.getpid()})
    await r.set(key, json.dumps(entry), ex=IP_ACCESS_TTL)
    return web.json_response({
        "message": "whitelist updated", "key_path": kp, "ip_pattern": network,
        "cidr_examples": [network], "ua_hash": uah, "ttl": IP_ACCESS_TTL,
        "patterns_merged": 1 if merged else 0, "patterns_new": 0 if merged else 1,
        "multi_path_info": {"max_paths_per_cidr": MAX_PATHS, "current_path": kp}})


async def find_session(r, ip, uah, uid, kp, ua):
    """SPEC §2 step 5 lookups: (a) by uid, (b) the latest session of IP+UA+key path."""
    sid = None
    if uid:
        sid = await r.get(f"ip_ua_session:{ip}:{uah}:{uid}:{kp}")
    if not sid:
        sid = await r.get(f"ip_ua_latest:{ip}:{uah}:{kp}")
    if not sid:
        return None, None
    sid = sid.decode() if isinstance(sid, bytes) else sid
    raw = await r.get(f"session:{sid}")
    if not raw:
        return None, None
    sess = json.loads(raw)
    if sess.get("client_ip") != ip or sess.get("user_agent") != ua:
        return None, None
    return sid, sess


async def proxy(request):
    """GET/HEAD /{path}: the SPEC §2 flow, then stream from the origin."""
    r = request.app["redis"]
    raw_path = request.raw_path.split("?", 1)[0]
    path = unquote(raw_path)
    rel = path.lstrip("/")
    kind = H.classify(path)
    ip = client_ip(request)
    ua = request.headers.get("User-Agent", "")
    q = request.query
    uid = q.get("uid")
    eff_uid = None
    set_cookie = None
    if not H.skips_validation(path):
        # 3. whitelist
        kp = H.key_path(path)
        uah = H.ua_hash(ua)
        try:
            network = H.network_of(ip)
        except ValueError:
            return text(403, "Access Denied 100020 path")
        raw = await r.get(H.whitelist_key(network, uah))
        entry = json.loads(raw) if raw else None
        if (not kp or not entry or kp not in [p.get("key_path") for p in entry.get("paths", [])]
                or kp.lower() not in path.lower()):
            return text(403, "Access Denied 100020 path")
        wl_uid = entry.get("uid")
        # 5. session
        sid, sess = await find_session(r, ip, uah, uid, kp, ua)
        now = int(time.time())
        if sess:
            sess["last_activity"] = now
            sess["access_count"] = sess.get("access_count", 0) + 1
            async with r.pipeline(transaction=False) as p:
                p.set(f"session:{sid}", json.dumps(sess), ex=SESSION_TTL)
                p.expire(f"ip_ua_session:{ip}:{uah}:{sess['uid']}:{kp}", SESSION_TTL)
                p.set(f"ip_ua_latest:{ip}:{uah}:{kp}", sid, ex=SESSION_TTL)
                p.expire(f"user_active_session:{sess['uid']}:{ip}", USER_SESSION_TTL)
                await p.execute()
            eff_uid = sess["uid"]
        elif uid:
            sid = str(uuid.uuid4())
            sess = {"uid": uid, "client_ip": ip, "user_agent": ua, "path": path, "key_path": kp,
                    "created_at": now, "last_activity": now, "worker_pid": os.getpid(),
                    "access_count": 1, "session_type": "ip_ua"}
            async with r.pipeline(transaction=False) as p:
                p.set(f"session:{sid}", json.dumps(sess), ex=SESSION_TTL)
                p.set(f"ip_ua_session:{ip}:{uah}:{uid}:{kp}", sid, ex=SESSION_TTL)
                p.set(f"ip_ua_latest:{ip}:{uah}:{kp}", sid, ex=SESSION_TTL)
                p.set(f"user_active_session:{uid}:{ip}", sid, ex=USER_SESSION_TTL)
                await p.execute()
            set_cookie = f"session_id_fileserver={sid}; Path=/; Max-Age={SESSION_TTL}; HttpOnly; SameSite=Lax"
            eff_uid = uid
        else:
            eff_uid = wl_uid
        # 6. playlist checks
        if kind == "playlist":
            if not eff_uid:
                return text(403, "No valid UID for .m3u8 request")
            if not (uid and q.get("expires") and q.get("token")):
                return text(400, ".m3u8 request missing required parameters (uid, expires, token)")
            if not H.token_ok(SECRET, uid, rel, q["expires"], q["token"]):
                return text(403, ".m3u8 request token invalid or expired hmac")
            limit, window = H.PLAYLIST_LIMITS[H.ua_class(ua)]
            full_url = f"{request.scheme}://{request.host}{request.raw_path}"
            ckey = H.access_count_key(eff_uid, full_url, ip)
            try:
                n = await r.incr(ckey)
                if n == 1:
                    await r.expire(ckey, window)
            except Exception:
                return text(403, f"Access Denied 100308 with uid:{eff_uid}")
            if n > limit:
                return text(403, f"Access Denied 100308 with uid:{eff_uid}")

    # 7. origin
    headers = {"User-Agent": ua, "X-Forwarded-For": ip}
    for h in H.FORWARD_REQUEST_HEADERS:
        if h in request.headers:
            headers[h] = request.headers[h]
    session = request.app["http"]
    try:
        upstream = await session.request(request.method, ORIGIN + raw_path, headers=headers)
    except aiohttp.ServerTimeoutError:
        return text(504, "Gateway Timeout")
    except (aiohttp.ClientError, OSError):
        return text(502, "Bad Gateway")
    try:
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in H.HOP_BY_HOP}
        if set_cookie:
            out_headers["Set-Cookie"] = set_cookie
        if upstream.status >= 400:
            out_headers["Content-Length"] = "0"
            return web.Response(status=upstream.status, headers=out_headers)
        resp = web.StreamResponse(status=upstream.status, headers=out_headers)
        await resp.prepare(request)
        sent = 0
        if request.method != "HEAD":
            async for chunk in upstream.content.iter_chunked(STREAM_CHUNK_SIZE):
                await resp.write(chunk)
                sent += len(chunk)
        await resp.write_eof()
        if eff_uid:
            t = TRAFFIC.setdefault(eff_uid, [0, 0])
            t[0] += sent
            t[1] += 1
        return resp
    except (aiohttp.ClientError, ConnectionResetError):
        # Origin broke mid-way or the viewer left: nothing more can be sent.
        raise
    finally:
        upstream.release()


async def health(request):
    return web.json_response({"status": "ok"})


async def on_startup(app):
    app["redis"] = aioredis.from_url(REDIS_URL)
    connector = aiohttp.TCPConnector(limit=HTTP_CONNECTOR_LIMIT, limit_per_host=HTTP_CONNECTOR_LIMIT_PER_HOST,
                                     keepalive_timeout=HTTP_KEEPALIVE_TIMEOUT, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=HTTP_TOTAL_TIMEOUT, connect=HTTP_CONNECT_TIMEOUT)
    app["http"] = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                        cookie_jar=aiohttp.DummyCookieJar())


async def on_cleanup(app):
    await app["http"].close()
    await app["redis"].aclose()


async def on_prepare(request, response):
    """TCP_NODELAY (aiohttp sets it already) and TCP_QUICKACK, as in the seed plan."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass


def make_app():
    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.on_response_prepare.append(on_prepare)
    app.router.add_post("/api/whitelist", whitelist_api)
    app.router.add_get("/health", health)
    app.router.add_get("/{path:.*}", proxy)  # add_get registers HEAD too
    return app


app = make_app()
