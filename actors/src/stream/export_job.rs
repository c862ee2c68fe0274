//! The service's EBS exports as a [`Workflow`]: a job per (snapshot, target, base), run by
//! the engine's [`JobActor`](crate::engine::JobActor), so duplicate requests join, transient
//! failures are retried under the engine's backoff (each rerun resumes from the export's
//! journal) and a panic is caught and retried.
//!
//! What remains of an export is decided by the [`Exporter`](super::export::Exporter) from
//! what the target holds: a finished manifest ends the job at once, a journal resumes the
//! upload, nothing starts one. The queue message that asked stays in flight until the job
//! ends, so the queue is the durable record: reconciliation has nothing to look at.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bunker_protocol::report::Entry;
use bunker_protocol::ResourceKind;
use tracing::{info, warn};

use super::exporter_actor::{run_export, PreparedExport};
use super::{Progress, StreamError, Tuning};
use crate::engine::{JobKey, Pass, Workflow};
use crate::metrics::Metrics;
use crate::ports::{ArchiveStore, PortError};

/// One export of an EBS snapshot (the service's exports: queue commands and `export.to`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExportSnapshot {
    /// The snapshot.
    pub snapshot_id: String,
    /// Its region.
    pub region: String,
    /// Target; `None`: the service's `export.to`.
    pub to: Option<String>,
    /// Incremental from this snapshot's export.
    pub base: Option<String>,
}

impl fmt::Display for ExportSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "export of {} ({}) to {}", self.snapshot_id, self.region, self.to.as_deref().unwrap_or("export.to"))?;
        match &self.base {
            Some(b) => write!(f, " from {b}"),
            None => Ok(()),
        }
    }
}

impl JobKey for ExportSnapshot {
    fn kind_label(&self) -> &'static str {
        ResourceKind::Ebs.as_str()
    }
}

/// Turns "export snapshot X to Y" into a [`PreparedExport`] (looks the snapshot up, loads
/// the base's manifest): the service's exports, wired by `src/`.
#[async_trait]
pub trait ExportTargets: Send + Sync {
    /// Prepares the export `what` asks for (its snapshot, region and base) to `to` (its own
    /// target or the default); `progress` is the export's live counters.
    async fn prepare(
        &self,
        what: &ExportSnapshot,
        to: &str,
        progress: Arc<Progress>,
    ) -> Result<PreparedExport, StreamError>;

    /// The store at target `to` (archives of `region`'s snapshots).
    fn store(&self, to: &str, region: &str) -> Result<Arc<dyn ArchiveStore>, StreamError>;
}

/// The export workflow: prepares each job through [`ExportTargets`] and runs it through the
/// pipeline, one export at a time (each holds up to `tuning`'s buffers, and the EBS direct
/// APIs' request budget is per account).
pub struct Exports {
    targets: Arc<dyn ExportTargets>,
    default_to: Option<String>,
    tuning: Tuning,
    metrics: Arc<Metrics>,
    one_at_a_time: tokio::sync::Semaphore,
}

impl Exports {
    /// Exports prepared by `targets`; `default_to` is `export.to`.
    pub fn new(
        targets: Arc<dyn ExportTargets>,
        default_to: Option<String>,
        tuning: Tuning,
        metrics: Arc<Metrics>,
    ) -> Exports {
        Exports { targets, default_to, tuning, metrics, one_at_a_time: tokio::sync::Semaphore::new(1) }
    }

    async fn export(&self, job: &ExportSnapshot) -> Result<super::export::ExportSummary, StreamError> {
        let to = job
            .to
            .clone()
            .or_else(|| self.default_to.clone())
            .ok_or(StreamError::Input("no target: give \"to\" or set export.to".into()))?;
        let _turn = self.one_at_a_time.acquire().await.map_err(|e| StreamError::Internal(e.to_string()))?;
        let progress = Arc::new(Progress::default());
        let p = self.targets.prepare(job, &to, progress.clone()).await?;
        run_export(p, self.tuning, progress, Some(self.metrics.clone())).await
    }
}

#[async_trait]
impl Workflow for Exports {
    type Key = ExportSnapshot;
    const NAME: &'static str = "exporter";

    async fn pass(&self, job: &ExportSnapshot) -> (Pass, Vec<Entry>) {
        let pass = match self.export(job).await {
            Ok(summary) => {
                info!(snapshot_id = %job.snapshot_id, archive = %summary.archive, "exported");
                Pass::Done
            }
            Err(e) if e.is_permanent() => {
                warn!(snapshot_id = %job.snapshot_id, error = %e, "export failed");
                Pass::Failed(e.to_string())
            }
            Err(e) => Pass::Retry(e.into()),
        };
        (pass, vec![])
    }

    async fn owned(&self, _kind: Option<ResourceKind>) -> Result<Vec<ExportSnapshot>, PortError> {
        Ok(vec![])
    }

    fn enabled(&self) -> bool {
        false
    }

    fn gave_up_entry(&self, _job: &ExportSnapshot, _reason: &str) -> Option<Entry> {
        None
    }
}
