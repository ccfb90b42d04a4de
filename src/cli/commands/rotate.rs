//! `atrest config rotate`: one stage of the documented key rotation, refusing the step that
//! would make stored entries unreadable. The stage and its guards run in the library
//! ([`atrest::rewrite::rotate`]); this file resolves the arguments and renders the result.

use std::collections::BTreeMap;

use atrest::audit::ReportEntry;
use atrest::config::NewProvider;
use atrest::rewrite::rotate::{rotate, RotateError, RotateOptions, Rotation, Stage};

use crate::cli::args::{ConfigRotateArgs, NewProviderArg, OutputFormat, Stage as StageArg};
use crate::cli::output;
use crate::cli::{CliError, Exit};

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
    let done = match rotate(file, &stage, &opts, store.as_ref()).await {
        Ok(done) => done,
        Err(e) => {
            if format == Some(OutputFormat::Json) {
                // A JSON consumer gets a result object for a refusal too.
                output::print_json(&Refused {
                    file: file.display().to_string(),
                    stage: stage.name(),
                    refused: true,
                    error: e.to_string(),
                    blocked: match &e {
                        RotateError::Blocked { blocked, .. } => {
                            blocked.iter().map(|b| b.key.clone()).collect()
                        }
                        _ => Vec::new(),
                    },
                })?;
            }
            return Err(rotate_error(&args, e));
        }
    };
    render(&done, format)?;
    Ok(Exit::Clean)
}

/// What `config rotate -o json` prints when a stage did not run.
#[derive(serde::Serialize)]
struct Refused {
    file: String,
    stage: &'static str,
    refused: bool,
    /// Why (the same text as on stderr).
    error: String,
    /// prune: the keys of the entries that still need a removed key.
    blocked: Vec<String>,
}

/// The summary, lost entries, backup and next step on stderr; the JSON result on stdout.
fn render(r: &Rotation, format: Option<OutputFormat>) -> Result<(), CliError> {
    if !r.lost_entries.is_empty() {
        eprintln!(
            "warning: {} {} no configured key can decrypt name a key this prune removes; \
             without that key they are lost for good:",
            r.lost_entries.len(),
            if r.lost_entries.len() == 1 {
                "entry"
            } else {
                "entries"
            },
        );
        for e in &r.lost_entries {
            eprintln!(
                "  {} ({} key {:?})",
                output::escape(&e.key),
                e.provider.map_or("-", |p| p.as_str()),
                e.key_name.as_deref().unwrap_or("-")
            );
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
        output::print_json(r)?;
    }
    Ok(())
}

/// A stage that did not run: refusals of the guards are exit 1, bad input exit 2, a store that
/// could not be read exit 3.
fn rotate_error(args: &ConfigRotateArgs, e: RotateError) -> CliError {
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
        RotateError::Blocked { blocked, .. } => {
            let mut err = CliError::usage(message);
            err.code = 1;
            for line in blocked_by_key(&blocked) {
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
fn blocked_by_key(blocked: &[ReportEntry]) -> Vec<String> {
    let mut by_key: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for e in blocked {
        let key = match (&e.provider, &e.key_name) {
            (Some(p), Some(k)) => format!("{p} key {k:?}"),
            _ => e.state.to_string(),
        };
        *by_key
            .entry(key)
            .or_default()
            .entry(e.namespace.as_deref().unwrap_or("-").to_owned())
            .or_default() += 1;
    }
    by_key
        .into_iter()
        .map(|(key, namespaces)| {
            let total: usize = namespaces.values().sum();
            let list: Vec<String> = namespaces
                .iter()
                .map(|(ns, n)| format!("{}: {n}", output::escape(ns)))
                .collect();
            format!("{total} under {key} (namespaces {})", list.join(", "))
        })
        .collect()
}
