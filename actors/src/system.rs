//! Failure reporting for the supervision tree.
//!
//! Every actor shell reports a restart or a caught panic here; the reporter logs it, counts it
//! in `bunker_actor_restarts_total` (the shells do) and publishes it to `error_sns_topic`, so
//! no failure is silent. The tree itself is built by the binary (`src/serve.rs`), in
//! dependency order: reporter, replicator, reconciler, scheduler, watcher; shutdown stops
//! intake first (watcher, scheduler, reconciler), waits for in-flight work up to the
//! deadline, then stops the System.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{error, warn};

use crate::ports::Notifier;

/// A failure to report.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ReportFailure {
    /// Which actor.
    pub actor: &'static str,
    /// What happened.
    pub message: String,
}

/// Publishes failures to the error topic.
pub struct FailureReporter {
    notifier: Arc<dyn Notifier>,
    topic: Option<String>,
}

impl FailureReporter {
    /// Reports to `topic` (none: log only).
    pub fn new(notifier: Arc<dyn Notifier>, topic: Option<String>) -> Self {
        FailureReporter { notifier, topic }
    }
}

impl Actor for FailureReporter {
    type Context = Context<Self>;
}

impl Handler<ReportFailure> for FailureReporter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: ReportFailure, _ctx: &mut Self::Context) -> Self::Result {
        error!(actor = msg.actor, error = %msg.message, "actor failure");
        let notifier = self.notifier.clone();
        let topic = self.topic.clone();
        Box::pin(async move {
            if let Some(t) = topic {
                let subject = format!("bunker: {} failed and was restarted", msg.actor);
                let body =
                    serde_json::json!({"schema": "bunker.failure/1", "actor": msg.actor, "message": msg.message});
                if let Err(e) = notifier.publish(&t, &subject, &body.to_string()).await {
                    warn!(topic = %t, error = %e, "failure notification not published");
                }
            }
        })
    }
}
