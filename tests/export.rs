//! Export, verify and restore against the emulator: snapshots written block by block with the
//! EBS direct APIs, archives in emulated S3 (or a directory), and the result compared byte for
//! byte with what was written, read back independently with the SDK and the `zstd` CLI.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{allocated, blake3_hex, disk_with_ext4, image, noise, sha256_hex, Account, BLOCK};

/// ~320 of 2048 blocks of a 1 GiB volume: random, compressible and explicitly zero blocks,
/// with holes between.
fn mixed_blocks(seed: u64) -> BTreeMap<u64, Vec<u8>> {
    let mut blocks = BTreeMap::new();
    for i in 0..2048u64 {
        let h = (i * 2_654_435_761 + seed) % 97;
        let data = match h {
            0..=7 => noise(seed * 10_000 + i, BLOCK),
            8..=13 => format!("block {i} of a text-like file; ").repeat(BLOCK / 24).into_bytes()[..BLOCK].to_vec(),
            14 => vec![0u8; BLOCK],
            _ => continue,
        };
        blocks.insert(i, data);
    }
    blocks
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_round_trips_through_s3_to_a_file_and_to_a_snapshot() {
    let a = Account::new("410000000001").await;
    let bucket = a.bucket("archives").await;
    let blocks = mixed_blocks(1);
    assert!(blocks.len() > 250, "several hundred blocks: {}", blocks.len());
    let expected = image(1, &blocks);
    let snap = a.write_snapshot(1, None, &blocks).await;

    let to = format!("s3://{bucket}/exports/daily");
    let out = a.bunker(&["--json", "export", "ebs", &snap, "--to", &to]).ok_json();
    let archive_key = format!("exports/daily/{snap}.img.zst");
    assert_eq!(out["archive"], format!("s3://{bucket}/{archive_key}"));
    assert_eq!(out["manifest"], format!("s3://{bucket}/exports/daily/{snap}.manifest.json"));
    assert_eq!(out["bytes_in"], 1u64 << 30);
    assert_eq!(out["chunks"], 256);
    assert!(out["seconds"].as_f64().unwrap() > 0.0);
    let stored = a.get_object(&bucket, &archive_key).await;
    assert_eq!(out["bytes_out"], stored.len() as u64, "one run uploads the archive once");
    assert!(stored.len() < expected.len() / 5, "holes and text compress: {} bytes", stored.len());

    // Anyone can restore it with standard tools: zstd -d, then sha256sum against the manifest.
    let plain = common::zstd_decompress(&stored);
    assert!(plain == expected, "zstd -d of the archive is the image");
    let manifest: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("exports/daily/{snap}.manifest.json")).await).unwrap();
    assert_eq!(manifest["image_blake3"], blake3_hex(&expected));
    assert_eq!(manifest["source"]["id"], snap);
    assert_eq!(manifest["block_size"], BLOCK);
    assert_eq!(manifest["format"], "bunker-archive");

    let url = out["archive"].as_str().unwrap().to_string();
    let v = a.bunker(&["--json", "verify", &url]).ok_json();
    assert_eq!(v["image_blake3"], blake3_hex(&expected));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    a.bunker(&["--json", "restore", &url, "--to-file", file.to_str().unwrap()]).ok_json();
    assert!(std::fs::read(&file).unwrap() == expected, "restored file is the image");
    assert!(!dir.path().join("disk.img.partial").exists());

    let r = a.bunker(&["--json", "restore", &url, "--to-snapshot"]).ok_json();
    let new = r["snapshot_id"].as_str().unwrap();
    assert_ne!(new, snap);
    let (back, written) = a.read_snapshot(new, 1).await;
    assert!(back == expected, "restored snapshot is the image");
    let zero_blocks = blocks.values().filter(|d| d.iter().all(|&b| b == 0)).count();
    assert_eq!(written, blocks.len() - zero_blocks, "only non-zero blocks are written");

    // A finished export is not redone.
    let again = a.bunker(&["--json", "export", "ebs", &snap, "--to", &to]).ok_json();
    assert_eq!(again["already_exported"], true);
    assert_eq!(again["bytes_out"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_fails_verify_and_restore_naming_the_chunk() {
    let a = Account::new("410000000002").await;
    let bucket = a.bucket("archives").await;
    let blocks = mixed_blocks(2);
    let snap = a.write_snapshot(1, None, &blocks).await;
    let to = format!("s3://{bucket}/p");
    let out = a.bunker(&["--json", "export", "ebs", &snap, "--to", &to]).ok_json();
    let url = out["archive"].as_str().unwrap().to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("p/{snap}.manifest.json")).await).unwrap();
    let frames = manifest["frames"].as_array().unwrap();
    let (index, frame) = frames.iter().enumerate().filter(|(_, f)| f["kind"] == "data").nth(5).unwrap();
    let key = format!("p/{snap}.img.zst");
    let mut bytes = a.get_object(&bucket, &key).await;
    let at = frame["archive_offset"].as_u64().unwrap() + frame["archive_length"].as_u64().unwrap() / 2;
    bytes[at as usize] ^= 0x01;
    a.put_object(&bucket, &key, bytes).await;

    let v = a.bunker(&["verify", &url]);
    assert_eq!(v.code, 1, "{v:#?}");
    assert!(v.stderr.contains(&format!("chunk {index} ")), "names the chunk: {}", v.stderr);
    assert!(v.stderr.contains(&format!("image offset {}", frame["offset"])), "and its offset: {}", v.stderr);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    let r = a.bunker(&["restore", &url, "--to-file", file.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains(&format!("chunk {index} ")), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file is left claiming success");
}

/// Requests to export.to's bucket carry ExpectedBucketOwner: a bucket another account owns
/// (one deleted and re-created by someone else, say) is refused before a byte is written,
/// unless export.bucket_owner names that account.
#[tokio::test(flavor = "multi_thread")]
async fn export_to_a_bucket_another_account_owns_is_refused_unless_named_as_its_owner() {
    let a = Account::new("410000000007").await;
    let other = Account::new("410000000008").await;
    let bucket = other.bucket("not-ours").await;
    let snap = a.write_snapshot(1, None, &mixed_blocks(7)).await;
    let to = format!("s3://{bucket}/p");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bunker.toml");
    std::fs::write(&config, format!("export.to = \"{to}\"\n")).unwrap();
    let cfg = config.to_str().unwrap();
    let r = a.bunker(&["--config", cfg, "export", "ebs", &snap, "--to", &to]);
    assert_ne!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("AccessDenied") || r.stderr.contains("denied"), "{}", r.stderr);
    assert!(other.keys(&bucket, "").await.is_empty(), "nothing written to a bucket of another owner");
    // Named as the owner (a central archive account), the same export goes through.
    std::fs::write(&config, format!("export.to = \"{to}\"\nexport.bucket_owner = \"{}\"\n", other.id)).unwrap();
    let out = a.bunker(&["--json", "--config", cfg, "export", "ebs", &snap, "--to", &to]).ok_json();
    assert!(out["archive"].as_str().unwrap().starts_with(&to), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_export_restores_to_the_later_snapshot() {
    let a = Account::new("410000000003").await;
    let bucket = a.bucket("archives").await;
    let first = mixed_blocks(3);
    let s1 = a.write_snapshot(1, None, &first).await;
    // The later snapshot: some blocks rewritten, some new, one allocated block zeroed.
    let mut changes = BTreeMap::new();
    for (n, i) in first.keys().step_by(25).enumerate() {
        changes.insert(*i, noise(77 + n as u64, BLOCK));
    }
    changes.insert(2047, noise(5, BLOCK));
    changes.insert(1000, noise(6, BLOCK));
    let zeroed = *first.keys().nth(3).unwrap();
    changes.insert(zeroed, vec![0u8; BLOCK]);
    let s2 = a.write_snapshot(1, Some(&s1), &changes).await;
    let mut later = first.clone();
    later.extend(changes.clone());
    let expected = image(1, &later);

    let to = format!("s3://{bucket}/inc");
    let full = a.bunker(&["--json", "export", "ebs", &s1, "--to", &to]).ok_json();
    let inc = a.bunker(&["--json", "export", "ebs", &s2, "--to", &to, "--base", &s1]).ok_json();
    assert!(
        inc["bytes_out"].as_u64().unwrap() * 3 < full["bytes_out"].as_u64().unwrap(),
        "the increment holds only changed chunks: {} vs {}",
        inc["bytes_out"],
        full["bytes_out"]
    );
    assert!(inc["data_chunks"].as_u64().unwrap() <= changes.len() as u64);
    let manifest: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("inc/{s2}.manifest.json")).await).unwrap();
    assert_eq!(manifest["base"]["snapshot_id"], s1);

    let url = inc["archive"].as_str().unwrap().to_string();
    a.bunker(&["verify", &url]).ok_json_or_code(0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("later.img");
    let r = a.bunker(&["--json", "restore", &url, "--to-file", file.to_str().unwrap()]).ok_json();
    assert_eq!(r["applied"].as_array().unwrap().len(), 2, "base, then the increment");
    assert_eq!(r["image_blake3"], blake3_hex(&expected));
    assert!(std::fs::read(&file).unwrap() == expected, "base + increment is the later snapshot");

    let r = a.bunker(&["--json", "restore", &url, "--to-snapshot"]).ok_json();
    let (back, _) = a.read_snapshot(r["snapshot_id"].as_str().unwrap(), 1).await;
    assert!(back == expected, "restored snapshot is the later snapshot");

    // Without its base in the target an incremental export is refused.
    let other = format!("s3://{bucket}/elsewhere");
    let e = a.bunker(&["export", "ebs", &s2, "--to", &other, "--base", &s1]);
    assert_eq!(e.code, 2, "{e:#?}");
    assert!(e.stderr.contains("export") && e.stderr.contains(&s1), "{}", e.stderr);

    // A format-1 base (as an older bunker wrote it) starts no format-2 chain: refused, naming
    // the fix, and nothing is written.
    let mut v1: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("inc/{s1}.manifest.json")).await).unwrap();
    v1["version"] = 1.into();
    for (from, to) in [("image_blake3", "image_sha256"), ("chunks_blake3", "chunks_sha256")] {
        let h = v1.as_object_mut().unwrap().remove(from).unwrap();
        v1[to] = h;
    }
    for f in v1["frames"].as_array_mut().unwrap() {
        if let Some(h) = f.as_object_mut().unwrap().remove("blake3") {
            f["sha256"] = h;
        }
    }
    a.put_object(&bucket, &format!("old/{s1}.manifest.json"), serde_json::to_vec(&v1).unwrap()).await;
    a.put_object(&bucket, &format!("old/{s1}.img.zst"), a.get_object(&bucket, &format!("inc/{s1}.img.zst")).await)
        .await;
    let e = a.bunker(&["export", "ebs", &s2, "--to", &format!("s3://{bucket}/old"), "--base", &s1]);
    assert_eq!(e.code, 2, "{e:#?}");
    assert!(e.stderr.contains("format version 1") && e.stderr.contains("in full"), "{}", e.stderr);
    assert_eq!(a.keys(&bucket, "old/").await.len(), 2, "nothing written beside the old base");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_leaves_nothing_claiming_success() {
    let a = Account::new("410000000004").await;
    let bucket = a.bucket("archives").await;

    let r = a.bunker(&["export", "ebs", "snap-0123456789abcdef0", "--to", &format!("s3://{bucket}/x")]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("snap-0123456789abcdef0") && r.stderr.contains("does not exist"), "{}", r.stderr);

    let blocks: BTreeMap<u64, Vec<u8>> = (0..40u64).map(|i| (i * 7, noise(i, BLOCK))).collect();
    let snap = a.write_snapshot(1, None, &blocks).await;
    let r = a.bunker(&["export", "ebs", &snap, "--to", "s3://no-such-bucket-410000000004/x"]);
    assert_ne!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("no-such-bucket-410000000004") && r.stderr.contains("NoSuchBucket"), "{}", r.stderr);

    // A bucket this account may not write to.
    let ro = a.bucket("read-only").await;
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*",
        "Action": "s3:PutObject", "Resource": format!("arn:aws:s3:::{ro}/*")}]});
    a.s3().await.put_bucket_policy().bucket(&ro).policy(policy.to_string()).send().await.unwrap();
    let r = a.bunker(&["export", "ebs", &snap, "--to", &format!("s3://{ro}/x")]);
    assert_ne!(r.code, 0, "{r:#?}");
    let denied = r.stderr.contains("AccessDenied") || r.stderr.contains("access denied");
    assert!(r.stderr.contains(&format!("s3://{ro}/x/")) && denied, "{}", r.stderr);
    let s3 = a.s3().await;
    assert!(s3.list_multipart_uploads().bucket(&ro).send().await.unwrap().uploads().is_empty(), "upload aborted");
    assert_eq!(s3.list_objects_v2().bucket(&ro).send().await.unwrap().key_count(), Some(0), "nothing written");

    let r = a.bunker(&["export", "ebs", &snap, "--to", "ftp://host/x"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("expected s3://bucket/prefix or file:///directory"), "{}", r.stderr);

    // A truncated archive.
    let out = a.bunker(&["--json", "export", "ebs", &snap, "--to", &format!("s3://{bucket}/t")]).ok_json();
    let key = format!("t/{snap}.img.zst");
    let bytes = a.get_object(&bucket, &key).await;
    a.put_object(&bucket, &key, bytes[..bytes.len() / 2].to_vec()).await;
    let url = out["archive"].as_str().unwrap();
    let v = a.bunker(&["verify", url]);
    assert_eq!(v.code, 1, "{v:#?}");
    assert!(v.stderr.contains("truncated"), "{}", v.stderr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    let r = a.bunker(&["restore", url, "--to-file", file.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no partial file left");

    // A foreign object: no manifest beside it, or a manifest that is not bunker's.
    a.put_object(&bucket, "f/foreign.img.zst", noise(9, 10_000)).await;
    let v = a.bunker(&["verify", &format!("s3://{bucket}/f/foreign.img.zst")]);
    assert_eq!(v.code, 2, "{v:#?}");
    assert!(v.stderr.contains("no manifest at") && v.stderr.contains("not a bunker archive"), "{}", v.stderr);
    a.put_object(&bucket, "f/foreign.manifest.json", br#"{"hello": "world"}"#.to_vec()).await;
    let r = a.bunker(&["restore", &format!("s3://{bucket}/f/foreign.img.zst"), "--to-file", file.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("not a bunker manifest"), "{}", r.stderr);
    assert!(!file.exists());
    let r = a.bunker(&["verify", &format!("s3://{bucket}/f/readme.txt")]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("neither an archive"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_and_directories_export_to_a_directory_target() {
    let a = Account::new("410000000005").await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());

    // An image file with a hole and a tail that is not a whole chunk.
    let img = dir.path().join("disk.raw");
    let mut data = noise(1, 3 << 20);
    data.extend(vec![0u8; 9 << 20]);
    data.extend(b"tail".repeat(100_000));
    std::fs::write(&img, &data).unwrap();
    let out = a.bunker(&["--json", "export", "file", img.to_str().unwrap(), "--to", &to]).ok_json();
    assert_eq!(out["bytes_in"], data.len() as u64);
    let stored = std::fs::read(target.join("disk.raw.img.zst")).unwrap();
    assert!(common::zstd_decompress(&stored) == data);
    assert_eq!(out["image_blake3"], blake3_hex(&data));
    assert!(out["image_sha256"].is_null(), "SHA-256 only on request");
    // The standard tool agrees: `b3sum` of the file prints the manifest's image_blake3.
    let b3 = Command::new("b3sum").arg("--no-names").arg(&img).output().expect("b3sum (apt-get install b3sum)");
    assert_eq!(String::from_utf8(b3.stdout).unwrap().trim(), out["image_blake3"]);
    // On request, SHA-256 too (for `sha256sum`), checked by verify beside BLAKE3.
    let sha = a.bunker(&["--json", "export", "file", img.to_str().unwrap(), "--to", &to, "--name", "sha", "--sha256"]);
    let sha = sha.ok_json();
    assert_eq!(sha["image_sha256"], sha256_hex(&data));
    assert_eq!(sha["image_blake3"], out["image_blake3"]);
    let v = a.bunker(&["--json", "verify", sha["archive"].as_str().unwrap()]).ok_json();
    assert_eq!((&v["image_sha256"], &v["image_blake3"]), (&sha["image_sha256"], &out["image_blake3"]));
    a.bunker(&["verify", out["archive"].as_str().unwrap()]).ok_json_or_code(0);
    let back = dir.path().join("back.raw");
    a.bunker(&["restore", out["archive"].as_str().unwrap(), "--to-file", back.to_str().unwrap()]).ok_json_or_code(0);
    assert!(std::fs::read(&back).unwrap() == data);
    let again = a.bunker(&["restore", out["archive"].as_str().unwrap(), "--to-file", back.to_str().unwrap()]);
    assert_eq!(again.code, 2, "restore never overwrites: {again:#?}");

    // A directory tree, as tar.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("a.txt"), b"hello").unwrap();
    std::fs::write(tree.join("sub/b.bin"), noise(3, 200_000)).unwrap();
    std::fs::write(tree.join("sub/deeper/c.txt"), b"deep").unwrap();
    std::os::unix::fs::symlink("a.txt", tree.join("link")).unwrap();
    let out = a.bunker(&["--json", "export", "path", tree.to_str().unwrap(), "--to", &to]).ok_json();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join("tree.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["content"], "tar");
    assert_eq!(manifest["tree"]["files"], 3);
    assert_eq!(manifest["tree"]["file_bytes"], 5 + 200_000 + 4);
    let tar = common::zstd_decompress(&std::fs::read(target.join("tree.tar.zst")).unwrap());
    assert_eq!(out["image_blake3"], blake3_hex(&tar), "the manifest hashes the tar stream");
    let listing = Command::new("tar").args(["-t"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut listing = listing;
    listing.stdin.take().unwrap().write_all(&tar).unwrap();
    let names = String::from_utf8(listing.wait_with_output().unwrap().stdout).unwrap();
    for n in ["a.txt", "sub/b.bin", "sub/deeper/c.txt", "link"] {
        assert!(names.lines().any(|l| l == n), "{n} in {names}");
    }
}

/// `export path` keeps extended attributes with their own entry: a FIFO carrying one is
/// skipped (named in `tree.skipped`) and the file after it does not inherit it; the file's
/// own attribute comes back with `tar -x --xattrs`.
#[tokio::test(flavor = "multi_thread")]
async fn attributes_stay_with_their_entry_when_one_before_is_skipped() {
    let a = Account::new("410000000074").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("attrs");
    std::fs::create_dir(&tree).unwrap();
    let fifo = tree.join("a-fifo");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0)
        .unwrap();
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::setxattr(&fifo, "trusted.fifo", b"not for the next entry", flags).unwrap();
    std::fs::write(tree.join("b-file"), b"plain").unwrap();
    std::fs::write(tree.join("c-file"), b"labelled").unwrap();
    rustix::fs::setxattr(tree.join("c-file"), "user.label", b"mine", flags).unwrap();
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());
    let run = a.bunker(&["--json", "export", "path", tree.to_str().unwrap(), "--to", &to]);
    assert_eq!(run.code, 1, "a skipped entry: {run:#?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join("attrs.manifest.json")).unwrap()).unwrap();
    assert!(manifest["tree"]["skipped"][0].as_str().unwrap().starts_with("a-fifo"), "{manifest:#}");
    let tar = common::zstd_decompress(&std::fs::read(target.join("attrs.tar.zst")).unwrap());
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let mut x = Command::new("tar")
        .args(["-x", "--xattrs", "--xattrs-include=*", "-C"])
        .arg(&back)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    x.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(x.wait().unwrap().success());
    let get = |f: &str, name: &str| {
        let mut v = vec![0u8; 256];
        rustix::fs::lgetxattr(back.join(f), name, v.as_mut_slice()).map(|n| v[..n].to_vec())
    };
    assert!(get("b-file", "trusted.fifo").is_err(), "the skipped FIFO's attribute went to the next entry");
    assert_eq!(get("c-file", "user.label").unwrap(), b"mine");
    assert_eq!(std::fs::read(back.join("b-file")).unwrap(), b"plain");
}

#[tokio::test(flavor = "multi_thread")]
async fn tiny_buffers_on_a_large_sparse_source_keep_memory_bounded() {
    let a = Account::new("410000000006").await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    // 16 GiB, sparse, with 400 MiB of random data in 100 places: 2.5 times the bound.
    let img = dir.path().join("sparse.raw");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(16 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    let mut expected_data = 0;
    for k in 0..100u64 {
        let chunk = noise(k, 4 << 20);
        f.write_all_at(&chunk, k * (160 << 20) + 12345 * k).unwrap();
        expected_data += chunk.len();
    }
    drop(f);
    let out = a
        .bunker(&[
            "--json",
            "export",
            "file",
            img.to_str().unwrap(),
            "--to",
            &format!("file://{}", target.display()),
            "--chunks-in-flight",
            "1",
            "--channel-capacity",
            "1",
            "--parts-in-flight",
            "1",
            "--threads",
            "1",
        ])
        .ok_json();
    let rss = out["peak_rss_bytes"].as_u64().unwrap();
    eprintln!("peak RSS with every buffer at 1: {rss} bytes");
    // Well under the 400 MiB of data; the slack is allocator arenas of the blocking threads.
    assert!(rss < 160 << 20, "peak RSS {rss} bytes with one chunk in flight");
    assert!(out["archive_size"].as_u64().unwrap() > expected_data as u64, "random data does not compress");
    assert!(out["archive_size"].as_u64().unwrap() < expected_data as u64 + (4 << 20), "holes cost almost nothing");
    let v = a.bunker(&["--json", "verify", out["archive"].as_str().unwrap()]).ok_json();
    assert_eq!(v["image_blake3"], out["image_blake3"]);
    assert_eq!(v["image_size"], 16u64 << 30);
}

/// `export path` writes a catalog beside the tar archive: every entry with its type, mode,
/// owner, mtime, link target, a regular file's SHA-256 and the offset of its header in the
/// stream (a tar reader started there reads that entry); `bunker ls` lists it without
/// reading the archive; hard links are stored as links; a catalog that does not match its
/// hash in the manifest is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_tar_export_has_a_catalog_that_ls_lists_and_whose_offsets_and_hashes_hold() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let a = Account::new("410000000009").await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc/nginx/conf.d")).unwrap();
    std::fs::write(tree.join("etc/nginx/nginx.conf"), b"worker_processes 2;\n").unwrap();
    std::fs::write(tree.join("etc/nginx/conf.d/empty.conf"), b"").unwrap();
    std::fs::write(tree.join("big.bin"), noise(9, 3 << 20)).unwrap();
    std::fs::hard_link(tree.join("big.bin"), tree.join("etc/big-again.bin")).unwrap();
    std::fs::write(tree.join("ünïcode ✓.txt"), "ü\n").unwrap();
    std::os::unix::fs::symlink("nginx/nginx.conf", tree.join("etc/current.conf")).unwrap();
    std::fs::set_permissions(tree.join("etc/nginx"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let out = a.bunker(&["--json", "export", "path", tree.to_str().unwrap(), "--to", &to]).ok_json();
    let archive = out["archive"].as_str().unwrap().to_string();

    let ls = a.bunker(&["--json", "ls", &archive]).ok_json();
    let entries = ls.as_array().unwrap();
    let by_path: BTreeMap<&str, &serde_json::Value> =
        entries.iter().map(|e| (e["path"].as_str().unwrap(), e)).collect();
    let want = [
        "big.bin",
        "etc",
        "etc/big-again.bin",
        "etc/current.conf",
        "etc/nginx",
        "etc/nginx/conf.d",
        "etc/nginx/conf.d/empty.conf",
        "etc/nginx/nginx.conf",
        "ünïcode ✓.txt",
    ];
    assert_eq!(by_path.keys().copied().collect::<Vec<_>>(), want, "{ls:#}");
    assert_eq!(by_path["etc/current.conf"]["type"], "symlink");
    assert_eq!(by_path["etc/current.conf"]["link"], "nginx/nginx.conf");
    assert_eq!(by_path["etc/big-again.bin"]["type"], "hardlink");
    assert_eq!(by_path["etc/big-again.bin"]["link"], "big.bin");
    assert_eq!(by_path["etc/nginx"]["mode"], 0o750);
    let tar = common::zstd_decompress(&std::fs::read(target.join("tree.tar.zst")).unwrap());
    for (path, e) in &by_path {
        let meta = std::fs::symlink_metadata(tree.join(path)).unwrap();
        assert_eq!(e["mtime"], meta.mtime(), "{path}");
        assert_eq!(e["uid"], u64::from(meta.uid()), "{path}");
        if e["type"] == "file" {
            assert_eq!(e["blake3"], blake3_hex(&std::fs::read(tree.join(path)).unwrap()), "{path}");
            assert!(e.get("sha256").is_none(), "{path}: catalog version 2 hashes with BLAKE3 only");
            assert_eq!(e["size"], meta.len(), "{path}");
        }
        let offset = e["offset"].as_u64().unwrap() as usize;
        let mut from_here = tar::Archive::new(&tar[offset..]);
        let first = from_here.entries().unwrap().next().unwrap().unwrap();
        let name = first.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        assert_eq!(name, *path, "the header at {offset} is the entry's");
    }

    // The plain tools restore it, hard link included.
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let mut x = Command::new("tar").arg("-x").arg("-C").arg(&back).stdin(Stdio::piped()).spawn().unwrap();
    x.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(x.wait().unwrap().success());
    let (one, two) =
        (std::fs::metadata(back.join("big.bin")).unwrap(), std::fs::metadata(back.join("etc/big-again.bin")).unwrap());
    assert_eq!(one.ino(), two.ino(), "a hard link comes back as one");

    let sub = a.bunker(&["--json", "ls", &archive, "/etc/nginx"]).ok_json();
    assert_eq!(sub.as_array().unwrap().len(), 4, "etc/nginx and what is under it: {sub:#}");
    let none = a.bunker(&["ls", &archive, "nope"]);
    assert_eq!(none.code, 2, "{none:#?}");
    let catalog = target.join("tree.catalog.jsonl.zst");
    let mut bytes = std::fs::read(&catalog).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&catalog, bytes).unwrap();
    let tampered = a.bunker(&["ls", &archive]);
    assert_eq!(tampered.code, 1, "{tampered:#?}");
    assert!(tampered.stderr.contains("does not match its SHA-256"), "{}", tampered.stderr);
}

/// A GPT disk like a root volume: partition 1 an ext4 filesystem made by `mkfs.ext4 -d` from
/// a tree, partition 2 (8 MiB at 42 MiB) random bytes that are no filesystem.
fn partitioned_disk(dir: &std::path::Path, tree: &std::path::Path) -> BTreeMap<u64, Vec<u8>> {
    let disk = dir.join("disk.img");
    let table = "label: gpt\nstart=2048, size=81920, type=L\nstart=86016, size=16384, type=L\n";
    disk_with_ext4(&disk, table, tree, 2048);
    let mut image = std::fs::read(&disk).unwrap();
    image[86016 * 512..][..8 << 20].copy_from_slice(&noise(4, 8 << 20));
    allocated(&image)
}

/// `export ebs --files` reads the ext4 filesystem of a partitioned snapshot in place (no
/// volume): the tar the standard tools extract is the source tree (content, modes, owners,
/// mtimes, symlinks, long names), the catalog lists it with each file's SHA-256, the manifest
/// names the partition, a partition bunker does not read is reported and the exit is 1, and
/// of that partition's 16 allocated blocks only the one holding its head is fetched.
#[tokio::test(flavor = "multi_thread")]
async fn an_ext4_partition_of_a_snapshot_is_archived_file_by_file_without_a_volume() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let a = Account::new("410000000010").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let deep = format!("srv/{}/{}", "d".repeat(90), "e".repeat(90));
    std::fs::create_dir_all(tree.join(&deep)).unwrap();
    std::fs::create_dir_all(tree.join("etc/nginx")).unwrap();
    std::fs::write(tree.join("etc/nginx/nginx.conf"), b"worker_processes 2;\n").unwrap();
    std::fs::write(tree.join(&deep).join("long.txt"), b"a path over 100 bytes\n").unwrap();
    std::fs::write(tree.join("var.bin"), noise(3, 5 << 20)).unwrap();
    std::fs::write(tree.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("nginx/nginx.conf", tree.join("etc/current.conf")).unwrap();
    std::fs::set_permissions(tree.join("etc/nginx/nginx.conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(tree.join("var.bin"), Some(1234), Some(5678)).unwrap();
    assert!(Command::new("mkfifo").arg(tree.join("fifo")).status().unwrap().success());
    let blocks = partitioned_disk(dir.path(), &tree);
    let snap = a.write_snapshot(1, None, &blocks).await;
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());

    // The block cache on disk: a directory that is not there is named; the one given is
    // empty again afterwards (the cache file has no name).
    let cache = dir.path().join("cache");
    let missing = a.bunker(&["export", "ebs", &snap, "--files", "--to", &to, "--cache-dir", cache.to_str().unwrap()]);
    assert_eq!(missing.code, 2, "{missing:#?}");
    assert!(missing.stderr.contains(&format!("--cache-dir {}", cache.display())), "{}", missing.stderr);
    std::fs::create_dir(&cache).unwrap();
    let run =
        a.bunker(&["--json", "export", "ebs", &snap, "--files", "--to", &to, "--cache-dir", cache.to_str().unwrap()]);
    assert_eq!(run.code, 1, "partition 2 and the FIFO are not archived: {run:#?}");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "nothing left in the cache directory");
    let out = run.json();
    assert_eq!(out["filesystems"].as_array().unwrap().len(), 1, "{out:#}");
    let fs = &out["filesystems"][0];
    assert_eq!(
        (fs["partition"].as_u64(), fs["type"].as_str(), fs["start"].as_u64()),
        (Some(1), Some("ext4"), Some(1 << 20))
    );
    assert_eq!(out["not_exported"][0]["partition"], 2);
    assert!(run.stderr.contains("partition 2: no filesystem bunker recognises"), "{}", run.stderr);
    assert!(run.stderr.contains("fifo: "), "skipped entries are named: {}", run.stderr);
    assert_eq!(fs["tree"]["skipped"].as_array().unwrap().len(), 1, "{fs:#}");
    assert!(fs["tree"]["skipped"][0].as_str().unwrap().starts_with("fifo: "), "{fs:#}");
    let (fetched, allocated) = (out["blocks_fetched"].as_u64().unwrap(), out["blocks_allocated"].as_u64().unwrap());
    assert_eq!(allocated, blocks.len() as u64);
    assert!(fetched > 0 && fetched <= allocated - 15, "{fetched} of {allocated}");
    eprintln!("blocks fetched: {fetched} of {allocated} allocated");

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join(format!("{snap}.p1.manifest.json"))).unwrap()).unwrap();
    assert_eq!(manifest["source"]["filesystem"]["partition"], 1, "{manifest:#}");
    assert_eq!(manifest["source"]["id"], snap.as_str());
    // The index names each filesystem's archive and why the other was not exported.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join(format!("{snap}.files.json"))).unwrap()).unwrap();
    assert_eq!(index["format"], "bunker-files");
    assert_eq!(index["filesystems"][0]["manifest"], format!("{snap}.p1.manifest.json"));
    assert_eq!(index["not_exported"][0]["partition"], 2, "{index:#}");

    // The standard tools extract exactly the source tree.
    let tar = common::zstd_decompress(&std::fs::read(target.join(format!("{snap}.p1.tar.zst"))).unwrap());
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let mut x = Command::new("tar").arg("-x").arg("-C").arg(&back).stdin(Stdio::piped()).spawn().unwrap();
    x.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(x.wait().unwrap().success());
    let ls = a.bunker(&["--json", "ls", &format!("{to}/{snap}.p1.tar.zst")]).ok_json();
    let mut listed = 0;
    for e in ls.as_array().unwrap() {
        let path = e["path"].as_str().unwrap();
        if path.starts_with("lost+found") {
            continue;
        }
        listed += 1;
        let (src, got) = (tree.join(path), back.join(path));
        let (m, g) = (std::fs::symlink_metadata(&src).unwrap(), std::fs::symlink_metadata(&got).unwrap());
        assert_eq!((m.mode(), m.uid(), m.gid()), (g.mode(), g.uid(), g.gid()), "{path}");
        assert_eq!(e["mtime"], m.mtime(), "{path}");
        if m.is_file() {
            let data = std::fs::read(&src).unwrap();
            assert_eq!(std::fs::read(&got).unwrap(), data, "{path}");
            assert_eq!(e["blake3"], blake3_hex(&data), "{path}");
            assert_eq!(g.mtime(), m.mtime(), "{path}");
        }
        if m.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(&got).unwrap(), std::fs::read_link(&src).unwrap(), "{path}");
            assert_eq!(e["link"], "nginx/nginx.conf");
        }
    }
    // etc, etc/current.conf, etc/nginx, etc/nginx/nginx.conf, empty, srv, srv/d…, srv/d…/e…,
    // srv/d…/e…/long.txt, var.bin: everything but the FIFO.
    assert_eq!(listed, 10, "{ls:#}");

    // bunker's own single-path restore of the long path and the owned file.
    let mine = dir.path().join("mine");
    let archive = format!("{to}/{snap}.p1.tar.zst");
    for path in [deep.as_str(), "var.bin"] {
        a.bunker(&["restore", &archive, "--path", path, "--to-dir", mine.to_str().unwrap()]).ok_json_or_code(0);
    }
    assert_eq!(std::fs::read(mine.join(&deep).join("long.txt")).unwrap(), b"a path over 100 bytes\n");
    let owned = std::fs::metadata(mine.join("var.bin")).unwrap();
    assert_eq!((owned.uid(), owned.gid(), owned.len()), (1234, 5678, 5 << 20));
    assert_eq!(std::fs::read(mine.join("var.bin")).unwrap(), std::fs::read(tree.join("var.bin")).unwrap());

    // A disk without any ext filesystem is refused, naming what it holds and the fix.
    let noise_only = a.write_snapshot(1, None, &BTreeMap::from([(0, noise(5, BLOCK))])).await;
    let refused = a.bunker(&["export", "ebs", &noise_only, "--files", "--to", &to]);
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert!(refused.stderr.contains("holds no filesystem that bunker reads in place"), "{}", refused.stderr);
    assert!(refused.stderr.contains("the whole disk (unknown)"), "{}", refused.stderr);
    assert!(refused.stderr.contains("without --files"), "{}", refused.stderr);
    assert!(!target.join(format!("{noise_only}.manifest.json")).exists());
}

/// An EFI system partition's image: FAT32 made by `mkfs.vfat` and filled by `mcopy` (the
/// dosfstools and mtools packages, not bunker's crates) from `tree`.
fn fat_image(dir: &std::path::Path, tree: &std::path::Path) -> Vec<u8> {
    let img = dir.join("efi.img");
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let mkfs = Command::new("mkfs.vfat").args(["-F", "32", "-n", "EFI"]).arg(&img).output().unwrap();
    assert!(mkfs.status.success(), "mkfs.vfat: {mkfs:?}");
    let mut mcopy = Command::new("mcopy");
    mcopy.env("TZ", "UTC").args(["-s", "-m", "-i"]).arg(&img);
    for e in std::fs::read_dir(tree).unwrap() {
        mcopy.arg(e.unwrap().path());
    }
    let out = mcopy.arg("::/").output().unwrap();
    assert!(out.status.success(), "mcopy: {out:?}");
    std::fs::read(&img).unwrap()
}

/// A GPT disk and an MBR disk, each with an EFI system partition (FAT32, `mkfs.vfat` +
/// `mcopy`) and an ext4 partition (`mkfs.ext4 -d`): `export ebs --files` archives both
/// filesystems of each, and the FAT partition's tar extracts with the standard tools to the
/// source's files: contents, long names, mtimes; the catalog lists each with its SHA-256.
#[tokio::test(flavor = "multi_thread")]
async fn an_efi_partition_and_an_ext4_one_are_both_exported_from_gpt_and_mbr_disks() {
    use std::os::unix::fs::MetadataExt;
    let a = Account::new("410000000012").await;
    let dir = tempfile::tempdir().unwrap();
    let efi = dir.path().join("efi");
    std::fs::create_dir_all(efi.join("EFI/BOOT")).unwrap();
    std::fs::create_dir_all(efi.join("EFI/debian")).unwrap();
    std::fs::write(efi.join("EFI/BOOT/BOOTX64.EFI"), noise(31, 300_000)).unwrap();
    std::fs::write(efi.join("EFI/debian/grub.cfg"), b"search --fs-uuid --set=root 1234\n").unwrap();
    std::fs::write(efi.join("a long file name with spaces.txt"), b"vfat keeps long names\n").unwrap();
    let tree = dir.path().join("root");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/fstab"), b"LABEL=EFI /boot/efi vfat umask=0077 0 1\n").unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    for f in ["EFI/BOOT/BOOTX64.EFI", "EFI/debian/grub.cfg", "a long file name with spaces.txt"] {
        std::fs::File::options().write(true).open(efi.join(f)).unwrap().set_modified(when).unwrap();
    }
    let fat = fat_image(dir.path(), &efi);
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());
    for (label, efi_type) in [("gpt", "U"), ("dos", "ef")] {
        let disk = dir.path().join(format!("{label}.img"));
        let table =
            format!("label: {label}\nstart=2048, size=131072, type={efi_type}\nstart=133120, size=81920, type=L\n");
        disk_with_ext4(&disk, &table, &tree, 133120);
        let mut image = std::fs::read(&disk).unwrap();
        image[2048 * 512..][..fat.len()].copy_from_slice(&fat);
        let blocks = allocated(&image);
        let snap = a.write_snapshot(1, None, &blocks).await;
        let out = a.bunker(&["--json", "export", "ebs", &snap, "--files", "--to", &to]).ok_json();
        let kinds: Vec<_> =
            out["filesystems"].as_array().unwrap().iter().map(|f| f["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["vfat", "ext4"], "{label}: {out:#}");
        assert!(out["not_exported"].as_array().unwrap().is_empty(), "{out:#}");

        let tar = common::zstd_decompress(&std::fs::read(target.join(format!("{snap}.p1.tar.zst"))).unwrap());
        let back = dir.path().join(format!("back-{label}"));
        std::fs::create_dir(&back).unwrap();
        let mut x = Command::new("tar").arg("-x").arg("-C").arg(&back).stdin(Stdio::piped()).spawn().unwrap();
        x.stdin.take().unwrap().write_all(&tar).unwrap();
        assert!(x.wait().unwrap().success());
        let ls = a.bunker(&["--json", "ls", &format!("{to}/{snap}.p1.tar.zst")]).ok_json();
        let files: Vec<_> = ls.as_array().unwrap().iter().filter(|e| e["type"] == "file").collect();
        assert_eq!(files.len(), 3, "{ls:#}");
        for e in files {
            let path = e["path"].as_str().unwrap();
            let data = std::fs::read(efi.join(path)).unwrap();
            assert_eq!(std::fs::read(back.join(path)).unwrap(), data, "{label}: {path}");
            assert_eq!(e["blake3"], blake3_hex(&data), "{path}");
            assert_eq!(e["mtime"], 1_700_000_000, "{path}");
            assert_eq!(std::fs::metadata(back.join(path)).unwrap().mtime(), 1_700_000_000, "{path}");
        }
        let ext = common::zstd_decompress(&std::fs::read(target.join(format!("{snap}.p2.tar.zst"))).unwrap());
        let names: Vec<String> = tar::Archive::new(&ext[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n == "etc/fstab"), "{label}: {names:?}");
    }
}

/// A GPT disk whose ext4 partition has a damaged superblock (magic intact, block size
/// garbled) beside an EFI partition: `export ebs --files` names the damaged partition and
/// why, exports the FAT one, leaves nothing of the damaged one behind and exits 1; the image
/// export of the same snapshot still succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_superblock_is_named_the_other_filesystem_exported_and_the_image_still_works() {
    let a = Account::new("410000000013").await;
    let dir = tempfile::tempdir().unwrap();
    let (efi, tree) = (dir.path().join("efi"), dir.path().join("root"));
    std::fs::create_dir_all(efi.join("EFI/BOOT")).unwrap();
    std::fs::write(efi.join("EFI/BOOT/BOOTX64.EFI"), noise(32, 100_000)).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), b"damaged\n").unwrap();
    let fat = fat_image(dir.path(), &efi);
    let disk = dir.path().join("disk.img");
    let table = "label: gpt\nstart=2048, size=81920, type=L\nstart=86016, size=131072, type=U\n";
    disk_with_ext4(&disk, table, &tree, 2048);
    let mut image = std::fs::read(&disk).unwrap();
    image[86016 * 512..][..fat.len()].copy_from_slice(&fat);
    let superblock = 2048 * 512 + 1024;
    assert_eq!(image[superblock + 0x38..superblock + 0x3A], [0x53, 0xEF], "the ext4 magic");
    image[superblock + 24..superblock + 28].copy_from_slice(&[0x7F, 0, 0, 0]); // s_log_block_size
    let snap = a.write_snapshot(1, None, &allocated(&image)).await;
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());

    let run = a.bunker(&["--json", "export", "ebs", &snap, "--files", "--to", &to]);
    assert_eq!(run.code, 1, "{run:#?}");
    let out = run.json();
    assert_eq!(out["filesystems"].as_array().unwrap().len(), 1, "{out:#}");
    assert_eq!(
        (out["filesystems"][0]["partition"].as_u64(), out["filesystems"][0]["type"].as_str()),
        (Some(2), Some("vfat"))
    );
    let reason = out["not_exported"][0]["reason"].as_str().unwrap();
    assert_eq!(out["not_exported"][0]["partition"], 1, "{out:#}");
    assert!(reason.starts_with("partition 1: not a readable ext2/3/4 filesystem"), "{reason}");
    assert!(run.stderr.contains("partition 1: not a readable ext2/3/4 filesystem"), "{}", run.stderr);
    let left: Vec<_> =
        std::fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(left.iter().all(|n| !n.contains(".p1.")), "nothing of partition 1 is left: {left:?}");

    let whole = a.bunker(&["--json", "export", "ebs", &snap, "--to", &to]).ok_json();
    let restored = dir.path().join("restored.img");
    a.bunker(&["restore", whole["archive"].as_str().unwrap(), "--to-file", restored.to_str().unwrap()])
        .ok_json_or_code(0);
    let mut want = image;
    want.resize(1 << 30, 0);
    assert!(std::fs::read(&restored).unwrap() == want, "the image export restores the damaged disk as it was");
}

/// The format-1 fixture's image (`tests/fixtures/format-v1/README.md` says how it was made).
fn v1_fixture_image() -> Vec<u8> {
    let text: Vec<u8> = (0..40_000).flat_map(|i| format!("bunker v1 fixture line {i:07}\n").into_bytes()).collect();
    let mut img = text[..1 << 20].to_vec();
    img.extend(vec![0u8; 1 << 20]);
    img.extend(&text[1 << 20..]);
    img
}

#[tokio::test(flavor = "multi_thread")]
async fn format_1_archives_written_by_an_older_bunker_stay_readable() {
    let a = Account::new("410000000009").await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("v1");
    std::fs::create_dir(&store).unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1");
    for e in std::fs::read_dir(&fixtures).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "README.md" {
            std::fs::copy(e.path(), store.join(e.file_name())).unwrap();
        }
    }
    let url = |name: &str| format!("file://{}/{name}", store.display());
    let expected = v1_fixture_image();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("disk.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["image_sha256"], sha256_hex(&expected), "the fixture is the image it says");

    let v = a.bunker(&["--json", "verify", &url("disk.img.zst")]).ok_json();
    assert_eq!(v["image_sha256"], sha256_hex(&expected));
    assert!(v["image_blake3"].is_null());
    let file = dir.path().join("disk.img");
    let r = a.bunker(&["--json", "restore", &url("disk.img.zst"), "--to-file", file.to_str().unwrap()]).ok_json();
    assert_eq!(r["image_sha256"], sha256_hex(&expected));
    assert!(std::fs::read(&file).unwrap() == expected, "the v1 archive restores to its image");

    // Its tar archive: listed and restored file by file from its catalog.
    let ls = a.bunker(&["--json", "ls", &url("tree.tar.zst")]).ok_json();
    assert!(ls.as_array().unwrap().iter().any(|e| e["path"] == "etc/motd"), "{ls}");
    let out = dir.path().join("out");
    a.bunker(&["restore", &url("tree.tar.zst"), "--to-dir", out.to_str().unwrap(), "--path", "etc/motd"])
        .ok_json_or_code(0);
    assert_eq!(std::fs::read_to_string(out.join("etc/motd")).unwrap(), "welcome to the v1 fixture\n".repeat(50));

    // A v1 frame is still checked against its SHA-256.
    let mut bytes = std::fs::read(store.join("disk.img.zst")).unwrap();
    let frame = &manifest["frames"][0];
    bytes[(frame["archive_offset"].as_u64().unwrap() + frame["archive_length"].as_u64().unwrap() / 2) as usize] ^= 1;
    std::fs::write(store.join("disk.img.zst"), bytes).unwrap();
    let bad = a.bunker(&["verify", &url("disk.img.zst")]);
    assert_eq!(bad.code, 1, "{bad:#?}");
    assert!(bad.stderr.contains("chunk 0"), "{}", bad.stderr);
}
