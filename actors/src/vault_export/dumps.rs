//! RDS recovery points with `export.rds_format` = `dump` or `both`: the snapshot dump
//! workflow ([`SnapshotDumps`]) run from the vault workflow's export step. A dump counts as
//! archived when its index object names this recovery point; before a delete, every archive
//! the index lists is read back and verified.

use std::sync::Arc;
use std::time::Duration;

use bunker_protocol::vault::{Archived, Holds, PointRef, RdsFormat, RecoveryPoint};

use super::{PointKey, VaultExports};
use crate::dump::snapshot::{DumpKey, SnapshotDumps, INDEX_FORMAT};
use crate::engine::{Pass, Workflow};
use crate::ports::ArchiveStore;
use crate::rds_export::Pending;
use crate::stream::archive_reader::{self, Archive};
use crate::stream::{Progress, StreamError};

/// The largest index object read (a few hundred bytes per database).
const INDEX_LIMIT: u64 = 16 << 20;
/// Dump passes one vault pass runs while the dump makes progress without waiting.
const DUMP_STEPS: usize = 4;

impl VaultExports {
    /// Dumps RDS recovery points through `dumps` (`export.rds_format` = `dump` or `both`).
    pub fn with_dumps(mut self, dumps: SnapshotDumps) -> VaultExports {
        self.dumps = Some(dumps);
        self
    }

    /// The format of `point`'s export: the tag `bunker:config:export.rds_format` on the
    /// DB instance or cluster it is a backup of (or, that gone, on the snapshot itself),
    /// else `export.rds_format`. Only RDS and Aurora points are asked about.
    pub(super) async fn rds_format(
        &self,
        key: &PointKey,
        point: Option<&RecoveryPoint>,
        holds: &Holds,
    ) -> Result<RdsFormat, StreamError> {
        let configured = self.settings.rds_format;
        let (Some(dumps), Some(point), Some(_)) = (&self.dumps, point, dumped(holds, RdsFormat::Dump)) else {
            return Ok(configured);
        };
        let tags_of = |arn: &str| {
            let arn = arn.to_string();
            async move {
                let tags = dumps.resource_tags(&key.region, &arn).await;
                tags.map_err(|e| StreamError::port(format!("reading the tags of {arn}"), e)).map(|t| (arn, t))
            }
        };
        let (arn, tags) = match tags_of(&point.resource_arn).await? {
            (arn, Some(tags)) => (arn, tags),
            (_, None) => {
                let (arn, tags) = tags_of(&key.arn).await?;
                (arn, tags.unwrap_or_default())
            }
        };
        let tagged = RdsFormat::from_tags(&tags).map_err(|e| StreamError::Input(format!("{arn}: {e}")))?;
        Ok(tagged.unwrap_or(configured))
    }

    fn dump_key(&self, key: &PointKey, snapshot: &str, cluster: bool) -> DumpKey {
        DumpKey {
            region: key.region.clone(),
            snapshot: snapshot.to_string(),
            cluster,
            to: self.target(key),
            point: Some(PointRef { arn: key.arn.clone(), vault: key.vault.clone() }),
        }
    }

    /// The dump's index in the target: `Yes` when it names this recovery point.
    pub(super) async fn dump_archived(
        &self,
        key: &PointKey,
        store: &Arc<dyn ArchiveStore>,
        snapshot: &str,
    ) -> Result<Archived, StreamError> {
        let Some(index) = read_index(store, snapshot).await? else { return Ok(Archived::No) };
        match index["recovery_point"]["arn"].as_str() {
            Some(arn) if arn == key.arn => Ok(Archived::Yes),
            other => Err(StreamError::Input(format!(
                "{} is a dump of {}, not of recovery point {}: remove it or choose another export.to",
                store.url(&SnapshotDumps::index_key(snapshot)),
                other.unwrap_or("a snapshot outside AWS Backup"),
                key.arn
            ))),
        }
    }

    /// Runs the dump's passes until it waits or ends: `None` once it is done.
    pub(super) async fn export_dump(
        &self,
        key: &PointKey,
        snapshot: &str,
        cluster: bool,
    ) -> Result<Option<Pending>, StreamError> {
        let Some(dumps) = &self.dumps else {
            return Err(StreamError::Internal(
                "export.rds_format asks for dumps, and no dump workflow is wired".into(),
            ));
        };
        let dk = self.dump_key(key, snapshot, cluster);
        for _ in 0..DUMP_STEPS {
            match dumps.pass(&dk).await.0 {
                Pass::Done => return Ok(None),
                Pass::Progress => continue,
                Pass::Waiting { next_check, why } => return Ok(Some(Pending { why, next_check })),
                Pass::Failed(why) | Pass::NotOurs(why) => return Err(StreamError::Input(why)),
                Pass::Retry(e) => return Err(StreamError::Source(e.to_string())),
            }
        }
        Ok(Some(Pending { why: "the dump is in progress".into(), next_check: Some(Duration::from_secs(1)) }))
    }

    /// Reads back and verifies every archive the dump's index lists.
    pub(super) async fn verify_dump(&self, store: &Arc<dyn ArchiveStore>, snapshot: &str) -> Result<(), StreamError> {
        let url = store.url(&SnapshotDumps::index_key(snapshot));
        let index = read_index(store, snapshot).await?.ok_or_else(|| StreamError::Corrupt(format!("{url} is gone")))?;
        let archives = index["archives"].as_array().cloned().unwrap_or_default();
        if archives.is_empty() {
            return Err(StreamError::Corrupt(format!("{url} lists no archive")));
        }
        for a in archives {
            let name = a["archive"].as_str().and_then(|u| u.rsplit('/').next()).unwrap_or_default();
            let archive = Archive::open(store.clone(), name).await?;
            archive_reader::verify(archive, &Progress::default()).await?;
        }
        Ok(())
    }

    /// Removes the temporary instance (or cluster) of `key`'s dump, if there is one.
    pub(super) async fn abandon_dump(&self, key: &PointKey) {
        let (Some(dumps), Some(port)) = (&self.dumps, self.vaults.get(&key.region)) else { return };
        let holds = match port.describe(&key.vault, &key.arn).await {
            Ok(Some(point)) => point.holds(),
            _ => Holds::of(&key.arn, ""),
        };
        if let Some((snapshot, cluster)) = dumped(&holds, RdsFormat::Dump) {
            dumps.abandon(&self.dump_key(key, snapshot, cluster)).await;
        }
    }

    /// Removes expired temporary dump instances (part of the vault workflow's sweep).
    pub(super) async fn sweep_dumps(&self) -> Result<usize, crate::ports::PortError> {
        match &self.dumps {
            Some(d) => d.sweep().await,
            None => Ok(0),
        }
    }
}

/// The snapshot `holds` is dumped from under `format`, and whether it is a cluster snapshot
/// (RDS DB snapshots and Aurora cluster snapshots, when `format` asks for a dump).
pub(super) fn dumped(holds: &Holds, format: RdsFormat) -> Option<(&str, bool)> {
    let dumped = match holds {
        Holds::RdsSnapshot(id) => Some((id.as_str(), false)),
        Holds::ClusterSnapshot { id, docdb: false } => Some((id.as_str(), true)),
        _ => None,
    };
    dumped.filter(|_| format.dump())
}

/// Whether `holds` is exported to Parquet under `format` (every kind but RDS and Aurora
/// always is).
pub(super) fn parqueted(holds: &Holds, format: RdsFormat) -> bool {
    match holds {
        Holds::RdsSnapshot(_) | Holds::ClusterSnapshot { docdb: false, .. } => format.parquet(),
        _ => true,
    }
}

/// The index object of `snapshot`'s dump, if there is one (bounded, and it must say what it
/// is).
async fn read_index(store: &Arc<dyn ArchiveStore>, snapshot: &str) -> Result<Option<serde_json::Value>, StreamError> {
    let key = SnapshotDumps::index_key(snapshot);
    let url = store.url(&key);
    let port = |e| StreamError::port(format!("reading {url}"), e);
    let Some(size) = store.size(&key).await.map_err(port)? else { return Ok(None) };
    if size > INDEX_LIMIT {
        return Err(StreamError::Corrupt(format!("{url} is {size} bytes, more than an index can be")));
    }
    let bytes = store.read(&key, 0, size).await.map_err(port)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| StreamError::Corrupt(format!("{url}: not JSON ({e})")))?;
    if value["format"] != INDEX_FORMAT {
        return Err(StreamError::Corrupt(format!("{url} is not a bunker dump index")));
    }
    Ok(Some(value))
}
