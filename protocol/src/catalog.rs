//! The file catalog of a tar archive: every entry with its metadata, the BLAKE3 of a regular
//! file's contents (the archive format's hash; SHA-256 in version 1 catalogs, still read), and
//! the offset of its first tar header in the uncompressed stream, so a
//! listing reads one small object and a single-file restore reads only the frames that hold
//! the entry. Stored beside the archive as `<name>.catalog.jsonl.zst` (zstd-compressed JSON
//! lines: a header line, then one entry per line) and referenced, with the SHA-256 of the
//! stored object, from the manifest's `catalog`. Documented in `docs/FORMAT.md`.

use serde::{Deserialize, Serialize};

/// `format` of a catalog's header line.
pub const CATALOG_FORMAT: &str = "bunker-catalog";
/// The catalog format version this build writes (and the newest it reads): 2 hashes file
/// contents with BLAKE3, 1 with SHA-256.
pub const CATALOG_VERSION: u32 = 2;

/// The catalog object of archive `name`.
pub fn catalog_key(name: &str) -> String {
    format!("{name}.catalog.jsonl.zst")
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A regular file (its contents follow its header).
    File,
    /// A directory.
    Dir,
    /// A symbolic link (`link`: its target).
    Symlink,
    /// A hard link to an earlier entry (`link`: that entry's path).
    Hardlink,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The path in the tar stream (relative, `/`-separated, as `tar -t` shows it).
    pub path: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Bytes of contents (regular files; 0 otherwise).
    pub size: u64,
    /// Permission bits (and setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// A symlink's target, or the path a hard link points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// BLAKE3 of a regular file's contents, lowercase hex (version 2; `b3sum` prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// SHA-256 of a regular file's contents, lowercase hex (version 1 catalogs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Offset of the entry's first header block (long-name and pax headers included) in the
    /// uncompressed tar stream.
    pub offset: u64,
}

/// Which hash a catalog entry records of a file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentHash {
    /// BLAKE3 (version 2 catalogs).
    Blake3,
    /// SHA-256 (version 1 catalogs).
    Sha256,
}

impl ContentHash {
    /// Its name, as `b3sum` / `sha256sum` users know it.
    pub fn name(self) -> &'static str {
        match self {
            ContentHash::Blake3 => "blake3",
            ContentHash::Sha256 => "sha256",
        }
    }
}

impl CatalogEntry {
    /// The hash of the file's contents the entry records, and its hex (BLAKE3 when both are).
    pub fn content_hash(&self) -> Option<(ContentHash, &str)> {
        match (&self.blake3, &self.sha256) {
            (Some(h), _) => Some((ContentHash::Blake3, h)),
            (None, Some(h)) => Some((ContentHash::Sha256, h)),
            (None, None) => None,
        }
    }
}

/// The manifest's reference to the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogRef {
    /// The catalog object's key, beside the archive.
    pub key: String,
    /// SHA-256 of the stored (compressed) object.
    pub sha256: String,
    /// Entries listed.
    pub entries: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
}

/// A catalog that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The header line is missing or names another format.
    #[error("not a bunker catalog: {0}")]
    NotACatalog(String),
    /// A newer version than this build reads.
    #[error("catalog version {0} is newer than this bunker reads ({CATALOG_VERSION}); upgrade bunker")]
    TooNew(u32),
    /// A line that is not an entry.
    #[error("catalog line {line}: {error}")]
    BadEntry {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        error: String,
    },
}

/// The catalog's uncompressed bytes: the header line, then each entry on its own line.
pub fn encode(entries: &[CatalogEntry]) -> Vec<u8> {
    let header = Header { format: CATALOG_FORMAT.into(), version: CATALOG_VERSION };
    let mut out = serde_json::to_vec(&header).expect("a header serializes");
    out.push(b'\n');
    for e in entries {
        serde_json::to_writer(&mut out, e).expect("an entry serializes");
        out.push(b'\n');
    }
    out
}

/// Parses a catalog's uncompressed bytes.
pub fn decode(bytes: &[u8]) -> Result<Vec<CatalogEntry>, CatalogError> {
    let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let first = lines.next().ok_or_else(|| CatalogError::NotACatalog("empty".into()))?;
    let header: Header =
        serde_json::from_slice(first).map_err(|e| CatalogError::NotACatalog(format!("header line: {e}")))?;
    if header.format != CATALOG_FORMAT {
        return Err(CatalogError::NotACatalog(format!("format {:?}", header.format)));
    }
    if header.version > CATALOG_VERSION {
        return Err(CatalogError::TooNew(header.version));
    }
    lines
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_slice(l).map_err(|e| CatalogError::BadEntry { line: i + 2, error: e.to_string() })
        })
        .collect()
}

/// The entries at or under `path` (`None` or `.`: all), by the tar path without a leading
/// `./` or trailing `/`.
pub fn under<'a>(entries: &'a [CatalogEntry], path: Option<&str>) -> Vec<&'a CatalogEntry> {
    entries.iter().filter(|e| path.is_none_or(|w| at_or_under(&e.path, w))).collect()
}

/// Whether catalog path `path` is `want` or below it (both without a leading `./` or `/`
/// or a trailing `/`; a `want` of `.` or nothing matches everything).
pub fn at_or_under(path: &str, want: &str) -> bool {
    let norm = |p: &str| p.trim_start_matches("./").trim_matches('/').to_string();
    let w = norm(want);
    if w.is_empty() || w == "." {
        return true;
    }
    let p = norm(path);
    p == w || p.strip_prefix(w.as_str()).is_some_and(|rest| rest.starts_with('/'))
}

/// A `bunker find` pattern: a shell glob (`*`, `?`, `[…]`, `{a,b}`, `**`). Without a `/` it
/// matches an entry's name (as `find -name` does); with one, the entry's whole path, where
/// `*` stays within one component and `**` crosses them.
#[derive(Debug, Clone)]
pub struct Pattern {
    matcher: globset::GlobMatcher,
    whole_path: bool,
}

impl Pattern {
    /// Parses a glob; the error names what is wrong with it.
    pub fn new(glob: &str) -> Result<Pattern, String> {
        let trimmed = glob.trim_start_matches('/');
        let whole_path = trimmed.contains('/');
        let g = globset::GlobBuilder::new(trimmed)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("{glob:?} is not a glob: {}", e.kind()))?;
        Ok(Pattern { matcher: g.compile_matcher(), whole_path })
    }

    /// Whether a catalog path matches.
    pub fn matches(&self, path: &str) -> bool {
        let p = crate::file_restore::normalize(path);
        if self.whole_path {
            self.matcher.is_match(p)
        } else {
            self.matcher.is_match(p.rsplit('/').next().unwrap_or(p))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> CatalogEntry {
        CatalogEntry {
            path: path.into(),
            kind,
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            link: None,
            blake3: None,
            sha256: None,
            offset: 0,
        }
    }

    #[test]
    fn catalogs_round_trip_and_refuse_strangers() {
        let entries = vec![entry("./etc", EntryKind::Dir), entry("./etc/hosts", EntryKind::File)];
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes).unwrap(), entries);
        assert!(matches!(decode(b"{\"format\":\"other\",\"version\":1}\n"), Err(CatalogError::NotACatalog(_))));
        assert!(matches!(decode(b"{\"format\":\"bunker-catalog\",\"version\":9}\n"), Err(CatalogError::TooNew(9))));
        assert!(String::from_utf8(bytes.clone()).unwrap().starts_with("{\"format\":\"bunker-catalog\",\"version\":2}"));
        let mut bad = bytes.clone();
        bad.extend_from_slice(b"{nope}\n");
        assert!(matches!(decode(&bad), Err(CatalogError::BadEntry { line: 4, .. })));
    }

    /// A version 1 catalog (SHA-256 of contents) still reads; a version 2 entry's hash is its
    /// BLAKE3.
    #[test]
    fn version_1_catalogs_read_with_their_sha256() {
        let v1 = b"{\"format\":\"bunker-catalog\",\"version\":1}\n\
            {\"path\":\"a\",\"type\":\"file\",\"size\":1,\"mode\":420,\"uid\":0,\"gid\":0,\"mtime\":1,\"sha256\":\"ab\",\"offset\":0}\n";
        let old = decode(v1).unwrap();
        assert_eq!(old[0].content_hash(), Some((ContentHash::Sha256, "ab")));
        let new = CatalogEntry { blake3: Some("cd".into()), ..entry("b", EntryKind::File) };
        let back = decode(&encode(std::slice::from_ref(&new))).unwrap();
        assert_eq!(back[0].content_hash(), Some((ContentHash::Blake3, "cd")));
        assert!(!String::from_utf8(encode(&[new])).unwrap().contains("sha256"));
    }

    #[test]
    fn under_selects_a_path_and_what_is_below_it_only() {
        let entries: Vec<_> = ["./etc", "./etc/nginx", "./etc/nginx/a.conf", "./etc/nginxx", "./usr"]
            .iter()
            .map(|p| entry(p, EntryKind::File))
            .collect();
        let paths = |p| under(&entries, p).iter().map(|e| e.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(Some("/etc/nginx")), ["./etc/nginx", "./etc/nginx/a.conf"]);
        assert_eq!(paths(Some("etc/nginx/")).len(), 2);
        assert_eq!(paths(None).len(), 5);
        assert_eq!(paths(Some(".")).len(), 5);
    }

    #[test]
    fn patterns_match_names_without_a_slash_and_paths_with_one() {
        let name = Pattern::new("*.conf").unwrap();
        assert!(name.matches("./etc/nginx/nginx.conf") && name.matches("a.conf"));
        assert!(!name.matches("etc/nginx.conf.d"));
        let path = Pattern::new("/etc/*/nginx.conf").unwrap();
        assert!(path.matches("etc/nginx/nginx.conf") && !path.matches("etc/a/b/nginx.conf"));
        assert!(Pattern::new("etc/**/nginx.conf").unwrap().matches("etc/a/b/nginx.conf"));
        assert!(Pattern::new("[").unwrap_err().contains("not a glob"));
    }
}
