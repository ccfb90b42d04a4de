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

use super::{
    namespace_and_name, never_encrypted, resource_from_prefix, split_key, GroupResource, KeyInfo,
    ResourceChains, Scope, DEFAULT_ROOT,
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
        resource: GroupResource,
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
                resource: resource_from_prefix(prefix),
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

    /// Where `key` belongs (see [`Route`]).
    pub fn route(&self, key: &[u8]) -> Route<'_> {
        match &self.by {
            By::Prefix {
                root,
                prefixes: [prefix],
                resource,
                chain,
            } => {
                if !key.starts_with(prefix.as_bytes()) {
                    return Route::Outside;
                }
                let (namespace, name) = namespace_and_name(prefix.as_bytes(), key);
                let info = KeyInfo {
                    resource: resource.clone(),
                    namespace,
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
                let Some(info) = split_key(&scope.root, key).filter(|i| i.name.is_some()) else {
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
                assert_eq!(info.resource, GroupResource::new("", "secrets"));
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
