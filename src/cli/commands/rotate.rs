//! `atrest config rotate`: one stage of the documented key rotation, refusing the step that
//! would make stored entries unreadable. The stage and its guards run in the library
//! ([`atrest::rewrite::rotate`]); this file resolves the arguments and renders the result.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use atrest::audit::{PruneObserver, ReportEntry, SchemaVersion};
use atrest::config::NewProvider;
use atrest::rewrite::rotate::{rotate, RotateError, RotateOptions, Rotation, Stage};

use crate::cli::args::{ConfigRotateArgs, NewProviderArg, OutputFormat, Stage as StageArg};
use crate::cli::output;
use crate::cli::stream::{JsonEntries, Spool};
use crate::cli::{CliError, Exit};

/// What the prune guard found, entry by entry: each blocked entry counted by the key it needs
/// and its namespace (the refusal's lines), and with `-o json` the etcd keys of every blocked
/// and every lost entry, spooled to disk until it is known which document lists them (the
/// result lists the lost ones, a refusal the blocked ones).
struct Guarded {
    by_key: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// Blocked, then lost.
    spools: Option<(Spool, Spool)>,
}

impl PruneObserver for Guarded {
    fn blocked(&self, e: &ReportEntry) {
        let key = match (&e.provider, &e.key_name) {
            (Some(p), Some(k)) => format!("{p} key {k:?}"),
            _ => e.state.to_string(),
        };
        *self
            .by_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .entry(e.namespace.as_deref().unwrap_or("-").to_owned())
            .or_default() += 1;
        if let Some((blocked, _)) = &self.spools {
            blocked.push(&e.key);
        }
    }

    fn lost(&self, e: &ReportEntry) {
        if let Some((_, lost)) = &self.spools {
            lost.push(&e.key);
        }
    }
}

/// Runs `atrest config rotate`.
pub(crate) async fn run(
    args: ConfigRotateArgs,
    format: Option<OutputFormat>,
) -> Result<Exit, CliError> {
    let file = args.file.as_path();
    if args.discard_new && args.stage != StageArg::Prune {
        return Err(CliError::usage("--discard-new is only for --stage prune"));
    }
    let stage = match args.stage {
        StageArg::Add if args.provider == Some(NewProviderArg::Kms) => {
            Stage::AddKms(super::new_kms(&args.kms)?)
        }
        StageArg::Add => Stage::Add {
            key_name: args.key_name.clone(),
            provider: args.provider.map(|p| match p {
                NewProviderArg::Aescbc | NewProviderArg::Kms => NewProvider::Aescbc,
                NewProviderArg::Aesgcm => NewProvider::Aesgcm,
                NewProviderArg::Secretbox => NewProvider::Secretbox,
            }),
        },
        StageArg::Promote => Stage::Promote {
            key_name: args.key_name.clone(),
        },
        StageArg::Prune => Stage::Prune {
            discard_new: args.discard_new,
        },
    };
    let mut opts = RotateOptions {
        resource: args.resource.clone(),
        keep_backup: !args.no_backup,
        prefix: args.prefix.clone(),
        etcd_prefix: args.etcd_prefix.clone(),
        apiserver_gate: None,
    };
    // Only prune's guard reads the store.
    let store = match stage {
        Stage::Prune { .. } => {
            let (_, kine_db) = super::k3s_paths(&args.store, None, args.kine_db.as_deref());
            Some(
                super::open_store(&args.store, args.snapshot.as_deref(), kine_db.as_deref())
                    .await?,
            )
        }
        _ => None,
    };
    // promote and prune wait for every kube-apiserver to run the current file (in the library,
    // just before the write).
    // (After the store is open: an unreachable etcd is exit 3 before any API question.)
    opts.apiserver_gate = match stage {
        Stage::Promote { .. } | Stage::Prune { .. } => {
            let gate = super::apiservers::resolve_gate(&args.gate, args.store.kubeadm).await?;
            if let Some(warning) = gate.warning() {
                eprintln!("{warning}");
            }
            Some(gate)
        }
        _ => None,
    };
    let json = format == Some(OutputFormat::Json);
    let guarded = Guarded {
        by_key: Mutex::new(BTreeMap::new()),
        spools: match stage {
            Stage::Prune { .. } if json => Some((Spool::new()?, Spool::new()?)),
            _ => None,
        },
    };
    let done = rotate(file, &stage, &opts, store.as_ref(), &guarded).await;
    let by_key = guarded
        .by_key
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let (blocked, lost) = guarded.spools.unzip();
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            if json {
                // A JSON consumer gets a result object for a refusal too.
                print_refused(file, &stage, &e, blocked)?;
            }
            return Err(rotate_error(&args, e, by_key));
        }
    };
    render(&done, format, lost)?;
    Ok(Exit::Clean)
}

/// What `config rotate -o json` prints when a stage did not run, before `blocked` (prune: the
/// keys of every entry that still needs a removed key).
#[derive(serde::Serialize)]
struct Refused {
    schema_version: SchemaVersion,
    file: String,
    stage: &'static str,
    refused: bool,
    /// Why (the same text as on stderr).
    error: String,
}

/// The refusal's JSON, `blocked` listing the keys `spool` kept when the guard refused.
fn print_refused(
    file: &std::path::Path,
    stage: &Stage,
    e: &RotateError,
    spool: Option<Spool>,
) -> Result<(), CliError> {
    let head = Refused {
        schema_version: SchemaVersion,
        file: file.display().to_string(),
        stage: stage.name(),
        refused: true,
        error: e.to_string(),
    };
    let json = JsonEntries::named(&head, "blocked")?;
    if let (RotateError::Blocked { .. }, Some(spool)) = (e, spool) {
        spool.replay(&json)?;
    }
    json.finish(&head)
}

/// The fields of [`Rotation`]'s JSON before `lost`.
#[derive(serde::Serialize)]
struct RotationHead<'a> {
    schema_version: SchemaVersion,
    file: &'a str,
    stage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_name: Option<&'a str>,
    removed: &'a [String],
}

/// The stage's JSON: [`Rotation`] with `lost`, the keys `spool` kept, after `removed`.
fn print_rotation(r: &Rotation, spool: Option<Spool>) -> Result<(), CliError> {
    let json = JsonEntries::named(
        &RotationHead {
            schema_version: SchemaVersion,
            file: &r.file,
            stage: r.stage,
            key_name: r.key_name.as_deref(),
            removed: &r.removed,
        },
        "lost",
    )?;
    if let Some(spool) = spool {
        spool.replay(&json)?;
    }
    json.finish(r)
}

/// The summary, lost entries (the first ones), backup and next step on stderr; the JSON result
/// on stdout, listing every lost entry from `lost`.
fn render(r: &Rotation, format: Option<OutputFormat>, lost: Option<Spool>) -> Result<(), CliError> {
    if r.lost_count > 0 {
        eprintln!(
            "warning: {} no configured key can decrypt name a key this prune removes; \
             without that key they are lost for good:",
            output::count(r.lost_count, "entry", "entries"),
        );
        for e in &r.lost_sample {
            eprintln!(
                "  {} ({} key {:?})",
                output::escape(&e.key),
                e.provider.map_or("-", |p| p.as_str()),
                e.key_name.as_deref().unwrap_or("-")
            );
        }
        let more = r.lost_count.saturating_sub(r.lost_sample.len() as u64);
        if more > 0 {
            eprintln!("  …and {more} more (-o json lists every entry)");
        }
    }
    eprintln!("{}", r.summary);
    if let Some(bak) = &r.backup {
        eprintln!("The previous file is kept as {bak} (mode 0600).");
    }
    if !r.next.is_empty() {
        eprintln!("{}", r.next);
    }
    if format == Some(OutputFormat::Json) {
        print_rotation(r, lost)?;
    }
    Ok(())
}

/// A stage that did not run: refusals of the guards are exit 1, bad input exit 2, a store that
/// could not be read exit 3. A prune's refusal lists `by_key`, the blocked entries counted by
/// the key they need and their namespace.
fn rotate_error(
    args: &ConfigRotateArgs,
    e: RotateError,
    by_key: BTreeMap<String, BTreeMap<String, u64>>,
) -> CliError {
    let file = args.file.as_path();
    let advice = e.advice(file);
    let message = e.to_string();
    match e {
        RotateError::Config(e) => match e {
            atrest::config::ConfigError::Exists { .. }
            | atrest::config::ConfigError::Write { .. } => super::write_error(file, e),
            e => super::invalid_config(&file.display().to_string(), &e),
        },
        RotateError::Store(e) => CliError::from(e),
        RotateError::Apiserver(e) => super::apiservers::gate_error(e),
        RotateError::Blocked { .. } => {
            let mut err = CliError::usage(message);
            err.code = 1;
            for line in blocked_by_key(by_key) {
                err = err.detail(line);
            }
            err.advice(advice)
        }
        e => {
            let mut err = CliError::usage(message).advice(advice);
            if e.is_refusal() {
                err.code = 1;
            }
            err
        }
    }
}

/// One line per key the blocked entries need, with their namespaces.
/// Namespaces named on a blocked key's line; the rest are counted.
const NAMESPACES_SHOWN: usize = 10;

/// One line per key the blocked entries need: how many, and in which namespaces (the ten with
/// the most, then how many more: a cluster may have thousands).
fn blocked_by_key(by_key: BTreeMap<String, BTreeMap<String, u64>>) -> Vec<String> {
    by_key
        .into_iter()
        .map(|(key, namespaces)| {
            let total: u64 = namespaces.values().sum();
            let mut shown: Vec<(&String, &u64)> = namespaces.iter().collect();
            if shown.len() > NAMESPACES_SHOWN {
                // The largest first (by name among equals), then back in name order.
                shown.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                shown.truncate(NAMESPACES_SHOWN);
                shown.sort();
            }
            let mut list: Vec<String> = shown
                .iter()
                .map(|(ns, n)| format!("{}: {n}", output::escape(ns)))
                .collect();
            let more = namespaces.len() - shown.len();
            if more > 0 {
                let rest = total - shown.iter().map(|(_, n)| **n).sum::<u64>();
                list.push(format!("…and {more} more with {rest}"));
            }
            format!("{total} under {key} (namespaces {})", list.join(", "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_key_names_its_ten_largest_namespaces_and_counts_the_rest() {
        let few = BTreeMap::from([(
            "aescbc key \"key1\"".to_owned(),
            BTreeMap::from([("b".to_owned(), 2), ("a".to_owned(), 1)]),
        )]);
        assert_eq!(
            blocked_by_key(few),
            ["3 under aescbc key \"key1\" (namespaces a: 1, b: 2)"]
        );
        let many: BTreeMap<String, u64> =
            (0..25u64).map(|i| (format!("ns{i:02}"), i + 1)).collect();
        let lines = blocked_by_key(BTreeMap::from([("k".to_owned(), many)]));
        // 1 + … + 25 = 325; the ten largest are ns15..ns24 (16 + … + 25 = 205).
        assert_eq!(
            lines,
            [
                "325 under k (namespaces ns15: 16, ns16: 17, ns17: 18, ns18: 19, ns19: 20, \
              ns20: 21, ns21: 22, ns22: 23, ns23: 24, ns24: 25, …and 15 more with 120)"
            ]
        );
    }
}
