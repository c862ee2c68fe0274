//! The stream actors: export an image (EBS snapshot, file, tar stream) as a seekable zstd
//! archive, and read one back to verify or restore it.
//!
//! ```text
//!  reader ──(bounded)──▶ dispatcher ──(bounded)──▶ compressor threads ──▶ assembler ──▶ part uploads
//!  (EBS direct APIs,       │  zero runs: RLE frames, no compressor         (in order,     (≤ N in flight,
//!   file, tar)             └──▶ image hasher thread (whole-image SHA-256)    cut parts)     CRC32C each)
//! ```
//!
//! Memory is bounded by [`Tuning`]: chunks in flight (read, queued, compressing, waiting to be
//! put in order) hold a permit each, and parts in flight are capped; nothing grows with the
//! volume size except 56 bytes of manifest per frame.

pub mod archive_reader;
pub mod blake;
pub mod child_reader;
pub mod ebs_reader;
pub mod export;
pub mod export_job;
pub mod exporter_actor;
mod hasher;
pub mod items_reader;
pub mod limiter;
pub mod snapshot_device;
mod spill;

use std::sync::atomic::{AtomicU64, Ordering};

use bunker_protocol::archive::FormatError;

use crate::ports::PortError;

/// What a source reader yields, in image order.
#[derive(Debug)]
pub enum SourceItem {
    /// One chunk of data at `offset` (chunk-aligned); shorter than a chunk only at the end.
    Data {
        /// Image offset.
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// `length` bytes of zeros (unallocated).
    Zero {
        /// Image offset.
        offset: u64,
        /// Bytes.
        length: u64,
    },
    /// Incremental exports: `length` bytes unchanged since the base.
    Base {
        /// Image offset.
        offset: u64,
        /// Bytes.
        length: u64,
    },
}

impl SourceItem {
    /// Image offset of the item.
    pub fn offset(&self) -> u64 {
        match self {
            SourceItem::Data { offset, .. } | SourceItem::Zero { offset, .. } | SourceItem::Base { offset, .. } => {
                *offset
            }
        }
    }

    /// Image bytes it stands for.
    pub fn len(&self) -> u64 {
        match self {
            SourceItem::Data { bytes, .. } => bytes.len() as u64,
            SourceItem::Zero { length, .. } | SourceItem::Base { length, .. } => *length,
        }
    }

    /// Whether it stands for no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A failure of an export, verify or restore.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamError {
    /// An AWS (or store) call failed.
    #[error("{what}: {error}")]
    Port {
        /// What was being done.
        what: String,
        /// The port's error (in the message, not a `source`, so it is printed once).
        error: PortError,
    },
    /// Bad input from the user: names the input and the fix.
    #[error("{0}")]
    Input(String),
    /// The source could not be read.
    #[error("reading the source: {0}")]
    Source(String),
    /// A manifest or seek table does not follow the format.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A chunk failed verification.
    #[error("chunk {chunk} (image offset {offset}, archive offset {archive_offset}): {reason}")]
    BadChunk {
        /// Frame index in the manifest.
        chunk: usize,
        /// Image offset.
        offset: u64,
        /// Offset of its frame in the archive object.
        archive_offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The archive as a whole does not match its manifest.
    #[error("{0}")]
    Corrupt(String),
    /// The restore target could not be written.
    #[error("writing the restore target: {0}")]
    Target(String),
    /// A pipeline stage stopped unexpectedly (a bug: reported, never silent).
    #[error("pipeline stage failed: {0}")]
    Internal(String),
}

impl StreamError {
    /// Wraps a port error with what was being done.
    pub fn port(what: impl Into<String>, source: PortError) -> StreamError {
        StreamError::Port { what: what.into(), error: source }
    }

    /// Whether rerunning can never succeed as asked: bad input, a format violation, a target
    /// holding something that must be removed first, or an AWS answer that says not found,
    /// invalid or not allowed. Such a queue command is dead-lettered at once.
    pub fn is_permanent(&self) -> bool {
        use crate::ports::ErrorKind;
        match self {
            StreamError::Input(_) | StreamError::Format(_) | StreamError::Corrupt(_) => true,
            StreamError::Port { error, .. } => {
                matches!(error.kind, ErrorKind::NotFound | ErrorKind::Invalid | ErrorKind::AccessDenied)
            }
            _ => false,
        }
    }

    /// Whether rerunning later may succeed (keep a partial upload for resume).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StreamError::Port { error, .. } if error.kind.is_retryable())
    }
}

/// Sizes of the pipeline's buffers: what bounds its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Chunks between the reader and the uploader at once (read, queued, compressing, or
    /// waiting for an earlier chunk).
    pub chunks_in_flight: usize,
    /// Capacity of the reader's and the compressors' channels.
    pub channel_capacity: usize,
    /// Compressor threads.
    pub compress_threads: usize,
    /// Multipart parts uploading at once.
    pub parts_in_flight: usize,
    /// Concurrent GetSnapshotBlock / PutSnapshotBlock calls (the most; adaptive below).
    pub block_requests: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Tuning {
            chunks_in_flight: Tuning::CHUNKS_IN_FLIGHT,
            channel_capacity: Tuning::CHANNEL_CAPACITY,
            compress_threads: cores,
            parts_in_flight: Tuning::PARTS_IN_FLIGHT,
            block_requests: Tuning::BLOCK_REQUESTS,
        }
    }
}

impl Tuning {
    /// Default chunks in the pipeline at once (memory: about 2 × this × chunk size).
    pub const CHUNKS_IN_FLIGHT: usize = 8;
    /// Default capacity of each channel between stages.
    pub const CHANNEL_CAPACITY: usize = 4;
    /// Default multipart parts uploading at once.
    pub const PARTS_IN_FLIGHT: usize = 2;
    /// Default ceiling of concurrent GetSnapshotBlock calls (adaptive below it).
    pub const BLOCK_REQUESTS: usize = 64;
    /// Default zstd level.
    pub const LEVEL: i32 = 3;

    /// Rejects zero sizes (a zero-capacity stage would never move).
    pub fn check(&self) -> Result<(), StreamError> {
        let fields = [
            ("chunks in flight", self.chunks_in_flight),
            ("channel capacity", self.channel_capacity),
            ("compressor threads", self.compress_threads),
            ("parts in flight", self.parts_in_flight),
            ("block requests", self.block_requests),
        ];
        for (name, v) in fields {
            if v == 0 {
                return Err(StreamError::Input(format!("{name} is 0; it must be at least 1")));
            }
        }
        Ok(())
    }
}

/// Live counters of one export or restore, read by the CLI's progress bar and by `/metrics`.
#[derive(Debug, Default)]
pub struct Progress {
    /// Image bytes expected (0 while unknown).
    pub total: AtomicU64,
    /// Image bytes read (holes included) and handed to the pipeline.
    pub bytes_in: AtomicU64,
    /// Archive bytes written to the store by this run.
    pub bytes_out: AtomicU64,
    /// Image bytes skipped because an earlier run already uploaded them.
    pub resumed: AtomicU64,
    /// Blocks re-read after a checksum mismatch.
    pub refetched: AtomicU64,
    /// Requests throttled by AWS.
    pub throttled: AtomicU64,
}

impl Progress {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Base64 (standard alphabet, padded) of `bytes`: the encoding of AWS checksums.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Base64 of the big-endian CRC32C (Castagnoli) of `data`: S3's `x-amz-checksum-crc32c`.
/// Transport integrity of a part, at memory speed; content integrity is the manifest's
/// SHA-256s.
pub fn crc32c(data: &[u8]) -> String {
    let c = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32;
    base64(&c.to_be_bytes())
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// The SHA-256 of `len` zero bytes, computed without allocating `len` bytes.
pub fn zero_sha256(len: u64) -> [u8; 32] {
    use sha2::Digest;
    let zeros = [0u8; 64 * 1024];
    let mut h = sha2::Sha256::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        h.update(&zeros[..n]);
        left -= n as u64;
    }
    h.finalize().into()
}

/// Whether every byte is zero (vectorised comparison against a zero slice).
pub fn is_zero(data: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    data.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn crc32c_matches_the_check_value() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720 test vector).
        assert_eq!(crc32c(b"123456789"), base64(&0xE306_9283u32.to_be_bytes()));
    }

    #[test]
    fn zero_hash_matches_hashing_zeros() {
        for len in [0u64, 1, 65_536, 65_537, 524_288 * 3 + 7] {
            assert_eq!(zero_sha256(len), sha256(&vec![0u8; len as usize]), "len {len}");
        }
        assert!(is_zero(&[0u8; 10_000]));
        let mut v = vec![0u8; 10_000];
        v[9_999] = 1;
        assert!(!is_zero(&v));
    }
}

#[cfg(test)]
mod pipeline_tests;
