//! The exporter: source items in, a resumable multipart upload of a seekable zstd archive out,
//! then its manifest.
//!
//! Resume: beside the upload, a journal (`<name>.journal/`) holds a header (what is being
//! exported, the upload id) and, after each part is stored, a record of that part (its frames,
//! checksum and the image hash state at its end). A rerun finds the upload, keeps the longest
//! run of parts that are both stored and journaled, and restarts the reader at the end of the
//! last one. The manifest is written last, after the upload is complete; the journal is
//! deleted after the manifest. A present manifest therefore means a finished export.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bunker_protocol::archive::{
    self, encode_seek_table, part_target, run_pieces, zero_frame, ArchiveObject, Content, Frame, FrameKind, HashAlg,
    Manifest, Source, TreeStats,
};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use super::blake::{self, ImageTree};
use super::hasher::{HashItem, ImageHasher};
use super::{Progress, SourceItem, StreamError, Tuning};
use crate::engine::{Clock, SystemClock};
use crate::ports::{ArchiveStore, ErrorKind, PortError, StoredPart};
use crate::retry::RetryPolicy;

/// An incremental export's base: its manifest and the per-chunk hashes of its full image
/// (resolved through its own base chain).
#[derive(Debug, Clone)]
pub struct BaseExport {
    /// The base's manifest.
    pub manifest: Manifest,
    /// Its key.
    pub manifest_key: String,
    /// The chunk-list entry of every chunk of the base image, in order (format 2: BLAKE3).
    pub chunk_hashes: Vec<[u8; 32]>,
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Key stem in the target: the archive is `<name>.img.zst` (or `.tar.zst`).
    pub name: String,
    /// Image or tar.
    pub content: Content,
    /// Provenance, copied to the manifest.
    pub source: Source,
    /// Image size when known up front (tar streams: `None`).
    pub image_size: Option<u64>,
    /// Source block size.
    pub block_size: u64,
    /// Chunk size (a multiple of the block size).
    pub chunk_size: u64,
    /// zstd level (1–19).
    pub level: i32,
    /// Also hash the whole image with SHA-256 (`image_sha256`, for `sha256sum`), on its own
    /// thread: full exports only; costs a second pass over every byte.
    pub sha256: bool,
    /// For incremental exports.
    pub base: Option<BaseExport>,
    /// Whether a rerun may continue this export's upload (false for tar streams of a live
    /// tree, which need not read the same twice).
    pub resumable: bool,
    /// Filled by a tar reader before it ends.
    pub tree: Option<Arc<Mutex<TreeStats>>>,
    /// Filled by a DynamoDB items reader before it ends.
    pub items: Option<Arc<Mutex<bunker_protocol::archive::ItemStats>>>,
    /// Database dumps: copied to the manifest.
    pub dump: Option<bunker_protocol::dump::DumpInfo>,
    /// Tar streams: filled by the reader with every entry; stored beside the archive as its
    /// catalog (`<name>.catalog.jsonl.zst`) before the manifest, which references it.
    pub catalog: Option<Arc<Mutex<Vec<bunker_protocol::catalog::CatalogEntry>>>>,
}

/// Opens the source reader at a chunk-aligned image offset.
pub type OpenReader = Box<dyn FnOnce(u64) -> mpsc::Receiver<Result<SourceItem, StreamError>> + Send>;

/// What an export did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportSummary {
    /// Archive URL.
    pub archive: String,
    /// Manifest URL.
    pub manifest: String,
    /// Image bytes (holes included).
    pub bytes_in: u64,
    /// Archive bytes written by this run.
    pub bytes_out: u64,
    /// Size of the archive object.
    pub archive_size: u64,
    /// Chunks of the image.
    pub chunks: u64,
    /// Of which hold data.
    pub data_chunks: u64,
    /// Image bytes an earlier run had already uploaded.
    pub resumed_bytes: u64,
    /// Nothing to do: the archive and its manifest already existed.
    pub already_exported: bool,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// BLAKE3 of the image (as `b3sum` prints it), when the archive is a full one.
    pub image_blake3: Option<String>,
    /// SHA-256 of the image, when asked for (`--sha256`) or the archive is format 1.
    pub image_sha256: Option<String>,
    /// Whole-image chunk-list hash (the manifest's `chunks_blake3`, or `chunks_sha256` in
    /// format 1).
    pub chunks_hash: String,
    /// EBS blocks read again after a checksum mismatch.
    pub refetched_blocks: u64,
    /// Block reads AWS throttled (each waited for and retried).
    pub throttled_requests: u64,
}

impl ExportSummary {
    /// What `manifest` (at `archive` / `manifest_url`) describes, with this run's counters.
    fn of(m: &Manifest, archive: String, manifest_url: String, progress: &Progress, already: bool) -> ExportSummary {
        ExportSummary {
            archive,
            manifest: manifest_url,
            bytes_in: m.image_size,
            bytes_out: Progress::get(&progress.bytes_out),
            archive_size: m.archive.size,
            chunks: m.image_size.div_ceil(m.chunk_size),
            data_chunks: m.frames.iter().filter(|f| f.kind == FrameKind::Data).count() as u64,
            resumed_bytes: Progress::get(&progress.resumed),
            already_exported: already,
            seconds: 0.0,
            image_blake3: m.image_blake3.clone(),
            image_sha256: m.image_sha256.clone(),
            chunks_hash: m.chunks_hash().to_string(),
            refetched_blocks: Progress::get(&progress.refetched),
            throttled_requests: Progress::get(&progress.throttled),
        }
    }
}

/// Archive key for a name.
pub fn archive_key(name: &str, content: Content) -> String {
    format!("{name}{}", content.extension())
}

/// Manifest key for a name.
pub fn manifest_key(name: &str) -> String {
    format!("{name}.manifest.json")
}

fn journal_prefix(name: &str) -> String {
    format!("{name}.journal/")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    format_version: u32,
    source_id: String,
    content: Content,
    image_size: Option<u64>,
    chunk_size: u64,
    block_size: u64,
    level: i32,
    #[serde(default)]
    sha256: bool,
    base: Option<String>,
    upload_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartRecord {
    number: u32,
    size: u64,
    crc32c: String,
    etag: String,
    /// Image offset after the part's last frame.
    end_offset: u64,
    /// Archive offset after the part.
    archive_end: u64,
    frames: Vec<Frame>,
    /// With `--sha256`: hex of the serialized image SHA-256 state at `end_offset`.
    hash_state: Option<String>,
    /// The image's BLAKE3 tree at `end_offset` (full exports).
    #[serde(default)]
    tree: Option<ImageTree>,
    /// The part that ends with the seek table.
    last: bool,
    /// On the last part, with `--sha256`: the whole-image SHA-256 (hex).
    #[serde(default)]
    image_sha256: Option<String>,
    /// On the last part: the whole-image BLAKE3 (hex).
    #[serde(default)]
    image_blake3: Option<String>,
}

impl PartRecord {
    /// A part's record before upload (checksum and tag are filled in once it is stored).
    fn new(number: u32, size: u64, end_offset: u64, archive_end: u64, frames: Vec<Frame>) -> PartRecord {
        PartRecord {
            number,
            size,
            crc32c: String::new(),
            etag: String::new(),
            end_offset,
            archive_end,
            frames,
            hash_state: None,
            tree: None,
            last: false,
            image_sha256: None,
            image_blake3: None,
        }
    }
}

/// Where a resumed export starts.
struct ResumePoint {
    upload_id: String,
    records: Vec<PartRecord>,
}

/// Runs exports into one store.
pub struct Exporter {
    store: Arc<dyn ArchiveStore>,
    tuning: Tuning,
    progress: Arc<Progress>,
    clock: Arc<dyn Clock>,
}

/// A frame ready for its part.
struct Ready {
    seq: u64,
    offset: u64,
    length: u64,
    kind: FrameKind,
    /// A data frame's BLAKE3 chaining value (its manifest hash).
    hash: Option<[u8; 32]>,
    /// Full exports: the chaining value of each chunk-size piece, for the image's tree.
    pieces: Vec<[u8; 32]>,
    /// The frame at offset 0, in a full export: its first piece's plain BLAKE3.
    first_plain: Option<[u8; 32]>,
    bytes: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

/// What a compressor thread is given.
enum Input {
    /// Data to hash and compress.
    Data(Arc<Vec<u8>>),
    /// A zero run of this length, whose pieces' chaining values the image's tree needs.
    Zero(u64),
}

struct Job {
    seq: u64,
    offset: u64,
    input: Input,
    permit: OwnedSemaphorePermit,
}

/// Whole-image hashes: BLAKE3 (full exports), SHA-256 (on request).
#[derive(Debug, Clone, Copy, Default)]
struct Digests {
    blake3: Option<[u8; 32]>,
    sha256: Option<[u8; 32]>,
}

/// What [`Exporter::run`] returns: every frame, the stored parts, the image hashes, tar stats.
type Outcome = (Vec<Frame>, Vec<StoredPart>, Digests, Option<TreeStats>);

/// Where a resumed export stands, from its journal's part records.
struct Resumed {
    frames: Vec<Frame>,
    parts: Vec<StoredPart>,
    /// Image offset to read from.
    start: u64,
    /// Archive offset the next part starts at.
    archive_start: u64,
    /// Every part is stored (only completion is missing).
    finished: bool,
    /// With `--sha256`: the image SHA-256's state at `start`.
    hash_state: Option<Vec<u8>>,
    /// The image's BLAKE3 tree at `start`.
    tree: Option<ImageTree>,
}

impl Resumed {
    fn from_records(records: &[PartRecord]) -> Result<Resumed, StreamError> {
        let last = records.last();
        let hash_state = match last.and_then(|r| r.hash_state.as_deref()) {
            Some(h) => Some(unhex(h).ok_or_else(|| StreamError::Corrupt("journal hash state is not hex".into()))?),
            None => None,
        };
        Ok(Resumed {
            frames: records.iter().flat_map(|r| r.frames.iter().cloned()).collect(),
            parts: records
                .iter()
                .map(|r| StoredPart {
                    number: r.number,
                    size: r.size,
                    etag: r.etag.clone(),
                    crc32c: Some(r.crc32c.clone()),
                })
                .collect(),
            start: last.map(|r| r.end_offset).unwrap_or(0),
            archive_start: last.map(|r| r.archive_end).unwrap_or(0),
            finished: last.is_some_and(|r| r.last),
            hash_state,
            tree: last.and_then(|r| r.tree.clone()),
        })
    }

    /// Every part is stored, the seek table too; the last record carries the image hashes.
    fn finished_outcome(self, records: &[PartRecord], req: &ExportRequest, full: bool) -> Result<Outcome, StreamError> {
        let last = records.last();
        let read = |h: Option<&String>, wanted: bool| match h {
            Some(h) => unhex32(h).map(Some).ok_or_else(|| StreamError::Corrupt("journal image hash is not hex".into())),
            None if wanted => Err(StreamError::Corrupt("journal has no image hash; remove the journal".into())),
            None => Ok(None),
        };
        let digests = Digests {
            blake3: read(last.and_then(|r| r.image_blake3.as_ref()), full)?,
            sha256: read(last.and_then(|r| r.image_sha256.as_ref()), full && req.sha256)?,
        };
        Ok((self.frames, self.parts, digests, req.tree.as_ref().map(|t| t.lock().expect("tree stats").clone())))
    }
}

/// The dispatcher stage: reads the source in order, feeds the SHA-256 hasher (`--sha256`),
/// sends data chunks — and, in a full export, zero runs, whose pieces the image's BLAKE3
/// tree needs — to the compressors, and other runs (no work needed) straight to the
/// assembler, each holding a permit so at most `chunks_in_flight` exist at once.
struct Dispatcher<'a> {
    permits: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
    ready: mpsc::Sender<Result<Ready, StreamError>>,
    hasher: Option<&'a ImageHasher>,
    /// A full export: zero runs are hashed into the image's tree.
    tree: bool,
    progress: &'a Progress,
}

impl Dispatcher<'_> {
    /// Dispatches everything from `start`; returns the image offset reached.
    async fn run(
        self,
        mut reader: mpsc::Receiver<Result<SourceItem, StreamError>>,
        start: u64,
        image_size: Option<u64>,
    ) -> Result<u64, StreamError> {
        let (mut seq, mut at) = (0u64, start);
        while let Some(item) = reader.recv().await {
            let item = item?;
            if item.offset() != at || item.is_empty() {
                return Err(StreamError::Internal(format!(
                    "reader sent {} bytes at offset {}, expected offset {at}",
                    item.len(),
                    item.offset()
                )));
            }
            at += item.len();
            Progress::add(&self.progress.bytes_in, item.len());
            match item {
                SourceItem::Data { offset, bytes } => {
                    self.data(seq, offset, bytes).await?;
                    seq += 1;
                }
                SourceItem::Zero { offset, length } => seq = self.run_of(seq, offset, length, FrameKind::Zero).await?,
                SourceItem::Base { offset, length } => seq = self.run_of(seq, offset, length, FrameKind::Base).await?,
            }
        }
        match image_size {
            Some(total) if at != total => Err(StreamError::Source(format!("source ended at byte {at} of {total}"))),
            _ => Ok(at),
        }
    }

    async fn data(&self, seq: u64, offset: u64, bytes: Vec<u8>) -> Result<(), StreamError> {
        let permit = self.permits.clone().acquire_owned().await.expect("never closed");
        let bytes = Arc::new(bytes);
        if let Some(h) = self.hasher {
            h.feed(HashItem::Data(bytes.clone())).await?;
        }
        let job = Job { seq, offset, input: Input::Data(bytes), permit };
        self.jobs.send(job).await.map_err(|_| StreamError::Internal("compressors stopped".into()))
    }

    /// A zero or base run as frames of at most a chunk each; returns the next sequence number.
    async fn run_of(&self, mut seq: u64, offset: u64, length: u64, kind: FrameKind) -> Result<u64, StreamError> {
        for (o, l) in run_pieces(offset, length) {
            let permit = self.permits.clone().acquire_owned().await.expect("never closed");
            if let (Some(h), FrameKind::Zero) = (self.hasher, kind) {
                h.feed(HashItem::Zero(l)).await?;
            }
            if self.tree && kind == FrameKind::Zero {
                let job = Job { seq, offset: o, input: Input::Zero(l), permit };
                self.jobs.send(job).await.map_err(|_| StreamError::Internal("compressors stopped".into()))?;
                seq += 1;
                continue;
            }
            let ready = Ready {
                seq,
                offset: o,
                length: l,
                kind,
                hash: None,
                pieces: Vec::new(),
                first_plain: None,
                bytes: zero_frame(l),
                _permit: permit,
            };
            self.ready.send(Ok(ready)).await.map_err(|_| StreamError::Internal("assembler stopped".into()))?;
            seq += 1;
        }
        Ok(seq)
    }
}

/// The assembler's state: frames come back from the compressors out of order; they are
/// put back in sequence, appended to the part being filled, and the part is cut once it
/// reaches its target size ([`part_target`]).
struct Assembler {
    pending: BTreeMap<u64, Ready>,
    next: u64,
    buf: Vec<u8>,
    part_frames: Vec<Frame>,
    /// Number of the part being filled.
    number: u32,
    /// Archive offset of the next frame.
    pos: u64,
    /// Archive offset where the part being filled starts.
    part_start: u64,
    /// Image offset the export started at (the end of an empty part).
    start: u64,
    /// Full exports: the image's BLAKE3 tree, fed in image order.
    tree: Option<ImageTree>,
}

impl Assembler {
    fn new(number: u32, archive_start: u64, start: u64, tree: Option<ImageTree>) -> Assembler {
        Assembler {
            tree,
            pending: BTreeMap::new(),
            next: 0,
            buf: Vec::new(),
            part_frames: Vec::new(),
            number,
            pos: archive_start,
            part_start: archive_start,
            start,
        }
    }

    /// The next frame in sequence, if it has arrived.
    fn next_in_order(&mut self) -> Option<Ready> {
        let r = self.pending.remove(&self.next)?;
        self.next += 1;
        Some(r)
    }

    /// Appends a frame; `true` when the part is full and must be cut.
    fn push(&mut self, r: Ready) -> bool {
        let frame = Frame {
            offset: r.offset,
            length: r.length,
            archive_offset: self.pos,
            archive_length: r.bytes.len() as u64,
            kind: r.kind,
            sha256: None,
            blake3: r.hash.map(|h| archive::hex(&h)),
        };
        if let Some(tree) = &mut self.tree {
            let mut first = r.first_plain;
            for cv in &r.pieces {
                tree.push(*cv, first.take());
            }
        }
        self.pos += r.bytes.len() as u64;
        if self.buf.capacity() == 0 {
            // One allocation per part: the part's target and one frame more, so appending
            // never reallocates (and copies) a part that is being filled.
            self.buf.reserve_exact((part_target(self.number) + (r.bytes.len() as u64).max(1 << 20) * 2) as usize);
        }
        self.buf.extend_from_slice(&r.bytes);
        self.part_frames.push(frame);
        self.buf.len() as u64 >= part_target(self.number)
    }

    /// Image offset at the end of the part being filled.
    fn image_end(&self) -> u64 {
        self.part_frames.last().map(|f| f.offset + f.length).unwrap_or(self.start)
    }

    /// Cuts the full part: (its archive offset, its bytes, its journal record).
    fn cut_part(&mut self, hash_state: Option<String>) -> (u64, Vec<u8>, PartRecord) {
        let frames = std::mem::take(&mut self.part_frames);
        let end = frames.last().map(|f| f.offset + f.length).unwrap_or(self.start);
        let data = std::mem::take(&mut self.buf);
        let rec = PartRecord {
            hash_state,
            tree: self.tree.clone(),
            ..PartRecord::new(self.number, data.len() as u64, end, self.pos, frames)
        };
        let start = self.part_start;
        self.part_start = self.pos;
        self.number += 1;
        (start, data, rec)
    }
}

impl Exporter {
    /// An exporter writing to `store`.
    pub fn new(store: Arc<dyn ArchiveStore>, tuning: Tuning, progress: Arc<Progress>) -> Exporter {
        Exporter { store, tuning, progress, clock: Arc::new(SystemClock) }
    }

    /// The manifest's `created_at` comes from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Exporter {
        self.clock = clock;
        self
    }

    /// Runs one export to the end: a finished archive and manifest, or an error. On a
    /// retryable error the upload and journal are kept, so a rerun resumes; on any other the
    /// upload is aborted.
    pub async fn export(&self, req: ExportRequest, open: OpenReader) -> Result<ExportSummary, StreamError> {
        self.tuning.check()?;
        let chunk = req.chunk_size;
        if !chunk.is_power_of_two() || chunk < 1024 || !chunk.is_multiple_of(req.block_size) || chunk > (1 << 30) {
            return Err(StreamError::Input(format!(
                "chunk size {chunk} must be a power of two, a multiple of the block size {} and at most 1 GiB \
                 (--chunk-mib 1, 2, 4, …, 1024)",
                req.block_size
            )));
        }
        if !(1..=19).contains(&req.level) {
            return Err(StreamError::Input(format!("zstd level {} is outside 1..=19", req.level)));
        }
        bunker_protocol::archive::check_name(&req.name).map_err(StreamError::Input)?;
        let started = Instant::now();
        let akey = archive_key(&req.name, req.content);
        let mkey = manifest_key(&req.name);
        if let Some(done) = self.already_exported(&req, &akey, &mkey).await? {
            return Ok(ExportSummary { seconds: started.elapsed().as_secs_f64(), ..done });
        }
        let resume = self.resume_point(&req, &akey).await?;
        let (upload_id, records) = match resume {
            Some(r) => (r.upload_id, r.records),
            None => {
                let id =
                    self.store.start_upload(&akey).await.map_err(|e| {
                        StreamError::port(format!("starting the upload of {}", self.store.url(&akey)), e)
                    })?;
                let header = header(&req, &id);
                if let Err(e) = self.put_json(&format!("{}header.json", journal_prefix(&req.name)), &header).await {
                    self.abort_quietly(&akey, &id).await;
                    return Err(e);
                }
                (id, Vec::new())
            }
        };
        match self.run(&req, &akey, &upload_id, records, open).await {
            Ok((frames, parts, digests, tree)) => {
                let size = parts.iter().map(|p| p.size).sum::<u64>();
                self.store
                    .complete_upload(&akey, &upload_id, &parts)
                    .await
                    .map_err(|e| StreamError::port(format!("completing the upload of {}", self.store.url(&akey)), e))?;
                let mut manifest = build_manifest(&req, &akey, size, frames, digests, tree, self.clock.now());
                manifest.catalog = self.put_catalog(&req).await?;
                self.store
                    .put(&mkey, manifest.to_json())
                    .await
                    .map_err(|e| StreamError::port(format!("writing {}", self.store.url(&mkey)), e))?;
                self.delete_journal(&req.name).await;
                info!(archive = %self.store.url(&akey), bytes = size, "export complete");
                let summary =
                    ExportSummary::of(&manifest, self.store.url(&akey), self.store.url(&mkey), &self.progress, false);
                Ok(ExportSummary { seconds: started.elapsed().as_secs_f64(), ..summary })
            }
            Err(e) if e.is_retryable() && req.resumable => {
                warn!(archive = %self.store.url(&akey), error = %e, "export interrupted; rerun to resume");
                Err(e)
            }
            Err(e) => {
                if let Err(abort) = self.store.abort_upload(&akey, &upload_id).await {
                    warn!(archive = %self.store.url(&akey), error = %abort, "could not abort the upload");
                }
                self.delete_journal(&req.name).await;
                Err(e)
            }
        }
    }

    /// The finished export already at the target, if any; an error if the target holds an
    /// export of something else.
    async fn already_exported(
        &self,
        req: &ExportRequest,
        akey: &str,
        mkey: &str,
    ) -> Result<Option<ExportSummary>, StreamError> {
        let url = self.store.url(mkey);
        if self.store.size(mkey).await.map_err(|e| StreamError::port(format!("checking {url}"), e))?.is_none() {
            return Ok(None);
        }
        let bytes = self.read_all(mkey).await?;
        let m = Manifest::from_json(&bytes).map_err(|e| {
            StreamError::Input(format!(
                "{url} exists and is not a bunker manifest ({e}); remove it or choose another target"
            ))
        })?;
        if m.source.id != req.source.id || m.content != req.content {
            return Err(StreamError::Input(format!(
                "{url} already holds an export of {}; choose another --name or target",
                m.source.id
            )));
        }
        let size = self.store.size(akey).await.map_err(|e| StreamError::port("checking the archive", e))?;
        if size != Some(m.archive.size) {
            return Err(StreamError::Corrupt(format!(
                "{url} describes an archive of {} bytes but {} has {}; remove both to export again",
                m.archive.size,
                self.store.url(akey),
                size.map(|s| s.to_string()).unwrap_or_else(|| "none".into())
            )));
        }
        info!(archive = %self.store.url(akey), "already exported");
        Ok(Some(ExportSummary::of(&m, self.store.url(akey), url, &self.progress, true)))
    }

    /// The journaled parts of an earlier run of the same export, if its upload still exists.
    /// A journal of a different export (or of a vanished upload) is discarded.
    async fn resume_point(&self, req: &ExportRequest, akey: &str) -> Result<Option<ResumePoint>, StreamError> {
        let prefix = journal_prefix(&req.name);
        let keys = self
            .store
            .list(&prefix)
            .await
            .map_err(|e| StreamError::port(format!("listing {}", self.store.url(&prefix)), e))?;
        let header_key = format!("{prefix}header.json");
        if !keys.contains(&header_key) {
            if let Some(stale) =
                self.store.find_upload(akey).await.map_err(|e| StreamError::port("listing uploads", e))?
            {
                self.abort_quietly(akey, &stale).await;
            }
            return Ok(None);
        }
        let old: Header = serde_json::from_slice(&self.read_all(&header_key).await?)
            .map_err(|e| StreamError::Corrupt(format!("journal header {}: {e}", self.store.url(&header_key))))?;
        let current = Header { upload_id: old.upload_id.clone(), ..header(req, "") };
        let parts = if old == current && req.resumable {
            match self.store.list_parts(akey, &old.upload_id).await {
                Ok(p) => Some(p),
                Err(e) if e.kind == ErrorKind::NotFound => None,
                Err(e) => return Err(StreamError::port("listing uploaded parts", e)),
            }
        } else {
            None
        };
        let Some(parts) = parts else {
            info!(archive = %self.store.url(akey), "discarding the journal of a different or vanished upload");
            self.abort_quietly(akey, &old.upload_id).await;
            self.delete_journal(&req.name).await;
            return Ok(None);
        };
        let stored: BTreeMap<u32, StoredPart> = parts.into_iter().map(|p| (p.number, p)).collect();
        let mut records = Vec::new();
        for n in 1.. {
            let key = format!("{prefix}part-{n:05}.json");
            if !keys.contains(&key) {
                break;
            }
            let rec: PartRecord = match serde_json::from_slice(&self.read_all(&key).await?) {
                Ok(r) => r,
                Err(_) => break,
            };
            match stored.get(&n) {
                Some(p) if p.size == rec.size && rec.number == n => records.push(rec),
                _ => break,
            }
            if records.last().is_some_and(|r| r.last) {
                break;
            }
        }
        let resumed = records.last().map(|r| r.end_offset).unwrap_or(0);
        Progress::add(&self.progress.resumed, resumed);
        info!(archive = %self.store.url(akey), parts = records.len(), image_offset = resumed, "resuming export");
        Ok(Some(ResumePoint { upload_id: old.upload_id, records }))
    }

    /// The pipeline. Returns every frame, the stored parts, the image hash and tar stats.
    async fn run(
        &self,
        req: &ExportRequest,
        akey: &str,
        upload_id: &str,
        records: Vec<PartRecord>,
        open: OpenReader,
    ) -> Result<Outcome, StreamError> {
        let resumed = Resumed::from_records(&records)?;
        if let Some(total) = req.image_size {
            self.progress.total.store(total, std::sync::atomic::Ordering::Relaxed);
        }
        Progress::add(&self.progress.bytes_in, resumed.start);
        let full = req.base.is_none();
        if resumed.finished {
            return resumed.finished_outcome(&records, req, full);
        }
        // The journal is read back from the target: its tree must be well formed and cover
        // exactly the chunks before the resume point.
        let pieces = resumed.start / req.chunk_size;
        let lost_state = resumed.tree.as_ref().is_none_or(|t| !t.is_valid() || t.pieces() != pieces)
            || (req.sha256 && resumed.hash_state.is_none());
        if full && resumed.start > 0 && lost_state {
            return Err(StreamError::Corrupt(
                "journal has no valid image hash state; remove the journal to start over".into(),
            ));
        }
        let hasher = match full && req.sha256 {
            true => {
                Some(ImageHasher::start(resumed.start, resumed.hash_state.as_deref(), self.tuning.channel_capacity)?)
            }
            false => None,
        };
        let tree = full.then(|| resumed.tree.clone().unwrap_or_default());
        let permits = Arc::new(Semaphore::new(self.tuning.chunks_in_flight));
        let (job_tx, job_rx) = mpsc::channel::<Job>(self.tuning.channel_capacity);
        let (out_tx, out_rx) = mpsc::channel::<Result<Ready, StreamError>>(self.tuning.chunks_in_flight + 1);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let threads = (0..self.tuning.compress_threads)
            .map(|i| spawn_compressor(i, req.level, (full, req.chunk_size), job_rx.clone(), out_tx.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let dispatcher = Dispatcher {
            permits,
            jobs: job_tx,
            ready: out_tx,
            hasher: hasher.as_ref(),
            tree: full,
            progress: &self.progress,
        };
        let dispatch = dispatcher.run(open(resumed.start), resumed.start, req.image_size);
        let mut asm = Assembler::new(resumed.parts.len() as u32 + 1, resumed.archive_start, resumed.start, tree);
        let (mut frames, mut parts) = (resumed.frames, resumed.parts);
        let assemble = self.assemble(req, akey, upload_id, &mut asm, out_rx, hasher.as_ref(), &mut frames, &mut parts);
        let (end, mut uploads) = tokio::try_join!(dispatch, assemble)?;
        for t in threads {
            if t.join().is_err() {
                return Err(StreamError::Internal("a compressor thread panicked".into()));
            }
        }
        frames.extend(asm.part_frames.iter().cloned());
        let sha256 = match hasher {
            Some(h) => Some(h.finish().await?),
            None => None,
        };
        let blake3 = match &asm.tree {
            Some(t) => {
                Some(t.finish().ok_or_else(|| StreamError::Corrupt("journal lacks the first piece's hash".into()))?)
            }
            None => None,
        };
        let digests = Digests { blake3, sha256 };
        let table: Vec<(u32, u32)> = frames.iter().map(|f| (f.archive_length as u32, f.length as u32)).collect();
        asm.buf.extend(encode_seek_table(&table));
        let rec = PartRecord {
            last: true,
            image_sha256: sha256.map(|d| archive::hex(&d)),
            image_blake3: blake3.map(|d| archive::hex(&d)),
            tree: asm.tree.clone(),
            ..PartRecord::new(
                asm.number,
                asm.buf.len() as u64,
                end,
                asm.part_start + asm.buf.len() as u64,
                asm.part_frames,
            )
        };
        let drain = async {
            let mut done = Vec::new();
            while let Some(p) = uploads.next().await {
                done.push(p?);
            }
            Ok::<_, StreamError>(done)
        };
        let (done, last) = tokio::join!(drain, self.upload(req, akey, upload_id, asm.part_start, asm.buf, rec));
        parts.extend(done?);
        parts.push(last?);
        parts.sort_by_key(|p| p.number);
        let tree = req.tree.as_ref().map(|t| t.lock().expect("tree stats").clone());
        Ok((frames, parts, digests, tree))
    }

    /// Puts compressed frames back in order into parts and uploads each full part (at most
    /// `parts_in_flight` at once); returns the uploads still running.
    #[allow(clippy::too_many_arguments)] // the pipeline's shared state, borrowed for one stage
    async fn assemble<'a>(
        &'a self,
        req: &'a ExportRequest,
        akey: &'a str,
        upload_id: &'a str,
        asm: &mut Assembler,
        mut ready: mpsc::Receiver<Result<Ready, StreamError>>,
        hasher: Option<&ImageHasher>,
        frames: &mut Vec<Frame>,
        parts: &mut Vec<StoredPart>,
    ) -> Result<FuturesUnordered<impl std::future::Future<Output = Result<StoredPart, StreamError>> + 'a>, StreamError>
    {
        let mut uploads = FuturesUnordered::new();
        while let Some(r) = ready.recv().await {
            let r = r?;
            asm.pending.insert(r.seq, r);
            while let Some(r) = asm.next_in_order() {
                if !asm.push(r) {
                    continue;
                }
                let state = match hasher {
                    Some(h) => Some(archive::hex(&h.state_at(asm.image_end()).await?)),
                    None => None,
                };
                let (start, data, rec) = asm.cut_part(state);
                frames.extend(rec.frames.iter().cloned());
                uploads.push(self.upload(req, akey, upload_id, start, data, rec));
                while uploads.len() >= self.tuning.parts_in_flight {
                    parts.push(uploads.next().await.expect("non-empty")?);
                }
            }
        }
        if !asm.pending.is_empty() {
            return Err(StreamError::Internal("a compressor stopped before finishing its chunk".into()));
        }
        Ok(uploads)
    }

    /// Uploads one part (retrying transient failures), then journals it.
    async fn upload(
        &self,
        req: &ExportRequest,
        akey: &str,
        upload_id: &str,
        offset: u64,
        data: Vec<u8>,
        mut rec: PartRecord,
    ) -> Result<StoredPart, StreamError> {
        {
            let (data, sum) = tokio::task::spawn_blocking(move || {
                let s = super::crc32c(&data);
                (bytes::Bytes::from(data), s)
            })
            .await
            .map_err(|e| StreamError::Internal(e.to_string()))?;
            let number = rec.number;
            let warn_retry = |e: &PortError| warn!(part = number, error = %e, "part upload failed; retrying");
            let stored = RetryPolicy::AWS
                .call("upload part", warn_retry, || {
                    // A `Bytes` clone shares the part: a retry does not copy it.
                    self.store.upload_part(akey, upload_id, number, offset, data.clone(), &sum)
                })
                .await
                .map_err(|e| StreamError::port(format!("uploading part {number} of {}", self.store.url(akey)), e))?;
            Progress::add(&self.progress.bytes_out, data.len() as u64);
            rec.crc32c = sum.clone();
            rec.etag = stored.etag.clone();
            if req.resumable {
                self.put_json(&format!("{}part-{:05}.json", journal_prefix(&req.name), rec.number), &rec).await?;
            }
            Ok(StoredPart { crc32c: Some(sum), ..stored })
        }
    }

    /// Stores the catalog the reader filled (zstd, on a blocking thread); its reference for
    /// the manifest.
    async fn put_catalog(
        &self,
        req: &ExportRequest,
    ) -> Result<Option<bunker_protocol::catalog::CatalogRef>, StreamError> {
        let Some(entries) = &req.catalog else { return Ok(None) };
        let entries = std::mem::take(&mut *entries.lock().expect("catalog"));
        let count = entries.len() as u64;
        let level = req.level;
        let body = tokio::task::spawn_blocking(move || {
            zstd::bulk::compress(&bunker_protocol::catalog::encode(&entries), level)
        })
        .await
        .map_err(|e| StreamError::Internal(format!("catalog compression: {e}")))?
        .map_err(|e| StreamError::Internal(format!("catalog compression: {e}")))?;
        let sha256 = {
            use sha2::Digest;
            archive::hex(&sha2::Sha256::digest(&body))
        };
        let key = bunker_protocol::catalog::catalog_key(&req.name);
        self.store
            .put(&key, body)
            .await
            .map_err(|e| StreamError::port(format!("writing {}", self.store.url(&key)), e))?;
        Ok(Some(bunker_protocol::catalog::CatalogRef { key, sha256, entries: count }))
    }

    async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StreamError> {
        let bytes = serde_json::to_vec(value).expect("journal serializes");
        RetryPolicy::AWS
            .call("write journal", |_| {}, || self.store.put(key, bytes.clone()))
            .await
            .map_err(|e| StreamError::port(format!("writing {}", self.store.url(key)), e))
    }

    async fn read_all(&self, key: &str) -> Result<Vec<u8>, StreamError> {
        let url = self.store.url(key);
        let size = self.store.size(key).await.map_err(|e| StreamError::port(format!("reading {url}"), e))?.unwrap_or(0);
        self.store.read(key, 0, size).await.map_err(|e| StreamError::port(format!("reading {url}"), e))
    }

    async fn abort_quietly(&self, akey: &str, upload: &str) {
        match self.store.abort_upload(akey, upload).await {
            Ok(()) => info!(archive = %self.store.url(akey), upload, "aborted a stale upload"),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => warn!(archive = %self.store.url(akey), error = %e, "could not abort a stale upload"),
        }
    }

    async fn delete_journal(&self, name: &str) {
        let prefix = journal_prefix(name);
        let result = match self.store.list(&prefix).await {
            Ok(keys) => self.store.delete(&keys).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            warn!(journal = %self.store.url(&prefix), error = %e, "could not delete the export journal");
        }
    }
}

fn header(req: &ExportRequest, upload_id: &str) -> Header {
    Header {
        format_version: archive::FORMAT_VERSION,
        source_id: req.source.id.clone(),
        content: req.content,
        image_size: req.image_size,
        chunk_size: req.chunk_size,
        block_size: req.block_size,
        level: req.level,
        sha256: req.sha256,
        base: req.base.as_ref().map(|b| b.manifest.chunks_hash().to_string()),
        upload_id: upload_id.to_string(),
    }
}

fn build_manifest(
    req: &ExportRequest,
    akey: &str,
    size: u64,
    frames: Vec<Frame>,
    digests: Digests,
    tree: Option<TreeStats>,
    created_at: jiff::Timestamp,
) -> Manifest {
    let image_size = frames.last().map(|f| f.offset + f.length).unwrap_or(0);
    let base_hashes = req.base.as_ref().map(|b| b.chunk_hashes.as_slice()).unwrap_or(&[]);
    let chunks = chunk_hashes(HashAlg::Blake3, &frames, req.chunk_size, image_size, base_hashes);
    Manifest {
        format: archive::FORMAT.into(),
        version: archive::FORMAT_VERSION,
        tool: format!("bunker {}", env!("CARGO_PKG_VERSION")),
        created_at: created_at.to_string(),
        content: req.content,
        source: req.source.clone(),
        image_size,
        block_size: req.block_size,
        chunk_size: req.chunk_size,
        image_sha256: digests.sha256.map(|h| archive::hex(&h)),
        image_blake3: digests.blake3.map(|h| archive::hex(&h)),
        chunks_sha256: None,
        chunks_blake3: Some(archive::hex(&chunks_root(HashAlg::Blake3, &chunks))),
        archive: ArchiveObject { key: akey.into(), size, zstd_level: req.level },
        base: req.base.as_ref().map(|b| b.manifest.as_base(&b.manifest_key)),
        tree,
        items: req.items.as_ref().map(|i| i.lock().expect("item stats").clone()),
        dump: req.dump.clone(),
        catalog: None,
        frames,
    }
}

/// The chunk-list entry of every `chunk_size` piece of the image: data frames' own hashes,
/// zero pieces' plain hashes of their zeros (`alg`'s), base pieces' entries from `base`
/// (empty when there is no base, which a consistent manifest never needs).
pub fn chunk_hashes(
    alg: HashAlg,
    frames: &[Frame],
    chunk_size: u64,
    image_size: u64,
    base: &[[u8; 32]],
) -> Vec<[u8; 32]> {
    let zero = |n: u64| match alg {
        HashAlg::Sha256 => super::zero_sha256(n),
        HashAlg::Blake3 => blake::zero_hash(n),
    };
    let full_zero = zero(chunk_size);
    let mut out = Vec::with_capacity(image_size.div_ceil(chunk_size) as usize);
    for f in frames {
        match f.kind {
            FrameKind::Data => out.push(f.hash().and_then(unhex32).unwrap_or([0; 32])),
            FrameKind::Zero | FrameKind::Base => {
                let mut at = f.offset;
                while at < f.offset + f.length {
                    let n = (f.offset + f.length - at).min(chunk_size);
                    let index = (at / chunk_size) as usize;
                    out.push(match f.kind {
                        FrameKind::Base => base.get(index).copied().unwrap_or([0; 32]),
                        _ if n == chunk_size => full_zero,
                        _ => zero(n),
                    });
                    at += n;
                }
            }
        }
    }
    out
}

/// The manifest's chunk-list hash: `alg` over the concatenated entries.
pub fn chunks_root(alg: HashAlg, hashes: &[[u8; 32]]) -> [u8; 32] {
    match alg {
        HashAlg::Sha256 => {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for c in hashes {
                h.update(c);
            }
            h.finalize().into()
        }
        HashAlg::Blake3 => {
            let mut h = blake3::Hasher::new();
            for c in hashes {
                h.update(c);
            }
            h.finalize().into()
        }
    }
}

/// Bytes from lowercase or uppercase hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    unhex(s)?.try_into().ok()
}

/// One compressor thread: hashes and compresses data jobs, hashes zero runs' pieces for the
/// image's tree (`hashing`: whether the export is full, and the chunk size).
fn spawn_compressor(
    i: usize,
    level: i32,
    hashing: (bool, u64),
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    out: mpsc::Sender<Result<Ready, StreamError>>,
) -> Result<std::thread::JoinHandle<()>, StreamError> {
    std::thread::Builder::new()
        .name(format!("bunker-zstd-{i}"))
        .spawn(move || {
            let mut compressor = match new_compressor(level) {
                Ok(c) => c,
                Err(e) => {
                    let _unsent = out.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let job = jobs.lock().expect("job queue").blocking_recv();
                let Some(job) = job else { return };
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    work(&mut compressor, hashing, job.offset, &job.input)
                }));
                let ready = match result {
                    Ok(Ok(w)) => Ok(Ready {
                        seq: job.seq,
                        offset: job.offset,
                        length: w.length,
                        kind: w.kind,
                        hash: w.hash,
                        pieces: w.pieces,
                        first_plain: w.first_plain,
                        bytes: w.bytes,
                        _permit: job.permit,
                    }),
                    Ok(Err(e)) => Err(StreamError::Internal(format!("zstd: {e}"))),
                    Err(_) => Err(StreamError::Internal(format!("compressor {i} panicked"))),
                };
                let failed = ready.is_err();
                if out.blocking_send(ready).is_err() || failed {
                    return;
                }
            }
        })
        .map_err(|e| StreamError::Internal(format!("cannot start compressor thread: {e}")))
}

/// What a compressor made of one job.
struct Worked {
    length: u64,
    kind: FrameKind,
    hash: Option<[u8; 32]>,
    pieces: Vec<[u8; 32]>,
    first_plain: Option<[u8; 32]>,
    bytes: Vec<u8>,
}

/// A data job: its chaining value (one pass of BLAKE3) and its zstd frame; a zero run: its
/// pieces' chaining values. At offset 0 of a full export, the first piece's plain hash too.
fn work(
    compressor: &mut zstd::bulk::Compressor<'static>,
    (full, chunk): (bool, u64),
    offset: u64,
    input: &Input,
) -> std::io::Result<Worked> {
    match input {
        Input::Data(data) => {
            let cv = blake::chaining_value(offset, data);
            Ok(Worked {
                length: data.len() as u64,
                kind: FrameKind::Data,
                hash: Some(cv),
                pieces: if full { vec![cv] } else { Vec::new() },
                first_plain: (full && offset == 0).then(|| *blake3::hash(data).as_bytes()),
                bytes: compressor.compress(data)?,
            })
        }
        Input::Zero(length) => Ok(Worked {
            length: *length,
            kind: FrameKind::Zero,
            hash: None,
            pieces: blake::zero_chaining_values(offset, *length, chunk),
            first_plain: (offset == 0).then(|| blake::zero_hash((*length).min(chunk))),
            bytes: zero_frame(*length),
        }),
    }
}

fn new_compressor(level: i32) -> Result<zstd::bulk::Compressor<'static>, StreamError> {
    let mut c = zstd::bulk::Compressor::new(level).map_err(|e| StreamError::Internal(format!("zstd: {e}")))?;
    c.include_checksum(true).map_err(|e| StreamError::Internal(format!("zstd: {e}")))?;
    c.include_contentsize(true).map_err(|e| StreamError::Internal(format!("zstd: {e}")))?;
    Ok(c)
}
