//! The plan of a file-level restore from a tar archive's catalog (`bunker restore ARCHIVE
//! --path P --to-dir DIR`): which entries are restored and where, which stretches of the
//! uncompressed tar stream hold the regular files among them (only those are fetched:
//! directories, symlinks and hard links are made from the catalog alone), and the
//! directories to create around them. Every path is checked before anything is fetched or
//! written: a path that is absolute, has a `..` component or is empty is refused.
//!
//! Pure: the archive reader fetches the stretches, the tree writer writes the plan.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{CatalogEntry, EntryKind};

/// A regular file to fetch, and where its contents go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileJob {
    /// The catalog entry whose header and contents are fetched.
    pub entry: CatalogEntry,
    /// The stretch of the uncompressed stream holding the entry: from its first header to the
    /// next entry's (or the end of the stream).
    pub start: u64,
    /// End of that stretch (exclusive).
    pub end: u64,
    /// Relative paths to write it at: the first gets the contents, the others are hard links
    /// to it (the hard links selected whose target was not).
    pub outputs: Vec<String>,
}

/// What a file-level restore does, in order: directories, then files (ascending by offset,
/// the order of the stream), then symlinks and hard links, then directory metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestorePlan {
    /// Directories to create, parents first: the selected ones and the ancestors of every
    /// selected entry (with the catalog's metadata when it lists them).
    pub dirs: Vec<DirJob>,
    /// Regular files to fetch, ascending by offset.
    pub files: Vec<FileJob>,
    /// Symlinks to create (the catalog's `link` is the target, restored as it is).
    pub symlinks: Vec<CatalogEntry>,
    /// Hard links to create: (the link's path, the path of a file this restore writes).
    pub hardlinks: Vec<(String, String)>,
}

/// A directory to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirJob {
    /// Its relative path.
    pub path: String,
    /// Its catalog entry, when the catalog lists it (metadata applied after its contents).
    pub entry: Option<CatalogEntry>,
}

impl RestorePlan {
    /// Bytes of the tar stream fetched (headers, contents and padding of the files).
    pub fn stream_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.end - f.start).sum()
    }

    /// Every relative path the restore creates but a directory, for the no-overwrite check.
    pub fn outputs(&self) -> impl Iterator<Item = &str> {
        let files = self.files.iter().flat_map(|f| f.outputs.iter().map(String::as_str));
        let links = self.symlinks.iter().map(|s| s.path.as_str());
        let hard = self.hardlinks.iter().map(|(l, _)| l.as_str());
        files.chain(links).chain(hard)
    }
}

/// Why a restore cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A wanted path the catalog does not list.
    #[error("{0}: no such path in the archive (bunker ls lists what it holds)")]
    NoSuchPath(String),
    /// An entry whose path would land outside the target directory.
    #[error("{path:?}: {reason}; refused (nothing was written)")]
    Unsafe {
        /// The entry's path as the catalog has it.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A hard link whose target the catalog does not list as a regular file.
    #[error("hard link {path:?} points to {target:?}, which the catalog does not list as a file")]
    DanglingLink {
        /// The link.
        path: String,
        /// What it points to.
        target: String,
    },
}

/// A catalog path without a leading `./` or trailing `/` (`.` for the root).
pub fn normalize(path: &str) -> &str {
    let p = path.trim_end_matches('/');
    let p = p.strip_prefix("./").unwrap_or(p);
    if p.is_empty() {
        "."
    } else {
        p
    }
}

/// Checks that `path` stays below the target directory: relative, no `..`, no empty or `.`
/// component, no NUL.
pub fn check_path(path: &str) -> Result<(), PlanError> {
    let unsafe_path = |reason| Err(PlanError::Unsafe { path: path.to_string(), reason });
    let p = normalize(path);
    if p.starts_with('/') {
        return unsafe_path("an absolute path");
    }
    if p.contains('\0') {
        return unsafe_path("a NUL byte in the path");
    }
    for c in p.split('/') {
        match c {
            ".." => return unsafe_path("a `..` component escapes the target directory"),
            "" | "." => return unsafe_path("an empty or `.` component"),
            _ => {}
        }
    }
    Ok(())
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

/// Plans the restore of `wanted` (catalog paths; empty, `.` or `/` means everything) from a
/// catalog whose tar stream is `stream_size` bytes long.
pub fn plan(entries: &[CatalogEntry], wanted: &[String], stream_size: u64) -> Result<RestorePlan, PlanError> {
    let chosen = choose(entries, wanted)?;
    let by_path: BTreeMap<&str, &CatalogEntry> = entries.iter().map(|e| (normalize(&e.path), e)).collect();
    let mut offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
    offsets.sort_unstable();
    offsets.dedup();
    let end_of = |offset: u64| {
        let i = offsets.partition_point(|o| *o <= offset);
        offsets.get(i).copied().unwrap_or(stream_size)
    };
    let mut plan = RestorePlan::default();
    let mut files: BTreeMap<u64, FileJob> = BTreeMap::new();
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let chosen_files: BTreeSet<&str> =
        chosen.iter().filter(|e| e.kind == EntryKind::File).map(|e| normalize(&e.path)).collect();
    for e in &chosen {
        let path = normalize(&e.path);
        if path == "." {
            continue; // the archive's root (`./` of `tar -C dir .`): the target directory itself
        }
        check_path(path)?;
        let mut up = parent(path);
        while let Some(p) = up {
            if by_path.get(p).is_some_and(|a| a.kind != EntryKind::Dir) {
                let reason = "a parent of it in the archive is a symlink or a file, not a directory";
                return Err(PlanError::Unsafe { path: path.to_string(), reason });
            }
            dirs.insert(p.to_string());
            up = parent(p);
        }
        match e.kind {
            EntryKind::Dir => {
                dirs.insert(path.to_string());
            }
            EntryKind::File => {
                let job = files.entry(e.offset).or_insert_with(|| job(e, end_of(e.offset)));
                job.outputs.insert(0, path.to_string());
            }
            EntryKind::Symlink => plan.symlinks.push(CatalogEntry { path: path.to_string(), ..(*e).clone() }),
            EntryKind::Hardlink => {
                let target = normalize(e.link.as_deref().unwrap_or_default());
                let dangling = || PlanError::DanglingLink { path: path.to_string(), target: target.to_string() };
                check_path(target).map_err(|_| dangling())?;
                if chosen_files.contains(target) {
                    plan.hardlinks.push((path.to_string(), target.to_string()));
                    continue;
                }
                let t = by_path.get(target).filter(|t| t.kind == EntryKind::File).ok_or_else(dangling)?;
                files.entry(t.offset).or_insert_with(|| job(t, end_of(t.offset))).outputs.push(path.to_string());
            }
        }
    }
    plan.dirs = dirs
        .into_iter()
        .map(|d| DirJob {
            entry: by_path.get(d.as_str()).filter(|e| e.kind == EntryKind::Dir).map(|e| (*e).clone()),
            path: d,
        })
        .collect();
    // BTreeSet order puts "a" before "a/b": parents first.
    plan.files = files.into_values().collect();
    Ok(plan)
}

fn job(e: &CatalogEntry, end: u64) -> FileJob {
    FileJob { entry: e.clone(), start: e.offset, end, outputs: Vec::new() }
}

/// The entries at or under each wanted path, in catalog order, each once.
fn choose<'a>(entries: &'a [CatalogEntry], wanted: &[String]) -> Result<Vec<&'a CatalogEntry>, PlanError> {
    for w in wanted {
        if !entries.iter().any(|e| crate::catalog::at_or_under(&e.path, w)) {
            return Err(PlanError::NoSuchPath(w.clone()));
        }
    }
    let picked =
        |e: &&CatalogEntry| wanted.is_empty() || wanted.iter().any(|w| crate::catalog::at_or_under(&e.path, w));
    Ok(entries.iter().filter(picked).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, offset: u64) -> CatalogEntry {
        CatalogEntry {
            path: path.into(),
            kind,
            size: 10,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            link: None,
            blake3: None,
            sha256: None,
            offset,
        }
    }

    fn catalog() -> Vec<CatalogEntry> {
        let mut hard = entry("usr/again", EntryKind::Hardlink, 6144);
        hard.link = Some("big".into());
        let mut sym = entry("etc/nginx/current", EntryKind::Symlink, 3584);
        sym.link = Some("/etc/nginx/nginx.conf".into());
        vec![
            entry("big", EntryKind::File, 0),
            entry("etc", EntryKind::Dir, 2048),
            entry("etc/nginx", EntryKind::Dir, 2560),
            entry("etc/nginx/nginx.conf", EntryKind::File, 3072),
            sym,
            entry("etc/nginx/z.conf", EntryKind::File, 4096),
            entry("usr", EntryKind::Dir, 5120),
            entry("usr/small", EntryKind::File, 5632),
            hard,
        ]
    }

    #[test]
    fn a_subtree_fetches_only_its_files_stretches_and_makes_its_parents() {
        let plan = plan(&catalog(), &["/etc/nginx".into()], 8192).unwrap();
        let stretches: Vec<_> = plan.files.iter().map(|f| (f.outputs.clone(), f.start, f.end)).collect();
        assert_eq!(
            stretches,
            [(vec!["etc/nginx/nginx.conf".to_string()], 3072, 3584), (vec!["etc/nginx/z.conf".into()], 4096, 5120)]
        );
        let dirs: Vec<_> = plan.dirs.iter().map(|d| (d.path.as_str(), d.entry.is_some())).collect();
        assert_eq!(dirs, [("etc", true), ("etc/nginx", true)]);
        assert_eq!(plan.symlinks.len(), 1);
        assert_eq!(plan.stream_bytes(), 512 + 1024);
    }

    #[test]
    fn a_hard_link_without_its_target_fetches_the_target_once_with_it() {
        let p = plan(&catalog(), &["usr".into()], 8192).unwrap();
        let outputs: Vec<_> = p.files.iter().map(|f| (f.entry.path.as_str(), f.outputs.clone(), f.end)).collect();
        assert_eq!(
            outputs,
            [("big", vec!["usr/again".to_string()], 2048), ("usr/small", vec!["usr/small".into()], 6144)]
        );
        assert!(p.hardlinks.is_empty());
        let mut rooted = catalog();
        rooted.insert(0, entry("./", EntryKind::Dir, 0));
        let all = plan(&rooted, &[], 8192).unwrap();
        assert_eq!(all.hardlinks, [("usr/again".to_string(), "big".to_string())]);
        assert_eq!(all.files.last().unwrap().end, 6144, "the last file ends at the next header");
        assert_eq!(all.files.iter().filter(|f| f.entry.path == "big").count(), 1);
    }

    #[test]
    fn escaping_paths_and_unknown_paths_are_refused_before_anything_is_fetched() {
        for bad in ["../../etc/passwd", "a/../../b", "/etc/passwd", "a//b"] {
            let mut c = catalog();
            c.push(entry(bad, EntryKind::File, 7000));
            let err = plan(&c, &[], 8192).unwrap_err();
            assert!(matches!(err, PlanError::Unsafe { .. }), "{bad}: {err}");
        }
        let mut through = catalog();
        through.push(entry("etc/nginx/current/evil", EntryKind::File, 7000));
        let err = plan(&through, &["etc".into()], 8192).unwrap_err();
        assert!(err.to_string().contains("a symlink or a file"), "{err}");
        let mut c = catalog();
        c[8].link = Some("../outside".into());
        assert!(matches!(plan(&c, &["usr".into()], 8192), Err(PlanError::DanglingLink { .. })));
        assert_eq!(plan(&catalog(), &["nope".into()], 8192), Err(PlanError::NoSuchPath("nope".into())));
        assert_eq!(normalize("./etc/"), "etc");
        assert_eq!(normalize("./"), ".");
    }
}
