//! Leases in a local JSON file, for a single `bunker serve` without a lease table: schedule
//! slots survive a restart (a slot is never fired twice), copies are claimed as usual.
//! Several instances need `serve.lease_table` (DynamoDB) instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bunker_actors::ports::{ErrorKind, Leases, PortError};
use tokio::sync::Mutex;

/// Leases in `path`, rewritten atomically (temp file + rename) on each claim.
pub struct FileLeases {
    path: PathBuf,
    held: Mutex<Option<BTreeMap<String, (String, i64)>>>,
}

impl FileLeases {
    /// Leases kept in `path` (created on first claim).
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(FileLeases { path, held: Mutex::new(None) })
    }
}

fn io(e: impl std::fmt::Display, path: &std::path::Path) -> PortError {
    PortError::new(ErrorKind::Internal, None, format!("lease file {}: {e}", path.display()))
}

#[async_trait]
impl Leases for FileLeases {
    async fn claim(&self, key: &str, holder: &str, now: i64, until: i64) -> Result<bool, PortError> {
        let mut guard = self.held.lock().await;
        if guard.is_none() {
            let path = self.path.clone();
            let loaded = tokio::task::spawn_blocking(move || match std::fs::read_to_string(&path) {
                Ok(t) => serde_json::from_str(&t).map_err(|e| io(e, &path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
                Err(e) => Err(io(e, &path)),
            })
            .await
            .map_err(|e| io(e, &self.path))??;
            *guard = Some(loaded);
        }
        let held = guard.as_mut().expect("loaded above");
        if let Some((h, u)) = held.get(key) {
            if *u > now && h != holder {
                return Ok(false);
            }
        }
        held.retain(|_, (_, u)| *u > now);
        held.insert(key.to_string(), (holder.to_string(), until));
        let text = serde_json::to_string_pretty(&*held).expect("leases serialize");
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io(e, &path))?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).map_err(|e| io(e, &tmp))?;
            std::fs::rename(&tmp, &path).map_err(|e| io(e, &path))
        })
        .await
        .map_err(|e| io(e, &self.path))??;
        Ok(true)
    }
}
