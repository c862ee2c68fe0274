//! File-level exports through a temporary volume (the restore actor), against the emulator
//! playing the hardware: `AttachVolume` makes a read-only loop device of the snapshot's
//! blocks and the NVMe by-id link, IMDSv2 answers this instance's id and zone. Runs as root
//! (loop devices, mount), as the test machines do.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{
    allocated, device_history, ebs_event, fs_image, fs_image_bytes, noise, post, queues, this_instance, xfs_image,
    Account,
};

/// A tree with what a root filesystem has: nested directories, a deep path, unicode names,
/// an empty file, a sparse file, symlinks, a hard link, owners, modes and old mtimes.
fn tree(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let tree = dir.join("tree");
    let deep = format!("srv/{}/{}", "d".repeat(90), "e".repeat(90));
    std::fs::create_dir_all(tree.join(&deep)).unwrap();
    std::fs::create_dir_all(tree.join("etc/nginx")).unwrap();
    std::fs::write(tree.join("etc/nginx/nginx.conf"), b"worker_processes 2;\n").unwrap();
    std::fs::write(tree.join(&deep).join("long.txt"), b"a path over 100 bytes\n").unwrap();
    std::fs::write(tree.join("donnée-ünïcödé.txt"), "é".repeat(1000)).unwrap();
    std::fs::write(tree.join("var.bin"), noise(3, 6 << 20)).unwrap();
    std::fs::write(tree.join("empty"), b"").unwrap();
    let sparse = std::fs::File::create(tree.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"end", (64 << 20) - 3).unwrap();
    std::os::unix::fs::symlink("nginx/nginx.conf", tree.join("etc/current.conf")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/absolute", tree.join("etc/dangling")).unwrap();
    std::fs::hard_link(tree.join("var.bin"), tree.join("var.link")).unwrap();
    std::fs::set_permissions(tree.join("etc/nginx/nginx.conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(tree.join("var.bin"), Some(1234), Some(5678)).unwrap();
    // Extended attributes (as ACLs and SELinux labels are kept) on a file and a directory.
    rustix::fs::setxattr(
        tree.join("etc/nginx/nginx.conf"),
        "user.origin",
        b"bunker\0binary",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        tree.join("etc"),
        "trusted.label",
        b"system_u:object_r:etc_t",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    // mtimes last (writing into a directory changes its own), and older than the test.
    let old = ["-exec", "touch", "-h", "-d", "2021-03-04 05:06:07", "{}", "+"];
    assert!(Command::new("find").arg(&tree).args(old).status().unwrap().success());
    tree
}

/// `tar -x --xattrs` of `tar` into a new directory `back`, as a user without bunker restores.
fn untar(tar: &[u8], back: &Path) -> PathBuf {
    std::fs::create_dir(back).unwrap();
    let mut x = Command::new("tar")
        .args(["-x", "--xattrs", "--xattrs-include=*", "-C"])
        .arg(back)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    x.stdin.take().unwrap().write_all(tar).unwrap();
    assert!(x.wait().unwrap().success());
    back.to_path_buf()
}

/// Every path under `root` (relative, sorted).
fn paths(root: &Path) -> Vec<PathBuf> {
    let out = Command::new("find").arg(".").current_dir(root).output().unwrap();
    let mut all: Vec<PathBuf> = String::from_utf8(out.stdout).unwrap().lines().map(PathBuf::from).collect();
    all.sort();
    all
}

/// The extended attributes of `path` (not followed), by name.
fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, names.as_mut_slice()).unwrap();
    let mut out = BTreeMap::new();
    for name in names[..n].split(|c| *c == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).unwrap();
        let mut value = vec![0u8; 4096];
        let n = rustix::fs::lgetxattr(path, name, value.as_mut_slice()).unwrap();
        out.insert(name.to_string(), value[..n].to_vec());
    }
    out
}

/// `got` is `want`: the same paths, types, modes, owners, mtimes, contents, link targets and
/// extended attributes.
fn assert_same_tree(want: &Path, got: &Path) {
    assert_eq!(paths(want), paths(got));
    // The root itself is DIR, not an entry of the archive.
    for p in paths(want).into_iter().filter(|p| p != Path::new(".")) {
        let (w, g) =
            (std::fs::symlink_metadata(want.join(&p)).unwrap(), std::fs::symlink_metadata(got.join(&p)).unwrap());
        assert_eq!((w.mode(), w.uid(), w.gid()), (g.mode(), g.uid(), g.gid()), "{}", p.display());
        assert_eq!(w.mtime(), g.mtime(), "{}", p.display());
        assert_eq!(xattrs(&want.join(&p)), xattrs(&got.join(&p)), "{}", p.display());
        if w.is_file() {
            assert_eq!(std::fs::read(want.join(&p)).unwrap(), std::fs::read(got.join(&p)).unwrap(), "{}", p.display());
        }
        if w.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(want.join(&p)).unwrap(), std::fs::read_link(got.join(&p)).unwrap());
        }
    }
}

/// `export ebs --files --mount` of an XFS snapshot: a temporary volume in this instance's
/// zone, attached, found by its NVMe serial link, mounted read-only without log recovery,
/// archived; `zstd -d | tar -x` gives back the tree exactly; the volume is detached and
/// deleted afterwards, and nothing stays mounted.
#[tokio::test(flavor = "multi_thread")]
async fn an_xfs_snapshot_is_exported_file_by_file_through_a_temporary_volume() {
    let a = Account::new("410000000070").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = tree(dir.path());
    let blocks = xfs_image(dir.path(), &tree);
    exported_through_a_volume(&a, dir.path(), &tree, &blocks, "xfs").await;
}

/// The same for Btrfs (mounted `ro,rescue=nologreplay`): the tree comes back exactly, the
/// volume goes.
#[tokio::test(flavor = "multi_thread")]
async fn a_btrfs_snapshot_is_exported_file_by_file_through_a_temporary_volume() {
    let a = Account::new("410000000073").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = tree(dir.path());
    let blocks = fs_image(dir.path(), &tree, &["mkfs.btrfs", "-q"], 256 << 20);
    exported_through_a_volume(&a, dir.path(), &tree, &blocks, "btrfs").await;
}

/// Runs `export ebs --files --mount` of a snapshot of `blocks` (a whole-disk filesystem of
/// type `fs` holding `tree`) and checks the round trip and the volume's removal.
async fn exported_through_a_volume(a: &Account, dir: &Path, tree: &Path, blocks: &BTreeMap<u64, Vec<u8>>, fs: &str) {
    let snap = a.write_snapshot(1, None, blocks).await;
    let devices = dir.join("by-id");
    this_instance(a, &devices).await;
    let target = dir.join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());
    let state = dir.join("state");
    let run =
        a.bunker_on_instance(&["--json", "export", "ebs", &snap, "--files", "--mount", "--to", &to], &devices, &state);
    assert_eq!(run.code, 0, "{run:#?}");
    let out = run.json();
    assert_eq!(out["state"], "done", "{out:#}");

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join(format!("{snap}.files.json"))).unwrap()).unwrap();
    assert_eq!(index["filesystems"][0]["type"], fs, "{index:#}");
    let manifest = index["filesystems"][0]["manifest"].as_str().unwrap();
    assert_eq!(manifest, format!("{snap}.manifest.json"), "the whole disk: no partition suffix");
    let tar = common::zstd_decompress(&std::fs::read(target.join(format!("{snap}.tar.zst"))).unwrap());
    // The 64 MiB sparse file is stored as its data only (a GNU sparse entry), not as zeros.
    assert!(tar.len() < 16 << 20, "{} bytes of tar", tar.len());
    let back = untar(&tar, &dir.join("back"));
    assert_same_tree(tree, &back);
    assert!(xattrs(&back.join("etc")).contains_key("trusted.label"), "the test's own attributes exist");
    let sparse = std::fs::metadata(back.join("sparse")).unwrap();
    assert!(sparse.blocks() * 512 < 1 << 20, "tar restored the holes: {} blocks", sparse.blocks());
    // bunker's own restore reads the sparse entry and the pax headers, each file checked
    // against its catalog hash.
    let restored = dir.join("restored");
    let url = format!("{to}/{snap}.tar.zst");
    let r = a.bunker(&["restore", &url, "--to-dir", restored.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:#?}");
    for f in ["sparse", "etc/nginx/nginx.conf", "var.bin"] {
        assert_eq!(std::fs::read(restored.join(f)).unwrap(), std::fs::read(tree.join(f)).unwrap(), "{f}");
    }
    let sparse = std::fs::metadata(restored.join("sparse")).unwrap();
    assert!(sparse.blocks() * 512 < 1 << 20, "bunker restored the holes too: {} blocks", sparse.blocks());
    let link = std::fs::metadata(back.join("var.link")).unwrap();
    assert_eq!(link.ino(), std::fs::metadata(back.join("var.bin")).unwrap().ino(), "a hard link stays one");

    // The temporary volume went: attached once, detached, deleted; no loop device or mount
    // of it is left, and EC2 lists no volume of this deployment.
    let history = device_history(a);
    assert_eq!(history["attached"].as_array().unwrap().len(), 1, "{history:#}");
    assert_eq!(history["attached"], history["detached"], "{history:#}");
    assert_eq!(history["attached"], history["deleted"], "{history:#}");
    let volumes = a.ec2().await.describe_volumes().send().await.unwrap();
    assert!(
        volumes.volumes().iter().all(|v| v.tags().iter().all(|t| t.key() != Some("bunker:temporary"))),
        "{volumes:#?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(state.to_str().unwrap()), "{mounts}");
    let links: Vec<_> = std::fs::read_dir(&devices).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(links.iter().all(|n| n.to_string_lossy().starts_with('.')), "{links:?}");
}

/// Whether anything is mounted under `dir`.
fn mounted_under(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(dir.to_str().unwrap())
}

/// SIGKILL while the filesystem is mounted and its archive half uploaded (parts slowed by
/// the emulator), then the same command again: the second run finds the volume still
/// attached, removes the stale mount, exports once, then detaches and deletes the volume.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_export_is_finished_by_the_next_run_and_its_volume_removed() {
    let a = Account::new("410000000071").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("data")).unwrap();
    for i in 0..4 {
        std::fs::write(tree.join(format!("data/{i}.bin")), noise(10 + i, 8 << 20)).unwrap();
    }
    let snap = a.write_snapshot(1, None, &xfs_image(dir.path(), &tree)).await;
    let devices = dir.path().join("by-id");
    this_instance(&a, &devices).await;
    let bucket = a.bucket("files").await;
    let to = format!("s3://{bucket}/x");
    let state = dir.path().join("state");
    let imds = format!("{}/_bunker/imds/{}", a.endpoint, a.id);
    let command = |json: bool| {
        let mut c = a.command();
        if json {
            c.arg("--json");
        }
        c.args(["export", "ebs", &snap, "--files", "--mount", "--to", &to, "--chunk-mib", "1"])
            .env("AWS_EC2_METADATA_DISABLED", "false")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)
            .env("BUNKER_EXPORT_DEVICE_DIR", &devices)
            .env("STATE_DIRECTORY", &state)
            .env("BUNKER_SERVE_CHECK_INTERVAL", "1s");
        c
    };
    post(&a.endpoint, "/_bunker/faults", r#"{"s3_part_delay_ms": 1500}"#);
    let mut first = command(false).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !mounted_under(&state) {
        assert!(std::time::Instant::now() < deadline, "never mounted");
        assert!(first.try_wait().unwrap().is_none(), "the export ended before it was killed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    post(&a.endpoint, "/_bunker/faults", "{}");
    assert!(mounted_under(&state), "a SIGKILL leaves the mount behind");
    assert_eq!(device_history(&a)["detached"].as_array().unwrap().len(), 0);
    let keys = a.keys(&bucket, "x/").await;
    assert!(!keys.iter().any(|k| k.ends_with(".files.json") || k.ends_with(".manifest.json")), "{keys:?}");

    let second = common::Run::from(command(true).output().unwrap());
    assert_eq!(second.code, 0, "{second:#?}");
    let history = device_history(&a);
    assert_eq!(history["attached"].as_array().unwrap().len(), 1, "the volume was reused: {history:#}");
    assert_eq!(history["attached"], history["deleted"], "{history:#}");
    assert!(!mounted_under(&state), "the stale mount is gone");
    let keys = a.keys(&bucket, "x/").await;
    let manifests: Vec<_> = keys.iter().filter(|k| k.ends_with(".manifest.json")).collect();
    assert_eq!(manifests, [&format!("x/{snap}.manifest.json")], "{keys:?}");
    assert!(keys.contains(&format!("x/{snap}.files.json")), "{keys:?}");
    let tar = common::zstd_decompress(&a.get_object(&bucket, &format!("x/{snap}.tar.zst")).await);
    let back = untar(&tar, &dir.path().join("back"));
    assert_same_tree(&tree, &back);
}

/// An XFS filesystem holding `tree` in partition 1 of a GPT disk, 1 MiB in (as installers
/// lay it out): the disk's allocated blocks. The emulator's loop device has no partition
/// nodes, so bunker reaches the partition through a read-only `losetup` range.
fn gpt_xfs_disk(dir: &Path, tree: &Path) -> BTreeMap<u64, Vec<u8>> {
    let xfs = xfs_image(dir, tree);
    let disk = dir.join("gpt.img");
    std::fs::File::create(&disk).unwrap().set_len((1 << 30) + (2 << 20)).unwrap();
    let mut sfdisk = Command::new("sfdisk").arg("-q").arg(&disk).stdin(Stdio::piped()).spawn().unwrap();
    sfdisk.stdin.take().unwrap().write_all(b"label: gpt\nstart=2048, size=2097152, type=L\n").unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk");
    let mut blocks = allocated(&std::fs::read(&disk).unwrap());
    // 1 MiB is two 512 KiB snapshot blocks; the table's blocks are before and after.
    blocks.extend(xfs.into_iter().map(|(i, b)| (i + 2, b)));
    blocks
}

/// `bunker serve` with `export.ebs_format = "files"` and `export.mount = true`: a snapshot
/// whose GPT partition holds XFS goes through the restore actor (a temporary volume,
/// attached, its partition reached through a read-only loop range, mounted, archived,
/// removed); an ext4 snapshot is still read in place (no volume). Both trees come back with
/// `zstd -d | tar -x`, and both archives count in `/metrics`.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_exports_xfs_through_a_temporary_volume_and_ext4_in_place() {
    let a = Account::new("410000000072").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = tree(dir.path());
    let xfs = a.write_snapshot(2, None, &gpt_xfs_disk(dir.path(), &tree)).await;
    let small = dir.path().join("small");
    std::fs::create_dir_all(small.join("etc")).unwrap();
    std::fs::write(small.join("etc/hostname"), b"in-place\n").unwrap();
    let disk = dir.path().join("ext4.img");
    common::disk_with_ext4(&disk, "label: gpt\nstart=2048, size=81920, type=L\n", &small, 2048);
    let ext4 = a.write_snapshot(1, None, &allocated(&std::fs::read(&disk).unwrap())).await;
    let devices = dir.path().join("by-id");
    this_instance(&a, &devices).await;
    let bucket = a.bucket("archives").await;
    let (sqs, q, d) = queues(&a, "mounted").await;
    let cfg = dir.path().join("bunker.toml");
    let body = format!(
        "regions = [\"{}\"]\nexport.to = \"s3://{bucket}/auto\"\nexport.ebs_format = \"files\"\nexport.mount = true\n\
         export.device_dir = \"{}\"\nschedule.create = \"\"\nschedule.clean = \"\"\n\
         [serve]\nkinds = \"ebs\"\nlisten = \"127.0.0.1:0\"\ncheck_interval = \"1s\"\nqueue_url = \"{q}\"\n\
         dead_letter_queue_url = \"{d}\"\n",
        common::REGION,
        devices.display()
    );
    std::fs::write(&cfg, body).unwrap();
    let state = dir.path().join("state");
    let imds = format!("{}/_bunker/imds/{}", a.endpoint, a.id);
    let env = [("AWS_EC2_METADATA_DISABLED", "false"), ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str())];
    let (mut serve, addr, log) = a.serve_with(cfg.to_str().unwrap(), &state, &env);
    for snap in [&xfs, &ext4] {
        sqs.send_message().queue_url(&q).message_body(ebs_event(snap)).send().await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let keys = a.keys(&bucket, "auto/").await;
        if [&xfs, &ext4].iter().all(|s| keys.contains(&format!("auto/{s}.files.json"))) {
            break;
        }
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(std::time::Instant::now() < deadline, "{keys:?}\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // Detach and delete come after the index: wait for the volume to go too.
    while device_history(&a)["deleted"].as_array().map_or(0, Vec::len) < 1 {
        assert!(std::time::Instant::now() < deadline, "{:#}", device_history(&a));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // Each filesystem's archive is an export in /metrics, through the volume or in place.
    let metrics = common::http_get(&addr, "/metrics");
    assert!(metrics.contains("bunker_exports_total{status=\"ok\"} 2\n"), "{metrics}");
    let out = metrics.lines().find_map(|l| l.strip_prefix("bunker_export_bytes_total{direction=\"out\"} "));
    assert!(out.and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 1e6), "{metrics}");
    assert!(Command::new("kill").args(["-TERM", &serve.id().to_string()]).status().unwrap().success());
    assert_eq!(serve.wait().unwrap().code(), Some(0), "{}", std::fs::read_to_string(&log).unwrap());

    let json = |body: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&body).unwrap();
    let x = json(a.get_object(&bucket, &format!("auto/{xfs}.files.json")).await);
    assert_eq!(
        (x["filesystems"][0]["type"].as_str(), x["filesystems"][0]["partition"].as_u64()),
        (Some("xfs"), Some(1))
    );
    assert_eq!(x["filesystems"][0]["manifest"], format!("{xfs}.p1.manifest.json"), "{x:#}");
    let tar = common::zstd_decompress(&a.get_object(&bucket, &format!("auto/{xfs}.p1.tar.zst")).await);
    assert_same_tree(&tree, &untar(&tar, &dir.path().join("back")));
    let e = json(a.get_object(&bucket, &format!("auto/{ext4}.files.json")).await);
    assert_eq!(e["filesystems"][0]["type"], "ext4", "{e:#}");
    let tar = common::zstd_decompress(&a.get_object(&bucket, &format!("auto/{ext4}.p1.tar.zst")).await);
    let back = untar(&tar, &dir.path().join("back-ext4"));
    assert_eq!(std::fs::read(back.join("etc/hostname")).unwrap(), b"in-place\n");

    // One volume, for the XFS snapshot only: attached, detached, deleted; nothing mounted.
    let history = device_history(&a);
    assert_eq!(history["attached"].as_array().unwrap().len(), 1, "{history:#}");
    assert_eq!(history["attached"], history["deleted"], "{history:#}");
    assert!(!mounted_under(&state));
}

/// With `export.mount` (or `--mount`) and no `CAP_SYS_ADMIN`, bunker refuses to start and
/// names the systemd drop-in, instead of failing each export at its mount.
#[test]
fn mounting_without_cap_sys_admin_is_refused_at_start_naming_the_drop_in() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    let body = "deployment = \"captest\"\nregions = [\"us-east-1\"]\nexport.mount = true\n[serve]\nlisten = \"127.0.0.1:0\"\nkinds = \"ebs\"\n";
    std::fs::write(&cfg, body).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--bounding-set", "-sys_admin", env!("CARGO_BIN_EXE_bunker")])
            .args(args)
            .env_clear()
            .env("AWS_REGION", "us-east-1")
            .env("STATE_DIRECTORY", dir.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = run(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_ne!(code, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(stderr.contains("CAP_SYS_ADMIN") && stderr.contains("bunker.service.d/mount.conf"), "{stderr}");
    assert!(stderr.contains("export.mount = false"), "{stderr}");
    let (code, _, stderr) =
        run(&["export", "ebs", "snap-0123456789abcdef0", "--files", "--mount", "--to", "file:///nonexistent"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("CAP_SYS_ADMIN") && stderr.contains("mount.conf"), "{stderr}");
}

/// Runs an LVM tool on loop device `pv` only, the way a machine without device-mapper can
/// (`--driverloaded n`: nothing is activated), without touching the host's other devices or
/// its metadata backups; its output.
fn lvm(pv: &str, args: &[&str]) -> String {
    let config = format!(
        r#"devices {{ filter=["a|^{pv}$|","r|.*|"] obtain_device_list_from_udev=0 }}
        activation {{ udev_sync=0 udev_rules=0 }} backup {{ backup=0 archive=0 }}"#
    );
    let out = Command::new(args[0])
        .args(&args[1..])
        .args(["--config", &config, "--driverloaded", "n"])
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Where LVM put each logical volume's pieces, by name: (start in the volume, size, disk
/// offset).
type Pieces = BTreeMap<String, Vec<(usize, usize, usize)>>;

/// A loop device, detached when dropped (a failing test leaves none behind).
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        if let Err(e) = Command::new("losetup").arg("-d").arg(&self.0).status() {
            eprintln!("losetup -d {}: {e}", self.0);
        }
    }
}

/// A number LVM printed (`--units b --nosuffix`).
fn lvm_number(text: &str) -> u64 {
    text.trim().parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// A 1 GiB GPT disk whose partition 1 (`pv_mib` MiB at 1 MiB) is an LVM physical volume
/// made by the LVM tools (volume group `vg`, 4 MiB extents), then shaped by `steps`
/// (`lvcreate` …, nothing activated). The image and, per logical volume, where LVM itself
/// says each piece lies: (start in the volume, size, disk offset).
fn lvm_disk(dir: &Path, vg: &str, pv_mib: u64, steps: &[&[&str]]) -> (Vec<u8>, Pieces) {
    let disk = dir.join("lvm-disk.img");
    std::fs::File::create(&disk).unwrap().set_len(1 << 30).unwrap();
    let mut sfdisk = Command::new("sfdisk").arg("-q").arg(&disk).stdin(Stdio::piped()).spawn().unwrap();
    let table = format!("label: gpt\nstart=2048, size={}, type=V\n", pv_mib * 2048);
    sfdisk.stdin.take().unwrap().write_all(table.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk");
    let out = Command::new("losetup")
        .args(["--find", "--show", "--offset", "1048576", "--sizelimit", &(pv_mib << 20).to_string()])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(out.status.success(), "losetup: {out:?}");
    let pv = Loop(String::from_utf8(out.stdout).unwrap().trim().to_string());
    let lvm = |args: &[&str]| lvm(&pv.0, args);
    lvm(&["pvcreate", "-q", &pv.0]);
    lvm(&["vgcreate", "-q", "-s", "4M", vg, &pv.0]);
    for step in steps {
        lvm(step);
    }
    let pe_start = lvm_number(&lvm(&["pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", &pv.0]));
    let extent = lvm_number(&lvm(&["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", vg]));
    let segments = lvm(&[
        "lvs",
        "--segments",
        "--noheadings",
        "--separator",
        ",",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "lv_name,seg_start,seg_size,seg_pe_ranges",
        vg,
    ]);
    drop(pv);
    let mut pieces = Pieces::new();
    for line in segments.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // <lv>,<start>,<size>,/dev/loopN:<first>-<last>
        let f: Vec<&str> = line.split(',').collect();
        let first = lvm_number(f[3].rsplit(':').next().unwrap().split('-').next().unwrap());
        let at = (1 << 20) + (pe_start + first * extent) as usize;
        pieces.entry(f[0].to_string()).or_default().push((lvm_number(f[1]) as usize, lvm_number(f[2]) as usize, at));
    }
    (std::fs::read(&disk).unwrap(), pieces)
}

/// Writes filesystem image `fs` into `image` where LVM put each piece of its volume.
fn place(image: &mut [u8], pieces: &[(usize, usize, usize)], fs: &[u8]) {
    for (start, size, at) in pieces {
        image[*at..at + size].copy_from_slice(&fs[*start..start + size]);
    }
}

/// `export ebs --files` of a disk with LVM, read in place (no volume, nothing activated):
/// the ext4 filesystem of a logical volume lying in two pieces comes back as the tree it was
/// made from, in an archive named after the logical volume; the blank logical volume is
/// named as not exported.
#[tokio::test(flavor = "multi_thread")]
async fn an_ext4_logical_volume_in_two_pieces_is_read_in_place() {
    let a = Account::new("410000000074").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc/nginx")).unwrap();
    std::fs::write(tree.join("etc/nginx/nginx.conf"), b"worker_processes 2;\n").unwrap();
    // Large enough to cross from the first piece into the second.
    std::fs::write(tree.join("big.bin"), noise(21, 20 << 20)).unwrap();
    std::fs::write(tree.join("small.bin"), noise(22, 100_000)).unwrap();
    // root: created, then extended after data was made, so it lies in two pieces.
    let (mut image, pieces) = lvm_disk(
        dir.path(),
        "bunkervg",
        200,
        &[
            &["lvcreate", "-q", "-an", "-Zn", "-L", "16M", "-n", "root", "bunkervg"],
            &["lvcreate", "-q", "-an", "-Zn", "-L", "8M", "-n", "data", "bunkervg"],
            &["lvextend", "-q", "-L", "+16M", "bunkervg/root"],
        ],
    );
    assert_eq!(pieces["root"].len(), 2, "LVM put root in two pieces: {pieces:?}");
    let root = dir.path().join("root.img");
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-d"]).arg(&tree).arg(&root).arg("32M");
    assert!(mkfs.status().unwrap().success(), "mkfs.ext4");
    place(&mut image, &pieces["root"], &std::fs::read(&root).unwrap());
    let blocks = allocated(&image);
    let snap = a.write_snapshot(1, None, &blocks).await;
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());

    let run = a.bunker(&["--json", "export", "ebs", &snap, "--files", "--to", &to]);
    assert_eq!(run.code, 1, "the blank logical volume is not exported: {run:#?}");
    let out = run.json();
    let fs = &out["filesystems"][0];
    assert_eq!(
        (fs["lv"].as_str(), fs["type"].as_str(), fs["partition"].as_u64()),
        (Some("bunkervg/root"), Some("ext4"), Some(1))
    );
    assert_eq!(out["not_exported"][0]["lv"], "bunkervg/data", "{out:#}");
    assert!(
        run.stderr.contains("logical volume bunkervg/data on partition 1: no filesystem bunker recognises"),
        "{}",
        run.stderr
    );
    let tar =
        common::zstd_decompress(&std::fs::read(target.join(format!("{snap}.p1.lv-bunkervg-root.tar.zst"))).unwrap());
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let mut x = Command::new("tar").arg("-x").arg("-C").arg(&back).stdin(Stdio::piped()).spawn().unwrap();
    x.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(x.wait().unwrap().success());
    for f in ["etc/nginx/nginx.conf", "big.bin", "small.bin"] {
        assert_eq!(std::fs::read(back.join(f)).unwrap(), std::fs::read(tree.join(f)).unwrap(), "{f}");
    }
    // Nothing was activated (on a machine with device-mapper, activation makes this node).
    assert!(!Path::new("/dev/mapper/bunkervg-root").exists());
}

/// `export ebs --files --mount` of a disk whose XFS filesystem is on a logical volume in one
/// piece: the temporary volume's range holding it is looped read-only and mounted (LVM is
/// never activated), and the tree comes back exactly in the logical volume's archive.
#[tokio::test(flavor = "multi_thread")]
async fn an_xfs_logical_volume_in_one_piece_is_exported_through_a_temporary_volume() {
    let a = Account::new("410000000075").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = tree(dir.path());
    let (mut image, pieces) = lvm_disk(
        dir.path(),
        "bunkerxfs",
        400,
        &[&["lvcreate", "-q", "-an", "-Zn", "-L", "320M", "-n", "root", "bunkerxfs"]],
    );
    assert_eq!(pieces["root"].len(), 1, "{pieces:?}");
    place(&mut image, &pieces["root"], &fs_image_bytes(dir.path(), &tree, &["mkfs.xfs", "-q"], 320 << 20));
    let snap = a.write_snapshot(1, None, &allocated(&image)).await;
    drop(image);
    let devices = dir.path().join("by-id");
    this_instance(&a, &devices).await;
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());
    let state = dir.path().join("state");
    let run =
        a.bunker_on_instance(&["--json", "export", "ebs", &snap, "--files", "--mount", "--to", &to], &devices, &state);
    assert_eq!(run.code, 0, "{run:#?}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join(format!("{snap}.files.json"))).unwrap()).unwrap();
    assert_eq!(
        (index["filesystems"][0]["type"].as_str(), index["filesystems"][0]["lv"].as_str()),
        (Some("xfs"), Some("bunkerxfs/root"))
    );
    let tar =
        common::zstd_decompress(&std::fs::read(target.join(format!("{snap}.p1.lv-bunkerxfs-root.tar.zst"))).unwrap());
    assert_same_tree(&tree, &untar(&tar, &dir.path().join("back")));
    assert!(!mounted_under(&state), "nothing left mounted");
    let history = device_history(&a);
    assert_eq!(history["attached"], history["deleted"], "{history:#}");
}
