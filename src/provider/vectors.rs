//! Known-answer tests over `tests/vectors/*.json`: one named test per file.
//!
//! The files were computed by `tests/vectors/generate.py` with independent implementations
//! (Python `cryptography` for AES, PyNaCl/libsodium for secretbox), so each test checks both
//! directions: our encryption with the same IV/nonce gives the file's bytes exactly (so the
//! independent implementation reads our values), and we decrypt the file's value (so we read
//! theirs). Error vectors must fail with the named error, without panicking.

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
struct Vector {
    provider: String,
    key_name: String,
    key: String,
    etcd_key: String,
    nonce: String,
    plaintext: String,
    value: String,
    result: String,
    error: Option<String>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn check(file: &str) {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Vector = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let key = KeyMaterial::new(unhex(&v.key));
    let (nonce, pt, value, aad) = (
        unhex(&v.nonce),
        unhex(&v.plaintext),
        unhex(&v.value),
        v.etcd_key.as_bytes(),
    );
    let (provider, ours) = match v.provider.as_str() {
        "aescbc" => {
            let p = aescbc::AesCbc::new(&v.key_name, &key).unwrap();
            let ours = p.encrypt_with_iv(&pt, &nonce.clone().try_into().unwrap());
            (Provider::Aescbc(p), ours)
        }
        "aesgcm" => {
            let p = aesgcm::AesGcm::new(&v.key_name, &key).unwrap();
            let ours = p
                .encrypt_with_nonce(&pt, aad, &nonce.clone().try_into().unwrap())
                .unwrap();
            (Provider::Aesgcm(p), ours)
        }
        "secretbox" => {
            let p = secretbox::Secretbox::new(&v.key_name, &key).unwrap();
            let ours = p
                .encrypt_with_nonce(&pt, &nonce.clone().try_into().unwrap())
                .unwrap();
            (Provider::Secretbox(p), ours)
        }
        other => panic!("{file}: unknown provider {other}"),
    };
    let read = provider
        .try_decrypt(&value, aad)
        .unwrap_or_else(|| panic!("{file}: the prefix did not match"));
    match v.result.as_str() {
        "ok" => {
            assert_eq!(ours, value, "{file}: our value differs from the vector");
            assert_eq!(read.unwrap().as_slice(), pt.as_slice(), "{file}: decrypt");
        }
        "error" => {
            let err = read.expect_err(file);
            let variant = format!("{err:?}");
            let expected = v.error.expect("error vectors name the error");
            assert!(
                variant.starts_with(&expected),
                "{file}: expected {expected}, got {variant}"
            );
        }
        other => panic!("{file}: unknown result {other}"),
    }
}

macro_rules! vectors {
    ($($name:ident => $file:literal,)*) => {
        $(#[test] fn $name() { check($file); })*

        /// Every file in the folder has a test above.
        #[test]
        fn every_vector_file_has_a_test() {
            let listed = [$($file),*];
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");
            for entry in std::fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                if name.ends_with(".json") {
                    assert!(listed.contains(&name.as_str()), "{name} has no test");
                }
            }
        }
    };
}

vectors! {
    aescbc_128_15 => "aescbc-128-15.json",
    aescbc_128_16 => "aescbc-128-16.json",
    aescbc_128_empty => "aescbc-128-empty.json",
    aescbc_128_secret => "aescbc-128-secret.json",
    aescbc_192_15 => "aescbc-192-15.json",
    aescbc_192_16 => "aescbc-192-16.json",
    aescbc_192_empty => "aescbc-192-empty.json",
    aescbc_192_secret => "aescbc-192-secret.json",
    aescbc_256_15 => "aescbc-256-15.json",
    aescbc_256_16 => "aescbc-256-16.json",
    aescbc_256_empty => "aescbc-256-empty.json",
    aescbc_256_secret => "aescbc-256-secret.json",
    aescbc_bad_padding => "aescbc-bad-padding.json",
    aescbc_key_name_with_colons => "aescbc-key-name-with-colons.json",
    aescbc_not_block_aligned => "aescbc-not-block-aligned.json",
    aescbc_prefix_only => "aescbc-prefix-only.json",
    aescbc_truncated_iv => "aescbc-truncated-iv.json",
    aesgcm_128_empty => "aesgcm-128-empty.json",
    aesgcm_128_secret => "aesgcm-128-secret.json",
    aesgcm_192_empty => "aesgcm-192-empty.json",
    aesgcm_192_secret => "aesgcm-192-secret.json",
    aesgcm_256_empty => "aesgcm-256-empty.json",
    aesgcm_256_secret => "aesgcm-256-secret.json",
    aesgcm_flipped_tag => "aesgcm-flipped-tag.json",
    aesgcm_kube_apiserver_legacy => "aesgcm-kube-apiserver-legacy.json",
    aesgcm_moved_value => "aesgcm-moved-value.json",
    aesgcm_short_tag => "aesgcm-short-tag.json",
    secretbox_empty => "secretbox-empty.json",
    secretbox_flipped_tag => "secretbox-flipped-tag.json",
    secretbox_secret => "secretbox-secret.json",
    secretbox_truncated_nonce => "secretbox-truncated-nonce.json",
}
