//! SPEC §10 and §2 step 1 against the real binary: no file is served under a weaker
//! class than it is. Each test is a hole main had (issue 10), tried the way an
//! attacker would: the real `fileproxy` in front of a real file origin (a temporary
//! folder with a date layout) or a real HTTP origin on loopback.

mod support;

use std::path::Path;

use support::access::{ProxyConfig, Viewer, CHROME};

/// Admitted viewer address and key path used throughout.
const IP: &str = "180.98.66.2";
const PLAYLIST: &str = "/vod/2024-05-01/abc/720p/index.m3u8";
const KEY: &str = "/vod/2024-05-01/abc/720p/enc.key";
const SEGMENT: &str = "/vod/2024-05-01/abc/720p/seg0.ts";
const PLAYLIST_BODY: &[u8] =
    b"#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"enc.key\"\n#EXTINF:4,\nseg0.ts\n";
const KEY_BODY: &[u8] = b"0123456789abcdef";

/// A media folder with one video in a date layout.
fn media() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("vod/2024-05-01/abc/720p");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("index.m3u8"), PLAYLIST_BODY).expect("write");
    std::fs::write(folder.join("enc.key"), KEY_BODY).expect("write");
    std::fs::write(folder.join("seg0.ts"), b"segment bytes").expect("write");
    dir
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// The first hole: `…/index.m3u8/` and `…/enc.key//` were served (200) by the
/// file origin, which dropped the empty segments the policy never saw.
#[tokio::test]
async fn trailing_slash_and_empty_segments_are_refused_before_the_origin() {
    let dir = media();
    let p = ProxyConfig::trusting_loopback("memory://")
        .tail("[protect]\nkey_protection = true\n")
        .start(&file_url(dir.path()));
    let v = Viewer::new(IP, CHROME);
    v.admit(&p, "u1", PLAYLIST).await;
    // The straight path without a token is refused as it should be.
    let r = v.get(&p, PLAYLIST).await;
    assert_eq!(r.status, 400, "{}", r.text());
    for path in [
        "/vod/2024-05-01/abc/720p/index.m3u8/",
        "/vod/2024-05-01/abc/720p/index.m3u8//",
        "/vod/2024-05-01/abc/720p//index.m3u8",
        "/vod/2024-05-01/abc/720p/enc.key/",
        "/vod/2024-05-01/abc/720p/enc.key//",
        "//vod/2024-05-01/abc/720p/enc.key",
        "/vod/2024-05-01/abc/720p/index.m3u8;.ts",
        "/vod/2024-05-01/abc/720p/index.m3u8%3B.ts",
        "/vod/2024-05-01/abc/720p%2Findex.m3u8",
        "/vod/2024-05-01/abc/720p%2fenc.key",
    ] {
        for _ in 0..2 {
            let r = v.get(&p, path).await;
            r.assert_text(400, "Bad Request: ambiguous path");
        }
    }
    // A segment is still served, and only the exact path is.
    let r = v.get(&p, SEGMENT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.as_ref(), b"segment bytes");
}

/// The second hole: behind a trusted proxy that appends to
/// `X-Forwarded-For`, a viewer who wrote an admitted address first passed the
/// whitelist. The rightmost untrusted address is the client (SPEC §2 step 1).
#[tokio::test]
async fn forged_forwarded_for_prefix_is_not_believed() {
    let dir = media();
    let p = ProxyConfig::trusting_loopback("memory://").start(&file_url(dir.path()));
    let admitted = Viewer::new(IP, CHROME);
    admitted.admit(&p, "u1", PLAYLIST).await;
    assert_eq!(admitted.get(&p, SEGMENT).await.status, 200);
    // The attacker at 9.9.9.9 writes the admitted address; the proxy appended its own.
    let forged = Viewer::new(&format!("{IP}, 9.9.9.9"), CHROME);
    forged
        .get(&p, SEGMENT)
        .await
        .assert_text(403, "Access Denied 100020 path");
    // Two header lines: the second one (appended by the proxy) decides.
    let lines = Viewer::new(IP, CHROME);
    let r = lines
        .get_with(&p, SEGMENT, &[("x-forwarded-for", "9.9.9.9")])
        .await;
    r.assert_text(403, "Access Denied 100020 path");
    // A trusted hop in the chain is skipped: the admitted viewer behind two proxies.
    let behind = Viewer::new(&format!("1.1.1.1, {IP}, 127.0.0.1"), CHROME);
    assert_eq!(behind.get(&p, SEGMENT).await.status, 200);
}

/// `HEAD` with the viewer's headers (client IP through the trusted loopback proxy).
async fn head(p: &support::proxy::Proxy, v: &Viewer, path_and_query: &str) -> u16 {
    support::access::http_client(None)
        .head(p.url(path_and_query))
        .header("user-agent", &v.ua)
        .header("x-forwarded-for", &v.ip)
        .send()
        .await
        .expect("HEAD")
        .status()
        .as_u16()
}

/// The third hole: a new spelling of the same playlist URL (extra parameter,
/// `Host` case, a re-encoded path character) gave a fresh Python-format counter with
/// the same valid token. The canonical counter of SPEC §4 sees through all three.
#[tokio::test]
async fn playlist_count_is_not_evaded_by_respelling_the_url() {
    let dir = media();
    let p = ProxyConfig::trusting_loopback("memory://").start(&file_url(dir.path()));
    let v = Viewer::new(IP, CHROME);
    v.admit(&p, "u1", PLAYLIST).await;
    let signed = support::access::sign("u1", PLAYLIST);
    let r = v.get(&p, &signed).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.as_ref(), PLAYLIST_BODY);
    let respelled = signed.replace("/index.m3u8", "/%69ndex.m3u8");
    assert_ne!(respelled, signed);
    for (viewer, url) in [
        (v.clone(), format!("{signed}&x=1")),
        (v.clone(), signed.replace("uid=", "x=1&uid=")),
        (
            v.with_host(&p.addr.to_string().replace("127.0.0.1", "LOCALHOST")),
            signed.clone(),
        ),
        (v.clone(), respelled),
    ] {
        viewer
            .get(&p, &url)
            .await
            .assert_text(403, "Access Denied 100308 with uid:u1");
    }
}

/// The last point: `HEAD` spent playlist counts. It is checked like a `GET`
/// and spends nothing (SPEC §4).
#[tokio::test]
async fn head_of_a_playlist_spends_no_count() {
    let dir = media();
    let p = ProxyConfig::trusting_loopback("memory://").start(&file_url(dir.path()));
    let v = Viewer::new(IP, CHROME);
    v.admit(&p, "u1", PLAYLIST).await;
    let signed = support::access::sign("u1", PLAYLIST);
    for _ in 0..3 {
        assert_eq!(head(&p, &v, &signed).await, 200);
    }
    // Checked like a GET: no token → the same refusal.
    assert_eq!(head(&p, &v, PLAYLIST).await, 400);
    let r = v.get(&p, &signed).await;
    assert_eq!(r.status, 200, "the HEADs spent the count: {}", r.text());
    // Now a GET would be over the limit, and so is a HEAD.
    assert_eq!(head(&p, &v, &signed).await, 403);
    v.get(&p, &signed)
        .await
        .assert_text(403, "Access Denied 100308 with uid:u1");
}

/// `HEAD` of a key file under key protection: checked like a `GET`, spends no key use
/// (SPEC §10).
#[tokio::test]
async fn head_of_a_key_file_spends_no_key_use() {
    let dir = media();
    let p = ProxyConfig::trusting_loopback("memory://")
        .tail("[protect]\nkey_protection = true\n")
        .start(&file_url(dir.path()));
    let v = Viewer::new(IP, CHROME);
    v.admit(&p, "u1", PLAYLIST).await;
    let expires = (support::access::now() + 600).to_string();
    let token = fileproxy::access::keyprotect::key_token(
        support::proxy::SECRET.as_bytes(),
        "u1",
        KEY,
        &expires,
    );
    let url = format!("{KEY}?uid=u1&expires={expires}&token={token}");
    for _ in 0..3 {
        assert_eq!(head(&p, &v, &url).await, 200);
    }
    assert_eq!(head(&p, &v, KEY).await, 403, "no token: refused like a GET");
    let r = v.get(&p, &url).await;
    assert_eq!(r.status, 200, "the HEADs spent the key use: {}", r.text());
    assert_eq!(r.body.as_ref(), KEY_BODY);
    assert_eq!(head(&p, &v, &url).await, 403);
    v.get(&p, &url).await.assert_text(
        403,
        "Access Denied: Key file replay detected: maximum usage count exceeded",
    );
}

/// A playlist body behind a path that is not `.m3u8` (an origin mapping `x.bak` to `x`)
/// reaches only a request that passed the playlist checks (SPEC §10 content check),
/// also when the viewer asks for a range that does not start at byte 0.
#[tokio::test]
async fn playlist_content_needs_the_playlist_checks_whatever_the_path() {
    let origin = support::origin::TestOrigin::start().await;
    origin.put("vod/abc/index.m3u8", PLAYLIST_BODY);
    origin.put("vod/abc/seg0.ts", &b"\x47\x40\x11\x10 segment"[..]);
    let p = ProxyConfig::trusting_loopback("memory://").start(&origin.url());
    let v = Viewer::new(IP, CHROME);
    v.admit(&p, "u1", "/sloppy/vod/abc/index.m3u8").await;
    for (path, range) in [
        ("/sloppy/vod/abc/index.m3u8.bak", None),
        ("/sloppy/vod/abc/INDEX.M3U8.bak", None),
        ("/sloppy/vod/abc/index.m3u8.bak", Some("bytes=0-3")),
        ("/sloppy/vod/abc/index.m3u8.bak", Some("bytes=8-20")),
    ] {
        let extra: Vec<(&str, &str)> = range.map(|r| ("range", r)).into_iter().collect();
        v.get_with(&p, path, &extra)
            .await
            .assert_text(403, "Access Denied 100021 content class");
    }
    assert!(
        p.log_text().contains("content check"),
        "a warning is logged"
    );
    // Ambiguous spellings never reach the sloppy origin at all.
    v.get(&p, "/sloppy/vod/abc/index.m3u8/")
        .await
        .assert_text(400, "Bad Request: ambiguous path");
    // Segments still flow (ranged ones too), and the signed playlist is served.
    let r = v.get(&p, "/sloppy/vod/abc/seg0.ts").await;
    assert_eq!((r.status, r.body.len()), (200, 12), "{}", r.text());
    let r = v
        .get_with(&p, "/sloppy/vod/abc/seg0.ts", &[("range", "bytes=4-7")])
        .await;
    assert_eq!((r.status, r.body.as_ref()), (206, &b" seg"[..]));
    let r = v
        .get(
            &p,
            &support::access::sign("u1", "/sloppy/vod/abc/index.m3u8"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.as_ref(), PLAYLIST_BODY);
}

/// An origin redirect pointing at the origin itself is rewritten to a path on
/// FileProxy: the origin's address never reaches a viewer (SPEC §10).
#[tokio::test]
async fn origin_redirects_do_not_leak_the_origin_address() {
    let origin = support::origin::TestOrigin::start().await;
    origin.put("vod/abc/seg0.ts", &b"segment"[..]);
    let p = ProxyConfig::trusting_loopback("memory://").start(&origin.url());
    let v = Viewer::new(IP, CHROME);
    v.admit(&p, "u1", "/redirect/vod/abc/index.m3u8").await;
    let r = v.get(&p, "/redirect/vod/abc/seg0.ts").await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/files/vod/abc/seg0.ts")
    );
}

/// `/health` with the store down carries no store error text (SPEC §10).
#[tokio::test]
async fn health_carries_no_store_error_text() {
    let port = support::proxy::free_port();
    let dir = media();
    let p = ProxyConfig::trusting_loopback(&format!("redis://127.0.0.1:{port}"))
        .store("op_timeout_ms = 300")
        .start(&file_url(dir.path()));
    let (status, body) = support::access::health(&p).await;
    assert_eq!(status, 503);
    assert_eq!(body["store"]["reachable"], false);
    let text = body.to_string();
    for leak in [
        port.to_string(),
        "127.0.0.1".into(),
        "refused".into(),
        "os error".into(),
    ] {
        assert!(!text.contains(&leak), "{leak} in {text}");
    }
}

/// Sends a request head announcing a body it never sends; returns the status line.
async fn post_without_body(p: &support::proxy::Proxy, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(p.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-key\r\n\
         Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n{{\"uid\""
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered before the body arrived")
        .expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// The admission APIs check the bearer key before reading the body (SPEC §10): a
/// wrong key is answered at once, not after waiting for (up to 64 KiB of) body.
#[tokio::test]
async fn admission_apis_check_the_key_before_the_body() {
    let dir = media();
    let p = ProxyConfig::trusting_loopback("memory://")
        .server("\nheader_read_timeout_s = 30")
        .tail("[protect]\njs_whitelist = true\njs_whitelist_secret = \"js-secret-for-tests\"\n")
        .start(&file_url(dir.path()));
    for path in [
        "/api/whitelist",
        "/api/static-whitelist",
        "/api/js-whitelist",
    ] {
        let line = post_without_body(&p, path).await;
        assert!(line.starts_with("HTTP/1.1 403"), "{path}: {line}");
    }
}
