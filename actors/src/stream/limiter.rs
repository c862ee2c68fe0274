//! Adaptive concurrency for the EBS direct APIs: additive increase, multiplicative decrease.
//!
//! GetSnapshotBlock allows about 1,000 requests per second per snapshot (PutSnapshotBlock
//! less) and answers beyond that with a throttling error. A fixed fan-out either wastes the
//! budget or keeps hitting it; this limiter halves the number of requests in flight on each
//! throttle and grows it back by one per window of successes, so it settles just under
//! whatever rate the account and the snapshot allow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::ports::{ErrorKind, PortError};

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

    /// A request was throttled: halve the limit (at least 1) and return how long the caller
    /// should wait before retrying (exponential in consecutive throttles, with jitter).
    pub fn throttled(&self, attempt: u32) -> Duration {
        let mut s = self.state.lock().expect("limiter lock");
        s.throttles += 1;
        s.successes = 0;
        let new = (s.limit / 2).max(1);
        s.debt += s.limit - new;
        s.limit = new;
        let jitter = s.throttles.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58; // 0..63 ms
        Duration::from_millis((50u64 << attempt.min(6)) + jitter)
    }

    /// Runs `op` in a slot: a throttled answer lowers the limit and waits (up to 30 times,
    /// counted in `throttled`), a transient one waits and retries (up to 5 times); success
    /// raises the limit. Other errors, and the last retry's, are returned.
    pub async fn call<T, F, Fut>(&self, throttled: Option<&AtomicU64>, mut op: F) -> Result<T, PortError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        let mut attempt = 0u32;
        loop {
            let slot = self.slot().await;
            let result = op().await;
            drop(slot);
            match result {
                Ok(v) => {
                    self.success();
                    return Ok(v);
                }
                Err(e) if e.kind == ErrorKind::Throttled && attempt < 30 => {
                    if let Some(t) = throttled {
                        t.fetch_add(1, Ordering::Relaxed);
                    }
                    let wait = self.throttled(attempt);
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(e) if matches!(e.kind, ErrorKind::Transient | ErrorKind::Internal) && attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
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
        l.throttled(0);
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
