//! SNS notifications, published in the topic's own region.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};

use super::{client, CallHealth};
use aws_sdk_sns::Client;
use bunker_actors::ports::{ErrorKind, Notifier, PortError};

use super::port_error;

/// Publishes to SNS topics, one client per topic region.
pub struct SnsNotifier {
    sdk: SdkConfig,
    calls: CallHealth,
    clients: Mutex<HashMap<String, Client>>,
}

impl SnsNotifier {
    /// A notifier using `sdk`'s credentials; clients are made per topic region on first use.
    pub fn new(sdk: SdkConfig, calls: CallHealth) -> Self {
        SnsNotifier { sdk, calls, clients: Mutex::new(HashMap::new()) }
    }

    fn client(&self, region: &str) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let conf = self.sdk.to_builder().region(Region::new(region.to_string())).build();
                client!(aws_sdk_sns, &conf, self.calls)
            })
            .clone()
    }
}

/// SNS subjects: ≤ 100 printable ASCII characters, no line breaks.
fn subject(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(100).collect()
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn publish(&self, topic_arn: &str, subj: &str, message: &str) -> Result<(), PortError> {
        let region = topic_arn
            .split(':')
            .nth(3)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| PortError::new(ErrorKind::Invalid, None, format!("not a topic ARN: {topic_arn}")))?;
        self.client(region)
            .publish()
            .topic_arn(topic_arn)
            .subject(subject(subj))
            .message(message)
            .send()
            .await
            .map_err(|e| port_error("sns:Publish", e))?;
        Ok(())
    }
}
