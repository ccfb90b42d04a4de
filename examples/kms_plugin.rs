//! A test KMS v2 (and v1) plugin: a local key-encryption key behind the real plugin gRPC API on
//! a unix socket, for trying atrest's KMS support without a Vault or a cloud KMS.
//! **Not for production**: its KEKs are derived from their key IDs.
//!
//! Run: `cargo run --example kms_plugin -- --socket /tmp/kms.sock [--control DIR] [--key-id kek-1]`
//!
//! It serves until interrupted. Switches (rotate the key ID, report unhealthy, fail decryption,
//! answer slowly) are `name=value` lines in `DIR/control` (default: the socket path plus
//! `.d`), read on every call; call counts are written to `DIR/calls`. See
//! `examples/shared/kms_plugin.rs`. Without arguments it prints this usage and exits.

#[path = "shared/kms_plugin.rs"]
mod kms_plugin;

use std::path::PathBuf;

const USAGE: &str = "usage: kms_plugin --socket PATH [--control DIR] [--key-id ID]

Serves a test KMS v2 (and v1) plugin on the unix socket PATH until interrupted.
Switches, as name=value lines in DIR/control (default PATH.d/control), read on every call:
  key_id=kek-2          the current key ID (rotation)
  healthz=REASON        report unhealthy
  version=v1            report another API version
  fail_decrypt=true     fail every Decrypt
  corrupt_decrypt=true  answer every v2 Decrypt with other bytes
  fail_encrypt=true     fail every Encrypt
  delay_ms=5000         answer every call that late
Call counts: DIR/calls (status, decrypt, encrypt).";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut socket = None;
    let mut control = None;
    let mut key_id = "kek-1".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value\n\n{USAGE}"));
        match arg.as_str() {
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--control" => control = Some(PathBuf::from(value()?)),
            "--key-id" => key_id = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}").into()),
        }
    }
    let Some(socket) = socket else {
        // Without arguments (e.g. when CI runs every example): usage, and exit.
        println!("{USAGE}");
        return Ok(());
    };
    let control_dir = control.unwrap_or_else(|| {
        let mut dir = socket.clone().into_os_string();
        dir.push(".d");
        PathBuf::from(dir)
    });
    eprintln!(
        "kms_plugin: serving KMS v2 and v1 on unix://{} (key ID {key_id}; switches in {})",
        socket.display(),
        control_dir.join("control").display()
    );
    kms_plugin::run(kms_plugin::Options {
        socket,
        control_dir,
        key_id,
    })
}
