//! Property tests over the byte formats: round trips for every provider, key size, key name and
//! etcd key; and "never panics" for every reader of untrusted bytes (the chain, the object
//! decoder, the wire cursor).
//!
//! Each property runs 256 random cases by default; set `PROPTEST_CASES` for a longer run. The
//! fuzz targets in `fuzz/` check the same invariants with coverage guidance.

use proptest::prelude::*;

use crate::object;
use crate::provider::{
    aescbc::AesCbc, aesgcm::AesGcm, identity::Identity, kms::Kms, kms::KmsVersion,
    secretbox::Secretbox, KeyMaterial, Provider, ProviderKind,
};
use crate::transform::{parse_prefix, Chain, RewritePlan, State};
use crate::wire::{Reader, WireError};

/// A keyed provider kind and a key of a length it accepts.
#[derive(Debug, Clone, Copy)]
enum Keyed {
    Aescbc,
    Aesgcm,
    Secretbox,
}

impl Keyed {
    fn build(self, name: &str, key: Vec<u8>) -> Provider {
        let key = KeyMaterial::new(key);
        match self {
            Keyed::Aescbc => Provider::Aescbc(AesCbc::new(name, &key).unwrap()),
            Keyed::Aesgcm => Provider::Aesgcm(AesGcm::new(name, &key).unwrap()),
            Keyed::Secretbox => Provider::Secretbox(Secretbox::new(name, &key).unwrap()),
        }
    }
}

/// A keyed provider with a random key of every length its cipher takes, and a random name.
fn keyed_provider() -> impl Strategy<Value = (Keyed, Provider)> {
    let kind_and_len = prop_oneof![
        prop_oneof![Just(16usize), Just(24), Just(32)].prop_map(|n| (Keyed::Aescbc, n)),
        prop_oneof![Just(16usize), Just(24), Just(32)].prop_map(|n| (Keyed::Aesgcm, n)),
        Just((Keyed::Secretbox, 32usize)),
    ];
    (kind_and_len, key_name()).prop_flat_map(|((kind, len), name)| {
        proptest::collection::vec(any::<u8>(), len)
            .prop_map(move |key| (kind, kind.build(&name, key)))
    })
}

/// Key names: config-style, k3s-style with `:`, and arbitrary printable Unicode.
fn key_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,12}",
        "[a-zA-Z0-9:._-]{1,40}",
        "aescbckey-20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z",
        "\\PC{1,20}",
    ]
}

/// etcd keys: kube-apiserver-style paths and arbitrary bytes.
fn etcd_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "/registry/secrets/[a-z0-9-]{1,20}/[a-z0-9.-]{1,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Plaintexts from 0 to 8 KiB.
fn plaintext() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..8192)
}

/// A realistic chain with every provider kind: its values, written by each entry, are a good
/// source of "almost valid" input.
fn mixed_chain() -> Chain {
    let key = |b: u8| KeyMaterial::new(vec![b; 32]);
    Chain::from_providers(
        "secrets",
        vec![
            Provider::Aescbc(AesCbc::new("key3", &key(3)).unwrap()),
            Provider::Aesgcm(AesGcm::new("key:2", &key(2)).unwrap()),
            Provider::Secretbox(Secretbox::new("key1", &key(1)).unwrap()),
            Provider::Kms(Kms::new("plugin", KmsVersion::V2)),
            Provider::Identity(Identity),
        ],
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every keyed provider reads back what it wrote, for every key size, name and etcd key,
    /// and its value starts with exactly its prefix.
    #[test]
    fn providers_round_trip(
        (_, p) in keyed_provider(),
        pt in plaintext(),
        etcd_key in etcd_key(),
    ) {
        let value = p.encrypt(&pt, &etcd_key).unwrap();
        prop_assert!(value.starts_with(p.prefix()));
        let back = p.try_decrypt(&value, &etcd_key).unwrap().unwrap();
        prop_assert_eq!(back.as_slice(), pt.as_slice());
        // The prefix is what `parse_prefix` reads without a config.
        let parsed = parse_prefix(&value).unwrap();
        prop_assert_eq!(parsed.provider, Some(p.kind()));
    }

    /// Only aesgcm binds the etcd key: moving a value to another key breaks aesgcm values and
    /// leaves aescbc and secretbox values readable, as in kube-apiserver.
    #[test]
    fn only_aesgcm_binds_the_etcd_key(
        (kind, p) in keyed_provider(),
        pt in proptest::collection::vec(any::<u8>(), 0..512),
        from in etcd_key(),
        to in etcd_key(),
    ) {
        prop_assume!(from != to);
        let value = p.encrypt(&pt, &from).unwrap();
        let moved = p.try_decrypt(&value, &to).unwrap();
        match kind {
            Keyed::Aesgcm => prop_assert!(moved.is_err()),
            Keyed::Aescbc | Keyed::Secretbox => {
                let moved = moved.unwrap();
                prop_assert_eq!(moved.as_slice(), pt.as_slice())
            }
        }
    }

    /// A chain reads every value any of its entries wrote, reports the right state, and a
    /// rewrite plan for a stale or plaintext value is verified and reads back as current.
    #[test]
    fn chain_states_and_rewrite(
        pt in proptest::collection::vec(any::<u8>(), 0..2048),
        writer in 0usize..3,
        etcd_key in etcd_key(),
    ) {
        let chain = mixed_chain();
        let value = chain.entries()[writer].provider.encrypt(&pt, &etcd_key).unwrap();
        let found = chain.classify(&value, &etcd_key);
        let expected = if writer == 0 { State::Current } else { State::Stale };
        prop_assert_eq!(found.state, expected);
        prop_assert_eq!(found.read_by, Some(writer));
        prop_assert_eq!(found.plaintext.as_ref().unwrap().as_slice(), pt.as_slice());
        match chain.plan_rewrite(&value, &etcd_key).1 {
            RewritePlan::AlreadyCurrent => prop_assert_eq!(writer, 0),
            RewritePlan::Write(new) => {
                prop_assert!(writer != 0);
                let back = chain.classify(&new, &etcd_key);
                prop_assert_eq!(back.state, State::Current);
                let back = back.plaintext.unwrap();
                prop_assert_eq!(back.as_slice(), pt.as_slice());
            }
            other => prop_assert!(false, "unexpected plan {:?}", other),
        }
    }

    /// Arbitrary bytes, with or without an encrypted-looking prefix, never make the chain panic,
    /// and the state agrees with the prefix.
    #[test]
    fn classify_never_panics_on_random_values(
        prefix in prop_oneof![
            Just(&b""[..]),
            Just(&b"k8s:enc:"[..]),
            Just(&b"k8s:enc:aescbc:v1:key3:"[..]),
            Just(&b"k8s:enc:aesgcm:v1:key:2:"[..]),
            Just(&b"k8s:enc:secretbox:v1:key1:"[..]),
            Just(&b"k8s:enc:kms:v2:plugin:"[..]),
            Just(&b"k8s:enc:aescbc:v1:nope:"[..]),
        ],
        body in proptest::collection::vec(any::<u8>(), 0..256),
        etcd_key in etcd_key(),
    ) {
        let chain = mixed_chain();
        let value = [prefix, body.as_slice()].concat();
        let found = chain.classify(&value, &etcd_key);
        if !value.starts_with(b"k8s:enc:") {
            prop_assert_eq!(found.state, State::Plaintext);
        } else {
            prop_assert!(found.state != State::Plaintext);
        }
        let _ = chain.plan_rewrite(&value, &etcd_key);
        let _ = parse_prefix(&value);
    }

    /// Every truncation of a valid value is classified without panicking, and a truncated
    /// AEAD value never reads as valid.
    #[test]
    fn classify_never_panics_on_truncated_values(
        pt in proptest::collection::vec(any::<u8>(), 0..300),
        writer in 0usize..3,
        cut in any::<prop::sample::Index>(),
    ) {
        let chain = mixed_chain();
        let key = b"/registry/secrets/default/x";
        let value = chain.entries()[writer].provider.encrypt(&pt, key).unwrap();
        let short = &value[..cut.index(value.len())];
        let found = chain.classify(short, key);
        let _ = parse_prefix(short);
        let aead = matches!(
            chain.entries()[writer].provider.kind(),
            ProviderKind::Aesgcm | ProviderKind::Secretbox
        );
        if aead && short.starts_with(b"k8s:enc:") {
            prop_assert!(!matches!(found.state, State::Current | State::Stale));
        }
    }

    /// The object decoder and the page scanner never panic on random bytes, with or without the
    /// protobuf magic.
    #[test]
    fn object_readers_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        magic in any::<bool>(),
    ) {
        let value = if magic { [&object::PROTOBUF_MAGIC[..], &body].concat() } else { body };
        let _ = object::decode(&value);
        let _ = object::peek_kind(&value);
        let _ = object::decode_secret_data(&value);
    }

    /// On a well-formed envelope followed by anything (as in a database page), the page scanner
    /// reads the type the strict decoder reads from the envelope alone.
    #[test]
    fn peek_kind_agrees_with_decode(
        api_version in prop_oneof![
            Just("v1".to_owned()),
            "[a-z][a-z0-9-]{0,10}(\\.[a-z0-9-]{1,10}){0,2}/v[0-9](beta[0-9])?",
            "\\PC{0,12}",
        ],
        kind in prop_oneof!["[A-Z][A-Za-z0-9]{0,20}", "\\PC{1,12}"],
        raw in proptest::collection::vec(any::<u8>(), 0..64),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let field = |number: u8, bytes: &[u8]| {
            let mut f = vec![number << 3 | 2];
            let mut len = bytes.len();
            while len >= 0x80 {
                f.push((len as u8) | 0x80);
                len >>= 7;
            }
            f.push(len as u8);
            f.extend_from_slice(bytes);
            f
        };
        let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        let envelope = [&object::PROTOBUF_MAGIC[..], &field(1, &type_meta)].concat();
        let page = [envelope.as_slice(), &field(2, &raw), &tail].concat();
        let peeked = object::peek_kind(&page);
        prop_assert_eq!(&peeked, &object::peek_kind(&envelope));
        let decoded = object::decode(&envelope).unwrap();
        prop_assert_eq!(&decoded.api_version, &api_version);
        prop_assert_eq!(&decoded.kind, &kind);
        if let Some((v, k)) = peeked {
            prop_assert_eq!((v, k), (api_version, kind));
        }
    }

    /// Random sequences of reads never panic, keep `offset + left == len`, and a failed read
    /// leaves the cursor where it was.
    #[test]
    fn wire_reader_never_panics(
        buf in proptest::collection::vec(any::<u8>(), 0..64),
        ops in proptest::collection::vec((0u8..10, 0usize..80), 0..32),
    ) {
        let mut r = Reader::new(&buf);
        for (op, n) in ops {
            let before = r.offset();
            let failed = match op {
                0 => r.take(n, "take").is_err(),
                1 => r.u8("u8").is_err(),
                2 => r.u16_le("u16").is_err(),
                3 => r.u16_be("u16").is_err(),
                4 => r.u32_le("u32").is_err(),
                5 => r.u64_le("u64").is_err() | r.u64_be("u64").is_err(),
                6 => r.varint("varint").is_err(),
                7 => r.array::<12>("array").is_err(),
                8 => !r.eat(&buf[buf.len().min(n)..]),
                _ => {
                    let rest = r.rest().len();
                    prop_assert_eq!(rest, buf.len() - before);
                    prop_assert!(r.finish("end").is_ok());
                    false
                }
            };
            prop_assert!(r.offset() <= buf.len());
            prop_assert_eq!(r.offset() + r.left(), buf.len());
            prop_assert_eq!(r.remaining(), &buf[r.offset()..]);
            if failed && op != 5 {
                prop_assert_eq!(r.offset(), before);
            }
            if let Err(WireError::Trailing { extra, .. }) = r.finish("end") {
                prop_assert_eq!(extra, r.left());
            }
        }
    }
}
