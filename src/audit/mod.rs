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

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

mod counts;
pub mod inspect;
mod prune;

pub use counts::{Counts, Summary, Verdict};
pub use prune::{prune_check, PruneCheck, PruneObserver, PRUNE_SAMPLE};

use crate::provider::{Provider, ProviderKind};
use crate::resource::{
    kind_of_resource, resource_from_prefix, ByResource, GroupResource, KeyInfo, Route, Target,
};
use crate::store::scan_pinned;
use crate::store::{Entry, ReadStore, StoreError, Unanswered};
use crate::transform::{classify_without_config, parse_prefix, Chain, Classification, State};

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

/// The version of the JSON schemas of the reports (`schema_version` in each): raised when a
/// field changes meaning or goes away; new fields do not raise it (see the version policy in
/// `docs/versioning.md`).
pub const SCHEMA_VERSION: u32 = 1;

/// A report's `schema_version` field: always [`SCHEMA_VERSION`] (a field of no size, so report
/// types can derive `Default`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemaVersion;

impl Serialize for SchemaVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(SCHEMA_VERSION)
    }
}

/// An audit's result: the JSON schema of `atrest audit -o json`, apart from `entries`, which
/// are not kept: each is handed to the [`Observer`] as it is classified, and `atrest audit -o
/// json` streams them as `entries`, between `write_provider` and `source` (see
/// [`Report::head`]). Everything here is a counter, so memory does not grow with the entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The version of this schema ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The audited key prefix, e.g. `/registry/secrets/`, or the root by resource.
    pub prefix: String,
    /// The config's write provider and key (the first resource's); `null` without a config.
    pub write_provider: Option<ProviderRef>,
    /// Where the entries came from: `etcd <endpoint>` or `snapshot <file>`.
    pub source: String,
    /// The store revision the scan was pinned to.
    pub revision: i64,
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
    /// Encrypted entries counted by provider and key name, in provider, key order (not in the
    /// JSON; the table and the metrics show it).
    #[serde(skip)]
    pub by_key: BTreeMap<(ProviderKind, Option<String>), u64>,
    /// KMS v2 entries counted by KMS provider name and KMS key ID, in name, key ID order: shows
    /// when an old KEK is no longer used (not in the JSON).
    #[serde(skip)]
    pub by_kms_key_id: BTreeMap<(String, String), u64>,
}

/// The fields of a [`Report`] that precede `entries` in `atrest audit -o json`, known before
/// the scan starts (see [`Report::head`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReportHead {
    /// [`Report::schema_version`].
    pub schema_version: u32,
    /// [`Report::prefix`].
    pub prefix: String,
    /// [`Report::write_provider`].
    pub write_provider: Option<ProviderRef>,
}

impl Report {
    /// The fields an audit of `target` will start with, for a writer that streams the entries
    /// after them: serialised alone, they are the start of the serialised report.
    pub fn head(target: &Target) -> ReportHead {
        ReportHead {
            schema_version: SCHEMA_VERSION,
            prefix: target.report_prefix().to_owned(),
            write_provider: target.headline_chain().map(provider_ref),
        }
    }

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

    /// Entries of resources the config does not cover, in all.
    pub fn not_covered_total(&self) -> u64 {
        self.not_covered.values().sum()
    }
}

impl ReportEntry {
    /// Whether a table lists it: not `current`, and (without a config) not `encrypted`.
    pub fn is_listed(&self) -> bool {
        !matches!(self.state, State::Current | State::Encrypted)
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
    /// One more entry was classified: the report counts it but does not keep it, so this is
    /// where a caller lists or streams entries (in key order).
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
///
/// A scan meets the entries of one resource one after another, and a few keys encrypt them
/// all: the auditor counts by resource and by key in small tables it searches from the last
/// hit, and builds the report's maps at the end.
#[derive(Debug)]
pub struct Auditor {
    prefix: String,
    /// Each resource met, with its name and counts.
    resources: ByResource<PerResource>,
    by_key: KeyCounts,
    by_kms_key_id: BTreeMap<(String, String), u64>,
    summary: Summary,
    not_covered: BTreeMap<String, u64>,
    plaintext_by_config: u64,
}

#[derive(Debug)]
struct PerResource {
    name: Arc<str>,
    summary: ResourceSummary,
}

/// Encrypted entries counted by provider and key name: the few keys of a config in a list
/// searched from the last hit, any further ones (unknown names read from values) in a map.
#[derive(Debug, Default)]
struct KeyCounts {
    few: Vec<((ProviderKind, Option<String>), u64)>,
    last: usize,
    more: BTreeMap<(ProviderKind, Option<String>), u64>,
}

impl KeyCounts {
    /// Keys counted in the list before the rest go to the map.
    const FEW: usize = 16;

    fn add(&mut self, provider: ProviderKind, name: Option<&str>) {
        let is = |k: &(ProviderKind, Option<String>)| k.0 == provider && k.1.as_deref() == name;
        if let Some((k, n)) = self.few.get_mut(self.last) {
            if is(k) {
                *n += 1;
                return;
            }
        }
        if let Some(i) = self.few.iter().position(|(k, _)| is(k)) {
            self.last = i;
            self.few[i].1 += 1;
            return;
        }
        let key = (provider, name.map(str::to_owned));
        if self.few.len() < Self::FEW {
            self.last = self.few.len();
            self.few.push((key, 1));
        } else {
            *self.more.entry(key).or_default() += 1;
        }
    }

    fn into_map(self) -> BTreeMap<(ProviderKind, Option<String>), u64> {
        let mut map = self.more;
        map.extend(self.few);
        map
    }
}

impl Auditor {
    /// Starts an audit whose report names `prefix`.
    pub fn new(prefix: &str) -> Self {
        Auditor {
            prefix: prefix.to_owned(),
            resources: ByResource::default(),
            by_key: KeyCounts::default(),
            by_kms_key_id: BTreeMap::new(),
            summary: Summary::default(),
            not_covered: BTreeMap::new(),
            plaintext_by_config: 0,
        }
    }

    /// Classifies one entry of `info.resource` with `chain` (`None`: no config) and counts it;
    /// the entry (metadata only, never the value) is returned, not kept.
    pub fn add(&mut self, chain: Option<&Chain>, info: KeyInfo, entry: &Entry) -> ReportEntry {
        let c = classify(chain, &entry.value, &entry.key);
        self.add_classified(c, chain, info, entry)
    }

    /// Counts an encrypted entry of a resource the config does not cover: a finding, since
    /// kube-apiserver stores and reads that resource as plaintext and cannot read it
    /// (`unknown-key`, not readable). Plaintext ones are only counted ([`Auditor::not_covered`]).
    pub fn add_unreadable_not_covered(&mut self, info: KeyInfo, entry: &Entry) -> ReportEntry {
        let mut c = classify_without_config(&entry.value);
        c.state = State::UnknownKey;
        c.readable = Some(false);
        c.error = Some(format!(
            "encrypted, but the config does not cover {}: kube-apiserver stores and reads it unencrypted, so it cannot read this value",
            info.resource
        ));
        self.add_classified(c, None, info, entry)
    }

    fn add_classified(
        &mut self,
        c: Classification,
        chain: Option<&Chain>,
        info: KeyInfo,
        entry: &Entry,
    ) -> ReportEntry {
        let per = self.resources.get(&info.resource, |r| PerResource {
            name: r.to_string().into(),
            summary: ResourceSummary::default(),
        });
        per.summary.counts.add(c.state);
        if per.summary.write_provider.is_none() {
            per.summary.write_provider = chain.map(provider_ref);
        }
        let resource = per.name.clone();
        self.summary.add(c.state);
        if c.state == State::Plaintext
            && chain.is_some_and(|ch| matches!(ch.write_entry().provider, Provider::Identity(_)))
        {
            self.plaintext_by_config += 1;
        }
        if let Some(p) = c.provider {
            self.by_key.add(p, c.key_name.as_deref());
            if let (ProviderKind::Kms, Some(id)) = (p, &c.kms_key_id) {
                let name = c.key_name.clone().unwrap_or_default();
                *self.by_kms_key_id.entry((name, id.clone())).or_default() += 1;
            }
        }
        ReportEntry {
            key: String::from_utf8_lossy(&entry.key).into_owned(),
            resource,
            namespace: info.namespace,
            name: info.name,
            state: c.state,
            provider: c.provider,
            key_name: c.key_name,
            key_id: c.kms_key_id,
            mod_revision: entry.mod_revision,
            size: entry.value.len(),
            readable: c.readable,
            error: c.error,
        }
    }

    /// Counts one entry of a resource the config does not cover.
    pub fn not_covered(&mut self, resource: &GroupResource) {
        *self.not_covered.entry(resource.to_string()).or_default() += 1;
    }

    /// The counts so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Finishes the report.
    pub fn finish(
        self,
        source: String,
        revision: i64,
        write_provider: Option<ProviderRef>,
    ) -> Report {
        let mut resources: BTreeMap<String, ResourceSummary> = BTreeMap::new();
        for (_, r) in self.resources.into_rows() {
            // Two resources could only share a name in a hostile keyspace; then they share
            // a row, as they always did.
            let row = resources.entry(r.name.to_string()).or_default();
            row.counts.merge(&r.summary.counts);
            if row.write_provider.is_none() {
                row.write_provider = r.summary.write_provider;
            }
        }
        Report {
            schema_version: SCHEMA_VERSION,
            prefix: self.prefix,
            write_provider,
            source,
            revision,
            summary: self.summary,
            resources,
            not_covered: self.not_covered,
            plaintext_by_config: self.plaintext_by_config,
            not_covered_keys: Vec::new(),
            history: None,
            residue: None,
            unanswered: Vec::new(),
            by_key: self.by_key.into_map(),
            by_kms_key_id: self.by_kms_key_id,
        }
    }
}

/// Audits every key `target` reads in `store`, one page in memory at a time, every prefix at
/// one revision: each covered entry is classified with the chain of its resource (see
/// [`Target::route`]); entries of resources the config does not cover are only counted
/// ([`Report::not_covered`]). A file store adds what only the file shows: `history` (older,
/// not yet compacted revisions, by state) and, for etcd files, `residue` (plaintext objects of
/// the audited kinds left in unreferenced pages).
pub async fn audit<S: ReadStore + Sync>(
    store: &S,
    target: &Target,
    observer: &dyn Observer,
) -> Result<Report, StoreError> {
    let mut total = 0;
    for prefix in target.prefixes() {
        total += store.count(prefix.as_bytes()).await?;
    }
    observer.total(total);
    let mut auditor = Auditor::new(target.report_prefix());
    let mut router = target.router();
    let revision = scan_pinned(
        store,
        target.root(),
        target.prefixes(),
        |entry| match router.route(&entry.key) {
            Route::Covered { info, chain } => observer.entry(&auditor.add(chain, info, &entry)),
            Route::NotCovered(info) if parse_prefix(&entry.value).is_none() => {
                auditor.not_covered(&info.resource);
                observer.not_covered(&entry.key, &info.resource);
            }
            Route::NotCovered(info) => {
                observer.entry(&auditor.add_unreadable_not_covered(info, &entry));
            }
            Route::Outside => {}
        },
    )
    .await?;
    let write_provider = target.headline_chain().map(provider_ref);
    let mut report = auditor.finish(store.source(), revision, write_provider);
    report.unanswered = store.unanswered();
    if let Some(file) = store.offline() {
        let mut history = Counts::default();
        for prefix in target.prefixes() {
            file.history(prefix.as_bytes(), &mut |entry| {
                if let Route::Covered { chain, .. } = router.route(&entry.key) {
                    history.add(classify(chain, &entry.value, &entry.key).state);
                }
            })?;
        }
        report.history = Some(history);
        let kinds = stored_kinds(target);
        report.residue = file
            .residue(kinds.as_deref())?
            .map(|plaintext| Residue { plaintext });
    }
    Ok(report)
}

/// The kinds of object stored under the target's prefixes, when each prefix holds one known
/// kind (Secrets, ConfigMaps); `None` (any kind) otherwise.
pub(crate) fn stored_kinds(target: &Target) -> Option<Vec<&'static str>> {
    target
        .prefixes()
        .iter()
        .map(|p| {
            (p != target.root())
                .then(|| kind_of_resource(&resource_from_prefix(p).resource))
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let target = Target::prefix("/registry/secrets/", None);
            let Route::Covered { info, .. } = target.route(&entry.key) else {
                panic!("a Secret's key is under its prefix")
            };
            let mut auditor = Auditor::new("/registry/secrets/");
            auditor.add(Some(&chain), info, &entry);
            let report = auditor.finish("test".to_owned(), 2, Some(provider_ref(&chain)));
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
    fn issue_21_counts_by_key_past_the_few_a_config_has() {
        let target = Target::prefix("/registry/secrets/", None);
        let mut router = target.router();
        let mut a = Auditor::new("/registry/secrets/");
        // 20 key names (more than the list holds), each met three times, in turns.
        for round in 0..3 {
            for k in 0..20 {
                let entry = Entry {
                    key: format!("/registry/secrets/ns{}/s{k}-{round}", k % 3).into_bytes(),
                    value: [format!("k8s:enc:aescbc:v1:key{k}:").as_bytes(), &[0xff; 32]].concat(),
                    mod_revision: 3,
                    create_revision: 3,
                    version: 1,
                    lease: 0,
                };
                let Route::Covered { info, chain } = router.route(&entry.key) else {
                    panic!("a Secret's key is under its prefix")
                };
                a.add(chain, info, &entry);
            }
        }
        let r = a.finish("test".into(), 9, None);
        assert_eq!(r.by_key.len(), 20);
        for k in 0..20 {
            assert_eq!(
                r.by_key[&(ProviderKind::Aescbc, Some(format!("key{k}")))],
                3,
                "key{k}"
            );
        }
        assert_eq!(r.resources["secrets"].counts.total, 60);
    }

    #[test]
    fn no_config_audit_names_provider_and_key() {
        let target = Target::prefix("/registry/secrets/", None);
        let mut a = Auditor::new("/registry/secrets/");
        let add = |a: &mut Auditor, entry: &Entry| {
            let Route::Covered { info, chain } = target.route(&entry.key) else {
                panic!("a Secret's key is under its prefix")
            };
            a.add(chain, info, entry).clone()
        };
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
        let e = add(&mut a, &entry);
        assert_eq!(e.state, State::Encrypted);
        assert_eq!(e.provider, Some(ProviderKind::Aescbc));
        assert_eq!(
            e.key_name.as_deref(),
            Some("aescbckey-2025-05-16T19:21:39Z")
        );
        entry.value = b"k8s\0plain".to_vec();
        assert_eq!(add(&mut a, &entry).state, State::Plaintext);
        entry.value = b"k8s:enc:kms:v2:plugin:\x0a".to_vec();
        assert_eq!(add(&mut a, &entry).state, State::Kms);
        let r = a.finish("test".into(), 9, None);
        assert_eq!(r.summary.total, 3);
        assert_eq!(r.write_provider, None);
        assert_eq!(r.verdict(false), Verdict::Findings);
    }
}
