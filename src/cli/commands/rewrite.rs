//! `atrest rewrite`: re-encrypt plaintext and stale entries in place, safely.

use atrest::offline::{rewrite_snapshot, OfflineError};
use atrest::rewrite::{self, Observer, RewriteEntry, RewriteOptions, RewriteSummary};
use atrest::store::snapshot::Snapshot;
use atrest::store::{ReadStore, WriteStore};
use indicatif::ProgressBar;

use super::audit::connect;
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
    let chain = load_chain(&args.config, &args.prefix, &args.kms)?;
    if args.concurrency == 0 {
        return Err(CliError::usage("--concurrency must be at least 1"));
    }
    if let (Some(input), Some(out)) = (&args.snapshot, &args.out) {
        return offline(&chain, input, out, &args, format).await;
    }
    let store = connect(&args.store).await?;
    if let Some(path) = &args.backup {
        if !args.dry_run {
            let size = store.backup(path).await.map_err(|e| {
                CliError::store(format!("backup to {} failed: {e}", path.display()))
                    .advice("nothing was written; fix the backup path or drop --backup")
            })?;
            eprintln!(
                "Backup: {} ({size} bytes) saved before any write.",
                path.display()
            );
        }
    }
    let opts = RewriteOptions {
        prefix: args.prefix.as_bytes().to_vec(),
        concurrency: args.concurrency,
        dry_run: args.dry_run,
        allow_decrypt: args.allow_decrypt,
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
    let summary = rewrite::apply(&store, &chain, &opts, &bar, shutdown)
        .await
        .map_err(|e| {
            let advice = e.advice();
            CliError::store(e.to_string()).advice(advice)
        })?;
    bar.0.finish_and_clear();

    let mut compacted = None;
    if args.compact && !args.dry_run && !summary.interrupted {
        let page = store.page(args.prefix.as_bytes(), None, None).await?;
        store.compact(page.revision).await?;
        compacted = Some(page.revision);
    }

    match output::format(format) {
        OutputFormat::Prometheus => return Err(output::no_prometheus()),
        OutputFormat::Json => output::print_json(&summary)?,
        OutputFormat::Table => output::print(&render(&summary, &args, compacted))?,
    }
    Ok(match summary.verdict() {
        atrest::audit::Verdict::Clean => Exit::Clean,
        atrest::audit::Verdict::Findings => Exit::Findings,
    })
}

async fn offline(
    chain: &atrest::transform::Chain,
    input: &std::path::Path,
    out: &std::path::Path,
    args: &RewriteArgs,
    format: Option<OutputFormat>,
) -> Result<Exit, CliError> {
    if out.exists() && !args.force {
        return Err(CliError::usage(format!("{} already exists", out.display()))
            .advice("pass --force to replace it, or choose another --out"));
    }
    let snap = Snapshot::open(input).map_err(atrest::store::StoreError::from)?;
    if args.dry_run {
        return Err(
            CliError::usage("--dry-run is for live rewrites; audit the snapshot instead").advice(
                format!("atrest audit --snapshot {} --config FILE", input.display()),
            ),
        );
    }
    let s = rewrite_snapshot(
        &snap,
        out,
        chain,
        args.prefix.as_bytes(),
        args.allow_decrypt,
    )
    .await
    .map_err(|e| match e {
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
            text += &format!(
                "Restore it with: etcdctl snapshot restore {} --data-dir <new dir>\n",
                s.output
            );
            output::print(&text)?;
        }
    }
    Ok(match s.verdict() {
        atrest::audit::Verdict::Clean => Exit::Clean,
        atrest::audit::Verdict::Findings => Exit::Findings,
    })
}

fn render(s: &RewriteSummary, args: &RewriteArgs, compacted: Option<i64>) -> String {
    let mut t = output::table();
    t.set_header(vec![
        "scanned",
        "rewritten",
        "already current",
        "skipped",
        "conflicts",
        "failed",
        "deleted",
    ]);
    t.add_row(vec![
        s.scanned.to_string(),
        s.rewritten.to_string(),
        s.already_current.to_string(),
        s.skipped.to_string(),
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
        args.prefix,
        s.revision
    );
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
        out += "  - the old bytes stay in etcd's database file until `etcdctl defrag` on every member,\n    and in every earlier backup or snapshot.\n";
    }
    out
}
