//! Viewer controls of SPEC §13 against the real binary: concurrent streams per uid,
//! revocation (`POST /api/revoke`) with live transfers cut, and traffic quotas — each
//! on the in-process store and on a real `redis-server`, and across two `fileproxy`
//! processes sharing one Redis.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::access::{http_client, sign, ProxyConfig, Resp, Video, Viewer, CHROME, FIREFOX};
use support::proxy::{Proxy, ADMIN_TOKEN, WL_KEY};
use support::stores::{Env, Kind};

impl Env {
    /// A proxy on this store with `[limits]` lines.
    fn start(&self, limits: &str) -> Proxy {
        self.config()
            .tail(&format!("[limits]\n{limits}"))
            .start(&self.origin.url())
    }
}

on_both_stores!(
    third_stream_refused_then_freed,
    revoke_refuses_cuts_and_is_lifted,
    revoke_one_key_path_only,
    revoke_withdraws_front_end_admissions,
    quota_refuses_until_window_ends,
);

/// `POST /api/revoke` with the right key.
async fn revoke(p: &Proxy, body: Value) -> Value {
    let r = revoke_raw(p, Some(&format!("Bearer {WL_KEY}")), &body.to_string()).await;
    assert_eq!(r.status, 200, "revoke refused: {}", r.text());
    r.json()
}

async fn revoke_raw(p: &Proxy, authorization: Option<&str>, body: &str) -> Resp {
    let mut rb = http_client(None)
        .post(p.url("/api/revoke"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = authorization {
        rb = rb.header("authorization", a);
    }
    Resp::read(rb.send().await.expect("revoke request")).await
}

async fn admin_json(p: &Proxy, path: &str) -> Value {
    let r = http_client(None)
        .get(p.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request");
    let r = Resp::read(r).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

async fn metrics(p: &Proxy) -> String {
    let r = http_client(None)
        .get(p.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("metrics");
    r.text().await.expect("metrics body")
}

fn denial_count(metrics: &str, reason: &str) -> u64 {
    let needle = format!("fileproxy_access_denials_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn streams_text(uid: &str) -> String {
    format!("Access Denied 100410 too many concurrent streams for uid:{uid}")
}

fn revoked_text(uid: &str) -> String {
    format!("Access Denied 100403 revoked uid:{uid}")
}

fn quota_text(uid: &str) -> String {
    format!("Access Denied 100429 traffic quota exceeded for uid:{uid}")
}

/// A viewer at `ip` that opens a stream of `video` as `uid` (playlist, then a segment).
async fn open_stream(p: &Proxy, ip: &str, uid: &str, video: &Video) -> Viewer {
    let v = Viewer::new(ip, CHROME);
    v.admit(p, uid, &video.playlist).await;
    let pl = v.get(p, &sign(uid, &video.playlist)).await;
    assert_eq!(pl.status, 200, "{ip}: {}", pl.text());
    let cookie = pl.session_cookie().expect("session cookie").value;
    let v = v.with_cookie(&cookie);
    assert_eq!(v.get(p, &video.seg0).await.status, 200, "{ip}: segment");
    v
}

async fn third_stream_refused_then_freed(kind: Kind) {
    let env = Env::new(kind).await;
    let video = Video::put(&env.origin, "streams1");
    let other = Video::put(&env.origin, "streams2");
    let p = env.start("max_streams_per_uid = 2\nstream_idle_s = 2");
    let a = open_stream(&p, "10.1.0.1", "su", &video).await;
    let b = open_stream(&p, "10.2.0.1", "su", &video).await;
    // A third (IP, UA, key path) of the same uid is refused, before its playlist
    // count is spent.
    let c = Viewer::new("10.3.0.1", CHROME);
    c.admit(&p, "su", &video.playlist).await;
    let signed_c = sign("su", &video.playlist);
    c.get(&p, &signed_c)
        .await
        .assert_text(403, &streams_text("su"));
    // The same viewer on another key path is another stream: refused too.
    a.admit(&p, "su", &other.playlist).await;
    a.get(&p, &other.seg0)
        .await
        .assert_text(403, &streams_text("su"));
    // Running streams are untouched; a rendition switch is the same stream.
    assert_eq!(a.get(&p, &video.seg1).await.status, 200);
    assert_eq!(b.get(&p, &video.seg0).await.status, 200);
    // Another uid is unaffected.
    let d = Viewer::new("10.4.0.1", FIREFOX);
    d.admit(&p, "other", &video.playlist).await;
    assert_eq!(d.get(&p, &video.seg0).await.status, 200);
    let view = admin_json(&p, "/debug/uid?uid=su").await;
    assert_eq!(view["streams"]["live"], 2, "{view}");
    assert_eq!(view["streams"]["max"], 2);
    // A slot frees stream_idle_s after its last request.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(c.get(&p, &signed_c).await.status, 200);
    let m = metrics(&p).await;
    assert_eq!(denial_count(&m, "stream_limit"), 2, "{m}");
    let denied = admin_json(&p, "/api/access-logs/denied").await;
    assert!(
        denied["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "stream_limit"),
        "{denied}"
    );
}

/// Reads a streaming response until it ends; returns (bytes, ended with an error).
async fn drain(resp: reqwest::Response, limit: Duration) -> (usize, bool) {
    let mut stream = resp.bytes_stream();
    let mut n = 0;
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(b))) => n += b.len(),
            Ok(Some(Err(_))) => return (n, true),
            Ok(None) => return (n, false),
            Err(_) => panic!("transfer still running after {limit:?} ({n} bytes)"),
        }
    }
}

/// Starts a never-ending transfer (`/trickle/`, key path `trickle`) for `v`.
async fn start_trickle(p: &Proxy, v: &Viewer) -> reqwest::Response {
    let r = http_client(None)
        .get(p.url("/trickle/live.ts"))
        .header("user-agent", &v.ua)
        .header("x-forwarded-for", &v.ip)
        .send()
        .await
        .expect("trickle");
    assert_eq!(r.status(), 200);
    r
}

async fn revoke_refuses_cuts_and_is_lifted(kind: Kind) {
    let env = Env::new(kind).await;
    let video = Video::put(&env.origin, "rev1");
    let p = env.start("");
    let v = open_stream(&p, "10.5.0.1", "ru", &video).await;
    v.admit(&p, "ru", "/trickle/live.ts").await;
    let live = start_trickle(&p, &v).await;
    // The key is checked before the body is read.
    let r = revoke_raw(&p, Some("Bearer wrong"), "not json").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        revoke_raw(&p, Some(&format!("Bearer {WL_KEY}")), "[]")
            .await
            .status,
        400
    );
    let ans = revoke(&p, json!({"uid": "ru"})).await;
    assert_eq!(ans["uid"], "ru");
    assert_eq!(ans["revoked"]["whitelist_paths"], 2, "{ans}");
    assert_eq!(ans["revoked"]["sessions"], 1, "{ans}");
    assert_eq!(ans["revoked"]["pairs"], 1, "{ans}");
    assert_eq!(ans["revoked"]["js_admissions"], 0, "{ans}");
    assert_eq!(ans["transfers_cut"], 1, "{ans}");
    let (_, cut) = drain(live, Duration::from_secs(10)).await;
    assert!(cut, "the live transfer ended cleanly instead of being cut");
    // Every request attributed to the uid: session cookie, whitelist viewer, token.
    v.get(&p, &video.seg0)
        .await
        .assert_text(403, &revoked_text("ru"));
    Viewer::new("10.5.0.1", CHROME)
        .get(&p, &video.seg1)
        .await
        .assert_text(403, &revoked_text("ru"));
    Viewer::new("10.5.0.1", CHROME)
        .get(&p, &sign("ru", &video.playlist))
        .await
        .assert_text(403, &revoked_text("ru"));
    let view = admin_json(&p, "/debug/uid?uid=ru").await;
    assert_eq!(view["revoked"], true, "{view}");
    assert_eq!(view["revocation"]["all"], true, "{view}");
    // Another uid on another network is unaffected.
    let w = Viewer::new("10.6.0.1", CHROME);
    w.admit(&p, "fine", &video.playlist).await;
    assert_eq!(w.get(&p, &video.seg0).await.status, 200);
    // A new admission of the uid lifts the mark.
    let adm = v.admit(&p, "ru", &video.playlist).await;
    assert_eq!(adm["revocation_lifted"], true, "{adm}");
    assert_eq!(
        Viewer::new("10.5.0.1", CHROME)
            .get(&p, &video.seg0)
            .await
            .status,
        200
    );
    assert_eq!(admin_json(&p, "/debug/uid?uid=ru").await["revoked"], false);
    let m = metrics(&p).await;
    assert_eq!(denial_count(&m, "revoked"), 3, "{m}");
}

async fn revoke_one_key_path_only(kind: Kind) {
    let env = Env::new(kind).await;
    let a = Video::put(&env.origin, "kpa");
    let b = Video::put(&env.origin, "kpb");
    let p = env.start("");
    let v = Viewer::new("10.7.0.1", CHROME);
    v.admit(&p, "ku", &a.playlist).await;
    v.admit(&p, "ku", &b.playlist).await;
    let ans = revoke(&p, json!({"uid": "ku", "key_path": "kpa"})).await;
    assert_eq!(ans["revoked"]["whitelist_paths"], 1, "{ans}");
    assert_eq!(ans["revoked"]["pairs"], 0, "{ans}");
    v.get(&p, &a.seg0)
        .await
        .assert_text(403, &revoked_text("ku"));
    assert_eq!(v.get(&p, &b.seg0).await.status, 200);
}

async fn revoke_withdraws_front_end_admissions(kind: Kind) {
    let env = Env::new(kind).await;
    let video = Video::put(&env.origin, "jsrev");
    let p = ProxyConfig::trusting_loopback(&env.store_url())
        .tail("[protect]\njs_whitelist = true\njs_whitelist_secret = \"js-secret-0123\"")
        .start(&env.origin.url());
    let v = Viewer::new("10.9.0.7", CHROME);
    let r = http_client(None)
        .post(p.url("/api/js-whitelist"))
        .bearer_auth(WL_KEY)
        .header("x-forwarded-for", &v.ip)
        .header("user-agent", &v.ua)
        .json(&json!({"uid": "ju", "jsPath": video.playlist}))
        .send()
        .await
        .expect("js admission");
    assert_eq!(r.status(), 200);
    // No path whitelist entry: the front-end admission lets the segment through.
    assert_eq!(v.get(&p, &video.seg0).await.status, 200);
    let ans = revoke(&p, json!({"uid": "ju"})).await;
    assert_eq!(ans["revoked"]["js_admissions"], 1, "{ans}");
    // Its viewer is still attributed to the revoked uid.
    v.get(&p, &video.seg0)
        .await
        .assert_text(403, &revoked_text("ju"));
}

async fn quota_refuses_until_window_ends(kind: Kind) {
    let env = Env::new(kind).await;
    let video = Video::put(&env.origin, "quota1");
    // seg0 is 4096 bytes: two of them pass 6000.
    let p = env.start("uid_quota_bytes = 6000\nuid_quota_window_s = 4");
    let v = Viewer::new("10.8.0.1", CHROME);
    v.admit(&p, "qu", &video.playlist).await;
    // Align to the start of a window so both fetches and the check share it.
    wait_window_start(4).await;
    for _ in 0..2 {
        let r = v.get(&p, &video.seg0).await;
        assert_eq!((r.status, r.body.len()), (200, 4096));
    }
    v.get(&p, &video.seg1)
        .await
        .assert_text(403, &quota_text("qu"));
    let view = admin_json(&p, "/debug/uid?uid=qu").await;
    assert_eq!(view["quota"]["used_bytes"], 8192, "{view}");
    assert_eq!(view["quota"]["exceeded"], true, "{view}");
    // The next window starts afresh.
    wait_window_start(4).await;
    assert_eq!(v.get(&p, &video.seg1).await.status, 200);
    assert_eq!(denial_count(&metrics(&p).await, "quota_exceeded"), 1);
}

/// Sleeps until just after the next multiple of `window_s` Unix seconds.
async fn wait_window_start(window_s: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let next = (now.as_secs() / window_s + 1) * window_s;
    let wait = Duration::from_secs(next) - now + Duration::from_millis(50);
    tokio::time::sleep(wait).await;
}

// ---------------------------------------------------------------------------
// Two processes on one Redis.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_streams_and_revocations() {
    let env = Env::new(Kind::Redis).await;
    let video = Video::put(&env.origin, "duo");
    let limits = "max_streams_per_uid = 3\nuid_quota_bytes = 1000000\nuid_quota_window_s = 3600";
    let p1 = env.start(limits);
    let p2 = env.start(limits);

    // Three streams: one on p1, two on p2 (a video and a live transfer).
    open_stream(&p1, "10.11.0.1", "du", &video).await;
    let on2 = open_stream(&p2, "10.12.0.1", "du", &video).await;
    on2.admit(&p2, "du", "/trickle/live.ts").await;
    let live = start_trickle(&p2, &on2).await;
    // A fourth on either process is refused.
    let c = Viewer::new("10.13.0.1", CHROME);
    c.admit(&p1, "du", &video.playlist).await;
    c.get(&p2, &video.seg0)
        .await
        .assert_text(403, &streams_text("du"));
    c.get(&p1, &video.seg0)
        .await
        .assert_text(403, &streams_text("du"));
    assert_eq!(
        admin_json(&p1, "/debug/uid?uid=du").await["streams"]["live"],
        3
    );

    // Revocation on p1: p2 refuses within 1 s and cuts its live transfer.
    let ans = revoke(&p1, json!({"uid": "du"})).await;
    assert_eq!(ans["transfers_cut"], 0, "the transfer runs on p2: {ans}");
    let revoked_at = Instant::now();
    let (_, cut) = drain(live, Duration::from_secs(10)).await;
    assert!(cut, "p2 did not cut the revoked uid's transfer");
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(revoked_at.elapsed())).await;
    on2.get(&p2, &video.seg1)
        .await
        .assert_text(403, &revoked_text("du"));
    let view = admin_json(&p2, "/debug/uid?uid=du").await;
    assert_eq!(view["revoked"], true, "{view}");
    // Lifted by an admission on p2: p1 lets the uid in again.
    on2.admit(&p2, "du", &video.playlist).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        Viewer::new("10.12.0.1", CHROME)
            .get(&p1, &video.seg0)
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sum_one_quota() {
    let env = Env::new(Kind::Redis).await;
    let video = Video::put(&env.origin, "duoq");
    let limits = "uid_quota_bytes = 6000\nuid_quota_window_s = 3600";
    let p1 = env.start(limits);
    let p2 = env.start(limits);
    let v = Viewer::new("10.21.0.1", CHROME);
    v.admit(&p1, "qq", &video.playlist).await;
    // 4096 bytes through each process: each alone is under 6000, together past it.
    assert_eq!(v.get(&p1, &video.seg0).await.body.len(), 4096);
    assert_eq!(v.get(&p2, &video.seg0).await.body.len(), 4096);
    // Each process flushes its bytes within a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for p in [&p1, &p2] {
        v.get(p, &video.seg1)
            .await
            .assert_text(403, &quota_text("qq"));
        let view = admin_json(p, "/debug/uid?uid=qq").await;
        assert_eq!(view["quota"]["used_bytes"], 8192, "{view}");
    }
}

/// Bytes delivered just before SIGTERM still reach the quota counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_bytes_flushed_at_shutdown() {
    let env = Env::new(Kind::Redis).await;
    let video = Video::put(&env.origin, "quotastop");
    let mut p = env.start("uid_quota_bytes = 1000000\nuid_quota_window_s = 86400");
    let v = Viewer::new("10.31.0.1", CHROME);
    v.admit(&p, "qs", &video.playlist).await;
    assert_eq!(v.get(&p, &video.seg0).await.body.len(), 4096);
    p.terminate();
    assert_eq!(p.wait_exit(Duration::from_secs(15)), Some(0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = format!("uid_quota:{{qs}}:{}", now / 86400);
    let redis = env.redis.as_ref().unwrap();
    assert_eq!(redis.cli(&["GET", &key]).trim(), "4096");
}
