//! bunker's own outcomes as EventBridge events (`events.bus`): the source, the detail-types
//! and each detail's schema, so users chain their own actions on rules instead of parsing SNS
//! text. The README's "bunker's events" section documents them; `tests/events.rs` routes each
//! through a rule into SQS.
//!
//! Delivery is EventBridge's: at least once, in no guaranteed order. Every detail carries a
//! `schema` with a version and the ids a consumer needs to deduplicate.

use jiff::Timestamp;
use serde::Serialize;

use crate::report::{rfc3339, Entry, EntryStatus, Operation, RunReport};
use crate::ResourceKind;

/// The `source` of every event bunker puts (a custom source may not start with `aws.`).
pub const SOURCE: &str = "bunker";

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailType {
    /// A backup was created (`create-backups`, scheduled or not).
    BackupCreated,
    /// A DR copy became available in its region.
    CopyCompleted,
    /// An archive was written and verified.
    ExportCompleted,
    /// An export failed for good (permanent error, or retries spent).
    ExportFailed,
    /// A run ended: the run report as `status_sns_topic` gets it.
    RunReport,
}

impl DetailType {
    /// The `detail-type` string rules match on.
    pub fn as_str(self) -> &'static str {
        match self {
            DetailType::BackupCreated => "bunker Backup Created",
            DetailType::CopyCompleted => "bunker Copy Completed",
            DetailType::ExportCompleted => "bunker Export Completed",
            DetailType::ExportFailed => "bunker Export Failed",
            DetailType::RunReport => "bunker Run Report",
        }
    }
}

/// One event to put: its detail-type, detail (JSON text) and `resources` (ARNs or ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEvent {
    /// What happened.
    pub detail_type: DetailType,
    /// The detail, JSON.
    pub detail: String,
    /// What it is about.
    pub resources: Vec<String>,
}

/// `schema` of [`BackupCreated`].
pub const BACKUP_CREATED_SCHEMA: &str = "bunker.backup-created/1";
/// `schema` of [`CopyCompleted`].
pub const COPY_COMPLETED_SCHEMA: &str = "bunker.copy-completed/1";
/// `schema` of [`ExportOutcome`].
pub const EXPORT_SCHEMA: &str = "bunker.export/1";

/// The detail of `bunker Backup Created`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupCreated {
    /// Always [`BACKUP_CREATED_SCHEMA`].
    pub schema: &'static str,
    /// The run that created it.
    pub run_id: String,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// Kind.
    pub kind: ResourceKind,
    /// The resource backed up.
    pub resource_id: Option<String>,
    /// The backup's id (snapshot, AMI, DB snapshot identifier).
    pub backup_id: Option<String>,
    /// Its name.
    pub backup_name: Option<String>,
    /// Its retention type.
    pub retention: Option<String>,
    /// When (the run's clock).
    #[serde(with = "rfc3339")]
    pub time: Timestamp,
}

/// The detail of `bunker Copy Completed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyCompleted {
    /// Always [`COPY_COMPLETED_SCHEMA`].
    pub schema: &'static str,
    /// Account.
    pub account: String,
    /// Kind.
    pub kind: ResourceKind,
    /// The source backup's region.
    pub source_region: String,
    /// The source backup.
    pub source_backup_id: String,
    /// The copy's region.
    pub region: String,
    /// The copy.
    pub backup_id: String,
    /// When it was seen available.
    #[serde(with = "rfc3339")]
    pub time: Timestamp,
}

/// The detail of `bunker Export Completed` and `bunker Export Failed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportOutcome {
    /// Always [`EXPORT_SCHEMA`].
    pub schema: &'static str,
    /// Account.
    pub account: String,
    /// What was exported: a snapshot id or a recovery point ARN.
    pub source: String,
    /// Where: `s3://bucket/prefix` or `file:///dir`.
    pub target: String,
    /// The archive(s) written (`Completed` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<String>,
    /// The manifest or index naming them (`Completed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Why it failed (`Failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When.
    #[serde(with = "rfc3339")]
    pub time: Timestamp,
}

impl ExportOutcome {
    /// The event: `Completed` without an error, `Failed` with one.
    pub fn event(&self) -> BusEvent {
        let detail_type = if self.error.is_some() { DetailType::ExportFailed } else { DetailType::ExportCompleted };
        BusEvent { detail_type, detail: json(self), resources: vec![self.source.clone()] }
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("bus details serialize")
}

/// The `bunker Backup Created` events of a run's entries (its successful creates).
pub fn backups_created(
    run_id: &str,
    account: &str,
    kind: ResourceKind,
    now: Timestamp,
    entries: &[Entry],
) -> Vec<BusEvent> {
    entries
        .iter()
        .filter(|e| e.operation == Operation::CreateBackup && e.status == EntryStatus::Ok)
        .map(|e| {
            let detail = BackupCreated {
                schema: BACKUP_CREATED_SCHEMA,
                run_id: run_id.to_string(),
                account: account.to_string(),
                region: e.region.clone(),
                kind,
                resource_id: e.resource_id.clone(),
                backup_id: e.backup_id.clone(),
                backup_name: e.backup_name.clone(),
                retention: e.retention.clone(),
                time: now,
            };
            let resources = e.backup_id.iter().cloned().collect();
            BusEvent { detail_type: DetailType::BackupCreated, detail: json(&detail), resources }
        })
        .collect()
}

/// The `bunker Copy Completed` event of one copy.
pub fn copy_completed(detail: &CopyCompleted) -> BusEvent {
    BusEvent { detail_type: DetailType::CopyCompleted, detail: json(detail), resources: vec![detail.backup_id.clone()] }
}

/// The `bunker Run Report` event of a report.
pub fn run_report(report: &RunReport) -> BusEvent {
    BusEvent { detail_type: DetailType::RunReport, detail: json(report), resources: vec![] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(operation: Operation, status: EntryStatus, id: &str) -> Entry {
        Entry {
            operation,
            status,
            region: "eu-west-1".into(),
            resource_id: Some("vol-1".into()),
            backup_id: Some(id.into()),
            backup_name: Some("n".into()),
            retention: Some("daily".into()),
            message: None,
        }
    }

    #[test]
    fn only_successful_creates_become_backup_created_events() {
        let now: Timestamp = "2026-12-07T01:00:00Z".parse().unwrap();
        let entries = [
            entry(Operation::CreateBackup, EntryStatus::Ok, "snap-1"),
            entry(Operation::CreateBackup, EntryStatus::Error, "snap-2"),
            entry(Operation::DeleteBackup, EntryStatus::Ok, "snap-3"),
        ];
        let events = backups_created("r1", "111111111111", ResourceKind::Ebs, now, &entries);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].detail_type.as_str(), "bunker Backup Created");
        assert_eq!(events[0].resources, ["snap-1"]);
        let detail: serde_json::Value = serde_json::from_str(&events[0].detail).unwrap();
        assert_eq!(detail["schema"], BACKUP_CREATED_SCHEMA);
        assert_eq!(detail["kind"], "ebs");
        assert_eq!(detail["time"], "2026-12-07T01:00:00Z");
    }

    #[test]
    fn an_export_with_an_error_is_a_failed_event() {
        let mut o = ExportOutcome {
            schema: EXPORT_SCHEMA,
            account: "1".into(),
            source: "snap-1".into(),
            target: "s3://b/p".into(),
            archives: vec!["s3://b/p/snap-1.img.zst".into()],
            manifest: Some("s3://b/p/snap-1.manifest.json".into()),
            error: None,
            time: "2026-12-07T01:00:00Z".parse().unwrap(),
        };
        assert_eq!(o.event().detail_type, DetailType::ExportCompleted);
        o.error = Some("gone".into());
        assert_eq!(o.event().detail_type.as_str(), "bunker Export Failed");
    }
}
