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

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::audit::{classify, count_plaintext_objects, kind_of_resource, resource_from_prefix};
use crate::audit::{Counts, Verdict};
use crate::provider::Provider;
use crate::resource::{custom_resources, split_key, GroupResource, ResourceChains, Scope};
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
            left_alone: BTreeMap::new(),
            crd_errors: Vec::new(),
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
    /// A key the rewrite must leave alone differs in the output (a bug: the output must not be
    /// used).
    #[error("verification of the new file failed: {0}, which this rewrite does not cover, differs from the input; do not use the output")]
    Changed(String),
    /// Scanning the input failed.
    #[error("scanning the input failed: {0}")]
    Scan(String),
    /// Reading or writing the file failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Which keys an offline rewrite re-encrypts, and with which chain.
#[derive(Debug)]
pub enum Coverage<'a> {
    /// Every key under `prefix`, with one chain (`--prefix`).
    Prefix {
        /// The chain.
        chain: &'a Chain,
        /// The key prefix.
        prefix: &'a [u8],
    },
    /// Every resource the config covers and the scope wants, each with the chain
    /// kube-apiserver would use for it: the built-in resources and the custom resources of the
    /// CRDs stored in the input, as a live rewrite by resource
    /// ([`crate::rewrite_resources`]). Every other key is left byte-identical.
    Resources {
        /// The chains.
        chains: &'a ResourceChains,
        /// What to read.
        scope: &'a Scope,
        /// The resources rewritten.
        resources: HashSet<GroupResource>,
        /// Covered resources left alone, and why.
        left_alone: BTreeMap<String, String>,
        /// CRDs that could not be read.
        crd_errors: Vec<String>,
    },
}

impl<'a> Coverage<'a> {
    /// Coverage by resource of the input `store` (its CRDs name the custom resources).
    /// Resources whose write provider is identity are left alone unless `allow_decrypt`.
    pub async fn resources<S: ReadStore + Sync>(
        store: &S,
        chains: &'a ResourceChains,
        scope: &'a Scope,
        allow_decrypt: bool,
    ) -> Result<Coverage<'a>, StoreError> {
        let (crds, errors) = custom_resources(store, &scope.root, chains).await?;
        let custom: Vec<GroupResource> = crds.iter().map(|c| c.group_resource()).collect();
        let mut resources = HashSet::new();
        let mut left_alone = BTreeMap::new();
        for (gr, _) in crate::rewrite_resources::resources_in_scope(chains, scope, &custom) {
            let identity = chains
                .chain_for(&gr)
                .is_some_and(|c| matches!(c.write_entry().provider, Provider::Identity(_)));
            if identity && !allow_decrypt {
                left_alone.insert(
                    gr.to_string(),
                    "its write provider is identity: pass --allow-decrypt to decrypt it".to_owned(),
                );
            } else {
                resources.insert(gr);
            }
        }
        Ok(Coverage::Resources {
            chains,
            scope,
            resources,
            left_alone,
            crd_errors: errors.iter().map(ToString::to_string).collect(),
        })
    }

    /// The chain that re-encrypts `key`; `None` for a key the rewrite leaves alone.
    pub fn chain_for_key(&self, key: &[u8]) -> Option<&'a Chain> {
        match self {
            Coverage::Prefix { chain, prefix } => key.starts_with(prefix).then_some(*chain),
            Coverage::Resources {
                chains,
                scope,
                resources,
                ..
            } => {
                let info = split_key(&scope.root, key).filter(|i| i.name.is_some())?;
                if !resources.contains(&info.resource) {
                    return None;
                }
                chains.chain_for(&info.resource)
            }
        }
    }

    /// The key prefixes holding every key the rewrite may change, in key order.
    fn prefixes(&self) -> Vec<&[u8]> {
        match self {
            Coverage::Prefix { prefix, .. } => vec![prefix],
            Coverage::Resources { scope, .. } => {
                scope.prefixes.iter().map(|p| p.as_bytes()).collect()
            }
        }
    }

    /// One prefix that holds every key the rewrite may change.
    fn outer_prefix(&self) -> &[u8] {
        match self {
            Coverage::Prefix { prefix, .. } => prefix,
            Coverage::Resources { scope, .. } => scope.root.as_bytes(),
        }
    }

    /// The chains that may write.
    fn writing_chains(&self) -> Vec<&'a Chain> {
        match self {
            Coverage::Prefix { chain, .. } => vec![*chain],
            Coverage::Resources {
                chains, resources, ..
            } => {
                let mut used: Vec<usize> = resources
                    .iter()
                    .filter_map(|gr| chains.index_for(gr))
                    .collect();
                used.sort_unstable();
                used.dedup();
                used.into_iter().map(|i| &chains.chains()[i]).collect()
            }
        }
    }

    /// The kind of object stored under the prefixes, when there is one (for residue counts).
    fn kind(&self) -> Option<&'static str> {
        match self.prefixes().as_slice() {
            [one] => {
                kind_of_resource(&resource_from_prefix(&String::from_utf8_lossy(one)).resource)
            }
            _ => None,
        }
    }

    fn start_summary(&self, input: &Path, output: &Path, revision: i64) -> OfflineSummary {
        let mut s = OfflineSummary::start(input, output, revision);
        if let Coverage::Resources {
            left_alone,
            crd_errors,
            ..
        } = self
        {
            s.left_alone = left_alone.clone();
            s.crd_errors = crd_errors.clone();
        }
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
    for chain in coverage.writing_chains() {
        match &chain.write_entry().provider {
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

/// Checks the output against the input: every key the coverage's prefixes hold in `input` is in
/// the output (read with `get`), covered keys counted in `after` by the states they now have,
/// every other key byte-identical.
async fn verify_output<S: ReadStore + Sync>(
    input: &S,
    coverage: &Coverage<'_>,
    get: impl Fn(&[u8]) -> Result<Option<Entry>, OfflineError> + Sync,
    after: &mut Counts,
) -> Result<(), OfflineError> {
    let mut failed = None;
    for prefix in coverage.prefixes() {
        input
            .scan(prefix, |old| {
                match get(&old.key).and_then(|w| check_written(coverage, &old, w, after)) {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })
            .await
            .map_err(|e| match e {
                StoreError::Snapshot(e) => OfflineError::Snapshot(e),
                other => OfflineError::Scan(other.to_string()),
            })?;
        if let Some(e) = failed.take() {
            return Err(e);
        }
    }
    Ok(())
}

/// The output's state of one input key: classified with its chain when the rewrite covers it
/// (counted in `after`), else it must be byte-identical.
fn check_written(
    coverage: &Coverage<'_>,
    old: &Entry,
    written: Option<Entry>,
    after: &mut Counts,
) -> Result<(), OfflineError> {
    let key = || String::from_utf8_lossy(&old.key).into_owned();
    let Some(e) = written else {
        return Err(OfflineError::Lost(key()));
    };
    match coverage.chain_for_key(&old.key) {
        Some(chain) => after.add(classify(Some(chain), &e.value, &e.key).state),
        None if e.value != old.value => return Err(OfflineError::Changed(key())),
        None => {}
    }
    Ok(())
}

/// Rewrites `input` into `output` (see the module docs).
pub async fn rewrite_snapshot(
    input: &Snapshot,
    output: &Path,
    overwrite: bool,
    coverage: &Coverage<'_>,
    allow_decrypt: bool,
) -> Result<OfflineSummary, OfflineError> {
    check_before_writing(coverage, allow_decrypt, input.path(), output)?;
    let mut s = coverage.start_summary(input.path(), output, input.revision());
    let mut lookup_error = None;
    write_snapshot(input, output, overwrite, |entry| {
        let chain = coverage.chain_for_key(&entry.key)?;
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
    for prefix in coverage.prefixes() {
        written.history(prefix, |e| {
            if let Some(chain) = coverage.chain_for_key(&e.key) {
                after_history.add(classify(Some(chain), &e.value, &e.key).state);
            }
        })?;
    }
    // The newest state: every key of the input is in the output, covered keys in the states
    // they now have, every other key byte-identical.
    verify_output(
        input,
        coverage,
        |key| written.get(key).map_err(OfflineError::from),
        &mut after,
    )
    .await?;
    let kind = coverage.kind();
    s.after_residue = written
        .free_runs()
        .map(|(_, b)| count_plaintext_objects(b, kind))
        .sum();
    s.after = after;
    s.after_history = after_history;
    Ok(s)
}

/// Rewrites kine's SQLite file `input` into `output`: every row the coverage names — newest
/// values, older rows, delete rows and every `old_value` copy — is planned with
/// [`Chain::plan_rewrite`] (verified before it is used), written into a vacuumed copy (see
/// [`KineDb::write_copy`]), and the copy is then re-read and audited. `input` is never modified.
pub async fn rewrite_kine(
    input: &KineDb,
    output: &Path,
    overwrite: bool,
    coverage: &Coverage<'_>,
    allow_decrypt: bool,
) -> Result<OfflineSummary, OfflineError> {
    check_before_writing(coverage, allow_decrypt, input.path(), output)?;
    let mut s = coverage.start_summary(input.path(), output, input.revision());
    input
        .write_copy(
            output,
            overwrite,
            coverage.outer_prefix(),
            |which, entry| {
                let chain = coverage.chain_for_key(&entry.key)?;
                s.plan(chain, entry, which == RowValue::Newest)
            },
        )
        .map_err(|e| OfflineError::Scan(format!("{e}")))?;
    s.entries.sort_by(|a, b| a.key.cmp(&b.key));

    // Audit what was written: every key of the input is there, in the states it now has.
    let written = KineDb::open(output).map_err(|e| OfflineError::Scan(e.to_string()))?;
    let mut after = Counts::default();
    let mut after_history = Counts::default();
    for prefix in coverage.prefixes() {
        written
            .history(prefix, |_, e| {
                if let Some(chain) = coverage.chain_for_key(&e.key) {
                    after_history.add(classify(Some(chain), &e.value, &e.key).state);
                }
            })
            .map_err(|e| OfflineError::Scan(e.to_string()))?;
    }
    verify_output(
        input,
        coverage,
        |key| {
            written
                .get(key)
                .map_err(|e| OfflineError::Scan(e.to_string()))
        },
        &mut after,
    )
    .await?;
    // A vacuumed file has no free pages; any would be pages that may hold old bytes.
    s.after_residue = written
        .free_pages()
        .map_err(|e| OfflineError::Scan(e.to_string()))?;
    s.after = after;
    s.after_history = after_history;
    Ok(s)
}
