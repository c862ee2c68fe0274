//! The archive format, versions 1 and 2 (`docs/FORMAT.md` is the normative text; this module
//! is its executable half): the JSON manifest, the zstd seekable-format seek table, and the
//! frames that stand for unallocated ranges. Version 2 hashes with BLAKE3 where version 1
//! used SHA-256; bunker writes version 2 and reads both.
//!
//! An archive is a concatenation of independent zstd frames, one per chunk of the image, and
//! ends with a skippable frame holding the seek table. Plain `zstd -d` skips the seek table and
//! yields the raw image at full size, so an archive needs no bunker to restore.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `format` field of every manifest.
pub const FORMAT: &str = "bunker-archive";
/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;

/// The hash of a manifest's integrity fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    /// Version 1: SHA-256 of each data chunk, of the whole image, of the chunk list.
    Sha256,
    /// Version 2: BLAKE3. A data chunk's hash is its BLAKE3 chaining value at its image
    /// offset (a subtree of the whole image's BLAKE3 tree), so the whole-image hash — what
    /// `b3sum` prints — is merged from the chunks' hashes instead of read a second time.
    Blake3,
}

impl HashAlg {
    /// The algorithm of a manifest `version`.
    pub fn of_version(version: u32) -> HashAlg {
        if version >= 2 {
            HashAlg::Blake3
        } else {
            HashAlg::Sha256
        }
    }

    /// Its name as the manifest's field names use it.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Blake3 => "blake3",
        }
    }
}
/// EBS block size (the direct APIs' unit).
pub const EBS_BLOCK_SIZE: u64 = 512 * 1024;
/// Default chunk size: 8 EBS blocks. Each data chunk is one zstd frame, the unit of random
/// access and of per-chunk hashing; 4 MiB keeps the cost of restarting the compressor's window
/// per frame near 1 % at level 3 (measured in `benches/export_throughput.sh`).
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * EBS_BLOCK_SIZE;
/// Zero (unallocated) and base runs are cut into frames of at most this many image bytes, so
/// a run's frame stays well inside the seek table's 32-bit sizes.
pub const MAX_RUN_FRAME: u64 = 1 << 30;
/// zstd's frame magic number.
pub const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// The seekable format's skippable-frame magic (`0x184D2A5E`).
pub const SEEK_TABLE_MAGIC: u32 = 0x184D_2A5E;
/// The seekable format's footer magic.
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// zstd's largest block: an RLE block stands for at most this many bytes.
const MAX_BLOCK: u64 = 128 * 1024;

/// What a manifest describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Content {
    /// A raw disk image (EBS snapshot, block device, image file).
    Image,
    /// A tar stream of a directory tree.
    Tar,
    /// DynamoDB items, one `{"Item": {…}}` object in DynamoDB JSON per line (the layout of
    /// AWS's own DynamoDB exports), from a table restored from a backup.
    DynamodbJson,
    /// A `pg_dump --format=custom` stream (restored with `pg_restore`); see the manifest's
    /// `dump` section.
    PgCustom,
    /// A plain SQL dump (`pg_dumpall --globals-only`, `mysqldump`, `mariadb-dump`).
    Sql,
}

impl Content {
    /// Every kind of content.
    pub const ALL: [Content; 5] =
        [Content::Image, Content::Tar, Content::DynamodbJson, Content::PgCustom, Content::Sql];

    /// The archive object's extension: `<name><extension>`.
    pub fn extension(self) -> &'static str {
        match self {
            Content::Image => ".img.zst",
            Content::Tar => ".tar.zst",
            Content::DynamodbJson => ".jsonl.zst",
            Content::PgCustom => ".pgdump.zst",
            Content::Sql => ".sql.zst",
        }
    }
}

/// What a DynamoDB export holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemStats {
    /// Items archived (lines in the stream).
    pub items: u64,
    /// Parallel scan segments that read them.
    pub segments: u32,
    /// The table the backup is of.
    pub table: String,
}

/// Where the data came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// `ebs-snapshot`, `file` or `directory`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Snapshot id, or the path for files and directories.
    pub id: String,
    /// The snapshot's volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    /// Owning account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The snapshot's tags at export time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The AWS Backup recovery point exported, when the source is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_point: Option<crate::vault::PointRef>,
    /// For a file-level export of a disk: the filesystem archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemRef>,
}

/// Where on a disk the filesystem of a file-level export lies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemRef {
    /// Its partition's number (1-based, as Linux numbers them); absent for a filesystem on
    /// the whole disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// The filesystem ("ext4" for ext2, ext3 and ext4).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its first byte on the disk.
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The LVM logical volume ("vg/lv") holding it, on that partition; `start` is then its
    /// first piece's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lv: Option<String>,
}

/// The archive object the manifest describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveObject {
    /// Object key (or file name), relative to the target.
    pub key: String,
    /// Its size in bytes, seek table included.
    pub size: u64,
    /// zstd compression level used.
    pub zstd_level: i32,
}

/// The export an incremental archive applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRef {
    /// The base snapshot id.
    pub snapshot_id: String,
    /// Key of the base's manifest, relative to the same target.
    pub manifest: String,
    /// The base's `chunks_sha256` (a version-1 base), to detect a base that was replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_sha256: Option<String>,
    /// The base's `chunks_blake3` (a version-2 base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_blake3: Option<String>,
}

impl BaseRef {
    /// The base's chunk-list hash, whichever the base's version names it.
    pub fn chunks_hash(&self) -> &str {
        self.chunks_blake3.as_deref().or(self.chunks_sha256.as_deref()).unwrap_or_default()
    }
}

/// File-level export statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TreeStats {
    /// Regular files archived.
    pub files: u64,
    /// Directories archived.
    pub directories: u64,
    /// Bytes of regular-file content.
    pub file_bytes: u64,
    /// Entries skipped (sockets, unreadable files), each named in `skipped`, the first
    /// [`MAX_SKIPPED_NAMED`] of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Entries skipped beyond those named (the manifest stays bounded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_unnamed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TreeStats {
    /// Records a skipped entry: named while fewer than [`MAX_SKIPPED_NAMED`] are, else counted.
    pub fn skip(&mut self, entry: String) {
        if self.skipped.len() < MAX_SKIPPED_NAMED {
            self.skipped.push(entry);
        } else {
            self.skipped_unnamed += 1;
        }
    }
}

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrameKind {
    /// Compressed image data, hashed in `blake3` (version 2) or `sha256` (version 1).
    Data,
    /// Zeros (unallocated); no hash, the frame must decompress to zeros.
    Zero,
    /// Incremental archives only: unchanged since the base; the frame decompresses to zeros,
    /// the data is the base's.
    Base,
}

/// One zstd frame of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Offset of the frame's data in the image.
    pub offset: u64,
    /// Image bytes it stands for.
    pub length: u64,
    /// Offset of the frame in the archive object.
    pub archive_offset: u64,
    /// Compressed length of the frame.
    pub archive_length: u64,
    /// Data, zero or base.
    pub kind: FrameKind,
    /// Version 1: SHA-256 (hex) of the uncompressed data; data frames only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Version 2: BLAKE3 chaining value (hex) of the uncompressed data at `offset` (see
    /// [`HashAlg::Blake3`]); data frames only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

impl Frame {
    /// The data frame's hash, in its manifest's algorithm.
    pub fn hash(&self) -> Option<&str> {
        self.blake3.as_deref().or(self.sha256.as_deref())
    }
}

/// The manifest: a JSON object stored beside the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// `bunker <version>`.
    pub tool: String,
    /// When the export finished (RFC 3339).
    pub created_at: String,
    /// Image or tar.
    pub content: Content,
    /// Where the data came from.
    pub source: Source,
    /// Size of the image (or tar stream) in bytes.
    pub image_size: u64,
    /// The source's block size (EBS: 524288).
    pub block_size: u64,
    /// Chunk size: every data frame covers one chunk (the last may be shorter).
    pub chunk_size: u64,
    /// SHA-256 (hex) of the whole image, as `sha256sum` prints it: always in version 1
    /// (full archives), on request (`--sha256`) in version 2; absent for incremental
    /// archives, whose image is only whole with their base (see the chunk-list hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_sha256: Option<String>,
    /// Version 2: BLAKE3 (hex) of the whole image, as `b3sum` prints it; full archives only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_blake3: Option<String>,
    /// Version 1: SHA-256 over the concatenated 32-byte SHA-256 digests of every
    /// `chunk_size` piece of the full image, in order (zero pieces included): a whole-image
    /// hash that an incremental export can compute without reading unchanged data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_sha256: Option<String>,
    /// Version 2: BLAKE3 over the concatenated 32-byte entries of every `chunk_size` piece
    /// (a data piece's chaining value, a zero piece's plain BLAKE3 of its zeros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_blake3: Option<String>,
    /// The archive object.
    pub archive: ArchiveObject,
    /// For incremental archives, the export they apply to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    /// For tar archives, what went in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<TreeStats>,
    /// DynamoDB exports: the item count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemStats>,
    /// Database dumps: engine, versions, database, the restore command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<crate::dump::DumpInfo>,
    /// Tar archives: the file catalog beside the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<crate::catalog::CatalogRef>,
    /// Every frame, in image order; together they cover the image exactly once.
    pub frames: Vec<Frame>,
}

/// A manifest or archive that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not a bunker manifest at all.
    #[error("not a bunker manifest: {0}")]
    NotAManifest(String),
    /// A newer format than this build reads.
    #[error("manifest format version {0} is newer than this bunker reads ({FORMAT_VERSION}); upgrade bunker")]
    TooNew(u32),
    /// Internally inconsistent.
    #[error("inconsistent manifest: {0}")]
    Inconsistent(String),
    /// The seek table is missing or malformed.
    #[error("bad seek table: {0}")]
    SeekTable(String),
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, FormatError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| FormatError::NotAManifest(format!("not JSON ({e})")))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(FormatError::NotAManifest(format!("no \"format\": \"{FORMAT}\" field")));
        }
        if let Some(v) = value.get("version").and_then(|v| v.as_u64()) {
            if v > u64::from(FORMAT_VERSION) {
                return Err(FormatError::TooNew(v as u32));
            }
        }
        let m: Manifest = serde_json::from_value(value).map_err(|e| FormatError::NotAManifest(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// The algorithm of the integrity fields.
    pub fn hash_alg(&self) -> HashAlg {
        HashAlg::of_version(self.version)
    }

    /// The chunk-list hash (`chunks_blake3` or `chunks_sha256`; checked present by `check`).
    pub fn chunks_hash(&self) -> &str {
        match self.hash_alg() {
            HashAlg::Blake3 => self.chunks_blake3.as_deref(),
            HashAlg::Sha256 => self.chunks_sha256.as_deref(),
        }
        .unwrap_or_default()
    }

    /// The whole-image hash in the manifest's algorithm (full archives only).
    pub fn image_hash(&self) -> Option<&str> {
        match self.hash_alg() {
            HashAlg::Blake3 => self.image_blake3.as_deref(),
            HashAlg::Sha256 => self.image_sha256.as_deref(),
        }
    }

    /// A reference to this manifest (at `key`) as an incremental archive's base.
    pub fn as_base(&self, key: &str) -> BaseRef {
        let (sha, blake) = match self.hash_alg() {
            HashAlg::Blake3 => (None, self.chunks_blake3.clone()),
            HashAlg::Sha256 => (self.chunks_sha256.clone(), None),
        };
        BaseRef { snapshot_id: self.source.id.clone(), manifest: key.into(), chunks_sha256: sha, chunks_blake3: blake }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifest serializes")
    }

    /// Checks the invariants: frames contiguous in the image and in the archive, covering the
    /// image; data frames one chunk each, hashed; base frames only with a base.
    pub fn check(&self) -> Result<(), FormatError> {
        let bad = |s: String| Err(FormatError::Inconsistent(s));
        if self.chunk_size == 0 || self.block_size == 0 || !self.chunk_size.is_multiple_of(self.block_size) {
            return bad(format!(
                "chunk size {} is not a positive multiple of block size {}",
                self.chunk_size, self.block_size
            ));
        }
        self.check_hashes()?;
        let (mut image, mut archive) = (0u64, 0u64);
        for (i, f) in self.frames.iter().enumerate() {
            if f.offset != image || f.archive_offset != archive {
                return bad(format!("frame {i} is not contiguous with the previous one"));
            }
            if f.length == 0 || f.archive_length == 0 {
                return bad(format!("frame {i} is empty"));
            }
            if !f.offset.is_multiple_of(self.chunk_size) {
                return bad(format!("frame {i} does not start on a chunk boundary"));
            }
            let alg = self.hash_alg();
            let own = match alg {
                HashAlg::Blake3 => f.blake3.as_deref(),
                HashAlg::Sha256 => f.sha256.as_deref(),
            };
            let bad_data = f.length > self.chunk_size || own.is_none_or(|h| !is_hex_sha256(h));
            if f.kind == FrameKind::Data && bad_data {
                return bad(format!("data frame {i} is longer than a chunk or has no {}", alg.name()));
            }
            if f.kind == FrameKind::Base && self.base.is_none() {
                return bad(format!("frame {i} refers to a base, none given"));
            }
            image += f.length;
            archive += f.archive_length;
        }
        if image != self.image_size {
            return bad(format!("frames cover {image} bytes, the image has {}", self.image_size));
        }
        if archive >= self.archive.size {
            return bad("frames leave no room for the seek table".into());
        }
        Ok(())
    }

    /// The hash fields the version names are there, well formed; a version-2 chunk is a
    /// power of two (a whole BLAKE3 subtree).
    fn check_hashes(&self) -> Result<(), FormatError> {
        let bad = |s: String| Err(FormatError::Inconsistent(s));
        let hex_ok = |h: &Option<String>| h.as_deref().is_none_or(is_hex_sha256);
        if ![&self.image_sha256, &self.image_blake3, &self.chunks_sha256, &self.chunks_blake3].into_iter().all(hex_ok) {
            return bad("a whole-image or chunk-list hash is not 64 hex digits".into());
        }
        let (own, other) = match self.hash_alg() {
            HashAlg::Blake3 => (&self.chunks_blake3, &self.chunks_sha256),
            HashAlg::Sha256 => (&self.chunks_sha256, &self.chunks_blake3),
        };
        if own.is_none() || other.is_some() {
            let (alg, version) = (self.hash_alg().name(), self.version);
            return bad(format!("version {version} needs chunks_{alg} (and no other chunk-list hash)"));
        }
        let power = self.chunk_size.is_power_of_two() && self.chunk_size >= 1024;
        if self.hash_alg() == HashAlg::Blake3 && !power {
            return bad(format!("chunk size {} is not a power of two of at least 1024", self.chunk_size));
        }
        Ok(())
    }

    /// Index of the frame holding image byte `offset`.
    pub fn frame_at(&self, offset: u64) -> Option<usize> {
        let i = self.frames.partition_point(|f| f.offset + f.length <= offset);
        (i < self.frames.len()).then_some(i)
    }
}

fn is_hex_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes the seek table as a skippable frame: for each frame its compressed and
/// decompressed size (u32 little-endian), then the footer (frame count, descriptor without
/// checksums, seekable magic). See the zstd "seekable format" specification.
pub fn encode_seek_table(frames: &[(u32, u32)]) -> Vec<u8> {
    let payload = frames.len() * 8 + 9;
    let mut out = Vec::with_capacity(payload + 8);
    out.extend_from_slice(&SEEK_TABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload as u32).to_le_bytes());
    for (c, d) in frames {
        out.extend_from_slice(&c.to_le_bytes());
        out.extend_from_slice(&d.to_le_bytes());
    }
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    out
}

/// Checks an archive name (`--name`, or the default from the snapshot id, file or directory):
/// one path component of at most 200 bytes, not empty, not starting with a dot (no hidden
/// files, no `.` or `..`), no `/`, no control characters. `Err` says why and how to fix it.
pub fn check_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.starts_with('.') {
        "starts with a dot (hidden files, `.` and `..` are not archive names)"
    } else if name.contains('/') || name.contains('\\') {
        "contains a path separator (an archive name is one path component)"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else if name.len() > 200 {
        "is longer than 200 bytes"
    } else {
        return Ok(());
    };
    Err(format!("archive name {name:?} {problem}: pass --name with a plain name such as \"disk-2026\""))
}

/// Bytes of a manifest besides its frame entries: source, up to 50 tags, the base, and a
/// file-level export's skipped entries (at most [`MAX_SKIPPED_NAMED`] of up to 4 KiB each).
pub const MANIFEST_FIXED_BYTES: u64 = 8 << 20;
/// Bytes one frame entry takes in a (pretty-printed) manifest at most; about 250 in practice.
pub const MANIFEST_BYTES_PER_FRAME: u64 = 512;
/// `format` field of a file-level export's index.
pub const FILES_INDEX_FORMAT: &str = "bunker-files";

/// Key of the index of a snapshot's file-level export: `<name>.files.json`, written once
/// every filesystem's archive is (so it marks the export finished).
pub fn files_index_key(name: &str) -> String {
    format!("{name}.files.json")
}

/// The index of a snapshot's file-level export (`export.ebs_format = files | both`): which
/// archive holds each filesystem, and which filesystems were not exported and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilesIndex {
    /// Always [`FILES_INDEX_FORMAT`].
    pub format: String,
    /// 1.
    pub version: u32,
    /// The snapshot.
    pub snapshot: String,
    /// The AWS Backup recovery point it is, when exported from a vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_point: Option<crate::vault::PointRef>,
    /// Each filesystem archived: where on the disk, and its archive's manifest key.
    pub filesystems: Vec<IndexedFilesystem>,
    /// Filesystems not archived (one bunker does not read in place, or a damaged one).
    pub not_exported: Vec<SkippedFilesystem>,
}

/// One archived filesystem of a [`FilesIndex`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedFilesystem {
    /// Where on the disk.
    #[serde(flatten)]
    pub filesystem: FilesystemRef,
    /// Its manifest's key, relative to the index's target.
    pub manifest: String,
}

/// One filesystem of a [`FilesIndex`] that was not archived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedFilesystem {
    /// Where on the disk.
    #[serde(flatten)]
    pub filesystem: FilesystemRef,
    /// Why.
    pub reason: String,
}

/// Skipped entries a file-level export names; the rest are counted in one last entry.
pub const MAX_SKIPPED_NAMED: usize = 1000;
/// Length of the seekable-format footer: frame count, descriptor, magic.
pub const SEEK_FOOTER_LEN: u64 = 9;

/// The largest manifest an archive with `frames` frames can have. A larger one is not read
/// (a manifest is untrusted input; reading it whole must not exhaust memory).
pub fn max_manifest_bytes(frames: u64) -> u64 {
    MANIFEST_FIXED_BYTES.saturating_add(frames.saturating_mul(MANIFEST_BYTES_PER_FRAME))
}

/// The frame count of an archive of `archive_size` bytes, from its last
/// [`SEEK_FOOTER_LEN`] bytes; the table it announces must fit in the object.
pub fn seek_footer_frames(footer: &[u8], archive_size: u64) -> Result<u64, FormatError> {
    let err = |s: &str| Err(FormatError::SeekTable(s.to_string()));
    if footer.len() as u64 != SEEK_FOOTER_LEN {
        return err("object too short to end with a seek table");
    }
    if u32::from_le_bytes(footer[5..9].try_into().expect("4 bytes")) != SEEKABLE_MAGIC {
        return err("no seekable-format footer (not a bunker archive, or truncated)");
    }
    let frames = u64::from(u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")));
    if frames * 8 + 17 > archive_size {
        return err("seek table announces more frames than the object can hold");
    }
    Ok(frames)
}

/// Reads the seek table from the end of an archive. `tail` is the object's last bytes (at
/// least the whole table). Returns (compressed, decompressed) sizes and the table's length.
pub fn decode_seek_table(tail: &[u8]) -> Result<(Vec<(u32, u32)>, usize), FormatError> {
    let err = |s: &str| Err(FormatError::SeekTable(s.to_string()));
    if tail.len() < 17 {
        return err("object too short to end with a seek table");
    }
    let n = tail.len();
    let u32_at = |i: usize| u32::from_le_bytes(tail[i..i + 4].try_into().expect("4 bytes"));
    if u32_at(n - 4) != SEEKABLE_MAGIC {
        return err("no seekable-format footer (not a bunker archive, or truncated)");
    }
    if tail[n - 5] & 0x80 != 0 {
        return err("seek table with checksums is not written by bunker");
    }
    let count = u32_at(n - 9) as usize;
    let table_len = count * 8 + 9 + 8;
    if table_len > n {
        return err("seek table longer than the bytes given");
    }
    let start = n - table_len;
    if u32_at(start) != SEEK_TABLE_MAGIC || u32_at(start + 4) as usize != count * 8 + 9 {
        return err("seek table frame header does not match its footer");
    }
    let entries = (0..count).map(|i| (u32_at(start + 8 + i * 8), u32_at(start + 12 + i * 8))).collect();
    Ok((entries, table_len))
}

/// A zstd frame that decompresses to `length` zero bytes, made of RLE blocks: 4 bytes per
/// 128 KiB (1/32768 of the image), no compressor involved. The window is 128 KiB so decoders
/// allocate little whatever the length.
pub fn zero_frame(length: u64) -> Vec<u8> {
    let blocks = length.div_ceil(MAX_BLOCK).max(1);
    let mut out = Vec::with_capacity(14 + blocks as usize * 4);
    out.extend_from_slice(&ZSTD_MAGIC.to_le_bytes());
    // Frame header descriptor: 8-byte content size, not single-segment, no checksum, no dict.
    out.push(0b1100_0000);
    // Window descriptor: exponent 7 → 2^(10+7) = 128 KiB.
    out.push(7 << 3);
    out.extend_from_slice(&length.to_le_bytes());
    let mut left = length;
    for b in 0..blocks {
        let size = left.min(MAX_BLOCK);
        left -= size;
        let last = u32::from(b + 1 == blocks);
        let header = last | (1 << 1) | ((size as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

/// Frames a run of `length` zero (or base) bytes starting at chunk-aligned `offset` is cut
/// into: `(offset, length)` pieces of at most [`MAX_RUN_FRAME`] bytes.
pub fn run_pieces(offset: u64, length: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < length {
        let n = (length - at).min(MAX_RUN_FRAME);
        out.push((offset + at, n));
        at += n;
    }
    out
}

/// The multipart part schedule: the target size of part `number` (1-based). Parts start at
/// 8 MiB and double every 1,000 parts (capped at 4 GiB), so 10,000 parts hold about 8 TiB,
/// more than S3's 5 TiB object limit, while archives up to 7.8 GiB use 8 MiB parts.
pub fn part_target(number: u32) -> u64 {
    let doublings = (number.saturating_sub(1) / 1000).min(9);
    (8u64 << 20) << doublings
}

/// Bytes the first `parts` parts of the schedule can hold.
pub fn schedule_capacity(parts: u32) -> u64 {
    (1..=parts).map(part_target).sum()
}

#[cfg(test)]
mod name_tests {
    use super::check_name;

    #[test]
    fn archive_names_are_one_plain_component() {
        for ok in ["snap-0123456789abcdef0", "disk.img", "root", "a-b_c.d"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "../escaped", "a/b", ".hidden", "x\ny", "a\\b", &"x".repeat(201)] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains("--name"), "{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_table_round_trips_and_rejects_garbage() {
        let frames = vec![(10, 4 << 20), (200, 1 << 30), (7, 5)];
        let mut bytes = b"leading frames".to_vec();
        bytes.extend(encode_seek_table(&frames));
        let (back, len) = decode_seek_table(&bytes).unwrap();
        assert_eq!(back, frames);
        assert_eq!(len, 3 * 8 + 17);
        assert!(decode_seek_table(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_seek_table(&[0u8; 64]).is_err());
    }

    #[test]
    fn zero_frame_is_tiny_and_sized() {
        let f = zero_frame(1 << 30);
        assert_eq!(f.len(), 14 + 8192 * 4);
        assert_eq!(zero_frame(1).len(), 18);
        // Last block flag only on the last block.
        let last = u32::from_le_bytes([f[f.len() - 4], f[f.len() - 3], f[f.len() - 2], 0]);
        assert_eq!(last & 1, 1);
        assert_eq!(f[14] & 1, 0);
    }

    #[test]
    fn schedule_fits_the_largest_s3_object_in_10000_parts() {
        assert!(schedule_capacity(10_000) > 5 << 40);
        assert_eq!(part_target(1), 8 << 20);
        assert_eq!(part_target(1001), 16 << 20);
        assert!(part_target(10_000) <= 5 << 30, "S3 parts are at most 5 GiB");
    }

    #[test]
    fn run_pieces_cover_the_run() {
        let p = run_pieces(4096, 3 * MAX_RUN_FRAME + 5);
        assert_eq!(p.len(), 4);
        assert_eq!(p.iter().map(|x| x.1).sum::<u64>(), 3 * MAX_RUN_FRAME + 5);
        assert_eq!(p[3].0, 4096 + 3 * MAX_RUN_FRAME);
    }
}
