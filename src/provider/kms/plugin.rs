//! Clients for KMS plugins over their unix socket.
//!
//! kube-apiserver talks to a KMS plugin with gRPC over a unix socket (`unix:///path` in the
//! config's `kms.endpoint`). This module speaks the same API:
//!
//! - **v2** (`/v2.KeyManagementService/{Status,Decrypt,Encrypt}`, k8s.io/kms `apis/v2`):
//!   `Status` gives the API version (`"v2"`), `healthz` (`"ok"` or the reason) and the current
//!   key ID; `Decrypt` takes the stored encrypted DEK source with its key ID and annotations.
//! - **v1** (`/v1beta1.KeyManagementService/{Version,Decrypt,Encrypt}`, deprecated): for values
//!   older clusters wrote.
//!
//! The messages are compiled from `proto/kms/` (written from the upstream `.proto` files, same
//! packages and field numbers) by `build.rs`.
//!
//! # Sync callers, async plugin
//!
//! [`crate::provider`] and [`crate::transform`] are sync and are called from inside the async
//! audit and rewrite loops. A [`PluginClient`] therefore owns a small runtime of its own (one
//! worker thread) and its [`KmsPlugin`] methods block the caller until the call returns or its
//! timeout passes — never longer. Providers call the plugin once per distinct encrypted DEK
//! and cache the result, so these blocking calls are rare (a handful per run).
//!
//! Nothing secret is logged or put into errors: the DEK or seed travels only inside
//! [`Zeroizing`] buffers.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use zeroize::Zeroizing;

/// The gRPC messages and services (client and server) of the KMS plugin API.
pub mod proto {
    /// KMS v2: `package v2` of k8s.io/kms `apis/v2/api.proto`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v2 {
        tonic::include_proto!("v2");
    }
    /// KMS v1: `package v1beta1` of k8s.io/kms `apis/v1beta1/api.proto`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1beta1 {
        tonic::include_proto!("v1beta1");
    }
}

/// kube-apiserver's default plugin call timeout (`kms.timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The plugin API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `v1beta1` (config `apiVersion: v1`).
    V1,
    /// `v2`.
    V2,
}

/// What a plugin says about itself (v2 `Status`; v1 `Version`, with `healthz` "ok" and no key
/// ID, since v1 has neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginStatus {
    /// The API version the plugin reports (`v2`, `v1beta1`).
    pub version: String,
    /// `ok`, or the plugin's reason for being unhealthy.
    pub healthz: String,
    /// The plugin's current key ID (v2; empty for v1).
    pub key_id: String,
}

impl PluginStatus {
    /// Whether the plugin is healthy (`healthz` is `ok`).
    pub fn is_healthy(&self) -> bool {
        self.healthz == "ok"
    }
}

/// A request to decrypt a DEK (or DEK seed).
#[derive(Debug, Clone, Copy)]
pub struct DecryptRequest<'a> {
    /// The stored encrypted DEK (source).
    pub ciphertext: &'a [u8],
    /// v2: the stored key ID (ignored by v1).
    pub key_id: &'a str,
    /// v2: the stored annotations (ignored by v1).
    pub annotations: &'a HashMap<String, Vec<u8>>,
}

/// What a plugin's `Encrypt` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptResponse {
    /// The encrypted DEK (source), stored as is.
    pub ciphertext: Vec<u8>,
    /// v2: the key ID that encrypted it (empty for v1).
    pub key_id: String,
    /// v2: annotations to store with the value.
    pub annotations: HashMap<String, Vec<u8>>,
}

/// A KMS plugin, as [`crate::provider::kms`] uses it. Implemented by [`PluginClient`]; a library
/// user can implement it over another transport.
pub trait KmsPlugin: Send + Sync + fmt::Debug {
    /// The API this plugin speaks.
    fn api(&self) -> Api;
    /// Where the plugin is (`unix:///path`), for messages.
    fn endpoint(&self) -> &str;
    /// Version, health and (v2) the current key ID.
    fn status(&self) -> Result<PluginStatus, KmsError>;
    /// Decrypts a DEK or seed.
    fn decrypt(&self, request: DecryptRequest<'_>) -> Result<Zeroizing<Vec<u8>>, KmsError>;
    /// Encrypts a DEK or seed.
    fn encrypt(&self, plaintext: &[u8]) -> Result<EncryptResponse, KmsError>;
}

/// Why a plugin call failed. Every message names the provider and the socket.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KmsError {
    /// The endpoint is not `unix:///absolute/path`.
    #[error(
        "kms provider {provider:?}: endpoint {endpoint:?} is not unix:///absolute/path — fix \
         kms.endpoint in the config or pass --kms-endpoint {provider}=unix:///path"
    )]
    Endpoint {
        /// The provider's name.
        provider: String,
        /// The endpoint as given.
        endpoint: String,
    },
    /// Nothing answers on the socket.
    #[error(
        "kms provider {provider:?}: cannot reach the plugin at {endpoint}: {reason} — check that \
         the plugin runs and listens on that socket (pass --kms-endpoint {provider}=unix:///path \
         if it is mounted elsewhere, or --no-kms to only recognise KMS entries)"
    )]
    Unreachable {
        /// The provider's name.
        provider: String,
        /// The socket.
        endpoint: String,
        /// What the transport said.
        reason: String,
    },
    /// Another local user could stand in for the plugin, which receives the plaintext DEK or
    /// seed: the socket or its directory is owned by someone other than root and the user
    /// running atrest, or the directory is writable by others (without root's sticky bit).
    #[error(
        "kms provider {provider:?}: refusing the plugin socket {endpoint}: {reason} — the plugin \
         receives plaintext keys, so only root or the user running atrest may own the socket \
         and its directory, and no one else may write to that directory; fix the ownership or \
         mode, or pass --kms-endpoint {provider}=unix:///path for a protected socket"
    )]
    UnsafeSocket {
        /// The provider's name.
        provider: String,
        /// The socket.
        endpoint: String,
        /// Which file is owned or writable by whom.
        reason: String,
    },
    /// The plugin did not answer in time.
    #[error(
        "kms provider {provider:?}: the plugin at {endpoint} did not answer {call} within {}s — \
         check the plugin's health and logs (or raise the provider's kms.timeout)",
        timeout.as_secs_f64()
    )]
    Timeout {
        /// The provider's name.
        provider: String,
        /// The socket.
        endpoint: String,
        /// The RPC (`Status`, `Decrypt`, …).
        call: &'static str,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The plugin answered with an error.
    #[error(
        "kms provider {provider:?}: the plugin at {endpoint} failed {call}: {code}: {message}"
    )]
    Call {
        /// The provider's name.
        provider: String,
        /// The socket.
        endpoint: String,
        /// The RPC.
        call: &'static str,
        /// The gRPC status code.
        code: String,
        /// The plugin's own message.
        message: String,
    },
}

/// A gRPC client for one KMS plugin, over its unix socket, with a per-call timeout.
pub struct PluginClient {
    provider: String,
    endpoint: String,
    path: PathBuf,
    api: Api,
    timeout: Duration,
    channel: tonic::transport::Channel,
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for PluginClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginClient")
            .field("provider", &self.provider)
            .field("endpoint", &self.endpoint)
            .field("api", &self.api)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `unix:///path` → `/path` (kube-apiserver accepts only the unix scheme with a path).
pub fn socket_path(endpoint: &str) -> Option<PathBuf> {
    let (scheme, rest) = endpoint.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("unix") {
        return None;
    }
    // `unix:///abs` (empty host) or `unix://abs` (kube's url parse takes host+path).
    let path = if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    };
    (path.len() > 1).then(|| PathBuf::from(path))
}

/// Checks that only root or the user running atrest controls the socket at `path`: the socket
/// (and, when `path` is a symbolic link, the link) is owned by root or the effective uid, and
/// so is its directory, which no one else may write to unless it is root's and sticky (like
/// `/tmp`). A socket that does not exist passes: dialing it reports that.
pub(crate) fn check_socket(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let euid = rustix::process::geteuid().as_raw();
    let trusted = |uid: u32| uid == 0 || uid == euid;
    let Ok(link) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !trusted(link.uid()) {
        return Err(format!("{} is owned by uid {}", path.display(), link.uid()));
    }
    let Ok(real) = std::fs::canonicalize(path) else {
        return Ok(());
    };
    let socket =
        std::fs::metadata(&real).map_err(|e| format!("cannot inspect {}: {e}", real.display()))?;
    if !trusted(socket.uid()) {
        return Err(format!(
            "{} is owned by uid {}",
            real.display(),
            socket.uid()
        ));
    }
    let dir = real.parent().unwrap_or(Path::new("/"));
    let d = std::fs::metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    if !trusted(d.uid()) {
        return Err(format!(
            "its directory {} is owned by uid {}",
            dir.display(),
            d.uid()
        ));
    }
    let mode = d.mode() & 0o7777;
    if mode & 0o022 != 0 && !(d.uid() == 0 && mode & 0o1000 != 0) {
        return Err(format!(
            "its directory {} is writable by group or others (mode {mode:04o})",
            dir.display()
        ));
    }
    Ok(())
}

impl PluginClient {
    /// Prepares a client for the plugin of provider `provider` at `endpoint` (`unix:///path`).
    /// Connecting is lazy: the first call reaches the socket (use [`KmsPlugin::status`] to fail
    /// fast).
    pub fn new(
        provider: &str,
        endpoint: &str,
        api: Api,
        timeout: Duration,
    ) -> Result<Self, KmsError> {
        let path = socket_path(endpoint).ok_or_else(|| KmsError::Endpoint {
            provider: provider.to_owned(),
            endpoint: endpoint.to_owned(),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("atrest-kms")
            .enable_all()
            .build()
            .map_err(|e| KmsError::Unreachable {
                provider: provider.to_owned(),
                endpoint: endpoint.to_owned(),
                reason: format!("cannot start the client runtime: {e}"),
            })?;
        let channel = {
            let _guard = runtime.enter();
            // The URI is required by tonic but unused: the connector dials the socket.
            tonic::transport::Endpoint::from_static("http://kms.plugin")
                .connect_timeout(timeout)
                .timeout(timeout)
                .connect_with_connector_lazy(tower::service_fn({
                    let path = path.clone();
                    move |_| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    }
                }))
        };
        Ok(PluginClient {
            provider: provider.to_owned(),
            endpoint: endpoint.to_owned(),
            path,
            api,
            timeout,
            channel,
            runtime: Some(runtime),
        })
    }

    /// The provider name this client serves.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Runs one call on the client's runtime and waits for it, at most the timeout.
    fn call<T, F>(&self, call: &'static str, fut: F) -> Result<T, KmsError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, tonic::Status>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        let Some(runtime) = &self.runtime else {
            return Err(self.unreachable("the client was shut down".to_owned()));
        };
        // Checked before every call (a few stat calls), so a socket replaced while atrest runs
        // is caught too.
        check_socket(&self.path).map_err(|reason| KmsError::UnsafeSocket {
            provider: self.provider.clone(),
            endpoint: self.endpoint.clone(),
            reason,
        })?;
        runtime.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, fut).await);
        });
        // The spawned task always sends within the timeout; a little slack covers scheduling.
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(status))) => Err(self.status_error(call, status)),
            Ok(Err(_)) | Err(_) => Err(KmsError::Timeout {
                provider: self.provider.clone(),
                endpoint: self.endpoint.clone(),
                call,
                timeout,
            }),
        }
    }

    fn unreachable(&self, reason: String) -> KmsError {
        KmsError::Unreachable {
            provider: self.provider.clone(),
            endpoint: self.endpoint.clone(),
            reason,
        }
    }

    fn status_error(&self, call: &'static str, status: tonic::Status) -> KmsError {
        use std::error::Error as _;
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown
                if status.source().is_some() || status.message().contains("transport") =>
            {
                // Connection errors: name the innermost cause (e.g. "No such file or directory").
                let mut reason = status.message().to_owned();
                let mut source = status.source();
                while let Some(s) = source {
                    reason = s.to_string();
                    source = s.source();
                }
                self.unreachable(reason)
            }
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => KmsError::Timeout {
                provider: self.provider.clone(),
                endpoint: self.endpoint.clone(),
                call,
                timeout: self.timeout,
            },
            code => KmsError::Call {
                provider: self.provider.clone(),
                endpoint: self.endpoint.clone(),
                call,
                code: format!("{code:?}"),
                message: status.message().to_owned(),
            },
        }
    }
}

impl Drop for PluginClient {
    fn drop(&mut self) {
        // Dropping a runtime blocks; inside an async caller that would panic.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A random RFC 4122 v4 UID for a request, as kube-apiserver sends.
fn request_uid() -> String {
    let mut b = [0u8; 16];
    crate::secret::fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl KmsPlugin for PluginClient {
    fn api(&self) -> Api {
        self.api
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn status(&self) -> Result<PluginStatus, KmsError> {
        let channel = self.channel.clone();
        match self.api {
            Api::V2 => {
                use proto::v2::key_management_service_client::KeyManagementServiceClient;
                let r = self.call("Status", async move {
                    KeyManagementServiceClient::new(channel)
                        .status(proto::v2::StatusRequest {})
                        .await
                })?;
                let r = r.into_inner();
                Ok(PluginStatus {
                    version: r.version,
                    healthz: r.healthz,
                    key_id: r.key_id,
                })
            }
            Api::V1 => {
                use proto::v1beta1::key_management_service_client::KeyManagementServiceClient;
                let r = self.call("Version", async move {
                    KeyManagementServiceClient::new(channel)
                        .version(proto::v1beta1::VersionRequest {
                            version: "v1beta1".to_owned(),
                        })
                        .await
                })?;
                Ok(PluginStatus {
                    version: r.into_inner().version,
                    healthz: "ok".to_owned(),
                    key_id: String::new(),
                })
            }
        }
    }

    fn decrypt(&self, request: DecryptRequest<'_>) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let channel = self.channel.clone();
        match self.api {
            Api::V2 => {
                use proto::v2::key_management_service_client::KeyManagementServiceClient;
                let req = proto::v2::DecryptRequest {
                    ciphertext: request.ciphertext.to_vec(),
                    uid: request_uid(),
                    key_id: request.key_id.to_owned(),
                    annotations: request.annotations.clone(),
                };
                let r = self.call("Decrypt", async move {
                    KeyManagementServiceClient::new(channel).decrypt(req).await
                })?;
                Ok(Zeroizing::new(r.into_inner().plaintext))
            }
            Api::V1 => {
                use proto::v1beta1::key_management_service_client::KeyManagementServiceClient;
                let req = proto::v1beta1::DecryptRequest {
                    version: "v1beta1".to_owned(),
                    cipher: request.ciphertext.to_vec(),
                };
                let r = self.call("Decrypt", async move {
                    KeyManagementServiceClient::new(channel).decrypt(req).await
                })?;
                Ok(Zeroizing::new(r.into_inner().plain))
            }
        }
    }

    fn encrypt(&self, plaintext: &[u8]) -> Result<EncryptResponse, KmsError> {
        let channel = self.channel.clone();
        match self.api {
            Api::V2 => {
                use proto::v2::key_management_service_client::KeyManagementServiceClient;
                let req = Zeroizing::new(plaintext.to_vec());
                let uid = request_uid();
                let r = self.call("Encrypt", async move {
                    let msg = proto::v2::EncryptRequest {
                        plaintext: req.to_vec(),
                        uid,
                    };
                    let r = KeyManagementServiceClient::new(channel).encrypt(msg).await;
                    drop(req);
                    r
                })?;
                let r = r.into_inner();
                Ok(EncryptResponse {
                    ciphertext: r.ciphertext,
                    key_id: r.key_id,
                    annotations: r.annotations,
                })
            }
            Api::V1 => {
                use proto::v1beta1::key_management_service_client::KeyManagementServiceClient;
                let req = Zeroizing::new(plaintext.to_vec());
                let r = self.call("Encrypt", async move {
                    let msg = proto::v1beta1::EncryptRequest {
                        version: "v1beta1".to_owned(),
                        plain: req.to_vec(),
                    };
                    KeyManagementServiceClient::new(channel).encrypt(msg).await
                })?;
                Ok(EncryptResponse {
                    ciphertext: r.into_inner().cipher,
                    key_id: String::new(),
                    annotations: HashMap::new(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths() {
        assert_eq!(
            socket_path("unix:///var/run/kms.sock"),
            Some(PathBuf::from("/var/run/kms.sock"))
        );
        assert_eq!(
            socket_path("unix://tmp/k.sock"),
            Some(PathBuf::from("/tmp/k.sock"))
        );
        assert_eq!(socket_path("tcp://127.0.0.1:1"), None);
        assert_eq!(socket_path("unix://"), None);
        assert_eq!(socket_path("/tmp/k.sock"), None);
    }

    #[test]
    fn missing_socket_is_unreachable_and_named() {
        let c = PluginClient::new(
            "vault",
            "unix:///nonexistent/atrest-kms.sock",
            Api::V2,
            Duration::from_secs(2),
        )
        .unwrap();
        let e = c.status().unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, KmsError::Unreachable { .. }), "{e:?}");
        assert!(text.contains("\"vault\"") && text.contains("/nonexistent/atrest-kms.sock"));
    }

    #[test]
    fn issue_22_7_socket_owned_or_writable_by_another_user_is_refused() {
        use std::os::unix::fs::{chown, PermissionsExt};
        if rustix::process::geteuid().as_raw() != 0 {
            return; // chown needs root (the test machines run as root)
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("kms.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let mode = |m: u32| {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m)).unwrap();
        };
        mode(0o700);
        assert_eq!(check_socket(&sock), Ok(()));
        assert_eq!(check_socket(&dir.path().join("missing.sock")), Ok(()));

        // Another user's socket: refused through the client too, before any call.
        chown(&sock, Some(1234), Some(1234)).unwrap();
        let e = check_socket(&sock).unwrap_err();
        assert!(e.contains("is owned by uid 1234"), "{e}");
        let endpoint = format!("unix://{}", sock.display());
        let c = PluginClient::new("vault", &endpoint, Api::V2, Duration::from_secs(2)).unwrap();
        let e = c.status().unwrap_err();
        assert!(matches!(e, KmsError::UnsafeSocket { .. }), "{e:?}");
        assert!(e.to_string().contains("--kms-endpoint vault="), "{e}");
        chown(&sock, Some(0), Some(0)).unwrap();

        // A link to it, made by another user.
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&sock, &link).unwrap();
        assert_eq!(check_socket(&link), Ok(()));
        std::os::unix::fs::lchown(&link, Some(1234), None).unwrap();
        assert!(check_socket(&link)
            .unwrap_err()
            .contains("owned by uid 1234"));

        // A directory others can write to, unless root's and sticky.
        mode(0o777);
        let e = check_socket(&sock).unwrap_err();
        assert!(e.contains("writable by group or others (mode 0777)"), "{e}");
        mode(0o770);
        assert!(check_socket(&sock).is_err());
        mode(0o1777);
        assert_eq!(check_socket(&sock), Ok(()));
        // Another user's directory.
        mode(0o700);
        chown(dir.path(), Some(1234), None).unwrap();
        let e = check_socket(&sock).unwrap_err();
        assert!(e.contains("its directory") && e.contains("uid 1234"), "{e}");
        chown(dir.path(), Some(0), None).unwrap();
    }

    #[test]
    fn uids_look_like_uuids() {
        let u = request_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, request_uid());
    }
}
