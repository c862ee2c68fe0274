//! The snapshot dump workflow: an RDS DB snapshot restored to a temporary instance (smallest
//! class, private, no deletion protection, no automated backups, tagged temporary at
//! creation) — or an Aurora cluster snapshot to a temporary cluster plus one such instance —
//! a random master password kept in SSM Parameter Store for exactly as long as
//! the instance lives, [`dump_server`] against it, and both removed on success and on
//! failure. Each pass looks at AWS and the target and follows `protocol::dump_plan::plan`;
//! waiting is [`Pass::Waiting`], never a sleep; [`Workflow::sweep`] removes what a crash left.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bunker_protocol::archive::Source;
use bunker_protocol::dump::{DbUrl, Family};
use bunker_protocol::dump_plan::{self, Seen, Step};
use bunker_protocol::report::{Entry, EntryStatus};
use bunker_protocol::tags::{self, Tags};
use bunker_protocol::vault::PointRef;
use bunker_protocol::ResourceKind;
use tracing::{info, warn};

use super::{dump_server, Connection, DumpRequest, Secret, Server};
use crate::engine::{Clock, JobKey, Pass, SystemClock, Workflow};
use crate::ports::{DbInstanceInfo, DbSnapshotInfo, DumpInstances, ErrorKind, PortError, RestoreInstance, Secrets};
use crate::stream::export_job::ExportTargets;
use crate::stream::{StreamError, Tuning};

/// `format` of a dump's index object.
pub const INDEX_FORMAT: &str = "bunker-dump-index";

/// The index object: every archive of a snapshot's dump, written after the last one.
#[derive(serde::Serialize)]
struct DumpIndex<'a> {
    format: &'static str,
    snapshot: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_point: Option<&'a PointRef>,
    #[serde(flatten)]
    summary: &'a super::DumpSummary,
}

/// How long a temporary instance may live before a sweep removes it.
pub const TEMP_HOURS: i64 = 24;

/// One snapshot to dump to one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DumpKey {
    /// The snapshot's region.
    pub region: String,
    /// The DB snapshot (or DB cluster snapshot) identifier.
    pub snapshot: String,
    /// An Aurora DB cluster snapshot: restored as a cluster plus one instance.
    pub cluster: bool,
    /// Where the archives go (`s3://…` or `file://…`).
    pub to: String,
    /// The AWS Backup recovery point the snapshot is, when it is one (recorded in every
    /// manifest and in the index).
    pub point: Option<PointRef>,
}

impl fmt::Display for DumpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.cluster { "cluster snapshot " } else { "" };
        write!(f, "dump of {what}{} ({}) to {}", self.snapshot, self.region, self.to)
    }
}

impl JobKey for DumpKey {
    fn kind_label(&self) -> &'static str {
        if self.cluster { ResourceKind::RdsCluster } else { ResourceKind::Rds }.as_str()
    }
}

/// What every dump of this deployment shares.
#[derive(Debug, Clone)]
pub struct DumpSettings {
    /// This deployment's id in each region (the temporary tags, the instance and parameter
    /// names; `deployment` may name the region).
    pub deployments: BTreeMap<String, String>,
    /// `export.dump_instance_class` (default: the smallest class of the engine).
    pub instance_class: Option<String>,
    /// `export.dump_subnet_group`.
    pub subnet_group: Option<String>,
    /// `export.dump_security_group`.
    pub security_group: Option<String>,
    /// `export.kms_key`: the key of the password parameter.
    pub kms_key: Option<String>,
    /// A CA bundle to verify the instances' certificates with.
    pub tls_ca: Option<PathBuf>,
    /// zstd level.
    pub level: i32,
    /// `export.sha256`: archives also record their whole-image SHA-256.
    pub sha256: bool,
    /// How long to wait before looking again at an instance AWS is making
    /// (`export.task_poll`).
    pub poll: Duration,
}

/// The smallest instance class an engine allows for a restore.
pub fn default_class(engine: &str) -> &'static str {
    if engine.starts_with("aurora") {
        "db.t4g.medium"
    } else {
        "db.t4g.micro"
    }
}

/// The snapshot dump workflow (see the module documentation).
pub struct SnapshotDumps {
    settings: DumpSettings,
    instances: BTreeMap<String, Arc<dyn DumpInstances>>,
    secrets: BTreeMap<String, Arc<dyn Secrets>>,
    targets: Arc<dyn ExportTargets>,
    tuning: Tuning,
    clock: Arc<dyn Clock>,
}

impl SnapshotDumps {
    /// A workflow over the given regions' ports.
    pub fn new(
        settings: DumpSettings,
        instances: BTreeMap<String, Arc<dyn DumpInstances>>,
        secrets: BTreeMap<String, Arc<dyn Secrets>>,
        targets: Arc<dyn ExportTargets>,
        tuning: Tuning,
    ) -> SnapshotDumps {
        SnapshotDumps { settings, instances, secrets, targets, tuning, clock: Arc::new(SystemClock) }
    }

    fn names(&self, key: &DumpKey) -> (String, String) {
        let deployment = self.deployment(&key.region);
        let instance = dump_plan::instance_name(deployment, &key.snapshot, &key.to);
        let parameter = dump_plan::parameter_name(deployment, &instance);
        (instance, parameter)
    }

    /// This deployment's id in `region` (empty when the region is not served).
    fn deployment(&self, region: &str) -> &str {
        self.settings.deployments.get(region).map(String::as_str).unwrap_or_default()
    }

    fn ours(&self, tags: &Tags, region: &str) -> bool {
        tags.get(tags::TEMPORARY).map(String::as_str) == Some("true")
            && !self.deployment(region).is_empty()
            && tags.get(tags::DEPLOYMENT).map(String::as_str) == Some(self.deployment(region))
    }

    fn temp_tags(&self, key: &DumpKey) -> Tags {
        let expires = self.clock.now().as_second() + TEMP_HOURS * 3600;
        let expires = jiff::Timestamp::from_second(expires).unwrap_or(jiff::Timestamp::MAX);
        tags::temporary(self.deployment(&key.region), format!("dump of {}", key.snapshot), expires)
    }

    /// The names among `listed` that are this deployment's and past their
    /// `bunker:expires_at`.
    fn expired<'a>(&self, listed: &'a [(String, Tags)], region: &str) -> Vec<&'a String> {
        let now = self.clock.now();
        listed
            .iter()
            .filter(|(_, tags)| self.ours(tags, region) && expires_by(tags, now))
            .map(|(name, _)| name)
            .collect()
    }

    /// Whether both ports of the key's region exist (every pass indexes them).
    fn served(&self, key: &DumpKey) -> bool {
        self.instances.contains_key(&key.region) && self.secrets.contains_key(&key.region)
    }

    /// The archive name stem: the snapshot id, `:` as `-` (AWS Backup's `awsbackup:job-…`).
    fn stem(key: &DumpKey) -> String {
        key.snapshot.replace(':', "-")
    }

    /// The tags of the RDS resource `arn` in `region` (`None`: it is gone, or the region is
    /// not served).
    pub async fn resource_tags(&self, region: &str, arn: &str) -> Result<Option<Tags>, PortError> {
        match self.instances.get(region) {
            Some(instances) => instances.tags(arn).await,
            None => Ok(None),
        }
    }

    /// The index object of a snapshot's dump: written last, it marks the dump done.
    pub fn index_key(snapshot: &str) -> String {
        format!("{}.dumps.json", snapshot.replace(':', "-"))
    }

    async fn look(&self, key: &DumpKey, instance: &str, parameter: &str) -> Result<Seen, PortError> {
        let (instances, secrets) = (&self.instances[&key.region], &self.secrets[&key.region]);
        let done = match self.targets.store(&key.to, &key.region) {
            Ok(store) => store.size(&Self::index_key(&key.snapshot)).await?.is_some(),
            Err(_) => false,
        };
        let seen = |i: DbInstanceInfo| (i.status, self.ours(&i.tags, &key.region));
        let cluster = match key.cluster {
            true => Some(instances.cluster(instance).await?.map(seen)),
            false => None,
        };
        let seen_instance = instances.instance(instance).await?.map(seen);
        let password = secrets.get(parameter).await?.is_some();
        Ok(Seen { done, cluster, instance: seen_instance, password })
    }

    /// Removes what `seen` shows of this deployment's: the instance and cluster if they carry
    /// its temporary tags, and the password parameter.
    async fn remove_ours(&self, key: &DumpKey, seen: &Seen) -> Result<(), PortError> {
        let ours = |r: &Option<(String, bool)>| r.as_ref().is_some_and(|(_, ours)| *ours);
        let cluster = seen.cluster.as_ref().is_some_and(ours);
        self.remove(key, ours(&seen.instance), cluster, seen.password).await
    }

    /// Deletes the instance, then the cluster, then the parameter (each as asked; one
    /// already gone is fine).
    async fn remove(&self, key: &DumpKey, instance: bool, cluster: bool, parameter: bool) -> Result<(), PortError> {
        let (name, param) = self.names(key);
        let instances = &self.instances[&key.region];
        if instance {
            match instances.delete(&name).await {
                Err(e) if e.kind != ErrorKind::NotFound => return Err(e),
                _ => info!(instance = %name, "temporary dump instance deleted"),
            }
        }
        if cluster {
            match instances.delete_cluster(&name).await {
                Err(e) if e.kind != ErrorKind::NotFound => return Err(e),
                _ => info!(cluster = %name, "temporary dump cluster deleted"),
            }
        }
        if parameter {
            self.secrets[&key.region].delete(&param).await?;
        }
        Ok(())
    }
}

fn entry(key: &DumpKey, status: EntryStatus, message: Option<String>) -> Entry {
    Entry::export(&key.region, &key.snapshot, status, message)
}

/// Whether `tags` carry a `bunker:expires_at` at or before `now`.
fn expires_by(tags: &Tags, now: jiff::Timestamp) -> bool {
    tags.get(tags::EXPIRES_AT).and_then(|t| t.parse::<jiff::Timestamp>().ok()).is_some_and(|t| t <= now)
}

/// 32 random lowercase hex digits from the kernel's CSPRNG (valid in any RDS engine's
/// master password: no `/`, `@`, `"` or space).
fn random_password() -> Result<Secret, PortError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| PortError::new(ErrorKind::Internal, None, format!("reading /dev/urandom: {e}")))?;
    Ok(Secret::new(bunker_protocol::archive::hex(&bytes)))
}

impl SnapshotDumps {
    /// The snapshot (a DB cluster snapshot for a cluster key).
    async fn snapshot(&self, key: &DumpKey) -> Result<Option<DbSnapshotInfo>, PortError> {
        let instances = &self.instances[&key.region];
        match key.cluster {
            true => instances.cluster_snapshot(&key.snapshot).await,
            false => instances.snapshot(&key.snapshot).await,
        }
    }

    /// How to restore (or add) the temporary instance for `snap`.
    fn request(&self, key: &DumpKey, snap: &DbSnapshotInfo, instance: &str) -> RestoreInstance {
        RestoreInstance {
            snapshot: key.snapshot.clone(),
            engine: snap.engine.clone(),
            instance: instance.to_string(),
            class: self.settings.instance_class.clone().unwrap_or_else(|| default_class(&snap.engine).to_string()),
            subnet_group: self.settings.subnet_group.clone(),
            security_group: self.settings.security_group.clone(),
            tags: self.temp_tags(key),
        }
    }

    /// Restores the temporary instance (or cluster), after checking the snapshot can be
    /// dumped.
    async fn restore(&self, key: &DumpKey, instance: &str) -> Pass {
        let what = if key.cluster { "DB cluster snapshot" } else { "DB snapshot" };
        let snap = match self.snapshot(key).await {
            Ok(Some(s)) => s,
            Ok(None) => return Pass::Failed(format!("{what} {} does not exist in {}", key.snapshot, key.region)),
            Err(e) => return Pass::Retry(e.into()),
        };
        if let Err(msg) = Family::of_rds_engine(&snap.engine) {
            return Pass::Failed(format!("snapshot {}: {msg}", key.snapshot));
        }
        if snap.status != "available" {
            return Pass::Waiting {
                next_check: Some(self.settings.poll),
                why: format!("the snapshot is {}", snap.status),
            };
        }
        let request = self.request(key, &snap, instance);
        let instances = &self.instances[&key.region];
        let restored = match key.cluster {
            true => instances.restore_cluster(&request).await,
            false => instances.restore(&request).await,
        };
        match restored {
            Ok(()) | Err(PortError { kind: ErrorKind::AlreadyExists, .. }) => {
                info!(instance = %instance, snapshot = %key.snapshot, cluster = key.cluster, class = %request.class, "temporary dump instance restored");
                self.creating("the temporary instance is being created")
            }
            Err(e) => Pass::Retry(e.into()),
        }
    }

    /// The temporary cluster's instance.
    async fn add_instance(&self, key: &DumpKey, instance: &str) -> Pass {
        let snap = match self.snapshot(key).await {
            Ok(Some(s)) => s,
            Ok(None) => return Pass::Failed(format!("DB cluster snapshot {} is gone", key.snapshot)),
            Err(e) => return Pass::Retry(e.into()),
        };
        let request = self.request(key, &snap, instance);
        match self.instances[&key.region].add_instance(&request).await {
            Ok(()) | Err(PortError { kind: ErrorKind::AlreadyExists, .. }) => {
                info!(instance = %instance, class = %request.class, "instance added to the temporary dump cluster");
                self.creating("the temporary cluster's instance is being created")
            }
            Err(e) => Pass::Retry(e.into()),
        }
    }

    fn creating(&self, why: &str) -> Pass {
        Pass::Waiting { next_check: Some(self.settings.poll), why: why.into() }
    }

    /// A new random password: stored first (so a crash never leaves a password nobody
    /// knows), then set on the instance.
    async fn set_password(&self, key: &DumpKey, instance: &str, parameter: &str) -> Pass {
        let result = async {
            let password = random_password()?;
            self.secrets[&key.region].put(parameter, password.expose(), self.settings.kms_key.as_deref()).await?;
            let instances = &self.instances[&key.region];
            match key.cluster {
                true => instances.set_cluster_password(instance, password.expose()).await,
                false => instances.set_master_password(instance, password.expose()).await,
            }
        }
        .await;
        match result {
            Ok(()) => Pass::Waiting {
                next_check: Some(self.settings.poll / 2),
                why: "the master password is being reset".into(),
            },
            Err(e) => Pass::Retry(e.into()),
        }
    }
}

impl SnapshotDumps {
    /// Dumps the instance; on any failure the instance and the parameter are removed.
    async fn dump(&self, key: &DumpKey, instance: &str, parameter: &str) -> (Pass, Vec<Entry>) {
        match self.dump_instance(key, instance, parameter).await {
            Ok(archives) => {
                let msg = format!("{archives} archives to {}", key.to);
                (Pass::Progress, vec![entry(key, EntryStatus::Ok, Some(msg))])
            }
            Err(e @ StreamError::Input(_)) if e.to_string().contains("refused the login") => {
                // The reset is not applied yet, or was lost: drop the parameter so the next
                // pass sets a new password; bounded by the job's retries.
                let (_, parameter) = self.names(key);
                if let Err(d) = self.secrets[&key.region].delete(&parameter).await {
                    return (Pass::Retry(d.into()), vec![]);
                }
                (Pass::Retry(e.into()), vec![])
            }
            Err(e) => {
                warn!(snapshot = %key.snapshot, error = %e, "dump failed; removing the temporary instance");
                if let Err(r) = self.remove(key, true, key.cluster, true).await {
                    warn!(instance = %instance, error = %r, "temporary instance not removed; the next sweep removes it");
                }
                let reason = format!("dump of {} failed: {e}", key.snapshot);
                (Pass::Failed(reason.clone()), vec![entry(key, EntryStatus::Error, Some(reason))])
            }
        }
    }

    async fn dump_instance(&self, key: &DumpKey, instance: &str, parameter: &str) -> Result<usize, StreamError> {
        let port = |what: &str, e| StreamError::port(what.to_string(), e);
        let instances = &self.instances[&key.region];
        let snap = self.snapshot(key).await.map_err(|e| port("describing the snapshot", e))?;
        let snap = snap.ok_or_else(|| StreamError::Input(format!("snapshot {} is gone", key.snapshot)))?;
        // A cluster is reached through its writer endpoint.
        let info = match key.cluster {
            true => instances.cluster(instance).await,
            false => instances.instance(instance).await,
        };
        let info = info.map_err(|e| port("describing the instance", e))?;
        let Some((host, port_no)) = info.and_then(|i| i.endpoint) else {
            return Err(StreamError::Source(format!("{instance} has no endpoint")));
        };
        let password = self.secrets[&key.region].get(parameter).await.map_err(|e| port("reading the password", e))?;
        let family = Family::of_rds_engine(&snap.engine).map_err(StreamError::Input)?;
        let url = DbUrl { family, user: snap.master_user.clone(), host, port: port_no, database: None };
        let server =
            Server { url, password: password.map(Secret::new), tls_ca: self.settings.tls_ca.clone(), tools_dir: None };
        let conn = Connection::open(server).await?;
        let store = self.targets.store(&key.to, &key.region)?;
        let source = Source {
            kind: if key.cluster { "rds-cluster-snapshot" } else { "rds-snapshot" }.into(),
            id: key.snapshot.clone(),
            region: Some(key.region.clone()),
            recovery_point: key.point.clone(),
            ..Source::default()
        };
        let (level, sha256) = (self.settings.level, self.settings.sha256);
        let req = DumpRequest { stem: Self::stem(key), source, level, sha256, role_passwords: false };
        let summary = dump_server(&conn, store.clone(), &req, self.tuning, None).await?;
        let index = DumpIndex {
            format: INDEX_FORMAT,
            snapshot: &key.snapshot,
            recovery_point: key.point.as_ref(),
            summary: &summary,
        };
        let body = serde_json::to_vec_pretty(&index).map_err(|e| StreamError::Internal(e.to_string()))?;
        store.put(&Self::index_key(&key.snapshot), body).await.map_err(|e| port("writing the dump index", e))?;
        Ok(summary.archives.len())
    }
}

#[async_trait]
impl Workflow for SnapshotDumps {
    type Key = DumpKey;
    const NAME: &'static str = "snapshot dump";

    async fn pass(&self, key: &DumpKey) -> (Pass, Vec<Entry>) {
        if !self.served(key) {
            return (Pass::Failed(format!("region {} is not served", key.region)), vec![]);
        }
        let (instance, parameter) = self.names(key);
        let seen = match self.look(key, &instance, &parameter).await {
            Ok(s) => s,
            Err(e) => return (Pass::Retry(e.into()), vec![]),
        };
        match dump_plan::plan(&seen) {
            Step::Restore => (self.restore(key, &instance).await, vec![]),
            Step::AddInstance => (self.add_instance(key, &instance).await, vec![]),
            Step::Wait(why) => (Pass::Waiting { next_check: Some(self.settings.poll), why }, vec![]),
            Step::SetPassword => (self.set_password(key, &instance, &parameter).await, vec![]),
            Step::Dump => self.dump(key, &instance, &parameter).await,
            Step::Remove { instance: i, cluster: c, parameter: p } => match self.remove(key, i, c, p).await {
                Ok(()) => (Pass::Progress, vec![]),
                Err(e) => (Pass::Retry(e.into()), vec![]),
            },
            Step::Done => (Pass::Done, vec![]),
            Step::Refuse(why) => {
                if let Err(e) = self.remove_ours(key, &seen).await {
                    warn!(instance = %instance, error = %e, "temporary instance not removed; the next sweep removes it");
                }
                (Pass::Failed(why.clone()), vec![entry(key, EntryStatus::Error, Some(why))])
            }
        }
    }

    async fn owned(&self, _kind: Option<ResourceKind>) -> Result<Vec<DumpKey>, PortError> {
        Ok(Vec::new())
    }

    /// Removes this deployment's temporary dump instances and clusters whose
    /// `bunker:expires_at` has passed (instances first: a cluster goes once its instances
    /// are deleting), and password parameters whose instance and cluster are gone.
    async fn sweep(&self) -> Result<usize, PortError> {
        let mut removed = 0;
        for (region, instances) in &self.instances {
            let listed = instances.named(dump_plan::INSTANCE_PREFIX).await?;
            for name in self.expired(&listed, region) {
                instances.delete(name).await?;
                info!(instance = %name, "expired temporary dump instance removed");
                removed += 1;
            }
            let clusters = instances.clusters_named(dump_plan::INSTANCE_PREFIX).await?;
            for name in self.expired(&clusters, region) {
                instances.delete_cluster(name).await?;
                info!(cluster = %name, "expired temporary dump cluster removed");
                removed += 1;
            }
            let Some(secrets) = self.secrets.get(region) else { continue };
            let prefix = dump_plan::parameter_name(self.deployment(region), "");
            for param in secrets.under(prefix.trim_end_matches('/')).await? {
                let instance = param.rsplit('/').next().unwrap_or_default();
                if !listed.iter().chain(&clusters).any(|(n, _)| n == instance) {
                    secrets.delete(&param).await?;
                    info!(parameter = %param, "password parameter of a gone instance removed");
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// A job that gave up removes its temporary instance, cluster and parameter now (if
    /// they are this deployment's), not after the sweep's 24 hours.
    async fn abandon(&self, key: &DumpKey) {
        if !self.served(key) {
            return;
        }
        let (instance, parameter) = self.names(key);
        let removed = match self.look(key, &instance, &parameter).await {
            Ok(seen) => self.remove_ours(key, &seen).await,
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            warn!(instance = %instance, error = %e, "temporary instance not removed; the next sweep removes it");
        }
    }

    fn gave_up_entry(&self, key: &DumpKey, reason: &str) -> Option<Entry> {
        Some(entry(key, EntryStatus::Error, Some(reason.to_string())))
    }
}
