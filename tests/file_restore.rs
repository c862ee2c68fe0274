//! File-level restores and searches from tar archives' catalogs (`bunker restore --to-dir
//! --path`, `bunker find`), against the emulator's S3 and local directories: what lands in the
//! target directory is compared with the source tree, what the restore read is counted by the
//! emulator, and crafted archives try to write outside the directory.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{blake3_hex, get_json, noise, sha256_hex, Account};

/// The hex of `data`'s `hash` (`blake3` or `sha256`), computed apart from bunker.
fn content_hex(hash: &str, data: &[u8]) -> String {
    if hash == "sha256" {
        sha256_hex(data)
    } else {
        blake3_hex(data)
    }
}

/// Every path below `root`, relative, sorted.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Asserts that `got` holds exactly `want`'s tree: paths, types, modes, owners, mtimes,
/// contents and symlink targets.
fn assert_same_tree(want: &Path, got: &Path) {
    let paths = walk(want);
    assert_eq!(walk(got), paths, "the same paths");
    for rel in paths {
        let (w, g) =
            (std::fs::symlink_metadata(want.join(&rel)).unwrap(), std::fs::symlink_metadata(got.join(&rel)).unwrap());
        assert_eq!((w.mode(), w.uid(), w.gid()), (g.mode(), g.uid(), g.gid()), "{}", rel.display());
        if !w.is_dir() {
            assert_eq!(w.mtime(), g.mtime(), "{}", rel.display());
        }
        if w.is_file() {
            assert_eq!(
                std::fs::read(want.join(&rel)).unwrap(),
                std::fs::read(got.join(&rel)).unwrap(),
                "{}",
                rel.display()
            );
        }
        if w.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(want.join(&rel)).unwrap(), std::fs::read_link(got.join(&rel)).unwrap());
        }
    }
}

fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

/// A 1 GiB tree (four 256 MiB files of incompressible bytes) with a 4 KiB `etc/hosts`
/// between them, exported to the emulator's S3: restoring that one file reads under 2 % of
/// the archive's bytes (counted by the emulator: manifest, seek table and catalog included),
/// and the file comes back with its contents, mode and mtime.
#[tokio::test(flavor = "multi_thread")]
async fn one_small_file_comes_back_from_a_gib_archive_reading_under_two_percent_of_it() {
    let a = Account::new("410000000021").await;
    let bucket = a.bucket("files").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    let block = noise(21, 8 << 20);
    for name in ["a.bin", "m.bin", "x.bin", "z.bin"] {
        let mut f = std::fs::File::create(tree.join(name)).unwrap();
        for _ in 0..32 {
            f.write_all(&block).unwrap();
        }
    }
    let hosts = noise(22, 4096);
    std::fs::write(tree.join("etc/hosts"), &hosts).unwrap();
    std::fs::set_permissions(tree.join("etc/hosts"), std::fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&tree.join("etc/hosts"), 1_700_000_000);
    let to = format!("s3://{bucket}/exports");
    let out = a.bunker(&["--json", "export", "path", tree.to_str().unwrap(), "--to", &to]).ok_json();
    let archive = out["archive"].as_str().unwrap().to_string();
    let size = out["archive_size"].as_u64().unwrap();
    assert!(size > 1 << 30, "{out:#}");

    let read = || get_json(&a.endpoint, "/_bunker/stats")["get_object_bytes"][&bucket].as_u64().unwrap_or(0);
    let before = read();
    let back = dir.path().join("back");
    let restored =
        a.bunker(&["--json", "restore", &archive, "--path", "/etc/hosts", "--to-dir", back.to_str().unwrap()]);
    let report = restored.ok_json();
    let fetched = read() - before;
    eprintln!("restore of one 4 KiB file read {fetched} of the archive's {size} bytes: {report:#}");
    assert!(fetched * 50 < size, "read {fetched} bytes of {size}");
    assert!(report["archive_bytes_read"].as_u64().unwrap() <= fetched);
    assert_eq!(std::fs::read(back.join("etc/hosts")).unwrap(), hosts);
    let m = std::fs::metadata(back.join("etc/hosts")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_700_000_000));
    assert_eq!(walk(&back), [PathBuf::from("etc"), PathBuf::from("etc/hosts")], "only that file and its parent");
    assert_eq!(report["files"], 1);

    // find: the catalog of every archive under the prefix, nothing else.
    let found = a.bunker(&["--json", "find", &to, "hosts"]).ok_json();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found:#}");
    assert_eq!(found[0]["path"], "etc/hosts");
    assert_eq!(found[0]["archive"], archive.as_str());
    let none = a.bunker(&["--json", "find", "--since", "2999-01-01", &to, "hosts"]).ok_json();
    assert_eq!(none.as_array().unwrap().len(), 0, "{none:#}");
    let bins = a.bunker(&["--json", "find", &archive, "*.bin"]).ok_json();
    assert_eq!(bins.as_array().unwrap().len(), 4, "{bins:#}");
}

/// A tree with files, an empty file, a hard link, a symlink, a unicode name, a deep path and
/// modes, exported to a directory: `restore --to-dir` gives back exactly the tree; a second
/// restore of a subtree is refused without --overwrite (nothing changed) and replaces it
/// with; a hard link restored alone gets its target's contents; a pre-existing symlink in
/// the target directory is never written through.
#[tokio::test(flavor = "multi_thread")]
async fn a_tree_restores_exactly_and_nothing_existing_is_replaced_without_overwrite() {
    let a = Account::new("410000000022").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let deep = format!("srv/{}/{}", "d".repeat(90), "e".repeat(90));
    std::fs::create_dir_all(tree.join(&deep)).unwrap();
    std::fs::create_dir_all(tree.join("etc/nginx/conf.d")).unwrap();
    std::fs::write(tree.join("etc/nginx/nginx.conf"), b"worker_processes 2;\n").unwrap();
    std::fs::write(tree.join("etc/nginx/conf.d/empty.conf"), b"").unwrap();
    std::fs::write(tree.join(&deep).join("long.txt"), b"a path over 100 bytes\n").unwrap();
    std::fs::write(tree.join("big.bin"), noise(9, 9 << 20)).unwrap();
    std::fs::hard_link(tree.join("big.bin"), tree.join("etc/big-again.bin")).unwrap();
    std::fs::write(tree.join("ünïcode ✓.txt"), "ü\n").unwrap();
    std::os::unix::fs::symlink("nginx/nginx.conf", tree.join("etc/current.conf")).unwrap();
    std::fs::set_permissions(tree.join("etc/nginx"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(tree.join("etc/nginx/nginx.conf"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(tree.join("big.bin"), Some(1234), Some(5678)).unwrap();
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let to = format!("file://{}", target.display());
    let out = a.bunker(&["--json", "export", "path", tree.to_str().unwrap(), "--to", &to]).ok_json();
    let archive = out["archive"].as_str().unwrap().to_string();

    let back = dir.path().join("back");
    let all = a.bunker(&["--json", "restore", &archive, "--to-dir", back.to_str().unwrap()]).ok_json();
    assert_same_tree(&tree, &back);
    let (one, two) =
        (std::fs::metadata(back.join("big.bin")).unwrap(), std::fs::metadata(back.join("etc/big-again.bin")).unwrap());
    assert_eq!(one.ino(), two.ino(), "a hard link comes back as one: {all:#}");

    std::fs::write(back.join("etc/nginx/nginx.conf"), b"changed locally\n").unwrap();
    let again = a.bunker(&["restore", &archive, "--path", "etc/nginx", "--to-dir", back.to_str().unwrap()]);
    assert_eq!(again.code, 2, "{again:#?}");
    assert!(again.stderr.contains("exists (and 1 more)") && again.stderr.contains("--overwrite"), "{}", again.stderr);
    assert_eq!(std::fs::read(back.join("etc/nginx/nginx.conf")).unwrap(), b"changed locally\n", "nothing replaced");
    a.bunker(&["restore", &archive, "--path", "etc/nginx", "--to-dir", back.to_str().unwrap(), "--overwrite"])
        .ok_json_or_code(0);
    assert_same_tree(&tree, &back);

    let alone = dir.path().join("alone");
    a.bunker(&["restore", &archive, "--path", "etc/big-again.bin", "--to-dir", alone.to_str().unwrap()])
        .ok_json_or_code(0);
    assert_eq!(std::fs::read(alone.join("etc/big-again.bin")).unwrap(), std::fs::read(tree.join("big.bin")).unwrap());
    assert!(!alone.join("big.bin").exists(), "the target's own path is not restored");

    // A symlink already in the target directory is not written through.
    let (trap, outside) = (dir.path().join("trap"), dir.path().join("outside"));
    std::fs::create_dir_all(&trap).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, trap.join("etc")).unwrap();
    let through =
        a.bunker(&["restore", &archive, "--path", "etc/nginx", "--to-dir", trap.to_str().unwrap(), "--overwrite"]);
    assert_ne!(through.code, 0, "{through:#?}");
    assert!(through.stderr.contains("etc"), "{}", through.stderr);
    assert!(walk(&outside).is_empty(), "nothing written through the symlink");
    let missing = a.bunker(&["restore", &archive, "--path", "nope", "--to-dir", trap.to_str().unwrap()]);
    assert_eq!(missing.code, 2, "{missing:#?}");
    assert!(missing.stderr.contains("nope: no such path"), "{}", missing.stderr);

    // find over the directory: a stray catalog without its archive is named (exit 1), and
    // the real archive is still searched.
    std::fs::write(target.join("stray.catalog.jsonl.zst"), b"not a catalog").unwrap();
    let found = a.bunker(&["--json", "find", &to, "nginx.conf"]);
    assert_eq!(found.code, 1, "{found:#?}");
    assert!(found.stderr.contains("stray"), "{}", found.stderr);
    let hits = found.json();
    assert_eq!(hits.as_array().unwrap().len(), 1, "{hits:#}");
    assert_eq!(hits[0]["path"], "etc/nginx/nginx.conf");
}

/// One raw tar entry: the header's name bytes as given (no checks), then the contents.
fn raw_entry(name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// One crafted entry: the name in its tar header, the path the catalog gives, its catalog
/// type, contents and link.
struct Crafted<'a> {
    header: &'a str,
    path: &'a str,
    kind: &'a str,
    data: &'a [u8],
    link: Option<&'a str>,
}

fn file<'a>(header: &'a str, path: &'a str, data: &'a [u8]) -> Crafted<'a> {
    Crafted { header, path, kind: "file", data, link: None }
}

/// A bunker tar archive `name` in `target` made of `entries`, with a catalog listing each at
/// its offset, self-consistent: every hash in its manifest holds, as an attacker who can
/// write the bucket would make it.
fn crafted_archive(a: &Account, target: &Path, name: &str, entries: &[Crafted<'_>]) -> String {
    crafted_archive_hashed(a, target, name, entries, "blake3")
}

/// [`crafted_archive`] with a catalog of the version whose content hash is `hash`: `blake3`
/// (version 2) or `sha256` (version 1, as older bunkers wrote it).
fn crafted_archive_hashed(a: &Account, target: &Path, name: &str, entries: &[Crafted<'_>], hash: &str) -> String {
    let mut stream = Vec::new();
    let version = if hash == "sha256" { 1 } else { 2 };
    let mut catalog = format!("{{\"format\":\"bunker-catalog\",\"version\":{version}}}\n");
    for c in entries {
        let kind = if c.kind == "symlink" { tar::EntryType::Symlink } else { tar::EntryType::Regular };
        let mut e = serde_json::json!({"path": c.path, "type": c.kind, "size": c.data.len(), "mode": 0o644, "uid": 0,
            "gid": 0, "mtime": 1_700_000_000, "offset": stream.len()});
        if c.kind == "file" {
            e[hash] = content_hex(hash, c.data).into();
        }
        if let Some(l) = c.link {
            e["link"] = l.into();
        }
        catalog.push_str(&format!("{e}\n"));
        stream.extend_from_slice(&raw_entry(c.header, kind, c.data, c.link));
    }
    stream.extend_from_slice(&[0u8; 1024]);
    let raw = target.join(format!("{name}.raw"));
    std::fs::write(&raw, &stream).unwrap();
    let to = format!("file://{}", target.display());
    a.bunker(&["--json", "export", "file", raw.to_str().unwrap(), "--to", &to, "--name", name]).ok_json();
    std::fs::rename(target.join(format!("{name}.img.zst")), target.join(format!("{name}.tar.zst"))).unwrap();
    let mut zstd =
        Command::new("zstd").args(["-q", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    zstd.stdin.take().unwrap().write_all(catalog.as_bytes()).unwrap();
    let compressed = zstd.wait_with_output().unwrap().stdout;
    std::fs::write(target.join(format!("{name}.catalog.jsonl.zst")), &compressed).unwrap();
    let mpath = target.join(format!("{name}.manifest.json"));
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    m["content"] = "tar".into();
    m["archive"]["key"] = format!("{name}.tar.zst").into();
    m["catalog"] = serde_json::json!({"key": format!("{name}.catalog.jsonl.zst"), "sha256": sha256_hex(&compressed),
        "entries": entries.len()});
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    format!("{to}/{name}.tar.zst")
}

/// Archives crafted to write outside the target directory are refused and write nothing
/// there or anywhere else: a `..` path in the catalog, a header whose path is not the
/// catalog's, a file under a symlink of the archive; a file whose contents do not hash to
/// the catalog's hash (BLAKE3, or SHA-256 in a version 1 catalog) fails naming it, and so
/// does a flipped byte in its frame; no temporary file is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn crafted_and_tampered_archives_write_nothing_outside_and_name_the_file() {
    let a = Account::new("410000000023").await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("archives");
    std::fs::create_dir(&target).unwrap();
    let dest = dir.path().join("a/b/dest");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let restore = |url: &str| a.bunker(&["restore", url, "--to-dir", dest.to_str().unwrap()]);
    let no_passwd = || {
        let all = walk(dir.path());
        assert!(!all.iter().any(|p| p.ends_with("passwd") && !p.starts_with("archives")), "{all:?}");
    };

    let passwd = b"root::0:0::/:/bin/sh\n";
    let url = crafted_archive(&a, &target, "dotdot", &[file("../../etc/passwd", "../../etc/passwd", passwd)]);
    let run = restore(&url);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("`..` component escapes"), "{}", run.stderr);
    no_passwd();

    let url = crafted_archive(&a, &target, "header", &[file("../../etc/passwd", "etc/passwd", passwd)]);
    let run = restore(&url);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("\"../../etc/passwd\", not the catalog's path"), "{}", run.stderr);
    no_passwd();

    let out = outside.display().to_string();
    let link = Crafted { header: "lnk", path: "lnk", kind: "symlink", data: b"", link: Some(&out) };
    let url = crafted_archive(&a, &target, "symlink", &[link, file("lnk/evil", "lnk/evil", b"x\n")]);
    let run = restore(&url);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("a symlink or a file, not a directory"), "{}", run.stderr);
    assert!(walk(&outside).is_empty());

    // The catalog's hash of etc/issue replaced (and the manifest's hash of the catalog with
    // it), in a version 2 catalog (BLAKE3) and a version 1 one (SHA-256).
    for (name, hash) in [("hash-v1", "sha256"), ("hash", "blake3")] {
        let two = [file("etc/motd", "etc/motd", b"hello\n"), file("etc/issue", "etc/issue", b"world\n")];
        let url = crafted_archive_hashed(&a, &target, name, &two, hash);
        let cpath = target.join(format!("{name}.catalog.jsonl.zst"));
        let text = String::from_utf8(common::zstd_decompress(&std::fs::read(&cpath).unwrap())).unwrap();
        let text = text.replace(&content_hex(hash, b"world\n"), &content_hex(hash, b"WORLD\n"));
        let mut zstd =
            Command::new("zstd").args(["-q", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        zstd.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let compressed = zstd.wait_with_output().unwrap().stdout;
        std::fs::write(&cpath, &compressed).unwrap();
        let mpath = target.join(format!("{name}.manifest.json"));
        let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
        m["catalog"]["sha256"] = sha256_hex(&compressed).into();
        std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
        let _fresh = std::fs::remove_dir_all(&dest);
        let run = restore(&url);
        assert_eq!(run.code, 1, "{run:#?}");
        let said = format!("etc/issue: its contents in the archive hash to {hash} {}", content_hex(hash, b"world\n"));
        assert!(run.stderr.contains(&said), "{}", run.stderr);
        assert!(!dest.join("etc/issue").exists());
        assert_eq!(std::fs::read(dest.join("etc/motd")).unwrap(), b"hello\n", "the file before it is whole");
    }

    // A flipped byte in the frame: the restore fails naming the file it was reading.
    let url = format!("file://{}/hash.tar.zst", target.display());
    let apath = target.join("hash.tar.zst");
    let mut bytes = std::fs::read(&apath).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&apath, bytes).unwrap();
    std::fs::remove_dir_all(&dest).unwrap();
    let run = a.bunker(&["restore", &url, "--path", "etc/motd", "--to-dir", dest.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("etc/motd: chunk 0"), "{}", run.stderr);
    assert!(!dest.join("etc/motd").exists());
    let leftovers: Vec<_> =
        walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().contains(".bunker-restore")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
