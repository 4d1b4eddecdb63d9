//! One conformance suite for every [`Store`] backend: each check runs against a
//! `MemoryStore` and against a `RedisStore` on a real `redis-server` started here;
//! the whole suite also runs against a 3-node Redis Cluster, over TLS, and through
//! Redis Sentinel (with and without passwords). Then Redis-only behaviour: password and
//! database from the URL, reconnecting after a restart, starting while Redis is down,
//! timing out while Redis is frozen, and following Sentinel failovers (master killed,
//! manual failover) with single-flight, rate-limited lookups.

mod support;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use fileproxy::config::StoreConfig;
use fileproxy::store::{self, update_json, SharedStore, StoreError, Write};
use support::redis::{free_port, RedisCluster, RedisSentinels, RedisServer, TlsFiles};

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(1000);
/// Sleep that outlasts [`SHORT`] by a wide margin.
const PAST_SHORT: Duration = Duration::from_millis(2200);

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn cfg(url: &str, op_timeout_ms: u64) -> StoreConfig {
    StoreConfig {
        url: url.parse().unwrap(),
        op_timeout_ms,
        ..StoreConfig::default()
    }
}

async fn open(url: &str) -> SharedStore {
    store::open(&cfg(url, 2_000)).await.unwrap()
}

type Check = fn(SharedStore) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every check, for the suites that run all of them on one backend.
const ALL: &[(&str, Check)] = &[
    ("get_set_ttl", |s| Box::pin(check_get_set_ttl(s))),
    ("get_many", |s| Box::pin(check_get_many(s))),
    ("write_batch", |s| Box::pin(check_write_batch(s))),
    ("incr_window", |s| Box::pin(check_incr_window(s))),
    ("incr_concurrent", |s| Box::pin(check_incr_concurrent(s))),
    ("compare_and_set", |s| Box::pin(check_compare_and_set(s))),
    ("update_json", |s| Box::pin(check_update_json(s))),
    ("push_capped", |s| Box::pin(check_push_capped(s))),
    ("type_errors", |s| Box::pin(check_type_errors(s))),
    ("ping", |s| Box::pin(check_ping(s))),
    ("touch_member", |s| Box::pin(check_touch_member(s))),
    ("touch_member_concurrent", |s| {
        Box::pin(check_touch_member_concurrent(s))
    }),
    ("incr_by_once", |s| Box::pin(check_incr_by_once(s))),
];

/// Runs `check` on a fresh memory store, then on a fresh Redis.
async fn on_both(check: Check) {
    let memory = open("memory://").await;
    assert_eq!(memory.kind(), "memory");
    check(memory).await;

    let server = RedisServer::start();
    let redis = open(&server.url()).await;
    assert_eq!(redis.kind(), "redis");
    check(redis).await;
}

macro_rules! conformance {
    ($($test:ident => $check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            on_both(|s| Box::pin($check(s))).await;
        }
    )*};
}

conformance! {
    get_set_ttl => check_get_set_ttl,
    get_many_with_missing_keys => check_get_many,
    write_batch_set_expire_delete => check_write_batch,
    incr_window_starts_at_first_and_is_not_extended => check_incr_window,
    incr_window_concurrent_total_is_exact => check_incr_concurrent,
    compare_and_set_absent_match_mismatch => check_compare_and_set,
    update_json_concurrent_updaters_all_land => check_update_json,
    push_capped_cap_order_and_range => check_push_capped,
    type_errors_are_malformed => check_type_errors,
    ping_answers => check_ping,
    touch_member_caps_refreshes_and_prunes => check_touch_member,
    touch_member_concurrent_newcomers_respect_the_cap => check_touch_member_concurrent,
    incr_by_once_counts_each_marker_once => check_incr_by_once,
}

async fn check_get_set_ttl(st: SharedStore) {
    assert_eq!(st.get("gs:k").await.unwrap(), None);
    assert_eq!(st.ttl("gs:k").await.unwrap(), None);

    st.set("gs:k", "v1", LONG).await.unwrap();
    assert_eq!(st.get("gs:k").await.unwrap(), s("v1"));
    let ttl = st.ttl("gs:k").await.unwrap().expect("ttl set");
    assert!(ttl > Duration::ZERO && ttl <= LONG, "{ttl:?}");

    st.set("gs:k", "v2", LONG).await.unwrap();
    assert_eq!(st.get("gs:k").await.unwrap(), s("v2"));

    st.set("gs:short", "x", SHORT).await.unwrap();
    assert!(st.ttl("gs:short").await.unwrap().unwrap_or_default() <= SHORT);
    // A zero TTL is clamped to 1 ms (Redis would reject PX 0): it expires at once.
    st.set("gs:zero", "x", Duration::ZERO).await.unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(st.get("gs:short").await.unwrap(), None);
    assert_eq!(st.ttl("gs:short").await.unwrap(), None);
    assert_eq!(st.get("gs:zero").await.unwrap(), None);
    assert_eq!(st.get("gs:k").await.unwrap(), s("v2"));
}

async fn check_get_many(st: SharedStore) {
    assert_eq!(
        st.get_many(&[]).await.unwrap(),
        Vec::<Option<String>>::new()
    );
    st.set("gm:a", "A", LONG).await.unwrap();
    st.set("gm:c", "C", LONG).await.unwrap();
    st.push_capped("gm:list", "x", 5, LONG).await.unwrap();
    // Many keys, so a cluster spreads them over several slots and nodes.
    let mut keys: Vec<String> = ["gm:a", "gm:b", "gm:c", "gm:a", "gm:list"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    let mut want = vec![s("A"), None, s("C"), s("A"), None];
    for i in 0..40 {
        let k = format!("gm:n{i}");
        if i % 3 == 0 {
            st.set(&k, &i.to_string(), LONG).await.unwrap();
            want.push(Some(i.to_string()));
        } else {
            want.push(None);
        }
        keys.push(k);
    }
    assert_eq!(st.get_many(&keys).await.unwrap(), want);
    // A list reads as missing, like MGET.
    assert_eq!(st.get("gm:list").await.unwrap(), None);
}

async fn check_write_batch(st: SharedStore) {
    st.write(&[]).await.unwrap();
    st.set("wb:del", "old", LONG).await.unwrap();
    let mut batch = vec![
        Write::Set {
            key: "wb:x".into(),
            value: "X".into(),
            ttl: LONG,
        },
        Write::Set {
            key: "wb:y".into(),
            value: "Y".into(),
            ttl: LONG,
        },
        Write::Expire {
            key: "wb:x".into(),
            ttl: SHORT,
        },
        Write::Delete {
            key: "wb:del".into(),
        },
        Write::Expire {
            key: "wb:missing".into(),
            ttl: LONG,
        },
        Write::Set {
            key: "wb:z".into(),
            value: "Z".into(),
            ttl: LONG,
        },
        Write::Delete { key: "wb:z".into() },
    ];
    for i in 0..20 {
        batch.push(Write::Set {
            key: format!("wb:n{i}"),
            value: i.to_string(),
            ttl: LONG,
        });
    }
    st.write(&batch).await.unwrap();

    assert_eq!(st.get("wb:x").await.unwrap(), s("X"));
    assert!(st.ttl("wb:x").await.unwrap().unwrap_or_default() <= SHORT);
    assert!(st.ttl("wb:y").await.unwrap().unwrap_or_default() > SHORT);
    assert_eq!(st.get("wb:del").await.unwrap(), None);
    assert_eq!(st.get("wb:z").await.unwrap(), None);
    assert_eq!(
        st.get("wb:missing").await.unwrap(),
        None,
        "EXPIRE creates nothing"
    );
    for i in 0..20 {
        assert_eq!(
            st.get(&format!("wb:n{i}")).await.unwrap(),
            Some(i.to_string())
        );
    }
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(st.get("wb:x").await.unwrap(), None);
    assert_eq!(st.get("wb:y").await.unwrap(), s("Y"));
}

async fn check_incr_window(st: SharedStore) {
    let window = Duration::from_secs(3);
    let first = st.incr_window("iw:c", window).await.unwrap();
    assert_eq!(first.count, 1);
    assert!(
        first.ttl > Duration::ZERO && first.ttl <= window,
        "{first:?}"
    );
    let pause = Duration::from_millis(500);
    tokio::time::sleep(pause).await;
    let second = st.incr_window("iw:c", window).await.unwrap();
    assert_eq!(second.count, 2);
    // Not extended: the window still ends where the first increment put it.
    assert!(second.ttl <= window - pause, "{second:?}");
    assert_eq!(st.get("iw:c").await.unwrap(), s("2"));
    assert!(st.ttl("iw:c").await.unwrap().unwrap_or_default() <= window - pause);

    // After the window the count starts over.
    assert_eq!(st.incr_window("iw:short", SHORT).await.unwrap().count, 1);
    assert_eq!(st.incr_window("iw:short", SHORT).await.unwrap().count, 2);
    tokio::time::sleep(PAST_SHORT).await;
    let again = st.incr_window("iw:short", SHORT).await.unwrap();
    assert_eq!(again.count, 1);
    assert!(again.ttl > Duration::ZERO && again.ttl <= SHORT);
}

async fn check_incr_concurrent(st: SharedStore) {
    let (tasks, each) = (16u64, 25u64);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let st = st.clone();
        handles.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..each {
                seen.push(st.incr_window("ic:c", LONG).await.unwrap().count);
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_unstable();
    // Every increment saw a distinct count: 1..=N, nothing lost or doubled.
    assert_eq!(all, (1..=tasks * each).collect::<Vec<_>>());
    assert_eq!(
        st.get("ic:c").await.unwrap(),
        Some((tasks * each).to_string())
    );
}

async fn check_compare_and_set(st: SharedStore) {
    assert!(st.compare_and_set("cas:k", None, "a", LONG).await.unwrap());
    assert_eq!(st.get("cas:k").await.unwrap(), s("a"));
    assert!(st.ttl("cas:k").await.unwrap().is_some());
    assert!(!st.compare_and_set("cas:k", None, "b", LONG).await.unwrap());
    assert!(!st
        .compare_and_set("cas:k", Some("x"), "b", LONG)
        .await
        .unwrap());
    assert_eq!(st.get("cas:k").await.unwrap(), s("a"));
    assert!(st
        .compare_and_set("cas:k", Some("a"), "b", LONG)
        .await
        .unwrap());
    assert_eq!(st.get("cas:k").await.unwrap(), s("b"));
    // Empty string is a value, not absence.
    assert!(!st
        .compare_and_set("cas:k", Some(""), "c", LONG)
        .await
        .unwrap());
    assert!(st.compare_and_set("cas:e", None, "", LONG).await.unwrap());
    assert!(!st.compare_and_set("cas:e", None, "x", LONG).await.unwrap());
    assert!(st
        .compare_and_set("cas:e", Some(""), "x", LONG)
        .await
        .unwrap());

    assert!(!st
        .compare_and_set("cas:missing", Some("a"), "z", LONG)
        .await
        .unwrap());
    assert_eq!(st.get("cas:missing").await.unwrap(), None);

    // The TTL applies, and an expired key counts as absent.
    assert!(st.compare_and_set("cas:t", None, "v", SHORT).await.unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    assert!(st.compare_and_set("cas:t", None, "w", LONG).await.unwrap());
    assert_eq!(st.get("cas:t").await.unwrap(), s("w"));
}

async fn check_update_json(st: SharedStore) {
    let n = 50u32;
    let mut handles = Vec::new();
    for i in 0..n {
        let st = st.clone();
        handles.push(tokio::spawn(async move {
            update_json(st.as_ref(), "uj:list", LONG, |cur| {
                let mut v: Vec<u32> = cur
                    .map(|c| serde_json::from_str(c).unwrap())
                    .unwrap_or_default();
                v.push(i);
                Some(serde_json::to_string(&v).unwrap())
            })
            .await
        }));
    }
    for h in handles {
        assert!(h.await.unwrap().unwrap().is_some());
    }
    let stored: Vec<u32> =
        serde_json::from_str(&st.get("uj:list").await.unwrap().unwrap()).unwrap();
    assert_eq!(stored.len(), n as usize);
    assert_eq!(
        stored.iter().copied().collect::<BTreeSet<_>>(),
        (0..n).collect()
    );

    // `None` from f leaves the key alone; the written value is returned.
    let before = st.get("uj:list").await.unwrap();
    assert_eq!(
        update_json(st.as_ref(), "uj:list", LONG, |_| None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(st.get("uj:list").await.unwrap(), before);
    assert_eq!(
        update_json(st.as_ref(), "uj:new", SHORT, |cur| {
            assert_eq!(cur, None);
            Some("[1]".into())
        })
        .await
        .unwrap(),
        s("[1]")
    );
    assert!(st.ttl("uj:new").await.unwrap().unwrap_or_default() <= SHORT);
}

async fn check_push_capped(st: SharedStore) {
    assert_eq!(
        st.list_range("pc:missing", 10).await.unwrap(),
        Vec::<String>::new()
    );
    for i in 1..=7 {
        st.push_capped("pc:l", &i.to_string(), 5, LONG)
            .await
            .unwrap();
    }
    assert_eq!(
        st.list_range("pc:l", 10).await.unwrap(),
        ["7", "6", "5", "4", "3"]
    );
    assert_eq!(st.list_range("pc:l", 2).await.unwrap(), ["7", "6"]);
    assert_eq!(
        st.list_range("pc:l", 0).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(st.list_range("pc:l", usize::MAX).await.unwrap().len(), 5);
    assert!(st.ttl("pc:l").await.unwrap().unwrap_or_default() > SHORT);

    // Each push resets the TTL (here to a shorter one), and the list then expires.
    st.push_capped("pc:l", "8", 5, SHORT).await.unwrap();
    assert!(st.ttl("pc:l").await.unwrap().unwrap_or_default() <= SHORT);
    assert_eq!(st.list_range("pc:l", 1).await.unwrap(), ["8"]);
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        st.list_range("pc:l", 10).await.unwrap(),
        Vec::<String>::new()
    );

    // Cap 1 keeps only the newest; cap 0 keeps nothing.
    st.push_capped("pc:one", "a", 1, LONG).await.unwrap();
    st.push_capped("pc:one", "b", 1, LONG).await.unwrap();
    assert_eq!(st.list_range("pc:one", 10).await.unwrap(), ["b"]);
    st.push_capped("pc:one", "c", 0, LONG).await.unwrap();
    assert_eq!(
        st.list_range("pc:one", 10).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(st.ttl("pc:one").await.unwrap(), None);
}

fn assert_malformed<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    assert!(matches!(r, Err(StoreError::Malformed(_))), "{r:?}");
}

async fn check_type_errors(st: SharedStore) {
    st.set("te:str", "abc", LONG).await.unwrap();
    st.push_capped("te:list", "x", 3, LONG).await.unwrap();
    assert_malformed(st.incr_window("te:str", LONG).await);
    assert_malformed(st.incr_window("te:list", LONG).await);
    assert_malformed(st.compare_and_set("te:list", None, "v", LONG).await);
    assert_malformed(st.push_capped("te:str", "x", 3, LONG).await);
    assert_malformed(st.list_range("te:str", 3).await);
    // Nothing was changed by the failed calls.
    assert_eq!(st.get("te:str").await.unwrap(), s("abc"));
    assert_eq!(st.list_range("te:list", 5).await.unwrap(), ["x"]);
}

async fn check_ping(st: SharedStore) {
    st.ping().await.unwrap();
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Concurrent streams of SPEC §13: a set of members scored by last-seen time.
async fn check_touch_member(st: SharedStore) {
    let key = "tm:{u1}";
    let idle = Duration::from_secs(30);
    let t = now_ms();
    let a = st.touch_member(key, "a", t, idle, 2).await.unwrap();
    assert!(a.admitted);
    assert_eq!(a.count, 1);
    assert_eq!(
        st.touch_member(key, "b", t + 1, idle, 2)
            .await
            .unwrap()
            .count,
        2
    );
    // A third member is refused and not added; the two are untouched.
    let c = st.touch_member(key, "c", t + 2, idle, 2).await.unwrap();
    assert!(!c.admitted);
    assert_eq!(c.count, 2);
    // A known member is refreshed even at the cap.
    let a2 = st.touch_member(key, "a", t + 3, idle, 2).await.unwrap();
    assert!(a2.admitted);
    assert_eq!(a2.count, 2);
    let m = st.members_since(key, 0).await.unwrap();
    assert_eq!(m, [("a".to_string(), t + 3), ("b".to_string(), t + 1)]);
    assert_eq!(st.members_since(key, t + 2).await.unwrap().len(), 1);
    let ttl = st.ttl(key).await.unwrap().unwrap();
    assert!(
        ttl <= idle && ttl > idle - Duration::from_secs(5),
        "{ttl:?}"
    );
    // More than idle after both last requests: both are pruned and c gets a slot.
    let later = t + 3 + 30_000 + 1;
    let c = st.touch_member(key, "c", later, idle, 2).await.unwrap();
    assert!(c.admitted);
    assert_eq!(c.count, 1, "a (t+3) and b (t+1) are both idle past 30 s");
    // Cap 0 admits nothing and leaves no key behind.
    let z = st.touch_member("tm:{u2}", "a", t, idle, 0).await.unwrap();
    assert_eq!((z.admitted, z.count), (false, 0));
    assert_eq!(st.members_since("tm:{u2}", 0).await.unwrap(), []);
    // The set expires with its TTL.
    st.touch_member("tm:{u3}", "a", t, SHORT, 5).await.unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(st.members_since("tm:{u3}", 0).await.unwrap(), []);
    // Type errors are Malformed.
    st.set("tm:str", "x", LONG).await.unwrap();
    assert_malformed(st.touch_member("tm:str", "a", t, idle, 2).await);
    assert_malformed(st.members_since("tm:str", 0).await);
}

/// Many newcomers at once: exactly `max` get in.
async fn check_touch_member_concurrent(st: SharedStore) {
    let t = now_ms();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let st = st.clone();
            tokio::spawn(async move {
                st.touch_member("tmc:{u}", &format!("m{i}"), t, Duration::from_secs(30), 3)
                    .await
                    .unwrap()
                    .admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 3);
    assert_eq!(st.members_since("tmc:{u}", 0).await.unwrap().len(), 3);
}

/// Traffic quota of SPEC §13: increments that a retried batch does not repeat.
async fn check_incr_by_once(st: SharedStore) {
    let (k, w) = ("q:{u}:1", LONG);
    assert_eq!(st.incr_by_once(k, "q:{u}:1:b1", 100, w).await.unwrap(), 100);
    assert_eq!(st.incr_by_once(k, "q:{u}:1:b2", 50, w).await.unwrap(), 150);
    // The same batch again (a retry after a lost answer) changes nothing.
    assert_eq!(st.incr_by_once(k, "q:{u}:1:b1", 100, w).await.unwrap(), 150);
    assert_eq!(st.get(k).await.unwrap(), s("150"));
    assert!(st.ttl(k).await.unwrap().unwrap_or_default() > SHORT);
    // The window is set at creation and never extended.
    assert_eq!(
        st.incr_by_once("q:{s}", "q:{s}:a", 1, SHORT).await.unwrap(),
        1
    );
    assert_eq!(
        st.incr_by_once("q:{s}", "q:{s}:b", 1, LONG).await.unwrap(),
        2
    );
    assert!(st.ttl("q:{s}").await.unwrap().unwrap_or_default() <= SHORT);
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(st.get("q:{s}").await.unwrap(), None);
    // A retried marker on a counter that expired meanwhile reads as 0.
    assert_eq!(
        st.incr_by_once("q:{s}", "q:{s}:b", 1, LONG).await.unwrap(),
        0
    );
    // Concurrent distinct batches all land.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let st = st.clone();
            tokio::spawn(async move {
                st.incr_by_once("q:{c}", &format!("q:{{c}}:{i}"), 7, LONG)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(st.get("q:{c}").await.unwrap(), s("140"));
    st.push_capped("q:{list}", "x", 3, LONG).await.unwrap();
    assert_malformed(st.incr_by_once("q:{list}", "q:{list}:m", 1, LONG).await);
}

// ---------------------------------------------------------------------------
// Whole suite on other Redis deployments.

async fn run_all(st: SharedStore) {
    for (name, check) in ALL {
        eprintln!("check {name} on {}", st.kind());
        check(st.clone()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_redis_cluster() {
    let cluster = match RedisCluster::start(3, RedisServer::builder()) {
        Ok(c) => c,
        Err(e) if e.contains("cluster-enabled") || e.contains("Bad directive") => {
            eprintln!("SKIP: redis-server cannot run in cluster mode: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let st = open(&cluster.url()).await;
    assert_eq!(st.kind(), "redis-cluster");

    // Make sure multi-key operations really span nodes: keys on every node.
    let keys: Vec<String> = (0..30).map(|i| format!("span:{i}")).collect();
    let writes: Vec<Write> = keys
        .iter()
        .map(|k| Write::Set {
            key: k.clone(),
            value: format!("v-{k}"),
            ttl: LONG,
        })
        .collect();
    st.write(&writes).await.unwrap();
    for node in &cluster.nodes {
        let n: u64 = node.cli(&["DBSIZE"]).parse().unwrap();
        assert!(n > 0, "node {} got no key", node.addr());
    }
    let got = st.get_many(&keys).await.unwrap();
    assert_eq!(
        got,
        keys.iter()
            .map(|k| Some(format!("v-{k}")))
            .collect::<Vec<_>>()
    );

    run_all(st).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsFiles::generate(dir.path());
    let server = match RedisServer::builder().tls(tls.clone()).try_start() {
        Ok(s) => s,
        Err(e) if e.contains("TLS") && e.contains("support") => {
            eprintln!("SKIP: redis-server was built without TLS: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(server.url().starts_with("rediss://"));

    // Without our CA the server's certificate is not trusted.
    let untrusted = store::open(&cfg(&server.url(), 2_000)).await.unwrap();
    assert!(
        matches!(untrusted.ping().await, Err(StoreError::Unavailable(_))),
        "a self-signed certificate must be rejected"
    );

    let st: SharedStore = store::open(&StoreConfig {
        tls_ca_file: tls.ca.to_string_lossy().into_owned(),
        ..cfg(&server.url(), 2_000)
    })
    .await
    .unwrap();
    run_all(st.clone()).await;
    // It really went to that server.
    st.set("tls:probe", "yes", LONG).await.unwrap();
    assert_eq!(server.cli(&["GET", "tls:probe"]), "yes");
}

// ---------------------------------------------------------------------------
// Redis-only behaviour.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_password_and_db_from_url() {
    let pw = "s3cr@t:pw/x";
    let server = RedisServer::builder().password(pw).start();
    let url = format!("{}/3", server.url());
    assert!(url.contains("%40"), "password is percent-encoded: {url}");
    let st = open(&url).await;
    st.set("pdb:k", "in-db-3", LONG).await.unwrap();
    assert_eq!(st.get("pdb:k").await.unwrap(), s("in-db-3"));
    assert_eq!(server.cli(&["-n", "3", "GET", "pdb:k"]), "in-db-3");
    assert_eq!(server.cli(&["-n", "0", "EXISTS", "pdb:k"]), "0");

    // A wrong password: the store still opens, operations fail, the message never
    // shows either password.
    let wrong = format!("redis://:wr0ngpw@127.0.0.1:{}/3", server.port);
    let bad = store::open(&cfg(&wrong, 1_000)).await.unwrap();
    let err = bad.get("pdb:k").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
        "{msg}"
    );
    assert!(!msg.contains("wr0ngpw") && !msg.contains(pw), "{msg}");

    // No password at all against a server that needs one.
    let none = store::open(&cfg(&format!("redis://127.0.0.1:{}", server.port), 1_000))
        .await
        .unwrap();
    assert!(none.get("pdb:k").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counter_without_ttl_gets_its_window() {
    let server = RedisServer::start();
    let st = open(&server.url()).await;
    // Written by someone else without a TTL (e.g. an older version).
    assert_eq!(server.cli(&["SET", "nottl:c", "5"]), "OK");
    assert_eq!(server.cli(&["PTTL", "nottl:c"]), "-1");
    let c = st.incr_window("nottl:c", LONG).await.unwrap();
    assert_eq!(c.count, 6);
    assert!(c.ttl > Duration::ZERO && c.ttl <= LONG);
    let pttl: i64 = server.cli(&["PTTL", "nottl:c"]).parse().unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
}

/// Polls `ping` until it succeeds; panics if it never does within `tries` × 100 ms.
async fn until_up(st: &SharedStore, tries: u32) {
    for _ in 0..tries {
        if st.ping().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("store never came back: {:?}", st.ping().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reconnects_after_restart_on_same_port() {
    let mut server = RedisServer::start();
    let st = store::open(&cfg(&server.url(), 500)).await.unwrap();
    st.set("rc:k", "before", LONG).await.unwrap();

    server.stop();
    let err = st.get("rc:k").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
        "{err:?}"
    );

    server.restart();
    until_up(&st, 200).await;
    // A fresh, empty server (no persistence): the old key is gone, new writes work.
    assert_eq!(st.get("rc:k").await.unwrap(), None);
    st.set("rc:k", "after", LONG).await.unwrap();
    assert_eq!(st.get("rc:k").await.unwrap(), s("after"));
    assert_eq!(server.cli(&["GET", "rc:k"]), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_opens_while_redis_is_down_and_connects_later() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let st = tokio::time::timeout(Duration::from_secs(30), store::open(&cfg(&url, 500)))
        .await
        .expect("open must not hang")
        .expect("an unreachable Redis is not a start-up error");
    assert!(st.ping().await.is_err());
    assert!(st.incr_window("down:c", LONG).await.is_err());

    let server = RedisServer::builder().port(port).start();
    until_up(&st, 200).await;
    assert_eq!(st.incr_window("down:c", LONG).await.unwrap().count, 1);
    assert_eq!(server.cli(&["GET", "down:c"]), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_times_out_while_frozen_then_recovers() {
    let mut server = RedisServer::start();
    let st = store::open(&cfg(&server.url(), 300)).await.unwrap();
    st.set("fz:a", "1", LONG).await.unwrap();

    server.pause();
    // Bounded by the op timeout, not a hang (the outer timeout only catches a hang).
    let bound = Duration::from_secs(20);
    let r = tokio::time::timeout(bound, st.get("fz:a"))
        .await
        .expect("hang");
    assert!(matches!(r, Err(StoreError::Timeout)), "{r:?}");
    let r = tokio::time::timeout(bound, st.incr_window("fz:c", LONG))
        .await
        .expect("hang");
    assert!(matches!(r, Err(StoreError::Timeout)), "{r:?}");
    let r = tokio::time::timeout(bound, st.ping()).await.expect("hang");
    assert!(matches!(r, Err(StoreError::Timeout)), "{r:?}");

    server.resume();
    until_up(&st, 200).await;
    // Late replies to the timed-out requests must not be handed to new ones.
    st.set("fz:b", "2", LONG).await.unwrap();
    assert_eq!(st.get("fz:a").await.unwrap(), s("1"));
    assert_eq!(st.get("fz:b").await.unwrap(), s("2"));
    assert_eq!(
        st.get_many(&["fz:b".into(), "fz:a".into()]).await.unwrap(),
        [s("2"), s("1")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_rejects_bad_urls() {
    // Not a store URL: refused when the configuration is read (the value is parsed
    // there, once), naming the key and never the password.
    for url in ["memory://x", "mongo://h", "mongo://:pw@h", "nothing"] {
        let env = [("FILEPROXY_STORE__URL".to_string(), url.to_string())];
        let Err(err) = fileproxy::config::Config::load_with_env(None, &env) else {
            panic!("{url} accepted");
        };
        let err = err.to_string();
        assert!(err.contains("store.url"), "{url}: {err}");
        assert!(!err.contains(":pw@"), "{err}");
    }
    // A Redis URL the client refuses: refused by `store::open`, the same way.
    let url = "redis://:pw@h:1/notadb";
    let Err(err) = store::open(&cfg(url, 100)).await else {
        panic!("{url} accepted");
    };
    let err = err.to_string();
    assert!(err.contains("store.url"), "{url}: {err}");
    assert!(!err.contains(":pw@"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_tls_cluster_with_password() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsFiles::generate(dir.path());
    let base = RedisServer::builder()
        .tls(tls.clone())
        .password("cl@ster pw");
    let cluster = match RedisCluster::start(3, base) {
        Ok(c) => c,
        Err(e) if e.contains("TLS") && e.contains("support") => {
            eprintln!("SKIP: redis-server was built without TLS: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let url = cluster.url();
    assert!(
        url.starts_with("rediss+cluster://:cl%40ster%20pw@"),
        "{url}"
    );
    let st: SharedStore = store::open(&StoreConfig {
        tls_ca_file: tls.ca.to_string_lossy().into_owned(),
        ..cfg(&url, 2_000)
    })
    .await
    .unwrap();
    assert_eq!(st.kind(), "redis-cluster");
    run_all(st).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_recovers_after_node_restart() {
    let mut cluster = RedisCluster::start(3, RedisServer::builder()).unwrap();
    let st = store::open(&cfg(&cluster.url(), 500)).await.unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("nr:{i}")).collect();
    for k in &keys {
        st.set(k, "v", LONG).await.unwrap();
    }
    let on_first = cluster.nodes[0].cli(&["KEYS", "nr:*"]);
    let k0 = on_first
        .lines()
        .next()
        .expect("node 0 holds a key")
        .to_string();

    cluster.nodes[0].stop();
    assert!(st.get(&k0).await.is_err());

    cluster.nodes[0].restart();
    cluster.wait_ok().unwrap();
    let mut ok = false;
    for _ in 0..200 {
        if st.set(&k0, "again", LONG).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "writes to the restarted node never worked again");
    assert_eq!(st.get(&k0).await.unwrap(), s("again"));
    // Keys of the nodes that stayed up are intact.
    let others: Vec<String> = keys.iter().filter(|k| **k != k0).cloned().collect();
    let got = st.get_many(&others).await.unwrap();
    let on_restarted: BTreeSet<String> = cluster.nodes[0]
        .cli(&["KEYS", "nr:*"])
        .lines()
        .map(str::to_string)
        .collect();
    for (k, v) in others.iter().zip(got) {
        // The restarted node lost its keys (no persistence); the others kept theirs.
        if !on_restarted.contains(k) && !on_first.lines().any(|l| l == k) {
            assert_eq!(v, s("v"), "{k}");
        }
    }
}

// ---------------------------------------------------------------------------
// Redis Sentinel.

fn sentinels(password: Option<&str>, sentinel_password: Option<&str>) -> RedisSentinels {
    RedisSentinels::start(password, sentinel_password).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_redis_sentinel() {
    let set = sentinels(None, None);
    let st = open(&set.url()).await;
    assert_eq!(st.kind(), "redis-sentinel");
    run_all(st.clone()).await;
    // It really went to the master, and says so.
    st.set("sn:probe", "yes", LONG).await.unwrap();
    assert_eq!(set.nodes[0].cli(&["GET", "sn:probe"]), "yes");
    assert_eq!(st.topology(), Some(set.nodes[0].addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_redis_sentinel_with_passwords_and_db() {
    let (pw, spw) = ("d@ta pw/1", "sent:nel&pw");
    let set = sentinels(Some(pw), Some(spw));
    let url = set.url().replacen("/m?", "/m/2?", 1);
    assert!(
        url.contains("/m/2?sentinel_password=sent%3Anel%26pw"),
        "{url}"
    );
    let st = open(&url).await;
    run_all(st.clone()).await;
    st.set("snp:k", "in-db-2", LONG).await.unwrap();
    assert_eq!(set.nodes[0].cli(&["-n", "2", "GET", "snp:k"]), "in-db-2");
    assert_eq!(set.nodes[0].cli(&["-n", "0", "EXISTS", "snp:k"]), "0");
    let debug = fileproxy::store::redis::RedisStore::new(&cfg(&url, 1_000)).unwrap();
    let shown = format!("{debug:?} {:?}", st.topology());
    for secret in [pw, spw, "d%40ta", "sent%3Anel"] {
        assert!(!shown.contains(secret), "{shown}");
    }

    // Wrong passwords, for the data nodes and for the sentinels: operations fail and
    // no message shows any password.
    let wrong_data = url.replacen("d%40ta", "wr0ng", 1);
    let wrong_sentinel = url.replacen("sent%3Anel", "wr0ng", 1);
    for bad in [wrong_data, wrong_sentinel] {
        let st = fileproxy::store::redis::RedisStore::new(&cfg(&bad, 1_000)).unwrap();
        let err = fileproxy::store::Store::get(&st, "snp:k")
            .await
            .unwrap_err();
        let msg = format!("{err} {err:?} {st:?}");
        assert!(
            matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
            "{msg}"
        );
        for secret in [pw, spw, "wr0ng", "d%40ta", "sent%3Anel"] {
            assert!(!msg.contains(secret), "{secret} in {msg}");
        }
    }
}

/// Sets `key` every 50 ms until a set fails and then one succeeds again; returns
/// (failures seen, time from `since` to the first success after them).
async fn writes_until_recovered(
    st: &SharedStore,
    key: &str,
    since: std::time::Instant,
    limit: Duration,
) -> (u32, Duration) {
    let mut failed = 0;
    loop {
        match st.set(key, "after", LONG).await {
            Ok(()) if failed > 0 => return (failed, since.elapsed()),
            Ok(()) => {}
            Err(_) => failed += 1,
        }
        assert!(
            since.elapsed() < limit,
            "no recovery within {limit:?} ({failed} failures)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_store_follows_the_replica_when_the_master_is_killed() {
    let mut set = sentinels(None, None);
    let st = store::open(&cfg(&set.url(), 300)).await.unwrap();
    st.set("fo:before", "1", LONG).await.unwrap();
    // Replicated before the kill, so the promoted replica has it.
    set.nodes[0].wait_replicated(Duration::from_secs(10));
    let started = std::time::Instant::now();
    set.nodes[0].stop();
    let (failed, recovered) =
        writes_until_recovered(&st, "fo:after", started, Duration::from_secs(60)).await;
    eprintln!(
        "FAILOVER | sentinel master killed | {failed} failed writes, writes work again after {:.2} s",
        recovered.as_secs_f64()
    );
    assert_eq!(set.master_index(&[0]), Some(1), "the replica was promoted");
    assert_eq!(set.nodes[1].cli(&["GET", "fo:after"]), "after");
    assert_eq!(st.get("fo:before").await.unwrap(), s("1"));
    assert_eq!(st.topology(), Some(set.nodes[1].addr()));
    // Scripts work on the new master (loaded there on first use if needed).
    assert_eq!(st.incr_window("fo:c", LONG).await.unwrap().count, 1);
    assert!(st.compare_and_set("fo:cas", None, "x", LONG).await.unwrap());
}

/// A frozen master (SIGSTOP) breaks no connection: only the operations' deadlines
/// tell, and they must start the lookup that finds the promoted replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_store_follows_the_replica_when_the_master_freezes() {
    let mut set = sentinels(None, None);
    let st = store::open(&cfg(&set.url(), 300)).await.unwrap();
    st.set("fz:before", "1", LONG).await.unwrap();
    set.nodes[0].wait_replicated(Duration::from_secs(10));
    let started = std::time::Instant::now();
    set.nodes[0].pause();
    let (failed, recovered) =
        writes_until_recovered(&st, "fz:after", started, Duration::from_secs(60)).await;
    eprintln!(
        "FAILOVER | sentinel master frozen | {failed} failed writes, writes work again after {:.2} s",
        recovered.as_secs_f64()
    );
    assert_eq!(set.nodes[1].cli(&["GET", "fz:after"]), "after");
    assert_eq!(st.get("fz:before").await.unwrap(), s("1"));
    assert_eq!(st.topology(), Some(set.nodes[1].addr()));
    set.nodes[0].stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_store_follows_a_manual_failover_of_a_live_master() {
    let set = sentinels(None, None);
    let st = store::open(&cfg(&set.url(), 500)).await.unwrap();
    st.set("mf:before", "1", LONG).await.unwrap();
    set.nodes[0].wait_replicated(Duration::from_secs(10));
    // The old master stays up and is turned into a replica (READONLY from then on).
    assert_eq!(
        set.sentinels[0].cli(&["SENTINEL", "FAILOVER", RedisSentinels::NAME]),
        "OK"
    );
    set.wait_master(1).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if st.set("mf:after", "2", LONG).await.is_ok()
            && set.nodes[1].cli(&["GET", "mf:after"]) == "2"
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writes never reached the new master"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(set.nodes[0].cli(&["ROLE"]).starts_with("slave"));
    assert_eq!(st.incr_window("mf:c", LONG).await.unwrap().count, 1);
    assert_eq!(set.nodes[1].cli(&["GET", "mf:c"]), "1");
    assert_eq!(st.get("mf:before").await.unwrap(), s("1"));
}

/// Commands the sentinels have processed so far (their `INFO` has no per-command
/// figures): our lookups plus their own chatter (pings between them).
fn sentinel_commands(set: &RedisSentinels) -> u64 {
    set.sentinels
        .iter()
        .map(|s| {
            s.cli(&["INFO", "stats"])
                .lines()
                .find_map(|l| l.strip_prefix("total_commands_processed:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_lookups_are_single_flight_and_rate_limited() {
    let mut set = sentinels(None, None);
    let st = store::open(&cfg(&set.url(), 300)).await.unwrap();
    st.set("sf:k", "1", LONG).await.unwrap();
    // The window ends before the sentinels even call the master down (1 s), so they
    // keep naming the dead master and every lookup fails.
    let window = Duration::from_millis(800);
    let quiet_start = sentinel_commands(&set);
    tokio::time::sleep(window).await;
    let chatter = sentinel_commands(&set) - quiet_start;

    let before = sentinel_commands(&set);
    set.nodes[0].stop();
    let started = std::time::Instant::now();
    // Waves of 1,000 concurrent reads against the dead master.
    let mut failed = 0;
    let mut asked = 0;
    while started.elapsed() < window {
        let reads = (0..1000).map(|_| {
            let st = st.clone();
            tokio::spawn(async move { st.get("sf:k").await.is_err() })
        });
        for r in futures_util::future::join_all(reads).await {
            asked += 1;
            failed += usize::from(r.unwrap());
        }
    }
    let elapsed = started.elapsed();
    let made = sentinel_commands(&set) - before;
    // One lookup asks at most 3 sentinels, and lookups start at most every 250 ms;
    // plus the sentinels' own chatter (measured over the same time before the kill,
    // doubled for slack).
    let lookups_bound = 3 * (elapsed.as_millis() as u64 / 250 + 2);
    let bound = lookups_bound + 2 * chatter + 10;
    eprintln!(
        "FAILOVER | lookups while the master is dead | {failed}/{asked} reads failed; \
         sentinels processed {made} commands in {:.2} s (chatter alone {chatter}; bound {bound})",
        elapsed.as_secs_f64()
    );
    assert_eq!(failed, asked, "reads against a dead master succeeded?");
    assert!(asked >= 1000);
    assert!(
        made <= bound,
        "{made} sentinel commands > {bound}: lookups not shared"
    );
    // And the store is not stuck: after the failover it works again.
    let (_, recovered) =
        writes_until_recovered(&st, "sf:after", started, Duration::from_secs(60)).await;
    assert!(recovered > Duration::ZERO);
}
