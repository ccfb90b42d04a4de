//! A kube-apiserver's identity: the name of its identity Lease, derived from its hostname, and the
//! hashes its metrics label it with.
//!
//! # Format
//! From `k8s.io/apiserver/pkg/server/config.go` (`NewConfig`):
//!
//! ```text
//! data = u16-BE len(hostname) ‖ hostname ‖ u16-BE len("kube-apiserver") ‖ "kube-apiserver"
//! APIServerID = "apiserver-" ‖ lowercase(base32-std-unpadded(SHA-256(data)[..16]))
//! ```
//!
//! Metrics label the instance with `apiserver_id_hash = "sha256:" ‖ hex(SHA-256(APIServerID))`
//! (`pkg/server/options/encryptionconfig/metrics/metrics.go` `getHash`), and a config file with
//! `hash = "sha256:" ‖ hex(SHA-256(file bytes))` (`computeEncryptionConfigHash`).

use sha2::{Digest, Sha256};

/// The identity kube-apiserver hashes beside its hostname.
const COMPONENT: &str = "kube-apiserver";

/// The APIServerID (the identity Lease's name in `kube-system`) of a kube-apiserver whose
/// hostname is `hostname`.
pub fn apiserver_id(hostname: &str) -> String {
    let mut data = Vec::with_capacity(4 + hostname.len() + COMPONENT.len());
    for part in [hostname.as_bytes(), COMPONENT.as_bytes()] {
        // cryptobyte's AddUint16LengthPrefixed; a hostname is at most 64 bytes on Linux.
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(&part[..usize::from(len)]);
    }
    let digest = Sha256::digest(&data);
    format!("apiserver-{}", base32_lower_unpadded(&digest[..16]))
}

/// `"sha256:"` + lowercase hex SHA-256 of `data`: how kube-apiserver's metrics name a config
/// file (its raw bytes), an APIServerID or a KMS key ID.
pub fn sha256_label(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// RFC 4648 base32 (standard alphabet) in lower case, without padding.
pub(crate) fn base32_lower_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiserver_id_matches_kube_apiserver() {
        // Read from the identity Lease of a kube-apiserver v1.37.2 started with hostname cp-1.
        assert_eq!(apiserver_id("cp-1"), "apiserver-rplpdvtx3lntmi4xy2xnxookk4");
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32_lower_unpadded(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn sha256_label_is_what_sha256sum_prints() {
        assert_eq!(
            sha256_label(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
