//! AWS Backup vaults in, verified archives out, against the emulator: `StartBackupJob` makes
//! a real EBS snapshot of a volume's data, its completion events go through an EventBridge
//! rule into SQS, and `bunker serve` (or the CLI) exports, verifies and deletes.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Account, REGION};

const VAULT: &str = "Default";
const ROLE: &str = "arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole";

/// A vault, a volume whose content is `blocks` (made from a snapshot of them), and the
/// account's backup client.
async fn vault_with_volume(a: &Account, seed: u64) -> (aws_sdk_backup::Client, String, Vec<u8>) {
    let backup = aws_sdk_backup::Client::new(&a.sdk(REGION).await);
    if backup.describe_backup_vault().backup_vault_name(VAULT).send().await.is_err() {
        backup.create_backup_vault().backup_vault_name(VAULT).send().await.expect("create vault");
    }
    let blocks: BTreeMap<u64, Vec<u8>> =
        [(0, common::noise(seed, 1 << 19)), (7, vec![b'x'; 1 << 19]), (1500, common::noise(seed + 1, 1 << 19))].into();
    let snap = a.write_snapshot(1, None, &blocks).await;
    let vol = a
        .ec2()
        .await
        .create_volume()
        .snapshot_id(&snap)
        .size(1)
        .availability_zone(format!("{REGION}a"))
        .send()
        .await
        .unwrap()
        .volume_id
        .unwrap();
    (backup, format!("arn:aws:ec2:{REGION}:{}:volume/{vol}", a.id), common::image(1, &blocks))
}

async fn start_job(backup: &aws_sdk_backup::Client, resource: &str) -> String {
    let job = backup.start_backup_job().backup_vault_name(VAULT).resource_arn(resource).iam_role_arn(ROLE);
    job.send().await.expect("start backup job").recovery_point_arn.unwrap()
}

/// Whether the recovery point still exists, and its status.
async fn point_status(backup: &aws_sdk_backup::Client, arn: &str) -> Option<String> {
    match backup.describe_recovery_point().backup_vault_name(VAULT).recovery_point_arn(arn).send().await {
        Ok(p) => Some(p.status.map(|s| s.as_str().to_string()).unwrap_or_default()),
        Err(e) => {
            let e = e.into_service_error();
            assert!(e.is_resource_not_found_exception(), "{e:?}");
            None
        }
    }
}

/// The queue (and its dead-letter queue) an EventBridge rule sends every `aws.backup` event to.
async fn event_queue(a: &Account) -> (aws_sdk_sqs::Client, String, String) {
    let conf = a.sdk(REGION).await;
    let sqs = aws_sdk_sqs::Client::new(&conf);
    let q = sqs.create_queue().queue_name("backup-events").send().await.unwrap().queue_url.unwrap();
    let d = sqs.create_queue().queue_name("backup-events-dlq").send().await.unwrap().queue_url.unwrap();
    let attrs = sqs.get_queue_attributes().queue_url(&q).attribute_names("QueueArn".into()).send().await.unwrap();
    let arn = attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    let events = aws_sdk_eventbridge::Client::new(&conf);
    let pattern =
        r#"{"source": ["aws.backup"], "detail-type": ["Backup Job State Change", "AWS Service Event via CloudTrail"]}"#;
    events.put_rule().name("bunker-backup-events").event_pattern(pattern).send().await.unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder().id("bunker").arn(arn).build().unwrap();
    events.put_targets().rule("bunker-backup-events").targets(target).send().await.unwrap();
    (sqs, q, d)
}

async fn depth(sqs: &aws_sdk_sqs::Client, q: &str) -> usize {
    let names = [
        aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
        aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ];
    let out = sqs.get_queue_attributes().queue_url(q).set_attribute_names(Some(names.to_vec())).send().await.unwrap();
    out.attributes().unwrap().values().map(|v| v.parse::<usize>().unwrap()).sum()
}

/// A config file: `extra` top-level keys, `serve` keys of the `[serve]` table (overriding
/// the tests' defaults there).
fn config(dir: &std::path::Path, extra: &str, serve: &str) -> String {
    let path = dir.join("bunker.toml");
    let defaults = [
        ("kinds", "\"ebs\""),
        ("listen", "\"127.0.0.1:0\""),
        ("check_interval", "\"1s\""),
        ("shutdown_deadline", "\"20s\""),
    ];
    let own: Vec<&str> = serve.lines().filter_map(|l| l.split('=').next()).map(str::trim).collect();
    let table: String =
        defaults.iter().filter(|(k, _)| !own.contains(k)).map(|(k, v)| format!("{k} = {v}\n")).collect();
    let body = format!(
        "regions = [\"{REGION}\"]\nschedule.create = \"\"\nschedule.clean = \"\"\n{extra}\n[serve]\n{table}{serve}\n"
    );
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

async fn until<F: std::future::Future<Output = bool>>(within: Duration, what: &str, mut f: impl FnMut() -> F) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn metric(text: &str, line: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(line)?.trim().parse().ok()).unwrap_or(0.0)
}

/// The whole path: a backup job's two completion events (native and CloudTrail) arrive by
/// EventBridge; bunker exports the recovery point, reads the archive back, deletes the point
/// through AWS Backup (EC2 refuses to delete such a snapshot) and checks it is gone. The same
/// event three more times, concurrently, exports nothing again.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_exports_verifies_and_deletes_the_recovery_point_once() {
    let a = Account::new("430000000001").await;
    let (backup, volume, image) = vault_with_volume(&a, 11).await;
    let (sqs, q, dlq) = event_queue(&a).await;
    let bucket = a.bucket("vault-archives").await;
    let dir = tempfile::tempdir().unwrap();
    let extra =
        format!("export.to = \"s3://{bucket}/archive\"\nexport.vaults = [\"{VAULT}\"]\nexport.delete_source = true");
    let serve = format!("queue_url = \"{q}\"\ndead_letter_queue_url = \"{dlq}\"\nreconcile_interval = \"1h\"");
    let cfg = config(dir.path(), &extra, &serve);
    let (mut child, addr, log) = a.serve(&cfg, &dir.path().join("state"));
    let point = start_job(&backup, &volume).await;
    let snap = point.rsplit('/').next().unwrap().to_string();
    until(Duration::from_secs(60), "recovery point deleted", || async {
        point_status(&backup, &point).await.is_none()
    })
    .await;
    until(Duration::from_secs(30), "queue drained", || async { depth(&sqs, &q).await == 0 }).await;

    let key = format!("archive/recovery-points/{VAULT}/{snap}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("{key}.manifest.json")).await).unwrap();
    assert_eq!(manifest["source"]["recovery_point"]["arn"], point, "the manifest names the recovery point");
    assert_eq!(manifest["source"]["recovery_point"]["vault"], VAULT);
    assert!(
        common::zstd_decompress(&a.get_object(&bucket, &format!("{key}.img.zst")).await) == image,
        "zstd -d gives the volume's data"
    );
    let ec2 = a.ec2().await;
    assert!(ec2.describe_snapshots().snapshot_ids(&snap).send().await.is_err(), "the snapshot went with the point");

    // Replays: the native event three times at once.
    let body = serde_json::json!({
        "version": "0", "id": "replay", "detail-type": "Backup Job State Change", "source": "aws.backup",
        "account": a.id, "time": "2026-12-02T03:00:00Z", "region": REGION, "resources": [point],
        "detail": {"backupJobId": "unknown", "backupVaultName": VAULT, "state": "COMPLETED", "resourceType": "EBS"}
    })
    .to_string();
    futures::future::join_all((0..3).map(|_| sqs.send_message().queue_url(&q).message_body(&body).send())).await;
    until(Duration::from_secs(30), "replays handled", || async { depth(&sqs, &q).await == 0 }).await;
    let m = common::http_get(&addr, "/metrics");
    assert_eq!(metric(&m, "bunker_exports_total{status=\"ok\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "bunker_messages_total{outcome=\"handled\"}"), 5.0, "2 events + 3 replays: {m}");
    assert_eq!(metric(&m, "bunker_messages_total{outcome=\"dead_lettered\"}"), 0.0, "{m}");
    assert_eq!(depth(&sqs, &dlq).await, 0);
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

/// With every event dropped, reconciliation alone exports each EBS recovery point once and
/// (without `export.delete_source`) keeps it; a kind bunker does not export (a DocumentDB
/// cluster snapshot) is reported once however often the vault is scanned; `vault list-recovery-points` says which is which.
#[tokio::test(flavor = "multi_thread")]
async fn reconciliation_alone_exports_each_point_once_and_keeps_them() {
    let a = Account::new("430000000002").await;
    common::post(&a.endpoint, "/_bunker/backup", &format!(r#"{{"account": "{}", "events": []}}"#, a.id));
    let mut points = Vec::new();
    for seed in 0..3 {
        let (backup, volume, _) = vault_with_volume(&a, 20 + seed).await;
        points.push(start_job(&backup, &volume).await);
    }
    let backup = aws_sdk_backup::Client::new(&a.sdk(REGION).await);
    let docdb = aws_sdk_docdb::Client::new(&a.sdk(REGION).await);
    let cluster = docdb.create_db_cluster().db_cluster_identifier("docs").engine("docdb");
    cluster.master_username("u").master_user_password("password1").send().await.unwrap();
    let table = start_job(&backup, &format!("arn:aws:rds:{REGION}:{}:cluster:docs", a.id)).await;

    let bucket = a.bucket("vault-reconcile").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("export.to = \"s3://{bucket}/x\"\nexport.vaults = [\"{VAULT}\"]");
    let cfg = config(dir.path(), &extra, "reconcile_interval = \"2s\"");
    let (mut child, addr, log) = a.serve(&cfg, &dir.path().join("state"));
    until(Duration::from_secs(60), "three exports", || async {
        metric(&common::http_get(&addr, "/metrics"), "bunker_exports_total{status=\"ok\"}") >= 3.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await; // two more scans
    let m = common::http_get(&addr, "/metrics");
    assert_eq!(metric(&m, "bunker_exports_total{status=\"ok\"}"), 3.0, "each once: {m}");
    child.kill().unwrap();
    child.wait().unwrap();
    for p in points.iter().chain([&table]) {
        assert_eq!(point_status(&backup, p).await.as_deref(), Some("COMPLETED"), "kept: {p}");
    }
    let log = std::fs::read_to_string(log).unwrap();
    assert_eq!(
        log.matches("recovery point not exported").count(),
        1,
        "the DocumentDB snapshot is reported once: {log}"
    );

    let listed = a.bunker(&["--json", "--config", &cfg, "vault", "list-recovery-points", VAULT]).ok_json();
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        let ebs = r["resource_type"] == "EBS";
        assert_eq!(r["exported"], if ebs { serde_json::json!(true) } else { serde_json::Value::Null }, "{r}");
        if ebs {
            let snap = r["arn"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
            assert_eq!(r["archive"], format!("s3://{bucket}/x/recovery-points/{VAULT}/{snap}.manifest.json"));
        }
    }
}

/// `export recovery-point` with `export.delete_source`: a legal hold or a Vault Lock keeps
/// the point (reported: exit 1 naming the refusal), and a delete AWS answers with 200 but
/// leaves EXPIRED is a failure, not a success. The archive is made every time.
#[tokio::test(flavor = "multi_thread")]
async fn refused_and_unconfirmed_deletes_keep_the_point_and_say_why() {
    let a = Account::new("430000000003").await;
    let (backup, volume, _) = vault_with_volume(&a, 31).await;
    let held = start_job(&backup, &volume).await;
    let expired = start_job(&backup, &volume).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bucket = a.bucket("vault-cli").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &format!("export.to = \"s3://{bucket}/cli\"\nexport.delete_source = true"), "");
    let export = |arn: &str| a.bunker(&["--json", "--config", &cfg, "export", "recovery-point", arn, "--vault", VAULT]);

    common::post(&a.endpoint, "/_bunker/backup", &format!(r#"{{"account": "{}", "legal_holds": ["{held}"]}}"#, a.id));
    let r = export(&held);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.json()["reason"].as_str().unwrap().contains("legal hold"), "{r:#?}");
    assert_eq!(point_status(&backup, &held).await.as_deref(), Some("COMPLETED"));

    common::post(&a.endpoint, "/_bunker/backup", &format!(r#"{{"account": "{}", "expire_on_delete": true}}"#, a.id));
    let r = export(&expired);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.json()["reason"].as_str().unwrap().contains("EXPIRED"), "{r:#?}");
    assert_eq!(r.json()["state"], "failed");
    assert_eq!(point_status(&backup, &expired).await.as_deref(), Some("EXPIRED"));

    // A Vault Lock's minimum retention keeps a new point too.
    common::post(&a.endpoint, "/_bunker/backup", &format!(r#"{{"account": "{}", "expire_on_delete": false}}"#, a.id));
    backup.put_backup_vault_lock_configuration().backup_vault_name(VAULT).min_retention_days(7).send().await.unwrap();
    let locked = start_job(&backup, &volume).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = export(&locked);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.json()["reason"].as_str().unwrap().contains("Vault Lock"), "{r:#?}");
    assert_eq!(point_status(&backup, &locked).await.as_deref(), Some("COMPLETED"));

    for p in [&held, &expired, &locked] {
        let snap = p.rsplit('/').next().unwrap();
        let key = format!("cli/recovery-points/{VAULT}/{snap}.manifest.json");
        let m: serde_json::Value = serde_json::from_slice(&a.get_object(&bucket, &key).await).unwrap();
        assert_eq!(m["source"]["recovery_point"]["arn"], p.as_str());
    }
}

/// A DynamoDB item of the test table, as the SDK writes it.
fn item(i: usize) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let nested =
        [("at".to_string(), V::N(format!("{}", 1_700_000_000 + i))), ("ok".into(), V::Bool(i.is_multiple_of(2)))];
    [
        ("k".to_string(), V::S(format!("item-{i:04}"))),
        ("n".into(), V::N(i.to_string())),
        ("meta".into(), V::M(nested.into_iter().collect())),
        ("list".into(), V::L(vec![V::S("a".into()), V::N("2".into())])),
    ]
    .into_iter()
    .collect()
}

/// The same item as one line of AWS's DynamoDB JSON export layout.
fn item_json(i: usize) -> serde_json::Value {
    serde_json::json!({"Item": {
        "k": {"S": format!("item-{i:04}")},
        "n": {"N": i.to_string()},
        "meta": {"M": {"at": {"N": format!("{}", 1_700_000_000 + i)}, "ok": {"BOOL": i.is_multiple_of(2)}}},
        "list": {"L": [{"S": "a"}, {"N": "2"}]}
    }})
}

/// `export recovery-point` of a DynamoDB backup: restored to a temporary table, scanned in
/// parallel segments, archived as DynamoDB JSON lines that plain `zstd -d` reads back as
/// exactly the items at backup time (those written after it are absent), the temporary
/// table deleted, the recovery point deleted once the archive verifies.
#[tokio::test(flavor = "multi_thread")]
async fn a_dynamodb_backup_is_archived_through_a_temporary_table_as_json_lines() {
    let a = Account::new("430000000004").await;
    let (backup, ddb, point) = backed_up_orders(&a, 300).await;
    write_items(&ddb, 300..320).await; // after the backup: not in it

    let bucket = a.bucket("vault-ddb").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &format!("export.to = \"s3://{bucket}/d\"\nexport.delete_source = true"), "");
    let r = a.bunker(&["--json", "--config", &cfg, "export", "recovery-point", &point, "--vault", VAULT]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(point_status(&backup, &point).await, None, "deleted after the archive verified");
    let name = format!("orders-{}", point.rsplit('/').next().unwrap());
    let key = format!("d/recovery-points/{VAULT}/{name}");
    let lines = common::zstd_decompress(&a.get_object(&bucket, &format!("{key}.jsonl.zst")).await);
    let got: std::collections::BTreeSet<String> = std::str::from_utf8(&lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().to_string())
        .collect();
    let want: std::collections::BTreeSet<String> = (0..300).map(|i| item_json(i).to_string()).collect();
    assert_eq!(got.len(), 300, "one line per item at backup time");
    assert!(got == want, "the lines are the items at backup time");
    let m: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("{key}.manifest.json")).await).unwrap();
    assert_eq!(m["content"], "dynamodb-json");
    assert_eq!(m["items"]["items"], 300);
    assert_eq!(m["source"]["recovery_point"]["arn"], point);
    let tables = ddb.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names(), ["orders"], "the temporary table is gone");
}

/// A vault, the table `orders` with items `0..n`, and a completed backup job of it: the
/// clients and the recovery point.
async fn backed_up_orders(a: &Account, n: usize) -> (aws_sdk_backup::Client, aws_sdk_dynamodb::Client, String) {
    let conf = a.sdk(REGION).await;
    let (backup, ddb) = (aws_sdk_backup::Client::new(&conf), aws_sdk_dynamodb::Client::new(&conf));
    backup.create_backup_vault().backup_vault_name(VAULT).send().await.unwrap();
    orders_table(&ddb).await;
    write_items(&ddb, 0..n).await;
    let point = start_job(&backup, &format!("arn:aws:dynamodb:{REGION}:{}:table/orders", a.id)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    (backup, ddb, point)
}

/// The test table `orders` (string key `k`).
async fn orders_table(ddb: &aws_sdk_dynamodb::Client) {
    use aws_sdk_dynamodb::types::{AttributeDefinition, KeySchemaElement};
    let key = KeySchemaElement::builder().attribute_name("k").key_type("HASH".into()).build().unwrap();
    let attr = AttributeDefinition::builder().attribute_name("k").attribute_type("S".into()).build().unwrap();
    let table = ddb.create_table().table_name("orders").key_schema(key).attribute_definitions(attr);
    table.billing_mode("PAY_PER_REQUEST".into()).send().await.unwrap();
}

/// Writes items `range` of [`item`] to `orders`.
async fn write_items(ddb: &aws_sdk_dynamodb::Client, range: std::ops::Range<usize>) {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    let reqs: Vec<_> = range
        .map(|i| {
            WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item(i))).build().unwrap()).build()
        })
        .collect();
    for batch in reqs.chunks(25) {
        ddb.batch_write_item().request_items("orders", batch.to_vec()).send().await.unwrap();
    }
}

/// `kill -9` while a DynamoDB export's temporary table exists (restored, waiting for its
/// next look), then a restart: the new process finds the table by its name and tags, exports
/// once, and deletes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_temporary_table_left_by_kill_9_is_used_once_and_removed_after_restart() {
    let a = Account::new("430000000005").await;
    common::post(&a.endpoint, "/_bunker/backup", &format!(r#"{{"account": "{}", "events": []}}"#, a.id));
    let (backup, ddb, point) = backed_up_orders(&a, 50).await;
    let bucket = a.bucket("vault-kill").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("export.to = \"s3://{bucket}/k\"\nexport.vaults = [\"{VAULT}\"]");
    // A long check interval: after the restore, the job waits that long before its scan.
    let slow = config(dir.path(), &extra, "reconcile_interval = \"1h\"\ncheck_interval = \"1h\"");
    let (mut first, _, _) = a.serve(&slow, &dir.path().join("state"));
    let temp = |ddb: aws_sdk_dynamodb::Client| async move {
        let names = ddb.list_tables().send().await.unwrap().table_names().to_vec();
        names.into_iter().filter(|n| n.starts_with("bunker-tmp-")).collect::<Vec<_>>()
    };
    until(Duration::from_secs(30), "temporary table restored", || {
        let ddb = ddb.clone();
        async move { temp(ddb).await.len() == 1 }
    })
    .await;
    let name = temp(ddb.clone()).await.remove(0);
    let arn = ddb.describe_table().table_name(&name).send().await.unwrap().table.unwrap().table_arn.unwrap();
    let tags = ddb.list_tags_of_resource().resource_arn(arn).send().await.unwrap();
    let tags: BTreeMap<_, _> = tags.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect();
    assert_eq!(tags.get("bunker:temporary").map(String::as_str), Some("true"), "{tags:?}");
    assert!(tags["bunker:purpose"].contains(&point), "{tags:?}");
    assert!(tags.contains_key("bunker:expires_at") && tags.contains_key("bunker:deployment"), "{tags:?}");
    first.kill().unwrap();
    first.wait().unwrap();

    let quick = config(dir.path(), &extra, "reconcile_interval = \"1h\"");
    let (mut second, addr, _) = a.serve(&quick, &dir.path().join("state"));
    until(Duration::from_secs(60), "exported after the restart", || async {
        metric(&common::http_get(&addr, "/metrics"), "bunker_exports_total{status=\"ok\"}") >= 1.0
    })
    .await;
    until(Duration::from_secs(30), "temporary table removed", || {
        let ddb = ddb.clone();
        async move { temp(ddb).await.is_empty() }
    })
    .await;
    let m = common::http_get(&addr, "/metrics");
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(metric(&m, "bunker_exports_total{status=\"ok\"}"), 1.0, "once: {m}");
    let id = point.rsplit('/').next().unwrap();
    let lines = common::zstd_decompress(
        &a.get_object(&bucket, &format!("k/recovery-points/{VAULT}/orders-{id}.jsonl.zst")).await,
    );
    assert_eq!(std::str::from_utf8(&lines).unwrap().lines().count(), 50);
    assert_eq!(point_status(&backup, &point).await.as_deref(), Some("COMPLETED"), "kept without delete_source");
}

/// The temporary table's name for a backup (what bunker computes: `bunker-tmp-` and the
/// first 10 bytes of the ARN's SHA-256 in hex).
fn temp_name(backup_arn: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(backup_arn.as_bytes());
    format!("bunker-tmp-{}", d.iter().take(10).map(|b| format!("{b:02x}")).collect::<String>())
}

/// A crash between `RestoreTableFromBackup` and the tagging leaves an untagged table restored
/// from this backup: it is adopted (tagged, used, deleted). A table of that name restored
/// from another backup is someone else's: the export fails naming it, and the table stays.
#[tokio::test(flavor = "multi_thread")]
async fn an_untagged_table_of_our_restore_is_adopted_and_a_foreign_one_is_never_touched() {
    let a = Account::new("430000000006").await;
    let (backup, ddb, point) = backed_up_orders(&a, 40).await;
    let other = ddb.create_backup().table_name("orders").backup_name("someone-else").send().await.unwrap();
    let other = other.backup_details.unwrap().backup_arn;
    let bucket = a.bucket("vault-adopt").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &format!("export.to = \"s3://{bucket}/t\""), "");
    let export = || a.bunker(&["--json", "--config", &cfg, "export", "recovery-point", &point, "--vault", VAULT]);

    let name = temp_name(&point);
    ddb.restore_table_from_backup().backup_arn(&other).target_table_name(&name).send().await.unwrap();
    let r = export();
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.json()["reason"].as_str().unwrap().contains("is not this deployment's temporary table"), "{r:#?}");
    assert!(ddb.describe_table().table_name(&name).send().await.is_ok(), "a foreign table is never deleted");
    ddb.delete_table().table_name(&name).send().await.unwrap();

    ddb.restore_table_from_backup().backup_arn(&point).target_table_name(&name).send().await.unwrap();
    let r = export();
    assert_eq!(r.code, 0, "{r:#?}");
    let tables = ddb.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names(), ["orders"], "the adopted table is removed");
    let id = point.rsplit('/').next().unwrap();
    let lines = common::zstd_decompress(
        &a.get_object(&bucket, &format!("t/recovery-points/{VAULT}/orders-{id}.jsonl.zst")).await,
    );
    assert_eq!(std::str::from_utf8(&lines).unwrap().lines().count(), 40);
    assert_eq!(point_status(&backup, &point).await.as_deref(), Some("COMPLETED"));
}

const EXPORT_ROLE: &str = "arn:aws:iam::123456789012:role/bunker-rds-export";

/// The RDS instance `orders-db` (and its content in the emulator's exports: `rows` rows in
/// `shop.public.orders`, 3 in `shop.public.customers`) and the Aurora cluster `ledger`
/// (the emulator's sample content); the resource ARNs.
async fn databases(a: &Account, rows: usize) -> (String, String) {
    let rds = aws_sdk_rds::Client::new(&a.sdk(REGION).await);
    let db = rds
        .create_db_instance()
        .db_instance_identifier("orders-db")
        .engine("postgres")
        .db_instance_class("db.t3.micro");
    db.master_username("u").master_user_password("password1234").allocated_storage(20).send().await.unwrap();
    let cluster = rds.create_db_cluster().db_cluster_identifier("ledger").engine("aurora-postgresql");
    cluster.master_username("u").master_user_password("password1234").send().await.unwrap();
    let orders: Vec<serde_json::Value> = (0..rows).map(|i| serde_json::json!([i, format!("note {i}")])).collect();
    let content = serde_json::json!({"account": a.id, "rds_content": {"orders-db": {"db": "shop", "tables": {
        "public.orders": {"columns": ["id", "note"], "rows": orders},
        "public.customers": {"columns": ["id"], "rows": [[1], [2], [3]]}}}}});
    common::post(&a.endpoint, "/_bunker/backup", &content.to_string());
    (format!("arn:aws:rds:{REGION}:{}:db:orders-db", a.id), format!("arn:aws:rds:{REGION}:{}:cluster:ledger", a.id))
}

/// The export tasks of recovery point `arn`.
async fn tasks_of(a: &Account, arn: &str) -> Vec<aws_sdk_rds::types::ExportTask> {
    let rds = aws_sdk_rds::Client::new(&a.sdk(REGION).await);
    let all = rds.describe_export_tasks().send().await.unwrap();
    all.export_tasks().iter().filter(|t| t.source_arn() == Some(arn)).cloned().collect()
}

/// RDS and Aurora recovery points, by event: one export task each (the event three more
/// times, concurrently, starts no second), Parquet files in AWS's layout verified by their
/// footers, a manifest beside them whose row counts are the tables' rows, and the recovery
/// points deleted only then.
#[tokio::test(flavor = "multi_thread")]
async fn rds_and_aurora_points_become_verified_parquet_then_are_deleted() {
    let a = Account::new("430000000007").await;
    let conf = a.sdk(REGION).await;
    let backup = aws_sdk_backup::Client::new(&conf);
    backup.create_backup_vault().backup_vault_name(VAULT).send().await.unwrap();
    let (db, cluster) = databases(&a, 2500).await;
    let (sqs, q, dlq) = event_queue(&a).await;
    let bucket = a.bucket("vault-parquet").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "export.to = \"s3://{bucket}/p\"\nexport.vaults = [\"{VAULT}\"]\nexport.delete_source = true\n\
         export.rds_role_arn = \"{EXPORT_ROLE}\"\nexport.kms_key = \"alias/bunker-exports\"\nexport.task_poll = \"1s\""
    );
    let serve = format!("queue_url = \"{q}\"\ndead_letter_queue_url = \"{dlq}\"\nreconcile_interval = \"1h\"");
    let cfg = config(dir.path(), &extra, &serve);
    let (mut child, _addr, log) = a.serve(&cfg, &dir.path().join("state"));
    let points = [start_job(&backup, &db).await, start_job(&backup, &cluster).await];
    tokio::time::sleep(Duration::from_millis(500)).await;
    for point in &points {
        let body = serde_json::json!({
            "version": "0", "id": "replay", "detail-type": "Backup Job State Change", "source": "aws.backup",
            "account": a.id, "time": "2026-12-02T03:00:00Z", "region": REGION, "resources": [point],
            "detail": {"backupJobId": "unknown", "backupVaultName": VAULT, "state": "COMPLETED"}
        })
        .to_string();
        futures::future::join_all((0..3).map(|_| sqs.send_message().queue_url(&q).message_body(&body).send())).await;
    }
    for point in &points {
        until(Duration::from_secs(90), "recovery point deleted", || async {
            point_status(&backup, point).await.is_none()
        })
        .await;
    }
    until(Duration::from_secs(30), "queue drained", || async { depth(&sqs, &q).await == 0 }).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(depth(&sqs, &dlq).await, 0);
    let log = std::fs::read_to_string(log).unwrap();
    assert!(!log.contains("panicked"), "{log}");

    for (point, tables) in points.iter().zip([
        vec![("shop.public.customers", 3), ("shop.public.orders", 2500)],
        vec![("appdb.public.customers", 3), ("appdb.public.orders", 1000)],
    ]) {
        let tasks = tasks_of(&a, point).await;
        assert_eq!(tasks.len(), 1, "one export task, whatever the replays: {tasks:?}");
        let task = tasks[0].export_task_identifier().unwrap();
        assert!(tasks[0].status().unwrap().eq_ignore_ascii_case("complete"));
        let key = format!("p/recovery-points/{VAULT}/{task}.manifest.json");
        let m: serde_json::Value = serde_json::from_slice(&a.get_object(&bucket, &key).await).unwrap();
        assert_eq!(m["format"], "bunker-parquet-export");
        assert_eq!(m["source"]["recovery_point"]["arn"], point.as_str());
        let got: Vec<(String, u64)> = m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_string(), t["rows"].as_u64().unwrap()))
            .collect();
        let want: Vec<(String, u64)> = tables.iter().map(|(n, r)| (n.to_string(), *r)).collect();
        assert_eq!(got, want, "rows from the Parquet footers are the tables' rows");
        for o in m["objects"].as_array().unwrap() {
            let data =
                a.get_object(&bucket, &format!("p/recovery-points/{VAULT}/{}", o["key"].as_str().unwrap())).await;
            assert_eq!(data.len() as u64, o["size"].as_u64().unwrap(), "{o}");
            if o["key"].as_str().unwrap().ends_with(".parquet") {
                assert!(data.starts_with(b"PAR1") && data.ends_with(b"PAR1"), "{o}");
            }
        }
        let parquet = m["objects"].as_array().unwrap().iter().filter(|o| o["rows"].is_u64()).count();
        assert_eq!(parquet, 3, "the largest table in two batches, the other in one: {m}");
    }
    assert_eq!(m_engine(&a, &bucket, &points[0]).await, "postgres");
}

/// The engine the manifest of `point`'s export names.
async fn m_engine(a: &Account, bucket: &str, point: &str) -> String {
    let task = tasks_of(a, point).await.remove(0).export_task_identifier.unwrap();
    let key = format!("p/recovery-points/{VAULT}/{task}.manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&a.get_object(bucket, &key).await).unwrap();
    m["engine"].as_str().unwrap_or_default().to_string()
}

/// What a failed Parquet export leaves: a table AWS reports FAILED, a data file whose footer
/// is damaged, a missing export role: each ends FAILED (exit 1) with a reason naming the
/// table, the object or the key; no manifest is written and the recovery point stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_table_or_a_damaged_parquet_file_fails_the_export_and_deletes_nothing() {
    let a = Account::new("430000000008").await;
    let backup = aws_sdk_backup::Client::new(&a.sdk(REGION).await);
    backup.create_backup_vault().backup_vault_name(VAULT).send().await.unwrap();
    let (db, _) = databases(&a, 40).await;
    let bucket = a.bucket("vault-parquet-faults").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("export.rds_role_arn = \"{EXPORT_ROLE}\"\nexport.kms_key = \"k\"\nexport.task_poll = \"1s\"");
    let with_role =
        config(dir.path(), &format!("export.to = \"s3://{bucket}/f\"\nexport.delete_source = true\n{keys}"), "");
    let control =
        |body: &str| common::post(&a.endpoint, "/_bunker/backup", &format!(r#"{{"account": "{}", {body}}}"#, a.id));

    control(r#""export_fail_tables": ["shop.public.customers"]"#);
    let failed_table = start_job(&backup, &db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = a.bunker(&["--json", "--config", &with_role, "export", "recovery-point", &failed_table, "--vault", VAULT]);
    assert_eq!(r.code, 1, "{r:#?}");
    let reason = r.json()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("table shop.public.customers was not exported"), "{reason}");

    control(r#""export_fail_tables": [], "export_corrupt": ["public.orders/2/"]"#);
    let damaged = start_job(&backup, &db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = a.bunker(&["--json", "--config", &with_role, "export", "recovery-point", &damaged, "--vault", VAULT]);
    assert_eq!(r.code, 1, "{r:#?}");
    let reason = r.json()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("public.orders/2/part-00002-") && reason.contains("PAR1"), "{reason}");

    std::fs::remove_file(&with_role).unwrap();
    let no_role = config(dir.path(), &format!("export.to = \"s3://{bucket}/f\"\nexport.kms_key = \"k\""), "");
    let fresh = start_job(&backup, &db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = a.bunker(&["--json", "--config", &no_role, "export", "recovery-point", &fresh, "--vault", VAULT]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.json()["reason"].as_str().unwrap().contains("export.rds_role_arn is not set"), "{r:#?}");
    assert!(tasks_of(&a, &fresh).await.is_empty(), "no task started without a role");
    assert_eq!(point_status(&backup, &fresh).await.as_deref(), Some("COMPLETED"));

    for p in [&failed_table, &damaged] {
        assert_eq!(point_status(&backup, p).await.as_deref(), Some("COMPLETED"), "kept: {p}");
        let task = tasks_of(&a, p).await.remove(0).export_task_identifier.unwrap();
        let s3 = a.s3().await;
        let key = format!("f/recovery-points/{VAULT}/{task}.manifest.json");
        assert!(s3.head_object().bucket(&bucket).key(key).send().await.is_err(), "no manifest for a failed export");
    }
}

/// The items of AWS's DynamoDB export data files (gzip'd DynamoDB JSON lines), read with the
/// standard `zcat`.
fn gunzip_lines(data: &[u8]) -> Vec<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("zcat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("zcat");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().to_string())
        .collect()
}

/// `export.dynamodb_mode = "pitr"`: the recovery point is exported by DynamoDB at the
/// backup's creation time (items written after it are absent), AWS's manifests are checked
/// (every data file present with its MD5, item counts adding up), bunker's manifest is
/// written beside them, and the recovery point deleted only then; a second export of
/// another backup, whose data file is missing, fails naming it and keeps its point.
#[tokio::test(flavor = "multi_thread")]
async fn a_dynamodb_point_in_time_export_is_verified_from_aws_manifests_before_the_delete() {
    let a = Account::new("430000000009").await;
    let (backup, ddb, point) = backed_up_orders(&a, 120).await;
    write_items(&ddb, 120..150).await; // after the backup: not in the export
    let bucket = a.bucket("vault-pitr").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "export.to = \"s3://{bucket}/t\"\nexport.delete_source = true\nexport.dynamodb_mode = \"pitr\"\nexport.task_poll = \"1s\""
    );
    let cfg = config(dir.path(), &extra, "");
    let export = |arn: &str| a.bunker(&["--json", "--config", &cfg, "export", "recovery-point", arn, "--vault", VAULT]);
    // Without point-in-time recovery on the table: failed at once, saying what to change.
    let r = export(&point);
    assert_eq!(r.code, 1, "{r:#?}");
    let reason = r.json()["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("starting the DynamoDB export") && reason.contains("point-in-time recovery is off"),
        "{reason}"
    );

    let spec = aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
        .point_in_time_recovery_enabled(true)
        .build()
        .unwrap();
    let pitr = ddb.update_continuous_backups().table_name("orders").point_in_time_recovery_specification(spec);
    pitr.send().await.unwrap();
    let r = export(&point);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(point_status(&backup, &point).await, None, "deleted after the export verified");

    let name = format!("orders-{}", point.rsplit('/').next().unwrap());
    let key = format!("t/recovery-points/{VAULT}/{name}.manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&a.get_object(&bucket, &key).await).unwrap();
    assert_eq!(m["format"], "bunker-dynamodb-export");
    assert_eq!(m["source"]["recovery_point"]["arn"], point.as_str());
    assert_eq!(m["tables"][0]["rows"], 120, "{m}");
    assert!(m["export_task"].as_str().unwrap().contains(":table/orders/export/"), "{m}");
    let mut got = std::collections::BTreeSet::new();
    for o in m["objects"].as_array().unwrap().iter().filter(|o| o["key"].as_str().unwrap().ends_with(".json.gz")) {
        let data = a.get_object(&bucket, &format!("t/recovery-points/{VAULT}/{}", o["key"].as_str().unwrap())).await;
        got.extend(gunzip_lines(&data));
    }
    let want: std::collections::BTreeSet<String> = (0..120).map(|i| item_json(i).to_string()).collect();
    assert!(got == want, "AWS's data files hold exactly the items at backup time ({} lines)", got.len());

    // Another backup; DynamoDB's export loses a data file.
    common::post(&a.endpoint, "/_bunker/backup", &format!(r#"{{"account": "{}", "ddb_export_drop_files": 1}}"#, a.id));
    let second = start_job(&backup, &format!("arn:aws:dynamodb:{REGION}:{}:table/orders", a.id)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = export(&second);
    assert_eq!(r.code, 1, "{r:#?}");
    let reason = r.json()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("/data/") && reason.contains(".json.gz is missing"), "{reason}");
    assert_eq!(point_status(&backup, &second).await.as_deref(), Some("COMPLETED"), "kept");
    let name = format!("orders-{}", second.rsplit('/').next().unwrap());
    let s3 = a.s3().await;
    let key = format!("t/recovery-points/{VAULT}/{name}.manifest.json");
    assert!(s3.head_object().bucket(&bucket).key(key).send().await.is_err(), "no manifest for a failed export");
}

/// `export.ebs_format = "both"` for vault points: an EBS recovery point of a volume holding
/// an ext4 partition is archived as its image and file by file (the index and the
/// filesystem's manifest name the point), both read back, then the point deleted. With
/// `files`, a point whose disk holds no filesystem bunker reads fails naming the fix, and the
/// point is kept.
#[tokio::test(flavor = "multi_thread")]
async fn an_ebs_point_is_exported_as_files_and_image_and_deleted_only_when_both_verify() {
    let a = Account::new("430000000021").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), b"vault files\n").unwrap();
    let disk = dir.path().join("disk.img");
    common::disk_with_ext4(&disk, "label: gpt\nstart=2048, size=81920, type=L\n", &tree, 2048);
    let blocks = common::allocated(&std::fs::read(&disk).unwrap());
    let (backup, noise_volume, _) = vault_with_volume(&a, 41).await;
    let snap = a.write_snapshot(1, None, &blocks).await;
    let ec2 = a.ec2().await;
    let vol = ec2.create_volume().snapshot_id(&snap).size(1).availability_zone(format!("{REGION}a")).send().await;
    let volume = format!("arn:aws:ec2:{REGION}:{}:volume/{}", a.id, vol.unwrap().volume_id.unwrap());
    let point = start_job(&backup, &volume).await;
    let noise_point = start_job(&backup, &noise_volume).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bucket = a.bucket("vault-files").await;
    let both = config(
        dir.path(),
        &format!("export.to = \"s3://{bucket}/f\"\nexport.delete_source = true\nexport.ebs_format = \"both\""),
        "",
    );
    let r = a.bunker(&["--json", "--config", &both, "export", "recovery-point", &point, "--vault", VAULT]);
    assert_eq!(r.json()["state"], "done", "{r:#?}");
    assert_eq!(point_status(&backup, &point).await, None, "deleted once both verified");
    let id = point.rsplit('/').next().unwrap();
    let prefix = format!("f/recovery-points/{VAULT}/{id}");
    let index: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("{prefix}.files.json")).await).unwrap();
    assert_eq!(index["recovery_point"]["arn"], point.as_str(), "{index:#}");
    assert_eq!(index["filesystems"][0]["manifest"], format!("{id}.p1.manifest.json"));
    let m: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("{prefix}.p1.manifest.json")).await).unwrap();
    assert_eq!(m["source"]["recovery_point"]["arn"], point.as_str());
    let image: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("{prefix}.manifest.json")).await).unwrap();
    assert_eq!(image["image_blake3"], common::blake3_hex(&common::image(1, &blocks)));
    let out = dir.path().join("out");
    let archive = format!("s3://{bucket}/{prefix}.p1.tar.zst");
    a.bunker(&["restore", &archive, "--path", "etc/motd", "--to-dir", out.to_str().unwrap()]).ok_json_or_code(0);
    assert_eq!(std::fs::read(out.join("etc/motd")).unwrap(), b"vault files\n");

    let files = config(
        dir.path(),
        &format!("export.to = \"s3://{bucket}/g\"\nexport.delete_source = true\nexport.ebs_format = \"files\""),
        "",
    );
    let r = a.bunker(&["--json", "--config", &files, "export", "recovery-point", &noise_point, "--vault", VAULT]);
    assert_ne!(r.code, 0, "{r:#?}");
    assert!(r.stdout.contains("export.ebs_format = image") || r.stderr.contains("export.ebs_format = image"), "{r:#?}");
    assert_eq!(point_status(&backup, &noise_point).await.as_deref(), Some("COMPLETED"), "kept");
}

/// `export.mount = true` for vault points: an EBS recovery point of an XFS volume is exported
/// through a temporary volume (created from the point's snapshot in this instance's zone,
/// attached, mounted read-only, archived, removed), the archive extracts to the tree, and only
/// then is the point deleted.
#[tokio::test(flavor = "multi_thread")]
async fn an_xfs_point_is_exported_through_a_temporary_volume_then_deleted() {
    let a = Account::new("430000000022").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), b"xfs in a vault\n").unwrap();
    std::fs::write(tree.join("data.bin"), common::noise(43, 3 << 20)).unwrap();
    let blocks = common::xfs_image(dir.path(), &tree);
    let (backup, _, _) = vault_with_volume(&a, 42).await;
    let snap = a.write_snapshot(1, None, &blocks).await;
    let vol = a.ec2().await.create_volume().snapshot_id(&snap).size(1).availability_zone(format!("{REGION}a")).send();
    let volume = format!("arn:aws:ec2:{REGION}:{}:volume/{}", a.id, vol.await.unwrap().volume_id.unwrap());
    let point = start_job(&backup, &volume).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let devices = dir.path().join("by-id");
    common::this_instance(&a, &devices).await;
    let bucket = a.bucket("vault-xfs").await;
    let extra = format!(
        "export.to = \"s3://{bucket}/x\"\nexport.delete_source = true\nexport.ebs_format = \"files\"\nexport.mount = true"
    );
    let cfg = config(dir.path(), &extra, "");
    let args = ["--json", "--config", &cfg, "export", "recovery-point", &point, "--vault", VAULT];
    let r = a.bunker_on_instance(&args, &devices, &dir.path().join("state"));
    assert_eq!(r.json()["state"], "done", "{r:#?}");
    assert_eq!(point_status(&backup, &point).await, None, "deleted once the files verified");
    let id = point.rsplit('/').next().unwrap();
    let prefix = format!("x/recovery-points/{VAULT}/{id}");
    let index: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("{prefix}.files.json")).await).unwrap();
    assert_eq!(
        (index["filesystems"][0]["type"].as_str(), index["recovery_point"]["arn"].as_str()),
        (Some("xfs"), Some(point.as_str()))
    );
    let out = dir.path().join("out");
    let archive = format!("s3://{bucket}/{prefix}.tar.zst");
    a.bunker(&["restore", &archive, "--to-dir", out.to_str().unwrap()]).ok_json_or_code(0);
    for f in ["etc/motd", "data.bin"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(tree.join(f)).unwrap(), "{f}");
    }
    let history = common::device_history(&a);
    assert_eq!(history["attached"].as_array().unwrap().len(), 1, "{history:#}");
    assert_eq!(history["attached"], history["deleted"], "the temporary volume went: {history:#}");
}
