//! What a first-time operator tripped over, run through the built binary: each test here
//! failed on the code before the fix it names.

use std::path::{Path, PathBuf};

use crate::audit::atrest;

fn run(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
