//! What `/healthz` answers: each component of the service registers a check, and the service
//! is healthy only when every check passes. A check is a closure over the component's own
//! state (an actor's mailbox is open; the watcher completed a poll recently), so the answer
//! is computed when asked, never a flag someone forgot to clear.

use std::collections::BTreeMap;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

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
