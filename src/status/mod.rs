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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::audit::{Counts, ProviderRef, Verdict};
use crate::provider::{Provider, ProviderKind};
use crate::resource::{ByResource, GroupResource, Route, Target};
use crate::store::{scan_pinned, Entry, ReadStore, StoreError, Unanswered};
use crate::transform::{parse_prefix, Chain, ChainEntry, State};

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
    /// Whether removing it from the config leaves every entry as readable as now, and loses
    /// nothing: it reads no entry, no entry that names it fails to decrypt (without the key such
    /// an entry is lost for good; with it, a repaired key or a recovered KMS plugin may still
    /// read it), and it is not the write key. For identity: no plaintext entries.
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
#[non_exhaustive]
pub struct Status {
    /// The version of this schema ([`crate::audit::SCHEMA_VERSION`]).
    pub schema_version: crate::audit::SchemaVersion,
    /// Where the entries came from: `etcd <endpoint>` or `snapshot <file>`.
    pub source: String,
    /// The scanned key prefix, e.g. `/registry/secrets/`.
    pub prefix: String,
    /// The resource whose providers the config applies (`secrets`); for a status of every
    /// resource the config covers, the config's resource names (`secrets, configmaps, *.*`).
    pub resource: String,
    /// The store revision the scan was pinned to.
    pub revision: i64,
    /// The write provider and key (the chain's first entry).
    pub write_provider: ProviderRef,
    /// Every provider and key that applies to the resource, in the order kube-apiserver tries
    /// them (config order, one per key). By resource: every provider and key of the config
    /// that applies to a covered resource, in config order, with the entries of every resource
    /// it serves.
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
    /// Why not, one sentence per cause (empty when it can); by resource, each names the
    /// resources it is about.
    pub reasons: Vec<String>,
    /// By resource: the counts of each covered resource (`secrets`, `deployments.apps`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Counts>,
    /// By resource: entries of resources the config does not cover (kube-apiserver stores
    /// them unencrypted; not findings), counted per resource.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub not_covered: BTreeMap<String, u64>,
    /// `findings` (exit 1) when something is unreadable; `empty` (exit 1 unless
    /// `--allow-empty`) when no entry was read, which proves nothing; `clean` (exit 0)
    /// otherwise. Stale and plaintext entries that the config reads are not findings here
    /// (`atrest audit` reports them).
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

    /// Classifies one entry and counts it against the key that reads it; returns its state.
    pub fn add(&mut self, entry: &Entry) -> State {
        let c = self.chain.classify(&entry.value, &entry.key);
        let state = c.state;
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
        state
    }

    /// Finishes the status.
    pub fn finish(self, source: String, revision: i64) -> Status {
        let prefix = String::from_utf8_lossy(&self.prefix).into_owned();
        let resource = self.chain.resource().to_owned();
        let write_provider = provider_ref(self.chain);
        let part = self.into_part();
        assemble(
            vec![(None, part)],
            prefix,
            resource,
            write_provider,
            source,
            revision,
        )
    }

    /// What this chain's entries say: its keys, the keys the config lacks, counts, and why
    /// kube-apiserver could not read everything.
    fn into_part(self) -> Part {
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
        Part {
            keys: self.keys,
            unknown: self.unknown,
            summary: s,
            unreadable_plaintext: self.unreadable_plaintext,
            reasons,
        }
    }
}

/// One chain's share of a status (see [`StatusBuilder::into_part`]).
struct Part {
    keys: Vec<KeyStatus>,
    unknown: BTreeMap<(Option<ProviderKind>, Option<String>), u64>,
    summary: Counts,
    unreadable_plaintext: u64,
    reasons: Vec<String>,
}

fn provider_ref(chain: &Chain) -> ProviderRef {
    let write = &chain.write_entry().provider;
    ProviderRef {
        provider: write.kind(),
        key_name: write.key_name().map(str::to_owned),
    }
}

/// Scans every key `target` reads in `store` once, at one revision, and builds the [`Status`]
/// of the config against it: each covered entry is counted against the key of its resource's
/// chain that reads it (see [`Target::route`]). One [`StatusBuilder`] per distinct chain; the
/// result merges them: `keys` lists each config path once (entries of every resource it
/// serves; safe to remove only if it reads none of them and writes for none). By resource,
/// `reasons` name their resources, `resources` counts each covered resource and `not_covered`
/// the others.
pub async fn status<S: ReadStore + Sync>(store: &S, target: &Target) -> Result<Status, StoreError> {
    let prefix = target.report_prefix().as_bytes();
    let mut builders: Vec<StatusBuilder<'_>> = target
        .chains()
        .iter()
        .map(|c| StatusBuilder::new(c, prefix))
        .collect();
    let mut resources = ByResource::default();
    let mut not_covered: HashMap<GroupResource, u64> = HashMap::new();
    // Encrypted entries of resources the config does not cover: kube-apiserver cannot read them.
    let mut encrypted_not_covered: BTreeMap<GroupResource, u64> = BTreeMap::new();
    let mut router = target.router();
    let chains = target.chains();
    let revision = scan_pinned(
        store,
        target.root(),
        target.prefixes(),
        |entry| match router.route(&entry.key) {
            Route::Covered {
                info,
                chain: Some(chain),
            } => {
                let Some(i) = chains.iter().position(|c| std::ptr::eq(c, chain)) else {
                    return;
                };
                let state = builders[i].add(&entry);
                resources
                    .get(&info.resource, |_| Counts::default())
                    .add(state);
            }
            Route::Covered { .. } => {}
            Route::NotCovered(info) if parse_prefix(&entry.value).is_some() => {
                *encrypted_not_covered
                    .entry(Arc::unwrap_or_clone(info.resource))
                    .or_default() += 1;
            }
            Route::NotCovered(info) => {
                *not_covered
                    .entry(Arc::unwrap_or_clone(info.resource))
                    .or_default() += 1;
            }
            Route::Outside => {}
        },
    )
    .await?;
    let mut resources: HashMap<GroupResource, Counts> = resources
        .into_rows()
        .map(|(r, c)| (Arc::unwrap_or_clone(r), c))
        .collect();
    let by_resource = target.by_resource().is_some();
    // The resources each chain read, for the reasons.
    let mut seen: Vec<BTreeSet<String>> = vec![BTreeSet::new(); builders.len()];
    for gr in resources.keys() {
        if let Some(i) = target.chain_index(gr) {
            seen[i].insert(gr.to_string());
        }
    }
    // With `--resource`, only the chains of the named resources: their keys, not those of
    // other elements of the config.
    let named: Option<BTreeSet<usize>> = target
        .by_resource()
        .filter(|(_, scope)| !scope.only.is_empty())
        .map(|(_, scope)| {
            scope
                .only
                .iter()
                .filter_map(|gr| target.chain_index(gr))
                .collect()
        });
    let parts = builders
        .into_iter()
        .zip(seen)
        .enumerate()
        .filter(|(i, _)| named.as_ref().is_none_or(|n| n.contains(i)))
        .map(|(_, (b, seen))| {
            let names: Vec<String> = seen.into_iter().collect();
            (by_resource.then(|| names.join(", ")), b.into_part())
        })
        .collect();
    let write_provider = target.headline_chain().map_or(
        ProviderRef {
            provider: ProviderKind::Identity,
            key_name: None,
        },
        provider_ref,
    );
    let mut status = assemble(
        parts,
        target.report_prefix().to_owned(),
        target.resource_names().join(", "),
        write_provider,
        store.source(),
        revision,
    );
    add_encrypted_not_covered(&mut status, &mut resources, encrypted_not_covered);
    if by_resource {
        status.resources = resources
            .into_iter()
            .map(|(gr, c)| (gr.to_string(), c))
            .collect();
        status.not_covered = not_covered
            .into_iter()
            .map(|(gr, n)| (gr.to_string(), n))
            .collect();
    }
    status.unanswered = store.unanswered();
    Ok(status)
}

/// Counts entries encrypted under resources the config does not cover: kube-apiserver stores
/// and reads those resources unencrypted, so it cannot read them (`unknown-key`, a finding).
fn add_encrypted_not_covered(
    status: &mut Status,
    resources: &mut HashMap<GroupResource, Counts>,
    encrypted: BTreeMap<GroupResource, u64>,
) {
    if encrypted.is_empty() {
        return;
    }
    let n: u64 = encrypted.values().sum();
    let names: Vec<String> = encrypted
        .iter()
        .map(|(gr, n)| format!("{gr} ({n})"))
        .collect();
    status.summary.total += n;
    status.summary.unknown_key += n;
    status.reasons.push(format!(
        "{} encrypted, but the config does not cover {}: kube-apiserver stores and reads them unencrypted, so it cannot read them; put their resources back in the config with the key that wrote them",
        if n == 1 { "1 entry is".to_owned() } else { format!("{n} entries are") },
        names.join(", ")
    ));
    status.apiserver_reads_all = false;
    status.verdict = Verdict::Findings;
    for (gr, n) in encrypted {
        let c = resources.entry(gr).or_default();
        c.total += n;
        c.unknown_key += n;
    }
}

/// One [`Status`] from each chain's part, each part's reasons led by the resources it read
/// (when named).
fn assemble(
    parts: Vec<(Option<String>, Part)>,
    prefix: String,
    resource: String,
    write_provider: ProviderRef,
    source: String,
    revision: i64,
) -> Status {
    let mut keys: Vec<KeyStatus> = Vec::new();
    let mut unknown: BTreeMap<(Option<ProviderKind>, Option<String>), u64> = BTreeMap::new();
    let mut summary = Counts::default();
    let mut unreadable_plaintext = 0;
    let mut reasons = Vec::new();
    for (seen, part) in parts {
        // Every chain lists its keys, also one whose resources have no entries: its write key
        // is what kube-apiserver writes them with.
        for k in part.keys {
            match keys.iter_mut().find(|have| have.path == k.path) {
                Some(have) => {
                    have.entries += k.entries;
                    have.undecryptable += k.undecryptable;
                    have.write |= k.write;
                    for (id, n) in k.kms_key_ids {
                        *have.kms_key_ids.entry(id).or_default() += n;
                    }
                }
                None => keys.push(k),
            }
        }
        for (k, n) in part.unknown {
            *unknown.entry(k).or_default() += n;
        }
        summary.merge(&part.summary);
        unreadable_plaintext += part.unreadable_plaintext;
        for r in part.reasons {
            reasons.push(match &seen {
                Some(seen) => format!("{seen}: {r}"),
                None => r,
            });
        }
    }
    keys.sort_by_key(|k| path_order(&k.path));
    for k in &mut keys {
        k.safe_to_remove = !k.write && k.entries == 0 && k.undecryptable == 0;
    }
    let apiserver_reads_all = reasons.is_empty();
    Status {
        schema_version: crate::audit::SchemaVersion,
        source,
        prefix,
        resource,
        revision,
        write_provider,
        keys,
        unknown_keys: unknown
            .into_iter()
            .map(|((provider, key_name), entries)| UnknownKey {
                provider,
                key_name,
                entries,
            })
            .collect(),
        summary,
        unreadable_plaintext,
        apiserver_reads_all,
        reasons,
        verdict: if !apiserver_reads_all {
            Verdict::Findings
        } else if summary.total == 0 {
            Verdict::Empty
        } else {
            Verdict::Clean
        },
        resources: BTreeMap::new(),
        not_covered: BTreeMap::new(),
        unanswered: Vec::new(),
    }
}

/// The numbers in a config path (`resources[1].providers[0].aescbc.keys[2]` → 1, 0, 2): config
/// order.
fn path_order(path: &str) -> Vec<u64> {
    path.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
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

    #[test]
    fn a_key_that_undecryptable_entries_name_is_not_safe_to_remove() {
        let config = Config::from_yaml(CONFIG).unwrap();
        let chain = Chain::from_config(&config, "", "secrets").unwrap();
        let mut b = StatusBuilder::new(&chain, b"/registry/secrets/");
        // Names key1, which is in the config, but does not decrypt with it.
        let mut damaged = b"k8s:enc:aescbc:v1:key1:".to_vec();
        damaged.extend_from_slice(&[7; 32]);
        b.add(&entry("/registry/secrets/a/x", damaged));
        let s = b.finish("test".into(), 5);
        assert_eq!(s.keys[1].key_name.as_deref(), Some("key1"));
        assert_eq!((s.keys[1].entries, s.keys[1].undecryptable), (0, 1));
        assert!(
            !s.keys[1].safe_to_remove,
            "without key1 the entry is lost for good"
        );
    }
}
