//! Every file bunker writes goes through here: files are created 0600 and directories 0700
//! whatever the umask, a file is only ever created new (`O_CREAT|O_EXCL`, which never follows
//! a symlink) or reopened with `O_NOFOLLOW`, and replacing a file is atomic (a fresh temporary
//! name from `tempfile` in the same directory, fsync, rename, fsync the directory).
//!
//! Directories named by the user (`--to file:///srv/backups`, `STATE_DIRECTORY`) may be
//! symlinks: that is the user's choice. Below them, bunker never follows a symlink it did not
//! create.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path};

/// Mode of every file bunker writes.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory bunker creates.
pub const DIR_MODE: u32 = 0o700;

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Creates `path` new (never an existing file, never through a symlink), mode 0600.
pub fn create_new(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(nofollow())
        .open(path)?;
    // The umask can only take bits away; make the mode exact all the same.
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Opens an existing regular file bunker created, for writing; refuses a symlink.
pub fn open_existing(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(nofollow()).open(path)
}

/// Creates `dir` and its missing parents, mode 0700 (a directory the user named, such as the
/// state directory: existing ones, links included, are the user's and kept as they are).
pub fn create_dir_all_private(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates `dir` and any missing parents below `root` (mode 0700). `root` itself must exist
/// or is created the same way; a component below it that is a symlink is refused.
pub fn ensure_dir_under(root: &Path, dir: &Path) -> io::Result<()> {
    if !root.exists() {
        fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(root)?;
    }
    let rel = dir.strip_prefix(root).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not below {}", dir.display(), root.display()))
    })?;
    let mut at = root.to_path_buf();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a plain path", dir.display())));
        };
        at.push(name);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is a symlink; bunker does not write through links it did not create", at.display()),
                ))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is not a directory", at.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::DirBuilder::new().mode(DIR_MODE).create(&at) {
                Ok(()) => fs::set_permissions(&at, fs::Permissions::from_mode(DIR_MODE))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Replaces `path` with `data` atomically: a fresh 0600 temporary file beside it, fsync,
/// rename (which replaces a symlink at `path` rather than writing through it), fsync the
/// directory. The parent directory must exist.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".bunker-")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` unless `to` exists (`RENAME_NOREPLACE`): a restore never
/// overwrites, not even a file that appeared while it ran.
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(rustix::fs::CWD, from, rustix::fs::CWD, to, rustix::fs::RenameFlags::NOREPLACE)
        .map_err(io::Error::from)
}

/// Reads at most `limit` bytes of `path`; a larger file (or an endless one such as
/// `/dev/zero`) is an error naming the file and the limit, after reading only `limit + 1`.
pub fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than the limit of {limit} bytes", path.display()),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn created_files_and_dirs_are_private_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        ensure_dir_under(d.path(), &d.path().join("a/b")).unwrap();
        assert_eq!(fs::metadata(d.path().join("a/b")).unwrap().permissions().mode() & 0o777, DIR_MODE);
        let p = d.path().join("a/b/f");
        create_new(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, FILE_MODE);
        write_atomic(&d.path().join("a/g"), b"x").unwrap();
        assert_eq!(fs::metadata(d.path().join("a/g")).unwrap().permissions().mode() & 0o777, FILE_MODE);
    }

    #[test]
    fn symlinks_are_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let link = d.path().join("link");
        symlink(&victim, &link).unwrap();
        assert_eq!(create_new(&link).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert!(open_existing(&link).is_err());
        // Replacing the name replaces the link, not its target.
        write_atomic(&link, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A symlinked directory below the root is refused.
        symlink(d.path(), d.path().join("dirlink")).unwrap();
        assert!(ensure_dir_under(d.path(), &d.path().join("dirlink/x")).is_err());
        // No replace on rename.
        fs::write(d.path().join("from"), b"1").unwrap();
        assert!(rename_no_replace(&d.path().join("from"), &victim).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn capped_reads_stop_at_the_limit() {
        assert!(read_capped(Path::new("/dev/zero"), 1 << 20).unwrap_err().to_string().contains("/dev/zero"));
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), b"12345").unwrap();
        assert_eq!(read_capped(&d.path().join("f"), 5).unwrap(), b"12345");
    }
}
