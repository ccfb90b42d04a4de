//! Where stored values come from and go back to.
//!
//! Two traits split what every store can do from what only a live one can:
//! - [`ReadStore`]: a revision-pinned, streaming scan of a key prefix. Implemented by the live
//!   etcd store ([`etcd::EtcdStore`]) and by the read-only reader of etcd snapshot and data files
//!   ([`snapshot::Snapshot`]).
//! - [`WriteStore`]: compare-and-put that keeps the lease, a point read, a backup and compaction.
//!   Only the live store has it, so the type system forbids writing into a snapshot.
//!
//! Stores never decide what to write: that is [`crate::rewrite`](mod@crate::rewrite)'s job.

mod any;
pub mod offline;
mod pinned;
pub use any::{Store, StoreSpec};
pub(crate) use pinned::scan_pinned;

use std::fmt;
use std::future::Future;
use std::path::Path;

use serde::Serialize;
use thiserror::Error;

pub mod etcd;
pub mod kine;
pub mod snapshot;

/// One key as stored in etcd: the raw value plus the revision bookkeeping a rewrite needs.
///
/// `Debug` prints the key and the value's length, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full etcd key, e.g. `/registry/secrets/default/db`.
    pub key: Vec<u8>,
    /// The stored value, exactly as kube-apiserver wrote it (possibly plaintext).
    pub value: Vec<u8>,
    /// The revision of the last write to this key (kube-apiserver's resourceVersion).
    pub mod_revision: i64,
    /// The revision that created this key.
    pub create_revision: i64,
    /// How many times the key was written since it was created.
    pub version: i64,
    /// The lease the key is attached to (0: none). Every rewrite must keep it.
    pub lease: i64,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("value_len", &self.value.len())
            .field("mod_revision", &self.mod_revision)
            .field("create_revision", &self.create_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

/// What a finished scan saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanInfo {
    /// The store revision every page of the scan was read at.
    pub revision: i64,
    /// How many entries were visited.
    pub entries: u64,
}

/// A member of a live store that did not answer (at connect time, or a request during the run
/// that was then sent to another member), with its last error. Reports list these as
/// `unanswered`, so a failover is never silent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unanswered {
    /// The member's client URL, e.g. `https://10.0.0.2:2379`.
    pub endpoint: String,
    /// The last error it gave (connection refused, TLS failure, timeout, ...).
    pub error: String,
}

/// The outcome of [`WriteStore::compare_and_put`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was written; `mod_revision` is the key's new revision.
    Written {
        /// The key's revision after the write, from the transaction's response header. Exact on
        /// etcd; on kine the header carries kine's newest revision, which may already be a later
        /// write's — read the key back before using it as a compare revision.
        mod_revision: i64,
    },
    /// The key changed since it was read: nothing was written. `current` is what the key holds
    /// now (`None`: it was deleted), returned by the transaction's failure branch.
    Conflict {
        /// The key's current entry, if it still exists.
        current: Option<Entry>,
    },
}

/// A failure of the store itself (not of one entry): the run cannot go on. Exit status 3.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The live etcd store failed.
    #[error(transparent)]
    Etcd(#[from] etcd::EtcdError),
    /// The snapshot or data file could not be read.
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    /// kine's SQLite file could not be read.
    #[error(transparent)]
    Kine(#[from] kine::KineError),
    /// The scan was stopped by its visitor.
    #[error("scan stopped")]
    Stopped,
}

impl StoreError {
    /// What the user can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            StoreError::Etcd(e) => e.advice(),
            StoreError::Snapshot(e) => e.advice(),
            StoreError::Kine(e) => e.advice(),
            StoreError::Stopped => "run again",
        }
    }

    /// Whether etcd refused a write because its database is full (the `NOSPACE` alarm): a
    /// rewrite stops at once and never retries such a write.
    pub fn is_nospace(&self) -> bool {
        matches!(self, StoreError::Etcd(etcd::EtcdError::NoSpace { .. }))
    }

    /// Whether no member answered, after the live store's own failover went round all of them
    /// for its whole window: sending the request again at once would only wait that long again.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Etcd(etcd::EtcdError::Unreachable { .. }))
    }
}

/// One page of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Entries in key order.
    pub entries: Vec<Entry>,
    /// The store revision the page was read at (pass it back to pin the next page).
    pub revision: i64,
    /// Whether more keys follow under the prefix.
    pub more: bool,
}

/// The read side every store has.
pub trait ReadStore {
    /// Where the data comes from, for reports: `etcd http://127.0.0.1:2379` or
    /// `snapshot /path/to/file`.
    fn source(&self) -> String;

    /// Members that did not answer so far, each with its last error (empty for a file, or when
    /// every member answered). A live store with several endpoints fails over to another
    /// member; this is how reports name the ones it left.
    fn unanswered(&self) -> Vec<Unanswered> {
        Vec::new()
    }

    /// The offline capability of a file store (history, residue, writing a copy); `None` for a
    /// live store.
    fn offline(&self) -> Option<&dyn offline::Offline> {
        None
    }

    /// How many keys are under `prefix` now (used to size progress bars).
    fn count(&self, prefix: &[u8]) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Reads one page of keys under `prefix`, in key order, strictly after `after` (or from the
    /// start), at `revision` (or the current revision when `None`). The store bounds the page by
    /// entry count and by bytes.
    fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        revision: Option<i64>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Visits every key under `prefix`, in key order, all at the revision of the first page,
    /// holding one page in memory at a time. `visit` returning `false` stops the scan with
    /// [`StoreError::Stopped`].
    fn scan<F>(
        &self,
        prefix: &[u8],
        mut visit: F,
    ) -> impl Future<Output = Result<ScanInfo, StoreError>> + Send
    where
        Self: Sync,
        F: FnMut(Entry) -> bool + Send,
    {
        async move {
            let mut after: Option<Vec<u8>> = None;
            let mut revision = None;
            let mut entries = 0u64;
            loop {
                let page = self.page(prefix, after.as_deref(), revision).await?;
                revision = Some(page.revision);
                let more = page.more;
                if let Some(last) = page.entries.last() {
                    after = Some(last.key.clone());
                }
                for entry in page.entries {
                    entries += 1;
                    if !visit(entry) {
                        return Err(StoreError::Stopped);
                    }
                }
                if !more || after.is_none() {
                    return Ok(ScanInfo {
                        revision: revision.unwrap_or_default(),
                        entries,
                    });
                }
            }
        }
    }
}

/// The write side only a live store has.
pub trait WriteStore: ReadStore {
    /// One transaction: if `key`'s mod_revision is still `seen_mod_revision`, put `value` with
    /// `lease`; otherwise read the key back (the failure branch), so a conflict costs no extra
    /// round trip. This is the transaction shape kine supports too.
    fn compare_and_put(
        &self,
        key: &[u8],
        seen_mod_revision: i64,
        value: Vec<u8>,
        lease: i64,
    ) -> impl Future<Output = Result<CasOutcome, StoreError>> + Send;

    /// Reads one key now (`None`: it does not exist).
    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send;

    /// Saves a full snapshot of the store to `path`: a temporary file of mode 0600 beside it,
    /// fsync, then moved into place. An existing `path` is replaced only with `overwrite`.
    /// Returns the snapshot's size.
    fn backup(
        &self,
        path: &Path,
        overwrite: bool,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Compacts the store's history up to `revision`.
    fn compact(&self, revision: i64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The largest database file among the store's members now, in bytes, when the store has a
    /// space quota (`None`: no quota to keep under, as for kine).
    fn db_file_size(&self) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send {
        std::future::ready(Ok(None))
    }
}

/// A page of the keys under `prefix` after `after` in `keys`, ten at a time: the paging of the
/// unit tests' in-memory stores.
#[cfg(test)]
pub(crate) fn page_of(
    keys: &std::collections::BTreeMap<Vec<u8>, Entry>,
    prefix: &[u8],
    after: Option<&[u8]>,
    revision: i64,
) -> Page {
    let start = after.map_or(prefix.to_vec(), |a| [a, b"\0"].concat());
    let mut entries: Vec<Entry> = keys
        .range(start..prefix_end(prefix))
        .take(11)
        .map(|(_, e)| e.clone())
        .collect();
    let more = entries.len() > 10;
    entries.truncate(10);
    Page {
        entries,
        revision,
        more,
    }
}

/// The first key after every key that starts with `prefix` (etcd's `range_end` for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): the range is open-ended.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/registry/secrets/"), b"/registry/secrets0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn debug_never_shows_the_value() {
        let e = Entry {
            key: b"/registry/secrets/default/db".to_vec(),
            value: b"hunter2".to_vec(),
            mod_revision: 5,
            create_revision: 4,
            version: 2,
            lease: 0,
        };
        let text = format!("{e:?}");
        assert!(text.contains("/registry/secrets/default/db"));
        assert!(!text.contains("hunter2"));
    }
}
