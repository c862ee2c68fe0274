//! A tar stream and catalog of a FAT12/16/32 filesystem (an EFI system partition) read in
//! user space with the `fatfs` crate straight from a snapshot: no volume, no mount. The crate
//! gets a partition view whose writes fail, and is configured never to update access dates,
//! so reading never writes.
//!
//! FAT keeps no owner and no permission bits: files are archived 0644 (0444 when read-only),
//! directories 0755, owned by 0:0 — what Linux shows for a vfat mount with umask 022 as root.
//! FAT times are local time without a zone; they are archived as if UTC (to 2 s for mtime).
//! Long file names (VFAT) are kept.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use bunker_actors::stream::snapshot_device::SnapshotDevice;

use crate::disk::Volume;
use crate::fs_tar::{Lister, Meta};
use crate::local::TarBuilder;

/// A volume as a `Read + Seek` device; `Write` fails (bunker never writes a disk).
struct PartIo {
    disk: SnapshotDevice,
    volume: Volume,
    pos: u64,
}

impl Read for PartIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.volume.size.saturating_sub(self.pos)) as usize;
        self.volume.read_at(&mut self.disk, self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PartIo {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => i128::from(p),
            SeekFrom::End(d) => i128::from(self.volume.size) + i128::from(d),
            SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
        };
        self.pos = u64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

impl Write for PartIo {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "bunker reads disks; it never writes them"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Fs = fatfs::FileSystem<PartIo>;

/// Writes the tar of the FAT filesystem on `volume` (on the caller's dedicated thread).
pub(crate) fn write_tar(
    disk: SnapshotDevice,
    volume: &Volume,
    out: Lister<'_>,
    b: &mut TarBuilder<'_, '_>,
) -> io::Result<()> {
    let part = PartIo { disk, volume: volume.clone(), pos: 0 };
    let options = fatfs::FsOptions::new().update_accessed_date(false);
    let fs = Fs::new(part, options).map_err(|e| io::Error::other(format!("not a readable FAT filesystem: {e}")))?;
    walk(&out, b, fs.root_dir(), Path::new(""))
}

fn meta(e: &fatfs::DirEntry<'_, PartIo>) -> Meta {
    let read_only = e.attributes().contains(fatfs::FileAttributes::READ_ONLY);
    let mode = match (e.is_dir(), read_only) {
        (true, _) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    };
    Meta { mode, uid: 0, gid: 0, mtime: seconds(e.modified()) }
}

/// A FAT date and time (no zone) as seconds since the epoch, read as UTC; 0 if invalid.
fn seconds(t: fatfs::DateTime) -> i64 {
    let (d, c) = (t.date, t.time);
    let civil = jiff::civil::DateTime::new(
        d.year as i16,
        d.month as i8,
        d.day as i8,
        c.hour as i8,
        c.min as i8,
        c.sec as i8,
        0,
    );
    civil.and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC)).map(|z| z.timestamp().as_second()).unwrap_or(0)
}

fn walk(out: &Lister<'_>, b: &mut TarBuilder<'_, '_>, dir: fatfs::Dir<'_, PartIo>, at: &Path) -> io::Result<()> {
    let mut entries = Vec::new();
    for e in dir.iter() {
        let e = e?;
        let name = e.file_name();
        if name != "." && name != ".." && !e.attributes().contains(fatfs::FileAttributes::VOLUME_ID) {
            entries.push((name, e));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, e) in entries {
        let rel = at.join(&name);
        if e.is_dir() {
            out.dir(b, &rel, meta(&e))?;
            walk(out, b, e.to_dir(), &rel)?;
        } else if e.is_file() {
            out.file(b, &rel, meta(&e), e.len(), e.to_file())?;
        } else {
            out.skip(&rel.to_string_lossy(), "neither a file nor a directory");
        }
    }
    Ok(())
}
