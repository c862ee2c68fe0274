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

use bunker_actors::stream::snapshot_device::SnapshotDevice;
use ext4_view::{Ext4, Ext4Error, Metadata};

use crate::disk::{Disk, Volume};
use crate::fs_tar::{Lister, Meta};
use crate::local::TarBuilder;

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
    volume: Volume,
}

impl ext4_view::Ext4Read for Part {
    fn read(&mut self, at: u64, dst: &mut [u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.volume.read_at(&mut self.disk, at, dst)?)
    }
}

/// Writes the tar of the ext filesystem on `volume` (on the caller's dedicated thread).
pub(crate) fn write_tar(
    disk: SnapshotDevice,
    volume: &Volume,
    out: Lister<'_>,
    b: &mut TarBuilder<'_, '_>,
) -> io::Result<()> {
    let fs = Ext4::load(Box::new(Part { disk, volume: volume.clone() }))
        .map_err(|e| io::Error::other(format!("not a readable ext2/3/4 filesystem: {e}")))?;
    Walker { fs, out }.walk(b, ext4_view::PathBuf::new("/"))
}

struct Walker<'a> {
    fs: Ext4,
    out: Lister<'a>,
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
            match self.entry(b, &path, e.metadata()) {
                Ok(()) => {}
                Err(Skip::Fatal(err)) => return Err(err),
                Err(Skip::Entry(why)) => self.out.skip(&path.display().to_string()[1..], &why),
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
        let m = Meta {
            mode: u32::from(meta.mode()),
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: meta.modified().seconds(),
        };
        if ft.is_dir() {
            self.out.dir(b, &rel, m).map_err(Skip::Fatal)?;
            return self.walk(b, path.clone()).map_err(Skip::Fatal);
        }
        if ft.is_symlink() {
            let target = self.fs.read_link(path).map_err(Skip::from)?;
            let target = std::path::Path::new(std::ffi::OsStr::from_bytes(target.as_ref()));
            return self.out.symlink(b, &rel, m, target).map_err(Skip::Fatal);
        }
        if !ft.is_regular_file() {
            return Err(Skip::Entry("not a regular file, directory or symlink".into()));
        }
        let file = self.fs.open(path).map_err(Skip::from)?;
        self.out.file(b, &rel, m, meta.len(), file).map_err(Skip::Fatal)
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
