//! Policy tests over the real in-process store (and a real, unreachable Redis client
//! for the fail-closed cases).

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{json, Value};

use super::session::{latest_key, session_key, SessionRecord};
use super::token::playlist_token;
use super::*;
use crate::config::StoreConfig;
use crate::store::memory::MemoryStore;
use crate::store::Store;

const SECRET: &str = "s3cr3t";
const KEY: &str = "wl-key";
const NOW: u64 = 1_700_000_000;
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1";

fn auth() -> AuthConfig {
    AuthConfig {
        secret: SECRET.into(),
        whitelist_api_key: KEY.into(),
        ..AuthConfig::default()
    }
}

fn setup(a: AuthConfig) -> (Policy, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    (Policy::new(&a, store.clone()), store)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn admit(p: &Policy, uid: &str, path: &str, client_ip: &str, ua: &str) -> Value {
    let body = json!({"uid": uid, "path": path, "clientIp": client_ip, "UserAgent": ua});
    p.admit(
        body.to_string().as_bytes(),
        Some(&format!("Bearer {KEY}")),
        NOW,
    )
    .await
    .unwrap()
}

/// A viewer request builder.
#[derive(Clone)]
struct R {
    ip: IpAddr,
    ua: String,
    path: String,
    uid: Option<String>,
    expires: Option<String>,
    token: Option<String>,
    cookie: Option<String>,
    now: u64,
}

impl R {
    fn new(ip_s: &str, ua: &str, path: &str) -> Self {
        Self {
            ip: ip(ip_s),
            ua: ua.into(),
            path: path.into(),
            uid: None,
            expires: None,
            token: None,
            cookie: None,
            now: NOW,
        }
    }

    /// Adds a valid signature for `uid`, expiring in an hour.
    fn signed(mut self, uid: &str) -> Self {
        let exp = (NOW + 3600).to_string();
        let bare = self.path.trim_start_matches('/').to_string();
        self.token = Some(playlist_token(SECRET.as_bytes(), uid, &bare, &exp));
        self.uid = Some(uid.into());
        self.expires = Some(exp);
        self
    }

    fn full_url(&self) -> String {
        format!(
            "http://cdn.example{}?uid={}&expires={}&token={}",
            self.path,
            self.uid.clone().unwrap_or_default(),
            self.expires.clone().unwrap_or_default(),
            self.token.clone().unwrap_or_default()
        )
    }

    async fn decide(&self, p: &Policy) -> Decision {
        let url = self.full_url();
        let req = AccessRequest {
            client_ip: self.ip,
            user_agent: &self.ua,
            path: &self.path,
            uid: self.uid.as_deref(),
            expires: self.expires.as_deref(),
            token: self.token.as_deref(),
            full_url: &url,
            session_cookie: self.cookie.as_deref(),
            now: self.now,
            head: false,
        };
        p.decide(&req).await
    }

    /// Decides, expects Allow, and runs the deferred writes.
    async fn allow(&self, p: &Policy) -> Allow {
        match self.decide(p).await {
            Decision::Allow(a) => {
                p.complete(a.pending.clone()).await.unwrap();
                *a
            }
            other => panic!("expected Allow for {}, got {other:?}", self.path),
        }
    }

    async fn deny(&self, p: &Policy) -> (u16, String, DenyReason) {
        match self.decide(p).await {
            Decision::Deny {
                status,
                body,
                reason,
            } => (status, body, reason),
            other => panic!("expected Deny for {}, got {other:?}", self.path),
        }
    }
}

#[tokio::test]
async fn whole_flow_admission_playlist_segment_second_playlist() {
    let (p, store) = setup(auth());
    let r = admit(
        &p,
        "u1",
        "/vod/2024-05-01/abc123/index.m3u8",
        "180.98.66.2",
        CHROME,
    )
    .await;
    assert_eq!(r["key_path"], json!("abc123"));
    assert_eq!(r["ip_pattern"], json!("180.98.66.0/24"));
    assert_eq!(r["ua_hash"], json!(network::ua_hash(CHROME)));
    assert_eq!(r["ttl"], json!(3600));

    // Playlist with a valid token: allowed, session created, cookie set.
    let pl = R::new("180.98.66.77", CHROME, "/vod/2024-05-01/abc123/index.m3u8").signed("u1");
    let a = pl.allow(&p).await;
    assert_eq!(a.class, FileClass::Playlist);
    assert_eq!(a.uid.as_deref(), Some("u1"));
    let SessionOutcome::Created { id } = &a.session else {
        panic!("{:?}", a.session)
    };
    let cookie = a.set_cookie.clone().unwrap();
    assert_eq!(
        cookie,
        format!("session_id_fileserver={id}; Path=/; Max-Age=7200; HttpOnly; SameSite=Lax")
    );
    let count = a.playlist.unwrap();
    assert_eq!(
        (count.count, count.limit.limit, count.limit.window_s),
        (1, 1, 120)
    );
    assert_eq!(count.ua.class, ua::UaClass::DesktopBrowser);
    // The Python keys exist with their TTLs.
    let raw = store.get(&session_key(id)).await.unwrap().unwrap();
    let rec = SessionRecord::parse(&raw).unwrap();
    assert_eq!(
        (
            rec.uid.as_str(),
            rec.client_ip.as_str(),
            rec.key_path.as_str()
        ),
        ("u1", "180.98.66.77", "abc123")
    );
    let uah = network::ua_hash(CHROME);
    let by_uid = session::ip_ua_session_key(ip("180.98.66.77"), &uah, "u1", "abc123");
    assert_eq!(
        store.get(&by_uid).await.unwrap().as_deref(),
        Some(id.as_str())
    );
    let user = session::user_active_session_key("u1", ip("180.98.66.77"));
    assert_eq!(
        store.get(&user).await.unwrap().as_deref(),
        Some(id.as_str())
    );
    assert!(store.ttl(&user).await.unwrap().unwrap().as_secs() > 7200);

    // Segment without uid: the latest index finds the session.
    let seg = R::new(
        "180.98.66.77",
        CHROME,
        "/vod/2024-05-01/abc123/720p/seg1.ts",
    );
    let a = seg.allow(&p).await;
    assert_eq!(a.class, FileClass::Segment);
    assert_eq!(a.uid.as_deref(), Some("u1"));
    assert_eq!(
        a.session,
        SessionOutcome::Reused {
            id: id.clone(),
            via: session::FoundVia::Latest
        }
    );
    assert_eq!(a.set_cookie, None);
    let rec = SessionRecord::parse(&store.get(&session_key(id)).await.unwrap().unwrap()).unwrap();
    assert_eq!(rec.access_count, 2);

    // The same playlist URL again: over the desktop limit of 1.
    let (status, body, reason) = pl.deny(&p).await;
    assert_eq!(
        (status, body.as_str(), reason),
        (
            403,
            "Access Denied 100308 with uid:u1",
            DenyReason::PlaylistLimit
        )
    );

    // A segment of another video, not admitted.
    let other = R::new("180.98.66.77", CHROME, "/vod/2024-05-01/zzz/seg1.ts");
    assert_eq!(
        other.deny(&p).await,
        (
            403,
            "Access Denied 100020 path".into(),
            DenyReason::WhitelistPathNotAdmitted
        )
    );
}

#[tokio::test]
async fn every_denial_text() {
    let (p, store) = setup(auth());
    admit(&p, "u1", "/media/xyz/index.m3u8", "10.0.0.1", IPHONE).await;
    let base = R::new("10.0.0.9", IPHONE, "/media/xyz/index.m3u8");

    // Whitelist: no entry (other UA), no key path, path not admitted.
    let mut other_ua = base.clone();
    other_ua.ua = CHROME.into();
    assert_eq!(
        other_ua.deny(&p).await,
        (
            403,
            "Access Denied 100020 path".into(),
            DenyReason::WhitelistNoEntry
        )
    );
    let mut other_net = base.clone();
    other_net.ip = ip("10.0.1.9");
    assert_eq!(other_net.deny(&p).await.2, DenyReason::WhitelistNoEntry);
    let no_kp = R::new("10.0.0.9", IPHONE, "/index.m3u8");
    assert_eq!(
        no_kp.deny(&p).await,
        (
            403,
            "Access Denied 100020 path".into(),
            DenyReason::NoKeyPath
        )
    );

    // Missing parameters (each one), then bad token, then expired.
    let signed = base.clone().signed("u1");
    for strip in 0..3 {
        let mut r = signed.clone();
        match strip {
            0 => r.uid = None,
            1 => r.expires = None,
            _ => r.token = Some(String::new()),
        }
        assert_eq!(
            r.deny(&p).await,
            (
                400,
                ".m3u8 request missing required parameters (uid, expires, token)".into(),
                DenyReason::PlaylistMissingParams
            )
        );
    }
    let mut forged = signed.clone();
    forged.uid = Some("u2".into());
    assert_eq!(
        forged.deny(&p).await,
        (
            403,
            ".m3u8 request token invalid or expired hmac".into(),
            DenyReason::PlaylistBadToken
        )
    );
    let mut late = signed.clone();
    late.now = NOW + 3601;
    assert_eq!(
        late.deny(&p).await,
        (
            403,
            ".m3u8 request token invalid or expired hmac".into(),
            DenyReason::PlaylistExpired
        )
    );
    // A refused playlist creates no session.
    let uah = network::ua_hash(IPHONE);
    assert_eq!(
        store
            .get(&latest_key(ip("10.0.0.9"), &uah, "xyz"))
            .await
            .unwrap(),
        None
    );

    // The access count on a mobile UA: limit 1, then 100308.
    signed.allow(&p).await;
    assert_eq!(signed.deny(&p).await.1, "Access Denied 100308 with uid:u1");

    // No effective uid: a Python entry without uid, and no uid in the request.
    let entry = json!({"key_path": "nouid", "paths": [{"key_path": "nouid", "created_at": NOW}], "ip_patterns": ["10.0.0.0/24"]});
    let key = network::whitelist_key(&"10.0.0.0/24".parse().unwrap(), &uah);
    store
        .set(&key, &entry.to_string(), Duration::from_secs(60))
        .await
        .unwrap();
    let r = R::new("10.0.0.9", IPHONE, "/media/nouid/index.m3u8");
    assert_eq!(
        r.deny(&p).await,
        (
            403,
            "No valid UID for .m3u8 request".into(),
            DenyReason::PlaylistNoUid
        )
    );
    // The same request with a uid would create a session, so the uid check passes and the
    // missing-parameter check answers.
    let mut with_uid = r.clone();
    with_uid.uid = Some("u5".into());
    assert_eq!(with_uid.deny(&p).await.2, DenyReason::PlaylistMissingParams);
}

#[tokio::test]
async fn admission_errors() {
    let (p, _) = setup(auth());
    let good = json!({"uid": "u", "path": "/a/b/c.m3u8", "clientIp": "1.2.3.4", "UserAgent": "x"})
        .to_string();
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Bearer "),
        Some("wl-key2"),
        Some("Basic wl-key"),
    ] {
        let e = p.admit(good.as_bytes(), auth, NOW).await.unwrap_err();
        assert_eq!(e.status(), 403, "{auth:?}");
        assert!(e.body()["error"].is_string());
    }
    assert!(p
        .admit(good.as_bytes(), Some("bearer wl-key"), NOW)
        .await
        .is_ok());
    assert!(p.admit(good.as_bytes(), Some(KEY), NOW).await.is_ok());
    for (body, want) in [
        ("{", 400),
        (
            r#"{"uid": "u", "path": "/a/b/c.m3u8", "clientIp": "1.2.3.4"}"#,
            400,
        ),
        (
            r#"{"uid": "u", "path": "/a/b/c.m3u8", "clientIp": "999.1.1.1", "UserAgent": "x"}"#,
            400,
        ),
        (
            r#"{"uid": "u", "path": "/c.m3u8", "clientIp": "1.2.3.4", "UserAgent": "x"}"#,
            400,
        ),
    ] {
        let e = p
            .admit(body.as_bytes(), Some(&format!("Bearer {KEY}")), NOW)
            .await
            .unwrap_err();
        assert_eq!(e.status(), want, "{body}");
    }
    // With no key configured, nobody is admitted.
    let (open, _) = setup(AuthConfig {
        whitelist_api_key: Default::default(),
        ..auth()
    });
    assert_eq!(
        open.admit(good.as_bytes(), Some("Bearer "), NOW)
            .await
            .unwrap_err()
            .status(),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admissions_all_land() {
    let (p, store) = setup(AuthConfig {
        max_paths_per_cidr: 8,
        ..auth()
    });
    let p = Arc::new(p);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            admit(&p, "u", &format!("/v/k{i}/index.m3u8"), "5.6.7.8", CHROME).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let key = network::whitelist_key(&"5.6.7.0/24".parse().unwrap(), &network::ua_hash(CHROME));
    let e = whitelist::WhitelistEntry::parse(&store.get(&key).await.unwrap().unwrap()).unwrap();
    let mut got: Vec<&str> = e.allowed_paths().collect();
    got.sort_unstable();
    assert_eq!(got, ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"]);
    let ttl = store.ttl(&key).await.unwrap().unwrap();
    assert!(ttl.as_secs() > 3500 && ttl.as_secs() <= 3600);
}

#[tokio::test]
async fn fifo_of_key_paths_through_the_api() {
    let (p, _) = setup(auth());
    for k in ["k1", "k2", "k3", "k1", "k4"] {
        admit(&p, "u", &format!("/v/{k}/i.m3u8"), "5.6.7.8", CHROME).await;
    }
    // k1 was refreshed, so adding k4 dropped k2.
    let seg = |k: &str| R::new("5.6.7.9", CHROME, &format!("/v/{k}/s.ts"));
    for k in ["k1", "k3", "k4"] {
        seg(k).allow(&p).await;
    }
    assert_eq!(
        seg("k2").deny(&p).await.2,
        DenyReason::WhitelistPathNotAdmitted
    );
    let r = admit(&p, "u", "/v/k5/i.m3u8", "5.6.7.8", CHROME).await;
    assert_eq!(r["multi_path_info"]["paths"], json!(["k1", "k4", "k5"]));
    assert_eq!(r["multi_path_info"]["dropped_paths"], json!(["k3"]));
    assert_eq!(r["patterns_new"], json!(0));
}

#[tokio::test]
async fn forged_cookie_other_ip_or_ua_is_not_honoured() {
    let (p, _) = setup(auth());
    const UA2: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0";
    admit(&p, "wl", "/v/abc/i.m3u8", "7.7.7.1", CHROME).await;
    admit(&p, "wl", "/v/abc/i.m3u8", "7.7.7.1", UA2).await;
    // Viewer A creates a session with its own uid.
    let a = R::new("7.7.7.1", CHROME, "/v/abc/i.m3u8")
        .signed("alice")
        .allow(&p)
        .await;
    let SessionOutcome::Created { id } = a.session else {
        panic!()
    };

    // Another IP in the same /24, same UA, presenting A's cookie: not A's session.
    let mut b = R::new("7.7.7.2", CHROME, "/v/abc/s1.ts");
    b.cookie = Some(id.clone());
    let got = b.allow(&p).await;
    assert_eq!(
        (got.uid.as_deref(), got.session),
        (Some("wl"), SessionOutcome::None)
    );
    // Same IP, other UA, A's cookie: not honoured either.
    let mut c = R::new("7.7.7.1", UA2, "/v/abc/s1.ts");
    c.cookie = Some(id.clone());
    let got = c.allow(&p).await;
    assert_eq!(
        (got.uid.as_deref(), got.session),
        (Some("wl"), SessionOutcome::None)
    );
    // A junk cookie never reaches the store as a key.
    let mut d = R::new("7.7.7.1", UA2, "/v/abc/s1.ts");
    d.cookie = Some("*".into());
    assert_eq!(d.allow(&p).await.session, SessionOutcome::None);
    // Viewer A itself keeps its session.
    let own = R::new("7.7.7.1", CHROME, "/v/abc/s1.ts").allow(&p).await;
    assert_eq!(own.uid.as_deref(), Some("alice"));
    assert!(matches!(own.session, SessionOutcome::Reused { .. }));
}

#[tokio::test]
async fn request_uid_finds_its_own_session_before_the_latest() {
    let (p, _) = setup(AuthConfig {
        playlist_limits: PlaylistLimits {
            browsers: [("chrome".to_string(), 10)].into(),
            ..PlaylistLimits::default()
        },
        ..auth()
    });
    admit(&p, "wl", "/v/abc/i.m3u8", "8.8.8.8", CHROME).await;
    let s1 = R::new("8.8.8.8", CHROME, "/v/abc/i.m3u8")
        .signed("u1")
        .allow(&p)
        .await;
    let s2 = R::new("8.8.8.8", CHROME, "/v/abc/i.m3u8").signed("u2");
    // u2 has no session: (a) misses, (b) finds u1's latest session.
    let got = s2.allow(&p).await;
    assert_eq!(got.uid.as_deref(), Some("u1"));
    assert!(matches!(
        got.session,
        SessionOutcome::Reused {
            via: session::FoundVia::Latest,
            ..
        }
    ));
    let SessionOutcome::Created { id: id1 } = s1.session else {
        panic!()
    };
    // With uid=u1 the (a) index names the same session as the latest: one read.
    let mut seg = R::new("8.8.8.8", CHROME, "/v/abc/s.ts");
    seg.uid = Some("u1".into());
    assert_eq!(
        seg.allow(&p).await.session,
        SessionOutcome::Reused {
            id: id1,
            via: session::FoundVia::RequestUid
        }
    );
    // A segment with a fresh uid and no session of its own reuses the latest too.
    seg.uid = Some("u3".into());
    assert_eq!(seg.allow(&p).await.uid.as_deref(), Some("u1"));
}

#[tokio::test]
async fn python_written_entries_and_sessions_are_used() {
    let (p, store) = setup(auth());
    let ua = IPHONE;
    let uah = network::ua_hash(ua);
    let ttl = Duration::from_secs(600);
    // A whitelist entry exactly as the Python version writes it (floats, extras).
    let entry = format!(
        r#"{{"uid": "py-user", "key_path": "vid9", "paths": [{{"key_path": "vid8", "created_at": 1699999000.5}}, {{"key_path": "vid9", "created_at": 1699999999.1}}],
            "ip_patterns": ["203.0.113.0/24"], "user_agent": "{ua}", "created_at": 1699999000.5, "worker_pid": 4242, "cidr_examples": ["203.0.113.1"]}}"#
    );
    store
        .set(&format!("ip_cidr_access:203.0.113.0_24:{uah}"), &entry, ttl)
        .await
        .unwrap();
    // A Python session for the whitelist uid, with no latest index of ours.
    let sid = "0b7e2f0c-5a41-4f1e-9d51-1e6a8cf3f0aa";
    let sess = format!(
        r#"{{"uid": "py-user", "client_ip": "203.0.113.5", "user_agent": "{ua}", "path": "/m/vid9/index.m3u8", "key_path": "vid9",
            "created_at": 1699999999.9, "last_activity": 1699999999.9, "worker_pid": 4242, "access_count": 7, "session_type": "m3u8", "note": "py"}}"#
    );
    store.set(&session_key(sid), &sess, ttl).await.unwrap();
    store
        .set(
            &format!("ip_ua_session:203.0.113.5:{uah}:py-user:vid9"),
            sid,
            ttl,
        )
        .await
        .unwrap();

    let seg = R::new("203.0.113.5", ua, "/m/vid9/seg3.ts");
    let a = seg.allow(&p).await;
    assert_eq!(a.uid.as_deref(), Some("py-user"));
    assert_eq!(
        a.session,
        SessionOutcome::Reused {
            id: sid.into(),
            via: session::FoundVia::WhitelistUid
        }
    );
    // The touch kept Python's fields, counted the use and wrote our index.
    let v: Value =
        serde_json::from_str(&store.get(&session_key(sid)).await.unwrap().unwrap()).unwrap();
    assert_eq!(v["access_count"], json!(8));
    assert_eq!(v["note"], json!("py"));
    assert_eq!(v["session_type"], json!("m3u8"));
    assert_eq!(v["last_activity"], json!(NOW));
    assert!(
        store
            .ttl(&session_key(sid))
            .await
            .unwrap()
            .unwrap()
            .as_secs()
            > 7000
    );
    // Next time our index answers.
    assert_eq!(
        seg.allow(&p).await.session,
        SessionOutcome::Reused {
            id: sid.into(),
            via: session::FoundVia::Latest
        }
    );
    // The older admitted path works too; an unknown one does not.
    R::new("203.0.113.77", ua, "/m/vid8/seg1.ts")
        .allow(&p)
        .await;
    assert_eq!(
        R::new("203.0.113.5", ua, "/m/vid7/seg1.ts")
            .deny(&p)
            .await
            .2,
        DenyReason::WhitelistPathNotAdmitted
    );

    // A Python session found by its cookie (same IP, UA and key path).
    let sid2 = "1c7e2f0c-5a41-4f1e-9d51-1e6a8cf3f0bb";
    let sess2 = sess
        .replace("py-user", "cookie-user")
        .replace("203.0.113.5", "203.0.113.6");
    store.set(&session_key(sid2), &sess2, ttl).await.unwrap();
    let mut c = R::new("203.0.113.6", ua, "/m/vid9/seg3.ts");
    c.cookie = Some(sid2.to_uppercase());
    let a = c.allow(&p).await;
    assert_eq!(a.uid.as_deref(), Some("cookie-user"));
    assert_eq!(
        a.session,
        SessionOutcome::Reused {
            id: sid2.into(),
            via: session::FoundVia::Cookie
        }
    );
    // An entry written by us re-admitting the Python entry keeps its extra fields.
    admit(&p, "py-user", "/m/vid10/index.m3u8", "203.0.113.9", ua).await;
    let v: Value = serde_json::from_str(
        &store
            .get(&format!("ip_cidr_access:203.0.113.0_24:{uah}"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["cidr_examples"], json!(["203.0.113.1"]));
    assert_eq!(v["paths"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn ipv6_admissions_by_address_and_prefix() {
    let (p, _) = setup(auth());
    admit(&p, "u6", "/v/six/i.m3u8", "2001:db8:1:2::1", CHROME).await;
    R::new("2001:db8:1:2::1", CHROME, "/v/six/s.ts")
        .allow(&p)
        .await;
    assert_eq!(
        R::new("2001:db8:1:2::2", CHROME, "/v/six/s.ts")
            .deny(&p)
            .await
            .2,
        DenyReason::WhitelistNoEntry
    );
    admit(&p, "u6", "/v/six/i.m3u8", "2001:db8:1::/48", CHROME).await;
    let a = R::new("2001:db8:1:ffff::9", CHROME, "/v/six/s.ts")
        .allow(&p)
        .await;
    assert_eq!(
        a.whitelist,
        WhitelistOutcome::Entry {
            network: "2001:db8:1::/48".parse().unwrap()
        }
    );
    // IPv4 seen as IPv4-mapped IPv6 matches its /24.
    admit(&p, "u4", "/v/four/i.m3u8", "192.0.2.10", CHROME).await;
    R::new("::ffff:192.0.2.200", CHROME, "/v/four/s.ts")
        .allow(&p)
        .await;
}

#[tokio::test]
async fn skip_validation_fixed_ips_and_safe_key_redirect() {
    let (p, _) = setup(AuthConfig {
        fixed_ip_whitelist: vec!["192.168.50.0/24".parse().unwrap()],
        safe_key_redirect_base: "https://keys.example/".into(),
        ..auth()
    });
    // Skip-validation suffixes never touch the store.
    let a = R::new("1.1.1.1", "", "/any/where/logo.PNG").allow(&p).await;
    assert_eq!(
        (a.whitelist, a.uid, a.class),
        (WhitelistOutcome::Skipped, None, FileClass::Static)
    );
    // Fixed IPs pass whitelist and session with uid fixed_whitelist; playlists still
    // need their token.
    let f = R::new("192.168.50.3", "curl/8", "/v/x/s.ts")
        .allow(&p)
        .await;
    assert_eq!(
        (f.whitelist, f.uid.as_deref()),
        (WhitelistOutcome::Fixed, Some(FIXED_WHITELIST_UID))
    );
    let fp = R::new("192.168.50.3", "curl/8", "/v/x/i.m3u8");
    assert_eq!(fp.deny(&p).await.2, DenyReason::PlaylistMissingParams);
    fp.clone().signed("x").allow(&p).await;
    // enc.key: redirect only once whitelisted.
    let k = R::new("4.4.4.4", CHROME, "/v/kk/enc.key");
    assert_eq!(k.deny(&p).await.2, DenyReason::WhitelistNoEntry);
    admit(&p, "u", "/v/kk/i.m3u8", "4.4.4.4", CHROME).await;
    assert_eq!(
        k.decide(&p).await,
        Decision::Redirect {
            location: "https://keys.example/v/kk/enc.key".into()
        }
    );
    // The Location is a URI: characters of the decoded path that are not literal in
    // a URI path are percent-encoded again.
    admit(&p, "u", "/v/a%23b%20%C3%A9%0A/i.m3u8", "4.4.4.4", CHROME).await;
    assert_eq!(
        R::new("4.4.4.4", CHROME, "/v/a#b \u{e9}\n/enc.key")
            .decide(&p)
            .await,
        Decision::Redirect {
            location: "https://keys.example/v/a%23b%20%C3%A9%0A/enc.key".into()
        }
    );
    assert!(matches!(
        R::new("192.168.50.3", CHROME, "/v/kk/enc.key")
            .decide(&p)
            .await,
        Decision::Redirect { .. }
    ));
    // Without a redirect base the key is served.
    let (p2, _) = setup(auth());
    admit(&p2, "u", "/v/kk/i.m3u8", "4.4.4.4", CHROME).await;
    assert_eq!(k.allow(&p2).await.class, FileClass::Key);
}

#[tokio::test]
async fn per_browser_limits_and_windows() {
    let mut a = auth();
    a.playlist_limits.browsers.insert("safari_mobile".into(), 3);
    let (p, store) = setup(a);
    admit(&p, "u", "/v/lim/i.m3u8", "9.9.9.9", IPHONE).await;
    let r = R::new("9.9.9.9", IPHONE, "/v/lim/i.m3u8").signed("u");
    for n in 1..=3 {
        assert_eq!(r.allow(&p).await.playlist.unwrap().count, n);
    }
    assert_eq!(r.deny(&p).await.2, DenyReason::PlaylistLimit);
    let key = playlist::access_count_key("u", &r.full_url(), ip("9.9.9.9"));
    let ttl = store.ttl(&key).await.unwrap().unwrap().as_secs();
    assert!(ttl > 170 && ttl <= 180, "{ttl}");
    // Another URL (new token) is another counter.
    let mut r2 = r.clone();
    r2.now += 1;
    let r2 = {
        let mut x = R::new("9.9.9.9", IPHONE, "/v/lim/i.m3u8");
        x.now = r2.now;
        let exp = (NOW + 7200).to_string();
        x.token = Some(playlist_token(SECRET.as_bytes(), "u", "v/lim/i.m3u8", &exp));
        x.uid = Some("u".into());
        x.expires = Some(exp);
        x
    };
    r2.allow(&p).await;
}

fn dead_redis() -> SharedStore {
    // A port nothing listens on: bind, take the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = StoreConfig {
        url: format!("redis://127.0.0.1:{port}").parse().unwrap(),
        op_timeout_ms: 300,
        ..StoreConfig::default()
    };
    Arc::new(crate::store::redis::RedisStore::new(&cfg).unwrap())
}

#[tokio::test]
async fn store_failure_fails_closed() {
    let a = AuthConfig {
        fixed_ip_whitelist: vec!["10.9.9.9".parse().unwrap()],
        ..auth()
    };
    let p = Policy::new(&a, dead_redis());
    let seg = R::new("1.2.3.4", CHROME, "/v/abc/s.ts");
    let (status, body, reason) = seg.deny(&p).await;
    assert_eq!((status, reason), (503, DenyReason::StoreUnavailable));
    assert!(reason.is_store_failure());
    assert_eq!(body, STORE_UNAVAILABLE_TEXT);
    // A fixed IP reads nothing until the playlist counter, which then fails closed.
    let pl = R::new("10.9.9.9", CHROME, "/v/abc/i.m3u8").signed("u");
    assert_eq!(pl.deny(&p).await.2, DenyReason::PlaylistCountUnavailable);
    // Skip-validation still works without a store.
    R::new("1.2.3.4", CHROME, "/v/abc/x.css").allow(&p).await;
    let good = json!({"uid": "u", "path": "/a/b/c.m3u8", "clientIp": "1.2.3.4", "UserAgent": "x"})
        .to_string();
    let e = p.admit(good.as_bytes(), Some(KEY), NOW).await.unwrap_err();
    assert_eq!(e.status(), 503);
}

#[tokio::test]
async fn explainers() {
    let (p, _) = setup(auth());
    admit(&p, "u1", "/v/abc/i.m3u8", "6.6.6.6", CHROME).await;
    let w = p
        .explain_whitelist(ip("6.6.6.7"), CHROME, "/v/abc/s.ts")
        .await
        .unwrap();
    assert_eq!(w["allowed"], json!(true));
    assert_eq!(w["matched_network"], json!("6.6.6.0/24"));
    assert_eq!(w["candidates"][0]["entry"]["uid"], json!("u1"));
    let w = p
        .explain_whitelist(ip("6.6.6.7"), CHROME, "/v/nope/s.ts")
        .await
        .unwrap();
    assert_eq!(w["allowed"], json!(false));
    let s = p
        .explain_session(ip("6.6.6.7"), CHROME, Some("u1"), "/v/abc/s.ts", None)
        .await
        .unwrap();
    assert_eq!(s["found"], Value::Null);
    R::new("6.6.6.7", CHROME, "/v/abc/i.m3u8")
        .signed("u1")
        .allow(&p)
        .await;
    let s = p
        .explain_session(ip("6.6.6.7"), CHROME, None, "/v/abc/s.ts", None)
        .await
        .unwrap();
    assert_eq!(s["found"]["via"], json!("latest"));
    assert_eq!(s["record"]["uid"], json!("u1"));
    let b = p.explain_browser(IPHONE);
    assert_eq!(
        (
            b["class"].as_str(),
            b["browser"].as_str(),
            b["window_s"].as_u64()
        ),
        (Some("mobile_browser"), Some("safari_mobile"), Some(180))
    );
}

/// The real in-process store, with a count of the calls (round trips) made to it.
struct Counting {
    inner: MemoryStore,
    calls: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn take(&self) -> usize {
        self.calls.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
    fn tick(&self) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Store for Counting {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        self.tick();
        self.inner.get_many(keys).await
    }
    async fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        self.tick();
        self.inner.write(writes).await
    }
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        self.tick();
        self.inner.ttl(key).await
    }
    async fn incr_window(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<crate::store::WindowCount, StoreError> {
        self.tick();
        self.inner.incr_window(key, window).await
    }
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.tick();
        self.inner.compare_and_set(key, expected, new, ttl).await
    }
    async fn push_capped(
        &self,
        key: &str,
        value: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.tick();
        self.inner.push_capped(key, value, cap, ttl).await
    }
    async fn list_range(&self, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.tick();
        self.inner.list_range(key, limit).await
    }
    async fn touch_member(
        &self,
        key: &str,
        member: &str,
        now_ms: u64,
        idle: Duration,
        max: u64,
    ) -> Result<crate::store::MemberTouch, StoreError> {
        self.tick();
        self.inner
            .touch_member(key, member, now_ms, idle, max)
            .await
    }
    async fn members_since(
        &self,
        key: &str,
        since_ms: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.tick();
        self.inner.members_since(key, since_ms).await
    }
    async fn incr_by_once(
        &self,
        key: &str,
        marker: &str,
        by: u64,
        window: Duration,
    ) -> Result<u64, StoreError> {
        self.tick();
        self.inner.incr_by_once(key, marker, by, window).await
    }
    async fn ping(&self) -> Result<Duration, StoreError> {
        self.tick();
        self.inner.ping().await
    }
    fn kind(&self) -> &'static str {
        "counting"
    }
}

/// Decides and returns (decision, critical round trips, deferred round trips).
async fn trips(p: &Policy, c: &Counting, r: &R) -> (Decision, usize, usize) {
    c.take();
    let d = r.decide(p).await;
    let critical = c.take();
    if let Decision::Allow(a) = &d {
        p.complete(a.pending.clone()).await.unwrap();
    }
    (d, critical, c.take())
}

#[tokio::test]
async fn round_trips_match_the_table_in_mod_rs() {
    let c = Arc::new(Counting {
        inner: MemoryStore::new(),
        calls: Default::default(),
    });
    let p = Policy::new(&auth(), c.clone());
    admit(&p, "u1", "/v/abc/i.m3u8", "1.2.3.4", CHROME).await;
    assert_eq!(
        c.take(),
        6,
        "admission: read + compare-and-set of the entry and of the uid's pairs, + the revocation feed read, + the admission log"
    );

    let seg = R::new("1.2.3.4", CHROME, "/v/abc/s.ts");
    // No session anywhere, no uid: first read + the whitelist uid's index.
    let (d, critical, deferred) = trips(&p, &c, &seg).await;
    assert!(matches!(d, Decision::Allow(_)));
    assert_eq!((critical, deferred), (2, 0));
    // Playlist creating a session: first read + the two counters (sent concurrently,
    // one round trip of latency); one deferred batch + the uid's session index.
    let pl = R::new("1.2.3.4", CHROME, "/v/abc/i.m3u8").signed("u1");
    let (d, critical, deferred) = trips(&p, &c, &pl).await;
    assert!(matches!(d, Decision::Allow(_)));
    assert_eq!((critical, deferred), (3, 2));
    // The common case: a segment whose session is in the latest index.
    let (d, critical, deferred) = trips(&p, &c, &seg).await;
    assert!(matches!(d, Decision::Allow(_)));
    assert_eq!((critical, deferred), (1, 3));
    // Same with the uid of that session in the query.
    let mut with_uid = seg.clone();
    with_uid.uid = Some("u1".into());
    assert_eq!(trips(&p, &c, &with_uid).await.1, 1);
    // IPv6 viewers: still one read (all candidate networks in one batch).
    admit(&p, "u6", "/v/abc/i.m3u8", "2001:db8::1", CHROME).await;
    c.take();
    let v6 = R::new("2001:db8::1", CHROME, "/v/abc/s.ts").signed("u6");
    assert_eq!(trips(&p, &c, &v6).await.1, 1);
    assert_eq!(trips(&p, &c, &v6).await.1, 1);
    // Refusals by the whitelist: one read.
    assert_eq!(
        trips(&p, &c, &R::new("9.9.9.9", CHROME, "/v/abc/s.ts"))
            .await
            .1,
        1
    );
    // Skip-validation: none.
    assert_eq!(
        trips(&p, &c, &R::new("9.9.9.9", CHROME, "/v/abc/a.css"))
            .await
            .1,
        0
    );
}

/// SPEC §13 costs: revocation 0 round trips; streams +1 and quota +1, only when on.
#[tokio::test]
async fn viewer_control_round_trips_match_the_table() {
    for (streams, quota, extra) in [(0, 0, 0), (2, 0, 1), (0, 1_000_000, 1), (2, 1_000_000, 2)] {
        let c = Arc::new(Counting {
            inner: MemoryStore::new(),
            calls: Default::default(),
        });
        let limits = crate::config::LimitsConfig {
            max_streams_per_uid: streams,
            uid_quota_bytes: quota,
            ..Default::default()
        };
        let p = Policy::new(&auth(), c.clone()).with_limits(&limits);
        admit(&p, "u1", "/v/abc/i.m3u8", "1.2.3.4", CHROME).await;
        let pl = R::new("1.2.3.4", CHROME, "/v/abc/i.m3u8").signed("u1");
        trips(&p, &c, &pl).await;
        let seg = R::new("1.2.3.4", CHROME, "/v/abc/s.ts");
        let (d, critical, _) = trips(&p, &c, &seg).await;
        assert!(matches!(d, Decision::Allow(_)), "{d:?}");
        assert_eq!(critical, 1 + extra, "streams {streams}, quota {quota}");
    }
}
