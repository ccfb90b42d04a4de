//! Encrypt and decrypt throughput of every local provider on 4 KiB values.
//!
//! Run with `cargo bench --bench crypto` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick run). Throughput is reported in bytes of plaintext per second. The baseline to compare
//! with is the scratch benchmark in the design notes (§7): AES-256-CBC decrypt ≈ 4.8 GB/s,
//! encrypt ≈ 0.8 GB/s (CBC encryption is serial), AES-256-GCM ≈ 1.2 GB/s, secretbox ≈ 0.35 GB/s.
//! The target is AES-CBC decrypt ≥ 1 GB/s on one core.

use std::hint::black_box;

use atrest::provider::{
    aescbc::AesCbc, aesgcm::AesGcm, identity::Identity, kms::Kms, kms::KmsVersion,
    secretbox::Secretbox, KeyMaterial, Provider,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Plaintext size: a typical large Secret.
const SIZE: usize = 4096;
const ETCD_KEY: &[u8] = b"/registry/secrets/default/bench";

fn key(len: usize) -> KeyMaterial {
    KeyMaterial::new((0..len).map(|i| i as u8 ^ 0x5a).collect())
}

/// The providers under test, each with a label such as `aescbc-256`.
fn providers() -> Vec<(&'static str, Provider)> {
    vec![
        (
            "aescbc-128",
            Provider::Aescbc(AesCbc::new("key1", &key(16)).expect("key")),
        ),
        (
            "aescbc-192",
            Provider::Aescbc(AesCbc::new("key1", &key(24)).expect("key")),
        ),
        (
            "aescbc-256",
            Provider::Aescbc(AesCbc::new("key1", &key(32)).expect("key")),
        ),
        (
            "aesgcm-128",
            Provider::Aesgcm(AesGcm::new("key1", &key(16)).expect("key")),
        ),
        (
            "aesgcm-256",
            Provider::Aesgcm(AesGcm::new("key1", &key(32)).expect("key")),
        ),
        (
            "secretbox",
            Provider::Secretbox(Secretbox::new("key1", &key(32)).expect("key")),
        ),
        ("identity", Provider::Identity(Identity)),
    ]
}

fn plaintext() -> Vec<u8> {
    let mut pt = b"k8s\0".to_vec();
    pt.extend((0..SIZE - 4).map(|i| (i * 7) as u8));
    pt
}

fn encrypt(c: &mut Criterion) {
    let pt = plaintext();
    let mut group = c.benchmark_group("encrypt");
    group.throughput(Throughput::Bytes(SIZE as u64));
    for (label, p) in providers() {
        group.bench_with_input(BenchmarkId::new(label, SIZE), &pt, |b, pt| {
            b.iter(|| p.encrypt(black_box(pt), ETCD_KEY).expect("encrypt"))
        });
    }
    group.finish();
}

fn decrypt(c: &mut Criterion) {
    let pt = plaintext();
    let mut group = c.benchmark_group("decrypt");
    group.throughput(Throughput::Bytes(SIZE as u64));
    for (label, p) in providers() {
        let value = p.encrypt(&pt, ETCD_KEY).expect("encrypt");
        group.bench_with_input(BenchmarkId::new(label, SIZE), &value, |b, value| {
            b.iter(|| {
                p.try_decrypt(black_box(value), ETCD_KEY)
                    .expect("claimed")
                    .expect("decrypts")
            })
        });
    }
    // KMS values are only recognised (prefix match), never decrypted locally.
    let kms = Provider::Kms(Kms::new("plugin", KmsVersion::V2));
    let mut value = kms.prefix().to_vec();
    value.extend_from_slice(&pt);
    group.bench_with_input(BenchmarkId::new("kms-v2", SIZE), &value, |b, value| {
        b.iter(|| {
            kms.try_decrypt(black_box(value), ETCD_KEY)
                .expect("claimed")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = encrypt, decrypt
}
criterion_main!(benches);
