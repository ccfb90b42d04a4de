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
//! 50,000 Secrets of 2 KiB, pages of 1,000 keys cost etcd about three times the CPU of one
//! unpaged read, pages of about 4,000 (8 MiB) about 1.5 times (docs/performance.md). The byte
//! target keeps memory bounded whatever the value sizes. Responses of up to
//! [`EtcdOptions::max_page_bytes`] are accepted (tonic's default limit is 4 MiB: about 2,000
//! values of 2 KiB). A page over that is fetched again with half the limit, and the smaller
//! limit becomes a ceiling for the store's lifetime.

use std::fmt;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, GetOptions,
    Identity, KeyValue, KvClient, PutOptions, SnapshotStreaming, TlsOptions, Txn, TxnOp,
    TxnOpResponse,
};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{prefix_end, CasOutcome, Entry, Page, ReadStore, StoreError, WriteStore};
use crate::config::SecretString;

/// The endpoint used when none is given (etcdctl's default).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// Keys in the first page, and the fewest a later page asks for. etcd 3.4 pays for the whole
/// remaining range on every page, so pages of fewer than about 1,000 keys make a scan quadratic.
pub const PAGE_LIMIT: i64 = 1000;

/// The most keys a page asks for.
pub const MAX_PAGE_LIMIT: i64 = 10_000;

/// The size a page aims at (keys and values): 8 MiB, about 4,000 Secrets of 2 KiB.
pub const PAGE_TARGET_BYTES: usize = 8 * 1024 * 1024;

/// About how many keys one bounded range of a scan holds (see [`EtcdStore`]'s splits): a page's
/// worth at 2 KiB a value.
pub const RANGE_KEYS: u64 = 4000;

/// The most namespaces read to split a scan (keys only).
const MAX_NAMESPACES: i64 = 100_000;

/// How many times a request goes round all members while they are unreachable (pausing 0.1,
/// 0.2, 0.4, 0.8 and 1.6 s between rounds).
pub const FAILOVER_ROUNDS: usize = 6;

/// However many rounds that takes, failover keeps trying an unreachable cluster for at least this
/// long: a leader election on a loaded machine can take several seconds.
pub const FAILOVER_WINDOW: Duration = Duration::from_secs(15);

/// The default for [`EtcdOptions::max_page_bytes`]: 256 MiB.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 256 * 1024 * 1024;

/// How to reach etcd. Mirrors etcdctl's flags (`--endpoints`, `--cacert`, `--cert`, `--key`,
/// `--dial-timeout`, `--command-timeout`, `--user`).
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members. Without a scheme, `https://` is assumed when TLS files are
    /// given and `http://` otherwise. `http://` together with TLS files is refused.
    pub endpoints: Vec<String>,
    /// PEM file with the CA certificate(s) that signed etcd's server certificate.
    pub cacert: Option<PathBuf>,
    /// PEM file with the client certificate (needs `key`).
    pub cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key (needs `cert`).
    pub key: Option<PathBuf>,
    /// How long the first contact with each endpoint may take (TCP, TLS, status).
    pub connect_timeout: Duration,
    /// How long one request may take before it counts as failed (and is sent elsewhere).
    pub request_timeout: Duration,
    /// User name and password for etcd's own authentication, if enabled.
    pub user: Option<(String, SecretString)>,
    /// The largest page response accepted, in bytes; a larger page is fetched in pieces.
    pub max_page_bytes: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec![DEFAULT_ENDPOINT.to_owned()],
            cacert: None,
            cert: None,
            key: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            user: None,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
        }
    }
}

impl EtcdOptions {
    fn uses_tls(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The endpoints with their scheme, as they will be dialled.
    pub fn resolved_endpoints(&self) -> Result<Vec<String>, EtcdError> {
        let tls = self.uses_tls();
        let mut out = Vec::with_capacity(self.endpoints.len());
        for raw in &self.endpoints {
            let endpoint = raw.trim();
            if endpoint.is_empty() {
                continue;
            }
            let resolved = if endpoint.starts_with("https://") {
                endpoint.to_owned()
            } else if endpoint.starts_with("http://") {
                if tls {
                    return Err(EtcdError::InvalidEndpoint {
                        endpoint: endpoint.to_owned(),
                        reason: "TLS files were given but the endpoint uses http://; use https://",
                    });
                }
                endpoint.to_owned()
            } else if endpoint.contains("://") {
                return Err(EtcdError::InvalidEndpoint {
                    endpoint: endpoint.to_owned(),
                    reason: "only http:// and https:// endpoints are supported",
                });
            } else if tls {
                format!("https://{endpoint}")
            } else {
                format!("http://{endpoint}")
            };
            out.push(resolved);
        }
        if out.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        Ok(out)
    }

    fn tls_options(&self) -> Result<Option<TlsOptions>, EtcdError> {
        if !self.uses_tls() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        if let Some(path) = &self.cacert {
            tls = tls.ca_certificate(Certificate::from_pem(read_pem("CA certificate", path)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert = read_pem("client certificate", cert)?;
                let key = read_pem("client key", key)?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => return Err(EtcdError::IncompleteIdentity),
        }
        Ok(Some(tls))
    }
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, EtcdError> {
    let bytes = fs::read(path).map_err(|source| EtcdError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(EtcdError::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// A failure talking to etcd. Exit status 3.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// No endpoint was given.
    #[error("no etcd endpoint was given")]
    NoEndpoints,
    /// An endpoint cannot be used as written.
    #[error("etcd endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A TLS file could not be read.
    #[error("cannot read the {what} file {path}")]
    ReadFile {
        /// Which file: `CA certificate`, `client certificate` or `client key`.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A TLS file holds no PEM block.
    #[error("the {what} file {path} is not PEM (no -----BEGIN line)")]
    NotPem {
        /// Which file.
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// Only one of the client certificate and its key was given.
    #[error("a client certificate needs both --cert and --key")]
    IncompleteIdentity,
    /// Nothing answered: connection refused or reset, or no answer in time.
    #[error("etcd at {endpoint} is unreachable: {detail}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What the connection attempt reported.
        detail: String,
    },
    /// The TLS handshake failed: unknown CA, a certificate refused, or TLS spoken to a plain
    /// server (or the reverse).
    #[error("TLS with etcd at {endpoint} failed: {detail}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// What the TLS layer reported.
        detail: String,
    },
    /// etcd refused the user name and password, or the user lacks permission.
    #[error("etcd at {endpoint} refused the credentials: {detail}")]
    Auth {
        /// The endpoint.
        endpoint: String,
        /// etcd's message.
        detail: String,
    },
    /// The revision a scan is pinned to was compacted away while the scan ran.
    #[error("etcd at {endpoint} compacted revision {revision} away while the scan was reading it")]
    Compacted {
        /// The endpoint.
        endpoint: String,
        /// The pinned revision.
        revision: i64,
    },
    /// Any other failed request.
    #[error("etcd at {endpoint}: {op} failed")]
    Request {
        /// The endpoint.
        endpoint: String,
        /// The operation: `status`, `range`, `count`, `txn`, `snapshot`, `compact`.
        op: &'static str,
        /// etcd-client's error (boxed: it is large and has no `source()`).
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// The backup file could not be written.
    #[error("cannot write the backup {path}")]
    Backup {
        /// The file (or its temporary sibling).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The snapshot etcd streamed is not complete.
    #[error("the snapshot streamed by etcd at {endpoint} is not valid: {reason}")]
    BadSnapshot {
        /// The endpoint.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl EtcdError {
    /// What the user can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            EtcdError::NoEndpoints | EtcdError::InvalidEndpoint { .. } => {
                "pass --endpoints (or set ETCDCTL_ENDPOINTS) as https://HOST:PORT with \
                 --cacert/--cert/--key, or http://HOST:PORT for an etcd without TLS"
            }
            EtcdError::ReadFile { .. } | EtcdError::NotPem { .. } => {
                "check the path and permissions (kubeadm: /etc/kubernetes/pki/etcd/ca.crt, \
                 /etc/kubernetes/pki/apiserver-etcd-client.crt and .key; reading them needs root)"
            }
            EtcdError::IncompleteIdentity => {
                "pass both --cert and --key (or ETCDCTL_CERT and ETCDCTL_KEY)"
            }
            EtcdError::Unreachable { .. } => {
                "check --endpoints (or ETCDCTL_ENDPOINTS) and that etcd is running and listening \
                 there; kube-apiserver's --etcd-servers flag shows the address it uses"
            }
            EtcdError::Tls { .. } => {
                "pass --cacert/--cert/--key or set ETCDCTL_CACERT/ETCDCTL_CERT/ETCDCTL_KEY \
                 (kubeadm: /etc/kubernetes/pki/etcd/ca.crt, \
                 /etc/kubernetes/pki/apiserver-etcd-client.crt and .key), and use https:// \
                 endpoints for a TLS etcd"
            }
            EtcdError::Auth { .. } => {
                "pass a user with read and write access to the prefix, or a client certificate \
                 etcd maps to such a user"
            }
            EtcdError::Compacted { .. } => {
                "run again: a scan reads one revision, and etcd's automatic compaction removed it \
                 (kube-apiserver compacts every 5 minutes by default)"
            }
            EtcdError::Request { .. } => {
                "run again; if it persists, check the cluster with `etcdctl endpoint status \
                 --cluster` and `etcdctl alarm list`"
            }
            EtcdError::Backup { .. } => {
                "choose a writable directory with room for a full etcd snapshot"
            }
            EtcdError::BadSnapshot { .. } => "run again; etcd sent an incomplete snapshot",
        }
    }
}

/// How a failed request is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The endpoint did not answer: worth sending the request elsewhere.
    Unreachable,
    /// The TLS handshake failed.
    Tls,
    /// Credentials refused.
    Auth,
    /// The pinned revision is gone.
    Compacted,
    /// The response was larger than the decoding limit.
    TooLarge,
    /// Anything else.
    Other,
}

/// A failed request, before it becomes an [`EtcdError`].
struct Failed {
    kind: Kind,
    endpoint: String,
    detail: String,
    error: etcd_client::Error,
}

impl Failed {
    fn into_error(self, op: &'static str) -> EtcdError {
        let Failed {
            kind,
            endpoint,
            detail,
            error,
        } = self;
        match kind {
            Kind::Unreachable => EtcdError::Unreachable { endpoint, detail },
            Kind::Tls => EtcdError::Tls { endpoint, detail },
            Kind::Auth => EtcdError::Auth { endpoint, detail },
            Kind::Compacted | Kind::TooLarge | Kind::Other => EtcdError::Request {
                endpoint,
                op,
                source: Box::new(error),
            },
        }
    }
}

/// The error's text with every nested cause (etcd-client's error exposes none through
/// `source()`, and tonic hides the interesting part — "connection refused", "UnknownIssuer" — a
/// few levels down).
fn error_text(error: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let (mut text, mut source) = match error {
        etcd_client::Error::GRpcStatus(status) => (
            if status.message().is_empty() {
                format!("{:?}", status.code())
            } else {
                format!("{:?}: {}", status.code(), status.message())
            },
            status.source(),
        ),
        etcd_client::Error::TransportError(e) => (e.to_string(), e.source()),
        etcd_client::Error::IoError(e) => (e.to_string(), e.source()),
        other => (other.to_string(), None),
    };
    while let Some(cause) = source {
        let part = cause.to_string();
        // tonic and hyper repeat themselves ("transport error: transport error").
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

const TLS_MARKERS: &[&str] = &[
    "certificate",
    "tls",
    "handshake",
    "alert",
    "unknownissuer",
    "x509",
    "ssl",
    // A plain-http client talking to a TLS port reads the TLS record as an HTTP/2 frame.
    "frame with invalid size",
];

/// gRPC status codes (numbers fixed by the gRPC specification, `doc/statuscodes.md`).
mod grpc_code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const PERMISSION_DENIED: i32 = 7;
    pub(super) const OUT_OF_RANGE: i32 = 11;
    pub(super) const UNAVAILABLE: i32 = 14;
    pub(super) const UNAUTHENTICATED: i32 = 16;
}

fn classify(error: &etcd_client::Error) -> (Kind, String) {
    let detail = error_text(error);
    let code = match error {
        etcd_client::Error::GRpcStatus(status) => Some(status.code() as i32),
        _ => None,
    };
    let transport = matches!(
        error,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_)
    );
    (classify_parts(code, transport, &detail), detail)
}

/// Decides a [`Kind`] from a gRPC code (if any), whether the failure was in the transport, and
/// the full error text.
fn classify_parts(code: Option<i32>, transport: bool, detail: &str) -> Kind {
    use grpc_code::*;
    let lower = detail.to_ascii_lowercase();
    if TLS_MARKERS.iter().any(|m| lower.contains(m)) {
        Kind::Tls
    } else if matches!(code, Some(UNAUTHENTICATED | PERMISSION_DENIED))
        || lower.contains("authentication failed")
        || lower.contains("invalid auth token")
        || lower.contains("user name is empty")
    {
        Kind::Auth
    } else if lower.contains("message length too large") {
        Kind::TooLarge
    } else if code == Some(OUT_OF_RANGE) && lower.contains("compacted") {
        Kind::Compacted
    } else if transport
        || matches!(code, Some(UNAVAILABLE | DEADLINE_EXCEEDED | CANCELLED))
        || lower.contains("connection refused")
        || lower.contains("connection reset")
        || lower.contains("timed out")
        // A member that dies with a request in flight: tonic reports the broken connection as
        // an Unknown status "transport error" whose source is hyper's I/O error.
        || (code == Some(UNKNOWN) && lower.contains("transport error"))
        || lower.contains("broken pipe")
        || lower.contains("connection closed")
        || lower.contains("unexpected eof")
    {
        Kind::Unreachable
    } else {
        Kind::Other
    }
}

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
    /// The last count: its prefix and number of keys.
    last_count: Mutex<Option<(Vec<u8>, u64)>>,
    source: String,
}

/// The keys that cut a scan of `prefix` into bounded ranges (see [`EtcdStore::find_splits`]).
struct Splits {
    prefix: Vec<u8>,
    keys: Vec<Vec<u8>>,
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
        let probes = endpoints.iter().map(|endpoint| {
            probe(
                endpoint,
                connect.clone(),
                opts.connect_timeout,
                opts.max_page_bytes,
            )
        });
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
            return Err(unhealthy.swap_remove(0));
        }
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                members,
                unhealthy,
                preferred: AtomicUsize::new(0),
                page_limit: AtomicI64::new(PAGE_LIMIT),
                max_page_limit: AtomicI64::new(MAX_PAGE_LIMIT),
                splits: Mutex::new(None),
                last_count: Mutex::new(None),
                source: format!("etcd {}", endpoints[0]),
            }),
        })
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

    /// Sends `request` to the preferred member; when that member is unreachable, to the next
    /// ones. After every round over all members it pauses (0.1 s, doubling: a leader election
    /// takes a second or two), for [`FAILOVER_ROUNDS`] rounds. Other failures return at once.
    async fn call<T, F, Fut>(&self, mut request: F) -> Result<T, Failed>
    where
        F: FnMut(&Member) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let members = &self.inner.members;
        let start = self.inner.preferred.load(Ordering::Relaxed);
        let attempts = members.len() * FAILOVER_ROUNDS;
        let deadline = tokio::time::Instant::now() + FAILOVER_WINDOW;
        let mut attempt = 0;
        loop {
            let index = (start + attempt) % members.len();
            let member = &members[index];
            match request(member).await {
                Ok(value) => {
                    if index != start {
                        self.inner.preferred.store(index, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Err(error) => {
                    let (kind, detail) = classify(&error);
                    attempt += 1;
                    let exhausted = attempt >= attempts && tokio::time::Instant::now() >= deadline;
                    if kind != Kind::Unreachable || exhausted {
                        return Err(Failed {
                            kind,
                            endpoint: member.endpoint.clone(),
                            detail,
                            error,
                        });
                    }
                    if attempt % members.len() == 0 {
                        let round = (attempt / members.len()).min(5);
                        tokio::time::sleep(Duration::from_millis(100 << (round - 1))).await;
                    }
                }
            }
        }
    }

    async fn count_keys(&self, prefix: &[u8]) -> Result<u64, EtcdError> {
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
    /// splits. Empty ranges are skipped, so a page is empty only at the end.
    async fn read_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        mut revision: Option<i64>,
    ) -> Result<Page, EtcdError> {
        if after.is_none() {
            // Best effort: without splits the scan is one range, as correct and slower.
            let splits = self.find_splits(prefix).await.unwrap_or_default();
            *lock(&self.inner.splits) = Some(Splits {
                prefix: prefix.to_vec(),
                keys: splits,
            });
        }
        let end = prefix_end(prefix);
        let mut start = range_start(prefix, after);
        loop {
            let split = self.split_after(prefix, &start);
            let range_end = split.clone().unwrap_or_else(|| end.clone());
            let mut page = self.read_range(&start, &range_end, revision).await?;
            let Some(split) = split else {
                return Ok(page);
            };
            // Keys may follow in the next ranges.
            page.more = true;
            if !page.entries.is_empty() {
                return Ok(page);
            }
            revision = Some(page.revision);
            start = split;
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
        // kine learns its newest revision by polling its table, so right after a write it can
        // call that revision "a future revision" for a moment: retry for a few seconds.
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
                Err(f) if f.detail.contains("future revision") && future_tries < 50 => {
                    future_tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(f) => return Err(f.into_error("compact")),
            }
        }
    }

    async fn save_snapshot(&self, path: &Path, overwrite: bool) -> Result<u64, EtcdError> {
        let backup_error = |source| EtcdError::Backup {
            path: path.to_owned(),
            source,
        };
        // Checked before etcd streams anything; `persist` checks again at the end.
        if !overwrite && path.symlink_metadata().is_ok() {
            return Err(backup_error(io::Error::from(io::ErrorKind::AlreadyExists)));
        }
        // Mode 0600 from the start: the snapshot holds every Secret etcd stores.
        let (temp, file) = crate::atomic_file::create_temp(path).map_err(backup_error)?;
        let result = async {
            let (stream, endpoint) = self
                .call(|m| {
                    let mut maintenance = m.client.maintenance_client();
                    let endpoint = m.endpoint.clone();
                    async move { Ok((maintenance.snapshot().await?, endpoint)) }
                })
                .await
                .map_err(|f| f.into_error("snapshot"))?;
            write_snapshot(stream, file, &temp, &endpoint).await
        }
        .await;
        match result {
            Ok(size) => {
                crate::atomic_file::persist(&temp, path, overwrite).map_err(backup_error)?;
                Ok(size)
            }
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }
}

/// Writes the snapshot stream to `temp`, checking etcd's sha256 trailer on the way, and fsyncs.
///
/// # Format
///
/// `| bbolt database | sha256(database) 32 |`: etcd appends the digest, so a complete snapshot
/// has `size % 512 == 32` (bbolt pages are multiples of 512) — `etcdctl snapshot restore`
/// checks the same two things.
async fn write_snapshot(
    mut stream: SnapshotStreaming,
    mut file: File,
    temp: &Path,
    endpoint: &str,
) -> Result<u64, EtcdError> {
    let io_error = |source| EtcdError::Backup {
        path: temp.to_owned(),
        source,
    };
    let mut hasher = Sha256::new();
    // The last (up to) 32 bytes seen, not hashed yet: they may be the trailer.
    let mut held: Vec<u8> = Vec::with_capacity(64);
    let mut size = 0u64;
    loop {
        let message = stream.message().await.map_err(|error| {
            let (kind, detail) = classify(&error);
            Failed {
                kind,
                endpoint: endpoint.to_owned(),
                detail,
                error,
            }
            .into_error("snapshot")
        })?;
        let Some(message) = message else { break };
        let blob = message.blob();
        file.write_all(blob).map_err(io_error)?;
        size += blob.len() as u64;
        match blob.len().checked_sub(32) {
            Some(cut) => {
                hasher.update(&held);
                hasher.update(&blob[..cut]);
                held.clear();
                held.extend_from_slice(&blob[cut..]);
            }
            None => {
                held.extend_from_slice(blob);
                if let Some(cut) = held.len().checked_sub(32) {
                    hasher.update(&held[..cut]);
                    held.drain(..cut);
                }
            }
        }
    }
    let bad = |reason| EtcdError::BadSnapshot {
        endpoint: endpoint.to_owned(),
        reason,
    };
    if size % 512 != 32 {
        return Err(bad(
            "no sha256 trailer (size % 512 != 32): the stream ended early",
        ));
    }
    if hasher.finalize().as_slice() != held.as_slice() {
        return Err(bad("the sha256 trailer does not match the data"));
    }
    file.sync_all().map_err(io_error)?;
    Ok(size)
}

/// Connects one member and asks for its status within `timeout`.
async fn probe(
    endpoint: &str,
    options: ConnectOptions,
    timeout: Duration,
    max_page_bytes: usize,
) -> Result<Member, EtcdError> {
    let attempt = async {
        let mut client = Client::connect([endpoint], Some(options)).await?;
        let status = client.status().await?;
        // etcd always names its member and cluster; kine answers with an empty header.
        let kine = status
            .header()
            .is_none_or(|h| h.member_id() == 0 && h.cluster_id() == 0);
        Ok::<_, etcd_client::Error>((client, kine))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((client, kine))) => Ok(Member {
            endpoint: endpoint.to_owned(),
            kv: client.kv_client().max_decoding_message_size(max_page_bytes),
            client,
            kine,
        }),
        Ok(Err(error)) => {
            let (mut kind, mut detail) = classify(&error);
            if kind != Kind::Tls && closed_early(&detail) {
                // A TLS server hangs up on a client that sends no certificate (unless the alert
                // arrives first, which is a race) and on a client speaking plain HTTP/2.
                kind = Kind::Tls;
                let hint = if endpoint.starts_with("https://") {
                    "the server closed the connection during the handshake (it may require a \
                     client certificate)"
                } else {
                    "the server closed the connection (a TLS etcd does this to plain http:// \
                     clients)"
                };
                detail = format!("{hint}: {detail}");
            }
            Err(Failed {
                kind,
                endpoint: endpoint.to_owned(),
                detail,
                error,
            }
            .into_error("status"))
        }
        Err(_) => Err(EtcdError::Unreachable {
            endpoint: endpoint.to_owned(),
            detail: format!("no answer within {} ms", timeout.as_millis()),
        }),
    }
}

/// Whether the server hung up on the first request (rather than refusing the connection).
fn closed_early(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    [
        "broken pipe",
        "connection reset",
        "unexpected eof",
        "early eof",
        "connection closed",
    ]
    .iter()
    .any(|m| lower.contains(m))
}

/// Locks a mutex, also after a panic elsewhere (the data are plain values).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the namespaces are stored beside a resource prefix: `/registry/secrets/` →
/// `/registry/namespaces/` (`None` for a prefix without a parent, or the namespaces' own).
fn namespaces_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let trimmed = prefix.strip_suffix(b"/")?;
    let parent_end = trimmed.iter().rposition(|&b| b == b'/')?;
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
fn range_start(prefix: &[u8], after: Option<&[u8]>) -> Vec<u8> {
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
    /// `etcd <first endpoint>`, as given (with its scheme), whether or not it answered.
    fn source(&self) -> String {
        self.inner.source.clone()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(endpoints: &[&str], tls: bool) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            cacert: tls.then(|| PathBuf::from("ca.crt")),
            ..EtcdOptions::default()
        }
    }

    #[test]
    fn bare_endpoints_get_a_scheme_from_the_tls_files() {
        assert_eq!(
            opts(&["127.0.0.1:2379", "https://a:1"], false)
                .resolved_endpoints()
                .unwrap(),
            ["http://127.0.0.1:2379", "https://a:1"]
        );
        assert_eq!(
            opts(&["127.0.0.1:2379"], true)
                .resolved_endpoints()
                .unwrap(),
            ["https://127.0.0.1:2379"]
        );
    }

    #[test]
    fn http_with_tls_files_is_refused_with_advice() {
        let err = opts(&["http://127.0.0.1:2379"], true)
            .resolved_endpoints()
            .unwrap_err();
        assert!(err.to_string().contains("use https://"), "{err}");
        assert!(matches!(err, EtcdError::InvalidEndpoint { .. }));
        assert!(matches!(
            opts(&[" "], false).resolved_endpoints(),
            Err(EtcdError::NoEndpoints)
        ));
        assert!(matches!(
            opts(&["unix:///run/etcd.sock"], false).resolved_endpoints(),
            Err(EtcdError::InvalidEndpoint { .. })
        ));
    }

    #[test]
    fn tls_files_are_named_in_errors() {
        let mut o = opts(&["a:1"], true);
        o.cacert = Some(PathBuf::from("/nonexistent/ca.crt"));
        let err = o.tls_options().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.crt"), "{err}");
        assert!(err.advice().contains("/etc/kubernetes/pki/etcd/ca.crt"));

        let mut o = opts(&["a:1"], false);
        o.cert = Some(PathBuf::from("/nonexistent/client.crt"));
        assert!(matches!(
            o.tls_options(),
            Err(EtcdError::IncompleteIdentity)
        ));
    }

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
        // 2 KiB Secrets: about 4,000 a page.
        assert_eq!(next_page_limit(1000, 2_100_000), Some(3994));
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

    #[test]
    fn errors_are_classified() {
        use grpc_code::*;
        let k = |code, text| classify_parts(code, false, text);
        assert_eq!(
            k(
                Some(OUT_OF_RANGE),
                "OutOfRange: etcdserver: mvcc: required revision has been compacted"
            ),
            Kind::Compacted
        );
        assert_eq!(
            k(
                Some(OUT_OF_RANGE),
                "OutOfRange: Error, decoded message length too large: found 20991560 bytes, \
                 the limit is: 4194304 bytes"
            ),
            Kind::TooLarge
        );
        assert_eq!(
            k(Some(UNAVAILABLE), "Unavailable: tcp connect error"),
            Kind::Unreachable
        );
        // Seen when a member was killed between two pages: the next request on its connection.
        assert_eq!(
            k(
                Some(UNKNOWN),
                "Unknown: transport error: error trying to connect: stream closed because of a \
                 broken pipe"
            ),
            Kind::Unreachable
        );
        assert_eq!(
            classify_parts(
                None,
                true,
                "transport error: Connection refused (os error 111)"
            ),
            Kind::Unreachable
        );
        assert_eq!(
            k(
                Some(3),
                "InvalidArgument: etcdserver: authentication failed, invalid user ID or password"
            ),
            Kind::Auth
        );
        assert_eq!(
            k(
                Some(14),
                "Unavailable: invalid peer certificate: UnknownIssuer"
            ),
            Kind::Tls
        );
        assert_eq!(
            k(Some(3), "InvalidArgument: etcdserver: key is not provided"),
            Kind::Other
        );
    }
}
