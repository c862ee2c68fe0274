//! The data-bunker pull: in the bunker account, copy in every backup that a source account
//! (`source_accounts`) shared with it, with the bunker's own KMS key and ownership tags, so
//! the bunker's retention (`keep_*_pulled`) applies and the source can no longer delete it.
//!
//! No metadata inbox is needed: a shared backup's name (the RDS identifier, the EBS
//! description `bunker backup <name>`) carries its creation time and retention type, and the
//! copy's `bunker:pulled_from=<account>:<region>:<id>` tag is the idempotency key, so a pull
//! that fails half-way is resumed by the next one, never duplicated. Copied names carry a
//! hash of account, region and id, so equal names from two accounts never collide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::Recipient;
use async_trait::async_trait;
use bunker_protocol::config::Config;
use bunker_protocol::report::{Entry, EntryStatus, Operation, RunReport};
use bunker_protocol::{naming, tags, ResourceKind};
use futures::stream::{self, StreamExt};
use tracing::{info, warn};

use crate::engine::{Clock, Pass, Run, SystemClock, Workflow};
use crate::metrics::Metrics;
use crate::ports::{CopyRequest, ErrorKind, PortError, Pull, SharedBackup};

/// Pulls run this many copies at once per region (well under the per-region copy quotas).
const CONCURRENCY: usize = 5;

/// One shared backup to pull: its kind, the bunker's region, the owner account and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PullRef {
    /// Kind.
    pub kind: ResourceKind,
    /// Region (the bunker's, where it is shared and copied).
    pub region: String,
    /// The account that shared it.
    pub account: String,
    /// Its id in that account.
    pub id: String,
}

impl crate::engine::JobKey for PullRef {
    fn kind_label(&self) -> &'static str {
        self.kind.as_str()
    }
}

impl std::fmt::Display for PullRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}:{}", self.kind, self.region, self.account, self.id)
    }
}

/// The pull logic for one account (the bunker): a [`Workflow`] whose jobs are shared backups.
/// A job is one or two passes: copied (then found, done), found (done), or left for the next
/// pull (not available, deferred by a quota, not a bunker backup, expired here).
pub struct Puller {
    account: String,
    config: Config,
    controls: Vec<Arc<dyn Pull>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// What the last listing said of each shared backup (a pass reads it, and lists again
    /// only for a key it does not know).
    seen: Mutex<HashMap<PullRef, SharedBackup>>,
}

fn entry(status: EntryStatus, region: &str, s: &SharedBackup, message: String) -> Entry {
    Entry {
        operation: Operation::PullBackup,
        status,
        region: region.into(),
        resource_id: s.source.clone(),
        backup_id: Some(format!("{}:{}", s.account, s.id)),
        backup_name: s.name.clone(),
        retention: None,
        message: Some(message),
    }
}

/// How one look at a shared backup ended.
enum Step {
    /// Pulled before (its copy exists).
    Done,
    /// A copy was started.
    Pulled(Entry),
    /// Nothing to do now: the next pull looks again (or never, for strangers and expired).
    Left(String, Option<Entry>),
    /// Failed; the entry says why.
    Failed(String, Entry),
}

impl Puller {
    /// A puller over the ports of the bunker's regions (any kinds).
    pub fn new(account: String, config: Config, controls: Vec<Arc<dyn Pull>>, metrics: Arc<Metrics>) -> Self {
        Puller { account, config, controls, metrics, clock: Arc::new(SystemClock), seen: Mutex::default() }
    }

    /// Expiry and report times come from `clock` (the CLI's `--now` starts it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn control(&self, kind: ResourceKind, region: &str) -> Option<&Arc<dyn Pull>> {
        self.controls.iter().find(|c| c.kind() == kind && c.region() == region)
    }

    /// One pull of `kind` as a run report (`pull-backups`): every shared backup is a job
    /// sent to `jobs` (the puller's job actor), five at once (`CONCURRENCY`).
    pub async fn pull_report(&self, jobs: &Recipient<Run<PullRef>>, kind: ResourceKind, run_id: String) -> RunReport {
        let started = self.clock.now();
        let (keys, mut entries) = self.list(kind).await;
        let collected = keys.len();
        let reports: Vec<_> =
            stream::iter(keys).map(|k| jobs.send(Run(k))).buffer_unordered(CONCURRENCY).collect().await;
        for r in reports {
            match r {
                Ok(Ok(job)) => entries.extend(job.entries),
                Ok(Err(e)) => warn!(kind = %kind, error = %e, "a pull job did not end; the next pull retries"),
                Err(e) => warn!(kind = %kind, error = %e, "puller unavailable; the next pull retries"),
            }
        }
        let regions: Vec<String> =
            self.controls.iter().filter(|c| c.kind() == kind).map(|c| c.region().to_string()).collect();
        let deployment = regions.iter().map(|r| self.config.deployment_id(&self.account, r)).collect::<Vec<_>>();
        RunReport::new(
            run_id,
            self.account.clone(),
            regions,
            kind,
            "pull-backups",
            deployment.join(","),
            false,
            started,
            self.clock.now(),
            collected,
            entries,
        )
    }

    /// Every backup of `kind` shared with this account by a source account, as job keys
    /// (remembered for the passes); a region that cannot be listed is an error entry.
    async fn list(&self, kind: ResourceKind) -> (Vec<PullRef>, Vec<Entry>) {
        let accounts = &self.config.replication.source_accounts;
        let (mut keys, mut entries) = (Vec::new(), Vec::new());
        for ctl in self.controls.iter().filter(|c| c.kind() == kind) {
            let region = ctl.region();
            match ctl.list_shared(accounts).await {
                Ok(shared) => {
                    let mut seen = self.seen.lock().expect("seen lock");
                    // This listing replaces the last one of this kind and region: nothing
                    // no longer shared is remembered.
                    seen.retain(|k, _| k.kind != kind || k.region != region);
                    for s in shared {
                        let key = PullRef { kind, region: region.into(), account: s.account.clone(), id: s.id.clone() };
                        seen.insert(key.clone(), s);
                        keys.push(key);
                    }
                }
                Err(e) => {
                    warn!(region, kind = %kind, error = %e, "listing shared backups failed");
                    entries.push(Entry {
                        operation: Operation::Discover,
                        status: EntryStatus::Error,
                        region: region.into(),
                        resource_id: None,
                        backup_id: None,
                        backup_name: None,
                        retention: None,
                        message: Some(e.to_string()),
                    });
                }
            }
        }
        (keys, entries)
    }

    /// What is known of `key`: from the last listing, else from a new one.
    async fn shared(&self, key: &PullRef) -> Result<Option<SharedBackup>, PortError> {
        if let Some(s) = self.seen.lock().expect("seen lock").get(key) {
            return Ok(Some(s.clone()));
        }
        let Some(ctl) = self.control(key.kind, &key.region) else { return Ok(None) };
        let found = ctl.list_shared(std::slice::from_ref(&key.account)).await?;
        Ok(found.into_iter().find(|s| s.id == key.id))
    }

    async fn pull_one(&self, ctl: &dyn Pull, s: SharedBackup) -> Step {
        let region = ctl.region();
        if !ctl.kind().shared_copyable() {
            let why = format!(
                "restorable, not copyable: a shared {} snapshot can only be restored by this account \
                 (RestoreFromClusterSnapshot with OwnerAccount {}), never copied; restore it here and \
                 back the restored cluster up to keep it",
                ctl.kind(),
                s.account
            );
            let e = entry(EntryStatus::Skipped, region, &s, why.clone());
            return Step::Left(why, Some(e));
        }
        let Some((created_at, retention)) = s.name.as_deref().and_then(naming::parse_backup_name) else {
            let e = entry(EntryStatus::Skipped, region, &s, "not a bunker backup name: left alone".into());
            return Step::Left("not a bunker backup".into(), Some(e));
        };
        let mut policy = self.config.policy();
        policy.keep = self.config.replication.pulled_keep(policy.keep);
        match policy.expires_at(created_at, &bunker_protocol::RetentionType::from_name(&retention)) {
            // Expired here: pulling it would only delete it again.
            Ok(at) if at <= self.clock.now() => {
                return Step::Left("expired under this account's retention".into(), None)
            }
            Ok(_) => {}
            Err(e) => {
                return Step::Left(
                    e.to_string(),
                    Some(entry(EntryStatus::Skipped, region, &s, format!("not pulled: {e}"))),
                )
            }
        }
        if !s.available {
            let e = entry(EntryStatus::Skipped, region, &s, "not available yet: next pull".into());
            return Step::Left("not available yet".into(), Some(e));
        }
        let from = format!("{}:{region}:{}", s.account, s.id);
        let name = naming::pulled_name(s.name.as_deref().unwrap_or(&s.id), &s.account, region, &s.id);
        match ctl.find_copy(tags::PULLED_FROM, &from, &name).await {
            Ok(Some(_)) => return Step::Done,
            Ok(None) => {}
            Err(e) => return Step::Failed(e.to_string(), entry(EntryStatus::Error, region, &s, e.to_string())),
        }
        let request = self.copy_request(ctl, &s, created_at, &retention, &from, &name);
        match ctl.copy_backup(&request).await {
            Ok(id) => {
                info!(region, from = %from, copy_id = %id, "shared backup pulled");
                Step::Pulled(Entry {
                    backup_name: Some(name),
                    retention: Some(retention),
                    ..entry(EntryStatus::Ok, region, &s, format!("pulled as {id}"))
                })
            }
            Err(e) if matches!(e.kind, ErrorKind::Quota | ErrorKind::Throttled) => {
                self.metrics.inc(crate::metrics::Metric::DeferralsTotal, &[("reason", "pull_quota")]);
                let msg = format!("deferred to the next pull: {e}");
                Step::Left(msg.clone(), Some(entry(EntryStatus::Skipped, region, &s, msg)))
            }
            Err(e) => Step::Failed(e.to_string(), entry(EntryStatus::Error, region, &s, e.to_string())),
        }
    }

    fn copy_request(
        &self,
        ctl: &dyn Pull,
        s: &SharedBackup,
        created_at: jiff::Timestamp,
        retention: &str,
        from: &str,
        name: &str,
    ) -> CopyRequest {
        let region = ctl.region();
        let mut t = tags::Tags::new();
        t.insert(tags::MANAGED.into(), "true".into());
        t.insert(tags::DEPLOYMENT.into(), self.config.deployment_id(&self.account, region));
        t.insert(tags::KIND.into(), ctl.kind().as_str().into());
        t.insert(tags::SOURCE.into(), format!("{}/{}", s.account, s.source.as_deref().unwrap_or(&s.id)));
        t.insert(tags::CREATED_AT.into(), tags::format_timestamp(created_at));
        t.insert(tags::RETENTION.into(), retention.to_string());
        t.insert(tags::PULLED_FROM.into(), from.to_string());
        t.insert("Name".into(), name.to_string());
        CopyRequest {
            source_region: region.into(),
            source_account: s.account.clone(),
            source_id: s.id.clone(),
            name: name.to_string(),
            tags: t,
            kms_key: self.config.replication.pull_kms_keys.get(region).cloned(),
            encrypted: s.encrypted,
        }
    }
}

#[async_trait]
impl Workflow for Puller {
    type Key = PullRef;
    const NAME: &'static str = "puller";

    async fn pass(&self, key: &PullRef) -> (Pass, Vec<Entry>) {
        let Some(ctl) = self.control(key.kind, &key.region) else {
            return (Pass::NotOurs(format!("{} in {} is not served", key.kind, key.region)), vec![]);
        };
        let s = match self.shared(key).await {
            Ok(Some(s)) => s,
            Ok(None) => return (Pass::NotOurs("no longer shared with this account".into()), vec![]),
            Err(e) => return (Pass::Retry(e.into()), vec![]),
        };
        match self.pull_one(ctl.as_ref(), s).await {
            Step::Done => (Pass::Done, vec![]),
            // The next pass finds the copy by its `bunker:pulled_from` tag.
            Step::Pulled(e) => (Pass::Progress, vec![e]),
            Step::Left(why, e) => (Pass::NotOurs(why), e.into_iter().collect()),
            Step::Failed(why, e) => (Pass::Failed(why), vec![e]),
        }
    }

    async fn owned(&self, kind: Option<ResourceKind>) -> Result<Vec<PullRef>, PortError> {
        let mut keys = Vec::new();
        for k in ResourceKind::ALL.into_iter().filter(|k| kind.is_none_or(|o| o == *k)) {
            keys.extend(self.list(k).await.0);
        }
        Ok(keys)
    }

    fn enabled(&self) -> bool {
        !self.config.replication.source_accounts.is_empty()
    }

    /// A failed pull's entry is recorded by its pass; the next pull tries again.
    fn gave_up_entry(&self, _key: &PullRef, _reason: &str) -> Option<Entry> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunker_protocol::config::{defaults, resolve, Key, Setting, Source};

    fn shared(account: &str, id: &str, name: &str) -> SharedBackup {
        SharedBackup {
            id: id.into(),
            account: account.into(),
            name: Some(name.into()),
            source: Some("vol-1".into()),
            available: true,
            encrypted: false,
        }
    }

    /// Runs `pull_report` twice on a real job actor; returns both reports.
    fn pull_twice(p: Arc<Puller>) -> (RunReport, RunReport) {
        use actix::Actor;
        let sys = actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
        });
        sys.block_on(async move {
            let alerts = crate::engine::Alerts::new(Arc::new(crate::testkit::RecordingNotifier::default()), None);
            let jobs =
                crate::engine::JobActor::new(p.clone(), std::time::Duration::from_secs(1), Arc::default(), alerts)
                    .start()
                    .recipient();
            let first = p.pull_report(&jobs, ResourceKind::Ebs, "r1".into()).await;
            let second = p.pull_report(&jobs, ResourceKind::Ebs, "r2".into()).await;
            (first, second)
        })
    }

    #[test]
    fn pulls_once_with_unique_names_and_skips_strangers() {
        let name = "data-20261201-010000-monthly-abcdef";
        let ctl = Arc::new(crate::testkit::FakeControl::new(ResourceKind::Ebs, "us-east-1"));
        ctl.state.lock().unwrap().shared_in = vec![
            shared("111111111111", "snap-1", name),
            shared("222222222222", "snap-1", name),
            shared("111111111111", "snap-2", "hand-made"),
            shared("333333333333", "snap-3", name),
        ];
        let mut s = defaults();
        s.push(Setting {
            key: Key::SourceAccounts,
            value: "111111111111,222222222222".into(),
            source: Source::Cli { flag: "x".into() },
        });
        let clock = Arc::new(crate::engine::TokioClock::starting_at("2026-12-02T00:00:00Z".parse().unwrap()));
        let p = Puller::new("999999999999".into(), resolve(&s).unwrap(), vec![ctl.clone()], Arc::default())
            .with_clock(clock);
        let (first, second) = pull_twice(Arc::new(p));
        let entries = first.entries.clone();
        assert_eq!(first.summary.collected, 3, "the unlisted account's share is not looked at");
        assert_eq!(entries.iter().filter(|e| e.status == EntryStatus::Ok).count(), 2, "{entries:#?}");
        assert_eq!(entries.iter().filter(|e| e.status == EntryStatus::Skipped).count(), 1);
        {
            let state = ctl.state.lock().unwrap();
            let names: std::collections::BTreeSet<_> = state.backups.values().map(|b| b.tags["Name"].clone()).collect();
            assert_eq!(names.len(), 2, "two accounts' equal names do not collide");
            let b = state.backups.values().next().unwrap();
            assert_eq!(b.tags[tags::RETENTION], "monthly");
            assert_eq!(b.tags[tags::CREATED_AT], "2026-12-01T01:00:00Z");
            assert_eq!(b.tags[tags::DEPLOYMENT], "bunker-999999999999-us-east-1");
        }
        let again = second.entries;
        assert!(again.iter().all(|e| e.status != EntryStatus::Ok), "a second pull copies nothing: {again:#?}");
    }
}
