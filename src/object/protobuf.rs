//! The `k8s\x00` protobuf form (see the module docs of [`crate::object`] for the layout).
//!
//! The envelope (`runtime.Unknown`) is walked with the bounds-checked [`Reader`], so that `raw`
//! — which holds the secret values — stays a borrowed slice of the input and is never copied.
//! The object inside is decoded with hand-declared prost messages that list only the fields we
//! report; map entries are declared with their key alone, so the decoder skips every value
//! without copying it.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::{
    is_core, non_empty, sorted_keys, time, Encoding, ObjectError, StoredObject, PROTOBUF_MAGIC,
};
use crate::wire::{Reader, WireError};

/// `metav1.Time` / `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
struct Time {
    /// Seconds since the Unix epoch.
    #[prost(int64, optional, tag = "1")]
    seconds: Option<i64>,
    /// Always 0 in stored objects.
    #[prost(int32, optional, tag = "2")]
    nanos: Option<i32>,
}

/// One entry of a protobuf map, key only: the value (field 2) is skipped by the decoder.
#[derive(Clone, PartialEq, prost::Message)]
struct MapKey {
    /// The entry's key.
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
}

/// The subset of `metav1.ObjectMeta` we report.
#[derive(Clone, PartialEq, prost::Message)]
struct ObjectMeta {
    /// `name`.
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    /// `generateName` (read for completeness; not reported).
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    /// `namespace`.
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    /// `uid`.
    #[prost(string, optional, tag = "5")]
    uid: Option<String>,
    /// `resourceVersion` (stored empty by kube-apiserver).
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    /// `creationTimestamp`.
    #[prost(message, optional, tag = "8")]
    creation_timestamp: Option<Time>,
    /// `labels`, keys only.
    #[prost(message, repeated, tag = "11")]
    labels: Vec<MapKey>,
}

/// `core/v1.Secret`, without its values.
#[derive(Clone, PartialEq, prost::Message)]
struct Secret {
    /// `metadata`.
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    /// `data` (map<string, bytes>), keys only.
    #[prost(message, repeated, tag = "2")]
    data: Vec<MapKey>,
    /// `type`.
    #[prost(string, optional, tag = "3")]
    r#type: Option<String>,
    /// `stringData` (map<string, string>), keys only.
    #[prost(message, repeated, tag = "4")]
    string_data: Vec<MapKey>,
    /// `immutable`.
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

/// `core/v1.ConfigMap`, without its values.
#[derive(Clone, PartialEq, prost::Message)]
struct ConfigMap {
    /// `metadata`.
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    /// `data` (map<string, string>), keys only.
    #[prost(message, repeated, tag = "2")]
    data: Vec<MapKey>,
    /// `binaryData` (map<string, bytes>), keys only.
    #[prost(message, repeated, tag = "3")]
    binary_data: Vec<MapKey>,
    /// `immutable`.
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

/// Any top-level object: field 1 is its `metadata`.
#[derive(Clone, PartialEq, prost::Message)]
struct AnyObject {
    /// `metadata`.
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

/// One protobuf field value, as the wire type says.
enum Value<'a> {
    /// Wire type 0.
    Varint,
    /// Wire type 1 (8 bytes) or 5 (4 bytes).
    Fixed,
    /// Wire type 2: a length-delimited payload, borrowed from the input.
    Bytes(&'a [u8]),
}

/// Reads one field: its number and its value.
fn next_field<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<(u64, Value<'a>), WireError> {
    let key = r.varint(what)?;
    let number = key >> 3;
    if number == 0 || number > u64::from(u32::MAX >> 3) {
        return Err(WireError::Invalid {
            what,
            problem: "invalid field number",
        });
    }
    let value = match key & 7 {
        0 => {
            r.varint(what)?;
            Value::Varint
        }
        1 => {
            r.take(8, what)?;
            Value::Fixed
        }
        2 => {
            let len = r.varint(what)?;
            // A length that does not fit in usize cannot fit in the input either.
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            Value::Bytes(r.take(len, what)?)
        }
        5 => {
            r.take(4, what)?;
            Value::Fixed
        }
        _ => {
            return Err(WireError::Invalid {
                what,
                problem: "unsupported wire type (groups or invalid)",
            })
        }
    };
    Ok((number, value))
}

/// The payload of a length-delimited field, or an error naming `what`.
fn bytes<'a>(value: Value<'a>, what: &'static str) -> Result<&'a [u8], WireError> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(WireError::Invalid {
            what,
            problem: "wrong wire type (expected length-delimited)",
        }),
    }
}

/// A UTF-8 string field.
fn string(value: Value<'_>, what: &'static str) -> Result<String, WireError> {
    let b = bytes(value, what)?;
    match std::str::from_utf8(b) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(WireError::Invalid {
            what,
            problem: "string is not valid UTF-8",
        }),
    }
}

/// `runtime.Unknown`, with `raw` borrowed from the input.
struct Envelope<'a> {
    /// `typeMeta.apiVersion`.
    api_version: String,
    /// `typeMeta.kind`.
    kind: String,
    /// The object's own protobuf bytes.
    raw: &'a [u8],
    /// `contentEncoding`.
    content_encoding: Option<String>,
    /// `contentType`.
    content_type: Option<String>,
}

/// Parses `runtime.TypeMeta` into `(apiVersion, kind)`, merging: a field present in `buf`
/// replaces the value already there, an absent one leaves it. Unknown fields are skipped.
fn type_meta(buf: &[u8], api_version: &mut String, kind: &mut String) -> Result<(), WireError> {
    const WHAT: &str = "runtime.TypeMeta";
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        match next_field(&mut r, WHAT)? {
            (1, v) => *api_version = string(v, "runtime.TypeMeta.apiVersion")?,
            (2, v) => *kind = string(v, "runtime.TypeMeta.kind")?,
            _ => {}
        }
    }
    Ok(())
}

/// Parses `k8s\x00` + `runtime.Unknown`. Unknown fields are skipped. A field that occurs more
/// than once is read as protobuf decoders (and kube-apiserver's generated code) read it: the last
/// `raw`, `contentEncoding` or `contentType` wins, and every `typeMeta` is merged into the one
/// before it (each `apiVersion` or `kind` it carries replaces the earlier one).
fn envelope(value: &[u8]) -> Result<Envelope<'_>, ObjectError> {
    const WHAT: &str = "runtime.Unknown";
    let mut r = Reader::new(value);
    if !r.eat(PROTOBUF_MAGIC) {
        return Err(ObjectError::UnknownEncoding);
    }
    if r.is_empty() {
        return Err(ObjectError::protobuf(
            WHAT,
            WireError::Invalid {
                what: WHAT,
                problem: "empty body",
            },
        ));
    }
    const TYPE_META: &str = "runtime.Unknown.typeMeta";
    let mut env = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: None,
        content_type: None,
    };
    let wire = |e| ObjectError::protobuf(WHAT, e);
    while !r.is_empty() {
        match next_field(&mut r, WHAT).map_err(wire)? {
            (1, v) => type_meta(
                bytes(v, TYPE_META).map_err(wire)?,
                &mut env.api_version,
                &mut env.kind,
            )
            .map_err(|e| ObjectError::protobuf(TYPE_META, e))?,
            (2, v) => env.raw = bytes(v, "runtime.Unknown.raw").map_err(wire)?,
            (3, v) => {
                env.content_encoding =
                    Some(string(v, "runtime.Unknown.contentEncoding").map_err(wire)?)
            }
            (4, v) => {
                env.content_type = Some(string(v, "runtime.Unknown.contentType").map_err(wire)?)
            }
            _ => {}
        }
    }
    if env.kind.is_empty() {
        return Err(ObjectError::protobuf(
            TYPE_META,
            WireError::Invalid {
                what: TYPE_META,
                problem: "missing kind",
            },
        ));
    }
    env.content_encoding = non_empty(env.content_encoding);
    env.content_type = non_empty(env.content_type);
    Ok(env)
}

/// Copies the reported `ObjectMeta` fields into `obj`.
fn fill_meta(obj: &mut StoredObject, meta: Option<ObjectMeta>) {
    let Some(meta) = meta else { return };
    obj.name = non_empty(meta.name);
    obj.namespace = non_empty(meta.namespace);
    obj.uid = non_empty(meta.uid);
    obj.resource_version = non_empty(meta.resource_version);
    obj.creation_timestamp = meta
        .creation_timestamp
        .and_then(|t| time::rfc3339(t.seconds.unwrap_or(0), t.nanos.unwrap_or(0)));
    obj.labels = sorted_keys(keys(meta.labels));
}

/// The keys of decoded map entries (an entry without a key has the empty key).
fn keys(entries: Vec<MapKey>) -> Vec<String> {
    entries
        .into_iter()
        .map(|e| e.key.unwrap_or_default())
        .collect()
}

/// Decodes the metadata of a `k8s\x00` value.
pub(super) fn decode(value: &[u8]) -> Result<StoredObject, ObjectError> {
    use prost::Message as _;

    let env = envelope(value)?;
    let mut obj = StoredObject {
        encoding: Encoding::Protobuf,
        api_version: env.api_version,
        kind: env.kind,
        content_type: env.content_type,
        content_encoding: env.content_encoding,
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
    if obj.content_encoding.is_some() {
        // An encoded body (never written by kube-apiserver): report the type fields only.
        return Ok(obj);
    }
    if obj.is_secret() {
        let s = Secret::decode(env.raw).map_err(|e| ObjectError::protobuf("v1.Secret", e))?;
        fill_meta(&mut obj, s.metadata);
        obj.secret_type = non_empty(s.r#type);
        let mut data_keys = keys(s.data);
        data_keys.extend(keys(s.string_data));
        obj.data_keys = sorted_keys(data_keys);
        obj.immutable = s.immutable;
    } else if obj.is_config_map() {
        let c = ConfigMap::decode(env.raw).map_err(|e| ObjectError::protobuf("v1.ConfigMap", e))?;
        fill_meta(&mut obj, c.metadata);
        let mut data_keys = keys(c.data);
        data_keys.extend(keys(c.binary_data));
        obj.data_keys = sorted_keys(data_keys);
        obj.immutable = c.immutable;
    } else {
        let o =
            AnyObject::decode(env.raw).map_err(|e| ObjectError::protobuf("object metadata", e))?;
        fill_meta(&mut obj, o.metadata);
    }
    Ok(obj)
}

/// Decodes a `k8s\x00` Secret's `data` and `stringData` into wiped-on-drop buffers.
pub(super) fn decode_secret_data(
    value: &[u8],
) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, ObjectError> {
    const WHAT: &str = "v1.Secret";
    let env = envelope(value)?;
    if !is_core(&env.api_version, &env.kind, "Secret") {
        return Err(ObjectError::NotASecret {
            api_version: env.api_version,
            kind: env.kind,
        });
    }
    if env.content_encoding.is_some() {
        return Err(ObjectError::protobuf(
            "runtime.Unknown.contentEncoding",
            WireError::Invalid {
                what: "runtime.Unknown.contentEncoding",
                problem: "encoded bodies are not supported",
            },
        ));
    }
    let wire = |e| ObjectError::protobuf(WHAT, e);
    // data (2) then stringData (4), each in wire order: a later entry replaces an earlier one.
    let mut data = Vec::new();
    let mut string_data = Vec::new();
    let mut r = Reader::new(env.raw);
    while !r.is_empty() {
        match next_field(&mut r, WHAT).map_err(wire)? {
            (2, v) => data.push(bytes(v, "v1.Secret.data").map_err(wire)?),
            (4, v) => string_data.push(bytes(v, "v1.Secret.stringData").map_err(wire)?),
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for entry in data.into_iter().chain(string_data) {
        let (key, value) = map_entry(entry).map_err(wire)?;
        out.insert(key, value);
    }
    Ok(out)
}

/// One `map<string, bytes>` entry; the value is copied straight into a zeroizing buffer.
fn map_entry(buf: &[u8]) -> Result<(String, Zeroizing<Vec<u8>>), WireError> {
    const WHAT: &str = "v1.Secret map entry";
    let mut r = Reader::new(buf);
    let mut key = String::new();
    let mut value: &[u8] = &[];
    while !r.is_empty() {
        match next_field(&mut r, WHAT)? {
            (1, v) => key = string(v, "v1.Secret map entry key")?,
            (2, v) => value = bytes(v, "v1.Secret map entry value")?,
            _ => {}
        }
    }
    Ok((key, Zeroizing::new(value.to_vec())))
}

/// See [`super::peek_kind`].
pub(super) fn peek_kind(bytes_in: &[u8]) -> Option<(String, String)> {
    let mut r = Reader::new(bytes_in);
    if !r.eat(PROTOBUF_MAGIC) {
        return None;
    }
    let (number, value) = next_field(&mut r, "runtime.Unknown").ok()?;
    if number != 1 {
        return None;
    }
    let (mut api_version, mut kind) = (String::new(), String::new());
    type_meta(
        bytes(value, "runtime.Unknown.typeMeta").ok()?,
        &mut api_version,
        &mut kind,
    )
    .ok()?;
    (plausible_kind(&kind) && plausible_api_version(&api_version)).then_some((api_version, kind))
}

/// A Kubernetes kind: an ASCII letter, then ASCII letters, digits, `_` or `-`; at most 253 bytes.
fn plausible_kind(kind: &str) -> bool {
    let mut chars = kind.bytes();
    kind.len() <= 253
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// `version` or `group/version`: the version a lowercase DNS label starting with a letter, the
/// group a lowercase DNS subdomain.
fn plausible_api_version(api_version: &str) -> bool {
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (Some(group), version),
        None => (None, api_version),
    };
    let label = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
    let version_ok = version.len() <= 63
        && version
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
        && version.bytes().all(label);
    let group_ok = group.is_none_or(|g| {
        !g.is_empty()
            && g.len() <= 253
            && g.bytes().all(|c| label(c) || c == b'.')
            && g.split('.').all(|part| !part.is_empty())
    });
    version_ok && group_ok
}
