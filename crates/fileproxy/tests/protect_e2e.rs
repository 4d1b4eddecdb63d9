//! SPEC §9 end to end: the real binary, real origins (the bundled AES-128 HLS sample
//! through a file origin, and an in-process HTTP origin), real `redis-server`s, a real
//! player (ffmpeg). Every flow runs against both stores (in-process and Redis).
//!
//! Needs `redis-server` and `ffmpeg` on the PATH (CI installs both).

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fileproxy::access::keyprotect::{self, key_token};
use fileproxy::access::token::{hex_token, sign_url};
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::origin::TestOrigin;
use support::proxy::{run_cli, Proxy, ADMIN_TOKEN, SECRET, WL_KEY};
use support::redis::RedisServer;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) fileproxy-e2e/1.0";
const JS_SECRET: &str = "js-secret-for-tests";

/// A store backend for one run of a flow.
enum Backend {
    Memory,
    Redis(RedisServer),
}

impl Backend {
    fn toml(&self) -> String {
        match self {
            Backend::Memory => "[store]\nurl = \"memory://\"\n".into(),
            Backend::Redis(r) => format!("[store]\nurl = \"{}\"\n", r.url()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis(_) => "redis",
        }
    }
}

fn backends() -> Vec<Backend> {
    vec![Backend::Memory, Backend::Redis(RedisServer::start())]
}

fn sample_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sample-media")
}

fn sample_file(name: &str) -> Vec<u8> {
    std::fs::read(sample_root().join("media/demo").join(name)).expect("sample media")
}

fn sample_origin() -> String {
    format!(
        "file://{}",
        sample_root().canonicalize().expect("sample").display()
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .user_agent(UA)
        .build()
        .expect("client")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn post_json(p: &Proxy, path: &str, auth: Option<&str>, body: &Value) -> (u16, Value) {
    let mut r = client().post(p.url(path)).json(body);
    if let Some(a) = auth {
        r = r.header("authorization", format!("Bearer {a}"));
    }
    let resp = r.send().await.expect("post");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({"raw": text})),
    )
}

async fn admit(p: &Proxy, uid: &str, path: &str, client_ip: &str, ua: &str) -> Value {
    let (s, v) = post_json(
        p,
        "/api/whitelist",
        Some(WL_KEY),
        &json!({"uid": uid, "path": path, "clientIp": client_ip, "UserAgent": ua}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn get(p: &Proxy, path_and_query: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = client()
        .get(p.url(path_and_query))
        .send()
        .await
        .expect("get");
    let s = r.status().as_u16();
    let h = r.headers().clone();
    (s, h, r.bytes().await.expect("body").to_vec())
}

async fn admin_view(p: &Proxy, path: &str) -> Value {
    let r = client()
        .get(p.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin view");
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.expect("view json")
}

/// Polls an admin view until `ready` holds (events reach the store lists in the
/// background), then returns it; fails with the last view after 10 s.
async fn wait_view(p: &Proxy, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin_view(p, path).await;
        if ready(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} never became ready: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn items(v: &Value) -> &Vec<Value> {
    v["items"].as_array().expect("items")
}

/// The signed playlist URL, as `fileproxy sign` prints it for this proxy's config.
fn signed(p: &Proxy, uid: &str, path: &str) -> String {
    let cfg = p.dir.path().join("fileproxy.toml");
    let (code, out, err) = run_cli(
        &[
            "sign",
            "--config",
            cfg.to_str().unwrap(),
            "--uid",
            uid,
            "--path",
            path,
            "--ttl",
            "600",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

fn query_value<'a>(url: &'a str, name: &str) -> &'a str {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or("")
}

fn key_uri_of(playlist: &str) -> String {
    let line = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-KEY:"))
        .expect("key line");
    let start = line.find("URI=\"").expect("URI") + 5;
    let end = line[start..].find('"').unwrap() + start;
    line[start..end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_hls_flow_with_key_protection() {
    for backend in backends() {
        let p = Proxy::start(
            &sample_origin(),
            "",
            &format!("{}[protect]\nkey_protection = true\n", backend.toml()),
        );
        let name = backend.name();
        // Admission, then the signed playlist.
        admit(&p, "viewer1", "/media/demo/index.m3u8", "127.0.0.1", UA).await;
        let url = signed(&p, "viewer1", "/media/demo/index.m3u8");
        let expires = query_value(&url, "expires").to_string();
        let (s, h, body) = get(&p, &url).await;
        assert_eq!(s, 200, "{name}: {}", String::from_utf8_lossy(&body));
        assert_eq!(h["content-type"], "application/vnd.apple.mpegurl");
        assert_eq!(h["cache-control"], "no-cache, no-store, must-revalidate");
        assert_eq!(h["pragma"], "no-cache");
        assert_eq!(h["expires"], "0");
        assert_eq!(h["content-length"], body.len().to_string().as_str());
        // Every line but the key line is byte-identical to the origin's.
        let original = sample_file("index.m3u8");
        let (orig, got) = (
            String::from_utf8(original).unwrap(),
            String::from_utf8(body).unwrap(),
        );
        assert_eq!(orig.lines().count(), got.lines().count());
        for (a, b) in orig.lines().zip(got.lines()) {
            if a.starts_with("#EXT-X-KEY:") {
                let token = key_token(SECRET.as_bytes(), "viewer1", "media/demo/enc.key", &expires);
                let want = a.replace(
                    "URI=\"enc.key\"",
                    &format!("URI=\"enc.key?uid=viewer1&expires={expires}&token={token}\""),
                );
                assert_eq!(b, want, "{name}");
            } else {
                assert_eq!(a, b, "{name}");
            }
        }
        let key_url = format!("/media/demo/{}", key_uri_of(&got));

        // Key file refusals, with the §9 texts.
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        let (s, _, b) = get(&p, "/media/demo/enc.key").await;
        assert_eq!((s, text(b).as_str()), (403, keyprotect::MISSING_AUTH_TEXT));
        let no_exp = format!(
            "/media/demo/enc.key?uid=viewer1&token={}",
            query_value(&key_url, "token")
        );
        let (s, _, b) = get(&p, &no_exp).await;
        assert_eq!(
            (s, text(b).as_str()),
            (403, keyprotect::MISSING_EXPIRES_TEXT)
        );
        let forged = format!(
            "/media/demo/enc.key?uid=viewer1&expires={expires}&token={}",
            "0".repeat(64)
        );
        let (s, _, b) = get(&p, &forged).await;
        assert_eq!((s, text(b).as_str()), (403, keyprotect::BAD_TOKEN_TEXT));
        // The rewritten key URI works exactly once.
        let (s, _, b) = get(&p, &key_url).await;
        assert_eq!(s, 200, "{name}");
        assert_eq!(b, sample_file("enc.key"));
        let (s, _, b) = get(&p, &key_url).await;
        assert_eq!(
            (s, text(b).as_str()),
            (403, keyprotect::REPLAY_TEXT),
            "{name}"
        );
        // Segments flow.
        for i in 0..4 {
            let seg = format!("seg{i}.ts");
            let (s, _, b) = get(&p, &format!("/media/demo/{seg}")).await;
            assert_eq!(s, 200);
            assert_eq!(b, sample_file(&seg), "{name} {seg}");
        }

        // Operator views show what just happened, newest first.
        let keys = wait_view(&p, "/api/key-access-logs", |v| items(v).len() == 5).await;
        let k = items(&keys);
        assert_eq!(k[0]["reason"], "key_replay", "{name}: {keys}");
        assert_eq!(k[1]["allowed"], true);
        assert_eq!(k[1]["uses"], 1);
        assert_eq!(k[1]["uid"], "viewer1");
        assert_eq!(k[2]["reason"], "key_bad_token");
        assert_eq!(keys["source"], "store");
        assert!(
            !keys.to_string().contains(query_value(&key_url, "token")),
            "tokens never shown"
        );
        let replays = admin_view(&p, "/api/replay-logs?limit=5").await;
        assert_eq!(replays["items"][0]["reason"], "key_replay");
        assert_eq!(replays["limit"], 5);
        let denied = wait_view(&p, "/api/access-logs/denied", |v| items(v).len() == 4).await;
        let reasons: Vec<&str> = denied["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "key_replay",
                "key_bad_token",
                "key_missing_expires",
                "key_missing_auth"
            ],
            "{name}"
        );
        // A transfer is recorded when its body ends (the view may trail the client).
        let seg3 = sample_file("seg3.ts").len();
        let recent = wait_view(&p, "/api/access-logs/recent?limit=2", |v| {
            v["items"][0]["path"] == "/media/demo/seg3.ts"
        })
        .await;
        assert_eq!(recent["count"], 2);
        assert_eq!(recent["items"][0]["outcome"], "completed");
        assert_eq!(recent["items"][0]["bytes"], seg3);
        assert_eq!(recent["items"][1]["path"], "/media/demo/seg2.ts");
        let summary = admin_view(&p, "/api/access-logs/summary").await;
        assert_eq!(summary["totals"]["replays"], 1);
        assert_eq!(summary["totals"]["key_allowed"], 1);
        let info = admin_view(&p, "/whitelist-info?uid=viewer1").await;
        assert_eq!(info["items"][0]["kind"], "whitelist");
        assert_eq!(info["items"][0]["live"], true);
        assert_eq!(info["items"][0]["entry"]["uid"], "viewer1");
        assert_eq!(info["uid_pairs"].as_array().unwrap().len(), 1);
        // The views are admin-only.
        let r = client()
            .get(p.url("/api/key-access-logs"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
}

/// Runs ffmpeg on `input` and returns its per-frame MD5 list.
fn ffmpeg_framemd5(input: &str, extra: &[&str]) -> Result<String, String> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
        .args(extra)
        .args(["-i", input, "-f", "framemd5", "-"])
        .output()
        .map_err(|e| format!("ffmpeg must be installed (CI installs it): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_the_protected_stream() {
    // The frames ffmpeg decodes straight from disk…
    let local = sample_root().join("media/demo/index.m3u8");
    let want = ffmpeg_framemd5(local.to_str().unwrap(), &["-allowed_extensions", "ALL"])
        .expect("local decode");
    assert_eq!(want.lines().count(), 60, "4 s at 15 fps");
    let player_ua = "fileproxy-e2e-player/1.0 (ffmpeg)";
    for backend in backends() {
        let name = backend.name();
        let p = Proxy::start(
            &sample_origin(),
            "",
            &format!(
                "{}[protect]\nkey_protection = true\ntoken_replay = true\n",
                backend.toml()
            ),
        );
        admit(
            &p,
            "player1",
            "/media/demo/index.m3u8",
            "127.0.0.1",
            player_ua,
        )
        .await;
        let url = p.url(&signed(&p, "player1", "/media/demo/index.m3u8"));
        let input = url.clone();
        let got = tokio::task::spawn_blocking(move || {
            ffmpeg_framemd5(&input, &["-user_agent", player_ua])
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "{name}: ffmpeg failed through FileProxy: {e}\n{}",
                p.log_text()
            )
        });
        // …are the frames it decodes through FileProxy (key fetched with its token).
        assert_eq!(got, want, "{name}");
        let keys = wait_view(&p, "/api/key-access-logs", |v| !items(v).is_empty()).await;
        let allowed: Vec<&Value> = items(&keys)
            .iter()
            .filter(|e| e["allowed"] == true)
            .collect();
        assert_eq!(allowed.len(), 1, "{name}: the key was fetched once: {keys}");
        assert_eq!(allowed[0]["user_agent"], player_ua);
        // Playing the same signed URL again is refused (the token is spent).
        let input = url.clone();
        let again = tokio::task::spawn_blocking(move || {
            ffmpeg_framemd5(&input, &["-user_agent", player_ua])
        })
        .await
        .unwrap();
        assert!(again.is_err(), "{name}: replayed URL must not play");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_replay_limit_holds_across_two_processes_on_one_redis() {
    let redis = RedisServer::start();
    // The §4 playlist counters allow more uses here, so only the replay counter,
    // shared in Redis, can refuse the second use.
    let cfg = format!(
        "[store]\nurl = \"{}\"\n[protect]\ntoken_replay = true\n\
         [auth.playlist_limits]\nunknown = {{ limit = 10, window_s = 60 }}\n\
         desktop_browser = {{ limit = 10, window_s = 60 }}\n",
        redis.url()
    );
    let a = Proxy::start(&sample_origin(), "", &cfg);
    let b = Proxy::start(&sample_origin(), "", &cfg);
    admit(&a, "u1", "/media/demo/index.m3u8", "127.0.0.1", UA).await;
    let url = signed(&a, "u1", "/media/demo/index.m3u8");
    let (s, _, _) = get(&a, &url).await;
    assert_eq!(s, 200);
    let (s, _, body) = get(&b, &url).await;
    assert_eq!(s, 403);
    let text = String::from_utf8(body).unwrap();
    let ttl: u64 = text
        .strip_prefix("Access Denied: Token has exceeded maximum usage limit (1 uses). Please request a new token. TTL: ")
        .and_then(|r| r.strip_suffix('s'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!((1..=9600).contains(&ttl), "{ttl}");
    // The counter is the §6 key, readable by the Python version.
    let token = query_value(&url, "token");
    let key = fileproxy::access::replay::replay_key(token, "u1", "/media/demo/index.m3u8");
    assert_eq!(redis.cli(&["GET", &key]), "2");
    // A's view shows B's refusal: the replay list lives in the shared store.
    let v = wait_view(&a, "/api/replay-logs", |v| !items(v).is_empty()).await;
    assert_eq!(v["items"][0]["reason"], "token_replay", "{v}");
    assert_eq!(v["items"][0]["path"], "/media/demo/index.m3u8");
    // Another token (a fresh signature) is a fresh budget.
    let fresh = sign_url(
        SECRET.as_bytes(),
        "u1",
        "/media/demo/index.m3u8",
        900,
        now(),
    );
    assert_eq!(get(&b, &fresh).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_apis_success_and_errors() {
    let origin = TestOrigin::start().await;
    origin.put("font.eot", "FONT");
    origin.put("seg.ts", vec![7u8; 1000]);
    for backend in backends() {
        let name = backend.name();
        let cfg = format!(
            "{}[protect]\njs_whitelist = true\njs_whitelist_secret = \"{JS_SECRET}\"\n",
            backend.toml()
        );
        let p = Proxy::start(&origin.url(), "", &cfg);

        // Static-file admission.
        assert_eq!(get(&p, "/files/font.eot").await.0, 403, "{name}");
        let ok_body = json!({"uid": "s1", "clientIp": "127.0.0.1", "UserAgent": UA});
        let (s, v) = post_json(&p, "/api/static-whitelist", Some("wrong"), &ok_body).await;
        assert_eq!(s, 403, "{v}");
        assert!(v["error"].is_string());
        let (s, _) = post_json(&p, "/api/static-whitelist", None, &ok_body).await;
        assert_eq!(s, 403);
        let (s, v) = post_json(&p, "/api/static-whitelist", Some(WL_KEY), &json!([1])).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid JSON body")));
        let (s, v) = post_json(
            &p,
            "/api/static-whitelist",
            Some(WL_KEY),
            &json!({"uid": "s1", "clientIp": "127.0.0.1"}),
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("missing required field: UserAgent"))
        );
        let (s, _) = post_json(
            &p,
            "/api/static-whitelist",
            Some(WL_KEY),
            &json!({"uid": "s1", "clientIp": "nope", "UserAgent": UA}),
        )
        .await;
        assert_eq!(s, 400);
        let (s, v) = post_json(&p, "/api/static-whitelist", Some(WL_KEY), &ok_body).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["ip_pattern"], "127.0.0.0/24");
        let (s, _, b) = get(&p, "/files/font.eot").await;
        assert_eq!((s, b.as_slice()), (200, b"FONT".as_slice()), "{name}");
        assert_eq!(
            get(&p, "/files/seg.ts").await.0,
            403,
            "static admission opens static files only"
        );
        let r = client()
            .get(p.url("/api/static-whitelist"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);

        // Front-end admission, bearer mode.
        let (s, _) = post_json(
            &p,
            "/api/js-whitelist",
            Some("wrong"),
            &json!({"uid": "j1", "jsPath": "/files/x.m3u8"}),
        )
        .await;
        assert_eq!(s, 403);
        let (s, v) = post_json(
            &p,
            "/api/js-whitelist",
            Some(WL_KEY),
            &json!({"jsPath": "/files/x.m3u8"}),
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("missing required field: uid"))
        );
        let (s, v) = post_json(
            &p,
            "/api/js-whitelist",
            Some(WL_KEY),
            &json!({"uid": "j1", "jsPath": "/files/x.m3u8"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["key_path"], "files");
        assert_eq!(v["client_ip"], "127.0.0.1");
        // The whitelist refused /files/seg.ts; the front-end admission lets it through.
        let (s, _, b) = get(&p, "/files/seg.ts").await;
        assert_eq!((s, b.len()), (200, 1000), "{name}");
        let check = |q: String| {
            let p = &p;
            async move {
                client()
                    .get(p.url(&format!("/api/js-whitelist/check?{q}")))
                    .send()
                    .await
                    .unwrap()
            }
        };
        let r = check("js_path=/files/x.m3u8&uid=j1".into()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["allowed"], true);
        assert_eq!(
            check("js_path=/files/x.m3u8&uid=other".into())
                .await
                .status(),
            403
        );
        assert_eq!(
            check("js_path=/elsewhere/x.m3u8".into()).await.status(),
            403
        );
        let other_ua = reqwest::Client::builder()
            .no_proxy()
            .user_agent("other/1")
            .build()
            .unwrap();
        let r = other_ua
            .get(p.url("/api/js-whitelist/check?js_path=/files/x.m3u8"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "the check is for the caller's own UA");

        // Front-end admission, signed mode (GET).
        let exp = (now() + 60).to_string();
        let sign = hex_token(JS_SECRET.as_bytes(), "j2", "/other/a.m3u8", &exp);
        let q = format!("/api/js-whitelist?uid=j2&js_path=/other/a.m3u8&expires={exp}&sign={sign}");
        let (s, _, b) = get(&p, &q).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        assert_eq!(
            check("js_path=/other/b.m3u8&uid=j2".into()).await.status(),
            200
        );
        let bad =
            format!("/api/js-whitelist?uid=j3&js_path=/other/a.m3u8&expires={exp}&sign={sign}");
        let (s, _, b) = get(&p, &bad).await;
        assert_eq!(s, 403);
        assert_eq!(
            serde_json::from_slice::<Value>(&b).unwrap()["error"],
            "invalid signature"
        );
        let past = (now() - 10).to_string();
        let old = hex_token(JS_SECRET.as_bytes(), "j2", "", &past);
        let (s, _, b) = get(
            &p,
            &format!("/api/js-whitelist?uid=j2&expires={past}&sign={old}"),
        )
        .await;
        assert_eq!(
            (
                s,
                serde_json::from_slice::<Value>(&b).unwrap()["error"].as_str()
            ),
            (403, Some("signature expired"))
        );
        assert_eq!(get(&p, "/api/js-whitelist?uid=j2").await.0, 403);

        // File check.
        let (s, v) = post_json(
            &p,
            "/api/file/check",
            Some(WL_KEY),
            &json!({"path": "/files/font.eot"}),
        )
        .await;
        assert_eq!(
            (s, &v),
            (
                200,
                &json!({"path": "/files/font.eot", "exists": true, "error": null})
            )
        );
        let last = origin
            .state
            .requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap();
        assert_eq!(
            last,
            (http::Method::HEAD, "/files/font.eot".to_string()),
            "HEAD to HTTP origins"
        );
        let (_, v) = post_json(
            &p,
            "/api/file/check",
            Some(WL_KEY),
            &json!({"path": "/files/none.ts"}),
        )
        .await;
        assert_eq!(
            v,
            json!({"path": "/files/none.ts", "exists": false, "error": null})
        );
        let (_, v) = post_json(
            &p,
            "/api/file/check",
            Some(WL_KEY),
            &json!({"path": "/files/../x"}),
        )
        .await;
        assert_eq!(v["error"], "invalid path");
        let (s, _) = post_json(
            &p,
            "/api/file/check",
            Some("wrong"),
            &json!({"path": "/files/font.eot"}),
        )
        .await;
        assert_eq!(s, 403);
        let (s, _) = post_json(&p, "/api/file/check", Some(WL_KEY), &json!({"nopath": 1})).await;
        assert_eq!(s, 400);
        let (s, v) = post_json(&p, "/api/file/check/batch", Some(WL_KEY), &json!({"paths": ["/files/font.eot", "/files/none.ts", "/files/seg.ts", "/../etc/passwd"]})).await;
        assert_eq!(s, 200);
        assert_eq!(
            (
                &v["total"],
                &v["exists_count"],
                &v["not_found_count"],
                &v["error_count"]
            ),
            (&json!(4), &json!(2), &json!(1), &json!(1)),
            "{v}"
        );
        assert_eq!(
            v["results"][1],
            json!({"path": "/files/none.ts", "exists": false, "error": null})
        );
        let (s, _) = post_json(
            &p,
            "/api/file/check/batch",
            Some(WL_KEY),
            &json!({"paths": []}),
        )
        .await;
        assert_eq!(s, 400);
        let many: Vec<String> = (0..101).map(|i| format!("/files/{i}.ts")).collect();
        let (s, v) = post_json(
            &p,
            "/api/file/check/batch",
            Some(WL_KEY),
            &json!({"paths": many}),
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("paths must hold 1 to 100 entries"))
        );
        let hundred: Vec<String> = (0..100).map(|i| format!("/files/{i}.ts")).collect();
        let (s, v) = post_json(
            &p,
            "/api/file/check/batch",
            Some(WL_KEY),
            &json!({"paths": hundred}),
        )
        .await;
        assert_eq!((s, &v["not_found_count"]), (200, &json!(100)));

        // whitelist-info lists the static and front-end admissions (one entry per key:
        // both front-end uids share this caller's IP + UA entry).
        let info = admin_view(&p, "/whitelist-info").await;
        let kinds: Vec<&str> = items(&info)
            .iter()
            .filter_map(|i| i["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["js", "static"], "{name}: {info}");
        let js = &info["items"][0]["entry"]["uids"];
        assert_eq!(js["j1"]["paths"][0]["key_path"], "files");
        assert_eq!(js["j2"]["paths"][0]["key_path"], "other");
        assert_eq!(info["items"][1]["entry"]["uid"], "s1");
    }

    // Switched off: the APIs answer 404.
    let p = Proxy::start(
        &origin.url(),
        "",
        "[protect]\nstatic_whitelist = false\nfile_check = false\n",
    );
    for path in [
        "/api/static-whitelist",
        "/api/js-whitelist",
        "/api/file/check",
        "/api/file/check/batch",
    ] {
        let (s, _) = post_json(&p, path, Some(WL_KEY), &json!({})).await;
        assert_eq!(s, 404, "{path}");
    }
    assert_eq!(get(&p, "/api/js-whitelist/check").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitting_a_pair_past_the_cap_evicts_the_oldest() {
    for backend in backends() {
        let name = backend.name();
        let p = Proxy::start(
            &sample_origin(),
            "",
            &format!("{}[protect]\nmax_pairs_per_uid = 2\n", backend.toml()),
        );
        admit(&p, "cap", "/media/demo/index.m3u8", "127.0.0.1", UA).await;
        admit(&p, "cap", "/media/demo/index.m3u8", "10.0.2.1", UA).await;
        assert_eq!(get(&p, "/media/demo/seg0.ts").await.0, 200);
        let v = admit(&p, "cap", "/media/demo/index.m3u8", "10.0.3.1", UA).await;
        let evicted = v["uid_pairs"]["evicted"].as_array().unwrap();
        assert_eq!(evicted.len(), 1, "{v}");
        assert!(evicted[0].as_str().unwrap().starts_with("127.0.0.0/24:"));
        // The evicted pair's entry is gone: this viewer is refused now.
        let (s, _, b) = get(&p, "/media/demo/seg0.ts").await;
        assert_eq!(
            (s, b.as_slice()),
            (403, b"Access Denied 100020 path".as_slice()),
            "{name}"
        );
        let info = admin_view(&p, "/whitelist-info?uid=cap").await;
        let pairs: Vec<&str> = info["uid_pairs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["ip_pattern"].as_str())
            .collect();
        assert_eq!(pairs, ["10.0.2.0/24", "10.0.3.0/24"], "{name}");
        let items = info["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[2]["ip_pattern"], "127.0.0.0/24");
        assert_eq!(items[2]["live"], false, "{name}: {info}");
        if let Backend::Redis(r) = &backend {
            let pairs: Value =
                serde_json::from_str(&r.cli(&["GET", "uid_ua_ip_pairs:cap"])).unwrap();
            assert_eq!(pairs.as_array().unwrap().len(), 2);
            assert!(
                r.cli(&["TTL", "uid_ua_ip_pairs:cap"])
                    .parse::<i64>()
                    .unwrap()
                    > 3000
            );
        }
        // Re-admitting brings the viewer back (and evicts the next oldest).
        admit(&p, "cap", "/media/demo/index.m3u8", "127.0.0.1", UA).await;
        assert_eq!(get(&p, "/media/demo/seg0.ts").await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_origin_playlists_rewritten_and_bounded_and_live_transfers_shown() {
    let origin = TestOrigin::start().await;
    let playlist = "#EXTM3U\r\n#EXT-X-KEY:METHOD=AES-128,URI='../keys/enc.key?v=3',IV=0x1\r\n#EXTINF:1,\r\nseg.ts\r\n#EXT-X-KEY:METHOD=AES-128,URI=/files/abs.key\r\n#EXT-X-KEY:METHOD=AES-128,URI=\"http://127.0.0.1:1/files/other.key\"\r\n";
    origin.put("p.m3u8", playlist);
    origin.put(
        "big.m3u8",
        format!("#EXTM3U\n{}", "#EXTINF:1,\nseg.ts\n".repeat(200)),
    );
    origin.put("abs.key", "0123456789abcdef");
    for backend in backends() {
        let name = backend.name();
        let cfg = format!(
            "{}[auth.playlist_limits]\nunknown = {{ limit = 10, window_s = 60 }}\ndesktop_browser = {{ limit = 10, window_s = 60 }}\n[protect]\nkey_protection = true\nmax_playlist_bytes = 2048\n",
            backend.toml()
        );
        let p = Proxy::start(&origin.url(), "", &cfg);
        admit(&p, "h1", "/files/p.m3u8", "127.0.0.1", UA).await;
        admit(&p, "h1", "/trickle/x.m3u8", "127.0.0.1", UA).await;
        let url = signed(&p, "h1", "/files/p.m3u8");
        let exp = query_value(&url, "expires").to_string();
        // A viewer's Range is not forwarded: the playlist is fetched and rewritten whole.
        let r = client()
            .get(p.url(&url))
            .header("range", "bytes=0-9")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let seen = origin.state.last_headers.lock().unwrap().clone().unwrap();
        assert!(seen.get("range").is_none());
        let body = r.text().await.unwrap();
        let tok = |path: &str| key_token(SECRET.as_bytes(), "h1", path, &exp);
        let want = format!(
            "#EXTM3U\r\n#EXT-X-KEY:METHOD=AES-128,URI='../keys/enc.key?v=3&uid=h1&expires={exp}&token={}',IV=0x1\r\n#EXTINF:1,\r\nseg.ts\r\n#EXT-X-KEY:METHOD=AES-128,URI=/files/abs.key?uid=h1&expires={exp}&token={}\r\n#EXT-X-KEY:METHOD=AES-128,URI=\"http://127.0.0.1:1/files/other.key?uid=h1&expires={exp}&token={}\"\r\n",
            tok("keys/enc.key"),
            tok("files/abs.key"),
            tok("files/other.key"),
        );
        assert_eq!(body, want, "{name}");
        // The absolute-path key URI is fetchable once (key path `files` is admitted).
        let abs = format!(
            "/files/abs.key?uid=h1&expires={exp}&token={}",
            tok("files/abs.key")
        );
        assert_eq!(get(&p, &abs).await.2, b"0123456789abcdef");
        assert_eq!(get(&p, &abs).await.0, 403);
        // HEAD answers the rewritten length.
        let r = client().head(p.url(&url)).send().await.unwrap();
        assert_eq!(
            r.headers()["content-length"],
            want.len().to_string().as_str()
        );

        // Over the cap: refused with 502 and a log line, never buffered without bound.
        admit(&p, "h1", "/files/big.m3u8", "127.0.0.1", UA).await;
        let big = signed(&p, "h1", "/files/big.m3u8");
        assert_eq!(get(&p, &big).await.0, 502, "{name}");
        assert!(
            p.log_text()
                .contains("playlist larger than protect.max_playlist_bytes"),
            "{}",
            p.log_text()
        );

        // A live transfer is visible while it streams (one byte per 100 ms, forever).
        let resp = client()
            .get(p.url("/trickle/forever"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        let mut got = 0;
        while got < 3 {
            got += stream.next().await.unwrap().unwrap().len();
        }
        let v = admin_view(&p, "/active-transfers").await;
        assert_eq!(v["active"], 1, "{name}: {v}");
        let t = &v["items"][0];
        assert_eq!(t["path"], "/trickle/forever");
        assert!(t["bytes"].as_u64().unwrap() >= 3, "{t}");
        assert!(t["first_byte_ms"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["speed_bytes_per_s"].as_f64().unwrap() > 0.0, "{t}");
        assert_eq!(t["total_bytes"], Value::Null);
        assert_eq!(t["uid"], "h1");
        assert_eq!(t["client_ip"], "127.0.0.1");
        // The viewer leaves: the transfer leaves the view and shows in the recent list.
        drop(stream);
        wait_view(&p, "/active-transfers", |v| v["active"] == 0).await;
        let recent = admin_view(&p, "/api/access-logs/recent").await;
        let done = items(&recent)
            .iter()
            .find(|e| e["path"] == "/trickle/forever")
            .cloned()
            .unwrap();
        assert_eq!(done["outcome"], "client_closed", "{done}");
        assert!(done["bytes"].as_u64().unwrap() >= 3);
    }
}
