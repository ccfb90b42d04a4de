//! One file per command.

pub(crate) mod apiservers;
pub(crate) mod audit;
pub(crate) mod check_apiserver;
pub(crate) mod config;
pub(crate) mod crypt;
pub(crate) mod generate;
pub(crate) mod inspect;
pub(crate) mod rewrite;
pub(crate) mod rotate;
pub(crate) mod status;

use std::path::Path;

use atrest::config::{Config, ConfigError, NewKms};
use atrest::resource::{GroupResource, ResourceChains, Target};
use atrest::store::{Store, StoreSpec};
use atrest::transform::{Chain, KmsOptions, TransformError};

use super::args::{KmsArgs, NewKmsArgs, StoreArgs};
use super::CliError;

/// Loads a config file and builds the chain for the resource the prefix names. KMS providers
/// are connected to their plugins unless `--no-kms`, and each plugin must answer `Status`
/// (else exit 3, before anything is read).
pub(crate) fn load_chain(path: &Path, prefix: &str, kms: &KmsArgs) -> Result<Chain, CliError> {
    let config = Config::load(path).map_err(|e| invalid_config(&path.display().to_string(), &e))?;
    let gr = atrest::resource::resource_from_prefix(prefix);
    let options = kms_options(&config, kms)?;
    let chain = Chain::from_config_with_kms(&config, &gr.group, &gr.resource, &options).map_err(
        |e| match e {
            TransformError::Kms(e) => CliError::usage(format!("{}: {e}", path.display())),
            e => CliError::usage(format!("{}: {e}", path.display())).advice(
                "add the resource to the config's `resources` list, or pass the matching --prefix",
            ),
        },
    )?;
    check_kms_plugins(&chain)?;
    Ok(chain)
}

/// The resource prefix an etcd key lives under, by kube-apiserver's key map
/// ([`atrest::resource::split_key`]): `/registry/secrets/default/db` → `/registry/secrets/`,
/// `/registry/services/specs/default/web` → `/registry/services/specs/`,
/// `/registry/example.com/widgets/ns/w` → `/registry/example.com/widgets/`
/// (kube-apiserver's `--etcd-prefix` is one path segment by default).
pub(crate) fn resource_prefix(etcd_key: &str) -> Result<String, CliError> {
    let root = etcd_key
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .map(|(root, _)| format!("/{root}/"))
        .filter(|root| root != "//");
    let info = root
        .as_deref()
        .and_then(|root| atrest::resource::split_key(root, etcd_key.as_bytes()))
        .filter(|info| info.name.is_some());
    match (root, info) {
        (Some(root), Some(info)) => Ok(info.resource.storage_prefix(&root)),
        _ => Err(
            CliError::usage(format!("--etcd-key {etcd_key:?} is not a full etcd key"))
                .advice("pass the key exactly as stored, e.g. /registry/secrets/default/db"),
        ),
    }
}

/// `--provider kms --kms-name NAME --kms-endpoint unix:///PATH` as the library's [`NewKms`].
pub(crate) fn new_kms(args: &NewKmsArgs) -> Result<NewKms, CliError> {
    let (Some(name), Some(endpoint)) = (&args.kms_name, &args.kms_endpoint) else {
        return Err(
            CliError::usage("--provider kms needs --kms-name and --kms-endpoint").advice(
                "e.g. --provider kms --kms-name vault --kms-endpoint unix:///var/run/kmsplugin/socket.sock",
            ),
        );
    };
    if name.is_empty() || name.contains(':') {
        return Err(CliError::usage(format!(
            "--kms-name {name:?}: a KMS v2 provider name must be non-empty and contain no ':'"
        )));
    }
    if atrest::provider::kms::plugin::socket_path(endpoint).is_none() {
        return Err(
            CliError::usage(format!("--kms-endpoint {endpoint:?} is not unix:///PATH"))
                .advice("KMS plugins listen on a unix socket: pass unix:///absolute/path"),
        );
    }
    Ok(NewKms {
        name: name.clone(),
        endpoint: endpoint.clone(),
    })
}

/// Loads a config file and builds the chain of every resource it covers (see
/// [`ResourceChains`]), with KMS plugins checked as [`load_chain`] does.
pub(crate) fn load_chains(path: &Path, kms: &KmsArgs) -> Result<ResourceChains, CliError> {
    let config = Config::load(path).map_err(|e| invalid_config(&path.display().to_string(), &e))?;
    let options = kms_options(&config, kms)?;
    let chains = ResourceChains::new(config, &options)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    for chain in chains.chains() {
        check_kms_plugins(chain)?;
    }
    Ok(chains)
}

/// What a command reads and with which chains: with `--prefix`, that prefix with its resource's
/// chain (or none without a config); else, with a config, every resource it covers (or only the
/// `--resource` names, each of which it must cover) below kube-apiserver's `--etcd-prefix`; with
/// neither, `default_prefix` without a config.
pub(crate) fn target(
    config: Option<&Path>,
    prefix: Option<&str>,
    resources: &[String],
    etcd_prefix: &str,
    kms: &KmsArgs,
) -> Result<Target, CliError> {
    match (config, prefix) {
        (Some(path), None) => {
            let chains = load_chains(path, kms)?;
            let only: Vec<GroupResource> =
                resources.iter().map(|n| GroupResource::parse(n)).collect();
            Target::resources(chains, etcd_prefix, &only).map_err(|e| {
                CliError::usage(format!("{}: {e}", path.display())).advice(
                    "name a resource the config covers, or add it to the config's `resources` list",
                )
            })
        }
        (Some(path), Some(prefix)) => {
            Ok(Target::prefix(prefix, Some(load_chain(path, prefix, kms)?)))
        }
        (None, prefix) => Ok(Target::prefix(prefix.unwrap_or(DEFAULT_PREFIX), None)),
    }
}

/// The prefix read without `--prefix` and without a config.
pub(crate) const DEFAULT_PREFIX: &str = "/registry/secrets/";

/// The store the flags name: `--snapshot FILE`, `--kine-db FILE`, else a live etcd with the
/// etcdctl-style flags (and `--kubeadm`'s defaults).
pub(crate) fn store_spec(
    store: &StoreArgs,
    snapshot: Option<&Path>,
    kine_db: Option<&Path>,
) -> StoreSpec {
    match (snapshot, kine_db) {
        (Some(path), _) => StoreSpec::Snapshot(path.to_owned()),
        (None, Some(path)) => StoreSpec::KineDb(path.to_owned()),
        (None, None) => StoreSpec::Etcd(audit::etcd_options(store)),
    }
}

/// Opens the store the flags name (see [`store_spec`]); failures are exit 3 with advice. A live
/// etcd's members that did not answer at connect time are warned about on stderr.
pub(crate) async fn open_store(
    store: &StoreArgs,
    snapshot: Option<&Path>,
    kine_db: Option<&Path>,
) -> Result<Store, CliError> {
    match store_spec(store, snapshot, kine_db) {
        StoreSpec::Etcd(_) => Ok(Store::Etcd(audit::connect(store).await?)),
        spec => Ok(Store::open(spec).await?),
    }
}

/// `--no-kms` and `--kms-endpoint NAME=unix:///PATH` as library options; every NAME must be a
/// KMS provider of the config.
pub(crate) fn kms_options(config: &Config, kms: &KmsArgs) -> Result<KmsOptions, CliError> {
    let mut options = KmsOptions {
        connect: !kms.no_kms,
        ..KmsOptions::default()
    };
    let names: Vec<&str> = config
        .model()
        .resources
        .iter()
        .flat_map(|r| r.providers.iter())
        .filter_map(|p| p.kms.as_ref().map(|k| k.name.as_str()))
        .collect();
    for spec in &kms.kms_endpoints {
        let Some((name, endpoint)) = spec.split_once('=') else {
            return Err(CliError::usage(format!(
                "--kms-endpoint {spec:?} is not NAME=unix:///PATH"
            ))
            .advice("e.g. --kms-endpoint vault=unix:///mnt/node/var/run/kmsplugin/socket.sock"));
        };
        if !names.contains(&name) {
            return Err(CliError::usage(format!(
                "--kms-endpoint {spec:?}: the config has no kms provider named {name:?}"
            ))
            .advice(format!(
                "use one of the config's kms provider names: {}",
                if names.is_empty() {
                    "(none)".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        }
        if atrest::provider::kms::plugin::socket_path(endpoint).is_none() {
            return Err(CliError::usage(format!(
                "--kms-endpoint {spec:?}: {endpoint:?} is not unix:///PATH"
            ))
            .advice("KMS plugins listen on a unix socket: pass unix:///absolute/path"));
        }
        options
            .endpoints
            .insert(name.to_owned(), endpoint.to_owned());
    }
    Ok(options)
}

/// Asks every connected KMS plugin for its status: one that does not answer is exit 3 (with
/// the provider, socket and what to check); an unhealthy one is a warning (reads may still
/// work; writes are refused by the health gate).
fn check_kms_plugins(chain: &Chain) -> Result<(), CliError> {
    for kms in chain.kms_providers() {
        let Some(result) = kms.status() else {
            continue;
        };
        let status = result.map_err(|e| {
            CliError::store(e.to_string()).advice(
                "start the plugin or fix its socket path (--kms-endpoint NAME=unix:///PATH); \
                 --no-kms audits without it (KMS entries are then only recognised)",
            )
        })?;
        if !status.is_healthy() {
            eprintln!(
                "warning: kms provider {:?}: the plugin reports it is not healthy: {:?}",
                kms.name(),
                status.healthz
            );
        }
    }
    Ok(())
}

const ATREST_LIMIT: &str = "atrest refuses the file to bound its own work (kube-apiserver may \
     accept it): list fewer resource names (wildcards such as '*.apps' cover many) and write the \
     YAML without aliases";

/// The error for a config file that could not be loaded: the file named on the first line, one
/// detail line per problem (each field error of a failed validation, else the error and its
/// causes), and what to do.
pub(crate) fn invalid_config(file: &str, e: &ConfigError) -> CliError {
    let advice = match e {
        ConfigError::Read { .. } | ConfigError::TooLarge { .. } => {
            "check the path: it should name the file given to kube-apiserver's \
             --encryption-provider-config"
        }
        // kube-apiserver reads the first document and ignores the rest (docs/interop.md).
        ConfigError::Parse { message, .. } if message.contains("more than one document") => {
            "kube-apiserver would read only the first document and silently ignore the others; \
             keep the one it should use, alone in the file"
        }
        // Bounds on atrest's own work (issue 22 item 4), not kube-apiserver's rules.
        ConfigError::TooManyResourceNames { .. } => ATREST_LIMIT,
        ConfigError::Parse { message, .. } if message.contains("atrest's limit") => ATREST_LIMIT,
        _ => "kube-apiserver would refuse to start with this file; fix each field above (`atrest config check FILE`)",
    };
    let mut cli = CliError::usage(format!("{file}: invalid configuration")).advice(advice);
    for line in config_error_lines(e) {
        cli = cli.detail(line);
    }
    cli
}

/// What `--k3s` picks on a k3s server node: the config and kine's SQLite file under k3s's data
/// directory, unless given explicitly. Says on stderr which it used.
pub(crate) fn k3s_paths(
    store: &crate::cli::args::StoreArgs,
    config: Option<&std::path::Path>,
    kine_db: Option<&std::path::Path>,
) -> (Option<std::path::PathBuf>, Option<std::path::PathBuf>) {
    if !store.k3s {
        return (config.map(Into::into), kine_db.map(Into::into));
    }
    let server = store.k3s_data_dir.join("server");
    let config = config.map_or_else(|| server.join("cred/encryption-config.json"), Into::into);
    let db = kine_db.map_or_else(|| server.join("db/state.db"), Into::into);
    eprintln!(
        "--k3s: config {}, datastore {} (kine's SQLite file, read-only)",
        config.display(),
        db.display()
    );
    (Some(config), Some(db))
}

/// Opens kine's SQLite file (`--kine-db`); failures are exit 3 with what to do.
pub(crate) fn open_kine(path: &std::path::Path) -> Result<atrest::store::kine::KineDb, CliError> {
    atrest::store::kine::KineDb::open(path).map_err(|e| {
        let advice = e.advice();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text += &format!(": {cause}");
            source = cause.source();
        }
        CliError::store(text).advice(advice)
    })
}

/// The error for a file atrest could not write (exit 2: a local path, not the store): the
/// path and the operating system's reason.
pub(crate) fn write_error(file: &std::path::Path, e: ConfigError) -> CliError {
    match e {
        ConfigError::Exists { .. } => CliError::usage(e.to_string())
            .advice("choose another file name, or pass --force to replace it"),
        ConfigError::Write { path, source } => {
            CliError::io(&format!("cannot write {}", path.display()), source).advice(format!(
                "check that the directory of {} exists and is writable",
                file.display()
            ))
        }
        e => CliError::usage(config_error_lines(&e).join("; ")),
    }
}

/// One line per problem: each field error of a failed validation, else the error and its causes.
pub(crate) fn config_error_lines(e: &ConfigError) -> Vec<String> {
    if let ConfigError::Invalid(v) = e {
        return v.errors().iter().map(ToString::to_string).collect();
    }
    let mut line = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        line += &format!(": {cause}");
        source = cause.source();
    }
    vec![line]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_prefix_of_keys() {
        assert_eq!(
            resource_prefix("/registry/secrets/default/db").unwrap(),
            "/registry/secrets/"
        );
        assert_eq!(
            resource_prefix("/kubernetes.io/configmaps/ns/x").unwrap(),
            "/kubernetes.io/configmaps/"
        );
        assert_eq!(
            resource_prefix("/registry/services/specs/default/web").unwrap(),
            "/registry/services/specs/"
        );
        assert_eq!(
            resource_prefix("/registry/example.com/widgets/ns/w").unwrap(),
            "/registry/example.com/widgets/"
        );
        assert!(resource_prefix("/registry").is_err());
        assert!(resource_prefix("/registry/secrets").is_err());
        assert!(resource_prefix("db").is_err());
    }
}
