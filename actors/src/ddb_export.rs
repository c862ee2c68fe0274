//! DynamoDB recovery points → DynamoDB's own export (`ExportTableToPointInTime` at the
//! backup's creation time, `export.dynamodb_mode = "pitr"`), as one step of the vault-export
//! workflow ([`crate::vault_export`]).
//!
//! The export goes under `<target>/<table>-<backup id>.dynamodb-export/`, a prefix of its own
//! per recovery point, so a replay or a pass after a crash finds it among the table's
//! exports (and a repeated start within AWS's 8 hours is the same export: its client token
//! comes from the recovery point). A COMPLETED export is verified before anything is
//! recorded: `manifest-summary.json` and `manifest-files.json` are read, every data file they
//! name is present and its MD5 is the one AWS wrote (hashed off the runtime's threads), and
//! the files' item counts add up to the summary's. Then a [`ServiceManifest`] is written
//! beside it; before a delete, [`crate::rds_export::verify_export`] checks it again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bunker_protocol::archive::Source;
use bunker_protocol::ddb_export::{self, DataFile};
use bunker_protocol::rds_export::{self as service, ExportedObject, ExportedTable, ServiceManifest};
use bunker_protocol::vault::PointRef;
use tracing::info;

use crate::ports::{ArchiveStore, ObjectInfo, StartTableExport, TableExportInfo, TableExports};
use crate::rds_export::{corrupt, info_error, read_small, Pending};
use crate::stream::export::manifest_key;
use crate::stream::StreamError;

/// Bytes hashed per read of a data file.
const HASH_CHUNK: u64 = 8 << 20;

/// One DynamoDB recovery point to export.
pub struct TableJob<'a> {
    /// The recovery point (its ARN is the backup's).
    pub point: PointRef,
    /// Its region.
    pub region: &'a str,
    /// The backed-up table's ARN (the recovery point's resource).
    pub table_arn: &'a str,
    /// When AWS Backup made it (AWS's `CreationDate`): the export's point in time.
    pub created: jiff::Timestamp,
    /// The archive name (`<table>-<backup id>`).
    pub name: &'a str,
    /// The export target.
    pub store: &'a Arc<dyn ArchiveStore>,
}

impl TableJob<'_> {
    /// Where DynamoDB writes, relative to the target.
    pub fn prefix(&self) -> String {
        format!("{}.dynamodb-export", self.name)
    }
}

/// DynamoDB's exports in each served region.
pub struct PitrExports {
    exports: HashMap<String, Arc<dyn TableExports>>,
    poll: Duration,
}

impl PitrExports {
    /// Exports through `exports` (one per region); a running export is looked at every
    /// `poll`.
    pub fn new(exports: Vec<Arc<dyn TableExports>>, poll: Duration) -> PitrExports {
        PitrExports { exports: exports.into_iter().map(|e| (e.region().to_string(), e)).collect(), poll }
    }

    /// Starts, waits for or finishes `job`'s export: `Some` while it runs, `None` once it is
    /// verified and its manifest written.
    pub async fn export(&self, job: &TableJob<'_>) -> Result<Option<Pending>, StreamError> {
        let port = self
            .exports
            .get(job.region)
            .ok_or_else(|| StreamError::Input(format!("DynamoDB in {} is not served here", job.region)))?;
        let (bucket, target) = job.store.s3_location().ok_or_else(|| {
            StreamError::Input(
                "export.dynamodb_mode = \"pitr\" exports to S3 only: set export.to to s3://bucket/prefix".into(),
            )
        })?;
        let prefix = [target.trim_matches('/'), &job.prefix()]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let export = match self.find(port.as_ref(), job.table_arn, &bucket, &prefix).await? {
            Some(e) => e,
            None => {
                let request = StartTableExport {
                    table_arn: job.table_arn.to_string(),
                    export_time: job.created,
                    bucket,
                    prefix,
                    client_token: client_token(&job.point.arn),
                };
                let e = port.start(&request).await.map_err(|e| StreamError::port("starting the DynamoDB export", e))?;
                info!(recovery_point = %job.point.arn, export = %e.arn, "dynamodb export started");
                e
            }
        };
        match export.status.to_ascii_uppercase().as_str() {
            "COMPLETED" => {
                let manifest = self.verified(job, &export, &target).await?;
                let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| StreamError::Internal(e.to_string()))?;
                job.store
                    .put(&manifest_key(job.name), bytes)
                    .await
                    .map_err(|e| StreamError::port("writing the manifest", e))?;
                info!(recovery_point = %job.point.arn, items = manifest.tables[0].rows, "dynamodb export verified");
                Ok(None)
            }
            "FAILED" => Err(StreamError::Input(format!(
                "DynamoDB export {} FAILED: {}; the recovery point is kept",
                export.arn,
                export.failure.as_deref().unwrap_or("AWS gave no cause")
            ))),
            other => Ok(Some(Pending {
                why: format!("dynamodb export {} is {other}", export.arn),
                next_check: Some(self.poll),
            })),
        }
    }

    /// The table's export into exactly `bucket`/`prefix`, if one was started.
    async fn find(
        &self,
        port: &dyn TableExports,
        table_arn: &str,
        bucket: &str,
        prefix: &str,
    ) -> Result<Option<TableExportInfo>, StreamError> {
        let listed = port.list(table_arn).await.map_err(|e| StreamError::port("listing the table's exports", e))?;
        for arn in listed {
            let Some(e) = port.describe(&arn).await.map_err(|e| StreamError::port("describing an export", e))? else {
                continue;
            };
            if e.bucket == bucket && e.prefix.trim_matches('/') == prefix {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Verifies the COMPLETED `export` of `job` and returns its manifest.
    async fn verified(
        &self,
        job: &TableJob<'_>,
        export: &TableExportInfo,
        target: &str,
    ) -> Result<ServiceManifest, StreamError> {
        let store = job.store;
        let (summary_key, summary) = self.summary(job, export, target).await?;
        let files_key = ddb_export::relative_key(&summary.files_key, target, &job.prefix());
        let files_obj = object(store, &files_key).await?;
        let files = ddb_export::data_files(&files_key, &read_small(store, &files_obj).await?).map_err(info_error)?;
        let mut objects: BTreeMap<String, ExportedObject> = BTreeMap::new();
        for f in &files {
            let (key, o) = self.check_file(job, f, target).await?;
            objects.insert(key.clone(), ExportedObject { key, size: o.size, etag: o.etag, rows: Some(f.items) });
        }
        let items: u64 = files.iter().map(|f| f.items).sum();
        if items != summary.items || export.items.is_some_and(|n| n != items) {
            return Err(corrupt(format!(
                "{}: the data files hold {items} items, the summary says {} (DescribeExport: {:?})",
                store.url(&summary_key),
                summary.items,
                export.items
            )));
        }
        let base = summary_key.rsplit_once('/').map(|(b, _)| format!("{b}/")).unwrap_or_default();
        for o in store.list_objects(&base).await.map_err(|e| StreamError::port("listing the export", e))? {
            objects.entry(o.key.clone()).or_insert(ExportedObject {
                key: o.key,
                size: o.size,
                etag: o.etag,
                rows: None,
            });
        }
        let table = job.table_arn.rsplit('/').next().unwrap_or_default().to_string();
        Ok(ServiceManifest {
            format: service::DYNAMODB_FORMAT.into(),
            version: service::FORMAT_VERSION,
            tool: format!("bunker {}", env!("CARGO_PKG_VERSION")),
            created_at: jiff::Timestamp::now().to_string(),
            source: Source {
                kind: "dynamodb-backup".into(),
                id: job.point.arn.clone(),
                region: Some(job.region.to_string()),
                recovery_point: Some(job.point.clone()),
                filesystem: None,
                ..Source::default()
            },
            engine: None,
            export_task: export.arn.clone(),
            prefix: base,
            tables: vec![ExportedTable { name: table, rows: items, files: files.len() as u32 }],
            objects: objects.into_values().collect(),
        })
    }

    /// `manifest-summary.json` of `export` (where `DescribeExport` says, else found under the
    /// job's prefix): its key relative to the target, and what it says.
    async fn summary(
        &self,
        job: &TableJob<'_>,
        export: &TableExportInfo,
        target: &str,
    ) -> Result<(String, ddb_export::Summary), StreamError> {
        let key = match &export.manifest {
            Some(k) => ddb_export::relative_key(k, target, &job.prefix()),
            None => {
                let listed = job
                    .store
                    .list(&format!("{}/", job.prefix()))
                    .await
                    .map_err(|e| StreamError::port("listing the export", e))?;
                listed.into_iter().find(|k| k.ends_with("/manifest-summary.json")).ok_or_else(|| {
                    corrupt(format!(
                        "no manifest-summary.json under {}: the export is incomplete",
                        job.store.url(&job.prefix())
                    ))
                })?
            }
        };
        let o = object(job.store, &key).await?;
        let summary = ddb_export::summary(&key, &read_small(job.store, &o).await?).map_err(info_error)?;
        if !summary.format.eq_ignore_ascii_case("DYNAMODB_JSON") {
            return Err(StreamError::Input(format!(
                "{}: output format {} is not DYNAMODB_JSON",
                job.store.url(&key),
                summary.format
            )));
        }
        Ok((key, summary))
    }

    /// The data file `f` is there and its MD5 is the one AWS recorded.
    async fn check_file(
        &self,
        job: &TableJob<'_>,
        f: &DataFile,
        target: &str,
    ) -> Result<(String, ObjectInfo), StreamError> {
        let key = ddb_export::relative_key(&f.key, target, &job.prefix());
        let o = object(job.store, &key).await?;
        let md5 = md5_of(job.store, &o).await?;
        if md5 != f.md5 {
            return Err(corrupt(format!("{}: MD5 {md5}, but manifest-files.json says {}", job.store.url(&key), f.md5)));
        }
        Ok((key, o))
    }
}

/// The client token of recovery point `arn`'s export (32 hex digits of its SHA-256).
pub fn client_token(arn: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(arn.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The object `key` with its size and ETag, or a failure naming it.
async fn object(store: &Arc<dyn ArchiveStore>, key: &str) -> Result<ObjectInfo, StreamError> {
    let listed =
        store.list_objects(key).await.map_err(|e| StreamError::port(format!("looking for {}", store.url(key)), e))?;
    listed.into_iter().find(|o| o.key == key).ok_or_else(|| corrupt(format!("{} is missing", store.url(key))))
}

/// The base64 MD5 of object `o`, read in [`HASH_CHUNK`] ranges and hashed on a blocking thread.
async fn md5_of(store: &Arc<dyn ArchiveStore>, o: &ObjectInfo) -> Result<String, StreamError> {
    use md5::Digest;
    let mut hasher = md5::Md5::new();
    let mut at = 0;
    while at < o.size {
        let len = HASH_CHUNK.min(o.size - at);
        let data = store
            .read(&o.key, at, len)
            .await
            .map_err(|e| StreamError::port(format!("reading {}", store.url(&o.key)), e))?;
        at += len;
        hasher = tokio::task::spawn_blocking(move || {
            hasher.update(&data);
            hasher
        })
        .await
        .map_err(|e| StreamError::Internal(format!("md5 thread: {e}")))?;
    }
    Ok(crate::stream::base64(&hasher.finalize()))
}
