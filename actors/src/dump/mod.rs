//! Native database dumps: every database of a server (and PostgreSQL's globals) through the
//! engine's own dump tool, each tool's stdout piped straight into the archive pipeline (one
//! archive per database), and the way back: a deep verify and a restore into a server.
//!
//! This is the primitive both `bunker export database URL` and the snapshot restore
//! workflow use.

pub mod connection;
pub mod restore;
pub mod snapshot;

use std::sync::Arc;

use bunker_protocol::archive::{Content, Source, DEFAULT_CHUNK_SIZE};
use bunker_protocol::dump::{self, DumpInfo, Family};
use serde::Serialize;
use tracing::info;

pub use connection::{Connection, Secret, Server, Tls};

use crate::metrics::Metrics;
use crate::ports::ArchiveStore;
use crate::stream::child_reader::child_reader;
use crate::stream::export::{archive_key, ExportRequest, ExportSummary, OpenReader};
use crate::stream::exporter_actor::{run_export, PreparedExport};
use crate::stream::{Progress, StreamError, Tuning};

/// What to dump and how to name it.
#[derive(Debug, Clone)]
pub struct DumpRequest {
    /// Archive name stem: `<stem>.db-<database>` and `<stem>.globals`.
    pub stem: String,
    /// Provenance for every manifest (a URL, a snapshot, a recovery point).
    pub source: Source,
    /// zstd level.
    pub level: i32,
    /// Also record each archive's whole-image SHA-256.
    pub sha256: bool,
    /// Whether PostgreSQL's globals carry role passwords (`pg_dumpall` reads `pg_authid`,
    /// which RDS does not let its master user read).
    pub role_passwords: bool,
}

/// One archive of a dump.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DumpArchive {
    /// The database, `None` for the globals.
    pub database: Option<String>,
    /// The tool that wrote it.
    pub tool: String,
    /// The export's own summary (archive, manifest, bytes, hashes).
    #[serde(flatten)]
    pub export: ExportSummary,
}

/// What a dump of a server wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DumpSummary {
    /// The server, without a password.
    pub server: String,
    /// Its product and version.
    pub server_version: String,
    /// `off`, `required` or `verified`.
    pub tls: &'static str,
    /// Every archive written (or found already written), globals first.
    pub archives: Vec<DumpArchive>,
}

/// One tool run of a dump: which database, which tool, what it writes.
struct Part {
    database: Option<String>,
    database_bytes: Option<u64>,
    tool: &'static str,
    content: Content,
}

/// Dumps the server `conn` reaches: PostgreSQL's globals, then each database (the URL's
/// one, or every user database), one at a time, each into its own verified archive.
/// Stops at the first failure; archives finished before it stay (each is complete).
pub async fn dump_server(
    conn: &Connection,
    store: Arc<dyn ArchiveStore>,
    req: &DumpRequest,
    tuning: Tuning,
    metrics: Option<Arc<Metrics>>,
) -> Result<DumpSummary, StreamError> {
    let server_version = conn.server_version().await?;
    let parts = plan(conn, &server_version).await?;
    let mut versions = std::collections::BTreeMap::new();
    for p in &parts {
        if !versions.contains_key(p.tool) {
            let v = conn.tool_version(p.tool).await?;
            dump::check_tool(conn.server().url.family, p.tool, &v, &server_version).map_err(StreamError::Input)?;
            versions.insert(p.tool, v);
        }
    }
    let mut archives = Vec::new();
    for p in parts {
        let info = info_of(conn, &p, &server_version, &versions[p.tool], store.as_ref(), &req.stem);
        let export = dump_one(conn, store.clone(), req, &p, info, tuning, metrics.clone()).await?;
        info!(archive = %export.archive, bytes = export.bytes_in, tool = p.tool, "database dumped");
        archives.push(DumpArchive { database: p.database, tool: p.tool.to_string(), export });
    }
    let tls = match conn.tls() {
        Tls::Off => "off",
        Tls::Required => "required",
        Tls::Verified(_) => "verified",
    };
    Ok(DumpSummary { server: conn.server().url.display(), server_version, tls, archives })
}

/// The tool runs a dump of this server takes: globals first (PostgreSQL's roles; MariaDB's
/// accounts, roles and grants, with `mariadb-dump`), then databases.
async fn plan(conn: &Connection, server_version: &str) -> Result<Vec<Part>, StreamError> {
    let url = &conn.server().url;
    let all = conn.databases().await?;
    let chosen: Vec<(String, u64)> = match &url.database {
        Some(db) => match all.iter().find(|(n, _)| n == db) {
            Some(d) => vec![d.clone()],
            None => {
                let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
                return Err(StreamError::Input(format!(
                    "database {db:?} does not exist on {} (its databases: {}); name one of them, or none for all",
                    url.display(),
                    names.join(", ")
                )));
            }
        },
        None => all,
    };
    let mut parts = Vec::new();
    let (tool, content) = match url.family {
        Family::Postgres => {
            parts.push(Part { database: None, database_bytes: None, tool: "pg_dumpall", content: Content::Sql });
            ("pg_dump", Content::PgCustom)
        }
        Family::Mysql => {
            let tool = conn.mysql_dump_tool();
            if tool == "mariadb-dump" && dump::is_mariadb(server_version) {
                parts.push(Part { database: None, database_bytes: None, tool, content: Content::Sql });
            }
            (tool, Content::Sql)
        }
    };
    for (db, bytes) in chosen {
        parts.push(Part { database: Some(db), database_bytes: Some(bytes), tool, content });
    }
    Ok(parts)
}

fn info_of(
    conn: &Connection,
    p: &Part,
    server_version: &str,
    tool_version: &str,
    store: &dyn ArchiveStore,
    stem: &str,
) -> DumpInfo {
    let family = conn.server().url.family;
    let url = store.url(&archive_key(&dump::archive_name(stem, p.database.as_deref()), p.content));
    DumpInfo {
        family,
        server_version: server_version.to_string(),
        tool: p.tool.to_string(),
        tool_version: tool_version.to_string(),
        database: p.database.clone(),
        database_bytes: p.database_bytes,
        restore_command: dump::restore_command(family, p.content, p.database.as_deref(), &url),
    }
}

/// The dump tool's command for one part (no secret in its arguments).
fn tool_command(conn: &Connection, p: &Part, role_passwords: bool) -> tokio::process::Command {
    let mut cmd = conn.command(p.tool, p.database.as_deref().or(conn.server().url.database.as_deref()));
    match (p.tool, &p.database) {
        ("pg_dumpall", _) => {
            cmd.args(["--globals-only", "--no-password"]);
            if !role_passwords {
                cmd.arg("--no-role-passwords");
            }
        }
        ("pg_dump", _) => {
            cmd.args(["--format=custom", "--compress=0", "--no-password"]);
        }
        (tool, Some(db)) => {
            cmd.args(["--single-transaction", "--routines", "--triggers", "--events", "--hex-blob"]);
            cmd.args(["--no-tablespaces", "--default-character-set=utf8mb4"]);
            if tool == "mysqldump" {
                cmd.arg("--set-gtid-purged=OFF");
            }
            cmd.arg("--").arg(db);
        }
        ("mariadb-dump", None) => {
            // Accounts, roles and grants as SQL; `IF NOT EXISTS` where the syntax has it.
            cmd.args(["--system=users", "--insert-ignore"]);
        }
        (_, None) => {}
    }
    cmd
}

async fn dump_one(
    conn: &Connection,
    store: Arc<dyn ArchiveStore>,
    req: &DumpRequest,
    p: &Part,
    info: DumpInfo,
    tuning: Tuning,
    metrics: Option<Arc<Metrics>>,
) -> Result<ExportSummary, StreamError> {
    let source = req.source.clone();
    let request = ExportRequest {
        name: dump::archive_name(&req.stem, p.database.as_deref()),
        content: p.content,
        source,
        image_size: None,
        block_size: 512,
        chunk_size: DEFAULT_CHUNK_SIZE,
        level: req.level,
        sha256: req.sha256,
        base: None,
        resumable: false,
        tree: None,
        items: None,
        dump: Some(info),
        catalog: None,
    };
    let cmd = tool_command(conn, p, req.role_passwords);
    let (tool, secrets, capacity) = (p.tool.to_string(), conn.secrets(), tuning.channel_capacity);
    let open: OpenReader =
        Box::new(move |_start| child_reader(cmd, tool, secrets, DEFAULT_CHUNK_SIZE as usize, capacity));
    let progress = Arc::new(Progress::default());
    run_export(PreparedExport { store, request, open }, tuning, progress, metrics).await.map_err(|e| match e {
        StreamError::Source(s) => {
            StreamError::Source(format!("dumping {}: {s}", p.database.as_deref().unwrap_or("the globals")))
        }
        e => e,
    })
}
