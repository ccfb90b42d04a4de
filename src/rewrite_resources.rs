//! Rewriting every resource a config covers, each to its own write provider.
//!
//! [`apply`] runs [`crate::rewrite::apply`] once per resource prefix, with the chain kube-apiserver
//! would use for that resource ([`ResourceChains`]): verification before every write,
//! compare-and-swap and retries are [`crate::rewrite`]'s, per resource. The resources are the
//! built-in ones ([`crate::resource::BUILTIN`]) and the custom resources of the stored CRDs
//! ([`crate::resource::custom_resources`]) that the config covers and the scope wants; keys of
//! any other resource are never read for writing, so they stay byte-identical (kube-apiserver
//! would read an encrypted value of a resource its config does not cover as garbage).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::provider::Provider;
use crate::resource::{custom_resources, GroupResource, ResourceChains, Scope, BUILTIN};
use crate::rewrite::{self, Observer, RewriteEntry, RewriteError, RewriteOptions, RewriteSummary};
use crate::store::{ReadStore, StoreError, WriteStore};

/// The outcome of a rewrite by resource: the fields of [`RewriteSummary`] over every resource
/// (flattened, so `atrest rewrite -o json` keeps its schema), plus the same counts per resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResourceRewriteSummary {
    /// Every resource together.
    #[serde(flatten)]
    pub all: RewriteSummary,
    /// Each rewritten resource's counts (its `entries` are in `all.entries`, so empty here).
    pub resources: BTreeMap<String, RewriteSummary>,
    /// Covered resources left alone, and why (an identity write provider without
    /// `allow_decrypt`).
    pub left_alone: BTreeMap<String, String>,
    /// Stored CRDs that could not be read (their custom resources are not rewritten).
    pub crd_errors: Vec<String>,
}

impl ResourceRewriteSummary {
    fn merge(&mut self, resource: String, mut s: RewriteSummary) {
        let all = &mut self.all;
        all.scanned += s.scanned;
        all.rewritten += s.rewritten;
        all.would_rewrite += s.would_rewrite;
        all.already_current += s.already_current;
        all.skipped += s.skipped;
        all.conflicts += s.conflicts;
        all.conflicts_retried += s.conflicts_retried;
        all.failed += s.failed;
        all.deleted += s.deleted;
        all.interrupted |= s.interrupted;
        all.revision = all.revision.max(s.revision);
        all.compactions += s.compactions;
        all.entries.append(&mut s.entries);
        self.resources.insert(resource, s);
    }
}

/// Keeps a progress total across resources: each resource's total is added to what the earlier
/// ones handled.
struct Offset<'a> {
    inner: &'a dyn Observer,
    done: AtomicU64,
}

impl Observer for Offset<'_> {
    fn total(&self, n: u64) {
        self.inner.total(self.done.load(Ordering::Relaxed) + n);
    }
    fn entry(&self, e: &RewriteEntry) {
        self.inner.entry(e);
    }
}

/// The resources a rewrite of `scope` visits, in key order of their prefixes.
pub(crate) fn resources_in_scope(
    chains: &ResourceChains,
    scope: &Scope,
    custom: &[GroupResource],
) -> Vec<(GroupResource, String)> {
    let mut out: Vec<(GroupResource, String)> = BUILTIN
        .iter()
        .map(|b| GroupResource::new(b.group, b.resource))
        .chain(custom.iter().cloned())
        .chain(scope.only.iter().cloned())
        .map(|gr| {
            let prefix = gr.storage_prefix(&scope.root);
            (gr, prefix)
        })
        .filter(|(gr, prefix)| {
            scope.wants(gr)
                && scope
                    .prefixes
                    .iter()
                    .any(|p| prefix.starts_with(p.as_str()))
                && chains.chain_for(gr).is_some()
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out.dedup_by(|a, b| a.1 == b.1);
    out
}

/// The space a rewrite of `scope` needs ([`crate::space::estimate`] summed over the covered
/// resources, each with its own chain).
pub async fn estimate<S: ReadStore + Sync>(
    store: &S,
    chains: &ResourceChains,
    scope: &Scope,
) -> Result<crate::space::Estimate, StoreError> {
    let (crds, _) = custom_resources(store, &scope.root, chains).await?;
    let custom: Vec<GroupResource> = crds.iter().map(|c| c.group_resource()).collect();
    let mut total = crate::space::Estimate::default();
    for (gr, prefix) in resources_in_scope(chains, scope, &custom) {
        let Some(chain) = chains.chain_for(&gr) else {
            continue;
        };
        let one = crate::space::estimate(store, chain, prefix.as_bytes()).await?;
        total.entries += one.entries;
        total.bytes += one.bytes;
        total.growth_bytes += one.growth_bytes;
    }
    Ok(total)
}

/// Rewrites every covered resource in `scope` to its own write provider (see the module docs).
/// `opts.prefix` is ignored: each resource's prefix is used. Stops after a resource whose run was
/// interrupted (by `shutdown` or a store failure).
pub async fn apply<S>(
    store: &S,
    chains: &ResourceChains,
    scope: &Scope,
    opts: &RewriteOptions,
    observer: &dyn Observer,
    shutdown: impl Future<Output = ()>,
) -> Result<ResourceRewriteSummary, RewriteError>
where
    S: WriteStore + Sync,
{
    let mut summary = ResourceRewriteSummary::default();
    summary.all.apiserver_check = rewrite::apiserver_gate(opts).await?;
    let (crds, crd_errors) =
        custom_resources(store, &scope.root, chains)
            .await
            .map_err(|source| RewriteError::Store {
                key: None,
                source,
                summary: Box::default(),
            })?;
    summary.crd_errors = crd_errors.iter().map(ToString::to_string).collect();
    let custom: Vec<GroupResource> = crds.iter().map(|c| c.group_resource()).collect();
    let resources = resources_in_scope(chains, scope, &custom);

    // One shutdown signal for every per-resource run.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let offset = Offset {
        inner: observer,
        done: AtomicU64::new(0),
    };
    let run = async {
        for (gr, prefix) in resources {
            let Some(chain) = chains.chain_for(&gr) else {
                continue;
            };
            if matches!(chain.write_entry().provider, Provider::Identity(_)) && !opts.allow_decrypt
            {
                summary.left_alone.insert(
                    gr.to_string(),
                    "its write provider is identity: pass --allow-decrypt to decrypt it".to_owned(),
                );
                continue;
            }
            let one = RewriteOptions {
                prefix: prefix.into_bytes(),
                // Checked once above, before any resource.
                apiserver_gate: None,
                ..opts.clone()
            };
            let mut stop = rx.clone();
            let signal = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            match rewrite::apply(store, chain, &one, &offset, signal).await {
                Ok(s) => {
                    offset.done.fetch_add(s.scanned, Ordering::Relaxed);
                    let interrupted = s.interrupted;
                    summary.merge(gr.to_string(), s);
                    if interrupted {
                        break;
                    }
                }
                Err(RewriteError::Store {
                    key,
                    source,
                    summary: partial,
                }) => {
                    summary.merge(gr.to_string(), *partial);
                    summary.all.interrupted = true;
                    return Err(RewriteError::Store {
                        key,
                        source,
                        summary: Box::new(summary.all.clone()),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let signal = async {
        shutdown.await;
        let _ = tx.send(true);
        std::future::pending::<()>().await;
    };
    tokio::select! {
        r = run => r?,
        () = signal => {}
    }
    Ok(summary)
}
