//! Random access to an EBS snapshot through the EBS direct APIs, for readers that walk a
//! filesystem in place (no volume, no mount): the snapshot's block map is listed once, a
//! block is fetched (checksum-verified, under the reader's limiter) only when a read touches
//! it and it is allocated, and recently read blocks stay in a bounded cache. Reads that move
//! forward block by block fetch the next allocated blocks ahead, in parallel.
//!
//! The reads are synchronous, for filesystem crates that read through a `read(offset, buf)`
//! trait: call them on a dedicated thread, never on a runtime worker (they wait on the
//! runtime through its handle).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ebs_reader::EbsReader;
use super::StreamError;

/// The allocated blocks of one snapshot: index → block token.
pub type BlockMap = BTreeMap<u64, String>;

/// A synchronous, cached reader of one snapshot.
pub struct SnapshotDevice {
    reader: Arc<EbsReader>,
    blocks: Arc<BlockMap>,
    runtime: tokio::runtime::Handle,
    cache: HashMap<u64, (u64, Arc<Vec<u8>>)>,
    capacity: usize,
    readahead: usize,
    tick: u64,
    last: Option<u64>,
    readahead_end: u64,
    fetched: Arc<AtomicU64>,
}

impl SnapshotDevice {
    /// A device over `reader`'s snapshot with its `blocks`, caching up to `capacity` blocks
    /// and fetching up to `readahead` blocks at once on forward reads. Call it on the runtime
    /// whose handle the reads will use.
    pub fn new(reader: Arc<EbsReader>, blocks: Arc<BlockMap>, capacity: usize, readahead: usize) -> SnapshotDevice {
        SnapshotDevice {
            reader,
            blocks,
            runtime: tokio::runtime::Handle::current(),
            cache: HashMap::new(),
            capacity: capacity.max(readahead.max(1) + 1),
            readahead: readahead.max(1),
            tick: 0,
            last: None,
            readahead_end: u64::MAX,
            fetched: Arc::default(),
        }
    }

    /// The volume's size in bytes.
    pub fn size(&self) -> u64 {
        self.reader.volume_size()
    }

    /// Reads ahead no further than volume offset `end` (the end of the partition read).
    pub fn reading_ahead_until(mut self, end: u64) -> SnapshotDevice {
        self.readahead_end = end;
        self
    }

    /// Counts the blocks this device fetches in `counter` (shared between devices).
    pub fn counting(mut self, counter: Arc<AtomicU64>) -> SnapshotDevice {
        self.fetched = counter;
        self
    }

    /// Blocks fetched from the snapshot so far (by every device sharing the counter).
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// Fills `buf` from volume offset `offset`; unallocated blocks read as zeros.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StreamError> {
        let end = offset.checked_add(buf.len() as u64).filter(|e| *e <= self.size()).ok_or_else(|| {
            StreamError::Source(format!(
                "read of {} bytes at {offset} is past the end of the {}-byte volume",
                buf.len(),
                self.size()
            ))
        })?;
        let bs = self.reader.block_size();
        let mut at = offset;
        while at < end {
            let index = at / bs;
            let within = (at - index * bs) as usize;
            let n = ((bs - within as u64).min(end - at)) as usize;
            let out = &mut buf[(at - offset) as usize..][..n];
            match self.block(index)? {
                Some(data) => out.copy_from_slice(&data[within..within + n]),
                None => out.fill(0),
            }
            at += n as u64;
        }
        Ok(())
    }

    /// Block `index` (None when unallocated), from the cache or fetched with read-ahead.
    fn block(&mut self, index: u64) -> Result<Option<Arc<Vec<u8>>>, StreamError> {
        self.tick += 1;
        let forward = self.last.is_some_and(|l| index == l + 1);
        self.last = Some(index);
        if let Some((used, data)) = self.cache.get_mut(&index) {
            *used = self.tick;
            return Ok(Some(data.clone()));
        }
        if !self.blocks.contains_key(&index) {
            return Ok(None);
        }
        let want = if forward { self.readahead } else { 1 };
        let end = self.readahead_end.div_ceil(self.reader.block_size()).max(index + 1);
        let batch: Vec<(u64, String)> = self
            .blocks
            .range(index..end)
            .filter(|(i, _)| !self.cache.contains_key(i))
            .take(want)
            .map(|(i, t)| (*i, t.clone()))
            .collect();
        let reader = self.reader.clone();
        let fetched = self
            .runtime
            .block_on(futures::future::try_join_all(batch.iter().map(|(i, token)| reader.verified_block(*i, token))))?;
        self.fetched.fetch_add(batch.len() as u64, Ordering::Relaxed);
        for ((i, _), data) in batch.into_iter().zip(fetched) {
            self.insert(i, Arc::new(data));
        }
        Ok(self.cache.get(&index).map(|(_, d)| d.clone()))
    }

    fn insert(&mut self, index: u64, data: Arc<Vec<u8>>) {
        while self.cache.len() >= self.capacity {
            let oldest = self.cache.iter().min_by_key(|(_, (used, _))| *used).map(|(i, _)| *i);
            match oldest {
                Some(i) => self.cache.remove(&i),
                None => break,
            };
        }
        self.cache.insert(index, (self.tick, data));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::SnapshotDevice;
    use crate::ports::{BlockPage, FetchedBlock, PortError, SnapshotBlocks, SnapshotMeta};
    use crate::stream::ebs_reader::EbsReader;
    use crate::stream::{base64, sha256, Progress};
    use bunker_protocol::tags::Tags;

    const BS: u64 = 16;

    /// Blocks of 16 bytes in memory; counts reads.
    struct Blocks {
        data: BTreeMap<u64, Vec<u8>>,
        gets: AtomicU64,
    }

    #[async_trait]
    impl SnapshotBlocks for Blocks {
        async fn describe(&self, _: &str) -> Result<SnapshotMeta, PortError> {
            unreachable!("the device never describes")
        }
        async fn list_blocks(&self, _: &str, next: Option<String>) -> Result<BlockPage, PortError> {
            // Two pages: the device must follow the token.
            let from: u64 = next.map_or(0, |n| n.parse().unwrap());
            let page: Vec<_> =
                self.data.keys().filter(|i| **i >= from).take(3).map(|i| (*i, format!("t{i}"))).collect();
            let next = self.data.keys().find(|i| page.last().is_some_and(|l| **i > l.0)).map(|i| i.to_string());
            Ok(BlockPage { blocks: page, volume_size: 64 * BS, block_size: BS, next })
        }
        async fn list_changed(&self, _: &str, _: &str, _: Option<String>) -> Result<BlockPage, PortError> {
            unreachable!()
        }
        async fn get_block(&self, _: &str, index: u64, token: &str) -> Result<FetchedBlock, PortError> {
            assert_eq!(token, format!("t{index}"), "the block's own token");
            self.gets.fetch_add(1, Ordering::Relaxed);
            let data = self.data[&index].clone();
            Ok(FetchedBlock { checksum: Some(base64(&sha256(&data))), data })
        }
        async fn start_snapshot(&self, _: u64, _: &str, _: &Tags) -> Result<String, PortError> {
            unreachable!()
        }
        async fn put_block(&self, _: &str, _: u64, _: Vec<u8>, _: &str) -> Result<(), PortError> {
            unreachable!()
        }
        async fn complete_snapshot(&self, _: &str, _: u64) -> Result<(), PortError> {
            unreachable!()
        }
        async fn delete_snapshot(&self, _: &str) -> Result<(), PortError> {
            unreachable!()
        }
    }

    /// Allocated blocks 2–9 and 20, each filled with its index; the rest unallocated.
    fn device(cache: usize, readahead: usize) -> (tokio::runtime::Runtime, Arc<Blocks>, SnapshotDevice) {
        let data = (2..10).chain([20]).map(|i| (i, vec![i as u8; BS as usize])).collect();
        let port = Arc::new(Blocks { data, gets: AtomicU64::new(0) });
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let reader = Arc::new(EbsReader::new(
            port.clone(),
            "snap-1".into(),
            None,
            64 * BS,
            BS,
            4 * BS,
            4,
            1,
            Arc::new(Progress::default()),
        ));
        let map = rt.block_on(reader.block_map()).unwrap();
        assert_eq!(map.len(), 9, "every page listed");
        let dev = {
            let _in = rt.enter();
            SnapshotDevice::new(reader, Arc::new(map), cache, readahead)
        };
        (rt, port, dev)
    }

    #[test]
    fn reads_span_blocks_unallocated_ones_are_zeros_and_never_fetched() {
        let (_rt, port, mut dev) = device(4, 1);
        let mut buf = vec![0xFFu8; 40];
        dev.read_at(BS + 8, &mut buf).unwrap();
        let want: Vec<u8> = [vec![0u8; 8], vec![2u8; 16], vec![3u8; 16]].concat();
        assert_eq!(buf, want);
        assert_eq!(port.gets.load(Ordering::Relaxed), 2, "blocks 2 and 3; block 1 is a hole");
        dev.read_at(2 * BS + 1, &mut buf[..4]).unwrap();
        assert_eq!(port.gets.load(Ordering::Relaxed), 2, "cached");
        let err = dev.read_at(63 * BS, &mut buf).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }

    #[test]
    fn forward_reads_fetch_ahead_within_the_bound_and_the_cache_stays_bounded() {
        let (_rt, port, dev) = device(4, 3);
        let mut dev = dev.reading_ahead_until(6 * BS);
        let mut b = [0u8; 1];
        dev.read_at(2 * BS, &mut b).unwrap();
        assert_eq!(port.gets.load(Ordering::Relaxed), 1, "a first read fetches its block only");
        dev.read_at(3 * BS, &mut b).unwrap();
        assert_eq!(port.gets.load(Ordering::Relaxed), 4, "3, 4, 5 at once; 6 is past the bound");
        for i in 4..6 {
            dev.read_at(i * BS, &mut b).unwrap();
            assert_eq!(b[0], i as u8);
        }
        assert_eq!(port.gets.load(Ordering::Relaxed), 4, "read ahead");
        assert!(dev.cache.len() <= 4, "{} cached", dev.cache.len());
        dev.read_at(20 * BS, &mut b).unwrap();
        assert_eq!((b[0], dev.fetched()), (20, 5));
    }
}
