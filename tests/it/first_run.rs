//! What a first-time operator tripped over, run through the built binary: each test here
//! failed on the code before the fix it names.

use crate::common::cli::run;
use std::path::{Path, PathBuf};

use crate::audit::atrest;
use crate::common::{put_raw, EtcdServer};

const HEAD: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_does_not_warn_about_identity_that_never_writes() {
    // secrets → aescbc, then secrets → identity: kube-apiserver appends the chains, so aescbc
    // writes; identity in the second rule only reads old plaintext.
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "enc.yaml",
        &format!(
            "{HEAD}resources:\n- resources: [secrets]\n  providers:\n  - aesgcm: {{keys: [{{name: g1, secret: '{K1}'}}]}}\n- resources: [secrets]\n  providers:\n  - identity: {{}}\n"
        ),
    );
    let (code, out, err) = run(atrest()
        .args(["config", "check", "-o", "table"])
        .arg(&config));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("unencrypted") && !err.contains("unencrypted"),
        "{out}{err}"
    );
}

const TWO_KEYS: &str = "\
apiVersion: apiserver.config.k8s.io/v1
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

fn backups(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".bak"))
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn prune_right_after_add_refuses_to_drop_the_new_key() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "enc.yaml", TWO_KEYS);
    let rotate = |stage: &str, extra: &[&str]| {
        run(atrest()
            .args(["config", "rotate"])
            .arg(&config)
            .args(["--stage", stage, "--endpoints", &server.endpoint])
            .args(extra))
    };
    let (code, out, err) = rotate("add", &["-o", "json"]);
    assert_eq!(code, 0, "{err}");
    // The JSON result names the stage and the new key: key2, the next free number.
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["stage"].as_str(), r["key_name"].as_str()),
        (Some("add"), Some("key2"))
    );
    assert_eq!(r["schema_version"], 1, "{out}");
    assert!(!out.contains("secret") && !out.contains("rrbu51"), "{out}");
    let added = std::fs::read_to_string(&config).unwrap();
    assert!(added.contains("name: key2"), "{added}");

    // Promote forgotten: prune would remove key2, which every apiserver just learned.
    let (code, out, err) = rotate("prune", &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("key \"key2\" was added but never promoted") && err.contains("--discard-new"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        added,
        "nothing changed"
    );

    // --discard-new undoes the add.
    let (code, _, err) = rotate("prune", &["--discard-new"]);
    assert_eq!(code, 0, "{err}");
    let pruned = std::fs::read_to_string(&config).unwrap();
    assert!(
        !pruned.contains("key2") && pruned.contains("name: key1"),
        "{pruned}"
    );
    assert!(!pruned.contains("# atrest"), "the marker is gone: {pruned}");

    // add → promote → prune: the normal path is not refused, and every stage kept its copy.
    assert_eq!(rotate("add", &[]).0, 0);
    assert_eq!(rotate("promote", &[]).0, 0);
    let (code, _, err) = rotate("prune", &[]);
    assert_eq!(code, 0, "{err}");
    let last = std::fs::read_to_string(&config).unwrap();
    // key2 again: the discarded one never wrote anything.
    assert!(
        last.contains("name: key2") && !last.contains("name: key1"),
        "{last}"
    );
    assert_eq!(
        backups(dir.path()),
        [
            "enc.yaml.bak.1",
            "enc.yaml.bak.2",
            "enc.yaml.bak.3",
            "enc.yaml.bak.4",
            "enc.yaml.bak.5"
        ]
    );
    for b in backups(dir.path()) {
        assert_eq!(mode(&dir.path().join(&b)), 0o600, "{b}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("enc.yaml.bak.1")).unwrap(),
        TWO_KEYS
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_names_undecryptable_entries_it_makes_lost_for_good() {
    use atrest::config::Config;
    use atrest::transform::Chain;
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    // key2 writes; key1 still reads. One entry under key1 is damaged.
    let text = TWO_KEYS.replace(
        "      - name: key1",
        "      - name: key2\n        secret: 7d9+9fRVOV06k4tCYRlZgx3EB0XKUbEzNCfAO/j2Cr0=\n      - name: key1",
    );
    let config = write(dir.path(), "enc.yaml", &text);
    let key1_only =
        Chain::from_config(&Config::from_yaml(TWO_KEYS).unwrap(), "", "secrets").unwrap();
    let key = "/registry/secrets/default/damaged";
    let mut value = key1_only
        .encrypt(&crate::audit::stored_secret(), key.as_bytes())
        .unwrap();
    let n = value.len();
    value[n - 20] ^= 0xff;
    let mut client = server.client().await;
    put_raw(&mut client, key.as_bytes(), &value).await;

    let (code, out, err) = run(atrest().args(["config", "rotate"]).arg(&config).args([
        "--stage",
        "prune",
        "--endpoints",
        &server.endpoint,
        "-o",
        "json",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("lost for good") && err.contains(key), "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["removed"], serde_json::json!(["key1"]));
    assert_eq!(r["lost"], serde_json::json!([key]));
}

#[test]
fn rotate_writes_through_a_symlink() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let real = write(dir.path(), "real.yaml", TWO_KEYS);
    let link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (code, _, err) = run(atrest().args(["config", "rotate"]).arg(&link).args([
        "--stage",
        "add",
        "--endpoints",
        &server.endpoint,
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(
        link.symlink_metadata().unwrap().file_type().is_symlink(),
        "still a link"
    );
    assert!(std::fs::read_to_string(&real).unwrap().contains("key2"));
    // The original was 0644: the replacement keeps at most 0640 of it (issue 22 item 8).
    assert_eq!(mode(&real), 0o640);
}

#[test]
fn timeouts_take_etcdctl_durations() {
    let server = EtcdServer::start();
    let (code, _, err) = run(atrest().args([
        "audit",
        "--allow-empty",
        "--endpoints",
        &server.endpoint,
        "--dial-timeout",
        "2s",
        "--command-timeout",
        "5s",
    ]));
    assert_eq!(code, 0, "{err}");
    // Plain seconds still work.
    let (code, _, err) = run(atrest().args([
        "audit",
        "--allow-empty",
        "--endpoints",
        &server.endpoint,
        "--dial-timeout",
        "3",
    ]));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(atrest().args(["audit", "--dial-timeout", "2d"]));
    assert_eq!(code, 2);
    assert!(err.contains("unknown unit"), "{err}");
}

#[test]
fn output_formats_that_mean_nothing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "enc.yaml", TWO_KEYS);
    for cmd in ["encrypt", "decrypt"] {
        let (code, out, err) = run(atrest()
            .args([
                cmd,
                "-o",
                "json",
                "--etcd-key",
                "/registry/secrets/a/b",
                "--config",
            ])
            .arg(&config)
            .write_stdin("x"));
        assert_eq!(code, 2, "{cmd}: {out}{err}");
        assert!(err.contains("means nothing"), "{err}");
        assert!(out.is_empty());
    }
    let (code, _, err) = run(atrest().args(["man", "-o", "json"]));
    assert_eq!(code, 2, "{err}");
    // config new: JSON only with --out (otherwise the output is the YAML, key included).
    let (code, out, err) = run(atrest().args(["config", "new", "-o", "json"]));
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty() && err.contains("--out"), "{out}{err}");
    let path = dir.path().join("new.yaml");
    let (code, out, err) = run(atrest()
        .args(["config", "new", "-o", "json", "--out"])
        .arg(&path));
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["provider"].as_str(), r["key_name"].as_str()),
        (Some("aescbc"), Some("key1"))
    );
    let written = std::fs::read_to_string(&path).unwrap();
    let secret = written
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret: "))
        .unwrap();
    assert!(
        !out.contains(secret) && !err.contains(secret),
        "the key leaked: {out}"
    );
}

#[test]
fn local_write_errors_name_the_path_and_the_os_reason() {
    let (code, _, err) = run(atrest().args(["config", "new", "--out", "/nonexistent/dir/x.yaml"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/dir/x.yaml") && err.contains("No such file or directory"),
        "{err}"
    );
}

/// Runs `command` under `script`, on a pseudo-terminal that reports 0 columns (as `script`
/// does when its own input is not a terminal). Returns (exit status, everything printed).
fn on_a_zero_column_terminal(command: &str) -> (i32, String) {
    let out = std::process::Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) from util-linux runs");
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn tables_keep_their_shape_on_a_terminal_of_zero_columns() {
    let bin = assert_cmd::cargo::cargo_bin("atrest");
    let (code, text) = on_a_zero_column_terminal(&format!(
        "{} audit -o table --snapshot {} --config {}",
        bin.display(),
        repo("examples/cluster.snapshot"),
        repo("examples/encryption-config.yaml")
    ));
    assert_eq!(code, 1, "{text}");
    // The header row of the findings table stays on one line, as on a pipe.
    assert!(
        text.lines()
            .any(|l| l.contains("namespace") && l.contains("state") && l.contains("note")),
        "{text}"
    );
    assert!(text.contains("bootstrap-token-abcdef"), "{text}");
}

#[test]
fn decrypt_refuses_to_print_secret_data_to_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "enc.yaml", TWO_KEYS);
    let bin = assert_cmd::cargo::cargo_bin("atrest");
    let fixture = repo("tests/fixtures/k8s-api/core.v1.Secret.pb");
    let (code, text) = on_a_zero_column_terminal(&format!(
        "{} decrypt --config {} --etcd-key /registry/secrets/a/b {fixture}",
        bin.display(),
        config.display()
    ));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("refusing to write decrypted secret data"),
        "{text}"
    );
    // A pipe (or --out) is what decrypt is for.
    let out = atrest()
        .args(["decrypt", "--etcd-key", "/registry/secrets/a/b", "--config"])
        .arg(&config)
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&fixture).unwrap());
}

#[test]
fn a_man_page_for_every_subcommand() {
    let (code, page, err) = run(atrest().args(["man", "config", "rotate"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        page.contains("atrest\\-config\\-rotate") && page.contains("discard\\-new"),
        "{page}"
    );
    let (code, _, err) = run(atrest().args(["man", "nosuch"]));
    assert_eq!(code, 2);
    assert!(err.contains("audit"), "the known ones are listed: {err}");
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(atrest().arg("man").arg("--dir").arg(dir.path()));
    assert_eq!(code, 0, "{err}");
    for page in [
        "atrest.1",
        "atrest-audit.1",
        "atrest-rewrite.1",
        "atrest-config-rotate.1",
    ] {
        assert!(dir.path().join(page).is_file(), "{page}");
    }
}

#[test]
fn a_tab_in_the_yaml_is_called_a_tab() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "tab.yaml",
        &format!("{HEAD}resources:\n- resources: [secrets]\n  providers:\n\t- identity: {{}}\n"),
    );
    let (code, _, err) = run(atrest()
        .args(["config", "check", "-o", "table"])
        .arg(&config));
    assert_eq!(code, 2);
    assert!(
        err.contains("line 6") && err.contains("a tab character"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_and_prefixes_read_as_an_operator_writes_them() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "enc.yaml", TWO_KEYS);
    let mut client = server.client().await;
    put_raw(
        &mut client,
        b"/registry/secrets/team-a/db",
        &crate::audit::stored_secret(),
    )
    .await;
    // One finding: "1 entry is", not "1 entries are".
    let (code, out, err) = run(atrest()
        .args([
            "audit",
            "-o",
            "table",
            "--endpoints",
            &server.endpoint,
            "--config",
        ])
        .arg(&config));
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains("FINDINGS: 1 entry is plaintext or unreadable"),
        "{out}"
    );
    // A prefix without its trailing slash still splits namespace and name.
    let (code, out, err) = run(atrest()
        .args(["audit", "-o", "json", "--prefix", "/registry/secrets"])
        .args(["--endpoints", &server.endpoint, "--config"])
        .arg(&config));
    assert_eq!(code, 1, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["prefix"], "/registry/secrets/");
    assert_eq!(r["entries"][0]["namespace"], "team-a");
    assert_eq!(r["entries"][0]["name"], "db");
    // The rewrite table and JSON tell retried conflicts from abandoned ones.
    let (code, out, err) = run(atrest()
        .args([
            "rewrite",
            "-o",
            "table",
            "--endpoints",
            &server.endpoint,
            "--config",
        ])
        .arg(&config));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("conflicts retried") && out.contains("abandoned"),
        "{out}"
    );
    // A value that does not decrypt says so in words, not as a state name.
    let (code, _, err) = run(atrest()
        .args(["decrypt", "--etcd-key", "/registry/secrets/a/b", "--config"])
        .arg(&config)
        .write_stdin("k8s:enc:aescbc:v1:key9:0123456789abcdef0123456789abcdef"));
    assert_eq!(code, 2);
    assert!(
        err.contains("the value names a key the config does not have"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrite_compact_twice_is_not_an_error() {
    // The second run compacts at a revision already compacted: done, not a failure.
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "enc.yaml", TWO_KEYS);
    let mut client = server.client().await;
    put_raw(
        &mut client,
        b"/registry/secrets/team-a/db",
        &crate::audit::stored_secret(),
    )
    .await;
    for run_no in 1..=2 {
        let (code, _, err) = run(atrest()
            .args([
                "rewrite",
                "--compact",
                "-o",
                "json",
                "--endpoints",
                &server.endpoint,
            ])
            .arg("--config")
            .arg(&config));
        assert_eq!(code, 0, "run {run_no}: {err}");
    }
}
