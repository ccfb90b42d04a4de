//! `aesgcm`: AES-GCM with a random 96-bit nonce, bound to the etcd key.
//!
//! # Format
//!
//! ```text
//! | k8s:enc:aesgcm:v1:<name>: | nonce (12) | ciphertext | tag (16) |      AAD = full etcd key
//! ```
//!
//! The authenticated data is the whole etcd key including kube-apiserver's `--etcd-prefix`
//! (e.g. `/registry/secrets/default/db`), so a value copied to another key fails to decrypt.
//! The key is 16, 24 or 32 bytes. Source: kube-apiserver
//! `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/aes/aes.go` (`gcm`).

use aes::Aes192;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm as Gcm};
use zeroize::Zeroizing;

use super::{
    key_prefix, DecryptError, EncryptError, KeyError, KeyMaterial, Plaintext, ProviderKind,
};
use crate::secret::fill_random;
use crate::wire::Reader;

/// Nonce size.
pub const NONCE_LEN: usize = 12;
/// Tag size.
pub const TAG_LEN: usize = 16;
/// Key lengths kube-apiserver accepts for aesgcm.
pub const KEY_LENGTHS: &[usize] = &[16, 24, 32];

type Aes192Gcm = Gcm<Aes192, U12>;

enum Cipher {
    Aes128(Aes128Gcm),
    Aes192(Aes192Gcm),
    Aes256(Aes256Gcm),
}

/// One aesgcm key.
pub struct AesGcm {
    name: String,
    prefix: Vec<u8>,
    cipher: Cipher,
    /// Values encrypted with a random nonce (see [`AesGcm::encryptions`]).
    encryptions: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AesGcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AesGcm")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AesGcm {
    /// Builds the provider for one named key.
    pub fn new(name: &str, key: &KeyMaterial) -> Result<Self, KeyError> {
        let bytes = key.expose_secret();
        let err = || KeyError::Length {
            provider: ProviderKind::Aesgcm,
            name: name.to_owned(),
            got: bytes.len(),
            expected: KEY_LENGTHS,
        };
        let cipher = match bytes.len() {
            16 => Cipher::Aes128(Aes128Gcm::new_from_slice(bytes).map_err(|_| err())?),
            24 => Cipher::Aes192(Aes192Gcm::new_from_slice(bytes).map_err(|_| err())?),
            32 => Cipher::Aes256(Aes256Gcm::new_from_slice(bytes).map_err(|_| err())?),
            _ => return Err(err()),
        };
        Ok(AesGcm {
            name: name.to_owned(),
            prefix: key_prefix("aesgcm", name),
            cipher,
            encryptions: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `k8s:enc:aesgcm:v1:<name>:`
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// How many values this provider has encrypted with a random nonce so far. Random 96-bit
    /// nonces are why the Kubernetes documentation says an aesgcm key "must be rotated every
    /// 200k writes"; a rewrite reports what it spent.
    pub fn encryptions(&self) -> u64 {
        self.encryptions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Encrypts with a fresh random nonce, binding `etcd_key`.
    pub fn encrypt(&self, plaintext: &[u8], etcd_key: &[u8]) -> Result<Vec<u8>, EncryptError> {
        self.encryptions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        self.encrypt_with_nonce(plaintext, etcd_key, &nonce)
    }

    /// Encrypts with a given nonce (for known-answer tests; never reuse a nonce).
    pub(crate) fn encrypt_with_nonce(
        &self,
        plaintext: &[u8],
        etcd_key: &[u8],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, EncryptError> {
        let payload = Payload {
            msg: plaintext,
            aad: etcd_key,
        };
        let ct = match &self.cipher {
            Cipher::Aes128(c) => c.encrypt(nonce.into(), payload),
            Cipher::Aes192(c) => c.encrypt(nonce.into(), payload),
            Cipher::Aes256(c) => c.encrypt(nonce.into(), payload),
        }
        .map_err(|_| EncryptError::Cipher)?;
        let mut out = Vec::with_capacity(self.prefix.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Reads a stored value if it carries this key's prefix.
    pub fn try_decrypt(
        &self,
        value: &[u8],
        etcd_key: &[u8],
    ) -> Option<Result<Plaintext, DecryptError>> {
        let body = value.strip_prefix(self.prefix.as_slice())?;
        Some(self.decrypt_body(body, etcd_key))
    }

    pub(crate) fn decrypt_body(
        &self,
        body: &[u8],
        etcd_key: &[u8],
    ) -> Result<Plaintext, DecryptError> {
        let mut r = Reader::new(body);
        let nonce: [u8; NONCE_LEN] = r.array("aesgcm nonce")?;
        if r.left() < TAG_LEN {
            r.take(TAG_LEN, "aesgcm tag")?;
        }
        let payload = Payload {
            msg: r.rest(),
            aad: etcd_key,
        };
        let pt = match &self.cipher {
            Cipher::Aes128(c) => c.decrypt((&nonce).into(), payload),
            Cipher::Aes192(c) => c.decrypt((&nonce).into(), payload),
            Cipher::Aes256(c) => c.decrypt((&nonce).into(), payload),
        }
        .map_err(|_| DecryptError::Authentication)?;
        Ok(Zeroizing::new(pt))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn issue_22_14_counts_the_values_it_encrypts() {
        let key = KeyMaterial::new(vec![7; 32]);
        let gcm = AesGcm::new("k", &key).unwrap();
        assert_eq!(gcm.encryptions(), 0);
        for _ in 0..3 {
            gcm.encrypt(b"v", b"/registry/secrets/a/b").unwrap();
        }
        assert_eq!(gcm.encryptions(), 3);
    }

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const AAD: &[u8] = b"/registry/secrets/default/secret1";

    /// notes/k8s-format.md §5.3, computed with Python `cryptography`'s AESGCM.
    #[test]
    fn known_answer_toy_plaintext() {
        let p = AesGcm::new("key1", &KeyMaterial::new((0u8..32).collect())).unwrap();
        let nonce: [u8; 12] = std::array::from_fn(|i| 0xb0 + i as u8);
        let value = p.encrypt_with_nonce(b"k8s\0hello", AAD, &nonce).unwrap();
        let mut expected = b"k8s:enc:aesgcm:v1:key1:".to_vec();
        expected.extend_from_slice(&nonce);
        expected.extend_from_slice(&hex("f26d29ab84a8d733 28 7c4e2f76bb65670d62157bec467ec70a"));
        assert_eq!(value, expected);
        assert_eq!(
            &*p.try_decrypt(&value, AAD).unwrap().unwrap(),
            b"k8s\0hello"
        );
        // bound to the etcd key
        assert_eq!(
            p.try_decrypt(&value, b"/registry/secrets/default/secret2")
                .unwrap()
                .unwrap_err(),
            DecryptError::Authentication
        );
    }

    /// kube-apiserver's own recorded ciphertext: `TestGCMLegacyDataCompatibility` in
    /// `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/aes/aes_test.go`.
    #[test]
    fn kube_apiserver_legacy_gcm_vector() {
        let p = AesGcm::new("k", &KeyMaterial::new(b"snorlax_awesomes".to_vec())).unwrap();
        let body = hex(
            "9f27c8fcea8a58c467d8e437dbf2d85955f9b4bd912f4ef967d788a0cb07797d\
             ac0a3f0a0845605ca85ac8562b4ae1",
        );
        let mut value = p.prefix().to_vec();
        value.extend_from_slice(&body);
        assert_eq!(
            &*p.try_decrypt(&value, b"bamboo").unwrap().unwrap(),
            b"pandas are the best"
        );
    }

    #[test]
    fn round_trips_and_rejects_tampering() {
        for len in [16, 24, 32] {
            let p = AesGcm::new("a:b:c", &KeyMaterial::new(vec![9u8; len])).unwrap();
            for n in [0usize, 1, 16, 999] {
                let pt = vec![0x11; n];
                let v = p.encrypt(&pt, AAD).unwrap();
                assert_eq!(v.len(), p.prefix().len() + 12 + n + 16);
                assert_eq!(&*p.try_decrypt(&v, AAD).unwrap().unwrap(), pt.as_slice());
                let mut flipped = v.clone();
                *flipped.last_mut().unwrap() ^= 1;
                assert_eq!(
                    p.try_decrypt(&flipped, AAD).unwrap().unwrap_err(),
                    DecryptError::Authentication
                );
                let short = &v[..p.prefix().len() + 12 + 15];
                assert!(matches!(
                    p.try_decrypt(short, AAD),
                    Some(Err(DecryptError::Truncated(_)))
                ));
            }
        }
    }
}
