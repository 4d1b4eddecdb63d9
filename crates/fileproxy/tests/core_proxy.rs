//! Core streaming proxy, end to end: real origin processes/servers, the real binary,
//! real sockets. Paths use skip-validation suffixes (`.png`, `.txt`) so these tests
//! exercise transport only; access control has its own suite.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::origin::{pattern_byte, TestOrigin};
use support::proxy::{free_port, run_cli, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .user_agent("fileproxy-test/1.0")
        .build()
        .expect("client")
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn health(p: &Proxy) -> serde_json::Value {
    client()
        .get(p.url("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_origin_passthrough_exact() {
    let origin = TestOrigin::start().await;
    let content = random_bytes(300_000, 7);
    origin.put("a.png", content.clone());
    // Viewer headers must reach the origin: no cache in between (the cache answers
    // ranges and conditionals itself, see segment_cache.rs).
    let p = Proxy::start(&origin.url(), "", "[cache]\nmax_bytes = 0");
    let c = client();

    let r = c.get(p.url("/files/a.png")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(
        h.get("access-control-allow-origin").is_none(),
        "origin CORS must be dropped"
    );
    assert!(h.get("keep-alive").is_none(), "hop-by-hop must be dropped");
    let etag = h.get("etag").expect("etag").to_str().unwrap().to_string();
    assert_eq!(h.get("content-type").unwrap(), "video/mp2t");
    assert_eq!(r.bytes().await.unwrap().as_ref(), content.as_slice());

    let seen = origin.state.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(seen.get("user-agent").unwrap(), "fileproxy-test/1.0");

    let r = c
        .get(p.url("/files/a.png"))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers().get("content-range").unwrap(),
        "bytes 10-19/300000"
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &content[10..20]);
    // A range that does not start at byte 0 costs the content check (SPEC §10) one
    // small request for the object's first bytes, after the viewer's own.
    let seen = origin.state.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen.get("range").unwrap(), "bytes=0-15");
    let r = c
        .get(p.url("/files/a.png"))
        .header("range", "bytes=0-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &content[..20]);
    let seen = origin.state.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(
        seen.get("range").unwrap(),
        "bytes=0-19",
        "the viewer's Range is forwarded"
    );

    let r = c.head(p.url("/files/a.png")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-length").unwrap(), "300000");
    assert!(r.bytes().await.unwrap().is_empty());

    let r = c
        .get(p.url("/files/a.png"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    let r = c.get(p.url("/files/missing.png")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_origin_passthrough_exact() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("media/abc")).unwrap();
    let content = random_bytes(200_001, 3);
    std::fs::write(dir.path().join("media/abc/pic.png"), &content).unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"outside").unwrap();
    let root = dir.path().join("media");
    let p = Proxy::start(&format!("file://{}", root.display()), "", "");
    let c = client();

    let r = c.get(p.url("/abc/pic.png")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("accept-ranges").unwrap(), "bytes");
    let etag = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(r.headers().get("last-modified").is_some());
    assert_eq!(r.bytes().await.unwrap().as_ref(), content.as_slice());

    let r = c
        .get(p.url("/abc/pic.png"))
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &content[content.len() - 5..]
    );

    let r = c
        .get(p.url("/abc/pic.png"))
        .header("range", "bytes=999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers().get("content-range").unwrap(), "bytes */200001");

    let r = c.head(p.url("/abc/pic.png")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-length").unwrap(), "200001");

    let r = c
        .get(p.url("/abc/pic.png"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    assert_eq!(
        c.get(p.url("/abc/nope.png")).send().await.unwrap().status(),
        404
    );
    for evil in [
        "/abc/../../secret.txt",
        "/abc/%2e%2e/%2e%2e/secret.txt",
        "/abc/..%2f..%2fsecret.txt",
        "/abc/..%5c..%5csecret.txt",
    ] {
        let r = c.get(p.url(evil)).send().await.unwrap();
        assert!(
            r.status() == 400 || r.status() == 404,
            "{evil} gave {}",
            r.status()
        );
        assert_ne!(r.bytes().await.unwrap().as_ref(), b"outside");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_is_502_and_hang_is_504() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let p = Proxy::start(&dead, "", "");
    let r = client().get(p.url("/x/a.png")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    drop(p);

    let origin = TestOrigin::start().await;
    let p = Proxy::start_env(
        &origin.url(),
        "",
        "",
        &[("FILEPROXY_ORIGIN__TIMEOUT_MS", "800")],
    );
    let t = Instant::now();
    let r = client().get(p.url("/hang/a.png")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(30));
}

/// Streams `url` to the end, checking the `/gen/` pattern; returns the byte count.
async fn drain_checked(url: &str) -> u64 {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut n = 0u64;
    let mut s = r.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.unwrap();
        for (i, b) in chunk.iter().enumerate() {
            if (n + i as u64) % 4093 == 0 {
                assert_eq!(*b, pattern_byte(n + i as u64));
            }
        }
        n += chunk.len() as u64;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_through_both_origins_in_bounded_memory() {
    const GIB: u64 = 1 << 30;
    let origin = TestOrigin::start().await;
    let p = Proxy::start(&origin.url(), "", "");
    let n = drain_checked(&p.url(&format!("/gen/{GIB}.png"))).await;
    assert_eq!(n, GIB);
    let peak = p.peak_rss();
    eprintln!("1 GiB via HTTP origin: peak RSS {} MiB", peak >> 20);
    assert!(peak > 0 && peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
    drop(p);

    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(dir.path().join("big.txt")).unwrap();
    f.set_len(GIB).unwrap(); // sparse: reads as zeros without using disk
    let p = Proxy::start(&format!("file://{}", dir.path().display()), "", "");
    let r = client().get(p.url("/big.txt")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let mut n = 0u64;
    while let Some(c) = s.next().await {
        n += c.unwrap().len() as u64;
    }
    assert_eq!(n, GIB);
    let peak = p.peak_rss();
    eprintln!("1 GiB via file origin: peak RSS {} MiB", peak >> 20);
    assert!(peak > 0 && peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slow_readers_bounded_memory() {
    let origin = TestOrigin::start().await;
    let p = Proxy::start(&origin.url(), "", "");
    let addr = p.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            let mut s = sock.connect(addr).await.unwrap();
            s.write_all(b"GET /gen/67108864.png HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 1024];
            let mut got = 0usize;
            // Read 1 KiB every 50 ms until told to stop (at most 60 s).
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < until {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            got
        }));
    }
    // Wait (however slow the machine) until all 200 transfers stream at once, then hold
    // them a little longer so the buffers fill.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut peak_active = 0;
    while Instant::now() < deadline && peak_active < 200 {
        let h = health(&p).await;
        peak_active = peak_active.max(h["server"]["active_transfers"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        peak_active, 200,
        "only {peak_active} transfers active at once"
    );
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert!(total > 200 * 1024, "slow readers received {total} bytes");
    let peak = p.peak_rss();
    eprintln!("peak RSS with 200 slow readers: {} MiB", peak >> 20);
    assert!(
        peak < 128 << 20,
        "peak RSS {} MiB with 200 slow readers",
        peak >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_drop_leaves_nothing_behind() {
    let origin = TestOrigin::start().await;
    let p = Proxy::start(&origin.url(), "", "");
    let threads_before = p.threads();
    for path in ["/gen/1073741824.png", "/trickle/x.png"] {
        let r = client().get(p.url(path)).send().await.unwrap();
        let mut s = r.bytes_stream();
        let _ = s.next().await;
        drop(s);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = health(&p).await;
        let active = h["server"]["active_transfers"].as_u64().unwrap();
        let open = origin.state.open.load(std::sync::atomic::Ordering::SeqCst);
        if active == 0 && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {active} transfers, {open} origin connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(p.threads() <= threads_before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_client_is_cut_off_others_served() {
    let origin = TestOrigin::start().await;
    origin.put("ok.png", vec![1u8; 1000]);
    let p = Proxy::start_env(
        &origin.url(),
        "",
        "",
        &[("FILEPROXY_SERVER__HEADER_READ_TIMEOUT_S", "2")],
    );
    let mut slow = TcpStream::connect(p.addr).await.unwrap();
    slow.write_all(b"GET /files/ok.png HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    // Others are served meanwhile.
    for _ in 0..5 {
        let r = client().get(p.url("/files/ok.png")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            slow.write_all(b"X-Drip: 1\r\n").await.ok();
            match tokio::time::timeout(Duration::from_millis(500), slow.read(&mut buf)).await {
                Ok(Ok(n)) => return n,
                Ok(Err(_)) => return 0,
                Err(_) => continue,
            }
        }
    })
    .await
    .expect("slow client was not cut off");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || head.starts_with("HTTP/1.1 408"), "got {head:?}");
    assert!(t.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let origin = TestOrigin::start().await;
    let p = Proxy::start(&origin.url(), "", "");
    let big = "a".repeat(64 * 1024);
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(format!("GET /x.png HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .ok();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"));

    let mut many = String::from("GET /x.png HTTP/1.1\r\nHost: x\r\n");
    for i in 0..300 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(many.as_bytes()).await.ok();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"));
}

#[test]
fn bad_configs_exit_1_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[server]\nlisten = \"127.0.0.1:1\"\nbogus_key = 1\n",
            "bogus_key",
        ),
        (
            "[server]\nshutdown_grace_s = \"soon\"\n",
            "shutdown_grace_s",
        ),
        (
            "[origin]\nurl = \"ftp://x\"\n[auth]\nsecret=\"s\"\nwhitelist_api_key=\"k\"\n",
            "origin.url",
        ),
        ("[auth]\nwhitelist_api_key = \"k\"\n", "auth.secret"),
        ("[store]\nurl = \"mysql://x\"\n", "store.url"),
        ("[nosection]\n", "nosection"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = run_cli(&["check-config", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 1, "{text}");
        assert!(err.contains(key), "{key} not named in: {err}");
        let (code, _, err) = run_cli(&["serve", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 1, "serve accepted {text}");
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    // Several bad keys: one run names them all.
    let many = dir.path().join("many.toml");
    std::fs::write(
        &many,
        "[server]\nlistne = 1\nshutdown_grace_s = \"soon\"\n[origin]\nurl = \"ftp://x\"\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check-config", "--config", many.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    for key in ["server.listne", "server.shutdown_grace_s", "origin.url"] {
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[auth]\nsecret = \"s\"\nwhitelist_api_key = \"k\"\n").unwrap();
    let (code, _, _) = run_cli(&["check-config", "--config", good.to_str().unwrap()], &[]);
    assert_eq!(code, 0);
    let (code, _, err) = run_cli(
        &["check-config", "--config", good.to_str().unwrap()],
        &[("FILEPROXY_SERVER__NOPE", "1")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn version_flag() {
    let (code, out, _) = run_cli(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("fileproxy "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_running_transfer() {
    let origin = TestOrigin::start().await;
    let mut p = Proxy::start(&origin.url(), "", "");
    // 2 s of trickled body (10 chunks, 200 ms apart).
    let r = client()
        .get(p.url("/slow/1000000.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    p.terminate();
    let deadline = Instant::now() + Duration::from_secs(3);
    while TcpStream::connect(p.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = r.bytes().await.expect("transfer cut by shutdown");
    assert_eq!(body.len(), 1_000_000);
    let code = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_and_tls_alpn() {
    let origin = TestOrigin::start().await;
    let content = random_bytes(100_000, 11);
    origin.put("v.png", content.clone());

    // h2c (prior knowledge) on the plain listener.
    let p = Proxy::start(&origin.url(), "", "");
    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c.get(p.url("/files/v.png")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.bytes().await.unwrap().as_ref(), content.as_slice());
    drop(p);

    // TLS with ALPN h2 and http/1.1.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cp, kp) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cp, cert.cert.pem()).unwrap();
    std::fs::write(&kp, cert.signing_key.serialize_pem()).unwrap();
    let server = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cp.display(),
        kp.display()
    );
    let p = Proxy::start(&origin.url(), &server, "");
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let url = format!("https://localhost:{}/files/v.png", p.addr.port());
    for (h2, version) in [
        (true, reqwest::Version::HTTP_2),
        (false, reqwest::Version::HTTP_11),
    ] {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(root.clone())
            .resolve("localhost", p.addr);
        if !h2 {
            b = b.http1_only();
        }
        let r = b.build().unwrap().get(&url).send().await.unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.bytes().await.unwrap().as_ref(), content.as_slice());
    }
}

#[test]
fn example_configs_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        n += 1;
        let mut env = vec![
            ("FILEPROXY_AUTH__SECRET", "s"),
            ("FILEPROXY_AUTH__WHITELIST_API_KEY", "k"),
        ];
        let cert_dir = tempfile::tempdir().unwrap();
        let (c, k) = (cert_dir.path().join("c.pem"), cert_dir.path().join("k.pem"));
        std::fs::write(&c, "x").unwrap();
        std::fs::write(&k, "x").unwrap();
        let (c, k) = (c.display().to_string(), k.display().to_string());
        // Examples naming certificate files (tls.toml, production.toml) get stand-ins.
        let text = std::fs::read_to_string(&path).unwrap();
        if path.ends_with("tls.toml") || text.contains("\ntls_cert") {
            env.push(("FILEPROXY_SERVER__TLS_CERT", &c));
            env.push(("FILEPROXY_SERVER__TLS_KEY", &k));
        }
        let (code, _, err) = run_cli(&["check-config", "--config", path.to_str().unwrap()], &env);
        assert_eq!(code, 0, "{}: {err}", path.display());
    }
    assert!(n >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_holds_extra_clients_until_a_slot_frees() {
    let origin = TestOrigin::start().await;
    origin.put("c.png", vec![5u8; 100]);
    let p = Proxy::start_env(
        &origin.url(),
        "",
        "",
        &[("FILEPROXY_SERVER__MAX_CONNECTIONS", "2")],
    );
    let req = b"GET /files/c.png HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s); // keep-alive: the slot stays taken
    }
    let mut third = TcpStream::connect(p.addr).await.unwrap(); // accepted by the kernel backlog
    third.write_all(req).await.unwrap();
    let mut buf = [0u8; 512];
    let waited = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "third connection served while two slots were taken"
    );
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("third connection never served")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}
