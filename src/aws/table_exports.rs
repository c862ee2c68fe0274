//! DynamoDB exports to S3 (`ExportTableToPointInTime`, `DescribeExport`, `ListExports`): the
//! [`TableExports`] port for `export.dynamodb_mode = "pitr"`.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::primitives::DateTime;
use aws_sdk_dynamodb::types::{ExportDescription, ExportFormat};
use aws_sdk_dynamodb::Client;
use bunker_actors::ports::{ErrorKind, PortError, StartTableExport, TableExportInfo, TableExports};

use super::{client, port_error, CallHealth};

/// The exports of one region.
pub struct DynamoExports {
    client: Client,
    region: String,
}

impl DynamoExports {
    /// The exports of `region`.
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> DynamoExports {
        DynamoExports { client: client!(aws_sdk_dynamodb, conf, calls), region }
    }
}

fn info(d: &ExportDescription) -> TableExportInfo {
    let failure = match (d.failure_code(), d.failure_message()) {
        (None, None) => None,
        (c, m) => Some(format!("{}: {}", c.unwrap_or("unknown"), m.unwrap_or("no message"))),
    };
    TableExportInfo {
        arn: d.export_arn().unwrap_or_default().to_string(),
        status: d.export_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        bucket: d.s3_bucket().unwrap_or_default().to_string(),
        prefix: d.s3_prefix().unwrap_or_default().to_string(),
        items: d.item_count().and_then(|n| u64::try_from(n).ok()),
        manifest: d.export_manifest().map(String::from),
        failure,
    }
}

#[async_trait]
impl TableExports for DynamoExports {
    fn region(&self) -> &str {
        &self.region
    }

    async fn start(&self, r: &StartTableExport) -> Result<TableExportInfo, PortError> {
        let out = self
            .client
            .export_table_to_point_in_time()
            .table_arn(&r.table_arn)
            .export_time(DateTime::from_secs_and_nanos(
                r.export_time.as_second(),
                r.export_time.subsec_nanosecond().unsigned_abs(),
            ))
            .s3_bucket(&r.bucket)
            .s3_prefix(&r.prefix)
            .client_token(&r.client_token)
            .export_format(ExportFormat::DynamodbJson)
            .send()
            .await
            .map_err(|e| match port_error("dynamodb:ExportTableToPointInTime", e) {
                // Not retryable: the table's settings must change first.
                e if e.code.as_deref() == Some("PointInTimeRecoveryUnavailableException") => PortError::new(
                    ErrorKind::Invalid,
                    e.code.as_deref(),
                    format!(
                        "point-in-time recovery is off for {}: enable it, or set export.dynamodb_mode = \"backup\" ({})",
                        r.table_arn, e.message
                    ),
                ),
                e => e,
            })?;
        out.export_description()
            .map(info)
            .ok_or_else(|| PortError::new(ErrorKind::Internal, None, "ExportTableToPointInTime answered no export"))
    }

    async fn describe(&self, arn: &str) -> Result<Option<TableExportInfo>, PortError> {
        match self.client.describe_export().export_arn(arn).send().await {
            Ok(out) => Ok(out.export_description().map(info)),
            Err(e) => match port_error("dynamodb:DescribeExport", e) {
                e if e.kind == ErrorKind::NotFound => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn list(&self, table_arn: &str) -> Result<Vec<String>, PortError> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_exports()
                .table_arn(table_arn)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| port_error("dynamodb:ListExports", e))?;
            arns.extend(out.export_summaries().iter().filter_map(|s| s.export_arn().map(String::from)));
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(arns)
    }
}
