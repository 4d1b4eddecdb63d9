//! Access control end to end (issue 3): the real `fileproxy` binary, a real HTTP
//! origin and real sockets. Every scenario that does not need Redis itself is written
//! once and run against both stores (`memory::*` with `memory://`, `redis::*` with a
//! real `redis-server`); the Redis-only ones (store failure, Python compatibility,
//! two processes on one store) are in `redis_only::*`.
//!
//! Most proxies here trust 127.0.0.1 as a forwarding proxy, so a test presents any
//! client IP with `X-Forwarded-For` (the `forwarded_for_trust` scenario checks the
//! rule itself, also with a second, untrusted loopback peer 127.0.0.2).

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::access::*;
use support::origin::TestOrigin;
use support::proxy::{Proxy, SECRET, WL_KEY};
use support::redis::RedisServer;
use support::stores::{Env, Kind};

const DENY_PATH: &str = "Access Denied 100020 path";
const NO_UID: &str = "No valid UID for .m3u8 request";
const MISSING: &str = ".m3u8 request missing required parameters (uid, expires, token)";
const BAD_TOKEN: &str = ".m3u8 request token invalid or expired hmac";
const STORE_DOWN: &str = "Service Unavailable: access check failed, retry later";

fn limit_text(uid: &str) -> String {
    format!("Access Denied 100308 with uid:{uid}")
}

impl Env {
    fn start(&self, cfg: &ProxyConfig) -> Proxy {
        cfg.start(&self.origin.url())
    }

    /// The `X-Forwarded-For` the origin saw on its last request.
    fn origin_saw_xff(&self) -> String {
        let h = self.origin.state.last_headers.lock().unwrap().clone();
        h.and_then(|h| h.get("x-forwarded-for").cloned())
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

on_both_stores!(
    viewer_flow,
    session_cookie_attributes,
    whitelist_denials,
    playlist_errors,
    whitelist_api,
    whitelist_fifo,
    concurrent_admissions,
    safe_key_redirect,
    forwarded_for_trust,
    cookie_not_transferable,
    cors,
    playlist_limits,
);

/// A signed URL split into (path, uid, expires, token).
fn split_signed(url: &str) -> (String, String, String, String) {
    let (path, q) = url.split_once('?').expect("query");
    let mut uid = String::new();
    let mut expires = String::new();
    let mut token = String::new();
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').expect("k=v");
        match k {
            "uid" => uid = v.to_string(),
            "expires" => expires = v.to_string(),
            "token" => token = v.to_string(),
            _ => panic!("unexpected parameter {k}"),
        }
    }
    (path.to_string(), uid, expires, token)
}

/// Admission → signed playlist → segments and key by session → replay denied.
async fn viewer_flow(kind: Kind) {
    let env = Env::new(kind).await;
    let v = Video::put(&env.origin, "abc123");
    let p = env.start(&env.config());
    let viewer = Viewer::new("198.51.100.7", CHROME);

    // The site admits the viewer; the path may be a full URL with a query.
    let adm = viewer
        .admit(&p, "u1", &format!("https://site.example{}?x=1", v.playlist))
        .await;
    assert_eq!(adm["key_path"], "abc123");

    // The site signs the playlist URL (here with the CLI, on the proxy's own config).
    let url = sign_cli(&p, "u1", &v.playlist);
    assert!(
        url.starts_with(&format!("{}?uid=u1&expires=", v.playlist)),
        "{url}"
    );
    let r = viewer.get(&p, &url).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, v.playlist_body);
    assert_eq!(env.origin_saw_xff(), "198.51.100.7");
    let cookie = r.session_cookie().expect("a new session sets its cookie");
    assert!(uuid::Uuid::parse_str(&cookie.value).is_ok(), "{cookie:?}");
    assert_eq!(
        cookie.attrs,
        ["Path=/", "Max-Age=7200", "HttpOnly", "SameSite=Lax"]
    );

    // The player fetches segments and the key with the cookie (and no uid).
    let player = viewer.with_cookie(&cookie.value);
    let r = player.get(&p, &v.seg0).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, v.seg0_body);
    assert!(
        r.session_cookie().is_none(),
        "session reused, no new cookie"
    );
    let r = player.get(&p, &v.seg1).await;
    assert_eq!((r.status, r.body.as_ref()), (200, &b"segment one"[..]));
    let r = player.get(&p, &v.key).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, v.key_body);
    assert!(r.session_cookie().is_none());

    // The same playlist URL a second time: over the limit (1 by default).
    player
        .get(&p, &url)
        .await
        .assert_text(403, &limit_text("u1"));
    viewer
        .get(&p, &url)
        .await
        .assert_text(403, &limit_text("u1"));
    // HTTP/2 has no Host header (`:authority` instead) but the same full URL, so
    // the same counter.
    let r = player.h2().get(&p, &url).await;
    r.assert_text(403, &limit_text("u1"));
    // Segments still flow (over both protocols).
    assert_eq!(player.get(&p, &v.seg0).await.status, 200);
    assert_eq!(player.h2().get(&p, &v.seg0).await.status, 200);

    // A video whose folder needs escaping: the site admits the encoded URL, signs the
    // plain path; the player requests the encoded form.
    let raw = "vod/my%20video%20%C3%BC";
    env.origin
        .put(&format!("{raw}/index.m3u8"), "#EXTM3U\n# spaced\n");
    env.origin.put(&format!("{raw}/seg0.ts"), "spaced segment");
    let adm = viewer
        .admit(
            &p,
            "u1",
            &format!("https://site.example/files/{raw}/index.m3u8"),
        )
        .await;
    assert_eq!(adm["key_path"], "my video ü");
    let url2 = sign_cli(&p, "u1", "/files/vod/my video ü/index.m3u8");
    assert!(
        url2.starts_with(&format!("/files/{raw}/index.m3u8?")),
        "{url2}"
    );
    let r = viewer.get(&p, &url2).await;
    assert_eq!((r.status, r.text().as_str()), (200, "#EXTM3U\n# spaced\n"));
    let r = viewer.get(&p, &format!("/files/{raw}/seg0.ts")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "spaced segment"));
    viewer
        .get(&p, &url2)
        .await
        .assert_text(403, &limit_text("u1"));

    // Concurrent fetches of one fresh URL: exactly one gets through.
    let fresh = Viewer::new("198.51.100.8", CHROME);
    let url3 = sign("u3", &v.playlist);
    let answers = futures_util::future::join_all((0..8).map(|_| fresh.get(&p, &url3))).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_text(403, &limit_text("u3"));
    }

    let (status, h) = health(&p).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(
        h["store"]["kind"],
        if kind == Kind::Redis {
            "redis"
        } else {
            "memory"
        }
    );
}

/// Set-Cookie carries the configured session TTL and `Secure` when configured.
async fn session_cookie_attributes(kind: Kind) {
    let env = Env::new(kind).await;
    let v = Video::put(&env.origin, "abc");
    let p = env.start(
        &env.config()
            .auth("cookie_secure = true\nsession_ttl_s = 600"),
    );
    let viewer = Viewer::new("198.51.100.7", CHROME);
    viewer.admit(&p, "u1", &v.playlist).await;
    let r = viewer.get(&p, &format!("{}?uid=u1", v.seg0)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.session_cookie().expect("cookie");
    assert_eq!(c.name, "session_id_fileserver");
    assert_eq!(
        c.attrs,
        [
            "Path=/",
            "Max-Age=600",
            "HttpOnly",
            "SameSite=Lax",
            "Secure"
        ]
    );
    if let Some(redis) = &env.redis {
        let ttl: i64 = redis
            .cli(&["TTL", &format!("session:{}", c.value)])
            .parse()
            .unwrap();
        assert!(ttl > 0 && ttl <= 600, "session TTL {ttl}");
    }
    // Without the flag: no Secure.
    let p2 = env.start(&env.config());
    let v2 = Viewer::new("198.51.100.8", FIREFOX);
    v2.admit(&p2, "u2", &v.playlist).await;
    let c = v2
        .get(&p2, &format!("{}?uid=u2", v.seg0))
        .await
        .session_cookie()
        .expect("cookie");
    assert!(!c.has("Secure"), "{c:?}");
    assert!(c.has("Max-Age=7200"), "{c:?}");
}

/// Every way the whitelist check refuses (`403 Access Denied 100020 path`), and the
/// network widening that lets neighbours through.
async fn whitelist_denials(kind: Kind) {
    let env = Env::new(kind).await;
    let v = Video::put(&env.origin, "abc");
    let other = Video::put(&env.origin, "other");
    env.origin.put("rootseg.ts", "root");
    env.origin.put("abc/other/seg0.ts", "nested");
    env.origin
        .put("live/2024-05-01/dated1/720p/seg0.ts", "dated segment");
    let p = env.start(&env.config());
    let viewer = Viewer::new("198.51.100.7", CHROME);

    // No entry at all.
    viewer.get(&p, &v.seg0).await.assert_text(403, DENY_PATH);
    viewer
        .get(&p, &sign("u1", &v.playlist))
        .await
        .assert_text(403, DENY_PATH);

    viewer.admit(&p, "u1", &v.playlist).await;
    assert_eq!(viewer.get(&p, &v.seg0).await.status, 200);

    // An entry, but for another key path (segment and playlist alike).
    viewer
        .get(&p, &other.seg0)
        .await
        .assert_text(403, DENY_PATH);
    viewer
        .get(&p, &sign("u1", &other.playlist))
        .await
        .assert_text(403, DENY_PATH);
    // The admitted key path occurs in the path, but is not the request's key path.
    viewer
        .get(&p, "/files/abc/other/seg0.ts")
        .await
        .assert_text(403, DENY_PATH);
    // No key path in the request path.
    viewer
        .get(&p, "/rootseg.ts")
        .await
        .assert_text(403, DENY_PATH);
    viewer
        .get(&p, "/index.m3u8?uid=u1&expires=1&token=x")
        .await
        .assert_text(403, DENY_PATH);

    // Same /24 and UA: allowed; another network or another UA: refused.
    assert_eq!(
        Viewer::new("198.51.100.201", CHROME)
            .get(&p, &v.seg0)
            .await
            .status,
        200
    );
    Viewer::new("198.51.101.7", CHROME)
        .get(&p, &v.seg0)
        .await
        .assert_text(403, DENY_PATH);
    Viewer::new("198.51.100.7", FIREFOX)
        .get(&p, &v.seg0)
        .await
        .assert_text(403, DENY_PATH);

    // An IPv4-mapped IPv6 admission is the IPv4 /24.
    let adm = admit(&p, "u1", &other.playlist, "::ffff:198.51.100.7", CHROME).await;
    assert_eq!(adm["ip_pattern"], "198.51.100.0/24");
    assert_eq!(viewer.get(&p, &other.seg0).await.status, 200);

    // Dated paths: the key path is the component after the date.
    viewer
        .admit(&p, "u1", "/vod/2024-05-01/dated1/720p/index.m3u8")
        .await;
    let r = viewer
        .get(&p, "/files/live/2024-05-01/dated1/720p/seg0.ts")
        .await;
    assert_eq!((r.status, r.text().as_str()), (200, "dated segment"));

    // IPv6: a single address is /128; a CIDR admission covers the viewer's /64.
    let v6 = Viewer::new("2001:db8::5", CHROME);
    v6.get(&p, &v.seg0).await.assert_text(403, DENY_PATH);
    let adm = v6.admit(&p, "u6", &v.playlist).await;
    assert_eq!(adm["ip_pattern"], "2001:db8::5/128");
    assert_eq!(v6.get(&p, &v.seg0).await.status, 200);
    Viewer::new("2001:db8::6", CHROME)
        .get(&p, &v.seg0)
        .await
        .assert_text(403, DENY_PATH);
    let adm = admit(&p, "u7", &v.playlist, "2001:db8:1::/64", CHROME).await;
    assert_eq!(adm["ip_pattern"], "2001:db8:1::/64");
    assert_eq!(
        Viewer::new("2001:db8:1::abcd", CHROME)
            .get(&p, &v.seg0)
            .await
            .status,
        200
    );
    Viewer::new("2001:db8:2::abcd", CHROME)
        .get(&p, &v.seg0)
        .await
        .assert_text(403, DENY_PATH);
}

/// The playlist checks of SPEC §2 step 6, each with its exact status and text.
async fn playlist_errors(kind: Kind) {
    let env = Env::new(kind).await;
    let v = Video::put(&env.origin, "abc");
    env.origin.put("vod/abc/alt.m3u8", "#EXTM3U\n");
    let p = env.start(&env.config());
    let viewer = Viewer::new("198.51.100.7", CHROME);
    viewer.admit(&p, "u1", &v.playlist).await;

    let good = sign("u1", &v.playlist);
    let (path, uid, e, t) = split_signed(&good);
    assert_eq!(uid, "u1");

    // Missing (or empty) uid, expires or token → 400.
    for q in [
        String::new(),
        "?uid=u1".into(),
        format!("?uid=u1&expires={e}"),
        format!("?uid=u1&token={t}"),
        format!("?expires={e}&token={t}"),
        format!("?uid=&expires={e}&token={t}"),
        format!("?uid=u1&expires=&token={t}"),
        format!("?uid=u1&expires={e}&token="),
    ] {
        let r = viewer.get(&p, &format!("{path}{q}")).await;
        assert_eq!((r.status, r.text().as_str()), (400, MISSING), "query {q:?}");
    }

    let bad = |q: String| {
        let viewer = viewer.clone();
        let p = &p;
        let path = path.clone();
        async move {
            let r = viewer.get(p, &format!("{path}?{q}")).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (403, BAD_TOKEN),
                "query {q:?}"
            );
        }
    };
    let e1 = e.parse::<u64>().unwrap() + 1;
    let other_secret = fileproxy::access::token::playlist_token(
        b"another-secret",
        "u1",
        path.trim_start_matches('/'),
        &e,
    );
    bad(format!(
        "uid=u1&expires={e}&token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    ))
    .await;
    bad(format!("uid=u1&expires={e}&token=nonsense")).await;
    bad(format!("uid=u1&expires={e}&token={other_secret}")).await;
    // Tampered uid, expires.
    bad(format!("uid=u2&expires={e}&token={t}")).await;
    bad(format!("uid=u1&expires={e1}&token={t}")).await;
    bad(format!("uid=u1&expires=soon&token={t}")).await;
    // Tampered path: the same query on another playlist of the same video.
    let r = viewer
        .get(
            &p,
            &format!("/files/vod/abc/alt.m3u8?uid=u1&expires={e}&token={t}"),
        )
        .await;
    r.assert_text(403, BAD_TOKEN);
    // Expired (correctly signed, `expires` in the past).
    let expired = sign_expiring_at("u1", &v.playlist, now() - 30);
    viewer.get(&p, &expired).await.assert_text(403, BAD_TOKEN);

    // The lowercase hex form of the HMAC is accepted too.
    let hex = fileproxy::access::token::hex_token(
        SECRET.as_bytes(),
        "u1",
        path.trim_start_matches('/'),
        &e,
    );
    let r = viewer
        .get(&p, &format!("{path}?uid=u1&expires={e}&token={hex}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, v.playlist_body);
    // The suffix is matched case-insensitively and after percent-decoding: these are
    // playlists too and cannot skip the playlist checks.
    for disguised in [
        "/files/vod/abc/index.M3U8",
        "/files/vod/abc/index%2Em3u8",
        "/files/vod/abc/index.m3u%38",
    ] {
        viewer.get(&p, disguised).await.assert_text(400, MISSING);
    }
    // A uid that needs escaping in the URL (a viewer without a session yet: with one,
    // SPEC §2 step 5 (b) makes that session's uid the effective uid).
    let odd_uid = "user+1@example.com ü";
    let url = sign(odd_uid, &v.playlist);
    let fresh = Viewer::new("198.51.100.8", CHROME);
    let r = fresh.get(&p, &url).await;
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    fresh
        .get(&p, &url)
        .await
        .assert_text(403, &limit_text(odd_uid));

    // The good URL carries the same token bytes as the hex form used above, so the
    // canonical counter (SPEC §4) has spent its one use already: over the limit.
    viewer
        .get(&p, &good)
        .await
        .assert_text(403, &limit_text("u1"));
}

/// `POST /api/whitelist`: authentication, validation and the `200` JSON.
async fn whitelist_api(kind: Kind) {
    let env = Env::new(kind).await;
    let v = Video::put(&env.origin, "abc");
    let p = env.start(&env.config().auth("ip_access_ttl_s = 1800"));
    let body = |uid: &str, path: &str, ip: &str, ua: &str| {
        json!({"uid": uid, "path": path, "clientIp": ip, "UserAgent": ua}).to_string()
    };
    let good = body("u1", &v.playlist, "198.51.100.7", CHROME);
    let bearer = format!("Bearer {WL_KEY}");

    // Wrong or missing bearer key → 403 {"error": …}.
    for auth in [
        None,
        Some("Bearer wrong-key"),
        Some("Bearer "),
        Some("Basic dGVzdDp0ZXN0"),
        Some(&*format!("Bearer {WL_KEY}x")),
    ] {
        let r = admit_raw(&p, auth, &good).await;
        assert_eq!(r.status, 403, "{auth:?}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
    }

    // Bad JSON, missing or empty fields → 400.
    let mut bad_bodies: Vec<String> = vec![
        "{".into(),
        "".into(),
        "[]".into(),
        "\"text\"".into(),
        "{\"uid\": \"u1\"}".into(),
    ];
    for field in ["uid", "path", "clientIp", "UserAgent"] {
        let mut o: Value = serde_json::from_str(&good).unwrap();
        o.as_object_mut().unwrap().remove(field);
        bad_bodies.push(o.to_string());
        o[field] = json!("");
        bad_bodies.push(o.to_string());
    }
    // clientIp not an IP or CIDR; a path without a key path.
    for ip in ["not-an-ip", "300.1.1.1", "198.51.100.7/33", "198.51.100"] {
        bad_bodies.push(body("u1", &v.playlist, ip, CHROME));
    }
    for path in ["/index.m3u8", "https://site.example/", "/"] {
        bad_bodies.push(body("u1", path, "198.51.100.7", CHROME));
    }
    for b in &bad_bodies {
        let r = admit_raw(&p, Some(&bearer), b).await;
        assert_eq!(r.status, 400, "body {b:?}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
    }
    // Nothing was admitted by the refused requests.
    let viewer = Viewer::new("198.51.100.7", CHROME);
    viewer.get(&p, &v.seg0).await.assert_text(403, DENY_PATH);

    // A numeric uid (as some site backends send it) is accepted.
    let r = admit_raw(
        &p,
        Some(&bearer),
        &json!({"uid": 12345, "path": v.playlist, "clientIp": "192.0.2.1", "UserAgent": CHROME})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // 200 and its fields.
    let r = admit_raw(&p, Some(&bearer), &good).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert!(j["message"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
    assert_eq!(j["key_path"], "abc");
    assert_eq!(j["ip_pattern"], "198.51.100.0/24");
    let examples = j["cidr_examples"].as_array().expect("cidr_examples");
    assert!(!examples.is_empty());
    for e in examples {
        let ip: IpAddr = e.as_str().unwrap().parse().unwrap();
        let IpAddr::V4(ip) = ip else { panic!("{ip}") };
        assert_eq!(ip.octets()[..3], [198, 51, 100], "{j}");
    }
    assert_eq!(j["ua_hash"], ua_hash(CHROME).as_str());
    assert_eq!(j["ttl"], 1800);
    assert_eq!(j["patterns_merged"], 1);
    assert_eq!(j["patterns_new"], 1);
    assert_eq!(j["multi_path_info"]["max_paths_per_cidr"], 3);
    assert_eq!(j["multi_path_info"]["current_path"], "abc");
    assert_eq!(viewer.get(&p, &v.seg0).await.status, 200);
    if let Some(redis) = &env.redis {
        let key = format!("ip_cidr_access:198.51.100.0_24:{}", ua_hash(CHROME));
        let ttl: i64 = redis.cli(&["TTL", &key]).parse().unwrap();
        assert!(ttl > 1700 && ttl <= 1800, "entry TTL {ttl}");
    }

    // Re-admission from a neighbour of the same /24: same pattern, nothing new.
    let r = admit_raw(
        &p,
        Some(&bearer),
        &body("u1", "/files/vod/def/index.m3u8", "198.51.100.99", CHROME),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["patterns_new"], 0);
    assert_eq!(j["patterns_merged"], 1);
    assert_eq!(j["multi_path_info"]["current_path"], "def");
}

/// Up to 3 key paths per (network, UA); the 4th drops the oldest; re-adding refreshes.
async fn whitelist_fifo(kind: Kind) {
    let env = Env::new(kind).await;
    let vids: Vec<Video> = (1..=5)
        .map(|i| Video::put(&env.origin, &format!("k{i}")))
        .collect();
    let p = env.start(&env.config());
    let viewer = Viewer::new("198.51.100.7", CHROME);
    let status = |i: usize| {
        let viewer = viewer.clone();
        let seg = vids[i - 1].seg0.clone();
        let p = &p;
        async move { viewer.get(p, &seg).await.status }
    };

    for i in 1..=3 {
        viewer.admit(&p, "u1", &vids[i - 1].playlist).await;
    }
    for i in 1..=3 {
        assert_eq!(status(i).await, 200, "k{i}");
    }
    let j = viewer.admit(&p, "u1", &vids[3].playlist).await;
    assert_eq!(j["multi_path_info"]["current_path"], "k4");
    assert_eq!(status(1).await, 403, "k1 is the oldest and must be dropped");
    for i in 2..=4 {
        assert_eq!(status(i).await, 200, "k{i}");
    }
    // Re-adding k2 makes it the newest, so k3 is dropped next.
    viewer.admit(&p, "u1", &vids[1].playlist).await;
    viewer.admit(&p, "u1", &vids[4].playlist).await;
    assert_eq!(
        status(3).await,
        403,
        "k3 must be dropped after k2 was refreshed"
    );
    for i in [2, 4, 5] {
        assert_eq!(status(i).await, 200, "k{i}");
    }
    assert_eq!(status(1).await, 403);
}

/// Concurrent admissions of one entry all land.
async fn concurrent_admissions(kind: Kind) {
    let env = Env::new(kind).await;
    let vids: Vec<Video> = (1..=3)
        .map(|i| Video::put(&env.origin, &format!("c{i}")))
        .collect();
    let p = env.start(&env.config());
    let viewer = Viewer::new("198.51.100.7", CHROME);
    for _round in 0..3 {
        futures_util::future::join_all(vids.iter().map(|v| viewer.admit(&p, "u1", &v.playlist)))
            .await;
        for v in &vids {
            assert_eq!(viewer.get(&p, &v.seg0).await.status, 200, "{}", v.kp);
        }
    }
}

/// `auth.safe_key_redirect_base`: an allowed `enc.key` request is redirected.
async fn safe_key_redirect(kind: Kind) {
    let env = Env::new(kind).await;
    let v = Video::put(&env.origin, "abc");
    let p = env.start(
        &env.config()
            .auth("safe_key_redirect_base = \"https://keys.example/k/\""),
    );
    let viewer = Viewer::new("198.51.100.7", CHROME);
    // Not admitted: refused, not redirected.
    viewer.get(&p, &v.key).await.assert_text(403, DENY_PATH);
    viewer.admit(&p, "u1", &v.playlist).await;
    let accepted = env
        .origin
        .state
        .accepted
        .load(std::sync::atomic::Ordering::SeqCst);
    for path in [v.key.clone(), "/files/vod/abc/enc%2Ekey".to_string()] {
        let r = viewer.get(&p, &path).await;
        assert_eq!(r.status, 302, "{path}: {}", r.text());
        assert_eq!(
            r.header("location").as_deref(),
            Some("https://keys.example/k/files/vod/abc/enc.key"),
            "{path}"
        );
        assert_eq!(
            r.header("cache-control").as_deref(),
            Some("no-cache, no-store, must-revalidate")
        );
        assert!(r.body.is_empty());
    }
    assert_eq!(
        env.origin
            .state
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst),
        accepted,
        "a redirected key must not be fetched from the origin"
    );
    // Key paths with characters that are not literal in a URI: the Location is still
    // a URI naming the same path (so `#`, `?`, `%`, spaces and UTF-8 survive).
    let viewer2 = Viewer::new("203.0.113.5", CHROME);
    for kp_raw in ["a%20b", "x%23y", "q%3Fr", "p%25c", "vid%C3%A9"] {
        let decoded = percent_encoding::percent_decode_str(kp_raw)
            .decode_utf8()
            .unwrap()
            .into_owned();
        let adm = viewer2
            .admit(&p, "u1", &format!("/files/vod/{kp_raw}/index.m3u8"))
            .await;
        assert_eq!(adm["key_path"], decoded.as_str());
        let r = viewer2
            .get(&p, &format!("/files/vod/{kp_raw}/enc.key"))
            .await;
        assert_eq!(r.status, 302, "{kp_raw}: {}", r.text());
        let location = r.headers.get("location").map(|v| v.as_bytes().to_vec());
        assert_eq!(
            location.as_deref().map(String::from_utf8_lossy).as_deref(),
            Some(&*format!(
                "https://keys.example/k/files/vod/{kp_raw}/enc.key"
            )),
            "{kp_raw}"
        );
    }
    // Other files are still proxied.
    let r = viewer.get(&p, &v.seg0).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == v.seg0_body);
    let r = viewer.get(&p, &sign("u1", &v.playlist)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `X-Forwarded-For` / `X-Real-IP` only from peers in `server.trusted_proxies`.
async fn forwarded_for_trust(kind: Kind) {
    let env = Env::new(kind).await;
    let v = Video::put(&env.origin, "abc");
    // p1 trusts exactly 127.0.0.1; p0 trusts nobody (the default). No segment cache:
    // every request must reach the origin to show the address it was sent.
    let no_cache = "[cache]\nmax_bytes = 0";
    let p1 = env.start(&env.config().tail(no_cache));
    let p0 = env.start(
        &ProxyConfig {
            store_url: env.store_url(),
            ..ProxyConfig::default()
        }
        .tail(no_cache),
    );
    for p in [&p1, &p0] {
        admit(p, "u1", &v.playlist, "198.51.100.7", CHROME).await;
    }
    let lo1 = http_client(None);
    let lo2 = http_client(Some("127.0.0.2".parse().unwrap()));
    let get = |c: &reqwest::Client, p: &Proxy, headers: &[(&str, &str)]| {
        let mut rb = c.get(p.url(&v.seg0)).header("user-agent", CHROME);
        for (k, val) in headers {
            rb = rb.header(*k, *val);
        }
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    let xff = [("x-forwarded-for", "198.51.100.7")];
    let xri = [("x-real-ip", "198.51.100.7")];

    // Untrusted peers: a forged whitelisted address does not pass.
    assert_eq!(get(&lo1, &p0, &xff).await, 403);
    assert_eq!(get(&lo1, &p0, &xri).await, 403);
    assert_eq!(get(&lo2, &p1, &xff).await, 403);
    assert_eq!(get(&lo2, &p1, &xri).await, 403);

    // A trusted peer is believed: its X-Forwarded-For chain, else X-Real-IP.
    // The rightmost address that is not a trusted proxy is the client (SPEC §2 step
    // 1): whatever the viewer wrote to its left is never believed.
    assert_eq!(
        get(&lo1, &p1, &[("x-forwarded-for", "198.51.100.7, 10.9.9.9")]).await,
        403
    );
    assert_eq!(
        get(&lo1, &p1, &[("x-forwarded-for", "10.9.9.9, 198.51.100.7")]).await,
        200
    );
    assert_eq!(env.origin_saw_xff(), "198.51.100.7");
    assert_eq!(get(&lo1, &p1, &xri).await, 200);
    assert_eq!(env.origin_saw_xff(), "198.51.100.7");
    assert_eq!(
        get(&lo1, &p1, &[("x-forwarded-for", "198.51.101.7")]).await,
        403,
        "a trusted peer's forwarded address must itself be admitted"
    );

    // An untrusted peer is judged (and reported to the origin) by its own address.
    for p in [&p1, &p0] {
        admit(p, "u2", &v.playlist, "127.0.0.2", CHROME).await;
    }
    assert_eq!(
        get(&lo2, &p1, &[("x-forwarded-for", "203.0.113.99")]).await,
        200
    );
    assert_eq!(env.origin_saw_xff(), "127.0.0.2");
    assert_eq!(
        get(&lo1, &p0, &[("x-forwarded-for", "203.0.113.99")]).await,
        200
    );
    assert_eq!(env.origin_saw_xff(), "127.0.0.1");
}

/// A forged cookie, or a real one replayed from another IP, UA or video, finds no
/// session: the request gets a fresh session instead.
async fn cookie_not_transferable(kind: Kind) {
    let env = Env::new(kind).await;
    let v = Video::put(&env.origin, "abc");
    let w = Video::put(&env.origin, "def");
    let p = env.start(&env.config());
    let owner = Viewer::new("198.51.100.7", CHROME);
    owner.admit(&p, "u1", &v.playlist).await;
    owner.admit(&p, "u1", &w.playlist).await;
    admit(&p, "u1", &v.playlist, "198.51.100.7", FIREFOX).await;
    let seg = format!("{}?uid=u1", v.seg0);

    let r = owner.get(&p, &seg).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c1 = r.session_cookie().expect("new session").value;
    // Control: its owner's session is reused (no new cookie).
    let r = owner.with_cookie(&c1).get(&p, &seg).await;
    assert_eq!(r.status, 200);
    assert!(
        r.session_cookie().is_none(),
        "owner's session must be reused"
    );

    let fresh = |r: Resp, why: &str, not: &str| {
        assert_eq!(r.status, 200, "{why}: {}", r.text());
        let c = r
            .session_cookie()
            .unwrap_or_else(|| panic!("{why}: the cookie was honoured"));
        assert_ne!(c.value, not, "{why}");
    };
    // Forged cookies (unknown uuid, not a uuid at all).
    let forged = uuid::Uuid::new_v4().to_string();
    let r = Viewer::new("198.51.100.8", CHROME)
        .with_cookie(&forged)
        .get(&p, &seg)
        .await;
    fresh(r, "forged uuid", &forged);
    let r = Viewer::new("198.51.100.11", CHROME)
        .with_cookie("session:*")
        .get(&p, &seg)
        .await;
    fresh(r, "garbage cookie", "session:*");
    // The owner's cookie from another IP, with another UA, for another video.
    let r = Viewer::new("198.51.100.9", CHROME)
        .with_cookie(&c1)
        .get(&p, &seg)
        .await;
    fresh(r, "replayed from another IP", &c1);
    let r = Viewer::new("198.51.100.7", FIREFOX)
        .with_cookie(&c1)
        .get(&p, &seg)
        .await;
    fresh(r, "replayed with another UA", &c1);
    let r = owner
        .with_cookie(&c1)
        .get(&p, &format!("{}?uid=u1", w.seg0))
        .await;
    fresh(r, "replayed for another key path", &c1);

    // A thief's playlist is counted under the thief's uid, not the cookie's.
    let thief = Viewer::new("198.51.100.12", CHROME).with_cookie(&c1);
    let url = sign("u-thief", &v.playlist);
    let r = thief.get(&p, &url).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.session_cookie().is_some_and(|c| c.value != c1));
    thief
        .get(&p, &url)
        .await
        .assert_text(403, &limit_text("u-thief"));
}

/// CORS: pre-flight for allowed origins, our headers on answers, the origin's never.
async fn cors(kind: Kind) {
    let env = Env::new(kind).await;
    let v = Video::put(&env.origin, "abc");
    let p = env.start(
        &env.config()
            .tail("[cors]\nallow_origins = [\"https://player.example\"]"),
    );
    let viewer = Viewer::new("198.51.100.7", CHROME);
    viewer.admit(&p, "u1", &v.playlist).await;
    let c = http_client(None);
    let preflight = |origin: Option<&'static str>| {
        let mut rb = c
            .request(reqwest::Method::OPTIONS, p.url(&v.seg0))
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "range");
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        async move {
            let r = rb.send().await.unwrap();
            (r.status().as_u16(), r.headers().clone())
        }
    };

    let (status, h) = preflight(Some("https://player.example")).await;
    assert_eq!(status, 204);
    let hv =
        |h: &reqwest::header::HeaderMap, n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        hv(&h, "access-control-allow-origin").as_deref(),
        Some("https://player.example")
    );
    let methods = hv(&h, "access-control-allow-methods").expect("allow-methods");
    assert!(
        methods.contains("GET") && methods.contains("HEAD"),
        "{methods}"
    );
    let allowed = hv(&h, "access-control-allow-headers").expect("allow-headers");
    assert!(allowed.to_ascii_lowercase().contains("range"), "{allowed}");
    assert!(hv(&h, "access-control-max-age").is_some());
    assert_eq!(
        hv(&h, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(preflight(Some("https://evil.example")).await.0, 403);
    assert_eq!(preflight(None).await.0, 403);

    let acao = |r: &Resp| -> Vec<String> {
        r.headers
            .get_all("access-control-allow-origin")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    // Allowed origin: our header, exactly once, never the origin's own.
    let r = viewer
        .get_with(&p, &v.seg0, &[("origin", "https://player.example")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(acao(&r), ["https://player.example"]);
    assert!(r.header("access-control-expose-headers").is_some());
    // Origin 404 (which carries its own `*`): ours only.
    let r = viewer
        .get_with(
            &p,
            "/files/vod/abc/missing.ts",
            &[("origin", "https://player.example")],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(acao(&r), ["https://player.example"]);
    // Refusals are readable by the allowed origin too.
    let r = Viewer::new("198.51.101.1", CHROME)
        .get_with(&p, &v.seg0, &[("origin", "https://player.example")])
        .await;
    r.assert_text(403, DENY_PATH);
    assert_eq!(acao(&r), ["https://player.example"]);
    // Other origins, and requests without Origin: no CORS header at all.
    for extra in [&[("origin", "https://evil.example")][..], &[][..]] {
        let r = viewer.get_with(&p, &v.seg0, extra).await;
        assert_eq!(r.status, 200);
        assert!(acao(&r).is_empty(), "{extra:?}: {:?}", acao(&r));
        assert!(r.header("access-control-allow-credentials").is_none());
        let r = viewer
            .get_with(&p, "/files/vod/abc/missing.ts", extra)
            .await;
        assert_eq!(r.status, 404);
        assert!(acao(&r).is_empty(), "origin CORS leaked: {:?}", acao(&r));
    }
}

/// Per-class limits and windows from the config, and a per-browser override.
async fn playlist_limits(kind: Kind) {
    let env = Env::new(kind).await;
    let v = Video::put(&env.origin, "abc");
    let p = env.start(&env.config().tail(
        "[auth.playlist_limits]\n\
         desktop_browser = { limit = 2, window_s = 111 }\n\
         unknown = { limit = 1, window_s = 1 }\n\
         browsers = { firefox = 3 }",
    ));
    // Fetches the same signed URL `n` times; returns the statuses.
    async fn fetch_n(p: &Proxy, viewer: &Viewer, url: &str, n: usize) -> Vec<u16> {
        let mut out = Vec::new();
        for _ in 0..n {
            let r = viewer.get(p, url).await;
            if r.status != 200 {
                assert_eq!(r.text(), limit_text("u1"));
            }
            out.push(r.status);
        }
        out
    }
    let ip = "198.51.100.7";
    // The counters are per (uid, URL or signed path + expires + token, IP), whatever
    // the UA: another Host alone no longer keeps counters apart (SPEC §4), so each
    // viewer gets its own signed URL (another `expires`) and its own Host.
    let chrome = Viewer::new(ip, CHROME).with_host("video.example");
    let firefox = Viewer::new(ip, FIREFOX).with_host("ff.example");
    let curl = Viewer::new(ip, CURL).with_host("curl.example");
    let android = Viewer::new(ip, ANDROID).with_host("android.example");
    let odd = Viewer::new(ip, ODD_PLAYER).with_host("odd.example");
    for viewer in [&chrome, &firefox, &curl, &android, &odd] {
        viewer.admit(&p, "u1", &v.playlist).await;
    }
    let base = now() + 3600;
    let urls: Vec<String> = (0..5)
        .map(|i| sign_expiring_at("u1", &v.playlist, base + i))
        .collect();

    // desktop_browser limit 2: the third request is denied.
    assert_eq!(fetch_n(&p, &chrome, &urls[0], 3).await, [200, 200, 403]);
    // firefox (a desktop browser) has its own limit 3.
    assert_eq!(
        fetch_n(&p, &firefox, &urls[1], 4).await,
        [200, 200, 200, 403]
    );
    // download tools and mobile browsers keep the default limit 1.
    assert_eq!(fetch_n(&p, &curl, &urls[2], 2).await, [200, 403]);
    assert_eq!(fetch_n(&p, &android, &urls[3], 2).await, [200, 403]);

    // The counter's window is the class's: desktop 111 s.
    if let Some(redis) = &env.redis {
        let key = count_key("u1", &format!("http://video.example{}", urls[0]), ip);
        assert_eq!(redis.cli(&["GET", &key]), "3");
        let ttl: i64 = redis.cli(&["TTL", &key]).parse().unwrap();
        assert!(ttl > 60 && ttl <= 111, "window TTL {ttl}");
    }

    // unknown: limit 1 in a 1 s window; once the window has passed, allowed again.
    assert_eq!(fetch_n(&p, &odd, &urls[4], 2).await, [200, 403]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fetch_n(&p, &odd, &urls[4], 2).await, [200, 403]);
    // The desktop window (111 s) has not passed: still denied.
    assert_eq!(fetch_n(&p, &chrome, &urls[0], 1).await, [403]);
}

mod redis_only {
    use super::*;

    fn ttl(r: &RedisServer, key: &str) -> i64 {
        r.cli(&["TTL", key]).parse().unwrap()
    }

    fn get_json(r: &RedisServer, key: &str) -> Value {
        let raw = r.cli(&["GET", key]);
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{key}: {e}: {raw:?}"))
    }

    /// Polls `f` until it returns true (deferred store writes finish after the answer).
    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !f() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn assert_int_ts(v: &Value, what: &str) {
        assert!(
            v.is_i64() || v.is_u64(),
            "{what} must be a JSON integer: {v}"
        );
        let t = v.as_i64().unwrap();
        let n = now() as i64;
        assert!((n - 300..=n + 5).contains(&t), "{what} = {t}, now {n}");
    }

    /// Redis killed → every decision fails closed (503), `/health` 503, admission
    /// 503; paused → the same after the operation timeout; back → works again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_down_fails_closed() {
        let mut env = Env::new(Kind::Redis).await;
        let v = Video::put(&env.origin, "abc");
        // With the outage grace off every request fails closed (the grace is
        // tests/faults.rs's subject).
        let p = env.start(
            &env.config()
                .store("op_timeout_ms = 500\noutage_grace_s = 0"),
        );
        let viewer = Viewer::new("198.51.100.7", CHROME);
        viewer.admit(&p, "u1", &v.playlist).await;
        let url = sign("u1", &v.playlist);
        assert_eq!(viewer.get(&p, &url).await.status, 200);
        assert_eq!(viewer.get(&p, &v.seg0).await.status, 200);

        // Frozen: operations time out.
        env.redis.as_mut().unwrap().pause();
        viewer.get(&p, &v.seg0).await.assert_text(503, STORE_DOWN);
        let url2 = sign("u2", &v.playlist);
        viewer.get(&p, &url2).await.assert_text(503, STORE_DOWN);
        assert_eq!(health(&p).await.0, 503);
        env.redis.as_mut().unwrap().resume();
        assert_eq!(viewer.get(&p, &v.seg0).await.status, 200);

        // Killed.
        env.redis.as_mut().unwrap().stop();
        viewer.get(&p, &v.seg0).await.assert_text(503, STORE_DOWN);
        viewer.get(&p, &url2).await.assert_text(503, STORE_DOWN);
        viewer.get(&p, &url).await.assert_text(503, STORE_DOWN);
        let (status, h) = health(&p).await;
        assert_eq!(status, 503);
        assert_eq!(h["store"]["reachable"], false);
        let r = admit_raw(
            &p,
            Some(&format!("Bearer {WL_KEY}")),
            &json!({"uid": "u1", "path": v.playlist, "clientIp": "198.51.100.7", "UserAgent": CHROME})
                .to_string(),
        )
        .await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.json()["error"].is_string());
        // Files that skip validation do not need the store.
        env.origin.put("vod/abc/poster.png", "png");
        assert_eq!(
            viewer.get(&p, "/files/vod/abc/poster.png").await.status,
            200
        );

        // Back (empty): health recovers; the lost whitelist still refuses, not allows.
        env.redis.as_mut().unwrap().restart();
        let deadline = Instant::now() + Duration::from_secs(30);
        while health(&p).await.0 != 200 {
            assert!(Instant::now() < deadline, "store never came back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        viewer.get(&p, &v.seg0).await.assert_text(403, DENY_PATH);
        viewer.admit(&p, "u1", &v.playlist).await;
        assert_eq!(viewer.get(&p, &v.seg0).await.status, 200);
        let r = viewer.get(&p, &url2).await;
        assert_eq!(r.status, 200, "{}", r.text());
        viewer
            .get(&p, &url2)
            .await
            .assert_text(403, &limit_text("u2"));
    }

    /// A proxy started while Redis is down serves (fail closed) and recovers once
    /// Redis is up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_down_at_start() {
        let origin = TestOrigin::start().await;
        let v = Video::put(&origin, "abc");
        let port = support::redis::free_port();
        let p = ProxyConfig::trusting_loopback(&format!("redis://127.0.0.1:{port}"))
            .store("op_timeout_ms = 500")
            .start(&origin.url());
        let viewer = Viewer::new("198.51.100.7", CHROME);
        assert_eq!(health(&p).await.0, 503);
        viewer.get(&p, &v.seg0).await.assert_text(503, STORE_DOWN);
        viewer
            .get(&p, &sign("u1", &v.playlist))
            .await
            .assert_text(503, STORE_DOWN);

        let _redis = RedisServer::builder().port(port).start();
        let deadline = Instant::now() + Duration::from_secs(30);
        while health(&p).await.0 != 200 {
            assert!(Instant::now() < deadline, "store never came back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        viewer.get(&p, &v.seg0).await.assert_text(403, DENY_PATH);
        viewer.admit(&p, "u1", &v.playlist).await;
        let url = sign("u1", &v.playlist);
        assert_eq!(viewer.get(&p, &url).await.status, 200);
        viewer
            .get(&p, &url)
            .await
            .assert_text(403, &limit_text("u1"));
    }

    /// Entries, sessions, indexes and counters written as the Python version writes
    /// them (SPEC §6) decide the Rust proxy's answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn python_written_state_is_honoured() {
        let env = Env::new(Kind::Redis).await;
        let r = env.redis.as_ref().unwrap();
        let vids: Vec<Video> = ["pyvid", "pyvid2", "pyvid3"]
            .iter()
            .map(|k| Video::put(&env.origin, k))
            .collect();
        let p = env.start(&env.config());
        let ip = "198.51.100.9";
        let uah = ua_hash(CHROME);
        let t0 = 1_700_000_000i64;
        let entry = json!({
            "uid": "py-user",
            "key_path": "pyvid3",
            "paths": [
                {"key_path": "pyvid", "created_at": t0},
                // Python may write float timestamps; read leniently.
                {"key_path": "pyvid2", "created_at": t0 as f64 + 1.5},
                {"key_path": "pyvid3", "created_at": t0 + 2},
            ],
            "ip_patterns": ["198.51.100.0/24"],
            "user_agent": CHROME,
            "created_at": t0,
            "worker_pid": 4242,
            "py_extra": {"kept": true},
        });
        r.cli(&[
            "SET",
            &format!("ip_cidr_access:198.51.100.0_24:{uah}"),
            &entry.to_string(),
            "EX",
            "3600",
        ]);
        let viewer = Viewer::new(ip, CHROME);
        let unlisted = Video::put(&env.origin, "notlisted");
        for v in &vids {
            assert_eq!(viewer.get(&p, &v.seg0).await.status, 200, "{}", v.kp);
        }
        viewer
            .get(&p, &unlisted.seg0)
            .await
            .assert_text(403, DENY_PATH);

        // An entry with an empty uid: a playlist without uid has no effective uid.
        let odd_hash = ua_hash(ODD_PLAYER);
        let empty_uid = json!({
            "uid": "", "key_path": "pyvid", "paths": [{"key_path": "pyvid", "created_at": t0}],
            "ip_patterns": ["198.51.100.0/24"], "user_agent": ODD_PLAYER, "created_at": t0, "worker_pid": 1,
        });
        r.cli(&[
            "SET",
            &format!("ip_cidr_access:198.51.100.0_24:{odd_hash}"),
            &empty_uid.to_string(),
            "EX",
            "3600",
        ]);
        let odd = Viewer::new(ip, ODD_PLAYER);
        odd.get(&p, &vids[0].playlist)
            .await
            .assert_text(403, NO_UID);
        // The order of the checks: no uid comes before missing parameters and tokens.
        odd.get(&p, &format!("{}?expires=1&token=x", vids[0].playlist))
            .await
            .assert_text(403, NO_UID);

        let session = |uid: &str, kp: &str, ip: &str, count: i64| {
            json!({
                "uid": uid, "client_ip": ip, "user_agent": CHROME,
                "path": format!("/files/vod/{kp}/index.m3u8"), "key_path": kp,
                "created_at": t0, "last_activity": t0, "worker_pid": 4242,
                "access_count": count, "session_type": "m3u8", "py_only": "kept",
            })
            .to_string()
        };

        // A Python session recorded for another IP is not used, even through its index
        // (checked before anything else makes a session of this viewer the latest).
        let s4 = uuid::Uuid::new_v4().to_string();
        r.cli(&[
            "SET",
            &format!("session:{s4}"),
            &session("py-other", "pyvid", "198.51.100.250", 1),
            "EX",
            "7200",
        ]);
        r.cli(&[
            "SET",
            &format!("ip_ua_session:{ip}:{uah}:py-other:pyvid"),
            &s4,
            "EX",
            "7200",
        ]);
        let rr = viewer
            .get(&p, &format!("{}?uid=py-other", vids[0].seg0))
            .await;
        assert_eq!(rr.status, 200);
        assert!(
            rr.session_cookie().is_some_and(|c| c.value != s4),
            "a session recorded for another IP must not be used"
        );

        // (a) A Python session found through its ip_ua_session index: reused (no new
        // cookie), extended (TTLs reset, last_activity and access_count updated).
        let s1 = uuid::Uuid::new_v4().to_string();
        r.cli(&[
            "SET",
            &format!("session:{s1}"),
            &session("py-user", "pyvid", ip, 3),
            "EX",
            "7200",
        ]);
        r.cli(&[
            "SET",
            &format!("ip_ua_session:{ip}:{uah}:py-user:pyvid"),
            &s1,
            "EX",
            "100",
        ]);
        r.cli(&[
            "SET",
            &format!("user_active_session:py-user:{ip}"),
            &s1,
            "EX",
            "100",
        ]);
        let rr = viewer
            .get(&p, &format!("{}?uid=py-user", vids[0].seg0))
            .await;
        assert_eq!(rr.status, 200, "{}", rr.text());
        assert!(
            rr.session_cookie().is_none(),
            "the Python session must be reused"
        );
        let key = format!("session:{s1}");
        eventually("session extended", || {
            get_json(r, &key)["access_count"] == 4
        })
        .await;
        let s = get_json(r, &key);
        assert_int_ts(&s["last_activity"], "last_activity");
        assert_eq!(s["created_at"], t0);
        assert_eq!(
            (s["worker_pid"].clone(), s["py_only"].clone()),
            (json!(4242), json!("kept"))
        );
        assert_eq!(s["session_type"], "m3u8");
        assert!(ttl(r, &key) > 7000);
        eventually("indexes extended", || {
            ttl(r, &format!("ip_ua_session:{ip}:{uah}:py-user:pyvid")) > 7000
                && ttl(r, &format!("user_active_session:py-user:{ip}")) > 14000
        })
        .await;
        assert_eq!(
            r.cli(&["GET", &format!("user_active_session:py-user:{ip}")]),
            s1
        );

        // A playlist counter the Python version already counted: over the limit.
        let host = "video.example";
        let url = sign("py-user", &vids[0].playlist);
        r.cli(&[
            "SET",
            &count_key("py-user", &format!("http://{host}{url}"), ip),
            "1",
            "EX",
            "120",
        ]);
        viewer
            .with_host(host)
            .get(&p, &url)
            .await
            .assert_text(403, &limit_text("py-user"));

        // (c) A Python session known only by its cookie: honoured from its own IP and
        // UA, not from another IP.
        let s2 = uuid::Uuid::new_v4().to_string();
        r.cli(&[
            "SET",
            &format!("session:{s2}"),
            &session("py-cookie", "pyvid2", ip, 1),
            "EX",
            "7200",
        ]);
        let seg2 = format!("{}?uid=py-cookie", vids[1].seg0);
        let rr = Viewer::new("198.51.100.10", CHROME)
            .with_cookie(&s2)
            .get(&p, &seg2)
            .await;
        assert_eq!(rr.status, 200);
        assert!(
            rr.session_cookie().is_some_and(|c| c.value != s2),
            "a cookie replayed from another IP must not be honoured"
        );
        let rr = viewer.with_cookie(&s2).get(&p, &seg2).await;
        assert_eq!(rr.status, 200);
        assert!(
            rr.session_cookie().is_none(),
            "the owner's cookie must be honoured"
        );
        let key2 = format!("session:{s2}");
        eventually("cookie session extended", || {
            get_json(r, &key2)["access_count"] == 2
        })
        .await;

        // (d) The whitelist uid's Python session, for a request with neither uid nor
        // cookie.
        let s3 = uuid::Uuid::new_v4().to_string();
        r.cli(&[
            "SET",
            &format!("session:{s3}"),
            &session("py-user", "pyvid3", ip, 7),
            "EX",
            "7200",
        ]);
        r.cli(&[
            "SET",
            &format!("ip_ua_session:{ip}:{uah}:py-user:pyvid3"),
            &s3,
            "EX",
            "7200",
        ]);
        let rr = viewer.get(&p, &vids[2].seg0).await;
        assert_eq!(rr.status, 200);
        assert!(rr.session_cookie().is_none());
        let key3 = format!("session:{s3}");
        eventually("whitelist-uid session extended", || {
            get_json(r, &key3)["access_count"] == 8
        })
        .await;

        // An older entry with `key_path` and no `paths` admits that key path alone.
        let legacy = json!({
            "uid": "py-old", "key_path": "pyvid", "ip_patterns": ["198.51.100.0/24"],
            "user_agent": FIREFOX, "created_at": t0, "worker_pid": 1,
        });
        r.cli(&[
            "SET",
            &format!("ip_cidr_access:198.51.100.0_24:{}", ua_hash(FIREFOX)),
            &legacy.to_string(),
            "EX",
            "3600",
        ]);
        let ff = Viewer::new(ip, FIREFOX);
        assert_eq!(ff.get(&p, &vids[0].seg0).await.status, 200);
        ff.get(&p, &vids[1].seg0).await.assert_text(403, DENY_PATH);

        // A Rust admission merges into the Python entry: the oldest path goes, unknown
        // fields stay, timestamps are written back as integers.
        let newer = Video::put(&env.origin, "pynew");
        let j = viewer.admit(&p, "py-user2", &newer.playlist).await;
        assert_eq!(
            (j["patterns_new"].clone(), j["patterns_merged"].clone()),
            (json!(0), json!(1))
        );
        let wl_key = format!("ip_cidr_access:198.51.100.0_24:{uah}");
        let e = get_json(r, &wl_key);
        let kps: Vec<&str> = e["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["key_path"].as_str().unwrap())
            .collect();
        assert_eq!(kps, ["pyvid2", "pyvid3", "pynew"], "{e}");
        for p in e["paths"].as_array().unwrap() {
            assert!(p["created_at"].is_i64() || p["created_at"].is_u64(), "{e}");
        }
        assert_eq!(e["created_at"], t0);
        assert_eq!(e["uid"], "py-user2");
        assert_eq!(e["key_path"], "pynew");
        assert_eq!(e["py_extra"], json!({"kept": true}));
        assert_eq!(e["ip_patterns"], json!(["198.51.100.0/24"]));
        assert!(ttl(r, &wl_key) > 3500);
        viewer
            .get(&p, &vids[0].seg0)
            .await
            .assert_text(403, DENY_PATH);
        assert_eq!(viewer.get(&p, &newer.seg0).await.status, 200);
        assert_eq!(viewer.get(&p, &vids[1].seg0).await.status, 200);
    }

    /// What FileProxy writes is what the Python version reads (SPEC §6): keys, JSON
    /// shapes with integer timestamps, TTLs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn written_state_matches_python_shapes() {
        let env = Env::new(Kind::Redis).await;
        let r = env.redis.as_ref().unwrap();
        let v = Video::put(&env.origin, "rsvid");
        let p = env.start(&env.config());
        let ip = "203.0.113.20";
        let uah = ua_hash(CHROME);
        let viewer = Viewer::new(ip, CHROME).with_host("video.example");
        viewer.admit(&p, "rs-user", &v.playlist).await;

        let wl_key = format!("ip_cidr_access:203.0.113.0_24:{uah}");
        let e = get_json(r, &wl_key);
        assert_eq!(e["uid"], "rs-user");
        assert_eq!(e["key_path"], "rsvid");
        assert_eq!(e["user_agent"], CHROME);
        assert_eq!(e["ip_patterns"], json!(["203.0.113.0/24"]));
        let paths = e["paths"].as_array().expect("paths");
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0]["key_path"], "rsvid");
        assert_int_ts(&paths[0]["created_at"], "paths[0].created_at");
        assert_int_ts(&e["created_at"], "created_at");
        assert!(e["worker_pid"].is_u64() || e["worker_pid"].is_i64(), "{e}");
        let t = ttl(r, &wl_key);
        assert!(t > 3500 && t <= 3600, "entry TTL {t}");

        let url = sign("rs-user", &v.playlist);
        let resp = viewer.get(&p, &url).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let id = resp.session_cookie().expect("cookie").value;

        let s_key = format!("session:{id}");
        let s = get_json(r, &s_key);
        let obj = s.as_object().unwrap();
        for f in [
            "uid",
            "client_ip",
            "user_agent",
            "path",
            "key_path",
            "created_at",
            "last_activity",
            "worker_pid",
            "access_count",
            "session_type",
        ] {
            assert!(obj.contains_key(f), "session lacks {f}: {s}");
        }
        assert_eq!(s["uid"], "rs-user");
        assert_eq!(s["client_ip"], ip);
        assert_eq!(s["user_agent"], CHROME);
        assert_eq!(s["path"], v.playlist);
        assert_eq!(s["key_path"], "rsvid");
        assert_int_ts(&s["created_at"], "created_at");
        assert_int_ts(&s["last_activity"], "last_activity");
        assert!(s["access_count"].is_u64(), "{s}");
        assert!(s["worker_pid"].is_u64(), "{s}");
        assert!(s["session_type"].is_string(), "{s}");
        let t = ttl(r, &s_key);
        assert!(t > 7000 && t <= 7200, "session TTL {t}");

        let idx = format!("ip_ua_session:{ip}:{uah}:rs-user:rsvid");
        assert_eq!(r.cli(&["GET", &idx]), id);
        let t = ttl(r, &idx);
        assert!(t > 7000 && t <= 7200, "ip_ua_session TTL {t}");
        let user = format!("user_active_session:rs-user:{ip}");
        assert_eq!(r.cli(&["GET", &user]), id);
        let t = ttl(r, &user);
        assert!(t > 14000 && t <= 14400, "user_active_session TTL {t}");

        let count = count_key("rs-user", &format!("http://video.example{url}"), ip);
        assert_eq!(r.cli(&["GET", &count]), "1");
        let t = ttl(r, &count);
        assert!(t > 60 && t <= 120, "desktop window TTL {t}");

        // After a reuse the session is still plain JSON with integer timestamps.
        assert_eq!(viewer.with_cookie(&id).get(&p, &v.seg0).await.status, 200);
        eventually("session touched", || {
            get_json(r, &s_key)["access_count"] == 2
        })
        .await;
        let s = get_json(r, &s_key);
        assert_int_ts(&s["last_activity"], "last_activity after reuse");
        assert_int_ts(&s["created_at"], "created_at after reuse");
    }

    /// Two proxy processes on one Redis act as one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_proxies_share_redis() {
        let env = Env::new(Kind::Redis).await;
        let v = Video::put(&env.origin, "abc");
        let a = env.start(&env.config());
        let b = env.start(&env.config());
        // Behind one load balancer both see the same Host.
        let viewer = Viewer::new("198.51.100.7", CHROME).with_host("video.example");

        viewer.get(&b, &v.seg0).await.assert_text(403, DENY_PATH);
        viewer.admit(&a, "u1", &v.playlist).await;
        assert_eq!(viewer.get(&b, &v.seg0).await.status, 200);

        let url = sign("u1", &v.playlist);
        let r = viewer.get(&a, &url).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let id = r.session_cookie().expect("cookie").value;
        viewer
            .with_cookie(&id)
            .get(&b, &url)
            .await
            .assert_text(403, &limit_text("u1"));
        // The session made by A is reused by B.
        let r = viewer
            .with_cookie(&id)
            .get(&b, &format!("{}?uid=u1", v.seg1))
            .await;
        assert_eq!(r.status, 200);
        assert!(r.session_cookie().is_none(), "B must reuse A's session");

        // Concurrent fetches of one fresh URL spread over both: exactly one passes.
        let url2 = sign("u2", &v.playlist);
        let answers = futures_util::future::join_all(
            (0..10).map(|i| viewer.get(if i % 2 == 0 { &a } else { &b }, &url2)),
        )
        .await;
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );

        // The FIFO of key paths spans both processes.
        let more: Vec<Video> = (2..=4)
            .map(|i| Video::put(&env.origin, &format!("k{i}")))
            .collect();
        viewer.admit(&b, "u1", &more[0].playlist).await;
        viewer.admit(&a, "u1", &more[1].playlist).await;
        viewer.admit(&b, "u1", &more[2].playlist).await;
        viewer.get(&a, &v.seg0).await.assert_text(403, DENY_PATH);
        for m in &more {
            assert_eq!(viewer.get(&a, &m.seg0).await.status, 200, "{}", m.kp);
        }
    }
}
