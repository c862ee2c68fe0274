//! Adaptive concurrency for the EBS direct APIs: additive increase, multiplicative decrease.
//!
//! GetSnapshotBlock allows about 1,000 requests per second per snapshot (PutSnapshotBlock
//! less) and answers beyond that with a throttling error. A fixed fan-out either wastes the
//! budget or keeps hitting it; this limiter halves the number of requests in flight on each
//! throttle and grows it back by one per window of successes, so it settles just under
//! whatever rate the account and the snapshot allow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::ports::{ErrorKind, PortError};
use crate::retry::RetryPolicy;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The limiter.
#[derive(Debug)]
pub struct Limiter {
    semaphore: Semaphore,
    state: Mutex<State>,
    max: usize,
}

#[derive(Debug)]
struct State {
    limit: usize,
    /// Permits to retire as they come back (the limit was lowered below what is out).
    debt: usize,
    successes: usize,
    throttles: u64,
}

/// One request's slot; returned (or retired) on drop.
pub struct Slot<'a> {
    permit: Option<SemaphorePermit<'a>>,
    limiter: &'a Limiter,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut s = self.limiter.state.lock().expect("limiter lock");
        if let Some(p) = self.permit.take() {
            if s.debt > 0 {
                s.debt -= 1;
                p.forget();
            }
        }
    }
}

impl Limiter {
    /// Starts at `max` concurrent requests.
    pub fn new(max: usize) -> Limiter {
        let max = max.max(1);
        Limiter {
            semaphore: Semaphore::new(max),
            state: Mutex::new(State { limit: max, debt: 0, successes: 0, throttles: 0 }),
            max,
        }
    }

    /// Waits for a slot.
    pub async fn slot(&self) -> Slot<'_> {
        let permit = self.semaphore.acquire().await.expect("limiter semaphore is never closed");
        Slot { permit: Some(permit), limiter: self }
    }

    /// A request succeeded: after `limit` successes in a row, allow one more.
    pub fn success(&self) {
        let mut s = self.state.lock().expect("limiter lock");
        s.successes += 1;
        if s.successes >= s.limit && s.limit < self.max {
            s.successes = 0;
            s.limit += 1;
            if s.debt > 0 {
                s.debt -= 1;
            } else {
                self.semaphore.add_permits(1);
            }
        }
    }

    /// A request was throttled: halve the limit (at least 1).
    pub fn throttled(&self) {
        let mut s = self.state.lock().expect("limiter lock");
        s.throttles += 1;
        s.successes = 0;
        let new = (s.limit / 2).max(1);
        s.debt += s.limit - new;
        s.limit = new;
    }

    /// Runs `op` in a slot under [`RetryPolicy::AWS`]: a throttled answer also lowers the
    /// limit and is counted in `throttled`; success raises the limit. Errors that are not
    /// retryable, and the last retry's, are returned.
    pub async fn call<T, F, Fut>(&self, throttled: Option<&AtomicU64>, mut op: F) -> Result<T, PortError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        let on_failure = |e: &PortError| {
            if e.kind == ErrorKind::Throttled {
                self.throttled();
                if let Some(t) = throttled {
                    t.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let attempt = || {
            let slot = self.slot();
            let call = op();
            async move {
                let _slot = slot.await;
                call.await
            }
        };
        let result = RetryPolicy::AWS.call("ebs request", on_failure, attempt).await;
        if result.is_ok() {
            self.success();
        }
        result
    }

    /// Current limit.
    pub fn limit(&self) -> usize {
        self.state.lock().expect("limiter lock").limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn halves_on_throttle_and_grows_back() {
        let l = Limiter::new(8);
        let held: Vec<_> = futures::future::join_all((0..8).map(|_| l.slot())).await;
        l.throttled();
        assert_eq!(l.limit(), 4);
        drop(held);
        // Only 4 slots remain available.
        assert_eq!(l.semaphore.available_permits(), 4);
        for _ in 0..4 {
            l.success();
        }
        assert_eq!(l.limit(), 5);
        assert_eq!(l.semaphore.available_permits(), 5);
        for _ in 0..100 {
            l.success();
        }
        assert_eq!(l.limit(), 8, "never above the maximum");
    }
}
