//! Command line: parsing (clap), wiring the actor system, printing results, exit codes.
//!
//! Exit codes: 0 all ok, 1 partial failure (or AWS unreachable), 2 usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use actix::Actor;
use anyhow::{anyhow, Context};
use bunker_actors::runner::{CleanBackups, CreateBackups, GetInventory, Inventory, RunOptions};
use bunker_actors::{Runner, RunnerActor};
use bunker_protocol::backup::Owner;
use bunker_protocol::config::{self, Key};
use bunker_protocol::report::{RunReport, RunStatus};
use bunker_protocol::tags::format_timestamp;
use bunker_protocol::ResourceKind;
use clap::{Parser, Subcommand};
use jiff::Timestamp;
use serde::Serialize;

use crate::aws::Aws;
use crate::exit::{runtime, usage, Fatal};
use crate::settings::{self, FlagSettings};

/// bunker: tag-driven AWS backups with grandfather-father-son retention.
#[derive(Debug, Parser)]
#[command(name = "bunker", version, about, max_term_width = 100)]
pub struct Cli {
    /// TOML config file.
    #[arg(long, global = true, value_name = "FILE", env = "BUNKER_CONFIG")]
    config: Option<PathBuf>,
    /// Region to work in (repeatable); default: `regions` from the config, else the SDK's region.
    #[arg(long = "region", global = true, value_name = "REGION")]
    regions: Vec<String>,
    /// Clock override, RFC 3339 (e.g. 2026-11-21T01:00:00Z): for planning and simulating calendars.
    #[arg(long, global = true, value_name = "RFC3339")]
    now: Option<String>,
    /// Change nothing; report what would be done.
    #[arg(long, global = true)]
    dry_run: bool,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Narrow the run to one resource id.
    #[arg(long, global = true, value_name = "ID")]
    select: Option<String>,
    /// Retention type for backups created by this run (daily, weekly, monthly, yearly or a custom name).
    #[arg(long, global = true, value_name = "NAME")]
    retention: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// EBS volumes → snapshots.
    Ebs(KindArgs),
    /// EC2 instances → AMIs.
    Ec2ami(KindArgs),
    /// RDS DB instances → DB snapshots.
    Rds(KindArgs),
    /// Aurora / Multi-AZ clusters → cluster snapshots.
    #[command(name = "rds-cluster", alias = "rds_cluster")]
    RdsCluster(KindArgs),
    /// DocumentDB clusters → cluster snapshots.
    Docdb(KindArgs),
    /// Redshift clusters → manual snapshots.
    Redshift(KindArgs),
    /// Show every backup of a kind with its expiry and what clean-backups would do; changes nothing.
    Plan {
        /// ebs, ec2ami, rds, rds-cluster, docdb or redshift.
        kind: ResourceKind,
    },
    /// Run the service: scheduler, event watcher (SQS), copy/share to DR regions and accounts,
    /// reconciliation, /healthz and /metrics. Stops cleanly on SIGTERM.
    Serve,
    /// Export a snapshot, image file or directory as a verifiable, seekable zstd archive.
    Export(crate::archive_cli::ExportArgs),
    /// Check every chunk hash and the whole-image hash of an archive (exit 1 names the first
    /// bad chunk).
    Verify {
        /// The archive or its manifest: s3://bucket/key or file:///path.
        url: String,
        /// Database dumps: also check the stream with the engine's own tool
        /// (`pg_restore --list`) or for the dump tool's header and trailer.
        #[arg(long)]
        deep: bool,
    },
    /// List a tar archive's entries from its catalog (one small object read; the archive
    /// itself is not read).
    Ls {
        /// The archive, its manifest or its catalog: s3://bucket/key or file:///path.
        url: String,
        /// Only this path and what is under it (e.g. etc/nginx).
        path: Option<String>,
    },
    /// Restore an archive (and, for an incremental one, its bases) to a new file or a new
    /// EBS snapshot.
    Restore {
        /// The archive or its manifest: s3://bucket/key or file:///path.
        url: String,
        /// Write the image to this new file (never overwritten; written as PATH.partial and
        /// renamed once its hashes match).
        #[arg(long, value_name = "PATH", conflicts_with = "to_snapshot")]
        to_file: Option<PathBuf>,
        /// Write a new EBS snapshot (StartSnapshot, PutSnapshotBlock, CompleteSnapshot) and
        /// print its id.
        #[arg(long, conflicts_with = "to_database")]
        to_snapshot: bool,
        /// A tar archive: restore its entries (with --path, only those) into this directory,
        /// reading only the frames that hold them; each file is checked against its SHA-256
        /// in the catalog. Nothing is written through a symlink or outside DIR.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["to_file", "to_snapshot", "to_database"])]
        to_dir: Option<PathBuf>,
        /// With --to-dir: restore this path and what is under it (repeatable; e.g. etc/nginx).
        #[arg(long = "path", value_name = "PATH", requires = "to_dir")]
        paths: Vec<String>,
        /// With --to-dir: replace existing files and symlinks (never a directory).
        #[arg(long, requires = "to_dir")]
        overwrite: bool,
        /// A database dump: pipe it into this server (postgres://USER@HOST:PORT/[DB],
        /// mysql://…), creating the database (the URL's, else the dumped one's name); a
        /// globals archive is applied to the server (restore it first).
        #[arg(long, value_name = "URL", conflicts_with = "to_file")]
        to_database: Option<String>,
        #[command(flatten)]
        connect: crate::dump_cli::ConnectOpts,
    },
    /// Find entries by glob in a tar archive's catalog, or in the catalogs of every archive
    /// under a prefix (only catalogs and manifests are read).
    Find {
        /// An archive (s3://bucket/key.tar.zst, file:///path), or a prefix (s3://bucket/prefix,
        /// file:///directory) whose archives are searched.
        url: String,
        /// A shell glob: without a `/` it matches names (*.conf), with one whole paths
        /// (etc/**/nginx.conf).
        glob: String,
        /// Only archives exported at or after this time (RFC 3339, or a date: 2026-12-01).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
    /// AWS Backup vaults: list recovery points and whether bunker exported them.
    Vault {
        #[command(subcommand)]
        command: crate::vault_cli::VaultCommand,
    },
    /// Check everything the service will need before trusting it: credentials, regions, the
    /// queues, topics, lease table, vaults, export bucket and KMS keys of the config, the
    /// deployment id, the dump tools, and a dry run of today's create-backups. A table of
    /// OK/WARN/FAIL with the fix for each; exit 1 on any FAIL.
    Doctor,
    /// Print shell completions for bash, zsh, fish, elvish or powershell (the .deb installs
    /// them).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages — bunker(1) and one per subcommand, generated from this help —
    /// into a directory (the .deb installs them).
    Man {
        /// Where to write them (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, clap::Args)]
struct KindArgs {
    #[command(subcommand)]
    action: KindAction,
}

#[derive(Debug, Clone, Copy, Subcommand)]
#[allow(clippy::enum_variant_names)] // the names are the subcommands users type
enum KindAction {
    /// Create one backup of every resource tagged bunker:create_backup=true.
    #[command(alias = "create_backups")]
    CreateBackups,
    /// Delete this deployment's expired backups.
    #[command(alias = "clean_backups")]
    CleanBackups,
    /// List this deployment's backups with their expiry.
    #[command(alias = "list_backups")]
    ListBackups,
    /// Copy every backup this deployment owns to the DR regions and share it (and its copies)
    /// with the share accounts; waits until everything exists. Idempotent.
    #[command(alias = "replicate_backups")]
    ReplicateBackups,
    /// In a data-bunker account: copy in every backup the source_accounts shared with it
    /// (ebs and rds so far). Idempotent: a repeated or interrupted pull resumes.
    #[command(alias = "pull_shared_backups")]
    PullBackups,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every effective value and the layer it came from.
    Show {
        /// Include a resource's `bunker:config:*` tags (looked up in AWS).
        #[arg(long, value_name = "ID")]
        resource: Option<String>,
        /// The resource's kind (default: guessed from the id: vol- → ebs, i- → ec2ami).
        #[arg(long, value_name = "KIND")]
        kind: Option<ResourceKind>,
    },
}

/// Parses the command line, runs it, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Completions { shell } => return print_completions(*shell),
        Command::Man { out_dir } => return print_man(out_dir),
        _ => {}
    }
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(Fatal { code, error }) => {
            eprintln!("bunker: {error:#}");
            ExitCode::from(code)
        }
    }
}

/// Writes `shell`'s completion script for every command and flag to stdout.
fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "bunker", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Writes bunker(1) and one page per subcommand (bunker-export(1), …) into `dir`, with
/// clap_mangen: the pages are the commands' own help, so they cannot drift from the binary.
fn print_man(dir: &std::path::Path) -> ExitCode {
    use clap::CommandFactory;
    let written = std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(Cli::command(), dir));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bunker: man --out-dir {}: cannot write the pages there ({e})", dir.display());
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUNKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("BUNKER_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(cli: Cli) -> Result<ExitCode, Fatal> {
    let now = match &cli.now {
        Some(s) => s
            .parse::<Timestamp>()
            .map_err(|e| usage(anyhow!("--now {s:?}: not an RFC 3339 time such as 2026-11-21T01:00:00Z ({e})")))?,
        None => Timestamp::now(),
    };
    let flags =
        FlagSettings { regions: &cli.regions, select: cli.select.as_deref(), retention: cli.retention.as_deref() };
    let (base, warnings) = settings::layers(cli.config.as_deref(), &flags).map_err(usage)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let set = Arc::new(config::Resolved::new(base).map_err(usage)?);
    require_owner(&cli.command, &set.config, cli.dry_run).map_err(usage)?;
    let opts =
        RunOptions { now, dry_run: cli.dry_run, run_id: bunker_actors::runner::run_id(now), publish_report: true };

    // actix on a multi-thread tokio runtime: AWS I/O and the actors share it.
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
    });
    system.block_on(async move {
        let cfg = &set.config;
        // A purely local export, verify or restore (files in, files out) touches no AWS
        // endpoint at all: no credential chain, no instance metadata, no region lookup.
        let aws = match reaches_aws(&cli.command) {
            true => Aws::load().await.with_roles(&cfg.roles, cfg.deployment.as_deref().unwrap_or(&cfg.name)).await,
            false => Aws::offline(),
        };
        let aws = expect_bucket_owner(aws, &cli.command, cfg).await?;
        let region = cfg.regions.first().cloned().or_else(|| aws.default_region());
        // Exports to and from local files reach no AWS service: they need no region.
        match &cli.command {
            Command::Export(_)
            | Command::Verify { .. }
            | Command::Restore { .. }
            | Command::Ls { .. }
            | Command::Find { .. } => {}
            _ if region.is_none() => {
                return Err(usage(anyhow!(
                    "no region: set `regions` in the config file, pass --region, or set AWS_REGION"
                )))
            }
            _ => {}
        }
        let regions = if cfg.regions.is_empty() { region.iter().cloned().collect() } else { cfg.regions.clone() };
        let region = region.as_deref();
        match cli.command {
            Command::Config { command: ConfigCommand::Show { resource, kind } } => {
                config_show(&aws, &regions, &set, resource, kind, cli.json).await
            }
            Command::Export(args) => match (args.recovery_point(), args.rds_snapshot()) {
                (Some((arn, vault, to)), _) => {
                    crate::vault_cli::export_point(&aws, &regions, cfg, arn, vault, to, cli.json).await
                }
                (None, Some(dump)) => crate::dump_cli::export_snapshot(&aws, region, cfg, dump, cli.json).await,
                (None, None) => match args.mounted_files() {
                    Some((snapshot, opts)) => {
                        crate::mounted::export_cli(&aws, region, cfg, snapshot, opts, cli.json).await
                    }
                    None => archive_result(crate::archive_cli::export(&aws, region, args, cli.json).await),
                },
            },
            Command::Vault { command } => {
                crate::vault_cli::run(&aws, region.unwrap_or_default(), cfg, command, cli.json).await
            }
            Command::Verify { url, deep: true } => {
                let (store, key) = crate::archive_cli::object_store(&aws, region, &url)?;
                archive_result(crate::dump_cli::verify(store, &key, cli.json).await)
            }
            Command::Ls { url, path } => {
                archive_result(crate::archive_cli::ls(&aws, region, &url, path.as_deref(), cli.json).await)
            }
            Command::Verify { url, deep: false } => {
                archive_result(crate::archive_cli::verify(&aws, region, &url, cli.json).await)
            }
            Command::Restore { url, to_database: Some(target), connect, .. } => {
                let (store, key) = crate::archive_cli::object_store(&aws, region, &url)?;
                archive_result(crate::dump_cli::restore(&aws, region, store, &key, &target, &connect, cli.json).await)
            }
            Command::Restore { url, to_dir: Some(dir), paths, overwrite, .. } => archive_result(
                crate::archive_cli::restore_dir(&aws, region, &url, &paths, &dir, overwrite, cli.json).await,
            ),
            Command::Find { url, glob, since } => {
                archive_result(crate::archive_cli::find(&aws, region, &url, &glob, since.as_deref(), cli.json).await)
            }
            Command::Restore { url, to_file, to_snapshot, .. } => {
                archive_result(crate::archive_cli::restore(&aws, region, &url, to_file, to_snapshot, cli.json).await)
            }
            Command::Completions { .. } | Command::Man { .. } => Ok(ExitCode::SUCCESS), // handled in `main`
            Command::Doctor => {
                let report = crate::doctor::run(&aws, &regions, &set, now).await;
                crate::doctor::print(&report, cli.json);
                Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
            }
            Command::Serve => {
                crate::serve::serve(&aws, set.clone(), regions).await.map_err(runtime)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Plan { kind } => {
                let inv = inventory(&aws, &regions, kind, &set, now).await?;
                print_plan(&inv, cli.json);
                Ok(exit_for_failures(&inv))
            }
            Command::Ebs(a) => kind_action(&aws, &regions, ResourceKind::Ebs, a.action, &set, &opts, cli.json).await,
            Command::Ec2ami(a) => {
                kind_action(&aws, &regions, ResourceKind::Ec2ami, a.action, &set, &opts, cli.json).await
            }
            Command::Rds(a) => kind_action(&aws, &regions, ResourceKind::Rds, a.action, &set, &opts, cli.json).await,
            Command::RdsCluster(a) => {
                kind_action(&aws, &regions, ResourceKind::RdsCluster, a.action, &set, &opts, cli.json).await
            }
            Command::Docdb(a) => {
                kind_action(&aws, &regions, ResourceKind::Docdb, a.action, &set, &opts, cli.json).await
            }
            Command::Redshift(a) => {
                kind_action(&aws, &regions, ResourceKind::Redshift, a.action, &set, &opts, cli.json).await
            }
        }
    })
}

/// Commands that delete backups (`clean-backups` unless `--dry-run`, a `serve` with a clean
/// schedule) need an explicit `deployment`; refused before anything reaches AWS.
fn require_owner(command: &Command, cfg: &config::Config, dry_run: bool) -> Result<(), config::ConfigError> {
    match command {
        Command::Ebs(a)
        | Command::Ec2ami(a)
        | Command::Rds(a)
        | Command::RdsCluster(a)
        | Command::Docdb(a)
        | Command::Redshift(a)
            if matches!(a.action, KindAction::CleanBackups) && !dry_run =>
        {
            cfg.require_deployment("clean-backups")
        }
        Command::Serve
            if cfg.serve.schedule_clean.is_some()
                || cfg.serve.schedule_per_kind.iter().any(|(_, action, cron)| *action == "clean" && cron.is_some()) =>
        {
            cfg.require_deployment("serve (with its schedule.clean)")
        }
        _ => Ok(()),
    }
}

/// Whether a command needs AWS: everything but `export file|path`, `verify` and `restore`
/// whose every location is local.
fn reaches_aws(command: &Command) -> bool {
    let s3 = |url: &str| url.starts_with("s3://");
    match command {
        Command::Export(args) => args.reaches_aws(),
        Command::Verify { url, .. } | Command::Ls { url, .. } | Command::Find { url, .. } => s3(url),
        Command::Restore { url, to_snapshot, connect, .. } => s3(url) || *to_snapshot || connect.uses_aws(),
        Command::Completions { .. } | Command::Man { .. } => false,
        _ => true,
    }
}

/// Requests to `export.to`'s bucket carry its expected owner (`export.bucket_owner`, else
/// this account) for the commands that read or write archives there.
async fn expect_bucket_owner(aws: Aws, command: &Command, cfg: &config::Config) -> Result<Aws, Fatal> {
    let Some(bucket) = cfg.export_to.as_deref().and_then(bunker_protocol::doctor::s3_bucket) else { return Ok(aws) };
    let uses_archives = matches!(
        command,
        Command::Export(_)
            | Command::Verify { .. }
            | Command::Restore { .. }
            | Command::Ls { .. }
            | Command::Find { .. }
            | Command::Serve
            | Command::Vault { .. }
    );
    if !uses_archives || !reaches_aws(command) {
        return Ok(aws);
    }
    let owner = match &cfg.export_bucket_owner {
        Some(owner) => owner.clone(),
        None => aws.account_id().await.map_err(|e| {
            runtime(anyhow!(e).context("cannot identify the AWS account that must own export.to's bucket"))
        })?,
    };
    Ok(aws.expecting_owner(bucket, &owner))
}

fn archive_result(r: Result<u8, Fatal>) -> Result<ExitCode, Fatal> {
    r.map(ExitCode::from)
}

pub(crate) async fn runner(
    aws: &Aws,
    regions: &[String],
    kind: ResourceKind,
    set: &Arc<config::Resolved>,
) -> Result<actix::Addr<RunnerActor>, Fatal> {
    let account = aws
        .account_id()
        .await
        .map_err(|e| runtime(anyhow!(e).context("cannot identify the AWS account (check credentials)")))?;
    let targets = regions.iter().map(|r| aws.backup_control(kind, r)).collect();
    let events = crate::services::outcomes(aws, &set.config, regions, None);
    let runner = Runner::new(account, kind, targets, aws.notifier(), set.clone()).with_outcomes(events);
    Ok(RunnerActor::new(Arc::new(runner)).start())
}

async fn inventory(
    aws: &Aws,
    regions: &[String],
    kind: ResourceKind,
    set: &Arc<config::Resolved>,
    now: Timestamp,
) -> Result<Inventory, Fatal> {
    let addr = runner(aws, regions, kind, set).await?;
    addr.send(GetInventory { now }).await.context("runner actor stopped").map_err(runtime)
}

async fn kind_action(
    aws: &Aws,
    regions: &[String],
    kind: ResourceKind,
    action: KindAction,
    set: &Arc<config::Resolved>,
    opts: &RunOptions,
    json: bool,
) -> Result<ExitCode, Fatal> {
    let report = match action {
        KindAction::ListBackups => {
            let inv = inventory(aws, regions, kind, set, opts.now).await?;
            print_list(&inv, json);
            return Ok(exit_for_failures(&inv));
        }
        KindAction::ReplicateBackups => replicate(aws, regions, kind, &set.config, opts).await?,
        KindAction::PullBackups => {
            let cfg = &set.config;
            if cfg.replication.source_accounts.is_empty() {
                return Err(usage(anyhow!("nothing to pull: set source_accounts in the config")));
            }
            let account = aws
                .account_id()
                .await
                .map_err(|e| runtime(anyhow!(e).context("cannot identify the AWS account (check credentials)")))?;
            let metrics = Arc::new(bunker_actors::metrics::Metrics::default());
            let clock = Arc::new(bunker_actors::engine::TokioClock::starting_at(opts.now));
            let p = Arc::new(
                crate::services::puller(aws, &account, cfg, regions, &[kind], metrics.clone()).with_clock(clock),
            );
            let alerts = bunker_actors::engine::Alerts::new(aws.notifier(), cfg.error_sns_topic.clone());
            let check = cfg.serve.check_interval.unsigned_abs();
            let jobs = bunker_actors::engine::JobActor::new(p.clone(), check, metrics, alerts).start();
            p.pull_report(&jobs.recipient(), kind, opts.run_id.clone()).await
        }
        KindAction::CreateBackups => {
            let addr = runner(aws, regions, kind, set).await?;
            addr.send(CreateBackups(opts.clone())).await.context("runner actor stopped").map_err(runtime)?
        }
        KindAction::CleanBackups => {
            let addr = runner(aws, regions, kind, set).await?;
            addr.send(CleanBackups(opts.clone())).await.context("runner actor stopped").map_err(runtime)?
        }
    };
    print_report(&report, json);
    Ok(if report.status == RunStatus::Ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `<kind> replicate-backups`: one reconciliation pass for one kind, waited for.
async fn replicate(
    aws: &Aws,
    regions: &[String],
    kind: ResourceKind,
    cfg: &config::Config,
    opts: &RunOptions,
) -> Result<RunReport, Fatal> {
    use bunker_actors::engine::Run;
    use bunker_actors::replicator::ReplicatorActor;
    if !cfg.replication.is_enabled() {
        return Err(usage(anyhow!("nothing to do: set dr_regions and/or share_accounts in the config")));
    }
    if !kind.copies_per_backup() && cfg.replication.share_accounts.is_empty() {
        return Err(usage(anyhow!(
            "nothing to replicate for {kind}: its DR copies are made by the cluster's cross-region copy, \
             which create-backups sets from dr_regions; set share_accounts to share its backups"
        )));
    }
    let account = aws
        .account_id()
        .await
        .map_err(|e| runtime(anyhow!(e).context("cannot identify the AWS account (check credentials)")))?;
    let leases: Arc<dyn bunker_actors::ports::Leases> = match &cfg.serve.lease_table {
        Some(t) => aws.leases(t.clone()),
        None => Arc::new(bunker_actors::leases::MemoryLeases::default()),
    };
    let metrics = Arc::new(bunker_actors::metrics::Metrics::default());
    let holder = crate::services::holder_id();
    let logic =
        Arc::new(crate::services::replicator(aws, &account, cfg, regions, &[kind], leases, &holder, metrics.clone()));
    let started = jiff::Timestamp::now();
    let owned = logic.owned_backups(kind).await.map_err(|e| runtime(anyhow!(e).context("listing backups")))?;
    let (check, alerts) = (cfg.serve.check_interval.unsigned_abs(), logic.alerts());
    let addr = ReplicatorActor::new(logic.clone(), check, metrics, alerts).start();
    let results = futures::future::join_all(owned.iter().map(|b| addr.send(Run(b.clone())))).await;
    let mut entries = Vec::new();
    for (b, r) in owned.iter().zip(results) {
        match r {
            Ok(Ok(job)) => entries.extend(job.entries),
            _ => entries.push(bunker_protocol::report::Entry {
                operation: bunker_protocol::report::Operation::CopyBackup,
                status: bunker_protocol::report::EntryStatus::Error,
                region: b.region.clone(),
                resource_id: None,
                backup_id: Some(b.id.clone()),
                backup_name: None,
                retention: None,
                message: Some("replication did not finish".into()),
            }),
        }
    }
    let deployment = regions.iter().map(|r| cfg.deployment_id(&account, r)).collect::<Vec<_>>().join(",");
    Ok(RunReport::new(
        opts.run_id.clone(),
        account,
        regions.to_vec(),
        kind,
        "replicate-backups",
        deployment,
        false,
        started,
        jiff::Timestamp::now(),
        owned.len(),
        entries,
    ))
}

fn exit_for_failures(inv: &Inventory) -> ExitCode {
    for f in &inv.failures {
        eprintln!("bunker: region {}: {}", f.region, f.message.as_deref().unwrap_or("listing failed"));
    }
    if inv.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_json<T: Serialize>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).expect("output serializes"));
}

fn print_report(report: &RunReport, json: bool) {
    if json {
        return print_json(report);
    }
    for e in &report.entries {
        let what = match (&e.resource_id, &e.backup_id, &e.backup_name) {
            (Some(r), Some(b), _) => format!("{r} -> {b}"),
            (Some(r), None, Some(n)) => format!("{r} -> {n}"),
            (Some(r), None, None) => r.clone(),
            (None, Some(b), _) => b.clone(),
            _ => String::new(),
        };
        println!(
            "{:<8} {:<13} {:<14} {}{}{}",
            format!("{:?}", e.status).to_uppercase(),
            format!("{:?}", e.operation),
            e.region,
            what,
            e.retention.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
            e.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
        );
    }
    if report.entries_omitted > 0 {
        println!("… {} more entries omitted", report.entries_omitted);
    }
    println!("{}", report.headline());
}

/// One row of `list-backups --json` and `plan --json`.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    name: &'a str,
    kind: ResourceKind,
    region: &'a str,
    account: &'a str,
    source: &'a str,
    created_at: String,
    retention: String,
    owner: Owner,
    available: bool,
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<bunker_protocol::retention::Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn rows(inv: &Inventory, with_decision: bool) -> Vec<Row<'_>> {
    let mut rows: Vec<Row<'_>> = inv
        .regions
        .iter()
        .flat_map(|r| &r.planned)
        .filter(|p| with_decision || p.backup.owner != Owner::Foreign)
        .map(|p| {
            let b = &p.backup;
            Row {
                id: &b.id,
                name: &b.name,
                kind: b.kind,
                region: &b.region,
                account: &b.account,
                source: &b.source,
                created_at: format_timestamp(b.created_at),
                retention: b.retention.to_string(),
                owner: b.owner,
                available: b.available,
                expires_at: p.expires_at.map(format_timestamp),
                action: with_decision.then_some(p.action),
                reason: with_decision.then(|| p.reason.to_string()),
            }
        })
        .collect();
    rows.sort_by(|a, b| (a.region, a.source, &a.created_at, a.id).cmp(&(b.region, b.source, &b.created_at, b.id)));
    rows
}

fn print_list(inv: &Inventory, json: bool) {
    let rows = rows(inv, false);
    if json {
        return print_json(&rows);
    }
    println!("{:<24} {:<12} {:<22} {:<21} {:<9} {:<21}", "ID", "REGION", "SOURCE", "CREATED", "RETENTION", "EXPIRES");
    for r in &rows {
        println!(
            "{:<24} {:<12} {:<22} {:<21} {:<9} {:<21}",
            r.id,
            r.region,
            r.source,
            r.created_at,
            r.retention,
            r.expires_at.as_deref().unwrap_or("-")
        );
    }
    println!("{} backups", rows.len());
}

fn print_plan(inv: &Inventory, json: bool) {
    let rows = rows(inv, true);
    let unreadable: Vec<String> = inv.regions.iter().flat_map(|r| &r.unreadable).map(|u| u.to_string()).collect();
    if json {
        #[derive(Serialize)]
        struct Plan<'a> {
            backups: Vec<Row<'a>>,
            unreadable: Vec<String>,
        }
        return print_json(&Plan { backups: rows, unreadable });
    }
    println!(
        "{:<24} {:<22} {:<21} {:<9} {:<21} {:<7} REASON",
        "ID", "SOURCE", "CREATED", "RETENTION", "EXPIRES", "ACTION"
    );
    for r in &rows {
        println!(
            "{:<24} {:<22} {:<21} {:<9} {:<21} {:<7} {}",
            r.id,
            r.source,
            r.created_at,
            r.retention,
            r.expires_at.as_deref().unwrap_or("-"),
            format!("{:?}", r.action.expect("plan rows carry an action")).to_lowercase(),
            r.reason.as_deref().unwrap_or("")
        );
    }
    for u in &unreadable {
        println!("left alone: {u}");
    }
    let deletes = rows.iter().filter(|r| r.action == Some(bunker_protocol::retention::Action::Delete)).count();
    println!("{} backups: {} to delete, {} to keep", rows.len(), deletes, rows.len() - deletes);
}

async fn config_show(
    aws: &Aws,
    regions: &[String],
    set: &config::Resolved,
    resource: Option<String>,
    kind: Option<ResourceKind>,
    json: bool,
) -> Result<ExitCode, Fatal> {
    let mut layers = set.layers.clone();
    if let Some(id) = &resource {
        let kind = kind
            .or_else(|| match id.split('-').next() {
                Some("vol") => Some(ResourceKind::Ebs),
                Some("i") => Some(ResourceKind::Ec2ami),
                _ => None,
            })
            .ok_or_else(|| usage(anyhow!("--resource {id}: cannot tell its kind from the id; add --kind KIND")))?;
        let mut found = None;
        for region in regions {
            let resources = aws.backup_control(kind, region).list_resources().await.map_err(runtime)?;
            if let Some(r) = resources.into_iter().find(|r| r.id == *id) {
                found = Some(r);
                break;
            }
        }
        let r = found
            .ok_or_else(|| runtime(anyhow!("--resource {id}: no {kind} with that id in {}", regions.join(", "))))?;
        layers.extend(config::tag_settings(&r.tags, &r.id, set.config.compat_shelvery).map_err(usage)?);
    }
    let cfg = config::resolve(&layers).map_err(usage)?;
    #[derive(Serialize)]
    struct Shown<'a> {
        key: &'static str,
        value: &'a str,
        source: &'a config::Source,
        source_text: String,
    }
    let shown: Vec<Shown<'_>> = Key::all()
        .filter_map(|k| cfg.effective.iter().find(|s| s.key == k))
        .map(|s| Shown { key: s.key.name(), value: &s.value, source: &s.source, source_text: s.source.to_string() })
        .collect();
    if json {
        print_json(&shown);
    } else {
        for s in &shown {
            println!("{:<18} = {:<40} # {}", s.key, format!("{:?}", s.value), s.source_text);
        }
        for k in Key::all().filter(|k| !cfg.effective.iter().any(|s| s.key == *k)) {
            println!("{:<18}   (unset)", k.name());
        }
    }
    Ok(ExitCode::SUCCESS)
}
