//! Audits by resource (issue 12): one run covers every resource the config names — exact names,
//! `*.<group>`, `*.` and `*.*` — each entry read with the chain kube-apiserver would use for its
//! resource, against a real etcd seeded with kube-apiserver's key layout.

use std::collections::BTreeMap;

use atrest::config::Config;
use atrest::transform::Chain;
use serde_json::Value;

use crate::audit::{atrest, stored_secret, write_config};
use crate::common::{put_many, put_raw, EtcdServer};

const AESCBC: &str = "  - aescbc:
      keys:
      - name: k1
        secret: 7d9+9fRVOV06k4tCYRlZgx3EB0XKUbEzNCfAO/j2Cr0=
";
const SECRETBOX: &str = "  - secretbox:
      keys:
      - name: b1
        secret: HxwdHhscGRoXGBUWExQREg8QDQ4LDAkKBwgFBgMEAQI=
";
const AESGCM: &str = "  - aesgcm:
      keys:
      - name: g1
        secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
";
const IDENTITY: &str = "  - identity: {}\n";

/// A config from `(resources, providers)` elements, in order.
fn config(elements: &[(&str, &[&str])]) -> String {
    let mut out =
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
            .to_owned();
    for (resources, providers) in elements {
        out += &format!("- resources: [{resources}]\n  providers:\n");
        for p in *providers {
            out += p;
        }
    }
    out
}

/// Exact names: Secrets under aescbc, ConfigMaps under secretbox, the custom resource under
/// aesgcm; each readable as plaintext too (identity) except Secrets.
fn exact_config() -> String {
    config(&[
        ("secrets", &[AESCBC]),
        ("configmaps", &[SECRETBOX, IDENTITY]),
        ("widgets.example.com", &[AESGCM, IDENTITY]),
    ])
}

fn encrypt(config_text: &str, group: &str, resource: &str, key: &str, plain: &[u8]) -> Vec<u8> {
    let config = Config::from_yaml(config_text).unwrap();
    Chain::from_config(&config, group, resource)
        .unwrap()
        .encrypt(plain, key.as_bytes())
        .unwrap()
}

const CRD: &str = r#"{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1","metadata":{"name":"widgets.example.com"},"spec":{"group":"example.com","names":{"plural":"widgets","singular":"widget","kind":"Widget"},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true}]}}"#;

fn widget(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"example.com/v1","kind":"Widget","metadata":{{"name":"{name}","namespace":"default"}},"spec":{{"password":"hunter2"}}}}"#
    )
}

/// The keys seeded, with their plaintext or encrypted values: every kind of layout.
async fn seed(server: &EtcdServer) -> BTreeMap<&'static str, Vec<u8>> {
    let exact = exact_config();
    let mut kv: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    let s1 = "/registry/secrets/default/s1";
    kv.insert(s1, encrypt(&exact, "", "secrets", s1, &stored_secret()));
    // A secretbox value under a Secret key: the ConfigMaps chain would read it, the Secrets
    // chain cannot.
    let s2 = "/registry/secrets/default/s2";
    kv.insert(s2, encrypt(&exact, "", "configmaps", s2, &stored_secret()));
    let c1 = "/registry/configmaps/default/c1";
    kv.insert(c1, encrypt(&exact, "", "configmaps", c1, b"k8s\0configmap"));
    kv.insert(
        "/registry/configmaps/default/c2",
        b"k8s\0configmap".to_vec(),
    );
    kv.insert(
        "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com",
        CRD.as_bytes().to_vec(),
    );
    let w1 = "/registry/example.com/widgets/default/w1";
    kv.insert(
        w1,
        encrypt(
            &exact,
            "example.com",
            "widgets",
            w1,
            widget("w1").as_bytes(),
        ),
    );
    kv.insert(
        "/registry/example.com/widgets/default/w2",
        widget("w2").into_bytes(),
    );
    kv.insert(
        "/registry/deployments/default/web",
        b"k8s\0deployment".to_vec(),
    );
    kv.insert(
        "/registry/services/specs/default/kubernetes",
        b"k8s\0service".to_vec(),
    );
    kv.insert("/registry/minions/node-1", b"k8s\0node".to_vec());
    kv.insert(
        "/registry/apiregistration.k8s.io/apiservices/v1.apps",
        br#"{"kind":"APIService"}"#.to_vec(),
    );
    let mut client = server.client().await;
    for (k, v) in &kv {
        put_raw(&mut client, k.as_bytes(), v).await;
    }
    kv
}

fn audit(args: &[&str]) -> (Value, i32) {
    let out = atrest()
        .arg("audit")
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, out.status.code().unwrap())
}

/// `key` → (resource, state) of every listed entry.
fn states(report: &Value) -> BTreeMap<String, (String, String)> {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_owned(),
                (
                    e["resource"].as_str().unwrap().to_owned(),
                    e["state"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

fn pair(resource: &str, state: &str) -> (String, String) {
    (resource.to_owned(), state.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_names_read_each_resource_with_its_own_chain() {
    let server = EtcdServer::start();
    seed(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &exact_config());
    let (r, code) = audit(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "plaintext and unknown-key entries are findings");
    let s = states(&r);
    assert_eq!(s.len(), 6, "only the three named resources: {s:?}");
    assert_eq!(
        s["/registry/secrets/default/s1"],
        pair("secrets", "current")
    );
    assert_eq!(
        s["/registry/secrets/default/s2"],
        pair("secrets", "unknown-key"),
        "the Secrets chain has no secretbox key"
    );
    assert_eq!(
        s["/registry/configmaps/default/c1"],
        pair("configmaps", "current")
    );
    assert_eq!(
        s["/registry/configmaps/default/c2"],
        pair("configmaps", "plaintext")
    );
    assert_eq!(
        s["/registry/example.com/widgets/default/w1"],
        pair("widgets.example.com", "current")
    );
    assert_eq!(
        s["/registry/example.com/widgets/default/w2"],
        pair("widgets.example.com", "plaintext")
    );
    let w1 = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "w1")
        .unwrap();
    assert_eq!(w1["namespace"], "default");
    assert_eq!(w1["provider"], "aesgcm");
    let res = &r["resources"];
    assert_eq!(res["secrets"]["write_provider"]["provider"], "aescbc");
    assert_eq!(res["configmaps"]["write_provider"]["provider"], "secretbox");
    assert_eq!(res["configmaps"]["total"], 2);
    assert_eq!(res["widgets.example.com"]["plaintext"], 1);
    assert_eq!(r["summary"]["total"], 6);
    assert_eq!(r["prefix"], "/registry/");
    assert_eq!(r["not_covered"], serde_json::json!({}));

    // --resource narrows to one resource; the secretbox value the Secrets chain cannot read is
    // the ConfigMaps chain's.
    let (only, code) = audit(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        path.to_str().unwrap(),
        "--resource",
        "configmaps",
    ]);
    assert_eq!(code, 1);
    assert_eq!(only["prefix"], "/registry/configmaps/");
    assert_eq!(
        states(&only).keys().collect::<Vec<_>>(),
        [
            "/registry/configmaps/default/c1",
            "/registry/configmaps/default/c2"
        ]
    );
    // --prefix keeps today's behaviour: one prefix, its resource's chain.
    let (p, _) = audit(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        path.to_str().unwrap(),
        "--prefix",
        "/registry/example.com/widgets/",
    ]);
    assert_eq!(p["entries"][0]["resource"], "widgets.example.com");
    assert_eq!(p["entries"][0]["state"], "current");
}

#[tokio::test(flavor = "multi_thread")]
async fn group_and_core_wildcards_cover_their_resources_and_count_the_rest() {
    let server = EtcdServer::start();
    seed(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&[
        ("secrets", &[AESCBC]),
        ("'*.apps'", &[SECRETBOX, IDENTITY]),
        ("'*.'", &[AESGCM, IDENTITY]),
    ]);
    let path = write_config(dir.path(), &text);
    let (r, code) = audit(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let s = states(&r);
    assert_eq!(
        s["/registry/secrets/default/s1"],
        pair("secrets", "current"),
        "the exact name wins over *."
    );
    assert_eq!(
        s["/registry/configmaps/default/c1"],
        pair("configmaps", "unknown-key"),
        "*. has no secretbox key"
    );
    assert_eq!(
        s["/registry/deployments/default/web"],
        pair("deployments.apps", "plaintext")
    );
    assert_eq!(
        s["/registry/services/specs/default/kubernetes"],
        pair("services", "plaintext")
    );
    assert_eq!(s["/registry/minions/node-1"], pair("nodes", "plaintext"));
    let node = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"] == "nodes")
        .unwrap();
    assert_eq!(node["namespace"], Value::Null);
    assert_eq!(node["name"], "node-1");
    assert_eq!(
        r["resources"]["deployments.apps"]["write_provider"]["provider"],
        "secretbox"
    );
    assert_eq!(
        r["resources"]["services"]["write_provider"]["provider"],
        "aesgcm"
    );
    assert_eq!(
        r["not_covered"],
        serde_json::json!({
            "apiservices.apiregistration.k8s.io": 1,
            "customresourcedefinitions.apiextensions.k8s.io": 1,
            "widgets.example.com": 2,
        })
    );
    assert!(
        !s.keys().any(|k| k.contains("example.com")),
        "uncovered entries are not listed"
    );
    assert_eq!(r["summary"]["total"], 7);

    // The table groups by resource and names what is not covered.
    let out = atrest()
        .args([
            "audit",
            "--endpoints",
            &server.endpoint,
            "--config",
            path.to_str().unwrap(),
            "-o",
            "table",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("By resource:"), "{table}");
    assert!(table.contains("deployments.apps"), "{table}");
    assert!(
        table.contains("Not covered by the config (4 entries"),
        "{table}"
    );
    assert!(table.contains("widgets.example.com 2"), "{table}");

    // Prometheus: a resource label.
    let out = atrest()
        .args([
            "audit",
            "--endpoints",
            &server.endpoint,
            "--config",
            path.to_str().unwrap(),
            "-o",
            "prometheus",
        ])
        .output()
        .unwrap();
    let prom = String::from_utf8(out.stdout).unwrap();
    assert!(
        prom.contains(
            "atrest_resource_entries{resource=\"nodes\",state=\"plaintext\",prefix=\"/registry/\"} 1"
        ),
        "{prom}"
    );
    assert!(
        prom.contains(
            "atrest_not_covered_entries{resource=\"widgets.example.com\",prefix=\"/registry/\"} 2"
        ),
        "{prom}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn star_star_covers_everything_and_snapshot_audit_equals_live() {
    let server = EtcdServer::start();
    let seeded = seed(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&[
        ("configmaps", &[SECRETBOX, IDENTITY]),
        ("'*.*'", &[AESCBC, IDENTITY]),
    ]);
    let path = write_config(dir.path(), &text);
    let args = ["--config", path.to_str().unwrap()];
    let (live, code) = audit(&[&["--endpoints", server.endpoint.as_str()][..], &args[..]].concat());
    assert_eq!(code, 1);
    let s = states(&live);
    assert_eq!(s.len(), seeded.len(), "every key is covered: {s:?}");
    assert_eq!(live["not_covered"], serde_json::json!({}));
    assert_eq!(
        s["/registry/apiregistration.k8s.io/apiservices/v1.apps"],
        pair("apiservices.apiregistration.k8s.io", "plaintext")
    );
    assert_eq!(
        s["/registry/example.com/widgets/default/w1"],
        pair("widgets.example.com", "unknown-key"),
        "*.* has no aesgcm key"
    );
    assert_eq!(
        s["/registry/secrets/default/s2"],
        pair("secrets", "unknown-key")
    );
    assert_eq!(
        s["/registry/configmaps/default/c1"],
        pair("configmaps", "current")
    );
    let snap = server.snapshot_save("resources.db");
    let (offline, offline_code) =
        audit(&[&["--snapshot", snap.to_str().unwrap()][..], &args[..]].concat());
    assert_eq!(offline_code, code);
    for field in [
        "prefix",
        "revision",
        "write_provider",
        "entries",
        "summary",
        "resources",
        "not_covered",
    ] {
        assert_eq!(live[field], offline[field], "{field} differs");
    }
    assert_eq!(offline["history"]["total"], 0);
}

/// Every key with its value and mod_revision, as etcd has it now.
async fn dump(server: &EtcdServer) -> BTreeMap<String, (Vec<u8>, i64)> {
    let mut client = server.client().await;
    let resp = client
        .get(
            "/registry/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key().to_vec()).unwrap(),
                (kv.value().to_vec(), kv.mod_revision()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrite_moves_each_resource_to_its_write_provider_and_leaves_the_rest() {
    let server = EtcdServer::start();
    seed(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&[
        ("secrets", &[AESCBC]),
        ("configmaps", &[SECRETBOX, IDENTITY]),
        ("'*.apps'", &[SECRETBOX, IDENTITY]),
        ("'*.example.com'", &[AESGCM, IDENTITY]),
        ("'*.'", &[IDENTITY]),
    ]);
    let path = write_config(dir.path(), &text);
    let before = dump(&server).await;
    let out = atrest()
        .args([
            "rewrite",
            "--endpoints",
            &server.endpoint,
            "--config",
            path.to_str().unwrap(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    assert_eq!(
        out.status.code(),
        Some(1),
        "s2 stays unknown-key: {summary}"
    );
    // c2, w2 and the Deployment were plaintext.
    assert_eq!(summary["rewritten"], 3, "{summary}");
    assert_eq!(summary["skipped"], 1, "{summary}");
    assert_eq!(summary["resources"]["configmaps"]["rewritten"], 1);
    assert_eq!(summary["resources"]["widgets.example.com"]["rewritten"], 1);
    assert_eq!(summary["resources"]["deployments.apps"]["rewritten"], 1);
    assert_eq!(summary["resources"]["secrets"]["skipped"], 1);
    assert!(
        summary["left_alone"]["services"]
            .as_str()
            .unwrap()
            .contains("identity"),
        "{summary}"
    );
    let after = dump(&server).await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for key in [
        "/registry/services/specs/default/kubernetes",
        "/registry/minions/node-1",
        "/registry/apiregistration.k8s.io/apiservices/v1.apps",
        "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com",
        "/registry/secrets/default/s2",
    ] {
        assert_eq!(before[key], after[key], "{key} was touched");
    }
    let prefix = |key: &str| after[key].0.clone();
    assert!(prefix("/registry/configmaps/default/c2").starts_with(b"k8s:enc:secretbox:v1:b1"));
    assert!(prefix("/registry/deployments/default/web").starts_with(b"k8s:enc:secretbox:v1:b1"));
    assert!(prefix("/registry/example.com/widgets/default/w2").starts_with(b"k8s:enc:aesgcm:v1:g1"));

    // The audit agrees: everything covered is current but the value no Secrets key reads.
    let (r, _) = audit(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        path.to_str().unwrap(),
    ]);
    // Plaintext is reported whatever the config says: here only the core resources the config
    // writes with identity (left alone by the rewrite).
    assert_eq!(r["summary"]["plaintext"], 2, "{r}");
    assert_eq!(r["resources"]["services"]["plaintext"], 1);
    assert_eq!(r["resources"]["nodes"]["plaintext"], 1);
    assert_eq!(r["resources"]["deployments.apps"]["current"], 1);
    assert_eq!(r["summary"]["unknown-key"], 1);
    assert_eq!(r["resources"]["widgets.example.com"]["current"], 2);
    assert_eq!(r["resources"]["configmaps"]["current"], 2);
    assert_eq!(
        r["not_covered"],
        serde_json::json!({
            "apiservices.apiregistration.k8s.io": 1,
            "customresourcedefinitions.apiextensions.k8s.io": 1,
        })
    );
}

/// A `*.*` audit pages through the root one top-level segment at a time: with more keys than a
/// page holds in several segments, every key is still seen exactly once, in key order, and the
/// snapshot audit sees the same.
#[tokio::test(flavor = "multi_thread")]
async fn root_scans_over_many_pages_see_every_key_once() {
    let server = EtcdServer::start();
    let client = server.client().await;
    let mut items = Vec::new();
    for i in 0..1300u32 {
        for prefix in ["/registry/configmaps/", "/registry/deployments/"] {
            let key = format!("{prefix}ns{}/o{i:05}", i % 7);
            items.push((key.into_bytes(), b"k8s\0object".to_vec(), 0));
        }
    }
    for i in 0..5u32 {
        let key = format!("/registry/minions/node-{i}");
        items.push((key.into_bytes(), b"k8s\0node".to_vec(), 0));
    }
    let expected: Vec<String> = {
        let mut keys: Vec<String> = items
            .iter()
            .map(|(k, _, _)| String::from_utf8(k.clone()).unwrap())
            .collect();
        keys.sort();
        keys
    };
    put_many(&client, items).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config(&[("'*.*'", &[AESCBC, IDENTITY])]));
    let args = ["--config", path.to_str().unwrap()];
    let (live, code) = audit(&[&["--endpoints", server.endpoint.as_str()][..], &args[..]].concat());
    assert_eq!(code, 1, "plaintext entries are findings");
    let keys: Vec<String> = live["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), expected.len());
    assert_eq!(keys, expected, "every key once, in key order");
    assert_eq!(live["resources"]["configmaps"]["total"], 1300);
    assert_eq!(live["resources"]["deployments.apps"]["total"], 1300);
    assert_eq!(live["resources"]["nodes"]["total"], 5);
    let snap = server.snapshot_save("many.db");
    let (offline, _) = audit(&[&["--snapshot", snap.to_str().unwrap()][..], &args[..]].concat());
    assert_eq!(live["entries"], offline["entries"]);
}
