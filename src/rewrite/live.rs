//! A rewrite of a live store: the preflight every rewrite passes, then the engine once per
//! resource prefix of the [`Target`], each with its own chain.
//!
//! # Preflight (nothing is written until it passes)
//! 1. The store is live (a file is rewritten into a new file: [`super::offline`]).
//! 2. Each writing chain may write: identity only with `allow_decrypt` (by resource, an
//!    identity resource is left alone instead, and says why); a KMS plugin healthy, KMS v2, and
//!    able to decrypt its own `Encrypt` output.
//! 3. The space plan: every member's database file stays under `max_db_fraction` of etcd's
//!    quota, with progressive compaction when needed; an active NOSPACE alarm refuses (kine has
//!    neither quota nor alarms).
//! 4. The apiserver gate: every running kube-apiserver has loaded the config being written
//!    with ([`crate::apiserver::gate`]), so none is left unable to read what is written.
//! 5. The backup, when asked for, is saved (kine has no snapshot API: refused).
//!
//! Then every unit — a resource prefix and the chain kube-apiserver reads it with — is run
//! through the engine ([`super::apply_prefix`]); on kine every rewritten key is written twice
//! ([`RewriteOptions::write_twice`]). With `compact`, the history is compacted at the end.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::space_plan::{self, Estimate, SpacePlan};
use super::{apply_prefix, Observer, RewriteEntry, RewriteError, RewriteOptions, RewriteSummary};
use crate::provider::Provider;
use crate::resource::{custom_resources, never_encrypted, GroupResource, Target, BUILTIN};
use crate::store::etcd::EtcdStore;
use crate::store::{ReadStore, Store, StoreError, WriteStore};
use crate::transform::Chain;

/// The outcome of a rewrite: the fields of [`RewriteSummary`] over every resource (flattened,
/// so `atrest rewrite -o json` keeps its schema), plus the same counts per resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RewriteReport {
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

impl RewriteReport {
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
        all.second_write_failed += s.second_write_failed;
        all.interrupted |= s.interrupted;
        all.peak_db_size = all.peak_db_size.max(s.peak_db_size);
        all.revision = all.revision.max(s.revision);
        all.compactions += s.compactions;
        all.entries.append(&mut s.entries);
        self.resources.insert(resource, s);
    }
}

/// One resource prefix and the chain it is rewritten with.
pub(crate) struct Unit<'a> {
    pub(crate) resource: GroupResource,
    pub(crate) prefix: String,
    pub(crate) chain: &'a Chain,
}

/// What a rewrite of `target` visits in `store`: for one prefix, that prefix; by resource, every
/// covered resource in scope — the built-in ones and the custom resources of the CRDs stored in
/// `store` — in key order of their prefixes. Resources whose write provider is identity are left
/// alone (named in the map, with why) unless `allow_decrypt`; CRDs that cannot be read are
/// returned as errors.
pub(crate) async fn units<'a, S: ReadStore + Sync>(
    store: &S,
    target: &'a Target,
    allow_decrypt: bool,
) -> Result<(Vec<Unit<'a>>, BTreeMap<String, String>, Vec<String>), StoreError> {
    let Some((chains, scope)) = target.by_resource() else {
        if let Some((prefix, ..)) = target
            .as_prefix()
            .filter(|(p, ..)| never_encrypted(target.root(), p.as_bytes()))
        {
            let why = "kube-apiserver stores these keys unencrypted whatever its config says, and cannot read them encrypted";
            let left_alone = BTreeMap::from([(prefix.to_owned(), why.to_owned())]);
            return Ok((Vec::new(), left_alone, Vec::new()));
        }
        let units = target
            .as_prefix()
            .and_then(|(prefix, resource, chain)| {
                chain.map(|chain| Unit {
                    resource: resource.clone(),
                    prefix: prefix.to_owned(),
                    chain,
                })
            })
            .into_iter()
            .collect();
        return Ok((units, BTreeMap::new(), Vec::new()));
    };
    let (crds, crd_errors) = custom_resources(store, &scope.root, chains).await?;
    let mut out: Vec<(GroupResource, String)> = BUILTIN
        .iter()
        .map(|b| GroupResource::new(b.group, b.resource))
        .chain(crds.iter().map(|c| c.group_resource()))
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
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out.dedup_by(|a, b| a.1 == b.1);
    let mut units = Vec::new();
    let mut left_alone = BTreeMap::new();
    for (resource, prefix) in out {
        let Some(chain) = chains.chain_for(&resource) else {
            continue;
        };
        if matches!(chain.write_entry().provider, Provider::Identity(_)) && !allow_decrypt {
            left_alone.insert(
                resource.to_string(),
                "its write provider is identity: pass --allow-decrypt to decrypt it".to_owned(),
            );
            continue;
        }
        units.push(Unit {
            resource,
            prefix,
            chain,
        });
    }
    let crd_errors = crd_errors.iter().map(ToString::to_string).collect();
    Ok((units, left_alone, crd_errors))
}

/// Keeps a progress total across units: each unit's total is added to what the earlier ones
/// handled.
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

/// Rewrites every entry `target` covers in a live `store` that is not current, each to its own
/// resource's write provider, after the preflight (see the module docs). `shutdown` (Ctrl-C in
/// the CLI) finishes the transactions in flight and returns the partial report with
/// `interrupted` set; running again finishes the job.
pub async fn rewrite(
    store: &Store,
    target: &Target,
    opts: &RewriteOptions,
    observer: &dyn Observer,
    shutdown: impl Future<Output = ()>,
) -> Result<RewriteReport, RewriteError> {
    let Some(live) = store.live() else {
        return Err(RewriteError::NotLive {
            source_name: store.source(),
        });
    };
    let store_err = |source| RewriteError::Store {
        key: None,
        source,
        summary: Box::default(),
    };
    let (units, left_alone, crd_errors) = units(live, target, opts.allow_decrypt)
        .await
        .map_err(store_err)?;
    // The write gates of every chain that writes: identity needs `allow_decrypt`; a KMS
    // plugin must be healthy, KMS v2, and decrypt its own `Encrypt` output back.
    for unit in &units {
        match &unit.chain.write_entry().provider {
            Provider::Identity(_) if !opts.allow_decrypt => {
                return Err(RewriteError::IdentityWrite)
            }
            Provider::Kms(kms) => {
                kms.ready_to_write()?;
            }
            _ => {}
        }
    }
    // The apiserver gate: nothing is written while a known kube-apiserver has not loaded the
    // config being written with (a dry run writes nothing, so it is not asked).
    let apiserver_check = match &opts.apiserver_gate {
        Some(gate) if !opts.dry_run => Some(gate.run().await?.summary()),
        _ => None,
    };
    let kine = live.is_kine();
    let space = if kine {
        None
    } else {
        plan_space(live, &units, opts, observer).await?
    };
    if let Some(path) = opts.backup.as_deref().filter(|_| !opts.dry_run) {
        if kine {
            return Err(RewriteError::BackupOnKine {
                source_name: live.source(),
            });
        }
        let bytes = live
            .backup(path, opts.overwrite_backup)
            .await
            .map_err(|source| RewriteError::Backup {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        observer.backup(path, bytes);
    }
    let run = RewriteOptions {
        compact_every: space.as_ref().and_then(|p| p.compact_every),
        space_guard: space.as_ref().filter(|_| !opts.dry_run).map(guard),
        write_twice: opts.write_twice || kine,
        ..opts.clone()
    };
    let mut report = run_units(live, &units, &run, observer, shutdown).await?;
    report.left_alone = left_alone;
    report.crd_errors = crd_errors;
    report.all.apiserver_check = apiserver_check;
    report.all.space = space.map(|mut plan| {
        plan.peak_db_size = plan.peak_db_size.max(report.all.peak_db_size);
        plan
    });
    if report.all.revision == 0 {
        // Nothing was scanned (no unit, or empty prefixes): still say which revision the store
        // was at, rather than 0.
        let page = live
            .page(target.root().as_bytes(), None, None)
            .await
            .map_err(store_err)?;
        report.all.revision = page.revision;
    }
    if opts.compact && !opts.dry_run && !report.all.interrupted {
        let page = live
            .page(target.root().as_bytes(), None, None)
            .await
            .map_err(store_err)?;
        live.compact(page.revision).await.map_err(store_err)?;
        report.all.compactions += 1;
        report.all.compacted_at = Some(page.revision);
    }
    report.all.unanswered = live.unanswered();
    Ok(report)
}

/// The space guard of a run under `plan` (see [`super::SpaceGuard`]): compaction at every check
/// from the margin less what one normal check interval may write, a stop from the margin less
/// what one check interval under pressure may write.
fn guard(plan: &SpacePlan) -> super::SpaceGuard {
    let per_entry = plan
        .estimate
        .growth_bytes
        .checked_div(plan.estimate.entries)
        .unwrap_or(0);
    let interval = plan
        .compact_every
        .unwrap_or(space_plan::GUARD_EVERY)
        .min(space_plan::GUARD_EVERY);
    super::SpaceGuard {
        pressure: plan
            .limit_bytes
            .saturating_sub(per_entry.saturating_mul(interval)),
        stop: plan
            .limit_bytes
            .saturating_sub(per_entry.saturating_mul(space_plan::GUARD_EVERY / 10)),
    }
}

/// The space plan (see [`space_plan`]): etcd's space and the rewrite's growth. A dry run always
/// counts the growth and reports a refusal to the observer instead of failing; a real run skips
/// the count when even rewriting the whole database once stays under the margin.
async fn plan_space(
    live: &EtcdStore,
    units: &[Unit<'_>],
    opts: &RewriteOptions,
    observer: &dyn Observer,
) -> Result<Option<SpacePlan>, RewriteError> {
    let store_err = |source| RewriteError::Store {
        key: None,
        source,
        summary: Box::default(),
    };
    let etcd = live
        .space(opts.quota_bytes)
        .await
        .map_err(|e| store_err(e.into()))?;
    let estimate = if !opts.dry_run && space_plan::bound_fits(&etcd, opts.max_db_fraction) {
        Estimate::bound(etcd.largest_in_use())
    } else {
        let mut total = Estimate::default();
        for unit in units {
            let one = space_plan::estimate(live, unit.chain, unit.prefix.as_bytes())
                .await
                .map_err(store_err)?;
            total.entries += one.entries;
            total.bytes += one.bytes;
            total.growth_bytes += one.growth_bytes;
        }
        total
    };
    match space_plan::plan(etcd, estimate, opts.max_db_fraction, opts.compact_every) {
        Ok(plan) => {
            observer.space(&plan);
            Ok(Some(plan))
        }
        Err(e) if opts.dry_run => {
            observer.space_refused(&e);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs the engine over every unit, with one shutdown signal for all of them. Stops after a
/// unit whose run was interrupted (by `shutdown` or a store failure).
async fn run_units<S: WriteStore + Sync>(
    store: &S,
    units: &[Unit<'_>],
    opts: &RewriteOptions,
    observer: &dyn Observer,
    shutdown: impl Future<Output = ()>,
) -> Result<RewriteReport, RewriteError> {
    let mut report = RewriteReport::default();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let offset = Offset {
        inner: observer,
        done: AtomicU64::new(0),
    };
    let run = async {
        for unit in units {
            let mut stop = rx.clone();
            let signal = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let one = apply_prefix(
                store,
                unit.chain,
                unit.prefix.as_bytes(),
                opts,
                &offset,
                signal,
            )
            .await;
            match one {
                Ok(s) => {
                    offset.done.fetch_add(s.scanned, Ordering::Relaxed);
                    let interrupted = s.interrupted;
                    report.merge(unit.resource.to_string(), s);
                    if interrupted {
                        break;
                    }
                }
                Err(RewriteError::Store {
                    key,
                    source,
                    summary: partial,
                }) => {
                    report.merge(unit.resource.to_string(), *partial);
                    report.all.interrupted = true;
                    return Err(RewriteError::Store {
                        key,
                        source,
                        summary: Box::new(report.all.clone()),
                    });
                }
                Err(RewriteError::MarginReached {
                    size,
                    limit,
                    summary: partial,
                }) => {
                    report.merge(unit.resource.to_string(), *partial);
                    report.all.interrupted = true;
                    return Err(RewriteError::MarginReached {
                        size,
                        limit,
                        summary: Box::new(report.all.clone()),
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
    Ok(report)
}
