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
    /// Kinds copied by a cluster setting (Redshift): the copy the cluster should make of
    /// this backup, set before the backup is created.
    pub cluster_copy: Option<bunker_protocol::replication::ClusterCopy>,
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
    /// When AWS says it was made (`StartTime`, `CreationDate`, `SnapshotCreateTime`).
    pub aws_created_at: Option<jiff::Timestamp>,
    /// Ids deleted with it (an AMI's snapshots that carry the same ownership tags).
    pub parts: Vec<String>,
}

/// One backup as it is now: enough to decide what copy and share work remains.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupDetail {
    /// AWS id.
    pub id: String,
    /// Tags.
    pub tags: Tags,
    /// Available / completed.
    pub available: bool,
    /// Accounts it is shared with.
    pub shared_with: Vec<String>,
    /// Encrypted at rest.
    pub encrypted: bool,
    /// The KMS key that encrypts it (ARN as AWS reports it).
    pub kms_key: Option<String>,
    /// The snapshots an AMI is made of (shared with it); empty for other kinds.
    pub parts: Vec<String>,
}

/// A backup another account shared with this one. Its tags are the other account's and
/// not visible here: what bunker knows of it comes from its name and description.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedBackup {
    /// AWS id (or identifier) in the owner's account.
    pub id: String,
    /// The owner's account id.
    pub account: String,
    /// The backup name (RDS identifier; EBS description `bunker backup <name>`).
    pub name: Option<String>,
    /// The resource it was made of, where visible (volume id, DB instance id).
    pub source: Option<String>,
    /// Available / completed.
    pub available: bool,
    /// Encrypted at rest.
    pub encrypted: bool,
}

/// Copy a backup from another region into the port's region.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyRequest {
    /// Region of the source backup.
    pub source_region: String,
    /// Account of the source backup (this account for DR copies).
    pub source_account: String,
    /// Id of the source backup.
    pub source_id: String,
    /// Name (identifier) of the copy.
    pub name: String,
    /// Tags applied in the copy call.
    pub tags: Tags,
    /// KMS key for the copy, when the copy is (or must become) encrypted.
    pub kms_key: Option<String>,
    /// Whether the source is encrypted (RDS needs a key in the destination region then).
    pub encrypted: bool,
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

/// Copy and share (DR copies, shares, re-encryption), for the kinds that have them: the
/// catalog in `src/aws` says which, so a kind without them has no such port at all.
#[async_trait]
pub trait Replication: BackupControl {
    /// One backup by id, `None` when it does not exist.
    async fn describe_backup(&self, id: &str) -> Result<Option<BackupDetail>, PortError>;
    /// The copy in this region tagged `tag = value` (`bunker:copy_of` for DR copies,
    /// `bunker:pulled_from` for pulls), named `name` where the kind's copies are named;
    /// `None` when there is none.
    async fn find_copy(&self, tag: &str, value: &str, name: &str) -> Result<Option<BackupDetail>, PortError>;
    /// Copies a backup into this region (called on the destination region's port); returns
    /// the copy's id. Tags go into the copy call itself.
    async fn copy_backup(&self, request: &CopyRequest) -> Result<String, PortError>;
    /// Lets `account` use `backup` (restore / create volume / launch), as a look reported it:
    /// an AMI shares its `parts` too, without describing itself again. Adding an account that
    /// already has access succeeds, so success is the state.
    async fn share_backup(&self, backup: &BackupDetail, account: &str) -> Result<(), PortError>;

    /// Whether [`Replication::describe_backups`] and [`Replication::find_copies`] report who
    /// each backup is shared with. Kinds whose API reads shares one backup at a time (RDS:
    /// `DescribeDBSnapshotAttributes`) answer `false`: their batched looks leave `shared_with`
    /// empty, and the replicator takes the shares it made itself as the state and reads the
    /// others with [`Replication::shared_with`] only where it does not know them.
    fn looks_report_shares(&self) -> bool {
        true
    }

    /// Who backup `id` is shared with (empty when it does not exist).
    async fn shared_with(&self, id: &str) -> Result<Vec<String>, PortError> {
        Ok(self.describe_backup(id).await?.map(|d| d.shared_with).unwrap_or_default())
    }

    /// Many backups at once: those of `ids` that exist, each with `shared_with` limited to
    /// `accounts`. Kinds whose API lists many backups in one request override this (one
    /// listing per chunk of ids, and one per account for the shares); the default describes
    /// them one by one.
    async fn describe_backups(&self, ids: &[String], accounts: &[String]) -> Result<Vec<BackupDetail>, PortError> {
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.describe_backup(id).await?.map(|d| only_shared_with(d, accounts)));
        }
        Ok(out)
    }

    /// Many copies at once: for each `(value, name)` of `wanted`, the copy tagged
    /// `tag = value` (as [`Replication::find_copy`]), with `shared_with` limited to
    /// `accounts`, keyed by `value`. Overridden like [`Replication::describe_backups`].
    async fn find_copies(
        &self,
        tag: &str,
        wanted: &[(String, String)],
        accounts: &[String],
    ) -> Result<Vec<(String, BackupDetail)>, PortError> {
        let mut out = Vec::new();
        for (value, name) in wanted {
            if let Some(d) = self.find_copy(tag, value, name).await? {
                out.push((value.clone(), only_shared_with(d, accounts)));
            }
        }
        Ok(out)
    }
}

/// `d` with `shared_with` limited to `accounts` (what a batched look reports).
pub fn only_shared_with(mut d: BackupDetail, accounts: &[String]) -> BackupDetail {
    d.shared_with.retain(|a| accounts.contains(a));
    d
}

/// The data-bunker pull: finding what other accounts shared with this one (then copying it
/// in through [`Replication`]).
#[async_trait]
pub trait Pull: Replication {
    /// Backups other accounts (among `accounts`) shared with this one, in this region.
    async fn list_shared(&self, accounts: &[String]) -> Result<Vec<SharedBackup>, PortError>;
}

/// One message received from the event queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// SQS message id.
    pub id: String,
    /// Body.
    pub body: String,
    /// Receipt handle (delete, extend visibility).
    pub receipt: String,
    /// How many times it was received (1 the first time).
    pub receive_count: u32,
}

/// The queue EventBridge feeds, and its dead-letter queue.
#[async_trait]
pub trait EventQueue: Send + Sync {
    /// Long-polls for up to `max` messages, waiting up to `wait_secs`; received messages are
    /// invisible to other consumers for `visibility_secs`.
    async fn receive(&self, max: u32, wait_secs: u32, visibility_secs: u32) -> Result<Vec<QueueMessage>, PortError>;
    /// Deletes a handled message.
    async fn delete(&self, receipt: &str) -> Result<(), PortError>;
    /// Keeps a message invisible for `secs` more while its work runs.
    async fn extend_visibility(&self, receipt: &str, secs: u32) -> Result<(), PortError>;
    /// Sends an unreadable message to the dead-letter queue with `reason` as a message
    /// attribute (the caller then deletes the original).
    async fn dead_letter(&self, message: &QueueMessage, reason: &str) -> Result<(), PortError>;
}

/// Leases: at most one holder of a key until it expires. Used so that only one of several
/// instances fires a schedule slot or starts a copy.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes `key` for `holder` until `until` (Unix seconds) if it is free or expired at
    /// `now`; `true` when taken. Atomic across instances.
    async fn claim(&self, key: &str, holder: &str, now: i64, until: i64) -> Result<bool, PortError>;
    /// Gives `key` up if `holder` holds it (a no-op otherwise), so others need not wait for
    /// it to lapse.
    async fn release(&self, key: &str, holder: &str) -> Result<(), PortError>;
}

/// Puts bunker's own events on an EventBridge bus (`events.bus`).
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Puts `events` (any number: the adapter batches them as the API allows); `Err` when
    /// any of them was not accepted.
    async fn put(&self, events: &[bunker_protocol::bus::BusEvent]) -> Result<(), PortError>;
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
    /// A service quota is reached (e.g. concurrent snapshot copies): wait and try again; not
    /// an error.
    Quota,
    /// Worth retrying later (network, 5xx).
    Transient,
    /// AWS rejected the request as invalid (state, parameters).
    Invalid,
    /// Anything else.
    Internal,
}

impl ErrorKind {
    /// Whether the same call may succeed if made again soon: throttling, network and 5xx
    /// failures, and unclassified ones. The one rule every retry in bunker follows
    /// ([`crate::retry::RetryPolicy`]); quotas are deferred by the workflows instead.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::Internal)
    }
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

/// One page of a snapshot's block list (ListSnapshotBlocks / ListChangedBlocks).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockPage {
    /// Block indexes with the token to fetch each (from the newer snapshot), ascending.
    pub blocks: Vec<(u64, String)>,
    /// Volume size in bytes.
    pub volume_size: u64,
    /// Block size in bytes (524288 on AWS).
    pub block_size: u64,
    /// Next page, if any.
    pub next: Option<String>,
}

/// A snapshot as the direct APIs' caller needs it: size and provenance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotMeta {
    /// Snapshot id.
    pub id: String,
    /// Its volume.
    pub volume_id: Option<String>,
    /// Owner account.
    pub owner: Option<String>,
    /// Volume size in bytes.
    pub volume_size: u64,
    /// `completed` snapshots can be read.
    pub completed: bool,
    /// Tags.
    pub tags: Tags,
}

/// One block read with GetSnapshotBlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedBlock {
    /// The block's bytes.
    pub data: Vec<u8>,
    /// The checksum AWS sent with it (base64 SHA-256), to be verified by the caller.
    pub checksum: Option<String>,
}

/// AWS Backup's recovery points in one region (`src/aws/backup.rs`).
#[async_trait]
pub trait Vaults: Send + Sync {
    /// The region.
    fn region(&self) -> &str;

    /// Every recovery point in `vault` (all pages).
    async fn list(&self, vault: &str) -> Result<Vec<bunker_protocol::vault::RecoveryPoint>, PortError>;

    /// One recovery point; `None` when AWS says it does not exist.
    async fn describe(
        &self,
        vault: &str,
        arn: &str,
    ) -> Result<Option<bunker_protocol::vault::RecoveryPoint>, PortError>;

    /// A backup job; `None` when AWS says it does not exist.
    async fn job(&self, job_id: &str) -> Result<Option<bunker_protocol::vault::BackupJob>, PortError>;

    /// Asks AWS to delete a recovery point. Success means only that AWS answered 200: the
    /// caller checks with [`Vaults::describe`] afterwards.
    async fn delete(&self, vault: &str, arn: &str) -> Result<(), PortError>;
}

/// One page of a DynamoDB scan segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// The items, each one line of DynamoDB JSON: `{"Item":{"k":{"S":"v"}, …}}`.
    pub items: Vec<String>,
    /// Where the next page starts (DynamoDB JSON of `LastEvaluatedKey`); `None`: the end.
    pub next: Option<String>,
}

/// What [`Tables::status`] reports of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableInfo {
    /// `CREATING`, `ACTIVE`, … as AWS spells it.
    pub status: String,
    /// Its tags.
    pub tags: Tags,
    /// The backup it was restored from, if it was (`RestoreSummary.SourceBackupArn`).
    pub restored_from: Option<String>,
}

/// DynamoDB tables in one region, for exports of backups through a temporary table
/// (`src/aws/tables.rs`).
#[async_trait]
pub trait Tables: Send + Sync {
    /// The region.
    fn region(&self) -> &str;

    /// Restores `backup_arn` into a new table `table` and tags it with `tags` at once.
    async fn restore(&self, backup_arn: &str, table: &str, tags: &Tags) -> Result<(), PortError>;

    /// Tags `table` with `tags`.
    async fn tag(&self, table: &str, tags: &Tags) -> Result<(), PortError>;

    /// The table's status, tags and origin; `None` when it does not exist.
    async fn status(&self, table: &str) -> Result<Option<TableInfo>, PortError>;

    /// One page of segment `segment` of `segments` of a scan of `table`, from `start`.
    async fn scan(
        &self,
        table: &str,
        segment: u32,
        segments: u32,
        start: Option<String>,
    ) -> Result<ScanPage, PortError>;

    /// The names of the tables whose name starts with `prefix`.
    async fn named(&self, prefix: &str) -> Result<Vec<String>, PortError>;

    /// Deletes the table (a table already gone is not an error).
    async fn delete(&self, table: &str) -> Result<(), PortError>;
}

/// EBS direct APIs: read a snapshot's blocks, write a new snapshot block by block.
#[async_trait]
pub trait SnapshotBlocks: Send + Sync {
    /// Describes a snapshot (EC2 DescribeSnapshots); `NotFound` if there is none.
    async fn describe(&self, snapshot_id: &str) -> Result<SnapshotMeta, PortError>;
    /// One page of the snapshot's allocated blocks.
    async fn list_blocks(&self, snapshot_id: &str, next: Option<String>) -> Result<BlockPage, PortError>;
    /// One page of the blocks that differ between `base` and `snapshot`, with tokens for
    /// reading them from `snapshot` (blocks absent there have no token and read as zeros).
    async fn list_changed(&self, base: &str, snapshot: &str, next: Option<String>) -> Result<BlockPage, PortError>;
    /// Reads one block.
    async fn get_block(&self, snapshot_id: &str, index: u64, token: &str) -> Result<FetchedBlock, PortError>;
    /// Starts a new snapshot of `size_gib` GiB; returns its id.
    async fn start_snapshot(&self, size_gib: u64, description: &str, tags: &Tags) -> Result<String, PortError>;
    /// Writes one block (`checksum`: base64 SHA-256 of `data`).
    async fn put_block(&self, snapshot_id: &str, index: u64, data: Vec<u8>, checksum: &str) -> Result<(), PortError>;
    /// Seals the snapshot after `changed` blocks were written.
    async fn complete_snapshot(&self, snapshot_id: &str, changed: u64) -> Result<(), PortError>;
    /// Deletes a snapshot this process started and could not complete.
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), PortError>;
}

/// A restore target file, written from a blocking thread. Dropped without
/// [`ImageWriter::commit`], it leaves nothing behind (no file that looks restored).
pub trait ImageWriter: Send {
    /// Sets the image size (holes read as zeros).
    fn set_len(&mut self, size: u64) -> std::io::Result<()>;
    /// Writes `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// Reads back up to `buf.len()` bytes at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Makes the file durable and gives it its final name.
    fn commit(&mut self) -> std::io::Result<()>;
}

/// A multipart part as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    /// 1-based part number.
    pub number: u32,
    /// Size in bytes.
    pub size: u64,
    /// The store's tag for it (S3 ETag).
    pub etag: String,
    /// Base64 CRC32C of the part, as sent.
    pub crc32c: Option<String>,
}

/// An RDS or Aurora snapshot export task, as `DescribeExportTasks` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTaskInfo {
    /// `ExportTaskIdentifier`.
    pub id: String,
    /// The snapshot exported.
    pub source_arn: String,
    /// Its status (read case-insensitively).
    pub status: bunker_protocol::rds_export::TaskStatus,
    /// `PercentProgress`.
    pub percent: i32,
    /// `S3Bucket`.
    pub bucket: String,
    /// `S3Prefix`.
    pub prefix: String,
    /// `FailureCause`, when it failed.
    pub failure: Option<String>,
    /// `WarningMessage` (AWS's JSON text of skipped tables).
    pub warning: Option<String>,
}

/// What `StartExportTask` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartExport {
    /// `ExportTaskIdentifier`.
    pub id: String,
    /// The snapshot to export.
    pub source_arn: String,
    /// The bucket RDS writes to.
    pub bucket: String,
    /// The key prefix RDS writes under (the export lands in `<prefix>/<id>/`).
    pub prefix: String,
    /// The role RDS assumes to write to the bucket.
    pub role_arn: String,
    /// The customer KMS key RDS encrypts the export with.
    pub kms_key: String,
}

/// RDS's snapshot exports to S3 in one region.
#[async_trait]
pub trait SnapshotExports: Send + Sync {
    /// The region.
    fn region(&self) -> &str;
    /// Starts an export task (`AlreadyExists` when the id is taken).
    async fn start(&self, request: &StartExport) -> Result<(), PortError>;
    /// The task `id`, if it exists.
    async fn task(&self, id: &str) -> Result<Option<ExportTaskInfo>, PortError>;
    /// How many tasks of the account count against the quota (starting, running, cancelling).
    async fn running(&self) -> Result<usize, PortError>;
    /// The database engine of the snapshot `arn` (for the manifest; `None` if AWS won't say).
    async fn engine(&self, snapshot_arn: &str) -> Result<Option<String>, PortError>;
}

/// A DynamoDB export to S3, as `DescribeExport` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableExportInfo {
    /// `ExportArn`.
    pub arn: String,
    /// `ExportStatus` (`IN_PROGRESS`, `COMPLETED`, `FAILED`), as reported.
    pub status: String,
    /// `S3Bucket`.
    pub bucket: String,
    /// `S3Prefix`.
    pub prefix: String,
    /// `ItemCount`, once known.
    pub items: Option<u64>,
    /// `ExportManifest`: the bucket key of `manifest-summary.json`, once written.
    pub manifest: Option<String>,
    /// `FailureCode: FailureMessage`, when it failed.
    pub failure: Option<String>,
}

/// What `ExportTableToPointInTime` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartTableExport {
    /// The table.
    pub table_arn: String,
    /// The point in time to export (the backup's creation, as AWS Backup reports it).
    pub export_time: jiff::Timestamp,
    /// The bucket DynamoDB writes to.
    pub bucket: String,
    /// The key prefix it writes under (`<prefix>/AWSDynamoDB/<export id>/`).
    pub prefix: String,
    /// Makes a repeated start the same export (AWS keeps it 8 hours).
    pub client_token: String,
}

/// DynamoDB's exports to S3 in one region.
#[async_trait]
pub trait TableExports: Send + Sync {
    /// The region.
    fn region(&self) -> &str;
    /// Starts an export (or, for a repeated client token, answers the same one).
    async fn start(&self, request: &StartTableExport) -> Result<TableExportInfo, PortError>;
    /// The export `arn`, if it exists.
    async fn describe(&self, arn: &str) -> Result<Option<TableExportInfo>, PortError>;
    /// The ARNs of the table's exports.
    async fn list(&self, table_arn: &str) -> Result<Vec<String>, PortError>;
}

/// One object of a listing, with what the store says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the target.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// The store's tag for the content (S3 ETag, quotes removed), where it has one.
    pub etag: Option<String>,
}

/// Where archives go: an S3 bucket prefix or a local directory. Keys are relative to the
/// target. Large objects are written with resumable multipart uploads.
#[async_trait]
pub trait ArchiveStore: Send + Sync {
    /// The URL of `key` (`s3://bucket/prefix/key`, `file:///dir/key`), for messages.
    fn url(&self, key: &str) -> String;
    /// Size of the object, `None` if it does not exist.
    async fn size(&self, key: &str) -> Result<Option<u64>, PortError>;
    /// Reads `len` bytes at `offset` (fewer at the end of the object).
    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, PortError>;
    /// Writes a small object whole (atomically: readers see the old one or the new one).
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), PortError>;
    /// Deletes objects (missing ones are not an error).
    async fn delete(&self, keys: &[String]) -> Result<(), PortError>;
    /// Keys under `prefix`, ascending.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError>;
    /// Objects under `prefix` with their sizes (and tags, where the store has them),
    /// ascending by key.
    async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>, PortError> {
        let mut out = Vec::new();
        for key in self.list(prefix).await? {
            if let Some(size) = self.size(&key).await? {
                out.push(ObjectInfo { key, size, etag: None });
            }
        }
        Ok(out)
    }
    /// The S3 bucket and key prefix of this target, for services that write to it
    /// themselves (RDS exports); `None` for a local directory.
    fn s3_location(&self) -> Option<(String, String)> {
        None
    }
    /// The unfinished multipart upload of `key`, if any (the newest).
    async fn find_upload(&self, key: &str) -> Result<Option<String>, PortError>;
    /// Starts a multipart upload of `key` with CRC32C part checksums; returns its id.
    async fn start_upload(&self, key: &str) -> Result<String, PortError>;
    /// The parts uploaded so far.
    async fn list_parts(&self, key: &str, upload: &str) -> Result<Vec<StoredPart>, PortError>;
    /// Uploads part `number`, which starts at byte `offset` of the object; `crc32c` is the
    /// base64 CRC32C of `data` (big-endian), checked by the store.
    async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        offset: u64,
        data: bytes::Bytes,
        crc32c: &str,
    ) -> Result<StoredPart, PortError>;
    /// Assembles the parts, in order, into the object.
    async fn complete_upload(&self, key: &str, upload: &str, parts: &[StoredPart]) -> Result<(), PortError>;
    /// Abandons an upload and frees its parts.
    async fn abort_upload(&self, key: &str, upload: &str) -> Result<(), PortError>;
}

/// An RDS DB snapshot, as much as a dump needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSnapshotInfo {
    /// The snapshot identifier.
    pub id: String,
    /// `Engine` (`postgres`, `mysql`, `mariadb`, …).
    pub engine: String,
    /// `EngineVersion`.
    pub engine_version: String,
    /// `MasterUsername`.
    pub master_user: String,
    /// `Status` (`available` when it can be restored).
    pub status: String,
    /// `DBInstanceIdentifier`: the instance it is of.
    pub source: String,
}

/// A temporary DB instance, as `DescribeDBInstances` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInstanceInfo {
    /// `DBInstanceStatus`, lowercase.
    pub status: String,
    /// `Endpoint.Address` and `Endpoint.Port`, once it has one.
    pub endpoint: Option<(String, u16)>,
    /// Its tags.
    pub tags: Tags,
}

/// How to restore a temporary instance (or cluster) for a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreInstance {
    /// The snapshot.
    pub snapshot: String,
    /// The snapshot's engine (`Engine`: required to restore a cluster and to add its
    /// instance).
    pub engine: String,
    /// The new instance's identifier (and the new cluster's, for a cluster snapshot).
    pub instance: String,
    /// `DBInstanceClass`.
    pub class: String,
    /// `DBSubnetGroupName`, if configured.
    pub subnet_group: Option<String>,
    /// `VpcSecurityGroupIds`, if configured.
    pub security_group: Option<String>,
    /// Tags given at creation (the temporary tags).
    pub tags: Tags,
}

/// Temporary DB instances for dumps (RDS; `src/aws/rds_dumps.rs`).
#[async_trait]
pub trait DumpInstances: Send + Sync {
    /// The region.
    fn region(&self) -> &str;
    /// The DB snapshot `id`, if it exists.
    async fn snapshot(&self, id: &str) -> Result<Option<DbSnapshotInfo>, PortError>;
    /// Restores a new instance: not publicly accessible, no deletion protection, tagged at
    /// creation (`AlreadyExists` when the name is taken).
    async fn restore(&self, request: &RestoreInstance) -> Result<(), PortError>;
    /// The instance `id`, if it exists.
    async fn instance(&self, id: &str) -> Result<Option<DbInstanceInfo>, PortError>;
    /// Sets the master password and turns automated backups off, applied immediately.
    async fn set_master_password(&self, id: &str, password: &str) -> Result<(), PortError>;
    /// Deletes the instance: no final snapshot, automated backups deleted.
    async fn delete(&self, id: &str) -> Result<(), PortError>;
    /// Instances whose identifier starts with `prefix`, with their tags.
    async fn named(&self, prefix: &str) -> Result<Vec<(String, Tags)>, PortError>;
    /// The DB cluster snapshot `id`, if it exists (`source`: the cluster it is of).
    async fn cluster_snapshot(&self, id: &str) -> Result<Option<DbSnapshotInfo>, PortError>;
    /// Restores a new cluster named `request.instance` (`RestoreDBClusterFromSnapshot`): no
    /// deletion protection, tagged at creation (`AlreadyExists` when the name is taken).
    async fn restore_cluster(&self, request: &RestoreInstance) -> Result<(), PortError>;
    /// Creates the instance `request.instance` in the cluster of the same name
    /// (`CreateDBInstance`): not publicly accessible, tagged at creation.
    async fn add_instance(&self, request: &RestoreInstance) -> Result<(), PortError>;
    /// The cluster `id`, if it exists (`endpoint`: its writer endpoint).
    async fn cluster(&self, id: &str) -> Result<Option<DbInstanceInfo>, PortError>;
    /// Sets the cluster's master password, applied immediately.
    async fn set_cluster_password(&self, id: &str, password: &str) -> Result<(), PortError>;
    /// Deletes the cluster without a final snapshot (its instances must be deleting).
    async fn delete_cluster(&self, id: &str) -> Result<(), PortError>;
    /// Clusters whose identifier starts with `prefix`, with their tags.
    async fn clusters_named(&self, prefix: &str) -> Result<Vec<(String, Tags)>, PortError>;
    /// The tags of the RDS resource `arn` (a DB instance, cluster or snapshot), if it exists.
    async fn tags(&self, arn: &str) -> Result<Option<Tags>, PortError>;
}

/// Secrets kept while a temporary resource lives (SSM Parameter Store SecureStrings).
#[async_trait]
pub trait Secrets: Send + Sync {
    /// Stores (or overwrites) `name`, encrypted with `kms_key` (the account's default key
    /// when `None`).
    async fn put(&self, name: &str, value: &str, kms_key: Option<&str>) -> Result<(), PortError>;
    /// The value of `name`, decrypted, if it exists.
    async fn get(&self, name: &str) -> Result<Option<String>, PortError>;
    /// Deletes `name` (absent is fine).
    async fn delete(&self, name: &str) -> Result<(), PortError>;
    /// Every name under `path` (recursively).
    async fn under(&self, path: &str) -> Result<Vec<String>, PortError>;
}

/// A temporary EBS volume, as `DescribeVolumes` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// `vol-…`.
    pub id: String,
    /// `State`, lowercase.
    pub state: String,
    /// Its tags.
    pub tags: Tags,
    /// Its attachment, if any: the instance and the attachment's state (lowercase).
    pub attachment: Option<(String, String)>,
}

/// Temporary EBS volumes made from snapshots (the restore actor's AWS side), in one region.
#[async_trait]
pub trait TempVolumes: Send + Sync {
    /// Creates a gp3 volume from `snapshot` in `zone`, tagged `tags` at creation; its id.
    async fn create(&self, snapshot: &str, zone: &str, tags: &Tags) -> Result<String, PortError>;
    /// The volumes whose `Name` tag is `name`.
    async fn named(&self, name: &str) -> Result<Vec<VolumeInfo>, PortError>;
    /// The volumes tagged temporary by `deployment`.
    async fn temporary(&self, deployment: &str) -> Result<Vec<VolumeInfo>, PortError>;
    /// The device names (`/dev/sdf`, …) `instance` has in use.
    async fn device_names(&self, instance: &str) -> Result<Vec<String>, PortError>;
    /// Attaches `volume` to `instance` as `device` (`AlreadyExists` when the name is taken).
    async fn attach(&self, volume: &str, instance: &str, device: &str) -> Result<(), PortError>;
    /// Detaches `volume` from `instance`.
    async fn detach(&self, volume: &str, instance: &str) -> Result<(), PortError>;
    /// Deletes `volume` (`NotFound` when it is gone).
    async fn delete(&self, volume: &str) -> Result<(), PortError>;
}

/// The instance bunker runs on (the instance metadata service, IMDSv2).
#[async_trait]
pub trait ThisInstance: Send + Sync {
    /// Its instance id and availability zone.
    async fn identity(&self) -> Result<(String, String), PortError>;
}
