//! One engine for long-running AWS work.
//!
//! Work that starts something in AWS, waits with timers, continues from what AWS reports and
//! survives a crash by reconciling is a [`Workflow`]: a key (what one job is about), one
//! [`Workflow::pass`] (look at AWS, decide with a pure planner in `protocol`, act) returning a
//! typed [`Pass`], [`Workflow::owned`] (what reconciliation must look at) and
//! [`Workflow::sweep`] (temporary resources to remove). The generic [`JobActor`] shell does
//! the rest for every workflow: joins duplicate requests for one key, timers, backoff with
//! jitter ([`Backoff`]), waiters, per-workflow metrics, panic capture and drain on shutdown.
//! [`Reconciler`] is generic over `owned()`, and [`supervise`] re-creates a dead actor from
//! its factory.
//!
//! Jobs that look at AWS at about the same time share one look through a
//! [`batch::Batcher`] (one describe per kind and region for a whole batch of jobs).
//!
//! Adding a workflow is one plan file in `protocol` (what remains, as a pure function of what
//! AWS reports) and one file here implementing [`Workflow`]; `replicator.rs` is the worked
//! example.

pub mod batch;
mod job_actor;
mod reconciler;
mod supervisor;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use bunker_protocol::job::{Backoff, JobEnd};
use bunker_protocol::report::Entry;
use bunker_protocol::ResourceKind;
use tracing::warn;

pub use job_actor::{Drain, GetRunning, JobActor};
pub use reconciler::{Reconcile, Reconciler, ReconcilerActor, StopReconciling};
pub use supervisor::{supervise, Relay, Relayed, Supervised};

use crate::ports::{Notifier, PortError};

/// Jobs a scheduler or a reconciliation scan hands to the replicator at once (each `send`
/// awaits its job's end): large enough that jobs looking at AWS together share one batched
/// look ([`batch::Batcher`]) and that AWS's own limits (the copy caps), not this, bound a
/// fleet's fan-out; small enough that a scan of tens of thousands of backups holds a bounded
/// number of jobs. Workflows whose jobs hold heavy resources (exports stream data, dumps
/// restore instances) keep [`Workflow::FAN_OUT`]'s default.
pub const FAN_OUT: usize = 256;

/// Where time comes from. Actors never read the system clock themselves, so timers, leases
/// and backoff can be tested on tokio's paused time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> jiff::Timestamp;

    /// Now, in whole seconds since the Unix epoch (lease times).
    fn unix(&self) -> i64 {
        self.now().as_second()
    }
}

/// The host's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A clock that follows tokio's time from a fixed start: under paused time (tests) it moves
/// only when tokio's clock is advanced, so leases and timers agree.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: jiff::Timestamp,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start` now.
    pub fn starting_at(start: jiff::Timestamp) -> TokioClock {
        TokioClock { start, origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> jiff::Timestamp {
        let elapsed = jiff::SignedDuration::try_from(self.origin.elapsed()).unwrap_or(jiff::SignedDuration::MAX);
        self.start.saturating_add(elapsed).unwrap_or(self.start)
    }
}

/// Why a pass failed (worth retrying under the workflow's [`Backoff`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// AWS (or a lease table) failed.
    #[error(transparent)]
    Aws(#[from] PortError),
    /// A (kind, region) the job needs has no port in this service.
    #[error("{kind} in {region} is not served")]
    NotServed {
        /// The kind.
        kind: ResourceKind,
        /// The region.
        region: String,
    },
    /// The pass panicked (caught; the job is retried).
    #[error("the pass panicked: {0}")]
    Panicked(String),
    /// An export failed in a way a rerun may fix (it resumes from its journal).
    #[error(transparent)]
    Export(#[from] crate::stream::StreamError),
}

/// How one pass over a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Pass {
    /// Everything exists: the job ends done.
    Done,
    /// Something is pending (in AWS) or deferred (quota, cap, lease): look again after
    /// `next_check` (the actor's check interval when `None`).
    Waiting {
        /// When to look again, if the workflow knows better than the check interval.
        next_check: Option<Duration>,
        /// What is pending, for logs.
        why: String,
    },
    /// Effects were made and nothing is known to be pending: look again at once (a few
    /// times in a row at most, then after the check interval).
    Progress,
    /// Not this deployment's to do: the job ends, nothing was wrong.
    NotOurs(String),
    /// A failure worth retrying.
    Retry(JobError),
    /// A failure retrying cannot fix: the job ends [`JobEnd::Failed`] at once.
    Failed(String),
}

/// What became of a job, for whoever asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport<K> {
    /// What the job was about.
    pub key: K,
    /// How it ended.
    pub end: JobEnd,
    /// What was done (run-report entries), over all its passes.
    pub entries: Vec<Entry>,
}

impl<K> JobReport<K> {
    /// Whether the job is done.
    pub fn done(&self) -> bool {
        self.end.is_done()
    }
}

/// Why a job request got no report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The service is shutting down and takes no new jobs.
    #[error("shutting down: no new jobs")]
    Draining,
    /// The actor stopped (or was restarted) before the job ended; the work is found again
    /// by reconciliation or a redelivered message.
    #[error("the job actor stopped before the job ended")]
    Stopped,
}

/// Run the job for `key` to its end (joining the job already open for it, if any).
#[derive(Debug, Clone)]
pub struct Run<K>(pub K);

impl<K: 'static> actix::Message for Run<K> {
    type Result = Result<JobReport<K>, EngineError>;
}

impl<K: Clone + Send + 'static> Relayed for Run<K> {
    fn unavailable() -> Self::Result {
        Err(EngineError::Stopped)
    }

    /// A job is keyed and idempotent: asking again after a restart joins or redoes it.
    fn again(&self) -> Option<Self> {
        Some(self.clone())
    }

    fn lost(answer: &Self::Result) -> bool {
        matches!(answer, Err(EngineError::Stopped))
    }
}

/// What a job's key must be: comparable, printable, sendable, and of a resource kind.
pub trait JobKey: Clone + Eq + Hash + fmt::Display + fmt::Debug + Send + Sync + Unpin + 'static {
    /// The `kind` label of `bunker_jobs_total`.
    fn kind_label(&self) -> &'static str;
}

impl JobKey for bunker_protocol::events::BackupRef {
    fn kind_label(&self) -> &'static str {
        self.kind.as_str()
    }
}

/// Long-running work in AWS, driven by [`JobActor`]. See the module documentation.
#[async_trait]
pub trait Workflow: Send + Sync + 'static {
    /// What one job is about (jobs for equal keys are one job).
    type Key: JobKey;

    /// Names the workflow in logs, notifications and the `actor` label of restarts.
    const NAME: &'static str;

    /// Jobs a reconciliation scan hands over at once.
    const FAN_OUT: usize = 16;

    /// The `kind` label of `bunker_jobs_total` for a job (read by the job actor itself).
    fn kind_label(&self, key: &Self::Key) -> &'static str {
        key.kind_label()
    }

    /// One pass: look at AWS, plan, act. Returns how the job stands and the entries of the
    /// effects made in this pass. Never sleeps: waiting is [`Pass::Waiting`].
    async fn pass(&self, key: &Self::Key) -> (Pass, Vec<Entry>);

    /// Every job reconciliation must look at (of `kind`, or every kind served).
    async fn owned(&self, kind: Option<ResourceKind>) -> Result<Vec<Self::Key>, PortError>;

    /// Removes temporary resources left by jobs that died; returns how many were removed.
    async fn sweep(&self) -> Result<usize, PortError> {
        Ok(0)
    }

    /// Jobs the workflow wants looked at now rather than at their next timer, asked after
    /// every pass: a copy slot one job freed lets a job the cap deferred start its copy at
    /// once. A woken job that is not open, or is in a pass, is left as it is.
    fn woken(&self) -> Vec<Self::Key> {
        vec![]
    }

    /// Whether the workflow has anything to do in this configuration (reconciliation skips
    /// it otherwise).
    fn enabled(&self) -> bool {
        true
    }

    /// Called once when a job gives up after its retries, before its requesters hear of it:
    /// removes what its passes made and would otherwise wait for a sweep (a temporary
    /// instance). A job that fails ends in a pass, which cleans up itself.
    async fn abandon(&self, _key: &Self::Key) {}

    /// The entry recorded (with the job's other entries) when a job fails or gives up.
    fn gave_up_entry(&self, key: &Self::Key, reason: &str) -> Option<Entry>;

    /// The notification subject when a job fails or gives up.
    fn gave_up_subject(&self, key: &Self::Key) -> String {
        format!("bunker {} failed: {key}", Self::NAME)
    }
}

/// Publishes failures to the error topic (never fails the caller).
#[derive(Clone)]
pub struct Alerts {
    notifier: Arc<dyn Notifier>,
    topic: Option<String>,
}

impl fmt::Debug for Alerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerts").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Alerts {
    /// Alerts to `topic` (none: logged only).
    pub fn new(notifier: Arc<dyn Notifier>, topic: Option<String>) -> Alerts {
        Alerts { notifier, topic }
    }

    /// Publishes `message` under `subject`.
    pub async fn send(&self, subject: &str, message: &str) {
        if let Some(topic) = &self.topic {
            if let Err(e) = self.notifier.publish(topic, subject, message).await {
                warn!(topic = %topic, error = %e, "error notification not published");
            }
        }
    }
}
