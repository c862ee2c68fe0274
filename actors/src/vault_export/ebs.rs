//! EBS recovery points in the format `export.ebs_format` (or the snapshot's tag
//! `bunker:config:export.ebs_format`) asks for: the image, each filesystem's files (archives
//! named by an index, `<snapshot>.files.json`), or both. Each part counts as archived only
//! when it names this recovery point, and each is read back before a delete.

use std::sync::Arc;

use bunker_protocol::archive::{files_index_key, FilesIndex, FILES_INDEX_FORMAT};
use bunker_protocol::tags::Tags;
use bunker_protocol::vault::{Archived, EbsFormat, Holds, PointRef, RecoveryPoint};
use tracing::info;

use super::{PointKey, VaultExports};
use crate::ports::ArchiveStore;
use crate::stream::archive_reader::{self, Archive};
use crate::stream::export::manifest_key;
use crate::stream::export_job::{export_in_format, ExportSnapshot};
use crate::stream::exporter_actor::run_export;
use crate::stream::{Progress, StreamError};

/// A files index is a few hundred bytes per filesystem; anything larger is not one.
const INDEX_LIMIT: u64 = 1 << 20;

impl VaultExports {
    /// What an EBS point (`holds`, still described: `point`) is exported as; for any other
    /// kind, or a point already gone, the configured format (nothing is asked of AWS).
    pub(super) async fn ebs_format(
        &self,
        key: &PointKey,
        point: Option<&RecoveryPoint>,
        holds: &Holds,
    ) -> Result<EbsFormat, StreamError> {
        match (holds, point) {
            (Holds::EbsSnapshot(id), Some(_)) => self.targets.ebs_format(&self.ebs_job(key, id)).await,
            _ => self.targets.ebs_format_of(&Tags::new()),
        }
    }

    fn ebs_job(&self, key: &PointKey, snapshot: &str) -> ExportSnapshot {
        ExportSnapshot {
            snapshot_id: snapshot.into(),
            region: key.region.clone(),
            to: Some(self.target(key)),
            base: None,
        }
    }

    fn point_ref(key: &PointKey) -> PointRef {
        PointRef { arn: key.arn.clone(), vault: key.vault.clone() }
    }

    /// Exports `snapshot` in `format`, every manifest (and the index) naming the point.
    pub(super) async fn export_ebs(
        &self,
        key: &PointKey,
        snapshot: &str,
        format: EbsFormat,
    ) -> Result<(), StreamError> {
        let to = self.target(key);
        let _turn = self.one_at_a_time.acquire().await.map_err(|e| StreamError::Internal(e.to_string()))?;
        let job = self.ebs_job(key, snapshot);
        let image = async {
            let progress = Arc::new(Progress::default());
            let mut p = self.targets.prepare(&job, &to, progress.clone()).await?;
            p.request.source.recovery_point = Some(Self::point_ref(key));
            let summary = run_export(p, self.tuning, progress, Some(self.metrics.clone())).await?;
            info!(recovery_point = %key.arn, archive = %summary.archive, "recovery point exported");
            Ok(())
        };
        export_in_format(self.targets.as_ref(), &job, &to, format, Some(Self::point_ref(key)), image).await
    }

    /// Whether what `format` asks for of `snapshot` is at the target, naming this point.
    pub(super) async fn ebs_archived(
        &self,
        key: &PointKey,
        store: &Arc<dyn ArchiveStore>,
        snapshot: &str,
        format: EbsFormat,
    ) -> Result<Archived, StreamError> {
        if format.image() && self.archived(key, store, snapshot).await? == Archived::No {
            return Ok(Archived::No);
        }
        if format.files() && read_index(key, store, snapshot).await?.is_none() {
            return Ok(Archived::No);
        }
        Ok(Archived::Yes)
    }

    /// Reads back and verifies every archive `format` asks for: the image, and each
    /// filesystem's archive the index names.
    pub(super) async fn verify_ebs(
        &self,
        key: &PointKey,
        store: &Arc<dyn ArchiveStore>,
        snapshot: &str,
        format: EbsFormat,
    ) -> Result<(), StreamError> {
        if format.image() {
            self.verify(key, store, snapshot).await?;
        }
        if format.files() {
            let index = read_index(key, store, snapshot)
                .await?
                .ok_or_else(|| StreamError::Corrupt(format!("{} vanished", store.url(&files_index_key(snapshot)))))?;
            for fs in &index.filesystems {
                let a = Archive::open(store.clone(), &fs.manifest).await?;
                if a.manifest.source.recovery_point.as_ref().is_none_or(|p| p.arn != key.arn) {
                    return Err(StreamError::Corrupt(format!("{} is not of {}", a.url(), key.arn)));
                }
                archive_reader::verify(a, &Progress::default()).await?;
            }
        }
        Ok(())
    }

    /// The URL a report names for `snapshot`'s export: its image's manifest, or the files'
    /// index when only files are made.
    pub(super) fn ebs_report_url(store: &Arc<dyn ArchiveStore>, snapshot: &str, format: EbsFormat) -> String {
        match format.image() {
            true => store.url(&manifest_key(snapshot)),
            false => store.url(&files_index_key(snapshot)),
        }
    }
}

/// `snapshot`'s files index at the target, if there is one; an index of another recovery
/// point (or not an index at all) is an input error naming the fix.
async fn read_index(
    key: &PointKey,
    store: &Arc<dyn ArchiveStore>,
    snapshot: &str,
) -> Result<Option<FilesIndex>, StreamError> {
    let ikey = files_index_key(snapshot);
    let url = store.url(&ikey);
    let Some(size) = store.size(&ikey).await.map_err(|e| StreamError::port(format!("checking {url}"), e))? else {
        return Ok(None);
    };
    if size > INDEX_LIMIT {
        return Err(StreamError::Corrupt(format!("{url} is {size} bytes, more than a files index may be")));
    }
    let bytes = store.read(&ikey, 0, size).await.map_err(|e| StreamError::port(format!("reading {url}"), e))?;
    let index: FilesIndex = serde_json::from_slice(&bytes)
        .ok()
        .filter(|i: &FilesIndex| i.format == FILES_INDEX_FORMAT)
        .ok_or_else(|| StreamError::Corrupt(format!("{url} is not a bunker files index")))?;
    match &index.recovery_point {
        Some(p) if p.arn == key.arn => Ok(Some(index)),
        _ => Err(StreamError::Input(format!(
            "{url} is a file-level export of {}, not of recovery point {}: remove it or choose another export.to",
            index.snapshot, key.arn
        ))),
    }
}
