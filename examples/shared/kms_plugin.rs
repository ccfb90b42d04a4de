//! A small KMS v2 (and v1) plugin with a local key-encryption key, serving gRPC on a unix socket
//! exactly as a real plugin does. For trying atrest and for its tests; **not for production**:
//! its KEKs are derived from their key IDs, so anyone can unwrap what it wraps.
//!
//! Wrapped DEK layout: `atp1:` | key ID length (u8) | key ID | nonce (12) | AES-256-GCM(KEK, DEK,
//! AAD = key ID) — the KEK for key ID `k` is SHA-256(`atrest-test-plugin-kek:` ‖ k), so after a
//! rotation the plugin still unwraps DEKs of older key IDs, as a real KMS does.
//!
//! Switches, read from `<control dir>/control` on every call (`name=value` lines, so tests
//! and users can change them while it runs):
//! - `key_id=kek-2`: the current key ID (rotation); default from `--key-id`, else `kek-1`;
//! - `healthz=disk on fire`: what `Status` reports instead of `ok`;
//! - `version=v1`: what `Status` reports as the API version instead of `v2`;
//! - `fail_decrypt=true`: every `Decrypt` fails;
//! - `corrupt_decrypt=true`: every v2 `Decrypt` answers with other bytes (a plugin that cannot
//!   open its own `Encrypt` output);
//! - `fail_encrypt=true`: every `Encrypt` fails;
//! - `delay_ms=5000`: every call waits that long first (a slow or hanging plugin).
//!
//! Call counts are written to `<control dir>/calls` after every call: lines `status N`,
//! `decrypt N`, `encrypt N` (v1 and v2 together; v1 `Version` counts as `status`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm};
use atrest::provider::kms::plugin::proto::{v1beta1, v2};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

/// How to run the plugin.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The socket to listen on.
    pub(crate) socket: PathBuf,
    /// Where `control` is read and `calls` written.
    pub(crate) control_dir: PathBuf,
    /// The initial current key ID.
    pub(crate) key_id: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct Calls {
    status: u64,
    decrypt: u64,
    encrypt: u64,
}

#[derive(Debug, Clone)]
struct Plugin {
    opts: Arc<Options>,
    calls: Arc<Mutex<Calls>>,
}

#[derive(Debug, Default)]
struct Switches {
    key_id: Option<String>,
    healthz: Option<String>,
    version: Option<String>,
    fail_decrypt: bool,
    corrupt_decrypt: bool,
    fail_encrypt: bool,
    delay: Duration,
}

impl Plugin {
    fn switches(&self) -> Switches {
        let text =
            std::fs::read_to_string(self.opts.control_dir.join("control")).unwrap_or_default();
        let mut s = Switches::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().to_owned();
            match k.trim() {
                "key_id" => s.key_id = Some(v),
                "healthz" => s.healthz = Some(v),
                "version" => s.version = Some(v),
                "fail_decrypt" => s.fail_decrypt = v == "true",
                "corrupt_decrypt" => s.corrupt_decrypt = v == "true",
                "fail_encrypt" => s.fail_encrypt = v == "true",
                "delay_ms" => s.delay = Duration::from_millis(v.parse().unwrap_or(0)),
                _ => {}
            }
        }
        s
    }

    /// Counts a call, applies the delay switch, and returns the switches.
    async fn begin(&self, count: impl FnOnce(&mut Calls)) -> Switches {
        {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            count(&mut calls);
            let text = format!(
                "status {}\ndecrypt {}\nencrypt {}\n",
                calls.status, calls.decrypt, calls.encrypt
            );
            let tmp = self.opts.control_dir.join("calls.tmp");
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, self.opts.control_dir.join("calls"));
            }
        }
        let s = self.switches();
        if !s.delay.is_zero() {
            tokio::time::sleep(s.delay).await;
        }
        s
    }

    fn current_key_id(&self, s: &Switches) -> String {
        s.key_id.clone().unwrap_or_else(|| self.opts.key_id.clone())
    }
}

fn kek(key_id: &str) -> Aes256Gcm {
    let digest = Sha256::new()
        .chain_update(b"atrest-test-plugin-kek:")
        .chain_update(key_id.as_bytes())
        .finalize();
    Aes256Gcm::new(&digest)
}

fn wrap(key_id: &str, dek: &[u8]) -> Result<Vec<u8>, Status> {
    let id = u8::try_from(key_id.len()).map_err(|_| Status::internal("key ID too long"))?;
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ct = kek(key_id)
        .encrypt(
            &nonce,
            Payload {
                msg: dek,
                aad: key_id.as_bytes(),
            },
        )
        .map_err(|_| Status::internal("wrap failed"))?;
    let mut out = b"atp1:".to_vec();
    out.push(id);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Unwraps; `expected_key_id` (v2) must match the key ID inside.
fn unwrap(wrapped: &[u8], expected_key_id: Option<&str>) -> Result<Vec<u8>, Status> {
    let bad = || Status::invalid_argument("not a ciphertext of this plugin");
    let rest = wrapped.strip_prefix(b"atp1:").ok_or_else(bad)?;
    let (&n, rest) = rest.split_first().ok_or_else(bad)?;
    if rest.len() < usize::from(n) + 12 + 16 {
        return Err(bad());
    }
    let (id, rest) = rest.split_at(usize::from(n));
    let key_id = std::str::from_utf8(id).map_err(|_| bad())?;
    if let Some(expected) = expected_key_id {
        if expected != key_id {
            return Err(Status::invalid_argument(format!(
                "key ID {expected:?} does not match the ciphertext's {key_id:?}"
            )));
        }
    }
    let (nonce, ct) = rest.split_at(12);
    kek(key_id)
        .decrypt(
            nonce.into(),
            Payload {
                msg: ct,
                aad: key_id.as_bytes(),
            },
        )
        .map_err(|_| Status::invalid_argument("authentication failed"))
}

#[tonic::async_trait]
impl v2::key_management_service_server::KeyManagementService for Plugin {
    async fn status(
        &self,
        _: Request<v2::StatusRequest>,
    ) -> Result<Response<v2::StatusResponse>, Status> {
        let s = self.begin(|c| c.status += 1).await;
        Ok(Response::new(v2::StatusResponse {
            version: s.version.clone().unwrap_or_else(|| "v2".to_owned()),
            healthz: s.healthz.clone().unwrap_or_else(|| "ok".to_owned()),
            key_id: self.current_key_id(&s),
        }))
    }

    async fn decrypt(
        &self,
        req: Request<v2::DecryptRequest>,
    ) -> Result<Response<v2::DecryptResponse>, Status> {
        let s = self.begin(|c| c.decrypt += 1).await;
        if s.fail_decrypt {
            return Err(Status::internal(
                "decryption disabled by the fail_decrypt switch",
            ));
        }
        let req = req.into_inner();
        let mut plaintext = unwrap(&req.ciphertext, Some(&req.key_id))?;
        if s.corrupt_decrypt {
            for b in &mut plaintext {
                *b ^= 0x5a;
            }
        }
        Ok(Response::new(v2::DecryptResponse { plaintext }))
    }

    async fn encrypt(
        &self,
        req: Request<v2::EncryptRequest>,
    ) -> Result<Response<v2::EncryptResponse>, Status> {
        let s = self.begin(|c| c.encrypt += 1).await;
        if s.fail_encrypt {
            return Err(Status::internal(
                "encryption disabled by the fail_encrypt switch",
            ));
        }
        let key_id = self.current_key_id(&s);
        let ciphertext = wrap(&key_id, &req.into_inner().plaintext)?;
        Ok(Response::new(v2::EncryptResponse {
            ciphertext,
            annotations: HashMap::from([(
                "plugin.atrest.example".to_owned(),
                b"test-plugin".to_vec(),
            )]),
            key_id,
        }))
    }
}

#[tonic::async_trait]
impl v1beta1::key_management_service_server::KeyManagementService for Plugin {
    async fn version(
        &self,
        _: Request<v1beta1::VersionRequest>,
    ) -> Result<Response<v1beta1::VersionResponse>, Status> {
        self.begin(|c| c.status += 1).await;
        Ok(Response::new(v1beta1::VersionResponse {
            version: "v1beta1".to_owned(),
            runtime_name: "atrest-test-plugin".to_owned(),
            runtime_version: "0.1.0".to_owned(),
        }))
    }

    async fn decrypt(
        &self,
        req: Request<v1beta1::DecryptRequest>,
    ) -> Result<Response<v1beta1::DecryptResponse>, Status> {
        let s = self.begin(|c| c.decrypt += 1).await;
        if s.fail_decrypt {
            return Err(Status::internal(
                "decryption disabled by the fail_decrypt switch",
            ));
        }
        let plain = unwrap(&req.into_inner().cipher, None)?;
        Ok(Response::new(v1beta1::DecryptResponse { plain }))
    }

    async fn encrypt(
        &self,
        req: Request<v1beta1::EncryptRequest>,
    ) -> Result<Response<v1beta1::EncryptResponse>, Status> {
        let s = self.begin(|c| c.encrypt += 1).await;
        if s.fail_encrypt {
            return Err(Status::internal(
                "encryption disabled by the fail_encrypt switch",
            ));
        }
        let cipher = wrap(&self.current_key_id(&s), &req.into_inner().plain)?;
        Ok(Response::new(v1beta1::EncryptResponse { cipher }))
    }
}

/// Serves until the process is killed. Removes a stale socket file first.
pub(crate) fn run(opts: Options) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&opts.control_dir)?;
    if opts.socket.exists() {
        std::fs::remove_file(&opts.socket)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::UnixListener::bind(&opts.socket)?;
        let plugin = Plugin {
            opts: Arc::new(opts),
            calls: Arc::default(),
        };
        plugin.begin(|_| {}).await; // writes `calls` with zeros: the plugin is ready
        tonic::transport::Server::builder()
            .add_service(
                v2::key_management_service_server::KeyManagementServiceServer::new(plugin.clone()),
            )
            .add_service(
                v1beta1::key_management_service_server::KeyManagementServiceServer::new(plugin),
            )
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await?;
        Ok(())
    })
}

/// Reads `<control dir>/calls`: (status, decrypt, encrypt).
#[allow(dead_code)]
pub(crate) fn read_calls(control_dir: &Path) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(control_dir.join("calls")).ok()?;
    let get = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    Some((get("status ")?, get("decrypt ")?, get("encrypt ")?))
}
