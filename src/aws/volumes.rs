//! Temporary EBS volumes made from snapshots (the restore actor's AWS side) and this
//! instance's identity from the instance metadata service (IMDSv2, through the SDK's own
//! client, which honours `AWS_EC2_METADATA_SERVICE_ENDPOINT`).

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ec2::types::{Filter, ResourceType, VolumeType};
use aws_sdk_ec2::Client;
use bunker_actors::ports::{ErrorKind, PortError, TempVolumes, ThisInstance, VolumeInfo};
use bunker_protocol::tags::{self, Tags};

use super::ec2::{ec2_tags, from_ec2};
use super::{client, port_error, CallHealth};

/// EC2 volumes of one region.
pub struct Ec2Volumes {
    client: Client,
}

impl Ec2Volumes {
    /// Volumes through `conf`'s region.
    pub fn new(conf: &SdkConfig, calls: &CallHealth) -> Self {
        Ec2Volumes { client: client!(aws_sdk_ec2, conf, calls) }
    }

    async fn describe(&self, filters: Vec<Filter>) -> Result<Vec<VolumeInfo>, PortError> {
        let mut pages = self.client.describe_volumes().set_filters(Some(filters)).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| port_error("ec2:DescribeVolumes", e))?;
            out.extend(page.volumes().iter().map(info));
        }
        Ok(out)
    }
}

fn info(v: &aws_sdk_ec2::types::Volume) -> VolumeInfo {
    let attachment = v.attachments().first().map(|a| {
        let state = a.state().map(|s| s.as_str().to_ascii_lowercase()).unwrap_or_default();
        (a.instance_id().unwrap_or_default().to_string(), state)
    });
    VolumeInfo {
        id: v.volume_id().unwrap_or_default().to_string(),
        state: v.state().map(|s| s.as_str().to_ascii_lowercase()).unwrap_or_default(),
        tags: from_ec2(v.tags()),
        attachment,
    }
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

#[async_trait]
impl TempVolumes for Ec2Volumes {
    async fn create(&self, snapshot: &str, zone: &str, tags: &Tags) -> Result<String, PortError> {
        let spec = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(ResourceType::Volume)
            .set_tags(Some(ec2_tags(tags)))
            .build();
        let out = self
            .client
            .create_volume()
            .snapshot_id(snapshot)
            .availability_zone(zone)
            .volume_type(VolumeType::Gp3)
            .tag_specifications(spec)
            .send()
            .await
            .map_err(|e| port_error("ec2:CreateVolume", e))?;
        out.volume_id().map(String::from).ok_or_else(|| PortError::new(ErrorKind::Internal, None, "no volume id"))
    }

    async fn named(&self, name: &str) -> Result<Vec<VolumeInfo>, PortError> {
        self.describe(vec![filter("tag:Name", name)]).await
    }

    async fn temporary(&self, deployment: &str) -> Result<Vec<VolumeInfo>, PortError> {
        self.describe(vec![
            filter(&format!("tag:{}", tags::TEMPORARY), "true"),
            filter(&format!("tag:{}", tags::DEPLOYMENT), deployment),
        ])
        .await
    }

    async fn device_names(&self, instance: &str) -> Result<Vec<String>, PortError> {
        let out = self
            .client
            .describe_instances()
            .instance_ids(instance)
            .send()
            .await
            .map_err(|e| port_error("ec2:DescribeInstances", e))?;
        let names = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .flat_map(|i| i.block_device_mappings())
            .filter_map(|m| m.device_name().map(String::from))
            .collect();
        Ok(names)
    }

    async fn attach(&self, volume: &str, instance: &str, device: &str) -> Result<(), PortError> {
        self.client
            .attach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .device(device)
            .send()
            .await
            .map_err(|e| port_error("ec2:AttachVolume", e))?;
        Ok(())
    }

    async fn detach(&self, volume: &str, instance: &str) -> Result<(), PortError> {
        self.client
            .detach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .send()
            .await
            .map_err(|e| port_error("ec2:DetachVolume", e))?;
        Ok(())
    }

    async fn delete(&self, volume: &str) -> Result<(), PortError> {
        self.client.delete_volume().volume_id(volume).send().await.map_err(|e| port_error("ec2:DeleteVolume", e))?;
        Ok(())
    }
}

/// This instance, from IMDSv2.
pub struct Imds {
    client: aws_config::imds::Client,
}

impl Default for Imds {
    fn default() -> Self {
        Imds { client: aws_config::imds::Client::builder().build() }
    }
}

impl Imds {
    /// The SDK's IMDS client (IMDSv2 tokens; `AWS_EC2_METADATA_SERVICE_ENDPOINT` honoured).
    pub fn new() -> Self {
        Self::default()
    }

    async fn get(&self, path: &str) -> Result<String, PortError> {
        let value = self.client.get(path).await.map_err(|e| {
            PortError::new(
                ErrorKind::Transient,
                None,
                format!(
                    "instance metadata {path}: {} (file-level exports through a volume run on EC2 only)",
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ),
            )
        })?;
        Ok(value.as_ref().to_string())
    }
}

#[async_trait]
impl ThisInstance for Imds {
    async fn identity(&self) -> Result<(String, String), PortError> {
        let id = self.get("/latest/meta-data/instance-id").await?;
        let zone = self.get("/latest/meta-data/placement/availability-zone").await?;
        Ok((id, zone))
    }
}
