//! Reads an EBS snapshot with the EBS direct APIs: ListSnapshotBlocks (or ListChangedBlocks
//! for an incremental export) pages are planned into chunks; each chunk's allocated blocks are
//! fetched with GetSnapshotBlock, several chunks ahead, under the adaptive [`Limiter`].
//! Unallocated blocks are never fetched. Every block's SHA-256 is checked against the checksum
//! AWS sends with it; a mismatch is refetched, never archived.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::warn;

use super::limiter::Limiter;
use super::{base64, sha256, Progress, SourceItem, StreamError};
use crate::ports::SnapshotBlocks;

/// Attempts at reading one block whose checksum does not match.
const CHECKSUM_ATTEMPTS: u32 = 6;

/// The reader of one snapshot.
pub struct EbsReader {
    port: Arc<dyn SnapshotBlocks>,
    snapshot: String,
    base: Option<String>,
    volume_size: u64,
    block_size: u64,
    chunk_size: u64,
    limiter: Arc<Limiter>,
    progress: Arc<Progress>,
    prefetch: usize,
}

enum Plan {
    Run { base: bool, offset: u64, length: u64 },
    Chunk { offset: u64, length: u64, blocks: Vec<(u64, String)> },
}

/// A list of blocks read page by page.
struct Cursor {
    changed: bool,
    next: Option<String>,
    buf: VecDeque<(u64, String)>,
    done: bool,
}

impl EbsReader {
    /// A reader of `snapshot` (of `volume_size` bytes), exporting only what changed since
    /// `base` when given. `prefetch` chunks are fetched ahead; `max_requests` block reads run
    /// at once at most.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        port: Arc<dyn SnapshotBlocks>,
        snapshot: String,
        base: Option<String>,
        volume_size: u64,
        block_size: u64,
        chunk_size: u64,
        max_requests: usize,
        prefetch: usize,
        progress: Arc<Progress>,
    ) -> EbsReader {
        EbsReader {
            port,
            snapshot,
            base,
            volume_size,
            block_size,
            chunk_size,
            limiter: Arc::new(Limiter::new(max_requests)),
            progress,
            prefetch: prefetch.max(1),
        }
    }

    /// Starts reading at image `start` (chunk-aligned); items arrive on the returned channel.
    pub fn open(self: Arc<Self>, start: u64, capacity: usize) -> mpsc::Receiver<Result<SourceItem, StreamError>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(async move {
            let (plan_tx, plan_rx) = mpsc::channel::<Plan>(self.prefetch);
            let planner = {
                let me = self.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.plan(start, plan_tx).await {
                        let _closed = tx.send(Err(e)).await;
                    }
                })
            };
            let plans = futures::stream::unfold(plan_rx, |mut rx| async { rx.recv().await.map(|p| (p, rx)) });
            let mut items = std::pin::pin!(plans.map(|p| self.fetch(p)).buffered(self.prefetch));
            while let Some(item) = items.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    planner.abort();
                    return;
                }
            }
            if let Err(e) = planner.await {
                let _closed = tx.send(Err(StreamError::Internal(format!("block planner failed: {e}")))).await;
            }
        });
        rx
    }

    async fn plan(&self, start: u64, out: mpsc::Sender<Plan>) -> Result<(), StreamError> {
        let bpc = self.chunk_size / self.block_size;
        let first_block = start / self.block_size;
        let mut all = Cursor::new(false);
        let mut changed = self.base.as_ref().map(|_| Cursor::new(true));
        let mut at = start;
        let send = |p: Plan| async { out.send(p).await.map_err(|_| StreamError::Internal("fetcher stopped".into())) };
        loop {
            // The next chunk to export: the next allocated block's (full), or the next changed
            // block's (incremental).
            let lead = match changed.as_mut() {
                Some(c) => c.skip_below(self, first_block).await?,
                None => all.skip_below(self, first_block).await?,
            };
            let Some(lead) = lead else { break };
            let chunk = lead / bpc;
            let offset = chunk * self.chunk_size;
            let length = self.chunk_size.min(self.volume_size - offset);
            if offset > at {
                send(Plan::Run { base: changed.is_some(), offset: at, length: offset - at }).await?;
            }
            if let Some(c) = changed.as_mut() {
                while c.peek(self).await?.is_some_and(|b| b / bpc == chunk) {
                    c.pop();
                }
                all.skip_below(self, chunk * bpc).await?;
            }
            let mut blocks = Vec::new();
            while all.peek(self).await?.is_some_and(|b| b / bpc == chunk) {
                blocks.push(all.pop().expect("peeked"));
            }
            if blocks.is_empty() {
                send(Plan::Run { base: false, offset, length }).await?;
            } else {
                send(Plan::Chunk { offset, length, blocks }).await?;
            }
            at = offset + length;
        }
        if at < self.volume_size {
            send(Plan::Run { base: changed.is_some(), offset: at, length: self.volume_size - at }).await?;
        }
        Ok(())
    }

    async fn fetch(&self, plan: Plan) -> Result<SourceItem, StreamError> {
        match plan {
            Plan::Run { base: true, offset, length } => Ok(SourceItem::Base { offset, length }),
            Plan::Run { base: false, offset, length } => Ok(SourceItem::Zero { offset, length }),
            Plan::Chunk { offset, length, blocks } => {
                let reads = blocks.iter().map(|(index, token)| self.verified_block(*index, token));
                let fetched = futures::future::try_join_all(reads).await?;
                let mut bytes = vec![0u8; length as usize];
                for ((index, _), data) in blocks.iter().zip(fetched) {
                    let at = (index * self.block_size - offset) as usize;
                    let n = data.len().min(bytes.len() - at);
                    bytes[at..at + n].copy_from_slice(&data[..n]);
                }
                Ok(SourceItem::Data { offset, bytes })
            }
        }
    }

    /// The volume's size in bytes.
    pub fn volume_size(&self) -> u64 {
        self.volume_size
    }

    /// The snapshot's block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Every allocated block of the snapshot with its token (ListSnapshotBlocks, all pages).
    pub async fn block_map(&self) -> Result<super::snapshot_device::BlockMap, StreamError> {
        let mut all = Cursor::new(false);
        let mut map = super::snapshot_device::BlockMap::new();
        while all.peek(self).await?.is_some() {
            let (index, token) = all.pop().expect("peeked");
            map.insert(index, token);
        }
        Ok(map)
    }

    /// One block, checksum-verified, retried on throttling and transient failures.
    pub async fn verified_block(&self, index: u64, token: &str) -> Result<Vec<u8>, StreamError> {
        for attempt in 1..=CHECKSUM_ATTEMPTS {
            let b = self
                .limiter
                .call(Some(&self.progress.throttled), || self.port.get_block(&self.snapshot, index, token))
                .await
                .map_err(|e| StreamError::port(format!("reading block {index} of {}", self.snapshot), e))?;
            let size = self.block_size as usize;
            let (data, ok) = tokio::task::spawn_blocking(move || {
                let ok = b.data.len() == size && b.checksum.as_deref() == Some(base64(&sha256(&b.data)).as_str());
                (b.data, ok)
            })
            .await
            .map_err(|e| StreamError::Internal(e.to_string()))?;
            if ok {
                return Ok(data);
            }
            Progress::add(&self.progress.refetched, 1);
            warn!(snapshot_id = %self.snapshot, block = index, attempt, "block checksum mismatch; refetching");
        }
        Err(StreamError::Source(format!(
            "block {index} of {} failed its checksum {CHECKSUM_ATTEMPTS} times; nothing was archived from it",
            self.snapshot
        )))
    }
}

impl Cursor {
    fn new(changed: bool) -> Cursor {
        Cursor { changed, next: None, buf: VecDeque::new(), done: false }
    }

    async fn fill(&mut self, r: &EbsReader) -> Result<(), StreamError> {
        while self.buf.is_empty() && !self.done {
            let next = self.next.clone();
            let page = r
                .limiter
                .call(Some(&r.progress.throttled), || async {
                    match (self.changed, r.base.as_deref()) {
                        (true, Some(base)) => r.port.list_changed(base, &r.snapshot, next.clone()).await,
                        _ => r.port.list_blocks(&r.snapshot, next.clone()).await,
                    }
                })
                .await
                .map_err(|e| StreamError::port(format!("listing the blocks of {}", r.snapshot), e))?;
            self.buf.extend(page.blocks);
            self.done = page.next.is_none();
            self.next = page.next;
        }
        Ok(())
    }

    async fn peek(&mut self, r: &EbsReader) -> Result<Option<u64>, StreamError> {
        self.fill(r).await?;
        Ok(self.buf.front().map(|b| b.0))
    }

    fn pop(&mut self) -> Option<(u64, String)> {
        self.buf.pop_front()
    }

    /// Drops blocks below `index`; returns the next one.
    async fn skip_below(&mut self, r: &EbsReader, index: u64) -> Result<Option<u64>, StreamError> {
        while let Some(b) = self.peek(r).await? {
            if b >= index {
                return Ok(Some(b));
            }
            self.pop();
        }
        Ok(None)
    }
}
