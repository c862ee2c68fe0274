//! The only place the AWS SDK appears: implementations of the actor ports.
//!
//! One [`SdkConfig`] (credentials, HTTP client, retry policy) is loaded per process and shared
//! by every client; per-region clients are built from it. A function configured to run under
//! its own role (`roles.*`, [`Function`]) gets the same configuration with that role's
//! credentials: each port below is built for exactly one function. `AWS_ENDPOINT_URL` (and the
//! per-service variants) point every client at an emulator for the demo and the tests.

/// The cluster-snapshot calls of copy, share, find and pull are the same in the RDS and the
/// DocumentDB APIs (one control plane), but the two SDK crates have distinct types: this
/// writes them once for both. `$service` names the API in errors, `$tag` is the crate's
/// `Tag`, `$engine_ok` selects the snapshots of the kind by engine, `$docdb` says whether
/// every cross-region copy needs a presigned URL (DocumentDB; RDS only in GovCloud).
macro_rules! cluster_snapshot_ops {
    ($control:ty, $service:literal, $tag:ty, $engine_ok:expr, $docdb:expr) => {
        impl $control {
            async fn cluster_find_copy(
                &self,
                tag: &str,
                value: &str,
                name: &str,
            ) -> Result<Option<BackupDetail>, PortError> {
                let found = self.describe_backup(name).await?;
                Ok(found.filter(|d| d.tags.get(tag).map(String::as_str) == Some(value)))
            }

            async fn cluster_copy(&self, request: &CopyRequest) -> Result<String, PortError> {
                let tags = request.tags.iter().map(|(k, v)| <$tag>::builder().key(k).value(v).build()).collect();
                let source_arn = super::rds::snapshot_arn(request, "cluster-snapshot");
                let kms_key = super::rds::copy_key(request)?;
                let presigned = match super::presign::needs_presigned_url($docdb, &request.source_region, &self.region)
                {
                    true => {
                        let copy = super::presign::ClusterCopy {
                            source_region: &request.source_region,
                            destination_region: &self.region,
                            source_arn: &source_arn,
                            target: &request.name,
                            kms_key,
                        };
                        Some(super::presign::cluster_copy_url(self.credentials.as_ref(), &copy).await?)
                    }
                    false => None,
                };
                let out = self
                    .client
                    .copy_db_cluster_snapshot()
                    .source_db_cluster_snapshot_identifier(&source_arn)
                    .target_db_cluster_snapshot_identifier(&request.name)
                    .set_kms_key_id(kms_key.map(String::from))
                    .set_pre_signed_url(presigned)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(|e| super::port_error(concat!($service, ":CopyDBClusterSnapshot"), e))?;
                Ok(out
                    .db_cluster_snapshot()
                    .and_then(|s| s.db_cluster_snapshot_identifier())
                    .unwrap_or(&request.name)
                    .to_string())
            }

            async fn cluster_share(&self, id: &str, account: &str) -> Result<(), PortError> {
                self.client
                    .modify_db_cluster_snapshot_attribute()
                    .db_cluster_snapshot_identifier(id)
                    .attribute_name("restore")
                    .values_to_add(account)
                    .send()
                    .await
                    .map_err(|e| super::port_error(concat!($service, ":ModifyDBClusterSnapshotAttribute"), e))?;
                Ok(())
            }

            async fn cluster_list_shared(&self, accounts: &[String]) -> Result<Vec<SharedBackup>, PortError> {
                let mut found = Vec::new();
                let mut marker = None;
                while !accounts.is_empty() {
                    let out = self
                        .client
                        .describe_db_cluster_snapshots()
                        .snapshot_type("shared")
                        .include_shared(true)
                        .set_marker(marker.take())
                        .send()
                        .await
                        .map_err(|e| super::port_error(concat!($service, ":DescribeDBClusterSnapshots"), e))?;
                    let engine_ok = $engine_ok;
                    for s in out.db_cluster_snapshots().iter().filter(|s| s.engine().is_some_and(|e| engine_ok(e))) {
                        let Some(arn) = s.db_cluster_snapshot_arn() else { continue };
                        let Some(account) = arn.split(':').nth(4).filter(|a| accounts.iter().any(|x| x == a)) else {
                            continue;
                        };
                        // For a shared snapshot the identifier is its ARN on AWS (moto: the name).
                        let Some(name) = s.db_cluster_snapshot_identifier().and_then(|i| i.rsplit(':').next()) else {
                            continue;
                        };
                        found.push(SharedBackup {
                            id: name.to_string(),
                            account: account.to_string(),
                            name: Some(name.to_string()),
                            source: s.db_cluster_identifier().map(String::from),
                            available: s.status() == Some("available"),
                            encrypted: s.storage_encrypted().unwrap_or(false),
                        });
                    }
                    match out.marker() {
                        Some(m) if !m.is_empty() => marker = Some(m.to_string()),
                        _ => break,
                    }
                }
                Ok(found)
            }
        }
    };
}

mod backup;
mod docdb;
mod doctor;
mod dynamodb;
mod ebs;
mod ec2;
mod eventbridge;
mod presign;
mod rds;
mod rds_dumps;
mod rds_exports;
mod redshift;
mod s3;
mod sns;
mod sqs;
mod ssm;
mod table_exports;
mod tables;
mod volumes;

pub use volumes::Imds;

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use bunker_actors::health::FailureStreak;
use bunker_actors::ports::{BackupControl, ErrorKind, EventQueue, Leases, Notifier, PortError, Pull, Replication};
use bunker_protocol::roles::Function;
use bunker_protocol::tags::Tags;
use bunker_protocol::ResourceKind;

pub use sns::SnsNotifier;

/// A client of SDK crate `$krate` for `$conf`, reporting every call to [`CallHealth`].
macro_rules! client {
    ($krate:ident, $conf:expr, $calls:expr) => {
        $krate::Client::from_conf($krate::config::Builder::from($conf).interceptor($calls.clone()).build())
    };
}
pub(crate) use client;

/// AWS calls in a row that failed before `/healthz` says AWS is failing: five calls, each
/// after the SDK's own retries, is a minute or less of an outage for a polling service.
pub const FAILED_CALLS_UNHEALTHY: u32 = 5;

/// An SDK interceptor on every client: after each call (all its attempts), whether AWS
/// answered — no answer at all (network, timeout) or a 5xx counts as failed, any other
/// answer (4xx included: AWS is up and said no) as reached. Feeds `/healthz`.
#[derive(Debug, Clone)]
pub struct CallHealth(Arc<FailureStreak>);

impl Intercept for CallHealth {
    fn name(&self) -> &'static str {
        "bunker-call-health"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let outcome = match (context.response(), context.output_or_error()) {
            (Some(r), _) if r.status().is_server_error() => Err(format!("HTTP {}", r.status().as_u16())),
            (Some(_), _) => Ok(()),
            (None, Some(Err(e))) => Err(format!("no answer: {}", DisplayErrorContext(e))),
            (None, _) => Err("no answer".into()),
        };
        self.0.record(outcome);
        Ok(())
    }
}

/// Shared AWS configuration.
#[derive(Clone)]
pub struct Aws {
    sdk: SdkConfig,
    calls: CallHealth,
    /// Bucket → the account that must own it (sent as ExpectedBucketOwner).
    owners: Arc<std::collections::BTreeMap<String, String>>,
    /// The credentials' account, asked of STS once.
    account: Arc<tokio::sync::OnceCell<String>>,
    /// Each function's configuration when it runs under its own role (`roles.*`): the same
    /// settings with credentials from `AssumeRole`, refreshed before they expire.
    roles: Arc<std::collections::BTreeMap<Function, SdkConfig>>,
}

impl Aws {
    /// Loads credentials and settings the usual way (environment, profile, instance role).
    /// `region` is the fallback when neither the config nor the environment names one.
    pub async fn load() -> Aws {
        Aws::over(aws_config::defaults(BehaviorVersion::latest()).load().await)
    }

    /// An `Aws` that loaded nothing (no credentials, no region, no metadata lookup), for
    /// commands that stay on this machine; any AWS call through it fails.
    pub fn offline() -> Aws {
        Aws::over(SdkConfig::builder().behavior_version(BehaviorVersion::latest()).build())
    }

    fn over(sdk: SdkConfig) -> Aws {
        Aws {
            sdk,
            calls: CallHealth(Arc::new(FailureStreak::new(FAILED_CALLS_UNHEALTHY))),
            owners: Arc::default(),
            account: Arc::default(),
            roles: Arc::default(),
        }
    }

    /// The same, with every request to `bucket` made only while `owner` owns it.
    pub fn expecting_owner(mut self, bucket: &str, owner: &str) -> Aws {
        Arc::make_mut(&mut self.owners).insert(bucket.to_string(), owner.to_string());
        self
    }

    /// The same, with each function of `roles` making its calls under that role (assumed
    /// with the process's own credentials, session `bunker-<function>-<deployment>`).
    pub async fn with_roles(mut self, roles: &std::collections::BTreeMap<Function, String>, deployment: &str) -> Aws {
        let mut assumed = std::collections::BTreeMap::new();
        for (&function, arn) in roles {
            let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
                .session_name(function.session_name(deployment))
                .configure(&self.sdk)
                .build()
                .await;
            let conf = self
                .sdk
                .to_builder()
                .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
                .build();
            assumed.insert(function, conf);
        }
        self.roles = Arc::new(assumed);
        self
    }

    /// The configuration of `function`'s calls in `region`: its role's, or the process's own.
    fn conf(&self, function: Function, region: &str) -> SdkConfig {
        let base = self.roles.get(&function).unwrap_or(&self.sdk);
        base.to_builder().region(Region::new(region.to_string())).build()
    }

    /// How AWS calls have been going (for `/healthz`).
    pub fn call_health(&self) -> Arc<FailureStreak> {
        self.calls.0.clone()
    }

    /// The SDK's own region (`AWS_REGION`, profile), if any.
    pub fn default_region(&self) -> Option<String> {
        self.sdk.region().map(|r| r.to_string())
    }

    /// The account the credentials belong to (one STS call per process).
    pub async fn account_id(&self) -> Result<String, PortError> {
        let ask = || async {
            let out = client!(aws_sdk_sts, &self.sdk, self.calls)
                .get_caller_identity()
                .send()
                .await
                .map_err(|e| port_error("sts:GetCallerIdentity", e))?;
            out.account()
                .map(String::from)
                .ok_or_else(|| PortError::new(ErrorKind::Internal, None, "sts returned no account"))
        };
        self.account.get_or_try_init(ask).await.cloned()
    }

    fn regional(&self, region: &str) -> SdkConfig {
        self.sdk.to_builder().region(Region::new(region.to_string())).build()
    }

    /// The catalog of what each kind can do: every kind creates, lists and deletes
    /// ([`BackupControl`]), shares ([`Replication`]) and lists what others shared ([`Pull`]).
    /// Redshift's DR copies are a cluster setting, so the replicator plans none for it, and
    /// its shared snapshots are restorable but not copyable, so the puller copies none
    /// (`ResourceKind::copies_per_backup`, `shared_copyable`).
    fn full(&self, function: Function, kind: ResourceKind, region: &str) -> Arc<dyn Pull> {
        let conf = self.conf(function, region);
        let region = region.to_string();
        match kind {
            ResourceKind::Ebs => Arc::new(ec2::EbsControl::new(&conf, &self.calls, region)),
            ResourceKind::Ec2ami => Arc::new(ec2::AmiControl::new(&conf, &self.calls, region)),
            ResourceKind::Rds => Arc::new(rds::RdsInstanceControl::new(&conf, &self.calls, region)),
            ResourceKind::RdsCluster => Arc::new(rds::RdsClusterControl::new(&conf, &self.calls, region)),
            ResourceKind::Docdb => Arc::new(docdb::DocdbControl::new(&conf, &self.calls, region)),
            ResourceKind::Redshift => Arc::new(redshift::RedshiftControl::new(&conf, &self.calls, region)),
        }
    }

    /// Create, list and delete `kind`'s backups in `region`.
    pub fn backup_control(&self, kind: ResourceKind, region: &str) -> Arc<dyn BackupControl> {
        self.full(Function::Lifecycle, kind, region)
    }

    /// Copy and share `kind`'s backups in `region`.
    pub fn replication(&self, kind: ResourceKind, region: &str) -> Arc<dyn Replication> {
        self.full(Function::Replication, kind, region)
    }

    /// List `kind`'s backups shared with this account in `region` (and copy them in).
    pub fn pull(&self, kind: ResourceKind, region: &str) -> Arc<dyn Pull> {
        self.full(Function::Replication, kind, region)
    }

    /// DynamoDB tables in `region` (temporary tables of backup exports).
    pub fn tables(&self, region: &str) -> Arc<dyn bunker_actors::ports::Tables> {
        Arc::new(tables::DynamoTables::new(&self.conf(Function::Temporary, region), &self.calls, region.to_string()))
    }

    /// RDS's snapshot exports to S3 in `region`.
    pub fn snapshot_exports(&self, region: &str) -> Arc<dyn bunker_actors::ports::SnapshotExports> {
        Arc::new(rds_exports::RdsExports::new(&self.conf(Function::Export, region), &self.calls, region.to_string()))
    }

    /// Temporary DB instances for dumps in `region`.
    pub fn dump_instances(&self, region: &str) -> Arc<dyn bunker_actors::ports::DumpInstances> {
        Arc::new(rds_dumps::RdsDumps::new(&self.conf(Function::Temporary, region), &self.calls, region.to_string()))
    }

    /// SSM Parameter Store SecureStrings in `region`.
    pub fn secrets(&self, region: &str) -> Arc<dyn bunker_actors::ports::Secrets> {
        Arc::new(ssm::SsmSecrets::new(&self.conf(Function::Temporary, region), &self.calls))
    }

    /// DynamoDB's exports to S3 in `region`.
    pub fn table_exports(&self, region: &str) -> Arc<dyn bunker_actors::ports::TableExports> {
        Arc::new(table_exports::DynamoExports::new(
            &self.conf(Function::Export, region),
            &self.calls,
            region.to_string(),
        ))
    }

    /// AWS Backup's recovery points in `region`.
    pub fn vaults(&self, region: &str) -> Arc<dyn bunker_actors::ports::Vaults> {
        Arc::new(backup::BackupVaults::new(&self.conf(Function::Lifecycle, region), &self.calls, region.to_string()))
    }

    /// Temporary EBS volumes in `region` (file-level exports through a volume).
    pub fn temp_volumes(&self, region: &str) -> Arc<dyn bunker_actors::ports::TempVolumes> {
        Arc::new(volumes::Ec2Volumes::new(&self.conf(Function::Temporary, region), &self.calls))
    }

    /// The EBS direct APIs of `region`.
    pub fn snapshot_blocks(&self, region: &str) -> Arc<dyn bunker_actors::ports::SnapshotBlocks> {
        Arc::new(ebs::EbsBlocks::new(&self.conf(Function::Export, region), &self.calls))
    }

    /// Archives under `s3://bucket/prefix` (the bucket's region is the SDK's region).
    pub fn archive_store(
        &self,
        region: &str,
        bucket: String,
        prefix: String,
    ) -> Arc<dyn bunker_actors::ports::ArchiveStore> {
        let owner = self.owners.get(&bucket).cloned();
        Arc::new(s3::S3Store::new(&self.conf(Function::Export, region), &self.calls, bucket, prefix, owner))
    }

    /// The event queue (and its dead-letter queue).
    pub fn event_queue(&self, url: String, dead_letter_url: Option<String>) -> Arc<dyn EventQueue> {
        Arc::new(sqs::SqsQueue::new(&self.sdk, &self.calls, url, dead_letter_url))
    }

    /// Leases in a DynamoDB table.
    pub fn leases(&self, table: String) -> Arc<dyn Leases> {
        Arc::new(dynamodb::DynamoLeases::new(&self.sdk, &self.calls, table))
    }

    /// bunker's own events on `bus` (a name in `region`, or an ARN, whose region wins).
    pub fn event_bus(&self, region: &str, bus: &str) -> Arc<dyn bunker_actors::ports::EventBus> {
        let region = match bus.strip_prefix("arn:") {
            Some(rest) => rest.split(':').nth(2).unwrap_or(region),
            None => region,
        };
        Arc::new(eventbridge::Bus::new(&self.regional(region), &self.calls, bus.to_string()))
    }

    /// The notifier (publishes to a topic's own region).
    pub fn notifier(&self) -> Arc<dyn Notifier> {
        Arc::new(SnsNotifier::new(self.sdk.clone(), self.calls.clone()))
    }
}

/// Maps an SDK error to the port's error kind, keeping the AWS code and message.
pub(crate) fn port_error<E>(operation: &str, e: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e.code().map(String::from);
    // Some answers carry no error code (HEAD has no body; some 403s): go by the status.
    let status = match &e {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        _ => None,
    };
    let kind = match (&e, code.as_deref()) {
        (SdkError::ServiceError(_), None) if status == Some(403) => ErrorKind::AccessDenied,
        (SdkError::ServiceError(_), None) if status == Some(404) => ErrorKind::NotFound,
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_), _) => {
            ErrorKind::Transient
        }
        (_, Some(c)) if c.contains("NotFound") || c.starts_with("NoSuch") => ErrorKind::NotFound,
        (_, Some(c)) if c.contains("AlreadyExists") || c.contains("Duplicate") => ErrorKind::AlreadyExists,
        (_, Some(c)) if c.contains("Throttl") || c == "RequestLimitExceeded" || c.contains("TooManyRequests") => {
            ErrorKind::Throttled
        }
        (_, Some(c)) if c.contains("AccessDenied") || c == "UnauthorizedOperation" || c.contains("Authorization") => {
            ErrorKind::AccessDenied
        }
        (_, Some(c))
            if c.contains("Quota")
                || c == "ResourceLimitExceeded"
                || c == "SnapshotCreationPerVolumeRateExceeded"
                || c == "ConcurrentSnapshotLimitExceeded" =>
        {
            ErrorKind::Quota
        }
        (_, Some(c)) if c.contains("Invalid") || c.contains("Limit") => ErrorKind::Invalid,
        _ => ErrorKind::Internal,
    };
    let message = match (e.message(), &e) {
        (Some(m), _) => format!("{operation}: {m}"),
        (None, SdkError::ServiceError(_)) if status == Some(403) => format!("{operation}: access denied (HTTP 403)"),
        (None, SdkError::ServiceError(se)) => {
            format!("{operation}: HTTP {} with no AWS error in the response", se.raw().status().as_u16())
        }
        (None, _) => {
            let full: String = DisplayErrorContext(&e).to_string().chars().take(300).collect();
            format!("{operation}: {full}")
        }
    };
    PortError { kind, code, message }
}

/// Whether a listed snapshot carries tags worth returning: bunker's, or (compat) Shelvery's.
/// Used where the API cannot filter snapshots by tag server-side (RDS, Redshift).
pub(crate) fn is_candidate(tags: &Tags, shelvery: bool) -> bool {
    tags.contains_key(bunker_protocol::tags::MANAGED)
        || (shelvery && tags.contains_key(bunker_protocol::tags::shelvery::BACKUP))
}

/// RDS / DocumentDB status → why a backup cannot be made now (`None`: it can).
pub(crate) fn db_not_ready(status: Option<&str>) -> Option<String> {
    match status {
        Some("available" | "backing-up") | None => None,
        Some(s) => Some(format!("status {s}")),
    }
}

/// Builds a [`Tags`] map from any SDK's tag list.
pub(crate) fn tag_map<'a>(pairs: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>) -> Tags {
    pairs.into_iter().filter_map(|(k, v)| Some((k?.to_string(), v.unwrap_or_default().to_string()))).collect()
}

/// An AWS timestamp (`StartTime`, `SnapshotCreateTime`) as a jiff timestamp.
pub(crate) fn aws_time(t: Option<&aws_smithy_types::DateTime>) -> Option<jiff::Timestamp> {
    let t = t?;
    jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok()
}

/// An AWS timestamp sent as text (an AMI's `CreationDate`, ISO 8601).
pub(crate) fn aws_time_text(t: Option<&str>) -> Option<jiff::Timestamp> {
    t?.parse().ok()
}
