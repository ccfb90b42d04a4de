//! `atrest rewrite`: re-encrypt plaintext and stale entries in place, safely.
//!
//! Resolves the arguments into a store, a [`atrest::resource::Target`] and options, makes one
//! library call ([`rewrite::rewrite`], or [`rewrite_copy`] with `--out`) — every safety rule runs
//! inside it — and renders the result.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use atrest::resource::Target;
use atrest::rewrite::offline::{rewrite_copy, OfflineError};
use atrest::rewrite::space_plan::{SpaceError, SpacePlan};
use atrest::rewrite::{self, Observer, RewriteEntry, RewriteError, RewriteOptions, RewriteReport};
use atrest::store::etcd::{EtcdError, QuotaSource};
use atrest::store::StoreError;
use indicatif::ProgressBar;

use super::audit::warn_failover;
use crate::cli::args::{OutputFormat, RewriteArgs};
use crate::cli::output;
use crate::cli::stream::JsonEntries;
use crate::cli::{CliError, Exit};

/// The fields `atrest rewrite -o json` (live and offline) writes before its streamed `entries`.
#[derive(serde::Serialize)]
struct Head {
    schema_version: atrest::audit::SchemaVersion,
}

/// Each entry that was not already current: streamed as JSON, or kept for the table up to
/// [`ROWS`] when it is worth a row (not rewritten, or with a note) and otherwise counted. An
/// offline rewrite's observer; a live one's within [`Progress`].
struct Listing {
    json: Option<JsonEntries>,
    rows: Mutex<Vec<RewriteEntry>>,
    more_rows: AtomicU64,
}

impl Listing {
    /// Streams to `-o json`, or keeps table rows.
    fn new(format: OutputFormat) -> Result<Listing, CliError> {
        Ok(Listing {
            json: match format {
                OutputFormat::Json => Some(JsonEntries::new(&Head {
                    schema_version: atrest::audit::SchemaVersion,
                })?),
                _ => None,
            },
            rows: Mutex::new(Vec::new()),
            more_rows: AtomicU64::new(0),
        })
    }

    /// The rows kept, in key order, and how many more were counted.
    fn into_rows(self) -> (Vec<RewriteEntry>, u64) {
        let mut rows = self
            .rows
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        (rows, self.more_rows.into_inner())
    }
}

impl Observer for Listing {
    fn entry(&self, e: &RewriteEntry) {
        if e.result == rewrite::EntryResult::AlreadyCurrent {
            return;
        }
        if let Some(json) = &self.json {
            json.entry(e);
        }
        if e.result != rewrite::EntryResult::Rewritten || e.error.is_some() {
            let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
            if rows.len() < ROWS {
                rows.push(e.clone());
            } else {
                self.more_rows.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Progress on a bar; the plan and the backup on stderr; the entries to a [`Listing`].
struct Progress {
    bar: ProgressBar,
    listing: Listing,
}

impl Observer for Progress {
    fn total(&self, n: u64) {
        self.bar.set_length(n);
    }
    fn entry(&self, e: &RewriteEntry) {
        self.bar.inc(1);
        self.listing.entry(e);
    }
    fn space(&self, plan: &SpacePlan) {
        self.bar.suspend(|| eprint!("{}", describe_space(plan)));
    }
    fn space_refused(&self, why: &SpaceError) {
        self.bar
            .suspend(|| eprintln!("A real run would refuse: {why}\nhint: {}", why.advice()));
    }
    fn backup(&self, path: &Path, bytes: u64) {
        self.bar.suspend(|| {
            eprintln!(
                "Backup: {} ({bytes} bytes) saved before any write.",
                path.display()
            )
        });
    }
}

/// Runs `atrest rewrite`.
pub(crate) async fn run(args: RewriteArgs, format: Option<OutputFormat>) -> Result<Exit, CliError> {
    let mut args = args;
    let (config, kine_db) =
        super::k3s_paths(&args.store, args.config.as_deref(), args.kine_db.as_deref());
    args.kine_db = kine_db;
    let config = config.ok_or_else(|| CliError::usage("--config FILE is required"))?;
    check_usage(&args)?;
    let target = super::target(
        Some(&config),
        args.prefix.as_deref(),
        &args.resource,
        &args.etcd_prefix,
        &args.kms,
    )?;
    if let Some(out) = &args.out {
        return offline(&target, out, &args, format).await;
    }
    let store = super::open_store(&args.store, None, None).await?;
    let kine = store.live().is_some_and(|s| s.is_kine());
    // The apiserver gate runs in the library, before the first write.
    let gate = super::apiservers::resolve_gate(&args.gate, args.store.kubeadm).await?;
    if let (Some(warning), false) = (gate.warning(), args.dry_run) {
        eprintln!("{warning}");
    }
    let apiserver_gate = Some(atrest::apiserver::gate::GateCheck {
        gate,
        file_bytes: super::apiservers::read_config(&config)?,
    });
    let opts = RewriteOptions {
        concurrency: args.concurrency,
        dry_run: args.dry_run,
        allow_decrypt: args.allow_decrypt,
        compact_every: args.compact_every,
        max_db_fraction: args.max_db_fraction,
        quota_bytes: args.quota_bytes,
        backup: args.backup.clone(),
        overwrite_backup: args.force,
        compact: args.compact,
        apiserver_gate,
        // Entries are streamed (JSON) or kept up to a bound (table) by the observer.
        list_entries: false,
        ..RewriteOptions::default()
    };
    let format = output::format(format);
    if format == OutputFormat::Prometheus {
        return Err(output::no_prometheus());
    }
    let bar = Progress {
        bar: output::progress(if args.dry_run {
            "planning"
        } else {
            "rewriting"
        }),
        listing: Listing::new(format)?,
    };
    let shutdown = async {
        // Ctrl-C: finish the transactions in flight, start no new ones.
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = rewrite::rewrite(&store, &target, &opts, &bar, shutdown).await;
    if let Some(live) = store.live() {
        warn_failover(live);
    }
    let report = report.map_err(rewrite_error)?;
    bar.bar.finish_and_clear();
    if !args.dry_run {
        note_aesgcm_encryptions(target.chains());
    }
    let mut listing = bar.listing;
    match (listing.json.take(), target.by_resource().is_some()) {
        (Some(json), true) => json.finish(&report)?,
        (Some(json), false) => json.finish(&report.all)?,
        (None, _) => {
            let (rows, more) = listing.into_rows();
            output::print(&render(&report, &rows, more, &args, kine))?
        }
    }
    Ok(match report.all.verdict() {
        atrest::audit::Verdict::Clean => Exit::Clean,
        atrest::audit::Verdict::Findings | atrest::audit::Verdict::Empty => Exit::Findings,
    })
}

/// Says on stderr how many values each aesgcm key encrypted in this run: the Kubernetes
/// documentation says such a key "must be rotated every 200k writes" (random nonces).
fn note_aesgcm_encryptions(chains: &[atrest::Chain]) {
    let mut by_key: std::collections::BTreeMap<(usize, usize, usize), (&str, u64)> =
        std::collections::BTreeMap::new();
    for entry in chains.iter().flat_map(|c| c.entries()) {
        if let atrest::provider::Provider::Aesgcm(gcm) = &entry.provider {
            let slot = by_key.entry(entry.origin).or_insert((gcm.name(), 0));
            slot.1 += gcm.encryptions();
        }
    }
    for ((i, j, k), (name, n)) in by_key {
        if n > 0 {
            eprintln!(
                "note: aesgcm key {name:?} (resources[{i}].providers[{j}].aesgcm.keys[{k}]) \
                 encrypted {n} values in this run; the Kubernetes documentation says an aesgcm \
                 key must be rotated every 200k writes (kube-apiserver's own writes count too)"
            );
        }
    }
}

/// The argument checks clap cannot make, before anything is read.
fn check_usage(args: &RewriteArgs) -> Result<(), CliError> {
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
    if args.out.is_some() && args.snapshot.is_none() && args.kine_db.is_none() {
        return Err(CliError::usage(
            "--out is for offline rewrites: pass --snapshot IN or --kine-db IN",
        ));
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
    Ok(())
}

fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
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
            "Growth: this rewrite writes {}, about {} (new revisions and bbolt \
             overhead): {} projected.\n",
            output::count(p.estimate.entries, "entry", "entries"),
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
fn rewrite_error(e: RewriteError) -> CliError {
    match &e {
        // A local file problem (exit 2), with the OS's reason.
        RewriteError::Backup { path, source }
            if matches!(**source, StoreError::Etcd(EtcdError::Backup { .. })) =>
        {
            let StoreError::Etcd(EtcdError::Backup { source, .. }) = &**source else {
                unreachable!("matched above")
            };
            return CliError::io(
                &format!("cannot write the backup {}", path.display()),
                std::io::Error::new(source.kind(), source.to_string()),
            )
            .advice(e.advice());
        }
        RewriteError::BackupOnKine { .. } => {
            return CliError::usage(e.to_string()).advice(e.advice());
        }
        _ => {}
    }
    let e = match e {
        RewriteError::Apiserver(e) => return super::apiservers::gate_error(e),
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

/// `atrest rewrite --snapshot IN --out OUT` / `--kine-db IN --out OUT`.
async fn offline(
    target: &Target,
    out: &Path,
    args: &RewriteArgs,
    format: Option<OutputFormat>,
) -> Result<Exit, CliError> {
    if out.symlink_metadata().is_ok() && !args.force {
        return Err(CliError::usage(format!("{} already exists", out.display()))
            .advice("pass --force to replace it, or choose another --out"));
    }
    let kine = args.kine_db.is_some();
    let flag = if kine { "--kine-db" } else { "--snapshot" };
    let input = args.snapshot.as_deref().or(args.kine_db.as_deref());
    if args.dry_run {
        return Err(CliError::usage(format!(
            "--dry-run is for live rewrites; audit the {flag} file instead"
        ))
        .advice(format!(
            "atrest audit {flag} {} --config FILE",
            input
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default()
        )));
    }
    let store = super::open_store(
        &args.store,
        args.snapshot.as_deref(),
        args.kine_db.as_deref(),
    )
    .await?;
    let format = output::format(format);
    if format == OutputFormat::Prometheus {
        return Err(output::no_prometheus());
    }
    let mut listing = Listing::new(format)?;
    let s = rewrite_copy(
        &store,
        out,
        args.force,
        target,
        args.allow_decrypt,
        &listing,
    )
    .await
    .map_err(|e| match e {
        OfflineError::Store(e) => CliError::from(e),
        other => CliError::usage(other.to_string()).advice(other.advice()),
    })?;
    match listing.json.take() {
        Some(json) => json.finish(&s)?,
        None => {
            let (rows, more) = listing.into_rows();
            output::print(&render_offline(&s, &rows, more, kine))?
        }
    }
    Ok(match s.verdict() {
        atrest::audit::Verdict::Clean => Exit::Clean,
        atrest::audit::Verdict::Findings | atrest::audit::Verdict::Empty => Exit::Findings,
    })
}

/// The table of an offline rewrite: the counts, the audit of the new file, and `left`, the
/// first [`ROWS`] entries it did not rewrite (and how many `more` there are; `-o json` lists
/// every one).
fn render_offline(
    s: &atrest::rewrite::offline::OfflineSummary,
    left: &[RewriteEntry],
    more: u64,
    kine: bool,
) -> String {
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
    let a = &s.after;
    text += &format!(
        "An audit of the new file with this config: {} entries, {} current, {} plaintext{}, {} stale, {} unreadable; {} of resources the config does not cover (left as they were).\n",
        a.total,
        a.current,
        a.plaintext,
        if s.after_plaintext_by_config > 0 {
            format!(" ({} as the config asks: identity)", s.after_plaintext_by_config)
        } else {
            String::new()
        },
        a.stale,
        a.unknown_key + a.undecryptable,
        s.after_not_covered,
    );
    text += &format!(
        "Older revisions: {} rewritten, {} left as they were (not readable, or no verified new value); in the new file {} plaintext and {} stale remain; free-page residue: {}.\n",
        s.history_rewritten,
        s.history_left,
        s.after_history.plaintext,
        s.after_history.stale,
        s.after_residue
    );
    if !left.is_empty() {
        text += &format!("{}\n", entry_table(left, more, "why"));
    }
    if s.verdict() != atrest::audit::Verdict::Clean {
        text +=
            &format!(
            "Not everything is current: {} {}; `atrest audit {} {} --config FILE` lists them.\n",
            s.after_findings + a.stale,
            if s.after_findings + a.stale == 1 { "entry is left" } else { "entries are left" },
            if kine { "--kine-db" } else { "--snapshot" },
            s.output
        );
    }
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
    text
}

/// The rows of entries that were not rewritten a table lists; `-o json` lists every one.
const ROWS: usize = 50;

/// One row per entry of `rows` (key, state, result and `why`, the error), then "…and `more`
/// more" when the table stopped at [`ROWS`].
fn entry_table(rows: &[RewriteEntry], more: u64, why: &str) -> comfy_table::Table {
    let mut t = output::table();
    t.set_header(vec!["key", "state", "result", why]);
    for e in rows {
        t.add_row(vec![
            output::escape(&e.key).into_owned(),
            e.from.to_string(),
            e.result.to_string(),
            output::escape(e.error.as_deref().unwrap_or_default()).into_owned(),
        ]);
    }
    if more > 0 {
        t.add_row(vec![
            format!("…and {more} more (-o json lists every entry)"),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    t
}

fn render(
    summary: &RewriteReport,
    notable: &[RewriteEntry],
    more: u64,
    args: &RewriteArgs,
    kine: bool,
) -> String {
    let s = &summary.all;
    let dry = args.dry_run;
    let written = |c: &rewrite::RewriteSummary| if dry { c.would_rewrite } else { c.rewritten };
    let mut t = output::table();
    t.set_header(vec![
        "scanned",
        if dry { "would rewrite" } else { "rewritten" },
        "already current",
        "skipped",
        "conflicts retried",
        "abandoned",
        "failed",
        "deleted",
    ]);
    t.add_row(vec![
        s.scanned.to_string(),
        written(s).to_string(),
        s.already_current.to_string(),
        s.skipped.to_string(),
        s.conflicts_retried.to_string(),
        s.conflicts.to_string(),
        s.failed.to_string(),
        s.deleted.to_string(),
    ]);
    let what = match (&args.prefix, args.resource.as_slice()) {
        (Some(prefix), _) => output::escape(prefix).into_owned(),
        (None, []) => "every resource the config covers".to_owned(),
        (None, names) => names.join(", "),
    };
    let mut out = format!(
        "{} {what} at revision {}\n{t}\n",
        if dry {
            "Dry run of rewrite of"
        } else {
            "Rewrite of"
        },
        s.revision
    );
    if !summary.resources.is_empty() {
        let mut r = output::table();
        r.set_header(vec![
            "resource",
            "scanned",
            if dry { "would rewrite" } else { "rewritten" },
            "already current",
            "skipped",
            "failed",
        ]);
        let empty = summary
            .resources
            .values()
            .filter(|c| c.scanned == 0)
            .count();
        for (name, c) in summary.resources.iter().filter(|(_, c)| c.scanned > 0) {
            r.add_row(vec![
                output::escape(name).into_owned(),
                c.scanned.to_string(),
                written(c).to_string(),
                c.already_current.to_string(),
                c.skipped.to_string(),
                c.failed.to_string(),
            ]);
        }
        out += &format!("\nBy resource:\n{r}\n");
        if empty > 0 {
            out += &format!(
                "({} with no entries not shown; -o json lists every resource.)\n",
                output::count(empty as u64, "covered resource", "covered resources")
            );
        }
    }
    for (name, why) in &summary.left_alone {
        out += &format!("Left alone: {}: {why}.\n", output::escape(name));
    }
    for e in &summary.crd_errors {
        out += &format!(
            "A stored CRD could not be read (its custom resources were not rewritten): {}\n",
            output::escape(e)
        );
    }
    if !notable.is_empty() {
        out += &format!("\n{}\n", entry_table(notable, more, "note"));
    }
    out += &closing_lines(s, args.dry_run, kine);
    out
}

/// What the run did beyond the tables (compactions, an interruption) and what stays exposed
/// after it.
fn closing_lines(s: &rewrite::RewriteSummary, dry_run: bool, kine: bool) -> String {
    let mut out = String::new();
    if s.compactions > 0 {
        out += &format!(
            "\nProgressive compaction: etcd's history was compacted {} times during the run, to stay under the space quota.\n",
            s.compactions
        );
    }
    if s.interrupted {
        out += "\nInterrupted: the transactions in flight were finished; run the same command again to complete the job.\n";
    }
    if dry_run {
        out += "\nNothing was written (--dry-run).\n";
    } else if s.rewritten > 0 {
        out += "\nStill exposed after this rewrite:\n";
        match s.compacted_at {
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
