//! Exports under faults injected by the emulator plugin: a process killed mid-upload resumes,
//! failed S3 parts are retried, corrupted GetSnapshotBlock bodies are refetched and never
//! archived, throttled block reads back off. Its own test binary: faults are server-wide, so
//! these tests take turns.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{blake3_hex, get_json, image, noise, post, Account, BLOCK};

static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn faults(a: &Account, json: &str) {
    post(&a.endpoint, "/_bunker/faults", json);
}

fn stats(a: &Account) -> serde_json::Value {
    get_json(&a.endpoint, "/_bunker/stats")
}

/// `n` random (incompressible) blocks spread over a 1 GiB volume.
fn random_blocks(seed: u64, n: u64) -> BTreeMap<u64, Vec<u8>> {
    (0..n).map(|i| ((i * 2048 / n + seed) % 2048, noise(seed * 1000 + i, BLOCK))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_export_resumes_from_the_first_missing_part() {
    let _turn = FAULTS.lock().await;
    let a = Account::new("420000000001").await;
    let bucket = a.bucket("archives").await;
    let blocks = random_blocks(1, 400); // 200 MiB: 25 parts of 8 MiB
    let expected = image(1, &blocks);
    let snap = a.write_snapshot(1, None, &blocks).await;
    let to = format!("s3://{bucket}/r");

    // Slow parts so the kill lands mid-upload, after a few parts are stored.
    faults(&a, r#"{"s3_part_delay_ms": 400}"#);
    post(&a.endpoint, "/_bunker/stats", "");
    let mut child = a.command().args(["--json", "export", "ebs", &snap, "--to", &to]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats(&a)["upload_part_bytes"].as_u64().unwrap() < 6 * (8 << 20) {
        assert!(Instant::now() < deadline, "no parts uploaded: {}", stats(&a));
        assert!(child.try_wait().unwrap().is_none(), "the export ended before it could be killed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    // Parts in flight at the kill are still being received (slowly); let them land.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = stats(&a)["upload_part_bytes"].as_u64().unwrap();
    faults(&a, "{}");
    post(&a.endpoint, "/_bunker/stats", "");

    let out = a.bunker(&["--json", "export", "ebs", &snap, "--to", &to]).ok_json();
    let uploaded = stats(&a)["upload_part_bytes"].as_u64().unwrap();
    let size = out["archive_size"].as_u64().unwrap();
    assert!(out["resumed_bytes"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(out["bytes_out"].as_u64().unwrap(), uploaded, "bunker's count matches the emulator's");
    assert!(uploaded < size, "the rerun uploaded {uploaded} of {size} bytes");
    assert!(uploaded + before >= size, "together the runs uploaded the archive");

    let url = out["archive"].as_str().unwrap().to_string();
    a.bunker(&["verify", &url]).ok_json_or_code(0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    let r = a.bunker(&["--json", "restore", &url, "--to-file", file.to_str().unwrap()]).ok_json();
    assert_eq!(r["image_blake3"], blake3_hex(&expected));
    assert!(std::fs::read(&file).unwrap() == expected, "byte-identical after resume");
    // The journal is gone; the upload is complete (no multipart upload left behind).
    let s3 = a.s3().await;
    let left = s3.list_objects_v2().bucket(&bucket).prefix(format!("r/{snap}.journal/")).send().await.unwrap();
    assert_eq!(left.key_count(), Some(0));
    let uploads = s3.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
    assert!(uploads.uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_parts_are_retried_and_corrupted_blocks_refetched() {
    let _turn = FAULTS.lock().await;
    let a = Account::new("420000000002").await;
    let bucket = a.bucket("archives").await;
    let blocks = random_blocks(2, 120);
    let expected = image(1, &blocks);
    let snap = a.write_snapshot(1, None, &blocks).await;

    faults(&a, r#"{"s3_fail_parts": 3, "ebs_corrupt": 5}"#);
    post(&a.endpoint, "/_bunker/stats", "");
    let out = a.bunker(&["--json", "export", "ebs", &snap, "--to", &format!("s3://{bucket}/f")]).ok_json();
    let s = stats(&a);
    faults(&a, "{}");
    assert_eq!(s["injected"]["s3_fail_parts"], 3, "{s}");
    assert_eq!(s["injected"]["ebs_corrupt"], 5, "{s}");
    // Every allocated block was read once, plus once more per corrupted answer; no hole was read.
    assert_eq!(s["by_action"]["ebs:GetSnapshotBlock"], blocks.len() as u64 + 5, "{s}");
    assert_eq!(out["image_blake3"], blake3_hex(&expected), "no corrupted byte was archived");
    assert_eq!(out["refetched_blocks"], 5, "bunker reports each refetch");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    a.bunker(&["restore", out["archive"].as_str().unwrap(), "--to-file", file.to_str().unwrap()]).ok_json_or_code(0);
    assert!(std::fs::read(&file).unwrap() == expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_block_reads_back_off_and_complete() {
    let _turn = FAULTS.lock().await;
    let a = Account::new("420000000003").await;
    let bucket = a.bucket("archives").await;
    let blocks = random_blocks(3, 100);
    let expected = image(1, &blocks);
    let snap = a.write_snapshot(1, None, &blocks).await;

    faults(&a, r#"{"throttle": {"ebs:GetSnapshotBlock": 0.3}}"#);
    let out = a.bunker(&["--json", "export", "ebs", &snap, "--to", &format!("s3://{bucket}/t")]);
    let s = stats(&a);
    faults(&a, "{}");
    let out = out.ok_json();
    assert!(s["injected"]["throttle:ebs:GetSnapshotBlock"].as_u64().unwrap() > 10, "{s}");
    assert_eq!(out["image_blake3"], blake3_hex(&expected));
}
