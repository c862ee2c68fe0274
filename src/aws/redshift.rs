//! Redshift clusters → manual cluster snapshots (fresh ones, not copies of automated
//! snapshots: those would silently back up day-old data). Sharing is `AuthorizeSnapshotAccess`
//! (revoked before a delete, which AWS refuses otherwise); a snapshot shared with this account
//! is listed with `OwnerAccount` (restorable here, never copyable). Cross-region copies are a
//! cluster setting, not a call per snapshot: `copy_backup` refuses.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_redshift::types::{Snapshot, Tag};
use aws_sdk_redshift::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use bunker_actors::ports::{
    BackupControl, BackupDetail, CopyRequest, CreateRequest, Created, ErrorKind, ListedBackup, PortError, Pull,
    Replication, Resource, SharedBackup,
};
use bunker_protocol::backup::Backup;
use bunker_protocol::replication::{plan_cluster_copy, ClusterCopy, ClusterCopyStep};
use bunker_protocol::tags::Tags;
use bunker_protocol::ResourceKind;

use super::{client, is_candidate, port_error, tag_map, CallHealth};

fn from_redshift(tags: &[Tag]) -> Tags {
    tag_map(tags.iter().map(|t| (t.key(), t.value())))
}

pub struct RedshiftControl {
    client: Client,
    region: String,
}

impl RedshiftControl {
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> Self {
        RedshiftControl { client: client!(aws_sdk_redshift, conf, calls), region }
    }
}

#[async_trait]
impl BackupControl for RedshiftControl {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Redshift
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn list_resources(&self) -> Result<Vec<Resource>, PortError> {
        // The paginator follows `Marker` (Shelvery's listing looped forever without it).
        let clusters = self
            .client
            .describe_clusters()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("redshift:DescribeClusters", e))?;
        Ok(clusters
            .into_iter()
            .filter_map(|c| {
                let not_ready = match c.cluster_status() {
                    Some("available") | None => None,
                    Some(s) => Some(format!("cluster status {s}")),
                };
                Some(Resource { id: c.cluster_identifier()?.to_string(), tags: from_redshift(c.tags()), not_ready })
            })
            .collect())
    }

    /// Sets the cluster's cross-region copy first (`request.cluster_copy`), so that this
    /// snapshot is copied; a copy that cannot be set is reported with the backup, which is
    /// made all the same.
    async fn create_backup(&self, request: &CreateRequest) -> Result<Created, PortError> {
        let note = match &request.cluster_copy {
            Some(want) => self.ensure_copy(&request.resource.id, want).await,
            None => None,
        };
        let tags = request.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let out = self
            .client
            .create_cluster_snapshot()
            .cluster_identifier(&request.resource.id)
            .snapshot_identifier(&request.name)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| port_error("redshift:CreateClusterSnapshot", e))?;
        let id = out.snapshot().and_then(|s| s.snapshot_identifier()).unwrap_or(&request.name);
        Ok(Created { id: id.to_string(), note })
    }

    async fn list_backups(&self, shelvery: bool) -> Result<Vec<ListedBackup>, PortError> {
        let snapshots = self
            .client
            .describe_cluster_snapshots()
            .snapshot_type("manual")
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("redshift:DescribeClusterSnapshots", e))?;
        Ok(snapshots
            .into_iter()
            .filter_map(|s| {
                let tags = from_redshift(s.tags());
                is_candidate(&tags, shelvery).then(|| ListedBackup {
                    id: s.snapshot_identifier().unwrap_or_default().to_string(),
                    available: s.status() == Some("available"),
                    aws_created_at: super::aws_time(s.snapshot_create_time()),
                    tags,
                    parts: s.cluster_identifier().map(String::from).into_iter().collect(),
                })
            })
            .collect())
    }

    /// Revokes every account's access first: AWS refuses to delete a shared snapshot.
    async fn delete_backup(&self, backup: &Backup) -> Result<(), PortError> {
        if let Some(detail) = self.describe_backup(&backup.id).await? {
            for account in &detail.shared_with {
                self.revoke(&backup.id, account).await?;
            }
        }
        self.client
            .delete_cluster_snapshot()
            .snapshot_identifier(&backup.id)
            .set_snapshot_cluster_identifier(backup.parts.first().cloned())
            .send()
            .await
            .map_err(|e| port_error("redshift:DeleteClusterSnapshot", e))?;
        Ok(())
    }
}

impl RedshiftControl {
    /// Brings the cluster's cross-region snapshot copy to `want`; what could not be done (or
    /// was left alone) as a note for the report.
    async fn ensure_copy(&self, cluster: &str, want: &ClusterCopy) -> Option<String> {
        let mut notes = Vec::new();
        if !want.ignored.is_empty() {
            notes.push(format!(
                "Redshift copies a cluster's snapshots to one region: {} only, not {}",
                want.destination,
                want.ignored.join(", ")
            ));
        }
        match self.apply_copy(cluster, want).await {
            Ok(Some(note)) => notes.push(note),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(cluster, error = %e, "cross-region snapshot copy not set");
                notes.push(format!("cross-region snapshot copy to {} not set: {e}", want.destination));
            }
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }

    async fn apply_copy(&self, cluster: &str, want: &ClusterCopy) -> Result<Option<String>, PortError> {
        let out = self
            .client
            .describe_clusters()
            .cluster_identifier(cluster)
            .send()
            .await
            .map_err(|e| port_error("redshift:DescribeClusters", e))?;
        let c = out.clusters().first();
        let encrypted = c.and_then(|c| c.encrypted()).unwrap_or(false);
        let actual = c.and_then(|c| c.cluster_snapshot_copy_status());
        let actual = actual
            .map(|s| (s.destination_region().unwrap_or_default(), s.manual_snapshot_retention_period().unwrap_or(-1)));
        match plan_cluster_copy(want, actual) {
            ClusterCopyStep::Done => Ok(None),
            ClusterCopyStep::Conflict(why) => Ok(Some(why)),
            ClusterCopyStep::Retention(days) => {
                self.client
                    .modify_snapshot_copy_retention_period()
                    .cluster_identifier(cluster)
                    .retention_period(days)
                    .manual(true)
                    .send()
                    .await
                    .map_err(|e| port_error("redshift:ModifySnapshotCopyRetentionPeriod", e))?;
                Ok(None)
            }
            ClusterCopyStep::Enable => {
                let grant = match (encrypted, &want.kms_key) {
                    (false, _) => None,
                    (true, Some(key)) => Some(self.copy_grant(want, key).await?),
                    (true, None) => {
                        return Err(PortError::new(
                            ErrorKind::Invalid,
                            None,
                            format!("the cluster is encrypted: set dr_kms_keys = [\"{}=KEY\"]", want.destination),
                        ))
                    }
                };
                self.client
                    .enable_snapshot_copy()
                    .cluster_identifier(cluster)
                    .destination_region(&want.destination)
                    .manual_snapshot_retention_period(want.manual_retention_days)
                    .set_snapshot_copy_grant_name(grant)
                    .send()
                    .await
                    .map_err(|e| port_error("redshift:EnableSnapshotCopy", e))?;
                tracing::info!(cluster, destination = %want.destination, days = want.manual_retention_days, "cross-region snapshot copy enabled");
                Ok(None)
            }
        }
    }

    /// The snapshot copy grant for `key` in the destination region (made once per deployment).
    async fn copy_grant(&self, want: &ClusterCopy, key: &str) -> Result<String, PortError> {
        let conf = self.client.config().to_builder().region(aws_config::Region::new(want.destination.clone())).build();
        let there = Client::from_conf(conf);
        let out =
            there.create_snapshot_copy_grant().snapshot_copy_grant_name(&want.grant_name).kms_key_id(key).send().await;
        match out {
            Ok(_) => Ok(want.grant_name.clone()),
            Err(e) if e.code() == Some("SnapshotCopyGrantAlreadyExistsFault") => Ok(want.grant_name.clone()),
            Err(e) => Err(port_error("redshift:CreateSnapshotCopyGrant", e)),
        }
    }

    async fn revoke(&self, id: &str, account: &str) -> Result<(), PortError> {
        let out = self
            .client
            .revoke_snapshot_access()
            .snapshot_identifier(id)
            .account_with_restore_access(account)
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            // Revoked meanwhile (another instance, a retry): what was wanted.
            Err(e) if e.code() == Some("AuthorizationNotFound") => Ok(()),
            Err(e) => Err(port_error("redshift:RevokeSnapshotAccess", e)),
        }
    }

    async fn snapshots(&self, id: Option<&str>, owner: Option<&str>) -> Result<Vec<Snapshot>, PortError> {
        let out = self
            .client
            .describe_cluster_snapshots()
            .set_snapshot_identifier(id.map(String::from))
            .set_owner_account(owner.map(String::from))
            .snapshot_type("manual")
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await;
        match out {
            Ok(s) => Ok(s),
            Err(e) => {
                let e = port_error("redshift:DescribeClusterSnapshots", e);
                if e.kind == ErrorKind::NotFound {
                    Ok(vec![])
                } else {
                    Err(e)
                }
            }
        }
    }
}

fn not_per_backup() -> PortError {
    PortError::new(
        ErrorKind::Invalid,
        None,
        "Redshift copies snapshots to another region by the cluster's cross-region copy setting, not one by one",
    )
}

#[async_trait]
impl Replication for RedshiftControl {
    async fn describe_backup(&self, id: &str) -> Result<Option<BackupDetail>, PortError> {
        let found = self.snapshots(Some(id), None).await?;
        Ok(found.into_iter().find(|s| s.snapshot_identifier() == Some(id)).map(|s| BackupDetail {
            id: id.to_string(),
            tags: from_redshift(s.tags()),
            available: s.status() == Some("available"),
            shared_with: s
                .accounts_with_restore_access()
                .iter()
                .filter_map(|a| a.account_id().map(String::from))
                .collect(),
            encrypted: s.encrypted().unwrap_or(false),
            kms_key: s.kms_key_id().map(String::from),
            parts: vec![],
        }))
    }

    async fn find_copy(&self, _tag: &str, _value: &str, _name: &str) -> Result<Option<BackupDetail>, PortError> {
        Err(not_per_backup())
    }

    async fn copy_backup(&self, _request: &CopyRequest) -> Result<String, PortError> {
        Err(not_per_backup())
    }

    async fn share_backup(&self, backup: &BackupDetail, account: &str) -> Result<(), PortError> {
        let out = self
            .client
            .authorize_snapshot_access()
            .snapshot_identifier(&backup.id)
            .account_with_restore_access(account)
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("AuthorizationAlreadyExists") => Ok(()),
            // Not a quota to wait out: 20 accounts per snapshot is a hard limit.
            Err(e) if e.code() == Some("AuthorizationQuotaExceeded") => {
                let e = port_error("redshift:AuthorizeSnapshotAccess", e);
                Err(PortError::new(ErrorKind::Invalid, e.code.as_deref(), e.message))
            }
            Err(e) => Err(port_error("redshift:AuthorizeSnapshotAccess", e)),
        }
    }
}

#[async_trait]
impl Pull for RedshiftControl {
    /// Snapshots the source accounts shared with this one (restorable here, not copyable).
    async fn list_shared(&self, accounts: &[String]) -> Result<Vec<SharedBackup>, PortError> {
        let mut found = Vec::new();
        for account in accounts {
            for s in self.snapshots(None, Some(account)).await? {
                let Some(id) = s.snapshot_identifier() else { continue };
                found.push(SharedBackup {
                    id: id.to_string(),
                    account: account.clone(),
                    name: Some(id.to_string()),
                    source: s.cluster_identifier().map(String::from),
                    available: s.status() == Some("available"),
                    encrypted: s.encrypted().unwrap_or(false),
                });
            }
        }
        Ok(found)
    }
}
