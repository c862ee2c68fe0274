//! A tar stream and catalog of an ext2/3/4 filesystem read in user space (the `ext4-view`
//! crate) straight from a snapshot: no volume, no mount, no privileges. ext4-view replays the
//! journal in memory, so a crash-consistent snapshot of a mounted filesystem reads as the
//! kernel would mount it, and the snapshot itself is never written.
//!
//! What the reader does not expose is not archived: extended attributes, and inode numbers
//! (a file's further hard links are stored as copies: each has the file's content and hash).
//! Device nodes, FIFOs and sockets are skipped and named in the tree statistics.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use bunker_actors::stream::snapshot_device::SnapshotDevice;
use bunker_actors::stream::{SourceItem, StreamError};
use bunker_protocol::archive::TreeStats;
use bunker_protocol::catalog::{CatalogEntry, EntryKind};
use ext4_view::{Ext4, Ext4Error, Metadata};
use tokio::sync::mpsc;

use crate::disk::{Disk, Volume};
use crate::local::{Hashing, TarBuilder};

impl Disk for SnapshotDevice {
    fn size(&self) -> u64 {
        SnapshotDevice::size(self)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        SnapshotDevice::read_at(self, offset, buf).map_err(io::Error::other)
    }
}

/// One volume of a disk, as ext4-view reads it.
struct Part {
    disk: SnapshotDevice,
    start: u64,
    size: u64,
}

impl ext4_view::Ext4Read for Part {
    fn read(&mut self, at: u64, dst: &mut [u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        if at.saturating_add(dst.len() as u64) > self.size {
            return Err(format!("read at {at} is past the end of the {}-byte partition", self.size).into());
        }
        Ok(self.disk.read_at(self.start + at, dst)?)
    }
}

/// Streams a tar of the ext filesystem on `volume` as chunks, on a dedicated thread, listing
/// every entry in `catalog` (as [`crate::local::tar_reader`] does for a directory).
pub fn ext4_tar_reader(
    disk: SnapshotDevice,
    volume: Volume,
    chunk: u64,
    capacity: usize,
    stats: Arc<Mutex<TreeStats>>,
    catalog: Arc<Mutex<Vec<CatalogEntry>>>,
) -> mpsc::Receiver<Result<SourceItem, StreamError>> {
    let what = volume.describe();
    crate::local::tar_thread("bunker-ext4", what, chunk, capacity, move |b| {
        let disk = disk.reading_ahead_until(volume.start + volume.size);
        let fs = Ext4::load(Box::new(Part { disk, start: volume.start, size: volume.size }))
            .map_err(|e| io::Error::other(format!("not a readable ext2/3/4 filesystem: {e}")))?;
        let mut walker = Walker { fs, stats: &stats, catalog: &catalog };
        walker.walk(b, ext4_view::PathBuf::new("/"))
    })
}

struct Walker<'a> {
    fs: Ext4,
    stats: &'a Mutex<TreeStats>,
    catalog: &'a Mutex<Vec<CatalogEntry>>,
}

/// Reading the snapshot failed: the export fails (a damaged entry is only skipped).
fn fatal(e: &Ext4Error) -> bool {
    matches!(e, Ext4Error::Io(_))
}

fn to_io(e: Ext4Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl Walker<'_> {
    fn walk(&mut self, b: &mut TarBuilder<'_, '_>, dir: ext4_view::PathBuf) -> io::Result<()> {
        let mut entries = Vec::new();
        for e in self.fs.read_dir(&dir).map_err(to_io)? {
            let e = e.map_err(to_io)?;
            let name = e.file_name().as_ref().to_vec();
            if name != b"." && name != b".." {
                entries.push((name, e));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, e) in entries {
            let path = e.path();
            let shown = path.display().to_string();
            match self.entry(b, &path, e.metadata()) {
                Ok(()) => {}
                Err(Skip::Fatal(err)) => return Err(err),
                Err(Skip::Entry(why)) => {
                    tracing::warn!(path = %shown, "skipped: {why}");
                    self.stats.lock().expect("tree stats").skip(format!("{}: {why}", &shown[1..]));
                }
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        b: &mut TarBuilder<'_, '_>,
        path: &ext4_view::PathBuf,
        meta: Result<Metadata, Ext4Error>,
    ) -> Result<(), Skip> {
        let meta = meta.map_err(Skip::from)?;
        let rel = std::path::Path::new(std::ffi::OsStr::from_bytes(&path.as_ref()[1..])).to_path_buf();
        let ft = meta.file_type();
        let mut entry = CatalogEntry {
            path: rel.to_string_lossy().into_owned(),
            kind: EntryKind::File,
            size: 0,
            mode: u32::from(meta.mode()),
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: meta.modified().seconds(),
            link: None,
            sha256: None,
            offset: b.get_ref().position(),
        };
        let mut header = tar::Header::new_gnu();
        header.set_mode(u32::from(meta.mode()));
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(u64::try_from(meta.modified().seconds()).unwrap_or(0));
        header.set_size(0);
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut header, &rel, io::empty()).map_err(Skip::Fatal)?;
            self.stats.lock().expect("tree stats").directories += 1;
            self.list(CatalogEntry { kind: EntryKind::Dir, ..entry });
            return self.walk(b, path.clone()).map_err(Skip::Fatal);
        }
        if ft.is_symlink() {
            let target = self.fs.read_link(path).map_err(Skip::from)?;
            header.set_entry_type(tar::EntryType::Symlink);
            let target_path = std::path::Path::new(std::ffi::OsStr::from_bytes(target.as_ref()));
            b.append_link(&mut header, &rel, target_path).map_err(Skip::Fatal)?;
            self.list(CatalogEntry {
                kind: EntryKind::Symlink,
                link: Some(target_path.to_string_lossy().into_owned()),
                ..entry
            });
            return Ok(());
        }
        if !ft.is_regular_file() {
            return Err(Skip::Entry("not a regular file, directory or symlink".into()));
        }
        let file = self.fs.open(path).map_err(Skip::from)?;
        let size = meta.len();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        let mut reader = Hashing { inner: io::Read::take(file, size), hasher: sha2::Sha256::default() };
        // A read failure part-way through the data cannot be skipped: the header is written.
        b.append_data(&mut header, &rel, &mut reader).map_err(Skip::Fatal)?;
        entry.size = size;
        entry.sha256 = Some(bunker_protocol::archive::hex(&sha2::Digest::finalize(reader.hasher)));
        let mut s = self.stats.lock().expect("tree stats");
        s.files += 1;
        s.file_bytes += size;
        drop(s);
        self.list(entry);
        Ok(())
    }

    fn list(&self, entry: CatalogEntry) {
        self.catalog.lock().expect("catalog").push(entry);
    }
}

/// Why an entry is not archived.
enum Skip {
    /// The export fails.
    Fatal(io::Error),
    /// Only this entry is left out, named in the statistics.
    Entry(String),
}

impl From<Ext4Error> for Skip {
    fn from(e: Ext4Error) -> Skip {
        if fatal(&e) {
            Skip::Fatal(to_io(e))
        } else {
            Skip::Entry(e.to_string())
        }
    }
}
