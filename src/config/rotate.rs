//! Key rotation as edits of the model, one stage at a time.
//!
//! kube-apiserver's documented rotation (kubernetes.io "Rotate a decryption key") is:
//! 1. **add** a new key in second position, so every apiserver can read it before any writes
//!    with it ([`add_key`]);
//! 2. **promote** it to first position, so new writes use it ([`promote`]), then re-encrypt
//!    everything (`atrest rewrite`);
//! 3. **prune** the old keys, which no stored value needs any more ([`prune`]).
//!
//! Each function edits the entry that applies to one resource (by kube-apiserver's lookup:
//! exact name, then `*.<group>`, then `*.*`; with the same name in several entries, the first,
//! which holds the write provider). Restart (or reload) every kube-apiserver between stages.
//! These are pure edits: check the result with [`Config::from_model`](super::Config::from_model)
//! and write it with [`write_atomic`](super::write_atomic).

use thiserror::Error;

use super::generate::{new_key, NewProvider};
use super::model::{EncryptionConfiguration, Key, ProviderConfiguration, ResourceConfiguration};
use super::parse_group_resource;

/// Why a rotation edit could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RotateError {
    /// No entry applies to the resource.
    #[error("no resources entry covers {resource:?}")]
    NotCovered {
        /// The resource asked for.
        resource: String,
    },
    /// The entry that applies has no providers (the model was not validated).
    #[error("resources[{index}] has no providers")]
    NoProviders {
        /// The entry's index.
        index: usize,
    },
    /// The requested key name is already used in the entry.
    #[error("key name {name:?} is already used in resources[{index}]; choose another")]
    NameTaken {
        /// The name.
        name: String,
        /// The entry's index.
        index: usize,
    },
    /// No aescbc/aesgcm/secretbox key (or kms provider) of that name in the entry.
    #[error(
        "resources[{index}] has no aescbc, aesgcm or secretbox key or kms provider named {name:?}"
    )]
    UnknownKey {
        /// The name.
        name: String,
        /// The entry's index.
        index: usize,
    },
    /// Several keys in the entry have that name, so which to promote is unclear.
    #[error("resources[{index}] has {count} keys named {name:?}; rename them first")]
    AmbiguousKey {
        /// The name.
        name: String,
        /// The entry's index.
        index: usize,
        /// How many keys have it.
        count: usize,
    },
}

/// Where [`add_key`] put the new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedKey {
    /// The entry (`resources[i]`).
    pub resources_index: usize,
    /// The provider element (`providers[j]`); always 1 (second).
    pub providers_index: usize,
    /// The key's position in that element's list.
    pub key_index: usize,
    /// The provider type.
    pub provider: NewProvider,
    /// The key's name.
    pub key_name: String,
    /// Whether a new provider element was inserted (rather than a key added to the write
    /// provider's list).
    pub new_element: bool,
}

/// The index of the entry that applies to `resource` (`secrets`, `deployments.apps`).
fn entry_index(model: &EncryptionConfiguration, resource: &str) -> Result<usize, RotateError> {
    let (group, res) = parse_group_resource(resource);
    for wanted in [(group, res), (group, "*"), ("*", "*")] {
        let found = model.resources.iter().position(|e| {
            e.resources
                .iter()
                .any(|r| parse_group_resource(r) == wanted)
        });
        if let Some(i) = found {
            return Ok(i);
        }
    }
    Err(RotateError::NotCovered {
        resource: resource.to_owned(),
    })
}

/// The keyed provider type of an element.
fn keyed_type(element: &ProviderConfiguration) -> Option<NewProvider> {
    if element.aesgcm.is_some() {
        Some(NewProvider::Aesgcm)
    } else if element.aescbc.is_some() {
        Some(NewProvider::Aescbc)
    } else if element.secretbox.is_some() {
        Some(NewProvider::Secretbox)
    } else {
        None
    }
}

/// The key list of an element, whatever its keyed type.
fn keys_mut(element: &mut ProviderConfiguration) -> Option<&mut Vec<Key>> {
    if let Some(c) = element.aesgcm.as_mut() {
        Some(&mut c.keys)
    } else if let Some(c) = element.aescbc.as_mut() {
        Some(&mut c.keys)
    } else {
        element.secretbox.as_mut().map(|c| &mut c.keys)
    }
}

/// Every key name in the entry's aescbc/aesgcm/secretbox elements.
fn key_names(entry: &ResourceConfiguration) -> Vec<&str> {
    entry
        .providers
        .iter()
        .filter_map(ProviderConfiguration::keys)
        .flat_map(|c| c.keys.iter().map(|k| k.name.as_str()))
        .collect()
}

/// `key<N+1>` for the highest `keyN` in use (`key1` when none is): never a name used before
/// in the entry, and never a lower number than an existing key, so names follow the rotation
/// order. (A pruned `key1` is not reused either: old backups still hold values naming it.)
fn default_name(entry: &ResourceConfiguration) -> String {
    let used = key_names(entry);
    let highest = used
        .iter()
        .filter_map(|n| n.strip_prefix("key")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    (highest.saturating_add(1)..)
        .map(|n| format!("key{n}"))
        .find(|name| !used.contains(&name.as_str()))
        .unwrap_or_else(|| "key".to_owned())
}

/// Stage 1: adds a fresh random 32-byte key in second position for the entry covering
/// `resource`, so that it can be read everywhere before anything is written with it.
///
/// With `provider` unset or equal to the write (first) provider's type, the key goes second in
/// that provider's key list. If the first provider is `identity` or `kms`, or another type is
/// asked for, a new provider element holding the key goes second in the provider list (the
/// type defaults to aescbc when there is no keyed write provider). The name defaults to
/// `key<N+1>` (N = keys in the entry), skipping names in use; a name already in use is refused.
pub fn add_key(
    model: &mut EncryptionConfiguration,
    resource: &str,
    key_name: Option<String>,
    provider: Option<NewProvider>,
) -> Result<AddedKey, RotateError> {
    let index = entry_index(model, resource)?;
    let entry = &mut model.resources[index];
    let Some(first) = entry.providers.first() else {
        return Err(RotateError::NoProviders { index });
    };
    let write_type = keyed_type(first);
    let name = match key_name {
        Some(name) if key_names(entry).contains(&name.as_str()) => {
            return Err(RotateError::NameTaken { name, index });
        }
        Some(name) => name,
        None => default_name(entry),
    };
    let wanted = provider.or(write_type).unwrap_or_default();
    let key = new_key(&name);
    let same_type = write_type == Some(wanted);
    let (key_index, new_element) = match entry.providers.first_mut().and_then(keys_mut) {
        Some(keys) if same_type => {
            let at = keys.len().min(1);
            keys.insert(at, key);
            (at, false)
        }
        _ => {
            entry.providers.insert(1, wanted.element(vec![key]));
            (0, true)
        }
    };
    Ok(AddedKey {
        resources_index: index,
        providers_index: if new_element { 1 } else { 0 },
        key_index,
        provider: wanted,
        key_name: name,
        new_element,
    })
}

/// Stage 1 of a migration to KMS v2 (e.g. aescbc → kms): adds the KMS provider `kms` as the
/// second provider element of the entry covering `resource`, so every kube-apiserver can read
/// its values before any writes them. Returns the element's index (always 1). A KMS provider of
/// that name already in the entry is refused.
pub fn add_kms(
    model: &mut EncryptionConfiguration,
    resource: &str,
    kms: &super::NewKms,
) -> Result<usize, RotateError> {
    let index = entry_index(model, resource)?;
    let entry = &mut model.resources[index];
    if entry.providers.is_empty() {
        return Err(RotateError::NoProviders { index });
    }
    let taken = entry
        .providers
        .iter()
        .filter_map(|p| p.kms.as_ref())
        .any(|k| k.name == kms.name);
    if taken {
        return Err(RotateError::NameTaken {
            name: kms.name.clone(),
            index,
        });
    }
    entry.providers.insert(1, kms.element());
    Ok(1)
}

/// Stage 2: makes the key named `key_name` the write key of the entry covering `resource`: it
/// moves to the front of its key list, and its provider element to the front of the provider
/// list (the order of the others is kept). A no-op if it is already first. Without such a key,
/// a kms provider named `key_name` is moved first instead (the KMS migration).
pub fn promote(
    model: &mut EncryptionConfiguration,
    resource: &str,
    key_name: &str,
) -> Result<(), RotateError> {
    let index = entry_index(model, resource)?;
    let entry = &mut model.resources[index];
    let matches: Vec<(usize, usize)> = entry
        .providers
        .iter()
        .enumerate()
        .filter_map(|(j, p)| p.keys().map(|c| (j, c)))
        .flat_map(|(j, c)| {
            c.keys
                .iter()
                .enumerate()
                .filter(|(_, k)| k.name == key_name)
                .map(move |(k, _)| (j, k))
        })
        .collect();
    let (j, k) = match matches.as_slice() {
        [] => {
            // A KMS provider of that name (a migration to KMS): its element moves first.
            let kms = entry
                .providers
                .iter()
                .position(|p| p.kms.as_ref().is_some_and(|k| k.name == key_name));
            if let Some(j) = kms {
                let element = entry.providers.remove(j);
                entry.providers.insert(0, element);
                return Ok(());
            }
            return Err(RotateError::UnknownKey {
                name: key_name.to_owned(),
                index,
            });
        }
        [one] => *one,
        many => {
            return Err(RotateError::AmbiguousKey {
                name: key_name.to_owned(),
                index,
                count: many.len(),
            })
        }
    };
    if let Some(keys) = keys_mut(&mut entry.providers[j]) {
        let key = keys.remove(k);
        keys.insert(0, key);
    }
    let element = entry.providers.remove(j);
    entry.providers.insert(0, element);
    Ok(())
}

/// Stage 3: removes every aescbc/aesgcm/secretbox key of the entry covering `resource` except
/// the write key (the first key of the first provider), and drops provider elements left
/// without keys. `identity` and `kms` elements are kept. Returns the removed key names, in
/// file order. Run it only after every stored value has been re-encrypted with the write key.
pub fn prune(
    model: &mut EncryptionConfiguration,
    resource: &str,
) -> Result<Vec<String>, RotateError> {
    let index = entry_index(model, resource)?;
    let entry = &mut model.resources[index];
    let mut removed = Vec::new();
    for (j, element) in entry.providers.iter_mut().enumerate() {
        if let Some(keys) = keys_mut(element) {
            let keep = usize::from(j == 0);
            removed.extend(keys.drain(keep.min(keys.len())..).map(|k| k.name));
        }
    }
    entry
        .providers
        .retain(|p| p.keys().is_none_or(|c| !c.keys.is_empty()));
    Ok(removed)
}

/// The comment `add` writes at the top of the file: which key it added and that it is not
/// promoted yet. kube-apiserver ignores comments; [`pending_adds`] reads them back, so that
/// `prune` right after `add` (promote forgotten) cannot silently remove the key that was just
/// distributed.
pub fn pending_marker(key_name: &str, resource: &str) -> String {
    format!(
        "{MARKER}{key_name:?} for {resource} by `atrest config rotate --stage add`; \
         not promoted yet\n"
    )
}

const MARKER: &str = "# atrest: added key ";

/// The key names `add` marked as added and not yet promoted in a config file's text (see
/// [`pending_marker`]), in file order.
pub fn pending_adds(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix(MARKER))
        .filter_map(|rest| {
            let rest = rest.strip_prefix('"')?;
            let mut name = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some(name),
                    '\\' => name.push(chars.next()?),
                    c => name.push(c),
                }
            }
            None
        })
        .collect()
}

/// The marker lines of `text` whose key is not `dropped`, to carry into the rewritten file.
pub fn keep_markers(text: &str, dropped: &[&str]) -> String {
    text.lines()
        .filter(|line| line.starts_with(MARKER))
        .filter(|line| {
            pending_adds(line)
                .first()
                .is_some_and(|name| !dropped.contains(&name.as_str()))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{generate, Config, NewConfig};

    const K32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn model(yaml_providers: &str) -> EncryptionConfiguration {
        let yaml = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, configmaps]\n  providers:\n{yaml_providers}- resources: ['*.*']\n  providers:\n  - identity: {{}}\n"
        );
        Config::from_yaml(&yaml).unwrap().model().clone()
    }

    fn layout(m: &EncryptionConfiguration, i: usize) -> Vec<String> {
        m.resources[i]
            .providers
            .iter()
            .map(|p| match p.keys() {
                Some(c) => format!(
                    "{}[{}]",
                    p.type_name().unwrap(),
                    c.keys
                        .iter()
                        .map(|k| k.name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => p.type_name().unwrap().to_owned(),
            })
            .collect()
    }

    fn valid(m: &EncryptionConfiguration) {
        Config::from_model(m.clone()).unwrap();
    }

    #[test]
    fn add_key_goes_second_in_the_write_providers_list() {
        let mut m = generate(&NewConfig::default());
        let added = add_key(&mut m, "secrets", None, None).unwrap();
        assert_eq!(layout(&m, 0), ["aescbc[key1,key2]", "identity"]);
        assert_eq!(
            added,
            AddedKey {
                resources_index: 0,
                providers_index: 0,
                key_index: 1,
                provider: NewProvider::Aescbc,
                key_name: "key2".into(),
                new_element: false,
            }
        );
        let keys = &m.resources[0].providers[0].aescbc.as_ref().unwrap().keys;
        assert_ne!(keys[0].secret, keys[1].secret);
        assert_eq!(keys[1].material().len(), 32);
        valid(&m);
    }

    #[test]
    fn add_key_of_another_type_is_a_new_second_element() {
        let mut m = generate(&NewConfig::default());
        let added = add_key(
            &mut m,
            "secrets",
            Some("gcm1".into()),
            Some(NewProvider::Aesgcm),
        )
        .unwrap();
        assert_eq!(layout(&m, 0), ["aescbc[key1]", "aesgcm[gcm1]", "identity"]);
        assert!(added.new_element);
        assert_eq!((added.providers_index, added.key_index), (1, 0));
        valid(&m);
    }

    #[test]
    fn add_key_after_identity_first() {
        let mut m = model("  - identity: {}\n");
        let added = add_key(&mut m, "configmaps", None, None).unwrap();
        assert_eq!(layout(&m, 0), ["identity", "aescbc[key1]"]);
        assert_eq!(added.provider, NewProvider::Aescbc);
        valid(&m);
    }

    #[test]
    fn pending_markers_round_trip() {
        let text = format!(
            "{}{}apiVersion: v1\n",
            pending_marker("key2", "secrets"),
            pending_marker("we\"ird:name", "configmaps")
        );
        assert_eq!(pending_adds(&text), ["key2", "we\"ird:name"]);
        assert_eq!(
            keep_markers(&text, &["key2"]),
            pending_marker("we\"ird:name", "configmaps")
        );
        assert!(pending_adds("# a comment\nkind: x\n").is_empty());
    }

    #[test]
    fn add_key_names_are_unique() {
        let mut m = model(&format!(
            "  - aesgcm: {{keys: [{{name: key2, secret: '{K32}'}}]}}\n  - aescbc: {{keys: [{{name: key3, secret: '{K32}'}}]}}\n"
        ));
        // The next number after the highest in use.
        let added = add_key(&mut m, "secrets", None, None).unwrap();
        assert_eq!(added.key_name, "key4");
        // key2 is free and follows key1: it is next, whatever else the entry holds.
        let mut m = model(&format!(
            "  - aescbc: {{keys: [{{name: key1, secret: '{K32}'}}, {{name: old, secret: '{K32}'}}]}}\n"
        ));
        let added = add_key(&mut m, "secrets", None, None).unwrap();
        assert_eq!(added.key_name, "key2");
        assert_eq!(
            add_key(&mut m, "secrets", Some("key2".into()), None),
            Err(RotateError::NameTaken {
                name: "key2".into(),
                index: 0
            })
        );
    }

    #[test]
    fn the_entry_is_found_like_kube_apiserver_finds_it() {
        let mut m = model("  - identity: {}\n");
        // Not named in entry 0: `*.*` (entry 1) applies.
        let added = add_key(&mut m, "deployments.apps", None, None).unwrap();
        assert_eq!(added.resources_index, 1);
        assert_eq!(layout(&m, 1), ["identity", "aescbc[key1]"]);
        let mut m = generate(&NewConfig::default());
        assert_eq!(
            add_key(&mut m, "pods", None, None),
            Err(RotateError::NotCovered {
                resource: "pods".into()
            })
        );
    }

    #[test]
    fn promote_moves_the_key_and_its_provider_first() {
        let mut m = generate(&NewConfig::default());
        add_key(
            &mut m,
            "secrets",
            Some("new".into()),
            Some(NewProvider::Secretbox),
        )
        .unwrap();
        promote(&mut m, "secrets", "new").unwrap();
        assert_eq!(
            layout(&m, 0),
            ["secretbox[new]", "aescbc[key1]", "identity"]
        );
        valid(&m);

        let mut m = generate(&NewConfig::default());
        add_key(&mut m, "secrets", None, None).unwrap();
        promote(&mut m, "secrets", "key2").unwrap();
        assert_eq!(layout(&m, 0), ["aescbc[key2,key1]", "identity"]);
        // Already first: nothing changes.
        let before = m.clone();
        promote(&mut m, "secrets", "key2").unwrap();
        assert_eq!(m, before);
    }

    #[test]
    fn promote_refuses_unknown_and_ambiguous_names() {
        let mut m = generate(&NewConfig::default());
        assert_eq!(
            promote(&mut m, "secrets", "nope"),
            Err(RotateError::UnknownKey {
                name: "nope".into(),
                index: 0
            })
        );
        let mut m = model(&format!(
            "  - aesgcm: {{keys: [{{name: a, secret: '{K32}'}}]}}\n  - aescbc: {{keys: [{{name: a, secret: '{K32}'}}]}}\n"
        ));
        assert!(matches!(
            promote(&mut m, "secrets", "a"),
            Err(RotateError::AmbiguousKey { count: 2, .. })
        ));
    }

    #[test]
    fn prune_keeps_the_write_key_and_identity() {
        let mut m = model(&format!(
            "  - aesgcm: {{keys: [{{name: new, secret: '{K32}'}}, {{name: old, secret: '{K32}'}}]}}\n  - aescbc: {{keys: [{{name: older, secret: '{K32}'}}]}}\n  - identity: {{}}\n  - kms: {{apiVersion: v2, name: plugin, endpoint: 'unix:///k.sock'}}\n"
        ));
        let removed = prune(&mut m, "secrets").unwrap();
        assert_eq!(removed, ["old", "older"]);
        assert_eq!(layout(&m, 0), ["aesgcm[new]", "identity", "kms"]);
        valid(&m);
        // Nothing left to prune.
        assert!(prune(&mut m, "secrets").unwrap().is_empty());
    }

    #[test]
    fn prune_after_identity_first_removes_every_key() {
        // The "decrypt all data" procedure ends with identity alone.
        let mut m = model(&format!(
            "  - identity: {{}}\n  - aescbc: {{keys: [{{name: k, secret: '{K32}'}}]}}\n"
        ));
        assert_eq!(prune(&mut m, "secrets").unwrap(), ["k"]);
        assert_eq!(layout(&m, 0), ["identity"]);
        valid(&m);
    }

    #[test]
    fn a_full_rotation() {
        let mut m = generate(&NewConfig::default());
        add_key(&mut m, "secrets", None, None).unwrap();
        valid(&m);
        promote(&mut m, "secrets", "key2").unwrap();
        valid(&m);
        assert_eq!(prune(&mut m, "secrets").unwrap(), ["key1"]);
        assert_eq!(layout(&m, 0), ["aescbc[key2]", "identity"]);
        valid(&m);
    }
}
