//! Reconciliation: events are hints, this is the guarantee.
//!
//! A scan at start-up and every `serve.reconcile_interval` lists the backups this deployment
//! owns in its source regions and hands each to the replicator, which finds from AWS state
//! what is missing (a DR copy, a share, a copy still pending) and finishes it. A lost event,
//! a crash in the middle of a fan-out or a SIGTERM loses nothing: the next scan picks it up.
//! Jobs already open are joined, not duplicated.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bunker_protocol::ResourceKind;
use futures::stream::{self, StreamExt};
use tracing::{info, warn};

use crate::replicator::{Replicate, Replicator};

/// Scan now (all served kinds, or one); answers when every job the scan opened has ended.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Reconcile {
    /// One kind, or all served kinds.
    pub kind: Option<ResourceKind>,
}

/// The logic: which backups to hand over.
pub struct Reconciler {
    replicator: Arc<Replicator>,
    addr: Recipient<Replicate>,
    kinds: Vec<ResourceKind>,
}

impl Reconciler {
    /// Scans `kinds` through `replicator`'s ports and sends jobs to `addr`.
    pub fn new(replicator: Arc<Replicator>, addr: Recipient<Replicate>, kinds: Vec<ResourceKind>) -> Self {
        Reconciler { replicator, addr, kinds }
    }

    /// One scan; returns (jobs handed over, jobs that ended done).
    pub async fn scan(&self, only: Option<ResourceKind>) -> (usize, usize) {
        if !self.replicator.config().replication.is_enabled() {
            return (0, 0);
        }
        let mut refs = Vec::new();
        for &kind in self.kinds.iter().filter(|k| only.is_none_or(|o| o == **k)) {
            match self.replicator.owned_backups(kind).await {
                Ok(r) => refs.extend(r),
                Err(e) => warn!(kind = %kind, error = %e, "reconciliation: listing failed; next scan retries"),
            }
        }
        let total = refs.len();
        // Jobs are bounded here, not by the replicator's mailbox: at most 16 open at once
        // from a scan (send().await, never do_send).
        let done = stream::iter(refs)
            .map(|b| self.addr.send(Replicate(b)))
            .buffer_unordered(16)
            .filter(|r| std::future::ready(matches!(r, Ok(Ok(j)) if j.done)))
            .count()
            .await;
        info!(backups = total, complete = done, "reconciliation scan finished");
        (total, done)
    }
}

/// The actix shell: a scan at start and on an interval, never two at once.
pub struct ReconcilerActor {
    logic: Arc<Reconciler>,
    interval: Duration,
    scanning: bool,
    stopped: bool,
}

impl ReconcilerActor {
    /// Scans every `interval`.
    pub fn new(logic: Arc<Reconciler>, interval: Duration) -> Self {
        ReconcilerActor { logic, interval, scanning: false, stopped: false }
    }

    fn scan(&mut self, ctx: &mut Context<Self>) {
        if self.scanning || self.stopped {
            return;
        }
        self.scanning = true;
        let logic = self.logic.clone();
        ctx.spawn(async move { logic.scan(None).await }.into_actor(self).map(|_, act, _| act.scanning = false));
    }
}

/// Stop scanning (shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopReconciling;

impl Actor for ReconcilerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.scan(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.scan(ctx));
    }
}

impl Handler<Reconcile> for ReconcilerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Reconcile, _ctx: &mut Self::Context) -> Self::Result {
        let logic = self.logic.clone();
        Box::pin(async move {
            logic.scan(msg.kind).await;
        })
    }
}

impl Handler<StopReconciling> for ReconcilerActor {
    type Result = ();

    fn handle(&mut self, _msg: StopReconciling, _ctx: &mut Self::Context) {
        self.stopped = true;
    }
}
