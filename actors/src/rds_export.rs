//! RDS and Aurora recovery points → Parquet in S3 (`StartExportTask`), as one step of the
//! vault-export workflow ([`crate::vault_export`]).
//!
//! The task id is derived from the recovery point, so a replay or a pass after a crash finds
//! the running task instead of starting a second. A running task is looked at again after
//! [`rds_export::poll_after`] (`export.task_poll`, 1 minute, doubling to 15); with [`rds_export::QUOTA`] tasks
//! running in the region, bunker waits instead of starting another (AWS's quota). A COMPLETE task is
//! verified before anything is recorded: every table AWS's info files list succeeded and has
//! data files, and every Parquet object has the `PAR1` magic at both ends and a footer that
//! decodes (three range reads, never a whole download), with the rows from its footer.
//! Only then is a [`ServiceManifest`] written beside the export; before a delete, the export
//! is verified again against that manifest.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunker_protocol::archive::Source;
use bunker_protocol::rds_export::{
    self, classify, ExportFile, ExportedObject, ExportedTable, ServiceManifest, TableStatus, TaskStatus,
};
use bunker_protocol::vault::PointRef;
use tracing::info;

use crate::ports::{ArchiveStore, ErrorKind, ObjectInfo, SnapshotExports, StartExport};
use crate::stream::export::manifest_key;
use crate::stream::StreamError;

/// Largest info file bunker reads (AWS's are a few KiB per hundred tables).
pub(crate) const INFO_LIMIT: u64 = 16 << 20;

/// Something the export waits for, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// What is pending, for logs.
    pub why: String,
    /// When to look again (`None`: the check interval).
    pub next_check: Option<Duration>,
}

/// The export task id of recovery point `arn` (snapshot `snapshot_id`): the snapshot id made
/// valid (letters, digits and single hyphens, starting with a letter), cut to 50 characters
/// (an `awsbackup:job-<uuid>` name whole), and 8 hex digits of the ARN's SHA-256, so two
/// regions' or accounts' snapshots of one name do not share an id. At most 59 characters
/// (AWS allows 60).
pub fn task_id(arn: &str, snapshot_id: &str) -> String {
    use sha2::Digest;
    let mut name = String::new();
    for c in snapshot_id.chars() {
        let c = if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' };
        if !(c == '-' && (name.is_empty() || name.ends_with('-'))) {
            name.push(c);
        }
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "rds-");
    }
    name.truncate(50);
    let name = name.trim_end_matches('-');
    let digest = sha2::Sha256::digest(arn.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{name}-{hex}")
}

/// What the Parquet exports need from the configuration.
#[derive(Debug, Clone)]
pub struct ParquetSettings {
    /// `export.rds_role_arn`: the role RDS assumes to write to S3.
    pub role_arn: Option<String>,
    /// `export.kms_key`: the customer key RDS encrypts the export with.
    pub kms_key: Option<String>,
    /// `export.task_poll`: the first wait for a running task.
    pub first_poll: Duration,
}

impl Default for ParquetSettings {
    fn default() -> Self {
        ParquetSettings { role_arn: None, kms_key: None, first_poll: Duration::from_secs(60) }
    }
}

/// One snapshot to export: which recovery point, which snapshot, which store.
pub struct ParquetJob<'a> {
    /// The recovery point (its ARN is the snapshot's).
    pub point: PointRef,
    /// Its region.
    pub region: &'a str,
    /// The snapshot's identifier.
    pub snapshot_id: &'a str,
    /// Aurora (a cluster snapshot) rather than RDS.
    pub cluster: bool,
    /// The export target.
    pub store: &'a Arc<dyn ArchiveStore>,
}

impl ParquetJob<'_> {
    /// Its export task id.
    pub fn task(&self) -> String {
        task_id(&self.point.arn, self.snapshot_id)
    }
}

/// RDS and Aurora exports in each served region.
pub struct ParquetExports {
    exports: HashMap<String, Arc<dyn SnapshotExports>>,
    settings: ParquetSettings,
    /// Looks at each running task so far, for the back-off.
    polls: Mutex<HashMap<String, u32>>,
}

pub(crate) fn corrupt(why: String) -> StreamError {
    StreamError::Corrupt(why)
}

impl ParquetExports {
    /// Exports through `exports` (one per region) with `settings`.
    pub fn new(exports: Vec<Arc<dyn SnapshotExports>>, settings: ParquetSettings) -> ParquetExports {
        let exports = exports.into_iter().map(|e| (e.region().to_string(), e)).collect();
        ParquetExports { exports, settings, polls: Mutex::default() }
    }

    fn port(&self, region: &str) -> Result<&Arc<dyn SnapshotExports>, StreamError> {
        self.exports.get(region).ok_or_else(|| StreamError::Input(format!("RDS in {region} is not served here")))
    }

    /// Starts, waits for or finishes `job`'s export: `Some` while it must wait, `None` once
    /// it is verified and its manifest written.
    pub async fn export(&self, job: &ParquetJob<'_>) -> Result<Option<Pending>, StreamError> {
        let port = self.port(job.region)?;
        let id = job.task();
        let task = port.task(&id).await.map_err(|e| StreamError::port(format!("describing export task {id}"), e))?;
        let Some(task) = task else { return self.start(job, port.as_ref(), &id).await.map(Some) };
        if task.source_arn != job.point.arn {
            return Err(StreamError::Input(format!(
                "export task {id} exports {}, not {}: cancel or rename it",
                task.source_arn, job.point.arn
            )));
        }
        match &task.status {
            TaskStatus::Complete => {
                self.polls.lock().expect("polls").remove(&id);
                let manifest = self.verified(job, &id).await?;
                let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| StreamError::Internal(e.to_string()))?;
                let key = manifest_key(&id);
                job.store.put(&key, bytes).await.map_err(|e| StreamError::port("writing the manifest", e))?;
                info!(recovery_point = %job.point.arn, task = %id, tables = manifest.tables.len(), "parquet export verified");
                Ok(None)
            }
            end @ (TaskStatus::Failed | TaskStatus::Canceled) => Err(StreamError::Input(format!(
                "export task {id} ended {}: {}; the recovery point is kept (export it again under another export.to)",
                if *end == TaskStatus::Failed { "FAILED" } else { "CANCELED" },
                task.failure.as_deref().unwrap_or("AWS gave no cause")
            ))),
            status => {
                let polls = {
                    let mut all = self.polls.lock().expect("polls");
                    let n = all.entry(id.clone()).or_default();
                    *n += 1;
                    *n - 1
                };
                Ok(Some(Pending {
                    why: format!("export task {id} is {status:?} ({}%)", task.percent),
                    next_check: Some(rds_export::poll_after(self.settings.first_poll, polls)),
                }))
            }
        }
    }

    /// Starts the task, unless the quota is reached.
    async fn start(&self, job: &ParquetJob<'_>, port: &dyn SnapshotExports, id: &str) -> Result<Pending, StreamError> {
        let missing =
            |key: &str, what: &str| StreamError::Input(format!("{key} is not set: RDS and Aurora exports need {what}"));
        let role = self
            .settings
            .role_arn
            .clone()
            .ok_or_else(|| missing("export.rds_role_arn", "the role RDS assumes to write to S3"))?;
        let kms = self
            .settings
            .kms_key
            .clone()
            .ok_or_else(|| missing("export.kms_key", "a customer KMS key to encrypt the export"))?;
        let (bucket, prefix) = job.store.s3_location().ok_or_else(|| {
            StreamError::Input("RDS and Aurora export to S3 only: set export.to to s3://bucket/prefix".into())
        })?;
        let quota = Pending {
            why: format!("{} export tasks are running in {}; waiting for one to end", rds_export::QUOTA, job.region),
            next_check: Some(rds_export::poll_after(self.settings.first_poll, 0)),
        };
        let running = port.running().await.map_err(|e| StreamError::port("counting running export tasks", e))?;
        if running >= rds_export::QUOTA {
            return Ok(quota);
        }
        let request = StartExport {
            id: id.to_string(),
            source_arn: job.point.arn.clone(),
            bucket,
            prefix: prefix.trim_end_matches('/').to_string(),
            role_arn: role,
            kms_key: kms,
        };
        match port.start(&request).await {
            Ok(()) => {
                info!(recovery_point = %job.point.arn, task = %id, "export task started");
                Ok(Pending {
                    why: format!("export task {id} started"),
                    next_check: Some(rds_export::poll_after(self.settings.first_poll, 0)),
                })
            }
            // Started by a pass that did not live to see the answer: the next pass finds it.
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                Ok(Pending { why: format!("export task {id} exists"), next_check: Some(Duration::from_secs(1)) })
            }
            Err(e) if e.kind == ErrorKind::Quota => Ok(quota),
            Err(e) => Err(StreamError::port(format!("starting export task {id}"), e)),
        }
    }

    /// Verifies the COMPLETE export of `job` and returns its manifest.
    async fn verified(&self, job: &ParquetJob<'_>, id: &str) -> Result<ServiceManifest, StreamError> {
        let listing =
            job.store.list_objects(&format!("{id}/")).await.map_err(|e| StreamError::port("listing the export", e))?;
        let (mut statuses, mut table_files): (Vec<TableStatus>, usize) = (Vec::new(), 0);
        let mut info = None;
        let mut tables: BTreeMap<String, ExportedTable> = BTreeMap::new();
        let mut objects = Vec::new();
        for o in &listing {
            let relative = o.key.strip_prefix(&format!("{id}/")).unwrap_or(&o.key);
            let mut rows = None;
            match classify(id, relative) {
                ExportFile::Info => info = Some(rds_export::info_status(&o.key, &read_small(job.store, o).await?)),
                ExportFile::TablesInfo => {
                    let bytes = read_small(job.store, o).await?;
                    statuses.extend(rds_export::table_statuses(&o.key, &bytes).map_err(info_error)?);
                    table_files += 1;
                }
                ExportFile::Data(table) => {
                    let n = parquet_rows(job.store, o).await?;
                    let t = tables.entry(table.clone()).or_insert(ExportedTable { name: table, rows: 0, files: 0 });
                    (t.rows, t.files, rows) = (t.rows + n, t.files + 1, Some(n));
                }
                ExportFile::Other(_) | ExportFile::Unknown => {}
            }
            objects.push(ExportedObject { key: o.key.clone(), size: o.size, etag: o.etag.clone(), rows });
        }
        let at = job.store.url(&format!("{id}/"));
        match info.transpose().map_err(info_error)? {
            None => return Err(corrupt(format!("no export_info_{id}.json under {at}: the export is incomplete"))),
            Some(TaskStatus::Complete) => {}
            Some(s) => return Err(corrupt(format!("export_info_{id}.json under {at} says {s:?}, not COMPLETE"))),
        }
        if table_files == 0 {
            return Err(corrupt(format!(
                "no export_tables_info_{id}_*.json under {at}: which tables failed cannot be told"
            )));
        }
        check_tables(&statuses, &tables, &at)?;
        let port = self.port(job.region)?;
        let engine = port.engine(&job.point.arn).await.map_err(|e| StreamError::port("describing the snapshot", e))?;
        Ok(ServiceManifest {
            format: rds_export::PARQUET_FORMAT.into(),
            version: rds_export::FORMAT_VERSION,
            tool: format!("bunker {}", env!("CARGO_PKG_VERSION")),
            created_at: jiff::Timestamp::now().to_string(),
            source: Source {
                kind: if job.cluster { "aurora-cluster-snapshot" } else { "rds-snapshot" }.into(),
                id: job.snapshot_id.to_string(),
                region: Some(job.region.to_string()),
                recovery_point: Some(job.point.clone()),
                filesystem: None,
                ..Source::default()
            },
            engine,
            export_task: id.to_string(),
            prefix: format!("{id}/"),
            tables: tables.into_values().collect(),
            objects,
        })
    }
}

/// Reads back the export `manifest_key(name)` describes (an export AWS made: Parquet or
/// DynamoDB) and checks it still holds exactly that: the manifest names recovery point
/// `arn`, every object is there with its size and ETag, and every Parquet footer still says
/// its rows.
pub async fn verify_export(store: &Arc<dyn ArchiveStore>, name: &str, arn: &str) -> Result<(), StreamError> {
    let url = store.url(&manifest_key(name));
    let manifest = read_manifest(store, name)
        .await?
        .ok_or_else(|| corrupt(format!("{url} is missing: the export was not verified")))?;
    if manifest.source.recovery_point.as_ref().map(|p| p.arn.as_str()) != Some(arn) {
        return Err(StreamError::Input(format!(
            "{url} is not the export of recovery point {arn}: remove it or choose another export.to"
        )));
    }
    let listed: HashMap<String, ObjectInfo> = store
        .list_objects(&manifest.prefix)
        .await
        .map_err(|e| StreamError::port("listing the export", e))?
        .into_iter()
        .map(|o| (o.key.clone(), o))
        .collect();
    let parquet = manifest.format == rds_export::PARQUET_FORMAT;
    for want in &manifest.objects {
        let url = store.url(&want.key);
        let Some(have) = listed.get(&want.key) else { return Err(corrupt(format!("{url} is missing"))) };
        if have.size != want.size || (want.etag.is_some() && have.etag != want.etag) {
            return Err(corrupt(format!("{url} changed since the export was verified")));
        }
        if let (true, Some(rows)) = (parquet, want.rows) {
            if parquet_rows(store, have).await? != rows {
                return Err(corrupt(format!("{url}: its footer no longer says {rows} rows")));
            }
        }
    }
    Ok(())
}

/// The manifest of the export AWS made for archive `id` at `store`, if there is one.
pub async fn read_manifest(store: &Arc<dyn ArchiveStore>, id: &str) -> Result<Option<ServiceManifest>, StreamError> {
    let key = manifest_key(id);
    let Some(size) = store.size(&key).await.map_err(|e| StreamError::port("checking the manifest", e))? else {
        return Ok(None);
    };
    let bytes =
        store.read(&key, 0, size.min(INFO_LIMIT)).await.map_err(|e| StreamError::port("reading the manifest", e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| corrupt(format!("{} is not an export manifest: {e}", store.url(&key))))
}

pub(crate) fn info_error(e: rds_export::InfoError) -> StreamError {
    corrupt(format!("AWS's export info file {e}"))
}

/// Every table the info files list finished and has data files.
fn check_tables(
    statuses: &[TableStatus],
    tables: &BTreeMap<String, ExportedTable>,
    at: &str,
) -> Result<(), StreamError> {
    if !statuses.iter().any(TableStatus::is_table) && tables.is_empty() {
        return Err(corrupt(format!("the export under {at} lists no table and holds no data")));
    }
    for s in statuses.iter().filter(|s| s.is_table()) {
        if !s.complete() {
            let why = s.warning.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
            return Err(corrupt(format!("table {} was not exported ({}){why}", s.target, s.status)));
        }
        if !tables.contains_key(&s.target) {
            return Err(corrupt(format!("table {} has no Parquet file under {at}", s.target)));
        }
    }
    Ok(())
}

pub(crate) async fn read_small(store: &Arc<dyn ArchiveStore>, o: &ObjectInfo) -> Result<Vec<u8>, StreamError> {
    if o.size > INFO_LIMIT {
        return Err(corrupt(format!("{} is {} bytes: too large for an info file", store.url(&o.key), o.size)));
    }
    store.read(&o.key, 0, o.size).await.map_err(|e| StreamError::port(format!("reading {}", store.url(&o.key)), e))
}

/// The rows of the Parquet object `o`, from its footer: `PAR1` at both ends, a footer length
/// that fits, and a footer that decodes with row groups adding up to its row count.
pub async fn parquet_rows(store: &Arc<dyn ArchiveStore>, o: &ObjectInfo) -> Result<u64, StreamError> {
    let url = store.url(&o.key);
    let read = |offset: u64, len: u64| {
        let (store, key) = (store.clone(), o.key.clone());
        async move { store.read(&key, offset, len).await }
    };
    let port = |e| StreamError::port(format!("reading {url}"), e);
    if o.size < 12 {
        return Err(corrupt(format!("{url} is {} bytes: not a Parquet file", o.size)));
    }
    if read(0, 4).await.map_err(port)? != b"PAR1" {
        return Err(corrupt(format!("{url} does not start with PAR1: not a Parquet file")));
    }
    let tail = read(o.size - 8, 8).await.map_err(port)?;
    if tail.len() != 8 || &tail[4..] != b"PAR1" {
        return Err(corrupt(format!("{url} does not end with PAR1: truncated or damaged")));
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if len + 12 > o.size {
        return Err(corrupt(format!("{url}: its footer length ({len}) exceeds the file ({} bytes)", o.size)));
    }
    let footer = read(o.size - 8 - len, len).await.map_err(port)?;
    let meta = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer)
        .map_err(|e| corrupt(format!("{url}: its Parquet footer does not decode: {e}")))?;
    let rows = meta.file_metadata().num_rows();
    let groups: i64 = meta.row_groups().iter().map(|g| g.num_rows()).sum();
    if rows < 0 || groups != rows {
        return Err(corrupt(format!("{url}: its footer says {rows} rows but its row groups hold {groups}")));
    }
    Ok(rows as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_valid_stable_and_distinct_per_arn() {
        let arn = "arn:aws:rds:eu-west-1:123456789012:snapshot:awsbackup:job-1a2b3c4d-0000-1111-2222-333344445555";
        let id = task_id(arn, "awsbackup:job-1a2b3c4d-0000-1111-2222-333344445555");
        assert_eq!(id, task_id(arn, "awsbackup:job-1a2b3c4d-0000-1111-2222-333344445555"));
        assert!(id.starts_with("awsbackup-job-1a2b3c4d-0000-1111-2222-333344445555-"), "{id}");
        assert!(id.len() <= 60 && !id.contains("--") && !id.ends_with('-'), "{id}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let other =
            task_id(&arn.replace("eu-west-1", "us-east-1"), "awsbackup:job-1a2b3c4d-0000-1111-2222-333344445555");
        assert_ne!(id, other, "the same snapshot name in another region is another task");
        assert!(task_id("arn:x", "9-lives").starts_with("rds-9-lives-"));
    }
}
