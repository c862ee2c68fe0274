//! The actix shell of the [`Exporter`]: one actor runs exports, each as a future off its
//! mailbox (the pipeline's threads and tasks do the work), and keeps `/metrics` informed.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, ResponseFuture};
use tracing::warn;

use super::export::{ExportRequest, ExportSummary, Exporter, OpenReader};
use super::{Progress, StreamError, Tuning};
use crate::metrics::Metrics;
use crate::ports::ArchiveStore;

/// An export made ready to run: where to, what, and the reader.
pub struct PreparedExport {
    /// The target store.
    pub store: Arc<dyn ArchiveStore>,
    /// What to export.
    pub request: ExportRequest,
    /// The source reader.
    pub open: OpenReader,
}

/// Turns "export snapshot X to Y" into a [`PreparedExport`] (looks the snapshot up, loads
/// the base's manifest): the service's exports, wired by `src/`.
#[async_trait::async_trait]
pub trait ExportTargets: Send + Sync {
    /// Prepares the export `what` asks for (its snapshot, region and base) to `to` (its own
    /// target or the default); `progress` is the export's live counters.
    async fn prepare(
        &self,
        what: &ExportSnapshot,
        to: &str,
        progress: Arc<Progress>,
    ) -> Result<PreparedExport, StreamError>;
}

/// Run one export to the end.
#[derive(Message)]
#[rtype(result = "Result<ExportSummary, StreamError>")]
pub struct Export {
    /// Where the archive goes.
    pub store: Arc<dyn ArchiveStore>,
    /// What to export.
    pub request: ExportRequest,
    /// The source reader.
    pub open: OpenReader,
    /// Live counters (shared with a progress bar, if any).
    pub progress: Arc<Progress>,
}

/// Export an EBS snapshot (the service's exports: queue commands and `export.to`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<ExportSummary, StreamError>")]
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

impl crate::engine::Relayed for ExportSnapshot {
    fn unavailable() -> Self::Result {
        Err(StreamError::Internal("the exporter is restarting".into()))
    }
}

/// Runs exports; with metrics, publishes each export's progress every second.
pub struct ExporterActor {
    tuning: Tuning,
    metrics: Option<Arc<Metrics>>,
    targets: Option<(Arc<dyn ExportTargets>, Option<String>)>,
    /// One service export at a time: each holds up to `tuning`'s buffers, and the EBS
    /// direct APIs' request budget is per account.
    one_at_a_time: Arc<tokio::sync::Semaphore>,
}

impl ExporterActor {
    /// An exporter with these buffer sizes.
    pub fn new(tuning: Tuning, metrics: Option<Arc<Metrics>>) -> ExporterActor {
        ExporterActor { tuning, metrics, targets: None, one_at_a_time: Arc::new(tokio::sync::Semaphore::new(1)) }
    }

    /// Accepts [`ExportSnapshot`]: `targets` prepares them, `default_to` is `export.to`.
    pub fn with_targets(mut self, targets: Arc<dyn ExportTargets>, default_to: Option<String>) -> Self {
        self.targets = Some((targets, default_to));
        self
    }
}

impl Actor for ExporterActor {
    type Context = Context<Self>;
}

impl Handler<Export> for ExporterActor {
    type Result = ResponseFuture<Result<ExportSummary, StreamError>>;

    fn handle(&mut self, msg: Export, _ctx: &mut Self::Context) -> Self::Result {
        let exporter = Exporter::new(msg.store, self.tuning, msg.progress.clone());
        let metrics = self.metrics.clone();
        let name = msg.request.name.clone();
        Box::pin(async move {
            // Held while publishing, and set once the export ended: no gauge outlives it.
            let ended = Arc::new(std::sync::Mutex::new(false));
            let ticker = metrics.clone().map(|m| {
                let (p, name, ended) = (msg.progress.clone(), name.clone(), ended.clone());
                tokio::spawn(async move {
                    loop {
                        {
                            let ended = ended.lock().expect("export ended flag");
                            if *ended {
                                return;
                            }
                            publish(&m, &name, &p);
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                })
            });
            // On the multi-thread runtime, not the arbiter; a panic comes back as a JoinError.
            let (request, open) = (msg.request, msg.open);
            let result = match tokio::spawn(async move { exporter.export(request, open).await }).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(archive = %name, error = %e, "export task failed");
                    if let Some(m) = &metrics {
                        m.inc(crate::metrics::Metric::ActorRestartsTotal, &[("actor", "exporter")]);
                    }
                    Err(StreamError::Internal(format!("export task failed: {e}")))
                }
            };
            if let Some(t) = ticker {
                t.abort();
            }
            if let Some(m) = &metrics {
                *ended.lock().expect("export ended flag") = true;
                for what in ["total", "in", "out"] {
                    m.remove(crate::metrics::Metric::ExportBytes, &[("archive", &name), ("bytes", what)]);
                }
                let p = &msg.progress;
                m.add(
                    crate::metrics::Metric::ExportBytesTotal,
                    &[("direction", "in")],
                    Progress::get(&p.bytes_in) as f64,
                );
                m.add(
                    crate::metrics::Metric::ExportBytesTotal,
                    &[("direction", "out")],
                    Progress::get(&p.bytes_out) as f64,
                );
                let status = if result.is_ok() { "ok" } else { "failed" };
                m.inc(crate::metrics::Metric::ExportsTotal, &[("status", status)]);
            }
            result
        })
    }
}

impl Handler<ExportSnapshot> for ExporterActor {
    type Result = ResponseFuture<Result<ExportSummary, StreamError>>;

    fn handle(&mut self, msg: ExportSnapshot, ctx: &mut Self::Context) -> Self::Result {
        let Some((targets, default_to)) = self.targets.clone() else {
            return Box::pin(async { Err(StreamError::Input("exports are not configured".into())) });
        };
        let me = ctx.address();
        let gate = self.one_at_a_time.clone();
        Box::pin(async move {
            let to = msg
                .to
                .clone()
                .or(default_to)
                .ok_or(StreamError::Input("no target: give \"to\" or set export.to".into()))?;
            let _turn = gate.acquire_owned().await.map_err(|e| StreamError::Internal(e.to_string()))?;
            let progress = Arc::new(Progress::default());
            let p = targets.prepare(&msg, &to, progress.clone()).await?;
            let job = Export { store: p.store, request: p.request, open: p.open, progress };
            match me.send(job).await {
                Ok(Ok(summary)) => {
                    tracing::info!(snapshot_id = %msg.snapshot_id, archive = %summary.archive, "exported");
                    Ok(summary)
                }
                Ok(Err(e)) => {
                    warn!(snapshot_id = %msg.snapshot_id, error = %e, "export failed");
                    Err(e)
                }
                Err(e) => Err(StreamError::Internal(format!("exporter stopped: {e}"))),
            }
        })
    }
}

fn publish(m: &Metrics, name: &str, p: &Progress) {
    for (what, v) in [("total", &p.total), ("in", &p.bytes_in), ("out", &p.bytes_out)] {
        m.set(crate::metrics::Metric::ExportBytes, &[("archive", name), ("bytes", what)], Progress::get(v) as f64);
    }
}
