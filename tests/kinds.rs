//! Each kind: create → list → clean against the emulator, asserting what exists afterwards.

mod common;

use std::collections::BTreeMap;

use common::{Account, REGION};

type Tags = BTreeMap<String, String>;

const SELECT: (&str, &str) = ("bunker:create_backup", "true");

/// Creates one tagged and one untagged resource of `kind`; returns (tagged, untagged) ids.
async fn seed(a: &Account, kind: &str) -> (String, String) {
    let sdk = a.sdk(REGION).await;
    match kind {
        "ebs" => (a.volume(&[SELECT, ("Name", "data")]).await, a.volume(&[("Name", "scratch")]).await),
        "ec2ami" => {
            let ec2 = aws_sdk_ec2::Client::new(&sdk);
            let mut ids = vec![];
            for tags in [vec![SELECT], vec![("Name", "plain")]] {
                let tags: Vec<_> =
                    tags.iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build()).collect();
                let spec = aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .set_tags(Some(tags))
                    .build();
                let out = ec2
                    .run_instances()
                    .image_id("ami-12c6146b")
                    .min_count(1)
                    .max_count(1)
                    .tag_specifications(spec)
                    .send()
                    .await
                    .unwrap();
                ids.push(out.instances()[0].instance_id().unwrap().to_string());
            }
            (ids[0].clone(), ids[1].clone())
        }
        "rds" => {
            let rds = aws_sdk_rds::Client::new(&sdk);
            for (id, tagged) in [("db-tagged", true), ("db-plain", false)] {
                let mut req = rds
                    .create_db_instance()
                    .db_instance_identifier(id)
                    .engine("postgres")
                    .db_instance_class("db.t3.micro")
                    .master_username("u")
                    .master_user_password("password1")
                    .allocated_storage(20);
                if tagged {
                    req = req.tags(aws_sdk_rds::types::Tag::builder().key(SELECT.0).value(SELECT.1).build());
                }
                req.send().await.unwrap();
            }
            ("db-tagged".into(), "db-plain".into())
        }
        "rds-cluster" => {
            let rds = aws_sdk_rds::Client::new(&sdk);
            for (id, tagged) in [("au-tagged", true), ("au-plain", false)] {
                let mut req = rds
                    .create_db_cluster()
                    .db_cluster_identifier(id)
                    .engine("aurora-postgresql")
                    .master_username("u")
                    .master_user_password("password1");
                if tagged {
                    req = req.tags(aws_sdk_rds::types::Tag::builder().key(SELECT.0).value(SELECT.1).build());
                }
                req.send().await.unwrap();
            }
            ("au-tagged".into(), "au-plain".into())
        }
        "docdb" => {
            let docdb = aws_sdk_docdb::Client::new(&sdk);
            for (id, tagged) in [("dd-tagged", true), ("dd-plain", false)] {
                let mut req = docdb
                    .create_db_cluster()
                    .db_cluster_identifier(id)
                    .engine("docdb")
                    .master_username("u")
                    .master_user_password("password1");
                if tagged {
                    req = req.tags(aws_sdk_docdb::types::Tag::builder().key(SELECT.0).value(SELECT.1).build());
                }
                req.send().await.unwrap();
            }
            ("dd-tagged".into(), "dd-plain".into())
        }
        "redshift" => {
            let rs = aws_sdk_redshift::Client::new(&sdk);
            for (id, tagged) in [("rs-tagged", true), ("rs-plain", false)] {
                let mut req = rs
                    .create_cluster()
                    .cluster_identifier(id)
                    .node_type("dc2.large")
                    .master_username("u")
                    .master_user_password("Password1");
                if tagged {
                    req = req.tags(aws_sdk_redshift::types::Tag::builder().key(SELECT.0).value(SELECT.1).build());
                }
                req.send().await.unwrap();
            }
            ("rs-tagged".into(), "rs-plain".into())
        }
        _ => unreachable!(),
    }
}

/// Every manual backup of `kind` in the account, id → tags, read with the SDK directly.
async fn backups(a: &Account, kind: &str) -> BTreeMap<String, Tags> {
    let sdk = a.sdk(REGION).await;
    fn tags<'a>(it: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>) -> Tags {
        it.map(|(k, v)| (k.unwrap().to_string(), v.unwrap_or_default().to_string())).collect()
    }
    match kind {
        "ebs" => a.snapshots().await.into_iter().filter(|(_, t)| !t.contains_key("bunker:ami_part")).collect(),
        "ec2ami" => aws_sdk_ec2::Client::new(&sdk)
            .describe_images()
            .owners("self")
            .send()
            .await
            .unwrap()
            .images()
            .iter()
            .map(|i| (i.image_id().unwrap().to_string(), tags(i.tags().iter().map(|t| (t.key(), t.value())))))
            .collect(),
        "rds" => aws_sdk_rds::Client::new(&sdk)
            .describe_db_snapshots()
            .snapshot_type("manual")
            .send()
            .await
            .unwrap()
            .db_snapshots()
            .iter()
            .map(|s| {
                (
                    s.db_snapshot_identifier().unwrap().to_string(),
                    tags(s.tag_list().iter().map(|t| (t.key(), t.value()))),
                )
            })
            .collect(),
        "rds-cluster" | "docdb" => {
            let engine_is_docdb = kind == "docdb";
            let rds = aws_sdk_rds::Client::new(&sdk);
            rds.describe_db_cluster_snapshots()
                .snapshot_type("manual")
                .send()
                .await
                .unwrap()
                .db_cluster_snapshots()
                .iter()
                .filter(|s| (s.engine() == Some("docdb")) == engine_is_docdb)
                .map(|s| {
                    (
                        s.db_cluster_snapshot_identifier().unwrap().to_string(),
                        tags(s.tag_list().iter().map(|t| (t.key(), t.value()))),
                    )
                })
                .collect()
        }
        "redshift" => aws_sdk_redshift::Client::new(&sdk)
            .describe_cluster_snapshots()
            .snapshot_type("manual")
            .send()
            .await
            .unwrap()
            .snapshots()
            .iter()
            .map(|s| {
                (s.snapshot_identifier().unwrap().to_string(), tags(s.tags().iter().map(|t| (t.key(), t.value()))))
            })
            .collect(),
        _ => unreachable!(),
    }
}

async fn delete_resource(a: &Account, kind: &str, id: &str) {
    let sdk = a.sdk(REGION).await;
    match kind {
        "ebs" => {
            aws_sdk_ec2::Client::new(&sdk).delete_volume().volume_id(id).send().await.unwrap();
        }
        "ec2ami" => {
            aws_sdk_ec2::Client::new(&sdk).terminate_instances().instance_ids(id).send().await.unwrap();
        }
        "rds" => {
            aws_sdk_rds::Client::new(&sdk)
                .delete_db_instance()
                .db_instance_identifier(id)
                .skip_final_snapshot(true)
                .send()
                .await
                .unwrap();
        }
        "rds-cluster" => {
            aws_sdk_rds::Client::new(&sdk)
                .delete_db_cluster()
                .db_cluster_identifier(id)
                .skip_final_snapshot(true)
                .send()
                .await
                .unwrap();
        }
        "docdb" => {
            aws_sdk_docdb::Client::new(&sdk)
                .delete_db_cluster()
                .db_cluster_identifier(id)
                .skip_final_snapshot(true)
                .send()
                .await
                .unwrap();
        }
        "redshift" => {
            aws_sdk_redshift::Client::new(&sdk)
                .delete_cluster()
                .cluster_identifier(id)
                .skip_final_cluster_snapshot(true)
                .send()
                .await
                .unwrap();
        }
        _ => unreachable!(),
    }
}

async fn create_list_clean(kind: &str, account: &str) {
    let a = Account::new(account).await;
    let (tagged, untagged) = seed(&a, kind).await;
    let before = backups(&a, kind).await; // automated snapshots are not manual; should be none

    for now in ["2037-11-18T01:00:00Z", "2037-11-19T01:00:00Z"] {
        let report = a.bunker(&[kind, "create-backups", "--now", now, "--json"]).ok_json();
        assert_eq!(report["status"], "OK", "{report:#}");
        assert_eq!(report["summary"]["succeeded"], 1, "{report:#}");
    }
    let made = backups(&a, kind).await;
    let ours: BTreeMap<&String, &Tags> = made.iter().filter(|(id, _)| !before.contains_key(*id)).collect();
    assert_eq!(ours.len(), 2, "two backups of {kind} made: {made:#?}");
    for tags in ours.values() {
        assert_eq!(tags["bunker:source"], tagged);
        assert_eq!(tags["bunker:managed"], "true");
        assert_eq!(tags["bunker:kind"], kind);
        assert_eq!(tags["bunker:deployment"], format!("bunker-{account}-{REGION}"));
        assert_eq!(tags["bunker:retention"], "daily");
        assert!(tags["bunker:created_at"].starts_with("2037-11-1"));
    }
    assert!(
        !made.values().any(|t| t.get("bunker:source") == Some(&untagged)),
        "the untagged resource was not backed up"
    );

    // list-backups --json: the documented fields.
    let listed = a.bunker(&[kind, "list-backups", "--json", "--now", "2037-11-19T02:00:00Z"]).ok_json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for b in listed {
        for field in ["id", "kind", "region", "account", "source", "created_at", "retention", "expires_at"] {
            assert!(!b[field].is_null(), "{field} missing in {b}");
        }
        assert_eq!(b["account"], account);
        assert!(ours.contains_key(&b["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(listed[0]["expires_at"], "2037-12-02T01:00:00Z"); // created 18th + 14 days

    // Clean far in the future: the newest of the live resource stays.
    let report = a.bunker(&[kind, "clean-backups", "--now", "2038-06-01T00:00:00Z", "--json"]).ok_json();
    assert_eq!(report["summary"]["succeeded"], 1, "{report:#}");
    let left = backups(&a, kind).await;
    let left_ours: Vec<&Tags> = left.values().filter(|t| t.contains_key("bunker:managed")).collect();
    assert_eq!(left_ours.len(), 1);
    assert_eq!(left_ours[0]["bunker:created_at"], "2037-11-19T01:00:00Z");

    // The resource goes away: nothing protects its last backup any more.
    delete_resource(&a, kind, &tagged).await;
    let report = a.bunker(&[kind, "clean-backups", "--now", "2038-06-01T00:00:00Z", "--json"]).ok_json();
    assert_eq!(report["summary"]["succeeded"], 1, "{report:#}");
    assert!(!backups(&a, kind).await.values().any(|t| t.contains_key("bunker:managed")));
    if kind == "ec2ami" {
        // The AMI's snapshots went with it.
        assert!(!a.snapshots().await.values().any(|t| t.contains_key("bunker:ami_part")), "AMI snapshots deleted");
    }
}

#[tokio::test]
async fn ebs_create_list_clean() {
    create_list_clean("ebs", "100000000001").await;
}

#[tokio::test]
async fn ec2ami_create_list_clean() {
    create_list_clean("ec2ami", "100000000002").await;
}

#[tokio::test]
async fn rds_create_list_clean() {
    create_list_clean("rds", "100000000003").await;
}

#[tokio::test]
async fn rds_cluster_create_list_clean() {
    create_list_clean("rds-cluster", "100000000004").await;
}

#[tokio::test]
async fn docdb_create_list_clean() {
    create_list_clean("docdb", "100000000005").await;
}

#[tokio::test]
async fn redshift_create_list_clean() {
    create_list_clean("redshift", "100000000006").await;
}

#[tokio::test]
async fn rds_copy_automated_copies_the_latest_automated_snapshot() {
    let a = Account::new("100000000007").await;
    let (tagged, _) = seed(&a, "rds").await;
    let report =
        a.bunker_with(&["rds", "create-backups", "--json"], &[("BUNKER_RDS_BACKUP_MODE", "copy-automated")]).ok_json();
    let entry = &report["entries"][0];
    assert_eq!(entry["status"], "OK", "{report:#}");
    // moto makes an automated snapshot with each instance: bunker copied it.
    assert!(entry["message"].as_str().unwrap().starts_with("copy of automated snapshot rds:"), "{entry}");
    let made = backups(&a, "rds").await;
    assert_eq!(made.len(), 1);
    assert_eq!(made.values().next().unwrap()["bunker:source"], tagged);
}
