//! `bunker serve` against the emulator: events from SQS (replayed, concurrent, malformed,
//! oversized), commands, metrics, SIGTERM, kill -9 and restart, three instances on one queue.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{ebs_event, queues, Account, REGION};

const DR: &str = "us-west-2";
const SHARE: &str = "111111111111";

/// A running `bunker serve`.
struct Serve {
    child: Child,
    addr: String,
    /// Its stderr (a file: a pipe nobody reads would fill and block the service).
    log: std::path::PathBuf,
}

impl Serve {
    fn start(a: &Account, config: &str, state: &std::path::Path) -> Serve {
        let (child, addr, log) = a.serve(config, state);
        Serve { addr, child, log }
    }

    fn get(&self, path: &str) -> String {
        common::http_get(&self.addr, path)
    }

    /// Polls `/healthz` until `done` holds for its answer (status line, headers, JSON body),
    /// for at most `within`; returns that answer and its body.
    async fn health_until(
        &self,
        within: Duration,
        done: impl Fn(&str, &serde_json::Value) -> bool,
    ) -> (String, serde_json::Value) {
        let t = Instant::now();
        loop {
            let r = self.get("/healthz");
            let body = r.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default();
            if done(&r, &body) {
                return (r, body);
            }
            assert!(t.elapsed() < within, "/healthz not as expected within {within:?}: {r}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// SIGTERM; returns the exit code and stderr.
    fn terminate(mut self) -> (i32, String, Duration) {
        let t = Instant::now();
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        let err = std::fs::read_to_string(&self.log).unwrap();
        (status.code().unwrap_or(-1), err, t.elapsed())
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn write_config(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("bunker.toml");
    std::fs::write(
        &path,
        format!(
            "regions = [\"{REGION}\"]\ndr_regions = [\"{DR}\"]\nshare_accounts = [\"{SHARE}\"]\n\
             schedule.create = \"\"\nschedule.clean = \"\"\n\
             [serve]\nkinds = \"ebs\"\nlisten = \"127.0.0.1:0\"\ncheck_interval = \"1s\"\nshutdown_deadline = \"20s\"\n{extra}"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// EBS snapshots in a region: (sources without copy_of, copies by copy_of).
async fn ebs_state(a: &Account, region: &str) -> (Vec<String>, Vec<String>) {
    let ec2 = aws_sdk_ec2::Client::new(&a.sdk(region).await);
    let snaps = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    let (mut sources, mut copies) = (vec![], vec![]);
    for s in snaps.snapshots() {
        match s.tags().iter().find(|t| t.key() == Some("bunker:copy_of")) {
            Some(t) => copies.push(t.value().unwrap().to_string()),
            None => sources.push(s.snapshot_id().unwrap().to_string()),
        }
    }
    sources.sort();
    copies.sort();
    (sources, copies)
}

async fn shared_with(a: &Account, region: &str, id: &str) -> Vec<String> {
    a.snapshot_shared_with(region, id).await
}

/// Polls until every source snapshot has exactly one copy in DR, or panics after `limit`.
async fn wait_replicated(a: &Account, limit: Duration) -> Vec<String> {
    let t = Instant::now();
    loop {
        let (sources, _) = ebs_state(a, REGION).await;
        let (_, copies) = ebs_state(a, DR).await;
        let want: Vec<String> = sources.iter().map(|s| format!("{REGION}:{s}")).collect();
        let mut dedup = copies.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), copies.len(), "a second copy was made: {copies:?}");
        if !sources.is_empty() && copies == want {
            return sources;
        }
        assert!(t.elapsed() < limit, "not replicated in {limit:?}: sources {sources:?}, copies {copies:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (u32, u32) {
    use aws_sdk_sqs::types::QueueAttributeName as N;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(N::ApproximateNumberOfMessages)
        .attribute_names(N::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes().unwrap();
    let n = |k: N| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (n(N::ApproximateNumberOfMessages), n(N::ApproximateNumberOfMessagesNotVisible))
}

#[tokio::test]
async fn events_replayed_malformed_and_commands_then_sigterm() {
    let a = Account::new("600000000001").await;
    let dir = tempfile::tempdir().unwrap();
    let (sqs, q, dlq) = queues(&a, "bunker-events").await;
    let cfg = write_config(
        dir.path(),
        &format!("queue_url = \"{q}\"\ndead_letter_queue_url = \"{dlq}\"\nreconcile_interval = \"1h\"\n"),
    );
    for _ in 0..3 {
        a.volume(&[("bunker:create_backup", "true")]).await;
    }
    let serve = Serve::start(&a, &cfg, dir.path());
    assert!(serve.get("/healthz").contains("200 OK"));

    // Backups appear after the start-up reconciliation; only events announce them now.
    a.bunker(&["ebs", "create-backups", "--config", &cfg, "--json"]).ok_json();
    let (sources, _) = ebs_state(&a, REGION).await;
    assert_eq!(sources.len(), 3);

    // The same event three times, sent concurrently, plus two unreadable messages.
    let event = ebs_event(&sources[0]);
    let sends = (0..3).map(|_| sqs.send_message().queue_url(&q).message_body(&event).send());
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    sqs.send_message().queue_url(&q).message_body("{this is not json").send().await.unwrap();
    let big = format!("{{\"action\":\"reconcile\",\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    sqs.send_message().queue_url(&q).message_body(big).send().await.unwrap();

    let t = Instant::now();
    loop {
        let (_, copies) = ebs_state(&a, DR).await;
        let copy_of = format!("{REGION}:{}", sources[0]);
        if copies.contains(&copy_of) && queue_depth(&sqs, &q).await == (0, 0) {
            assert_eq!(copies, [copy_of], "exactly one copy, of the announced backup only");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "event not handled: {copies:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(shared_with(&a, REGION, &sources[0]).await, [SHARE]);

    // Dead letters carry the reason.
    let dead = sqs
        .receive_message()
        .queue_url(&dlq)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let mut reasons: Vec<String> = dead
        .messages()
        .iter()
        .map(|m| m.message_attributes().unwrap()["bunker_reason"].string_value().unwrap().to_string())
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("not JSON"), "{reasons:?}");
    assert!(reasons[1].starts_with("oversized"), "{reasons:?}");

    // Still running: a command creates new backups and replicates them; reconcile finishes the rest.
    sqs.send_message().queue_url(&q).message_body(r#"{"action":"create-backups","kind":"ebs"}"#).send().await.unwrap();
    sqs.send_message().queue_url(&q).message_body(r#"{"action":"reconcile"}"#).send().await.unwrap();
    let all = wait_replicated(&a, Duration::from_secs(60)).await;
    assert_eq!(all.len(), 6, "3 volumes × 2 runs");
    // Both commands are deleted only once their work has ended.
    let t = Instant::now();
    while queue_depth(&sqs, &q).await != (0, 0) {
        assert!(t.elapsed() < Duration::from_secs(60), "commands not finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = serve.get("/metrics");
    assert!(metrics.contains("bunker_copies_in_flight{kind=\"ebs\",region=\"us-west-2\"} 0\n"), "{metrics}");
    assert!(metrics.contains("bunker_messages_total{outcome=\"dead_lettered\"} 2"), "{metrics}");
    assert!(metrics.contains("bunker_jobs_total{workflow=\"replicator\",kind=\"ebs\",state=\"done\"} "), "{metrics}");
    assert!(metrics.contains("bunker_runs_total{action=\"create-backups\",kind=\"ebs\",status=\"OK\"} 1"), "{metrics}");
    // The alert "no successful backup in 26 h" reads this (deploy/prometheus/alerts.yml).
    let last = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bunker_last_success_timestamp_seconds{action=\"create-backups\",kind=\"ebs\"} "))
        .unwrap_or_else(|| panic!("{metrics}"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - last.parse::<f64>().unwrap()).abs() < 600.0, "{last} vs {now}");

    let (code, stderr, took) = serve.terminate();
    assert_eq!(code, 0, "{stderr}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(stderr.contains("in-flight work finished"), "{stderr}");
}

#[tokio::test]
async fn kill_9_mid_fan_out_then_restart_completes_once() {
    let a = Account::new("600000000002").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "reconcile_interval = \"1h\"\n");
    for _ in 0..30 {
        a.volume(&[("bunker:create_backup", "true")]).await;
    }
    a.bunker(&["ebs", "create-backups", "--config", &cfg, "--json"]).ok_json();
    let serve = Serve::start(&a, &cfg, dir.path());
    // Kill as soon as the fan-out has started.
    let t = Instant::now();
    loop {
        if !ebs_state(&a, DR).await.1.is_empty() || t.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serve.kill9();
    let (_, after_kill) = ebs_state(&a, DR).await;
    eprintln!("copies when killed: {}", after_kill.len());

    let serve = Serve::start(&a, &cfg, dir.path());
    let sources = wait_replicated(&a, Duration::from_secs(90)).await;
    assert_eq!(sources.len(), 30);
    // Shares complete too (the last step of each job).
    let t = Instant::now();
    for s in &sources {
        while shared_with(&a, REGION, s).await != [SHARE] {
            assert!(t.elapsed() < Duration::from_secs(60), "{s} never shared");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (code, stderr, _) = serve.terminate();
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn three_instances_one_queue_every_job_once_and_one_slot_fired() {
    let a = Account::new("600000000003").await;
    let dir = tempfile::tempdir().unwrap();
    let (sqs, q, dlq) = queues(&a, "bunker-fleet").await;
    let ddb = aws_sdk_dynamodb::Client::new(&a.sdk(REGION).await);
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    ddb.create_table()
        .table_name("bunker-leases")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().unwrap())
        .send()
        .await
        .unwrap();
    for _ in 0..5 {
        a.volume(&[("bunker:create_backup", "true")]).await;
    }
    // The create schedule's newest slot (today 00:00 or earlier) is in the past: each
    // instance tries to catch it up at start; the lease lets exactly one run it.
    let cfg = write_config(
        dir.path(),
        &format!(
            "queue_url = \"{q}\"\ndead_letter_queue_url = \"{dlq}\"\nlease_table = \"bunker-leases\"\nreconcile_interval = \"1h\"\n"
        ),
    );
    let text =
        std::fs::read_to_string(&cfg).unwrap().replace("schedule.create = \"\"", "schedule.create = \"0 0 * * *\"");
    std::fs::write(&cfg, text).unwrap();
    let fleet: Vec<Serve> = (0..3).map(|i| Serve::start(&a, &cfg, &dir.path().join(format!("state-{i}")))).collect();
    let sources = wait_replicated(&a, Duration::from_secs(60)).await;
    assert_eq!(sources.len(), 5, "one scheduled create for the fleet, not three");
    // Each instance recorded its install under the deployment id (bunker doctor compares them).
    let install = ddb
        .get_item()
        .table_name("bunker-leases")
        .key("pk", AttributeValue::S(format!("install#bunker-{}-{REGION}", a.id)))
        .send()
        .await
        .unwrap();
    let install = install.item().expect("install record");
    assert!(install.get("fingerprint").and_then(|f| f.as_s().ok()).is_some_and(|f| f.len() == 16), "{install:?}");

    // Every event handled once: 5 events, 3 instances; still one copy each.
    for s in &sources {
        sqs.send_message().queue_url(&q).message_body(ebs_event(s)).send().await.unwrap();
    }
    let t = Instant::now();
    while queue_depth(&sqs, &q).await != (0, 0) {
        assert!(t.elapsed() < Duration::from_secs(60), "queue not drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(wait_replicated(&a, Duration::from_secs(5)).await.len(), 5);
    let fired: f64 = fleet
        .iter()
        .map(|s| {
            let m = s.get("/metrics");
            m.lines()
                .find(|l| {
                    l.starts_with(
                        "bunker_schedule_slots_total{action=\"create-backups\",kind=\"ebs\",outcome=\"fired\"}",
                    )
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(fired, 1.0, "exactly one instance fired the slot");
    for s in fleet {
        let (code, stderr, _) = s.terminate();
        assert_eq!(code, 0, "{stderr}");
    }
}

/// Exports in the service: an `export` command message, and (with `export.to`) every EBS
/// backup an event announces; progress and outcomes on `/metrics`.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_exports_on_commands_and_events() {
    use std::collections::BTreeMap;
    let a = Account::new("430000000001").await;
    let bucket = a.bucket("archives").await;
    let blocks: BTreeMap<u64, Vec<u8>> = (0..30u64).map(|i| (i * 60, common::noise(i, common::BLOCK))).collect();
    let s1 = a.write_snapshot(1, None, &blocks).await;
    let s2 = a.write_snapshot(1, None, &blocks).await;
    let (sqs, q, d) = queues(&a, "exports").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    std::fs::write(
        &cfg,
        format!(
            "regions = [\"{REGION}\"]\nexport.to = \"s3://{bucket}/auto\"\nexport.allowed_targets = [\"s3://{bucket}/cmd\"]\n\
             export.sha256 = true\nschedule.create = \"\"\nschedule.clean = \"\"\n\
             [serve]\nkinds = \"ebs\"\nlisten = \"127.0.0.1:0\"\ncheck_interval = \"1s\"\nqueue_url = \"{q}\"\n\
             dead_letter_queue_url = \"{d}\"\n"
        ),
    )
    .unwrap();
    let serve = Serve::start(&a, cfg.to_str().unwrap(), &dir.path().join("state"));
    let command = serde_json::json!({"action": "export", "snapshot_id": s1, "to": format!("s3://{bucket}/cmd")});
    sqs.send_message().queue_url(&q).message_body(command.to_string()).send().await.unwrap();
    sqs.send_message().queue_url(&q).message_body(ebs_event(&s2)).send().await.unwrap();

    let s3 = a.s3().await;
    let exists = |key: String| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move { s3.head_object().bucket(bucket).key(key).send().await.is_ok() }
    };
    let t = Instant::now();
    while !(exists(format!("cmd/{s1}.manifest.json")).await && exists(format!("auto/{s2}.manifest.json")).await) {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "exports not done: {}",
            std::fs::read_to_string(&serve.log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The manifest is written before the exporter counts the export: wait for the count.
    let mut metrics = serve.get("/metrics");
    while !metrics.contains("bunker_exports_total{status=\"ok\"} 2") {
        assert!(t.elapsed() < Duration::from_secs(90), "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = serve.get("/metrics");
    }
    assert!(metrics.contains("bunker_export_bytes_total{direction=\"in\"} 2147483648"), "{metrics}");
    assert!(!metrics.contains(&format!("archive=\"{s2}\"")), "finished exports leave no gauge: {metrics}");
    let (code, _, _) = serve.terminate();
    assert_eq!(code, 0);
    // Both archives are whole and verifiable, with both whole-image hashes (`export.sha256`).
    let expected = common::image(1, &blocks);
    for (url, manifest) in [
        (format!("cmd/{s1}"), format!("cmd/{s1}.manifest.json")),
        (format!("auto/{s2}"), format!("auto/{s2}.manifest.json")),
    ] {
        let m: serde_json::Value = serde_json::from_slice(&a.get_object(&bucket, &manifest).await).unwrap();
        assert_eq!(m["image_sha256"], common::sha256_hex(&expected), "{manifest}");
        assert_eq!(m["image_blake3"], common::blake3_hex(&expected), "{manifest}");
        let v = a.bunker(&["--json", "verify", &format!("s3://{bucket}/{url}.img.zst")]).ok_json();
        assert_eq!(v["image_sha256"], m["image_sha256"]);
    }
}

/// `/healthz` tells the truth: 503 naming the watcher while its queue cannot be polled, 200
/// again once it can.
#[tokio::test]
async fn healthz_names_the_watcher_while_its_queue_is_unreachable_and_recovers() {
    let a = Account::new("600000000009").await;
    let dir = tempfile::tempdir().unwrap();
    let sqs = aws_sdk_sqs::Client::new(&a.sdk(REGION).await);
    // A queue that does not exist yet.
    let url = format!("{}/{}/bunker-healthz", a.endpoint, a.id);
    let cfg = write_config(dir.path(), &format!("queue_url = \"{url}\"\nreconcile_interval = \"1h\"\n"));
    let serve = Serve::start(&a, &cfg, dir.path());
    let within = Duration::from_secs(45);
    let (_, body) = serve.health_until(within, |r, _| r.starts_with("HTTP/1.1 503")).await;
    assert_eq!(body["status"], "failing", "{body}");
    assert_eq!(body["failing"], serde_json::json!(["watcher"]), "{body}");
    assert!(body["components"]["watcher"].as_str().unwrap().contains("no completed queue poll"), "{body}");
    assert_eq!(body["components"]["replicator"], "ok");

    sqs.create_queue().queue_name("bunker-healthz").send().await.unwrap();
    let (ok, _) = serve.health_until(within, |r, _| r.starts_with("HTTP/1.1 200")).await;
    assert!(ok.contains("\"status\":\"ok\""), "{ok}");
    let (code, _, _) = serve.terminate();
    assert_eq!(code, 0);
}

/// `/healthz` fails "aws" while the last calls to AWS all failed (here the emulator answers
/// this account's requests 503), and answers 200 again once AWS does.
#[tokio::test(flavor = "multi_thread")]
async fn healthz_names_aws_while_every_call_fails_and_recovers() {
    let a = Account::new("600000000019").await;
    let dir = tempfile::tempdir().unwrap();
    let sqs = aws_sdk_sqs::Client::new(&a.sdk(REGION).await);
    let url = sqs.create_queue().queue_name("bunker-outage").send().await.unwrap().queue_url.unwrap();
    let cfg = write_config(dir.path(), &format!("queue_url = \"{url}\"\nreconcile_interval = \"1h\"\n"));
    let serve = Serve::start(&a, &cfg, dir.path());
    let within = Duration::from_secs(90);
    let (ok, _) = serve.health_until(within, |r, _| r.starts_with("HTTP/1.1 200")).await;
    assert!(ok.contains("\"aws\":\"ok\""), "{ok}");
    a.outage(true);
    // The watcher's own check (3 poll intervals) may fail first; the AWS rule follows.
    let aws_failing =
        |_: &str, b: &serde_json::Value| b["failing"].as_array().is_some_and(|f| f.iter().any(|c| c == "aws"));
    let (_, body) = serve.health_until(within, aws_failing).await;
    let why = body["components"]["aws"].as_str().unwrap();
    assert!(why.contains("AWS calls failed") && why.contains("503"), "{body}");
    a.outage(false);
    let (ok, _) = serve.health_until(within, |r, _| r.starts_with("HTTP/1.1 200")).await;
    assert!(ok.contains("\"status\":\"ok\""), "{ok}");
    let (code, _, _) = serve.terminate();
    assert_eq!(code, 0);
}

/// `export.retention_types = ["monthly"]`: reconciliation alone exports this deployment's
/// own monthly EBS backup (once, over several scans) and leaves its daily one alone.
#[tokio::test(flavor = "multi_thread")]
async fn own_backups_of_the_listed_retention_types_are_exported_by_reconciliation() {
    let a = Account::new("430000000010").await;
    let bucket = a.bucket("own-archives").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    let body = format!(
        "regions = [\"{REGION}\"]\nexport.to = \"s3://{bucket}/own\"\nexport.retention_types = [\"monthly\"]\n\
         schedule.create = \"\"\nschedule.clean = \"\"\n\
         [serve]\nkinds = \"ebs\"\nlisten = \"127.0.0.1:0\"\ncheck_interval = \"1s\"\nreconcile_interval = \"2s\"\n"
    );
    std::fs::write(&cfg, body).unwrap();
    let cfg = cfg.to_str().unwrap();
    a.volume(&[("bunker:create_backup", "true")]).await;
    let made = |now: &str| {
        let r = a.bunker(&["ebs", "create-backups", "--config", cfg, "--now", now, "--json"]).ok_json();
        (r["entries"][0]["backup_id"].as_str().unwrap().to_string(), r["entries"][0]["retention"].clone())
    };
    let (monthly, kind) = made("2026-12-01T01:00:00Z");
    assert_eq!(kind, "monthly");
    let (daily, kind) = made("2026-12-02T01:00:00Z");
    assert_eq!(kind, "daily");

    let serve = Serve::start(&a, cfg, &dir.path().join("state"));
    let s3 = a.s3().await;
    let exists = |key: String| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move { s3.head_object().bucket(bucket).key(key).send().await.is_ok() }
    };
    let t = Instant::now();
    while !exists(format!("own/{monthly}.manifest.json")).await {
        assert!(t.elapsed() < Duration::from_secs(60), "{}", std::fs::read_to_string(&serve.log).unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await; // two more scans
    let metrics = serve.get("/metrics");
    assert!(metrics.contains("bunker_exports_total{status=\"ok\"} 1\n"), "once: {metrics}");
    assert!(!exists(format!("own/{daily}.manifest.json")).await, "a daily backup is not exported");
    let (code, _, _) = serve.terminate();
    assert_eq!(code, 0);
    a.bunker(&["verify", &format!("s3://{bucket}/own/{monthly}.img.zst")]).ok_json_or_code(0);
}

/// `export.ebs_format` in the service: with `files` configured, an announced snapshot's ext4
/// partition is archived file by file (no image), its index written; a snapshot whose tag
/// `bunker:config:export.ebs_format` says `both` gets its image too, and one whose tag names
/// no format fails at once naming the tag. One file comes back from the service's archive.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_exports_each_snapshot_in_its_format() {
    let a = Account::new("430000000007").await;
    let bucket = a.bucket("archives").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), b"files-host\n").unwrap();
    let disk = dir.path().join("disk.img");
    common::disk_with_ext4(&disk, "label: gpt\nstart=2048, size=81920, type=L\n", &tree, 2048);
    let blocks = common::allocated(&std::fs::read(&disk).unwrap());
    let ec2 = a.ec2().await;
    let mut snaps = Vec::new();
    for tag in [None, Some("both"), Some("tarball")] {
        let snap = a.write_snapshot(1, None, &blocks).await;
        if let Some(v) = tag {
            let t = aws_sdk_ec2::types::Tag::builder().key("bunker:config:export.ebs_format").value(v).build();
            ec2.create_tags().resources(&snap).tags(t).send().await.unwrap();
        }
        snaps.push(snap);
    }
    let (sqs, q, d) = queues(&a, "formats").await;
    let cfg = dir.path().join("bunker.toml");
    std::fs::write(
        &cfg,
        format!(
            "regions = [\"{REGION}\"]\nexport.to = \"s3://{bucket}/auto\"\nexport.ebs_format = \"files\"\n\
             schedule.create = \"\"\nschedule.clean = \"\"\n\
             [serve]\nkinds = \"ebs\"\nlisten = \"127.0.0.1:0\"\ncheck_interval = \"1s\"\nqueue_url = \"{q}\"\n\
             dead_letter_queue_url = \"{d}\"\n"
        ),
    )
    .unwrap();
    let serve = Serve::start(&a, cfg.to_str().unwrap(), &dir.path().join("state"));
    for snap in &snaps {
        sqs.send_message().queue_url(&q).message_body(ebs_event(snap)).send().await.unwrap();
    }
    let (files, both, bad) = (&snaps[0], &snaps[1], &snaps[2]);
    let t = Instant::now();
    loop {
        let keys = a.keys(&bucket, "auto/").await;
        let has = |k: String| keys.contains(&k);
        let failed = std::fs::read_to_string(&serve.log).unwrap().contains("expected image, files or both");
        if has(format!("auto/{files}.files.json")) && has(format!("auto/{both}.files.json")) && failed {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{keys:?}\n{}", std::fs::read_to_string(&serve.log).unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = std::fs::read_to_string(&serve.log).unwrap();
    let (code, _, _) = serve.terminate();
    assert_eq!(code, 0);
    let keys = a.keys(&bucket, "auto/").await;
    assert!(!keys.contains(&format!("auto/{files}.img.zst")), "files only: {keys:?}");
    assert!(keys.contains(&format!("auto/{both}.manifest.json")), "the tag asked for both: {keys:?}");
    assert!(!keys.iter().any(|k| k.contains(bad.as_str())), "a bad tag exports nothing: {keys:?}");
    assert!(log.contains("tag bunker:config:export.ebs_format"), "{log}");
    let index: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("auto/{files}.files.json")).await).unwrap();
    assert_eq!(index["filesystems"][0]["manifest"], format!("{files}.p1.manifest.json"), "{index:#}");
    assert_eq!(index["filesystems"][0]["type"], "ext4");

    let out = dir.path().join("out");
    let archive = format!("s3://{bucket}/auto/{files}.p1.tar.zst");
    a.bunker(&["restore", &archive, "--path", "etc/hostname", "--to-dir", out.to_str().unwrap()]).ok_json_or_code(0);
    assert_eq!(std::fs::read(out.join("etc/hostname")).unwrap(), b"files-host\n");
}
