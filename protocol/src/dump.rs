//! Native database dumps: which engines have a dump tool, the connection URL a user gives,
//! the tools' command lines (no secret is ever an argument), the version rule, the
//! manifest's `dump` section, archive names, and what a deep verify expects of a stream.
//!
//! PostgreSQL (and Aurora PostgreSQL): `pg_dumpall --globals-only` (roles, tablespaces) plus
//! `pg_dump --format=custom` per database. MySQL, MariaDB and Aurora MySQL: `mysqldump` /
//! `mariadb-dump --single-transaction --routines --triggers --events` per database.

use serde::{Deserialize, Serialize};

use crate::archive::Content;

/// The engine family a dump tool serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// PostgreSQL and Aurora PostgreSQL.
    Postgres,
    /// MySQL, MariaDB and Aurora MySQL.
    Mysql,
}

impl Family {
    /// The family of an RDS `Engine` value (`postgres`, `aurora-postgresql`, `mysql`,
    /// `mariadb`, `aurora-mysql`, …). `Err` is the message for engines without a dump tool.
    pub fn of_rds_engine(engine: &str) -> Result<Family, String> {
        let e = engine.to_ascii_lowercase();
        if e == "postgres" || e.starts_with("aurora-postgresql") {
            return Ok(Family::Postgres);
        }
        if e == "mysql" || e == "mariadb" || e.starts_with("aurora-mysql") || e == "aurora" {
            return Ok(Family::Mysql);
        }
        Err(format!(
            "engine {engine} is not supported for dumps (bunker dumps PostgreSQL, MySQL and MariaDB): \
             use export.rds_format = \"parquet\" for it"
        ))
    }

    /// Default TCP port.
    pub fn default_port(self) -> u16 {
        match self {
            Family::Postgres => 5432,
            Family::Mysql => 3306,
        }
    }

    /// Environment variable a user's password may come from.
    pub fn password_env(self) -> &'static str {
        match self {
            Family::Postgres => "PGPASSWORD",
            Family::Mysql => "MYSQL_PWD",
        }
    }
}

/// A database server a user names: `postgres://USER@HOST:PORT/[DB]` or `mysql://…`
/// (`postgresql://` and `mariadb://` too). Passwords are refused in the URL: they would end
/// up in shell history and in `/proc/*/cmdline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbUrl {
    /// Engine family, from the scheme.
    pub family: Family,
    /// User name.
    pub user: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// One database, or all of them when `None`.
    pub database: Option<String>,
}

impl DbUrl {
    /// Parses a URL; `Err` names the problem and the fix.
    pub fn parse(url: &str) -> Result<DbUrl, String> {
        let bad = |why: &str| {
            Err(format!(
                "database URL {url:?}: {why}; expected postgres://USER@HOST:PORT/[DB] or mysql://USER@HOST:PORT/[DB]"
            ))
        };
        let Some((scheme, rest)) = url.split_once("://") else { return bad("no scheme") };
        let family = match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Family::Postgres,
            "mysql" | "mariadb" => Family::Mysql,
            _ => return bad("unknown scheme"),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Some((user, hostport)) = authority.rsplit_once('@') else { return bad("no USER@") };
        if user.contains(':') {
            let name = user.split(':').next().unwrap_or_default();
            return Err(format!(
                "the database URL {scheme}://{name}:***@{hostport}/… holds a password: remove it and pass \
                 it in {}, a password file (--password-file) or SSM (--password-ssm)",
                family.password_env()
            ));
        }
        let Some((host, port)) = split_host_port(hostport) else { return bad("bad HOST:PORT") };
        let port = match port.map(|p| p.parse::<u16>().ok().filter(|p| *p > 0)) {
            Some(Some(p)) => p,
            Some(None) => return bad("bad port"),
            None => family.default_port(),
        };
        if user.is_empty() || host.is_empty() {
            return bad("empty user or host");
        }
        let database = decode_percent(path.split('?').next().unwrap_or_default());
        let database = (!database.is_empty()).then_some(database);
        Ok(DbUrl { family, user: decode_percent(user), host: host.to_string(), port, database })
    }

    /// The URL without a password, for manifests and reports.
    pub fn display(&self) -> String {
        let scheme = match self.family {
            Family::Postgres => "postgres",
            Family::Mysql => "mysql",
        };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{scheme}://{}@{host}:{}/{}", self.user, self.port, self.database.as_deref().unwrap_or(""))
    }
}

fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p))),
        Some(_) => None,
        None => Some((s, None)),
    }
}

fn decode_percent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a dump archive holds: the manifest's `dump` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpInfo {
    /// Engine family.
    pub family: Family,
    /// The server's engine and version as it reports them (`PostgreSQL 15.18`,
    /// `10.11.19-MariaDB`).
    pub server_version: String,
    /// The dump tool (`pg_dump`, `pg_dumpall`, `mariadb-dump`, `mysqldump`).
    pub tool: String,
    /// The tool's own `--version` line.
    pub tool_version: String,
    /// The database dumped; `None` for the globals (roles, tablespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The database's size as the server reported it before the dump (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_bytes: Option<u64>,
    /// A shell command that restores this archive without bunker.
    pub restore_command: String,
}

/// A dump tool's version: (major, minor).
pub type Version = (u32, u32);

/// The first `N.N` in a version string (`pg_dump (PostgreSQL) 15.18`,
/// `mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB`: the Distrib one is taken).
pub fn parse_version(s: &str) -> Option<Version> {
    let s = s.split_once("Distrib ").map(|(_, r)| r).unwrap_or(s);
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let mut parts = s[start..].split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// PostgreSQL's `server_version_num` (e.g. 150018) as (major, minor).
pub fn pg_version_num(num: u32) -> Version {
    if num >= 100_000 {
        (num / 10_000, num % 10_000)
    } else {
        (num / 10_000, (num / 100) % 100)
    }
}

/// Whether the tool is MariaDB's (its version line says so).
pub fn is_mariadb_tool(version_line: &str) -> bool {
    version_line.contains("MariaDB")
}

/// The dump tool must be at least the server's version (PostgreSQL: major; MySQL and
/// MariaDB: major.minor, and MySQL's own tool for a MySQL server). `Err` says what to install.
pub fn check_tool(family: Family, tool: &str, tool_version: &str, server: &str) -> Result<(), String> {
    let (Some(t), Some(s)) = (parse_version(tool_version), parse_version(server)) else {
        return Err(format!("cannot read the versions of {tool} ({tool_version:?}) or the server ({server:?})"));
    };
    match family {
        Family::Postgres if t.0 < s.0 => Err(format!(
            "{tool} {}.{} is older than the server (PostgreSQL {}.{}), which it cannot dump: install \
             postgresql-client-{} (Debian/Ubuntu, from apt.postgresql.org) and put its bin directory first on PATH",
            t.0, t.1, s.0, s.1, s.0
        )),
        Family::Mysql if server.contains("MariaDB") && t < s => Err(format!(
            "{tool} {}.{} is older than the server (MariaDB {}.{}): install mariadb-client {}.{} or newer",
            t.0, t.1, s.0, s.1, s.0, s.1
        )),
        Family::Mysql if !server.contains("MariaDB") && (is_mariadb_tool(tool_version) || t < s) => Err(format!(
            "the server is MySQL {}.{} and the dump tool is {tool_version:?}: install MySQL's own client \
             {}.{} or newer (mysql-client / mysql-community-client, which provides mysqldump)",
            s.0, s.1, s.0, s.1
        )),
        _ => Ok(()),
    }
}

/// A name for a database in an archive name: letters, digits, `_` and `-` kept, every
/// other byte as `%XX`, so any database name maps to one plain path component.
pub fn encode_name(db: &str) -> String {
    let mut out = String::with_capacity(db.len());
    for b in db.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The archive name of one database's dump: `<stem>.db-<database>`; the globals are
/// `<stem>.globals`. No database name can produce the globals' name.
pub fn archive_name(stem: &str, database: Option<&str>) -> String {
    match database {
        Some(db) => format!("{stem}.db-{}", encode_name(db)),
        None => format!("{stem}.globals"),
    }
}

/// Databases a "dump everything" leaves out: the servers' own schemas and RDS's internal
/// database, which no user can restore elsewhere.
pub fn is_system_database(family: Family, name: &str) -> bool {
    match family {
        Family::Postgres => matches!(name, "rdsadmin" | "template0" | "template1"),
        Family::Mysql => {
            matches!(name, "information_schema" | "performance_schema" | "sys" | "mysql" | "innodb" | "tmp")
        }
    }
}

/// Quotes a string for a POSIX shell (for the restore commands in manifests).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Quotes a MySQL identifier.
pub fn mysql_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// The shell command that restores one archive at `url` (`s3://…` or `file://…`) without
/// bunker: fetch, `zstd -dc` (which skips the seek table), the engine's own client.
pub fn restore_command(family: Family, content: Content, database: Option<&str>, url: &str) -> String {
    let fetch = match url.strip_prefix("file://") {
        Some(path) => format!("zstd -dc {}", shell_quote(path)),
        None => format!("aws s3 cp {} - | zstd -dc", shell_quote(url)),
    };
    match (family, content, database) {
        (Family::Postgres, Content::PgCustom, _) => format!("{fetch} | pg_restore --create --dbname=postgres"),
        (Family::Postgres, _, _) => format!("{fetch} | psql -X --dbname=postgres"),
        (Family::Mysql, _, Some(db)) => {
            let create = shell_quote(&format!("CREATE DATABASE {}", mysql_ident(db)));
            format!("mariadb -e {create} && {fetch} | mariadb {}", shell_quote(db))
        }
        (Family::Mysql, _, None) => format!("{fetch} | mariadb"),
    }
}

/// What a deep verify checks in a SQL dump's first and last bytes: the tool's header, and
/// its trailer (written only when it finished; a cut-short dump has none).
pub fn check_sql_dump(family: Family, database: Option<&str>, head: &[u8], tail: &[u8]) -> Result<(), String> {
    let head = String::from_utf8_lossy(head);
    let tail = String::from_utf8_lossy(tail);
    let (header, trailer): (&[&str], &str) = match (family, database) {
        (Family::Postgres, _) => (&["PostgreSQL database cluster dump"], "PostgreSQL database cluster dump complete"),
        (Family::Mysql, _) => (&["-- MariaDB dump", "-- MySQL dump"], "-- Dump completed"),
    };
    if !header.iter().any(|h| head.contains(h)) {
        return Err(format!("the stream does not start with a dump header ({})", header.join(" or ")));
    }
    if !tail.contains(trailer) {
        return Err(format!("the stream does not end with {trailer:?}: the dump was cut short"));
    }
    Ok(())
}

/// A PostgreSQL identifier as `pg_dump` writes it: bare when it is lowercase letters,
/// digits and `_` (not starting with a digit), else double-quoted.
pub fn pg_ident(s: &str) -> String {
    let bare = s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if bare {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// Whether a line of `pg_dumpall --globals-only` output creates or alters the role `user`:
/// a globals restore leaves the role it connects as alone (the dump would otherwise replace
/// its password and attributes with the source server's, locking the restore out).
pub fn is_own_role_line(line: &str, user: &str) -> bool {
    let id = pg_ident(user);
    line == format!("CREATE ROLE {id};") || line.starts_with(&format!("ALTER ROLE {id} WITH "))
}

/// Whether a line of a MariaDB users dump (`mariadb-dump --system=users`) names the MySQL
/// account `user` (any host) — its `CREATE USER`, `GRANT … TO`, `ALTER USER`, `SET DEFAULT
/// ROLE` — which a restore leaves out so the connecting account keeps its own password and
/// privileges.
pub fn is_own_account_line(line: &str, user: &str) -> bool {
    let quoted = |q: char| format!("{q}{}{q}@", user.replace(q, &format!("{q}{q}")));
    line.contains(&quoted('`')) || line.contains(&quoted('\''))
}

/// Whether a line of a MariaDB users dump names the account `user`@`host` (either quoting).
pub fn names_account(line: &str, user: &str, host: &str) -> bool {
    let quoted = |q: char| {
        let esc = |v: &str| v.replace(q, &format!("{q}{q}"));
        format!("{q}{}{q}@{q}{}{q}", esc(user), esc(host))
    };
    line.contains(&quoted('`')) || line.contains(&quoted('\''))
}

/// Whether a server's `VERSION()` is MariaDB's (whose `mariadb-dump --system=users` writes
/// its accounts, roles and grants as SQL).
pub fn is_mariadb(server_version: &str) -> bool {
    server_version.contains("MariaDB")
}

/// `pg_dump`'s custom format starts with these bytes.
pub const PG_CUSTOM_MAGIC: &[u8] = b"PGDMP";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_account_lines_are_those_naming_the_connecting_user() {
        assert!(is_own_account_line(
            "GRANT ALL PRIVILEGES ON *.* TO `admin`@`%` IDENTIFIED BY PASSWORD '*D8';",
            "admin"
        ));
        assert!(is_own_account_line("CREATE USER IF NOT EXISTS `admin`@`%` IDENTIFIED BY PASSWORD '*D8';", "admin"));
        assert!(is_own_account_line("/*M!100005 SET DEFAULT ROLE NONE FOR 'admin'@'%' */;", "admin"));
        assert!(!is_own_account_line("GRANT SELECT ON `shop`.* TO `app`@`%`;", "admin"));
        assert!(!is_own_account_line("GRANT SELECT ON `admin`.* TO `app`@`%`;", "admin"), "a database named admin");
        assert!(is_own_account_line("GRANT USAGE ON *.* TO `o``b`@`%`;", "o`b"));
        assert!(is_mariadb("10.11.19-MariaDB-0+deb12u1") && !is_mariadb("8.0.39"));
        let proxy = "GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION;";
        assert!(names_account(proxy, "root", "localhost") && !names_account(proxy, "root", "%"));
        assert!(names_account("/*M!100005 GRANT 'reporting' TO 'root'@'localhost' */;", "root", "localhost"));
    }

    #[test]
    fn urls_parse_and_refuse_passwords() {
        let u = DbUrl::parse("postgres://app@db.example:6543/shop").unwrap();
        assert_eq!((u.family, u.user.as_str(), u.host.as_str(), u.port), (Family::Postgres, "app", "db.example", 6543));
        assert_eq!(u.database.as_deref(), Some("shop"));
        let all = DbUrl::parse("mysql://root@127.0.0.1/").unwrap();
        assert_eq!((all.port, all.database), (3306, None));
        assert_eq!(DbUrl::parse("mariadb://a@[::1]:3307").unwrap().host, "::1");
        assert_eq!(DbUrl::parse("postgres://a@h/my%20db").unwrap().database.as_deref(), Some("my db"));
        let e = DbUrl::parse("postgres://app:secret@h/db").unwrap_err();
        assert!(e.contains("PGPASSWORD") && !e.contains("secret"), "{e}");
        for bad in ["http://a@h/", "postgres://h/db", "postgres://a@h:0/", "postgres://a@h:x/", "nourl"] {
            assert!(DbUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(u.display(), "postgres://app@db.example:6543/shop");
    }

    #[test]
    fn versions_and_the_tool_rule() {
        assert_eq!(parse_version("pg_dump (PostgreSQL) 15.18"), Some((15, 18)));
        assert_eq!(parse_version("mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian"), Some((10, 11)));
        assert_eq!(pg_version_num(150018), (15, 18));
        assert_eq!(pg_version_num(90624), (9, 6));
        assert!(check_tool(Family::Postgres, "pg_dump", "pg_dump (PostgreSQL) 15.18", "16.2").is_err());
        let e = check_tool(Family::Postgres, "pg_dump", "pg_dump (PostgreSQL) 15.18", "16.2").unwrap_err();
        assert!(e.contains("postgresql-client-16"), "{e}");
        assert!(check_tool(Family::Postgres, "pg_dump", "pg_dump (PostgreSQL) 16.1", "15.4").is_ok());
        let maria = "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB";
        assert!(check_tool(Family::Mysql, "mariadb-dump", maria, "10.11.19-MariaDB").is_ok());
        assert!(check_tool(Family::Mysql, "mariadb-dump", maria, "11.4.2-MariaDB").is_err());
        let e = check_tool(Family::Mysql, "mariadb-dump", maria, "8.0.36").unwrap_err();
        assert!(e.contains("MySQL's own client"), "{e}");
    }

    #[test]
    fn archive_names_are_plain_and_never_collide_with_the_globals() {
        assert_eq!(archive_name("snap-1", Some("shop")), "snap-1.db-shop");
        assert_eq!(archive_name("snap-1", None), "snap-1.globals");
        assert_eq!(encode_name("a b/..é"), "a%20b%2F%2E%2E%C3%A9");
        assert_ne!(archive_name("s", Some("globals")), archive_name("s", None));
        assert!(crate::archive::check_name(&archive_name("s", Some("../../etc"))).is_ok());
    }

    #[test]
    fn engines_without_a_dump_tool_say_use_parquet() {
        assert_eq!(Family::of_rds_engine("aurora-postgresql"), Ok(Family::Postgres));
        assert_eq!(Family::of_rds_engine("mariadb"), Ok(Family::Mysql));
        assert_eq!(Family::of_rds_engine("aurora-mysql"), Ok(Family::Mysql));
        for e in ["oracle-ee", "sqlserver-se", "db2-se"] {
            assert!(Family::of_rds_engine(e).unwrap_err().contains("parquet"), "{e}");
        }
    }

    #[test]
    fn sql_dumps_need_their_trailer() {
        let head = b"-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n";
        assert!(check_sql_dump(Family::Mysql, Some("d"), head, b"\n-- Dump completed on 2026-12-02\n").is_ok());
        assert!(check_sql_dump(Family::Mysql, Some("d"), head, b"INSERT INTO t VALUES (1,").is_err());
        assert!(check_sql_dump(Family::Mysql, Some("d"), b"garbage", b"-- Dump completed").is_err());
        let pg = b"--\n-- PostgreSQL database cluster dump\n--\n";
        assert!(
            check_sql_dump(Family::Postgres, None, pg, b"-- PostgreSQL database cluster dump complete\n--\n").is_ok()
        );
    }

    #[test]
    fn a_globals_restore_skips_only_the_connecting_role() {
        assert!(is_own_role_line("CREATE ROLE postgres;", "postgres"));
        assert!(is_own_role_line("ALTER ROLE postgres WITH SUPERUSER INHERIT LOGIN PASSWORD 'SCRAM';", "postgres"));
        assert!(!is_own_role_line("CREATE ROLE reporting;", "postgres"));
        assert!(!is_own_role_line("ALTER ROLE postgres_ro WITH LOGIN;", "postgres"));
        assert!(is_own_role_line("CREATE ROLE \"Admin\";", "Admin"));
        assert_eq!(pg_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn restore_commands_quote_what_they_name() {
        let c = restore_command(Family::Mysql, Content::Sql, Some("it's"), "s3://b/x y.sql.zst");
        assert_eq!(
            c,
            "mariadb -e 'CREATE DATABASE `it'\\''s`' && aws s3 cp 's3://b/x y.sql.zst' - | zstd -dc | mariadb 'it'\\''s'"
        );
        let p = restore_command(Family::Postgres, Content::PgCustom, Some("shop"), "file:///b/s.db-shop.pgdump.zst");
        assert_eq!(p, "zstd -dc /b/s.db-shop.pgdump.zst | pg_restore --create --dbname=postgres");
    }
}
