//! Secret material: key bytes, key strings, decrypted payloads, randomness, and the files that
//! hold them. Everything here is wiped when dropped and never printed; nothing here depends on
//! the rest of the crate.

use std::fmt;

use zeroize::Zeroizing;

pub mod file;
mod string;

pub use string::SecretString;

/// Decrypted bytes: wiped when dropped.
pub type Plaintext = Zeroizing<Vec<u8>>;

/// Raw key bytes (after base64 decoding): wiped when dropped, never printed.
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    /// Takes ownership of raw key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        KeyMaterial(Zeroizing::new(bytes))
    }

    /// The key's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key bytes, for the one place each provider hands them to its cipher.
    pub(crate) fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({} bytes, REDACTED)", self.0.len())
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    use aes_gcm::aead::rand_core::RngCore;
    aes_gcm::aead::OsRng.fill_bytes(buf);
}

/// Generates a fresh random 32-byte key.
pub fn generate_key() -> KeyMaterial {
    let mut bytes = vec![0u8; 32];
    fill_random(&mut bytes);
    KeyMaterial::new(bytes)
}
