//! The offline commands, run through the built binary: exit codes, stdout/stderr, files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use assert_cmd::Command;

fn atrest() -> Command {
    Command::cargo_bin("atrest").expect("the atrest binary is built")
}

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/k8s-api/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn example_config() -> String {
    format!(
        "{}/examples/encryption-config.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

const SECRET_KEY: &str = "/registry/secrets/default/db";

#[test]
fn config_new_writes_a_valid_0600_file_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.yaml");
    for provider in ["aescbc", "aesgcm", "secretbox"] {
        let _ = std::fs::remove_file(&path);
        atrest()
            .args(["config", "new", "--provider", provider, "--out"])
            .arg(&path)
            .assert()
            .success()
            .stdout("");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{provider}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("{provider}:")), "{text}");
        assert!(text.contains("identity: {}"), "{text}");
        atrest()
            .args(["config", "check", "-o", "table"])
            .arg(&path)
            .assert()
            .success();
    }
    let before = std::fs::read(&path).unwrap();
    let out = atrest()
        .args(["config", "new", "--out"])
        .arg(&path)
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the old key must survive"
    );
    atrest()
        .args(["config", "new", "--force", "--out"])
        .arg(&path)
        .assert()
        .success();
    assert_ne!(
        std::fs::read(&path).unwrap(),
        before,
        "a fresh key was written"
    );
}

#[test]
fn config_new_keys_are_fresh_each_time() {
    let a = atrest().args(["config", "new"]).output().unwrap().stdout;
    let b = atrest().args(["config", "new"]).output().unwrap().stdout;
    assert!(!a.is_empty());
    assert_ne!(a, b);
}

#[test]
fn config_check_names_the_field_and_never_prints_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    // A 9-byte key: invalid length. The secret text must not be echoed.
    std::fs::write(
        &path,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: c2VjcmV0MTIz\n",
    )
    .unwrap();
    let out = atrest()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("resources[0].providers[0].aescbc.keys[0].secret"),
        "{all}"
    );
    assert!(
        all.contains("secret is not of the expected length, got 9, expected one of [16 24 32]"),
        "{all}"
    );
    assert!(!all.contains("c2VjcmV0MTIz"), "secret leaked: {all}");
}

#[test]
fn encrypt_then_decrypt_round_trips_raw_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let plain = std::fs::read(fixture("core.v1.Secret.pb")).unwrap();
    let enc = atrest()
        .args([
            "encrypt",
            "--config",
            &example_config(),
            "--etcd-key",
            SECRET_KEY,
        ])
        .arg(fixture("core.v1.Secret.pb"))
        .output()
        .unwrap();
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    assert!(enc.stdout.starts_with(b"k8s:enc:aescbc:v1:key2:"));
    assert_eq!(enc.stdout.len(), 23 + 16 + (plain.len() / 16 + 1) * 16);
    let enc_path = dir.path().join("value.bin");
    std::fs::write(&enc_path, &enc.stdout).unwrap();
    let out_path = dir.path().join("plain.bin");
    atrest()
        .args([
            "decrypt",
            "--config",
            &example_config(),
            "--etcd-key",
            SECRET_KEY,
            "--out",
        ])
        .arg(&out_path)
        .arg(&enc_path)
        .assert()
        .success();
    assert_eq!(std::fs::read(&out_path).unwrap(), plain);
    // stdin works too
    atrest()
        .args([
            "decrypt",
            "--config",
            &example_config(),
            "--etcd-key",
            SECRET_KEY,
        ])
        .write_stdin(enc.stdout.clone())
        .assert()
        .success()
        .stdout(plain.clone());
}

/// Issue 22 item 1: `decrypt --out` wrote decrypted Secret data with `std::fs::write` (mode 0644
/// under umask 022, through symbolic links, replacing any file without asking).
#[test]
fn issue_22_1_decrypt_out_is_owner_only_and_never_replaces_silently() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let enc_path = dir.path().join("value.bin");
    let enc = atrest()
        .args([
            "encrypt",
            "--config",
            &example_config(),
            "--etcd-key",
            SECRET_KEY,
        ])
        .arg(fixture("core.v1.Secret.pb"))
        .output()
        .unwrap();
    assert!(enc.status.success());
    std::fs::write(&enc_path, &enc.stdout).unwrap();
    let decrypt = |out: &std::path::Path, force: bool| {
        let mut cmd = atrest();
        cmd.args([
            "decrypt",
            "--config",
            &example_config(),
            "--etcd-key",
            SECRET_KEY,
        ]);
        if force {
            cmd.arg("--force");
        }
        cmd.arg("--out").arg(out).arg(&enc_path).output().unwrap()
    };
    let out_path = dir.path().join("plain.bin");
    let done = decrypt(&out_path, false);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let mode = std::fs::metadata(&out_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "decrypted data must be owner-only");

    // An existing file, or a link planted at the name, is refused and left alone.
    let target = dir.path().join("target");
    std::fs::write(&target, b"keep").unwrap();
    let link = dir.path().join("link.bin");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for existing in [&out_path, &link] {
        let refused = decrypt(existing, false);
        assert_eq!(refused.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    // --force replaces the link itself, never its target.
    assert!(decrypt(&link, true).status.success());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert!(!link.symlink_metadata().unwrap().file_type().is_symlink());
    let mode = std::fs::metadata(&link).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn decrypt_of_a_damaged_value_fails_cleanly() {
    let enc = atrest()
        .args([
            "encrypt",
            "--config",
            &example_config(),
            "--etcd-key",
            SECRET_KEY,
        ])
        .write_stdin(b"k8s\0hello".to_vec())
        .output()
        .unwrap()
        .stdout;
    let mut damaged = enc.clone();
    damaged.truncate(enc.len() - 3);
    let out = atrest()
        .args([
            "decrypt",
            "--config",
            &example_config(),
            "--etcd-key",
            SECRET_KEY,
        ])
        .write_stdin(damaged)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("undecryptable"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn inspect_explains_the_kubernetes_secret_fixture() {
    let out = atrest()
        .args(["inspect", "-o", "json"])
        .arg(fixture("core.v1.Secret.pb"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("core.v1.Secret.json")).unwrap()).unwrap();
    assert_eq!(v["state"], "plaintext");
    assert_eq!(v["object"]["kind"], "Secret");
    assert_eq!(v["object"]["name"], expected["metadata"]["name"]);
    assert_eq!(v["object"]["namespace"], expected["metadata"]["namespace"]);
    let data_keys: Vec<String> = expected["data"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for k in data_keys {
        assert!(
            v["object"]["data_keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == &k),
            "{k}"
        );
    }
    // No data value appears in the output.
    for value in expected["data"].as_object().unwrap().values() {
        let s = value.as_str().unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(s),
            "value leaked"
        );
    }
}

#[test]
fn inspect_with_config_names_the_key_that_reads_it() {
    let enc = atrest()
        .args([
            "encrypt",
            "--config",
            &example_config(),
            "--etcd-key",
            SECRET_KEY,
        ])
        .arg(fixture("core.v1.Secret.pb"))
        .output()
        .unwrap()
        .stdout;
    let out = atrest()
        .args([
            "inspect",
            "-o",
            "json",
            "--config",
            &example_config(),
            "--etcd-key",
            SECRET_KEY,
        ])
        .write_stdin(enc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "current");
    assert_eq!(v["provider"], "aescbc");
    assert_eq!(v["key_name"], "key2");
    assert_eq!(v["read_by"], "resources[0].providers[0].aescbc.keys[0]");
    assert_eq!(v["object"]["kind"], "Secret");
}

#[test]
fn usage_errors_exit_2() {
    atrest().args(["audit", "--no-such-flag"]).assert().code(2);
    atrest()
        .args([
            "encrypt",
            "--config",
            "/nonexistent/enc.yaml",
            "--etcd-key",
            SECRET_KEY,
        ])
        .write_stdin("x")
        .assert()
        .code(2);
    assert!(Path::new(&example_config()).exists());
}

/// Issue 22 item 23 / issue 20: `inspect --config` kept the key's first two path segments, so a
/// custom resource's key (`/registry/<group>/<plural>/…`) picked the wrong chain or none.
#[test]
fn issue_22_23_inspect_reads_a_custom_resource_with_its_own_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enc.yaml");
    std::fs::write(
        &config,
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [widgets.example.com]
    providers:
      - aesgcm:
          keys:
            - name: w1
              secret: MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=
  - resources: ['*.*']
    providers:
      - identity: {}
",
    )
    .unwrap();
    let key = "/registry/example.com/widgets/team-a/w";
    let enc = atrest()
        .args(["encrypt", "--config"])
        .arg(&config)
        .args(["--etcd-key", key])
        .write_stdin(&b"{\"kind\":\"Widget\"}"[..])
        .output()
        .unwrap();
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    assert!(enc.stdout.starts_with(b"k8s:enc:aesgcm:v1:w1:"));
    let out = atrest()
        .args(["inspect", "-o", "json", "--config"])
        .arg(&config)
        .args(["--etcd-key", key])
        .write_stdin(enc.stdout)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["state"], "current", "{r}");
    assert_eq!(r["key_name"], "w1", "{r}");
    assert_eq!(r["readable"], true, "{r}");
}

/// Issue 22 item 5: atrest marks itself non-dumpable at start (no core dump of keys or
/// plaintext, no ptrace by the same user). The kernel shows it in /proc: the files of a
/// non-dumpable process belong to root, not to the user running it. So run atrest as an
/// ordinary user (uid 1234), blocked reading its standard input, and look.
#[test]
fn issue_22_5_the_process_is_not_dumpable() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    assert_eq!(
        std::fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test starts atrest as another user, which needs root (CI and the test machines run as root)"
    );
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("atrest"))
        .arg("inspect")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .uid(1234)
        .gid(1234)
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let owner = loop {
        let owner = std::fs::metadata(&status).map(|m| m.uid());
        if owner.as_ref().is_ok_and(|&uid| uid == 0) || Instant::now() > deadline {
            break owner;
        }
        if let Some(exit) = child.try_wait().unwrap() {
            panic!("atrest exited early: {exit}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        owner.unwrap(),
        0,
        "/proc/PID belongs to the user: the process is dumpable"
    );
}

/// Issue 22 item 14: the warnings kube's documentation calls for, where an operator sees them.
#[test]
fn issue_22_14_aesgcm_and_plain_http_warnings() {
    let out = atrest()
        .args(["config", "new", "--provider", "aesgcm"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must be rotated every 200k writes"), "{err}");

    // A documentation address (TEST-NET-1) over http: warned before dialing; the dial fails.
    let out = atrest()
        .args([
            "audit",
            "--dial-timeout",
            "1s",
            "--endpoints",
            "http://192.0.2.1:2379",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: http://192.0.2.1:2379 is plain http:// to another host"),
        "{err}"
    );
    let out = atrest()
        .args([
            "audit",
            "--dial-timeout",
            "1s",
            "--endpoints",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("plain http://"), "{err}");
}

/// Issue 22 item 4: a config over atrest's own bounds is refused at once, and the hint says it
/// is atrest's limit, not kube-apiserver's.
#[test]
fn issue_22_4_forty_thousand_names_are_refused_as_atrests_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let names: Vec<String> = (0..40_000).map(|i| format!("r{i}.g{i}")).collect();
    std::fs::write(
        &path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n\
             resources:\n- resources: [{}]\n  providers:\n  - identity: {{}}\n",
            names.join(", ")
        ),
    )
    .unwrap();
    let out = atrest()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("more than 10000 resource names") && err.contains("atrest refuses the file"),
        "{err}"
    );
}
