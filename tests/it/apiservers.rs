//! `atrest apiservers` and the apiserver gate against real kube-apiservers (issue 19).
//!
//! Each test starts its own etcd and 1–3 kube-apiservers (tests/common/apiserver.rs). No mock:
//! every hash, Lease and refusal here comes from a running kube-apiserver v1.37.2.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
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

/// Runs the CLI with `-o json`; asserts no token appears in any output.
fn atrest(args: &[&str]) -> (i32, Value, String) {
    let out: Output = Command::cargo_bin("atrest")
        .unwrap()
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent")
        .args(["-o", "json"])
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
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
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
    }

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
