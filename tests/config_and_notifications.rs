//! Bad configuration is an error naming key, value and origin (exit 2, nothing done), a bad
//! resource tag fails only that resource; notifications reach SNS, one run report per run.

mod common;

use common::{tag_values, Account, REGION};

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[tokio::test]
async fn bad_file_env_and_flag_values_exit_2_naming_key_value_and_origin() {
    let a = Account::new("400000000001").await;
    a.volume(&[("bunker:create_backup", "true")]).await;
    let file = write_config("keep_daily = \"fourteen\"\n");
    let path = file.path().to_str().unwrap();
    let r = a.bunker(&["ebs", "create-backups", "--config", path]);
    assert_eq!(r.code, 2, "{r:#?}");
    for needle in ["keep_daily", "fourteen", path, "whole number"] {
        assert!(r.stderr.contains(needle), "{needle:?} not in {}", r.stderr);
    }
    let file = write_config("keep_dayly = 3\n");
    let r = a.bunker(&["ebs", "create-backups", "--config", file.path().to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("did you mean \"keep_daily\""), "{}", r.stderr);
    let r = a.bunker_with(&["ebs", "create-backups"], &[("BUNKER_COPY_TAGS", "yes")]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("BUNKER_COPY_TAGS") && r.stderr.contains("\"yes\""), "{}", r.stderr);
    let r = a.bunker_with(&["ebs", "create-backups"], &[("shelvery_keep_weekly_backups", "-1")]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("shelvery_keep_weekly_backups"), "{}", r.stderr);
    let r = a.bunker(&["ebs", "create-backups", "--now", "yesterday"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--now") && r.stderr.contains("yesterday"), "{}", r.stderr);
    let r = a.bunker(&["ebs", "create-backups", "--config", "/nonexistent/bunker.toml"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("/nonexistent/bunker.toml"), "{}", r.stderr);
    let r = a.bunker(&["s3", "create-backups"]);
    assert_eq!(r.code, 2);
    assert!(a.snapshots().await.is_empty(), "no run with a config error did anything");
}

#[tokio::test]
async fn a_bad_tag_fails_that_resource_only_and_a_config_error_deletes_nothing() {
    let a = Account::new("400000000002").await;
    let good = a.volume(&[("bunker:create_backup", "true"), ("bunker:config:keep_yearly", "4")]).await;
    let bad = a.volume(&[("bunker:create_backup", "true"), ("bunker:config:keep_daily", "lots")]).await;
    let r = a.bunker(&["ebs", "create-backups", "--now", "2037-11-18T01:00:00Z", "--json"]);
    assert_eq!(r.code, 1, "partial failure: {r:#?}");
    let report = r.json();
    assert_eq!(report["status"], "PARTIAL");
    assert_eq!(report["entries"][0]["resource_id"], bad.as_str(), "failures first");
    let msg = report["entries"][0]["message"].as_str().unwrap();
    assert!(msg.contains("keep_daily") && msg.contains("lots") && msg.contains(&bad), "{msg}");
    assert_eq!(tag_values(&a.snapshots().await, "bunker:source"), [good.as_str()]);

    a.bunker(&["ebs", "create-backups", "--now", "2037-11-19T01:00:00Z"]);
    assert_eq!(a.snapshots().await.len(), 2);
    // A bad global value: exit 2 before anything is listed or deleted.
    let r = a.bunker_with(&["ebs", "clean-backups", "--now", "2038-01-01T00:00:00Z"], &[("BUNKER_KEEP_DAILY", "1d")]);
    assert_eq!(r.code, 2);
    assert_eq!(a.snapshots().await.len(), 2);
    // config show names every layer.
    let file = write_config("keep_weekly = 3\n");
    let r = a.bunker_with(
        &[
            "config",
            "show",
            "--json",
            "--config",
            file.path().to_str().unwrap(),
            "--resource",
            &bad,
            "--region",
            REGION,
        ],
        &[("BUNKER_KEEP_MONTHLY", "2")],
    );
    assert_eq!(r.code, 2, "the resource's own tag is invalid: {r:#?}");
    let r = a.bunker_with(
        &["config", "show", "--json", "--config", file.path().to_str().unwrap(), "--resource", &good],
        &[("BUNKER_KEEP_MONTHLY", "2")],
    );
    let shown = r.ok_json();
    let layer = |k: &str| shown.as_array().unwrap().iter().find(|s| s["key"] == k).unwrap()["source"]["layer"].clone();
    assert_eq!(layer("keep_daily"), "default");
    assert_eq!(layer("keep_weekly"), "file");
    assert_eq!(layer("keep_monthly"), "env");
    assert_eq!(layer("keep_yearly"), "resource-tag");
    assert!(shown.as_array().unwrap().iter().all(|s| s["key"] != "sns_topic"), "unset keys are not shown as values");
}

#[tokio::test]
async fn notifications_one_per_operation_errors_to_error_topic_one_run_report() {
    let a = Account::new("400000000003").await;
    let sdk = a.sdk(REGION).await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let mut topics = vec![];
    let mut queues = vec![];
    for name in ["ops", "errors", "status"] {
        let topic = sns.create_topic().name(name).send().await.unwrap().topic_arn.unwrap();
        let queue = sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap();
        let arn = format!("arn:aws:sqs:{REGION}:{}:{name}", a.id);
        sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(arn).send().await.unwrap();
        topics.push(topic);
        queues.push(queue);
    }
    a.volume(&[("bunker:create_backup", "true")]).await;
    a.volume(&[("bunker:create_backup", "true")]).await;
    a.volume(&[("bunker:create_backup", "true"), ("bunker:config:copy_tags", "maybe")]).await;
    let file = write_config(&format!(
        "sns_topic = \"{}\"\nerror_sns_topic = \"{}\"\nstatus_sns_topic = \"{}\"\n",
        topics[0], topics[1], topics[2]
    ));
    let r = a.bunker(&["ebs", "create-backups", "--config", file.path().to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 1, "{r:#?}");

    let mut received = vec![];
    for q in &queues {
        let mut bodies = vec![];
        loop {
            let out = sqs.receive_message().queue_url(q).max_number_of_messages(10).send().await.unwrap();
            if out.messages().is_empty() {
                break;
            }
            for m in out.messages() {
                let envelope: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
                bodies.push(serde_json::from_str::<serde_json::Value>(envelope["Message"].as_str().unwrap()).unwrap());
                sqs.delete_message().queue_url(q).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
            }
        }
        received.push(bodies);
    }
    let (ops, errors, status) = (&received[0], &received[1], &received[2]);
    assert_eq!(ops.len(), 3, "one per operation: {ops:#?}");
    assert!(ops.iter().all(|m| m["schema"] == "bunker.operation/1" && m["operation"] == "CreateBackup"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["status"], "ERROR");
    assert!(errors[0]["message"].as_str().unwrap().contains("maybe"));
    assert_eq!(status.len(), 1, "exactly one run report");
    assert_eq!(status[0]["schema"], "bunker.run-report/1");
    assert_eq!(status[0]["status"], "PARTIAL");
    assert_eq!(status[0]["summary"]["succeeded"], 2);
    assert_eq!(status[0]["summary"]["failed"], 1);
}
