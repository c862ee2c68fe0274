//! The event watcher: long-polls the queue EventBridge feeds and hands each message off.
//!
//! Durability follows the acknowledge-then-delete pattern: a message is deleted only after
//! the work it asked for has been handed off and has ended (the replicator's job is done, or
//! the command's run has finished). While the work runs, the message's visibility is
//! extended, so another instance does not take it; if this process dies, the message comes
//! back after its visibility timeout. A message that cannot be read goes to the dead-letter
//! queue with the reason as a message attribute, and the watcher carries on.
//!
//! [`Watcher`] is the logic; [`WatcherActor`] runs its poll loop as a supervised task.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bunker_protocol::events::{self, Command, Intake};
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::engine::{JobEnd, JobReport, Run};
use crate::metrics::Metrics;
use crate::ports::{EventQueue, QueueMessage};
use crate::replicator::Replicate;
use crate::stream::export_job::ExportSnapshot;
use crate::vault_export::{PointKey, VaultExports};

/// Run a command received from the queue; answers when the run (with its copies and
/// shares) has ended, `Err` with the reason when it could not run.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), CommandError>")]
pub struct RunCommand(pub Command);

impl crate::engine::Relayed for RunCommand {
    /// Left on the queue: it comes back to the restarted scheduler.
    fn unavailable() -> Self::Result {
        Err(CommandError::Transient("the scheduler is restarting".into()))
    }
}

/// Why a command did not run, classified: a permanent failure can never succeed as asked
/// (not configured, not found, invalid) and is dead-lettered at once with the reason; a
/// transient one is left on the queue to come back, the queue's redrive policy bounding how
/// often.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Will never succeed as asked.
    #[error("{0}")]
    Permanent(String),
    /// May succeed later.
    #[error("{0}")]
    Transient(String),
}

impl CommandError {
    /// How a job that a command asked for ended: `Ok` when done (or not this deployment's to
    /// do), else its failure, permanent or not as the job says.
    pub fn of_job(end: &JobEnd) -> Result<(), CommandError> {
        match end {
            JobEnd::Done | JobEnd::NotOurs(_) => Ok(()),
            JobEnd::Failed(why) => Err(CommandError::Permanent(why.clone())),
            JobEnd::GaveUp(why) => Err(CommandError::Transient(why.clone())),
        }
    }
}

/// The long-poll wait of each receive. SQS allows up to 20 s (fewer empty receives); 5 s
/// keeps shutdown quick. A poll completes at least this often while the queue is reachable
/// and a slot is free.
pub const POLL_SECS: u32 = 5;
/// `/healthz` fails the watcher after this many poll intervals without a completed poll.
pub const MISSED_POLLS: u32 = 3;
/// Waits between failed receives: 0.4 s doubling to 12.8 s, jittered; the poll loop never
/// gives up (`/healthz` reports it failing after [`MISSED_POLLS`] intervals).
const RECEIVE_BACKOFF: bunker_protocol::job::Backoff = bunker_protocol::job::Backoff {
    base: Duration::from_millis(400),
    cap: Duration::from_millis(12_800),
    jitter: Duration::from_millis(200),
    max_retries: u32::MAX,
};

/// Messages handled at once by one instance; the next receive waits for a free slot
/// (back-pressure: a busy instance leaves messages to the others).
pub const MAX_IN_FLIGHT: usize = 10;

/// The watcher's logic.
pub struct Watcher {
    queue: Arc<dyn EventQueue>,
    replicator: Recipient<Replicate>,
    commands: Recipient<RunCommand>,
    metrics: Arc<Metrics>,
    /// Visibility timeout given to received messages, extended by as much while work runs.
    visibility_secs: u32,
    in_flight: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    /// With `export.to`: EBS backups announced by events are exported too.
    exports: Option<Recipient<Run<ExportSnapshot>>>,
    /// With `export.vaults`: recovery points events announce in those vaults are exported.
    vault_exports: Option<(Arc<VaultExports>, Recipient<Run<PointKey>>)>,
    /// What commands may ask for.
    allowed: events::Allowed,
    /// When the last receive completed (or the watcher started), and the last receive error.
    polled: std::sync::Mutex<(tokio::time::Instant, Option<String>)>,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Work done (or nothing to do); deleted.
    Done,
    /// Unreadable; sent to the dead-letter queue with this reason, then deleted.
    DeadLettered(String),
    /// The work failed or the service is stopping: left on the queue to come back.
    Left(String),
}

impl Watcher {
    /// A watcher over `queue`.
    pub fn new(
        queue: Arc<dyn EventQueue>,
        replicator: Recipient<Replicate>,
        commands: Recipient<RunCommand>,
        metrics: Arc<Metrics>,
        visibility_secs: u32,
    ) -> Watcher {
        Watcher {
            queue,
            replicator,
            commands,
            metrics,
            visibility_secs: visibility_secs.max(10),
            in_flight: Arc::new(AtomicUsize::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
            exports: None,
            vault_exports: None,
            allowed: events::Allowed::default(),
            polled: std::sync::Mutex::new((tokio::time::Instant::now(), None)),
        }
    }

    /// For `/healthz`: `Err` when no poll of the queue completed in [`MISSED_POLLS`] poll
    /// intervals, unless every slot is busy (then receiving waits, by design) or intake has
    /// stopped.
    pub fn health(&self) -> Result<(), String> {
        let (at, error) = self.polled.lock().expect("poll time").clone();
        let limit = Duration::from_secs(u64::from(POLL_SECS * MISSED_POLLS));
        if at.elapsed() <= limit || self.in_flight() >= MAX_IN_FLIGHT || self.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(format!(
            "no completed queue poll for {} s (one is due every {POLL_SECS} s){}",
            at.elapsed().as_secs(),
            error.map(|e| format!("; last error: {e}")).unwrap_or_default()
        ))
    }

    /// Admits only commands within `allowed` (by default: none that name a kind, region or
    /// target).
    pub fn with_allowed(mut self, allowed: events::Allowed) -> Self {
        self.allowed = allowed;
        self
    }

    /// Exports every EBS backup an event announces (after its copies and shares), through
    /// `exporter`. The message stays on the queue until the export has ended.
    pub fn with_exports(mut self, exporter: Recipient<Run<ExportSnapshot>>) -> Self {
        self.exports = Some(exporter);
        self
    }

    /// Exports the recovery points of `export.vaults` that events announce, through
    /// `exporter` (`logic` resolves an event to its recovery point). The message stays on the
    /// queue until the export has ended.
    pub fn with_vault_exports(mut self, logic: Arc<VaultExports>, exporter: Recipient<Run<PointKey>>) -> Self {
        self.vault_exports = Some((logic, exporter));
        self
    }

    async fn backup_ready(&self, m: &QueueMessage, b: events::BackupRef) -> Handled {
        let work = self.replicator.send(Run(b.clone()));
        match self.extending(m, work).await {
            Ok(Ok(JobReport { end, .. })) => {
                // Not ours, or given up (reported by the replicator; reconciliation tries
                // again later): either way the message has been acted on.
                if let Some(why) = end.reason() {
                    info!(message_id = %m.id, backup_id = %b.id, why = %why, "event handled without a copy");
                }
                self.export(m, &b).await
            }
            Ok(Err(e)) => Handled::Left(format!("replicator: {e}")),
            Err(e) => Handled::Left(format!("replicator unavailable: {e}")),
        }
    }

    async fn recovery_point(&self, m: &QueueMessage, hint: events::RecoveryPointHint) -> Handled {
        let Some((logic, x)) = self.vault_exports.as_ref().filter(|(v, _)| v.may_export(&hint)) else {
            return match hint.backup() {
                Some(b) => self.backup_ready(m, b).await,
                None => {
                    info!(message_id = %m.id, arn = ?hint.arn, "recovery point of no listed vault and no kind bunker copies");
                    Handled::Done
                }
            };
        };
        let key = match logic.key_of(&hint).await {
            Ok(Some(key)) => key,
            Ok(None) => {
                info!(message_id = %m.id, arn = ?hint.arn, "event names no recovery point of a listed vault");
                return Handled::Done;
            }
            Err(e) => return Handled::Left(format!("resolving the recovery point: {e}")),
        };
        let what = format!("export of recovery point {}", key.arn);
        let answer = self.extending(m, x.send(Run(key))).await;
        self.job_ended(m, &what, answer).await
    }

    /// How a job a message asked for ended: done, dead-lettered when it failed for good,
    /// left for redelivery otherwise.
    async fn job_ended<K>(
        &self,
        m: &QueueMessage,
        what: &str,
        answer: Result<Result<JobReport<K>, crate::engine::EngineError>, MailboxError>,
    ) -> Handled {
        match answer {
            Ok(Ok(report)) => match CommandError::of_job(&report.end) {
                Ok(()) => Handled::Done,
                Err(e) => self.failed(m, what, e).await,
            },
            Ok(Err(e)) => Handled::Left(format!("{what}: {e}")),
            Err(e) => Handled::Left(format!("{what}: job actor unavailable: {e}")),
        }
    }

    async fn export(&self, m: &QueueMessage, b: &events::BackupRef) -> Handled {
        let Some(x) = self.exports.as_ref().filter(|_| b.kind == bunker_protocol::ResourceKind::Ebs) else {
            return Handled::Done;
        };
        let job = ExportSnapshot { snapshot_id: b.id.clone(), region: b.region.clone(), to: None, base: None };
        let what = format!("export of {}", b.id);
        let answer = self.extending(m, x.send(Run(job))).await;
        self.job_ended(m, &what, answer).await
    }

    /// A failed command or export: dead-lettered at once when permanent, else left.
    async fn failed(&self, m: &QueueMessage, what: &str, e: CommandError) -> Handled {
        match e {
            CommandError::Transient(why) => Handled::Left(format!("{what}: {why}")),
            CommandError::Permanent(why) => self.dead_letter(m, format!("{what}: {why}")).await,
        }
    }

    async fn dead_letter(&self, m: &QueueMessage, reason: String) -> Handled {
        warn!(message_id = %m.id, reason = %reason, "message dead-lettered");
        match self.queue.dead_letter(m, &reason).await {
            Ok(()) => Handled::DeadLettered(reason),
            Err(e) => Handled::Left(format!("dead-letter queue unreachable: {e}")),
        }
    }

    /// Messages being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops receiving; messages in hand are finished.
    pub fn stop_intake(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Handles one message end to end.
    pub async fn handle(&self, m: &QueueMessage) -> Handled {
        let outcome = match events::parse_message(&m.body) {
            Err(e) => self.dead_letter(m, e.to_string()).await,
            Ok(Intake::Nothing(why)) => {
                info!(message_id = %m.id, why = %why, "message needs no work");
                Handled::Done
            }
            Ok(Intake::BackupReady(b)) => self.backup_ready(m, b).await,
            Ok(Intake::RecoveryPoint(hint)) => self.recovery_point(m, hint).await,
            Ok(Intake::Command(c)) => {
                let action = c.action();
                if let Err(refused) = self.allowed.admit(&c) {
                    return self.count(m, self.dead_letter(m, format!("{action}: {refused}")).await).await;
                }
                match self.extending(m, self.commands.send(RunCommand(c))).await {
                    Ok(Ok(())) => Handled::Done,
                    Ok(Err(e)) => self.failed(m, action, e).await,
                    Err(e) => Handled::Left(format!("{action}: scheduler unavailable: {e}")),
                }
            }
        };
        self.count(m, outcome).await
    }

    /// Counts how a message ended, and deletes it unless it is left to come back.
    async fn count(&self, m: &QueueMessage, outcome: Handled) -> Handled {
        let label = match &outcome {
            Handled::Done => "handled",
            Handled::DeadLettered(_) => "dead_lettered",
            Handled::Left(_) => "left",
        };
        self.metrics.inc(crate::metrics::Metric::MessagesTotal, &[("outcome", label)]);
        match &outcome {
            Handled::Done | Handled::DeadLettered(_) => {
                if let Err(e) = self.queue.delete(&m.receipt).await {
                    // It comes back and is handled again: every effect is idempotent.
                    warn!(message_id = %m.id, error = %e, "delete failed; the message will be redelivered");
                }
            }
            Handled::Left(why) => {
                warn!(message_id = %m.id, receive_count = m.receive_count, why = %why, "message left on the queue")
            }
        }
        outcome
    }

    /// Awaits `work`, extending the message's visibility while it runs.
    async fn extending<F: std::future::Future>(&self, m: &QueueMessage, work: F) -> F::Output {
        tokio::pin!(work);
        let every = Duration::from_secs(u64::from(self.visibility_secs / 2).max(1));
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(every) => {
                    if let Err(e) = self.queue.extend_visibility(&m.receipt, self.visibility_secs).await {
                        warn!(message_id = %m.id, error = %e, "visibility not extended");
                    }
                }
            }
        }
    }

    /// Receives and dispatches until [`Watcher::stop_intake`]. Each message is handled on
    /// its own task, at most [`MAX_IN_FLIGHT`] at once.
    pub async fn run(self: Arc<Self>) {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut failures = 0u32;
        while !self.stopping.load(Ordering::SeqCst) {
            let Ok(first) = permits.clone().acquire_owned().await else { return };
            let free = permits.available_permits() + 1;
            let wait = if self.stopping.load(Ordering::SeqCst) { 0 } else { POLL_SECS };
            let batch = match self.queue.receive(free.min(10) as u32, wait, self.visibility_secs).await {
                Ok(b) => {
                    failures = 0;
                    *self.polled.lock().expect("poll time") = (tokio::time::Instant::now(), None);
                    b
                }
                Err(e) => {
                    failures += 1;
                    self.polled.lock().expect("poll time").1 = Some(e.to_string());
                    self.metrics
                        .inc(crate::metrics::Metric::AwsErrorsTotal, &[("code", e.code.as_deref().unwrap_or("none"))]);
                    // Seeded by the process: instances failing together do not retry together.
                    let backoff = RECEIVE_BACKOFF.delay(failures, u64::from(std::process::id()));
                    error!(error = %e, backoff_ms = backoff.as_millis() as u64, "queue receive failed");
                    drop(first);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let mut first = Some(first);
            for m in batch {
                let permit = match first.take() {
                    Some(p) => p,
                    None => match permits.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let me = self.clone();
                // Dropped when the task ends, panicking or not: the count never stays high.
                let counted = crate::guard::InFlight::enter(&me.in_flight);
                tokio::spawn(async move {
                    let (_permit, _counted) = (permit, counted);
                    me.handle(&m).await;
                });
            }
        }
        info!("watcher: intake stopped");
    }
}

/// Stop receiving messages (shutdown's first step).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopIntake;

/// How many messages are being handled.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct GetInFlight;

/// The actix shell: runs [`Watcher::run`] as a task and restarts it (with backoff, logged,
/// counted and reported) if it panics.
pub struct WatcherActor {
    logic: Arc<Watcher>,
    restarts: u32,
    on_panic: Option<Recipient<crate::system::ReportFailure>>,
}

impl WatcherActor {
    /// Wraps the logic; panics are reported to `on_panic`.
    pub fn new(logic: Arc<Watcher>, on_panic: Option<Recipient<crate::system::ReportFailure>>) -> Self {
        WatcherActor { logic, restarts: 0, on_panic }
    }

    fn start_loop(&mut self, ctx: &mut Context<Self>) {
        let task = tokio::spawn(self.logic.clone().run());
        ctx.spawn(task.into_actor(self).map(|res, act, ctx| {
            if let Err(e) = res {
                act.restarts += 1;
                let msg = format!("watcher loop {}: {e}", if e.is_panic() { "panicked" } else { "ended" });
                error!(error = %msg, restarts = act.restarts, "restarting the watcher loop");
                act.logic.metrics.inc(crate::metrics::Metric::ActorRestartsTotal, &[("actor", "watcher")]);
                if let Some(r) = &act.on_panic {
                    let r = r.clone();
                    actix::spawn(async move {
                        if r.send(crate::system::ReportFailure { actor: "watcher", message: msg }).await.is_err() {
                            warn!("failure reporter stopped");
                        }
                    });
                }
                let backoff = Duration::from_millis(500 * 2u64.pow(act.restarts.min(6)));
                ctx.run_later(backoff, |act, ctx| act.start_loop(ctx));
            }
        }));
    }
}

impl Actor for WatcherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_loop(ctx);
    }
}

impl Handler<StopIntake> for WatcherActor {
    type Result = ();

    fn handle(&mut self, _msg: StopIntake, _ctx: &mut Self::Context) {
        self.logic.stop_intake();
    }
}

impl Handler<GetInFlight> for WatcherActor {
    type Result = usize;

    fn handle(&mut self, _msg: GetInFlight, _ctx: &mut Self::Context) -> usize {
        self.logic.in_flight()
    }
}
