//! One file per command.

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

use atrest::config::{Config, ConfigError};
use atrest::transform::Chain;

use super::CliError;

/// Loads a config file and builds the chain for the resource the prefix names.
pub(crate) fn load_chain(path: &Path, prefix: &str) -> Result<Chain, CliError> {
    let config = Config::load(path).map_err(|e| invalid_config(&path.display().to_string(), &e))?;
    let (group, resource) = atrest::audit::resource_from_prefix(prefix);
    Chain::from_config(&config, group, resource).map_err(|e| {
        CliError::usage(format!("{}: {e}", path.display())).advice(
            "add the resource to the config's `resources` list, or pass the matching --prefix",
        )
    })
}

/// The error for a config file that could not be loaded: the file named on the first line, one
/// detail line per problem (each field error of a failed validation, else the error and its
/// causes), and what to do.
pub(crate) fn invalid_config(file: &str, e: &ConfigError) -> CliError {
    let advice = match e {
        ConfigError::Read { .. } | ConfigError::TooLarge { .. } => {
            "check the path: it should name the file given to kube-apiserver's \
             --encryption-provider-config"
        }
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
