//! The service's EBS exports as a [`Workflow`]: a job per (snapshot, target, base), run by
//! the engine's [`JobActor`](crate::engine::JobActor), so duplicate requests join, transient
//! failures are retried under the engine's backoff (each rerun resumes from the export's
//! journal) and a panic is caught and retried.
//!
//! What remains of an export is decided by the [`Exporter`](super::export::Exporter) from
//! what the target holds: a finished manifest ends the job at once, a journal resumes the
//! upload, nothing starts one. The queue message that asked stays in flight until the job
//! ends, so the queue is the durable record. Reconciliation looks only for this
//! deployment's own EBS backups of `export.retention_types` ([`OwnedBackups`]) whose
//! export is not at `export.to` yet: the image's manifest, and with `export.ebs_format` =
//! `files` or `both` the file-level export's index (`<snapshot>.files.json`), written once
//! every filesystem's archive is.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bunker_protocol::archive::files_index_key;
use bunker_protocol::report::Entry;
use bunker_protocol::tags::{self, Tags};
use bunker_protocol::vault::{EbsFormat, PointRef};
use bunker_protocol::ResourceKind;
use tracing::{info, warn};

use super::exporter_actor::{run_export, PreparedExport};
use super::{Progress, StreamError, Tuning};
use crate::engine::{JobKey, Pass, Workflow};
use crate::metrics::Metrics;
use crate::ports::{ArchiveStore, BackupControl, ErrorKind, ListedBackup, PortError};

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

    /// What a snapshot with `tags` is exported as: its tag `bunker:config:export.ebs_format`,
    /// else `export.ebs_format`; a tag naming no format is an input error.
    fn ebs_format_of(&self, tags: &Tags) -> Result<EbsFormat, StreamError>;

    /// What `what`'s snapshot is exported as ([`Self::ebs_format_of`] its tags).
    async fn ebs_format(&self, what: &ExportSnapshot) -> Result<EbsFormat, StreamError>;

    /// Archives every filesystem of `what`'s snapshot that bunker reads in place to `to`
    /// (each manifest naming `point`, when it is a recovery point), then writes their index
    /// (`<snapshot>.files.json`). A disk with none is an input error.
    async fn export_files(&self, what: &ExportSnapshot, to: &str, point: Option<PointRef>) -> Result<(), StreamError>;
}

/// Exports `what` to `to` in `format`: the image, then the filesystems' files; each part
/// already at the target (a manifest, an index) is not done again.
pub(crate) async fn export_in_format(
    targets: &dyn ExportTargets,
    what: &ExportSnapshot,
    to: &str,
    format: EbsFormat,
    point: Option<PointRef>,
    image: impl std::future::Future<Output = Result<(), StreamError>>,
) -> Result<(), StreamError> {
    if format.image() {
        image.await?;
    }
    if format.files() {
        let store = targets.store(to, &what.region)?;
        let key = files_index_key(&what.snapshot_id);
        let indexed =
            store.size(&key).await.map_err(|e| StreamError::port(format!("checking {}", store.url(&key)), e))?;
        if indexed.is_none() {
            targets.export_files(what, to, point).await?;
        }
    }
    Ok(())
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
    owned: Option<OwnedBackups>,
    outcomes: crate::outcomes::Outcomes,
    /// This account (in the bus events).
    account: String,
    /// The last transient error of each job still retrying (the reason when it gives up).
    last_error: std::sync::Mutex<HashMap<String, String>>,
}

/// What one export wrote.
struct Exported {
    /// The target.
    to: String,
    /// The image archive, when the format has one.
    archives: Vec<String>,
    /// The image's manifest, else the files' index.
    manifest: Option<String>,
}

/// This deployment's own EBS backups that reconciliation exports (`export.retention_types`).
pub struct OwnedBackups {
    /// EBS's backups, one per served region.
    pub controls: Vec<Arc<dyn BackupControl>>,
    /// This deployment's id, by region.
    pub deployments: HashMap<String, String>,
    /// `export.retention_types`: the retention types whose backups are exported.
    pub types: Vec<String>,
}

impl OwnedBackups {
    /// Whether `b`, listed in `region`, is one of ours to export: managed by this deployment,
    /// an original (not a DR copy or a re-encrypted copy), available, of a listed type.
    pub fn wants(&self, region: &str, b: &ListedBackup) -> bool {
        let t = |k: &str| b.tags.get(k).map(String::as_str);
        let deployment = self.deployments.get(region).map(String::as_str);
        b.available
            && t(tags::MANAGED) == Some("true")
            && deployment.is_some_and(|d| !d.is_empty() && t(tags::DEPLOYMENT) == Some(d))
            && t(tags::COPY_OF).is_none()
            && t(tags::REENCRYPTED_OF).is_none()
            && t(tags::RETENTION).is_some_and(|r| self.types.iter().any(|w| w == r))
    }
}

impl Exports {
    /// Exports prepared by `targets`; `default_to` is `export.to`.
    pub fn new(
        targets: Arc<dyn ExportTargets>,
        default_to: Option<String>,
        tuning: Tuning,
        metrics: Arc<Metrics>,
    ) -> Exports {
        Exports {
            targets,
            default_to,
            tuning,
            metrics,
            one_at_a_time: tokio::sync::Semaphore::new(1),
            owned: None,
            outcomes: Default::default(),
            account: String::new(),
            last_error: Default::default(),
        }
    }

    /// Puts `bunker Export Completed` / `Failed` on the bus (`events.bus`) as each job ends.
    pub fn with_outcomes(mut self, outcomes: crate::outcomes::Outcomes, account: String) -> Exports {
        self.outcomes = outcomes;
        self.account = account;
        self
    }

    async fn emit(&self, job: &ExportSnapshot, to: Option<&str>, done: Result<&Exported, String>) {
        let (target, archives, manifest, error) = match done {
            Ok(e) => (e.to.clone(), e.archives.clone(), e.manifest.clone(), None),
            Err(why) => (to.or(self.default_to.as_deref()).unwrap_or_default().to_string(), vec![], None, Some(why)),
        };
        let outcome = bunker_protocol::bus::ExportOutcome {
            schema: bunker_protocol::bus::EXPORT_SCHEMA,
            account: self.account.clone(),
            source: job.snapshot_id.clone(),
            target,
            archives,
            manifest,
            error,
            time: jiff::Timestamp::now(),
        };
        self.outcomes.emit(vec![outcome.event()]).await;
    }

    /// Also exports `owned` backups, found by reconciliation.
    pub fn with_owned(mut self, owned: OwnedBackups) -> Exports {
        self.owned = Some(owned);
        self
    }

    async fn export(&self, job: &ExportSnapshot) -> Result<Exported, StreamError> {
        let to = job
            .to
            .clone()
            .or_else(|| self.default_to.clone())
            .ok_or(StreamError::Input("no target: give \"to\" or set export.to".into()))?;
        let _turn = self.one_at_a_time.acquire().await.map_err(|e| StreamError::Internal(e.to_string()))?;
        // An incremental export is of the image alone.
        let format = match job.base {
            Some(_) => EbsFormat::Image,
            None => self.targets.ebs_format(job).await?,
        };
        let mut summary = None;
        let image = async {
            let progress = Arc::new(Progress::default());
            let p = self.targets.prepare(job, &to, progress.clone()).await?;
            summary = Some(run_export(p, self.tuning, progress, Some(self.metrics.clone())).await?);
            Ok(())
        };
        export_in_format(self.targets.as_ref(), job, &to, format, None, image).await?;
        let index = match format.files() {
            true => Some(self.targets.store(&to, &job.region)?.url(&files_index_key(&job.snapshot_id))),
            false => None,
        };
        let (archives, manifest) = match summary {
            Some(s) => (vec![s.archive], Some(s.manifest)),
            None => (vec![], index),
        };
        Ok(Exported { to, archives, manifest })
    }
}

#[async_trait]
impl Workflow for Exports {
    type Key = ExportSnapshot;
    const NAME: &'static str = "exporter";

    async fn pass(&self, job: &ExportSnapshot) -> (Pass, Vec<Entry>) {
        let pass = match self.export(job).await {
            Ok(exported) => {
                info!(snapshot_id = %job.snapshot_id, to = %exported.to, "exported");
                self.last_error.lock().expect("last error lock").remove(&job.snapshot_id);
                self.emit(job, None, Ok(&exported)).await;
                Pass::Done
            }
            Err(e) if e.is_permanent() => {
                warn!(snapshot_id = %job.snapshot_id, error = %e, "export failed");
                self.last_error.lock().expect("last error lock").remove(&job.snapshot_id);
                self.emit(job, job.to.as_deref(), Err(e.to_string())).await;
                Pass::Failed(e.to_string())
            }
            Err(e) => {
                self.last_error.lock().expect("last error lock").insert(job.snapshot_id.clone(), e.to_string());
                Pass::Retry(e.into())
            }
        };
        (pass, vec![])
    }

    /// This deployment's EBS backups of `export.retention_types` not exported to `export.to`
    /// yet in their format (the image as `<snapshot>.img.zst`, like an event's export; the
    /// files' index as `<snapshot>.files.json`).
    async fn owned(&self, kind: Option<ResourceKind>) -> Result<Vec<ExportSnapshot>, PortError> {
        let (Some(owned), Some(to)) = (&self.owned, &self.default_to) else { return Ok(vec![]) };
        if kind.is_some_and(|k| k != ResourceKind::Ebs) {
            return Ok(vec![]);
        }
        let mut out = Vec::new();
        for ctl in &owned.controls {
            let region = ctl.region();
            let store =
                self.targets.store(to, region).map_err(|e| PortError::new(ErrorKind::Invalid, None, e.to_string()))?;
            for b in ctl.list_backups(false).await?.into_iter().filter(|b| owned.wants(region, b)) {
                // A bad tag still makes a job: its pass fails naming the tag.
                let format = self.targets.ebs_format_of(&b.tags).unwrap_or(EbsFormat::Both);
                let image_done = !format.image() || store.size(&super::export::manifest_key(&b.id)).await?.is_some();
                let files_done = !format.files() || store.size(&files_index_key(&b.id)).await?.is_some();
                if !(image_done && files_done) {
                    out.push(ExportSnapshot { snapshot_id: b.id, region: region.to_string(), to: None, base: None });
                }
            }
        }
        Ok(out)
    }

    fn enabled(&self) -> bool {
        self.default_to.is_some() && self.owned.as_ref().is_some_and(|o| !o.types.is_empty())
    }

    /// A job that gave up after its retries is a failed export on the bus, with its last error.
    async fn abandon(&self, job: &ExportSnapshot) {
        let last = self.last_error.lock().expect("last error lock").remove(&job.snapshot_id);
        let why = format!("gave up after its retries: {}", last.unwrap_or_else(|| "no error recorded".into()));
        self.emit(job, job.to.as_deref(), Err(why)).await;
    }

    fn gave_up_entry(&self, _job: &ExportSnapshot, _reason: &str) -> Option<Entry> {
        None
    }
}
