//! `bunker serve`: builds the supervision tree, serves `/healthz` and `/metrics`, and shuts
//! down in order on SIGTERM / SIGINT.
//!
//! ```text
//! System (multi-thread tokio runtime)
//! ├── FailureReporter          logs + error topic for every restart / caught panic
//! ├── supervise("replicator")  JobActor<Replicator>: one job per backup; timers re-check
//! ├── supervise("reconciler")  scan at start + every serve.reconcile_interval → Run(backup)
//! ├── supervise("exporter")    ExporterActor: queue `export` commands, `export.to`
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
use bunker_actors::engine::{self, supervise, Backoff, Reconciler, ReconcilerActor, StopReconciling, Supervised};
use bunker_actors::metrics::Metrics;
use bunker_actors::ports::Leases;
use bunker_actors::replicator::ReplicatorActor;
use bunker_actors::scheduler::{self, Action, Executor, GetRunning, KindRunners, SchedulerActor, StopSchedule};
use bunker_actors::stream::exporter_actor::ExporterActor;
use bunker_actors::stream::Tuning;
use bunker_actors::system::FailureReporter;
use bunker_actors::watcher::{GetInFlight, StopIntake, Watcher, WatcherActor};
use bunker_actors::Runner;
use bunker_protocol::config::{Config, Resolved};
use tracing::{info, warn};

use crate::aws::Aws;
use crate::services::{self, all_regions, holder_id, puller, replicator};

fn state_dir(cfg: &Config) -> PathBuf {
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

/// Runs the service until SIGTERM / SIGINT. Returns after an orderly shutdown.
pub async fn serve(aws: &Aws, settings: Arc<Resolved>, regions: Vec<String>) -> Result<()> {
    let cfg = &settings.config;
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
    let kinds = cfg.serve.kinds.clone();
    let replicable = services::replicable(&kinds);
    if cfg.replication.is_enabled() {
        for k in kinds.iter().filter(|k| !replicable.contains(k)) {
            warn!(kind = %k, "copy and share of this kind are not implemented yet: its backups stay in their region");
        }
    }

    // Listen first: a bad address is a start-up error, before any work.
    let listener = tokio::net::TcpListener::bind(&cfg.serve.listen)
        .await
        .with_context(|| format!("serve.listen {}: cannot listen there (pick another HOST:PORT)", cfg.serve.listen))?;
    let addr = listener.local_addr()?;
    println!("bunker serve: listening on {addr}");
    info!(%addr, account = %account, holder = %holder, "bunker serve starting");

    let logic =
        Arc::new(replicator(aws, &account, cfg, &regions, &replicable, leases.clone(), &holder, metrics.clone()));
    let check = cfg.serve.check_interval.unsigned_abs();
    let failures = reporter.clone().recipient();
    let replicator = {
        let (l, m, a) = (logic.clone(), metrics.clone(), logic.alerts());
        let make = move || ReplicatorActor::new(l.clone(), check, m.clone(), a.clone());
        supervise("replicator", make, RESTARTS, metrics.clone(), Some(failures.clone()))
    };
    let reconciler = {
        let scan = Arc::new(Reconciler::new(logic.clone(), replicator.recipient(), replicable.clone()));
        let every = cfg.serve.reconcile_interval.unsigned_abs();
        let make = move || ReconcilerActor::new(scan.clone(), every);
        supervise("reconciler", make, RESTARTS, metrics.clone(), Some(failures.clone()))
    };

    let mut runners = HashMap::new();
    for &kind in &kinds {
        let create_targets = regions.iter().map(|r| aws.backup_control(kind, r)).collect();
        let clean_targets = all_regions(&regions, cfg).iter().map(|r| aws.backup_control(kind, r)).collect();
        let create = Runner::new(account.clone(), kind, create_targets, notifier.clone(), settings.clone());
        let clean = Runner::new(account.clone(), kind, clean_targets, notifier.clone(), settings.clone());
        runners.insert(kind, KindRunners { create: Arc::new(create), clean: Arc::new(clean) });
    }
    let mut executor = Executor::new(runners, replicator.clone().recipient(), metrics.clone());
    let mut schedules = Vec::new();
    if !cfg.replication.source_accounts.is_empty() {
        executor = executor.with_puller(Arc::new(puller(aws, &account, cfg, &regions, &kinds, metrics.clone())));
        if let Some(c) = &cfg.serve.schedule_pull {
            schedules.push((Action::Pull, c.clone()));
        }
    }
    let executor = Arc::new(executor);
    if let Some(c) = &cfg.serve.schedule_create {
        schedules.push((Action::Create, c.clone()));
    }
    if let Some(c) = &cfg.serve.schedule_clean {
        schedules.push((Action::Clean, c.clone()));
    }
    let deployment = cfg.deployment_id(&account, &regions[0]);
    let mut schedule = scheduler::Scheduler::new(schedules, kinds.clone(), deployment);
    for (kind, action, cron) in &cfg.serve.schedule_per_kind {
        let action = match *action {
            "create" => Action::Create,
            "clean" => Action::Clean,
            _ => Action::Pull,
        };
        let served = kinds.contains(kind) && (action != Action::Pull || !cfg.replication.source_accounts.is_empty());
        schedule = schedule.with_override(action, *kind, cron.clone(), served);
    }
    // Exports (queue `export` commands; with `export.to`, every EBS backup an event announces).
    let exporter = {
        let (aws, m, to) = (aws.clone(), metrics.clone(), cfg.export_to.clone());
        let make = move || {
            ExporterActor::new(Tuning::default(), Some(m.clone()))
                .with_targets(Arc::new(services::ServiceExports::new(aws.clone())), to.clone())
        };
        supervise("exporter", make, RESTARTS, metrics.clone(), Some(failures.clone()))
    };
    let scheduler = {
        let (exec, l, h, rec) = (executor.clone(), leases.clone(), holder.clone(), reconciler.recipient());
        let (x, region, f) = (exporter.recipient(), regions[0].clone(), failures.clone());
        let make = move || {
            SchedulerActor::new(schedule.clone(), exec.clone(), l.clone(), h.clone(), Some(rec.clone()))
                .with_exporter(x.clone(), region.clone())
                .with_failures(f.clone())
        };
        supervise("scheduler", make, RESTARTS, metrics.clone(), Some(failures.clone()))
    };

    let health = Arc::new(bunker_actors::health::Health::default());
    let watcher = cfg.serve.queue_url.as_ref().map(|url| {
        let queue = aws.event_queue(url.clone(), cfg.serve.dead_letter_queue_url.clone());
        let visibility = (cfg.serve.check_interval.as_secs() as u32 * 4).clamp(30, 900);
        let mut w = Watcher::new(queue, replicator.recipient(), scheduler.recipient(), metrics.clone(), visibility);
        if cfg.export_to.is_some() {
            w = w.with_exports(exporter.recipient());
        }
        w = w.with_allowed(bunker_protocol::events::Allowed {
            kinds: kinds.clone(),
            regions: regions.clone(),
            export_targets: cfg.export_to.iter().chain(&cfg.export_allowed_targets).cloned().collect(),
            default_target: cfg.export_to.clone(),
            pull: !cfg.replication.source_accounts.is_empty(),
            clean: cfg.deployment.is_some(),
        });
        let w = Arc::new(w);
        let logic = w.clone();
        health.watch("watcher", move || logic.health());
        WatcherActor::new(w, Some(reporter.clone().recipient())).start()
    });
    watch_supervised(&health, "replicator", &replicator);
    watch_supervised(&health, "reconciler", &reconciler);
    watch_supervised(&health, "scheduler", &scheduler);
    watch_supervised(&health, "exporter", &exporter);
    watch_actor(&health, "failure-reporter", &reporter);
    let calls = aws.call_health();
    health.watch("aws", move || calls.check());
    if let Some(w) = &watcher {
        watch_actor(&health, "watcher-actor", w);
    }

    let http = tokio::spawn(serve_http(listener, metrics.clone(), health.clone()));

    wait_for_signal().await?;
    info!("shutting down: intake stopped, finishing in-flight work");
    // A stopped actor has nothing to stop: a mailbox error here is fine.
    if let Some(w) = &watcher {
        w.send(StopIntake).await.unwrap_or_default();
    }
    if let Some(s) = scheduler.addr() {
        s.send(StopSchedule).await.unwrap_or_default();
    }
    if let Some(r) = reconciler.addr() {
        r.send(StopReconciling).await.unwrap_or_default();
    }
    if let Some(r) = replicator.addr() {
        r.send(engine::Drain).await.unwrap_or_default();
    }
    let deadline = tokio::time::Instant::now() + cfg.serve.shutdown_deadline.unsigned_abs();
    loop {
        let messages = match &watcher {
            Some(w) => w.send(GetInFlight).await.unwrap_or(0),
            None => 0,
        };
        let runs = match scheduler.addr() {
            Some(s) => s.send(GetRunning).await.unwrap_or(0),
            None => 0,
        };
        let passes = match replicator.addr() {
            Some(r) => r.send(engine::GetRunning).await.unwrap_or(0),
            None => 0,
        };
        if messages == 0 && runs == 0 && passes == 0 {
            info!("in-flight work finished");
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            // Nothing is lost: unfinished messages come back from the queue, and the next
            // start's reconciliation finishes every copy and share from AWS state.
            warn!(messages, runs, passes, "shutdown deadline reached; unfinished work resumes after restart");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    http.abort();
    Ok(())
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
