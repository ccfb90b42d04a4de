//! `atrest rewrite`: re-encrypt plaintext and stale entries in place, safely.

use atrest::offline::{rewrite_kine, rewrite_snapshot, Coverage, OfflineError};
use atrest::resource::Scope;
use atrest::rewrite::{self, Observer, RewriteEntry, RewriteOptions};
use atrest::rewrite_resources::{self, ResourceRewriteSummary};
use atrest::space::{self, SpacePlan};
use atrest::store::etcd::EtcdError;
use atrest::store::etcd::QuotaSource;
use atrest::store::snapshot::Snapshot;
use atrest::store::{ReadStore, StoreError, WriteStore};
use indicatif::ProgressBar;

use super::audit::{connect, warn_failover};
use super::load_chain;
use crate::cli::args::{OutputFormat, RewriteArgs};
use crate::cli::output;
use crate::cli::{CliError, Exit};

struct Progress(ProgressBar);

impl Observer for Progress {
    fn total(&self, n: u64) {
        self.0.set_length(n);
    }
    fn entry(&self, _e: &RewriteEntry) {
        self.0.inc(1);
    }
}

/// Runs `atrest rewrite`.
pub(crate) async fn run(args: RewriteArgs, format: Option<OutputFormat>) -> Result<Exit, CliError> {
    let mut args = args;
    let (config, kine_db) =
        super::k3s_paths(&args.store, args.config.as_deref(), args.kine_db.as_deref());
    args.kine_db = kine_db;
    let config = config.ok_or_else(|| CliError::usage("--config FILE is required"))?;
    if args.store.k3s && args.out.is_none() {
        return Err(CliError::usage(
            "--k3s rewrites offline, into a new file: k3s serves kine only on its unix socket",
        )
        .advice(
            "stop k3s, run `atrest rewrite --k3s --out /root/state-new.db`, put the new file in \
             place of state.db (removing state.db-wal and -shm) and start k3s; or run kine with \
             --listen-address and pass --endpoints",
        ));
    }
    if args.concurrency == 0 {
        return Err(CliError::usage("--concurrency must be at least 1"));
    }
    // Without --prefix: every resource the config covers, each to its own write provider.
    let by_resource = args.prefix.is_none();
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| "/registry/secrets/".to_owned());
    let (chain, chains) = if by_resource {
        let chains = super::load_chains(&config, &args.kms)?;
        (None, Some(chains))
    } else {
        (Some(load_chain(&config, &prefix, &args.kms)?), None)
    };
    let scope = match &chains {
        Some(chains) => Some(super::resource_scope(
            &config,
            chains,
            &args.resource,
            &args.etcd_prefix,
        )?),
        None => None,
    };
    if let Some(out) = &args.out {
        let input = args
            .snapshot
            .as_ref()
            .or(args.kine_db.as_ref())
            .ok_or_else(|| {
                CliError::usage("--out is for offline rewrites: pass --snapshot IN or --kine-db IN")
            })?;
        let what = match (&chain, &chains, &scope) {
            (Some(chain), _, _) => Offline::Prefix(chain, &prefix),
            (None, Some(chains), Some(scope)) => Offline::Resources(chains, scope),
            _ => return Err(CliError::usage("nothing to rewrite")),
        };
        return offline(what, input, out, &args, format).await;
    }
    if args.force && args.backup.is_none() && args.out.is_none() {
        return Err(CliError::usage("--force needs --backup FILE or --out FILE"));
    }
    if let Some(path) = args
        .backup
        .as_deref()
        .filter(|_| !args.dry_run && !args.force)
    {
        if path.symlink_metadata().is_ok() {
            return Err(CliError::usage(format!(
                "the backup file {} already exists; refusing to overwrite it",
                path.display()
            ))
            .advice("choose a new file name, or pass --force to replace it"));
        }
    }
    let store = connect(&args.store).await?;
    let kine = store.is_kine();
    // kine (k3s's SQL datastore) has no space quota and no alarms.
    let space = if kine {
        None
    } else {
        check_space(
            &store,
            chain.as_ref(),
            chains.as_ref().zip(scope.as_ref()),
            &prefix,
            &args,
        )
        .await?
    };
    if kine && args.backup.is_some() && !args.dry_run {
        return Err(CliError::usage(format!(
            "{} is kine (k3s's datastore): it has no snapshot API, so --backup cannot save one",
            store.source()
        ))
        .advice(
            "copy the SQLite file instead, e.g. `sqlite3 /var/lib/rancher/k3s/server/db/state.db \
             \".backup /root/state-before-rewrite.db\"`, then run without --backup",
        ));
    }
    if let Some(path) = &args.backup {
        if !args.dry_run {
            let size = store.backup(path, args.force).await.map_err(|e| match e {
                StoreError::Etcd(EtcdError::Backup { path, source }) => {
                    // A local file problem (exit 2), with the OS's reason.
                    CliError::io(
                        &format!("cannot write the backup {}", path.display()),
                        source,
                    )
                    .advice("nothing was written to etcd; fix the backup path or drop --backup")
                }
                e => {
                    let mut err =
                        CliError::store(format!("backup to {} failed: {e}", path.display()))
                            .advice(
                                "nothing was written to etcd; fix the backup path or drop --backup",
                            );
                    for cause in crate::cli::error::causes(&e) {
                        err = err.detail(format!("caused by: {cause}"));
                    }
                    err
                }
            })?;
            eprintln!(
                "Backup: {} ({size} bytes) saved before any write.",
                path.display()
            );
        }
    }
    // The apiserver gate (issue 19): run inside the rewrite, before its first write.
    let gate = super::apiservers::resolve_gate(&args.gate, args.store.kubeadm).await?;
    if let Some(warning) = gate.warning().filter(|_| !args.dry_run) {
        eprintln!("{warning}");
    }
    let apiserver_gate = Some(atrest::apiserver::gate::GateCheck {
        gate,
        file_bytes: super::apiservers::read_config(&config)?,
    });
    let opts = RewriteOptions {
        apiserver_gate,
        prefix: prefix.as_bytes().to_vec(),
        concurrency: args.concurrency,
        dry_run: args.dry_run,
        allow_decrypt: args.allow_decrypt,
        compact_every: space.as_ref().and_then(|p| p.compact_every),
        // kine keeps the previous value in each row's old_value: write twice so that the copy
        // beside each re-encrypted value is ciphertext too.
        write_twice: kine,
        ..RewriteOptions::default()
    };
    let bar = Progress(output::progress(if args.dry_run {
        "planning"
    } else {
        "rewriting"
    }));
    let shutdown = async {
        // Ctrl-C: finish the transactions in flight, start no new ones.
        let _ = tokio::signal::ctrl_c().await;
    };
    let mut summary = match (&chain, chains.as_ref(), &scope) {
        (Some(chain), _, _) => {
            let summary = rewrite::apply(&store, chain, &opts, &bar, shutdown).await;
            warn_failover(&store);
            ResourceRewriteSummary {
                all: summary.map_err(rewrite_error)?,
                ..ResourceRewriteSummary::default()
            }
        }
        (None, Some(chains), Some(scope)) => {
            let summary =
                rewrite_resources::apply(&store, chains, scope, &opts, &bar, shutdown).await;
            warn_failover(&store);
            let mut summary = summary.map_err(rewrite_error)?;
            summary.all.unanswered = store.unanswered();
            summary
        }
        _ => return Err(CliError::usage("nothing to rewrite")),
    };
    summary.all.space = space;
    bar.0.finish_and_clear();

    let mut compacted = None;
    if args.compact && !args.dry_run && !summary.all.interrupted {
        let compact_prefix = scope.as_ref().map_or(prefix.as_str(), |s| s.root.as_str());
        let page = store.page(compact_prefix.as_bytes(), None, None).await?;
        store.compact(page.revision).await?;
        compacted = Some(page.revision);
    }

    match output::format(format) {
        OutputFormat::Prometheus => return Err(output::no_prometheus()),
        OutputFormat::Json => {
            if by_resource {
                output::print_json(&summary)?
            } else {
                output::print_json(&summary.all)?
            }
        }
        OutputFormat::Table => output::print(&render(&summary, &args, compacted, kine))?,
    }
    Ok(match summary.all.verdict() {
        atrest::audit::Verdict::Clean => Exit::Clean,
        atrest::audit::Verdict::Findings => Exit::Findings,
    })
}

/// Reads etcd's space and the rewrite's growth, prints the plan on stderr, and refuses (before
/// anything is written) when the rewrite cannot stay under the quota's margin or a NOSPACE alarm
/// is active. A dry run prints the refusal a real run would meet and goes on.
async fn check_space(
    store: &atrest::store::etcd::EtcdStore,
    chain: Option<&atrest::transform::Chain>,
    by_resource: Option<(&atrest::resource::ResourceChains, &Scope)>,
    prefix: &str,
    args: &RewriteArgs,
) -> Result<Option<SpacePlan>, CliError> {
    let opts = super::audit::etcd_options(&args.store);
    let etcd = store
        .space(&opts, args.quota_bytes)
        .await
        .map_err(atrest::store::StoreError::from)?;
    // A dry run always counts; a real run skips the extra scan when even rewriting the whole
    // database once would stay under the margin.
    let estimate = if !args.dry_run && space::bound_fits(&etcd, args.max_db_fraction) {
        space::Estimate::bound(etcd.largest_in_use())
    } else {
        match (chain, by_resource) {
            (Some(chain), _) => space::estimate(store, chain, prefix.as_bytes()).await?,
            (None, Some((chains, scope))) => {
                rewrite_resources::estimate(store, chains, scope).await?
            }
            (None, None) => space::Estimate::bound(etcd.largest_in_use()),
        }
    };
    match space::plan(etcd, estimate, args.max_db_fraction, args.compact_every) {
        Ok(plan) => {
            eprint!("{}", describe_space(&plan));
            Ok(Some(plan))
        }
        Err(e) if args.dry_run => {
            eprintln!("A real run would refuse: {e}\nhint: {}", e.advice());
            Ok(None)
        }
        Err(e) => Err(CliError::store(e.to_string()).advice(e.advice())),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The plan in words: the space, the quota and where it came from, the growth, the batches.
fn describe_space(p: &SpacePlan) -> String {
    let e = &p.etcd;
    let fullest = e
        .members
        .iter()
        .max_by_key(|m| m.db_size_in_use)
        .map(|m| {
            format!(
                "{} in use ({} file) on {}",
                mib(m.db_size_in_use),
                mib(m.db_size),
                m.endpoint
            )
        })
        .unwrap_or_else(|| "no member status".to_owned());
    let source = match e.quota_source {
        QuotaSource::Status => "from etcd's status".to_owned(),
        QuotaSource::Metrics => "from etcd's /metrics".to_owned(),
        QuotaSource::Given => format!(
            "from --quota-bytes; /metrics unread: {}",
            e.quota_note.as_deref().unwrap_or("-")
        ),
        _ => format!(
            "etcd's default, assumed: /metrics unread ({}); pass --quota-bytes if etcd runs \
             with another --quota-backend-bytes",
            e.quota_note.as_deref().unwrap_or("-")
        ),
    };
    let mut out = format!(
        "Space: {fullest}; quota {} ({source}); margin {}% = {}.\n",
        mib(e.quota_bytes),
        p.max_db_percent,
        mib(p.limit_bytes)
    );
    out += &if p.estimate.upper_bound {
        format!(
            "Growth: at most {} even if every entry were rewritten: {} projected.\n",
            mib(p.estimate.growth_bytes),
            mib(p.projected_bytes)
        )
    } else {
        format!(
            "Growth: this rewrite writes {} entries, about {} (new revisions and bbolt \
             overhead): {} projected.\n",
            p.estimate.entries,
            mib(p.estimate.growth_bytes),
            mib(p.projected_bytes)
        )
    };
    match p.compact_every {
        Some(n) => {
            out += &format!(
                "Plan: {} batches of up to {n} entries, compacting etcd's history at each \
                 batch's revision so freed pages are reused (kube-apiserver compacts the same \
                 history every 5 minutes anyway).\n",
                p.batches()
            )
        }
        None => out += "Plan: one pass, under the margin; no compaction needed.\n",
    }
    out
}

/// A rewrite that did not run or stopped: what happened, why (each cause), what was done
/// before it stopped, and what to do.
fn rewrite_error(e: rewrite::RewriteError) -> CliError {
    let e = match e {
        rewrite::RewriteError::Apiserver(e) => return super::apiservers::gate_error(e),
        e => e,
    };
    let mut err = CliError::store(e.to_string()).advice(e.advice());
    for cause in crate::cli::error::causes(&e) {
        err = err.detail(format!("caused by: {cause}"));
    }
    if let Some(s) = e.summary() {
        err = err.detail(format!(
            "done before it stopped: {} rewritten, {} already current, {} skipped, {} conflicts, \
             {} failed, {} deleted; run the same command again to finish (rewritten entries \
             are current and are passed over)",
            s.rewritten, s.already_current, s.skipped, s.conflicts, s.failed, s.deleted
        ));
    }
    err
}

/// What an offline rewrite covers (see [`Coverage`]).
enum Offline<'a> {
    Prefix(&'a atrest::transform::Chain, &'a str),
    Resources(&'a atrest::resource::ResourceChains, &'a Scope),
}

impl Offline<'_> {
    async fn coverage<'a, S: ReadStore + Sync>(
        &'a self,
        store: &S,
        allow_decrypt: bool,
    ) -> Result<Coverage<'a>, CliError> {
        Ok(match self {
            Offline::Prefix(chain, prefix) => Coverage::Prefix {
                chain,
                prefix: prefix.as_bytes(),
            },
            Offline::Resources(chains, scope) => {
                Coverage::resources(store, chains, scope, allow_decrypt).await?
            }
        })
    }
}

async fn offline(
    what: Offline<'_>,
    input: &std::path::Path,
    out: &std::path::Path,
    args: &RewriteArgs,
    format: Option<OutputFormat>,
) -> Result<Exit, CliError> {
    if out.exists() && !args.force {
        return Err(CliError::usage(format!("{} already exists", out.display()))
            .advice("pass --force to replace it, or choose another --out"));
    }
    let kine = args.kine_db.is_some();
    let flag = if kine { "--kine-db" } else { "--snapshot" };
    if args.dry_run {
        return Err(CliError::usage(format!(
            "--dry-run is for live rewrites; audit the {flag} file instead"
        ))
        .advice(format!(
            "atrest audit {flag} {} --config FILE",
            input.display()
        )));
    }
    let result = if kine {
        let db = super::open_kine(input)?;
        let coverage = what.coverage(&db, args.allow_decrypt).await?;
        rewrite_kine(&db, out, args.force, &coverage, args.allow_decrypt).await
    } else {
        let snap = Snapshot::open(input).map_err(StoreError::from)?;
        let coverage = what.coverage(&snap, args.allow_decrypt).await?;
        rewrite_snapshot(&snap, out, &coverage, args.allow_decrypt).await
    };
    let s = result.map_err(|e| match e {
        OfflineError::Snapshot(e) => CliError::from(atrest::store::StoreError::from(e)),
        OfflineError::IdentityWrite => CliError::usage(e.to_string())
            .advice("pass --allow-decrypt if decrypting everything is what you want"),
        other => CliError::usage(other.to_string()),
    })?;
    match output::format(format) {
        OutputFormat::Prometheus => return Err(output::no_prometheus()),
        OutputFormat::Json => output::print_json(&s)?,
        OutputFormat::Table => {
            let mut t = output::table();
            t.set_header(vec![
                "",
                "rewritten",
                "already current",
                "skipped",
                "failed",
            ]);
            t.add_row(vec![
                "newest revisions".to_owned(),
                s.rewritten.to_string(),
                s.already_current.to_string(),
                s.skipped.to_string(),
                s.failed.to_string(),
            ]);
            t.add_row(vec![
                "older revisions".to_owned(),
                s.history_rewritten.to_string(),
                "-".to_owned(),
                s.history_left.to_string(),
                "-".to_owned(),
            ]);
            let mut text = format!(
                "Rewrote {} into {} (revision {})\n{t}\n",
                s.input, s.output, s.revision
            );
            text += &format!(
                "The new file holds {} entries: {} current, {} plaintext, {} stale, {} unreadable; history: {} plaintext, {} stale; free-page residue: {}.\n",
                s.after.total,
                s.after.current,
                s.after.plaintext,
                s.after.stale,
                s.after.unknown_key + s.after.undecryptable,
                s.after_history.plaintext,
                s.after_history.stale,
                s.after_residue
            );
            for (resource, why) in &s.left_alone {
                text += &format!("Left {resource} as it is: {why}.\n");
            }
            for e in &s.crd_errors {
                text += &format!("warning: {e}; its custom resources were left as they are\n");
            }
            text += &if kine {
                format!(
                    "Use it with k3s stopped: replace /var/lib/rancher/k3s/server/db/state.db with {} (and remove state.db-wal and state.db-shm), then start k3s.\n",
                    s.output
                )
            } else {
                format!(
                    "Restore it with: etcdctl snapshot restore {} --data-dir <new dir>\n",
                    s.output
                )
            };
            output::print(&text)?;
        }
    }
    Ok(match s.verdict() {
        atrest::audit::Verdict::Clean => Exit::Clean,
        atrest::audit::Verdict::Findings => Exit::Findings,
    })
}

fn render(
    summary: &ResourceRewriteSummary,
    args: &RewriteArgs,
    compacted: Option<i64>,
    kine: bool,
) -> String {
    let s = &summary.all;
    let mut t = output::table();
    t.set_header(vec![
        "scanned",
        "rewritten",
        "already current",
        "skipped",
        "conflicts retried",
        "abandoned",
        "failed",
        "deleted",
    ]);
    t.add_row(vec![
        s.scanned.to_string(),
        s.rewritten.to_string(),
        s.already_current.to_string(),
        s.skipped.to_string(),
        s.conflicts_retried.to_string(),
        s.conflicts.to_string(),
        s.failed.to_string(),
        s.deleted.to_string(),
    ]);
    let mut out = format!(
        "{} {} at revision {}\n{t}\n",
        if args.dry_run {
            "Dry run of rewrite of"
        } else {
            "Rewrite of"
        },
        args.prefix
            .as_deref()
            .unwrap_or(if summary.resources.is_empty() {
                "the resources the config covers"
            } else {
                "every resource the config covers"
            }),
        s.revision
    );
    if !summary.resources.is_empty() {
        let mut r = output::table();
        r.set_header(vec![
            "resource",
            "scanned",
            "rewritten",
            "already current",
            "skipped",
            "failed",
        ]);
        for (name, c) in &summary.resources {
            r.add_row(vec![
                name.clone(),
                c.scanned.to_string(),
                (c.rewritten + c.would_rewrite).to_string(),
                c.already_current.to_string(),
                c.skipped.to_string(),
                c.failed.to_string(),
            ]);
        }
        out += &format!("\nBy resource:\n{r}\n");
    }
    for (name, why) in &summary.left_alone {
        out += &format!("Left alone: {name}: {why}.\n");
    }
    for e in &summary.crd_errors {
        out += &format!(
            "A stored CRD could not be read (its custom resources were not rewritten): {e}\n"
        );
    }
    let notable: Vec<_> = s
        .entries
        .iter()
        .filter(|e| !matches!(e.result, rewrite::EntryResult::Rewritten))
        .collect();
    if !notable.is_empty() {
        let mut d = output::table();
        d.set_header(vec!["key", "state", "result", "note"]);
        for e in notable {
            d.add_row(vec![
                e.key.clone(),
                e.from.to_string(),
                e.result.to_string(),
                e.error.clone().unwrap_or_default(),
            ]);
        }
        out += &format!("\n{d}\n");
    }
    if s.compactions > 0 {
        out += &format!(
            "\nProgressive compaction: etcd's history was compacted {} times during the run, to stay under the space quota.\n",
            s.compactions
        );
    }
    if s.interrupted {
        out += "\nInterrupted: the transactions in flight were finished; run the same command again to complete the job.\n";
    }
    if args.dry_run {
        out += "\nNothing was written (--dry-run).\n";
    } else if s.rewritten > 0 {
        out += "\nStill exposed after this rewrite:\n";
        match compacted {
            Some(rev) => out += &format!("  - history was compacted at revision {rev}: older revisions are gone.\n"),
            None => out += "  - older revisions keep the old values in etcd's history until compaction\n    (kube-apiserver compacts every 5 minutes by default; or pass --compact).\n",
        }
        if kine {
            out += "  - kine: every key was written twice, so each row's old_value copy is ciphertext too;\n    the old rows stay in the SQLite file until kine compacts, and their bytes in its free\n    pages until kine's startup VACUUM — and in every earlier copy of state.db.\n";
        } else {
            out += "  - the old bytes stay in etcd's database file until `etcdctl defrag` on every member,\n    and in every earlier backup or snapshot.\n";
        }
    }
    out
}
