//! Leases in a local JSON file, for a single `bunker serve` without a lease table: schedule
//! slots survive a restart (a slot is never fired twice), copies are claimed as usual.
//! Several instances need `serve.lease_table` (DynamoDB) instead.
//!
//! The file is replaced atomically on every change (a fresh 0600 temporary file, fsync,
//! rename, fsync of the directory), so a crash leaves the old or the new version, never half
//! of one. A file that is damaged all the same (emptied, truncated, edited by hand) is moved
//! aside as `<file>.corrupt-<unix time>` for inspection, counted in
//! `bunker_lease_file_rebuilt_total`, reported to the error topic, and rebuilt empty: the
//! schedule keeps running. The cost is that the slot records are gone, so the newest slot
//! may fire once more.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::Recipient;
use async_trait::async_trait;
use bunker_actors::metrics::Metrics;
use bunker_actors::ports::{ErrorKind, Leases, PortError};
use bunker_actors::system::ReportFailure;
use tokio::sync::Mutex;
use tracing::error;

use crate::files;

/// A lease file larger than this is not one bunker wrote (a lease is about 150 bytes).
pub const MAX_LEASE_FILE_BYTES: u64 = 16 << 20;

type Held = BTreeMap<String, (String, i64)>;

/// Leases in `path`, rewritten atomically on each claim.
pub struct FileLeases {
    path: PathBuf,
    held: Mutex<Option<Held>>,
    metrics: Option<Arc<Metrics>>,
    failures: Option<Recipient<ReportFailure>>,
}

impl FileLeases {
    /// Leases kept in `path` (created on first claim).
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(FileLeases { path, held: Mutex::new(None), metrics: None, failures: None })
    }

    /// The same, counting a rebuilt file in `metrics` and reporting it to `failures`.
    pub fn reporting(path: PathBuf, metrics: Arc<Metrics>, failures: Recipient<ReportFailure>) -> Arc<Self> {
        Arc::new(FileLeases { path, held: Mutex::new(None), metrics: Some(metrics), failures: Some(failures) })
    }
}

fn io(e: impl std::fmt::Display, path: &Path) -> PortError {
    PortError::new(ErrorKind::Internal, None, format!("lease file {}: {e}", path.display()))
}

/// What loading the file found.
enum Loaded {
    Leases(Held),
    /// Damaged: moved aside to this path (the reason is in the text).
    Rebuilt(String),
}

fn load(path: &Path) -> Result<Loaded, PortError> {
    let bytes = match files::read_capped(path, MAX_LEASE_FILE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Leases(Held::new())),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return set_aside(path, &e.to_string()),
        Err(e) => return Err(io(e, path)),
    };
    match serde_json::from_slice(&bytes) {
        Ok(held) => Ok(Loaded::Leases(held)),
        Err(e) => set_aside(path, &format!("not a lease file ({e})")),
    }
}

fn set_aside(path: &Path, why: &str) -> Result<Loaded, PortError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{}", jiff::Timestamp::now().as_second()));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(|e| io(e, path))?;
    Ok(Loaded::Rebuilt(format!(
        "lease file {} was damaged ({why}); moved aside to {} and rebuilt empty (the newest schedule slot may fire again)",
        path.display(),
        aside.display()
    )))
}

fn store(path: &Path, held: &Held) -> Result<(), PortError> {
    let text = serde_json::to_string_pretty(held).expect("leases serialize");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::create_dir_all_private(dir).map_err(|e| io(e, dir))?;
    }
    files::write_atomic(path, text.as_bytes()).map_err(|e| io(e, path))
}

impl FileLeases {
    async fn report(&self, message: String) {
        error!(path = %self.path.display(), error = %message, "lease file rebuilt");
        if let Some(m) = &self.metrics {
            m.inc(bunker_actors::metrics::Metric::LeaseFileRebuiltTotal, &[]);
        }
        if let Some(r) = &self.failures {
            if r.send(ReportFailure { actor: "leases", message }).await.is_err() {
                tracing::warn!("failure reporter stopped");
            }
        }
    }

    /// Runs `change` on the leases (loaded on first use) and writes them back.
    async fn update<T: Send + 'static>(&self, change: impl FnOnce(&mut Held) -> (T, bool)) -> Result<T, PortError> {
        let mut guard = self.held.lock().await;
        if guard.is_none() {
            let path = self.path.clone();
            let loaded = tokio::task::spawn_blocking(move || load(&path)).await.map_err(|e| io(e, &self.path))??;
            *guard = Some(match loaded {
                Loaded::Leases(h) => h,
                Loaded::Rebuilt(why) => {
                    self.report(why).await;
                    Held::new()
                }
            });
        }
        let held = guard.as_mut().expect("loaded above");
        let (out, changed) = change(held);
        if changed {
            let (path, snapshot) = (self.path.clone(), held.clone());
            tokio::task::spawn_blocking(move || store(&path, &snapshot)).await.map_err(|e| io(e, &self.path))??;
        }
        Ok(out)
    }
}

#[async_trait]
impl Leases for FileLeases {
    async fn claim(&self, key: &str, holder: &str, now: i64, until: i64) -> Result<bool, PortError> {
        let (key, holder) = (key.to_string(), holder.to_string());
        self.update(move |held| {
            if let Some((h, u)) = held.get(&key) {
                if *u > now && *h != holder {
                    return (false, false);
                }
            }
            held.retain(|_, (_, u)| *u > now);
            held.insert(key, (holder, until));
            (true, true)
        })
        .await
    }

    async fn release(&self, key: &str, holder: &str) -> Result<(), PortError> {
        let (key, holder) = (key.to_string(), holder.to_string());
        self.update(move |held| {
            let mine = held.get(&key).is_some_and(|(h, _)| *h == holder);
            if mine {
                held.remove(&key);
            }
            ((), mine)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_damaged_file_is_set_aside_counted_and_rebuilt() {
        let d = tempfile::tempdir().unwrap();
        for damage in [&b""[..], b"{\"slot:a\": [\"h\", 9", b"\x00\xff garbage"] {
            let path = d.path().join("state/leases.json");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, damage).unwrap();
            let metrics = Arc::new(Metrics::default());
            let leases = FileLeases {
                path: path.clone(),
                held: Mutex::new(None),
                metrics: Some(metrics.clone()),
                failures: None,
            };
            assert!(leases.claim("slot:x", "me", 100, 200).await.unwrap(), "scheduling goes on");
            assert_eq!(metrics.get(bunker_actors::metrics::Metric::LeaseFileRebuiltTotal, &[]), 1.0);
            let text = std::fs::read_to_string(&path).unwrap();
            let held: Held = serde_json::from_str(&text).unwrap();
            assert_eq!(held["slot:x"], ("me".to_string(), 200));
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            let aside: Vec<_> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("leases.json.corrupt-"))
                .collect();
            assert_eq!(aside.len(), 1, "kept for inspection");
            assert_eq!(std::fs::read(aside[0].path()).unwrap(), damage);
            std::fs::remove_dir_all(d.path().join("state")).unwrap();
        }
    }

    #[tokio::test]
    async fn claims_survive_a_reload_and_release_frees_only_ones_own() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("leases.json");
        let a = FileLeases::new(path.clone());
        assert!(a.claim("copy:k", "me", 100, 130).await.unwrap());
        let b = FileLeases::new(path.clone());
        assert!(!b.claim("copy:k", "other", 110, 140).await.unwrap(), "held across a reload");
        b.release("copy:k", "other").await.unwrap();
        assert!(!FileLeases::new(path.clone()).claim("copy:k", "other", 110, 140).await.unwrap());
        a.release("copy:k", "me").await.unwrap();
        assert!(FileLeases::new(path).claim("copy:k", "other", 110, 140).await.unwrap());
    }
}
