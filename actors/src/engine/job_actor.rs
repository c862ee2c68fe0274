//! [`JobActor`]: the one actix shell every [`Workflow`] runs in.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bunker_protocol::report::Entry;
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use super::{Alerts, Backoff, EngineError, JobEnd, JobError, JobReport, Pass, Run, Workflow};
use crate::metrics::{Metric, Metrics};

/// Passes in a row that may end in [`Pass::Progress`] before the next waits the check
/// interval (bounded, so a share AWS accepts but never shows cannot spin).
const QUICK_PASSES: u32 = 3;

struct Job<K> {
    waiters: Vec<oneshot::Sender<JobReport<K>>>,
    entries: Vec<Entry>,
    retries: u32,
    quick: u32,
    running: bool,
}

/// Runs the jobs of workflow `W`: one job per key, whoever asks; passes on tokio tasks (a
/// panic is caught, counted, reported and retried); waits on timers, never threads.
pub struct JobActor<W: Workflow> {
    workflow: Arc<W>,
    jobs: HashMap<W::Key, Job<W::Key>>,
    check_interval: Duration,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    alerts: Alerts,
    draining: bool,
}

impl<W: Workflow> JobActor<W> {
    /// Jobs of `workflow`; waiting jobs are looked at again every `check_interval`, failing
    /// ones after [`Backoff::checks`] of it.
    pub fn new(workflow: Arc<W>, check_interval: Duration, metrics: Arc<Metrics>, alerts: Alerts) -> Self {
        JobActor {
            workflow,
            jobs: HashMap::new(),
            check_interval,
            backoff: Backoff::checks(check_interval),
            metrics,
            alerts,
            draining: false,
        }
    }

    fn run_pass(&mut self, key: W::Key, ctx: &mut Context<Self>) {
        let Some(job) = self.jobs.get_mut(&key) else { return };
        if job.running {
            return;
        }
        job.running = true;
        let workflow = self.workflow.clone();
        let k = key.clone();
        // The pass runs as a tokio task: a panic in it comes back as a JoinError and the job
        // is retried, instead of unwinding through the arbiter.
        let task = tokio::spawn(async move { workflow.pass(&k).await });
        ctx.spawn(task.into_actor(self).map(move |res, act, ctx| act.finish_pass(key, res, ctx)));
    }

    fn caught(&self, key: &W::Key, e: tokio::task::JoinError) -> (Pass, Vec<Entry>) {
        let msg = if e.is_panic() { format!("task panicked: {e}") } else { format!("task cancelled: {e}") };
        let name = W::NAME;
        error!(workflow = name, job = %key, error = %msg, "pass panicked; retrying");
        let actor = format!("{name}-task");
        self.metrics.inc(Metric::ActorRestartsTotal, &[("actor", &actor)]);
        let (alerts, subject, body) =
            (self.alerts.clone(), format!("bunker: {name} task panicked"), format!("job {key}: {msg}"));
        actix::spawn(async move { alerts.send(&subject, &body).await });
        (Pass::Retry(JobError::Panicked(msg)), vec![])
    }

    fn finish_pass(
        &mut self,
        key: W::Key,
        res: Result<(Pass, Vec<Entry>), tokio::task::JoinError>,
        ctx: &mut Context<Self>,
    ) {
        let (pass, entries) = res.unwrap_or_else(|e| self.caught(&key, e));
        let Some(job) = self.jobs.get_mut(&key) else { return };
        job.running = false;
        job.entries.extend(entries);
        let next = match pass {
            Pass::Done => Err(JobEnd::Done),
            Pass::NotOurs(why) => Err(JobEnd::NotOurs(why)),
            Pass::Failed(why) => Err(JobEnd::Failed(why)),
            Pass::Progress if job.quick < QUICK_PASSES => {
                (job.retries, job.quick) = (0, job.quick + 1);
                Ok(Duration::ZERO)
            }
            Pass::Progress => {
                (job.retries, job.quick) = (0, 0);
                Ok(self.check_interval)
            }
            Pass::Waiting { next_check, why } => {
                (job.retries, job.quick) = (0, 0);
                debug!(workflow = W::NAME, job = %key, why = %why, "waiting");
                Ok(next_check.unwrap_or(self.check_interval))
            }
            Pass::Retry(e) if self.backoff.gives_up(job.retries) => {
                Err(JobEnd::GaveUp(format!("gave up after {} retries: {e}", job.retries)))
            }
            Pass::Retry(e) => {
                job.retries += 1;
                warn!(workflow = W::NAME, job = %key, error = %e, retry = job.retries, "pass failed; retrying");
                Ok(self.backoff.delay(job.retries, seed(&key)))
            }
        };
        match next {
            Ok(wait) => {
                ctx.run_later(wait, move |act, ctx| act.run_pass(key, ctx));
            }
            Err(end @ JobEnd::GaveUp(_)) => self.abandon(key, end, ctx),
            Err(end) => self.end(key, end),
        }
        for woken in self.workflow.woken() {
            self.run_pass(woken, ctx);
        }
    }

    /// [`Workflow::abandon`], then the end. The job stays open (and "running") meanwhile, so
    /// a request for it joins instead of starting a pass.
    fn abandon(&mut self, key: W::Key, end: JobEnd, ctx: &mut Context<Self>) {
        if let Some(job) = self.jobs.get_mut(&key) {
            job.running = true;
        }
        let (workflow, k) = (self.workflow.clone(), key.clone());
        let task = tokio::spawn(async move { workflow.abandon(&k).await });
        ctx.spawn(task.into_actor(self).map(move |res, act, _| {
            if let Err(e) = res {
                warn!(workflow = W::NAME, job = %key, error = %e, "cleanup after giving up panicked");
            }
            act.end(key, end)
        }));
    }

    fn end(&mut self, key: W::Key, end: JobEnd) {
        let job = self.jobs.remove(&key).expect("a finished job is open");
        let w = self.workflow.clone();
        self.metrics
            .inc(Metric::JobsTotal, &[("workflow", W::NAME), ("kind", w.kind_label(&key)), ("state", end.state())]);
        let mut entries = job.entries;
        if let Some(reason) = end.failure() {
            entries.extend(w.gave_up_entry(&key, reason));
            let (alerts, subject, body) = (self.alerts.clone(), w.gave_up_subject(&key), format!("{key}: {reason}"));
            actix::spawn(async move { alerts.send(&subject, &body).await });
        }
        let report = JobReport { key, end, entries };
        for waiter in job.waiters {
            if waiter.send(report.clone()).is_err() {
                debug!(job = %report.key, "requester gone before the job ended");
            }
        }
    }
}

/// A jitter seed per job, so jobs failing together do not retry together.
fn seed<K: Hash>(key: &K) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl<W: Workflow> Actor for JobActor<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Each Run waits for its job; callers bound themselves (the watcher handles a batch
        // at a time, reconciliation sends one by one), so a small mailbox suffices.
        ctx.set_mailbox_capacity(64);
    }
}

impl<W: Workflow> Handler<Run<W::Key>> for JobActor<W> {
    type Result = ResponseFuture<Result<JobReport<W::Key>, EngineError>>;

    fn handle(&mut self, msg: Run<W::Key>, ctx: &mut Self::Context) -> Self::Result {
        if self.draining {
            return Box::pin(async { Err(EngineError::Draining) });
        }
        let (tx, rx) = oneshot::channel();
        let key = msg.0;
        let job = self.jobs.entry(key.clone()).or_insert_with(|| Job {
            waiters: vec![],
            entries: vec![],
            retries: 0,
            quick: 0,
            running: false,
        });
        job.waiters.push(tx);
        self.run_pass(key, ctx);
        Box::pin(async move { rx.await.map_err(|_| EngineError::Stopped) })
    }
}

/// Passes running now (effects under way). Jobs merely waiting for AWS are not counted:
/// shutdown need not wait for them, reconciliation resumes them after a restart.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "usize")]
pub struct GetRunning;

impl<W: Workflow> Handler<GetRunning> for JobActor<W> {
    type Result = usize;

    fn handle(&mut self, _msg: GetRunning, _ctx: &mut Self::Context) -> usize {
        self.jobs.values().filter(|j| j.running).count()
    }
}

/// Take no new jobs (shutdown); open jobs go on until the System stops.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Drain;

impl<W: Workflow> Handler<Drain> for JobActor<W> {
    type Result = ();

    fn handle(&mut self, _msg: Drain, _ctx: &mut Self::Context) {
        self.draining = true;
    }
}
