//! The data-bunker pull against the emulator: two source accounts share EBS, AMI, RDS,
//! Aurora and DocumentDB backups with a bunker account, which copies them in with its own ownership, unique
//! names (both sources have a DB `orders` and a cluster `ledger`, so their backup names are
//! equal), and no duplicates on a repeated pull. Cross-account listing and copying go through the emulator plugin (moto
//! alone cannot copy another account's snapshot).

mod common;

use std::collections::BTreeMap;

use common::{Account, REGION};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

async fn rds_db(a: &Account) {
    aws_sdk_rds::Client::new(&a.sdk(REGION).await)
        .create_db_instance()
        .db_instance_identifier("orders")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .master_username("u")
        .master_user_password("password1")
        .allocated_storage(20)
        .tags(aws_sdk_rds::types::Tag::builder().key("bunker:create_backup").value("true").build())
        .send()
        .await
        .unwrap();
}

/// EBS backups (not AMI parts) the account owns: id → tags.
async fn ebs_snapshots(a: &Account) -> BTreeMap<String, BTreeMap<String, String>> {
    a.snapshots().await.into_iter().filter(|(_, t)| !t.contains_key("bunker:ami_part")).collect()
}

/// An EC2 instance and an Aurora cluster, both selected.
async fn more_resources(a: &Account) {
    let sdk = a.sdk(REGION).await;
    a.instance(&[("bunker:create_backup", "true")]).await;
    aws_sdk_rds::Client::new(&sdk)
        .create_db_cluster()
        .db_cluster_identifier("ledger")
        .engine("aurora-postgresql")
        .master_username("u")
        .master_user_password("password1")
        .tags(aws_sdk_rds::types::Tag::builder().key("bunker:create_backup").value("true").build())
        .send()
        .await
        .unwrap();
    aws_sdk_docdb::Client::new(&sdk)
        .create_db_cluster()
        .db_cluster_identifier("catalog")
        .engine("docdb")
        .master_username("u")
        .master_user_password("password1")
        .tags(aws_sdk_docdb::types::Tag::builder().key("bunker:create_backup").value("true").build())
        .send()
        .await
        .unwrap();
}

/// `bunker:pulled_from` of every AMI and cluster snapshot the account owns.
async fn pulled_images_and_clusters(a: &Account) -> (Vec<String>, Vec<String>) {
    let sdk = a.sdk(REGION).await;
    let images = aws_sdk_ec2::Client::new(&sdk).describe_images().owners("self").send().await.unwrap();
    let from = |k: Option<&str>, v: Option<&str>| (k == Some("bunker:pulled_from")).then(|| v.unwrap().to_string());
    let mut amis: Vec<String> =
        images.images().iter().flat_map(|i| i.tags().iter().filter_map(|t| from(t.key(), t.value()))).collect();
    let snaps =
        aws_sdk_rds::Client::new(&sdk).describe_db_cluster_snapshots().snapshot_type("manual").send().await.unwrap();
    // moto serves DocumentDB from its RDS backend: tell the two apart by engine.
    let mut clusters: Vec<String> = snaps
        .db_cluster_snapshots()
        .iter()
        .filter(|s| s.engine() != Some("docdb"))
        .flat_map(|s| s.tag_list().iter().filter_map(|t| from(t.key(), t.value())))
        .collect();
    amis.sort();
    clusters.sort();
    (amis, clusters)
}

async fn rds_snapshots(a: &Account) -> BTreeMap<String, BTreeMap<String, String>> {
    let out = aws_sdk_rds::Client::new(&a.sdk(REGION).await)
        .describe_db_snapshots()
        .snapshot_type("manual")
        .send()
        .await
        .unwrap();
    out.db_snapshots()
        .iter()
        .map(|s| {
            let tags = s
                .tag_list()
                .iter()
                .map(|t| (t.key().unwrap().to_string(), t.value().unwrap_or_default().to_string()))
                .collect();
            (s.db_snapshot_identifier().unwrap().to_string(), tags)
        })
        .collect()
}

#[tokio::test]
async fn bunker_pulls_shared_backups_of_five_kinds_once_without_collisions() {
    let bunker = Account::new("620000000009").await;
    let sources = [Account::new("620000000001").await, Account::new("620000000002").await];
    let dir = tempfile::tempdir().unwrap();
    let source_cfg =
        write(dir.path(), "source.toml", &format!("regions = [\"{REGION}\"]\nshare_accounts = [\"{}\"]\n", bunker.id));
    for a in &sources {
        a.volume(&[("bunker:create_backup", "true"), ("Name", "data")]).await;
        rds_db(a).await;
        more_resources(a).await;
        for kind in ["ebs", "rds", "ec2ami", "rds-cluster", "docdb"] {
            a.bunker(&[kind, "create-backups", "--config", &source_cfg, "--now", "2037-12-01T01:00:00Z", "--json"])
                .ok_json();
            a.bunker(&[kind, "replicate-backups", "--config", &source_cfg, "--json"]).ok_json();
        }
    }
    let names: Vec<String> = {
        let mut v = vec![];
        for a in &sources {
            v.extend(rds_snapshots(a).await.into_keys());
        }
        v
    };
    assert_eq!(names[0], names[1], "both sources' RDS backups carry the same name");

    let bunker_cfg = write(
        dir.path(),
        "bunker.toml",
        &format!("regions = [\"{REGION}\"]\nsource_accounts = [\"{}\", \"{}\"]\n", sources[0].id, sources[1].id),
    );
    for kind in ["ebs", "rds", "ec2ami", "rds-cluster", "docdb"] {
        let r = bunker.bunker(&[kind, "pull-backups", "--config", &bunker_cfg, "--json"]).ok_json();
        assert_eq!(r["summary"]["succeeded"], 2, "{kind}: {r:#}");
    }
    let (amis, clusters) = pulled_images_and_clusters(&bunker).await;
    assert_eq!(amis.len(), 2, "{amis:?}");
    assert!(amis[0].starts_with(&format!("{}:{REGION}:ami-", sources[0].id)), "{amis:?}");
    assert_eq!(clusters.len(), 2, "both accounts' `ledger` snapshots arrive: {clusters:?}");
    assert!(clusters[1].starts_with(&format!("{}:{REGION}:ledger-", sources[1].id)), "{clusters:?}");

    // What the bunker account now owns.
    let ebs = ebs_snapshots(&bunker).await;
    assert_eq!(ebs.len(), 2, "{ebs:#?}");
    let mut from: Vec<&str> = ebs.values().map(|t| t["bunker:pulled_from"].as_str()).collect();
    from.sort();
    assert!(from[0].starts_with(&format!("{}:{REGION}:snap-", sources[0].id)), "{from:?}");
    assert!(from[1].starts_with(&format!("{}:{REGION}:snap-", sources[1].id)), "{from:?}");
    for t in ebs.values() {
        assert_eq!(t["bunker:deployment"], format!("bunker-{}-{REGION}", bunker.id));
        assert_eq!(t["bunker:created_at"], "2037-12-01T01:00:00Z");
        assert_eq!(t["bunker:retention"], "monthly");
    }
    let rds = rds_snapshots(&bunker).await;
    assert_eq!(rds.len(), 2, "equal names from two accounts both arrive: {rds:#?}");
    for (id, t) in &rds {
        assert_ne!(id, &names[0], "pulled identifiers are made unique");
        assert!(t["bunker:pulled_from"].ends_with(&format!(":{REGION}:{}", names[0])));
        assert_eq!(t["bunker:source"].split('/').nth(1), Some("orders"));
    }

    // A second pull copies nothing; a new shared backup is pulled alone.
    for kind in ["ebs", "rds", "ec2ami", "rds-cluster", "docdb"] {
        let r = bunker.bunker(&[kind, "pull-backups", "--config", &bunker_cfg, "--json"]).ok_json();
        assert_eq!(r["summary"]["succeeded"], 0, "{kind}: {r:#}");
    }
    assert_eq!(pulled_images_and_clusters(&bunker).await.0.len(), 2);
    sources[0]
        .bunker(&["ebs", "create-backups", "--config", &source_cfg, "--now", "2037-12-02T01:00:00Z", "--json"])
        .ok_json();
    sources[0].bunker(&["ebs", "replicate-backups", "--config", &source_cfg, "--json"]).ok_json();
    let r = bunker.bunker(&["ebs", "pull-backups", "--config", &bunker_cfg, "--json"]).ok_json();
    assert_eq!(r["summary"]["succeeded"], 1, "{r:#}");
    assert_eq!(ebs_snapshots(&bunker).await.len(), 3);

    // The bunker's retention applies to its pulled copies (keep_daily_pulled = 0 here): the
    // daily one expires at once, the monthly ones stay; the sources keep theirs.
    let keep = write(
        dir.path(),
        "bunker-keep.toml",
        &format!(
            "regions = [\"{REGION}\"]\nsource_accounts = [\"{}\", \"{}\"]\nkeep_daily_pulled = 0\n",
            sources[0].id, sources[1].id
        ),
    );
    let c = bunker.bunker(&["ebs", "clean-backups", "--config", &keep, "--now", "2037-12-03T00:00:00Z", "--json"]);
    assert_eq!(c.ok_json()["summary"]["succeeded"], 1, "{c:#?}");
    let left = ebs_snapshots(&bunker).await;
    assert!(left.values().all(|t| t["bunker:retention"] == "monthly"), "{left:#?}");
    assert_eq!(ebs_snapshots(&sources[0]).await.len(), 2);

    // A snapshot shared by an account not in source_accounts is not pulled; nor is the
    // daily backup the bunker just expired (it would only be deleted again).
    let stranger = Account::new("620000000003").await;
    stranger.volume(&[("bunker:create_backup", "true")]).await;
    stranger.bunker(&["ebs", "create-backups", "--config", &source_cfg, "--json"]).ok_json();
    stranger.bunker(&["ebs", "replicate-backups", "--config", &source_cfg, "--json"]).ok_json();
    let r = bunker.bunker(&["ebs", "pull-backups", "--config", &keep, "--now", "2037-12-03T00:00:00Z", "--json"]);
    let r = r.ok_json();
    assert_eq!(r["summary"]["collected"], 3, "{r:#}");
    assert_eq!(r["summary"]["succeeded"], 0, "{r:#}");
    assert_eq!(ebs_snapshots(&bunker).await.len(), 2);
}
