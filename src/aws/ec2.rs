//! EBS volumes → snapshots, and EC2 instances → AMIs.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ec2::types::{
    Filter, ImageState, InstanceStateName, LaunchPermission, LaunchPermissionModifications, OperationType,
    ResourceType, SnapshotAttributeName, SnapshotState, Tag, TagSpecification, VolumeState,
};
use aws_sdk_ec2::Client;
use bunker_actors::ports::{
    BackupControl, BackupDetail, CopyRequest, CreateRequest, Created, ErrorKind, ListedBackup, PortError, Pull,
    Replication, Resource, SharedBackup,
};
use bunker_protocol::backup::Backup;
use bunker_protocol::tags::{self, Tags};
use bunker_protocol::ResourceKind;

use super::{client, port_error, tag_map, CallHealth};

pub(super) fn ec2_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

fn tag_spec(kind: ResourceType, tags: &Tags) -> TagSpecification {
    TagSpecification::builder().resource_type(kind).set_tags(Some(ec2_tags(tags))).build()
}

pub(super) fn from_ec2(tags: &[Tag]) -> Tags {
    tag_map(tags.iter().map(|t| (t.key(), t.value())))
}

/// The listing filter: bunker's backups of `kind`, plus (compat) anything Shelvery made.
/// EC2 filters AND across names and OR within values, so Shelvery's need a second call.
fn backup_filters(kind: ResourceKind, shelvery: bool) -> Vec<Vec<Filter>> {
    let mut sets = vec![vec![Filter::builder().name(format!("tag:{}", tags::KIND)).values(kind.as_str()).build()]];
    if shelvery {
        sets.push(vec![Filter::builder().name(format!("tag:{}", tags::shelvery::BACKUP)).values("true").build()]);
    }
    sets
}

/// EBS volumes and their snapshots.
pub struct EbsControl {
    client: Client,
    region: String,
}

impl EbsControl {
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> Self {
        EbsControl { client: client!(aws_sdk_ec2, conf, calls), region }
    }
}

#[async_trait]
impl BackupControl for EbsControl {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Ebs
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn list_resources(&self) -> Result<Vec<Resource>, PortError> {
        let volumes = self
            .client
            .describe_volumes()
            .max_results(500)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("ec2:DescribeVolumes", e))?;
        Ok(volumes
            .into_iter()
            .filter_map(|v| {
                let not_ready = match v.state() {
                    Some(VolumeState::Available | VolumeState::InUse) => None,
                    Some(s) => Some(format!("volume state {}", s.as_str())),
                    None => None,
                };
                Some(Resource { id: v.volume_id()?.to_string(), tags: from_ec2(v.tags()), not_ready })
            })
            .collect())
    }

    async fn create_backup(&self, request: &CreateRequest) -> Result<Created, PortError> {
        let out = self
            .client
            .create_snapshot()
            .volume_id(&request.resource.id)
            .description(format!("bunker backup {}", request.name))
            .tag_specifications(tag_spec(ResourceType::Snapshot, &request.tags))
            .send()
            .await
            .map_err(|e| port_error("ec2:CreateSnapshot", e))?;
        Ok(Created { id: out.snapshot_id().unwrap_or_default().to_string(), note: None })
    }

    async fn list_backups(&self, shelvery: bool) -> Result<Vec<ListedBackup>, PortError> {
        let mut out = HashMap::new();
        for filters in backup_filters(ResourceKind::Ebs, shelvery) {
            for s in self.snapshots(filters, None).await? {
                let Some(id) = s.snapshot_id() else { continue };
                let tags = from_ec2(s.tags());
                // Shelvery tags an AMI's snapshots like the AMI: they are not EBS backups.
                if tags.contains_key("shelvery:ami_id") || tags.contains_key(tags::AMI_PART) {
                    continue;
                }
                let available = s.state() == Some(&SnapshotState::Completed);
                let aws_created_at = super::aws_time(s.start_time());
                out.insert(
                    id.to_string(),
                    ListedBackup { id: id.to_string(), tags, available, aws_created_at, parts: vec![] },
                );
            }
        }
        Ok(out.into_values().collect())
    }

    async fn delete_backup(&self, backup: &Backup) -> Result<(), PortError> {
        self.client
            .delete_snapshot()
            .snapshot_id(&backup.id)
            .send()
            .await
            .map_err(|e| port_error("ec2:DeleteSnapshot", e))?;
        Ok(())
    }
}

#[async_trait]
impl Replication for EbsControl {
    async fn describe_backup(&self, id: &str) -> Result<Option<BackupDetail>, PortError> {
        let out = self.client.describe_snapshots().snapshot_ids(id).send().await;
        let snapshots = match out {
            Ok(o) => o.snapshots.unwrap_or_default(),
            Err(e) => return not_found_is_none(port_error("ec2:DescribeSnapshots", e)),
        };
        match snapshots.into_iter().next() {
            Some(s) => Ok(Some(self.snapshot_detail(s).await?)),
            None => Ok(None),
        }
    }

    async fn find_copy(&self, tag: &str, value: &str, _name: &str) -> Result<Option<BackupDetail>, PortError> {
        let out = self
            .client
            .describe_snapshots()
            .owner_ids("self")
            .filters(Filter::builder().name(format!("tag:{tag}")).values(value).build())
            .send()
            .await
            .map_err(|e| port_error("ec2:DescribeSnapshots", e))?;
        match out.snapshots.unwrap_or_default().into_iter().next() {
            Some(s) => Ok(Some(self.snapshot_detail(s).await?)),
            None => Ok(None),
        }
    }

    async fn copy_backup(&self, request: &CopyRequest) -> Result<String, PortError> {
        let mut call = self
            .client
            .copy_snapshot()
            .source_region(&request.source_region)
            .source_snapshot_id(&request.source_id)
            .description(format!("bunker copy of {}:{}", request.source_region, request.source_id))
            .tag_specifications(tag_spec(ResourceType::Snapshot, &request.tags));
        if let Some(key) = &request.kms_key {
            call = call.encrypted(true).kms_key_id(key);
        }
        let out = call.send().await.map_err(|e| port_error("ec2:CopySnapshot", e))?;
        out.snapshot_id.ok_or_else(|| PortError::new(ErrorKind::Internal, None, "ec2:CopySnapshot returned no id"))
    }

    async fn share_backup(&self, backup: &BackupDetail, account: &str) -> Result<(), PortError> {
        share_snapshot(&self.client, &backup.id, account).await
    }

    /// One `DescribeSnapshots` per chunk of ids (filter `snapshot-id`, which, unlike
    /// `SnapshotIds`, does not fail the whole request for one gone snapshot), and one per
    /// share account (`RestorableByUserIds`) for who each is shared with.
    async fn describe_backups(&self, ids: &[String], accounts: &[String]) -> Result<Vec<BackupDetail>, PortError> {
        self.batch_details("snapshot-id", ids, accounts).await
    }

    /// One `DescribeSnapshots` per chunk of tag values (filter `tag:<tag>`), and one per
    /// share account.
    async fn find_copies(
        &self,
        tag: &str,
        wanted: &[(String, String)],
        accounts: &[String],
    ) -> Result<Vec<(String, BackupDetail)>, PortError> {
        let values: Vec<String> = wanted.iter().map(|(v, _)| v.clone()).collect();
        Ok(by_tag(tag, self.batch_details(&format!("tag:{tag}"), &values, accounts).await?))
    }
}

/// Values per filter in one EC2 describe call (AWS's limit for a filter's values).
const FILTER_VALUES: usize = 200;

#[async_trait]
impl Pull for EbsControl {
    async fn list_shared(&self, accounts: &[String]) -> Result<Vec<SharedBackup>, PortError> {
        if accounts.is_empty() {
            return Ok(vec![]);
        }
        let snapshots = self
            .client
            .describe_snapshots()
            .restorable_by_user_ids("self")
            .set_owner_ids(Some(accounts.to_vec()))
            .max_results(1000)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("ec2:DescribeSnapshots", e))?;
        Ok(snapshots
            .into_iter()
            .filter_map(|s| {
                let account = s.owner_id()?.to_string();
                // Only bunker's own backups: an AMI's snapshots (shared with their AMI) and
                // anything else the account shares are not EBS backups to pull.
                let name = s.description()?.strip_prefix("bunker backup ")?.to_string();
                accounts.contains(&account).then(|| SharedBackup {
                    id: s.snapshot_id().unwrap_or_default().to_string(),
                    account,
                    name: Some(name),
                    source: s.volume_id().map(String::from),
                    available: s.state() == Some(&SnapshotState::Completed),
                    encrypted: s.encrypted().unwrap_or(false),
                })
            })
            .collect())
    }
}

impl EbsControl {
    /// This account's snapshots whose `filter` is one of `values`, as details with
    /// `shared_with` limited to `accounts` ([`batched_look`]).
    async fn batch_details(
        &self,
        filter: &str,
        values: &[String],
        accounts: &[String],
    ) -> Result<Vec<BackupDetail>, PortError> {
        let list =
            |by: Filter, account: Option<String>| async move { self.snapshots(vec![by], account.as_deref()).await };
        let found =
            batched_look(filter, values, accounts, list, |s: &aws_sdk_ec2::types::Snapshot| s.snapshot_id()).await?;
        Ok(found.into_iter().map(|(s, shared_with)| detail_of(&s, shared_with)).collect())
    }

    /// Every snapshot of this account matching `filters` (all pages), or only those
    /// `restorable_by` that account.
    async fn snapshots(
        &self,
        filters: Vec<Filter>,
        restorable_by: Option<&str>,
    ) -> Result<Vec<aws_sdk_ec2::types::Snapshot>, PortError> {
        self.client
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(filters))
            .set_restorable_by_user_ids(restorable_by.map(|a| vec![a.to_string()]))
            .max_results(1000)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("ec2:DescribeSnapshots", e))
    }

    async fn snapshot_detail(&self, s: aws_sdk_ec2::types::Snapshot) -> Result<BackupDetail, PortError> {
        let shared_with = snapshot_shared_with(&self.client, s.snapshot_id().unwrap_or_default()).await?;
        Ok(detail_of(&s, shared_with))
    }
}

/// Per chunk of `values` (AWS's limit of a filter's values): one listing of this account's
/// items whose `filter` is one of them (`list(filter, None)`), and one per account of
/// `accounts` of those it may use (`list(filter, Some(account))`, EC2's `RestorableByUserIds`
/// / `ExecutableUsers`). Each item comes with the accounts of `accounts` that may use it: no
/// attribute read per item.
async fn batched_look<T, Fut>(
    filter: &str,
    values: &[String],
    accounts: &[String],
    list: impl Fn(Filter, Option<String>) -> Fut,
    id_of: impl Fn(&T) -> Option<&str>,
) -> Result<Vec<(T, Vec<String>)>, PortError>
where
    Fut: std::future::Future<Output = Result<Vec<T>, PortError>>,
{
    let mut out = Vec::new();
    for chunk in values.chunks(FILTER_VALUES) {
        let by = Filter::builder().name(filter).set_values(Some(chunk.to_vec())).build();
        let mut shared: HashMap<String, Vec<String>> = HashMap::new();
        for account in accounts {
            for item in list(by.clone(), Some(account.clone())).await? {
                shared.entry(id_of(&item).unwrap_or_default().to_string()).or_default().push(account.clone());
            }
        }
        for item in list(by, None).await? {
            let shared_with = shared.remove(id_of(&item).unwrap_or_default()).unwrap_or_default();
            out.push((item, shared_with));
        }
    }
    Ok(out)
}

/// Copies found by a tag: each keyed by its value of `tag`.
fn by_tag(tag: &str, found: Vec<BackupDetail>) -> Vec<(String, BackupDetail)> {
    found.into_iter().filter_map(|d| Some((d.tags.get(tag)?.clone(), d))).collect()
}

/// A snapshot as the replicator sees it, shared with `shared_with`.
fn detail_of(s: &aws_sdk_ec2::types::Snapshot, shared_with: Vec<String>) -> BackupDetail {
    BackupDetail {
        id: s.snapshot_id().unwrap_or_default().to_string(),
        shared_with,
        tags: from_ec2(s.tags()),
        available: s.state() == Some(&SnapshotState::Completed),
        encrypted: s.encrypted().unwrap_or(false),
        kms_key: s.kms_key_id().map(String::from),
        parts: vec![],
    }
}

fn not_found_is_none<T>(e: PortError) -> Result<Option<T>, PortError> {
    if e.kind == ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(e)
    }
}

async fn snapshot_shared_with(client: &Client, id: &str) -> Result<Vec<String>, PortError> {
    let out = client
        .describe_snapshot_attribute()
        .snapshot_id(id)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .map_err(|e| port_error("ec2:DescribeSnapshotAttribute", e))?;
    Ok(out.create_volume_permissions().iter().filter_map(|p| p.user_id().map(String::from)).collect())
}

async fn share_snapshot(client: &Client, id: &str, account: &str) -> Result<(), PortError> {
    client
        .modify_snapshot_attribute()
        .snapshot_id(id)
        // The OperationType + UserIds form (equivalent on AWS to the CreateVolumePermission
        // structure) is the one moto implements.
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(OperationType::Add)
        .user_ids(account)
        .send()
        .await
        .map_err(|e| port_error("ec2:ModifySnapshotAttribute", e))?;
    Ok(())
}

/// EC2 instances and their AMIs (with the AMIs' snapshots).
pub struct AmiControl {
    client: Client,
    region: String,
}

impl AmiControl {
    pub fn new(conf: &SdkConfig, calls: &CallHealth, region: String) -> Self {
        AmiControl { client: client!(aws_sdk_ec2, conf, calls), region }
    }
}

#[async_trait]
impl BackupControl for AmiControl {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Ec2ami
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn list_resources(&self) -> Result<Vec<Resource>, PortError> {
        let reservations = self
            .client
            .describe_instances()
            .max_results(1000)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("ec2:DescribeInstances", e))?;
        Ok(reservations
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                let state = i.state().and_then(|s| s.name());
                let not_ready = match state {
                    Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown) => return None,
                    Some(InstanceStateName::Pending) => Some("instance pending".to_string()),
                    _ => None,
                };
                Some(Resource { id: i.instance_id()?.to_string(), tags: from_ec2(i.tags()), not_ready })
            })
            .collect())
    }

    async fn create_backup(&self, request: &CreateRequest) -> Result<Created, PortError> {
        // The AMI's snapshots carry the same tags plus a marker, so they are never mistaken
        // for EBS backups and are deleted with their AMI.
        let mut snapshot_tags = request.tags.clone();
        snapshot_tags.insert(tags::AMI_PART.into(), "true".into());
        let out = self
            .client
            .create_image()
            .instance_id(&request.resource.id)
            .name(&request.name)
            .description(format!("bunker backup of {}", request.resource.id))
            // Crash-consistent, as Shelvery: a backup tool must not reboot production.
            .no_reboot(true)
            .tag_specifications(tag_spec(ResourceType::Image, &request.tags))
            .tag_specifications(tag_spec(ResourceType::Snapshot, &snapshot_tags))
            .send()
            .await
            .map_err(|e| port_error("ec2:CreateImage", e))?;
        Ok(Created { id: out.image_id().unwrap_or_default().to_string(), note: None })
    }

    async fn list_backups(&self, shelvery: bool) -> Result<Vec<ListedBackup>, PortError> {
        let mut images = HashMap::new();
        for filters in backup_filters(ResourceKind::Ec2ami, shelvery) {
            let found = self
                .client
                .describe_images()
                .owners("self")
                .set_filters(Some(filters))
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| port_error("ec2:DescribeImages", e))?;
            for i in found {
                images.insert(i.image_id().unwrap_or_default().to_string(), i);
            }
        }
        if images.is_empty() {
            return Ok(vec![]);
        }
        // The AMIs' snapshots, in one listing: a snapshot is deleted with its AMI only if it
        // carries the same owner as the AMI (bunker deployment, or Shelvery's marker).
        let mut part_filter = vec![tags::AMI_PART];
        if shelvery {
            part_filter.push("shelvery:ami_id");
        }
        let snapshots = self
            .client
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name("tag-key")
                    .set_values(Some(part_filter.into_iter().map(String::from).collect()))
                    .build(),
            )
            .max_results(1000)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("ec2:DescribeSnapshots", e))?;
        let snapshot_tags: HashMap<&str, Tags> =
            snapshots.iter().filter_map(|s| Some((s.snapshot_id()?, from_ec2(s.tags())))).collect();
        let owner = |t: &Tags| (t.get(tags::DEPLOYMENT).cloned(), t.get(tags::shelvery::BACKUP).cloned());
        Ok(images
            .into_iter()
            .filter(|(id, _)| !id.is_empty())
            .map(|(id, i)| {
                let tags = from_ec2(i.tags());
                let parts = i
                    .block_device_mappings()
                    .iter()
                    .filter_map(|m| m.ebs()?.snapshot_id())
                    .filter(|s| snapshot_tags.get(s).is_some_and(|t| owner(t) == owner(&tags)))
                    .map(String::from)
                    .collect();
                let available = i.state() == Some(&ImageState::Available);
                let aws_created_at = super::aws_time_text(i.creation_date());
                ListedBackup { id, tags, available, aws_created_at, parts }
            })
            .collect())
    }

    async fn delete_backup(&self, backup: &Backup) -> Result<(), PortError> {
        self.client
            .deregister_image()
            .image_id(&backup.id)
            .send()
            .await
            .map_err(|e| port_error("ec2:DeregisterImage", e))?;
        // `parts` holds only the snapshots the listing found to share the AMI's owner.
        for id in &backup.parts {
            self.client
                .delete_snapshot()
                .snapshot_id(id)
                .send()
                .await
                .map_err(|e| port_error("ec2:DeleteSnapshot", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Replication for AmiControl {
    async fn describe_backup(&self, id: &str) -> Result<Option<BackupDetail>, PortError> {
        let out = match self.client.describe_images().image_ids(id).send().await {
            Ok(o) => o,
            Err(e) => return not_found_is_none(port_error("ec2:DescribeImages", e)),
        };
        match out.images.unwrap_or_default().into_iter().next() {
            Some(i) => Ok(Some(self.image_detail(i).await?)),
            None => Ok(None),
        }
    }

    async fn find_copy(&self, tag: &str, value: &str, _name: &str) -> Result<Option<BackupDetail>, PortError> {
        let out = self
            .client
            .describe_images()
            .owners("self")
            .filters(Filter::builder().name(format!("tag:{tag}")).values(value).build())
            .send()
            .await
            .map_err(|e| port_error("ec2:DescribeImages", e))?;
        match out.images.unwrap_or_default().into_iter().next() {
            Some(i) => Ok(Some(self.image_detail(i).await?)),
            None => Ok(None),
        }
    }

    async fn copy_backup(&self, request: &CopyRequest) -> Result<String, PortError> {
        let mut snapshot_tags = request.tags.clone();
        snapshot_tags.insert(tags::AMI_PART.into(), "true".into());
        // The client token makes a retried call (after a timeout) return the same copy.
        let token: String =
            format!("bunker-{}-{}", request.source_region, request.source_id).chars().take(64).collect();
        let mut call = self
            .client
            .copy_image()
            .source_region(&request.source_region)
            .source_image_id(&request.source_id)
            .name(&request.name)
            .description(format!("bunker copy of {}:{}", request.source_region, request.source_id))
            .client_token(token)
            .tag_specifications(tag_spec(ResourceType::Image, &request.tags))
            .tag_specifications(tag_spec(ResourceType::Snapshot, &snapshot_tags));
        if let Some(key) = &request.kms_key {
            call = call.encrypted(true).kms_key_id(key);
        }
        let out = call.send().await.map_err(|e| port_error("ec2:CopyImage", e))?;
        out.image_id.ok_or_else(|| PortError::new(ErrorKind::Internal, None, "ec2:CopyImage returned no id"))
    }

    async fn share_backup(&self, backup: &BackupDetail, account: &str) -> Result<(), PortError> {
        // The AMI's snapshots too (as the look found them): without them the other account
        // can launch but not copy it.
        for snapshot in &backup.parts {
            share_snapshot(&self.client, snapshot, account).await?;
        }
        self.client
            .modify_image_attribute()
            .image_id(&backup.id)
            .launch_permission(
                LaunchPermissionModifications::builder()
                    .add(LaunchPermission::builder().user_id(account).build())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| port_error("ec2:ModifyImageAttribute", e))?;
        Ok(())
    }

    /// One `DescribeImages` per chunk of ids (filter `image-id`), and one per share account
    /// (`ExecutableUsers`) for who each is shared with: no `DescribeImageAttribute`.
    async fn describe_backups(&self, ids: &[String], accounts: &[String]) -> Result<Vec<BackupDetail>, PortError> {
        self.batch_details("image-id", ids, accounts).await
    }

    /// One `DescribeImages` per chunk of tag values (filter `tag:<tag>`), and one per share
    /// account.
    async fn find_copies(
        &self,
        tag: &str,
        wanted: &[(String, String)],
        accounts: &[String],
    ) -> Result<Vec<(String, BackupDetail)>, PortError> {
        let values: Vec<String> = wanted.iter().map(|(v, _)| v.clone()).collect();
        Ok(by_tag(tag, self.batch_details(&format!("tag:{tag}"), &values, accounts).await?))
    }
}

#[async_trait]
impl Pull for AmiControl {
    async fn list_shared(&self, accounts: &[String]) -> Result<Vec<SharedBackup>, PortError> {
        if accounts.is_empty() {
            return Ok(vec![]);
        }
        let images = self
            .client
            .describe_images()
            .executable_users("self")
            .set_owners(Some(accounts.to_vec()))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| port_error("ec2:DescribeImages", e))?;
        Ok(images
            .into_iter()
            .filter_map(|i| {
                let account = i.owner_id()?.to_string();
                let encrypted =
                    i.block_device_mappings().iter().any(|m| m.ebs().and_then(|e| e.encrypted()).unwrap_or(false));
                accounts.contains(&account).then(|| SharedBackup {
                    id: i.image_id().unwrap_or_default().to_string(),
                    account,
                    name: i.name().map(String::from),
                    source: None,
                    available: i.state() == Some(&ImageState::Available),
                    encrypted,
                })
            })
            .collect())
    }
}

impl AmiControl {
    async fn image_detail(&self, i: aws_sdk_ec2::types::Image) -> Result<BackupDetail, PortError> {
        let attr = self
            .client
            .describe_image_attribute()
            .image_id(i.image_id().unwrap_or_default())
            .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .map_err(|e| port_error("ec2:DescribeImageAttribute", e))?;
        let shared_with = attr.launch_permissions().iter().filter_map(|p| p.user_id().map(String::from)).collect();
        Ok(image_detail_of(&i, shared_with))
    }

    /// This account's AMIs whose `filter` is one of `values`, as details with
    /// `shared_with` limited to `accounts` ([`batched_look`]).
    async fn batch_details(
        &self,
        filter: &str,
        values: &[String],
        accounts: &[String],
    ) -> Result<Vec<BackupDetail>, PortError> {
        let list = |by: Filter, account: Option<String>| async move {
            self.client
                .describe_images()
                .owners("self")
                .filters(by)
                .set_executable_users(account.map(|a| vec![a]))
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| port_error("ec2:DescribeImages", e))
        };
        let found = batched_look(filter, values, accounts, list, |i: &aws_sdk_ec2::types::Image| i.image_id()).await?;
        Ok(found.into_iter().map(|(i, shared_with)| image_detail_of(&i, shared_with)).collect())
    }
}

/// An AMI as the replicator sees it, shared with `shared_with`; its parts are the snapshots of
/// its block device mappings.
fn image_detail_of(i: &aws_sdk_ec2::types::Image, shared_with: Vec<String>) -> BackupDetail {
    let ebs = || i.block_device_mappings().iter().filter_map(|m| m.ebs());
    BackupDetail {
        id: i.image_id().unwrap_or_default().to_string(),
        shared_with,
        tags: from_ec2(i.tags()),
        available: i.state() == Some(&ImageState::Available),
        encrypted: ebs().any(|e| e.encrypted().unwrap_or(false)),
        kms_key: ebs().find_map(|e| e.kms_key_id().map(String::from)),
        parts: ebs().filter_map(|e| e.snapshot_id().map(String::from)).collect(),
    }
}
