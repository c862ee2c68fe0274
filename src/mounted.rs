//! The host side of file-level exports through a temporary volume ([`DeviceFiles`]): the
//! attached volume's device found by its NVMe serial link in `export.device_dir`
//! (`nvme-Amazon_Elastic_Block_Store_vol…`, as AWS's udev rules name it), each filesystem
//! on it mounted read-only without journal replay (ext4 `noload`, XFS `norecovery,nouuid`,
//! Btrfs `rescue=nologreplay`; and `nosuid,nodev,noexec`) under a private directory,
//! archived as a tar with its catalog, and unmounted. This is the only path that needs
//! `CAP_SYS_ADMIN`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use bunker_actors::metrics::Metrics;
use bunker_actors::stream::{Progress, StreamError};
use bunker_actors::volume_files::{DeviceExport, DeviceFiles, VolumeFiles, VolumeKey, VolumeSettings};
use bunker_protocol::config::Config;
use sys_mount::{Mount, MountFlags, UnmountFlags};
use tracing::{info, warn};

use crate::archive_cli::{open_snapshot, ExportOpts};
use crate::aws::Aws;
use crate::disk::{self, Disk, Volume};
use crate::ebs_files::{export_tree, reference, write_index, Exported, FilesReport, NotExported};

/// `CAP_SYS_ADMIN`'s bit in the capability sets of `/proc/<pid>/status`.
const CAP_SYS_ADMIN: u32 = 21;

/// Whether an effective capability set (`CapEff:` of `/proc/self/status`, in hex) holds
/// `CAP_SYS_ADMIN`, which `mount(2)` needs.
fn has_sys_admin(status: &str) -> Option<bool> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let set = u64::from_str_radix(hex, 16).ok()?;
    Some(set & (1 << CAP_SYS_ADMIN) != 0)
}

/// Refuses to start a mounted export without `CAP_SYS_ADMIN`, naming the fix (a mount
/// would fail much later, for each snapshot).
pub(crate) fn check_can_mount(what: &str) -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match has_sys_admin(&status) {
        Some(false) => Err(anyhow::anyhow!(
            "{what} mounts temporary volumes, which needs CAP_SYS_ADMIN, and this process lacks it: \
             under systemd install the drop-in deploy/systemd/bunker.service.d/mount.conf \
             (/etc/systemd/system/bunker.service.d/) and run systemctl daemon-reload; \
             otherwise run as root, or turn it off (export.mount = false)"
        )),
        // No /proc here: mount(2) will say.
        _ => Ok(()),
    }
}

/// The by-id link of `volume` (`vol-0abc…` → `nvme-Amazon_Elastic_Block_Store_vol0abc…`).
pub fn link_name(volume: &str) -> String {
    format!("nvme-Amazon_Elastic_Block_Store_{}", volume.replace('-', ""))
}

/// The mount type and options (beside `ro`) of a filesystem bunker mounts: none of them
/// replays a journal.
fn mount_options(filesystem: &str) -> Option<(&'static str, &'static str)> {
    match filesystem {
        "ext4" => Some(("ext4", "noload")),
        "xfs" => Some(("xfs", "norecovery,nouuid")),
        "btrfs" => Some(("btrfs", "rescue=nologreplay")),
        "vfat" => Some(("vfat", "")),
        _ => None,
    }
}

/// Devices, mounts and the archives made from them, on this host.
pub(crate) struct HostDevices {
    aws: Aws,
    device_dir: PathBuf,
    mount_root: PathBuf,
    opts: ExportOpts,
    /// The service's metrics (each archive's progress and end), if any.
    metrics: Option<Arc<Metrics>>,
}

impl HostDevices {
    /// Devices under `device_dir`, mounts under `mount_root` (made 0700), archives written
    /// with `opts` (its `to` and `name` are each export's own).
    pub(crate) fn new(aws: Aws, device_dir: PathBuf, mount_root: PathBuf, opts: ExportOpts) -> HostDevices {
        HostDevices { aws, device_dir, mount_root, opts, metrics: None }
    }

    fn mount_point(&self, volume: &str, v: &Volume) -> PathBuf {
        let mut name = match v.number {
            Some(n) => format!("{volume}-p{n}"),
            None => volume.to_string(),
        };
        if let Some((lv, _)) = &v.lv {
            name = format!("{name}-lv-{}", lv.replace('/', "-"));
        }
        self.mount_root.join(name)
    }
}

/// A block device read through a file, for the partition table reader.
struct DeviceDisk {
    file: File,
    size: u64,
}

impl Disk for DeviceDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

/// The partitions and filesystems of the device (read-only).
fn volumes_of(device: &Path) -> io::Result<Vec<Volume>> {
    let file = File::open(device)?;
    let size = io::Seek::seek(&mut &file, io::SeekFrom::End(0))?;
    disk::volumes(&mut DeviceDisk { file, size })
}

/// The device node of partition `n` of `device` (from sysfs), if the kernel made one.
fn partition_node(device: &Path, n: u32) -> Option<PathBuf> {
    let real = std::fs::canonicalize(device).ok()?;
    let name = real.file_name()?.to_str()?.to_string();
    let entries = std::fs::read_dir(Path::new("/sys/class/block").join(&name)).ok()?;
    entries.flatten().find_map(|e| {
        let child = e.file_name().to_str()?.to_string();
        let number = std::fs::read_to_string(e.path().join("partition")).ok()?;
        (child.starts_with(&name) && number.trim() == n.to_string()).then(|| Path::new("/dev").join(child))
    })
}

/// A read-only loop device over a partition the kernel made no node for (a loop device
/// without partition scanning: the emulator's, a container's). `losetup` is util-linux's,
/// on every host; the `loopdev` crate needs libclang to build.
fn partition_loop(device: &Path, v: &Volume) -> io::Result<PathBuf> {
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only", "--offset", &v.start.to_string(), "--sizelimit"])
        .arg(v.size.to_string())
        .arg(device)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("losetup: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The loop devices over `device` (partitions bunker looped; a crash leaves them).
fn partition_loops(device: &Path) -> Vec<PathBuf> {
    let out = Command::new("losetup").arg("--associated").arg(device).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines().filter_map(|l| l.split(':').next()).filter(|d| d.starts_with("/dev/loop")).map(PathBuf::from).collect()
}

fn loop_detach(dev: &Path) {
    if let Err(e) = Command::new("losetup").arg("--detach").arg(dev).status() {
        warn!(device = %dev.display(), error = %e, "loop device not detached");
    }
}

/// One mounted filesystem: unmounted (and its partition loop detached) when dropped.
struct Mounted {
    mount: Option<Mount>,
    point: PathBuf,
    loop_dev: Option<PathBuf>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            if let Err(e) = sys_mount::Unmount::unmount(&m, UnmountFlags::DETACH) {
                warn!(mount = %self.point.display(), error = %e, "not unmounted");
            }
        }
        if let Some(l) = &self.loop_dev {
            loop_detach(l);
        }
    }
}

/// Mounts `v` of `device` at `point`, read-only without journal replay.
fn mount(device: &Path, v: &Volume, point: &Path) -> io::Result<Mounted> {
    let (fstype, data) = mount_options(v.filesystem).ok_or_else(|| io::Error::other("not mountable"))?;
    let (source, loop_dev) = match v.number {
        // A logical volume: the range of the disk it lies in (one piece: `Volume::needs_kernel`).
        _ if v.lv.is_some() => {
            let l = partition_loop(device, v)?;
            (l.clone(), Some(l))
        }
        None => (device.to_path_buf(), None),
        Some(n) => match partition_node(device, n) {
            Some(node) => (node, None),
            None => {
                let l = partition_loop(device, v)?;
                (l.clone(), Some(l))
            }
        },
    };
    crate::files::create_dir_all_private(point)?;
    unmount_at(point);
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let mounted = Mount::builder().fstype(fstype).flags(flags).data(data).mount(&source, point);
    match mounted {
        Ok(m) => Ok(Mounted { mount: Some(m), point: point.to_path_buf(), loop_dev }),
        Err(e) => {
            if let Some(l) = &loop_dev {
                loop_detach(l);
            }
            Err(io::Error::new(e.kind(), format!("mounting {} ({fstype}, ro,{data}): {e}", source.display())))
        }
    }
}

/// Unmounts whatever is mounted at `point` (left by a crash), lazily.
fn unmount_at(point: &Path) {
    if is_mount_point(point) {
        match sys_mount::unmount(point, UnmountFlags::DETACH) {
            Ok(()) => info!(mount = %point.display(), "stale mount removed"),
            Err(e) => warn!(mount = %point.display(), error = %e, "stale mount not removed"),
        }
    }
}

/// The mount points in `/proc/self/mountinfo` (field 5; octal escapes for spaces kept).
fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

fn is_mount_point(point: &Path) -> bool {
    mount_points().iter().any(|p| p == point)
}

impl HostDevices {
    /// Mounts, archives and unmounts one filesystem of the device; `Ok(Err(why))` when it is
    /// not one bunker mounts, or the mount fails (named in the index, the others go on).
    async fn export_volume(
        &self,
        what: &DeviceExport,
        opened: &crate::archive_cli::OpenedSnapshot,
        opts: &ExportOpts,
        v: &Volume,
        progress: Arc<Progress>,
    ) -> Result<Result<Exported, String>, StreamError> {
        if let Some(why) = &v.unread {
            return Ok(Err(format!("{} ({}): {why}; not exported", v.describe(), v.filesystem)));
        }
        if mount_options(v.filesystem).is_none() {
            return Ok(Err(format!("{} ({}): no filesystem bunker mounts; not exported", v.describe(), v.filesystem)));
        }
        if v.pieces() != 1 {
            let why = format!(
                "lies in {} pieces on the disk; bunker mounts a logical volume only when it lies in one",
                v.pieces()
            );
            return Ok(Err(format!("{} ({}): {why}; not exported", v.describe(), v.filesystem)));
        }
        let point = self.mount_point(&what.volume, v);
        let (device, vol) = (what.device.clone(), v.clone());
        let mounted = tokio::task::spawn_blocking(move || mount(&device, &vol, &point))
            .await
            .map_err(|e| StreamError::Internal(format!("mount: {e}")))?;
        let mounted = match mounted {
            Ok(m) => m,
            Err(e) => return Ok(Err(format!("{} ({}): {e}; not exported", v.describe(), v.filesystem))),
        };
        info!(volume = %what.volume, partition = ?v.number, filesystem = v.filesystem, "mounted read-only");
        let (dir, chunk, capacity) = (mounted.point.clone(), opts.chunk_mib << 20, opts.channel_capacity);
        let open = move |s, c| crate::local::tar_reader(dir, chunk, capacity, s, c);
        let done = export_tree(opened, opts, reference(v), open, (progress, true, self.metrics.clone())).await;
        tokio::task::spawn_blocking(move || drop(mounted))
            .await
            .map_err(|e| StreamError::Internal(format!("unmount: {e}")))?;
        done.map(Ok)
    }
}

#[async_trait]
impl DeviceFiles for HostDevices {
    fn device(&self, volume: &str) -> Option<PathBuf> {
        let link = self.device_dir.join(link_name(volume));
        // `exists` follows the link: a dangling one is no device.
        link.exists().then_some(link)
    }

    async fn export(&self, what: &DeviceExport) -> Result<(), StreamError> {
        let key = &what.key;
        let opts = ExportOpts { to: key.to.clone(), name: key.name.clone(), ..self.opts.clone() };
        let progress = Arc::new(Progress::default());
        let mut opened = open_snapshot(&self.aws, &key.region, &key.snapshot, None, &opts, progress.clone()).await?;
        opened.source.recovery_point = key.point.clone();
        let device = what.device.clone();
        let volumes = tokio::task::spawn_blocking(move || volumes_of(&device))
            .await
            .map_err(|e| StreamError::Internal(format!("partition reader: {e}")))?
            .map_err(|e| {
                StreamError::Source(format!("reading the partition table of {}: {e}", what.device.display()))
            })?;
        let mut report = FilesReport {
            snapshot: key.snapshot.clone(),
            filesystems: Vec::new(),
            not_exported: Vec::new(),
            blocks_allocated: 0,
            blocks_fetched: 0,
        };
        for v in volumes {
            match self.export_volume(what, &opened, &opts, &v, progress.clone()).await? {
                Ok(done) => report.filesystems.push(done),
                Err(reason) => report.not_exported.push(NotExported { filesystem: reference(&v), reason }),
            }
        }
        if report.filesystems.is_empty() {
            let why: Vec<String> = report.not_exported.iter().map(|n| n.reason.clone()).collect();
            return Err(StreamError::Input(format!(
                "snapshot {} has no filesystem bunker could mount: {}",
                key.snapshot,
                why.join("; ")
            )));
        }
        write_index(&opened, &opts, key.point.clone(), &report).await
    }

    async fn release(&self, volume: &str) -> Result<(), StreamError> {
        let (root, device) = (self.mount_root.clone(), self.device(volume));
        let volume = volume.to_string();
        tokio::task::spawn_blocking(move || {
            for point in mount_points() {
                let ours = point.parent() == Some(root.as_path())
                    && point.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n == volume || n.strip_prefix(&volume).is_some_and(|rest| rest.starts_with("-p"))
                    });
                if ours {
                    sys_mount::unmount(&point, UnmountFlags::DETACH)
                        .map_err(|e| StreamError::Internal(format!("unmounting {}: {e}", point.display())))?;
                    info!(mount = %point.display(), "unmounted");
                }
            }
            if let Some(dev) = device.and_then(|d| std::fs::canonicalize(d).ok()) {
                for l in partition_loops(&dev) {
                    loop_detach(&l);
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| StreamError::Internal(format!("unmount: {e}")))?
    }
}

/// How soon a pass looks again at a volume EC2 is working on (at most; `serve.check_interval`
/// when shorter).
const VOLUME_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// The restore actor's workflow in `regions` (the snapshot's region must be this instance's):
/// devices in `export.device_dir`, mounts under `<state>/mnt`, archives as `opts` say (the
/// target and name come with each job), their progress in `metrics` when given.
pub(crate) fn volume_files(
    aws: &Aws,
    account: &str,
    cfg: &Config,
    regions: &[String],
    (opts, metrics): (ExportOpts, Option<Arc<Metrics>>),
) -> VolumeFiles {
    let settings = VolumeSettings {
        deployments: regions.iter().map(|r| (r.clone(), cfg.deployment_id(account, r))).collect(),
        poll: cfg.serve.check_interval.unsigned_abs().min(VOLUME_POLL),
    };
    let mount_root = crate::serve::state_dir(cfg).join("mnt");
    let mut host = HostDevices::new(aws.clone(), PathBuf::from(&cfg.export_device_dir), mount_root, opts);
    host.metrics = metrics;
    VolumeFiles::new(
        settings,
        regions.iter().map(|r| (r.clone(), aws.temp_volumes(r))).collect(),
        Arc::new(crate::aws::Imds::new()),
        Arc::new(host),
        Arc::new(crate::services::ServiceExports::new(aws.clone(), cfg)),
    )
}

/// `bunker export ebs SNAPSHOT --files --mount`: one job of the restore actor's workflow, to
/// its end, on this EC2 instance.
pub(crate) async fn export_cli(
    aws: &Aws,
    region: Option<&str>,
    cfg: &Config,
    snapshot: String,
    opts: ExportOpts,
    json: bool,
) -> Result<std::process::ExitCode, crate::exit::Fatal> {
    use actix::Actor;
    use anyhow::anyhow;
    use bunker_actors::engine::{Alerts, JobActor, Run};
    let fatal = |e: anyhow::Error| crate::exit::runtime(e);
    let region = region.ok_or_else(|| crate::exit::usage(anyhow!("no region: pass --region or set AWS_REGION")))?;
    check_can_mount("export ebs --files --mount").map_err(crate::exit::usage)?;
    let account = aws.account_id().await.map_err(|e| fatal(anyhow!(e).context("cannot identify the AWS account")))?;
    let logic = volume_files(aws, &account, cfg, &[region.to_string()], (opts.clone(), None));
    let metrics = Arc::new(bunker_actors::metrics::Metrics::default());
    let alerts = Alerts::new(aws.notifier(), cfg.error_sns_topic.clone());
    let interval = cfg.serve.check_interval.unsigned_abs();
    let jobs = JobActor::new(Arc::new(logic), interval, metrics, alerts).start();
    let key =
        VolumeKey { region: region.to_string(), snapshot, to: opts.to.clone(), name: opts.name.clone(), point: None };
    let report =
        jobs.send(Run(key)).await.map_err(|e| fatal(anyhow!("job actor: {e}")))?.map_err(|e| fatal(anyhow!(e)))?;
    let index = format!("{}/{}", report.key.to.trim_end_matches('/'), VolumeFiles::index_key(&report.key));
    let out = serde_json::json!({"snapshot": report.key.snapshot, "to": report.key.to, "index": index});
    Ok(crate::dump_cli::print_job(&report, out, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_is_the_nvme_serial_and_no_mount_replays_a_journal() {
        assert_eq!(link_name("vol-0abc123"), "nvme-Amazon_Elastic_Block_Store_vol0abc123");
        assert_eq!(mount_options("xfs"), Some(("xfs", "norecovery,nouuid")));
        assert_eq!(mount_options("ext4"), Some(("ext4", "noload")));
        assert_eq!(mount_options("LVM2_member"), None);
    }

    #[test]
    fn cap_sys_admin_is_read_from_the_effective_set() {
        let status = |eff: &str| {
            format!("Name:\tbunker\nCapInh:\t0000000000000000\nCapEff:\t{eff}\nCapBnd:\t000001ffffffffff\n")
        };
        assert_eq!(has_sys_admin(&status("000001ffffffffff")), Some(true));
        assert_eq!(has_sys_admin(&status("0000000000200000")), Some(true));
        assert_eq!(has_sys_admin(&status("00000000001fffff")), Some(false));
        assert_eq!(has_sys_admin(&status("0000000000000000")), Some(false));
        assert_eq!(has_sys_admin("Name:\tbunker\n"), None);
    }
}
