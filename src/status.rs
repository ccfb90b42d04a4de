//! The config and the store together: for every configured key, how many stored entries need
//! it, and whether kube-apiserver running the config could read everything it stores.
//!
//! [`Status`] is built from one scan of a prefix ([`status`], or [`StatusBuilder`] with a scan
//! loop of your own) and *is* the JSON schema of `atrest status -o json`: every field is
//! documented here. It answers the operator's questions before a config change:
//!
//! - which key writes, and how many entries each key (or identity, or a KMS provider) reads —
//!   so which keys are still needed and which can be removed ([`KeyStatus::safe_to_remove`]);
//! - which stored entries no configured key can read, by the provider and key name they name
//!   ([`Status::unknown_keys`]) or because decryption fails ([`KeyStatus::undecryptable`]);
//! - whether the config as written lets kube-apiserver read everything under the prefix
//!   ([`Status::apiserver_reads_all`], with [`Status::reasons`]) — plaintext entries and no
//!   identity provider, for example, make every read of them fail.
//!
//! ```text
//! Store::scan(prefix) ──▶ Entry ──▶ Chain::classify ──▶ read_by chain entry ──▶ KeyStatus.entries
//!                                                   └──▶ unknown-key / undecryptable / plaintext
//! ```
//!
//! No secret value or key material appears in a status.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::{Counts, ProviderRef, Verdict};
use crate::provider::{Provider, ProviderKind};
use crate::store::{Entry, ReadStore, StoreError, Unanswered};
use crate::transform::{Chain, ChainEntry, State};

/// One configured key (or identity, or KMS provider) of the chain, with what the store needs
/// of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    /// Where it is in the config: `resources[0].providers[0].aescbc.keys[1]`,
    /// `resources[0].providers[2].identity`, `resources[0].providers[1].kms`.
    pub path: String,
    /// The provider.
    pub provider: ProviderKind,
    /// The key name (KMS: the provider name); `null` for identity.
    pub key_name: Option<String>,
    /// Whether this is the write key (the chain's first entry): new writes use it.
    pub write: bool,
    /// Entries this key reads — the first chain entry that decrypts them is this one. For
    /// identity: the plaintext entries; for KMS: the entries naming this provider (not verified
    /// locally).
    pub entries: u64,
    /// Entries whose prefix names this key but that it fails to decrypt (wrong key material,
    /// corrupt, or an aesgcm value moved to another etcd key) and no later key reads either.
    pub undecryptable: u64,
    /// Whether removing it from the config leaves every entry as readable as now: it reads no
    /// entry and it is not the write key. For identity: no plaintext entries.
    pub safe_to_remove: bool,
    /// KMS v2 providers: the entries naming this provider, by the KMS key ID (KEK) stored in
    /// them — when the old key ID's count is 0, the plugin may retire that KEK. Absent for
    /// other providers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kms_key_ids: BTreeMap<String, u64>,
}

/// Entries encrypted with a provider and key name the config does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownKey {
    /// The provider named in the value's prefix (`null` for one kube-apiserver does not know).
    pub provider: Option<ProviderKind>,
    /// The key name read off the prefix (best effort; `null` if it could not be read).
    pub key_name: Option<String>,
    /// How many entries.
    pub entries: u64,
}

/// The status of a config against a store: the JSON schema of `atrest status -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Where the entries came from: `etcd <endpoint>` or `snapshot <file>`.
    pub source: String,
    /// The scanned key prefix, e.g. `/registry/secrets/`.
    pub prefix: String,
    /// The resource whose providers the config applies (`secrets`).
    pub resource: String,
    /// The store revision the scan was pinned to.
    pub revision: i64,
    /// The write provider and key (the chain's first entry).
    pub write_provider: ProviderRef,
    /// Every provider and key that applies to the resource, in the order kube-apiserver tries
    /// them (config order, one per key).
    pub keys: Vec<KeyStatus>,
    /// Entries encrypted with keys the config does not have, by provider and key name.
    pub unknown_keys: Vec<UnknownKey>,
    /// Counts by state, as `atrest audit` reports them.
    pub summary: Counts,
    /// Plaintext entries kube-apiserver cannot read because the config has no identity
    /// provider (0 when it has one).
    pub unreadable_plaintext: u64,
    /// Whether kube-apiserver running this config could read every entry under the prefix.
    pub apiserver_reads_all: bool,
    /// Why not, one sentence per cause (empty when it can).
    pub reasons: Vec<String>,
    /// `findings` (exit 1) when something is unreadable; `clean` (exit 0) otherwise. Stale and
    /// plaintext entries that the config reads are not findings here (`atrest audit` reports
    /// them).
    pub verdict: Verdict,
    /// Live etcd only: each member that did not answer (left out at connect time, or failed
    /// over from during the run), with its last error; absent when every member answered.
    /// `source` names the member that did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unanswered: Vec<Unanswered>,
}

/// Where a chain entry is in the config, as a field path.
pub fn config_path(entry: &ChainEntry) -> String {
    let (ri, pi, ki) = entry.origin;
    let base = format!("resources[{ri}].providers[{pi}]");
    match &entry.provider {
        Provider::Identity(_) => format!("{base}.identity"),
        Provider::Kms(_) => format!("{base}.kms"),
        p => format!("{base}.{}.keys[{ki}]", p.kind()),
    }
}

/// Builds a [`Status`] entry by entry; used by [`status`] and by callers with their own scan.
#[derive(Debug)]
pub struct StatusBuilder<'a> {
    chain: &'a Chain,
    prefix: Vec<u8>,
    keys: Vec<KeyStatus>,
    unknown: BTreeMap<(Option<ProviderKind>, Option<String>), u64>,
    summary: Counts,
    unreadable_plaintext: u64,
}

impl<'a> StatusBuilder<'a> {
    /// Starts a status of `prefix` against `chain`.
    pub fn new(chain: &'a Chain, prefix: &[u8]) -> Self {
        let keys = chain
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| KeyStatus {
                path: config_path(e),
                provider: e.provider.kind(),
                key_name: e.provider.key_name().map(str::to_owned),
                write: i == 0,
                entries: 0,
                undecryptable: 0,
                safe_to_remove: false,
                kms_key_ids: BTreeMap::new(),
            })
            .collect();
        StatusBuilder {
            chain,
            prefix: prefix.to_vec(),
            keys,
            unknown: BTreeMap::new(),
            summary: Counts::default(),
            unreadable_plaintext: 0,
        }
    }

    /// Classifies one entry and counts it against the key that reads it.
    pub fn add(&mut self, entry: &Entry) {
        let c = self.chain.classify(&entry.value, &entry.key);
        self.summary.add(c.state);
        match c.state {
            State::Plaintext => {
                let identity = self
                    .chain
                    .entries()
                    .iter()
                    .position(|e| matches!(e.provider, Provider::Identity(_)));
                match identity {
                    Some(i) => self.keys[i].entries += 1,
                    None => self.unreadable_plaintext += 1,
                }
            }
            State::Current | State::Stale | State::Kms => {
                if let Some(i) = c.read_by {
                    self.keys[i].entries += 1;
                    if let Some(id) = c.kms_key_id {
                        *self.keys[i].kms_key_ids.entry(id).or_default() += 1;
                    }
                }
            }
            State::Undecryptable => {
                // The classification names the first entry whose prefix matched.
                let matched = self.chain.entries().iter().position(|e| {
                    e.provider.kind() == c.provider.unwrap_or(ProviderKind::Identity)
                        && e.provider.key_name() == c.key_name.as_deref()
                });
                if let Some(i) = matched {
                    self.keys[i].undecryptable += 1;
                    if let Some(id) = c.kms_key_id {
                        *self.keys[i].kms_key_ids.entry(id).or_default() += 1;
                    }
                }
            }
            State::UnknownKey | State::Encrypted => {
                *self.unknown.entry((c.provider, c.key_name)).or_default() += 1;
            }
        }
    }

    /// Finishes the status.
    pub fn finish(self, source: String, revision: i64) -> Status {
        let mut keys = self.keys;
        for k in &mut keys {
            k.safe_to_remove = !k.write && k.entries == 0;
        }
        let s = self.summary;
        let mut reasons = Vec::new();
        if self.unreadable_plaintext > 0 {
            reasons.push(format!(
                "{} plaintext entries, but the config has no identity provider: add `- identity: {{}}` last until `atrest rewrite` has encrypted them",
                self.unreadable_plaintext
            ));
        }
        if s.unknown_key > 0 {
            let names: Vec<String> = self
                .unknown
                .iter()
                .map(|((p, k), n)| {
                    format!(
                        "{} key {} ({n})",
                        p.map_or("unknown provider", ProviderKind::as_str),
                        k.as_deref().map_or("?".to_owned(), |k| format!("{k:?}"))
                    )
                })
                .collect();
            reasons.push(format!(
                "{} encrypted with keys the config does not have: {}; put those keys back (after the write key) or restore the entries",
                if s.unknown_key == 1 { "1 entry is".to_owned() } else { format!("{} entries are", s.unknown_key) },
                names.join(", ")
            ));
        }
        if s.undecryptable > 0 {
            reasons.push(format!(
                "{} a configured key but {} not decrypt with it (wrong key material or damaged values); `atrest audit` lists them",
                if s.undecryptable == 1 { "1 entry names".to_owned() } else { format!("{} entries name", s.undecryptable) },
                if s.undecryptable == 1 { "does" } else { "do" }
            ));
        }
        let apiserver_reads_all = reasons.is_empty();
        let write = &self.chain.write_entry().provider;
        Status {
            source,
            prefix: String::from_utf8_lossy(&self.prefix).into_owned(),
            resource: self.chain.resource().to_owned(),
            revision,
            write_provider: ProviderRef {
                provider: write.kind(),
                key_name: write.key_name().map(str::to_owned),
            },
            keys,
            unknown_keys: self
                .unknown
                .into_iter()
                .map(|((provider, key_name), entries)| UnknownKey {
                    provider,
                    key_name,
                    entries,
                })
                .collect(),
            summary: s,
            unreadable_plaintext: self.unreadable_plaintext,
            apiserver_reads_all,
            reasons,
            verdict: if apiserver_reads_all {
                Verdict::Clean
            } else {
                Verdict::Findings
            },
            unanswered: Vec::new(),
        }
    }
}

/// Scans every entry under `prefix` once and builds the [`Status`] of `chain` against it.
pub async fn status<S: ReadStore + Sync>(
    store: &S,
    chain: &Chain,
    prefix: &[u8],
) -> Result<Status, StoreError> {
    let mut builder = StatusBuilder::new(chain, prefix);
    let info = store
        .scan(prefix, |entry| {
            builder.add(&entry);
            true
        })
        .await?;
    let mut status = builder.finish(store.source(), info.revision);
    status.unanswered = store.unanswered();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CONFIG: &str = "\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aescbc:
      keys:
      - {name: key2, secret: 7d9+9fRVOV06k4tCYRlZgx3EB0XKUbEzNCfAO/j2Cr0=}
      - {name: key1, secret: rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=}
";

    fn entry(key: &str, value: Vec<u8>) -> Entry {
        Entry {
            key: key.as_bytes().to_vec(),
            value,
            mod_revision: 2,
            create_revision: 2,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn counts_per_key_and_explains_unreadable_plaintext() {
        let config = Config::from_yaml(CONFIG).unwrap();
        let chain = Chain::from_config(&config, "", "secrets").unwrap();
        let mut b = StatusBuilder::new(&chain, b"/registry/secrets/");
        let k = "/registry/secrets/a/x";
        b.add(&entry(k, chain.encrypt(b"k8s\0x", k.as_bytes()).unwrap()));
        b.add(&entry(k, b"k8s\0plain".to_vec()));
        let mut lost = b"k8s:enc:aescbc:v1:key0:".to_vec();
        lost.extend_from_slice(&[7; 32]);
        b.add(&entry(k, lost));
        let s = b.finish("test".into(), 5);
        assert_eq!(s.keys.len(), 2);
        assert_eq!(s.keys[0].path, "resources[0].providers[0].aescbc.keys[0]");
        assert_eq!((s.keys[0].entries, s.keys[0].write), (1, true));
        assert!(
            !s.keys[0].safe_to_remove,
            "the write key is never removable"
        );
        assert_eq!(s.keys[1].path, "resources[0].providers[0].aescbc.keys[1]");
        assert!(s.keys[1].safe_to_remove);
        assert_eq!(s.unreadable_plaintext, 1);
        assert_eq!(s.unknown_keys.len(), 1);
        assert_eq!(s.unknown_keys[0].key_name.as_deref(), Some("key0"));
        assert!(!s.apiserver_reads_all);
        assert_eq!(s.reasons.len(), 2, "{:?}", s.reasons);
        assert!(s.reasons[0].contains("no identity provider"));
        assert_eq!(s.verdict, Verdict::Findings);
    }
}
