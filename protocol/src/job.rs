//! How long-running work ends and how it is retried: one vocabulary for every workflow
//! (replication, pulls, exports and those to come), so a job's end is a value to match on,
//! never a string to inspect.

use std::time::Duration;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// Everything the job was for exists.
    Done,
    /// Not this deployment's to do (not bunker's, another deployment's, a copy, gone, not
    /// served): nothing was wrong, nothing was done.
    NotOurs(String),
    /// It failed in a way retrying cannot fix (not found, invalid, not allowed); the reason
    /// is reported. A queue message that asked for it is dead-lettered at once.
    Failed(String),
    /// It failed transiently more often than its retry policy allows; the reason is
    /// reported, and a redelivered message or reconciliation may find it again later.
    GaveUp(String),
}

impl JobEnd {
    /// The `state` label of `bunker_jobs_total`: `done`, `not_ours` or `failed`.
    pub fn state(&self) -> &'static str {
        match self {
            JobEnd::Done => "done",
            JobEnd::NotOurs(_) => "not_ours",
            JobEnd::Failed(_) | JobEnd::GaveUp(_) => "failed",
        }
    }

    /// Whether it failed in a way retrying cannot fix.
    pub fn is_permanent(&self) -> bool {
        matches!(self, JobEnd::Failed(_))
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        match self {
            JobEnd::Failed(why) | JobEnd::GaveUp(why) => Some(why),
            JobEnd::Done | JobEnd::NotOurs(_) => None,
        }
    }

    /// Whether the job is done.
    pub fn is_done(&self) -> bool {
        matches!(self, JobEnd::Done)
    }

    /// Why it ended without being done.
    pub fn reason(&self) -> Option<&str> {
        match self {
            JobEnd::Done => None,
            JobEnd::NotOurs(why) | JobEnd::Failed(why) | JobEnd::GaveUp(why) => Some(why),
        }
    }
}

/// The one retry schedule: the `n`-th retry in a row waits `base × 2ⁿ⁻¹` (at most `cap`)
/// plus up to `jitter`, so jobs failing together spread out; after `max_retries` retries in
/// a row the next failure gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait before the first retry.
    pub base: Duration,
    /// No wait is longer than this (before jitter).
    pub cap: Duration,
    /// Up to this much is added to each wait, chosen by the seed.
    pub jitter: Duration,
    /// Retries in a row before giving up.
    pub max_retries: u32,
}

impl Backoff {
    /// The replication schedule of earlier releases: retries wait 2, 4, … 64 check
    /// intervals plus up to a second, and the seventh failure in a row gives up.
    pub fn checks(check_interval: Duration) -> Backoff {
        Backoff { base: check_interval * 2, cap: check_interval * 64, jitter: Duration::from_secs(1), max_retries: 6 }
    }

    /// The wait before retry `retry` (1 for the first), jittered by `seed` (e.g. a hash of
    /// the job's key, so two jobs failing together do not retry together).
    pub fn delay(&self, retry: u32, seed: u64) -> Duration {
        let doubled = self.base.saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let jitter_ms = self.jitter.as_millis() as u64;
        let jitter = if jitter_ms == 0 { 0 } else { mix(seed ^ u64::from(retry)) % jitter_ms };
        doubled.min(self.cap).saturating_add(Duration::from_millis(jitter))
    }

    /// Whether a failure after `retries` retries in a row ends the job.
    pub fn gives_up(&self, retries: u32) -> bool {
        retries >= self.max_retries
    }
}

/// splitmix64's finaliser: a well-spread hash of `x` (the jitter needs spread, not secrecy).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_jitter_stays_under_its_bound() {
        let b = Backoff::checks(Duration::from_secs(10));
        let waits: Vec<u64> = (1..=8).map(|n| b.delay(n, 7).as_secs()).collect();
        assert_eq!(waits, [20, 40, 80, 160, 320, 640, 640, 640]);
        for seed in 0..1000 {
            let d = b.delay(1, seed);
            assert!(d >= Duration::from_secs(20) && d < Duration::from_secs(21), "{d:?}");
        }
        let spread: std::collections::BTreeSet<_> = (0..100).map(|s| b.delay(1, s)).collect();
        assert!(spread.len() > 50, "jitter spreads jobs: {} distinct waits", spread.len());
        assert!(!b.gives_up(5) && b.gives_up(6));
    }

    #[test]
    fn no_jitter_no_overflow() {
        let b = Backoff {
            base: Duration::from_secs(u64::MAX / 4),
            cap: Duration::MAX,
            jitter: Duration::ZERO,
            max_retries: 1,
        };
        assert_eq!(b.delay(40, 1), Duration::MAX, "saturates instead of overflowing");
        assert_eq!(JobEnd::GaveUp("x".into()).state(), "failed");
        assert_eq!(JobEnd::Failed("x".into()).state(), "failed");
        assert!(JobEnd::Failed("x".into()).is_permanent() && !JobEnd::GaveUp("x".into()).is_permanent());
        assert_eq!(JobEnd::NotOurs("gone".into()).reason(), Some("gone"));
    }
}
