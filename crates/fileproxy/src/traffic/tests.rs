//! Traffic accounting without a receiver: batching, spooling, saving and dropping.
//! (Delivery, retries and restarts against a real receiver: `tests/traffic_report.rs`.)

use super::*;
use crate::store::memory::MemoryStore;

fn cfg(url: &str, spool: &std::path::Path, min_bytes: u64) -> TrafficConfig {
    TrafficConfig {
        report_url: url.into(),
        api_key: "k".into(),
        interval_s: 3600,
        min_bytes,
        spool: "dir".into(),
        spool_dir: spool.display().to_string(),
        worker_id: "w1".into(),
        timeout_ms: 500,
        retry_max_s: 1,
    }
}

/// A URL nothing listens on (the port was bound, then released).
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/report")
}

async fn start(c: &TrafficConfig) -> Arc<Traffic> {
    let store: SharedStore = Arc::new(MemoryStore::new());
    Traffic::start(c, 1, store, Arc::new(Metrics::new()))
        .await
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn batches(dir: &std::path::Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("batch-") && n.ends_with(".json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| serde_json::from_slice(&std::fs::read(dir.join(n)).unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn qualified_uids_are_spooled_then_subtracted() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&cfg(&dead_url(), dir.path(), 1000)).await;
    t.record("u1", 600, FileClass::Segment, ip("10.0.0.1"), Some("s1"));
    t.record("u1", 500, FileClass::Playlist, ip("10.0.0.2"), Some("s1"));
    t.record("u2", 999, FileClass::Segment, ip("10.0.0.3"), None);
    assert!(t.cut().await);
    let b = batches(dir.path());
    assert_eq!(b.len(), 1);
    let p = &b[0];
    assert_eq!(p["total_qualified_uids"], 1);
    assert_eq!(p["worker_id"], "w1");
    assert_eq!(p["min_bytes_threshold"], 1000);
    assert_eq!(p["report_interval_seconds"], 3600);
    let d = &p["traffic_details"][0];
    assert_eq!(d["uid"], "u1");
    assert_eq!(d["total_bytes"], 1100);
    assert_eq!(d["request_count"], 2);
    assert_eq!(d["file_types"]["segment"], 600);
    assert_eq!(d["file_types"]["playlist"], 500);
    assert_eq!(d["unique_ips"], 2);
    assert_eq!(d["unique_sessions"], 1);
    assert_eq!(d["avg_bytes_per_request"], 550.0);
    assert_eq!(p["summary"]["total_bytes"], 1100);
    assert_eq!(p["summary"]["total_requests"], 2);
    assert!(p["report_id"].as_str().unwrap().len() >= 32);
    assert!(p["summary"]["report_generated_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    // u1 left memory, u2 (below the threshold) stays pending.
    let (uids, bytes, spooled) = t.gauges();
    assert_eq!((uids, bytes, spooled), (1, 999, 1));
    // Nothing new qualified: no second batch.
    assert!(!t.cut().await);
    t.record("u2", 1, FileClass::Segment, ip("10.0.0.3"), None);
    assert!(t.cut().await);
    let b = batches(dir.path());
    assert_eq!(b.len(), 2);
    assert_eq!(b[1]["traffic_details"][0]["uid"], "u2");
    assert_eq!(b[1]["traffic_details"][0]["total_bytes"], 1000);
    assert_ne!(b[0]["report_id"], b[1]["report_id"]);
    t.stop.cancel();
}

#[tokio::test]
async fn failed_delivery_keeps_batch_and_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&cfg(&dead_url(), dir.path(), 10)).await;
    t.record("u1", 100, FileClass::Segment, ip("10.0.0.1"), None);
    assert!(t.cut().await);
    t.deliver(None).await;
    assert_eq!(batches(dir.path()).len(), 1);
    assert_eq!(t.metrics.traffic_reports_failed.get(), 1);
    let v = t.view_json(10);
    assert_eq!(v["reporting"]["spooled_batches"], 1);
    assert_eq!(v["reporting"]["consecutive_failures"], 1);
    assert!(v["reporting"]["last_error"]
        .as_str()
        .unwrap()
        .contains("unreachable"));
    assert_eq!(v["spooled"][0]["uid"], "u1");
    t.stop.cancel();
}

#[tokio::test]
async fn shutdown_saves_and_start_restores_pending() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(&dead_url(), dir.path(), 1000);
    let t = start(&c).await;
    t.record("small", 300, FileClass::Segment, ip("10.0.0.1"), Some("s"));
    t.record("big", 5000, FileClass::Segment, ip("10.0.0.2"), None);
    t.shutdown().await;
    assert_eq!(batches(dir.path()).len(), 1, "big is cut into a batch");
    assert!(dir.path().join("pending.json").exists());

    let t2 = start(&c).await;
    assert!(
        !dir.path().join("pending.json").exists(),
        "taken, not copied"
    );
    let (uids, bytes, spooled) = t2.gauges();
    assert_eq!((uids, bytes, spooled), (1, 300, 1));
    t2.record("small", 700, FileClass::Segment, ip("10.0.0.9"), Some("s"));
    assert!(t2.cut().await);
    let b = batches(dir.path());
    let last = b
        .iter()
        .find(|p| p["traffic_details"][0]["uid"] == "small")
        .unwrap();
    assert_eq!(last["traffic_details"][0]["total_bytes"], 1000);
    assert_eq!(last["traffic_details"][0]["request_count"], 2);
    assert_eq!(last["traffic_details"][0]["unique_ips"], 2);
    assert_eq!(last["traffic_details"][0]["unique_sessions"], 1);
    t2.stop.cancel();
}

#[tokio::test]
async fn stale_uids_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&cfg(&dead_url(), dir.path(), 1000)).await;
    t.record("old", 10, FileClass::Segment, ip("10.0.0.1"), None);
    t.record("young", 10, FileClass::Segment, ip("10.0.0.1"), None);
    {
        let mut m = lock(t.shard("old"));
        if let Some(a) = m.get_mut("old") {
            a.start -= QUALIFY_WITHIN.as_secs_f64() + 1.0;
        }
    }
    assert!(!t.cut().await);
    assert_eq!(t.metrics.traffic_dropped_uids.get(), 1);
    assert_eq!(t.metrics.traffic_dropped_bytes.get(), 10);
    assert_eq!(t.gauges().0, 1);
    t.stop.cancel();
}

#[tokio::test]
async fn reporting_off_counts_locally() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&cfg("", dir.path(), 100)).await;
    t.record("u", 150, FileClass::Segment, ip("10.0.0.1"), None);
    assert!(t.cut().await);
    assert!(batches(dir.path()).is_empty());
    let v = t.view_json(10);
    assert_eq!(v["reporting"]["enabled"], false);
    assert_eq!(v["reported"][0]["uid"], "u");
    assert_eq!(v["reported"][0]["bytes"], 150);
    t.stop.cancel();
}

#[tokio::test]
async fn store_spool_when_chosen() {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let mut c = cfg(&dead_url(), std::path::Path::new(""), 10);
    c.spool = "store".into();
    c.spool_dir = String::new();
    let t = Traffic::start(&c, 1, store.clone(), Arc::new(Metrics::new()))
        .await
        .unwrap();
    t.record("u", 50, FileClass::Segment, ip("10.0.0.1"), None);
    t.record("v", 5, FileClass::Segment, ip("10.0.0.1"), None);
    t.shutdown().await;
    let index = store
        .get("fileproxy:traffic:spool:w1")
        .await
        .unwrap()
        .unwrap();
    assert!(index.contains("batch-"), "{index}");
    assert!(store
        .get("fileproxy:traffic:pending:w1")
        .await
        .unwrap()
        .is_some());
    let t2 = Traffic::start(&c, 1, store, Arc::new(Metrics::new()))
        .await
        .unwrap();
    assert_eq!(t2.gauges(), (1, 5, 1));
    t2.stop.cancel();
}

#[test]
fn default_worker_id_has_port() {
    assert!(default_worker_id(10080).ends_with(":10080"));
}

#[tokio::test]
async fn batch_names_sort_in_cut_order_even_if_the_clock_steps_back() {
    let dir = tempfile::tempdir().unwrap();
    // A batch spooled by an earlier run whose clock was ahead of ours.
    let future = "batch-999999999999990-00000000-0000-0000-0000-000000000000.json";
    let t = start(&cfg(&dead_url(), dir.path(), 1)).await;
    t.record("u1", 10, FileClass::Segment, ip("10.0.0.1"), None);
    assert!(t.cut().await);
    let body = std::fs::read(
        std::fs::read_dir(dir.path())
            .unwrap()
            .find_map(|e| {
                let n = e.unwrap().file_name().into_string().unwrap();
                n.starts_with("batch-").then(|| dir.path().join(n))
            })
            .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join(future), &body).unwrap();
    t.stop.cancel();

    let t2 = start(&cfg(&dead_url(), dir.path(), 1)).await;
    for uid in ["a", "b", "c"] {
        t2.record(uid, 10, FileClass::Segment, ip("10.0.0.1"), None);
        assert!(t2.cut().await);
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("batch-"))
        .collect();
    names.sort();
    let order: Vec<Value> = names
        .iter()
        .map(|n| {
            let p: Value =
                serde_json::from_slice(&std::fs::read(dir.path().join(n)).unwrap()).unwrap();
            p["traffic_details"][0]["uid"].clone()
        })
        .collect();
    assert_eq!(order, ["u1", "u1", "a", "b", "c"], "{names:?}");
    assert_eq!(batch_name_ms(future), Some(999_999_999_999_990));
    assert_eq!(batch_name_ms("batch-x.json"), None);
    t2.stop.cancel();
}
