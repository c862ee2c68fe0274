//! What the CLI and the service both build from the AWS side: the regions a command touches,
//! the replicator and the puller over the kinds that have those capabilities (the catalog in
//! [`crate::aws`]), lease holders, and the service's exports. `cli` and `serve` both use this
//! module and never each other.

use std::sync::Arc;

use actix::Recipient;
use bunker_actors::engine::Run;
use bunker_actors::metrics::Metrics;
use bunker_actors::outcomes::Outcomes;
use bunker_actors::ports::{ArchiveStore, ErrorKind, Leases};
use bunker_actors::replicator::Replicator;
use bunker_actors::stream::export_job::{ExportSnapshot, ExportTargets};
use bunker_actors::stream::exporter_actor::PreparedExport;
use bunker_actors::stream::{Progress, StreamError};
use bunker_actors::volume_files::VolumeKey;
use bunker_protocol::config::Config;
use bunker_protocol::job::JobEnd;
use bunker_protocol::tags::Tags;
use bunker_protocol::vault::{EbsFormat, PointRef};
use bunker_protocol::ResourceKind;
use tracing::warn;

use crate::aws::Aws;

/// The regions a run or the service touches: source regions, then DR regions.
pub fn all_regions(regions: &[String], cfg: &Config) -> Vec<String> {
    let mut all = regions.to_vec();
    for r in &cfg.replication.dr_regions {
        if !all.contains(r) {
            all.push(r.clone());
        }
    }
    all
}

/// bunker's own events: on `events.bus` (a name in the first region, or an ARN) when set,
/// nowhere otherwise; failed puts counted in `metrics`.
pub fn outcomes(aws: &Aws, cfg: &Config, regions: &[String], metrics: Option<Arc<Metrics>>) -> Outcomes {
    let home = regions.first().map(String::as_str).unwrap_or_default();
    Outcomes::new(cfg.events_bus.as_deref().map(|bus| aws.event_bus(home, bus)), metrics)
}

/// The replicator over every kind of `kinds`, in every region (source and DR).
#[allow(clippy::too_many_arguments)] // wiring: each argument is a distinct, already-built part
pub fn replicator(
    aws: &Aws,
    account: &str,
    cfg: &Config,
    regions: &[String],
    kinds: &[ResourceKind],
    leases: Arc<dyn Leases>,
    holder: &str,
    metrics: Arc<Metrics>,
) -> Replicator {
    let mut controls = Vec::new();
    for &kind in kinds {
        controls.extend(all_regions(regions, cfg).iter().map(|r| aws.replication(kind, r)));
    }
    let mut cfg = cfg.clone();
    cfg.regions = regions.to_vec();
    let events = outcomes(aws, &cfg, regions, Some(metrics.clone()));
    Replicator::new(account.to_string(), cfg, controls, leases, aws.notifier(), holder.to_string(), metrics)
        .with_outcomes(events)
}

/// The data-bunker puller over every kind of `kinds` that can pull, in the bunker's regions.
pub fn puller(
    aws: &Aws,
    account: &str,
    cfg: &Config,
    regions: &[String],
    kinds: &[ResourceKind],
    metrics: Arc<Metrics>,
) -> bunker_actors::puller::Puller {
    let controls = kinds.iter().flat_map(|&k| regions.iter().map(move |r| aws.pull(k, r))).collect();
    bunker_actors::puller::Puller::new(account.to_string(), cfg.clone(), controls, metrics)
}

/// The vault exports over `export.vaults` in each of `regions`, when the config lists vaults
/// and names `export.to`.
pub fn vault_exports(
    aws: &Aws,
    account: &str,
    cfg: &Config,
    regions: &[String],
    metrics: Arc<Metrics>,
    notifier: Arc<dyn bunker_actors::ports::Notifier>,
    mount: Option<Recipient<Run<VolumeKey>>>,
) -> Option<bunker_actors::vault_export::VaultExports> {
    use bunker_actors::ddb_export::PitrExports;
    use bunker_actors::rds_export::{ParquetExports, ParquetSettings};
    use bunker_actors::vault_export::{VaultExports, VaultSettings};
    let export_to = cfg.export_to.clone().filter(|_| !cfg.export_vaults.is_empty())?;
    let settings = VaultSettings {
        vaults: cfg.export_vaults.clone(),
        kinds: cfg.export_kinds.clone(),
        dynamodb_mode: cfg.export_dynamodb_mode,
        rds_format: cfg.export_rds_format,
        scan_segments: cfg.export_scan_segments,
        delete_source: cfg.export_delete_source,
        sha256: cfg.export_sha256,
        export_to,
        deployments: regions.iter().map(|r| (r.clone(), cfg.deployment_id(account, r))).collect(),
    };
    let ports = regions.iter().map(|r| aws.vaults(r)).collect();
    let tables = regions.iter().map(|r| aws.tables(r)).collect();
    let parquet = ParquetExports::new(
        regions.iter().map(|r| aws.snapshot_exports(r)).collect(),
        ParquetSettings {
            role_arn: cfg.export_rds_role_arn.clone(),
            kms_key: cfg.export_kms_key.clone(),
            first_poll: parquet_poll(cfg),
        },
    );
    let mut targets = ServiceExports::new(aws.clone(), cfg).with_metrics(metrics.clone());
    if let Some(m) = mount {
        targets = targets.with_volumes(m);
    }
    let targets = Arc::new(targets);
    let alerts = bunker_actors::engine::Alerts::new(notifier.clone(), cfg.error_sns_topic.clone());
    let tuning = bunker_actors::stream::Tuning::default();
    let pitr = PitrExports::new(regions.iter().map(|r| aws.table_exports(r)).collect(), parquet_poll(cfg));
    let reports = bunker_actors::engine::Alerts::new(notifier, cfg.status_sns_topic.clone());
    let events = outcomes(aws, cfg, regions, Some(metrics.clone()));
    let logic = VaultExports::new(settings, ports, tables, parquet, targets, tuning, metrics, alerts);
    let logic = logic.with_pitr(pitr).with_reports(reports).with_outcomes(events);
    // Wired whatever export.rds_format says: a resource's tag may ask for a dump.
    Some(logic.with_dumps(snapshot_dumps(aws, account, cfg, regions)))
}

/// `export.task_poll`: the first look at a running export task (RDS's, DynamoDB's).
fn parquet_poll(cfg: &Config) -> std::time::Duration {
    cfg.export_task_poll.unsigned_abs()
}

/// A holder id unique to this process (lease owner).
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}-{:x}", host.trim(), std::process::id(), jiff::Timestamp::now().as_nanosecond() & 0xffff_ffff)
}

/// The snapshot dump workflow over `regions` (temporary instances, their passwords in SSM,
/// archives through [`ServiceExports`]).
pub fn snapshot_dumps(
    aws: &Aws,
    account: &str,
    cfg: &Config,
    regions: &[String],
) -> bunker_actors::dump::snapshot::SnapshotDumps {
    use bunker_actors::dump::snapshot::{DumpSettings, SnapshotDumps};
    let settings = DumpSettings {
        deployments: regions.iter().map(|r| (r.clone(), cfg.deployment_id(account, r))).collect(),
        instance_class: cfg.export_dump_instance_class.clone(),
        subnet_group: cfg.export_dump_subnet_group.clone(),
        security_group: cfg.export_dump_security_group.clone(),
        kms_key: cfg.export_kms_key.clone(),
        tls_ca: None,
        level: bunker_actors::stream::Tuning::LEVEL,
        sha256: cfg.export_sha256,
        poll: parquet_poll(cfg),
    };
    let instances = regions.iter().map(|r| (r.clone(), aws.dump_instances(r))).collect();
    let secrets = regions.iter().map(|r| (r.clone(), aws.secrets(r))).collect();
    let targets = Arc::new(ServiceExports::new(aws.clone(), cfg));
    SnapshotDumps::new(settings, instances, secrets, targets, bunker_actors::stream::Tuning::default())
}

/// The service's exports: EBS snapshots with the default buffer sizes, as images or files
/// (`export.ebs_format`).
pub struct ServiceExports {
    aws: Aws,
    /// `export.sha256`.
    sha256: bool,
    /// `export.ebs_format`.
    ebs_format: EbsFormat,
    /// The restore actor, when `export.mount` is on: disks holding XFS or Btrfs go through a
    /// temporary volume.
    volumes: Option<Recipient<Run<VolumeKey>>>,
    /// The service's metrics: file-level archives' progress and ends (image exports report
    /// through the export workflow's own).
    metrics: Option<Arc<Metrics>>,
}

impl ServiceExports {
    /// Exports through `aws`, as `cfg`'s `export.sha256` and `export.ebs_format` say.
    pub fn new(aws: Aws, cfg: &Config) -> ServiceExports {
        ServiceExports {
            aws,
            sha256: cfg.export_sha256,
            ebs_format: cfg.export_ebs_format,
            volumes: None,
            metrics: None,
        }
    }

    /// File-level archives publish their progress and ends in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> ServiceExports {
        self.metrics = Some(metrics);
        self
    }

    /// File-level exports of disks holding a filesystem only the kernel reads go to the
    /// restore actor `volumes` (`export.mount`).
    pub fn with_volumes(mut self, volumes: Recipient<Run<VolumeKey>>) -> ServiceExports {
        self.volumes = Some(volumes);
        self
    }

    /// Runs the restore actor's job for the snapshot to its end.
    async fn through_volume(
        &self,
        volumes: &Recipient<Run<VolumeKey>>,
        what: &ExportSnapshot,
        to: &str,
        point: Option<PointRef>,
    ) -> Result<(), StreamError> {
        let key = VolumeKey {
            region: what.region.clone(),
            snapshot: what.snapshot_id.clone(),
            to: to.to_string(),
            name: None,
            point,
        };
        let transient = |why: String| {
            StreamError::port(format!("file-level export of {}", what.snapshot_id), {
                bunker_actors::ports::PortError::new(ErrorKind::Transient, None, why)
            })
        };
        let report = match volumes.send(Run(key)).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => return Err(transient(e.to_string())),
            Err(e) => return Err(transient(format!("restore actor: {e}"))),
        };
        match report.end {
            JobEnd::Done => Ok(()),
            JobEnd::GaveUp(why) => Err(transient(why)),
            JobEnd::Failed(why) | JobEnd::NotOurs(why) => Err(StreamError::Input(why)),
        }
    }

    fn opts(&self, to: &str) -> crate::archive_cli::ExportOpts {
        crate::archive_cli::ExportOpts { sha256: self.sha256, ..crate::archive_cli::ExportOpts::service(to) }
    }
}

#[async_trait::async_trait]
impl ExportTargets for ServiceExports {
    async fn prepare(
        &self,
        what: &ExportSnapshot,
        to: &str,
        progress: Arc<Progress>,
    ) -> Result<PreparedExport, StreamError> {
        let (snapshot, base) = (&what.snapshot_id, what.base.as_deref());
        crate::archive_cli::prepare_ebs(&self.aws, &what.region, snapshot, base, &self.opts(to), progress).await
    }

    fn ebs_format_of(&self, tags: &Tags) -> Result<EbsFormat, StreamError> {
        Ok(EbsFormat::from_tags(tags).map_err(StreamError::Input)?.unwrap_or(self.ebs_format))
    }

    async fn ebs_format(&self, what: &ExportSnapshot) -> Result<EbsFormat, StreamError> {
        let port = self.aws.snapshot_blocks(&what.region);
        let meta = match port.describe(&what.snapshot_id).await {
            Ok(m) => m,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Err(StreamError::Input(format!(
                    "snapshot {} does not exist in {}",
                    what.snapshot_id, what.region
                )))
            }
            Err(e) => return Err(StreamError::port(format!("describing {}", what.snapshot_id), e)),
        };
        let tags: Tags = meta.tags.into_iter().collect();
        self.ebs_format_of(&tags).map_err(|e| StreamError::Input(format!("snapshot {}: {e}", what.snapshot_id)))
    }

    async fn export_files(&self, what: &ExportSnapshot, to: &str, point: Option<PointRef>) -> Result<(), StreamError> {
        let progress = Arc::new(Progress::default());
        let opts = self.opts(to);
        let (region, snapshot) = (&what.region, &what.snapshot_id);
        let probed =
            crate::ebs_files::probe(&self.aws, region, snapshot, &opts, point.clone(), progress.clone()).await?;
        if let Some(volumes) = self.volumes.as_ref().filter(|_| probed.needs_kernel()) {
            drop(probed);
            return self.through_volume(volumes, what, to, point).await;
        }
        let report = crate::ebs_files::export_in_place(probed, &opts, progress, true, self.metrics.clone()).await?;
        for n in &report.not_exported {
            warn!(snapshot_id = %what.snapshot_id, reason = %n.reason, "filesystem not exported");
        }
        Ok(())
    }

    fn store(&self, to: &str, region: &str) -> Result<Arc<dyn ArchiveStore>, StreamError> {
        crate::archive_cli::target_store(&self.aws, Some(region), to)
            .map_err(|f| StreamError::Input(format!("{:#}", f.error)))
    }
}
