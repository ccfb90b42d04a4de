//! What removing keys would do to a store: the prune guard of `config rotate --stage prune`.

use serde::Serialize;

use super::{classify, Auditor, ReportEntry};
use crate::resource::{Route, Target};
use crate::store::{scan_pinned, ReadStore, StoreError};
use crate::transform::State;

/// What removing keys (`config rotate --stage prune`) would do to a store: the config `before`
/// the edit against the config `after` it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PruneCheck {
    /// Entries `before` reads and `after` cannot: the prune must wait until they are
    /// rewritten. Empty means the change is safe for this store.
    pub blocked: Vec<ReportEntry>,
    /// Entries no key reads either way that name a key `before` has and `after` lacks: already
    /// undecryptable, they are lost for good once that key is gone (a key that was wrong for
    /// them cannot be tried again).
    pub lost: Vec<ReportEntry>,
}

/// Scans what `before` reads once, at one revision, and sorts out what reading it with `after`
/// instead would do (see [`PruneCheck`]). `before` and `after` are the same kind of target over
/// the config before and after the edit: one prefix with its chain, or every resource (a prune
/// edits one `resources` element, which may serve many resources: `[secrets, configmaps]`,
/// `*.apps`, `*.*`). Keys of resources `before` does not cover are not read.
pub async fn prune_check<S: ReadStore + Sync>(
    store: &S,
    before: &Target,
    after: &Target,
) -> Result<PruneCheck, StoreError> {
    let mut auditor = Auditor::new(before.report_prefix());
    let mut check = PruneCheck::default();
    scan_pinned(store, before.root(), before.prefixes(), |entry| {
        let Route::Covered {
            info,
            chain: Some(was),
        } = before.route(&entry.key)
        else {
            return;
        };
        let now = was.classify(&entry.value, &entry.key);
        let then = match after.route(&entry.key) {
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
            check.blocked.push(auditor.add(Some(was), info, &entry));
        } else if now.state == State::Undecryptable && then.state == State::UnknownKey {
            check.lost.push(auditor.add(Some(was), info, &entry));
        }
    })
    .await?;
    Ok(check)
}
