//! Audit an etcd snapshot with the library: no etcd server needed.
//!
//! Run: `cargo run --example audit_snapshot [SNAPSHOT] [CONFIG]`
//! (defaults: `examples/cluster.snapshot`, `examples/encryption-config.yaml`).

use atrest::audit::{audit_snapshot, NoProgress};
use atrest::config::Config;
use atrest::store::snapshot::Snapshot;
use atrest::transform::{Chain, State};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let snapshot = args
        .next()
        .unwrap_or_else(|| "examples/cluster.snapshot".into());
    let config = args
        .next()
        .unwrap_or_else(|| "examples/encryption-config.yaml".into());

    // 1. The config kube-apiserver runs with, and the chain it uses for Secrets.
    let config = Config::load(config.as_ref())?;
    let chain = Chain::from_config(&config, "", "secrets")?;

    // 2. The snapshot, opened read-only (its sha256 trailer is verified).
    let snap = Snapshot::open(snapshot.as_ref())?;

    // 3. Classify every Secret; the report never holds a secret value.
    let report = audit_snapshot(&snap, Some(&chain), b"/registry/secrets/", &NoProgress).await?;
    for entry in &report.entries {
        if entry.state != State::Current {
            println!("{:<60} {}", entry.key, entry.state);
        }
    }
    println!(
        "{} Secrets at revision {}: {} plaintext, {} stale, {} unreadable",
        report.summary.total,
        report.revision,
        report.summary.plaintext,
        report.summary.stale,
        report.summary.unknown_key + report.summary.undecryptable
    );
    Ok(())
}
