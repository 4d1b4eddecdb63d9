//! Traffic reporting end to end (SPEC §5): the real binary, a real origin and a real
//! HTTP receiver (hyper, here). The receiver goes down for a while, answers 500 for
//! batches it did record, and FileProxy is restarted once in the middle (SIGTERM,
//! started again on the same spool). At the end the receiver's per-uid totals —
//! counting each `report_id` once — equal the bytes actually delivered, exactly; every
//! retry of a batch carried the same `report_id` and the same bytes.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::origin::TestOrigin;
use support::proxy::{free_port, Proxy, WL_KEY};

const API_KEY: &str = "receiver-key-123";
const MIN_BYTES: u64 = 100_000;

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// First body received per report_id.
    bodies: Mutex<HashMap<String, Vec<u8>>>,
    /// POSTs received.
    posts: AtomicU64,
    /// POSTs of a report_id already received.
    duplicates: AtomicU64,
    /// Duplicates whose body differed from the first one.
    mismatched: AtomicU64,
    /// Header problems.
    bad: Mutex<Vec<String>>,
    /// Answer 500 (after recording) to this many more POSTs.
    fail_next: AtomicU64,
}

impl Seen {
    /// Bytes per uid over distinct report_ids.
    fn totals(&self) -> HashMap<String, u64> {
        let mut t = HashMap::new();
        for body in self.bodies.lock().unwrap().values() {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            for d in v["traffic_details"].as_array().unwrap() {
                *t.entry(d["uid"].as_str().unwrap().to_string()).or_insert(0) +=
                    d["total_bytes"].as_u64().unwrap();
            }
        }
        t
    }
}

async fn receive(seen: Arc<Seen>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    seen.posts.fetch_add(1, Ordering::SeqCst);
    let h = req.headers();
    let mut problems = Vec::new();
    if req.method() != http::Method::POST || req.uri().path() != "/report" {
        problems.push(format!("{} {}", req.method(), req.uri()));
    }
    if h.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        problems.push("content-type".to_string());
    }
    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {API_KEY}")) {
        problems.push("authorization".to_string());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let rt = h
        .get("x-report-time")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if !rt.is_some_and(|t| t.abs_diff(now) < 300) {
        problems.push(format!("x-report-time {rt:?}"));
    }
    let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("json: {e}"));
            serde_json::Value::Null
        }
    };
    if !problems.is_empty() {
        seen.bad.lock().unwrap().extend(problems);
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let id = v["report_id"].as_str().unwrap_or("").to_string();
    {
        let mut bodies = seen.bodies.lock().unwrap();
        match bodies.get(&id) {
            Some(first) => {
                seen.duplicates.fetch_add(1, Ordering::SeqCst);
                if *first != body {
                    seen.mismatched.fetch_add(1, Ordering::SeqCst);
                }
            }
            None => {
                bodies.insert(id, body);
            }
        }
    }
    // Recorded, but the answer says otherwise: the sender must retry the same batch.
    let fail = seen
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
        .unwrap()
}

/// A receiver that can be taken down (listener and every connection closed) and
/// brought back on the same port.
struct Receiver {
    port: u16,
    seen: Arc<Seen>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    fn new() -> Receiver {
        Receiver {
            port: free_port(),
            seen: Arc::new(Seen::default()),
            task: None,
        }
    }

    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("receiver port");
        let seen = self.seen.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropping this set (when the task is aborted) closes every connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(receive(seen, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        }));
    }

    async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/report", self.port)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Viewer `uid` with its own User-Agent and key path.
struct Viewer {
    uid: &'static str,
    ua: &'static str,
    key: &'static str,
}

const A: Viewer = Viewer {
    uid: "uid-a",
    ua: "player-A/1.0",
    key: "ka",
};
const B: Viewer = Viewer {
    uid: "uid-b",
    ua: "player-B/1.0",
    key: "kb",
};
const C: Viewer = Viewer {
    uid: "uid-c",
    ua: "player-C/1.0",
    key: "kc",
};

async fn admit(p: &Proxy, v: &Viewer) {
    let r = client()
        .post(p.url("/api/whitelist"))
        .bearer_auth(WL_KEY)
        .json(&serde_json::json!({
            "uid": v.uid, "path": format!("/gen/{}/index.m3u8", v.key),
            "clientIp": "127.0.0.1", "UserAgent": v.ua,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Downloads `n` bytes as viewer `v`; returns the bytes received.
async fn download(p: &Proxy, v: &Viewer, n: u64, delivered: &mut HashMap<String, u64>) {
    let r = client()
        .get(p.url(&format!("/gen/{n}/{}/seg.ts", v.key)))
        .header("user-agent", v.ua)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap().len() as u64;
    assert_eq!(got, n);
    *delivered.entry(v.uid.to_string()).or_insert(0) += got;
}

async fn traffic(p: &Proxy) -> serde_json::Value {
    client()
        .get(p.url("/traffic"))
        .bearer_auth(support::proxy::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn start_proxy(origin: &str, receiver: &str, spool: &std::path::Path) -> Proxy {
    Proxy::start(
        origin,
        "",
        &format!(
            "[traffic]\nreport_url = \"{receiver}\"\napi_key = \"{API_KEY}\"\ninterval_s = 1\n\
             min_bytes = {MIN_BYTES}\nspool_dir = \"{}\"\ntimeout_ms = 2000\nretry_max_s = 2\n",
            spool.display()
        ),
    )
}

fn spool_files(spool: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(spool)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_survive_receiver_outage_and_restart_exactly_once() {
    let origin = TestOrigin::start().await;
    let mut receiver = Receiver::new();
    receiver.up().await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut delivered: HashMap<String, u64> = HashMap::new();

    // 1. Receiver up: A and B qualify and are reported.
    let mut p = start_proxy(&origin.url(), &receiver.url(), &spool);
    for v in [&A, &B, &C] {
        admit(&p, v).await;
    }
    download(&p, &A, 150_000, &mut delivered).await;
    download(&p, &B, 120_000, &mut delivered).await;
    let seen = receiver.seen.clone();
    wait_until("first reports", Duration::from_secs(30), || {
        let seen = seen.clone();
        async move {
            let t = seen.totals();
            t.get(A.uid) == Some(&150_000) && t.get(B.uid) == Some(&120_000)
        }
    })
    .await;

    // 2. Receiver down: batches pile up in the spool; C stays below the threshold.
    receiver.down().await;
    download(&p, &A, 200_000, &mut delivered).await;
    download(&p, &B, 130_000, &mut delivered).await;
    download(&p, &C, 40_000, &mut delivered).await;
    download(&p, &C, 40_000, &mut delivered).await;
    wait_until("a failed delivery", Duration::from_secs(30), || async {
        let t = traffic(&p).await;
        t["reporting"]["consecutive_failures"].as_u64() >= Some(1)
            && t["reporting"]["spooled_batches"].as_u64() >= Some(1)
    })
    .await;

    // 3. Restart: SIGTERM, clean exit, same spool.
    p.terminate();
    assert_eq!(
        p.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        p.log_text()
    );
    let files = spool_files(&spool);
    assert!(
        files.iter().any(|f| f.starts_with("batch-")),
        "batches spooled: {files:?}"
    );
    assert!(
        files.iter().any(|f| f == "pending.json"),
        "C's figures saved: {files:?}"
    );
    drop(p);
    let p = start_proxy(&origin.url(), &receiver.url(), &spool);
    let t = traffic(&p).await;
    assert_eq!(t["pending"]["bytes"], 80_000, "C restored: {t}");
    assert!(t["reporting"]["spooled_batches"].as_u64() >= Some(1), "{t}");
    assert!(
        !spool_files(&spool).iter().any(|f| f == "pending.json"),
        "saved figures are taken, not copied"
    );
    for v in [&A, &B, &C] {
        admit(&p, v).await;
    }
    download(&p, &A, 110_000, &mut delivered).await;
    download(&p, &C, 40_000, &mut delivered).await;
    wait_until(
        "a failed delivery after restart",
        Duration::from_secs(30),
        || async { traffic(&p).await["reporting"]["consecutive_failures"].as_u64() >= Some(1) },
    )
    .await;

    // 4. Receiver back, but its first two answers are lost (500 after recording).
    receiver.seen.fail_next.store(2, Ordering::SeqCst);
    receiver.up().await;
    let want = delivered.clone();
    let seen = receiver.seen.clone();
    wait_until("every byte reported", Duration::from_secs(60), || {
        let (seen, want) = (seen.clone(), want.clone());
        async move { seen.totals() == want }
    })
    .await;
    wait_until(
        "spool and memory empty",
        Duration::from_secs(30),
        || async {
            let t = traffic(&p).await;
            t["reporting"]["spooled_batches"] == 0 && t["pending"]["uids"] == 0
        },
    )
    .await;

    let seen = &receiver.seen;
    assert_eq!(
        seen.totals(),
        delivered,
        "receiver totals = bytes delivered"
    );
    assert_eq!(
        seen.totals().values().sum::<u64>(),
        150_000 + 120_000 + 200_000 + 130_000 + 80_000 + 110_000 + 40_000
    );
    assert!(
        seen.bad.lock().unwrap().is_empty(),
        "{:?}",
        seen.bad.lock().unwrap()
    );
    assert!(
        seen.duplicates.load(Ordering::SeqCst) >= 2,
        "lost answers were retried"
    );
    assert_eq!(
        seen.mismatched.load(Ordering::SeqCst),
        0,
        "a retry carries the same report_id and bytes"
    );
    assert!(
        !spool_files(&spool).iter().any(|f| f.starts_with("batch-")),
        "delivered batches removed"
    );
    // The payload keeps the Python version's shape.
    let (v, ids) = {
        let bodies = seen.bodies.lock().unwrap();
        let any = bodies.values().next().unwrap();
        let v: serde_json::Value = serde_json::from_slice(any).unwrap();
        (v, bodies.len())
    };
    for k in [
        "report_id",
        "timestamp",
        "worker_id",
        "report_interval_seconds",
        "min_bytes_threshold",
        "total_qualified_uids",
        "traffic_details",
        "summary",
    ] {
        assert!(!v[k].is_null(), "{k} missing: {v}");
    }
    for k in [
        "uid",
        "total_bytes",
        "total_mb",
        "request_count",
        "duration_seconds",
        "start_time",
        "last_activity",
        "file_types",
        "unique_ips",
        "unique_sessions",
        "avg_bytes_per_request",
        "bytes_per_second",
    ] {
        assert!(!v["traffic_details"][0][k].is_null(), "{k} missing: {v}");
    }
    for k in [
        "total_bytes",
        "total_mb",
        "total_requests",
        "avg_bytes_per_uid",
        "report_generated_at",
    ] {
        assert!(!v["summary"][k].is_null(), "{k} missing: {v}");
    }
    assert_eq!(v["min_bytes_threshold"], MIN_BYTES);
    assert_eq!(v["report_interval_seconds"], 1);
    assert!(ids >= 3, "{ids} distinct reports");
    receiver.down().await;
}
