//! Will a rewrite fit under etcd's space quota? The growth estimate and the plan.
//!
//! Re-encrypting an entry writes a new revision of it; until a compaction removes the old one,
//! etcd's database holds both. etcd counts its backend quota on the database's high-water mark
//! (`Status.dbSize`): writes first reuse free pages (`dbSize - dbSizeInUse`), then grow it,
//! and a write that would take it over the quota raises the `NOSPACE` alarm — after which etcd
//! refuses every write, kube-apiserver's included, until an operator compacts, defragments and
//! disarms it.
//!
//! So before a rewrite, [`plan`] compares the bytes in use on the fullest member plus the
//! estimated growth ([`estimate`]) with a margin of the quota (`--max-db-fraction`, default
//! [`DEFAULT_MAX_DB_FRACTION`]):
//! - it fits: one pass, no compaction;
//! - it does not, but a batch does: rewrite in batches and compact at each batch's newest
//!   revision ([`crate::rewrite::RewriteOptions::compact_every`]) so that the next batch reuses
//!   the pages the old revisions held. This removes history kube-apiserver itself compacts
//!   every 5 minutes (`--etcd-compaction-interval`), so nothing a cluster keeps is lost;
//! - not even a small batch fits (the database is nearly full already), or a `NOSPACE` alarm is
//!   active: refuse before writing anything ([`SpaceError`]), with the numbers and what to do.

use serde::Serialize;
use thiserror::Error;

use crate::store::etcd::Space;
use crate::store::{ReadStore, StoreError};
use crate::transform::{Chain, State};

/// The default `--max-db-fraction`: keep the database under 80% of the quota.
pub const DEFAULT_MAX_DB_FRACTION: f64 = 0.8;

/// Bytes a rewritten entry adds to etcd's database besides its key and new value: the revision
/// key (17 bytes), the `mvccpb.KeyValue` framing (revisions, version, lease: about 40 bytes),
/// the bbolt leaf element (16), the key index, and the new value's encryption overhead
/// (`k8s:enc:aescbc:v1:<name>:`, IV and padding: up to about 60).
pub const PER_ENTRY_OVERHEAD: u64 = 160;

/// bbolt's page fill: etcd fills its `key` bucket's pages to about 90%, and page headers and
/// branch pages come on top; the estimate multiplies by 5/4.
const FILL_NUMERATOR: u64 = 5;
const FILL_DENOMINATOR: u64 = 4;

/// A rewrite checks the database file at least this often (in rewritten entries), with or
/// without compaction.
pub const GUARD_EVERY: u64 = 1000;

/// The fewest entries a batch may hold; below this, compacting after each batch costs more
/// than the rewrite, and the database is too full to rewrite safely.
pub const MIN_BATCH: u64 = 50;

/// What a rewrite will write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Estimate {
    /// Entries that will be rewritten (plaintext and stale).
    pub entries: u64,
    /// Their keys and current values, in bytes.
    pub bytes: u64,
    /// The estimated growth of etcd's database: new values, revision bookkeeping, bbolt
    /// overhead.
    pub growth_bytes: u64,
    /// Not scanned: an upper bound from the database's size alone ([`Estimate::bound`]);
    /// `entries` is then 0.
    pub upper_bound: bool,
}

/// A rewritten entry adds at most this many times what it takes in the database now (its key,
/// value and bookkeeping): for a Secret of 150 bytes, (150 + 160) × 5/4 against about 190.
const BOUND_FACTOR: u64 = 3;

impl Estimate {
    /// An upper bound on any rewrite's growth, from the bytes in use alone: the whole database
    /// rewritten once. When even that fits, no scan is needed to plan.
    pub fn bound(in_use: u64) -> Estimate {
        Estimate {
            entries: 0,
            bytes: in_use,
            growth_bytes: in_use.saturating_mul(BOUND_FACTOR),
            upper_bound: true,
        }
    }

    /// Adds one entry of `key_len` + `value_len` bytes that will be rewritten.
    pub fn add(&mut self, key_len: usize, value_len: usize) {
        let bytes = (key_len + value_len) as u64;
        self.entries += 1;
        self.bytes += bytes;
        self.growth_bytes += (bytes + PER_ENTRY_OVERHEAD) * FILL_NUMERATOR / FILL_DENOMINATOR;
    }
}

/// Whether [`Estimate::bound`] already fits under `max_db_fraction` of the quota (then
/// [`estimate`]'s scan can be skipped).
pub fn bound_fits(etcd: &Space, max_db_fraction: f64) -> bool {
    let limit = (etcd.quota_bytes as f64 * max_db_fraction.clamp(0.0, 1.0)) as u64;
    let in_use = etcd.largest_in_use();
    !etcd.nospace
        && etcd.largest_file() <= limit
        && in_use.saturating_add(Estimate::bound(in_use).growth_bytes) <= limit
}

/// Scans `prefix` and estimates what a rewrite with `chain` will write (entries that are
/// plaintext or stale). Reads every value once; decrypts to tell stale from current.
pub async fn estimate<S: ReadStore + Sync>(
    store: &S,
    chain: &Chain,
    prefix: &[u8],
) -> Result<Estimate, StoreError> {
    let mut estimate = Estimate::default();
    store
        .scan(prefix, |entry| {
            let state = chain.classify(&entry.value, &entry.key).state;
            if matches!(state, State::Plaintext | State::Stale) {
                estimate.add(entry.key.len(), entry.value.len());
            }
            true
        })
        .await?;
    Ok(estimate)
}

/// How a rewrite will stay under the quota: the JSON `space` object of `atrest rewrite`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpacePlan {
    /// What etcd reported.
    pub etcd: Space,
    /// What the rewrite will write.
    pub estimate: Estimate,
    /// The margin: the database is kept under this percentage of the quota.
    pub max_db_percent: u32,
    /// `quota × max_db_fraction`, in bytes.
    pub limit_bytes: u64,
    /// The fullest member's file, or its bytes in use plus the growth if more, without
    /// compaction.
    pub projected_bytes: u64,
    /// The largest database file seen on any member during the run (checked at every batch,
    /// and at least every [`GUARD_EVERY`] rewritten entries): it stays under `limit_bytes`, or
    /// the run stops ([`crate::rewrite::RewriteError::MarginReached`]).
    pub peak_db_size: u64,
    /// Rewritten entries between two compactions (`None`: one pass, no compaction).
    pub compact_every: Option<u64>,
}

impl SpacePlan {
    /// How many batches (1 without compaction).
    pub fn batches(&self) -> u64 {
        match self.compact_every {
            Some(n) if n > 0 => self.estimate.entries.div_ceil(n).max(1),
            _ => 1,
        }
    }
}

/// Why a rewrite will not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SpaceError {
    /// etcd's `NOSPACE` alarm is active: it refuses writes.
    #[error("etcd's NOSPACE alarm is active ({}): etcd refuses every write, so nothing was written", .alarms.join(", "))]
    NoSpaceAlarm {
        /// The active alarms.
        alarms: Vec<String>,
    },
    /// Not even the smallest batch fits under the margin.
    #[error(
        "the rewrite cannot stay under {limit} bytes ({percent}% of the {quota}-byte quota): \
         the fullest member's database takes {in_use} bytes, and one batch of {MIN_BATCH} \
         entries needs about {batch} more; nothing was written",
        percent = (.fraction * 100.0).round()
    )]
    WontFit {
        /// The fullest member's database file (or bytes in use, if more).
        in_use: u64,
        /// The margin in bytes.
        limit: u64,
        /// The quota.
        quota: u64,
        /// The margin as a fraction.
        fraction: f64,
        /// The growth of the smallest batch.
        batch: u64,
    },
}

impl SpaceError {
    /// What to do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            SpaceError::NoSpaceAlarm { .. } => {
                "free space first: `etcdctl compact` at the current revision, `etcdctl defrag` \
                 on each member, then `etcdctl alarm disarm` (atrest never disarms an alarm); \
                 then run again"
            }
            SpaceError::WontFit { .. } => {
                "free space first: `etcdctl compact` at the current revision and `etcdctl \
                 defrag` on each member, or raise etcd's --quota-backend-bytes (and pass \
                 --quota-bytes if atrest cannot read it from /metrics); --max-db-fraction \
                 raises the margin at your own risk"
            }
        }
    }
}

/// Decides how the rewrite stays under `max_db_fraction` of the quota (see the module docs).
/// `compact_every` is the caller's own batch size (`--compact-every`), used when smaller than
/// what the space needs.
pub fn plan(
    etcd: Space,
    estimate: Estimate,
    max_db_fraction: f64,
    compact_every: Option<u64>,
) -> Result<SpacePlan, SpaceError> {
    if etcd.nospace {
        return Err(SpaceError::NoSpaceAlarm {
            alarms: etcd.alarms.clone(),
        });
    }
    let fraction = max_db_fraction.clamp(0.0, 1.0);
    let limit = (etcd.quota_bytes as f64 * fraction) as u64;
    // etcd's quota counts the database *file*; writes reuse its free pages before growing it.
    let file = etcd.largest_file();
    let in_use = etcd.largest_in_use();
    let projected = file.max(in_use + estimate.growth_bytes);
    let per_entry = estimate
        .growth_bytes
        .checked_div(estimate.entries)
        .unwrap_or(0);
    if file > limit && estimate.entries > 0 {
        // Already over the margin: any batch would only add to it.
        return Err(SpaceError::WontFit {
            in_use: file,
            limit,
            quota: etcd.quota_bytes,
            fraction,
            batch: per_entry * MIN_BATCH,
        });
    }
    let needed = if projected <= limit || estimate.entries == 0 {
        None
    } else {
        // A quarter of the room per batch: the pages a compaction frees are reusable only once
        // etcd's backend has committed the compaction and no reader holds them, so several
        // batches' worth may be live at once (measured: twice the plan with half the room).
        // The run also watches the file at every batch and stops before the margin.
        let room = limit.saturating_sub(file.max(in_use));
        let fits = (room / 4).checked_div(per_entry.max(1)).unwrap_or(0);
        if fits < MIN_BATCH {
            return Err(SpaceError::WontFit {
                in_use: file.max(in_use),
                limit,
                quota: etcd.quota_bytes,
                fraction,
                batch: per_entry * MIN_BATCH,
            });
        }
        Some(fits)
    };
    let compact_every = match (needed, compact_every) {
        (Some(n), Some(asked)) => Some(n.min(asked.max(1))),
        (Some(n), None) => Some(n),
        (None, asked) => asked.map(|a| a.max(1)),
    };
    Ok(SpacePlan {
        etcd,
        estimate,
        max_db_percent: (fraction * 100.0).round() as u32,
        limit_bytes: limit,
        projected_bytes: projected,
        peak_db_size: file,
        compact_every,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etcd::{MemberSpace, QuotaSource};

    fn space(db: u64, in_use: u64, quota: u64) -> Space {
        Space {
            members: vec![MemberSpace {
                endpoint: "http://a:1".into(),
                db_size: db,
                db_size_in_use: in_use,
            }],
            alarms: Vec::new(),
            nospace: false,
            quota_bytes: quota,
            quota_source: QuotaSource::Given,
            quota_note: None,
        }
    }

    fn estimate(entries: u64, value: usize) -> Estimate {
        let mut e = Estimate::default();
        for _ in 0..entries {
            e.add(40, value);
        }
        e
    }

    #[test]
    fn a_rewrite_that_fits_is_one_pass() {
        let p = plan(
            space(10 << 20, 8 << 20, 100 << 20),
            estimate(1000, 2000),
            0.8,
            None,
        )
        .unwrap();
        assert_eq!(p.compact_every, None);
        assert_eq!(p.batches(), 1);
        assert!(p.projected_bytes < p.limit_bytes);
        // The estimate counts more than the values: revisions and bbolt overhead.
        assert!(p.estimate.growth_bytes > 1000 * 2040);
    }

    #[test]
    fn a_rewrite_over_the_margin_is_batched_with_compaction() {
        // 20 MiB in use of a 32 MiB quota (limit 25.6 MiB); 10,000 × 2 KiB to write.
        let p = plan(
            space(22 << 20, 20 << 20, 32 << 20),
            estimate(10_000, 2048),
            0.8,
            None,
        )
        .unwrap();
        let n = p.compact_every.expect("batched");
        assert!((MIN_BATCH..10_000).contains(&n), "{n}");
        // Two batches' growth fits in the room under the margin.
        let per_entry = p.estimate.growth_bytes / p.estimate.entries;
        assert!(20 * 1024 * 1024 + 2 * n * per_entry <= p.limit_bytes);
        assert!(p.batches() > 1);
        // The caller's smaller batch wins; a larger one does not.
        let small = plan(
            space(22 << 20, 20 << 20, 32 << 20),
            estimate(10_000, 2048),
            0.8,
            Some(10),
        );
        assert_eq!(small.unwrap().compact_every, Some(10));
        let large = plan(
            space(22 << 20, 20 << 20, 32 << 20),
            estimate(10_000, 2048),
            0.8,
            Some(1_000_000),
        );
        assert_eq!(large.unwrap().compact_every, Some(n));
    }

    #[test]
    fn a_nearly_full_database_is_refused_with_the_numbers() {
        let err = plan(
            space(26 << 20, 26_700_000, 32 << 20),
            estimate(10_000, 2048),
            0.8,
            None,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SpaceError::WontFit { .. }), "{text}");
        assert!(text.contains("80% of the 33554432-byte quota"), "{text}");
        assert!(text.contains("nothing was written"), "{text}");
        assert!(err.advice().contains("etcdctl defrag"));
    }

    #[test]
    fn issue_22_16_a_file_over_the_margin_is_refused_even_with_free_pages() {
        // 14.6 MiB file, 12.6 MiB in use, 16 MiB quota: the quota counts the file (91%).
        let e = plan(
            space(14_600 << 10, 12_600 << 10, 16 << 20),
            estimate(100, 500),
            0.8,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, SpaceError::WontFit { .. }), "{e}");
    }

    #[test]
    fn an_active_nospace_alarm_is_refused() {
        let mut s = space(10, 10, 100 << 20);
        s.nospace = true;
        s.alarms = vec!["NOSPACE on member 1".into()];
        let err = plan(s, estimate(1, 10), 0.8, None).unwrap_err();
        assert!(matches!(err, SpaceError::NoSpaceAlarm { .. }));
        assert!(err.to_string().contains("NOSPACE on member 1"));
        assert!(err.advice().contains("never disarms"));
    }

    #[test]
    fn the_bound_spares_the_scan_only_when_the_whole_database_fits_again() {
        assert!(bound_fits(&space(100 << 20, 90 << 20, 2 << 30), 0.8));
        assert!(!bound_fits(&space(600 << 20, 500 << 20, 2 << 30), 0.8));
        let p = plan(
            space(100 << 20, 90 << 20, 2 << 30),
            Estimate::bound(90 << 20),
            0.8,
            None,
        )
        .unwrap();
        assert_eq!(p.compact_every, None);
        assert!(p.estimate.upper_bound);
    }

    #[test]
    fn nothing_to_write_needs_no_room() {
        let p = plan(
            space(30 << 20, 30 << 20, 32 << 20),
            Estimate::default(),
            0.8,
            None,
        )
        .unwrap();
        assert_eq!(p.compact_every, None);
    }
}
