//! The functions bunker's AWS work is split into, each of which may run under its own IAM
//! role (`roles.lifecycle`, `roles.replication`, `roles.export`, `roles.temporary`): a role
//! holds only its function's permissions (`deploy/iam/bunker-<function>-policy.json`), so a
//! fault in one function cannot reach another's resources. Work that is the service's own —
//! the queue, the lease table, topics, bunker's events, STS — stays on the process's own
//! credentials (the instance role), which may do nothing else but assume the four roles.

use std::fmt;

/// One function of bunker's AWS work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Function {
    /// Creating, listing, tagging and deleting backups (snapshots, AMIs, recovery points),
    /// and the Redshift cluster copy setting made with each backup.
    Lifecycle,
    /// Copying backups to DR regions, sharing them, and pulling shared backups in.
    Replication,
    /// Reading backups' data (EBS direct APIs), writing archives to S3, and AWS's own
    /// export tasks (RDS to Parquet, DynamoDB point-in-time exports).
    Export,
    /// Temporary resources of exports: volumes, DB instances (and their passwords in SSM),
    /// DynamoDB tables — made, used and always removed.
    Temporary,
}

impl Function {
    /// Every function, in the order of their config keys.
    pub const ALL: [Function; 4] = [Function::Lifecycle, Function::Replication, Function::Export, Function::Temporary];

    /// The function's name, as in its config key `roles.<name>` and its policy file.
    pub fn name(self) -> &'static str {
        match self {
            Function::Lifecycle => "lifecycle",
            Function::Replication => "replication",
            Function::Export => "export",
            Function::Temporary => "temporary",
        }
    }

    /// The role session name bunker uses for the function (shown in CloudTrail): the
    /// deployment id without its `{account}` and `{region}` placeholders, at most 64
    /// characters of `[\w+=,.@-]` (a long deployment id is cut).
    pub fn session_name(self, deployment: &str) -> String {
        let plain = deployment.replace("{account}", "").replace("{region}", "");
        let mut name = format!("bunker-{}-", self.name());
        for c in plain.chars() {
            let c = if c.is_ascii_alphanumeric() || "+=,.@_".contains(c) { c } else { '-' };
            if !(c == '-' && name.ends_with('-')) {
                name.push(c);
            }
        }
        name.truncate(64);
        name.trim_end_matches('-').to_string()
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_valid_and_bounded() {
        let valid = |s: &str| s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c));
        assert_eq!(Function::Export.session_name("prod"), "bunker-export-prod");
        let long = Function::Replication.session_name(&"x/y ".repeat(40));
        assert!(valid(&long) && long.starts_with("bunker-replication-x-y"), "{long}");
        assert_eq!(Function::Lifecycle.session_name(""), "bunker-lifecycle");
        assert!(Function::ALL.iter().all(|f| valid(&f.session_name("a:b"))));
        assert_eq!(Function::Temporary.session_name("bunker-{account}-{region}"), "bunker-temporary-bunker");
    }
}
