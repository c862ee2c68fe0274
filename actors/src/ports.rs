//! The actors' only way to reach AWS: traits in domain terms, implemented by `src/aws/`
//! (real SDK clients) and by `testkit` (feature `testkit`) (in-memory fakes).

use async_trait::async_trait;
use bunker_protocol::backup::Backup;
use bunker_protocol::config::RdsBackupMode;
use bunker_protocol::tags::Tags;
use bunker_protocol::ResourceKind;

/// A resource that may be backed up.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// AWS id (volume id, instance id, DB / cluster identifier).
    pub id: String,
    /// Its tags.
    pub tags: Tags,
    /// `None` when it can be backed up now; otherwise why not (e.g. "status modifying").
    pub not_ready: Option<String>,
}

/// Everything needed to create one backup.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// The resource.
    pub resource: Resource,
    /// Backup name (identifier for RDS/DocumentDB/Redshift, AMI name, `Name` tag).
    pub name: String,
    /// Tags applied in the create call itself.
    pub tags: Tags,
    /// RDS instances and clusters only.
    pub rds_mode: RdsBackupMode,
}

/// A backup just created.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// Its AWS id.
    pub id: String,
    /// Anything worth reporting (e.g. "copy of automated snapshot rds:db-2026-…").
    pub note: Option<String>,
}

/// A snapshot or image as listed, before bunker interprets its tags.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedBackup {
    /// AWS id.
    pub id: String,
    /// Tags.
    pub tags: Tags,
    /// Available / completed.
    pub available: bool,
    /// Ids deleted with it (an AMI's snapshots that carry the same ownership tags).
    pub parts: Vec<String>,
}

/// Creates, lists and deletes backups of one kind in one region of one account.
#[async_trait]
pub trait BackupControl: Send + Sync {
    /// The kind handled.
    fn kind(&self) -> ResourceKind;
    /// The region handled.
    fn region(&self) -> &str;
    /// Every resource of the kind (selection by tag is the caller's job: clean-up also needs
    /// to know which sources still exist).
    async fn list_resources(&self) -> Result<Vec<Resource>, PortError>;
    /// Creates one backup, tagged in the create call.
    async fn create_backup(&self, request: &CreateRequest) -> Result<Created, PortError>;
    /// Every backup-shaped object that carries bunker's tags (with `shelvery`, Shelvery's too).
    async fn list_backups(&self, shelvery: bool) -> Result<Vec<ListedBackup>, PortError>;
    /// Deletes a backup and its parts. Only called for backups the planner owns and expired.
    async fn delete_backup(&self, backup: &Backup) -> Result<(), PortError>;
}

/// Publishes notifications.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Publishes `message` (JSON) to the topic; `subject` ≤ 100 characters.
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> Result<(), PortError>;
}

/// What kind of failure a port reports; drives retry and reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The thing does not exist.
    NotFound,
    /// Already exists (e.g. a name collision).
    AlreadyExists,
    /// Credentials lack permission.
    AccessDenied,
    /// Rate limited (after the SDK's own retries).
    Throttled,
    /// Worth retrying later (network, 5xx).
    Transient,
    /// AWS rejected the request as invalid (state, parameters).
    Invalid,
    /// Anything else.
    Internal,
}

/// A failure at the AWS boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", code.as_ref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct PortError {
    /// Kind, for decisions.
    pub kind: ErrorKind,
    /// The AWS error code, when there is one.
    pub code: Option<String>,
    /// Human-readable message.
    pub message: String,
}

impl PortError {
    /// A new error.
    pub fn new(kind: ErrorKind, code: Option<&str>, message: impl Into<String>) -> Self {
        PortError { kind, code: code.map(String::from), message: message.into() }
    }
}
