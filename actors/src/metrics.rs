//! Counters and gauges of the running service, rendered in the Prometheus text format for
//! `/metrics`. A plain mutex-guarded map: a few hundred series at most, updated a few times
//! per backup, so contention is nil and no metrics crate is needed.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Every metric the service exports, with its help text and type.
pub const METRICS: [(&str, &str, &str); 12] = [
    ("bunker_jobs_total", "counter", "copy/share jobs by kind and final state (done, not_ours, failed)"),
    ("bunker_copies_in_flight", "gauge", "copies started and not yet available, by kind and destination region"),
    ("bunker_deferrals_total", "counter", "work deferred by back-pressure (quota, concurrency cap, lease held)"),
    ("bunker_aws_errors_total", "counter", "AWS errors by code (throttling included, before retry)"),
    ("bunker_actor_restarts_total", "counter", "actors restarted and tasks that panicked, by actor"),
    ("bunker_messages_total", "counter", "queue messages by outcome (handled, dead_lettered, failed)"),
    (
        "bunker_schedule_slots_total",
        "counter",
        "schedule slots by action, kind and outcome (fired, taken_elsewhere, skipped: lease store unavailable)",
    ),
    ("bunker_runs_total", "counter", "runs by action, kind and status (OK, PARTIAL, FAILED)"),
    (
        "bunker_export_bytes",
        "gauge",
        "a running export's progress: image bytes total and read (in), archive bytes uploaded (out)",
    ),
    (
        "bunker_export_bytes_total",
        "counter",
        "bytes of finished exports: image bytes read (in), archive bytes uploaded (out)",
    ),
    ("bunker_exports_total", "counter", "exports by status (ok, failed)"),
    (
        "bunker_lease_file_rebuilt_total",
        "counter",
        "damaged lease files moved aside (kept as <file>.corrupt-<time>) and rebuilt",
    ),
];

/// The service's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(&'static str, String), f64>>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    if inner.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", inner.join(","))
    }
}

impl Metrics {
    /// Adds 1 to a counter.
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1.0);
    }

    /// Adds `v` to a counter or gauge.
    pub fn add(&self, name: &'static str, pairs: &[(&str, &str)], v: f64) {
        debug_assert!(METRICS.iter().any(|m| m.0 == name), "unknown metric {name}");
        *self.series.lock().expect("metrics lock").entry((name, labels(pairs))).or_default() += v;
    }

    /// Removes a series (a finished export's progress gauges), so labels do not pile up.
    pub fn remove(&self, name: &'static str, pairs: &[(&str, &str)]) {
        self.series.lock().expect("metrics lock").remove(&(name, labels(pairs)));
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, pairs: &[(&str, &str)], v: f64) {
        self.series.lock().expect("metrics lock").insert((name, labels(pairs)), v);
    }

    /// The value of one series (0 when never touched).
    pub fn get(&self, name: &'static str, pairs: &[(&str, &str)]) -> f64 {
        self.series.lock().expect("metrics lock").get(&(name, labels(pairs))).copied().unwrap_or(0.0)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let series = self.series.lock().expect("metrics lock");
        let mut out = String::new();
        for (name, kind, help) in METRICS {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for ((n, l), v) in series.iter().filter(|((n, _), _)| *n == name) {
                out.push_str(&format!("{n}{l} {v}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc("bunker_jobs_total", &[("kind", "ebs"), ("state", "done")]);
        m.inc("bunker_jobs_total", &[("kind", "ebs"), ("state", "done")]);
        m.set("bunker_copies_in_flight", &[("kind", "rds"), ("region", "us-west-2")], 3.0);
        let text = m.render();
        assert!(text.contains("bunker_jobs_total{kind=\"ebs\",state=\"done\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE bunker_copies_in_flight gauge\n"));
        assert!(text.contains("bunker_copies_in_flight{kind=\"rds\",region=\"us-west-2\"} 3\n"));
    }
}
