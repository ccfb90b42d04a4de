//! `atrest audit` against a real etcd, and its agreement with `atrest audit --snapshot`.

use std::collections::BTreeMap;

use atrest::config::Config;
use atrest::provider::{aescbc::AesCbc, aesgcm::AesGcm, secretbox::Secretbox};
use atrest::provider::{KeyMaterial, Provider};
use atrest::transform::Chain;
use serde_json::Value;

use crate::common::{put_raw, EtcdServer};

/// Every provider kube-apiserver has; keys are fixed test keys.
pub(crate) const CONFIG: &str = "\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aescbc:
      keys:
      - name: key2
        secret: 7d9+9fRVOV06k4tCYRlZgx3EB0XKUbEzNCfAO/j2Cr0=
      - name: key1
        secret: rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=
  - aesgcm:
      keys:
      - name: gcm1
        secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
  - secretbox:
      keys:
      - name: box1
        secret: HxwdHhscGRoXGBUWExQREg8QDQ4LDAkKBwgFBgMEAQI=
  - kms:
      apiVersion: v2
      name: vault
      endpoint: unix:///run/kms.sock
  - identity: {}
";

pub(crate) use crate::common::cli::{atrest, write_config};

/// The Kubernetes Secret fixture: a real stored plaintext value.
pub(crate) fn stored_secret() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/k8s-api/core.v1.Secret.pb"
    ))
    .unwrap()
}

fn single(p: Provider) -> Chain {
    Chain::from_providers("secrets", vec![p]).unwrap()
}

fn key(b64: &str) -> KeyMaterial {
    KeyMaterial::new(atrest::config::decode_secret(b64).unwrap().to_vec())
}

/// What an entry should audit as: (state, provider, key name, readable).
pub(crate) type Expected = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    bool,
);

/// Seeds one entry of every state and returns key → expected result.
pub(crate) async fn seed_every_state(server: &EtcdServer) -> BTreeMap<String, Expected> {
    seed_every_state_into(&mut server.client().await).await
}

/// [`seed_every_state`] through any etcd API client (etcd or kine).
pub(crate) async fn seed_every_state_into(
    client: &mut etcd_client::Client,
) -> BTreeMap<String, Expected> {
    let config = Config::from_yaml(CONFIG).unwrap();
    let chain = Chain::from_config(&config, "", "secrets").unwrap();
    let k1 = single(Provider::Aescbc(
        AesCbc::new("key1", &key("rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=")).unwrap(),
    ));
    let gcm = single(Provider::Aesgcm(
        AesGcm::new("gcm1", &key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")).unwrap(),
    ));
    let sbox = single(Provider::Secretbox(
        Secretbox::new("box1", &key("HxwdHhscGRoXGBUWExQREg8QDQ4LDAkKBwgFBgMEAQI=")).unwrap(),
    ));
    let lost = single(Provider::Aescbc(
        AesCbc::new("key0", &KeyMaterial::new(vec![0x42; 32])).unwrap(),
    ));
    let plain = stored_secret();
    let k = |ns: &str, n: &str| format!("/registry/secrets/{ns}/{n}");
    let mut corrupt = chain
        .encrypt(&plain, k("ns2", "corrupt").as_bytes())
        .unwrap();
    let len = corrupt.len();
    corrupt[len - 20] ^= 0xff; // damage the last-but-one block: padding check fails
    corrupt.truncate(len - 3);
    let values: Vec<(String, Vec<u8>, Expected)> = vec![
        (
            k("default", "plain"),
            plain.clone(),
            ("plaintext", None, None, true),
        ),
        (
            k("default", "current"),
            chain
                .encrypt(&plain, k("default", "current").as_bytes())
                .unwrap(),
            ("current", Some("aescbc"), Some("key2"), true),
        ),
        (
            k("default", "stale-cbc"),
            k1.encrypt(&plain, b"").unwrap(),
            ("stale", Some("aescbc"), Some("key1"), true),
        ),
        (
            k("default", "stale-gcm"),
            gcm.encrypt(&plain, k("default", "stale-gcm").as_bytes())
                .unwrap(),
            ("stale", Some("aesgcm"), Some("gcm1"), true),
        ),
        (
            k("default", "stale-box"),
            sbox.encrypt(&plain, b"").unwrap(),
            ("stale", Some("secretbox"), Some("box1"), true),
        ),
        (
            k("ns2", "unknown"),
            lost.encrypt(&plain, b"").unwrap(),
            ("unknown-key", Some("aescbc"), Some("key0"), false),
        ),
        (
            k("ns2", "corrupt"),
            corrupt,
            ("undecryptable", Some("aescbc"), Some("key2"), false),
        ),
        (
            k("ns2", "moved-gcm"),
            gcm.encrypt(&plain, b"/registry/secrets/default/elsewhere")
                .unwrap(),
            ("undecryptable", Some("aesgcm"), Some("gcm1"), false),
        ),
        (
            k("ns2", "kms"),
            b"k8s:enc:kms:v2:vault:\x0a\x20opaque-envelope".to_vec(),
            ("kms", Some("kms"), Some("vault"), true),
        ),
    ];
    let mut expected = BTreeMap::new();
    for (key, value, want) in values {
        put_raw(client, key.as_bytes(), &value).await;
        expected.insert(key, want);
    }
    // Outside the prefix: never audited.
    put_raw(client, b"/registry/configmaps/default/x", b"k8s\0x").await;
    expected
}

fn audit_json(args: &[&str]) -> (Value, i32) {
    let out = atrest()
        .arg("audit")
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, code)
}

#[tokio::test(flavor = "multi_thread")]
async fn live_audit_reports_every_state() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let expected = seed_every_state(&server).await;
    let config = config.to_str().unwrap();
    let (report, code) = audit_json(&["--endpoints", &server.endpoint, "--config", config]);
    assert_eq!(code, 1, "plaintext and unreadable entries are findings");
    assert_eq!(report["prefix"], "/registry/secrets/");
    assert_eq!(
        report["source"],
        format!("{} {}", crate::common::store_kind(), server.endpoint)
    );
    assert_eq!(report["write_provider"]["provider"], "aescbc");
    assert_eq!(report["write_provider"]["key_name"], "key2");
    let entries = report["entries"].as_array().unwrap();
    assert_eq!(entries.len(), expected.len());
    for e in entries {
        let key = e["key"].as_str().unwrap();
        let (state, provider, key_name, readable) = expected[key];
        assert_eq!(e["state"], state, "{key}");
        assert_eq!(e["provider"].as_str(), provider, "{key}");
        assert_eq!(e["key_name"].as_str(), key_name, "{key}");
        assert_eq!(e["readable"], readable, "{key}");
        assert_eq!(e["namespace"], key.split('/').nth(3).unwrap(), "{key}");
        assert!(e["mod_revision"].as_i64().unwrap() > 1);
        assert!(e["size"].as_u64().unwrap() > 0);
        if !readable {
            assert!(e["error"].as_str().is_some_and(|s| !s.is_empty()), "{key}");
        }
    }
    let s = &report["summary"];
    assert_eq!(
        (
            s["total"].as_u64(),
            s["plaintext"].as_u64(),
            s["current"].as_u64(),
            s["stale"].as_u64()
        ),
        (Some(9), Some(1), Some(1), Some(3))
    );
    assert_eq!(
        (
            s["unknown-key"].as_u64(),
            s["undecryptable"].as_u64(),
            s["kms"].as_u64(),
            s["encrypted"].as_u64()
        ),
        (Some(1), Some(2), Some(1), Some(0))
    );

    // The table names findings but never a secret value.
    let out = atrest()
        .args([
            "audit",
            "--endpoints",
            &server.endpoint,
            "--config",
            config,
            "-o",
            "table",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "plaintext",
        "unknown-key",
        "undecryptable",
        "stale-gcm",
        "key0",
    ] {
        assert!(table.contains(needle), "{needle} missing from:\n{table}");
    }
    for secret in ["stringDataValue", "Ag==", "rrbu51iF5Q", "7d9+9fRVOV"] {
        assert!(!table.contains(secret), "{secret} leaked:\n{table}");
        assert!(
            !report.to_string().contains(secret),
            "{secret} leaked in JSON"
        );
    }

    // Without a config: plaintext vs encrypted, provider and key name per entry.
    let (bare, code) = audit_json(&["--endpoints", &server.endpoint]);
    assert_eq!(code, 1);
    assert_eq!(bare["write_provider"], Value::Null);
    let s = &bare["summary"];
    assert_eq!(
        (
            s["plaintext"].as_u64(),
            s["encrypted"].as_u64(),
            s["kms"].as_u64()
        ),
        (Some(1), Some(7), Some(1))
    );
    assert!(bare["entries"][0].get("readable").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_makes_stale_entries_findings() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let config = config.to_str().unwrap();
    let chain = Chain::from_config(&Config::from_yaml(CONFIG).unwrap(), "", "secrets").unwrap();
    let sbox = single(Provider::Secretbox(
        Secretbox::new("box1", &key("HxwdHhscGRoXGBUWExQREg8QDQ4LDAkKBwgFBgMEAQI=")).unwrap(),
    ));
    let mut client = server.client().await;
    let k = "/registry/secrets/a/current";
    put_raw(
        &mut client,
        k.as_bytes(),
        &chain.encrypt(b"k8s\0x", k.as_bytes()).unwrap(),
    )
    .await;
    put_raw(
        &mut client,
        b"/registry/secrets/a/stale",
        &sbox.encrypt(b"k8s\0y", b"").unwrap(),
    )
    .await;
    let (_, code) = audit_json(&["--endpoints", &server.endpoint, "--config", config]);
    assert_eq!(code, 0, "stale alone is not a finding");
    let (_, code) = audit_json(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        config,
        "--strict",
    ]);
    assert_eq!(code, 1, "--strict counts stale entries");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_audit_matches_live_audit() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let config = config.to_str().unwrap();
    seed_every_state(&server).await;
    let (live, live_code) = audit_json(&["--endpoints", &server.endpoint, "--config", config]);
    let snap = server.snapshot_save("audit.db");
    let (offline, code) = audit_json(&["--snapshot", snap.to_str().unwrap(), "--config", config]);
    assert_eq!(code, live_code);
    for field in ["prefix", "revision", "write_provider", "entries", "summary"] {
        assert_eq!(live[field], offline[field], "{field} differs");
    }
    assert_eq!(offline["source"], format!("snapshot {}", snap.display()));
    assert!(live.get("history").is_none() && live.get("residue").is_none());
    assert_eq!(offline["history"]["total"], 0, "nothing was overwritten");
    assert!(offline["residue"]["plaintext"].is_u64());
}

/// Issue 21: the snapshot reader reads the next pages of a scan ahead, each on a thread of its
/// own. Two scans of several pages each, taken a page at a time in turn, and one started again
/// in the middle, get every key once, in key order, with its own value: a page read ahead for
/// one request is never served to another.
#[tokio::test(flavor = "multi_thread")]
async fn issue_21_pages_read_ahead_go_only_to_the_scan_they_were_read_for() {
    use atrest::store::snapshot::Snapshot;
    use atrest::store::ReadStore;
    use etcd_client::{Txn, TxnOp};

    let server = EtcdServer::start();
    let mut client = server.client().await;
    // 4,500 Secrets (four pages and a half) and 1,500 ConfigMaps, in shuffled key order.
    let mut want: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for batch in 0..60u32 {
        let mut ops = Vec::new();
        for j in 0..100u32 {
            let i = (batch * 100 + j) * 7919 % 6000;
            let resource = if i < 4500 { "secrets" } else { "configmaps" };
            let key = format!("/registry/{resource}/ns{}/o{i:05}", i % 13).into_bytes();
            let value = format!("k8s\0value of {i}").into_bytes();
            ops.push(TxnOp::put(key.clone(), value.clone(), None));
            want.insert(key, value);
        }
        client.txn(Txn::new().and_then(ops)).await.unwrap();
    }
    let snap = server.snapshot_save("ahead.db");
    let store = Snapshot::open(&snap).unwrap();
    let expected = |prefix: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        want.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let prefixes: [&[u8]; 3] = [
        b"/registry/secrets/",
        b"/registry/configmaps/",
        b"/registry/secrets/",
    ];
    // The third scan starts after the 2,500th Secret, while the first is under way.
    let secrets = expected(prefixes[0]);
    let mut after: [Option<Vec<u8>>; 3] = [None, None, Some(secrets[2499].0.clone())];
    let mut got: [Vec<(Vec<u8>, Vec<u8>)>; 3] = Default::default();
    let mut done = [false; 3];
    let mut pages = 0;
    while done.contains(&false) {
        for s in 0..3 {
            if done[s] {
                continue;
            }
            let page = store
                .page(prefixes[s], after[s].as_deref(), None)
                .await
                .unwrap();
            pages += 1;
            got[s].extend(page.entries.into_iter().map(|e| (e.key, e.value)));
            after[s] = got[s].last().map(|(k, _)| k.clone());
            done[s] = !page.more;
        }
    }
    // Pages of 1,000: five of Secrets, two of ConfigMaps, two from the middle of the Secrets.
    assert_eq!(pages, 9, "the scans span several pages each");
    assert_eq!(got[0], secrets);
    assert_eq!(got[1], expected(prefixes[1]));
    assert_eq!(got[2], secrets[2500..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn history_and_residue_follow_compaction_and_defrag() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let config = config.to_str().unwrap();
    let mut client = server.client().await;
    put_raw(
        &mut client,
        b"/registry/secrets/default/s1",
        &stored_secret(),
    )
    .await;
    // Re-encrypt it with atrest itself.
    let out = atrest()
        .args([
            "rewrite",
            "--endpoints",
            &server.endpoint,
            "--config",
            config,
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rewritten"], 1);

    let snap = server.snapshot_save("before-compaction.db");
    let (r, code) = audit_json(&["--snapshot", snap.to_str().unwrap(), "--config", config]);
    assert_eq!(code, 0, "the newest revision is current");
    assert_eq!(r["summary"]["current"], 1);
    assert_eq!(
        r["history"]["plaintext"], 1,
        "the plaintext revision is still stored"
    );
    assert_eq!(r["history"]["total"], 1);

    let rev = r["revision"].as_i64().unwrap().to_string();
    server.etcdctl(&["compact", &rev, "--physical"]);
    let snap = server.snapshot_save("after-compaction.db");
    let (r, _) = audit_json(&["--snapshot", snap.to_str().unwrap(), "--config", config]);
    assert_eq!(
        r["history"]["total"], 0,
        "compaction removed the old revision"
    );
    // The old plaintext stays in free pages until defrag on etcd 3.4; etcd 3.6 has reused
    // those pages by now at this size. Either way the count must match the file's bytes.
    let residue = r["residue"]["plaintext"].as_u64().unwrap();
    assert_eq!(
        residue >= 1,
        crate::common::file_contains(&snap, &stored_secret()),
        "residue must be counted exactly when the old bytes are in the file: {r}"
    );

    server.etcdctl(&["defrag"]);
    let snap = server.snapshot_save("after-defrag.db");
    let (r, _) = audit_json(&["--snapshot", snap.to_str().unwrap(), "--config", config]);
    assert_eq!(r["history"]["total"], 0);
    assert_eq!(r["residue"]["plaintext"], 0, "defrag rewrote the file: {r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_rewrite_restores_into_a_current_etcd() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), CONFIG);
    let config = config_path.to_str().unwrap();
    let chain = Chain::from_config(&Config::from_yaml(CONFIG).unwrap(), "", "secrets").unwrap();
    let k1 = single(Provider::Aescbc(
        AesCbc::new("key1", &key("rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=")).unwrap(),
    ));
    let mut client = server.client().await;
    let mut originals = BTreeMap::new();
    for i in 0..60u32 {
        let key = format!("/registry/secrets/ns{}/s{i}", i % 4);
        let mut plain = stored_secret();
        plain.extend_from_slice(format!("#{i}").as_bytes());
        let value = match i % 3 {
            0 => plain.clone(),
            1 => k1.encrypt(&plain, b"").unwrap(),
            _ => chain.encrypt(&plain, key.as_bytes()).unwrap(),
        };
        // An older plaintext revision for some keys: history must be re-encrypted too.
        if i % 5 == 0 {
            put_raw(&mut client, key.as_bytes(), &plain).await;
        }
        put_raw(&mut client, key.as_bytes(), &value).await;
        originals.insert(key, plain);
    }
    let snap = server.snapshot_save("in.db");
    let before = std::fs::read(&snap).unwrap();
    let out_path = dir.path().join("out.db");
    let out = atrest()
        .args(["rewrite", "--config", config, "--snapshot"])
        .arg(&snap)
        .arg("--out")
        .arg(&out_path)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["rewritten"], 40);
    assert_eq!(s["already_current"], 20);
    assert!(s["history_rewritten"].as_u64().unwrap() >= 12);
    assert_eq!(s["after"]["current"], 60);
    assert_eq!(s["after_history"]["plaintext"], 0);
    assert_eq!(
        std::fs::read(&snap).unwrap(),
        before,
        "the input is never modified"
    );

    // The rewritten file restores, serves, and holds the original plaintexts.
    let restored = EtcdServer::start_restored(&out_path);
    let (r, code) = audit_json(&["--endpoints", &restored.endpoint, "--config", config]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["summary"]["current"], 60);
    let mut c = restored.client().await;
    for (key, plain) in &originals {
        let resp = c.get(key.as_bytes(), None).await.unwrap();
        let value = resp.kvs()[0].value();
        let read = chain.classify(value, key.as_bytes());
        assert_eq!(
            read.plaintext.unwrap().as_slice(),
            plain.as_slice(),
            "{key}"
        );
    }
}

/// Issue 22 item 11: an etcd key holding an escape sequence is shown escaped in the table, so
/// whoever can write to etcd cannot drive the operator's terminal.
#[tokio::test(flavor = "multi_thread")]
async fn issue_22_11_control_characters_in_keys_never_reach_the_terminal() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    let key = b"/registry/secrets/default/evil\x1b[31mred\x1b]0;owned\x07\r";
    put_raw(&mut client, key, b"k8s\x00\n\x0cv1\x12\x06Secret").await;
    let out = atrest()
        .args(["audit", "--endpoints", &server.endpoint, "-o", "table"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a plaintext finding");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("evil\\u{1b}[31mred"), "{table}");
    for raw in [0x1b, 0x07, b'\r'] {
        assert!(!out.stdout.contains(&raw), "raw {raw:#x} in:\n{table}");
        assert!(!out.stderr.contains(&raw), "raw {raw:#x} on stderr");
    }
}
