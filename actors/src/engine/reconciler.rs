//! Reconciliation: events are hints, this is the guarantee.
//!
//! A scan at start-up and every `serve.reconcile_interval` asks a workflow for everything it
//! owns ([`Workflow::owned`]: for replication, the backups this deployment owns in its source
//! regions), removes what dead jobs left behind ([`Workflow::sweep`]) and hands each key to
//! the workflow's [`JobActor`](super::JobActor), whose passes find from AWS state what is
//! missing (a DR copy, a share, a copy still pending) and finish it. A lost event, a crash in
//! the middle of a fan-out or a SIGTERM loses nothing: the next scan picks it up. Jobs
//! already open are joined, not duplicated.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bunker_protocol::ResourceKind;
use futures::stream::{self, StreamExt};
use tracing::{info, warn};

use super::{Run, Workflow};

/// Scan now (all served kinds, or one); answers when every job the scan opened has ended.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Reconcile {
    /// One kind, or all served kinds.
    pub kind: Option<ResourceKind>,
}

/// A scan's job requests go here.
type Jobs<W> = Recipient<Run<<W as Workflow>::Key>>;

impl super::Relayed for Reconcile {
    fn unavailable() -> Self::Result {}
}

/// The logic: which keys to hand over.
pub struct Reconciler<W: Workflow> {
    workflow: Arc<W>,
    addr: Jobs<W>,
    kinds: Vec<ResourceKind>,
}

impl<W: Workflow> Reconciler<W> {
    /// Scans `kinds` through `workflow` and sends jobs to `addr` (no kinds: one scan of
    /// everything the workflow owns, for workflows not keyed by kind).
    pub fn new(workflow: Arc<W>, addr: Jobs<W>, kinds: Vec<ResourceKind>) -> Self {
        Reconciler { workflow, addr, kinds }
    }

    /// One scan; returns (jobs handed over, jobs that ended done).
    pub async fn scan(&self, only: Option<ResourceKind>) -> (usize, usize) {
        if !self.workflow.enabled() {
            return (0, 0);
        }
        match self.workflow.sweep().await {
            Ok(0) => {}
            Ok(n) => info!(workflow = W::NAME, removed = n, "reconciliation: temporary resources removed"),
            Err(e) => {
                warn!(workflow = W::NAME, error = %e, "reconciliation: sweep failed; next scan retries")
            }
        }
        let mut keys = Vec::new();
        if self.kinds.is_empty() && only.is_none() {
            // A workflow not keyed by kind (the vault exports): one listing.
            match self.workflow.owned(None).await {
                Ok(r) => keys.extend(r),
                Err(e) => warn!(workflow = W::NAME, error = %e, "reconciliation: listing failed; next scan retries"),
            }
        }
        for &kind in self.kinds.iter().filter(|k| only.is_none_or(|o| o == **k)) {
            match self.workflow.owned(Some(kind)).await {
                Ok(r) => keys.extend(r),
                Err(e) => warn!(kind = %kind, error = %e, "reconciliation: listing failed; next scan retries"),
            }
        }
        let total = keys.len();
        // Jobs are bounded here, not by the job actor's mailbox: at most W::FAN_OUT open at once
        // from a scan (send().await, never do_send).
        let done = stream::iter(keys)
            .map(|k| self.addr.send(Run(k)))
            .buffer_unordered(W::FAN_OUT)
            .filter(|r| std::future::ready(matches!(r, Ok(Ok(j)) if j.done())))
            .count()
            .await;
        info!(workflow = W::NAME, jobs = total, complete = done, "reconciliation scan finished");
        (total, done)
    }
}

/// The actix shell: a scan at start and on an interval, never two at once.
pub struct ReconcilerActor<W: Workflow> {
    logic: Arc<Reconciler<W>>,
    interval: Duration,
    scanning: bool,
    stopped: bool,
}

impl<W: Workflow> ReconcilerActor<W> {
    /// Scans every `interval`.
    pub fn new(logic: Arc<Reconciler<W>>, interval: Duration) -> Self {
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

impl<W: Workflow> Actor for ReconcilerActor<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.scan(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.scan(ctx));
    }
}

impl<W: Workflow> Handler<Reconcile> for ReconcilerActor<W> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Reconcile, _ctx: &mut Self::Context) -> Self::Result {
        let logic = self.logic.clone();
        Box::pin(async move {
            logic.scan(msg.kind).await;
        })
    }
}

impl<W: Workflow> Handler<StopReconciling> for ReconcilerActor<W> {
    type Result = ();

    fn handle(&mut self, _msg: StopReconciling, _ctx: &mut Self::Context) {
        self.stopped = true;
    }
}
