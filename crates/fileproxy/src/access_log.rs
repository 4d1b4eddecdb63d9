//! The access log: one line per finished request in the combined log format
//! (`ip - - [time] "METHOD target HTTP/x" status bytes "referer" "user-agent"`),
//! written to stdout, to a size-rotated file, or nowhere (`log.access_log`).
//!
//! Lines are handed to a writer thread through a bounded channel; a request never
//! waits for the disk. When the writer falls behind and the channel is full the line
//! is dropped and counted (`fileproxy_access_log_dropped_lines_total`). Transfers the
//! viewer abandoned are logged with status 499 and the bytes actually delivered.
//! Credentials in query strings (`token`, `sign`) are replaced by `***`.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;

use http::Version;
use prometheus_client::metrics::counter::Counter;

use crate::config::LogConfig;

/// Query parameters whose values never reach the log.
const REDACTED_PARAMS: [&str; 2] = ["token", "sign"];

/// One request as the log line shows it.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The client IP (after trusted-proxy resolution).
    pub client_ip: IpAddr,
    /// When the request arrived, Unix seconds.
    pub unix: i64,
    /// Request method.
    pub method: &'a str,
    /// Path and query as sent.
    pub target: &'a str,
    /// HTTP version.
    pub version: Version,
    /// Status (499 when the viewer left early).
    pub status: u16,
    /// Body bytes delivered.
    pub bytes: u64,
    /// `Referer` header.
    pub referer: Option<&'a str>,
    /// `User-Agent` header.
    pub user_agent: Option<&'a str>,
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Appends `s` with `"`, `\` and non-printable bytes escaped (as nginx does).
fn push_escaped(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\x22"),
            '\\' => out.push_str("\\x5C"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
}

/// The request target with the values of [`REDACTED_PARAMS`] replaced by `***`.
pub fn redact_target(target: &str) -> Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    let secret = |pair: &str| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        REDACTED_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p))
    };
    if !query.split('&').any(secret) {
        return Cow::Borrowed(target);
    }
    let parts: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if secret(pair) => Cow::Owned(format!("{k}=***")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(format!("{path}?{}", parts.join("&")))
}

/// The combined-format line of `e` (with a trailing newline).
pub fn format_combined(e: &Entry<'_>) -> String {
    let mut out = String::with_capacity(160 + e.target.len());
    out.push_str(&e.client_ip.to_string());
    out.push_str(" - - [");
    out.push_str(&crate::clock::clf(e.unix));
    out.push_str("] \"");
    push_escaped(&mut out, e.method);
    out.push(' ');
    push_escaped(&mut out, &redact_target(e.target));
    out.push(' ');
    out.push_str(version_str(e.version));
    out.push_str("\" ");
    out.push_str(&e.status.to_string());
    out.push(' ');
    if e.bytes == 0 {
        out.push('-');
    } else {
        out.push_str(&e.bytes.to_string());
    }
    out.push_str(" \"");
    push_escaped(&mut out, e.referer.unwrap_or("-"));
    out.push_str("\" \"");
    push_escaped(&mut out, e.user_agent.unwrap_or("-"));
    out.push_str("\"\n");
    out
}

enum Msg {
    Line(String),
    Close,
}

/// The access-log front end held by the app (cheap to call from any task).
pub struct AccessLog {
    tx: Option<SyncSender<Msg>>,
    dropped: Counter,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("enabled", &self.enabled())
            .finish()
    }
}

/// Where lines go.
enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File(RotatingFile),
}

impl Sink {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.write_all(line.as_bytes()),
            Sink::File(f) => f.write_line(line),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(f) => f.out.flush(),
        }
    }
}

/// A log file rotated by size: `name` → `name.1` → … → `name.<keep>`.
struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    out: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    fn open(path: PathBuf, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            max_bytes,
            keep,
            out: BufWriter::with_capacity(64 * 1024, file),
            size,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        let fresh = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.out = BufWriter::with_capacity(64 * 1024, fresh);
        self.size = 0;
        Ok(())
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64;
        if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line.as_bytes())?;
        self.size += len;
        Ok(())
    }
}

fn run_writer(rx: Receiver<Msg>, mut sink: Sink) {
    let mut failed = false;
    let mut write = |sink: &mut Sink, line: &str| {
        if let Err(e) = sink.write_line(line) {
            if !failed {
                tracing::error!(error = %e, "access log write failed (further failures not logged)");
                failed = true;
            }
        }
    };
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Line(l) => write(&mut sink, &l),
            Msg::Close => break,
        }
        // Write whatever else is queued, then flush once the queue is empty.
        let mut closing = false;
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Line(l) => write(&mut sink, &l),
                Msg::Close => {
                    closing = true;
                    break;
                }
            }
        }
        let _ = sink.flush();
        if closing {
            break;
        }
    }
    let _ = sink.flush();
}

impl AccessLog {
    /// An access log that writes nothing (`log.access_log = "off"`).
    pub fn off(dropped: Counter) -> Self {
        AccessLog {
            tx: None,
            dropped,
            writer: Mutex::new(None),
        }
    }

    /// Starts the writer for `log.access_log` (`stdout`, `off` or a file path).
    pub fn start(cfg: &LogConfig, dropped: Counter) -> anyhow::Result<Self> {
        let sink = match cfg.access_log.as_str() {
            "off" | "" => return Ok(Self::off(dropped)),
            "stdout" | "-" => Sink::Stdout(BufWriter::with_capacity(64 * 1024, io::stdout())),
            path => Sink::File(
                RotatingFile::open(
                    PathBuf::from(path),
                    cfg.access_log_max_bytes,
                    cfg.access_log_keep,
                )
                .map_err(|e| anyhow::anyhow!("log.access_log = {path:?}: {e}"))?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel(cfg.access_log_buffer.max(1));
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run_writer(rx, sink))?;
        Ok(AccessLog {
            tx: Some(tx),
            dropped,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Whether lines are written anywhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one line; never blocks (a full queue drops the line and counts it).
    pub fn log(&self, entry: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Msg::Line(format_combined(entry))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Writes what is queued and stops the writer (blocking; call at shutdown).
    pub fn close(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Close);
        }
        let handle = self.writer.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(target: &'a str, ua: Option<&'a str>) -> Entry<'a> {
        Entry {
            client_ip: "203.0.113.7".parse().unwrap(),
            unix: 971_186_136,
            method: "GET",
            target,
            version: Version::HTTP_11,
            status: 200,
            bytes: 2326,
            referer: None,
            user_agent: ua,
        }
    }

    #[test]
    fn combined_format() {
        let line = format_combined(&entry("/a/b.ts", Some("Mozilla/5.0 \"x\"")));
        assert_eq!(
            line,
            "203.0.113.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /a/b.ts HTTP/1.1\" 200 2326 \"-\" \"Mozilla/5.0 \\x22x\\x22\"\n"
        );
    }

    #[test]
    fn tokens_are_redacted() {
        assert_eq!(
            redact_target("/a/i.m3u8?uid=u1&expires=9&token=SECRET"),
            "/a/i.m3u8?uid=u1&expires=9&token=***"
        );
        assert_eq!(redact_target("/x?Sign=abc&b=1"), "/x?Sign=***&b=1");
        assert_eq!(redact_target("/x?tokenize=1"), "/x?tokenize=1");
        assert_eq!(redact_target("/plain"), "/plain");
    }

    #[test]
    fn file_rotation_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let cfg = LogConfig {
            access_log: path.display().to_string(),
            access_log_max_bytes: 300,
            access_log_keep: 2,
            ..LogConfig::default()
        };
        let log = AccessLog::start(&cfg, Counter::default()).unwrap();
        for i in 0..20 {
            let target = format!("/seg{i}.ts");
            log.log(&entry(&target, Some("ua")));
        }
        log.close();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["access.log", "access.log.1", "access.log.2"]);
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
            assert!(len <= 300, "{n} has {len} bytes");
        }
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.contains("/seg19.ts"), "{newest}");
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let dropped = Counter::default();
        let (tx, _rx) = mpsc::sync_channel(1);
        let log = AccessLog {
            tx: Some(tx),
            dropped: dropped.clone(),
            writer: Mutex::new(None),
        };
        log.log(&entry("/1", None));
        log.log(&entry("/2", None));
        log.log(&entry("/3", None));
        assert_eq!(dropped.get(), 2);
    }
}
