//! How much room etcd has: every member's database size, the active alarms, and the backend
//! quota, so that a rewrite never pushes a member over it.
//!
//! etcd counts its quota (`--quota-backend-bytes`, 2 GiB by default) on the database *file*;
//! once a write would take the file over it, etcd raises the `NOSPACE` alarm and refuses every
//! write — kube-apiserver's included — until someone compacts, defragments and disarms it.
//!
//! The quota is read, in this order, from the member's `Status` (etcd 3.6 reports it), from
//! `etcd_server_quota_backend_bytes` on the member's `/metrics` (the client URL, over the same
//! TLS as the gRPC connection), from the caller (`--quota-bytes`), or else taken to be etcd's
//! default; [`QuotaSource`] says which.

use std::path::Path;
use std::sync::Arc;

use etcd_client::{AlarmAction, AlarmType};
use serde::Serialize;

use super::error::classify;
use super::options::EtcdOptions;
use super::{EtcdError, EtcdStore};

/// etcd's default backend quota: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The longest `/metrics` response read (etcd's is about 100 KiB).
const MAX_METRICS_BYTES: usize = 8 * 1024 * 1024;

/// One member's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberSpace {
    /// The member's client URL.
    pub endpoint: String,
    /// The database file's size in bytes (what the quota is counted on).
    pub db_size: u64,
    /// The bytes in use inside it (the rest are free pages that new writes reuse).
    pub db_size_in_use: u64,
}

/// Where the quota came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum QuotaSource {
    /// The member's `Status` (etcd 3.6 and later).
    Status,
    /// `etcd_server_quota_backend_bytes` on the member's `/metrics`.
    Metrics,
    /// Given by the caller (`--quota-bytes`).
    Given,
    /// Neither could be read: etcd's default, 2 GiB.
    Default,
}

/// The room etcd has, as seen before a rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Space {
    /// Every member that answered, with its database size.
    pub members: Vec<MemberSpace>,
    /// Active alarms, as `NOSPACE on member 8e9e05c52164694d`.
    pub alarms: Vec<String>,
    /// Whether a `NOSPACE` alarm is active: etcd refuses writes.
    pub nospace: bool,
    /// The backend quota in bytes.
    pub quota_bytes: u64,
    /// Where [`Space::quota_bytes`] came from.
    pub quota_source: QuotaSource,
    /// Why the metrics were not used, when they were not (for the operator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_note: Option<String>,
}

impl Space {
    /// The largest database file among the members.
    pub fn largest_db(&self) -> u64 {
        self.members.iter().map(|m| m.db_size).max().unwrap_or(0)
    }

    /// The largest database file among the members: what etcd's quota counts.
    pub fn largest_file(&self) -> u64 {
        self.members.iter().map(|m| m.db_size).max().unwrap_or(0)
    }

    /// The most bytes in use among the members.
    pub fn largest_in_use(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.db_size_in_use)
            .max()
            .unwrap_or(0)
    }
}

impl EtcdStore {
    /// The largest database file among the members that answer now (`Status.dbSize`): what a
    /// rewrite watches to keep under its margin.
    pub async fn largest_file_now(&self) -> Result<u64, EtcdError> {
        let mut largest = 0;
        for member in &self.inner.members {
            let mut maintenance = member.client.maintenance_client();
            let timeout = self.inner.request_timeout;
            if let Ok(Ok(status)) = tokio::time::timeout(timeout, maintenance.status()).await {
                largest = largest.max(u64::try_from(status.db_size()).unwrap_or(0));
            }
        }
        Ok(largest)
    }

    /// Reads every member's `Status`, the cluster's alarms and the quota (see the module docs).
    /// `given_quota` is `--quota-bytes`: used when neither the status nor the metrics say.
    /// The metrics are read with the TLS settings the store was opened with.
    pub async fn space(&self, given_quota: Option<u64>) -> Result<Space, EtcdError> {
        let opts = &self.inner.opts;
        let mut members = Vec::new();
        let mut status_quota = None;
        for member in &self.inner.members {
            let mut maintenance = member.client.maintenance_client();
            let timeout = self.inner.request_timeout;
            let status = match tokio::time::timeout(timeout, maintenance.status()).await {
                Ok(Ok(status)) => status,
                Ok(Err(error)) => {
                    // A member that stopped answering since connect: reported, not counted.
                    let (_, detail) = classify(&error);
                    self.note_unanswered(&member.endpoint, detail);
                    continue;
                }
                Err(_) => {
                    let detail = format!("no answer within {} ms", timeout.as_millis());
                    self.note_unanswered(&member.endpoint, detail);
                    continue;
                }
            };
            let size = u64::try_from(status.db_size()).unwrap_or(0);
            let in_use = u64::try_from(status.raft_used_db_size()).unwrap_or(0);
            members.push(MemberSpace {
                endpoint: member.endpoint.clone(),
                db_size: size,
                // etcd before 3.4 does not report it: count the whole file.
                db_size_in_use: if in_use == 0 { size } else { in_use },
            });
            if let Ok(q) = u64::try_from(status.db_size_quota()) {
                if q > 0 {
                    status_quota = Some(q);
                }
            }
        }
        let alarms = self
            .call(|m| {
                let mut maintenance = m.client.maintenance_client();
                async move {
                    maintenance
                        .alarm(AlarmAction::Get, AlarmType::None, None)
                        .await
                }
            })
            .await
            .map_err(|f| f.into_error("alarm list"))?;
        let mut nospace = false;
        let alarms = alarms
            .alarms()
            .iter()
            .map(|a| {
                let kind = match a.alarm() {
                    AlarmType::Nospace => {
                        nospace = true;
                        "NOSPACE"
                    }
                    AlarmType::Corrupt => "CORRUPT",
                    _ => "alarm",
                };
                format!("{kind} on member {:x}", a.member_id())
            })
            .collect();

        let metrics = match status_quota {
            Some(_) => Err(String::new()),
            None => self.metrics_quota(opts).await,
        };
        let (quota_bytes, quota_source, quota_note) =
            choose_quota(status_quota, metrics, given_quota);
        Ok(Space {
            members,
            alarms,
            nospace,
            quota_bytes,
            quota_source,
            quota_note,
        })
    }

    /// The quota from the first member whose `/metrics` answers; `Err` says why none did.
    async fn metrics_quota(&self, opts: &EtcdOptions) -> Result<u64, String> {
        let mut why = Vec::new();
        for member in &self.inner.members {
            let fetch = fetch_metrics(&member.endpoint, opts);
            match tokio::time::timeout(opts.connect_timeout, fetch).await {
                Ok(Ok(text)) => match parse_quota(&text) {
                    Some(q) => return Ok(q),
                    None => why.push(format!(
                        "{}/metrics has no etcd_server_quota_backend_bytes",
                        member.endpoint
                    )),
                },
                Ok(Err(e)) => why.push(format!("{}/metrics: {e}", member.endpoint)),
                Err(_) => why.push(format!(
                    "{}/metrics: no answer within {} ms",
                    member.endpoint,
                    opts.connect_timeout.as_millis()
                )),
            }
        }
        Err(why.join("; "))
    }
}

/// The quota and its source: the status's, else the metrics', else the given one, else the
/// default (with why the metrics were not used).
fn choose_quota(
    status: Option<u64>,
    metrics: Result<u64, String>,
    given: Option<u64>,
) -> (u64, QuotaSource, Option<String>) {
    if let Some(q) = status {
        return (q, QuotaSource::Status, None);
    }
    match (metrics, given) {
        (Ok(q), _) => (q, QuotaSource::Metrics, None),
        (Err(why), Some(q)) => (q, QuotaSource::Given, Some(why)),
        (Err(why), None) => (DEFAULT_QUOTA_BYTES, QuotaSource::Default, Some(why)),
    }
}

/// Reads `value` of `etcd_server_quota_backend_bytes value` from Prometheus text.
pub fn parse_quota(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix("etcd_server_quota_backend_bytes")?;
        if !rest.starts_with([' ', '{']) {
            return None;
        }
        // `etcd_server_quota_backend_bytes 2.147483648e+09` (a float, maybe with labels).
        let value = rest.rsplit([' ', '}']).next()?.trim();
        let v: f64 = value.parse().ok()?;
        (v.is_finite() && v > 0.0).then_some(v as u64)
    })
}

/// `GET <endpoint>/metrics` over HTTP/1.1, with TLS for `https://` endpoints (the CA and
/// client certificate of `opts`).
async fn fetch_metrics(endpoint: &str, opts: &EtcdOptions) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    let (tls, authority) = match endpoint.split_once("://") {
        Some(("https", rest)) => (true, rest.trim_end_matches('/')),
        Some((_, rest)) => (false, rest.trim_end_matches('/')),
        None => (false, endpoint),
    };
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;

    async fn send<IO>(io: IO, request: hyper::Request<Empty<Bytes>>) -> Result<String, String>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_METRICS_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        String::from_utf8(body.to_vec()).map_err(|_| "not UTF-8".to_owned())
    }

    if !tls {
        return send(TokioIo::new(tcp), request).await;
    }
    let config = metrics_tls(opts)?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let name = rustls_pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    send(TokioIo::new(stream), request).await
}

/// A rustls client config from the same files as the gRPC connection.
fn metrics_tls(opts: &EtcdOptions) -> Result<tokio_rustls::rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;

    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let Some(cacert) = &opts.cacert else {
        return Err("no --cacert to verify the metrics endpoint with".to_owned());
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read(cacert)?) {
        let cert = cert.map_err(|e| format!("{}: {e}", cacert.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", cacert.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_comes_from_status_metrics_the_flag_or_the_default_in_that_order() {
        let no = || Err("http://a:1/metrics: cannot connect".to_owned());
        assert_eq!(choose_quota(Some(5), Ok(6), Some(7)).1, QuotaSource::Status);
        assert_eq!(
            choose_quota(None, Ok(6), Some(7)),
            (6, QuotaSource::Metrics, None)
        );
        let (q, source, note) = choose_quota(None, no(), Some(7));
        assert_eq!((q, source), (7, QuotaSource::Given));
        assert!(note.unwrap().contains("cannot connect"));
        let (q, source, _) = choose_quota(None, no(), None);
        assert_eq!((q, source), (DEFAULT_QUOTA_BYTES, QuotaSource::Default));
    }

    #[test]
    fn quota_is_read_from_prometheus_text() {
        let text =
            "# HELP etcd_server_quota_backend_bytes Current backend storage quota size in bytes.\n\
                    # TYPE etcd_server_quota_backend_bytes gauge\n\
                    etcd_server_quota_backend_bytes_other 1\n\
                    etcd_server_quota_backend_bytes 2.147483648e+09\n";
        assert_eq!(parse_quota(text), Some(2_147_483_648));
        assert_eq!(
            parse_quota("etcd_server_quota_backend_bytes{x=\"y\"} 8388608\n"),
            Some(8_388_608)
        );
        assert_eq!(parse_quota("etcd_server_has_leader 1\n"), None);
        assert_eq!(parse_quota("etcd_server_quota_backend_bytes NaN\n"), None);
    }
}
