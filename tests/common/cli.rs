//! Running the built `atrest` binary: the helpers every CLI test shares.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The CLI, with KMS plugins not contacted (`ATREST_NO_KMS=true`, i.e. `--no-kms`): test
/// configs name kms providers with no plugin behind them, so their entries are only
/// recognised. tests/it/kms.rs runs the CLI against a real test plugin.
pub fn atrest() -> Command {
    let mut cmd = Command::cargo_bin("atrest").expect("the atrest binary is built");
    cmd.env("ATREST_NO_KMS", "true");
    cmd
}

/// Writes `text` as `encryption-config.yaml` in `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("encryption-config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the command and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A finished command's standard error, as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
