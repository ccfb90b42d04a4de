//! The live etcd store against a real etcd: pages, pinning, compare-and-put, backup, TLS,
//! failover.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use atrest::store::etcd::{EtcdError, EtcdOptions as StoreOptions, EtcdStore};
use atrest::store::{CasOutcome, Entry, ReadStore, StoreError, WriteStore};
use etcd_client::GetOptions;

use crate::common::{pseudo_random_bytes, put_many, put_raw, EtcdCluster, EtcdServer, TestPki};

const PREFIX: &[u8] = b"/registry/secrets/";

fn options(endpoints: &[String]) -> StoreOptions {
    StoreOptions {
        endpoints: endpoints.to_vec(),
        ..StoreOptions::default()
    }
}

async fn connect(server: &EtcdServer) -> EtcdStore {
    EtcdStore::connect(options(std::slice::from_ref(&server.endpoint)))
        .await
        .expect("connect to the test etcd")
}

/// `n` keys under PREFIX with 2 KiB-ish values; every 7th key on `lease` (0: none).
fn secrets(n: usize, lease: i64) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    (0..n)
        .map(|i| {
            let key = format!("/registry/secrets/ns{}/secret-{i:05}", i % 13).into_bytes();
            let value = pseudo_random_bytes(i as u64, 1500 + (i % 1100));
            let lease = if i % 7 == 0 { lease } else { 0 };
            (key, value, lease)
        })
        .collect()
}

/// Everything under PREFIX in one unpaged request.
async fn full_get(client: &mut etcd_client::Client) -> Vec<Entry> {
    // One response of a few MiB: over tonic's 4 MiB default.
    let mut resp = client
        .kv_client()
        .max_decoding_message_size(1 << 30)
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .expect("one full get");
    resp.take_kvs()
        .into_iter()
        .map(|kv| Entry {
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
            version: kv.version(),
            lease: kv.lease(),
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
        })
        .collect()
}

async fn scan_all(store: &EtcdStore) -> (Vec<Entry>, i64) {
    let mut seen = Vec::new();
    let info = store
        .scan(PREFIX, |e| {
            seen.push(e);
            true
        })
        .await
        .expect("scan");
    assert_eq!(info.entries, seen.len() as u64);
    (seen, info.revision)
}

/// Reads the pages after `seen`'s last key at `pinned` into `seen`, checking that each
/// reports the pinned revision; returns each page's (entries, more).
async fn read_rest_pinned(
    store: &EtcdStore,
    seen: &mut Vec<Entry>,
    pinned: i64,
) -> Vec<(usize, bool)> {
    let mut pages = Vec::new();
    loop {
        let after = seen.last().unwrap().key.clone();
        let page = store
            .page(PREFIX, Some(&after), Some(pinned))
            .await
            .unwrap();
        assert_eq!(
            page.revision, pinned,
            "later pages report the pinned revision"
        );
        pages.push((page.entries.len(), page.more));
        seen.extend(page.entries);
        if !page.more {
            return pages;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_equal_one_full_get() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    let lease = client.lease_grant(600, None).await.unwrap().id();
    put_many(&client, secrets(2600, lease)).await;
    // Neighbours just outside the prefix must not show up.
    put_raw(&mut client, b"/registry/secrets", b"x").await;
    put_raw(&mut client, b"/registry/secrets0", b"x").await;
    put_raw(&mut client, b"/registry/configmaps/a", b"x").await;

    let store = connect(&server).await;
    assert_eq!(store.count(PREFIX).await.unwrap(), 2600);
    let expected = full_get(&mut client).await;
    assert_eq!(expected.len(), 2600);
    assert!(expected.iter().any(|e| e.lease == lease));

    let started = Instant::now();
    let (scanned, revision) = scan_all(&store).await;
    let elapsed = started.elapsed();
    eprintln!(
        "scan: {} entries in {:.3} s = {:.0} entries/s (pages of 1,000 keys, then ~8 MiB; ~2 KiB values)",
        scanned.len(),
        elapsed.as_secs_f64(),
        scanned.len() as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(scanned, expected);
    assert!(revision >= expected.iter().map(|e| e.mod_revision).max().unwrap());

    // A page limit by bytes far below one page of 1000: pages are fetched in halves until
    // they fit, and the result is the same.
    let small = EtcdStore::connect(StoreOptions {
        max_page_bytes: 64 * 1024,
        ..options(std::slice::from_ref(&server.endpoint))
    })
    .await
    .unwrap();
    let (scanned, _) = scan_all(&small).await;
    assert_eq!(scanned, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_reads_one_revision_while_etcd_is_written() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    put_many(&client, secrets(2500, 0)).await;
    let before = full_get(&mut client).await;
    let store = connect(&server).await;

    let first = store.page(PREFIX, None, None).await.unwrap();
    assert_eq!(first.entries.len(), 1000);
    assert!(first.more);
    let pinned = first.revision;
    let mut seen = first.entries;

    // Writes during the scan: a later key changes, one is deleted, one is added.
    let later = before[2000].key.clone();
    put_raw(&mut client, &later, b"changed during the scan").await;
    crate::common::delete_key(&mut client, before[2400].key.clone()).await;
    put_raw(&mut client, b"/registry/secrets/zz/new", b"new").await;

    read_rest_pinned(&store, &mut seen, pinned).await;
    assert_eq!(
        seen, before,
        "the scan saw the keyspace as of its first page"
    );
}

/// Keys in namespaces whose boundaries sort in a different order than their names (`a-b/` <
/// `a/`), namespaces with no Secrets, and Secrets in namespaces that are not registered.
fn namespaced_secrets(n: usize) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    const NS: [&str; 9] = [
        "a",
        "a-b",
        "a.b",
        "b",
        "kube-system",
        "orphan",
        "x",
        "zz",
        "a-b-c",
    ];
    (0..n)
        .map(|i| {
            let key = format!("/registry/secrets/{}/s{i:05}", NS[i % NS.len()]).into_bytes();
            (key, pseudo_random_bytes(i as u64, 60 + i % 90), 0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_split_at_namespaces_equals_one_full_get_at_one_revision() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    put_many(&client, namespaced_secrets(9000)).await;
    // Registered namespaces: not "orphan" or "zz"; "empty" and "m" hold no Secrets.
    for ns in [
        "a",
        "a-b",
        "a.b",
        "b",
        "kube-system",
        "x",
        "a-b-c",
        "empty",
        "m",
    ] {
        put_raw(
            &mut client,
            format!("/registry/namespaces/{ns}").as_bytes(),
            b"ns",
        )
        .await;
    }
    // Just outside the prefix, and a key equal to a split point's namespace with no slash.
    put_raw(&mut client, b"/registry/secrets0", b"x").await;
    put_raw(&mut client, b"/registry/secrets/b", b"not in a namespace").await;
    let before = full_get(&mut client).await;
    assert_eq!(before.len(), 9001);

    let store = connect(&server).await;
    let (scanned, _) = scan_all(&store).await;
    assert_eq!(scanned, before);

    // Page by page: the first page stops at a split (fewer keys than a page could hold), and
    // writes during the scan are not seen.
    let first = store.page(PREFIX, None, None).await.unwrap();
    assert!(first.more);
    assert!(
        first.entries.len() < 4000,
        "the first page ends at a split: {} keys",
        first.entries.len()
    );
    let pinned = first.revision;
    let mut seen = first.entries;
    let later = before[8000].key.clone();
    put_raw(&mut client, &later, b"changed during the scan").await;
    crate::common::delete_key(&mut client, before[8500].key.clone()).await;
    put_raw(&mut client, b"/registry/secrets/empty/new", b"new").await;
    put_raw(&mut client, b"/registry/secrets/m/new", b"new").await;
    let mut end = seen.len();
    let mut page_ends = vec![seen[end - 1].key.clone()];
    for (len, more) in read_rest_pinned(&store, &mut seen, pinned).await {
        assert!(len > 0 || !more, "only the last page may be empty");
        end += len;
        page_ends.push(seen[end - 1].key.clone());
    }
    let pages = page_ends.len();
    assert_eq!(
        seen, before,
        "the split scan saw the keyspace as of its first page"
    );
    // 9,001 keys make three ranges, split evenly among the nine registered boundaries, in
    // boundary order a-b-c/ a-b/ a.b/ | a/ b/ empty/ | kube-system/ m/ x/: a page ends at the
    // last key of a.b (a single unsplit range would run on in pages of up to 10,000 keys).
    let last_of = |ns: &str| {
        let p = format!("/registry/secrets/{ns}/");
        before
            .iter()
            .rev()
            .find(|e| e.key.starts_with(p.as_bytes()))
            .unwrap()
            .key
            .clone()
    };
    assert!(page_ends.contains(&last_of("a.b")), "{pages} pages");
    assert!(page_ends.contains(&last_of("b")), "{pages} pages");
}

#[tokio::test]
async fn a_compacted_scan_revision_is_a_clear_error() {
    let server = EtcdServer::start();
    let client = server.client().await;
    put_many(&client, secrets(1500, 0)).await;
    let store = connect(&server).await;
    let first = store.page(PREFIX, None, None).await.unwrap();
    let mut client = client;
    let now = put_raw(&mut client, b"/registry/secrets/zz/late", b"x").await;
    store.compact(now).await.unwrap();

    // A page the store had read ahead before the compaction would still be served (it holds
    // the pinned revision's keys); a page it had not gets the error.
    let after = first.entries[first.entries.len() / 2].key.clone();
    let err = store
        .page(PREFIX, Some(&after), Some(first.revision))
        .await
        .unwrap_err();
    match &err {
        StoreError::Etcd(e @ EtcdError::Compacted { revision, .. }) => {
            assert_eq!(*revision, first.revision);
            assert!(e.advice().contains("run again"));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
}

#[tokio::test]
async fn compare_and_put_keeps_the_lease_and_reports_conflicts() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    let lease = client.lease_grant(600, None).await.unwrap().id();
    let key = b"/registry/secrets/default/leased".to_vec();
    put_many(&client, vec![(key.clone(), b"old".to_vec(), lease)]).await;
    let store = connect(&server).await;

    let seen = store.get(&key).await.unwrap().unwrap();
    assert_eq!(seen.lease, lease);
    let outcome = store
        .compare_and_put(&key, seen.mod_revision, b"new".to_vec(), seen.lease)
        .await
        .unwrap();
    let CasOutcome::Written { mod_revision } = outcome else {
        panic!("expected a write, got {outcome:?}");
    };
    let now = store.get(&key).await.unwrap().unwrap();
    assert_eq!(now.value, b"new");
    assert_eq!(now.mod_revision, mod_revision);
    assert_eq!(now.lease, lease, "the rewrite kept the lease");
    assert_eq!(now.create_revision, seen.create_revision);

    // A stale revision: nothing written, the failure branch returns the current entry.
    let outcome = store
        .compare_and_put(&key, seen.mod_revision, b"stale".to_vec(), seen.lease)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        CasOutcome::Conflict {
            current: Some(now.clone())
        }
    );
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, b"new");

    // A deleted key.
    crate::common::delete_key(&mut client, key.clone()).await;
    let outcome = store
        .compare_and_put(&key, now.mod_revision, b"again".to_vec(), lease)
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::Conflict { current: None });
    assert_eq!(
        store.get(&key).await.unwrap(),
        None,
        "a conflict writes nothing"
    );

    // The lease expired (revoked) after the key was read: the key is gone with it.
    let lease2 = client.lease_grant(600, None).await.unwrap().id();
    let key2 = b"/registry/secrets/default/leased2".to_vec();
    put_many(&client, vec![(key2.clone(), b"v".to_vec(), lease2)]).await;
    let seen2 = store.get(&key2).await.unwrap().unwrap();
    client.lease_revoke(lease2).await.unwrap();
    let outcome = store
        .compare_and_put(&key2, seen2.mod_revision, b"w".to_vec(), lease2)
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::Conflict { current: None });
}

fn size_now(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn backup_writes_a_snapshot_etcdctl_accepts() {
    let server = EtcdServer::start();
    let client = server.client().await;
    put_many(&client, secrets(300, 0)).await;
    let store = connect(&server).await;
    let path = server.scratch().join("backup.db");
    let size = store.backup(&path, false).await.unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    // Every Secret is in it: readable by the owner only, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "backup mode {mode:o}");
    assert_eq!(size % 512, 32, "the sha256 trailer is there");
    let status = server.etcdctl(&["snapshot", "status", path.to_str().unwrap(), "-w", "json"]);
    let status = String::from_utf8(status).unwrap();
    assert!(status.contains("\"totalKey\""), "{status}");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(server.scratch())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary file left: {leftovers:?}");

    // An existing file is kept unless overwriting is asked for.
    std::fs::write(&path, b"keep me").unwrap();
    let err = store.backup(&path, false).await.unwrap_err();
    assert!(err.to_string().contains("backup.db"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    assert_eq!(store.backup(&path, true).await.unwrap(), size_now(&path));

    // A directory that does not exist: a Backup error naming the path.
    let err = store
        .backup(&server.scratch().join("missing/dir/backup.db"), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing/dir"), "{err}");
}

#[tokio::test]
async fn connecting_to_nothing_fails_fast_as_unreachable() {
    let port = crate::common::free_port();
    let started = Instant::now();
    let err = EtcdStore::connect(options(&[format!("127.0.0.1:{port}")]))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    match &err {
        EtcdError::Unreachable { endpoint, .. } => {
            assert_eq!(endpoint, &format!("http://127.0.0.1:{port}"))
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(err.to_string().contains(&port.to_string()));
    assert!(err.advice().contains("--endpoints"));

    // A listener that accepts and never answers: bounded by the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let started = Instant::now();
    let err = EtcdStore::connect(StoreOptions {
        connect_timeout: Duration::from_millis(800),
        ..options(&[format!("http://{addr}")])
    })
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, EtcdError::Unreachable { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let pki = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    let tls = |cert: bool| StoreOptions {
        endpoints: vec![server.endpoint.clone()],
        cacert: Some(pki.ca.clone()),
        cert: cert.then(|| pki.client_cert.clone()),
        key: cert.then(|| pki.client_key.clone()),
        ..StoreOptions::default()
    };

    // The right CA and a client certificate: it works, over both loopback names.
    let store = EtcdStore::connect(tls(true)).await.unwrap();
    assert_eq!(store.count(PREFIX).await.unwrap(), 0);
    let port = server.endpoint.rsplit(':').next().unwrap();
    let by_name = EtcdStore::connect(StoreOptions {
        endpoints: vec![format!("localhost:{port}")],
        ..tls(true)
    })
    .await
    .unwrap();
    assert_eq!(
        by_name.endpoints().collect::<Vec<_>>(),
        [format!("https://localhost:{port}")]
    );

    // No client certificate: etcd refuses the handshake.
    let err = EtcdStore::connect(tls(false)).await.unwrap_err();
    eprintln!("without a client certificate: {err}");
    assert!(matches!(err, EtcdError::Tls { .. }), "{err:?}");
    assert!(err.advice().contains("--cert"));

    // Another CA: our side rejects the server certificate.
    let other = TestPki::generate();
    let err = EtcdStore::connect(StoreOptions {
        cacert: Some(other.ca.clone()),
        ..tls(true)
    })
    .await
    .unwrap_err();
    eprintln!("with the wrong CA: {err}");
    match &err {
        EtcdError::Tls { detail, .. } => assert!(detail.contains("UnknownIssuer"), "{detail}"),
        other => panic!("expected Tls, got {other:?}"),
    }

    // Plain http to the TLS port.
    let err = EtcdStore::connect(options(&[format!("http://127.0.0.1:{port}")]))
        .await
        .unwrap_err();
    eprintln!("plain http to a TLS port: {err}");
    assert!(matches!(err, EtcdError::Tls { .. }), "{err:?}");

    // http:// with TLS files is refused before dialling.
    let err = EtcdStore::connect(StoreOptions {
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        ..tls(true)
    })
    .await
    .unwrap_err();
    assert!(matches!(err, EtcdError::InvalidEndpoint { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_serving_when_a_member_dies() {
    let mut cluster = EtcdCluster::start(3);
    let client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    put_many(&client, secrets(3000, 0)).await;
    let store = EtcdStore::connect(options(&cluster.endpoints()))
        .await
        .unwrap();
    assert_eq!(store.endpoints().count(), 3);

    // Kill the member every request goes to first, between two pages of a scan.
    let first = store.page(PREFIX, None, None).await.unwrap();
    cluster.kill(0);
    let mut seen = first.entries;
    loop {
        let after = seen.last().unwrap().key.clone();
        let page = store
            .page(PREFIX, Some(&after), Some(first.revision))
            .await
            .expect("a page through the surviving members");
        seen.extend(page.entries);
        if !page.more {
            break;
        }
    }
    assert_eq!(seen.len(), 3000);

    // Compare-and-put through the survivors.
    for entry in seen.iter().take(300) {
        let outcome = store
            .compare_and_put(
                &entry.key,
                entry.mod_revision,
                b"rewritten".to_vec(),
                entry.lease,
            )
            .await
            .expect("a txn through the surviving members");
        assert!(matches!(outcome, CasOutcome::Written { .. }), "{outcome:?}");
    }
    assert_eq!(store.count(PREFIX).await.unwrap(), 3000);

    // Connecting with the dead member in the list: it is left out and reported.
    let store = EtcdStore::connect(options(&cluster.endpoints()))
        .await
        .unwrap();
    assert_eq!(store.endpoints().count(), 2);
    assert_eq!(store.unhealthy().len(), 1);
    assert!(matches!(
        store.unhealthy()[0],
        EtcdError::Unreachable { .. }
    ));
    assert_eq!(store.count(PREFIX).await.unwrap(), 3000);
}

#[tokio::test]
async fn refused_credentials_are_auth_errors() {
    let server = EtcdServer::start();
    server.etcdctl(&["user", "add", "root:rootpw"]);
    server.etcdctl(&["auth", "enable"]);
    let with_user = |password: &str| StoreOptions {
        user: Some((
            "root".to_owned(),
            atrest::config::SecretString::new(password.to_owned()),
        )),
        ..options(std::slice::from_ref(&server.endpoint))
    };

    let store = EtcdStore::connect(with_user("rootpw")).await.unwrap();
    assert_eq!(store.count(PREFIX).await.unwrap(), 0);
    assert_eq!(
        store.source(),
        format!("{} {}", crate::common::store_kind(), server.endpoint)
    );

    let err = EtcdStore::connect(with_user("wrong")).await.unwrap_err();
    eprintln!("wrong password: {err}");
    assert!(matches!(err, EtcdError::Auth { .. }), "{err:?}");
    assert!(err.advice().contains("user"));

    // No user: etcd 3.4 answers status() but refuses the first read; etcd 3.6 refuses
    // status() already ("user name is empty"). Either way it is an auth error.
    let err = match EtcdStore::connect(options(std::slice::from_ref(&server.endpoint))).await {
        Ok(store) => match store.count(PREFIX).await.unwrap_err() {
            StoreError::Etcd(e) => e,
            other => panic!("{other:?}"),
        },
        Err(e) => e,
    };
    eprintln!("no user: {err}");
    assert!(matches!(err, EtcdError::Auth { .. }), "{err:?}");
}
