//! `atrest config rotate`: one stage of the documented key rotation, refusing the step that
//! would make stored entries unreadable.

use std::collections::BTreeMap;
use std::path::Path;

use atrest::audit::unreadable_after;
use atrest::config::{self, Config, NewProvider};
use atrest::provider::Provider;
use atrest::store::snapshot::Snapshot;
use atrest::transform::Chain;

use super::audit::connect;
use crate::cli::args::{ConfigRotateArgs, NewProviderArg, Stage};
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

/// Runs `atrest config rotate`.
pub(crate) async fn run(args: ConfigRotateArgs) -> Result<Exit, CliError> {
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
            (
                format!("Promoted key {name:?}: new writes will be encrypted with it."),
                format!(
                    "Next: copy {0} to every control-plane node and restart every kube-apiserver, then re-encrypt what is stored: atrest rewrite --config {0}. Then: atrest config rotate {0} --stage prune",
                    file.display()
                ),
            )
        }
        Stage::Prune => {
            let removed = config::prune(&mut model, &args.resource).map_err(rotate_err)?;
            if removed.is_empty() {
                eprintln!("Nothing to prune: only the write key is left.");
                return Ok(Exit::Clean);
            }
            let after_config = Config::from_model(model.clone())?;
            let after = chain_for(&after_config, &args.resource, file)?;
            let prefix = args.prefix.as_bytes();
            let blocked = match &args.snapshot {
                Some(path) => {
                    let snap = Snapshot::open(path).map_err(atrest::store::StoreError::from)?;
                    unreadable_after(&snap, &before, &after, prefix).await?
                }
                None => {
                    let store = connect(&args.store).await?;
                    unreadable_after(&store, &before, &after, prefix).await?
                }
            };
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
                        .entry(e.namespace.clone().unwrap_or_else(|| "-".into()))
                        .or_default() += 1;
                }
                let mut err = CliError::usage(format!(
                    "refusing to prune: {} entries under {} are still encrypted with keys it would remove",
                    blocked.len(),
                    args.prefix
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
            (
                format!(
                    "Pruned {} key(s): {}. No entry under {} needs them.",
                    removed.len(),
                    removed.join(", "),
                    args.prefix
                ),
                "Next: copy the file to every control-plane node and restart every kube-apiserver. Backups and snapshots taken before the rewrite still need the old keys: keep them somewhere safe.".to_owned(),
            )
        }
    };

    // Check the result exactly as a loaded file would be, then write it.
    Config::from_model(model.clone())?;
    let yaml = zeroize::Zeroizing::new(config::to_yaml(&model)?);
    if !args.no_backup {
        let mut bak = file.as_os_str().to_owned();
        bak.push(".bak");
        config::write_atomic(Path::new(&bak), &old_text, true)?;
    }
    config::write_atomic(file, yaml.as_bytes(), true)?;
    eprintln!("{summary}");
    if !args.no_backup {
        eprintln!(
            "The previous file is kept as {}.bak (mode 0600).",
            file.display()
        );
    }
    eprintln!("{next}");
    Ok(Exit::Clean)
}
