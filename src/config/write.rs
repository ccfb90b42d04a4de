//! Writing a config file atomically, readable by its owner only.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// Writes `contents` to `path` so that readers see either the old file or the whole new one:
/// a temporary file is created beside the target with mode 0600, written, flushed to disk,
/// renamed over the target, and the directory is flushed. An existing `path` is refused with
/// [`ConfigError::Exists`] unless `overwrite` is set. The temporary file is removed on failure.
pub fn write_atomic(path: &Path, contents: &[u8], overwrite: bool) -> Result<(), ConfigError> {
    let write_err = |p: &Path| {
        let p = p.to_owned();
        move |source: io::Error| ConfigError::Write { path: p, source }
    };
    if !overwrite && path.symlink_metadata().is_ok() {
        return Err(ConfigError::Exists {
            path: path.to_owned(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| ConfigError::Write {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        })?
        .to_string_lossy()
        .into_owned();
    let (tmp_path, mut file) = create_temp(&dir, &file_name).map_err(write_err(&dir))?;
    let result = (|| {
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        if overwrite {
            fs::rename(&tmp_path, path)
        } else {
            // A hard link never replaces an existing file: a file that appeared since the
            // check above is still refused.
            fs::hard_link(&tmp_path, path)?;
            fs::remove_file(&tmp_path)
        }
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp_path);
        if source.kind() == io::ErrorKind::AlreadyExists {
            return Err(ConfigError::Exists {
                path: path.to_owned(),
            });
        }
        return Err(ConfigError::Write {
            path: path.to_owned(),
            source,
        });
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err(&dir))
}

/// Creates `.<name>.<random>.tmp` in `dir`, exclusively, with mode 0600.
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..16 {
        let mut suffix = [0u8; 6];
        crate::provider::fill_random(&mut suffix);
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
        match OpenOptions::new()
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
