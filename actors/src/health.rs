//! What `/healthz` answers: each component of the service registers a check, and the service
//! is healthy only when every check passes. A check is a closure over the component's own
//! state (an actor's mailbox is open; the watcher completed a poll recently), so the answer
//! is computed when asked, never a flag someone forgot to clear.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use serde::Serialize;

type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The checks of one running service.
#[derive(Default)]
pub struct Health {
    checks: Mutex<BTreeMap<&'static str, Check>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

/// The answer: `status` is `ok` or `failing`; `failing` names each failing component and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// `ok` or `failing`.
    pub status: &'static str,
    /// Every component checked, `ok` or why not.
    pub components: BTreeMap<&'static str, String>,
    /// The failing ones (a subset of `components`).
    pub failing: Vec<&'static str>,
}

impl HealthReport {
    /// Whether every component passed.
    pub fn ok(&self) -> bool {
        self.failing.is_empty()
    }
}

impl Health {
    /// Registers `component`, healthy while `check` returns `Ok`.
    pub fn watch(&self, component: &'static str, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        self.checks.lock().expect("health lock").insert(component, Box::new(check));
    }

    /// Runs every check.
    pub fn report(&self) -> HealthReport {
        let checks = self.checks.lock().expect("health lock");
        let mut components = BTreeMap::new();
        let mut failing = Vec::new();
        for (name, check) in checks.iter() {
            match check() {
                Ok(()) => {
                    components.insert(*name, "ok".to_string());
                }
                Err(why) => {
                    components.insert(*name, why);
                    failing.push(*name);
                }
            }
        }
        HealthReport { status: if failing.is_empty() { "ok" } else { "failing" }, components, failing }
    }
}

/// Calls of one kind (AWS requests) that failed in a row: the check fails once `limit` came
/// in a row, naming the last error; any success clears the streak. Fed by whoever sees every
/// call (the SDK interceptor in `src/aws`).
#[derive(Debug)]
pub struct FailureStreak {
    limit: u32,
    in_a_row: AtomicU32,
    last: Mutex<Option<String>>,
}

impl FailureStreak {
    /// Failing after `limit` failures in a row (at least 1).
    pub fn new(limit: u32) -> FailureStreak {
        FailureStreak { limit: limit.max(1), in_a_row: AtomicU32::new(0), last: Mutex::new(None) }
    }

    /// Records one call's outcome.
    pub fn record(&self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.in_a_row.store(0, Ordering::SeqCst);
            }
            Err(why) => {
                *self.last.lock().expect("streak lock") = Some(why);
                self.in_a_row.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// `Err` naming the streak while `limit` or more calls in a row failed.
    pub fn check(&self) -> Result<(), String> {
        let n = self.in_a_row.load(Ordering::SeqCst);
        if n < self.limit {
            return Ok(());
        }
        let last = self.last.lock().expect("streak lock").clone().unwrap_or_default();
        Err(format!("the last {n} AWS calls failed (last: {last})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn a_streak_of_failed_calls_fails_until_one_succeeds() {
        let s = FailureStreak::new(3);
        s.record(Err("503".into()));
        s.record(Err("503".into()));
        assert!(s.check().is_ok(), "two are not yet a streak");
        s.record(Err("connection refused".into()));
        let why = s.check().unwrap_err();
        assert!(why.contains("last 3 AWS calls failed") && why.contains("connection refused"), "{why}");
        s.record(Ok(()));
        assert!(s.check().is_ok());
    }

    #[test]
    fn failing_components_are_named() {
        let h = Health::default();
        let up = Arc::new(AtomicBool::new(true));
        let u = up.clone();
        h.watch("watcher", move || if u.load(Ordering::SeqCst) { Ok(()) } else { Err("no poll".into()) });
        h.watch("replicator", || Ok(()));
        assert!(h.report().ok());
        up.store(false, Ordering::SeqCst);
        let r = h.report();
        assert_eq!((r.status, r.failing.as_slice()), ("failing", &["watcher"][..]));
        assert_eq!(r.components["watcher"], "no poll");
        assert_eq!(r.components["replicator"], "ok");
    }
}
