//! AWS Backup vaults in, verified archives out: the [`VaultExports`] workflow exports every
//! completed recovery point of `export.vaults` to `<export.to>/recovery-points/<vault>/`,
//! and with `export.delete_source` deletes it only after its archive was read back and
//! verified, then checks the delete took. Events are hints ([`VaultExports::key_of`]);
//! reconciliation over the vaults ([`VaultExports::owned`]) is the guarantee.
//!
//! What remains is [`bunker_protocol::vault::plan`]'s decision from what AWS and the target
//! report, so a pass after a crash carries on from where the last one stopped. EBS
//! snapshots are exported (the direct-API archive); DynamoDB backups through a temporary
//! table (restored from the backup, tagged `bunker:temporary`, scanned in parallel segments
//! into DynamoDB JSON lines, always deleted afterwards; [`Workflow::sweep`] removes any a
//! crash left once they expire); RDS and Aurora snapshots to Parquet through an RDS export
//! task ([`crate::rds_export`]); other kinds are reported once per recovery point and left
//! to AWS Backup's retention.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bunker_protocol::archive::{Content, ItemStats, Source, DEFAULT_CHUNK_SIZE, EBS_BLOCK_SIZE};
use bunker_protocol::events::RecoveryPointHint;
use bunker_protocol::report::{Entry, EntryStatus, Operation, PointReport, RunStatus, POINT_REPORT_SCHEMA};
use bunker_protocol::tags::{self, Tags};
use bunker_protocol::vault::{
    self, Archived, DynamoDbMode, EbsFormat, ExportKind, Holds, PointRef, RdsFormat, RecoveryPoint, Seen, Step,
};
use bunker_protocol::ResourceKind;
use tracing::{info, warn};

use crate::engine::{Alerts, Clock, JobKey, Pass, SystemClock, Workflow};
use crate::metrics::Metrics;
use crate::ports::{ArchiveStore, ErrorKind, PortError, Tables, Vaults};
use crate::rds_export::{ParquetExports, ParquetJob, Pending};
use crate::stream::archive_reader::{self, Archive};
use crate::stream::export::{manifest_key, ExportRequest, OpenReader};
use crate::stream::export_job::ExportTargets;
use crate::stream::exporter_actor::{run_export, PreparedExport};
use crate::stream::items_reader::items_reader;
use crate::stream::{Progress, StreamError, Tuning};
use dumps::{dumped, parqueted};

mod dumps;
mod ebs;

/// One recovery point to export.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PointKey {
    /// Its region.
    pub region: String,
    /// Its vault.
    pub vault: String,
    /// Its ARN.
    pub arn: String,
}

impl fmt::Display for PointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {} ({})", self.arn, self.vault, self.region)
    }
}

impl JobKey for PointKey {
    fn kind_label(&self) -> &'static str {
        Holds::of(&self.arn, "").kind().map(ExportKind::as_str).unwrap_or("other")
    }
}

/// What the vault exports do, from the configuration.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// `export.vaults`.
    pub vaults: Vec<String>,
    /// `export.kinds`.
    pub kinds: Vec<ExportKind>,
    /// `export.dynamodb_mode`.
    pub dynamodb_mode: DynamoDbMode,
    /// `export.rds_format`.
    pub rds_format: bunker_protocol::vault::RdsFormat,
    /// `export.scan_segments`: parallel scan segments of a `backup`-mode DynamoDB export.
    pub scan_segments: u32,
    /// `export.delete_source`.
    pub delete_source: bool,
    /// `export.sha256`: archives also record their whole-image SHA-256.
    pub sha256: bool,
    /// `export.to`.
    pub export_to: String,
    /// This deployment's id in each region (`bunker:deployment` of its temporary tables
    /// there), by region.
    pub deployments: HashMap<String, String>,
}

/// Prefix of every temporary table's name.
pub const TEMP_TABLE_PREFIX: &str = "bunker-tmp-";
/// Parallel scan segments of a DynamoDB export, unless `export.scan_segments` says otherwise.
pub const SCAN_SEGMENTS: u32 = 4;
/// How long a temporary table may live before a sweep removes it (no export takes longer
/// here; a table still in use is recreated by its job's next pass).
const TEMP_TABLE_HOURS: i64 = 24;

/// The temporary table of a DynamoDB backup's export: a stable name, so a replay or a pass
/// after a crash finds it instead of restoring a second.
pub fn temp_table(backup_arn: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(backup_arn.as_bytes());
    format!("{TEMP_TABLE_PREFIX}{}", digest.iter().take(10).map(|b| format!("{b:02x}")).collect::<String>())
}

/// The archive name of what recovery point `arn` holds, for the kinds bunker exports: an EBS
/// snapshot's id, `<table>-<backup id>` for a DynamoDB backup, the export task id for an RDS
/// or Aurora snapshot (its manifest is `<name>.manifest.json` in every case).
pub fn archive_name(holds: &Holds, arn: &str) -> Option<String> {
    match holds {
        Holds::EbsSnapshot(id) => Some(id.clone()),
        Holds::RdsSnapshot(id) | Holds::ClusterSnapshot { id, docdb: false } => {
            Some(crate::rds_export::task_id(arn, id))
        }
        Holds::DynamoDbBackup(arn) => {
            let (_, rest) = arn.split_once(":table/")?;
            let (table, id) = rest.split_once("/backup/")?;
            Some(format!("{table}-{id}"))
        }
        _ => None,
    }
}

/// The vault-export workflow. See the module documentation.
pub struct VaultExports {
    settings: VaultSettings,
    vaults: HashMap<String, Arc<dyn Vaults>>,
    tables: HashMap<String, Arc<dyn Tables>>,
    parquet: ParquetExports,
    pitr: Option<crate::ddb_export::PitrExports>,
    /// RDS recovery points dumped through temporary instances (`export.rds_format`).
    dumps: Option<crate::dump::snapshot::SnapshotDumps>,
    /// Where each recovery point's report goes (`status_sns_topic`).
    reports: Option<Alerts>,
    /// bunker's own events (`events.bus`).
    outcomes: crate::outcomes::Outcomes,
    clock: Arc<dyn Clock>,
    targets: Arc<dyn ExportTargets>,
    tuning: Tuning,
    metrics: Arc<Metrics>,
    alerts: Alerts,
    /// Recovery points of a kind bunker does not export, already reported (once each).
    reported: Mutex<HashSet<String>>,
    /// Recovery points whose export failed for good in this process (an unsupported engine,
    /// a bad tag): reported once, left out of later scans until a restart.
    failed: Mutex<HashSet<String>>,
    one_at_a_time: tokio::sync::Semaphore,
}

/// Steps one pass may take before it yields (export, verify, delete, check, and slack).
const STEPS_PER_PASS: usize = 8;

impl VaultExports {
    /// Exports of `settings.vaults` in each region of `vaults` (with `tables`, DynamoDB's,
    /// and `parquet`, RDS's, in the same regions), prepared by `targets`.
    #[allow(clippy::too_many_arguments)] // wiring: each argument is a distinct, already-built part
    pub fn new(
        settings: VaultSettings,
        vaults: Vec<Arc<dyn Vaults>>,
        tables: Vec<Arc<dyn Tables>>,
        parquet: ParquetExports,
        targets: Arc<dyn ExportTargets>,
        tuning: Tuning,
        metrics: Arc<Metrics>,
        alerts: Alerts,
    ) -> VaultExports {
        let vaults = vaults.into_iter().map(|v| (v.region().to_string(), v)).collect();
        let tables = tables.into_iter().map(|t| (t.region().to_string(), t)).collect();
        VaultExports {
            settings,
            vaults,
            tables,
            parquet,
            pitr: None,
            dumps: None,
            reports: None,
            outcomes: Default::default(),
            clock: Arc::new(SystemClock),
            targets,
            tuning,
            metrics,
            alerts,
            reported: Mutex::default(),
            failed: Mutex::default(),
            one_at_a_time: tokio::sync::Semaphore::new(1),
        }
    }

    /// Sends a [`PointReport`] for each recovery point whose job did something (or failed)
    /// through `reports` (the status topic).
    pub fn with_reports(mut self, reports: Alerts) -> VaultExports {
        self.reports = Some(reports);
        self
    }

    /// Puts `bunker Export Completed` / `Failed` on the bus (`events.bus`) as each recovery
    /// point's job ends (completed: exported and verified, the delete's outcome aside).
    pub fn with_outcomes(mut self, outcomes: crate::outcomes::Outcomes) -> VaultExports {
        self.outcomes = outcomes;
        self
    }

    /// Publishes `key`'s report and its event (awaited: a report is never lost to a shutdown;
    /// a failed publish is logged and never fails the job).
    async fn point_report(&self, key: &PointKey, status: RunStatus, archive: Option<String>, message: Option<String>) {
        let outcome = bunker_protocol::bus::ExportOutcome {
            schema: bunker_protocol::bus::EXPORT_SCHEMA,
            account: key.arn.split(':').nth(4).unwrap_or_default().to_string(),
            source: key.arn.clone(),
            target: self.settings.export_to.clone(),
            archives: archive.iter().cloned().collect(),
            manifest: None,
            error: (status == RunStatus::Failed).then(|| message.clone().unwrap_or_default()),
            time: self.clock.now(),
        };
        self.outcomes.emit(vec![outcome.event()]).await;
        let Some(reports) = &self.reports else { return };
        let deleted = self.settings.delete_source.then_some(status == RunStatus::Ok);
        let report = PointReport {
            schema: POINT_REPORT_SCHEMA,
            recovery_point: key.arn.clone(),
            vault: key.vault.clone(),
            region: key.region.clone(),
            kind: key.kind_label().to_string(),
            status,
            archive,
            deleted,
            message,
            at: self.clock.now(),
        };
        let body = serde_json::to_string(&report).expect("reports serialize");
        reports.send(&report.subject(), &body).await;
    }

    /// Exports DynamoDB recovery points through `pitr` when `export.dynamodb_mode = "pitr"`.
    pub fn with_pitr(mut self, pitr: crate::ddb_export::PitrExports) -> VaultExports {
        self.pitr = Some(pitr);
        self
    }

    /// The recovery point an event names, if it is one this deployment exports: in a listed
    /// vault of a served region. An event naming only its job is resolved through
    /// `DescribeBackupJob`; one naming neither is left to reconciliation.
    pub async fn key_of(&self, hint: &RecoveryPointHint) -> Result<Option<PointKey>, PortError> {
        let Some(port) = self.vaults.get(&hint.region) else { return Ok(None) };
        let (mut vault, mut arn) = (hint.vault.clone(), hint.arn.clone());
        if let (None, Some(job)) = (&arn, &hint.backup_job_id) {
            if let Some(j) = port.job(job).await? {
                vault = vault.or(Some(j.vault));
                arn = j.recovery_point_arn;
            }
        }
        let (Some(vault), Some(arn)) = (vault, arn) else { return Ok(None) };
        if !self.settings.vaults.contains(&vault) {
            return Ok(None);
        }
        Ok(Some(PointKey { region: hint.region.clone(), vault, arn }))
    }

    /// Whether the event's vault is one this deployment exports (or the event names none).
    pub fn may_export(&self, hint: &RecoveryPointHint) -> bool {
        self.vaults.contains_key(&hint.region) && hint.vault.as_ref().is_none_or(|v| self.settings.vaults.contains(v))
    }

    fn target(&self, key: &PointKey) -> String {
        vault::target_of(&self.settings.export_to, &key.vault)
    }

    /// What the target holds for `key`'s archive `name` (a bunker archive, or an export AWS
    /// made with bunker's manifest beside it).
    async fn archived(
        &self,
        key: &PointKey,
        store: &Arc<dyn ArchiveStore>,
        name: &str,
    ) -> Result<Archived, StreamError> {
        let mkey = manifest_key(name);
        let url = store.url(&mkey);
        let Some(size) = store.size(&mkey).await.map_err(|e| StreamError::port(format!("checking {url}"), e))? else {
            return Ok(Archived::No);
        };
        let source = match service_manifest(store, name, size).await? {
            Some(m) => m.source,
            None => Archive::open(store.clone(), &mkey).await?.manifest.source,
        };
        match &source.recovery_point {
            Some(p) if p.arn == key.arn => Ok(Archived::Yes),
            _ => Err(StreamError::Input(format!(
                "{url} is an export of {}, not of recovery point {}: remove it or choose another export.to",
                source.id, key.arn
            ))),
        }
    }

    /// [`Self::archived`], and for an RDS recovery point the formats `export.rds_format`
    /// asks for, for an EBS one those `export.ebs_format` asks for: archived only when each
    /// is.
    async fn archived_all(
        &self,
        key: &PointKey,
        store: &Arc<dyn ArchiveStore>,
        holds: &Holds,
        name: &str,
        (format, ebs): (RdsFormat, EbsFormat),
    ) -> Result<Archived, StreamError> {
        if let Holds::EbsSnapshot(id) = holds {
            return self.ebs_archived(key, store, id, ebs).await;
        }
        let parquet = if parqueted(holds, format) { self.archived(key, store, name).await? } else { Archived::Yes };
        let dump = match dumped(holds, format) {
            Some((id, _)) => self.dump_archived(key, store, id).await?,
            None => Archived::Yes,
        };
        Ok(if parquet == Archived::Yes && dump == Archived::Yes { Archived::Yes } else { Archived::No })
    }

    /// Exports what `holds` is; `Some` when it must wait (a temporary table restoring, an
    /// export task running).
    async fn export_holds(
        &self,
        key: &PointKey,
        point: Option<&RecoveryPoint>,
        holds: &Holds,
        name: &str,
        (format, ebs): (RdsFormat, EbsFormat),
    ) -> Result<Option<Pending>, StreamError> {
        let waiting = |why: Option<String>| why.map(|why| Pending { why, next_check: None });
        match holds {
            Holds::EbsSnapshot(id) => self.export_ebs(key, id, ebs).await.map(|()| None),
            Holds::DynamoDbBackup(_) if self.settings.dynamodb_mode == DynamoDbMode::Pitr => {
                self.export_pitr(key, point, name).await
            }
            Holds::DynamoDbBackup(arn) => self.export_table(key, arn, name).await.map(waiting),
            Holds::RdsSnapshot(id) | Holds::ClusterSnapshot { id, docdb: false } => {
                let store = self.targets.store(&self.target(key), &key.region)?;
                let cluster = matches!(holds, Holds::ClusterSnapshot { .. });
                // The plan asks for an export only while something is missing: with a dump
                // wanted too, the Parquet half may already be there (looked up only then).
                let parquet_done =
                    dumped(holds, format).is_some() && self.archived(key, &store, name).await? != Archived::No;
                if parqueted(holds, format) && !parquet_done {
                    if let Some(p) = self.parquet.export(&self.parquet_job(key, id, cluster, &store)).await? {
                        return Ok(Some(p));
                    }
                }
                if dumped(holds, format).is_some() {
                    return self.export_dump(key, id, cluster).await;
                }
                Ok(None)
            }
            other => Err(StreamError::Internal(format!("no export for {}", other.describe()))),
        }
    }

    /// A DynamoDB recovery point through `ExportTableToPointInTime` at its creation time.
    async fn export_pitr(
        &self,
        key: &PointKey,
        point: Option<&RecoveryPoint>,
        name: &str,
    ) -> Result<Option<Pending>, StreamError> {
        let pitr = self.pitr.as_ref().ok_or_else(|| StreamError::Internal("pitr exports are not wired".into()))?;
        let point = point.ok_or_else(|| StreamError::Input(format!("recovery point {} is gone", key.arn)))?;
        let created = point.created.as_deref().and_then(|c| c.parse::<jiff::Timestamp>().ok()).ok_or_else(|| {
            StreamError::Input(format!(
                "AWS reports no creation time for {}: it cannot be exported at a point in time",
                key.arn
            ))
        })?;
        let store = self.targets.store(&self.target(key), &key.region)?;
        let job = crate::ddb_export::TableJob {
            point: PointRef { arn: key.arn.clone(), vault: key.vault.clone() },
            region: &key.region,
            table_arn: &point.resource_arn,
            created,
            name,
            store: &store,
        };
        pitr.export(&job).await
    }

    fn parquet_job<'a>(
        &self,
        key: &'a PointKey,
        snapshot_id: &'a str,
        cluster: bool,
        store: &'a Arc<dyn ArchiveStore>,
    ) -> ParquetJob<'a> {
        let point = PointRef { arn: key.arn.clone(), vault: key.vault.clone() };
        ParquetJob { point, region: &key.region, snapshot_id, cluster, store }
    }

    /// The tags of a temporary table made now for `key`.
    fn temp_tags(&self, key: &PointKey) -> Tags {
        let expires = self.clock.now().as_second() + TEMP_TABLE_HOURS * 3600;
        let expires = jiff::Timestamp::from_second(expires).unwrap_or(jiff::Timestamp::MAX);
        tags::temporary(self.deployment(&key.region), format!("export of {}", key.arn), expires)
    }

    /// This deployment's id in `region` (empty, matching no tag, when it has none there).
    fn deployment(&self, region: &str) -> &str {
        self.settings.deployments.get(region).map(String::as_str).unwrap_or_default()
    }

    /// Whether `tags` are those of one of this deployment's temporary tables in `region`.
    fn ours(&self, tags: &Tags, region: &str) -> bool {
        let deployment = self.deployment(region);
        tags.get(tags::TEMPORARY).map(String::as_str) == Some("true")
            && !deployment.is_empty()
            && tags.get(tags::DEPLOYMENT).map(String::as_str) == Some(deployment)
    }

    /// Publishes a report to the error topic without holding up the pass.
    fn report(&self, subject: &str, body: String) {
        let (alerts, subject) = (self.alerts.clone(), subject.to_string());
        tokio::spawn(async move { alerts.send(&subject, &body).await });
    }

    /// A DynamoDB backup: restored to its temporary table (waiting while AWS makes it),
    /// scanned into the archive, and the table deleted, whatever happened.
    async fn export_table(&self, key: &PointKey, backup_arn: &str, name: &str) -> Result<Option<String>, StreamError> {
        let tables = self
            .tables
            .get(&key.region)
            .cloned()
            .ok_or_else(|| StreamError::Input(format!("DynamoDB in {} is not served here", key.region)))?;
        let temp = temp_table(backup_arn);
        let port = |what: &str, e| StreamError::port(format!("{what} {temp}"), e);
        match tables.status(&temp).await.map_err(|e| port("describing", e))? {
            None => {
                tables.restore(backup_arn, &temp, &self.temp_tags(key)).await.map_err(|e| port("restoring", e))?;
                info!(recovery_point = %key.arn, table = %temp, "restoring the backup to a temporary table");
                return Ok(Some(format!("restoring {temp}")));
            }
            // Our own restore whose tagging a crash cut short: named after this backup and
            // restored from it (as AWS reports), but untagged. Tag it, then use it.
            Some(t) if !t.tags.contains_key(tags::TEMPORARY) && t.restored_from.as_deref() == Some(backup_arn) => {
                tables.tag(&temp, &self.temp_tags(key)).await.map_err(|e| port("tagging", e))?;
                return Ok(Some(format!("tagged {temp}")));
            }
            Some(t) if !self.ours(&t.tags, &key.region) => {
                return Err(StreamError::Input(format!(
                    "table {temp} exists and is not this deployment's temporary table: remove or rename it"
                )))
            }
            Some(t) if !t.status.eq_ignore_ascii_case("ACTIVE") => return Ok(Some(format!("{temp} is {}", t.status))),
            Some(_) => {}
        }
        let result = self.archive_table(key, backup_arn, name, &temp, tables.clone()).await;
        if let Err(e) = tables.delete(&temp).await {
            warn!(table = %temp, error = %e, "temporary table not deleted; the next sweep removes it");
        }
        result.map(|()| None)
    }

    async fn archive_table(
        &self,
        key: &PointKey,
        backup_arn: &str,
        name: &str,
        temp: &str,
        tables: Arc<dyn Tables>,
    ) -> Result<(), StreamError> {
        let _turn = self.one_at_a_time.acquire().await.map_err(|e| StreamError::Internal(e.to_string()))?;
        let table = backup_arn.split_once(":table/").and_then(|(_, r)| r.split('/').next()).unwrap_or_default();
        let stats = Arc::new(Mutex::new(ItemStats {
            items: 0,
            segments: self.settings.scan_segments,
            table: table.to_string(),
        }));
        let request = ExportRequest {
            name: name.to_string(),
            content: Content::DynamodbJson,
            source: Source {
                kind: "dynamodb-backup".into(),
                id: backup_arn.to_string(),
                region: Some(key.region.clone()),
                recovery_point: Some(PointRef { arn: key.arn.clone(), vault: key.vault.clone() }),
                filesystem: None,
                ..Source::default()
            },
            image_size: None,
            block_size: EBS_BLOCK_SIZE,
            chunk_size: DEFAULT_CHUNK_SIZE,
            level: Tuning::LEVEL,
            sha256: self.settings.sha256,
            base: None,
            resumable: false,
            tree: None,
            items: Some(stats.clone()),
            dump: None,
            catalog: None,
        };
        let store = self.targets.store(&self.target(key), &key.region)?;
        let (temp, capacity, segments) = (temp.to_string(), self.tuning.channel_capacity, self.settings.scan_segments);
        let open: OpenReader =
            Box::new(move |_start| items_reader(tables, temp, segments, DEFAULT_CHUNK_SIZE as usize, capacity, stats));
        let progress = Arc::new(Progress::default());
        let summary =
            run_export(PreparedExport { store, request, open }, self.tuning, progress, Some(self.metrics.clone()))
                .await?;
        info!(recovery_point = %key.arn, archive = %summary.archive, "recovery point exported");
        Ok(())
    }

    /// Reads the archive (or the export AWS made) back and verifies it, whichever kind of
    /// manifest `name` has.
    async fn verify(&self, key: &PointKey, store: &Arc<dyn ArchiveStore>, name: &str) -> Result<(), StreamError> {
        let size = store.size(&manifest_key(name)).await.map_err(|e| StreamError::port("checking the manifest", e))?;
        if let Some(size) = size {
            if service_manifest(store, name, size).await?.is_some() {
                return crate::rds_export::verify_export(store, name, &key.arn).await;
            }
        }
        let a = Archive::open(store.clone(), &manifest_key(name)).await?;
        archive_reader::verify(a, &Progress::default()).await.map(|_| ())
    }

    /// Reports once per recovery point that bunker does not export its kind.
    fn unsupported(&self, key: &PointKey, holds: &Holds) -> Pass {
        let why =
            format!("bunker does not export {} from vaults yet; AWS Backup's retention keeps it", holds.describe());
        if self.reported.lock().expect("reported set").insert(key.arn.clone()) {
            warn!(recovery_point = %key.arn, why = %why, "recovery point not exported");
            self.report("bunker: recovery point not exported", format!("{key}: {why}"));
        }
        Pass::NotOurs(why)
    }

    /// Runs the plan for `key` until it waits, ends or runs out of steps.
    async fn advance(&self, key: &PointKey, port: &dyn Vaults) -> Result<(Pass, Vec<Entry>), StreamError> {
        let store = self.targets.store(&self.target(key), &key.region)?;
        let (mut archived, mut delete_asked, mut entries) = (None, false, vec![]);
        let (mut formats, mut ebs_formats) = (None, None);
        for _ in 0..STEPS_PER_PASS {
            let point = port
                .describe(&key.vault, &key.arn)
                .await
                .map_err(|e| StreamError::port("describing the recovery point", e))?;
            let holds = point.as_ref().map(|p| p.holds()).unwrap_or_else(|| Holds::of(&key.arn, ""));
            let name = match (archive_name(&holds, &key.arn), &holds) {
                (Some(name), _) => name,
                (None, other) if point.as_ref().is_some_and(|p| p.status.exportable()) => {
                    let wanted = other.kind().is_none_or(|k| self.settings.kinds.contains(&k));
                    return Ok((
                        if wanted { self.unsupported(key, other) } else { Pass::NotOurs("not in export.kinds".into()) },
                        entries,
                    ));
                }
                _ => String::new(),
            };
            let kind = holds.kind().filter(|k| self.settings.kinds.contains(k));
            let format = match formats {
                Some(f) => f,
                None => *formats.insert(self.rds_format(key, point.as_ref(), &holds).await?),
            };
            let ebs = match ebs_formats {
                Some(f) => f,
                None => *ebs_formats.insert(self.ebs_format(key, point.as_ref(), &holds).await?),
            };
            if archived.is_none() && kind.is_some() && !name.is_empty() {
                archived = Some(self.archived_all(key, &store, &holds, &name, (format, ebs)).await?);
            }
            let seen = Seen {
                status: point.as_ref().map(|p| p.status.clone()),
                kind,
                archived: archived.unwrap_or(Archived::No),
                delete_source: self.settings.delete_source,
                delete_asked,
            };
            match vault::plan(&seen) {
                Step::Export => {
                    if let Some(Pending { why, next_check }) =
                        self.export_holds(key, point.as_ref(), &holds, &name, (format, ebs)).await?
                    {
                        return Ok((Pass::Waiting { next_check, why }, entries));
                    }
                    archived = Some(Archived::Yes);
                    entries.push(entry(key, Operation::ExportBackup, EntryStatus::Ok, None));
                }
                Step::Verify => {
                    if let Holds::EbsSnapshot(id) = &holds {
                        self.verify_ebs(key, &store, id, ebs).await?;
                    } else if parqueted(&holds, format) {
                        self.verify(key, &store, &name).await?;
                    }
                    if let Some((id, _)) = dumped(&holds, format) {
                        self.verify_dump(&store, id).await?;
                    }
                    archived = Some(Archived::Verified);
                }
                Step::Delete => match port.delete(&key.vault, &key.arn).await {
                    Ok(()) => delete_asked = true,
                    Err(e) if e.kind == ErrorKind::Invalid || e.kind == ErrorKind::AccessDenied => {
                        let kept = self.kept(key, &e);
                        let archive = Some(report_url(&store, &holds, &name, ebs));
                        let why = match &kept {
                            Pass::NotOurs(why) => Some(why.clone()),
                            _ => None,
                        };
                        self.point_report(key, RunStatus::Partial, archive, why).await;
                        return Ok((kept, entries));
                    }
                    Err(e) => return Err(StreamError::port("deleting the recovery point", e)),
                },
                Step::Done => {
                    if delete_asked {
                        entries.push(entry(key, Operation::DeleteBackup, EntryStatus::Ok, None));
                    }
                    if !entries.is_empty() {
                        let archive = (!name.is_empty()).then(|| report_url(&store, &holds, &name, ebs));
                        self.point_report(key, RunStatus::Ok, archive, None).await;
                    }
                    return Ok((Pass::Done, entries));
                }
                Step::Wait(why) => return Ok((Pass::Waiting { next_check: None, why }, entries)),
                Step::Skip(why) => return Ok((Pass::NotOurs(why), entries)),
                Step::Fail(why) => return Ok((Pass::Failed(why), entries)),
            }
        }
        Ok((Pass::Progress, entries))
    }

    /// AWS refused the delete (Vault Lock, legal hold, permissions): the archive is made and
    /// verified, the recovery point stays for AWS Backup's retention; reported, not retried.
    fn kept(&self, key: &PointKey, e: &PortError) -> Pass {
        let why = format!("exported and verified; the recovery point is kept: AWS refused the delete ({e})");
        warn!(recovery_point = %key.arn, why = %why, "recovery point kept");
        self.report("bunker: recovery point kept", format!("{key}: {why}"));
        Pass::NotOurs(why)
    }
}

/// The URL a point's report names: its archive's manifest (an EBS point's files index when
/// only files are made).
fn report_url(store: &Arc<dyn ArchiveStore>, holds: &Holds, name: &str, ebs: EbsFormat) -> String {
    match holds {
        Holds::EbsSnapshot(id) => VaultExports::ebs_report_url(store, id, ebs),
        _ => store.url(&manifest_key(name)),
    }
}

/// `name`'s manifest (of `size` bytes) when it describes an export AWS made (Parquet,
/// DynamoDB); `None` for a bunker archive's.
async fn service_manifest(
    store: &Arc<dyn ArchiveStore>,
    name: &str,
    size: u64,
) -> Result<Option<bunker_protocol::rds_export::ServiceManifest>, StreamError> {
    let key = manifest_key(name);
    let limit = size.min(crate::rds_export::INFO_LIMIT);
    let bytes = store.read(&key, 0, limit).await.map_err(|e| StreamError::port("reading the manifest", e))?;
    if bunker_protocol::rds_export::ServiceManifest::format_of(&bytes).is_none() {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StreamError::Corrupt(format!("{} is not an export manifest: {e}", store.url(&key))))
}

fn entry(key: &PointKey, operation: Operation, status: EntryStatus, message: Option<String>) -> Entry {
    Entry {
        operation,
        status,
        region: key.region.clone(),
        resource_id: None,
        backup_id: Some(key.arn.clone()),
        backup_name: None,
        retention: None,
        message,
    }
}

#[async_trait]
impl Workflow for VaultExports {
    type Key = PointKey;
    const NAME: &'static str = "vault-exporter";

    async fn pass(&self, key: &PointKey) -> (Pass, Vec<Entry>) {
        if !self.settings.vaults.contains(&key.vault) {
            return (Pass::NotOurs(format!("vault {} is not in export.vaults", key.vault)), vec![]);
        }
        let Some(port) = self.vaults.get(&key.region).cloned() else {
            return (Pass::NotOurs(format!("region {} is not in regions", key.region)), vec![]);
        };
        let (pass, entries) = match self.advance(key, port.as_ref()).await {
            Ok(done) => done,
            Err(e) if e.is_permanent() => (Pass::Failed(e.to_string()), vec![]),
            Err(e) => (Pass::Retry(e.into()), vec![]),
        };
        if let Pass::Failed(why) = &pass {
            self.failed.lock().expect("failed set").insert(key.arn.clone());
            self.point_report(key, RunStatus::Failed, None, Some(why.clone())).await;
        }
        (pass, entries)
    }

    /// Every completed recovery point of the listed vaults not exported yet (with
    /// `export.delete_source`, every one: an exported point is verified and deleted), but
    /// none whose export failed for good earlier in this process (reported once). A vault
    /// missing from a region is skipped there, with a warning.
    async fn owned(&self, _kind: Option<ResourceKind>) -> Result<Vec<PointKey>, PortError> {
        let mut keys = Vec::new();
        for (region, port) in &self.vaults {
            for name in &self.settings.vaults {
                let listed = match port.list(name).await {
                    Ok(l) => l,
                    // A listed vault need not exist in every region: the others go on.
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        warn!(vault = %name, region = %region, "vault not found in this region; skipped");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for p in listed {
                    if !p.status.exportable() {
                        continue;
                    }
                    let key = PointKey { region: region.clone(), vault: name.clone(), arn: p.arn.clone() };
                    if self.failed.lock().expect("failed set").contains(&key.arn) {
                        continue;
                    }
                    if !self.settings.delete_source && self.finished(&key, &p.holds()).await {
                        continue;
                    }
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }

    /// Removes this deployment's temporary tables whose `bunker:expires_at` has passed.
    async fn sweep(&self) -> Result<usize, PortError> {
        let now = self.clock.now();
        let mut removed = self.sweep_dumps().await?;
        for (region, tables) in &self.tables {
            for name in tables.named(TEMP_TABLE_PREFIX).await? {
                let Some(crate::ports::TableInfo { tags, .. }) = tables.status(&name).await? else { continue };
                let expired = tags
                    .get(tags::EXPIRES_AT)
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| t <= now);
                if self.ours(&tags, region) && expired {
                    tables.delete(&name).await?;
                    info!(table = %name, "expired temporary table removed");
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn enabled(&self) -> bool {
        !self.settings.vaults.is_empty()
    }

    /// A recovery point whose export gave up: its dump's temporary instance goes now.
    async fn abandon(&self, key: &PointKey) {
        self.abandon_dump(key).await;
    }

    fn gave_up_entry(&self, key: &PointKey, reason: &str) -> Option<Entry> {
        Some(entry(key, Operation::ExportBackup, EntryStatus::Error, Some(reason.into())))
    }

    fn gave_up_subject(&self, key: &PointKey) -> String {
        format!("bunker export of recovery point failed: {}", key.arn)
    }
}

impl VaultExports {
    /// Whether `key`'s export is finished (its manifest exists), as far as a cheap look says.
    async fn finished(&self, key: &PointKey, holds: &Holds) -> bool {
        let Some(name) = archive_name(holds, &key.arn) else {
            return self.reported.lock().expect("reported set").contains(&key.arn);
        };
        let Ok(store) = self.targets.store(&self.target(key), &key.region) else { return false };
        matches!(store.size(&manifest_key(&name)).await, Ok(Some(_)))
    }
}
