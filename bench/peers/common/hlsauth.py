"""Pure access-policy helpers shared by the Python peers (SPEC §2–4, §6).

No I/O here: both the aiohttp and the FastAPI peer import this module and do their own
Redis and HTTP calls, the way the production Python versions share their helpers.
"""
import base64
import hashlib
import hmac
import ipaddress
import re
import time

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")

SKIP_VALIDATION = (".webp", ".php", ".js", ".css", ".ico", ".txt", ".woff", ".woff2",
                   ".ttf", ".png", ".jpg", ".jpeg", ".gif", ".svg")

# Hop-by-hop headers (RFC 9110 §7.6.1) and headers the proxy sets itself.
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Proxy-Connection",
    "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers", "Access-Control-Max-Age"))

FORWARD_REQUEST_HEADERS = ("Range", "If-Range", "If-Modified-Since", "If-None-Match")

DOWNLOAD_TOOLS = ("wget", "curl", "aria2", "ffmpeg", "yt-dlp", "youtube-dl", "python-requests",
                  "go-http-client", "okhttp", "httpie", "axios", "libwww-perl", "java/")
MOBILE_MARKERS = ("android", "iphone", "ipad", "mobile")

# (limit, window seconds) per UA class: SPEC §4 defaults.
PLAYLIST_LIMITS = {
    "download_tool": (1, 60),
    "mobile_browser": (1, 180),
    "desktop_browser": (1, 120),
    "unknown": (1, 60),
}


def classify(path):
    """File kind by suffix: playlist, segment, key, static or default."""
    p = path.lower()
    if p.endswith(".m3u8"):
        return "playlist"
    if p.endswith(".ts"):
        return "segment"
    if p.endswith("enc.key"):
        return "key"
    if p.endswith((".jpg", ".jpeg", ".png", ".gif", ".css", ".js", ".woff", ".woff2", ".ttf")):
        return "static"
    return "default"


def skips_validation(path):
    """True when the path goes straight to the origin (SPEC §2 step 2)."""
    return path.lower().endswith(SKIP_VALIDATION)


def key_path(path):
    """SPEC §2.1: folder after the first date component, else the file's folder."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if DATE_RE.match(part):
            return parts[i + 1] if i + 1 < len(parts) else ""
    if len(parts) >= 2:
        return parts[-2]
    return ""


def ua_hash(ua):
    """First 8 hex chars of MD5(User-Agent)."""
    return hashlib.md5(ua.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def network_of(ip):
    """IPv4 → its /24 network text; IPv6 → /128. Raises ValueError for non-IPs."""
    if "/" in ip:
        net = ipaddress.ip_network(ip, strict=False)
        if net.version == 4 and net.prefixlen > 24:
            net = net.supernet(new_prefix=24)
        return str(net)
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return str(ipaddress.ip_network(f"{addr}/24", strict=False))
    return f"{addr}/128"


def whitelist_key(network, uah):
    """Redis key of the whitelist entry for (network, UA hash), Python format."""
    return f"ip_cidr_access:{network.replace('/', '_')}:{uah}"


def ua_class(ua):
    """SPEC §4 class of a User-Agent (coarse: enough for the benchmark's players)."""
    u = ua.lower()
    if any(t in u for t in DOWNLOAD_TOOLS):
        return "download_tool"
    browser = any(b in u for b in ("chrome", "firefox", "safari", "edg", "opera", "qqbrowser", "ucbrowser"))
    if browser and any(m in u for m in MOBILE_MARKERS):
        return "mobile_browser"
    if browser and any(d in u for d in ("windows", "macintosh", "mac os", "linux", "x11")):
        return "desktop_browser"
    return "unknown"


def token_ok(secret, uid, path, expires, token):
    """HMAC-SHA256 check of a playlist token (base64url no padding, or 64-char hex)."""
    try:
        exp = int(expires)
    except (TypeError, ValueError):
        return False
    if exp < time.time():
        return False
    digest = hmac.new(secret.encode(), f"{uid}:{path}:{expires}".encode(), hashlib.sha256).digest()
    if len(token) == 64:
        return hmac.compare_digest(digest.hex(), token.lower())
    want = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(want, token)


def sign(secret, uid, path, expires):
    """Token for `path` (without leading slash), as the site backend makes it."""
    digest = hmac.new(secret.encode(), f"{uid}:{path}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def access_count_key(uid, full_url, ip):
    """Redis key of the playlist access counter (SPEC §6)."""
    return "m3u8_access_count_v2:" + hashlib.sha256(f"{uid}:{full_url}:{ip}".encode()).hexdigest()


def merge_paths(entry, kp, max_paths, now):
    """Add key path `kp` to a whitelist entry's paths (refresh if present, drop oldest past max)."""
    paths = [p for p in entry.get("paths", []) if p.get("key_path") != kp]
    merged = len(paths) != len(entry.get("paths", []))
    paths.append({"key_path": kp, "created_at": now})
    paths.sort(key=lambda p: p.get("created_at", 0))
    while len(paths) > max_paths:
        paths.pop(0)
    return paths, merged
