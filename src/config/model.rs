//! The `apiserver.config.k8s.io/v1` EncryptionConfiguration, as serde types.
//!
//! Field names and shapes follow kube-apiserver's
//! `staging/src/k8s.io/apiserver/pkg/apis/apiserver/v1/types_encryption.go`. Decoding is strict
//! (unknown fields are errors), as kube-apiserver's is.

use serde::{Deserialize, Serialize};

use super::secret::SecretString;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    /// `apiserver.config.k8s.io/v1` (or the legacy `v1`).
    pub api_version: String,
    /// `EncryptionConfiguration` (or the legacy `EncryptionConfig`).
    pub kind: String,
    /// One entry per group of resources, each with its ordered list of providers.
    #[serde(default)]
    pub resources: Vec<ResourceConfiguration>,
}

/// One `resources[i]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfiguration {
    /// Resource names such as `secrets`, `configmaps`, `*.apps`, `*.*`.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Providers in order: the first encrypts new writes; all are tried on reads.
    #[serde(default)]
    pub providers: Vec<ProviderConfiguration>,
}

/// One `providers[j]` element: exactly one of the fields must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfiguration {
    /// AES-GCM with a random nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesgcm: Option<KeysConfiguration>,
    /// AES-CBC with PKCS#7 padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbc: Option<KeysConfiguration>,
    /// XSalsa20-Poly1305.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretbox: Option<KeysConfiguration>,
    /// No encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfiguration>,
    /// An external key management service (recognised, not decrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsConfiguration>,
}

/// The key list of `aescbc`, `aesgcm` and `secretbox`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfiguration {
    /// Keys in order: the first encrypts new writes.
    #[serde(default)]
    pub keys: Vec<Key>,
}

/// One named key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// The key's name, written into every value it encrypts (`k8s:enc:aescbc:v1:<name>:`).
    #[serde(default)]
    pub name: String,
    /// The key, base64-encoded. Never printed.
    #[serde(default)]
    pub secret: SecretString,
}

/// `identity: {}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfiguration {}

/// A `kms` provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KmsConfiguration {
    /// `v1` or `v2`; kube-apiserver defaults it to `v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The provider's name, written into every value (`k8s:enc:kms:v2:<name>:`).
    #[serde(default)]
    pub name: String,
    /// KMS v1 DEK cache size (defaults to 1000; not allowed with v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cachesize: Option<i32>,
    /// The plugin's socket, `unix:///path`.
    #[serde(default)]
    pub endpoint: String,
    /// Plugin call timeout as a Go duration (`3s` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl ProviderConfiguration {
    /// The provider's type name as it appears in the file, or `None` for an empty element.
    /// With more than one type set (invalid), the first in `aesgcm, aescbc, secretbox, identity,
    /// kms` order.
    pub fn type_name(&self) -> Option<&'static str> {
        if self.aesgcm.is_some() {
            Some("aesgcm")
        } else if self.aescbc.is_some() {
            Some("aescbc")
        } else if self.secretbox.is_some() {
            Some("secretbox")
        } else if self.identity.is_some() {
            Some("identity")
        } else if self.kms.is_some() {
            Some("kms")
        } else {
            None
        }
    }
}
