//! Leases in a DynamoDB table (string partition key `pk`): one conditional write per claim,
//! so of several instances exactly one wins a schedule slot or a copy.

use async_trait::async_trait;
use aws_config::SdkConfig;

use super::{client, CallHealth};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use bunker_actors::ports::{Leases, PortError};

use super::port_error;

/// Leases in one table.
pub struct DynamoLeases {
    client: Client,
    table: String,
}

impl DynamoLeases {
    /// Leases in `table`.
    pub fn new(conf: &SdkConfig, calls: &CallHealth, table: String) -> Self {
        DynamoLeases { client: client!(aws_sdk_dynamodb, conf, calls), table }
    }
}

#[async_trait]
impl Leases for DynamoLeases {
    async fn claim(&self, key: &str, holder: &str, now: i64, until: i64) -> Result<bool, PortError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(key.into()))
            .item("holder", AttributeValue::S(holder.into()))
            .item("expires_at", AttributeValue::N(until.to_string()))
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now OR holder = :holder")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":holder", AttributeValue::S(holder.into()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(port_error("dynamodb:PutItem", e)),
        }
    }

    async fn release(&self, key: &str, holder: &str) -> Result<(), PortError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.into()))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", AttributeValue::S(holder.into()))
            .send()
            .await;
        match out {
            // Someone else's now (ours lapsed and was taken): leave it.
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(port_error("dynamodb:DeleteItem", e)),
        }
    }
}
