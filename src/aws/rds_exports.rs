//! RDS snapshot exports to S3 (`StartExportTask`, `DescribeExportTasks`): the
//! [`SnapshotExports`] port for RDS and Aurora recovery points.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_rds::types::{ExportTask, Filter};
use aws_sdk_rds::Client;
use bunker_actors::ports::{ErrorKind, ExportTaskInfo, PortError, SnapshotExports, StartExport};
use bunker_protocol::rds_export::TaskStatus;
use tracing::warn;

use super::{client, port_error, CallHealth};

/// The export tasks of one region.
pub struct RdsExports {
    client: Client,
    region: String,
}

impl RdsExports {
    /// The export tasks of `region`.
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> RdsExports {
        RdsExports { client: client!(aws_sdk_rds, conf, calls), region }
    }
}

fn info(t: &ExportTask) -> ExportTaskInfo {
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    ExportTaskInfo {
        id: text(t.export_task_identifier()),
        source_arn: text(t.source_arn()),
        status: TaskStatus::parse(t.status().unwrap_or_default()),
        percent: t.percent_progress().unwrap_or(0),
        bucket: text(t.s3_bucket()),
        prefix: text(t.s3_prefix()),
        failure: t.failure_cause().map(String::from),
        warning: t.warning_message().map(String::from),
    }
}

#[async_trait]
impl SnapshotExports for RdsExports {
    fn region(&self) -> &str {
        &self.region
    }

    async fn start(&self, r: &StartExport) -> Result<(), PortError> {
        self.client
            .start_export_task()
            .export_task_identifier(&r.id)
            .source_arn(&r.source_arn)
            .s3_bucket_name(&r.bucket)
            .set_s3_prefix((!r.prefix.is_empty()).then(|| r.prefix.clone()))
            .iam_role_arn(&r.role_arn)
            .kms_key_id(&r.kms_key)
            .send()
            .await
            .map_err(|e| port_error("rds:StartExportTask", e))?;
        Ok(())
    }

    async fn task(&self, id: &str) -> Result<Option<ExportTaskInfo>, PortError> {
        match self.client.describe_export_tasks().export_task_identifier(id).send().await {
            Ok(out) => Ok(out.export_tasks().iter().map(info).find(|t| t.id == id)),
            Err(e) => match port_error("rds:DescribeExportTasks", e) {
                e if e.kind == ErrorKind::NotFound => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn running(&self) -> Result<usize, PortError> {
        let status = Filter::builder()
            .name("status")
            .set_values(Some(vec!["starting".into(), "in_progress".into(), "canceling".into()]))
            .build();
        let tasks = self
            .client
            .describe_export_tasks()
            .filters(status)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("rds:DescribeExportTasks", e))?;
        // Counted here too: the filter narrows AWS's answer, the count does not depend on it.
        Ok(tasks.iter().filter(|t| info(t).status.running()).count())
    }

    async fn engine(&self, snapshot_arn: &str) -> Result<Option<String>, PortError> {
        let parts: Vec<&str> = snapshot_arn.splitn(7, ':').collect();
        let &[_, _, _, _, _, kind, id] = parts.as_slice() else { return Ok(None) };
        // AWS lists only automated and manual snapshots unless asked for another type, and
        // AWS Backup's are of type "awsbackup".
        let kind_of = id.starts_with("awsbackup:").then(|| "awsbackup".to_string());
        let engine = if kind == "cluster-snapshot" {
            self.client
                .describe_db_cluster_snapshots()
                .db_cluster_snapshot_identifier(id)
                .set_snapshot_type(kind_of)
                .send()
                .await
                .map(|o| o.db_cluster_snapshots().first().and_then(|s| s.engine().map(String::from)))
                .map_err(|e| port_error("rds:DescribeDBClusterSnapshots", e))
        } else {
            self.client
                .describe_db_snapshots()
                .db_snapshot_identifier(id)
                .set_snapshot_type(kind_of)
                .send()
                .await
                .map(|o| o.db_snapshots().first().and_then(|s| s.engine().map(String::from)))
                .map_err(|e| port_error("rds:DescribeDBSnapshots", e))
        };
        // The engine only labels the manifest: an answer AWS refuses leaves it out.
        engine.or_else(|e| {
            warn!(snapshot = %snapshot_arn, error = %e, "snapshot engine unknown");
            Ok(None)
        })
    }
}
