//! Copy to DR regions and share with accounts: Shelvery's delayed operations, as messages
//! and timers.
//!
//! [`Replicator`] holds the logic: one call of [`Replicator::advance`] looks at AWS (the
//! backup, its copies found by their `bunker:copy_of` tag, who each is shared with), asks
//! the pure [`replication::plan`] what remains, makes those effects, and says whether the job
//! is done or must be looked at again later. It never sleeps. It is the engine's worked
//! example of a [`Workflow`]: [`ReplicatorActor`] is the generic [`JobActor`] over it, which
//! keeps one job per backup (three deliveries of the same event share one job), re-checks
//! waiting jobs on a timer, and answers each requester when the job ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bunker_protocol::bus;
use bunker_protocol::config::Config;
use bunker_protocol::events::BackupRef;
use bunker_protocol::replication::{self, BackupState, Step, Targets};
use bunker_protocol::report::{Entry, EntryStatus, Operation};
use bunker_protocol::{tags, ResourceKind};
use futures::future::join_all;
use tracing::{error, info, warn};

use crate::engine::batch::{Batcher, Load};
use crate::engine::{Alerts, Clock, JobActor, JobError, Pass, Run, SystemClock, Workflow};
use crate::metrics::Metrics;
use crate::ports::{BackupDetail, CopyRequest, ErrorKind, Leases, Notifier, PortError, Replication};

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

/// How long a batched look at backups or copies gathers the jobs asking for it: passes that
/// end within this of each other share one `DescribeSnapshots` (a job's pass waits this much
/// longer; AWS's own answers take longer than that).
pub const LOOK_WINDOW: Duration = Duration::from_millis(50);

/// The engine's shell over the replicator: send it [`Replicate`] (`Run(backup)`).
pub type ReplicatorActor = JobActor<Replicator>;

/// Copy and share a backup; the answer comes when the job ends.
pub type Replicate = Run<BackupRef>;

/// The copy-and-share logic.
pub struct Replicator {
    account: String,
    config: Config,
    controls: Arc<HashMap<(ResourceKind, String), Arc<dyn Replication>>>,
    /// Backups looked at together by id, per (kind, region) (batched observation).
    sources: Batcher<(ResourceKind, String), String, BackupDetail>,
    /// Copies looked at together by (tag value, name), per (kind, region, tag).
    copies: Batcher<(ResourceKind, String, &'static str), (String, String), BackupDetail>,
    leases: Arc<dyn Leases>,
    notifier: Arc<dyn Notifier>,
    holder: String,
    metrics: Arc<Metrics>,
    /// Copies started and not yet seen available, per (kind, destination region).
    in_flight: Mutex<HashMap<(ResourceKind, String), BTreeSet<String>>>,
    /// Jobs whose copy into (kind, region) the cap deferred, oldest first: a freed slot wakes
    /// the first of them ([`Workflow::woken`]) instead of leaving it to its next timer.
    deferred: Mutex<HashMap<(ResourceKind, String), std::collections::VecDeque<BackupRef>>>,
    /// Jobs to look at now.
    woken: Mutex<Vec<BackupRef>>,
    /// Per open job, who each of its backups is shared with, by (region, id), for ports whose
    /// looks do not report shares: learnt from the job's own effects (a share made, a copy
    /// made and so shared with nobody), from [`Replicator::made`], and from reads where it
    /// knew nothing.
    shares: Mutex<HashMap<BackupRef, JobShares>>,
    /// How long a copy claim lasts unless renewed ([`COPY_LEASE`]).
    copy_lease: Duration,
    clock: Arc<dyn Clock>,
    outcomes: crate::outcomes::Outcomes,
}

/// Who each backup of one job is shared with, by (region, id).
type JobShares = HashMap<(String, String), BTreeSet<String>>;

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
        controls: Vec<Arc<dyn Replication>>,
        leases: Arc<dyn Leases>,
        notifier: Arc<dyn Notifier>,
        holder: String,
        metrics: Arc<Metrics>,
    ) -> Replicator {
        let controls: Arc<HashMap<_, _>> =
            Arc::new(controls.into_iter().map(|c| ((c.kind(), c.region().to_string()), c)).collect());
        let accounts = Arc::new(config.replication.share_accounts.clone());
        Replicator {
            account,
            config,
            sources: Batcher::new(load_sources(controls.clone(), accounts.clone())).gathering(LOOK_WINDOW),
            copies: Batcher::new(load_copies(controls.clone(), accounts)).gathering(LOOK_WINDOW),
            controls,
            leases,
            notifier,
            holder,
            metrics,
            in_flight: Mutex::new(HashMap::new()),
            deferred: Mutex::default(),
            woken: Mutex::default(),
            shares: Mutex::default(),
            copy_lease: COPY_LEASE,
            clock: Arc::new(SystemClock),
            outcomes: Default::default(),
        }
    }

    /// Puts `bunker Copy Completed` on the bus (`events.bus`) when a DR copy this process
    /// waited for is seen available.
    pub fn with_outcomes(mut self, outcomes: crate::outcomes::Outcomes) -> Self {
        self.outcomes = outcomes;
        self
    }

    /// Lease times come from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Copy claims last `lease` unless renewed (whole seconds, at least one).
    pub fn with_copy_lease(mut self, lease: Duration) -> Self {
        self.copy_lease = lease.max(Duration::from_secs(1));
        self
    }

    fn control(&self, kind: ResourceKind, region: &str) -> Result<&Arc<dyn Replication>, JobError> {
        self.controls
            .get(&(kind, region.to_string()))
            .ok_or_else(|| JobError::NotServed { kind, region: region.into() })
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

    /// Records whether the copy `key` into (kind, region) is still pending; `true` when a copy
    /// this process counted as in flight has just become available.
    fn update_in_flight(&self, kind: ResourceKind, region: &str, key: &str, pending: bool) -> bool {
        let mut m = self.in_flight.lock().expect("in-flight lock");
        let set = m.entry((kind, region.to_string())).or_default();
        let changed = if pending { set.insert(key.to_string()) } else { set.remove(key) };
        if changed {
            self.publish_in_flight(kind, region, set.len());
        }
        drop(m);
        if changed && !pending {
            self.wake_deferred(kind, region);
        }
        changed && !pending
    }

    /// Queues `job` (`wait`) as waiting for a copy slot in (its kind, `region`), or takes it
    /// off that queue (it got its slot).
    fn defer(&self, region: &str, job: BackupRef, wait: bool) {
        let mut deferred = self.deferred.lock().expect("deferred lock");
        let queue = deferred.entry((job.kind, region.to_string())).or_default();
        match wait {
            true if !queue.contains(&job) => queue.push_back(job),
            true => {}
            false => queue.retain(|j| *j != job),
        }
    }

    /// A copy slot in (kind, region) was freed: the job deferred longest is looked at now.
    fn wake_deferred(&self, kind: ResourceKind, region: &str) {
        let next = self
            .deferred
            .lock()
            .expect("deferred lock")
            .get_mut(&(kind, region.to_string()))
            .and_then(|q| q.pop_front());
        self.woken.lock().expect("woken lock").extend(next);
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
    pub async fn advance(&self, b: &BackupRef) -> (Pass, Vec<Entry>) {
        let look = match self.look(b).await {
            Ok(look) => look,
            Err(pass) => {
                if matches!(pass, Pass::NotOurs(_)) {
                    self.forget_shares(b);
                }
                return (pass, vec![]);
            }
        };
        let r = &self.config.replication;
        let share_key = r.share_kms_keys.get(&b.region).map(String::as_str);
        let targets = Targets::for_kind(b.kind, &r.dr_regions, &r.share_accounts, share_key);
        let copies: BTreeMap<String, BackupState> =
            look.copies.iter().map(|(region, c)| (region.clone(), state(c.clone()))).collect();
        let source = state(look.detail.clone());
        let plan =
            replication::plan(targets, &b.region, &source, &copies, look.reencrypted.clone().map(state).as_ref());
        if plan.is_done() {
            self.forget_shares(b);
            return (Pass::Done, vec![]);
        }
        let results = join_all(plan.steps.iter().map(|s| self.step(b, &look, s))).await;
        let mut waiting: Vec<String> = plan.waiting.iter().map(|w| format!("{w} pending")).collect();
        let (mut retry, mut entries) = (None, Vec::new());
        for (res, e) in results {
            match res {
                StepResult::Made => {}
                StepResult::Deferred(why) => waiting.push(why),
                StepResult::Failed(why) => retry = Some(why),
            }
            entries.extend(e);
        }
        if let Some(e) = retry {
            return (Pass::Retry(e), entries);
        }
        // Effects were made (or deferred): look again to see copies become available and
        // share them, or to find that all is done.
        if waiting.is_empty() {
            (Pass::Progress, entries)
        } else {
            (Pass::Waiting { next_check: None, why: waiting.join(", ") }, entries)
        }
    }

    /// The look of a pass: the backup (batched), its DR copies and its re-encrypted copy
    /// (batched by tag), each with the shares this process knows where the port's looks do
    /// not report them. `Err` is how the pass ends instead.
    async fn look(&self, b: &BackupRef) -> Result<Look, Pass> {
        if let Err(e) = self.control(b.kind, &b.region) {
            return Err(Pass::NotOurs(e.to_string()));
        }
        let detail = match self.sources.get((b.kind, b.region.clone()), b.id.clone()).await {
            Ok(Some(d)) => self.with_known_shares(b, &b.region, d),
            Ok(None) => return Err(Pass::NotOurs("no longer exists".into())),
            Err(e) => return Err(self.retry(e)),
        };
        if let Err(why) = self.owned(&b.region, &detail) {
            self.wake_source_of(b.kind, &detail);
            return Err(Pass::NotOurs(why));
        }
        let r = &self.config.replication;
        let copy_of = replication::copy_of(&b.region, &b.id);
        let name = detail.tags.get("Name").cloned().unwrap_or_else(|| b.id.clone());
        let mut look = Look { detail, name, copy_of, copies: BTreeMap::new(), reencrypted: None };
        if !look.detail.available {
            return Ok(look);
        }
        let share_key = r.share_kms_keys.get(&b.region).map(String::as_str);
        let targets = Targets::for_kind(b.kind, &r.dr_regions, &r.share_accounts, share_key);
        for region in targets.dr_regions.iter().filter(|x| **x != b.region) {
            self.control(b.kind, region).map_err(Pass::Retry)?;
            let group = (b.kind, region.clone(), tags::COPY_OF);
            match self.copies.get(group, (look.copy_of.clone(), look.name.clone())).await {
                Ok(Some(c)) => {
                    if self.update_in_flight(b.kind, region, &look.copy_of, !c.available) {
                        self.copy_completed(b, region, &c.id).await;
                    }
                    look.copies.insert(region.clone(), self.with_known_shares(b, region, c));
                }
                Ok(None) => {}
                Err(e) => return Err(self.retry(e)),
            }
        }
        let source = state(look.detail.clone());
        if !targets.share_accounts.is_empty() && replication::needs_reencryption(&source, targets.share_key) {
            let group = (b.kind, b.region.clone(), tags::REENCRYPTED_OF);
            let wanted = (look.copy_of.clone(), replication::reencrypted_name(&look.name));
            let found = self.copies.get(group, wanted).await.map_err(|e| self.retry(e))?;
            if let Some(c) = &found {
                // A re-encrypted copy is a step towards a share, not a DR copy: no event.
                self.update_in_flight(b.kind, &b.region, &format!("re:{}", look.copy_of), !c.available);
            }
            look.reencrypted = found.map(|c| self.with_known_shares(b, &b.region, c));
        }
        Ok(look)
    }

    /// A copy was looked at as if it were a job of its own (an event said it became available:
    /// an AMI's or RDS snapshot's copy names no source): its source's job, if open, looks now
    /// — the copy's slot frees and the copy is shared without waiting for the timer.
    fn wake_source_of(&self, kind: ResourceKind, copy: &BackupDetail) {
        let of = copy.tags.get(tags::COPY_OF).or_else(|| copy.tags.get(tags::REENCRYPTED_OF));
        if let Some((region, id)) = of.and_then(|v| v.split_once(':')) {
            let source = BackupRef { kind, region: region.into(), id: id.into() };
            self.woken.lock().expect("woken lock").push(source);
        }
    }

    /// This process has just made backup `b` (a scheduled create): nobody shares it yet, so its
    /// job need not read that where looks do not report shares. Call before handing `b` over.
    pub fn made(&self, b: &BackupRef) {
        if !self.config.replication.share_accounts.is_empty() {
            self.learn_share(b, &b.region, &b.id, None);
        }
    }

    /// Whether the port of (kind, region) leaves shares to the replicator (its looks do not
    /// report them: RDS).
    fn infers_shares(&self, kind: ResourceKind, region: &str) -> bool {
        self.control(kind, region).is_ok_and(|c| !c.looks_report_shares())
    }

    /// `d` (in `region`, looked at by `job`) with the shares the job knows, where its port's
    /// looks do not report shares (RDS); as it is otherwise.
    fn with_known_shares(&self, job: &BackupRef, region: &str, mut d: BackupDetail) -> BackupDetail {
        if self.infers_shares(job.kind, region) {
            let known = self.shares.lock().expect("shares lock");
            let of_job = known.get(job).and_then(|k| k.get(&(region.to_string(), d.id.clone())));
            d.shared_with = of_job.into_iter().flatten().cloned().collect();
        }
        d
    }

    /// Who backup `id` in `region` is shared with, for a port whose looks do not say: what
    /// `job` knows, else one read (then known).
    async fn shares_of(
        &self,
        job: &BackupRef,
        ctl: &dyn Replication,
        region: &str,
        id: &str,
    ) -> Result<BTreeSet<String>, PortError> {
        let at = (region.to_string(), id.to_string());
        if let Some(known) = self.shares.lock().expect("shares lock").get(job).and_then(|k| k.get(&at)) {
            return Ok(known.clone());
        }
        let read: BTreeSet<String> = ctl.shared_with(id).await?.into_iter().collect();
        let mut known = self.shares.lock().expect("shares lock");
        known.entry(job.clone()).or_default().entry(at).or_default().extend(read.iter().cloned());
        Ok(read)
    }

    /// Records what an effect of `job` made known: `account` (if any) now shares backup `id`
    /// in `region`, or a backup just made is shared with nobody. Only for ports whose looks do
    /// not report shares.
    fn learn_share(&self, job: &BackupRef, region: &str, id: &str, account: Option<&str>) {
        if self.infers_shares(job.kind, region) {
            let mut known = self.shares.lock().expect("shares lock");
            let set = known.entry(job.clone()).or_default().entry((region.to_string(), id.to_string())).or_default();
            set.extend(account.map(String::from));
        }
    }

    /// `job` ended (done, not ours, gave up): what it knew of its backups' shares goes, so a
    /// later scan reads them again (and re-makes a share removed by hand).
    fn forget_shares(&self, job: &BackupRef) {
        self.shares.lock().expect("shares lock").remove(job);
    }

    async fn copy_completed(&self, b: &BackupRef, region: &str, copy_id: &str) {
        let detail = bus::CopyCompleted {
            schema: bus::COPY_COMPLETED_SCHEMA,
            account: self.account.clone(),
            kind: b.kind,
            source_region: b.region.clone(),
            source_backup_id: b.id.clone(),
            region: region.to_string(),
            backup_id: copy_id.to_string(),
            time: self.clock.now(),
        };
        self.outcomes.emit(vec![bus::copy_completed(&detail)]).await;
    }

    fn retry(&self, e: PortError) -> Pass {
        self.aws_error(&e);
        Pass::Retry(e.into())
    }

    async fn step(&self, b: &BackupRef, look: &Look, step: &Step) -> (StepResult, Option<Entry>) {
        match step {
            Step::Reencrypt => self.reencrypt(b, look).await,
            Step::Share { region, id, account } => match look.find(region, id, &b.region) {
                Some(backup) => self.share(b, region, backup, account).await,
                None => {
                    let e =
                        PortError::new(ErrorKind::Internal, None, format!("planned a share of {id}, not looked at"));
                    (StepResult::Failed(e.into()), None)
                }
            },
            Step::Copy { to_region } => {
                let deployment = self.config.deployment_id(&self.account, to_region);
                let request = CopyRequest {
                    source_region: b.region.clone(),
                    source_account: self.account.clone(),
                    source_id: b.id.clone(),
                    name: look.name.clone(),
                    tags: replication::copy_tags(&look.detail.tags, &b.region, &b.id, &deployment),
                    kms_key: self.config.replication.dr_kms_keys.get(to_region).cloned(),
                    encrypted: look.detail.encrypted,
                };
                let base = entry(Operation::CopyBackup, EntryStatus::Ok, to_region, &b.id);
                match self.start_copy(b.kind, to_region, &look.copy_of, &request, &base).await {
                    Ok(id) => {
                        info!(region = %b.region, backup_id = %b.id, to_region = %to_region, copy_id = %id, "copy started");
                        let msg = format!("copy {id} of {}", look.copy_of);
                        (StepResult::Made, Some(Entry { message: Some(msg), ..base }))
                    }
                    Err(not_started) => not_started,
                }
            }
        }
    }

    /// Copies the source in its own region under the share key (it is shared instead).
    async fn reencrypt(&self, b: &BackupRef, look: &Look) -> (StepResult, Option<Entry>) {
        let mut t = look.detail.tags.clone();
        t.insert(tags::REENCRYPTED_OF.into(), look.copy_of.clone());
        let name = replication::reencrypted_name(&look.name);
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
        match self.start_copy(b.kind, &b.region, &format!("re:{}", look.copy_of), &request, &base).await {
            Ok(id) => {
                info!(region = %b.region, backup_id = %b.id, copy_id = %id, "re-encrypted for sharing");
                let msg = format!("re-encrypted copy {id} under the share key (shared instead)");
                (StepResult::Made, Some(Entry { message: Some(msg), ..base }))
            }
            Err(not_started) => not_started,
        }
    }

    /// Shares `backup` in `region` (of job `b`) with `account`. Where the port's looks do not
    /// report shares, they are first taken from what the job knows, or read once (a replayed
    /// job), and an account that already has access is left as it is.
    async fn share(
        &self,
        b: &BackupRef,
        region: &str,
        backup: &BackupDetail,
        account: &str,
    ) -> (StepResult, Option<Entry>) {
        let ctl = match self.control(b.kind, region) {
            Ok(c) => c,
            Err(e) => return (StepResult::Failed(e), None),
        };
        let base = Entry {
            message: Some(format!("shared with {account}")),
            ..entry(Operation::ShareBackup, EntryStatus::Ok, region, &backup.id)
        };
        if !ctl.looks_report_shares() {
            match self.shares_of(b, ctl.as_ref(), region, &backup.id).await {
                Ok(known) if known.contains(account) => return (StepResult::Made, None),
                Ok(_) => {}
                Err(e) => return self.failed(e, base),
            }
        }
        match ctl.share_backup(backup, account).await {
            Ok(()) => {
                info!(region = %region, backup_id = %backup.id, account = %account, "backup shared");
                self.learn_share(b, region, &backup.id, Some(account));
                (StepResult::Made, Some(base))
            }
            Err(e) => self.failed(e, base),
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
        let job = BackupRef { kind, region: request.source_region.clone(), id: request.source_id.clone() };
        if !self.reserve(kind, region, key) {
            self.metrics.inc(crate::metrics::Metric::DeferralsTotal, &[("reason", "concurrency_cap")]);
            self.defer(region, job, true);
            return Err((StepResult::Deferred(format!("copy into {region}: concurrency cap")), None));
        }
        self.defer(region, job.clone(), false);
        let started = self.claim_and_copy(kind, region, key, request, base).await;
        match &started {
            // A copy made just now is shared with nobody.
            Ok(id) => self.learn_share(&job, region, id, None),
            // The slot reserved for a copy that did not start: freed, not completed.
            Err(_) => {
                self.update_in_flight(kind, region, key, false);
            }
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
        let now = self.clock.unix();
        match self.leases.claim(&lease_key, &self.holder, now, now + secs).await {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.inc(crate::metrics::Metric::DeferralsTotal, &[("reason", "lease_held")]);
                return Err((StepResult::Deferred(format!("copy into {region}: claimed by another instance")), None));
            }
            Err(e) => {
                self.aws_error(&e);
                return Err((StepResult::Failed(e.into()), None));
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
                let now = self.clock.unix();
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
                (StepResult::Failed(e.into()), Some(Entry { status: EntryStatus::Error, message: Some(msg), ..base }))
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

    /// Where failures are published (the error topic).
    pub fn alerts(&self) -> Alerts {
        Alerts::new(self.notifier.clone(), self.config.error_sns_topic.clone())
    }

    fn kinds(&self) -> BTreeSet<ResourceKind> {
        self.controls.keys().map(|(k, _)| *k).collect()
    }
}

#[async_trait]
impl Workflow for Replicator {
    type Key = BackupRef;
    const NAME: &'static str = "replicator";
    /// A job holds no resource but a copy slot under the cap: a fleet's jobs go at once and
    /// share batched looks.
    const FAN_OUT: usize = crate::engine::FAN_OUT;

    async fn pass(&self, b: &BackupRef) -> (Pass, Vec<Entry>) {
        self.advance(b).await
    }

    async fn owned(&self, kind: Option<ResourceKind>) -> Result<Vec<BackupRef>, PortError> {
        let mut out = Vec::new();
        for k in self.kinds().into_iter().filter(|k| kind.is_none_or(|o| o == *k)) {
            out.extend(self.owned_backups(k).await?);
        }
        Ok(out)
    }

    fn enabled(&self) -> bool {
        self.config.replication.is_enabled()
    }

    fn woken(&self) -> Vec<BackupRef> {
        std::mem::take(&mut *self.woken.lock().expect("woken lock"))
    }

    /// A job that gave up forgets what it knew of shares (its next run reads them again).
    async fn abandon(&self, b: &BackupRef) {
        self.forget_shares(b);
    }

    fn gave_up_entry(&self, b: &BackupRef, reason: &str) -> Option<Entry> {
        Some(Entry {
            message: Some(reason.into()),
            ..entry(Operation::CopyBackup, EntryStatus::Error, &b.region, &b.id)
        })
    }

    fn gave_up_subject(&self, b: &BackupRef) -> String {
        format!("bunker {} copy/share failed", b.kind)
    }
}

/// The batched look at backups by id: one [`Replication::describe_backups`] per (kind, region)
/// for every job asking at once.
fn load_sources(
    controls: Arc<HashMap<(ResourceKind, String), Arc<dyn Replication>>>,
    accounts: Arc<Vec<String>>,
) -> Load<(ResourceKind, String), String, BackupDetail> {
    Arc::new(move |(kind, region), ids| {
        let (ctl, accounts) = (controls.get(&(kind, region.clone())).cloned(), accounts.clone());
        Box::pin(async move {
            let ctl = ctl.ok_or_else(|| not_served(kind, &region))?;
            let found = ctl.describe_backups(&ids, &accounts).await?;
            Ok(found.into_iter().map(|d| (d.id.clone(), d)).collect())
        })
    })
}

/// The batched look at copies by tag value: one [`Replication::find_copies`] per (kind,
/// region, tag) for every job asking at once.
fn load_copies(
    controls: Arc<HashMap<(ResourceKind, String), Arc<dyn Replication>>>,
    accounts: Arc<Vec<String>>,
) -> Load<(ResourceKind, String, &'static str), (String, String), BackupDetail> {
    Arc::new(move |(kind, region, tag), wanted: Vec<(String, String)>| {
        let (ctl, accounts) = (controls.get(&(kind, region.clone())).cloned(), accounts.clone());
        Box::pin(async move {
            let ctl = ctl.ok_or_else(|| not_served(kind, &region))?;
            let mut found: HashMap<String, BackupDetail> =
                ctl.find_copies(tag, &wanted, &accounts).await?.into_iter().collect();
            Ok(wanted.into_iter().filter_map(|w| Some((w.clone(), found.remove(&w.0)?))).collect())
        })
    })
}

/// A (kind, region) without a port: the job that asked is told as a permanent error.
fn not_served(kind: ResourceKind, region: &str) -> PortError {
    PortError::new(ErrorKind::Invalid, None, format!("{kind} in {region} is not served"))
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

/// What one pass saw of a job's backups.
struct Look {
    /// The source backup.
    detail: BackupDetail,
    /// Its `Name` tag, else its id: the name of its copies.
    name: String,
    /// The `bunker:copy_of` value of its copies.
    copy_of: String,
    /// Its DR copies found, by region.
    copies: BTreeMap<String, BackupDetail>,
    /// Its re-encrypted copy (for sharing), if found.
    reencrypted: Option<BackupDetail>,
}

impl Look {
    /// The backup `id` in `region` among those looked at (the source is in `source_region`).
    fn find(&self, region: &str, id: &str, source_region: &str) -> Option<&BackupDetail> {
        let here = (region == source_region).then_some(&self.detail).into_iter().chain(&self.reencrypted);
        here.chain(self.copies.get(region)).find(|d| d.id == id)
    }
}

enum StepResult {
    Made,
    Deferred(String),
    Failed(JobError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{FakeControl, MemoryLeases, RecordingNotifier};
    use actix::Actor;
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
        let logic = Arc::new(replicator(&home, &dr, notifier.clone()));
        World { home, dr, logic, notifier }
    }

    /// A replicator (a process) over `home` and its DR region `dr`, sharing with one account.
    fn replicator(home: &Arc<FakeControl>, dr: &Arc<FakeControl>, notifier: Arc<RecordingNotifier>) -> Replicator {
        let config = cfg(&[
            (Key::Regions, "us-east-1"),
            (Key::DrRegions, "us-west-2"),
            (Key::ShareAccounts, "111111111111"),
            (Key::ErrorSnsTopic, "arn:aws:sns:us-east-1:123456789012:errors"),
        ]);
        Replicator::new(
            "123456789012".into(),
            config,
            vec![home.clone(), dr.clone()],
            Arc::new(MemoryLeases::default()),
            notifier,
            "test".into(),
            Arc::new(Metrics::default()),
        )
    }

    /// Passes over `b` until its job is done (at most 5); the entries of all of them.
    async fn until_done(logic: &Replicator, b: &BackupRef) -> Vec<Entry> {
        let mut entries = vec![];
        for _ in 0..5 {
            let (pass, e) = logic.advance(b).await;
            entries.extend(e);
            match pass {
                Pass::Done => return entries,
                Pass::Progress => {}
                other => panic!("pass ended {other:?}"),
            }
        }
        panic!("not done in 5 passes: {entries:?}")
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

    impl Replicator {
        /// A pass, with the job it was for.
        async fn advance_owned(&self, b: BackupRef) -> (BackupRef, (Pass, Vec<Entry>)) {
            let out = self.advance(&b).await;
            (b, out)
        }
    }

    #[tokio::test]
    async fn converges_in_passes_and_never_copies_twice() {
        let w = world();
        add_backup(&w.home, "snap-1", "bunker-123456789012-us-east-1");
        let (o1, e1) = w.logic.advance(&snap("snap-1")).await;
        assert_eq!(o1, Pass::Progress);
        assert_eq!(e1.len(), 2, "one share, one copy: {e1:?}");
        let (o2, e2) = w.logic.advance(&snap("snap-1")).await;
        assert_eq!(o2, Pass::Progress, "the copy is shared in the second pass");
        assert_eq!(e2.len(), 1);
        assert_eq!(w.logic.advance(&snap("snap-1")).await.0, Pass::Done);
        assert_eq!(w.logic.in_flight(ResourceKind::Ebs, "us-west-2"), 0, "the finished copy no longer counts");
        let dr = w.dr.state.lock().unwrap();
        assert_eq!(dr.backups.len(), 1);
        let copy = dr.backups.values().next().unwrap();
        assert_eq!(copy.tags[tags::COPY_OF], "us-east-1:snap-1");
        assert_eq!(copy.tags[tags::DEPLOYMENT], "bunker-123456789012-us-west-2");
        assert_eq!(dr.shared[&copy.id], ["111111111111"]);
        assert_eq!(w.home.state.lock().unwrap().shared["snap-1"], ["111111111111"]);
    }

    /// Issue 15: where looks do not report shares (RDS reads them one snapshot at a time), a
    /// job takes the shares it made as the state. A new backup and its copy are each shared
    /// once, with one read — of the source, which this process did not make — and none of the
    /// copy it made, nor of a backup its scheduler made; what it knew goes when the job ends. A replayed job (another process)
    /// reads each once and shares nothing again; a share removed by hand is made again.
    #[tokio::test]
    async fn shares_the_looks_cannot_see_are_inferred_and_read_only_where_unknown() {
        let w = world();
        for c in [&w.home, &w.dr] {
            c.state.lock().unwrap().looks_hide_shares = true;
        }
        add_backup(&w.home, "snap-1", "bunker-123456789012-us-east-1");
        let shares = |e: &[Entry]| e.iter().filter(|e| e.operation == Operation::ShareBackup).count();
        let reads = |c: &FakeControl| c.state.lock().unwrap().share_reads;
        let first = until_done(&w.logic, &snap("snap-1")).await;
        assert_eq!(shares(&first), 2, "the backup and its copy: {first:?}");
        assert_eq!((reads(&w.home), reads(&w.dr)), (1, 0), "the source read once, the copy never");
        let copy_id = w.dr.backup_ids()[0].clone();
        assert_eq!(w.dr.state.lock().unwrap().shared[&copy_id], ["111111111111"]);
        assert_eq!(w.home.state.lock().unwrap().shared["snap-1"], ["111111111111"]);
        assert!(w.logic.shares.lock().unwrap().is_empty(), "forgotten when the job ended");
        // A backup this process made (a scheduled create) is shared with nobody: no read.
        add_backup(&w.home, "snap-2", "bunker-123456789012-us-east-1");
        w.logic.made(&snap("snap-2"));
        assert_eq!(shares(&until_done(&w.logic, &snap("snap-2")).await), 2);
        assert_eq!((reads(&w.home), reads(&w.dr)), (1, 0), "nothing read for a backup made here");

        let replay = replicator(&w.home, &w.dr, w.notifier.clone());
        assert_eq!(shares(&until_done(&replay, &snap("snap-1")).await), 0, "nothing shared twice");
        assert_eq!((reads(&w.home), reads(&w.dr)), (2, 1), "a replay reads each backup once");

        w.dr.state.lock().unwrap().shared.clear();
        let repair = replicator(&w.home, &w.dr, w.notifier.clone());
        let again = until_done(&repair, &snap("snap-1")).await;
        assert_eq!(shares(&again), 1, "{again:?}");
        assert_eq!(again[0].backup_id.as_deref(), Some(copy_id.as_str()));
        assert_eq!(w.dr.state.lock().unwrap().shared[&copy_id], ["111111111111"]);
    }

    /// Issue 15: a scheduled create tells the replicator what it made
    /// ([`Executor::telling`](crate::scheduler::Executor::telling)), so where looks do not
    /// report shares (RDS) the new backups' jobs read none: every share is made, none read.
    #[test]
    fn a_scheduled_create_tells_the_replicator_what_it_made() {
        use crate::scheduler::{Action, Executor, KindRunners};
        let w = world();
        for c in [&w.home, &w.dr] {
            c.state.lock().unwrap().looks_hide_shares = true;
        }
        for i in 0..3 {
            w.home.add_resource(&format!("vol-{i}"), &[("bunker:create_backup", "true")]);
        }
        let settings = Arc::new(bunker_protocol::config::Resolved::new(defaults()).unwrap());
        let home: Arc<dyn crate::ports::BackupControl> = w.home.clone();
        let runner = Arc::new(crate::runner::Runner::new(
            "123456789012".into(),
            ResourceKind::Ebs,
            vec![home],
            w.notifier.clone(),
            settings,
        ));
        let logic = w.logic.clone();
        let sys = actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
        });
        let report = sys.block_on(async move {
            let (metrics, alerts) = (logic.metrics.clone(), logic.alerts());
            let addr = ReplicatorActor::new(logic.clone(), Duration::from_millis(10), metrics, alerts).start();
            let runners = HashMap::from([(ResourceKind::Ebs, KindRunners { create: runner.clone(), clean: runner })]);
            let exec = Executor::new(runners, addr.recipient(), Arc::default()).telling(logic);
            exec.run(Action::Create, ResourceKind::Ebs, None).await.unwrap()
        });
        assert_eq!(report.summary.failed, 0, "{report:?}");
        let (home, dr) = (w.home.state.lock().unwrap(), w.dr.state.lock().unwrap());
        assert_eq!((home.backups.len(), dr.backups.len()), (3, 3), "three backups, three copies");
        for id in home.backups.keys() {
            assert_eq!(home.shared.get(id).map(Vec::as_slice), Some(&["111111111111".to_string()][..]), "{id}");
        }
        for id in dr.backups.keys() {
            assert_eq!(dr.shared.get(id).map(Vec::as_slice), Some(&["111111111111".to_string()][..]), "{id}");
        }
        assert_eq!((home.share_reads, dr.share_reads), (0, 0), "no share read for backups made here");
        assert!(w.logic.shares.lock().unwrap().is_empty(), "forgotten when the jobs ended");
    }

    /// Issue 15: an event for a finished AMI or RDS copy names the copy, not its source: the
    /// copy's pass ends "not ours" and wakes the source's job, which frees the slot and shares
    /// the copy now.
    #[tokio::test]
    async fn a_pass_over_a_copy_wakes_its_sources_job() {
        let w = world();
        add_backup(&w.home, "snap-1", "bunker-123456789012-us-east-1");
        assert_eq!(w.logic.advance(&snap("snap-1")).await.0, Pass::Progress, "copy started");
        let copy = BackupRef { kind: ResourceKind::Ebs, region: "us-west-2".into(), id: w.dr.backup_ids()[0].clone() };
        let (pass, _) = w.logic.advance(&copy).await;
        assert!(matches!(&pass, Pass::NotOurs(why) if why.contains("us-east-1:snap-1")), "{pass:?}");
        assert_eq!(w.logic.woken(), [snap("snap-1")]);
        let foreign = BackupRef { id: "snap-9".into(), ..snap("snap-1") };
        add_backup(&w.home, "snap-9", "someone-else");
        assert!(matches!(w.logic.advance(&foreign).await.0, Pass::NotOurs(_)));
        assert!(w.logic.woken().is_empty(), "a backup not ours and no copy wakes nothing");
    }

    /// Issue 15: a copy the cap deferred is woken as soon as a slot frees — the engine asks
    /// `woken()` after every pass — instead of waiting for its job's next timer.
    #[tokio::test]
    async fn a_freed_copy_slot_wakes_the_job_the_cap_deferred() {
        let w = world();
        let n = copy_cap(ResourceKind::Ebs) + 1;
        for i in 0..n {
            add_backup(&w.home, &format!("snap-{i}"), "bunker-123456789012-us-east-1");
        }
        let passes = futures::future::join_all((0..n).map(|i| w.logic.advance_owned(snap(&format!("snap-{i}")))));
        let deferred: Vec<BackupRef> = passes
            .await
            .into_iter()
            .filter(|(_, (pass, _))| matches!(pass, Pass::Waiting { why, .. } if why.contains("cap")))
            .map(|(b, _)| b)
            .collect();
        assert_eq!(deferred.len(), 1, "one copy over the cap");
        assert!(w.logic.woken().is_empty(), "no slot freed yet");
        let first = (0..n).map(|i| snap(&format!("snap-{i}"))).find(|b| *b != deferred[0]).unwrap();
        assert_eq!(w.logic.advance(&first).await.0, Pass::Progress, "its copy is available: shared now");
        assert_eq!(w.logic.woken(), deferred, "the freed slot wakes the deferred job");
        assert!(w.logic.woken().is_empty(), "once");
        let (pass, entries) = w.logic.advance(&deferred[0]).await;
        assert_eq!(pass, Pass::Progress);
        assert!(entries.iter().any(|e| e.operation == Operation::CopyBackup), "{entries:?}");
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
            leases.claim(key, "other", SystemClock.unix(), SystemClock.unix() + 2).await.unwrap()
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
        assert!(matches!(o, Pass::Waiting { .. }), "{o:?}");
        let free = leases
            .claim("copy:us-east-1:snap-2:us-west-2", "other", SystemClock.unix(), SystemClock.unix() + 2)
            .await
            .unwrap();
        assert!(free, "a copy that did not start still holds its lease");
    }

    #[tokio::test]
    async fn foreign_and_copies_are_left_alone() {
        let w = world();
        add_backup(&w.home, "snap-f", "someone-else");
        let (o, _) = w.logic.advance(&snap("snap-f")).await;
        assert!(matches!(o, Pass::NotOurs(ref why) if why.contains("someone-else")), "{o:?}");
        assert!(w.dr.backup_ids().is_empty());
        assert!(matches!(w.logic.advance(&snap("snap-missing")).await.0, Pass::NotOurs(_)));
    }

    #[tokio::test]
    async fn quota_defers_without_error() {
        let w = world();
        add_backup(&w.home, "snap-1", "bunker-123456789012-us-east-1");
        w.dr.state.lock().unwrap().copy_quota_failures = 2;
        let (o, entries) = w.logic.advance(&snap("snap-1")).await;
        assert!(matches!(o, Pass::Waiting { ref why, .. } if why.contains("quota")), "{o:?}");
        assert!(entries.iter().all(|e| e.status != EntryStatus::Error), "{entries:?}");
        for _ in 0..4 {
            w.logic.advance(&snap("snap-1")).await;
        }
        assert_eq!(w.logic.advance(&snap("snap-1")).await.0, Pass::Done);
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
            let (metrics, alerts) = (logic.metrics.clone(), logic.alerts());
            let addr = ReplicatorActor::new(logic, Duration::from_millis(10), metrics, alerts).start();
            let sends = (0..3).map(|_| addr.send(Run(snap("snap-1"))));
            join_all(sends).await
        });
        for r in results {
            assert!(r.unwrap().unwrap().done());
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
