//! Scans: counting keys, splitting a prefix at namespace boundaries, and reading pages (see the
//! module docs of [`super`], "Pages").

use std::sync::atomic::Ordering;

use etcd_client::GetOptions;
use tokio::task::JoinHandle;

use super::error::Kind;
use super::{entry_from, lock, EtcdError, EtcdStore};
use crate::store::{prefix_end, Page};

/// Keys in the first page, and the fewest a later page asks for. etcd 3.4 pays for the whole
/// remaining range on every page, so pages of fewer than about 1,000 keys make a scan quadratic.
pub const PAGE_LIMIT: i64 = 1000;

/// The most keys a page asks for.
pub const MAX_PAGE_LIMIT: i64 = 10_000;

/// The size a page aims at (keys and values): 1 MiB, about 2,900 Secrets of 300 bytes (a 2 KiB
/// Secret gets [`PAGE_LIMIT`]). Small enough that pages are bounded by bytes, not by how many
/// keys a namespace range holds, so a scan's memory is the same at 100,000 entries as at
/// 1,000,000: measured on etcd 3.4 with 300-byte Secrets, peak RSS 22.5 / 21.8 MiB (`status`,
/// 100,000 / 1,000,000) and 27.2 / 28.6 MiB (`rewrite`), where 8 MiB pages gave 21.9 / 28.7 and
/// 31.4 / 41.1 MiB. The price: `audit` of 1,000,000 in 3.57 s instead of 3.19 s with 2 MiB
/// pages (more requests, each walking the rest of its range on etcd 3.4), still under
/// etcdctl's dump (0.79× in docs/performance.md).
pub const PAGE_TARGET_BYTES: usize = 1024 * 1024;

/// About how many keys one bounded range of a scan holds (see [`EtcdStore`]'s splits): four
/// pages' worth at 2 KiB a value, about one and a half at 300 bytes. Ranges of 1,000 keys were no faster at
/// 2 KiB (0.61 s against 0.63 s for 100,000 Secrets) and slower for small values (3.22 s
/// against 2.92 s at 1,000,000): more requests.
pub const RANGE_KEYS: u64 = 4000;

/// The most namespaces read to split a scan (keys only).
const MAX_NAMESPACES: i64 = 100_000;

/// The most pages requested ahead of a scan at once (see "Pages" in the [module docs](super)).
pub const MAX_READ_AHEAD: usize = 3;

/// The most bytes of pages requested ahead of a scan at once: with pages of about
/// [`PAGE_TARGET_BYTES`], two of them (16 MiB held 68 MiB at 2 KiB a value, over the 64 MiB
/// budget).
pub const READ_AHEAD_BYTES: usize = 2 * PAGE_TARGET_BYTES;

/// The keys that cut a scan of `prefix` into bounded ranges (see [`EtcdStore::find_splits`]).
pub(super) struct Splits {
    prefix: Vec<u8>,
    keys: Vec<Vec<u8>>,
}

/// A page requested before the scan asked for it: the range `[start, end)` at `revision`.
struct Pending {
    start: Vec<u8>,
    end: Vec<u8>,
    revision: i64,
    task: JoinHandle<Result<Page, EtcdError>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A page nobody will ask for any more (the scan stopped, or went elsewhere).
        self.task.abort();
    }
}

/// The pages a scan will ask for next, requested while it visits the current one.
///
/// A scan asks for its pages one after the other, each pinned to the first page's revision, so
/// its next requests are known before it asks: the rest of the current range (after the page's
/// last key) when etcd said `more`, and the first page of each following range (the ranges
/// between splits are disjoint). Each is sent as its own task as soon as the page before it
/// is handed over, so etcd works on the next pages (and the client decodes them, on another
/// worker thread) while the caller classifies this one; at most [`MAX_READ_AHEAD`] pages and
/// about [`READ_AHEAD_BYTES`] are in flight. A request is used only when the scan asks for
/// exactly that range at exactly that revision, so the pages, their order and the revision are
/// the same as without read-ahead (an MVCC read at a pinned revision gives the same answer
/// whenever it is sent); anything else is dropped (and its task aborted). One difference: a
/// page read ahead before a compaction passed the scan's revision is still served (it holds
/// that revision's keys), where reading it then would have failed with
/// [`EtcdError::Compacted`]; the pages not yet read still fail.
///
/// The root of a `*.*` scan is not read ahead (see [`EtcdStore::read_page`]). Once a range is
/// known to be exhausted, the empty request for the rest of it is skipped too.
#[derive(Default)]
pub(super) struct ReadAhead {
    /// Requests in flight or done, in key order (the ranges are disjoint).
    pending: Vec<Pending>,
    /// A range etcd said holds no more keys at a revision: `[start, end)` at `revision`. The
    /// scan's next page (after the last key) would start there; it goes on at `end` instead,
    /// without a request.
    exhausted: Option<(Vec<u8>, Vec<u8>, i64)>,
}

impl EtcdStore {
    pub(super) async fn count_keys(&self, prefix: &[u8]) -> Result<u64, EtcdError> {
        let key = range_start(prefix, None);
        let options = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_count_only();
        let resp = self
            .call(|m| {
                let mut kv = m.kv.clone();
                let (key, options) = (key.clone(), options.clone());
                async move { kv.get(key, Some(options)).await }
            })
            .await
            .map_err(|f| f.into_error("count"))?;
        let count = u64::try_from(resp.count()).unwrap_or_default();
        *lock(&self.inner.last_count) = Some((prefix.to_vec(), count));
        Ok(count)
    }

    /// Keys that split a scan of `prefix` into bounded ranges of about [`RANGE_KEYS`] keys,
    /// sorted, strictly inside the prefix's range.
    ///
    /// etcd 3.4 walks its index over the whole rest of a range on every paged request, before
    /// applying the limit, so a scan paged over one range of N keys walks about
    /// N² / (2 × page keys) index entries: at 50,000 Secrets, six walks over everything, more
    /// than reading the values costs it. A page whose range ends at the next split walks only
    /// that range. The splits come from the namespaces (`<parent>/namespaces/<name>` gives the
    /// split `<prefix><name>/`), as many as there are ranges, evenly among them: Kubernetes
    /// stores every namespaced object under `<prefix><namespace>/`. Any set of splits is
    /// correct — the ranges between them cover the prefix exactly — the namespaces only make
    /// them even. No namespaces (a cluster-scoped resource, a custom prefix): no splits, one
    /// range, as before.
    async fn find_splits(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, EtcdError> {
        let Some(ns_prefix) = namespaces_prefix(prefix) else {
            return Ok(Vec::new());
        };
        let cached = lock(&self.inner.last_count)
            .as_ref()
            .filter(|(p, _)| p == prefix)
            .map(|(_, n)| *n);
        let total = match cached {
            Some(n) => n,
            None => self.count_keys(prefix).await?,
        };
        let ranges = total.div_ceil(RANGE_KEYS);
        if ranges < 2 {
            return Ok(Vec::new());
        }
        let options = GetOptions::new()
            .with_range(prefix_end(&ns_prefix))
            .with_keys_only()
            .with_limit(MAX_NAMESPACES);
        let mut resp = self
            .call(|m| {
                let mut kv = m.kv.clone();
                let (key, options) = (ns_prefix.clone(), options.clone());
                async move { kv.get(key, Some(options)).await }
            })
            .await
            .map_err(|f| f.into_error("range"))?;
        let names = resp.take_kvs().into_iter().filter_map(|kv| {
            kv.key()
                .strip_prefix(ns_prefix.as_slice())
                .map(<[u8]>::to_vec)
        });
        Ok(pick_splits(prefix, names, ranges))
    }

    /// The split after which a page starting at `start` must stop (`None`: the prefix's end).
    fn split_after(&self, prefix: &[u8], start: &[u8]) -> Option<Vec<u8>> {
        let guard = lock(&self.inner.splits);
        let splits = guard.as_ref().filter(|s| s.prefix == prefix)?;
        let i = splits.keys.partition_point(|s| s.as_slice() <= start);
        splits.keys.get(i).cloned()
    }

    /// One page of a scan: from just after `after` (or the prefix) to the next split (see
    /// [`EtcdStore::find_splits`]), or to the prefix's end. The first page of a scan finds the
    /// splits. Empty ranges are skipped, so a page is empty only at the end. Once the revision
    /// is pinned, the next pages are requested while the caller visits this one ([`ReadAhead`]).
    pub(super) async fn read_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        mut revision: Option<i64>,
    ) -> Result<Page, EtcdError> {
        // A scan's first page finds the splits; so does a page of another prefix than the
        // splits were found for (a `*.*` audit pages the root, then the rest of one resource's
        // prefix after a key, then the root again: each resource's prefix gets its own splits).
        let other_prefix = lock(&self.inner.splits)
            .as_ref()
            .is_none_or(|s| s.prefix != prefix);
        if after.is_none() || other_prefix {
            // Best effort: without splits the scan is one range, as correct and slower.
            let splits = self.find_splits(prefix).await.unwrap_or_default();
            *lock(&self.inner.splits) = Some(Splits {
                prefix: prefix.to_vec(),
                keys: splits,
            });
        }
        // The root (`/registry/`, no namespaces beside it) is read one page at a time: a `*.*`
        // scan goes on in the segment of the page's last key (`scan_pinned`), so the root's
        // next page would be a wasted walk over the rest of the keyspace.
        let ahead = namespaces_prefix(prefix).is_some();
        let end = prefix_end(prefix);
        let mut start = range_start(prefix, after);
        loop {
            let split = self.split_after(prefix, &start);
            let range_end = split.clone().unwrap_or_else(|| end.clone());
            let known_empty = revision.is_some_and(|r| self.is_exhausted(&start, &range_end, r));
            let page = if known_empty {
                Page {
                    entries: Vec::new(),
                    revision: revision.unwrap_or_default(),
                    more: false,
                }
            } else {
                let page = self.fetch(&start, &range_end, revision).await?;
                if !page.more {
                    let from = page
                        .entries
                        .last()
                        .map_or_else(|| start.clone(), |e| range_start(prefix, Some(&e.key)));
                    lock(&self.inner.ahead).exhausted =
                        Some((from, range_end.clone(), page.revision));
                }
                if ahead {
                    self.read_ahead(prefix, &page, &range_end, &end);
                }
                page
            };
            let Some(split) = split else {
                return Ok(page);
            };
            revision = Some(page.revision);
            if !page.entries.is_empty() {
                // Keys may follow in the next ranges.
                return Ok(Page { more: true, ..page });
            }
            start = split;
        }
    }

    /// Whether etcd said `[start, end)` holds no keys at `revision`.
    fn is_exhausted(&self, start: &[u8], end: &[u8], revision: i64) -> bool {
        lock(&self.inner.ahead)
            .exhausted
            .as_ref()
            .is_some_and(|(s, e, r)| s == start && e == end && *r == revision)
    }

    /// The page of `[start, end)` at `revision`: the one requested ahead if there is one (a
    /// failed one is asked for again, with failover), else read now.
    async fn fetch(
        &self,
        start: &[u8],
        end: &[u8],
        revision: Option<i64>,
    ) -> Result<Page, EtcdError> {
        let task = revision.and_then(|r| {
            let mut ahead = lock(&self.inner.ahead);
            // Requests before this one will not be asked for: drop them (and abort them).
            let i = ahead
                .pending
                .iter()
                .position(|p| p.start == start && p.end == end && p.revision == r);
            let keep_from = i.unwrap_or_else(|| {
                ahead
                    .pending
                    .partition_point(|p| p.revision == r && p.start.as_slice() < start)
            });
            ahead.pending.drain(..keep_from);
            if ahead.pending.first().is_some_and(|p| p.revision != r) {
                ahead.pending.clear();
            }
            i.map(|_| ahead.pending.remove(0))
        });
        if let Some(mut pending) = task {
            if let Ok(Ok(page)) = (&mut pending.task).await {
                return Ok(page);
            }
        }
        self.read_range(start, end, revision).await
    }

    /// Requests the pages a scan of `prefix` will ask for after `page` (the range up to
    /// `range_end`; `end` is the prefix's end), as many as [`ReadAhead`] allows.
    fn read_ahead(&self, prefix: &[u8], page: &Page, range_end: &[u8], end: &[u8]) {
        let revision = page.revision;
        let bytes: usize = page
            .entries
            .iter()
            .map(|e| e.key.len() + e.value.len())
            .sum();
        let depth = (READ_AHEAD_BYTES / bytes.max(1)).clamp(1, MAX_READ_AHEAD);
        let mut next: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(depth);
        if page.more {
            if let Some(last) = page.entries.last() {
                next.push((range_start(prefix, Some(&last.key)), range_end.to_vec()));
            }
        }
        // The first page of each following range.
        let mut from = range_end.to_vec();
        while next.len() < depth && from.as_slice() < end {
            let to = self
                .split_after(prefix, &from)
                .unwrap_or_else(|| end.to_vec());
            next.push((std::mem::replace(&mut from, to.clone()), to));
        }
        let mut ahead = lock(&self.inner.ahead);
        ahead.pending.retain(|p| p.revision == revision);
        for (start, range_end) in next {
            if ahead.pending.len() >= depth {
                break;
            }
            let i = ahead
                .pending
                .partition_point(|p| p.start.as_slice() < start.as_slice());
            if ahead.pending.get(i).is_some_and(|p| p.start == start) {
                continue;
            }
            let store = self.clone();
            let (s, e) = (start.clone(), range_end.clone());
            let task = tokio::spawn(async move { store.read_range(&s, &e, Some(revision)).await });
            ahead.pending.insert(
                i,
                Pending {
                    start,
                    end: range_end,
                    revision,
                    task,
                },
            );
        }
    }

    /// Keys in `[key, end)` at `revision`, as many as the page limit allows.
    async fn read_range(
        &self,
        key: &[u8],
        end: &[u8],
        revision: Option<i64>,
    ) -> Result<Page, EtcdError> {
        let (key, end) = (key.to_vec(), end.to_vec());
        let mut limit = self
            .inner
            .page_limit
            .load(Ordering::Relaxed)
            .min(self.inner.max_page_limit.load(Ordering::Relaxed));
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
            if let Some(revision) = revision {
                options = options.with_revision(revision);
            }
            let result = self
                .call(|m| {
                    let mut kv = m.kv.clone();
                    let (key, options) = (key.clone(), options.clone());
                    async move { kv.get(key, Some(options)).await }
                })
                .await;
            match result {
                Ok(mut resp) => {
                    // At a pinned revision the header still carries the store's current one.
                    let revision =
                        revision.unwrap_or_else(|| resp.header().map_or(0, |h| h.revision()));
                    let kvs = resp.take_kvs();
                    let bytes = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
                    if let Some(next) = next_page_limit(kvs.len(), bytes) {
                        self.inner.page_limit.store(next, Ordering::Relaxed);
                    }
                    let entries = kvs.into_iter().map(entry_from).collect();
                    return Ok(Page {
                        entries,
                        revision,
                        more: resp.more(),
                    });
                }
                Err(f) if f.kind == Kind::TooLarge && limit > 1 => {
                    limit = (limit / 2).max(1);
                    self.inner
                        .max_page_limit
                        .fetch_min(limit, Ordering::Relaxed);
                }
                Err(f) if f.kind == Kind::Compacted => {
                    return Err(EtcdError::Compacted {
                        endpoint: f.endpoint,
                        revision: revision.unwrap_or_default(),
                    })
                }
                Err(f) => return Err(f.into_error("range")),
            }
        }
    }
}

/// Where the namespaces are stored beside a resource prefix: `/registry/secrets/` →
/// `/registry/namespaces/` (`None` for a prefix without a parent — the root `/registry/`
/// itself — or the namespaces' own).
fn namespaces_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let trimmed = prefix.strip_suffix(b"/")?;
    let parent_end = trimmed
        .iter()
        .rposition(|&b| b == b'/')
        .filter(|&i| i > 0)?;
    let mut ns = trimmed[..=parent_end].to_vec();
    ns.extend_from_slice(b"namespaces/");
    (ns != prefix).then_some(ns)
}

/// Up to `ranges - 1` splits for `prefix`, evenly among the namespaces' boundaries
/// (`<prefix><name>/`), sorted and strictly inside the prefix's range.
fn pick_splits(prefix: &[u8], names: impl Iterator<Item = Vec<u8>>, ranges: u64) -> Vec<Vec<u8>> {
    let end = prefix_end(prefix);
    let mut bounds: Vec<Vec<u8>> = names
        .filter(|n| !n.is_empty())
        .map(|n| [prefix, &n, b"/"].concat())
        .filter(|b| b.as_slice() > prefix && b.as_slice() < end.as_slice())
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let want = usize::try_from(ranges.saturating_sub(1)).unwrap_or(usize::MAX);
    if bounds.len() <= want {
        return bounds;
    }
    // The i-th of `want` splits sits at boundary floor(i × len / (want + 1)), i = 1..=want.
    let len = bounds.len();
    let mut picked: Vec<Vec<u8>> = (1..=want)
        .map(|i| std::mem::take(&mut bounds[i * len / (want + 1)]))
        .collect();
    picked.dedup();
    picked
}

/// How many keys the next page should ask for after a page of `keys` keys and `bytes` bytes:
/// about [`PAGE_TARGET_BYTES`], between [`PAGE_LIMIT`] and [`MAX_PAGE_LIMIT`] (`None` for an
/// empty page: nothing learnt).
fn next_page_limit(keys: usize, bytes: usize) -> Option<i64> {
    let per_key = bytes.checked_div(keys)?.max(1);
    let fit = i64::try_from(PAGE_TARGET_BYTES / per_key).unwrap_or(MAX_PAGE_LIMIT);
    Some(fit.clamp(PAGE_LIMIT, MAX_PAGE_LIMIT))
}

/// The first key of a page: just after `after`, or the prefix itself (`\0` for all keys).
pub(super) fn range_start(prefix: &[u8], after: Option<&[u8]>) -> Vec<u8> {
    match after {
        Some(after) => {
            let mut key = Vec::with_capacity(after.len() + 1);
            key.extend_from_slice(after);
            key.push(0);
            key
        }
        None if prefix.is_empty() => vec![0],
        None => prefix.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_live_beside_the_resource() {
        assert_eq!(
            namespaces_prefix(b"/registry/secrets/").as_deref(),
            Some(&b"/registry/namespaces/"[..])
        );
        assert_eq!(
            namespaces_prefix(b"/custom/prefix/configmaps/").as_deref(),
            Some(&b"/custom/prefix/namespaces/"[..])
        );
        assert_eq!(namespaces_prefix(b"/registry/namespaces/"), None);
        assert_eq!(
            namespaces_prefix(b"/registry/"),
            None,
            "the root has no parent"
        );
        assert_eq!(namespaces_prefix(b"secrets/"), None);
        assert_eq!(namespaces_prefix(b"/registry/secrets"), None);
        assert_eq!(namespaces_prefix(b""), None);
    }

    #[test]
    fn splits_are_sorted_inside_the_prefix_and_evenly_picked() {
        let names = |list: &[&str]| {
            list.iter()
                .map(|n| n.as_bytes().to_vec())
                .collect::<Vec<_>>()
                .into_iter()
        };
        let p = b"/registry/secrets/";
        let split = |n: &str| format!("/registry/secrets/{n}/").into_bytes();
        // Fewer boundaries than wanted: all of them, sorted by the boundary ("a-b/" < "a/").
        assert_eq!(
            pick_splits(p, names(&["a", "a-b", "", "b", "a"]), 10),
            vec![split("a-b"), split("a"), split("b")]
        );
        // More: `ranges - 1` of them, spread out.
        let many: Vec<String> = (0..100).map(|i| format!("ns{i:03}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let picked = pick_splits(p, names(&refs), 4);
        assert_eq!(picked, vec![split("ns025"), split("ns050"), split("ns075")]);
        assert_eq!(pick_splits(p, names(&refs), 1), Vec::<Vec<u8>>::new());
        // The empty prefix (open-ended range, end "\0") gets no splits.
        assert!(pick_splits(b"", names(&["a", "b"]), 5).is_empty());
    }

    #[test]
    fn pages_aim_at_a_byte_size_within_key_limits() {
        // 2 KiB Secrets: the floor; 300 bytes (and a 60-byte key): about 2,900 a page.
        assert_eq!(next_page_limit(1000, 2_100_000), Some(PAGE_LIMIT));
        assert_eq!(next_page_limit(1000, 360_000), Some(2912));
        // Tiny values: capped.
        assert_eq!(next_page_limit(1000, 50_000), Some(MAX_PAGE_LIMIT));
        // Large values: never below the floor that keeps etcd 3.4 from going quadratic.
        assert_eq!(next_page_limit(1000, 500_000_000), Some(PAGE_LIMIT));
        assert_eq!(next_page_limit(0, 0), None);
        assert_eq!(next_page_limit(3, 0), Some(MAX_PAGE_LIMIT));
    }

    #[test]
    fn page_ranges_start_after_the_last_key() {
        assert_eq!(range_start(b"/p/", None), b"/p/");
        assert_eq!(range_start(b"/p/", Some(b"/p/a")), b"/p/a\0");
        assert_eq!(range_start(b"", None), b"\0");
    }
}
