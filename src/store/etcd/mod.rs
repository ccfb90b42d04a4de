//! The live etcd store: etcd-client over one or more endpoints, with TLS and failover.
//!
//! # Connecting
//!
//! [`EtcdStore::connect`] builds one etcd client per endpoint and asks each for its `status()`
//! before it returns. etcd-client's own `connect` is lazy (it returns at once even when nothing
//! listens), so without that probe a wrong address or a missing certificate would only show up
//! at the first page. Endpoints that fail the probe are left out (the caller can report them
//! through [`EtcdStore::unhealthy`]); when none answers, `connect` fails with the first
//! endpoint's error, classified as [`EtcdError::Unreachable`], [`EtcdError::Tls`],
//! [`EtcdError::Auth`] or [`EtcdError::Request`]. Every error says what to do about it
//! ([`EtcdError::advice`]).
//!
//! # Failover
//!
//! etcd-client balances requests over its endpoints but does not fail over: with one dead member
//! among three, about a third of the requests fail. Here every request goes to one preferred
//! endpoint; a request that fails because the endpoint is unreachable (`Unavailable`, a transport
//! error, a timeout, "no leader") is sent again to the next endpoint, going round all of them up
//! to [`FAILOVER_ROUNDS`] times and for at least [`FAILOVER_WINDOW`], with a growing pause between
//! rounds (0.1 s doubling to 1.6 s), enough for a leader election on a loaded machine. The endpoint that answered becomes the preferred one. Requests
//! are safe to repeat: reads are reads, and a repeated compare-and-put whose first attempt did
//! apply fails its compare and returns the key's new state.
//!
//! # Pages
//!
//! A page is the range `[after + "\0" (or prefix), next split)` limited to a number of keys, at a
//! revision pinned by the first page. The splits cut the prefix into ranges of about
//! [`RANGE_KEYS`] keys at namespace boundaries (`EtcdStore::find_splits`); without namespaces
//! there are none and a page runs to `prefix_end`. The first page asks for [`PAGE_LIMIT`] keys; every later
//! page asks for as many as fit in about [`PAGE_TARGET_BYTES`] at the average size of the last
//! page, between [`PAGE_LIMIT`] and [`MAX_PAGE_LIMIT`]. Small pages are slow on etcd 3.4, where
//! every range walks the index over the whole rest of the range before applying its limit: over
//! 50,000 Secrets of 2 KiB, pages of 1,000 keys over the whole prefix cost etcd about three times
//! the CPU of one unpaged read (docs/performance.md); within ranges of [`RANGE_KEYS`] the walks
//! are short. The byte target keeps memory bounded whatever the value sizes. Responses of up to
//! [`EtcdOptions::max_page_bytes`] are accepted (tonic's default limit is 4 MiB: about 2,000
//! values of 2 KiB). A page over that is fetched again with half the limit, and the smaller
//! limit becomes a ceiling for the store's lifetime.
//!
//! Once the first page has pinned the revision, the next pages are requested while the caller
//! visits the current one: the rest of the range, and the first page of each following range,
//! up to [`MAX_READ_AHEAD`] pages and [`READ_AHEAD_BYTES`] in flight (`scan::ReadAhead`). etcd
//! serves them concurrently (on several cores) while atrest classifies, and the scan still
//! sees every key once, in key order, at one revision.

mod backup;
mod error;
mod failover;
mod options;
mod scan;
mod space;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, KeyValue, KvClient, PutOptions,
    Txn, TxnOp, TxnOpResponse,
};

pub use error::{EtcdError, TlsProblem};
pub use failover::{FAILOVER_ROUNDS, FAILOVER_WINDOW};
pub use options::{EtcdOptions, DEFAULT_ENDPOINT, DEFAULT_MAX_PAGE_BYTES};
pub use scan::{
    MAX_PAGE_LIMIT, MAX_READ_AHEAD, PAGE_LIMIT, PAGE_TARGET_BYTES, RANGE_KEYS, READ_AHEAD_BYTES,
};
pub use space::{parse_quota, MemberSpace, QuotaSource, Space, DEFAULT_QUOTA_BYTES};

use super::{CasOutcome, Entry, Page, ReadStore, StoreError, Unanswered, WriteStore};
use error::Kind;
use failover::probe;
use scan::{ReadAhead, Splits};

/// One healthy member.
struct Member {
    endpoint: String,
    client: Client,
    /// The KV client with the raised decoding limit.
    kv: KvClient,
    /// The member is kine (k3s's etcd-API shim over SQL), not etcd: its status has no member
    /// or cluster ID.
    kine: bool,
}

struct Inner {
    members: Vec<Member>,
    unhealthy: Vec<EtcdError>,
    preferred: AtomicUsize,
    /// Keys the next page asks for (adapted to the value sizes seen).
    page_limit: AtomicI64,
    /// The most keys a page may ask for: lowered when a page was too large to decode.
    max_page_limit: AtomicI64,
    /// The last scan's splits.
    splits: Mutex<Option<Splits>>,
    /// Pages requested ahead of the scan.
    ahead: Mutex<ReadAhead>,
    /// The last count: its prefix and number of keys.
    last_count: Mutex<Option<(Vec<u8>, u64)>>,
    /// Every member that did not answer, at connect time or later, with its last error (one
    /// entry per endpoint, in the order they first failed).
    unanswered: Mutex<Vec<Unanswered>>,
    /// How long one request may take, its whole response included.
    request_timeout: Duration,
    /// The options it was opened with (etcd's /metrics is read with the same TLS).
    opts: EtcdOptions,
}

/// A live etcd cluster: one client per healthy endpoint, with failover between them.
///
/// Cheap to clone (the clones share the connections).
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints().collect::<Vec<_>>())
            .field("unhealthy", &self.inner.unhealthy)
            .finish()
    }
}

impl EtcdStore {
    /// Connects to every endpoint and checks that it answers (`status()`), within
    /// `connect_timeout`. Endpoints that do not answer are left out; fails when none does.
    pub async fn connect(opts: EtcdOptions) -> Result<EtcdStore, EtcdError> {
        let endpoints = opts.resolved_endpoints()?;
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_timeout(opts.request_timeout)
            .with_require_leader(true);
        if let Some(tls) = opts.tls_options()? {
            connect = connect.with_tls(tls);
        }
        if let Some((user, password)) = &opts.user {
            connect = connect.with_user(user.clone(), password.expose_secret().to_owned());
        }
        let probes = endpoints
            .iter()
            .map(|endpoint| probe(endpoint, connect.clone(), &opts));
        let mut members = Vec::new();
        let mut unhealthy = Vec::new();
        for result in futures_util::future::join_all(probes).await {
            match result {
                Ok(member) => members.push(member),
                Err(e) => unhealthy.push(e),
            }
        }
        if members.is_empty() {
            // `endpoints` is not empty, so there is at least one error.
            return Err(if unhealthy.len() == 1 {
                unhealthy.swap_remove(0)
            } else {
                EtcdError::NoMemberAnswered { errors: unhealthy }
            });
        }
        let unanswered = unhealthy
            .iter()
            .filter_map(|e| {
                Some(Unanswered {
                    endpoint: e.endpoint()?.to_owned(),
                    error: e.to_string(),
                })
            })
            .collect();
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                members,
                unhealthy,
                preferred: AtomicUsize::new(0),
                page_limit: AtomicI64::new(PAGE_LIMIT),
                max_page_limit: AtomicI64::new(MAX_PAGE_LIMIT),
                splits: Mutex::new(None),
                ahead: Mutex::new(ReadAhead::default()),
                last_count: Mutex::new(None),
                unanswered: Mutex::new(unanswered),
                request_timeout: opts.request_timeout,
                opts,
            }),
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &EtcdOptions {
        &self.inner.opts
    }

    /// The endpoints that answered at connect time, in the order given.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.inner.members.iter().map(|m| m.endpoint.as_str())
    }

    /// Whether the store is kine (k3s's datastore) rather than etcd: every member that answered
    /// said so. kine has no maintenance snapshot and no alarms, and keeps an `old_value` copy
    /// in every row (see [`crate::store::kine`]).
    pub fn is_kine(&self) -> bool {
        self.inner.members.iter().all(|m| m.kine)
    }

    /// Why the other endpoints were left out at connect time (for a warning).
    pub fn unhealthy(&self) -> &[EtcdError] {
        &self.inner.unhealthy
    }

    /// The member requests go to now: the last one that answered.
    pub fn answering(&self) -> &str {
        let index = self.inner.preferred.load(Ordering::Relaxed);
        &self.inner.members[index % self.inner.members.len()].endpoint
    }

    /// Every member that did not answer so far (left out at connect time, or failed over from
    /// during the run), each with its last error.
    pub fn unanswered(&self) -> Vec<Unanswered> {
        lock(&self.inner.unanswered).clone()
    }

    /// Records that `endpoint` did not answer a request (failover moves on to another member).
    fn note_unanswered(&self, endpoint: &str, detail: String) {
        let error = EtcdError::Unreachable {
            endpoint: endpoint.to_owned(),
            detail,
        }
        .to_string();
        let mut all = lock(&self.inner.unanswered);
        match all.iter_mut().find(|u| u.endpoint == endpoint) {
            Some(known) => known.error = error,
            None => all.push(Unanswered {
                endpoint: endpoint.to_owned(),
                error,
            }),
        }
    }

    async fn cas(
        &self,
        key: &[u8],
        seen_mod_revision: i64,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<CasOutcome, EtcdError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key,
                CompareOp::Equal,
                seen_mod_revision,
            )])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        // tonic consumes the request, so each attempt sends its own copy.
        let result = self
            .call(|m| {
                let mut kv = m.kv.clone();
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await;
        let resp = match result {
            Ok(resp) => resp,
            // The lease expired after the key was read: etcd deleted the key with it (or is
            // about to). Report the key's state now, like the failure branch would.
            Err(f) if f.detail.contains("requested lease not found") => {
                return Ok(CasOutcome::Conflict {
                    current: self.get_key(key).await?,
                })
            }
            Err(f) => return Err(f.into_error("txn")),
        };
        if resp.succeeded() {
            return Ok(CasOutcome::Written {
                mod_revision: resp.header().map_or(0, |h| h.revision()),
            });
        }
        let current = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(mut get) => Some(get.take_kvs().into_iter().next()),
                _ => None,
            })
            .flatten()
            .map(entry_from);
        Ok(CasOutcome::Conflict { current })
    }

    async fn get_key(&self, key: &[u8]) -> Result<Option<Entry>, EtcdError> {
        let mut resp = self
            .call(|m| {
                let mut kv = m.kv.clone();
                let key = key.to_vec();
                async move { kv.get(key, None).await }
            })
            .await
            .map_err(|f| f.into_error("range"))?;
        Ok(resp.take_kvs().into_iter().next().map(entry_from))
    }

    async fn compact_to(&self, revision: i64) -> Result<(), EtcdError> {
        let mut future_tries = 0;
        loop {
            let result = self
                .call(|m| {
                    let mut kv = m.kv.clone();
                    async move {
                        kv.compact(revision, Some(CompactionOptions::new().with_physical()))
                            .await
                    }
                })
                .await;
            match result {
                Ok(_) => return Ok(()),
                // Someone (kube-apiserver's compactor, an earlier run) already compacted at or
                // past this revision: what was asked for is done.
                Err(f) if f.kind == Kind::Compacted => return Ok(()),
                Err(f) if f.detail.contains("future revision") && future_tries < 20 => {
                    future_tries += 1;
                    if self.is_kine() {
                        // kine (v0.17) keeps its newest revision in memory and updates it with
                        // a compare-and-swap after each insert: when writes overlap, as a
                        // rewrite's do, the swap of the last one can lose and the number then
                        // lags behind the table until the next write. kube-apiserver's
                        // compactor always writes first (its compact_rev_key transaction),
                        // so it never sees this; do what it does.
                        self.record_compaction_as_apiserver(revision).await?;
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Err(f) => return Err(f.into_error("compact")),
            }
        }
    }

    /// kube-apiserver's compactor transaction (`k8s.io/apiserver/pkg/storage/etcd3/compact.go`):
    /// `if version(compact_rev_key) == seen then put(compact_rev_key, revision) else get`.
    /// Used on kine only, where it is the write that brings kine's newest revision up to date;
    /// kine stores it under its own `compact_rev_key_apiserver`, and every kube-apiserver
    /// adopts the new version on its next round as it does when another apiserver compacted.
    async fn record_compaction_as_apiserver(&self, revision: i64) -> Result<(), EtcdError> {
        const KEY: &[u8] = b"compact_rev_key";
        let mut seen = self.get_key(KEY).await?.map_or(0, |e| e.version);
        for _ in 0..3 {
            let txn = Txn::new()
                .when([Compare::version(KEY, CompareOp::Equal, seen)])
                .and_then([TxnOp::put(KEY, revision.to_string(), None)])
                .or_else([TxnOp::get(KEY, None)]);
            let resp = self
                .call(|m| {
                    let mut kv = m.kv.clone();
                    let txn = txn.clone();
                    async move { kv.txn(txn).await }
                })
                .await
                .map_err(|f| f.into_error("txn"))?;
            if resp.succeeded() {
                return Ok(());
            }
            seen = resp
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(KeyValue::version),
                    _ => None,
                })
                .unwrap_or(0);
        }
        Ok(())
    }
}

/// Locks a mutex, also after a panic elsewhere (the data are plain values).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Moves a key-value out of a response (no copy of the value).
fn entry_from(kv: KeyValue) -> Entry {
    let (mod_revision, create_revision, version, lease) = (
        kv.mod_revision(),
        kv.create_revision(),
        kv.version(),
        kv.lease(),
    );
    let (key, value) = kv.into_key_value();
    Entry {
        key,
        value,
        mod_revision,
        create_revision,
        version,
        lease,
    }
}

impl ReadStore for EtcdStore {
    /// `etcd <endpoint>` of the member that answered last (with its scheme): with a dead
    /// member first in `--endpoints`, the live one that served the scan.
    fn source(&self) -> String {
        let what = if self.is_kine() { "kine" } else { "etcd" };
        format!("{what} {}", self.answering())
    }

    fn unanswered(&self) -> Vec<Unanswered> {
        EtcdStore::unanswered(self)
    }

    async fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        Ok(self.count_keys(prefix).await?)
    }

    async fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        revision: Option<i64>,
    ) -> Result<Page, StoreError> {
        Ok(self.read_page(prefix, after, revision).await?)
    }
}

impl WriteStore for EtcdStore {
    async fn compare_and_put(
        &self,
        key: &[u8],
        seen_mod_revision: i64,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<CasOutcome, StoreError> {
        Ok(self.cas(key, seen_mod_revision, value, lease).await?)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        Ok(self.get_key(key).await?)
    }

    async fn backup(&self, path: &Path, overwrite: bool) -> Result<u64, StoreError> {
        Ok(self.save_snapshot(path, overwrite).await?)
    }

    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        Ok(self.compact_to(revision).await?)
    }

    async fn db_file_size(&self) -> Result<Option<u64>, StoreError> {
        if self.is_kine() {
            return Ok(None);
        }
        Ok(Some(self.largest_file_now().await?))
    }
}
