//! How to reach etcd: endpoints, TLS files, timeouts (etcdctl's flags).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Identity, TlsOptions};

use super::EtcdError;
use crate::config::SecretString;

/// The endpoint used when none is given (etcdctl's default).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

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

    /// The resolved endpoints that send everything in clear (`http://`) to a host other than
    /// loopback (`localhost`, `127.0.0.0/8`, `::1`): every value read or written crosses the
    /// network unencrypted. For a warning; invalid endpoints give none.
    pub fn plaintext_remote_endpoints(&self) -> Vec<String> {
        self.resolved_endpoints()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e.strip_prefix("http://")
                    .is_some_and(|rest| !is_loopback(rest))
            })
            .collect()
    }

    pub(super) fn tls_options(&self) -> Result<Option<TlsOptions>, EtcdError> {
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

/// Whether the authority at the start of `rest` (`host[:port][/…]`) names this machine.
fn is_loopback(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_22_14_plain_http_to_another_host_is_flagged() {
        let o = EtcdOptions {
            endpoints: [
                "http://10.0.0.5:2379",
                "127.0.0.1:2379",
                "http://localhost:2379",
                "http://[::1]:2379",
                "etcd.example:2379",
                "https://10.0.0.6:2379",
                "http://127.8.9.10:2379/",
            ]
            .map(String::from)
            .to_vec(),
            ..EtcdOptions::default()
        };
        assert_eq!(
            o.plaintext_remote_endpoints(),
            ["http://10.0.0.5:2379", "http://etcd.example:2379"]
        );
        let tls = EtcdOptions {
            endpoints: vec!["10.0.0.5:2379".into()],
            cacert: Some("ca.crt".into()),
            ..EtcdOptions::default()
        };
        assert!(tls.plaintext_remote_endpoints().is_empty());
    }

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
}
