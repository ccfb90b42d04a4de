//! A string that holds key material: zeroized on drop, never printed.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};
use zeroize::Zeroizing;

/// A base64 key string from a config file. `Debug` prints `"REDACTED"`; the contents are wiped
/// when it is dropped. Serialising it writes the secret (that is how a config file is written).
///
/// Deserializing accepts a string, or `null` for the empty string (kube-apiserver's JSON typing);
/// any other type is an error whose message names the type but never shows the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a secret string.
    pub fn new(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }

    /// The secret itself. Call only where the key is decoded.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// True when the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"REDACTED\"")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

/// Accepts strings and `null`. serde's own `invalid_type` error would print the offending
/// value, so every other type gets a message that names the type alone.
struct SecretVisitor;

const EXPECTED: &str = "expected a base64 string";

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(SecretString::new(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(SecretString::new(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(SecretString::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(SecretString::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom(format_args!("invalid type: boolean, {EXPECTED}")))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom(format_args!("invalid type: integer, {EXPECTED}")))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom(format_args!("invalid type: integer, {EXPECTED}")))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(format_args!(
            "invalid type: floating point, {EXPECTED}"
        )))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Err(E::custom(format_args!(
            "invalid type: byte array, {EXPECTED}"
        )))
    }
}
