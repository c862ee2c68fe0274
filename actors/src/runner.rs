//! The backup runner: creates backups of selected resources, and cleans up expired ones,
//! for one resource kind across the configured regions of one account.
//!
//! [`Runner`] holds the logic and talks to AWS only through [`BackupControl`] and
//! [`Notifier`]; [`RunnerActor`] is its actix shell.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bunker_protocol::backup::{Backup, Listed, Owner, Ownership, Unreadable};
use bunker_protocol::bus;
use bunker_protocol::config::{self, Config, ConfigError, Resolved, Setting};
use bunker_protocol::events::BackupRef;
use bunker_protocol::report::{Entry, EntryStatus, Operation, OperationEvent, RunReport, OPERATION_SCHEMA};
use bunker_protocol::retention::{self, Action, Candidate, Policy, Reason};
use bunker_protocol::tags::{self, BackupTagInput};
use bunker_protocol::{naming, ResourceKind};
use futures::stream::{self, StreamExt};
use jiff::{SignedDuration, Timestamp};
use tracing::{error, info, warn};

use crate::ports::{BackupControl, CreateRequest, Notifier, PortError, Resource};

/// How many create/delete calls run at once per region. The SDK retries throttling with
/// backoff; 8 keeps well under EC2's and RDS's per-account request-rate buckets while
/// overlapping round trips.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// A run id, unique enough: the run clock plus process id and a per-process counter.
pub fn run_id(now: Timestamp) -> String {
    // Unique per process and run start: the pid and a counter (no second clock read).
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{:x}{:08x}", now.strftime("%Y%m%dT%H%M%SZ"), std::process::id(), nanos)
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run's clock at start (`--now` overrides the host clock).
    pub now: Timestamp,
    /// Change nothing; report what would be done.
    pub dry_run: bool,
    /// Unique id of the run.
    pub run_id: String,
    /// Publish the run report to `status_sns_topic` at the end. `bunker serve` turns this off
    /// for scheduled creates: it publishes one report once the run's copies and shares are
    /// done too.
    pub publish_report: bool,
}

/// A backup with the planner's decision.
#[derive(Debug, Clone)]
pub struct PlannedBackup {
    /// The backup.
    pub backup: Backup,
    /// Keep or delete.
    pub action: Action,
    /// Expiry under the policy in force, where known.
    pub expires_at: Option<Timestamp>,
    /// Why.
    pub reason: Reason,
}

/// What exists in one region and what the clean-up would do with it.
#[derive(Debug, Clone)]
pub struct RegionInventory {
    /// Region.
    pub region: String,
    /// Deployment id in this region.
    pub deployment: String,
    /// Every recognised backup (owned or not) with its decision.
    pub planned: Vec<PlannedBackup>,
    /// Tagged objects whose tags could not be read: left alone.
    pub unreadable: Vec<Unreadable>,
}

/// The inventory across regions.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Regions that answered.
    pub regions: Vec<RegionInventory>,
    /// Regions that could not be listed.
    pub failures: Vec<Entry>,
}

/// Creates and cleans backups of one kind across regions.
pub struct Runner {
    account: String,
    kind: ResourceKind,
    targets: Vec<Arc<dyn BackupControl>>,
    notifier: Arc<dyn Notifier>,
    settings: Arc<Resolved>,
    concurrency: usize,
    outcomes: crate::outcomes::Outcomes,
}

impl Runner {
    /// A runner over `targets` (one per region, all of `kind`) with the run-level `settings`
    /// (defaults < file < env < flags), resolved once by the caller.
    pub fn new(
        account: String,
        kind: ResourceKind,
        targets: Vec<Arc<dyn BackupControl>>,
        notifier: Arc<dyn Notifier>,
        settings: Arc<Resolved>,
    ) -> Runner {
        Runner {
            account,
            kind,
            targets,
            notifier,
            settings,
            concurrency: DEFAULT_CONCURRENCY,
            outcomes: Default::default(),
        }
    }

    /// Puts each created backup and each published run report on the bus (`events.bus`).
    pub fn with_outcomes(mut self, outcomes: crate::outcomes::Outcomes) -> Runner {
        self.outcomes = outcomes;
        self
    }

    /// The run-level configuration.
    pub fn config(&self) -> &Config {
        &self.settings.config
    }

    fn resolve_with(&self, extra: Vec<Setting>) -> Result<Config, ConfigError> {
        self.settings.with(extra)
    }

    /// The configuration in force for a live resource (its tags are the top layer).
    pub fn resource_config(&self, resource: &Resource) -> Result<Config, ConfigError> {
        self.resolve_with(config::tag_settings(&resource.tags, &resource.id, self.settings.config.compat_shelvery)?)
    }

    fn selected<'a>(
        &self,
        resources: &'a [Resource],
        select: Option<String>,
    ) -> impl Iterator<Item = &'a Resource> + 'a {
        let compat = self.settings.config.compat_shelvery;
        resources
            .iter()
            .filter(move |r| tags::is_selected(&r.tags, compat) && select.as_ref().is_none_or(|s| *s == r.id))
    }

    /// Creates one backup of every selected resource in every region.
    pub async fn create_backups(&self, opts: &RunOptions) -> RunReport {
        self.create_backups_of(opts, self.settings.config.select.clone()).await
    }

    /// As [`Runner::create_backups`], narrowed to one resource when `select` is given.
    pub async fn create_backups_of(&self, opts: &RunOptions, select: Option<String>) -> RunReport {
        self.create_and_list(opts, select).await.0
    }

    /// As [`Runner::create_backups_of`], with every backup made: the report keeps at most
    /// `report::MAX_ENTRIES` entries, and a fleet's run makes more backups than that.
    pub async fn create_and_list(&self, opts: &RunOptions, select: Option<String>) -> (RunReport, Vec<BackupRef>) {
        let clock = Instant::now();
        let (collected, entries) = self.create_entries(opts, select).await;
        let made = entries
            .iter()
            .filter(|e| e.operation == Operation::CreateBackup && e.status == EntryStatus::Ok)
            .filter_map(|e| Some(BackupRef { kind: self.kind, region: e.region.clone(), id: e.backup_id.clone()? }))
            .collect();
        (self.finish("create-backups", opts, clock, collected, entries).await, made)
    }

    /// Creates the backups; returns how many resources were selected and an entry for each.
    async fn create_entries(&self, opts: &RunOptions, select: Option<String>) -> (usize, Vec<Entry>) {
        let mut entries = Vec::new();
        let mut collected = 0;
        for target in &self.targets {
            let region = target.region();
            let resources = match target.list_resources().await {
                Ok(r) => r,
                Err(e) => {
                    error!(region, kind = %self.kind, error = %e, "listing resources failed");
                    entries.push(discover_failure(region, &e));
                    continue;
                }
            };
            let deployment = self.settings.config.deployment_id(&self.account, region);
            let selected: Vec<&Resource> = self.selected(&resources, select.clone()).collect();
            collected += selected.len();
            let results: Vec<Entry> = stream::iter(selected)
                .map(|r| self.create_one(target.as_ref(), r, &deployment, opts))
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            entries.extend(results);
        }
        if let Some(id) = &select {
            if collected == 0 {
                entries.push(Entry {
                    message: Some(format!(
                        "select: no resource {id} tagged {}=true in {}",
                        tags::CREATE_BACKUP,
                        self.region_list().join(", ")
                    )),
                    resource_id: Some(id.clone()),
                    ..entry(Operation::Discover, EntryStatus::Error, &self.region_list().join(","))
                });
            }
        }
        (collected, entries)
    }

    async fn create_one(&self, target: &dyn BackupControl, r: &Resource, deployment: &str, opts: &RunOptions) -> Entry {
        let region = target.region();
        let base =
            Entry { resource_id: Some(r.id.clone()), ..entry(Operation::CreateBackup, EntryStatus::Error, region) };
        let cfg = match self.resource_config(r) {
            Ok(c) => c,
            Err(e) => {
                warn!(region, resource_id = %r.id, error = %e, "resource skipped: configuration error");
                return Entry { message: Some(e.to_string()), ..base };
            }
        };
        let Some(retention) = cfg.policy().type_for_creation(opts.now, cfg.retention.as_ref()) else {
            let why = match &cfg.retention {
                Some(t @ retention::RetentionType::Custom(_)) => format!("retention type {t} is not defined"),
                _ => "keep_daily is 0 and no higher retention type applies".to_string(),
            };
            return Entry { status: EntryStatus::Skipped, message: Some(why), ..base };
        };
        let base = Entry { retention: Some(retention.to_string()), ..base };
        if let Some(why) = &r.not_ready {
            return Entry { status: EntryStatus::Skipped, message: Some(format!("not ready: {why}")), ..base };
        }
        let name = naming::backup_name(&r.id, r.tags.get("Name").map(String::as_str), opts.now, retention.as_str());
        let overrides = cfg.overrides();
        let (backup_tags, dropped) = tags::backup_tags(&BackupTagInput {
            name: &name,
            deployment,
            kind: self.kind,
            source: &r.id,
            created_at: opts.now,
            retention: retention.as_str(),
            overrides: &overrides,
            resource_tags: &r.tags,
            copy_tags: cfg.copy_tags,
            exclude: &cfg.exclude_tag_keys,
        });
        if !dropped.is_empty() {
            warn!(region, resource_id = %r.id, dropped = ?dropped, "resource tags not copied: AWS allows 50 tags per backup");
        }
        let base = Entry { backup_name: Some(name.clone()), ..base };
        if opts.dry_run {
            return Entry { status: EntryStatus::Planned, ..base };
        }
        let cluster_copy = bunker_protocol::replication::cluster_copy(self.kind, &cfg, region, deployment);
        let request =
            CreateRequest { resource: r.clone(), name, tags: backup_tags, rds_mode: cfg.rds_backup_mode, cluster_copy };
        match target.create_backup(&request).await {
            Ok(created) => {
                info!(region, resource_id = %r.id, backup_id = %created.id, retention = %retention, "backup created");
                Entry { status: EntryStatus::Ok, backup_id: Some(created.id), message: created.note, ..base }
            }
            Err(e) => {
                error!(region, resource_id = %r.id, error = %e, "backup failed");
                Entry { message: Some(e.to_string()), ..base }
            }
        }
    }

    /// Lists every region's backups and decides what the clean-up at `now` would do.
    pub async fn inventory(&self, now: Timestamp) -> Inventory {
        let mut inv = Inventory::default();
        for target in &self.targets {
            match self.region_inventory(target.as_ref(), now).await {
                Ok(r) => inv.regions.push(r),
                Err(e) => {
                    error!(region = target.region(), kind = %self.kind, error = %e, "listing backups failed");
                    inv.failures.push(discover_failure(target.region(), &e));
                }
            }
        }
        inv
    }

    async fn region_inventory(&self, target: &dyn BackupControl, now: Timestamp) -> Result<RegionInventory, PortError> {
        let region = target.region();
        let compat = self.settings.config.compat_shelvery;
        let (resources, listed) = futures::join!(target.list_resources(), target.list_backups(compat));
        let (resources, listed) = (resources?, listed?);
        let deployment = self.settings.config.deployment_id(&self.account, region);
        let own = Ownership { deployment: &deployment, compat_shelvery: compat };
        let mut backups = Vec::new();
        let mut unreadable = Vec::new();
        for l in &listed {
            let listed = Listed {
                id: &l.id,
                kind: self.kind,
                region,
                account: &self.account,
                tags: &l.tags,
                available: l.available,
                aws_created_at: l.aws_created_at,
                parts: l.parts.clone(),
            };
            match Backup::from_listed(&listed, &own) {
                Ok(Some(b)) if self.settings.config.select.as_ref().is_none_or(|s| *s == b.source) => backups.push(b),
                Ok(_) => {}
                Err(e) => {
                    warn!(region, error = %e, "backup left alone: unreadable tags");
                    unreadable.push(e);
                }
            }
        }
        let live: HashMap<&str, &Resource> = resources.iter().map(|r| (r.id.as_str(), r)).collect();
        // One policy per live source (its tags are the top layer); a backup whose source is
        // gone uses the overrides recorded on it.
        let mut live_policy: HashMap<&str, Result<Policy, String>> = HashMap::new();
        let mut policies: Vec<Result<Policy, String>> = Vec::with_capacity(backups.len());
        for b in &backups {
            let p = match live.get(b.source.as_str()) {
                Some(r) => live_policy
                    .entry(r.id.as_str())
                    .or_insert_with(|| self.resource_config(r).map(|c| c.policy()).map_err(|e| e.to_string()))
                    .clone(),
                None => self
                    .resolve_with(config::recorded_settings(&b.id, &b.overrides))
                    .map(|c| c.policy())
                    .map_err(|e| e.to_string()),
            };
            policies.push(p);
        }
        let candidates: Vec<Candidate<'_>> = backups
            .iter()
            .zip(&policies)
            .map(|(b, p)| Candidate {
                backup: b,
                policy: p.as_ref().map_err(String::as_str),
                source_exists: live.contains_key(b.source.as_str()),
            })
            .collect();
        // DR copies are kept by `keep_*_dr` (default: the source's keep counts), pulled copies
        // by `keep_*_pulled` (default: this account's).
        let r = &self.settings.config.replication;
        let dr_policies: Vec<Option<Result<Policy, String>>> = backups
            .iter()
            .zip(&policies)
            .map(|(b, p)| {
                let adjust: fn(&bunker_protocol::config::Replication, _) -> _ = match (&b.copy_of, &b.pulled_from) {
                    (Some(_), _) => bunker_protocol::config::Replication::dr_keep,
                    (None, Some(_)) => bunker_protocol::config::Replication::pulled_keep,
                    (None, None) => return None,
                };
                Some(p.clone().map(|mut p| {
                    p.keep = adjust(r, p.keep);
                    p
                }))
            })
            .collect();
        let candidates: Vec<Candidate<'_>> = candidates
            .into_iter()
            .zip(&dr_policies)
            .map(|(c, dr)| match dr {
                Some(p) => Candidate { policy: p.as_ref().map_err(String::as_str), ..c },
                None => c,
            })
            .collect();
        let decisions = retention::plan(now, &candidates);
        let planned = backups
            .into_iter()
            .zip(decisions)
            .map(|(backup, d)| PlannedBackup { backup, action: d.action, expires_at: d.expires_at, reason: d.reason })
            .collect();
        Ok(RegionInventory { region: region.to_string(), deployment, planned, unreadable })
    }

    /// Deletes every owned backup whose expiry has passed (never the newest of a live
    /// resource, never another deployment's).
    pub async fn clean_backups(&self, opts: &RunOptions) -> RunReport {
        let clock = Instant::now();
        let inv = self.inventory(opts.now).await;
        let mut entries = inv.failures;
        let mut collected = 0;
        for (target, region) in inv.regions.iter().filter_map(|r| Some((self.target(&r.region)?, r))) {
            collected += region.unreadable.len();
            for u in &region.unreadable {
                entries.push(Entry {
                    backup_id: Some(u.id.clone()),
                    message: Some(format!("left alone: {u}")),
                    ..entry(Operation::DeleteBackup, EntryStatus::Skipped, &region.region)
                });
            }
            let mut config_errors = BTreeMap::new();
            let mut to_delete = Vec::new();
            for p in region.planned.iter().filter(|p| p.backup.owner != Owner::Foreign) {
                collected += 1;
                let b = &p.backup;
                let base = Entry {
                    resource_id: Some(b.source.clone()),
                    backup_id: Some(b.id.clone()),
                    backup_name: Some(b.name.clone()),
                    retention: Some(b.retention.to_string()),
                    ..entry(Operation::DeleteBackup, EntryStatus::Error, &region.region)
                };
                match (&p.action, &p.reason) {
                    (Action::Delete, _) => to_delete.push((b, base, p.expires_at)),
                    (Action::Keep, Reason::ConfigError(e)) => {
                        // One failure per source, not per backup.
                        config_errors.entry(b.source.clone()).or_insert(Entry {
                            backup_id: None,
                            backup_name: None,
                            retention: None,
                            message: Some(format!("backups kept: {e}")),
                            ..base
                        });
                    }
                    (Action::Keep, r @ Reason::UndefinedRetention(_)) => {
                        entries.push(Entry { message: Some(format!("kept: {r}")), ..base })
                    }
                    (Action::Keep, r @ Reason::FutureDated(_)) => {
                        warn!(region = %region.region, backup_id = %b.id, source = %b.source, reason = %r, "suspicious backup kept");
                        entries.push(Entry {
                            status: EntryStatus::Skipped,
                            message: Some(format!("kept: {r}")),
                            ..base
                        })
                    }
                    (Action::Keep, _) => {}
                }
            }
            entries.extend(config_errors.into_values());
            let deleted: Vec<Entry> = stream::iter(to_delete)
                .map(|(b, base, expires_at)| async move {
                    let expired = format!("expired at {}", expires_at.map(tags::format_timestamp).unwrap_or_default());
                    if opts.dry_run {
                        return Entry { status: EntryStatus::Planned, message: Some(expired), ..base };
                    }
                    match target.delete_backup(b).await {
                        Ok(()) => {
                            info!(region = %region.region, backup_id = %b.id, source = %b.source, "backup deleted");
                            Entry { status: EntryStatus::Ok, message: Some(expired), ..base }
                        }
                        Err(e) => {
                            error!(region = %region.region, backup_id = %b.id, error = %e, "delete failed");
                            Entry { message: Some(e.to_string()), ..base }
                        }
                    }
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            entries.extend(deleted);
        }
        self.finish("clean-backups", opts, clock, collected, entries).await
    }

    fn target(&self, region: &str) -> Option<&dyn BackupControl> {
        self.targets.iter().find(|t| t.region() == region).map(|t| t.as_ref())
    }

    fn region_list(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.region().to_string()).collect()
    }

    async fn finish(
        &self,
        action: &str,
        opts: &RunOptions,
        clock: Instant,
        collected: usize,
        entries: Vec<Entry>,
    ) -> RunReport {
        let elapsed = SignedDuration::try_from(clock.elapsed()).unwrap_or(SignedDuration::ZERO);
        let mut deployments: Vec<String> =
            self.targets.iter().map(|t| self.settings.config.deployment_id(&self.account, t.region())).collect();
        deployments.dedup();
        if !opts.dry_run {
            self.notify_operations(opts, &entries).await;
            let created = bus::backups_created(&opts.run_id, &self.account, self.kind, opts.now, &entries);
            self.outcomes.emit(created).await;
        }
        let report = RunReport::new(
            opts.run_id.clone(),
            self.account.clone(),
            self.region_list(),
            self.kind,
            action,
            deployments.join(","),
            opts.dry_run,
            opts.now,
            opts.now.saturating_add(elapsed).unwrap_or(opts.now),
            collected,
            entries,
        );
        info!(run_id = %report.run_id, status = report.status.as_str(), "{}", report.headline());
        if opts.publish_report && !opts.dry_run {
            self.publish_report(&report).await;
        }
        report
    }

    /// Publishes a run report to `status_sns_topic` and the bus; a failed publish is logged
    /// only.
    pub async fn publish_report(&self, report: &RunReport) {
        self.outcomes.emit(vec![bus::run_report(report)]).await;
        if let Some(topic) = &self.settings.config.status_sns_topic {
            let body = serde_json::to_string(report).expect("reports serialize");
            if let Err(e) = self.notifier.publish(topic, &report.headline(), &body).await {
                warn!(topic = %topic, error = %e, "run report not published");
            }
        }
    }

    /// One message per create/delete to `sns_topic`; errors also to `error_sns_topic`.
    /// A failed publish is logged and never fails the run.
    async fn notify_operations(&self, opts: &RunOptions, entries: &[Entry]) {
        let (ops, errs) = (self.settings.config.sns_topic.as_deref(), self.settings.config.error_sns_topic.as_deref());
        if ops.is_none() && errs.is_none() {
            return;
        }
        let mut sends = Vec::new();
        for e in entries.iter().filter(|e| matches!(e.status, EntryStatus::Ok | EntryStatus::Error)) {
            let event = OperationEvent {
                schema: OPERATION_SCHEMA,
                run_id: opts.run_id.clone(),
                account: self.account.clone(),
                kind: self.kind,
                timestamp: opts.now,
                entry: e.clone(),
            };
            let body = serde_json::to_string(&event).expect("events serialize");
            let subject = format!("bunker {:?} {:?} {}", e.operation, e.status, e.resource_id.as_deref().unwrap_or(""));
            if let Some(t) = ops {
                sends.push((t, subject.clone(), body.clone()));
            }
            if let (Some(t), EntryStatus::Error) = (errs, e.status) {
                sends.push((t, subject, body));
            }
        }
        stream::iter(sends)
            .for_each_concurrent(self.concurrency, |(topic, subject, body)| async move {
                if let Err(e) = self.notifier.publish(topic, &subject, &body).await {
                    warn!(topic = %topic, error = %e, "notification not published");
                }
            })
            .await;
    }
}

fn entry(operation: Operation, status: EntryStatus, region: &str) -> Entry {
    Entry {
        operation,
        status,
        region: region.to_string(),
        resource_id: None,
        backup_id: None,
        backup_name: None,
        retention: None,
        message: None,
    }
}

fn discover_failure(region: &str, e: &PortError) -> Entry {
    Entry { message: Some(e.to_string()), ..entry(Operation::Discover, EntryStatus::Error, region) }
}

/// The actix shell around [`Runner`]. Handlers run the runner's futures on the System's
/// multi-thread tokio runtime; nothing here blocks the arbiter.
pub struct RunnerActor {
    runner: Arc<Runner>,
}

impl RunnerActor {
    /// Wraps a runner.
    pub fn new(runner: Arc<Runner>) -> Self {
        RunnerActor { runner }
    }
}

impl Actor for RunnerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A run is a long request; a few queued are plenty and bound memory.
        ctx.set_mailbox_capacity(4);
    }
}

/// Create one backup of each selected resource.
#[derive(Debug, Message)]
#[rtype(result = "RunReport")]
pub struct CreateBackups(pub RunOptions);

/// Delete expired backups.
#[derive(Debug, Message)]
#[rtype(result = "RunReport")]
pub struct CleanBackups(pub RunOptions);

/// Ask for the inventory and the clean-up plan at a time.
#[derive(Debug, Message)]
#[rtype(result = "Inventory")]
pub struct GetInventory {
    /// The time to plan for.
    pub now: Timestamp,
}

impl Handler<CreateBackups> for RunnerActor {
    type Result = ResponseFuture<RunReport>;

    fn handle(&mut self, msg: CreateBackups, _ctx: &mut Self::Context) -> Self::Result {
        let runner = self.runner.clone();
        Box::pin(async move { runner.create_backups(&msg.0).await })
    }
}

impl Handler<CleanBackups> for RunnerActor {
    type Result = ResponseFuture<RunReport>;

    fn handle(&mut self, msg: CleanBackups, _ctx: &mut Self::Context) -> Self::Result {
        let runner = self.runner.clone();
        Box::pin(async move { runner.clean_backups(&msg.0).await })
    }
}

impl Handler<GetInventory> for RunnerActor {
    type Result = ResponseFuture<Inventory>;

    fn handle(&mut self, msg: GetInventory, _ctx: &mut Self::Context) -> Self::Result {
        let runner = self.runner.clone();
        Box::pin(async move { runner.inventory(msg.now).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{FakeControl, RecordingNotifier};
    use bunker_protocol::config::{defaults, Key, Source};

    fn setting(key: Key, value: &str) -> Setting {
        Setting { key, value: value.into(), source: Source::Cli { flag: format!("--{key}") } }
    }

    fn runner(fake: Arc<FakeControl>, notifier: Arc<RecordingNotifier>, extra: &[Setting]) -> Runner {
        let mut base = defaults();
        base.extend_from_slice(extra);
        Runner::new(
            "123456789012".into(),
            ResourceKind::Ebs,
            vec![fake],
            notifier,
            Arc::new(Resolved::new(base).unwrap()),
        )
    }

    fn opts(now: &str) -> RunOptions {
        RunOptions { now: now.parse().unwrap(), dry_run: false, run_id: "run".into(), publish_report: true }
    }

    #[tokio::test]
    async fn create_selects_by_tag_and_reports_config_errors_per_resource() {
        let fake = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-east-1"));
        fake.add_resource("vol-a", &[("bunker:create_backup", "true"), ("team", "x")]);
        fake.add_resource("vol-b", &[("bunker:create_backup", "yes")]);
        fake.add_resource("vol-c", &[("bunker:create_backup", "1"), ("bunker:config:keep_daily", "many")]);
        fake.add_resource("vol-d", &[("bunker:create_backup", "TRUE"), ("bunker:config:keep_daily", "0")]);
        let notifier = Arc::new(RecordingNotifier::default());
        let topic = "arn:aws:sns:us-east-1:123456789012:status";
        let r = runner(fake.clone(), notifier.clone(), &[setting(Key::StatusSnsTopic, topic)]);
        let report = r.create_backups(&opts("2026-11-18T01:00:00Z")).await;
        assert_eq!(report.summary.collected, 3);
        assert_eq!((report.summary.succeeded, report.summary.failed, report.summary.skipped), (1, 1, 1));
        assert_eq!(report.entries[0].resource_id.as_deref(), Some("vol-c"));
        assert!(report.entries[0].message.as_deref().unwrap().contains("\"many\" for keep_daily"));
        let ids = fake.backup_ids();
        assert_eq!(ids.len(), 1);
        let tags = fake.state.lock().unwrap().backups[&ids[0]].tags.clone();
        assert_eq!(tags["bunker:source"], "vol-a");
        assert_eq!(tags["team"], "x");
        assert_eq!(tags["bunker:deployment"], "bunker-123456789012-us-east-1");
        let published = notifier.published.lock().unwrap();
        assert_eq!(published.len(), 1, "exactly one run report");
        assert_eq!(published[0].0, topic);
        assert!(published[0].2.contains("\"status\":\"PARTIAL\""));
    }

    /// Issue 15: a fleet's run makes more backups than a report keeps entries; every one of
    /// them is handed on (the scheduler replicates what `create_and_list` returns).
    #[tokio::test]
    async fn every_backup_a_fleet_run_makes_is_listed_beyond_the_report_entries() {
        let fake = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-east-1"));
        let n = bunker_protocol::report::MAX_ENTRIES + 20;
        for i in 0..n {
            fake.add_resource(&format!("vol-{i}"), &[("bunker:create_backup", "true")]);
        }
        let r = runner(fake.clone(), Arc::new(RecordingNotifier::default()), &[]);
        let (report, made) = r.create_and_list(&opts("2026-11-18T01:00:00Z"), None).await;
        assert_eq!(report.entries.len(), bunker_protocol::report::MAX_ENTRIES, "the report is bounded");
        assert_eq!(report.summary.succeeded, n);
        let mut ids: Vec<String> = made.into_iter().map(|b| b.id).collect();
        ids.sort();
        assert_eq!(ids, fake.backup_ids(), "every backup made is listed");
    }

    #[tokio::test]
    async fn clean_deletes_only_owned_expired_and_keeps_newest() {
        let fake = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-east-1"));
        fake.add_resource("vol-a", &[("bunker:create_backup", "true")]);
        let notifier = Arc::new(RecordingNotifier::default());
        let r = runner(fake.clone(), notifier.clone(), &[setting(Key::KeepDaily, "2")]);
        for day in 17..=21 {
            r.create_backups(&opts(&format!("2026-11-{day}T01:00:00Z"))).await;
        }
        // A foreign deployment's backup of the same volume, long expired.
        let other = runner(fake.clone(), notifier.clone(), &[setting(Key::Deployment, "other")]);
        other.create_backups(&opts("2026-01-06T01:00:00Z")).await;
        assert_eq!(fake.backup_ids().len(), 6);
        let report = r.clean_backups(&opts("2026-11-21T02:00:00Z")).await;
        assert_eq!(report.summary.succeeded, 3, "{report:#?}");
        // keep_daily = 2: the backups of Nov 20 and 21 remain, plus the foreign one.
        let remaining: Vec<String> = fake
            .state
            .lock()
            .unwrap()
            .backups
            .values()
            .map(|b| format!("{}/{}", b.tags["bunker:deployment"], b.tags["bunker:created_at"]))
            .collect();
        assert_eq!(
            remaining,
            [
                "bunker-123456789012-us-east-1/2026-11-20T01:00:00Z",
                "bunker-123456789012-us-east-1/2026-11-21T01:00:00Z",
                "other/2026-01-06T01:00:00Z"
            ]
        );
        // Much later, with the volume gone: everything of ours expires, the foreign one stays.
        fake.state.lock().unwrap().resources.clear();
        r.clean_backups(&opts("2027-01-01T00:00:00Z")).await;
        assert_eq!(fake.backup_ids().len(), 1);
    }

    #[test]
    fn actor_shell_runs_on_a_multi_thread_runtime() {
        let fake = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-east-1"));
        fake.add_resource("vol-a", &[("bunker:create_backup", "true")]);
        let r = Arc::new(runner(fake.clone(), Arc::new(RecordingNotifier::default()), &[]));
        let sys = actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
        });
        let report = sys.block_on(async move {
            let addr = RunnerActor::new(r).start();
            addr.send(CreateBackups(opts("2026-11-18T01:00:00Z"))).await.unwrap()
        });
        assert_eq!(report.summary.succeeded, 1);
        assert_eq!(fake.backup_ids().len(), 1);
    }
}
