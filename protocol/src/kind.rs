//! The kinds of resource bunker backs up.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A kind of AWS resource and the backup bunker makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    /// EBS volume → EBS snapshot.
    Ebs,
    /// EC2 instance → AMI (and the AMI's EBS snapshots).
    Ec2ami,
    /// RDS DB instance (not a cluster member) → DB snapshot.
    Rds,
    /// Aurora / Multi-AZ RDS cluster → DB cluster snapshot.
    RdsCluster,
    /// DocumentDB cluster → cluster snapshot.
    Docdb,
    /// Redshift cluster → manual cluster snapshot.
    Redshift,
}

impl ResourceKind {
    /// Every kind, in the order runs and reports list them.
    pub const ALL: [ResourceKind; 6] = [
        ResourceKind::Ebs,
        ResourceKind::Ec2ami,
        ResourceKind::Rds,
        ResourceKind::RdsCluster,
        ResourceKind::Docdb,
        ResourceKind::Redshift,
    ];

    /// The canonical spelling (`rds-cluster`), used on the CLI, in tags and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Ebs => "ebs",
            ResourceKind::Ec2ami => "ec2ami",
            ResourceKind::Rds => "rds",
            ResourceKind::RdsCluster => "rds-cluster",
            ResourceKind::Docdb => "docdb",
            ResourceKind::Redshift => "redshift",
        }
    }

    /// Whether backups of this kind are named by an RDS-style identifier (start with a
    /// letter, ≤ 63 characters, letters/digits/hyphens, no double hyphen, no trailing hyphen).
    /// EBS snapshot ids are assigned by AWS; AMI names are laxer, but one rule for all keeps
    /// names predictable.
    pub fn identifier_is_name(self) -> bool {
        matches!(self, ResourceKind::Rds | ResourceKind::RdsCluster | ResourceKind::Docdb | ResourceKind::Redshift)
    }

    /// Whether a backup of this kind is copied to another region by a copy of that backup.
    /// Redshift's are not: a cluster setting (`EnableSnapshotCopy`) copies every snapshot of
    /// the cluster to one region.
    pub fn copies_per_backup(self) -> bool {
        self != ResourceKind::Redshift
    }

    /// Whether the account a backup of this kind is shared with can copy it (the data-bunker
    /// pull). A shared Redshift snapshot can only be restored, never copied or deleted.
    pub fn shared_copyable(self) -> bool {
        self != ResourceKind::Redshift
    }

    /// The most accounts one backup of this kind can be shared with (Redshift: 20 per
    /// snapshot); `None`: no limit bunker needs to know.
    pub fn max_share_accounts(self) -> Option<usize> {
        (self == ResourceKind::Redshift).then_some(20)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a kind name bunker does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource kind '{0}': expected one of ebs, ec2ami, rds, rds-cluster, docdb, redshift")]
pub struct UnknownKind(pub String);

impl FromStr for ResourceKind {
    type Err = UnknownKind;

    /// Accepts the canonical spelling and Shelvery's (`rds_cluster`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ebs" => ResourceKind::Ebs,
            "ec2ami" => ResourceKind::Ec2ami,
            "rds" => ResourceKind::Rds,
            "rds-cluster" | "rds_cluster" => ResourceKind::RdsCluster,
            "docdb" => ResourceKind::Docdb,
            "redshift" => ResourceKind::Redshift,
            other => return Err(UnknownKind(other.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_accepts_shelvery_spelling() {
        for k in ResourceKind::ALL {
            assert_eq!(k.as_str().parse::<ResourceKind>().unwrap(), k);
        }
        assert_eq!("rds_cluster".parse::<ResourceKind>().unwrap(), ResourceKind::RdsCluster);
        assert!("s3".parse::<ResourceKind>().unwrap_err().to_string().contains("'s3'"));
    }
}
