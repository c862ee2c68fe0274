//! A backup as bunker understands it, rebuilt from the tags on an AWS snapshot or image.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::retention::RetentionType;
use crate::tags::{self, Tags};
use crate::ResourceKind;

/// Who may delete a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// Made by this deployment.
    Ours,
    /// Made by Shelvery in this account and region, adopted with `compat.shelvery = true`.
    Shelvery,
    /// Anything else (another bunker deployment): listed, never deleted.
    Foreign,
}

/// A backup rebuilt from its tags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backup {
    /// The AWS id (snapshot id, AMI id, DB snapshot identifier, …).
    pub id: String,
    /// The backup name (`Name` tag, or the identifier where that is the name).
    pub name: String,
    /// Resource kind.
    pub kind: ResourceKind,
    /// Region it lives in.
    pub region: String,
    /// Account it lives in.
    pub account: String,
    /// Id of the resource it was made of.
    pub source: String,
    /// When it was made (from its tags, never from the host clock).
    pub created_at: Timestamp,
    /// When AWS says it was made (snapshot `StartTime`, AMI `CreationDate`, DB snapshot
    /// `SnapshotCreateTime`), where AWS reports one. The planner checks `created_at`
    /// and this against `now` before trusting a backup as a resource's newest.
    pub aws_created_at: Option<Timestamp>,
    /// Retention type.
    pub retention: RetentionType,
    /// Who may delete it.
    pub owner: Owner,
    /// Whether AWS reports it available/completed (pending backups are never acted on).
    pub available: bool,
    /// Per-resource overrides recorded at creation (`keep_daily` → `30`).
    pub overrides: BTreeMap<String, String>,
    /// Ids that go with it (an AMI's snapshots), deleted with it when owned.
    pub parts: Vec<String>,
    /// On a DR copy: `<region>:<id>` of the backup it was copied from.
    pub copy_of: Option<String>,
    /// On a backup pulled into a data-bunker account: `<account>:<region>:<id>`.
    pub pulled_from: Option<String>,
}

/// What the listing knows of a snapshot or image besides its tags.
#[derive(Debug, Clone)]
pub struct Listed<'a> {
    /// AWS id.
    pub id: &'a str,
    /// Kind being listed.
    pub kind: ResourceKind,
    /// Region.
    pub region: &'a str,
    /// Account.
    pub account: &'a str,
    /// Its tags.
    pub tags: &'a Tags,
    /// Whether it is available.
    pub available: bool,
    /// When AWS says it was made, where AWS reports it.
    pub aws_created_at: Option<Timestamp>,
    /// Ids that go with it.
    pub parts: Vec<String>,
}

/// Why a tagged snapshot could not be read as a backup. It is then left alone (never
/// deleted) and reported, so one bad tag never aborts a whole clean-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backup {id}: tag {tag} is {problem}")]
pub struct Unreadable {
    /// The AWS id.
    pub id: String,
    /// The tag key at fault.
    pub tag: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// Who owns what: this deployment's id, the account and region listed, Shelvery adoption.
#[derive(Debug, Clone)]
pub struct Ownership<'a> {
    /// This deployment's id.
    pub deployment: &'a str,
    /// Adopt Shelvery's backups made in this account and region.
    pub compat_shelvery: bool,
}

impl Backup {
    /// Rebuilds a backup from a listed snapshot/image. `Ok(None)`: not a backup of this kind
    /// at all (no bunker tags, or Shelvery's with compat off, or another kind's).
    pub fn from_listed(l: &Listed<'_>, own: &Ownership<'_>) -> Result<Option<Backup>, Unreadable> {
        if l.tags.get(tags::MANAGED).map(String::as_str) == Some("true") {
            return Self::from_bunker_tags(l, own).map(Some);
        }
        if own.compat_shelvery && l.tags.get(tags::shelvery::BACKUP).map(String::as_str) == Some("true") {
            return Self::from_shelvery_tags(l);
        }
        Ok(None)
    }

    fn from_bunker_tags(l: &Listed<'_>, own: &Ownership<'_>) -> Result<Backup, Unreadable> {
        let get = |tag: &'static str| {
            l.tags.get(tag).filter(|v| !v.is_empty()).ok_or_else(|| Unreadable {
                id: l.id.to_string(),
                tag,
                problem: "missing".into(),
            })
        };
        let kind = get(tags::KIND)?;
        if kind != l.kind.as_str() {
            // e.g. an AMI's snapshot seen while listing EBS snapshots: not ours to judge here.
            return Err(Unreadable {
                id: l.id.into(),
                tag: tags::KIND,
                problem: format!("'{kind}', not '{}'", l.kind),
            });
        }
        let created = get(tags::CREATED_AT)?;
        let created_at = created.parse::<Timestamp>().map_err(|e| Unreadable {
            id: l.id.into(),
            tag: tags::CREATED_AT,
            problem: format!("'{created}', not an RFC 3339 time ({e})"),
        })?;
        let owner = if get(tags::DEPLOYMENT)? == own.deployment { Owner::Ours } else { Owner::Foreign };
        let overrides = l
            .tags
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(tags::CONFIG_PREFIX).map(|k| (k.to_string(), v.clone())))
            .collect();
        Ok(Backup {
            id: l.id.into(),
            name: l.tags.get("Name").cloned().unwrap_or_else(|| l.id.to_string()),
            kind: l.kind,
            region: l.region.into(),
            account: l.account.into(),
            source: get(tags::SOURCE)?.clone(),
            created_at,
            aws_created_at: l.aws_created_at,
            retention: RetentionType::from_name(get(tags::RETENTION)?),
            owner,
            available: l.available,
            overrides,
            parts: l.parts.clone(),
            copy_of: l.tags.get(tags::COPY_OF).cloned(),
            pulled_from: l.tags.get(tags::PULLED_FROM).cloned(),
        })
    }

    /// Shelvery's backups made by this account in this region (not DR or bunker copies).
    /// Adoption needs proof: `shelvery:region` and `shelvery:src_account` must be present and
    /// name this region and account. A Shelvery backup without them is unreadable (kept and
    /// reported), never adopted; one made elsewhere is not a backup of this deployment.
    fn from_shelvery_tags(l: &Listed<'_>) -> Result<Option<Backup>, Unreadable> {
        use tags::shelvery as s;
        let t = |k: &str| l.tags.get(k).map(String::as_str).filter(|v| !v.is_empty());
        if t(s::DR_COPY) == Some("true") || t(s::CROSS_ACCOUNT_COPY) == Some("true") {
            return Ok(None);
        }
        let missing = |tag: &'static str| Unreadable {
            id: l.id.into(),
            tag,
            problem:
                "missing (a Shelvery backup is adopted only when its tags prove it was made in this account and region)"
                    .into(),
        };
        let account = t(s::SRC_ACCOUNT).ok_or_else(|| missing(s::SRC_ACCOUNT))?;
        let region = t(s::REGION).ok_or_else(|| missing(s::REGION))?;
        if account != l.account || region != l.region {
            return Ok(None);
        }
        let date = t(s::DATE_CREATED).ok_or_else(|| missing(s::DATE_CREATED))?;
        let created_at = parse_shelvery_date(date).ok_or_else(|| Unreadable {
            id: l.id.into(),
            tag: s::DATE_CREATED,
            problem: format!("'{date}', not %Y-%m-%d-%H%M"),
        })?;
        Ok(Some(Backup {
            id: l.id.into(),
            name: t(s::NAME).or(t("Name")).unwrap_or(l.id).to_string(),
            kind: l.kind,
            region: l.region.into(),
            account: l.account.into(),
            source: t(s::ENTITY_ID).ok_or_else(|| missing(s::ENTITY_ID))?.to_string(),
            created_at,
            aws_created_at: l.aws_created_at,
            retention: RetentionType::from_name(t(s::RETENTION_TYPE).ok_or_else(|| missing(s::RETENTION_TYPE))?),
            owner: Owner::Shelvery,
            available: l.available,
            overrides: BTreeMap::new(),
            parts: l.parts.clone(),
            copy_of: None,
            pulled_from: None,
        }))
    }
}

/// Shelvery's `date_created`: `%Y-%m-%d-%H%M` UTC, or the legacy `%Y%m%d-%H%M`.
pub fn parse_shelvery_date(s: &str) -> Option<Timestamp> {
    let (date, hm) = s.rsplit_once('-')?;
    let date = date.replace('-', "");
    if date.len() != 8 || hm.len() != 4 || !date.bytes().chain(hm.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |s: &str| s.parse::<i16>().ok();
    let d = jiff::civil::Date::new(n(&date[..4])?, n(&date[4..6])? as i8, n(&date[6..])? as i8).ok()?;
    let time = jiff::civil::Time::new(n(&hm[..2])? as i8, n(&hm[2..])? as i8, 0, 0).ok()?;
    let dt = d.to_datetime(time);
    dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed<'a>(tags: &'a Tags) -> Listed<'a> {
        Listed {
            id: "snap-1",
            kind: ResourceKind::Ebs,
            region: "us-east-1",
            account: "111122223333",
            tags,
            available: true,
            aws_created_at: None,
            parts: vec![],
        }
    }

    fn t(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const OURS: Ownership<'static> = Ownership { deployment: "dep", compat_shelvery: false };

    #[test]
    fn bunker_tags_round_trip_and_ownership() {
        let mut tags = t(&[
            (tags::MANAGED, "true"),
            (tags::DEPLOYMENT, "dep"),
            (tags::KIND, "ebs"),
            (tags::SOURCE, "vol-1"),
            (tags::CREATED_AT, "2026-01-01T01:00:00Z"),
            (tags::RETENTION, "weekly"),
            ("bunker:config:keep_weekly", "3"),
        ]);
        let b = Backup::from_listed(&listed(&tags), &OURS).unwrap().unwrap();
        assert_eq!((b.owner, b.retention.clone(), b.source.as_str()), (Owner::Ours, RetentionType::Weekly, "vol-1"));
        assert_eq!(b.overrides["keep_weekly"], "3");
        tags.insert(tags::DEPLOYMENT.into(), "other".into());
        assert_eq!(Backup::from_listed(&listed(&tags), &OURS).unwrap().unwrap().owner, Owner::Foreign);
        tags.insert(tags::CREATED_AT.into(), "yesterday".into());
        let e = Backup::from_listed(&listed(&tags), &OURS).unwrap_err();
        assert!(e.to_string().contains("bunker:created_at") && e.to_string().contains("yesterday"), "{e}");
    }

    #[test]
    fn shelvery_backups_only_with_compat_and_only_home_originals() {
        let tags = t(&[
            ("shelvery:backup", "true"),
            ("shelvery:date_created", "2026-01-05-0100"),
            ("shelvery:retention_type", "daily"),
            ("shelvery:entity_id", "vol-9"),
            ("shelvery:region", "us-east-1"),
            ("shelvery:src_account", "111122223333"),
        ]);
        assert_eq!(Backup::from_listed(&listed(&tags), &OURS).unwrap(), None);
        let compat = Ownership { deployment: "dep", compat_shelvery: true };
        let b = Backup::from_listed(&listed(&tags), &compat).unwrap().unwrap();
        assert_eq!(b.owner, Owner::Shelvery);
        assert_eq!(b.created_at, "2026-01-05T01:00:00Z".parse().unwrap());
        let mut dr = tags.clone();
        dr.insert("shelvery:dr_copy".into(), "true".into());
        assert_eq!(Backup::from_listed(&listed(&dr), &compat).unwrap(), None);
        let mut other = tags.clone();
        other.insert("shelvery:src_account".into(), "999999999999".into());
        assert_eq!(Backup::from_listed(&listed(&other), &compat).unwrap(), None);
        // No proof of origin: never adopted, reported as unreadable instead.
        for tag in ["shelvery:region", "shelvery:src_account"] {
            let mut unproven = tags.clone();
            unproven.remove(tag);
            let e = Backup::from_listed(&listed(&unproven), &compat).unwrap_err();
            assert_eq!(e.tag, tag);
            unproven.insert(tag.into(), String::new());
            assert!(Backup::from_listed(&listed(&unproven), &compat).is_err(), "empty {tag} proves nothing");
        }
    }

    #[test]
    fn shelvery_dates() {
        assert_eq!(parse_shelvery_date("2026-11-21-1728"), "2026-11-21T17:28:00Z".parse().ok());
        assert_eq!(parse_shelvery_date("20261121-1728"), "2026-11-21T17:28:00Z".parse().ok());
        assert_eq!(parse_shelvery_date("2026-02-30-1728"), None);
        assert_eq!(parse_shelvery_date("2026-11-21-2460"), None);
        assert_eq!(parse_shelvery_date("garbage"), None);
    }
}
