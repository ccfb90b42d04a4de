//! Which etcd keys hold which Kubernetes resource, as kube-apiserver lays them out.
//!
//! # Layout
//!
//! Under kube-apiserver's `--etcd-prefix` (the *root*: `/registry/` by default, `/kubernetes.io/`
//! on OpenShift):
//!
//! - a built-in resource lives at `<root><resource>/`, whatever its group
//!   (`/registry/secrets/`, `/registry/deployments/`), except the special prefixes compiled into
//!   kube-apiserver: `services/specs` (services), `services/endpoints` (endpoints), `minions`
//!   (nodes), `controllers` (replicationcontrollers), `ingress` (ingresses) and
//!   `podsecuritypolicy` (podsecuritypolicies, removed in 1.25).
//!   Source: kubernetes/kubernetes `pkg/kubeapiserver/default_storage_factory_builder.go`,
//!   `SpecialDefaultResourcePrefixes`; every other resource gets `strings.ToLower(resource)`
//!   from `k8s.io/apiserver/pkg/server/storage/storage_factory.go` (`DefaultStorageFactory`).
//! - the resources of the API servers kube-apiserver chains in front of it — CRDs
//!   (apiextensions-apiserver) and APIServices (kube-aggregator) — and every custom resource live
//!   at `<root><group>/<plural>/`: those servers use `SimpleRestOptionsFactory`, whose
//!   `ResourcePrefix` is `resource.Group + "/" + resource.Resource`
//!   (`k8s.io/apiserver/pkg/server/options/etcd.go`; custom resources:
//!   `apiextensions-apiserver/pkg/apiserver/customresource_handler.go`). CRDs themselves are at
//!   `<root>apiextensions.k8s.io/customresourcedefinitions/` and are JSON.
//! - below the resource prefix: `<namespace>/<name>` for namespaced objects, `<name>` for
//!   cluster-scoped ones (Kubernetes names never contain `/`).
//!
//! So a key names its resource by itself: a first segment with a `.` is a group (custom
//! resources and the two chained servers), anything else is a built-in prefix, looked up in
//! [`BUILTIN`] for its group. `/registry/events/` holds the core `events` (the `events.k8s.io`
//! API shares it).
//!
//! [`BUILTIN`] lists the built-in resources stored in etcd by Kubernetes 1.31 to 1.34
//! ([`KUBERNETES_VERSIONS`]), with their API groups: what `*.<group>` and `*.` cover.

mod target;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::Config;
use crate::provider::Plaintext;
use crate::store::{ReadStore, StoreError};
use crate::transform::{Chain, KmsOptions, TransformError};

pub use target::{Route, Router, Target};

/// The Kubernetes versions the [`BUILTIN`] table was taken from.
pub const KUBERNETES_VERSIONS: &str = "1.31-1.34";

/// kube-apiserver's default `--etcd-prefix`, as a key prefix.
pub const DEFAULT_ROOT: &str = "/registry/";

/// A resource and its API group (`""` for the core group), as an EncryptionConfiguration names
/// it: `secrets`, `deployments.apps`, `widgets.example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// The API group; `""` for the core group.
    pub group: String,
    /// The resource (plural, lower case).
    pub resource: String,
}

impl GroupResource {
    /// A resource of `group`.
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.to_owned(),
            resource: resource.to_owned(),
        }
    }

    /// Parses `resource.group` (or `resource` for the core group) as kube does
    /// ([`crate::config::parse_group_resource`]).
    pub fn parse(name: &str) -> Self {
        let (group, resource) = crate::config::parse_group_resource(name);
        Self::new(group, resource)
    }

    /// Where kube-apiserver stores this resource under `root` (`/registry/` →
    /// `/registry/secrets/`, `/registry/services/specs/`, `/registry/apps.example.com/widgets/`).
    pub fn storage_prefix(&self, root: &str) -> String {
        let rel = match builtin(&self.group, &self.resource) {
            Some(b) => b.prefix.to_owned(),
            None if self.group.is_empty() => self.resource.clone(),
            None => format!("{}/{}", self.group, self.resource),
        };
        format!("{}{rel}/", with_slash(root))
    }
}

impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// One built-in resource: its group, its name and its prefix below the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtin {
    /// The API group (`""`: core).
    pub group: &'static str,
    /// The resource.
    pub resource: &'static str,
    /// The key prefix below the root, without slashes (`secrets`, `services/specs`).
    pub prefix: &'static str,
}

const fn b(group: &'static str, resource: &'static str, prefix: &'static str) -> Builtin {
    Builtin {
        group,
        resource,
        prefix,
    }
}

/// The built-in resources kube-apiserver stores in etcd (Kubernetes [`KUBERNETES_VERSIONS`],
/// GA and beta APIs), from each group's `rest/storage_*.go` in kubernetes/kubernetes
/// `pkg/registry/`, with the special prefixes of `SpecialDefaultResourcePrefixes`.
pub const BUILTIN: &[Builtin] = &[
    // core ("")
    b("", "configmaps", "configmaps"),
    b("", "endpoints", "services/endpoints"),
    b("", "events", "events"),
    b("", "limitranges", "limitranges"),
    b("", "namespaces", "namespaces"),
    b("", "nodes", "minions"),
    b("", "persistentvolumeclaims", "persistentvolumeclaims"),
    b("", "persistentvolumes", "persistentvolumes"),
    b("", "pods", "pods"),
    b("", "podtemplates", "podtemplates"),
    b("", "replicationcontrollers", "controllers"),
    b("", "resourcequotas", "resourcequotas"),
    b("", "secrets", "secrets"),
    b("", "serviceaccounts", "serviceaccounts"),
    b("", "services", "services/specs"),
    // admissionregistration.k8s.io
    b(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
    ),
    b(
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        "validatingadmissionpolicies",
    ),
    b(
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybindings",
    ),
    b(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ),
    // the chained servers: group/resource prefixes
    b(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "apiextensions.k8s.io/customresourcedefinitions",
    ),
    b(
        "apiregistration.k8s.io",
        "apiservices",
        "apiregistration.k8s.io/apiservices",
    ),
    // apps
    b("apps", "controllerrevisions", "controllerrevisions"),
    b("apps", "daemonsets", "daemonsets"),
    b("apps", "deployments", "deployments"),
    b("apps", "replicasets", "replicasets"),
    b("apps", "statefulsets", "statefulsets"),
    // autoscaling, batch
    b(
        "autoscaling",
        "horizontalpodautoscalers",
        "horizontalpodautoscalers",
    ),
    b("batch", "cronjobs", "cronjobs"),
    b("batch", "jobs", "jobs"),
    // certificates, coordination, discovery
    b(
        "certificates.k8s.io",
        "certificatesigningrequests",
        "certificatesigningrequests",
    ),
    b("coordination.k8s.io", "leases", "leases"),
    b("discovery.k8s.io", "endpointslices", "endpointslices"),
    // flowcontrol
    b("flowcontrol.apiserver.k8s.io", "flowschemas", "flowschemas"),
    b(
        "flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations",
        "prioritylevelconfigurations",
    ),
    // networking
    b("networking.k8s.io", "ingressclasses", "ingressclasses"),
    b("networking.k8s.io", "ingresses", "ingress"),
    b("networking.k8s.io", "ipaddresses", "ipaddresses"),
    b("networking.k8s.io", "networkpolicies", "networkpolicies"),
    b("networking.k8s.io", "servicecidrs", "servicecidrs"),
    // node, policy
    b("node.k8s.io", "runtimeclasses", "runtimeclasses"),
    b("policy", "poddisruptionbudgets", "poddisruptionbudgets"),
    b("policy", "podsecuritypolicies", "podsecuritypolicy"),
    // rbac
    b(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "clusterrolebindings",
    ),
    b("rbac.authorization.k8s.io", "clusterroles", "clusterroles"),
    b("rbac.authorization.k8s.io", "rolebindings", "rolebindings"),
    b("rbac.authorization.k8s.io", "roles", "roles"),
    // resource (DRA, GA in 1.34)
    b("resource.k8s.io", "deviceclasses", "deviceclasses"),
    b("resource.k8s.io", "resourceclaims", "resourceclaims"),
    b(
        "resource.k8s.io",
        "resourceclaimtemplates",
        "resourceclaimtemplates",
    ),
    b("resource.k8s.io", "resourceslices", "resourceslices"),
    // scheduling, storage
    b("scheduling.k8s.io", "priorityclasses", "priorityclasses"),
    b("storage.k8s.io", "csidrivers", "csidrivers"),
    b("storage.k8s.io", "csinodes", "csinodes"),
    b(
        "storage.k8s.io",
        "csistoragecapacities",
        "csistoragecapacities",
    ),
    b("storage.k8s.io", "storageclasses", "storageclasses"),
    b("storage.k8s.io", "volumeattachments", "volumeattachments"),
    b(
        "storage.k8s.io",
        "volumeattributesclasses",
        "volumeattributesclasses",
    ),
];

/// The built-in resource `group`/`resource`, if it is one.
pub fn builtin(group: &str, resource: &str) -> Option<&'static Builtin> {
    BUILTIN
        .iter()
        .find(|b| b.group == group && b.resource == resource)
}

/// The built-in resources of `group` (`""`: core), what `*.<group>` covers among them.
pub fn builtin_of_group(group: &str) -> impl Iterator<Item = &'static Builtin> + '_ {
    BUILTIN.iter().filter(move |b| b.group == group)
}

fn with_slash(root: &str) -> String {
    if root.ends_with('/') {
        root.to_owned()
    } else {
        format!("{root}/")
    }
}

/// Key prefixes below the root that kube-apiserver writes without any transformer, whatever its
/// EncryptionConfiguration says: the service IP and node-port allocators' bitmaps
/// (`ranges/serviceips`, `ranges/secondaryserviceips`, `ranges/servicenodeports`) and the
/// lease endpoint reconciler's `masterleases/`. Their storage configs come straight from the
/// storage factory (`pkg/registry/core/rest/storage_core.go` `serviceallocator.NewEtcd`,
/// `pkg/controlplane/instance.go` `reconcilers.NewLeases`), which sets no transformer, so
/// `storagebackend/factory/etcd3.go` falls back to identity's encrypt-check transformer: they
/// are stored as plaintext, and an encrypted value there is one kube-apiserver refuses to read.
/// No config covers them; a rewrite never touches them.
pub const NEVER_ENCRYPTED: &[&str] = &["ranges/", "masterleases/"];

/// Whether `key` (or a key prefix) below `root` is one kube-apiserver never encrypts (see
/// [`NEVER_ENCRYPTED`]).
pub fn never_encrypted(root: &str, key: &[u8]) -> bool {
    below_root(root, key).is_some_and(|rest| {
        NEVER_ENCRYPTED
            .iter()
            .any(|p| rest.starts_with(p.as_bytes()))
    })
}

/// What a key says about itself: its resource, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The resource stored under the key; shared by the keys of one resource that a [`Router`]
    /// routes one after another.
    pub resource: Arc<GroupResource>,
    /// The namespace (`None` for cluster-scoped objects); shared by the keys of one namespace
    /// that a [`Router`] routes one after another.
    pub namespace: Option<Arc<str>>,
    /// The object's name (`None` for a key that ends at the resource prefix).
    pub name: Option<String>,
}

/// Reads a key's resource, namespace and name (`None` for a key outside `root` or with no
/// resource segment). Keys of an unknown built-in prefix are taken as core resources named
/// after the prefix.
pub fn split_key(root: &str, key: &[u8]) -> Option<KeyInfo> {
    let rest = below_root(root, key)?;
    let (resource, tail) = split_resource(rest)?;
    let (namespace, name) = object_of(tail.map_or(&[][..], |t| &rest[t..]));
    Some(KeyInfo {
        resource: Arc::new(resource),
        namespace: namespace.map(|ns| String::from_utf8_lossy(ns).into()),
        name: name.map(|n| String::from_utf8_lossy(n).into_owned()),
    })
}

/// What of `key` follows `root` (and the `/` after it, when `root` has none).
pub(crate) fn below_root<'k>(root: &str, key: &'k [u8]) -> Option<&'k [u8]> {
    let rest = key.strip_prefix(root.as_bytes())?;
    if root.ends_with('/') {
        Some(rest)
    } else {
        rest.strip_prefix(b"/")
    }
}

/// The resource a key names, from what follows the root (`secrets/ns/a`,
/// `apps.example.com/widgets/ns/w`, `services/specs/ns/web`), and where what follows the
/// resource's segments starts in `rest` (`None`: the resource's segment is the last). Splits
/// on `/` bytes and reads each segment as lossy UTF-8: the same as reading the whole key
/// lossily, since an invalid sequence never takes in a `/`.
pub(crate) fn split_resource(rest: &[u8]) -> Option<(GroupResource, Option<usize>)> {
    let (first, tail) = segment(rest, 0);
    if first.is_empty() {
        return None;
    }
    if first.contains('.') {
        let (plural, tail) = segment(rest, tail?);
        if plural.is_empty() {
            return None;
        }
        Some((GroupResource::new(&first, &plural), tail))
    } else if first == "services" {
        let (kind, tail) = segment(rest, tail?);
        let resource = match &*kind {
            "" => return None,
            "specs" => GroupResource::new("", "services"),
            "endpoints" => GroupResource::new("", "endpoints"),
            other => GroupResource::new("", &format!("services/{other}")),
        };
        Some((resource, tail))
    } else {
        let resource = match BUILTIN.iter().find(|b| b.prefix == first) {
            Some(b) => GroupResource::new(b.group, b.resource),
            None => GroupResource::new("", &first),
        };
        Some((resource, tail))
    }
}

/// The `/`-separated segment of `rest` that starts at `at`, and where the next one starts
/// (`None`: it is the last).
fn segment(rest: &[u8], at: usize) -> (Cow<'_, str>, Option<usize>) {
    let s = &rest[at..];
    match s.iter().position(|&b| b == b'/') {
        Some(i) => (String::from_utf8_lossy(&s[..i]), Some(at + i + 1)),
        None => (String::from_utf8_lossy(s), None),
    }
}

/// What follows a key's resource: nothing, `name`, `namespace/name`, or more segments (the
/// whole rest is the name). Returns the namespace and the name.
pub(crate) fn object_of(tail: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    if tail.is_empty() {
        return (None, None);
    }
    match tail.iter().position(|&b| b == b'/') {
        Some(i) if !tail[i + 1..].contains(&b'/') => (Some(&tail[..i]), Some(&tail[i + 1..])),
        _ => (None, Some(tail)),
    }
}

/// Something kept for each resource a scan meets, in the order met. A scan meets the keys of
/// a resource one after another, and a [`Router`] hands them one `Arc`: the last resource is
/// checked first, by pointer, before any lookup.
#[derive(Debug)]
pub(crate) struct ByResource<V> {
    rows: Vec<(Arc<GroupResource>, V)>,
    /// Where each resource is in `rows`.
    at: HashMap<GroupResource, usize>,
    last: usize,
}

impl<V> Default for ByResource<V> {
    fn default() -> Self {
        ByResource {
            rows: Vec::new(),
            at: HashMap::new(),
            last: 0,
        }
    }
}

impl<V> ByResource<V> {
    /// The value of `resource`, made with `new` the first time.
    pub(crate) fn get(
        &mut self,
        resource: &Arc<GroupResource>,
        new: impl FnOnce(&GroupResource) -> V,
    ) -> &mut V {
        let hit = self
            .rows
            .get(self.last)
            .is_some_and(|(r, _)| Arc::ptr_eq(r, resource) || r == resource);
        if !hit {
            self.last = match self.at.get(&**resource) {
                Some(&i) => i,
                None => {
                    self.rows.push((resource.clone(), new(resource)));
                    self.at.insert((**resource).clone(), self.rows.len() - 1);
                    self.rows.len() - 1
                }
            };
            // This key's `Arc`, so that the next key of the resource compares by pointer.
            self.rows[self.last].0 = resource.clone();
        }
        &mut self.rows[self.last].1
    }

    /// Every resource met and its value, in the order met.
    pub(crate) fn into_rows(self) -> impl Iterator<Item = (Arc<GroupResource>, V)> {
        self.rows.into_iter()
    }
}

/// A custom resource, as a stored CustomResourceDefinition names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomResource {
    /// `spec.group`.
    pub group: String,
    /// `spec.names.plural`.
    pub plural: String,
    /// `spec.scope == "Namespaced"`.
    pub namespaced: bool,
}

impl CustomResource {
    /// The resource it defines.
    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.plural)
    }
}

/// A stored CRD that does not name a group and plural.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrdError {
    /// The value is not a JSON CustomResourceDefinition (encrypted, or protobuf, or corrupt).
    #[error("{key}: not a JSON CustomResourceDefinition: {source}")]
    NotJson {
        /// The etcd key.
        key: String,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The value is encrypted and the config's chain for CRDs cannot read it.
    #[error("{key}: encrypted, and the config cannot read it")]
    Unreadable {
        /// The etcd key.
        key: String,
    },
}

#[derive(Deserialize)]
struct CrdDoc {
    spec: CrdSpec,
}

#[derive(Deserialize)]
struct CrdSpec {
    group: String,
    names: CrdNames,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct CrdNames {
    plural: String,
}

/// Reads a stored CRD (plaintext JSON, as apiextensions-apiserver writes it) for its group,
/// plural and scope. `key` only names the value in the error.
pub fn parse_crd(key: &[u8], value: &[u8]) -> Result<CustomResource, CrdError> {
    let doc: CrdDoc = serde_json::from_slice(value).map_err(|source| CrdError::NotJson {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })?;
    Ok(CustomResource {
        group: doc.spec.group,
        plural: doc.spec.names.plural,
        namespaced: doc.spec.scope == "Namespaced",
    })
}

/// Reads every stored CRD under `<root>apiextensions.k8s.io/customresourcedefinitions/` for the
/// custom resources it defines, decrypting with the CRDs' own chain when the config covers
/// them. A CRD that cannot be read is returned as an error beside the others, not a failure of
/// the whole read.
pub async fn custom_resources<S: ReadStore + Sync>(
    store: &S,
    root: &str,
    chains: &ResourceChains,
) -> Result<(Vec<CustomResource>, Vec<CrdError>), StoreError> {
    let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    let prefix = crds.storage_prefix(root);
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let chain = chains.chain_for(&crds);
    store
        .scan(prefix.as_bytes(), |entry| {
            let read = match chain {
                Some(chain) => chain.classify(&entry.value, &entry.key).plaintext,
                None => crate::transform::parse_prefix(&entry.value)
                    .is_none()
                    .then(|| Plaintext::new(entry.value.clone())),
            };
            match read {
                Some(plain) => match parse_crd(&entry.key, &plain) {
                    Ok(crd) => found.push(crd),
                    Err(e) => errors.push(e),
                },
                None => errors.push(CrdError::Unreadable {
                    key: String::from_utf8_lossy(&entry.key).into_owned(),
                }),
            }
            true
        })
        .await?;
    Ok((found, errors))
}

/// The key prefixes to scan so as to see every resource `names` cover (EncryptionConfiguration
/// `resources` names: `secrets`, `deployments.apps`, `*.apps`, `*.`, `*.*`), below `root`, in
/// key order, none inside another. `*.*` and `*.` scan the whole root (the core group has no
/// prefix of its own); `*.<group>` scans the group's built-in prefixes and `<root><group>/`,
/// where its custom resources live.
pub fn scan_prefixes<'a>(root: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let root = with_slash(root);
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let gr = GroupResource::parse(name);
        match (gr.group.as_str(), gr.resource.as_str()) {
            ("*", _) | ("", "*") => out.push(root.clone()),
            (group, "*") => {
                out.extend(
                    builtin_of_group(group)
                        .map(|b| GroupResource::new(b.group, b.resource).storage_prefix(&root)),
                );
                out.push(format!("{root}{group}/"));
            }
            _ => out.push(gr.storage_prefix(&root)),
        }
    }
    out.sort();
    out.dedup();
    let mut kept: Vec<String> = Vec::new();
    for p in out {
        if !kept.iter().any(|k| p.starts_with(k.as_str())) {
            kept.push(p);
        }
    }
    kept
}

/// What to read: the root, the key prefixes below it, and (with `--resource`) the only
/// resources wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// kube-apiserver's `--etcd-prefix` as a key prefix (`/registry/`).
    pub root: String,
    /// The key prefixes to scan, in key order, none inside another.
    pub prefixes: Vec<String>,
    /// When not empty, only these resources are audited; other keys under the prefixes are
    /// skipped.
    pub only: Vec<GroupResource>,
}

impl Scope {
    /// Every resource the config names (exact names, `*.<group>`, `*.`, `*.*`), or only the
    /// resources in `only` when it is not empty.
    pub fn from_config(config: &Config, root: &str, only: &[GroupResource]) -> Scope {
        let root = with_slash(root);
        let prefixes = if only.is_empty() {
            scan_prefixes(&root, config_names(config))
        } else {
            let mut p: Vec<String> = only.iter().map(|gr| gr.storage_prefix(&root)).collect();
            p.sort();
            p.dedup();
            p
        };
        Scope {
            root,
            prefixes,
            only: only.to_vec(),
        }
    }

    /// Whether a key of `resource` is wanted.
    pub fn wants(&self, resource: &GroupResource) -> bool {
        self.only.is_empty() || self.only.contains(resource)
    }

    /// The prefix a report names: the only prefix scanned, or the root.
    pub fn report_prefix(&self) -> &str {
        match self.prefixes.as_slice() {
            [one] => one,
            _ => &self.root,
        }
    }
}

fn config_names(config: &Config) -> impl Iterator<Item = &str> {
    config
        .model()
        .resources
        .iter()
        .flat_map(|e| e.resources.iter().map(String::as_str))
}

/// The chain kube-apiserver would use for each resource: the first `resources` element that
/// covers it wins (exact name, then `*.<group>`, then `*.*`, as [`Config::providers_for`]).
/// Built once per distinct provider list, so resources that share a config element share a
/// chain (and its KMS plugin clients and DEK cache).
#[derive(Debug)]
pub struct ResourceChains {
    config: Config,
    chains: Vec<Chain>,
    by_origins: HashMap<Vec<(usize, usize)>, usize>,
    cache: std::sync::Mutex<HashMap<GroupResource, Option<usize>>>,
}

impl ResourceChains {
    /// Builds every chain the config can hand out (one per resource name in it), with KMS
    /// providers set up as `kms` says.
    pub fn new(config: Config, kms: &KmsOptions) -> Result<ResourceChains, TransformError> {
        let mut chains = Vec::new();
        let mut by_origins = HashMap::new();
        for name in config_names(&config) {
            let gr = GroupResource::parse(name);
            let origins = origins(&config, &gr);
            if origins.is_empty() || by_origins.contains_key(&origins) {
                continue;
            }
            let chain = Chain::from_config_with_kms(&config, &gr.group, &gr.resource, kms)?;
            by_origins.insert(origins, chains.len());
            chains.push(chain);
        }
        Ok(ResourceChains {
            config,
            chains,
            by_origins,
            cache: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The chain for `resource`; `None` when the config does not cover it (kube-apiserver stores
    /// it unencrypted).
    pub fn chain_for(&self, resource: &GroupResource) -> Option<&Chain> {
        self.index_for(resource).and_then(|i| self.chains.get(i))
    }

    /// The index in [`ResourceChains::chains`] of the chain for `resource`; `None` when the
    /// config does not cover it.
    pub fn index_for(&self, resource: &GroupResource) -> Option<usize> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = cache.get(resource) {
            return *i;
        }
        let i = self
            .by_origins
            .get(&origins(&self.config, resource))
            .copied();
        cache.insert(resource.clone(), i);
        i
    }

    /// Every distinct chain, in config order (to check KMS plugins before a run).
    pub fn chains(&self) -> &[Chain] {
        &self.chains
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

fn origins(config: &Config, gr: &GroupResource) -> Vec<(usize, usize)> {
    config
        .providers_for(&gr.group, &gr.resource)
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

/// Splits `<prefix><namespace>/<name>` (or `<prefix><name>`) into namespace and name.
pub fn namespace_and_name(prefix: &[u8], key: &[u8]) -> (Option<String>, Option<String>) {
    let Some(rest) = key.strip_prefix(prefix) else {
        return (None, None);
    };
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (namespace, name) = below_prefix(rest);
    (namespace.map(lossy), name.map(lossy))
}

/// What follows a key's prefix: `<namespace>/<name>` (the name may hold more `/`), `<name>`,
/// or nothing. Returns the namespace and the name.
pub(crate) fn below_prefix(rest: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    match rest.iter().position(|&b| b == b'/') {
        Some(i) => (Some(&rest[..i]), Some(&rest[i + 1..])),
        None if rest.is_empty() => (None, None),
        None => (None, Some(rest)),
    }
}

/// The resource a key prefix holds, read with [`crate::resource::split_key`] below the
/// prefix's first segment (the root: `/registry/`, `/kubernetes.io/`):
/// `/registry/secrets/` → `secrets`, `/registry/deployments/` → `deployments.apps`,
/// `/registry/services/specs/` → `services`, `/registry/example.com/widgets/` →
/// `widgets.example.com`. A prefix with no resource segment gives its last segment as a core
/// resource (which no config covers by name).
pub fn resource_from_prefix(prefix: &str) -> GroupResource {
    let root = prefix
        .trim_start_matches('/')
        .split('/')
        .next()
        .map(|first| format!("/{first}/"))
        .unwrap_or_default();
    match crate::resource::split_key(&root, prefix.as_bytes()) {
        Some(info) => Arc::unwrap_or_clone(info.resource),
        None => GroupResource::new(
            "",
            prefix
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default(),
        ),
    }
}

/// The kind stored under a resource, for counting residue (`secrets` → `Secret`).
pub fn kind_of_resource(resource: &str) -> Option<&'static str> {
    match resource {
        "secrets" => Some("Secret"),
        "configmaps" => Some("ConfigMap"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_key_reads_every_shape_of_the_rest_of_a_key() {
        let split = |root: &str, key: &str| {
            split_key(root, key.as_bytes()).map(|i| {
                (
                    i.resource.to_string(),
                    i.namespace.map_or_else(|| "-".into(), |ns| ns.to_string()),
                    i.name.unwrap_or_else(|| "-".into()),
                )
            })
        };
        let some = |r: &str, ns: &str, n: &str| Some((r.to_owned(), ns.to_owned(), n.to_owned()));
        assert_eq!(
            split("/registry/", "/registry/secrets/ns/a"),
            some("secrets", "ns", "a")
        );
        assert_eq!(
            split("/registry", "/registry/secrets/ns/a"),
            some("secrets", "ns", "a")
        );
        assert_eq!(split("/registry", "/registrysecrets/ns/a"), None);
        assert_eq!(
            split("/registry/", "/registry/namespaces/a"),
            some("namespaces", "-", "a")
        );
        assert_eq!(
            split("/registry/", "/registry/secrets/"),
            some("secrets", "-", "-")
        );
        assert_eq!(
            split("/registry/", "/registry/secrets"),
            some("secrets", "-", "-")
        );
        assert_eq!(
            split("/registry/", "/registry/secrets/ns/"),
            some("secrets", "ns", "")
        );
        assert_eq!(
            split("/registry/", "/registry/secrets//a"),
            some("secrets", "", "a")
        );
        assert_eq!(
            split("/registry/", "/registry/secrets/a/b/c"),
            some("secrets", "-", "a/b/c")
        );
        assert_eq!(
            split("/registry/", "/registry/deployments/ns/d"),
            some("deployments.apps", "ns", "d")
        );
        assert_eq!(
            split("/registry/", "/registry/example.com/widgets/ns/w"),
            some("widgets.example.com", "ns", "w")
        );
        assert_eq!(split("/registry/", "/registry/example.com"), None);
        assert_eq!(split("/registry/", "/registry/example.com/"), None);
        assert_eq!(
            split("/registry/", "/registry/services/specs/ns/s"),
            some("services", "ns", "s")
        );
        assert_eq!(
            split("/registry/", "/registry/services/endpoints/ns/s"),
            some("endpoints", "ns", "s")
        );
        assert_eq!(
            split("/registry/", "/registry/services/x/y"),
            some("services/x", "-", "y")
        );
        assert_eq!(split("/registry/", "/registry/services"), None);
        assert_eq!(split("/registry/", "/registry/"), None);
        assert_eq!(split("/registry/", "/registry//x"), None);
    }

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

    fn info(key: &str) -> (String, Option<String>, Option<String>) {
        let i = split_key("/registry/", key.as_bytes()).unwrap();
        (
            i.resource.to_string(),
            i.namespace.map(|ns| ns.to_string()),
            i.name,
        )
    }

    #[test]
    fn keys_name_their_resource_namespace_and_name() {
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            info("/registry/secrets/default/db"),
            ("secrets".into(), s("default"), s("db"))
        );
        assert_eq!(
            info("/registry/deployments/kube-system/coredns"),
            ("deployments.apps".into(), s("kube-system"), s("coredns"))
        );
        assert_eq!(
            info("/registry/services/specs/default/kubernetes"),
            ("services".into(), s("default"), s("kubernetes"))
        );
        assert_eq!(
            info("/registry/services/endpoints/default/kubernetes"),
            ("endpoints".into(), s("default"), s("kubernetes"))
        );
        assert_eq!(
            info("/registry/minions/node-1"),
            ("nodes".into(), None, s("node-1"))
        );
        assert_eq!(
            info("/registry/controllers/ns/rc"),
            ("replicationcontrollers".into(), s("ns"), s("rc"))
        );
        assert_eq!(
            info("/registry/ingress/ns/web"),
            ("ingresses.networking.k8s.io".into(), s("ns"), s("web"))
        );
        assert_eq!(
            info("/registry/apiregistration.k8s.io/apiservices/v1.apps"),
            (
                "apiservices.apiregistration.k8s.io".into(),
                None,
                s("v1.apps")
            )
        );
        assert_eq!(
            info("/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"),
            (
                "customresourcedefinitions.apiextensions.k8s.io".into(),
                None,
                s("widgets.example.com")
            )
        );
        assert_eq!(
            info("/registry/example.com/widgets/ns/w1"),
            ("widgets.example.com".into(), s("ns"), s("w1"))
        );
        assert_eq!(
            info("/registry/namespaces/kube-system"),
            ("namespaces".into(), None, s("kube-system"))
        );
        assert_eq!(
            info("/registry/roles/ns/r"),
            ("roles.rbac.authorization.k8s.io".into(), s("ns"), s("r"))
        );
        assert_eq!(
            info("/registry/somethingnew/x"),
            ("somethingnew".into(), None, s("x"))
        );
        assert_eq!(split_key("/registry/", b"/other/secrets/a"), None);
        assert_eq!(split_key("/registry/", b"/registry/"), None);
        let os = split_key("/kubernetes.io/", b"/kubernetes.io/secrets/ns/a").unwrap();
        assert_eq!(*os.resource, GroupResource::new("", "secrets"));
    }

    #[test]
    fn prefixes_follow_the_special_table() {
        let p = |n: &str| GroupResource::parse(n).storage_prefix("/registry");
        assert_eq!(p("secrets"), "/registry/secrets/");
        assert_eq!(p("services"), "/registry/services/specs/");
        assert_eq!(p("nodes"), "/registry/minions/");
        assert_eq!(p("deployments.apps"), "/registry/deployments/");
        assert_eq!(p("ingresses.networking.k8s.io"), "/registry/ingress/");
        assert_eq!(p("widgets.example.com"), "/registry/example.com/widgets/");
        assert_eq!(
            p("apiservices.apiregistration.k8s.io"),
            "/registry/apiregistration.k8s.io/apiservices/"
        );
        // Every table entry's prefix maps back to it.
        for b in BUILTIN {
            let gr = GroupResource::new(b.group, b.resource);
            let key = format!("{}x", gr.storage_prefix("/registry/"));
            assert_eq!(
                split_key("/registry/", key.as_bytes()).unwrap().resource,
                gr.into(),
                "{key}"
            );
        }
    }

    #[test]
    fn config_names_become_scan_prefixes() {
        assert_eq!(
            scan_prefixes("/registry/", ["secrets", "configmaps."]),
            ["/registry/configmaps/", "/registry/secrets/"]
        );
        assert_eq!(
            scan_prefixes("/registry/", ["secrets", "*.*"]),
            ["/registry/"]
        );
        assert_eq!(scan_prefixes("/registry/", ["*."]), ["/registry/"]);
        assert_eq!(
            scan_prefixes("/registry/", ["*.batch", "*.example.com"]),
            [
                "/registry/batch/",
                "/registry/cronjobs/",
                "/registry/example.com/",
                "/registry/jobs/"
            ]
        );
    }

    const CONFIG: &str = "
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets, deployments.apps]
  providers:
  - aescbc:
      keys:
      - name: k1
        secret: c2VjcmV0IGlzIHNlY3VyZSwgaXMgaXQ/IDMyIGJ5dGU=
- resources: ['*.apps']
  providers:
  - secretbox:
      keys:
      - name: b1
        secret: c2VjcmV0IGlzIHNlY3VyZSwgaXMgaXQ/IDMyIGJ5dGU=
- resources: ['*.*']
  providers:
  - identity: {}
";

    #[test]
    fn first_matching_element_gives_the_chain() {
        let config = Config::from_yaml(CONFIG).unwrap();
        let chains = ResourceChains::new(config, &KmsOptions::default()).unwrap();
        assert_eq!(chains.chains().len(), 3);
        let write = |c: &ResourceChains, n: &str| {
            c.chain_for(&GroupResource::parse(n))
                .map(|c| c.write_entry().provider.kind().to_string())
        };
        assert_eq!(write(&chains, "secrets").as_deref(), Some("aescbc"));
        assert_eq!(
            write(&chains, "deployments.apps").as_deref(),
            Some("aescbc")
        );
        assert_eq!(
            write(&chains, "statefulsets.apps").as_deref(),
            Some("secretbox")
        );
        assert_eq!(write(&chains, "configmaps").as_deref(), Some("identity"));
        assert_eq!(
            write(&chains, "widgets.example.com").as_deref(),
            Some("identity")
        );
        let scope = Scope::from_config(chains.config(), "/registry", &[]);
        assert_eq!(scope.prefixes, ["/registry/"]);
        assert_eq!(scope.report_prefix(), "/registry/");
        let only = [GroupResource::parse("secrets")];
        let scope = Scope::from_config(chains.config(), "/registry", &only);
        assert_eq!(scope.prefixes, ["/registry/secrets/"]);
        assert!(scope.wants(&only[0]));
        assert!(!scope.wants(&GroupResource::parse("configmaps")));
    }

    #[test]
    fn uncovered_resources_have_no_chain() {
        let text = CONFIG.split("- resources: ['*.apps']").next().unwrap();
        let config = Config::from_yaml(text).unwrap();
        let chains = ResourceChains::new(config, &KmsOptions::default()).unwrap();
        assert!(chains
            .chain_for(&GroupResource::parse("configmaps"))
            .is_none());
        assert!(chains
            .chain_for(&GroupResource::parse("statefulsets.apps"))
            .is_none());
        assert!(chains.chain_for(&GroupResource::parse("secrets")).is_some());
        let scope = Scope::from_config(chains.config(), "/registry/", &[]);
        assert_eq!(
            scope.prefixes,
            ["/registry/deployments/", "/registry/secrets/"]
        );
    }

    #[test]
    fn crds_name_group_plural_and_scope() {
        let json = br#"{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1",
            "metadata":{"name":"widgets.example.com"},
            "spec":{"group":"example.com","names":{"plural":"widgets","kind":"Widget"},
                    "scope":"Namespaced","versions":[]}}"#;
        let crd = parse_crd(b"/k", json).unwrap();
        assert_eq!(
            crd.group_resource(),
            GroupResource::new("example.com", "widgets")
        );
        assert!(crd.namespaced);
        let err = parse_crd(
            b"/registry/apiextensions.k8s.io/customresourcedefinitions/x",
            b"k8s:enc:aescbc:v1:k:",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("customresourcedefinitions/x"), "{err}");
    }
}
