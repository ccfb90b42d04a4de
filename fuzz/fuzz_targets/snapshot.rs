//! Arbitrary bytes as an etcd snapshot / bbolt file → `Snapshot::from_bytes`, then everything
//! the audit reads from it: the latest state (`scan`), one key at a time (`get`), the older
//! revisions (`history`) and the free pages (`free_runs`).
//!
//! Invariants: never panics, never loops (libFuzzer's timeout catches that); a scan returns keys
//! in strictly increasing order, all under the prefix, as many as `key_count` for the empty
//! prefix; `get` of every scanned key returns that same entry.
//!
//! Random bytes rarely pass bbolt's meta checksums, so each input is also tried with the
//! FNV-1a checksums of both meta pages recomputed (4096-byte pages, as etcd writes): the
//! fuzzer then reaches the meta fields themselves and the page graph behind them.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use atrest::store::snapshot::Snapshot;
use atrest::store::ReadStore;
use libfuzzer_sys::fuzz_target;

const PAGE: usize = 4096;
/// bbolt's meta page: 16-byte page header, then the meta struct whose last field, the
/// checksum, covers the 56 bytes before it.
const META: usize = 16;
const CHECKSUM: usize = META + 56;

/// Runs a snapshot future, which never waits on anything (it reads memory).
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("a snapshot read returned Pending"),
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn check(bytes: Vec<u8>) {
    let Ok(snap) = Snapshot::from_bytes(bytes) else {
        return;
    };
    let _ = (snap.revision(), snap.compacted_revision(), snap.buckets().len());

    let mut keys: Vec<Vec<u8>> = Vec::new();
    let scanned = ready(snap.scan(b"", |entry| {
        keys.push(entry.key);
        true
    }));
    if scanned.is_ok() {
        assert_eq!(keys.len(), snap.key_count(), "scan of the empty prefix");
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys out of order");
        for key in keys.iter().take(64) {
            let got = snap.get(key).expect("a scanned key reads again");
            assert_eq!(got.map(|e| e.key).as_ref(), Some(key));
        }
    }

    let prefix = b"/registry/secrets/";
    let mut under = 0usize;
    let _ = ready(snap.scan(prefix, |entry| {
        assert!(entry.key.starts_with(prefix));
        under += 1;
        true
    }));
    let _ = snap.history(prefix, |entry| assert!(entry.key.starts_with(prefix)));
    let _ = snap.free_runs().count();
}

fuzz_target!(|data: &[u8]| {
    check(data.to_vec());
    if data.len() >= 2 * PAGE {
        let mut fixed = data.to_vec();
        for page in [0, PAGE] {
            let sum = fnv1a64(&fixed[page + META..page + CHECKSUM]);
            fixed[page + CHECKSUM..page + CHECKSUM + 8].copy_from_slice(&sum.to_le_bytes());
        }
        if fixed != data {
            check(fixed);
        }
    }
});
