//! What remains of dumping an RDS snapshot through a temporary instance, as a pure function
//! of what AWS and the target report: restore the instance, wait for it, give it a random
//! master password (kept in SSM Parameter Store while the instance lives), dump, and remove
//! both — on success and on failure. The temporary instance's name comes from the snapshot,
//! so a rerun or a restart after a crash finds it again.

/// Prefix of every temporary dump instance (`<prefix><8 hex>`: at most 63 characters, a
/// letter first, as RDS requires).
pub const INSTANCE_PREFIX: &str = "bunker-dump-";

/// The temporary instance for `snapshot` of this `deployment`: `bunker-dump-` and 16 hex
/// digits of a hash of both (FNV-1a: stable across versions and hosts).
pub fn instance_name(deployment: &str, snapshot: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in deployment.bytes().chain([0]).chain(snapshot.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{INSTANCE_PREFIX}{h:016x}")
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
    /// The temporary instance, if it exists: its status (lowercase) and whether it carries
    /// this deployment's temporary tags.
    pub instance: Option<(String, bool)>,
    /// The password parameter exists.
    pub password: bool,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `RestoreDBInstanceFromDBSnapshot`, tagged temporary at creation.
    Restore,
    /// Wait for AWS (`why` for the logs).
    Wait(String),
    /// A new random password: into SSM first, then `ModifyDBInstance`.
    SetPassword,
    /// Run the dump tools against the instance.
    Dump,
    /// Remove what is left (the instance, the parameter); then the job is done (or failed).
    Remove {
        /// Delete the instance.
        instance: bool,
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

/// The plan for one pass (see the module documentation).
pub fn plan(seen: &Seen) -> Step {
    if let Some((_, false)) = &seen.instance {
        return Step::Refuse(
            "an instance with the temporary dump instance's name exists without bunker's temporary tags: \
             bunker will not use or delete it; remove or rename it"
                .into(),
        );
    }
    if seen.done {
        return match (&seen.instance, seen.password) {
            (None, false) => Step::Done,
            (Some((status, _)), _) if status == "deleting" => {
                Step::Wait("the temporary instance is being deleted".into())
            }
            (i, p) => Step::Remove { instance: i.is_some(), parameter: p },
        };
    }
    match &seen.instance {
        None if seen.password => Step::Remove { instance: false, parameter: true },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(done: bool, instance: Option<&str>, password: bool) -> Seen {
        Seen { done, instance: instance.map(|s| (s.to_string(), true)), password }
    }

    #[test]
    fn the_dump_goes_restore_wait_password_dump_remove() {
        assert_eq!(plan(&seen(false, None, false)), Step::Restore);
        assert!(matches!(plan(&seen(false, Some("creating"), false)), Step::Wait(_)));
        assert_eq!(plan(&seen(false, Some("available"), false)), Step::SetPassword);
        assert!(matches!(plan(&seen(false, Some("resetting-master-credentials"), true)), Step::Wait(_)));
        assert_eq!(plan(&seen(false, Some("available"), true)), Step::Dump);
        assert_eq!(plan(&seen(true, Some("available"), true)), Step::Remove { instance: true, parameter: true });
        assert!(matches!(plan(&seen(true, Some("deleting"), false)), Step::Wait(_)));
        assert_eq!(plan(&seen(true, None, false)), Step::Done);
    }

    #[test]
    fn leftovers_are_removed_and_strangers_refused() {
        assert_eq!(plan(&seen(false, None, true)), Step::Remove { instance: false, parameter: true });
        assert_eq!(plan(&seen(true, None, true)), Step::Remove { instance: false, parameter: true });
        assert!(matches!(plan(&seen(false, Some("incompatible-restore"), true)), Step::Refuse(_)));
        let stranger = Seen { done: false, instance: Some(("available".into(), false)), password: false };
        assert!(matches!(plan(&stranger), Step::Refuse(m) if m.contains("will not use or delete")));
    }

    #[test]
    fn names_are_stable_valid_and_per_deployment() {
        let a = instance_name("prod", "awsbackup:job-1234");
        assert_eq!(a, instance_name("prod", "awsbackup:job-1234"));
        assert_ne!(a, instance_name("staging", "awsbackup:job-1234"));
        assert_eq!(a.len(), INSTANCE_PREFIX.len() + 16);
        assert!(a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        assert_eq!(parameter_name("prod", &a), format!("/bunker/prod/dump/{a}"));
    }
}
