//! Reaching the Kubernetes API: which credentials, and each kube-apiserver at its own URL.
//!
//! Resolution follows kubectl: `--kubeconfig FILE`, else `KUBECONFIG` (a list of files, merged),
//! else `~/.kube/config`, else the in-cluster service account (`KUBERNETES_SERVICE_HOST`);
//! `--kubeadm` reads `/etc/kubernetes/admin.conf`. `--context` picks a context. Through a load
//! balancer only one instance answers, so [`ApiAccess::client_for`] builds a client for one
//! instance's URL with the same credentials and CA.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use thiserror::Error;

/// Where kubeadm writes the cluster-admin kubeconfig.
pub const KUBEADM_ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";

/// How long connecting to one instance may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one answer may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the credentials come from (the parsed `--kubeconfig`/`--context`/`--kubeadm`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessOptions {
    /// `--kubeconfig FILE`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context NAME`.
    pub context: Option<String>,
    /// `--kubeadm`: `/etc/kubernetes/admin.conf`.
    pub kubeadm: bool,
}

/// Credentials and CA for the Kubernetes API, and where they came from.
#[derive(Clone)]
pub struct ApiAccess {
    config: kube::Config,
    source: String,
}

impl std::fmt::Debug for ApiAccess {
    // kube::Config holds the credentials: show only where they came from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccess")
            .field("source", &self.source)
            .field("cluster_url", &self.config.cluster_url.to_string())
            .finish_non_exhaustive()
    }
}

/// Why the Kubernetes API access could not be set up (exit 2: a configuration error).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A kubeconfig could not be read or used.
    #[error("cannot use the kubeconfig {source_name}: {message}")]
    Kubeconfig {
        /// The file (or `KUBECONFIG`).
        source_name: String,
        /// What kube's loader said.
        message: String,
    },
    /// The in-cluster service account could not be used.
    #[error("cannot use the in-cluster service account: {0}")]
    InCluster(String),
    /// A URL given for an instance is not a URL.
    #[error("{url:?} is not a kube-apiserver URL: {message}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it is not one.
        message: String,
    },
    /// The HTTP client could not be built (TLS material in the kubeconfig).
    #[error("cannot build a Kubernetes client for {url}: {message}")]
    Client {
        /// The instance URL.
        url: String,
        /// What kube said.
        message: String,
    },
}

impl AccessError {
    /// What to do about it.
    pub fn advice(&self) -> String {
        match self {
            AccessError::Kubeconfig { .. } => "pass --kubeconfig FILE (and --context NAME) for a working kubeconfig, or --kubeadm on a control-plane node".to_owned(),
            AccessError::InCluster(_) => "run inside a pod with a service account token mounted, or pass --kubeconfig".to_owned(),
            AccessError::BadUrl { .. } => "give each --apiserver as https://HOST:PORT".to_owned(),
            AccessError::Client { .. } => "check the kubeconfig's certificate-authority-data and client certificate".to_owned(),
        }
    }
}

impl ApiAccess {
    /// Resolves the credentials; `Ok(None)` when none are configured at all (no `--kubeconfig`,
    /// no `KUBECONFIG`, no `~/.kube/config`, not in a pod, not `--kubeadm`).
    pub async fn resolve(options: &AccessOptions) -> Result<Option<ApiAccess>, AccessError> {
        let kube_options = KubeConfigOptions {
            context: options.context.clone(),
            ..KubeConfigOptions::default()
        };
        let explicit = if options.kubeadm {
            Some(PathBuf::from(KUBEADM_ADMIN_CONF))
        } else {
            options.kubeconfig.clone()
        };
        let (kubeconfig, source) = if let Some(path) = explicit {
            let source = path.display().to_string();
            let kc = Kubeconfig::read_from(&path).map_err(|e| kubeconfig_error(&source, e))?;
            (kc, source)
        } else if let Some(kc) =
            Kubeconfig::from_env().map_err(|e| kubeconfig_error("KUBECONFIG", e))?
        {
            (kc, "KUBECONFIG".to_owned())
        } else if let Some(path) = home_kubeconfig().filter(|p| p.is_file()) {
            let source = path.display().to_string();
            let kc = Kubeconfig::read_from(&path).map_err(|e| kubeconfig_error(&source, e))?;
            (kc, source)
        } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            let config =
                kube::Config::incluster().map_err(|e| AccessError::InCluster(e.to_string()))?;
            return Ok(Some(ApiAccess::new(config, "in-cluster service account")));
        } else {
            return Ok(None);
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube_options)
            .await
            .map_err(|e| kubeconfig_error(&source, e))?;
        Ok(Some(ApiAccess::new(config, &source)))
    }

    /// Access from an already built kube [`kube::Config`] (a library user's own).
    pub fn new(mut config: kube::Config, source: &str) -> ApiAccess {
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        ApiAccess {
            config,
            source: source.to_owned(),
        }
    }

    /// Where the credentials came from (a path, `KUBECONFIG` or the service account).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The URL the kubeconfig names (often a load balancer).
    pub fn cluster_url(&self) -> String {
        trim_url(&self.config.cluster_url.to_string())
    }

    /// A client for the kubeconfig's own URL.
    pub fn client(&self) -> Result<kube::Client, AccessError> {
        self.client_for(&self.cluster_url())
    }

    /// A client for one instance at `url`, with the kubeconfig's credentials and CA.
    pub fn client_for(&self, url: &str) -> Result<kube::Client, AccessError> {
        let mut config = self.config.clone();
        config.cluster_url =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| AccessError::BadUrl {
                    url: url.to_owned(),
                    message: e.to_string(),
                })?;
        kube::Client::try_from(config).map_err(|e| AccessError::Client {
            url: url.to_owned(),
            message: e.to_string(),
        })
    }
}

/// `https://h:p/` → `https://h:p`.
pub(crate) fn trim_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

fn home_kubeconfig() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube").join("config"))
}

fn kubeconfig_error(source: &str, e: kube::config::KubeconfigError) -> AccessError {
    AccessError::Kubeconfig {
        source_name: source.to_owned(),
        message: e.to_string(),
    }
}
