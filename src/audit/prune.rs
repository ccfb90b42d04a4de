//! What removing keys would do to a store: the prune guard of `config rotate --stage prune`.
//!
//! A prune of a key still in use can block on every entry of the store, so the check keeps
//! only counts and the first [`PRUNE_SAMPLE`] entries of each kind; every entry goes to a
//! [`PruneObserver`] as it is found.

use serde::Serialize;

use super::{classify, Auditor, NoProgress, ReportEntry};
use crate::resource::{Route, Target};
use crate::store::{scan_pinned, ReadStore, StoreError};
use crate::transform::State;

/// How many blocked and how many lost entries a [`PruneCheck`] keeps: the first ones, in key
/// order. The counts cover every entry, and a [`PruneObserver`] sees every one.
pub const PRUNE_SAMPLE: usize = 50;

/// What removing keys (`config rotate --stage prune`) would do to a store: the config `before`
/// the edit against the config `after` it. Counts and a bounded sample: memory does not grow
/// with the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PruneCheck {
    /// Entries `before` reads and `after` cannot: the prune must wait until they are
    /// rewritten. 0 means the change is safe for this store ([`PruneCheck::is_safe`]).
    pub blocked_count: u64,
    /// The first [`PRUNE_SAMPLE`] of those entries, in key order (every one goes to
    /// [`PruneObserver::blocked`]).
    pub blocked_sample: Vec<ReportEntry>,
    /// Entries no key reads either way that name a key `before` has and `after` lacks: already
    /// undecryptable, they are lost for good once that key is gone (a key that was wrong for
    /// them cannot be tried again).
    pub lost_count: u64,
    /// The first [`PRUNE_SAMPLE`] of those entries, in key order (every one goes to
    /// [`PruneObserver::lost`]).
    pub lost_sample: Vec<ReportEntry>,
}

impl PruneCheck {
    /// Whether the prune is safe for this store: no entry is blocked, whatever the sample holds.
    pub fn is_safe(&self) -> bool {
        self.blocked_count == 0
    }
}

/// Where [`prune_check`] sends each entry it sorts out, as it finds it (in key order). Every
/// method has a no-op default; they are called from the task running the check, so they should
/// return quickly.
pub trait PruneObserver: Send + Sync {
    /// An entry `before` reads and `after` cannot (counted in [`PruneCheck::blocked_count`]).
    fn blocked(&self, _e: &ReportEntry) {}
    /// An undecryptable entry that names a key the edit removes (counted in
    /// [`PruneCheck::lost_count`]).
    fn lost(&self, _e: &ReportEntry) {}
}

impl PruneObserver for NoProgress {}

/// Counts `e`, keeps it while the sample has room, and hands it to `observe`.
fn note(
    count: &mut u64,
    sample: &mut Vec<ReportEntry>,
    e: ReportEntry,
    observe: impl Fn(&ReportEntry),
) {
    *count += 1;
    observe(&e);
    if sample.len() < PRUNE_SAMPLE {
        sample.push(e);
    }
}

/// Scans what `before` reads once, at one revision, and sorts out what reading it with `after`
/// instead would do (see [`PruneCheck`]); each blocked or lost entry goes to `observer` as it
/// is found. `before` and `after` are the same kind of target over the config before and after
/// the edit: one prefix with its chain, or every resource (a prune edits one `resources`
/// element, which may serve many resources: `[secrets, configmaps]`, `*.apps`, `*.*`). Keys of
/// resources `before` does not cover are not read.
pub async fn prune_check<S: ReadStore + Sync>(
    store: &S,
    before: &Target,
    after: &Target,
    observer: &dyn PruneObserver,
) -> Result<PruneCheck, StoreError> {
    let mut auditor = Auditor::new(before.report_prefix());
    let mut check = PruneCheck::default();
    let (mut before_routes, mut after_routes) = (before.router(), after.router());
    scan_pinned(store, before.root(), before.prefixes(), |entry| {
        let Route::Covered {
            info,
            chain: Some(was),
        } = before_routes.route(&entry.key)
        else {
            return;
        };
        let now = was.classify(&entry.value, &entry.key);
        let then = match after_routes.route(&entry.key) {
            Route::Covered {
                chain: Some(chain), ..
            } => chain.classify(&entry.value, &entry.key),
            // Not covered any more: kube-apiserver reads it as stored (plaintext only).
            _ => {
                let mut c = classify(None, &entry.value, &entry.key);
                c.readable = Some(c.state == State::Plaintext);
                c
            }
        };
        if now.readable == Some(true) && then.readable != Some(true) {
            let e = auditor.add(Some(was), info, &entry);
            note(
                &mut check.blocked_count,
                &mut check.blocked_sample,
                e,
                |e| observer.blocked(e),
            );
        } else if now.state == State::Undecryptable && then.state == State::UnknownKey {
            let e = auditor.add(Some(was), info, &entry);
            note(&mut check.lost_count, &mut check.lost_sample, e, |e| {
                observer.lost(e)
            });
        }
    })
    .await?;
    Ok(check)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::provider::{aescbc::AesCbc, KeyMaterial, Provider};
    use crate::store::{prefix_end, Entry, Page};
    use crate::transform::Chain;

    const PREFIX: &str = "/registry/secrets/";

    /// A store in memory, paged ten keys at a time.
    struct MemStore(BTreeMap<Vec<u8>, Entry>);

    impl ReadStore for MemStore {
        fn source(&self) -> String {
            "memory".to_owned()
        }

        async fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
            Ok(self.0.range(prefix.to_vec()..prefix_end(prefix)).count() as u64)
        }

        async fn page(
            &self,
            prefix: &[u8],
            after: Option<&[u8]>,
            _revision: Option<i64>,
        ) -> Result<Page, StoreError> {
            Ok(crate::store::page_of(&self.0, prefix, after, 1))
        }
    }

    fn cbc(name: &str, byte: u8) -> Provider {
        Provider::Aescbc(AesCbc::new(name, &KeyMaterial::new(vec![byte; 32])).unwrap())
    }

    /// Records every entry it is given.
    #[derive(Default)]
    struct Seen {
        blocked: Mutex<Vec<String>>,
        lost: Mutex<Vec<String>>,
    }

    impl PruneObserver for Seen {
        fn blocked(&self, e: &ReportEntry) {
            self.blocked.lock().unwrap().push(e.key.clone());
        }
        fn lost(&self, e: &ReportEntry) {
            self.lost.lock().unwrap().push(e.key.clone());
        }
    }

    /// Issue 21: a prune that blocks on more entries than the sample holds keeps the first
    /// [`PRUNE_SAMPLE`] of each kind (in key order) and counts every one; the observer sees
    /// every one; and the check is unsafe whatever the sample holds.
    #[tokio::test]
    async fn issue_21_the_check_keeps_counts_and_a_bounded_sample() {
        let key1 = Chain::from_providers("secrets", vec![cbc("key1", 1)]).unwrap();
        let before = Chain::from_providers("secrets", vec![cbc("key2", 2), cbc("key1", 1)]);
        let after = Chain::from_providers("secrets", vec![cbc("key2", 2)]);
        let (blocked, lost) = (3 * PRUNE_SAMPLE, PRUNE_SAMPLE + 7);
        let mut keys = BTreeMap::new();
        let mut put = |name: String, value: Vec<u8>| {
            let key = format!("{PREFIX}default/{name}").into_bytes();
            let entry = Entry {
                key: key.clone(),
                value,
                mod_revision: 1,
                create_revision: 1,
                version: 1,
                lease: 0,
            };
            keys.insert(key, entry);
        };
        // Inserted out of key order: the sample is the first in key order, not in any other.
        for i in (0..blocked).rev() {
            let key = format!("{PREFIX}default/b{i:04}");
            put(
                format!("b{i:04}"),
                key1.encrypt(b"k8s\0v", key.as_bytes()).unwrap(),
            );
        }
        for i in 0..lost {
            // key1's prefix, a ciphertext no key can read (not a whole number of blocks).
            let mut value = b"k8s:enc:aescbc:v1:key1:".to_vec();
            value.extend_from_slice(&[0; 21]);
            put(format!("l{i:04}"), value);
        }
        // Current under key2: neither blocked nor lost.
        let current = Chain::from_providers("secrets", vec![cbc("key2", 2)]).unwrap();
        put("c".to_owned(), current.encrypt(b"k8s\0v", b"x").unwrap());
        let store = MemStore(keys);
        let seen = Seen::default();
        let check = prune_check(
            &store,
            &Target::prefix(PREFIX, before),
            &Target::prefix(PREFIX, after),
            &seen,
        )
        .await
        .unwrap();

        assert_eq!(check.blocked_count, blocked as u64);
        assert_eq!(check.lost_count, lost as u64);
        assert!(!check.is_safe());
        assert_eq!(check.blocked_sample.len(), PRUNE_SAMPLE);
        assert_eq!(check.lost_sample.len(), PRUNE_SAMPLE);
        let first: Vec<String> = (0..PRUNE_SAMPLE)
            .map(|i| format!("{PREFIX}default/b{i:04}"))
            .collect();
        let sample: Vec<&str> = check
            .blocked_sample
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(sample, first, "the first blocked entries, in key order");
        assert!(check
            .lost_sample
            .iter()
            .all(|e| e.state == State::Undecryptable));

        let observed = seen.blocked.lock().unwrap();
        assert_eq!(
            observed.len(),
            blocked,
            "the observer sees every blocked entry"
        );
        assert!(observed.windows(2).all(|w| w[0] < w[1]), "in key order");
        assert_eq!(seen.lost.lock().unwrap().len(), lost);
    }

    #[tokio::test]
    async fn a_prune_nothing_needs_is_safe() {
        let before = Chain::from_providers("secrets", vec![cbc("key2", 2), cbc("key1", 1)]);
        let after = Chain::from_providers("secrets", vec![cbc("key2", 2)]);
        let current = Chain::from_providers("secrets", vec![cbc("key2", 2)]).unwrap();
        let key = format!("{PREFIX}default/c").into_bytes();
        let value = current.encrypt(b"k8s\0v", &key).unwrap();
        let entry = Entry {
            key: key.clone(),
            value,
            mod_revision: 1,
            create_revision: 1,
            version: 1,
            lease: 0,
        };
        let store = MemStore(BTreeMap::from([(key, entry)]));
        let check = prune_check(
            &store,
            &Target::prefix(PREFIX, before),
            &Target::prefix(PREFIX, after),
            &NoProgress,
        )
        .await
        .unwrap();
        assert!(check.is_safe());
        assert_eq!((check.blocked_count, check.lost_count), (0, 0));
        assert!(check.blocked_sample.is_empty() && check.lost_sample.is_empty());
    }
}
