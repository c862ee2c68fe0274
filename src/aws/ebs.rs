//! EBS direct APIs (ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock, StartSnapshot,
//! PutSnapshotBlock, CompleteSnapshot), plus the EC2 calls that describe and delete snapshots.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAlgorithm, Tag};
use bunker_actors::ports::{BlockPage, ErrorKind, FetchedBlock, PortError, SnapshotBlocks, SnapshotMeta};
use bunker_protocol::tags::Tags;

use super::{client, port_error, tag_map, CallHealth};

/// The direct APIs of one region.
pub struct EbsBlocks {
    ebs: aws_sdk_ebs::Client,
    ec2: aws_sdk_ec2::Client,
}

impl EbsBlocks {
    /// Clients for the region of `conf`.
    pub fn new(conf: &SdkConfig, calls: &CallHealth) -> Self {
        EbsBlocks { ebs: client!(aws_sdk_ebs, conf, calls), ec2: client!(aws_sdk_ec2, conf, calls) }
    }
}

fn index(i: u64) -> Result<i32, PortError> {
    i32::try_from(i).map_err(|_| PortError::new(ErrorKind::Invalid, None, format!("block index {i} out of range")))
}

fn page(blocks: Vec<(u64, String)>, volume_gib: Option<i64>, block_size: Option<i32>, next: Option<&str>) -> BlockPage {
    BlockPage {
        blocks,
        volume_size: volume_gib.unwrap_or(0).max(0) as u64 * (1 << 30),
        block_size: block_size.unwrap_or(0).max(0) as u64,
        next: next.filter(|t| !t.is_empty()).map(String::from),
    }
}

#[async_trait]
impl SnapshotBlocks for EbsBlocks {
    async fn describe(&self, snapshot_id: &str) -> Result<SnapshotMeta, PortError> {
        let out = self
            .ec2
            .describe_snapshots()
            .snapshot_ids(snapshot_id)
            .send()
            .await
            .map_err(|e| port_error("ec2:DescribeSnapshots", e))?;
        let s = out.snapshots().first().ok_or_else(|| {
            PortError::new(ErrorKind::NotFound, Some("InvalidSnapshot.NotFound"), format!("no snapshot {snapshot_id}"))
        })?;
        Ok(SnapshotMeta {
            id: snapshot_id.to_string(),
            volume_id: s.volume_id().map(String::from),
            owner: s.owner_id().map(String::from),
            volume_size: s.volume_size().unwrap_or(0).max(0) as u64 * (1 << 30),
            completed: s.state().map(|st| st.as_str()) == Some("completed"),
            tags: tag_map(s.tags().iter().map(|t| (t.key(), t.value()))),
        })
    }

    async fn list_blocks(&self, snapshot_id: &str, next: Option<String>) -> Result<BlockPage, PortError> {
        let out = self
            .ebs
            .list_snapshot_blocks()
            .snapshot_id(snapshot_id)
            .max_results(10_000)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| port_error("ebs:ListSnapshotBlocks", e))?;
        let blocks =
            out.blocks().iter().filter_map(|b| Some((b.block_index()? as u64, b.block_token()?.to_string()))).collect();
        Ok(page(blocks, out.volume_size(), out.block_size(), out.next_token()))
    }

    async fn list_changed(&self, base: &str, snapshot: &str, next: Option<String>) -> Result<BlockPage, PortError> {
        let out = self
            .ebs
            .list_changed_blocks()
            .first_snapshot_id(base)
            .second_snapshot_id(snapshot)
            .max_results(10_000)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| port_error("ebs:ListChangedBlocks", e))?;
        let blocks = out
            .changed_blocks()
            .iter()
            .filter_map(|b| Some((b.block_index()? as u64, b.second_block_token().unwrap_or_default().to_string())))
            .collect();
        Ok(page(blocks, out.volume_size(), out.block_size(), out.next_token()))
    }

    async fn get_block(&self, snapshot_id: &str, i: u64, token: &str) -> Result<FetchedBlock, PortError> {
        let out = self
            .ebs
            .get_snapshot_block()
            .snapshot_id(snapshot_id)
            .block_index(index(i)?)
            .block_token(token)
            .send()
            .await
            .map_err(|e| port_error("ebs:GetSnapshotBlock", e))?;
        let checksum = out.checksum;
        let data = out
            .block_data
            .collect()
            .await
            .map_err(|e| PortError::new(ErrorKind::Transient, None, format!("ebs:GetSnapshotBlock body: {e}")))?
            .into_bytes()
            .to_vec();
        Ok(FetchedBlock { data, checksum })
    }

    async fn start_snapshot(&self, size_gib: u64, description: &str, tags: &Tags) -> Result<String, PortError> {
        let tags = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let out = self
            .ebs
            .start_snapshot()
            .volume_size(size_gib as i64)
            .description(description)
            .set_tags(Some(tags))
            .timeout(60)
            .send()
            .await
            .map_err(|e| port_error("ebs:StartSnapshot", e))?;
        out.snapshot_id()
            .map(String::from)
            .ok_or_else(|| PortError::new(ErrorKind::Internal, None, "ebs:StartSnapshot returned no snapshot id"))
    }

    async fn put_block(&self, snapshot_id: &str, i: u64, data: Vec<u8>, checksum: &str) -> Result<(), PortError> {
        let len = data.len() as i32;
        self.ebs
            .put_snapshot_block()
            .snapshot_id(snapshot_id)
            .block_index(index(i)?)
            .data_length(len)
            .block_data(ByteStream::from(data))
            .checksum(checksum)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .send()
            .await
            .map_err(|e| port_error("ebs:PutSnapshotBlock", e))?;
        Ok(())
    }

    async fn complete_snapshot(&self, snapshot_id: &str, changed: u64) -> Result<(), PortError> {
        self.ebs
            .complete_snapshot()
            .snapshot_id(snapshot_id)
            .changed_blocks_count(changed.min(i32::MAX as u64) as i32)
            .send()
            .await
            .map_err(|e| port_error("ebs:CompleteSnapshot", e))?;
        Ok(())
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), PortError> {
        self.ec2
            .delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map_err(|e| port_error("ec2:DeleteSnapshot", e))?;
        Ok(())
    }
}
