//! `/monitor` in a real browser: headless Chromium driven by Playwright
//! (`tests/browser/monitor.mjs`) opens the page with the admin token while viewer
//! traffic runs through the real binary, checks that every chart draws and keeps
//! updating from `/stats`, and saves a screenshot to `bench/results/tmp/monitor.png`.
//!
//! Needs `node` and Chromium (`apt-get install -y chromium nodejs npm`); without them
//! the test prints why on the terminal (past the test harness's capture, so the skip
//! shows in the run's output) and skips, or fails when `FILEPROXY_REQUIRE_BROWSER=1`
//! (as `.ci/run` sets). `npm ci` in `tests/browser` is run when its `node_modules` is
//! missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::origin::TestOrigin;
use support::proxy::{Proxy, WL_KEY};

fn chromium() -> Option<PathBuf> {
    let p = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    p.is_file().then_some(p)
}

fn has_node() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Reports a missing tool: a failure when `FILEPROXY_REQUIRE_BROWSER=1`, else a line
/// written straight to stderr (libtest captures only `eprintln!`), so it is seen.
fn skip(why: &str) {
    let line = format!("SKIPPED monitor_page_draws_live_charts: {why}");
    if std::env::var_os("FILEPROXY_REQUIRE_BROWSER").is_some_and(|v| v == "1") {
        panic!("{line} (FILEPROXY_REQUIRE_BROWSER=1)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_page_draws_live_charts() {
    let Some(chromium) = chromium() else {
        skip(
            "Chromium not found at /usr/bin/chromium (or $CHROMIUM); install it with \
             `apt-get install -y chromium`",
        );
        return;
    };
    if !has_node() {
        skip("`node` not found; install it with `apt-get install -y nodejs npm`");
        return;
    }
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").is_dir() {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm must be installed with node");
        assert!(st.success(), "npm ci in {} failed", dir.display());
    }

    let origin = TestOrigin::start().await;
    origin.put("ka/index.m3u8", "#EXTM3U\n");
    // The page is opened on the admin listener: the main listener takes the admin
    // token only as a bearer header, never from the URL (SPEC §10).
    let admin_port = support::proxy::free_port();
    let p = Proxy::start(
        &origin.url(),
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        "",
    );
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let ua = "Mozilla/5.0 (X11; Linux x86_64) MonitorTest/1.0";
    let r = c
        .post(p.url("/api/whitelist"))
        .bearer_auth(WL_KEY)
        .json(
            &serde_json::json!({"uid": "viewer-1", "path": "/gen/ka/index.m3u8",
            "clientIp": "127.0.0.1", "UserAgent": ua}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Viewer traffic while the page is open: segments, a few 404s and refusals,
    // sessions created (uid given) and reused.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..3u64 {
        let (c, stop, base) = (c.clone(), stop.clone(), p.url(""));
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let path = match (worker, i % 10) {
                    (0, 0) => format!("/gen/{}/ka/seg{i}.ts?uid=viewer-{i}", 100_000),
                    (_, 3) => "/files/ka/missing.ts".to_string(),
                    (_, 7) => "/gen/1000/zz/seg.ts".to_string(),
                    _ => format!("/gen/{}/ka/seg{i}.ts", 50_000 + 10_000 * (i % 20)),
                };
                if let Ok(r) = c
                    .get(format!("{base}{path}"))
                    .header("user-agent", ua)
                    .send()
                    .await
                {
                    let _ = r.bytes().await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }

    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/results/tmp");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("monitor.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://127.0.0.1:{admin_port}/monitor");
    let run = tokio::process::Command::new("node")
        .arg("monitor.mjs")
        .arg(&url)
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("browser check finished")
        .expect("node runs");
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "browser check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("monitor check passed"));
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} has {size} bytes",
        shot.display()
    );
}
