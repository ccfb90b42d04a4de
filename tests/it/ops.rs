//! Operator features: `status`, `check-apiserver`, `--kubeadm`, `-o prometheus`, completions
//! and the man page.

use crate::common::cli::run;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::audit::{atrest, seed_every_state, write_config, CONFIG};
use crate::common::{put_raw, EtcdServer, TestPki};

const IDENTITY_FIRST: &str = "\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - identity: {}
  - aescbc:
      keys:
      - name: key1
        secret: rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=
";

fn manifest(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/apiserver")
        .join(name)
}

/// A node's file tree holding the configs the manifests name.
fn node_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let enc = root.path().join("etc/kubernetes/enc");
    std::fs::create_dir_all(&enc).unwrap();
    std::fs::write(enc.join("enc.yaml"), CONFIG).unwrap();
    std::fs::write(enc.join("identity-first.yaml"), IDENTITY_FIRST).unwrap();
    root
}

fn check_apiserver(name: &str, root: &Path, format: &str) -> (i32, String, String) {
    run(atrest()
        .arg("check-apiserver")
        .arg(manifest(name))
        .arg("--root")
        .arg(root)
        .args(["-o", format]))
}

/// The status (`pass`/`fail`/`skip`/`info`) of every check, by id.
fn statuses(report: &Value) -> BTreeMap<String, String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn check_apiserver_passes_the_documented_kubeadm_setup() {
    let root = node_root();
    let (code, out, err) = check_apiserver("kubeadm-encrypted.yaml", root.path(), "table");
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "PASS  config-flag       --encryption-provider-config=/etc/kubernetes/enc/enc.yaml",
        "PASS  mounted           mounted from the node's /etc/kubernetes/enc/enc.yaml",
        "PASS  file-exists       /etc/kubernetes/enc/enc.yaml exists",
        "PASS  valid-config",
        "PASS  covers-secrets",
        "PASS  encrypts-secrets  new Secrets are encrypted with aescbc key \"key2\"",
        "INFO  automatic-reload  --encryption-provider-config-automatic-reload is on",
        "OK: kube-apiserver encrypts new Secrets",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let (code, json, _) = check_apiserver("kubeadm-encrypted.yaml", root.path(), "json");
    assert_eq!(code, 0);
    let r: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["verdict"], "pass");
    assert_eq!(r["container"], "kube-apiserver");
    assert_eq!(r["config_path"], "/etc/kubernetes/enc/enc.yaml");
    assert_eq!(r["host_path"], "/etc/kubernetes/enc/enc.yaml");
    assert_eq!(r["automatic_reload"], true);
    assert!(statuses(&r)
        .iter()
        .all(|(id, s)| s == "pass" || id == "automatic-reload"));
    assert!(!json.contains("7d9+9fRVOV"), "no key material");
}

#[test]
fn check_apiserver_fails_each_broken_link_with_advice() {
    let root = node_root();
    // (manifest, the failing check, words its message and advice must contain)
    let cases = [
        (
            "kubeadm-no-flag.yaml",
            "config-flag",
            vec!["is not set", "atrest config new"],
        ),
        (
            "kubeadm-no-mount.yaml",
            "mounted",
            vec!["no volumeMount", "hostPath"],
        ),
        (
            "kubeadm-missing-file.yaml",
            "file-exists",
            vec![
                "/etc/kubernetes/enc/missing.yaml does not exist",
                "every control-plane node",
            ],
        ),
        (
            "kubeadm-identity-first.yaml",
            "encrypts-secrets",
            vec!["is identity", "atrest rewrite"],
        ),
    ];
    let order = [
        "config-flag",
        "mounted",
        "file-exists",
        "valid-config",
        "covers-secrets",
        "encrypts-secrets",
    ];
    for (name, failing, words) in cases {
        let (code, out, err) = check_apiserver(name, root.path(), "table");
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(
            out.contains(&format!("FAIL  {failing:<17} ")),
            "{name}:\n{out}"
        );
        assert!(out.contains("fix: "), "{name}: no advice\n{out}");
        for w in &words {
            assert!(out.contains(w), "{name}: {w:?} missing from\n{out}");
        }
        assert!(out.contains("\nFAIL: 1 check(s) failed"), "{name}:\n{out}");

        let (code, json, _) = check_apiserver(name, root.path(), "json");
        assert_eq!(code, 1);
        let r: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(r["verdict"], "fail");
        let s = statuses(&r);
        let at = order.iter().position(|c| *c == failing).unwrap();
        for (i, id) in order.iter().enumerate() {
            let want = match i.cmp(&at) {
                std::cmp::Ordering::Less => "pass",
                std::cmp::Ordering::Equal => "fail",
                std::cmp::Ordering::Greater => "skip",
            };
            assert_eq!(s[*id], want, "{name}: {id}");
        }
        assert_eq!(s["automatic-reload"], "info");
    }
    // The split `--flag value` spelling is read.
    let (_, json, _) = check_apiserver("kubeadm-missing-file.yaml", root.path(), "json");
    let r: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["config_path"], "/etc/kubernetes/enc/missing.yaml");
}

#[test]
fn check_apiserver_exits_2_when_the_manifest_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(atrest()
        .arg("check-apiserver")
        .arg(dir.path().join("absent.yaml")));
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read the kube-apiserver manifest"),
        "{err}"
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "spec: [unclosed\n").unwrap();
    let (code, _, err) = run(atrest().arg("check-apiserver").arg(&bad));
    assert_eq!(code, 2);
    assert!(err.contains("is not a pod manifest"), "{err}");
    // An invalid config is a failed check, not an unreadable manifest.
    let root = node_root();
    std::fs::write(
        root.path().join("etc/kubernetes/enc/enc.yaml"),
        "kind: Nope\n",
    )
    .unwrap();
    let (code, out, _) = check_apiserver("kubeadm-encrypted.yaml", root.path(), "table");
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  valid-config"), "{out}");
}

/// CONFIG with a third aescbc key that no entry uses.
fn config_with_spare_key() -> String {
    CONFIG.replace(
        "        secret: rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=\n",
        "        secret: rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=\n      - name: spare\n        secret: AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n",
    )
}

fn status_json(args: &[&str]) -> (Value, i32) {
    let (code, out, err) = run(atrest().arg("status").args(args).args(["-o", "json"]));
    let json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}{err}"));
    (json, code)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_counts_every_key_of_the_config() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_with_spare_key());
    let config = config.to_str().unwrap();
    seed_every_state(&server).await;
    let (s, code) = status_json(&["--endpoints", &server.endpoint, "--config", config]);
    assert_eq!(code, 1, "unknown-key and undecryptable entries: {s}");
    let key =
        |path: &str, provider: &str, name: Option<&str>, write, entries, undecryptable, safe| {
            serde_json::json!({
                "path": path, "provider": provider, "key_name": name, "write": write,
                "entries": entries, "undecryptable": undecryptable, "safe_to_remove": safe,
            })
        };
    let p = "resources[0].providers";
    assert_eq!(
        s["keys"],
        Value::Array(vec![
            key(
                &format!("{p}[0].aescbc.keys[0]"),
                "aescbc",
                Some("key2"),
                true,
                1,
                1,
                false
            ),
            key(
                &format!("{p}[0].aescbc.keys[1]"),
                "aescbc",
                Some("key1"),
                false,
                1,
                0,
                false
            ),
            key(
                &format!("{p}[0].aescbc.keys[2]"),
                "aescbc",
                Some("spare"),
                false,
                0,
                0,
                true
            ),
            key(
                &format!("{p}[1].aesgcm.keys[0]"),
                "aesgcm",
                Some("gcm1"),
                false,
                1,
                1,
                false
            ),
            key(
                &format!("{p}[2].secretbox.keys[0]"),
                "secretbox",
                Some("box1"),
                false,
                1,
                0,
                false
            ),
            key(
                &format!("{p}[3].kms"),
                "kms",
                Some("vault"),
                false,
                1,
                0,
                false
            ),
            key(
                &format!("{p}[4].identity"),
                "identity",
                None,
                false,
                1,
                0,
                false
            ),
        ])
    );
    assert_eq!(
        s["unknown_keys"],
        serde_json::json!([{"provider": "aescbc", "key_name": "key0", "entries": 1}])
    );
    assert_eq!(s["summary"]["total"], 9);
    assert_eq!(s["unreadable_plaintext"], 0);
    assert_eq!(s["apiserver_reads_all"], false);
    assert_eq!(s["verdict"], "findings");
    assert_eq!(s["reasons"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["write_provider"]["key_name"], "key2");

    // The table says the same, and the same status comes from a snapshot.
    let (code, table, _) = run(atrest().args([
        "status",
        "--endpoints",
        &server.endpoint,
        "--config",
        config,
        "-o",
        "table",
    ]));
    assert_eq!(code, 1);
    for needle in [
        "resources[0].providers[0].aescbc.keys[2]",
        "Safe to remove (no entry under /registry/secrets/ needs them): resources[0].providers[0].aescbc.keys[2]",
        "Entries encrypted with keys the config does not have",
        "FINDINGS: kube-apiserver running this config cannot read everything",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from\n{table}");
    }
    let snap = server.snapshot_save("status.db");
    let (offline, code) = status_json(&["--snapshot", snap.to_str().unwrap(), "--config", config]);
    assert_eq!(code, 1);
    for field in ["keys", "unknown_keys", "summary", "revision", "reasons"] {
        assert_eq!(offline[field], s[field], "{field}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_explains_plaintext_without_identity() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let no_identity = CONFIG.replace("  - identity: {}\n", "");
    let config = write_config(dir.path(), &no_identity);
    let mut client = server.client().await;
    put_raw(&mut client, b"/registry/secrets/default/a", b"k8s\0plain").await;
    let (s, code) = status_json(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(s["unreadable_plaintext"], 1);
    assert_eq!(s["apiserver_reads_all"], false);
    assert!(
        s["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no identity provider"),
        "{s}"
    );

    // With identity, the same store is readable: exit 0.
    let config = write_config(dir.path(), CONFIG);
    let (s, code) = status_json(&[
        "--endpoints",
        &server.endpoint,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["apiserver_reads_all"], true);
    assert_eq!(s["verdict"], "clean");
}

/// One parsed sample line: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition format strictly: a HELP and a TYPE line before each metric's
/// samples, every sample `name{labels} value` with escaped label values.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut help = BTreeSet::new();
    let mut typed = BTreeSet::new();
    let mut samples = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name) && !text.is_empty(), "{line}");
            assert!(help.insert(name.to_owned()), "second HELP: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(help.contains(name), "TYPE before HELP: {line}");
            assert_eq!(kind, "gauge", "{line}");
            assert!(typed.insert(name.to_owned()), "second TYPE: {line}");
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let name_end = line.find(['{', ' ']).expect("name");
        let name = &line[..name_end];
        assert!(valid_name(name), "{line}");
        assert!(typed.contains(name), "sample before TYPE: {line}");
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                let eq = inner.find("=\"").expect("label=\"");
                let label = &inner[..eq];
                assert!(valid_name(label), "{line}");
                let mut value = String::new();
                let mut chars = inner[eq + 2..].char_indices();
                let end = loop {
                    match chars.next().expect("closing quote") {
                        (i, '"') => break eq + 2 + i + 1,
                        (_, '\\') => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c} in {line}"),
                        },
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(label.to_owned(), value);
                inner = &inner[end..];
                if let Some(r) = inner.strip_prefix(',') {
                    inner = r;
                } else {
                    rest = inner.strip_prefix('}').expect("closing brace");
                    break;
                }
            }
        }
        let value = rest.strip_prefix(' ').expect("space before value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        samples.push((name.to_owned(), labels, value));
    }
    assert_eq!(help, typed, "every metric has HELP and TYPE");
    samples
}

fn find(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let hits: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(hits.len(), 1, "{name} {labels:?}: {hits:?}");
    hits[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_output_for_audit_and_status() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let config = config.to_str().unwrap();
    seed_every_state(&server).await;
    let p = "/registry/secrets/";

    let (code, text, err) = run(atrest().args([
        "audit",
        "--endpoints",
        &server.endpoint,
        "--config",
        config,
        "-o",
        "prometheus",
    ]));
    // Findings, yet exit 0: the metrics were written, and they carry the findings.
    assert_eq!(code, 0, "{err}");
    let samples = parse_exposition(&text);
    let audit_names: BTreeSet<String> = samples.iter().map(|s| s.0.clone()).collect();
    let entries = |state| {
        find(
            &samples,
            "atrest_entries",
            &[("state", state), ("prefix", p)],
        )
    };
    assert_eq!(
        (
            entries("plaintext"),
            entries("current"),
            entries("stale"),
            entries("unknown-key"),
            entries("undecryptable"),
            entries("kms")
        ),
        (1.0, 1.0, 3.0, 1.0, 2.0, 1.0)
    );
    let by_key = |p: &str, k: &str| {
        find(
            &samples,
            "atrest_entries_by_key",
            &[("provider", p), ("key", k)],
        )
    };
    assert_eq!(by_key("aescbc", "key2"), 2.0, "current + corrupt");
    assert_eq!(by_key("aescbc", "key0"), 1.0);
    assert_eq!(by_key("aesgcm", "gcm1"), 2.0);
    assert_eq!(find(&samples, "atrest_audit_ok", &[]), 0.0);
    assert!(find(&samples, "atrest_audit_revision", &[]) > 1.0);
    assert!(find(&samples, "atrest_audit_timestamp_seconds", &[]) > 1.7e9);

    let snap = server.snapshot_save("prom.db");
    let (_, text, _) = run(atrest()
        .args([
            "audit",
            "--config",
            config,
            "-o",
            "prometheus",
            "--snapshot",
        ])
        .arg(&snap));
    let samples = parse_exposition(&text);
    assert_eq!(
        find(
            &samples,
            "atrest_history_entries",
            &[("state", "plaintext")]
        ),
        0.0
    );
    find(&samples, "atrest_residue_plaintext_objects", &[]);

    let (code, text, _) = run(atrest().args([
        "status",
        "--endpoints",
        &server.endpoint,
        "--config",
        config,
        "-o",
        "prometheus",
    ]));
    assert_eq!(code, 0);
    let samples = parse_exposition(&text);
    // Each metric has one owner: the two textfiles never clash in node_exporter.
    let status_names: BTreeSet<String> = samples.iter().map(|s| s.0.clone()).collect();
    assert!(
        audit_names.is_disjoint(&status_names),
        "shared: {:?}",
        audit_names.intersection(&status_names).collect::<Vec<_>>()
    );
    assert_eq!(
        find(
            &samples,
            "atrest_status_entries",
            &[("state", "unknown-key"), ("prefix", p)]
        ),
        1.0
    );
    let key = |name: &str, path: &str| find(&samples, name, &[("path", path)]);
    let k2 = "resources[0].providers[0].aescbc.keys[0]";
    assert_eq!(key("atrest_key_entries", k2), 1.0);
    assert_eq!(key("atrest_key_undecryptable_entries", k2), 1.0);
    assert_eq!(key("atrest_key_safe_to_remove", k2), 0.0);
    assert_eq!(
        find(
            &samples,
            "atrest_key_entries",
            &[("provider", "identity"), ("key", ""), ("write", "false")]
        ),
        1.0
    );
    assert_eq!(
        find(&samples, "atrest_unknown_key_entries", &[("key", "key0")]),
        1.0
    );
    assert_eq!(find(&samples, "atrest_apiserver_reads_all", &[]), 0.0);
    find(&samples, "atrest_status_revision", &[]);
    find(&samples, "atrest_status_timestamp_seconds", &[]);
}

#[test]
fn prometheus_label_values_are_escaped() {
    // A prefix with a quote and a backslash goes through escaping and parses back.
    let dir = tempfile::tempdir().unwrap();
    let server = EtcdServer::start();
    let config = write_config(dir.path(), CONFIG);
    let prefix = "/reg\"is\\try/secrets/";
    let (_, text, err) = run(atrest().args([
        "audit",
        "--endpoints",
        &server.endpoint,
        "--config",
        config.to_str().unwrap(),
        "--prefix",
        prefix,
        "-o",
        "prometheus",
    ]));
    assert!(
        text.contains(r#"prefix="/reg\"is\\try/secrets/""#),
        "{text}{err}"
    );
    let samples = parse_exposition(&text);
    assert_eq!(
        find(
            &samples,
            "atrest_entries",
            &[("state", "plaintext"), ("prefix", prefix)]
        ),
        0.0
    );
}

#[test]
fn prometheus_is_a_usage_error_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    // Refused before anything is done: no etcd is running at the default endpoint.
    let (code, _, err) = run(atrest()
        .args(["rewrite", "--config"])
        .arg(&config)
        .args(["-o", "prometheus"]));
    assert_eq!(code, 2);
    assert!(err.contains("-o prometheus is only for"), "{err}");
    let (code, _, _) = run(atrest()
        .args(["config", "check"])
        .arg(&config)
        .args(["-o", "prometheus"]));
    assert_eq!(code, 2);
}

fn without_etcdctl_env(cmd: &mut assert_cmd::Command) -> &mut assert_cmd::Command {
    for v in [
        "ETCDCTL_ENDPOINTS",
        "ETCDCTL_CACERT",
        "ETCDCTL_CERT",
        "ETCDCTL_KEY",
    ] {
        cmd.env_remove(v);
    }
    cmd
}

#[test]
fn kubeadm_defaults_to_the_control_plane_endpoint_and_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let config = config.to_str().unwrap();
    for command in [vec!["audit"], vec!["status", "--config", config]] {
        let mut cmd = atrest();
        let (code, _, err) = run(without_etcdctl_env(&mut cmd).args(&command).args([
            "--kubeadm",
            "--dial-timeout",
            "1",
        ]));
        assert_eq!(code, 3, "{err}");
        for needle in [
            "https://127.0.0.1:2379",
            "/etc/kubernetes/pki/etcd/ca.crt",
            "/etc/kubernetes/pki/apiserver-etcd-client.crt",
            "/etc/kubernetes/pki/apiserver-etcd-client.key",
        ] {
            assert!(err.contains(needle), "{needle} missing from:\n{err}");
        }
    }
    // `config rotate --stage prune` takes the same flags.
    let mut cmd = atrest();
    let (code, _, err) = run(without_etcdctl_env(&mut cmd)
        .args(["config", "rotate"])
        .arg(config)
        .args(["--stage", "prune", "--kubeadm", "--dial-timeout", "1"]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("https://127.0.0.1:2379"), "{err}");
    // An explicit endpoint wins over the kubeadm default; the certificates still default.
    let mut cmd = atrest();
    let (code, _, err) = run(without_etcdctl_env(&mut cmd).args([
        "audit",
        "--kubeadm",
        "--endpoints",
        "https://127.0.0.1:1",
    ]));
    assert_eq!(code, 3);
    assert!(
        err.contains(
            "--kubeadm: https://127.0.0.1:1 with --cacert /etc/kubernetes/pki/etcd/ca.crt"
        ),
        "{err}"
    );
}

#[test]
fn kubeadm_yields_to_explicit_tls_flags() {
    let pki = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let mut cmd = atrest();
    let (code, out, err) = run(without_etcdctl_env(&mut cmd)
        .args([
            "status",
            "--kubeadm",
            "--allow-empty",
            "--endpoints",
            &server.endpoint,
        ])
        .args(pki.etcdctl_flags())
        .arg("--config")
        .arg(&config)
        .args(["-o", "json"]));
    assert_eq!(code, 0, "{out}{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        s["source"],
        format!("{} {}", crate::common::store_kind(), server.endpoint)
    );
    assert_eq!(s["summary"]["total"], 0);
}

#[test]
fn completions_and_man_page_are_generated() {
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef atrest"),
        ("fish", "complete -c atrest"),
    ] {
        let (code, out, err) = run(atrest().args(["completions", shell]));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(marker), "{shell}: {marker} missing");
        assert!(
            out.contains("check-apiserver"),
            "{shell}: subcommands missing"
        );
    }
    let (code, out, _) = run(atrest().arg("man"));
    assert_eq!(code, 0);
    assert!(out.contains(".TH atrest 1"), "{out}");
    assert!(out.contains("check\\-apiserver"), "{out}");
    let (code, _, _) = run(atrest().args(["completions", "tcsh"]));
    assert_eq!(code, 2);
}
