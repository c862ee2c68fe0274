//! `bunker doctor`: runs each check the config calls for (`bunker_protocol::doctor::probes`)
//! against AWS and this host, and turns the answers into rows with the protocol's verdicts.

use std::sync::Arc;

use bunker_actors::ports::{ErrorKind, PortError};
use bunker_actors::runner::{CreateBackups, RunOptions};
use bunker_protocol::config::Resolved;
use bunker_protocol::doctor::{self, BucketExpect, InstallRecord, Probe, Report, Row};
use bunker_protocol::report::{EntryStatus, RunReport, RunStatus};
use bunker_protocol::roles::Function;
use bunker_protocol::ResourceKind;
use jiff::Timestamp;

use crate::aws::Aws;

/// Runs every check; never stops at the first failure.
pub async fn run(aws: &Aws, regions: &[String], set: &Arc<Resolved>, now: Timestamp) -> Report {
    let cfg = &set.config;
    let mut account = String::new();
    let mut rows = Vec::new();
    for probe in doctor::probes(cfg, regions) {
        match probe {
            Probe::Credentials => rows.push(match aws.caller().await {
                Ok((id, arn)) => {
                    account = id;
                    Row::ok("credentials", format!("account {account} as {arn}"))
                }
                Err(e) => Row::fail(
                    "credentials",
                    e.message,
                    "give bunker credentials: the instance profile on EC2, else AWS_PROFILE or AWS_* variables",
                ),
            }),
            probe => rows.extend(check(aws, probe, regions, set, &account, now).await),
        }
    }
    Report { rows }
}

/// Prints the report: the table, or one JSON document with `--json`.
pub fn print(report: &Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("serializable"));
    } else {
        print!("{}", report.table());
    }
}

async fn check(
    aws: &Aws,
    probe: Probe,
    regions: &[String],
    set: &Arc<Resolved>,
    account: &str,
    now: Timestamp,
) -> Vec<Row> {
    let cfg = &set.config;
    let one = |r: Row| vec![r];
    match probe {
        Probe::Credentials => vec![],
        Probe::Role(function) => one(role(aws, function, regions).await),
        Probe::Region(r) => one(match aws.zones(&r).await {
            Ok(n) => Row::ok(format!("region {r}"), format!("{n} availability zones")),
            Err(e) => Row::fail(
                format!("region {r}"),
                e.message,
                "check the region's name and that it is enabled for the account (opt-in regions)",
            ),
        }),
        Probe::Queue { url, dead_letter } => one(queue(aws, &url, dead_letter.as_deref()).await),
        Probe::DeadLetterQueue(url) => one(match aws.queue_facts(&url).await {
            Ok(f) => Row::ok("queue serve.dead_letter_queue_url", f.arn),
            Err(e) => failed("queue serve.dead_letter_queue_url", &e, "sqs:GetQueueAttributes and sqs:SendMessage"),
        }),
        Probe::Topic { setting, arn } => one(topic(aws, setting, &arn).await),
        Probe::LeaseTable(t) => one(lease_table(aws, &t).await),
        Probe::Deployment => one(deployment(aws, set, regions, account, now).await),
        Probe::Vault { region, name } => one(match aws.vault_arn(&region, &name).await {
            Ok(arn) => Row::ok(format!("vault {name} ({region})"), arn),
            Err(e) => failed(&format!("vault {name} ({region})"), &e, "backup:DescribeBackupVault"),
        }),
        Probe::Bucket { region, bucket } => {
            let owner = cfg.export_bucket_owner.clone().unwrap_or_else(|| account.to_string());
            let facts = aws.bucket_facts(&region, &bucket, &owner).await;
            let expect = BucketExpect {
                owner,
                kms_key: cfg.export_kms_key.clone(),
                object_lock_days: cfg.export_object_lock_days,
            };
            doctor::bucket_rows(&bucket, &expect, &facts)
        }
        Probe::Key { region, key, use_ } => one(match aws.key_facts(&region, &key, use_).await {
            Ok(f) => doctor::key_row(&region, use_, &f, &cfg.replication.share_accounts),
            Err(e) => failed(&format!("key {}.{region}", use_.setting()), &e, "kms:DescribeKey"),
        }),
        Probe::EventBus(bus) => {
            one(match aws.event_bus_arn(regions.first().map(String::as_str).unwrap_or_default(), &bus).await {
                Ok(arn) => Row::ok("event bus events.bus", arn),
                Err(e) => failed("event bus events.bus", &e, "events:DescribeEventBus and events:PutEvents"),
            })
        }
        Probe::DumpTool(tool) => one(dump_tool(tool).await),
        Probe::CreateDryRun(kind) => one(dry_run(aws, regions, kind, set, now).await),
        Probe::Limits => doctor::limit_rows(cfg),
    }
}

/// Whether `function`'s role can be assumed (and who the calls then run as).
async fn role(aws: &Aws, function: Function, regions: &[String]) -> Row {
    let check = format!("role roles.{function}");
    match aws.caller_as(function, regions.first().map(String::as_str).unwrap_or_default()).await {
        Ok(arn) => Row::ok(check, format!("assumed as {arn}")),
        Err(e) => Row::fail(
            check,
            e.message,
            format!(
                "let this instance's role sts:AssumeRole the role, and the role's trust policy trust it \
                 (the CloudFormation stack's {} role does both)",
                function.name()
            ),
        ),
    }
}

/// A row for an AWS error: missing things and refusals get their own fixes.
fn failed(check: &str, e: &PortError, actions: &str) -> Row {
    let fix = match e.kind {
        ErrorKind::NotFound => "create it (the CloudFormation stack does) or correct the setting".to_string(),
        ErrorKind::AccessDenied => format!("allow {actions} to this role"),
        _ => "check the network and the endpoint, then run bunker doctor again".to_string(),
    };
    Row::fail(check, e.message.clone(), fix)
}

async fn queue(aws: &Aws, url: &str, dead_letter: Option<&str>) -> Row {
    let check = "queue serve.queue_url";
    let facts = match aws.queue_facts(url).await {
        Ok(f) => f,
        Err(e) => return failed(check, &e, "sqs:GetQueueAttributes, sqs:ReceiveMessage and sqs:DeleteMessage"),
    };
    let dlq_arn = match dead_letter {
        Some(d) => aws.queue_facts(d).await.ok().map(|f| f.arn),
        None => None,
    };
    doctor::queue_row(&facts, dlq_arn.as_deref())
}

async fn topic(aws: &Aws, setting: &str, arn: &str) -> Row {
    let check = format!("topic {setting}");
    match aws.topic_encrypted(arn).await {
        Ok(true) => Row::ok(check, format!("{arn} (encrypted)")),
        Ok(false) => Row::warn(check, format!("{arn}: not encrypted at rest"), "set the topic's KmsMasterKeyId"),
        Err(e) => failed(&check, &e, "sns:GetTopicAttributes and sns:Publish"),
    }
}

async fn lease_table(aws: &Aws, table: &str) -> Row {
    let check = "lease table serve.lease_table";
    match aws.lease_table_facts(table).await {
        Ok((status, true)) if status == "ACTIVE" => Row::ok(check, format!("{table} ACTIVE")),
        Ok((status, true)) => {
            Row::warn(check, format!("{table} is {status}"), "wait until the table is ACTIVE, then run doctor again")
        }
        Ok((_, false)) => Row::fail(
            check,
            format!("{table}: its key is not bunker's (a string partition key \"pk\" and no sort key)"),
            "create a table with partition key pk (S) and no sort key, and name it in serve.lease_table",
        ),
        Err(e) => {
            failed(check, &e, "dynamodb:DescribeTable, dynamodb:GetItem, dynamodb:PutItem and dynamodb:DeleteItem")
        }
    }
}

async fn deployment(aws: &Aws, set: &Arc<Resolved>, regions: &[String], account: &str, now: Timestamp) -> Row {
    let cfg = &set.config;
    let id = cfg.deployment_id(account, regions.first().map(String::as_str).unwrap_or_default());
    let Some(table) = &cfg.serve.lease_table else {
        return Row::warn(
            "deployment id",
            format!("{id}: without serve.lease_table no install records its id, so a clash cannot be seen"),
            "set serve.lease_table (the CloudFormation stack creates one)",
        );
    };
    match record_install(aws, table, &id, cfg, now).await {
        Ok((mine, found)) => doctor::deployment_row(&id, &mine, found.as_ref(), now),
        Err(e) => failed("deployment id", &e, "dynamodb:GetItem and dynamodb:PutItem"),
    }
}

/// This install's record and the one found under its deployment id; this install's record is
/// written where there was none, this host's own or a gone install's (`bunker serve` writes it
/// at start and refreshes it every `INSTALL_RECORD_REFRESH_MINUTES`).
pub async fn record_install(
    aws: &Aws,
    table: &str,
    id: &str,
    cfg: &bunker_protocol::config::Config,
    now: Timestamp,
) -> Result<(InstallRecord, Option<InstallRecord>), PortError> {
    let key = doctor::install_key(id);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let mine = InstallRecord { fingerprint: doctor::fingerprint(cfg), host, seen: now.to_string() };
    let found = aws.install_record(table, &key).await?;
    if doctor::may_record(&mine, found.as_ref(), now) {
        aws.put_install_record(table, &key, &mine).await?;
    }
    Ok((mine, found))
}

async fn dump_tool(tool: &'static str) -> Row {
    let candidates: Vec<&'static str> =
        if tool == "mariadb-dump" { vec!["mariadb-dump", "mysqldump"] } else { vec![tool] };
    let found = tokio::task::spawn_blocking(move || {
        candidates.iter().find_map(|t| {
            let out = std::process::Command::new(t).arg("--version").output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
    })
    .await
    .ok()
    .flatten();
    let package = if tool == "pg_dump" { "postgresql-client" } else { "mariadb-client" };
    match found {
        Some(version) => Row::ok(format!("tool {tool}"), version),
        None => Row::fail(
            format!("tool {tool}"),
            format!("{tool} is not on PATH: export.rds_format = dump cannot dump such databases"),
            format!("install {package} (Debian/Ubuntu), as new as the newest server it dumps"),
        ),
    }
}

async fn dry_run(aws: &Aws, regions: &[String], kind: ResourceKind, set: &Arc<Resolved>, now: Timestamp) -> Row {
    let check = format!("create-backups {kind} (dry run)");
    let report = match crate::cli::runner(aws, regions, kind, set).await {
        Ok(addr) => {
            let run_id = bunker_actors::runner::run_id(now);
            addr.send(CreateBackups(RunOptions { now, dry_run: true, run_id, publish_report: false })).await
        }
        Err(e) => return Row::fail(check, format!("{:#}", e.error), "see the credentials row"),
    };
    match report {
        Ok(r) => dry_run_row(check, &r),
        Err(e) => Row::fail(check, format!("the run stopped: {e}"), "report this as a bug"),
    }
}

fn dry_run_row(check: String, r: &RunReport) -> Row {
    let s = &r.summary;
    let detail = format!("{} tagged resources: would create {}, skip {}", s.collected, s.succeeded, s.skipped);
    if r.status == RunStatus::Ok {
        return Row::ok(check, detail);
    }
    let first = r.entries.iter().find(|e| e.status == EntryStatus::Error);
    let why = first.and_then(|e| e.message.clone()).unwrap_or_default();
    Row::fail(
        check,
        format!("{detail}, {} failed: {why}", s.failed),
        "fix the first failure named; see `bunker <kind> create-backups --dry-run`",
    )
}
