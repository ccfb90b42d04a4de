//! Audit an etcd snapshot with the library: no etcd server needed.
//!
//! Run: `cargo run --example audit_snapshot [SNAPSHOT] [CONFIG]`
//! (defaults: `examples/cluster.snapshot`, `examples/encryption-config.yaml`).

use atrest::audit::{audit, Observer, ReportEntry};
use atrest::config::Config;
use atrest::resource::{ResourceChains, Target, DEFAULT_ROOT};
use atrest::store::{Store, StoreSpec};
use atrest::transform::{KmsOptions, State};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let snapshot = args
        .next()
        .unwrap_or_else(|| "examples/cluster.snapshot".into());
    let config = args
        .next()
        .unwrap_or_else(|| "examples/encryption-config.yaml".into());

    // 1. The config kube-apiserver runs with: every resource it covers, each with the chain
    //    kube-apiserver reads it with.
    let config = Config::load(config.as_ref())?;
    let chains = ResourceChains::new(config, &KmsOptions::default())?;
    let target = Target::resources(chains, DEFAULT_ROOT, &[])?;

    // 2. The snapshot, opened read-only (its sha256 trailer is verified).
    let store = Store::open(StoreSpec::Snapshot(snapshot.into())).await?;

    // 3. Classify every covered entry; the report never holds a secret value. Entries are
    //    handed to an observer as they are classified (the report keeps only counters).
    struct Print;
    impl Observer for Print {
        fn entry(&self, entry: &ReportEntry) {
            if entry.state != State::Current {
                println!("{:<60} {}", entry.key, entry.state);
            }
        }
    }
    let report = audit(&store, &target, &Print).await?;
    println!(
        "{} entries at revision {}: {} plaintext, {} stale, {} unreadable",
        report.summary.total,
        report.revision,
        report.summary.plaintext,
        report.summary.stale,
        report.summary.unknown_key + report.summary.undecryptable
    );
    Ok(())
}
