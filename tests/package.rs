//! Issue 14 §2: the .deb builds from the workspace (`deploy/deb/build.sh`, cargo-deb), installs
//! with `dpkg -i` on this machine (the tests run as root), and what it installed works: the
//! binary, the user the unit runs as, the private config (valid as shipped), the units
//! (`systemd-analyze verify`), the man pages and the completions. Purged at the end.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn ok(cmd: &mut Command) -> String {
    let (code, stdout, stderr) = run(cmd);
    assert_eq!(code, 0, "{cmd:?}\n{stdout}\n{stderr}");
    stdout
}

/// Purges the package when the test ends, passed or not.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let (code, _, stderr) = run(Command::new("dpkg").args(["--purge", "bunker"]));
        if code != 0 {
            eprintln!("dpkg --purge bunker: {stderr}");
        }
    }
}

/// Builds the package from the binary these tests run (the dev profile; no rebuild).
fn build(out: &Path) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_bunker"));
    let target = bin.parent().and_then(Path::parent).expect("target dir");
    let stdout = ok(Command::new("bash")
        .arg(root().join("deploy/deb/build.sh"))
        .env("CARGO_TARGET_DIR", target)
        .env("PROFILE", "dev")
        .env("NO_BUILD", "1")
        .env("FAST", "1")
        .env("OUTPUT", out));
    PathBuf::from(stdout.lines().last().expect("the .deb's path").trim())
}

#[test]
fn the_deb_installs_a_working_binary_unit_config_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());
    let listing = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for (path, mode) in [
        ("./usr/bin/bunker", "-rwxr-xr-x"),
        ("./etc/bunker/bunker.toml", "-rw-r-----"),
        ("./lib/systemd/system/bunker.service", "-rw-r--r--"),
        ("./lib/systemd/system/bunker-backup@.service", "-rw-r--r--"),
        ("./usr/share/bunker/systemd/bunker.service.d/mount.conf", "-rw-r--r--"),
        ("./usr/share/bunker/iam/bunker-lifecycle-policy.json", "-rw-r--r--"),
        ("./usr/share/bunker/iam/bunker-service-policy.json", "-rw-r--r--"),
        ("./usr/share/man/man1/bunker.1.gz", "-rw-r--r--"),
        ("./usr/share/man/man1/bunker-doctor.1.gz", "-rw-r--r--"),
        ("./usr/share/bash-completion/completions/bunker", "-rw-r--r--"),
    ] {
        let line = listing.lines().find(|l| l.ends_with(path)).unwrap_or_else(|| panic!("no {path}:\n{listing}"));
        assert!(line.starts_with(mode), "{line}");
    }
    assert!(!listing.contains("etc/systemd"), "the CAP_SYS_ADMIN drop-in is not active by default:\n{listing}");
    let control = ok(Command::new("dpkg-deb").arg("--field").arg(&deb).arg("Depends"));
    assert!(control.contains("adduser"), "{control}");

    let _ = run(Command::new("dpkg").args(["--purge", "bunker"])); // a previous run's leftovers
    let _installed = Installed;
    ok(Command::new("dpkg").arg("-i").arg(&deb));
    let version = ok(Command::new("/usr/bin/bunker").arg("--version"));
    assert_eq!(version.trim(), format!("bunker {}", env!("CARGO_PKG_VERSION")));
    ok(Command::new("getent").args(["passwd", "bunker"]));
    let meta = std::fs::metadata("/etc/bunker/bunker.toml").unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let group = ok(Command::new("getent").args(["group", "bunker"]));
    assert_eq!(group.split(':').nth(2).unwrap().parse::<u32>().unwrap(), meta.gid(), "{group}");
    // The shipped config is valid as it stands.
    let shown = ok(Command::new("/usr/bin/bunker").args(["--config", "/etc/bunker/bunker.toml", "config", "show"]));
    assert!(shown.contains("keep_daily"), "{shown}");
    // systemd accepts the installed units (verify also checks ExecStart exists: /usr/bin/bunker).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        ok(Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/bunker.service"]));
    }
    let page = ok(Command::new("zcat").arg("/usr/share/man/man1/bunker-doctor.1.gz"));
    assert!(page.contains(".TH bunker-doctor 1") && page.contains("OK/WARN/FAIL"), "{page}");
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/bunker").unwrap();
    assert!(bash.contains("doctor") && bash.contains("--config"), "completions cover the commands");
}
