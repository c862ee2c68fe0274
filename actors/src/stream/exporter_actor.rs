//! The actix shell of the [`Exporter`] for the CLI's exports, and [`run_export`], which runs
//! one export (the CLI's and the service's) and keeps `/metrics` informed.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use tracing::warn;

use super::export::{ExportRequest, ExportSummary, Exporter, OpenReader};
use super::{Progress, StreamError, Tuning};
use crate::metrics::{Metric, Metrics};
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

/// Runs exports sent to it as [`Export`] (the CLI's); with metrics, publishes each export's
/// progress every second. The service's exports are the [`Exports`](super::export_job::Exports)
/// workflow.
pub struct ExporterActor {
    tuning: Tuning,
    metrics: Option<Arc<Metrics>>,
}

impl ExporterActor {
    /// An exporter with these buffer sizes.
    pub fn new(tuning: Tuning, metrics: Option<Arc<Metrics>>) -> ExporterActor {
        ExporterActor { tuning, metrics }
    }
}

impl Actor for ExporterActor {
    type Context = Context<Self>;
}

impl Handler<Export> for ExporterActor {
    type Result = ResponseFuture<Result<ExportSummary, StreamError>>;

    fn handle(&mut self, msg: Export, _ctx: &mut Self::Context) -> Self::Result {
        let p = PreparedExport { store: msg.store, request: msg.request, open: msg.open };
        Box::pin(run_export(p, self.tuning, msg.progress, self.metrics.clone()))
    }
}

/// Runs one export to the end on the multi-thread runtime (never on an arbiter; a panic
/// comes back as an error); with `metrics`, publishes its progress every second while it
/// runs and counts it when it ends.
pub async fn run_export(
    p: PreparedExport,
    tuning: Tuning,
    progress: Arc<Progress>,
    metrics: Option<Arc<Metrics>>,
) -> Result<ExportSummary, StreamError> {
    let exporter = Exporter::new(p.store, tuning, progress.clone());
    let name = p.request.name.clone();
    // Held while publishing, and set once the export ended: no gauge outlives it.
    let ended = Arc::new(std::sync::Mutex::new(false));
    let ticker = metrics.clone().map(|m| {
        let (p, name, ended) = (progress.clone(), name.clone(), ended.clone());
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
    let (request, open) = (p.request, p.open);
    let result = match tokio::spawn(async move { exporter.export(request, open).await }).await {
        Ok(r) => r,
        Err(e) => {
            warn!(archive = %name, error = %e, "export task failed");
            if let Some(m) = &metrics {
                m.inc(Metric::ActorRestartsTotal, &[("actor", "exporter")]);
            }
            Err(StreamError::Internal(format!("export task failed: {e}")))
        }
    };
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(m) = &metrics {
        *ended.lock().expect("export ended flag") = true;
        ended_export(m, &name, &progress, result.is_ok());
    }
    result
}

/// Removes a finished export's gauges and counts its bytes and status.
fn ended_export(m: &Metrics, name: &str, p: &Progress, ok: bool) {
    for what in ["total", "in", "out"] {
        m.remove(Metric::ExportBytes, &[("archive", name), ("bytes", what)]);
    }
    m.add(Metric::ExportBytesTotal, &[("direction", "in")], Progress::get(&p.bytes_in) as f64);
    m.add(Metric::ExportBytesTotal, &[("direction", "out")], Progress::get(&p.bytes_out) as f64);
    m.inc(Metric::ExportsTotal, &[("status", if ok { "ok" } else { "failed" })]);
}

fn publish(m: &Metrics, name: &str, p: &Progress) {
    for (what, v) in [("total", &p.total), ("in", &p.bytes_in), ("out", &p.bytes_out)] {
        m.set(Metric::ExportBytes, &[("archive", name), ("bytes", what)], Progress::get(v) as f64);
    }
}
