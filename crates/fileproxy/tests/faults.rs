//! Fault injection with real processes (SPEC §11): the store paused (SIGSTOP) and
//! killed, a Redis Cluster primary killed while its replica takes over, a Sentinel
//! master killed while its replica takes over (and Sentinel with passwords that never
//! reach a log line or `/health`), the origin
//! refusing / hanging / resetting mid-body / trickling, viewers aborting en masse,
//! SIGTERM during transfers, and the spool folder on a full filesystem.
//!
//! Each case states its figure (requests failed vs expected, bytes delivered vs
//! accounted, process alive, RSS afterwards), asserts it, and prints one `FAULT |` line
//! (`cargo test --test faults -- --nocapture | grep FAULT` gives the table).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::access::{
    admin_json, admit_raw, health, http_client, sign, ProxyConfig, Video, Viewer, CURL,
};
use support::origin::TestOrigin;
use support::proxy::{access_lines, free_port, Proxy, ADMIN_TOKEN, SECRET, WL_KEY};
use support::redis::{RedisCluster, RedisSentinels, RedisServer};

/// Prints one row of the fault table.
fn figure(case: &str, text: String) {
    eprintln!("FAULT | {case} | {text}");
}

/// The proxy is alive and answers `/health` (any status); returns its RSS in MiB.
async fn alive(p: &mut Proxy) -> u64 {
    assert!(
        p.child.try_wait().ok().flatten().is_none(),
        "fileproxy exited: {}",
        p.log_text()
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), health(p))
        .await
        .expect("/health answered");
    p.rss() >> 20
}

/// The value of an unlabelled counter in `/metrics`.
/// Segments asked of the in-grace viewers during a failover, and how they were answered.
#[derive(Default)]
struct GraceTally {
    asked: usize,
    served: usize,
    other: std::collections::BTreeMap<(u16, String), usize>,
}

impl GraceTally {
    /// Every viewer asks for its video's first segment once.
    async fn round(&mut self, p: &Proxy, viewers: &[Viewer], videos: &[Video]) {
        for (v, video) in viewers.iter().zip(videos) {
            self.asked += 1;
            let r = v.get(p, &video.seg0).await;
            if r.status == 200 {
                self.served += 1;
            } else {
                *self.other.entry((r.status, r.text())).or_insert(0) += 1;
            }
        }
    }
}

/// The Sentinel master in use, from the admin `/stats` (`/health` names no address).
async fn store_master(p: &Proxy) -> Value {
    admin_json(p, "/stats").await["store"]["master"].clone()
}

async fn metric(p: &Proxy, name: &str) -> u64 {
    let text = http_client(None)
        .get(p.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Counts answers with `status` among `n` GETs of `path` by `v`.
async fn count_status(v: &Viewer, p: &Proxy, path: &str, n: usize, status: u16) -> usize {
    let mut hits = 0;
    for _ in 0..n {
        if v.get(p, path).await.status == status {
            hits += 1;
        }
    }
    hits
}

/// Counts answers with `status` among GETs of `{prefix}{i}.ts` for `i` in `0..n`.
async fn count_each(
    client: &reqwest::Client,
    p: &Proxy,
    prefix: &str,
    n: usize,
    status: u16,
) -> usize {
    let mut hits = 0;
    for i in 0..n {
        let r = client
            .get(p.url(&format!("{prefix}{i}.ts")))
            .send()
            .await
            .unwrap();
        hits += usize::from(r.status() == status);
    }
    hits
}

/// A viewer admitted for `video` who has fetched its playlist and a segment.
async fn watching(p: &Proxy, video: &Video, ip: &str, uid: &str) -> Viewer {
    let v = Viewer::new(ip, CURL);
    v.admit(p, uid, &video.playlist).await;
    let r = v.get(p, &sign(uid, &video.playlist)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(v.get(p, &video.seg0).await.status, 200);
    v
}

fn grace_proxy(store_url: &str, origin: &TestOrigin) -> Proxy {
    ProxyConfig::trusting_loopback(store_url)
        .store("op_timeout_ms = 300\noutage_grace_s = 60")
        .start(&origin.url())
}

/// Store outage (paused or killed): viewers inside the grace keep their segments and
/// keys; playlists and viewers outside the grace fail closed; /health is degraded.
async fn store_outage(case: &str, kill: bool) {
    let origin = TestOrigin::start().await;
    let video = Video::put(&origin, "vidgrace");
    let mut redis = RedisServer::start();
    let mut p = grace_proxy(&redis.url(), &origin);
    let a = watching(&p, &video, "203.0.113.10", "u-a").await;
    // B is admitted but has not played anything yet: no allow decision to remember.
    let b = Viewer::new("203.0.113.20", CURL);
    b.admit(&p, "u-b", &video.playlist).await;
    if kill {
        redis.stop();
    } else {
        redis.pause();
    }
    let n = 10;
    let a_seg = count_status(&a, &p, &video.seg0, n, 200).await;
    let a_key = count_status(&a, &p, &video.key, 3, 200).await;
    let a_playlist = a.get(&p, &sign("u-a", &video.playlist)).await.status;
    let b_seg = count_status(&b, &p, &video.seg0, 3, 503).await;
    let (h_status, h) = health(&p).await;
    assert_eq!(a_seg, n, "viewer inside the grace lost segments");
    assert_eq!(a_key, 3, "viewer inside the grace lost the key");
    assert_eq!(a_playlist, 503, "playlist served without the store");
    assert_eq!(b_seg, 3, "viewer outside the grace was let through");
    assert_eq!((h_status, h["status"].as_str()), (503, Some("degraded")));
    if kill {
        redis.restart();
    } else {
        redis.resume();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if kill {
            // An empty store after the restart: B is admitted again.
            let body = serde_json::json!({"uid": "u-b", "path": video.playlist, "clientIp": b.ip, "UserAgent": b.ua});
            let _ = admit_raw(&p, Some(&format!("Bearer {WL_KEY}")), &body.to_string()).await;
        }
        if b.get(&p, &video.seg0).await.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the store came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss = alive(&mut p).await;
    assert!(metric(&p, "fileproxy_outage_grace_allowed_total").await >= (n + 3) as u64);
    figure(
        case,
        format!(
            "in-grace viewer: {a_seg}/{n} segments + {a_key}/3 keys served (expected all); \
             playlist {a_playlist} (expected 503); outside viewer 503 ×{b_seg}/3 (expected 3); \
             /health {h_status} degraded; recovered; alive, RSS {rss} MiB"
        ),
    );
}

/// A viewer revoked before the outage is not let through by the outage grace: the
/// memory of recent allow decisions honours revocations (SPEC §11, §13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_grace_honours_revocations() {
    let origin = TestOrigin::start().await;
    let video = Video::put(&origin, "vidrevoke");
    let mut redis = RedisServer::start();
    let mut p = grace_proxy(&redis.url(), &origin);
    let a = watching(&p, &video, "203.0.113.30", "u-revoked").await;
    let c = watching(&p, &video, "203.0.113.40", "u-kept").await;
    let client = reqwest::Client::new();
    let r = client
        .post(p.url("/api/revoke"))
        .header("Authorization", format!("Bearer {WL_KEY}"))
        .body(serde_json::json!({"uid": "u-revoked"}).to_string())
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    // Every instance honours a revocation within 1 s (the feed is polled).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    redis.pause();
    let revoked = a.get(&p, &video.seg0).await;
    let kept = count_status(&c, &p, &video.seg0, 3, 200).await;
    redis.resume();
    assert_eq!(
        revoked.status,
        403,
        "revoked viewer served from the grace: {}",
        revoked.text()
    );
    assert!(
        revoked.text().contains("100403 revoked uid:u-revoked"),
        "{}",
        revoked.text()
    );
    assert_eq!(kept, 3, "the other in-grace viewer lost segments");
    let rss = alive(&mut p).await;
    figure(
        "store paused after a revocation",
        format!(
            "revoked viewer {} (expected 403 revoked); other in-grace viewer {kept}/3 segments; alive, RSS {rss} MiB",
            revoked.status
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_paused_sigstop() {
    store_outage("store paused (SIGSTOP)", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_killed() {
    store_outage("store killed (SIGKILL)", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_primary_killed_replica_takes_over() {
    // Quick failure detection, and replicas that sync at once.
    let base = RedisServer::builder()
        .arg("--cluster-node-timeout")
        .arg("1000")
        .arg("--repl-diskless-sync-delay")
        .arg("0");
    let mut cluster = match RedisCluster::start_replicated(3, 1, base) {
        Ok(c) => c,
        Err(e) => panic!("cluster with replicas: {e}"),
    };
    let origin = TestOrigin::start().await;
    let videos: Vec<Video> = (0..6)
        .map(|i| Video::put(&origin, &format!("vidc{i}")))
        .collect();
    let mut p = grace_proxy(&cluster.url(), &origin);
    // Viewers spread over the slots of every primary (each in its own /24: one
    // whitelist entry holds only `max_paths_per_cidr` key paths).
    let mut viewers = Vec::new();
    for (i, v) in videos.iter().enumerate() {
        let ip = format!("198.51.{}.10", 100 + i);
        viewers.push(watching(&p, v, &ip, &format!("u-c{i}")).await);
    }
    // Redis replicates asynchronously: a write the replica has not received is lost
    // with the primary (that is Redis, not FileProxy). Wait until it has everything.
    cluster.nodes[0].wait_replicated(Duration::from_secs(10));
    cluster.nodes[0].stop();
    let started = Instant::now();
    // During the failover: every in-grace viewer keeps getting segments.
    let mut tally = GraceTally::default();
    while started.elapsed() < Duration::from_secs(4) {
        tally.round(&p, &viewers, &videos).await;
    }
    cluster
        .wait_ok_except(&[0])
        .expect("cluster ok after failover");
    let failover = started.elapsed();
    // Without a restart, a new viewer is admitted and plays on the promoted replica.
    let fresh = Video::put(&origin, "vidfresh");
    let deadline = Instant::now() + Duration::from_secs(15);
    let new_viewer = loop {
        let v = Viewer::new("198.18.0.99", CURL);
        let body = serde_json::json!({"uid": "u-new", "path": fresh.playlist, "clientIp": v.ip, "UserAgent": v.ua});
        let r = http_client(None)
            .post(p.url("/api/whitelist"))
            .bearer_auth(WL_KEY)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        if r.status() == 200 && v.get(&p, &sign("u-new", &fresh.playlist)).await.status == 200 {
            break v;
        }
        assert!(Instant::now() < deadline, "no recovery after failover");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(new_viewer.get(&p, &fresh.seg0).await.status, 200);
    assert_eq!(
        tally.served, tally.asked,
        "in-grace viewers failed during the failover: {:?}",
        tally.other
    );
    let rss = alive(&mut p).await;
    let from_grace = metric(&p, "fileproxy_outage_grace_allowed_total").await;
    figure(
        "cluster primary killed",
        format!(
            "in-grace segments {}/{} served during failover (expected all; {from_grace} from the grace memory); \
             cluster ok again after {:.1} s; new viewer admitted and served without restart; alive, RSS {rss} MiB",
            tally.served,
            tally.asked,
            failover.as_secs_f64()
        ),
    );
}

/// Admits a fresh viewer for `video` and fetches its playlist; true when both worked
/// (each needs store writes).
async fn fresh_viewer_plays(p: &Proxy, video: &Video, ip: &str, uid: &str) -> bool {
    let v = Viewer::new(ip, CURL);
    let body = serde_json::json!({"uid": uid, "path": video.playlist, "clientIp": v.ip, "UserAgent": v.ua});
    let Ok(r) = http_client(None)
        .post(p.url("/api/whitelist"))
        .bearer_auth(WL_KEY)
        .body(body.to_string())
        .send()
        .await
    else {
        return false;
    };
    r.status() == 200
        && v.get(p, &sign(uid, &video.playlist)).await.status == 200
        && v.get(p, &video.seg0).await.status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_killed_replica_takes_over() {
    let mut set = RedisSentinels::start(None, None).unwrap_or_else(|e| panic!("{e}"));
    let origin = TestOrigin::start().await;
    let videos: Vec<Video> = (0..3)
        .map(|i| Video::put(&origin, &format!("vids{i}")))
        .collect();
    let mut p = grace_proxy(&set.url(), &origin);
    let (_, h) = health(&p).await;
    assert_eq!(h["store"]["kind"], "redis-sentinel", "{h}");
    assert!(
        h["store"].get("master").is_none(),
        "/health names no address: {h}"
    );
    assert_eq!(store_master(&p).await, set.nodes[0].addr());
    let mut viewers = Vec::new();
    for (i, v) in videos.iter().enumerate() {
        let ip = format!("198.51.{}.20", 110 + i);
        viewers.push(watching(&p, v, &ip, &format!("u-s{i}")).await);
    }
    // Everything written so far is on the replica too.
    set.nodes[0].wait_replicated(Duration::from_secs(10));
    set.nodes[0].stop();
    let started = Instant::now();
    // Until a fresh viewer can be admitted and play again (store writes work), every
    // in-grace viewer keeps getting segments.
    let mut tally = GraceTally::default();
    let mut failed_writes = 0;
    let mut n = 0;
    let recovered = loop {
        tally.round(&p, &viewers, &videos).await;
        n += 1;
        let fresh = Video::put(&origin, &format!("vidsf{n}"));
        if fresh_viewer_plays(
            &p,
            &fresh,
            &format!("198.18.1.{}", n % 250),
            &format!("u-f{n}"),
        )
        .await
        {
            break started.elapsed();
        }
        failed_writes += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no recovery after the failover ({failed_writes} attempts)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        failed_writes > 0,
        "writes never failed: was the master really gone?"
    );
    assert_eq!(
        tally.served, tally.asked,
        "in-grace viewers failed during the failover: {:?}",
        tally.other
    );
    assert_eq!(set.master_index(&[0]), Some(1), "the replica was promoted");
    let (h_status, h) = health(&p).await;
    assert_eq!(h_status, 200, "{h}");
    assert_eq!(store_master(&p).await, set.nodes[1].addr(), "{h}");
    // The viewers from before the failover play on (their sessions were replicated).
    for (v, video) in viewers.iter().zip(&videos) {
        assert_eq!(v.get(&p, &video.seg1).await.status, 200);
    }
    let rss = alive(&mut p).await;
    let from_grace = metric(&p, "fileproxy_outage_grace_allowed_total").await;
    figure(
        "sentinel master killed",
        format!(
            "in-grace segments {}/{} served during failover (expected all; {from_grace} from the grace memory); \
             {failed_writes} admissions failed, then writes recovered {:.2} s after the kill without restart; \
             /stats names the promoted replica; alive, RSS {rss} MiB",
            tally.served,
            tally.asked,
            recovered.as_secs_f64()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_passwords_reach_no_log_line_or_health() {
    let (pw, spw) = ("dataPw9f3k", "sentPw2q7z");
    let mut set = RedisSentinels::start(Some(pw), Some(spw)).unwrap_or_else(|e| panic!("{e}"));
    let origin = TestOrigin::start().await;
    let video = Video::put(&origin, "vidsp");
    let url = set.url();
    assert!(url.contains(pw) && url.contains(spw), "{url}");
    // A second proxy with a wrong data-node password logs its AUTH failures.
    let wrong = url.replacen(pw, "wrongPw5x1c", 1);
    let mut p = ProxyConfig::trusting_loopback(&url)
        .store("op_timeout_ms = 300\noutage_grace_s = 60")
        .start(&origin.url());
    let mut bad = ProxyConfig::trusting_loopback(&wrong)
        .store("op_timeout_ms = 300")
        .start(&origin.url());
    let v = watching(&p, &video, "203.0.113.60", "u-pw").await;
    let (h_status, h) = health(&p).await;
    assert_eq!(h_status, 200, "{h}");
    assert_eq!(h["store"]["kind"], "redis-sentinel");
    let (bad_status, bad_h) = health(&bad).await;
    assert_eq!(bad_status, 503, "{bad_h}");
    // A failover with passwords: the proxy logs the outage and the new master.
    set.nodes[0].wait_replicated(Duration::from_secs(10));
    set.nodes[0].stop();
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let fresh = Video::put(&origin, &format!("vidspf{n}"));
        if fresh_viewer_plays(
            &p,
            &fresh,
            &format!("198.18.2.{}", n % 250),
            &format!("u-pf{n}"),
        )
        .await
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(v.get(&p, &video.seg1).await.status, 200);
    let (_, h_after) = health(&p).await;
    assert_eq!(store_master(&p).await, set.nodes[1].addr(), "{h_after}");
    let _ = alive(&mut p).await;
    let _ = alive(&mut bad).await;
    // Give both a moment to write what they log, then read everything.
    let text = format!(
        "{}\n{}\n{h}\n{bad_h}\n{h_after}",
        p.log_text(),
        bad.log_text()
    );
    for secret in [pw, spw, "wrongPw5x1c"] {
        assert!(
            !text.contains(secret),
            "{secret} leaked: {}",
            text.lines().find(|l| l.contains(secret)).unwrap_or("")
        );
    }
    assert!(
        p.log_text().contains("sentinel master in use"),
        "{}",
        p.log_text()
    );
    assert!(bad.log_text().contains("***"), "the URL is logged redacted");
    assert!(
        bad.log_text().contains("no sentinel master reachable"),
        "the wrong password's failure is logged: {}",
        bad.log_text()
    );
    figure(
        "sentinel with passwords",
        format!(
            "data-node and sentinel passwords in no log line ({} lines read) or /health, \
             wrong password refused (503) without echo, failover followed",
            text.lines().count()
        ),
    );
}

/// A config with `fixed_ip_whitelist = ["127.0.0.1"]` (uid `fixed_whitelist`), an access
/// log in `dir`, and `extra` tables.
fn fixed_ip_config(port: u16, origin: &str, dir: &std::path::Path, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_s = 1\n\
         [origin]\nurl = \"{origin}\"\ntimeout_ms = 500\nconnect_timeout_ms = 500\n\
         [auth]\nsecret = \"{SECRET}\"\nwhitelist_api_key = \"{WL_KEY}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\
         fixed_ip_whitelist = [\"127.0.0.1\"]\n\
         [log]\nlevel = \"info\"\naccess_log = \"{}\"\n{extra}\n",
        dir.join("access.log").display()
    )
}

fn start_fixed(origin: &str, dir: &std::path::Path, extra: &str) -> Proxy {
    let port = free_port();
    let cfg = fixed_ip_config(port, origin, dir, extra);
    Proxy::start_with_config(&cfg, port, tempfile::tempdir().unwrap(), &[])
}

/// Waits until the access log holds `n` lines for paths starting with `prefix`.
async fn wait_lines(dir: &std::path::Path, prefix: &str, n: usize) -> Vec<(String, u16, u64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<_> = access_lines(dir)
            .into_iter()
            .filter(|l| l.0.starts_with(prefix))
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_refusing_hanging_resetting() {
    let dir = tempfile::tempdir().unwrap();
    // Refusing: nothing listens on the origin port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut p = start_fixed(&dead, dir.path(), "");
    let client = http_client(None);
    let n = 10;
    let refused = count_each(&client, &p, "/v/", n, 502).await;
    assert_eq!(refused, n);
    let rss = alive(&mut p).await;
    figure(
        "origin refusing",
        format!("502 for {refused}/{n} (expected {n}); alive, RSS {rss} MiB"),
    );
    drop(p);

    // Hanging: accepts, never answers → 504 after origin.timeout_ms.
    let origin = TestOrigin::start().await;
    let mut p = start_fixed(&origin.url(), dir.path(), "");
    let timed_out = count_each(&client, &p, "/hang/v/", n, 504).await;
    assert_eq!(timed_out, n);
    let rss = alive(&mut p).await;
    figure(
        "origin hanging",
        format!("504 for {timed_out}/{n} (expected {n}); alive, RSS {rss} MiB"),
    );
    drop(p);

    // Resetting mid-body: announces 1 MiB, sends 100 KiB, then RST.
    let reset = reset_origin(1 << 20, 100 * 1024).await;
    let rdir = tempfile::tempdir().unwrap();
    let mut p = start_fixed(&format!("http://{reset}"), rdir.path(), "");
    let mut truncated = 0;
    let mut received = 0u64;
    for i in 0..n {
        let r = client
            .get(p.url(&format!("/v/{i}.ts")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut s = r.bytes_stream();
        let mut failed = false;
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => received += c.len() as u64,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        truncated += usize::from(failed);
    }
    let lines = wait_lines(rdir.path(), "/v/", n).await;
    let accounted: u64 = lines.iter().map(|l| l.2).sum();
    assert_eq!(truncated, n, "a reset body looked complete to the viewer");
    assert_eq!(lines.len(), n);
    assert_eq!(accounted, received, "bytes delivered vs accounted");
    let rss = alive(&mut p).await;
    figure(
        "origin reset mid-body",
        format!(
            "{truncated}/{n} bodies cut short (expected {n}); delivered {received} B = accounted {accounted} B; alive, RSS {rss} MiB"
        ),
    );
}

/// A raw origin that answers every request with `announced` bytes of Content-Length,
/// sends `sent`, then resets the connection.
async fn reset_origin(announced: usize, sent: usize) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nContent-Type: video/mp2t\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&vec![b'r'; sent]).await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // SO_LINGER 0: closing sends RST instead of FIN.
                if let Ok(std) = s.into_std() {
                    let _ = socket2::SockRef::from(&std).set_linger(Some(Duration::ZERO));
                    drop(std);
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_origin_and_viewers_aborting_en_masse() {
    let origin = TestOrigin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = start_fixed(&origin.url(), dir.path(), "");
    let rss_before = p.rss() >> 20;
    // 200 viewers start large transfers and 50 trickling ones, then all abort at once.
    let mut bodies = Vec::new();
    for i in 0..250 {
        let path = if i < 200 {
            format!("/gen/67108864/big{i}.ts")
        } else {
            format!("/trickle/t/{i}.ts")
        };
        let r = http_client(None).get(p.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut s = r.bytes_stream();
        let first = s.next().await.unwrap().unwrap();
        assert!(!first.is_empty());
        bodies.push(s);
    }
    drop(bodies);
    let lines = wait_lines(dir.path(), "/", 250).await;
    let aborted = lines.iter().filter(|l| l.1 == 499).count();
    assert_eq!(aborted, 250, "aborted transfers logged as 499");
    // Everything let go: no transfer left, origin connections back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h) = health(&p).await;
        if h["server"]["active_transfers"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "transfers left after abort: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss = alive(&mut p).await;
    assert!(rss < 256, "RSS after mass abort {rss} MiB");
    figure(
        "viewers abort en masse (200 big + 50 trickling)",
        format!("{aborted}/250 logged 499 (expected 250); 0 transfers left; alive, RSS {rss_before} → {rss} MiB"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_transfers_accounts_every_byte() {
    let origin = TestOrigin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = start_fixed(
        &origin.url(),
        dir.path(),
        "[traffic]\nmin_bytes = 1000000000000\ninterval_s = 3600",
    );
    let n = 20;
    let mut tasks = Vec::new();
    // Half over HTTP/1.1 (a connection each), half as streams of one HTTP/2 connection.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for i in 0..n {
        let url = p.url(&format!("/trickle/s/{i}.ts"));
        let client = if i % 2 == 0 {
            http_client(None)
        } else {
            h2.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut s = client.get(url).send().await.unwrap().bytes_stream();
            let mut got = 0u64;
            while let Some(Ok(c)) = s.next().await {
                got += c.len() as u64;
            }
            got
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    p.terminate();
    let mut delivered = 0;
    for t in tasks {
        delivered += t.await.unwrap();
    }
    let code = p.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", p.log_text());
    let lines = wait_lines(dir.path(), "/trickle/", n).await;
    let accounted: u64 = lines.iter().map(|l| l.2).sum();
    let pending: Value = serde_json::from_slice(
        &std::fs::read(p.dir.path().join("fileproxy-state/traffic/pending.json")).unwrap(),
    )
    .unwrap();
    let traffic = pending["uids"]["fixed_whitelist"]["bytes"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(lines.len(), n);
    // The access log and the traffic report account the same bytes, exactly.
    assert_eq!(traffic, accounted, "traffic vs access log");
    // They count what was handed to the connection. When the cut comes, a transfer's
    // last chunk (one byte here) may still be in flight and never read by the viewer,
    // so the viewers may have read up to one chunk per transfer less; never more.
    assert!(delivered > 0, "nothing was delivered before the cut");
    assert!(
        accounted >= delivered && accounted - delivered <= n as u64,
        "access log {accounted} B vs delivered {delivered} B"
    );
    figure(
        "SIGTERM during 20 transfers, 10 h1 + 10 h2 (grace 1 s)",
        format!(
            "exit 0; viewers read {delivered} B; access log {accounted} B = traffic {traffic} B"
        ),
    );
}

/// A tiny tmpfs at `path` (root), or `None` where mounting is not allowed.
fn small_tmpfs(path: &std::path::Path) -> Option<TmpfsGuard> {
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(path)
        .output()
        .ok()?;
    out.status.success().then(|| TmpfsGuard(path.to_path_buf()))
}

struct TmpfsGuard(std::path::PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_on_a_full_filesystem() {
    let origin = TestOrigin::start().await;
    origin.put("f/a.ts", Bytes::from(vec![1u8; 5000]));
    let base = tempfile::tempdir().unwrap();
    let spool = base.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let filler = spool.join("filler");
    let mount = small_tmpfs(&spool);
    let how = if mount.is_some() {
        // Fill it up.
        let _ = std::fs::write(&filler, vec![0u8; 128 * 1024]);
        "full 64 KiB tmpfs"
    } else {
        let mut perm = std::fs::metadata(&spool).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o555);
        std::fs::set_permissions(&spool, perm).unwrap();
        "read-only folder"
    };
    let dead = format!("http://127.0.0.1:{}/report", free_port());
    let dir = tempfile::tempdir().unwrap();
    let mut p = start_fixed(
        &origin.url(),
        dir.path(),
        &format!(
            "[traffic]\nreport_url = \"{dead}\"\nmin_bytes = 1\ninterval_s = 1\nretry_max_s = 1\ntimeout_ms = 300\nspool_dir = \"{}\"",
            spool.display()
        ),
    );
    let client = http_client(None);
    for _ in 0..4 {
        let r = client.get(p.url("/files/f/a.ts")).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), 5000);
    }
    let metric = |text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("fileproxy_traffic_spool_errors_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let errors = loop {
        let m = client
            .get(p.url("/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let e = metric(&m);
        if e > 0 {
            break e;
        }
        assert!(Instant::now() < deadline, "spool write failure not counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Nothing lost: the figures stay in memory, and land in the spool once it has room.
    let t = admin_json(&p, "/traffic").await;
    let kept = t.to_string().contains("fixed_whitelist");
    assert!(kept, "traffic lost after spool failure: {t}");
    let rss = alive(&mut p).await;
    let mut recovered = "n/a (read-only)";
    if mount.is_some() {
        std::fs::remove_file(&filler).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let has_batch = std::fs::read_dir(&spool)
                .unwrap()
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("batch-"));
            if has_batch {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "batch never spooled after space freed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        recovered = "batch spooled once space was freed";
    }
    figure(
        "spool on a full filesystem",
        format!("{how}: {errors} spool errors counted, traffic kept in memory, {recovered}; alive, RSS {rss} MiB"),
    );
    drop(p);
    drop(mount);
}
