//! The data-bunker pull: in the bunker account, copy in every backup that a source account
//! (`source_accounts`) shared with it, with the bunker's own KMS key and ownership tags, so
//! the bunker's retention (`keep_*_pulled`) applies and the source can no longer delete it.
//!
//! No metadata inbox is needed: a shared backup's name (the RDS identifier, the EBS
//! description `bunker backup <name>`) carries its creation time and retention type, and the
//! copy's `bunker:pulled_from=<account>:<region>:<id>` tag is the idempotency key, so a pull
//! that fails half-way is resumed by the next one, never duplicated. Copied names carry a
//! hash of account, region and id, so equal names from two accounts never collide.

use std::sync::Arc;

use bunker_protocol::config::Config;
use bunker_protocol::report::{Entry, EntryStatus, Operation};
use bunker_protocol::{naming, tags, ResourceKind};
use futures::stream::{self, StreamExt};
use tracing::{info, warn};

use crate::engine::{Clock, SystemClock};
use crate::metrics::Metrics;
use crate::ports::{CopyRequest, ErrorKind, Pull, SharedBackup};

/// Pulls run this many copies at once per region (well under the per-region copy quotas).
const CONCURRENCY: usize = 5;

/// The pull logic for one account (the bunker).
pub struct Puller {
    account: String,
    config: Config,
    controls: Vec<Arc<dyn Pull>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
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

impl Puller {
    /// A puller over the ports of the bunker's regions (any kinds).
    pub fn new(account: String, config: Config, controls: Vec<Arc<dyn Pull>>, metrics: Arc<Metrics>) -> Self {
        Puller { account, config, controls, metrics, clock: Arc::new(SystemClock) }
    }

    /// Reports take their times from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// One pull of `kind` as a run report (`pull-backups`).
    pub async fn pull_report(
        &self,
        kind: ResourceKind,
        run_id: String,
        now: jiff::Timestamp,
    ) -> bunker_protocol::report::RunReport {
        let started = self.clock.now();
        let (collected, entries) = self.pull(kind, now).await;
        let regions: Vec<String> =
            self.controls.iter().filter(|c| c.kind() == kind).map(|c| c.region().to_string()).collect();
        let deployment = regions.iter().map(|r| self.config.deployment_id(&self.account, r)).collect::<Vec<_>>();
        bunker_protocol::report::RunReport::new(
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

    /// Pulls every shared backup of `kind` not yet pulled; returns (collected, entries).
    /// Pending shared backups are left for the next pull; a backup already expired under the
    /// bunker's retention at `now` is not pulled (again).
    pub async fn pull(&self, kind: ResourceKind, now: jiff::Timestamp) -> (usize, Vec<Entry>) {
        let accounts = &self.config.replication.source_accounts;
        let mut collected = 0;
        let mut entries = Vec::new();
        for ctl in self.controls.iter().filter(|c| c.kind() == kind) {
            let region = ctl.region();
            let shared = match ctl.list_shared(accounts).await {
                Ok(s) => s,
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
                    continue;
                }
            };
            collected += shared.len();
            let results: Vec<Option<Entry>> = stream::iter(shared)
                .map(|s| self.pull_one(ctl.as_ref(), s, now))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            entries.extend(results.into_iter().flatten());
        }
        (collected, entries)
    }

    async fn pull_one(&self, ctl: &dyn Pull, s: SharedBackup, now: jiff::Timestamp) -> Option<Entry> {
        let region = ctl.region();
        let Some((created_at, retention)) = s.name.as_deref().and_then(naming::parse_backup_name) else {
            return Some(entry(EntryStatus::Skipped, region, &s, "not a bunker backup name: left alone".into()));
        };
        let mut policy = self.config.policy();
        policy.keep = self.config.replication.pulled_keep(policy.keep);
        match policy.expires_at(created_at, &bunker_protocol::RetentionType::from_name(&retention)) {
            Ok(at) if at <= now => return None, // expired here: pulling it would only delete it again
            Ok(_) => {}
            Err(e) => return Some(entry(EntryStatus::Skipped, region, &s, format!("not pulled: {e}"))),
        }
        if !s.available {
            return Some(entry(EntryStatus::Skipped, region, &s, "not available yet: next pull".into()));
        }
        let from = format!("{}:{region}:{}", s.account, s.id);
        let name = naming::pulled_name(s.name.as_deref().unwrap_or(&s.id), &s.account, region, &s.id);
        match ctl.find_copy(tags::PULLED_FROM, &from, &name).await {
            Ok(Some(_)) => return None, // pulled before
            Ok(None) => {}
            Err(e) => return Some(entry(EntryStatus::Error, region, &s, e.to_string())),
        }
        let mut t = tags::Tags::new();
        t.insert(tags::MANAGED.into(), "true".into());
        t.insert(tags::DEPLOYMENT.into(), self.config.deployment_id(&self.account, region));
        t.insert(tags::KIND.into(), ctl.kind().as_str().into());
        t.insert(tags::SOURCE.into(), format!("{}/{}", s.account, s.source.as_deref().unwrap_or(&s.id)));
        t.insert(tags::CREATED_AT.into(), tags::format_timestamp(created_at));
        t.insert(tags::RETENTION.into(), retention.clone());
        t.insert(tags::PULLED_FROM.into(), from.clone());
        t.insert("Name".into(), name.clone());
        let request = CopyRequest {
            source_region: region.into(),
            source_account: s.account.clone(),
            source_id: s.id.clone(),
            name: name.clone(),
            tags: t,
            kms_key: self.config.replication.pull_kms_keys.get(region).cloned(),
            encrypted: s.encrypted,
        };
        match ctl.copy_backup(&request).await {
            Ok(id) => {
                info!(region, from = %from, copy_id = %id, "shared backup pulled");
                Some(Entry {
                    backup_name: Some(name),
                    retention: Some(retention),
                    ..entry(EntryStatus::Ok, region, &s, format!("pulled as {id}"))
                })
            }
            Err(e) if matches!(e.kind, ErrorKind::Quota | ErrorKind::Throttled) => {
                self.metrics.inc(crate::metrics::Metric::DeferralsTotal, &[("reason", "pull_quota")]);
                Some(entry(EntryStatus::Skipped, region, &s, format!("deferred to the next pull: {e}")))
            }
            Err(e) => Some(entry(EntryStatus::Error, region, &s, e.to_string())),
        }
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

    #[tokio::test]
    async fn pulls_once_with_unique_names_and_skips_strangers() {
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
        let p = Puller::new("999999999999".into(), resolve(&s).unwrap(), vec![ctl.clone()], Arc::default());
        let now = "2026-12-02T00:00:00Z".parse().unwrap();
        let (collected, entries) = p.pull(ResourceKind::Ebs, now).await;
        assert_eq!(collected, 3, "the unlisted account's share is not looked at");
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
        let (_, again) = p.pull(ResourceKind::Ebs, now).await;
        assert!(again.iter().all(|e| e.status != EntryStatus::Ok), "a second pull copies nothing: {again:#?}");
    }
}
