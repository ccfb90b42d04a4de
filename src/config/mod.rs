//! EncryptionConfiguration: the model, kube-apiserver's validation, generation and writing.
//!
//! (Skeleton: the helper that owns this module replaces the `todo!()`s.)

mod model;
mod secret;

use std::path::Path;

use thiserror::Error;

pub use model::{
    EncryptionConfiguration, IdentityConfiguration, Key, KeysConfiguration, KmsConfiguration,
    ProviderConfiguration, ResourceConfiguration,
};
pub use secret::SecretString;

use crate::provider::KeyMaterial;

/// A config that parsed and passed every check kube-apiserver makes at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    model: EncryptionConfiguration,
}

/// Why a config was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Placeholder.
    #[error("not implemented")]
    Todo,
}

impl Config {
    /// Parses YAML or JSON text and validates it.
    pub fn from_yaml(_text: &str) -> Result<Config, ConfigError> {
        Err(ConfigError::Todo)
    }

    /// Reads, parses and validates a file.
    pub fn load(_path: &Path) -> Result<Config, ConfigError> {
        Err(ConfigError::Todo)
    }

    /// The validated model.
    pub fn model(&self) -> &EncryptionConfiguration {
        &self.model
    }

    /// The providers that apply to `group`/`resource`, in read order, as kube-apiserver
    /// resolves them (exact name, then `*.<group>`, then `*.*`; the same exact resource in
    /// several entries concatenates their lists). Each comes with its `(resources index,
    /// providers index)` in the file. Empty: the resource is not covered (stored unencrypted).
    pub fn providers_for(
        &self,
        _group: &str,
        _resource: &str,
    ) -> Vec<((usize, usize), &ProviderConfiguration)> {
        Vec::new()
    }
}

impl Key {
    /// The decoded key material (the config was validated, so the secret decodes).
    pub fn material(&self) -> KeyMaterial {
        KeyMaterial::new(Vec::new())
    }
}
