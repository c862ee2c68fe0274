//! Grandfather-father-son retention: which type a new backup gets, when a backup expires,
//! and the clean-up plan. Pure: time is an argument.
//!
//! Expiry is "dynamic" (as Shelvery's): it is computed at clean time from the policy in force,
//! not stored on the backup. Raising a keep value rescues backups; lowering it deletes them at
//! the next clean.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use serde::{Deserialize, Serialize};

use crate::backup::{Backup, Owner};

/// The retention type of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetentionType {
    /// Kept `keep_daily` days.
    Daily,
    /// Created on Sundays; kept `keep_weekly` weeks.
    Weekly,
    /// Created on the 1st of a month; kept `keep_monthly` calendar months.
    Monthly,
    /// Created on 1 January; kept `keep_yearly` calendar years.
    Yearly,
    /// A named custom type (`hourly:2d`), chosen per run with `--retention NAME`.
    Custom(String),
}

impl RetentionType {
    /// The name written to `bunker:retention`.
    pub fn as_str(&self) -> &str {
        match self {
            RetentionType::Daily => "daily",
            RetentionType::Weekly => "weekly",
            RetentionType::Monthly => "monthly",
            RetentionType::Yearly => "yearly",
            RetentionType::Custom(name) => name,
        }
    }

    /// Parses a tag value; any name that is not a standard type is a custom type.
    pub fn from_name(name: &str) -> RetentionType {
        match name {
            "daily" => RetentionType::Daily,
            "weekly" => RetentionType::Weekly,
            "monthly" => RetentionType::Monthly,
            "yearly" => RetentionType::Yearly,
            other => RetentionType::Custom(other.to_string()),
        }
    }

    /// The next lower standard type in the keep = 0 fallback chain.
    fn lower(&self) -> Option<RetentionType> {
        match self {
            RetentionType::Yearly => Some(RetentionType::Monthly),
            RetentionType::Monthly => Some(RetentionType::Weekly),
            RetentionType::Weekly => Some(RetentionType::Daily),
            RetentionType::Daily | RetentionType::Custom(_) => None,
        }
    }
}

impl fmt::Display for RetentionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RetentionType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RetentionType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RetentionType::from_name(&String::deserialize(d)?))
    }
}

/// How many of each standard type to keep (days, weeks, calendar months, calendar years).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keep {
    /// Days a daily backup is kept.
    pub daily: u32,
    /// Weeks a weekly backup is kept.
    pub weekly: u32,
    /// Calendar months a monthly backup is kept.
    pub monthly: u32,
    /// Calendar years a yearly backup is kept.
    pub yearly: u32,
}

impl Default for Keep {
    /// Shelvery's defaults: 14 / 8 / 12 / 10.
    fn default() -> Self {
        Keep { daily: 14, weekly: 8, monthly: 12, yearly: 10 }
    }
}

/// The retention policy in force for one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Keep counts of the standard types.
    pub keep: Keep,
    /// Custom types: name → how long a backup of that type is kept.
    pub custom: BTreeMap<String, SignedDuration>,
    /// The zone whose calendar decides "1 January", "1st", "Sunday" and calendar arithmetic.
    pub timezone: TimeZone,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { keep: Keep::default(), custom: BTreeMap::new(), timezone: TimeZone::UTC }
    }
}

impl Policy {
    fn keep_of(&self, t: &RetentionType) -> Option<u32> {
        match t {
            RetentionType::Daily => Some(self.keep.daily),
            RetentionType::Weekly => Some(self.keep.weekly),
            RetentionType::Monthly => Some(self.keep.monthly),
            RetentionType::Yearly => Some(self.keep.yearly),
            RetentionType::Custom(_) => None,
        }
    }

    /// The type a backup created at `now` gets: by calendar date in the policy's zone,
    /// 1 January → yearly, 1st → monthly, Sunday → weekly, else daily; `forced` (from
    /// `--retention`) replaces the calendar. A standard type whose keep is 0 falls back
    /// yearly → monthly → weekly → daily; `None` means skip (daily keep is 0, or the custom
    /// type is not defined).
    pub fn type_for_creation(&self, now: Timestamp, forced: Option<&RetentionType>) -> Option<RetentionType> {
        let mut t = match forced {
            Some(RetentionType::Custom(name)) => {
                return self.custom.contains_key(name).then(|| RetentionType::Custom(name.clone()));
            }
            Some(t) => t.clone(),
            None => calendar_type(now, &self.timezone),
        };
        loop {
            if self.keep_of(&t).is_some_and(|k| k > 0) {
                return Some(t);
            }
            t = t.lower()?;
        }
    }

    /// When a backup of type `t` created at `created_at` expires under this policy, or an
    /// error naming the custom type that is not defined.
    pub fn expires_at(&self, created_at: Timestamp, t: &RetentionType) -> Result<Timestamp, UndefinedRetention> {
        let span = match t {
            RetentionType::Custom(name) => {
                let d = self.custom.get(name).ok_or_else(|| UndefinedRetention(name.clone()))?;
                return Ok(created_at.saturating_add(*d).expect("signed durations never fail to saturate"));
            }
            RetentionType::Daily => Span::new().days(i64::from(self.keep.daily)),
            RetentionType::Weekly => Span::new().weeks(i64::from(self.keep.weekly)),
            RetentionType::Monthly => Span::new().months(i64::from(self.keep.monthly)),
            RetentionType::Yearly => Span::new().years(i64::from(self.keep.yearly)),
        };
        // Calendar arithmetic in the policy's zone ("one month after 31 January" is the last
        // day of February; a day across a DST change is 23 or 25 hours). Past the end of
        // representable time, never expire.
        Ok(created_at
            .to_zoned(self.timezone.clone())
            .checked_add(span)
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MAX))
    }
}

/// The calendar type of a date: yearly, monthly, weekly or daily.
pub fn calendar_type(now: Timestamp, tz: &TimeZone) -> RetentionType {
    let date = now.to_zoned(tz.clone()).date();
    if date.month() == 1 && date.day() == 1 {
        RetentionType::Yearly
    } else if date.day() == 1 {
        RetentionType::Monthly
    } else if date.weekday() == jiff::civil::Weekday::Sunday {
        RetentionType::Weekly
    } else {
        RetentionType::Daily
    }
}

/// A custom retention type that the policy in force does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retention type '{0}' is not defined: add it to custom_retention (e.g. \"{0}:7d\")")]
pub struct UndefinedRetention(pub String);

/// One backup handed to the planner, with what the planner needs to know about it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The backup.
    pub backup: &'a Backup,
    /// The policy in force for its source, or why none could be determined.
    pub policy: Result<&'a Policy, &'a str>,
    /// Whether the source resource still exists.
    pub source_exists: bool,
}

/// Keep or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Leave the backup alone.
    Keep,
    /// Delete the backup.
    Delete,
}

/// Why the planner decided as it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", content = "detail", rename_all = "kebab-case")]
pub enum Reason {
    /// Made by another deployment, or not by bunker: never deleted.
    NotOwned,
    /// Not yet available (pending AMI, snapshot in progress): nothing acts on it.
    NotAvailable,
    /// The newest available backup of a resource that still exists is always kept.
    NewestOfLiveSource,
    /// Expiry is in the future.
    NotExpired,
    /// Expiry has passed.
    Expired,
    /// Its custom type is not defined in the policy in force; kept until it is.
    UndefinedRetention(String),
    /// Its source's configuration is invalid; kept until it is fixed.
    ConfigError(String),
    /// Dated after `now` (beyond [`CLOCK_SKEW`]) by its `bunker:created_at` tag or by AWS:
    /// a host clock ran ahead, or `--now` was in the future. Never counted as the newest,
    /// never deleted while suspicious; reported. The detail names the date.
    FutureDated(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotOwned => f.write_str("not owned by this deployment"),
            Reason::NotAvailable => f.write_str("not yet available"),
            Reason::NewestOfLiveSource => f.write_str("newest backup of a resource that still exists"),
            Reason::NotExpired => f.write_str("not expired"),
            Reason::Expired => f.write_str("expired"),
            Reason::UndefinedRetention(name) => write!(f, "{}", UndefinedRetention(name.clone())),
            Reason::ConfigError(e) => write!(f, "configuration error: {e}"),
            Reason::FutureDated(d) => {
                write!(f, "suspicious: dated {d}, after now; kept, and not counted as the newest")
            }
        }
    }
}

/// The planner's verdict on one candidate (same index as the input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Keep or delete.
    pub action: Action,
    /// When the backup expires under the policy in force, where known.
    pub expires_at: Option<Timestamp>,
    /// Why.
    pub reason: Reason,
}

/// How far after `now` a backup's date may lie and still be believed: clocks of the host
/// that made it and of the host that cleans may differ by this much.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(300);

/// The date that makes a backup suspicious: its `bunker:created_at` or AWS's own creation
/// time, whichever lies after `now` + [`CLOCK_SKEW`].
fn future_date(b: &Backup, now: Timestamp) -> Option<Timestamp> {
    let limit = now.saturating_add(CLOCK_SKEW).expect("signed durations never fail to saturate");
    [Some(b.created_at), b.aws_created_at].into_iter().flatten().find(|t| *t > limit)
}

/// The time a backup's retention counts from: its `bunker:created_at`, unless AWS made it
/// later than that by more than [`CLOCK_SKEW`] (the host that tagged it had a clock behind
/// AWS's); then AWS's time, so a wrong tag can never shorten a backup's life.
fn retained_from(b: &Backup) -> Timestamp {
    match b.aws_created_at {
        Some(aws) if aws > b.created_at.saturating_add(CLOCK_SKEW).expect("saturates") => aws,
        _ => b.created_at,
    }
}

/// The newest available owned backup per live source (region, source) → candidate index.
///
/// Only backups that are not future-dated count, and among them, those AWS says existed by
/// `now` come first: the protected newest is then a backup whose AWS creation time is at or
/// before `now` whenever the source has one.
fn newest_per_source<'a>(now: Timestamp, candidates: &'a [Candidate<'a>]) -> HashMap<(&'a str, &'a str), usize> {
    let mut newest: HashMap<(&str, &str), (u8, usize)> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        let b = c.backup;
        if !c.source_exists || !b.available || b.owner == Owner::Foreign || future_date(b, now).is_some() {
            continue;
        }
        // AWS dates it by now (2); AWS gave no date (1); AWS dates it just after now (0).
        let confirmed = match b.aws_created_at {
            Some(t) if t <= now => 2u8,
            None => 1,
            Some(_) => 0,
        };
        let key = |b: &'a Backup, confirmed: u8| (confirmed, b.created_at, b.aws_created_at, b.id.as_str());
        newest
            .entry((b.region.as_str(), b.source.as_str()))
            .and_modify(|(held, j)| {
                if key(b, confirmed) > key(candidates[*j].backup, *held) {
                    *held = confirmed;
                    *j = i;
                }
            })
            .or_insert((confirmed, i));
    }
    newest.into_iter().map(|(k, (_, i))| (k, i)).collect()
}

/// Decides, for every candidate, whether the clean-up at `now` keeps or deletes it.
///
/// Guarantees (property-tested): a backup not owned by this deployment is never deleted;
/// neither is one not yet available, nor one dated after `now` (beyond [`CLOCK_SKEW`], by
/// its tag or by AWS), nor the newest owned backup of a source that still exists, chosen
/// among the backups AWS says existed by `now`; a backup is deleted only if
/// `now >= expires_at` under its policy, counted from the later of its tag and AWS's time
/// when the two disagree by more than the skew.
pub fn plan(now: Timestamp, candidates: &[Candidate<'_>]) -> Vec<Decision> {
    let newest = newest_per_source(now, candidates);
    candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let b = c.backup;
            let keep = |expires_at, reason| Decision { action: Action::Keep, expires_at, reason };
            if b.owner == Owner::Foreign {
                return keep(None, Reason::NotOwned);
            }
            let policy = match c.policy {
                Ok(p) => p,
                Err(e) => return keep(None, Reason::ConfigError(e.to_string())),
            };
            let expires_at = match policy.expires_at(retained_from(b), &b.retention) {
                Ok(t) => t,
                Err(UndefinedRetention(name)) => return keep(None, Reason::UndefinedRetention(name)),
            };
            if !b.available {
                keep(Some(expires_at), Reason::NotAvailable)
            } else if let Some(t) = future_date(b, now) {
                keep(Some(expires_at), Reason::FutureDated(crate::tags::format_timestamp(t)))
            } else if newest.get(&(b.region.as_str(), b.source.as_str())) == Some(&i) {
                keep(Some(expires_at), Reason::NewestOfLiveSource)
            } else if now >= expires_at {
                Decision { action: Action::Delete, expires_at: Some(expires_at), reason: Reason::Expired }
            } else {
                keep(Some(expires_at), Reason::NotExpired)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResourceKind;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn backup(id: &str, source: &str, created: &str, t: RetentionType) -> Backup {
        Backup {
            id: id.into(),
            name: id.into(),
            kind: ResourceKind::Ebs,
            region: "us-east-1".into(),
            account: "123456789012".into(),
            source: source.into(),
            created_at: ts(created),
            aws_created_at: None,
            retention: t,
            owner: Owner::Ours,
            available: true,
            overrides: BTreeMap::new(),
            parts: vec![],
            copy_of: None,
            pulled_from: None,
        }
    }

    #[test]
    fn calendar_types_in_utc_and_in_a_zone() {
        let p = Policy::default();
        assert_eq!(p.type_for_creation(ts("2026-01-01T01:00:00Z"), None), Some(RetentionType::Yearly));
        assert_eq!(p.type_for_creation(ts("2026-03-01T01:00:00Z"), None), Some(RetentionType::Monthly));
        assert_eq!(p.type_for_creation(ts("2026-11-22T01:00:00Z"), None), Some(RetentionType::Weekly)); // Sunday
        assert_eq!(p.type_for_creation(ts("2026-11-21T01:00:00Z"), None), Some(RetentionType::Daily));
        // 2025-12-31T20:00Z is already 1 January 2026 in Kiritimati (UTC+14).
        let k = Policy { timezone: TimeZone::get("Pacific/Kiritimati").unwrap(), ..Policy::default() };
        assert_eq!(k.type_for_creation(ts("2025-12-31T20:00:00Z"), None), Some(RetentionType::Yearly));
        assert_eq!(p.type_for_creation(ts("2025-12-31T20:00:00Z"), None), Some(RetentionType::Daily));
    }

    #[test]
    fn keep_zero_falls_back_down_the_chain_then_skips() {
        let mut p = Policy { keep: Keep { daily: 3, weekly: 0, monthly: 0, yearly: 0 }, ..Policy::default() };
        assert_eq!(p.type_for_creation(ts("2026-01-01T00:00:00Z"), None), Some(RetentionType::Daily));
        p.keep.weekly = 2;
        assert_eq!(p.type_for_creation(ts("2026-01-01T00:00:00Z"), None), Some(RetentionType::Weekly));
        p.keep = Keep { daily: 0, weekly: 0, monthly: 0, yearly: 0 };
        assert_eq!(p.type_for_creation(ts("2026-01-01T00:00:00Z"), None), None);
        assert_eq!(p.type_for_creation(ts("2026-01-01T00:00:00Z"), Some(&RetentionType::Custom("x".into()))), None);
        p.custom.insert("x".into(), SignedDuration::from_hours(2));
        assert_eq!(
            p.type_for_creation(ts("2026-01-01T00:00:00Z"), Some(&RetentionType::Custom("x".into()))),
            Some(RetentionType::Custom("x".into()))
        );
    }

    #[test]
    fn calendar_months_clamp_to_month_end() {
        let p = Policy { keep: Keep { monthly: 1, ..Keep::default() }, ..Policy::default() };
        assert_eq!(
            p.expires_at(ts("2026-01-31T10:00:00Z"), &RetentionType::Monthly).unwrap(),
            ts("2026-02-28T10:00:00Z")
        );
        let y = Policy { keep: Keep { yearly: 1, ..Keep::default() }, ..Policy::default() };
        assert_eq!(
            y.expires_at(ts("2028-02-29T00:00:00Z"), &RetentionType::Yearly).unwrap(),
            ts("2029-02-28T00:00:00Z")
        );
    }

    #[test]
    fn plan_keeps_newest_of_live_source_and_foreign() {
        let p = Policy { keep: Keep { daily: 1, ..Keep::default() }, ..Policy::default() };
        let a = backup("a", "vol-1", "2026-01-02T00:00:00Z", RetentionType::Daily);
        let b = backup("b", "vol-1", "2026-01-03T00:00:00Z", RetentionType::Daily);
        let mut f = backup("f", "vol-1", "2026-01-01T00:00:00Z", RetentionType::Daily);
        f.owner = Owner::Foreign;
        let now = ts("2026-02-01T00:00:00Z");
        let c = |b, alive| Candidate { backup: b, policy: Ok(&p), source_exists: alive };
        let d = plan(now, &[c(&a, true), c(&b, true), c(&f, true)]);
        assert_eq!(d[0].action, Action::Delete);
        assert_eq!((d[1].action, &d[1].reason), (Action::Keep, &Reason::NewestOfLiveSource));
        assert_eq!((d[2].action, &d[2].reason), (Action::Keep, &Reason::NotOwned));
        // Source gone: nothing protects the newest.
        let d = plan(now, &[c(&a, false), c(&b, false)]);
        assert!(d.iter().all(|d| d.action == Action::Delete));
    }

    #[test]
    fn a_future_dated_backup_never_takes_the_newest_protection() {
        // Daily backups of a live volume, 1–5 January, and one made by a host whose clock ran
        // a year ahead (its tag says 2027). Cleaning on 20 January with keep_daily = 1 keeps
        // the newest real backup (5 January) and the suspicious one; the rest expire.
        let p = Policy { keep: Keep { daily: 1, ..Keep::default() }, ..Policy::default() };
        let real: Vec<Backup> = (1..=5)
            .map(|d| {
                let mut b = backup(&format!("r{d}"), "vol-1", &format!("2026-01-0{d}T01:00:00Z"), RetentionType::Daily);
                b.aws_created_at = Some(b.created_at);
                b
            })
            .collect();
        let mut ahead = backup("ahead", "vol-1", "2027-01-03T01:00:00Z", RetentionType::Daily);
        ahead.aws_created_at = Some(ts("2026-01-03T01:00:02Z"));
        let now = ts("2026-01-20T00:00:00Z");
        let mut cands: Vec<Candidate<'_>> =
            real.iter().map(|b| Candidate { backup: b, policy: Ok(&p), source_exists: true }).collect();
        cands.push(Candidate { backup: &ahead, policy: Ok(&p), source_exists: true });
        let d = plan(now, &cands);
        assert_eq!(d[4].reason, Reason::NewestOfLiveSource, "the newest real backup survives");
        assert_eq!(d[5].reason, Reason::FutureDated("2027-01-03T01:00:00Z".into()));
        assert!(d[..4].iter().all(|d| d.action == Action::Delete));
        // AWS's own date counts too: a tag that looks right on a backup AWS dates later.
        let mut lying = backup("lying", "vol-1", "2026-01-19T01:00:00Z", RetentionType::Daily);
        lying.aws_created_at = Some(ts("2026-03-01T00:00:00Z"));
        let d = plan(now, &[cands[4].clone(), Candidate { backup: &lying, policy: Ok(&p), source_exists: true }]);
        assert_eq!(d[0].reason, Reason::NewestOfLiveSource);
        assert_eq!(d[1].reason, Reason::FutureDated("2026-03-01T00:00:00Z".into()));
        // A tag from a clock behind AWS's: retention counts from AWS's time.
        let mut behind = backup("behind", "vol-1", "2025-06-01T01:00:00Z", RetentionType::Daily);
        behind.aws_created_at = Some(ts("2026-01-19T12:00:00Z"));
        let d = plan(now, &[cands[4].clone(), Candidate { backup: &behind, policy: Ok(&p), source_exists: true }]);
        assert_eq!((d[1].action, d[1].expires_at), (Action::Keep, Some(ts("2026-01-20T12:00:00Z"))));
        // Within the skew allowance a backup is believed.
        let mut close = backup("close", "vol-1", "2026-01-20T00:04:00Z", RetentionType::Daily);
        close.aws_created_at = Some(ts("2026-01-19T23:59:00Z"));
        let d = plan(now, &[cands[4].clone(), Candidate { backup: &close, policy: Ok(&p), source_exists: true }]);
        assert_eq!((d[0].action, &d[1].reason), (Action::Delete, &Reason::NewestOfLiveSource));
    }

    #[test]
    fn a_clock_behind_aws_deletes_nothing() {
        // `now` before AWS's dates (a host clock behind, or `--now` in the past): the backups
        // look as if from the future, so nothing is deleted on the strength of that `now`.
        let p = Policy { keep: Keep { daily: 1, ..Keep::default() }, ..Policy::default() };
        let mut a = backup("a", "vol-1", "2026-01-02T00:00:00Z", RetentionType::Daily);
        let mut b = backup("b", "vol-1", "2026-01-03T00:00:00Z", RetentionType::Daily);
        a.aws_created_at = Some(ts("2026-01-10T00:00:00Z"));
        b.aws_created_at = Some(ts("2026-01-10T00:00:01Z"));
        let now = ts("2026-01-09T00:00:00Z");
        let c = |b| Candidate { backup: b, policy: Ok(&p), source_exists: true };
        // AWS's dates are after now: both suspicious, neither deleted.
        let d = plan(now, &[c(&a), c(&b)]);
        assert!(d.iter().all(|d| matches!(d.reason, Reason::FutureDated(_))), "{d:?}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::ResourceKind;
    use proptest::prelude::*;

    /// Tag clock skew in seconds: mostly none, sometimes a few minutes, sometimes a year either way.
    fn arb_skew() -> impl Strategy<Value = i64> {
        prop_oneof![Just(0i64), -600i64..600, -31_536_000i64..31_536_000]
    }

    fn arb_backup() -> impl Strategy<Value = Backup> {
        (0u8..4, 0i64..40_000_000, 0u8..5, 0u8..10, any::<bool>(), arb_skew(), any::<bool>()).prop_map(
            |(src, secs, t, owner, available, skew, aws_known)| Backup {
                id: format!("b{secs}-{src}"),
                name: String::new(),
                kind: ResourceKind::Ebs,
                region: "r".into(),
                account: "a".into(),
                source: format!("vol-{src}"),
                created_at: Timestamp::from_second(1_700_000_000 + secs + skew).unwrap(),
                aws_created_at: aws_known.then(|| Timestamp::from_second(1_700_000_000 + secs).unwrap()),
                retention: [
                    RetentionType::Daily,
                    RetentionType::Weekly,
                    RetentionType::Monthly,
                    RetentionType::Yearly,
                    RetentionType::Custom("h".into()),
                ][t as usize]
                    .clone(),
                owner: match owner {
                    0 => Owner::Foreign,
                    1 => Owner::Shelvery,
                    _ => Owner::Ours,
                },
                available: available || owner > 2,
                overrides: BTreeMap::new(),
                parts: vec![],
                copy_of: None,
                pulled_from: None,
            },
        )
    }

    fn arb_keep() -> impl Strategy<Value = Keep> {
        (0u32..30, 0u32..10, 0u32..14, 0u32..3).prop_map(|(daily, weekly, monthly, yearly)| Keep {
            daily,
            weekly,
            monthly,
            yearly,
        })
    }

    fn policy(keep: Keep, hours: i64) -> Policy {
        Policy { keep, custom: [("h".to_string(), SignedDuration::from_hours(hours))].into(), timezone: TimeZone::UTC }
    }

    fn is_alive(live: &[bool], b: &Backup) -> bool {
        live[b.source[4..].parse::<usize>().unwrap()]
    }

    /// The plan at `now` for `backups` under `keep`, sources alive as `live` says.
    fn plan_all(backups: &[Backup], keep: Keep, live: &[bool], now: i64) -> (Timestamp, Vec<Decision>) {
        let p = policy(keep, 5);
        let cands: Vec<Candidate<'_>> =
            backups.iter().map(|b| Candidate { backup: b, policy: Ok(&p), source_exists: is_alive(live, b) }).collect();
        let now = Timestamp::from_second(now).unwrap();
        (now, plan(now, &cands))
    }

    proptest! {
        #[test]
        fn never_deletes_foreign_pending_or_newest_of_live_source(
            backups in proptest::collection::vec(arb_backup(), 0..60),
            keep in arb_keep(),
            live in proptest::collection::vec(any::<bool>(), 4),
            now in 1_700_000_000i64..1_800_000_000,
        ) {
            let (now, decisions) = plan_all(&backups, keep, &live, now);
            let alive = |b: &Backup| is_alive(&live, b);
            for (b, d) in backups.iter().zip(&decisions) {
                if d.action == Action::Delete {
                    prop_assert!(b.owner != Owner::Foreign);
                    prop_assert!(b.available);
                    prop_assert!(now >= d.expires_at.unwrap());
                    if alive(b) {
                        // another available owned backup of the same source survives
                        let other_kept = backups.iter().zip(&decisions).any(|(o, od)| {
                            !std::ptr::eq(o, b) && o.source == b.source && o.owner != Owner::Foreign && o.available && od.action == Action::Keep
                        });
                        prop_assert!(other_kept);
                    }
                    prop_assert!(b.created_at <= now + CLOCK_SKEW, "a future-dated backup was deleted");
                    prop_assert!(now >= retained_from(b), "deleted before AWS says it was made");
                }
            }
        }

        #[test]
        fn every_live_source_keeps_a_backup_aws_dates_before_now(
            backups in proptest::collection::vec(arb_backup(), 0..60),
            keep in arb_keep(),
            live in proptest::collection::vec(any::<bool>(), 4),
            now in 1_700_000_000i64..1_800_000_000,
        ) {
            let (now, decisions) = plan_all(&backups, keep, &live, now);
            let alive = |b: &Backup| is_alive(&live, b);
            // A real backup: owned, available, and AWS says it existed by now.
            let real = |b: &Backup| b.owner != Owner::Foreign && b.available && b.aws_created_at.is_some_and(|t| t <= now);
            for src in 0..4 {
                let of_src = |b: &Backup| b.source == format!("vol-{src}") && alive(b) && real(b);
                if backups.iter().any(of_src) {
                    let kept = backups.iter().zip(&decisions).any(|(b, d)| of_src(b) && d.action == Action::Keep);
                    prop_assert!(kept, "vol-{src} lost every backup AWS dates before now");
                }
            }
            for (b, d) in backups.iter().zip(&decisions) {
                if b.aws_created_at.is_some_and(|t| t > now + CLOCK_SKEW) || b.created_at > now + CLOCK_SKEW {
                    prop_assert_eq!(d.action, Action::Keep, "suspicious backups are never deleted");
                }
            }
        }

        #[test]
        fn monotone_in_keep_values(
            backups in proptest::collection::vec(arb_backup(), 0..60),
            keep in arb_keep(),
            bump in arb_keep(),
            now in 1_700_000_000i64..1_800_000_000,
        ) {
            let lo = policy(keep, 5);
            let hi = policy(Keep { daily: keep.daily + bump.daily, weekly: keep.weekly + bump.weekly, monthly: keep.monthly + bump.monthly, yearly: keep.yearly + bump.yearly }, 7);
            let now = Timestamp::from_second(now).unwrap();
            let run = |p: &Policy| {
                let cands: Vec<Candidate<'_>> = backups.iter().map(|b| Candidate { backup: b, policy: Ok(p), source_exists: true }).collect();
                plan(now, &cands)
            };
            for (l, h) in run(&lo).iter().zip(run(&hi)) {
                // Raising keep values never turns a keep into a delete.
                prop_assert!(!(l.action == Action::Keep && h.action == Action::Delete));
            }
        }
    }
}
