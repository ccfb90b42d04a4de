//! Rewriting against a real etcd: every state, no lost update under concurrent writes, dry run,
//! shutdown and resume, refusals.
//!
//! Chains are built from EncryptionConfiguration text through `Config::from_yaml`, exactly as
//! the CLI does.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use atrest::audit::{NoProgress, Verdict};
use atrest::config::Config;
use atrest::provider::kms::KmsWriteError;
use atrest::resource::Target;
use atrest::rewrite::{
    self, EntryResult, Observer, RewriteEntry, RewriteError, RewriteOptions, RewriteSummary,
};
use atrest::store::etcd::{EtcdOptions as StoreOptions, EtcdStore};
use atrest::store::{Entry, ReadStore, Store};
use atrest::transform::{Chain, State};
use base64::Engine as _;
use etcd_client::GetOptions;

use crate::common::{pseudo_random_bytes, put_many, EtcdServer};

const PREFIX: &str = "/registry/secrets/";

const KEY_CURRENT: [u8; 32] = [0x22; 32];
const KEY_OLD: [u8; 32] = [0x11; 32];
const KEY_GCM: [u8; 32] = [0x33; 32];
const KEY_UNKNOWN: [u8; 32] = [0x99; 32];

fn b64(key: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The config under test: aescbc key2 writes; aescbc key1 and aesgcm gcm1 are older keys; a KMS
/// v2 provider and identity are still readable.
fn config_yaml() -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - aescbc:
          keys:
            - name: key2
              secret: {}
            - name: key1
              secret: {}
      - aesgcm:
          keys:
            - name: gcm1
              secret: {}
      - kms:
          apiVersion: v2
          name: plugin
          endpoint: unix:///var/run/kms-plugin.sock
      - identity: {{}}
",
        b64(&KEY_CURRENT),
        b64(&KEY_OLD),
        b64(&KEY_GCM)
    )
}

/// A config with one provider and one key (to produce values as an older config wrote them).
fn single_key_yaml(provider: &str, name: &str, key: &[u8]) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - {provider}:
          keys:
            - name: {name}
              secret: {}
",
        b64(key)
    )
}

/// Builds the chain for Secrets from config text, through `Config::from_yaml`.
fn chain(yaml: &str) -> Chain {
    let config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("config rejected: {e}\n{yaml}"));
    Chain::from_config(&config, "", "secrets").expect("chain for secrets")
}

fn current_chain() -> Chain {
    chain(&config_yaml())
}

fn old_cbc_chain() -> Chain {
    chain(&single_key_yaml("aescbc", "key1", &KEY_OLD))
}

fn old_gcm_chain() -> Chain {
    chain(&single_key_yaml("aesgcm", "gcm1", &KEY_GCM))
}

fn unknown_chain() -> Chain {
    chain(&single_key_yaml("aescbc", "key9", &KEY_UNKNOWN))
}

fn key(i: usize) -> Vec<u8> {
    format!("{PREFIX}ns{}/secret-{i:05}", i % 17).into_bytes()
}

/// A plaintext value as kube-apiserver stores it (the `k8s\0` protobuf envelope).
fn plaintext(i: usize, generation: u64) -> Vec<u8> {
    let mut v = b"k8s\x00\x0a\x0d\x0a\x02v1\x12\x06Secret".to_vec();
    v.extend(pseudo_random_bytes(
        (i as u64) << 20 | generation,
        800 + i % 900,
    ));
    v
}

/// Rewrites every Secret with `chain`, through the library's one rewrite entry point.
async fn apply(
    store: &EtcdStore,
    chain: Chain,
    opts: &RewriteOptions,
    observer: &dyn Observer,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<RewriteSummary, RewriteError> {
    let store = Store::Etcd(store.clone());
    let target = Target::prefix(PREFIX, Some(chain));
    rewrite::rewrite(&store, &target, opts, observer, shutdown)
        .await
        .map(|report| report.all)
}

async fn store_for(server: &EtcdServer) -> EtcdStore {
    EtcdStore::connect(StoreOptions {
        endpoints: vec![server.endpoint.clone()],
        ..StoreOptions::default()
    })
    .await
    .expect("connect")
}

/// Every key under the prefix, keyed by key.
async fn snapshot_of(client: &etcd_client::Client) -> BTreeMap<Vec<u8>, Entry> {
    let mut resp = client
        .kv_client()
        .max_decoding_message_size(1 << 30)
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .expect("full get");
    resp.take_kvs()
        .into_iter()
        .map(|kv| {
            let e = Entry {
                mod_revision: kv.mod_revision(),
                create_revision: kv.create_revision(),
                version: kv.version(),
                lease: kv.lease(),
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
            };
            (e.key.clone(), e)
        })
        .collect()
}

fn decrypt(chain: &Chain, e: &Entry) -> (State, Vec<u8>) {
    let c = chain.classify(&e.value, &e.key);
    let plain = c.plaintext.map(|p| p.to_vec()).unwrap_or_default();
    (c.state, plain)
}

/// Counts entries; optionally asks for shutdown after `stop_after` of them.
#[derive(Default)]
struct Counter {
    total: AtomicU64,
    seen: AtomicU64,
    stop_after: Option<(u64, Arc<tokio::sync::Notify>)>,
}

impl Observer for Counter {
    fn total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
    }
    fn entry(&self, _e: &RewriteEntry) {
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some((after, notify)) = &self.stop_after {
            if seen == *after {
                notify.notify_one();
            }
        }
    }
}

/// The mixed keyspace: which original plaintext each key holds (`None`: not decryptable by the
/// config, so it must stay byte-identical).
struct Seeded {
    plaintexts: HashMap<Vec<u8>, Vec<u8>>,
    untouchable: Vec<Vec<u8>>,
    counts: BTreeMap<&'static str, u64>,
}

async fn seed_mixed(client: &etcd_client::Client, n: usize, lease: i64) -> Seeded {
    let current = current_chain();
    let (old_cbc, old_gcm, unknown) = (old_cbc_chain(), old_gcm_chain(), unknown_chain());
    let mut items = Vec::new();
    let mut plaintexts = HashMap::new();
    let mut untouchable = Vec::new();
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let k = key(i);
        let p = plaintext(i, 0);
        let (kind, value) = match i % 20 {
            0..=9 => ("plaintext", p.clone()),
            10..=12 => ("stale-cbc", old_cbc.encrypt(&p, &k).expect("encrypt")),
            13 => ("stale-gcm", old_gcm.encrypt(&p, &k).expect("encrypt")),
            14..=16 => ("current", current.encrypt(&p, &k).expect("encrypt")),
            17 => ("unknown-key", unknown.encrypt(&p, &k).expect("encrypt")),
            18 => {
                let mut v = current.encrypt(&p, &k).expect("encrypt");
                v.truncate(v.len() - 3); // no longer whole blocks
                ("undecryptable", v)
            }
            _ => {
                let mut v = b"k8s:enc:kms:v2:plugin:".to_vec();
                v.extend(pseudo_random_bytes(i as u64, 300));
                ("kms", v)
            }
        };
        *counts.entry(kind).or_default() += 1;
        if matches!(kind, "unknown-key" | "undecryptable" | "kms") {
            untouchable.push(k.clone());
        } else {
            plaintexts.insert(k.clone(), p);
        }
        let lease = if i % 7 == 0 { lease } else { 0 };
        items.push((k, value, lease));
    }
    put_many(client, items).await;
    Seeded {
        plaintexts,
        untouchable,
        counts,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_makes_plaintext_and_stale_current_and_leaves_the_rest() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    let lease = client.lease_grant(3600, None).await.unwrap().id();
    let n = 3000;
    let seeded = seed_mixed(&client, n, lease).await;
    // Outside the prefix: never touched.
    put_many(
        &client,
        vec![(
            b"/registry/configmaps/default/c".to_vec(),
            b"k8s\0cm".to_vec(),
            0,
        )],
    )
    .await;
    let before = snapshot_of(&client).await;
    let chain = current_chain();
    let store = store_for(&server).await;
    let counter = Counter::default();

    // Planning alone (scan, classify, encrypt, verify; no writes): the engine's own cost.
    let started = Instant::now();
    let planned = apply(
        &store,
        current_chain(),
        &RewriteOptions {
            dry_run: true,
            ..RewriteOptions::default()
        },
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "dry run: {} entries planned in {:.3} s = {:.0} entries/s",
        planned.scanned,
        elapsed.as_secs_f64(),
        planned.scanned as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(snapshot_of(&client).await, before);

    let started = Instant::now();
    let summary = apply(
        &store,
        current_chain(),
        &RewriteOptions::default(),
        &counter,
        std::future::pending(),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "rewrite: {} entries scanned, {} rewritten in {:.3} s = {:.0} entries/s scanned, \
         {:.0} rewrites/s (concurrency 64, ~1.3 KiB values)",
        summary.scanned,
        summary.rewritten,
        elapsed.as_secs_f64(),
        summary.scanned as f64 / elapsed.as_secs_f64(),
        summary.rewritten as f64 / elapsed.as_secs_f64()
    );

    let c = |k: &str| seeded.counts.get(k).copied().unwrap_or(0);
    assert_eq!(summary.scanned, n as u64);
    assert_eq!(
        summary.rewritten,
        c("plaintext") + c("stale-cbc") + c("stale-gcm")
    );
    assert_eq!(summary.already_current, c("current"));
    assert_eq!(
        summary.skipped,
        c("unknown-key") + c("undecryptable") + c("kms")
    );
    assert_eq!(
        (
            summary.conflicts,
            summary.failed,
            summary.deleted,
            summary.would_rewrite
        ),
        (0, 0, 0, 0)
    );
    assert!(!summary.interrupted);
    assert_eq!(summary.entries.len() as u64, n as u64 - c("current"));
    assert!(summary.entries.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(
        summary.verdict(),
        Verdict::Findings,
        "skipped entries remain"
    );
    assert_eq!(counter.total.load(Ordering::Relaxed), n as u64);
    assert_eq!(counter.seen.load(Ordering::Relaxed), n as u64);
    let by_result = |r| summary.entries.iter().filter(|e| e.result == r).count() as u64;
    assert_eq!(by_result(EntryResult::Skipped), summary.skipped);
    let skipped_states: Vec<State> = summary
        .entries
        .iter()
        .filter(|e| e.result == EntryResult::Skipped)
        .map(|e| e.from)
        .collect();
    assert!(skipped_states.contains(&State::UnknownKey));
    assert!(skipped_states.contains(&State::Undecryptable));
    assert!(skipped_states.contains(&State::Kms));

    // The JSON never carries a value.
    let json = serde_json::to_string(&summary).unwrap();
    assert!(!json.contains("Secret"), "a value leaked into the summary");

    let after = snapshot_of(&client).await;
    assert_eq!(after.len(), before.len());
    for (k, old) in &before {
        let new = &after[k];
        assert_eq!(
            new.lease,
            old.lease,
            "lease kept for {:?}",
            String::from_utf8_lossy(k)
        );
        assert_eq!(new.create_revision, old.create_revision);
        if seeded.untouchable.contains(k) {
            assert_eq!(new, old, "a skipped entry was written");
            continue;
        }
        let (state, plain) = decrypt(&chain, new);
        assert_eq!(state, State::Current);
        assert_eq!(&plain, &seeded.plaintexts[k], "plaintext changed");
        if decrypt(&chain, old).0 == State::Current {
            assert_eq!(
                new.mod_revision, old.mod_revision,
                "a current entry was written"
            );
        }
    }
    let cm = client
        .get("/registry/configmaps/default/c", None)
        .await
        .unwrap();
    assert_eq!(cm.kvs()[0].value(), b"k8s\0cm");

    // A second run finds nothing to do.
    let again = apply(
        &store,
        current_chain(),
        &RewriteOptions::default(),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(again.rewritten, 0);
    assert_eq!(
        again.already_current,
        summary.rewritten + summary.already_current
    );
    assert_eq!(again.skipped, summary.skipped);
    assert_eq!(snapshot_of(&client).await, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_update_is_lost_to_concurrent_writes() {
    let server = EtcdServer::start();
    let client = server.client().await;
    let n = 3000usize;
    put_many(
        &client,
        (0..n).map(|i| (key(i), plaintext(i, 0), 0)).collect(),
    )
    .await;
    let chain = Arc::new(current_chain());
    let store = store_for(&server).await;

    // A writer that keeps overwriting random keys — with plaintext, as an apiserver with the
    // old config would, or encrypted, as one with the new config would — and deletes some.
    // Four writers, each owning the keys i with i % 4 == w, so "the last value written to a
    // key" is well defined.
    let rewrite_done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4usize)
        .map(|w| {
            let chain = Arc::clone(&chain);
            let rewrite_done = Arc::clone(&rewrite_done);
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut during = 0u64;
                let mut last: HashMap<usize, Option<Vec<u8>>> = HashMap::new();
                let mut rng = pseudo_random_bytes(w as u64 + 7, 8 * 800).into_iter();
                let mut next = || {
                    let b = [0u8; 4].map(|_| rng.next().unwrap_or(0));
                    u32::from_le_bytes(b) as usize
                };
                for generation in 1..=800u64 {
                    let i = (next() % (n / 4)) * 4 + w;
                    let (r, k) = (next(), key(i));
                    if matches!(last.get(&i), Some(None)) {
                        continue; // deleted keys stay deleted
                    }
                    if !rewrite_done.load(Ordering::Relaxed) {
                        during += 1;
                    }
                    if r % 10 == 0 {
                        crate::common::delete_key(&mut client, k).await;
                        last.insert(i, None);
                    } else {
                        let p = plaintext(i, generation);
                        let value = if r % 10 < 5 {
                            p.clone()
                        } else {
                            chain.encrypt(&p, &k).unwrap()
                        };
                        crate::common::put_key(&mut client, k, value).await;
                        last.insert(i, Some(p));
                    }
                }
                (last, during)
            })
        })
        .collect();

    let started = Instant::now();
    let summary = apply(
        &store,
        current_chain(),
        &RewriteOptions::default(),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap();
    rewrite_done.store(true, Ordering::Relaxed);
    eprintln!(
        "rewrite under concurrent writes: {} scanned in {:.3} s: {} rewritten, {} already \
         current, {} deleted, {} conflicts",
        summary.scanned,
        started.elapsed().as_secs_f64(),
        summary.rewritten,
        summary.already_current,
        summary.deleted,
        summary.conflicts
    );
    let mut last: HashMap<usize, Option<Vec<u8>>> = HashMap::new();
    let mut during = 0;
    for writer in writers {
        let (l, d) = writer.await.unwrap();
        last.extend(l);
        during += d;
    }
    let touched = last.len();
    let deleted = last.values().filter(|v| v.is_none()).count();
    // Keys deleted before the first page was read are not scanned.
    assert!(summary.scanned <= n as u64 && summary.scanned >= (n - deleted) as u64);
    assert_eq!(summary.failed, 0);
    eprintln!(
        "the writer made {during} writes while the rewrite ran; in all it changed {touched} \
         keys and deleted {deleted}"
    );
    assert!(
        during > 100,
        "the writer did not overlap the rewrite ({during} writes)"
    );

    let check = |snapshot: &BTreeMap<Vec<u8>, Entry>| {
        for i in 0..n {
            let k = key(i);
            match last.get(&i) {
                Some(None) => assert!(!snapshot.contains_key(&k), "deleted key {i} re-created"),
                Some(Some(p)) => {
                    let (_, plain) = decrypt(&chain, &snapshot[&k]);
                    assert_eq!(&plain, p, "key {i} lost the writer's last value");
                }
                None => {
                    let (state, plain) = decrypt(&chain, &snapshot[&k]);
                    assert_eq!(state, State::Current, "key {i} untouched by the writer");
                    assert_eq!(plain, plaintext(i, 0));
                }
            }
        }
    };
    let after = snapshot_of(&client).await;
    check(&after);

    // With the writer gone, a second run makes everything current and loses nothing either.
    let second = apply(
        &store,
        current_chain(),
        &RewriteOptions::default(),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(second.scanned, (n - deleted) as u64);
    assert_eq!((second.conflicts, second.failed, second.skipped), (0, 0, 0));
    assert_eq!(second.verdict(), Verdict::Clean);
    let after = snapshot_of(&client).await;
    check(&after);
    assert!(after
        .values()
        .all(|e| decrypt(&chain, e).0 == State::Current));
    let third = apply(
        &store,
        current_chain(),
        &RewriteOptions::default(),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(third.already_current, third.scanned);
    assert!(third.entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_nothing() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    let lease = client.lease_grant(3600, None).await.unwrap().id();
    let seeded = seed_mixed(&client, 400, lease).await;
    let before = snapshot_of(&client).await;
    let revision_before = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let store = store_for(&server).await;
    let summary = apply(
        &store,
        current_chain(),
        &RewriteOptions {
            dry_run: true,
            ..RewriteOptions::default()
        },
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap();
    let c = |k: &str| seeded.counts.get(k).copied().unwrap_or(0);
    assert_eq!(
        summary.would_rewrite,
        c("plaintext") + c("stale-cbc") + c("stale-gcm")
    );
    assert_eq!(summary.rewritten, 0);
    assert_eq!(summary.verdict(), Verdict::Findings);
    assert!(summary
        .entries
        .iter()
        .any(|e| e.result == EntryResult::WouldRewrite && e.from == State::Stale));
    assert_eq!(snapshot_of(&client).await, before);
    let revision_after = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert_eq!(revision_after, revision_before, "a dry run wrote something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_early_and_a_second_run_finishes() {
    let server = EtcdServer::start();
    let client = server.client().await;
    let n = 3000usize;
    put_many(
        &client,
        (0..n).map(|i| (key(i), plaintext(i, 0), 0)).collect(),
    )
    .await;
    let chain = current_chain();
    let store = store_for(&server).await;
    let notify = Arc::new(tokio::sync::Notify::new());
    let counter = Counter {
        stop_after: Some((500, Arc::clone(&notify))),
        ..Counter::default()
    };
    let first = apply(
        &store,
        current_chain(),
        &RewriteOptions::default(),
        &counter,
        notify.notified(),
    )
    .await
    .unwrap();
    eprintln!(
        "interrupted after {} entries ({} rewritten)",
        first.scanned, first.rewritten
    );
    assert!(first.interrupted);
    assert!(
        first.scanned >= 500 && first.scanned < n as u64,
        "{}",
        first.scanned
    );
    assert_eq!(
        first.rewritten, first.scanned,
        "in-flight transactions were finished"
    );
    assert_eq!(first.verdict(), Verdict::Findings);
    // Everything is either rewritten or untouched, never half-done.
    let mid = snapshot_of(&client).await;
    let current = mid
        .values()
        .filter(|e| decrypt(&chain, e).0 == State::Current)
        .count();
    assert_eq!(current as u64, first.rewritten);

    let second = apply(
        &store,
        current_chain(),
        &RewriteOptions::default(),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(!second.interrupted);
    assert_eq!(second.already_current, first.rewritten);
    assert_eq!(second.rewritten, n as u64 - first.rewritten);
    assert_eq!(second.verdict(), Verdict::Clean);
    for (i, e) in snapshot_of(&client).await.values().enumerate() {
        let (state, _) = decrypt(&chain, e);
        assert_eq!(state, State::Current, "entry {i}");
    }
}

#[tokio::test]
async fn identity_and_kms_write_providers_are_refused() {
    let server = EtcdServer::start();
    let client = server.client().await;
    let k = key(1);
    let p = plaintext(1, 0);
    let stale = current_chain().encrypt(&p, &k).unwrap();
    put_many(
        &client,
        vec![(k.clone(), stale, 0), (key(2), plaintext(2, 0), 0)],
    )
    .await;
    let store = store_for(&server).await;

    // identity first: the "decrypt all data" procedure.
    let identity_yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - identity: {{}}
      - aescbc:
          keys:
            - name: key2
              secret: {}
",
        b64(&KEY_CURRENT)
    );
    let err = apply(
        &store,
        chain(&identity_yaml),
        &RewriteOptions::default(),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RewriteError::IdentityWrite), "{err:?}");
    assert!(err.advice().contains("--allow-decrypt"));

    let summary = apply(
        &store,
        chain(&identity_yaml),
        &RewriteOptions {
            allow_decrypt: true,
            ..RewriteOptions::default()
        },
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!((summary.rewritten, summary.already_current), (1, 1));
    assert_eq!(summary.verdict(), Verdict::Clean);
    let now = store.page(PREFIX.as_bytes(), None, None).await.unwrap();
    assert_eq!(now.entries[0].key, k);
    assert_eq!(
        now.entries[0].value, p,
        "decrypted back to the exact plaintext"
    );

    // KMS first without a plugin connection (`--no-kms`): refused before anything is read.
    let kms_yaml = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - kms:
          apiVersion: v2
          name: plugin
          endpoint: unix:///var/run/kms-plugin.sock
      - identity: {}
";
    let err = apply(
        &store,
        chain(kms_yaml),
        &RewriteOptions::default(),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RewriteError::KmsWrite(KmsWriteError::NoPlugin(ref name)) if name == "plugin"),
        "{err:?}"
    );
}
