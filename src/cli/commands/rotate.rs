//! `atrest config rotate`: one stage of the documented key rotation, refusing the step that
//! would make stored entries unreadable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use atrest::audit::{prune_check, prune_check_resources, PruneCheck};
use atrest::config::{self, Config, NewProvider};
use atrest::provider::Provider;
use atrest::resource::{ResourceChains, Scope};
use atrest::store::snapshot::Snapshot;
use atrest::store::ReadStore;
use atrest::transform::{Chain, KmsOptions};
use serde::Serialize;

use super::audit::connect;
use crate::cli::args::{ConfigRotateArgs, NewProviderArg, OutputFormat, Stage};
use crate::cli::output;
use crate::cli::{CliError, Exit};

fn chain_for(config: &Config, resource: &str, file: &Path) -> Result<Chain, CliError> {
    let (group, resource) = config::parse_group_resource(resource);
    Chain::from_config(config, group, resource)
        .map_err(|e| CliError::usage(format!("{}: {e}", file.display())))
}

/// The key `add` put second: the second chain entry, if it is a keyed provider, or the kms
/// provider `add --provider kms` put second. `None` when there is none, or when both a second
/// local key and a second-place kms provider exist (then `--key-name` must say which).
fn added_key(chain: &Chain) -> Option<String> {
    let entry = chain.entries().get(1)?;
    let kms_second = chain
        .entries()
        .iter()
        .any(|e| e.origin.1 == 1 && matches!(e.provider, Provider::Kms(_)));
    match &entry.provider {
        Provider::Kms(k) => Some(k.name().to_owned()),
        _ if kms_second => None,
        Provider::Aescbc(_) | Provider::Aesgcm(_) | Provider::Secretbox(_) => {
            entry.provider.key_name().map(str::to_owned)
        }
        _ => None,
    }
}

/// What `config rotate -o json` prints: the stage's result, never key material.
#[derive(Serialize)]
struct RotateReport {
    file: String,
    stage: &'static str,
    /// add: the new key; promote: the key made the write key.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_name: Option<String>,
    /// prune: the keys removed.
    removed: Vec<String>,
    /// prune: entries no key reads that named a removed key (lost with it).
    lost: Vec<String>,
    /// The copy of the previous file, when one was kept.
    backup: Option<String>,
    summary: String,
    next: String,
    /// promote and prune: the apiserver gate's outcome (`passed: …` or `skipped: …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    apiserver_check: Option<String>,
}

/// Runs `atrest config rotate`.
pub(crate) async fn run(
    args: ConfigRotateArgs,
    format: Option<OutputFormat>,
) -> Result<Exit, CliError> {
    let file = args.file.as_path();
    // Loaded first: it refuses an oversized file before anything reads all of it.
    let config =
        Config::load(file).map_err(|e| super::invalid_config(&file.display().to_string(), &e))?;
    // The file as it was, for FILE.bak; it holds keys, so it is wiped when dropped.
    let old_text = zeroize::Zeroizing::new(
        std::fs::read(file).map_err(|e| CliError::io(&file.display().to_string(), e))?,
    );
    let before = chain_for(&config, &args.resource, file)?;
    let mut model = config.model().clone();
    let rotate_err = |e: config::RotateError| CliError::usage(format!("{}: {e}", file.display()));

    // Keys `add` marked as not promoted yet (comments at the top of the file).
    let pending: Vec<String> = config::pending_adds(&String::from_utf8_lossy(&old_text));
    let mut markers = String::new();
    if args.discard_new && args.stage != Stage::Prune {
        return Err(CliError::usage("--discard-new is only for --stage prune"));
    }
    let mut report = RotateReport {
        file: file.display().to_string(),
        stage: match args.stage {
            Stage::Add => "add",
            Stage::Promote => "promote",
            Stage::Prune => "prune",
        },
        key_name: None,
        removed: Vec::new(),
        lost: Vec::new(),
        backup: None,
        summary: String::new(),
        next: String::new(),
        apiserver_check: None,
    };
    let (summary, next) = match args.stage {
        Stage::Add if args.provider == Some(NewProviderArg::Kms) => {
            let kms = super::new_kms(&args.kms)?;
            let at = config::add_kms(&mut model, &args.resource, &kms).map_err(rotate_err)?;
            (
                format!(
                    "Added kms provider {:?} (apiVersion v2, {}) in second position (providers[{at}]).",
                    kms.name, kms.endpoint
                ),
                format!(
                    "Next: run the KMS plugin on every control-plane node, copy {0} there and restart (or let reload) every kube-apiserver, so all of them can read {1:?}. Then: atrest config rotate {0} --stage promote --key-name {1}",
                    file.display(),
                    kms.name
                ),
            )
        }
        Stage::Add => {
            let provider = args.provider.map(|p| match p {
                NewProviderArg::Aescbc | NewProviderArg::Kms => NewProvider::Aescbc,
                NewProviderArg::Aesgcm => NewProvider::Aesgcm,
                NewProviderArg::Secretbox => NewProvider::Secretbox,
            });
            let added =
                config::add_key(&mut model, &args.resource, args.key_name.clone(), provider)
                    .map_err(rotate_err)?;
            markers = config::keep_markers(&String::from_utf8_lossy(&old_text), &[]);
            markers.push_str(&config::pending_marker(&added.key_name, &args.resource));
            report.key_name = Some(added.key_name.clone());
            (
                format!(
                    "Added {} key {:?} in second position (resources[{}].providers[{}]{}).",
                    added.provider.as_str(),
                    added.key_name,
                    added.resources_index,
                    added.providers_index,
                    if added.new_element { ", a new provider element" } else { "" }
                ),
                format!(
                    "Next: copy {0} to every control-plane node and restart (or let reload) every kube-apiserver, so all of them can read {1:?}. Then: atrest config rotate {0} --stage promote --key-name {1}",
                    file.display(),
                    added.key_name
                ),
            )
        }
        Stage::Promote => {
            let name = match args.key_name.clone().or_else(|| added_key(&before)) {
                Some(n) => n,
                None => return Err(CliError::usage(
                    "cannot tell which key to promote: there is no second key, or there are both a second local key and a kms provider",
                ).advice("pass --key-name NAME (the key or kms provider `--stage add` printed), or run `--stage add` first")),
            };
            config::promote(&mut model, &args.resource, &name).map_err(rotate_err)?;
            markers = config::keep_markers(&String::from_utf8_lossy(&old_text), &[&name]);
            report.key_name = Some(name.clone());
            (
                format!("Promoted key {name:?}: new writes will be encrypted with it."),
                format!(
                    "Next: copy {0} to every control-plane node and restart every kube-apiserver, then re-encrypt what is stored: atrest rewrite --config {0}. Then: atrest config rotate {0} --stage prune",
                    file.display()
                ),
            )
        }
        Stage::Prune => {
            let write_key = before.entries().first().and_then(|e| e.provider.key_name());
            let unpromoted: Vec<&String> = pending
                .iter()
                .filter(|name| {
                    Some(name.as_str()) != write_key
                        && before
                            .entries()
                            .iter()
                            .any(|e| e.provider.key_name() == Some(name.as_str()))
                })
                .collect();
            if let (Some(name), false) = (unpromoted.first(), args.discard_new) {
                let mut err = CliError::usage(format!(
                    "refusing to prune: key {name:?} was added but never promoted, and pruning \
                     would remove it"
                ));
                err.code = 1;
                return Err(err.advice(format!(
                    "run `atrest config rotate {0} --stage promote --key-name {name}` (then \
                     rewrite), or `atrest config rotate {0} --stage prune --discard-new` to undo \
                     the add",
                    file.display()
                )));
            }
            let removed = config::prune(&mut model, &args.resource).map_err(rotate_err)?;
            if removed.is_empty() {
                report.summary = "Nothing to prune: only the write key is left.".to_owned();
                eprintln!("{}", report.summary);
                if format == Some(OutputFormat::Json) {
                    output::print_json(&report)?;
                }
                return Ok(Exit::Clean);
            }
            let after_config = Config::from_model(model.clone())?;
            let after = chain_for(&after_config, &args.resource, file)?;
            let (_, kine_db) = super::k3s_paths(&args.store, None, args.kine_db.as_deref());
            // Without --prefix: every resource the config covers (the edited element may serve
            // several), each read with its own chain before and after.
            let by_resource = match &args.prefix {
                Some(_) => None,
                None => {
                    let chains = |c: Config| {
                        ResourceChains::new(c, &KmsOptions::default())
                            .map_err(|e| CliError::usage(format!("{}: {e}", file.display())))
                    };
                    let before_all = chains(config.clone())?;
                    let after_all = chains(after_config.clone())?;
                    let scope = Scope::from_config(before_all.config(), &args.etcd_prefix, &[]);
                    Some((before_all, after_all, scope))
                }
            };
            let prefix = args.prefix.as_deref().unwrap_or_default().as_bytes();
            let PruneCheck { blocked, lost } = match (&args.snapshot, &kine_db) {
                (None, Some(path)) => {
                    let db = super::open_kine(path)?;
                    guard(&db, &by_resource, &before, &after, prefix).await?
                }
                (Some(path), _) => {
                    let snap = Snapshot::open(path).map_err(atrest::store::StoreError::from)?;
                    guard(&snap, &by_resource, &before, &after, prefix).await?
                }
                (None, None) => {
                    let store = connect(&args.store).await?;
                    guard(&store, &by_resource, &before, &after, prefix).await?
                }
            };
            let under = args
                .prefix
                .clone()
                .unwrap_or_else(|| "the resources the config covers".to_owned());
            if !blocked.is_empty() {
                let mut by_key: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
                for e in &blocked {
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
                let mut err = CliError::usage(format!(
                    "refusing to prune: {} {} of {} {} still encrypted with keys it would remove",
                    blocked.len(),
                    plural(blocked.len(), "entry", "entries"),
                    under,
                    plural(blocked.len(), "is", "are"),
                ));
                err.code = 1;
                for (key, namespaces) in by_key {
                    let total: usize = namespaces.values().sum();
                    let list: Vec<String> = namespaces
                        .iter()
                        .map(|(ns, n)| format!("{ns}: {n}"))
                        .collect();
                    err = err.detail(format!(
                        "{total} under {key} (namespaces {})",
                        list.join(", ")
                    ));
                }
                return Err(err.advice(format!(
                    "re-encrypt them first: atrest rewrite --config {}",
                    file.display()
                )));
            }
            if !lost.is_empty() {
                eprintln!(
                    "warning: {} {} of {} no configured key can decrypt name a key this prune \
                     removes; without that key they are lost for good:",
                    lost.len(),
                    plural(lost.len(), "entry", "entries"),
                    under
                );
                for e in &lost {
                    eprintln!(
                        "  {} ({} key {:?})",
                        e.key,
                        e.provider.map_or("-", |p| p.as_str()),
                        e.key_name.as_deref().unwrap_or("-")
                    );
                }
            }
            report.lost = lost.iter().map(|e| e.key.clone()).collect();
            report.removed = removed.clone();
            (
                format!(
                    "Pruned {} {}: {}. No readable entry of {} needs {}.",
                    removed.len(),
                    plural(removed.len(), "key", "keys"),
                    removed.join(", "),
                    under,
                    plural(removed.len(), "it", "them"),
                ),
                "Next: copy the file to every control-plane node and restart every kube-apiserver. Backups and snapshots taken before the rewrite still need the old keys: keep them somewhere safe.".to_owned(),
            )
        }
    };

    // Check the result exactly as a loaded file would be, then write it.
    Config::from_model(model.clone())?;
    // The apiserver gate, just before the write. promote: every kube-apiserver must run the
    // current file (so all can read the key about to be promoted); prune: the promoted file
    // (so none still writes with a key to remove).
    if matches!(args.stage, Stage::Promote | Stage::Prune) {
        let gate = super::apiservers::resolve_gate(&args.gate, args.store.kubeadm).await?;
        let outcome = gate
            .check(&old_text)
            .await
            .map_err(super::apiservers::gate_error)?;
        if let Some(warning) = outcome.warning() {
            eprintln!("{warning}");
        }
        report.apiserver_check = Some(outcome.summary());
    }
    let yaml = zeroize::Zeroizing::new(format!("{markers}{}", config::to_yaml(&model)?));
    let backup = if args.no_backup {
        None
    } else {
        Some(keep_previous(file, &old_text)?)
    };
    config::write_atomic(file, yaml.as_bytes(), true).map_err(|e| super::write_error(file, e))?;
    eprintln!("{summary}");
    if let Some(bak) = &backup {
        eprintln!(
            "The previous file is kept as {} (mode 0600).",
            bak.display()
        );
    }
    eprintln!("{next}");
    if format == Some(OutputFormat::Json) {
        report.backup = backup.map(|b| b.display().to_string());
        report.summary = summary;
        report.next = next;
        output::print_json(&report)?;
    }
    Ok(Exit::Clean)
}

/// The prune guard: of one prefix with the edited resource's chains, or (`by_resource`) of every
/// resource the config covers, each with its own chains before and after.
async fn guard<S: ReadStore + Sync>(
    store: &S,
    by_resource: &Option<(ResourceChains, ResourceChains, Scope)>,
    before: &Chain,
    after: &Chain,
    prefix: &[u8],
) -> Result<PruneCheck, atrest::store::StoreError> {
    match by_resource {
        None => prune_check(store, before, after, prefix).await,
        Some((b, a, scope)) => prune_check_resources(store, b, a, scope).await,
    }
}

/// `one` or `many` for a count.
fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Keeps the file as it was before this stage as `FILE.bak.N`, N one more than the highest
/// kept so far: every stage of a rotation leaves its own copy (each holds keys: mode 0600).
fn keep_previous(file: &Path, old_text: &[u8]) -> Result<PathBuf, CliError> {
    let target = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = target.parent().unwrap_or(Path::new("."));
    let prefix = format!("{name}.bak.");
    let highest = std::fs::read_dir(dir)
        .map_err(|e| CliError::io(&dir.display().to_string(), e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    for n in highest + 1..highest + 100 {
        let bak = dir.join(format!("{prefix}{n}"));
        match config::write_atomic(&bak, old_text, false) {
            Ok(()) => return Ok(bak),
            // Another rotation took this number meanwhile: try the next.
            Err(config::ConfigError::Exists { .. }) => continue,
            Err(e) => return Err(super::write_error(&bak, e)),
        }
    }
    Err(CliError::usage(format!(
        "cannot find a free FILE.bak.N name beside {}",
        target.display()
    )))
}
