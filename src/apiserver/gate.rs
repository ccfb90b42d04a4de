//! The gate: nothing is written while a known kube-apiserver has not loaded the config.
//!
//! Writing Secrets with a key that one kube-apiserver does not have makes them unreadable on
//! that instance: `rewrite` must wait until every instance runs the file it writes with;
//! rotation's `promote` until every instance runs the current file (so all can read the key
//! about to be promoted); `prune` until every instance runs the promoted file (so none still
//! writes with a key about to be removed). [`ApiserverGate::check`] runs
//! [`super::check::check_apiservers`] and refuses unless its verdict is `ok`.

use serde::Serialize;
use thiserror::Error;

use super::access::ApiAccess;
use super::check::{check_apiservers, ApiserversReport, CheckError};

/// Whether the gate runs, as the caller resolved it.
#[derive(Debug, Clone)]
pub enum ApiserverGate {
    /// Check through this access; `urls` are the instances to ask (empty: discover them).
    Required {
        /// Credentials and CA.
        access: Box<ApiAccess>,
        /// `--apiserver` URLs.
        urls: Vec<String>,
    },
    /// No API access is configured at all (no kubeconfig, not in a pod, not `--kubeadm`):
    /// proceed, warning loudly.
    SkippedNoAccess,
    /// `--no-apiserver-check`: the caller skips it on purpose.
    SkippedOnPurpose,
}

/// What the gate concluded when it let the write go ahead.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum GateOutcome {
    /// Every instance runs the file.
    Passed(Box<ApiserversReport>),
    /// Not checked; the text says why (`skipped: …`).
    Skipped(String),
}

impl GateOutcome {
    /// `"passed"` or `"skipped: …"`: the `apiserver_check` JSON field.
    pub fn summary(&self) -> String {
        match self {
            GateOutcome::Passed(r) => format!(
                "passed: {} apiserver(s) run {}",
                r.apiservers.len(),
                r.file_hash
            ),
            GateOutcome::Skipped(why) => why.clone(),
        }
    }

    /// A warning for stderr when the gate was skipped.
    pub fn warning(&self) -> Option<String> {
        match self {
            GateOutcome::Passed(_) => None,
            GateOutcome::Skipped(why) => Some(format!(
                "WARNING: not checking that every kube-apiserver has loaded the config ({why}); \
                 a key an apiserver does not have makes what it reads unreadable"
            )),
        }
    }
}

/// The text of [`GateOutcome::Skipped`] without API access.
pub const SKIPPED_NO_ACCESS: &str =
    "skipped: no Kubernetes API access configured (no --kubeconfig, KUBECONFIG, ~/.kube/config, service account or --kubeadm)";
/// The text of [`GateOutcome::Skipped`] with `--no-apiserver-check`.
pub const SKIPPED_ON_PURPOSE: &str = "skipped: --no-apiserver-check";

/// The gate refused: nothing was written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GateError {
    /// Some instance has not loaded the file (or could not be asked).
    #[error("{} kube-apiserver(s) have not loaded {file_hash}: {}", .lagging.len(), lagging_list(.lagging))]
    NotLoaded {
        /// The file's hash.
        file_hash: String,
        /// Each instance (hostname, or URL when unknown) and what is wrong.
        lagging: Vec<Lagging>,
    },
    /// The instances could not be listed at all.
    #[error("cannot check which config the kube-apiservers run: {0}")]
    Check(CheckError),
}

/// One instance the gate waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lagging {
    /// Its hostname, or its URL when no Lease matched it.
    pub apiserver: String,
    /// What is wrong.
    pub problem: String,
}

/// What is wrong with an instance listed in `not_checked`.
pub const NOT_CHECKED: &str =
    "holds a live identity Lease, but no URL asked answered for it: pass \
     its address with --apiserver (through a load balancer only one instance answers), or, if it \
     is gone for good, delete its Lease in kube-system";

fn lagging_list(lagging: &[Lagging]) -> String {
    lagging
        .iter()
        .map(|l| l.apiserver.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl GateError {
    /// What to do about it.
    pub fn advice(&self) -> String {
        match self {
            GateError::NotLoaded { .. } => "make every kube-apiserver load the file (copy it to each control-plane node and restart kube-apiserver there, or wait for automatic reload), check with `atrest apiservers --config FILE`, then run this again".to_owned(),
            GateError::Check(e) => format!("{}; or pass --no-apiserver-check if you have checked every kube-apiserver yourself", e.advice()),
        }
    }
}

impl ApiserverGate {
    /// The loud warning for stderr when the gate is skipped (before anything is written).
    pub fn warning(&self) -> Option<String> {
        let why = match self {
            ApiserverGate::Required { .. } => return None,
            ApiserverGate::SkippedNoAccess => SKIPPED_NO_ACCESS,
            ApiserverGate::SkippedOnPurpose => SKIPPED_ON_PURPOSE,
        };
        GateOutcome::Skipped(why.to_owned()).warning()
    }

    /// Runs the gate for the config file `file_bytes`.
    pub async fn check(&self, file_bytes: &[u8]) -> Result<GateOutcome, GateError> {
        match self {
            ApiserverGate::Required { access, urls } => require_loaded(access, file_bytes, urls)
                .await
                .map(|r| GateOutcome::Passed(Box::new(r))),
            ApiserverGate::SkippedNoAccess => {
                Ok(GateOutcome::Skipped(SKIPPED_NO_ACCESS.to_owned()))
            }
            ApiserverGate::SkippedOnPurpose => {
                Ok(GateOutcome::Skipped(SKIPPED_ON_PURPOSE.to_owned()))
            }
        }
    }
}

/// Refuses unless every kube-apiserver holding a live identity Lease has loaded exactly
/// `file_bytes` (see [`check_apiservers`]).
pub async fn require_loaded(
    access: &ApiAccess,
    file_bytes: &[u8],
    urls: &[String],
) -> Result<ApiserversReport, GateError> {
    let report = check_apiservers(access, file_bytes, urls).await?;
    if report.ok {
        return Ok(report);
    }
    Err(GateError::NotLoaded {
        file_hash: report.file_hash.clone(),
        lagging: lagging(&report),
    })
}

/// Every instance that keeps the report from being `ok`, named by hostname (else URL).
pub fn lagging(report: &ApiserversReport) -> Vec<Lagging> {
    let mut out: Vec<Lagging> = report
        .apiservers
        .iter()
        .filter_map(|a| {
            let problem = a.problem.as_ref()?;
            Some(Lagging {
                apiserver: a.hostname.clone().unwrap_or_else(|| a.url.clone()),
                problem: problem.describe(),
            })
        })
        .collect();
    out.extend(report.not_checked.iter().map(|n| Lagging {
        apiserver: n.hostname.clone(),
        problem: NOT_CHECKED.to_owned(),
    }));
    if out.is_empty() && report.apiservers.is_empty() {
        out.push(Lagging {
            apiserver: "(none)".to_owned(),
            problem: "no kube-apiserver was checked".to_owned(),
        });
    }
    out
}

/// A gate bound to the config file a write will use: what [`crate::rewrite::RewriteOptions`]
/// carries so that the rewrite itself runs the gate before its first write. `Debug` prints the
/// file's length, never its bytes (they hold keys).
#[derive(Clone)]
pub struct GateCheck {
    /// Whether and how to check.
    pub gate: ApiserverGate,
    /// The bytes of the config file every instance must have loaded (keys included: wiped
    /// when dropped).
    pub file_bytes: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for GateCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateCheck")
            .field("gate", &self.gate)
            .field(
                "file_bytes",
                &format_args!("{} bytes", self.file_bytes.len()),
            )
            .finish()
    }
}

impl GateCheck {
    /// Runs the gate (see [`ApiserverGate::check`]).
    pub async fn run(&self) -> Result<GateOutcome, GateError> {
        self.gate.check(&self.file_bytes).await
    }
}

impl From<CheckError> for GateError {
    fn from(e: CheckError) -> Self {
        GateError::Check(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_config_bytes() {
        let check = GateCheck {
            gate: ApiserverGate::SkippedOnPurpose,
            file_bytes: zeroize::Zeroizing::new(b"secret: c2VjcmV0".to_vec()),
        };
        let text = format!("{check:?}");
        assert!(
            text.contains("16 bytes") && !text.contains("c2VjcmV0"),
            "{text}"
        );
    }
    use crate::apiserver::check::{Evidence, InstanceReport, NotChecked, Problem, Reloads};

    #[test]
    fn a_refusal_names_each_lagging_apiserver_by_hostname_else_url() {
        let instance = |hostname: Option<&str>, problem| InstanceReport {
            hostname: hostname.map(str::to_owned),
            identity: None,
            url: "https://10.0.0.9:6443".to_owned(),
            version: None,
            loaded_hash: None,
            matches: None,
            reloads: Reloads::default(),
            kms_key_id_hashes: Vec::new(),
            kms_providers: None,
            process_start_time: None,
            evidence: Evidence::None,
            problem,
            canary: None,
        };
        let report = ApiserversReport {
            schema_version: 1,
            file_hash: "sha256:f".to_owned(),
            apiservers: vec![
                instance(Some("cp-1"), None),
                instance(
                    Some("cp-2"),
                    Some(Problem::LoadedOtherFile {
                        loaded_hash: "sha256:o".to_owned(),
                    }),
                ),
                instance(
                    None,
                    Some(Problem::NotAnswered {
                        error: "connection refused".to_owned(),
                    }),
                ),
            ],
            not_checked: vec![NotChecked {
                hostname: "cp-3".to_owned(),
                identity: "apiserver-x".to_owned(),
                renewed_seconds_ago: Some(5),
            }],
            ok: false,
            kms_plugins: Vec::new(),
        };
        let lagging = lagging(&report);
        let names: Vec<_> = lagging.iter().map(|l| l.apiserver.as_str()).collect();
        assert_eq!(names, ["cp-2", "https://10.0.0.9:6443", "cp-3"]);
        let e = GateError::NotLoaded {
            file_hash: report.file_hash.clone(),
            lagging,
        };
        assert_eq!(
            e.to_string(),
            "3 kube-apiserver(s) have not loaded sha256:f: cp-2, https://10.0.0.9:6443, cp-3"
        );
        assert!(e.advice().contains("atrest apiservers"));
    }
}
