//! Random access to an EBS snapshot through the EBS direct APIs, for readers that walk a
//! filesystem in place (no volume, no mount): the snapshot's block map is listed once, a
//! block is fetched (checksum-verified, under the reader's limiter) only when a read touches
//! it and it is allocated, and recently read blocks stay in a bounded cache in memory and,
//! when given a temporary file ([`SnapshotDevice::spilling_to`]), a larger one on disk, so a
//! block is fetched once however often the reader comes back to it. Reads that move forward
//! block by block fetch the next allocated blocks ahead, in parallel; when the file can hold
//! every allocated block of the region read, any miss fetches the next [`SPILL_BATCH`]
//! allocated blocks at once into it, so the region is fetched in parallel, in disk order,
//! whatever order the filesystem reader goes in.
//!
//! The reads are synchronous, for filesystem crates that read through a `read(offset, buf)`
//! trait: call them on a dedicated thread, never on a runtime worker (they wait on the
//! runtime through its handle).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ebs_reader::EbsReader;
use super::spill::Spill;
use super::StreamError;

/// Allocated blocks fetched at once into the spill file on a miss (16 MiB of 512 KiB blocks),
/// when it can hold the whole region read.
pub const SPILL_BATCH: usize = 32;

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
    /// The region read (volume offsets), once one is given: until then no batches (a
    /// partition-table probe reads a few scattered blocks).
    region: Option<(u64, u64)>,
    fetched: Arc<AtomicU64>,
    spill: Option<Spill>,
    /// Whether the spill file holds the region's every allocated block (decided at the
    /// first fetch).
    whole_region: Option<bool>,
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
            region: None,
            fetched: Arc::default(),
            spill: None,
            whole_region: None,
        }
    }

    /// Also keeps up to `blocks` fetched blocks in `file`, an empty, unnamed temporary file
    /// (0600, e.g. `tempfile::tempfile_in`) that goes with the device.
    pub fn spilling_to(mut self, file: std::fs::File, blocks: u64) -> SnapshotDevice {
        self.spill = Some(Spill::new(file, self.reader.block_size(), blocks));
        self
    }

    /// The volume's size in bytes.
    pub fn size(&self) -> u64 {
        self.reader.volume_size()
    }

    /// Reads only within volume offsets `start..end` (the partition read): read-ahead stops
    /// at `end`, and only the region's allocated blocks count when the spill file's room is
    /// weighed.
    pub fn reading_within(mut self, start: u64, end: u64) -> SnapshotDevice {
        self.region = Some((start, end));
        self.whole_region = None;
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
            self.fill(index, within, out)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Fills `out` from byte `within` of block `index`: from memory, from the spill file
    /// (only the bytes asked for), as zeros when unallocated, or fetched with read-ahead.
    fn fill(&mut self, index: u64, within: usize, out: &mut [u8]) -> Result<(), StreamError> {
        self.tick += 1;
        let forward = self.last.is_some_and(|l| index == l + 1);
        self.last = Some(index);
        if let Some((used, data)) = self.cache.get_mut(&index) {
            *used = self.tick;
            out.copy_from_slice(&data[within..within + out.len()]);
            return Ok(());
        }
        if !self.blocks.contains_key(&index) {
            out.fill(0);
            return Ok(());
        }
        if self.read_spilled(index, within, out) {
            return Ok(());
        }
        let data = self.fetch(index, forward)?;
        out.copy_from_slice(&data[within..within + out.len()]);
        Ok(())
    }

    /// Fetches allocated block `index`, and the next ones not held: [`SPILL_BATCH`] into the
    /// spill file when it holds the whole region, else the read-ahead when reads move forward.
    fn fetch(&mut self, index: u64, forward: bool) -> Result<Arc<Vec<u8>>, StreamError> {
        let batching = self.batching();
        let want = match (batching, forward) {
            (true, _) => SPILL_BATCH,
            (false, true) => self.readahead,
            (false, false) => 1,
        };
        let end = self.region.map_or(u64::MAX, |r| r.1.div_ceil(self.reader.block_size())).max(index + 1);
        let batch: Vec<(u64, String)> = self
            .blocks
            .range(index..end)
            .filter(|(i, _)| !self.cache.contains_key(i) && !self.spill.as_ref().is_some_and(|s| s.contains(**i)))
            .take(want)
            .map(|(i, t)| (*i, t.clone()))
            .collect();
        let reader = self.reader.clone();
        let fetched = self
            .runtime
            .block_on(futures::future::try_join_all(batch.iter().map(|(i, token)| reader.verified_block(*i, token))))?;
        self.fetched.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut wanted = None;
        for ((i, _), data) in batch.into_iter().zip(fetched) {
            self.spill_block(i, &data);
            let data = Arc::new(data);
            if i == index {
                wanted = Some(data.clone());
                self.insert(i, data);
            } else if !batching {
                // A batch goes to the spill file only: memory keeps the reader's hot blocks.
                self.insert(i, data);
            }
        }
        wanted.ok_or_else(|| StreamError::Internal(format!("block {index} was not fetched")))
    }

    /// Whether the spill file (still working) holds every allocated block of the region.
    fn batching(&mut self) -> bool {
        let (Some(spill), Some(region)) = (&self.spill, self.region) else { return false };
        let bs = self.reader.block_size();
        let (first, end) = (region.0 / bs, region.1.div_ceil(bs));
        let blocks = &self.blocks;
        *self.whole_region.get_or_insert_with(|| blocks.range(first..end).count() as u64 <= spill.capacity())
    }

    /// Fills `out` from byte `within` of block `index` in the spill file; false when it is
    /// not there (a failing spill is turned off).
    fn read_spilled(&mut self, index: u64, within: usize, out: &mut [u8]) -> bool {
        let Some(spill) = self.spill.as_mut() else { return false };
        match spill.read(index, within as u64, out) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "block spill file unreadable; reading from the snapshot only");
                self.spill = None;
                false
            }
        }
    }

    /// Keeps a fetched block in the spill file (a failing spill, e.g. a full disk, is turned off).
    fn spill_block(&mut self, index: u64, data: &[u8]) {
        if let Some(Err(e)) = self.spill.as_mut().map(|s| s.put(index, data)) {
            tracing::warn!(error = %e, "block spill file unwritable; reading from the snapshot only");
            self.spill = None;
        }
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
        let mut dev = dev.reading_within(0, 6 * BS);
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

    /// Reads blocks 2–9, then again: `gets` fetches in all, and the bytes read back.
    fn read_twice(dev: &mut SnapshotDevice) -> Vec<u8> {
        let mut seen = Vec::new();
        for _ in 0..2 {
            for i in (2..10).rev() {
                let mut b = [0u8; 1];
                dev.read_at(i * BS + 3, &mut b).unwrap();
                seen.push(b[0]);
            }
        }
        seen
    }

    #[test]
    fn blocks_evicted_from_memory_come_back_from_the_spill_file_not_from_the_snapshot() {
        let want: Vec<u8> = (2..10).rev().chain((2..10).rev()).map(|i| i as u8).collect();
        let (_rt, port, mut memory_only) = device(2, 1);
        assert_eq!(read_twice(&mut memory_only), want);
        assert_eq!(port.gets.load(Ordering::Relaxed), 16, "a 2-block cache fetches every block twice");
        let (_rt, port, dev) = device(2, 1);
        let file = tempfile::tempfile().unwrap();
        let mut dev = dev.spilling_to(file.try_clone().unwrap(), 64).reading_within(0, 10 * BS);
        assert_eq!(read_twice(&mut dev), want);
        assert_eq!(port.gets.load(Ordering::Relaxed), 8, "each block fetched once");
        assert_eq!(file.metadata().unwrap().len(), 8 * BS, "the spill holds the eight blocks");
        let (_rt, port, dev) = device(2, 1);
        let mut dev = dev.spilling_to(tempfile::tempfile().unwrap(), 3).reading_within(0, 10 * BS);
        assert_eq!(read_twice(&mut dev), want);
        assert!(port.gets.load(Ordering::Relaxed) > 8, "a spill of 3 blocks is bounded");
    }

    #[test]
    fn a_spill_holding_the_whole_region_is_filled_in_batches_in_disk_order() {
        let (_rt, port, dev) = device(2, 1);
        let mut dev = dev.spilling_to(tempfile::tempfile().unwrap(), 64).reading_within(0, 10 * BS);
        let mut b = [0u8; 1];
        dev.read_at(5 * BS, &mut b).unwrap();
        assert_eq!((b[0], port.gets.load(Ordering::Relaxed)), (5, 5), "5 to 9 at once; 20 is past the region");
        dev.read_at(2 * BS, &mut b).unwrap();
        assert_eq!((b[0], port.gets.load(Ordering::Relaxed)), (2, 8), "2, 3 and 4; the rest is held");
        assert_eq!(read_twice(&mut dev).len(), 16);
        assert_eq!(port.gets.load(Ordering::Relaxed), 8, "every block of the region fetched once");
        assert!(dev.cache.len() <= 2, "memory keeps its bound: {}", dev.cache.len());

        // No region given yet (a partition-table probe): single blocks, then batches once
        // the region is given.
        let (_rt, port, dev) = device(2, 1);
        let mut dev = dev.spilling_to(tempfile::tempfile().unwrap(), 64);
        dev.read_at(5 * BS, &mut b).unwrap();
        assert_eq!(port.gets.load(Ordering::Relaxed), 1);
        let mut dev = dev.reading_within(0, 10 * BS);
        dev.read_at(2 * BS, &mut b).unwrap();
        assert_eq!(port.gets.load(Ordering::Relaxed), 8, "2, 3, 4 and 6 to 9");

        // A spill too small for the region: no batches, forward read-ahead only.
        let (_rt, port, dev) = device(2, 1);
        let mut dev = dev.spilling_to(tempfile::tempfile().unwrap(), 4).reading_within(0, 10 * BS);
        dev.read_at(5 * BS, &mut b).unwrap();
        assert_eq!(port.gets.load(Ordering::Relaxed), 1);
    }
}
