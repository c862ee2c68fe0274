//! What is on a disk image: its partitions (GPT through the `gpt` crate, MBR with logical
//! partitions through `mbrman`, or none: one filesystem on the whole disk) and, for each, the
//! filesystem its superblock names. Only reads: the partition crates get a device whose
//! writes fail.

use std::io::{self, Read, Seek, SeekFrom, Write};

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

/// One region of the disk that may hold a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The partition's number (1-based, as Linux numbers them), or None for the whole disk.
    pub number: Option<u32>,
    /// Its first byte on the disk.
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The filesystem its superblock names: "ext4", "xfs", "ntfs", "vfat", "btrfs",
    /// "LVM2_member", "swap", or "unknown".
    pub filesystem: &'static str,
}

impl Volume {
    /// Whether bunker reads this filesystem in user space (ext2/3/4 with `ext4-view`, FAT
    /// with `fatfs`).
    pub fn readable(&self) -> bool {
        matches!(self.filesystem, "ext4" | "vfat")
    }

    /// Whether only the kernel reads this filesystem (XFS, Btrfs): bunker exports it through
    /// a temporary volume, mounted read-only without journal replay.
    pub fn needs_kernel(&self) -> bool {
        matches!(self.filesystem, "xfs" | "btrfs")
    }

    /// "partition 2" or "the whole disk".
    pub fn describe(&self) -> String {
        match self.number {
            Some(n) => format!("partition {n}"),
            None => "the whole disk".into(),
        }
    }
}

const SECTOR: u64 = 512;

/// The disk's volumes in partition order, each with its filesystem named.
pub fn volumes(disk: &mut dyn Disk) -> io::Result<Vec<Volume>> {
    let mut regions = partitions(disk)?;
    if regions.is_empty() {
        regions.push((None, 0, disk.size()));
    }
    let mut out = Vec::new();
    for (number, start, size) in regions {
        let filesystem = identify(disk, start, size)?;
        out.push(Volume { number, start, size, filesystem });
    }
    Ok(out)
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

/// The filesystem whose signature the region carries.
fn identify(disk: &mut dyn Disk, start: u64, size: u64) -> io::Result<&'static str> {
    let mut head = vec![0u8; 0x11000.min(size) as usize];
    disk.read_at(start, &mut head)?;
    let at = |o: usize, sig: &[u8]| head.get(o..o + sig.len()) == Some(sig);
    Ok(if at(1024 + 0x38, &[0x53, 0xEF]) {
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
    })
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
        assert_eq!(found[0], Volume { number: Some(1), start: 1 << 20, size: 2 << 20, filesystem: "ext4" });
        assert_eq!((found[1].number, found[1].filesystem, found[1].readable()), (Some(2), "xfs", false));

        let mut bare = vec![0u8; 4 << 20];
        ext_superblock(&mut bare, 0);
        assert_eq!(volumes(&mut bare).unwrap(), [Volume { number: None, start: 0, size: 4 << 20, filesystem: "ext4" }]);
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
