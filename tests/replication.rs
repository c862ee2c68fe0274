//! Copy to two DR regions and share with two accounts, for EBS, AMI, RDS and Aurora, against
//! the emulator: what exists in each region afterwards, read with the SDK directly.

mod common;

use std::collections::BTreeMap;

use common::{Account, REGION};

const DR: [&str; 2] = ["us-west-2", "eu-west-1"];
const SHARE: [&str; 2] = ["111111111111", "222222222222"];
const SELECT: (&str, &str) = ("bunker:create_backup", "true");

/// One backup as found: tags and the accounts it is shared with.
#[derive(Debug)]
struct Found {
    tags: BTreeMap<String, String>,
    shared: Vec<String>,
}

fn tag_map<'a>(it: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>) -> BTreeMap<String, String> {
    it.map(|(k, v)| (k.unwrap_or_default().to_string(), v.unwrap_or_default().to_string())).collect()
}

/// One resource of `kind` named `name`, selected for backups.
async fn seed(a: &Account, kind: &str, name: &str) {
    let sdk = a.sdk(REGION).await;
    match kind {
        "ebs" => {
            a.volume(&[SELECT, ("Name", name)]).await;
        }
        "ec2ami" => {
            a.instance(&[SELECT]).await;
        }
        "rds" => {
            aws_sdk_rds::Client::new(&sdk)
                .create_db_instance()
                .db_instance_identifier(name)
                .engine("postgres")
                .db_instance_class("db.t3.micro")
                .master_username("u")
                .master_user_password("password1")
                .allocated_storage(20)
                .tags(aws_sdk_rds::types::Tag::builder().key(SELECT.0).value(SELECT.1).build())
                .send()
                .await
                .unwrap();
        }
        "rds-cluster" => {
            aws_sdk_rds::Client::new(&sdk)
                .create_db_cluster()
                .db_cluster_identifier(name)
                .engine("aurora-postgresql")
                .master_username("u")
                .master_user_password("password1")
                .tags(aws_sdk_rds::types::Tag::builder().key(SELECT.0).value(SELECT.1).build())
                .send()
                .await
                .unwrap();
        }
        "docdb" => {
            aws_sdk_docdb::Client::new(&sdk)
                .create_db_cluster()
                .db_cluster_identifier(name)
                .engine("docdb")
                .master_username("u")
                .master_user_password("password1")
                .tags(aws_sdk_docdb::types::Tag::builder().key(SELECT.0).value(SELECT.1).build())
                .send()
                .await
                .unwrap();
        }
        _ => unreachable!(),
    }
}

/// Every backup of `kind` this account owns in `region`, with its shares.
async fn inspect(a: &Account, kind: &str, region: &str) -> BTreeMap<String, Found> {
    let sdk = a.sdk(region).await;
    let mut out = BTreeMap::new();
    match kind {
        "ebs" => {
            let ec2 = aws_sdk_ec2::Client::new(&sdk);
            let snaps = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
            for s in snaps.snapshots() {
                let tags = tag_map(s.tags().iter().map(|t| (t.key(), t.value())));
                if tags.contains_key("bunker:ami_part") {
                    continue;
                }
                let id = s.snapshot_id().unwrap();
                out.insert(id.to_string(), Found { tags, shared: a.snapshot_shared_with(region, id).await });
            }
        }
        "ec2ami" => {
            let ec2 = aws_sdk_ec2::Client::new(&sdk);
            let images = ec2.describe_images().owners("self").send().await.unwrap();
            for i in images.images() {
                let id = i.image_id().unwrap();
                let attr = ec2
                    .describe_image_attribute()
                    .image_id(id)
                    .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
                    .send()
                    .await
                    .unwrap();
                let shared: Vec<String> =
                    attr.launch_permissions().iter().filter_map(|p| p.user_id().map(String::from)).collect();
                // Its snapshots are shared with it (else the other account cannot copy it).
                let parts: Vec<&str> =
                    i.block_device_mappings().iter().filter_map(|m| m.ebs()?.snapshot_id()).collect();
                assert!(!parts.is_empty(), "{id} has snapshots");
                for part in parts {
                    let with = a.snapshot_shared_with(region, part).await;
                    assert_eq!(sorted(with), sorted(shared.clone()), "{id}'s snapshot {part} shared as the AMI");
                }
                let tags = tag_map(i.tags().iter().map(|t| (t.key(), t.value())));
                out.insert(id.to_string(), Found { tags, shared });
            }
        }
        "rds" => {
            let rds = aws_sdk_rds::Client::new(&sdk);
            let snaps = rds.describe_db_snapshots().snapshot_type("manual").send().await.unwrap();
            for s in snaps.db_snapshots() {
                let id = s.db_snapshot_identifier().unwrap();
                let attrs = rds.describe_db_snapshot_attributes().db_snapshot_identifier(id).send().await.unwrap();
                let shared = attrs
                    .db_snapshot_attributes_result()
                    .unwrap()
                    .db_snapshot_attributes()
                    .iter()
                    .filter(|x| x.attribute_name() == Some("restore"))
                    .flat_map(|x| x.attribute_values().to_vec())
                    .collect();
                let tags = tag_map(s.tag_list().iter().map(|t| (t.key(), t.value())));
                out.insert(id.to_string(), Found { tags, shared });
            }
        }
        "rds-cluster" => {
            let rds = aws_sdk_rds::Client::new(&sdk);
            let snaps = rds.describe_db_cluster_snapshots().snapshot_type("manual").send().await.unwrap();
            for s in snaps.db_cluster_snapshots() {
                let id = s.db_cluster_snapshot_identifier().unwrap();
                let attrs = rds
                    .describe_db_cluster_snapshot_attributes()
                    .db_cluster_snapshot_identifier(id)
                    .send()
                    .await
                    .unwrap();
                let shared = attrs
                    .db_cluster_snapshot_attributes_result()
                    .unwrap()
                    .db_cluster_snapshot_attributes()
                    .iter()
                    .filter(|x| x.attribute_name() == Some("restore"))
                    .flat_map(|x| x.attribute_values().to_vec())
                    .collect();
                let tags = tag_map(s.tag_list().iter().map(|t| (t.key(), t.value())));
                out.insert(id.to_string(), Found { tags, shared });
            }
        }
        "docdb" => {
            let docdb = aws_sdk_docdb::Client::new(&sdk);
            let snaps = docdb.describe_db_cluster_snapshots().snapshot_type("manual").send().await.unwrap();
            for s in snaps.db_cluster_snapshots() {
                let id = s.db_cluster_snapshot_identifier().unwrap();
                let arn = s.db_cluster_snapshot_arn().unwrap();
                let t = docdb.list_tags_for_resource().resource_name(arn).send().await.unwrap();
                let tags = tag_map(t.tag_list().iter().map(|t| (t.key(), t.value())));
                let attrs = docdb
                    .describe_db_cluster_snapshot_attributes()
                    .db_cluster_snapshot_identifier(id)
                    .send()
                    .await
                    .unwrap();
                let shared = attrs
                    .db_cluster_snapshot_attributes_result()
                    .unwrap()
                    .db_cluster_snapshot_attributes()
                    .iter()
                    .filter(|x| x.attribute_name() == Some("restore"))
                    .flat_map(|x| x.attribute_values().to_vec())
                    .collect();
                out.insert(id.to_string(), Found { tags, shared });
            }
        }
        _ => unreachable!(),
    }
    out
}

fn config(dir: &std::path::Path) -> String {
    let path = dir.join("bunker.toml");
    std::fs::write(
        &path,
        format!(
            "regions = [\"{REGION}\"]\ndr_regions = [\"{}\", \"{}\"]\nshare_accounts = [\"{}\", \"{}\"]\n[serve]\ncheck_interval = \"1s\"\n",
            DR[0], DR[1], SHARE[0], SHARE[1]
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn copy_and_share(kind: &str, account: &str) {
    let a = Account::new(account).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let name = match kind {
        "ebs" => "data",
        "rds" => "orders",
        "rds-cluster" => "ledger",
        _ => "catalog",
    };
    seed(&a, kind, name).await;
    a.bunker(&[kind, "create-backups", "--config", &cfg, "--json"]).ok_json();
    let home = inspect(&a, kind, REGION).await;
    assert_eq!(home.len(), 1, "{home:#?}");
    let (source_id, source) = home.iter().next().unwrap();

    let report = a.bunker(&[kind, "replicate-backups", "--config", &cfg, "--json"]).ok_json();
    assert_eq!(report["status"], "OK", "{report:#}");
    // 2 copies, 2 shares of the source, 2 shares of each copy.
    assert_eq!(report["summary"]["succeeded"], 8, "{report:#}");

    let home = inspect(&a, kind, REGION).await;
    assert_eq!(sorted(home[source_id].shared.clone()), SHARE, "source shared with both accounts");
    for region in DR {
        let copies = inspect(&a, kind, region).await;
        assert_eq!(copies.len(), 1, "{kind}: exactly one copy in {region}: {copies:#?}");
        let copy = copies.values().next().unwrap();
        assert_eq!(copy.tags["bunker:copy_of"], format!("{REGION}:{source_id}"));
        assert_eq!(copy.tags["bunker:deployment"], format!("bunker-{account}-{region}"), "owned in its region");
        assert_eq!(copy.tags["bunker:dr_copy"], "true");
        for k in ["bunker:managed", "bunker:source", "bunker:created_at", "bunker:retention", "Name"] {
            assert_eq!(copy.tags[k], source.tags[k], "{k} carried over");
        }
        assert_eq!(sorted(copy.shared.clone()), SHARE, "{region} copy shared with both accounts");
    }

    // Replaying is a no-op: nothing new anywhere.
    let again = a.bunker(&[kind, "replicate-backups", "--config", &cfg, "--json"]).ok_json();
    assert_eq!(again["summary"]["succeeded"], 0, "{again:#}");
    for region in DR {
        assert_eq!(inspect(&a, kind, region).await.len(), 1);
    }

    // The DR copies are cleaned by their region's deployment: with keep 0 everywhere, the
    // source's newest backup stays (its resource lives) but the copies expire.
    let far = "2041-01-01T00:00:00Z";
    let clean = a.bunker(&[kind, "clean-backups", "--config", &cfg, "--region", DR[0], "--now", far, "--json"]);
    clean.ok_json();
    assert!(inspect(&a, kind, DR[0]).await.is_empty(), "{kind}: DR copy in {} expired and deleted", DR[0]);
    assert_eq!(inspect(&a, kind, REGION).await.len(), 1, "the source region is untouched");
}

#[tokio::test]
async fn ebs_copy_and_share() {
    copy_and_share("ebs", "500000000001").await;
}

#[tokio::test]
async fn ec2ami_copy_and_share() {
    copy_and_share("ec2ami", "500000000002").await;
}

#[tokio::test]
async fn rds_copy_and_share() {
    copy_and_share("rds", "500000000003").await;
}

#[tokio::test]
async fn rds_cluster_copy_and_share() {
    copy_and_share("rds-cluster", "500000000004").await;
}

#[tokio::test]
async fn docdb_copy_and_share() {
    copy_and_share("docdb", "500000000007").await;
}

#[tokio::test]
async fn replicate_without_targets_is_a_usage_error() {
    let a = Account::new("500000000005").await;
    let r = a.bunker(&["ebs", "replicate-backups"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("dr_regions"), "{}", r.stderr);
}

#[tokio::test]
async fn encrypted_backups_are_shared_as_copies_under_the_share_key() {
    let a = Account::new("500000000006").await;
    let ec2 = a.ec2().await;
    let default_key = format!("arn:aws:kms:{REGION}:{}:key/aws-managed-ebs-default", a.id);
    let share_key = format!("arn:aws:kms:{REGION}:{}:key/bunker-share", a.id);
    let tag = aws_sdk_ec2::types::Tag::builder().key(SELECT.0).value(SELECT.1).build();
    ec2.create_volume()
        .availability_zone(format!("{REGION}a"))
        .size(1)
        .encrypted(true)
        .kms_key_id(&default_key)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Volume)
                .tags(tag)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    std::fs::write(
        &cfg,
        format!(
            "regions = [\"{REGION}\"]\nshare_accounts = [\"{}\"]\nshare_kms_keys = [\"{REGION}={share_key}\"]\n",
            SHARE[0]
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    a.bunker(&["ebs", "create-backups", "--config", &cfg, "--json"]).ok_json();
    let r = a.bunker(&["ebs", "replicate-backups", "--config", &cfg, "--json"]).ok_json();
    assert_eq!(r["summary"]["succeeded"], 2, "one re-encryption, one share: {r:#}");
    a.bunker(&["ebs", "replicate-backups", "--config", &cfg, "--json"]).ok_json();

    let snaps = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    assert_eq!(snaps.snapshots().len(), 2, "the backup and one re-encrypted copy");
    let found = inspect(&a, "ebs", REGION).await;
    let (src_id, src) = found.iter().find(|(_, f)| !f.tags.contains_key("bunker:reencrypted_of")).unwrap();
    let (re_id, re) = found.iter().find(|(_, f)| f.tags.contains_key("bunker:reencrypted_of")).unwrap();
    assert!(src.shared.is_empty(), "a default-key backup is never shared itself");
    assert_eq!(re.shared, [SHARE[0]]);
    assert_eq!(re.tags["bunker:reencrypted_of"], format!("{REGION}:{src_id}"));
    assert_eq!(re.tags["bunker:deployment"], src.tags["bunker:deployment"], "cleaned with its source");
    let re_snap = snaps.snapshots().iter().find(|s| s.snapshot_id() == Some(re_id)).unwrap();
    assert_eq!(re_snap.encrypted(), Some(true));
    assert_eq!(re_snap.kms_key_id(), Some(share_key.as_str()));
}

/// Issue 14 §6: AWS requires a `PreSignedUrl` (a SigV4 request of the same copy, signed for
/// the source region) to copy an encrypted DocumentDB cluster snapshot across regions; the
/// emulator refuses one without it. bunker's DR copy carries it and lands, encrypted under
/// the DR key.
#[tokio::test]
async fn docdb_encrypted_copies_carry_a_presigned_url_for_the_source_region() {
    let a = Account::new("500000000008").await;
    let (home_key, dr_key) = (a.kms_key(REGION, None).await, a.kms_key(DR[0], None).await);
    aws_sdk_docdb::Client::new(&a.sdk(REGION).await)
        .create_db_cluster()
        .db_cluster_identifier("sealed")
        .engine("docdb")
        .master_username("u")
        .master_user_password("password1")
        .storage_encrypted(true)
        .kms_key_id(&home_key)
        .tags(aws_sdk_docdb::types::Tag::builder().key(SELECT.0).value(SELECT.1).build())
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    std::fs::write(
        &cfg,
        format!("regions = [\"{REGION}\"]\ndr_regions = [\"{}\"]\ndr_kms_keys = [\"{}={dr_key}\"]\n", DR[0], DR[0]),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    a.bunker(&["docdb", "create-backups", "--config", cfg, "--json"]).ok_json();
    let home = inspect(&a, "docdb", REGION).await;
    let source_id = home.keys().next().unwrap().clone();

    // Without the URL the emulator says what AWS says.
    let dr = aws_sdk_docdb::Client::new(&a.sdk(DR[0]).await);
    let source_arn = format!("arn:aws:rds:{REGION}:{}:cluster-snapshot:{source_id}", a.id);
    let bare = dr
        .copy_db_cluster_snapshot()
        .source_db_cluster_snapshot_identifier(&source_arn)
        .target_db_cluster_snapshot_identifier("by-hand")
        .kms_key_id(&dr_key)
        .send()
        .await
        .unwrap_err();
    let message = format!("{}", aws_smithy_types::error::display::DisplayErrorContext(&bare));
    assert!(message.contains("PreSignedUrl is required"), "{message}");

    let report = a.bunker(&["docdb", "replicate-backups", "--config", cfg, "--json"]).ok_json();
    assert_eq!(report["status"], "OK", "{report:#}");
    let copies = inspect(&a, "docdb", DR[0]).await;
    assert_eq!(copies.len(), 1, "{copies:#?}");
    let copy = dr.describe_db_cluster_snapshots().snapshot_type("manual").send().await.unwrap();
    let copy = copy.db_cluster_snapshots().iter().find(|s| s.db_cluster_snapshot_identifier() != Some("by-hand"));
    let copy = copy.expect("the copy");
    assert_eq!(copy.storage_encrypted(), Some(true));
    assert_eq!(copy.kms_key_id(), Some(dr_key.as_str()), "encrypted under the DR key");
}

/// Issue 14 §5: Redshift shares the Redshift way. `AuthorizeSnapshotAccess` per account (at
/// most 20 per snapshot: the 21st is left out, not retried forever); the account it is shared
/// with lists it in its pull report as restorable, not copyable (AWS lets it restore a shared
/// snapshot, never copy it); clean revokes every authorization before the delete AWS would
/// otherwise refuse.
#[tokio::test]
async fn redshift_shares_pull_lists_them_as_restorable_and_clean_revokes_first() {
    let a = Account::new("500000000009").await;
    let redshift = aws_sdk_redshift::Client::new(&a.sdk(REGION).await);
    a.redshift_cluster("warehouse", None).await;
    let accounts: Vec<String> = (1..=21).map(|i| format!("5100000000{i:02}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    let list = accounts.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    std::fs::write(&cfg, format!("regions = [\"{REGION}\"]\nshare_accounts = [{list}]\n")).unwrap();
    let cfg = cfg.to_str().unwrap();
    let first = "2037-03-10T01:00:00Z"; // a daily backup (not the first of a week, month or year)
    a.bunker(&["redshift", "create-backups", "--config", cfg, "--now", first, "--json"]).ok_json();
    let report = a.bunker(&["redshift", "replicate-backups", "--config", cfg, "--json"]).ok_json();
    assert_eq!(report["status"], "OK", "{report:#}");
    assert_eq!(report["summary"]["succeeded"], 20, "20 authorizations: {report:#}");
    let snapshots = redshift.describe_cluster_snapshots().snapshot_type("manual").send().await.unwrap();
    let snapshot = &snapshots.snapshots()[0];
    let id = snapshot.snapshot_identifier().unwrap().to_string();
    let shared = snapshot.accounts_with_restore_access().iter().filter_map(|x| x.account_id().map(String::from));
    assert_eq!(sorted(shared.collect()), accounts[..20].to_vec(), "the first 20 of share_accounts");
    let again = a.bunker(&["redshift", "replicate-backups", "--config", cfg, "--json"]).ok_json();
    assert_eq!(again["summary"]["succeeded"], 0, "replaying shares nothing again: {again:#}");

    // The data bunker sees the share, reports it as restorable, copies nothing.
    let bunker = Account::new(&accounts[0]).await;
    let bcfg = dir.path().join("bunker-account.toml");
    std::fs::write(&bcfg, format!("regions = [\"{REGION}\"]\nsource_accounts = [\"{}\"]\n", a.id)).unwrap();
    let pulled = bunker.bunker(&["redshift", "pull-backups", "--config", bcfg.to_str().unwrap(), "--json"]).ok_json();
    let entry = &pulled["entries"][0];
    assert_eq!(entry["status"], "SKIPPED", "{pulled:#}");
    assert!(entry["message"].as_str().unwrap().starts_with("restorable, not copyable"), "{pulled:#}");
    assert_eq!(entry["backup_id"], format!("{}:{id}", a.id));
    let own = aws_sdk_redshift::Client::new(&bunker.sdk(REGION).await);
    assert!(own.describe_cluster_snapshots().send().await.unwrap().snapshots().is_empty(), "nothing copied in");

    // Clean: every authorization revoked, then the snapshot deleted (a newer backup of the
    // live cluster stays, as it always does).
    let second = "2037-03-11T01:00:00Z";
    a.bunker(&["redshift", "create-backups", "--config", cfg, "--now", second, "--json"]).ok_json();
    let far = "2041-01-01T00:00:00Z";
    let clean = a.bunker(&["redshift", "clean-backups", "--config", cfg, "--now", far, "--json"]);
    let clean = clean.ok_json();
    assert_eq!(clean["status"], "OK", "{clean:#}");
    let left = redshift.describe_cluster_snapshots().snapshot_type("manual").send().await.unwrap();
    assert!(
        left.snapshots().iter().all(|s| s.snapshot_identifier() != Some(&id)),
        "deleted after the revokes: {clean:#}"
    );
}

/// Issue 14 §5: a Redshift cluster's DR copies come from its cross-region copy setting, which
/// bunker sets before it makes the cluster's backup: the first other `dr_regions` region (AWS
/// copies to one), a snapshot copy grant there for an encrypted cluster (its `dr_kms_keys`
/// key), and a manual retention as long as the longest-kept DR copy. A cluster already copying
/// elsewhere is someone's setting: left alone and reported.
#[tokio::test]
async fn redshift_dr_copies_come_from_the_cluster_copy_setting_bunker_sets() {
    let a = Account::new("500000000010").await;
    let (home_key, dr_key) = (a.kms_key(REGION, None).await, a.kms_key(DR[0], None).await);
    let redshift = aws_sdk_redshift::Client::new(&a.sdk(REGION).await);
    a.redshift_cluster("vault", Some(&home_key)).await;
    a.redshift_cluster("elsewhere", None).await;
    // Someone's own setting on the second cluster.
    redshift.enable_snapshot_copy().cluster_identifier("elsewhere").destination_region(DR[1]).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    std::fs::write(
        &cfg,
        format!(
            "regions = [\"{REGION}\"]\ndr_regions = [\"{}\", \"{}\"]\ndr_kms_keys = [\"{}={dr_key}\"]\n\
             keep_daily_dr = 7\nkeep_weekly_dr = 4\nkeep_monthly_dr = 3\nkeep_yearly_dr = 0\n",
            DR[0], DR[1], DR[0]
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let run = |now: &str| a.bunker(&["redshift", "create-backups", "--config", cfg, "--now", now, "--json"]).ok_json();
    let first = run("2037-03-10T01:00:00Z");
    let message = |report: &serde_json::Value, cluster: &str| -> String {
        let entries = report["entries"].as_array().unwrap();
        let e = entries.iter().find(|e| e["resource_id"] == cluster).unwrap();
        e["message"].as_str().unwrap_or_default().to_string()
    };
    assert!(message(&first, "vault").contains(&format!("{} only, not {}", DR[0], DR[1])), "{first:#}");
    assert!(message(&first, "elsewhere").contains(&format!("already copies its snapshots to {}", DR[1])), "{first:#}");

    let clusters = redshift.describe_clusters().send().await.unwrap();
    let status = |name: &str| {
        let c = clusters.clusters().iter().find(|c| c.cluster_identifier() == Some(name)).unwrap();
        c.cluster_snapshot_copy_status().cloned().expect("copy status")
    };
    let vault = status("vault");
    assert_eq!(vault.destination_region(), Some(DR[0]));
    assert_eq!(vault.manual_snapshot_retention_period(), Some(93), "3 monthly DR copies, 31 days each");
    let grant = vault.snapshot_copy_grant_name().expect("a grant for the encrypted cluster").to_string();
    assert_eq!(status("elsewhere").destination_region(), Some(DR[1]), "someone's setting left alone");
    let there = aws_sdk_redshift::Client::new(&a.sdk(DR[0]).await);
    let grants = there.describe_snapshot_copy_grants().snapshot_copy_grant_name(&grant).send().await.unwrap();
    assert_eq!(grants.snapshot_copy_grants()[0].kms_key_id(), Some(dr_key.as_str()));

    let second = run("2037-03-11T01:00:00Z");
    assert!(!message(&second, "vault").contains("not set"), "{second:#}");
    let ids = |report: &serde_json::Value| {
        report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource_id"] == "vault")
            .map(|e| e["backup_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let copies = there.describe_cluster_snapshots().snapshot_type("manual").send().await.unwrap();
    let copied: Vec<&str> = copies.snapshots().iter().filter_map(|s| s.snapshot_identifier()).collect();
    for id in ids(&first).iter().chain(&ids(&second)) {
        assert!(copied.contains(&id.as_str()), "{id} copied to {}: {copied:?}", DR[0]);
    }
    let copy = copies.snapshots().iter().find(|s| Some(ids(&first)[0].as_str()) == s.snapshot_identifier()).unwrap();
    assert_eq!(copy.source_region(), Some(REGION));
    assert_eq!(copy.manual_snapshot_retention_period(), Some(93));
}

/// What a fleet's replication may cost per kind (issue 15).
struct Budget {
    kind: &'static str,
    /// The copy call: one per backup.
    copy: &'static str,
    /// The share calls: one each per backup and copy (an AMI: its launch permission and its
    /// snapshot's).
    shares: &'static [&'static str],
    /// The batched look (unbatched: 6 to 8 per backup over all passes).
    look: &'static str,
    /// At most this many looks per 2 backups. How many jobs share a look depends on timing
    /// (tests run side by side on two cores; jobs the copy cap deferred are woken a few at a
    /// time as slots free, RDS's cap being 5), so this bounds batching, not its best case
    /// (about one per backup: `benches/serve_fanout.sh`).
    looks_per_2: u64,
    /// Per-backup share reads bunker must not make, with how many per backup it may.
    reads: (&'static str, u64),
    /// All requests, per 2 backups: the effects, the reads allowed and the looks.
    total_per_2: u64,
}

/// Issue 15: a fleet's copies and shares look at AWS in batches. More backups than the
/// copy cap (20 for EBS and AMIs, 5 for RDS), so some copies wait for a slot and are woken
/// when one frees: every copy and share exists afterwards (checked one by one), the effects
/// are one call each, and the looks — who exists, which copies, who each is shared with —
/// are batched describes per region, not one describe and one attribute read per backup and
/// pass. Counted by the emulator per signing role.
async fn fleet(account: &str, n: usize, budget: Budget) {
    let kind = budget.kind;
    let a = Account::new(account).await;
    for i in 0..n {
        seed(&a, kind, &format!("fleet-{i}")).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    let text = format!("regions = [\"{REGION}\"]\ndr_regions = [\"{}\"]\nshare_accounts = [\"{}\"]\n", DR[0], SHARE[0]);
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.display().to_string();
    a.bunker(&[kind, "create-backups", "--config", &cfg, "--json"]).ok_json();
    let before = a.calls_by_role().remove("bunker-test").unwrap_or_default();
    let r = a.bunker(&[kind, "replicate-backups", "--config", &cfg, "--json"]).ok_json();
    assert_eq!(r["summary"]["failed"], 0, "{r:#}");
    let made: BTreeMap<String, u64> = a
        .calls_by_role()
        .remove("bunker-test")
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.clone(), v - before.get(&k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    eprintln!("{kind} replicate-backups of {n} backups: {made:#?}");

    // Checked one by one (attribute reads), not the batched reads bunker used.
    let sources = inspect(&a, kind, REGION).await;
    let copies = inspect(&a, kind, DR[0]).await;
    assert_eq!((sources.len(), copies.len()), (n, n), "one copy each");
    for (id, b) in sources.iter().chain(&copies) {
        assert_eq!(b.shared, [SHARE[0]], "{kind} {id} shared");
    }
    let n = n as u64;
    let count = |action: &str| made.get(action).copied().unwrap_or(0);
    assert_eq!(count(budget.copy), n, "{made:#?}");
    for share in budget.shares {
        assert_eq!(count(share), 2 * n, "{share}: {made:#?}");
    }
    let (read, per_backup) = budget.reads;
    assert!(count(read) <= per_backup * n, "{} {read}: shares not read in batches or inferred", count(read));
    // Unbatched, each backup took ~6 looks (and ~4 attribute reads).
    let looks = count(budget.look);
    assert!(2 * looks <= budget.looks_per_2 * n, "{looks} {} for {n} backups: not batched", budget.look);
    let total: u64 = made.values().sum();
    assert!(2 * total <= budget.total_per_2 * n, "{total} requests for {n} backups' copy and two shares: {made:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_is_copied_and_shared_with_batched_looks() {
    let budget = Budget {
        kind: "ebs",
        copy: "ec2:CopySnapshot",
        shares: &["ec2:ModifySnapshotAttribute"],
        look: "ec2:DescribeSnapshots",
        looks_per_2: 4,
        reads: ("ec2:DescribeSnapshotAttribute", 0),
        total_per_2: 11,
    };
    fleet("500000000020", 45, budget).await;
}

/// AMIs: shares read with `ExecutableUsers`, and an AMI's snapshots shared from the look's
/// block device mappings (no `DescribeImages` before a share). A one-volume AMI has six
/// effects (create, copy, and two calls per share of the AMI and of its copy).
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_amis_is_copied_and_shared_with_batched_looks() {
    let budget = Budget {
        kind: "ec2ami",
        copy: "ec2:CopyImage",
        shares: &["ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute"],
        look: "ec2:DescribeImages",
        looks_per_2: 4,
        reads: ("ec2:DescribeImageAttribute", 0),
        total_per_2: 15,
    };
    fleet("500000000021", 30, budget).await;
}

/// RDS: one `DescribeDBSnapshots` per batch (filter `db-snapshot-id`, tags in `TagList`); no
/// batched read of shares exists, so the job takes the shares it made as the state and reads
/// only what it cannot know — the sources a new process finds (one read each), never the
/// copies it made.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_rds_snapshots_is_copied_and_shared_with_batched_looks() {
    let budget = Budget {
        kind: "rds",
        copy: "rds:CopyDBSnapshot",
        shares: &["rds:ModifyDBSnapshotAttribute"],
        look: "rds:DescribeDBSnapshots",
        looks_per_2: 5,
        reads: ("rds:DescribeDBSnapshotAttributes", 1),
        total_per_2: 14,
    };
    fleet("500000000022", 30, budget).await;
}
