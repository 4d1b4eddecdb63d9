//! Starts the real `fileproxy` binary as a child process for integration tests.

#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The secrets every test config uses.
pub const SECRET: &str = "test-secret-0123456789";
/// Bearer key of POST /api/whitelist in test configs.
pub const WL_KEY: &str = "test-whitelist-key";
/// Admin bearer token in test configs.
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub use super::redis::free_port;

/// A running proxy process, killed on drop.
pub struct Proxy {
    /// The child process.
    pub child: Child,
    /// Main listener address.
    pub addr: SocketAddr,
    /// Folder holding the config file and logs.
    pub dir: tempfile::TempDir,
    /// Captured stderr log file.
    pub log: PathBuf,
}

impl Proxy {
    /// Starts the binary with `extra` TOML appended to a minimal config whose origin is
    /// `origin_url`; `[server]`'s listen and `[auth]` secrets are filled in.
    pub fn start(origin_url: &str, extra_server: &str, extra: &str) -> Proxy {
        Self::start_env(origin_url, extra_server, extra, &[])
    }

    /// Like [`Proxy::start`] with extra environment variables.
    pub fn start_env(
        origin_url: &str,
        extra_server: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Proxy {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_s = 10\n{extra_server}\n\
             [origin]\nurl = \"{origin_url}\"\n\
             [auth]\nsecret = \"{SECRET}\"\nwhitelist_api_key = \"{WL_KEY}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\
             [log]\nlevel = \"info\"\naccess_log = \"off\"\n{extra}\n"
        );
        Self::start_with_config(&cfg, port, dir, env)
    }

    /// Starts the binary with a complete config text listening on `port`.
    pub fn start_with_config(
        cfg: &str,
        port: u16,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Proxy {
        let cfg_path = dir.path().join("fileproxy.toml");
        std::fs::File::create(&cfg_path)
            .and_then(|mut f| f.write_all(cfg.as_bytes()))
            .expect("write config");
        let log = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fileproxy"));
        // Run in the test's own folder: relative defaults (the traffic spool's
        // `fileproxy-state/`) land there, not in the source tree.
        cmd.current_dir(dir.path())
            .arg("serve")
            .arg("--config")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn fileproxy");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut p = Proxy {
            child,
            addr,
            dir,
            log,
        };
        p.wait_ready();
        p
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("fileproxy exited early ({status}): {}", self.log_text());
            }
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("fileproxy did not start: {}", self.log_text());
    }

    /// Base URL of the main listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The process's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident set size (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        proc_status_kb(self.child.id(), "VmHWM:") * 1024
    }

    /// Current resident set size (VmRSS) in bytes.
    pub fn rss(&self) -> u64 {
        proc_status_kb(self.child.id(), "VmRSS:") * 1024
    }

    /// Number of threads of the process.
    pub fn threads(&self) -> u64 {
        proc_status_kb(self.child.id(), "Threads:")
    }

    /// Sends SIGHUP (a configuration reload).
    pub fn sighup(&self) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill -HUP failed");
    }

    /// Waits until the log holds `needle` `times` times (reloads log once each).
    pub fn wait_log(&self, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log_text();
            if log.matches(needle).count() >= times {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{times}) in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits up to `limit` for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs `fileproxy` with arguments to completion; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fileproxy"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run fileproxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (target, status, bytes) of every `GET` line of the combined-format `access.log` in `dir`.
pub fn access_lines(dir: &std::path::Path) -> Vec<(String, u16, u64)> {
    let text = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("\"GET ")?;
            let (target, rest) = rest.split_once(' ')?;
            let (_, after) = rest.split_once("\" ")?;
            let mut f = after.split_whitespace();
            let status = f.next()?.parse().ok()?;
            let bytes = f.next()?.parse().ok()?;
            Some((target.to_string(), status, bytes))
        })
        .collect()
}
