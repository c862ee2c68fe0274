//! The way back from a dump archive: `verify --deep` (the hashes, and the engine's own view of
//! the stream) and `restore --to-database` (the verified stream piped into the engine's
//! client). Every frame is checked before its bytes reach the client; if any check fails the
//! client is killed before it sees the end of its input, so a damaged archive never looks
//! like a finished restore.

use std::process::Stdio;
use std::sync::Arc;

use bunker_protocol::archive::Content;
use bunker_protocol::dump::{self, DumpInfo, Family};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};
use tokio::sync::mpsc;
use tracing::warn;

use super::Connection;
use crate::stream::archive_reader::{verify_into, Archive, VerifyReport};
use crate::stream::child_reader::{redact, tail, verdict};
use crate::stream::{Progress, StreamError};

/// Bytes of a SQL dump's start and end a deep verify looks at.
const EDGE: usize = 64 * 1024;

/// What `verify --deep` found.
#[derive(Debug, Clone, Serialize)]
pub struct DeepReport {
    /// The hash verification.
    #[serde(flatten)]
    pub verify: VerifyReport,
    /// What the engine-level check saw (`pg_restore --list: 41 entries`, `header and
    /// trailer of a complete mariadb-dump`).
    pub deep: String,
}

/// What a restore into a database did.
#[derive(Debug, Clone, Serialize)]
pub struct DbRestoreReport {
    /// The archive restored (verified while it streamed).
    #[serde(flatten)]
    pub verify: VerifyReport,
    /// The server restored into, without a password.
    pub server: String,
    /// The database created (`None`: the globals).
    pub database: Option<String>,
    /// Statements the client reported as already applied (restoring globals onto a server
    /// that has some of the roles), counted, not failed.
    pub already_existing: usize,
    /// Globals: statements about the role the restore connects as, left out so that its
    /// password and attributes stay the target server's.
    pub own_role_statements_skipped: usize,
}

/// The `dump` section of a dump archive's manifest, or the error for other archives.
pub fn dump_info(archive: &Archive) -> Result<&DumpInfo, StreamError> {
    archive.manifest.dump.as_ref().ok_or_else(|| {
        StreamError::Input(format!(
            "{} is not a database dump ({:?} archive); restore it with --to-file",
            archive.url(),
            archive.manifest.content
        ))
    })
}

/// Verifies a dump archive's hashes and, on its decompressed stream, `pg_restore --list`
/// (PostgreSQL custom format) or the dump tool's header and trailer (SQL).
pub async fn verify_deep(
    archive: Archive,
    progress: &Progress,
    tools: Option<&std::path::Path>,
) -> Result<DeepReport, StreamError> {
    let info = dump_info(&archive)?.clone();
    match archive.manifest.content {
        Content::PgCustom => {
            let program = tools.map(|d| d.join("pg_restore")).unwrap_or_else(|| "pg_restore".into());
            let mut cmd = Command::new(program);
            cmd.arg("--list");
            let (verify, out) = pipe(archive, progress, cmd, "pg_restore", &[], |_| false, None).await?;
            let entries = out.stdout.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).count();
            Ok(DeepReport { verify, deep: format!("pg_restore --list: {entries} entries") })
        }
        Content::Sql => {
            let (tx, mut rx) = mpsc::channel::<Arc<Vec<u8>>>(4);
            let edges = tokio::spawn(async move {
                let (mut head, mut tail) = (Vec::new(), Vec::new());
                while let Some(d) = rx.recv().await {
                    if head.len() < EDGE {
                        head.extend_from_slice(&d[..d.len().min(EDGE - head.len())]);
                    }
                    tail.extend_from_slice(&d);
                    if tail.len() > 2 * EDGE {
                        tail.drain(..tail.len() - EDGE);
                    }
                }
                (head, tail)
            });
            let verify = verify_into(archive, progress, Some(tx)).await?;
            let (head, tail) = edges.await.map_err(|e| StreamError::Internal(e.to_string()))?;
            dump::check_sql_dump(info.family, info.database.as_deref(), &head, &tail)
                .map_err(|e| StreamError::Corrupt(format!("{}: {e}", verify.archive)))?;
            Ok(DeepReport { verify, deep: format!("header and trailer of a complete {} dump", info.tool) })
        }
        other => Err(StreamError::Input(format!("--deep checks database dumps; this is a {other:?} archive"))),
    }
}

/// Restores a dump archive into the server `conn` reaches, creating the database (`into`,
/// or the dumped database's own name); globals are applied to the server.
pub async fn restore_database(
    archive: Archive,
    conn: &Connection,
    into: Option<&str>,
    progress: &Progress,
) -> Result<DbRestoreReport, StreamError> {
    let info = dump_info(&archive)?.clone();
    let family = conn.server().url.family;
    if info.family != family {
        return Err(StreamError::Input(format!(
            "{} is a {:?} dump; restore it into a {:?} server",
            archive.url(),
            info.family,
            info.family
        )));
    }
    let target = into.map(String::from).or(info.database.clone());
    if let Some(db) = &target {
        if conn.databases().await?.iter().any(|(n, _)| n == db) {
            return Err(StreamError::Input(format!(
                "database {db:?} already exists on {}: restore into a new one by naming it in the URL",
                conn.server().url.display()
            )));
        }
    }
    let (tool, cmd) = client_command(conn, &archive, &info, target.as_deref()).await?;
    let result = pipe_restore(archive, conn, &info, target.as_deref(), (tool, cmd), progress).await;
    if let (Err(e), Some(db)) = (&result, &target) {
        // The database did not exist before this restore, and this restore created it (or
        // pg_restore --create did, from its input): what is there now is ours, and half of
        // it is worse than none.
        match drop_database(conn, db).await {
            Ok(()) => warn!(database = %db, error = %e, "restore failed; the partly restored database was dropped"),
            Err(d) => {
                warn!(database = %db, error = %e, drop_error = %d, "restore failed; dropping the partly restored database failed too")
            }
        }
    }
    result
}

/// Drops a database this restore created (PostgreSQL 13+: also closing the killed client's
/// session; older servers without `FORCE`).
async fn drop_database(conn: &Connection, db: &str) -> Result<(), StreamError> {
    match conn.server().url.family {
        Family::Postgres => {
            let id = dump::pg_ident(db);
            let forced = conn.query(&format!("DROP DATABASE IF EXISTS {id} WITH (FORCE)"), Some("postgres")).await;
            match forced {
                Ok(_) => Ok(()),
                Err(_) => conn.query(&format!("DROP DATABASE IF EXISTS {id}"), Some("postgres")).await.map(|_| ()),
            }
        }
        Family::Mysql => {
            conn.query(&format!("DROP DATABASE IF EXISTS {}", dump::mysql_ident(db)), None).await.map(|_| ())
        }
    }
}

async fn pipe_restore(
    archive: Archive,
    conn: &Connection,
    info: &DumpInfo,
    target: Option<&str>,
    (tool, cmd): (&'static str, Command),
    progress: &Progress,
) -> Result<DbRestoreReport, StreamError> {
    let family = info.family;
    let already = |line: &str| line.contains("already exists");
    let user = conn.server().url.user.clone();
    let filter = match (family, info.database.is_none()) {
        (_, false) => None,
        (Family::Postgres, true) => Some(LineFilter::new(Box::new(move |line| dump::is_own_role_line(line, &user)))),
        (Family::Mysql, true) => {
            // The target's accounts keep their own definitions: only accounts and roles new
            // to it are made (and the connecting one is never touched, whatever its host).
            let existing = conn.query("SELECT user, host FROM mysql.user", None).await?;
            let existing: Vec<(String, String)> =
                existing.into_iter().filter_map(|r| Some((r.first()?.clone(), r.get(1)?.clone()))).collect();
            Some(LineFilter::new(Box::new(move |line| {
                dump::is_own_account_line(line, &user) || existing.iter().any(|(u, h)| dump::names_account(line, u, h))
            })))
        }
    };
    let (verify, out) = pipe(archive, progress, cmd, tool, &conn.secrets(), already, filter).await?;
    Ok(DbRestoreReport {
        verify,
        server: conn.server().url.display(),
        database: target.map(String::from),
        already_existing: out.tolerated,
        own_role_statements_skipped: out.dropped,
    })
}

/// The client that applies the stream, after creating the database where that is ours to do.
async fn client_command(
    conn: &Connection,
    archive: &Archive,
    info: &DumpInfo,
    target: Option<&str>,
) -> Result<(&'static str, Command), StreamError> {
    match (conn.server().url.family, archive.manifest.content, target) {
        (Family::Postgres, Content::PgCustom, Some(db)) => {
            let renamed = info.database.as_deref() != Some(db);
            if renamed {
                conn.query(&format!("CREATE DATABASE {}", dump::pg_ident(db)), Some("postgres")).await?;
            }
            let connect_to = if renamed { db } else { "postgres" };
            let mut cmd = conn.command("pg_restore", Some(connect_to));
            // pg_restore takes no PGDATABASE; a conninfo string keeps a name with `=` a name.
            cmd.arg(format!("--dbname=dbname='{}'", connect_to.replace('\\', "\\\\").replace('\'', "\\'")));
            cmd.args(["--no-password", "--exit-on-error"]);
            if !renamed {
                cmd.arg("--create");
            }
            Ok(("pg_restore", cmd))
        }
        (Family::Postgres, Content::Sql, _) => {
            let mut cmd = conn.command("psql", Some("postgres"));
            cmd.args(["-X", "-q", "--no-password"]);
            Ok(("psql", cmd))
        }
        (Family::Mysql, Content::Sql, Some(db)) => {
            conn.query(&format!("CREATE DATABASE {}", dump::mysql_ident(db)), None).await?;
            let client = conn.mysql_client();
            let mut cmd = conn.command(client, None);
            cmd.arg("--").arg(db);
            Ok((client, cmd))
        }
        (Family::Mysql, Content::Sql, None) => {
            let client = conn.mysql_client();
            Ok((client, conn.command(client, None)))
        }
        (_, content, _) => Err(StreamError::Input(format!("{}: cannot restore a {content:?} dump", archive.url()))),
    }
}

/// What a client printed.
struct ClientOutput {
    stdout: String,
    /// stderr lines `tolerate` accepted.
    tolerated: usize,
    /// Input lines the filter left out.
    dropped: usize,
}

/// Leaves whole lines a predicate picks out of a byte stream cut anywhere.
struct LineFilter {
    drop: Box<dyn Fn(&str) -> bool + Send>,
    pending: Vec<u8>,
    dropped: usize,
}

impl LineFilter {
    fn new(drop: Box<dyn Fn(&str) -> bool + Send>) -> LineFilter {
        LineFilter { drop, pending: Vec::new(), dropped: 0 }
    }

    /// The complete lines of what came so far that are kept; a partial last line waits.
    fn push(&mut self, piece: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(piece);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        let rest = self.pending.split_off(end + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        self.keep(&complete)
    }

    /// The kept rest, at the end of the stream.
    fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        self.keep(&rest)
    }

    fn keep(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            if (self.drop)(String::from_utf8_lossy(line).trim_end_matches(['\n', '\r'])) {
                self.dropped += 1;
            } else {
                out.extend_from_slice(line);
            }
        }
        out
    }
}

/// Runs `cmd` with the archive's verified stream on its stdin. The client sees the end of
/// its input only when every frame verified; otherwise it is killed first.
async fn pipe(
    archive: Archive,
    progress: &Progress,
    mut cmd: Command,
    tool: &str,
    secrets: &[String],
    tolerate: impl Fn(&str) -> bool,
    filter: Option<LineFilter>,
) -> Result<(VerifyReport, ClientOutput), StreamError> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| StreamError::Input(format!("starting {tool}: {e}: {}", super::connection::install_hint(tool))))?;
    let (Some(stdin), Some(mut stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(StreamError::Internal(format!("{tool}: no pipes")));
    };
    let (tx, rx) = mpsc::channel::<Arc<Vec<u8>>>(4);
    let writer = tokio::spawn(feed(stdin, rx, filter));
    let errors = tokio::spawn(tail(stderr));
    let out = tokio::spawn(async move {
        let mut s = String::new();
        let _partial = stdout.read_to_string(&mut s).await;
        s
    });
    let verified = verify_into(archive, progress, Some(tx)).await;
    let (stdin, dropped) = writer.await.map_err(|e| StreamError::Internal(e.to_string()))?;
    let verify = match verified {
        Ok(v) => v,
        Err(e) => {
            let _gone = child.kill().await;
            return Err(e);
        }
    };
    drop(stdin);
    let status = child.wait().await.map_err(|e| StreamError::Target(format!("waiting for {tool}: {e}")))?;
    let stderr = redact(&errors.await.map_err(|e| StreamError::Internal(e.to_string()))?, secrets);
    let tolerated = stderr.lines().filter(|l| tolerate(l)).count();
    let rest: Vec<&str> = stderr.lines().filter(|l| !tolerate(l)).collect();
    verdict(tool, status, &rest.join("\n")).map_err(|e| match e {
        StreamError::Source(m) => StreamError::Target(m),
        e => e,
    })?;
    let stdout = out.await.map_err(|e| StreamError::Internal(e.to_string()))?;
    Ok((verify, ClientOutput { stdout, tolerated, dropped }))
}

/// Writes every piece (through `filter`, if any) to the client's stdin; after a write error
/// (the client closed its input) the rest is drained so the verify goes on. Returns stdin,
/// still open, and the lines the filter left out.
async fn feed(
    mut stdin: ChildStdin,
    mut rx: mpsc::Receiver<Arc<Vec<u8>>>,
    mut filter: Option<LineFilter>,
) -> (Option<ChildStdin>, usize) {
    let mut open = true;
    while let Some(piece) = rx.recv().await {
        let bytes = match &mut filter {
            Some(f) => std::borrow::Cow::Owned(f.push(&piece)),
            None => std::borrow::Cow::Borrowed(piece.as_slice()),
        };
        if open && stdin.write_all(&bytes).await.is_err() {
            open = false;
        }
    }
    if let Some(f) = &mut filter {
        let rest = f.finish();
        if open && stdin.write_all(&rest).await.is_err() {
            open = false;
        }
    }
    (open.then_some(stdin), filter.map_or(0, |f| f.dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_filter_drops_whole_lines_cut_anywhere() {
        let text = b"CREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER;\nCREATE ROLE app;\nGRANT x;";
        for cut in 1..text.len() {
            let mut f = LineFilter::new(Box::new(|l| bunker_protocol::dump::is_own_role_line(l, "postgres")));
            let mut out = f.push(&text[..cut]);
            out.extend(f.push(&text[cut..]));
            out.extend(f.finish());
            assert_eq!(out, b"CREATE ROLE app;\nGRANT x;", "cut at {cut}");
            assert_eq!(f.dropped, 2);
        }
    }
}
