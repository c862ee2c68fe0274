//! The stream actors over in-memory ports: fast checks of the pipeline's logic (the emulator
//! tests in `tests/export*.rs` cover the real HTTP path).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bunker_protocol::archive::{Content, Source};
use bunker_protocol::vault::EbsFormat;
use tokio::sync::mpsc;

use super::archive_reader::{self, Archive, RestoreTarget};
use super::export::{ExportRequest, Exporter, OpenReader};
use super::{Progress, SourceItem, StreamError, Tuning};
use crate::ports::{ArchiveStore, ErrorKind, ImageWriter, PortError, StoredPart};

/// Unfinished uploads by key: (upload id, parts by number).
type Uploads = BTreeMap<String, (String, BTreeMap<u32, Vec<u8>>)>;

/// Objects and multipart uploads in memory; part uploads fail with a transient error from
/// part `fail_from` on while it is set.
#[derive(Default)]
struct MemoryStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    uploads: Mutex<Uploads>,
    fail_from: AtomicU32,
}

#[async_trait]
impl ArchiveStore for MemoryStore {
    fn url(&self, key: &str) -> String {
        format!("mem://{key}")
    }
    fn s3_location(&self) -> Option<(String, String)> {
        Some(("mem".into(), "x/".into()))
    }
    async fn size(&self, key: &str) -> Result<Option<u64>, PortError> {
        Ok(self.objects.lock().unwrap().get(key).map(|v| v.len() as u64))
    }
    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, PortError> {
        let o = self.objects.lock().unwrap();
        let v = o.get(key).ok_or_else(|| PortError::new(ErrorKind::NotFound, None, key))?;
        let s = (offset as usize).min(v.len());
        Ok(v[s..(s + len as usize).min(v.len())].to_vec())
    }
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), PortError> {
        self.objects.lock().unwrap().insert(key.into(), data);
        Ok(())
    }
    async fn delete(&self, keys: &[String]) -> Result<(), PortError> {
        let mut o = self.objects.lock().unwrap();
        for k in keys {
            o.remove(k);
        }
        Ok(())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        Ok(self.objects.lock().unwrap().keys().filter(|k| k.starts_with(prefix)).cloned().collect())
    }
    async fn find_upload(&self, key: &str) -> Result<Option<String>, PortError> {
        Ok(self.uploads.lock().unwrap().get(key).map(|u| u.0.clone()))
    }
    async fn start_upload(&self, key: &str) -> Result<String, PortError> {
        let id = format!("up-{}", self.uploads.lock().unwrap().len());
        self.uploads.lock().unwrap().insert(key.into(), (id.clone(), BTreeMap::new()));
        Ok(id)
    }
    async fn list_parts(&self, key: &str, _upload: &str) -> Result<Vec<StoredPart>, PortError> {
        let u = self.uploads.lock().unwrap();
        let (_, parts) = u.get(key).ok_or_else(|| PortError::new(ErrorKind::NotFound, None, "no upload"))?;
        Ok(parts
            .iter()
            .map(|(n, d)| StoredPart { number: *n, size: d.len() as u64, etag: format!("e{n}"), crc32c: None })
            .collect())
    }
    async fn upload_part(
        &self,
        key: &str,
        _upload: &str,
        number: u32,
        _offset: u64,
        data: bytes::Bytes,
        _crc32c: &str,
    ) -> Result<StoredPart, PortError> {
        let fail = self.fail_from.load(Ordering::Relaxed);
        if fail != 0 && number >= fail {
            return Err(PortError::new(ErrorKind::Transient, None, "link down"));
        }
        let size = data.len() as u64;
        self.uploads.lock().unwrap().get_mut(key).unwrap().1.insert(number, data.to_vec());
        Ok(StoredPart { number, size, etag: format!("e{number}"), crc32c: None })
    }
    async fn complete_upload(&self, key: &str, _upload: &str, parts: &[StoredPart]) -> Result<(), PortError> {
        let (_, stored) = self.uploads.lock().unwrap().remove(key).unwrap();
        let mut all = Vec::new();
        for p in parts {
            all.extend_from_slice(&stored[&p.number]);
        }
        self.objects.lock().unwrap().insert(key.into(), all);
        Ok(())
    }
    async fn abort_upload(&self, key: &str, _upload: &str) -> Result<(), PortError> {
        self.uploads.lock().unwrap().remove(key);
        Ok(())
    }
}

struct MemoryWriter(Arc<Mutex<Vec<u8>>>, Arc<Mutex<bool>>);

impl ImageWriter for MemoryWriter {
    fn set_len(&mut self, size: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().resize(size as usize, 0);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap()[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let v = self.0.lock().unwrap();
        let n = buf.len().min(v.len().saturating_sub(offset as usize));
        buf[..n].copy_from_slice(&v[offset as usize..offset as usize + n]);
        Ok(n)
    }
    fn commit(&mut self) -> std::io::Result<()> {
        *self.1.lock().unwrap() = true;
        Ok(())
    }
}

const CHUNK: u64 = 1 << 20;

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A 40 MiB image: data chunks, runs of zeros, a short tail.
fn image() -> Vec<u8> {
    let mut v = Vec::new();
    for c in 0..40u64 {
        if c % 5 < 2 {
            v.extend(vec![0u8; CHUNK as usize]);
        } else {
            v.extend(noise(c, CHUNK as usize));
        }
    }
    v.extend(noise(99, 1000));
    v
}

/// A reader over an in-memory image: zero chunks become zero runs.
fn reader(image: Arc<Vec<u8>>) -> OpenReader {
    Box::new(move |start| {
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut at = start as usize;
            while at < image.len() {
                let end = (at + CHUNK as usize).min(image.len());
                let bytes = image[at..end].to_vec();
                let item = if super::is_zero(&bytes) {
                    SourceItem::Zero { offset: at as u64, length: bytes.len() as u64 }
                } else {
                    SourceItem::Data { offset: at as u64, bytes }
                };
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
                at = end;
            }
        });
        rx
    })
}

fn request(size: u64) -> ExportRequest {
    ExportRequest {
        name: "img".into(),
        content: Content::Image,
        source: Source { kind: "file".into(), id: "mem".into(), ..Source::default() },
        image_size: Some(size),
        block_size: CHUNK / 2,
        chunk_size: CHUNK,
        level: 1,
        sha256: false,
        base: None,
        resumable: true,
        tree: None,
        items: None,
        dump: None,
        catalog: None,
    }
}

fn tuning() -> Tuning {
    Tuning { chunks_in_flight: 3, channel_capacity: 1, compress_threads: 2, parts_in_flight: 2, block_requests: 4 }
}

#[tokio::test(flavor = "multi_thread")]
async fn export_verify_restore_round_trip_and_zstd_decodes_the_archive() {
    let img = Arc::new(image());
    let store = Arc::new(MemoryStore::default());
    let progress = Arc::new(Progress::default());
    let clock = crate::engine::TokioClock::starting_at("2037-06-01T00:00:00Z".parse().unwrap());
    let ex = Exporter::new(store.clone(), tuning(), progress.clone()).with_clock(Arc::new(clock));
    let s = ex.export(request(img.len() as u64), reader(img.clone())).await.unwrap();
    assert_eq!(s.bytes_in, img.len() as u64);
    let archive = store.objects.lock().unwrap()["img.img.zst"].clone();
    // The zstd library decodes the whole object (zero frames, data frames, seek table).
    assert!(zstd::stream::decode_all(&archive[..]).unwrap() == *img);
    assert!(store.objects.lock().unwrap().keys().all(|k| !k.contains(".journal/")), "journal deleted");

    let a = Archive::open(store.clone(), "img.manifest.json").await.unwrap();
    assert!(
        a.manifest.created_at.starts_with("2037-06-01T00:00:"),
        "the manifest's time is the clock's: {}",
        a.manifest.created_at
    );
    let v = archive_reader::verify(a.clone(), &Progress::default()).await.unwrap();
    assert_eq!(v.image_sha256, s.image_sha256);
    let out = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(Mutex::new(false));
    let target = RestoreTarget::File(Box::new(MemoryWriter(out.clone(), done.clone())));
    archive_reader::restore(a.chain().await.unwrap(), target, &Progress::default()).await.unwrap();
    assert!(*out.lock().unwrap() == *img);
    assert!(*done.lock().unwrap());
}

/// A store holding an export of `img` interrupted by upload failures from part 3 on (a
/// retryable error, its upload and journal kept); the failures are off again.
async fn interrupted(img: &Arc<Vec<u8>>) -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::default());
    store.fail_from.store(3, Ordering::Relaxed);
    let err = Exporter::new(store.clone(), tuning(), Arc::default())
        .export(request(img.len() as u64), reader(img.clone()))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    store.fail_from.store(0, Ordering::Relaxed);
    store
}

/// Paused time: the exporter's retry back-off (seconds) passes instantly.
#[tokio::test(start_paused = true)]
async fn an_interrupted_export_resumes_to_the_same_archive() {
    let img = Arc::new(image());
    let clean = Arc::new(MemoryStore::default());
    Exporter::new(clean.clone(), tuning(), Arc::default())
        .export(request(img.len() as u64), reader(img.clone()))
        .await
        .unwrap();
    let want = clean.objects.lock().unwrap()["img.img.zst"].clone();
    assert!(want.len() > 3 * (8 << 20), "several parts");

    let store = interrupted(&img).await;
    assert!(store.uploads.lock().unwrap().contains_key("img.img.zst"), "upload kept for resume");
    let progress = Arc::new(Progress::default());
    let s = Exporter::new(store.clone(), tuning(), progress)
        .export(request(img.len() as u64), reader(img.clone()))
        .await
        .unwrap();
    assert!(s.resumed_bytes > 0);
    assert!(s.bytes_out < want.len() as u64, "{} of {}", s.bytes_out, want.len());
    assert!(store.objects.lock().unwrap()["img.img.zst"] == want, "byte-identical to an uninterrupted export");
}

/// A journal is read back from the target: a part record carrying an earlier part's image
/// tree (well formed, but not covering the chunks before the resume point) is refused
/// instead of resumed into a wrong whole-image hash. Paused time, as above.
#[tokio::test(start_paused = true)]
async fn a_journal_tree_that_does_not_cover_the_resume_point_is_refused() {
    let img = Arc::new(image());
    let store = interrupted(&img).await;
    {
        let mut objects = store.objects.lock().unwrap();
        let record = |k: &str| serde_json::from_slice::<serde_json::Value>(&objects[k]).unwrap();
        let (first, mut second) = (record("img.journal/part-00001.json"), record("img.journal/part-00002.json"));
        assert_ne!(first["tree"], second["tree"]);
        second["tree"] = first["tree"].clone();
        objects.insert("img.journal/part-00002.json".into(), serde_json::to_vec(&second).unwrap());
    }
    let err = Exporter::new(store.clone(), tuning(), Arc::default())
        .export(request(img.len() as u64), reader(img.clone()))
        .await
        .unwrap_err();
    assert!(matches!(&err, StreamError::Corrupt(m) if m.contains("journal")), "{err}");
    assert!(!store.objects.lock().unwrap().contains_key("img.manifest.json"), "no manifest with a wrong hash");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_error_aborts_the_upload_and_leaves_no_manifest() {
    let store = Arc::new(MemoryStore::default());
    let open: OpenReader = Box::new(|_| {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _closed = tx.send(Ok(SourceItem::Data { offset: 0, bytes: vec![1; CHUNK as usize] })).await;
            let _closed = tx.send(Err(StreamError::Source("disk gone".into()))).await;
        });
        rx
    });
    let err =
        Exporter::new(store.clone(), tuning(), Arc::default()).export(request(4 * CHUNK), open).await.unwrap_err();
    assert!(matches!(err, StreamError::Source(_)), "{err}");
    assert!(store.uploads.lock().unwrap().is_empty(), "upload aborted");
    assert!(store.objects.lock().unwrap().is_empty(), "no manifest, no journal");
}

/// Prepares every export over one in-memory store and image; counts the preparations (one
/// per pass) and, on the second, ends the store's outage. A snapshot named `snap-missing`
/// does not exist.
struct MemoryTargets {
    store: Arc<MemoryStore>,
    image: Arc<Vec<u8>>,
    prepared: AtomicU32,
    /// File-level exports made.
    files: AtomicU32,
}

#[async_trait]
impl super::export_job::ExportTargets for MemoryTargets {
    async fn prepare(
        &self,
        what: &super::export_job::ExportSnapshot,
        _to: &str,
        _progress: Arc<Progress>,
    ) -> Result<super::exporter_actor::PreparedExport, StreamError> {
        if self.prepared.fetch_add(1, Ordering::SeqCst) == 1 {
            self.store.fail_from.store(0, Ordering::Relaxed);
        }
        if what.snapshot_id == "snap-missing" {
            return Err(StreamError::Input("snapshot snap-missing does not exist".into()));
        }
        let mut request = request(self.image.len() as u64);
        request.name = what.snapshot_id.clone();
        Ok(super::exporter_actor::PreparedExport {
            store: self.store.clone(),
            request,
            open: reader(self.image.clone()),
        })
    }

    fn store(&self, _to: &str, _region: &str) -> Result<Arc<dyn ArchiveStore>, StreamError> {
        Ok(self.store.clone())
    }

    fn ebs_format_of(&self, tags: &bunker_protocol::tags::Tags) -> Result<EbsFormat, StreamError> {
        Ok(EbsFormat::from_tags(tags).map_err(StreamError::Input)?.unwrap_or_default())
    }

    /// `snap-files-*` and `snap-both-*` are exported as files and as both.
    async fn ebs_format(&self, what: &super::export_job::ExportSnapshot) -> Result<EbsFormat, StreamError> {
        let id = what.snapshot_id.as_str();
        Ok(if id.starts_with("snap-files") {
            EbsFormat::Files
        } else if id.starts_with("snap-both") {
            EbsFormat::Both
        } else {
            EbsFormat::Image
        })
    }

    /// Writes the index only (the filesystems' archives are `tests/serve.rs`'s business).
    async fn export_files(
        &self,
        what: &super::export_job::ExportSnapshot,
        _to: &str,
        _point: Option<bunker_protocol::vault::PointRef>,
    ) -> Result<(), StreamError> {
        self.files.fetch_add(1, Ordering::SeqCst);
        let key = bunker_protocol::archive::files_index_key(&what.snapshot_id);
        self.store.put(&key, b"{}".to_vec()).await.map_err(|e| StreamError::port("index", e))
    }
}

fn export_of(snapshot: &str) -> crate::engine::Run<super::export_job::ExportSnapshot> {
    let job =
        super::export_job::ExportSnapshot { snapshot_id: snapshot.into(), region: "r".into(), to: None, base: None };
    crate::engine::Run(job)
}

/// The service's exports on the engine: three requests for one export are one job; a store
/// outage fails the first pass transiently, and the engine's retry resumes the upload to the
/// archive an uninterrupted export makes; a missing snapshot fails at once, without retries.
#[test]
fn service_exports_join_retry_by_resuming_and_fail_permanently_at_once() {
    use crate::engine::{Alerts, JobActor, JobEnd};
    use crate::metrics::{Metric, Metrics};
    use actix::Actor;
    let img = Arc::new(image());
    let want = Arc::new(MemoryStore::default());
    let targets = Arc::new(MemoryTargets {
        store: Arc::default(),
        image: img.clone(),
        prepared: AtomicU32::new(0),
        files: AtomicU32::new(0),
    });
    targets.store.fail_from.store(3, Ordering::Relaxed);
    let metrics = Arc::new(Metrics::default());
    let (t, m, w) = (targets.clone(), metrics.clone(), want.clone());
    let (reports, missing) = crate::engine::tests::paused_system().block_on(async move {
        Exporter::new(w, tuning(), Arc::default()).export(request(img.len() as u64), reader(img)).await.unwrap();
        let exports = super::export_job::Exports::new(t, Some("mem://".into()), tuning(), m.clone());
        let alerts = Alerts::new(Arc::new(crate::testkit::RecordingNotifier::default()), None);
        let addr = JobActor::new(Arc::new(exports), std::time::Duration::from_secs(1), m, alerts).start();
        let reports = futures::future::join_all((0..3).map(|_| addr.send(export_of("snap-1")))).await;
        (reports, addr.send(export_of("snap-missing")).await)
    });
    for r in reports {
        assert_eq!(r.unwrap().unwrap().end, JobEnd::Done);
    }
    let archive = targets.store.objects.lock().unwrap()["snap-1.img.zst"].clone();
    assert!(archive == want.objects.lock().unwrap()["img.img.zst"], "resumed to the same bytes");
    let missing = missing.unwrap().unwrap().end;
    assert!(matches!(&missing, JobEnd::Failed(why) if why.contains("snap-missing")), "{missing:?}");
    assert_eq!(targets.prepared.load(Ordering::SeqCst), 3, "snap-1: two passes for three requests; snap-missing: one");
    let done = [("workflow", "exporter"), ("kind", "ebs"), ("state", "done")];
    assert_eq!(metrics.get(Metric::JobsTotal, &done), 1.0);
    assert_eq!(metrics.get(Metric::ExportsTotal, &[("status", "failed")]), 1.0, "the interrupted pass");
    assert_eq!(metrics.get(Metric::ExportsTotal, &[("status", "ok")]), 1.0);
}

/// `export.ebs_format`: a `files` snapshot gets its filesystems' index and no image, a
/// `both` one both; a second request finds the index and does not export the files again.
#[test]
fn a_snapshot_is_exported_in_its_format_and_an_indexed_one_not_again() {
    use crate::engine::{Alerts, JobActor, JobEnd};
    use crate::metrics::Metrics;
    use actix::Actor;
    let targets = Arc::new(MemoryTargets {
        store: Arc::default(),
        image: Arc::new(image()),
        prepared: AtomicU32::new(5),
        files: AtomicU32::new(0),
    });
    let t = targets.clone();
    let ends = crate::engine::tests::paused_system().block_on(async move {
        let metrics = Arc::new(Metrics::default());
        let exports = super::export_job::Exports::new(t, Some("mem://".into()), tuning(), metrics.clone());
        let alerts = Alerts::new(Arc::new(crate::testkit::RecordingNotifier::default()), None);
        let addr = JobActor::new(Arc::new(exports), std::time::Duration::from_secs(1), metrics, alerts).start();
        let mut ends = Vec::new();
        for snap in ["snap-files-1", "snap-both-1", "snap-files-1"] {
            ends.push(addr.send(export_of(snap)).await.unwrap().unwrap().end);
        }
        ends
    });
    assert!(ends.iter().all(|e| *e == JobEnd::Done), "{ends:?}");
    let objects = targets.store.objects.lock().unwrap();
    let has = |k: &str| objects.contains_key(k);
    assert!(has("snap-files-1.files.json") && !has("snap-files-1.img.zst") && !has("snap-files-1.manifest.json"));
    assert!(has("snap-both-1.files.json") && has("snap-both-1.img.zst") && has("snap-both-1.manifest.json"));
    assert_eq!(targets.files.load(Ordering::SeqCst), 2, "the indexed snapshot is not exported again");
}

/// Reconciliation with `export.ebs_format`: an own backup whose tag asks for files is done
/// once its index is there (its image is not looked for), one in the configured image
/// format once its manifest is; a backup of another deployment is never listed.
#[tokio::test]
async fn reconciliation_looks_for_each_backups_own_format() {
    use crate::engine::Workflow;
    use crate::ports::ListedBackup;
    let ctl = Arc::new(crate::testkit::FakeControl::new(bunker_protocol::ResourceKind::Ebs, "r"));
    let ours = |format: Option<&str>, deployment: &str| {
        let mut tags: bunker_protocol::tags::Tags =
            [("bunker:managed", "true"), ("bunker:deployment", deployment), ("bunker:retention", "monthly")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        if let Some(f) = format {
            tags.insert("bunker:config:export.ebs_format".into(), f.into());
        }
        tags
    };
    for (id, tags) in
        [("snap-f", ours(Some("files"), "d")), ("snap-i", ours(None, "d")), ("snap-x", ours(None, "other"))]
    {
        let listed = ListedBackup { id: id.into(), tags, available: true, aws_created_at: None, parts: vec![] };
        ctl.state.lock().unwrap().backups.insert(id.into(), listed);
    }
    let targets = Arc::new(MemoryTargets {
        store: Arc::default(),
        image: Arc::new(vec![]),
        prepared: AtomicU32::new(0),
        files: AtomicU32::new(0),
    });
    let owned = super::export_job::OwnedBackups {
        controls: vec![ctl],
        deployments: [("r".to_string(), "d".to_string())].into(),
        types: vec!["monthly".into()],
    };
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let exports =
        super::export_job::Exports::new(targets.clone(), Some("mem://".into()), tuning(), metrics).with_owned(owned);
    let ids =
        |jobs: Vec<super::export_job::ExportSnapshot>| jobs.into_iter().map(|j| j.snapshot_id).collect::<Vec<_>>();
    assert_eq!(ids(exports.owned(None).await.unwrap()), ["snap-f", "snap-i"]);
    targets.store.put("snap-f.manifest.json", b"{}".to_vec()).await.unwrap();
    assert_eq!(ids(exports.owned(None).await.unwrap()), ["snap-f", "snap-i"], "files wanted, not an image");
    targets.store.put("snap-f.files.json", b"{}".to_vec()).await.unwrap();
    targets.store.put("snap-i.manifest.json", b"{}".to_vec()).await.unwrap();
    assert!(exports.owned(None).await.unwrap().is_empty());
}

/// Recovery points in memory: `describe`, `list` and `delete` over one map, every call
/// recorded in order.
#[derive(Default)]
struct MemoryVaults {
    points: Mutex<BTreeMap<String, bunker_protocol::vault::RecoveryPoint>>,
    calls: Mutex<Vec<String>>,
    /// Set: this region has no such vault (every call answers not found).
    region: Option<&'static str>,
}

#[async_trait]
impl crate::ports::Vaults for MemoryVaults {
    fn region(&self) -> &str {
        self.region.unwrap_or("r")
    }
    async fn list(&self, vault: &str) -> Result<Vec<bunker_protocol::vault::RecoveryPoint>, PortError> {
        if self.region.is_some() {
            return Err(PortError::new(ErrorKind::NotFound, Some("ResourceNotFoundException"), vault));
        }
        self.calls.lock().unwrap().push("list".into());
        Ok(self.points.lock().unwrap().values().cloned().collect())
    }
    async fn describe(
        &self,
        _vault: &str,
        arn: &str,
    ) -> Result<Option<bunker_protocol::vault::RecoveryPoint>, PortError> {
        self.calls.lock().unwrap().push("describe".into());
        Ok(self.points.lock().unwrap().get(arn).cloned())
    }
    async fn job(&self, _job: &str) -> Result<Option<bunker_protocol::vault::BackupJob>, PortError> {
        Ok(None)
    }
    async fn delete(&self, _vault: &str, arn: &str) -> Result<(), PortError> {
        self.calls.lock().unwrap().push("delete".into());
        self.points.lock().unwrap().remove(arn);
        Ok(())
    }
}

fn ebs_point(snapshot: &str) -> bunker_protocol::vault::RecoveryPoint {
    bunker_protocol::vault::RecoveryPoint {
        arn: format!("arn:aws:ec2:r::snapshot/{snapshot}"),
        vault: "Default".into(),
        resource_arn: "arn:aws:ec2:r:1:volume/vol-1".into(),
        resource_type: "EBS".into(),
        status: bunker_protocol::vault::Status::Completed,
        created: None,
        size: None,
    }
}

/// The vault workflow on fakes: a point is exported, read back and only then deleted; a
/// point whose archive at the target is corrupt is never deleted, and its job fails.
#[test]
fn a_recovery_point_is_deleted_only_after_its_own_archive_verifies() {
    use crate::engine::{Alerts, JobActor, JobEnd, Run};
    use crate::vault_export::{PointKey, VaultExports, VaultSettings};
    use actix::Actor;
    let vaults = Arc::new(MemoryVaults::default());
    let (good, bad) = (ebs_point("snap-00000001"), ebs_point("snap-00000002"));
    vaults.points.lock().unwrap().extend([(good.arn.clone(), good.clone()), (bad.arn.clone(), bad.clone())]);
    let targets = Arc::new(MemoryTargets {
        store: Arc::default(),
        image: Arc::new(image()),
        prepared: AtomicU32::new(5),
        files: AtomicU32::new(0),
    });
    let settings = VaultSettings {
        vaults: vec!["Default".into()],
        kinds: bunker_protocol::vault::ExportKind::ALL.to_vec(),
        dynamodb_mode: Default::default(),
        rds_format: bunker_protocol::vault::RdsFormat::Parquet,
        scan_segments: crate::vault_export::SCAN_SEGMENTS,
        delete_source: true,
        sha256: false,
        export_to: "mem://x".into(),
        deployments: [("r".to_string(), "dep".to_string())].into(),
    };
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let alerts = Alerts::new(Arc::new(crate::testkit::RecordingNotifier::default()), None);
    let notices = Arc::new(crate::testkit::RecordingNotifier::default());
    let logic = VaultExports::new(
        settings,
        vec![vaults.clone()],
        vec![],
        no_parquet(),
        targets.clone(),
        tuning(),
        metrics.clone(),
        alerts.clone(),
    )
    .with_reports(Alerts::new(notices.clone(), Some("arn:aws:sns:r:1:status".into())));
    let key = |p: &bunker_protocol::vault::RecoveryPoint| PointKey {
        region: "r".into(),
        vault: "Default".into(),
        arn: p.arn.clone(),
    };
    let (k1, k2, store, v, again) = (key(&good), key(&bad), targets.store.clone(), vaults.clone(), bad.clone());
    let (first, second) = crate::engine::tests::paused_system().block_on(async move {
        let addr = JobActor::new(Arc::new(logic), std::time::Duration::from_secs(1), metrics, alerts).start();
        let first = addr.send(Run(k1)).await.unwrap().unwrap();
        // The second point is exported and deleted, then comes back (as a copy would) while
        // one byte of its archive at the target is flipped.
        addr.send(Run(k2.clone())).await.unwrap().unwrap();
        v.points.lock().unwrap().insert(again.arn.clone(), again);
        corrupt(&store, "snap-00000002");
        (first, addr.send(Run(k2)).await.unwrap().unwrap())
    });
    assert_eq!(first.end, JobEnd::Done);
    let calls = vaults.calls.lock().unwrap().clone();
    assert_eq!(calls.iter().filter(|c| *c == "delete").count(), 2, "{calls:?}");
    let objects = targets.store.objects.lock().unwrap();
    let m: serde_json::Value = serde_json::from_slice(&objects["snap-00000001.manifest.json"]).unwrap();
    assert_eq!(m["source"]["recovery_point"]["arn"], good.arn);
    drop(objects);
    assert!(!matches!(second.end, JobEnd::Done), "{:?}", second.end);
    assert!(vaults.points.lock().unwrap().contains_key(&bad.arn), "a corrupt archive never deletes its source");
    // One report per job that did something: two OK (exported, verified, deleted); nothing
    // for the corrupt archive, whose verify is retried until the job gives up (reported on
    // the error topic, as every give-up is).
    let reports: Vec<serde_json::Value> =
        notices.published.lock().unwrap().iter().map(|(_, _, body)| serde_json::from_str(body).unwrap()).collect();
    let statuses: Vec<&str> = reports.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["OK", "OK"], "{reports:?}");
    assert_eq!(reports[0]["archive"], "mem://snap-00000001.manifest.json");
    assert_eq!(reports[0]["deleted"], serde_json::json!(true));
    assert_eq!(reports[0]["schema"], "bunker.recovery-point-report/1");
}

/// Flips a byte in the middle of `snapshot`'s archive.
fn corrupt(store: &MemoryStore, snapshot: &str) {
    let mut objects = store.objects.lock().unwrap();
    let archive = objects.get_mut(&format!("{snapshot}.img.zst")).expect("exported");
    let mid = archive.len() / 2;
    archive[mid] ^= 0xff;
}

/// Reconciliation over two regions, one without the listed vault: the other's points are
/// still found.
#[tokio::test]
async fn a_vault_missing_from_one_region_does_not_stop_the_others() {
    use crate::engine::{Alerts, Workflow};
    use crate::vault_export::{VaultExports, VaultSettings};
    let here = Arc::new(MemoryVaults::default());
    let point = ebs_point("snap-00000003");
    here.points.lock().unwrap().insert(point.arn.clone(), point.clone());
    let elsewhere = Arc::new(MemoryVaults { region: Some("r2"), ..MemoryVaults::default() });
    let targets = Arc::new(MemoryTargets {
        store: Arc::default(),
        image: Arc::new(vec![]),
        prepared: AtomicU32::new(5),
        files: AtomicU32::new(0),
    });
    let settings = VaultSettings {
        vaults: vec!["Default".into()],
        kinds: bunker_protocol::vault::ExportKind::ALL.to_vec(),
        dynamodb_mode: Default::default(),
        rds_format: bunker_protocol::vault::RdsFormat::Parquet,
        scan_segments: crate::vault_export::SCAN_SEGMENTS,
        delete_source: false,
        sha256: false,
        export_to: "mem://x".into(),
        deployments: [("r".to_string(), "dep".to_string())].into(),
    };
    let alerts = Alerts::new(Arc::new(crate::testkit::RecordingNotifier::default()), None);
    let ports: Vec<Arc<dyn crate::ports::Vaults>> = vec![here, elsewhere];
    let logic = VaultExports::new(settings, ports, vec![], no_parquet(), targets, tuning(), Arc::default(), alerts);
    let owned = logic.owned(None).await.unwrap();
    assert_eq!(
        owned.iter().map(|k| (k.region.as_str(), k.arn.as_str())).collect::<Vec<_>>(),
        [("r", point.arn.as_str())]
    );
}

fn no_parquet() -> crate::rds_export::ParquetExports {
    crate::rds_export::ParquetExports::new(vec![], Default::default())
}

/// RDS's export tasks in memory: `running` other tasks count against the quota; a start
/// records the task (STARTING) unless `refuse` names an error to answer.
#[derive(Default)]
struct FakeExports {
    running: std::sync::atomic::AtomicUsize,
    tasks: Mutex<BTreeMap<String, crate::ports::ExportTaskInfo>>,
    starts: Mutex<Vec<crate::ports::StartExport>>,
    refuse: Mutex<Option<ErrorKind>>,
}

#[async_trait]
impl crate::ports::SnapshotExports for FakeExports {
    fn region(&self) -> &str {
        "r"
    }
    async fn start(&self, r: &crate::ports::StartExport) -> Result<(), PortError> {
        if let Some(kind) = *self.refuse.lock().unwrap() {
            return Err(PortError::new(kind, Some("Refused"), "refused"));
        }
        self.starts.lock().unwrap().push(r.clone());
        let task = crate::ports::ExportTaskInfo {
            id: r.id.clone(),
            source_arn: r.source_arn.clone(),
            status: bunker_protocol::rds_export::TaskStatus::Starting,
            percent: 0,
            bucket: r.bucket.clone(),
            prefix: r.prefix.clone(),
            failure: None,
            warning: None,
        };
        self.tasks.lock().unwrap().insert(r.id.clone(), task);
        Ok(())
    }
    async fn task(&self, id: &str) -> Result<Option<crate::ports::ExportTaskInfo>, PortError> {
        Ok(self.tasks.lock().unwrap().get(id).cloned())
    }
    async fn running(&self) -> Result<usize, PortError> {
        Ok(self.running.load(Ordering::SeqCst))
    }
    async fn engine(&self, _: &str) -> Result<Option<String>, PortError> {
        Ok(Some("postgres".into()))
    }
}

/// The Parquet export's decisions before any file is read: no task while 5 run (the quota),
/// one start with the configured role, key and the target's bucket and prefix, looks that
/// back off from `export.task_poll`, a start racing another process joins its task, and a
/// FAILED task or one exporting another snapshot fails at once, naming why.
#[tokio::test]
async fn parquet_exports_respect_the_quota_start_once_back_off_and_fail_permanently() {
    use crate::rds_export::{ParquetExports, ParquetJob, ParquetSettings};
    use bunker_protocol::rds_export::TaskStatus;
    use std::time::Duration;
    let fake = Arc::new(FakeExports::default());
    let first = Duration::from_secs(2);
    let settings = ParquetSettings {
        role_arn: Some("arn:aws:iam::1:role/x".into()),
        kms_key: Some("k".into()),
        first_poll: first,
    };
    let exports = ParquetExports::new(vec![fake.clone()], settings);
    let store: Arc<dyn ArchiveStore> = Arc::new(MemoryStore::default());
    let arn = "arn:aws:rds:r:1:snapshot:awsbackup:job-1";
    let point = bunker_protocol::vault::PointRef { arn: arn.into(), vault: "Default".into() };
    let job = ParquetJob { point, region: "r", snapshot_id: "awsbackup:job-1", cluster: false, store: &store };

    fake.running.store(5, Ordering::SeqCst);
    let p = exports.export(&job).await.unwrap().unwrap();
    assert!(p.why.contains("5 export tasks are running"), "{p:?}");
    assert!(fake.starts.lock().unwrap().is_empty(), "no start at the quota");

    fake.running.store(4, Ordering::SeqCst);
    let p = exports.export(&job).await.unwrap().unwrap();
    assert_eq!(p.next_check, Some(first), "{p:?}");
    let started = fake.starts.lock().unwrap().clone();
    assert_eq!(started.len(), 1);
    assert_eq!((started[0].bucket.as_str(), started[0].prefix.as_str()), ("mem", "x"));
    assert_eq!((started[0].role_arn.as_str(), started[0].kms_key.as_str()), ("arn:aws:iam::1:role/x", "k"));
    assert_eq!(started[0].id, job.task());
    let mut secs = Vec::new();
    for _ in 0..6 {
        secs.push(exports.export(&job).await.unwrap().unwrap().next_check.unwrap().as_secs());
    }
    assert_eq!(secs, vec![2, 4, 8, 16, 30, 30], "1x, doubling, at most 15x export.task_poll");
    assert_eq!(fake.starts.lock().unwrap().len(), 1, "looks never start a second task");

    // Another process started it between our look and our start: join, don't fail.
    let point = bunker_protocol::vault::PointRef { arn: format!("{arn}2"), vault: "Default".into() };
    let other = ParquetJob { point, region: "r", snapshot_id: "awsbackup:job-12", cluster: false, store: &store };
    *fake.refuse.lock().unwrap() = Some(ErrorKind::AlreadyExists);
    let p = exports.export(&other).await.unwrap().unwrap();
    assert!(p.why.contains("exists"), "{p:?}");

    let mut failed = fake.tasks.lock().unwrap()[&job.task()].clone();
    (failed.status, failed.failure) = (TaskStatus::Failed, Some("S3 access denied".into()));
    fake.tasks.lock().unwrap().insert(job.task(), failed.clone());
    let e = exports.export(&job).await.unwrap_err();
    assert!(e.is_permanent() && e.to_string().contains("FAILED: S3 access denied"), "{e}");
    failed.source_arn = "arn:aws:rds:r:1:snapshot:someone-else".into();
    fake.tasks.lock().unwrap().insert(job.task(), failed);
    let e = exports.export(&job).await.unwrap_err();
    assert!(e.is_permanent() && e.to_string().contains("not arn:aws:rds:r:1:snapshot:awsbackup:job-1"), "{e}");
}
