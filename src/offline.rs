//! Re-encrypting an etcd snapshot file offline: `atrest rewrite --snapshot IN --out OUT`.
//!
//! Every revision stored under the prefix — the newest of each key *and* every older,
//! not yet compacted revision — is planned with [`Chain::plan_rewrite`] (so each new value has
//! been decrypted back to exactly the old plaintext before it is used) and the whole database
//! is written as a fresh, compact bbolt file by [`write_snapshot`]: other buckets, revisions
//! and leases unchanged, no free pages carrying old bytes, a valid sha256 trailer.
//! `etcdctl snapshot restore OUT` accepts it. IN is never modified.
//!
//! The output is then re-read and audited, so the summary says what the *new file* holds.

use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::audit::{classify, count_plaintext_objects, kind_of_resource, resource_from_prefix};
use crate::audit::{Counts, Verdict};
use crate::provider::Provider;
use crate::rewrite::{EntryResult, RewriteEntry};
use crate::store::kine::{KineDb, RowValue};
use crate::store::snapshot::{write_snapshot, Snapshot, SnapshotError};
use crate::store::{Entry, ReadStore, StoreError};
use crate::transform::{Chain, RewritePlan};

/// What an offline rewrite did, and what the new file holds. The JSON schema of
/// `atrest rewrite --snapshot … -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfflineSummary {
    /// The file read (never modified).
    pub input: String,
    /// The file written.
    pub output: String,
    /// The snapshot's revision.
    pub revision: i64,
    /// Newest revisions under the prefix: entries seen.
    pub scanned: u64,
    /// Newest revisions rewritten.
    pub rewritten: u64,
    /// Newest revisions already current.
    pub already_current: u64,
    /// Newest revisions not touched (unknown key, undecryptable, kms).
    pub skipped: u64,
    /// Newest revisions for which no verified new value could be produced (left as they were).
    pub failed: u64,
    /// Older revisions (history) rewritten too.
    pub history_rewritten: u64,
    /// Older revisions left as they were (not readable, or failed).
    pub history_left: u64,
    /// States of the newest revisions in the new file.
    pub after: Counts,
    /// States of the older revisions in the new file.
    pub after_history: Counts,
    /// Plaintext objects of the audited kind in the new file's free pages (a fresh file has
    /// none).
    pub after_residue: u64,
    /// Newest revisions that were not already current, in key order.
    pub entries: Vec<RewriteEntry>,
}

impl OfflineSummary {
    fn start(input: &Path, output: &Path, revision: i64) -> OfflineSummary {
        OfflineSummary {
            input: input.display().to_string(),
            output: output.display().to_string(),
            revision,
            scanned: 0,
            rewritten: 0,
            already_current: 0,
            skipped: 0,
            failed: 0,
            history_rewritten: 0,
            history_left: 0,
            after: Counts::default(),
            after_history: Counts::default(),
            after_residue: 0,
            entries: Vec::new(),
        }
    }

    /// Plans one stored value (a key's newest revision, or an older copy) and counts it;
    /// returns the verified new value to store instead, if any.
    fn plan(&mut self, chain: &Chain, entry: &Entry, newest: bool) -> Option<Vec<u8>> {
        let (found, plan) = chain.plan_rewrite(&entry.value, &entry.key);
        let (result, error, new_value) = match plan {
            RewritePlan::Write(v) => (EntryResult::Rewritten, None, Some(v)),
            RewritePlan::AlreadyCurrent => (EntryResult::AlreadyCurrent, None, None),
            RewritePlan::Skip => (EntryResult::Skipped, found.error.clone(), None),
            RewritePlan::Failed(why) => (EntryResult::Failed, Some(why), None),
        };
        if newest {
            self.scanned += 1;
            match result {
                EntryResult::Rewritten => self.rewritten += 1,
                EntryResult::AlreadyCurrent => self.already_current += 1,
                EntryResult::Skipped => self.skipped += 1,
                _ => self.failed += 1,
            }
            if result != EntryResult::AlreadyCurrent {
                self.entries.push(RewriteEntry {
                    key: String::from_utf8_lossy(&entry.key).into_owned(),
                    from: found.state,
                    result,
                    error,
                    conflicts_retried: 0,
                });
            }
        } else if new_value.is_some() {
            self.history_rewritten += 1;
        } else if result != EntryResult::AlreadyCurrent {
            self.history_left += 1;
        }
        new_value
    }

    /// Clean when every newest revision of the new file is current and nothing plaintext or
    /// stale is left in its history; findings otherwise.
    pub fn verdict(&self) -> Verdict {
        let left = self.after.total - self.after.current
            + self.after_history.plaintext
            + self.after_history.stale;
        if left == 0 && self.after_residue == 0 {
            Verdict::Clean
        } else {
            Verdict::Findings
        }
    }
}

/// Why an offline rewrite did not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OfflineError {
    /// The output path is the input file.
    #[error("the output {0} is the input file; write to a new file (the input is never modified)")]
    SameFile(PathBuf),
    /// The config writes with identity (needs `allow_decrypt`).
    #[error(
        "the config's first provider is identity: the new file would store every entry unencrypted"
    )]
    IdentityWrite,
    /// The config writes with a KMS provider whose plugin is not ready.
    #[error("refusing to write: {0}")]
    KmsWrite(#[from] crate::provider::kms::KmsWriteError),
    /// A key of the input is missing from the output (a bug: the output must not be used).
    #[error("verification of the new file failed: {0} is missing from it; do not use the output")]
    Lost(String),
    /// Scanning the input failed.
    #[error("scanning the input failed: {0}")]
    Scan(String),
    /// Reading or writing the file failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// What both offline rewrites check before writing anything: the write provider may write
/// (identity only with `allow_decrypt`; a KMS plugin healthy and ready), and the output is not
/// the input file.
fn check_before_writing(
    chain: &Chain,
    allow_decrypt: bool,
    input: &Path,
    output: &Path,
) -> Result<(), OfflineError> {
    match &chain.write_entry().provider {
        Provider::Identity(_) if !allow_decrypt => return Err(OfflineError::IdentityWrite),
        Provider::Kms(kms) => {
            kms.ready_to_write()?;
        }
        _ => {}
    }
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(OfflineError::SameFile(output.to_path_buf()));
    }
    Ok(())
}

/// Rewrites `input` into `output` (see the module docs).
pub async fn rewrite_snapshot(
    input: &Snapshot,
    output: &Path,
    chain: &Chain,
    prefix: &[u8],
    allow_decrypt: bool,
) -> Result<OfflineSummary, OfflineError> {
    check_before_writing(chain, allow_decrypt, input.path(), output)?;
    let mut s = OfflineSummary::start(input.path(), output, input.revision());
    let mut lookup_error = None;
    write_snapshot(input, output, |entry| {
        if !entry.key.starts_with(prefix) {
            return None;
        }
        let newest = match input.get(&entry.key) {
            Ok(found) => found.is_some_and(|n| n.mod_revision == entry.mod_revision),
            Err(e) => {
                lookup_error.get_or_insert(e);
                false
            }
        };
        s.plan(chain, entry, newest)
    })?;
    if let Some(e) = lookup_error {
        return Err(e.into());
    }
    s.entries.sort_by(|a, b| a.key.cmp(&b.key));

    // Audit what was written.
    let written = Snapshot::open(output)?;
    let mut after = Counts::default();
    let mut after_history = Counts::default();
    let mut scan_error = None;
    written.history(prefix, |e| {
        after_history.add(classify(Some(chain), &e.value, &e.key).state)
    })?;
    let mut lost = None;
    // The newest state: every key under the prefix of the input must be in the output.
    input
        .scan(prefix, |old| {
            match written.get(&old.key) {
                Ok(Some(e)) => after.add(classify(Some(chain), &e.value, &e.key).state),
                Ok(None) => {
                    lost.get_or_insert(String::from_utf8_lossy(&old.key).into_owned());
                }
                Err(e) => {
                    scan_error.get_or_insert(e);
                }
            }
            true
        })
        .await
        .map_err(|e| match e {
            StoreError::Snapshot(e) => OfflineError::Snapshot(e),
            other => OfflineError::Scan(other.to_string()),
        })?;
    if let Some(e) = scan_error {
        return Err(e.into());
    }
    if let Some(key) = lost {
        return Err(OfflineError::Lost(key));
    }
    let kind = kind_of_resource(&resource_from_prefix(&String::from_utf8_lossy(prefix)).resource);
    s.after_residue = written
        .free_runs()
        .map(|(_, b)| count_plaintext_objects(b, kind))
        .sum();
    s.after = after;
    s.after_history = after_history;
    Ok(s)
}
/// Rewrites kine's SQLite file `input` into `output`: every row under the prefix — newest
/// values, older rows, delete rows and every `old_value` copy — is planned with
/// [`Chain::plan_rewrite`] (verified before it is used), written into a vacuumed copy (see
/// [`KineDb::write_copy`]), and the copy is then re-read and audited. `input` is never modified.
pub async fn rewrite_kine(
    input: &KineDb,
    output: &Path,
    overwrite: bool,
    chain: &Chain,
    prefix: &[u8],
    allow_decrypt: bool,
) -> Result<OfflineSummary, OfflineError> {
    check_before_writing(chain, allow_decrypt, input.path(), output)?;
    let mut s = OfflineSummary::start(input.path(), output, input.revision());
    input
        .write_copy(output, overwrite, prefix, |which, entry| {
            s.plan(chain, entry, which == RowValue::Newest)
        })
        .map_err(|e| OfflineError::Scan(format!("{e}")))?;
    s.entries.sort_by(|a, b| a.key.cmp(&b.key));

    // Audit what was written: every key of the input is there, in the states it now has.
    let written = KineDb::open(output).map_err(|e| OfflineError::Scan(e.to_string()))?;
    let mut after = Counts::default();
    let mut after_history = Counts::default();
    written
        .history(prefix, |_, e| {
            after_history.add(classify(Some(chain), &e.value, &e.key).state)
        })
        .map_err(|e| OfflineError::Scan(e.to_string()))?;
    let mut lost = None;
    let mut lookup = None;
    input
        .scan(prefix, |old| {
            match written.get(&old.key) {
                Ok(Some(e)) => after.add(classify(Some(chain), &e.value, &e.key).state),
                Ok(None) => {
                    lost.get_or_insert(String::from_utf8_lossy(&old.key).into_owned());
                }
                Err(e) => {
                    lookup.get_or_insert(e);
                }
            }
            true
        })
        .await
        .map_err(|e| OfflineError::Scan(e.to_string()))?;
    if let Some(e) = lookup {
        return Err(OfflineError::Scan(e.to_string()));
    }
    if let Some(key) = lost {
        return Err(OfflineError::Lost(key));
    }
    // A vacuumed file has no free pages; any would be pages that may hold old bytes.
    s.after_residue = written
        .free_pages()
        .map_err(|e| OfflineError::Scan(e.to_string()))?;
    s.after = after;
    s.after_history = after_history;
    Ok(s)
}
