//! `aescbc`: AES-CBC with PKCS#7 padding and a random IV.
//!
//! # Format
//!
//! ```text
//! | k8s:enc:aescbc:v1:<name>: | IV (16) | AES-CBC(key, IV, plaintext ‖ PKCS#7 padding) |
//! ```
//!
//! The key is 16, 24 or 32 bytes (AES-128/192/256). Padding is always added, so a 16-byte
//! aligned plaintext gains a whole block of `0x10`. The etcd key is not bound.
//! Source: kube-apiserver `staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/aes/aes.go`
//! (`cbc.TransformToStorage` / `TransformFromStorage`).

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::block_padding::Pkcs7;
use zeroize::Zeroizing;

use super::{key_prefix, DecryptError, KeyError, KeyMaterial, Plaintext, ProviderKind};
use crate::secret::fill_random;
use crate::wire::Reader;

/// AES block and IV size.
pub const IV_LEN: usize = 16;

/// Key lengths kube-apiserver accepts for aescbc.
pub const KEY_LENGTHS: &[usize] = &[16, 24, 32];

enum Cipher {
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
}

/// One aescbc key.
pub struct AesCbc {
    name: String,
    prefix: Vec<u8>,
    cipher: Cipher,
}

impl std::fmt::Debug for AesCbc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AesCbc")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AesCbc {
    /// Builds the provider for one named key.
    pub fn new(name: &str, key: &KeyMaterial) -> Result<Self, KeyError> {
        let bytes = key.expose_secret();
        let cipher = match bytes.len() {
            16 => Aes128::new_from_slice(bytes).map(Cipher::Aes128),
            24 => Aes192::new_from_slice(bytes).map(Cipher::Aes192),
            32 => Aes256::new_from_slice(bytes).map(Cipher::Aes256),
            _ => {
                return Err(KeyError::Length {
                    provider: ProviderKind::Aescbc,
                    name: name.to_owned(),
                    got: bytes.len(),
                    expected: KEY_LENGTHS,
                })
            }
        }
        .map_err(|_| KeyError::Length {
            provider: ProviderKind::Aescbc,
            name: name.to_owned(),
            got: bytes.len(),
            expected: KEY_LENGTHS,
        })?;
        Ok(AesCbc {
            name: name.to_owned(),
            prefix: key_prefix("aescbc", name),
            cipher,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `k8s:enc:aescbc:v1:<name>:`
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Encrypts with a fresh random IV.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; IV_LEN];
        fill_random(&mut iv);
        self.encrypt_with_iv(plaintext, &iv)
    }

    /// Encrypts with a given IV (for known-answer tests; never reuse an IV).
    pub(crate) fn encrypt_with_iv(&self, plaintext: &[u8], iv: &[u8; IV_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + IV_LEN + plaintext.len() + 16);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(iv);
        let ct = match &self.cipher {
            Cipher::Aes128(c) => cbc::Encryptor::inner_iv_init(c.clone(), iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(plaintext),
            Cipher::Aes192(c) => cbc::Encryptor::inner_iv_init(c.clone(), iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(plaintext),
            Cipher::Aes256(c) => cbc::Encryptor::inner_iv_init(c.clone(), iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(plaintext),
        };
        out.extend_from_slice(&ct);
        out
    }

    /// Reads a stored value if it carries this key's prefix.
    pub fn try_decrypt(&self, value: &[u8]) -> Option<Result<Plaintext, DecryptError>> {
        let body = value.strip_prefix(self.prefix.as_slice())?;
        Some(self.decrypt_body(body))
    }

    pub(crate) fn decrypt_body(&self, body: &[u8]) -> Result<Plaintext, DecryptError> {
        let mut r = Reader::new(body);
        let iv: [u8; IV_LEN] = r.array("aescbc IV")?;
        let ct = r.rest();
        // kube-apiserver checks this too ("the stored data is not a multiple of the block
        // size"); an empty ciphertext would otherwise reach the cipher.
        if ct.is_empty() || !ct.len().is_multiple_of(IV_LEN) {
            return Err(DecryptError::BlockSize(ct.len()));
        }
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = match &self.cipher {
            Cipher::Aes128(c) => cbc::Decryptor::inner_iv_init(c.clone(), (&iv).into())
                .decrypt_padded_mut::<Pkcs7>(&mut buf)
                .map(|pt| pt.len()),
            Cipher::Aes192(c) => cbc::Decryptor::inner_iv_init(c.clone(), (&iv).into())
                .decrypt_padded_mut::<Pkcs7>(&mut buf)
                .map(|pt| pt.len()),
            Cipher::Aes256(c) => cbc::Decryptor::inner_iv_init(c.clone(), (&iv).into())
                .decrypt_padded_mut::<Pkcs7>(&mut buf)
                .map(|pt| pt.len()),
        }
        .map_err(|_| DecryptError::Padding)?;
        buf.truncate(len);
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

    fn key(bytes: Vec<u8>) -> AesCbc {
        AesCbc::new("key1", &KeyMaterial::new(bytes)).unwrap()
    }

    /// notes/k8s-format.md §5.2: key 00..1f, IV a0..af, plaintext `k8s\0hello`. The ciphertext
    /// block was computed independently with
    /// `printf 'k8s\0hello' | openssl enc -aes-256-cbc -K 000102…1f -iv a0a1…af | xxd -p`.
    #[test]
    fn known_answer_toy_plaintext() {
        let p = key((0u8..32).collect());
        let iv: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
        let value = p.encrypt_with_iv(b"k8s\0hello", &iv);
        let mut expected = b"k8s:enc:aescbc:v1:key1:".to_vec();
        expected.extend_from_slice(&iv);
        expected.extend_from_slice(&hex("fd8fc24755a07afdf53011155c210945"));
        assert_eq!(value, expected);
        assert_eq!(&*p.try_decrypt(&value).unwrap().unwrap(), b"k8s\0hello");
    }

    /// NIST SP 800-38A F.2.1 (CBC-AES128.Encrypt) and F.2.5 (CBC-AES256.Encrypt): the raw
    /// cipher, checked on the first two blocks (our output adds a padding block after them).
    #[test]
    fn nist_sp800_38a_cbc_vectors() {
        let iv: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let pt = hex("6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51");
        let cases = [
            (
                "2b7e151628aed2a6abf7158809cf4f3c",
                "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2",
            ),
            (
                "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
                "4f021db243bc633d7178183a9fa071e8 b4d9ada9ad7dedf4e5e738763f69145a",
            ),
            (
                "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
                "f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d",
            ),
        ];
        for (k, ct) in cases {
            let p = key(hex(k));
            let value = p.encrypt_with_iv(&pt, &iv);
            let body = &value[p.prefix().len() + 16..];
            assert_eq!(&body[..32], hex(ct).as_slice(), "key {k}");
            assert_eq!(body.len(), 48, "a full padding block follows aligned input");
            assert_eq!(&*p.try_decrypt(&value).unwrap().unwrap(), pt.as_slice());
        }
    }

    #[test]
    fn round_trips_every_key_size_and_length() {
        for len in [16, 24, 32] {
            let p = key(vec![7u8; len]);
            for n in [0usize, 1, 15, 16, 17, 1000] {
                let pt = vec![0x5a; n];
                let v = p.encrypt(&pt);
                assert_eq!(v.len(), p.prefix().len() + 16 + (n / 16 + 1) * 16);
                assert_eq!(&*p.try_decrypt(&v).unwrap().unwrap(), pt.as_slice());
            }
        }
    }

    #[test]
    fn rejects_bad_values_without_panicking() {
        let p = key(vec![1u8; 32]);
        let good = p.encrypt(b"some secret");
        let prefix_len = p.prefix().len();
        // prefix only / IV truncated
        assert!(matches!(
            p.try_decrypt(&good[..prefix_len]),
            Some(Err(DecryptError::Truncated(_)))
        ));
        assert!(matches!(
            p.try_decrypt(&good[..prefix_len + 5]),
            Some(Err(DecryptError::Truncated(_)))
        ));
        // IV but no ciphertext
        assert_eq!(
            p.try_decrypt(&good[..prefix_len + 16])
                .unwrap()
                .unwrap_err(),
            DecryptError::BlockSize(0)
        );
        // not block aligned
        assert_eq!(
            p.try_decrypt(&good[..good.len() - 1]).unwrap().unwrap_err(),
            DecryptError::BlockSize(15)
        );
        // wrong key: padding fails (overwhelmingly likely; this key pair is fixed)
        let other = key(vec![2u8; 32]);
        assert_eq!(
            other.try_decrypt(&good).unwrap().unwrap_err(),
            DecryptError::Padding
        );
        // another key name: not ours
        let named = AesCbc::new("key2", &KeyMaterial::new(vec![1u8; 32])).unwrap();
        assert!(named.try_decrypt(&good).is_none());
    }

    #[test]
    fn rejects_bad_key_lengths() {
        for len in [0, 8, 31, 33] {
            assert!(AesCbc::new("k", &KeyMaterial::new(vec![0; len])).is_err());
        }
    }

    #[test]
    fn debug_shows_no_key() {
        let p = key(vec![0xAB; 32]);
        let s = format!("{p:?}");
        assert!(s.contains("key1") && !s.contains("171") && !s.to_lowercase().contains("ab"));
    }
}
