//! Which EncryptionConfiguration each running kube-apiserver has loaded.
//!
//! [`check_apiservers`] lists the identity Leases, asks every instance URL (given, or from the
//! `default/kubernetes` EndpointSlice) for `/version`, `/metrics` (streamed, see
//! [`super::metrics`]) and `/readyz/kms-providers`, matches each answer to its Lease through the
//! `apiserver_id_hash` label, and compares the loaded config hash with the file's. The result,
//! [`ApiserversReport`], is the JSON schema of `atrest apiservers -o json`, and carries the
//! verdict (`ok`).

use std::collections::HashMap;

use futures_util::future::join_all;
use http_body_util::BodyExt;
use serde::Serialize;
use thiserror::Error;

use super::access::{trim_url, AccessError, ApiAccess};
use super::discover::{endpoint_urls, identity_leases, IdentityLease};
use super::identity::sha256_label;
use super::metrics::{self, MetricsReader, Sample};

/// The version of [`ApiserversReport`]'s JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

/// The report of `atrest apiservers`: every instance, what it loaded, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ApiserversReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `"sha256:"` + hex SHA-256 of the config file's bytes (what `sha256sum` prints).
    pub file_hash: String,
    /// Each instance asked, in URL order.
    pub apiservers: Vec<InstanceReport>,
    /// Instances holding a live identity Lease that no answering URL accounted for.
    pub not_checked: Vec<NotChecked>,
    /// True only when every live Lease holder was checked and reports exactly `file_hash`.
    pub ok: bool,
    /// The config's KMS v2 plugins as atrest reached them (empty when it did not try).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kms_plugins: Vec<PluginKeyId>,
}

/// A KMS v2 plugin's own current key ID, asked by atrest through the config's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginKeyId {
    /// The provider name in the config.
    pub provider: String,
    /// `"sha256:"` + hex SHA-256 of the plugin's current key ID (`null`: not reached).
    pub key_id_hash: Option<String>,
    /// Why the plugin could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One instance, asked at its own URL.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
    /// Its hostname (from its identity Lease); `null` when it could not be matched to one.
    pub hostname: Option<String>,
    /// Its APIServerID (the Lease name); `null` when unknown.
    pub identity: Option<String>,
    /// The URL asked.
    pub url: String,
    /// `/version` `gitVersion`.
    pub version: Option<String>,
    /// The config hash it reports having loaded (`null`: metric absent or not answered).
    pub loaded_hash: Option<String>,
    /// `loaded_hash == file_hash`; `null` when there is no loaded hash to compare.
    pub matches: Option<bool>,
    /// Automatic reload attempts (all zero without automatic reload).
    pub reloads: Reloads,
    /// KMS v2 providers and the key-ID hashes each reported by its plugin, newest first (the
    /// first of a provider is the key ID it writes with now).
    pub kms_key_id_hashes: Vec<KmsKeyIdHash>,
    /// `/readyz/kms-providers`: `null` when the instance has no KMS provider or did not answer.
    pub kms_providers: Option<Health>,
    /// `process_start_time_seconds` (Unix seconds).
    pub process_start_time: Option<f64>,
    /// What the verdict on this instance rests on, and how strong it is.
    pub evidence: Evidence,
    /// What is wrong with this instance (`null`: it runs the file).
    pub problem: Option<Problem>,
    /// `--canary`: what etcd stored for a Secret written through this instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<super::canary::CanaryReport>,
}

/// What the verdict on one instance rests on. Serialised in kebab-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Evidence {
    /// `apiserver_encryption_config_controller_last_config_info` (1.34+): the hash of the very
    /// bytes it loaded. Strong.
    ConfigHashMetric,
    /// No config-hash metric (before 1.34, or no config): only `process_start_time` to compare
    /// with the file's modification time, and the reload counters. Weak: it says when the
    /// process started, not what it read; `--canary` shows what it writes with.
    ProcessStartOnly,
    /// The instance did not answer: nothing.
    None,
}

/// Automatic reload attempts and when the last of each happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reloads {
    /// Successful reloads.
    pub success: u64,
    /// Failed reloads (the old config stays in use).
    pub failure: u64,
    /// Unix seconds of the last success.
    pub last_success: Option<f64>,
    /// Unix seconds of the last failure.
    pub last_failure: Option<f64>,
}

/// A KMS v2 provider's current key-ID hash on one instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KmsKeyIdHash {
    /// The provider name in the config.
    pub provider: String,
    /// `"sha256:"` + hex SHA-256 of the plugin's current key ID.
    pub key_id_hash: String,
    /// Unix seconds when the instance last saw it.
    pub last_seen: f64,
    /// For a provider's newest entry, when atrest reached the plugin: whether the instance
    /// writes with the plugin's current key ID (`false`: not converged yet, it polls once a
    /// minute).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches_plugin: Option<bool>,
}

/// A health endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The HTTP status.
    pub status: u16,
    /// Whether it was 200.
    pub ok: bool,
}

/// An instance holding a live identity Lease that was not checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotChecked {
    /// Its hostname.
    pub hostname: String,
    /// Its APIServerID.
    pub identity: String,
    /// Seconds since its Lease was renewed.
    pub renewed_seconds_ago: Option<i64>,
}

/// What is wrong with one instance. Serialised with a `kind` tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Problem {
    /// It runs another config file.
    LoadedOtherFile {
        /// The hash it loaded.
        loaded_hash: String,
    },
    /// Its last automatic reload failed: it kept the file of `loaded_hash`.
    ReloadFailed {
        /// The hash it kept.
        loaded_hash: String,
    },
    /// It serves no config-hash metric: older than 1.34, or no `--encryption-provider-config`.
    NoConfigMetric,
    /// It could not be asked.
    NotAnswered {
        /// Why (never a credential).
        error: String,
    },
}

impl Problem {
    /// One sentence for a table or a refusal.
    pub fn describe(&self) -> String {
        match self {
            Problem::LoadedOtherFile { loaded_hash } => format!("runs another config ({loaded_hash})"),
            Problem::ReloadFailed { loaded_hash } => format!("its last automatic reload failed; it kept {loaded_hash}"),
            Problem::NoConfigMetric => "serves no apiserver_encryption_config_controller_last_config_info: older than 1.34 or started without --encryption-provider-config".to_owned(),
            Problem::NotAnswered { error } => format!("did not answer: {error}"),
        }
    }

    /// A few words for a table column (the hash is in its own column).
    pub fn short(&self) -> &'static str {
        match self {
            Problem::LoadedOtherFile { .. } => "runs another config",
            Problem::ReloadFailed { .. } => "last reload failed",
            Problem::NoConfigMetric => "no config-hash metric",
            Problem::NotAnswered { .. } => "did not answer",
        }
    }

    /// What to do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            Problem::LoadedOtherFile { .. } => "copy the file to this node and restart its kube-apiserver (or wait a minute for automatic reload)",
            Problem::ReloadFailed { .. } => "fix the file on this node (`atrest config check FILE`); kube-apiserver keeps the old config until a reload succeeds",
            Problem::NoConfigMetric => "check this node's manifest with `atrest check-apiserver`; before 1.34 use `atrest apiservers --canary` for evidence",
            Problem::NotAnswered { .. } => "make sure the instance runs and its URL is reachable with these credentials",
        }
    }
}

/// A Kubernetes API request that failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// The credentials lack a permission (HTTP 403).
    #[error("forbidden: the credentials may not {verb} {what}: {message}")]
    Forbidden {
        /// The verb (`list`, `get`, `create`, …).
        verb: &'static str,
        /// The resource or non-resource URL.
        what: String,
        /// The API server's message.
        message: String,
    },
    /// The credentials were refused (HTTP 401).
    #[error("the API server at {url} refused the credentials (401 Unauthorized)")]
    Unauthorized {
        /// The instance URL.
        url: String,
    },
    /// Any other answer or no answer.
    #[error("{verb} {what} failed: {message}")]
    Failed {
        /// The verb.
        verb: &'static str,
        /// What was asked.
        what: String,
        /// What went wrong.
        message: String,
    },
}

impl ApiError {
    /// Classifies a kube error for `verb` on `what`.
    pub fn from_kube(e: kube::Error, verb: &'static str, what: &str) -> ApiError {
        match e {
            kube::Error::Api(s) if s.code == 403 => ApiError::Forbidden {
                verb,
                what: what.to_owned(),
                message: s.message,
            },
            kube::Error::Api(s) if s.code == 401 => ApiError::Unauthorized {
                url: what.to_owned(),
            },
            e => ApiError::Failed {
                verb,
                what: what.to_owned(),
                message: error_chain(&e),
            },
        }
    }

    /// What to do about it.
    pub fn advice(&self) -> String {
        match self {
            ApiError::Forbidden { verb, what, .. } => format!(
                "grant `{verb}` on {what} to these credentials (docs/apiservers.md has the least-privilege ClusterRole)"
            ),
            ApiError::Unauthorized { .. } => "pass a kubeconfig whose credentials the cluster accepts (--kubeconfig, --context)".to_owned(),
            ApiError::Failed { .. } => "check that the API server runs and is reachable from here (--kubeconfig, --apiserver)".to_owned(),
        }
    }
}

/// Why the check could not be made at all (exit 3, or 2 for [`CheckError::Access`]).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The access could not be set up.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// No instance answered the Lease listing.
    #[error("cannot list the kube-apiserver identity Leases through {tried}: {source}")]
    Unreachable {
        /// The URLs tried.
        tried: String,
        /// The last failure.
        source: ApiError,
    },
}

impl CheckError {
    /// What to do about it.
    pub fn advice(&self) -> String {
        match self {
            CheckError::Access(e) => e.advice(),
            CheckError::Unreachable { source, .. } => source.advice(),
        }
    }
}

/// Checks every kube-apiserver instance against the config file `file_bytes`. `urls`: the
/// instances to ask (`--apiserver`); empty → the `default/kubernetes` EndpointSlice, else the
/// kubeconfig's own URL.
pub async fn check_apiservers(
    access: &ApiAccess,
    file_bytes: &[u8],
    urls: &[String],
) -> Result<ApiserversReport, CheckError> {
    let file_hash = sha256_label(file_bytes);
    let (leases, lister) = list_leases(access, urls).await?;
    let mut urls: Vec<String> = urls.iter().map(|u| trim_url(u)).collect();
    if urls.is_empty() {
        urls = endpoint_urls(&lister).await.unwrap_or_default();
    }
    if urls.is_empty() {
        urls.push(access.cluster_url());
    }
    let by_hash: HashMap<String, &IdentityLease> = leases
        .iter()
        .map(|l| (sha256_label(l.identity.as_bytes()), l))
        .collect();
    let asked = join_all(urls.iter().map(|url| check_instance(access, url))).await;
    let mut apiservers = Vec::new();
    for (mut report, id_hash) in asked {
        if let Some(lease) = id_hash.and_then(|h| by_hash.get(&h)) {
            report.hostname = Some(lease.hostname.clone());
            report.identity = Some(lease.identity.clone());
        }
        judge(&mut report, &file_hash);
        apiservers.push(report);
    }
    let not_checked = leases
        .iter()
        .filter(|l| l.live)
        .filter(|l| {
            !apiservers
                .iter()
                .any(|a| a.identity.as_deref() == Some(&l.identity))
        })
        .map(|l| NotChecked {
            hostname: l.hostname.clone(),
            identity: l.identity.clone(),
            renewed_seconds_ago: l.renewed_seconds_ago,
        })
        .collect::<Vec<_>>();
    let ok = !apiservers.is_empty()
        && not_checked.is_empty()
        && apiservers.iter().all(|a| a.problem.is_none());
    Ok(ApiserversReport {
        schema_version: SCHEMA_VERSION,
        file_hash,
        apiservers,
        not_checked,
        ok,
        kms_plugins: Vec::new(),
    })
}

/// Asks each KMS v2 plugin of `chain` for its current key ID (a blocking call per plugin) and
/// marks whether each instance's newest key-ID hash for that provider equals it.
pub fn compare_with_plugins(report: &mut ApiserversReport, chain: &crate::transform::Chain) {
    for kms in chain.kms_providers() {
        let Some(status) = kms.status() else {
            continue;
        };
        let plugin = match status {
            Ok(s) if !s.key_id.is_empty() => PluginKeyId {
                provider: kms.name().to_owned(),
                key_id_hash: Some(sha256_label(s.key_id.as_bytes())),
                error: None,
            },
            Ok(_) => continue, // KMS v1: no key ID
            Err(e) => PluginKeyId {
                provider: kms.name().to_owned(),
                key_id_hash: None,
                error: Some(e.to_string()),
            },
        };
        if let Some(hash) = &plugin.key_id_hash {
            for a in &mut report.apiservers {
                let newest = a
                    .kms_key_id_hashes
                    .iter_mut()
                    .find(|k| k.provider == plugin.provider);
                if let Some(k) = newest {
                    k.matches_plugin = Some(&k.key_id_hash == hash);
                }
            }
        }
        report.kms_plugins.push(plugin);
    }
}

/// Lists the identity Leases through the kubeconfig's URL, else through each given URL in turn.
async fn list_leases(
    access: &ApiAccess,
    urls: &[String],
) -> Result<(Vec<IdentityLease>, kube::Client), CheckError> {
    let mut tried = Vec::new();
    let mut last = None;
    for url in std::iter::once(access.cluster_url()).chain(urls.iter().map(|u| trim_url(u))) {
        let client = access.client_for(&url)?;
        match identity_leases(&client).await {
            Ok(leases) => return Ok((leases, client)),
            // A permission is the same on every instance: no use trying the others.
            Err(e @ (ApiError::Forbidden { .. } | ApiError::Unauthorized { .. })) => {
                tried.push(url);
                last = Some(e);
                break;
            }
            Err(e) => {
                tried.push(url);
                last = Some(e);
            }
        }
    }
    Err(CheckError::Unreachable {
        tried: tried.join(", "),
        source: last.unwrap_or(ApiError::Failed {
            verb: "list",
            what: "leases".to_owned(),
            message: "no URL to ask".to_owned(),
        }),
    })
}

/// Sets `matches` and `problem` from what the instance answered.
fn judge(report: &mut InstanceReport, file_hash: &str) {
    if report.problem.is_some() {
        return;
    }
    report.evidence = if report.loaded_hash.is_some() {
        Evidence::ConfigHashMetric
    } else {
        Evidence::ProcessStartOnly
    };
    let Some(loaded) = report.loaded_hash.clone() else {
        report.problem = Some(Problem::NoConfigMetric);
        return;
    };
    let matches = loaded == file_hash;
    report.matches = Some(matches);
    if matches {
        return;
    }
    let r = &report.reloads;
    let reload_failed_last = r.failure > 0 && r.last_failure > r.last_success;
    report.problem = Some(if reload_failed_last {
        Problem::ReloadFailed {
            loaded_hash: loaded,
        }
    } else {
        Problem::LoadedOtherFile {
            loaded_hash: loaded,
        }
    });
}

/// Asks one instance; returns its report (hostname not yet known) and its `apiserver_id_hash`.
async fn check_instance(access: &ApiAccess, url: &str) -> (InstanceReport, Option<String>) {
    let mut report = InstanceReport {
        hostname: None,
        identity: None,
        url: url.to_owned(),
        version: None,
        loaded_hash: None,
        matches: None,
        reloads: Reloads::default(),
        kms_key_id_hashes: Vec::new(),
        kms_providers: None,
        process_start_time: None,
        evidence: Evidence::None,
        problem: None,
        canary: None,
    };
    let client = match access.client_for(url) {
        Ok(c) => c,
        Err(e) => {
            report.problem = Some(Problem::NotAnswered {
                error: e.to_string(),
            });
            return (report, None);
        }
    };
    let (version, samples, kms) = tokio::join!(
        client.apiserver_version(),
        read_metrics(&client),
        get_status(&client, "/readyz/kms-providers"),
    );
    let samples = match samples {
        Ok(s) => s,
        Err(e) => {
            report.problem = Some(Problem::NotAnswered {
                error: e.to_string(),
            });
            return (report, None);
        }
    };
    report.version = version.ok().map(|v| v.git_version);
    report.kms_providers = kms.ok().flatten();
    let id_hash = apply_samples(&mut report, &samples);
    (report, id_hash)
}

/// Fills the report from the kept samples; returns the instance's `apiserver_id_hash`.
fn apply_samples(report: &mut InstanceReport, samples: &[Sample]) -> Option<String> {
    let mut id_hash = None;
    for s in samples {
        if let Some(h) = s.label("apiserver_id_hash").filter(|h| !h.is_empty()) {
            id_hash.get_or_insert_with(|| h.to_owned());
        }
        let status = s.label("status");
        match s.name {
            metrics::LAST_CONFIG_INFO if s.value == 1.0 => {
                report.loaded_hash = s.label("hash").map(str::to_owned);
            }
            metrics::RELOADS_TOTAL if status == Some("success") => {
                report.reloads.success = s.value as u64;
            }
            metrics::RELOADS_TOTAL if status == Some("failure") => {
                report.reloads.failure = s.value as u64;
            }
            metrics::RELOAD_LAST_TIMESTAMP if status == Some("success") => {
                report.reloads.last_success = Some(s.value);
            }
            metrics::RELOAD_LAST_TIMESTAMP if status == Some("failure") => {
                report.reloads.last_failure = Some(s.value);
            }
            metrics::KMS_KEY_ID_STATUS => report.kms_key_id_hashes.push(KmsKeyIdHash {
                provider: s.label("provider_name").unwrap_or_default().to_owned(),
                key_id_hash: s.label("key_id_hash").unwrap_or_default().to_owned(),
                last_seen: s.value,
                matches_plugin: None,
            }),
            metrics::PROCESS_START => report.process_start_time = Some(s.value),
            _ => {}
        }
    }
    // Newest first: the first entry of a provider is the key ID it writes with now.
    report
        .kms_key_id_hashes
        .sort_by(|a, b| b.last_seen.total_cmp(&a.last_seen));
    id_hash
}

/// GETs `/metrics` and streams it through a [`MetricsReader`].
async fn read_metrics(client: &kube::Client) -> Result<Vec<Sample>, ApiError> {
    let what = "nonResourceURLs /metrics";
    let res = send_get(client, "/metrics", what).await?;
    let status = res.status().as_u16();
    if status != 200 {
        return Err(status_error(status, "get", what));
    }
    let mut body = res.into_body();
    let mut reader = MetricsReader::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::from_kube(e, "get", what))?;
        if let Some(data) = frame.data_ref() {
            reader.feed(data);
        }
    }
    Ok(reader.finish())
}

/// GETs a health path; `None` when the instance does not serve it (404).
async fn get_status(client: &kube::Client, path: &str) -> Result<Option<Health>, ApiError> {
    let res = send_get(client, path, path).await?;
    let status = res.status().as_u16();
    if status == 404 {
        return Ok(None);
    }
    Ok(Some(Health {
        status,
        ok: status == 200,
    }))
}

async fn send_get(
    client: &kube::Client,
    path: &str,
    what: &str,
) -> Result<http::Response<kube::client::Body>, ApiError> {
    let request = http::Request::get(path)
        .body(kube::client::Body::empty())
        .map_err(|e| ApiError::Failed {
            verb: "get",
            what: what.to_owned(),
            message: e.to_string(),
        })?;
    client
        .send(request)
        .await
        .map_err(|e| ApiError::from_kube(e, "get", what))
}

fn status_error(status: u16, verb: &'static str, what: &str) -> ApiError {
    match status {
        403 => ApiError::Forbidden {
            verb,
            what: what.to_owned(),
            message: "403 Forbidden".to_owned(),
        },
        401 => ApiError::Unauthorized {
            url: what.to_owned(),
        },
        s => ApiError::Failed {
            verb,
            what: what.to_owned(),
            message: format!("HTTP {s}"),
        },
    }
}

/// An error and its sources, joined with `: ` (kube's own messages are terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(loaded: Option<&str>, reloads: Reloads) -> InstanceReport {
        InstanceReport {
            hostname: None,
            identity: None,
            url: "https://127.0.0.1:6443".into(),
            version: None,
            loaded_hash: loaded.map(str::to_owned),
            matches: None,
            reloads,
            kms_key_id_hashes: vec![],
            kms_providers: None,
            process_start_time: None,
            evidence: Evidence::None,
            problem: None,
            canary: None,
        }
    }

    #[test]
    fn judges_match_other_file_failed_reload_and_absent_metric() {
        let mut r = instance(Some("sha256:a"), Reloads::default());
        judge(&mut r, "sha256:a");
        assert_eq!(r.evidence, Evidence::ConfigHashMetric);
        assert_eq!((r.matches, r.problem), (Some(true), None));

        let mut r = instance(Some("sha256:b"), Reloads::default());
        judge(&mut r, "sha256:a");
        assert_eq!(r.matches, Some(false));
        assert!(matches!(r.problem, Some(Problem::LoadedOtherFile { .. })));

        let failed = Reloads {
            success: 1,
            failure: 2,
            last_success: Some(10.0),
            last_failure: Some(20.0),
        };
        let mut r = instance(Some("sha256:b"), failed);
        judge(&mut r, "sha256:a");
        assert!(matches!(r.problem, Some(Problem::ReloadFailed { .. })));

        let mut r = instance(None, Reloads::default());
        judge(&mut r, "sha256:a");
        assert_eq!(
            (r.matches, r.problem),
            (None, Some(Problem::NoConfigMetric))
        );
    }
}
