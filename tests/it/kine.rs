//! k3s's datastore: atrest against a real kine, live through its etcd API and offline from the
//! `state.db` that kine itself wrote (never a hand-built table).

use std::collections::BTreeMap;

use atrest::config::Config;
use atrest::transform::{Chain, State};
use serde_json::Value;

use crate::audit::{atrest, seed_every_state_into, stored_secret, write_config, CONFIG};
use crate::common::{delete_key, put_raw, KineServer};

fn chain() -> Chain {
    Chain::from_config(&Config::from_yaml(CONFIG).unwrap(), "", "secrets").unwrap()
}

fn json(cmd: &mut assert_cmd::Command) -> (i32, Value, String) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    (out.status.code().unwrap(), v, stderr)
}

/// Every entry's (key, state, provider, key name, readable) of a report.
fn verdicts(r: &Value) -> Vec<(String, String, Value, Value, Value)> {
    r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_owned(),
                e["state"].as_str().unwrap().to_owned(),
                e["provider"].clone(),
                e["key_name"].clone(),
                e["readable"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kines_own_state_db_audits_like_kine_live() {
    let mut kine = KineServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let mut client = kine.client().await;
    let expected = seed_every_state_into(&mut client).await;
    // History: a Secret written plaintext, then encrypted; another created then deleted.
    let plain = stored_secret();
    let upd = "/registry/secrets/default/updated";
    put_raw(&mut client, upd.as_bytes(), &plain).await;
    let enc = chain().encrypt(&plain, upd.as_bytes()).unwrap();
    put_raw(&mut client, upd.as_bytes(), &enc).await;
    put_raw(&mut client, b"/registry/secrets/default/gone", &plain).await;
    assert!(delete_key(&mut client, "/registry/secrets/default/gone").await);

    let live = |extra: &[&str]| {
        json(
            atrest()
                .args(["audit", "--endpoints", &kine.endpoint, "--config"])
                .arg(&config)
                .args(extra),
        )
    };
    let (code, live_report, err) = live(&[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(live_report["summary"]["total"], expected.len() + 1);
    for (key, (state, ..)) in &expected {
        let e = live_report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key.as_str())
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(e["state"], *state, "{key}");
    }

    // The same file, read offline while kine runs (WAL mode), then after kine stopped.
    let offline = |db: &std::path::Path| {
        json(
            atrest()
                .args(["audit", "--config"])
                .arg(&config)
                .arg("--kine-db")
                .arg(db),
        )
    };
    let (code, running, err) = offline(&kine.db_path());
    assert_eq!(code, 1, "{err}");
    kine.stop();
    let (_, stopped, err) = offline(&kine.db_path());
    for r in [&running, &stopped] {
        assert_eq!(verdicts(r), verdicts(&live_report), "{err}");
        assert_eq!(r["summary"], live_report["summary"]);
        assert_eq!(r["revision"], live_report["revision"]);
        assert!(r["source"].as_str().unwrap().starts_with("kine database"));
        // The plaintext first version of `updated` and the deleted Secret are still stored:
        // superseded rows, the delete row, and old_value copies.
        assert!(
            r["history"]["plaintext"].as_u64().unwrap() >= 3,
            "{}",
            r["history"]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_value_keeps_the_plaintext_after_kine_compacts() {
    let kine = KineServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let mut client = kine.client().await;
    let plain = stored_secret();
    for i in 0..20 {
        put_raw(
            &mut client,
            format!("/registry/secrets/ns/s{i}").as_bytes(),
            &plain,
        )
        .await;
    }
    // Then compact everything kine keeps (atrest's --compact: the rewrite's writes overlap,
    // which leaves kine's in-memory newest revision behind its table until the next write;
    // atrest then writes kube-apiserver's compactor record first, as kube-apiserver does).
    let (code, r, err) = json(
        atrest()
            .args([
                "rewrite",
                "--compact",
                "--endpoints",
                &kine.endpoint,
                "--config",
            ])
            .arg(&config),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["rewritten"], 20);

    let (_, after, err) = json(
        atrest()
            .args(["audit", "--config"])
            .arg(&config)
            .arg("--kine-db")
            .arg(kine.db_path()),
    );
    assert_eq!(after["summary"]["current"], 20, "{err}");
    // What atrest must prevent: kine's compaction deletes the superseded plaintext rows but
    // not the old_value copy in each current row. The rewrite writes each key a second time
    // through kine, so the copy is the encrypted value.
    assert_eq!(after["history"]["plaintext"], 0, "{}", after["history"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_rewrite_of_state_db_runs_under_kine() {
    let mut kine = KineServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let mut client = kine.client().await;
    let chain = chain();
    let mut originals = BTreeMap::new();
    for i in 0..300 {
        let key = format!("/registry/secrets/ns{}/s{i:03}", i % 7);
        let mut plain = stored_secret();
        plain.extend_from_slice(format!("#{i}").as_bytes());
        // A third plaintext, a third written twice (history), a third current.
        put_raw(&mut client, key.as_bytes(), &plain).await;
        if i % 3 == 1 {
            let v = chain.encrypt(&plain, key.as_bytes()).unwrap();
            put_raw(&mut client, key.as_bytes(), &v).await;
            put_raw(&mut client, key.as_bytes(), &plain).await;
        } else if i % 3 == 2 {
            let v = chain.encrypt(&plain, key.as_bytes()).unwrap();
            put_raw(&mut client, key.as_bytes(), &v).await;
        }
        originals.insert(key, plain);
    }
    kine.stop();
    let input = kine.db_path();
    let before = std::fs::read(&input).unwrap();
    let out = dir.path().join("out.db");
    let (code, s, err) = json(
        atrest()
            .args(["rewrite", "--config"])
            .arg(&config)
            .arg("--kine-db")
            .arg(&input)
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["rewritten"], 200);
    assert_eq!(s["after"]["current"], 300);
    assert_eq!(s["after_history"]["plaintext"], 0);
    assert_eq!(s["after_residue"], 0, "no free pages");
    assert_eq!(
        std::fs::read(&input).unwrap(),
        before,
        "the input is never modified"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Refused the second time without --force.
    let again = atrest()
        .args(["rewrite", "--config"])
        .arg(&config)
        .arg("--kine-db")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));

    // kine serves the new file: every key there, current, decrypting to its original bytes.
    let kine = KineServer::start_on(&out);
    let mut client = kine.client().await;
    let resp = client
        .get(
            "/registry/secrets/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(resp.kvs().len(), originals.len());
    for kv in resp.kvs() {
        let key = std::str::from_utf8(kv.key()).unwrap();
        let c = chain.classify(kv.value(), kv.key());
        assert_eq!(c.state, State::Current, "{key}");
        assert_eq!(
            c.plaintext.unwrap().as_slice(),
            originals[key].as_slice(),
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_inspect_and_status_read_state_db() {
    let mut kine = KineServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let mut client = kine.client().await;
    seed_every_state_into(&mut client).await;
    kine.stop();
    let db = kine.db_path();
    // Stale entries under key1, gcm1, box1: prune must refuse, naming them.
    let out = atrest()
        .args(["config", "rotate"])
        .arg(&config)
        .args(["--stage", "prune", "--kine-db"])
        .arg(&db)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refusing to prune: 3 entries"), "{err}");
    let (code, i, err) = json(
        atrest()
            .args([
                "inspect",
                "--etcd-key",
                "/registry/secrets/default/stale-gcm",
            ])
            .arg("--config")
            .arg(&config)
            .arg("--kine-db")
            .arg(&db),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(i["state"], "stale");
    let (code, st, err) = json(
        atrest()
            .args(["status", "--config"])
            .arg(&config)
            .arg("--kine-db")
            .arg(&db),
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(st["summary"]["total"], 9);
}

#[test]
fn files_that_are_not_kines_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = format!("{}/examples/cluster.snapshot", env!("CARGO_MANIFEST_DIR"));
    let out = atrest()
        .args(["audit", "--kine-db", &snapshot])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        err.contains("not kine's datastore") && err.contains("--snapshot"),
        "{err}"
    );
    let missing = dir.path().join("state.db");
    let out = atrest()
        .args(["audit", "--kine-db"])
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(err.contains("No such file or directory"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_through_kine_is_refused_before_anything_is_written() {
    let kine = KineServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let mut client = kine.client().await;
    put_raw(&mut client, b"/registry/secrets/a/b", &stored_secret()).await;
    let out = atrest()
        .args(["rewrite", "--endpoints", &kine.endpoint, "--config"])
        .arg(&config)
        .arg("--backup")
        .arg(dir.path().join("b.db"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is kine") && err.contains(".backup"), "{err}");
    let stored = client.get("/registry/secrets/a/b", None).await.unwrap();
    assert_eq!(
        stored.kvs()[0].value(),
        stored_secret(),
        "nothing was written"
    );
    assert!(!dir.path().join("b.db").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn k3s_finds_its_config_and_datastore() {
    // A k3s data directory: the JSON config k3s writes (key names with ':'), kine's state.db.
    let key_name = "aescbckey-2025-05-16T19:21:39Z";
    let k3s_config = format!(
        r#"{{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1","resources":[{{"resources":["secrets"],"providers":[{{"aescbc":{{"keys":[{{"name":"{key_name}","secret":"rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY="}}]}}}},{{"identity":{{}}}}]}}]}}"#
    );
    let data = tempfile::tempdir().unwrap();
    let cred = data.path().join("server/cred");
    let db_dir = data.path().join("server/db");
    std::fs::create_dir_all(&cred).unwrap();
    std::fs::create_dir_all(&db_dir).unwrap();
    std::fs::write(cred.join("encryption-config.json"), &k3s_config).unwrap();
    let chain =
        Chain::from_config(&Config::from_yaml(&k3s_config).unwrap(), "", "secrets").unwrap();

    let mut kine = KineServer::start();
    let mut client = kine.client().await;
    let plain = stored_secret();
    put_raw(&mut client, b"/registry/secrets/a/plain", &plain).await;
    let v = chain.encrypt(&plain, b"/registry/secrets/a/enc").unwrap();
    put_raw(&mut client, b"/registry/secrets/a/enc", &v).await;
    kine.stop();
    // The database with its write-ahead log, as a k3s data directory holds it: kine may stop
    // before SQLite folds the log into the main file.
    std::fs::copy(kine.db_path(), db_dir.join("state.db")).unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut from = kine.db_path().into_os_string();
        from.push(suffix);
        if std::path::Path::new(&from).exists() {
            std::fs::copy(&from, db_dir.join(format!("state.db{suffix}"))).unwrap();
        }
    }

    let out = atrest()
        .args(["audit", "--k3s", "-o", "json"])
        .env("K3S_DATA_DIR", data.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // It says what it used.
    assert!(
        err.contains("encryption-config.json") && err.contains("server/db/state.db"),
        "{err}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            r["summary"]["plaintext"].as_u64(),
            r["summary"]["current"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(r["write_provider"]["key_name"], key_name);
    // status the same way; a live rewrite is refused (k3s serves kine on a unix socket only).
    let st = atrest()
        .args(["status", "--k3s", "-o", "json"])
        .env("K3S_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert_eq!(
        st.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let rw = atrest()
        .args(["rewrite", "--k3s"])
        .env("K3S_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert_eq!(rw.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&rw.stderr).contains("--out"));
}
