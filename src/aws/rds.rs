//! RDS DB instances → DB snapshots, and Aurora / Multi-AZ clusters → cluster snapshots.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_rds::primitives::DateTime;
use aws_sdk_rds::types::{Filter, Tag};
use aws_sdk_rds::Client;
use bunker_actors::ports::{
    BackupControl, BackupDetail, CopyRequest, CreateRequest, Created, ErrorKind, ListedBackup, PortError, Pull,
    Replication, Resource, SharedBackup,
};
use bunker_protocol::backup::Backup;
use bunker_protocol::config::RdsBackupMode;
use bunker_protocol::tags::Tags;
use bunker_protocol::ResourceKind;

use super::{client, db_not_ready, is_candidate, port_error, tag_map, CallHealth};

fn rds_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

fn from_rds(tags: &[Tag]) -> Tags {
    tag_map(tags.iter().map(|t| (t.key(), t.value())))
}

/// The identifier of the newest available snapshot among `(status, created, id)`.
fn newest_available<'a>(
    snapshots: impl Iterator<Item = (Option<&'a str>, Option<&'a DateTime>, Option<&'a str>)>,
) -> Option<String> {
    snapshots
        .filter(|(status, _, _)| *status == Some("available"))
        .max_by_key(|(_, created, _)| created.map(|t| (t.secs(), t.subsec_nanos())))
        .and_then(|(_, _, id)| id.map(String::from))
}

/// What a create or copy reports: the id AWS returned (else the requested name), and how.
fn created(id: Option<&str>, request: &CreateRequest, copied_from: Option<&str>) -> Created {
    let note = match (copied_from, request.rds_mode) {
        (Some(source), _) => Some(format!("copy of automated snapshot {source}")),
        (None, RdsBackupMode::CopyAutomated) => Some("no automated snapshot to copy: created a new snapshot".into()),
        (None, RdsBackupMode::CreateSnapshot) => None,
    };
    Created { id: id.unwrap_or(&request.name).to_string(), note }
}

/// The ARN of a snapshot in another region (cross-region copies name their source by ARN).
pub(crate) fn snapshot_arn(request: &CopyRequest, resource: &str) -> String {
    format!("arn:aws:rds:{}:{}:{resource}:{}", request.source_region, request.source_account, request.source_id)
}

/// A DescribeDB*Snapshots error that means "no such snapshot".
pub(crate) fn none_if_missing<T>(e: PortError) -> Result<Option<T>, PortError> {
    if e.kind == ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(e)
    }
}

/// The `restore` attribute's account ids (who a snapshot is shared with).
pub(crate) fn restore_accounts<'a>(attrs: impl Iterator<Item = (Option<&'a str>, &'a [String])>) -> Vec<String> {
    attrs.filter(|(n, _)| *n == Some("restore")).flat_map(|(_, v)| v.iter().cloned()).collect()
}

/// An encrypted snapshot copied across regions needs a key there: say so before AWS does.
pub(crate) fn copy_key(request: &CopyRequest) -> Result<Option<&str>, PortError> {
    match (&request.kms_key, request.encrypted) {
        (Some(k), _) => Ok(Some(k)),
        (None, false) => Ok(None),
        (None, true) => Err(PortError::new(
            ErrorKind::Invalid,
            Some("KMSKeyRequired"),
            "the snapshot is encrypted: set dr_kms_keys = [\"REGION=KEY\"] for the DR region",
        )),
    }
}

/// Identifiers per `db-snapshot-id` filter in one describe call.
const FILTER_VALUES: usize = 100;

/// `look` over `ids` in chunks of [`FILTER_VALUES`], its answers concatenated.
async fn in_chunks<T, Fut>(ids: &[String], look: impl Fn(Vec<String>) -> Fut) -> Result<Vec<T>, PortError>
where
    Fut: std::future::Future<Output = Result<Vec<T>, PortError>>,
{
    let mut out = Vec::new();
    for chunk in ids.chunks(FILTER_VALUES) {
        out.extend(look(chunk.to_vec()).await?);
    }
    Ok(out)
}

/// A DB (cluster) snapshot as a look reports it: who it is shared with is not read.
fn snapshot_detail(
    id: Option<&str>,
    tags: &[Tag],
    status: Option<&str>,
    encrypted: Option<bool>,
    kms_key: Option<&str>,
) -> BackupDetail {
    BackupDetail {
        id: id.unwrap_or_default().to_string(),
        tags: from_rds(tags),
        available: status == Some("available"),
        shared_with: vec![],
        encrypted: encrypted.unwrap_or(false),
        kms_key: kms_key.map(String::from),
        parts: vec![],
    }
}

/// Of the snapshots `found` by name, the copies `wanted` (tag value, name): those named so and
/// tagged `tag = value`, keyed by value.
fn copies_among(tag: &str, wanted: &[(String, String)], found: Vec<BackupDetail>) -> Vec<(String, BackupDetail)> {
    found
        .into_iter()
        .filter_map(|d| {
            let value = d.tags.get(tag)?.clone();
            wanted.iter().any(|(v, n)| *v == value && *n == d.id).then_some((value, d))
        })
        .collect()
}

/// Engines whose clusters are "rds-cluster" (not DocumentDB or Neptune).
fn is_rds_cluster_engine(engine: &str) -> bool {
    engine.starts_with("aurora") || engine == "mysql" || engine == "postgres"
}

/// RDS DB instances that are not cluster members.
pub struct RdsInstanceControl {
    client: Client,
    region: String,
}

impl RdsInstanceControl {
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> Self {
        RdsInstanceControl { client: client!(aws_sdk_rds, conf, calls), region }
    }

    /// The newest available automated snapshot of an instance.
    async fn latest_automated(&self, instance: &str) -> Result<Option<String>, PortError> {
        let snapshots = self
            .client
            .describe_db_snapshots()
            .db_instance_identifier(instance)
            .snapshot_type("automated")
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("rds:DescribeDBSnapshots", e))?;
        Ok(newest_available(
            snapshots.iter().map(|s| (s.status(), s.snapshot_create_time(), s.db_snapshot_identifier())),
        ))
    }

    /// The DB snapshots of `ids` that exist, shares not read.
    async fn snapshots_by_id(&self, ids: &[String]) -> Result<Vec<BackupDetail>, PortError> {
        in_chunks(ids, |chunk| async move {
            let found: Vec<_> = self
                .client
                .describe_db_snapshots()
                .filters(Filter::builder().name("db-snapshot-id").set_values(Some(chunk)).build())
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| port_error("rds:DescribeDBSnapshots", e))?;
            Ok(found
                .iter()
                .map(|s| {
                    snapshot_detail(s.db_snapshot_identifier(), s.tag_list(), s.status(), s.encrypted(), s.kms_key_id())
                })
                .collect())
        })
        .await
    }
}

#[async_trait]
impl BackupControl for RdsInstanceControl {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Rds
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn list_resources(&self) -> Result<Vec<Resource>, PortError> {
        let instances = self
            .client
            .describe_db_instances()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("rds:DescribeDBInstances", e))?;
        Ok(instances
            .into_iter()
            .filter(|i| i.db_cluster_identifier().is_none())
            .filter_map(|i| {
                Some(Resource {
                    id: i.db_instance_identifier()?.to_string(),
                    tags: from_rds(i.tag_list()),
                    not_ready: db_not_ready(i.db_instance_status()),
                })
            })
            .collect())
    }

    async fn create_backup(&self, request: &CreateRequest) -> Result<Created, PortError> {
        let id = &request.resource.id;
        if request.rds_mode == RdsBackupMode::CopyAutomated {
            if let Some(source) = self.latest_automated(id).await? {
                let out = self
                    .client
                    .copy_db_snapshot()
                    .source_db_snapshot_identifier(&source)
                    .target_db_snapshot_identifier(&request.name)
                    .set_tags(Some(rds_tags(&request.tags)))
                    .send()
                    .await
                    .map_err(|e| port_error("rds:CopyDBSnapshot", e))?;
                return Ok(created(out.db_snapshot().and_then(|s| s.db_snapshot_identifier()), request, Some(&source)));
            }
        }
        let out = self
            .client
            .create_db_snapshot()
            .db_instance_identifier(id)
            .db_snapshot_identifier(&request.name)
            .set_tags(Some(rds_tags(&request.tags)))
            .send()
            .await
            .map_err(|e| port_error("rds:CreateDBSnapshot", e))?;
        Ok(created(out.db_snapshot().and_then(|s| s.db_snapshot_identifier()), request, None))
    }

    async fn list_backups(&self, shelvery: bool) -> Result<Vec<ListedBackup>, PortError> {
        let snapshots = self
            .client
            .describe_db_snapshots()
            .snapshot_type("manual")
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("rds:DescribeDBSnapshots", e))?;
        Ok(snapshots
            .into_iter()
            .filter_map(|s| {
                let tags = from_rds(s.tag_list());
                is_candidate(&tags, shelvery).then(|| ListedBackup {
                    id: s.db_snapshot_identifier().unwrap_or_default().to_string(),
                    available: s.status() == Some("available"),
                    aws_created_at: super::aws_time(s.snapshot_create_time()),
                    tags,
                    parts: vec![],
                })
            })
            .collect())
    }

    async fn delete_backup(&self, backup: &Backup) -> Result<(), PortError> {
        self.client
            .delete_db_snapshot()
            .db_snapshot_identifier(&backup.id)
            .send()
            .await
            .map_err(|e| port_error("rds:DeleteDBSnapshot", e))?;
        Ok(())
    }
}

#[async_trait]
impl Replication for RdsInstanceControl {
    async fn describe_backup(&self, id: &str) -> Result<Option<BackupDetail>, PortError> {
        let Some(mut d) = self.snapshots_by_id(&[id.to_string()]).await?.pop() else { return Ok(None) };
        d.shared_with = self.shared_with(id).await?;
        Ok(Some(d))
    }

    async fn find_copy(&self, tag: &str, value: &str, name: &str) -> Result<Option<BackupDetail>, PortError> {
        // DR copies keep the source's identifier (unique per region), so one lookup finds it.
        let found = self.describe_backup(name).await?;
        Ok(found.filter(|d| d.tags.get(tag).map(String::as_str) == Some(value)))
    }

    async fn copy_backup(&self, request: &CopyRequest) -> Result<String, PortError> {
        let out = self
            .client
            .copy_db_snapshot()
            .source_db_snapshot_identifier(snapshot_arn(request, "snapshot"))
            .target_db_snapshot_identifier(&request.name)
            .set_kms_key_id(copy_key(request)?.map(String::from))
            .set_tags(Some(rds_tags(&request.tags)))
            .send()
            .await
            .map_err(|e| port_error("rds:CopyDBSnapshot", e))?;
        Ok(out.db_snapshot().and_then(|s| s.db_snapshot_identifier()).unwrap_or(&request.name).to_string())
    }

    async fn share_backup(&self, backup: &BackupDetail, account: &str) -> Result<(), PortError> {
        self.client
            .modify_db_snapshot_attribute()
            .db_snapshot_identifier(&backup.id)
            .attribute_name("restore")
            .values_to_add(account)
            .send()
            .await
            .map_err(|e| port_error("rds:ModifyDBSnapshotAttribute", e))?;
        Ok(())
    }

    /// RDS reads shares one snapshot at a time (`DescribeDBSnapshotAttributes`): looks leave
    /// them to the replicator.
    fn looks_report_shares(&self) -> bool {
        false
    }

    async fn shared_with(&self, id: &str) -> Result<Vec<String>, PortError> {
        let attrs = match self.client.describe_db_snapshot_attributes().db_snapshot_identifier(id).send().await {
            Ok(a) => a,
            Err(e) => return none_if_missing::<()>(port_error("rds:DescribeDBSnapshotAttributes", e)).map(|_| vec![]),
        };
        let list = attrs.db_snapshot_attributes_result().map(|r| r.db_snapshot_attributes()).unwrap_or_default();
        Ok(restore_accounts(list.iter().map(|a| (a.attribute_name(), a.attribute_values()))))
    }

    /// One `DescribeDBSnapshots` per chunk of identifiers (filter `db-snapshot-id`; the tags
    /// come in `TagList`); shares are not read.
    async fn describe_backups(&self, ids: &[String], _accounts: &[String]) -> Result<Vec<BackupDetail>, PortError> {
        self.snapshots_by_id(ids).await
    }

    /// DR copies keep the source's identifier: one `DescribeDBSnapshots` per chunk of names.
    async fn find_copies(
        &self,
        tag: &str,
        wanted: &[(String, String)],
        _accounts: &[String],
    ) -> Result<Vec<(String, BackupDetail)>, PortError> {
        let names: Vec<String> = wanted.iter().map(|(_, n)| n.clone()).collect();
        Ok(copies_among(tag, wanted, self.snapshots_by_id(&names).await?))
    }
}

#[async_trait]
impl Pull for RdsInstanceControl {
    async fn list_shared(&self, accounts: &[String]) -> Result<Vec<SharedBackup>, PortError> {
        if accounts.is_empty() {
            return Ok(vec![]);
        }
        let snapshots = self
            .client
            .describe_db_snapshots()
            .snapshot_type("shared")
            .include_shared(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("rds:DescribeDBSnapshots", e))?;
        Ok(snapshots
            .into_iter()
            .filter_map(|s| {
                let arn = s.db_snapshot_arn()?;
                let account = arn.split(':').nth(4)?.to_string();
                // For a shared snapshot the identifier is its ARN on AWS (moto: the name).
                let name = s.db_snapshot_identifier()?.rsplit(':').next()?.to_string();
                accounts.contains(&account).then(|| SharedBackup {
                    id: name.clone(),
                    account,
                    name: Some(name),
                    source: s.db_instance_identifier().map(String::from),
                    available: s.status() == Some("available"),
                    encrypted: s.encrypted().unwrap_or(false),
                })
            })
            .collect())
    }
}

/// Aurora and Multi-AZ DB clusters.
pub struct RdsClusterControl {
    client: Client,
    region: String,
    /// For presigned cross-region copies (GovCloud).
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl RdsClusterControl {
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> Self {
        RdsClusterControl {
            client: client!(aws_sdk_rds, conf, calls),
            region,
            credentials: conf.credentials_provider(),
        }
    }

    async fn latest_automated(&self, cluster: &str) -> Result<Option<String>, PortError> {
        let snapshots = self
            .client
            .describe_db_cluster_snapshots()
            .db_cluster_identifier(cluster)
            .snapshot_type("automated")
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("rds:DescribeDBClusterSnapshots", e))?;
        Ok(newest_available(
            snapshots.iter().map(|s| (s.status(), s.snapshot_create_time(), s.db_cluster_snapshot_identifier())),
        ))
    }

    /// The cluster snapshots of `ids` that exist, shares not read.
    async fn snapshots_by_id(&self, ids: &[String]) -> Result<Vec<BackupDetail>, PortError> {
        in_chunks(ids, |chunk| async move {
            let found: Vec<_> = self
                .client
                .describe_db_cluster_snapshots()
                .filters(Filter::builder().name("db-cluster-snapshot-id").set_values(Some(chunk)).build())
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| port_error("rds:DescribeDBClusterSnapshots", e))?;
            Ok(found
                .iter()
                .map(|s| {
                    let id = s.db_cluster_snapshot_identifier();
                    snapshot_detail(id, s.tag_list(), s.status(), s.storage_encrypted(), s.kms_key_id())
                })
                .collect())
        })
        .await
    }
}

#[async_trait]
impl BackupControl for RdsClusterControl {
    fn kind(&self) -> ResourceKind {
        ResourceKind::RdsCluster
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn list_resources(&self) -> Result<Vec<Resource>, PortError> {
        let clusters = self
            .client
            .describe_db_clusters()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("rds:DescribeDBClusters", e))?;
        Ok(clusters
            .into_iter()
            .filter(|c| c.engine().is_some_and(is_rds_cluster_engine))
            .filter_map(|c| {
                Some(Resource {
                    id: c.db_cluster_identifier()?.to_string(),
                    tags: from_rds(c.tag_list()),
                    not_ready: db_not_ready(c.status()),
                })
            })
            .collect())
    }

    async fn create_backup(&self, request: &CreateRequest) -> Result<Created, PortError> {
        let id = &request.resource.id;
        if request.rds_mode == RdsBackupMode::CopyAutomated {
            if let Some(source) = self.latest_automated(id).await? {
                let out = self
                    .client
                    .copy_db_cluster_snapshot()
                    .source_db_cluster_snapshot_identifier(&source)
                    .target_db_cluster_snapshot_identifier(&request.name)
                    .set_tags(Some(rds_tags(&request.tags)))
                    .send()
                    .await
                    .map_err(|e| port_error("rds:CopyDBClusterSnapshot", e))?;
                let id = out.db_cluster_snapshot().and_then(|s| s.db_cluster_snapshot_identifier());
                return Ok(created(id, request, Some(&source)));
            }
        }
        let out = self
            .client
            .create_db_cluster_snapshot()
            .db_cluster_identifier(id)
            .db_cluster_snapshot_identifier(&request.name)
            .set_tags(Some(rds_tags(&request.tags)))
            .send()
            .await
            .map_err(|e| port_error("rds:CreateDBClusterSnapshot", e))?;
        Ok(created(out.db_cluster_snapshot().and_then(|s| s.db_cluster_snapshot_identifier()), request, None))
    }

    async fn list_backups(&self, shelvery: bool) -> Result<Vec<ListedBackup>, PortError> {
        let snapshots = self
            .client
            .describe_db_cluster_snapshots()
            .snapshot_type("manual")
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("rds:DescribeDBClusterSnapshots", e))?;
        Ok(snapshots
            .into_iter()
            .filter(|s| s.engine().is_some_and(is_rds_cluster_engine))
            .filter_map(|s| {
                let tags = from_rds(s.tag_list());
                is_candidate(&tags, shelvery).then(|| ListedBackup {
                    id: s.db_cluster_snapshot_identifier().unwrap_or_default().to_string(),
                    available: s.status() == Some("available"),
                    aws_created_at: super::aws_time(s.snapshot_create_time()),
                    tags,
                    parts: vec![],
                })
            })
            .collect())
    }

    async fn delete_backup(&self, backup: &Backup) -> Result<(), PortError> {
        self.client
            .delete_db_cluster_snapshot()
            .db_cluster_snapshot_identifier(&backup.id)
            .send()
            .await
            .map_err(|e| port_error("rds:DeleteDBClusterSnapshot", e))?;
        Ok(())
    }
}

#[async_trait]
impl Replication for RdsClusterControl {
    async fn describe_backup(&self, id: &str) -> Result<Option<BackupDetail>, PortError> {
        let Some(mut d) = self.snapshots_by_id(&[id.to_string()]).await?.pop() else { return Ok(None) };
        d.shared_with = self.shared_with(id).await?;
        Ok(Some(d))
    }

    async fn find_copy(&self, tag: &str, value: &str, name: &str) -> Result<Option<BackupDetail>, PortError> {
        self.cluster_find_copy(tag, value, name).await
    }

    async fn copy_backup(&self, request: &CopyRequest) -> Result<String, PortError> {
        self.cluster_copy(request).await
    }

    async fn share_backup(&self, backup: &BackupDetail, account: &str) -> Result<(), PortError> {
        self.cluster_share(&backup.id, account).await
    }

    /// As for DB snapshots: shares are read one snapshot at a time.
    fn looks_report_shares(&self) -> bool {
        false
    }

    async fn shared_with(&self, id: &str) -> Result<Vec<String>, PortError> {
        let out = self.client.describe_db_cluster_snapshot_attributes().db_cluster_snapshot_identifier(id).send().await;
        let attrs = match out {
            Ok(a) => a,
            Err(e) => {
                return none_if_missing::<()>(port_error("rds:DescribeDBClusterSnapshotAttributes", e)).map(|_| vec![])
            }
        };
        let result = attrs.db_cluster_snapshot_attributes_result();
        let list = result.map(|r| r.db_cluster_snapshot_attributes()).unwrap_or_default();
        Ok(restore_accounts(list.iter().map(|a| (a.attribute_name(), a.attribute_values()))))
    }

    /// One `DescribeDBClusterSnapshots` per chunk of identifiers (filter
    /// `db-cluster-snapshot-id`); shares are not read.
    async fn describe_backups(&self, ids: &[String], _accounts: &[String]) -> Result<Vec<BackupDetail>, PortError> {
        self.snapshots_by_id(ids).await
    }

    /// DR copies keep the source's identifier: one `DescribeDBClusterSnapshots` per chunk.
    async fn find_copies(
        &self,
        tag: &str,
        wanted: &[(String, String)],
        _accounts: &[String],
    ) -> Result<Vec<(String, BackupDetail)>, PortError> {
        let names: Vec<String> = wanted.iter().map(|(_, n)| n.clone()).collect();
        Ok(copies_among(tag, wanted, self.snapshots_by_id(&names).await?))
    }
}

#[async_trait]
impl Pull for RdsClusterControl {
    async fn list_shared(&self, accounts: &[String]) -> Result<Vec<SharedBackup>, PortError> {
        self.cluster_list_shared(accounts).await
    }
}

cluster_snapshot_ops!(RdsClusterControl, "rds", Tag, is_rds_cluster_engine, false);
