//! The access policy over a real `redis-server` (started on a free loopback port):
//! entries and sessions written the way the Python version writes them (plain `SET …
//! EX` with its JSON) are read, and what we write is readable as plain JSON by it.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fileproxy::access::token::playlist_token;
use fileproxy::access::{AccessRequest, Decision, Policy, SessionOutcome};
use fileproxy::config::{AuthConfig, StoreConfig};
use fileproxy::store::redis::RedisStore;
use serde_json::{json, Value};

struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_redis() -> RedisServer {
    // A free port can be taken by someone else before redis-server binds it: retry.
    for _attempt in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (CI installs it)");
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..400 {
            if let Ok(Some(_)) = server.child.try_wait() {
                break;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    panic!("redis-server did not start");
}

async fn raw(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn set_ex(c: &mut redis::aio::MultiplexedConnection, k: &str, v: &str, ttl: u64) {
    redis::cmd("SET")
        .arg(k)
        .arg(v)
        .arg("EX")
        .arg(ttl)
        .query_async::<()>(c)
        .await
        .unwrap();
}

async fn get(c: &mut redis::aio::MultiplexedConnection, k: &str) -> Option<String> {
    redis::cmd("GET").arg(k).query_async(c).await.unwrap()
}

const SECRET: &str = "redis-secret";
const KEY: &str = "redis-wl-key";
const NOW: u64 = 1_700_000_000;
const UA: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";

fn policy(port: u16) -> Policy {
    let store = RedisStore::new(&StoreConfig {
        url: format!("redis://127.0.0.1:{port}").parse().unwrap(),
        ..StoreConfig::default()
    })
    .unwrap();
    let auth = AuthConfig {
        secret: SECRET.into(),
        whitelist_api_key: KEY.into(),
        max_paths_per_cidr: 16,
        ..AuthConfig::default()
    };
    Policy::new(&auth, Arc::new(store))
}

async fn decide(p: &Policy, ip: &str, path: &str, signed_uid: Option<&str>) -> Decision {
    let exp = (NOW + 600).to_string();
    let token = signed_uid
        .map(|u| playlist_token(SECRET.as_bytes(), u, path.trim_start_matches('/'), &exp));
    let url = format!(
        "https://cdn.example{path}?uid={}&expires={exp}",
        signed_uid.unwrap_or("")
    );
    let req = AccessRequest {
        client_ip: ip.parse::<IpAddr>().unwrap(),
        user_agent: UA,
        path,
        uid: signed_uid,
        expires: signed_uid.map(|_| exp.as_str()),
        token: token.as_deref(),
        full_url: &url,
        session_cookie: None,
        now: NOW,
        head: false,
    };
    let d = p.decide(&req).await;
    if let Decision::Allow(a) = &d {
        p.complete(a.pending.clone()).await.unwrap();
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_rust_share_one_redis() {
    let server = start_redis().await;
    let mut c = raw(server.port).await;
    let p = policy(server.port);
    let uah = fileproxy::access::network::ua_hash(UA);

    // Python wrote an entry and a session (floats, extra fields, no index of ours).
    let entry = json!({"uid": "py", "key_path": "vid", "paths": [{"key_path": "vid", "created_at": 1699999999.5}],
        "ip_patterns": ["198.51.100.0/24"], "user_agent": UA, "created_at": 1699999999.5, "worker_pid": 11});
    set_ex(
        &mut c,
        &format!("ip_cidr_access:198.51.100.0_24:{uah}"),
        &entry.to_string(),
        3600,
    )
    .await;
    let sid = "2b7e2f0c-5a41-4f1e-9d51-1e6a8cf3f0cc";
    let sess = json!({"uid": "py", "client_ip": "198.51.100.7", "user_agent": UA, "path": "/m/vid/index.m3u8",
        "key_path": "vid", "created_at": 1699999999, "last_activity": 1699999999, "worker_pid": 11,
        "access_count": 1, "session_type": "m3u8"});
    set_ex(&mut c, &format!("session:{sid}"), &sess.to_string(), 7200).await;
    set_ex(
        &mut c,
        &format!("ip_ua_session:198.51.100.7:{uah}:py:vid"),
        sid,
        7200,
    )
    .await;

    // Our segment decision finds both, extends the session, writes our index.
    let Decision::Allow(a) = decide(&p, "198.51.100.7", "/m/vid/seg1.ts", None).await else {
        panic!("segment refused")
    };
    assert_eq!(a.uid.as_deref(), Some("py"));
    assert!(matches!(a.session, SessionOutcome::Reused { .. }));
    let v: Value =
        serde_json::from_str(&get(&mut c, &format!("session:{sid}")).await.unwrap()).unwrap();
    assert_eq!(v["access_count"], json!(2));
    let latest = format!("fp:latest:{{198.51.100.7:{uah}}}:vid");
    assert!(get(&mut c, &latest).await.is_some());

    // Concurrent admissions through Redis's compare-and-set all land.
    let p = Arc::new(p);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"uid": "py", "path": format!("/m/k{i}/index.m3u8"), "clientIp": "198.51.100.99", "UserAgent": UA});
            p.admit(body.to_string().as_bytes(), Some(&format!("Bearer {KEY}")), NOW).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stored: Value = serde_json::from_str(
        &get(&mut c, &format!("ip_cidr_access:198.51.100.0_24:{uah}"))
            .await
            .unwrap(),
    )
    .unwrap();
    let mut paths: Vec<String> = stored["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key_path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 11, "{paths:?}");
    assert!(paths.contains(&"vid".to_string()));
    // Integers where Python reads integers; its worker_pid replaced by ours.
    assert!(stored["created_at"].is_i64());
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("ip_cidr_access:198.51.100.0_24:{uah}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 3500 && ttl <= 3600, "{ttl}");

    // Playlist with a token: a session of our making that Python can read back.
    let Decision::Allow(a) = decide(&p, "198.51.100.8", "/m/k3/index.m3u8", Some("viewer")).await
    else {
        panic!("playlist refused")
    };
    let SessionOutcome::Created { id } = &a.session else {
        panic!("{:?}", a.session)
    };
    let v: Value =
        serde_json::from_str(&get(&mut c, &format!("session:{id}")).await.unwrap()).unwrap();
    for k in [
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
        assert!(v.get(k).is_some(), "{k}");
    }
    assert_eq!(
        get(
            &mut c,
            &format!("ip_ua_session:198.51.100.8:{uah}:viewer:k3")
        )
        .await
        .as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        get(&mut c, "user_active_session:viewer:198.51.100.8")
            .await
            .as_deref(),
        Some(id.as_str())
    );
    // The counter is a plain integer with the mobile window.
    let url = format!(
        "https://cdn.example/m/k3/index.m3u8?uid=viewer&expires={}",
        NOW + 600
    );
    let key = fileproxy::access::playlist::access_count_key(
        "viewer",
        &url,
        "198.51.100.8".parse().unwrap(),
    );
    assert_eq!(get(&mut c, &key).await.as_deref(), Some("1"));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 170 && ttl <= 180, "{ttl}");
    // The second identical playlist request is over the limit.
    match decide(&p, "198.51.100.8", "/m/k3/index.m3u8", Some("viewer")).await {
        Decision::Deny {
            status: 403, body, ..
        } => assert_eq!(body, "Access Denied 100308 with uid:viewer"),
        other => panic!("{other:?}"),
    }
}
