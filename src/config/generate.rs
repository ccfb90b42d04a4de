//! New configs with fresh random keys, and YAML kube-apiserver accepts.

use super::go::encode_secret;
use super::model::{
    EncryptionConfiguration, IdentityConfiguration, Key, KeysConfiguration, KmsConfiguration,
    ProviderConfiguration, ResourceConfiguration,
};
use super::{ConfigError, API_VERSION, KIND};
use crate::provider::ProviderKind;
use crate::secret::generate_key;
use crate::secret::SecretString;

/// The providers a new key can be generated for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NewProvider {
    /// AES-CBC (the default: every kube-apiserver version reads it).
    #[default]
    Aescbc,
    /// AES-GCM (rotate its key before 200,000 writes).
    Aesgcm,
    /// XSalsa20-Poly1305.
    Secretbox,
}

impl NewProvider {
    /// The provider's name in configs.
    pub fn as_str(self) -> &'static str {
        self.kind().as_str()
    }

    /// The matching [`ProviderKind`].
    pub fn kind(self) -> ProviderKind {
        match self {
            NewProvider::Aescbc => ProviderKind::Aescbc,
            NewProvider::Aesgcm => ProviderKind::Aesgcm,
            NewProvider::Secretbox => ProviderKind::Secretbox,
        }
    }

    /// A provider element of this type holding `keys`.
    pub(crate) fn element(self, keys: Vec<Key>) -> ProviderConfiguration {
        let keys = Some(KeysConfiguration { keys });
        match self {
            NewProvider::Aescbc => ProviderConfiguration {
                aescbc: keys,
                ..Default::default()
            },
            NewProvider::Aesgcm => ProviderConfiguration {
                aesgcm: keys,
                ..Default::default()
            },
            NewProvider::Secretbox => ProviderConfiguration {
                secretbox: keys,
                ..Default::default()
            },
        }
    }
}

impl std::fmt::Display for NewProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NewProvider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aescbc" => Ok(NewProvider::Aescbc),
            "aesgcm" => Ok(NewProvider::Aesgcm),
            "secretbox" => Ok(NewProvider::Secretbox),
            other => Err(format!(
                "unknown provider {other:?}: expected aescbc, aesgcm or secretbox"
            )),
        }
    }
}

/// A KMS v2 provider for a new config or a rotation: no key material, only the plugin's name
/// and socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKms {
    /// The provider's name, written into every value (`k8s:enc:kms:v2:<name>:`); no `:`.
    pub name: String,
    /// The plugin's socket, `unix:///path`.
    pub endpoint: String,
}

impl NewKms {
    /// The provider element: `kms: {apiVersion: v2, name, endpoint}` (kube-apiserver's default
    /// timeout of 3 s applies).
    pub fn element(&self) -> ProviderConfiguration {
        ProviderConfiguration {
            kms: Some(KmsConfiguration {
                api_version: Some("v2".to_owned()),
                name: self.name.clone(),
                cachesize: None,
                endpoint: self.endpoint.clone(),
                timeout: None,
            }),
            ..Default::default()
        }
    }
}

/// What [`generate`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConfig {
    /// The provider that encrypts new writes.
    pub provider: NewProvider,
    /// The name of its one key.
    pub key_name: String,
    /// The resources the entry covers (`secrets`, `configmaps`, `*.apps`, ...).
    pub resources: Vec<String>,
    /// Whether `identity: {}` follows as a second provider, so that data written before
    /// encryption was enabled stays readable.
    pub identity_fallback: bool,
    /// Write with this KMS v2 plugin instead of a local key (`provider` and `key_name` are then
    /// unused).
    pub kms: Option<NewKms>,
}

impl Default for NewConfig {
    fn default() -> Self {
        NewConfig {
            provider: NewProvider::Aescbc,
            key_name: "key1".to_owned(),
            resources: vec!["secrets".to_owned()],
            identity_fallback: true,
            kms: None,
        }
    }
}

/// A fresh random key (32 bytes from the operating system's CSPRNG) named `name`.
pub(crate) fn new_key(name: &str) -> Key {
    let material = generate_key();
    let secret = encode_secret(material.expose_secret());
    Key {
        name: name.to_owned(),
        secret: SecretString::new(secret.as_str().to_owned()),
    }
}

/// Builds a config with one entry: `resources`, then the provider with a fresh 32-byte key,
/// then (optionally) `identity: {}`.
pub fn generate(new: &NewConfig) -> EncryptionConfiguration {
    let mut providers = vec![match &new.kms {
        Some(kms) => kms.element(),
        None => new.provider.element(vec![new_key(&new.key_name)]),
    }];
    if new.identity_fallback {
        providers.push(ProviderConfiguration {
            identity: Some(IdentityConfiguration {}),
            ..Default::default()
        });
    }
    EncryptionConfiguration {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        resources: vec![ResourceConfiguration {
            resources: new.resources.clone(),
            providers,
        }],
    }
}

/// The model as YAML that kube-apiserver reads back to the same model (keys included: this is
/// the text to write to a 0600 file, see [`super::write_atomic`]).
pub fn to_yaml(config: &EncryptionConfiguration) -> Result<String, ConfigError> {
    serde_norway::to_string(config).map_err(|e| ConfigError::Serialize {
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn default_is_aescbc_then_identity_and_round_trips() {
        let model = generate(&NewConfig::default());
        let text = to_yaml(&model).unwrap();
        let config = Config::from_yaml(&text).unwrap();
        assert_eq!(config.model(), &model);
        let entry = &config.model().resources[0];
        assert_eq!(entry.resources, ["secrets"]);
        assert_eq!(entry.providers.len(), 2);
        let keys = &entry.providers[0].aescbc.as_ref().unwrap().keys;
        assert_eq!(keys[0].name, "key1");
        assert_eq!(keys[0].material().len(), 32);
        assert!(entry.providers[1].identity.is_some());
        assert!(text.contains("identity: {}"), "{text}");
        assert!(text.starts_with(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
        ));
    }

    #[test]
    fn every_provider_and_options() {
        for provider in [
            NewProvider::Aescbc,
            NewProvider::Aesgcm,
            NewProvider::Secretbox,
        ] {
            let new = NewConfig {
                provider,
                key_name: "k-2025:01".into(),
                resources: vec!["secrets".into(), "configmaps".into(), "*.apps".into()],
                identity_fallback: false,
                kms: None,
            };
            let model = generate(&new);
            let config = Config::from_yaml(&to_yaml(&model).unwrap()).unwrap();
            let entry = &config.model().resources[0];
            assert_eq!(entry.providers.len(), 1);
            assert_eq!(entry.providers[0].type_name(), Some(provider.as_str()));
            assert_eq!(entry.providers[0].keys().unwrap().keys[0].name, "k-2025:01");
        }
    }

    #[test]
    fn kms_v2_config_has_no_key_and_validates() {
        let new = NewConfig {
            kms: Some(NewKms {
                name: "vault".into(),
                endpoint: "unix:///var/run/kmsplugin/socket.sock".into(),
            }),
            ..NewConfig::default()
        };
        let text = to_yaml(&generate(&new)).unwrap();
        let config = Config::from_yaml(&text).unwrap();
        let kms = config.model().resources[0].providers[0]
            .kms
            .as_ref()
            .unwrap();
        assert_eq!(
            (kms.api_version.as_deref(), kms.name.as_str()),
            (Some("v2"), "vault")
        );
        assert!(!text.contains("secret:"), "{text}");
        assert!(config.model().resources[0].providers[1].identity.is_some());
    }

    #[test]
    fn keys_are_fresh() {
        let a = generate(&NewConfig::default());
        let b = generate(&NewConfig::default());
        let secret = |m: &EncryptionConfiguration| {
            m.resources[0].providers[0].aescbc.as_ref().unwrap().keys[0]
                .secret
                .expose_secret()
                .to_owned()
        };
        assert_ne!(secret(&a), secret(&b));
    }

    #[test]
    fn provider_names_parse() {
        assert_eq!("aesgcm".parse::<NewProvider>(), Ok(NewProvider::Aesgcm));
        assert!("identity".parse::<NewProvider>().is_err());
    }
}
