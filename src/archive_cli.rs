//! `bunker export`, `bunker verify` and `bunker restore`: parse targets, build the stream
//! actors' inputs, show progress, print the result.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Actor;
use anyhow::anyhow;
use bunker_actors::ports::{ArchiveStore, ErrorKind, SnapshotMeta};
use bunker_actors::stream::archive_reader::{self, Archive, RestoreTarget};
use bunker_actors::stream::ebs_reader::EbsReader;
use bunker_actors::stream::export::{manifest_key, BaseExport, ExportRequest, OpenReader};
use bunker_actors::stream::exporter_actor::{Export, ExporterActor, PreparedExport};
use bunker_actors::stream::{Progress, StreamError, Tuning};
use bunker_protocol::archive::{Content, Source, TreeStats, DEFAULT_CHUNK_SIZE, EBS_BLOCK_SIZE};
use bunker_protocol::tags::Tags;
use clap::Subcommand;
use serde::Serialize;

use crate::aws::Aws;
use crate::exit::Fatal;
use crate::local::{self, DirStore, RestoreFile};

/// `bunker export …`
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    what: ExportWhat,
}

#[derive(Debug, Subcommand)]
enum ExportWhat {
    /// An EBS snapshot, read with the EBS direct APIs (no volume, no instance).
    Ebs {
        /// Snapshot id (snap-…).
        snapshot: String,
        /// Export only the blocks changed since this snapshot, whose export must already be
        /// in the same target.
        #[arg(long, value_name = "SNAPSHOT_ID", conflicts_with = "files")]
        base: Option<String>,
        /// Archive the files instead of the image: each ext2/3/4 and FAT filesystem on the disk
        /// (found through its GPT or MBR partition table, or on the whole disk) is read in
        /// place from the snapshot and written as <name>[.p<N>].tar.zst with a catalog.
        #[arg(long)]
        files: bool,
        /// With --files: read the filesystems through a temporary volume made from the
        /// snapshot, attached to this EC2 instance and mounted read-only without journal
        /// replay (XFS, Btrfs, and ext4/FAT too). Needs root (CAP_SYS_ADMIN); the volume is
        /// detached and deleted afterwards, whatever happens.
        #[arg(long, requires = "files")]
        mount: bool,
        #[command(flatten)]
        opts: ExportOpts,
    },
    /// An image file or block device (zero chunks are stored as holes).
    File {
        /// Path of the image file or device.
        path: PathBuf,
        #[command(flatten)]
        opts: ExportOpts,
    },
    /// An AWS Backup recovery point (EBS so far): exported to <to>/recovery-points/<vault>/,
    /// and with export.delete_source deleted once its archive verifies.
    RecoveryPoint {
        /// The recovery point ARN.
        arn: String,
        /// Its vault.
        #[arg(long)]
        vault: String,
        /// Where to: s3://bucket/prefix or file:///directory (default: export.to).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
    },
    /// An RDS DB snapshot, dumped with the engine's own tool from a temporary instance
    /// restored from it (removed afterwards, whatever happens).
    Rds {
        /// The DB snapshot identifier.
        snapshot: String,
        /// `dump` (a native dump; parquet exports run through `export recovery-point`).
        #[arg(long, value_enum, default_value = "dump")]
        format: RdsFormat,
        /// Where to: s3://bucket/prefix or file:///directory (default: export.to).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
    },
    /// An Aurora DB cluster snapshot, dumped with the engine's own tool from a temporary
    /// cluster (and one instance in it) restored from it, removed afterwards whatever happens.
    #[command(name = "rds-cluster")]
    RdsCluster {
        /// The DB cluster snapshot identifier.
        snapshot: String,
        /// `dump` (a native dump; parquet exports run through `export recovery-point`).
        #[arg(long, value_enum, default_value = "dump")]
        format: RdsFormat,
        /// Where to: s3://bucket/prefix or file:///directory (default: export.to).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
    },
    /// A database server's databases, each through the engine's own dump tool (pg_dump,
    /// pg_dumpall --globals-only, mariadb-dump / mysqldump) into its own archive.
    Database(crate::dump_cli::DatabaseArgs),
    /// A directory tree, as a tar stream (file level).
    Path {
        /// The directory.
        dir: PathBuf,
        #[command(flatten)]
        opts: ExportOpts,
    },
}

/// `export rds SNAPSHOT` / `export rds-cluster SNAPSHOT`: what to dump, and where.
#[derive(Debug, Clone)]
pub struct SnapshotDump {
    /// The DB snapshot or DB cluster snapshot identifier.
    pub snapshot: String,
    /// `--to` (default: `export.to`).
    pub to: Option<String>,
    /// A DB cluster snapshot.
    pub cluster: bool,
}

/// What an RDS snapshot export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RdsFormat {
    /// The engine's own dump tool, through a temporary instance.
    Dump,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ExportOpts {
    /// Where to: s3://bucket/prefix or file:///directory.
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,
    /// Name of the archive in the target (default: the snapshot id, or the file's or
    /// directory's name): <name>.img.zst (or .tar.zst) and <name>.manifest.json.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// zstd level, 1–19.
    #[arg(long, default_value_t = Tuning::LEVEL)]
    pub(crate) level: i32,
    /// Chunk size in MiB, a power of two: the unit of random access and of per-chunk hashing.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_CHUNK_SIZE >> 20)]
    pub(crate) chunk_mib: u64,
    /// Also record the whole image's SHA-256 (`image_sha256`, for `sha256sum`) beside its
    /// BLAKE3 (`image_blake3`, for `b3sum`): a second pass over every byte, on its own thread.
    #[arg(long)]
    pub(crate) sha256: bool,
    /// Compressor threads (default: one per core).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Chunks in the pipeline at once: bounds memory (about 2 × this × chunk size).
    #[arg(long, default_value_t = Tuning::CHUNKS_IN_FLIGHT)]
    pub(crate) chunks_in_flight: usize,
    /// Capacity of each channel between stages.
    #[arg(long, default_value_t = Tuning::CHANNEL_CAPACITY)]
    pub(crate) channel_capacity: usize,
    /// Multipart parts uploading at once.
    #[arg(long, default_value_t = Tuning::PARTS_IN_FLIGHT)]
    pub(crate) parts_in_flight: usize,
    /// Concurrent GetSnapshotBlock calls at most (adaptive below on throttling).
    #[arg(long, default_value_t = Tuning::BLOCK_REQUESTS)]
    pub(crate) block_requests: usize,
    /// `--files` in place: snapshot blocks kept on local disk once fetched, so a filesystem
    /// read in path order fetches each block once (at most half the free space there; 0: none).
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_CACHE_MIB)]
    pub(crate) cache_mib: u64,
    /// Where that cache lives: an unnamed 0600 file, gone when the export ends (default:
    /// $TMPDIR, else /var/tmp).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<std::path::PathBuf>,
}

/// `--cache-mib`'s default: 4 GiB of local disk.
pub(crate) const DEFAULT_CACHE_MIB: u64 = 4096;

impl ExportArgs {
    /// `export recovery-point`'s (ARN, vault, target), if that is the export asked for.
    pub fn recovery_point(&self) -> Option<(String, String, Option<String>)> {
        match &self.what {
            ExportWhat::RecoveryPoint { arn, vault, to } => Some((arn.clone(), vault.clone(), to.clone())),
            _ => None,
        }
    }

    /// `export rds`'s or `export rds-cluster`'s snapshot dump, if that is the export asked
    /// for.
    pub fn rds_snapshot(&self) -> Option<SnapshotDump> {
        let dump = |snapshot: &String, to: &Option<String>, cluster| SnapshotDump {
            snapshot: snapshot.clone(),
            to: to.clone(),
            cluster,
        };
        match &self.what {
            ExportWhat::Rds { snapshot, to, format: RdsFormat::Dump } => Some(dump(snapshot, to, false)),
            ExportWhat::RdsCluster { snapshot, to, format: RdsFormat::Dump } => Some(dump(snapshot, to, true)),
            _ => None,
        }
    }

    /// `export ebs --files --mount`'s snapshot and options, if that is the export asked for.
    pub(crate) fn mounted_files(&self) -> Option<(String, ExportOpts)> {
        match &self.what {
            ExportWhat::Ebs { snapshot, files: true, mount: true, opts, .. } => Some((snapshot.clone(), opts.clone())),
            _ => None,
        }
    }

    /// Whether this export reads or writes anything in AWS (an EBS snapshot, an S3 target).
    pub fn reaches_aws(&self) -> bool {
        match &self.what {
            ExportWhat::Ebs { .. }
            | ExportWhat::RecoveryPoint { .. }
            | ExportWhat::Rds { .. }
            | ExportWhat::RdsCluster { .. } => true,
            ExportWhat::File { opts, .. } | ExportWhat::Path { opts, .. } => opts.to.starts_with("s3://"),
            ExportWhat::Database(args) => args.reaches_aws(),
        }
    }
}

impl ExportOpts {
    pub(crate) fn tuning(&self) -> Tuning {
        let d = Tuning::default();
        Tuning {
            chunks_in_flight: self.chunks_in_flight,
            channel_capacity: self.channel_capacity,
            compress_threads: self.threads.unwrap_or(d.compress_threads),
            parts_in_flight: self.parts_in_flight,
            block_requests: self.block_requests,
        }
    }
}

pub(crate) fn fail(e: StreamError) -> Fatal {
    let code = match &e {
        StreamError::Input(_) => 2,
        _ => 1,
    };
    Fatal { code, error: anyhow!(e) }
}

/// [`fail`] for a whole command: the message says which (`verify failed: …`).
fn failed(command: &'static str) -> impl Fn(StreamError) -> Fatal {
    move |e| Fatal { error: anyhow!("{command} failed: {e}"), ..fail(e) }
}

pub(crate) fn input(msg: String) -> Fatal {
    crate::exit::usage(anyhow!(msg))
}

/// Where archives go, or where one is.
enum Location {
    S3 { bucket: String, key: String },
    Dir(PathBuf),
}

fn parse_location(url: &str, flag: &str) -> Result<Location, Fatal> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(input(format!("{flag} {url:?}: no bucket; expected s3://bucket/prefix")));
        }
        return Ok(Location::S3 { bucket: bucket.to_string(), key: key.trim_matches('/').to_string() });
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(input(format!("{flag} {url:?}: file URLs need an absolute path, e.g. file:///var/backups")));
        }
        return Ok(Location::Dir(PathBuf::from(path)));
    }
    Err(input(format!("{flag} {url:?}: expected s3://bucket/prefix or file:///directory")))
}

/// The region, for commands that reach AWS; local targets and files need none.
fn need(region: Option<&str>) -> Result<&str, Fatal> {
    region.ok_or_else(|| input("no region: set `regions` in the config file, pass --region, or set AWS_REGION".into()))
}

/// The store for a target prefix.
pub(crate) fn target_store(aws: &Aws, region: Option<&str>, url: &str) -> Result<Arc<dyn ArchiveStore>, Fatal> {
    Ok(match parse_location(url, "--to")? {
        Location::S3 { bucket, key } => aws.archive_store(need(region)?, bucket, key),
        Location::Dir(p) => Arc::new(DirStore::new(p)),
    })
}

/// The store holding an object, and the object's key in it.
pub(crate) fn object_store(
    aws: &Aws,
    region: Option<&str>,
    url: &str,
) -> Result<(Arc<dyn ArchiveStore>, String), Fatal> {
    let split = |k: &str| match k.rsplit_once('/') {
        Some((d, n)) => (d.to_string(), n.to_string()),
        None => (String::new(), k.to_string()),
    };
    match parse_location(url, "archive")? {
        Location::S3 { bucket, key } => {
            let (dir, name) = split(&key);
            Ok((aws.archive_store(need(region)?, bucket, dir), name))
        }
        Location::Dir(p) => {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
            Ok((Arc::new(DirStore::new(dir)), name))
        }
    }
}

/// Live progress on stderr: a bar with bytes, rate and ETA when stderr is a terminal and
/// the output is not JSON; nothing otherwise. Dropped (or [`Bar::done`]), it clears itself.
pub(crate) struct Bar {
    bar: indicatif::ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Bar {
    fn done(self) {}
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

pub(crate) fn progress_bar(progress: Arc<Progress>, json: bool) -> Bar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar =
        if json { ProgressBar::hidden() } else { ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()) };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("template parses"),
    );
    let shown = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            let total = Progress::get(&progress.total);
            if total > 0 {
                shown.set_length(total);
            }
            shown.set_position(Progress::get(&progress.bytes_in));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Bar { bar, ticker }
}

/// Peak resident memory of this process (VmHWM), for the JSON output and the benchmarks.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

#[derive(Serialize)]
struct WithRss<T: Serialize> {
    #[serde(flatten)]
    inner: T,
    peak_rss_bytes: Option<u64>,
}

/// Prints a result: one JSON document (with the peak RSS) or the human line.
pub(crate) fn print_value<T: Serialize>(value: &T, json: bool, human: impl FnOnce(&T) -> String) {
    if json {
        let out = WithRss { inner: value, peak_rss_bytes: peak_rss() };
        println!("{}", serde_json::to_string_pretty(&out).expect("output serializes"));
    } else {
        println!("{}", human(value));
    }
}

fn print<T: Serialize>(value: T, json: bool, human: impl FnOnce(&T) -> String) {
    if json {
        let out = WithRss { inner: value, peak_rss_bytes: peak_rss() };
        println!("{}", serde_json::to_string_pretty(&out).expect("output serializes"));
    } else {
        println!("{}", human(&value));
    }
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds.max(1e-9)
}

impl ExportOpts {
    /// The defaults, as the service's exports (queue commands, `export.to`) use them.
    pub(crate) fn service(to: &str) -> ExportOpts {
        ExportOpts {
            to: to.to_string(),
            name: None,
            level: Tuning::LEVEL,
            chunk_mib: DEFAULT_CHUNK_SIZE >> 20,
            sha256: false,
            threads: None,
            chunks_in_flight: Tuning::CHUNKS_IN_FLIGHT,
            channel_capacity: Tuning::CHANNEL_CAPACITY,
            parts_in_flight: Tuning::PARTS_IN_FLIGHT,
            block_requests: Tuning::BLOCK_REQUESTS,
            cache_mib: DEFAULT_CACHE_MIB,
            cache_dir: None,
        }
    }
}

/// A completed snapshot, looked up, with its target and a reader of its blocks.
pub(crate) struct OpenedSnapshot {
    /// Where the export goes.
    pub store: Arc<dyn ArchiveStore>,
    /// What EBS says of the snapshot.
    pub meta: SnapshotMeta,
    /// Its blocks, through the EBS direct APIs.
    pub reader: Arc<EbsReader>,
    /// The manifest's source section.
    pub source: Source,
}

/// Looks `snapshot` up (it must exist and be completed) and opens a reader of its blocks
/// (only those changed since `base`, when given).
pub(crate) async fn open_snapshot(
    aws: &Aws,
    region: &str,
    snapshot: &str,
    base: Option<&str>,
    opts: &ExportOpts,
    progress: Arc<Progress>,
) -> Result<OpenedSnapshot, StreamError> {
    let store = target_store(aws, Some(region), &opts.to).map_err(|f| StreamError::Input(format!("{:#}", f.error)))?;
    let port = aws.snapshot_blocks(region);
    let meta = match port.describe(snapshot).await {
        Ok(m) => m,
        Err(e) if e.kind == ErrorKind::NotFound || e.code.as_deref().is_some_and(|c| c.contains("Malformed")) => {
            return Err(StreamError::Input(format!(
                "snapshot {snapshot} does not exist in {region} (check the id and --region)"
            )))
        }
        Err(e) => return Err(StreamError::port(format!("describing {snapshot}"), e)),
    };
    if !meta.completed {
        return Err(StreamError::Input(format!("snapshot {snapshot} is not completed yet; export it once it is")));
    }
    let reader = Arc::new(EbsReader::new(
        port,
        snapshot.to_string(),
        base.map(String::from),
        meta.volume_size,
        EBS_BLOCK_SIZE,
        opts.chunk_mib << 20,
        opts.block_requests,
        opts.chunks_in_flight,
        progress,
    ));
    let source = Source {
        kind: "ebs-snapshot".into(),
        id: snapshot.to_string(),
        volume_id: meta.volume_id.clone(),
        account: meta.owner.clone(),
        region: Some(region.to_string()),
        tags: meta.tags.clone().into_iter().collect(),
        recovery_point: None,
        filesystem: None,
    };
    Ok(OpenedSnapshot { store, meta, reader, source })
}

/// An EBS snapshot export, ready to run: the snapshot looked up (it must be completed), the
/// base's export loaded for an incremental one.
pub(crate) async fn prepare_ebs(
    aws: &Aws,
    region: &str,
    snapshot: &str,
    base: Option<&str>,
    opts: &ExportOpts,
    progress: Arc<Progress>,
) -> Result<PreparedExport, StreamError> {
    let OpenedSnapshot { store, meta, reader, source } =
        open_snapshot(aws, region, snapshot, base, opts, progress).await?;
    let base_export = match base {
        Some(b) => Some(load_base(store.clone(), b, meta.volume_size).await?),
        None => None,
    };
    let capacity = opts.channel_capacity;
    let request = ExportRequest {
        name: opts.name.clone().unwrap_or_else(|| snapshot.to_string()),
        content: Content::Image,
        source,
        image_size: Some(meta.volume_size),
        block_size: EBS_BLOCK_SIZE,
        chunk_size: opts.chunk_mib << 20,
        level: opts.level,
        sha256: opts.sha256,
        base: base_export,
        resumable: true,
        tree: None,
        items: None,
        dump: None,
        catalog: None,
    };
    Ok(PreparedExport { store, request, open: Box::new(move |start| reader.open(start, capacity)) })
}

/// A tar export of `source` as `name` (not resumable: a tree need not read the same twice),
/// counting into `stats` and listing into `catalog`.
pub(crate) fn tar_request(
    name: String,
    source: Source,
    opts: &ExportOpts,
    stats: Arc<Mutex<TreeStats>>,
    catalog: Arc<Mutex<Vec<bunker_protocol::catalog::CatalogEntry>>>,
) -> ExportRequest {
    ExportRequest {
        name,
        content: Content::Tar,
        source,
        image_size: None,
        block_size: 512,
        chunk_size: opts.chunk_mib << 20,
        level: opts.level,
        sha256: opts.sha256,
        base: None,
        resumable: false,
        tree: Some(stats),
        items: None,
        dump: None,
        catalog: Some(catalog),
    }
}

/// `bunker export …`
pub async fn export(aws: &Aws, region: Option<&str>, args: ExportArgs, json: bool) -> Result<u8, Fatal> {
    let progress = Arc::new(Progress::default());
    let (opts, req, open): (ExportOpts, ExportRequest, OpenReader) = match args.what {
        ExportWhat::RecoveryPoint { .. } => {
            return Err(input("export recovery-point runs through the vault workflow (src/vault_cli.rs)".into()))
        }
        ExportWhat::Rds { .. } | ExportWhat::RdsCluster { .. } => {
            return Err(input("export rds runs through the snapshot dump workflow (src/dump_cli.rs)".into()))
        }
        ExportWhat::Database(args) => {
            let store = target_store(aws, region, args.target())?;
            return crate::dump_cli::export(aws, region, store, args, json).await;
        }
        ExportWhat::Ebs { snapshot, files: true, opts, .. } => {
            return crate::ebs_files::export(aws, need(region)?, &snapshot, &opts, progress, json).await;
        }
        ExportWhat::Ebs { snapshot, base, opts, .. } => {
            let p = prepare_ebs(aws, need(region)?, &snapshot, base.as_deref(), &opts, progress.clone())
                .await
                .map_err(fail)?;
            (opts, p.request, p.open)
        }
        ExportWhat::File { path, opts } => {
            let size = local::source_size(&path).map_err(|e| input(format!("{}: {e}", path.display())))?;
            let chunk = opts.chunk_mib << 20;
            let name = opts.name.clone().unwrap_or_else(|| file_name(&path));
            let capacity = opts.channel_capacity;
            let req = ExportRequest {
                name,
                content: Content::Image,
                source: Source { kind: "file".into(), id: absolute(&path), ..Source::default() },
                image_size: Some(size),
                block_size: EBS_BLOCK_SIZE,
                chunk_size: chunk,
                level: opts.level,
                sha256: opts.sha256,
                base: None,
                resumable: true,
                tree: None,
                items: None,
                dump: None,
                catalog: None,
            };
            (opts, req, Box::new(move |start| local::image_reader(path, size, chunk, start, capacity)))
        }
        ExportWhat::Path { dir, opts } => {
            if !dir.is_dir() {
                return Err(input(format!("{}: not a directory", dir.display())));
            }
            let chunk = opts.chunk_mib << 20;
            let stats = Arc::new(Mutex::new(TreeStats::default()));
            let catalog = Arc::new(Mutex::new(Vec::new()));
            let name = opts.name.clone().unwrap_or_else(|| file_name(&dir));
            let capacity = opts.channel_capacity;
            let source = Source { kind: "directory".into(), id: absolute(&dir), ..Source::default() };
            let req = tar_request(name, source, &opts, stats.clone(), catalog.clone());
            (opts, req, Box::new(move |_| local::tar_reader(dir, chunk, capacity, stats, catalog)))
        }
    };
    let store = target_store(aws, region, &opts.to)?;
    if opts.chunk_mib == 0 || opts.chunk_mib > 1024 {
        return Err(input(format!("--chunk-mib {}: must be 1 to 1024", opts.chunk_mib)));
    }
    let tree = req.tree.clone();
    let actor = ExporterActor::new(opts.tuning(), None).start();
    let bar = progress_bar(progress.clone(), json);
    let result = actor
        .send(Export { store, request: req, open, progress: progress.clone() })
        .await
        .unwrap_or_else(|e| Err(StreamError::Internal(format!("exporter actor: {e}"))));
    bar.done();
    let summary = result.map_err(fail)?;
    let skipped = tree.map(|t| t.lock().expect("tree stats").skipped.clone()).unwrap_or_default();
    print(summary, json, |s| {
        if s.already_exported {
            format!("already exported: {} ({} bytes); nothing to do", s.archive, s.archive_size)
        } else {
            format!(
                "exported {} image bytes ({} of {} chunks hold data) to {} ({} bytes, {:.0} MB/s{}); manifest {}",
                s.bytes_in,
                s.data_chunks,
                s.chunks,
                s.archive,
                s.archive_size,
                mb_per_s(s.bytes_in - s.resumed_bytes, s.seconds),
                if s.resumed_bytes > 0 { format!(", resumed after {} bytes", s.resumed_bytes) } else { String::new() },
                s.manifest
            )
        }
    });
    if skipped.is_empty() {
        return Ok(0);
    }
    eprintln!("bunker: {} entries could not be archived (listed in the manifest's tree.skipped):", skipped.len());
    for s in skipped.iter().take(20) {
        eprintln!("  {s}");
    }
    Ok(1)
}

fn file_name(p: &Path) -> String {
    std::fs::canonicalize(p)
        .ok()
        .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "root".into())
}

fn absolute(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

/// The base of an incremental export: its manifest in the same target, and its chain.
async fn load_base(store: Arc<dyn ArchiveStore>, base: &str, size: u64) -> Result<BaseExport, StreamError> {
    let key = manifest_key(base);
    let url = store.url(&key);
    let archive = Archive::open(store, &key).await.map_err(|e| match e {
        StreamError::Input(_) => StreamError::Input(format!(
            "--base {base}: no finished export at {url}; export {base} to the same target first"
        )),
        e => e,
    })?;
    if archive.manifest.source.id != base {
        return Err(StreamError::Input(format!("--base {base}: {url} is an export of {}", archive.manifest.source.id)));
    }
    if archive.manifest.image_size != size {
        return Err(StreamError::Input(format!(
            "--base {base}: its image is {} bytes, the snapshot's volume {size}; incremental exports need the same size",
            archive.manifest.image_size
        )));
    }
    if archive.manifest.version != bunker_protocol::archive::FORMAT_VERSION {
        return Err(StreamError::Input(format!(
            "--base {base}: {url} is archive format version {}, this bunker writes version {}; an incremental \
             chain keeps one version: export the snapshot in full (without --base) to start a new chain",
            archive.manifest.version,
            bunker_protocol::archive::FORMAT_VERSION
        )));
    }
    let manifest = archive.manifest.clone();
    let chain = archive.chain().await?;
    Ok(BaseExport { manifest, manifest_key: key, chunk_hashes: archive_reader::resolved_hashes(&chain) })
}

/// `bunker verify URL`
pub async fn verify(aws: &Aws, region: Option<&str>, url: &str, json: bool) -> Result<u8, Fatal> {
    let (store, key) = object_store(aws, region, url)?;
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(progress.clone(), json);
    let result = async { archive_reader::verify(Archive::open(store, &key).await?, &progress).await }.await;
    bar.done();
    let report = result.map_err(failed("verify"))?;
    print(report, json, |r| {
        format!(
            "ok: {} — {} frames ({} with data), {} image bytes{}",
            r.archive,
            r.frames,
            r.data_chunks,
            r.image_size,
            hashes_text(r.image_blake3.as_deref(), r.image_sha256.as_deref())
        )
    });
    Ok(0)
}

/// ", blake3 …, sha256 …" for the whole-image hashes there are.
pub(crate) fn hashes_text(blake3: Option<&str>, sha256: Option<&str>) -> String {
    let b = blake3.map(|h| format!(", blake3 {h}")).unwrap_or_default();
    let s = sha256.map(|h| format!(", sha256 {h}")).unwrap_or_default();
    format!("{b}{s}")
}

/// `bunker ls URL [PATH]`: the catalog's entries at or under PATH.
pub async fn ls(aws: &Aws, region: Option<&str>, url: &str, path: Option<&str>, json: bool) -> Result<u8, Fatal> {
    let (store, key) = object_store(aws, region, url)?;
    let entries = async { Archive::open(store, &key).await?.catalog().await }.await.map_err(failed("ls"))?;
    let chosen = bunker_protocol::catalog::under(&entries, path);
    if chosen.is_empty() {
        if let Some(p) = path {
            return Err(input(format!("{p}: no such path in {url}")));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&chosen).expect("entries serialize"));
        return Ok(0);
    }
    for e in chosen {
        let link = e.link.as_ref().map(|l| format!(" -> {l}")).unwrap_or_default();
        let when = jiff::Timestamp::from_second(e.mtime).map(|t| t.to_string()).unwrap_or_default();
        println!("{:?} {:04o} {}:{} {:>12} {when} {}{link}", e.kind, e.mode, e.uid, e.gid, e.size, e.path);
    }
    Ok(0)
}

/// `bunker restore URL --to-file PATH | --to-snapshot`
pub async fn restore(
    aws: &Aws,
    region: Option<&str>,
    url: &str,
    to_file: Option<PathBuf>,
    to_snapshot: bool,
    json: bool,
) -> Result<u8, Fatal> {
    let (store, key) = object_store(aws, region, url)?;
    let target = match (to_file, to_snapshot) {
        (Some(p), false) => {
            let f = RestoreFile::create(p.clone()).map_err(|e| input(format!("--to-file {}: {e}", p.display())))?;
            RestoreTarget::File(Box::new(f))
        }
        (None, true) => {
            let mut tags = Tags::new();
            tags.insert("bunker:restored_from".into(), url.to_string());
            RestoreTarget::Snapshot { port: aws.snapshot_blocks(need(region)?), tags, max_requests: 32 }
        }
        _ => return Err(input("restore needs exactly one of --to-file PATH or --to-snapshot".into())),
    };
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(progress.clone(), json);
    let result = async {
        let chain = Archive::open(store, &key).await?.chain().await?;
        if chain.last().is_some_and(|a| a.manifest.content != Content::Image)
            && matches!(target, RestoreTarget::Snapshot { .. })
        {
            return Err(StreamError::Input(format!(
                "{url} is a tar archive; restore it with --to-file, then `tar -x`"
            )));
        }
        archive_reader::restore(chain, target, &progress).await
    }
    .await;
    bar.done();
    let report = result.map_err(failed("restore"))?;
    print(report, json, |r| match &r.snapshot_id {
        Some(id) => id.clone(),
        None => format!(
            "restored {} ({} bytes{}) from {}",
            r.archive,
            r.image_size,
            hashes_text(r.image.blake3.as_deref(), r.image.sha256.as_deref()),
            r.applied.join(" + ")
        ),
    });
    Ok(0)
}

/// `bunker restore URL --to-dir DIR [--path P]… [--overwrite]`
pub async fn restore_dir(
    aws: &Aws,
    region: Option<&str>,
    url: &str,
    paths: &[String],
    dir: &Path,
    overwrite: bool,
    json: bool,
) -> Result<u8, Fatal> {
    let (store, key) = object_store(aws, region, url)?;
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(progress.clone(), json);
    let result = async {
        let archive = Archive::open(store, &key).await?;
        crate::tree_restore::restore_to_dir(archive, paths, dir, overwrite, &progress).await
    }
    .await;
    bar.done();
    let report = result.map_err(failed("restore"))?;
    print(report, json, |r| {
        format!(
            "restored {} files ({} bytes), {} directories, {} symlinks, {} hard links into {}; read {} of the archive's {} bytes",
            r.files, r.bytes_written, r.directories, r.symlinks, r.hardlinks, r.to_dir, r.archive_bytes_read, r.archive_size
        )
    });
    Ok(0)
}

/// One `bunker find` hit.
#[derive(Debug, Serialize)]
struct Found {
    /// The archive holding it.
    archive: String,
    /// When that archive was exported.
    created_at: String,
    #[serde(flatten)]
    entry: bunker_protocol::catalog::CatalogEntry,
}

/// `bunker find URL GLOB [--since TIME]`: an archive's catalog, or every catalog under a
/// prefix (S3: the whole prefix; a directory: its own files), searched for GLOB. Exit 1 when
/// an archive under the prefix could not be read (each named on stderr).
pub async fn find(
    aws: &Aws,
    region: Option<&str>,
    url: &str,
    glob: &str,
    since: Option<&str>,
    json: bool,
) -> Result<u8, Fatal> {
    let pattern = bunker_protocol::catalog::Pattern::new(glob).map_err(input)?;
    let since = since.map(parse_since).transpose()?;
    let (store, key) = object_store(aws, region, url)?;
    let one = archive_reader::manifest_key_for(&key).is_ok();
    let (store, keys) = if one {
        (store, vec![key])
    } else {
        let store = target_store(aws, region, url)?;
        let listed = store.list("").await.map_err(|e| fail(StreamError::port(format!("listing {url}"), e)))?;
        let catalogs = listed.into_iter().filter(|k| k.ends_with(".catalog.jsonl.zst")).collect();
        (store, catalogs)
    };
    let (mut found, mut searched, mut unreadable) = (Vec::new(), 0, 0);
    for key in keys {
        let hits = match catalog_hits(&store, &key, &pattern, since).await {
            Ok(Some(hits)) => hits,
            Ok(None) => continue,
            Err(e) if one => return Err(fail(e)),
            // One damaged archive does not stop a search of the others: named, exit 1.
            Err(e) => {
                eprintln!("bunker: {}: {e}", store.url(&key));
                unreadable += 1;
                continue;
            }
        };
        searched += 1;
        found.extend(hits);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&found).expect("hits serialize"));
    } else {
        for f in &found {
            let e = &f.entry;
            println!("{}\t{}\t{:?}\t{}\t{}", f.archive, e.path, e.kind, e.size, f.created_at);
        }
        eprintln!("{} entries in {searched} archives", found.len());
    }
    Ok(u8::from(unreadable > 0))
}

/// The entries of `key`'s catalog matching `pattern`; `None` when the archive was exported
/// before `since`.
async fn catalog_hits(
    store: &Arc<dyn ArchiveStore>,
    key: &str,
    pattern: &bunker_protocol::catalog::Pattern,
    since: Option<jiff::Timestamp>,
) -> Result<Option<Vec<Found>>, StreamError> {
    let archive = Archive::open(store.clone(), key).await?;
    let created = archive.manifest.created_at.parse::<jiff::Timestamp>().ok();
    if since.is_some_and(|s| created.is_none_or(|c| c < s)) {
        return Ok(None);
    }
    let entries = archive.catalog().await?;
    let (url, created_at) = (archive.url(), archive.manifest.created_at.clone());
    let hits = entries.into_iter().filter(|e| pattern.matches(&e.path));
    Ok(Some(hits.map(|entry| Found { archive: url.clone(), created_at: created_at.clone(), entry }).collect()))
}

/// `--since`: RFC 3339, or a date (midnight UTC).
fn parse_since(s: &str) -> Result<jiff::Timestamp, Fatal> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            input(format!("--since {s:?}: not an RFC 3339 time (2026-12-01T00:00:00Z) nor a date (2026-12-01)"))
        })
}
