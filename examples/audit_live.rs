//! Audit a live etcd with the library.
//!
//! Run: `cargo run --example audit_live -- http://127.0.0.1:2379 examples/encryption-config.yaml`

use atrest::audit::{audit, NoProgress, Verdict};
use atrest::config::Config;
use atrest::resource::{ResourceChains, Target, DEFAULT_ROOT};
use atrest::store::etcd::EtcdOptions;
use atrest::store::{Store, StoreSpec};
use atrest::transform::KmsOptions;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let config = args
        .next()
        .unwrap_or_else(|| "examples/encryption-config.yaml".into());

    // Every resource the config covers, each read with its own chain.
    let chains = ResourceChains::new(Config::load(config.as_ref())?, &KmsOptions::default())?;
    let target = Target::resources(chains, DEFAULT_ROOT, &[])?;
    // Connecting probes every endpoint, so a wrong address fails here, not mid-scan.
    let store = Store::open(StoreSpec::Etcd(EtcdOptions {
        endpoints: vec![endpoint],
        ..EtcdOptions::default()
    }))
    .await?;
    let report = audit(&store, &target, &NoProgress).await?;
    println!("{}", serde_json::to_string_pretty(&report.summary)?);
    if report.verdict(false) == Verdict::Findings {
        println!(
            "findings: run `atrest rewrite --config …` to re-encrypt plaintext and stale entries"
        );
    }
    Ok(())
}
