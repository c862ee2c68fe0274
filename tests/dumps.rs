//! Native database dumps against real servers: PostgreSQL and MariaDB started from Debian's
//! packages (tests/common/db.rs), `bunker export database` → `bunker verify --deep` →
//! `bunker restore --to-database` into a fresh server, compared table by table; the plain
//! `zstd -dc | pg_restore --list` way; a dump tool killed mid-stream; the password nowhere.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::db::DbServer;
use common::Run;

/// `bunker ARGS` with only PATH (optionally a wrapper directory first), `extra` env, and
/// debug logging (the password must not appear even there).
fn bunker(args: &[&str], extra: &[(&str, &str)], path_first: Option<&Path>) -> Run {
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(p) = path_first {
        path = format!("{}:{path}", p.display());
    }
    let mut c = Command::new(env!("CARGO_BIN_EXE_bunker"));
    c.env_clear().env("PATH", path).env("BUNKER_LOG", "debug").env("HOME", "/nonexistent");
    for (k, v) in extra {
        c.env(k, v);
    }
    Run::from(c.args(args).stdin(Stdio::null()).output().unwrap())
}

fn target() -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    let url = format!("file://{}", d.path().display());
    (d, url)
}

/// Every archive of an export's JSON: database (or "globals") → archive path.
fn archives(out: &serde_json::Value) -> BTreeMap<String, PathBuf> {
    out["archives"]
        .as_array()
        .expect("archives")
        .iter()
        .map(|a| {
            let db = a["database"].as_str().unwrap_or("globals").to_string();
            let path = a["archive"].as_str().unwrap().strip_prefix("file://").unwrap();
            (db, PathBuf::from(path))
        })
        .collect()
}

/// The manifest beside an archive.
fn manifest_of(archive: &Path) -> PathBuf {
    let name = archive.file_name().unwrap().to_string_lossy();
    let stem = name.strip_suffix(".pgdump.zst").or_else(|| name.strip_suffix(".sql.zst")).expect("a dump archive");
    archive.with_file_name(format!("{stem}.manifest.json"))
}

/// A wrapper directory whose `tool` records every process's argv while the dump runs
/// (into `argv.txt`), then runs the real tool.
fn argv_recorder(tool: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let real = which(tool);
    let script = format!(
        "#!/bin/sh\nfor p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done >> {out}\nexec {real} \"$@\"\n",
        out = dir.path().join("argv.txt").display(),
        real = real.display()
    );
    write_script(&dir.path().join(tool), &script);
    dir
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

const PG_SEED: &str = r#"
CREATE ROLE reporting LOGIN PASSWORD 'r3port';
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, joined date, balance numeric(12,2),
                        tags text[], profile jsonb, avatar bytea, active boolean, seen timestamptz);
INSERT INTO customers (name, joined, balance, tags, profile, avatar, active, seen)
  SELECT 'customer ' || g, date '2020-01-01' + g, g * 1.25, ARRAY['t' || g % 7, 'x'],
         jsonb_build_object('n', g, 'odd', g % 2 = 1), decode(md5(g::text), 'hex'), g % 3 = 0,
         timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
  FROM generate_series(1, 5000) g;
CREATE INDEX customers_joined ON customers (joined);
CREATE SEQUENCE invoice_no START 1000;
SELECT setval('invoice_no', 4242);
CREATE VIEW active_customers AS SELECT id, name FROM customers WHERE active;
CREATE FUNCTION balance_of(cid int) RETURNS numeric LANGUAGE sql AS 'SELECT balance FROM customers WHERE id = cid';
GRANT SELECT ON active_customers TO reporting;
"#;

const PG_SEED_CRM: &str = r#"
CREATE TABLE notes (id bigint PRIMARY KEY, body text, at timestamp);
INSERT INTO notes SELECT g, repeat('note ' || g, 20), timestamp '2026-06-01' + g * interval '1 second'
  FROM generate_series(1, 30000) g;
"#;

/// Row count and an ordered content checksum of a PostgreSQL table.
fn pg_table(s: &DbServer, db: &str, table: &str, key: &str) -> String {
    s.sql(db, &format!("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY {key})) FROM {table} t"))
}

#[test]
fn postgres_databases_dump_verify_and_restore_into_a_fresh_server_with_every_object() {
    let src = DbServer::postgres();
    src.sql("postgres", "CREATE DATABASE shop");
    src.sql("postgres", "CREATE DATABASE crm");
    src.sql("shop", PG_SEED);
    src.sql("crm", PG_SEED_CRM);
    let (_dir, to) = target();
    let recorder = argv_recorder("pg_dump");
    let env = [src.password_env()];
    let run = bunker(
        &["export", "database", &src.url(""), "--to", &to, "--name", "src", "--json"],
        &env,
        Some(recorder.path()),
    );
    let out = run.ok_json();
    let got = archives(&out);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["crm", "globals", "postgres", "shop"], "{out:#}");
    assert_eq!(out["archives"][0]["database"], serde_json::Value::Null, "globals come first");
    assert_eq!(out["tls"], "off");
    assert!(got["shop"].ends_with("src.db-shop.pgdump.zst"));

    // The password is nowhere: argv of every process during the dumps, logs at debug,
    // JSON output, manifests.
    let argv = std::fs::read_to_string(recorder.path().join("argv.txt")).unwrap();
    assert!(argv.contains("--format=custom"), "the recorder saw the dumps: {argv}");
    let manifests: String = got.values().map(|p| std::fs::read_to_string(manifest_of(p)).unwrap()).collect();
    for (what, text) in [("argv", &argv), ("stderr", &run.stderr), ("stdout", &run.stdout), ("manifests", &manifests)] {
        assert!(!text.contains(&src.password), "the password appears in {what}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest_of(&got["shop"])).unwrap()).unwrap();
    assert_eq!(manifest["content"], "pg-custom");
    assert_eq!(manifest["dump"]["database"], "shop");
    assert!(manifest["dump"]["server_version"].as_str().unwrap().starts_with("PostgreSQL "));
    assert!(manifest["dump"]["tool_version"].as_str().unwrap().contains("pg_dump"));
    assert!(manifest["dump"]["database_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(manifest["dump"]["restore_command"].as_str().unwrap().contains("pg_restore --create"));
    assert_eq!(manifest["image_blake3"].as_str().unwrap().len(), 64);

    // verify --deep: hashes and pg_restore --list / the SQL trailer.
    for (db, path) in &got {
        let v = bunker(&["verify", "--deep", &format!("file://{}", path.display()), "--json"], &[], None).ok_json();
        let deep = v["deep"].as_str().unwrap();
        assert!(
            if db == "globals" { deep.contains("header and trailer") } else { deep.contains("pg_restore --list") },
            "{v:#}"
        );
    }
    // Without bunker: zstd -dc | pg_restore --list.
    let plain = Command::new("sh")
        .args(["-c", &format!("zstd -dc {} | pg_restore --list", got["shop"].display())])
        .output()
        .unwrap();
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let listing = String::from_utf8_lossy(&plain.stdout);
    for object in [
        "TABLE public customers",
        "VIEW public active_customers",
        "FUNCTION public balance_of",
        "SEQUENCE public invoice_no",
        "INDEX public customers_joined",
    ] {
        assert!(listing.contains(object), "{object} missing from\n{listing}");
    }

    // Restore into a fresh server: globals first (roles), then each database.
    let dst = DbServer::postgres();
    let denv = [dst.password_env()];
    a_damaged_archive_restores_nothing(&got["crm"], &dst);
    let g = bunker(
        &["restore", &format!("file://{}", got["globals"].display()), "--to-database", &dst.url(""), "--json"],
        &denv,
        None,
    );
    let g = g.ok_json();
    assert_eq!(g["own_role_statements_skipped"], 2, "CREATE and ALTER ROLE postgres, left out: {g:#}");
    for db in ["shop", "crm"] {
        let r = bunker(
            &["restore", &format!("file://{}", got[db].display()), "--to-database", &dst.url(""), "--json"],
            &denv,
            None,
        );
        assert_eq!(r.ok_json()["database"], db);
    }
    assert_eq!(pg_table(&dst, "shop", "customers", "id"), pg_table(&src, "shop", "customers", "id"));
    assert_eq!(pg_table(&dst, "crm", "notes", "id"), pg_table(&src, "crm", "notes", "id"));
    assert!(pg_table(&src, "shop", "customers", "id").starts_with("5000\t"));
    assert_eq!(dst.sql("shop", "SELECT last_value FROM invoice_no").trim(), "4242");
    assert_eq!(dst.sql("shop", "SELECT count(*) FROM active_customers").trim(), "1666");
    assert_eq!(dst.sql("shop", "SELECT balance_of(8)").trim(), "10.00");
    assert_eq!(
        dst.sql("shop", "SELECT indexname FROM pg_indexes WHERE indexname = 'customers_joined'").trim(),
        "customers_joined"
    );
    assert_eq!(dst.sql("shop", "SELECT has_table_privilege('reporting', 'active_customers', 'SELECT')").trim(), "t");
    assert_eq!(dst.sql("postgres", "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'reporting'").trim(), "t");

    // A second restore of the same database refuses: nothing is overwritten.
    let again = bunker(
        &["restore", &format!("file://{}", got["shop"].display()), "--to-database", &dst.url(""), "--json"],
        &denv,
        None,
    );
    assert_eq!(again.code, 2, "{again:#?}");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    // Into a new name: the URL's database.
    let renamed = bunker(
        &["restore", &format!("file://{}", got["shop"].display()), "--to-database", &dst.url("shop_copy")],
        &denv,
        None,
    );
    assert_eq!(renamed.code, 0, "{renamed:#?}");
    assert_eq!(pg_table(&dst, "shop_copy", "customers", "id"), pg_table(&src, "shop", "customers", "id"));
}

/// A copy of `archive` with one byte flipped in its last frame: the bad frame fails the
/// restore, pg_restore is killed before the end of its input, and no `crm` is left behind.
fn a_damaged_archive_restores_nothing(archive: &Path, dst: &DbServer) {
    let dir = tempfile::tempdir().unwrap();
    let (copy, manifest) = (dir.path().join(archive.file_name().unwrap()), manifest_of(archive));
    std::fs::copy(&manifest, dir.path().join(manifest.file_name().unwrap())).unwrap();
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let frames = m["frames"].as_array().unwrap();
    assert!(frames.len() >= 2, "the dump spans several frames: {}", frames.len());
    let mut bytes = std::fs::read(archive).unwrap();
    let at = frames.last().unwrap()["archive_offset"].as_u64().unwrap() as usize + 20;
    bytes[at] ^= 0xff;
    std::fs::write(&copy, bytes).unwrap();
    let r = bunker(
        &["restore", &format!("file://{}", copy.display()), "--to-database", &dst.url("")],
        &[dst.password_env()],
        None,
    );
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains(&format!("chunk {}", frames.len() - 1)), "{}", r.stderr);
    assert!(r.stderr.contains("partly restored database was dropped"), "{}", r.stderr);
    assert_eq!(dst.sql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'crm'").trim(), "0");
}

const MARIA_SEED: &str = r#"
CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer VARCHAR(80) NOT NULL, total DECIMAL(10,2),
                     placed DATETIME, note TEXT, payload BLOB, KEY by_customer (customer)) ENGINE=InnoDB;
CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, order_id INT, at DATETIME) ENGINE=InnoDB;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (order_id, at) VALUES (NEW.id, NEW.placed);
INSERT INTO orders (customer, total, placed, note, payload)
  SELECT CONCAT('c', seq % 97), seq * 0.5, '2026-01-01' + INTERVAL seq MINUTE, REPEAT('n', seq % 50), UNHEX(MD5(seq))
  FROM seq_1_to_3000;
CREATE PROCEDURE order_count(OUT n INT) SELECT COUNT(*) INTO n FROM orders;
CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 1000;
"#;

#[test]
fn mariadb_databases_dump_verify_and_restore_with_triggers_and_routines() {
    let src = DbServer::mariadb();
    src.sql("", "CREATE DATABASE shop");
    src.sql("shop", "SET SESSION group_concat_max_len = 67108864");
    src.sql("shop", MARIA_SEED);
    src.sql(
        "",
        "CREATE USER 'app'@'%' IDENTIFIED BY 'app-password'; GRANT SELECT, INSERT ON shop.* TO 'app'@'%'; \
         CREATE ROLE reporting; GRANT SELECT ON shop.big_orders TO reporting; GRANT reporting TO 'app'@'%'",
    );
    let (_dir, to) = target();
    let recorder = argv_recorder("mariadb-dump");
    let run = bunker(
        &["export", "database", &src.url(""), "--to", &to, "--name", "m", "--json"],
        &[src.password_env()],
        Some(recorder.path()),
    );
    let out = run.ok_json();
    let got = archives(&out);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["globals", "shop"], "system schemas are left out: {out:#}");
    let argv = std::fs::read_to_string(recorder.path().join("argv.txt")).unwrap();
    assert!(argv.contains("--single-transaction") && argv.contains("--routines"), "{argv}");
    assert!(argv.contains("--system=users"), "the accounts, roles and grants: {argv}");
    for (what, text) in [("argv", &argv), ("stderr", &run.stderr), ("stdout", &run.stdout)] {
        assert!(!text.contains(&src.password), "the password appears in {what}");
    }
    let v = bunker(&["verify", "--deep", &format!("file://{}", got["shop"].display()), "--json"], &[], None).ok_json();
    assert!(v["deep"].as_str().unwrap().contains("mariadb-dump"), "{v:#}");

    // MySQL's grants name tables: the databases first, then the globals.
    let dst = DbServer::mariadb();
    let r = bunker(
        &["restore", &format!("file://{}", got["shop"].display()), "--to-database", &dst.url(""), "--json"],
        &[dst.password_env()],
        None,
    );
    assert_eq!(r.ok_json()["database"], "shop");
    let globals = format!("file://{}", got["globals"].display());
    let g = bunker(&["restore", &globals, "--to-database", &dst.url(""), "--json"], &[dst.password_env()], None);
    let g = g.ok_json();
    assert!(g["own_role_statements_skipped"].as_u64().unwrap() >= 2, "admin's own lines are left out: {g:#}");
    let grants = |s: &DbServer| s.sql("", "SHOW GRANTS FOR 'app'@'%'");
    assert_eq!(grants(&dst), grants(&src), "the account, its password hash, its grants and its role");
    assert!(dst.try_sql("", "SELECT 1").is_ok(), "admin still logs in with its own password");
    let app = Command::new("mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P", &dst.port.to_string(), "-u", "app", "-N", "-B"])
        .args(["-e", "SET ROLE reporting; SELECT COUNT(*) FROM shop.big_orders"])
        .env("MYSQL_PWD", "app-password")
        .output()
        .unwrap();
    assert!(app.status.success(), "app logs in with its password and uses its role: {app:?}");
    let checksum = |s: &DbServer, t: &str| {
        s.sql("shop", &format!("SET SESSION group_concat_max_len = 67108864; SELECT COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS(',', id, {}) ORDER BY id SEPARATOR '|')) FROM {t}", if t == "orders" { "customer, total, placed, note, HEX(payload)" } else { "order_id, at" }))
    };
    assert_eq!(checksum(&dst, "orders"), checksum(&src, "orders"));
    assert_eq!(checksum(&dst, "audit"), checksum(&src, "audit"));
    assert!(checksum(&src, "orders").starts_with("3000\t"));
    assert_eq!(
        dst.sql("shop", "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_name = 'orders_audit'").trim(),
        "1"
    );
    assert_eq!(dst.sql("shop", "CALL order_count(@n); SELECT @n").trim(), "3000");
    assert_eq!(
        dst.sql("shop", "SELECT COUNT(*) FROM big_orders").trim(),
        src.sql("shop", "SELECT COUNT(*) FROM big_orders").trim()
    );
    // The trigger came back and fires.
    dst.sql("shop", "INSERT INTO orders (customer, total, placed) VALUES ('new', 1, NOW())");
    assert_eq!(dst.sql("shop", "SELECT COUNT(*) FROM audit").trim(), "3001");
}

#[test]
fn a_dump_tool_killed_mid_stream_fails_the_export_and_leaves_no_archive() {
    let src = DbServer::postgres();
    src.sql("postgres", "CREATE DATABASE shop");
    src.sql("shop", PG_SEED);
    let (dir, to) = target();
    // pg_dump that is SIGKILLed after 64 KiB of output (the anchor's missing-pipefail case).
    let wrap = tempfile::tempdir().unwrap();
    let real = which("pg_dump");
    write_script(
        &wrap.path().join("pg_dump"),
        &format!("#!/bin/bash\n{} \"$@\" | head -c 65536\nkill -9 $$\n", real.display()),
    );
    let run = bunker(
        &["export", "database", &src.url("shop"), "--to", &to, "--name", "k", "--json"],
        &[src.password_env()],
        Some(wrap.path()),
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("dumping shop") && run.stderr.contains("signal 9"), "{}", run.stderr);
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("k.db-shop.") && (n.ends_with(".manifest.json") || n.ends_with(".pgdump.zst"))),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "k.globals.manifest.json"),
        "the globals, dumped before, stay complete: {names:?}"
    );

    // Bad input: clear messages, exit 2, nothing written.
    let pw = bunker(
        &["export", "database", &format!("postgres://postgres:{}@127.0.0.1:{}/", src.password, src.port), "--to", &to],
        &[],
        None,
    );
    assert_eq!(pw.code, 2);
    assert!(pw.stderr.contains("holds a password") && !pw.stderr.contains(&src.password), "{}", pw.stderr);
    let missing = bunker(&["export", "database", &src.url("nosuch"), "--to", &to], &[src.password_env()], None);
    assert_eq!(missing.code, 2, "{missing:#?}");
    assert!(missing.stderr.contains("\"nosuch\" does not exist"), "{}", missing.stderr);
    let wrong = bunker(&["export", "database", &src.url("shop"), "--to", &to], &[("PGPASSWORD", "wrong")], None);
    assert_eq!(wrong.code, 2, "{wrong:#?}");
    assert!(wrong.stderr.contains("refused the login"), "{}", wrong.stderr);
}

/// An RDS instance in the emulator whose snapshots restore to the real server `src`
/// (`deploy/local/moto_rds_restore.py`); returns the snapshot id.
async fn rds_snapshot_of(a: &common::Account, src: &DbServer, instance: &str, engine: &str) -> String {
    let rds = aws_sdk_rds::Client::new(&a.sdk(common::REGION).await);
    let version = if engine == "mariadb" { "10.11.19" } else { "15.18" };
    rds.create_db_instance()
        .db_instance_identifier(instance)
        .engine(engine)
        .engine_version(version)
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("master")
        .master_user_password("initial-password")
        .send()
        .await
        .unwrap();
    let snapshot = format!("{instance}-snap");
    rds.create_db_snapshot().db_instance_identifier(instance).db_snapshot_identifier(&snapshot).send().await.unwrap();
    let body = serde_json::json!({"account": a.id, "source": instance, "host": "127.0.0.1", "port": src.port,
                                  "admin_user": src.user, "admin_password": src.password});
    common::post(&a.endpoint, "/_bunker/rds-servers", &body.to_string());
    snapshot
}

/// A PostgreSQL server standing for a snapshot's data: the database `shop` seeded, and the
/// master user `master` with the password the snapshot was made with.
fn pg_source() -> DbServer {
    let src = DbServer::postgres();
    src.sql("postgres", "CREATE ROLE master SUPERUSER LOGIN PASSWORD 'initial-password'");
    src.sql("postgres", "CREATE DATABASE shop");
    src.sql("shop", PG_SEED);
    src
}

fn rds_servers(a: &common::Account) -> serde_json::Value {
    common::get_json(&a.endpoint, &format!("/_bunker/rds-servers?account={}", a.id))
}

fn dump_config(dir: &Path) -> String {
    let path = dir.join("bunker.toml");
    let body = format!(
        "regions = [\"{}\"]\ndeployment = \"dumps-test\"\nexport.task_poll = \"1s\"\n[serve]\ncheck_interval = \"1s\"\n",
        common::REGION
    );
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

async fn parameters(a: &common::Account) -> Vec<String> {
    let ssm = aws_sdk_ssm::Client::new(&a.sdk(common::REGION).await);
    let out = ssm.get_parameters_by_path().path("/bunker").recursive(true).send().await.unwrap();
    out.parameters().iter().filter_map(|p| p.name().map(String::from)).collect()
}

/// An account with a bucket, `restore_seconds` for its temporary instances, an RDS instance
/// `instance` whose snapshots restore to `src`, and a config: (account, bucket, snapshot,
/// config dir, config path, target URL).
async fn rds_setup(
    id: &str,
    src: &DbServer,
    instance: &str,
    engine: &str,
    restore_seconds: f64,
) -> (common::Account, String, String, tempfile::TempDir, String, String) {
    let a = common::Account::new(id).await;
    let bucket = a.bucket("dumps").await;
    let controls = serde_json::json!({"account": a.id, "restore_seconds": restore_seconds});
    common::post(&a.endpoint, "/_bunker/backup", &controls.to_string());
    let snapshot = rds_snapshot_of(&a, src, instance, engine).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dump_config(dir.path());
    let to = format!("s3://{bucket}/db");
    (a, bucket, snapshot, dir, cfg, to)
}

#[tokio::test]
async fn an_rds_snapshot_is_dumped_through_a_temporary_instance_that_is_always_removed() {
    let src = pg_source();
    let (a, bucket, snapshot, _dir, cfg, to) = rds_setup("120000000001", &src, "shop-db", "postgres", 1.5).await;
    let run = a.bunker(&["export", "rds", &snapshot, "--format", "dump", "--to", &to, "--config", &cfg, "--json"]);
    let out = run.ok_json();
    assert_eq!(out["state"], "done", "{out:#}");

    // Exactly one temporary instance, restored and deleted; its password parameter gone; the
    // master password really reset (the old one no longer logs in).
    let servers = rds_servers(&a);
    assert_eq!(servers["restored"].as_array().unwrap().len(), 1, "{servers}");
    assert_eq!(servers["restored"], servers["deleted"], "{servers}");
    assert!(servers["restored"][0].as_str().unwrap().starts_with("bunker-dump-"));
    assert_eq!(parameters(&a).await, Vec::<String>::new());
    let old = std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &src.port.to_string(),
            "-U",
            "master",
            "-d",
            "postgres",
            "-c",
            "SELECT 1",
        ])
        .env("PGPASSWORD", "initial-password")
        .output()
        .unwrap();
    assert!(!old.status.success(), "the master password was reset");

    // The archives, in S3: verified deep and restored into a fresh server.
    let index = a.get_object(&bucket, &format!("db/{snapshot}.dumps.json")).await;
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let got: Vec<&str> = index["archives"].as_array().unwrap().iter().map(|x| x["archive"].as_str().unwrap()).collect();
    assert_eq!(got.len(), 3, "globals, postgres, shop: {index:#}");
    let shop = got.iter().find(|u| u.ends_with(".db-shop.pgdump.zst")).unwrap();
    let v = a.bunker(&["verify", "--deep", shop, "--json"]).ok_json();
    assert!(v["deep"].as_str().unwrap().contains("pg_restore --list"), "{v:#}");
    let m: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("db/{snapshot}.db-shop.manifest.json")).await).unwrap();
    assert_eq!(
        (m["source"]["type"].as_str(), m["source"]["id"].as_str()),
        (Some("rds-snapshot"), Some(snapshot.as_str()))
    );
    let dst = DbServer::postgres();
    let globals = got.iter().find(|u| u.ends_with(".globals.sql.zst")).unwrap();
    a.bunker_with(&["restore", globals, "--to-database", &dst.url(""), "--json"], &[dst.password_env()]).ok_json();
    let r = a.bunker_with(&["restore", shop, "--to-database", &dst.url(""), "--json"], &[dst.password_env()]);
    assert_eq!(r.ok_json()["database"], "shop");
    assert_eq!(pg_table(&dst, "shop", "customers", "id"), pg_table(&src, "shop", "customers", "id"));

    // `export database` with its password from SSM (what the restore workflow stores there).
    let ssm = aws_sdk_ssm::Client::new(&a.sdk(common::REGION).await);
    let param = ssm
        .put_parameter()
        .name("/team/shop-db")
        .value(&src.password)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString);
    param.send().await.unwrap();
    let (_d, local) = target();
    let direct = a.bunker(&[
        "export",
        "database",
        &src.url("shop"),
        "--password-ssm",
        "/team/shop-db",
        "--to",
        &local,
        "--json",
    ]);
    assert_eq!(direct.ok_json()["archives"].as_array().unwrap().len(), 2, "globals and shop");
    let missing = a.bunker(&["export", "database", &src.url("shop"), "--password-ssm", "/team/nope", "--to", &local]);
    assert_eq!(missing.code, 2, "{missing:#?}");
    assert!(missing.stderr.contains("--password-ssm /team/nope: no such parameter"), "{}", missing.stderr);

    // A second run finds the dump done: no second instance.
    let again = a.bunker(&["export", "rds", &snapshot, "--to", &to, "--config", &cfg, "--json"]).ok_json();
    assert_eq!(again["state"], "done");
    assert_eq!(rds_servers(&a)["restored"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_killed_dump_resumes_on_the_same_instance_and_an_unsupported_engine_is_refused_at_once() {
    let src = DbServer::mariadb();
    src.sql("", "CREATE USER 'master'@'%' IDENTIFIED BY 'initial-password'; GRANT ALL ON *.* TO 'master'@'%'");
    src.sql("", "CREATE DATABASE shop");
    src.sql("shop", MARIA_SEED);
    let (a, bucket, snapshot, _dir, cfg, to) = rds_setup("120000000002", &src, "maria-db", "mariadb", 4.0).await;

    // SIGKILL while the temporary instance is being made.
    let mut child = a.command().args(["export", "rds", &snapshot, "--to", &to, "--config", &cfg]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while rds_servers(&a)["restored"].as_array().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no instance was restored");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(rds_servers(&a)["deleted"].as_array().unwrap().len(), 0, "the instance outlived bunker");

    // The rerun finds that instance, finishes the dump and removes it and its parameter.
    let out = a.bunker(&["export", "rds", &snapshot, "--to", &to, "--config", &cfg, "--json"]).ok_json();
    assert_eq!(out["state"], "done", "{out:#}");
    let servers = rds_servers(&a);
    assert_eq!(servers["restored"].as_array().unwrap().len(), 1, "done once, on one instance: {servers}");
    assert_eq!(servers["restored"], servers["deleted"]);
    assert_eq!(parameters(&a).await, Vec::<String>::new());
    let index: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, &format!("db/{snapshot}.dumps.json")).await).unwrap();
    assert_eq!(index["archives"].as_array().unwrap().len(), 2, "the globals and shop: {index:#}");

    // An engine without a dump tool: refused before any instance is restored.
    let ora_snapshot = rds_snapshot_of(&a, &src, "ora", "oracle-ee").await;
    let ora = a.bunker(&["export", "rds", &ora_snapshot, "--to", &to, "--config", &cfg, "--json"]);
    assert_eq!(ora.code, 1, "{ora:#?}");
    let ora = ora.json();
    assert_eq!(ora["state"], "failed");
    assert!(ora["reason"].as_str().unwrap().contains("not supported for dumps"), "{ora:#}");
    assert_eq!(rds_servers(&a)["restored"].as_array().unwrap().len(), 1, "no instance for oracle");
}

/// `export.rds_format = "dump"` with `export.delete_source`: an AWS Backup recovery point of
/// an RDS instance is dumped through a temporary instance, its archives verified, and only
/// then is the recovery point deleted; the manifests and the index name the recovery point.
#[tokio::test]
async fn an_rds_recovery_point_is_dumped_verified_and_only_then_deleted() {
    let src = pg_source();
    let a = common::Account::new("120000000003").await;
    let conf = a.sdk(common::REGION).await;
    let backup = aws_sdk_backup::Client::new(&conf);
    backup.create_backup_vault().backup_vault_name("Default").send().await.unwrap();
    let bucket = a.bucket("vault-dumps").await;
    common::post(
        &a.endpoint,
        "/_bunker/backup",
        &serde_json::json!({"account": a.id, "restore_seconds": 1}).to_string(),
    );
    rds_snapshot_of(&a, &src, "vault-db", "postgres").await;
    let db_arn = format!("arn:aws:rds:{}:{}:db:vault-db", common::REGION, a.id);
    let role = "arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole";
    let job = backup.start_backup_job().backup_vault_name("Default").resource_arn(&db_arn).iam_role_arn(role);
    let point = job.send().await.unwrap().recovery_point_arn.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    std::fs::write(
        &cfg,
        format!(
            "regions = [\"{}\"]\ndeployment = \"vault-dumps\"\nexport.to = \"s3://{bucket}/v\"\nexport.vaults = [\"Default\"]\n\
             export.sha256 = true\nexport.delete_source = true\nexport.rds_format = \"dump\"\nexport.task_poll = \"1s\"\n[serve]\ncheck_interval = \"1s\"\n",
            common::REGION
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let run = a.bunker(&["export", "recovery-point", &point, "--vault", "Default", "--config", &cfg, "--json"]);
    let out = run.ok_json();
    assert_eq!(out["state"], "done", "{out:#}\n{}", run.stderr);

    let gone = backup.describe_recovery_point().backup_vault_name("Default").recovery_point_arn(&point).send().await;
    assert!(gone.is_err(), "the recovery point was deleted after its dump verified");
    let servers = rds_servers(&a);
    assert_eq!(servers["restored"].as_array().unwrap().len(), 1, "{servers}");
    assert_eq!(servers["restored"], servers["deleted"]);
    assert_eq!(parameters(&a).await, Vec::<String>::new());
    let objects = aws_sdk_s3::Client::new(&conf).list_objects_v2().bucket(&bucket).prefix("v/").send().await.unwrap();
    let keys: Vec<String> = objects.contents().iter().filter_map(|o| o.key().map(String::from)).collect();
    let index_key = keys.iter().find(|k| k.ends_with(".dumps.json")).unwrap_or_else(|| panic!("{keys:?}"));
    assert!(index_key.starts_with("v/recovery-points/Default/awsbackup-job-"), "{index_key}");
    let index: serde_json::Value = serde_json::from_slice(&a.get_object(&bucket, index_key).await).unwrap();
    assert_eq!(index["recovery_point"]["arn"], point.as_str());
    let shop = keys.iter().find(|k| k.ends_with(".db-shop.manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&a.get_object(&bucket, shop).await).unwrap();
    assert_eq!(m["source"]["recovery_point"]["arn"], point.as_str());
    assert_eq!(m["dump"]["database"], "shop");
    // `export.sha256`: the dump's SHA-256 too, the stream's as `zstd -d` gives it.
    let archive = a.get_object(&bucket, &shop.replace(".manifest.json", ".pgdump.zst")).await;
    let stream = common::zstd_decompress(&archive);
    assert_eq!(m["image_sha256"], common::sha256_hex(&stream));
    assert_eq!(m["image_blake3"], common::blake3_hex(&stream));
}

/// A server that offers TLS gets TLS: the dump tools are required to use it (`pg_hba.conf`
/// refuses anything else, so the export passing proves it), and the output says so.
#[test]
fn tls_is_required_whenever_the_server_offers_it() {
    let src = DbServer::postgres_tls();
    src.sql("postgres", "CREATE DATABASE shop");
    src.sql("shop", PG_SEED_CRM);
    let plain = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &src.port.to_string(), "-U", "postgres", "-d", "shop", "-c", "SELECT 1"])
        .env("PGPASSWORD", &src.password)
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    assert!(!plain.status.success(), "the server refuses connections without TLS");
    let (_dir, to) = target();
    let out = bunker(&["export", "database", &src.url("shop"), "--to", &to, "--json"], &[src.password_env()], None);
    let out = out.ok_json();
    assert_eq!(out["tls"], "required", "{out:#}");
    assert_eq!(archives(&out).len(), 2, "globals and shop: {out:#}");
}

/// `--tls-ca`: a MariaDB server that takes TLS connections only is dumped over TLS verified
/// against its certificate, and a certificate from another CA refuses the export before any
/// archive is written. The same for PostgreSQL's `verify-full`.
#[test]
fn tls_ca_verifies_the_server_and_a_stranger_certificate_is_refused() {
    let maria = DbServer::mariadb_tls();
    maria.sql("", "CREATE DATABASE shop");
    maria.sql("shop", MARIA_SEED);
    let plain = Command::new("mariadb")
        .args(["--no-defaults", "--skip-ssl", "-h", "127.0.0.1", "-P", &maria.port.to_string(), "-u", &maria.user])
        .args(["-e", "SELECT 1"])
        .env("MYSQL_PWD", &maria.password)
        .output()
        .unwrap();
    assert!(!plain.status.success(), "the server refuses connections without TLS");
    let stranger = tempfile::tempdir().unwrap();
    let (other_ca, _) = common::db::self_signed(stranger.path());
    let pg = DbServer::postgres_tls();
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql("shop", PG_SEED_CRM);
    for (src, archives_written) in [(&maria, 2), (&pg, 2)] {
        let (dir, to) = target();
        let ca = src.certificate().display().to_string();
        let args = ["export", "database", &src.url("shop"), "--tls-ca", &ca, "--to", &to, "--json"];
        let out = bunker(&args, &[src.password_env()], None).ok_json();
        assert_eq!(out["tls"], "verified", "{out:#}");
        assert_eq!(archives(&out).len(), archives_written, "{out:#}");

        let (dir2, to2) = target();
        let other = other_ca.display().to_string();
        let args = ["export", "database", &src.url("shop"), "--tls-ca", &other, "--to", &to2, "--json"];
        let refused = bunker(&args, &[src.password_env()], None);
        assert_ne!(refused.code, 0, "{refused:#?}");
        let written: Vec<_> = std::fs::read_dir(dir2.path()).unwrap().collect();
        assert!(written.is_empty(), "nothing written: {written:?}");
        drop(dir);
    }
}

/// An Aurora PostgreSQL cluster whose snapshots restore to `src` (its master user `master`),
/// tagged to be dumped (`bunker:config:export.rds_format = dump`).
async fn aurora_cluster_of(a: &common::Account, src: &DbServer, cluster: &str) {
    let rds = aws_sdk_rds::Client::new(&a.sdk(common::REGION).await);
    rds.create_db_cluster()
        .db_cluster_identifier(cluster)
        .engine("aurora-postgresql")
        .engine_version("15.4")
        .master_username("master")
        .master_user_password("initial-password")
        .tags(aws_sdk_rds::types::Tag::builder().key("bunker:config:export.rds_format").value("dump").build())
        .send()
        .await
        .unwrap();
    let body = serde_json::json!({"account": a.id, "source": cluster, "host": "127.0.0.1", "port": src.port,
                                  "admin_user": src.user, "admin_password": src.password});
    common::post(&a.endpoint, "/_bunker/rds-servers", &body.to_string());
}

/// `export rds-cluster`: an Aurora cluster snapshot is restored as a temporary cluster plus
/// one instance, dumped, and both removed (the instance first); an AWS Backup recovery point
/// of the cluster goes the same way — the cluster's tag `bunker:config:export.rds_format =
/// dump` overrides the configured `parquet` — and is deleted only after its dump verified.
#[tokio::test]
async fn an_aurora_cluster_snapshot_and_recovery_point_are_dumped_through_a_temporary_cluster() {
    let src = pg_source();
    let a = common::Account::new("120000000004").await;
    let conf = a.sdk(common::REGION).await;
    let bucket = a.bucket("aurora-dumps").await;
    common::post(
        &a.endpoint,
        "/_bunker/backup",
        &serde_json::json!({"account": a.id, "restore_seconds": 1}).to_string(),
    );
    aurora_cluster_of(&a, &src, "aurora-shop").await;
    let rds = aws_sdk_rds::Client::new(&conf);
    let snap = rds.create_db_cluster_snapshot().db_cluster_identifier("aurora-shop");
    snap.db_cluster_snapshot_identifier("aurora-shop-snap").send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dump_config(dir.path());
    let to = format!("s3://{bucket}/db");

    let run = a.bunker(&["export", "rds-cluster", "aurora-shop-snap", "--to", &to, "--config", &cfg, "--json"]);
    let out = run.ok_json();
    assert_eq!(out["state"], "done", "{out:#}\n{}", run.stderr);
    let servers = rds_servers(&a);
    assert_eq!(servers["clusters_restored"].as_array().unwrap().len(), 1, "{servers}");
    assert_eq!(servers["clusters_restored"], servers["clusters_deleted"], "{servers}");
    assert_eq!(servers["restored"], servers["clusters_restored"], "one instance, named as its cluster: {servers}");
    assert_eq!(servers["restored"], servers["deleted"], "{servers}");
    assert_eq!(parameters(&a).await, Vec::<String>::new());
    let left = rds.describe_db_clusters().send().await.unwrap();
    let names: Vec<_> = left.db_clusters().iter().filter_map(|c| c.db_cluster_identifier()).collect();
    assert_eq!(names, ["aurora-shop"], "only the source cluster is left");

    let m: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, "db/aurora-shop-snap.db-shop.manifest.json").await).unwrap();
    assert_eq!(m["source"]["type"], "rds-cluster-snapshot", "{m:#}");
    let index: serde_json::Value =
        serde_json::from_slice(&a.get_object(&bucket, "db/aurora-shop-snap.dumps.json").await).unwrap();
    let got: Vec<&str> = index["archives"].as_array().unwrap().iter().map(|x| x["archive"].as_str().unwrap()).collect();
    let shop = got.iter().find(|u| u.ends_with(".db-shop.pgdump.zst")).unwrap();
    let globals = got.iter().find(|u| u.ends_with(".globals.sql.zst")).unwrap();
    let dst = DbServer::postgres();
    a.bunker_with(&["restore", globals, "--to-database", &dst.url(""), "--json"], &[dst.password_env()]).ok_json();
    let r = a.bunker_with(&["restore", shop, "--to-database", &dst.url(""), "--json"], &[dst.password_env()]);
    assert_eq!(r.ok_json()["database"], "shop");
    assert_eq!(pg_table(&dst, "shop", "customers", "id"), pg_table(&src, "shop", "customers", "id"));

    // The cluster's AWS Backup recovery point: the configuration says parquet (the default),
    // the cluster's tag says dump.
    let backup = aws_sdk_backup::Client::new(&conf);
    backup.create_backup_vault().backup_vault_name("Default").send().await.unwrap();
    let cluster_arn = format!("arn:aws:rds:{}:{}:cluster:aurora-shop", common::REGION, a.id);
    let role = "arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole";
    let job = backup.start_backup_job().backup_vault_name("Default").resource_arn(&cluster_arn).iam_role_arn(role);
    let point = job.send().await.unwrap().recovery_point_arn.unwrap();
    assert!(point.contains(":cluster-snapshot:awsbackup:job-"), "{point}");
    let vault_cfg = dir.path().join("vault.toml");
    let body = format!(
        "regions = [\"{}\"]\ndeployment = \"dumps-test\"\nexport.to = \"s3://{bucket}/v\"\nexport.vaults = [\"Default\"]\n\
         export.delete_source = true\nexport.task_poll = \"1s\"\n[serve]\ncheck_interval = \"1s\"\n",
        common::REGION
    );
    std::fs::write(&vault_cfg, body).unwrap();
    let vault_cfg = vault_cfg.display().to_string();
    let run = a.bunker(&["export", "recovery-point", &point, "--vault", "Default", "--config", &vault_cfg, "--json"]);
    let out = run.ok_json();
    assert_eq!(out["state"], "done", "{out:#}\n{}", run.stderr);
    let gone = backup.describe_recovery_point().backup_vault_name("Default").recovery_point_arn(&point).send().await;
    assert!(gone.is_err(), "the recovery point was deleted after its dump verified");
    let servers = rds_servers(&a);
    assert_eq!(servers["clusters_restored"].as_array().unwrap().len(), 2, "{servers}");
    assert_eq!(servers["clusters_restored"], servers["clusters_deleted"], "{servers}");
    assert_eq!(servers["restored"], servers["deleted"], "{servers}");
    assert_eq!(parameters(&a).await, Vec::<String>::new());
    let objects = aws_sdk_s3::Client::new(&conf).list_objects_v2().bucket(&bucket).prefix("v/").send().await.unwrap();
    let keys: Vec<String> = objects.contents().iter().filter_map(|o| o.key().map(String::from)).collect();
    let index_key = keys.iter().find(|k| k.ends_with(".dumps.json")).unwrap_or_else(|| panic!("{keys:?}"));
    let index: serde_json::Value = serde_json::from_slice(&a.get_object(&bucket, index_key).await).unwrap();
    assert_eq!(index["recovery_point"]["arn"], point.as_str());
}

/// `bunker serve`: an Oracle instance tagged `bunker:config:export.rds_format = dump` has an
/// AWS Backup recovery point. Every scan (each second) sees the point, but it is refused
/// once — one FAILED report on `status_sns_topic` saying to use parquet — no temporary
/// instance is restored, and the point is kept.
#[tokio::test(flavor = "multi_thread")]
async fn serve_reports_an_engine_without_a_dump_tool_once() {
    let a = common::Account::new("120000000005").await;
    let conf = a.sdk(common::REGION).await;
    let rds = aws_sdk_rds::Client::new(&conf);
    let tag = aws_sdk_rds::types::Tag::builder().key("bunker:config:export.rds_format").value("dump").build();
    let db = rds.create_db_instance().db_instance_identifier("ledger").engine("oracle-ee").engine_version("19.0");
    let db = db.db_instance_class("db.t3.medium").allocated_storage(20).master_username("admin");
    db.master_user_password("initial-password").tags(tag).send().await.unwrap();
    let backup = aws_sdk_backup::Client::new(&conf);
    backup.create_backup_vault().backup_vault_name("Default").send().await.unwrap();
    let db_arn = format!("arn:aws:rds:{}:{}:db:ledger", common::REGION, a.id);
    let role = "arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole";
    let job = backup.start_backup_job().backup_vault_name("Default").resource_arn(&db_arn).iam_role_arn(role);
    let point = job.send().await.unwrap().recovery_point_arn.unwrap();
    let sns = aws_sdk_sns::Client::new(&conf);
    let sqs = aws_sdk_sqs::Client::new(&conf);
    let topic = sns.create_topic().name("status").send().await.unwrap().topic_arn.unwrap();
    let queue = sqs.create_queue().queue_name("status").send().await.unwrap().queue_url.unwrap();
    let queue_arn = format!("arn:aws:sqs:{}:{}:status", common::REGION, a.id);
    sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(queue_arn).send().await.unwrap();
    let bucket = a.bucket("oracle").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    let body = format!(
        "regions = [\"{}\"]\ndeployment = \"dumps-test\"\nexport.to = \"s3://{bucket}/v\"\nexport.vaults = [\"Default\"]\n\
         export.delete_source = true\nstatus_sns_topic = \"{topic}\"\nschedule.create = \"\"\nschedule.clean = \"\"\n\
         [serve]\nreconcile_interval = \"1s\"\ncheck_interval = \"1s\"\n",
        common::REGION
    );
    std::fs::write(&cfg, body).unwrap();
    let (mut child, _addr, log) = a.serve(&cfg.display().to_string(), &dir.path().join("state"));
    let mut reports = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while reports.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no report: {}", std::fs::read_to_string(&log).unwrap());
        reports.extend(status_messages(&sqs, &queue).await);
    }
    tokio::time::sleep(std::time::Duration::from_secs(5)).await; // five more scans
    reports.extend(status_messages(&sqs, &queue).await);
    child.kill().unwrap();
    child.wait().unwrap();
    let about: Vec<_> = reports.iter().filter(|r| r.to_string().contains(&point)).collect();
    assert_eq!(about.len(), 1, "one report for the point: {reports:#?}");
    assert_eq!(about[0]["status"], "FAILED", "{:#}", about[0]);
    let why = about[0].to_string();
    assert!(why.contains("not supported for dumps") && why.contains("parquet"), "{why}");
    assert_eq!(rds_servers(&a)["restored"].as_array().unwrap().len(), 0, "no temporary instance");
    let kept = backup.describe_recovery_point().backup_vault_name("Default").recovery_point_arn(&point).send().await;
    assert!(kept.is_ok(), "the recovery point is kept");
}

/// The SNS messages waiting in `queue` (each envelope's `Message`, parsed), removed.
async fn status_messages(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<serde_json::Value> {
    let out = sqs.receive_message().queue_url(queue).max_number_of_messages(10).wait_time_seconds(1);
    let out = out.send().await.unwrap();
    let mut got = Vec::new();
    for m in out.messages() {
        let envelope: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
        got.push(serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap());
        sqs.delete_message().queue_url(queue).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
    }
    got
}
