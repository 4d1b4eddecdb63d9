"""Peer 3: the FastAPI + Uvicorn (uvloop, httptools) + httpx version of the seed plan.

Same SPEC §2 flow and Python-format Redis keys as the aiohttp peer; origin requests go
through one shared httpx.AsyncClient with the seed plan's limits (200 connections,
50 kept alive, keep-alive 60 s, connect 15 s, total 90 s) and are streamed back with a
StreamingResponse in 16 KiB chunks. Entries are read by exact key (no KEYS scans) and
no access log is written — both in the peer's favour.

Run: gunicorn -c bench/peers/fastapi/gunicorn.conf.py app:app  (see bench/README.md)
Environment: PEER_ORIGIN, PEER_REDIS, PEER_SECRET, PEER_WHITELIST_KEY.
"""
import json
import os
import sys
import time
import uuid
from contextlib import asynccontextmanager
from urllib.parse import unquote

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

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

TRAFFIC = {}
state = {}


@asynccontextmanager
async def lifespan(app):
    state["redis"] = aioredis.from_url(REDIS_URL)
    state["http"] = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=60),
        timeout=httpx.Timeout(90.0, connect=15.0))
    yield
    await state["http"].aclose()
    await state["redis"].aclose()


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)


def client_ip(request):
    return request.client.host if request.client else "0.0.0.0"


@app.post("/api/whitelist")
async def whitelist_api(request: Request):
    if request.headers.get("authorization", "") != f"Bearer {WL_KEY}":
        return JSONResponse({"error": "invalid api key"}, status_code=403)
    try:
        data = json.loads(await request.body())
        uid, path, ip, ua = data["uid"], data["path"], data["clientIp"], data["UserAgent"]
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "bad request"}, status_code=400)
    try:
        network = H.network_of(ip)
    except ValueError:
        return JSONResponse({"error": "clientIp is not an IP or CIDR"}, status_code=400)
    kp = H.key_path(path)
    if not kp:
        return JSONResponse({"error": "path has no key path"}, status_code=400)
    r = state["redis"]
    uah = H.ua_hash(ua)
    key = H.whitelist_key(network, uah)
    now = int(time.time())
    raw = await r.get(key)
    entry = json.loads(raw) if raw else {}
    paths, merged = H.merge_paths(entry, kp, MAX_PATHS, now)
    entry.update({"uid": uid, "key_path": kp, "paths": paths, "ip_patterns": [network],
                  "user_agent": ua, "created_at": entry.get("created_at", now), "worker_pid": os.getpid()})
    await r.set(key, json.dumps(entry), ex=IP_ACCESS_TTL)
    return {"message": "whitelist updated", "key_path": kp, "ip_pattern": network,
            "cidr_examples": [network], "ua_hash": uah, "ttl": IP_ACCESS_TTL,
            "patterns_merged": 1 if merged else 0, "patterns_new": 0 if merged else 1,
            "multi_path_info": {"max_paths_per_cidr": MAX_PATHS, "current_path": kp}}


@app.get("/health")
async def health():
    return {"status": "ok"}


async def find_session(r, ip, uah, uid, kp, ua):
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


@app.api_route("/{full_path:path}", methods=["GET", "HEAD"])
async def proxy(request: Request, full_path: str):
    r = state["redis"]
    raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    path = unquote(raw_path)
    rel = path.lstrip("/")
    kind = H.classify(path)
    ip = client_ip(request)
    ua = request.headers.get("user-agent", "")
    q = request.query_params
    uid = q.get("uid")
    eff_uid = None
    set_cookie = None
    if not H.skips_validation(path):
        kp = H.key_path(path)
        uah = H.ua_hash(ua)
        try:
            network = H.network_of(ip)
        except ValueError:
            return PlainTextResponse("Access Denied 100020 path", status_code=403)
        raw = await r.get(H.whitelist_key(network, uah))
        entry = json.loads(raw) if raw else None
        if (not kp or not entry or kp not in [p.get("key_path") for p in entry.get("paths", [])]
                or kp.lower() not in path.lower()):
            return PlainTextResponse("Access Denied 100020 path", status_code=403)
        wl_uid = entry.get("uid")
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
        if kind == "playlist":
            if not eff_uid:
                return PlainTextResponse("No valid UID for .m3u8 request", status_code=403)
            if not (uid and q.get("expires") and q.get("token")):
                return PlainTextResponse(".m3u8 request missing required parameters (uid, expires, token)",
                                         status_code=400)
            if not H.token_ok(SECRET, uid, rel, q["expires"], q["token"]):
                return PlainTextResponse(".m3u8 request token invalid or expired hmac", status_code=403)
            limit, window = H.PLAYLIST_LIMITS[H.ua_class(ua)]
            qs = request.scope.get("query_string", b"").decode("latin-1")
            full_url = f"{request.url.scheme}://{request.headers.get('host', '')}{raw_path}?{qs}"
            ckey = H.access_count_key(eff_uid, full_url, ip)
            try:
                n = await r.incr(ckey)
                if n == 1:
                    await r.expire(ckey, window)
            except Exception:
                return PlainTextResponse(f"Access Denied 100308 with uid:{eff_uid}", status_code=403)
            if n > limit:
                return PlainTextResponse(f"Access Denied 100308 with uid:{eff_uid}", status_code=403)

    headers = {"User-Agent": ua, "X-Forwarded-For": ip}
    for h in H.FORWARD_REQUEST_HEADERS:
        v = request.headers.get(h)
        if v is not None:
            headers[h] = v
    client = state["http"]
    try:
        upstream = await client.send(client.build_request(request.method, ORIGIN + raw_path, headers=headers),
                                     stream=True)
    except httpx.TimeoutException:
        return PlainTextResponse("Gateway Timeout", status_code=504)
    except httpx.HTTPError:
        return PlainTextResponse("Bad Gateway", status_code=502)
    out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in H.HOP_BY_HOP}
    if set_cookie:
        out_headers["set-cookie"] = set_cookie
    if upstream.status_code >= 400 or request.method == "HEAD":
        await upstream.aclose()
        if upstream.status_code >= 400:
            out_headers["content-length"] = "0"
        return Response(status_code=upstream.status_code, headers=out_headers)

    async def body():
        sent = 0
        async for chunk in upstream.aiter_raw(STREAM_CHUNK_SIZE):
            yield chunk
            sent += len(chunk)
        if eff_uid:
            t = TRAFFIC.setdefault(eff_uid, [0, 0])
            t[0] += sent
            t[1] += 1

    return StreamingResponse(body(), status_code=upstream.status_code, headers=out_headers,
                             background=BackgroundTask(upstream.aclose))
