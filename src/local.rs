//! Local I/O behind the stream ports: a directory as an archive store (`file:///dir`), image
//! files and block devices as sources, a directory tree as a tar stream, and restore files.
//! Everything here blocks and runs on dedicated threads or `spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bunker_actors::ports::{ArchiveStore, ErrorKind, ImageWriter, PortError, StoredPart};
use bunker_actors::stream::{crc32c, is_zero, SourceItem, StreamError};
use bunker_protocol::archive::TreeStats;
use bunker_protocol::catalog::{CatalogEntry, ContentHash, EntryKind};
use tokio::sync::mpsc;

use crate::files;

fn io_error(what: &str, path: &Path, e: io::Error) -> PortError {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => ErrorKind::AccessDenied,
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut => ErrorKind::Transient,
        _ => ErrorKind::Invalid,
    };
    PortError::new(kind, None, format!("{what} {}: {e}", path.display()))
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PortError> + Send + 'static,
) -> Result<T, PortError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| PortError::new(ErrorKind::Internal, None, e.to_string()))?
}

/// A directory holding archives: the same layout as under an S3 prefix. A multipart upload
/// is a `<key>.upload/` directory: the object's bytes written in place (`data`, at each
/// part's offset) and one record per stored part; completing it renames `data` to `<key>`.
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store rooted at `root` (created when missing).
    pub fn new(root: PathBuf) -> DirStore {
        DirStore { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn upload_dir(&self, key: &str) -> PathBuf {
        self.root.join(format!("{key}.upload"))
    }
}

/// Replaces the file at `path` below `root` atomically, creating its directory (0700).
fn write_under(root: &Path, path: &Path, data: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        files::ensure_dir_under(root, dir)?;
    }
    files::write_atomic(path, data)
}

#[async_trait]
impl ArchiveStore for DirStore {
    fn url(&self, key: &str) -> String {
        format!("file://{}", self.path(key).display())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, PortError> {
        let p = self.path(key);
        blocking(move || match fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", &p, e)),
        })
        .await
    }

    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, PortError> {
        let p = self.path(key);
        blocking(move || {
            let f = File::open(&p).map_err(|e| io_error("opening", &p, e))?;
            let mut buf = vec![0u8; len as usize];
            let mut got = 0;
            while got < buf.len() {
                let n = f.read_at(&mut buf[got..], offset + got as u64).map_err(|e| io_error("reading", &p, e))?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            buf.truncate(got);
            Ok(buf)
        })
        .await
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), PortError> {
        let (p, root) = (self.path(key), self.root.clone());
        blocking(move || write_under(&root, &p, &data).map_err(|e| io_error("writing", &p, e))).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), PortError> {
        let paths: Vec<PathBuf> = keys.iter().map(|k| self.path(k)).collect();
        let root = self.root.clone();
        blocking(move || {
            for p in &paths {
                match fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("deleting", p, e)),
                }
                // Remove directories the deletion left empty (journals), never the root.
                let mut dir = p.parent();
                while let Some(d) = dir.filter(|d| d.starts_with(&root) && *d != root.as_path()) {
                    if fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            let (dir, _) = prefix.rsplit_once('/').unwrap_or(("", ""));
            let base = root.join(dir);
            let mut keys = Vec::new();
            let entries = match fs::read_dir(&base) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(keys),
                Err(e) => return Err(io_error("listing", &base, e)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Temporary files of atomic writes start with a dot; archive names never do.
                let hidden = name.starts_with('.');
                let key = if dir.is_empty() { name } else { format!("{dir}/{name}") };
                if key.starts_with(&prefix) && entry.file_type().is_ok_and(|t| t.is_file()) && !hidden {
                    keys.push(key);
                }
            }
            keys.sort();
            Ok(keys)
        })
        .await
    }

    async fn find_upload(&self, key: &str) -> Result<Option<String>, PortError> {
        let id = self.upload_dir(key).join("id");
        blocking(move || match fs::read_to_string(&id) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", &id, e)),
        })
        .await
    }

    async fn start_upload(&self, key: &str) -> Result<String, PortError> {
        let dir = self.upload_dir(key);
        let root = self.root.clone();
        blocking(move || {
            if !root.is_dir() {
                return Err(PortError::new(
                    ErrorKind::NotFound,
                    None,
                    format!("{} is not a directory (create it first)", root.display()),
                ));
            }
            let id = format!("{}-{}", std::process::id(), jiff::Timestamp::now().as_nanosecond());
            // An abandoned upload of the same key (a symlink there is removed, not followed).
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&dir).map_err(|e| io_error("removing", &dir, e))?,
                Ok(_) => fs::remove_file(&dir).map_err(|e| io_error("removing", &dir, e))?,
                Err(_) => {}
            }
            files::ensure_dir_under(&root, &dir).map_err(|e| io_error("creating", &dir, e))?;
            files::create_new(&dir.join("data")).map_err(|e| io_error("creating", &dir, e))?;
            files::write_atomic(&dir.join("id"), id.as_bytes()).map_err(|e| io_error("writing", &dir, e))?;
            Ok(id)
        })
        .await
    }

    async fn list_parts(&self, key: &str, upload: &str) -> Result<Vec<StoredPart>, PortError> {
        let dir = self.upload_dir(key);
        let upload = upload.to_string();
        blocking(move || {
            let id = fs::read_to_string(dir.join("id")).map_err(|e| io_error("reading", &dir, e))?;
            if id.trim() != upload {
                return Err(PortError::new(ErrorKind::NotFound, Some("NoSuchUpload"), format!("no upload {upload}")));
            }
            let mut parts = Vec::new();
            for entry in fs::read_dir(&dir).map_err(|e| io_error("listing", &dir, e))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(n) = name.strip_prefix("part-").and_then(|n| n.parse::<u32>().ok()) else { continue };
                let text = fs::read_to_string(entry.path()).map_err(|e| io_error("reading", &entry.path(), e))?;
                let mut it = text.split_whitespace();
                let (Some(size), Some(sum)) = (it.next().and_then(|s| s.parse().ok()), it.next()) else { continue };
                parts.push(StoredPart { number: n, size, etag: sum.to_string(), crc32c: Some(sum.to_string()) });
            }
            parts.sort_by_key(|p| p.number);
            Ok(parts)
        })
        .await
    }

    async fn upload_part(
        &self,
        key: &str,
        _upload: &str,
        number: u32,
        offset: u64,
        data: bytes::Bytes,
        sum: &str,
    ) -> Result<StoredPart, PortError> {
        let dir = self.upload_dir(key);
        let sum = sum.to_string();
        blocking(move || {
            if crc32c(&data) != sum {
                return Err(PortError::new(
                    ErrorKind::Invalid,
                    Some("BadDigest"),
                    "part checksum does not match its bytes",
                ));
            }
            let path = dir.join("data");
            let f = files::open_existing(&path).map_err(|e| io_error("opening", &path, e))?;
            f.write_all_at(&data, offset).map_err(|e| io_error("writing", &path, e))?;
            f.sync_data().map_err(|e| io_error("syncing", &path, e))?;
            let rec = dir.join(format!("part-{number:05}"));
            files::write_atomic(&rec, format!("{} {sum}\n", data.len()).as_bytes())
                .map_err(|e| io_error("writing", &rec, e))?;
            Ok(StoredPart { number, size: data.len() as u64, etag: sum.clone(), crc32c: Some(sum) })
        })
        .await
    }

    async fn complete_upload(&self, key: &str, _upload: &str, parts: &[StoredPart]) -> Result<(), PortError> {
        let dir = self.upload_dir(key);
        let target = self.path(key);
        let size: u64 = parts.iter().map(|p| p.size).sum();
        let contiguous = parts.iter().enumerate().all(|(i, p)| p.number as usize == i + 1);
        blocking(move || {
            if !contiguous {
                return Err(PortError::new(ErrorKind::Invalid, Some("InvalidPartOrder"), "parts are not 1..n"));
            }
            let data = dir.join("data");
            let f = files::open_existing(&data).map_err(|e| io_error("opening", &data, e))?;
            f.set_len(size).map_err(|e| io_error("truncating", &data, e))?;
            f.sync_all().map_err(|e| io_error("syncing", &data, e))?;
            fs::rename(&data, &target).map_err(|e| io_error("renaming", &target, e))?;
            fs::remove_dir_all(&dir).map_err(|e| io_error("removing", &dir, e))
        })
        .await
    }

    async fn abort_upload(&self, key: &str, _upload: &str) -> Result<(), PortError> {
        let dir = self.upload_dir(key);
        blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(PortError::new(
                ErrorKind::NotFound,
                Some("NoSuchUpload"),
                format!("no upload at {}", dir.display()),
            )),
            Err(e) => Err(io_error("removing", &dir, e)),
        })
        .await
    }
}

/// Size of a regular file or block device.
pub fn source_size(path: &Path) -> io::Result<u64> {
    let meta = fs::metadata(path)?;
    if meta.file_type().is_block_device() {
        File::open(path)?.seek(SeekFrom::End(0))
    } else if meta.is_file() {
        Ok(meta.len())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file or block device"))
    }
}

/// Reads an image file or block device from `start` on a dedicated thread: chunks of zeros
/// (and holes, found with SEEK_DATA without reading them) become zero runs.
pub fn image_reader(
    path: PathBuf,
    size: u64,
    chunk: u64,
    start: u64,
    capacity: usize,
) -> mpsc::Receiver<Result<SourceItem, StreamError>> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let spawned = std::thread::Builder::new().name("bunker-read".into()).spawn({
        let tx = tx.clone();
        move || {
            if let Err(e) = read_image(&path, size, chunk, start, &tx) {
                let _closed = tx.blocking_send(Err(e));
            }
        }
    });
    if let Err(e) = spawned {
        let _closed = tx.try_send(Err(StreamError::Internal(format!("cannot start the reader thread: {e}"))));
    }
    rx
}

fn read_image(
    path: &Path,
    size: u64,
    chunk: u64,
    start: u64,
    tx: &mpsc::Sender<Result<SourceItem, StreamError>>,
) -> Result<(), StreamError> {
    let err = |e: io::Error| StreamError::Source(format!("{}: {e}", path.display()));
    let file = File::open(path).map_err(err)?;
    let send =
        |item: SourceItem| tx.blocking_send(Ok(item)).map_err(|_| StreamError::Internal("pipeline closed".into()));
    let mut zero_from: Option<u64> = None;
    let mut at = start;
    while at < size {
        // Holes: jump to the next data without reading (regular files on most filesystems).
        match rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(at)) {
            Ok(d) if d > at => {
                let next = (d / chunk * chunk).min(size);
                if next > at {
                    zero_from.get_or_insert(at);
                    at = next;
                    continue;
                }
            }
            Err(rustix::io::Errno::NXIO) => {
                zero_from.get_or_insert(at);
                break;
            }
            _ => {}
        }
        let n = chunk.min(size - at) as usize;
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let k = file.read_at(&mut buf[got..], at + got as u64).map_err(err)?;
            if k == 0 {
                return Err(StreamError::Source(format!(
                    "{} ended at byte {} of {size}",
                    path.display(),
                    at + got as u64
                )));
            }
            got += k;
        }
        if is_zero(&buf) {
            zero_from.get_or_insert(at);
        } else {
            if let Some(z) = zero_from.take() {
                send(SourceItem::Zero { offset: z, length: at - z })?;
            }
            send(SourceItem::Data { offset: at, bytes: buf })?;
        }
        at += n as u64;
    }
    if let Some(z) = zero_from {
        send(SourceItem::Zero { offset: z, length: size - z })?;
    }
    Ok(())
}

/// Cuts a byte stream into chunks for the pipeline.
pub(crate) struct ChunkWriter<'a> {
    tx: &'a mpsc::Sender<Result<SourceItem, StreamError>>,
    chunk: usize,
    buf: Vec<u8>,
    offset: u64,
}

impl ChunkWriter<'_> {
    /// A writer sending `chunk`-byte items to `tx`.
    pub(crate) fn new(tx: &mpsc::Sender<Result<SourceItem, StreamError>>, chunk: u64) -> ChunkWriter<'_> {
        ChunkWriter { tx, chunk: chunk as usize, buf: Vec::with_capacity(chunk as usize), offset: 0 }
    }

    /// Bytes written so far (the offset of the next byte in the stream).
    pub(crate) fn position(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }

    /// Sends what is buffered (the last, short chunk at the end).
    pub(crate) fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk));
        let len = bytes.len() as u64;
        self.tx
            .blocking_send(Ok(SourceItem::Data { offset: self.offset, bytes }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "pipeline closed"))?;
        self.offset += len;
        Ok(())
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams a tar of `dir` (sorted, symlinks stored as links, a file's further hard links as
/// links to its first path, special files skipped and named in the stats) as chunks on a
/// dedicated thread, listing every entry in `catalog`: its metadata, a regular file's
/// SHA-256 and the offset of its first header in the stream.
pub fn tar_reader(
    dir: PathBuf,
    chunk: u64,
    capacity: usize,
    stats: Arc<Mutex<TreeStats>>,
    catalog: Arc<Mutex<Vec<CatalogEntry>>>,
) -> mpsc::Receiver<Result<SourceItem, StreamError>> {
    let what = dir.display().to_string();
    tar_thread("bunker-tar", what, chunk, capacity, move |b| {
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Complete);
        let mut walker = Walker { stats: &stats, catalog: &catalog, links: HashMap::new() };
        // Entries are named relative to `dir` without a `./` prefix: the tar crate drops it
        // from short names but keeps it in GNU long names, and GNU tar then misses a long
        // directory's delayed mtime.
        walker.walk(b, &dir, Path::new(""))
    })
}

/// A tar builder writing chunks to the pipeline.
pub(crate) type TarBuilder<'b, 'c> = tar::Builder<&'b mut ChunkWriter<'c>>;

/// Runs `write` on a dedicated thread named `name`, into a tar stream cut into `chunk`-byte
/// items; a failure ends the stream with an error naming `what`.
pub(crate) fn tar_thread(
    name: &str,
    what: String,
    chunk: u64,
    capacity: usize,
    write: impl FnOnce(&mut TarBuilder<'_, '_>) -> io::Result<()> + Send + 'static,
) -> mpsc::Receiver<Result<SourceItem, StreamError>> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let spawned = std::thread::Builder::new().name(name.into()).spawn({
        let tx = tx.clone();
        move || {
            let mut w = ChunkWriter::new(&tx, chunk);
            let result = (|| {
                let mut b = tar::Builder::new(&mut w);
                write(&mut b)?;
                b.into_inner()?.flush_chunk()
            })();
            if let Err(e) = result {
                let _closed = tx.blocking_send(Err(StreamError::Source(format!("{what}: {e}"))));
            }
        }
    });
    if let Err(e) = spawned {
        let _closed = tx.try_send(Err(StreamError::Internal(format!("cannot start the {name} thread: {e}"))));
    }
    rx
}

/// The hash of a file's contents a catalog entry records: BLAKE3 (written), or SHA-256 (to
/// check entries of version 1 catalogs).
pub(crate) enum ContentHasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl ContentHasher {
    pub(crate) fn new(kind: ContentHash) -> ContentHasher {
        match kind {
            ContentHash::Blake3 => ContentHasher::Blake3(Box::default()),
            ContentHash::Sha256 => ContentHasher::Sha256(sha2::Sha256::default()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Blake3(h) => {
                h.update(data);
            }
            ContentHasher::Sha256(h) => sha2::Digest::update(h, data),
        }
    }

    /// The digest, lowercase hex.
    pub(crate) fn finish(self) -> String {
        match self {
            ContentHasher::Blake3(h) => h.finalize().to_hex().to_string(),
            ContentHasher::Sha256(h) => bunker_protocol::archive::hex(&sha2::Digest::finalize(h)),
        }
    }
}

/// A reader that hashes what passes through it.
pub(crate) struct Hashing<R> {
    pub(crate) inner: R,
    pub(crate) hasher: ContentHasher,
}

impl<R: io::Read> Hashing<R> {
    /// Hashes `inner` with the catalog's hash (BLAKE3).
    pub(crate) fn catalog(inner: R) -> Hashing<R> {
        Hashing { inner, hasher: ContentHasher::new(ContentHash::Blake3) }
    }
}

impl<R: io::Read> io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes a regular file's entry; returns the BLAKE3 of its contents.
fn append_regular(
    b: &mut TarBuilder<'_, '_>,
    rel: &Path,
    meta: &fs::Metadata,
    mut header: tar::Header,
    mut file: File,
) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    if meta.blocks() * 512 >= meta.len() {
        let mut reader = Hashing::catalog(io::Read::take(file, meta.len()));
        b.append_data(&mut header, rel, &mut reader)?;
        return Ok(reader.hasher.finish());
    }
    // Holes: the tar crate writes a GNU sparse entry (SEEK_DATA / SEEK_HOLE), only the data
    // on tape; the catalog hashes the whole contents in a pass of its own.
    b.append_file(rel, &mut file)?;
    io::Seek::rewind(&mut file)?;
    let mut reader = Hashing::catalog(io::Read::take(file, meta.len()));
    io::copy(&mut reader, &mut io::sink())?;
    Ok(reader.hasher.finish())
}

/// Writes `path`'s extended attributes (not followed through a symlink) as a pax header
/// before its entry: `SCHILY.xattr.NAME` records, as GNU tar's `--xattrs` writes and
/// restores them (ACLs, SELinux labels, file capabilities). Nothing where it has none, or
/// the filesystem keeps none.
fn append_xattrs(b: &mut TarBuilder<'_, '_>, path: &Path) -> io::Result<()> {
    let records = xattrs(path)?;
    if records.is_empty() {
        return Ok(());
    }
    let data = pax_records(records.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice())));
    let mut h = tar::Header::new_ustar();
    h.set_path("././@PaxHeader")?;
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, data.as_slice())
}

/// `path`'s extended attributes, by name (names that are not UTF-8, which pax cannot carry,
/// are left out with a warning).
fn xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    use rustix::io::Errno;
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(e) if e == Errno::NOTSUP => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, names.as_mut_slice())?;
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|c| *c == 0).filter(|n| !n.is_empty()) {
        let Ok(key) = std::str::from_utf8(name) else {
            tracing::warn!(path = %path.display(), "an extended attribute whose name is not UTF-8 was not archived");
            continue;
        };
        let mut value = vec![0u8; rustix::fs::lgetxattr_query(path, key)?];
        let n = rustix::fs::lgetxattr(path, key, value.as_mut_slice())?;
        value.truncate(n);
        out.push((key.to_string(), value));
    }
    out.sort();
    Ok(out)
}

/// A pax extended header's data: `"<len> <key>=<value>\n"` records, `len` counting the whole
/// record, its own digits included.
fn pax_records<'v>(records: impl Iterator<Item = (String, &'v [u8])>) -> Vec<u8> {
    let mut data = Vec::new();
    for (key, value) in records {
        let base = key.len() + value.len() + 3; // the space, '=' and '\n'
        let mut len = base + base.to_string().len();
        if len.to_string().len() > base.to_string().len() {
            len += 1;
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    data
}

/// The state of one directory walk: what it counted, listed, and the first path of each
/// multiply linked file.
struct Walker<'a> {
    stats: &'a Mutex<TreeStats>,
    catalog: &'a Mutex<Vec<CatalogEntry>>,
    links: HashMap<(u64, u64), String>,
}

impl Walker<'_> {
    fn walk(&mut self, b: &mut TarBuilder<'_, '_>, dir: &Path, name: &Path) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let (path, rel) = (e.path(), name.join(e.file_name()));
            if let Err(err) = self.entry(b, &path, &rel) {
                tracing::warn!(path = %path.display(), "skipped: {err}");
                self.stats.lock().expect("tree stats").skip(format!("{}: {err}", rel.display()));
            }
        }
        Ok(())
    }

    fn entry(&mut self, b: &mut TarBuilder<'_, '_>, path: &Path, rel: &Path) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::symlink_metadata(path)?;
        let ft = meta.file_type();
        let offset = b.get_ref().position();
        let mut entry = CatalogEntry {
            path: rel.to_string_lossy().into_owned(),
            kind: EntryKind::File,
            size: 0,
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: meta.mtime(),
            link: None,
            blake3: None,
            sha256: None,
            offset,
        };
        if !(ft.is_dir() || ft.is_symlink() || ft.is_file()) {
            return Err(io::Error::other("not a regular file, directory or symlink"));
        }
        // What can fail for this entry alone comes before its first header: a pax header
        // written for an entry that is then skipped would give its attributes to the next.
        let target = if ft.is_symlink() { Some(fs::read_link(path)?) } else { None };
        let is_other_link = ft.is_file() && meta.nlink() > 1 && self.links.contains_key(&(meta.dev(), meta.ino()));
        let file = if ft.is_file() && !is_other_link { Some(File::open(path)?) } else { None };
        if !is_other_link {
            // A further hard link shares the inode's attributes, archived with its first name.
            append_xattrs(b, path)?;
        }
        if ft.is_dir() {
            b.append_dir(rel, path)?;
            self.stats.lock().expect("tree stats").directories += 1;
            self.list(CatalogEntry { kind: EntryKind::Dir, ..entry });
            return self.walk(b, path, rel);
        }
        if let Some(target) = target {
            b.append_path_with_name(path, rel)?;
            self.list(CatalogEntry {
                kind: EntryKind::Symlink,
                link: Some(target.to_string_lossy().into_owned()),
                ..entry
            });
            return Ok(());
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                b.append_link(&mut header, rel, first)?;
                self.list(CatalogEntry { kind: EntryKind::Hardlink, link: Some(first.clone()), ..entry });
                return Ok(());
            }
            self.links.insert((meta.dev(), meta.ino()), entry.path.clone());
        }
        entry.size = meta.len();
        entry.blake3 = Some(append_regular(b, rel, &meta, header, file.expect("opened above"))?);
        let mut s = self.stats.lock().expect("tree stats");
        s.files += 1;
        s.file_bytes += meta.len();
        drop(s);
        self.list(entry);
        Ok(())
    }

    fn list(&self, entry: CatalogEntry) {
        self.catalog.lock().expect("catalog").push(entry);
    }
}

/// A restore target: `<path>.partial` until committed, then renamed to `path`. Dropped
/// uncommitted, the partial file is removed. Both names must be free: the partial file is
/// created new (never through a symlink, never over a user's file), 0600, and the commit
/// refuses to replace a `path` that appeared meanwhile.
pub struct RestoreFile {
    file: File,
    partial: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl RestoreFile {
    /// Creates the partial file; refuses an existing `path` or `path.partial`.
    pub fn create(path: PathBuf) -> io::Result<RestoreFile> {
        if fs::symlink_metadata(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists; restore never overwrites", path.display()),
            ));
        }
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = files::create_new(&partial).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => io::Error::new(
                e.kind(),
                format!(
                    "{} exists (a file or link bunker did not create here); remove it or restore to another path",
                    partial.display()
                ),
            ),
            _ => e,
        })?;
        Ok(RestoreFile { file, partial, path, committed: false })
    }
}

impl ImageWriter for RestoreFile {
    fn set_len(&mut self, size: u64) -> io::Result<()> {
        self.file.set_len(size)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        FileExt::read_at(&self.file, buf, offset)
    }

    fn commit(&mut self) -> io::Result<()> {
        self.file.sync_all()?;
        files::rename_no_replace(&self.partial, &self.path)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for RestoreFile {
    fn drop(&mut self) {
        if !self.committed {
            fs::remove_file(&self.partial).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pax_records;

    /// Every record's length counts the whole record, its own digits included, across the
    /// lengths where the digit count rolls over (9 → 10, 99 → 100, 999 → 1000).
    #[test]
    fn pax_record_lengths_count_themselves() {
        for n in 0..1100 {
            let value = vec![b'v'; n];
            let data = pax_records(std::iter::once(("SCHILY.xattr.user.a".to_string(), value.as_slice())));
            let space = data.iter().position(|c| *c == b' ').unwrap();
            let len: usize = std::str::from_utf8(&data[..space]).unwrap().parse().unwrap();
            assert_eq!(len, data.len(), "value of {n} bytes");
            assert!(data.ends_with(b"\n"));
        }
    }
}
