//! DynamoDB tables for exports of backups: the [`Tables`] port (restore to a temporary table,
//! describe, parallel scan, delete), items written as DynamoDB JSON lines.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{AttributeValue, Tag};
use aws_sdk_dynamodb::Client;
use bunker_actors::ports::{ErrorKind, PortError, ScanPage, TableInfo, Tables};
use bunker_protocol::tags::Tags;
use serde_json::{json, Map, Value};

use super::{client, port_error, CallHealth};

/// The tables of one region.
pub struct DynamoTables {
    client: Client,
    region: String,
}

impl DynamoTables {
    /// The tables of `region`.
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> DynamoTables {
        DynamoTables { client: client!(aws_sdk_dynamodb, conf, calls), region }
    }
}

/// An attribute value as DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}`, `{"M": {…}}`, …).
fn to_json(v: &AttributeValue) -> Value {
    let list = |l: &[AttributeValue]| Value::Array(l.iter().map(to_json).collect());
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": bunker_actors::stream::base64(b.as_ref()) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::Ss(s) => json!({ "SS": s }),
        AttributeValue::Ns(n) => json!({ "NS": n }),
        AttributeValue::Bs(b) => {
            json!({ "BS": b.iter().map(|x| bunker_actors::stream::base64(x.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::L(l) => json!({ "L": list(l) }),
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        _ => json!({ "NULL": true }),
    }
}

fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    let mut keys: Vec<&String> = item.keys().collect();
    keys.sort();
    Value::Object(keys.into_iter().map(|k| (k.clone(), to_json(&item[k]))).collect::<Map<_, _>>())
}

/// A key back from DynamoDB JSON (string and number keys; a binary key ends the scan with
/// an error, never a wrong page).
fn key_from_json(text: &str) -> Option<HashMap<String, AttributeValue>> {
    let v: Value = serde_json::from_str(text).ok()?;
    let mut out = HashMap::new();
    for (k, typed) in v.as_object()? {
        let (t, x) = typed.as_object()?.iter().next()?;
        let x = x.as_str()?.to_string();
        let value = match t.as_str() {
            "S" => AttributeValue::S(x),
            "N" => AttributeValue::N(x),
            _ => return None,
        };
        out.insert(k.clone(), value);
    }
    Some(out)
}

fn gone(e: &PortError) -> bool {
    e.kind == ErrorKind::NotFound
}

#[async_trait]
impl Tables for DynamoTables {
    fn region(&self) -> &str {
        &self.region
    }

    async fn restore(&self, backup_arn: &str, table: &str, tags: &Tags) -> Result<(), PortError> {
        self.client
            .restore_table_from_backup()
            .backup_arn(backup_arn)
            .target_table_name(table)
            .send()
            .await
            .map_err(|e| port_error("dynamodb:RestoreTableFromBackup", e))?;
        self.tag(table, tags).await
    }

    async fn tag(&self, table: &str, tags: &Tags) -> Result<(), PortError> {
        let described = self
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| port_error("dynamodb:DescribeTable", e))?;
        let arn = described.table().and_then(|t| t.table_arn()).unwrap_or_default().to_string();
        let tags: Vec<Tag> = tags.iter().filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok()).collect();
        self.client
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| port_error("dynamodb:TagResource", e))?;
        Ok(())
    }

    async fn status(&self, table: &str) -> Result<Option<TableInfo>, PortError> {
        let described = match self.client.describe_table().table_name(table).send().await {
            Ok(d) => d,
            Err(e) => {
                let e = port_error("dynamodb:DescribeTable", e);
                return if gone(&e) { Ok(None) } else { Err(e) };
            }
        };
        let Some(t) = described.table() else { return Ok(None) };
        let tags = self
            .client
            .list_tags_of_resource()
            .resource_arn(t.table_arn().unwrap_or_default())
            .send()
            .await
            .map_err(|e| port_error("dynamodb:ListTagsOfResource", e))?;
        Ok(Some(TableInfo {
            status: t.table_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
            tags: super::tag_map(tags.tags().iter().map(|t| (Some(t.key()), Some(t.value())))),
            restored_from: t.restore_summary().and_then(|r| r.source_backup_arn()).map(String::from),
        }))
    }

    async fn scan(
        &self,
        table: &str,
        segment: u32,
        segments: u32,
        start: Option<String>,
    ) -> Result<ScanPage, PortError> {
        let start = match start.as_deref().map(key_from_json) {
            Some(None) => return Err(PortError::new(ErrorKind::Internal, None, "unreadable scan start key")),
            Some(k) => k,
            None => None,
        };
        let out = self
            .client
            .scan()
            .table_name(table)
            .segment(segment as i32)
            .total_segments(segments as i32)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| port_error("dynamodb:Scan", e))?;
        let items = out.items().iter().map(|i| json!({ "Item": item_json(i) }).to_string()).collect();
        let next = out.last_evaluated_key().filter(|k| !k.is_empty()).map(|k| item_json(k).to_string());
        Ok(ScanPage { items, next })
    }

    async fn named(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        let (mut found, mut start) = (Vec::new(), None);
        loop {
            let out = self
                .client
                .list_tables()
                .set_exclusive_start_table_name(start.take())
                .send()
                .await
                .map_err(|e| port_error("dynamodb:ListTables", e))?;
            found.extend(out.table_names().iter().filter(|n| n.starts_with(prefix)).cloned());
            match out.last_evaluated_table_name() {
                Some(n) => start = Some(n.to_string()),
                None => return Ok(found),
            }
        }
    }

    async fn delete(&self, table: &str) -> Result<(), PortError> {
        match self.client.delete_table().table_name(table).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = port_error("dynamodb:DeleteTable", e);
                if gone(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}
