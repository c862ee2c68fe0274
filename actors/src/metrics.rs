//! Counters and gauges of the running service, kept and rendered by `prometheus-client`
//! (OpenMetrics text on `/metrics`). Every metric is a [`Metric`] variant: its name, type and
//! help text live here and nowhere else, so a call site cannot misspell one.

use std::collections::HashMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every metric the service exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Jobs by workflow, kind and final state.
    JobsTotal,
    /// Copies started and not yet available.
    CopiesInFlight,
    /// Work deferred by back-pressure.
    DeferralsTotal,
    /// AWS errors by code.
    AwsErrorsTotal,
    /// Actors restarted and tasks that panicked.
    ActorRestartsTotal,
    /// Queue messages by outcome.
    MessagesTotal,
    /// Schedule slots by action, kind and outcome.
    ScheduleSlotsTotal,
    /// Runs by action, kind and status.
    RunsTotal,
    /// A running export's progress.
    ExportBytes,
    /// Bytes of finished exports.
    ExportBytesTotal,
    /// Exports by status.
    ExportsTotal,
    /// Damaged lease files rebuilt.
    LeaseFileRebuiltTotal,
    /// When a run of an action and kind last ended OK.
    LastSuccess,
    /// Puts of bunker's own events that failed.
    EventsFailedTotal,
}

/// Whether a metric only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (exposed with a `_total` suffix).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Metric {
    /// Every metric, in the order `/metrics` lists them.
    pub const ALL: [Metric; 14] = [
        Metric::JobsTotal,
        Metric::CopiesInFlight,
        Metric::DeferralsTotal,
        Metric::AwsErrorsTotal,
        Metric::ActorRestartsTotal,
        Metric::MessagesTotal,
        Metric::ScheduleSlotsTotal,
        Metric::RunsTotal,
        Metric::ExportBytes,
        Metric::ExportBytesTotal,
        Metric::ExportsTotal,
        Metric::LeaseFileRebuiltTotal,
        Metric::LastSuccess,
        Metric::EventsFailedTotal,
    ];

    /// Name, type and help text.
    pub fn spec(self) -> (&'static str, Kind, &'static str) {
        use Kind::{Counter as C, Gauge as G};
        match self {
            Metric::JobsTotal => (
                "bunker_jobs_total",
                C,
                "jobs by workflow (replicator, puller, exporter), kind and final state (done, not_ours, failed)",
            ),
            Metric::CopiesInFlight => {
                ("bunker_copies_in_flight", G, "copies started and not yet available, by kind and destination region")
            }
            Metric::DeferralsTotal => {
                ("bunker_deferrals_total", C, "work deferred by back-pressure (quota, concurrency cap, lease held)")
            }
            Metric::AwsErrorsTotal => {
                ("bunker_aws_errors_total", C, "AWS errors by code (throttling included, before retry)")
            }
            Metric::ActorRestartsTotal => {
                ("bunker_actor_restarts_total", C, "actors restarted and tasks that panicked, by actor")
            }
            Metric::MessagesTotal => {
                ("bunker_messages_total", C, "queue messages by outcome (handled, dead_lettered, left)")
            }
            Metric::ScheduleSlotsTotal => (
                "bunker_schedule_slots_total",
                C,
                "schedule slots by action, kind and outcome (fired, taken_elsewhere, skipped: lease store unavailable)",
            ),
            Metric::RunsTotal => ("bunker_runs_total", C, "runs by action, kind and status (OK, PARTIAL, FAILED)"),
            Metric::ExportBytes => (
                "bunker_export_bytes",
                G,
                "a running export's progress: image bytes total and read (in), archive bytes uploaded (out)",
            ),
            Metric::ExportBytesTotal => (
                "bunker_export_bytes_total",
                C,
                "bytes of finished exports: image bytes read (in), archive bytes uploaded (out)",
            ),
            Metric::ExportsTotal => ("bunker_exports_total", C, "exports by status (ok, failed)"),
            Metric::LeaseFileRebuiltTotal => (
                "bunker_lease_file_rebuilt_total",
                C,
                "damaged lease files moved aside (kept as <file>.corrupt-<time>) and rebuilt",
            ),
            Metric::LastSuccess => (
                "bunker_last_success_timestamp_seconds",
                G,
                "when a run of an action (create, clean) and kind last ended OK, seconds since the epoch",
            ),
            Metric::EventsFailedTotal => (
                "bunker_events_failed_total",
                C,
                "puts of bunker's own events on events.bus that EventBridge refused or that failed",
            ),
        }
    }

    /// The exposed name.
    pub fn name(self) -> &'static str {
        self.spec().0
    }
}

/// Label pairs in the order given (so `/metrics` shows them as the call site wrote them).
type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    counters: HashMap<Metric, Family<Labels, Counter>>,
    gauges: HashMap<Metric, Family<Labels, Gauge>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let (mut counters, mut gauges) = (HashMap::new(), HashMap::new());
        for m in Metric::ALL {
            let (name, kind, help) = m.spec();
            match kind {
                Kind::Counter => {
                    let family = Family::<Labels, Counter>::default();
                    // The encoder adds `_total` to counters.
                    registry.register(name.trim_end_matches("_total"), help, family.clone());
                    counters.insert(m, family);
                }
                Kind::Gauge => {
                    let family = Family::<Labels, Gauge>::default();
                    registry.register(name, help, family.clone());
                    gauges.insert(m, family);
                }
            }
        }
        Metrics { registry, counters, gauges }
    }
}

impl Metrics {
    /// Adds 1 to a counter (or a gauge).
    pub fn inc(&self, m: Metric, pairs: &[(&str, &str)]) {
        self.add(m, pairs, 1.0);
    }

    /// Adds `v` (a whole number) to a counter or gauge.
    pub fn add(&self, m: Metric, pairs: &[(&str, &str)], v: f64) {
        let l = labels(pairs);
        match (self.counters.get(&m), self.gauges.get(&m)) {
            (Some(c), _) => {
                c.get_or_create(&l).inc_by(v.max(0.0) as u64);
            }
            (_, Some(g)) => {
                g.get_or_create(&l).inc_by(v as i64);
            }
            _ => unreachable!("every metric is registered"),
        }
    }

    /// Removes a series (a finished export's progress gauges), so labels do not pile up.
    pub fn remove(&self, m: Metric, pairs: &[(&str, &str)]) {
        let l = labels(pairs);
        if let Some(c) = self.counters.get(&m) {
            c.remove(&l);
        }
        if let Some(g) = self.gauges.get(&m) {
            g.remove(&l);
        }
    }

    /// Sets a gauge.
    pub fn set(&self, m: Metric, pairs: &[(&str, &str)], v: f64) {
        let g = self.gauges.get(&m).unwrap_or_else(|| panic!("{} is not a gauge", m.name()));
        g.get_or_create(&labels(pairs)).set(v as i64);
    }

    /// The value of one series (0 when never touched).
    pub fn get(&self, m: Metric, pairs: &[(&str, &str)]) -> f64 {
        let l = labels(pairs);
        if let Some(c) = self.counters.get(&m) {
            return c.get(&l).map(|c| c.get() as f64).unwrap_or(0.0);
        }
        self.gauges.get(&m).and_then(|g| g.get(&l).map(|g| g.get() as f64)).unwrap_or(0.0)
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// The `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_text_with_todays_names() {
        let m = Metrics::default();
        m.inc(Metric::JobsTotal, &[("kind", "ebs"), ("state", "done")]);
        m.inc(Metric::JobsTotal, &[("kind", "ebs"), ("state", "done")]);
        m.set(Metric::CopiesInFlight, &[("kind", "rds"), ("region", "us-west-2")], 3.0);
        m.set(Metric::ExportBytes, &[("archive", "a"), ("bytes", "in")], 5.0);
        m.remove(Metric::ExportBytes, &[("archive", "a"), ("bytes", "in")]);
        let text = m.render();
        assert!(text.contains("bunker_jobs_total{kind=\"ebs\",state=\"done\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE bunker_copies_in_flight gauge\n"), "{text}");
        assert!(text.contains("bunker_copies_in_flight{kind=\"rds\",region=\"us-west-2\"} 3\n"), "{text}");
        assert!(!text.contains("archive=\"a\""), "removed series are gone: {text}");
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(m.get(Metric::JobsTotal, &[("kind", "ebs"), ("state", "done")]), 2.0);
        assert_eq!(m.get(Metric::DeferralsTotal, &[("reason", "quota")]), 0.0);
        let names: std::collections::BTreeSet<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), Metric::ALL.len(), "one name per metric");
    }
}
