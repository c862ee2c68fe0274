//! Copy to DR regions and share with accounts: Shelvery's delayed operations, as messages
//! and timers.
//!
//! [`Replicator`] holds the logic: one call of [`Replicator::advance`] looks at AWS (the
//! backup, its copies found by their `bunker:copy_of` tag, who each is shared with), asks
//! the pure [`replication::plan`] what remains, makes those effects, and says whether the job
//! is done or must be looked at again later. It never sleeps. [`ReplicatorActor`] is the
//! shell: it keeps one job per backup (three deliveries of the same event share one job),
//! re-checks waiting jobs on a timer, and answers each requester when the job ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bunker_protocol::config::Config;
use bunker_protocol::events::BackupRef;
use bunker_protocol::replication::{self, BackupState, Step, Targets};
use bunker_protocol::report::{Entry, EntryStatus, Operation};
use bunker_protocol::{tags, ResourceKind};
use futures::future::join_all;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::ports::{BackupControl, BackupDetail, CopyRequest, ErrorKind, Leases, Notifier, PortError};

/// Copies in progress per destination region and kind. AWS allows 20 concurrent EBS
/// snapshot copies per destination region and (by default) 5 concurrent cross-region RDS
/// snapshot copies; AMI copies count against the EBS limit through their snapshots.
pub fn copy_cap(kind: ResourceKind) -> usize {
    match kind {
        ResourceKind::Ebs | ResourceKind::Ec2ami => 20,
        _ => 5,
    }
}

/// How long a copy claim (lease) lasts unless renewed. The holder renews it every third of
/// this while its copy call runs (a heartbeat), gives it up at once if the copy does not
/// start, and lets it lapse after a copy started (the copy, tagged `bunker:copy_of`, is then
/// what stops a second one). So a killed holder's claim frees itself within this time.
pub const COPY_LEASE: Duration = Duration::from_secs(30);

/// How one pass over a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Everything exists and is shared.
    Done,
    /// Something is pending (the source, a copy) or deferred (quota, cap, lease): look again
    /// after the check interval.
    Waiting(String),
    /// Effects were made and nothing is known to be pending: look again at once (the next
    /// pass shares new copies or finds the job done).
    Progress,
    /// Not this deployment's to copy (not bunker's, another deployment's, a copy, gone).
    NotOurs(String),
    /// A failure worth retrying a few times.
    Retry(String),
}

/// What became of a job, for whoever asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    /// The backup.
    pub backup: BackupRef,
    /// `true` when everything exists; `false` when it was not ours or failed for good.
    pub done: bool,
    /// What was done (copies, shares, failures), as run-report entries.
    pub entries: Vec<Entry>,
    /// Why it ended, when not done.
    pub note: Option<String>,
}

/// The copy-and-share logic.
pub struct Replicator {
    account: String,
    config: Config,
    controls: HashMap<(ResourceKind, String), Arc<dyn BackupControl>>,
    leases: Arc<dyn Leases>,
    notifier: Arc<dyn Notifier>,
    holder: String,
    metrics: Arc<Metrics>,
    /// Copies started and not yet seen available, per (kind, destination region).
    in_flight: Mutex<HashMap<(ResourceKind, String), BTreeSet<String>>>,
    /// How long a copy claim lasts unless renewed ([`COPY_LEASE`]).
    copy_lease: Duration,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn entry(operation: Operation, status: EntryStatus, region: &str, id: &str) -> Entry {
    Entry {
        operation,
        status,
        region: region.into(),
        resource_id: None,
        backup_id: Some(id.into()),
        backup_name: None,
        retention: None,
        message: None,
    }
}

impl Replicator {
    /// A replicator over the ports of every (kind, region) it may touch: the source regions
    /// and the DR regions.
    pub fn new(
        account: String,
        config: Config,
        controls: Vec<Arc<dyn BackupControl>>,
        leases: Arc<dyn Leases>,
        notifier: Arc<dyn Notifier>,
        holder: String,
        metrics: Arc<Metrics>,
    ) -> Replicator {
        let controls = controls.into_iter().map(|c| ((c.kind(), c.region().to_string()), c)).collect();
        Replicator {
            account,
            config,
            controls,
            leases,
            notifier,
            holder,
            metrics,
            in_flight: Mutex::new(HashMap::new()),
            copy_lease: COPY_LEASE,
        }
    }

    /// Copy claims last `lease` unless renewed (whole seconds, at least one).
    pub fn with_copy_lease(mut self, lease: Duration) -> Self {
        self.copy_lease = lease.max(Duration::from_secs(1));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn control(&self, kind: ResourceKind, region: &str) -> Result<&Arc<dyn BackupControl>, String> {
        self.controls.get(&(kind, region.to_string())).ok_or_else(|| format!("{kind} in {region} is not served"))
    }

    fn aws_error(&self, e: &PortError) {
        self.metrics.inc(crate::metrics::Metric::AwsErrorsTotal, &[("code", e.code.as_deref().unwrap_or("none"))]);
    }

    /// Whether a described backup is this deployment's own original (not a copy).
    fn owned(&self, region: &str, d: &BackupDetail) -> Result<(), String> {
        let t = |k: &str| d.tags.get(k).map(String::as_str);
        if t(tags::MANAGED) != Some("true") {
            return Err("not a bunker backup".into());
        }
        if let Some(of) = t(tags::COPY_OF).or(t(tags::REENCRYPTED_OF)) {
            return Err(format!("a copy of {of}"));
        }
        let ours = self.config.deployment_id(&self.account, region);
        match t(tags::DEPLOYMENT) {
            Some(dep) if dep == ours => Ok(()),
            other => Err(format!("owned by deployment {:?}, not {ours}", other.unwrap_or(""))),
        }
    }

    fn update_in_flight(&self, kind: ResourceKind, region: &str, key: &str, pending: bool) {
        let mut m = self.in_flight.lock().expect("in-flight lock");
        let set = m.entry((kind, region.to_string())).or_default();
        let changed = if pending { set.insert(key.to_string()) } else { set.remove(key) };
        if changed {
            self.publish_in_flight(kind, region, set.len());
        }
    }

    fn publish_in_flight(&self, kind: ResourceKind, region: &str, n: usize) {
        self.metrics.set(
            crate::metrics::Metric::CopiesInFlight,
            &[("kind", kind.as_str()), ("region", region)],
            n as f64,
        );
    }

    /// Reserves a copy slot in (kind, region) for `key`; `false` when the cap is reached.
    fn reserve(&self, kind: ResourceKind, region: &str, key: &str) -> bool {
        let mut m = self.in_flight.lock().expect("in-flight lock");
        let set = m.entry((kind, region.to_string())).or_default();
        if set.contains(key) {
            return true;
        }
        if set.len() >= copy_cap(kind) {
            return false;
        }
        set.insert(key.to_string());
        self.publish_in_flight(kind, region, set.len());
        true
    }

    /// The most copies ever in flight at once in (kind, region) is what the cap bounds; this
    /// is the current count.
    pub fn in_flight(&self, kind: ResourceKind, region: &str) -> usize {
        self.in_flight.lock().expect("in-flight lock").get(&(kind, region.to_string())).map_or(0, |s| s.len())
    }

    /// One pass over the job for backup `b`: look, plan, act. Returns the entries of the
    /// effects made in this pass and how the job stands.
    pub async fn advance(&self, b: &BackupRef) -> (Outcome, Vec<Entry>) {
        let mut entries = Vec::new();
        let src = match self.control(b.kind, &b.region) {
            Ok(c) => c,
            Err(e) => return (Outcome::NotOurs(e), entries),
        };
        if !src.replicates() {
            return (Outcome::NotOurs(format!("copy and share of {} are not implemented yet", b.kind)), entries);
        }
        let detail = match src.describe_backup(&b.id).await {
            Ok(Some(d)) => d,
            Ok(None) => return (Outcome::NotOurs("no longer exists".into()), entries),
            Err(e) => {
                self.aws_error(&e);
                return (Outcome::Retry(e.to_string()), entries);
            }
        };
        if let Err(why) = self.owned(&b.region, &detail) {
            return (Outcome::NotOurs(why), entries);
        }
        let r = &self.config.replication;
        let copy_of = replication::copy_of(&b.region, &b.id);
        let name = detail.tags.get("Name").cloned().unwrap_or_else(|| b.id.clone());
        let mut copies = BTreeMap::new();
        if detail.available {
            for region in r.dr_regions.iter().filter(|x| **x != b.region) {
                let dst = match self.control(b.kind, region) {
                    Ok(c) => c,
                    Err(e) => return (Outcome::Retry(e), entries),
                };
                match dst.find_copy(tags::COPY_OF, &copy_of, &name).await {
                    Ok(Some(c)) => {
                        self.update_in_flight(b.kind, region, &copy_of, !c.available);
                        copies.insert(region.clone(), state(c));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.aws_error(&e);
                        return (Outcome::Retry(e.to_string()), entries);
                    }
                }
            }
        }
        let source = state(detail.clone());
        let share_key = r.share_kms_keys.get(&b.region).map(String::as_str);
        let mut reencrypted = None;
        if detail.available && !r.share_accounts.is_empty() && replication::needs_reencryption(&source, share_key) {
            match src.find_copy(tags::REENCRYPTED_OF, &copy_of, &replication::reencrypted_name(&name)).await {
                Ok(found) => {
                    if let Some(c) = &found {
                        self.update_in_flight(b.kind, &b.region, &format!("re:{copy_of}"), !c.available);
                    }
                    reencrypted = found.map(state);
                }
                Err(e) => {
                    self.aws_error(&e);
                    return (Outcome::Retry(e.to_string()), entries);
                }
            }
        }
        let targets = Targets { dr_regions: &r.dr_regions, share_accounts: &r.share_accounts, share_key };
        let plan = replication::plan(targets, &b.region, &source, &copies, reencrypted.as_ref());
        if plan.is_done() {
            return (Outcome::Done, entries);
        }
        let results = join_all(plan.steps.iter().map(|s| self.step(b, &detail, &name, &copy_of, s))).await;
        let mut waiting: Vec<String> = plan.waiting.iter().map(|w| format!("{w} pending")).collect();
        let mut retry = None;
        for (res, e) in results {
            match res {
                StepResult::Made => {}
                StepResult::Deferred(why) => waiting.push(why),
                StepResult::Failed(why) => retry = Some(why),
            }
            entries.extend(e);
        }
        if let Some(why) = retry {
            return (Outcome::Retry(why), entries);
        }
        // Effects were made (or deferred): look again to see copies become available and
        // share them, or to find that all is done.
        if waiting.is_empty() {
            (Outcome::Progress, entries)
        } else {
            (Outcome::Waiting(waiting.join(", ")), entries)
        }
    }

    async fn step(
        &self,
        b: &BackupRef,
        detail: &BackupDetail,
        name: &str,
        copy_of: &str,
        step: &Step,
    ) -> (StepResult, Option<Entry>) {
        match step {
            Step::Reencrypt => {
                let mut t = detail.tags.clone();
                t.insert(tags::REENCRYPTED_OF.into(), copy_of.to_string());
                let name = replication::reencrypted_name(name);
                t.insert("Name".into(), name.clone());
                let request = CopyRequest {
                    source_region: b.region.clone(),
                    source_account: self.account.clone(),
                    source_id: b.id.clone(),
                    name,
                    tags: t,
                    kms_key: self.config.replication.share_kms_keys.get(&b.region).cloned(),
                    encrypted: true,
                };
                let base = entry(Operation::CopyBackup, EntryStatus::Ok, &b.region, &b.id);
                match self.start_copy(b.kind, &b.region, &format!("re:{copy_of}"), &request, &base).await {
                    Ok(id) => {
                        info!(region = %b.region, backup_id = %b.id, copy_id = %id, "re-encrypted for sharing");
                        let msg = format!("re-encrypted copy {id} under the share key (shared instead)");
                        (StepResult::Made, Some(Entry { message: Some(msg), ..base }))
                    }
                    Err(not_started) => not_started,
                }
            }
            Step::Share { region, id, account } => {
                let ctl = match self.control(b.kind, region) {
                    Ok(c) => c,
                    Err(e) => return (StepResult::Failed(e), None),
                };
                let base = Entry {
                    message: Some(format!("shared with {account}")),
                    ..entry(Operation::ShareBackup, EntryStatus::Ok, region, id)
                };
                match ctl.share_backup(id, account).await {
                    Ok(()) => {
                        info!(region = %region, backup_id = %id, account = %account, "backup shared");
                        (StepResult::Made, Some(base))
                    }
                    Err(e) => self.failed(e, base),
                }
            }
            Step::Copy { to_region } => {
                let deployment = self.config.deployment_id(&self.account, to_region);
                let request = CopyRequest {
                    source_region: b.region.clone(),
                    source_account: self.account.clone(),
                    source_id: b.id.clone(),
                    name: name.to_string(),
                    tags: replication::copy_tags(&detail.tags, &b.region, &b.id, &deployment),
                    kms_key: self.config.replication.dr_kms_keys.get(to_region).cloned(),
                    encrypted: detail.encrypted,
                };
                let base = entry(Operation::CopyBackup, EntryStatus::Ok, to_region, &b.id);
                match self.start_copy(b.kind, to_region, copy_of, &request, &base).await {
                    Ok(id) => {
                        info!(region = %b.region, backup_id = %b.id, to_region = %to_region, copy_id = %id, "copy started");
                        (StepResult::Made, Some(Entry { message: Some(format!("copy {id} of {copy_of}")), ..base }))
                    }
                    Err(not_started) => not_started,
                }
            }
        }
    }

    /// Starts one copy into `region` (a DR copy, or a re-encryption in the backup's own
    /// region) under `key`: reserves a slot under the region's cap, claims the copy lease so
    /// that of several instances one makes it, and frees the slot again if the copy does not
    /// start. `Err` carries how the step ended instead.
    async fn start_copy(
        &self,
        kind: ResourceKind,
        region: &str,
        key: &str,
        request: &CopyRequest,
        base: &Entry,
    ) -> Result<String, (StepResult, Option<Entry>)> {
        if !self.reserve(kind, region, key) {
            self.metrics.inc(crate::metrics::Metric::DeferralsTotal, &[("reason", "concurrency_cap")]);
            return Err((StepResult::Deferred(format!("copy into {region}: concurrency cap")), None));
        }
        let started = self.claim_and_copy(kind, region, key, request, base).await;
        if started.is_err() {
            self.update_in_flight(kind, region, key, false);
        }
        started
    }

    async fn claim_and_copy(
        &self,
        kind: ResourceKind,
        region: &str,
        key: &str,
        request: &CopyRequest,
        base: &Entry,
    ) -> Result<String, (StepResult, Option<Entry>)> {
        let lease_key = format!("copy:{key}:{region}");
        let secs = self.copy_lease.as_secs() as i64;
        let now = unix_now();
        match self.leases.claim(&lease_key, &self.holder, now, now + secs).await {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.inc(crate::metrics::Metric::DeferralsTotal, &[("reason", "lease_held")]);
                return Err((StepResult::Deferred(format!("copy into {region}: claimed by another instance")), None));
            }
            Err(e) => {
                self.aws_error(&e);
                return Err((StepResult::Failed(format!("lease: {e}")), None));
            }
        }
        let copied = match self.control(kind, region) {
            Ok(ctl) => {
                self.heartbeat(&lease_key, ctl.copy_backup(request)).await.map_err(|e| self.failed(e, base.clone()))
            }
            Err(e) => Err((StepResult::Failed(e), None)),
        };
        if copied.is_err() {
            // Not started: free the claim now rather than make others wait for it to lapse.
            if let Err(e) = self.leases.release(&lease_key, &self.holder).await {
                warn!(lease = %lease_key, error = %e, "copy lease not released; it lapses by itself");
            }
        }
        copied
    }

    /// Awaits `work` while renewing the copy lease `key` every third of its duration.
    async fn heartbeat<T>(&self, key: &str, work: impl std::future::Future<Output = T>) -> T {
        let secs = self.copy_lease.as_secs() as i64;
        let renew = async {
            loop {
                tokio::time::sleep(self.copy_lease / 3).await;
                let now = unix_now();
                match self.leases.claim(key, &self.holder, now, now + secs).await {
                    Ok(true) => {}
                    Ok(false) => warn!(lease = %key, "copy lease lapsed and was taken while the copy call ran"),
                    Err(e) => warn!(lease = %key, error = %e, "copy lease not renewed"),
                }
            }
        };
        tokio::select! {
            out = work => out,
            never = renew => never,
        }
    }

    fn failed(&self, e: PortError, base: Entry) -> (StepResult, Option<Entry>) {
        self.aws_error(&e);
        match e.kind {
            ErrorKind::Quota | ErrorKind::Throttled => {
                let reason = if e.kind == ErrorKind::Quota { "quota" } else { "throttled" };
                self.metrics.inc(crate::metrics::Metric::DeferralsTotal, &[("reason", reason)]);
                warn!(region = %base.region, backup_id = ?base.backup_id, error = %e, "deferred: {reason}");
                (StepResult::Deferred(format!("{reason}: {e}")), None)
            }
            // A share or copy that already exists is success.
            ErrorKind::AlreadyExists => (StepResult::Made, None),
            _ => {
                error!(region = %base.region, backup_id = ?base.backup_id, error = %e, "copy/share failed");
                let msg = e.to_string();
                (
                    StepResult::Failed(msg.clone()),
                    Some(Entry { status: EntryStatus::Error, message: Some(msg), ..base }),
                )
            }
        }
    }

    /// Every backup this deployment owns of `kind` in its source regions: the work
    /// reconciliation hands to the actor (each job then decides for itself what remains).
    pub async fn owned_backups(&self, kind: ResourceKind) -> Result<Vec<BackupRef>, PortError> {
        let mut out = Vec::new();
        for region in &self.config.regions {
            let Ok(ctl) = self.control(kind, region) else { continue };
            let deployment = self.config.deployment_id(&self.account, region);
            for l in ctl.list_backups(false).await? {
                let t = |k: &str| l.tags.get(k).map(String::as_str);
                let copy = t(tags::COPY_OF).or(t(tags::REENCRYPTED_OF));
                if t(tags::DEPLOYMENT) == Some(deployment.as_str()) && copy.is_none() {
                    out.push(BackupRef { kind, region: region.clone(), id: l.id });
                }
            }
        }
        Ok(out)
    }

    /// Reports a failure to the error topic (never fails the caller).
    pub async fn report_error(&self, subject: &str, message: &str) {
        if let Some(topic) = &self.config.error_sns_topic {
            if let Err(e) = self.notifier.publish(topic, subject, message).await {
                warn!(topic = %topic, error = %e, "error notification not published");
            }
        }
    }
}

fn state(d: BackupDetail) -> BackupState {
    BackupState {
        id: d.id,
        available: d.available,
        shared_with: d.shared_with,
        encrypted: d.encrypted,
        kms_key: d.kms_key,
    }
}

enum StepResult {
    Made,
    Deferred(String),
    Failed(String),
}

/// Copy and share `backup`; the answer comes when the job ends.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<JobResult, ()>")]
pub struct Replicate(pub BackupRef);

struct Job {
    waiters: Vec<oneshot::Sender<JobResult>>,
    entries: Vec<Entry>,
    retries: u32,
    /// Passes in a row that ended in `Progress` (bounded, so a share AWS accepts but never
    /// shows cannot spin).
    quick: u32,
    running: bool,
}

/// The actix shell around [`Replicator`].
pub struct ReplicatorActor {
    logic: Arc<Replicator>,
    jobs: HashMap<String, (BackupRef, Job)>,
    check_interval: Duration,
}

/// A job that fails this many passes in a row ends as failed (reconciliation will find it
/// again later); the wait between passes doubles from the check interval.
const MAX_RETRIES: u32 = 6;

impl ReplicatorActor {
    /// Wraps the logic; waiting jobs are looked at again every `check_interval`.
    pub fn new(logic: Arc<Replicator>, check_interval: Duration) -> Self {
        ReplicatorActor { logic, jobs: HashMap::new(), check_interval }
    }

    fn key(b: &BackupRef) -> String {
        format!("{}:{}:{}", b.kind, b.region, b.id)
    }

    fn run_pass(&mut self, key: String, ctx: &mut Context<Self>) {
        let Some((b, job)) = self.jobs.get_mut(&key) else { return };
        if job.running {
            return;
        }
        job.running = true;
        let logic = self.logic.clone();
        let b = b.clone();
        // The pass runs as a tokio task: a panic in it is caught as a JoinError, reported,
        // and the job retried, instead of unwinding through the arbiter.
        let task = tokio::spawn(async move { logic.advance(&b).await });
        ctx.spawn(task.into_actor(self).map(move |res, act, ctx| act.finish_pass(key, res, ctx)));
    }

    fn finish_pass(
        &mut self,
        key: String,
        res: Result<(Outcome, Vec<Entry>), tokio::task::JoinError>,
        ctx: &mut Context<Self>,
    ) {
        let logic = self.logic.clone();
        let (outcome, entries) = match res {
            Ok(r) => r,
            Err(e) => {
                let msg = if e.is_panic() { format!("task panicked: {e}") } else { format!("task cancelled: {e}") };
                error!(job = %key, error = %msg, "replication pass panicked; retrying");
                logic.metrics.inc(crate::metrics::Metric::ActorRestartsTotal, &[("actor", "replicator-task")]);
                let subject = "bunker: replication task panicked".to_string();
                let body = format!("job {key}: {msg}");
                let l = logic.clone();
                actix::spawn(async move { l.report_error(&subject, &body).await });
                (Outcome::Retry(msg), vec![])
            }
        };
        let Some((b, job)) = self.jobs.get_mut(&key) else { return };
        job.running = false;
        job.entries.extend(entries);
        let b = b.clone();
        let end = |done: bool, note: Option<String>| Some((done, note));
        let finished = match outcome {
            Outcome::Done => end(true, None),
            Outcome::NotOurs(why) => end(false, Some(why)),
            Outcome::Progress if job.quick < 3 => {
                job.retries = 0;
                job.quick += 1;
                let k = key.clone();
                ctx.run_later(Duration::ZERO, move |act, ctx| act.run_pass(k.clone(), ctx));
                None
            }
            Outcome::Progress | Outcome::Waiting(_) => {
                job.retries = 0;
                job.quick = 0;
                tracing::debug!(job = %key, "waiting");
                let k = key.clone();
                ctx.run_later(self.check_interval, move |act, ctx| act.run_pass(k.clone(), ctx));
                None
            }
            Outcome::Retry(why) if job.retries < MAX_RETRIES => {
                job.retries += 1;
                let backoff = self.check_interval * 2u32.pow(job.retries.min(6));
                let jitter = Duration::from_millis(u64::from(unix_jitter()) % 1000);
                warn!(job = %key, error = %why, retry = job.retries, "replication pass failed; retrying");
                let k = key.clone();
                ctx.run_later(backoff + jitter, move |act, ctx| act.run_pass(k.clone(), ctx));
                None
            }
            Outcome::Retry(why) => end(false, Some(format!("gave up after {MAX_RETRIES} retries: {why}"))),
        };
        if let Some((done, note)) = finished {
            let (_, job) = self.jobs.remove(&key).expect("job present");
            let state = match (&note, done) {
                (_, true) => "done",
                (Some(n), false) if n.starts_with("gave up") => "failed",
                _ => "not_ours",
            };
            logic.metrics.inc(crate::metrics::Metric::JobsTotal, &[("kind", b.kind.as_str()), ("state", state)]);
            if state == "failed" {
                let subject = format!("bunker {} copy/share failed", b.kind);
                let body = format!("{}:{}: {}", b.region, b.id, note.clone().unwrap_or_default());
                actix::spawn(async move { logic.report_error(&subject, &body).await });
            }
            let mut entries = job.entries;
            if state == "failed" {
                entries.push(Entry {
                    message: note.clone(),
                    ..entry(Operation::CopyBackup, EntryStatus::Error, &b.region, &b.id)
                });
            }
            let result = JobResult { backup: b, done, entries, note };
            for w in job.waiters {
                if w.send(result.clone()).is_err() {
                    tracing::debug!(job = %key, "requester gone before the job ended");
                }
            }
        }
    }
}

fn unix_jitter() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}

impl Actor for ReplicatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Each Replicate waits for its job; callers bound themselves (the watcher handles a
        // batch at a time, reconciliation sends one by one), so a small mailbox suffices.
        ctx.set_mailbox_capacity(64);
    }
}

impl actix::Supervised for ReplicatorActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        // Open jobs' waiters see their channel close and retry (SQS redelivery,
        // reconciliation); the jobs are rebuilt from AWS state, never from memory.
        warn!(open_jobs = self.jobs.len(), "replicator restarting");
        self.logic.metrics.inc(crate::metrics::Metric::ActorRestartsTotal, &[("actor", "replicator")]);
        self.jobs.clear();
    }
}

impl Handler<Replicate> for ReplicatorActor {
    type Result = ResponseFuture<Result<JobResult, ()>>;

    fn handle(&mut self, msg: Replicate, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let key = Self::key(&msg.0);
        let job = self.jobs.entry(key.clone()).or_insert_with(|| {
            (msg.0.clone(), Job { waiters: vec![], entries: vec![], retries: 0, quick: 0, running: false })
        });
        job.1.waiters.push(tx);
        self.run_pass(key, ctx);
        Box::pin(async move { rx.await.map_err(|_| ()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{FakeControl, MemoryLeases, RecordingNotifier};
    use bunker_protocol::config::{defaults, resolve, Key, Setting, Source};

    fn cfg(extra: &[(Key, &str)]) -> Config {
        let mut s = defaults();
        for (k, v) in extra {
            s.push(Setting { key: *k, value: v.to_string(), source: Source::Cli { flag: k.to_string() } });
        }
        resolve(&s).unwrap()
    }

    struct World {
        home: Arc<FakeControl>,
        dr: Arc<FakeControl>,
        logic: Arc<Replicator>,
        notifier: Arc<RecordingNotifier>,
    }

    fn world() -> World {
        let home = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-east-1"));
        let dr = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-west-2"));
        let notifier = Arc::new(RecordingNotifier::default());
        let config = cfg(&[
            (Key::Regions, "us-east-1"),
            (Key::DrRegions, "us-west-2"),
            (Key::ShareAccounts, "111111111111"),
            (Key::ErrorSnsTopic, "arn:aws:sns:us-east-1:123456789012:errors"),
        ]);
        let logic = Arc::new(Replicator::new(
            "123456789012".into(),
            config,
            vec![home.clone(), dr.clone()],
            Arc::new(MemoryLeases::default()),
            notifier.clone(),
            "test".into(),
            Arc::new(Metrics::default()),
        ));
        World { home, dr, logic, notifier }
    }

    fn add_backup(c: &FakeControl, id: &str, deployment: &str) {
        let tags = [
            (tags::MANAGED, "true"),
            (tags::DEPLOYMENT, deployment),
            (tags::KIND, "ebs"),
            ("Name", "data-20261201-010000-monthly-abcdef"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        c.state.lock().unwrap().backups.insert(
            id.into(),
            crate::ports::ListedBackup { id: id.into(), tags, available: true, aws_created_at: None, parts: vec![] },
        );
    }

    fn snap(id: &str) -> BackupRef {
        BackupRef { kind: ResourceKind::Ebs, region: "us-east-1".into(), id: id.into() }
    }

    #[tokio::test]
    async fn converges_in_passes_and_never_copies_twice() {
        let w = world();
        add_backup(&w.home, "snap-1", "bunker-123456789012-us-east-1");
        let (o1, e1) = w.logic.advance(&snap("snap-1")).await;
        assert_eq!(o1, Outcome::Progress);
        assert_eq!(e1.len(), 2, "one share, one copy: {e1:?}");
        let (o2, e2) = w.logic.advance(&snap("snap-1")).await;
        assert_eq!(o2, Outcome::Progress, "the copy is shared in the second pass");
        assert_eq!(e2.len(), 1);
        assert_eq!(w.logic.advance(&snap("snap-1")).await.0, Outcome::Done);
        assert_eq!(w.logic.in_flight(ResourceKind::Ebs, "us-west-2"), 0, "the finished copy no longer counts");
        let dr = w.dr.state.lock().unwrap();
        assert_eq!(dr.backups.len(), 1);
        let copy = dr.backups.values().next().unwrap();
        assert_eq!(copy.tags[tags::COPY_OF], "us-east-1:snap-1");
        assert_eq!(copy.tags[tags::DEPLOYMENT], "bunker-123456789012-us-west-2");
        assert_eq!(dr.shared[&copy.id], ["111111111111"]);
        assert_eq!(w.home.state.lock().unwrap().shared["snap-1"], ["111111111111"]);
    }

    /// 9.11: a copy claim is short and renewed while the copy call runs, freed at once when
    /// the copy does not start, and lapses soon after its holder is gone.
    #[tokio::test(flavor = "multi_thread")]
    async fn copy_leases_are_short_renewed_while_copying_and_freed_on_failure() {
        let home = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-east-1"));
        let dr = Arc::new(FakeControl::new(ResourceKind::Ebs, "us-west-2"));
        let leases = Arc::new(MemoryLeases::default());
        let config = cfg(&[(Key::Regions, "us-east-1"), (Key::DrRegions, "us-west-2")]);
        let logic = Arc::new(
            Replicator::new(
                "123456789012".into(),
                config,
                vec![home.clone(), dr.clone()],
                leases.clone(),
                Arc::new(RecordingNotifier::default()),
                "me".into(),
                Arc::new(Metrics::default()),
            )
            .with_copy_lease(Duration::from_secs(2)),
        );
        let key = "copy:us-east-1:snap-1:us-west-2";
        let other = |leases: Arc<MemoryLeases>| async move {
            leases.claim(key, "other", unix_now(), unix_now() + 2).await.unwrap()
        };
        // The default is well under a minute: a killed holder's copies wait less than that.
        assert!(COPY_LEASE <= Duration::from_secs(30));

        // A copy call that takes 5 s, more than twice the lease: nobody else may claim it meanwhile.
        add_backup(&home, "snap-1", "bunker-123456789012-us-east-1");
        dr.state.lock().unwrap().copy_delay = Duration::from_secs(5);
        let pass = tokio::spawn({
            let logic = logic.clone();
            async move { logic.advance(&snap("snap-1")).await }
        });
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            assert!(!other(leases.clone()).await, "claimed by another instance while the copy ran");
        }
        pass.await.unwrap();
        assert_eq!(dr.backup_ids().len(), 1);
        // Its holder done (or dead), the claim lapses within the lease.
        tokio::time::sleep(Duration::from_millis(3100)).await;
        assert!(other(leases.clone()).await, "the lease did not lapse");

        // A copy that does not start frees its claim at once.
        add_backup(&home, "snap-2", "bunker-123456789012-us-east-1");
        dr.state.lock().unwrap().copy_delay = Duration::ZERO;
        dr.state.lock().unwrap().copy_quota_failures = 1;
        let (o, _) = logic.advance(&snap("snap-2")).await;
        assert!(matches!(o, Outcome::Waiting(_)), "{o:?}");
        let free = leases.claim("copy:us-east-1:snap-2:us-west-2", "other", unix_now(), unix_now() + 2).await.unwrap();
        assert!(free, "a copy that did not start still holds its lease");
    }

    #[tokio::test]
    async fn foreign_and_copies_are_left_alone() {
        let w = world();
        add_backup(&w.home, "snap-f", "someone-else");
        let (o, _) = w.logic.advance(&snap("snap-f")).await;
        assert!(matches!(o, Outcome::NotOurs(ref why) if why.contains("someone-else")), "{o:?}");
        assert!(w.dr.backup_ids().is_empty());
        assert!(matches!(w.logic.advance(&snap("snap-missing")).await.0, Outcome::NotOurs(_)));
    }

    #[tokio::test]
    async fn quota_defers_without_error() {
        let w = world();
        add_backup(&w.home, "snap-1", "bunker-123456789012-us-east-1");
        w.dr.state.lock().unwrap().copy_quota_failures = 2;
        let (o, entries) = w.logic.advance(&snap("snap-1")).await;
        assert!(matches!(o, Outcome::Waiting(ref why) if why.contains("quota")), "{o:?}");
        assert!(entries.iter().all(|e| e.status != EntryStatus::Error), "{entries:?}");
        for _ in 0..4 {
            w.logic.advance(&snap("snap-1")).await;
        }
        assert_eq!(w.logic.advance(&snap("snap-1")).await.0, Outcome::Done);
        assert_eq!(w.dr.backup_ids().len(), 1);
        assert_eq!(w.logic.metrics.get(crate::metrics::Metric::DeferralsTotal, &[("reason", "quota")]), 2.0);
    }

    #[test]
    fn duplicate_requests_share_one_job_and_a_panic_is_retried_and_reported() {
        let w = world();
        add_backup(&w.home, "snap-1", "bunker-123456789012-us-east-1");
        w.dr.state.lock().unwrap().panic_on_copy = true;
        let logic = w.logic.clone();
        let sys = actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
        });
        let results = sys.block_on(async move {
            let addr = ReplicatorActor::new(logic, Duration::from_millis(10)).start();
            let sends = (0..3).map(|_| addr.send(Replicate(snap("snap-1"))));
            join_all(sends).await
        });
        for r in results {
            assert!(r.unwrap().unwrap().done);
        }
        assert_eq!(w.dr.backup_ids().len(), 1, "exactly one copy");
        assert_eq!(w.dr.state.lock().unwrap().copy_calls, 2, "the panicked call, then one copy");
        assert_eq!(
            w.logic.metrics.get(crate::metrics::Metric::ActorRestartsTotal, &[("actor", "replicator-task")]),
            1.0
        );
        let published = w.notifier.published.lock().unwrap();
        assert!(published.iter().any(|(_, s, _)| s.contains("panicked")), "{published:?}");
    }
}
