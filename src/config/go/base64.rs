//! Key secrets in Go's `base64.StdEncoding`, exactly as kube-apiserver decodes them.
//!
//! kube-apiserver decodes `keys[].secret` with `base64.StdEncoding.DecodeString`
//! (`apiserver/pkg/apis/apiserver/validation/validation_encryption.go`, and again in
//! `apiserver/pkg/server/options/encryptionconfig/config.go`). Go's decoder:
//! - ignores `\r` and `\n` anywhere in the input;
//! - requires `=` padding to a multiple of four characters (and no padding where none belongs);
//! - takes the standard alphabet only (no `-`/`_`, no spaces);
//! - does **not** require the unused low bits of the last character to be zero (only Go's
//!   `.Strict()` does).
//!
//! A default Rust decoder rejects the last point, and so would refuse configs kube-apiserver
//! accepts.

use ::base64::alphabet;
use ::base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ::base64::Engine;
use thiserror::Error;
use zeroize::Zeroizing;

/// Go's `base64.StdEncoding` for decoding (line breaks are stripped before it sees the input).
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Why a key secret is not base64. Deliberately carries no detail: the base64 crate's errors
/// name the offending character and offset, which would leak part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SecretDecodeError {
    /// Not standard, padded base64 (after removing line breaks).
    #[error("secrets must be base64 encoded")]
    NotBase64,
}

/// Decodes a key secret as Go's `base64.StdEncoding.DecodeString` does (see the module docs).
/// The decoded bytes, and the copy without line breaks, are wiped when dropped.
pub fn decode_secret(s: &str) -> Result<Zeroizing<Vec<u8>>, SecretDecodeError> {
    // Sized up front: a growing Vec would leave partial copies of the key in freed memory.
    let mut stripped: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(s.len()));
    stripped.extend(s.bytes().filter(|&b| b != b'\r' && b != b'\n'));
    GO_STD
        .decode(&*stripped)
        .map(Zeroizing::new)
        .map_err(|_| SecretDecodeError::NotBase64)
}

/// Encodes key bytes as standard, padded base64 (what `decode_secret` and kube-apiserver read).
pub fn encode_secret(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(GO_STD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<u8> {
        decode_secret(s).expect("decodes").to_vec()
    }

    fn bad(s: &str) {
        assert_eq!(
            decode_secret(s).map(|v| v.to_vec()),
            Err(SecretDecodeError::NotBase64),
            "{s:?} should be refused"
        );
    }

    #[test]
    fn canonical_input_decodes() {
        assert_eq!(ok("AAECAw=="), vec![0, 1, 2, 3]);
        assert_eq!(ok("AAEC"), vec![0, 1, 2]);
        assert_eq!(ok("AAECAwQ="), vec![0, 1, 2, 3, 4]);
        assert_eq!(ok(""), Vec::<u8>::new());
    }

    #[test]
    fn line_breaks_anywhere_are_ignored() {
        assert_eq!(ok("AAEC\nAw=="), vec![0, 1, 2, 3]);
        assert_eq!(ok("AA\r\nEC\r\nAw=\n="), vec![0, 1, 2, 3]);
        assert_eq!(ok("\nAAECAw==\n"), vec![0, 1, 2, 3]);
        assert_eq!(ok("\r\n"), Vec::<u8>::new());
    }

    #[test]
    fn padding_is_required() {
        bad("AAECAw");
        bad("AAECAwQ");
        bad("AAECAw=");
    }

    #[test]
    fn extra_padding_is_refused() {
        bad("AAEC====");
        bad("AAECAw===");
        bad("=");
    }

    #[test]
    fn non_zero_trailing_bits_are_allowed() {
        // "AB==": 'B' leaves non-zero bits below the single decoded byte (Go accepts this).
        assert_eq!(ok("AB=="), vec![0]);
        assert_eq!(ok("AAB="), vec![0, 0]);
        assert_eq!(ok("AA=="), vec![0]);
    }

    #[test]
    fn url_alphabet_and_spaces_are_refused() {
        bad("AA-_AA==");
        bad("AAEC Aw==");
        bad(" AAECAw==");
        bad("AAECAw==\t");
    }

    #[test]
    fn data_after_padding_is_refused() {
        bad("AA==AAEC");
    }

    #[test]
    fn encode_round_trips() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let text = encode_secret(&bytes);
        assert_eq!(text.len(), 44);
        assert_eq!(ok(&text), bytes);
    }

    #[test]
    fn error_shows_nothing_of_the_input() {
        let err = decode_secret("c2VjcmV0LXZhbHVl-ZZZ").unwrap_err();
        assert_eq!(err.to_string(), "secrets must be base64 encoded");
        assert!(!format!("{err:?}").contains("ZZZ"));
    }
}
