//! Writing a config file atomically, readable by its owner only.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::ConfigError;
use crate::secret::file as atomic_file;

/// Writes `contents` to `path` so that readers see either the old file or the whole new one:
/// a temporary file is created beside the target with mode 0600, written, flushed to disk,
/// renamed over the target, and the directory is flushed. A replaced file's owner and group
/// are kept, and its mode becomes the original's limited to `0o640` (never wider, never
/// group-writable). An existing `path` is refused with [`ConfigError::Exists`] unless
/// `overwrite` is set. The temporary file is removed on failure.
pub fn write_atomic(path: &Path, contents: &[u8], overwrite: bool) -> Result<(), ConfigError> {
    if !overwrite && path.symlink_metadata().is_ok() {
        return Err(ConfigError::Exists {
            path: path.to_owned(),
        });
    }
    // Through a symbolic link, not over it: the link keeps naming the updated file.
    let target = atomic_file::resolve_link(path).map_err(|source| ConfigError::Write {
        path: path.to_owned(),
        source,
    })?;
    let (tmp_path, mut file) =
        atomic_file::create_temp(&target).map_err(|source| ConfigError::Write {
            path: target.clone(),
            source,
        })?;
    // Replacing a file: keep its owner and group (kube-apiserver may run as another user).
    let owned = if overwrite {
        atomic_file::keep_owner(&file, &target)
    } else {
        Ok(())
    };
    let written = owned
        .and_then(|()| file.write_all(contents))
        .and_then(|()| file.sync_all())
        .map(|()| drop(file));
    let result = match written {
        Ok(()) => atomic_file::persist(&tmp_path, &target, overwrite),
        Err(e) => {
            let _ = fs::remove_file(&tmp_path);
            Err(e)
        }
    };
    result.map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            ConfigError::Exists {
                path: path.to_owned(),
            }
        } else {
            ConfigError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn issue_22_8_replacing_keeps_owner_and_group_and_a_restricted_mode() {
        use std::os::unix::fs::MetadataExt;
        if rustix::process::geteuid().as_raw() != 0 {
            return; // chown needs root (the test machines run as root)
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.yaml");
        fs::write(&path, b"old").unwrap();
        std::os::unix::fs::chown(&path, Some(1234), Some(1234)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"new", true).unwrap();
        let m = fs::metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 1234, 0o640));
        assert_eq!(fs::read(&path).unwrap(), b"new");
        // Never wider than 0640, and never wider than the original.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic(&path, b"newer", true).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"newest", true).unwrap();
        let m = fs::metadata(&path).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (1234, 0o600));
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn writes_0600_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.yaml");
        write_atomic(&path, b"hello", false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn refuses_an_existing_file_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.yaml");
        fs::write(&path, b"old").unwrap();
        let e = write_atomic(&path, b"new", false).unwrap_err();
        assert!(matches!(e, ConfigError::Exists { .. }), "{e:?}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert!(leftovers(dir.path()).is_empty());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"new", true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_directory_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/enc.yaml");
        let e = write_atomic(&path, b"x", false).unwrap_err();
        assert!(matches!(e, ConfigError::Write { .. }), "{e:?}");
    }
}
