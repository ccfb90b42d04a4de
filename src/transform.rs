//! The stored-value format and the read/write chain kube-apiserver builds from a config.
//!
//! # Format
//!
//! ```text
//! encrypted: | k8s:enc: | <provider> | :v1: | <key name> | : | provider-specific body |
//!            (kms: k8s:enc:kms:v1:<name>: or k8s:enc:kms:v2:<name>:)
//! plaintext: anything that does not start with `k8s:enc:` (protobuf `k8s\0…`, JSON, …)
//! ```
//!
//! # Read semantics (kube-apiserver's prefix transformers)
//!
//! A [`Chain`] is the config's providers for one resource, flattened to one entry per key, in
//! config order (see [`crate::provider`]). Writes use the first entry. A read tries, in order,
//! **every** entry whose full prefix `k8s:enc:<provider>:v1:<name>:` matches — so names
//! containing `:` work and two providers sharing a prefix are both tried — and does not stop at
//! a failure. The identity entry claims every value but silently passes on encrypted ones.
//! Source: `staging/src/k8s.io/apiserver/pkg/storage/value/transformer.go` (`prefixTransformers`)
//! and `.../server/options/encryptionconfig/config.go`.
//!
//! # States
//!
//! [`Chain::classify`] gives each value exactly one [`State`]:
//! - `plaintext`: no `k8s:enc:` prefix, whatever the config says;
//! - `current`: read by the first entry (the write provider and key) — for KMS v2 also under
//!   the plugin's current key ID (`Status`) and in seed mode; for KMS v1 with GCM, not legacy CBC;
//! - `stale`: read by a later entry — rewrite it before removing that key;
//! - `unknown-key`: encrypted, but no entry's prefix matches (kube-apiserver cannot read it);
//! - `undecryptable`: some entries' prefixes match but every one of them failed;
//! - `kms`: a configured KMS provider's value read without its plugin (`--no-kms`: recognised,
//!   not verified);
//! - `encrypted`: only without a config ([`classify_without_config`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;

use crate::config::{Config, KmsConfiguration, ProviderConfiguration};
use crate::provider::kms::plugin::{Api, KmsError, PluginClient};
use crate::provider::{
    aescbc::AesCbc, aesgcm::AesGcm, identity::Identity, identity::ENCRYPTED_MARKER, kms::Kms,
    kms::KmsVersion, secretbox::Secretbox, DecryptError, EncryptError, KeyError, Plaintext,
    Provider, ProviderKind,
};

/// The state of one stored value against a config (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Stored without encryption.
    Plaintext,
    /// Encrypted with the config's write provider and key, and it decrypts.
    Current,
    /// Encrypted with another provider/key of the config, and it decrypts.
    Stale,
    /// Encrypted with a provider/key the config does not have.
    UnknownKey,
    /// The config has that provider/key but decryption fails.
    Undecryptable,
    /// Encrypted by a KMS provider whose plugin is not connected (`--no-kms`): recognised, not
    /// verified.
    Kms,
    /// Encrypted, not verified (no config was given).
    Encrypted,
}

impl State {
    /// Every state, in report order.
    pub const ALL: [State; 7] = [
        State::Plaintext,
        State::Current,
        State::Stale,
        State::UnknownKey,
        State::Undecryptable,
        State::Kms,
        State::Encrypted,
    ];

    /// The name used in reports (`unknown-key`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Plaintext => "plaintext",
            State::Current => "current",
            State::Stale => "stale",
            State::UnknownKey => "unknown-key",
            State::Undecryptable => "undecryptable",
            State::Kms => "kms",
            State::Encrypted => "encrypted",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The provider and key name read off an encrypted value's prefix, without a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPrefix {
    /// The provider, if it is one kube-apiserver has.
    pub provider: Option<ProviderKind>,
    /// The provider name as written (`aescbc`, `kms`, or anything else).
    pub provider_name: String,
    /// `v1` or `v2`.
    pub version: String,
    /// The key name (KMS: the provider name). Best effort: names may contain `:`, and without a
    /// config the end of the name is where the printable text ends (see [`parse_prefix`]).
    pub key_name: Option<String>,
}

/// Reads `k8s:enc:<provider>:<version>:<name>:` off a value without a config.
///
/// Key names may contain `:` (k3s names keys `aescbckey-2025-05-16T19:21:39Z`), and the bytes
/// after the name are random, so the end of the name is a guess: among the `:` inside the run
/// of name-like characters (`A-Z a-z 0-9 . _ - : / + = @`) after the version, take those that
/// leave a body the provider's layout allows (aescbc: a 16-byte IV and whole 16-byte blocks;
/// aesgcm: nonce and tag; secretbox: nonce and tag), and of those the last for aescbc (k3s'
/// colon names) and the first otherwise. With a config, names are matched exactly instead.
/// Returns `None` when the value is not encrypted (no `k8s:enc:`).
pub fn parse_prefix(value: &[u8]) -> Option<ParsedPrefix> {
    let rest = value.strip_prefix(ENCRYPTED_MARKER)?;
    let field = |s: &[u8]| -> Option<(String, usize)> {
        let end = s.iter().take(32).position(|&b| b == b':')?;
        let text = std::str::from_utf8(&s[..end]).ok()?;
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric())
            .then(|| (text.to_owned(), end + 1))
    };
    let Some((provider_name, used)) = field(rest) else {
        return Some(ParsedPrefix {
            provider: None,
            provider_name: String::new(),
            version: String::new(),
            key_name: None,
        });
    };
    let rest = &rest[used..];
    let (version, used) = field(rest).unwrap_or_default();
    let rest = &rest[used..];
    let provider = match provider_name.as_str() {
        "aescbc" => Some(ProviderKind::Aescbc),
        "aesgcm" => Some(ProviderKind::Aesgcm),
        "secretbox" => Some(ProviderKind::Secretbox),
        "kms" => Some(ProviderKind::Kms),
        _ => None,
    };
    let name_like = |b: &u8| b.is_ascii_alphanumeric() || b".:_-/+=@".contains(b);
    let run = rest
        .iter()
        .position(|b| !name_like(b))
        .unwrap_or(rest.len());
    let fits = |colon: usize| {
        let body = rest.len() - colon - 1;
        match provider {
            Some(ProviderKind::Aescbc) => body >= 32 && (body - 16).is_multiple_of(16),
            Some(ProviderKind::Aesgcm) => body >= 12 + 16,
            Some(ProviderKind::Secretbox) => body >= 24 + 16,
            _ => true,
        }
    };
    let mut candidates = rest[..run]
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b':' && i > 0 && fits(i))
        .map(|(i, _)| i);
    let end = if provider == Some(ProviderKind::Aescbc) {
        candidates.next_back()
    } else {
        candidates.next()
    };
    let key_name = end
        .and_then(|end| std::str::from_utf8(&rest[..end]).ok())
        .map(str::to_owned);
    Some(ParsedPrefix {
        provider,
        provider_name,
        version,
        key_name,
    })
}

/// What [`Chain::classify`] found out about one stored value.
///
/// `Debug` never shows the plaintext.
pub struct Classification {
    /// The value's state.
    pub state: State,
    /// The provider that wrote it (`None` for plaintext, or an unrecognised provider).
    pub provider: Option<ProviderKind>,
    /// The key name (KMS: the provider name).
    pub key_name: Option<String>,
    /// Whether kube-apiserver running this config can read the value (`None` without config).
    pub readable: Option<bool>,
    /// Why it could not be read, for `undecryptable` and `unknown-key` values.
    pub error: Option<String>,
    /// The decrypted bytes, when the value was read (plaintext values: the value itself).
    pub plaintext: Option<Plaintext>,
    /// Index of the chain entry that read it.
    pub read_by: Option<usize>,
    /// KMS v2 values: the stored `keyID` (the KMS key that wrapped the DEK), when the value's
    /// EncryptedObject decodes — also for `kms`, `stale` and `undecryptable` values.
    pub kms_key_id: Option<String>,
}

impl fmt::Debug for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classification")
            .field("state", &self.state)
            .field("provider", &self.provider)
            .field("key_name", &self.key_name)
            .field("readable", &self.readable)
            .field("error", &self.error)
            .field("plaintext_len", &self.plaintext.as_ref().map(|p| p.len()))
            .field("read_by", &self.read_by)
            .field("kms_key_id", &self.kms_key_id)
            .finish()
    }
}

/// Classifies a value when no config is given: plaintext, kms, or encrypted (not verified).
pub fn classify_without_config(value: &[u8]) -> Classification {
    match parse_prefix(value) {
        None => Classification {
            state: State::Plaintext,
            provider: None,
            key_name: None,
            readable: None,
            error: None,
            plaintext: None,
            read_by: None,
            kms_key_id: None,
        },
        Some(p) => Classification {
            state: if p.provider == Some(ProviderKind::Kms) {
                State::Kms
            } else {
                State::Encrypted
            },
            error: p.provider.is_none().then(|| {
                format!(
                    "unrecognised provider {:?} in value prefix",
                    p.provider_name
                )
            }),
            provider: p.provider,
            key_name: p.key_name,
            readable: None,
            plaintext: None,
            read_by: None,
            kms_key_id: None,
        },
    }
}

/// Why a chain could not be built or used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransformError {
    /// A key could not be turned into a cipher.
    #[error("resources[{resource}].providers[{provider}]: {source}")]
    Key {
        /// Index of the resources entry.
        resource: usize,
        /// Index of the provider in that entry.
        provider: usize,
        /// The problem.
        #[source]
        source: KeyError,
    },
    /// The config does not name the resource: kube-apiserver stores it unencrypted.
    #[error("the config does not cover resource {0:?}: kube-apiserver stores it unencrypted")]
    NotCovered(String),
    /// Encryption failed.
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    /// A KMS provider's plugin client could not be set up (bad endpoint).
    #[error(transparent)]
    Kms(#[from] KmsError),
}

/// Whether and how a chain's KMS providers reach their plugins.
#[derive(Debug, Clone, Default)]
pub struct KmsOptions {
    /// Connect each KMS provider to its plugin. Without this, KMS values are only recognised
    /// (state `kms`) and no socket is touched.
    pub connect: bool,
    /// Endpoints (`unix:///path`) that replace the config's, by provider name.
    pub endpoints: HashMap<String, String>,
}

impl KmsOptions {
    /// Connect to the plugins, at the config's endpoints.
    pub fn connect() -> Self {
        KmsOptions {
            connect: true,
            endpoints: HashMap::new(),
        }
    }
}

/// One entry of a chain: a provider with one key, and where it came from in the config.
#[derive(Debug)]
pub struct ChainEntry {
    /// The provider with its key.
    pub provider: Provider,
    /// `resources[i].providers[j]`'s index pair, and the key index inside it.
    pub origin: (usize, usize, usize),
}

/// The providers that apply to one resource, flattened to one entry per key, in read order.
#[derive(Debug)]
pub struct Chain {
    entries: Vec<ChainEntry>,
    resource: String,
}

impl Chain {
    /// Builds the chain kube-apiserver would use for `group`/`resource` (`""`/`secrets` for
    /// Secrets).
    /// KMS providers only recognise their values; see [`Chain::from_config_with_kms`].
    pub fn from_config(
        config: &Config,
        group: &str,
        resource: &str,
    ) -> Result<Chain, TransformError> {
        Self::from_config_with_kms(config, group, resource, &KmsOptions::default())
    }

    /// [`Chain::from_config`], with KMS providers connected to their plugins as `kms` says.
    /// Clients connect lazily: building the chain does no I/O (check plugins with
    /// [`Chain::kms_providers`] and [`Kms::status`]).
    pub fn from_config_with_kms(
        config: &Config,
        group: &str,
        resource: &str,
        kms: &KmsOptions,
    ) -> Result<Chain, TransformError> {
        let providers = config.providers_for(group, resource);
        if providers.is_empty() {
            return Err(TransformError::NotCovered(if group.is_empty() {
                resource.to_owned()
            } else {
                format!("{resource}.{group}")
            }));
        }
        let mut entries = Vec::new();
        for (origin, p) in providers {
            Self::flatten(p, origin, kms, &mut entries)?;
        }
        Ok(Chain {
            entries,
            resource: resource.to_owned(),
        })
    }

    /// Builds a chain from providers directly, in read order (the first one encrypts). For
    /// library users and tests; configs go through [`Chain::from_config`]. `None` if empty.
    pub fn from_providers(resource: &str, providers: Vec<Provider>) -> Option<Chain> {
        if providers.is_empty() {
            return None;
        }
        Some(Chain {
            entries: providers
                .into_iter()
                .enumerate()
                .map(|(i, provider)| ChainEntry {
                    provider,
                    origin: (0, i, 0),
                })
                .collect(),
            resource: resource.to_owned(),
        })
    }

    fn flatten(
        p: &ProviderConfiguration,
        (ri, pi): (usize, usize),
        kms: &KmsOptions,
        out: &mut Vec<ChainEntry>,
    ) -> Result<(), TransformError> {
        let key_err = |source| TransformError::Key {
            resource: ri,
            provider: pi,
            source,
        };
        let mut push = |provider, ki| {
            out.push(ChainEntry {
                provider,
                origin: (ri, pi, ki),
            })
        };
        if let Some(c) = &p.aescbc {
            for (ki, k) in c.keys.iter().enumerate() {
                let cipher = AesCbc::new(&k.name, &k.material()).map_err(key_err)?;
                push(Provider::Aescbc(cipher), ki);
            }
        } else if let Some(c) = &p.aesgcm {
            for (ki, k) in c.keys.iter().enumerate() {
                let cipher = AesGcm::new(&k.name, &k.material()).map_err(key_err)?;
                push(Provider::Aesgcm(cipher), ki);
            }
        } else if let Some(c) = &p.secretbox {
            for (ki, k) in c.keys.iter().enumerate() {
                let cipher = Secretbox::new(&k.name, &k.material()).map_err(key_err)?;
                push(Provider::Secretbox(cipher), ki);
            }
        } else if p.identity.is_some() {
            push(Provider::Identity(Identity), 0);
        } else if let Some(k) = &p.kms {
            let version = match k.api_version.as_deref() {
                Some("v2") => KmsVersion::V2,
                _ => KmsVersion::V1,
            };
            push(Provider::Kms(Self::kms_provider(k, version, kms)?), 0);
        }
        Ok(())
    }

    fn kms_provider(
        k: &KmsConfiguration,
        version: KmsVersion,
        options: &KmsOptions,
    ) -> Result<Kms, TransformError> {
        let provider = Kms::new(&k.name, version);
        if !options.connect {
            return Ok(provider);
        }
        let endpoint = options.endpoints.get(&k.name).unwrap_or(&k.endpoint);
        let api = match version {
            KmsVersion::V1 => Api::V1,
            KmsVersion::V2 => Api::V2,
        };
        let client = PluginClient::new(&k.name, endpoint, api, k.timeout_duration())?;
        let cache_size = k
            .cachesize
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .unwrap_or(crate::provider::kms::DEFAULT_CACHE_SIZE);
        Ok(provider.with_plugin(Arc::new(client), cache_size))
    }

    /// The chain's KMS providers, in read order.
    pub fn kms_providers(&self) -> impl Iterator<Item = &Kms> {
        self.entries.iter().filter_map(|e| match &e.provider {
            Provider::Kms(k) => Some(k),
            _ => None,
        })
    }

    /// The chain's entries, in read order.
    pub fn entries(&self) -> &[ChainEntry] {
        &self.entries
    }

    /// The resource this chain is for.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The entry new writes use.
    pub fn write_entry(&self) -> &ChainEntry {
        // `from_config` refuses an empty chain and validation requires a provider.
        &self.entries[0]
    }

    /// Whether kube-apiserver with this config can read unencrypted values.
    pub fn reads_plaintext(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.provider, Provider::Identity(_)))
    }

    /// Encrypts `plaintext` for `etcd_key` with the write provider and key, as kube-apiserver
    /// would store it.
    pub fn encrypt(&self, plaintext: &[u8], etcd_key: &[u8]) -> Result<Vec<u8>, TransformError> {
        Ok(self.write_entry().provider.encrypt(plaintext, etcd_key)?)
    }

    /// Reads and classifies one stored value. Never fails: a bad value is a state.
    pub fn classify(&self, value: &[u8], etcd_key: &[u8]) -> Classification {
        if !value.starts_with(ENCRYPTED_MARKER) {
            let identity_first = matches!(self.entries[0].provider, Provider::Identity(_));
            return Classification {
                state: State::Plaintext,
                provider: None,
                key_name: None,
                readable: Some(self.reads_plaintext()),
                error: (!self.reads_plaintext()).then(|| {
                    "no matching prefix found (the config has no identity provider)".to_owned()
                }),
                plaintext: Some(zeroize::Zeroizing::new(value.to_vec())),
                read_by: if identity_first { Some(0) } else { None },
                kms_key_id: None,
            };
        }
        let mut errors: Vec<String> = Vec::new();
        let mut first_match: Option<&ChainEntry> = None;
        let mut kms_key_id: Option<String> = None;
        for (i, entry) in self.entries.iter().enumerate() {
            // `fresh`: whether a read by the write provider is current. Only KMS adds a rule
            // (v2: the plugin's current key ID and the seed type; v1: GCM, not legacy CBC).
            let (result, fresh) = match &entry.provider {
                // Identity fails on every encrypted value; kube-apiserver skips that failure.
                Provider::Identity(_) => continue,
                Provider::Kms(kms) => {
                    let Some(read) = kms.read(value, etcd_key) else {
                        continue;
                    };
                    if kms_key_id.is_none() {
                        kms_key_id = read.key_id;
                    }
                    match read.result {
                        Ok((plaintext, fresh)) => (Ok(plaintext), fresh),
                        Err(e) => (Err(e), false),
                    }
                }
                provider => match provider.try_decrypt(value, etcd_key) {
                    Some(result) => (result, true),
                    None => continue,
                },
            };
            first_match.get_or_insert(entry);
            match result {
                Ok(plaintext) => {
                    return Classification {
                        state: if i == 0 && fresh {
                            State::Current
                        } else {
                            State::Stale
                        },
                        provider: Some(entry.provider.kind()),
                        key_name: entry.provider.key_name().map(str::to_owned),
                        readable: Some(true),
                        error: None,
                        plaintext: Some(plaintext),
                        read_by: Some(i),
                        kms_key_id,
                    }
                }
                Err(DecryptError::Kms) => {
                    return Classification {
                        state: State::Kms,
                        provider: Some(ProviderKind::Kms),
                        key_name: entry.provider.key_name().map(str::to_owned),
                        readable: Some(true),
                        error: None,
                        plaintext: None,
                        read_by: Some(i),
                        kms_key_id,
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    if !errors.contains(&msg) {
                        errors.push(msg);
                    }
                }
            }
        }
        match first_match {
            Some(entry) => Classification {
                state: State::Undecryptable,
                provider: Some(entry.provider.kind()),
                key_name: entry.provider.key_name().map(str::to_owned),
                readable: Some(false),
                error: Some(if errors.len() == 1 {
                    errors.remove(0)
                } else {
                    format!("[{}]", errors.join(", "))
                }),
                plaintext: None,
                read_by: None,
                kms_key_id,
            },
            None => unknown_key(value),
        }
    }

    /// Decides what a rewrite does with one stored value, and for a write, produces the new value
    /// **already verified**: it was read back through the whole chain and decrypts, as the
    /// write key, to exactly the old plaintext.
    pub fn plan_rewrite(&self, value: &[u8], etcd_key: &[u8]) -> (Classification, RewritePlan) {
        let found = self.classify(value, etcd_key);
        let identity_write = matches!(self.write_entry().provider, Provider::Identity(_));
        let plan = match found.state {
            State::Current => RewritePlan::AlreadyCurrent,
            State::Plaintext if identity_write => RewritePlan::AlreadyCurrent,
            State::Plaintext | State::Stale => match &found.plaintext {
                Some(plaintext) => self.verified_write(plaintext, etcd_key),
                None => RewritePlan::Skip,
            },
            State::UnknownKey | State::Undecryptable | State::Kms | State::Encrypted => {
                RewritePlan::Skip
            }
        };
        (found, plan)
    }

    fn verified_write(&self, plaintext: &[u8], etcd_key: &[u8]) -> RewritePlan {
        let new_value = match self.encrypt(plaintext, etcd_key) {
            Ok(v) => v,
            Err(e) => return RewritePlan::Failed(e.to_string()),
        };
        let back = self.classify(&new_value, etcd_key);
        let expected_state = if matches!(self.write_entry().provider, Provider::Identity(_)) {
            State::Plaintext
        } else {
            State::Current
        };
        match back.plaintext {
            Some(p) if back.state == expected_state && p.as_slice() == plaintext => {
                RewritePlan::Write(new_value)
            }
            _ => RewritePlan::Failed(format!(
                "verification failed: the new value reads back as {} instead of the old plaintext",
                back.state
            )),
        }
    }
}

/// What a rewrite does with one value. `Debug` shows a new value's length, never its bytes
/// (with an identity write provider they are the plaintext).
#[derive(PartialEq, Eq)]
pub enum RewritePlan {
    /// Already what the write provider would store: nothing to do.
    AlreadyCurrent,
    /// Will not touch it (unknown key, undecryptable, kms).
    Skip,
    /// Write this new value (verified to decrypt to the old plaintext).
    Write(Vec<u8>),
    /// A new value could not be produced or did not verify; nothing is written.
    Failed(String),
}

impl fmt::Debug for RewritePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewritePlan::AlreadyCurrent => f.write_str("AlreadyCurrent"),
            RewritePlan::Skip => f.write_str("Skip"),
            RewritePlan::Write(v) => write!(f, "Write({} bytes)", v.len()),
            RewritePlan::Failed(why) => f.debug_tuple("Failed").field(why).finish(),
        }
    }
}

/// The classification of an encrypted value no configured key reads: `unknown-key`, naming
/// the provider and key its prefix names, when it names them.
fn unknown_key(value: &[u8]) -> Classification {
    let parsed = parse_prefix(value);
    let error = match &parsed {
        None => "no configured key matches this value".to_owned(),
        Some(p) => match (p.provider, &p.key_name) {
            (None, _) if p.provider_name.is_empty() => {
                "the value starts with k8s:enc: but no provider name follows".to_owned()
            }
            (None, _) => format!(
                "unrecognised provider {:?} in the value's k8s:enc: prefix",
                p.provider_name
            ),
            (Some(ProviderKind::Kms), Some(name)) => {
                format!("no configured kms provider is named {name:?}")
            }
            (Some(kind), Some(name)) => {
                format!("no configured {kind} key is named {name:?}")
            }
            (Some(kind), None) => format!(
                "no configured {kind} key matches (the key name in the prefix is not \
                 readable text)"
            ),
        },
    };
    let (provider, key_name) = parsed
        .map(|p| (p.provider, p.key_name))
        .unwrap_or((None, None));
    Classification {
        state: State::UnknownKey,
        error: Some(error),
        provider,
        key_name,
        readable: Some(false),
        plaintext: None,
        read_by: None,
        kms_key_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::KeyMaterial;

    const KEY: &[u8] = b"/registry/secrets/default/db";

    fn cbc(name: &str, byte: u8) -> Provider {
        Provider::Aescbc(AesCbc::new(name, &KeyMaterial::new(vec![byte; 32])).unwrap())
    }
    fn gcm(name: &str, byte: u8) -> Provider {
        Provider::Aesgcm(AesGcm::new(name, &KeyMaterial::new(vec![byte; 32])).unwrap())
    }
    fn chain(providers: Vec<Provider>) -> Chain {
        Chain::from_providers("secrets", providers).unwrap()
    }

    #[test]
    fn states_of_every_kind() {
        let old = chain(vec![cbc("key0", 0)]);
        let c = chain(vec![
            cbc("key1", 1),
            cbc("key0", 0),
            Provider::Kms(Kms::new("plugin", KmsVersion::V2)),
            Provider::Identity(Identity),
        ]);
        let current = c.encrypt(b"k8s\0a", KEY).unwrap();
        let stale = old.encrypt(b"k8s\0b", KEY).unwrap();
        let unknown = chain(vec![cbc("other", 9)]).encrypt(b"x", KEY).unwrap();
        let mut corrupt = c.encrypt(b"k8s\0c", KEY).unwrap();
        let n = corrupt.len();
        corrupt.truncate(n - 1);

        let r = c.classify(&current, KEY);
        assert_eq!(
            (r.state, r.read_by, r.readable),
            (State::Current, Some(0), Some(true))
        );
        assert_eq!(
            r.plaintext.as_deref().map(Vec::as_slice),
            Some(&b"k8s\0a"[..])
        );
        let r = c.classify(&stale, KEY);
        assert_eq!(
            (r.state, r.key_name.as_deref()),
            (State::Stale, Some("key0"))
        );
        let r = c.classify(&unknown, KEY);
        assert_eq!(
            (r.state, r.key_name.as_deref()),
            (State::UnknownKey, Some("other"))
        );
        assert_eq!(r.readable, Some(false));
        let r = c.classify(&corrupt, KEY);
        assert_eq!((r.state, r.readable), (State::Undecryptable, Some(false)));
        assert!(r.error.unwrap().contains("multiple of the 16-byte block"));
        let r = c.classify(b"k8s:enc:kms:v2:plugin:\x0a\x01", KEY);
        assert_eq!((r.state, r.provider), (State::Kms, Some(ProviderKind::Kms)));
        let r = c.classify(b"k8s\0plain", KEY);
        assert_eq!((r.state, r.readable), (State::Plaintext, Some(true)));
        // Without identity, kube-apiserver cannot read plaintext.
        let r = old.classify(b"k8s\0plain", KEY);
        assert_eq!((r.state, r.readable), (State::Plaintext, Some(false)));
    }

    #[test]
    fn every_matching_key_is_tried_in_order() {
        // Two aescbc keys with the same name: the first fails, the second reads it (stale).
        let writer = chain(vec![cbc("dup", 2)]);
        let value = writer.encrypt(b"payload", KEY).unwrap();
        let c = chain(vec![cbc("dup", 1), cbc("dup", 2)]);
        let r = c.classify(&value, KEY);
        assert_eq!((r.state, r.read_by), (State::Stale, Some(1)));
        // All matching keys fail: undecryptable, errors aggregated once each.
        let c = chain(vec![cbc("dup", 3), cbc("dup", 4)]);
        let r = c.classify(&value, KEY);
        assert_eq!(r.state, State::Undecryptable);
        assert_eq!(
            r.error.as_deref(),
            Some("invalid PKCS#7 padding (wrong key or corrupt value)")
        );
    }

    #[test]
    fn key_names_with_colons_are_matched_whole() {
        let name = "aescbckey-2025-05-16T19:21:39Z";
        let c = chain(vec![cbc("aescbckey-2025-05-16T19", 5), cbc(name, 6)]);
        let value = chain(vec![cbc(name, 6)]).encrypt(b"v", KEY).unwrap();
        let r = c.classify(&value, KEY);
        assert_eq!((r.state, r.key_name.as_deref()), (State::Stale, Some(name)));
    }

    #[test]
    fn aesgcm_values_are_bound_to_their_key() {
        let c = chain(vec![gcm("k", 1)]);
        let value = c.encrypt(b"v", KEY).unwrap();
        assert_eq!(c.classify(&value, KEY).state, State::Current);
        let moved = c.classify(&value, b"/registry/secrets/default/other");
        assert_eq!(moved.state, State::Undecryptable);
    }

    #[test]
    fn identity_first_keeps_plaintext_current_for_rewrite() {
        let c = chain(vec![Provider::Identity(Identity), cbc("key1", 1)]);
        let enc = chain(vec![cbc("key1", 1)]).encrypt(b"k8s\0x", KEY).unwrap();
        let (found, plan) = c.plan_rewrite(&enc, KEY);
        assert_eq!(found.state, State::Stale);
        assert_eq!(plan, RewritePlan::Write(b"k8s\0x".to_vec()));
        let (_, plan) = c.plan_rewrite(b"k8s\0x", KEY);
        assert_eq!(plan, RewritePlan::AlreadyCurrent);
    }

    #[test]
    fn rewrite_plans_are_verified_and_skip_what_they_cannot_read() {
        let c = chain(vec![
            gcm("new", 7),
            cbc("old", 1),
            Provider::Identity(Identity),
        ]);
        let stale = chain(vec![cbc("old", 1)]).encrypt(b"k8s\0s", KEY).unwrap();
        for old in [&stale[..], b"k8s\0plain"] {
            let (found, plan) = c.plan_rewrite(old, KEY);
            let RewritePlan::Write(new) = plan else {
                panic!("expected a write")
            };
            let back = c.classify(&new, KEY);
            assert_eq!(back.state, State::Current);
            assert_eq!(
                back.plaintext.unwrap().as_slice(),
                found.plaintext.unwrap().as_slice()
            );
        }
        let current = c.encrypt(b"k8s\0c", KEY).unwrap();
        assert_eq!(c.plan_rewrite(&current, KEY).1, RewritePlan::AlreadyCurrent);
        let unknown = chain(vec![cbc("zzz", 3)]).encrypt(b"x", KEY).unwrap();
        assert_eq!(c.plan_rewrite(&unknown, KEY).1, RewritePlan::Skip);
        assert_eq!(
            c.plan_rewrite(b"k8s:enc:kms:v2:p:x", KEY).1,
            RewritePlan::Skip
        );
    }

    #[test]
    fn parse_prefix_without_config() {
        let mut v = b"k8s:enc:aescbc:v1:my:key:".to_vec();
        v.extend_from_slice(&[0x9a; 32]);
        let p = parse_prefix(&v).unwrap();
        assert_eq!(p.provider, Some(ProviderKind::Aescbc));
        assert_eq!(p.key_name.as_deref(), Some("my:key"));
        // IV bytes that look like more name (`Zq:`) are told apart by the body length.
        let mut v = b"k8s:enc:aescbc:v1:key0:Zq:".to_vec();
        v.extend_from_slice(&[0x01; 29]);
        assert_eq!(parse_prefix(&v).unwrap().key_name.as_deref(), Some("key0"));
        let mut v = b"k8s:enc:aesgcm:v1:gcm1::x".to_vec();
        v.extend_from_slice(&[0x01; 40]);
        assert_eq!(parse_prefix(&v).unwrap().key_name.as_deref(), Some("gcm1"));
        let p = parse_prefix(b"k8s:enc:weird:v9:n:\x01").unwrap();
        assert_eq!((p.provider, p.provider_name.as_str()), (None, "weird"));
        assert!(parse_prefix(b"k8s\0").is_none());
        for n in 0..40 {
            // never panics on any truncation
            let _ = parse_prefix(&b"k8s:enc:secretbox:v1:key1:\x01\x02"[..n.min(28)]);
        }
        let c = classify_without_config(b"k8s:enc:secretbox:v1:key1:\x01");
        assert_eq!((c.state, c.readable), (State::Encrypted, None));
    }

    #[test]
    fn debug_never_shows_plaintext() {
        let c = chain(vec![cbc("k", 1)]);
        let v = c.encrypt(b"TOPSECRET", KEY).unwrap();
        let text = format!("{:?}", c.classify(&v, KEY));
        assert!(!text.contains("TOPSECRET") && !text.contains("84, 79, 80"));
    }
}
