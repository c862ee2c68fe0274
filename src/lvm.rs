//! LVM2 physical volumes read in user space: the `lamlvm` crate finds the label, reads the
//! metadata area (checksums checked, the circular buffer followed) and parses the volume
//! group's text; bunker maps each visible logical volume to the runs of disk bytes holding it.
//! Nothing is activated: the host's device-mapper and LVM never see the snapshot, so a volume
//! group named like one of the host's cannot clash with it.
//!
//! Linear logical volumes (one or more segments, each "striped" with one stripe, on this PV)
//! are read; striped, mirrored, RAID, thin and cache volumes, and segments on other PVs, are
//! named as not read.

use std::io;

use embedded_io::{ErrorKind, ErrorType, Read, Seek, SeekFrom};

use crate::disk::Disk;

/// A run of a logical volume's bytes lying contiguously on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Its first byte within the logical volume.
    pub at: u64,
    /// Its first byte on the disk.
    pub disk: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// One logical volume of a PV: its runs on the disk, or why bunker does not read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalVolume {
    /// "vg/lv", as LVM names it.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its runs in order (adjacent ones merged), or why it is not read.
    pub runs: Result<Vec<Run>, String>,
}

/// The visible logical volumes of the PV at `start..start + size` of `disk`, by name.
pub fn logical_volumes(disk: &mut dyn Disk, start: u64, size: u64) -> Result<Vec<LogicalVolume>, String> {
    let mut io = PvIo { disk, start, size, pos: 0 };
    let lvm = lamlvm::Lvm2::open(&mut io).map_err(|e| format!("LVM metadata not readable: {e}"))?;
    let data = data_area(&mut io)?;
    let extent = lvm.extent_size();
    let mut out = Vec::new();
    for lv in lvm.lvs() {
        let desc = lv.raw_metadata();
        if !desc.status.iter().any(|s| s == "VISIBLE") {
            continue; // a thin pool's or a mirror's own parts
        }
        let name = format!("{}/{}", lvm.vg_name(), lv.name());
        let lv_size = lv.size_in_extents().saturating_mul(extent);
        let runs = if valid_name(lvm.vg_name()) && valid_name(lv.name()) {
            runs(&desc.segments.0, lvm.pv_name(), extent, start + data, start + size).and_then(|r| {
                let covered: u64 = r.iter().map(|r| r.len).sum();
                if covered == lv_size {
                    Ok(r)
                } else {
                    Err(format!("its segments cover {covered} of its {lv_size} bytes"))
                }
            })
        } else {
            // Names become archive names and mount points: only what LVM itself allows.
            Err(format!("{name:?} is not a name LVM allows"))
        };
        out.push(LogicalVolume { name, size: lv_size, runs });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A volume group's or logical volume's name as LVM allows it: letters, digits and `+_.-`,
/// not starting with `-`, not `.` or `..`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
}

/// Where each segment's extents lie on the disk (`data`: the disk offset of the PV's extent 0;
/// `end`: the PV's end), adjacent runs merged.
fn runs(
    segments: &std::collections::BTreeMap<String, lamlvm::metadata::LVSegmentDesc>,
    pv: &str,
    extent: u64,
    data: u64,
    end: u64,
) -> Result<Vec<Run>, String> {
    let mut segs: Vec<_> = segments.iter().collect();
    segs.sort_by_key(|(_, s)| s.start_extent);
    let mut out: Vec<Run> = Vec::new();
    for (name, s) in segs {
        let linear = s.r#type == "striped" && s.stripe_count == Some(1);
        let Some((on, pe)) = s.stripes.as_ref().filter(|_| linear) else {
            return Err(format!("{name} is a {} segment; bunker reads linear logical volumes only", s.r#type));
        };
        if on != pv {
            return Err(format!("{name} lies on another physical volume ({on}) than this disk's"));
        }
        // The metadata is the snapshot's, so untrusted: no arithmetic may wrap.
        let bytes = |n: u64| n.checked_mul(extent);
        let run = match (bytes(s.start_extent), bytes(*pe).and_then(|b| b.checked_add(data)), bytes(s.extent_count)) {
            (Some(at), Some(disk), Some(len)) if at.checked_add(len).is_some() => Run { at, disk, len },
            _ => return Err(format!("{name} has extents out of any disk's range")),
        };
        if run.disk.checked_add(run.len).is_none_or(|e| e > end) {
            return Err(format!("{name} lies past the end of the physical volume"));
        }
        if run.at != out.last().map_or(0, |l| l.at + l.len) {
            return Err(format!("{name} leaves a gap in the volume"));
        }
        match out.last_mut() {
            Some(l) if l.disk + l.len == run.disk => l.len += run.len,
            _ => out.push(run),
        }
    }
    Ok(out)
}

/// The PV's first data area (where extent 0 lies), relative to the PV: the label sector
/// ("LABELONE", one of the first four, recording its own number) gives the PV header's
/// offset (byte 20); the header holds a 32-byte UUID, the device size, then the data areas'
/// (offset, size). lamlvm has checked the label's checksum already.
fn data_area(io: &mut PvIo<'_>) -> Result<u64, String> {
    let mut sector = [0u8; 512];
    for n in 0..4u64 {
        io.disk.read_at(io.start + n * 512, &mut sector).map_err(|e| e.to_string())?;
        let le64 = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        if &sector[..8] != b"LABELONE" || le64(&sector[8..]) != n {
            continue;
        }
        let header = u32::from_le_bytes(sector[20..24].try_into().expect("4 bytes")) as usize;
        let first = sector.get(header + 40..header + 48).ok_or("LVM label: PV header outside its sector")?;
        return Ok(le64(first));
    }
    Err("LVM label not found".into())
}

/// The PV as lamlvm reads it (`embedded-io`): a window of the disk.
struct PvIo<'a> {
    disk: &'a mut dyn Disk,
    start: u64,
    size: u64,
    pos: u64,
}

impl ErrorType for PvIo<'_> {
    type Error = ErrorKind;
}

impl Read for PvIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let n = (buf.len() as u64).min(self.size.saturating_sub(self.pos)) as usize;
        self.disk.read_at(self.start + self.pos, &mut buf[..n]).map_err(|e| kind(&e))?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PvIo<'_> {
    fn seek(&mut self, to: SeekFrom) -> Result<u64, ErrorKind> {
        let pos = match to {
            SeekFrom::Start(p) => i128::from(p),
            SeekFrom::End(d) => i128::from(self.size) + i128::from(d),
            SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
        };
        self.pos = u64::try_from(pos).map_err(|_| ErrorKind::InvalidInput)?;
        Ok(self.pos)
    }
}

fn kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ErrorKind::Other,
        io::ErrorKind::InvalidData => ErrorKind::InvalidData,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{runs, valid_name, Run};

    #[test]
    fn names_that_could_leave_a_directory_are_refused() {
        for ok in ["vg0", "root", "lv_home", "a.b+c-d"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "-x", "a/b", "../etc", "a b", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    fn seg(start: u64, count: u64, kind: &str, stripes: Option<(&str, u64)>) -> lamlvm::metadata::LVSegmentDesc {
        lamlvm::metadata::LVSegmentDesc {
            start_extent: start,
            extent_count: count,
            r#type: kind.into(),
            stripe_count: Some(1),
            stripe_size: None,
            stripes: stripes.map(|(p, e)| (p.to_string(), e)),
            raid0_lvs: None,
        }
    }

    #[test]
    fn segments_map_to_disk_runs_adjacent_ones_merged_and_others_refused() {
        let mut segs = BTreeMap::new();
        segs.insert("segment1".to_string(), seg(0, 16, "striped", Some(("pv0", 0))));
        segs.insert("segment2".to_string(), seg(16, 4, "striped", Some(("pv0", 16))));
        segs.insert("segment3".to_string(), seg(20, 4, "striped", Some(("pv0", 40))));
        let got = runs(&segs, "pv0", 10, 1000, 10_000).unwrap();
        assert_eq!(got, [Run { at: 0, disk: 1000, len: 200 }, Run { at: 200, disk: 1400, len: 40 }]);
        assert!(runs(&segs, "pv1", 10, 1000, 10_000).unwrap_err().contains("another physical volume (pv0)"));
        assert!(runs(&segs, "pv0", 10, 1000, 1300).unwrap_err().contains("past the end"));
        let mut late = BTreeMap::new();
        late.insert("segment1".to_string(), seg(2, 4, "striped", Some(("pv0", 0))));
        assert!(runs(&late, "pv0", 10, 1000, 10_000).unwrap_err().contains("leaves a gap"));
        let mut huge = BTreeMap::new();
        huge.insert("segment1".to_string(), seg(0, u64::MAX / 4, "striped", Some(("pv0", 0))));
        assert!(runs(&huge, "pv0", 10, 1000, 10_000).unwrap_err().contains("out of any disk's range"));
        segs.insert("segment4".to_string(), seg(24, 4, "thin", None));
        assert!(runs(&segs, "pv0", 10, 1000, 10_000).unwrap_err().contains("segment4 is a thin segment"));
    }
}
