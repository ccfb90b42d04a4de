//! Auditing stored entries: one [`ReportEntry`] per key, a [`Summary`], and the verdict.
//!
//! [`Report`] *is* the JSON schema of `atrest audit -o json` (see DESIGN.md, "Audit report"):
//! every field is documented here and nothing else decides what the report holds. No secret
//! value ever appears in it: entries carry the key, the state, the provider and key name, and
//! sizes.
//!
//! ```text
//! Store::scan(prefix) ──▶ Entry ──▶ classify (transform::Chain, or no config) ──▶ ReportEntry
//!                                                                     └──▶ Summary ──▶ verdict
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

mod counts;
pub mod inspect;

pub use counts::{Counts, Summary, Verdict};

use crate::object::count_plaintext_objects;
use crate::provider::{Provider, ProviderKind};
use crate::resource::{
    kind_of_resource, namespace_and_name, resource_from_prefix, split_key, GroupResource, KeyInfo,
    ResourceChains, Scope,
};
use crate::store::scan_pinned;
use crate::store::{Entry, ReadStore, StoreError, Unanswered};
use crate::transform::{classify_without_config, Chain, Classification, State};

/// The write provider and key of the config the audit ran with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderRef {
    /// The provider (`aescbc`, `identity`, …).
    pub provider: ProviderKind,
    /// The key name (`None` for identity).
    pub key_name: Option<String>,
}

/// One audited entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportEntry {
    /// The full etcd key (lossy UTF-8).
    pub key: String,
    /// The resource stored under the key, as a config names it: `secrets`, `configmaps`,
    /// `deployments.apps`, `widgets.example.com` (see [`crate::resource`]). Shared by the
    /// entries of one resource.
    #[serde(serialize_with = "serialize_shared")]
    pub resource: Arc<str>,
    /// The namespace, read from the key (`<prefix><namespace>/<name>`); `None` for
    /// cluster-scoped keys.
    #[serde(serialize_with = "serialize_shared_opt")]
    pub namespace: Option<Arc<str>>,
    /// The object's name, read from the key.
    pub name: Option<String>,
    /// The entry's state (see [`State`]).
    pub state: State,
    /// The provider the value is encrypted with (`None` for plaintext).
    pub provider: Option<ProviderKind>,
    /// The key name (KMS: the provider name); `None` for plaintext.
    pub key_name: Option<String>,
    /// KMS v2 entries: the KMS key ID (KEK) stored in the value's EncryptedObject; absent for
    /// other entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The revision of the last write to the key.
    pub mod_revision: i64,
    /// The stored value's size in bytes.
    pub size: usize,
    /// With a config: whether kube-apiserver running it could read this entry. Absent without
    /// a config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readable: Option<bool>,
    /// Why the value could not be read (undecryptable, unknown key, unreadable plaintext).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn serialize_shared<S: serde::Serializer>(value: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value)
}

fn serialize_shared_opt<S: serde::Serializer>(
    value: &Option<Arc<str>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(&**v),
        None => s.serialize_none(),
    }
}

/// Plaintext objects found in database pages the tree no longer references (snapshot audits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Residue {
    /// Stored objects of the audited kind (`k8s\0` + runtime.Unknown envelope) in free pages.
    pub plaintext: u64,
}

/// One resource's part of an audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResourceSummary {
    /// The write provider and key of the chain that covers the resource; `null` without a
    /// config.
    pub write_provider: Option<ProviderRef>,
    /// Its entries by state (the fields of [`Counts`], flattened).
    #[serde(flatten)]
    pub counts: Counts,
}

/// An audit's result: the JSON schema of `atrest audit -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Where the entries came from: `etcd <endpoint>` or `snapshot <file>`.
    pub source: String,
    /// The audited key prefix, e.g. `/registry/secrets/`.
    pub prefix: String,
    /// The store revision the scan was pinned to.
    pub revision: i64,
    /// The config's write provider and key; `null` without a config.
    pub write_provider: Option<ProviderRef>,
    /// Every entry under the prefix, in key order.
    pub entries: Vec<ReportEntry>,
    /// Counts by state.
    pub summary: Summary,
    /// Counts by resource (as entries name it), with each resource's write provider.
    pub resources: BTreeMap<String, ResourceSummary>,
    /// Entries of resources the config does not cover (kube-apiserver stores them as they
    /// come), counted by resource: not findings, not listed. Empty for `--prefix` audits.
    pub not_covered: BTreeMap<String, u64>,
    /// Plaintext entries of resources whose write provider is identity: the config stores them
    /// unencrypted, kube-apiserver reads them as current (not stale), and a rewrite leaves them
    /// as they are. Counted in `plaintext`, but not findings.
    pub plaintext_by_config: u64,
    /// With `--verbose`: the keys counted in `not_covered`, in key order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_covered_keys: Vec<String>,
    /// Snapshot audits only: older, not yet compacted revisions under the prefix, by state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Counts>,
    /// Snapshot audits only: plaintext objects left in unreferenced pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residue: Option<Residue>,
    /// Live etcd only: each member that did not answer (left out at connect time, or failed
    /// over from during the run), with its last error; absent when every member answered.
    /// `source` names the member that did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unanswered: Vec<Unanswered>,
}

impl Report {
    /// The verdict (see [`Counts::verdict`]), without the plaintext entries the config asks for
    /// ([`Report::plaintext_by_config`]); history and residue do not change it.
    pub fn verdict(&self, strict: bool) -> Verdict {
        self.counted().verdict(strict)
    }

    /// Plaintext, unknown-key and undecryptable entries that are findings.
    pub fn findings(&self) -> u64 {
        let c = self.counted();
        c.plaintext + c.unknown_key + c.undecryptable
    }

    /// The summary without the plaintext entries the config asks for.
    fn counted(&self) -> Counts {
        let mut c = self.summary;
        c.plaintext -= self.plaintext_by_config.min(c.plaintext);
        c
    }

    /// Entries grouped by namespace (cluster-scoped entries under `""`), skipping `current`
    /// and (without a config) `encrypted` ones: what a table lists.
    pub fn findings_by_namespace(&self) -> BTreeMap<&str, Vec<&ReportEntry>> {
        let mut map: BTreeMap<&str, Vec<&ReportEntry>> = BTreeMap::new();
        let listed = |e: &&ReportEntry| !matches!(e.state, State::Current | State::Encrypted);
        for e in self.entries.iter().filter(listed) {
            map.entry(e.namespace.as_deref().unwrap_or(""))
                .or_default()
                .push(e);
        }
        map
    }
}

impl Report {
    /// Entries grouped by resource, then namespace (cluster-scoped entries under `""`),
    /// skipping `current` and (without a config) `encrypted` ones: what a table lists.
    pub fn findings_by_resource(&self) -> BTreeMap<(&str, &str), Vec<&ReportEntry>> {
        let mut map: BTreeMap<(&str, &str), Vec<&ReportEntry>> = BTreeMap::new();
        let listed = |e: &&ReportEntry| !matches!(e.state, State::Current | State::Encrypted);
        for e in self.entries.iter().filter(listed) {
            map.entry((&*e.resource, e.namespace.as_deref().unwrap_or("")))
                .or_default()
                .push(e);
        }
        map
    }

    /// Entries of resources the config does not cover, in all.
    pub fn not_covered_total(&self) -> u64 {
        self.not_covered.values().sum()
    }
}

impl Report {
    /// Encrypted entries counted by provider and key name (`(None, None)` never occurs: plaintext
    /// entries are not counted), in provider, key order.
    pub fn by_key(&self) -> BTreeMap<(ProviderKind, Option<&str>), u64> {
        let mut map = BTreeMap::new();
        for e in &self.entries {
            if let Some(p) = e.provider {
                *map.entry((p, e.key_name.as_deref())).or_default() += 1;
            }
        }
        map
    }
}

impl Report {
    /// KMS v2 entries counted by KMS provider name and KMS key ID, in name, key ID order: shows
    /// when an old KEK is no longer used.
    pub fn by_kms_key_id(&self) -> BTreeMap<(&str, &str), u64> {
        let mut map = BTreeMap::new();
        for e in &self.entries {
            if let (Some(ProviderKind::Kms), Some(id)) = (e.provider, e.key_id.as_deref()) {
                *map.entry((e.key_name.as_deref().unwrap_or(""), id))
                    .or_default() += 1;
            }
        }
        map
    }
}

/// Classifies one value with the config's chain, or without a config.
pub fn classify(chain: Option<&Chain>, value: &[u8], etcd_key: &[u8]) -> Classification {
    match chain {
        Some(chain) => chain.classify(value, etcd_key),
        None => classify_without_config(value),
    }
}

/// Progress callbacks for long audits. Every method has a no-op default.
pub trait Observer: Send + Sync {
    /// The number of entries the scan expects (may be off if the store changes meanwhile).
    fn total(&self, _n: u64) {}
    /// One more entry was classified.
    fn entry(&self, _e: &ReportEntry) {}
    /// An audit by resource met an entry of a resource the config does not cover (counted in
    /// [`Report::not_covered`], not classified).
    fn not_covered(&self, _key: &[u8], _resource: &GroupResource) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Observer for NoProgress {}

fn provider_ref(chain: &Chain) -> ProviderRef {
    let p = &chain.write_entry().provider;
    ProviderRef {
        provider: p.kind(),
        key_name: p.key_name().map(str::to_owned),
    }
}

/// Builds a report entry by entry; used by [`audit`] and by callers with their own scan loop.
#[derive(Debug)]
pub struct Auditor<'a> {
    chain: Option<&'a Chain>,
    prefix: Vec<u8>,
    resource: Arc<str>,
    names: HashMap<GroupResource, Arc<str>>,
    namespaces: HashSet<Arc<str>>,
    entries: Vec<ReportEntry>,
    summary: Summary,
    resources: BTreeMap<String, ResourceSummary>,
    not_covered: BTreeMap<String, u64>,
    plaintext_by_config: u64,
}

impl<'a> Auditor<'a> {
    /// Starts an audit of `prefix` with an optional config chain.
    pub fn new(chain: Option<&'a Chain>, prefix: &[u8]) -> Self {
        Auditor {
            chain,
            prefix: prefix.to_vec(),
            resource: resource_from_prefix(&String::from_utf8_lossy(prefix))
                .to_string()
                .into(),
            names: HashMap::new(),
            namespaces: HashSet::new(),
            entries: Vec::new(),
            summary: Summary::default(),
            resources: BTreeMap::new(),
            not_covered: BTreeMap::new(),
            plaintext_by_config: 0,
        }
    }

    /// Classifies one entry (its value is dropped afterwards; only metadata is kept).
    pub fn add(&mut self, entry: &Entry) -> &ReportEntry {
        let (namespace, name) = namespace_and_name(&self.prefix, &entry.key);
        let resource = self.resource.clone();
        self.push(self.chain, resource, namespace, name, entry)
    }

    /// Classifies one entry of `resource` with `chain` (a multi-resource audit: each resource
    /// is read with its own chain).
    pub fn add_resource(
        &mut self,
        chain: Option<&Chain>,
        info: KeyInfo,
        entry: &Entry,
    ) -> &ReportEntry {
        let resource = match self.names.get(&info.resource) {
            Some(name) => name.clone(),
            None => {
                let name: Arc<str> = info.resource.to_string().into();
                self.names.insert(info.resource, name.clone());
                name
            }
        };
        self.push(chain, resource, info.namespace, info.name, entry)
    }

    /// Counts one entry of a resource the config does not cover.
    pub fn not_covered(&mut self, resource: &GroupResource) {
        *self.not_covered.entry(resource.to_string()).or_default() += 1;
    }

    fn push(
        &mut self,
        chain: Option<&Chain>,
        resource: Arc<str>,
        namespace: Option<String>,
        name: Option<String>,
        entry: &Entry,
    ) -> &ReportEntry {
        let c = classify(chain, &entry.value, &entry.key);
        // Entries share their namespace's name (a cluster has few namespaces, many entries).
        let namespace = namespace.map(|ns| match self.namespaces.get(ns.as_str()) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = ns.into();
                self.namespaces.insert(shared.clone());
                shared
            }
        });
        self.summary.add(c.state);
        if c.state == State::Plaintext
            && chain.is_some_and(|ch| matches!(ch.write_entry().provider, Provider::Identity(_)))
        {
            self.plaintext_by_config += 1;
        }
        let per = match self.resources.get_mut(&*resource) {
            Some(per) => per,
            None => self.resources.entry(resource.to_string()).or_default(),
        };
        per.counts.add(c.state);
        if per.write_provider.is_none() {
            per.write_provider = chain.map(provider_ref);
        }
        self.entries.push(ReportEntry {
            key: String::from_utf8_lossy(&entry.key).into_owned(),
            resource,
            namespace,
            name,
            state: c.state,
            provider: c.provider,
            key_name: c.key_name,
            key_id: c.kms_key_id,
            mod_revision: entry.mod_revision,
            size: entry.value.len(),
            readable: c.readable,
            error: c.error,
        });
        // Just pushed.
        &self.entries[self.entries.len() - 1]
    }

    /// The counts so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Finishes the report.
    pub fn finish(self, source: String, revision: i64) -> Report {
        let write_provider = self.chain.map(provider_ref);
        self.finish_with(source, revision, write_provider)
    }

    fn finish_with(
        self,
        source: String,
        revision: i64,
        write_provider: Option<ProviderRef>,
    ) -> Report {
        Report {
            source,
            prefix: String::from_utf8_lossy(&self.prefix).into_owned(),
            revision,
            write_provider,
            entries: self.entries,
            summary: self.summary,
            resources: self.resources,
            not_covered: self.not_covered,
            plaintext_by_config: self.plaintext_by_config,
            not_covered_keys: Vec::new(),
            history: None,
            residue: None,
            unanswered: Vec::new(),
        }
    }
}

/// Audits every resource in `scope`, each entry read with the chain kube-apiserver would use for
/// its resource (see [`ResourceChains`]); entries of resources the config does not cover are
/// only counted ([`Report::not_covered`]). Every prefix is read at one revision, one page in
/// memory at a time.
pub async fn audit_resources<S: ReadStore + Sync>(
    store: &S,
    chains: &ResourceChains,
    scope: &Scope,
    observer: &dyn Observer,
) -> Result<Report, StoreError> {
    let mut total = 0;
    for prefix in &scope.prefixes {
        total += store.count(prefix.as_bytes()).await?;
    }
    observer.total(total);
    let mut auditor = Auditor::new(None, scope.report_prefix().as_bytes());
    let revision = scan_pinned(store, &scope.root, &scope.prefixes, |entry| {
        // A key that names no object (kine's own `/registry/health`) is not a resource's entry.
        let Some(info) = split_key(&scope.root, &entry.key).filter(|i| i.name.is_some()) else {
            return;
        };
        if !scope.wants(&info.resource) {
            return;
        }
        match chains.chain_for(&info.resource) {
            Some(chain) => observer.entry(auditor.add_resource(Some(chain), info, &entry)),
            None => {
                auditor.not_covered(&info.resource);
                observer.not_covered(&entry.key, &info.resource);
            }
        }
    })
    .await?;
    let write_provider = first_write_provider(chains, scope);
    let mut report = auditor.finish_with(store.source(), revision, write_provider);
    report.unanswered = store.unanswered();
    Ok(report)
}

/// The report's top-level write provider for a multi-resource audit: the chain of the first
/// resource the scope names (the config's first element without `--resource`).
fn first_write_provider(chains: &ResourceChains, scope: &Scope) -> Option<ProviderRef> {
    match scope.only.first() {
        Some(gr) => chains.chain_for(gr).map(provider_ref),
        None => chains.chains().first().map(provider_ref),
    }
}

/// [`audit_resources`] of a snapshot or data file, with `history` and `residue` as
/// [`audit_snapshot`] adds them (residue counts stored objects of the scanned resources' kinds
/// when each is known — Secrets, ConfigMaps — else of any kind).
pub async fn audit_snapshot_resources(
    snap: &crate::store::snapshot::Snapshot,
    chains: &ResourceChains,
    scope: &Scope,
    observer: &dyn Observer,
) -> Result<Report, StoreError> {
    let mut report = audit_resources(snap, chains, scope, observer).await?;
    let mut history = Counts::default();
    for prefix in &scope.prefixes {
        snap.history(prefix.as_bytes(), |entry| {
            if let Some(state) = history_state(chains, scope, &entry) {
                history.add(state);
            }
        })?;
    }
    // The kinds stored under the scanned prefixes, when each has a known kind; else any kind.
    let kinds: Option<Vec<&str>> = scope
        .prefixes
        .iter()
        .map(|p| {
            (p != &scope.root)
                .then(|| kind_of_resource(&resource_from_prefix(p).resource))
                .flatten()
        })
        .collect();
    let residue = snap
        .free_runs()
        .map(|(_, bytes)| match &kinds {
            Some(kinds) => kinds
                .iter()
                .map(|k| count_plaintext_objects(bytes, Some(k)))
                .sum::<u64>(),
            None => count_plaintext_objects(bytes, None),
        })
        .sum();
    report.history = Some(history);
    report.residue = Some(Residue { plaintext: residue });
    Ok(report)
}

/// [`audit_resources`] of kine's SQLite file, with `history` as [`audit_kine`] adds it.
pub async fn audit_kine_resources(
    db: &crate::store::kine::KineDb,
    chains: &ResourceChains,
    scope: &Scope,
    observer: &dyn Observer,
) -> Result<Report, StoreError> {
    let mut report = audit_resources(db, chains, scope, observer).await?;
    let mut history = Counts::default();
    for prefix in &scope.prefixes {
        db.history(prefix.as_bytes(), |_, entry| {
            if let Some(state) = history_state(chains, scope, &entry) {
                history.add(state);
            }
        })?;
    }
    report.history = Some(history);
    Ok(report)
}

/// An older revision's state, read with its resource's chain; `None` when not covered.
fn history_state(chains: &ResourceChains, scope: &Scope, entry: &Entry) -> Option<State> {
    let info = split_key(&scope.root, &entry.key).filter(|i| i.name.is_some())?;
    if !scope.wants(&info.resource) {
        return None;
    }
    let chain = chains.chain_for(&info.resource)?;
    Some(chain.classify(&entry.value, &entry.key).state)
}

/// Audits every entry under `prefix` in `store`, one page in memory at a time.
pub async fn audit<S: ReadStore + Sync>(
    store: &S,
    chain: Option<&Chain>,
    prefix: &[u8],
    observer: &dyn Observer,
) -> Result<Report, StoreError> {
    observer.total(store.count(prefix).await?);
    let mut auditor = Auditor::new(chain, prefix);
    let info = store
        .scan(prefix, |entry| {
            observer.entry(auditor.add(&entry));
            true
        })
        .await?;
    let mut report = auditor.finish(store.source(), info.revision);
    report.unanswered = store.unanswered();
    Ok(report)
}

/// What removing keys (`config rotate --stage prune`) would do to a store: the chain
/// `before` the edit against the chain `after` it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneCheck {
    /// Entries `before` reads and `after` cannot: the prune must wait until they are
    /// rewritten. Empty means the change is safe for this store.
    pub blocked: Vec<ReportEntry>,
    /// Entries no key reads either way that name a key `before` has and `after` lacks: already
    /// undecryptable, they are lost for good once that key is gone (a key that was wrong for
    /// them cannot be tried again).
    pub lost: Vec<ReportEntry>,
}

/// Scans `prefix` once and sorts out what removing keys would do (see [`PruneCheck`]).
pub async fn prune_check<S: ReadStore + Sync>(
    store: &S,
    before: &Chain,
    after: &Chain,
    prefix: &[u8],
) -> Result<PruneCheck, StoreError> {
    let mut auditor = Auditor::new(Some(before), prefix);
    let mut check = PruneCheck::default();
    store
        .scan(prefix, |entry| {
            let now = before.classify(&entry.value, &entry.key);
            let then = after.classify(&entry.value, &entry.key);
            if now.readable == Some(true) && then.readable != Some(true) {
                check.blocked.push(auditor.add(&entry).clone());
            } else if now.state == State::Undecryptable && then.state == State::UnknownKey {
                check.lost.push(auditor.add(&entry).clone());
            }
            true
        })
        .await?;
    Ok(check)
}

/// [`prune_check`] by resource: every resource in `scope`, each entry read with its resource's
/// chain from `before` and from `after` (a prune edits one `resources` element, which may serve
/// many resources: `[secrets, configmaps]`, `*.apps`, `*.*`). Keys of resources neither config
/// covers are not read. One scan, pinned to one revision.
pub async fn prune_check_resources<S: ReadStore + Sync>(
    store: &S,
    before: &ResourceChains,
    after: &ResourceChains,
    scope: &Scope,
) -> Result<PruneCheck, StoreError> {
    let mut auditor = Auditor::new(None, scope.report_prefix().as_bytes());
    let mut check = PruneCheck::default();
    scan_pinned(store, &scope.root, &scope.prefixes, |entry| {
        let Some(info) = split_key(&scope.root, &entry.key).filter(|i| i.name.is_some()) else {
            return;
        };
        if !scope.wants(&info.resource) {
            return;
        }
        let Some(was) = before.chain_for(&info.resource) else {
            return;
        };
        let now = was.classify(&entry.value, &entry.key);
        let (then, then_readable) = match after.chain_for(&info.resource) {
            Some(chain) => {
                let c = chain.classify(&entry.value, &entry.key);
                let readable = c.readable == Some(true);
                (c, readable)
            }
            // Not covered any more: kube-apiserver reads it as stored (plaintext only).
            None => {
                let c = classify(None, &entry.value, &entry.key);
                let readable = c.state == State::Plaintext;
                (c, readable)
            }
        };
        if now.readable == Some(true) && !then_readable {
            check
                .blocked
                .push(auditor.add_resource(Some(was), info, &entry).clone());
        } else if now.state == State::Undecryptable && then.state == State::UnknownKey {
            check
                .lost
                .push(auditor.add_resource(Some(was), info, &entry).clone());
        }
    })
    .await?;
    Ok(check)
}

/// The entries `before` can read but `after` cannot ([`PruneCheck::blocked`]).
pub async fn unreadable_after<S: ReadStore + Sync>(
    store: &S,
    before: &Chain,
    after: &Chain,
    prefix: &[u8],
) -> Result<Vec<ReportEntry>, StoreError> {
    Ok(prune_check(store, before, after, prefix).await?.blocked)
}

/// Audits a snapshot or data file: the same report as a live audit of the same data, plus what
/// only the file shows — `history` (older, not yet compacted revisions under the prefix, by
/// state) and `residue` (plaintext objects of the audited kind left in unreferenced pages).
pub async fn audit_snapshot(
    snap: &crate::store::snapshot::Snapshot,
    chain: Option<&Chain>,
    prefix: &[u8],
    observer: &dyn Observer,
) -> Result<Report, StoreError> {
    let mut report = audit(snap, chain, prefix, observer).await?;
    let mut history = Counts::default();
    snap.history(prefix, |entry| {
        history.add(classify(chain, &entry.value, &entry.key).state);
    })?;
    let kind = kind_of_resource(&resource_from_prefix(&report.prefix).resource);
    let residue = snap
        .free_runs()
        .map(|(_, bytes)| count_plaintext_objects(bytes, kind))
        .sum();
    report.history = Some(history);
    report.residue = Some(Residue { plaintext: residue });
    Ok(report)
}

/// Audits kine's SQLite file (k3s): the same report as a live audit through kine, plus
/// `history`: every stored copy of an older value under the prefix, by state — superseded rows
/// and delete rows until kine compacts, and the `old_value` copy that each row keeps of the
/// value before it, which kine's compaction never clears (see [`crate::store::kine`]).
/// `residue` (free database pages) is not read for SQLite files.
pub async fn audit_kine(
    db: &crate::store::kine::KineDb,
    chain: Option<&Chain>,
    prefix: &[u8],
    observer: &dyn Observer,
) -> Result<Report, StoreError> {
    let mut report = audit(db, chain, prefix, observer).await?;
    let mut history = Counts::default();
    db.history(prefix, |_, entry| {
        history.add(classify(chain, &entry.value, &entry.key).state);
    })?;
    report.history = Some(history);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_namespaced_and_cluster_keys() {
        let p = b"/registry/secrets/";
        assert_eq!(
            namespace_and_name(p, b"/registry/secrets/default/db"),
            (Some("default".into()), Some("db".into()))
        );
        assert_eq!(
            namespace_and_name(
                b"/registry/namespaces/",
                b"/registry/namespaces/kube-system"
            ),
            (None, Some("kube-system".into()))
        );
        assert_eq!(namespace_and_name(p, b"/other/x"), (None, None));
    }

    #[test]
    fn prefixes_name_their_group() {
        let gr = |p: &str| resource_from_prefix(p).to_string();
        assert_eq!(gr("/registry/secrets/"), "secrets");
        assert_eq!(gr("/registry/deployments/"), "deployments.apps");
        assert_eq!(gr("/registry/services/specs/"), "services");
        assert_eq!(gr("/kubernetes.io/minions/"), "nodes");
        assert_eq!(gr("/registry/example.com/widgets/"), "widgets.example.com");
        assert_eq!(gr("/registry/"), "registry");
    }

    #[test]
    fn verdict_follows_the_exit_status_rules() {
        let mut c = Counts::default();
        c.add(State::Current);
        c.add(State::Kms);
        assert_eq!(c.verdict(true), Verdict::Clean);
        c.add(State::Stale);
        assert_eq!(c.verdict(false), Verdict::Clean);
        assert_eq!(c.verdict(true), Verdict::Findings);
        let mut d = Counts::default();
        d.add(State::Encrypted);
        assert_eq!(d.verdict(true), Verdict::Clean);
        for bad in [State::Plaintext, State::UnknownKey, State::Undecryptable] {
            let mut e = Counts::default();
            e.add(bad);
            assert_eq!(e.verdict(false), Verdict::Findings, "{bad}");
            assert_eq!(e.get(bad), 1);
            assert_eq!(e.total, 1);
        }
    }

    #[test]
    fn plaintext_under_an_identity_write_provider_is_not_a_finding() {
        let yaml = |providers: &str| {
            format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n\
                 resources:\n- resources: [secrets]\n  providers:\n{providers}"
            )
        };
        let aescbc = "  - aescbc:\n      keys:\n      - {name: k1, secret: 7d9+9fRVOV06k4tCYRlZgx3EB0XKUbEzNCfAO/j2Cr0=}\n";
        let identity = "  - identity: {}\n";
        let entry = Entry {
            key: b"/registry/secrets/ns/a".to_vec(),
            value: b"k8s\0plain".to_vec(),
            mod_revision: 2,
            create_revision: 2,
            version: 1,
            lease: 0,
        };
        for (providers, by_config, verdict) in [
            (format!("{identity}{aescbc}"), 1, Verdict::Clean),
            (format!("{aescbc}{identity}"), 0, Verdict::Findings),
        ] {
            let config = crate::config::Config::from_yaml(&yaml(&providers)).unwrap();
            let chain = Chain::from_config(&config, "", "secrets").unwrap();
            let mut auditor = Auditor::new(Some(&chain), b"/registry/secrets/");
            auditor.add(&entry);
            let report = auditor.finish("test".to_owned(), 2);
            assert_eq!(report.summary.plaintext, 1);
            assert_eq!(report.plaintext_by_config, by_config, "{providers}");
            assert_eq!(report.verdict(false), verdict, "{providers}");
            assert_eq!(report.findings(), 1 - by_config);
        }
    }

    #[test]
    fn summary_serialises_with_kebab_state_names() {
        let json = serde_json::to_value(Counts::default()).unwrap();
        for s in State::ALL {
            assert!(json.get(s.as_str()).is_some(), "{s}");
        }
    }

    #[test]
    fn no_config_audit_names_provider_and_key() {
        let mut a = Auditor::new(None, b"/registry/secrets/");
        let mut entry = Entry {
            key: b"/registry/secrets/ns/a".to_vec(),
            value: [
                &b"k8s:enc:aescbc:v1:aescbckey-2025-05-16T19:21:39Z:"[..],
                &[0xff; 32],
            ]
            .concat(),
            mod_revision: 3,
            create_revision: 3,
            version: 1,
            lease: 0,
        };
        let e = a.add(&entry).clone();
        assert_eq!(e.state, State::Encrypted);
        assert_eq!(e.provider, Some(ProviderKind::Aescbc));
        assert_eq!(
            e.key_name.as_deref(),
            Some("aescbckey-2025-05-16T19:21:39Z")
        );
        entry.value = b"k8s\0plain".to_vec();
        assert_eq!(a.add(&entry).state, State::Plaintext);
        entry.value = b"k8s:enc:kms:v2:plugin:\x0a".to_vec();
        assert_eq!(a.add(&entry).state, State::Kms);
        let r = a.finish("test".into(), 9);
        assert_eq!(r.summary.total, 3);
        assert_eq!(r.write_provider, None);
        assert_eq!(r.verdict(false), Verdict::Findings);
    }
}
