//! Files that appear whole or not at all, readable by their owner only.
//!
//! Used for everything atrest writes that holds keys or secret data: generated and rotated
//! configs, `rewrite --backup` snapshots, offline rewrites. The file is written under a
//! temporary name in the target's directory (created exclusively, mode 0600), flushed to disk,
//! then moved into place, and the directory is flushed so that the move itself survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The directory a file at `path` lives in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Where a write to `path` must land: the target of a symbolic link (so that a link to a
/// config managed elsewhere keeps pointing at the updated file), else `path` itself.
pub(crate) fn resolve_link(path: &Path) -> io::Result<PathBuf> {
    match path.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path),
        _ => Ok(path.to_owned()),
    }
}

/// Creates `.<name>.<random>.tmp` beside `path`, exclusively, with mode 0600, open for
/// reading and writing.
pub(crate) fn create_temp(path: &Path) -> io::Result<(PathBuf, File)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?
        .to_string_lossy()
        .into_owned();
    let dir = parent_dir(path);
    let mut last = None;
    for _ in 0..16 {
        let mut suffix = [0u8; 6];
        super::fill_random(&mut suffix);
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

/// Gives the temporary `file` the owner and group of the `original` file it is about to replace
/// (when they differ from its own), and the original's permission bits limited to `0o640`: never
/// wider than the original, never group-writable, never world-readable. A config replaced by
/// root for a kube-apiserver running as another user stays readable to that user. Nothing is
/// done when `original` does not exist.
pub(crate) fn keep_owner(file: &File, original: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(old) = fs::metadata(original) else {
        return Ok(());
    };
    let new = file.metadata()?;
    if (old.uid(), old.gid()) != (new.uid(), new.gid()) {
        std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid()))?;
    }
    file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o640))
}

/// Writes `contents` to a new file at `path` (not through a symbolic link: a link at `path`
/// counts as an existing file): created beside it exclusively with mode 0600, flushed, then moved
/// into place. Without `overwrite` an existing `path` is refused with
/// [`io::ErrorKind::AlreadyExists`] and left as it was. The temporary file is removed on failure.
pub fn write_new(path: &Path, contents: &[u8], overwrite: bool) -> io::Result<()> {
    use std::io::Write;
    if !overwrite && path.symlink_metadata().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the file exists",
        ));
    }
    let (tmp, mut file) = create_temp(path)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .map(|()| drop(file));
    match written {
        Ok(()) => persist(&tmp, path, overwrite),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Moves the finished (already synced and closed) temporary file `tmp` to `path`. Without
/// `overwrite`, an existing `path` is never replaced — not even one that appeared after the
/// caller checked: the error is then [`io::ErrorKind::AlreadyExists`]. The directory is flushed
/// afterwards. On error `tmp` is removed.
pub(crate) fn persist(tmp: &Path, path: &Path, overwrite: bool) -> io::Result<()> {
    let moved = if overwrite {
        fs::rename(tmp, path)
    } else {
        // A hard link never replaces an existing file.
        fs::hard_link(tmp, path).and_then(|()| fs::remove_file(tmp))
    };
    if let Err(e) = moved {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    File::open(parent_dir(path)).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn persist_refuses_to_replace_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        let (tmp, _) = create_temp(&path).unwrap();
        let mode = fs::metadata(&tmp).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = persist(&tmp, &path, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(!tmp.exists(), "the temporary file is removed");
        assert_eq!(fs::read(&path).unwrap(), b"old");

        let (tmp, _) = create_temp(&path).unwrap();
        persist(&tmp, &path, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn write_new_is_owner_only_and_replaces_a_link_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("out");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write_new(&link, b"secret", false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        write_new(&link, b"secret", true).unwrap();
        assert_eq!(
            fs::read(&target).unwrap(),
            b"keep",
            "the link's target is untouched"
        );
        assert!(!link.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&link).unwrap(), b"secret");
        let mode = fs::metadata(&link).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn links_resolve_to_their_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.yaml");
        fs::write(&target, b"x").unwrap();
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            resolve_link(&link).unwrap(),
            fs::canonicalize(&target).unwrap()
        );
        assert_eq!(resolve_link(&target).unwrap(), target);
        let missing = dir.path().join("missing");
        assert_eq!(resolve_link(&missing).unwrap(), missing);
    }
}
