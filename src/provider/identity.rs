//! `identity`: values are stored as they are, unencrypted.
//!
//! # Format
//!
//! ```text
//! | plaintext |        (no prefix)
//! ```
//!
//! Identity claims every value (its prefix is empty) but refuses to "read" one that starts with
//! `k8s:enc:`, with kube-apiserver's own message; the chain then goes on to the next provider.
//! Source: kube-apiserver `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/identity/identity.go`.

use zeroize::Zeroizing;

use super::{DecryptError, Plaintext};

/// The marker every encrypted value starts with.
pub const ENCRYPTED_MARKER: &[u8] = b"k8s:enc:";

/// The identity provider.
#[derive(Debug, Default, Clone, Copy)]
pub struct Identity;

impl Identity {
    /// Reads a stored value: itself, unless it is encrypted.
    pub fn read(&self, value: &[u8]) -> Result<Plaintext, DecryptError> {
        if value.starts_with(ENCRYPTED_MARKER) {
            Err(DecryptError::IdentityEncrypted)
        } else {
            Ok(Zeroizing::new(value.to_vec()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plaintext_refuses_encrypted() {
        assert_eq!(&*Identity.read(b"k8s\0abc").unwrap(), b"k8s\0abc");
        assert_eq!(&*Identity.read(b"").unwrap(), b"");
        assert_eq!(
            Identity.read(b"k8s:enc:aescbc:v1:k:xx").unwrap_err(),
            DecryptError::IdentityEncrypted
        );
    }
}
