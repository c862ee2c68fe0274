//! Reading archives back: open (manifest, size and seek-table checks), verify every chunk,
//! and restore to a file or to a new EBS snapshot, applying incremental chains base first.
//!
//! Frames are fetched in windows of consecutive frames (ranged reads, two ahead) and decoded
//! on blocking threads; each data frame is checked against its manifest hash (format 2: its
//! BLAKE3 chaining value at its offset; format 1: its SHA-256) before its bytes are used.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bunker_protocol::archive::{
    self, decode_seek_table, max_manifest_bytes, seek_footer_frames, zero_frame, Content, Frame, FrameKind, HashAlg,
    Manifest, SEEK_FOOTER_LEN,
};
use bunker_protocol::tags::Tags;
use futures::StreamExt;
use serde::Serialize;
use tracing::{info, warn};

use super::blake::{self, ImageTree};
use super::export::{chunk_hashes, chunks_root};
use super::hasher::{HashItem, ImageHasher};
use super::limiter::Limiter;
use super::{base64, is_zero, sha256, Progress, StreamError};
use crate::ports::{ArchiveStore, ImageWriter, SnapshotBlocks};

/// Largest ranged read: consecutive frames are fetched together up to this size.
const WINDOW: u64 = 16 << 20;

/// An archive whose manifest, size and seek table agree.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The store.
    pub store: Arc<dyn ArchiveStore>,
    /// Key of the manifest.
    pub manifest_key: String,
    /// The manifest.
    pub manifest: Manifest,
}

impl std::fmt::Debug for dyn ArchiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url(""))
    }
}

/// What a verify found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Archive URL.
    pub archive: String,
    /// Frames checked.
    pub frames: usize,
    /// Of which data.
    pub data_chunks: usize,
    /// Image size.
    pub image_size: u64,
    /// Archive bytes read.
    pub bytes_read: u64,
    /// Whole-image BLAKE3 (full format-2 archives).
    pub image_blake3: Option<String>,
    /// Whole-image SHA-256 (full format-1 archives, and format-2 ones made with `--sha256`).
    pub image_sha256: Option<String>,
    /// Chunk-list hash (in the manifest's algorithm).
    pub chunks_hash: String,
    /// Seconds.
    pub seconds: f64,
}

/// What a restore wrote.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The archive restored (the newest of its chain).
    pub archive: String,
    /// Archives applied, base first.
    pub applied: Vec<String>,
    /// Image size.
    pub image_size: u64,
    /// Data bytes written (zero blocks are not written).
    pub bytes_written: u64,
    /// For `--to-snapshot`: the new snapshot.
    pub snapshot_id: Option<String>,
    /// For `--to-file`: the file's hashes as written (read back): BLAKE3 for a format-2
    /// archive, SHA-256 for a format-1 one or one made with `--sha256`.
    #[serde(flatten)]
    pub image: ImageHashes,
    /// Chunk-list hash of the result.
    pub chunks_hash: String,
    /// Seconds.
    pub seconds: f64,
}

/// Whole-image hashes, hex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImageHashes {
    /// BLAKE3, as `b3sum` prints it.
    #[serde(rename = "image_blake3")]
    pub blake3: Option<String>,
    /// SHA-256, as `sha256sum` prints it.
    #[serde(rename = "image_sha256")]
    pub sha256: Option<String>,
}

/// Where a restore goes.
pub enum RestoreTarget {
    /// A new file (written under a temporary name, renamed when verified).
    File(Box<dyn ImageWriter>),
    /// A new EBS snapshot via the direct APIs.
    Snapshot {
        /// The EBS direct APIs of the region.
        port: Arc<dyn SnapshotBlocks>,
        /// Tags for the new snapshot.
        tags: Tags,
        /// Concurrent PutSnapshotBlock calls at most.
        max_requests: usize,
    },
}

/// The largest catalog object read (compressed; about 40 bytes per entry).
const CATALOG_LIMIT: u64 = 1 << 30;

/// The manifest key for an archive, manifest or catalog key given by the user.
pub fn manifest_key_for(key: &str) -> Result<String, StreamError> {
    if key.ends_with(".manifest.json") {
        return Ok(key.to_string());
    }
    if let Some(stem) = key.strip_suffix(".catalog.jsonl.zst") {
        return Ok(format!("{stem}.manifest.json"));
    }
    for ext in Content::ALL.map(Content::extension) {
        if let Some(stem) = key.strip_suffix(ext) {
            return Ok(format!("{stem}.manifest.json"));
        }
    }
    let exts = Content::ALL.map(Content::extension).join(", ");
    Err(StreamError::Input(format!("{key:?} is neither an archive ({exts}) nor a manifest (.manifest.json)")))
}

impl Archive {
    /// Opens the archive at `key` (the archive or its manifest) and checks that the object,
    /// its size and its seek table agree with the manifest.
    pub async fn open(store: Arc<dyn ArchiveStore>, key: &str) -> Result<Archive, StreamError> {
        let mkey = manifest_key_for(key)?;
        let murl = store.url(&mkey);
        let size = store.size(&mkey).await.map_err(|e| StreamError::port(format!("reading {murl}"), e))?;
        let Some(size) = size else {
            return Err(StreamError::Input(format!(
                "no manifest at {murl}: not a bunker archive, or its export did not finish (rerun the export)"
            )));
        };
        let limit = max_manifest_bytes(Self::frames_beside(&store, &mkey).await?);
        if size > limit {
            return Err(StreamError::Corrupt(format!(
                "{murl} is {size} bytes, more than the {limit} bytes a manifest of its archive can take: not a bunker manifest"
            )));
        }
        let bytes = store.read(&mkey, 0, size).await.map_err(|e| StreamError::port(format!("reading {murl}"), e))?;
        let manifest = Manifest::from_json(&bytes).map_err(|e| StreamError::Input(format!("{murl}: {e}")))?;
        let archive = Archive { store, manifest_key: mkey, manifest };
        archive.check_object().await?;
        Ok(archive)
    }

    /// The frame count in the seek-table footer of the archive beside manifest `mkey`: it
    /// bounds how large the manifest may be. No archive, or no footer, counts as 0 frames
    /// (the object check that follows names what is wrong with the archive).
    async fn frames_beside(store: &Arc<dyn ArchiveStore>, mkey: &str) -> Result<u64, StreamError> {
        let stem = mkey.strip_suffix(".manifest.json").unwrap_or(mkey);
        for ext in Content::ALL.map(Content::extension) {
            let key = format!("{stem}{ext}");
            let url = store.url(&key);
            let Some(size) = store.size(&key).await.map_err(|e| StreamError::port(format!("reading {url}"), e))? else {
                continue;
            };
            let start = size.saturating_sub(SEEK_FOOTER_LEN);
            let footer = store
                .read(&key, start, SEEK_FOOTER_LEN)
                .await
                .map_err(|e| StreamError::port(format!("reading {url}"), e))?;
            return Ok(seek_footer_frames(&footer, size).unwrap_or(0));
        }
        Ok(0)
    }

    /// URL of the archive object.
    pub fn url(&self) -> String {
        self.store.url(&self.archive_key())
    }

    fn archive_key(&self) -> String {
        // The archive sits beside its manifest.
        match self.manifest_key.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{}", key_name(&self.manifest.archive.key)),
            None => key_name(&self.manifest.archive.key).to_string(),
        }
    }

    /// The archive's file catalog (tar archives): read beside the manifest, checked against
    /// the manifest's SHA-256 of it, decompressed (bounded) and parsed.
    pub async fn catalog(&self) -> Result<Vec<bunker_protocol::catalog::CatalogEntry>, StreamError> {
        use sha2::Digest;
        let Some(cref) = &self.manifest.catalog else {
            return Err(StreamError::Input(format!(
                "{} has no file catalog: only tar archives made by this version have one",
                self.url()
            )));
        };
        let key = match self.manifest_key.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{}", key_name(&cref.key)),
            None => key_name(&cref.key).to_string(),
        };
        let url = self.store.url(&key);
        let port = |e| StreamError::port(format!("reading {url}"), e);
        let size = self.store.size(&key).await.map_err(port)?;
        let size = size.ok_or_else(|| StreamError::Corrupt(format!("{url} is missing (its manifest names it)")))?;
        if size > CATALOG_LIMIT {
            return Err(StreamError::Corrupt(format!("{url} is {size} bytes, more than a catalog may be")));
        }
        let body = self.store.read(&key, 0, size).await.map_err(port)?;
        if archive::hex(&sha2::Sha256::digest(&body)) != cref.sha256 {
            return Err(StreamError::Corrupt(format!("{url} does not match its SHA-256 in the manifest")));
        }
        let text = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let decoder = zstd::stream::read::Decoder::new(&body[..])?;
            std::io::Read::read_to_end(&mut std::io::Read::take(decoder, CATALOG_LIMIT * 64), &mut out).map(|_| out)
        })
        .await
        .map_err(|e| StreamError::Internal(e.to_string()))?
        .map_err(|e| StreamError::Corrupt(format!("{url}: {e}")))?;
        bunker_protocol::catalog::decode(&text).map_err(|e| StreamError::Corrupt(format!("{url}: {e}")))
    }

    async fn check_object(&self) -> Result<(), StreamError> {
        let key = self.archive_key();
        let url = self.store.url(&key);
        let m = &self.manifest;
        let size = self.store.size(&key).await.map_err(|e| StreamError::port(format!("reading {url}"), e))?;
        match size {
            None => return Err(StreamError::Corrupt(format!("{url} is missing (its manifest exists)"))),
            Some(s) if s != m.archive.size => {
                return Err(StreamError::Corrupt(format!(
                    "{url} is {s} bytes but its manifest says {}: truncated or replaced",
                    m.archive.size
                )))
            }
            Some(_) => {}
        }
        let table_len = m.frames.len() as u64 * 8 + 17;
        let start = m.archive.size.saturating_sub(table_len);
        let tail = self
            .store
            .read(&key, start, table_len)
            .await
            .map_err(|e| StreamError::port(format!("reading {url}"), e))?;
        let (entries, _) = decode_seek_table(&tail).map_err(|e| StreamError::Corrupt(format!("{url}: {e}")))?;
        if entries.len() != m.frames.len() {
            return Err(StreamError::Corrupt(format!(
                "{url}: seek table has {} frames, the manifest {}",
                entries.len(),
                m.frames.len()
            )));
        }
        for (i, (f, (c, d))) in m.frames.iter().zip(&entries).enumerate() {
            if u64::from(*c) != f.archive_length || u64::from(*d) != f.length {
                return Err(StreamError::BadChunk {
                    chunk: i,
                    offset: f.offset,
                    archive_offset: f.archive_offset,
                    reason: "seek table entry differs from the manifest".into(),
                });
            }
        }
        Ok(())
    }

    /// This archive's base chain, base first, ending with this archive.
    pub async fn chain(self) -> Result<Vec<Archive>, StreamError> {
        let mut chain = vec![self];
        while let Some(base) = chain.last().and_then(|a| a.manifest.base.clone()) {
            if chain.len() > 1000 {
                return Err(StreamError::Corrupt("base chain longer than 1000 archives (a cycle?)".into()));
            }
            let top = chain.last().expect("non-empty");
            let b = Archive::open(top.store.clone(), &base.manifest).await.map_err(|e| match e {
                StreamError::Input(m) => StreamError::Input(format!("base {} of {}: {m}", base.snapshot_id, top.url())),
                e => e,
            })?;
            if b.manifest.version != top.manifest.version {
                return Err(StreamError::Corrupt(format!(
                    "base {} is format version {}, the incremental {} version {}: a chain keeps one version",
                    b.url(),
                    b.manifest.version,
                    top.url(),
                    top.manifest.version
                )));
            }
            if b.manifest.chunks_hash() != base.chunks_hash() || b.manifest.chunk_size != top.manifest.chunk_size {
                return Err(StreamError::Corrupt(format!(
                    "base {} of {} was replaced after the incremental export (chunk hashes differ)",
                    b.url(),
                    top.url()
                )));
            }
            chain.push(b);
        }
        chain.reverse();
        Ok(chain)
    }

    /// Streams the given frames (ascending indexes), decoded and checked, to `each` in order.
    async fn frames<F>(&self, indexes: &[usize], progress: &Progress, mut each: F) -> Result<u64, StreamError>
    where
        F: FnMut(usize, &Frame, Option<Arc<Vec<u8>>>) -> futures::future::BoxFuture<'static, Result<(), StreamError>>,
    {
        let key = self.archive_key();
        let m = &self.manifest;
        // Windows of consecutive frames.
        let mut windows: Vec<(usize, usize)> = Vec::new();
        for &i in indexes {
            match windows.last_mut() {
                Some((a, b))
                    if *b == i
                        && m.frames[i].archive_offset + m.frames[i].archive_length - m.frames[*a].archive_offset
                            <= WINDOW =>
                {
                    *b = i + 1
                }
                _ => windows.push((i, i + 1)),
            }
        }
        let store = self.store.clone();
        let frames = Arc::new(m.frames.clone());
        let alg = m.hash_alg();
        let url = self.url();
        let mut decoded = futures::stream::iter(windows)
            .map(|(a, b)| {
                let store = store.clone();
                let frames = frames.clone();
                let key = key.clone();
                let url = url.clone();
                async move {
                    let start = frames[a].archive_offset;
                    let len = frames[b - 1].archive_offset + frames[b - 1].archive_length - start;
                    let bytes = store
                        .read(&key, start, len)
                        .await
                        .map_err(|e| StreamError::port(format!("reading {url}"), e))?;
                    if bytes.len() as u64 != len {
                        return Err(StreamError::Corrupt(format!("{url}: short read at offset {start}")));
                    }
                    let n = bytes.len() as u64;
                    let out = tokio::task::spawn_blocking(move || {
                        let mut dec =
                            zstd::bulk::Decompressor::new().map_err(|e| StreamError::Internal(e.to_string()))?;
                        (a..b)
                            .map(|i| {
                                let f = &frames[i];
                                let at = (f.archive_offset - start) as usize;
                                decode(i, f, alg, &bytes[at..at + f.archive_length as usize], &mut dec)
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .await
                    .map_err(|e| StreamError::Internal(e.to_string()))??;
                    Ok::<_, StreamError>(((a, b), out, n))
                }
            })
            .buffered(2);
        let mut read = 0;
        while let Some(w) = decoded.next().await {
            let ((a, _), out, n) = w?;
            read += n;
            Progress::add(&progress.bytes_out, n);
            for (k, data) in out.into_iter().enumerate() {
                let i = a + k;
                Progress::add(&progress.bytes_in, m.frames[i].length);
                each(i, &m.frames[i], data.map(Arc::new)).await?;
            }
        }
        Ok(read)
    }
}

/// A stretch of the uncompressed stream handed on by [`Archive::read_ranges`].
#[derive(Debug, Clone)]
pub enum Piece {
    /// Bytes `at` of a checked frame.
    Data {
        /// The frame's bytes.
        frame: Arc<Vec<u8>>,
        /// The part of it in the stretch.
        at: std::ops::Range<usize>,
    },
    /// This many zero bytes (a zero frame).
    Zeros(u64),
}

impl Piece {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Data { at, .. } => at.len() as u64,
            Piece::Zeros(n) => *n,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Archive {
    /// Hands the bytes of the uncompressed stream in `ranges` (ascending, not overlapping),
    /// in order, to `out`: only the frames holding them are read (ranged reads) and each is
    /// checked against its hash first. A failure is handed on too, in its place, and ends
    /// the reading. Returns the archive bytes read.
    pub async fn read_ranges(
        &self,
        ranges: &[(u64, u64)],
        progress: &Progress,
        out: tokio::sync::mpsc::Sender<Result<Piece, StreamError>>,
    ) -> Result<u64, StreamError> {
        let m = &self.manifest;
        if m.base.is_some() {
            return Err(StreamError::Input(format!("{} is incremental; files come from full archives", self.url())));
        }
        let mut indexes: Vec<usize> = Vec::new();
        for &(start, end) in ranges.iter().filter(|(s, e)| e > s) {
            let mut i = m.frame_at(start).ok_or_else(|| {
                StreamError::Corrupt(format!("{}: offset {start} is past the end of the stream", self.url()))
            })?;
            while i < m.frames.len() && m.frames[i].offset < end {
                if indexes.last() != Some(&i) {
                    indexes.push(i);
                }
                i += 1;
            }
        }
        let ranges: Arc<Vec<(u64, u64)>> = Arc::new(ranges.to_vec());
        let sink = out.clone();
        let result = self
            .frames(&indexes, progress, move |_, f, data| {
                let (ranges, out) = (ranges.clone(), sink.clone());
                let (from, to) = (f.offset, f.offset + f.length);
                Box::pin(async move {
                    for &(s, e) in ranges.iter().filter(|(s, e)| *s < to && *e > from) {
                        let (a, b) = ((s.max(from) - from) as usize, (e.min(to) - from) as usize);
                        let piece = match &data {
                            Some(frame) => Piece::Data { frame: frame.clone(), at: a..b },
                            None => Piece::Zeros((b - a) as u64),
                        };
                        if out.send(Ok(piece)).await.is_err() {
                            return Err(StreamError::Target("the restore stopped reading".into()));
                        }
                    }
                    Ok(())
                })
            })
            .await;
        if let Err(e) = &result {
            let _gone = out.send(Err(e.clone())).await;
        }
        result
    }
}

fn key_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Decodes and checks one frame: data frames must decompress to their length and hash, zero
/// and base frames to zeros.
fn decode(
    i: usize,
    f: &Frame,
    alg: HashAlg,
    bytes: &[u8],
    dec: &mut zstd::bulk::Decompressor<'_>,
) -> Result<Option<Vec<u8>>, StreamError> {
    let bad =
        |reason: String| StreamError::BadChunk { chunk: i, offset: f.offset, archive_offset: f.archive_offset, reason };
    match f.kind {
        FrameKind::Data => {
            let out = dec.decompress(bytes, f.length as usize).map_err(|e| bad(format!("zstd: {e}")))?;
            if out.len() as u64 != f.length {
                return Err(bad(format!("decompresses to {} bytes, the manifest says {}", out.len(), f.length)));
            }
            let sum = archive::hex(&match alg {
                HashAlg::Blake3 => blake::chaining_value(f.offset, &out),
                HashAlg::Sha256 => sha256(&out),
            });
            if Some(sum.as_str()) != f.hash() {
                let name = alg.name();
                return Err(bad(format!("{name} is {sum}, the manifest says {}", f.hash().unwrap_or("-"))));
            }
            Ok(Some(out))
        }
        FrameKind::Zero | FrameKind::Base => {
            if bytes == zero_frame(f.length).as_slice() {
                return Ok(None);
            }
            // Not bunker's own encoding: decode it and check it is all zeros.
            use std::io::Read;
            let mut d =
                zstd::stream::read::Decoder::with_buffer(bytes).map_err(|e| bad(format!("zstd: {e}")))?.single_frame();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = d.read(&mut buf).map_err(|e| bad(format!("zstd: {e}")))?;
                if n == 0 {
                    break;
                }
                if !is_zero(&buf[..n]) {
                    return Err(bad("a zero frame holds non-zero bytes".into()));
                }
                total += n as u64;
            }
            if total != f.length {
                return Err(bad(format!("decompresses to {total} bytes, the manifest says {}", f.length)));
            }
            Ok(None)
        }
    }
}

/// Per-chunk hashes of the full image the last archive of `chain` stands for.
pub fn resolved_hashes(chain: &[Archive]) -> Vec<[u8; 32]> {
    let mut hashes = Vec::new();
    for a in chain {
        let m = &a.manifest;
        hashes = chunk_hashes(m.hash_alg(), &m.frames, m.chunk_size, m.image_size, &hashes);
    }
    hashes
}

/// Verifies an archive: every frame decodes and matches its hash, the image hash and the
/// chunk-list hash match (the base chain's manifests are read for the latter).
pub async fn verify(archive: Archive, progress: &Progress) -> Result<VerifyReport, StreamError> {
    verify_into(archive, progress, None).await
}

/// Pieces a zero frame is handed on in by [`verify_into`].
const ZERO_PIECE: u64 = 1 << 20;

/// [`verify`], handing every checked frame's bytes, in order, to `out` (zero frames as
/// zeros): the stream a restore pipes into a database client. A closed `out` only stops the
/// handing on; the verify itself goes to the end.
pub async fn verify_into(
    archive: Archive,
    progress: &Progress,
    out: Option<tokio::sync::mpsc::Sender<Arc<Vec<u8>>>>,
) -> Result<VerifyReport, StreamError> {
    let started = Instant::now();
    let chain = archive.clone().chain().await?;
    let m = &archive.manifest;
    progress.total.store(m.image_size, std::sync::atomic::Ordering::Relaxed);
    let base = resolved_hashes(&chain[..chain.len() - 1]);
    let hashers = ImageHashers::for_manifest(m)?;
    let all: Vec<usize> = (0..m.frames.len()).collect();
    let h = hashers.clone();
    let read = archive
        .frames(&all, progress, move |_, f, data| {
            let (h, out) = (h.clone(), out.clone());
            let zero = f.length;
            Box::pin(async move {
                if let Some(out) = out {
                    hand_on(&out, data.clone(), zero).await;
                }
                h.feed(data, zero).await
            })
        })
        .await?;
    let image = hashers.finish(m, &archive.url()).await?;
    let alg = m.hash_alg();
    let root = archive::hex(&chunks_root(alg, &chunk_hashes(alg, &m.frames, m.chunk_size, m.image_size, &base)));
    if root != m.chunks_hash() {
        return Err(StreamError::Corrupt(format!(
            "{}: chunk-list {} is {root}, the manifest says {}",
            archive.url(),
            alg.name(),
            m.chunks_hash()
        )));
    }
    info!(archive = %archive.url(), frames = m.frames.len(), "verified");
    Ok(VerifyReport {
        archive: archive.url(),
        frames: m.frames.len(),
        data_chunks: m.frames.iter().filter(|f| f.kind == FrameKind::Data).count(),
        image_size: m.image_size,
        bytes_read: read,
        image_blake3: image.blake3,
        image_sha256: image.sha256,
        chunks_hash: root,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The whole-image hashes a manifest records, each computed on its own thread while
/// reading.
#[derive(Clone)]
struct ImageHashers {
    blake3: Option<Arc<ImageHasher>>,
    sha256: Option<Arc<ImageHasher>>,
}

impl ImageHashers {
    fn for_manifest(m: &Manifest) -> Result<ImageHashers, StreamError> {
        let blake3 = match m.image_blake3 {
            Some(_) if m.hash_alg() == HashAlg::Blake3 => Some(Arc::new(ImageHasher::blake3(4)?)),
            _ => None,
        };
        let sha256 = match m.image_sha256 {
            Some(_) => Some(Arc::new(ImageHasher::start(0, None, 4)?)),
            None => None,
        };
        Ok(ImageHashers { blake3, sha256 })
    }

    async fn feed(&self, data: Option<Arc<Vec<u8>>>, zeros: u64) -> Result<(), StreamError> {
        for h in self.blake3.iter().chain(&self.sha256) {
            match &data {
                Some(d) => h.feed(HashItem::Data(d.clone())).await?,
                None => h.feed(HashItem::Zero(zeros)).await?,
            }
        }
        Ok(())
    }

    /// The digests, each checked against the manifest's.
    async fn finish(self, m: &Manifest, url: &str) -> Result<ImageHashes, StreamError> {
        async fn one(
            h: Option<Arc<ImageHasher>>,
            want: Option<&str>,
            name: &str,
            url: &str,
        ) -> Result<Option<String>, StreamError> {
            let Some(h) = h else { return Ok(None) };
            let h = Arc::try_unwrap(h).map_err(|_| StreamError::Internal("hasher still shared".into()))?;
            let got = archive::hex(&h.finish().await?);
            if Some(got.as_str()) != want {
                return Err(StreamError::Corrupt(format!(
                    "{url}: whole-image {name} is {got}, the manifest says {}",
                    want.unwrap_or("-")
                )));
            }
            Ok(Some(got))
        }
        Ok(ImageHashes {
            blake3: one(self.blake3, m.image_blake3.as_deref(), "blake3", url).await?,
            sha256: one(self.sha256, m.image_sha256.as_deref(), "sha256", url).await?,
        })
    }
}

/// Sends a frame's bytes (or its zeros, in [`ZERO_PIECE`]s) to `out`; a closed `out` is
/// the consumer's business (it reports its own failure).
async fn hand_on(out: &tokio::sync::mpsc::Sender<Arc<Vec<u8>>>, data: Option<Arc<Vec<u8>>>, zeros: u64) {
    if let Some(d) = data {
        let _closed = out.send(d).await;
        return;
    }
    let mut left = zeros;
    while left > 0 {
        let n = left.min(ZERO_PIECE);
        if out.send(Arc::new(vec![0u8; n as usize])).await.is_err() {
            return;
        }
        left -= n;
    }
}

/// Which data frames of each archive of the chain make up the newest image: the newest
/// archive's data frames, and for its base ranges the base's frames, recursively.
fn resolve(chain: &[Archive]) -> Result<Vec<Vec<usize>>, StreamError> {
    let mut used = vec![Vec::new(); chain.len()];
    let mut pending: Vec<(u64, u64)> = Vec::new();
    for (level, a) in chain.iter().enumerate().rev() {
        let m = &a.manifest;
        let ranges = if level + 1 == chain.len() { vec![(0, m.image_size)] } else { std::mem::take(&mut pending) };
        for (o, l) in ranges {
            let Some(mut j) = m.frame_at(o) else { continue };
            while j < m.frames.len() && m.frames[j].offset < o + l {
                let f = &m.frames[j];
                match f.kind {
                    FrameKind::Data => used[level].push(j),
                    FrameKind::Zero => {}
                    FrameKind::Base => {
                        let s = f.offset.max(o);
                        let e = (f.offset + f.length).min(o + l);
                        pending.push((s, e - s));
                    }
                }
                j += 1;
            }
        }
        used[level].sort_unstable();
        used[level].dedup();
    }
    if !pending.is_empty() {
        return Err(StreamError::Corrupt("the oldest archive of the chain refers to a base".into()));
    }
    Ok(used)
}

/// Restores the newest archive of `chain` (base first) to `target`.
pub async fn restore(
    chain: Vec<Archive>,
    target: RestoreTarget,
    progress: &Progress,
) -> Result<RestoreReport, StreamError> {
    let started = Instant::now();
    let top = chain.last().expect("chain is never empty").clone();
    progress.total.store(top.manifest.image_size, std::sync::atomic::Ordering::Relaxed);
    let used = resolve(&chain)?;
    let alg = top.manifest.hash_alg();
    let expected = resolved_hashes(&chain);
    let expected_root = archive::hex(&chunks_root(alg, &expected));
    if expected_root != top.manifest.chunks_hash() {
        return Err(StreamError::Corrupt(format!(
            "{}: its chain resolves to chunk-list {} {expected_root}, the manifest says {}",
            top.url(),
            alg.name(),
            top.manifest.chunks_hash()
        )));
    }
    let plan = Restore { chain: &chain, used: &used, top: &top, progress };
    let (written, snapshot_id, image, chunks_hash) = match target {
        RestoreTarget::File(writer) => {
            let (written, image, root) = plan.to_file(writer, expected).await?;
            (written, None, image, root)
        }
        RestoreTarget::Snapshot { port, tags, max_requests } => {
            let (written, id) = plan.to_snapshot(port, tags, max_requests).await?;
            (written, Some(id), ImageHashes::default(), expected_root)
        }
    };
    Ok(RestoreReport {
        archive: top.url(),
        applied: chain.iter().map(|a| a.url()).collect(),
        image_size: top.manifest.image_size,
        bytes_written: written,
        snapshot_id,
        image,
        chunks_hash,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One restore: the chain (oldest first), the frames each archive contributes, the newest.
struct Restore<'a> {
    chain: &'a [Archive],
    used: &'a [Vec<usize>],
    top: &'a Archive,
    progress: &'a Progress,
}

impl Restore<'_> {
    /// Writes every frame into `writer`, reads the file back and commits it only if its
    /// hashes match the manifest's (`expected`: the chunk list); returns (bytes written,
    /// image hashes, chunk-list hash).
    async fn to_file(
        &self,
        writer: Box<dyn ImageWriter>,
        expected: Vec<[u8; 32]>,
    ) -> Result<(u64, ImageHashes, String), StreamError> {
        let m = &self.top.manifest;
        let writer = Arc::new(Mutex::new(writer));
        let size = m.image_size;
        blocking(&writer, move |w| w.set_len(size)).await?;
        let mut written = 0u64;
        for (a, idx) in self.chain.iter().zip(self.used) {
            let w = writer.clone();
            a.frames(idx, self.progress, move |_, f, data| {
                let w = w.clone();
                let offset = f.offset;
                Box::pin(async move {
                    if let Some(d) = data {
                        blocking(&w, move |w| w.write_at(offset, &d)).await?;
                    }
                    Ok(())
                })
            })
            .await?;
            written += idx.iter().map(|&i| a.manifest.frames[i].length).sum::<u64>();
        }
        // Read the file back: its hashes, not the archive's, decide success.
        let back = read_back(&writer, m, expected).await?;
        let root = archive::hex(&chunks_root(m.hash_alg(), &back.chunks));
        let mismatch = |mine: &Option<String>, theirs: &Option<String>| theirs.is_some() && mine != theirs;
        if root != m.chunks_hash()
            || mismatch(&back.image.blake3, &m.image_blake3)
            || mismatch(&back.image.sha256, &m.image_sha256)
        {
            return Err(StreamError::Corrupt(format!(
                "the restored image does not match {}: {} {}, chunk-list {root}",
                self.top.url(),
                m.hash_alg().name(),
                back.image.blake3.as_ref().or(back.image.sha256.as_ref()).map(String::as_str).unwrap_or("-"),
            )));
        }
        blocking(&writer, |w| w.commit()).await?;
        Ok((written, back.image, root))
    }

    /// Writes every frame into a new EBS snapshot (deleted again if anything fails);
    /// returns (bytes written, snapshot id).
    async fn to_snapshot(
        &self,
        port: Arc<dyn SnapshotBlocks>,
        tags: Tags,
        max_requests: usize,
    ) -> Result<(u64, String), StreamError> {
        let m = &self.top.manifest;
        if m.block_size != archive::EBS_BLOCK_SIZE {
            return Err(StreamError::Input(format!(
                "{} has {}-byte blocks; a snapshot needs {}",
                self.top.url(),
                m.block_size,
                archive::EBS_BLOCK_SIZE
            )));
        }
        let size_gib = m.image_size.div_ceil(1u64 << 30).max(1);
        let id = port
            .start_snapshot(size_gib, &format!("restored by bunker from {}", self.top.url()), &tags)
            .await
            .map_err(|e| StreamError::port("starting the snapshot (StartSnapshot)", e))?;
        match self.fill_snapshot(&port, &id, max_requests).await {
            Ok(written) => {
                info!(snapshot_id = %id, archive = %self.top.url(), "restored to a snapshot");
                Ok((written, id))
            }
            Err(e) => {
                if let Err(d) = port.delete_snapshot(&id).await {
                    warn!(snapshot_id = %id, error = %d, "could not delete the unfinished snapshot");
                }
                Err(e)
            }
        }
    }

    async fn fill_snapshot(&self, port: &Arc<dyn SnapshotBlocks>, id: &str, max: usize) -> Result<u64, StreamError> {
        let limiter = Arc::new(Limiter::new(max));
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut written = 0u64;
        for (a, idx) in self.chain.iter().zip(self.used) {
            let (port, id, limiter, count) = (port.clone(), id.to_string(), limiter.clone(), count.clone());
            a.frames(idx, self.progress, move |_, f, data| {
                let (port, id, limiter, count) = (port.clone(), id.clone(), limiter.clone(), count.clone());
                let offset = f.offset;
                Box::pin(async move {
                    let Some(d) = data else { return Ok(()) };
                    put_blocks(port, &id, offset, d, &limiter, &count).await
                })
            })
            .await?;
            written += idx.iter().map(|&i| a.manifest.frames[i].length).sum::<u64>();
        }
        let n = count.load(std::sync::atomic::Ordering::Relaxed);
        port.complete_snapshot(id, n).await.map_err(|e| StreamError::port("completing the snapshot", e))?;
        Ok(written)
    }
}

/// Writes a chunk's non-zero blocks.
async fn put_blocks(
    port: Arc<dyn SnapshotBlocks>,
    id: &str,
    offset: u64,
    data: Arc<Vec<u8>>,
    limiter: &Limiter,
    count: &std::sync::atomic::AtomicU64,
) -> Result<(), StreamError> {
    let bs = archive::EBS_BLOCK_SIZE as usize;
    let blocks: Vec<usize> = (0..data.len().div_ceil(bs)).collect();
    let puts = blocks.into_iter().map(|b| {
        let data = data.clone();
        let port = port.clone();
        async move {
            let end = ((b + 1) * bs).min(data.len());
            let mut block = data[b * bs..end].to_vec();
            block.resize(bs, 0);
            let (block, sum) = tokio::task::spawn_blocking(move || {
                let zero = is_zero(&block);
                let s = if zero { String::new() } else { base64(&sha256(&block)) };
                (block, s)
            })
            .await
            .map_err(|e| StreamError::Internal(e.to_string()))?;
            if sum.is_empty() {
                return Ok(());
            }
            let index = (offset as usize / bs + b) as u64;
            limiter
                .call(None, || port.put_block(id, index, block.clone(), &sum))
                .await
                .map_err(|e| StreamError::port(format!("writing block {index} (PutSnapshotBlock)"), e))?;
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    });
    futures::stream::iter(puts).buffer_unordered(16).collect::<Vec<_>>().await.into_iter().collect()
}

async fn blocking<T: Send + 'static>(
    writer: &Arc<Mutex<Box<dyn ImageWriter>>>,
    f: impl FnOnce(&mut dyn ImageWriter) -> std::io::Result<T> + Send + 'static,
) -> Result<T, StreamError> {
    let w = writer.clone();
    tokio::task::spawn_blocking(move || f(w.lock().expect("writer lock").as_mut()))
        .await
        .map_err(|e| StreamError::Internal(e.to_string()))?
        .map_err(|e| StreamError::Target(e.to_string()))
}

/// A restored file's hashes, read back.
struct ReadBack {
    image: ImageHashes,
    chunks: Vec<[u8; 32]>,
}

/// Reads the written file back: its whole-image hashes and its chunk-list entries, in the
/// manifest's algorithm. In format 2 a zero piece's entry is the plain hash of its zeros, so
/// a chunk the chain says is zero (`expected`) is entered that way when it reads as zeros.
async fn read_back(
    writer: &Arc<Mutex<Box<dyn ImageWriter>>>,
    m: &Manifest,
    expected: Vec<[u8; 32]>,
) -> Result<ReadBack, StreamError> {
    let (size, chunk, alg, want_sha) = (m.image_size, m.chunk_size, m.hash_alg(), m.image_sha256.is_some());
    blocking(writer, move |w| {
        use sha2::Digest;
        let mut sha = (alg == HashAlg::Sha256 || want_sha).then(sha2::Sha256::new);
        let mut tree = ImageTree::default();
        let full_zero = blake::zero_hash(chunk);
        let mut chunks = Vec::new();
        let mut buf = vec![0u8; chunk as usize];
        let mut at = 0;
        while at < size {
            let n = chunk.min(size - at) as usize;
            read_exact_at(w, at, &mut buf[..n])?;
            let piece = &buf[..n];
            if let Some(h) = &mut sha {
                h.update(piece);
            }
            chunks.push(match alg {
                HashAlg::Sha256 => sha256(piece),
                HashAlg::Blake3 => {
                    let cv = blake::chaining_value(at, piece);
                    tree.push(cv, (at == 0).then(|| *blake3::hash(piece).as_bytes()));
                    let zero = if n as u64 == chunk { full_zero } else { blake::zero_hash(n as u64) };
                    if expected.get(chunks.len()) == Some(&zero) && is_zero(piece) {
                        zero
                    } else {
                        cv
                    }
                }
            });
            at += n as u64;
        }
        let blake3 = (alg == HashAlg::Blake3).then(|| tree.finish().map(|h| archive::hex(&h))).flatten();
        let sha256 = sha.map(|h| archive::hex(&h.finalize()));
        Ok(ReadBack { image: ImageHashes { blake3, sha256 }, chunks })
    })
    .await
}

fn read_exact_at(w: &mut dyn ImageWriter, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let k = w.read_at(at + got as u64, &mut buf[got..])?;
        if k == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "restored file is short"));
        }
        got += k;
    }
    Ok(())
}
