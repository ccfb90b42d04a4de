//! `atrest rewrite` and `atrest audit` as processes: killed half-way, over TLS, with a backup.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use atrest::config::Config;
use atrest::transform::{Chain, State};
use serde_json::Value;

use crate::audit::{atrest, stored_secret, write_config, CONFIG};
use crate::common::{put_many, EtcdServer, TestPki};

fn chain() -> Chain {
    Chain::from_config(&Config::from_yaml(CONFIG).unwrap(), "", "secrets").unwrap()
}

/// `n` plaintext Secrets of about 2 KiB; returns key → stored bytes.
async fn seed_plaintext(server: &EtcdServer, n: usize) -> BTreeMap<String, Vec<u8>> {
    let client = server.client().await;
    let base = stored_secret();
    let mut all = BTreeMap::new();
    let mut items = Vec::new();
    for i in 0..n {
        let key = format!("/registry/secrets/ns{}/s{i:05}", i % 20);
        let mut value = base.clone();
        value.extend(std::iter::repeat_n(b'x', 1600));
        value.extend_from_slice(format!("#{i}").as_bytes());
        items.push((key.clone().into_bytes(), value.clone(), 0));
        all.insert(key, value);
    }
    put_many(&client, items).await;
    all
}

/// Reads every entry and checks it is either the original plaintext or a current value that
/// decrypts to it. Returns (plaintext, current) counts.
async fn check_intact(
    server: &EtcdServer,
    originals: &BTreeMap<String, Vec<u8>>,
) -> (usize, usize) {
    let chain = chain();
    let mut client = server.client().await;
    let mut kv = client.kv_client().max_decoding_message_size(256 << 20);
    let _ = &mut client;
    let resp = kv
        .get(
            "/registry/secrets/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(resp.kvs().len(), originals.len(), "no entry lost or added");
    let (mut plain, mut current) = (0, 0);
    for kv in resp.kvs() {
        let key = std::str::from_utf8(kv.key()).unwrap();
        let c = chain.classify(kv.value(), kv.key());
        match c.state {
            State::Plaintext => plain += 1,
            State::Current => current += 1,
            other => panic!("{key} is {other}: corrupt"),
        }
        assert_eq!(
            c.plaintext.unwrap().as_slice(),
            originals[key].as_slice(),
            "{key} does not hold its original bytes"
        );
    }
    (plain, current)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewrite_killed_half_way_is_finished_by_a_second_run() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let originals = seed_plaintext(&server, 6000).await;
    let bin = assert_cmd::cargo::cargo_bin("atrest");
    let mut child = std::process::Command::new(&bin)
        .env("ATREST_NO_KMS", "true")
        .args([
            "rewrite",
            "--endpoints",
            &server.endpoint,
            "--concurrency",
            "8",
            "-o",
            "json",
        ])
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it with SIGKILL once it has rewritten some but not all entries.
    let chain = chain();
    let mut client = server.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = client
            .get("/registry/secrets/ns0/s00000", None)
            .await
            .unwrap();
        if chain
            .classify(probe.kvs()[0].value(), probe.kvs()[0].key())
            .state
            == State::Current
        {
            break;
        }
        assert!(Instant::now() < deadline, "rewrite never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the rewrite finished before it was killed; seed more entries"
    );

    // A transaction the killed process had already sent may still be applied after it died
    // (seen with etcd 3.6): count once the store has stopped changing.
    let (mut plain, mut current) = check_intact(&server, &originals).await;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let again = check_intact(&server, &originals).await;
        if again == (plain, current) {
            break;
        }
        (plain, current) = again;
    }
    assert!(
        current > 0 && plain > 0,
        "killed half-way: {current} current, {plain} plaintext"
    );
    eprintln!("killed after {current} of {} entries", originals.len());

    let out = atrest()
        .args(["rewrite", "--endpoints", &server.endpoint, "-o", "json"])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["rewritten"].as_u64().unwrap() as usize, plain);
    assert_eq!(s["already_current"].as_u64().unwrap() as usize, current);
    let (plain, current) = check_intact(&server, &originals).await;
    assert_eq!((plain, current), (0, originals.len()));
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_is_taken_before_writing_and_restores() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let originals = seed_plaintext(&server, 50).await;
    let backup = dir.path().join("before.db");
    let out = atrest()
        .args([
            "rewrite",
            "--endpoints",
            &server.endpoint,
            "-o",
            "json",
            "--backup",
        ])
        .arg(&backup)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The backup holds the state before the rewrite: all plaintext.
    let out = atrest()
        .args(["audit", "-o", "json", "--snapshot"])
        .arg(&backup)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["summary"]["plaintext"].as_u64().unwrap() as usize,
        originals.len()
    );
    // A backup path that cannot be written: refuse to start, write nothing.
    let before = check_intact(&server, &originals).await;
    let out = atrest()
        .args([
            "rewrite",
            "--endpoints",
            &server.endpoint,
            "--backup",
            "/nonexistent/dir/b.db",
        ])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    // A local file problem: exit 2, with the path and the OS's reason.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/dir/b.db"), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    assert_eq!(check_intact(&server, &originals).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backup_is_owner_only_and_never_silently_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let originals = seed_plaintext(&server, 20).await;
    let backup = dir.path().join("before.db");
    let rewrite = |extra: &[&str]| {
        atrest()
            .args(["rewrite", "--endpoints", &server.endpoint, "-o", "json"])
            .arg("--backup")
            .arg(&backup)
            .arg("--config")
            .arg(&config)
            .args(extra)
            .output()
            .unwrap()
    };
    // An existing file: refused before anything is read or written.
    std::fs::write(&backup, b"an older backup").unwrap();
    let out = rewrite(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&backup).unwrap(), b"an older backup");
    assert_eq!(
        check_intact(&server, &originals).await,
        (originals.len(), 0)
    );

    // --force replaces it, and the new file is readable by its owner only.
    let out = rewrite(&["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(&backup).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        meta.len() % 512,
        32,
        "a whole snapshot with its sha256 trailer"
    );
    assert_eq!(
        check_intact(&server, &originals).await,
        (0, originals.len())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_over_tls_needs_the_client_certificate() {
    let pki = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let ok = atrest()
        .args([
            "audit",
            "-o",
            "json",
            "--allow-empty",
            "--endpoints",
            &server.endpoint,
        ])
        .args(pki.etcdctl_flags())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let r: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(r["summary"]["total"], 0);

    // The same through the etcdctl environment variables.
    let env = atrest()
        .args(["audit", "-o", "json", "--allow-empty"])
        .env("ETCDCTL_ENDPOINTS", &server.endpoint)
        .env("ETCDCTL_CACERT", &pki.ca)
        .env("ETCDCTL_CERT", &pki.client_cert)
        .env("ETCDCTL_KEY", &pki.client_key)
        .output()
        .unwrap();
    assert_eq!(
        env.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&env.stderr)
    );

    let no_cert = atrest()
        .args([
            "audit",
            "--endpoints",
            &server.endpoint,
            "--dial-timeout",
            "3",
        ])
        .arg("--cacert")
        .arg(&pki.ca)
        .output()
        .unwrap();
    assert_eq!(no_cert.status.code(), Some(3));
    let err = String::from_utf8_lossy(&no_cert.stderr);
    assert!(err.contains(&server.endpoint), "{err}");
    assert!(err.contains("hint:"), "errors say what to do: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unreachable_etcd_is_exit_3_with_advice() {
    let port = crate::common::free_port();
    let out = atrest()
        .args([
            "audit",
            "--endpoints",
            &format!("http://127.0.0.1:{port}"),
            "--dial-timeout",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

/// Issue 22 item 14: a rewrite with an aesgcm write key says how many values that key
/// encrypted, beside kube's "rotate every 200k writes".
#[tokio::test(flavor = "multi_thread")]
async fn issue_22_14_a_rewrite_counts_what_each_aesgcm_key_encrypted() {
    let server = EtcdServer::start();
    seed_plaintext(&server, 7).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aesgcm: {keys: [{name: gcm1, secret: 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8='}]}
  - identity: {}
",
    );
    let out = atrest()
        .args([
            "rewrite",
            "--endpoints",
            &server.endpoint,
            "-o",
            "json",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "aesgcm key \"gcm1\" (resources[0].providers[0].aesgcm.keys[0]) encrypted 7 values"
        ) && err.contains("200k writes"),
        "{err}"
    );
}
