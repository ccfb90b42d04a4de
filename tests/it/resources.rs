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

/// What `atrest ARGS` prints on stdout (a table or metrics), whatever its exit status.
fn stdout_of(args: &[&str]) -> String {
    String::from_utf8(atrest().args(args).output().unwrap().stdout).unwrap()
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
            "widgets.example.com": 1,
        })
    );
    // Issue 22 item 18: the encrypted widget is a finding (kube-apiserver reads an uncovered
    // resource as plaintext, so it cannot read it); the plaintext one is only counted.
    assert_eq!(
        s["/registry/example.com/widgets/default/w1"],
        pair("widgets.example.com", "unknown-key"),
        "an encrypted entry of an uncovered resource"
    );
    assert!(
        !s.contains_key("/registry/example.com/widgets/default/w2"),
        "uncovered plaintext entries are not listed"
    );
    assert_eq!(r["summary"]["total"], 8);

    // The table groups by resource and names what is not covered.
    let config = path.to_str().unwrap();
    let audit_out = |format: &str| {
        stdout_of(&[
            "audit",
            "--endpoints",
            &server.endpoint,
            "--config",
            config,
            "-o",
            format,
        ])
    };
    let table = audit_out("table");
    assert!(table.contains("By resource:"), "{table}");
    assert!(table.contains("deployments.apps"), "{table}");
    assert!(
        table.contains("Not covered by the config (3 entries"),
        "{table}"
    );
    assert!(table.contains("widgets.example.com 1"), "{table}");

    // Prometheus: a resource label.
    let prom = audit_out("prometheus");
    assert!(
        prom.contains(
            "atrest_resource_entries{resource=\"nodes\",state=\"plaintext\",prefix=\"/registry/\"} 1"
        ),
        "{prom}"
    );
    assert!(
        prom.contains(
            "atrest_not_covered_entries{resource=\"widgets.example.com\",prefix=\"/registry/\"} 1"
        ),
        "{prom}"
    );

    // --verbose lists the entries the config does not cover, key by key.
    let (quiet, _) = audit(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        path.to_str().unwrap(),
    ]);
    assert!(quiet.get("not_covered_keys").is_none(), "{quiet}");
    let (v, _) = audit(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        path.to_str().unwrap(),
        "--verbose",
    ]);
    let listed: Vec<&str> = v["not_covered_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let counted: u64 = v["not_covered"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(listed.len() as u64, counted, "{v}");
    assert!(
        listed.contains(&"/registry/example.com/widgets/default/w2"),
        "{listed:?}"
    );
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "key order: {listed:?}"
    );
    let table = stdout_of(&[
        "audit",
        "--endpoints",
        &server.endpoint,
        "--config",
        config,
        "-v",
        "-o",
        "table",
    ]);
    assert!(
        table.contains("  /registry/example.com/widgets/default/w2\n"),
        "{table}"
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
    // writes with identity (left alone by the rewrite). kube-apiserver reads those as current,
    // so they are not findings.
    assert_eq!(r["summary"]["plaintext"], 2, "{r}");
    assert_eq!(r["plaintext_by_config"], 2, "{r}");
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
    let (services, code) = audit(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        path.to_str().unwrap(),
        "--resource",
        "services",
    ]);
    assert_eq!(services["summary"]["plaintext"], 1, "{services}");
    assert_eq!(code, 0, "stored as the config says: {services}");
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

/// The config of the rewrite tests: every seeded resource has a rule, some write with identity.
fn rewrite_config() -> String {
    config(&[
        ("secrets", &[AESCBC]),
        ("configmaps", &[SECRETBOX, IDENTITY]),
        ("'*.apps'", &[SECRETBOX, IDENTITY]),
        ("'*.example.com'", &[AESGCM, IDENTITY]),
        ("'*.'", &[IDENTITY]),
    ])
}

/// Each resource's counts in an audit report, as JSON.
fn resource_counts(report: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (name, r) in report["resources"].as_object().unwrap() {
        out.insert(
            name.clone(),
            serde_json::json!([
                r["total"],
                r["current"],
                r["stale"],
                r["plaintext"],
                r["unknown-key"],
                r["undecryptable"]
            ]),
        );
    }
    Value::Object(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_rewrite_by_resource_matches_the_live_one_and_leaves_the_rest_byte_identical() {
    use atrest::store::snapshot::Snapshot;

    let server = EtcdServer::start();
    let seeded = seed(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &rewrite_config());
    let input = server.snapshot_save("before.db");
    let output = dir.path().join("after.db");
    let out = atrest()
        .args(["rewrite", "--config"])
        .arg(&path)
        .arg("--snapshot")
        .arg(&input)
        .arg("--out")
        .arg(&output)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let s: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    // c2, w2 and the Deployment were plaintext; s2 no Secrets key reads.
    assert_eq!(s["rewritten"], 3, "{s}");
    assert_eq!(s["skipped"], 1, "{s}");
    assert!(
        s["left_alone"]["services"]
            .as_str()
            .unwrap()
            .contains("identity"),
        "{s}"
    );
    assert_eq!(out.status.code(), Some(1), "s2 stays unknown-key: {s}");

    // Every key the rewrite does not cover is byte-identical in the new file.
    let before = Snapshot::open(&input).unwrap();
    let after = Snapshot::open(&output).unwrap();
    for key in [
        "/registry/services/specs/default/kubernetes",
        "/registry/minions/node-1",
        "/registry/apiregistration.k8s.io/apiservices/v1.apps",
        "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com",
        "/registry/secrets/default/s2",
        "/registry/secrets/default/s1",
    ] {
        let old = before.get(key.as_bytes()).unwrap().unwrap();
        let new = after.get(key.as_bytes()).unwrap().unwrap();
        assert_eq!(old.value, new.value, "{key} was changed");
        assert_eq!(old.value, seeded[key], "{key}");
    }
    for (key, provider) in [
        (
            "/registry/configmaps/default/c2",
            "k8s:enc:secretbox:v1:b1:",
        ),
        (
            "/registry/deployments/default/web",
            "k8s:enc:secretbox:v1:b1:",
        ),
        (
            "/registry/example.com/widgets/default/w2",
            "k8s:enc:aesgcm:v1:g1:",
        ),
    ] {
        let new = after.get(key.as_bytes()).unwrap().unwrap();
        assert!(new.value.starts_with(provider.as_bytes()), "{key}");
    }

    // The new file audits as the live cluster does after a live rewrite by resource.
    let args = ["--config", path.to_str().unwrap()];
    let (offline, _) = audit(&[&["--snapshot", output.to_str().unwrap()][..], &args[..]].concat());
    let live = atrest()
        .args(["rewrite", "--endpoints", &server.endpoint])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(live.status.code(), Some(1));
    let (online, _) = audit(&[&["--endpoints", server.endpoint.as_str()][..], &args[..]].concat());
    assert_eq!(resource_counts(&offline), resource_counts(&online));
    assert_eq!(offline["not_covered"], online["not_covered"]);
    assert_eq!(offline["history"]["plaintext"], 0, "{}", offline["history"]);

    // --prefix still rewrites one prefix with its resource's chain, and nothing else.
    let narrow = dir.path().join("narrow.db");
    let out = atrest()
        .args(["rewrite", "--prefix", "/registry/configmaps/", "--snapshot"])
        .arg(&input)
        .arg("--out")
        .arg(&narrow)
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["rewritten"], 1, "{s}");
    let narrow = Snapshot::open(&narrow).unwrap();
    let w2 = narrow
        .get(b"/registry/example.com/widgets/default/w2")
        .unwrap()
        .unwrap();
    assert_eq!(w2.value, seeded["/registry/example.com/widgets/default/w2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_by_resource_counts_each_one_and_keeps_every_write_key() {
    let server = EtcdServer::start();
    seed(&server).await;
    let dir = tempfile::tempdir().unwrap();
    // An old secretbox key that reads nothing, kept after the ConfigMaps write key.
    let old_box = "  - secretbox:
      keys:
      - name: b0
        secret: AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=
";
    let text = config(&[
        ("secrets", &[AESCBC]),
        ("configmaps", &[SECRETBOX, old_box, IDENTITY]),
        ("widgets.example.com", &[AESGCM, IDENTITY]),
    ]);
    let path = write_config(dir.path(), &text);
    let out = atrest()
        .args(["status", "--endpoints", &server.endpoint, "--config"])
        .arg(&path)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "s2 is unreadable: {st}");
    assert_eq!(st["prefix"], "/registry/");
    assert_eq!(st["resource"], "secrets, configmaps, widgets.example.com");
    assert_eq!(st["resources"]["secrets"]["total"], 2);
    assert_eq!(st["resources"]["configmaps"]["current"], 1);
    assert_eq!(st["resources"]["configmaps"]["plaintext"], 1);
    assert_eq!(st["resources"]["widgets.example.com"]["total"], 2);
    assert_eq!(st["summary"]["total"], 6);
    // Exact names: only their prefixes are read, so nothing uncovered is met.
    assert!(st.get("not_covered").is_none(), "{st}");
    let keys: Vec<(String, bool, u64, bool)> = st["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["path"].as_str().unwrap().to_owned(),
                k["write"].as_bool().unwrap(),
                k["entries"].as_u64().unwrap(),
                k["safe_to_remove"].as_bool().unwrap(),
            )
        })
        .collect();
    let key = |p: &str, w: bool, n: u64, safe: bool| (p.to_owned(), w, n, safe);
    assert_eq!(
        keys,
        [
            key("resources[0].providers[0].aescbc.keys[0]", true, 1, false),
            key(
                "resources[1].providers[0].secretbox.keys[0]",
                true,
                1,
                false
            ),
            key(
                "resources[1].providers[1].secretbox.keys[0]",
                false,
                0,
                true
            ),
            key("resources[1].providers[2].identity", false, 1, false),
            key("resources[2].providers[0].aesgcm.keys[0]", true, 1, false),
            key("resources[2].providers[1].identity", false, 1, false),
        ],
        "{st}"
    );
    let reasons = st["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{st}");
    assert!(
        reasons[0]
            .as_str()
            .unwrap()
            .starts_with("secrets: 1 entry is encrypted with keys the config does not have"),
        "{st}"
    );

    // --resource narrows; --prefix keeps the one-prefix status.
    let out = atrest()
        .args([
            "status",
            "--endpoints",
            &server.endpoint,
            "--resource",
            "configmaps",
            "--config",
        ])
        .arg(&path)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let only: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{only}");
    assert_eq!(only["prefix"], "/registry/configmaps/");
    assert_eq!(only["summary"]["total"], 2);
    let out = atrest()
        .args([
            "status",
            "--endpoints",
            &server.endpoint,
            "--prefix",
            "/registry/secrets/",
            "--config",
        ])
        .arg(&path)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let one: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one["resource"], "secrets");
    assert!(one.get("resources").is_none(), "{one}");

    // The table and the metrics name each resource.
    let config = path.to_str().unwrap();
    let status_out = |format: &str| {
        stdout_of(&[
            "status",
            "--endpoints",
            &server.endpoint,
            "-o",
            format,
            "--config",
            config,
        ])
    };
    let table = status_out("table");
    assert!(table.contains("By resource:"), "{table}");
    assert!(
        table.contains("Safe to remove (no entry under /registry/ needs them): resources[1].providers[1].secretbox.keys[0]"),
        "{table}"
    );
    assert!(table.contains("widgets.example.com"), "{table}");
    let prom = status_out("prometheus");
    assert!(
        prom.contains("atrest_status_resource_entries{resource=\"configmaps\",state=\"plaintext\",prefix=\"/registry/\"} 1"),
        "{prom}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_checks_every_resource_the_edited_element_serves() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    // One element serves Secrets and ConfigMaps; k2 writes, k1 is old.
    let keys = |names: &[&str]| {
        let mut out = "  - aescbc:\n      keys:\n".to_owned();
        for n in names {
            let secret = if *n == "k1" {
                "7d9+9fRVOV06k4tCYRlZgx3EB0XKUbEzNCfAO/j2Cr0="
            } else {
                "rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY="
            };
            out += &format!("      - name: {n}\n        secret: {secret}\n");
        }
        out
    };
    let old = config(&[("secrets, configmaps", &[&keys(&["k1"])])]);
    let now = config(&[("secrets, configmaps", &[&keys(&["k2", "k1"])])]);
    let mut client = server.client().await;
    let s = "/registry/secrets/default/s";
    put_raw(
        &mut client,
        s.as_bytes(),
        &encrypt(&now, "", "secrets", s, &stored_secret()),
    )
    .await;
    // The ConfigMap is still under k1: the Secrets-only check would let the prune through.
    let c = "/registry/configmaps/default/c";
    put_raw(
        &mut client,
        c.as_bytes(),
        &encrypt(&old, "", "configmaps", c, b"k8s\0cm"),
    )
    .await;
    let path = write_config(dir.path(), &now);
    let prune = |extra: &[&str]| {
        atrest()
            .args(["config", "rotate"])
            .arg(&path)
            .args([
                "--stage",
                "prune",
                "--no-backup",
                "--endpoints",
                &server.endpoint,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = prune(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "refusing to prune: 1 entry of the resources the config covers is still encrypted"
        ),
        "{err}"
    );
    assert!(err.contains("aescbc key \"k1\""), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        now,
        "the config is unchanged"
    );

    // Narrowed to Secrets by --prefix (the old check), the prune would go through: rewrite the
    // ConfigMap instead, then the prune passes.
    let out = atrest()
        .args(["rewrite", "--endpoints", &server.endpoint, "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = prune(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!std::fs::read_to_string(&path).unwrap().contains("k1"));
}
