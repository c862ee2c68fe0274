//! Outcomes on the bus: bunker's own EventBridge events (`bunker_protocol::bus`), put where
//! the work ends. A put that fails is logged and counted, never fails the work it reports.

use std::sync::Arc;

use bunker_protocol::bus::BusEvent;
use tracing::warn;

use crate::metrics::{Metric, Metrics};
use crate::ports::EventBus;

/// The configured bus, or none (`events.bus` unset: nothing is put).
#[derive(Clone, Default)]
pub struct Outcomes {
    bus: Option<Arc<dyn EventBus>>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcomes").field("bus", &self.bus.is_some()).finish_non_exhaustive()
    }
}

impl Outcomes {
    /// Events go to `bus`; failed puts are counted in `metrics`.
    pub fn new(bus: Option<Arc<dyn EventBus>>, metrics: Option<Arc<Metrics>>) -> Outcomes {
        Outcomes { bus, metrics }
    }

    /// Puts `events` (nothing without a bus or events).
    pub async fn emit(&self, events: Vec<BusEvent>) {
        let Some(bus) = &self.bus else { return };
        if events.is_empty() {
            return;
        }
        if let Err(e) = bus.put(&events).await {
            warn!(events = events.len(), error = %e, "events not put on the bus");
            if let Some(m) = &self.metrics {
                m.inc(Metric::EventsFailedTotal, &[]);
            }
        }
    }
}
