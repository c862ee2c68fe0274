//! `bunker doctor` against the emulator: a good setup passes (exit 0, every row OK), and each
//! fault injected alone fails (or warns on) exactly its own row, with exit 1 on a FAIL.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_dynamodb::types::ScalarAttributeType;
use aws_sdk_dynamodb::types::{AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, DefaultRetention, ExpirationStatus, LifecycleRule,
    LifecycleRuleFilter, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use aws_sdk_sqs::types::QueueAttributeName;
use common::{Account, Run, REGION};

const DR: &str = "eu-west-1";
const SHARE: &str = "500000000099";

/// Everything a good config names, made the way the CloudFormation stack makes it.
struct Setup {
    queue: String,
    dlq: String,
    topic: String,
    table: String,
    bucket: String,
    archive_key: String,
    dr_key: String,
    share_key: String,
}

async fn table(a: &Account, name: &str, key: &str) {
    let ddb = aws_sdk_dynamodb::Client::new(&a.sdk(REGION).await);
    ddb.create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name(key).attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name(key).key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
}

fn share_policy(owner: &str, share: &str) -> String {
    serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{owner}:root")}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": [format!("arn:aws:iam::{share}:root")]},
         "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant", "kms:ReEncrypt*"], "Resource": "*"}]})
    .to_string()
}

/// A bucket with Object Lock (COMPLIANCE, 30 days), SSE-KMS under `key` with S3 Bucket Key,
/// and a lifecycle rule aborting incomplete uploads after 7 days.
async fn locked_bucket(a: &Account, name: &str, key: &str) {
    let s3 = a.s3().await;
    s3.create_bucket().bucket(name).object_lock_enabled_for_bucket(true).send().await.unwrap();
    let retention = DefaultRetention::builder().mode(ObjectLockRetentionMode::Compliance).days(30).build();
    s3.put_object_lock_configuration()
        .bucket(name)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(ObjectLockRule::builder().default_retention(retention).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::AwsKms)
        .kms_master_key_id(key)
        .build()
        .unwrap();
    let rule =
        ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(default).bucket_key_enabled(true);
    s3.put_bucket_encryption()
        .bucket(name)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder().rules(rule.build()).build().unwrap(),
        )
        .send()
        .await
        .unwrap();
    let abort = AbortIncompleteMultipartUpload::builder().days_after_initiation(7).build();
    let lifecycle = LifecycleRule::builder()
        .id("abort-uploads")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .abort_incomplete_multipart_upload(abort)
        .build()
        .unwrap();
    s3.put_bucket_lifecycle_configuration()
        .bucket(name)
        .lifecycle_configuration(BucketLifecycleConfiguration::builder().rules(lifecycle).build().unwrap())
        .send()
        .await
        .unwrap();
}

async fn setup(a: &Account) -> Setup {
    let sqs = aws_sdk_sqs::Client::new(&a.sdk(REGION).await);
    let dlq = sqs.create_queue().queue_name("doctor-dlq").send().await.unwrap().queue_url.unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).to_string();
    let queue = sqs
        .create_queue()
        .queue_name("doctor-events")
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let archive_key = a.kms_key(REGION, None).await;
    let sns = aws_sdk_sns::Client::new(&a.sdk(REGION).await);
    let topic = sns
        .create_topic()
        .name("doctor-errors")
        .attributes("KmsMasterKeyId", &archive_key)
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    table(a, "doctor-leases", "pk").await;
    let backup = aws_sdk_backup::Client::new(&a.sdk(REGION).await);
    backup.create_backup_vault().backup_vault_name("doctor-vault").send().await.unwrap();
    let bucket = format!("doctor-archive-{}", a.id);
    locked_bucket(a, &bucket, &archive_key).await;
    let dr_key = a.kms_key(DR, None).await;
    let share_key = a.kms_key(REGION, Some(share_policy(&a.id, SHARE))).await;
    a.volume(&[("bunker:create_backup", "true")]).await;
    Setup { queue, dlq, topic, table: "doctor-leases".into(), bucket, archive_key, dr_key, share_key }
}

fn config(s: &Setup, changes: &[(&str, String)]) -> String {
    let mut keys: BTreeMap<&str, String> = [
        ("regions", format!("[\"{REGION}\"]")),
        ("dr_regions", format!("[\"{DR}\"]")),
        ("share_accounts", format!("[\"{SHARE}\"]")),
        ("dr_kms_keys", format!("\"{DR}={}\"", s.dr_key)),
        ("share_kms_keys", format!("\"{REGION}={}\"", s.share_key)),
        ("error_sns_topic", format!("\"{}\"", s.topic)),
        ("serve.queue_url", format!("\"{}\"", s.queue)),
        ("serve.dead_letter_queue_url", format!("\"{}\"", s.dlq)),
        ("serve.lease_table", format!("\"{}\"", s.table)),
        ("serve.kinds", "\"ebs\"".into()),
        ("export.to", format!("\"s3://{}/archives\"", s.bucket)),
        ("export.vaults", "[\"doctor-vault\"]".into()),
        ("export.kms_key", format!("\"{}\"", s.archive_key)),
        ("export.object_lock_days", "30".into()),
        ("events.bus", "\"default\"".into()),
    ]
    .into_iter()
    .collect();
    for (k, v) in changes {
        keys.insert(k, v.clone());
    }
    keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
}

/// Runs doctor with `config`; returns the run and each row's status by check.
fn doctor(a: &Account, dir: &Path, config: &str, env: &[(&str, &str)]) -> (Run, BTreeMap<String, String>) {
    let path = dir.join("bunker.toml");
    std::fs::write(&path, config).unwrap();
    let r = a.bunker_with(&["doctor", "--json", "--config", path.to_str().unwrap()], env);
    let report = r.json();
    let rows = report["rows"].as_array().unwrap_or_else(|| panic!("no rows: {r:#?}"));
    let statuses = rows
        .iter()
        .map(|row| (row["check"].as_str().unwrap().to_string(), row["status"].as_str().unwrap().to_string()))
        .collect();
    (r, statuses)
}

/// The rows that are not OK.
fn not_ok(rows: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    rows.iter().filter(|(_, s)| *s != "OK").map(|(c, s)| (c.as_str(), s.as_str())).collect()
}

#[tokio::test]
async fn doctor_passes_a_good_setup_and_names_each_injected_fault() {
    let a = Account::new("500000000001").await;
    let s = setup(&a).await;
    let dir = tempfile::tempdir().unwrap();
    let good = config(&s, &[]);
    let (r, rows) = doctor(&a, dir.path(), &good, &[]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(not_ok(&rows).is_empty(), "{:#?}\n{}", not_ok(&rows), r.stderr);
    for check in [
        "credentials",
        "region eu-west-1",
        "queue serve.queue_url",
        "queue serve.dead_letter_queue_url",
        "topic error_sns_topic",
        "lease table serve.lease_table",
        "deployment id",
        "vault doctor-vault (us-east-1)",
        "key dr_kms_keys.eu-west-1",
        "key share_kms_keys.us-east-1",
        "key export.kms_key.us-east-1",
        "create-backups ebs (dry run)",
        "event bus events.bus",
    ] {
        assert!(rows.contains_key(check), "no row {check}: {rows:#?}");
    }
    for what in ["owner", "encryption", "object lock", "lifecycle", "write"] {
        assert!(rows.contains_key(&format!("bucket {} {what}", s.bucket)), "{rows:#?}");
    }
    // The table form: one line per row, the counts at the end.
    let path = dir.path().join("bunker.toml");
    let text = a.bunker(&["doctor", "--config", path.to_str().unwrap()]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.ends_with(&format!("{} OK, 0 WARN, 0 FAIL\n", rows.len())), "{}", text.stdout);

    let faults = faults(&a, &s).await;
    for (what, changes, expected) in faults {
        let env: &[(&str, &str)] = if what.contains("missing tools") { &[("PATH", NO_TOOLS)] } else { &[] };
        let (r, rows) = doctor(&a, dir.path(), &config(&s, &changes), env);
        let expected: BTreeMap<&str, &str> = expected.iter().map(|(c, st)| (c.as_str(), *st)).collect();
        assert_eq!(not_ok(&rows), expected, "fault: {what}\n{}", r.stdout);
        let fails = expected.values().any(|s| *s == "FAIL");
        assert_eq!(r.code, if fails { 1 } else { 0 }, "fault: {what}: {r:#?}");
    }
}

type Fault = (&'static str, Vec<(&'static str, String)>, Vec<(String, &'static str)>);

/// A PATH without the dump tools (bunker doctor needs nothing else from PATH).
const NO_TOOLS: &str = "/nonexistent";

/// Each fault as config changes (the emulator state stays good) and the rows it must touch.
async fn faults(a: &Account, s: &Setup) -> Vec<Fault> {
    let b = |what: &str| format!("bucket {} {what}", s.bucket);
    let other = Account::new("500000000002").await;
    let foreign = other.bucket("doctor-foreign").await;
    let plain = format!("doctor-plain-{}", a.id);
    a.s3().await.create_bucket().bucket(&plain).send().await.unwrap();
    let disabled = a.kms_key(DR, None).await;
    aws_sdk_kms::Client::new(&a.sdk(DR).await)
        .disable_key()
        .key_id(disabled.rsplit('/').next().unwrap())
        .send()
        .await
        .unwrap();
    let unshared = a.kms_key(REGION, None).await;
    table(a, "doctor-wrong-key", "id").await;
    let q = |v: &str| format!("\"{v}\"");
    vec![
        (
            "a missing queue",
            vec![("serve.queue_url", q(&s.queue.replace("doctor-events", "nope")))],
            vec![("queue serve.queue_url".into(), "FAIL")],
        ),
        (
            "a missing dead-letter queue",
            vec![("serve.dead_letter_queue_url", q(&s.dlq.replace("doctor-dlq", "nope")))],
            vec![("queue serve.dead_letter_queue_url".into(), "FAIL")],
        ),
        (
            "a missing topic",
            vec![("error_sns_topic", q(&s.topic.replace("doctor-errors", "nope")))],
            vec![("topic error_sns_topic".into(), "FAIL")],
        ),
        (
            "a lease table with another key",
            vec![("serve.lease_table", q("doctor-wrong-key"))],
            vec![
                ("lease table serve.lease_table".into(), "FAIL"),
                // The install record cannot be written under key "pk" either.
                ("deployment id".into(), "FAIL"),
            ],
        ),
        (
            "a missing vault",
            vec![("export.vaults", "[\"nope\"]".into())],
            vec![("vault nope (us-east-1)".into(), "FAIL")],
        ),
        (
            "a bucket of another account",
            vec![("export.to", q(&format!("s3://{foreign}/x"))), ("export.kms_key", q(""))],
            {
                let f = |w: &str| format!("bucket {foreign} {w}");
                ["owner", "encryption", "object lock", "lifecycle", "write"].map(|w| (f(w), "FAIL")).to_vec()
            },
        ),
        (
            "another key than the bucket's",
            vec![("export.kms_key", q(&s.dr_key))],
            vec![
                (b("encryption"), "FAIL"),
                // export.kms_key is checked as a key of the service's region too.
                ("key export.kms_key.us-east-1".into(), "FAIL"),
            ],
        ),
        (
            "a retention shorter than required",
            vec![("export.object_lock_days", "60".into())],
            vec![(b("object lock"), "FAIL")],
        ),
        (
            "a plain bucket",
            vec![
                ("export.to", q(&format!("s3://{plain}/x"))),
                ("export.kms_key", q("")),
                ("export.object_lock_days", "0".into()),
            ],
            {
                let f = |w: &str| format!("bucket {plain} {w}");
                vec![(f("encryption"), "WARN"), (f("object lock"), "WARN"), (f("lifecycle"), "WARN")]
            },
        ),
        (
            "a disabled DR key",
            vec![("dr_kms_keys", q(&format!("{DR}={disabled}")))],
            vec![("key dr_kms_keys.eu-west-1".into(), "FAIL")],
        ),
        (
            "a share key the share account may not use",
            vec![("share_kms_keys", q(&format!("{REGION}={unshared}")))],
            vec![("key share_kms_keys.us-east-1".into(), "FAIL")],
        ),
        (
            "a region that does not answer",
            vec![("dr_regions", "[\"ap-nowhere-9\"]".into()), ("dr_kms_keys", q(""))],
            vec![("region ap-nowhere-9".into(), "FAIL")],
        ),
        ("a missing event bus", vec![("events.bus", q("nope"))], vec![("event bus events.bus".into(), "FAIL")]),
        ("dump tools on PATH", vec![("export.rds_format", q("dump"))], vec![]),
        (
            "missing tools",
            vec![("export.rds_format", q("dump"))],
            vec![("tool pg_dump".into(), "FAIL"), ("tool mariadb-dump".into(), "FAIL")],
        ),
    ]
}

#[tokio::test]
async fn doctor_names_a_clashing_install_a_failing_dry_run_and_missing_credentials() {
    let a = Account::new("500000000003").await;
    let s = setup(&a).await;
    let dir = tempfile::tempdir().unwrap();
    let good = config(&s, &[]);
    // Another host, running, recorded this deployment id with another configuration 10 minutes ago.
    let ddb = aws_sdk_dynamodb::Client::new(&a.sdk(REGION).await);
    // The harness sets BUNKER_DEPLOYMENT=bunker-{account}-{region}.
    let id = format!("install#bunker-{}-{REGION}", a.id);
    let seen = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(10);
    ddb.put_item()
        .table_name(&s.table)
        .item("pk", AttributeValue::S(id.clone()))
        .item("fingerprint", AttributeValue::S("0000000000000000".into()))
        .item("host", AttributeValue::S("other-host".into()))
        .item("seen", AttributeValue::S(seen.to_string()))
        .send()
        .await
        .unwrap();
    let (r, rows) = doctor(&a, dir.path(), &good, &[]);
    assert_eq!(not_ok(&rows), BTreeMap::from([("deployment id", "FAIL")]), "{}", r.stdout);
    assert_eq!(r.code, 1);
    assert!(r.json()["rows"].to_string().contains("other-host"), "{}", r.stdout);
    // Gone for two hours (a replaced instance): no clash, and this install takes the record.
    let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2)).to_string();
    ddb.put_item()
        .table_name(&s.table)
        .item("pk", AttributeValue::S(id.clone()))
        .item("fingerprint", AttributeValue::S("0000000000000000".into()))
        .item("host", AttributeValue::S("other-host".into()))
        .item("seen", AttributeValue::S(old))
        .send()
        .await
        .unwrap();
    let (r, rows) = doctor(&a, dir.path(), &good, &[]);
    assert_eq!(rows["deployment id"], "OK", "{}", r.stdout);
    let record = ddb.get_item().table_name(&s.table).key("pk", AttributeValue::S(id.clone())).send().await.unwrap();
    let host = record.item().unwrap()["host"].as_s().unwrap().clone();
    assert_ne!(host, "other-host", "the gone install's record was replaced");
    ddb.delete_item().table_name(&s.table).key("pk", AttributeValue::S(id)).send().await.unwrap();

    // A resource whose tag today's create would refuse.
    let bad = a.volume(&[("bunker:create_backup", "true"), ("bunker:config:keep_daily", "lots")]).await;
    let (r, rows) = doctor(&a, dir.path(), &good, &[]);
    assert_eq!(not_ok(&rows), BTreeMap::from([("create-backups ebs (dry run)", "FAIL")]), "{}", r.stdout);
    assert!(r.stdout.contains(&bad) && r.stdout.contains("keep_daily"), "{}", r.stdout);
    a.ec2().await.delete_volume().volume_id(&bad).send().await.unwrap();

    // AWS unreachable with these credentials: the credentials row fails first.
    a.outage(true);
    let (r, rows) = doctor(&a, dir.path(), &good, &[]);
    a.outage(false);
    assert_eq!(rows["credentials"], "FAIL", "{}", r.stdout);
    assert_eq!(r.code, 1);
}
