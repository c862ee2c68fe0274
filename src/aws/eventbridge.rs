//! bunker's own events on an EventBridge bus (the [`EventBus`] port): `PutEvents` in batches
//! of 10 entries, the API's limit, each entry with source `bunker`.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use bunker_actors::ports::{ErrorKind, EventBus, PortError};
use bunker_protocol::bus::{BusEvent, SOURCE};

use super::{client, port_error, CallHealth};

/// Entries per `PutEvents` request (AWS's limit).
const BATCH: usize = 10;

/// One bus, by name or ARN.
pub struct Bus {
    client: Client,
    bus: String,
}

impl Bus {
    /// The bus `bus` (a name, in `conf`'s region, or an ARN).
    pub fn new(conf: &SdkConfig, calls: &CallHealth, bus: String) -> Bus {
        Bus { client: client!(aws_sdk_eventbridge, conf, calls), bus }
    }

    fn entry(&self, e: &BusEvent) -> PutEventsRequestEntry {
        // `Resources` are ARNs; ids that are not (a snapshot id) stay in the detail only.
        let resources = e.resources.iter().filter(|r| r.starts_with("arn:")).cloned().collect();
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(e.detail_type.as_str())
            .detail(&e.detail)
            .set_resources(Some(resources))
            .build()
    }
}

#[async_trait]
impl EventBus for Bus {
    async fn put(&self, events: &[BusEvent]) -> Result<(), PortError> {
        for batch in events.chunks(BATCH) {
            let out = self
                .client
                .put_events()
                .set_entries(Some(batch.iter().map(|e| self.entry(e)).collect()))
                .send()
                .await
                .map_err(|e| port_error("events:PutEvents", e))?;
            if out.failed_entry_count() > 0 {
                let why = out.entries().iter().find_map(|e| e.error_message()).unwrap_or("no reason given");
                return Err(PortError::new(
                    ErrorKind::Transient,
                    None,
                    format!("events:PutEvents: {} of {} entries refused: {why}", out.failed_entry_count(), batch.len()),
                ));
            }
        }
        Ok(())
    }
}
