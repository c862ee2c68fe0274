//! A connection to a database server through its own client tools: TLS decided by asking
//! the server, the password handed over in the environment (PostgreSQL) or a 0600 option
//! file in a private 0700 directory (MySQL / MariaDB), never on a command line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bunker_protocol::dump::{pg_version_num, DbUrl, Family};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::stream::child_reader::{redact, verdict};
use crate::stream::StreamError;

/// A secret (a database password): never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that hands it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A server to dump or restore into.
#[derive(Debug, Clone)]
pub struct Server {
    /// Where, as whom, and which database (`None`: all).
    pub url: DbUrl,
    /// The password (`None`: the client's own sources, such as `~/.pgpass`).
    pub password: Option<Secret>,
    /// A CA bundle to verify the server's certificate with (TLS is then required).
    pub tls_ca: Option<PathBuf>,
    /// Where the client tools are (`None`: `PATH`).
    pub tools_dir: Option<PathBuf>,
}

/// How the connection is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// The server offers no TLS.
    Off,
    /// TLS, required (the server offered it), certificate not verified.
    Required,
    /// TLS, required, verified against a CA bundle and the host name.
    Verified(PathBuf),
}

/// An opened connection: what the tools are given to reach the server.
#[derive(Debug)]
pub struct Connection {
    server: Server,
    tls: Tls,
    /// Private directory holding the MySQL option file (removed on drop).
    dir: tempfile::TempDir,
}

/// How long the TLS probe and each query may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// MySQL's `CLIENT_SSL` capability flag.
const CLIENT_SSL: u16 = 0x0800;

impl Connection {
    /// Asks the server whether it offers TLS and prepares the tools' settings.
    pub async fn open(server: Server) -> Result<Connection, StreamError> {
        let offered = probe_tls(&server.url).await?;
        let tls = match (&server.tls_ca, offered) {
            (Some(ca), true) => Tls::Verified(ca.clone()),
            (Some(_), false) => {
                return Err(StreamError::Input(format!(
                    "{} offers no TLS, but --tls-ca asks for a verified TLS connection",
                    server.url.display()
                )))
            }
            (None, true) => Tls::Required,
            (None, false) => Tls::Off,
        };
        let dir = tempfile::Builder::new()
            .prefix("bunker-db-")
            .tempdir()
            .map_err(|e| StreamError::Source(format!("creating a private directory: {e}")))?;
        let conn = Connection { server, tls, dir };
        if conn.server.url.family == Family::Mysql {
            conn.write_option_file()?;
        }
        Ok(conn)
    }

    /// The server this connects to.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// How the connection is protected.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Strings to scrub from anything a tool printed.
    pub fn secrets(&self) -> Vec<String> {
        self.server.password.iter().map(|p| p.expose().to_string()).collect()
    }

    fn option_file(&self) -> PathBuf {
        self.dir.path().join("client.cnf")
    }

    /// The MySQL client option file: `[client]` host, port, user, password, TLS; 0600.
    fn write_option_file(&self) -> Result<(), StreamError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let u = &self.server.url;
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut text = format!("[client]\nhost={}\nport={}\nuser={}\n", quote(&u.host), u.port, quote(&u.user));
        if let Some(p) = &self.server.password {
            text.push_str(&format!("password={}\n", quote(p.expose())));
        }
        match &self.tls {
            Tls::Off => text.push_str("skip-ssl\n"),
            Tls::Required => text.push_str("ssl\n"),
            Tls::Verified(ca) => {
                text.push_str(&format!("ssl\nssl-ca={}\nssl-verify-server-cert\n", quote(&ca.display().to_string())))
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.option_file())
            .map_err(|e| StreamError::Source(format!("writing the client option file: {e}")))?;
        f.write_all(text.as_bytes()).map_err(|e| StreamError::Source(format!("writing the client option file: {e}")))
    }

    /// The path of a client program.
    pub fn program(&self, name: &str) -> PathBuf {
        match &self.server.tools_dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }

    /// A command for one of the server's client tools, connected to `database` (PostgreSQL:
    /// through `PGDATABASE`, which libpq never parses as a connection string). MySQL tools
    /// get the option file as their first argument, as they require.
    pub fn command(&self, program: &str, database: Option<&str>) -> Command {
        let mut cmd = Command::new(self.program(program));
        cmd.env_remove("PGPASSWORD").env_remove("MYSQL_PWD");
        let u = &self.server.url;
        match u.family {
            Family::Postgres => {
                cmd.env("PGHOST", &u.host).env("PGPORT", u.port.to_string()).env("PGUSER", &u.user);
                cmd.env("PGDATABASE", database.unwrap_or("postgres")).env("PGAPPNAME", "bunker");
                cmd.env("PGCONNECT_TIMEOUT", "15");
                if let Some(p) = &self.server.password {
                    cmd.env("PGPASSWORD", p.expose());
                }
                match &self.tls {
                    Tls::Off => cmd.env("PGSSLMODE", "disable"),
                    Tls::Required => cmd.env("PGSSLMODE", "require"),
                    Tls::Verified(ca) => cmd.env("PGSSLMODE", "verify-full").env("PGSSLROOTCERT", ca),
                };
            }
            Family::Mysql => {
                cmd.arg(format!("--defaults-extra-file={}", self.option_file().display()));
            }
        }
        cmd
    }

    /// Runs one query with the engine's command-line client; rows of columns.
    pub async fn query(&self, sql: &str, database: Option<&str>) -> Result<Vec<Vec<String>>, StreamError> {
        let (program, mut cmd) = match self.server.url.family {
            Family::Postgres => {
                let mut c = self.command("psql", database);
                c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", "\x1f", "-R", "\x1e", "-c", sql]);
                ("psql", c)
            }
            Family::Mysql => {
                let mut c = self.command(self.mysql_client(), None);
                c.args(["-N", "-B", "-e", sql]);
                if let Some(db) = database {
                    c.arg(db);
                }
                (self.mysql_client(), c)
            }
        };
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(PROBE_TIMEOUT * 4, cmd.output())
            .await
            .map_err(|_| StreamError::Source(format!("{program} did not answer within a minute")))?
            .map_err(|e| StreamError::Source(format!("starting {program}: {e} (is it installed and on PATH?)")))?;
        let stderr = redact(&String::from_utf8_lossy(&out.stderr), &self.secrets());
        verdict(program, out.status, &stderr).map_err(|e| self.explain(e))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(match self.server.url.family {
            Family::Postgres => text
                .split('\x1e')
                .map(|r| r.trim_matches('\n'))
                .filter(|r| !r.is_empty())
                .map(|r| r.split('\x1f').map(String::from).collect())
                .collect(),
            Family::Mysql => text.lines().map(|l| l.split('\t').map(unescape_batch).collect()).collect(),
        })
    }

    /// A failed login or an unreachable server, in the user's terms.
    fn explain(&self, e: StreamError) -> StreamError {
        let text = e.to_string();
        let auth = ["password authentication failed", "Access denied", "no password supplied"];
        if auth.iter().any(|a| text.contains(a)) {
            return StreamError::Input(format!(
                "{}: the server refused the login ({text}); check the user and the password ({}, --password-file or --password-ssm)",
                self.server.url.display(),
                self.server.url.family.password_env()
            ));
        }
        if text.contains("does not exist") && text.contains("database") {
            return StreamError::Input(format!(
                "{}: {text}; name an existing database in the URL, or none for all of them",
                self.server.url.display()
            ));
        }
        e
    }

    /// `mariadb` where MariaDB's client is installed, else `mysql`.
    pub fn mysql_client(&self) -> &'static str {
        if self.has_program("mariadb") {
            "mariadb"
        } else {
            "mysql"
        }
    }

    /// `mariadb-dump` where MariaDB's client is installed, else `mysqldump`.
    pub fn mysql_dump_tool(&self) -> &'static str {
        if self.has_program("mariadb-dump") {
            "mariadb-dump"
        } else {
            "mysqldump"
        }
    }

    fn has_program(&self, name: &str) -> bool {
        match &self.server.tools_dir {
            Some(d) => d.join(name).is_file(),
            None => std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(name).is_file())),
        }
    }

    /// The server's product and version (`PostgreSQL 15.18`, `10.11.19-MariaDB`).
    pub async fn server_version(&self) -> Result<String, StreamError> {
        let (sql, db) = match self.server.url.family {
            Family::Postgres => ("SELECT current_setting('server_version_num')", self.server.url.database.as_deref()),
            Family::Mysql => ("SELECT VERSION()", None),
        };
        let rows = self.query(sql, db).await?;
        let v = rows.first().and_then(|r| r.first()).cloned().unwrap_or_default();
        Ok(match self.server.url.family {
            Family::Postgres => {
                let num =
                    v.trim().parse::<u32>().map_err(|_| StreamError::Source(format!("server_version_num {v:?}")))?;
                let (major, minor) = pg_version_num(num);
                format!("PostgreSQL {major}.{minor}")
            }
            Family::Mysql => v,
        })
    }

    /// The user databases with their sizes in bytes, by name.
    pub async fn databases(&self) -> Result<Vec<(String, u64)>, StreamError> {
        let (sql, db) = match self.server.url.family {
            Family::Postgres => (
                "SELECT datname, pg_database_size(datname) FROM pg_database WHERE NOT datistemplate AND datallowconn \
                 AND has_database_privilege(datname, 'CONNECT') AND datname <> 'rdsadmin' ORDER BY datname",
                self.server.url.database.as_deref(),
            ),
            Family::Mysql => (
                "SELECT s.schema_name, COALESCE((SELECT SUM(t.data_length + t.index_length) FROM information_schema.tables t \
                 WHERE t.table_schema = s.schema_name), 0) FROM information_schema.schemata s ORDER BY 1",
                None,
            ),
        };
        let rows = self.query(sql, db).await?;
        let family = self.server.url.family;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.first()?.clone(), r.get(1)?.trim().parse().unwrap_or(0))))
            .filter(|(name, _)| !bunker_protocol::dump::is_system_database(family, name))
            .collect())
    }

    /// A tool's `--version` line.
    pub async fn tool_version(&self, tool: &str) -> Result<String, StreamError> {
        let out =
            Command::new(self.program(tool)).arg("--version").stdin(Stdio::null()).output().await.map_err(|e| {
                StreamError::Input(format!("{tool} is not installed or not on PATH ({e}): {}", install_hint(tool)))
            })?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Which Debian package provides a tool.
pub fn install_hint(tool: &str) -> &'static str {
    match tool {
        "pg_dump" | "pg_dumpall" | "pg_restore" | "psql" => "install postgresql-client (Debian/Ubuntu)",
        "mariadb" | "mariadb-dump" => "install mariadb-client (Debian/Ubuntu)",
        _ => "install the MySQL client (mysql-client, which provides mysql and mysqldump)",
    }
}

/// `mysql -B` escapes: `\t`, `\n`, `\\`, `\0`.
fn unescape_batch(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Whether the server offers TLS: PostgreSQL answers an `SSLRequest` with `S`; MySQL's
/// greeting carries the `CLIENT_SSL` capability.
pub async fn probe_tls(url: &DbUrl) -> Result<bool, StreamError> {
    let unreachable = |e: String| {
        StreamError::Source(format!(
            "cannot reach {}:{} ({e}); check the host, the port and the security group",
            url.host, url.port
        ))
    };
    let probe = async {
        let mut s = TcpStream::connect((url.host.as_str(), url.port)).await.map_err(|e| unreachable(e.to_string()))?;
        match url.family {
            Family::Postgres => {
                s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.map_err(|e| unreachable(e.to_string()))?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.map_err(|e| unreachable(e.to_string()))?;
                Ok(b[0] == b'S')
            }
            Family::Mysql => {
                let mut head = [0u8; 4];
                s.read_exact(&mut head).await.map_err(|e| unreachable(e.to_string()))?;
                let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
                let mut payload = vec![0u8; len.min(1 << 16)];
                s.read_exact(&mut payload).await.map_err(|e| unreachable(e.to_string()))?;
                mysql_greeting_offers_tls(&payload).map_err(unreachable)
            }
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe).await.map_err(|_| unreachable("no answer within 15 s".into()))?
}

/// Reads the capability flags of a MySQL protocol-10 greeting.
fn mysql_greeting_offers_tls(p: &[u8]) -> Result<bool, String> {
    if p.first() == Some(&0xff) {
        let msg = String::from_utf8_lossy(p.get(3..).unwrap_or_default()).into_owned();
        return Err(format!("the server refused the connection: {msg}"));
    }
    if p.first() != Some(&10) {
        return Err("not a MySQL protocol-10 greeting".into());
    }
    let nul = p.iter().skip(1).position(|&b| b == 0).ok_or("malformed greeting")? + 1;
    let caps_at = nul + 1 + 4 + 8 + 1;
    let caps = p.get(caps_at..caps_at + 2).ok_or("malformed greeting")?;
    Ok(u16::from_le_bytes([caps[0], caps[1]]) & CLIENT_SSL != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let server =
            Server { url: DbUrl::parse("postgres://u@h/").unwrap(), password: Some(s), tls_ca: None, tools_dir: None };
        assert!(!format!("{server:?}").contains("hunter2"));
    }

    #[test]
    fn mysql_greetings_tell_tls() {
        let mut g = vec![10u8];
        g.extend_from_slice(b"10.11.19-MariaDB\0");
        g.extend_from_slice(&[1, 0, 0, 0]);
        g.extend_from_slice(b"12345678");
        g.push(0);
        g.extend_from_slice(&(0xffffu16).to_le_bytes());
        assert_eq!(mysql_greeting_offers_tls(&g), Ok(true));
        let n = g.len();
        g[n - 2..].copy_from_slice(&(!CLIENT_SSL).to_le_bytes());
        assert_eq!(mysql_greeting_offers_tls(&g), Ok(false));
        assert!(mysql_greeting_offers_tls(&[0xff, 0x6a, 0x04, b'H', b'o', b's', b't']).unwrap_err().contains("Host"));
        assert_eq!(unescape_batch("a\\tb\\\\c"), "a\tb\\c");
    }
}
