//! `bunker serve`: builds the supervision tree, serves `/healthz` and `/metrics`, and shuts
//! down in order on SIGTERM / SIGINT.
//!
//! ```text
//! System (multi-thread tokio runtime)
//! ├── FailureReporter          logs + error topic for every restart / caught panic
//! ├── supervise("replicator")  JobActor<Replicator>: one job per backup; timers re-check
//! ├── supervise("reconciler")  scan at start + every serve.reconcile_interval → Run(backup)
//! ├── supervise("exporter")    JobActor<Exports>: queue `export` commands, `export.to`
//! ├── supervise("vault-exporter") JobActor<VaultExports>: recovery points of export.vaults
//! ├── supervise("vault-reconciler") lists export.vaults at start + every reconcile_interval
//! ├── supervise("volume-exporter") JobActor<VolumeFiles>: XFS/Btrfs through a temporary volume
//! ├── supervise("volume-sweeper")  sweeps expired temporary volumes (export.mount only)
//! ├── supervise("scheduler")   cron slots (leased) + queue commands → Executor → Runner
//! └── WatcherActor             SQS long-poll task (restarted on panic) → Run / RunCommand
//! ```
//!
//! Each `supervise`d actor is re-created from its factory after a panic (counted, reported,
//! with backoff); the others hold its relay, whose address survives the restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{anyhow, Context as _, Result};
use bunker_actors::engine::{
    self, supervise, Alerts, Backoff, JobActor, Reconciler, ReconcilerActor, StopReconciling, Supervised,
};
use bunker_actors::metrics::Metrics;
use bunker_actors::ports::{Leases, Notifier};
use bunker_actors::puller::Puller;
use bunker_actors::replicator::{Replicator, ReplicatorActor};
use bunker_actors::scheduler::{self, Action, Executor, GetRunning, KindRunners, SchedulerActor, StopSchedule};
use bunker_actors::stream::export_job::{Exports, OwnedBackups};
use bunker_actors::stream::Tuning;
use bunker_actors::system::{FailureReporter, ReportFailure};
use bunker_actors::vault_export::VaultExports;
use bunker_actors::volume_files::{VolumeFiles, VolumeKey};
use bunker_actors::watcher::{GetInFlight, StopIntake, Watcher, WatcherActor};
use bunker_actors::Runner;
use bunker_protocol::config::{Config, Resolved};
use bunker_protocol::ResourceKind;
use tracing::{info, warn};

use crate::aws::Aws;
use crate::services::{self, all_regions, holder_id, puller, replicator};

pub(crate) fn state_dir(cfg: &Config) -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
        return PathBuf::from(d); // systemd's StateDirectory=
    }
    let base = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    // `{account}` / `{region}` placeholders make no directory names worth having.
    let name = cfg.deployment.clone().unwrap_or_else(|| cfg.name.clone()).replace(['{', '}'], "");
    base.join(".local/state/bunker").join(name)
}

/// How supervised actors come back after a panic: after 1 s, 2 s, 4 s … (at most a minute,
/// up to half a second of jitter); the sixth panic in a row leaves the actor stopped, and
/// `/healthz` failing, for the operator (systemd does not restart a process that still
/// answers, so the health check must say it).
pub const RESTARTS: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
    jitter: Duration::from_millis(500),
    max_retries: 5,
};

/// What every part of the tree is built from.
struct Parts<'a> {
    aws: &'a Aws,
    settings: &'a Arc<Resolved>,
    cfg: &'a Config,
    regions: &'a [String],
    account: String,
    holder: String,
    metrics: Arc<Metrics>,
    leases: Arc<dyn Leases>,
    /// One SNS notifier (its clients are made per topic region) for the reporter, the
    /// runners and the puller's alerts.
    notifier: Arc<dyn Notifier>,
    failures: Recipient<ReportFailure>,
}

/// The running tree: the supervised actors and the watcher.
struct Tree {
    replicator: Supervised<ReplicatorActor>,
    reconciler: Supervised<ReconcilerActor<Replicator>>,
    scheduler: Supervised<SchedulerActor>,
    exporter: Supervised<JobActor<Exports>>,
    /// With `export.retention_types`: reconciliation of the exporter (own backups).
    export_scan: Option<Supervised<ReconcilerActor<Exports>>>,
    puller: Option<Pulls>,
    vaults: Option<VaultPart>,
    /// With `export.mount`: the restore actor and the sweep of its temporary volumes.
    volumes: Option<VolumePart>,
    watcher: Option<(Arc<Watcher>, Addr<WatcherActor>)>,
}

/// The data-bunker pull (with `source_accounts`): its logic and its supervised job actor.
type Pulls = (Arc<Puller>, Supervised<JobActor<Puller>>);

/// The vault exports (with `export.vaults`): logic, job actor, and its reconciler.
type VaultPart = (Arc<VaultExports>, Supervised<JobActor<VaultExports>>, Supervised<ReconcilerActor<VaultExports>>);

/// The restore actor (with `export.mount`): job actor, and the reconciler whose scans sweep
/// expired temporary volumes.
type VolumePart = (Supervised<JobActor<VolumeFiles>>, Supervised<ReconcilerActor<VolumeFiles>>);

/// Records this install under its deployment id in the lease table; another install's record
/// with a different configuration is reported (log and error topic) — `bunker doctor` names it
/// as a FAIL. A lease table that cannot be read here is left to the leases' own errors.
async fn check_deployment(
    aws: &Aws,
    table: &str,
    account: &str,
    regions: &[String],
    cfg: &bunker_protocol::config::Config,
    reporter: &Addr<FailureReporter>,
) {
    let id = cfg.deployment_id(account, regions.first().map(String::as_str).unwrap_or_default());
    let now = jiff::Timestamp::now();
    match crate::doctor::record_install(aws, table, &id, cfg, now).await {
        Ok((mine, found)) => {
            let row = bunker_protocol::doctor::deployment_row(&id, &mine, found.as_ref(), now);
            if row.status != bunker_protocol::doctor::Status::Ok {
                warn!(deployment = %id, detail = %row.detail, "deployment id shared with another configuration");
                let message = format!("{}; {}", row.detail, row.fix.unwrap_or_default());
                if reporter.send(ReportFailure { actor: "serve", message }).await.is_err() {
                    warn!("failure reporter stopped before the deployment clash was reported");
                }
            }
        }
        Err(e) => warn!(deployment = %id, error = %e, "cannot record this install in the lease table"),
    }
}

/// Refreshes this install's record every `INSTALL_RECORD_REFRESH_MINUTES`, so that it stays
/// fresh while this instance runs and lapses within the hour once it is gone (a replaced
/// instance is then no clash for its successor). The first refresh is the start's check.
fn refresh_install(
    aws: &Aws,
    table: &str,
    account: &str,
    regions: &[String],
    cfg: &bunker_protocol::config::Config,
) -> tokio::task::JoinHandle<()> {
    let (aws, table, cfg) = (aws.clone(), table.to_string(), cfg.clone());
    let id = cfg.deployment_id(account, regions.first().map(String::as_str).unwrap_or_default());
    tokio::spawn(async move {
        let minutes = bunker_protocol::doctor::INSTALL_RECORD_REFRESH_MINUTES;
        let mut every = tokio::time::interval(Duration::from_secs(60 * minutes));
        every.tick().await; // immediate: the start's check records it
        loop {
            every.tick().await;
            let now = jiff::Timestamp::now();
            if let Err(e) = crate::doctor::record_install(&aws, &table, &id, &cfg, now).await {
                warn!(deployment = %id, error = %e, "cannot refresh this install's record in the lease table");
            }
        }
    })
}

/// Runs the service until SIGTERM / SIGINT. Returns after an orderly shutdown.
pub async fn serve(aws: &Aws, settings: Arc<Resolved>, regions: Vec<String>) -> Result<()> {
    let cfg = &settings.config;
    if !cfg.export_vaults.is_empty() && cfg.export_to.is_none() {
        return Err(anyhow!("export.vaults is set but export.to is not: set export.to = \"s3://bucket/prefix\" (where the recovery points' archives go)"));
    }
    if cfg.export_mount {
        crate::mounted::check_can_mount("export.mount = true")?;
    }
    let account = aws.account_id().await.context("cannot identify the AWS account (check credentials)")?;
    let holder = holder_id();
    let metrics = Arc::new(Metrics::default());
    let notifier = aws.notifier();
    let reporter = FailureReporter::new(notifier.clone(), cfg.error_sns_topic.clone()).start();
    let leases: Arc<dyn Leases> = match &cfg.serve.lease_table {
        Some(t) => aws.leases(t.clone()),
        None => {
            let path = state_dir(cfg).join("leases.json");
            info!(path = %path.display(), "leases in a local file (set serve.lease_table to run several instances)");
            crate::leases::FileLeases::reporting(path, metrics.clone(), reporter.clone().recipient())
        }
    };
    let refresh = cfg.serve.lease_table.as_ref().map(|table| refresh_install(aws, table, &account, &regions, cfg));
    if let Some(table) = &cfg.serve.lease_table {
        check_deployment(aws, table, &account, &regions, cfg, &reporter).await;
    }
    // Listen first: a bad address is a start-up error, before any work.
    let listener = tokio::net::TcpListener::bind(&cfg.serve.listen)
        .await
        .with_context(|| format!("serve.listen {}: cannot listen there (pick another HOST:PORT)", cfg.serve.listen))?;
    let addr = listener.local_addr()?;
    println!("bunker serve: listening on {addr}");
    info!(%addr, account = %account, holder = %holder, "bunker serve starting");

    let failures = reporter.clone().recipient();
    let parts = Parts {
        aws,
        settings: &settings,
        cfg,
        regions: &regions,
        account,
        holder,
        metrics,
        leases,
        notifier,
        failures,
    };
    let tree = Tree::start(&parts);
    let health = Arc::new(bunker_actors::health::Health::default());
    tree.watch(&health);
    watch_actor(&health, "failure-reporter", &reporter);
    let calls = aws.call_health();
    health.watch("aws", move || calls.check());
    let http = tokio::spawn(serve_http(listener, parts.metrics.clone(), health.clone()));

    wait_for_signal().await?;
    info!("shutting down: intake stopped, finishing in-flight work");
    tree.shutdown(cfg.serve.shutdown_deadline.unsigned_abs()).await;
    if let Some(task) = refresh {
        task.abort();
    }
    http.abort();
    Ok(())
}

impl Tree {
    /// Starts the actors in dependency order: replication, reconciliation, exports,
    /// scheduling, then the watcher that feeds them.
    fn start(p: &Parts<'_>) -> Tree {
        let kinds = &p.cfg.serve.kinds;
        if p.cfg.replication.dr_regions.len() > 1 {
            for k in kinds.iter().filter(|k| !k.copies_per_backup()) {
                warn!(kind = %k, destination = %p.cfg.replication.dr_regions[0], "dr_regions: a cluster copies its snapshots to one region, the first listed");
            }
        }
        let logic = Arc::new(replicator(
            p.aws,
            &p.account,
            p.cfg,
            p.regions,
            kinds,
            p.leases.clone(),
            &p.holder,
            p.metrics.clone(),
        ));
        let check = p.cfg.serve.check_interval.unsigned_abs();
        let replicator = {
            let (l, m, a) = (logic.clone(), p.metrics.clone(), logic.alerts());
            let make = move || ReplicatorActor::new(l.clone(), check, m.clone(), a.clone());
            supervise("replicator", make, RESTARTS, p.metrics.clone(), Some(p.failures.clone()))
        };
        let reconciler = {
            let scan = Arc::new(Reconciler::new(logic.clone(), replicator.recipient(), kinds.clone()));
            let every = p.cfg.serve.reconcile_interval.unsigned_abs();
            let make = move || ReconcilerActor::new(scan.clone(), every);
            supervise("reconciler", make, RESTARTS, p.metrics.clone(), Some(p.failures.clone()))
        };
        let volumes = start_volumes(p);
        let mount = volumes.as_ref().map(|(jobs, _)| jobs.recipient());
        let (exporter, export_scan) = start_exporter(p, mount.clone());
        let puller = start_puller(p);
        let scheduler = start_scheduler(p, executor(p, (&replicator, logic), puller.as_ref()), &reconciler, &exporter);
        let vaults = start_vault_exports(p, mount);
        let watcher = start_watcher(p, &replicator, &scheduler, &exporter, vaults.as_ref());
        Tree { replicator, reconciler, scheduler, exporter, export_scan, puller, vaults, volumes, watcher }
    }

    /// `/healthz` checks each actor (and the watcher's poll loop).
    fn watch(&self, health: &bunker_actors::health::Health) {
        watch_supervised(health, "replicator", &self.replicator);
        watch_supervised(health, "reconciler", &self.reconciler);
        watch_supervised(health, "scheduler", &self.scheduler);
        watch_supervised(health, "exporter", &self.exporter);
        if let Some(scan) = &self.export_scan {
            watch_supervised(health, "export-reconciler", scan);
        }
        if let Some((_, jobs)) = &self.puller {
            watch_supervised(health, "puller", jobs);
        }
        if let Some((_, jobs, scan)) = &self.vaults {
            watch_supervised(health, "vault-exporter", jobs);
            watch_supervised(health, "vault-reconciler", scan);
        }
        if let Some((jobs, scan)) = &self.volumes {
            watch_supervised(health, "volume-exporter", jobs);
            watch_supervised(health, "volume-sweeper", scan);
        }
        if let Some((logic, actor)) = &self.watcher {
            let logic = logic.clone();
            health.watch("watcher", move || logic.health());
            watch_actor(health, "watcher-actor", actor);
        }
    }

    /// Stops intake (queue, schedule, reconciliation, new jobs), then waits for in-flight
    /// messages, runs and passes, up to `deadline`.
    async fn shutdown(&self, deadline: Duration) {
        // A stopped actor has nothing to stop: a mailbox error here is fine.
        if let Some((_, w)) = &self.watcher {
            w.send(StopIntake).await.unwrap_or_default();
        }
        if let Some(s) = self.scheduler.addr() {
            s.send(StopSchedule).await.unwrap_or_default();
        }
        if let Some(r) = self.reconciler.addr() {
            r.send(StopReconciling).await.unwrap_or_default();
        }
        if let Some(r) = self.vaults.as_ref().and_then(|(_, _, scan)| scan.addr()) {
            r.send(StopReconciling).await.unwrap_or_default();
        }
        if let Some(r) = self.export_scan.as_ref().and_then(Supervised::addr) {
            r.send(StopReconciling).await.unwrap_or_default();
        }
        if let Some(r) = self.volumes.as_ref().and_then(|(_, scan)| scan.addr()) {
            r.send(StopReconciling).await.unwrap_or_default();
        }
        for (drain, _) in self.job_actors() {
            drain.send(engine::Drain).await.unwrap_or_default();
        }
        let deadline = tokio::time::Instant::now() + deadline;
        loop {
            let (messages, runs, passes) = self.in_flight().await;
            if messages == 0 && runs == 0 && passes == 0 {
                info!("in-flight work finished");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                // Nothing is lost: unfinished messages come back from the queue, and the next
                // start's reconciliation finishes every copy and share from AWS state.
                warn!(messages, runs, passes, "shutdown deadline reached; unfinished work resumes after restart");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (queue messages being handled, scheduled or commanded runs, job passes running).
    async fn in_flight(&self) -> (usize, usize, usize) {
        let messages = match &self.watcher {
            Some((_, w)) => w.send(GetInFlight).await.unwrap_or(0),
            None => 0,
        };
        let runs = match self.scheduler.addr() {
            Some(s) => s.send(GetRunning).await.unwrap_or(0),
            None => 0,
        };
        let mut passes = 0;
        for (_, running) in self.job_actors() {
            passes += running.send(engine::GetRunning).await.unwrap_or(0);
        }
        (messages, runs, passes)
    }

    /// Every running job actor (replication, exports, pulls), to drain and to count.
    fn job_actors(&self) -> Vec<(Recipient<engine::Drain>, Recipient<engine::GetRunning>)> {
        fn both<W: engine::Workflow>(
            a: Addr<JobActor<W>>,
        ) -> (Recipient<engine::Drain>, Recipient<engine::GetRunning>) {
            (a.clone().recipient(), a.recipient())
        }
        let mut all: Vec<_> = self.replicator.addr().into_iter().map(both).collect();
        all.extend(self.exporter.addr().map(both));
        all.extend(self.puller.as_ref().and_then(|(_, p)| p.addr()).map(both));
        all.extend(self.vaults.as_ref().and_then(|(_, v, _)| v.addr()).map(both));
        all.extend(self.volumes.as_ref().and_then(|(v, _)| v.addr()).map(both));
        all
    }
}

/// The executor: each kind's create and clean runners, the puller with `source_accounts`;
/// new backups go to `replicator` (its actor, and its logic told first).
fn executor(
    p: &Parts<'_>,
    replicator: (&Supervised<ReplicatorActor>, Arc<Replicator>),
    pulls: Option<&Pulls>,
) -> Arc<Executor> {
    let mut runners = HashMap::new();
    let notifier = p.notifier.clone();
    for &kind in &p.cfg.serve.kinds {
        let create_targets = p.regions.iter().map(|r| p.aws.backup_control(kind, r)).collect();
        let clean_targets = all_regions(p.regions, p.cfg).iter().map(|r| p.aws.backup_control(kind, r)).collect();
        let events = services::outcomes(p.aws, p.cfg, p.regions, Some(p.metrics.clone()));
        let create = Runner::new(p.account.clone(), kind, create_targets, notifier.clone(), p.settings.clone())
            .with_outcomes(events.clone());
        let clean = Runner::new(p.account.clone(), kind, clean_targets, notifier.clone(), p.settings.clone())
            .with_outcomes(events);
        runners.insert(kind, KindRunners { create: Arc::new(create), clean: Arc::new(clean) });
    }
    let mut executor = Executor::new(runners, replicator.0.recipient(), p.metrics.clone()).telling(replicator.1);
    if let Some(pulls) = pulls {
        executor = executor.with_puller(pulls.0.clone(), pulls.1.recipient());
    }
    Arc::new(executor)
}

/// The schedules: create, clean and (with `source_accounts`) pull, with per-kind overrides.
fn schedule(p: &Parts<'_>) -> scheduler::Scheduler {
    let (cfg, kinds) = (p.cfg, &p.cfg.serve.kinds);
    let pulls = !cfg.replication.source_accounts.is_empty();
    let mut schedules = Vec::new();
    if let Some(c) = cfg.serve.schedule_pull.as_ref().filter(|_| pulls) {
        schedules.push((Action::Pull, c.clone()));
    }
    if let Some(c) = &cfg.serve.schedule_create {
        schedules.push((Action::Create, c.clone()));
    }
    if let Some(c) = &cfg.serve.schedule_clean {
        schedules.push((Action::Clean, c.clone()));
    }
    let deployment = cfg.deployment_id(&p.account, &p.regions[0]);
    let mut schedule = scheduler::Scheduler::new(schedules, kinds.clone(), deployment);
    for (kind, action, cron) in &cfg.serve.schedule_per_kind {
        let action = match *action {
            "create" => Action::Create,
            "clean" => Action::Clean,
            _ => Action::Pull,
        };
        let served = kinds.contains(kind) && (action != Action::Pull || pulls);
        schedule = schedule.with_override(action, *kind, cron.clone(), served);
    }
    schedule
}

/// The puller and its job actor, when this account pulls (`source_accounts`).
fn start_puller(p: &Parts<'_>) -> Option<Pulls> {
    if p.cfg.replication.source_accounts.is_empty() {
        return None;
    }
    let logic = Arc::new(puller(p.aws, &p.account, p.cfg, p.regions, &p.cfg.serve.kinds, p.metrics.clone()));
    let (l, m, check) = (logic.clone(), p.metrics.clone(), p.cfg.serve.check_interval.unsigned_abs());
    let alerts = Alerts::new(p.notifier.clone(), p.cfg.error_sns_topic.clone());
    let make = move || JobActor::new(l.clone(), check, m.clone(), alerts.clone());
    Some((logic, supervise("puller", make, RESTARTS, p.metrics.clone(), Some(p.failures.clone()))))
}

/// Exports: queue `export` commands and, with `export.to`, every EBS backup an event
/// announces; with `export.retention_types` too, a reconciler that finds this deployment's
/// own backups of those types not exported yet, at start and every `serve.reconcile_interval`.
fn start_exporter(
    p: &Parts<'_>,
    mount: Option<Recipient<engine::Run<VolumeKey>>>,
) -> (Supervised<JobActor<Exports>>, Option<Supervised<ReconcilerActor<Exports>>>) {
    let mut targets = services::ServiceExports::new(p.aws.clone(), p.cfg).with_metrics(p.metrics.clone());
    if let Some(m) = mount {
        targets = targets.with_volumes(m);
    }
    let targets = Arc::new(targets);
    let to = p.cfg.export_to.clone();
    let events = services::outcomes(p.aws, p.cfg, p.regions, Some(p.metrics.clone()));
    let mut logic =
        Exports::new(targets, to, Tuning::default(), p.metrics.clone()).with_outcomes(events, p.account.clone());
    if !p.cfg.export_retention_types.is_empty() {
        logic = logic.with_owned(OwnedBackups {
            controls: p.regions.iter().map(|r| p.aws.backup_control(ResourceKind::Ebs, r)).collect(),
            deployments: p.regions.iter().map(|r| (r.clone(), p.cfg.deployment_id(&p.account, r))).collect(),
            types: p.cfg.export_retention_types.clone(),
        });
    }
    let logic = Arc::new(logic);
    let (l, m, check) = (logic.clone(), p.metrics.clone(), p.cfg.serve.check_interval.unsigned_abs());
    let alerts = Alerts::new(p.notifier.clone(), p.cfg.error_sns_topic.clone());
    let make = move || JobActor::new(l.clone(), check, m.clone(), alerts.clone());
    let jobs = supervise("exporter", make, RESTARTS, p.metrics.clone(), Some(p.failures.clone()));
    if !bunker_actors::engine::Workflow::enabled(logic.as_ref()) {
        return (jobs, None);
    }
    let scan = Arc::new(Reconciler::new(logic, jobs.recipient(), vec![ResourceKind::Ebs]));
    let every = p.cfg.serve.reconcile_interval.unsigned_abs();
    let make = move || ReconcilerActor::new(scan.clone(), every);
    let reconciler = supervise("export-reconciler", make, RESTARTS, p.metrics.clone(), Some(p.failures.clone()));
    (jobs, Some(reconciler))
}

/// The vault exports, when `export.vaults` is set: a job per recovery point, and a
/// reconciler that lists the vaults at start and every `serve.reconcile_interval`.
fn start_vault_exports(p: &Parts<'_>, mount: Option<Recipient<engine::Run<VolumeKey>>>) -> Option<VaultPart> {
    let (metrics, notifier) = (p.metrics.clone(), p.notifier.clone());
    let logic = Arc::new(services::vault_exports(p.aws, &p.account, p.cfg, p.regions, metrics, notifier, mount)?);
    let (l, m, check) = (logic.clone(), p.metrics.clone(), p.cfg.serve.check_interval.unsigned_abs());
    let alerts = Alerts::new(p.notifier.clone(), p.cfg.error_sns_topic.clone());
    let make = move || JobActor::new(l.clone(), check, m.clone(), alerts.clone());
    let jobs = supervise("vault-exporter", make, RESTARTS, p.metrics.clone(), Some(p.failures.clone()));
    let scan = Arc::new(Reconciler::new(logic.clone(), jobs.recipient(), vec![]));
    let every = p.cfg.serve.reconcile_interval.unsigned_abs();
    let make = move || ReconcilerActor::new(scan.clone(), every);
    let reconciler = supervise("vault-reconciler", make, RESTARTS, p.metrics.clone(), Some(p.failures.clone()));
    Some((logic, jobs, reconciler))
}

/// The restore actor, when `export.mount` is on: file-level exports of XFS and Btrfs
/// through a temporary volume on this instance; its sweeper removes expired temporary
/// volumes at start and every `serve.reconcile_interval`.
fn start_volumes(p: &Parts<'_>) -> Option<VolumePart> {
    if !p.cfg.export_mount {
        return None;
    }
    let opts =
        crate::archive_cli::ExportOpts { sha256: p.cfg.export_sha256, ..crate::archive_cli::ExportOpts::service("") };
    let host = (opts, Some(p.metrics.clone()));
    let logic = Arc::new(crate::mounted::volume_files(p.aws, &p.account, p.cfg, p.regions, host));
    let (l, m, check) = (logic.clone(), p.metrics.clone(), p.cfg.serve.check_interval.unsigned_abs());
    let alerts = Alerts::new(p.notifier.clone(), p.cfg.error_sns_topic.clone());
    let make = move || JobActor::new(l.clone(), check, m.clone(), alerts.clone());
    let jobs = supervise("volume-exporter", make, RESTARTS, p.metrics.clone(), Some(p.failures.clone()));
    let scan = Arc::new(Reconciler::new(logic, jobs.recipient(), vec![]));
    let every = p.cfg.serve.reconcile_interval.unsigned_abs();
    let make = move || ReconcilerActor::new(scan.clone(), every);
    let sweeper = supervise("volume-sweeper", make, RESTARTS, p.metrics.clone(), Some(p.failures.clone()));
    Some((jobs, sweeper))
}

fn start_scheduler(
    p: &Parts<'_>,
    exec: Arc<Executor>,
    reconciler: &Supervised<ReconcilerActor<Replicator>>,
    exporter: &Supervised<JobActor<Exports>>,
) -> Supervised<SchedulerActor> {
    let (schedule, l, h, rec) = (schedule(p), p.leases.clone(), p.holder.clone(), reconciler.recipient());
    let (x, region, f) = (exporter.recipient(), p.regions[0].clone(), p.failures.clone());
    let make = move || {
        SchedulerActor::new(schedule.clone(), exec.clone(), l.clone(), h.clone(), Some(rec.clone()))
            .with_exporter(x.clone(), region.clone())
            .with_failures(f.clone())
    };
    supervise("scheduler", make, RESTARTS, p.metrics.clone(), Some(p.failures.clone()))
}

/// The watcher, when `serve.queue_url` is set: what the queue may ask for is what the
/// config allows.
fn start_watcher(
    p: &Parts<'_>,
    replicator: &Supervised<ReplicatorActor>,
    scheduler: &Supervised<SchedulerActor>,
    exporter: &Supervised<JobActor<Exports>>,
    vaults: Option<&VaultPart>,
) -> Option<(Arc<Watcher>, Addr<WatcherActor>)> {
    let (cfg, url) = (p.cfg, p.cfg.serve.queue_url.as_ref()?);
    let queue = p.aws.event_queue(url.clone(), cfg.serve.dead_letter_queue_url.clone());
    let visibility = (cfg.serve.check_interval.as_secs() as u32 * 4).clamp(30, 900);
    let mut w = Watcher::new(queue, replicator.recipient(), scheduler.recipient(), p.metrics.clone(), visibility);
    if cfg.export_to.is_some() {
        w = w.with_exports(exporter.recipient());
    }
    if let Some((logic, jobs, _)) = vaults {
        w = w.with_vault_exports(logic.clone(), jobs.recipient());
    }
    w = w.with_allowed(bunker_protocol::events::Allowed {
        kinds: cfg.serve.kinds.clone(),
        regions: p.regions.to_vec(),
        export_targets: cfg.export_to.iter().chain(&cfg.export_allowed_targets).cloned().collect(),
        default_target: cfg.export_to.clone(),
        pull: !cfg.replication.source_accounts.is_empty(),
        clean: cfg.deployment.is_some(),
    });
    let w = Arc::new(w);
    Some((w.clone(), WatcherActor::new(w, Some(p.failures.clone())).start()))
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| anyhow!("cannot watch SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| anyhow!("cannot watch SIGINT: {e}"))?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    Ok(())
}

/// `/healthz` is failing while `addr`'s actor is stopped (a panic in a handler stops it).
fn watch_actor<A: Actor>(health: &bunker_actors::health::Health, name: &'static str, addr: &Addr<A>) {
    let addr = addr.clone();
    health.watch(name, move || if addr.connected() { Ok(()) } else { Err("actor stopped".into()) });
}

/// `/healthz` is failing while `s` has no running actor (restarting, or left stopped).
fn watch_supervised<A: Actor<Context = actix::Context<A>>>(
    health: &bunker_actors::health::Health,
    name: &'static str,
    s: &Supervised<A>,
) {
    let s = s.clone();
    health
        .watch(name, move || if s.connected() { Ok(()) } else { Err("actor stopped (restarting or given up)".into()) });
}

/// `/healthz` (200 or 503, JSON naming each component) and `/metrics` (OpenMetrics), served
/// by axum on the service's tokio runtime.
async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<bunker_actors::health::Health>,
) {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let report = health.report();
                let status = if report.ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                async move { (status, axum::Json(report)) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move { ([(header::CONTENT_TYPE, bunker_actors::metrics::CONTENT_TYPE)], text) }
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: try /healthz or /metrics\n") });
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "http server stopped");
    }
}
