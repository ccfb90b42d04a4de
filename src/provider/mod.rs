//! The providers kube-apiserver can encrypt stored values with, one file each.
//!
//! Every keyed provider here holds exactly **one** named key: a config's `aescbc` element with
//! three keys becomes three [`Provider`]s, in key order. That flattening is exact: kube-apiserver
//! tries an outer list of provider prefixes and, inside each, a list of `<name>:` key prefixes,
//! both in config order and without stopping at a failure — which is the same as trying the
//! flattened list in order (see [`crate::transform`]).
//!
//! Matching a stored value returns `Option<Result<..>>`: `None` means "not mine" (the full
//! prefix `k8s:enc:<provider>:v1:<name>:` does not match), `Some(Err(..))` means "mine, but it
//! failed" (wrong key, corrupt, truncated). A failure to decrypt is never fatal to a run.

use std::fmt;

use serde::Serialize;
use thiserror::Error;

pub mod aescbc;
pub mod aesgcm;
pub mod identity;
pub mod kms;
pub mod secretbox;
#[cfg(test)]
mod vectors;

pub use crate::secret::{KeyMaterial, Plaintext};

/// The kind of a provider, as named in configs and in stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// `aescbc`
    Aescbc,
    /// `aesgcm`
    Aesgcm,
    /// `secretbox`
    Secretbox,
    /// `identity` (no encryption)
    Identity,
    /// `kms` (v1 or v2)
    Kms,
}

impl ProviderKind {
    /// The name used in configs and value prefixes.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Aescbc => "aescbc",
            ProviderKind::Aesgcm => "aesgcm",
            ProviderKind::Secretbox => "secretbox",
            ProviderKind::Identity => "identity",
            ProviderKind::Kms => "kms",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a provider refused to build.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key has a length the cipher does not take.
    #[error("{provider} key {name:?} is {got} bytes; expected one of {expected:?}")]
    Length {
        /// The provider.
        provider: ProviderKind,
        /// The key's name.
        name: String,
        /// Its decoded length.
        got: usize,
        /// The lengths the provider accepts.
        expected: &'static [usize],
    },
}

/// Why a value that matched a provider's prefix could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The value ends before the structure does.
    #[error("value is truncated: {0}")]
    Truncated(crate::wire::WireError),
    /// AES-CBC ciphertext that is empty or not a whole number of blocks.
    #[error("the ciphertext is {0} bytes, not a positive multiple of the 16-byte block size")]
    BlockSize(usize),
    /// AES-CBC padding is invalid: the key is wrong or the value is corrupt.
    #[error("invalid PKCS#7 padding (wrong key or corrupt value)")]
    Padding,
    /// The authentication tag does not verify: wrong key, corrupt value, or (aesgcm) a value
    /// moved to another etcd key.
    #[error(
        "authentication failed (wrong key, corrupt value, or a value moved from another etcd key)"
    )]
    Authentication,
    /// The identity provider refuses to read a value that is encrypted.
    #[error("identity transformer tried to read encrypted data")]
    IdentityEncrypted,
    /// A KMS value read without its plugin (`--no-kms`): recognised, not decrypted.
    #[error("KMS values can only be decrypted by the KMS plugin")]
    Kms,
    /// A KMS v2 value whose EncryptedObject does not decode or breaks kube-apiserver's rules.
    #[error("invalid KMS v2 EncryptedObject: {0}")]
    KmsObject(String),
    /// The KMS plugin could not decrypt the value's DEK (its message names the plugin).
    #[error("the KMS plugin could not decrypt the DEK: {0}")]
    KmsPlugin(String),
    /// The KMS plugin returned a DEK or seed of a size no cipher takes.
    #[error(
        "the KMS plugin returned a {0}-byte DEK (expected 32; 16 or 24 for AES_GCM_KEY and v1)"
    )]
    KmsDekLength(usize),
}

impl From<crate::wire::WireError> for DecryptError {
    fn from(e: crate::wire::WireError) -> Self {
        DecryptError::Truncated(e)
    }
}

/// Why a value could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// A KMS provider without a plugin (`--no-kms`) cannot encrypt.
    #[error("KMS provider {0:?} cannot encrypt without its plugin")]
    Kms(String),
    /// The KMS plugin's `Encrypt` failed (its message names the plugin and socket).
    #[error("{0}")]
    KmsPlugin(String),
    /// The KMS plugin's `Encrypt` answer breaks kube-apiserver's rules.
    #[error("the KMS plugin's Encrypt response is invalid: {0}")]
    KmsResponse(String),
    /// The KMS plugin's `Decrypt`, asked once for the seed its `Encrypt` had just wrapped,
    /// failed or returned other bytes: values written with that seed could not be read back, so
    /// none is written.
    #[error(
        "the KMS plugin cannot decrypt its own Encrypt output (key ID {key_id:?}): {reason}; \
         nothing was written with it — check that the endpoint reaches the plugin instance \
         kube-apiserver uses and that its Decrypt works"
    )]
    KmsRoundTrip {
        /// The key ID the plugin's `Encrypt` named.
        key_id: String,
        /// What went wrong: the `Decrypt` error, or that it returned other bytes.
        reason: String,
    },
    /// The AEAD refused the input (larger than the cipher's limit).
    #[error("the cipher refused the input")]
    Cipher,
}

/// One provider with (for keyed providers) one key.
#[derive(Debug)]
#[non_exhaustive]
pub enum Provider {
    /// `aescbc` with one key.
    Aescbc(aescbc::AesCbc),
    /// `aesgcm` with one key.
    Aesgcm(aesgcm::AesGcm),
    /// `secretbox` with one key.
    Secretbox(secretbox::Secretbox),
    /// `identity`.
    Identity(identity::Identity),
    /// `kms` v1 or v2 (decrypted through its plugin, or only recognised without one).
    Kms(kms::Kms),
}

impl Provider {
    /// This provider's kind.
    pub fn kind(&self) -> ProviderKind {
        match self {
            Provider::Aescbc(_) => ProviderKind::Aescbc,
            Provider::Aesgcm(_) => ProviderKind::Aesgcm,
            Provider::Secretbox(_) => ProviderKind::Secretbox,
            Provider::Identity(_) => ProviderKind::Identity,
            Provider::Kms(_) => ProviderKind::Kms,
        }
    }

    /// The key name (the KMS provider name for kms); `None` for identity.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            Provider::Aescbc(p) => Some(p.name()),
            Provider::Aesgcm(p) => Some(p.name()),
            Provider::Secretbox(p) => Some(p.name()),
            Provider::Identity(_) => None,
            Provider::Kms(p) => Some(p.name()),
        }
    }

    /// The full prefix this provider writes and claims (empty for identity).
    pub fn prefix(&self) -> &[u8] {
        match self {
            Provider::Aescbc(p) => p.prefix(),
            Provider::Aesgcm(p) => p.prefix(),
            Provider::Secretbox(p) => p.prefix(),
            Provider::Identity(_) => b"",
            Provider::Kms(p) => p.prefix(),
        }
    }

    /// Encrypts `plaintext` into a complete stored value (prefix included). `etcd_key` is the
    /// full etcd key; aesgcm and kms bind it.
    pub fn encrypt(&self, plaintext: &[u8], etcd_key: &[u8]) -> Result<Vec<u8>, EncryptError> {
        match self {
            Provider::Aescbc(p) => Ok(p.encrypt(plaintext)),
            Provider::Aesgcm(p) => p.encrypt(plaintext, etcd_key),
            Provider::Secretbox(p) => p.encrypt(plaintext),
            Provider::Identity(_) => Ok(plaintext.to_vec()),
            Provider::Kms(p) => p.encrypt(plaintext, etcd_key),
        }
    }

    /// Tries to read a stored value: `None` if the value is not this provider's.
    pub fn try_decrypt(
        &self,
        value: &[u8],
        etcd_key: &[u8],
    ) -> Option<Result<Plaintext, DecryptError>> {
        match self {
            Provider::Aescbc(p) => p.try_decrypt(value),
            Provider::Aesgcm(p) => p.try_decrypt(value, etcd_key),
            Provider::Secretbox(p) => p.try_decrypt(value),
            Provider::Identity(p) => Some(p.read(value)),
            Provider::Kms(p) => p.try_decrypt(value, etcd_key),
        }
    }
}

/// Builds `k8s:enc:<provider>:v1:<name>:`.
pub(crate) fn key_prefix(provider: &str, name: &str) -> Vec<u8> {
    format!("k8s:enc:{provider}:v1:{name}:").into_bytes()
}
