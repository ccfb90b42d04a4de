//! The JSON form: `{"kind":…,"apiVersion":…,"metadata":{…},…}` followed by `\n`.
//!
//! Read in two passes over the same bytes: first the type and metadata, then the kind-specific
//! fields of a Secret or ConfigMap (so a field such as `type` is only read where its meaning is
//! known). Map values are deserialized as [`IgnoredAny`], which the parser skips without
//! allocating; so are all fields not listed here. Visitors never put a string value into an
//! error message.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{is_core, non_empty, sorted_keys, Encoding, ObjectError, StoredObject};

/// The fields every object has.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    /// `apiVersion`.
    api_version: String,
    /// `kind`.
    kind: String,
    /// `metadata`.
    #[serde(default)]
    metadata: Option<Meta>,
}

/// The reported subset of `metadata`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<String>,
    labels: Option<KeyNames>,
}

/// A Secret's own fields, values skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretBody {
    #[serde(rename = "type")]
    secret_type: Option<String>,
    data: Option<KeyNames>,
    string_data: Option<KeyNames>,
    immutable: Option<bool>,
}

/// A ConfigMap's own fields, values skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMapBody {
    data: Option<KeyNames>,
    binary_data: Option<KeyNames>,
    immutable: Option<bool>,
}

/// The keys of a JSON object whose values are skipped unread.
struct KeyNames(Vec<String>);

impl<'de> Deserialize<'de> for KeyNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyNames;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyNames, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(KeyNames(keys))
            }
            // The default messages quote the unexpected string: it could be a secret.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<KeyNames, E> {
                Err(E::custom("expected a map, found a string"))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<KeyNames, E> {
                Err(E::custom("expected a map, found bytes"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `value`, mapping errors to [`ObjectError::Json`].
fn parse<'a, T: Deserialize<'a>>(value: &'a [u8]) -> Result<T, ObjectError> {
    serde_json::from_slice(value).map_err(|source| ObjectError::Json { source })
}

/// Decodes the metadata of a JSON value.
pub(super) fn decode(value: &[u8]) -> Result<StoredObject, ObjectError> {
    let head: Head = parse(value)?;
    let mut obj = StoredObject {
        encoding: Encoding::Json,
        api_version: head.api_version,
        kind: head.kind,
        content_type: None,
        content_encoding: None,
        name: None,
        namespace: None,
        uid: None,
        creation_timestamp: None,
        resource_version: None,
        secret_type: None,
        data_keys: Vec::new(),
        labels: Vec::new(),
        immutable: None,
    };
    if let Some(meta) = head.metadata {
        obj.name = non_empty(meta.name);
        obj.namespace = non_empty(meta.namespace);
        obj.uid = non_empty(meta.uid);
        obj.resource_version = non_empty(meta.resource_version);
        obj.creation_timestamp = non_empty(meta.creation_timestamp);
        obj.labels = sorted_keys(meta.labels.map(|k| k.0).unwrap_or_default());
    }
    if obj.is_secret() {
        let body: SecretBody = parse(value)?;
        obj.secret_type = non_empty(body.secret_type);
        obj.data_keys = merged_keys(body.data, body.string_data);
        obj.immutable = body.immutable;
    } else if obj.is_config_map() {
        let body: ConfigMapBody = parse(value)?;
        obj.data_keys = merged_keys(body.data, body.binary_data);
        obj.immutable = body.immutable;
    }
    Ok(obj)
}

/// The sorted union of two optional key lists.
fn merged_keys(a: Option<KeyNames>, b: Option<KeyNames>) -> Vec<String> {
    let mut keys = a.map(|k| k.0).unwrap_or_default();
    keys.extend(b.map(|k| k.0).unwrap_or_default());
    sorted_keys(keys)
}

/// A Secret's values: `data` (base64 in JSON) and `stringData` (plain strings).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretValues {
    data: Option<ValueMap<Base64Value>>,
    string_data: Option<ValueMap<StringValue>>,
}

/// A map of key names to values held in wiped-on-drop buffers.
struct ValueMap<T>(
    Vec<(String, Zeroizing<Vec<u8>>)>,
    std::marker::PhantomData<T>,
);

/// A JSON `[]byte`: a base64 string (or null).
struct Base64Value(Zeroizing<Vec<u8>>);

/// A JSON string taken as its UTF-8 bytes.
struct StringValue(Zeroizing<Vec<u8>>);

impl From<Base64Value> for Zeroizing<Vec<u8>> {
    fn from(v: Base64Value) -> Self {
        v.0
    }
}

impl From<StringValue> for Zeroizing<Vec<u8>> {
    fn from(v: StringValue) -> Self {
        v.0
    }
}

impl<'de, T> Deserialize<'de> for ValueMap<T>
where
    T: Deserialize<'de> + Into<Zeroizing<Vec<u8>>>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T> Visitor<'de> for V<T>
        where
            T: Deserialize<'de> + Into<Zeroizing<Vec<u8>>>,
        {
            type Value = ValueMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: T = map.next_value()?;
                    entries.push((key, value.into()));
                }
                Ok(ValueMap(entries, std::marker::PhantomData))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Err(E::custom("expected a map, found a string"))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
                Err(E::custom("expected a map, found bytes"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Base64Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Base64Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Base64Value, E> {
                let engine = &base64::engine::general_purpose::STANDARD;
                let mut buf = Zeroizing::new(vec![0u8; v.len().div_ceil(4) * 3]);
                // The engine's error names the offending byte: say less.
                let n = engine
                    .decode_slice(v, buf.as_mut_slice())
                    .map_err(|_| E::custom("a data value is not valid base64"))?;
                buf.truncate(n);
                Ok(Base64Value(buf))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Base64Value, E> {
                Err(E::custom("expected a base64 string, found bytes"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Base64Value, E> {
                Ok(Base64Value(Zeroizing::new(Vec::new())))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for StringValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StringValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringValue, E> {
                Ok(StringValue(Zeroizing::new(v.as_bytes().to_vec())))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<StringValue, E> {
                Err(E::custom("expected a string, found bytes"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<StringValue, E> {
                Ok(StringValue(Zeroizing::new(Vec::new())))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes a JSON Secret's `data` (base64-decoded) and `stringData`.
///
/// Values with JSON escapes pass through the parser's scratch buffer, which is not wiped.
pub(super) fn decode_secret_data(
    value: &[u8],
) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, ObjectError> {
    let head: Head = parse(value)?;
    if !is_core(&head.api_version, &head.kind, "Secret") {
        return Err(ObjectError::NotASecret {
            api_version: head.api_version,
            kind: head.kind,
        });
    }
    let values: SecretValues = parse(value)?;
    let data = values.data.map(|m| m.0).unwrap_or_default();
    let string_data = values.string_data.map(|m| m.0).unwrap_or_default();
    Ok(data.into_iter().chain(string_data).collect())
}
