//! What arrives on bunker's queue, and what it means.
//!
//! The queue is fed by EventBridge rules (`deploy/eventbridge/`) and by operators. A message is
//! one of:
//! - an AWS Backup "Backup Job State Change" or "Copy Job State Change" event, or the
//!   CloudTrail-delivered `BackupJobCompleted` shape;
//! - an EC2 "EBS Snapshot Notification" (`createSnapshot`, `createSnapshots`, `copySnapshot`);
//! - an EC2 "EC2 AMI State Change" (an AMI made or copied became `available`);
//! - an RDS "DB Snapshot Event" or "DB Cluster Snapshot Event";
//! - a bunker command, `{"action": "create-backups", "kind": "ebs"}`, so that an EventBridge
//!   schedule can drive a fleet of bunker instances.
//!
//! Events are hints: they name a backup worth looking at now. Whether it is bunker's to copy
//! and share is decided from its tags, and reconciliation finds whatever an event missed.
//! [`parse_message`] never panics; a message it cannot read is an [`IntakeError`] whose text
//! becomes the dead-letter reason.

use serde::Deserialize;
use serde_json::Value;

use crate::ResourceKind;

/// Messages larger than this go to the dead-letter queue unread. Every shape above is a few
/// KiB; SQS itself allows 256 KiB (1 MiB since 2025), and nothing that large is a real event.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A backup named by an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupRef {
    /// Kind.
    pub kind: ResourceKind,
    /// Region it lives in.
    pub region: String,
    /// Its id (snapshot id, AMI id, DB / cluster snapshot identifier).
    pub id: String,
}

impl std::fmt::Display for BackupRef {
    /// `kind:region:id`, e.g. `ebs:us-east-1:snap-0123`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.region, self.id)
    }
}

/// A command to run an action now (as the scheduler would).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `create-backups` for a kind; with `select`, one resource.
    CreateBackups {
        /// Kind.
        kind: ResourceKind,
        /// One resource id.
        select: Option<String>,
    },
    /// `clean-backups` for a kind.
    CleanBackups {
        /// Kind.
        kind: ResourceKind,
    },
    /// `pull-backups` for a kind (data-bunker account).
    PullBackups {
        /// Kind.
        kind: ResourceKind,
    },
    /// Rebuild pending copy/share work from AWS state (all kinds served, or one).
    Reconcile {
        /// Kind, or every served kind.
        kind: Option<ResourceKind>,
    },
    /// Export an EBS snapshot as an archive (`bunker export ebs`).
    Export {
        /// The snapshot.
        snapshot_id: String,
        /// Target (`s3://bucket/prefix`, `file:///dir`); default `export.to`.
        to: Option<String>,
        /// Export incrementally from this snapshot's export.
        base: Option<String>,
        /// The snapshot's region (default: the first served region).
        region: Option<String>,
    },
}

impl Command {
    /// The action's name as written in messages and logs.
    pub fn action(&self) -> &'static str {
        match self {
            Command::Export { .. } => "export",
            Command::CreateBackups { .. } => "create-backups",
            Command::CleanBackups { .. } => "clean-backups",
            Command::PullBackups { .. } => "pull-backups",
            Command::Reconcile { .. } => "reconcile",
        }
    }
}

/// An AWS Backup recovery point an event announces. A hint only: AWS's own answers
/// (`DescribeBackupJob`, `DescribeRecoveryPoint`) are the authority, and a field AWS leaves
/// out (its documented "Backup Job State Change" has the recovery point only in
/// `resources[]`) is `None`, never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPointHint {
    /// The region the recovery point is in.
    pub region: String,
    /// Its vault, if the event names it.
    pub vault: Option<String>,
    /// Its ARN, if the event carries it.
    pub arn: Option<String>,
    /// The backup job that made it, if the event says.
    pub backup_job_id: Option<String>,
    /// AWS's resource type (`EBS`, `RDS`, `Aurora`, `DynamoDB`, …), if the event says.
    pub resource_type: Option<String>,
}

impl RecoveryPointHint {
    /// The backup it is, when the ARN names a kind bunker copies and shares.
    pub fn backup(&self) -> Option<BackupRef> {
        backup_from_arn(self.arn.as_deref()?, self.resource_type.as_deref(), &self.region)
    }
}

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// A backup that just became available: copy and share it if it is ours.
    BackupReady(BackupRef),
    /// An AWS Backup recovery point that just completed: export it if its vault is listed
    /// (`export.vaults`); copy and share it if it is ours.
    RecoveryPoint(RecoveryPointHint),
    /// Run a command.
    Command(Command),
    /// Understood, nothing to do (a job still running, a failed snapshot, an event about
    /// something bunker does not handle). The text says why; it is logged.
    Nothing(String),
}

/// Why a message could not be read. The text is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("oversized: {0} bytes (limit {MAX_MESSAGE_BYTES})")]
    Oversized(usize),
    /// Not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but no shape bunker knows.
    #[error("unrecognised message: {0}")]
    Unrecognised(String),
    /// A known shape with a bad field.
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Deserialize)]
struct CommandBody {
    action: String,
    kind: Option<String>,
    select: Option<String>,
    snapshot_id: Option<String>,
    to: Option<String>,
    base: Option<String>,
    region: Option<String>,
}

/// Reads one SQS message body.
pub fn parse_message(body: &str) -> Result<Intake, IntakeError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(IntakeError::Oversized(body.len()));
    }
    let v: Value = serde_json::from_str(body).map_err(|e| IntakeError::NotJson(e.to_string()))?;
    // An SNS envelope (a topic subscribed to the queue without raw delivery): unwrap once.
    if v.get("Type").and_then(Value::as_str) == Some("Notification") {
        if let Some(inner) = v.get("Message").and_then(Value::as_str) {
            return parse_message(inner);
        }
    }
    if v.get("action").is_some() {
        return parse_command(v);
    }
    let source = v.get("source").and_then(Value::as_str);
    let detail_type = v.get("detail-type").and_then(Value::as_str);
    let detail = v.get("detail").cloned().unwrap_or(Value::Null);
    let region = v.get("region").and_then(Value::as_str).unwrap_or_default().to_string();
    match (source, detail_type) {
        (Some("aws.backup"), Some("Backup Job State Change")) => {
            Ok(recovery_point(&detail, Fields::BACKUP_JOB, resources(&v), &region))
        }
        (Some("aws.backup"), Some("Copy Job State Change")) => {
            Ok(recovery_point(&detail, Fields::COPY_JOB, resources(&v), &region))
        }
        (Some("aws.backup"), Some("Recovery Point State Change")) => {
            Ok(recovery_point(&detail, Fields::RECOVERY_POINT, resources(&v), &region))
        }
        (Some("aws.backup"), Some("AWS Service Event via CloudTrail")) => {
            let name = detail.get("eventName").and_then(Value::as_str).unwrap_or_default();
            if name != "BackupJobCompleted" {
                return Ok(Intake::Nothing(format!("aws.backup service event {name}")));
            }
            let inner = detail.get("serviceEventDetails").cloned().unwrap_or(Value::Null);
            Ok(recovery_point(&inner, Fields::BACKUP_JOB, None, &region))
        }
        (Some("aws.ec2"), Some("EBS Snapshot Notification")) => ebs_notification(&detail),
        (Some("aws.ec2"), Some("EC2 AMI State Change")) => ami_state(&detail, &region),
        (Some("aws.rds"), Some("RDS DB Snapshot Event" | "RDS DB Cluster Snapshot Event")) => rds_event(&detail),
        (Some(s), Some(t)) => Ok(Intake::Nothing(format!("event {s} / {t} is not one bunker acts on"))),
        _ => Err(IntakeError::Unrecognised(
            "neither an EventBridge event (source, detail-type) nor a bunker command (action)".into(),
        )),
    }
}

fn parse_command(v: Value) -> Result<Intake, IntakeError> {
    let c: CommandBody =
        serde_json::from_value(v).map_err(|e| IntakeError::Invalid { field: "command", problem: e.to_string() })?;
    let kind = |required: bool| -> Result<Option<ResourceKind>, IntakeError> {
        match &c.kind {
            None if required => {
                Err(IntakeError::Invalid { field: "kind", problem: "missing (ebs, ec2ami, rds, …)".into() })
            }
            None => Ok(None),
            Some(k) => k
                .parse()
                .map(Some)
                .map_err(|e: crate::kind::UnknownKind| IntakeError::Invalid { field: "kind", problem: e.to_string() }),
        }
    };
    let select = c
        .select
        .as_deref()
        .map(|v| checked("select", v, is_resource_id, "a resource id (vol-…, i-…, a DB identifier)"))
        .transpose()?;
    let cmd = match c.action.as_str() {
        "create-backups" | "create_backups" => Command::CreateBackups { kind: kind(true)?.expect("required"), select },
        "clean-backups" | "clean_backups" => Command::CleanBackups { kind: kind(true)?.expect("required") },
        "pull-backups" | "pull_shared_backups" => Command::PullBackups { kind: kind(true)?.expect("required") },
        "reconcile" => Command::Reconcile { kind: kind(false)? },
        "export" => {
            const SNAP: &str = "an EBS snapshot id (snap- and 8 or 17 hex digits)";
            let snapshot_id = c.snapshot_id.as_deref().ok_or_else(|| IntakeError::Invalid {
                field: "snapshot_id",
                problem: format!("missing: expected {SNAP}"),
            })?;
            Command::Export {
                snapshot_id: checked("snapshot_id", snapshot_id, is_snapshot_id, SNAP)?,
                to: c
                    .to
                    .as_deref()
                    .map(|v| checked("to", v, crate::config::is_target, "s3://bucket/prefix or file:///directory"))
                    .transpose()?,
                base: c.base.as_deref().map(|v| checked("base", v, is_snapshot_id, SNAP)).transpose()?,
                region: c
                    .region
                    .as_deref()
                    .map(|v| checked("region", v, crate::config::is_region, "an AWS region such as us-east-1"))
                    .transpose()?,
            }
        }
        other => {
            return Err(IntakeError::Invalid {
                field: "action",
                problem: format!(
                    "{other:?}: expected create-backups, clean-backups, pull-backups, reconcile or export"
                ),
            })
        }
    };
    Ok(Intake::Command(cmd))
}

/// `value` if it has the AWS format `ok` checks, else an error naming the field and the format.
fn checked(field: &'static str, value: &str, ok: fn(&str) -> bool, expected: &str) -> Result<String, IntakeError> {
    if ok(value) {
        return Ok(value.to_string());
    }
    let shown: String = value.chars().take(80).collect();
    Err(IntakeError::Invalid { field, problem: format!("{shown:?}: expected {expected}") })
}

/// `snap-` and 8 or 17 lowercase hex digits.
pub fn is_snapshot_id(v: &str) -> bool {
    v.strip_prefix("snap-").is_some_and(|h| {
        matches!(h.len(), 8 | 17) && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A resource id or identifier: 1 to 255 letters, digits, `-`, `_`, `.` or `:`.
fn is_resource_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 255
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// What this deployment's configuration allows a queue command to ask for. A message from
/// the queue is untrusted: anything outside this is dead-lettered with the reason.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// `serve.kinds`.
    pub kinds: Vec<ResourceKind>,
    /// The served regions (exports name one of them).
    pub regions: Vec<String>,
    /// `export.to` and `export.allowed_targets`.
    pub export_targets: Vec<String>,
    /// `export.to`: the target of an export command that names none.
    pub default_target: Option<String>,
    /// `source_accounts` is set: pulls are possible.
    pub pull: bool,
    /// `deployment` is set: cleans are possible (see `Config::require_deployment`).
    pub clean: bool,
}

/// Why a command was refused: the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not allowed by this deployment's configuration: {0}")]
pub struct Refused(pub String);

impl Allowed {
    /// Whether `cmd` may run here; `Err` names what the config lacks.
    pub fn admit(&self, cmd: &Command) -> Result<(), Refused> {
        let served = |k: &ResourceKind| {
            if self.kinds.contains(k) {
                Ok(())
            } else {
                Err(Refused(format!("kind {k} is not in serve.kinds")))
            }
        };
        match cmd {
            Command::CreateBackups { kind, .. } => served(kind),
            Command::CleanBackups { kind } if self.clean => served(kind),
            Command::CleanBackups { .. } => Err(Refused("clean-backups needs an explicit deployment = \"…\"".into())),
            Command::PullBackups { kind } if self.pull => served(kind),
            Command::PullBackups { .. } => Err(Refused("pull-backups needs source_accounts".into())),
            Command::Reconcile { kind } => kind.as_ref().map_or(Ok(()), served),
            Command::Export { to, region, .. } => {
                if let Some(r) = region.as_ref().filter(|r| !self.regions.contains(r)) {
                    return Err(Refused(format!("region {r} is not served (regions: {})", self.regions.join(", "))));
                }
                match to.as_ref().or(self.default_target.as_ref()) {
                    None => Err(Refused("export names no target and export.to is not set".into())),
                    Some(t) if self.export_targets.iter().any(|a| same_target(a, t)) => Ok(()),
                    Some(t) => Err(Refused(format!("export target {t} is not export.to or in export.allowed_targets"))),
                }
            }
        }
    }
}

fn same_target(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Where each AWS Backup event shape keeps what [`RecoveryPointHint`] needs.
struct Fields {
    /// The state field (`state` for jobs, `status` for recovery points).
    state: &'static str,
    /// The recovery point ARN field.
    arn: &'static str,
    /// The vault ARN field (the vault name field is `backupVaultName` where there is one).
    vault_arn: &'static str,
    /// The job id field.
    job: Option<&'static str>,
}

impl Fields {
    const BACKUP_JOB: Fields =
        Fields { state: "state", arn: "recoveryPointArn", vault_arn: "backupVaultArn", job: Some("backupJobId") };
    const COPY_JOB: Fields = Fields {
        state: "state",
        arn: "destinationRecoveryPointArn",
        vault_arn: "destinationBackupVaultArn",
        job: None,
    };
    const RECOVERY_POINT: Fields =
        Fields { state: "status", arn: "recoveryPointArn", vault_arn: "backupVaultArn", job: None };
}

/// The first of an event's `resources`, if any.
fn resources(v: &Value) -> Option<&str> {
    v.get("resources")?.as_array()?.first()?.as_str()
}

/// An AWS Backup event's recovery point. Every field but the state is optional: what the
/// event leaves out is looked up from AWS (the job) or found by reconciliation.
fn recovery_point(detail: &Value, f: Fields, resource: Option<&str>, region: &str) -> Intake {
    let text = |k: &str| detail.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
    let state = text(f.state).unwrap_or_default();
    if !state.eq_ignore_ascii_case("COMPLETED") {
        return Intake::Nothing(format!("aws backup {} {state:?}", f.state));
    }
    // A copy's recovery point is in the destination vault's region.
    let vault_arn = text(f.vault_arn);
    let vault_part = |i: usize| vault_arn.as_deref().and_then(|a| a.split(':').nth(i)).map(String::from);
    let arn = text(f.arn).or_else(|| resource.map(String::from));
    let hint = RecoveryPointHint {
        region: vault_part(3).filter(|r| !r.is_empty()).unwrap_or_else(|| region.to_string()),
        vault: if f.job.is_some() || f.state == "status" { text("backupVaultName") } else { None }
            .or_else(|| vault_arn.as_deref().and_then(|a| a.split_once(":backup-vault:")).map(|(_, v)| v.to_string())),
        arn,
        backup_job_id: f.job.and_then(text),
        resource_type: text("resourceType"),
    };
    if hint.arn.is_none() && hint.backup_job_id.is_none() {
        return Intake::Nothing(
            "a completed aws backup event naming no recovery point or job (reconciliation finds it)".into(),
        );
    }
    Intake::RecoveryPoint(hint)
}

fn ebs_notification(detail: &Value) -> Result<Intake, IntakeError> {
    let event = detail.get("event").and_then(Value::as_str).unwrap_or_default();
    let result = detail.get("result").and_then(Value::as_str).unwrap_or_default();
    if result != "succeeded" {
        return Ok(Intake::Nothing(format!("ebs {event} {result}")));
    }
    // A finished copy is news for its source's job (the copy's own job would only find a
    // copy): it frees a copy slot and lets the copy be shared now, not at the next timer.
    let source = detail.get("source").and_then(Value::as_str).filter(|_| event == "copySnapshot");
    if let Some(source) = source.and_then(|arn| backup_from_arn(arn, Some("EBS"), "")) {
        return Ok(Intake::BackupReady(source));
    }
    let arn = detail
        .get("snapshot_id")
        .and_then(Value::as_str)
        .ok_or_else(|| IntakeError::Invalid { field: "detail.snapshot_id", problem: "missing".into() })?;
    // Several snapshots (createSnapshots) arrive as a comma-separated list; take them all in
    // turn via reconciliation, but act on the first now.
    let first = arn.split(',').next().unwrap_or_default();
    backup_from_arn(first, Some("EBS"), "").map(Intake::BackupReady).ok_or_else(|| IntakeError::Invalid {
        field: "detail.snapshot_id",
        problem: format!("{first:?} is not a snapshot ARN"),
    })
}

/// An AMI that became `available` (CreateImage, CopyImage): its job looks now. The event's
/// own region is the AMI's (a DR copy's comes from the DR region, forwarded).
fn ami_state(detail: &Value, region: &str) -> Result<Intake, IntakeError> {
    let state = detail.get("State").and_then(Value::as_str).unwrap_or_default();
    if state != "available" {
        return Ok(Intake::Nothing(format!("ami state {state}")));
    }
    let id = detail.get("ImageId").and_then(Value::as_str).unwrap_or_default();
    if !id.starts_with("ami-") || region.is_empty() {
        return Err(IntakeError::Invalid {
            field: "detail.ImageId",
            problem: format!("{id:?} in region {region:?} is not an AMI"),
        });
    }
    Ok(Intake::BackupReady(BackupRef { kind: ResourceKind::Ec2ami, region: region.into(), id: id.into() }))
}

fn rds_event(detail: &Value) -> Result<Intake, IntakeError> {
    let event_id = detail.get("EventID").and_then(Value::as_str).unwrap_or_default();
    // RDS-EVENT-0042 manual snapshot created, -0075 manual cluster snapshot created,
    // -0060 / -0197 snapshot copy completed (instance / cluster).
    if !matches!(event_id, "RDS-EVENT-0042" | "RDS-EVENT-0075" | "RDS-EVENT-0060" | "RDS-EVENT-0197") {
        return Ok(Intake::Nothing(format!("rds event {event_id}")));
    }
    let arn = detail
        .get("SourceArn")
        .and_then(Value::as_str)
        .ok_or_else(|| IntakeError::Invalid { field: "detail.SourceArn", problem: "missing".into() })?;
    backup_from_arn(arn, None, "").map(Intake::BackupReady).ok_or_else(|| IntakeError::Invalid {
        field: "detail.SourceArn",
        problem: format!("{arn:?} is not an RDS snapshot ARN"),
    })
}

/// Reads a backup's kind, region and id from its ARN. `hint` is AWS Backup's `resourceType`
/// (it tells DocumentDB from Aurora, which share the cluster-snapshot ARN form).
pub fn backup_from_arn(arn: &str, hint: Option<&str>, fallback_region: &str) -> Option<BackupRef> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return None;
    }
    let (service, resource) = (parts[2], parts[5]);
    // EBS Snapshot Notifications put the region in the account field: arn:aws:ec2::us-west-2:snapshot/…
    let region = [parts[3], parts[4], fallback_region]
        .into_iter()
        .find(|r| r.contains('-') && r.bytes().any(|b| b.is_ascii_digit()) && !r.bytes().all(|b| b.is_ascii_digit()))?
        .to_string();
    let (kind, id) = match service {
        "ec2" => match resource.split_once('/')? {
            ("snapshot", id) => (ResourceKind::Ebs, id),
            ("image", id) => (ResourceKind::Ec2ami, id),
            _ => return None,
        },
        "rds" => match resource.split_once(':')? {
            ("snapshot", id) => (ResourceKind::Rds, id),
            ("cluster-snapshot", id) if hint == Some("DocumentDB") => (ResourceKind::Docdb, id),
            ("cluster-snapshot", id) => (ResourceKind::RdsCluster, id),
            _ => return None,
        },
        "redshift" => match resource.split_once(':')? {
            ("snapshot", rest) => (ResourceKind::Redshift, rest.rsplit('/').next()?),
            _ => return None,
        },
        _ => return None,
    };
    (!id.is_empty()).then(|| BackupRef { kind, region, id: id.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/events/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn ready(kind: ResourceKind, region: &str, id: &str) -> Intake {
        Intake::BackupReady(BackupRef { kind, region: region.into(), id: id.into() })
    }

    #[test]
    fn real_shaped_fixtures() {
        let cases = [
            ("ebs-create-snapshot.json", ready(ResourceKind::Ebs, "us-east-1", "snap-01234567890abcdef")),
            // The copy's source: its job frees the slot and shares the copy.
            ("ebs-copy-snapshot.json", ready(ResourceKind::Ebs, "us-east-1", "snap-01234567890abcdef")),
            (
                "rds-snapshot-created.json",
                ready(ResourceKind::Rds, "us-east-1", "orders-db-20261201-010000-monthly-4d2ef6"),
            ),
            (
                "rds-cluster-snapshot-created.json",
                ready(ResourceKind::RdsCluster, "us-east-1", "ledger-20261201-010000-monthly-9a8b7c"),
            ),
            (
                "command-create-backups.json",
                Intake::Command(Command::CreateBackups { kind: ResourceKind::Ebs, select: None }),
            ),
            // AWS's own example (the EC2 user guide, "Monitor AMI events using EventBridge"),
            // whose `time` is a placeholder bunker does not read.
            ("aws-doc-ami-available.json", ready(ResourceKind::Ec2ami, "us-east-1", "ami-0123456789example")),
        ];
        for (name, want) in cases {
            assert_eq!(parse_message(&fixture(name)), Ok(want), "{name}");
        }
        // AWS Backup events: recovery points whose backups are the same as before.
        let backups = [
            (
                "backup-job-completed.json",
                BackupRef { kind: ResourceKind::Ebs, region: "us-east-1".into(), id: "snap-0a1b2c3d4e5f60718".into() },
            ),
            (
                "copy-job-completed.json",
                BackupRef {
                    kind: ResourceKind::RdsCluster,
                    region: "eu-west-1".into(),
                    id: "awsbackup:copyjob-1f2e3d4c".into(),
                },
            ),
            (
                "cloudtrail-backup-job-completed.json",
                BackupRef {
                    kind: ResourceKind::Ec2ami,
                    region: "us-east-1".into(),
                    id: "ami-0abcdef1234567890".into(),
                },
            ),
        ];
        for (name, want) in backups {
            let Ok(Intake::RecoveryPoint(hint)) = parse_message(&fixture(name)) else { panic!("{name}") };
            assert_eq!(hint.backup(), Some(want), "{name}");
        }
        assert!(matches!(parse_message(&fixture("backup-job-running.json")), Ok(Intake::Nothing(_))));
        assert!(matches!(parse_message(&fixture("ebs-create-snapshot-failed.json")), Ok(Intake::Nothing(_))));
        let failed = fixture("aws-doc-ami-available.json").replace("\"available\"", "\"failed\"");
        assert_eq!(parse_message(&failed), Ok(Intake::Nothing("ami state failed".into())));
        let bad = fixture("aws-doc-ami-available.json").replace("\"ami-0123456789example\"", "\"i-0123\"");
        assert!(matches!(parse_message(&bad), Err(IntakeError::Invalid { field: "detail.ImageId", .. })), "{bad}");
    }

    fn hint(name: &str) -> RecoveryPointHint {
        match parse_message(&fixture(name)) {
            Ok(Intake::RecoveryPoint(h)) => h,
            other => panic!("{name}: {other:?}"),
        }
    }

    /// AWS's own documented examples (the AWS Backup developer guide's EventBridge page):
    /// the completed job names its recovery point only in `resources[]`, a failed copy has
    /// `destinationRecoveryPointArn: {}`, a created job has nothing but its id and state.
    #[test]
    fn aws_documented_backup_events_are_read_never_dead_lettered() {
        let job = hint("aws-doc-backup-job-completed.json");
        assert_eq!(
            job.arn.as_deref(),
            Some("arn:aws:backup:us-west-2:1112233445566:recovery-point:f1d966fe-a3bd-410b-b292-99f442d13b56")
        );
        assert_eq!(job.vault.as_deref(), Some("9732c1b4-1091-472a-9d9f-52e0565ee39a"));
        assert_eq!(job.backup_job_id.as_deref(), Some("a827233a-d405-4a86-a440-759fa94f34dd"));
        assert_eq!(
            (job.region.as_str(), job.backup()),
            ("us-west-2", None),
            "a native recovery point is no bunker backup"
        );
        let copy = hint("aws-doc-copy-job-completed.json");
        assert_eq!(
            copy.arn.as_deref(),
            Some("arn:aws:ec2:us-west-2::snapshot/snap-0726fe70935586180"),
            "the destination, not resources[]"
        );
        assert_eq!(copy.vault.as_deref(), Some("846869de-4589-45c3-ab60-4fbbabcdd3ec"));
        let point = hint("aws-doc-recovery-point-completed.json");
        assert_eq!(point.vault.as_deref(), Some("e6625738-0655-4aa9-bd37-6ec1dd183b15"));
        assert_eq!(point.resource_type.as_deref(), Some("Aurora"));
        assert_eq!(point.backup().map(|b| b.kind), Some(ResourceKind::RdsCluster));
        for quiet in ["aws-doc-backup-job-created.json", "aws-doc-copy-job-failed.json"] {
            assert!(matches!(parse_message(&fixture(quiet)), Ok(Intake::Nothing(_))), "{quiet}");
        }
        // A completed job without any recovery point field is looked up by its job id.
        let bare = r#"{"source":"aws.backup","detail-type":"Backup Job State Change","region":"eu-west-1",
            "detail":{"backupJobId":"j-1","state":"COMPLETED","backupVaultName":"Default"}}"#;
        let Ok(Intake::RecoveryPoint(h)) = parse_message(bare) else { panic!() };
        assert_eq!((h.arn, h.backup_job_id.as_deref(), h.vault.as_deref()), (None, Some("j-1"), Some("Default")));
        let nothing =
            r#"{"source":"aws.backup","detail-type":"Backup Job State Change","detail":{"state":"COMPLETED"}}"#;
        assert!(matches!(parse_message(nothing), Ok(Intake::Nothing(_))));
    }

    #[test]
    fn unreadable_messages_say_why() {
        assert!(matches!(parse_message("{nope"), Err(IntakeError::NotJson(_))));
        assert!(matches!(parse_message("{\"hello\": 1}"), Err(IntakeError::Unrecognised(_))));
        let e = parse_message(r#"{"action":"create-backups","kind":"floppy"}"#).unwrap_err().to_string();
        assert!(e.starts_with("invalid kind"), "{e}");
        let e = parse_message(r#"{"action":"export","to":"s3://b/p"}"#).unwrap_err().to_string();
        assert!(e.contains("snapshot_id"), "{e}");
        let e = parse_message(r#"{"action":"export","snapshot_id":"snap-0123abcd","to":"ftp://x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected s3://"), "{e}");
        assert_eq!(
            parse_message(r#"{"action":"export","snapshot_id":"snap-0123abcd","base":"snap-0123456789abcdef0"}"#)
                .unwrap(),
            Intake::Command(Command::Export {
                snapshot_id: "snap-0123abcd".into(),
                to: None,
                base: Some("snap-0123456789abcdef0".into()),
                region: None
            })
        );
        // Ids and regions are checked against AWS's formats before any call.
        for (body, field) in [
            (r#"{"action":"export","snapshot_id":"snap-1"}"#, "snapshot_id"),
            (r#"{"action":"export","snapshot_id":"snap-0123abcd","region":"../../evil"}"#, "region"),
            (r#"{"action":"export","snapshot_id":"snap-0123abcd","base":"vol-0123abcd"}"#, "base"),
            (r#"{"action":"export","snapshot_id":"snap-0123abcd","to":"file:///srv/../etc"}"#, "to"),
            (r#"{"action":"create-backups","kind":"ebs","select":"vol-1; rm -rf /"}"#, "select"),
        ] {
            let e = parse_message(body).unwrap_err();
            assert!(matches!(e, IntakeError::Invalid { field: f, .. } if f == field), "{body}: {e}");
        }
        let e = parse_message(r#"{"action":"launch"}"#).unwrap_err().to_string();
        assert!(e.contains("\"launch\""), "{e}");
        let big = format!("{{\"action\":\"reconcile\",\"pad\":\"{}\"}}", "x".repeat(MAX_MESSAGE_BYTES));
        assert!(matches!(parse_message(&big), Err(IntakeError::Oversized(_))));
    }

    #[test]
    fn commands_ask_only_for_what_the_config_allows() {
        let allowed = Allowed {
            kinds: vec![ResourceKind::Ebs],
            regions: vec!["us-east-1".into()],
            export_targets: vec!["s3://archive/ebs".into(), "file:///srv/exports".into()],
            default_target: Some("s3://archive/ebs".into()),
            pull: false,
            clean: true,
        };
        let export = |to: Option<&str>, region: Option<&str>| Command::Export {
            snapshot_id: "snap-0123abcd".into(),
            to: to.map(String::from),
            base: None,
            region: region.map(String::from),
        };
        assert!(allowed.admit(&export(None, None)).is_ok());
        assert!(allowed.admit(&export(Some("file:///srv/exports/"), Some("us-east-1"))).is_ok());
        for (cmd, why) in [
            (export(Some("file:///any/dir"), None), "export.allowed_targets"),
            (export(None, Some("eu-west-1")), "not served"),
            (Command::CreateBackups { kind: ResourceKind::Rds, select: None }, "serve.kinds"),
            (Command::PullBackups { kind: ResourceKind::Ebs }, "source_accounts"),
            (Command::Reconcile { kind: Some(ResourceKind::Docdb) }, "serve.kinds"),
        ] {
            let e = allowed.admit(&cmd).unwrap_err().to_string();
            assert!(e.contains(why), "{cmd:?}: {e}");
        }
        let no_default = Allowed { default_target: None, clean: false, ..allowed };
        assert!(no_default.admit(&export(None, None)).unwrap_err().to_string().contains("export.to"));
        assert!(no_default
            .admit(&Command::CleanBackups { kind: ResourceKind::Ebs })
            .unwrap_err()
            .to_string()
            .contains("deployment"));
    }

    #[test]
    fn sns_envelope_is_unwrapped() {
        let inner = r#"{"action":"reconcile"}"#;
        let env = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        assert_eq!(parse_message(&env), Ok(Intake::Command(Command::Reconcile { kind: None })));
    }

    #[test]
    fn arns() {
        let b = backup_from_arn("arn:aws:redshift:us-east-1:123456789012:snapshot:wh/wh-2026", None, "").unwrap();
        assert_eq!((b.kind, b.id.as_str()), (ResourceKind::Redshift, "wh-2026"));
        let d = backup_from_arn("arn:aws:rds:us-east-1:123456789012:cluster-snapshot:dd-1", Some("DocumentDB"), "");
        assert_eq!(d.unwrap().kind, ResourceKind::Docdb);
        assert_eq!(backup_from_arn("arn:aws:s3:::bucket", None, "us-east-1"), None);
        assert_eq!(backup_from_arn("snap-1", None, "us-east-1"), None);
    }
}
