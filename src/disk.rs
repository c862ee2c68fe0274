//! What is on a disk image: its partitions (GPT through the `gpt` crate, MBR with logical
//! partitions through `mbrman`, or none: one filesystem on the whole disk) and, for each, the
//! filesystem its superblock names. Only reads: the partition crates get a device whose
//! writes fail.

use std::io::{self, Read, Seek, SeekFrom, Write};

pub use crate::lvm::Run;

/// Random, exact reads of a disk.
pub trait Disk {
    /// The disk's size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl Disk for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = self.get(start..start + buf.len()).ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// One region of the disk that may hold a filesystem: a partition, the whole disk, or a
/// logical volume of an LVM physical volume on either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The partition's number (1-based, as Linux numbers them), or None for the whole disk.
    pub number: Option<u32>,
    /// Its first byte on the disk (a logical volume's first run's).
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The filesystem its superblock names: "ext4", "xfs", "ntfs", "vfat", "btrfs",
    /// "LVM2_member", "swap", or "unknown".
    pub filesystem: &'static str,
    /// The logical volume ("vg/lv") it is, with the runs of disk bytes holding it.
    pub lv: Option<(String, Vec<Run>)>,
    /// Why bunker does not read it, when its layout (not its filesystem) is the reason.
    pub unread: Option<String>,
}

impl Volume {
    /// A partition or whole disk holding `filesystem`.
    pub fn plain(number: Option<u32>, start: u64, size: u64, filesystem: &'static str) -> Volume {
        Volume { number, start, size, filesystem, lv: None, unread: None }
    }

    /// Whether bunker reads this filesystem in user space (ext2/3/4 with `ext4-view`, FAT
    /// with `fatfs`).
    pub fn readable(&self) -> bool {
        self.unread.is_none() && matches!(self.filesystem, "ext4" | "vfat")
    }

    /// Whether only the kernel reads this filesystem (XFS, Btrfs): bunker exports it through
    /// a temporary volume, mounted read-only without journal replay.
    pub fn needs_kernel(&self) -> bool {
        self.unread.is_none() && matches!(self.filesystem, "xfs" | "btrfs")
    }

    /// "partition 2", "the whole disk", "logical volume vg/root on partition 2".
    pub fn describe(&self) -> String {
        let on = match self.number {
            Some(n) => format!("partition {n}"),
            None => "the whole disk".into(),
        };
        match &self.lv {
            Some((name, _)) => format!("logical volume {name} on {on}"),
            None => on,
        }
    }

    /// How many pieces of the disk hold it: 1 for a partition or the whole disk; a logical
    /// volume's runs (0 when it is not read). Only a volume in one piece can be mounted as a
    /// range of the disk.
    pub fn pieces(&self) -> usize {
        self.lv.as_ref().map_or(1, |(_, runs)| runs.len())
    }

    /// The first disk byte the volume holds.
    pub fn first(&self) -> u64 {
        match &self.lv {
            Some((_, runs)) => runs.iter().map(|r| r.disk).min().unwrap_or(self.start),
            None => self.start,
        }
    }

    /// One past the last disk byte the volume holds (read-ahead stops there).
    pub fn end(&self) -> u64 {
        match &self.lv {
            Some((_, runs)) => runs.iter().map(|r| r.disk + r.len).max().unwrap_or(self.start),
            None => self.start + self.size,
        }
    }

    /// Fills `buf` from byte `at` of the volume (through its runs, for a logical volume).
    pub fn read_at(&self, disk: &mut dyn Disk, at: u64, buf: &mut [u8]) -> io::Result<()> {
        if at.checked_add(buf.len() as u64).is_none_or(|e| e > self.size) {
            let what = format!("read at {at} is past the end of the {}-byte {}", self.size, self.describe());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, what));
        }
        let Some((_, runs)) = &self.lv else { return disk.read_at(self.start + at, buf) };
        let mut done = 0;
        while done < buf.len() {
            let pos = at + done as u64;
            let run = runs.iter().find(|r| pos >= r.at && pos < r.at + r.len).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("byte {pos} of {} is in no run", self.describe()))
            })?;
            let n = ((run.at + run.len - pos) as usize).min(buf.len() - done);
            disk.read_at(run.disk + pos - run.at, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

const SECTOR: u64 = 512;

/// The disk's volumes in partition order (an LVM physical volume's logical volumes by name,
/// in its place), each with its filesystem named.
pub fn volumes(disk: &mut dyn Disk) -> io::Result<Vec<Volume>> {
    let mut regions = partitions(disk)?;
    if regions.is_empty() {
        regions.push((None, 0, disk.size()));
    }
    let mut out = Vec::new();
    for (number, start, size) in regions {
        let mut v = Volume::plain(number, start, size, "unknown");
        v.filesystem = identify(&head(disk, &v)?);
        if v.filesystem == "LVM2_member" {
            match crate::lvm::logical_volumes(disk, start, size) {
                Ok(lvs) if !lvs.is_empty() => {
                    for lv in lvs {
                        out.push(logical(disk, number, lv)?);
                    }
                    continue;
                }
                Ok(_) => v.unread = Some("an LVM physical volume holding no logical volume".into()),
                Err(why) => v.unread = Some(why),
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// A logical volume as a volume of the disk, its filesystem named; one only the kernel reads
/// is left unread unless it lies in one piece (bunker mounts a range of the disk, and never
/// activates LVM to join pieces).
fn logical(disk: &mut dyn Disk, number: Option<u32>, lv: crate::lvm::LogicalVolume) -> io::Result<Volume> {
    let (runs, unread) = match lv.runs {
        Ok(runs) => (runs, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    let start = runs.first().map_or(0, |r| r.disk);
    let mut v = Volume { number, start, size: lv.size, filesystem: "unknown", lv: Some((lv.name, runs)), unread };
    if v.unread.is_some() || v.size == 0 {
        return Ok(v);
    }
    v.filesystem = identify(&head(disk, &v)?);
    let pieces = v.pieces();
    if matches!(v.filesystem, "xfs" | "btrfs") && pieces > 1 {
        v.unread = Some(format!(
            "{} lies in {pieces} pieces on the disk; bunker mounts a logical volume only when it lies in one \
             (it never activates LVM)",
            v.filesystem
        ));
    }
    Ok(v)
}

/// The first bytes of a volume, where filesystems keep their signatures.
fn head(disk: &mut dyn Disk, v: &Volume) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; 0x11000.min(v.size) as usize];
    v.read_at(disk, 0, &mut head)?;
    Ok(head)
}

/// (number, start, size) of each partition; empty when the disk has no partition table.
fn partitions(disk: &mut dyn Disk) -> io::Result<Vec<(Option<u32>, u64, u64)>> {
    let mut sector = [0u8; 512];
    disk.read_at(0, &mut sector)?;
    if sector[510..512] != [0x55, 0xAA] || is_boot_sector(&sector) {
        return Ok(Vec::new());
    }
    let protective = (0..4).any(|i| sector[446 + i * 16 + 4] == 0xEE);
    let mut dev = Device { disk, pos: 0 };
    if protective {
        let gpt = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            .open_from_device(&mut dev)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("GPT: {e}")))?;
        return Ok(gpt
            .partitions()
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(n, p)| (Some(*n), p.first_lba * SECTOR, (p.last_lba + 1 - p.first_lba) * SECTOR))
            .collect());
    }
    let mbr = mbrman::MBR::read_from(&mut dev, SECTOR as u32)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("MBR: {e}")))?;
    let mut found: Vec<_> = mbr
        .iter()
        .filter(|(_, p)| p.is_used() && !matches!(p.sys, 0x05 | 0x0F | 0x85))
        .map(|(n, p)| (Some(n as u32), u64::from(p.starting_lba) * SECTOR, u64::from(p.sectors) * SECTOR))
        .collect();
    found.sort_by_key(|(n, ..)| *n);
    Ok(found)
}

/// A FAT or NTFS boot sector on the whole disk also ends in 55 AA: not a partition table.
fn is_boot_sector(sector: &[u8; 512]) -> bool {
    &sector[3..11] == b"NTFS    "
        || &sector[54..59] == b"FAT12"
        || &sector[54..59] == b"FAT16"
        || &sector[82..87] == b"FAT32"
}

/// The filesystem whose signature a volume's first bytes carry.
fn identify(head: &[u8]) -> &'static str {
    let at = |o: usize, sig: &[u8]| head.get(o..o + sig.len()) == Some(sig);
    if at(1024 + 0x38, &[0x53, 0xEF]) {
        "ext4"
    } else if at(0, b"XFSB") {
        "xfs"
    } else if at(3, b"NTFS    ") {
        "ntfs"
    } else if at(54, b"FAT") || at(82, b"FAT32") {
        "vfat"
    } else if at(0x10040, b"_BHRfS_M") {
        "btrfs"
    } else if at(512, b"LABELONE") {
        "LVM2_member"
    } else if at(4086, b"SWAPSPACE2") {
        "swap"
    } else {
        "unknown"
    }
}

/// A read-only `Read + Seek` view of a disk for the partition crates.
struct Device<'a> {
    disk: &'a mut dyn Disk,
    pos: u64,
}

impl std::fmt::Debug for Device<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("pos", &self.pos).finish()
    }
}

impl Read for Device<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.disk.size().saturating_sub(self.pos)) as usize;
        self.disk.read_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Device<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let size = self.disk.size() as i128;
        let pos = match to {
            SeekFrom::Start(p) => i128::from(p),
            SeekFrom::End(d) => size + i128::from(d),
            SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
        };
        self.pos = u64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

impl Write for Device<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "bunker reads disks; it never writes them"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext_superblock(disk: &mut [u8], start: usize) {
        disk[start + 1024 + 0x38..start + 1024 + 0x3A].copy_from_slice(&[0x53, 0xEF]);
    }

    fn mbr_entry(disk: &mut [u8], slot: usize, sys: u8, first: u32, sectors: u32) {
        let e = &mut disk[446 + slot * 16..446 + slot * 16 + 16];
        e[4] = sys;
        e[8..12].copy_from_slice(&first.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
    }

    #[test]
    fn an_mbr_disk_names_each_partitions_filesystem_and_a_bare_one_is_the_whole_disk() {
        let mut disk = vec![0u8; 8 << 20];
        mbr_entry(&mut disk, 0, 0x83, 2048, 4096);
        mbr_entry(&mut disk, 1, 0x83, 6144, 8192);
        disk[510..512].copy_from_slice(&[0x55, 0xAA]);
        ext_superblock(&mut disk, 2048 * 512);
        disk[6144 * 512..6144 * 512 + 4].copy_from_slice(b"XFSB");
        let found = volumes(&mut disk).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], Volume::plain(Some(1), 1 << 20, 2 << 20, "ext4"));
        assert_eq!((found[1].number, found[1].filesystem, found[1].readable()), (Some(2), "xfs", false));

        let mut bare = vec![0u8; 4 << 20];
        ext_superblock(&mut bare, 0);
        assert_eq!(volumes(&mut bare).unwrap(), [Volume::plain(None, 0, 4 << 20, "ext4")]);
        let mut blank = vec![0u8; 1 << 20];
        assert_eq!(volumes(&mut blank).unwrap()[0].filesystem, "unknown");
    }

    #[test]
    fn the_partition_crates_cannot_write() {
        let mut disk = vec![0u8; 4096];
        let mut dev = Device { disk: &mut disk, pos: 0 };
        assert_eq!(dev.write_all(b"x").unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(dev.seek(SeekFrom::End(-96)).unwrap(), 4000);
        let mut buf = [0u8; 200];
        assert_eq!(dev.read(&mut buf).unwrap(), 96, "a read stops at the end");
    }
}
