//! `bunker export ebs SNAPSHOT --files`: each ext2/3/4 and FAT filesystem of a snapshot archived as
//! a tar stream with a catalog, read in place through the EBS direct APIs: no volume, no
//! mount, no privileges. Only the blocks the filesystem reader touches are fetched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::Actor;
use bunker_actors::stream::export::ExportSummary;
use bunker_actors::stream::exporter_actor::{Export, ExporterActor};
use bunker_actors::stream::snapshot_device::SnapshotDevice;
use bunker_actors::stream::{Progress, StreamError};
use bunker_protocol::archive::{FilesystemRef, TreeStats};
use serde::Serialize;

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
struct FilesReport {
    snapshot: String,
    /// The filesystems archived, in partition order.
    filesystems: Vec<Exported>,
    /// Volumes whose filesystem bunker does not read in place.
    not_exported: Vec<NotExported>,
    /// Snapshot blocks allocated, and those fetched (a block evicted from a filesystem's
    /// cache, or read for two filesystems, counts each time).
    blocks_allocated: u64,
    blocks_fetched: u64,
}

#[derive(Debug, Serialize)]
struct Exported {
    #[serde(flatten)]
    filesystem: FilesystemRef,
    export: ExportSummary,
    tree: TreeStats,
    catalog_entries: usize,
}

#[derive(Debug, Serialize)]
struct NotExported {
    #[serde(flatten)]
    filesystem: FilesystemRef,
    reason: String,
}

fn reference(v: &Volume) -> FilesystemRef {
    FilesystemRef { partition: v.number, kind: v.filesystem.to_string(), start: v.start, size: v.size }
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
    let opened = open_snapshot(aws, region, snapshot, None, opts, progress.clone()).await.map_err(fail)?;
    let blocks = Arc::new(opened.reader.block_map().await.map_err(fail)?);
    let fetched = Arc::new(AtomicU64::new(0));
    let device = || SnapshotDevice::new(opened.reader.clone(), blocks.clone(), CACHE_BLOCKS, READAHEAD_BLOCKS);
    let mut probe = device().counting(fetched.clone());
    let (volumes, probe) = tokio::task::spawn_blocking(move || (disk::volumes(&mut probe), probe))
        .await
        .map_err(|e| fail(StreamError::Internal(format!("partition reader: {e}"))))?;
    let volumes =
        volumes.map_err(|e| fail(StreamError::Source(format!("reading the partition table of {snapshot}: {e}"))))?;
    // The first filesystem reuses what the probe cached (its superblock's block, at least).
    let mut cached = Some(probe);
    let (readable, other): (Vec<_>, Vec<_>) = volumes.into_iter().partition(Volume::readable);
    let not_exported: Vec<NotExported> = other.iter().map(not_read).collect();
    if readable.is_empty() {
        let found: Vec<String> = other.iter().map(|v| format!("{} ({})", v.describe(), v.filesystem)).collect();
        return Err(input(format!(
            "snapshot {snapshot} holds no filesystem that bunker reads in place (ext2/3/4, FAT; found: {}); \
             export it as an image instead (without --files)",
            found.join(", ")
        )));
    }
    let actor = ExporterActor::new(opts.tuning(), None).start();
    let mut report = FilesReport {
        snapshot: snapshot.to_string(),
        filesystems: Vec::new(),
        not_exported,
        blocks_allocated: blocks.len() as u64,
        blocks_fetched: 0,
    };
    for volume in readable {
        let disk = cached.take().unwrap_or_else(|| device().counting(fetched.clone()));
        let filesystem = reference(&volume);
        match export_one(&actor, &opened, opts, volume, disk, progress.clone(), json).await {
            Ok(done) => report.filesystems.push(done),
            // A filesystem that cannot be read (a damaged superblock): named, the others go on;
            // its upload was aborted, so nothing of it is left behind.
            Err(StreamError::Source(why)) => {
                report.not_exported.push(NotExported { filesystem, reason: format!("{why}; not exported") })
            }
            Err(e) => return Err(fail(e)),
        }
    }
    report.blocks_fetched = fetched.load(Ordering::Relaxed);
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

fn not_read(v: &Volume) -> NotExported {
    let reason = match v.filesystem {
        "unknown" => format!("{}: no filesystem bunker recognises; not exported", v.describe()),
        fs => format!(
            "{} ({fs}): not read in place (only ext2/3/4 and FAT are); export the snapshot as an image for it",
            v.describe()
        ),
    };
    NotExported { filesystem: reference(v), reason }
}

async fn export_one(
    actor: &actix::Addr<ExporterActor>,
    opened: &OpenedSnapshot,
    opts: &ExportOpts,
    volume: Volume,
    disk: SnapshotDevice,
    progress: Arc<Progress>,
    json: bool,
) -> Result<Exported, StreamError> {
    let base = opts.name.clone().unwrap_or_else(|| opened.source.id.clone());
    let name = match volume.number {
        Some(n) => format!("{base}.p{n}"),
        None => base,
    };
    let chunk = opts.chunk_mib << 20;
    let stats = Arc::new(Mutex::new(TreeStats::default()));
    let catalog = Arc::new(Mutex::new(Vec::new()));
    let mut source = opened.source.clone();
    source.filesystem = Some(reference(&volume));
    let request = tar_request(name, source, opts, stats.clone(), catalog.clone());
    let capacity = opts.channel_capacity;
    let (s, c) = (stats.clone(), catalog.clone());
    let open = Box::new(move |_| crate::fs_tar::filesystem_tar_reader(disk, volume.clone(), chunk, capacity, s, c));
    let filesystem = request.source.filesystem.clone().expect("set above");
    let bar = progress_bar(progress.clone(), json);
    let result = actor
        .send(Export { store: opened.store.clone(), request, open, progress })
        .await
        .unwrap_or_else(|e| Err(StreamError::Internal(format!("exporter actor: {e}"))));
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
