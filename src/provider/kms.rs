//! `kms`: envelope encryption through an external plugin — recognised, not decrypted.
//!
//! # Format
//!
//! ```text
//! v1: | k8s:enc:kms:v1:<name>: | EDEK length (u16 BE) | EDEK | nonce (12) | ct | tag (16) |
//! v2: | k8s:enc:kms:v2:<name>: | protobuf EncryptedObject{encryptedData=1, keyID=2,
//!                                 encryptedDEKSource=3, annotations=4, encryptedDEKSourceType=5} |
//! ```
//!
//! Decrypting needs the plugin (it alone can unwrap the DEK), so atrest only recognises these
//! values by their full prefix and reports them as `kms`. Source: kube-apiserver
//! `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/envelope/{envelope.go,kmsv2/envelope.go}`.

use super::{DecryptError, Plaintext};

/// KMS API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsVersion {
    /// `v1` (deprecated; refused by kube-apiserver ≥ 1.29 unless `KMSv1=true`).
    V1,
    /// `v2`.
    V2,
}

/// One KMS provider.
#[derive(Debug, Clone)]
pub struct Kms {
    name: String,
    version: KmsVersion,
    prefix: Vec<u8>,
}

impl Kms {
    /// Recognises values of the KMS provider `name`.
    pub fn new(name: &str, version: KmsVersion) -> Self {
        let v = match version {
            KmsVersion::V1 => "v1",
            KmsVersion::V2 => "v2",
        };
        Kms {
            name: name.to_owned(),
            version,
            prefix: format!("k8s:enc:kms:{v}:{name}:").into_bytes(),
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The KMS API version.
    pub fn version(&self) -> KmsVersion {
        self.version
    }

    /// `k8s:enc:kms:v1:<name>:` or `k8s:enc:kms:v2:<name>:`
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Claims values with this provider's prefix; they cannot be decrypted here.
    pub fn try_decrypt(&self, value: &[u8]) -> Option<Result<Plaintext, DecryptError>> {
        value
            .starts_with(&self.prefix)
            .then_some(Err(DecryptError::Kms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_own_prefix_only() {
        let v2 = Kms::new("myplugin", KmsVersion::V2);
        assert_eq!(
            v2.try_decrypt(b"k8s:enc:kms:v2:myplugin:\x0a\x45"),
            Some(Err(DecryptError::Kms))
        );
        assert_eq!(v2.try_decrypt(b"k8s:enc:kms:v1:myplugin:\x00\x15"), None);
        assert_eq!(v2.try_decrypt(b"k8s:enc:kms:v2:other:x"), None);
    }
}
