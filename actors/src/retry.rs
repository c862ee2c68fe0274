//! The one retry policy for calls through the ports: which failures are retried
//! ([`ErrorKind::is_retryable`](crate::ports::ErrorKind::is_retryable)), how often and how
//! far apart ([`RetryPolicy`]: exponential backoff with full jitter, by `backon`, on tokio's
//! timer so tests run on paused time), and a hook that sees every failure before its retry
//! (the EBS limiter halves its rate there and counts the throttle). Long-running jobs do
//! not retry inside a call: a failed pass is retried by the engine under
//! [`bunker_protocol::job::Backoff`].

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tracing::debug;

use crate::ports::PortError;

/// How a call through a port is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: usize,
    /// Wait before the first retry (then doubling, jittered).
    pub min: Duration,
    /// No wait is longer than this.
    pub max: Duration,
}

impl RetryPolicy {
    /// AWS calls made while streaming (block reads and lists, part uploads, journal writes):
    /// waits of 0.1, 0.2, 0.4 … up to 20 s, ten retries — about a minute of patience, enough
    /// for EBS direct API throttling (which the limiter also answers by halving its rate)
    /// and S3 503 `SlowDown`, short enough that a dead endpoint fails the export.
    pub const AWS: RetryPolicy =
        RetryPolicy { retries: 10, min: Duration::from_millis(100), max: Duration::from_secs(20) };

    /// Runs `op` until it succeeds, fails with an error that is not retryable, or has been
    /// retried `retries` times; `before_retry` sees each failure that is retried.
    pub async fn call<T, F, Fut>(
        &self,
        what: &str,
        mut before_retry: impl FnMut(&PortError),
        op: F,
    ) -> Result<T, PortError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PortError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_max_times(self.retries)
            .with_jitter();
        op.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &PortError| e.kind.is_retryable())
            .notify(|e: &PortError, wait: Duration| {
                debug!(what, error = %e, wait_ms = wait.as_millis() as u64, "retrying");
                before_retry(e);
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ErrorKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn failing(kind: ErrorKind, times: u32, calls: &AtomicU32) -> Result<u32, PortError> {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        if n < times {
            Err(PortError::new(kind, Some("X"), "injected"))
        } else {
            Ok(n)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_with_growing_waits_others_at_once() {
        let p = RetryPolicy { retries: 4, min: Duration::from_secs(1), max: Duration::from_secs(8) };
        let calls = AtomicU32::new(0);
        let mut seen = 0;
        let start = tokio::time::Instant::now();
        let ok = p.call("t", |_| seen += 1, || async { failing(ErrorKind::Throttled, 3, &calls) }).await;
        assert_eq!(ok, Ok(3));
        assert_eq!(seen, 3, "the hook saw every retried failure");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(7) && waited <= Duration::from_secs(14), "1+2+4 s, jittered: {waited:?}");

        let calls = AtomicU32::new(0);
        let err = p.call("t", |_| {}, || async { failing(ErrorKind::NotFound, 9, &calls) }).await.unwrap_err();
        assert_eq!((err.kind, calls.load(Ordering::SeqCst)), (ErrorKind::NotFound, 1), "not retryable: one call");

        let calls = AtomicU32::new(0);
        let err = p.call("t", |_| {}, || async { failing(ErrorKind::Transient, 99, &calls) }).await.unwrap_err();
        assert_eq!(
            (err.kind, calls.load(Ordering::SeqCst)),
            (ErrorKind::Transient, 5),
            "1 + 4 retries, then the error"
        );
    }
}
