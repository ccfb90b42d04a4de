//! `secretbox`: XSalsa20-Poly1305 (NaCl secretbox) with a random 192-bit nonce.
//!
//! # Format
//!
//! ```text
//! | k8s:enc:secretbox:v1:<name>: | nonce (24) | tag (16) | ciphertext |
//! ```
//!
//! The Poly1305 tag comes *before* the ciphertext (the NaCl / Go `x/crypto/nacl/secretbox`
//! layout), unlike AES-GCM. The key is 32 bytes. The etcd key is not bound. Source:
//! kube-apiserver `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/secretbox/secretbox.go`.

use crypto_secretbox::aead::{AeadInPlace, KeyInit};
use crypto_secretbox::{Tag, XSalsa20Poly1305};
use zeroize::Zeroizing;

use super::{
    key_prefix, DecryptError, EncryptError, KeyError, KeyMaterial, Plaintext, ProviderKind,
};
use crate::secret::fill_random;
use crate::wire::Reader;

/// Nonce size.
pub const NONCE_LEN: usize = 24;
/// Tag size.
pub const TAG_LEN: usize = 16;
/// Key lengths kube-apiserver accepts for secretbox.
pub const KEY_LENGTHS: &[usize] = &[32];

/// One secretbox key.
pub struct Secretbox {
    name: String,
    prefix: Vec<u8>,
    cipher: XSalsa20Poly1305,
}

impl std::fmt::Debug for Secretbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secretbox")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Secretbox {
    /// Builds the provider for one named key.
    pub fn new(name: &str, key: &KeyMaterial) -> Result<Self, KeyError> {
        let bytes = key.expose_secret();
        let cipher = XSalsa20Poly1305::new_from_slice(bytes)
            .ok()
            .filter(|_| bytes.len() == 32)
            .ok_or_else(|| KeyError::Length {
                provider: ProviderKind::Secretbox,
                name: name.to_owned(),
                got: bytes.len(),
                expected: KEY_LENGTHS,
            })?;
        Ok(Secretbox {
            name: name.to_owned(),
            prefix: key_prefix("secretbox", name),
            cipher,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `k8s:enc:secretbox:v1:<name>:`
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Encrypts with a fresh random nonce.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, EncryptError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        self.encrypt_with_nonce(plaintext, &nonce)
    }

    /// Encrypts with a given nonce (for known-answer tests; never reuse a nonce).
    pub(crate) fn encrypt_with_nonce(
        &self,
        plaintext: &[u8],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, EncryptError> {
        let header = self.prefix.len() + NONCE_LEN + TAG_LEN;
        let mut out = Vec::with_capacity(header + plaintext.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&[0u8; TAG_LEN]);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(nonce.into(), b"", &mut out[header..])
            .map_err(|_| EncryptError::Cipher)?;
        out[header - TAG_LEN..header].copy_from_slice(&tag);
        Ok(out)
    }

    /// Reads a stored value if it carries this key's prefix.
    pub fn try_decrypt(&self, value: &[u8]) -> Option<Result<Plaintext, DecryptError>> {
        let body = value.strip_prefix(self.prefix.as_slice())?;
        Some(self.decrypt_body(body))
    }

    fn decrypt_body(&self, body: &[u8]) -> Result<Plaintext, DecryptError> {
        let mut r = Reader::new(body);
        let nonce: [u8; NONCE_LEN] = r.array("secretbox nonce")?;
        let tag: [u8; TAG_LEN] = r.array("secretbox tag")?;
        let mut buf = Zeroizing::new(r.rest().to_vec());
        self.cipher
            .decrypt_in_place_detached((&nonce).into(), b"", &mut buf, Tag::from_slice(&tag))
            .map_err(|_| DecryptError::Authentication)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// notes/k8s-format.md §5.4, computed with PyNaCl (libsodium) and an independent
    /// pure-Python XSalsa20-Poly1305.
    #[test]
    fn known_answer_toy_plaintext() {
        let p = Secretbox::new("key1", &KeyMaterial::new((0u8..32).collect())).unwrap();
        let nonce: [u8; 24] = std::array::from_fn(|i| 0xc0 + i as u8);
        let value = p.encrypt_with_nonce(b"k8s\0hello", &nonce).unwrap();
        let mut expected = b"k8s:enc:secretbox:v1:key1:".to_vec();
        expected.extend_from_slice(&nonce);
        expected.extend_from_slice(&hex("e49520f5337b74dfea5dea8cde3dd6a3 f6cff08932d61c8354"));
        assert_eq!(value, expected);
        assert_eq!(&*p.try_decrypt(&value).unwrap().unwrap(), b"k8s\0hello");
    }

    #[test]
    fn round_trips_and_rejects_tampering() {
        let p = Secretbox::new("k", &KeyMaterial::new(vec![3u8; 32])).unwrap();
        for n in [0usize, 1, 64, 4096] {
            let pt = vec![0x42; n];
            let v = p.encrypt(&pt).unwrap();
            assert_eq!(v.len(), p.prefix().len() + 24 + 16 + n);
            assert_eq!(&*p.try_decrypt(&v).unwrap().unwrap(), pt.as_slice());
            let mut flipped = v.clone();
            let i = p.prefix().len() + 24; // first tag byte
            flipped[i] ^= 0x80;
            assert_eq!(
                p.try_decrypt(&flipped).unwrap().unwrap_err(),
                DecryptError::Authentication
            );
        }
        assert!(matches!(
            p.try_decrypt(b"k8s:enc:secretbox:v1:k:short"),
            Some(Err(DecryptError::Truncated(_)))
        ));
        assert!(Secretbox::new("k", &KeyMaterial::new(vec![3u8; 16])).is_err());
    }
}
