//! KMS v2 and v1 end to end: a real etcd, and the test KMS plugin (`examples/kms_plugin.rs`) as
//! a real process serving gRPC on a real unix socket. Faults are real: the plugin is killed,
//! stopped (SIGSTOP), told to report unhealthy, to fail decryption, or to answer late.
//!
//! The plugin process is this test binary run as the ignored test
//! [`kms_plugin_process`] (so no other binary has to be built first); its code is the example's,
//! shared through `examples/shared/kms_plugin.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use atrest::config::Config;
use atrest::provider::kms::plugin::{Api, KmsPlugin, PluginClient};
use atrest::provider::kms::{EncryptedObject, AES_GCM_KEY};
use atrest::transform::{Chain, KmsOptions};
use prost::Message;
use serde_json::Value;

use crate::audit::stored_secret;
use crate::common::{put_raw, EtcdServer};

#[path = "../../examples/shared/kms_plugin.rs"]
#[allow(dead_code)]
mod plugin;

const PLUGIN_ENV: &str = "ATREST_TEST_KMS_PLUGIN";

/// Not a test: the body of the test KMS plugin process that [`TestPlugin::start`] runs (this
/// binary, filtered to this test, with `ATREST_TEST_KMS_PLUGIN` = socket, control dir, key ID).
#[test]
#[ignore = "the test KMS plugin process, started by TestPlugin::start"]
fn kms_plugin_process() {
    let Ok(spec) = std::env::var(PLUGIN_ENV) else {
        eprintln!("kms_plugin_process only runs as the plugin child of the KMS tests");
        return;
    };
    let mut parts = spec.splitn(3, '\n');
    let (Some(socket), Some(control), Some(key_id)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("{PLUGIN_ENV} must be socket\\ncontrol dir\\nkey ID");
    };
    plugin::run(plugin::Options {
        socket: socket.into(),
        control_dir: control.into(),
        key_id: key_id.to_owned(),
    })
    .expect("the test KMS plugin failed");
}

/// A running test plugin; killed when dropped (also used by tests/it/apiservers.rs).
pub(crate) struct TestPlugin {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl TestPlugin {
    pub(crate) fn start() -> TestPlugin {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kms.sock");
        let control = dir.path().join("control");
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "kms::kms_plugin_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                PLUGIN_ENV,
                format!("{}\n{}\nkek-1", socket.display(), control.display()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the test KMS plugin (this test binary)");
        let mut p = TestPlugin { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(20);
        while plugin::read_calls(&p.control()).is_none() || !p.socket.exists() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("the test KMS plugin exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the test KMS plugin did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    fn control(&self) -> PathBuf {
        self.dir.path().join("control")
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Replaces the plugin's switches (`name=value` lines; "" resets them).
    pub(crate) fn set(&self, switches: &str) {
        let tmp = self.control().join("control.tmp");
        std::fs::write(&tmp, switches).unwrap();
        std::fs::rename(tmp, self.control().join("control")).unwrap();
    }

    /// (status, decrypt, encrypt) calls so far.
    fn calls(&self) -> (u64, u64, u64) {
        plugin::read_calls(&self.control()).unwrap()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // A stopped plugin must be continued to die promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &self.child.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        self.kill();
    }
}

/// A config: kms v2 `testkms` first (at `endpoint`), kms v1 `legacy` (same plugin), aescbc
/// `key1`, identity.
fn config_text(endpoint: &str, timeout: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms:
          apiVersion: v2
          name: testkms
          endpoint: {endpoint}
          timeout: {timeout}
      - kms:
          apiVersion: v1
          name: legacy
          endpoint: {endpoint}
          timeout: {timeout}
      - aescbc:
          keys:
            - name: key1
              secret: rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=
      - identity: {{}}
"
    )
}

/// The aescbc-only config of a cluster before the KMS migration.
const AESCBC_ONLY: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=
      - identity: {}
";

struct Setup {
    server: EtcdServer,
    plugin: TestPlugin,
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn setup(timeout: &str) -> Setup {
    let server = EtcdServer::start();
    let plugin = TestPlugin::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enc.yaml");
    std::fs::write(&config, config_text(&plugin.endpoint(), timeout)).unwrap();
    Setup {
        server,
        plugin,
        dir,
        config,
    }
}

/// The chain of `config` with its plugins connected (what kube-apiserver would write with).
fn chain_of(text: &str) -> Chain {
    let config = Config::from_yaml(text).unwrap();
    Chain::from_config_with_kms(&config, "", "secrets", &KmsOptions::connect()).unwrap()
}

fn key(name: &str) -> String {
    format!("/registry/secrets/default/{name}")
}

/// Writes `n` Secrets named `<prefix>-<i>` encrypted by `chain`'s write provider.
async fn put_encrypted(s: &Setup, chain: &Chain, prefix: &str, n: usize) {
    let mut client = s.server.client().await;
    for i in 0..n {
        let k = key(&format!("{prefix}-{i}"));
        let v = chain.encrypt(&stored_secret(), k.as_bytes()).unwrap();
        put_raw(&mut client, k.as_bytes(), &v).await;
    }
}

fn atrest(args: &[&str], s: &Setup) -> (i32, Value, String) {
    let out = Command::cargo_bin("atrest")
        .unwrap()
        .args(args)
        .args(["--endpoints", &s.server.endpoint, "--config"])
        .arg(&s.config)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), json, stderr)
}

/// Entry states by name (the part after `default/`).
fn states(report: &Value) -> BTreeMap<String, (String, Option<String>)> {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                (
                    e["state"].as_str().unwrap().to_owned(),
                    e["key_id"].as_str().map(str::to_owned),
                ),
            )
        })
        .collect()
}

fn count(report: &Value, state: &str, key_id: Option<&str>) -> usize {
    states(report)
        .values()
        .filter(|(s, k)| s == state && k.as_deref() == key_id)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_state_through_the_plugin_with_one_call_per_dek() {
    let s = setup("3s");
    let text = config_text(&s.plugin.endpoint(), "3s");
    // Two runs of a writer: two seeds, so two distinct encrypted DEKs for 40 entries.
    put_encrypted(&s, &chain_of(&text), "run1", 25).await;
    put_encrypted(&s, &chain_of(&text), "run2", 15).await;
    put_encrypted(&s, &chain_of(AESCBC_ONLY), "cbc", 3).await;
    let mut client = s.server.client().await;
    put_raw(&mut client, key("plain").as_bytes(), &stored_secret()).await;
    // A provider name the config lacks.
    let other = text.replace("name: testkms", "name: otherkms");
    let v = chain_of(&other)
        .encrypt(&stored_secret(), key("other").as_bytes())
        .unwrap();
    put_raw(&mut client, key("other").as_bytes(), &v).await;
    // A damaged value: one flipped ciphertext byte (GCM fails).
    let mut v = chain_of(&text)
        .encrypt(&stored_secret(), key("damaged").as_bytes())
        .unwrap();
    let prefix_len = b"k8s:enc:kms:v2:testkms:".len();
    let mut o = EncryptedObject::decode(&v[prefix_len..]).unwrap();
    o.encrypted_data[50] ^= 1;
    v.truncate(prefix_len);
    o.encode(&mut v).unwrap();
    put_raw(&mut client, key("damaged").as_bytes(), &v).await;
    // A legacy AES_GCM_KEY value under the current key ID: readable, but stale (not the seed
    // type). Built by hand: the plugin wraps a DEK; the data is nonce | ct | tag.
    let client_v2 = PluginClient::new(
        "testkms",
        &s.plugin.endpoint(),
        Api::V2,
        Duration::from_secs(3),
    )
    .unwrap();
    let dek = [7u8; 32];
    let wrapped = client_v2.encrypt(&dek).unwrap();
    let gcm = atrest::provider::aesgcm::AesGcm::new(
        "x",
        &atrest::provider::KeyMaterial::new(dek.to_vec()),
    )
    .unwrap();
    let sealed = gcm
        .encrypt(&stored_secret(), key("legacy-dek").as_bytes())
        .unwrap();
    let o = EncryptedObject {
        encrypted_data: sealed[gcm.prefix().len()..].to_vec(),
        key_id: wrapped.key_id.clone(),
        encrypted_dek_source: wrapped.ciphertext,
        annotations: wrapped.annotations,
        encrypted_dek_source_type: AES_GCM_KEY,
    };
    let mut v = b"k8s:enc:kms:v2:testkms:".to_vec();
    o.encode(&mut v).unwrap();
    put_raw(&mut client, key("legacy-dek").as_bytes(), &v).await;

    let before = s.plugin.calls();
    let (code, r, err) = atrest(&["audit"], &s);
    let after = s.plugin.calls();
    assert_eq!(code, 1, "{err}");
    let st = states(&r);
    assert_eq!(count(&r, "current", Some("kek-1")), 40, "{st:?}");
    assert_eq!(st["cbc-0"].0, "stale");
    assert_eq!(st["plain"].0, "plaintext");
    assert_eq!(st["other"], ("unknown-key".to_owned(), None));
    assert_eq!(
        st["damaged"],
        ("undecryptable".into(), Some("kek-1".into()))
    );
    assert_eq!(st["legacy-dek"], ("stale".into(), Some("kek-1".into())));
    let damaged = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "damaged")
        .unwrap();
    assert!(damaged["error"]
        .as_str()
        .unwrap()
        .contains("authentication failed"));
    // Decrypt calls: one per distinct encrypted DEK (run1, run2, damaged's run, legacy-dek),
    // not one per entry (42 KMS entries).
    assert_eq!(after.1 - before.1, 4, "decrypt calls");
    assert_eq!(after.2 - before.2, 0, "an audit never encrypts");

    // The plugin refuses every DEK: undecryptable with its own words; still one call per DEK.
    s.plugin.set("fail_decrypt=true");
    let before = s.plugin.calls();
    let (code, r, _) = atrest(&["audit"], &s);
    let after = s.plugin.calls();
    assert_eq!(code, 1);
    assert_eq!(count(&r, "undecryptable", Some("kek-1")), 42);
    assert_eq!(after.1 - before.1, 4, "failures are asked once per DEK too");
    let e = &r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "run1-0")
        .unwrap()["error"];
    assert!(
        e.as_str().unwrap().contains("fail_decrypt switch"),
        "the plugin's reason is quoted: {e}"
    );

    // --no-kms: recognised only, no socket contact.
    s.plugin.set("");
    let before = s.plugin.calls();
    let (code, r, _) = atrest(&["audit", "--no-kms"], &s);
    assert_eq!(code, 1);
    assert_eq!(r["summary"]["kms"].as_u64(), Some(42));
    assert_eq!(
        count(&r, "kms", Some("kek-1")),
        42,
        "key IDs without the plugin"
    );
    assert_eq!(s.plugin.calls(), before, "--no-kms never calls the plugin");
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrite_aescbc_and_kms_v1_to_kms_v2_with_one_encrypt_call() {
    let s = setup("3s");
    let text = config_text(&s.plugin.endpoint(), "3s");
    put_encrypted(&s, &chain_of(AESCBC_ONLY), "cbc", 30).await;
    // KMS v1 entries, as an older cluster wrote them (one DEK per value).
    let v1_chain = chain_of(&text);
    let legacy = v1_chain
        .kms_providers()
        .find(|k| k.name() == "legacy")
        .unwrap();
    let mut client = s.server.client().await;
    for i in 0..5 {
        let k = key(&format!("v1-{i}"));
        let v = legacy.encrypt(&stored_secret(), k.as_bytes()).unwrap();
        assert!(v.starts_with(b"k8s:enc:kms:v1:legacy:"));
        put_raw(&mut client, k.as_bytes(), &v).await;
    }

    let (code, r, _) = atrest(&["audit"], &s);
    assert_eq!(code, 0);
    assert_eq!(r["summary"]["stale"].as_u64(), Some(35));

    let before = s.plugin.calls();
    let (code, summary, err) = atrest(&["rewrite"], &s);
    let after = s.plugin.calls();
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["rewritten"].as_u64(), Some(35), "{summary}");
    assert_eq!(
        after.2 - before.2,
        1,
        "one Encrypt call (one seed) for the whole run"
    );
    assert_eq!(
        after.1 - before.1,
        6,
        "one Decrypt per v1 DEK and one of the new seed; the new values verify from cache"
    );

    let (code, r, _) = atrest(&["audit"], &s);
    assert_eq!(code, 0);
    assert_eq!(count(&r, "current", Some("kek-1")), 35);
    // Every value decrypts, through the CLI, to the original bytes.
    let value = s
        .server
        .etcdctl(&["get", &key("v1-3"), "--print-value-only"]);
    let value = &value[..value.len() - 1];
    assert!(value.starts_with(b"k8s:enc:kms:v2:testkms:"));
    let path = s.dir.path().join("v");
    std::fs::write(&path, value).unwrap();
    let out = Command::cargo_bin("atrest")
        .unwrap()
        .args(["decrypt", "--etcd-key", &key("v1-3"), "--config"])
        .arg(&s.config)
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, stored_secret());
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_key_rotation_makes_entries_stale_and_rewrite_makes_them_current() {
    let s = setup("3s");
    let text = config_text(&s.plugin.endpoint(), "3s");
    put_encrypted(&s, &chain_of(&text), "a", 20).await;
    let (code, r, _) = atrest(&["audit"], &s);
    assert_eq!((code, count(&r, "current", Some("kek-1"))), (0, 20));

    s.plugin.set("key_id=kek-2");
    let (code, r, _) = atrest(&["audit", "--strict"], &s);
    assert_eq!(code, 1, "stale counts with --strict");
    assert_eq!(count(&r, "stale", Some("kek-1")), 20);

    let (code, summary, err) = atrest(&["rewrite"], &s);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["rewritten"].as_u64(), Some(20));
    let (code, r, _) = atrest(&["audit", "--strict"], &s);
    assert_eq!((code, count(&r, "current", Some("kek-2"))), (0, 20));
    // status counts per KMS key ID: kek-1 is no longer used.
    let (code, st, _) = atrest(&["status"], &s);
    assert_eq!(code, 0);
    assert_eq!(
        st["keys"][0]["kms_key_ids"],
        serde_json::json!({"kek-2": 20})
    );
    // The table names the key IDs too.
    let out = Command::cargo_bin("atrest")
        .unwrap()
        .args([
            "audit",
            "--endpoints",
            &s.server.endpoint,
            "-o",
            "table",
            "--config",
        ])
        .arg(&s.config)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("KMS v2 entries by KMS key ID") && table.contains("kek-2"),
        "{table}"
    );
}

/// Runs the CLI with a deadline: a hang fails the test instead of blocking it.
fn run_bounded(mut cmd: Command, limit: Duration) -> (i32, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code().unwrap(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("atrest did not finish within {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cli(s: &Setup, args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("atrest").unwrap();
    cmd.args(args)
        .args(["--endpoints", &s.server.endpoint, "--config"])
        .arg(&s.config);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_unhealthy_slow_stopped_or_down_is_exit_3_and_nothing_is_written() {
    let mut s = setup("1s");
    put_encrypted(&s, &chain_of(AESCBC_ONLY), "cbc", 5).await;
    let revision = |s: &Setup| {
        // A read's header carries the store's revision (kine's status header is empty).
        let out = s
            .server
            .etcdctl(&["get", "/registry/", "--prefix", "--keys-only", "-w", "json"]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    };
    let start = revision(&s);
    let socket = s.plugin.socket.display().to_string();

    // Unhealthy: rewrite refuses, quoting the plugin; an audit still runs (with a warning).
    s.plugin.set("healthz=hsm offline");
    let (code, err) = run_bounded(cli(&s, &["rewrite"]), Duration::from_secs(30));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("\"hsm offline\"") && err.contains(&socket),
        "{err}"
    );
    let (code, err) = run_bounded(cli(&s, &["audit"]), Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("not healthy"), "{err}");

    // Healthy, but Encrypt fails: one Encrypt call for the whole run, every entry failed, nothing
    // written.
    s.plugin.set("fail_encrypt=true");
    let before = s.plugin.calls();
    let (code, err) = run_bounded(cli(&s, &["rewrite"]), Duration::from_secs(30));
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        s.plugin.calls().2 - before.2,
        1,
        "a failing Encrypt is asked once per run"
    );

    // Another API version: refused too.
    s.plugin.set("version=v1");
    let (code, err) = run_bounded(cli(&s, &["rewrite"]), Duration::from_secs(30));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("\"v1\""), "{err}");

    // Slow (answers after 5 s; timeout 1 s): exit 3 naming the call, no hang.
    s.plugin.set("delay_ms=5000");
    let (code, err) = run_bounded(cli(&s, &["rewrite"]), Duration::from_secs(30));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("did not answer Status within 1s"), "{err}");

    // Stopped (SIGSTOP: the socket accepts, nothing answers): the same.
    s.plugin.set("");
    s.plugin.signal("-STOP");
    let (code, err) = run_bounded(cli(&s, &["audit"]), Duration::from_secs(30));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("testkms") && err.contains(&socket), "{err}");
    s.plugin.signal("-CONT");

    // Down: exit 3 with the provider, the socket and what to check.
    s.plugin.kill();
    for args in [&["audit"][..], &["rewrite"][..], &["status"][..]] {
        let (code, err) = run_bounded(cli(&s, args), Duration::from_secs(30));
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(
            err.contains("\"testkms\"") && err.contains(&socket) && err.contains("--no-kms"),
            "{err}"
        );
    }
    assert_eq!(revision(&s), start, "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_audit_and_offline_rewrite_with_the_plugin_and_endpoint_override() {
    let s = setup("3s");
    let text = config_text(&s.plugin.endpoint(), "3s");
    put_encrypted(&s, &chain_of(&text), "kms", 10).await;
    put_encrypted(&s, &chain_of(AESCBC_ONLY), "cbc", 10).await;
    let snap = s.server.snapshot_save("kms.db");

    // The config names a socket that is not there; --kms-endpoint points at the real one.
    let moved = s.dir.path().join("moved.yaml");
    std::fs::write(
        &moved,
        config_text("unix:///var/run/kmsplugin/absent.sock", "3s"),
    )
    .unwrap();
    let audit = |extra: &[&str], file: &Path| {
        let out = Command::cargo_bin("atrest")
            .unwrap()
            .args(["audit", "-o", "json", "--config"])
            .arg(&moved)
            .arg("--snapshot")
            .arg(file)
            .args(extra)
            .output()
            .unwrap();
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.code().unwrap(),
            json,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = audit(&[], &snap);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("/var/run/kmsplugin/absent.sock"), "{err}");
    let over = format!("testkms={}", s.plugin.endpoint());
    let over_v1 = format!("legacy={}", s.plugin.endpoint());
    let overrides = ["--kms-endpoint", &over, "--kms-endpoint", &over_v1];
    let (code, r, err) = audit(&overrides, &snap);
    assert_eq!(code, 0, "{err}");
    assert_eq!(count(&r, "current", Some("kek-1")), 10);
    assert_eq!(r["summary"]["stale"].as_u64(), Some(10));
    // A name the config does not have is a usage error.
    let (code, _, err) = audit(&["--kms-endpoint", "nope=unix:///x"], &snap);
    assert_eq!(code, 2, "{err}");

    // Offline rewrite of the snapshot into a new file, through the plugin.
    let out_file = s.dir.path().join("out.db");
    let out = Command::cargo_bin("atrest")
        .unwrap()
        .args(["rewrite", "-o", "json", "--config"])
        .arg(&moved)
        .args(overrides)
        .arg("--snapshot")
        .arg(&snap)
        .arg("--out")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, r, err) = audit(&overrides, &out_file);
    assert_eq!(code, 0, "{err}");
    assert_eq!(count(&r, "current", Some("kek-1")), 20, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_new_and_rotate_migrate_aescbc_to_kms_v2() {
    let s = setup("3s");
    let file = s.dir.path().join("migrate.yaml");
    let run = |args: &[&str]| {
        let out = Command::cargo_bin("atrest")
            .unwrap()
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let f = file.to_str().unwrap();
    let endpoint = s.plugin.endpoint();
    // A KMS config straight away: no key material in it.
    let (code, yaml, err) = run(&[
        "config",
        "new",
        "--provider",
        "kms",
        "--kms-name",
        "testkms",
        "--kms-endpoint",
        &endpoint,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        yaml.contains("apiVersion: v2")
            && yaml.contains("name: testkms")
            && !yaml.contains("secret:"),
        "{yaml}"
    );
    let (code, _, err) = run(&["config", "new", "--provider", "kms"]);
    assert_eq!(code, 2);
    assert!(err.contains("--kms-name"), "{err}");

    // The migration: aescbc config with data, add kms second, promote, rewrite, prune.
    let (code, _, err) = run(&["config", "new", "--out", f]);
    assert_eq!(code, 0, "{err}");
    let aescbc = std::fs::read_to_string(&file).unwrap();
    put_encrypted(&s, &chain_of(&aescbc), "m", 12).await;
    let (code, _, err) = run(&[
        "config",
        "rotate",
        f,
        "--stage",
        "add",
        "--provider",
        "kms",
        "--kms-name",
        "testkms",
        "--kms-endpoint",
        &endpoint,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["config", "rotate", f, "--stage", "promote"]);
    assert_eq!(code, 0, "{err}");
    let promoted = Config::load(&file).unwrap();
    assert_eq!(
        promoted.model().resources[0].providers[0]
            .kms
            .as_ref()
            .unwrap()
            .name,
        "testkms"
    );
    // Prune before the rewrite: refused, naming the provider and key still in use.
    let (code, _, err) = run(&[
        "config",
        "rotate",
        f,
        "--stage",
        "prune",
        "--endpoints",
        &s.server.endpoint,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("12 under aescbc key \"key1\""), "{err}");
    let out = Command::cargo_bin("atrest")
        .unwrap()
        .args([
            "rewrite",
            "-o",
            "json",
            "--endpoints",
            &s.server.endpoint,
            "--config",
            f,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, err) = run(&[
        "config",
        "rotate",
        f,
        "--stage",
        "prune",
        "--endpoints",
        &s.server.endpoint,
    ]);
    assert_eq!(code, 0, "{err}");
    let pruned = Config::load(&file).unwrap();
    let kinds: Vec<_> = pruned.model().resources[0]
        .providers
        .iter()
        .map(|p| p.type_name().unwrap())
        .collect();
    assert_eq!(kinds, ["kms", "identity"]);
    let out = Command::cargo_bin("atrest")
        .unwrap()
        .args([
            "audit",
            "-o",
            "json",
            "--strict",
            "--endpoints",
            &s.server.endpoint,
            "--config",
            f,
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(count(&r, "current", Some("kek-1")), 12);
}

/// Issue 22 item 3: the plugin is asked once to `Decrypt` the seed its `Encrypt` wrapped before
/// the first write; a plugin that cannot open its own output gets nothing written.
#[tokio::test(flavor = "multi_thread")]
async fn issue_22_3_kms_v2_seed_round_trips_through_the_plugin_before_writing() {
    let s = setup("3s");
    put_encrypted(&s, &chain_of(AESCBC_ONLY), "cbc", 5).await;
    let before_values = s.server.etcdctl(&["get", "/registry/", "--prefix"]);

    s.plugin.set("corrupt_decrypt=true");
    let before = s.plugin.calls();
    let (code, summary, err) = atrest(&["rewrite"], &s);
    let after = s.plugin.calls();
    assert_ne!(code, 0, "{summary}{err}");
    let text = format!("{summary}{err}");
    assert!(
        text.contains("cannot decrypt its own Encrypt output"),
        "{text}"
    );
    assert_eq!(after.2 - before.2, 1, "one Encrypt for the run");
    assert_eq!(after.1 - before.1, 1, "one Decrypt of the new seed");
    assert_eq!(
        s.server.etcdctl(&["get", "/registry/", "--prefix"]),
        before_values,
        "nothing was written"
    );

    // A plugin that opens its own output: the same rewrite goes ahead.
    s.plugin.set("");
    let (code, summary, err) = atrest(&["rewrite"], &s);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["rewritten"].as_u64(), Some(5), "{summary}");
}
