//! Durable storage of report batches waiting for delivery, and of the not-yet-reported
//! figures saved at shutdown: a folder ([`folder`]: `traffic.spool_dir`, by default
//! under `$STATE_DIRECTORY` or `./fileproxy-state`) or, with `traffic.spool = "store"`,
//! the shared store.
//!
//! A folder spool writes each batch to `<name>.tmp`, `fsync`s it, renames it into
//! place and `fsync`s the folder, so a batch is either complete on disk or absent.
//! Batch names sort in creation order. A store spool keeps each batch under its own key
//! and the list of names in an index key (changed with compare-and-set), both with a
//! seven-day TTL: after a week of receiver outage the oldest batches expire.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{update_json, SharedStore, Write};

/// How long a store spool keeps batches and saved figures.
pub const STORE_SPOOL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Name of the saved-figures file in a folder spool.
const PENDING_FILE: &str = "pending.json";

/// The spool folder: `spool_dir` when set; else `$STATE_DIRECTORY/traffic` (the first
/// folder systemd's `StateDirectory=` names); else `fileproxy-state/traffic` under the
/// working directory.
pub fn folder(spool_dir: &str, state_directory: Option<std::ffi::OsString>) -> PathBuf {
    if !spool_dir.is_empty() {
        return PathBuf::from(spool_dir);
    }
    let state = state_directory
        .as_deref()
        .and_then(|v| v.to_str())
        .and_then(|v| v.split(':').find(|p| !p.is_empty()))
        .map(PathBuf::from);
    match state {
        Some(base) => base.join("traffic"),
        None => PathBuf::from("fileproxy-state").join("traffic"),
    }
}

/// Why the spool could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// File system error.
    #[error("spool folder: {0}")]
    Io(#[from] std::io::Error),
    /// Store error.
    #[error("spool store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The background task running the file operation failed.
    #[error("spool task failed: {0}")]
    Task(String),
}

/// Where batches are kept.
pub enum Spool {
    /// A folder.
    Dir(PathBuf),
    /// The shared store, under keys named after the worker id.
    Store {
        /// The store.
        store: SharedStore,
        /// Key of the JSON list of batch names.
        index_key: String,
        /// Prefix of batch keys (`<prefix><name>`).
        batch_prefix: String,
        /// Key of the saved figures.
        pending_key: String,
    },
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spool::Dir(p) => write!(f, "Spool::Dir({})", p.display()),
            Spool::Store { index_key, .. } => write!(f, "Spool::Store({index_key})"),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SpoolError::Task(e.to_string()))?
        .map_err(SpoolError::Io)
}

/// Writes `body` to `dir/name` atomically and durably.
fn write_durable(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

fn is_batch_name(name: &str) -> bool {
    name.starts_with("batch-") && name.ends_with(".json")
}

impl Spool {
    /// A folder spool (created if missing).
    pub fn dir(path: impl Into<PathBuf>) -> Result<Spool, SpoolError> {
        let path = path.into();
        std::fs::create_dir_all(&path)?;
        Ok(Spool::Dir(path))
    }

    /// A store spool for `worker_id`.
    pub fn store(store: SharedStore, worker_id: &str) -> Spool {
        Spool::Store {
            store,
            index_key: format!("fileproxy:traffic:spool:{worker_id}"),
            batch_prefix: format!("fileproxy:traffic:batch:{worker_id}:"),
            pending_key: format!("fileproxy:traffic:pending:{worker_id}"),
        }
    }

    /// Every spooled batch, oldest first, as `(name, body)`.
    pub async fn load(&self) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
        match self {
            Spool::Dir(dir) => {
                let dir = dir.clone();
                blocking(move || {
                    let mut names: Vec<String> = std::fs::read_dir(&dir)?
                        .filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|n| is_batch_name(n))
                        .collect();
                    names.sort();
                    let mut out = Vec::with_capacity(names.len());
                    for n in names {
                        let body = std::fs::read(dir.join(&n))?;
                        out.push((n, body));
                    }
                    Ok(out)
                })
                .await
            }
            Spool::Store {
                store,
                index_key,
                batch_prefix,
                ..
            } => {
                let names: Vec<String> = store
                    .get(index_key)
                    .await?
                    .and_then(|v| serde_json::from_str(&v).ok())
                    .unwrap_or_default();
                if names.is_empty() {
                    return Ok(Vec::new());
                }
                let keys: Vec<String> =
                    names.iter().map(|n| format!("{batch_prefix}{n}")).collect();
                let bodies = store.get_many(&keys).await?;
                let mut out: Vec<(String, Vec<u8>)> = names
                    .into_iter()
                    .zip(bodies)
                    .filter_map(|(n, b)| b.map(|b| (n, b.into_bytes())))
                    .collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(out)
            }
        }
    }

    /// The body of one spooled batch; `None` when it is not there (any more).
    pub async fn load_one(&self, name: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        match self {
            Spool::Dir(dir) => {
                let path = dir.join(name);
                blocking(move || match std::fs::read(path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                })
                .await
            }
            Spool::Store {
                store,
                batch_prefix,
                ..
            } => Ok(store
                .get(&format!("{batch_prefix}{name}"))
                .await?
                .map(String::into_bytes)),
        }
    }

    /// Stores one batch durably under `name`.
    pub async fn put(&self, name: &str, body: &[u8]) -> Result<(), SpoolError> {
        match self {
            Spool::Dir(dir) => {
                let (dir, name, body) = (dir.clone(), name.to_string(), body.to_vec());
                blocking(move || write_durable(&dir, &name, &body)).await
            }
            Spool::Store {
                store,
                index_key,
                batch_prefix,
                ..
            } => {
                let value = String::from_utf8_lossy(body).into_owned();
                store
                    .set(&format!("{batch_prefix}{name}"), &value, STORE_SPOOL_TTL)
                    .await?;
                update_json(&**store, index_key, STORE_SPOOL_TTL, |cur| {
                    let mut names: Vec<String> = cur
                        .and_then(|v| serde_json::from_str(v).ok())
                        .unwrap_or_default();
                    if !names.iter().any(|n| n == name) {
                        names.push(name.to_string());
                    }
                    serde_json::to_string(&names).ok()
                })
                .await?;
                Ok(())
            }
        }
    }

    /// Removes a delivered batch.
    pub async fn remove(&self, name: &str) -> Result<(), SpoolError> {
        match self {
            Spool::Dir(dir) => {
                let path = dir.join(name);
                blocking(move || match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                })
                .await
            }
            Spool::Store {
                store,
                index_key,
                batch_prefix,
                ..
            } => {
                update_json(&**store, index_key, STORE_SPOOL_TTL, |cur| {
                    let mut names: Vec<String> = cur
                        .and_then(|v| serde_json::from_str(v).ok())
                        .unwrap_or_default();
                    let before = names.len();
                    names.retain(|n| n != name);
                    (names.len() != before)
                        .then(|| serde_json::to_string(&names).ok())
                        .flatten()
                })
                .await?;
                store
                    .write(&[Write::Delete {
                        key: format!("{batch_prefix}{name}"),
                    }])
                    .await?;
                Ok(())
            }
        }
    }

    /// Saves the not-yet-reported figures (replacing any saved before).
    pub async fn save_pending(&self, body: &[u8]) -> Result<(), SpoolError> {
        match self {
            Spool::Dir(dir) => {
                let (dir, body) = (dir.clone(), body.to_vec());
                blocking(move || write_durable(&dir, PENDING_FILE, &body)).await
            }
            Spool::Store {
                store, pending_key, ..
            } => {
                let value = String::from_utf8_lossy(body).into_owned();
                store.set(pending_key, &value, STORE_SPOOL_TTL).await?;
                Ok(())
            }
        }
    }

    /// Reads and deletes the saved figures. When the delete fails the figures are not
    /// returned (they stay saved for the next start), so they are never counted twice.
    pub async fn take_pending(&self) -> Result<Option<Vec<u8>>, SpoolError> {
        match self {
            Spool::Dir(dir) => {
                let path = dir.join(PENDING_FILE);
                blocking(move || match std::fs::read(&path) {
                    Ok(body) => {
                        std::fs::remove_file(&path)?;
                        if let Some(parent) = path.parent() {
                            std::fs::File::open(parent)?.sync_all()?;
                        }
                        Ok(Some(body))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                })
                .await
            }
            Spool::Store {
                store, pending_key, ..
            } => {
                let Some(v) = store.get(pending_key).await? else {
                    return Ok(None);
                };
                store
                    .write(&[Write::Delete {
                        key: pending_key.clone(),
                    }])
                    .await?;
                Ok(Some(v.into_bytes()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn round_trip(spool: Spool) {
        spool.put("batch-2-b.json", b"{\"b\":2}").await.unwrap();
        spool.put("batch-1-a.json", b"{\"a\":1}").await.unwrap();
        let all = spool.load().await.unwrap();
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["batch-1-a.json", "batch-2-b.json"]);
        assert_eq!(all[0].1, b"{\"a\":1}");
        assert_eq!(
            spool.load_one("batch-2-b.json").await.unwrap().as_deref(),
            Some(&b"{\"b\":2}"[..])
        );
        assert_eq!(spool.load_one("batch-9.json").await.unwrap(), None);
        spool.remove("batch-1-a.json").await.unwrap();
        spool.remove("batch-1-a.json").await.unwrap();
        assert_eq!(spool.load().await.unwrap().len(), 1);
        assert_eq!(spool.take_pending().await.unwrap(), None);
        spool.save_pending(b"p1").await.unwrap();
        spool.save_pending(b"p2").await.unwrap();
        assert_eq!(
            spool.take_pending().await.unwrap().as_deref(),
            Some(&b"p2"[..])
        );
        assert_eq!(spool.take_pending().await.unwrap(), None);
    }

    #[tokio::test]
    async fn dir_spool() {
        let dir = tempfile::tempdir().unwrap();
        round_trip(Spool::dir(dir.path().join("spool")).unwrap()).await;
        let left: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[tokio::test]
    async fn store_spool() {
        let store: SharedStore = Arc::new(crate::store::memory::MemoryStore::new());
        round_trip(Spool::store(store, "w1")).await;
    }

    #[test]
    fn default_folder() {
        assert_eq!(folder("/x/y", None), PathBuf::from("/x/y"));
        assert_eq!(
            folder("", Some("/var/lib/fileproxy".into())),
            PathBuf::from("/var/lib/fileproxy/traffic")
        );
        assert_eq!(
            folder("", Some("/var/lib/a:/var/lib/b".into())),
            PathBuf::from("/var/lib/a/traffic")
        );
        assert_eq!(
            folder("", Some("".into())),
            PathBuf::from("fileproxy-state/traffic")
        );
        assert_eq!(folder("", None), PathBuf::from("fileproxy-state/traffic"));
    }
}
