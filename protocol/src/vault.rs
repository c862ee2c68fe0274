//! AWS Backup recovery points as a source of exports: what a recovery point is (from its ARN
//! and AWS's resource type), its status, where its archive goes, and the plan of what remains
//! of one recovery point's export — a pure function of what AWS and the target report.

use std::fmt;

/// What bunker exports from a vault, by AWS Backup's resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExportKind {
    /// EBS snapshots: the direct-API archive.
    Ebs,
    /// RDS DB snapshots.
    Rds,
    /// Aurora cluster snapshots.
    Aurora,
    /// DynamoDB backups.
    DynamoDb,
}

impl ExportKind {
    /// Every kind, in `export.kinds`' default order.
    pub const ALL: [ExportKind; 4] = [ExportKind::Ebs, ExportKind::Rds, ExportKind::Aurora, ExportKind::DynamoDb];

    /// The spelling in `export.kinds`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Ebs => "ebs",
            ExportKind::Rds => "rds",
            ExportKind::Aurora => "aurora",
            ExportKind::DynamoDb => "dynamodb",
        }
    }

    /// Reads `export.kinds`' spelling (or AWS Backup's resource type), case-insensitively.
    pub fn parse(v: &str) -> Option<ExportKind> {
        match v.to_ascii_lowercase().as_str() {
            "ebs" => Some(ExportKind::Ebs),
            "rds" => Some(ExportKind::Rds),
            "aurora" => Some(ExportKind::Aurora),
            "dynamodb" => Some(ExportKind::DynamoDb),
            _ => None,
        }
    }
}

impl fmt::Display for ExportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a DynamoDB recovery point is exported (`export.dynamodb_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DynamoDbMode {
    /// The backup itself: restored to a temporary table, scanned into a bunker archive.
    #[default]
    Backup,
    /// `ExportTableToPointInTime` at the backup's creation time (needs PITR on the table).
    Pitr,
}

/// What an RDS or Aurora recovery point is exported as (`export.rds_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RdsFormat {
    /// RDS's own export to Parquet (`StartExportTask`).
    #[default]
    Parquet,
    /// A native dump through a temporary instance (or Aurora cluster).
    Dump,
    /// Both.
    Both,
}

impl RdsFormat {
    /// Whether a Parquet export is wanted.
    pub fn parquet(self) -> bool {
        matches!(self, RdsFormat::Parquet | RdsFormat::Both)
    }

    /// Whether a dump is wanted.
    pub fn dump(self) -> bool {
        matches!(self, RdsFormat::Dump | RdsFormat::Both)
    }

    /// `parquet`, `dump` or `both`.
    pub fn parse(value: &str) -> Option<RdsFormat> {
        match value {
            "parquet" => Some(RdsFormat::Parquet),
            "dump" => Some(RdsFormat::Dump),
            "both" => Some(RdsFormat::Both),
            _ => None,
        }
    }

    /// What a resource's tag `bunker:config:export.rds_format` asks for, if it has one
    /// (`Err` names the tag and the values it may take).
    pub fn from_tags(tags: &crate::tags::Tags) -> Result<Option<RdsFormat>, String> {
        let key = format!("{}export.rds_format", crate::tags::CONFIG_PREFIX);
        match tags.get(&key) {
            None => Ok(None),
            Some(v) => RdsFormat::parse(v.trim())
                .map(Some)
                .ok_or_else(|| format!("tag {key} = {v:?}: expected parquet, dump or both")),
        }
    }
}

/// What an EBS snapshot is exported as (`export.ebs_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EbsFormat {
    /// The raw disk image (restorable to a snapshot or a file).
    #[default]
    Image,
    /// Each ext2/3/4 and FAT filesystem as a tar archive with a catalog, read in place.
    Files,
    /// Both.
    Both,
}

impl EbsFormat {
    /// Whether the image is wanted.
    pub fn image(self) -> bool {
        matches!(self, EbsFormat::Image | EbsFormat::Both)
    }

    /// Whether the filesystems' files are wanted.
    pub fn files(self) -> bool {
        matches!(self, EbsFormat::Files | EbsFormat::Both)
    }

    /// `image`, `files` or `both`.
    pub fn parse(value: &str) -> Option<EbsFormat> {
        match value {
            "image" => Some(EbsFormat::Image),
            "files" => Some(EbsFormat::Files),
            "both" => Some(EbsFormat::Both),
            _ => None,
        }
    }

    /// What a snapshot's tag `bunker:config:export.ebs_format` (copied from its volume onto
    /// bunker's backups, and by AWS Backup onto its recovery points) asks for, if it has one
    /// (`Err` names the tag and the values it may take).
    pub fn from_tags(tags: &crate::tags::Tags) -> Result<Option<EbsFormat>, String> {
        let key = format!("{}export.ebs_format", crate::tags::CONFIG_PREFIX);
        match tags.get(&key) {
            None => Ok(None),
            Some(v) => EbsFormat::parse(v.trim())
                .map(Some)
                .ok_or_else(|| format!("tag {key} = {v:?}: expected image, files or both")),
        }
    }
}

/// A recovery point's status (AWS's `RecoveryPointStatus`; read case-insensitively, and an
/// unknown value is kept, never an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Being made.
    Creating,
    /// Made and usable.
    Completed,
    /// Made and usable (continuous backups and some fully managed types).
    Available,
    /// Partly made: not exported.
    Partial,
    /// Being deleted.
    Deleting,
    /// Past its retention, or left by a delete the caller had no permission for.
    Expired,
    /// Stopped (continuous backups).
    Stopped,
    /// A status this version does not know.
    Other(String),
}

impl Status {
    /// Reads AWS's spelling.
    pub fn parse(v: &str) -> Status {
        match v.to_ascii_uppercase().as_str() {
            "CREATING" => Status::Creating,
            "COMPLETED" => Status::Completed,
            "AVAILABLE" => Status::Available,
            "PARTIAL" => Status::Partial,
            "DELETING" => Status::Deleting,
            "EXPIRED" => Status::Expired,
            "STOPPED" => Status::Stopped,
            _ => Status::Other(v.to_string()),
        }
    }

    /// Whether it holds a finished backup worth exporting.
    pub fn exportable(&self) -> bool {
        matches!(self, Status::Completed | Status::Available)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Status::Creating => "CREATING",
            Status::Completed => "COMPLETED",
            Status::Available => "AVAILABLE",
            Status::Partial => "PARTIAL",
            Status::Deleting => "DELETING",
            Status::Expired => "EXPIRED",
            Status::Stopped => "STOPPED",
            Status::Other(s) => s,
        };
        f.write_str(s)
    }
}

/// What a recovery point holds, read from its ARN (and AWS's resource type where the ARN
/// does not say: the AWS Backup-native form, DocumentDB beside Aurora).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holds {
    /// An EBS snapshot: `arn:aws:ec2:R::snapshot/snap-…`.
    EbsSnapshot(String),
    /// An RDS DB snapshot: `arn:aws:rds:R:A:snapshot:awsbackup:job-…`.
    RdsSnapshot(String),
    /// An Aurora (or DocumentDB) cluster snapshot: `…:cluster-snapshot:awsbackup:job-…`.
    ClusterSnapshot {
        /// The snapshot identifier.
        id: String,
        /// DocumentDB (resource type `DocumentDB`) rather than Aurora.
        docdb: bool,
    },
    /// A DynamoDB backup: `arn:aws:dynamodb:R:A:table/T/backup/…` (the whole ARN).
    DynamoDbBackup(String),
    /// An AWS Backup-native recovery point (`arn:aws:backup:R:A:recovery-point:…`) of this
    /// resource type, or any other ARN.
    Other {
        /// AWS's resource type, as reported.
        resource_type: String,
    },
}

impl Holds {
    /// Reads `arn` with AWS's `resource_type` (`EBS`, `RDS`, `Aurora`, `DynamoDB`, …).
    pub fn of(arn: &str, resource_type: &str) -> Holds {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let other = || Holds::Other { resource_type: resource_type.to_string() };
        if parts.len() != 6 || parts[0] != "arn" {
            return other();
        }
        let resource = parts[5];
        match parts[2] {
            "ec2" => match resource.strip_prefix("snapshot/") {
                Some(id) if crate::events::is_snapshot_id(id) => Holds::EbsSnapshot(id.to_string()),
                _ => other(),
            },
            "rds" => {
                if let Some(id) = resource.strip_prefix("snapshot:") {
                    Holds::RdsSnapshot(id.to_string())
                } else if let Some(id) = resource.strip_prefix("cluster-snapshot:") {
                    Holds::ClusterSnapshot {
                        id: id.to_string(),
                        docdb: resource_type.eq_ignore_ascii_case("DocumentDB"),
                    }
                } else {
                    other()
                }
            }
            "dynamodb" if resource.contains("/backup/") => Holds::DynamoDbBackup(arn.to_string()),
            _ => other(),
        }
    }

    /// The export kind, if bunker has one for it.
    pub fn kind(&self) -> Option<ExportKind> {
        match self {
            Holds::EbsSnapshot(_) => Some(ExportKind::Ebs),
            Holds::RdsSnapshot(_) => Some(ExportKind::Rds),
            Holds::ClusterSnapshot { docdb: false, .. } => Some(ExportKind::Aurora),
            Holds::DynamoDbBackup(_) => Some(ExportKind::DynamoDb),
            Holds::ClusterSnapshot { docdb: true, .. } | Holds::Other { .. } => None,
        }
    }

    /// What it is, for messages: `EBS snapshot snap-…`, `DocumentDB cluster snapshot …`.
    pub fn describe(&self) -> String {
        match self {
            Holds::EbsSnapshot(id) => format!("EBS snapshot {id}"),
            Holds::RdsSnapshot(id) => format!("RDS snapshot {id}"),
            Holds::ClusterSnapshot { id, docdb: false } => format!("Aurora cluster snapshot {id}"),
            Holds::ClusterSnapshot { id, docdb: true } => format!("DocumentDB cluster snapshot {id}"),
            Holds::DynamoDbBackup(arn) => format!("DynamoDB backup {arn}"),
            Holds::Other { resource_type } => format!("{resource_type} recovery point"),
        }
    }
}

/// One recovery point, as `ListRecoveryPointsByBackupVault` / `DescribeRecoveryPoint` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPoint {
    /// Its ARN.
    pub arn: String,
    /// The vault holding it.
    pub vault: String,
    /// The resource it is a backup of.
    pub resource_arn: String,
    /// AWS's resource type (`EBS`, `RDS`, `Aurora`, `DynamoDB`, …).
    pub resource_type: String,
    /// Its status.
    pub status: Status,
    /// When AWS says it was created (RFC 3339), if reported.
    pub created: Option<String>,
    /// Its size in bytes, if reported.
    pub size: Option<u64>,
}

impl RecoveryPoint {
    /// What it holds.
    pub fn holds(&self) -> Holds {
        Holds::of(&self.arn, &self.resource_type)
    }
}

/// A backup job, as `DescribeBackupJob` reports it (what an event that names only the job
/// is resolved through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupJob {
    /// The vault it writes to.
    pub vault: String,
    /// The recovery point it made, once it made one.
    pub recovery_point_arn: Option<String>,
    /// Its state (`CREATED`, `RUNNING`, `COMPLETED`, …), as AWS spells it.
    pub state: String,
}

/// The recovery point an export's manifest names (`source.recovery_point`): which
/// recovery point exactly the archive holds, so a delete can be checked against it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PointRef {
    /// The recovery point ARN.
    pub arn: String,
    /// Its vault.
    pub vault: String,
}

/// Where a vault's exports go under `export.to`: `<export.to>/recovery-points/<vault>`.
pub fn target_of(export_to: &str, vault: &str) -> String {
    format!("{}/recovery-points/{vault}", export_to.trim_end_matches('/'))
}

/// Whether `v` is an AWS Backup vault name: 2 to 50 letters, digits, `-` or `_`.
pub fn is_vault_name(v: &str) -> bool {
    (2..=50).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the target holds for a recovery point's export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archived {
    /// No finished export (no manifest naming it).
    No,
    /// A finished export whose manifest names this recovery point.
    Yes,
    /// Finished, and read back and verified in this job.
    Verified,
}

/// What the pass knows about one recovery point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its status; `None` when AWS says it does not exist.
    pub status: Option<Status>,
    /// What it holds, if bunker exports that kind here (`export.kinds`).
    pub kind: Option<ExportKind>,
    /// What the target holds.
    pub archived: Archived,
    /// `export.delete_source`.
    pub delete_source: bool,
    /// Whether this job already asked AWS to delete it.
    pub delete_asked: bool,
}

/// The next step for one recovery point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Export it (or resume its export).
    Export,
    /// Read back and verify its archive (before deleting the source).
    Verify,
    /// Delete the recovery point (its archive is verified).
    Delete,
    /// Look again later (being created).
    Wait(String),
    /// Everything is done.
    Done,
    /// Nothing to do, nothing wrong (a kind not exported here, gone before it was exported, …).
    Skip(String),
    /// It failed and retrying cannot help; the reason is reported.
    Fail(String),
}

/// What remains for one recovery point.
pub fn plan(s: &Seen) -> Step {
    use Step::*;
    let archived = s.archived != Archived::No;
    let Some(status) = &s.status else {
        return if archived { Done } else { Skip("the recovery point no longer exists".into()) };
    };
    match status {
        Status::Creating => return Wait("the recovery point is being created".into()),
        Status::Deleting if s.delete_asked || archived => return Done,
        Status::Expired if s.delete_asked => {
            return Fail(
                "DeleteRecoveryPoint answered success but the recovery point is EXPIRED, not deleted: \
                 AWS does that when the caller lacks permission (check backup:DeleteRecoveryPoint and the \
                 service's delete permission for the resource type)"
                    .into(),
            )
        }
        s if !s.exportable() => return Skip(format!("recovery point status {s}: not exported")),
        _ => {}
    }
    if s.kind.is_none() {
        return Skip("not a kind exported here".into());
    }
    match (s.archived, s.delete_source) {
        (Archived::No, _) => Export,
        (_, false) => Done,
        (Archived::Yes, true) => Verify,
        (Archived::Verified, true) if s.delete_asked => {
            Fail(format!("the recovery point is still {status} after DeleteRecoveryPoint"))
        }
        (Archived::Verified, true) => Delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(status: Option<Status>, archived: Archived, delete_source: bool, delete_asked: bool) -> Seen {
        Seen { status, kind: Some(ExportKind::Ebs), archived, delete_source, delete_asked }
    }

    #[test]
    fn arns_of_every_form_name_what_they_hold() {
        let ebs = Holds::of("arn:aws:ec2:us-east-1::snapshot/snap-0a1b2c3d4e5f60718", "EBS");
        assert_eq!(ebs, Holds::EbsSnapshot("snap-0a1b2c3d4e5f60718".into()));
        let rds = Holds::of("arn:aws:rds:us-east-1:111122223333:snapshot:awsbackup:job-8a3c", "RDS");
        assert_eq!(rds, Holds::RdsSnapshot("awsbackup:job-8a3c".into()));
        let aurora = Holds::of("arn:aws:rds:us-west-2:1:cluster-snapshot:awsbackup:job-4ece", "Aurora");
        assert_eq!(aurora.kind(), Some(ExportKind::Aurora));
        let docdb = Holds::of("arn:aws:rds:us-west-2:1:cluster-snapshot:awsbackup:job-4ece", "DocumentDB");
        assert_eq!(docdb.kind(), None, "{}", docdb.describe());
        let ddb = Holds::of("arn:aws:dynamodb:us-east-1:1:table/t/backup/01796179517178-e9370235", "DynamoDB");
        assert_eq!(ddb.kind(), Some(ExportKind::DynamoDb));
        let native = Holds::of("arn:aws:backup:us-west-2:1:recovery-point:f1d966fe-a3bd", "EFS");
        assert_eq!(native, Holds::Other { resource_type: "EFS".into() });
        assert_eq!(native.describe(), "EFS recovery point");
        assert_eq!(Holds::of("not an arn", "EBS").kind(), None);
        assert_eq!(Holds::of("arn:aws:ec2:r::image/ami-1", "EC2").kind(), None);
    }

    #[test]
    fn statuses_read_case_insensitively_and_keep_unknown_values() {
        assert_eq!(Status::parse("completed"), Status::Completed);
        assert_eq!(Status::parse("Expired"), Status::Expired);
        assert_eq!(Status::parse("WARMING"), Status::Other("WARMING".into()));
        assert!(Status::parse("AVAILABLE").exportable() && !Status::parse("PARTIAL").exportable());
    }

    #[test]
    fn the_plan_exports_verifies_and_deletes_only_in_that_order() {
        let c = Some(Status::Completed);
        assert_eq!(plan(&seen(c.clone(), Archived::No, true, false)), Step::Export);
        assert_eq!(plan(&seen(c.clone(), Archived::Yes, false, false)), Step::Done, "without delete_source");
        assert_eq!(plan(&seen(c.clone(), Archived::Yes, true, false)), Step::Verify, "never delete unverified");
        assert_eq!(plan(&seen(c.clone(), Archived::Verified, true, false)), Step::Delete);
        assert!(matches!(plan(&seen(c, Archived::Verified, true, true)), Step::Fail(_)), "a delete that did nothing");
        assert_eq!(plan(&seen(None, Archived::Verified, true, true)), Step::Done, "deleted: gone");
        assert_eq!(plan(&seen(Some(Status::Deleting), Archived::Verified, true, true)), Step::Done);
        let expired = plan(&seen(Some(Status::Expired), Archived::Verified, true, true));
        assert!(matches!(&expired, Step::Fail(why) if why.contains("EXPIRED")), "{expired:?}");
    }

    #[test]
    fn unfinished_gone_and_foreign_points_are_waited_for_or_skipped() {
        assert!(matches!(plan(&seen(Some(Status::Creating), Archived::No, true, false)), Step::Wait(_)));
        assert!(matches!(plan(&seen(None, Archived::No, true, false)), Step::Skip(_)));
        assert!(matches!(plan(&seen(Some(Status::Partial), Archived::No, true, false)), Step::Skip(_)));
        assert!(matches!(plan(&seen(Some(Status::Expired), Archived::No, true, false)), Step::Skip(_)));
        let mut s = seen(Some(Status::Completed), Archived::No, true, false);
        s.kind = None;
        assert!(matches!(plan(&s), Step::Skip(_)));
    }

    #[test]
    fn vault_names_and_targets() {
        assert!(is_vault_name("Default") && is_vault_name("cold_archive-2"));
        assert!(!is_vault_name("a") && !is_vault_name("../x") && !is_vault_name(&"v".repeat(51)));
        assert_eq!(target_of("s3://b/p/", "Default"), "s3://b/p/recovery-points/Default");
    }
}
