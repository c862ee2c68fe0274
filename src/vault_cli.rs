//! `bunker vault list-recovery-points VAULT` and `bunker export recovery-point ARN --vault V`:
//! the AWS Backup half from the command line, on the same workflow the service runs.

use std::process::ExitCode;
use std::sync::Arc;

use actix::Actor;
use anyhow::anyhow;
use bunker_actors::engine::{Alerts, JobActor, JobEnd, Run};
use bunker_actors::metrics::Metrics;
use bunker_actors::vault_export::{archive_name, PointKey};
use bunker_protocol::config::Config;
use bunker_protocol::vault;
use clap::Subcommand;
use serde::Serialize;

use crate::aws::Aws;
use crate::exit::{runtime, usage, Fatal};

/// `bunker vault …`
#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// List a vault's recovery points: ARN, resource, created, status, and whether bunker has
    /// exported it (with the archive's URL, under export.to).
    ListRecoveryPoints {
        /// The vault's name.
        vault: String,
    },
}

#[derive(Serialize)]
struct Listed {
    arn: String,
    resource_type: String,
    resource_arn: String,
    created: Option<String>,
    status: String,
    /// `None`: unknown (no `export.to`, or a kind bunker does not export).
    exported: Option<bool>,
    archive: Option<String>,
}

/// Runs `bunker vault …`.
pub async fn run(aws: &Aws, region: &str, cfg: &Config, command: VaultCommand, json: bool) -> Result<ExitCode, Fatal> {
    let VaultCommand::ListRecoveryPoints { vault } = command;
    if !vault::is_vault_name(&vault) {
        return Err(usage(anyhow!("vault {vault:?}: not a vault name (2-50 letters, digits, '-' or '_')")));
    }
    let points = aws.vaults(region).list(&vault).await.map_err(|e| runtime(anyhow!(e)))?;
    let target = cfg.export_to.as_deref().map(|to| vault::target_of(to, &vault));
    let mut rows = Vec::new();
    for p in points {
        let archive = match (&target, archive_name(&p.holds(), &p.arn)) {
            (Some(to), Some(name)) => Some((to.clone(), format!("{name}.manifest.json"))),
            _ => None,
        };
        let exported = match &archive {
            Some((to, key)) => {
                let store = crate::archive_cli::target_store(aws, Some(region), to)?;
                Some(store.size(key).await.map_err(|e| runtime(anyhow!(e)))?.is_some())
            }
            None => None,
        };
        rows.push(Listed {
            archive: archive.filter(|_| exported == Some(true)).map(|(to, key)| format!("{to}/{key}")),
            arn: p.arn,
            resource_type: p.resource_type,
            resource_arn: p.resource_arn,
            created: p.created,
            status: p.status.to_string(),
            exported,
        });
    }
    print_rows(&rows, json);
    Ok(ExitCode::SUCCESS)
}

fn print_rows(rows: &[Listed], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(rows).expect("rows serialize"));
        return;
    }
    println!("{:<72} {:<9} {:<10} {:<25} EXPORTED", "RECOVERY POINT", "TYPE", "STATUS", "CREATED");
    for r in rows {
        let exported = match (r.exported, &r.archive) {
            (Some(true), Some(a)) => format!("yes {a}"),
            (Some(false), _) => "no".into(),
            _ => "-".into(),
        };
        let created = r.created.as_deref().unwrap_or("-");
        println!("{:<72} {:<9} {:<10} {:<25} {exported}", r.arn, r.resource_type, r.status, created);
    }
}

/// Runs `bunker export recovery-point ARN --vault VAULT [--to URL]`: one job of the vault
/// workflow (export, and with `export.delete_source` verify and delete), to its end.
pub async fn export_point(
    aws: &Aws,
    regions: &[String],
    cfg: &Config,
    arn: String,
    vault: String,
    to: Option<String>,
    json: bool,
) -> Result<ExitCode, Fatal> {
    if !vault::is_vault_name(&vault) {
        return Err(usage(anyhow!("--vault {vault:?}: not a vault name (2-50 letters, digits, '-' or '_')")));
    }
    let Some(to) = to.or_else(|| cfg.export_to.clone()) else {
        return Err(usage(anyhow!("no target: pass --to s3://bucket/prefix (or set export.to)")));
    };
    if !bunker_protocol::config::is_target(&to) {
        return Err(usage(anyhow!("--to {to:?}: expected s3://bucket/prefix or file:///directory")));
    }
    let region = arn_region(&arn).or_else(|| regions.first().cloned()).unwrap_or_default();
    let mut cfg = cfg.clone();
    (cfg.export_vaults, cfg.export_to) = (vec![vault.clone()], Some(to));
    let metrics = Arc::new(Metrics::default());
    let account = aws.account_id().await.map_err(|e| runtime(anyhow!(e).context("cannot identify the AWS account")))?;
    let regions = std::slice::from_ref(&region);
    let alerts = Alerts::new(aws.notifier(), cfg.error_sns_topic.clone());
    // With export.mount, an XFS or Btrfs recovery point goes through a temporary volume.
    let mount = cfg.export_mount.then(|| {
        let opts =
            crate::archive_cli::ExportOpts { sha256: cfg.export_sha256, ..crate::archive_cli::ExportOpts::service("") };
        let volumes = Arc::new(crate::mounted::volume_files(aws, &account, &cfg, regions, (opts, None)));
        let check = cfg.serve.check_interval.unsigned_abs();
        JobActor::new(volumes, check, metrics.clone(), alerts.clone()).start().recipient()
    });
    let logic = crate::services::vault_exports(aws, &account, &cfg, regions, metrics.clone(), aws.notifier(), mount)
        .ok_or_else(|| usage(anyhow!("nothing to export")))?;
    let jobs = JobActor::new(Arc::new(logic), cfg.serve.check_interval.unsigned_abs(), metrics, alerts).start();
    let key = PointKey { region, vault, arn };
    let report =
        jobs.send(Run(key)).await.map_err(|e| runtime(anyhow!("job actor: {e}")))?.map_err(|e| runtime(anyhow!(e)))?;
    let (state, reason) = (report.end.state(), report.end.reason().map(String::from));
    if json {
        let out = serde_json::json!({"recovery_point": report.key.arn, "state": state, "reason": reason, "entries": report.entries});
        println!("{}", serde_json::to_string_pretty(&out).expect("report serializes"));
    } else {
        let did: Vec<&str> = report
            .entries
            .iter()
            .filter(|e| e.status == bunker_protocol::report::EntryStatus::Ok)
            .map(|e| match e.operation {
                bunker_protocol::report::Operation::DeleteBackup => "verified and deleted",
                _ => "exported",
            })
            .collect();
        let did = if did.is_empty() { String::new() } else { format!(" ({})", did.join(", ")) };
        println!("{}: {state}{did}{}", report.key.arn, reason.map(|r| format!(": {r}")).unwrap_or_default());
    }
    Ok(match report.end {
        JobEnd::Done => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// The region an ARN names (`arn:aws:SERVICE:REGION:…`), if it names one.
fn arn_region(arn: &str) -> Option<String> {
    arn.split(':').nth(3).filter(|r| bunker_protocol::config::is_region(r)).map(String::from)
}
