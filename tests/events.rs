//! Issue 14 §4: bunker's own outcomes as EventBridge events on `events.bus`, routed as a user
//! would route them — a rule on `source: bunker` with an SQS target — and read back from the
//! queue: Backup Created and Run Report from a create run, Copy Completed from a replication
//! pass, Export Completed and Export Failed from the service.

mod common;

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{ebs_event, queues, Account, REGION};
use serde_json::Value;

const DR: &str = "us-west-2";

/// A queue that receives every event with source `bunker` on the default bus.
async fn bunker_events(a: &Account) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(&a.sdk(REGION).await);
    let q = sqs.create_queue().queue_name("bunker-outcomes").send().await.unwrap().queue_url.unwrap();
    let arn = format!("arn:aws:sqs:{REGION}:{}:bunker-outcomes", a.id);
    let events = aws_sdk_eventbridge::Client::new(&a.sdk(REGION).await);
    events.put_rule().name("bunker-outcomes").event_pattern(r#"{"source": ["bunker"]}"#).send().await.unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder().id("queue").arn(arn).build().unwrap();
    events.put_targets().rule("bunker-outcomes").targets(target).send().await.unwrap();
    (sqs, q)
}

/// Reads the queue until `want` events of each detail-type arrived (or 60 s passed);
/// returns them by detail-type.
async fn receive(sqs: &aws_sdk_sqs::Client, q: &str, want: &[(&str, usize)]) -> BTreeMap<String, Vec<Value>> {
    let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let t = Instant::now();
    let enough = |got: &BTreeMap<String, Vec<Value>>| want.iter().all(|(k, n)| got.get(*k).map_or(0, Vec::len) >= *n);
    while !enough(&got) {
        assert!(t.elapsed() < Duration::from_secs(60), "events missing: {got:#?}");
        let out =
            sqs.receive_message().queue_url(q).max_number_of_messages(10).wait_time_seconds(1).send().await.unwrap();
        for m in out.messages() {
            let event: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            assert_eq!(event["source"], "bunker", "{event}");
            got.entry(event["detail-type"].as_str().unwrap().to_string()).or_default().push(event);
            sqs.delete_message().queue_url(q).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_run_and_a_replication_pass_put_their_outcomes_on_the_bus() {
    let a = Account::new("520000000001").await;
    let (sqs, q) = bunker_events(&a).await;
    let vol = a.volume(&[("bunker:create_backup", "true")]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    std::fs::write(&cfg, format!("events.bus = \"default\"\ndr_regions = [\"{DR}\"]\n")).unwrap();
    let cfg = cfg.to_str().unwrap();

    let report = a.bunker(&["--config", cfg, "--json", "ebs", "create-backups"]).ok_json();
    let snapshot = report["entries"][0]["backup_id"].as_str().unwrap().to_string();
    let got = receive(&sqs, &q, &[("bunker Backup Created", 1), ("bunker Run Report", 1)]).await;
    let created = &got["bunker Backup Created"][0]["detail"];
    assert_eq!(created["schema"], "bunker.backup-created/1");
    assert_eq!(created["backup_id"], snapshot.as_str());
    assert_eq!(created["resource_id"], vol.as_str());
    assert_eq!(created["kind"], "ebs");
    assert_eq!(created["account"], a.id.as_str());
    let run = &got["bunker Run Report"][0]["detail"];
    assert_eq!(run["run_id"], report["run_id"], "the run report as the status topic gets it");
    assert_eq!(run["status"], "OK");

    a.bunker(&["--config", cfg, "--json", "ebs", "replicate-backups"]).ok_json();
    let got = receive(&sqs, &q, &[("bunker Copy Completed", 1)]).await;
    let copy = &got["bunker Copy Completed"][0]["detail"];
    assert_eq!(copy["schema"], "bunker.copy-completed/1");
    assert_eq!(copy["source_backup_id"], snapshot.as_str());
    assert_eq!(copy["region"], DR);
    let copy_id = copy["backup_id"].as_str().unwrap();
    let dr = aws_sdk_ec2::Client::new(&a.sdk(DR).await);
    let found = dr.describe_snapshots().snapshot_ids(copy_id).send().await.unwrap();
    assert_eq!(found.snapshots().len(), 1, "the event names the copy that exists in {DR}");
}

/// The service's exports: one announced by an event (completed, naming its archive and
/// manifest) and one of a snapshot that does not exist (failed, with the reason).
#[tokio::test(flavor = "multi_thread")]
async fn the_service_puts_export_outcomes_on_the_bus() {
    let a = Account::new("520000000002").await;
    let (sqs, q) = bunker_events(&a).await;
    let bucket = a.bucket("archives").await;
    let blocks: BTreeMap<u64, Vec<u8>> = (0..4u64).map(|i| (i * 7, common::noise(i, common::BLOCK))).collect();
    let snap = a.write_snapshot(1, None, &blocks).await;
    let (intake, iq, dq) = queues(&a, "intake").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    std::fs::write(
        &cfg,
        format!(
            "regions = [\"{REGION}\"]\nevents.bus = \"default\"\nexport.to = \"s3://{bucket}/auto\"\n\
             schedule.create = \"\"\nschedule.clean = \"\"\n\
             [serve]\nkinds = \"ebs\"\nlisten = \"127.0.0.1:0\"\ncheck_interval = \"1s\"\nqueue_url = \"{iq}\"\n\
             dead_letter_queue_url = \"{dq}\"\n"
        ),
    )
    .unwrap();
    let (child, _addr, log) = a.serve(cfg.to_str().unwrap(), &dir.path().join("state"));
    let _stop = Stop(child);
    intake.send_message().queue_url(&iq).message_body(ebs_event(&snap)).send().await.unwrap();
    let missing = "snap-0123456789abcdef0";
    intake.send_message().queue_url(&iq).message_body(ebs_event(missing)).send().await.unwrap();
    let got = receive(&sqs, &q, &[("bunker Export Completed", 1), ("bunker Export Failed", 1)]).await;
    let done = &got["bunker Export Completed"][0]["detail"];
    assert_eq!(done["schema"], "bunker.export/1");
    assert_eq!(done["source"], snap.as_str());
    assert_eq!(done["archives"][0], format!("s3://{bucket}/auto/{snap}.img.zst"));
    assert_eq!(done["manifest"], format!("s3://{bucket}/auto/{snap}.manifest.json"));
    assert!(!a.get_object(&bucket, &format!("auto/{snap}.manifest.json")).await.is_empty());
    let failed = &got["bunker Export Failed"][0]["detail"];
    assert_eq!(failed["source"], missing, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(failed["error"].as_str().unwrap().contains(missing), "{failed}");
}

/// Stops the service when the test ends.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill().and_then(|()| self.0.wait().map(drop)) {
            eprintln!("stopping bunker serve: {e}");
        }
    }
}
