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

use atrest::config::Config;
use atrest::transform::Chain;

use super::CliError;

/// Loads a config file and builds the chain for the resource the prefix names.
pub(crate) fn load_chain(path: &Path, prefix: &str) -> Result<Chain, CliError> {
    let config = Config::load(path)?;
    let (group, resource) = atrest::audit::resource_from_prefix(prefix);
    Chain::from_config(&config, group, resource).map_err(|e| {
        CliError::usage(format!("{}: {e}", path.display())).advice(
            "add the resource to the config's `resources` list, or pass the matching --prefix",
        )
    })
}
