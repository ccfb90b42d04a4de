//! Arbitrary bytes as a stored value → `Chain::classify` and `Chain::plan_rewrite` over a fixed
//! chain with every provider kind, in three read orders.
//!
//! The keys and names are those of `tests/vectors/` (key bytes 00 01 02 …, name `key1`, etcd key
//! `/registry/secrets/default/secret1`), so the seed values decrypt and the fuzzer starts from
//! valid ciphertexts. Invariants:
//! - classify never panics, and its state agrees with the value's prefix;
//! - a `Write` plan's new value classifies as `current` and decrypts to the old plaintext;
//! - a stale or plaintext value the chain can read always gets a `Write` plan (never `Failed`).
#![no_main]

use std::sync::OnceLock;

use atrest::provider::{
    aescbc::AesCbc, aesgcm::AesGcm, identity::Identity, kms::Kms, kms::KmsVersion,
    secretbox::Secretbox, KeyMaterial, Provider,
};
use atrest::transform::{Chain, RewritePlan, State};
use libfuzzer_sys::fuzz_target;

const ETCD_KEY: &[u8] = b"/registry/secrets/default/secret1";

fn key(len: u8) -> KeyMaterial {
    KeyMaterial::new((0..len).collect())
}

/// Every provider kind, in read order.
fn providers() -> Vec<Provider> {
    vec![
        Provider::Aescbc(AesCbc::new("key1", &key(32)).unwrap()),
        Provider::Aesgcm(AesGcm::new("key1", &key(32)).unwrap()),
        Provider::Secretbox(Secretbox::new("key1", &key(32)).unwrap()),
        // Same prefix as the first entry: both are tried.
        Provider::Aescbc(AesCbc::new("key1", &key(16)).unwrap()),
        Provider::Aescbc(AesCbc::new("aescbckey-2025-05-16T19:21:39Z", &key(32)).unwrap()),
        Provider::Kms(Kms::new("plugin", KmsVersion::V2)),
        Provider::Identity(Identity),
    ]
}

/// The chain in three orders: aescbc writes, aesgcm writes, identity writes.
fn chains() -> &'static [Chain; 3] {
    static CHAINS: OnceLock<[Chain; 3]> = OnceLock::new();
    CHAINS.get_or_init(|| {
        let rotate = |n: usize| {
            let mut p = providers();
            let last = p.len() - 1;
            if n == last {
                let identity = p.remove(last);
                p.insert(0, identity);
            } else {
                p.rotate_left(n);
            }
            Chain::from_providers("secrets", p).unwrap()
        };
        [rotate(0), rotate(1), rotate(6)]
    })
}

fn check(chain: &Chain, value: &[u8]) {
    let identity_write = matches!(chain.write_entry().provider, Provider::Identity(_));
    let (found, plan) = chain.plan_rewrite(value, ETCD_KEY);
    let encrypted = value.starts_with(b"k8s:enc:");
    assert_eq!(found.state == State::Plaintext, !encrypted, "{found:?}");
    match found.state {
        State::Current => assert_eq!(found.read_by, Some(0)),
        State::Stale => assert!(found.read_by.is_some_and(|i| i > 0)),
        State::Plaintext | State::UnknownKey | State::Undecryptable | State::Kms => {}
        State::Encrypted => panic!("`encrypted` is only for classification without a config"),
    }
    assert_eq!(
        found.plaintext.is_some(),
        matches!(
            found.state,
            State::Current | State::Stale | State::Plaintext
        ),
        "{found:?}"
    );
    match plan {
        RewritePlan::Write(new_value) => {
            let back = chain.classify(&new_value, ETCD_KEY);
            let expected = if identity_write {
                State::Plaintext
            } else {
                State::Current
            };
            assert_eq!(back.state, expected, "{back:?}");
            assert_eq!(
                back.plaintext.as_deref(),
                found.plaintext.as_deref(),
                "the new value must decrypt to the old plaintext"
            );
        }
        RewritePlan::AlreadyCurrent => assert!(
            found.state == State::Current || (identity_write && found.state == State::Plaintext)
        ),
        RewritePlan::Skip => assert!(matches!(
            found.state,
            State::UnknownKey | State::Undecryptable | State::Kms
        )),
        RewritePlan::Failed(e) => panic!("a readable {} value failed to rewrite: {e}", found.state),
    }
}

fuzz_target!(|value: &[u8]| {
    for chain in chains() {
        check(chain, value);
    }
});
