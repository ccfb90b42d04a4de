//! What a command reads, and with which chain: a [`Target`], and [`Target::route`] for each key.
//!
//! A target is either
//! - **one prefix with one chain** (`--prefix P`, or no config at all): every key under the
//!   prefix is read with that chain, or told apart as plaintext or encrypted without one; or
//! - **every covered resource with its own chain** (a config without `--prefix`): the keys under
//!   kube-apiserver's `--etcd-prefix` (the root), each read with the chain of the `resources`
//!   element kube-apiserver would pick for its resource, optionally narrowed to `--resource`
//!   names. Keys of resources the config does not cover are routed as such, so that reports can
//!   count them and rewrites leave them alone.
//!
//! Audit, status, the prune check and both rewrites are one function each over a target.

use std::sync::Arc;

use super::{
    below_prefix, below_root, never_encrypted, object_of, resource_from_prefix, split_resource,
    GroupResource, KeyInfo, ResourceChains, Scope, DEFAULT_ROOT,
};
use crate::transform::{Chain, TransformError};

/// What to read, and with which chain (see the module docs).
#[derive(Debug)]
pub struct Target {
    by: By,
}

#[derive(Debug)]
enum By {
    Prefix {
        root: String,
        prefixes: [String; 1],
        resource: Arc<GroupResource>,
        chain: Option<Chain>,
    },
    Resources {
        chains: ResourceChains,
        scope: Scope,
    },
}

/// Where a key belongs in a [`Target`].
#[derive(Debug)]
pub enum Route<'a> {
    /// The target reads the key: its resource, namespace and name, and the chain kube-apiserver
    /// reads it with (`None`: no config was given).
    Covered {
        /// The key's resource, namespace and name.
        info: KeyInfo,
        /// The chain; `None` without a config.
        chain: Option<&'a Chain>,
    },
    /// A key of a resource the config does not cover (kube-apiserver stores it as it comes),
    /// or one kube-apiserver never encrypts whatever the config says
    /// ([`super::NEVER_ENCRYPTED`]).
    NotCovered(KeyInfo),
    /// A key the target does not read: outside its prefixes, of a resource `--resource` left
    /// out, or naming no object (kine's `/registry/health`).
    Outside,
}

/// Routes the keys of one scan, as [`Target::route`] does, remembering the last key's
/// resource and namespace: a scan meets the keys of a resource, and of a namespace, one after
/// another, so most keys need no lookup and no allocation but their name's.
#[derive(Debug)]
pub struct Router<'a> {
    target: &'a Target,
    /// The last key routed by resource, up to the end of its resource's segments
    /// (`/registry/secrets/`): every key that starts with these bytes has this resource and
    /// goes to the same place.
    resource: Option<(Vec<u8>, Arc<GroupResource>, Place<'a>)>,
    /// The last namespace handed out.
    namespace: Option<Arc<str>>,
}

/// Where the keys of one resource go.
#[derive(Debug, Clone, Copy)]
enum Place<'a> {
    Covered(&'a Chain),
    NotCovered,
    Outside,
}

impl<'a> Router<'a> {
    /// Where `key` belongs (see [`Route`]).
    pub fn route(&mut self, key: &[u8]) -> Route<'a> {
        let target = self.target;
        match &target.by {
            By::Prefix {
                root,
                prefixes: [prefix],
                resource,
                chain,
            } => {
                let Some(rest) = key.strip_prefix(prefix.as_bytes()) else {
                    return Route::Outside;
                };
                let (namespace, name) = below_prefix(rest);
                let info = self.info(resource.clone(), namespace, name);
                if chain.is_some() && never_encrypted(root, key) {
                    return Route::NotCovered(info);
                }
                Route::Covered {
                    info,
                    chain: chain.as_ref(),
                }
            }
            By::Resources { chains, scope } => {
                let (resource, place, tail) = match &self.resource {
                    Some((head, resource, place)) if key.starts_with(head) => {
                        (resource.clone(), *place, &key[head.len()..])
                    }
                    _ => {
                        let Some(rest) = below_root(&scope.root, key) else {
                            return Route::Outside;
                        };
                        // A key whose resource's segment is its last names no object.
                        let Some((resource, Some(tail))) = split_resource(rest) else {
                            return Route::Outside;
                        };
                        let place = if !scope.wants(&resource) {
                            Place::Outside
                        } else if never_encrypted(&scope.root, key) {
                            Place::NotCovered
                        } else {
                            chains
                                .chain_for(&resource)
                                .map_or(Place::NotCovered, Place::Covered)
                        };
                        let head = key.len() - rest.len() + tail;
                        let resource = Arc::new(resource);
                        self.resource = Some((key[..head].to_vec(), resource.clone(), place));
                        (resource, place, &key[head..])
                    }
                };
                let (namespace, name) = object_of(tail);
                if name.is_none() {
                    return Route::Outside;
                }
                match place {
                    Place::Outside => Route::Outside,
                    Place::NotCovered => Route::NotCovered(self.info(resource, namespace, name)),
                    Place::Covered(chain) => Route::Covered {
                        info: self.info(resource, namespace, name),
                        chain: Some(chain),
                    },
                }
            }
        }
    }

    fn info(
        &mut self,
        resource: Arc<GroupResource>,
        namespace: Option<&[u8]>,
        name: Option<&[u8]>,
    ) -> KeyInfo {
        KeyInfo {
            resource,
            namespace: namespace.map(|ns| self.namespace(ns)),
            name: name.map(|n| String::from_utf8_lossy(n).into_owned()),
        }
    }

    /// The namespace `bytes` name, shared with the last key's when it is the same.
    fn namespace(&mut self, bytes: &[u8]) -> Arc<str> {
        match &self.namespace {
            Some(last) if last.as_bytes() == bytes => last.clone(),
            _ => {
                let ns: Arc<str> = String::from_utf8_lossy(bytes).into();
                self.namespace = Some(ns.clone());
                ns
            }
        }
    }
}

impl Target {
    /// One prefix read with one chain (`None`: no config; entries are only told apart as
    /// plaintext or encrypted).
    pub fn prefix(prefix: &str, chain: Option<Chain>) -> Target {
        let root = prefix
            .trim_start_matches('/')
            .split('/')
            .next()
            .filter(|first| !first.is_empty())
            .map_or_else(|| DEFAULT_ROOT.to_owned(), |first| format!("/{first}/"));
        Target {
            by: By::Prefix {
                root,
                prefixes: [prefix.to_owned()],
                resource: Arc::new(resource_from_prefix(prefix)),
                chain,
            },
        }
    }

    /// Every resource the config behind `chains` covers below `root` (kube-apiserver's
    /// `--etcd-prefix`), each with its own chain; only the resources in `only` when it is not
    /// empty, each of which the config must cover ([`TransformError::NotCovered`] otherwise).
    pub fn resources(
        chains: ResourceChains,
        root: &str,
        only: &[GroupResource],
    ) -> Result<Target, TransformError> {
        if let Some(gr) = only.iter().find(|gr| chains.chain_for(gr).is_none()) {
            return Err(TransformError::NotCovered(gr.to_string()));
        }
        let scope = Scope::from_config(chains.config(), root, only);
        Ok(Target {
            by: By::Resources { chains, scope },
        })
    }

    /// Where `key` belongs (see [`Route`]). A scan routes its keys with one [`Router`]
    /// instead ([`Target::router`]).
    pub fn route(&self, key: &[u8]) -> Route<'_> {
        self.router().route(key)
    }

    /// A router for the keys of one scan.
    pub fn router(&self) -> Router<'_> {
        Router {
            target: self,
            resource: None,
            namespace: None,
        }
    }

    /// kube-apiserver's `--etcd-prefix` as a key prefix (`/registry/`).
    pub fn root(&self) -> &str {
        match &self.by {
            By::Prefix { root, .. } => root,
            By::Resources { scope, .. } => &scope.root,
        }
    }

    /// The key prefixes to read, in key order, none inside another.
    pub fn prefixes(&self) -> &[String] {
        match &self.by {
            By::Prefix { prefixes, .. } => prefixes,
            By::Resources { scope, .. } => &scope.prefixes,
        }
    }

    /// The prefix reports name: the only prefix read, or the root.
    pub fn report_prefix(&self) -> &str {
        match &self.by {
            By::Prefix { prefixes: [p], .. } => p,
            By::Resources { scope, .. } => scope.report_prefix(),
        }
    }

    /// Every distinct chain the target reads with, in config order (none without a config).
    pub fn chains(&self) -> &[Chain] {
        match &self.by {
            By::Prefix { chain, .. } => chain.as_slice(),
            By::Resources { chains, .. } => chains.chains(),
        }
    }

    /// The index in [`Target::chains`] of the chain `resource` is read with.
    pub fn chain_index(&self, resource: &GroupResource) -> Option<usize> {
        match &self.by {
            By::Prefix { chain, .. } => chain.as_ref().map(|_| 0),
            By::Resources { chains, .. } => chains.index_for(resource),
        }
    }

    /// The chain reports name in their headline: the prefix's, or that of the first resource
    /// the target names (`--resource`, else the config's first element).
    pub fn headline_chain(&self) -> Option<&Chain> {
        match &self.by {
            By::Prefix { chain, .. } => chain.as_ref(),
            By::Resources { chains, scope } => match scope.only.first() {
                Some(gr) => chains.chain_for(gr),
                None => chains.chains().first(),
            },
        }
    }

    /// The chains and scope of a target by resource; `None` for one prefix.
    pub fn by_resource(&self) -> Option<(&ResourceChains, &Scope)> {
        match &self.by {
            By::Prefix { .. } => None,
            By::Resources { chains, scope } => Some((chains, scope)),
        }
    }

    /// The one prefix, its resource and its chain of a prefix target; `None` by resource.
    pub fn as_prefix(&self) -> Option<(&str, &GroupResource, Option<&Chain>)> {
        match &self.by {
            By::Prefix {
                prefixes: [p],
                resource,
                chain,
                ..
            } => Some((p, resource, chain.as_ref())),
            By::Resources { .. } => None,
        }
    }

    /// The resource names the target reads, as a status names them: the prefix's resource, the
    /// `--resource` names, or every name in the config's `resources` lists, in config order.
    pub fn resource_names(&self) -> Vec<String> {
        match &self.by {
            By::Prefix {
                chain, resource, ..
            } => vec![chain
                .as_ref()
                .map_or_else(|| resource.to_string(), |c| c.resource().to_owned())],
            By::Resources { chains, scope } if scope.only.is_empty() => {
                let mut names: Vec<String> = Vec::new();
                for e in &chains.config().model().resources {
                    for r in &e.resources {
                        if !names.contains(r) {
                            names.push(r.clone());
                        }
                    }
                }
                names
            }
            By::Resources { scope, .. } => scope.only.iter().map(ToString::to_string).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::transform::KmsOptions;

    const CONFIG: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc:
          keys:
            - name: k1
              secret: ikHm9u40/6VyvwXNlQnLmK1PYXpvODebBhwL+5DaGkY=
      - identity: {}
";

    const STAR_STAR: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: ['*.*']
    providers:
      - secretbox:
          keys:
            - name: k1
              secret: MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=
";

    fn chains_of(yaml: &str) -> ResourceChains {
        let config = Config::from_yaml(yaml).unwrap();
        ResourceChains::new(config, &KmsOptions::default()).unwrap()
    }

    fn chains() -> ResourceChains {
        chains_of(CONFIG)
    }

    #[test]
    fn a_prefix_covers_every_key_below_it_with_its_chain() {
        let t = Target::prefix("/registry/secrets/", None);
        assert_eq!(t.root(), "/registry/");
        assert_eq!(t.report_prefix(), "/registry/secrets/");
        match t.route(b"/registry/secrets/ns/a") {
            Route::Covered { info, chain } => {
                assert_eq!(*info.resource, GroupResource::new("", "secrets"));
                assert_eq!(info.namespace.as_deref(), Some("ns"));
                assert_eq!(info.name.as_deref(), Some("a"));
                assert!(chain.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.route(b"/registry/configmaps/ns/a"),
            Route::Outside
        ));
    }

    /// What a route says, with its chain by address.
    fn shown(route: Route<'_>) -> String {
        match route {
            Route::Covered { info, chain } => {
                format!("covered {info:?} {:?}", chain.map(|c| c as *const Chain))
            }
            Route::NotCovered(info) => format!("not covered {info:?}"),
            Route::Outside => "outside".to_owned(),
        }
    }

    /// Routing as it was before the router: every key split on its own.
    fn reference<'t>(target: &'t Target, key: &[u8]) -> Route<'t> {
        match &target.by {
            By::Prefix {
                root,
                prefixes: [prefix],
                resource,
                chain,
            } => {
                if !key.starts_with(prefix.as_bytes()) {
                    return Route::Outside;
                }
                let (namespace, name) = super::super::namespace_and_name(prefix.as_bytes(), key);
                let info = KeyInfo {
                    resource: resource.clone(),
                    namespace: namespace.map(Arc::from),
                    name,
                };
                if chain.is_some() && never_encrypted(root, key) {
                    return Route::NotCovered(info);
                }
                Route::Covered {
                    info,
                    chain: chain.as_ref(),
                }
            }
            By::Resources { chains, scope } => {
                let Some(info) =
                    super::super::split_key(&scope.root, key).filter(|i| i.name.is_some())
                else {
                    return Route::Outside;
                };
                if !scope.wants(&info.resource) {
                    return Route::Outside;
                }
                if never_encrypted(&scope.root, key) {
                    return Route::NotCovered(info);
                }
                match chains.chain_for(&info.resource) {
                    Some(chain) => Route::Covered {
                        info,
                        chain: Some(chain),
                    },
                    None => Route::NotCovered(info),
                }
            }
        }
    }

    #[test]
    fn issue_21_a_router_routes_as_each_key_alone_would_be() {
        let keys: [&[u8]; 16] = [
            b"/registry/secrets/ns1/a",
            b"/registry/secrets/ns1/b",
            b"/registry/secrets/ns2/c",
            b"/registry/configmaps/ns2/x",
            b"/registry/secrets/ns1/d",
            b"/registry/secrets",
            b"/registry/secrets/",
            b"/registry/secrets/\xff\xfe/bad-utf8",
            b"/registry/secrets/\xff\xfe/bad-utf8-2",
            b"/registry/ranges/serviceips",
            b"/registry/apps.example.com/widgets/ns/w",
            b"/registry/apps.example.com/widgets",
            b"/registry/services/specs/default/kubernetes",
            b"/registry/deployments/ns/d",
            b"/registryx/secrets/ns/a",
            b"/registry/secrets/a/b/c",
        ];
        let star = Config::from_yaml(STAR_STAR).unwrap();
        let secrets_chain = crate::transform::Chain::from_config(&star, "", "secrets").unwrap();
        let targets = [
            Target::resources(chains(), "/registry/", &[]).unwrap(),
            Target::resources(chains_of(STAR_STAR), "/registry", &[]).unwrap(),
            Target::resources(
                chains_of(STAR_STAR),
                "/registry/",
                &[GroupResource::parse("secrets")],
            )
            .unwrap(),
            Target::prefix("/registry/secrets/", Some(secrets_chain)),
            Target::prefix("/registry/", None),
        ];
        for target in &targets {
            let mut router = target.router();
            // Twice over, so that every key also comes after another resource's.
            for key in keys.iter().chain(keys.iter()) {
                let (routed, fresh) = (shown(router.route(key)), shown(target.route(key)));
                assert_eq!(routed, fresh, "{key:?}");
                assert_eq!(routed, shown(reference(target, key)), "{key:?}");
            }
        }
        // Keys of one namespace share its name; the router hands out no copy.
        let target = &targets[0];
        let mut router = target.router();
        let ns = |route: Route<'_>| match route {
            Route::Covered { info, .. } => info.namespace.unwrap(),
            other => panic!("{other:?}"),
        };
        let (a, b) = (ns(router.route(keys[0])), ns(router.route(keys[1])));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*ns(router.route(keys[7])), "\u{fffd}\u{fffd}");
    }

    #[test]
    fn resources_route_each_key_to_its_resource() {
        let t = Target::resources(chains(), "/registry", &[]).unwrap();
        assert!(matches!(
            t.route(b"/registry/secrets/ns/a"),
            Route::Covered { chain: Some(_), .. }
        ));
        assert!(matches!(
            t.route(b"/registry/configmaps/ns/a"),
            Route::NotCovered(_)
        ));
        assert!(matches!(t.route(b"/registry/health"), Route::Outside));
        // Issue 22 item 19: kube-apiserver stores these with no transformer, whatever the
        // config says: never covered, by resource or by prefix.
        let all = Target::resources(chains_of(STAR_STAR), "/registry/", &[]).unwrap();
        for key in [
            &b"/registry/ranges/serviceips"[..],
            b"/registry/masterleases/10.0.0.1",
        ] {
            assert!(matches!(all.route(key), Route::NotCovered(_)), "{key:?}");
        }
        let config = Config::from_yaml(STAR_STAR).unwrap();
        let chain = crate::transform::Chain::from_config(&config, "", "ranges").unwrap();
        let ranges = Target::prefix("/registry/ranges/", Some(chain));
        assert!(matches!(
            ranges.route(b"/registry/ranges/serviceips"),
            Route::NotCovered(_)
        ));
        assert_eq!(t.resource_names(), ["secrets"]);
        let e = Target::resources(
            chains(),
            "/registry/",
            &[GroupResource::parse("configmaps")],
        )
        .unwrap_err();
        assert!(matches!(e, TransformError::NotCovered(_)), "{e}");
    }
}
