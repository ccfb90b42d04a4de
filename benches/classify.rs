//! The per-entry cost of an audit: classifying stored values against a realistic chain,
//! decoding a plaintext object's metadata, and reading a value's prefix without a config.
//!
//! Run with `cargo bench --bench classify` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick run).

use std::hint::black_box;

use atrest::object;
use atrest::provider::{
    aescbc::AesCbc, identity::Identity, secretbox::Secretbox, KeyMaterial, Provider,
};
use atrest::transform::{parse_prefix, Chain, State};
use criterion::{criterion_group, criterion_main, Criterion};

const ETCD_KEY: &[u8] = b"/registry/secrets/kube-system/bootstrap-token-abcdef";
/// Plaintext size: about the size of a service-account token or TLS Secret.
const SIZE: usize = 2048;

const SECRET_PB: &[u8] = include_bytes!("../tests/fixtures/k8s-api/core.v1.Secret.pb");
const SECRET_JSON: &[u8] = include_bytes!("../tests/fixtures/k8s-api/core.v1.Secret.json");

fn key(len: usize, byte: u8) -> KeyMaterial {
    KeyMaterial::new(vec![byte; len])
}

fn aescbc(name: &str, byte: u8) -> Provider {
    Provider::Aescbc(AesCbc::new(name, &key(32, byte)).expect("key"))
}

fn secretbox(name: &str, byte: u8) -> Provider {
    Provider::Secretbox(Secretbox::new(name, &key(32, byte)).expect("key"))
}

/// A cluster in the middle of a rotation: aescbc with a new and an old key, a secretbox key from
/// before that, and identity for values written before encryption was enabled. Flattened read
/// order: aescbc:key3 (writes), aescbc:key2, secretbox:key1, identity.
fn chain() -> Chain {
    Chain::from_providers(
        "secrets",
        vec![
            aescbc("key3", 3),
            aescbc("key2", 2),
            secretbox("key1", 1),
            Provider::Identity(Identity),
        ],
    )
    .expect("non-empty")
}

/// A ~2 KiB value that starts like a protobuf Secret: the real fixture, then filler bytes
/// (classify never parses the object).
fn plaintext() -> Vec<u8> {
    let mut pt = SECRET_PB.to_vec();
    pt.resize(SIZE, b'x');
    pt
}

fn classify(c: &mut Criterion) {
    let chain = chain();
    let pt = plaintext();
    let current = chain.encrypt(&pt, ETCD_KEY).expect("encrypt");
    let stale = secretbox("key1", 1)
        .encrypt(&pt, ETCD_KEY)
        .expect("encrypt");
    let unknown = aescbc("key0", 0).encrypt(&pt, ETCD_KEY).expect("encrypt");
    let cases: [(&str, &[u8], State); 4] = [
        ("current", &current, State::Current),
        ("stale-third-key", &stale, State::Stale),
        ("plaintext", &pt, State::Plaintext),
        ("unknown-key", &unknown, State::UnknownKey),
    ];
    let mut group = c.benchmark_group("classify");
    for (label, value, expected) in cases {
        assert_eq!(chain.classify(value, ETCD_KEY).state, expected, "{label}");
        group.bench_function(label, |b| {
            b.iter(|| chain.classify(black_box(value), ETCD_KEY))
        });
    }
    group.finish();

    // A rewrite of a stale value: classify, encrypt with the write key, classify again.
    c.bench_function("plan_rewrite/stale-third-key", |b| {
        b.iter(|| chain.plan_rewrite(black_box(&stale), ETCD_KEY))
    });
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("object");
    group.bench_function("decode/Secret.pb", |b| {
        b.iter(|| object::decode(black_box(SECRET_PB)).expect("decodes"))
    });
    group.bench_function("decode/Secret.json", |b| {
        b.iter(|| object::decode(black_box(SECRET_JSON)).expect("decodes"))
    });
    group.bench_function("peek_kind/Secret.pb", |b| {
        b.iter(|| object::peek_kind(black_box(SECRET_PB)).expect("a kind"))
    });
    group.finish();
}

fn prefix(c: &mut Criterion) {
    let value = aescbc("aescbckey-2025-05-16T19:21:39Z", 9)
        .encrypt(&plaintext(), ETCD_KEY)
        .expect("encrypt");
    let mut group = c.benchmark_group("parse_prefix");
    group.bench_function("aescbc", |b| {
        b.iter(|| parse_prefix(black_box(&value)).expect("encrypted"))
    });
    group.bench_function("plaintext", |b| {
        b.iter(|| parse_prefix(black_box(SECRET_PB)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = classify, decode, prefix
}
criterion_main!(benches);
