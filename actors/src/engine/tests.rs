//! The engine on tokio's paused time: timers, backoff and restarts are checked to the second
//! without any test waiting for them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use bunker_protocol::report::{Entry, EntryStatus, Operation};
use bunker_protocol::ResourceKind;
use futures::future::join_all;
use tokio::time::Instant;

use super::*;
use crate::metrics::{Metric, Metrics};
use crate::ports::{ErrorKind, PortError};
use crate::system::FailureReporter;
use crate::testkit::RecordingNotifier;

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:errors";

impl JobKey for String {
    fn kind_label(&self) -> &'static str {
        "ebs"
    }
}

/// A workflow that plays passes from a script and records when each ran.
struct Script {
    passes: Mutex<VecDeque<Pass>>,
    ran: Mutex<Vec<Instant>>,
    abandoned: Mutex<Vec<String>>,
}

impl Script {
    fn new(passes: Vec<Pass>) -> Arc<Script> {
        Arc::new(Script { passes: Mutex::new(passes.into()), ran: Mutex::default(), abandoned: Mutex::default() })
    }

    /// Seconds from the first pass to each pass.
    fn offsets(&self) -> Vec<f64> {
        let ran = self.ran.lock().unwrap();
        ran.iter().map(|t| (*t - ran[0]).as_secs_f64()).collect()
    }
}

fn error_entry(key: &str, message: &str) -> Entry {
    Entry {
        operation: Operation::CopyBackup,
        status: EntryStatus::Error,
        region: "us-east-1".into(),
        resource_id: None,
        backup_id: Some(key.into()),
        backup_name: None,
        retention: None,
        message: Some(message.into()),
    }
}

#[async_trait]
impl Workflow for Script {
    type Key = String;
    const NAME: &'static str = "script";

    async fn pass(&self, _key: &String) -> (Pass, Vec<Entry>) {
        self.ran.lock().unwrap().push(Instant::now());
        let next = self.passes.lock().unwrap().pop_front();
        match next {
            Some(Pass::Failed(why)) if why == "panic" => panic!("injected panic in a pass"),
            Some(p) => (p, vec![]),
            None => (Pass::Done, vec![]),
        }
    }

    async fn owned(&self, _kind: Option<ResourceKind>) -> Result<Vec<String>, PortError> {
        Ok(vec![])
    }

    async fn abandon(&self, key: &String) {
        self.abandoned.lock().unwrap().push(key.clone());
    }

    fn gave_up_entry(&self, key: &String, reason: &str) -> Option<Entry> {
        Some(error_entry(key, reason))
    }
}

/// An actix System on a current-thread runtime with tokio's clock paused: timers fire as
/// soon as nothing else can run, in order, at their exact simulated times.
/// An actix System on a current-thread runtime whose clock is paused (timers pass at once).
pub(crate) fn paused_system() -> actix::SystemRunner {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
    })
}

fn throttled() -> Pass {
    Pass::Retry(JobError::Aws(PortError::new(ErrorKind::Throttled, Some("Throttling"), "slow down")))
}

fn waiting() -> Pass {
    Pass::Waiting { next_check: None, why: "copy pending".into() }
}

#[test]
fn waits_and_backoff_follow_the_check_interval_on_paused_time() {
    let script = Script::new(vec![
        waiting(),
        throttled(),
        throttled(),
        Pass::Progress,
        Pass::Waiting { next_check: Some(Duration::from_secs(5)), why: "almost".into() },
    ]);
    let metrics = Arc::new(Metrics::default());
    let wall = std::time::Instant::now();
    let (s, m) = (script.clone(), metrics.clone());
    let report = paused_system().block_on(async move {
        let alerts = Alerts::new(Arc::new(RecordingNotifier::default()), None);
        let addr = JobActor::new(s, Duration::from_secs(60), m, alerts).start();
        addr.send(Run("job-1".to_string())).await.unwrap().unwrap()
    });
    assert_eq!(report.end, JobEnd::Done);
    let at = script.offsets();
    let backoff = Backoff::checks(Duration::from_secs(60));
    assert_eq!(at.len(), 6, "{at:?}");
    assert_eq!(at[1], 60.0, "a waiting job is looked at again after the check interval: {at:?}");
    let first = at[2] - at[1];
    assert!((120.0..121.0).contains(&first), "first retry after 2 intervals + jitter < 1 s: {at:?}");
    let second = at[3] - at[2];
    assert!((240.0..241.0).contains(&second), "the wait doubles: {at:?}");
    assert_eq!(at[4], at[3], "progress is looked at again at once");
    assert_eq!(at[5] - at[4], 5.0, "a workflow's own next_check wins");
    assert_eq!(backoff.delay(1, 0).as_secs(), 120);
    assert!(wall.elapsed() < Duration::from_secs(5), "nothing waited for real: {:?}", wall.elapsed());
    assert_eq!(metrics.get(Metric::JobsTotal, &[("workflow", "script"), ("kind", "ebs"), ("state", "done")]), 1.0);
}

#[test]
fn a_job_gives_up_after_its_retries_with_one_alert_and_duplicates_share_it() {
    let script = Script::new((0..7).map(|_| throttled()).collect());
    let notifier = Arc::new(RecordingNotifier::default());
    let metrics = Arc::new(Metrics::default());
    let (s, m, n) = (script.clone(), metrics.clone(), notifier.clone());
    let reports = paused_system().block_on(async move {
        let alerts = Alerts::new(n, Some(TOPIC.into()));
        let addr = JobActor::new(s, Duration::from_secs(10), m, alerts).start();
        let reports = join_all((0..3).map(|_| addr.send(Run("job-1".to_string())))).await;
        tokio::time::sleep(Duration::from_millis(10)).await; // the alert is published by a task
        reports
    });
    assert_eq!(script.offsets().len(), 7, "one job for three requests, 1 + 6 retries");
    assert_eq!(*script.abandoned.lock().unwrap(), ["job-1"], "cleaned up once, before the reply");
    for r in reports {
        let r = r.unwrap().unwrap();
        assert!(matches!(&r.end, JobEnd::GaveUp(why) if why.starts_with("gave up after 6 retries: Throttling")));
        assert_eq!(r.entries.len(), 1, "the give-up is recorded: {:?}", r.entries);
    }
    assert_eq!(metrics.get(Metric::JobsTotal, &[("workflow", "script"), ("kind", "ebs"), ("state", "failed")]), 1.0);
    let published = notifier.published.lock().unwrap();
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].1, "bunker script failed: job-1");
}

#[test]
fn a_panicking_pass_is_retried_counted_and_reported() {
    let script = Script::new(vec![Pass::Failed("panic".into())]);
    let notifier = Arc::new(RecordingNotifier::default());
    let metrics = Arc::new(Metrics::default());
    let (s, m, n) = (script.clone(), metrics.clone(), notifier.clone());
    let report = paused_system().block_on(async move {
        let addr = JobActor::new(s, Duration::from_secs(10), m, Alerts::new(n, Some(TOPIC.into()))).start();
        addr.send(Run("job-1".to_string())).await.unwrap().unwrap()
    });
    assert_eq!(report.end, JobEnd::Done);
    assert_eq!(metrics.get(Metric::ActorRestartsTotal, &[("actor", "script-task")]), 1.0);
    assert!(notifier.published.lock().unwrap().iter().any(|(_, s, _)| s.contains("panicked")));
}

#[test]
fn draining_refuses_new_jobs_and_counts_running_passes() {
    let script = Script::new(vec![waiting()]);
    let s = script.clone();
    let (refused, running) = paused_system().block_on(async move {
        let alerts = Alerts::new(Arc::new(RecordingNotifier::default()), None);
        let addr = JobActor::new(s, Duration::from_secs(60), Arc::default(), alerts).start();
        let first = addr.send(Run("job-1".to_string()));
        let running = addr.send(GetRunning).await.unwrap();
        addr.send(Drain).await.unwrap();
        let refused = addr.send(Run("job-2".to_string())).await.unwrap();
        drop(first);
        (refused, running)
    });
    assert_eq!(refused.unwrap_err(), EngineError::Draining);
    assert_eq!(running, 1, "the first job's pass is under way when the drain starts");
}

/// An actor whose handler panics while `panics` is above zero.
struct Fragile {
    panics: Arc<AtomicU32>,
    handled: Arc<AtomicU32>,
}

impl Actor for Fragile {
    type Context = Context<Self>;
}

#[derive(Clone)]
struct Work;

impl Message for Work {
    type Result = Result<u32, EngineError>;
}

impl Relayed for Work {
    fn unavailable() -> Self::Result {
        Err(EngineError::Stopped)
    }
    fn again(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl Handler<Work> for Fragile {
    type Result = Result<u32, EngineError>;

    fn handle(&mut self, _msg: Work, _ctx: &mut Self::Context) -> Self::Result {
        if self.panics.load(Ordering::SeqCst) > 0 {
            self.panics.fetch_sub(1, Ordering::SeqCst);
            panic!("injected panic in a handler");
        }
        Ok(self.handled.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

#[test]
fn a_panicked_actor_is_made_again_and_the_lost_message_answered() {
    let (panics, handled) = (Arc::new(AtomicU32::new(1)), Arc::new(AtomicU32::new(0)));
    let notifier = Arc::new(RecordingNotifier::default());
    let metrics = Arc::new(Metrics::default());
    let (p, h, n, m) = (panics.clone(), handled.clone(), notifier.clone(), metrics.clone());
    let (answer, generation, connected) = paused_system().block_on(async move {
        let reporter = FailureReporter::new(n, Some(TOPIC.into())).start();
        let make = move || Fragile { panics: p.clone(), handled: h.clone() };
        let s = supervise("fragile", make, Backoff::checks(Duration::from_secs(1)), m, Some(reporter.recipient()));
        let answer = s.send(Work).await;
        (answer, s.generation(), s.connected())
    });
    assert_eq!(answer, Ok(1), "the message lost with the dead actor was handled by the new one");
    assert_eq!((generation, connected), (2, true));
    assert_eq!(metrics.get(Metric::ActorRestartsTotal, &[("actor", "fragile")]), 1.0);
    let published = notifier.published.lock().unwrap();
    assert_eq!(published.len(), 1, "one notification per restart: {published:?}");
    assert!(published[0].1.contains("fragile failed and was restarted"), "{published:?}");
    assert!(published[0].2.contains("injected panic in a handler"), "{published:?}");
}

#[test]
fn an_actor_that_keeps_panicking_is_left_stopped_and_says_so() {
    let (panics, handled) = (Arc::new(AtomicU32::new(100)), Arc::new(AtomicU32::new(0)));
    let metrics = Arc::new(Metrics::default());
    let (p, h, m) = (panics.clone(), handled.clone(), metrics.clone());
    let restarts =
        Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(8), jitter: Duration::ZERO, max_retries: 3 };
    let (answers, connected, took) = paused_system().block_on(async move {
        let make = move || Fragile { panics: p.clone(), handled: h.clone() };
        let s = supervise("fragile", make, restarts, m, None);
        let start = Instant::now();
        let mut answers = vec![];
        for _ in 0..4 {
            answers.push(s.send(Work).await);
        }
        (answers, s.connected(), start.elapsed())
    });
    assert!(answers.iter().all(|a| a.is_err()), "{answers:?}");
    assert!(!connected, "given up: /healthz must see it");
    assert_eq!(
        metrics.get(Metric::ActorRestartsTotal, &[("actor", "fragile")]),
        4.0,
        "3 restarts, then the last death"
    );
    assert!(took >= Duration::from_secs(1 + 2 + 4), "backoff between restarts: {took:?}");
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

/// A workflow that panics inside its actor once: its label is read by the actor itself when
/// a job ends, so the panic kills the actor, not a pass's task.
struct PanicsOnce<W> {
    inner: Arc<W>,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl<W: Workflow> Workflow for PanicsOnce<W> {
    type Key = W::Key;
    const NAME: &'static str = W::NAME;
    fn kind_label(&self, key: &W::Key) -> &'static str {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("injected panic in the job actor");
        }
        self.inner.kind_label(key)
    }
    async fn pass(&self, key: &W::Key) -> (Pass, Vec<Entry>) {
        self.inner.pass(key).await
    }
    async fn owned(&self, kind: Option<ResourceKind>) -> Result<Vec<W::Key>, PortError> {
        self.inner.owned(kind).await
    }
    fn gave_up_entry(&self, key: &W::Key, reason: &str) -> Option<Entry> {
        self.inner.gave_up_entry(key, reason)
    }
}

/// The service's shape (`src/serve.rs`): a failure reporter, the replicator's job actor under
/// `supervise`, and the reconciler sending through its relay. The job actor dies of a panic
/// while finishing the job; it is made again, the reconciler's request is answered by the
/// new actor, the job completes from AWS state (one copy, shared), and the restart is counted
/// in `/metrics` and reported once.
#[test]
fn in_the_service_shape_a_dead_job_actor_comes_back_and_its_job_completes() {
    use crate::replicator::Replicator;
    use crate::testkit::{FakeControl, MemoryLeases};
    use bunker_protocol::config::{defaults, resolve, Key, Setting, Source};
    use bunker_protocol::tags;

    let home = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-east-1"));
    let dr = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-west-2"));
    let tags = [(tags::MANAGED, "true"), (tags::DEPLOYMENT, "bunker-123456789012-us-east-1"), (tags::KIND, "ebs")];
    home.state.lock().unwrap().backups.insert(
        "snap-1".into(),
        crate::ports::ListedBackup {
            id: "snap-1".into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            available: true,
            aws_created_at: None,
            parts: vec![],
        },
    );
    let mut settings = defaults();
    for (k, v) in [(Key::Regions, "us-east-1"), (Key::DrRegions, "us-west-2"), (Key::ShareAccounts, "111111111111")] {
        settings.push(Setting { key: k, value: v.into(), source: Source::Cli { flag: k.to_string() } });
    }
    let notifier = Arc::new(RecordingNotifier::default());
    let metrics = Arc::new(Metrics::default());
    let replicator = Arc::new(PanicsOnce {
        inner: Arc::new(Replicator::new(
            "123456789012".into(),
            resolve(&settings).unwrap(),
            vec![home.clone(), dr.clone()],
            Arc::new(MemoryLeases::default()),
            notifier.clone(),
            "test".into(),
            metrics.clone(),
        )),
        armed: true.into(),
    });
    let (m, n) = (metrics.clone(), notifier.clone());
    let (scan, generation) = paused_system().block_on(async move {
        let reporter = FailureReporter::new(n.clone(), Some(TOPIC.into())).start();
        let (w, m2) = (replicator.clone(), m.clone());
        let make = move || JobActor::new(w.clone(), Duration::from_secs(30), m2.clone(), Alerts::new(n.clone(), None));
        let jobs =
            supervise("replicator", make, Backoff::checks(Duration::from_secs(1)), m, Some(reporter.recipient()));
        let reconciler = Reconciler::new(replicator, jobs.recipient(), vec![ResourceKind::Ebs]);
        let scan = reconciler.scan(None).await;
        (scan, jobs.generation())
    });
    assert_eq!(scan, (1, 1), "one job handed over, and it ended done");
    assert_eq!(generation, 2, "the job actor was made again");
    assert_eq!(dr.backup_ids().len(), 1, "exactly one copy");
    assert_eq!(home.state.lock().unwrap().shared["snap-1"], ["111111111111"]);
    let text = metrics.render();
    assert!(text.contains("bunker_actor_restarts_total{actor=\"replicator\"} 1"), "{text}");
    assert!(text.contains("bunker_jobs_total{workflow=\"replicator\",kind=\"ebs\",state=\"done\"} 1"), "{text}");
    let published = notifier.published.lock().unwrap();
    let restarts: Vec<_> = published.iter().filter(|(_, s, _)| s.contains("restarted")).collect();
    assert_eq!(restarts.len(), 1, "{published:?}");
}
