//! Issue 14 §1: the whole AWS side in one stack, deployed into the emulator by CloudFormation
//! (`deploy/cloudformation/bunker.yaml`), then `bunker serve` run against what the stack made:
//! a backup announced on the stack's queue is copied to the DR region and exported to the
//! stack's bucket, where Object Lock refuses to delete it; `bunker doctor` passes on the
//! stack's config. The bucket policy's TLS-only statement is made with `EnforceTls=false`
//! here (the emulator speaks plain HTTP and moto would enforce the Deny without its condition);
//! `tests/policies.rs` checks that statement's text.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use common::{ebs_event, Account, REGION};

const DR: &str = "us-west-2";

async fn deploy(a: &Account, params: &[(&str, String)]) -> BTreeMap<String, String> {
    let cfn = aws_sdk_cloudformation::Client::new(&a.sdk(REGION).await);
    let body =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/cloudformation/bunker.yaml")).unwrap();
    let parameters = params.iter().map(|(k, v)| Parameter::builder().parameter_key(*k).parameter_value(v).build());
    cfn.create_stack()
        .stack_name("bunker")
        .template_body(body)
        .set_parameters(Some(parameters.collect()))
        .capabilities(Capability::CapabilityNamedIam)
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    loop {
        let out = cfn.describe_stacks().stack_name("bunker").send().await.unwrap();
        let stack = &out.stacks()[0];
        match stack.stack_status() {
            Some(StackStatus::CreateComplete) => {
                return stack
                    .outputs()
                    .iter()
                    .map(|o| (o.output_key().unwrap().to_string(), o.output_value().unwrap().to_string()))
                    .collect()
            }
            Some(StackStatus::CreateInProgress) => {}
            other => panic!("stack: {other:?} {:?}", stack.stack_status_reason()),
        }
        assert!(t.elapsed() < Duration::from_secs(60), "stack not created");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_deploys_and_the_service_runs_on_what_it_made() {
    let a = Account::new("530000000001").await;
    let ec2 = a.ec2().await;
    let vpc = ec2.create_vpc().cidr_block("10.9.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block("10.9.1.0/24").send().await.unwrap();
    let subnet = subnet.subnet.unwrap().subnet_id.unwrap();
    let bucket = format!("bunker-archive-{}", a.id);
    let params = [
        ("DeploymentId", "bunker-*".to_string()),
        ("ArchiveBucket", bucket.clone()),
        ("ObjectLockMode", "COMPLIANCE".into()),
        ("ObjectLockDays", "1".into()),
        ("EnforceTls", "false".into()),
        ("DrRegions", DR.into()),
        ("ShareAccounts", "530000000099".into()),
        ("ImageId", "ami-0123456789abcdef0".into()),
        ("SubnetIds", subnet),
        ("PackageUrl", "s3://packages/bunker_0.1.0-1_amd64.deb".into()),
    ];
    let out = deploy(&a, &params).await;
    assert_eq!(out["ArchiveBucketName"], bucket);
    assert!(out["ArchiveKeyArn"].starts_with("arn:aws:kms:"), "{out:?}");

    // What the stack's user data writes, from the stack's outputs.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    let config = format!(
        "regions = [\"{REGION}\"]\ndr_regions = [\"{DR}\"]\nerror_sns_topic = \"{}\"\nstatus_sns_topic = \"{}\"\n\
         export.to = \"s3://{bucket}/bunker\"\nexport.object_lock_days = 1\nschedule.create = \"\"\nschedule.clean = \"\"\n\
         [serve]\nkinds = \"ebs\"\nlisten = \"127.0.0.1:0\"\ncheck_interval = \"1s\"\nqueue_url = \"{}\"\n\
         dead_letter_queue_url = \"{}\"\nlease_table = \"{}\"\n",
        out["ErrorTopic"], out["StatusTopic"], out["QueueUrl"], out["DeadLetterQueueUrl"], out["LeaseTable"]
    );
    // The function roles, as the user data writes them (top-level keys, before [serve]).
    let roles: String = ["lifecycle", "replication", "export", "temporary"]
        .iter()
        .map(|f| format!("roles.{f} = \"{}\"\n", out[&format!("{}RoleArn", capitalized(f))]))
        .collect();
    let config = roles + &config;
    std::fs::write(&cfg, config).unwrap();
    let cfg = cfg.to_str().unwrap();
    let doctor = a.bunker(&["doctor", "--config", cfg]);
    assert_eq!(doctor.code, 0, "doctor on the stack's config:\n{}\n{}", doctor.stdout, doctor.stderr);
    assert!(!doctor.stdout.contains("FAIL  "), "{}", doctor.stdout);
    assert_eq!(doctor.stdout.matches("role roles.").count(), 4, "each function role assumed: {}", doctor.stdout);

    a.volume(&[("bunker:create_backup", "true")]).await;
    let created = a.bunker(&["ebs", "create-backups", "--config", cfg, "--json"]).ok_json();
    let snapshot = created["entries"][0]["backup_id"].as_str().unwrap().to_string();
    let (child, _addr, log) = a.serve(cfg, &dir.path().join("state"));
    let _stop = Stop(child);
    let sqs = aws_sdk_sqs::Client::new(&a.sdk(REGION).await);
    sqs.send_message().queue_url(&out["QueueUrl"]).message_body(ebs_event(&snapshot)).send().await.unwrap();

    let dr = aws_sdk_ec2::Client::new(&a.sdk(DR).await);
    let s3 = a.s3().await;
    let manifest = format!("bunker/{snapshot}.manifest.json");
    let t = Instant::now();
    loop {
        let copies = dr.describe_snapshots().owner_ids("self").send().await.unwrap();
        let copied = copies.snapshots().iter().any(|s| {
            s.tags()
                .iter()
                .any(|t| t.key() == Some("bunker:copy_of") && t.value() == Some(&format!("{REGION}:{snapshot}")))
        });
        let exported = s3.head_object().bucket(&bucket).key(&manifest).send().await.is_ok();
        if copied && exported {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "copied {copied}, exported {exported}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The archive is locked: its version cannot be deleted (COMPLIANCE, 1 day).
    let archive = format!("bunker/{snapshot}.img.zst");
    let head = s3.head_object().bucket(&bucket).key(&archive).send().await.unwrap();
    assert_eq!(head.object_lock_mode().map(|m| m.as_str()), Some("COMPLIANCE"), "{head:?}");
    let version = head.version_id().expect("a versioned bucket").to_string();
    let refused = s3.delete_object().bucket(&bucket).key(&archive).version_id(&version).send().await.unwrap_err();
    let refused = format!("{}", aws_smithy_types::error::display::DisplayErrorContext(&refused));
    assert!(refused.contains("AccessDenied"), "Object Lock refuses the delete: {refused}");
    assert!(doctor.stdout.contains("COMPLIANCE 1 days"), "doctor saw the lock: {}", doctor.stdout);
    assert!(s3.head_object().bucket(&bucket).key(&archive).version_id(&version).send().await.is_ok());

    // Each function ran under the stack's role for it (the emulator records the signer).
    let calls = a.calls_by_role();
    for (call, role) in [
        ("ec2:CreateSnapshot", "LifecycleRole"),
        ("ec2:CopySnapshot", "ReplicationRole"),
        ("s3:UploadPart", "ExportRole"),
        ("ebs:ListSnapshotBlocks", "ExportRole"),
    ] {
        let by: Vec<&String> = calls.iter().filter(|(_, c)| c.contains_key(call)).map(|(r, _)| r).collect();
        assert!(by.len() == 1 && by[0].contains(role), "{call} by {by:?}, not the stack's {role}: {calls:#?}");
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// Stops the service when the test ends.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill().and_then(|()| self.0.wait().map(drop)) {
            eprintln!("stopping bunker serve: {e}");
        }
    }
}
