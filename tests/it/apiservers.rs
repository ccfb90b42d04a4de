//! `atrest apiservers` and the apiserver gate against real kube-apiservers (issue 19).
//!
//! Each test starts its own etcd and 1–3 kube-apiservers (tests/common/apiserver.rs). No mock:
//! every hash, Lease and refusal here comes from a running kube-apiserver v1.37.2.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;

use crate::common::apiserver::{ControlPlane, ADMIN_TOKEN, LIMITED_TOKEN};
use crate::common::EtcdServer;

const KEY1: &str = "c2VjcmV0IGlzIHNlY3VyZSwgSSB0aGluaywgbWF5YmU="; // 32 bytes
const KEY2: &str = "SdDoqDnH16dikTjyU+bOPlU84kzXYTkyc4NPSOZmrZs="; // 32 bytes

/// An EncryptionConfiguration for secrets: aescbc with `keys` (name, base64) in order, then
/// identity.
fn config_text(keys: &[(&str, &str)]) -> String {
    let mut keys_yaml = String::new();
    for (name, secret) in keys {
        keys_yaml += &format!("              - name: {name}\n                secret: {secret}\n");
    }
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n{keys_yaml}      - identity: {{}}\n"
    )
}

/// Writes a config into `dir` under `name` and returns its path.
fn write_config(dir: &Path, name: &str, keys: &[(&str, &str)]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, config_text(keys)).unwrap();
    path
}

/// An identity-only config (encryption off, as before the seed procedure).
fn write_identity_config(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n",
    )
    .unwrap();
    path
}

/// Runs the CLI; asserts no token appears in any output. Returns (status, stdout, stderr).
fn atrest_raw(args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::cargo_bin("atrest")
        .unwrap()
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for token in [ADMIN_TOKEN, LIMITED_TOKEN] {
        assert!(
            !stdout.contains(token) && !stderr.contains(token),
            "a token leaked into the output of {args:?}"
        );
    }
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// Runs the CLI with `-o json`; asserts no token appears in any output.
fn atrest(args: &[&str]) -> (i32, Value, String) {
    let (code, stdout, stderr) = atrest_raw(&[&["-o", "json"], args].concat());
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (code, json, stderr)
}

/// `atrest apiservers --config FILE --kubeconfig K --apiserver URLS`.
fn apiservers(cp: &ControlPlane, config: &Path) -> (i32, Value, String) {
    atrest(&[
        "apiservers",
        "--config",
        config.to_str().unwrap(),
        "--kubeconfig",
        cp.kubeconfig.to_str().unwrap(),
        "--apiserver",
        &cp.urls(),
    ])
}

/// The hostnames of the instances the report says are not running `file_hash`.
fn lagging_hostnames(report: &Value) -> Vec<String> {
    let mut names: Vec<String> = report["apiservers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["matches"] != Value::Bool(true))
        .map(|a| a["hostname"].as_str().unwrap_or("?").to_owned())
        .chain(
            report["not_checked"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["hostname"].as_str().unwrap().to_owned()),
        )
        .collect();
    names.sort();
    names
}

fn sha256_file(path: &Path) -> String {
    atrest::apiserver::identity::sha256_label(&std::fs::read(path).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn apiservers_reports_each_instance_and_names_the_lagging_ones() {
    let etcd = EtcdServer::start();
    let dir = etcd.scratch().to_owned();
    let a = write_config(&dir, "a.yaml", &[("key1", KEY1)]);
    let b = write_config(&dir, "b.yaml", &[("key1", KEY1), ("key2", KEY2)]);
    let mut cp = ControlPlane::start(3, &etcd.endpoint, &a).await;

    let (code, report, stderr) = apiservers(&cp, &a);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["file_hash"], sha256_file(&a));
    let apis = report["apiservers"].as_array().unwrap();
    assert_eq!(apis.len(), 3);
    for (i, api) in apis.iter().enumerate() {
        assert_eq!(api["hostname"], cp.hostname(i), "{report:#}");
        assert_eq!(
            api["identity"],
            atrest::apiserver::identity::apiserver_id(cp.hostname(i))
        );
        assert_eq!(api["url"], cp.url(i));
        assert_eq!(api["loaded_hash"], sha256_file(&a));
        assert_eq!(api["matches"], true);
        assert_eq!(api["version"], "v1.37.2");
        assert_eq!(api["evidence"], "config-hash-metric");
    }
    let (code, metrics, _) = atrest_raw(&[
        "-o",
        "prometheus",
        "apiservers",
        "--config",
        a.to_str().unwrap(),
        "--kubeconfig",
        cp.kubeconfig.to_str().unwrap(),
        "--apiserver",
        &cp.urls(),
    ]);
    assert_eq!(code, 0);
    assert!(
        metrics.contains(&format!(
            "atrest_apiserver_config_matches{{hostname=\"cp-2\",url=\"{}\",file_hash=\"{}\"}} 1\n",
            cp.url(1),
            sha256_file(&a)
        )),
        "{metrics}"
    );
    assert!(metrics.contains("atrest_apiservers_ok 1\n"), "{metrics}");

    cp.restart(0, &b).await;
    let (code, report, stderr) = apiservers(&cp, &b);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(report["ok"], false);
    assert_eq!(lagging_hostnames(&report), ["cp-2", "cp-3"]);
    assert_eq!(report["apiservers"][0]["matches"], true);
    assert_eq!(report["apiservers"][1]["loaded_hash"], sha256_file(&a));
    assert_eq!(
        report["apiservers"][1]["problem"]["kind"],
        "loaded-other-file"
    );
}

/// Creates `n` Secrets `s-0`… in `default` through instance `i`; returns their data.
async fn create_secrets(cp: &ControlPlane, i: usize, n: usize) -> Vec<(String, String)> {
    let api: Api<Secret> = Api::namespaced(cp.client(i).await, "default");
    let mut made = Vec::new();
    for k in 0..n {
        let name = format!("s-{k}");
        let value = format!("value {k} of a test secret");
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "stringData": {"v": value},
        }))
        .unwrap();
        api.create(&PostParams::default(), &secret).await.unwrap();
        made.push((name, value));
    }
    made
}

/// Asserts every Secret reads back with the same data through every instance.
async fn assert_secrets_read_back(cp: &ControlPlane, n: usize, secrets: &[(String, String)]) {
    for i in 0..n {
        let api: Api<Secret> = Api::namespaced(cp.client(i).await, "default");
        for (name, value) in secrets {
            let s = api
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("{} cannot read Secret {name}: {e}", cp.hostname(i)));
            let data = s.data.unwrap();
            assert_eq!(
                data["v"].0,
                value.as_bytes(),
                "{name} through {}",
                cp.hostname(i)
            );
        }
    }
}

/// Every stored Secret's key and mod revision (the apiservers themselves keep writing Leases,
/// so the store's revision moves; the Secrets' must not).
async fn secret_revisions(etcd: &EtcdServer) -> Vec<(Vec<u8>, i64)> {
    let mut client = etcd.client().await;
    let resp = client
        .get(
            "/registry/secrets/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert!(!resp.kvs().is_empty());
    resp.kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.mod_revision()))
        .collect()
}

/// The raw stored value of a Secret.
async fn stored(etcd: &EtcdServer, name: &str) -> Vec<u8> {
    let mut client = etcd.client().await;
    let resp = client
        .get(format!("/registry/secrets/default/{name}"), None)
        .await
        .unwrap();
    resp.kvs()[0].value().to_vec()
}

/// The API flags for the gate: the admin kubeconfig and every instance's URL.
fn api_flags(cp: &ControlPlane) -> Vec<String> {
    vec![
        "--kubeconfig".into(),
        cp.kubeconfig.display().to_string(),
        "--apiserver".into(),
        cp.urls(),
    ]
}

fn rewrite(etcd: &EtcdServer, cp: &ControlPlane, config: &Path) -> (i32, Value, String) {
    let mut args = vec![
        "rewrite".to_owned(),
        "--endpoints".into(),
        etcd.endpoint.clone(),
        "--config".into(),
        config.display().to_string(),
    ];
    args.extend(api_flags(cp));
    atrest(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn promote(etcd: &EtcdServer, cp: &ControlPlane, file: &Path, key: &str) -> (i32, Value, String) {
    let mut args = vec![
        "config".to_owned(),
        "rotate".into(),
        file.display().to_string(),
        "--stage".into(),
        "promote".into(),
        "--key-name".into(),
        key.into(),
        "--no-backup".into(),
        "--endpoints".into(),
        etcd.endpoint.clone(),
    ];
    args.extend(api_flags(cp));
    atrest(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Issue 19: rewrite and promote refuse, writing nothing, while one of three apiservers runs the
/// new file; once all three run it, both go ahead and every Secret reads back everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn rewrite_and_promote_wait_for_every_apiserver() {
    let etcd = EtcdServer::start();
    let dir = etcd.scratch().to_owned();
    let a = write_config(&dir, "a.yaml", &[("key1", KEY1)]);
    let added = write_config(&dir, "added.yaml", &[("key1", KEY1), ("key2", KEY2)]);
    let mut cp = ControlPlane::start(3, &etcd.endpoint, &a).await;
    let secrets = create_secrets(&cp, 0, 3).await;

    cp.restart(0, &added).await;
    let before = secret_revisions(&etcd).await;
    let (code, _, stderr) = rewrite(&etcd, &cp, &added);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("refusing to write"), "{stderr}");
    for host in ["cp-2", "cp-3"] {
        assert!(
            stderr.contains(&format!("{host}: runs another config")),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("cp-1:"), "{stderr}");
    let file_before = std::fs::read(&added).unwrap();
    let (code, _, stderr) = promote(&etcd, &cp, &added, "key2");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cp-2") && stderr.contains("cp-3"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&added).unwrap(),
        file_before,
        "promote edited the file"
    );
    assert_eq!(
        secret_revisions(&etcd).await,
        before,
        "a Secret was written"
    );

    cp.restart(1, &added).await;
    cp.restart(2, &added).await;
    let (code, report, stderr) = apiservers(&cp, &added);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    let (code, summary, stderr) = rewrite(&etcd, &cp, &added);
    assert_eq!(code, 0, "{summary:#}\n{stderr}");
    assert!(
        summary["apiserver_check"]
            .as_str()
            .unwrap()
            .starts_with("passed"),
        "{summary:#}"
    );
    let (code, report, stderr) = promote(&etcd, &cp, &added, "key2");
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_ne!(std::fs::read(&added).unwrap(), file_before);
    assert_secrets_read_back(&cp, 3, &secrets).await;
}

/// A killed apiserver keeps a live identity Lease for an hour: it is named, and the check fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_apiserver_with_a_live_lease_is_named() {
    let etcd = EtcdServer::start();
    let a = write_config(etcd.scratch(), "a.yaml", &[("key1", KEY1)]);
    let mut cp = ControlPlane::start(2, &etcd.endpoint, &a).await;
    cp.kill(1);
    let (code, report, stderr) = apiservers(&cp, &a);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(report["not_checked"][0]["hostname"], "cp-2", "{report:#}");
    assert_eq!(report["apiservers"][1]["problem"]["kind"], "not-answered");
    assert_eq!(report["apiservers"][0]["matches"], true);
}

/// Credentials without RBAC get an error naming the permission they lack (exit 3).
#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_rbac_is_told_the_missing_permission() {
    let etcd = EtcdServer::start();
    let a = write_config(etcd.scratch(), "a.yaml", &[("key1", KEY1)]);
    let cp = ControlPlane::start(1, &etcd.endpoint, &a).await;
    let (code, _, stderr) = atrest(&[
        "apiservers",
        "--config",
        a.to_str().unwrap(),
        "--kubeconfig",
        cp.limited_kubeconfig.to_str().unwrap(),
        "--apiserver",
        &cp.urls(),
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("may not list leases.coordination.k8s.io in kube-system"),
        "{stderr}"
    );
    assert!(stderr.contains("grant `list`"), "{stderr}");
}

/// The seed procedure through real apiservers: Secrets stored in plaintext, encryption enabled,
/// audit finds them, the gated rewrite encrypts them, and every apiserver reads them back; then
/// `audit --apiservers` and `status --apiservers` report both halves in one report.
#[tokio::test(flavor = "multi_thread")]
async fn seed_procedure_through_real_apiservers() {
    let etcd = EtcdServer::start();
    let dir = etcd.scratch().to_owned();
    let off = write_identity_config(&dir, "off.yaml");
    let on = dir.join("on.yaml");
    std::fs::write(&on, config_text(&[("key1", KEY1)])).unwrap();
    let mut cp = ControlPlane::start(2, &etcd.endpoint, &off).await;
    let secrets = create_secrets(&cp, 1, 3).await;
    assert!(stored(&etcd, "s-0").await.starts_with(b"k8s\x00"));

    cp.restart(0, &on).await;
    cp.restart(1, &on).await;
    let (code, report, stderr) = atrest(&[
        "audit",
        "--endpoints",
        &etcd.endpoint,
        "--config",
        on.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert!(
        report["summary"]["plaintext"].as_u64().unwrap() >= 3,
        "{report:#}"
    );
    assert!(report.get("apiservers").is_none());

    let (code, summary, stderr) = rewrite(&etcd, &cp, &on);
    assert_eq!(code, 0, "{summary:#}\n{stderr}");
    assert!(summary["rewritten"].as_u64().unwrap() >= 3, "{summary:#}");
    for (name, _) in &secrets {
        assert!(stored(&etcd, name)
            .await
            .starts_with(b"k8s:enc:aescbc:v1:key1:"));
    }
    assert_secrets_read_back(&cp, 2, &secrets).await;

    // One report: these entries are encrypted, and these apiservers run this config.
    let mut args = vec![
        "audit".to_owned(),
        "--endpoints".into(),
        etcd.endpoint.clone(),
        "--config".into(),
        on.display().to_string(),
        "--apiservers".into(),
    ];
    args.extend(api_flags(&cp));
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, report, stderr) = atrest(&args);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["summary"]["plaintext"], 0, "{report:#}");
    assert_eq!(report["apiservers"]["ok"], true, "{report:#}");
    assert_eq!(report["apiservers"]["apiservers"][1]["hostname"], "cp-2");
    args[0] = "status";
    let (code, report, stderr) = atrest(&args);
    assert_eq!(report["apiservers"]["ok"], true, "{report:#}\n{stderr}");
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    // cp-1 on another file (same keys, one more comment line): the same audit now fails on
    // the apiservers alone. (Back on the identity-only file it could not read the Secrets.)
    let edited = dir.join("on-edited.yaml");
    std::fs::write(
        &edited,
        format!("{}# edited\n", config_text(&[("key1", KEY1)])),
    )
    .unwrap();
    cp.restart(0, &edited).await;
    args[0] = "audit";
    let (code, report, stderr) = atrest(&args);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(report["summary"]["plaintext"], 0);
    assert_eq!(report["apiservers"]["ok"], false);
    assert_eq!(report["apiservers"]["apiservers"][0]["matches"], false);
}

/// The canary: a Secret through each apiserver, each stored by the config's write key (read
/// from etcd), and none left behind.
#[tokio::test(flavor = "multi_thread")]
async fn canary_shows_which_key_each_apiserver_writes_with_and_leaves_nothing() {
    let etcd = EtcdServer::start();
    let dir = etcd.scratch().to_owned();
    let a = write_config(&dir, "a.yaml", &[("key1", KEY1)]);
    let promoted = write_config(&dir, "promoted.yaml", &[("key2", KEY2), ("key1", KEY1)]);
    let mut cp = ControlPlane::start(2, &etcd.endpoint, &a).await;
    cp.restart(1, &promoted).await;
    let (code, report, stderr) = atrest(&[
        "apiservers",
        "--config",
        promoted.to_str().unwrap(),
        "--kubeconfig",
        cp.kubeconfig.to_str().unwrap(),
        "--apiserver",
        &cp.urls(),
        "--canary",
        "--endpoints",
        &etcd.endpoint,
    ]);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    let c1 = &report["apiservers"][0]["canary"];
    let c2 = &report["apiservers"][1]["canary"];
    assert_eq!(c1["written_by"]["provider"], "aescbc", "{report:#}");
    assert_eq!(c1["written_by"]["key"], "key1");
    assert_eq!(c1["written_by"]["state"], "stale");
    assert_eq!(c1["ok"], false);
    assert_eq!(c2["written_by"]["key"], "key2", "{report:#}");
    assert_eq!(c2["ok"], true);
    assert_eq!(
        (c1["deleted"].clone(), c2["deleted"].clone()),
        (true.into(), true.into())
    );
    assert!(c1["name"].as_str().unwrap().starts_with("atrest-canary-"));

    let api: Api<Secret> = Api::namespaced(cp.client(0).await, "default");
    let left = api
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=atrest"))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "canary Secrets left behind");

    // Interrupted (as by Ctrl-C) as soon as its first canary exists: the run still deletes it.
    use atrest::apiserver::canary::{run_canaries, CanaryTarget};
    let store = atrest::store::etcd::EtcdStore::connect(atrest::store::etcd::EtcdOptions {
        endpoints: vec![etcd.endpoint.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let config = atrest::config::Config::load(&promoted).unwrap();
    let chain = atrest::transform::Chain::from_config(&config, "", "secrets").unwrap();
    let target = CanaryTarget {
        store: &store,
        chain: &chain,
        namespace: "default",
    };
    let clients = [cp.client(0).await, cp.client(1).await];
    let watcher = api.clone();
    let shutdown = async move {
        let labels = ListParams::default().labels("app.kubernetes.io/managed-by=atrest");
        while watcher.list(&labels).await.unwrap().items.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    let reports = run_canaries(&clients, &target, shutdown).await;
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.deleted), "{reports:?}");
    let left = api
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=atrest"))
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "an interrupted canary run left a Secret"
    );
}

/// `config rotate` with the flags the gate needs.
fn rotate(etcd: &EtcdServer, cp: &ControlPlane, file: &Path, stage: &str) -> (i32, Value, String) {
    let mut args = vec![
        "config".to_owned(),
        "rotate".into(),
        file.display().to_string(),
        "--stage".into(),
        stage.into(),
        "--no-backup".into(),
        "--endpoints".into(),
        etcd.endpoint.clone(),
    ];
    args.extend(api_flags(cp));
    atrest(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

async fn restart_all(cp: &mut ControlPlane, n: usize, config: &Path) {
    for i in 0..n {
        cp.restart(i, config).await;
    }
}

/// A full rotation (add → restart all → promote → restart all → rewrite → prune) in which every
/// write waits for the apiservers: promote and rewrite are refused while they run the old file,
/// prune while one of them never got the promoted file.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_rotation_is_driven_by_the_gates() {
    let etcd = EtcdServer::start();
    let dir = etcd.scratch().to_owned();
    let enc = write_config(&dir, "enc.yaml", &[("key1", KEY1)]);
    let mut cp = ControlPlane::start(3, &etcd.endpoint, &enc).await;
    let secrets = create_secrets(&cp, 2, 3).await;

    let (code, _, stderr) = rotate(&etcd, &cp, &enc, "add");
    assert_eq!(code, 0, "{stderr}");
    let added = std::fs::read(&enc).unwrap();
    let (code, _, stderr) = rotate(&etcd, &cp, &enc, "promote");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cp-1, cp-2, cp-3"), "{stderr}");
    assert_eq!(
        std::fs::read(&enc).unwrap(),
        added,
        "promote wrote before the restart"
    );

    restart_all(&mut cp, 3, &enc).await;
    let (code, report, stderr) = rotate(&etcd, &cp, &enc, "promote");
    assert_eq!(code, 0, "{stderr}");
    assert!(report["apiserver_check"]
        .as_str()
        .unwrap()
        .starts_with("passed"));

    // The file now writes with key2, which no running apiserver writes with yet.
    let before = secret_revisions(&etcd).await;
    let (code, _, stderr) = rewrite(&etcd, &cp, &enc);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        secret_revisions(&etcd).await,
        before,
        "a Secret was written"
    );

    restart_all(&mut cp, 3, &enc).await;
    let (code, summary, stderr) = rewrite(&etcd, &cp, &enc);
    assert_eq!(code, 0, "{summary:#}\n{stderr}");
    assert!(summary["rewritten"].as_u64().unwrap() >= 3, "{summary:#}");
    for (name, _) in &secrets {
        assert!(stored(&etcd, name)
            .await
            .starts_with(b"k8s:enc:aescbc:v1:key2:"));
    }
    // cp-3 never got the promoted file (it runs the added one): prune must wait for it.
    let old_copy = dir.join("added-copy.yaml");
    std::fs::write(&old_copy, &added).unwrap();
    cp.restart(2, &old_copy).await;
    let promoted = std::fs::read(&enc).unwrap();
    let (code, _, stderr) = rotate(&etcd, &cp, &enc, "prune");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("refusing to write") && stderr.contains(": cp-3\n"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&enc).unwrap(),
        promoted,
        "prune wrote while cp-3 lagged"
    );
    cp.restart(2, &enc).await;
    let (code, report, stderr) = rotate(&etcd, &cp, &enc, "prune");
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["removed"], serde_json::json!(["key1"]));
    restart_all(&mut cp, 3, &enc).await;
    assert_secrets_read_back(&cp, 3, &secrets).await;
}

/// Automatic reload of an invalid edit: kube-apiserver keeps the old config, only its failure
/// counter moves; atrest says which apiserver kept which config. (Waits for kube-apiserver's
/// one-minute poll of the file: the only reload test.)
#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_edit_under_automatic_reload_keeps_the_old_config_and_is_named() {
    use atrest::apiserver::access::{AccessOptions, ApiAccess};
    use atrest::apiserver::check::{check_apiservers, Problem};

    let etcd = EtcdServer::start();
    let enc = write_config(etcd.scratch(), "enc.yaml", &[("key1", KEY1)]);
    let old_hash = sha256_file(&enc);
    let cp = ControlPlane::start_with(2, &etcd.endpoint, &enc, true).await;
    // A 31-byte key: kube-apiserver's validation refuses the file.
    let bad = config_text(&[("key1", "c2hvcnQgb2YgYSB0aGlydHktdHdvIGJ5dGUga2V5IQ==")]);
    std::fs::write(&enc, &bad).unwrap();

    let access = ApiAccess::resolve(&AccessOptions {
        kubeconfig: Some(cp.kubeconfig.clone()),
        ..AccessOptions::default()
    })
    .await
    .unwrap()
    .unwrap();
    let urls: Vec<String> = cp.urls().split(',').map(str::to_owned).collect();
    // The observable event: every instance counted a failed reload (polled once a minute).
    let start = std::time::Instant::now();
    loop {
        let r = check_apiservers(&access, bad.as_bytes(), &urls)
            .await
            .unwrap();
        if r.apiservers.iter().all(|a| a.reloads.failure >= 1) {
            for a in &r.apiservers {
                assert_eq!(a.loaded_hash.as_deref(), Some(old_hash.as_str()));
                assert_eq!(a.reloads.success, 0);
                assert!(
                    matches!(&a.problem, Some(Problem::ReloadFailed { loaded_hash }) if *loaded_hash == old_hash),
                    "{a:?}"
                );
            }
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(180),
            "no failed reload counted after 3 minutes: {r:?}"
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let (code, report, stderr) = apiservers(&cp, &enc);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(lagging_hostnames(&report), ["cp-1", "cp-2"]);
    assert_eq!(report["apiservers"][0]["problem"]["kind"], "reload-failed");
}

/// KMS v2 with the test plugin: each apiserver reports the plugin's key ID hash and a healthy
/// `kms-providers`; canaries are written with the plugin's key; after the plugin rotates its key
/// ID, every apiserver converges on the new one (kube-apiserver polls the plugin once a minute).
#[tokio::test(flavor = "multi_thread")]
async fn kms_v2_key_id_hashes_follow_a_plugin_key_rotation() {
    use atrest::apiserver::access::{AccessOptions, ApiAccess};
    use atrest::apiserver::check::check_apiservers;
    use atrest::apiserver::identity::sha256_label;

    let etcd = EtcdServer::start();
    let plugin = crate::kms::TestPlugin::start();
    let enc = etcd.scratch().join("kms.yaml");
    std::fs::write(
        &enc,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: testkms\n          endpoint: {}\n          timeout: 3s\n      - identity: {{}}\n",
            plugin.endpoint()
        ),
    )
    .unwrap();
    let cp = ControlPlane::start(2, &etcd.endpoint, &enc).await;
    let canary = |cp: &ControlPlane| {
        atrest(&[
            "apiservers",
            "--config",
            enc.to_str().unwrap(),
            "--kubeconfig",
            cp.kubeconfig.to_str().unwrap(),
            "--apiserver",
            &cp.urls(),
            "--canary",
            "--endpoints",
            &etcd.endpoint,
        ])
    };
    let (code, report, stderr) = canary(&cp);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(
        report["kms_plugins"][0]["provider"], "testkms",
        "{report:#}"
    );
    assert_eq!(
        report["kms_plugins"][0]["key_id_hash"],
        sha256_label(b"kek-1")
    );
    for a in report["apiservers"].as_array().unwrap() {
        assert_eq!(a["kms_key_id_hashes"][0]["provider"], "testkms", "{a:#}");
        assert_eq!(
            a["kms_key_id_hashes"][0]["key_id_hash"],
            sha256_label(b"kek-1")
        );
        assert_eq!(a["kms_key_id_hashes"][0]["matches_plugin"], true, "{a:#}");
        assert_eq!(a["kms_providers"]["ok"], true, "{a:#}");
        assert_eq!(a["canary"]["written_by"]["provider"], "kms", "{a:#}");
        assert_eq!(a["canary"]["written_by"]["key"], "testkms");
        assert_eq!(a["canary"]["ok"], true);
    }

    plugin.set("key_id=kek-2\n");
    let access = ApiAccess::resolve(&AccessOptions {
        kubeconfig: Some(cp.kubeconfig.clone()),
        ..AccessOptions::default()
    })
    .await
    .unwrap()
    .unwrap();
    let urls: Vec<String> = cp.urls().split(',').map(str::to_owned).collect();
    let file = std::fs::read(&enc).unwrap();
    let want = sha256_label(b"kek-2");
    let start = std::time::Instant::now();
    loop {
        let r = check_apiservers(&access, &file, &urls).await.unwrap();
        let current: Vec<_> = r
            .apiservers
            .iter()
            .map(|a| a.kms_key_id_hashes.first().map(|k| k.key_id_hash.clone()))
            .collect();
        if current.iter().all(|k| k.as_deref() == Some(want.as_str())) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(180),
            "the apiservers did not converge on the new key ID: {current:?}"
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let (code, report, stderr) = canary(&cp);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["kms_plugins"][0]["key_id_hash"], want, "{report:#}");
    for a in report["apiservers"].as_array().unwrap() {
        assert_eq!(a["canary"]["written_by"]["state"], "current", "{a:#}");
        assert_eq!(a["kms_key_id_hashes"][0]["matches_plugin"], true, "{a:#}");
    }
}

/// No API server answers at all: exit 3 with advice, after trying every URL (no cluster needed).
#[test]
fn an_unreachable_api_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "a.yaml", &[("key1", KEY1)]);
    let port = crate::common::free_port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: {ADMIN_TOKEN}}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"),
    )
    .unwrap();
    let (code, _, stderr) = atrest(&[
        "apiservers",
        "--config",
        config.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(&format!("https://127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    // No API access configured at all: a usage error for `apiservers` (exit 2).
    let (code, _, stderr) = atrest(&["apiservers", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no Kubernetes API access"), "{stderr}");
}

/// Without any Kubernetes API access configured the gate is skipped loudly (stderr warning,
/// `apiserver_check: "skipped: …"` in the JSON); `--no-apiserver-check` skips it on purpose.
#[tokio::test(flavor = "multi_thread")]
async fn without_api_access_the_gate_is_skipped_loudly() {
    let etcd = EtcdServer::start();
    let mut client = etcd.client().await;
    crate::common::put_raw(
        &mut client,
        b"/registry/secrets/default/db",
        &crate::audit::stored_secret(),
    )
    .await;
    let enc = write_config(etcd.scratch(), "enc.yaml", &[("key1", KEY1)]);
    let enc = enc.to_str().unwrap();
    let (code, summary, stderr) =
        atrest(&["rewrite", "--endpoints", &etcd.endpoint, "--config", enc]);
    assert_eq!(code, 0, "{summary:#}\n{stderr}");
    assert!(
        stderr.contains("WARNING: not checking that every kube-apiserver"),
        "{stderr}"
    );
    assert!(
        summary["apiserver_check"]
            .as_str()
            .unwrap()
            .starts_with("skipped: no Kubernetes API access configured"),
        "{summary:#}"
    );
    assert_eq!(summary["rewritten"], 1);
    let (code, report, stderr) =
        atrest(&["config", "rotate", enc, "--stage", "add", "--no-backup"]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    let (code, report, stderr) = atrest(&[
        "config",
        "rotate",
        enc,
        "--stage",
        "promote",
        "--no-backup",
        "--no-apiserver-check",
    ]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["apiserver_check"], "skipped: --no-apiserver-check");
    assert!(stderr.contains("WARNING"), "{stderr}");
}
