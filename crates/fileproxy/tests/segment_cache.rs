//! The segment cache and request coalescing of SPEC §12, end to end: the real binary
//! in front of a real loopback origin that records every request it gets (and a real
//! folder for the file origin). Paths use skip-validation suffixes (`.png`) except in
//! the policy test, which goes through the whole access flow.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use support::access::{ProxyConfig, Video, Viewer, CHROME};
use support::origin::{pattern_byte, TestOrigin};
use support::proxy::Proxy;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .user_agent("fileproxy-test/1.0")
        .build()
        .expect("client")
}

fn pattern(n: u64) -> Vec<u8> {
    (0..n).map(pattern_byte).collect()
}

/// A proxy with `[cache]` lines in front of `origin_url`.
fn proxy(origin_url: &str, cache: &str) -> Proxy {
    Proxy::start(origin_url, "", &format!("[cache]\n{cache}\n"))
}

async fn get(p: &Proxy, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = client().get(p.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.expect("request")
}

async fn json(p: &Proxy, path: &str) -> serde_json::Value {
    get(p, path, &[("authorization", "Bearer test-admin-token")])
        .await
        .json()
        .await
        .expect("json")
}

/// Polls `f` until it holds (10 s at most).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_fetch_and_waiters_stream_before_the_end() {
    let origin = TestOrigin::start().await;
    let p = proxy(&origin.url(), "");
    let n: u64 = 400_000;
    let path = "/gated/400000.png";
    // Eight viewers ask at once; the origin sends the first half and then holds.
    let mut bodies = Vec::new();
    for _ in 0..8 {
        bodies.push(tokio::spawn({
            let url = p.url(path);
            async move { client().get(url).send().await.expect("send") }
        }));
    }
    let mut streams = Vec::new();
    for b in bodies {
        let r = b.await.expect("join");
        assert_eq!(r.status(), 200);
        assert_eq!(r.content_length(), Some(n));
        streams.push(r.bytes_stream());
    }
    // Every viewer receives the first half while the origin has not finished.
    let mut got = vec![Vec::new(); streams.len()];
    for (s, g) in streams.iter_mut().zip(got.iter_mut()) {
        while (g.len() as u64) < n / 2 {
            let chunk = s.next().await.expect("more bytes").expect("chunk");
            g.extend_from_slice(&chunk);
        }
    }
    assert!(!origin.state.release.load(Ordering::SeqCst));
    // A viewer joining late first gets what already arrived.
    let mut late = get(&p, path, &[]).await.bytes_stream();
    let mut late_got = Vec::new();
    while (late_got.len() as u64) < n / 2 {
        late_got.extend_from_slice(&late.next().await.expect("late bytes").expect("chunk"));
    }
    origin.state.release.store(true, Ordering::SeqCst);
    for (s, g) in streams.iter_mut().zip(got.iter_mut()) {
        while let Some(chunk) = s.next().await {
            g.extend_from_slice(&chunk.expect("chunk"));
        }
        assert!(*g == pattern(n), "viewer got the whole object");
    }
    while let Some(chunk) = late.next().await {
        late_got.extend_from_slice(&chunk.expect("chunk"));
    }
    assert!(late_got == pattern(n));
    assert_eq!(origin.count(path), 1, "one origin fetch for nine viewers");
    let stats = json(&p, "/stats").await;
    let cache = &stats["cache"];
    assert_eq!(cache["misses"], 1, "{cache}");
    assert_eq!(cache["coalesced"], 8, "{cache}");
    assert_eq!(cache["origin_bytes"], n, "{cache}");
    assert_eq!(cache["served_bytes"], 9 * n, "{cache}");
    // Complete now: a hit.
    assert!(get(&p, path, &[]).await.bytes().await.unwrap() == pattern(n));
    assert_eq!(origin.count(path), 1);
    let stats = json(&p, "/stats").await;
    assert_eq!(stats["cache"]["hits"], 1);
    assert!(stats["cache"]["hit_ratio"].as_f64().unwrap() > 0.8);
    let metrics = get(
        &p,
        "/metrics",
        &[("authorization", "Bearer test-admin-token")],
    )
    .await
    .text()
    .await
    .unwrap();
    for name in [
        "fileproxy_cache_hits_total 1",
        "fileproxy_cache_misses_total 1",
        "fileproxy_cache_coalesced_total 8",
        "fileproxy_cache_evictions_total 0",
        "fileproxy_cache_held_bytes 400000",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fill_fails_its_viewers_and_is_not_cached() {
    let origin = TestOrigin::start().await;
    let p = proxy(&origin.url(), "");
    let path = "/gen/1000000.png";
    origin.state.fail_mid.store(true, Ordering::SeqCst);
    let r = get(&p, path, &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "a failed fill cuts the body");
    origin.state.fail_mid.store(false, Ordering::SeqCst);
    let body = get(&p, path, &[]).await.bytes().await.expect("whole body");
    assert!(body == pattern(1_000_000));
    assert_eq!(origin.count(path), 2, "the failed fill was not kept");
    let body = get(&p, path, &[]).await.bytes().await.expect("cached body");
    assert!(body == pattern(1_000_000));
    assert_eq!(origin.count(path), 2, "the good fill was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_answers_stream_through() {
    let origin = TestOrigin::start().await;
    let p = proxy(&origin.url(), "max_object_bytes = 100000");
    for (path, n, cached) in [
        ("/nostore/5000.png", 5000, false),
        ("/private/5000.png", 5000, false),
        // Announced length over max_object_bytes.
        ("/gen/300000.png", 300_000, false),
        // Unknown length that turns out too large: caching stops, the viewer still
        // gets every byte.
        ("/chunked/300000.png", 300_000, false),
        // Unknown length within the bound: cached.
        ("/chunked/50000.png", 50_000, true),
        ("/gen/50000.png", 50_000, true),
    ] {
        for _ in 0..2 {
            let r = get(&p, path, &[]).await;
            assert_eq!(r.status(), 200, "{path}");
            let body = r.bytes().await.expect("body");
            assert!(body == pattern(n), "{path}: every byte");
        }
        let want = if cached { 1 } else { 2 };
        assert_eq!(origin.count(path), want, "{path}");
    }
    // A 404 is not cached either.
    for _ in 0..2 {
        assert_eq!(get(&p, "/files/none.png", &[]).await.status(), 404);
    }
    assert_eq!(origin.count("/files/none.png"), 2);
    let stats = json(&p, "/stats").await;
    assert_eq!(stats["cache"]["held_bytes"], 100_000, "{}", stats["cache"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_conditionals_are_answered_from_the_cached_object() {
    let origin = TestOrigin::start().await;
    let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    origin.put("a.png", content.clone());
    let p = proxy(&origin.url(), "");
    let path = "/files/a.png";
    let r = get(&p, path, &[]).await;
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(r.bytes().await.unwrap().as_ref(), content.as_slice());

    let r = get(&p, path, &[("range", "bytes=10-19")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &content[10..20]);

    let r = get(&p, path, &[("range", "bytes=-5")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &content[99_995..]);

    let r = get(&p, path, &[("range", "bytes=200000-")]).await;
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */100000");

    let r = get(&p, path, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());

    // If-Range with another tag: the whole object.
    let r = get(
        &p,
        path,
        &[("range", "bytes=0-9"), ("if-range", "\"other\"")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 100_000);

    let r = client().head(p.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "100000");
    assert!(r.bytes().await.unwrap().is_empty());

    assert_eq!(origin.count(path), 1, "all answered from the cache");
}

/// Total `sendfile_bytes` in `/stats`.
async fn sendfile_bytes(p: &Proxy) -> u64 {
    json(p, "/stats").await["cache"]["sendfile_bytes"]
        .as_u64()
        .expect("sendfile_bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_objects_go_out_by_sendfile_on_plain_http1_and_intact_over_h2() {
    let origin = TestOrigin::start().await;
    let n: u64 = 1_500_000;
    let path = "/files/big.png";
    origin.put("big.png", pattern(n));
    let p = proxy(&origin.url(), "");
    // The miss streams the origin's chunks as they arrive; once the fill completes, the
    // rest of its body may already come from the sealed copy.
    assert!(get(&p, path, &[]).await.bytes().await.unwrap() == pattern(n));
    let before = sendfile_bytes(&p).await;
    assert!(
        before < n,
        "the first chunks of a fill are sent from the heap"
    );
    // Hits over HTTP/1.1 on plain TCP: the body goes out by sendfile, byte-exact.
    for _ in 0..3 {
        assert!(get(&p, path, &[]).await.bytes().await.unwrap() == pattern(n));
    }
    assert_eq!(sendfile_bytes(&p).await - before, 3 * n);
    let r = get(&p, path, &[("range", "bytes=300000-1299999")]).await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == pattern(n)[300_000..1_300_000]);
    assert_eq!(sendfile_bytes(&p).await - before, 3 * n + 1_000_000);
    // HTTP/2 over the same plain listener: frames of the sealed object, intact.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2 client");
    let mut gets = Vec::new();
    for _ in 0..4 {
        gets.push(h2.get(p.url(path)).send());
    }
    for r in futures_util::future::join_all(gets).await {
        let r = r.expect("h2 request");
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert!(r.bytes().await.unwrap() == pattern(n));
    }
    assert_eq!(origin.count(path), 1, "all hits");
    // hyper's HTTP/2 hands its DATA frames' bytes to the stream as they are, too.
    let h2_sent = sendfile_bytes(&p).await - before - (3 * n + 1_000_000);
    assert!(h2_sent > 0 && h2_sent <= 4 * n, "{h2_sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_just_under_a_huge_page_is_charged_its_padding_and_served_intact() {
    // A 2,000,000-byte segment is padded to one 2 MiB huge page (the kernel's
    // `hpage_pmd_size`), and the cache counts the padding against `max_bytes`.
    let huge: u64 = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let origin = TestOrigin::start().await;
    let n: u64 = 2_000_000;
    let path = "/files/seg.png";
    origin.put("seg.png", pattern(n));
    let p = proxy(&origin.url(), "");
    assert!(get(&p, path, &[]).await.bytes().await.unwrap() == pattern(n));
    let held = json(&p, "/stats").await["cache"]["held_bytes"]
        .as_u64()
        .unwrap();
    let padded = if huge > 0 && n.next_multiple_of(huge) - n <= n / 16 {
        n.next_multiple_of(huge)
    } else {
        eprintln!("SKIP (padding part): no transparent huge pages on this kernel");
        n
    };
    assert_eq!(held, padded, "the object and its padding are charged");
    let before = sendfile_bytes(&p).await;
    for _ in 0..2 {
        assert!(get(&p, path, &[]).await.bytes().await.unwrap() == pattern(n));
    }
    let r = get(&p, path, &[("range", "bytes=1999990-")]).await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == pattern(n)[1_999_990..]);
    assert_eq!(
        sendfile_bytes(&p).await - before,
        2 * n + 10,
        "no padding byte is sent"
    );
    assert_eq!(origin.count(path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_still_refuses_a_viewer_not_admitted_to_a_cached_object() {
    let origin = TestOrigin::start().await;
    let v = Video::put(&origin, "cachedvid");
    let p = ProxyConfig::trusting_loopback("memory://").start(&origin.url());
    let admitted = Viewer::new("198.51.100.7", CHROME);
    admitted.admit(&p, "u1", &v.playlist).await;
    for _ in 0..2 {
        let r = admitted.get(&p, &v.seg0).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, v.seg0_body);
    }
    assert_eq!(origin.count(&v.seg0), 1, "the second fetch was a hit");
    let stranger = Viewer::new("203.0.113.9", CHROME);
    let r = stranger.get(&p, &v.seg0).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.body != v.seg0_body);
    assert_eq!(origin.count(&v.seg0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_evicts_least_recently_used() {
    let origin = TestOrigin::start().await;
    let p = proxy(&origin.url(), "max_bytes = 300000");
    let fetch = |name: &'static str| {
        let p = &p;
        async move {
            let path = format!("/gen/100000-{name}.png");
            let body = get(p, &path, &[]).await.bytes().await.unwrap();
            assert!(body == pattern(100_000), "{path}");
        }
    };
    let count = |name: &str| origin.count(&format!("/gen/100000-{name}.png"));
    fetch("a").await;
    fetch("b").await;
    fetch("c").await;
    fetch("a").await; // a is now the most recently used
    fetch("d").await; // evicts b
    assert_eq!(
        (count("a"), count("b"), count("c"), count("d")),
        (1, 1, 1, 1)
    );
    fetch("a").await;
    fetch("c").await;
    fetch("d").await;
    assert_eq!(
        (count("a"), count("c"), count("d")),
        (1, 1, 1),
        "a, c, d kept"
    );
    fetch("b").await;
    assert_eq!(count("b"), 2, "b was evicted");
    let stats = json(&p, "/stats").await;
    assert_eq!(stats["cache"]["evictions"], 2, "{}", stats["cache"]);
    assert_eq!(stats["cache"]["held_bytes"], 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_zero_turns_the_cache_off() {
    let origin = TestOrigin::start().await;
    let p = proxy(&origin.url(), "max_bytes = 0");
    for _ in 0..2 {
        let body = get(&p, "/gen/1000.png", &[]).await.bytes().await.unwrap();
        assert!(body == pattern(1000));
    }
    assert_eq!(origin.count("/gen/1000.png"), 2);
}

/// A viewer that reads nothing keeps its response open; with the cache the origin
/// fetch still finishes (in_flight back to 0), without it the origin stays busy.
async fn slow_viewer_does_not_pin_the_origin(origin_url: &str, path: &str) {
    for (cache, pinned) in [("", false), ("max_bytes = 0", true)] {
        let p = proxy(origin_url, cache);
        let r = get(&p, path, &[]).await;
        assert_eq!(r.status(), 200);
        let mut stalled = r.bytes_stream();
        let first = stalled.next().await.expect("bytes").expect("chunk");
        assert!(!first.is_empty());
        let health = |p: &Proxy| {
            let url = p.url("/health");
            async move {
                let h: serde_json::Value = client()
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                h["origin"]["in_flight"].as_u64().unwrap()
            }
        };
        if pinned {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                health(&p).await,
                1,
                "without the cache the viewer pins the fetch"
            );
        } else {
            eventually(
                "origin fetch complete while the viewer stalls",
                async || health(&p).await == 0,
            )
            .await;
        }
        drop(stalled);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_viewer_does_not_pin_an_http_origin_connection() {
    let origin = TestOrigin::start().await;
    slow_viewer_does_not_pin_the_origin(&origin.url(), "/gen/16000000.png").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_viewer_does_not_pin_a_file_origin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.png"), pattern(16_000_000)).unwrap();
    let url = format!("file://{}", dir.path().display());
    slow_viewer_does_not_pin_the_origin(&url, "/big.png").await;
}

/// Rewrites the `[cache]` lines of `p`'s file and reloads it with `SIGHUP`.
fn reload_cache(p: &Proxy, reloads: usize, old: &str, new: &str) {
    let path = support::access::config_path(p);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(old), "{old:?} not in\n{text}");
    std::fs::write(&path, text.replace(old, new)).unwrap();
    p.sighup();
    let log = p.wait_log("configuration reloaded (SIGHUP)", reloads);
    assert!(
        !log.contains("need a restart"),
        "cache keys are reloadable:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_cache_bounds_and_keeps_what_is_cached() {
    let origin = TestOrigin::start().await;
    let p = proxy(&origin.url(), "max_bytes = 300000");
    let fetch = |name: &'static str| {
        let p = &p;
        async move {
            let path = format!("/gen/{name}.png");
            let n: u64 = name.split('-').next().unwrap().parse().unwrap();
            let body = get(p, &path, &[]).await.bytes().await.unwrap();
            assert!(body == pattern(n), "{path}");
        }
    };
    let count = |name: &str| origin.count(&format!("/gen/{name}.png"));
    let cache_stats = async |p: &Proxy| json(p, "/stats").await["cache"].clone();
    for name in ["100000-a", "100000-b", "100000-c"] {
        fetch(name).await;
    }
    fetch("100000-a").await; // b is now the least recently used

    // Shrink: b is evicted at once, a and c stay cached.
    reload_cache(&p, 1, "max_bytes = 300000", "max_bytes = 200000");
    let s = cache_stats(&p).await;
    assert_eq!(
        (s["evictions"].clone(), s["held_bytes"].clone()),
        (1.into(), 200_000.into()),
        "{s}"
    );
    fetch("100000-a").await;
    fetch("100000-c").await;
    assert_eq!(
        (count("100000-a"), count("100000-c")),
        (1, 1),
        "kept across the reload"
    );
    fetch("100000-b").await;
    assert_eq!(count("100000-b"), 2, "evicted by the shrink");
    let s = cache_stats(&p).await;
    assert_eq!(s["held_bytes"], 200_000, "the new bound holds: {s}");

    // 0: off for new requests, nothing held.
    reload_cache(&p, 2, "max_bytes = 200000", "max_bytes = 0");
    let s = cache_stats(&p).await;
    assert_eq!(s["held_bytes"], 0, "{s}");
    let hits = s["hits"].as_u64().unwrap();
    for _ in 0..2 {
        fetch("100000-c").await;
    }
    assert_eq!(count("100000-c"), 3, "no caching while off");
    assert_eq!(cache_stats(&p).await["hits"], hits);

    // Raised from 0, with a smaller object bound: on again, and the bound applies.
    reload_cache(
        &p,
        3,
        "max_bytes = 0",
        "max_bytes = 300000\nmax_object_bytes = 50000",
    );
    for _ in 0..2 {
        fetch("40000-d").await;
        fetch("60000-e").await;
    }
    assert_eq!(count("40000-d"), 1, "cached again");
    assert_eq!(count("60000-e"), 2, "over the reloaded max_object_bytes");
    let s = cache_stats(&p).await;
    assert_eq!(
        (s["hits"].as_u64().unwrap(), s["held_bytes"].clone()),
        (hits + 1, 40_000.into()),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_are_cached_for_playlist_ttl_ms_and_still_checked_per_request() {
    use support::access::{sign, ODD_PLAYER};
    let origin = TestOrigin::start().await;
    let v = Video::put(&origin, "livecache");
    let limits = "[auth.playlist_limits.unknown]\nlimit = 3\nwindow_s = 600\n[protect]\nkey_protection = true\n";
    let ttl_ms = 1500;
    let p = ProxyConfig::trusting_loopback("memory://")
        .tail(&format!("{limits}[cache]\nplaylist_ttl_ms = {ttl_ms}\n"))
        .start(&origin.url());
    let one = Viewer::new("198.51.100.7", ODD_PLAYER);
    let two = Viewer::new("198.51.100.8", ODD_PLAYER);
    one.admit(&p, "u1", &v.playlist).await;
    two.admit(&p, "u2", &v.playlist).await;
    let (url1, url2) = (sign("u1", &v.playlist), sign("u2", &v.playlist));
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let r = one.get(&p, &url1).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        assert!(
            text.contains("enc.key?uid=u1&expires="),
            "rewritten for u1:\n{text}"
        );
    }
    // The count limit still denies, cached playlist or not.
    one.get(&p, &url1)
        .await
        .assert_text(403, "Access Denied 100308 with uid:u1");
    // Another viewer: its own rewriting, from the same cached object.
    let r = two.get(&p, &url2).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("enc.key?uid=u2&expires=") && !r.text().contains("uid=u1"));
    assert!(
        started.elapsed() < Duration::from_millis(ttl_ms),
        "the TTL ran out too early to tell"
    );
    assert_eq!(
        origin.count(&v.playlist),
        1,
        "one origin fetch within the TTL"
    );
    // After the TTL: fetched again.
    tokio::time::sleep(Duration::from_millis(ttl_ms + 100)).await;
    let r = two.get(&p, &url2).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(origin.count(&v.playlist), 2, "refetched after the TTL");

    // playlist_ttl_ms = 0 (the default): never cached, even with the cache on.
    let origin = TestOrigin::start().await;
    let v = Video::put(&origin, "vodnocache");
    let p = ProxyConfig::trusting_loopback("memory://")
        .tail(limits)
        .start(&origin.url());
    one.admit(&p, "u1", &v.playlist).await;
    let url1 = sign("u1", &v.playlist);
    for _ in 0..2 {
        assert_eq!(one.get(&p, &url1).await.status, 200);
    }
    assert_eq!(origin.count(&v.playlist), 2);
    assert_eq!(json(&p, "/stats").await["cache"]["held_bytes"], 0);
}
