//! `kms`: envelope encryption through an external plugin (KMS v2 and v1).
//!
//! # Format
//!
//! ```text
//! v1: | k8s:enc:kms:v1:<name>: | EDEK length (u16 BE) | EDEK | inner |
//!       inner = nonce (12) | ct | tag (16)      AES-GCM with the DEK, AAD = etcd key
//!             | IV (16) | AES-CBC(PKCS#7)       legacy, read only (and always stale)
//! v2: | k8s:enc:kms:v2:<name>: | protobuf EncryptedObject |
//!       EncryptedObject { encryptedData = 1 (bytes), keyID = 2 (string),
//!                         encryptedDEKSource = 3 (bytes), annotations = 4 (map<string, bytes>),
//!                         encryptedDEKSourceType = 5 (enum; 0 omitted) }
//!       type 1 HKDF_SHA256_XNONCE_AES_GCM_SEED: encryptedData = info (32) | nonce (12) | ct | tag (16)
//!              key = HKDF-Expand(SHA-256, PRK = seed, info, 32), AES-256-GCM, AAD = etcd key
//!       type 0 AES_GCM_KEY (legacy):           encryptedData = nonce (12) | ct | tag (16)
//!              AES-GCM with the DEK itself, AAD = etcd key
//! ```
//!
//! Only the plugin can unwrap the DEK (v1) or DEK seed (v2). A [`Kms`] without a plugin
//! ([`Kms::new`], `--no-kms`) recognises its values and reports them as `kms`; with one
//! ([`Kms::with_plugin`]) it asks the plugin **once per distinct encrypted DEK** — the answer is
//! kept in a bounded cache, wiped on drop — and decrypts locally. Writes use kube-apiserver's
//! seed mode: one random 32-byte seed per run (or per 2^32 writes), wrapped by a single
//! `Encrypt` call; per value 32 random bytes of HKDF info and a random 12-byte nonce.
//!
//! A value is *fresh* (current, if read by the write provider) when, for v2, its `keyID` is the
//! plugin's current key ID (from `Status`) and its source type is the seed type; for v1, when
//! it was read with AES-GCM (a legacy CBC read is stale).
//!
//! Sources: kube-apiserver
//! `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/envelope/{envelope.go,kmsv2/envelope.go}`,
//! `.../value/encrypt/aes/aes_extended_nonce.go`, `.../kmsv2/v2/api.proto`.

pub mod plugin;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use prost::Message;
use zeroize::Zeroizing;

use super::aescbc::AesCbc;
use super::aesgcm::AesGcm;
use super::{DecryptError, EncryptError, KeyMaterial, Plaintext};
use crate::provider::kms::plugin::{DecryptRequest, KmsError, KmsPlugin, PluginStatus};
use crate::secret::fill_random;
use crate::wire::Reader;

/// KMS API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsVersion {
    /// `v1` (deprecated; refused by kube-apiserver ≥ 1.29 unless `KMSv1=true`).
    V1,
    /// `v2`.
    V2,
}

/// `encryptedDEKSourceType` 0: the source is an AES-GCM key used directly.
pub const AES_GCM_KEY: i32 = 0;
/// `encryptedDEKSourceType` 1: the source is a seed; each value's key comes from HKDF.
pub const HKDF_SHA256_XNONCE_AES_GCM_SEED: i32 = 1;
/// Seed and DEK size.
pub const SEED_LEN: usize = 32;
/// HKDF info size in a seed-mode value.
pub const INFO_LEN: usize = 32;
/// AES-GCM nonce size.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag size.
pub const TAG_LEN: usize = 16;
/// Largest `keyID` and `encryptedDEKSource` kube-apiserver accepts.
pub const MAX_FIELD_LEN: usize = 1024;
/// Largest total size of annotation keys and values.
pub const MAX_ANNOTATIONS_LEN: usize = 32 * 1024;
/// Writes per seed before a new seed is made (kube-apiserver's limit).
pub const WRITES_PER_SEED: u64 = 1 << 32;
/// Default number of cached DEKs (kube-apiserver's v1 `cachesize` default).
pub const DEFAULT_CACHE_SIZE: usize = 1000;

/// The stored KMS v2 object (`k8s.io/apiserver/.../kmsv2/v2/api.proto`, package `v2`), declared
/// by hand with the upstream field numbers. Decoding is ordinary protobuf: any field order,
/// unknown fields skipped, every length bounds-checked by prost.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct EncryptedObject {
    /// The encrypted value.
    #[prost(bytes = "vec", tag = "1")]
    pub encrypted_data: Vec<u8>,
    /// The KMS key ID (KEK) that wrapped the DEK source.
    #[prost(string, tag = "2")]
    pub key_id: String,
    /// The wrapped DEK or seed, as the plugin returned it.
    #[prost(bytes = "vec", tag = "3")]
    pub encrypted_dek_source: Vec<u8>,
    /// The plugin's annotations, stored in clear.
    #[prost(map = "string, bytes", tag = "4")]
    pub annotations: HashMap<String, Vec<u8>>,
    /// [`AES_GCM_KEY`] or [`HKDF_SHA256_XNONCE_AES_GCM_SEED`].
    #[prost(int32, tag = "5")]
    pub encrypted_dek_source_type: i32,
}

/// `ValidateEncryptedObject`: kube-apiserver's checks on a decoded object, with its messages.
pub fn validate_encrypted_object(o: &EncryptedObject) -> Result<(), String> {
    match o.encrypted_dek_source_type {
        AES_GCM_KEY | HKDF_SHA256_XNONCE_AES_GCM_SEED => {}
        t => return Err(format!("unknown encryptedDEKSourceType: {t}")),
    }
    if o.encrypted_data.is_empty() {
        return Err("encrypted data is empty".to_owned());
    }
    validate_dek_source(&o.encrypted_dek_source)
        .map_err(|e| format!("failed to validate encrypted DEK source: {e}"))?;
    validate_key_id(&o.key_id).map_err(|e| format!("failed to validate key id: {e}"))?;
    validate_annotations(&o.annotations).map_err(|e| format!("failed to validate annotations: {e}"))
}

fn validate_dek_source(s: &[u8]) -> Result<(), String> {
    if s.is_empty() {
        return Err("encrypted DEK source is empty".to_owned());
    }
    if s.len() > MAX_FIELD_LEN {
        return Err(format!(
            "encrypted DEK source is {} bytes, which exceeds the max size of {MAX_FIELD_LEN}",
            s.len()
        ));
    }
    Ok(())
}

fn validate_key_id(k: &str) -> Result<(), String> {
    if k.is_empty() {
        return Err("keyID is empty".to_owned());
    }
    if k.len() > MAX_FIELD_LEN {
        return Err(format!(
            "keyID is {} bytes, which exceeds the max size of {MAX_FIELD_LEN}",
            k.len()
        ));
    }
    Ok(())
}

fn validate_annotations(a: &HashMap<String, Vec<u8>>) -> Result<(), String> {
    let mut bad: Vec<&str> = a
        .keys()
        .filter(|k| !is_fully_qualified_domain_name(k))
        .map(String::as_str)
        .collect();
    if !bad.is_empty() {
        bad.sort_unstable();
        return Err(format!(
            "annotation keys are not fully qualified domain names: {}",
            bad.join(", ")
        ));
    }
    let size: usize = a.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ANNOTATIONS_LEN {
        return Err(format!(
            "annotations exceeds max size of {MAX_ANNOTATIONS_LEN} bytes"
        ));
    }
    Ok(())
}

/// apimachinery's `IsFullyQualifiedDomainName`: at least two labels, a DNS-1123 subdomain of
/// at most 253 characters (a trailing dot is allowed).
fn is_fully_qualified_domain_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 || !name.contains('.') {
        return false;
    }
    name.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// An unwrapped DEK source, cached per encrypted DEK. Wiped on drop (the ciphers zeroize their
/// round keys; the seed is [`Zeroizing`]).
enum Dek {
    /// v2 seed: each value's key is derived from it.
    Seed(Zeroizing<[u8; SEED_LEN]>),
    /// v2 AES_GCM_KEY: the key itself.
    Key(Box<AesGcm>),
    /// v1: GCM, then the legacy CBC.
    V1 { gcm: Box<AesGcm>, cbc: Box<AesCbc> },
}

type Slot = Arc<OnceLock<Result<Arc<Dek>, DecryptError>>>;

/// A bounded cache of unwrapped DEKs, keyed by everything the plugin is sent (source type,
/// encrypted DEK, key ID, annotations). One entry is fetched once even under concurrent readers
/// (the first asks the plugin, the others wait for its answer). Failures are cached too, so a
/// plugin that refuses a DEK is asked once per run, not once per entry.
struct DekCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<Vec<u8>, Slot>,
    order: VecDeque<Vec<u8>>,
}

impl DekCache {
    fn new(capacity: usize) -> Self {
        DekCache {
            capacity: capacity.max(1),
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn slot(&self, key: &[u8]) -> Slot {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = inner.map.get(key) {
            return slot.clone();
        }
        while inner.map.len() >= self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.map.remove(&old);
                }
                None => break,
            }
        }
        let slot: Slot = Arc::default();
        inner.map.insert(key.to_vec(), slot.clone());
        inner.order.push_back(key.to_vec());
        slot
    }

    fn get_or_fetch(
        &self,
        key: &[u8],
        fetch: impl FnOnce() -> Result<Dek, DecryptError>,
    ) -> Result<Arc<Dek>, DecryptError> {
        self.slot(key).get_or_init(|| fetch().map(Arc::new)).clone()
    }

    fn insert(&self, key: &[u8], dek: Dek) {
        let _ = self.slot(key).set(Ok(Arc::new(dek)));
    }

    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }
}

fn cache_key(o: &EncryptedObject) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + o.encrypted_dek_source.len() + o.key_id.len());
    let mut field = |b: &[u8]| {
        k.extend_from_slice(&(b.len() as u32).to_be_bytes());
        k.extend_from_slice(b);
    };
    field(&o.encrypted_dek_source_type.to_be_bytes());
    field(&o.encrypted_dek_source);
    field(o.key_id.as_bytes());
    let mut ann: Vec<_> = o.annotations.iter().collect();
    ann.sort();
    for (name, value) in ann {
        field(name.as_bytes());
        field(value);
    }
    k
}

/// The seed this run writes with, and its wrapped form.
struct SeedWriter {
    seed: Zeroizing<[u8; SEED_LEN]>,
    encrypted: Vec<u8>,
    key_id: String,
    annotations: HashMap<String, Vec<u8>>,
    writes: AtomicU64,
}

/// Why a KMS provider may not write (checked before anything is written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KmsWriteError {
    /// The provider has no plugin (`--no-kms`).
    #[error("kms provider {0:?} has no plugin connection (--no-kms): it cannot encrypt")]
    NoPlugin(String),
    /// KMS v1 is deprecated: atrest writes KMS v2 only.
    #[error(
        "kms provider {0:?} is KMS v1, which kube-apiserver 1.29+ refuses to write: atrest \
         writes KMS v2 only"
    )]
    V1(String),
    /// The plugin could not be asked for its status.
    #[error(transparent)]
    Plugin(#[from] KmsError),
    /// The plugin says it is not healthy.
    #[error("kms provider {provider:?}: the plugin at {endpoint} is not healthy: {healthz:?}")]
    Unhealthy {
        /// The provider.
        provider: String,
        /// The socket.
        endpoint: String,
        /// The plugin's own words.
        healthz: String,
    },
    /// The plugin speaks another API version than `v2`.
    #[error(
        "kms provider {provider:?}: the plugin at {endpoint} reports API version {version:?}, \
         not \"v2\""
    )]
    Version {
        /// The provider.
        provider: String,
        /// The socket.
        endpoint: String,
        /// What the plugin reported.
        version: String,
    },
}

impl KmsWriteError {
    /// What the user can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            KmsWriteError::NoPlugin(_) => "drop --no-kms so that atrest can reach the plugin",
            KmsWriteError::V1(_) => {
                "put a KMS v2 provider (apiVersion: v2) first in the config; v1 entries stay \
                 readable and are rewritten to it"
            }
            KmsWriteError::Plugin(_) => {
                "nothing was written; check that the plugin runs and answers on its socket \
                 (--kms-endpoint NAME=unix:///path if it is mounted elsewhere), then run again"
            }
            KmsWriteError::Unhealthy { .. } => {
                "nothing was written; fix the plugin (its Status must say healthz \"ok\") and run \
                 again"
            }
            KmsWriteError::Version { .. } => {
                "nothing was written; point the provider at a KMS v2 plugin (kms.endpoint or \
                 --kms-endpoint)"
            }
        }
    }
}

/// What reading one value of this provider gave.
pub struct KmsRead {
    /// v2: the value's `keyID` (when the object could be decoded).
    pub key_id: Option<String>,
    /// The plaintext and whether the value is fresh (see the module docs), or why it failed.
    pub result: Result<(Plaintext, bool), DecryptError>,
}

/// One KMS provider.
pub struct Kms {
    name: String,
    version: KmsVersion,
    prefix: Vec<u8>,
    plugin: Option<Arc<dyn KmsPlugin>>,
    cache: DekCache,
    /// The plugin's current key ID (v2 `Status`), fetched once and on [`Kms::status`].
    key_id: Mutex<Option<Result<String, KmsError>>>,
    /// This run's seed, or why the plugin would not wrap one (kept: a failing or hanging
    /// `Encrypt` is asked once per run, not once per value).
    writer: Mutex<Option<Result<Arc<SeedWriter>, EncryptError>>>,
    decrypt_calls: AtomicU64,
    encrypt_calls: AtomicU64,
}

impl fmt::Debug for Kms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kms")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl Kms {
    /// A provider that recognises values of the KMS provider `name` but has no plugin: its
    /// values read as [`DecryptError::Kms`] (state `kms`).
    pub fn new(name: &str, version: KmsVersion) -> Self {
        let v = match version {
            KmsVersion::V1 => "v1",
            KmsVersion::V2 => "v2",
        };
        Kms {
            name: name.to_owned(),
            version,
            prefix: format!("k8s:enc:kms:{v}:{name}:").into_bytes(),
            plugin: None,
            cache: DekCache::new(DEFAULT_CACHE_SIZE),
            key_id: Mutex::new(None),
            writer: Mutex::new(None),
            decrypt_calls: AtomicU64::new(0),
            encrypt_calls: AtomicU64::new(0),
        }
    }

    /// Connects this provider to its plugin, with a DEK cache of `cache_size` entries.
    pub fn with_plugin(mut self, plugin: Arc<dyn KmsPlugin>, cache_size: usize) -> Self {
        self.plugin = Some(plugin);
        self.cache = DekCache::new(cache_size);
        self
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The KMS API version.
    pub fn version(&self) -> KmsVersion {
        self.version
    }

    /// `k8s:enc:kms:v1:<name>:` or `k8s:enc:kms:v2:<name>:`
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The plugin, if this provider has one.
    pub fn plugin(&self) -> Option<&Arc<dyn KmsPlugin>> {
        self.plugin.as_ref()
    }

    /// Plugin `Decrypt` calls made so far (one per distinct encrypted DEK).
    pub fn decrypt_calls(&self) -> u64 {
        self.decrypt_calls.load(Ordering::Relaxed)
    }

    /// Plugin `Encrypt` calls made so far (one per seed).
    pub fn encrypt_calls(&self) -> u64 {
        self.encrypt_calls.load(Ordering::Relaxed)
    }

    /// Distinct DEKs in the cache.
    pub fn cached_deks(&self) -> usize {
        self.cache.len()
    }

    /// Asks the plugin for its status now and remembers its current key ID. `None` without a
    /// plugin.
    pub fn status(&self) -> Option<Result<PluginStatus, KmsError>> {
        let plugin = self.plugin.as_ref()?;
        let status = plugin.status();
        *self.key_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(
            status
                .as_ref()
                .map(|s| s.key_id.clone())
                .map_err(Clone::clone),
        );
        Some(status)
    }

    /// The health gate before any write: the provider is v2, has a plugin, and the plugin's
    /// `Status` says `healthz: ok` and `version: v2`. Remembers the current key ID.
    pub fn ready_to_write(&self) -> Result<PluginStatus, KmsWriteError> {
        let Some(plugin) = &self.plugin else {
            return Err(KmsWriteError::NoPlugin(self.name.clone()));
        };
        if self.version == KmsVersion::V1 {
            return Err(KmsWriteError::V1(self.name.clone()));
        }
        let status = self.status().unwrap_or_else(|| plugin.status())?;
        if !status.is_healthy() {
            return Err(KmsWriteError::Unhealthy {
                provider: self.name.clone(),
                endpoint: plugin.endpoint().to_owned(),
                healthz: status.healthz,
            });
        }
        if status.version != "v2" {
            return Err(KmsWriteError::Version {
                provider: self.name.clone(),
                endpoint: plugin.endpoint().to_owned(),
                version: status.version,
            });
        }
        Ok(status)
    }

    /// The plugin's current key ID, asking `Status` the first time.
    fn current_key_id(&self) -> Option<String> {
        {
            let guard = self.key_id.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = guard.as_ref() {
                return k.as_ref().ok().cloned();
            }
        }
        self.status()?.ok().map(|s| s.key_id)
    }

    /// Claims values with this provider's prefix. Without a plugin they fail with
    /// [`DecryptError::Kms`].
    pub fn try_decrypt(
        &self,
        value: &[u8],
        etcd_key: &[u8],
    ) -> Option<Result<Plaintext, DecryptError>> {
        self.read(value, etcd_key)
            .map(|r| r.result.map(|(plaintext, _)| plaintext))
    }

    /// Reads a value if it carries this provider's prefix (see [`KmsRead`]).
    pub fn read(&self, value: &[u8], etcd_key: &[u8]) -> Option<KmsRead> {
        let body = value.strip_prefix(self.prefix.as_slice())?;
        Some(match self.version {
            KmsVersion::V2 => self.read_v2(body, etcd_key),
            KmsVersion::V1 => KmsRead {
                key_id: None,
                result: self.read_v1(body, etcd_key),
            },
        })
    }

    fn read_v2(&self, body: &[u8], etcd_key: &[u8]) -> KmsRead {
        let object = match EncryptedObject::decode(body) {
            Ok(o) => o,
            Err(e) => {
                return KmsRead {
                    key_id: None,
                    // Without a plugin (`--no-kms`) values are only recognised, as before.
                    result: Err(match self.plugin {
                        None => DecryptError::Kms,
                        Some(_) => DecryptError::KmsObject(format!(
                            "cannot decode the EncryptedObject: {e}"
                        )),
                    }),
                };
            }
        };
        let key_id = (!object.key_id.is_empty()).then(|| object.key_id.clone());
        let result = self.decrypt_v2(&object, etcd_key);
        KmsRead { key_id, result }
    }

    fn decrypt_v2(
        &self,
        o: &EncryptedObject,
        etcd_key: &[u8],
    ) -> Result<(Plaintext, bool), DecryptError> {
        let Some(plugin) = &self.plugin else {
            return Err(DecryptError::Kms);
        };
        validate_encrypted_object(o).map_err(DecryptError::KmsObject)?;
        let seed_type = o.encrypted_dek_source_type == HKDF_SHA256_XNONCE_AES_GCM_SEED;
        let dek = self.cache.get_or_fetch(&cache_key(o), || {
            self.decrypt_calls.fetch_add(1, Ordering::Relaxed);
            let plain = plugin
                .decrypt(DecryptRequest {
                    ciphertext: &o.encrypted_dek_source,
                    key_id: &o.key_id,
                    annotations: &o.annotations,
                })
                .map_err(|e| DecryptError::KmsPlugin(e.to_string()))?;
            if seed_type {
                if plain.len() != SEED_LEN {
                    return Err(DecryptError::KmsDekLength(plain.len()));
                }
                // Copied straight into its wiped home: no plain stack copy of the seed.
                let mut seed = Zeroizing::new([0u8; SEED_LEN]);
                seed.copy_from_slice(&plain);
                Ok(Dek::Seed(seed))
            } else {
                let key = KeyMaterial::new(plain.to_vec());
                AesGcm::new("", &key)
                    .map(|k| Dek::Key(Box::new(k)))
                    .map_err(|_| DecryptError::KmsDekLength(plain.len()))
            }
        })?;
        let plaintext = match &*dek {
            Dek::Seed(seed) if seed_type => open_seeded(seed, &o.encrypted_data, etcd_key)?,
            Dek::Key(gcm) if !seed_type => gcm.decrypt_body(&o.encrypted_data, etcd_key)?,
            _ => return Err(DecryptError::Authentication),
        };
        let fresh = seed_type && self.current_key_id().as_deref() == Some(o.key_id.as_str());
        Ok((plaintext, fresh))
    }

    fn read_v1(&self, body: &[u8], etcd_key: &[u8]) -> Result<(Plaintext, bool), DecryptError> {
        let mut r = Reader::new(body);
        let len = r.u16_be("kms v1 EDEK length")?;
        let edek = r.take(usize::from(len), "kms v1 EDEK")?;
        let inner = r.rest();
        let Some(plugin) = &self.plugin else {
            return Err(DecryptError::Kms);
        };
        let dek = self.cache.get_or_fetch(edek, || {
            self.decrypt_calls.fetch_add(1, Ordering::Relaxed);
            let empty = HashMap::new();
            let plain = plugin
                .decrypt(DecryptRequest {
                    ciphertext: edek,
                    key_id: "",
                    annotations: &empty,
                })
                .map_err(|e| DecryptError::KmsPlugin(e.to_string()))?;
            v1_dek(&plain)
        })?;
        let Dek::V1 { gcm, cbc } = &*dek else {
            return Err(DecryptError::Authentication);
        };
        match gcm.decrypt_body(inner, etcd_key) {
            Ok(p) => Ok((p, true)),
            // kube-apiserver reads GCM first, then the legacy CBC (which is always stale).
            Err(gcm_err) => cbc
                .decrypt_body(inner)
                .map(|p| (p, false))
                .map_err(|_| gcm_err),
        }
    }

    /// Encrypts `plaintext` for `etcd_key` into a complete stored value. v2: seed mode (the
    /// first call of a run asks the plugin to wrap a fresh seed; later calls reuse it). v1: a
    /// fresh DEK per value, as kube-apiserver's v1 envelope does (one plugin call each).
    pub fn encrypt(&self, plaintext: &[u8], etcd_key: &[u8]) -> Result<Vec<u8>, EncryptError> {
        let Some(plugin) = &self.plugin else {
            return Err(EncryptError::Kms(self.name.clone()));
        };
        match self.version {
            KmsVersion::V2 => {
                let writer = self.seed_writer(plugin.as_ref())?;
                let mut info = [0u8; INFO_LEN];
                let mut nonce = [0u8; NONCE_LEN];
                fill_random(&mut info);
                fill_random(&mut nonce);
                let data = seal_seeded(&writer.seed, &info, &nonce, plaintext, etcd_key)?;
                let object = EncryptedObject {
                    encrypted_data: data,
                    key_id: writer.key_id.clone(),
                    encrypted_dek_source: writer.encrypted.clone(),
                    annotations: writer.annotations.clone(),
                    encrypted_dek_source_type: HKDF_SHA256_XNONCE_AES_GCM_SEED,
                };
                let mut out = Vec::with_capacity(self.prefix.len() + object.encoded_len());
                out.extend_from_slice(&self.prefix);
                object.encode(&mut out).map_err(|_| EncryptError::Cipher)?;
                Ok(out)
            }
            KmsVersion::V1 => {
                let mut dek = Zeroizing::new(vec![0u8; SEED_LEN]);
                fill_random(&mut dek);
                self.encrypt_calls.fetch_add(1, Ordering::Relaxed);
                let wrapped = plugin
                    .encrypt(&dek)
                    .map_err(|e| EncryptError::KmsPlugin(e.to_string()))?;
                let len = u16::try_from(wrapped.ciphertext.len())
                    .ok()
                    .filter(|&l| l > 0)
                    .ok_or_else(|| {
                        EncryptError::KmsResponse(format!(
                            "the plugin's encrypted DEK is {} bytes (must be 1..=65535)",
                            wrapped.ciphertext.len()
                        ))
                    })?;
                let key = KeyMaterial::new(dek.to_vec());
                let gcm = AesGcm::new("", &key).map_err(|_| EncryptError::Cipher)?;
                let mut nonce = [0u8; NONCE_LEN];
                fill_random(&mut nonce);
                let inner = gcm.encrypt_with_nonce(plaintext, etcd_key, &nonce)?;
                // `AesGcm` with an empty name writes the prefix `k8s:enc:aesgcm:v1::`.
                let body = &inner[gcm.prefix().len()..];
                let mut out = self.prefix.clone();
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&wrapped.ciphertext);
                out.extend_from_slice(body);
                if let Ok(d) = v1_dek(&dek) {
                    self.cache.insert(&wrapped.ciphertext, d);
                }
                Ok(out)
            }
        }
    }

    /// This run's seed: made and wrapped on first use, renewed after [`WRITES_PER_SEED`]. If
    /// the plugin fails to wrap it, that failure is returned for every later write of the run.
    fn seed_writer(&self, plugin: &dyn KmsPlugin) -> Result<Arc<SeedWriter>, EncryptError> {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(Ok(w)) if w.writes.fetch_add(1, Ordering::Relaxed) < WRITES_PER_SEED => {
                return Ok(w.clone());
            }
            Some(Err(e)) => return Err(e.clone()),
            _ => {}
        }
        let made = self.new_seed(plugin);
        *guard = Some(made.clone());
        made
    }

    fn new_seed(&self, plugin: &dyn KmsPlugin) -> Result<Arc<SeedWriter>, EncryptError> {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        fill_random(seed.as_mut_slice());
        self.encrypt_calls.fetch_add(1, Ordering::Relaxed);
        let wrapped = plugin
            .encrypt(seed.as_slice())
            .map_err(|e| EncryptError::KmsPlugin(e.to_string()))?;
        validate_dek_source(&wrapped.ciphertext)
            .and_then(|()| validate_key_id(&wrapped.key_id))
            .and_then(|()| validate_annotations(&wrapped.annotations))
            .map_err(EncryptError::KmsResponse)?;
        // Before the first write: the plugin must open what it just wrapped, as kube-apiserver
        // will ask it to (with the key ID and annotations stored beside it). Without this check
        // the seed goes straight into the cache, and verify-before-write would read from there.
        self.decrypt_calls.fetch_add(1, Ordering::Relaxed);
        let round_trip = |reason: String| EncryptError::KmsRoundTrip {
            key_id: wrapped.key_id.clone(),
            reason,
        };
        let opened = plugin
            .decrypt(DecryptRequest {
                ciphertext: &wrapped.ciphertext,
                key_id: &wrapped.key_id,
                annotations: &wrapped.annotations,
            })
            .map_err(|e| round_trip(e.to_string()))?;
        if opened.as_slice() != seed.as_slice() {
            return Err(round_trip(format!(
                "its Decrypt returned {} bytes that differ from the {SEED_LEN}-byte seed",
                opened.len()
            )));
        }
        // The plugin may have rotated since Status: refresh, so this run's own writes count as
        // current only if the plugin says their key ID is.
        if self.current_key_id().as_deref() != Some(wrapped.key_id.as_str()) {
            let _ = self.status();
        }
        let object = EncryptedObject {
            encrypted_data: Vec::new(),
            key_id: wrapped.key_id.clone(),
            encrypted_dek_source: wrapped.ciphertext.clone(),
            annotations: wrapped.annotations.clone(),
            encrypted_dek_source_type: HKDF_SHA256_XNONCE_AES_GCM_SEED,
        };
        // Reading back this run's values must not ask the plugin again.
        self.cache
            .insert(&cache_key(&object), Dek::Seed(seed.clone()));
        Ok(Arc::new(SeedWriter {
            seed,
            encrypted: wrapped.ciphertext,
            key_id: wrapped.key_id,
            annotations: wrapped.annotations,
            writes: AtomicU64::new(1),
        }))
    }
}

fn v1_dek(plain: &[u8]) -> Result<Dek, DecryptError> {
    let key = KeyMaterial::new(plain.to_vec());
    let gcm = AesGcm::new("", &key).map_err(|_| DecryptError::KmsDekLength(plain.len()))?;
    let cbc = AesCbc::new("", &key).map_err(|_| DecryptError::KmsDekLength(plain.len()))?;
    Ok(Dek::V1 {
        gcm: Box::new(gcm),
        cbc: Box::new(cbc),
    })
}

/// HKDF-Expand(SHA-256, PRK = seed, info, 32): no Extract step, as kube-apiserver does.
fn derive_key(seed: &[u8; SEED_LEN], info: &[u8]) -> Result<Aes256Gcm, DecryptError> {
    let hk =
        hkdf::Hkdf::<sha2::Sha256>::from_prk(seed).map_err(|_| DecryptError::Authentication)?;
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(info, key.as_mut_slice())
        .map_err(|_| DecryptError::Authentication)?;
    Aes256Gcm::new_from_slice(key.as_slice()).map_err(|_| DecryptError::Authentication)
}

/// Opens `info (32) | nonce (12) | ct | tag (16)` with a key derived from `seed`.
fn open_seeded(
    seed: &[u8; SEED_LEN],
    data: &[u8],
    etcd_key: &[u8],
) -> Result<Plaintext, DecryptError> {
    let mut r = Reader::new(data);
    let info = r.take(INFO_LEN, "kms v2 HKDF info")?;
    let nonce: [u8; NONCE_LEN] = r.array("kms v2 nonce")?;
    if r.left() < TAG_LEN {
        r.take(TAG_LEN, "kms v2 tag")?;
    }
    let cipher = derive_key(seed, info)?;
    cipher
        .decrypt(
            (&nonce).into(),
            Payload {
                msg: r.rest(),
                aad: etcd_key,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| DecryptError::Authentication)
}

/// Seals `plaintext` into `info | nonce | ct | tag`.
fn seal_seeded(
    seed: &[u8; SEED_LEN],
    info: &[u8; INFO_LEN],
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    etcd_key: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    let cipher = derive_key(seed, info).map_err(|_| EncryptError::Cipher)?;
    let ct = cipher
        .encrypt(
            nonce.into(),
            Payload {
                msg: plaintext,
                aad: etcd_key,
            },
        )
        .map_err(|_| EncryptError::Cipher)?;
    let mut out = Vec::with_capacity(INFO_LEN + NONCE_LEN + ct.len());
    out.extend_from_slice(info);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::kms::plugin::{Api, EncryptResponse};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const AAD: &[u8] = b"/registry/secrets/default/secret1";

    /// A plugin in memory for unit tests: "wraps" by XOR with 0x5a and counts calls. The
    /// integration tests use the real gRPC test plugin instead.
    #[derive(Debug, Default)]
    struct XorPlugin {
        decrypts: AtomicU64,
        key_id: Mutex<String>,
    }

    impl KmsPlugin for XorPlugin {
        fn api(&self) -> Api {
            Api::V2
        }
        fn endpoint(&self) -> &str {
            "memory"
        }
        fn status(&self) -> Result<PluginStatus, KmsError> {
            Ok(PluginStatus {
                version: "v2".into(),
                healthz: "ok".into(),
                key_id: self.key_id.lock().unwrap().clone(),
            })
        }
        fn decrypt(&self, r: DecryptRequest<'_>) -> Result<Zeroizing<Vec<u8>>, KmsError> {
            self.decrypts.fetch_add(1, Ordering::Relaxed);
            if r.ciphertext == b"opaque-kms-ciphertext" {
                return Ok(Zeroizing::new((0x40..0x60).collect()));
            }
            Ok(Zeroizing::new(
                r.ciphertext.iter().map(|b| b ^ 0x5a).collect(),
            ))
        }
        fn encrypt(&self, p: &[u8]) -> Result<EncryptResponse, KmsError> {
            Ok(EncryptResponse {
                ciphertext: p.iter().map(|b| b ^ 0x5a).collect(),
                key_id: self.key_id.lock().unwrap().clone(),
                annotations: HashMap::from([("version.kms.example.com".into(), b"1".to_vec())]),
            })
        }
    }

    /// The worked example in notes/k8s-format.md §5.5 (kube-apiserver's layout, recomputed
    /// with Python `cryptography`).
    const EXAMPLE_5_5: &str = "6b 38 73 3a 65 6e 63 3a 6b 6d 73 3a 76 32 3a 6d
        79 70 6c 75 67 69 6e 3a 0a 45 60 61 62 63 64 65 66 67 68 69 6a 6b 6c 6d 6e 6f 70 71
        72 73 74 75 76 77 78 79 7a 7b 7c 7d 7e 7f 80 81 82 83 84 85 86 87 88 89 8a 8b 0b a2
        e2 8f d9 9a a2 a2 33 d3 9e 11 47 7f 48 51 94 fc 2b 95 ca 55 85 0e 31 12 08 6b 65 79
        2d 32 30 32 34 1a 15 6f 70 61 71 75 65 2d 6b 6d 73 2d 63 69 70 68 65 72 74 65 78 74
        28 01";

    #[test]
    fn known_answer_worked_example_5_5() {
        let plugin = Arc::new(XorPlugin::default());
        *plugin.key_id.lock().unwrap() = "key-2024".into();
        let kms = Kms::new("myplugin", KmsVersion::V2).with_plugin(plugin.clone(), 10);
        let value = hex(EXAMPLE_5_5);
        assert_eq!(value.len(), 130);
        let r = kms.read(&value, AAD).unwrap();
        assert_eq!(r.key_id.as_deref(), Some("key-2024"));
        let (plaintext, fresh) = r.result.unwrap();
        assert_eq!(plaintext.as_slice(), b"k8s\x00hello");
        assert!(fresh);
        // The seal side gives the same bytes for the same seed, info and nonce.
        let seed: [u8; 32] = core::array::from_fn(|i| 0x40 + i as u8);
        let info: [u8; 32] = core::array::from_fn(|i| 0x60 + i as u8);
        let nonce: [u8; 12] = core::array::from_fn(|i| 0x80 + i as u8);
        let data = seal_seeded(&seed, &info, &nonce, b"k8s\x00hello", AAD).unwrap();
        assert_eq!(&value[26..26 + 69], &data[..]);
        // The derived key of the example.
        let hk = hkdf::Hkdf::<sha2::Sha256>::from_prk(&seed).unwrap();
        let mut k = [0u8; 32];
        hk.expand(&info, &mut k).unwrap();
        assert_eq!(
            k.to_vec(),
            hex("8e8e8559a7ccb710321ba9f0292e3fd7a9779906b5c74d1b89c4665d34d40426")
        );
        // Another key ID at the plugin: stale.
        *plugin.key_id.lock().unwrap() = "key-2025".into();
        kms.status().unwrap().unwrap();
        assert!(!kms.read(&value, AAD).unwrap().result.unwrap().1);
        // A value moved to another etcd key fails authentication.
        let moved = kms
            .read(&value, b"/registry/secrets/default/other")
            .unwrap();
        assert_eq!(moved.result.unwrap_err(), DecryptError::Authentication);
        assert_eq!(
            plugin.decrypts.load(Ordering::Relaxed),
            1,
            "one call per DEK"
        );
    }

    /// kube-apiserver `aes_test.go` `TestExtendedNonceGCMLegacyDataCompatibility`.
    #[test]
    fn known_answer_extended_nonce_gcm_legacy_data() {
        let seed: [u8; 32] =
            hex("5d40323a820ff95561675e3b95e81867c5fdd561d35a88a2d08b08aa9d4fcf5c")
                .try_into()
                .unwrap();
        let data = hex(
            "2442759e33945fbad709db577a0f037fd8a709fc76979b8942209debcecb9d57\
             efe3d6ff6a1ef6ee9a5003b9833b3043cec1e47b35175b151107a8d2416b0e29\
             6bbf66b5d102fcefdf9a78f293d271",
        );
        assert_eq!(data.len(), 79);
        let p = open_seeded(&seed, &data, b"bamboo").unwrap();
        assert_eq!(p.as_slice(), b"pandas are the best");
        assert!(open_seeded(&seed, &data, b"bamboO").is_err());
        for n in 0..data.len() {
            assert!(open_seeded(&seed, &data[..n], b"bamboo").is_err());
        }
    }

    #[test]
    fn example_5_6_kms_v1() {
        let value = hex(
            "6b 38 73 3a 65 6e 63 3a 6b 6d 73 3a 76 31 3a 6d 79 70 6c 75 67 69 6e 3a 00 15 6f 70
             61 71 75 65 2d 6b 6d 73 2d 63 69 70 68 65 72 74 65 78 74 80 81 82 83 84 85 86 87 88
             89 8a 8b 46 66 cd c7 4a 11 46 ef 07 5a 00 ea d8 1f 87 46 71 06 16 5b f7 e6 0f e7 17",
        );
        let plugin = Arc::new(XorPlugin::default());
        let kms = Kms::new("myplugin", KmsVersion::V1).with_plugin(plugin, 10);
        let (p, fresh) = kms.read(&value, AAD).unwrap().result.unwrap();
        assert_eq!((p.as_slice(), fresh), (&b"k8s\x00hello"[..], true));
        // Without a plugin: recognised only.
        let bare = Kms::new("myplugin", KmsVersion::V1);
        assert_eq!(bare.try_decrypt(&value, AAD), Some(Err(DecryptError::Kms)));
    }

    #[test]
    fn seed_mode_round_trip_one_encrypt_and_one_decrypt_call() {
        let plugin = Arc::new(XorPlugin::default());
        *plugin.key_id.lock().unwrap() = "kek-1".into();
        let kms = Kms::new("p", KmsVersion::V2).with_plugin(plugin.clone(), 10);
        let mut values = Vec::new();
        for i in 0..20u8 {
            values.push(kms.encrypt(&[i; 40], AAD).unwrap());
        }
        assert_eq!(kms.encrypt_calls(), 1);
        for (i, v) in values.iter().enumerate() {
            let r = kms.read(v, AAD).unwrap();
            assert_eq!(r.key_id.as_deref(), Some("kek-1"));
            let (p, fresh) = r.result.unwrap();
            assert_eq!((p.as_slice(), fresh), (&[i as u8; 40][..], true));
        }
        assert_eq!(
            plugin.decrypts.load(Ordering::Relaxed),
            1,
            "the new seed is decrypted once by the plugin (issue 22 item 3), reads use the cache"
        );
        // A fresh provider (another run) asks the plugin once for all 20.
        let other = Kms::new("p", KmsVersion::V2).with_plugin(plugin.clone(), 10);
        for v in &values {
            assert!(other.read(v, AAD).unwrap().result.is_ok());
        }
        assert_eq!(other.decrypt_calls(), 1);
        // The values never contain the seed.
        let seed_guess = plugin.decrypt(DecryptRequest {
            ciphertext: &EncryptedObject::decode(&values[0][17..])
                .unwrap()
                .encrypted_dek_source,
            key_id: "",
            annotations: &HashMap::new(),
        });
        let seed = seed_guess.unwrap();
        assert!(!values[0].windows(32).any(|w| w == seed.as_slice()));
    }

    #[test]
    fn encrypted_object_rules() {
        let good = EncryptedObject {
            encrypted_data: vec![1],
            key_id: "k".into(),
            encrypted_dek_source: vec![2],
            annotations: HashMap::from([("a.example.com".into(), vec![])]),
            encrypted_dek_source_type: 1,
        };
        assert_eq!(validate_encrypted_object(&good), Ok(()));
        let check = |f: &dyn Fn(&mut EncryptedObject), want: &str| {
            let mut o = good.clone();
            f(&mut o);
            let e = validate_encrypted_object(&o).unwrap_err();
            assert!(e.contains(want), "{e}");
        };
        check(
            &|o| o.encrypted_dek_source_type = 7,
            "unknown encryptedDEKSourceType: 7",
        );
        check(&|o| o.encrypted_data.clear(), "encrypted data is empty");
        check(
            &|o| o.encrypted_dek_source.clear(),
            "encrypted DEK source is empty",
        );
        check(
            &|o| o.encrypted_dek_source = vec![0; 1025],
            "exceeds the max size of 1024",
        );
        check(&|o| o.key_id.clear(), "keyID is empty");
        check(&|o| o.key_id = "x".repeat(1025), "keyID is 1025 bytes");
        check(
            &|o| {
                o.annotations.insert("Not_FQDN".into(), vec![]);
            },
            "not fully qualified domain names: Not_FQDN",
        );
        check(
            &|o| {
                o.annotations
                    .insert("b.example.com".into(), vec![0; 32 * 1024]);
            },
            "annotations exceeds max size",
        );
        // Any field order, unknown fields skipped: fields reversed with an extra field 9.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[0x28, 0x01]); // type = 1
        bytes.extend_from_slice(&[0x4a, 0x02, 0xff, 0xff]); // field 9 (unknown)
        bytes.extend_from_slice(&[0x1a, 0x01, 0x02]); // source
        bytes.extend_from_slice(&[0x12, 0x01, b'k']); // keyID
        bytes.extend_from_slice(&[0x0a, 0x01, 0x01]); // data
        let o = EncryptedObject::decode(bytes.as_slice()).unwrap();
        assert_eq!((o.key_id.as_str(), o.encrypted_dek_source_type), ("k", 1));
        // Truncations never panic; one that still decodes (cut at a field boundary) is never
        // taken for the original object.
        let full = good.encode_to_vec();
        for n in 0..full.len() {
            if let Ok(o) = EncryptedObject::decode(&full[..n]) {
                assert_ne!(o, good, "truncated at {n}");
            }
        }
    }

    #[test]
    fn fqdn_rule() {
        assert!(is_fully_qualified_domain_name("kms.example.com"));
        assert!(is_fully_qualified_domain_name("a.b."));
        assert!(!is_fully_qualified_domain_name("localhost"));
        assert!(!is_fully_qualified_domain_name("-a.b"));
        assert!(!is_fully_qualified_domain_name("A.b"));
        assert!(!is_fully_qualified_domain_name(""));
    }

    #[test]
    fn cache_is_bounded_and_counts_one_fetch_per_key() {
        let c = DekCache::new(2);
        let mut fetches = 0;
        for k in [b"a", b"a", b"b", b"c", b"a"] {
            let _ = c.get_or_fetch(k, || {
                fetches += 1;
                Err(DecryptError::Authentication)
            });
        }
        assert_eq!(fetches, 4, "a, b, c, then a again after eviction");
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn recognises_own_prefix_only() {
        let v2 = Kms::new("myplugin", KmsVersion::V2);
        assert_eq!(
            v2.try_decrypt(b"k8s:enc:kms:v2:myplugin:\x0a\x45", AAD)
                .map(|r| r.is_err()),
            Some(true)
        );
        assert_eq!(
            v2.try_decrypt(b"k8s:enc:kms:v1:myplugin:\x00\x15", AAD),
            None
        );
        assert_eq!(v2.try_decrypt(b"k8s:enc:kms:v2:other:x", AAD), None);
        let value = hex(EXAMPLE_5_5);
        let r = v2.read(&value, AAD).unwrap();
        assert_eq!(r.key_id.as_deref(), Some("key-2024"));
        assert_eq!(r.result.err(), Some(DecryptError::Kms));
    }

    proptest::proptest! {
        /// Seed-mode values round trip for any plaintext and etcd key, and are bound to the key.
        #[test]
        fn seed_mode_round_trips(
            plaintext in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            etcd_key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60),
        ) {
            let plugin = Arc::new(XorPlugin::default());
            *plugin.key_id.lock().unwrap() = "k".into();
            let kms = Kms::new("p", KmsVersion::V2).with_plugin(plugin, 4);
            let value = kms.encrypt(&plaintext, &etcd_key).unwrap();
            let (back, fresh) = kms.read(&value, &etcd_key).unwrap().result.unwrap();
            proptest::prop_assert_eq!(back.as_slice(), plaintext.as_slice());
            proptest::prop_assert!(fresh);
            let mut other = etcd_key.clone();
            other.push(b'x');
            proptest::prop_assert!(kms.read(&value, &other).unwrap().result.is_err());
        }

        /// Any bytes after the prefix: an error or a value, never a panic (v2 and v1).
        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let plugin = Arc::new(XorPlugin::default());
            for (version, prefix) in [
                (KmsVersion::V2, &b"k8s:enc:kms:v2:p:"[..]),
                (KmsVersion::V1, &b"k8s:enc:kms:v1:p:"[..]),
            ] {
                let kms = Kms::new("p", version).with_plugin(plugin.clone(), 4);
                let mut value = prefix.to_vec();
                value.extend_from_slice(&body);
                let _ = kms.read(&value, AAD);
            }
        }
    }
}
