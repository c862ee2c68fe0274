//! The event queue on SQS, with its dead-letter queue.

use async_trait::async_trait;
use aws_config::SdkConfig;

use super::{client, CallHealth};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use bunker_actors::ports::{ErrorKind, EventQueue, PortError, QueueMessage};

use super::port_error;

/// The queue EventBridge feeds.
pub struct SqsQueue {
    client: Client,
    url: String,
    dead_letter_url: Option<String>,
}

impl SqsQueue {
    /// A queue at `url`; unreadable messages go to `dead_letter_url`.
    pub fn new(conf: &SdkConfig, calls: &CallHealth, url: String, dead_letter_url: Option<String>) -> Self {
        SqsQueue { client: client!(aws_sdk_sqs, conf, calls), url, dead_letter_url }
    }
}

fn attr(v: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(v).build().expect("data type is set")
}

#[async_trait]
impl EventQueue for SqsQueue {
    async fn receive(&self, max: u32, wait_secs: u32, visibility_secs: u32) -> Result<Vec<QueueMessage>, PortError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait_secs.min(20) as i32)
            .visibility_timeout(visibility_secs as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| port_error("sqs:ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Some(QueueMessage {
                    id: m.message_id?,
                    body: m.body.unwrap_or_default(),
                    receipt: m.receipt_handle?,
                    receive_count,
                })
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| port_error("sqs:DeleteMessage", e))?;
        Ok(())
    }

    async fn extend_visibility(&self, receipt: &str, secs: u32) -> Result<(), PortError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs as i32)
            .send()
            .await
            .map_err(|e| port_error("sqs:ChangeMessageVisibility", e))?;
        Ok(())
    }

    async fn dead_letter(&self, message: &QueueMessage, reason: &str) -> Result<(), PortError> {
        let Some(dlq) = &self.dead_letter_url else {
            return Err(PortError::new(
                ErrorKind::Invalid,
                None,
                "no dead-letter queue: set serve.dead_letter_queue_url (the message stays on the queue; SQS redrive applies)",
            ));
        };
        let reason: String = reason.chars().take(1000).collect();
        self.client
            .send_message()
            .queue_url(dlq)
            .message_body(if message.body.is_empty() { "(empty)" } else { message.body.as_str() })
            .message_attributes("bunker_reason", attr(&reason))
            .message_attributes("bunker_source_message_id", attr(&message.id))
            .send()
            .await
            .map_err(|e| port_error("sqs:SendMessage", e))?;
        Ok(())
    }
}
