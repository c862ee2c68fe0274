//! The restore actor's workflow: a file-level export of an EBS snapshot through a temporary
//! volume, for filesystems only the kernel reads (XFS, Btrfs). The volume is created from
//! the snapshot in this instance's availability zone (IMDSv2), tagged temporary at
//! creation, attached to this instance, found by its NVMe serial link in
//! `export.device_dir` (never by guessing a letter), its filesystems mounted read-only
//! without journal replay and archived ([`DeviceFiles`]), then unmounted, detached (with the
//! instance id) and deleted — on success and on failure. Each pass follows
//! `protocol::volume_plan::plan`; waiting is [`Pass::Waiting`]; [`Workflow::sweep`] removes
//! what a crash left.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bunker_protocol::report::{Entry, EntryStatus};
use bunker_protocol::tags::{self, Tags};
use bunker_protocol::vault::PointRef;
use bunker_protocol::volume_plan::{self, Seen, SeenVolume, Step};
use bunker_protocol::ResourceKind;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::engine::{Clock, JobKey, Pass, SystemClock, Workflow};
use crate::ports::{ErrorKind, PortError, TempVolumes, ThisInstance, VolumeInfo};
use crate::stream::export_job::ExportTargets;
use crate::stream::StreamError;

/// How long a temporary volume may live before a sweep removes it.
pub const TEMP_HOURS: i64 = 24;

/// Looks at a detaching volume before a failed job deletes it.
const REMOVE_LOOKS: usize = 10;

/// Device names tried for the attachment, in order (a name is only a label on Nitro
/// instances; the device is found by the volume's serial).
const DEVICE_NAMES: &[&str] =
    &["/dev/sdf", "/dev/sdg", "/dev/sdh", "/dev/sdi", "/dev/sdj", "/dev/sdk", "/dev/sdl", "/dev/sdm", "/dev/sdn"];

/// One snapshot's file-level export through a temporary volume, to one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeKey {
    /// The snapshot's region (the region bunker's instance runs in).
    pub region: String,
    /// The EBS snapshot.
    pub snapshot: String,
    /// Where the archives go (`s3://…` or `file://…`).
    pub to: String,
    /// The archives' name stem (default: the snapshot id).
    pub name: Option<String>,
    /// The AWS Backup recovery point the snapshot is, when it is one.
    pub point: Option<PointRef>,
}

impl fmt::Display for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "files of {} ({}) through a volume to {}", self.snapshot, self.region, self.to)
    }
}

impl JobKey for VolumeKey {
    fn kind_label(&self) -> &'static str {
        ResourceKind::Ebs.as_str()
    }
}

/// What one export from an attached device asks for.
#[derive(Debug, Clone)]
pub struct DeviceExport {
    /// The device (the by-id link).
    pub device: PathBuf,
    /// The volume (where its mounts go, and what [`DeviceFiles::release`] finds).
    pub volume: String,
    /// The key.
    pub key: VolumeKey,
}

/// The host side: devices, mounts and the archives made from them.
#[async_trait]
pub trait DeviceFiles: Send + Sync {
    /// The device of `volume`, if it is present on this host.
    fn device(&self, volume: &str) -> Option<PathBuf>;
    /// Mounts each filesystem of the device read-only without journal replay, archives it
    /// (tar + catalog) to the key's target, unmounts it; then writes the index. A
    /// filesystem that cannot be mounted is named in the index; a disk with none that can
    /// is an input error.
    async fn export(&self, what: &DeviceExport) -> Result<(), StreamError>;
    /// Unmounts whatever bunker mounted of `volume` (a crash leaves mounts behind).
    async fn release(&self, volume: &str) -> Result<(), StreamError>;
}

/// What every export through a volume shares.
#[derive(Debug, Clone)]
pub struct VolumeSettings {
    /// This deployment's id in each region.
    pub deployments: BTreeMap<String, String>,
    /// How long to wait before looking again at a volume EC2 is working on.
    pub poll: Duration,
}

/// The workflow (see the module documentation).
pub struct VolumeFiles {
    settings: VolumeSettings,
    volumes: BTreeMap<String, Arc<dyn TempVolumes>>,
    instance: Arc<dyn ThisInstance>,
    identity: OnceCell<(String, String)>,
    host: Arc<dyn DeviceFiles>,
    targets: Arc<dyn ExportTargets>,
    clock: Arc<dyn Clock>,
}

impl VolumeFiles {
    /// A workflow over the given regions' ports.
    pub fn new(
        settings: VolumeSettings,
        volumes: BTreeMap<String, Arc<dyn TempVolumes>>,
        instance: Arc<dyn ThisInstance>,
        host: Arc<dyn DeviceFiles>,
        targets: Arc<dyn ExportTargets>,
    ) -> VolumeFiles {
        VolumeFiles {
            settings,
            volumes,
            instance,
            identity: OnceCell::new(),
            host,
            targets,
            clock: Arc::new(SystemClock),
        }
    }

    /// The index object of the key's export (written last: it marks the export done).
    pub fn index_key(key: &VolumeKey) -> String {
        bunker_protocol::archive::files_index_key(key.name.as_deref().unwrap_or(&key.snapshot))
    }

    fn deployment(&self, region: &str) -> &str {
        self.settings.deployments.get(region).map(String::as_str).unwrap_or_default()
    }

    fn name(&self, key: &VolumeKey) -> String {
        volume_plan::volume_name(self.deployment(&key.region), &key.snapshot, &key.to)
    }

    fn ours(&self, tags: &Tags, region: &str) -> bool {
        tags.get(tags::TEMPORARY).map(String::as_str) == Some("true")
            && !self.deployment(region).is_empty()
            && tags.get(tags::DEPLOYMENT).map(String::as_str) == Some(self.deployment(region))
    }

    /// This instance's id and zone, asked once.
    async fn me(&self) -> Result<&(String, String), PortError> {
        self.identity.get_or_try_init(|| self.instance.identity()).await
    }

    /// The temporary volume (at most one carries the name; more is refused by the plan's
    /// caller) and what the plan sees.
    async fn look(&self, key: &VolumeKey) -> Result<(Option<VolumeInfo>, Seen), PortError> {
        let (me, _) = self.me().await?;
        let done = match self.targets.store(&key.to, &key.region) {
            Ok(store) => store.size(&Self::index_key(key)).await?.is_some(),
            Err(_) => false,
        };
        let mut found = self.volumes[&key.region].named(&self.name(key)).await?;
        // A deleted volume lingers in DescribeVolumes for a while.
        found.retain(|v| v.state != "deleted");
        let volume = found.into_iter().next();
        let seen_volume = volume.as_ref().map(|v| SeenVolume {
            state: v.state.clone(),
            ours: self.ours(&v.tags, &key.region),
            attachment: v.attachment.as_ref().map(|(i, s)| (i == me, s.clone())),
        });
        let device = volume.as_ref().is_some_and(|v| self.host.device(&v.id).is_some());
        Ok((volume, Seen { done, volume: seen_volume, device }))
    }

    fn temp_tags(&self, key: &VolumeKey) -> Tags {
        let expires = self.clock.now().as_second() + TEMP_HOURS * 3600;
        let expires = jiff::Timestamp::from_second(expires).unwrap_or(jiff::Timestamp::MAX);
        let mut tags = tags::temporary(self.deployment(&key.region), format!("files of {}", key.snapshot), expires);
        tags.insert("Name".into(), self.name(key));
        tags
    }

    fn waiting(&self, why: impl Into<String>) -> Pass {
        Pass::Waiting { next_check: Some(self.settings.poll), why: why.into() }
    }

    async fn create(&self, key: &VolumeKey) -> Pass {
        let zone = match self.me().await {
            Ok((_, zone)) => zone.clone(),
            Err(e) => return Pass::Retry(e.into()),
        };
        if !in_region(&zone, &key.region) {
            return Pass::Failed(format!(
                "snapshot {} is in {}, and this instance runs in {zone}: a volume attaches only in its own zone; \
                 export it from an instance in {} (or as an image, or after a copy to this region)",
                key.snapshot, key.region, key.region
            ));
        }
        match self.volumes[&key.region].create(&key.snapshot, &zone, &self.temp_tags(key)).await {
            Ok(id) => {
                info!(volume = %id, snapshot = %key.snapshot, zone = %zone, "temporary volume created");
                self.waiting("the temporary volume is being created")
            }
            Err(e) if e.kind == ErrorKind::NotFound => {
                Pass::Failed(format!("snapshot {} does not exist", key.snapshot))
            }
            Err(e) => Pass::Retry(e.into()),
        }
    }

    /// Attaches under the first device name this instance does not use.
    async fn attach(&self, key: &VolumeKey, volume: &str) -> Pass {
        let port = &self.volumes[&key.region];
        let result = async {
            let (me, _) = self.me().await?;
            let used = port.device_names(me).await?;
            let Some(name) = DEVICE_NAMES.iter().find(|n| !used.iter().any(|u| u == *n)) else {
                return Err(PortError::new(ErrorKind::Quota, None, format!("no free device name on {me}")));
            };
            port.attach(volume, me, name).await?;
            info!(volume = %volume, instance = %me, device = %name, "temporary volume attached");
            Ok(())
        }
        .await;
        match result {
            Ok(()) => self.waiting("the temporary volume is being attached"),
            Err(e) => Pass::Retry(e.into()),
        }
    }

    /// Unmounts, then detaches.
    async fn detach(&self, key: &VolumeKey, volume: &str) -> Result<(), PortError> {
        if let Err(e) = self.host.release(volume).await {
            return Err(PortError::new(ErrorKind::Internal, None, format!("unmounting {volume}: {e}")));
        }
        let (me, _) = self.me().await?;
        match self.volumes[&key.region].detach(volume, me).await {
            Err(e) if e.kind != ErrorKind::NotFound => Err(e),
            _ => {
                info!(volume = %volume, instance = %me, "temporary volume detached");
                Ok(())
            }
        }
    }

    async fn delete(&self, key: &VolumeKey, volume: &str) -> Result<(), PortError> {
        match self.volumes[&key.region].delete(volume).await {
            Err(e) if e.kind != ErrorKind::NotFound => Err(e),
            _ => {
                info!(volume = %volume, "temporary volume deleted");
                Ok(())
            }
        }
    }

    /// Removes the volume, if it is ours and not attached elsewhere, before a job ends
    /// failed: unmounted, detached, and deleted once EC2 reports it detached (looked at on a
    /// timer, at most [`REMOVE_LOOKS`] times); what is left, the sweep removes.
    async fn remove_ours(&self, key: &VolumeKey, volume: Option<&VolumeInfo>, seen: &Seen) {
        let Some((v, sv)) = volume.zip(seen.volume.as_ref()) else { return };
        if !sv.ours || matches!(sv.attachment, Some((false, _))) {
            return;
        }
        if let Err(e) = self.remove_now(key, &v.id, sv.attachment.is_some()).await {
            warn!(volume = %v.id, error = %e, "temporary volume not removed; the next sweep removes it");
        }
    }

    async fn remove_now(&self, key: &VolumeKey, volume: &str, attached: bool) -> Result<(), PortError> {
        if attached {
            self.detach(key, volume).await?;
            for _ in 0..REMOVE_LOOKS {
                let found = self.volumes[&key.region].named(&self.name(key)).await?;
                if found.iter().any(|v| v.id == volume && v.attachment.is_none()) {
                    break;
                }
                tokio::time::sleep(self.settings.poll).await;
            }
        }
        self.delete(key, volume).await
    }

    async fn export(&self, key: &VolumeKey, volume: &VolumeInfo) -> (Pass, Vec<Entry>) {
        let Some(device) = self.host.device(&volume.id) else {
            return (Pass::Retry(PortError::new(ErrorKind::Internal, None, "the device vanished").into()), vec![]);
        };
        let what = DeviceExport { device, volume: volume.id.clone(), key: key.clone() };
        match self.host.export(&what).await {
            Ok(()) => (Pass::Progress, vec![entry(key, EntryStatus::Ok, Some(format!("files to {}", key.to)))]),
            Err(e) if e.is_retryable() => (Pass::Retry(e.into()), vec![]),
            Err(e) => {
                warn!(snapshot = %key.snapshot, error = %e, "export through the volume failed; removing the volume");
                if let Err(d) = self.remove_now(key, &volume.id, true).await {
                    warn!(volume = %volume.id, error = %d, "temporary volume not removed; the next sweep removes it");
                }
                let reason = format!("file-level export of {} failed: {e}", key.snapshot);
                (Pass::Failed(reason.clone()), vec![entry(key, EntryStatus::Error, Some(reason))])
            }
        }
    }
}

impl VolumeFiles {
    /// Detaches an expired volume attached here (after unmounting it), or deletes a detached
    /// one; one attached to another instance is that instance's to remove.
    async fn sweep_one(&self, port: &dyn TempVolumes, v: &VolumeInfo) -> Result<bool, PortError> {
        match &v.attachment {
            Some((instance, _)) => {
                let (me, _) = self.me().await?;
                if instance != me {
                    return Ok(false);
                }
                if let Err(e) = self.host.release(&v.id).await {
                    warn!(volume = %v.id, error = %e, "expired temporary volume not unmounted");
                    return Ok(false);
                }
                port.detach(&v.id, me).await?;
            }
            None => port.delete(&v.id).await?,
        }
        info!(volume = %v.id, "expired temporary volume removed");
        Ok(true)
    }
}

/// Whether availability zone `zone` (`us-east-1a`, `us-west-2-lax-1a`) is in `region`.
fn in_region(zone: &str, region: &str) -> bool {
    region.ends_with(|c: char| c.is_ascii_digit())
        && zone.strip_prefix(region).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '-'))
}

fn entry(key: &VolumeKey, status: EntryStatus, message: Option<String>) -> Entry {
    Entry::export(&key.region, &key.snapshot, status, message)
}

fn done_or_retry(result: Result<(), PortError>) -> (Pass, Vec<Entry>) {
    match result {
        Ok(()) => (Pass::Progress, vec![]),
        Err(e) => (Pass::Retry(e.into()), vec![]),
    }
}

#[async_trait]
impl Workflow for VolumeFiles {
    type Key = VolumeKey;
    const NAME: &'static str = "volume files";

    async fn pass(&self, key: &VolumeKey) -> (Pass, Vec<Entry>) {
        if !self.volumes.contains_key(&key.region) {
            return (Pass::Failed(format!("region {} is not served", key.region)), vec![]);
        }
        let (volume, seen) = match self.look(key).await {
            Ok(s) => s,
            Err(e) => return (Pass::Retry(e.into()), vec![]),
        };
        let id = volume.as_ref().map(|v| v.id.clone()).unwrap_or_default();
        match volume_plan::plan(&seen) {
            Step::Create => (self.create(key).await, vec![]),
            Step::Attach => (self.attach(key, &id).await, vec![]),
            Step::Wait(why) => (self.waiting(why), vec![]),
            Step::NoDevice => {
                let why = format!(
                    "{id} is attached and its device is not in export.device_dir yet (is export.device_dir right?)"
                );
                (Pass::Retry(PortError::new(ErrorKind::Internal, None, why).into()), vec![])
            }
            Step::Export => self.export(key, volume.as_ref().expect("the plan saw a volume")).await,
            Step::Detach => done_or_retry(self.detach(key, &id).await),
            Step::Delete => done_or_retry(self.delete(key, &id).await),
            Step::Done => (Pass::Done, vec![]),
            Step::Refuse(why) => {
                self.remove_ours(key, volume.as_ref(), &seen).await;
                (Pass::Failed(why.clone()), vec![entry(key, EntryStatus::Error, Some(why))])
            }
        }
    }

    async fn owned(&self, _kind: Option<ResourceKind>) -> Result<Vec<VolumeKey>, PortError> {
        Ok(Vec::new())
    }

    /// Removes this deployment's temporary volumes whose `bunker:expires_at` has passed:
    /// unmounted and detached if attached here, deleted once detached.
    async fn sweep(&self) -> Result<usize, PortError> {
        let now = self.clock.now();
        let mut removed = 0;
        for (region, port) in &self.volumes {
            let deployment = self.deployment(region);
            if deployment.is_empty() {
                continue;
            }
            for v in port.temporary(deployment).await? {
                let expires = v.tags.get(tags::EXPIRES_AT).and_then(|t| t.parse::<jiff::Timestamp>().ok());
                if self.ours(&v.tags, region) && expires.is_some_and(|t| t <= now) && v.state != "deleted" {
                    removed += usize::from(self.sweep_one(port.as_ref(), &v).await?);
                }
            }
        }
        Ok(removed)
    }

    /// A job that gave up unmounts and detaches its volume now (a later pass or the sweep
    /// deletes it).
    async fn abandon(&self, key: &VolumeKey) {
        if !self.volumes.contains_key(&key.region) {
            return;
        }
        match self.look(key).await {
            Ok((volume, seen)) => self.remove_ours(key, volume.as_ref(), &seen).await,
            Err(e) => {
                warn!(snapshot = %key.snapshot, error = %e, "temporary volume not removed; the next sweep removes it")
            }
        }
    }

    fn gave_up_entry(&self, key: &VolumeKey, reason: &str) -> Option<Entry> {
        Some(entry(key, EntryStatus::Error, Some(reason.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::in_region;

    #[test]
    fn a_zone_is_in_its_region_only() {
        assert!(in_region("us-east-1a", "us-east-1"));
        assert!(in_region("us-west-2-lax-1a", "us-west-2"));
        assert!(!in_region("us-east-1a", "eu-west-1"));
        assert!(!in_region("us-east-1a", "us-east"));
        assert!(!in_region("us-east-12a", "us-east-1"));
    }
}
