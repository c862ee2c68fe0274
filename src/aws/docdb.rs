//! DocumentDB clusters → cluster snapshots. The DocumentDB API returns no tags with its
//! descriptions, so tags come from ListTagsForResource (one call per cluster or candidate
//! snapshot; DocumentDB fleets are small).

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_docdb::types::{Filter, Tag};
use aws_sdk_docdb::Client;
use bunker_actors::ports::{
    BackupControl, BackupDetail, CopyRequest, CreateRequest, Created, ListedBackup, PortError, Pull, Replication,
    Resource, SharedBackup,
};
use bunker_protocol::backup::Backup;
use bunker_protocol::tags::Tags;
use bunker_protocol::ResourceKind;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::rds::{none_if_missing, restore_accounts};
use super::{client, db_not_ready, port_error, tag_map, CallHealth};

/// Concurrent ListTagsForResource calls.
const TAG_LOOKUPS: usize = 8;

pub struct DocdbControl {
    client: Client,
    region: String,
    /// For the presigned URL every cross-region copy needs.
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl DocdbControl {
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> Self {
        DocdbControl { client: client!(aws_sdk_docdb, conf, calls), region, credentials: conf.credentials_provider() }
    }

    async fn tags_of(&self, arn: &str) -> Result<Tags, PortError> {
        let out = self
            .client
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
            .map_err(|e| port_error("docdb:ListTagsForResource", e))?;
        Ok(tag_map(out.tag_list().iter().map(|t| (t.key(), t.value()))))
    }
}

fn engine_filter() -> Filter {
    Filter::builder().name("engine").values("docdb").build()
}

#[async_trait]
impl BackupControl for DocdbControl {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Docdb
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn list_resources(&self) -> Result<Vec<Resource>, PortError> {
        let clusters = self
            .client
            .describe_db_clusters()
            .filters(engine_filter())
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("docdb:DescribeDBClusters", e))?;
        stream::iter(clusters.into_iter().filter(|c| c.engine() == Some("docdb")))
            .map(|c| async move {
                let id = c.db_cluster_identifier().unwrap_or_default().to_string();
                let tags = match c.db_cluster_arn() {
                    Some(arn) => self.tags_of(arn).await?,
                    None => Tags::new(),
                };
                Ok(Resource { id, tags, not_ready: db_not_ready(c.status()) })
            })
            .buffer_unordered(TAG_LOOKUPS)
            .try_collect()
            .await
    }

    async fn create_backup(&self, request: &CreateRequest) -> Result<Created, PortError> {
        let tags = request.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let out = self
            .client
            .create_db_cluster_snapshot()
            .db_cluster_identifier(&request.resource.id)
            .db_cluster_snapshot_identifier(&request.name)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| port_error("docdb:CreateDBClusterSnapshot", e))?;
        let id = out.db_cluster_snapshot().and_then(|s| s.db_cluster_snapshot_identifier()).unwrap_or(&request.name);
        Ok(Created { id: id.to_string(), note: None })
    }

    async fn list_backups(&self, _shelvery: bool) -> Result<Vec<ListedBackup>, PortError> {
        let snapshots = self
            .client
            .describe_db_cluster_snapshots()
            .snapshot_type("manual")
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("docdb:DescribeDBClusterSnapshots", e))?;
        stream::iter(snapshots.into_iter().filter(|s| s.engine() == Some("docdb")))
            .map(|s| async move {
                let tags = match s.db_cluster_snapshot_arn() {
                    Some(arn) => self.tags_of(arn).await?,
                    None => Tags::new(),
                };
                Ok(ListedBackup {
                    id: s.db_cluster_snapshot_identifier().unwrap_or_default().to_string(),
                    available: s.status() == Some("available"),
                    aws_created_at: super::aws_time(s.snapshot_create_time()),
                    tags,
                    parts: vec![],
                })
            })
            .buffer_unordered(TAG_LOOKUPS)
            .try_collect()
            .await
    }

    async fn delete_backup(&self, backup: &Backup) -> Result<(), PortError> {
        self.client
            .delete_db_cluster_snapshot()
            .db_cluster_snapshot_identifier(&backup.id)
            .send()
            .await
            .map_err(|e| port_error("docdb:DeleteDBClusterSnapshot", e))?;
        Ok(())
    }
}

#[async_trait]
impl Replication for DocdbControl {
    async fn describe_backup(&self, id: &str) -> Result<Option<BackupDetail>, PortError> {
        let out = match self.client.describe_db_cluster_snapshots().db_cluster_snapshot_identifier(id).send().await {
            Ok(o) => o,
            Err(e) => return none_if_missing(port_error("docdb:DescribeDBClusterSnapshots", e)),
        };
        let Some(s) = out.db_cluster_snapshots.unwrap_or_default().into_iter().next() else { return Ok(None) };
        let tags = match s.db_cluster_snapshot_arn() {
            Some(arn) => self.tags_of(arn).await?,
            None => Tags::new(),
        };
        let attrs = self
            .client
            .describe_db_cluster_snapshot_attributes()
            .db_cluster_snapshot_identifier(id)
            .send()
            .await
            .map_err(|e| port_error("docdb:DescribeDBClusterSnapshotAttributes", e))?;
        let list = attrs
            .db_cluster_snapshot_attributes_result()
            .map(|r| r.db_cluster_snapshot_attributes())
            .unwrap_or_default();
        Ok(Some(BackupDetail {
            id: id.to_string(),
            tags,
            available: s.status() == Some("available"),
            shared_with: restore_accounts(list.iter().map(|a| (a.attribute_name(), a.attribute_values()))),
            encrypted: s.storage_encrypted().unwrap_or(false),
            kms_key: s.kms_key_id().map(String::from),
            parts: vec![],
        }))
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
}

#[async_trait]
impl Pull for DocdbControl {
    async fn list_shared(&self, accounts: &[String]) -> Result<Vec<SharedBackup>, PortError> {
        self.cluster_list_shared(accounts).await
    }
}

cluster_snapshot_ops!(DocdbControl, "docdb", Tag, |e: &str| e == "docdb", true);
