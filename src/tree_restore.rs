//! `bunker restore ARCHIVE --path P --to-dir DIR`: entries of a tar archive restored from its
//! catalog, fetching only the frames that hold the regular files among them (ranged reads
//! through the seek table). Directories, symlinks and hard links are made from the catalog.
//!
//! Safety below DIR is the kernel's: every path is resolved with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, so nothing is ever written through a symlink (one in the archive
//! or one already in DIR) nor outside DIR. A file is written under a temporary name (0600),
//! its SHA-256 checked against the catalog, then given its mode, owner (when running as root)
//! and mtime and renamed into place — without `--overwrite` with `RENAME_NOREPLACE`, so an
//! existing file is never replaced. A file whose hash differs is removed and named.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bunker_actors::stream::archive_reader::{Archive, Piece};
use bunker_actors::stream::{Progress, StreamError};
use bunker_protocol::archive::Content;
use bunker_protocol::catalog::{CatalogEntry, ContentHash};
use bunker_protocol::file_restore::{self, normalize, FileJob, RestorePlan};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, Timespec, Timestamps};
use serde::Serialize;
use tokio::sync::mpsc;

/// What a file-level restore wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirReport {
    /// The archive.
    pub archive: String,
    /// The target directory.
    pub to_dir: String,
    /// Regular files written (each checked against its SHA-256 in the catalog).
    pub files: u64,
    /// Directories created (existing ones are kept).
    pub directories: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Bytes of file contents written.
    pub bytes_written: u64,
    /// Bytes of the uncompressed tar stream fetched.
    pub stream_bytes: u64,
    /// Bytes of the archive object read (frames only; the manifest and catalog besides).
    pub archive_bytes_read: u64,
    /// The archive object's size.
    pub archive_size: u64,
    /// Seconds.
    pub seconds: f64,
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

/// Writes below one directory, never through a symlink, never outside it.
pub(crate) struct TreeWriter {
    root: OwnedFd,
    overwrite: bool,
    chown: bool,
    temp: AtomicU64,
}

fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or((".", rel))
}

fn at(what: &str, rel: &str, e: impl Into<io::Error>) -> io::Error {
    use rustix::io::Errno;
    let e: io::Error = e.into();
    let blocked = [Errno::LOOP, Errno::XDEV, Errno::NOTDIR].map(|n| Some(n.raw_os_error()));
    let why = if blocked.contains(&e.raw_os_error()) {
        "a component of the path is a symlink or not a directory (bunker never writes through a symlink)".to_string()
    } else {
        e.to_string()
    };
    io::Error::new(e.kind(), format!("{what} {rel}: {why}"))
}

impl TreeWriter {
    /// Opens (creating it 0700 if missing) the target directory.
    pub(crate) fn open(dir: &Path, overwrite: bool) -> io::Result<TreeWriter> {
        if !dir.exists() {
            crate::files::create_dir_all_private(dir)?;
        }
        let root = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let chown = rustix::process::geteuid().is_root();
        Ok(TreeWriter { root, overwrite, chown, temp: AtomicU64::new(0) })
    }

    fn dir(&self, rel: &str) -> io::Result<OwnedFd> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        rustix::fs::openat2(&self.root, rel, flags, Mode::empty(), BENEATH).map_err(io::Error::from)
    }

    fn temp_name(&self) -> String {
        format!(".bunker-restore-{}-{}", std::process::id(), self.temp.fetch_add(1, Ordering::Relaxed))
    }

    /// What is at `rel` now (not following a symlink), `None` when nothing is.
    fn kind_at(&self, rel: &str) -> io::Result<Option<rustix::fs::FileType>> {
        let (parent, name) = split(rel);
        let p = match self.dir(parent) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at("looking up", rel, e)),
        };
        match rustix::fs::statat(&p, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(rustix::fs::FileType::from_raw_mode(st.st_mode))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(at("looking up", rel, e)),
        }
    }

    /// The paths the plan would write that exist already and may not be replaced (every
    /// one without `--overwrite`; a directory in the way of a file or a file in the way of a
    /// directory even with it).
    pub(crate) fn conflicts(&self, plan: &RestorePlan) -> io::Result<Vec<String>> {
        use rustix::fs::FileType;
        let mut found = Vec::new();
        for d in &plan.dirs {
            if self.kind_at(&d.path)?.is_some_and(|k| k != FileType::Directory) {
                found.push(format!("{} (not a directory)", d.path));
            }
        }
        for path in plan.outputs() {
            match self.kind_at(path)? {
                Some(FileType::Directory) => found.push(format!("{path} (a directory)")),
                Some(_) if !self.overwrite => found.push(path.to_string()),
                _ => {}
            }
        }
        Ok(found)
    }

    /// Creates directory `rel` (0700 until [`TreeWriter::finish_dir`]); `false` if it existed.
    fn mkdir(&self, rel: &str) -> io::Result<bool> {
        let (parent, name) = split(rel);
        let p = self.dir(parent).map_err(|e| at("creating", rel, e))?;
        match rustix::fs::mkdirat(&p, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => {
                self.dir(rel).map_err(|e| at("creating", rel, e))?;
                Ok(false)
            }
            Err(e) => Err(at("creating", rel, e)),
        }
    }

    /// Gives directory `rel` its mode, owner and mtime.
    fn finish_dir(&self, rel: &str, e: &CatalogEntry) -> io::Result<()> {
        let fd = self.dir(rel).map_err(|err| at("setting the metadata of", rel, err))?;
        self.meta(&fd, e).map_err(|err| at("setting the metadata of", rel, err))
    }

    fn meta(&self, fd: impl AsFd, e: &CatalogEntry) -> io::Result<()> {
        if self.chown {
            let (uid, gid) = owner(e);
            rustix::fs::fchown(&fd, Some(uid), Some(gid))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(e.mode & 0o7777))?;
        rustix::fs::futimens(&fd, &times(e.mtime))?;
        Ok(())
    }

    /// Moves temporary `tmp` of directory `p` to `name`: replacing what is there only with
    /// `--overwrite`. The temporary is removed if the move fails.
    fn place(&self, p: &OwnedFd, tmp: &str, name: &str, rel: &str) -> io::Result<()> {
        let flags = if self.overwrite { RenameFlags::empty() } else { RenameFlags::NOREPLACE };
        rustix::fs::renameat_with(p, tmp, p, name, flags).map_err(|e| {
            remove_temp(p, tmp);
            let why = if e == rustix::io::Errno::EXIST {
                io::Error::new(io::ErrorKind::AlreadyExists, "exists; pass --overwrite to replace it")
            } else {
                e.into()
            };
            at("writing", rel, why)
        })
    }

    /// Writes `size` bytes of `data` to `rel`, checked against the entry's content hash;
    /// returns them.
    fn write_file(&self, rel: &str, data: &mut dyn Read, e: &CatalogEntry) -> Result<u64, Failure> {
        let (parent, name) = split(rel);
        let p = self.dir(parent).map_err(|err| Failure::Io(at("writing", rel, err)))?;
        let tmp = self.temp_name();
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&p, &tmp, flags, Mode::from_raw_mode(0o600))
            .map_err(|err| Failure::Io(at("writing", rel, err)))?;
        let mut file = std::fs::File::from(fd);
        let want = e.content_hash();
        let written = copy_hashed(data, &mut file, e.size, want.map_or(ContentHash::Blake3, |(k, _)| k));
        let checked = written.and_then(|(n, sum)| match want {
            Some((kind, want)) if want != sum => Err(Failure::Mismatch(format!(
                "{rel}: its contents in the archive hash to {} {sum}, the catalog says {want}; not restored",
                kind.name()
            ))),
            _ => Ok(n),
        });
        let done =
            checked.and_then(|n| self.meta(&file, e).map(|()| n).map_err(|err| Failure::Io(at("writing", rel, err))));
        drop(file);
        match done {
            Ok(n) => self.place(&p, &tmp, name, rel).map(|()| n).map_err(Failure::Io),
            Err(f) => {
                remove_temp(&p, &tmp);
                Err(f.named(rel))
            }
        }
    }

    /// Makes `rel` a symlink to `e.link`, restored as it is (it is never followed here).
    fn symlink(&self, rel: &str, e: &CatalogEntry) -> io::Result<()> {
        let (parent, name) = split(rel);
        let p = self.dir(parent).map_err(|err| at("linking", rel, err))?;
        let tmp = self.temp_name();
        rustix::fs::symlinkat(e.link.as_deref().unwrap_or_default(), &p, &tmp)
            .map_err(|err| at("linking", rel, err))?;
        if self.chown {
            let (uid, gid) = owner(e);
            let owned = rustix::fs::chownat(&p, &tmp, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW);
            if let Err(err) = owned {
                remove_temp(&p, &tmp);
                return Err(at("linking", rel, err));
            }
        }
        let timed = rustix::fs::utimensat(&p, &tmp, &times(e.mtime), AtFlags::SYMLINK_NOFOLLOW);
        if let Err(err) = timed {
            remove_temp(&p, &tmp);
            return Err(at("linking", rel, err));
        }
        self.place(&p, &tmp, name, rel)
    }

    /// Makes `rel` a hard link to `target`, a file this restore wrote.
    fn hardlink(&self, rel: &str, target: &str) -> io::Result<()> {
        let ((tp, tn), (parent, name)) = (split(target), split(rel));
        let from = self.dir(tp).map_err(|err| at("linking", rel, err))?;
        let p = self.dir(parent).map_err(|err| at("linking", rel, err))?;
        let tmp = self.temp_name();
        rustix::fs::linkat(&from, tn, &p, &tmp, AtFlags::empty()).map_err(|err| at("linking", rel, err))?;
        self.place(&p, &tmp, name, rel)
    }
}

/// Removes a temporary name this restore made (a failure is logged: it is ours to leave).
fn remove_temp(p: &OwnedFd, tmp: &str) {
    if let Err(e) = rustix::fs::unlinkat(p, tmp, AtFlags::empty()) {
        tracing::warn!(temporary = tmp, error = %e, "could not remove a temporary file of the restore");
    }
}

fn owner(e: &CatalogEntry) -> (rustix::fs::Uid, rustix::fs::Gid) {
    let id = |v: u64| u32::try_from(v).unwrap_or(u32::MAX - 1);
    (rustix::fs::Uid::from_raw(id(e.uid)), rustix::fs::Gid::from_raw(id(e.gid)))
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec { tv_sec: mtime, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

/// Zero stretches this long (and aligned) are left as holes in a restored file.
const HOLE: usize = 4096;

/// Copies exactly `size` bytes into `out` (a new, empty file), returning them and their hash
/// of `kind` (hex). Aligned 4 KiB stretches of zeros are not written: the file gets holes
/// there, as `cp --sparse=always` makes them (a sparse file comes back sparse).
fn copy_hashed(
    data: &mut dyn Read,
    out: &mut std::fs::File,
    size: u64,
    kind: ContentHash,
) -> Result<(u64, String), Failure> {
    use std::os::unix::fs::FileExt;
    let mut hashing = crate::local::Hashing { inner: data.take(size), hasher: crate::local::ContentHasher::new(kind) };
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = read_full(&mut hashing, &mut buf).map_err(Failure::Io)?;
        if k == 0 {
            break;
        }
        for (i, piece) in buf[..k].chunks(HOLE).enumerate() {
            if piece.iter().any(|b| *b != 0) {
                out.write_all_at(piece, n + (i * HOLE) as u64).map_err(Failure::Io)?;
            }
        }
        n += k as u64;
    }
    if n != size {
        return Err(Failure::Mismatch(format!("the archive holds {n} bytes of it, the catalog says {size}")));
    }
    out.set_len(n).map_err(Failure::Io)?;
    Ok((n, hashing.hasher.finish()))
}

/// Fills `buf` as far as the reader goes (short only at its end), so 4 KiB stretches stay
/// aligned to the file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut k = 0;
    while k < buf.len() {
        match r.read(&mut buf[k..]) {
            Ok(0) => break,
            Ok(m) => k += m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(k)
}

/// Why writing an entry failed.
#[derive(Debug)]
enum Failure {
    /// The target could not be written, or the stream not read.
    Io(io::Error),
    /// The archive's data for an entry is not what the catalog says.
    Mismatch(String),
}

impl Failure {
    fn named(self, rel: &str) -> Failure {
        match self {
            Failure::Mismatch(m) if !m.starts_with(rel) => Failure::Mismatch(format!("{rel}: {m}")),
            f => f,
        }
    }
}

/// The selected stretches of the tar stream as one reader, on a blocking thread; a failure
/// handed on by the archive reader is kept for the error message.
struct Pieces {
    rx: mpsc::Receiver<Result<Piece, StreamError>>,
    current: Option<Piece>,
    failed: Arc<Mutex<Option<StreamError>>>,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.current.take() {
                Some(p) if p.is_empty() => continue,
                Some(Piece::Data { frame, at }) => {
                    let n = buf.len().min(at.len());
                    buf[..n].copy_from_slice(&frame[at.start..at.start + n]);
                    self.current = Some(Piece::Data { frame, at: at.start + n..at.end });
                    return Ok(n);
                }
                Some(Piece::Zeros(z)) => {
                    let n = buf.len().min(usize::try_from(z).unwrap_or(usize::MAX));
                    buf[..n].fill(0);
                    self.current = Some(Piece::Zeros(z - n as u64));
                    return Ok(n);
                }
                None => match self.rx.blocking_recv() {
                    Some(Ok(p)) => self.current = Some(p),
                    Some(Err(e)) => {
                        let msg = e.to_string();
                        *self.failed.lock().expect("failure slot") = Some(e);
                        return Err(io::Error::other(msg));
                    }
                    None => return Ok(0),
                },
            }
        }
    }
}

/// Writes the plan from the stream of its files: directories, files in stream order (each
/// header's path must be the catalog's), symlinks, hard links, then directory metadata.
fn write_tree(plan: &RestorePlan, reader: Pieces, w: &TreeWriter) -> Result<DirReport, Failure> {
    let mut report = DirReport::default();
    let mut created = Vec::new();
    for d in &plan.dirs {
        if w.mkdir(&d.path).map_err(Failure::Io)? {
            report.directories += 1;
            created.push(d);
        } else if w.overwrite {
            created.push(d);
        }
    }
    let failed = reader.failed.clone();
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(Failure::Io)?;
    for job in &plan.files {
        let stream_failure = |e: io::Error| match failed.lock().expect("failure slot").take() {
            Some(s) => Failure::Mismatch(format!("{}: {s}", job.entry.path)),
            None => Failure::Mismatch(format!("{}: reading the archive: {e}", job.entry.path)),
        };
        let mut entry = match entries.next() {
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(stream_failure(e)),
            None => return Err(Failure::Mismatch(format!("{}: the stream ended before it", job.entry.path))),
        };
        check_header(job, &entry)?;
        let first = &job.outputs[0];
        let n = match w.write_file(first, &mut entry, &job.entry) {
            Err(Failure::Io(e)) if failed.lock().expect("failure slot").is_some() => return Err(stream_failure(e)),
            r => r?,
        };
        report.files += 1;
        report.bytes_written += n;
        for other in &job.outputs[1..] {
            w.hardlink(other, first).map_err(Failure::Io)?;
            report.hardlinks += 1;
        }
    }
    // The last file's padding: read to the end so the archive reader finishes cleanly.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(Failure::Io)?;
    for s in &plan.symlinks {
        w.symlink(&s.path, s).map_err(Failure::Io)?;
        report.symlinks += 1;
    }
    for (link, target) in &plan.hardlinks {
        w.hardlink(link, target).map_err(Failure::Io)?;
        report.hardlinks += 1;
    }
    for d in created.iter().rev() {
        if let Some(e) = &d.entry {
            w.finish_dir(&d.path, e).map_err(Failure::Io)?;
        }
    }
    Ok(report)
}

/// The stream's header for a file must be the catalog's: same path, a regular file, same size.
fn check_header<R: Read>(job: &FileJob, entry: &tar::Entry<'_, R>) -> Result<(), Failure> {
    let bytes = entry.path_bytes();
    let got = String::from_utf8_lossy(&bytes);
    let want = &job.entry.path;
    if normalize(&got) != normalize(want) {
        return Err(Failure::Mismatch(format!(
            "{want}: the archive's entry at stream offset {} is {got:?}, not the catalog's path; refused",
            job.start
        )));
    }
    let kind = entry.header().entry_type();
    // A sparse file (GNU sparse entry) reads back whole, its holes as zeros.
    if !(kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse()) || entry.size() != job.entry.size {
        return Err(Failure::Mismatch(format!(
            "{want}: the archive holds a {kind:?} entry of {} bytes there, the catalog a file of {}",
            entry.size(),
            job.entry.size
        )));
    }
    Ok(())
}

/// Restores `wanted` (catalog paths; none: everything) of the tar archive into `dir`.
pub(crate) async fn restore_to_dir(
    archive: Archive,
    wanted: &[String],
    dir: &Path,
    overwrite: bool,
    progress: &Progress,
) -> Result<DirReport, StreamError> {
    let started = Instant::now();
    let url = archive.url();
    if archive.manifest.content != Content::Tar {
        return Err(StreamError::Input(format!(
            "{url} is not a tar archive: restore it with --to-file or --to-snapshot"
        )));
    }
    let entries = archive.catalog().await?;
    let plan = file_restore::plan(&entries, wanted, archive.manifest.image_size)
        .map_err(|e| StreamError::Input(format!("{url}: {e}")))?;
    let shown = dir.display().to_string();
    let target = |e: io::Error| StreamError::Target(format!("{shown}: {e}"));
    let (writer, plan) = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || -> io::Result<_> {
            let w = TreeWriter::open(&dir, overwrite)?;
            let clash = w.conflicts(&plan)?;
            Ok((w, plan, clash))
        })
        .await
        .map_err(|e| StreamError::Internal(e.to_string()))?
        .map_err(target)
        .and_then(|(w, plan, clash)| match clash.as_slice() {
            [] => Ok((w, plan)),
            [first, rest @ ..] => Err(StreamError::Input(format!(
                "{shown}/{first} exists{}; pass --overwrite to replace files (nothing was written)",
                if rest.is_empty() { String::new() } else { format!(" (and {} more)", rest.len()) }
            ))),
        })?
    };
    let ranges: Vec<(u64, u64)> = plan.files.iter().map(|f| (f.start, f.end)).collect();
    let stream_bytes = plan.stream_bytes();
    let (tx, rx) = mpsc::channel(8);
    let reader = Pieces { rx, current: None, failed: Arc::new(Mutex::new(None)) };
    let consumer = tokio::task::spawn_blocking(move || write_tree(&plan, reader, &writer));
    let read = archive.read_ranges(&ranges, progress, tx).await;
    let written = consumer.await.map_err(|e| StreamError::Internal(format!("tree writer: {e}")))?;
    let mut report = match (written, read) {
        (Err(Failure::Mismatch(m)), _) => return Err(StreamError::Corrupt(m)),
        (Err(Failure::Io(e)), _) => return Err(target(e)),
        (Ok(_), Err(e)) => return Err(e),
        (Ok(r), Ok(n)) => DirReport { archive_bytes_read: n, ..r },
    };
    report.archive = url;
    report.to_dir = shown;
    report.stream_bytes = stream_bytes;
    report.archive_size = archive.manifest.archive.size;
    report.seconds = started.elapsed().as_secs_f64();
    tracing::info!(archive = %report.archive, files = report.files, bytes = report.archive_bytes_read, "restored files");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunker_protocol::catalog::EntryKind;

    fn entry(path: &str, kind: EntryKind) -> CatalogEntry {
        CatalogEntry {
            path: path.into(),
            kind,
            size: 3,
            mode: 0o640,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            link: None,
            blake3: None,
            sha256: None,
            offset: 0,
        }
    }

    #[test]
    fn nothing_is_written_through_a_symlink_nor_outside_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        std::fs::create_dir_all(&outside).unwrap();
        let w = TreeWriter::open(&root, false).unwrap();
        w.symlink(
            "lnk",
            &CatalogEntry { link: Some(outside.display().to_string()), ..entry("lnk", EntryKind::Symlink) },
        )
        .unwrap();
        let err = w.write_file("lnk/evil", &mut &b"bad"[..], &entry("lnk/evil", EntryKind::File)).unwrap_err();
        assert!(format!("{err:?}").contains("symlink"), "{err:?}");
        assert!(w.mkdir("lnk/sub").is_err());
        assert!(w.mkdir("../up").is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written through the link");
        assert!(!tmp.path().join("up").exists());
        // Without --overwrite an existing file stays; the temporary is gone.
        std::fs::write(root.join("kept"), b"mine").unwrap();
        assert!(w.write_file("kept", &mut &b"new"[..], &entry("kept", EntryKind::File)).is_err());
        assert_eq!(std::fs::read(root.join("kept")).unwrap(), b"mine");
        let names: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
