//! The configuration schema: canonical keys, layers with provenance, strict parsing.
//!
//! Layers, lowest to highest: defaults < config file < environment < CLI flags < resource
//! tags. Every layer is a list of [`Setting`]s (key, raw string, where it came from); the
//! highest setting of each key wins and is parsed strictly. An invalid value is an error that
//! names the key, the value, where it came from and what is accepted.
//!
//! Reading files and the environment is the binary's job; this module only interprets what
//! it is handed.

use std::collections::BTreeMap;
use std::fmt;

use jiff::tz::TimeZone;
use jiff::SignedDuration;
use serde::Serialize;

use crate::retention::{Keep, Policy, RetentionType};
use crate::tags::{self, Tags};

/// What a key's parser gets: the configuration so far (keys are applied in table order, so a
/// key may check one above it) and the raw value; `None` means the value is invalid.
type Parse = fn(&mut Config, &str) -> Option<()>;

struct Spec {
    key: Key,
    name: &'static str,
    shelvery: Option<&'static str>,
    per_resource: bool,
    default: Option<&'static str>,
    accepted: &'static str,
    parse: Parse,
}

const WHOLE: &str = "a whole number from 0 to 100000";
const BOOL: &str = "true or false (also 1 or 0)";
const TOPIC: &str = "an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)";
const DURATION: &str = "a duration such as 30s, 15m, 2h or 1d (a bare number is seconds)";
const CRON: &str = "a 5-field cron expression in UTC such as \"0 1 * * *\", or \"\" to disable";
const SQS_URL: &str = "an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)";

/// The schema, one row per key: the [`Key`] variant, its name, Shelvery's name, whether a
/// resource tag may set it, its default, what it accepts and how it is parsed into
/// [`Config`]. Adding a key is adding a row (and the `Config` field it sets); `config show`
/// and the README's table come from here (`readme_lists_every_key_with_its_default`).
macro_rules! schema {
    ($($variant:ident: $name:literal, $shelvery:expr, $per:expr, $default:expr, $accepted:expr, $parse:expr;)*) => {
        /// A canonical configuration key.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[allow(missing_docs)] // each variant is documented by its row and the README's reference
        pub enum Key {
            $($variant,)*
        }

        const SPECS: &[Spec] = &[
            $(Spec {
                key: Key::$variant,
                name: $name,
                shelvery: $shelvery,
                per_resource: $per,
                default: $default,
                accepted: $accepted,
                parse: $parse,
            },)*
        ];
    };
}

schema! {
    KeepDaily: "keep_daily", Some("shelvery_keep_daily_backups"), true, Some("14"), WHOLE, |c, v| set(&mut c.keep.daily, parse_whole(v));
    KeepWeekly: "keep_weekly", Some("shelvery_keep_weekly_backups"), true, Some("8"), WHOLE, |c, v| set(&mut c.keep.weekly, parse_whole(v));
    KeepMonthly: "keep_monthly", Some("shelvery_keep_monthly_backups"), true, Some("12"), WHOLE, |c, v| set(&mut c.keep.monthly, parse_whole(v));
    KeepYearly: "keep_yearly", Some("shelvery_keep_yearly_backups"), true, Some("10"), WHOLE, |c, v| set(&mut c.keep.yearly, parse_whole(v));
    Timezone: "timezone", None, false, Some("UTC"), "an IANA time zone name such as UTC or Europe/Berlin", |c, v| {
        c.timezone = TimeZone::get(v).ok()?;
        c.timezone_name = v.to_string();
        Some(())
    };
    CustomRetention: "custom_retention", Some("shelvery_custom_retention_types"), false, Some(""),
        "comma-separated NAME:DURATION entries such as hourly:2d or hourly:7200 (seconds); units s, m, h, d, w; NAME of lowercase letters, digits, '_' or '-', not daily/weekly/monthly/yearly",
        |c, v| set(&mut c.custom_retention, parse_custom(v));
    // After custom_retention: a custom type must be defined there.
    Retention: "retention", Some("shelvery_current_retention_type"), false, None, "daily, weekly, monthly, yearly or a name defined in custom_retention", |c, v| {
        if v.is_empty() {
            c.retention = None;
            return Some(());
        }
        let t = RetentionType::from_name(v);
        let known = !matches!(&t, RetentionType::Custom(name) if !c.custom_retention.contains_key(name));
        c.retention = Some(t);
        known.then_some(())
    };
    RdsBackupMode: "rds_backup_mode", Some("shelvery_rds_backup_mode"), true, Some("create-snapshot"), "create-snapshot or copy-automated", |c, v| {
        c.rds_backup_mode = match v {
            "create-snapshot" | "RDS_CREATE_SNAPSHOT" => RdsBackupMode::CreateSnapshot,
            "copy-automated" | "RDS_COPY_AUTOMATED_SNAPSHOT" => RdsBackupMode::CopyAutomated,
            _ => return None,
        };
        Some(())
    };
    Regions: "regions", None, false, None, "comma-separated AWS region names such as us-east-1,eu-west-1", |c, v| set(&mut c.regions, list(v, is_region));
    Select: "select", Some("shelvery_select_entity"), false, None, "one resource id (vol-…, i-…, a DB or cluster identifier)", |c, v| set(&mut c.select, optional(v, |v| !v.contains(char::is_whitespace)));
    CopyTags: "copy_tags", Some("shelvery_copy_resource_tags"), true, Some("true"), BOOL, |c, v| set(&mut c.copy_tags, parse_bool(v));
    ExcludeTagKeys: "exclude_tag_keys", Some("shelvery_exluded_resource_tag_keys"), true, Some(""), "comma-separated tag keys; KEY* matches a prefix", |c, v| set(&mut c.exclude_tag_keys, list(v, |_| true));
    SnsTopic: "sns_topic", Some("shelvery_sns_topic"), false, None, TOPIC, |c, v| set(&mut c.sns_topic, optional(v, is_topic_arn));
    ErrorSnsTopic: "error_sns_topic", Some("shelvery_error_sns_topic"), false, None, TOPIC, |c, v| set(&mut c.error_sns_topic, optional(v, is_topic_arn));
    StatusSnsTopic: "status_sns_topic", Some("shelvery_status_sns_topic"), false, None, TOPIC, |c, v| set(&mut c.status_sns_topic, optional(v, is_topic_arn));
    Deployment: "deployment", None, false, None,
        "1 to 128 characters of letters, digits, '.', '_' or '-'; {account} and {region} are replaced (e.g. \"prod-{account}-{region}\")",
        |c, v| set(&mut c.deployment, optional(v, |v| is_ident(&v.replace("{account}", "a").replace("{region}", "r"), 128)));
    // An empty name keeps the default.
    Name: "name", None, false, Some("bunker"), "1 to 64 characters of letters, digits, '.', '_' or '-'", |c, v| {
        if let Some(n) = optional(v, |v| is_ident(v, 64))? {
            c.name = n;
        }
        Some(())
    };
    CompatShelvery: "compat.shelvery", None, false, Some("false"), BOOL, |c, v| set(&mut c.compat_shelvery, parse_bool(v));
    DrRegions: "dr_regions", Some("shelvery_dr_regions"), false, Some(""), "comma-separated AWS region names to copy backups to, such as us-west-2,eu-central-1", |c, v| set(&mut c.replication.dr_regions, list(v, is_region));
    ShareAccounts: "share_accounts", Some("shelvery_share_aws_account_ids"), false, Some(""), "comma-separated 12-digit AWS account ids to share backups (and their DR copies) with", |c, v| set(&mut c.replication.share_accounts, list(v, is_account));
    DrKmsKeys: "dr_kms_keys", None, false, Some(""), "comma-separated REGION=KEY entries: the KMS key (id, ARN or alias/NAME) that encrypts copies in that DR region", |c, v| set(&mut c.replication.dr_kms_keys, key_map(v));
    KeepDailyDr: "keep_daily_dr", Some("shelvery_keep_daily_backups_dr"), false, None, WHOLE, |c, v| set(&mut c.replication.keep_dr[0], parse_whole(v).map(Some));
    KeepWeeklyDr: "keep_weekly_dr", Some("shelvery_keep_weekly_backups_dr"), false, None, WHOLE, |c, v| set(&mut c.replication.keep_dr[1], parse_whole(v).map(Some));
    KeepMonthlyDr: "keep_monthly_dr", Some("shelvery_keep_monthly_backups_dr"), false, None, WHOLE, |c, v| set(&mut c.replication.keep_dr[2], parse_whole(v).map(Some));
    KeepYearlyDr: "keep_yearly_dr", Some("shelvery_keep_yearly_backups_dr"), false, None, WHOLE, |c, v| set(&mut c.replication.keep_dr[3], parse_whole(v).map(Some));
    ServeQueueUrl: "serve.queue_url", None, false, None, SQS_URL, |c, v| set(&mut c.serve.queue_url, optional(v, is_url));
    ServeDeadLetterQueueUrl: "serve.dead_letter_queue_url", None, false, None, SQS_URL, |c, v| set(&mut c.serve.dead_letter_queue_url, optional(v, is_url));
    ServeLeaseTable: "serve.lease_table", None, false, None, "a DynamoDB table name (3-255 of letters, digits, '.', '_' or '-') with string partition key \"pk\"",
        |c, v| set(&mut c.serve.lease_table, optional(v, |v| v.len() >= 3 && is_ident(v, 255)));
    // An empty address keeps the default.
    ServeListen: "serve.listen", None, false, Some("127.0.0.1:9464"), "HOST:PORT for /healthz and /metrics, such as 127.0.0.1:9464 (port 0 picks a free one)", |c, v| {
        if let Some(a) = optional(v, |v| v.parse::<std::net::SocketAddr>().is_ok())? {
            c.serve.listen = a;
        }
        Some(())
    };
    ServeKinds: "serve.kinds", None, false, Some("ebs,ec2ami,rds,rds-cluster,docdb,redshift"), "comma-separated kinds: ebs, ec2ami, rds, rds-cluster, docdb, redshift", |c, v| {
        c.serve.kinds.clear();
        for k in split_list(v) {
            let kind: crate::ResourceKind = k.parse().ok()?;
            if !c.serve.kinds.contains(&kind) {
                c.serve.kinds.push(kind);
            }
        }
        Some(())
    };
    ServeShutdownDeadline: "serve.shutdown_deadline", None, false, Some("30s"), DURATION, |c, v| set(&mut c.serve.shutdown_deadline, duration(v));
    ServeReconcileInterval: "serve.reconcile_interval", None, false, Some("15m"), DURATION, |c, v| set(&mut c.serve.reconcile_interval, duration(v));
    ServeCheckInterval: "serve.check_interval", None, false, Some("15s"), DURATION, |c, v| set(&mut c.serve.check_interval, duration(v));
    ScheduleCreate: "schedule.create", None, false, Some("0 1 * * *"), CRON, |c, v| set(&mut c.serve.schedule_create, cron(v));
    ScheduleClean: "schedule.clean", None, false, Some("0 2 * * *"), CRON, |c, v| set(&mut c.serve.schedule_clean, cron(v));
    SchedulePull: "schedule.pull", None, false, Some("0 2 * * *"), CRON, |c, v| set(&mut c.serve.schedule_pull, cron(v));
    SourceAccounts: "source_accounts", Some("shelvery_source_aws_account_ids"), false, Some(""), "comma-separated 12-digit AWS account ids whose shared backups this (data-bunker) account pulls in", |c, v| set(&mut c.replication.source_accounts, list(v, is_account));
    PullKmsKeys: "pull_kms_keys", None, false, Some(""), "comma-separated REGION=KEY entries: the bunker's own KMS key that encrypts pulled copies in that region", |c, v| set(&mut c.replication.pull_kms_keys, key_map(v));
    KeepDailyPulled: "keep_daily_pulled", None, false, None, WHOLE, |c, v| set(&mut c.replication.keep_pulled[0], parse_whole(v).map(Some));
    KeepWeeklyPulled: "keep_weekly_pulled", None, false, None, WHOLE, |c, v| set(&mut c.replication.keep_pulled[1], parse_whole(v).map(Some));
    KeepMonthlyPulled: "keep_monthly_pulled", None, false, None, WHOLE, |c, v| set(&mut c.replication.keep_pulled[2], parse_whole(v).map(Some));
    KeepYearlyPulled: "keep_yearly_pulled", None, false, None, WHOLE, |c, v| set(&mut c.replication.keep_pulled[3], parse_whole(v).map(Some));
    ExportTo: "export.to", None, false, None, "s3://bucket/prefix or file:///directory: bunker serve exports every EBS backup an event announces there", |c, v| set(&mut c.export_to, optional(v, is_target));
    ExportAllowedTargets: "export.allowed_targets", None, false, Some(""), "comma-separated s3://bucket/prefix or file:///directory targets that queue export commands may name (besides export.to)", |c, v| set(&mut c.export_allowed_targets, list(v, is_target));
    ExportVaults: "export.vaults", None, false, Some(""), "comma-separated AWS Backup vault names (2-50 letters, digits, '-' or '_'), in each of regions: every completed recovery point there is exported to export.to", |c, v| set(&mut c.export_vaults, list(v, crate::vault::is_vault_name));
    ExportDeleteSource: "export.delete_source", None, false, Some("false"), BOOL, |c, v| set(&mut c.export_delete_source, parse_bool(v));
    ExportSha256: "export.sha256", None, false, Some("false"), "true or false: every archive the service writes also records its whole-image SHA-256 (image_sha256, for sha256sum) beside its BLAKE3 (a second pass over every byte)", |c, v| set(&mut c.export_sha256, parse_bool(v));
    ExportKinds: "export.kinds", None, false, Some("ebs,rds,aurora,dynamodb"), "comma-separated recovery point kinds to export from export.vaults: ebs, rds, aurora, dynamodb", |c, v| {
        let mut kinds = Vec::new();
        for k in split_list(v) {
            let kind = crate::vault::ExportKind::parse(&k)?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        set(&mut c.export_kinds, Some(kinds))
    };
    ExportRetentionTypes: "export.retention_types", None, false, Some(""), "comma-separated retention types (daily, weekly, monthly, yearly or a name defined in custom_retention): bunker serve exports every backup of this deployment of those types (EBS) to export.to", |c, v| {
        let types = list(v, |t| is_ident(t, 64))?;
        let known = types.iter().all(|t| !matches!(RetentionType::from_name(t), RetentionType::Custom(n) if !c.custom_retention.contains_key(&n)));
        c.export_retention_types = types;
        known.then_some(())
    };
    ExportDynamodbMode: "export.dynamodb_mode", None, false, Some("backup"), "backup (restore the backup to a temporary table and archive its items) or pitr (ExportTableToPointInTime at the backup's creation time; needs point-in-time recovery on the table)", |c, v| {
        c.export_dynamodb_mode = match v {
            "backup" => crate::vault::DynamoDbMode::Backup,
            "pitr" => crate::vault::DynamoDbMode::Pitr,
            _ => return None,
        };
        Some(())
    };
    ExportRdsFormat: "export.rds_format", None, true, Some("parquet"), "parquet (RDS's export to Parquet), dump (the engine's own dump tool through a temporary instance or Aurora cluster) or both, for RDS and Aurora recovery points", |c, v| {
        c.export_rds_format = crate::vault::RdsFormat::parse(v)?;
        Some(())
    };
    ExportEbsFormat: "export.ebs_format", None, true, Some("image"), "image (the raw disk, restorable to a snapshot), files (each ext2/3/4 and FAT filesystem as a tar archive with a catalog, read in place through the EBS direct APIs) or both, for EBS backups and recovery points", |c, v| {
        c.export_ebs_format = crate::vault::EbsFormat::parse(v)?;
        Some(())
    };
    ExportScanSegments: "export.scan_segments", None, false, Some("4"), "1 to 16: parallel Scan segments of a DynamoDB backup export (backup mode)", |c, v| set(&mut c.export_scan_segments, parse_whole(v).filter(|n| (1..=16).contains(n)));
    ExportRdsRoleArn: "export.rds_role_arn", None, false, None, "the ARN of the IAM role RDS assumes to write RDS and Aurora exports to export.to's bucket (arn:aws:iam::ACCOUNT:role/NAME)", |c, v| set(&mut c.export_rds_role_arn, optional(v, is_role_arn));
    ExportKmsKey: "export.kms_key", None, false, None, "the customer KMS key (id, ARN or alias/NAME) RDS encrypts RDS and Aurora exports with", |c, v| set(&mut c.export_kms_key, optional(v, |v| !v.contains(char::is_whitespace)));
    ExportDumpInstanceClass: "export.dump_instance_class", None, false, None, "the DB instance class of a temporary dump instance (default: db.t4g.micro, Aurora db.t4g.medium)", |c, v| set(&mut c.export_dump_instance_class, optional(v, |v| v.starts_with("db.") && !v.contains(char::is_whitespace)));
    ExportDumpSubnetGroup: "export.dump_subnet_group", None, false, None, "the DB subnet group temporary dump instances are restored into (default: the account's default VPC)", |c, v| set(&mut c.export_dump_subnet_group, optional(v, |v| !v.is_empty() && !v.contains(char::is_whitespace)));
    ExportDumpSecurityGroup: "export.dump_security_group", None, false, None, "the VPC security group (sg-…) of temporary dump instances: it must let bunker reach the database port", |c, v| set(&mut c.export_dump_security_group, optional(v, |v| v.starts_with("sg-")));
    ExportDeviceDir: "export.device_dir", None, false, Some("/dev/disk/by-id"), "the directory where attached EBS volumes appear by their NVMe serial (nvme-Amazon_Elastic_Block_Store_vol…, made by AWS's udev rules): file-level exports through a temporary volume find its device there, never by a device letter", |c, v| set(&mut c.export_device_dir, Some(v.to_string()).filter(|v| v.starts_with('/')));
    ExportMount: "export.mount", None, false, Some("false"), "true or false: file-level exports of disks holding XFS or Btrfs go through a temporary volume created from the snapshot in this instance's availability zone, attached here and mounted read-only without journal replay (needs CAP_SYS_ADMIN: the systemd drop-in bunker.service.d/mount.conf)", |c, v| set(&mut c.export_mount, parse_bool(v));
    ExportBucketOwner: "export.bucket_owner", None, false, None, "the 12-digit account that owns export.to's bucket (default: this account): every request to the bucket carries it as ExpectedBucketOwner, so S3 refuses a bucket owned by anyone else", |c, v| set(&mut c.export_bucket_owner, optional(v, is_account));
    ExportObjectLockDays: "export.object_lock_days", None, false, Some("0"), "the shortest default Object Lock retention (days) bunker doctor accepts on export.to's bucket; 0: not checked", |c, v| set(&mut c.export_object_lock_days, parse_whole(v));
    RolesLifecycle: "roles.lifecycle", None, false, None, ROLE_FOR_FUNCTION, |c, v| set_role(c, crate::roles::Function::Lifecycle, v);
    RolesReplication: "roles.replication", None, false, None, ROLE_FOR_FUNCTION, |c, v| set_role(c, crate::roles::Function::Replication, v);
    RolesExport: "roles.export", None, false, None, ROLE_FOR_FUNCTION, |c, v| set_role(c, crate::roles::Function::Export, v);
    RolesTemporary: "roles.temporary", None, false, None, ROLE_FOR_FUNCTION, |c, v| set_role(c, crate::roles::Function::Temporary, v);
    EventsBus: "events.bus", None, false, None, "an EventBridge event bus (its name, such as default, or its ARN): bunker puts its outcomes there (bunker Backup Created, Copy Completed, Export Completed/Failed, Run Report)", |c, v| set(&mut c.events_bus, optional(v, is_event_bus));
    ExportTaskPoll: "export.task_poll", None, false, Some("1m"), "how soon bunker first looks at a running RDS or Aurora export task (each look waits twice as long as the last, up to 15 times this): a duration such as 1m", |c, v| set(&mut c.export_task_poll, duration(v));
    SchedulePerKind: "schedule.per_kind", None, false, Some(""),
        "semicolon-separated KIND.ACTION=CRON entries overriding one kind's schedule, such as \"rds.create=30 1 * * *; docdb.clean=\" (ACTION create, clean or pull; an empty CRON disables it for that kind)",
        |c, v| set(&mut c.serve.schedule_per_kind, parse_per_kind(v));
    ShareKmsKeys: "share_kms_keys", None, false, Some(""), "comma-separated REGION=KEY entries: the customer KMS key (granted to the share accounts) under which encrypted backups of that region are shared", |c, v| set(&mut c.replication.share_kms_keys, key_map(v));
}

/// What a `roles.*` key takes.
const ROLE_FOR_FUNCTION: &str = "the ARN of the IAM role bunker assumes for this function's AWS calls (arn:aws:iam::ACCOUNT:role/NAME, with deploy/iam/bunker-FUNCTION-policy.json); unset: the process's own credentials";

/// Stores `roles.<function>` (an empty value unsets it).
fn set_role(c: &mut Config, function: crate::roles::Function, v: &str) -> Option<()> {
    match optional(v, is_role_arn)? {
        Some(arn) => c.roles.insert(function, arn),
        None => c.roles.remove(&function),
    };
    Some(())
}

/// Stores a parsed value; `None` (invalid) stores nothing.
fn set<T>(field: &mut T, parsed: Option<T>) -> Option<()> {
    *field = parsed?;
    Some(())
}

/// An optional string: empty is unset, anything else must pass `ok`.
fn optional(v: &str, ok: fn(&str) -> bool) -> Option<Option<String>> {
    match v {
        "" => Some(None),
        v => ok(v).then(|| Some(v.to_string())),
    }
}

/// A comma-separated list whose every entry passes `ok`.
fn list(v: &str, ok: fn(&str) -> bool) -> Option<Vec<String>> {
    let l = split_list(v);
    l.iter().all(|e| ok(e)).then_some(l)
}

/// `REGION=KEY` entries.
fn key_map(v: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in split_list(v) {
        let (r, key) = entry.split_once('=')?;
        if !is_region(r) || key.is_empty() {
            return None;
        }
        out.insert(r.to_string(), key.to_string());
    }
    Some(out)
}

/// A positive duration.
fn duration(v: &str) -> Option<SignedDuration> {
    parse_duration_secs(v).filter(|n| *n > 0).map(SignedDuration::from_secs)
}

/// A cron schedule; empty disables it.
fn cron(v: &str) -> Option<Option<crate::cron::Cron>> {
    match v.trim() {
        "" => Some(None),
        c => c.parse().ok().map(Some),
    }
}

/// An event bus name (1-256 of letters, digits, `.`, `_`, `-`, `/`) or its ARN.
fn is_event_bus(v: &str) -> bool {
    let name = match v.strip_prefix("arn:") {
        Some(rest) => match rest.split(':').collect::<Vec<_>>()[..] {
            [_partition, "events", region, account, resource] if is_region(region) && is_account(account) => {
                match resource.strip_prefix("event-bus/") {
                    Some(n) => n,
                    None => return false,
                }
            }
            _ => return false,
        },
        None => v,
    };
    (1..=256).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
}

fn is_account(a: &str) -> bool {
    a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())
}

impl Key {
    /// Every key, in the order `config show` prints them.
    pub fn all() -> impl Iterator<Item = Key> {
        SPECS.iter().map(|s| s.key)
    }

    fn spec(self) -> &'static Spec {
        SPECS.iter().find(|s| s.key == self).expect("every key has a spec")
    }

    /// The canonical name (`keep_daily`, `compat.shelvery`).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The environment variable (`BUNKER_KEEP_DAILY`, `BUNKER_COMPAT_SHELVERY`).
    pub fn env_var(self) -> String {
        format!("BUNKER_{}", self.name().replace('.', "_").to_ascii_uppercase())
    }

    /// Shelvery's name for it, accepted from the environment (and from `shelvery:config:` tags
    /// in compat mode).
    pub fn shelvery_name(self) -> Option<&'static str> {
        self.spec().shelvery
    }

    /// Whether a resource tag `bunker:config:<key>` may set it.
    pub fn per_resource(self) -> bool {
        self.spec().per_resource
    }

    /// What values are accepted, for error messages and the README.
    pub fn accepted(self) -> &'static str {
        self.spec().accepted
    }

    /// The default, if the key has one.
    pub fn default_value(self) -> Option<&'static str> {
        self.spec().default
    }

    /// Looks a key up by canonical name.
    pub fn from_name(name: &str) -> Option<Key> {
        SPECS.iter().find(|s| s.name == name).map(|s| s.key)
    }

    /// Looks a key up by Shelvery's name.
    pub fn from_shelvery_name(name: &str) -> Option<Key> {
        SPECS.iter().find(|s| s.shelvery == Some(name)).map(|s| s.key)
    }

    /// The canonical key nearest to a misspelt one, for "did you mean".
    pub fn suggest(name: &str) -> Option<&'static str> {
        SPECS.iter().map(|s| (edit_distance(name, s.name), s.name)).filter(|(d, _)| *d <= 3).min().map(|(_, n)| n)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "layer", rename_all = "kebab-case")]
pub enum Source {
    /// Built-in default.
    Default,
    /// A config file.
    File {
        /// Its path.
        path: String,
    },
    /// An environment variable.
    Env {
        /// Its name.
        var: String,
    },
    /// A command-line flag.
    Cli {
        /// The flag.
        flag: String,
    },
    /// A tag on the resource.
    ResourceTag {
        /// Resource id.
        resource: String,
        /// Tag key.
        tag: String,
    },
    /// A tag recorded on a backup (the resource no longer exists).
    BackupTag {
        /// Backup id.
        backup: String,
        /// Tag key.
        tag: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the default"),
            Source::File { path } => write!(f, "config file {path}"),
            Source::Env { var } => write!(f, "environment variable {var}"),
            Source::Cli { flag } => write!(f, "command-line flag {flag}"),
            Source::ResourceTag { resource, tag } => write!(f, "tag {tag} on {resource}"),
            Source::BackupTag { backup, tag } => write!(f, "tag {tag} recorded on backup {backup}"),
        }
    }
}

/// One raw setting in one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: Key,
    /// The raw value (lists comma-separated).
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

/// A configuration error. Exit code 2 for run-level settings; a per-resource failure for tags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse.
    #[error("invalid value {value:?} for {key} from {origin}: expected {accepted}")]
    InvalidValue {
        /// Key name.
        key: &'static str,
        /// The raw value.
        value: String,
        /// Where it came from.
        origin: Source,
        /// What is accepted.
        accepted: &'static str,
    },
    /// A key bunker does not know.
    #[error("unknown setting {key:?} in {origin}{}", hint.map(|h| format!(": did you mean {h:?}?")).unwrap_or_else(|| format!(": known settings are {}", SPECS.iter().map(|s| s.name).collect::<Vec<_>>().join(", "))))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// Where it came from.
        origin: Source,
        /// The nearest known key.
        hint: Option<&'static str>,
    },
    /// A run-level key set by a resource tag.
    #[error("{key} cannot be set per resource ({origin}): set it in the config file, the environment or a flag")]
    NotPerResource {
        /// Key name.
        key: &'static str,
        /// Where it came from.
        origin: Source,
    },
    /// A command that deletes backups, run without an explicit `deployment`.
    #[error(
        "{command} deletes backups, so this install must name the owner id it deletes as: set \
         deployment = \"…\" in the config file (or BUNKER_DEPLOYMENT), one id per independently \
         configured install (instances of one install share it). To keep owning backups made \
         under the old default id, set deployment = \"{name}-{{account}}-{{region}}\""
    )]
    DeploymentRequired {
        /// What was refused (`clean-backups`, `serve with schedule.clean`).
        command: String,
        /// The deployment name (`name`), for the migration hint.
        name: String,
    },
}

/// How an RDS instance or cluster is backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RdsBackupMode {
    /// A new manual snapshot (fresh data).
    CreateSnapshot,
    /// Copy the latest automated snapshot (data up to a day old); create one if there is none.
    CopyAutomated,
}

/// The effective configuration, typed.
#[derive(Debug, Clone)]
pub struct Config {
    /// Keep counts.
    pub keep: Keep,
    /// Time zone name as configured.
    pub timezone_name: String,
    /// Time zone.
    pub timezone: TimeZone,
    /// Custom retention types.
    pub custom_retention: BTreeMap<String, SignedDuration>,
    /// Retention type forced for this run.
    pub retention: Option<RetentionType>,
    /// RDS backup mode.
    pub rds_backup_mode: RdsBackupMode,
    /// Regions; empty = the SDK's region.
    pub regions: Vec<String>,
    /// Narrow the run to one resource.
    pub select: Option<String>,
    /// Copy resource tags onto backups.
    pub copy_tags: bool,
    /// Tag keys not copied.
    pub exclude_tag_keys: Vec<String>,
    /// Per-operation notifications.
    pub sns_topic: Option<String>,
    /// Per-error notifications.
    pub error_sns_topic: Option<String>,
    /// One run report per run.
    pub status_sns_topic: Option<String>,
    /// Deployment id; `None` = derived from name, account and region.
    pub deployment: Option<String>,
    /// Deployment name.
    pub name: String,
    /// Shelvery compatibility.
    pub compat_shelvery: bool,
    /// Copy to DR regions and share with accounts.
    pub replication: Replication,
    /// `bunker serve`.
    pub serve: Serve,
    /// Where `bunker serve` exports EBS backups announced by events (`export.to`).
    pub export_to: Option<String>,
    /// Further targets queue `export` commands may name (`export.allowed_targets`).
    pub export_allowed_targets: Vec<String>,
    /// AWS Backup vaults whose recovery points are exported (`export.vaults`).
    pub export_vaults: Vec<String>,
    /// Delete a recovery point once its archive verifies (`export.delete_source`).
    pub export_delete_source: bool,
    /// Archives also record their whole-image SHA-256 (`export.sha256`).
    pub export_sha256: bool,
    /// Which recovery point kinds are exported (`export.kinds`).
    pub export_kinds: Vec<crate::vault::ExportKind>,
    /// The retention types whose own backups `bunker serve` exports (`export.retention_types`).
    pub export_retention_types: Vec<String>,
    /// How DynamoDB recovery points are exported (`export.dynamodb_mode`).
    pub export_dynamodb_mode: crate::vault::DynamoDbMode,
    /// What RDS and Aurora recovery points are exported as (`export.rds_format`).
    pub export_rds_format: crate::vault::RdsFormat,
    /// What EBS snapshots are exported as (`export.ebs_format`).
    pub export_ebs_format: crate::vault::EbsFormat,
    /// Parallel scan segments of a DynamoDB backup export (`export.scan_segments`).
    pub export_scan_segments: u32,
    /// The role RDS assumes to write exports (`export.rds_role_arn`).
    pub export_rds_role_arn: Option<String>,
    /// The key RDS encrypts exports with (`export.kms_key`).
    pub export_kms_key: Option<String>,
    /// `export.dump_instance_class`.
    pub export_dump_instance_class: Option<String>,
    /// `export.dump_subnet_group`.
    pub export_dump_subnet_group: Option<String>,
    /// Where attached volumes' by-id links are (`export.device_dir`).
    pub export_device_dir: String,
    /// Whether file-level exports of XFS and Btrfs go through a mounted temporary volume
    /// (`export.mount`).
    pub export_mount: bool,
    /// `export.dump_security_group`.
    pub export_dump_security_group: Option<String>,
    /// The first wait for a running export task (`export.task_poll`).
    pub export_task_poll: SignedDuration,
    /// Where bunker puts its own events (`events.bus`); `None`: nowhere.
    pub events_bus: Option<String>,
    /// The account that owns the export bucket (`export.bucket_owner`); `None` = this one.
    pub export_bucket_owner: Option<String>,
    /// The shortest default Object Lock retention doctor accepts (`export.object_lock_days`).
    pub export_object_lock_days: u32,
    /// The role each function's AWS calls are made under (`roles.*`); a function not named
    /// here uses the process's own credentials.
    pub roles: BTreeMap<crate::roles::Function, String>,
    /// The winning setting of each key that has a value, in key order.
    pub effective: Vec<Setting>,
}

/// Where backups are copied and who they are shared with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replication {
    /// Regions every owned backup is copied to.
    pub dr_regions: Vec<String>,
    /// Accounts every owned backup and its DR copies are shared with.
    pub share_accounts: Vec<String>,
    /// DR region → KMS key for encrypted copies there.
    pub dr_kms_keys: BTreeMap<String, String>,
    /// Keep counts of DR copies; `None` = the source's.
    pub keep_dr: [Option<u32>; 4],
    /// Accounts whose shared backups this data-bunker account pulls in.
    pub source_accounts: Vec<String>,
    /// Region → the bunker's KMS key for pulled copies.
    pub pull_kms_keys: BTreeMap<String, String>,
    /// Keep counts of pulled copies; `None` = this account's `keep_*`.
    pub keep_pulled: [Option<u32>; 4],
    /// Region → the key encrypted backups are re-encrypted under before sharing.
    pub share_kms_keys: BTreeMap<String, String>,
}

impl Replication {
    /// Whether there is any copy or share work at all.
    pub fn is_enabled(&self) -> bool {
        !self.dr_regions.is_empty() || !self.share_accounts.is_empty()
    }

    /// The keep counts for a DR copy, given the source's.
    pub fn dr_keep(&self, source: Keep) -> Keep {
        Self::keep_with(self.keep_dr, source)
    }

    /// The keep counts for a pulled copy, given this account's.
    pub fn pulled_keep(&self, own: Keep) -> Keep {
        Self::keep_with(self.keep_pulled, own)
    }

    fn keep_with(over: [Option<u32>; 4], source: Keep) -> Keep {
        let [d, w, m, y] = over;
        Keep {
            daily: d.unwrap_or(source.daily),
            weekly: w.unwrap_or(source.weekly),
            monthly: m.unwrap_or(source.monthly),
            yearly: y.unwrap_or(source.yearly),
        }
    }
}

/// Settings of `bunker serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Serve {
    /// The queue EventBridge feeds; `None`: no event intake (scheduler and reconciliation only).
    pub queue_url: Option<String>,
    /// Where unreadable messages go with their reason.
    pub dead_letter_queue_url: Option<String>,
    /// DynamoDB table of leases (schedule slots, copy claims); needed for several instances.
    pub lease_table: Option<String>,
    /// Address of `/healthz` and `/metrics`.
    pub listen: String,
    /// Kinds served.
    pub kinds: Vec<crate::ResourceKind>,
    /// How long in-flight work may take after SIGTERM.
    pub shutdown_deadline: SignedDuration,
    /// How often reconciliation runs.
    pub reconcile_interval: SignedDuration,
    /// How often a pending backup or copy is checked again.
    pub check_interval: SignedDuration,
    /// When create-backups runs.
    pub schedule_create: Option<crate::cron::Cron>,
    /// When clean-backups runs.
    pub schedule_clean: Option<crate::cron::Cron>,
    /// When pull-backups runs (only with `source_accounts`).
    pub schedule_pull: Option<crate::cron::Cron>,
    /// Per-kind overrides: (kind, action `create`/`clean`/`pull`, schedule or `None` = off).
    pub schedule_per_kind: Vec<(crate::ResourceKind, &'static str, Option<crate::cron::Cron>)>,
}

impl Config {
    /// Every field unset, before [`resolve`] applies the schema's defaults and settings.
    fn unset() -> Config {
        let never = SignedDuration::ZERO;
        Config {
            keep: Keep { daily: 0, weekly: 0, monthly: 0, yearly: 0 },
            timezone_name: String::new(),
            timezone: TimeZone::UTC,
            custom_retention: BTreeMap::new(),
            retention: None,
            rds_backup_mode: RdsBackupMode::CreateSnapshot,
            regions: vec![],
            select: None,
            copy_tags: false,
            exclude_tag_keys: vec![],
            sns_topic: None,
            error_sns_topic: None,
            status_sns_topic: None,
            deployment: None,
            name: String::new(),
            compat_shelvery: false,
            replication: Replication::default(),
            serve: Serve {
                queue_url: None,
                dead_letter_queue_url: None,
                lease_table: None,
                listen: String::new(),
                kinds: vec![],
                shutdown_deadline: never,
                reconcile_interval: never,
                check_interval: never,
                schedule_create: None,
                schedule_clean: None,
                schedule_pull: None,
                schedule_per_kind: vec![],
            },
            export_to: None,
            export_allowed_targets: vec![],
            export_vaults: vec![],
            export_delete_source: false,
            export_sha256: false,
            export_kinds: vec![],
            export_retention_types: vec![],
            export_dynamodb_mode: crate::vault::DynamoDbMode::Backup,
            export_rds_format: crate::vault::RdsFormat::Parquet,
            export_ebs_format: crate::vault::EbsFormat::Image,
            export_scan_segments: 4,
            export_rds_role_arn: None,
            export_kms_key: None,
            export_dump_instance_class: None,
            export_dump_subnet_group: None,
            export_device_dir: String::new(),
            export_mount: false,
            export_dump_security_group: None,
            export_task_poll: never,
            export_bucket_owner: None,
            events_bus: None,
            export_object_lock_days: 0,
            roles: BTreeMap::new(),
            effective: vec![],
        }
    }

    /// The retention policy this configuration describes.
    pub fn policy(&self) -> Policy {
        Policy { keep: self.keep, custom: self.custom_retention.clone(), timezone: self.timezone.clone() }
    }

    /// The ownership id written to `bunker:deployment` in `account`/`region`: `deployment`
    /// with `{account}` and `{region}` replaced, else `<name>-<account>-<region>`.
    pub fn deployment_id(&self, account: &str, region: &str) -> String {
        match &self.deployment {
            Some(d) => d.replace("{account}", account).replace("{region}", region),
            None => format!("{}-{account}-{region}", self.name),
        }
    }

    /// Commands that delete refuse to run on the derived default id: two installs in one
    /// account and region would own (and delete) each other's backups. `Err` names the fix.
    pub fn require_deployment(&self, command: &str) -> Result<(), ConfigError> {
        match self.deployment {
            Some(_) => Ok(()),
            None => Err(ConfigError::DeploymentRequired { command: command.into(), name: self.name.clone() }),
        }
    }

    /// The per-resource overrides in `effective` (what gets recorded on a backup).
    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.effective
            .iter()
            .filter(|s| matches!(s.source, Source::ResourceTag { .. } | Source::BackupTag { .. }))
            .map(|s| (s.key.name().to_string(), s.value.clone()))
            .collect()
    }
}

/// The built-in defaults as settings.
pub fn defaults() -> Vec<Setting> {
    SPECS
        .iter()
        .filter_map(|s| s.default.map(|d| Setting { key: s.key, value: d.into(), source: Source::Default }))
        .collect()
}

/// Settings resolved once per command: the layers (defaults < file < environment < flags),
/// kept for the per-resource tag layers that go on top, and the configuration they give.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The layers, lowest first.
    pub layers: Vec<Setting>,
    /// What they resolve to.
    pub config: Config,
}

impl Resolved {
    /// Resolves `layers`.
    pub fn new(layers: Vec<Setting>) -> Result<Resolved, ConfigError> {
        let config = resolve(&layers)?;
        Ok(Resolved { layers, config })
    }

    /// The configuration with `extra` layered on top (a resource's tags).
    pub fn with(&self, extra: Vec<Setting>) -> Result<Config, ConfigError> {
        let mut layers = self.layers.clone();
        layers.extend(extra);
        resolve(&layers)
    }
}

/// Resolves layered settings (lowest first; later settings of a key override earlier ones).
/// Every key starts from its default, then its winning setting is parsed by its row of the
/// schema, in table order; an invalid value names the key, the value, where it came from
/// and what is accepted.
pub fn resolve(layers: &[Setting]) -> Result<Config, ConfigError> {
    let mut winner: BTreeMap<Key, &Setting> = BTreeMap::new();
    for s in layers {
        winner.insert(s.key, s);
    }
    let mut cfg = Config::unset();
    for spec in SPECS {
        if let Some(d) = spec.default {
            (spec.parse)(&mut cfg, d).expect("every default parses (config::tests::every_default_parses)");
        }
        if let Some(s) = winner.get(&spec.key) {
            (spec.parse)(&mut cfg, &s.value).ok_or_else(|| ConfigError::InvalidValue {
                key: spec.name,
                value: s.value.clone(),
                origin: s.source.clone(),
                accepted: spec.accepted,
            })?;
        }
    }
    cfg.effective = winner.into_values().cloned().collect();
    Ok(cfg)
}

/// Reads `bunker:config:<key>` tags (and, with `compat`, Shelvery's `shelvery:config:<name>`)
/// into a settings layer. Errors on unknown keys and on keys that are not per-resource.
pub fn tag_settings(tags: &Tags, resource: &str, compat: bool) -> Result<Vec<Setting>, ConfigError> {
    let mut shelvery = Vec::new();
    let mut ours = Vec::new();
    for (tag, value) in tags {
        let (key, into) = if let Some(name) = tag.strip_prefix(tags::CONFIG_PREFIX) {
            let source = Source::ResourceTag { resource: resource.into(), tag: tag.clone() };
            let key = Key::from_name(name).ok_or_else(|| ConfigError::UnknownKey {
                key: name.into(),
                origin: source,
                hint: Key::suggest(name),
            })?;
            (key, &mut ours)
        } else if let (true, Some(name)) = (compat, tag.strip_prefix(tags::SHELVERY_CONFIG_PREFIX)) {
            match Key::from_shelvery_name(name) {
                Some(key) => (key, &mut shelvery),
                None => continue, // Shelvery settings bunker has no use for (dr regions, KMS, …)
            }
        } else {
            continue;
        };
        let source = Source::ResourceTag { resource: resource.into(), tag: tag.clone() };
        if !key.per_resource() {
            return Err(ConfigError::NotPerResource { key: key.name(), origin: source });
        }
        into.push(Setting { key, value: value.clone(), source });
    }
    shelvery.extend(ours); // bunker's own tags win over Shelvery's
    Ok(shelvery)
}

/// Settings recorded on a backup (`bunker:config:*`), used when its resource is gone.
pub fn recorded_settings(backup_id: &str, overrides: &BTreeMap<String, String>) -> Vec<Setting> {
    overrides
        .iter()
        .filter_map(|(k, v)| {
            let key = Key::from_name(k)?;
            Some(Setting {
                key,
                value: v.clone(),
                source: Source::BackupTag { backup: backup_id.into(), tag: format!("{}{k}", tags::CONFIG_PREFIX) },
            })
        })
        .collect()
}

/// Reads bunker's and Shelvery's environment variables into a settings layer (Shelvery's
/// names first, so `BUNKER_*` wins). Unknown `BUNKER_*` variables are returned as warnings.
pub fn env_settings<I: IntoIterator<Item = (String, String)>>(vars: I) -> (Vec<Setting>, Vec<String>) {
    const NOT_SETTINGS: [&str; 2] = ["BUNKER_LOG", "BUNKER_CONFIG"];
    let (mut shelvery, mut ours, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    for (var, value) in vars {
        if let Some(key) = Key::from_shelvery_name(&var) {
            shelvery.push(Setting { key, value, source: Source::Env { var } });
        } else if let Some(key) = Key::all().find(|k| k.env_var() == var) {
            ours.push(Setting { key, value, source: Source::Env { var } });
        } else if var.starts_with("BUNKER_")
            && !NOT_SETTINGS.contains(&var.as_str())
            && !var.starts_with("BUNKER_TEST_")
        {
            let guess = var.trim_start_matches("BUNKER_").to_ascii_lowercase();
            let hint = Key::suggest(&guess)
                .map(|k| format!(" (did you mean {}?)", Key::from_name(k).expect("suggested keys exist").env_var()))
                .unwrap_or_default();
            warnings.push(format!("ignoring unknown environment variable {var}{hint}"));
        }
    }
    shelvery.extend(ours);
    (shelvery, warnings)
}

/// Strict whole number: digits only, 0 ..= 100000.
pub fn parse_whole(v: &str) -> Option<u32> {
    (!v.is_empty() && v.len() <= 6 && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse().ok())
        .flatten()
        .filter(|n| *n <= 100_000)
}

/// Strict boolean: true/false in any case, or 1/0. Nothing else ("yes" is an error).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// `NAME:DURATION[,…]`; duration is seconds, or a number with unit s/m/h/d/w; must be > 0.
pub fn parse_custom(v: &str) -> Option<BTreeMap<String, SignedDuration>> {
    let mut out = BTreeMap::new();
    for entry in split_list(v) {
        let (name, dur) = entry.split_once(':')?;
        let valid_name = !name.is_empty()
            && name.len() <= 32
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && !matches!(
                RetentionType::from_name(name),
                RetentionType::Daily | RetentionType::Weekly | RetentionType::Monthly | RetentionType::Yearly
            );
        let secs = parse_duration_secs(dur)?;
        if !valid_name || secs == 0 || out.insert(name.to_string(), SignedDuration::from_secs(secs)).is_some() {
            return None;
        }
    }
    Some(out)
}

fn parse_duration_secs(v: &str) -> Option<i64> {
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    if num.is_empty() || num.len() > 12 {
        return None;
    }
    num.parse::<i64>().ok()?.checked_mul(mult)
}

/// `KIND.ACTION=CRON; …` (see the `schedule.per_kind` spec).
fn parse_per_kind(v: &str) -> Option<Vec<(crate::ResourceKind, &'static str, Option<crate::cron::Cron>)>> {
    let mut out = Vec::new();
    for entry in v.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (target, cron) = entry.split_once('=')?;
        let (kind, action) = target.trim().split_once('.')?;
        let action = ["create", "clean", "pull"].into_iter().find(|a| *a == action)?;
        let cron = match cron.trim() {
            "" => None,
            c => Some(c.parse().ok()?),
        };
        out.push((kind.parse().ok()?, action, cron));
    }
    Some(out)
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// `arn:PARTITION:iam::ACCOUNT:role/NAME`.
pub fn is_role_arn(v: &str) -> bool {
    let parts: Vec<&str> = v.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && is_account(parts[4])
        && parts[5].strip_prefix("role/").is_some_and(|n| !n.is_empty() && !n.contains(char::is_whitespace))
}

/// An export target: `s3://bucket[/prefix]` or `file:///absolute/dir`, without `.` or `..`
/// path components.
pub fn is_target(v: &str) -> bool {
    let path = if let Some(rest) = v.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or_default();
        if bucket.len() < 3
            || !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return false;
        }
        rest
    } else if let Some(rest) = v.strip_prefix("file:///") {
        rest
    } else {
        return false;
    };
    !path.split('/').any(|c| c == "." || c == "..") && !v.chars().any(char::is_control)
}

/// An AWS region name such as `us-east-1` or `us-gov-west-1`.
pub fn is_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_topic_arn(v: &str) -> bool {
    let p: Vec<&str> = v.split(':').collect();
    p.len() == 6
        && p[0] == "arn"
        && p[1].starts_with("aws")
        && p[2] == "sns"
        && is_region(p[3])
        && p[4].len() == 12
        && p[4].bytes().all(|b| b.is_ascii_digit())
        && !p[5].is_empty()
}

fn is_url(v: &str) -> bool {
    (v.starts_with("https://") || v.starts_with("http://")) && v.len() > 10 && !v.contains(char::is_whitespace)
}

fn is_ident(v: &str, max: usize) -> bool {
    !v.is_empty() && v.len() <= max && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses() {
        for spec in SPECS {
            if let Some(d) = spec.default {
                assert!((spec.parse)(&mut Config::unset(), d).is_some(), "{}: default {d:?} does not parse", spec.name);
            }
        }
        let c = resolve(&[]).unwrap();
        assert_eq!((c.keep.daily, c.name.as_str(), c.serve.listen.as_str()), (14, "bunker", "127.0.0.1:9464"));
        assert_eq!(c.serve.kinds, crate::ResourceKind::ALL.to_vec(), "the default serves every kind");
        assert!(c.serve.schedule_create.is_some() && c.copy_tags && !c.compat_shelvery);
    }

    /// A key is one row of the schema; the README's tables must name every key, say whether
    /// a resource tag may set it (in the table with that column) and show its default.
    #[test]
    fn readme_lists_every_key_with_its_default() {
        let readme = include_str!("../../README.md");
        let rows: Vec<Vec<&str>> = readme
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
            .collect();
        for spec in SPECS {
            let name = format!("`{}`", spec.name);
            let row = rows
                .iter()
                .find(|r| r[0].split(", ").any(|n| n == name))
                .unwrap_or_else(|| panic!("the README's tables have no row for {name}"));
            if let Some(d) = spec.default.filter(|d| !d.is_empty()) {
                assert!(row[1].contains(d), "{name}: the README says default {:?}, the schema {d:?}", row[1]);
            }
            if row.len() == 4 {
                assert_eq!(row[2] == "yes", spec.per_resource, "{name}: per-resource column is {:?}", row[2]);
            }
        }
    }

    fn s(key: Key, value: &str, source: Source) -> Setting {
        Setting { key, value: value.into(), source }
    }

    #[test]
    fn serve_and_replication_settings_parse_strictly() {
        let file = || Source::File { path: "bunker.toml".into() };
        let mut layers = defaults();
        layers.push(s(Key::SchedulePerKind, "rds.create=30 1 * * *; docdb.clean=", file()));
        layers.push(s(Key::DrKmsKeys, "us-west-2=alias/dr", file()));
        layers.push(s(Key::ServeShutdownDeadline, "2m", file()));
        let c = resolve(&layers).unwrap();
        assert_eq!(c.serve.schedule_per_kind.len(), 2);
        assert_eq!(c.serve.schedule_per_kind[0].1, "create");
        assert!(c.serve.schedule_per_kind[1].2.is_none(), "empty cron disables");
        assert_eq!(c.replication.dr_kms_keys["us-west-2"], "alias/dr");
        assert_eq!(c.serve.shutdown_deadline.as_secs(), 120);
        assert_eq!(c.serve.schedule_create.unwrap().to_string(), "0 1 * * *");
        for (key, value) in [
            (Key::SchedulePerKind, "rds.backup=0 1 * * *"),
            (Key::SchedulePerKind, "floppy.create=0 1 * * *"),
            (Key::ScheduleCreate, "0 25 * * *"),
            (Key::ShareAccounts, "12345"),
            (Key::DrKmsKeys, "alias/dr"),
            (Key::ServeListen, "localhost"),
            (Key::ServeCheckInterval, "0s"),
        ] {
            let mut l = defaults();
            l.push(s(key, value, file()));
            let e = resolve(&l).unwrap_err().to_string();
            assert!(e.contains(key.name()) && e.contains("bunker.toml"), "{key}: {e}");
        }
    }

    #[test]
    fn layers_resolve_highest_wins_with_provenance() {
        let mut layers = defaults();
        layers.push(s(Key::KeepDaily, "7", Source::File { path: "b.toml".into() }));
        layers.push(s(Key::KeepDaily, "9", Source::Env { var: "BUNKER_KEEP_DAILY".into() }));
        let c = resolve(&layers).unwrap();
        assert_eq!(c.keep, Keep { daily: 9, weekly: 8, monthly: 12, yearly: 10 });
        let eff = c.effective.iter().find(|s| s.key == Key::KeepDaily).unwrap();
        assert_eq!(eff.source, Source::Env { var: "BUNKER_KEEP_DAILY".into() });
        assert_eq!(c.deployment_id("123456789012", "eu-west-1"), "bunker-123456789012-eu-west-1");
    }

    #[test]
    fn deleting_needs_an_explicit_deployment_which_may_name_account_and_region() {
        let file = || Source::File { path: "bunker.toml".into() };
        let c = resolve(&defaults()).unwrap();
        let e = c.require_deployment("clean-backups").unwrap_err().to_string();
        assert!(
            e.contains("clean-backups") && e.contains("deployment = ") && e.contains("bunker-{account}-{region}"),
            "{e}"
        );
        let mut l = defaults();
        l.push(s(Key::Deployment, "prod-{account}-{region}", file()));
        let c = resolve(&l).unwrap();
        c.require_deployment("clean-backups").unwrap();
        assert_eq!(c.deployment_id("123456789012", "eu-west-1"), "prod-123456789012-eu-west-1");
        let mut l = defaults();
        l.push(s(Key::Deployment, "", file()));
        assert!(resolve(&l).unwrap().require_deployment("serve").is_err(), "an empty deployment is unset");
        for bad in ["prod/{account}", "{acct}"] {
            let mut l = defaults();
            l.push(s(Key::Deployment, bad, file()));
            assert!(resolve(&l).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn strict_values_name_key_value_source_and_accepted() {
        for (key, value) in [
            (Key::KeepDaily, "7.5"),
            (Key::KeepDaily, "-1"),
            (Key::KeepDaily, " 7"),
            (Key::CopyTags, "yes"),
            (Key::Timezone, "Mars/Base"),
            (Key::Regions, "us-east-1,moon"),
            (Key::SnsTopic, "topic"),
            (Key::CustomRetention, "hourly:2x"),
            (Key::CustomRetention, "daily:2d"),
            (Key::Retention, "hourly"),
        ] {
            let e = resolve(&[s(key, value, Source::Env { var: key.env_var() })]).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(key.name())
                    && msg.contains(value)
                    && msg.contains(&key.env_var())
                    && msg.contains("expected"),
                "{msg}"
            );
        }
    }

    #[test]
    fn custom_retention_forms() {
        let c = parse_custom("hourly:2d, minutely:7200,w:1w").unwrap();
        assert_eq!(c["hourly"], SignedDuration::from_hours(48));
        assert_eq!(c["minutely"], SignedDuration::from_secs(7200));
        assert_eq!(c["w"], SignedDuration::from_hours(168));
        assert!(parse_custom("x:0").is_none());
        assert!(parse_custom("x:1d,x:2d").is_none());
        assert!(parse_custom("X:1d").is_none());
    }

    #[test]
    fn tags_only_set_per_resource_keys() {
        let tags: Tags = [("bunker:config:keep_daily".to_string(), "30".to_string())].into();
        let layer = tag_settings(&tags, "vol-1", false).unwrap();
        assert_eq!(layer[0].source.to_string(), "tag bunker:config:keep_daily on vol-1");
        let tags: Tags = [("bunker:config:regions".to_string(), "us-east-1".to_string())].into();
        assert!(matches!(tag_settings(&tags, "vol-1", false), Err(ConfigError::NotPerResource { .. })));
        let tags: Tags = [("bunker:config:keep_dialy".to_string(), "3".to_string())].into();
        assert!(tag_settings(&tags, "vol-1", false).unwrap_err().to_string().contains("did you mean \"keep_daily\""));
        let tags: Tags = [("shelvery:config:shelvery_keep_daily_backups".to_string(), "5".to_string())].into();
        assert!(tag_settings(&tags, "vol-1", false).unwrap().is_empty());
        assert_eq!(tag_settings(&tags, "vol-1", true).unwrap()[0].key, Key::KeepDaily);
    }

    #[test]
    fn env_accepts_shelvery_names_bunker_wins() {
        let (layer, warnings) = env_settings([
            ("BUNKER_KEEP_DAILY".to_string(), "3".to_string()),
            ("shelvery_keep_daily_backups".to_string(), "5".to_string()),
            ("BUNKER_KEEP_DAYLY".to_string(), "5".to_string()),
        ]);
        assert_eq!(resolve(&layer).unwrap().keep.daily, 3);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("BUNKER_KEEP_DAILY"), "{warnings:?}");
    }
}
