//! Temporary DB instances and Aurora clusters for dumps (`RestoreDBInstanceFromDBSnapshot`,
//! `RestoreDBClusterFromSnapshot` plus `CreateDBInstance`, `ModifyDBInstance` /
//! `ModifyDBCluster`, `DeleteDBInstance` / `DeleteDBCluster`): the [`DumpInstances`] port.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_rds::types::Tag;
use aws_sdk_rds::Client;
use bunker_actors::ports::{DbInstanceInfo, DbSnapshotInfo, DumpInstances, ErrorKind, PortError, RestoreInstance};
use bunker_protocol::tags::Tags;

use super::{client, port_error, tag_map, CallHealth};

/// The temporary instances of one region.
pub struct RdsDumps {
    client: Client,
    region: String,
}

impl RdsDumps {
    /// The instances of `region`.
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> RdsDumps {
        RdsDumps { client: client!(aws_sdk_rds, conf, calls), region }
    }
}

fn not_found_is_none<T>(r: Result<T, PortError>) -> Result<Option<T>, PortError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl DumpInstances for RdsDumps {
    fn region(&self) -> &str {
        &self.region
    }

    async fn snapshot(&self, id: &str) -> Result<Option<DbSnapshotInfo>, PortError> {
        // AWS Backup's snapshots (`awsbackup:job-…`) are listed only with their type.
        let kind = if id.starts_with("awsbackup:") { Some("awsbackup") } else { None };
        let out = self
            .client
            .describe_db_snapshots()
            .db_snapshot_identifier(id)
            .set_snapshot_type(kind.map(String::from))
            .send()
            .await
            .map_err(|e| port_error("rds:DescribeDBSnapshots", e));
        let Some(out) = not_found_is_none(out)? else { return Ok(None) };
        let text = |v: Option<&str>| v.unwrap_or_default().to_string();
        Ok(out.db_snapshots().first().map(|s| DbSnapshotInfo {
            id: text(s.db_snapshot_identifier()),
            engine: text(s.engine()),
            engine_version: text(s.engine_version()),
            master_user: text(s.master_username()),
            status: text(s.status()).to_ascii_lowercase(),
            source: text(s.db_instance_identifier()),
        }))
    }

    async fn restore(&self, r: &RestoreInstance) -> Result<(), PortError> {
        let tags = rds_tags(&r.tags);
        self.client
            .restore_db_instance_from_db_snapshot()
            .db_snapshot_identifier(&r.snapshot)
            .db_instance_identifier(&r.instance)
            .db_instance_class(&r.class)
            .set_db_subnet_group_name(r.subnet_group.clone())
            .set_vpc_security_group_ids(r.security_group.clone().map(|g| vec![g]))
            .publicly_accessible(false)
            .deletion_protection(false)
            .multi_az(false)
            .auto_minor_version_upgrade(false)
            .copy_tags_to_snapshot(false)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| port_error("rds:RestoreDBInstanceFromDBSnapshot", e))?;
        Ok(())
    }

    async fn instance(&self, id: &str) -> Result<Option<DbInstanceInfo>, PortError> {
        let out = self
            .client
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(|e| port_error("rds:DescribeDBInstances", e));
        let Some(out) = not_found_is_none(out)? else { return Ok(None) };
        Ok(out.db_instances().iter().find(|i| i.db_instance_identifier() == Some(id)).map(|i| DbInstanceInfo {
            status: i.db_instance_status().unwrap_or_default().to_ascii_lowercase(),
            endpoint: i.endpoint().and_then(|e| Some((e.address()?.to_string(), u16::try_from(e.port()?).ok()?))),
            tags: tags_of(i.tag_list()),
        }))
    }

    async fn set_master_password(&self, id: &str, password: &str) -> Result<(), PortError> {
        self.client
            .modify_db_instance()
            .db_instance_identifier(id)
            .master_user_password(password)
            .backup_retention_period(0)
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| port_error("rds:ModifyDBInstance", e))?;
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), PortError> {
        self.client
            .delete_db_instance()
            .db_instance_identifier(id)
            .skip_final_snapshot(true)
            .delete_automated_backups(true)
            .send()
            .await
            .map_err(|e| port_error("rds:DeleteDBInstance", e))?;
        Ok(())
    }

    async fn named(&self, prefix: &str) -> Result<Vec<(String, Tags)>, PortError> {
        let mut out = Vec::new();
        let mut pages = self.client.describe_db_instances().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| port_error("rds:DescribeDBInstances", e))?;
            for i in page.db_instances() {
                let id = i.db_instance_identifier().unwrap_or_default();
                if id.starts_with(prefix) {
                    out.push((id.to_string(), tags_of(i.tag_list())));
                }
            }
        }
        Ok(out)
    }

    async fn cluster_snapshot(&self, id: &str) -> Result<Option<DbSnapshotInfo>, PortError> {
        // AWS Backup's Aurora snapshots are listed as manual ones ("the awsbackup type does
        // not apply to Aurora"), so no type is given.
        let out = self
            .client
            .describe_db_cluster_snapshots()
            .db_cluster_snapshot_identifier(id)
            .send()
            .await
            .map_err(|e| port_error("rds:DescribeDBClusterSnapshots", e));
        let Some(out) = not_found_is_none(out)? else { return Ok(None) };
        let text = |v: Option<&str>| v.unwrap_or_default().to_string();
        Ok(out.db_cluster_snapshots().first().map(|s| DbSnapshotInfo {
            id: text(s.db_cluster_snapshot_identifier()),
            engine: text(s.engine()),
            engine_version: text(s.engine_version()),
            master_user: text(s.master_username()),
            status: text(s.status()).to_ascii_lowercase(),
            source: text(s.db_cluster_identifier()),
        }))
    }

    async fn restore_cluster(&self, r: &RestoreInstance) -> Result<(), PortError> {
        self.client
            .restore_db_cluster_from_snapshot()
            .snapshot_identifier(&r.snapshot)
            .db_cluster_identifier(&r.instance)
            .engine(&r.engine)
            .set_db_subnet_group_name(r.subnet_group.clone())
            .set_vpc_security_group_ids(r.security_group.clone().map(|g| vec![g]))
            .deletion_protection(false)
            .copy_tags_to_snapshot(false)
            .set_tags(Some(rds_tags(&r.tags)))
            .send()
            .await
            .map_err(|e| port_error("rds:RestoreDBClusterFromSnapshot", e))?;
        Ok(())
    }

    async fn add_instance(&self, r: &RestoreInstance) -> Result<(), PortError> {
        self.client
            .create_db_instance()
            .db_instance_identifier(&r.instance)
            .db_cluster_identifier(&r.instance)
            .engine(&r.engine)
            .db_instance_class(&r.class)
            .publicly_accessible(false)
            .auto_minor_version_upgrade(false)
            .set_tags(Some(rds_tags(&r.tags)))
            .send()
            .await
            .map_err(|e| port_error("rds:CreateDBInstance", e))?;
        Ok(())
    }

    async fn cluster(&self, id: &str) -> Result<Option<DbInstanceInfo>, PortError> {
        let out = self
            .client
            .describe_db_clusters()
            .db_cluster_identifier(id)
            .send()
            .await
            .map_err(|e| port_error("rds:DescribeDBClusters", e));
        let Some(out) = not_found_is_none(out)? else { return Ok(None) };
        Ok(out.db_clusters().iter().find(|c| c.db_cluster_identifier() == Some(id)).map(|c| DbInstanceInfo {
            status: c.status().unwrap_or_default().to_ascii_lowercase(),
            endpoint: c.endpoint().zip(c.port()).and_then(|(a, p)| Some((a.to_string(), u16::try_from(p).ok()?))),
            tags: tags_of(c.tag_list()),
        }))
    }

    async fn set_cluster_password(&self, id: &str, password: &str) -> Result<(), PortError> {
        self.client
            .modify_db_cluster()
            .db_cluster_identifier(id)
            .master_user_password(password)
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| port_error("rds:ModifyDBCluster", e))?;
        Ok(())
    }

    async fn delete_cluster(&self, id: &str) -> Result<(), PortError> {
        let out = self.client.delete_db_cluster().db_cluster_identifier(id).skip_final_snapshot(true).send().await;
        match out.map_err(|e| port_error("rds:DeleteDBCluster", e)) {
            Ok(_) => Ok(()),
            // An instance not yet deleting keeps the cluster: a state that passes.
            Err(e) if e.code.as_deref() == Some("InvalidDBClusterStateFault") => {
                Err(PortError { kind: ErrorKind::Transient, ..e })
            }
            Err(e) => Err(e),
        }
    }

    async fn clusters_named(&self, prefix: &str) -> Result<Vec<(String, Tags)>, PortError> {
        let mut out = Vec::new();
        let mut pages = self.client.describe_db_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| port_error("rds:DescribeDBClusters", e))?;
            for c in page.db_clusters() {
                let id = c.db_cluster_identifier().unwrap_or_default();
                if id.starts_with(prefix) {
                    out.push((id.to_string(), tags_of(c.tag_list())));
                }
            }
        }
        Ok(out)
    }

    async fn tags(&self, arn: &str) -> Result<Option<Tags>, PortError> {
        let out = self.client.list_tags_for_resource().resource_name(arn).send().await;
        let out = not_found_is_none(out.map_err(|e| port_error("rds:ListTagsForResource", e)))?;
        Ok(out.map(|o| tags_of(o.tag_list())))
    }
}

fn rds_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

fn tags_of(list: &[Tag]) -> Tags {
    tag_map(list.iter().map(|t| (t.key(), t.value())))
}
