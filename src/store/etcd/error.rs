//! What can go wrong talking to etcd ([`EtcdError`], each with its advice), and how a failed
//! request is classified: worth failing over, TLS, credentials, compacted, too large, other.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

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
    #[error("TLS with etcd at {endpoint} failed: {}", tls_text(.problem.as_deref(), .detail))]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// Which file (or missing file) is at fault, when that could be told.
        problem: Option<Box<TlsProblem>>,
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
    /// Several endpoints were given and none answered: each one's error, in the order given.
    #[error("none of the {} etcd members answered: {}", .errors.len(), join_errors(.errors))]
    NoMemberAnswered {
        /// Each endpoint's error.
        errors: Vec<EtcdError>,
    },
    /// The revision a scan is pinned to was compacted away while the scan ran.
    #[error("etcd at {endpoint} compacted revision {revision} away while the scan was reading it")]
    Compacted {
        /// The endpoint.
        endpoint: String,
        /// The pinned revision.
        revision: i64,
    },
    /// etcd refused a write because its database reached the backend quota: the `NOSPACE`
    /// alarm is (or is about to be) active and every write in the cluster fails until an
    /// operator frees space. atrest never disarms it.
    #[error(
        "etcd at {endpoint} refused a write: the database reached its space quota (NOSPACE alarm)"
    )]
    NoSpace {
        /// The endpoint.
        endpoint: String,
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

fn tls_text(problem: Option<&TlsProblem>, detail: &str) -> String {
    match problem {
        Some(problem) => format!("{problem} ({detail})"),
        None => detail.to_owned(),
    }
}

/// Why a TLS handshake failed, in terms of the files the user gave (or did not give).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The private key is not the key of the client certificate.
    #[error("the private key in {} does not match the client certificate in {}", .key.display(), .cert.display())]
    KeyMismatch {
        /// `--cert`.
        cert: PathBuf,
        /// `--key`.
        key: PathBuf,
    },
    /// etcd requires a client certificate (`--client-cert-auth`) and none was given.
    #[error("etcd requires a client certificate and none was given (--cert and --key)")]
    NoClientCertificate,
    /// etcd refused the client certificate given.
    #[error("etcd refused the client certificate in {} (not signed by a CA etcd trusts, expired, or not for client authentication)", .cert.display())]
    ClientCertificateRefused {
        /// `--cert`.
        cert: PathBuf,
    },
    /// etcd's server certificate is not signed by a CA the client trusts.
    #[error("etcd's server certificate is not signed by {}", .cacert.as_ref().map_or("any CA the system trusts (no --cacert given)".to_owned(), |p| format!("the CA in {}", p.display())))]
    UnknownServerCa {
        /// `--cacert`, if given.
        cacert: Option<PathBuf>,
    },
    /// etcd's server certificate does not name the host or address dialled.
    #[error("etcd's server certificate is not valid for the host in the endpoint")]
    WrongServerName,
    /// The endpoint is `http://` but etcd speaks TLS there.
    #[error("the endpoint uses http:// but etcd serves TLS there")]
    PlainToTls,
}

impl TlsProblem {
    /// Tells the problem from the TLS layer's text and the files given (`None`: not known).
    pub(super) fn diagnose(
        detail: &str,
        endpoint: &str,
        cacert: Option<&PathBuf>,
        identity: Option<(&PathBuf, &PathBuf)>,
        closed_early: bool,
    ) -> Option<TlsProblem> {
        let lower = detail.to_ascii_lowercase();
        if lower.contains("keymismatch") || lower.contains("keys may not be consistent") {
            let (cert, key) = identity?;
            return Some(TlsProblem::KeyMismatch {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
            return Some(TlsProblem::UnknownServerCa {
                cacert: cacert.cloned(),
            });
        }
        if lower.contains("notvalidforname") || lower.contains("not valid for name") {
            return Some(TlsProblem::WrongServerName);
        }
        if endpoint.starts_with("http://") {
            return closed_early.then_some(TlsProblem::PlainToTls);
        }
        // A server that wants a client certificate either sends an alert (CertificateRequired,
        // BadCertificate, UnknownCA) or, racing the alert, just closes the connection.
        let refused = closed_early
            || [
                "certificaterequired",
                "badcertificate",
                "unknownca",
                "certificate required",
            ]
            .iter()
            .any(|m| lower.contains(m));
        if !refused {
            return None;
        }
        Some(match identity {
            None => TlsProblem::NoClientCertificate,
            Some((cert, _)) => TlsProblem::ClientCertificateRefused { cert: cert.clone() },
        })
    }

    /// What to do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            TlsProblem::KeyMismatch { .. } => {
                "pass the key that belongs to the certificate (kubeadm: \
                 /etc/kubernetes/pki/apiserver-etcd-client.crt goes with \
                 apiserver-etcd-client.key); `openssl x509 -noout -pubkey -in CERT` and \
                 `openssl pkey -pubout -in KEY` print the same key for a pair"
            }
            TlsProblem::NoClientCertificate => {
                "this etcd runs with --client-cert-auth: pass --cert and --key (or set \
                 ETCDCTL_CERT and ETCDCTL_KEY; kubeadm: \
                 /etc/kubernetes/pki/apiserver-etcd-client.crt and .key)"
            }
            TlsProblem::ClientCertificateRefused { .. } => {
                "pass a client certificate signed by the CA in etcd's --trusted-ca-file, valid \
                 now and for client authentication (kubeadm: \
                 /etc/kubernetes/pki/apiserver-etcd-client.crt and .key)"
            }
            TlsProblem::UnknownServerCa { .. } => {
                "pass as --cacert the CA that signed etcd's server certificate (etcd's \
                 --trusted-ca-file; kubeadm: /etc/kubernetes/pki/etcd/ca.crt)"
            }
            TlsProblem::WrongServerName => {
                "dial a host name or address listed in etcd's server certificate (its subject \
                 alternative names), as kube-apiserver's --etcd-servers does"
            }
            TlsProblem::PlainToTls => {
                "use an https:// endpoint with --cacert (and --cert/--key if etcd asks for a \
                 client certificate)"
            }
        }
    }
}

fn join_errors(errors: &[EtcdError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl EtcdError {
    /// The endpoint the error is about, if it is about one.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            EtcdError::Unreachable { endpoint, .. }
            | EtcdError::Tls { endpoint, .. }
            | EtcdError::Auth { endpoint, .. }
            | EtcdError::Compacted { endpoint, .. }
            | EtcdError::NoSpace { endpoint }
            | EtcdError::Request { endpoint, .. }
            | EtcdError::BadSnapshot { endpoint, .. } => Some(endpoint),
            EtcdError::InvalidEndpoint { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }

    /// What the user can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            // The first member's advice (they usually fail for the same reason).
            EtcdError::NoMemberAnswered { errors } => {
                errors.first().map_or(UNREACHABLE_ADVICE, EtcdError::advice)
            }
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
            EtcdError::Unreachable { .. } => UNREACHABLE_ADVICE,
            EtcdError::Tls {
                problem: Some(problem),
                ..
            } => problem.advice(),
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
            EtcdError::NoSpace { .. } => {
                "etcd refuses every write (kube-apiserver's too) until space is freed; atrest \
                 stopped and left the alarm as it is. Free space: `etcdctl compact` at the \
                 current revision, `etcdctl defrag` on each member, then `etcdctl alarm \
                 disarm` (or raise --quota-backend-bytes); then run the same command again: \
                 rewritten entries are passed over"
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

const UNREACHABLE_ADVICE: &str = "check --endpoints (or ETCDCTL_ENDPOINTS) and that etcd is \
     running and listening there; kube-apiserver's --etcd-servers flag shows the address it uses";

/// How a failed request is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The endpoint did not answer: worth sending the request elsewhere.
    Unreachable,
    /// The TLS handshake failed.
    Tls,
    /// Credentials refused.
    Auth,
    /// The pinned revision is gone.
    Compacted,
    /// The database is full (`mvcc: database space exceeded`).
    NoSpace,
    /// The response was larger than the decoding limit.
    TooLarge,
    /// Anything else.
    Other,
}

/// A failed request, before it becomes an [`EtcdError`].
pub(super) struct Failed {
    pub(super) kind: Kind,
    pub(super) endpoint: String,
    pub(super) detail: String,
    pub(super) error: etcd_client::Error,
}

impl Failed {
    pub(super) fn into_error(self, op: &'static str) -> EtcdError {
        let Failed {
            kind,
            endpoint,
            detail,
            error,
        } = self;
        match kind {
            Kind::Unreachable => EtcdError::Unreachable { endpoint, detail },
            Kind::Tls => EtcdError::Tls {
                endpoint,
                problem: None,
                detail,
            },
            Kind::Auth => EtcdError::Auth { endpoint, detail },
            Kind::NoSpace => EtcdError::NoSpace { endpoint },
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

pub(super) fn classify(error: &etcd_client::Error) -> (Kind, String) {
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
    } else if lower.contains("database space exceeded") {
        Kind::NoSpace
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

/// Whether the server hung up on the first request (rather than refusing the connection).
pub(super) fn closed_early(detail: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
