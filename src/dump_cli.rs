//! `bunker export database URL`, `bunker verify --deep` of a dump, and `bunker restore
//! --to-database URL`: where the password comes from, the archive names, the output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use bunker_actors::dump::restore::{restore_database, verify_deep};
use bunker_actors::dump::{dump_server, Connection, DumpRequest, Secret, Server};
use bunker_actors::ports::ArchiveStore;
use bunker_actors::stream::archive_reader::Archive;
use bunker_actors::stream::{Progress, StreamError, Tuning};
use bunker_protocol::archive::Source;
use bunker_protocol::dump::{encode_name, DbUrl};

use crate::aws::Aws;
use crate::exit::{usage, Fatal};

/// How to reach a database server: the password's source, TLS verification.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectOpts {
    /// A password file in `.pgpass` form (host:port:database:user:password, `*` matches
    /// anything), mode 0600; default: PGPASSWORD / MYSQL_PWD, then the client's own
    /// (`~/.pgpass`).
    #[arg(long, value_name = "FILE", conflicts_with = "password_ssm")]
    password_file: Option<PathBuf>,
    /// The password from this SSM Parameter Store parameter (a SecureString, decrypted),
    /// in the region of `--region` / the config.
    #[arg(long, value_name = "NAME")]
    password_ssm: Option<String>,
    /// Verify the server's certificate against this CA bundle (e.g. AWS's RDS bundle);
    /// TLS is then required. Without it, TLS is required whenever the server offers it.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

/// `bunker export database …`
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// postgres://USER@HOST:PORT/[DB] or mysql://USER@HOST:PORT/[DB] (no DB: every user
    /// database, and PostgreSQL's roles).
    url: String,
    /// Where to: s3://bucket/prefix or file:///directory.
    #[arg(long, value_name = "URL")]
    to: String,
    /// Archive name stem (default: HOST-PORT-TIME, the time in UTC): STEM.db-DATABASE and
    /// STEM.globals.
    #[arg(long)]
    name: Option<String>,
    /// zstd level, 1–19.
    #[arg(long, default_value_t = Tuning::LEVEL)]
    level: i32,
    /// Also record each archive's whole-image SHA-256 (for `sha256sum`) beside its BLAKE3.
    #[arg(long)]
    sha256: bool,
    #[command(flatten)]
    connect: ConnectOpts,
}

impl DatabaseArgs {
    /// Whether the target is in S3.
    pub fn reaches_aws(&self) -> bool {
        self.to.starts_with("s3://") || self.connect.uses_aws()
    }

    /// The `--to` URL.
    pub fn target(&self) -> &str {
        &self.to
    }
}

fn input(msg: String) -> Fatal {
    usage(anyhow!(msg))
}

fn fail(context: &str, e: StreamError) -> Fatal {
    let code = if matches!(e, StreamError::Input(_)) { 2 } else { 1 };
    Fatal { code, error: anyhow!("{context}: {e}") }
}

impl ConnectOpts {
    /// Whether the password comes from AWS (SSM).
    pub fn uses_aws(&self) -> bool {
        self.password_ssm.is_some()
    }
}

/// The server behind a URL, with its password from the options (a file, SSM in `region`)
/// or the environment.
pub async fn server(aws: &Aws, region: Option<&str>, url: &str, opts: &ConnectOpts) -> Result<Server, Fatal> {
    let url = DbUrl::parse(url).map_err(input)?;
    let password = match (&opts.password_file, &opts.password_ssm) {
        (Some(f), _) => Some(password_from_file(f, &url)?),
        (None, Some(name)) => Some(password_from_ssm(aws, region, name).await?),
        (None, None) => std::env::var(url.family.password_env()).ok().filter(|p| !p.is_empty()).map(Secret::new),
    };
    Ok(Server { url, password, tls_ca: opts.tls_ca.clone(), tools_dir: None })
}

async fn password_from_ssm(aws: &Aws, region: Option<&str>, name: &str) -> Result<Secret, Fatal> {
    let region =
        region.ok_or_else(|| input("--password-ssm needs a region: pass --region or set AWS_REGION".into()))?;
    match aws.secrets(region).get(name).await {
        Ok(Some(p)) => Ok(Secret::new(p)),
        Ok(None) => Err(input(format!("--password-ssm {name}: no such parameter in {region}"))),
        Err(e) => Err(crate::exit::runtime(anyhow!("--password-ssm {name}: {e}"))),
    }
}

/// The first matching line of a `.pgpass`-style file (fields may be `*`; `\:` and `\\`
/// are escapes). The file must not be readable by others.
fn password_from_file(path: &Path, url: &DbUrl) -> Result<Secret, Fatal> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| input(format!("--password-file {name}: {e}")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(input(format!(
            "--password-file {name} is readable by others (mode {:o}): chmod 600 it",
            meta.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| input(format!("--password-file {name}: {e}")))?;
    let port = url.port.to_string();
    let db = url.database.as_deref().unwrap_or("*");
    let wanted = [url.host.as_str(), port.as_str(), db, url.user.as_str()];
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()) {
        let fields = split_pgpass(line);
        if fields.len() == 5 && fields[..4].iter().zip(wanted).all(|(f, w)| f == "*" || f == w) {
            return Ok(Secret::new(fields[4].clone()));
        }
    }
    Err(input(format!("--password-file {name}: no line matches {}:{port}:{db}:{}", url.host, url.user)))
}

fn split_pgpass(line: &str) -> Vec<String> {
    let (mut fields, mut cur, mut chars) = (Vec::new(), String::new(), line.chars());
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// `bunker export database URL --to …`
pub async fn export(
    aws: &Aws,
    region: Option<&str>,
    store: Arc<dyn ArchiveStore>,
    args: DatabaseArgs,
    json: bool,
) -> Result<u8, Fatal> {
    if !(1..=19).contains(&args.level) {
        return Err(input(format!("--level {}: must be 1 to 19", args.level)));
    }
    let server = server(aws, region, &args.url, &args.connect).await?;
    let stem = match &args.name {
        Some(n) => n.clone(),
        None => {
            let now = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
            format!("{}-{}-{now}", encode_name(&server.url.host), server.url.port)
        }
    };
    bunker_protocol::archive::check_name(&stem).map_err(input)?;
    let source = Source { kind: "database".into(), id: server.url.display(), ..Source::default() };
    let conn = Connection::open(server).await.map_err(|e| fail("export failed", e))?;
    let req = DumpRequest { stem, source, level: args.level, sha256: args.sha256, role_passwords: true };
    let summary =
        dump_server(&conn, store, &req, Tuning::default(), None).await.map_err(|e| fail("export failed", e))?;
    crate::archive_cli::print_value(&summary, json, |s| {
        let lines: Vec<String> = s
            .archives
            .iter()
            .map(|a| {
                let what = a.database.as_deref().map(|d| format!("database {d}")).unwrap_or("globals".into());
                format!(
                    "  {what}: {} ({} bytes, {} archived) by {}",
                    a.export.archive, a.export.bytes_in, a.export.archive_size, a.tool
                )
            })
            .collect();
        format!("dumped {} ({}, TLS {}):\n{}", s.server, s.server_version, s.tls, lines.join("\n"))
    });
    Ok(0)
}

/// `bunker verify --deep` of a dump archive.
pub async fn verify(store: Arc<dyn ArchiveStore>, key: &str, json: bool) -> Result<u8, Fatal> {
    let progress = Progress::default();
    let report = async { verify_deep(Archive::open(store, key).await?, &progress, None).await }
        .await
        .map_err(|e| fail("verify failed", e))?;
    crate::archive_cli::print_value(&report, json, |r| {
        format!(
            "ok: {} — {} bytes{}; {}",
            r.verify.archive,
            r.verify.image_size,
            crate::archive_cli::hashes_text(r.verify.image_blake3.as_deref(), r.verify.image_sha256.as_deref()),
            r.deep
        )
    });
    Ok(0)
}

/// `bunker restore ARCHIVE --to-database URL`
pub async fn restore(
    aws: &Aws,
    region: Option<&str>,
    store: Arc<dyn ArchiveStore>,
    key: &str,
    url: &str,
    connect: &ConnectOpts,
    json: bool,
) -> Result<u8, Fatal> {
    let mut server = server(aws, region, url, connect).await?;
    let into = server.url.database.take();
    let conn = Connection::open(server).await.map_err(|e| fail("restore failed", e))?;
    let progress = Progress::default();
    let report = async { restore_database(Archive::open(store, key).await?, &conn, into.as_deref(), &progress).await }
        .await
        .map_err(|e| fail("restore failed", e))?;
    crate::archive_cli::print_value(&report, json, |r| match &r.database {
        Some(db) => format!("restored {} into database {db} on {}", r.verify.archive, r.server),
        None => {
            format!("applied the globals {} to {} ({} already existed)", r.verify.archive, r.server, r.already_existing)
        }
    });
    Ok(0)
}

/// `bunker export rds SNAPSHOT --format dump [--to URL]` (and `export rds-cluster`): one job
/// of the snapshot dump workflow, to its end.
pub async fn export_snapshot(
    aws: &Aws,
    region: Option<&str>,
    cfg: &bunker_protocol::config::Config,
    dump: crate::archive_cli::SnapshotDump,
    json: bool,
) -> Result<std::process::ExitCode, Fatal> {
    let crate::archive_cli::SnapshotDump { snapshot, to, cluster } = dump;
    use actix::Actor;
    use bunker_actors::dump::snapshot::DumpKey;
    use bunker_actors::engine::{Alerts, JobActor, Run};
    let Some(to) = to.or_else(|| cfg.export_to.clone()) else {
        return Err(input("no target: pass --to s3://bucket/prefix (or set export.to)".into()));
    };
    if !bunker_protocol::config::is_target(&to) {
        return Err(input(format!("--to {to:?}: expected s3://bucket/prefix or file:///directory")));
    }
    let region = region.ok_or_else(|| input("no region: pass --region or set AWS_REGION".into()))?.to_string();
    let account = aws
        .account_id()
        .await
        .map_err(|e| crate::exit::runtime(anyhow!(e).context("cannot identify the AWS account")))?;
    let logic = crate::services::snapshot_dumps(aws, &account, cfg, std::slice::from_ref(&region));
    let metrics = Arc::new(bunker_actors::metrics::Metrics::default());
    let alerts = Alerts::new(aws.notifier(), cfg.error_sns_topic.clone());
    let interval = cfg.serve.check_interval.unsigned_abs();
    let jobs = JobActor::new(Arc::new(logic), interval, metrics, alerts).start();
    let key = DumpKey { region, snapshot, cluster, to, point: None };
    let report = jobs
        .send(Run(key))
        .await
        .map_err(|e| crate::exit::runtime(anyhow!("job actor: {e}")))?
        .map_err(|e| crate::exit::runtime(anyhow!(e)))?;
    let out = serde_json::json!({"snapshot": report.key.snapshot, "to": report.key.to});
    Ok(print_job(&report, out, json))
}

/// Prints the end of a CLI-run job (`fields` and its state, reason and entries as JSON, or
/// one line); exit 0 when it is done, 1 otherwise.
pub(crate) fn print_job<K: bunker_actors::engine::JobKey>(
    report: &bunker_actors::engine::JobReport<K>,
    mut fields: serde_json::Value,
    json: bool,
) -> std::process::ExitCode {
    let (state, reason) = (report.end.state(), report.end.reason().map(String::from));
    if json {
        fields["state"] = state.into();
        fields["reason"] = reason.into();
        fields["entries"] = serde_json::to_value(&report.entries).expect("entries serialize");
        println!("{}", serde_json::to_string_pretty(&fields).expect("report serializes"));
    } else {
        println!("{}: {state}{}", report.key, reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default());
    }
    if report.done() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_split_on_unescaped_colons() {
        assert_eq!(split_pgpass("h:5432:*:u:p\\:w:x"), vec!["h", "5432", "*", "u", "p:w:x"]);
        assert_eq!(split_pgpass("a\\\\b:1:d:u:pw"), vec!["a\\b", "1", "d", "u", "pw"]);
    }
}
