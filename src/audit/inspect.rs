//! Explaining one stored value: how it is encrypted, which configured key reads it, its state,
//! and what object it holds (kind, namespace, name, data key *names* — never values).

use serde::Serialize;

use crate::object::{self, StoredObject};
use crate::provider::ProviderKind;
use crate::transform::{classify_without_config, Chain, State};

/// The result of [`inspect`]: the JSON schema of `atrest inspect -o json`.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The etcd key the value was read for (if given).
    pub etcd_key: Option<String>,
    /// The stored value's size in bytes.
    pub size: usize,
    /// The value's state (`encrypted` when no config was given).
    pub state: State,
    /// The provider that wrote it (`None` for plaintext).
    pub provider: Option<ProviderKind>,
    /// The key name in the value's prefix (KMS: the provider name).
    pub key_name: Option<String>,
    /// KMS v2 values: the KMS key ID stored in the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The config entry that read it, as a field path
    /// (`resources[0].providers[1].aescbc.keys[0]`).
    pub read_by: Option<String>,
    /// With a config: whether kube-apiserver running it could read the value.
    pub readable: Option<bool>,
    /// Why it could not be read.
    pub error: Option<String>,
    /// The decoded object, when the plaintext is available.
    pub object: Option<StoredObject>,
    /// Why the plaintext could not be decoded as an object.
    pub object_error: Option<String>,
}

/// Explains `value` (stored under `etcd_key`, which aesgcm needs) with an optional config chain.
pub fn inspect(chain: Option<&Chain>, value: &[u8], etcd_key: Option<&[u8]>) -> Inspection {
    let key = etcd_key.unwrap_or_default();
    let found = match chain {
        Some(c) => c.classify(value, key),
        None => classify_without_config(value),
    };
    let read_by = chain.zip(found.read_by).and_then(|(c, i)| {
        let entry = c.entries().get(i)?;
        let (ri, pi, ki) = entry.origin;
        let kind = entry.provider.kind();
        Some(match kind {
            ProviderKind::Aescbc | ProviderKind::Aesgcm | ProviderKind::Secretbox => {
                format!("resources[{ri}].providers[{pi}].{kind}.keys[{ki}]")
            }
            ProviderKind::Identity | ProviderKind::Kms => {
                format!("resources[{ri}].providers[{pi}].{kind}")
            }
        })
    });
    let plaintext: Option<&[u8]> = match (&found.plaintext, found.state) {
        (Some(p), _) => Some(p),
        (None, State::Plaintext) => Some(value),
        _ => None,
    };
    let (object, object_error) = match plaintext.map(object::decode) {
        Some(Ok(o)) => (Some(o), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    Inspection {
        etcd_key: etcd_key.map(|k| String::from_utf8_lossy(k).into_owned()),
        size: value.len(),
        state: found.state,
        provider: found.provider,
        key_name: found.key_name,
        key_id: found.kms_key_id,
        read_by,
        readable: found.readable,
        error: found.error,
        object,
        object_error,
    }
}
