//! Counters of work in flight that cannot stay high: the count goes up when an
//! [`InFlight`] guard is made and down when it is dropped, so a panic (which unwinds and
//! drops the guard) or an early return can never leave it raised, and shutdown never waits
//! for work that no longer exists.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One unit of work counted in `counter` while this guard lives.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts one more in `counter` until dropped.
    pub fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_leaves_no_count_behind() {
        let n = Arc::new(AtomicUsize::new(0));
        let guard = InFlight::enter(&n);
        let task = tokio::spawn(async move {
            let _g = guard;
            panic!("injected");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(n.load(Ordering::SeqCst), 0);
        {
            let _a = InFlight::enter(&n);
            let _b = InFlight::enter(&n);
            assert_eq!(n.load(Ordering::SeqCst), 2);
        }
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }
}
