//! Audit a live etcd with the library.
//!
//! Run: `cargo run --example audit_live -- http://127.0.0.1:2379 examples/encryption-config.yaml`

use atrest::audit::{audit, NoProgress, Verdict};
use atrest::config::Config;
use atrest::store::etcd::{EtcdOptions, EtcdStore};
use atrest::transform::Chain;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let config = args
        .next()
        .unwrap_or_else(|| "examples/encryption-config.yaml".into());

    let chain = Chain::from_config(&Config::load(config.as_ref())?, "", "secrets")?;
    // Connecting probes every endpoint, so a wrong address fails here, not mid-scan.
    let store = EtcdStore::connect(EtcdOptions {
        endpoints: vec![endpoint],
        ..EtcdOptions::default()
    })
    .await?;
    let report = audit(&store, Some(&chain), b"/registry/secrets/", &NoProgress).await?;
    println!("{}", serde_json::to_string_pretty(&report.summary)?);
    if report.verdict(false) == Verdict::Findings {
        println!(
            "findings: run `atrest rewrite --config …` to re-encrypt plaintext and stale entries"
        );
    }
    Ok(())
}
