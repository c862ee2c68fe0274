//! Redshift clusters → manual cluster snapshots (fresh ones, not copies of automated
//! snapshots: those would silently back up day-old data).

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_redshift::types::Tag;
use aws_sdk_redshift::Client;
use bunker_actors::ports::{BackupControl, CreateRequest, Created, ListedBackup, PortError, Resource};
use bunker_protocol::backup::Backup;
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

    async fn create_backup(&self, request: &CreateRequest) -> Result<Created, PortError> {
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
        Ok(Created { id: id.to_string(), note: None })
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

    async fn delete_backup(&self, backup: &Backup) -> Result<(), PortError> {
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
