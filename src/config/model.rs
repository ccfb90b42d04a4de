//! The `apiserver.config.k8s.io/v1` EncryptionConfiguration, as serde types.
//!
//! Field names and shapes follow kube-apiserver's
//! `staging/src/k8s.io/apiserver/pkg/apis/apiserver/v1/types_encryption.go`. Decoding is strict
//! (unknown fields are errors), as kube-apiserver's is.
//!
//! kube-apiserver turns YAML into JSON before decoding it, so its typing is JSON's: a `null`
//! leaves a field at its zero value (`keys:` with nothing after it is an empty list, `- identity:`
//! is a provider element with no provider in it), and a number or boolean where a string is
//! expected is an error. The deserializers in [`de`] reproduce exactly that.

use serde::{Deserialize, Serialize};

use crate::secret::SecretString;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    /// `apiserver.config.k8s.io/v1` (or the legacy `v1`).
    #[serde(default, deserialize_with = "de::string")]
    pub api_version: String,
    /// `EncryptionConfiguration` (or the legacy `EncryptionConfig`).
    #[serde(default, deserialize_with = "de::string")]
    pub kind: String,
    /// One entry per group of resources, each with its ordered list of providers.
    #[serde(default, deserialize_with = "de::list")]
    pub resources: Vec<ResourceConfiguration>,
}

/// One `resources[i]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfiguration {
    /// Resource names such as `secrets`, `configmaps`, `*.apps`, `*.*`.
    #[serde(default, deserialize_with = "de::string_list")]
    pub resources: Vec<String>,
    /// Providers in order: the first encrypts new writes; all are tried on reads.
    #[serde(default, deserialize_with = "de::list")]
    pub providers: Vec<ProviderConfiguration>,
}

/// One `providers[j]` element: exactly one of the fields must be set.
///
/// A field written with a `null` value (`- identity:`) stays `None`, as in kube-apiserver,
/// so such an element is empty and refused by validation; write `identity: {}`.
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
    #[serde(default, deserialize_with = "de::list")]
    pub keys: Vec<Key>,
}

/// One named key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// The key's name, written into every value it encrypts (`k8s:enc:aescbc:v1:<name>:`).
    #[serde(default, deserialize_with = "de::string")]
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_string"
    )]
    pub api_version: Option<String>,
    /// The provider's name, written into every value (`k8s:enc:kms:v2:<name>:`).
    #[serde(default, deserialize_with = "de::string")]
    pub name: String,
    /// KMS v1 DEK cache size (defaults to 1000; not allowed with v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cachesize: Option<i32>,
    /// The plugin's socket, `unix:///path`.
    #[serde(default, deserialize_with = "de::string")]
    pub endpoint: String,
    /// Plugin call timeout as a Go duration (`3s` by default). Decoding refuses text that is not
    /// a Go duration, as kube-apiserver's decoder does.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_duration"
    )]
    pub timeout: Option<String>,
}

impl KmsConfiguration {
    /// The plugin call timeout: the config's `timeout` (a Go duration), else kube-apiserver's
    /// default of 3 s. A zero or negative value (refused by validation) also gives the default.
    pub fn timeout_duration(&self) -> std::time::Duration {
        self.timeout
            .as_deref()
            .and_then(|t| super::go::duration::parse(t).ok())
            .and_then(|ns| u64::try_from(ns).ok())
            .filter(|&ns| ns > 0)
            .map_or(
                std::time::Duration::from_secs(3),
                std::time::Duration::from_nanos,
            )
    }
}

impl ProviderConfiguration {
    /// The provider's type name as it appears in the file, or `None` for an empty element.
    /// With more than one type set (invalid), the first in `aesgcm, aescbc, secretbox, identity,
    /// kms` order.
    pub fn type_name(&self) -> Option<&'static str> {
        self.type_names().first().copied()
    }

    /// Every provider type set in this element, in `aesgcm, aescbc, secretbox, identity, kms`
    /// order (the field order of kube-apiserver's type). A valid element has exactly one.
    pub fn type_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.aesgcm.is_some() {
            names.push("aesgcm");
        }
        if self.aescbc.is_some() {
            names.push("aescbc");
        }
        if self.secretbox.is_some() {
            names.push("secretbox");
        }
        if self.identity.is_some() {
            names.push("identity");
        }
        if self.kms.is_some() {
            names.push("kms");
        }
        names
    }

    /// The key list of an `aescbc`, `aesgcm` or `secretbox` element (the first set, in the
    /// order kube-apiserver checks them: aesgcm, aescbc, secretbox).
    pub fn keys(&self) -> Option<&KeysConfiguration> {
        self.aesgcm
            .as_ref()
            .or(self.aescbc.as_ref())
            .or(self.secretbox.as_ref())
    }
}

/// Deserializers with kube-apiserver's JSON typing (see the module docs).
pub(super) mod de {
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, Visitor};

    /// A JSON string, or `null` for the empty string; anything else is a type error.
    struct StrictString(&'static str);

    impl<'de> Visitor<'de> for StrictString {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    fn strict<'de, D: Deserializer<'de>>(
        d: D,
        expecting: &'static str,
    ) -> Result<Option<String>, D::Error> {
        d.deserialize_any(StrictString(expecting))
    }

    /// A string field; `null` is `""`.
    pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(strict(d, "a string")?.unwrap_or_default())
    }

    /// An optional string field; `null` is absent.
    pub(super) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        strict(d, "a string")
    }

    /// A Go duration string (`3s`, `1m30s`), checked with Go's `time.ParseDuration` rules.
    pub(super) fn opt_duration<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<String>, D::Error> {
        let s = strict(d, "a duration string such as \"3s\"")?;
        if let Some(text) = &s {
            crate::config::go::duration::parse(text)
                .map_err(|e| de::Error::custom(format_args!("invalid timeout: {e}")))?;
        }
        Ok(s)
    }

    /// A list; `null` is the empty list.
    pub(super) fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
    }

    thread_local! {
        /// Resource names decoded so far in this thread's current document (reset by
        /// [`reset_resource_names`] before each decode): the cap is on the whole file, and
        /// YAML aliases can repeat one list many times.
        static RESOURCE_NAMES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Starts counting resource names for a new document.
    pub(in crate::config) fn reset_resource_names() {
        RESOURCE_NAMES.with(|n| n.set(0));
    }

    /// A list of resource names with strict items; `null` is the empty list. Refused as soon
    /// as the document holds more than [`MAX_RESOURCE_NAMES`](crate::config::MAX_RESOURCE_NAMES)
    /// names in all, before they are all allocated.
    pub(super) fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        struct Item(String);
        impl<'de> Deserialize<'de> for Item {
            fn deserialize<D2: Deserializer<'de>>(d: D2) -> Result<Self, D2::Error> {
                let max = crate::config::MAX_RESOURCE_NAMES;
                let n = RESOURCE_NAMES.with(|n| {
                    n.set(n.get() + 1);
                    n.get()
                });
                if n > max {
                    return Err(de::Error::custom(format!(
                        "more than {max} resource names in the file (atrest's limit)"
                    )));
                }
                string(d).map(Item)
            }
        }
        Ok(Option::<Vec<Item>>::deserialize(d)?
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.0)
            .collect())
    }
}
