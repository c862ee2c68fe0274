//! `bunker export ebs SNAPSHOT --files`: each ext2/3/4 and FAT filesystem of a snapshot archived as
//! a tar stream with a catalog, read in place through the EBS direct APIs: no volume, no
//! mount, no privileges. Only the blocks the filesystem reader touches are fetched. Once
//! every filesystem is archived, an index (`<name>.files.json`) names their archives and the
//! filesystems not exported; the service (`export.ebs_format`) takes it as the mark of a
//! finished file-level export.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bunker_actors::metrics::Metrics;
use bunker_actors::stream::export::ExportSummary;
use bunker_actors::stream::exporter_actor::{run_export, PreparedExport};
use bunker_actors::stream::snapshot_device::{BlockMap, SnapshotDevice};
use bunker_actors::stream::{Progress, SourceItem, StreamError};
use bunker_protocol::archive::{
    files_index_key, FilesIndex, FilesystemRef, IndexedFilesystem, SkippedFilesystem, TreeStats, FILES_INDEX_FORMAT,
};
use bunker_protocol::catalog::CatalogEntry;
use bunker_protocol::vault::PointRef;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::archive_cli::{
    fail, input, open_snapshot, print_value, progress_bar, tar_request, ExportOpts, OpenedSnapshot,
};
use crate::aws::Aws;
use crate::disk::{self, Volume};
use crate::exit::Fatal;

/// Snapshot blocks (512 KiB) a filesystem reader keeps cached: 64 MiB.
const CACHE_BLOCKS: usize = 128;
/// Blocks fetched at once when reads move forward: 4 MiB.
const READAHEAD_BLOCKS: usize = 8;

/// What `export ebs --files` did.
#[derive(Debug, Serialize)]
pub(crate) struct FilesReport {
    pub(crate) snapshot: String,
    /// The filesystems archived, in partition order.
    pub(crate) filesystems: Vec<Exported>,
    /// Volumes whose filesystem bunker does not read in place.
    pub(crate) not_exported: Vec<NotExported>,
    /// Snapshot blocks allocated, and those fetched (a block evicted from a filesystem's
    /// cache, or read for two filesystems, counts each time).
    pub(crate) blocks_allocated: u64,
    pub(crate) blocks_fetched: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Exported {
    #[serde(flatten)]
    filesystem: FilesystemRef,
    export: ExportSummary,
    tree: TreeStats,
    catalog_entries: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct NotExported {
    #[serde(flatten)]
    pub(crate) filesystem: FilesystemRef,
    pub(crate) reason: String,
}

pub(crate) fn reference(v: &Volume) -> FilesystemRef {
    FilesystemRef {
        partition: v.number,
        kind: v.filesystem.to_string(),
        start: v.start,
        size: v.size,
        lv: v.lv.as_ref().map(|(name, _)| name.clone()),
    }
}

/// Runs the export; exit 0 when every filesystem and entry was archived, 1 when some were
/// not (named: a filesystem bunker does not read, or one it could not read), 2 when the disk
/// holds no filesystem bunker reads.
pub(crate) async fn export(
    aws: &Aws,
    region: &str,
    snapshot: &str,
    opts: &ExportOpts,
    progress: Arc<Progress>,
    json: bool,
) -> Result<u8, Fatal> {
    if opts.chunk_mib == 0 || opts.chunk_mib > 1024 {
        return Err(input(format!("--chunk-mib {}: must be 1 to 1024", opts.chunk_mib)));
    }
    let report = export_files(aws, region, snapshot, opts, None, progress, json).await.map_err(|e| match e {
        StreamError::Input(m) => input(m),
        e => fail(e),
    })?;
    let incomplete = !report.not_exported.is_empty() || report.filesystems.iter().any(|f| !f.tree.skipped.is_empty());
    print_value(&report, json, human);
    for n in &report.not_exported {
        eprintln!("bunker: {}", n.reason);
    }
    for f in report.filesystems.iter().filter(|f| !f.tree.skipped.is_empty()) {
        eprintln!(
            "bunker: {} entries of {} were not archived (the manifest's tree.skipped):",
            f.tree.skipped.len(),
            f.export.archive
        );
        for s in f.tree.skipped.iter().take(20) {
            eprintln!("  {s}");
        }
    }
    Ok(u8::from(incomplete))
}

/// A snapshot opened for a file-level export, with its partition table read.
pub(crate) struct Probed {
    opened: OpenedSnapshot,
    blocks: Arc<BlockMap>,
    fetched: Arc<AtomicU64>,
    /// The disk's volumes, in partition order.
    pub(crate) volumes: Vec<Volume>,
    /// The reader that found them (its cache holds the first superblock, at least).
    probe: Option<SnapshotDevice>,
}

impl Probed {
    /// Whether a volume holds a filesystem only the kernel reads (XFS, Btrfs): exported
    /// through a temporary volume when that is enabled.
    pub(crate) fn needs_kernel(&self) -> bool {
        self.volumes.iter().any(Volume::needs_kernel)
    }
}

/// A cached reader of the snapshot's blocks whose fetches count in `fetched`, keeping the
/// blocks it fetched on local disk too (`--cache-mib`).
fn device(
    opened: &OpenedSnapshot,
    blocks: &Arc<BlockMap>,
    fetched: &Arc<AtomicU64>,
    opts: &ExportOpts,
) -> Result<SnapshotDevice, StreamError> {
    let dev = SnapshotDevice::new(opened.reader.clone(), blocks.clone(), CACHE_BLOCKS, READAHEAD_BLOCKS)
        .counting(fetched.clone());
    Ok(match spill_file(opts, opened.reader.block_size())? {
        Some((file, n)) => dev.spilling_to(file, n),
        None => dev,
    })
}

/// An unnamed 0600 file in the cache directory, and the blocks it may hold: `--cache-mib`, and
/// at most half the space free there. A directory the user named must work; the default one
/// (`$TMPDIR`, else `/var/tmp`) failing only costs requests, with a warning.
fn spill_file(opts: &ExportOpts, block_size: u64) -> Result<Option<(std::fs::File, u64)>, StreamError> {
    if opts.cache_mib == 0 {
        return Ok(None);
    }
    let named = opts.cache_dir.clone();
    let dir = named
        .clone()
        .or_else(|| std::env::var_os("TMPDIR").map(std::path::PathBuf::from))
        .unwrap_or_else(|| "/var/tmp".into());
    let opened = rustix::fs::statvfs(&dir)
        .map_err(std::io::Error::from)
        .and_then(|fs| Ok((tempfile::tempfile_in(&dir)?, fs.f_bavail.saturating_mul(fs.f_frsize))));
    match opened {
        Ok((file, free)) => {
            let blocks = opts.cache_mib.saturating_mul(1 << 20).min(free / 2) / block_size.max(1);
            Ok((blocks > 0).then_some((file, blocks)))
        }
        Err(e) if named.is_some() => Err(StreamError::Input(format!(
            "--cache-dir {}: {e}; name a writable directory, or --cache-mib 0 for no block cache on disk",
            dir.display()
        ))),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no block cache on disk; blocks read again are fetched again");
            Ok(None)
        }
    }
}

/// Opens `snapshot` (each manifest naming `point`, when it is a recovery point) and reads its
/// partition table through the EBS direct APIs.
pub(crate) async fn probe(
    aws: &Aws,
    region: &str,
    snapshot: &str,
    opts: &ExportOpts,
    point: Option<PointRef>,
    progress: Arc<Progress>,
) -> Result<Probed, StreamError> {
    let mut opened = open_snapshot(aws, region, snapshot, None, opts, progress).await?;
    opened.source.recovery_point = point;
    let blocks = Arc::new(opened.reader.block_map().await?);
    let fetched = Arc::new(AtomicU64::new(0));
    let mut probe = device(&opened, &blocks, &fetched, opts)?;
    let (volumes, probe) = tokio::task::spawn_blocking(move || (disk::volumes(&mut probe), probe))
        .await
        .map_err(|e| StreamError::Internal(format!("partition reader: {e}")))?;
    let volumes =
        volumes.map_err(|e| StreamError::Source(format!("reading the partition table of {snapshot}: {e}")))?;
    Ok(Probed { opened, blocks, fetched, volumes, probe: Some(probe) })
}

/// Archives every filesystem of `snapshot` bunker reads in place to `opts.to` (each manifest
/// naming `point`, when it is a recovery point), then writes the index. A disk with no such
/// filesystem is an input error; a filesystem that cannot be read is named in
/// `not_exported` and the others go on. `quiet`: no progress bar.
pub(crate) async fn export_files(
    aws: &Aws,
    region: &str,
    snapshot: &str,
    opts: &ExportOpts,
    point: Option<PointRef>,
    progress: Arc<Progress>,
    quiet: bool,
) -> Result<FilesReport, StreamError> {
    let probed = probe(aws, region, snapshot, opts, point, progress.clone()).await?;
    export_in_place(probed, opts, progress, quiet, None).await
}

/// [`export_files`] once the snapshot is probed; each archive's progress and end go to
/// `metrics` (the service's), when given.
pub(crate) async fn export_in_place(
    mut p: Probed,
    opts: &ExportOpts,
    progress: Arc<Progress>,
    quiet: bool,
    metrics: Option<Arc<Metrics>>,
) -> Result<FilesReport, StreamError> {
    let snapshot = p.opened.meta.id.clone();
    let (readable, other): (Vec<_>, Vec<_>) = std::mem::take(&mut p.volumes).into_iter().partition(Volume::readable);
    let not_exported: Vec<NotExported> = other.iter().map(not_read).collect();
    if readable.is_empty() {
        let found: Vec<String> = other.iter().map(|v| format!("{} ({})", v.describe(), v.filesystem)).collect();
        let kernel = if other.iter().any(Volume::needs_kernel) { MOUNT_FIX } else { "" };
        return Err(StreamError::Input(format!(
            "snapshot {snapshot} holds no filesystem that bunker reads in place (ext2/3/4, FAT; found: {}); \
             export it as an image instead (without --files, or export.ebs_format = image){kernel}",
            found.join(", ")
        )));
    }
    let mut report = FilesReport {
        snapshot: snapshot.clone(),
        filesystems: Vec::new(),
        not_exported,
        blocks_allocated: p.blocks.len() as u64,
        blocks_fetched: 0,
    };
    for volume in readable {
        let disk = match p.probe.take() {
            Some(d) => d,
            None => device(&p.opened, &p.blocks, &p.fetched, opts)?,
        };
        let filesystem = reference(&volume);
        match export_one(&p.opened, opts, volume, disk, (progress.clone(), quiet, metrics.clone())).await {
            Ok(done) => report.filesystems.push(done),
            // A filesystem that cannot be read (a damaged superblock): named, the others go on;
            // its upload was aborted, so nothing of it is left behind.
            Err(StreamError::Source(why)) => {
                report.not_exported.push(NotExported { filesystem, reason: format!("{why}; not exported") })
            }
            Err(e) => return Err(e),
        }
    }
    report.blocks_fetched = p.fetched.load(Ordering::Relaxed);
    let point = p.opened.source.recovery_point.clone();
    write_index(&p.opened, opts, point, &report).await?;
    Ok(report)
}

/// How a filesystem only the kernel reads gets exported.
const MOUNT_FIX: &str = "; or, on an EC2 instance, through a temporary volume mounted read-only \
     (export ebs --files --mount; in the service export.mount = true)";

/// Writes `<name>.files.json` beside the archives: the mark of a finished file-level export.
pub(crate) async fn write_index(
    opened: &OpenedSnapshot,
    opts: &ExportOpts,
    point: Option<PointRef>,
    report: &FilesReport,
) -> Result<(), StreamError> {
    let name = opts.name.clone().unwrap_or_else(|| opened.source.id.clone());
    let index = FilesIndex {
        format: FILES_INDEX_FORMAT.into(),
        version: 1,
        snapshot: report.snapshot.clone(),
        recovery_point: point,
        filesystems: report
            .filesystems
            .iter()
            .map(|f| IndexedFilesystem { filesystem: f.filesystem.clone(), manifest: key_name(&f.export.manifest) })
            .collect(),
        not_exported: report
            .not_exported
            .iter()
            .map(|n| SkippedFilesystem { filesystem: n.filesystem.clone(), reason: n.reason.clone() })
            .collect(),
    };
    let key = files_index_key(&name);
    let body = serde_json::to_vec_pretty(&index).expect("index serializes");
    opened.store.put(&key, body).await.map_err(|e| StreamError::port(format!("writing {}", opened.store.url(&key)), e))
}

/// The last path component of a URL: a manifest's key relative to its target.
fn key_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or(url).to_string()
}

fn not_read(v: &Volume) -> NotExported {
    let reason = match v.filesystem {
        _ if v.unread.is_some() => {
            format!("{} ({}): {}; not exported", v.describe(), v.filesystem, v.unread.as_deref().unwrap_or_default())
        }
        "unknown" => format!("{}: no filesystem bunker recognises; not exported", v.describe()),
        fs if v.needs_kernel() => format!(
            "{} ({fs}): not read in place (only ext2/3/4 and FAT are); export the snapshot as an image for it{MOUNT_FIX}",
            v.describe()
        ),
        fs => format!(
            "{} ({fs}): not read in place (only ext2/3/4 and FAT are); export the snapshot as an image for it",
            v.describe()
        ),
    };
    NotExported { filesystem: reference(v), reason }
}

async fn export_one(
    opened: &OpenedSnapshot,
    opts: &ExportOpts,
    volume: Volume,
    disk: SnapshotDevice,
    watch: Watch,
) -> Result<Exported, StreamError> {
    let (chunk, capacity) = (opts.chunk_mib << 20, opts.channel_capacity);
    let filesystem = reference(&volume);
    let open = move |s, c| crate::fs_tar::filesystem_tar_reader(disk, volume, chunk, capacity, s, c);
    export_tree(opened, opts, filesystem, open, watch).await
}

/// `<base>.p<N>` for a partition, `<base>` for the whole disk, and `.lv-<vg>-<lv>` after
/// either for a logical volume on it.
fn archive_name(base: String, fs: &FilesystemRef) -> String {
    let mut name = match fs.partition {
        Some(n) => format!("{base}.p{n}"),
        None => base,
    };
    if let Some(lv) = &fs.lv {
        name = format!("{name}.lv-{}", lv.replace('/', "-"));
    }
    name
}

/// Who watches an export: its progress counters, whether it runs without a progress bar
/// (the service, `--json`), and the service's metrics (progress gauges while it runs, bytes
/// and status when it ends).
pub(crate) type Watch = (Arc<Progress>, bool, Option<Arc<Metrics>>);

/// The stream of one filesystem's tar, given where to count and list its entries.
pub(crate) type TreeReader = mpsc::Receiver<Result<SourceItem, StreamError>>;

/// Archives one filesystem's tree as `<name>[.p<N>].tar.zst` with its catalog; `open` starts
/// the tar stream (from the snapshot in place, or from a mount).
pub(crate) async fn export_tree(
    opened: &OpenedSnapshot,
    opts: &ExportOpts,
    filesystem: FilesystemRef,
    open: impl FnOnce(Arc<Mutex<TreeStats>>, Arc<Mutex<Vec<CatalogEntry>>>) -> TreeReader + Send + 'static,
    (progress, json, metrics): Watch,
) -> Result<Exported, StreamError> {
    let base = opts.name.clone().unwrap_or_else(|| opened.source.id.clone());
    let name = archive_name(base, &filesystem);
    let stats = Arc::new(Mutex::new(TreeStats::default()));
    let catalog = Arc::new(Mutex::new(Vec::new()));
    let mut source = opened.source.clone();
    source.filesystem = Some(filesystem.clone());
    let request = tar_request(name, source, opts, stats.clone(), catalog.clone());
    let (s, c) = (stats.clone(), catalog.clone());
    let open = Box::new(move |_| open(s, c));
    let bar = progress_bar(progress.clone(), json);
    // The pipeline itself (no actor): this runs in the CLI and in the service's job passes,
    // which are plain tokio tasks.
    let prepared = PreparedExport { store: opened.store.clone(), request, open };
    let result = run_export(prepared, opts.tuning(), progress, metrics).await;
    drop(bar);
    let export = result?;
    let tree = stats.lock().expect("tree stats").clone();
    let catalog_entries = catalog.lock().expect("catalog").len();
    Ok(Exported { filesystem, export, tree, catalog_entries })
}

fn human(r: &FilesReport) -> String {
    let mut lines = Vec::new();
    for f in &r.filesystems {
        let what = match f.filesystem.partition {
            Some(n) => format!("partition {n}"),
            None => "the whole disk".into(),
        };
        lines.push(format!(
            "exported {what} ({}): {} files, {} directories, {} bytes of content to {} ({} bytes); catalog of {} entries; manifest {}",
            f.filesystem.kind, f.tree.files, f.tree.directories, f.tree.file_bytes, f.export.archive, f.export.archive_size,
            f.catalog_entries, f.export.manifest
        ));
    }
    lines.push(format!("{} of the snapshot's {} allocated blocks were read", r.blocks_fetched, r.blocks_allocated));
    lines.join("\n")
}
