//! The run report (one per run) and the per-operation notification. Their JSON shapes are
//! a public interface: documented in the README, versioned by `schema`.

use jiff::Timestamp;
use serde::Serialize;

use crate::ResourceKind;

/// Schema id of [`RunReport`].
pub const RUN_REPORT_SCHEMA: &str = "bunker.run-report/1";
/// Schema id of [`OperationEvent`].
pub const OPERATION_SCHEMA: &str = "bunker.operation/1";
/// At most this many entries go into a report (SNS messages are capped at 256 KiB);
/// failures come first, the rest are counted in `entries_omitted`.
pub const MAX_ENTRIES: usize = 500;

/// Outcome of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EntryStatus {
    /// Done.
    Ok,
    /// Failed.
    Error,
    /// Deliberately not done (keep = 0, not available, …).
    Skipped,
    /// `--dry-run`: would have been done.
    Planned,
}

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Operation {
    /// Create a backup of a resource.
    CreateBackup,
    /// Delete an expired backup.
    DeleteBackup,
    /// List resources or backups (a failure here fails a region).
    Discover,
    /// Copy a backup to a DR region.
    CopyBackup,
    /// Share a backup (or a DR copy) with another account.
    ShareBackup,
    /// Copy a backup another account shared into this (data-bunker) account.
    PullBackup,
    /// Export a backup (an AWS Backup recovery point) as a verified archive.
    ExportBackup,
}

/// One line of a run report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// What.
    pub operation: Operation,
    /// How it went.
    pub status: EntryStatus,
    /// Region.
    pub region: String,
    /// Source resource id, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Backup id, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Backup name, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// Retention type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// Why it was skipped, or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Entry {
    /// An export of `backup` in `region` (a snapshot's dump, its files through a volume).
    pub fn export(region: &str, backup: &str, status: EntryStatus, message: Option<String>) -> Entry {
        Entry {
            operation: Operation::ExportBackup,
            status,
            region: region.to_string(),
            resource_id: None,
            backup_id: Some(backup.to_string()),
            backup_name: None,
            retention: None,
            message,
        }
    }
}

/// Overall outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    /// Nothing failed.
    Ok,
    /// Some operations failed, some succeeded.
    Partial,
    /// Operations failed and none succeeded.
    Failed,
}

impl RunStatus {
    /// `OK`, `PARTIAL` or `FAILED`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "OK",
            RunStatus::Partial => "PARTIAL",
            RunStatus::Failed => "FAILED",
        }
    }
}

/// Counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Resources (create) or backups (clean) considered.
    pub collected: usize,
    /// Operations done (or planned, in a dry run).
    pub succeeded: usize,
    /// Deliberately not done.
    pub skipped: usize,
    /// Failed.
    pub failed: usize,
}

/// The one report a run produces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// Always [`RUN_REPORT_SCHEMA`].
    pub schema: &'static str,
    /// bunker's version.
    pub bunker_version: String,
    /// Unique per run.
    pub run_id: String,
    /// Account.
    pub account: String,
    /// Regions covered.
    pub regions: Vec<String>,
    /// Kind.
    pub kind: ResourceKind,
    /// `create-backups` or `clean-backups`.
    pub action: String,
    /// Deployment ids per region, comma-joined where they differ.
    pub deployment: String,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Start (the run's clock, which `--now` overrides).
    #[serde(with = "rfc3339")]
    pub started_at: Timestamp,
    /// End.
    #[serde(with = "rfc3339")]
    pub ended_at: Timestamp,
    /// OK / PARTIAL / FAILED.
    pub status: RunStatus,
    /// Counts.
    pub summary: Summary,
    /// Entries beyond [`MAX_ENTRIES`] left out.
    pub entries_omitted: usize,
    /// Entries, failures first.
    pub entries: Vec<Entry>,
}

impl RunReport {
    /// The report with `extra` entries (a scheduled create's copies and shares) added and
    /// the status and summary recomputed.
    pub fn extended(self, extra: Vec<Entry>, ended_at: Timestamp) -> RunReport {
        let omitted = self.entries_omitted;
        let mut entries = self.entries;
        entries.extend(extra);
        let mut r = RunReport::new(
            self.run_id,
            self.account,
            self.regions,
            self.kind,
            &self.action,
            self.deployment,
            self.dry_run,
            self.started_at,
            ended_at,
            self.summary.collected,
            entries,
        );
        r.entries_omitted += omitted;
        r
    }

    /// Builds the report from all entries: counts them, sorts failures first, caps the list,
    /// and derives the status.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run_id: String,
        account: String,
        regions: Vec<String>,
        kind: ResourceKind,
        action: &str,
        deployment: String,
        dry_run: bool,
        started_at: Timestamp,
        ended_at: Timestamp,
        collected: usize,
        mut entries: Vec<Entry>,
    ) -> RunReport {
        let count = |s: EntryStatus| entries.iter().filter(|e| e.status == s).count();
        let summary = Summary {
            collected,
            succeeded: count(EntryStatus::Ok) + count(EntryStatus::Planned),
            skipped: count(EntryStatus::Skipped),
            failed: count(EntryStatus::Error),
        };
        let status = match (summary.failed, summary.succeeded) {
            (0, _) => RunStatus::Ok,
            (_, 0) => RunStatus::Failed,
            _ => RunStatus::Partial,
        };
        entries.sort_by_key(|e| e.status != EntryStatus::Error); // stable: failures first
        let entries_omitted = entries.len().saturating_sub(MAX_ENTRIES);
        entries.truncate(MAX_ENTRIES);
        RunReport {
            schema: RUN_REPORT_SCHEMA,
            bunker_version: env!("CARGO_PKG_VERSION").into(),
            run_id,
            account,
            regions,
            kind,
            action: action.into(),
            deployment,
            dry_run,
            started_at,
            ended_at,
            status,
            summary,
            entries_omitted,
            entries,
        }
    }

    /// The one-line summary logged and used as SNS subject.
    pub fn headline(&self) -> String {
        format!(
            "bunker {} {}: {} ({} ok, {} failed, {} skipped of {} collected)",
            self.kind,
            self.action,
            self.status.as_str(),
            self.summary.succeeded,
            self.summary.failed,
            self.summary.skipped,
            self.summary.collected
        )
    }
}

/// The per-operation notification sent to `sns_topic` (and, for errors, `error_sns_topic`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationEvent {
    /// Always [`OPERATION_SCHEMA`].
    pub schema: &'static str,
    /// The run it belongs to.
    pub run_id: String,
    /// Account.
    pub account: String,
    /// Kind.
    pub kind: ResourceKind,
    /// When.
    #[serde(with = "rfc3339")]
    pub timestamp: Timestamp,
    /// The entry.
    #[serde(flatten)]
    pub entry: Entry,
}

/// `schema` of [`PointReport`].
pub const POINT_REPORT_SCHEMA: &str = "bunker.recovery-point-report/1";

/// The report of one recovery point's export, sent to `status_sns_topic` when its job ends:
/// `OK` (exported and verified, and deleted when `export.delete_source` asked), `PARTIAL`
/// (exported and verified, but AWS refused the delete) or `FAILED` (not exported, or the
/// delete did not take; nothing was deleted unverified).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointReport {
    /// Always [`POINT_REPORT_SCHEMA`].
    pub schema: &'static str,
    /// The recovery point.
    pub recovery_point: String,
    /// Its vault.
    pub vault: String,
    /// Its region.
    pub region: String,
    /// `ebs`, `rds`, `aurora`, `dynamodb` (or `other`).
    pub kind: String,
    /// The outcome.
    pub status: RunStatus,
    /// The manifest of its archive (or of the export AWS made), when there is one.
    pub archive: Option<String>,
    /// Whether the recovery point was deleted (`None`: not asked, `export.delete_source` off).
    pub deleted: Option<bool>,
    /// Why, for `PARTIAL` and `FAILED`.
    pub message: Option<String>,
    /// When the job ended.
    #[serde(with = "rfc3339")]
    pub at: Timestamp,
}

impl PointReport {
    /// The notification subject: `bunker: recovery point export OK: <arn>`.
    pub fn subject(&self) -> String {
        let arn = &self.recovery_point;
        // SNS subjects are at most 100 characters.
        let mut s = format!("bunker: recovery point export {}: {arn}", self.status.as_str());
        s.truncate(100);
        s
    }
}

/// Serde helper: timestamps as RFC 3339 UTC to the second.
pub mod rfc3339 {
    use jiff::Timestamp;

    /// Serializes as `2026-11-21T01:00:00Z`.
    pub fn serialize<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::tags::format_timestamp(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: EntryStatus) -> Entry {
        Entry {
            operation: Operation::CreateBackup,
            status,
            region: "r".into(),
            resource_id: None,
            backup_id: None,
            backup_name: None,
            retention: None,
            message: None,
        }
    }

    #[test]
    fn status_and_failures_first() {
        let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mk = |e| {
            RunReport::new(
                "r".into(),
                "a".into(),
                vec![],
                ResourceKind::Ebs,
                "create-backups",
                "d".into(),
                false,
                t,
                t,
                2,
                e,
            )
        };
        assert_eq!(mk(vec![entry(EntryStatus::Ok), entry(EntryStatus::Skipped)]).status, RunStatus::Ok);
        let r = mk(vec![entry(EntryStatus::Ok), entry(EntryStatus::Error)]);
        assert_eq!(r.status, RunStatus::Partial);
        assert_eq!(r.entries[0].status, EntryStatus::Error);
        assert_eq!(mk(vec![entry(EntryStatus::Error)]).status, RunStatus::Failed);
        assert!(mk(vec![entry(EntryStatus::Error)]).headline().contains("FAILED (0 ok, 1 failed"));
    }
}
