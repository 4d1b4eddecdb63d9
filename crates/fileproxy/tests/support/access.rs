//! Access-control test helpers: a proxy with a chosen store and config sections, a
//! viewer that presents a client IP (through `X-Forwarded-For` to a trusted proxy),
//! a User-Agent and a session cookie, and the admission (`admit`) and signing
//! (`sign`, `sign_cli`) steps of the video site's backend.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::origin::TestOrigin;
use super::proxy::{free_port, run_cli, Proxy, ADMIN_TOKEN, SECRET, WL_KEY};

/// A desktop Chrome User-Agent (class `desktop_browser`, browser `chrome`).
pub const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
/// A desktop Firefox User-Agent (class `desktop_browser`, browser `firefox`).
pub const FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0";
/// An Android Chrome User-Agent (class `mobile_browser`, browser `chrome_mobile`).
pub const ANDROID: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";
/// curl (class `download_tool`).
pub const CURL: &str = "curl/8.5.0";
/// A User-Agent of class `unknown`.
pub const ODD_PLAYER: &str = "OddPlayer/1.0";

/// Sections of a proxy config beyond the fixed parts of [`AccessProxy::start`].
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// `store.url`.
    pub store_url: String,
    /// Extra `[server]` lines (e.g. `trusted_proxies = ["127.0.0.1"]`).
    pub server: String,
    /// Extra `[auth]` lines (e.g. `cookie_secure = true`).
    pub auth: String,
    /// Extra `[store]` lines (e.g. `op_timeout_ms = 500`).
    pub store: String,
    /// Further tables appended at the end (`[cors]`, `[auth.playlist_limits]`, …).
    pub tail: String,
}

impl ProxyConfig {
    /// A config on `store_url` that believes `X-Forwarded-For` from 127.0.0.1, so a
    /// test can present any client IP.
    pub fn trusting_loopback(store_url: &str) -> Self {
        Self {
            store_url: store_url.to_string(),
            server: "trusted_proxies = [\"127.0.0.1\"]".into(),
            ..Self::default()
        }
    }

    /// Adds `[auth]` lines.
    pub fn auth(mut self, lines: &str) -> Self {
        self.auth.push_str(lines);
        self.auth.push('\n');
        self
    }

    /// Adds `[server]` lines.
    pub fn server(mut self, lines: &str) -> Self {
        self.server.push_str(lines);
        self.server.push('\n');
        self
    }

    /// Adds `[store]` lines.
    pub fn store(mut self, lines: &str) -> Self {
        self.store.push_str(lines);
        self.store.push('\n');
        self
    }

    /// Appends tables at the end.
    pub fn tail(mut self, text: &str) -> Self {
        self.tail.push_str(text);
        self.tail.push('\n');
        self
    }

    /// Starts the real binary with this config in front of `origin_url`.
    pub fn start(&self, origin_url: &str) -> Proxy {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_s = 5\n{server}\n\
             [origin]\nurl = \"{origin_url}\"\n\
             [store]\nurl = \"{store_url}\"\n{store}\n\
             [auth]\nsecret = \"{SECRET}\"\nwhitelist_api_key = \"{WL_KEY}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n{auth}\n\
             [log]\nlevel = \"info\"\naccess_log = \"off\"\n\
             {tail}\n",
            server = self.server,
            store_url = self.store_url,
            store = self.store,
            auth = self.auth,
            tail = self.tail,
        );
        Proxy::start_with_config(&cfg, port, dir, &[])
    }
}

/// The config file of a running proxy.
pub fn config_path(p: &Proxy) -> PathBuf {
    p.dir.path().join("fileproxy.toml")
}

/// Current Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A signed playlist URL (path and query) for `uid`, valid for an hour.
pub fn sign(uid: &str, path: &str) -> String {
    fileproxy::access::token::sign_url(SECRET.as_bytes(), uid, path, 3600, now())
}

/// A signed playlist URL whose `expires` is `expires_at` (may lie in the past).
pub fn sign_expiring_at(uid: &str, path: &str, expires_at: u64) -> String {
    fileproxy::access::token::sign_url(SECRET.as_bytes(), uid, path, 0, expires_at)
}

/// A signed playlist URL made by `fileproxy sign --config <p's config>`.
pub fn sign_cli(p: &Proxy, uid: &str, path: &str) -> String {
    let cfg = config_path(p);
    let cfg = cfg.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(
        &[
            "sign", "--config", cfg, "--uid", uid, "--path", path, "--ttl", "3600",
        ],
        &[],
    );
    assert_eq!(code, 0, "fileproxy sign failed: {err}");
    out.trim().to_string()
}

/// The UA hash of SPEC §3 (first 8 hex chars of MD5), computed here, not by the crate.
pub fn ua_hash(ua: &str) -> String {
    use md5::{Digest, Md5};
    hex::encode(&Md5::digest(ua.as_bytes())[..4])
}

/// `m3u8_access_count_v2:{sha256 hex of "{uid}:{full_url}:{ip}"}` (SPEC §6), computed here.
pub fn count_key(uid: &str, full_url: &str, ip: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{uid}:{full_url}:{ip}").as_bytes());
    format!("m3u8_access_count_v2:{}", hex::encode(d))
}

/// An HTTP client that never follows redirects, keeps no cookies and uses no proxy,
/// optionally bound to a local address (to be a different TCP peer).
pub fn http_client(local: Option<IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A finished response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Resp {
    /// Reads a whole response.
    pub async fn read(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.expect("body");
        Resp {
            status,
            headers,
            body,
        }
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// One header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_string())
    }

    /// The `session_id_fileserver` cookie set by this response, if any.
    pub fn session_cookie(&self) -> Option<SetCookie> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(SetCookie::parse)
            .find(|c| c.name == "session_id_fileserver")
    }

    /// Asserts status and exact body text.
    #[track_caller]
    pub fn assert_text(&self, status: u16, text: &str) {
        assert_eq!(
            (self.status, self.text().as_str()),
            (status, text),
            "unexpected answer"
        );
    }
}

/// A parsed `Set-Cookie` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie value.
    pub value: String,
    /// Attributes after the first `;`, trimmed, as written.
    pub attrs: Vec<String>,
}

impl SetCookie {
    /// Parses `name=value; Attr; Attr=v`.
    pub fn parse(h: &str) -> SetCookie {
        let mut parts = h.split(';').map(str::trim);
        let (name, value) = parts
            .next()
            .and_then(|nv| nv.split_once('='))
            .expect("name=value");
        SetCookie {
            name: name.to_string(),
            value: value.to_string(),
            attrs: parts.map(str::to_string).collect(),
        }
    }

    /// Whether an attribute is present (case-insensitive, `Name` or `Name=value`).
    pub fn has(&self, attr: &str) -> bool {
        self.attrs.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }
}

/// A viewer: client IP (sent as `X-Forwarded-For`; the proxy must trust 127.0.0.1),
/// User-Agent, optional cookie and `Host`.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The client IP presented to the proxy.
    pub ip: String,
    /// The User-Agent.
    pub ua: String,
    /// Value of `session_id_fileserver` to send.
    pub cookie: Option<String>,
    /// `Host` header to send instead of the proxy's address.
    pub host: Option<String>,
    client: reqwest::Client,
}

impl Viewer {
    /// A viewer at `ip` with User-Agent `ua`, no cookie.
    pub fn new(ip: &str, ua: &str) -> Viewer {
        Viewer {
            ip: ip.to_string(),
            ua: ua.to_string(),
            cookie: None,
            host: None,
            client: http_client(None),
        }
    }

    /// The same viewer sending this cookie.
    pub fn with_cookie(&self, id: &str) -> Viewer {
        Viewer {
            cookie: Some(id.to_string()),
            ..self.clone()
        }
    }

    /// The same viewer speaking HTTP/2 without TLS (h2c, prior knowledge).
    pub fn h2(&self) -> Viewer {
        Viewer {
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .http2_prior_knowledge()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("h2c client"),
            ..self.clone()
        }
    }

    /// The same viewer sending this `Host` header.
    pub fn with_host(&self, host: &str) -> Viewer {
        Viewer {
            host: Some(host.to_string()),
            ..self.clone()
        }
    }

    /// `GET path_and_query` with the viewer's headers plus `extra`.
    pub async fn get_with(&self, p: &Proxy, path_and_query: &str, extra: &[(&str, &str)]) -> Resp {
        let mut rb = self
            .client
            .get(p.url(path_and_query))
            .header("user-agent", &self.ua)
            .header("x-forwarded-for", &self.ip);
        if let Some(c) = &self.cookie {
            rb = rb.header("cookie", format!("other=1; session_id_fileserver={c}"));
        }
        if let Some(h) = &self.host {
            rb = rb.header("host", h);
        }
        for (k, v) in extra {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.expect("request");
        Resp::read(r).await
    }

    /// `GET path_and_query`.
    pub async fn get(&self, p: &Proxy, path_and_query: &str) -> Resp {
        self.get_with(p, path_and_query, &[]).await
    }

    /// Admits this viewer (its IP and UA) for `path` as `uid`; asserts `200`.
    pub async fn admit(&self, p: &Proxy, uid: &str, path: &str) -> Value {
        admit(p, uid, path, &self.ip, &self.ua).await
    }
}

/// `POST /api/whitelist` with the right bearer key; asserts `200`, returns the JSON.
pub async fn admit(p: &Proxy, uid: &str, path: &str, client_ip: &str, ua: &str) -> Value {
    let body =
        serde_json::json!({"uid": uid, "path": path, "clientIp": client_ip, "UserAgent": ua});
    let r = admit_raw(p, Some(&format!("Bearer {WL_KEY}")), &body.to_string()).await;
    assert_eq!(r.status, 200, "admission refused: {}", r.text());
    r.json()
}

/// `POST /api/whitelist` with any `Authorization` value and body.
pub async fn admit_raw(p: &Proxy, authorization: Option<&str>, body: &str) -> Resp {
    let mut rb = http_client(None)
        .post(p.url("/api/whitelist"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = authorization {
        rb = rb.header("authorization", a);
    }
    Resp::read(rb.send().await.expect("admission request")).await
}

/// `GET /health` (status, JSON).
/// `GET path` on the admin routes with the admin token; the JSON answer.
pub async fn admin_json(p: &Proxy, path: &str) -> Value {
    http_client(None)
        .get(p.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{path} body: {e}"))
}

pub async fn health(p: &Proxy) -> (u16, Value) {
    health_from(p, None).await
}

/// `GET /health` from local address `local` (`None`: the default): status and JSON.
pub async fn health_from(p: &Proxy, local: Option<IpAddr>) -> (u16, Value) {
    let r = Resp::read(
        http_client(local)
            .get(p.url("/health"))
            .send()
            .await
            .expect("health"),
    )
    .await;
    (r.status, r.json())
}

/// One video on the test origin under `/files/vod/<kp>/`: a playlist, two segments
/// and an AES key, with their request paths.
#[derive(Debug, Clone)]
pub struct Video {
    /// Its key path.
    pub kp: String,
    /// `/files/vod/<kp>/index.m3u8`.
    pub playlist: String,
    /// `/files/vod/<kp>/seg0.ts`.
    pub seg0: String,
    /// `/files/vod/<kp>/seg1.ts`.
    pub seg1: String,
    /// `/files/vod/<kp>/enc.key`.
    pub key: String,
    /// Playlist bytes.
    pub playlist_body: Bytes,
    /// seg0 bytes.
    pub seg0_body: Bytes,
    /// Key bytes.
    pub key_body: Bytes,
}

impl Video {
    /// Registers a video with key path `kp` on `origin`.
    pub fn put(origin: &TestOrigin, kp: &str) -> Video {
        let base = format!("vod/{kp}");
        let playlist_body = Bytes::from(format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-KEY:METHOD=AES-128,URI=\"enc.key\"\n#EXTINF:4.0,\nseg0.ts\n#EXTINF:4.0,\nseg1.ts\n#EXT-X-ENDLIST\n# {kp}\n"
        ));
        let seg0_body = Bytes::from(
            (0..4096u32)
                .map(|i| (i.wrapping_mul(31) ^ kp.len() as u32) as u8)
                .collect::<Vec<u8>>(),
        );
        let key_body = Bytes::from((0..16u8).map(|i| i.wrapping_mul(17)).collect::<Vec<u8>>());
        origin.put(&format!("{base}/index.m3u8"), playlist_body.clone());
        origin.put(&format!("{base}/seg0.ts"), seg0_body.clone());
        origin.put(
            &format!("{base}/seg1.ts"),
            Bytes::from_static(b"segment one"),
        );
        origin.put(&format!("{base}/enc.key"), key_body.clone());
        Video {
            kp: kp.to_string(),
            playlist: format!("/files/{base}/index.m3u8"),
            seg0: format!("/files/{base}/seg0.ts"),
            seg1: format!("/files/{base}/seg1.ts"),
            key: format!("/files/{base}/enc.key"),
            playlist_body,
            seg0_body,
            key_body,
        }
    }
}
