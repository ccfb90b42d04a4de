//! Issue 22: what a security review and a second first-time operator found, each run through
//! the built binary against a real etcd. Every test here failed on the code before its fix.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::audit::atrest;
use crate::common::{put_raw, EtcdServer};

const HEAD: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs atrest with `args`, returning the exit code, stdout and stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = atrest().args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Item 17: an audit or status that reads nothing said "OK" and exited 0 — a typo in
/// `--prefix`, a full key as `--prefix`, a wrong `--etcd-prefix`, a config naming `secret`.
#[tokio::test(flavor = "multi_thread")]
async fn issue_22_17_an_audit_that_reads_nothing_is_not_ok() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    put_raw(&mut client, b"/registry/secrets/default/db", b"k8s\0plain").await;
    let dir = tempfile::tempdir().unwrap();
    let typo = write(
        dir.path(),
        "typo.yaml",
        &format!("{HEAD}resources:\n- resources: [secret]\n  providers:\n  - aescbc: {{keys: [{{name: k1, secret: '{K1}'}}]}}\n  - identity: {{}}\n"),
    );
    let ok = write(
        dir.path(),
        "ok.yaml",
        &format!("{HEAD}resources:\n- resources: [secrets]\n  providers:\n  - aescbc: {{keys: [{{name: k1, secret: '{K1}'}}]}}\n  - identity: {{}}\n"),
    );
    let e = server.endpoint.as_str();
    let cases: Vec<Vec<&str>> = vec![
        vec!["audit", "--config", typo.to_str().unwrap()],
        vec!["audit", "--prefix", "/registry/secret"],
        vec!["audit", "--prefix", "/registry/secrets/default/db"],
        vec![
            "audit",
            "--config",
            ok.to_str().unwrap(),
            "--etcd-prefix",
            "/kubernetes.io/",
        ],
        vec!["status", "--config", typo.to_str().unwrap()],
    ];
    for case in cases {
        let mut args = case.clone();
        args.extend(["--endpoints", e, "-o", "table"]);
        let (code, out, err) = run(&args);
        assert_eq!(code, 1, "{case:?}: {out}{err}");
        assert!(out.contains("NOTHING READ"), "{case:?}: {out}");
        assert!(!out.contains("OK:"), "{case:?}: {out}");
        args.push("--allow-empty");
        let (code, _, err) = run(&args);
        assert_eq!(code, 0, "{case:?} with --allow-empty: {err}");
    }
    // JSON says so too.
    let (_, out, _) = run(&[
        "audit",
        "--prefix",
        "/registry/secret",
        "--endpoints",
        e,
        "-o",
        "json",
    ]);
    assert_eq!(json(&out)["summary"]["total"], 0);
    // `config new --resources secret` prints the warning `config check` prints.
    let (code, _, err) = run(&[
        "config",
        "new",
        "--resources",
        "secret",
        "--out",
        dir.path().join("new.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no rule covers secrets"), "{err}");
}

/// Items 18 and 19: an encrypted entry of a resource the config does not cover was reported
/// as "stored unencrypted; not findings" although kube-apiserver cannot read it; and under
/// `*.*`, `/registry/ranges/…` and `/registry/masterleases/…` (which kube-apiserver never
/// encrypts) were permanent plaintext findings that `rewrite --prefix` would even encrypt.
#[tokio::test(flavor = "multi_thread")]
async fn issue_22_18_19_uncovered_encrypted_entries_are_findings_and_never_encrypted_keys_are_left_alone(
) {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let all = write(
        dir.path(),
        "all.yaml",
        &format!("{HEAD}resources:\n- resources: ['*.*']\n  providers:\n  - aescbc: {{keys: [{{name: k1, secret: '{K1}'}}]}}\n  - identity: {{}}\n"),
    );
    let core = write(
        dir.path(),
        "core.yaml",
        &format!("{HEAD}resources:\n- resources: ['*.']\n  providers:\n  - aescbc: {{keys: [{{name: k1, secret: '{K1}'}}]}}\n  - identity: {{}}\n"),
    );
    let e = server.endpoint.as_str();
    put_raw(&mut client, b"/registry/secrets/default/db", b"k8s\0secret").await;
    put_raw(
        &mut client,
        b"/registry/deployments/default/web",
        b"k8s\0deployment",
    )
    .await;
    put_raw(&mut client, b"/registry/ranges/serviceips", b"k8s\0range").await;
    put_raw(
        &mut client,
        b"/registry/masterleases/10.0.0.1",
        b"k8s\0lease",
    )
    .await;
    // Everything the `*.*` config covers gets encrypted; ranges and masterleases are left.
    let (code, out, err) = run(&[
        "rewrite",
        "--config",
        all.to_str().unwrap(),
        "--endpoints",
        e,
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["rewritten"], 2, "{out}");
    let (code, out, err) = run(&[
        "audit",
        "--config",
        all.to_str().unwrap(),
        "--endpoints",
        e,
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "a *.* cluster can audit clean: {out}{err}");
    let r = json(&out);
    assert_eq!(r["not_covered"]["ranges"], 1, "{r}");
    assert_eq!(r["not_covered"]["masterleases"], 1, "{r}");
    // `--prefix /registry/ranges/` rewrites nothing there either.
    let (code, out, err) = run(&[
        "rewrite",
        "--config",
        all.to_str().unwrap(),
        "--prefix",
        "/registry/ranges/",
        "--endpoints",
        e,
        "-o",
        "json",
    ]);
    assert_eq!(json(&out)["rewritten"], 0, "{out}{err}");
    assert_eq!(code, 0, "{out}{err}");
    let stored = client
        .get("/registry/ranges/serviceips", None)
        .await
        .unwrap();
    assert_eq!(stored.kvs()[0].value(), b"k8s\0range");

    // With a core-only config, the encrypted Deployment is unreadable to kube-apiserver.
    let (code, out, err) = run(&[
        "audit",
        "--config",
        core.to_str().unwrap(),
        "--endpoints",
        e,
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let r = json(&out);
    let web = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == "/registry/deployments/default/web")
        .unwrap_or_else(|| panic!("the deployment is listed: {r}"));
    assert_eq!(web["state"], "unknown-key", "{web}");
    assert_eq!(web["readable"], false, "{web}");
    assert!(r["not_covered"].get("deployments.apps").is_none(), "{r}");
    let (code, out, _) = run(&[
        "status",
        "--config",
        core.to_str().unwrap(),
        "--endpoints",
        e,
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "{out}");
    let s = json(&out);
    assert!(
        s["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().contains("deployments.apps")),
        "{s}"
    );
}

/// The operator's "confusing" list: `-o FILE` gets a hint towards `--out`; `--concurrency` is
/// bounded; a second `rotate --stage add` (KMS too) is refused while one key waits; a refused
/// prune prints a JSON result; `--help` no longer says the tool is for Secrets only, and every
/// man page has the exit statuses.
#[test]
fn issue_22_cli_slips_get_clear_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["config", "new", "-o", "new.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("did you mean --out new.yaml?"), "{err}");
    for n in ["0", "-1", "100000000"] {
        let (code, _, err) = run(&["rewrite", "--config", "x.yaml", "--concurrency", n]);
        assert_eq!(code, 2, "{n}: {err}");
        assert!(err.contains("1 to 10000"), "{n}: {err}");
    }

    let config = write(
        dir.path(),
        "enc.yaml",
        &format!("{HEAD}resources:\n- resources: [secrets]\n  providers:\n  - aescbc: {{keys: [{{name: k1, secret: '{K1}'}}]}}\n  - identity: {{}}\n"),
    );
    let c = config.to_str().unwrap();
    let (code, _, err) = run(&[
        "config",
        "rotate",
        c,
        "--stage",
        "add",
        "--no-apiserver-check",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&[
        "config",
        "rotate",
        c,
        "--stage",
        "add",
        "--provider",
        "kms",
        "--kms-name",
        "vault",
        "--kms-endpoint",
        "unix:///run/kms.sock",
    ]);
    assert_eq!(code, 1, "a second add while one waits: {err}");
    assert!(err.contains("not promoted yet"), "{err}");
    // A refused prune with -o json still prints a result object.
    let (code, out, err) = run(&[
        "config",
        "rotate",
        c,
        "--stage",
        "prune",
        "--snapshot",
        "examples/cluster.snapshot",
        "--no-apiserver-check",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let r = json(&out);
    assert_eq!(r["refused"], true, "{r}");
    assert_eq!(r["stage"], "prune", "{r}");

    let (_, help, _) = run(&["--help"]);
    assert!(
        help.contains("every resource") && help.contains("EXIT STATUS"),
        "{help}"
    );
    let (_, page, _) = run(&["man", "rewrite"]);
    assert!(page.contains("EXIT STATUS"), "{page}");
}

/// Item 20: the offline rewrite's "the new file holds … 0 plaintext" came from its own count,
/// while an audit of the file found more and exited 1. Now the summary is the new file's audit
/// with the same config, and the rewrite's exit status is `audit --strict`'s of the new file.
/// The bundled snapshot holds an unknown-key and an undecryptable Secret, which no rewrite can
/// fix: the rewrite says so and exits 1.
#[test]
fn issue_22_20_an_offline_rewrite_reports_what_an_audit_of_its_output_finds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new.snapshot");
    let out = out.to_str().unwrap();
    let config = "examples/encryption-config.yaml";
    let (code, text, err) = run(&[
        "rewrite",
        "--config",
        config,
        "--snapshot",
        "examples/cluster.snapshot",
        "--out",
        out,
        "-o",
        "json",
    ]);
    let summary = json(&text);
    let (audit_code, audit_text, _) = run(&[
        "audit",
        "--strict",
        "--config",
        config,
        "--snapshot",
        out,
        "-o",
        "json",
    ]);
    let audit = json(&audit_text);
    assert_eq!(summary["after"], audit["summary"], "{summary}\n{audit}");
    assert_eq!(
        code, audit_code,
        "the rewrite's verdict is the new file's: {err}"
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(summary["after_findings"], 2, "{summary}");
    // The table says what was left, and why.
    let table = dir.path().join("again.snapshot");
    let (_, text, _) = run(&[
        "rewrite",
        "--config",
        config,
        "--snapshot",
        "examples/cluster.snapshot",
        "--out",
        table.to_str().unwrap(),
        "-o",
        "table",
    ]);
    assert!(
        text.contains("Not everything is current: 2 entries are left"),
        "{text}"
    );
    assert!(
        text.contains("unknown-key") && text.contains("undecryptable"),
        "{text}"
    );
}

/// Item 21: a dry run's tables said "rewritten 0" above and "rewritten 5" by resource.
#[tokio::test(flavor = "multi_thread")]
async fn issue_22_21_dry_run_tables_agree() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    for i in 0..5 {
        put_raw(
            &mut client,
            format!("/registry/secrets/default/s{i}").as_bytes(),
            b"k8s\0plain",
        )
        .await;
        put_raw(
            &mut client,
            format!("/registry/configmaps/default/c{i}").as_bytes(),
            b"k8s\0plain",
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "enc.yaml",
        &format!("{HEAD}resources:\n- resources: [secrets, configmaps]\n  providers:\n  - aescbc: {{keys: [{{name: k1, secret: '{K1}'}}]}}\n  - identity: {{}}\n"),
    );
    let (code, text, err) = run(&[
        "rewrite",
        "--dry-run",
        "--config",
        config.to_str().unwrap(),
        "--endpoints",
        &server.endpoint,
        "-o",
        "table",
        "--no-apiserver-check",
    ]);
    assert_eq!(code, 1, "a dry run leaves work to do: {err}");
    assert!(
        !text.contains("rewritten"),
        "a dry run writes nothing: {text}"
    );
    assert!(text.contains("would rewrite"), "{text}");
    assert!(!text.contains("at revision 0"), "{text}");
    assert!(
        err.contains("writes 10 entries"),
        "the estimate counts what will be written: {err}"
    );
}
