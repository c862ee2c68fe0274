//! AWS Backup's recovery points: the [`Vaults`] port over the `backup` API.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_backup::Client;
use bunker_actors::ports::{ErrorKind, PortError, Vaults};
use bunker_protocol::vault::{BackupJob, RecoveryPoint, Status};

use super::{client, port_error, CallHealth};

/// The recovery points of one region.
pub struct BackupVaults {
    client: Client,
    region: String,
}

impl BackupVaults {
    /// The vaults of `region`.
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> BackupVaults {
        BackupVaults { client: client!(aws_sdk_backup, conf, calls), region }
    }
}

fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<String> {
    super::aws_time(t).map(|t| t.to_string())
}

/// A [`RecoveryPoint`] from a listed or described one (two SDK types, the same accessors).
macro_rules! point {
    ($p:expr, $arn:expr, $vault:expr) => {
        RecoveryPoint {
            arn: $p.recovery_point_arn().unwrap_or($arn).to_string(),
            vault: $p.backup_vault_name().unwrap_or($vault).to_string(),
            resource_arn: $p.resource_arn().unwrap_or_default().to_string(),
            resource_type: $p.resource_type().unwrap_or_default().to_string(),
            status: Status::parse($p.status().map(|s| s.as_str()).unwrap_or_default()),
            created: time($p.creation_date()),
            size: $p.backup_size_in_bytes().and_then(|b| u64::try_from(b).ok()),
        }
    };
}

#[async_trait]
impl Vaults for BackupVaults {
    fn region(&self) -> &str {
        &self.region
    }

    async fn list(&self, vault: &str) -> Result<Vec<RecoveryPoint>, PortError> {
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_recovery_points_by_backup_vault()
                .backup_vault_name(vault)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| port_error("backup:ListRecoveryPointsByBackupVault", e))?;
            found.extend(out.recovery_points().iter().map(|p| point!(p, "", vault)));
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(found),
            }
        }
    }

    async fn describe(&self, vault: &str, arn: &str) -> Result<Option<RecoveryPoint>, PortError> {
        let out = self.client.describe_recovery_point().backup_vault_name(vault).recovery_point_arn(arn).send().await;
        let p = match out {
            Ok(p) => p,
            Err(e) => {
                let e = port_error("backup:DescribeRecoveryPoint", e);
                return if e.kind == ErrorKind::NotFound { Ok(None) } else { Err(e) };
            }
        };
        Ok(Some(point!(p, arn, vault)))
    }

    async fn job(&self, job_id: &str) -> Result<Option<BackupJob>, PortError> {
        match self.client.describe_backup_job().backup_job_id(job_id).send().await {
            Ok(j) => Ok(Some(BackupJob {
                vault: j.backup_vault_name().unwrap_or_default().to_string(),
                recovery_point_arn: j.recovery_point_arn().filter(|a| !a.is_empty()).map(String::from),
                state: j.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
            })),
            Err(e) => {
                let e = port_error("backup:DescribeBackupJob", e);
                if e.kind == ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn delete(&self, vault: &str, arn: &str) -> Result<(), PortError> {
        self.client
            .delete_recovery_point()
            .backup_vault_name(vault)
            .recovery_point_arn(arn)
            .send()
            .await
            .map_err(|e| port_error("backup:DeleteRecoveryPoint", e))?;
        Ok(())
    }
}
