//! What only a file store has: older revisions still on disk, plaintext residue in free pages,
//! and writing a re-encrypted copy. The etcd snapshot reader and kine's SQLite reader both
//! implement [`Offline`], so audits and offline rewrites never ask which file they read.

use std::path::Path;

use super::{Entry, StoreError};

/// Which stored value a copy asks to replace: a key's newest value, or an older copy of it (an
/// older revision, or kine's `old_value` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    /// The newest value of a live key.
    Newest,
    /// An older copy.
    Older,
}

/// The offline capability of a file store (see the module docs).
pub trait Offline: Sync {
    /// The file read (never modified).
    fn path(&self) -> &Path;

    /// The revision the file holds.
    fn file_revision(&self) -> i64;

    /// Visits every older stored value under `prefix` (see each store's `history`).
    fn history(&self, prefix: &[u8], visit: &mut dyn FnMut(Entry)) -> Result<(), StoreError>;

    /// Plaintext objects of `kinds` (any kind when `None`) left in unreferenced database pages;
    /// `None` when the file format has no such pages to read (kine's SQLite files).
    fn residue(&self, kinds: Option<&[&str]>) -> Result<Option<u64>, StoreError>;

    /// Reads one key's newest value.
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StoreError>;

    /// Writes a copy of the whole file to `output` (mode 0600, atomically; an existing file is
    /// replaced only with `overwrite`) in which every stored value under `prefix` is what `plan`
    /// returns for it (`None`: kept as it is). Everything else is copied unchanged, and no free
    /// page of the copy keeps an old value.
    fn write_copy(
        &self,
        output: &Path,
        overwrite: bool,
        prefix: &[u8],
        plan: &mut dyn FnMut(Copy, &Entry) -> Option<Vec<u8>>,
    ) -> Result<(), StoreError>;

    /// Opens a copy written by [`Offline::write_copy`] as a store of the same kind, to check
    /// and audit it.
    fn open_copy(&self, path: &Path) -> Result<super::Store, StoreError>;

    /// What may still hold old bytes in a freshly written copy: plaintext objects in free pages
    /// (snapshot files) or free pages at all (SQLite files, which a vacuum leaves with none).
    fn copy_residue(&self) -> Result<u64, StoreError>;
}

/// Plaintext objects of `kinds` (any kind when `None`) that start in `bytes[..own]`.
fn plaintext_objects(bytes: &[u8], own: usize, kinds: Option<&[&str]>) -> u64 {
    use crate::object::count_plaintext_objects_from as count;
    match kinds {
        Some(kinds) => kinds.iter().map(|k| count(bytes, Some(k), own)).sum(),
        None => count(bytes, None, own),
    }
}

impl Offline for super::snapshot::Snapshot {
    fn path(&self) -> &Path {
        self.path()
    }

    fn file_revision(&self) -> i64 {
        self.revision()
    }

    fn history(&self, prefix: &[u8], visit: &mut dyn FnMut(Entry)) -> Result<(), StoreError> {
        self.history(prefix, visit)?;
        Ok(())
    }

    fn residue(&self, kinds: Option<&[&str]>) -> Result<Option<u64>, StoreError> {
        let mut found = 0;
        for run in self.free_runs() {
            let run = run?;
            found += plaintext_objects(&run.bytes, run.own, kinds);
        }
        self.check_unchanged()?;
        Ok(Some(found))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        Ok(self.get(key)?)
    }

    fn write_copy(
        &self,
        output: &Path,
        overwrite: bool,
        prefix: &[u8],
        plan: &mut dyn FnMut(Copy, &Entry) -> Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        super::snapshot::write_snapshot_marked(self, output, overwrite, |entry, newest| {
            if !entry.key.starts_with(prefix) {
                return None;
            }
            plan(if newest { Copy::Newest } else { Copy::Older }, entry)
        })?;
        Ok(())
    }

    fn open_copy(&self, path: &Path) -> Result<super::Store, StoreError> {
        Ok(super::Store::Snapshot(Box::new(
            super::snapshot::Snapshot::open(path)?,
        )))
    }

    fn copy_residue(&self) -> Result<u64, StoreError> {
        Ok(Offline::residue(self, None)?.unwrap_or_default())
    }
}

impl Offline for super::kine::KineDb {
    fn path(&self) -> &Path {
        self.path()
    }

    fn file_revision(&self) -> i64 {
        self.revision()
    }

    fn history(&self, prefix: &[u8], visit: &mut dyn FnMut(Entry)) -> Result<(), StoreError> {
        self.history(prefix, |_, entry| visit(entry))?;
        Ok(())
    }

    fn residue(&self, _kinds: Option<&[&str]>) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        Ok(self.get(key)?)
    }

    fn write_copy(
        &self,
        output: &Path,
        overwrite: bool,
        prefix: &[u8],
        plan: &mut dyn FnMut(Copy, &Entry) -> Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        use super::kine::RowValue;
        self.write_copy(output, overwrite, prefix, |which, entry| {
            let copy = if which == RowValue::Newest {
                Copy::Newest
            } else {
                Copy::Older
            };
            plan(copy, entry)
        })?;
        Ok(())
    }

    fn open_copy(&self, path: &Path) -> Result<super::Store, StoreError> {
        Ok(super::Store::Kine(Box::new(super::kine::KineDb::open(
            path,
        )?)))
    }

    fn copy_residue(&self) -> Result<u64, StoreError> {
        Ok(self.free_pages()?)
    }
}
