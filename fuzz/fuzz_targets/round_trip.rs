//! Arbitrary plaintext, key, key size, key name and etcd key → encrypt then decrypt with every
//! keyed provider gives the plaintext back, the value carries exactly the provider's prefix, a
//! one-entry chain classifies it as current, and only aesgcm refuses it under another etcd key.
#![no_main]

use atrest::provider::{
    aescbc::AesCbc, aesgcm::AesGcm, identity::Identity, secretbox::Secretbox, KeyMaterial, Provider,
};
use atrest::transform::{parse_prefix, Chain, State};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Picks 16, 24 or 32 bytes for the AES providers (secretbox always takes 32).
    key_size: u8,
    key: [u8; 32],
    name: String,
    etcd_key: Vec<u8>,
    other_etcd_key: Vec<u8>,
    plaintext: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let aes_len = [16, 24, 32][usize::from(input.key_size % 3)];
    let aes_key = || KeyMaterial::new(input.key[..aes_len].to_vec());
    let providers = [
        Provider::Aescbc(AesCbc::new(&input.name, &aes_key()).unwrap()),
        Provider::Aesgcm(AesGcm::new(&input.name, &aes_key()).unwrap()),
        Provider::Secretbox(
            Secretbox::new(&input.name, &KeyMaterial::new(input.key.to_vec())).unwrap(),
        ),
    ];
    for p in providers {
        let kind = p.kind();
        let value = p.encrypt(&input.plaintext, &input.etcd_key).unwrap();
        assert!(value.starts_with(p.prefix()));
        let back = p.try_decrypt(&value, &input.etcd_key).unwrap().unwrap();
        assert_eq!(back.as_slice(), input.plaintext.as_slice(), "{kind}");
        assert_eq!(parse_prefix(&value).unwrap().provider, Some(kind));

        let moved = p.try_decrypt(&value, &input.other_etcd_key).unwrap();
        match p {
            Provider::Aesgcm(_) if input.other_etcd_key != input.etcd_key => {
                assert!(moved.is_err(), "aesgcm must bind the etcd key")
            }
            _ => assert_eq!(
                moved.unwrap().as_slice(),
                input.plaintext.as_slice(),
                "{kind}"
            ),
        }

        let chain =
            Chain::from_providers("secrets", vec![p, Provider::Identity(Identity)]).unwrap();
        let found = chain.classify(&value, &input.etcd_key);
        assert_eq!(found.state, State::Current, "{kind}");
        assert_eq!(
            found.plaintext.unwrap().as_slice(),
            input.plaintext.as_slice()
        );
    }
    // Identity stores the plaintext itself, and reads back anything that is not encrypted.
    let identity = Provider::Identity(Identity);
    let stored = identity.encrypt(&input.plaintext, &input.etcd_key).unwrap();
    assert_eq!(stored, input.plaintext);
    let read = identity.try_decrypt(&stored, &input.etcd_key).unwrap();
    assert_eq!(read.is_ok(), !input.plaintext.starts_with(b"k8s:enc:"));
});
