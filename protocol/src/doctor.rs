//! `bunker doctor`: what a configuration asks to be checked, and the verdicts on what AWS and
//! the host answered. Every check is a row — OK, WARN or FAIL — with the fix for anything
//! that is not OK; any FAIL makes the command exit 1.
//!
//! The gathering is `src/doctor.rs` (AWS calls, child processes); everything here is a pure
//! function of the facts, so each verdict is unit-tested without AWS.

use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::ResourceKind;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but not as a production deployment should (or not checkable).
    Warn,
    /// Will fail when the service needs it.
    Fail,
}

impl Status {
    /// `OK`, `WARN` or `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// What was checked, e.g. `queue serve.queue_url` or `bucket archive encryption`.
    pub check: String,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (set unless OK).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Row {
    /// A passing check.
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Row {
        Row { check: check.into(), status: Status::Ok, detail: detail.into(), fix: None }
    }

    /// A warning with its fix.
    pub fn warn(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Row {
        Row { check: check.into(), status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }

    /// A failure with its fix.
    pub fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Row {
        Row { check: check.into(), status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// Every row, in the order checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The rows.
    pub rows: Vec<Row>,
}

impl Report {
    /// Whether any row failed (the command exits 1).
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.status == Status::Fail)
    }

    /// The rows as an aligned text table; each fix on its own indented line below its row.
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.check.chars().count()).max().unwrap_or(5).max(5);
        let mut out = format!("{:<6}{:<width$}  DETAIL\n", "", "CHECK");
        for r in &self.rows {
            out.push_str(&format!("{:<6}{:<width$}  {}\n", r.status.label(), r.check, r.detail));
            if let Some(fix) = &r.fix {
                out.push_str(&format!("{:<6}{:<width$}  fix: {fix}\n", "", ""));
            }
        }
        let count = |s: Status| self.rows.iter().filter(|r| r.status == s).count();
        out.push_str(&format!(
            "{} OK, {} WARN, {} FAIL\n",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail)
        ));
        out
    }
}

/// What a KMS key in the config is for (decides who must be able to use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// `dr_kms_keys`: DR copies in that region are encrypted under it.
    Dr,
    /// `share_kms_keys`: shared backups are re-encrypted under it; the share accounts use it.
    Share,
    /// `pull_kms_keys`: pulled copies are encrypted under it.
    Pull,
    /// `export.kms_key`: RDS encrypts exports under it.
    Export,
}

impl KeyUse {
    /// The config key that names such keys.
    pub fn setting(self) -> &'static str {
        match self {
            KeyUse::Dr => "dr_kms_keys",
            KeyUse::Share => "share_kms_keys",
            KeyUse::Pull => "pull_kms_keys",
            KeyUse::Export => "export.kms_key",
        }
    }

    /// The function whose role uses the key (and so must be able to read it).
    pub fn function(self) -> crate::roles::Function {
        match self {
            KeyUse::Dr | KeyUse::Share | KeyUse::Pull => crate::roles::Function::Replication,
            KeyUse::Export => crate::roles::Function::Export,
        }
    }
}

/// One thing to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Credentials resolve to an account.
    Credentials,
    /// The role of `roles.<function>` can be assumed.
    Role(crate::roles::Function),
    /// The region answers (the service regions and the DR regions).
    Region(String),
    /// `serve.queue_url` (with the dead-letter queue it should redrive to).
    Queue {
        /// The queue.
        url: String,
        /// `serve.dead_letter_queue_url`.
        dead_letter: Option<String>,
    },
    /// `serve.dead_letter_queue_url`.
    DeadLetterQueue(String),
    /// An SNS topic and the setting naming it.
    Topic {
        /// `sns_topic`, `error_sns_topic` or `status_sns_topic`.
        setting: &'static str,
        /// The topic ARN.
        arn: String,
    },
    /// `serve.lease_table`.
    LeaseTable(String),
    /// No other install uses this deployment id with a different configuration.
    Deployment,
    /// An AWS Backup vault of `export.vaults`.
    Vault {
        /// Region.
        region: String,
        /// Vault name.
        name: String,
    },
    /// `export.to`'s bucket.
    Bucket {
        /// Region of the service.
        region: String,
        /// Bucket name.
        bucket: String,
    },
    /// A KMS key from the config.
    Key {
        /// The region it must be in.
        region: String,
        /// Id, ARN or alias.
        key: String,
        /// What it is for.
        use_: KeyUse,
    },
    /// `events.bus` (in the service's first region unless an ARN names another).
    EventBus(String),
    /// A dump tool on `PATH` (`export.rds_format = dump`).
    DumpTool(&'static str),
    /// A dry run of today's create-backups for a kind.
    CreateDryRun(ResourceKind),
    /// What the served kinds cannot do with this config ([`limit_rows`]).
    Limits,
}

/// What `config` calls for, given the regions the service works in.
pub fn probes(config: &Config, regions: &[String]) -> Vec<Probe> {
    let mut out = vec![Probe::Credentials];
    out.extend(config.roles.keys().map(|f| Probe::Role(*f)));
    let mut all_regions: Vec<&String> = regions.iter().chain(&config.replication.dr_regions).collect();
    all_regions.dedup();
    out.extend(all_regions.into_iter().map(|r| Probe::Region(r.clone())));
    let serve = &config.serve;
    if let Some(url) = &serve.queue_url {
        out.push(Probe::Queue { url: url.clone(), dead_letter: serve.dead_letter_queue_url.clone() });
    }
    if let Some(url) = &serve.dead_letter_queue_url {
        out.push(Probe::DeadLetterQueue(url.clone()));
    }
    let topics = [
        ("sns_topic", &config.sns_topic),
        ("error_sns_topic", &config.error_sns_topic),
        ("status_sns_topic", &config.status_sns_topic),
    ];
    for (setting, arn) in topics {
        out.extend(arn.iter().map(|arn| Probe::Topic { setting, arn: arn.clone() }));
    }
    if let Some(t) = &serve.lease_table {
        out.push(Probe::LeaseTable(t.clone()));
    }
    out.push(Probe::Deployment);
    let home = regions.first().cloned().unwrap_or_default();
    for name in &config.export_vaults {
        out.push(Probe::Vault { region: home.clone(), name: name.clone() });
    }
    if let Some(bucket) = config.export_to.as_deref().and_then(s3_bucket) {
        out.push(Probe::Bucket { region: home.clone(), bucket: bucket.to_string() });
    }
    out.extend(key_probes(config, &home));
    out.extend(config.events_bus.iter().map(|b| Probe::EventBus(b.clone())));
    if config.export_rds_format == crate::vault::RdsFormat::Dump {
        out.extend(["pg_dump", "mariadb-dump"].map(Probe::DumpTool));
    }
    out.extend(serve.kinds.iter().map(|k| Probe::CreateDryRun(*k)));
    out.push(Probe::Limits);
    out
}

/// Warnings for what a served kind cannot do as configured: more share accounts than a
/// backup of the kind can be shared with, several DR regions for a kind a cluster setting
/// copies to one region.
pub fn limit_rows(config: &Config) -> Vec<Row> {
    let r = &config.replication;
    let mut rows = Vec::new();
    for kind in &config.serve.kinds {
        let check = format!("limits {kind}");
        if let Some(max) = kind.max_share_accounts().filter(|m| r.share_accounts.len() > *m) {
            let left: Vec<&str> = r.share_accounts[max..].iter().map(String::as_str).collect();
            rows.push(Row::warn(
                check.clone(),
                format!("a {kind} backup can be shared with {max} accounts; left out: {}", left.join(", ")),
                format!("share {kind} backups with at most {max} accounts (share_accounts lists them in order)"),
            ));
        }
        if !kind.copies_per_backup() && r.dr_regions.len() > 1 {
            rows.push(Row::warn(
                check,
                format!(
                    "a {kind} cluster copies its snapshots to one region: {} only, not {}",
                    r.dr_regions[0],
                    r.dr_regions[1..].join(", ")
                ),
                format!("list the region {kind} copies should go to first in dr_regions"),
            ));
        }
    }
    rows
}

fn key_probes(config: &Config, home: &str) -> Vec<Probe> {
    let r = &config.replication;
    let sets = [(&r.dr_kms_keys, KeyUse::Dr), (&r.share_kms_keys, KeyUse::Share), (&r.pull_kms_keys, KeyUse::Pull)];
    let mut out: Vec<Probe> = sets
        .into_iter()
        .flat_map(|(map, use_)| {
            map.iter().map(move |(region, key)| Probe::Key { region: region.clone(), key: key.clone(), use_ })
        })
        .collect();
    if let Some(key) = &config.export_kms_key {
        out.push(Probe::Key { region: home.to_string(), key: key.clone(), use_: KeyUse::Export });
    }
    out
}

/// The bucket of an `s3://bucket/prefix` target.
pub fn s3_bucket(target: &str) -> Option<&str> {
    let rest = target.strip_prefix("s3://")?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|b| !b.is_empty())
}

/// What SQS said about a queue (`GetQueueAttributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueFacts {
    /// `QueueArn`.
    pub arn: String,
    /// The `deadLetterTargetArn` of its `RedrivePolicy`.
    pub redrive_to: Option<String>,
    /// SSE-KMS or SSE-SQS is on.
    pub encrypted: bool,
}

/// The verdict on the event queue; `dead_letter_arn` is the configured DLQ's ARN, if known.
pub fn queue_row(facts: &QueueFacts, dead_letter_arn: Option<&str>) -> Row {
    let check = "queue serve.queue_url";
    match (&facts.redrive_to, dead_letter_arn) {
        (None, _) => {
            return Row::warn(
                check,
                format!("{}: no redrive policy: a message that keeps failing is retried forever", facts.arn),
                "give the queue a RedrivePolicy to the dead-letter queue (the CloudFormation stack does)",
            )
        }
        (Some(to), Some(dlq)) if to != dlq => {
            return Row::warn(
                check,
                format!("{}: redrives to {to}, not to serve.dead_letter_queue_url ({dlq})", facts.arn),
                "point the RedrivePolicy and serve.dead_letter_queue_url at the same queue",
            )
        }
        _ => {}
    }
    if !facts.encrypted {
        return Row::warn(
            check,
            format!("{}: not encrypted at rest", facts.arn),
            "turn on SqsManagedSseEnabled or KmsMasterKeyId",
        );
    }
    Row::ok(check, format!("{} (encrypted, redrive to the dead-letter queue)", facts.arn))
}

/// What S3 said about the export bucket. Each fact is the answer or the error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketFacts {
    /// `HeadBucket` with `ExpectedBucketOwner`: `Err` when S3 refused (another owner, or none).
    pub owner: Result<(), String>,
    /// Default encryption: (algorithm, key id or ARN, S3 Bucket Key on).
    pub encryption: Result<Option<(String, Option<String>, bool)>, String>,
    /// Versioning is `Enabled`.
    pub versioning: Result<bool, String>,
    /// Default Object Lock retention: (mode, days); `None` = no Object Lock or no default.
    pub object_lock: Result<Option<(String, u32)>, String>,
    /// Days after which a lifecycle rule aborts incomplete multipart uploads, if any.
    pub abort_incomplete_days: Result<Option<u32>, String>,
    /// A multipart upload could be started (and was aborted at once).
    pub writable: Result<(), String>,
}

/// What the config expects of the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketExpect {
    /// The account that must own it.
    pub owner: String,
    /// `export.kms_key`, if set: the bucket's default key should be it.
    pub kms_key: Option<String>,
    /// `export.object_lock_days`.
    pub object_lock_days: u32,
}

/// The verdicts on the export bucket, one row per property.
pub fn bucket_rows(bucket: &str, expect: &BucketExpect, facts: &BucketFacts) -> Vec<Row> {
    let check = |what: &str| format!("bucket {bucket} {what}");
    let unreadable = |what: &str, action: &str, e: &String| {
        Row::fail(check(what), format!("cannot read it: {e}"), format!("allow {action} on arn:aws:s3:::{bucket}"))
    };
    let owner = match &facts.owner {
        Ok(()) => Row::ok(check("owner"), format!("owned by {}", expect.owner)),
        Err(e) => Row::fail(
            check("owner"),
            format!("not owned by {} (or not reachable): {e}", expect.owner),
            "use a bucket this account owns, or set export.bucket_owner to its owner's account",
        ),
    };
    let mut rows = vec![owner];
    rows.push(match &facts.encryption {
        Err(e) => unreadable("encryption", "s3:GetEncryptionConfiguration", e),
        Ok(enc) => encryption_row(check("encryption"), enc.as_ref(), expect.kms_key.as_deref()),
    });
    rows.push(match (&facts.object_lock, &facts.versioning) {
        (Err(e), _) => unreadable("object lock", "s3:GetBucketObjectLockConfiguration", e),
        (_, Err(e)) => unreadable("versioning", "s3:GetBucketVersioning", e),
        (Ok(lock), Ok(versioned)) => lock_row(check("object lock"), lock.as_ref(), *versioned, expect.object_lock_days),
    });
    rows.push(match &facts.abort_incomplete_days {
        Err(e) => unreadable("lifecycle", "s3:GetLifecycleConfiguration", e),
        Ok(Some(d)) => Row::ok(check("lifecycle"), format!("incomplete multipart uploads aborted after {d} days")),
        Ok(None) => Row::warn(
            check("lifecycle"),
            "no rule aborts incomplete multipart uploads: parts of an interrupted export are billed until removed",
            "add a lifecycle rule with AbortIncompleteMultipartUpload (DaysAfterInitiation 7)",
        ),
    });
    rows.push(match &facts.writable {
        Ok(()) => Row::ok(check("write"), "a multipart upload started and was aborted"),
        Err(e) => Row::fail(
            check("write"),
            format!("cannot start an upload: {e}"),
            format!("allow s3:PutObject and s3:AbortMultipartUpload on arn:aws:s3:::{bucket}/*"),
        ),
    });
    rows
}

fn encryption_row(check: String, enc: Option<&(String, Option<String>, bool)>, want: Option<&str>) -> Row {
    let Some((algorithm, key, bucket_key)) = enc else {
        return Row::warn(check, "no default encryption", "set SSE-KMS with a customer key and S3 Bucket Key");
    };
    if !algorithm.starts_with("aws:kms") {
        return Row::warn(
            check,
            format!("{algorithm} (S3-managed keys): who may read exports is decided by bucket policy alone"),
            "set SSE-KMS with a customer key (the CloudFormation stack's archive key) and S3 Bucket Key",
        );
    }
    let key_text = key.as_deref().unwrap_or("the AWS managed key aws/s3");
    if let Some(want) = want {
        if !key.as_deref().is_some_and(|k| same_key(k, want)) {
            return Row::fail(
                check,
                format!("{algorithm} under {key_text}, not export.kms_key ({want})"),
                "make the bucket's default key export.kms_key, or set export.kms_key to the bucket's key",
            );
        }
    }
    if !bucket_key {
        return Row::warn(
            check,
            format!("{algorithm} under {key_text} without S3 Bucket Key: one KMS request per object part"),
            "turn on BucketKeyEnabled",
        );
    }
    Row::ok(check, format!("{algorithm} under {key_text}, S3 Bucket Key on"))
}

/// Whether two key references name the same key (an ARN and its bare id do).
fn same_key(a: &str, b: &str) -> bool {
    let tail = |k: &str| k.rsplit('/').next().unwrap_or(k).to_string();
    a == b || (tail(a) == tail(b) && !tail(a).is_empty())
}

fn lock_row(check: String, lock: Option<&(String, u32)>, versioned: bool, want_days: u32) -> Row {
    match lock {
        Some((mode, days)) if *days >= want_days => {
            Row::ok(check, format!("{mode} {days} days by default: exports cannot be deleted or overwritten sooner"))
        }
        Some((mode, days)) => Row::fail(
            check,
            format!("{mode} {days} days by default, shorter than export.object_lock_days ({want_days})"),
            "raise the bucket's default retention (it can only be raised in COMPLIANCE mode)",
        ),
        None if want_days > 0 => Row::fail(
            check,
            format!("no default Object Lock retention; export.object_lock_days is {want_days}"),
            "create the bucket with Object Lock (the CloudFormation stack's ObjectLockMode) and a default retention",
        ),
        None if !versioned => Row::warn(
            check,
            "no Object Lock and no versioning: an export deleted or overwritten is gone",
            "enable versioning, or Object Lock with a default retention (set export.object_lock_days to require it)",
        ),
        None => Row::ok(check, "no Object Lock (versioning on); export.object_lock_days is 0"),
    }
}

/// What KMS said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    /// Its ARN.
    pub arn: String,
    /// `KeyState` (`Enabled`, `Disabled`, `PendingDeletion`, …).
    pub state: String,
    /// The default key policy (JSON), if this role may read it.
    pub policy: Option<String>,
    /// Grants: (grantee principal, operations).
    pub grants: Vec<(String, Vec<String>)>,
}

/// The operations an account needs on a key to copy a backup encrypted under it.
pub const SHARED_KEY_OPERATIONS: [&str; 3] = ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"];

/// The verdict on one configured key; `share_accounts` must be able to use share keys.
pub fn key_row(region: &str, use_: KeyUse, facts: &KeyFacts, share_accounts: &[String]) -> Row {
    let check = format!("key {}.{region}", use_.setting());
    if facts.state != "Enabled" {
        return Row::fail(
            check,
            format!("{} is {}", facts.arn, facts.state),
            format!("enable the key, or name an enabled key in {}", use_.setting()),
        );
    }
    if let Some(key_region) = facts.arn.split(':').nth(3).filter(|r| !r.is_empty() && *r != region) {
        return Row::fail(
            check,
            format!("{} is in {key_region}, not {region}", facts.arn),
            format!("name a key of {region} in {}", use_.setting()),
        );
    }
    if use_ != KeyUse::Share {
        return Row::ok(check, format!("{} enabled", facts.arn));
    }
    let missing: Vec<&String> = share_accounts.iter().filter(|a| !account_may_use(facts, a)).collect();
    match (missing.is_empty(), &facts.policy) {
        (true, _) => Row::ok(check, format!("{} enabled; every share account may use it", facts.arn)),
        (false, None) => Row::warn(
            check,
            format!("{} enabled; its key policy is not readable here, so the share accounts are unchecked", facts.arn),
            "allow kms:GetKeyPolicy on the key to this role",
        ),
        (false, Some(_)) => Row::fail(
            check,
            format!(
                "{}: {} may not use it ({}) by key policy or grant",
                facts.arn,
                join(&missing),
                SHARED_KEY_OPERATIONS.join(", ")
            ),
            "add the share accounts to the key policy (the CloudFormation stack's ShareKey does)",
        ),
    }
}

fn join(items: &[&String]) -> String {
    items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// Whether `account` may perform every [`SHARED_KEY_OPERATIONS`] by the policy or a grant.
pub fn account_may_use(facts: &KeyFacts, account: &str) -> bool {
    SHARED_KEY_OPERATIONS.iter().all(|op| {
        facts.policy.as_deref().is_some_and(|p| policy_allows(p, account, op))
            || facts.grants.iter().any(|(who, ops)| {
                principal_is(who, account) && ops.iter().any(|o| action_matches(&format!("kms:{o}"), op))
            })
    })
}

/// Whether an `Allow` statement of a key policy lets `account` (its root or any of its
/// principals) perform `action`. Statements with conditions count as allowing: doctor checks
/// who is named, not the conditions a request must meet.
pub fn policy_allows(policy: &str, account: &str, action: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(policy) else { return false };
    let statements = match &doc["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => return false,
    };
    statements.iter().any(|s| {
        s["Effect"] == "Allow"
            && strings(&s["Action"]).iter().any(|a| action_matches(a, action))
            && principals(&s["Principal"]).iter().any(|p| p == "*" || principal_is(p, account))
    })
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => vec![],
    }
}

fn principals(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Object(m) => m.get("AWS").map(strings).unwrap_or_default(),
        _ => vec![],
    }
}

fn principal_is(principal: &str, account: &str) -> bool {
    principal == account || principal.split(':').nth(4) == Some(account)
}

/// IAM action matching: case-insensitive, `*` at the end matches any rest.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    match p.strip_suffix('*') {
        Some(prefix) => a.starts_with(prefix),
        None => p == a,
    }
}

/// The record an install leaves in the lease table under its deployment id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRecord {
    /// [`fingerprint`] of the config that wrote it.
    pub fingerprint: String,
    /// Host that wrote it.
    pub host: String,
    /// When (RFC 3339).
    pub seen: String,
}

/// The lease-table key of a deployment's install record.
pub fn install_key(deployment: &str) -> String {
    format!("install#{deployment}")
}

/// A digest of what makes two installs the same deployment: every effective setting except
/// those that legitimately differ between instances of one deployment (listen address, device
/// directory, one-run narrowing), as `key=value` parts of [`crate::dump_plan::stable_hash`], in hex.
pub fn fingerprint(config: &Config) -> String {
    const PER_HOST: [&str; 4] = ["serve.listen", "export.device_dir", "select", "retention"];
    let parts: Vec<String> = config
        .effective
        .iter()
        .filter(|s| !PER_HOST.contains(&s.key.name()))
        .map(|s| format!("{}={}", s.key.name(), s.value))
        .collect();
    format!("{:016x}", crate::dump_plan::stable_hash(&parts.iter().map(String::as_str).collect::<Vec<_>>()))
}

/// How long another host's record under this deployment id counts as a live install: a
/// running `bunker serve` refreshes its record every [`INSTALL_RECORD_REFRESH_MINUTES`], so a
/// record older than this is of an install that is gone (a replaced instance).
pub const INSTALL_RECORD_FRESH_MINUTES: i64 = 60;

/// How often `bunker serve` refreshes its install record.
pub const INSTALL_RECORD_REFRESH_MINUTES: u64 = 15;

/// Whether `record` was written within [`INSTALL_RECORD_FRESH_MINUTES`] of `now`.
pub fn is_fresh(record: &InstallRecord, now: jiff::Timestamp) -> bool {
    record
        .seen
        .parse::<jiff::Timestamp>()
        .is_ok_and(|t| now.duration_since(t) < jiff::SignedDuration::from_mins(INSTALL_RECORD_FRESH_MINUTES))
}

/// Whether this install may write its record over `found`: none yet, its own (a changed
/// config included), or a gone install's.
pub fn may_record(mine: &InstallRecord, found: Option<&InstallRecord>, now: jiff::Timestamp) -> bool {
    found.is_none_or(|r| r.host == mine.host || !is_fresh(r, now))
}

/// The verdict on the deployment id: `found` is what the lease table held under it, `mine`
/// this install's record. A record of this host is this install's own (a changed config
/// included); another host with the same fingerprint is another instance of this deployment;
/// another host with another configuration is a clash while its record is fresh.
pub fn deployment_row(id: &str, mine: &InstallRecord, found: Option<&InstallRecord>, now: jiff::Timestamp) -> Row {
    let check = "deployment id";
    let r = match found {
        None => return Row::ok(check, format!("{id}: no other install recorded (recorded this one)")),
        Some(r) if r.host == mine.host => return Row::ok(check, format!("{id}: recorded by this host")),
        Some(r) if r.fingerprint == mine.fingerprint => {
            return Row::ok(check, format!("{id}: same configuration as the install on {} ({})", r.host, r.seen))
        }
        Some(r) if !is_fresh(r, now) => {
            return Row::ok(
                check,
                format!(
                    "{id}: the install on {} (another configuration) was last seen {}: gone, replaced",
                    r.host, r.seen
                ),
            )
        }
        Some(r) => r,
    };
    Row::fail(
        check,
        format!("{id} is also used by the install on {} with a different configuration (seen {})", r.host, r.seen),
        format!(
            "give this install its own `deployment` id, or the other one's configuration (two configurations under \
             one id delete each other's backups by their own retention); if that install is gone, its record \
             ({}) lapses {INSTALL_RECORD_FRESH_MINUTES} minutes after it was last seen",
            install_key(id)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(policy: Option<&str>, grants: Vec<(String, Vec<String>)>) -> KeyFacts {
        KeyFacts {
            arn: "arn:aws:kms:eu-west-1:111111111111:key/k1".into(),
            state: "Enabled".into(),
            policy: policy.map(String::from),
            grants,
        }
    }

    const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:root"},"Action":"kms:*","Resource":"*"},
        {"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::222222222222:root"]},
         "Action":["kms:Decrypt","kms:DescribeKey","kms:CreateGrant"],"Resource":"*"},
        {"Effect":"Allow","Principal":{"AWS":"333333333333"},"Action":"kms:Decrypt","Resource":"*"},
        {"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*"}]}"#;

    #[test]
    fn a_share_key_must_let_every_share_account_decrypt_describe_and_grant() {
        let accounts = ["222222222222".to_string()];
        let row = key_row("eu-west-1", KeyUse::Share, &key(Some(POLICY), vec![]), &accounts);
        assert_eq!(row.status, Status::Ok, "{row:?}");
        let accounts = ["222222222222".to_string(), "333333333333".to_string()];
        let row = key_row("eu-west-1", KeyUse::Share, &key(Some(POLICY), vec![]), &accounts);
        assert_eq!(row.status, Status::Fail);
        assert!(row.detail.contains("333333333333") && !row.detail.contains("222222222222,"), "{row:?}");
        // A grant covers what the policy does not.
        let grants = vec![("arn:aws:iam::333333333333:root".into(), vec!["DescribeKey".into(), "CreateGrant".into()])];
        let row = key_row("eu-west-1", KeyUse::Share, &key(Some(POLICY), grants), &accounts);
        assert_eq!(row.status, Status::Ok, "{row:?}");
        let row = key_row("eu-west-1", KeyUse::Share, &key(None, vec![]), &accounts);
        assert_eq!(row.status, Status::Warn);
    }

    #[test]
    fn a_key_must_be_enabled_and_in_its_region() {
        let mut facts = key(Some(POLICY), vec![]);
        assert_eq!(key_row("eu-west-1", KeyUse::Dr, &facts, &[]).status, Status::Ok);
        let row = key_row("us-east-1", KeyUse::Dr, &facts, &[]);
        assert_eq!(row.status, Status::Fail);
        assert!(row.detail.contains("eu-west-1") && row.fix.unwrap().contains("dr_kms_keys"));
        facts.state = "PendingDeletion".into();
        let row = key_row("eu-west-1", KeyUse::Pull, &facts, &[]);
        assert!(row.status == Status::Fail && row.detail.contains("PendingDeletion"), "{row:?}");
    }

    fn good_bucket() -> BucketFacts {
        BucketFacts {
            owner: Ok(()),
            encryption: Ok(Some(("aws:kms".into(), Some("arn:aws:kms:us-east-1:1:key/abc".into()), true))),
            versioning: Ok(true),
            object_lock: Ok(Some(("COMPLIANCE".into(), 30))),
            abort_incomplete_days: Ok(Some(7)),
            writable: Ok(()),
        }
    }

    #[test]
    fn bucket_rows_name_each_property_that_does_not_match_the_config() {
        let expect = BucketExpect { owner: "1".into(), kms_key: Some("abc".into()), object_lock_days: 30 };
        let rows = bucket_rows("b", &expect, &good_bucket());
        assert!(rows.iter().all(|r| r.status == Status::Ok), "{rows:#?}");
        let status = |f: BucketFacts, e: &BucketExpect, i: usize| bucket_rows("b", e, &f)[i].status;
        let mut f = good_bucket();
        f.owner = Err("403".into());
        assert_eq!(status(f, &expect, 0), Status::Fail);
        let mut f = good_bucket();
        f.encryption = Ok(Some(("aws:kms".into(), Some("arn:aws:kms:us-east-1:1:key/other".into()), true)));
        assert_eq!(status(f, &expect, 1), Status::Fail);
        let mut f = good_bucket();
        f.encryption = Ok(Some(("AES256".into(), None, false)));
        assert_eq!(status(f, &BucketExpect { kms_key: None, ..expect.clone() }, 1), Status::Warn);
        let mut f = good_bucket();
        f.object_lock = Ok(Some(("GOVERNANCE".into(), 7)));
        assert_eq!(status(f, &expect, 2), Status::Fail);
        let mut f = good_bucket();
        f.object_lock = Ok(None);
        f.versioning = Ok(false);
        assert_eq!(status(f, &BucketExpect { object_lock_days: 0, ..expect.clone() }, 2), Status::Warn);
        let mut f = good_bucket();
        f.abort_incomplete_days = Ok(None);
        assert_eq!(status(f, &expect, 3), Status::Warn);
        let mut f = good_bucket();
        f.writable = Err("AccessDenied".into());
        assert_eq!(status(f, &expect, 4), Status::Fail);
    }

    #[test]
    fn a_queue_without_redrive_or_encryption_is_a_warning() {
        let good = QueueFacts { arn: "q".into(), redrive_to: Some("dlq".into()), encrypted: true };
        assert_eq!(queue_row(&good, Some("dlq")).status, Status::Ok);
        assert_eq!(queue_row(&good, Some("other")).status, Status::Warn);
        assert_eq!(queue_row(&QueueFacts { redrive_to: None, ..good.clone() }, None).status, Status::Warn);
        assert_eq!(queue_row(&QueueFacts { encrypted: false, ..good }, Some("dlq")).status, Status::Warn);
    }

    #[test]
    fn another_configuration_under_the_same_deployment_id_fails_while_its_install_is_live() {
        let now: jiff::Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let rec =
            |f: &str, h: &str, seen: &str| InstallRecord { fingerprint: f.into(), host: h.into(), seen: seen.into() };
        let mine = rec("a", "me", "2026-12-07T12:00:00Z");
        assert_eq!(deployment_row("d", &mine, None, now).status, Status::Ok);
        assert_eq!(
            deployment_row("d", &mine, Some(&rec("a", "other", "2026-12-07T11:50:00Z")), now).status,
            Status::Ok
        );
        // This host's own record with an older configuration: a config change, not a clash.
        assert_eq!(deployment_row("d", &mine, Some(&rec("b", "me", "2026-12-01T00:00:00Z")), now).status, Status::Ok);
        let live = rec("b", "other", "2026-12-07T11:30:00Z");
        let other = deployment_row("d", &mine, Some(&live), now);
        assert!(other.status == Status::Fail && other.fix.unwrap().contains("install#d"));
        assert!(!may_record(&mine, Some(&live), now), "a live install's record is not overwritten");
        // A replaced instance's record lapses: the new one is no clash and takes the record.
        let gone = rec("b", "other", "2026-12-07T10:30:00Z");
        assert_eq!(deployment_row("d", &mine, Some(&gone), now).status, Status::Ok);
        assert!(may_record(&mine, Some(&gone), now) && may_record(&mine, None, now));
    }

    #[test]
    fn the_table_puts_each_fix_under_its_row_and_counts() {
        let report = Report {
            rows: vec![Row::ok("credentials", "account 1"), Row::fail("queue serve.queue_url", "missing", "create it")],
        };
        let t = report.table();
        assert!(t.contains("OK    credentials") && t.contains("FAIL  queue serve.queue_url  missing"), "{t}");
        assert!(t.contains("fix: create it") && t.ends_with("1 OK, 0 WARN, 1 FAIL\n"), "{t}");
        assert!(report.failed());
    }

    #[test]
    fn s3_targets_name_their_bucket() {
        assert_eq!(s3_bucket("s3://b/p/q"), Some("b"));
        assert_eq!(s3_bucket("s3://b"), Some("b"));
        assert_eq!(s3_bucket("file:///x"), None);
    }

    #[test]
    fn redshift_limits_are_warnings_only_when_they_bite() {
        let mut c = crate::config::resolve(&crate::config::defaults()).unwrap();
        assert!(limit_rows(&c).is_empty());
        c.replication.share_accounts = (0..21).map(|i| format!("{i:012}")).collect();
        c.replication.dr_regions = vec!["eu-west-1".into(), "us-west-2".into()];
        let rows = limit_rows(&c);
        assert_eq!(rows.len(), 2, "{rows:#?}");
        assert!(rows.iter().all(|r| r.status == Status::Warn && r.check == "limits redshift"));
        assert!(rows[0].detail.contains("000000000020"), "{rows:#?}");
        c.serve.kinds = vec![ResourceKind::Ebs];
        assert!(limit_rows(&c).is_empty());
    }
}
