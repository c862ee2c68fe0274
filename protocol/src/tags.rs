//! Tag keys bunker reads and writes, and the tag sets it builds.

use std::collections::BTreeMap;

/// A resource's or backup's tags, key → value.
pub type Tags = BTreeMap<String, String>;

/// Selects a resource for backup when its value is one of [`SELECT_VALUES`].
pub const CREATE_BACKUP: &str = "bunker:create_backup";
/// Shelvery's selector, honoured with `compat.shelvery = true`.
pub const SHELVERY_CREATE_BACKUP: &str = "shelvery:create_backup";
/// The values of a selector tag that select (Shelvery's set; nothing else counts).
pub const SELECT_VALUES: [&str; 4] = ["true", "True", "TRUE", "1"];

/// `true` on every backup bunker made.
pub const MANAGED: &str = "bunker:managed";
/// The deployment that owns (and alone may delete) the backup.
pub const DEPLOYMENT: &str = "bunker:deployment";
/// The id of the resource the backup was made of.
pub const SOURCE: &str = "bunker:source";
/// The resource kind (`ebs`, `ec2ami`, …): an AMI's snapshots are not EBS backups.
pub const KIND: &str = "bunker:kind";
/// Creation time, RFC 3339 UTC, to the second.
pub const CREATED_AT: &str = "bunker:created_at";
/// Retention type: daily, weekly, monthly, yearly or a custom name.
pub const RETENTION: &str = "bunker:retention";
/// The source's own `Name` tag (the backup's `Name` is the backup name).
pub const RESOURCE_NAME: &str = "bunker:resource_name";
/// On an AMI's snapshots: the snapshot belongs to an AMI backup (not an EBS backup).
pub const AMI_PART: &str = "bunker:ami_part";
/// Prefix of per-resource configuration overrides, on resources and (recorded) on backups.
pub const CONFIG_PREFIX: &str = "bunker:config:";
/// Shelvery's per-resource override prefix, read with `compat.shelvery = true`.
pub const SHELVERY_CONFIG_PREFIX: &str = "shelvery:config:";
/// On a copy: the backup it was copied from, `<region>:<id>`. The idempotency key of copies:
/// a copy carrying it exists, so no second one is made.
pub const COPY_OF: &str = "bunker:copy_of";
/// `true` on copies made in a disaster-recovery region (their retention is `keep_*_dr`).
pub const DR_COPY: &str = "bunker:dr_copy";
/// On a same-region copy made to share an encrypted backup under the share key
/// (`share_kms_keys`): `<region>:<id>` of the backup it re-encrypts. It is shared instead.
pub const REENCRYPTED_OF: &str = "bunker:reencrypted_of";
/// On a backup pulled into a data-bunker account: `<account>:<region>:<id>` of the shared
/// backup it was copied from (the idempotency key of pulls).
pub const PULLED_FROM: &str = "bunker:pulled_from";
/// AWS caps a resource at 50 user tags.
pub const MAX_TAGS: usize = 50;
/// On a temporary resource bunker made for an export (a restored table): `true`.
pub const TEMPORARY: &str = "bunker:temporary";
/// On a temporary resource: what it is for (`export of <recovery point ARN>`).
pub const PURPOSE: &str = "bunker:purpose";
/// On a temporary resource: when a sweep may remove it (RFC 3339).
pub const EXPIRES_AT: &str = "bunker:expires_at";

/// The tags of a temporary resource bunker makes for an export (a restored table, a dump
/// instance): given at creation, and what a sweep checks before it removes one.
pub fn temporary(deployment: &str, purpose: String, expires_at: jiff::Timestamp) -> Tags {
    [
        (TEMPORARY, "true".to_string()),
        (DEPLOYMENT, deployment.to_string()),
        (PURPOSE, purpose),
        (EXPIRES_AT, expires_at.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Shelvery's backup tags, read to adopt Shelvery's backups (`compat.shelvery = true`).
pub mod shelvery {
    /// `true` on every Shelvery backup.
    pub const BACKUP: &str = "shelvery:backup";
    /// `%Y-%m-%d-%H%M` UTC (legacy `%Y%m%d-%H%M`).
    pub const DATE_CREATED: &str = "shelvery:date_created";
    /// daily / weekly / monthly / yearly / custom.
    pub const RETENTION_TYPE: &str = "shelvery:retention_type";
    /// The source resource id.
    pub const ENTITY_ID: &str = "shelvery:entity_id";
    /// The region the backup was made in.
    pub const REGION: &str = "shelvery:region";
    /// The account that made the backup.
    pub const SRC_ACCOUNT: &str = "shelvery:src_account";
    /// The backup name.
    pub const NAME: &str = "shelvery:name";
    /// `true` on DR-region copies.
    pub const DR_COPY: &str = "shelvery:dr_copy";
    /// `true` on copies pulled into a data-bunker account.
    pub const CROSS_ACCOUNT_COPY: &str = "shelvery:cross_account_copy";
}

/// Whether a resource with these tags is selected for backup.
pub fn is_selected(tags: &Tags, compat_shelvery: bool) -> bool {
    let selects = |key: &str| tags.get(key).is_some_and(|v| SELECT_VALUES.contains(&v.as_str()));
    selects(CREATE_BACKUP) || (compat_shelvery && selects(SHELVERY_CREATE_BACKUP))
}

/// Whether `key` matches an `exclude_tag_keys` entry: exact, or a prefix ending in `*`.
pub fn is_excluded(key: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => key == p,
    })
}

/// What goes into a new backup's tag set besides the resource's own tags.
#[derive(Debug, Clone)]
pub struct BackupTagInput<'a> {
    /// Backup name (becomes `Name`).
    pub name: &'a str,
    /// Owning deployment id.
    pub deployment: &'a str,
    /// Resource kind.
    pub kind: crate::ResourceKind,
    /// Source resource id.
    pub source: &'a str,
    /// Creation time (written to the second, UTC).
    pub created_at: jiff::Timestamp,
    /// Retention type name.
    pub retention: &'a str,
    /// Per-resource overrides in force (`key` → raw value), recorded so they outlive the resource.
    pub overrides: &'a BTreeMap<String, String>,
    /// The resource's own tags.
    pub resource_tags: &'a Tags,
    /// Whether to copy the resource's tags.
    pub copy_tags: bool,
    /// Tag keys (or `prefix*`) not to copy.
    pub exclude: &'a [String],
}

/// The tags a new backup is created with (in the create call itself, so it is never untagged).
///
/// bunker's own tags come first and always fit; the resource's tags are copied (minus
/// `aws:` and `bunker:` keys and the exclusion list) while the AWS limit of 50 allows.
/// Returns the tags and the keys that were dropped for lack of room.
pub fn backup_tags(input: &BackupTagInput<'_>) -> (Tags, Vec<String>) {
    let mut tags = Tags::new();
    tags.insert(MANAGED.into(), "true".into());
    tags.insert(DEPLOYMENT.into(), input.deployment.into());
    tags.insert(KIND.into(), input.kind.as_str().into());
    tags.insert(SOURCE.into(), input.source.into());
    tags.insert(CREATED_AT.into(), format_timestamp(input.created_at));
    tags.insert(RETENTION.into(), input.retention.into());
    tags.insert("Name".into(), input.name.into());
    for (k, v) in input.overrides {
        tags.insert(format!("{CONFIG_PREFIX}{k}"), v.clone());
    }
    if let Some(name) = input.resource_tags.get("Name") {
        tags.insert(RESOURCE_NAME.into(), name.clone());
    }
    let mut dropped = Vec::new();
    if input.copy_tags {
        for (k, v) in input.resource_tags {
            if k == "Name"
                || k.starts_with("aws:")
                || k.starts_with("bunker:")
                || tags.contains_key(k)
                || is_excluded(k, input.exclude)
            {
                continue;
            }
            if tags.len() >= MAX_TAGS {
                dropped.push(k.clone());
                continue;
            }
            tags.insert(k.clone(), v.clone());
        }
    }
    (tags, dropped)
}

/// RFC 3339 UTC to the second, the form of `bunker:created_at`.
pub fn format_timestamp(ts: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(ts.as_second()).expect("a valid timestamp truncated stays valid").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selection_accepts_only_shelvery_truthy_set() {
        for v in SELECT_VALUES {
            assert!(is_selected(&t(&[(CREATE_BACKUP, v)]), false));
        }
        for v in ["yes", "false", "tRue", ""] {
            assert!(!is_selected(&t(&[(CREATE_BACKUP, v)]), false), "{v}");
        }
        assert!(!is_selected(&t(&[(SHELVERY_CREATE_BACKUP, "true")]), false));
        assert!(is_selected(&t(&[(SHELVERY_CREATE_BACKUP, "true")]), true));
    }

    #[test]
    fn backup_tags_copy_filter_and_cap() {
        let mut resource = t(&[
            ("Name", "db"),
            ("aws:cloudformation:stack", "x"),
            ("team", "a"),
            ("secret", "s"),
            ("bunker:create_backup", "true"),
        ]);
        for i in 0..60 {
            resource.insert(format!("k{i:02}"), "v".into());
        }
        let overrides = BTreeMap::from([("keep_daily".to_string(), "30".to_string())]);
        let exclude = vec!["secret".to_string()];
        let (tags, dropped) = backup_tags(&BackupTagInput {
            name: "db-20260101-000000-daily-abc123",
            deployment: "dep",
            kind: crate::ResourceKind::Ebs,
            source: "vol-1",
            created_at: "2026-01-01T00:00:00.9Z".parse().unwrap(),
            retention: "daily",
            overrides: &overrides,
            resource_tags: &resource,
            copy_tags: true,
            exclude: &exclude,
        });
        assert_eq!(tags.len(), MAX_TAGS);
        assert_eq!(tags["Name"], "db-20260101-000000-daily-abc123");
        assert_eq!(tags[RESOURCE_NAME], "db");
        assert_eq!(tags[CREATED_AT], "2026-01-01T00:00:00Z");
        assert_eq!(tags["bunker:config:keep_daily"], "30");
        assert!(!tags.contains_key("secret"));
        assert!(!tags.contains_key("aws:cloudformation:stack"));
        assert!(!tags.contains_key(CREATE_BACKUP));
        assert_eq!(tags.len() + dropped.len(), 9 + 61);
    }
}
