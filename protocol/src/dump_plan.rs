//! What remains of dumping an RDS snapshot through a temporary instance, as a pure function
//! of what AWS and the target report: restore the instance, wait for it, give it a random
//! master password (kept in SSM Parameter Store while the instance lives), dump, and remove
//! both — on success and on failure. An Aurora cluster snapshot restores to a temporary
//! cluster plus one instance in it, both under the same name; the password is the
//! cluster's, and the instance is deleted before the cluster. The temporary name comes from
//! the snapshot and the target, so a rerun or a restart after a crash finds it again.

/// Prefix of every temporary dump instance (`<prefix><8 hex>`: at most 63 characters, a
/// letter first, as RDS requires).
pub const INSTANCE_PREFIX: &str = "bunker-dump-";

/// The temporary instance (and cluster) for dumping `snapshot` of this `deployment` to
/// `target`: `bunker-dump-` and 16 hex digits of a hash of the three (FNV-1a: stable across
/// versions and hosts). Two targets of one snapshot get two instances, so neither job
/// removes the other's while it dumps.
pub fn instance_name(deployment: &str, snapshot: &str, target: &str) -> String {
    format!("{INSTANCE_PREFIX}{:016x}", stable_hash(&[deployment, snapshot, target]))
}

/// FNV-1a over `parts`, each followed by a zero byte but the last: stable across versions
/// and hosts, so a temporary resource's name is found again after a crash.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        let sep = if i + 1 < parts.len() { Some(0u8) } else { None };
        for b in part.bytes().chain(sep) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The SSM parameter holding a temporary instance's master password.
pub fn parameter_name(deployment: &str, instance: &str) -> String {
    format!("/bunker/{deployment}/dump/{instance}")
}

/// What a pass sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The dump's index object exists in the target: every archive is written.
    pub done: bool,
    /// For a cluster snapshot's dump, the temporary cluster if it exists (status and
    /// whether it is ours, as for `instance`); `None` for a DB snapshot's dump.
    pub cluster: Option<Option<(String, bool)>>,
    /// The temporary instance, if it exists: its status (lowercase) and whether it carries
    /// this deployment's temporary tags.
    pub instance: Option<(String, bool)>,
    /// The password parameter exists.
    pub password: bool,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `RestoreDBInstanceFromDBSnapshot` (or `RestoreDBClusterFromSnapshot`), tagged
    /// temporary at creation.
    Restore,
    /// `CreateDBInstance` in the temporary cluster, tagged temporary at creation.
    AddInstance,
    /// Wait for AWS (`why` for the logs).
    Wait(String),
    /// A new random password: into SSM first, then `ModifyDBInstance` (`ModifyDBCluster`).
    SetPassword,
    /// Run the dump tools against the instance.
    Dump,
    /// Remove what is left (the instance, then the cluster, the parameter); then the job is
    /// done (or failed).
    Remove {
        /// Delete the instance.
        instance: bool,
        /// Delete the cluster (after the instance: AWS deletes a cluster whose instances are
        /// all being deleted).
        cluster: bool,
        /// Delete the parameter.
        parameter: bool,
    },
    /// Nothing left: done.
    Done,
    /// Stop: a resource bunker must not touch is in the way.
    Refuse(String),
}

/// Statuses RDS passes through on the way to `available`.
const PENDING: &[&str] = &[
    "creating",
    "backing-up",
    "modifying",
    "resetting-master-credentials",
    "configuring-enhanced-monitoring",
    "configuring-log-exports",
    "configuring-iam-database-auth",
    "upgrading",
    "rebooting",
    "starting",
    "renaming",
];

/// Whether the temporary cluster or instance is being deleted.
fn deleting(r: &Option<(String, bool)>) -> bool {
    r.as_ref().is_some_and(|(status, _)| status == "deleting")
}

/// The plan for one pass (see the module documentation).
pub fn plan(seen: &Seen) -> Step {
    let cluster = seen.cluster.clone().flatten();
    if [&seen.instance, &cluster].into_iter().flatten().any(|(_, ours)| !ours) {
        return Step::Refuse(
            "a cluster or instance with the temporary dump name exists without bunker's temporary tags: \
             bunker will not use or delete it; remove or rename it"
                .into(),
        );
    }
    if seen.done {
        return finish(seen, &cluster);
    }
    if let Some(c) = &seen.cluster {
        if let Some(step) = cluster_step(c, seen) {
            return step;
        }
    }
    match &seen.instance {
        None if seen.cluster.is_some() => Step::AddInstance,
        None if seen.password => Step::Remove { instance: false, cluster: false, parameter: true },
        None => Step::Restore,
        Some((status, _)) if status == "available" && seen.password => Step::Dump,
        Some((status, _)) if status == "available" => Step::SetPassword,
        Some((status, _)) if status == "deleting" => {
            Step::Wait("a previous temporary instance is being deleted".into())
        }
        Some((status, _)) if PENDING.contains(&status.as_str()) => {
            Step::Wait(format!("the temporary instance is {status}"))
        }
        Some((status, _)) => {
            Step::Refuse(format!("the temporary instance is {status}; it is removed and the dump fails"))
        }
    }
}

/// The dump is written: remove what is left, then wait for the deletes to finish.
fn finish(seen: &Seen, cluster: &Option<(String, bool)>) -> Step {
    let remove = Step::Remove {
        instance: seen.instance.is_some() && !deleting(&seen.instance),
        cluster: cluster.is_some() && !deleting(cluster),
        parameter: seen.password,
    };
    match remove {
        Step::Remove { instance: false, cluster: false, parameter: false }
            if seen.instance.is_some() || cluster.is_some() =>
        {
            Step::Wait("the temporary resources are being deleted".into())
        }
        Step::Remove { instance: false, cluster: false, parameter: false } => Step::Done,
        step => step,
    }
}

/// The step a cluster snapshot's temporary cluster decides, if it decides one (`None`: the
/// cluster is available, and the instance in it decides).
fn cluster_step(cluster: &Option<(String, bool)>, seen: &Seen) -> Option<Step> {
    let Some((status, _)) = cluster else {
        return Some(match (&seen.instance, seen.password) {
            (None, false) => Step::Restore,
            (i, false) if deleting(i) => Step::Wait("a previous temporary instance is being deleted".into()),
            (i, p) => Step::Remove { instance: i.is_some() && !deleting(i), cluster: false, parameter: p },
        });
    };
    match status.as_str() {
        "available" => None,
        "deleting" => Some(Step::Wait("a previous temporary cluster is being deleted".into())),
        s if PENDING.contains(&s) => Some(Step::Wait(format!("the temporary cluster is {s}"))),
        s => Some(Step::Refuse(format!("the temporary cluster is {s}; it is removed and the dump fails"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(done: bool, instance: Option<&str>, password: bool) -> Seen {
        Seen { done, cluster: None, instance: instance.map(|s| (s.to_string(), true)), password }
    }

    fn clustered(done: bool, cluster: Option<&str>, instance: Option<&str>, password: bool) -> Seen {
        Seen { cluster: Some(cluster.map(|s| (s.to_string(), true))), ..seen(done, instance, password) }
    }

    fn remove(instance: bool, cluster: bool, parameter: bool) -> Step {
        Step::Remove { instance, cluster, parameter }
    }

    #[test]
    fn the_dump_goes_restore_wait_password_dump_remove() {
        assert_eq!(plan(&seen(false, None, false)), Step::Restore);
        assert!(matches!(plan(&seen(false, Some("creating"), false)), Step::Wait(_)));
        assert_eq!(plan(&seen(false, Some("available"), false)), Step::SetPassword);
        assert!(matches!(plan(&seen(false, Some("resetting-master-credentials"), true)), Step::Wait(_)));
        assert_eq!(plan(&seen(false, Some("available"), true)), Step::Dump);
        assert_eq!(plan(&seen(true, Some("available"), true)), remove(true, false, true));
        assert!(matches!(plan(&seen(true, Some("deleting"), false)), Step::Wait(_)));
        assert_eq!(plan(&seen(true, None, false)), Step::Done);
    }

    #[test]
    fn leftovers_are_removed_and_strangers_refused() {
        assert_eq!(plan(&seen(false, None, true)), remove(false, false, true));
        assert_eq!(plan(&seen(true, None, true)), remove(false, false, true));
        assert!(matches!(plan(&seen(false, Some("incompatible-restore"), true)), Step::Refuse(_)));
        let stranger =
            Seen { done: false, cluster: None, instance: Some(("available".into(), false)), password: false };
        assert!(matches!(plan(&stranger), Step::Refuse(m) if m.contains("will not use or delete")));
        let stranger = Seen { cluster: Some(Some(("available".into(), false))), ..seen(false, None, false) };
        assert!(matches!(plan(&stranger), Step::Refuse(m) if m.contains("will not use or delete")));
    }

    #[test]
    fn a_cluster_dump_goes_cluster_instance_password_dump_then_removes_both() {
        assert_eq!(plan(&clustered(false, None, None, false)), Step::Restore);
        assert!(matches!(plan(&clustered(false, Some("creating"), None, false)), Step::Wait(_)));
        assert_eq!(plan(&clustered(false, Some("available"), None, false)), Step::AddInstance);
        assert!(matches!(plan(&clustered(false, Some("available"), Some("creating"), false)), Step::Wait(_)));
        assert_eq!(plan(&clustered(false, Some("available"), Some("available"), false)), Step::SetPassword);
        let resetting = clustered(false, Some("resetting-master-credentials"), Some("available"), true);
        assert!(matches!(plan(&resetting), Step::Wait(m) if m.contains("cluster")));
        assert_eq!(plan(&clustered(false, Some("available"), Some("available"), true)), Step::Dump);
        assert_eq!(plan(&clustered(true, Some("available"), Some("available"), true)), remove(true, true, true));
        assert_eq!(plan(&clustered(true, Some("available"), Some("deleting"), false)), remove(false, true, false));
        assert!(matches!(plan(&clustered(true, Some("deleting"), Some("deleting"), false)), Step::Wait(_)));
        assert_eq!(plan(&clustered(true, None, None, false)), Step::Done);
    }

    #[test]
    fn a_cluster_without_its_dump_is_cleaned_before_a_new_restore() {
        assert_eq!(plan(&clustered(false, None, None, true)), remove(false, false, true));
        assert_eq!(plan(&clustered(false, None, Some("available"), false)), remove(true, false, false));
        assert!(matches!(plan(&clustered(false, None, Some("deleting"), false)), Step::Wait(_)));
        assert!(matches!(plan(&clustered(false, Some("deleting"), None, false)), Step::Wait(_)));
        assert!(matches!(
            plan(&clustered(false, Some("inaccessible-encryption-credentials"), None, true)),
            Step::Refuse(_)
        ));
    }

    #[test]
    fn names_are_stable_valid_and_per_deployment() {
        let a = instance_name("prod", "awsbackup:job-1234", "s3://b/p");
        assert_eq!(a, instance_name("prod", "awsbackup:job-1234", "s3://b/p"));
        assert_ne!(a, instance_name("staging", "awsbackup:job-1234", "s3://b/p"));
        assert_ne!(a, instance_name("prod", "awsbackup:job-1234", "s3://b/other"));
        assert_eq!(a.len(), INSTANCE_PREFIX.len() + 16);
        // Pinned: a new version must find the instances an older one made.
        assert_eq!(a, "bunker-dump-4d69b23f3d1ad94c");
        assert!(a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        assert_eq!(parameter_name("prod", &a), format!("/bunker/prod/dump/{a}"));
    }
}
