//! The scheduler: fires create and clean runs at their cron slots, and runs commands from the
//! queue the same way.
//!
//! A slot is fired by whoever claims its lease first (`slot:<deployment>:<action>:<kind>:<at>`,
//! held for a year), so of several instances exactly one runs it, and a restart never runs it
//! again. At start-up only the newest past slot of each schedule is considered: after a
//! week of downtime a missed run is caught up once, not seven times.
//!
//! A scheduled create hands every new backup to the replicator and publishes one run report
//! when the copies and shares are done too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bunker_protocol::cron::Cron;
use bunker_protocol::events::Command;
use bunker_protocol::report::RunReport;
use bunker_protocol::ResourceKind;
use futures::stream::{self, StreamExt};
use jiff::Timestamp;
use tracing::{error, info, warn};

use crate::engine::FAN_OUT;
use crate::engine::{Clock, Run, SystemClock};
use crate::metrics::Metrics;
use crate::ports::Leases;
use crate::replicator::Replicate;
use crate::runner::{run_id, RunOptions, Runner};
use crate::stream::export_job::ExportSnapshot;
use crate::watcher::{CommandError, RunCommand};

/// A scheduled action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// `create-backups`.
    Create,
    /// `clean-backups`.
    Clean,
    /// `pull-backups` (data-bunker account).
    Pull,
}

impl Action {
    /// As written in slot keys and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create-backups",
            Action::Clean => "clean-backups",
            Action::Pull => "pull-backups",
        }
    }
}

/// One firing of one schedule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    /// When.
    pub at: Timestamp,
    /// What.
    pub action: Action,
    /// For which kind.
    pub kind: ResourceKind,
}

/// The schedule arithmetic (no I/O, no timers).
#[derive(Debug, Clone)]
pub struct Scheduler {
    entries: Vec<(Action, ResourceKind, Cron)>,
    deployment: String,
}

impl Scheduler {
    /// Each schedule for every kind served; `deployment` scopes the slot keys.
    pub fn new(schedules: Vec<(Action, Cron)>, kinds: Vec<ResourceKind>, deployment: String) -> Scheduler {
        let entries = schedules.into_iter().flat_map(|(a, c)| kinds.iter().map(move |&k| (a, k, c.clone()))).collect();
        Scheduler { entries, deployment }
    }

    /// Replaces one kind's schedule for an action (`None`: that kind does not run it).
    /// Overrides for kinds that are not served are ignored.
    pub fn with_override(mut self, action: Action, kind: ResourceKind, cron: Option<Cron>, served: bool) -> Self {
        self.entries.retain(|(a, k, _)| !(*a == action && *k == kind));
        if let (Some(c), true) = (cron, served) {
            self.entries.push((action, kind, c));
        }
        self
    }

    /// The newest past slot of each schedule and kind: what start-up catches up (once).
    pub fn catch_up(&self, now: Timestamp) -> Vec<Slot> {
        let mut out: Vec<Slot> = self
            .entries
            .iter()
            .filter_map(|(action, kind, cron)| {
                Some(Slot { at: cron.latest_at_or_before(now)?, action: *action, kind: *kind })
            })
            .collect();
        out.sort();
        out
    }

    /// The next instant anything fires after `now`, and the slots due then.
    pub fn next(&self, now: Timestamp) -> Option<(Timestamp, Vec<Slot>)> {
        let at = self.entries.iter().filter_map(|(_, _, c)| c.next_after(now)).min()?;
        let slots = self
            .entries
            .iter()
            .filter(|(_, _, c)| c.next_after(now) == Some(at))
            .map(|(action, kind, _)| Slot { at, action: *action, kind: *kind })
            .collect();
        Some((at, slots))
    }

    /// The lease key of a slot.
    pub fn slot_key(&self, slot: &Slot) -> String {
        format!("slot:{}:{}:{}:{}", self.deployment, slot.action.as_str(), slot.kind, slot.at.as_second())
    }
}

/// The runners of one kind: create over the source regions, clean over source and DR regions.
#[derive(Clone)]
pub struct KindRunners {
    /// create-backups.
    pub create: Arc<Runner>,
    /// clean-backups.
    pub clean: Arc<Runner>,
}

/// Why the executor refused a run: it is not configured to run it (permanent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotConfigured {
    /// The kind is not in `serve.kinds`.
    #[error("kind {0} is not served (serve.kinds)")]
    Kind(ResourceKind),
    /// A pull without `source_accounts`.
    #[error("pull-backups needs source_accounts")]
    Pull,
}

/// Runs actions: from slots and from commands.
pub struct Executor {
    runners: HashMap<ResourceKind, KindRunners>,
    puller: Option<(Arc<crate::puller::Puller>, Recipient<Run<crate::puller::PullRef>>)>,
    replicator: Recipient<Replicate>,
    /// Told of each backup a create makes before it is handed over.
    told: Option<Arc<crate::replicator::Replicator>>,
    metrics: Arc<Metrics>,
    running: Arc<AtomicUsize>,
    clock: Arc<dyn Clock>,
}

impl Executor {
    /// An executor over each kind's runners, handing new backups to `replicator`.
    pub fn new(
        runners: HashMap<ResourceKind, KindRunners>,
        replicator: Recipient<Replicate>,
        metrics: Arc<Metrics>,
    ) -> Executor {
        Executor {
            runners,
            puller: None,
            replicator,
            told: None,
            metrics,
            running: Arc::new(AtomicUsize::new(0)),
            clock: Arc::new(SystemClock),
        }
    }

    /// Runs, slots and leases take their time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Tells `logic` (the replicator behind the job actor) of every backup a create makes
    /// before handing it over ([`Replicator::made`](crate::replicator::Replicator::made)).
    pub fn telling(mut self, logic: Arc<crate::replicator::Replicator>) -> Self {
        self.told = Some(logic);
        self
    }

    /// Also runs `pull-backups` with `puller`, whose jobs run in `jobs` (its job actor).
    pub fn with_puller(
        mut self,
        puller: Arc<crate::puller::Puller>,
        jobs: Recipient<Run<crate::puller::PullRef>>,
    ) -> Self {
        self.puller = Some((puller, jobs));
        self
    }

    /// Runs in progress.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Runs one action for one kind; returns its report (published once, at the end).
    pub async fn run(
        &self,
        action: Action,
        kind: ResourceKind,
        select: Option<String>,
    ) -> Result<RunReport, NotConfigured> {
        let r = self.runners.get(&kind).ok_or(NotConfigured::Kind(kind))?;
        let _running = crate::guard::InFlight::enter(&self.running);
        let now = self.clock.now();
        let opts = RunOptions { now, dry_run: false, run_id: run_id(now), publish_report: false };
        let report = match action {
            Action::Clean => r.clean.clean_backups(&opts).await,
            Action::Pull => match &self.puller {
                Some((p, jobs)) => p.pull_report(jobs, kind, opts.run_id.clone()).await,
                None => return Err(NotConfigured::Pull),
            },
            Action::Create => {
                let select = select.or_else(|| r.create.config().select.clone());
                // Every backup made, not the report's entries: a report keeps at most
                // MAX_ENTRIES, and the backups past them would wait for reconciliation.
                let (report, created) = r.create.create_and_list(&opts, select).await;
                if let Some(logic) = &self.told {
                    created.iter().for_each(|b| logic.made(b));
                }
                let results: Vec<_> = stream::iter(created)
                    .map(|b| self.replicator.send(Run(b)))
                    .buffer_unordered(FAN_OUT)
                    .collect()
                    .await;
                let mut extra = Vec::new();
                for res in results {
                    match res {
                        Ok(Ok(job)) => extra.extend(job.entries),
                        _ => warn!(kind = %kind, "replication of a new backup did not finish; reconciliation will"),
                    }
                }
                report.extended(extra, self.clock.now())
            }
        };
        r.create.publish_report(&report).await;
        self.metrics.inc(
            crate::metrics::Metric::RunsTotal,
            &[("action", action.as_str()), ("kind", kind.as_str()), ("status", report.status.as_str())],
        );
        if report.status == bunker_protocol::report::RunStatus::Ok {
            let at = self.clock.now().as_second() as f64;
            self.metrics.set(
                crate::metrics::Metric::LastSuccess,
                &[("action", action.as_str()), ("kind", kind.as_str())],
                at,
            );
        }
        info!(run_id = %report.run_id, status = report.status.as_str(), "{}", report.headline());
        Ok(report)
    }
}

/// Stop firing slots (shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopSchedule;

/// Runs in progress.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct GetRunning;

/// The actix shell: timers for slots, leases for once-only, [`Executor`] for the runs.
pub struct SchedulerActor {
    schedule: Scheduler,
    executor: Arc<Executor>,
    leases: Arc<dyn Leases>,
    holder: String,
    reconcile: Option<Recipient<crate::engine::Reconcile>>,
    exporter: Option<Recipient<Run<ExportSnapshot>>>,
    /// Region of exports whose command names none.
    export_region: String,
    /// Where a skipped slot is reported (the error topic).
    failures: Option<Recipient<crate::system::ReportFailure>>,
    stopped: bool,
}

impl SchedulerActor {
    /// The shell; `reconcile` receives `reconcile` commands.
    pub fn new(
        schedule: Scheduler,
        executor: Arc<Executor>,
        leases: Arc<dyn Leases>,
        holder: String,
        reconcile: Option<Recipient<crate::engine::Reconcile>>,
    ) -> Self {
        SchedulerActor {
            schedule,
            executor,
            leases,
            holder,
            reconcile,
            exporter: None,
            export_region: String::new(),
            failures: None,
            stopped: false,
        }
    }

    /// Routes `export` commands to `exporter`; `region` for those that name none.
    pub fn with_exporter(mut self, exporter: Recipient<Run<ExportSnapshot>>, region: String) -> Self {
        self.exporter = Some(exporter);
        self.export_region = region;
        self
    }

    /// Reports slots that could not be claimed (lease store unreachable) to `failures`.
    pub fn with_failures(mut self, failures: Recipient<crate::system::ReportFailure>) -> Self {
        self.failures = Some(failures);
        self
    }

    fn fire(&mut self, slots: Vec<Slot>, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        for slot in slots {
            let key = self.schedule.slot_key(&slot);
            let leases = self.leases.clone();
            let holder = self.holder.clone();
            let exec = self.executor.clone();
            let metrics = exec.metrics.clone();
            let failures = self.failures.clone();
            ctx.spawn(
                async move {
                    let now = exec.clock.unix();
                    let until = slot.at.as_second() + 400 * 86_400;
                    match leases.claim(&key, &holder, now, until).await {
                        Ok(true) => {
                            info!(slot = %key, "schedule slot fired");
                            metrics.inc(
                                crate::metrics::Metric::ScheduleSlotsTotal,
                                &[("action", slot.action.as_str()), ("kind", slot.kind.as_str()), ("outcome", "fired")],
                            );
                            if let Err(e) = exec.run(slot.action, slot.kind, None).await {
                                warn!(slot = %key, error = %e, "scheduled run failed to start");
                            }
                        }
                        Ok(false) => {
                            metrics.inc(
                                crate::metrics::Metric::ScheduleSlotsTotal,
                                &[
                                    ("action", slot.action.as_str()),
                                    ("kind", slot.kind.as_str()),
                                    ("outcome", "taken_elsewhere"),
                                ],
                            );
                            info!(slot = %key, "schedule slot already taken");
                        }
                        Err(e) => {
                            // Never silent: counted, and reported to the error topic.
                            error!(slot = %key, error = %e, "slot lease unavailable; slot skipped");
                            metrics.inc(
                                crate::metrics::Metric::ScheduleSlotsTotal,
                                &[
                                    ("action", slot.action.as_str()),
                                    ("kind", slot.kind.as_str()),
                                    ("outcome", "skipped"),
                                ],
                            );
                            if let Some(r) = failures {
                                let message = format!("schedule slot {key} skipped: lease unavailable: {e}");
                                if r.send(crate::system::ReportFailure { actor: "scheduler", message }).await.is_err() {
                                    warn!("failure reporter stopped");
                                }
                            }
                        }
                    }
                }
                .into_actor(self),
            );
        }
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        let now = self.executor.clock.now();
        let Some((at, slots)) = self.schedule.next(now) else { return };
        let wait = at.duration_since(now).unsigned_abs();
        // Timers drift little, but a long sleep across a suspend can overshoot: re-arm at
        // most hourly so the next slot is computed from the clock again.
        let hour = Duration::from_secs(3600);
        if wait > hour {
            ctx.run_later(hour, |act, ctx| act.arm(ctx));
            return;
        }
        ctx.run_later(wait, move |act, ctx| {
            act.fire(slots, ctx);
            act.arm(ctx);
        });
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let catch_up = self.schedule.catch_up(self.executor.clock.now());
        self.fire(catch_up, ctx);
        self.arm(ctx);
    }
}

impl Handler<RunCommand> for SchedulerActor {
    type Result = ResponseFuture<Result<(), CommandError>>;

    fn handle(&mut self, msg: RunCommand, _ctx: &mut Self::Context) -> Self::Result {
        let exec = self.executor.clone();
        let reconcile = self.reconcile.clone();
        let exporter = self.exporter.clone();
        let export_region = self.export_region.clone();
        let stopped = self.stopped;
        Box::pin(async move {
            if stopped {
                return Err(CommandError::Transient("shutting down".into()));
            }
            // `Executor::run` refuses only what is not configured (a kind not served, a pull
            // without source accounts): permanent.
            let run =
                |r: Result<RunReport, NotConfigured>| r.map(|_| ()).map_err(|e| CommandError::Permanent(e.to_string()));
            match msg.0 {
                Command::CreateBackups { kind, select } => run(exec.run(Action::Create, kind, select).await),
                Command::CleanBackups { kind } => run(exec.run(Action::Clean, kind, None).await),
                Command::PullBackups { kind } => run(exec.run(Action::Pull, kind, None).await),
                Command::Reconcile { kind } => match reconcile {
                    Some(r) => r
                        .send(crate::engine::Reconcile { kind })
                        .await
                        .map_err(|e| CommandError::Transient(e.to_string())),
                    None => Err(CommandError::Permanent("reconciliation is not running".into())),
                },
                Command::Export { snapshot_id, to, base, region } => match exporter {
                    Some(x) => {
                        let region = region.unwrap_or(export_region);
                        let job = ExportSnapshot { snapshot_id, region, to, base };
                        match x.send(Run(job)).await {
                            Ok(Ok(report)) => CommandError::of_job(&report.end),
                            Ok(Err(e)) => Err(CommandError::Transient(e.to_string())),
                            Err(e) => Err(CommandError::Transient(format!("exporter unavailable: {e}"))),
                        }
                    }
                    None => Err(CommandError::Permanent("exports are not running".into())),
                },
            }
        })
    }
}

impl Handler<StopSchedule> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, _msg: StopSchedule, _ctx: &mut Self::Context) {
        self.stopped = true;
    }
}

impl Handler<GetRunning> for SchedulerActor {
    type Result = usize;

    fn handle(&mut self, _msg: GetRunning, _ctx: &mut Self::Context) -> usize {
        self.executor.running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortError;
    use bunker_protocol::config::defaults;
    use bunker_protocol::events::BackupRef;
    use bunker_protocol::report::Entry;

    #[test]
    fn catch_up_is_once_and_next_groups_slots() {
        let s = Scheduler::new(
            vec![(Action::Create, "0 1 * * *".parse().unwrap()), (Action::Clean, "0 2 * * *".parse().unwrap())],
            vec![ResourceKind::Ebs, ResourceKind::Rds],
            "dep".into(),
        );
        // A week of downtime: one slot per schedule and kind, the newest.
        let now: Timestamp = "2026-12-08T01:30:00Z".parse().unwrap();
        let up = s.catch_up(now);
        assert_eq!(up.len(), 4);
        assert!(up.iter().filter(|x| x.action == Action::Create).all(|x| x.at.to_string() == "2026-12-08T01:00:00Z"));
        assert!(up.iter().filter(|x| x.action == Action::Clean).all(|x| x.at.to_string() == "2026-12-07T02:00:00Z"));
        let (at, slots) = s.next(now).unwrap();
        assert_eq!(at.to_string(), "2026-12-08T02:00:00Z");
        assert_eq!(slots.len(), 2);
        assert!(s.slot_key(&slots[0]).starts_with("slot:dep:clean-backups:"));

        // RDS creates at 01:30 instead; nobody cleans EBS.
        let s = s
            .with_override(Action::Create, ResourceKind::Rds, Some("30 1 * * *".parse().unwrap()), true)
            .with_override(Action::Clean, ResourceKind::Ebs, None, true);
        let (at, slots) = s.next("2026-12-08T01:10:00Z".parse().unwrap()).unwrap();
        assert_eq!((at.to_string().as_str(), slots.len()), ("2026-12-08T01:30:00Z", 1));
        assert_eq!(slots[0].kind, ResourceKind::Rds);
        let (at, slots) = s.next("2026-12-08T01:40:00Z".parse().unwrap()).unwrap();
        assert_eq!((at.to_string().as_str(), slots.len()), ("2026-12-08T02:00:00Z", 1), "only rds cleans");
    }

    /// Slots fire on the actor's timers at the clock's times: a catch-up slot at start, the
    /// next at 01:00 after 30 simulated seconds, and one an hour later — on paused time, so
    /// the test waits for no timer.
    #[test]
    fn slots_fire_on_time_under_paused_time() {
        use crate::engine::TokioClock;
        use crate::testkit::{FakeControl, MemoryLeases, RecordingNotifier};
        use actix::Actor;

        let fake = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-east-1"));
        fake.add_resource("vol-a", &[("bunker:create_backup", "true")]);
        let notifier = Arc::new(RecordingNotifier::default());
        let runner = Arc::new(Runner::new(
            "123456789012".into(),
            ResourceKind::Ebs,
            vec![fake.clone()],
            notifier,
            Arc::new(bunker_protocol::config::Resolved::new(defaults()).unwrap()),
        ));
        let sys = actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
        });
        let wall = std::time::Instant::now();
        let f = fake.clone();
        let counts = sys.block_on(async move {
            let clock = Arc::new(TokioClock::starting_at("2037-01-05T00:59:30Z".parse().unwrap()));
            let replicator = crate::engine::JobActor::new(
                Arc::new(NoWork),
                Duration::from_secs(60),
                Arc::default(),
                crate::engine::Alerts::new(Arc::new(RecordingNotifier::default()), None),
            )
            .start();
            let runners = HashMap::from([(ResourceKind::Ebs, KindRunners { create: runner.clone(), clean: runner })]);
            let exec = Executor::new(runners, replicator.recipient(), Arc::default()).with_clock(clock);
            let schedule = Scheduler::new(
                vec![(Action::Create, "0 * * * *".parse().unwrap())],
                vec![ResourceKind::Ebs],
                "d".into(),
            );
            let leases = Arc::new(MemoryLeases::default());
            let _actor = SchedulerActor::new(schedule, Arc::new(exec), leases, "me".into(), None).start();
            let mut counts = vec![];
            for wait in [1, 30, 3600] {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                counts.push(f.backup_ids().len());
            }
            counts
        });
        assert_eq!(counts, [1, 2, 3], "catch-up at start, 01:00, 02:00");
        assert!(wall.elapsed() < Duration::from_secs(10), "no real waiting: {:?}", wall.elapsed());
    }

    /// A workflow with nothing to do (new backups are handed to it and end at once).
    struct NoWork;

    #[async_trait::async_trait]
    impl crate::engine::Workflow for NoWork {
        type Key = BackupRef;
        const NAME: &'static str = "none";
        async fn pass(&self, _b: &BackupRef) -> (crate::engine::Pass, Vec<Entry>) {
            (crate::engine::Pass::Done, vec![])
        }
        async fn owned(&self, _k: Option<ResourceKind>) -> Result<Vec<BackupRef>, PortError> {
            Ok(vec![])
        }
        fn gave_up_entry(&self, _b: &BackupRef, _r: &str) -> Option<Entry> {
            None
        }
    }
}
