//! Policy tests of the SPEC §9 rules over the real in-process store.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{json, Value};

use super::js::JsCredentials;
use super::keyprotect::{self, key_token};
use super::token::playlist_token;
use super::*;
use crate::config::{ClassLimit, ProtectConfig};
use crate::store::memory::MemoryStore;
use crate::store::Store;

const SECRET: &str = "s3cr3t";
const KEY: &str = "wl-key";
const JS_SECRET: &str = "js-s3cr3t";
const NOW: u64 = 1_700_000_000;
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36";

fn auth() -> AuthConfig {
    let mut a = AuthConfig {
        secret: SECRET.into(),
        whitelist_api_key: KEY.into(),
        ..AuthConfig::default()
    };
    // Generous playlist limits so the §9 counters are what refuses.
    let generous = ClassLimit {
        limit: 100,
        window_s: 60,
    };
    a.playlist_limits.desktop_browser = generous;
    a.playlist_limits.unknown = generous;
    a
}

fn protect() -> ProtectConfig {
    ProtectConfig {
        key_protection: true,
        token_replay: true,
        js_whitelist: true,
        js_whitelist_secret: JS_SECRET.into(),
        static_suffixes: vec![".eot".into(), ".jpg".into()],
        ..ProtectConfig::default()
    }
}

fn setup_with(a: AuthConfig, pc: &ProtectConfig) -> (Policy, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    (Policy::new(&a, store.clone()).with_protect(pc), store)
}

fn setup() -> (Policy, Arc<MemoryStore>) {
    setup_with(auth(), &protect())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

async fn admit(p: &Policy, uid: &str, path: &str, client_ip: &str, ua: &str) -> Value {
    let body = json!({"uid": uid, "path": path, "clientIp": client_ip, "UserAgent": ua});
    p.admit(body.to_string().as_bytes(), Some(&bearer()), NOW)
        .await
        .unwrap()
}

/// A viewer request.
#[derive(Clone)]
struct R {
    ip: IpAddr,
    ua: String,
    path: String,
    uid: Option<String>,
    expires: Option<String>,
    token: Option<String>,
    now: u64,
}

impl R {
    fn new(ip_s: &str, path: &str) -> Self {
        Self {
            ip: ip(ip_s),
            ua: UA.into(),
            path: path.into(),
            uid: None,
            expires: None,
            token: None,
            now: NOW,
        }
    }

    fn with(mut self, uid: &str, expires: &str, token: &str) -> Self {
        self.uid = Some(uid.into()).filter(|s: &String| !s.is_empty());
        self.expires = Some(expires.into()).filter(|s: &String| !s.is_empty());
        self.token = Some(token.into()).filter(|s: &String| !s.is_empty());
        self
    }

    /// A playlist signature for `uid`.
    fn signed(self, uid: &str) -> Self {
        let exp = (NOW + 3600).to_string();
        let bare = self.path.trim_start_matches('/').to_string();
        let t = playlist_token(SECRET.as_bytes(), uid, &bare, &exp);
        self.with(uid, &exp, &t)
    }

    /// A key token for `uid` (as a rewritten playlist carries it).
    fn key_signed(self, uid: &str) -> Self {
        let exp = (NOW + 3600).to_string();
        let t = key_token(SECRET.as_bytes(), uid, &self.path, &exp);
        self.with(uid, &exp, &t)
    }

    async fn decide(&self, p: &Policy) -> Decision {
        let url = format!("http://h{}?t={:?}", self.path, self.token);
        let req = AccessRequest {
            client_ip: self.ip,
            user_agent: &self.ua,
            path: &self.path,
            uid: self.uid.as_deref(),
            expires: self.expires.as_deref(),
            token: self.token.as_deref(),
            full_url: &url,
            session_cookie: None,
            now: self.now,
            head: false,
        };
        p.decide(&req).await
    }

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
async fn key_files_need_a_key_token_used_at_most_once() {
    let (p, store) = setup();
    admit(&p, "u1", "/media/demo/index.m3u8", "10.1.1.1", UA).await;
    let key = "/media/demo/enc.key";
    // Texts of §9, in order, before any store access.
    let (s, body, reason) = R::new("10.1.1.1", key).deny(&p).await;
    assert_eq!((s, body.as_str()), (403, keyprotect::MISSING_AUTH_TEXT));
    assert_eq!(reason, DenyReason::KeyMissingAuth);
    let (_, body, _) = R::new("10.1.1.1", key).with("u1", "", "abc").deny(&p).await;
    assert_eq!(body, keyprotect::MISSING_EXPIRES_TEXT);
    let (_, body, reason) = R::new("10.1.1.1", key)
        .with("u1", "9999999999", "abc")
        .deny(&p)
        .await;
    assert_eq!(body, keyprotect::BAD_TOKEN_TEXT);
    assert_eq!(reason, DenyReason::KeyBadToken);
    // Expired: a valid MAC for a past `expires`.
    let past = (NOW - 1).to_string();
    let t = key_token(SECRET.as_bytes(), "u1", key, &past);
    let (_, body, _) = R::new("10.1.1.1", key).with("u1", &past, &t).deny(&p).await;
    assert_eq!(body, keyprotect::BAD_TOKEN_TEXT);
    // A playlist token is not a key token (another path under the MAC).
    let pl = R::new("10.1.1.1", "/media/demo/index.m3u8").signed("u1");
    let (_, body, _) = R::new("10.1.1.1", key)
        .with(
            "u1",
            pl.expires.as_deref().unwrap(),
            pl.token.as_deref().unwrap(),
        )
        .deny(&p)
        .await;
    assert_eq!(body, keyprotect::BAD_TOKEN_TEXT);

    // A viewer the whitelist refuses spends no use.
    let good = R::new("10.1.1.1", key).key_signed("u1");
    let mut stranger = good.clone();
    stranger.ip = ip("10.9.9.9");
    let (_, body, _) = stranger.deny(&p).await;
    assert_eq!(body, whitelist::DENY_PATH_TEXT);
    // First use allowed, the second refused as a replay.
    let a = good.allow(&p).await;
    assert_eq!(a.key_uses, Some(1));
    assert_eq!(a.token_uses, None, "key files are not token-replay counted");
    let (s, body, reason) = good.deny(&p).await;
    assert_eq!((s, body.as_str()), (403, keyprotect::REPLAY_TEXT));
    assert_eq!(reason, DenyReason::KeyReplay);
    assert!(reason.is_replay());
    // The counter is the §6 key, with the window as TTL.
    let ck = keyprotect::key_use_key(good.token.as_deref().unwrap(), "u1", key);
    assert_eq!(store.get(&ck).await.unwrap().as_deref(), Some("2"));
    let ttl = store.ttl(&ck).await.unwrap().unwrap();
    assert!(ttl.as_secs() > 9000 && ttl.as_secs() <= 9600, "{ttl:?}");
}

#[tokio::test]
async fn key_protection_applies_to_fixed_ips_and_redirects_and_can_be_off() {
    let mut a = auth();
    a.fixed_ip_whitelist = vec!["10.2.0.0/16".parse().unwrap()];
    let (p, _) = setup_with(a.clone(), &protect());
    let key = "/media/demo/enc.key";
    let (_, body, _) = R::new("10.2.3.4", key).deny(&p).await;
    assert_eq!(body, keyprotect::MISSING_AUTH_TEXT);
    let ok = R::new("10.2.3.4", key).key_signed("u1");
    assert_eq!(ok.allow(&p).await.uid.as_deref(), Some(FIXED_WHITELIST_UID));
    assert_eq!(ok.deny(&p).await.2, DenyReason::KeyReplay);
    // `.key` files other than enc.key are key files too.
    let other = R::new("10.2.3.4", "/media/demo/other.key");
    assert_eq!(other.deny(&p).await.2, DenyReason::KeyMissingAuth);

    // The safe-key redirect also spends a use.
    a.safe_key_redirect_base = "https://keys.example/".into();
    let (p, _) = setup_with(a.clone(), &protect());
    let ok = R::new("10.2.3.4", key).key_signed("u2");
    assert!(matches!(ok.decide(&p).await, Decision::Redirect { .. }));
    assert_eq!(ok.deny(&p).await.2, DenyReason::KeyReplay);

    // Off: key files are ordinary requests again.
    a.safe_key_redirect_base.clear();
    let (p, _) = setup_with(a, &ProtectConfig::default());
    let plain = R::new("10.2.3.4", key);
    plain.allow(&p).await;
    plain.allow(&p).await;
}

#[tokio::test]
async fn token_replay_counts_uid_and_token_requests() {
    let (p, store) = setup();
    admit(&p, "u1", "/media/demo/index.m3u8", "10.1.1.1", UA).await;
    let pl = R::new("10.1.1.1", "/media/demo/index.m3u8").signed("u1");
    let a = pl.allow(&p).await;
    assert_eq!(a.token_uses, Some(1));
    let (s, body, reason) = pl.deny(&p).await;
    assert_eq!(s, 403);
    assert_eq!(reason, DenyReason::TokenReplay);
    let ttl_s: u64 = body
        .strip_prefix(
            "Access Denied: Token has exceeded maximum usage limit (1 uses). Please request a new token. TTL: ",
        )
        .and_then(|r| r.strip_suffix('s'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    assert!((9000..=9600).contains(&ttl_s), "{ttl_s}");
    let rk = replay::replay_key(pl.token.as_deref().unwrap(), "u1", &pl.path);
    assert_eq!(store.get(&rk).await.unwrap().as_deref(), Some("2"));
    // Any request with uid and token counts; without either it does not.
    let seg = R::new("10.1.1.1", "/media/demo/seg0.ts");
    seg.allow(&p).await;
    seg.allow(&p).await;
    let tagged = seg.clone().with("u1", "", "anything");
    assert_eq!(tagged.allow(&p).await.token_uses, Some(1));
    assert_eq!(tagged.deny(&p).await.2, DenyReason::TokenReplay);
    // Skip-validation requests are never counted.
    let css = R::new("10.9.9.9", "/x/y/a.css").with("u1", "", "t");
    assert_eq!(css.allow(&p).await.token_uses, None);
    css.allow(&p).await;
    // Off: no counting.
    let (p, _) = setup_with(
        auth(),
        &ProtectConfig {
            token_replay: false,
            ..protect()
        },
    );
    admit(&p, "u1", "/media/demo/index.m3u8", "10.1.1.1", UA).await;
    assert_eq!(tagged.allow(&p).await.token_uses, None);
    tagged.allow(&p).await;
}

#[tokio::test]
async fn static_admission_opens_static_suffixes_only() {
    let (p, store) = setup();
    let font = R::new("10.3.3.3", "/site/assets/font.eot");
    assert_eq!(font.deny(&p).await.2, DenyReason::WhitelistNoEntry);
    let root_font = R::new("10.3.3.3", "/font.eot");
    assert_eq!(root_font.deny(&p).await.2, DenyReason::NoKeyPath);
    // Errors.
    let err = p
        .admit_static(br#"{"uid":"u"}"#, Some("Bearer wrong"), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403);
    let err = p
        .admit_static(br#"{"uid":"u","UserAgent":"x"}"#, Some(&bearer()), NOW)
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.to_string().as_str()),
        (400, "missing required field: clientIp")
    );
    // Admission.
    let body = json!({"uid": "s1", "clientIp": "10.3.3.200", "UserAgent": UA});
    let r = p
        .admit_static(body.to_string().as_bytes(), Some(&bearer()), NOW)
        .await
        .unwrap();
    assert_eq!(r["ip_pattern"], json!("10.3.3.0/24"));
    assert_eq!(r["uid_pairs"]["count"], json!(1));
    let key = static_file::static_key(&"10.3.3.0/24".parse().unwrap(), &network::ua_hash(UA));
    assert!(store.get(&key).await.unwrap().is_some());
    let a = font.allow(&p).await;
    assert_eq!(a.uid.as_deref(), Some("s1"));
    assert!(matches!(a.whitelist, WhitelistOutcome::Static { .. }));
    assert_eq!(a.session, SessionOutcome::None);
    root_font.allow(&p).await;
    // Not for other suffixes, and not for another UA.
    let seg = R::new("10.3.3.3", "/site/assets/seg.ts");
    assert_eq!(seg.deny(&p).await.2, DenyReason::WhitelistNoEntry);
    let mut other_ua = font.clone();
    other_ua.ua = "curl/8".into();
    assert_eq!(other_ua.deny(&p).await.2, DenyReason::WhitelistNoEntry);

    // A path-whitelisted viewer may fetch static files of other key paths.
    admit(&p, "u2", "/media/demo/index.m3u8", "10.4.4.4", UA).await;
    let a = R::new("10.4.4.4", "/elsewhere/x/logo.eot").allow(&p).await;
    assert_eq!(a.uid.as_deref(), Some("u2"));
    // Switched off: the rule does not apply.
    let (p, _) = setup_with(
        auth(),
        &ProtectConfig {
            static_whitelist: false,
            ..protect()
        },
    );
    p.admit_static(body.to_string().as_bytes(), Some(&bearer()), NOW)
        .await
        .unwrap();
    assert_eq!(font.deny(&p).await.2, DenyReason::WhitelistNoEntry);
}

#[tokio::test]
async fn front_end_admission_is_a_whitelist_fallback() {
    let (p, _) = setup();
    let seg = R::new("10.5.5.5", "/media/demo/seg0.ts");
    assert_eq!(seg.deny(&p).await.2, DenyReason::WhitelistNoEntry);
    // Bearer mode admits the caller's own IP and UA for js_path's key path.
    let creds = JsCredentials::Bearer {
        authorization: &bearer(),
        body: br#"{"uid": "j1", "jsPath": "/media/demo/index.m3u8"}"#,
    };
    let r = p.admit_js(creds, ip("10.5.5.5"), UA, NOW).await.unwrap();
    assert_eq!(r["key_path"], json!("demo"));
    assert_eq!(r["all"], json!(false));
    let a = seg.allow(&p).await;
    assert_eq!(a.whitelist, WhitelistOutcome::Js);
    assert_eq!(a.uid.as_deref(), Some("j1"));
    // Another key path, another address of the /24 or another UA: still refused.
    assert_eq!(
        R::new("10.5.5.5", "/media/other/seg0.ts").deny(&p).await.2,
        DenyReason::WhitelistNoEntry
    );
    assert_eq!(
        R::new("10.5.5.6", "/media/demo/seg0.ts").deny(&p).await.2,
        DenyReason::WhitelistNoEntry
    );
    // Signed mode with an empty js_path admits all key paths.
    let exp = (NOW + 60).to_string();
    let sign = token::hex_token(JS_SECRET.as_bytes(), "j2", "", &exp);
    let creds = JsCredentials::Signed {
        uid: Some("j2"),
        js_path: None,
        expires: Some(&exp),
        sign: Some(&sign),
    };
    let r = p.admit_js(creds, ip("10.6.6.6"), UA, NOW).await.unwrap();
    assert_eq!(r["all"], json!(true));
    let a = R::new("10.6.6.6", "/media/other/seg0.ts").allow(&p).await;
    assert_eq!(a.uid.as_deref(), Some("j2"));
    // Check endpoint.
    let (ok, v) = p
        .check_js(
            ip("10.5.5.5"),
            UA,
            "/media/demo/index.m3u8",
            Some("j1"),
            NOW,
        )
        .await
        .unwrap();
    assert!(ok, "{v}");
    let (ok, _) = p
        .check_js(
            ip("10.5.5.5"),
            UA,
            "/media/demo/index.m3u8",
            Some("j2"),
            NOW,
        )
        .await
        .unwrap();
    assert!(!ok);
    let (ok, _) = p
        .check_js(ip("10.5.5.5"), UA, "other", None, NOW)
        .await
        .unwrap();
    assert!(!ok);
    // Expiry: the grant no longer admits after its TTL.
    let mut late = seg.clone();
    late.now = NOW + 3601;
    assert_eq!(late.deny(&p).await.2, DenyReason::WhitelistNoEntry);
    // Errors.
    let b = bearer();
    let e = bad(
        &p,
        JsCredentials::Bearer {
            authorization: "Bearer nope",
            body: b"{}",
        },
    )
    .await;
    assert_eq!(e.status(), 403);
    let e = bad(
        &p,
        JsCredentials::Bearer {
            authorization: &b,
            body: br#"{"jsPath": "x"}"#,
        },
    )
    .await;
    assert_eq!(e.status(), 400);
    let e = bad(
        &p,
        JsCredentials::Signed {
            uid: Some("j2"),
            js_path: Some("/media/demo/i.m3u8"),
            expires: Some(&exp),
            sign: Some(&sign),
        },
    )
    .await;
    assert!(matches!(e, js::JsError::BadSignature));
    let e = bad(
        &p,
        JsCredentials::Signed {
            uid: Some("j2"),
            js_path: None,
            expires: None,
            sign: None,
        },
    )
    .await;
    assert!(matches!(e, js::JsError::NoCredentials));
}

async fn bad(p: &Policy, c: JsCredentials<'_>) -> js::JsError {
    p.admit_js(c, ip("10.5.5.5"), UA, NOW).await.unwrap_err()
}

#[tokio::test]
async fn oldest_pair_of_a_uid_is_evicted_with_its_entry() {
    let pc = ProtectConfig {
        max_pairs_per_uid: 2,
        ..protect()
    };
    let (p, store) = setup_with(auth(), &pc);
    admit(&p, "u1", "/media/demo/index.m3u8", "10.7.1.1", UA).await;
    admit(&p, "u1", "/media/demo/index.m3u8", "10.7.2.1", UA).await;
    let seg = R::new("10.7.1.9", "/media/demo/seg0.ts");
    seg.allow(&p).await;
    let r = admit(&p, "u1", "/media/demo/index.m3u8", "10.7.3.1", UA).await;
    let uah = network::ua_hash(UA);
    assert_eq!(
        r["uid_pairs"]["evicted"],
        json!([format!("10.7.1.0/24:{uah}")])
    );
    assert_eq!(seg.deny(&p).await.2, DenyReason::WhitelistNoEntry);
    R::new("10.7.2.9", "/media/demo/seg0.ts").allow(&p).await;
    let raw = store.get(&pairs::pairs_key("u1")).await.unwrap().unwrap();
    let ids: Vec<String> = pairs::parse_pairs(&raw)
        .into_iter()
        .map(|p| p.pair_id)
        .collect();
    assert_eq!(
        ids,
        [format!("10.7.2.0/24:{uah}"), format!("10.7.3.0/24:{uah}")]
    );
    // Other uids are not affected by u1's cap.
    admit(&p, "u9", "/media/demo/index.m3u8", "10.7.9.1", UA).await;
    R::new("10.7.9.9", "/media/demo/seg0.ts").allow(&p).await;
    // The admission log lists every admission, newest first.
    let log = store
        .list_range(protect_rules::log_keys::ADMISSIONS, 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 4);
    let newest: Value = serde_json::from_str(&log[0]).unwrap();
    assert_eq!(newest["uid"], json!("u9"));
}
