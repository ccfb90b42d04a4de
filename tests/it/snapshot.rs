//! The snapshot reader against files written by a real etcd: the keyspace matches live etcd
//! field by field, history and free-page residue behave as etcd's compaction and defrag say,
//! a live data file is refused without blocking, damaged files never panic or hang, and a file
//! rewritten by `write_snapshot` is restored and served by etcd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atrest::store::snapshot::{write_snapshot, Snapshot, SnapshotError};
use atrest::store::{prefix_end, Entry, ReadStore};
use etcd_client::{Client, GetOptions, PutOptions};
use sha2::{Digest, Sha256};

use crate::common::{
    etcd_binary, etcdctl_binary, free_port, put_raw, snapshot_restore_command, EtcdServer,
};

const PREFIX: &[u8] = b"/registry/secrets/";

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A plaintext-looking Secret value (protobuf envelope magic + payload).
fn plain_value(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = b"k8s\0\n\x0c\n\x02v1\x12\x06Secret".to_vec();
    v.extend(rng.bytes(n));
    v
}

/// An aescbc-looking value.
fn encrypted_value(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = b"k8s:enc:aescbc:v1:key1:".to_vec();
    v.extend(rng.bytes(n));
    v
}

fn live_entry(kv: &etcd_client::KeyValue) -> Entry {
    Entry {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        create_revision: kv.create_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

/// Every key under `prefix` in live etcd, read in pages (values can exceed 4 MiB in total),
/// and the revision of the first page.
async fn live_entries(client: &mut Client, prefix: &[u8]) -> (Vec<Entry>, i64) {
    // An empty prefix means every key: etcd's range [\0, \0).
    let end = prefix_end(prefix);
    let mut from = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.to_vec()
    };
    let mut out = Vec::new();
    let mut revision = 0;
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(500);
        if revision != 0 {
            opts = opts.with_revision(revision);
        }
        let resp = client
            .get(from.clone(), Some(opts))
            .await
            .expect("live range read");
        if revision == 0 {
            revision = resp.header().expect("response header").revision();
        }
        out.extend(resp.kvs().iter().map(live_entry));
        if !resp.more() {
            return (out, revision);
        }
        from = out
            .last()
            .expect("a page with more has entries")
            .key
            .clone();
        from.push(0);
    }
}

async fn scan(snap: &Snapshot, prefix: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let info = snap
        .scan(prefix, |e| {
            out.push(e);
            true
        })
        .await
        .expect("snapshot scan");
    assert_eq!(info.revision, snap.revision());
    assert_eq!(info.entries as usize, out.len());
    out
}

fn assert_same(snapshot: &[Entry], live: &[Entry]) {
    assert_eq!(snapshot.len(), live.len(), "number of keys");
    for (s, l) in snapshot.iter().zip(live) {
        assert_eq!(s, l, "entry {:?}", String::from_utf8_lossy(&l.key));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Seeds the keyspace the comparison test reads: 50 Secrets (plaintext and encrypted), some
/// updated, some deleted, two on a lease, and keys outside the prefix.
async fn seed(client: &mut Client) -> i64 {
    let mut rng = Rng(0x5eed);
    for i in 0..50 {
        let key = format!("/registry/secrets/ns{}/secret-{i:02}", i % 5);
        let value = if i % 2 == 0 {
            plain_value(&mut rng, 40 + i * 7)
        } else {
            encrypted_value(&mut rng, 60 + i * 5)
        };
        put_raw(client, key.as_bytes(), &value).await;
    }
    for i in (0..50).step_by(7) {
        let key = format!("/registry/secrets/ns{}/secret-{i:02}", i % 5);
        put_raw(client, key.as_bytes(), &encrypted_value(&mut rng, 99)).await;
    }
    for i in [3, 11, 26, 40] {
        let key = format!("/registry/secrets/ns{}/secret-{i:02}", i % 5);
        client.delete(key, None).await.expect("delete");
    }
    let lease = client
        .lease_grant(3600, None)
        .await
        .expect("lease grant")
        .id();
    for name in ["leased-a", "leased-b"] {
        let key = format!("/registry/secrets/kube-system/{name}");
        let value = plain_value(&mut rng, 30);
        let opts = PutOptions::new().with_lease(lease);
        client
            .put(key, value, Some(opts))
            .await
            .expect("put with lease");
    }
    put_raw(client, b"/registry/configmaps/default/c", b"k8s\0cm").await;
    put_raw(client, b"/registry/secrets", b"not under the prefix").await;
    put_raw(client, b"/registry/secrets0", b"just past the prefix").await;
    lease
}

#[tokio::test]
async fn scan_matches_live_etcd_field_by_field() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    let lease = seed(&mut client).await;
    let path = server.snapshot_save("seeded.db");
    let snap = Snapshot::open(&path).unwrap();

    let (live, live_rev) = live_entries(&mut client, PREFIX).await;
    assert_eq!(live.len(), 48, "50 seeded - 4 deleted + 2 leased");
    assert_eq!(snap.revision(), live_rev);
    assert!(snap.has_hash());
    assert_eq!(snap.compacted_revision(), None);
    assert_eq!(snap.page_size(), 4096);
    let scanned = scan(&snap, PREFIX).await;
    assert_same(&scanned, &live);
    assert_eq!(snap.count(PREFIX).await.unwrap(), 48);
    let leased: Vec<_> = scanned.iter().filter(|e| e.lease != 0).collect();
    assert_eq!(leased.len(), 2);
    assert!(leased.iter().all(|e| e.lease == lease));
    assert!(
        scanned.iter().any(|e| e.version > 1),
        "updates bump the version"
    );

    // The whole keyspace, keys outside the prefix included.
    let (all_live, _) = live_entries(&mut client, b"").await;
    let all = scan(&snap, b"").await;
    assert_same(&all, &all_live[..]);
    assert_eq!(all.len(), 48 + 3);
    let outside = snap.get(b"/registry/secrets0").unwrap().unwrap();
    assert_eq!(outside.value, b"just past the prefix");
    assert_eq!(snap.get(b"/registry/secrets/ns3/secret-03").unwrap(), None);

    assert_eq!(snap.source(), format!("snapshot {}", path.display()));
    let names: Vec<_> = snap.buckets().iter().map(|b| b.name.clone()).collect();
    for want in [&b"key"[..], b"meta", b"lease", b"members"] {
        assert!(
            names.iter().any(|n| n == want),
            "bucket {want:?} in {names:?}"
        );
    }
    // Pinning another revision is refused: a file holds one.
    let err = snap
        .page(PREFIX, None, Some(live_rev - 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("holds revision"), "{err}");
}

#[tokio::test]
async fn history_keeps_older_revisions_until_compaction() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    let key = b"/registry/secrets/default/thrice";
    for v in [&b"k8s\0one"[..], b"k8s\0two", b"k8s\0three"] {
        put_raw(&mut client, key, v).await;
    }
    let gone = b"/registry/secrets/default/gone";
    put_raw(&mut client, gone, b"k8s\0gone-1").await;
    put_raw(&mut client, gone, b"k8s\0gone-2").await;
    client.delete(&gone[..], None).await.unwrap();
    let last = put_raw(&mut client, b"/registry/configmaps/x", b"k8s\0other").await;

    let snap = Snapshot::open(&server.snapshot_save("before.db")).unwrap();
    let mut older = Vec::new();
    let n = snap.history(PREFIX, |e| older.push(e)).unwrap();
    assert_eq!(n as usize, older.len());
    let of = |k: &[u8]| -> Vec<Vec<u8>> {
        older
            .iter()
            .filter(|e| e.key == k)
            .map(|e| e.value.clone())
            .collect()
    };
    assert_eq!(of(key), vec![b"k8s\0one".to_vec(), b"k8s\0two".to_vec()]);
    assert_eq!(
        of(gone),
        vec![b"k8s\0gone-1".to_vec(), b"k8s\0gone-2".to_vec()],
        "a deleted key's revisions stay until compaction"
    );
    assert_eq!(older.len(), 4, "nothing outside the prefix");
    let first = older.iter().find(|e| e.value == b"k8s\0one").unwrap();
    assert_eq!(
        (first.version, first.create_revision),
        (1, first.mod_revision)
    );
    assert_eq!(snap.revision(), last);

    server.etcdctl(&["compact", &last.to_string(), "--physical"]);
    let snap = Snapshot::open(&server.snapshot_save("after.db")).unwrap();
    let n = snap.history(PREFIX, |_| {}).unwrap();
    assert_eq!(n, 0, "compaction removes every older revision");
    assert_eq!(snap.compacted_revision(), Some(last));
    assert_eq!(snap.revision(), last);
    let thrice = snap.get(key).unwrap().unwrap();
    assert_eq!(
        (thrice.value.as_slice(), thrice.version),
        (&b"k8s\0three"[..], 3)
    );
    assert_eq!(snap.get(gone).unwrap(), None);
}

#[tokio::test]
async fn free_pages_keep_residue_until_defrag() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    let marker = b"RESIDUE-MARKER-7f3a";
    let key = b"/registry/secrets/default/leaky";
    let mut rng = Rng(7);
    for i in 0..40 {
        let mut v = b"k8s\0".to_vec();
        v.extend_from_slice(marker);
        v.extend_from_slice(format!("-{i:03}-").as_bytes());
        v.extend(rng.bytes(1500));
        put_raw(&mut client, key, &v).await;
    }
    client.delete(&key[..], None).await.unwrap();
    // Unrelated traffic after the delete, as a cluster has.
    for i in 0..20 {
        let k = format!("/registry/secrets/default/other-{i}");
        put_raw(&mut client, k.as_bytes(), &encrypted_value(&mut rng, 500)).await;
    }
    let rev = put_raw(&mut client, b"/registry/configmaps/x", b"k8s\0cm").await;

    // Before compaction the marker is history, not residue.
    let snap = Snapshot::open(&server.snapshot_save("uncompacted.db")).unwrap();
    let mut in_history = 0;
    snap.history(PREFIX, |e| {
        in_history += usize::from(contains(&e.value, marker))
    })
    .unwrap();
    assert_eq!(in_history, 40);

    server.etcdctl(&["compact", &rev.to_string(), "--physical"]);
    let snap = Snapshot::open(&server.snapshot_save("compacted.db")).unwrap();
    assert_eq!(snap.history(b"", |_| {}).unwrap(), 0);
    let live = scan(&snap, b"").await;
    assert!(live.iter().all(|e| !contains(&e.value, marker)));
    let free_hits = snap
        .free_pages()
        .map(Result::unwrap)
        .filter(|(_, bytes)| contains(bytes, marker))
        .count();
    let free_total = snap.free_pages().count();
    eprintln!(
        "after compaction: {free_total} free pages, {free_hits} hold the marker ({} bytes, hwm {})",
        std::fs::metadata(snap.path()).unwrap().len(),
        snap.high_water_mark()
    );
    assert!(
        free_hits > 0,
        "compacted revisions leave plaintext in free pages"
    );
    assert!(snap
        .free_runs()
        .map(Result::unwrap)
        .any(|run| contains(&run.bytes, marker)));

    server.etcdctl(&["defrag"]);
    let snap = Snapshot::open(&server.snapshot_save("defragged.db")).unwrap();
    let hits = snap
        .free_pages()
        .map(Result::unwrap)
        .filter(|(_, b)| contains(b, marker))
        .count();
    let whole = std::fs::read(snap.path()).unwrap();
    eprintln!(
        "after defrag: {} free pages, {hits} hold the marker",
        snap.free_pages().count()
    );
    assert_eq!(
        hits, 0,
        "defrag rewrites the file without free pages' contents"
    );
    assert!(!contains(&whole, marker), "no trace anywhere in the file");
    assert_eq!(scan(&snap, b"").await.len(), live.len());
}

#[tokio::test]
async fn a_running_etcds_data_file_is_locked_not_waited_for() {
    let mut server = EtcdServer::start();
    let mut client = server.client().await;
    seed(&mut client).await;
    // A snapshot forces etcd's backend to commit: the data file then holds everything.
    let snap_path = server.snapshot_save("reference.db");
    let db = server.data_dir().join("member/snap/db");

    let started = Instant::now();
    let err = Snapshot::open(&db).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "must not block");
    assert!(matches!(err, SnapshotError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("etcdctl snapshot save"), "{err}");

    server.kill();
    let data = Snapshot::open(&db).unwrap();
    let reference = Snapshot::open(&snap_path).unwrap();
    assert!(!data.has_hash(), "a data file has no trailer");
    assert_eq!(data.revision(), reference.revision());
    assert_same(&scan(&data, b"").await, &scan(&reference, b"").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_entries_scan_correctly() {
    const N: usize = 5000;
    let server = EtcdServer::start();
    let client = server.client().await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16 {
        let mut c = client.clone();
        tasks.spawn(async move {
            let mut rng = Rng(1000 + t as u64);
            for i in (t..N).step_by(16) {
                let key = format!("/registry/secrets/ns{}/s-{i:05}", i % 50);
                let value = if i % 500 == 0 {
                    // Larger than a page: an overflow run.
                    plain_value(&mut rng, 10 * 1024)
                } else if i % 3 == 0 {
                    plain_value(&mut rng, 2048)
                } else {
                    encrypted_value(&mut rng, 2048)
                };
                c.put(key, value, None).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let path = server.snapshot_save("big.db");
    let size = std::fs::metadata(&path).unwrap().len();

    let started = Instant::now();
    let snap = Snapshot::open(&path).unwrap();
    let opened = started.elapsed();
    let scanned = scan(&snap, PREFIX).await;
    let total = started.elapsed();
    eprintln!(
        "{N} entries x 2 KiB: file {:.1} MB, open {:.3} s, open+scan {:.3} s (debug build)",
        size as f64 / 1e6,
        opened.as_secs_f64(),
        total.as_secs_f64()
    );
    let mut client = client;
    let (live, rev) = live_entries(&mut client, PREFIX).await;
    assert_eq!(live.len(), N);
    assert_eq!(snap.revision(), rev);
    assert_same(&scanned, &live);

    // The writer on a multi-level tree with overflow values: read back, then served by etcd.
    let out = server.scratch().join("big-rewritten.db");
    let started = Instant::now();
    let stats = write_snapshot(&snap, &out, false, |e| {
        e.value
            .starts_with(b"k8s\0")
            .then(|| fake_encrypt(&e.value))
    })
    .unwrap();
    eprintln!(
        "write_snapshot: {stats:?} in {:.3} s (debug build)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        stats.replaced,
        (0..N).filter(|i| i % 3 == 0 || i % 500 == 0).count() as u64
    );
    let expected: Vec<Entry> = live.iter().map(replaced).collect();
    let re = Snapshot::open(&out).unwrap();
    assert_same(&scan(&re, PREFIX).await, &expected);
    let restored = restore_and_start(&out, server.scratch());
    let mut c = Client::connect([restored.endpoint.as_str()], None)
        .await
        .unwrap();
    let (served, served_rev) = live_entries(&mut c, PREFIX).await;
    assert_eq!(served_rev, rev);
    assert_same(&served, &expected);
}

/// Rewrites the trailer of `db` (the bbolt part) so that the parser itself is exercised.
fn with_trailer(mut db: Vec<u8>) -> Vec<u8> {
    let sum = Sha256::digest(&db);
    db.extend_from_slice(&sum);
    db
}

fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    Snapshot::open(&path)
}

/// Uses every read path of an opened snapshot, as a caller would, and the writer.
fn exercise(snap: &Snapshot, out: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _ = rt.block_on(snap.scan(b"", |_| true));
    let _ = snap.history(b"", |_| {});
    let _ = snap.free_pages().count();
    let _ = snap.free_runs().count();
    if write_snapshot(snap, out, true, |e| Some(e.value.repeat(2))).is_ok() {
        // Whatever the writer accepted, the reader reads back.
        Snapshot::open(out).expect("the writer's output opens");
    }
}

#[tokio::test]
async fn damaged_files_are_errors_never_panics() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    seed(&mut client).await;
    let path = server.snapshot_save("good.db");
    let good = std::fs::read(&path).unwrap();
    let db = good[..good.len() - 32].to_vec();
    let dir = server.scratch().join("damaged");
    std::fs::create_dir_all(&dir).unwrap();
    let reference = scan(&Snapshot::open(&path).unwrap(), b"").await;

    // Truncations: shorter than a meta, inside the tree, without the trailer.
    for len in [
        1,
        10,
        79,
        100,
        4096,
        4096 + 32,
        8192,
        3 * 4096,
        db.len() / 2,
        good.len() - 1,
    ] {
        let r = open_bytes(&dir, "truncated", &good[..len]);
        assert!(r.is_err(), "truncated at {len} opened");
    }
    let r = open_bytes(&dir, "no-trailer", &db).unwrap();
    assert!(!r.has_hash());
    assert_same(&scan(&r, b"").await, &reference);

    // A flipped trailer byte.
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let err = open_bytes(&dir, "flipped", &flipped).unwrap_err();
    assert!(matches!(err, SnapshotError::HashMismatch { .. }), "{err}");

    // Meta pages: one zeroed leaves the other; both zeroed is not bbolt any more.
    let mut zero0 = db.clone();
    zero0[..4096].fill(0);
    let s = open_bytes(&dir, "zero0", &with_trailer(zero0.clone())).unwrap();
    assert_same(&scan(&s, b"").await, &reference);
    let mut zero01 = zero0;
    zero01[4096..8192].fill(0);
    let err = open_bytes(&dir, "zero01", &with_trailer(zero01)).unwrap_err();
    assert!(matches!(err, SnapshotError::NotEtcd { .. }), "{err}");

    // A torn meta (bad checksum) on both copies.
    let mut torn = db.clone();
    torn[16 + 48] ^= 0xff; // txid of meta 0
    torn[4096 + 16 + 48] ^= 0xff; // txid of meta 1
    let err = open_bytes(&dir, "torn", &with_trailer(torn)).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Corrupt { page: Some(0), .. }),
        "{err}"
    );

    // Wrong magic on both meta pages.
    let mut magic = db.clone();
    magic[16] ^= 0x01;
    magic[4096 + 16] ^= 0x01;
    let err = open_bytes(&dir, "magic", &with_trailer(magic)).unwrap_err();
    assert!(matches!(err, SnapshotError::NotEtcd { .. }), "{err}");

    // Not a database at all.
    let err = open_bytes(&dir, "text", b"apiVersion: v1\nkind: Secret\n").unwrap_err();
    assert!(matches!(err, SnapshotError::NotEtcd { .. }), "{err}");
    let err = open_bytes(&dir, "empty", b"").unwrap_err();
    assert!(matches!(err, SnapshotError::NotEtcd { .. }), "{err}");
    let err = Snapshot::open(&dir).unwrap_err();
    assert!(matches!(err, SnapshotError::NotEtcd { .. }), "{err}");
    let err = Snapshot::open(&dir.join("missing")).unwrap_err();
    assert!(matches!(err, SnapshotError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    // 500 deterministic random mutations, trailer recomputed: the parser must answer Err or a
    // result, never panic, never hang (a watchdog bounds the whole loop).
    let (tx, rx) = std::sync::mpsc::channel();
    let out = dir.join("mutated-rewritten.db");
    let worker = std::thread::spawn(move || {
        let mut rng = Rng(0xdecaf);
        let (mut ok, mut err) = (0, 0);
        for round in 0..500 {
            let mut bytes = db.clone();
            // Most rounds spare the meta pages so that the tree walk is what gets tested.
            let lo = if round % 5 == 0 { 0 } else { 2 * 4096 };
            let edits = 1 + rng.below(8);
            for _ in 0..edits {
                let at = if round % 2 == 1 {
                    // A page header or the start of its element array: structure, not data.
                    let pages = (bytes.len() - lo) / 4096;
                    lo + rng.below(pages as u64) as usize * 4096 + rng.below(96) as usize
                } else {
                    lo + rng.below((bytes.len() - lo) as u64) as usize
                };
                match rng.below(4) {
                    0 => bytes[at] ^= 1 << rng.below(8),
                    1 => bytes[at] = rng.next() as u8,
                    2 => bytes[at] = 0xff,
                    _ => bytes[at] = 0,
                }
            }
            match Snapshot::from_bytes(with_trailer(bytes)) {
                Ok(s) => {
                    exercise(&s, &out);
                    ok += 1;
                }
                Err(_) => err += 1,
            }
        }
        tx.send((ok, err)).unwrap();
    });
    let (ok, err) = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the mutation loop hung or panicked");
    worker.join().unwrap();
    eprintln!("500 mutations: {ok} opened, {err} rejected");
    assert_eq!(ok + err, 500);
    assert!(err > 0);
}

/// An etcd the test starts itself on a data directory restored from a snapshot (the harness
/// only starts fresh clusters). Killed on drop.
struct Restored {
    child: Child,
    endpoint: String,
}

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `etcdctl snapshot restore`s `snapshot` under `dir`, starts etcd on it and waits until healthy.
fn restore_and_start(snapshot: &Path, dir: &Path) -> Restored {
    let peer = format!("http://127.0.0.1:{}", free_port());
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let cluster = format!("restored={peer}");
    let data: PathBuf = dir.join("restored-data");
    let out = snapshot_restore_command()
        .arg(snapshot)
        .arg("--data-dir")
        .arg(&data)
        .args(["--name", "restored", "--initial-cluster", &cluster])
        .args(["--initial-advertise-peer-urls", &peer])
        .output()
        .expect("run snapshot restore");
    assert!(
        out.status.success(),
        "snapshot restore refused the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log_path = dir.join("restored-etcd.log");
    let log = std::fs::File::create(&log_path).expect("etcd log");
    let child = Command::new(etcd_binary())
        .arg("--data-dir")
        .arg(&data)
        .args(["--name", "restored", "--initial-cluster", &cluster])
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--log-level", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    let mut restored = Restored { child, endpoint };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = restored.child.try_wait() {
            panic!(
                "restored etcd exited ({status}): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        let healthy = Command::new(etcdctl_binary())
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &restored.endpoint, "--command-timeout=2s"])
            .args(["endpoint", "health"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if healthy {
            return restored;
        }
        assert!(
            Instant::now() < deadline,
            "restored etcd not healthy in 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the test's `replace` does to a plaintext Secret: a recognisable "encrypted" form.
fn fake_encrypt(value: &[u8]) -> Vec<u8> {
    let mut v = b"k8s:enc:aescbc:v1:rewritten:".to_vec();
    v.extend(value.iter().rev());
    v
}

fn replaced(e: &Entry) -> Entry {
    let mut e = e.clone();
    if e.key.starts_with(PREFIX) && e.value.starts_with(b"k8s\0") {
        e.value = fake_encrypt(&e.value);
    }
    e
}

#[tokio::test]
async fn a_rewritten_snapshot_restores_into_etcd() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    seed(&mut client).await;
    let thrice = b"/registry/secrets/default/thrice";
    let first = put_raw(&mut client, thrice, b"k8s\0one").await;
    put_raw(&mut client, thrice, b"k8s\0two").await;
    put_raw(&mut client, thrice, b"k8s:enc:aescbc:v1:key1:three").await;
    let path = server.snapshot_save("source.db");
    let (before, revision) = live_entries(&mut client, b"").await;
    let src = Snapshot::open(&path).unwrap();

    let out = server.scratch().join("rewritten.db");
    let mut offered = 0u64;
    let stats = write_snapshot(&src, &out, false, |e| {
        offered += 1;
        (e.key.starts_with(PREFIX) && e.value.starts_with(b"k8s\0")).then(|| fake_encrypt(&e.value))
    })
    .unwrap();
    eprintln!(
        "{stats:?} (source {} bytes)",
        std::fs::metadata(&path).unwrap().len()
    );
    assert_eq!(stats.records, src.record_count());
    assert!(offered < stats.records, "tombstones are not offered");
    assert!(stats.replaced >= 25);
    assert_eq!(stats.bytes, std::fs::metadata(&out).unwrap().len());

    // Read back: every field but the replaced values is unchanged, history included.
    let re = Snapshot::open(&out).unwrap();
    assert!(re.has_hash());
    assert_eq!(re.revision(), src.revision());
    assert_eq!(re.compacted_revision(), src.compacted_revision());
    assert_eq!(re.consistent_index(), src.consistent_index());
    assert_eq!(re.record_count(), src.record_count());
    let expected: Vec<Entry> = before.iter().map(replaced).collect();
    assert_same(&scan(&re, b"").await, &expected);
    let (mut old_src, mut old_re) = (Vec::new(), Vec::new());
    src.history(b"", |e| old_src.push(replaced(&e))).unwrap();
    re.history(b"", |e| old_re.push(e)).unwrap();
    assert_same(&old_re, &old_src);
    // Same buckets, same sizes, and inline exactly where etcd's bbolt inlined them.
    let shape = |s: &Snapshot| -> Vec<(Vec<u8>, u64, bool)> {
        s.buckets()
            .iter()
            .map(|b| (b.name.clone(), b.entries, b.inline))
            .collect()
    };
    assert_eq!(shape(&re), shape(&src));
    assert_eq!(re.free_pages().count(), 0, "a fresh file has no free pages");

    // Deterministic: copying the copy unchanged gives the same bytes.
    let again = server.scratch().join("again.db");
    let stats2 = write_snapshot(&re, &again, false, |_| None).unwrap();
    assert_eq!(stats2.replaced, 0);
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&out).unwrap());

    // etcd accepts the file and serves it.
    let restored = restore_and_start(&out, server.scratch());
    let mut c = Client::connect([restored.endpoint.as_str()], None)
        .await
        .unwrap();
    let (after, after_rev) = live_entries(&mut c, b"").await;
    assert_same(&after, &expected);
    assert_eq!(after_rev, revision);
    let old = c
        .get(&thrice[..], Some(GetOptions::new().with_revision(first)))
        .await
        .unwrap();
    assert_eq!(
        old.kvs()[0].value(),
        fake_encrypt(b"k8s\0one"),
        "history was rewritten too"
    );
    let leased = after.iter().filter(|e| e.lease != 0).count();
    assert_eq!(leased, 2, "leases survive");
}

/// Issue 22 item 2: the offline writer's temporary file is created exclusively under a
/// fresh name, so a file or symbolic link planted at the old predictable name receives
/// nothing; the output is 0600; an existing output is refused without `overwrite`.
#[tokio::test]
async fn issue_22_2_snapshot_output_uses_an_exclusive_temp_file() {
    use std::os::unix::fs::PermissionsExt;
    let server = EtcdServer::start();
    let mut client = server.client().await;
    seed(&mut client).await;
    let path = server.snapshot_save("source.db");
    let src = Snapshot::open(&path).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.db");
    // The old writer opened `.out.db.atrest-tmp` without O_EXCL and kept its mode.
    let planted = dir.path().join(".out.db.atrest-tmp");
    std::fs::write(&planted, b"").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).unwrap();
    let target = dir.path().join("attacker-owned");
    std::fs::write(&target, b"").unwrap();
    let planted_link = dir.path().join(".again.db.atrest-tmp");
    std::os::unix::fs::symlink(&target, &planted_link).unwrap();

    write_snapshot(&src, &out, false, |_| None).unwrap();
    assert_eq!(
        std::fs::read(&planted).unwrap(),
        b"",
        "the planted file got data"
    );
    let meta = std::fs::symlink_metadata(&out).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let again = dir.path().join("again.db");
    write_snapshot(&src, &again, false, |_| None).unwrap();
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"",
        "the link's target got data"
    );
    assert!(std::fs::symlink_metadata(&again)
        .unwrap()
        .file_type()
        .is_file());

    // An existing output is refused without overwrite, and left as it was.
    std::fs::write(&again, b"keep").unwrap();
    let e = write_snapshot(&src, &again, false, |_| None).unwrap_err();
    assert!(
        matches!(&e, SnapshotError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{e:?}"
    );
    assert_eq!(std::fs::read(&again).unwrap(), b"keep");
    write_snapshot(&src, &again, true, |_| None).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&out).unwrap());
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Issue 22 item 6, and issue 21's reader: a snapshot truncated after it was opened (by a
/// writer that ignores the lock, such as `cp` over it) cannot crash the reader (with a
/// mapping, this test died of SIGBUS). The file is read a page at a time, never mapped: every
/// read after the truncation is an error that says the file changed.
#[tokio::test]
async fn issue_22_6_a_snapshot_truncated_while_open_cannot_crash_the_reader() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    seed(&mut client).await;
    let path = server.snapshot_save("truncated.db");
    let snap = Snapshot::open(&path).unwrap();
    let before = scan(&snap, b"").await;
    assert!(!before.is_empty());
    // Another process, ignoring the lock, truncates the file while it is open: every read
    // after that is an error naming the change (the reader never maps the file, so nothing
    // can fault), and nothing is written.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let changed = |e: &dyn std::fmt::Display| {
        let shown = e.to_string();
        assert!(
            shown.contains("truncated.db") && shown.contains("the file changed while it was read"),
            "{shown}"
        );
    };
    let err = snap.scan(b"", |_| true).await.unwrap_err();
    changed(&err);
    changed(&snap.get(&before[0].key).unwrap_err());
    changed(&snap.history(b"", |_| {}).unwrap_err());
    let out = server.scratch().join("from-truncated.db");
    changed(&write_snapshot(&snap, &out, false, |_| None).unwrap_err());
    assert!(!out.exists(), "a failed copy leaves no file");
}

#[tokio::test]
async fn issue_21_a_long_free_run_is_read_in_pieces_and_each_object_counted_once() {
    use atrest::store::offline::Offline;
    const MIB: usize = 1 << 20;
    let server = EtcdServer::start();
    let mut client = server.client().await;
    seed(&mut client).await;
    let saved = std::fs::read(server.snapshot_save("long-run.db")).unwrap();
    // 40 MiB of never-allocated pages after the database: one free run, read in 16 MiB
    // pieces.
    let mut db = saved[..saved.len() - 32].to_vec();
    db.resize(db.len() + 40 * MIB, 0);
    let path = server.scratch().join("padded.db");
    std::fs::write(&path, with_trailer(db.clone())).unwrap();
    let snap = Snapshot::open(&path).unwrap();
    let baseline = Offline::residue(&snap, None).unwrap().unwrap();
    let last: Vec<_> = snap
        .free_runs()
        .map(Result::unwrap)
        .filter(|run| run.first * 4096 + run.bytes.len() as u64 > saved.len() as u64)
        .collect();
    assert_eq!(
        last.len(),
        3,
        "a run of 40 MiB and more comes in three pieces"
    );
    for (piece, next) in last.iter().zip(&last[1..]) {
        assert_eq!(piece.own, 16 * MIB);
        assert_eq!(
            piece.bytes.len(),
            18 * MIB,
            "each piece reaches 2 MiB into the next"
        );
        assert_eq!(next.first, piece.first + (16 * MIB / 4096) as u64);
    }
    let tail = last.last().unwrap();
    assert_eq!(tail.own, tail.bytes.len());
    drop(snap);

    // Plaintext objects: one inside a piece, one across the first piece boundary, one just
    // after it, one in the last piece.
    let start = last[0].first as usize * 4096;
    let mut rng = Rng(21);
    let object = plain_value(&mut rng, 3000);
    for at in [
        start + 100,
        start + 16 * MIB - 1000,
        start + 16 * MIB + 5000,
        start + 33 * MIB,
    ] {
        db[at..at + object.len()].copy_from_slice(&object);
    }
    std::fs::write(&path, with_trailer(db)).unwrap();
    let snap = Snapshot::open(&path).unwrap();
    assert_eq!(
        Offline::residue(&snap, None).unwrap(),
        Some(baseline + 4),
        "every object counted once, the one across a piece boundary too"
    );
}
