//! Retention rules and ownership against the emulator.

mod common;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use common::{tag_values, Account, REGION};

#[tokio::test]
async fn keep_zero_falls_back_to_the_next_lower_type_then_skips() {
    let a = Account::new("300000000001").await;
    let vol = a.volume(&[("bunker:create_backup", "true")]).await;
    // 2037-11-01 is a Sunday and the 1st: monthly, with monthly and weekly off → daily.
    let r = a.bunker_with(
        &["ebs", "create-backups", "--now", "2037-11-01T01:00:00Z", "--json"],
        &[("BUNKER_KEEP_MONTHLY", "0"), ("BUNKER_KEEP_WEEKLY", "0")],
    );
    assert_eq!(r.ok_json()["entries"][0]["retention"], "daily");
    assert_eq!(tag_values(&a.snapshots().await, "bunker:retention"), ["daily"]);
    // Everything off: the resource is skipped, reported, and nothing is created.
    let zero = [
        ("BUNKER_KEEP_DAILY", "0"),
        ("BUNKER_KEEP_WEEKLY", "0"),
        ("BUNKER_KEEP_MONTHLY", "0"),
        ("BUNKER_KEEP_YEARLY", "0"),
    ];
    let report = a.bunker_with(&["ebs", "create-backups", "--now", "2037-11-02T01:00:00Z", "--json"], &zero).ok_json();
    assert_eq!(report["summary"]["skipped"], 1);
    assert_eq!(report["entries"][0]["status"], "SKIPPED");
    assert_eq!(report["entries"][0]["resource_id"], vol);
    assert_eq!(a.snapshots().await.len(), 1);
}

#[tokio::test]
async fn custom_retention_types_bunker_and_shelvery_spellings() {
    let a = Account::new("300000000002").await;
    a.volume(&[("bunker:create_backup", "true")]).await;
    let bunker_env = [("BUNKER_CUSTOM_RETENTION", "hourly:2h")];
    let shelvery_env =
        [("shelvery_custom_retention_types", "hourly:7200"), ("shelvery_current_retention_type", "hourly")];
    a.bunker_with(&["ebs", "create-backups", "--retention", "hourly", "--now", "2037-11-21T10:00:00Z"], &bunker_env);
    a.bunker_with(&["ebs", "create-backups", "--now", "2037-11-21T11:00:00Z"], &shelvery_env);
    a.bunker_with(&["ebs", "create-backups", "--retention", "hourly", "--now", "2037-11-21T12:00:00Z"], &bunker_env);
    assert_eq!(tag_values(&a.snapshots().await, "bunker:retention"), ["hourly", "hourly", "hourly"]);
    // At 12:30 the 10:00 one is 2.5 h old (expired), the 11:00 one 1.5 h (kept).
    let report =
        a.bunker_with(&["ebs", "clean-backups", "--now", "2037-11-21T12:30:00Z", "--json"], &bunker_env).ok_json();
    assert_eq!(report["summary"]["succeeded"], 1, "{report:#}");
    assert_eq!(tag_values(&a.snapshots().await, "bunker:created_at"), ["2037-11-21T11:00:00Z", "2037-11-21T12:00:00Z"]);
    // An undefined custom type is a usage error, before anything is done.
    let r = a.bunker(&["ebs", "create-backups", "--retention", "minutely"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("minutely") && r.stderr.contains("--retention"), "{}", r.stderr);
}

#[tokio::test]
async fn per_resource_override_survives_deletion_of_the_resource() {
    let a = Account::new("300000000003").await;
    let long = a.volume(&[("bunker:create_backup", "true"), ("bunker:config:keep_daily", "30")]).await;
    let short = a.volume(&[("bunker:create_backup", "true")]).await;
    let env = [("BUNKER_KEEP_DAILY", "1")];
    for day in ["2037-11-17", "2037-11-18"] {
        a.bunker_with(&["ebs", "create-backups", "--now", &format!("{day}T01:00:00Z")], &env).ok_json_or_code(0);
    }
    let snaps = a.snapshots().await;
    assert!(snaps.values().filter(|t| t["bunker:source"] == long).all(|t| t["bunker:config:keep_daily"] == "30"));
    let ec2 = a.ec2().await;
    for v in [&long, &short] {
        ec2.delete_volume().volume_id(v).send().await.unwrap();
    }
    // Ten days on: the short-lived volume's backups are gone, the 30-day ones remain.
    a.bunker_with(&["ebs", "clean-backups", "--now", "2037-11-28T00:00:00Z"], &env).ok_json_or_code(0);
    let sources = tag_values(&a.snapshots().await, "bunker:source").into_iter().map(String::from).collect::<Vec<_>>();
    assert_eq!(sources, [long.clone(), long.clone()]);
    // Past 30 days they go too.
    a.bunker_with(&["ebs", "clean-backups", "--now", "2037-12-19T00:00:00Z"], &env).ok_json_or_code(0);
    assert!(a.snapshots().await.is_empty());
}

async fn foreign_snapshot(a: &Account, volume: &str, tags: &[(&str, &str)]) -> String {
    let mut req = a.ec2().await.create_snapshot().volume_id(volume);
    if !tags.is_empty() {
        let tags: Vec<Tag> = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect();
        req = req.tag_specifications(
            TagSpecification::builder().resource_type(ResourceType::Snapshot).set_tags(Some(tags)).build(),
        );
    }
    req.send().await.unwrap().snapshot_id.unwrap()
}

#[tokio::test]
async fn foreign_backups_are_never_deleted_and_shelvery_ones_only_with_compat() {
    let a = Account::new("300000000004").await;
    let vol = a.volume(&[("bunker:create_backup", "true")]).await;
    let acct = a.id.clone();
    let untagged = foreign_snapshot(&a, &vol, &[]).await;
    let other_deployment = foreign_snapshot(
        &a,
        &vol,
        &[
            ("bunker:managed", "true"),
            ("bunker:deployment", "someone-else"),
            ("bunker:kind", "ebs"),
            ("bunker:source", &vol),
            ("bunker:created_at", "2020-01-01T00:00:00Z"),
            ("bunker:retention", "daily"),
        ],
    )
    .await;
    let shelvery_tags = [
        ("shelvery:backup", "true"),
        ("shelvery:date_created", "2020-01-02-0100"),
        ("shelvery:retention_type", "daily"),
        ("shelvery:entity_id", vol.as_str()),
        ("shelvery:region", REGION),
        ("shelvery:src_account", acct.as_str()),
        ("shelvery:name", "data-2020-01-02-0100-daily"),
    ];
    let shelvery = foreign_snapshot(&a, &vol, &shelvery_tags).await;
    // Shelvery's tags without the proof of origin (region, source account): never adopted.
    let unproven_tags: Vec<(&str, &str)> = shelvery_tags
        .iter()
        .copied()
        .filter(|(k, _)| !matches!(*k, "shelvery:region" | "shelvery:src_account"))
        .collect();
    let unproven = foreign_snapshot(&a, &vol, &unproven_tags).await;
    let broken = foreign_snapshot(&a, &vol, &[("bunker:managed", "true"), ("bunker:kind", "ebs")]).await;
    let ours = a.bunker(&["ebs", "create-backups", "--now", "2037-11-21T01:00:00Z", "--json"]).ok_json();
    let ours = ours["entries"][0]["backup_id"].as_str().unwrap().to_string();

    let zero = [("BUNKER_KEEP_DAILY", "0")];
    let report = a.bunker_with(&["ebs", "clean-backups", "--now", "2041-01-01T00:00:00Z", "--json"], &zero);
    assert_eq!(report.code, 0, "{report:#?}");
    let report = report.json();
    // The unreadable one is reported and left alone; nothing foreign is touched.
    assert!(report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["backup_id"] == broken.as_str() && e["status"] == "SKIPPED"));
    let left: Vec<String> = a.snapshots().await.into_keys().collect();
    for id in [&untagged, &other_deployment, &shelvery, &broken, &ours, &unproven] {
        assert!(left.contains(id), "{id} must survive: {left:?}");
    }

    // compat.shelvery: Shelvery's backup is adopted (listed as such, and cleaned when expired).
    let compat = [("BUNKER_KEEP_DAILY", "0"), ("BUNKER_COMPAT_SHELVERY", "true")];
    let listed = a.bunker_with(&["ebs", "list-backups", "--json"], &compat).ok_json();
    let adopted: Vec<&serde_json::Value> =
        listed.as_array().unwrap().iter().filter(|b| b["owner"] == "shelvery").collect();
    assert_eq!(adopted.len(), 1);
    assert_eq!(adopted[0]["id"], shelvery.as_str());
    assert_eq!(adopted[0]["created_at"], "2020-01-02T01:00:00Z");
    let r = a.bunker_with(&["ebs", "clean-backups", "--now", "2041-01-01T00:00:00Z", "--json"], &compat).ok_json();
    assert_eq!(r["summary"]["succeeded"], 1, "{r:#}");
    let left: Vec<String> = a.snapshots().await.into_keys().collect();
    assert!(!left.contains(&shelvery));
    for id in [&untagged, &other_deployment, &broken, &ours, &unproven] {
        assert!(left.contains(id), "{id} must survive compat clean: {left:?}");
    }
}

#[tokio::test]
async fn shelvery_selector_only_with_compat() {
    let a = Account::new("300000000005").await;
    a.volume(&[("shelvery:create_backup", "True")]).await;
    let r = a.bunker(&["ebs", "create-backups", "--json"]).ok_json();
    assert_eq!(r["summary"]["collected"], 0);
    let r = a.bunker_with(&["ebs", "create-backups", "--json"], &[("BUNKER_COMPAT_SHELVERY", "1")]).ok_json();
    assert_eq!(r["summary"]["succeeded"], 1);
    assert_eq!(a.snapshots().await.len(), 1);
}

#[tokio::test]
async fn select_narrows_a_run_to_one_resource_and_dry_run_changes_nothing() {
    let a = Account::new("300000000006").await;
    let one = a.volume(&[("bunker:create_backup", "true")]).await;
    a.volume(&[("bunker:create_backup", "true")]).await;
    let r = a.bunker(&["ebs", "create-backups", "--dry-run", "--json"]).ok_json();
    assert_eq!(r["summary"]["succeeded"], 2);
    assert_eq!(r["entries"][0]["status"], "PLANNED");
    assert!(a.snapshots().await.is_empty(), "dry run created nothing");
    a.bunker(&["ebs", "create-backups", "--select", &one]).ok_json_or_code(0);
    assert_eq!(tag_values(&a.snapshots().await, "bunker:source"), [one.as_str()]);
    let r = a.bunker(&["ebs", "create-backups", "--select", "vol-nonexistent", "--json"]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stdout.contains("vol-nonexistent"));
}

#[tokio::test]
async fn one_run_covers_several_regions_with_shelvery_spellings() {
    let a = Account::new("300000000007").await;
    let mut volumes = vec![];
    for region in ["us-east-1", "eu-west-1"] {
        let ec2 = aws_sdk_ec2::Client::new(&a.sdk(region).await);
        let tag = Tag::builder().key("bunker:create_backup").value("true").build();
        let spec = TagSpecification::builder().resource_type(ResourceType::Volume).tags(tag).build();
        let v = ec2
            .create_volume()
            .availability_zone(format!("{region}a"))
            .size(1)
            .tag_specifications(spec)
            .send()
            .await
            .unwrap();
        volumes.push((region, ec2, v.volume_id.unwrap()));
    }
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), "regions = [\"us-east-1\", \"eu-west-1\"]\n").unwrap();
    let config = file.path().to_str().unwrap();
    let report = a.bunker(&["ebs", "create_backups", "--config", config, "--json"]).ok_json();
    assert_eq!(report["regions"], serde_json::json!(["us-east-1", "eu-west-1"]));
    assert_eq!(report["summary"]["succeeded"], 2);
    for (region, ec2, volume) in &volumes {
        let snaps = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
        let sources: Vec<String> = snaps
            .snapshots()
            .iter()
            .flat_map(|s| s.tags())
            .filter(|t| t.key() == Some("bunker:source"))
            .map(|t| t.value().unwrap().to_string())
            .collect();
        assert_eq!(sources.as_slice(), std::slice::from_ref(volume), "one backup in {region}");
        let deployment = snaps.snapshots()[0]
            .tags()
            .iter()
            .find(|t| t.key() == Some("bunker:deployment"))
            .unwrap()
            .value()
            .unwrap()
            .to_string();
        assert_eq!(deployment, format!("bunker-{}-{region}", a.id));
    }
    // --region narrows to one region; rds_cluster is Shelvery's spelling of rds-cluster.
    let listed = a.bunker(&["ebs", "list_backups", "--region", "eu-west-1", "--json"]).ok_json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["region"], "eu-west-1");
    assert_eq!(a.bunker(&["rds_cluster", "list-backups", "--json"]).ok_json(), serde_json::json!([]));
}

/// Issue 9.1: one backup dated in the future (a host whose clock ran ahead) must not take the
/// "newest of a live resource" protection from the real ones, and is itself kept and reported.
#[tokio::test]
async fn a_future_dated_backup_does_not_expire_the_real_ones() {
    let a = Account::new("300000000009").await;
    let vol = a.volume(&[("bunker:create_backup", "true")]).await;
    let env = [("BUNKER_KEEP_DAILY", "1")];
    for day in ["2037-01-05", "2037-01-06", "2037-01-07"] {
        a.bunker_with(&["ebs", "create-backups", "--now", &format!("{day}T01:00:00Z")], &env).ok_json_or_code(0);
    }
    // The clock of the host that made this one was a year ahead.
    a.bunker_with(&["ebs", "create-backups", "--now", "2038-01-06T01:00:00Z"], &env).ok_json_or_code(0);
    for clean in ["2037-01-20T02:00:00Z", "2037-02-20T02:00:00Z", "2037-06-01T02:00:00Z"] {
        let r = a.bunker_with(&["ebs", "clean-backups", "--now", clean, "--json"], &env);
        assert_eq!(r.code, 0, "{r:#?}");
        let report = r.json();
        let suspicious: Vec<_> = report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["status"] == "SKIPPED" && e["message"].as_str().unwrap_or("").contains("suspicious"))
            .collect();
        assert_eq!(suspicious.len(), 1, "the future-dated backup is reported: {report:#}");
        assert_eq!(
            tag_values(&a.snapshots().await, "bunker:created_at"),
            ["2037-01-07T01:00:00Z", "2038-01-06T01:00:00Z"],
            "clean at {clean}: the newest real backup of {vol} survives"
        );
    }
    // A clean whose `now` AWS contradicts (before AWS made the backups) deletes nothing.
    a.bunker_with(&["ebs", "create-backups", "--now", "2037-01-08T01:00:00Z"], &env).ok_json_or_code(0);
    let r = a.bunker_with(&["ebs", "clean-backups", "--now", "2020-01-01T00:00:00Z", "--json"], &env);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(a.snapshots().await.len(), 3);
}
