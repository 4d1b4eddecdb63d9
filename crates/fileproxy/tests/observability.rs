//! Observability end to end, through the real binary and a real origin: the admin
//! gate, `/metrics` parsed with a Prometheus text parser (counters and histograms move
//! with real traffic), `/stats`, `/probe/backend`, `/debug/*`, the access log, and no
//! secret in any admin answer.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use prometheus_parse::{Scrape, Value};
use support::origin::TestOrigin;
use support::proxy::{free_port, Proxy, ADMIN_TOKEN, SECRET, WL_KEY};

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) ObsTest/1.0";
const TRAFFIC_KEY: &str = "traffic-api-key-not-to-leak";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .user_agent(UA)
        .build()
        .expect("client")
}

/// Starts a proxy with an admin listener; returns it and the admin base URL.
fn start_with_admin(origin: &str, env: &[(&str, &str)]) -> (Proxy, String) {
    let admin_port = free_port();
    let p = Proxy::start_env(
        origin,
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &format!("[traffic]\napi_key = \"{TRAFFIC_KEY}\"\n"),
        env,
    );
    (p, format!("http://127.0.0.1:{admin_port}"))
}

async fn admit(p: &Proxy, uid: &str, path: &str, ua: &str) {
    let r = client()
        .post(p.url("/api/whitelist"))
        .bearer_auth(WL_KEY)
        .json(&serde_json::json!({"uid": uid, "path": path, "clientIp": "127.0.0.1", "UserAgent": ua}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

async fn get_text(url: &str) -> (u16, String) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A parsed scrape with lookups by name and label subset.
struct Metrics {
    scrape: Scrape,
    text: String,
}

impl Metrics {
    async fn fetch(admin: &str) -> Metrics {
        let r = client()
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        let text = r.text().await.unwrap();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse");
        Metrics { scrape, text }
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.scrape.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// Value of a counter/gauge sample (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{name} is not a scalar: {other:?}"),
            })
            .sum()
    }

    /// Cumulative buckets `(le, count)` of a histogram sample.
    fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let s = self
            .matching(name, labels)
            .next()
            .unwrap_or_else(|| panic!("no histogram {name} {labels:?}"));
        match &s.value {
            Value::Histogram(b) => b.iter().map(|h| (h.less_than, h.count)).collect(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    fn has_type(&self, family: &str, kind: &str) -> bool {
        self.text
            .lines()
            .any(|l| l == format!("# TYPE {family} {kind}"))
    }
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_gate() {
    let origin = TestOrigin::start().await;
    let (p, admin) = start_with_admin(&origin.url(), &[]);
    let c = client();
    for path in [
        "/metrics",
        "/stats",
        "/traffic",
        "/monitor",
        "/debug/browser",
        "/probe/backend?path=/a.ts",
    ] {
        let r = c.get(p.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without token");
        assert!(r.headers().contains_key("www-authenticate"));
        let r = c
            .get(p.url(path))
            .bearer_auth("wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path} with a wrong token");
        let r = c
            .get(p.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with the token");
        let r = c.get(format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} on the admin listener");
    }
    // No route takes the token from the query (SPEC §10): `/monitor?token=` is refused
    // like a missing token; the page opens with the bearer header or on the admin
    // listener.
    for q in [
        format!("?token={ADMIN_TOKEN}"),
        "?token=nope".into(),
        format!("?%74oken={ADMIN_TOKEN}"),
    ] {
        let r = c.get(p.url(&format!("/monitor{q}"))).send().await.unwrap();
        assert_eq!(r.status(), 401, "/monitor{q}");
    }
    let r = c
        .get(p.url("/monitor"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.headers().contains_key("content-security-policy"));
    let r = c
        .get(p.url(&format!("/stats?token={ADMIN_TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The admin listener serves no viewer traffic; admin routes refuse other methods.
    let r = c.get(format!("{admin}/files/a.png")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c.post(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    drop(p);

    // No admin token configured: admin routes do not exist on the main listener.
    let (p, admin) = start_with_admin(&origin.url(), &[("FILEPROXY_AUTH__ADMIN_TOKEN", "")]);
    for path in ["/metrics", "/stats", "/monitor"] {
        let r = c
            .get(p.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let r = c.get(format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} on the admin listener");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_real_traffic() {
    let origin = TestOrigin::start().await;
    let seg = vec![7u8; 200_000];
    origin.put("abc/seg1.ts", seg.clone());
    origin.put("abc/seg2.ts", seg.clone());
    origin.put("abc/index.m3u8", "#EXTM3U\n");
    let (p, admin) = start_with_admin(&origin.url(), &[]);
    let c = client();
    let before = Metrics::fetch(&admin).await;
    for (family, kind) in [
        // Text format 0.0.4 (the default): counter families carry `_total`.
        ("fileproxy_requests_total", "counter"),
        ("fileproxy_time_to_first_byte_seconds", "histogram"),
        ("fileproxy_time_to_last_byte_seconds", "histogram"),
        ("fileproxy_store_operation_seconds", "histogram"),
        ("fileproxy_active_connections", "gauge"),
        ("fileproxy_origin_idle_connections", "gauge"),
        ("fileproxy_traffic_dropped_bytes_total", "counter"),
    ] {
        assert!(before.has_type(family, kind), "# TYPE {family} {kind}");
    }
    let seg_ok = [("route", "segment"), ("status", "2xx")];
    let base_ok = before.value("fileproxy_requests_total", &seg_ok);

    admit(&p, "u-obs", "/files/abc/index.m3u8", UA).await;
    // 1 new session (uid given), then 3 requests that reuse it.
    let r = c
        .get(p.url("/files/abc/seg1.ts?uid=u-obs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("set-cookie"));
    assert_eq!(r.bytes().await.unwrap().len(), seg.len());
    for _ in 0..3 {
        let r = c.get(p.url("/files/abc/seg2.ts")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), seg.len());
    }
    // Refusals: not admitted (whitelist miss), playlist without parameters, origin 404.
    let r = c.get(p.url("/files/zzz/seg1.ts")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c.get(p.url("/files/abc/index.m3u8")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(p.url("/files/abc/missing.ts")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // A viewer that leaves mid-transfer.
    let r = c.get(p.url("/trickle/abc/live.ts")).send().await.unwrap();
    let mut s = r.bytes_stream();
    let _ = s.next().await;
    drop(s);

    wait_for("client-closed transfer counted", || async {
        Metrics::fetch(&admin)
            .await
            .value("fileproxy_client_closed_total", &[("route", "segment")])
            >= 1.0
    })
    .await;
    let m = Metrics::fetch(&admin).await;
    assert!(m.value("fileproxy_requests_total", &seg_ok) - base_ok >= 4.0);
    assert!(
        m.value(
            "fileproxy_requests_total",
            &[("route", "segment"), ("status", "4xx")]
        ) >= 2.0
    );
    assert_eq!(
        m.value(
            "fileproxy_requests_total",
            &[("route", "playlist"), ("status", "4xx")]
        ),
        1.0
    );
    assert!(
        m.value(
            "fileproxy_requests_total",
            &[("route", "api"), ("status", "2xx")]
        ) >= 1.0
    );
    assert!(
        m.value("fileproxy_response_bytes_total", &[("route", "segment")])
            >= 4.0 * seg.len() as f64
    );
    assert_eq!(
        m.value("fileproxy_sessions_total", &[("outcome", "created")]),
        1.0
    );
    assert!(m.value("fileproxy_sessions_total", &[("outcome", "reused")]) >= 3.0);
    assert!(m.value("fileproxy_whitelist_lookups_total", &[("result", "hit")]) >= 4.0);
    assert!(m.value("fileproxy_whitelist_lookups_total", &[("result", "miss")]) >= 1.0);
    assert_eq!(
        m.value(
            "fileproxy_playlist_denials_total",
            &[("reason", "playlist_missing_params")]
        ),
        1.0
    );
    assert!(
        m.value(
            "fileproxy_access_denials_total",
            &[("reason", "whitelist_path_not_admitted")]
        ) + m.value(
            "fileproxy_access_denials_total",
            &[("reason", "whitelist_no_entry")]
        ) >= 1.0
    );
    assert!(m.value("fileproxy_origin_connections_opened_total", &[]) >= 1.0);
    assert!(m.value("fileproxy_active_connections", &[]) >= 1.0);
    assert_eq!(m.value("fileproxy_build_info", &[]), 1.0);
    // Histograms: cumulative, ending in +Inf = _count, and they moved.
    for family in [
        "fileproxy_time_to_first_byte_seconds",
        "fileproxy_time_to_last_byte_seconds",
    ] {
        let b = m.buckets(family, &[("route", "segment")]);
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let (le, inf) = *b.last().unwrap();
        assert!(le.is_infinite());
        let count = m.value(&format!("{family}_count"), &[("route", "segment")]);
        assert_eq!(inf, count);
        let before_count = before.value(&format!("{family}_count"), &[("route", "segment")]);
        assert!(
            count - before_count >= 6.0,
            "{family}: {before_count} → {count}"
        );
        assert!(m.value(&format!("{family}_sum"), &[("route", "segment")]) > 0.0);
    }
    let store = m.buckets("fileproxy_store_operation_seconds", &[("op", "get_many")]);
    assert!(store.last().unwrap().1 >= 4.0, "{store:?}");

    // /stats: the same figures, percentiles and rates over the last minute.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let s: serde_json::Value = c
        .get(format!("{admin}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(s["totals"]["requests"].as_u64().unwrap() >= 8, "{s}");
    assert!(s["totals"]["bytes_delivered"].as_u64().unwrap() >= 800_000);
    assert_eq!(s["totals"]["sessions_created"], 1);
    let lm = &s["last_minute"];
    assert!(lm["requests_per_s"].as_f64().unwrap() > 0.0, "{lm}");
    for q in ["p50", "p95", "p99"] {
        assert!(
            lm["time_to_last_byte_ms"][q].as_f64().is_some(),
            "{q}: {lm}"
        );
        assert!(
            lm["time_to_first_byte_ms"][q].as_f64().is_some(),
            "{q}: {lm}"
        );
    }
    assert!(!s["series"].as_array().unwrap().is_empty());
    assert_eq!(
        s["breakdown"]["playlist_denials"]["playlist_missing_params"],
        1
    );
    assert!(
        s["gauges"]["origin"]["connections_opened"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_and_debug_routes() {
    let origin = TestOrigin::start().await;
    origin.put("abc/seg1.ts", vec![1u8; 1000]);
    let (p, admin) = start_with_admin(&origin.url(), &[]);
    admit(&p, "u-dbg", "/files/abc/index.m3u8", UA).await;
    let c = client();
    let json = |url: String| {
        let c = c.clone();
        async move {
            let r = c.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };

    let (st, v) = json(format!("{admin}/probe/backend?path=/files/abc/seg1.ts")).await;
    assert_eq!(st, 200);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["backend_status"], 200);
    assert_eq!(v["content_type"], "video/mp2t");
    assert_eq!(
        v["backend_url"],
        format!("{}/files/abc/seg1.ts", origin.url())
    );
    let (_, v) = json(format!("{admin}/probe/backend?path=/files/abc/none.ts")).await;
    assert_eq!(
        (v["status"].as_str(), v["backend_status"].as_u64()),
        (Some("error"), Some(404))
    );
    for bad in ["", "?path=", "?path=/a/../b.ts", "?path=..%2Fetc%2Fpasswd"] {
        let (st, v) = json(format!("{admin}/probe/backend{bad}")).await;
        assert_eq!(st, 400, "{bad}");
        assert!(v["error"].as_str().unwrap().starts_with("path"), "{v}");
    }

    let (st, v) = json(format!("{admin}/debug/browser?ua=curl%2F8.5.0")).await;
    assert_eq!(st, 200);
    assert_eq!(v["class"], "download_tool");
    let (_, v) = json(format!("{admin}/debug/browser")).await;
    assert_eq!(
        v["user_agent"], UA,
        "UA of the request when no ua parameter"
    );

    let (st, v) = json(format!(
        "{admin}/debug/cidr?ip=192.168.1.77&cidr=192.168.0.0/16"
    ))
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["matches"], true);
    assert_eq!(v["admission_network"], "192.168.1.0/24");
    for bad in [
        "/debug/cidr?ip=1.2.3&cidr=10.0.0.0/8",
        "/debug/cidr?ip=10.0.0.1&cidr=banana",
        "/debug/ip-whitelist?path=/files/abc/seg1.ts",
        "/debug/ip-whitelist?ip=127.0.0.1",
        "/debug/session?uid=u&path=",
    ] {
        let (st, v) = json(format!("{admin}{bad}")).await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{bad}: {v}");
    }

    let (st, v) = json(format!(
        "{admin}/debug/ip-whitelist?ip=127.0.0.1&path=/files/abc/seg1.ts"
    ))
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["allowed"], true, "{v}");
    assert_eq!(v["uid"], "u-dbg");
    assert_eq!(v["matched_network"], "127.0.0.0/24");
    let (_, v) = json(format!(
        "{admin}/debug/ip-whitelist?ip=127.0.0.1&path=/files/abc/seg1.ts&ua=other"
    ))
    .await;
    assert_eq!(v["allowed"], false, "another UA has no entry: {v}");

    let r = c
        .get(p.url("/files/abc/seg1.ts?uid=u-dbg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, v) = json(format!(
        "{admin}/debug/session?uid=u-dbg&path=/files/abc/seg1.ts&ip=127.0.0.1"
    ))
    .await;
    assert_eq!(st, 200);
    assert!(!v["found"].is_null(), "{v}");
    assert_eq!(v["record"]["uid"], "u-dbg", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secrets_in_admin_answers() {
    let origin = TestOrigin::start().await;
    origin.put("abc/seg1.ts", vec![1u8; 1000]);
    let (p, admin) = start_with_admin(
        &origin.url(),
        &[("FILEPROXY_TRAFFIC__REPORT_URL", "http://127.0.0.1:9/report")],
    );
    admit(&p, "u-sec", "/files/abc/index.m3u8", UA).await;
    let _ = get_text(&p.url("/files/abc/seg1.ts?uid=u-sec")).await;
    let mut answers = HashMap::new();
    for path in [
        "/health",
        "/metrics",
        "/stats",
        "/traffic",
        "/monitor",
        "/debug/browser",
        "/debug/cidr?ip=127.0.0.1&cidr=127.0.0.0/8",
        "/debug/ip-whitelist?ip=127.0.0.1&path=/files/abc/seg1.ts",
        "/debug/session?uid=u-sec&path=/files/abc/seg1.ts&ip=127.0.0.1",
        "/probe/backend?path=/files/abc/seg1.ts",
    ] {
        let (st, body) = get_text(&format!("{admin}{path}")).await;
        assert_eq!(st, 200, "{path}: {body}");
        answers.insert(path, body);
    }
    for (path, body) in &answers {
        for secret in [SECRET, WL_KEY, ADMIN_TOKEN, TRAFFIC_KEY] {
            assert!(!body.contains(secret), "{path} leaks a secret");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_in_combined_format() {
    let origin = TestOrigin::start().await;
    origin.put("abc/seg1.ts", vec![1u8; 5000]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let log_s = log.display().to_string();
    let (p, _admin) = start_with_admin(&origin.url(), &[("FILEPROXY_LOG__ACCESS_LOG", &log_s)]);
    admit(&p, "u-log", "/files/abc/index.m3u8", UA).await;
    let c = client();
    let r = c
        .get(p.url("/files/abc/seg1.ts"))
        .header("referer", "https://site.example/watch")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 5000);
    let r = c
        .get(p.url("/files/abc/index.m3u8?uid=u-log&expires=1&token=SIGNED-SECRET"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c.get(p.url("/trickle/abc/live.ts")).send().await.unwrap();
    let mut s = r.bytes_stream();
    let _ = s.next().await;
    drop(s);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(" 499 ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seg = text
        .lines()
        .find(|l| l.contains("GET /files/abc/seg1.ts HTTP/1.1"))
        .unwrap_or_else(|| panic!("no segment line in {text}"));
    assert!(seg.starts_with("127.0.0.1 - - ["), "{seg}");
    assert!(
        seg.ends_with(&format!(
            "\"GET /files/abc/seg1.ts HTTP/1.1\" 200 5000 \"https://site.example/watch\" \"{UA}\""
        )),
        "{seg}"
    );
    assert!(
        text.contains(" 499 "),
        "client-closed transfer logged as 499: {text}"
    );
    assert!(
        !text.contains("SIGNED-SECRET"),
        "token must be redacted: {text}"
    );
    assert!(text.contains("token=*** HTTP/1.1\" 403 "), "{text}");
    assert!(
        !p.log_text().contains("ERROR"),
        "a viewer leaving is not an error: {}",
        p.log_text()
    );
}

/// The error answers of the admission APIs and the admin surface, pinned exactly
/// (status, body, `Allow`, `Cache-Control`): they are all built by the rescue module
/// now, and must read as they always did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_admin_error_answers_are_exact() {
    let origin = TestOrigin::start().await;
    let (p, admin) = start_with_admin(&origin.url(), &[]);
    let c = client();
    async fn read(r: reqwest::Response) -> (u16, Option<String>, Option<String>, String) {
        let h = |n: &str| {
            r.headers()
                .get(n)
                .map(|v| v.to_str().unwrap_or("?").to_string())
        };
        let (allow, cache) = (h("allow"), h("cache-control"));
        (r.status().as_u16(), allow, cache, r.text().await.unwrap())
    }
    let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    let post = |path: &str, key: Option<&str>, body: String| {
        let mut b = c.post(p.url(path)).body(body);
        if let Some(k) = key {
            b = b.bearer_auth(k);
        }
        b.send()
    };

    // Admission APIs: JSON `{"error": …}`.
    for (path, key, body, status, error) in [
        (
            "/api/whitelist",
            None,
            "{}".to_string(),
            403,
            "invalid or missing API key",
        ),
        (
            "/api/whitelist",
            Some(WL_KEY),
            "nope".into(),
            400,
            "invalid JSON body",
        ),
        (
            "/api/whitelist",
            Some(WL_KEY),
            "{\"uid\": \"u\"}".into(),
            400,
            "missing required field: path",
        ),
        (
            "/api/static-whitelist",
            Some("wrong"),
            "{}".into(),
            403,
            "invalid or missing API key",
        ),
        (
            "/api/revoke",
            Some("wrong"),
            "{}".into(),
            403,
            "invalid API key",
        ),
        (
            "/api/revoke",
            Some(WL_KEY),
            "{}".into(),
            400,
            "missing required field: uid",
        ),
        (
            "/api/file/check",
            None,
            "{}".into(),
            403,
            "invalid or missing API key",
        ),
        (
            "/api/file/check",
            Some(WL_KEY),
            "[1]".into(),
            400,
            "invalid JSON body",
        ),
        (
            "/api/file/check",
            Some(WL_KEY),
            "{}".into(),
            400,
            "missing required field: path",
        ),
        (
            "/api/file/check/batch",
            Some(WL_KEY),
            "{\"paths\": []}".into(),
            400,
            "paths must hold 1 to 100 entries",
        ),
        (
            "/api/file/check/batch",
            Some(WL_KEY),
            "{\"paths\": [1]}".into(),
            400,
            "paths must be strings",
        ),
        (
            "/api/whitelist",
            Some(WL_KEY),
            "x".repeat(70_000),
            413,
            "request body larger than 65536 bytes",
        ),
    ] {
        let (s, _, _, text) = read(post(path, key, body).await.unwrap()).await;
        assert_eq!(s, status, "{path}: {text}");
        assert_eq!(json(&text), serde_json::json!({ "error": error }), "{path}");
    }
    // Routing answers of the APIs: wrong method, switched-off feature (js_whitelist).
    let (s, allow, _, text) = read(c.get(p.url("/api/whitelist")).send().await.unwrap()).await;
    assert_eq!(
        (s, allow.as_deref(), text.as_str()),
        (405, Some("POST"), "Method Not Allowed")
    );
    let (s, allow, _, _) = read(c.delete(p.url("/api/revoke")).send().await.unwrap()).await;
    assert_eq!((s, allow.as_deref()), (405, Some("POST")));
    let (s, _, _, text) = read(c.get(p.url("/api/js-whitelist")).send().await.unwrap()).await;
    assert_eq!((s, text.as_str()), (404, "Not Found"));
    let (s, allow, _, _) = read(c.put(p.url("/files/a.png")).send().await.unwrap()).await;
    assert_eq!((s, allow.as_deref()), (405, Some("GET, HEAD, OPTIONS")));

    // The admin gate: plain text, no `Cache-Control`.
    let (s, _, cache, text) = read(c.get(p.url("/stats")).send().await.unwrap()).await;
    assert_eq!(
        (s, cache, text.as_str()),
        (401, None, "Unauthorized: admin token required")
    );
    let r = c
        .get(p.url("/stats"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    let (s, _, cache, text) = read(r).await;
    assert_eq!(
        (s, cache, text.as_str()),
        (403, None, "Forbidden: wrong admin token")
    );
    let (s, allow, cache, _) = read(c.post(format!("{admin}/stats")).send().await.unwrap()).await;
    assert_eq!((s, allow.as_deref(), cache), (405, Some("GET, HEAD"), None));
    let (s, _, cache, text) =
        read(c.get(format!("{admin}/files/x.ts")).send().await.unwrap()).await;
    assert_eq!((s, cache, text.as_str()), (404, None, "Not Found"));

    // Admin routes' failures: JSON, `Cache-Control: no-store` like every route answer.
    for (path, status, error) in [
        ("/debug/cidr?ip=nope&cidr=10.0.0.0/8", 400, "ip: \"nope\" is not an IP address"),
        ("/debug/cidr?ip=10.0.0.1", 400, "cidr: required, e.g. cidr=10.0.0.0/8"),
        ("/debug/uid", 400, "missing uid"),
        ("/debug/nosuch", 404, "unknown debug route; try /debug/browser, /debug/cidr, /debug/ip-whitelist, /debug/session, /debug/uid"),
        ("/traffic?limit=x", 400, "limit: expected a non-negative integer"),
        ("/probe/backend", 400, "path: required, e.g. /probe/backend?path=/vod/abc/seg1.ts"),
    ] {
        let (s, _, cache, text) = read(c.get(format!("{admin}{path}")).send().await.unwrap()).await;
        assert_eq!(s, status, "{path}: {text}");
        assert_eq!(cache.as_deref(), Some("no-store"), "{path}");
        assert_eq!(json(&text), serde_json::json!({ "error": error }), "{path}");
    }
    drop(p);
}
