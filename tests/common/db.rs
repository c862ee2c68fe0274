//! Real database servers for the dump tests: PostgreSQL and MariaDB from Debian's packages,
//! each in a temporary data directory on a free 127.0.0.1 port, stopped by PID when dropped.
//! PostgreSQL refuses to run as root, so it runs as the `postgres` user the package creates.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server.
pub struct DbServer {
    /// `postgres` or `mysql` (the URL scheme).
    pub scheme: &'static str,
    pub port: u16,
    /// The administrator bunker logs in as.
    pub user: String,
    pub password: String,
    dir: tempfile::TempDir,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The newest installed PostgreSQL's server binaries (`/usr/lib/postgresql/<N>/bin`).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (deploy/local/test.sh installs postgresql)")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    PathBuf::from(format!("/usr/lib/postgresql/{}/bin", versions.last().expect("a PostgreSQL version")))
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| run(Command::new("id").args([flag, "postgres"]), "id").trim().parse::<u32>().unwrap();
    (id("-u"), id("-g"))
}

impl DbServer {
    /// A new PostgreSQL server; its superuser is `postgres` with a random password.
    pub fn postgres() -> DbServer {
        DbServer::postgres_with(false)
    }

    /// A PostgreSQL server that accepts TCP connections only over TLS (a self-signed
    /// certificate; `pg_hba.conf` has `hostssl` lines only).
    pub fn postgres_tls() -> DbServer {
        DbServer::postgres_with(true)
    }

    fn postgres_with(tls: bool) -> DbServer {
        let (uid, gid) = postgres_ids();
        let dir = tempfile::Builder::new().prefix("bunker-pg-").tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let password = format!("pw-{:016x}", rand_u64());
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, &password).unwrap();
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        run(
            Command::new(pg_bin().join("initdb"))
                .args(["-U", "postgres", "--auth=scram-sha-256", "--no-locale", "-E", "UTF8", "--no-sync"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .arg("-D")
                .arg(&data)
                .uid(uid)
                .gid(gid),
            "initdb",
        );
        let mut extra: Vec<String> = Vec::new();
        if tls {
            extra = tls_only(&data, uid, gid);
        }
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(pg_bin().join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(&extra)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "shared_buffers=32MB", "-c", "max_connections=40", "-k"])
            .arg(dir.path())
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let s = DbServer { scheme: "postgres", port, user: "postgres".into(), password, dir, child };
        s.wait_ready(|| s.try_sql("postgres", "SELECT 1").is_ok());
        s
    }

    /// A new MariaDB server; bunker logs in as `admin` (all privileges) with a random password.
    pub fn mariadb() -> DbServer {
        DbServer::mariadb_with(false)
    }

    /// [`DbServer::mariadb`] that accepts TLS connections only
    /// (`require_secure_transport`), with a self-signed certificate: [`DbServer::certificate`].
    pub fn mariadb_tls() -> DbServer {
        DbServer::mariadb_with(true)
    }

    /// The server's certificate (a TLS server's: its own CA).
    pub fn certificate(&self) -> PathBuf {
        let own = self.dir.path().join("server.crt");
        if own.exists() {
            own
        } else {
            self.dir.path().join("data").join("server.crt")
        }
    }

    fn mariadb_with(tls: bool) -> DbServer {
        let dir = tempfile::Builder::new().prefix("bunker-maria-").tempdir().unwrap();
        let mut extra: Vec<String> = Vec::new();
        if tls {
            let (cert, key) = self_signed(dir.path());
            extra.push(format!("--ssl-cert={}", cert.display()));
            extra.push(format!("--ssl-key={}", key.display()));
            extra.push("--require-secure-transport=ON".into());
        }
        let data = dir.path().join("data");
        run(
            Command::new("mariadb-install-db")
                .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"])
                .arg(format!("--datadir={}", data.display())),
            "mariadb-install-db",
        );
        let port = free_port();
        let child = Command::new("/usr/sbin/mariadbd")
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--skip-log-bin", "--skip-name-resolve"])
            .args(["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M"])
            .arg(format!("--port={port}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--log-error={}", dir.path().join("server.log").display()))
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        let password = format!("pw-{:016x}", rand_u64());
        let mut s = DbServer { scheme: "mysql", port, user: "root".into(), password: String::new(), dir, child };
        s.wait_ready(|| s.socket_sql("SELECT 1").is_ok());
        // mariadb-install-db adds root@<this host's name>, an account `--skip-name-resolve`
        // cannot match: `SHOW CREATE USER` fails on it, and so would the users dump.
        let named = "SELECT CONCAT(QUOTE(user), '@', QUOTE(host)) FROM mysql.user \
                     WHERE host NOT IN ('localhost', '127.0.0.1', '::1', '%')";
        for account in s.socket_sql(named).unwrap().lines().filter(|l| !l.is_empty()) {
            s.socket_sql(&format!("DROP USER {account}")).unwrap();
        }
        s.socket_sql(&format!(
            "CREATE USER 'admin'@'%' IDENTIFIED BY '{password}'; GRANT ALL ON *.* TO 'admin'@'%' WITH GRANT OPTION;"
        ))
        .unwrap();
        (s.user, s.password) = ("admin".into(), password);
        s
    }

    fn wait_ready(&self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            assert!(Instant::now() < deadline, "server did not start: {}", self.log());
            pause(100);
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The URL bunker is given (no password: it comes from the environment).
    pub fn url(&self, db: &str) -> String {
        format!("{}://{}@127.0.0.1:{}/{db}", self.scheme, self.user, self.port)
    }

    /// The environment variable holding the password for bunker.
    pub fn password_env(&self) -> (&'static str, &str) {
        match self.scheme {
            "postgres" => ("PGPASSWORD", self.password.as_str()),
            _ => ("MYSQL_PWD", self.password.as_str()),
        }
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs SQL as the administrator in `db`; the client's output (tab-separated rows).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// [`DbServer::sql`], returning the client's error.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = match self.scheme {
            "postgres" => {
                let mut c = Command::new("psql");
                c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", "\t", "-h", "127.0.0.1"])
                    .args(["-p", &self.port.to_string(), "-U", &self.user, "-d", db, "-c", sql])
                    .env("PGPASSWORD", &self.password);
                c
            }
            _ => {
                let mut c = Command::new("mariadb");
                c.args(["--no-defaults", "-h", "127.0.0.1", "-P", &self.port.to_string(), "-u", &self.user])
                    .args(["-N", "-B", "-e", sql])
                    .env("MYSQL_PWD", &self.password);
                if !db.is_empty() {
                    c.arg(db);
                }
                c
            }
        };
        output(&mut cmd)
    }

    fn socket_sql(&self, sql: &str) -> Result<String, String> {
        output(
            Command::new("mariadb")
                .args(["--no-defaults", "-uroot", "-N", "-B", "-e", sql])
                .arg(format!("--socket={}", self.dir.path().join("sock").display())),
        )
    }

    /// The data directory's parent (a private temporary directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A self-signed certificate for 127.0.0.1 in `dir`: (`server.crt`, `server.key`).
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl req",
    );
    (cert, key)
}

/// A self-signed certificate in `data`, `hostssl`-only `pg_hba.conf`; the server options.
fn tls_only(data: &Path, uid: u32, gid: u32) -> Vec<String> {
    let (cert, key) = self_signed(data);
    for f in [&cert, &key] {
        std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let hba = "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n";
    std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
    ["-c", "ssl=on"].iter().map(|s| s.to_string()).collect()
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits on a plain test thread (polling a server process that starts or stops; no tokio
/// worker is involved).
#[allow(clippy::disallowed_methods)]
fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish()
}

impl Drop for DbServer {
    /// Stops the server by its PID (SIGTERM: a clean shutdown), then reaps it.
    fn drop(&mut self) {
        let _sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            pause(50);
        }
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}
