//! Copy and share: what remains to be done for one backup, given what exists.
//!
//! The plan is a pure function of AWS state (the source backup, its copies found by their
//! [`tags::COPY_OF`] tag, the accounts each is shared with), so an event replayed three
//! times, a restart, or a reconciliation scan all reach the same answer and never make a
//! second copy.

use std::collections::BTreeMap;

use crate::tags::{self, Tags};

/// The value of [`tags::COPY_OF`] on copies of backup `id` in `region`.
pub fn copy_of(region: &str, id: &str) -> String {
    format!("{region}:{id}")
}

/// Tags of a copy: the source's tags, owned by `deployment` (the deployment of the copy's
/// region), marked as a DR copy of `region:id`. AWS allows 50 tags: copied resource tags
/// give way to the two added here.
pub fn copy_tags(source: &Tags, region: &str, id: &str, deployment: &str) -> Tags {
    let mut t = source.clone();
    t.insert(tags::DEPLOYMENT.into(), deployment.into());
    t.insert(tags::COPY_OF.into(), copy_of(region, id));
    t.insert(tags::DR_COPY.into(), "true".into());
    while t.len() > tags::MAX_TAGS {
        let Some(k) = t.keys().rev().find(|k| !k.starts_with("bunker:") && *k != "Name").cloned() else { break };
        t.remove(&k);
    }
    t
}

/// What is known of one backup (a source or a copy).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackupState {
    /// AWS id.
    pub id: String,
    /// Available / completed.
    pub available: bool,
    /// Accounts it is shared with.
    pub shared_with: Vec<String>,
    /// Encrypted at rest.
    pub encrypted: bool,
    /// The KMS key that encrypts it, as AWS reports it.
    pub kms_key: Option<String>,
}

/// Whether an encrypted backup must be re-encrypted under `share_key` before it is shared:
/// AWS refuses to share a backup under its AWS-managed default key, and the accounts can
/// only use one whose key grants them access, which the share key does. A key given as an
/// alias cannot be compared with the ARN AWS reports, so an alias always re-encrypts.
pub fn needs_reencryption(b: &BackupState, share_key: Option<&str>) -> bool {
    match share_key {
        Some(k) if b.encrypted => {
            b.kms_key.as_deref().is_none_or(|have| !(have == k || have.ends_with(&format!("/{k}"))))
        }
        _ => false,
    }
}

/// The name of the re-encrypted copy of a backup called `name` (unique in its region).
pub fn reencrypted_name(name: &str) -> String {
    let mut base: String = name.chars().take(crate::naming::MAX_LEN - 3).collect();
    while base.ends_with('-') {
        base.pop();
    }
    format!("{base}-re")
}

/// Where backups go.
#[derive(Debug, Clone, Copy)]
pub struct Targets<'a> {
    /// DR regions.
    pub dr_regions: &'a [String],
    /// Accounts to share with.
    pub share_accounts: &'a [String],
    /// The key encrypted backups of the source region are shared under, if any.
    pub share_key: Option<&'a str>,
}

impl<'a> Targets<'a> {
    /// The targets of a backup of `kind`: no DR copies where a kind is not copied backup by
    /// backup (Redshift: a cluster setting copies), at most the kind's share limit of accounts
    /// (the rest are left out, named by `bunker doctor`), and no re-encryption where the kind
    /// cannot copy.
    pub fn for_kind(
        kind: crate::ResourceKind,
        dr_regions: &'a [String],
        share_accounts: &'a [String],
        share_key: Option<&'a str>,
    ) -> Targets<'a> {
        let per_backup = kind.copies_per_backup();
        let max = kind.max_share_accounts().unwrap_or(usize::MAX).min(share_accounts.len());
        Targets {
            dr_regions: if per_backup { dr_regions } else { &[] },
            share_accounts: &share_accounts[..max],
            share_key: share_key.filter(|_| per_backup),
        }
    }
}

/// How a kind copied by a cluster setting (Redshift: `EnableSnapshotCopy`) should copy one
/// cluster's snapshots: AWS copies every snapshot of the cluster to one region, and keeps each
/// manual snapshot's copy there for one retention period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCopy {
    /// The destination: the first of `dr_regions` other than the source region.
    pub destination: String,
    /// Days AWS keeps each copied manual snapshot: the longest a DR copy of any retention type
    /// is kept (`keep_*_dr`), since one period applies to every copy; 1 to 3,653.
    pub manual_retention_days: i32,
    /// The key in the destination for an encrypted cluster's copies (`dr_kms_keys`).
    pub kms_key: Option<String>,
    /// The snapshot copy grant for that key, in the destination (one per deployment).
    pub grant_name: String,
    /// Further `dr_regions` AWS cannot copy this cluster's snapshots to.
    pub ignored: Vec<String>,
}

/// What a cluster's copy setting needs, given what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCopyStep {
    /// Copying as wanted.
    Done,
    /// Not copying: create the grant (encrypted clusters) and enable the copy.
    Enable,
    /// Copying to the right region, with another manual retention: change it.
    Retention(i32),
    /// Copying somewhere else (someone's own setting): left alone, reported.
    Conflict(String),
}

/// The copy a backup of `kind` in `source_region` asks of its cluster, if the kind copies by
/// a cluster setting and `dr_regions` names another region. `deployment` names the grant.
pub fn cluster_copy(
    kind: crate::ResourceKind,
    config: &crate::config::Config,
    source_region: &str,
    deployment: &str,
) -> Option<ClusterCopy> {
    if kind.copies_per_backup() {
        return None;
    }
    let r = &config.replication;
    let mut others = r.dr_regions.iter().filter(|d| *d != source_region).cloned();
    let destination = others.next()?;
    let keep = r.dr_keep(config.keep);
    let longest = [keep.daily, keep.weekly * 7, keep.monthly * 31, keep.yearly * 366].into_iter().max().unwrap_or(1);
    let grant: String =
        deployment.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let grant = format!("bunker-{}", grant.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-"));
    Some(ClusterCopy {
        kms_key: r.dr_kms_keys.get(&destination).cloned(),
        destination,
        manual_retention_days: longest.clamp(1, 3653) as i32,
        grant_name: grant.chars().take(63).collect::<String>().trim_end_matches('-').to_string(),
        ignored: others.collect(),
    })
}

/// What to do about a cluster whose copy setting is `actual` (destination, manual retention).
pub fn plan_cluster_copy(want: &ClusterCopy, actual: Option<(&str, i32)>) -> ClusterCopyStep {
    match actual {
        None => ClusterCopyStep::Enable,
        Some((dest, _)) if dest != want.destination => ClusterCopyStep::Conflict(format!(
            "the cluster already copies its snapshots to {dest}, not {} (dr_regions): left as it is; disable \
             its cross-region snapshot copy to let bunker set it",
            want.destination
        )),
        Some((_, days)) if days != want.manual_retention_days => ClusterCopyStep::Retention(want.manual_retention_days),
        Some(_) => ClusterCopyStep::Done,
    }
}

/// One effect still needed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Copy the source into this region.
    Copy {
        /// Destination region.
        to_region: String,
    },
    /// Copy the source in its own region under the share key (it is shared instead).
    Reencrypt,
    /// Share a backup (the source or a copy) with an account.
    Share {
        /// Region of the backup.
        region: String,
        /// Its id.
        id: String,
        /// The account.
        account: String,
    },
}

/// The plan for one source backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Effects to make now.
    pub steps: Vec<Step>,
    /// What is not ready yet (`"source"` or a DR region whose copy is pending).
    pub waiting: Vec<String>,
}

impl Plan {
    /// Nothing to do and nothing to wait for.
    pub fn is_done(&self) -> bool {
        self.steps.is_empty() && self.waiting.is_empty()
    }
}

/// What remains for the backup `source` (in `region`), given its copies by DR region and
/// its re-encrypted copy (when it needs one, see [`needs_reencryption`]).
///
/// A backup that is not yet available is only waited for: nothing is copied or shared
/// before AWS reports it ready. A copy is shared once it is available itself.
pub fn plan(
    targets: Targets<'_>,
    region: &str,
    source: &BackupState,
    copies: &BTreeMap<String, BackupState>,
    reencrypted: Option<&BackupState>,
) -> Plan {
    let mut p = Plan::default();
    if !source.available {
        p.waiting.push("source".into());
        return p;
    }
    let share = |p: &mut Plan, region: &str, b: &BackupState| {
        for a in targets.share_accounts {
            if !b.shared_with.contains(a) {
                p.steps.push(Step::Share { region: region.into(), id: b.id.clone(), account: a.clone() });
            }
        }
    };
    if targets.share_accounts.is_empty() {
        // nothing to share
    } else if needs_reencryption(source, targets.share_key) {
        match reencrypted {
            None => p.steps.push(Step::Reencrypt),
            Some(c) if !c.available => p.waiting.push(format!("{region} (re-encrypted)")),
            Some(c) => share(&mut p, region, c),
        }
    } else {
        share(&mut p, region, source);
    }
    for r in targets.dr_regions.iter().filter(|r| r.as_str() != region) {
        match copies.get(r) {
            None => p.steps.push(Step::Copy { to_region: r.clone() }),
            Some(c) if !c.available => p.waiting.push(r.clone()),
            Some(c) => share(&mut p, r, c),
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, available: bool, shared: &[&str]) -> BackupState {
        BackupState {
            id: id.into(),
            available,
            shared_with: shared.iter().map(|s| s.to_string()).collect(),
            ..BackupState::default()
        }
    }

    #[test]
    fn encrypted_backups_are_shared_as_reencrypted_copies() {
        let accounts = vec!["111111111111".to_string()];
        let key = "arn:aws:kms:us-east-1:123456789012:key/share";
        let t = Targets { dr_regions: &[], share_accounts: &accounts, share_key: Some(key) };
        let mut src = b("snap-1", true, &[]);
        src.encrypted = true;
        src.kms_key = Some("arn:aws:kms:us-east-1:123456789012:key/aws-ebs-default".into());
        assert_eq!(plan(t, "us-east-1", &src, &BTreeMap::new(), None).steps, [Step::Reencrypt]);
        let re = b("snap-re", true, &[]);
        assert_eq!(
            plan(t, "us-east-1", &src, &BTreeMap::new(), Some(&re)).steps,
            [Step::Share { region: "us-east-1".into(), id: "snap-re".into(), account: "111111111111".into() }]
        );
        src.kms_key = Some(key.into());
        assert!(!needs_reencryption(&src, Some(key)), "already under the share key");
        assert!(!needs_reencryption(&b("snap-2", true, &[]), Some(key)), "unencrypted backups are shared as they are");
        assert_eq!(reencrypted_name(&"a".repeat(70)).len(), 63);
    }

    #[test]
    fn fan_out_waits_and_converges() {
        let regions = vec!["us-west-2".to_string(), "eu-west-1".to_string(), "us-east-1".to_string()];
        let accounts = vec!["111111111111".to_string(), "222222222222".to_string()];
        let t = Targets { dr_regions: &regions, share_accounts: &accounts, share_key: None };
        let mut copies = BTreeMap::new();
        let pending = plan(t, "us-east-1", &b("snap-1", false, &[]), &copies, None);
        assert_eq!(pending.waiting, ["source"]);
        assert!(pending.steps.is_empty());

        let first = plan(t, "us-east-1", &b("snap-1", true, &[]), &copies, None);
        assert_eq!(first.steps.len(), 4, "2 shares + 2 copies (never into its own region): {first:?}");
        copies.insert("us-west-2".to_string(), b("snap-w", false, &[]));
        copies.insert("eu-west-1".to_string(), b("snap-e", true, &["111111111111"]));
        let mid = plan(t, "us-east-1", &b("snap-1", true, &["111111111111", "222222222222"]), &copies, None);
        assert_eq!(mid.waiting, ["us-west-2"]);
        assert_eq!(
            mid.steps,
            [Step::Share { region: "eu-west-1".into(), id: "snap-e".into(), account: "222222222222".into() }]
        );
        copies.insert("us-west-2".to_string(), b("snap-w", true, &["111111111111", "222222222222"]));
        copies.insert("eu-west-1".to_string(), b("snap-e", true, &["222222222222", "111111111111"]));
        assert!(plan(t, "us-east-1", &b("snap-1", true, &["222222222222", "111111111111"]), &copies, None).is_done());
    }

    #[test]
    fn copy_tags_keep_bunker_tags_within_the_limit() {
        let mut src: Tags = (0..48).map(|i| (format!("k{i:02}"), "v".to_string())).collect();
        src.insert(tags::DEPLOYMENT.into(), "bunker-1-us-east-1".into());
        src.insert("Name".into(), "n".into());
        let t = copy_tags(&src, "us-east-1", "snap-1", "bunker-1-us-west-2");
        assert_eq!(t.len(), tags::MAX_TAGS);
        assert_eq!(t[tags::DEPLOYMENT], "bunker-1-us-west-2");
        assert_eq!(t[tags::COPY_OF], "us-east-1:snap-1");
        assert_eq!(t["Name"], "n");
    }

    #[test]
    fn redshift_targets_have_no_per_backup_copies_and_at_most_twenty_accounts() {
        let regions = vec!["us-west-2".to_string()];
        let accounts: Vec<String> = (0..25).map(|i| format!("{:012}", i)).collect();
        let t = Targets::for_kind(crate::ResourceKind::Redshift, &regions, &accounts, Some("k"));
        assert!(t.dr_regions.is_empty() && t.share_key.is_none());
        assert_eq!(t.share_accounts.len(), 20);
        let t = Targets::for_kind(crate::ResourceKind::Ebs, &regions, &accounts, Some("k"));
        assert_eq!((t.dr_regions.len(), t.share_accounts.len(), t.share_key), (1, 25, Some("k")));
    }

    #[test]
    fn a_redshift_cluster_copies_to_the_first_other_dr_region_for_the_longest_keep() {
        let mut c = crate::config::resolve(&crate::config::defaults()).unwrap();
        c.replication.dr_regions = vec!["us-east-1".into(), "us-west-2".into(), "eu-west-1".into()];
        c.replication.dr_kms_keys.insert("us-west-2".into(), "k".into());
        c.replication.keep_dr = [Some(7), Some(4), Some(3), Some(0)];
        let want = cluster_copy(crate::ResourceKind::Redshift, &c, "us-east-1", "Prod_123456789012-us-east-1").unwrap();
        assert_eq!(want.destination, "us-west-2");
        assert_eq!(want.ignored, ["eu-west-1"]);
        assert_eq!(want.manual_retention_days, 93, "3 monthly copies outlive 4 weekly and 7 daily");
        assert_eq!(want.kms_key.as_deref(), Some("k"));
        assert_eq!(want.grant_name, "bunker-prod-123456789012-us-east-1");
        assert!(cluster_copy(crate::ResourceKind::Ebs, &c, "us-east-1", "d").is_none());
        c.replication.keep_dr = [Some(0), Some(0), Some(0), Some(20)];
        let want = cluster_copy(crate::ResourceKind::Redshift, &c, "us-east-1", "d").unwrap();
        assert_eq!(want.manual_retention_days, 3653, "capped at AWS's 10 years");
        assert_eq!(plan_cluster_copy(&want, None), ClusterCopyStep::Enable);
        assert_eq!(plan_cluster_copy(&want, Some(("us-west-2", 3653))), ClusterCopyStep::Done);
        assert_eq!(plan_cluster_copy(&want, Some(("us-west-2", -1))), ClusterCopyStep::Retention(3653));
        assert!(
            matches!(plan_cluster_copy(&want, Some(("eu-west-1", 7))), ClusterCopyStep::Conflict(m) if m.contains("eu-west-1"))
        );
    }
}
