//! Operations (SPEC §14), through the real binary: `SIGHUP` reload (new secrets and
//! limits for new requests, restart-only keys named, an invalid file changes nothing),
//! `/metrics` content negotiation checked with the Prometheus project's own Python
//! parsers, the shipped systemd unit under `systemd-analyze verify`, and the production
//! example accepted by `check-config`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::access::*;
use support::origin::TestOrigin;
use support::proxy::{free_port, run_cli, Proxy, ADMIN_TOKEN, SECRET, WL_KEY};

const NEW_SECRET: &str = "rotated-secret-9876543210";
const NEW_WL_KEY: &str = "rotated-whitelist-key";
const BAD_TOKEN: &str = ".m3u8 request token invalid or expired hmac";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn admit_status(p: &Proxy, key: &str, uid: &str, v: &Video, ip: &str) -> u16 {
    let body = serde_json::json!({
        "uid": uid, "path": v.playlist, "clientIp": ip, "UserAgent": ODD_PLAYER
    });
    admit_raw(p, Some(&format!("Bearer {key}")), &body.to_string())
        .await
        .status
}

async fn metrics_text(p: &Proxy, accept: Option<&str>) -> (String, String) {
    let mut rb = http_client(None)
        .get(p.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(a) = accept {
        rb = rb.header("accept", a);
    }
    let r = rb.send().await.expect("metrics");
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (ct, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_applies_secrets_and_limits_and_keeps_old_on_a_bad_file() {
    let origin = TestOrigin::start().await;
    let v = Video::put(&origin, "reload");
    let p = ProxyConfig::trusting_loopback("memory://")
        .auth("skip_validation_suffixes = [\".txt\"]")
        .tail("[auth.playlist_limits.unknown]\nlimit = 1\nwindow_s = 600\n")
        .start(&origin.url());
    let viewer = Viewer::new("203.0.113.7", ODD_PLAYER);

    // Before: the start-up key admits, the playlist limit is 1.
    assert_eq!(admit_status(&p, WL_KEY, "u1", &v, "203.0.113.7").await, 200);
    let url = sign("u1", &v.playlist);
    viewer
        .get(&p, &url)
        .await
        .assert_text(200, std::str::from_utf8(&v.playlist_body).unwrap());
    viewer
        .get(&p, &url)
        .await
        .assert_text(403, "Access Denied 100308 with uid:u1");

    // A transfer in flight across the reload (the origin sends it in 10 chunks over
    // 2 s; `.txt` skips the viewer checks under the start-up file).
    let slow_url = p.url("/slow/100000.txt");
    let in_flight = tokio::spawn(async move {
        let r = http_client(None)
            .get(slow_url)
            .header("user-agent", ODD_PLAYER)
            .send()
            .await
            .expect("slow request");
        let status = r.status().as_u16();
        (status, r.bytes().await.map(|b| b.len()).unwrap_or(0))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Rotate the secret and the whitelist key, raise the limit, move the listener.
    let cfg_path = config_path(&p);
    let original = std::fs::read_to_string(&cfg_path).unwrap();
    let moved_port = free_port();
    let rotated = original
        .replace(SECRET, NEW_SECRET)
        .replace(WL_KEY, NEW_WL_KEY)
        .replace("limit = 1\n", "limit = 3\n")
        .replace("[\".txt\"]", "[\".webp\"]")
        .replace(
            &format!("listen = \"{}\"", p.addr),
            &format!("listen = \"127.0.0.1:{moved_port}\""),
        );
    assert_ne!(rotated, original);
    std::fs::write(&cfg_path, &rotated).unwrap();
    p.sighup();
    let log = p.wait_log("configuration reloaded (SIGHUP)", 1);
    assert!(
        log.contains("need a restart") && log.contains("server.listen"),
        "restart-only key not named:\n{log}"
    );
    for secret in [NEW_SECRET, NEW_WL_KEY, SECRET] {
        assert!(!log.contains(secret), "a secret reached the log");
    }

    // The transfer that started before the reload ends complete; a new request for
    // the same file meets the new rules (`.txt` no longer skips the checks).
    assert_eq!(in_flight.await.unwrap(), (200, 100_000));
    assert_eq!(
        http_client(None)
            .get(p.url("/slow/100000.txt"))
            .header("user-agent", ODD_PLAYER)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    // After: the listener stayed where it was; new requests see the new file.
    assert!(std::net::TcpStream::connect(("127.0.0.1", moved_port)).is_err());
    assert_eq!(
        admit_status(&p, WL_KEY, "u2", &v, "203.0.113.70").await,
        403
    );
    assert_eq!(
        admit_status(&p, NEW_WL_KEY, "u2", &v, "203.0.113.70").await,
        200
    );
    // Another viewer (a fresh session) on the new secret and the new limit.
    let viewer = Viewer::new("203.0.113.70", ODD_PLAYER);
    let old_signed = sign("u2", &v.playlist);
    viewer
        .get(&p, &old_signed)
        .await
        .assert_text(403, BAD_TOKEN);
    let new_signed =
        fileproxy::access::token::sign_url(NEW_SECRET.as_bytes(), "u2", &v.playlist, 3600, now());
    for _ in 0..3 {
        assert_eq!(viewer.get(&p, &new_signed).await.status, 200);
    }
    viewer
        .get(&p, &new_signed)
        .await
        .assert_text(403, "Access Denied 100308 with uid:u2");

    // An invalid file: nothing changes, the error is logged and counted.
    std::fs::write(
        &cfg_path,
        rotated.replace("limit = 3\n", "limit = 3\nlimt = 4\n"),
    )
    .unwrap();
    p.sighup();
    let log = p.wait_log("configuration reload (SIGHUP) failed", 1);
    assert!(log.contains("limt"), "the bad key is not named:\n{log}");
    assert!(p.child.id() > 0);
    assert_eq!(
        admit_status(&p, NEW_WL_KEY, "u3", &v, "203.0.113.70").await,
        200
    );
    assert_eq!(
        admit_status(&p, WL_KEY, "u3", &v, "203.0.113.70").await,
        403
    );
    let (_, text) = metrics_text(&p, None).await;
    assert!(
        text.contains("fileproxy_config_reloads_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fileproxy_config_reloads_total{result=\"failed\"} 1"),
        "{text}"
    );
    // Still serving after both signals.
    let (status, _) = health(&p).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_changes_traffic_settings() {
    let origin = TestOrigin::start().await;
    let p = ProxyConfig::trusting_loopback("memory://")
        .tail("[traffic]\ninterval_s = 10\nmin_bytes = 1048576\n")
        .start(&origin.url());
    let reporting = |p: &Proxy| {
        let url = p.url("/traffic");
        async move {
            let r = http_client(None)
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("traffic view");
            let v: serde_json::Value = r.json().await.expect("json");
            v["reporting"].clone()
        }
    };
    let before = reporting(&p).await;
    assert_eq!(before["enabled"], false);
    assert_eq!(before["min_bytes"], 1_048_576);
    let cfg_path = config_path(&p);
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let receiver = format!("http://127.0.0.1:{}/report", free_port());
    std::fs::write(
        &cfg_path,
        text.replace("interval_s = 10\n", "interval_s = 3\n")
            .replace(
                "min_bytes = 1048576\n",
                &format!("min_bytes = 4096\nreport_url = \"{receiver}\"\n"),
            ),
    )
    .unwrap();
    p.sighup();
    let log = p.wait_log("configuration reloaded (SIGHUP)", 1);
    assert!(!log.contains("need a restart"), "{log}");
    let after = reporting(&p).await;
    assert_eq!(after["enabled"], true, "{after}");
    assert_eq!(after["min_bytes"], 4096);
    assert_eq!(after["interval_s"], 3);
    assert_eq!(after["report_url"], receiver.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_log_level_takes_effect() {
    let origin = TestOrigin::start().await;
    let p = ProxyConfig::trusting_loopback("memory://").start(&origin.url());
    // At info, a refused viewer request logs "request denied".
    let viewer = Viewer::new("203.0.113.9", ODD_PLAYER);
    assert_eq!(viewer.get(&p, "/files/vod/x/seg0.ts").await.status, 403);
    p.wait_log("request denied", 1);
    let cfg_path = config_path(&p);
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        // Warnings only, but the reload module's own lines stay visible.
        text.replace(
            "level = \"info\"",
            "level = \"warn,fileproxy::reload=info\"",
        ),
    )
    .unwrap();
    p.sighup();
    p.wait_log("configuration reloaded (SIGHUP)", 1);
    let before = p.log_text().matches("request denied").count();
    assert_eq!(viewer.get(&p, "/files/vod/x/seg0.ts").await.status, 403);
    // The next request is answered after its log line would have been written.
    assert_eq!(viewer.get(&p, "/files/vod/x/seg1.ts").await.status, 403);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(p.log_text().matches("request denied").count(), before);
}

/// Runs Python's `prometheus_client` parser `mode` ("text" or "openmetrics") on
/// `exposition`; returns `(family name, type, sample count)` per family.
fn python_parse(mode: &str, exposition: &str) -> Vec<(String, String, usize)> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scrape.txt");
    std::fs::write(&file, exposition).unwrap();
    let script = r#"
import sys
mode, path = sys.argv[1], sys.argv[2]
text = open(path).read()
if mode == "text":
    from prometheus_client.parser import text_string_to_metric_families
else:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(text):
    print(fam.name, fam.type, len(fam.samples))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(mode)
        .arg(&file)
        .output()
        .expect("python3 is needed for this test (.ci/run installs it)");
    assert!(
        out.status.success(),
        "prometheus_client's {mode} parser rejected /metrics (pip install prometheus_client; .ci/run does):\n{}\n---\n{exposition}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((
                it.next()?.to_string(),
                it.next()?.to_string(),
                it.next()?.parse().ok()?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_negotiate_text_004_and_openmetrics_and_both_parse() {
    let origin = TestOrigin::start().await;
    let v = Video::put(&origin, "metrics");
    let p = ProxyConfig::trusting_loopback("memory://").start(&origin.url());
    let viewer = Viewer::new("203.0.113.8", CHROME);
    viewer.admit(&p, "m1", &v.playlist).await;
    assert_eq!(viewer.get(&p, &sign("m1", &v.playlist)).await.status, 200);
    assert_eq!(viewer.get(&p, &v.seg0).await.status, 200);

    // Default (no Accept, or a plain-text scraper): text format 0.0.4.
    for accept in [None, Some("text/plain"), Some("*/*")] {
        let (ct, _) = metrics_text(&p, accept).await;
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
    }
    let (_, text) = metrics_text(&p, None).await;
    assert!(!text.contains("# EOF"), "{text}");
    let families = python_parse("text", &text);
    let counters: Vec<_> = families.iter().filter(|f| f.1 == "counter").collect();
    assert!(counters.len() >= 10, "{families:?}");
    for (name, _, samples) in &counters {
        assert!(
            *samples > 0,
            "counter {name} has no samples under the text parser"
        );
    }
    assert!(
        !families.iter().any(|f| f.1 == "unknown" && f.2 == 0),
        "families the text parser could not type: {families:?}"
    );
    let requests = families
        .iter()
        .find(|f| f.0 == "fileproxy_requests")
        .expect("fileproxy_requests family");
    assert_eq!(requests.1, "counter");
    assert!(families
        .iter()
        .any(|f| f.0 == "fileproxy_time_to_first_byte_seconds" && f.1 == "histogram"));

    // A scraper asking for OpenMetrics (as Prometheus does) gets it.
    let prom_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (ct, om) = metrics_text(&p, Some(prom_accept)).await;
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("# EOF\n"));
    let families = python_parse("openmetrics", &om);
    let requests = families
        .iter()
        .find(|f| f.0 == "fileproxy_requests")
        .expect("fileproxy_requests family");
    assert_eq!(requests.1, "counter");
    assert!(requests.2 > 0);
    assert!(families
        .iter()
        .any(|f| f.0 == "fileproxy_build" && f.1 == "info"));
}

/// The congestion control algorithms this kernel offers.
fn available_congestion_controls() -> Vec<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The congestion control algorithm `ss` reports for the proxy's end of the connection
/// whose client port is `client_port`.
fn server_side_congestion_control(p: &Proxy, client_port: u16) -> String {
    let out = Command::new("ss")
        .args(["-Htin", "state", "established"])
        .arg(format!(
            "( sport = :{} and dport = :{client_port} )",
            p.addr.port()
        ))
        .output()
        .expect("ss (iproute2; .ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let known = available_congestion_controls();
    text.split_whitespace()
        .find(|w| known.iter().any(|k| k == w))
        .unwrap_or_else(|| panic!("no algorithm in `ss` output: {text:?}"))
        .to_string()
}

/// One request on a fresh connection; returns the connection (kept open) and the
/// algorithm the proxy's end of it uses.
async fn connection_algorithm(p: &Proxy) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(c.read(&mut buf).await.unwrap() > 0);
    let port = c.local_addr().unwrap().port();
    let algorithm = server_side_congestion_control(p, port);
    (c, algorithm)
}

async fn congestion_counts(p: &Proxy) -> (f64, f64) {
    let (_, text) = metrics_text(p, None).await;
    let count = |applied: &str| {
        let line =
            format!("fileproxy_connections_congestion_control_total{{applied=\"{applied}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {line:?} in /metrics"))
    };
    (count("configured"), count("system_default"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_viewers_keep_the_system_congestion_control_and_far_ones_get_the_configured_one() {
    let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .unwrap()
        .trim()
        .to_string();
    let configured = available_congestion_controls()
        .into_iter()
        .find(|a| *a != system)
        .expect("a second congestion control algorithm (reno is built in)");
    let origin = TestOrigin::start().await;

    let start = |extra: &str| {
        ProxyConfig::trusting_loopback("memory://")
            .tail(&format!(
                "[sockets]\ncongestion_control = \"{configured}\"\n{extra}"
            ))
            .start(&origin.url())
    };

    // Default threshold (1 ms): a loopback peer is near and keeps the system default.
    let p = start("");
    let (_c, algorithm) = connection_algorithm(&p).await;
    assert_eq!(algorithm, system);
    let (conf, sys) = congestion_counts(&p).await;
    assert_eq!(conf, 0.0);
    assert!(sys >= 1.0, "{sys}");

    // A threshold of 1 µs: every measured path reaches it, so the algorithm is set.
    let p = start("congestion_control_min_rtt_us = 1\n");
    let (_c, algorithm) = connection_algorithm(&p).await;
    assert_eq!(algorithm, configured);
    let (conf, _) = congestion_counts(&p).await;
    assert!(conf >= 1.0, "{conf}");
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo_root().join("examples/fileproxy.service"))
        .expect("examples/fileproxy.service");
    for needed in [
        "Type=notify",
        "StateDirectory=",
        "LimitNOFILE=",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(needed), "unit lacks {needed}");
    }
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is needed for this test (apt-get install systemd; .ci/run does)"
    );
    // `verify` checks that ExecStart's binary exists: point it at the one just built,
    // everything else is verified as shipped.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("fileproxy.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/fileproxy", env!("CARGO_BIN_EXE_fileproxy")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // verify exits 0 on unknown keys or bad values too, printing a warning: any
    // message about the unit fails the test.
    assert!(
        out.status.success() && !stderr.contains("fileproxy.service") && stdout.trim().is_empty(),
        "systemd-analyze verify complained:\n{stdout}\n{stderr}"
    );
}

#[test]
fn systemd_analyze_verify_catches_a_broken_unit() {
    // The check above is only worth something if a broken unit makes it fail.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("broken.service");
    std::fs::write(
        &copy,
        format!(
            "[Service]\nType=notfy\nExecStart={} serve\nProtectSystm=strict\n",
            env!("CARGO_BIN_EXE_fileproxy")
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze is needed (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ProtectSystm") && stderr.contains("notfy"),
        "{stderr}"
    );
}

#[test]
fn production_example_passes_check_config() {
    let example = repo_root().join("examples/production.toml");
    let text = std::fs::read_to_string(&example).expect("examples/production.toml");
    for needed in ["tls_cert", "admin_listen", "trusted_proxies", "rediss://"] {
        assert!(text.contains(needed), "production example lacks {needed}");
    }
    // The certificate files the example names live on the production host; here they
    // are generated and given by environment, as the unit's secrets are.
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["media.example.com".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let example_s = example.to_str().unwrap();
    let env = [
        ("FILEPROXY_SERVER__TLS_CERT", cert_path.to_str().unwrap()),
        ("FILEPROXY_SERVER__TLS_KEY", key_path.to_str().unwrap()),
        ("FILEPROXY_AUTH__SECRET", "an-example-secret"),
        ("FILEPROXY_AUTH__WHITELIST_API_KEY", "an-example-key"),
        ("FILEPROXY_AUTH__ADMIN_TOKEN", "an-example-token"),
        (
            "FILEPROXY_STORE__URL",
            "rediss://:pw@redis.internal.example:6380/0",
        ),
    ];
    let (code, out, err) = run_cli(&["check-config", "--config", example_s], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration OK"), "{out}");
    // Without the secrets the same file is refused, naming them.
    let (code, _, err) = run_cli(&["check-config", "--config", example_s], &env[..2]);
    assert_eq!(code, 1);
    assert!(err.contains("auth.secret"), "{err}");
}
