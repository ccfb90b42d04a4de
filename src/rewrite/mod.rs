//! Re-encrypting stored entries in place, without ever losing a write.
//!
//! [`rewrite`] runs every safety rule first (the preflight), then, for each resource
//! prefix of its [`crate::resource::Target`], the engine: it pages through the prefix of a live store and, for every entry, asks the chain what to
//! do ([`Chain::plan_rewrite`]): nothing (already current), skip it (unknown key, undecryptable,
//! KMS), or write a new value — which the chain has already decrypted back, through the whole
//! chain, to exactly the old plaintext. Each write is one compare-and-put transaction:
//!
//! ```text
//! if mod_revision(key) == seen { put(key, new value, same lease) } else { range(key) }
//! ```
//!
//! so a key kube-apiserver changed since it was read is never overwritten: the failure branch
//! hands back the key's new state, which is planned afresh (it may now be current, changed
//! again, or deleted — a deleted key is never re-created). After
//! [`RewriteOptions::max_conflict_retries`] conflicts on one key, it is left alone and reported
//! as a `conflict`.
//!
//! # Concurrency, memory and shutdown
//!
//! Up to [`RewriteOptions::concurrency`] transactions are in flight at once (one task polls them
//! all: the work is round trips, the crypto takes microseconds), while the next page is fetched.
//! At most two pages are held: the one being worked through and the next. All pages are read at
//! the first page's revision. When `shutdown` resolves (Ctrl-C in the CLI), the transactions in
//! flight finish, no new one starts (a key that conflicts is not retried), and the partial
//! summary comes back with `interrupted: true`. Running again finishes the job: entries already
//! rewritten are `already_current`.
//!
//! # Failures
//!
//! A bad entry is data, not an error: `failed` (a new value could not be produced or did not
//! verify — nothing is written), `skipped`, `conflict`. A store failure on one transaction is
//! retried (planned and sent again) [`STORE_RETRIES`] times; then the run stops — finishing the
//! transactions in flight — and [`RewriteError::Store`] carries the partial summary. etcd's
//! "database space exceeded" (the `NOSPACE` alarm) is never retried: the run stops at once and
//! leaves the alarm to the operator. Nor is a failure after which no member answered for the
//! store's whole failover window (the store already retried it).

mod live;
pub mod offline;
pub mod rotate;
pub mod space_plan;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use thiserror::Error;

use crate::audit::{NoProgress, Verdict};
use crate::store::{CasOutcome, Entry, Page, StoreError, Unanswered, WriteStore};
use crate::transform::{Chain, RewritePlan, State};

pub use live::{rewrite, RewriteReport};
use space_plan::{SpaceError, SpacePlan};

/// How many times one transaction is planned and sent again after a store failure, before the
/// run stops.
pub const STORE_RETRIES: u32 = 3;

/// The space guard of a rewrite: the database file of every member is read at every batch and
/// at least every [`space_plan::GUARD_EVERY`] rewritten entries. Over `pressure`, the run
/// compacts at once and then at every check, which is every tenth of that interval, so the
/// pages old revisions held are reused rather than the file grown; over `stop`, it stops
/// ([`RewriteError::MarginReached`]). Both are under the margin by what one interval may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceGuard {
    /// Compact at every check from this file size on.
    pub pressure: u64,
    /// Stop from this file size on.
    pub stop: u64,
}

/// How to rewrite. What to rewrite is a [`crate::resource::Target`].
#[derive(Debug, Clone)]
pub struct RewriteOptions {
    /// Transactions in flight at once (default 64; 0 counts as 1).
    pub concurrency: usize,
    /// Plan only: report `would-rewrite`, write nothing.
    pub dry_run: bool,
    /// Allow a config whose write provider is `identity` (the "decrypt all data" procedure).
    pub allow_decrypt: bool,
    /// How many conflicts one key may have before it is reported as `conflict` (default 5).
    pub max_conflict_retries: u32,
    /// Progressive compaction: after every this many rewritten entries, finish the
    /// transactions in flight and compact the store at the newest revision written, so that
    /// the old revisions' pages are freed and reused by the next batch instead of growing the
    /// database towards its quota (`None`: only when the space plan needs it; see
    /// [`crate::rewrite::space_plan`]). The scan then goes on at a new revision: each entry is
    /// still written only if it did not change since it was read.
    pub compact_every: Option<u64>,
    /// Write every rewritten key a second time, with the same new value. [`rewrite`] turns it
    /// on for kine (k3s's datastore), whose every row keeps an `old_value` copy of the value
    /// before it — a copy kine's compaction never clears: after one write the current row
    /// would keep the old plaintext; after the second it keeps the new ciphertext, and
    /// compaction then removes the row that held the plaintext (see [`crate::store::kine`]).
    pub write_twice: bool,
    /// Keep every member's database file under this fraction of etcd's quota (default 0.8).
    pub max_db_fraction: f64,
    /// etcd's quota in bytes when neither its status nor its /metrics say.
    pub quota_bytes: Option<u64>,
    /// Save a snapshot of the store to this file (mode 0600) before writing anything.
    pub backup: Option<PathBuf>,
    /// Replace an existing backup file.
    pub overwrite_backup: bool,
    /// After the rewrite, compact the store's history at its newest revision.
    pub compact: bool,
    /// Keep every entry that was not already current in [`RewriteSummary::entries`] (default
    /// true). A run over a million entries turns it off and takes them from
    /// [`Observer::entry`] as they finish, so that memory does not grow with the entries.
    pub list_entries: bool,
    /// The apiserver gate, run before the first write (not on a dry run): every kube-apiserver
    /// must have loaded the config being written with (see [`crate::apiserver::gate`]).
    /// `None`: no gate (a library caller that checked otherwise).
    pub apiserver_gate: Option<crate::apiserver::gate::GateCheck>,
    /// The space guard (see [`SpaceGuard`]). [`rewrite`] sets it from the space plan; `None`:
    /// no guard.
    pub space_guard: Option<SpaceGuard>,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        RewriteOptions {
            concurrency: 64,
            dry_run: false,
            allow_decrypt: false,
            max_conflict_retries: 5,
            compact_every: None,
            write_twice: false,
            max_db_fraction: space_plan::DEFAULT_MAX_DB_FRACTION,
            quota_bytes: None,
            backup: None,
            overwrite_backup: false,
            compact: false,
            space_guard: None,
            apiserver_gate: None,
            list_entries: true,
        }
    }
}

/// Progress callbacks. Every method has a no-op default; they are called from the task running
/// [`rewrite`] (or [`offline::rewrite_copy`], which calls only [`Observer::entry`]), so they
/// should return quickly.
pub trait Observer: Send + Sync {
    /// The number of keys to visit when the run starts (the store may change after).
    fn total(&self, _n: u64) {}
    /// One entry is done, whatever the result (already-current ones included). This is where a
    /// caller lists or streams entries: summaries keep counts (a live rewrite keeps a list only
    /// with [`RewriteOptions::list_entries`]; an offline one never does).
    fn entry(&self, _e: &RewriteEntry) {}
    /// The space plan, before anything is written.
    fn space(&self, _plan: &SpacePlan) {}
    /// A dry run: the space refusal a real run would meet (the dry run goes on).
    fn space_refused(&self, _why: &SpaceError) {}
    /// The backup was saved, before anything was written.
    fn backup(&self, _path: &Path, _bytes: u64) {}
}

impl Observer for NoProgress {}

/// What happened to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryResult {
    /// Written with the write provider and key (verified before the write).
    Rewritten,
    /// Dry run: would have been written.
    WouldRewrite,
    /// Already what the write provider stores. Reported to the [`Observer`] only, never listed
    /// in [`RewriteSummary::entries`].
    AlreadyCurrent,
    /// Not touched: unknown key, undecryptable or KMS.
    Skipped,
    /// The key kept changing under the rewrite (or changed after shutdown was asked for); left
    /// as it is.
    Conflict,
    /// A new value could not be produced or did not verify; nothing was written.
    Failed,
    /// The key was deleted before it could be rewritten (it is not re-created).
    Deleted,
}

impl EntryResult {
    /// The name used in summaries (`would-rewrite`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryResult::Rewritten => "rewritten",
            EntryResult::WouldRewrite => "would-rewrite",
            EntryResult::AlreadyCurrent => "already-current",
            EntryResult::Skipped => "skipped",
            EntryResult::Conflict => "conflict",
            EntryResult::Failed => "failed",
            EntryResult::Deleted => "deleted",
        }
    }
}

impl fmt::Display for EntryResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a [`RewriteSummary`]. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RewriteEntry {
    /// The etcd key (invalid UTF-8 replaced by U+FFFD).
    pub key: String,
    /// The entry's state when it was last read (after a conflict: the state it changed to).
    pub from: State,
    /// What the rewrite did.
    pub result: EntryResult,
    /// Why, for `skipped`, `failed` and `conflict` entries, and for a `rewritten` one whose
    /// second write on kine failed (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many times a write lost the compare-and-swap because the key had changed, and the
    /// entry was handled afresh from what etcd returned (absent when 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub conflicts_retried: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// The outcome of a rewrite: counts, the revision the scan read, and every entry that was not
/// already current. This type *is* the JSON schema of `atrest rewrite -o json`:
///
/// ```json
/// {"scanned": 10, "rewritten": 7, "would_rewrite": 0, "already_current": 2, "skipped": 1,
///  "conflicts": 0, "conflicts_retried": 3, "failed": 0, "deleted": 0, "interrupted": false,
///  "revision": 1234, "compactions": 0,
///  "entries": [{"key": "/registry/secrets/default/db", "from": "plaintext", "result": "rewritten"}]}
/// ```
///
/// `scanned` is the sum of the seven counts that follow it. A live rewrite's CLI adds `space`
/// (the quota plan, [`crate::rewrite::space_plan::SpacePlan`]); `unanswered` appears when a member did not
/// answer. No secret value ever appears.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RewriteSummary {
    /// The version of this schema ([`crate::audit::SCHEMA_VERSION`]).
    pub schema_version: crate::audit::SchemaVersion,
    /// With [`RewriteOptions::list_entries`]: every entry that was not already current, in
    /// key order. `atrest rewrite -o json` streams them here instead, as they finish (nearly
    /// key order: up to `concurrency` transactions finish in any order).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<RewriteEntry>,
    /// Entries handled (an interrupted run handles fewer than the prefix holds).
    pub scanned: u64,
    /// Entries written with the write provider and key.
    pub rewritten: u64,
    /// Dry run only: entries that would have been written.
    pub would_rewrite: u64,
    /// Entries that were already current (not listed in `entries`).
    pub already_current: u64,
    /// Entries not touched: `unknown-key`, `undecryptable`, `kms`.
    pub skipped: u64,
    /// Entries abandoned because they kept changing during the rewrite (more than
    /// [`RewriteOptions::max_conflict_retries`] lost compare-and-swaps, or one after shutdown).
    pub conflicts: u64,
    /// Compare-and-swaps lost to a concurrent writer and retried from the entry etcd returned,
    /// over all entries (most end `rewritten` or `already_current`; not part of `scanned`).
    pub conflicts_retried: u64,
    /// Entries for which no verified new value could be produced (nothing written).
    pub failed: u64,
    /// Entries deleted between the scan and their rewrite.
    pub deleted: u64,
    /// The run was stopped by its shutdown signal (or a store failure) before it finished: run
    /// it again to complete the job.
    pub interrupted: bool,
    /// The store revision the first page was read at (0 if no page was read); later pages are
    /// read at it too, unless a progressive compaction moved the scan on.
    pub revision: i64,
    /// Compactions done: progressive ones during the run (see `compact_every`), and the final
    /// one with `compact`.
    pub compactions: u64,
    /// With `compact`: the revision the history was compacted at after the rewrite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compacted_at: Option<i64>,
    /// The apiserver gate's outcome (`passed: …` or `skipped: …`); absent when no gate ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_check: Option<String>,
    /// The largest database file the space guard saw (0: not watched); reported in
    /// `space.peak_db_size`.
    #[serde(skip)]
    pub peak_db_size: u64,
    /// kine only: rewritten entries whose second write failed, so kine's `old_value` copy of
    /// the value before the rewrite (possibly plaintext) was not replaced (listed in `entries`
    /// with the error; run the rewrite again).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub second_write_failed: u64,
    /// Live rewrites: etcd's space, the estimated growth and how the run stays under the quota
    /// (set by the caller that made the plan; see [`crate::rewrite::space_plan`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space: Option<crate::rewrite::space_plan::SpacePlan>,
    /// Live etcd only: each member that did not answer (left out at connect time, or failed
    /// over from during the run), with its last error; absent when every member answered.
    ///
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unanswered: Vec<Unanswered>,
}

impl RewriteSummary {
    fn add(&mut self, entry: RewriteEntry, keep: bool) {
        self.scanned += 1;
        if entry.result == EntryResult::Rewritten && entry.error.is_some() {
            self.second_write_failed += 1;
        }
        self.conflicts_retried += u64::from(entry.conflicts_retried);
        let count = match entry.result {
            EntryResult::Rewritten => &mut self.rewritten,
            EntryResult::WouldRewrite => &mut self.would_rewrite,
            EntryResult::AlreadyCurrent => {
                self.already_current += 1;
                return;
            }
            EntryResult::Skipped => &mut self.skipped,
            EntryResult::Conflict => &mut self.conflicts,
            EntryResult::Failed => &mut self.failed,
            EntryResult::Deleted => &mut self.deleted,
        };
        *count += 1;
        if keep {
            self.entries.push(entry);
        }
    }

    /// Clean (exit 0) when every entry the run saw is now current (or was deleted) and the run
    /// finished; findings (exit 1) when anything was left not current: skipped, conflict,
    /// failed, a dry run's would-rewrite, or an interrupted run.
    pub fn verdict(&self) -> Verdict {
        let done = self.rewritten + self.already_current + self.deleted;
        if done == self.scanned && !self.interrupted && self.second_write_failed == 0 {
            Verdict::Clean
        } else {
            Verdict::Findings
        }
    }
}

/// Why a rewrite did not run or did not finish.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The store is a file: rewrite it into a new file instead ([`offline::rewrite_copy`]).
    #[error("{source_name} is a file: a rewrite in place needs a live etcd (or kine)")]
    NotLive {
        /// The store, as reports name it.
        source_name: String,
    },
    /// The config writes with `identity`: a rewrite would decrypt everything.
    #[error(
        "the config's first provider is identity: a rewrite would store every entry unencrypted"
    )]
    IdentityWrite,
    /// The config writes with a KMS provider whose plugin is not ready (nothing was written).
    #[error("refusing to write: {0}")]
    KmsWrite(crate::provider::kms::KmsWriteError),
    /// The apiserver gate refused: a kube-apiserver has not loaded the config (nothing was
    /// written).
    #[error("refusing to write: {0}")]
    Apiserver(crate::apiserver::gate::GateError),
    /// The space plan refuses: the rewrite cannot stay under the quota's margin, or etcd has a
    /// NOSPACE alarm (nothing was written).
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// A backup was asked for, but kine has no snapshot API (nothing was written).
    #[error("{source_name} is kine (k3s's datastore): it has no snapshot API, so no backup can be saved")]
    BackupOnKine {
        /// The store, as reports name it.
        source_name: String,
    },
    /// The backup could not be saved (nothing was written).
    #[error("the backup to {} failed", .path.display())]
    Backup {
        /// The backup file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// A member's database file passed the space margin during the run; the run stopped after
    /// the transactions in flight (nothing is lost: run again after compacting and
    /// defragmenting).
    #[error("rewrite stopped after {} entries: a member's database file is {size} bytes, over the margin of {limit} bytes", .summary.scanned)]
    MarginReached {
        /// The file size seen.
        size: u64,
        /// The limit (`max_db_fraction` of the quota).
        limit: u64,
        /// What was done before the run stopped (`interrupted` is set).
        summary: Box<RewriteSummary>,
    },
    /// The store failed and the run stopped; the transactions in flight were finished.
    #[error("rewrite stopped after {} entries: the store failed{}", .summary.scanned, .key.as_ref().map(|k| format!(" writing {k}")).unwrap_or_default())]
    Store {
        /// The key being written (`None`: reading a page failed).
        key: Option<String>,
        /// The failure.
        #[source]
        source: StoreError,
        /// What was done before the run stopped (`interrupted` is set).
        summary: Box<RewriteSummary>,
    },
}

impl RewriteError {
    /// What the user can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            RewriteError::NotLive { .. } => {
                "rewrite a snapshot or kine file into a new one: pass --out FILE"
            }
            RewriteError::IdentityWrite => {
                "this is the \"decrypt all data\" procedure; pass --allow-decrypt if that is what \
                 you want, or put the new encrypting provider first in the config"
            }
            RewriteError::KmsWrite(e) => e.advice(),
            RewriteError::Space(e) => e.advice(),
            RewriteError::Apiserver(_) => {
                "make every kube-apiserver load the config (copy it to each control-plane node and \
                 restart kube-apiserver there), check with `atrest apiservers --config FILE`, then \
                 run again"
            }
            RewriteError::BackupOnKine { .. } => {
                "copy the SQLite file instead, e.g. `sqlite3 /var/lib/rancher/k3s/server/db/state.db \
                 \".backup /root/state-before-rewrite.db\"`, then run without --backup"
            }
            RewriteError::Backup { .. } => {
                "nothing was written to etcd; fix the backup path or drop --backup"
            }
            RewriteError::MarginReached { .. } => {
                "compact etcd's history (`etcdctl compact` at the current revision) and \
                 `etcdctl defrag` each member, then run again: rewritten entries are current and \
                 are passed over"
            }
            RewriteError::Store { source, .. } => match source {
                StoreError::Etcd(e) => e.advice(),
                _ => "run again: entries already rewritten are current and are passed over",
            },
        }
    }

    /// The partial summary of a run the store stopped.
    pub fn summary(&self) -> Option<&RewriteSummary> {
        match self {
            RewriteError::Store { summary, .. } | RewriteError::MarginReached { summary, .. } => {
                Some(summary)
            }
            _ => None,
        }
    }
}

impl From<crate::provider::kms::KmsWriteError> for RewriteError {
    fn from(e: crate::provider::kms::KmsWriteError) -> Self {
        RewriteError::KmsWrite(e)
    }
}

impl From<crate::apiserver::gate::GateError> for RewriteError {
    fn from(e: crate::apiserver::gate::GateError) -> Self {
        RewriteError::Apiserver(e)
    }
}

/// Rewrites every entry under `prefix` that is not current, with `chain` (see the module docs).
/// The preflight (gates, space plan, backup) is [`rewrite`]'s: this is the engine it runs once
/// per prefix.
pub(crate) async fn apply_prefix<S>(
    store: &S,
    chain: &Chain,
    prefix: &[u8],
    opts: &RewriteOptions,
    observer: &dyn Observer,
    shutdown: impl Future<Output = ()>,
) -> Result<RewriteSummary, RewriteError>
where
    S: WriteStore + Sync,
{
    let concurrency = opts.concurrency.max(1);
    let mut summary = RewriteSummary::default();
    if let Err(source) = store.count(prefix).await.map(|n| observer.total(n)) {
        summary.interrupted = true;
        return Err(RewriteError::Store {
            key: None,
            source,
            summary: Box::new(summary),
        });
    }

    // Set once shutdown is asked for: tasks in flight then stop at their next conflict.
    let stopping = AtomicBool::new(false);
    let mut shutdown = pin!(shutdown);
    let mut stop = false;
    let mut failure: Option<(Option<String>, StoreError)> = None;

    // At most one page fetch in flight, one page waiting, one being worked through.
    let mut fetching = FuturesUnordered::new();
    fetching.push(fetch_page(store, prefix, None, None));
    let mut waiting: Option<Page> = None;
    let mut pending: VecDeque<Entry> = VecDeque::new();
    let mut revision: Option<i64> = None;
    // The revision the next page is read at: the first page's, until a compaction removes it.
    let mut pin: Option<i64> = None;
    let mut in_flight = FuturesUnordered::new();
    let mut drains = Drains::default();
    let mut over_margin: Option<(u64, u64)> = None;

    loop {
        // Start transactions up to the limit, moving to the waiting page (and fetching the one
        // after it) when the current page runs out.
        while !stop && failure.is_none() && !drains.draining() && in_flight.len() < concurrency {
            if pending.is_empty() {
                let Some(page) = waiting.take() else { break };
                if page.more {
                    if let Some(last) = page.entries.last() {
                        fetching.push(fetch_page(store, prefix, Some(last.key.clone()), pin));
                    }
                }
                pending = page.entries.into();
                continue;
            }
            if let Some(entry) = pending.pop_front() {
                in_flight.push(rewrite_one(store, chain, opts, &stopping, entry));
            }
        }
        if drains.draining() && in_flight.is_empty() && fetching.is_empty() {
            let at = drains.take(opts);
            if stop || failure.is_some() {
                continue;
            }
            match at.run(store, &mut summary).await {
                Ok(d) => {
                    drains.pressure |= d.pressure;
                    // After a compaction the pinned revision is gone: the next page is read
                    // at the current one.
                    pin = pin.filter(|_| !d.compacted);
                    // Past the margin: stop (no drain runs once stopped).
                    stop |= d.over.is_some();
                    over_margin = over_margin.or(d.over);
                }
                Err(source) => failure = Some((None, source)),
            }
            continue;
        }
        let scanned_all = pending.is_empty() && waiting.is_none() && fetching.is_empty();
        if in_flight.is_empty() && (stop || failure.is_some() || scanned_all) {
            break;
        }
        tokio::select! {
            biased;
            () = &mut shutdown, if !stop => {
                stop = true;
                stopping.store(true, Ordering::Relaxed);
            }
            Some(done) = in_flight.next() => match done {
                Ok((entry, written)) => {
                    if let Some(rev) = written {
                        drains.written(rev, opts);
                    }
                    observer.entry(&entry);
                    summary.add(entry, opts.list_entries);
                }
                Err((key, source)) => {
                    stopping.store(true, Ordering::Relaxed);
                    failure.get_or_insert((Some(key), source));
                }
            },
            Some(page) = fetching.next(), if !stop && failure.is_none() => match page {
                Ok(page) => {
                    revision.get_or_insert(page.revision);
                    pin.get_or_insert(page.revision);
                    waiting = Some(page);
                }
                Err(source) => {
                    stopping.store(true, Ordering::Relaxed);
                    failure = Some((None, source));
                }
            },
        }
    }

    summary.revision = revision.unwrap_or_default();
    summary.interrupted = stop || failure.is_some();
    summary.unanswered = store.unanswered();
    finish(summary, over_margin, failure)
}

/// The result of a run that ended: the summary (entries in key order), or why it stopped
/// early with the summary so far.
// The error `apply_prefix` returns (clippy does not look at async functions' results).
#[allow(clippy::result_large_err)]
fn finish(
    mut summary: RewriteSummary,
    over_margin: Option<(u64, u64)>,
    failure: Option<(Option<String>, StoreError)>,
) -> Result<RewriteSummary, RewriteError> {
    summary.entries.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some((size, limit)) = over_margin {
        return Err(RewriteError::MarginReached {
            size,
            limit,
            summary: Box::new(summary),
        });
    }
    match failure {
        None => Ok(summary),
        Some((key, source)) => Err(RewriteError::Store {
            key,
            source,
            summary: Box::new(summary),
        }),
    }
}

/// When the engine drains its transactions in flight (see [`DrainPoint`]): progressive
/// compaction after every `compact_every` rewritten entries, and the space guard's check of
/// the database file at every batch and at least every [`space_plan::GUARD_EVERY`] entries.
/// Entries finishing while the run drains count towards the next batch.
#[derive(Default)]
struct Drains {
    since_compact: u64,
    since_check: u64,
    newest_written: i64,
    compacting: bool,
    checking: bool,
    /// The file passed the guard's pressure size: compact at every check, check ten times as
    /// often.
    pressure: bool,
}

impl Drains {
    /// One more entry written, at `revision`.
    fn written(&mut self, revision: i64, opts: &RewriteOptions) {
        self.newest_written = self.newest_written.max(revision);
        self.since_compact += 1;
        if opts
            .compact_every
            .is_some_and(|n| self.since_compact >= n.max(1))
        {
            self.compacting = true;
            self.since_compact = 0;
        }
        self.since_check += 1;
        let every = if self.pressure {
            space_plan::GUARD_EVERY / 10
        } else {
            space_plan::GUARD_EVERY
        };
        if opts.space_guard.is_some() && self.since_check >= every {
            self.checking = true;
        }
    }

    /// Whether the run is draining its transactions to compact or check.
    fn draining(&self) -> bool {
        self.compacting || self.checking
    }

    /// What to do now that the transactions have drained.
    fn take(&mut self, opts: &RewriteOptions) -> DrainPoint {
        let compact = std::mem::take(&mut self.compacting) || self.pressure;
        self.checking = false;
        if opts.space_guard.is_some() {
            self.since_check = 0;
        }
        DrainPoint {
            compact_at: compact.then_some(self.newest_written),
            newest_written: self.newest_written,
            guard: opts.space_guard,
        }
    }
}

/// What the engine does once the transactions in flight have drained: compact at the newest
/// revision written (progressive compaction), and check the database file against the space
/// guard's limit.
struct DrainPoint {
    compact_at: Option<i64>,
    newest_written: i64,
    guard: Option<SpaceGuard>,
}

/// What a drain point did: whether it compacted, whether the file is under pressure, and the
/// file size over the stop size, if it was.
struct Drained {
    compacted: bool,
    pressure: bool,
    over: Option<(u64, u64)>,
}

impl DrainPoint {
    async fn run<S: WriteStore + Sync>(
        self,
        store: &S,
        summary: &mut RewriteSummary,
    ) -> Result<Drained, StoreError> {
        let mut done = Drained {
            compacted: false,
            pressure: false,
            over: None,
        };
        if let Some(revision) = self.compact_at {
            store.compact(revision).await?;
            summary.compactions += 1;
            done.compacted = true;
        }
        let Some(guard) = self.guard else {
            return Ok(done);
        };
        let Some(size) = store.db_file_size().await? else {
            return Ok(done);
        };
        summary.peak_db_size = summary.peak_db_size.max(size);
        done.pressure = size > guard.pressure;
        if done.pressure && !done.compacted && self.newest_written > 0 {
            // Free the old revisions' pages now, so the next writes reuse them.
            store.compact(self.newest_written).await?;
            summary.compactions += 1;
            done.compacted = true;
        }
        if size > guard.stop {
            done.over = Some((size, guard.stop));
        }
        Ok(done)
    }
}

/// One page, as a future of one concrete type (so it fits a `FuturesUnordered`).
async fn fetch_page<S: WriteStore + Sync>(
    store: &S,
    prefix: &[u8],
    after: Option<Vec<u8>>,
    revision: Option<i64>,
) -> Result<Page, StoreError> {
    store.page(prefix, after.as_deref(), revision).await
}

/// kine's second write of a rewritten key (see [`RewriteOptions::write_twice`]): the same bytes
/// on top of themselves, so that the store's copy of the previous value is this ciphertext. The
/// revision to compare against is read back with the key, not taken from the first
/// transaction's header: kine's header carries its newest revision, which may already be
/// another writer's. Only if the key still holds exactly these bytes (a random IV makes them
/// unique) is it written again; a conflict or a changed value means someone wrote after us,
/// which replaces the copy just as well. A store failure is returned: the first write stands,
/// but the copy of the old value stays until the next write.
async fn write_again<S: WriteStore + Sync>(
    store: &S,
    key: &[u8],
    value: Vec<u8>,
) -> Result<(), String> {
    let failed = |e: StoreError| {
        format!("the second write, which replaces kine's old_value copy of the previous value, failed: {e}; run the rewrite again")
    };
    match store.get(key).await.map_err(failed)? {
        Some(now) if now.value == value => store
            .compare_and_put(key, now.mod_revision, value, now.lease)
            .await
            .map(drop)
            .map_err(failed),
        _ => Ok(()),
    }
}

/// Plans and writes one entry, re-planning after a conflict (from the entry the failure branch
/// returned) or a store failure (from the same entry: a new value, freshly verified).
async fn rewrite_one<S: WriteStore + Sync>(
    store: &S,
    chain: &Chain,
    opts: &RewriteOptions,
    stopping: &AtomicBool,
    mut entry: Entry,
) -> Result<(RewriteEntry, Option<i64>), (String, StoreError)> {
    let key = String::from_utf8_lossy(&entry.key).into_owned();
    let mut conflicts = 0u32;
    let mut store_failures = 0u32;
    loop {
        let (found, plan) = chain.plan_rewrite(&entry.value, &entry.key);
        // The conflicts before this attempt, each retried (a conflict that ends the loop below
        // is not counted: it was not retried).
        let retried = conflicts;
        let done = |result, error| {
            Ok((
                RewriteEntry {
                    key: key.clone(),
                    from: found.state,
                    result,
                    error,
                    conflicts_retried: retried,
                },
                None,
            ))
        };
        let new_value = match plan {
            RewritePlan::AlreadyCurrent => return done(EntryResult::AlreadyCurrent, None),
            RewritePlan::Skip => return done(EntryResult::Skipped, found.error.clone()),
            RewritePlan::Failed(reason) => return done(EntryResult::Failed, Some(reason)),
            RewritePlan::Write(_) if opts.dry_run => return done(EntryResult::WouldRewrite, None),
            RewritePlan::Write(value) => value,
        };
        let again = opts.write_twice.then(|| new_value.clone());
        match store
            .compare_and_put(&entry.key, entry.mod_revision, new_value, entry.lease)
            .await
        {
            Ok(CasOutcome::Written { mod_revision }) => {
                let mut second = None;
                if let Some(value) = again {
                    second = write_again(store, &entry.key, value).await.err();
                }
                let (written, _) = done(EntryResult::Rewritten, second)?;
                return Ok((written, Some(mod_revision)));
            }
            Ok(CasOutcome::Conflict { current: None }) => return done(EntryResult::Deleted, None),
            Ok(CasOutcome::Conflict {
                current: Some(current),
            }) => {
                conflicts += 1;
                if stopping.load(Ordering::Relaxed) {
                    return done(
                        EntryResult::Conflict,
                        Some("changed during the rewrite; not retried after shutdown".to_owned()),
                    );
                }
                if conflicts > opts.max_conflict_retries {
                    return done(
                        EntryResult::Conflict,
                        Some(format!(
                            "changed {conflicts} times during the rewrite; left as it is"
                        )),
                    );
                }
                entry = current;
            }
            Err(source) => {
                store_failures += 1;
                if store_failures > STORE_RETRIES || source.is_nospace() || source.is_unreachable()
                {
                    return Err((key, source));
                }
                tokio::time::sleep(Duration::from_millis(100 << store_failures)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::provider::Provider;

    const PREFIX: &[u8] = b"/registry/secrets/";
    use crate::provider::{aescbc::AesCbc, identity::Identity, KeyMaterial};
    use crate::store::{prefix_end, ReadStore};

    /// An in-memory store whose writes can be made to fail or to always conflict.
    #[derive(Default)]
    struct MemStore(Mutex<Mem>);

    #[derive(Default)]
    struct Mem {
        revision: i64,
        keys: BTreeMap<Vec<u8>, Entry>,
        writes: u64,
        fail_after_writes: Option<u64>,
        always_conflict: bool,
        fail_get: bool,
    }

    impl MemStore {
        fn with_plaintext(n: usize) -> MemStore {
            let store = MemStore::default();
            {
                let mut m = store.0.lock().unwrap();
                for i in 0..n {
                    m.revision += 1;
                    let key = format!("/registry/secrets/default/s{i:04}").into_bytes();
                    let entry = Entry {
                        key: key.clone(),
                        value: format!("k8s\0value {i}").into_bytes(),
                        mod_revision: m.revision,
                        create_revision: m.revision,
                        version: 1,
                        lease: 0,
                    };
                    m.keys.insert(key, entry);
                }
            }
            store
        }
    }

    impl ReadStore for MemStore {
        fn source(&self) -> String {
            "memory".to_owned()
        }

        async fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
            let m = self.0.lock().unwrap();
            Ok(m.keys.range(prefix.to_vec()..prefix_end(prefix)).count() as u64)
        }

        async fn page(
            &self,
            prefix: &[u8],
            after: Option<&[u8]>,
            _revision: Option<i64>,
        ) -> Result<Page, StoreError> {
            let m = self.0.lock().unwrap();
            Ok(crate::store::page_of(&m.keys, prefix, after, m.revision))
        }
    }

    impl WriteStore for MemStore {
        async fn compare_and_put(
            &self,
            key: &[u8],
            seen_mod_revision: i64,
            value: Vec<u8>,
            lease: i64,
        ) -> Result<CasOutcome, StoreError> {
            let mut m = self.0.lock().unwrap();
            if m.fail_after_writes.is_some_and(|n| m.writes >= n) {
                return Err(StoreError::Stopped);
            }
            m.revision += 1;
            let revision = m.revision;
            let always_conflict = m.always_conflict;
            let Some(entry) = m.keys.get_mut(key) else {
                return Ok(CasOutcome::Conflict { current: None });
            };
            if always_conflict || entry.mod_revision != seen_mod_revision {
                // Someone else wrote the key (again).
                entry.mod_revision = revision;
                return Ok(CasOutcome::Conflict {
                    current: Some(entry.clone()),
                });
            }
            entry.value = value;
            entry.mod_revision = revision;
            entry.lease = lease;
            m.writes += 1;
            Ok(CasOutcome::Written {
                mod_revision: revision,
            })
        }

        async fn get(&self, key: &[u8]) -> Result<Option<Entry>, StoreError> {
            let m = self.0.lock().unwrap();
            if m.fail_get {
                return Err(StoreError::Stopped);
            }
            Ok(m.keys.get(key).cloned())
        }

        async fn backup(&self, _path: &Path, _overwrite: bool) -> Result<u64, StoreError> {
            Ok(0)
        }

        async fn compact(&self, _revision: i64) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn chain() -> Chain {
        let key = KeyMaterial::new(vec![7; 32]);
        Chain::from_providers(
            "secrets",
            vec![
                Provider::Aescbc(AesCbc::new("key1", &key).unwrap()),
                Provider::Identity(Identity),
            ],
        )
        .unwrap()
    }

    async fn run(store: &MemStore, opts: RewriteOptions) -> Result<RewriteSummary, RewriteError> {
        apply_prefix(
            store,
            &chain(),
            PREFIX,
            &opts,
            &NoProgress,
            std::future::pending(),
        )
        .await
    }

    #[test]
    fn apply_can_run_on_a_spawned_task() {
        fn is_send<T: Send>(_: &T) {}
        let (store, chain, opts) = (MemStore::default(), chain(), RewriteOptions::default());
        let run = apply_prefix(
            &store,
            &chain,
            PREFIX,
            &opts,
            &NoProgress,
            std::future::pending(),
        );
        is_send(&run);
    }

    #[tokio::test]
    async fn every_page_is_rewritten() {
        let store = MemStore::with_plaintext(95);
        let s = run(&store, RewriteOptions::default()).await.unwrap();
        assert_eq!((s.scanned, s.rewritten), (95, 95));
        assert_eq!(s.verdict(), Verdict::Clean);
        let s = run(&store, RewriteOptions::default()).await.unwrap();
        assert_eq!((s.scanned, s.already_current), (95, 95));
        let empty = apply_prefix(
            &store,
            &chain(),
            b"/registry/configmaps/",
            &RewriteOptions::default(),
            &NoProgress,
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(empty.scanned, 0);
        assert_eq!(empty.verdict(), Verdict::Clean);
    }

    #[tokio::test]
    async fn write_twice_writes_each_rewritten_key_again_with_the_same_bytes() {
        let store = MemStore::with_plaintext(10);
        let once = run(&store, RewriteOptions::default()).await.unwrap();
        assert_eq!(once.rewritten, 10);
        assert_eq!(store.0.lock().unwrap().writes, 10);
        let store = MemStore::with_plaintext(10);
        let opts = RewriteOptions {
            write_twice: true,
            ..RewriteOptions::default()
        };
        let twice = run(&store, opts).await.unwrap();
        assert_eq!((twice.rewritten, twice.conflicts_retried), (10, 0));
        let m = store.0.lock().unwrap();
        assert_eq!(m.writes, 20);
        for e in m.keys.values() {
            assert_eq!(chain().classify(&e.value, &e.key).state, State::Current);
        }
    }

    /// Issue 22 item 22: kine's second write is what replaces the plaintext copy in its
    /// `old_value`; its failures were dropped silently. Now each is reported on its entry, counted
    /// in `second_write_failed`, and the run is not clean.
    #[tokio::test]
    async fn issue_22_22_a_failed_second_write_is_reported() {
        let store = MemStore::with_plaintext(10);
        store.0.lock().unwrap().fail_get = true;
        let opts = RewriteOptions {
            write_twice: true,
            ..RewriteOptions::default()
        };
        let s = run(&store, opts).await.unwrap();
        assert_eq!((s.rewritten, s.second_write_failed), (10, 10));
        assert_eq!(s.verdict(), Verdict::Findings);
        let e = &s.entries[0];
        assert_eq!(e.result, EntryResult::Rewritten);
        assert!(
            e.error.as_deref().is_some_and(|m| m.contains("old_value")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_shutdown_before_the_first_page_writes_nothing() {
        let store = MemStore::with_plaintext(20);
        let opts = RewriteOptions::default();
        let s = apply_prefix(
            &store,
            &chain(),
            PREFIX,
            &opts,
            &NoProgress,
            std::future::ready(()),
        )
        .await
        .unwrap();
        assert!(s.interrupted);
        assert_eq!((s.scanned, s.rewritten), (0, 0));
        assert_eq!(s.verdict(), Verdict::Findings);
        assert_eq!(store.0.lock().unwrap().writes, 0);
    }

    #[tokio::test]
    async fn a_key_that_keeps_changing_is_a_conflict() {
        let store = MemStore::with_plaintext(3);
        store.0.lock().unwrap().always_conflict = true;
        let s = run(
            &store,
            RewriteOptions {
                max_conflict_retries: 2,
                ..RewriteOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!((s.scanned, s.conflicts), (3, 3));
        // Each key lost three compare-and-swaps: two retried, the third abandoned it.
        assert_eq!(s.conflicts_retried, 6);
        assert_eq!(s.entries[0].result, EntryResult::Conflict);
        assert!(s.entries[0].error.as_deref().unwrap().contains("3 times"));
        assert_eq!(s.verdict(), Verdict::Findings);
    }

    #[tokio::test]
    async fn a_store_failure_stops_the_run_with_the_partial_summary() {
        let store = MemStore::with_plaintext(50);
        store.0.lock().unwrap().fail_after_writes = Some(12);
        let err = run(
            &store,
            RewriteOptions {
                concurrency: 4,
                ..RewriteOptions::default()
            },
        )
        .await
        .unwrap_err();
        let RewriteError::Store { key, summary, .. } = &err else {
            panic!("expected a store error, got {err:?}");
        };
        assert!(key.is_some());
        assert!(summary.interrupted);
        assert_eq!(summary.rewritten, 12);
        assert!(summary.scanned < 50);
        assert!(
            err.to_string().contains("stopped after 12 entries"),
            "{err}"
        );
    }

    fn entry(key: &str, result: EntryResult) -> RewriteEntry {
        RewriteEntry {
            key: key.to_owned(),
            from: State::Plaintext,
            result,
            error: None,
            conflicts_retried: 0,
        }
    }

    #[test]
    fn summary_counts_and_verdict() {
        let mut s = RewriteSummary::default();
        s.add(entry("/a", EntryResult::Rewritten), true);
        s.add(entry("/b", EntryResult::AlreadyCurrent), true);
        s.add(entry("/c", EntryResult::Deleted), true);
        assert_eq!(
            (s.scanned, s.entries.len()),
            (3, 2),
            "already-current is not listed"
        );
        assert_eq!(s.verdict(), Verdict::Clean);
        s.interrupted = true;
        assert_eq!(s.verdict(), Verdict::Findings);
        s.interrupted = false;
        s.add(entry("/d", EntryResult::Skipped), true);
        assert_eq!(s.verdict(), Verdict::Findings);
    }

    #[test]
    fn summary_json_uses_the_documented_names() {
        let mut s = RewriteSummary::default();
        s.add(entry("/a", EntryResult::WouldRewrite), true);
        let json = serde_json::to_value(&s).unwrap();
        for field in [
            "scanned",
            "rewritten",
            "would_rewrite",
            "already_current",
            "skipped",
            "conflicts",
            "failed",
            "deleted",
            "interrupted",
            "revision",
            "entries",
        ] {
            assert!(json.get(field).is_some(), "{field} missing from {json}");
        }
        assert_eq!(
            json["entries"][0],
            serde_json::json!({"key": "/a", "from": "plaintext", "result": "would-rewrite"})
        );
    }
}
