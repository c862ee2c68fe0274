//! Issue 9: the ways bunker could lose backups, overwrite files or obey a stranger, each
//! against the emulator or the real filesystem.

mod common;

use std::process::Command;

use common::{tag_values, Account, Run};

fn write_config(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn without_deployment(a: &Account, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c: Command = a.command();
    c.env_remove("BUNKER_DEPLOYMENT").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    Run::from(c.output().expect("run bunker"))
}

/// 9.2: two installs in one account and region with default settings would own each
/// other's backups. A command that deletes refuses to run without an explicit `deployment`.
#[tokio::test]
async fn two_installs_never_delete_each_others_backups() {
    let a = Account::new("910000000001").await;
    a.volume(&[("bunker:create_backup", "true")]).await;
    let dir = tempfile::tempdir().unwrap();
    let prod = write_config(dir.path(), "prod.toml", "deployment = \"prod\"\n");
    for day in ["2037-03-03", "2037-03-04", "2037-03-05", "2037-03-06", "2037-03-07"] {
        let now = format!("{day}T01:00:00Z");
        without_deployment(&a, &["ebs", "create-backups", "--config", &prod, "--now", &now], &[]).ok_json_or_code(0);
    }
    assert_eq!(tag_values(&a.snapshots().await, "bunker:deployment"), ["prod"; 5]);

    // A test box in the same account, keep_daily = 1, no deployment set: refused, nothing deleted.
    let test_box = write_config(dir.path(), "test.toml", "keep_daily = 1\n");
    let r =
        without_deployment(&a, &["ebs", "clean-backups", "--config", &test_box, "--now", "2037-03-20T00:00:00Z"], &[]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("deployment = ") && r.stderr.contains("clean-backups"), "{}", r.stderr);
    assert_eq!(a.snapshots().await.len(), 5, "a refused clean deletes nothing");
    // `serve` with its default clean schedule refuses too, before it listens.
    let r =
        without_deployment(&a, &["serve", "--config", &test_box], &[("STATE_DIRECTORY", dir.path().to_str().unwrap())]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("deployment = ") && r.stderr.contains("schedule.clean"), "{}", r.stderr);
    // A dry run deletes nothing, so it may run.
    let r = without_deployment(&a, &["ebs", "clean-backups", "--config", &test_box, "--dry-run", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:#?}");

    // Told apart, the test box owns nothing of prod's.
    let test_box = write_config(dir.path(), "test2.toml", "keep_daily = 1\ndeployment = \"test-box\"\n");
    let r = without_deployment(
        &a,
        &["ebs", "clean-backups", "--config", &test_box, "--now", "2037-03-20T00:00:00Z", "--json"],
        &[],
    );
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(a.snapshots().await.len(), 5);
    // The owner itself still cleans its own (a config that changes keeps its id).
    let prod_later = write_config(dir.path(), "prod2.toml", "deployment = \"prod\"\nkeep_daily = 1\n");
    let r = without_deployment(
        &a,
        &["ebs", "clean-backups", "--config", &prod_later, "--now", "2037-03-20T00:00:00Z"],
        &[],
    );
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(tag_values(&a.snapshots().await, "bunker:created_at"), ["2037-03-07T01:00:00Z"]);
}

/// `bunker` with a bare environment: no AWS settings at all, logs to stderr.
fn local_bunker(args: &[&str], umask: Option<&str>) -> Run {
    let exe = env!("CARGO_BIN_EXE_bunker");
    let mut c = match umask {
        // The umask is the shell's to set; `exec` keeps it for bunker.
        Some(m) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("umask {m}; exec \"$0\" \"$@\""), exe]);
            c
        }
        None => Command::new(exe),
    };
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).args(args);
    Run::from(c.output().expect("run bunker"))
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// A 3 MiB image: a megabyte of data, a hole, a megabyte of data.
fn image(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("disk.img");
    let mut data: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    data.extend(std::iter::repeat_n(0u8, 1 << 20));
    data.extend((0..1u32 << 20).map(|i| (i.wrapping_mul(40_503) >> 7) as u8));
    std::fs::write(&p, data).unwrap();
    p
}

/// 9.3, 9.8: archives and restored images are 0600 whatever the umask; a restore never
/// writes through a symlink at `PATH.partial`, nor replaces a user's file there.
#[test]
fn restores_never_follow_links_and_every_written_file_is_private() {
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path());
    let target = d.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());
    let r = local_bunker(&["export", "file", img.to_str().unwrap(), "--to", &to, "--name", "disk"], Some("000"));
    assert_eq!(r.code, 0, "{r:#?}");
    for f in ["disk.img.zst", "disk.manifest.json"] {
        assert_eq!(mode(&target.join(f)), 0o600, "{f} under umask 000");
    }
    let archive = format!("{to}/disk.img.zst");

    // A link planted at PATH.partial: refused, its target untouched.
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let out = d.path().join("restored.img");
    let partial = d.path().join("restored.img.partial");
    std::os::unix::fs::symlink(&victim, &partial).unwrap();
    let r = local_bunker(&["restore", &archive, "--to-file", out.to_str().unwrap()], None);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("restored.img.partial"), "names the file: {}", r.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&partial).unwrap().file_type().is_symlink(), "the link is left alone");
    // A user's own file of that name: refused too, kept as it was.
    std::fs::remove_file(&partial).unwrap();
    std::fs::write(&partial, b"my notes").unwrap();
    let r = local_bunker(&["restore", &archive, "--to-file", out.to_str().unwrap()], None);
    assert_eq!(r.code, 2, "{r:#?}");
    assert_eq!(std::fs::read(&partial).unwrap(), b"my notes");
    assert!(!out.exists());
    // Free names: restored, 0600 under umask 000, identical to the image.
    std::fs::remove_file(&partial).unwrap();
    let r = local_bunker(&["restore", &archive, "--to-file", out.to_str().unwrap()], Some("000"));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(mode(&out), 0o600);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&img).unwrap());
}

/// 9.10: an archive name is one plain path component.
#[test]
fn archive_names_cannot_escape_the_target_or_hide() {
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path());
    let target = d.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());
    for name in ["../escaped", "", ".hidden", "a/b"] {
        let r = local_bunker(&["export", "file", img.to_str().unwrap(), "--to", &to, "--name", name], None);
        assert_eq!(r.code, 2, "--name {name:?}: {r:#?}");
        assert!(r.stderr.contains("--name"), "{}", r.stderr);
    }
    let mut left: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    left.sort();
    assert_eq!(left, ["archives", "disk.img"], "nothing written outside the target");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "nor inside it");
}

/// 9.9: untrusted inputs are read with a bound: the config file, and a manifest.
#[test]
fn endless_configs_and_huge_manifests_are_refused_unread() {
    let started = std::time::Instant::now();
    let r = local_bunker(&["--config", "/dev/zero", "config", "show"], None);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("/dev/zero") && r.stderr.contains("1024 KiB"), "{}", r.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "read only up to the cap");

    let d = tempfile::tempdir().unwrap();
    let img = image(d.path());
    let target = d.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());
    let r = local_bunker(&["export", "file", img.to_str().unwrap(), "--to", &to, "--name", "disk"], None);
    assert_eq!(r.code, 0, "{r:#?}");
    // A 2 GiB manifest (sparse) beside a 3-frame archive.
    let manifest = std::fs::OpenOptions::new().write(true).open(target.join("disk.manifest.json")).unwrap();
    manifest.set_len(2 << 30).unwrap();
    let r = local_bunker(&["verify", &format!("{to}/disk.img.zst")], None);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.contains("disk.manifest.json") && r.stderr.contains("bytes a manifest of its archive can take"),
        "{}",
        r.stderr
    );
}

/// 9.13: an export from a file to a directory reaches no AWS endpoint, not even the
/// instance metadata service, with no region configured.
#[test]
fn local_exports_touch_no_aws_endpoint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let at = format!("http://{}", listener.local_addr().unwrap());
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path());
    let target = d.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());
    let out = d.path().join("back.img");
    for args in [
        vec!["export", "file", img.to_str().unwrap(), "--to", &to, "--name", "disk"],
        vec!["verify", &format!("{to}/disk.img.zst")],
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bunker"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", d.path())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &at)
            .env("AWS_ENDPOINT_URL", &at)
            .args(&args);
        let r = Run::from(c.output().unwrap());
        assert_eq!(r.code, 0, "{args:?}: {r:#?}");
    }
    let r = local_bunker(&["restore", &format!("{to}/disk.img.zst"), "--to-file", out.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(listener.accept().is_err(), "something connected to the metadata / AWS endpoint");
}

/// 9.4, 9.5: a queue message may only ask for what the config allows, and a command that can
/// never run is dead-lettered at once with the reason, not redelivered.
#[tokio::test]
async fn the_queue_asks_only_for_what_the_config_allows_and_hopeless_commands_dead_letter_once() {
    use std::time::{Duration, Instant};
    let a = Account::new("910000000004").await;
    let region = common::REGION;
    let bucket = a.bucket("allowed").await;
    let sqs = aws_sdk_sqs::Client::new(&a.sdk(region).await);
    let q = sqs.create_queue().queue_name("hostile").send().await.unwrap().queue_url.unwrap();
    let dlq = sqs.create_queue().queue_name("hostile-dlq").send().await.unwrap().queue_url.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    let cfg = write_config(
        dir.path(),
        "bunker.toml",
        &format!(
            "regions = [\"{region}\"]\nexport.to = \"s3://{bucket}/auto\"\nschedule.create = \"\"\nschedule.clean = \"\"\n\
             [serve]\nkinds = \"ebs\"\nlisten = \"127.0.0.1:0\"\ncheck_interval = \"1s\"\nqueue_url = \"{q}\"\n\
             dead_letter_queue_url = \"{dlq}\"\nreconcile_interval = \"1h\"\n"
        ),
    );
    let (mut child, addr, log) = a.serve(&cfg, &dir.path().join("state"));
    let hostile = [
        (
            format!(r#"{{"action":"export","snapshot_id":"snap-0123abcd","to":"file://{}"}}"#, evil.display()),
            "export.allowed_targets",
        ),
        (r#"{"action":"create-backups","kind":"rds"}"#.to_string(), "serve.kinds"),
        (r#"{"action":"pull-backups","kind":"ebs"}"#.to_string(), "source_accounts"),
        (r#"{"action":"export","snapshot_id":"snap-0123abcd","region":"../../evil"}"#.to_string(), "invalid region"),
        (r#"{"action":"export","snapshot_id":"snap-0123456789abcdef0"}"#.to_string(), "does not exist"),
    ];
    for (body, _) in &hostile {
        sqs.send_message().queue_url(&q).message_body(body).send().await.unwrap();
    }
    let t = Instant::now();
    let mut reasons = Vec::new();
    while reasons.len() < hostile.len() {
        assert!(t.elapsed() < Duration::from_secs(60), "{reasons:#?}\n{}", std::fs::read_to_string(&log).unwrap());
        let got = sqs
            .receive_message()
            .queue_url(&dlq)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            reasons.push(m.message_attributes().unwrap()["bunker_reason"].string_value().unwrap().to_string());
            sqs.delete_message().queue_url(&dlq).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
    for (_, why) in &hostile {
        assert!(reasons.iter().any(|r| r.contains(why)), "no dead letter says {why:?}: {reasons:#?}");
    }
    let metrics = common::http_get(&addr, "/metrics");
    assert!(
        metrics.contains(&format!("bunker_messages_total{{outcome=\"dead_lettered\"}} {}", hostile.len())),
        "{metrics}"
    );
    assert!(!metrics.contains("outcome=\"left\""), "nothing was left for redelivery: {metrics}");
    assert_eq!(std::fs::read_dir(&evil).unwrap().count(), 0, "nothing written where no config points");
    child.kill().unwrap();
    child.wait().unwrap();
}
