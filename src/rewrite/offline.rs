//! Re-encrypting a file store offline: `atrest rewrite --snapshot IN --out OUT` (an etcd
//! snapshot or data file) and `--kine-db IN --out OUT` (kine's SQLite file).
//!
//! Every revision stored under the prefix — the newest of each key *and* every older,
//! not yet compacted revision — is planned with [`Chain::plan_rewrite`] (so each new value has
//! been decrypted back to exactly the old plaintext before it is used) and the whole database
//! is written as a fresh, compact bbolt file by [`crate::store::snapshot::write_snapshot`] (kine: [`crate::store::kine::KineDb::write_copy`]): other buckets, revisions
//! and leases unchanged, no free pages carrying old bytes, a valid sha256 trailer.
//! `etcdctl snapshot restore OUT` accepts it. IN is never modified.
//!
//! The output is then re-read and audited, so the summary says what the *new file* holds.
//!
//! Each newest revision goes to an [`Observer`] as it is planned, in the order the file stores
//! its revisions (etcd's `key` bucket and kine's rows are both ordered by revision, so this is
//! the order the keys were last written in, not key order); the summary keeps counts only, so
//! memory does not grow with the store.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use super::live::{units, Unit};
use crate::audit::{classify, Counts, Verdict};
use crate::provider::Provider;
use crate::resource::{GroupResource, Route, Target};
use crate::rewrite::{EntryResult, Observer, RewriteEntry};
use crate::store::offline::{Copy, Offline};
use crate::store::{Entry, ReadStore, Store, StoreError};
use crate::transform::{Chain, RewritePlan};

/// What an offline rewrite did, and what the new file holds: counts only. The JSON schema of
/// `atrest rewrite --snapshot … -o json`, which adds `entries` after `schema_version`: every
/// newest revision that was not already current, as [`rewrite_copy`] handed it to its
/// [`Observer`] (a [`RewriteEntry`] each, in revision order), streamed as they come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OfflineSummary {
    /// The version of this schema ([`crate::audit::SCHEMA_VERSION`]).
    pub schema_version: crate::audit::SchemaVersion,
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
    /// What an audit of the new file with the same config counts, by state (`atrest audit
    /// --snapshot OUT` reports the same).
    pub after: Counts,
    /// Of those, the findings an audit of the new file reports (plaintext the config does not
    /// ask for, unknown-key, undecryptable): what the rewrite could not fix (the observer got
    /// each one's entry, with why).
    pub after_findings: u64,
    /// Of `after`'s plaintext entries, those the config stores unencrypted on purpose
    /// (identity write provider): not findings.
    pub after_plaintext_by_config: u64,
    /// Entries of resources the config does not cover (left byte-identical; not findings).
    pub after_not_covered: u64,
    /// States of the older revisions in the new file.
    pub after_history: Counts,
    /// Plaintext objects of the audited kind in the new file's free pages (a fresh file has
    /// none).
    pub after_residue: u64,
    /// By resource: covered resources left as they were, and why (an identity write provider
    /// without `--allow-decrypt`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub left_alone: BTreeMap<String, String>,
    /// By resource: stored CRDs that could not be read (their custom resources are left as
    /// they are).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub crd_errors: Vec<String>,
}

impl OfflineSummary {
    fn start(input: &Path, output: &Path, revision: i64) -> OfflineSummary {
        OfflineSummary {
            schema_version: crate::audit::SchemaVersion,
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
            after_findings: 0,
            after_plaintext_by_config: 0,
            after_not_covered: 0,
            after_history: Counts::default(),
            after_residue: 0,
            left_alone: BTreeMap::new(),
            crd_errors: Vec::new(),
        }
    }

    /// Plans one stored value (a key's newest revision, or an older copy) and counts it (a
    /// newest revision also goes to `observer`); returns the verified new value to store
    /// instead, if any.
    fn plan(
        &mut self,
        chain: &Chain,
        entry: &Entry,
        newest: bool,
        observer: &dyn Observer,
    ) -> Option<Vec<u8>> {
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
            observer.entry(&RewriteEntry {
                key: String::from_utf8_lossy(&entry.key).into_owned(),
                from: found.state,
                result,
                error,
                conflicts_retried: 0,
            });
        } else if new_value.is_some() {
            self.history_rewritten += 1;
        } else if result != EntryResult::AlreadyCurrent {
            self.history_left += 1;
        }
        new_value
    }

    /// Clean when an audit of the new file with the same config finds nothing (no finding, no
    /// stale entry) and nothing plaintext or stale is left in the history the rewrite covers;
    /// findings otherwise: exactly when `atrest audit --strict` of the new file would exit 0.
    pub fn verdict(&self) -> Verdict {
        let left = self.after_findings
            + self.after.stale
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
    /// The store is a live etcd: rewrite it in place instead ([`crate::rewrite::rewrite`]).
    #[error("{0} is a live store: an offline rewrite reads an etcd snapshot or a kine file")]
    Live(String),
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
    KmsWrite(crate::provider::kms::KmsWriteError),
    /// A key of the input is missing from the output (a bug: the output must not be used).
    #[error("verification of the new file failed: {0} is missing from it; do not use the output")]
    Lost(String),
    /// A key the rewrite must leave alone differs in the output (a bug: the output must not be
    /// used).
    #[error("verification of the new file failed: {0}, which this rewrite does not cover, differs from the input; do not use the output")]
    Changed(String),
    /// Reading the input or writing or re-reading the output failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OfflineError {
    /// What the user can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            OfflineError::Live(_) => "pass --snapshot IN or --kine-db IN with --out OUT",
            OfflineError::SameFile(_) => "choose another --out file",
            OfflineError::IdentityWrite => {
                "pass --allow-decrypt if decrypting everything is what you want"
            }
            OfflineError::KmsWrite(e) => e.advice(),
            OfflineError::Lost(_) | OfflineError::Changed(_) => {
                "delete the output and report this as a bug; the input is unchanged"
            }
            OfflineError::Store(e) => e.advice(),
        }
    }
}

impl From<crate::provider::kms::KmsWriteError> for OfflineError {
    fn from(e: crate::provider::kms::KmsWriteError) -> Self {
        OfflineError::KmsWrite(e)
    }
}

/// Which keys an offline rewrite re-encrypts, and with which chain: the units of a live rewrite
/// of the same target ([`crate::rewrite::rewrite`]) — for one prefix, every key under it; by
/// resource, the covered resources of the built-ins and of the CRDs stored in the input. Every
/// other key is left byte-identical.
struct Coverage<'a> {
    target: &'a Target,
    units: Vec<Unit<'a>>,
    resources: HashSet<GroupResource>,
    left_alone: BTreeMap<String, String>,
    crd_errors: Vec<String>,
}

impl<'a> Coverage<'a> {
    async fn new<S: ReadStore + Sync>(
        store: &S,
        target: &'a Target,
        allow_decrypt: bool,
    ) -> Result<Coverage<'a>, StoreError> {
        let (units, left_alone, crd_errors) = units(store, target, allow_decrypt).await?;
        let resources = units.iter().map(|u| u.resource.clone()).collect();
        Ok(Coverage {
            target,
            units,
            resources,
            left_alone,
            crd_errors,
        })
    }

    /// The chain that re-encrypts `key`; `None` for a key the rewrite leaves alone.
    fn chain_for_key(&self, key: &[u8]) -> Option<&'a Chain> {
        match self.target.route(key) {
            Route::Covered {
                info,
                chain: Some(chain),
            } if self.resources.contains(&info.resource) => Some(chain),
            _ => None,
        }
    }

    /// One prefix that holds every key the rewrite may change.
    fn outer_prefix(&self) -> &'a [u8] {
        match self.target.as_prefix() {
            Some((prefix, ..)) => prefix.as_bytes(),
            None => self.target.root().as_bytes(),
        }
    }

    fn start_summary(&self, input: &Path, output: &Path, revision: i64) -> OfflineSummary {
        let mut s = OfflineSummary::start(input, output, revision);
        s.left_alone = self.left_alone.clone();
        s.crd_errors = self.crd_errors.clone();
        s
    }
}

/// What both offline rewrites check before writing anything: each write provider may write
/// (identity only with `allow_decrypt`; a KMS plugin healthy and ready), and the output is not
/// the input file.
fn check_before_writing(
    coverage: &Coverage<'_>,
    allow_decrypt: bool,
    input: &Path,
    output: &Path,
) -> Result<(), OfflineError> {
    for unit in &coverage.units {
        match &unit.chain.write_entry().provider {
            Provider::Identity(_) if !allow_decrypt => return Err(OfflineError::IdentityWrite),
            Provider::Kms(kms) => {
                kms.ready_to_write()?;
            }
            _ => {}
        }
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

/// Checks the output against the input: every key the target's prefixes hold in `input` is in
/// `written`, and every key the rewrite does not cover is byte-identical.
async fn verify_output<S: ReadStore + Sync>(
    input: &S,
    coverage: &Coverage<'_>,
    written: &dyn Offline,
) -> Result<(), OfflineError> {
    let mut failed = None;
    for prefix in coverage.target.prefixes() {
        let scanned = input
            .scan(prefix.as_bytes(), |old| {
                let checked = written
                    .get(&old.key)
                    .map_err(OfflineError::from)
                    .and_then(|w| check_written(coverage, &old, w));
                match checked {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })
            .await;
        if let Some(e) = failed.take() {
            return Err(e);
        }
        scanned?;
    }
    Ok(())
}

/// One input key in the output: it must be there, and byte-identical unless the rewrite
/// covers it.
fn check_written(
    coverage: &Coverage<'_>,
    old: &Entry,
    written: Option<Entry>,
) -> Result<(), OfflineError> {
    let key = || String::from_utf8_lossy(&old.key).into_owned();
    let Some(e) = written else {
        return Err(OfflineError::Lost(key()));
    };
    if coverage.chain_for_key(&old.key).is_none() && e.value != old.value {
        return Err(OfflineError::Changed(key()));
    }
    Ok(())
}

/// Rewrites the file `store` into `output` (see the module docs): every stored value the target
/// covers — newest values, older revisions, kine's `old_value` copies — is planned with
/// [`Chain::plan_rewrite`] (verified before it is used) and written into a fresh copy (mode
/// 0600; an existing `output` is replaced only with `overwrite`), which is then re-read and
/// audited. The input is never modified.
///
/// Each key's newest revision goes to [`Observer::entry`] as it is planned, whatever the result
/// (already-current ones included), in revision order; older revisions are only counted. The
/// other [`Observer`] methods are not called.
pub async fn rewrite_copy(
    store: &Store,
    output: &Path,
    overwrite: bool,
    target: &Target,
    allow_decrypt: bool,
    observer: &dyn Observer,
) -> Result<OfflineSummary, OfflineError> {
    let Some(input) = store.offline() else {
        return Err(OfflineError::Live(store.source()));
    };
    let coverage = Coverage::new(store, target, allow_decrypt).await?;
    check_before_writing(&coverage, allow_decrypt, input.path(), output)?;
    let mut s = coverage.start_summary(input.path(), output, input.file_revision());
    input.write_copy(
        output,
        overwrite,
        coverage.outer_prefix(),
        &mut |copy, entry| {
            let chain = coverage.chain_for_key(&entry.key)?;
            s.plan(chain, entry, copy == Copy::Newest, observer)
        },
    )?;

    // Check what was written: every key of the input is there, covered keys in the states
    // they now have, every other key byte-identical.
    let written = input.open_copy(output)?;
    let Some(copy) = written.offline() else {
        return Err(OfflineError::Live(written.source()));
    };
    let mut after_history = Counts::default();
    for prefix in target.prefixes() {
        copy.history(prefix.as_bytes(), &mut |e| {
            if let Some(chain) = coverage.chain_for_key(&e.key) {
                after_history.add(classify(Some(chain), &e.value, &e.key).state);
            }
        })?;
    }
    verify_output(store, &coverage, copy).await?;
    s.after_residue = copy.copy_residue()?;
    s.after_history = after_history;
    // And audit it exactly as `atrest audit` would: what the summary says the new file holds
    // is what an audit of it with the same config reports.
    let audit = crate::audit::audit(&written, target, &crate::audit::NoProgress).await?;
    s.after = audit.summary;
    s.after_findings = audit.findings();
    s.after_plaintext_by_config = audit.plaintext_by_config;
    s.after_not_covered = audit.not_covered_total();
    Ok(s)
}
