//! What a plaintext stored value holds: its kind, name, namespace and data key names.
//!
//! kube-apiserver stores built-in objects as protobuf and can also meet JSON (older objects,
//! `--storage-media-type=application/json`, other apiservers sharing the etcd). This module reads
//! both, and reports *metadata only*: [`decode`] never copies a data value out of the input, and
//! [`StoredObject`] has no field that could hold one. Values are read only on explicit request,
//! through [`decode_secret_data`], into buffers that are wiped on drop.
//!
//! # Format
//!
//! ```text
//! protobuf: | 6b 38 73 00 ("k8s\x00") | runtime.Unknown (protobuf, proto2)               |
//!   runtime.Unknown: 1 typeMeta        TypeMeta {1 apiVersion: string, 2 kind: string}
//!                    2 raw             bytes: the object itself (Secret, ConfigMap, ...)
//!                    3 contentEncoding string (written even when empty: 1a 00)
//!                    4 contentType     string (written even when empty: 22 00)
//!   Secret:    1 metadata ObjectMeta | 2 data map<string,bytes> | 3 type string
//!              4 stringData map<string,string> | 5 immutable bool
//!   ConfigMap: 1 metadata ObjectMeta | 2 data map<string,string> | 3 binaryData map<string,bytes>
//!              4 immutable bool
//!   any kind:  1 metadata ObjectMeta
//!   ObjectMeta: 1 name | 2 generateName | 3 namespace | 5 uid | 6 resourceVersion (stored "")
//!               8 creationTimestamp Time {1 seconds int64, 2 nanos int32} | 11 labels map
//!               (the other fields are skipped)
//! json:     {"kind":"Secret","apiVersion":"v1","metadata":{...},"data":{"k":"<base64>"},...}\n
//! ```
//!
//! A map is a repeated message `{1 key, 2 value}`; Kubernetes writes the entries sorted by key.
//!
//! Sources (kube-apiserver and its libraries):
//! - `k8s.io/apimachinery/pkg/runtime/serializer/protobuf/protobuf.go` (the magic and envelope),
//! - `k8s.io/apimachinery/pkg/runtime/generated.proto` (`Unknown`, `TypeMeta`),
//! - `k8s.io/api/core/v1/generated.proto` (`Secret`, `ConfigMap`),
//! - `k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto` (`ObjectMeta`, `Time`),
//! - `k8s.io/apimachinery/pkg/runtime/serializer/json/json.go` (JSON values end in `\n`).
//!
//! Untrusted bytes go through the bounds-checked [`crate::wire::Reader`] (the envelope, and
//! [`peek_kind`] over raw database pages) or through prost's own bounds-checked decoder (the
//! hand-declared messages in `protobuf.rs`).

mod json;
mod protobuf;
mod time;

/// Counts stored objects (`k8s\0` + runtime.Unknown envelope) of `kind` (any kind when `None`)
/// in raw bytes, such as a free database page.
pub fn count_plaintext_objects(bytes: &[u8], kind: Option<&str>) -> u64 {
    count_plaintext_objects_from(bytes, kind, bytes.len())
}

/// Like [`count_plaintext_objects`], counting only the objects that start in `bytes[..own]`
/// (the rest of `bytes` is there so that those objects can be read whole).
pub(crate) fn count_plaintext_objects_from(bytes: &[u8], kind: Option<&str>, own: usize) -> u64 {
    let magic = crate::object::PROTOBUF_MAGIC;
    let mut count = 0;
    let mut at = 0;
    while let Some(pos) = bytes
        .get(at..)
        .and_then(|rest| rest.windows(magic.len()).position(|w| w == magic))
    {
        let start = at + pos;
        if start >= own {
            break;
        }
        if let Some((_, found)) = crate::object::peek_kind(&bytes[start..]) {
            if kind.is_none_or(|k| k == found) {
                count += 1;
            }
        }
        at = start + magic.len();
    }
    count
}

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Serialize;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::wire::WireError;

/// The 4-byte magic that starts every protobuf-encoded stored object: `k8s` and encoding 0.
pub const PROTOBUF_MAGIC: &[u8; 4] = b"k8s\x00";

/// How a stored object was serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Encoding {
    /// `k8s\x00` followed by a `runtime.Unknown` protobuf message (kube-apiserver's default).
    Protobuf,
    /// A JSON object.
    Json,
}

/// The metadata of one stored object. It never holds a data value.
///
/// Empty strings (which the protobuf encoder writes for unset fields) are reported as `None`, so
/// that a protobuf object and its JSON form, which leaves such fields out, decode alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoredObject {
    /// How the value was serialized.
    pub encoding: Encoding,
    /// The object's `apiVersion`: `v1` for the core group, else `group/version`.
    pub api_version: String,
    /// The object's `kind`, such as `Secret` or `ConfigMap`.
    pub kind: String,
    /// `runtime.Unknown.contentType` (protobuf only; kube-apiserver leaves it empty).
    pub content_type: Option<String>,
    /// `runtime.Unknown.contentEncoding` (protobuf only; kube-apiserver leaves it empty). When it
    /// is set, the object body is not decoded and only the type fields are reported.
    pub content_encoding: Option<String>,
    /// `metadata.name`.
    pub name: Option<String>,
    /// `metadata.namespace` (`None` for cluster-scoped objects).
    pub namespace: Option<String>,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.creationTimestamp` in RFC 3339 UTC, for example `2023-11-14T22:13:20Z`.
    pub creation_timestamp: Option<String>,
    /// `metadata.resourceVersion` as stored. kube-apiserver stores it empty (`None`): the
    /// version seen through the API is the etcd key's mod revision.
    pub resource_version: Option<String>,
    /// A Secret's `type`, such as `Opaque` (`None` for other kinds).
    pub secret_type: Option<String>,
    /// The key names of a Secret's `data` and `stringData`, or of a ConfigMap's `data` and
    /// `binaryData`: sorted, without duplicates. Names only, never values. Empty for other kinds.
    pub data_keys: Vec<String>,
    /// The key names of `metadata.labels`, sorted (label values are left out).
    pub labels: Vec<String>,
    /// `immutable` of a Secret or ConfigMap, when it is set.
    pub immutable: Option<bool>,
}

impl StoredObject {
    /// True for a core `v1` Secret.
    pub fn is_secret(&self) -> bool {
        is_core(&self.api_version, &self.kind, "Secret")
    }

    /// True for a core `v1` ConfigMap.
    pub fn is_config_map(&self) -> bool {
        is_core(&self.api_version, &self.kind, "ConfigMap")
    }
}

/// True when `(api_version, kind)` names the core-group `kind`.
fn is_core(api_version: &str, kind: &str, wanted: &str) -> bool {
    api_version == "v1" && kind == wanted
}

/// A failure to decode a stored value.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The value is neither protobuf (`k8s\x00` prefix) nor a JSON object. It may be YAML, CBOR,
    /// still encrypted, or not a Kubernetes object at all.
    #[error("value is neither a Kubernetes protobuf object (k8s\\x00 prefix) nor a JSON object")]
    UnknownEncoding,
    /// The value has the protobuf prefix but the message is malformed or truncated.
    #[error("malformed protobuf in {what}")]
    Protobuf {
        /// The message or field that could not be read, such as `runtime.Unknown.typeMeta`.
        what: &'static str,
        /// What was wrong with it.
        #[source]
        source: ProtobufError,
    },
    /// The value starts like JSON but is not a well-formed Kubernetes object.
    #[error("malformed JSON object")]
    Json {
        /// The parser's error: a position and a reason, never a data value.
        #[source]
        source: serde_json::Error,
    },
    /// [`decode_secret_data`] was given an object that is not a core `v1` Secret.
    #[error("not a v1 Secret but {api_version}/{kind}")]
    NotASecret {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },
}

/// Why a protobuf message could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtobufError {
    /// Truncated input or an invalid field, found by the bounds-checked cursor.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An error from the protobuf decoder.
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
}

impl ObjectError {
    /// A protobuf error in `what`.
    fn protobuf(what: &'static str, source: impl Into<ProtobufError>) -> Self {
        ObjectError::Protobuf {
            what,
            source: source.into(),
        }
    }
}

/// The encoding a value appears to have, from its first bytes.
fn sniff(value: &[u8]) -> Option<Encoding> {
    if value.starts_with(PROTOBUF_MAGIC) {
        return Some(Encoding::Protobuf);
    }
    match value.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Some(Encoding::Json),
        _ => None,
    }
}

/// Decodes the metadata of a plaintext stored value (protobuf or JSON).
///
/// Data values are skipped, not copied. Errors say which structure was malformed; no input
/// makes this panic.
pub fn decode(value: &[u8]) -> Result<StoredObject, ObjectError> {
    match sniff(value) {
        Some(Encoding::Protobuf) => protobuf::decode(value),
        Some(Encoding::Json) => json::decode(value),
        None => Err(ObjectError::UnknownEncoding),
    }
}

/// Reads `(apiVersion, kind)` from bytes that start with `k8s\x00`, leniently.
///
/// Made for scanning raw database pages: the bytes after the object may be anything, and the
/// object itself may be cut short. Only the envelope's first field (`typeMeta`) is read, and only
/// if it is complete. The result is `Some` only when the kind looks like a Kubernetes kind (an
/// ASCII letter, then letters, digits, `_` or `-`) and the apiVersion like `v1` or
/// `group/version`. Never reads past `bytes`, never panics.
pub fn peek_kind(bytes: &[u8]) -> Option<(String, String)> {
    protobuf::peek_kind(bytes)
}

/// Decodes the data of a `v1` Secret: `data` and `stringData` (a later entry of the same name
/// wins, `stringData` after `data`, as the API server merges them).
///
/// This is the one function in the module that reads secret values. Each value is copied once,
/// straight into a buffer that is wiped on drop. JSON values are base64-decoded.
pub fn decode_secret_data(
    value: &[u8],
) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, ObjectError> {
    match sniff(value) {
        Some(Encoding::Protobuf) => protobuf::decode_secret_data(value),
        Some(Encoding::Json) => json::decode_secret_data(value),
        None => Err(ObjectError::UnknownEncoding),
    }
}

/// `Some(s)` unless `s` is empty.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Sorts and de-duplicates key names.
fn sorted_keys(mut keys: Vec<String>) -> Vec<String> {
    keys.sort_unstable();
    keys.dedup();
    keys
}
