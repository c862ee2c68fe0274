//! What the user-space filesystem readers (`ext4_tar`, `fat_tar`) share: appending an entry
//! to the tar stream and listing it, with its offset and a file's SHA-256, in the catalog and
//! the tree statistics.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bunker_actors::stream::snapshot_device::SnapshotDevice;
use bunker_actors::stream::{SourceItem, StreamError};
use bunker_protocol::archive::TreeStats;
use bunker_protocol::catalog::{CatalogEntry, EntryKind};
use tokio::sync::mpsc;

use crate::disk::Volume;
use crate::local::{Hashing, TarBuilder};

/// Streams a tar of the filesystem on `volume` (ext2/3/4 or FAT) as chunks, on a dedicated
/// thread, listing every entry in `catalog` (as [`crate::local::tar_reader`] does for a
/// directory). Reads never go past the volume's end, read-ahead included.
pub(crate) fn filesystem_tar_reader(
    disk: SnapshotDevice,
    volume: Volume,
    chunk: u64,
    capacity: usize,
    stats: Arc<Mutex<TreeStats>>,
    catalog: Arc<Mutex<Vec<CatalogEntry>>>,
) -> mpsc::Receiver<Result<SourceItem, StreamError>> {
    let (what, thread) = (volume.describe(), format!("bunker-{}", volume.filesystem));
    crate::local::tar_thread(&thread, what, chunk, capacity, move |b| {
        let disk = disk.reading_within(volume.first(), volume.end());
        let out = Lister { stats: &stats, catalog: &catalog };
        match volume.filesystem {
            "vfat" => crate::fat_tar::write_tar(disk, &volume, out, b),
            _ => crate::ext4_tar::write_tar(disk, &volume, out, b),
        }
    })
}

/// An entry's metadata, as the filesystem gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    /// Permission bits.
    pub(crate) mode: u32,
    /// Owner.
    pub(crate) uid: u64,
    /// Group.
    pub(crate) gid: u64,
    /// Modification time, seconds since the epoch.
    pub(crate) mtime: i64,
}

/// Appends entries to a tar stream and lists them.
pub(crate) struct Lister<'a> {
    pub(crate) stats: &'a Mutex<TreeStats>,
    pub(crate) catalog: &'a Mutex<Vec<CatalogEntry>>,
}

impl Lister<'_> {
    fn header(meta: Meta, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode);
        header.set_uid(meta.uid);
        header.set_gid(meta.gid);
        header.set_mtime(u64::try_from(meta.mtime).unwrap_or(0));
        header.set_entry_type(kind);
        header.set_size(size);
        header
    }

    fn entry(b: &TarBuilder<'_, '_>, rel: &Path, meta: Meta, kind: EntryKind) -> CatalogEntry {
        CatalogEntry {
            path: rel.to_string_lossy().into_owned(),
            kind,
            size: 0,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            link: None,
            blake3: None,
            sha256: None,
            offset: b.get_ref().position(),
        }
    }

    /// A directory (its contents are the caller's to walk).
    pub(crate) fn dir(&self, b: &mut TarBuilder<'_, '_>, rel: &Path, meta: Meta) -> io::Result<()> {
        let entry = Self::entry(b, rel, meta, EntryKind::Dir);
        b.append_data(&mut Self::header(meta, tar::EntryType::Directory, 0), rel, io::empty())?;
        self.stats.lock().expect("tree stats").directories += 1;
        self.list(entry);
        Ok(())
    }

    /// A symlink to `target`.
    pub(crate) fn symlink(&self, b: &mut TarBuilder<'_, '_>, rel: &Path, meta: Meta, target: &Path) -> io::Result<()> {
        let entry = Self::entry(b, rel, meta, EntryKind::Symlink);
        b.append_link(&mut Self::header(meta, tar::EntryType::Symlink, 0), rel, target)?;
        self.list(CatalogEntry { link: Some(target.to_string_lossy().into_owned()), ..entry });
        Ok(())
    }

    /// A regular file of `size` bytes read from `data`, hashed on the way. A read failure
    /// part-way through fails the stream (the header is written).
    pub(crate) fn file(
        &self,
        b: &mut TarBuilder<'_, '_>,
        rel: &Path,
        meta: Meta,
        size: u64,
        data: impl io::Read,
    ) -> io::Result<()> {
        let entry = Self::entry(b, rel, meta, EntryKind::File);
        let mut reader = Hashing::catalog(io::Read::take(data, size));
        b.append_data(&mut Self::header(meta, tar::EntryType::Regular, size), rel, &mut reader)?;
        let blake3 = Some(reader.hasher.finish());
        let mut s = self.stats.lock().expect("tree stats");
        s.files += 1;
        s.file_bytes += size;
        drop(s);
        self.list(CatalogEntry { size, blake3, ..entry });
        Ok(())
    }

    /// An entry left out, named in the statistics.
    pub(crate) fn skip(&self, rel: &str, why: &str) {
        tracing::warn!(path = %rel, "skipped: {why}");
        self.stats.lock().expect("tree stats").skip(format!("{rel}: {why}"));
    }

    fn list(&self, entry: CatalogEntry) {
        self.catalog.lock().expect("catalog").push(entry);
    }
}
