//! Writes a small, realistic mix of Secrets into a live etcd, in kube-apiserver's stored
//! format: what `scripts/make-example-snapshot.sh` snapshots into `examples/cluster.snapshot`.
//!
//! Run: `cargo run --example seed_cluster -- http://127.0.0.1:2379 examples/encryption-config.yaml`
//!
//! The story it writes: a cluster that ran without encryption, then enabled aescbc `key1`,
//! then rotated to `key2` without rewriting everything. So it holds plaintext Secrets,
//! Secrets under the old key (stale), under the current key, one under a key nobody has any
//! more, one damaged value, and history: Secrets that were plaintext before they were
//! re-encrypted, and one deleted Secret.

#[path = "shared/stored_secret.rs"]
mod stored_secret;
use stored_secret::stored_secret;

use atrest::config::Config;
use atrest::provider::aescbc::AesCbc;
use atrest::provider::{KeyMaterial, Provider};
use atrest::transform::Chain;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let config_path = args
        .next()
        .unwrap_or_else(|| "examples/encryption-config.yaml".into());
    let config = Config::load(config_path.as_ref())?;
    let current = Chain::from_config(&config, "", "secrets")?;
    // Before the rotation, key1 encrypted new writes.
    let keys = &config.model().resources[0]
        .providers
        .iter()
        .find_map(|p| p.aescbc.as_ref())
        .ok_or("the example config has no aescbc provider")?
        .keys;
    let key1 = keys
        .iter()
        .find(|k| k.name == "key1")
        .ok_or("no key1 in the example config")?;
    let before_rotation = Chain::from_providers(
        "secrets",
        vec![Provider::Aescbc(AesCbc::new("key1", &key1.material())?)],
    )
    .ok_or("empty chain")?;
    // A key that is in no config any more.
    let lost_key = Chain::from_providers(
        "secrets",
        vec![Provider::Aescbc(AesCbc::new(
            "key0",
            &KeyMaterial::new(vec![0x42; 32]),
        )?)],
    )
    .ok_or("empty chain")?;

    let mut client = etcd_client::Client::connect([endpoint.as_str()], None).await?;
    let mut n = 0u64;
    let mut put = |ns: &'static str, name: &'static str, how: &'static str| {
        n += 1;
        let key = format!("/registry/secrets/{ns}/{name}");
        let uid = format!("6f1c2a3b-0000-4000-8000-{n:012}");
        let plain = stored_secret(
            ns,
            name,
            &uid,
            1_700_000_000 + n * 3600,
            &[
                ("username", b"admin"),
                ("password", format!("s3cr3t-{n}").as_bytes()),
            ],
        );
        let value = match how {
            "plaintext" => plain,
            "key1" => before_rotation
                .encrypt(&plain, key.as_bytes())
                .expect("encrypt"),
            "key2" => current.encrypt(&plain, key.as_bytes()).expect("encrypt"),
            "key0" => lost_key.encrypt(&plain, key.as_bytes()).expect("encrypt"),
            "corrupt" => {
                let mut v = current.encrypt(&plain, key.as_bytes()).expect("encrypt");
                v.truncate(v.len() - 5);
                v
            }
            _ => unreachable!(),
        };
        (key, value)
    };
    let writes = [
        put("default", "db-password", "plaintext"),
        put("default", "registry-pull", "key1"),
        put("default", "tls-frontend", "key2"),
        put("kube-system", "bootstrap-token-abcdef", "plaintext"),
        put("kube-system", "cloud-credentials", "key2"),
        put("payments", "stripe-api", "key1"),
        put("payments", "ledger-db", "key2"),
        put("payments", "legacy-hsm", "key0"),
        put("monitoring", "grafana-admin", "key2"),
        put("monitoring", "alertmanager-webhook", "corrupt"),
        put("default", "old-service-token", "plaintext"),
    ];
    for (key, value) in &writes {
        client.put(key.as_bytes(), value.clone(), None).await?;
    }
    // History: two Secrets written in plaintext first, re-encrypted later.
    for name in ["tls-frontend", "cloud-credentials"] {
        let (key, value) = writes
            .iter()
            .find(|(k, _)| k.ends_with(name))
            .ok_or("missing")?;
        let plain = current
            .classify(value, key.as_bytes())
            .plaintext
            .ok_or("unreadable")?;
        client.put(key.as_bytes(), plain.to_vec(), None).await?;
        client.put(key.as_bytes(), value.clone(), None).await?;
    }
    // A deleted Secret: its plaintext revision stays in history until compaction. Deleted the
    // way kube-apiserver deletes (a transaction on the key's revision), which kine supports too.
    let gone = "/registry/secrets/default/old-service-token";
    let seen = client
        .get(gone, None)
        .await?
        .kvs()
        .first()
        .map_or(0, |kv| kv.mod_revision());
    let txn = etcd_client::Txn::new()
        .when([etcd_client::Compare::mod_revision(
            gone,
            etcd_client::CompareOp::Equal,
            seen,
        )])
        .and_then([etcd_client::TxnOp::delete(gone, None)])
        .or_else([etcd_client::TxnOp::get(gone, None)]);
    client.txn(txn).await?;
    // Something outside the audited prefix.
    client
        .put(
            "/registry/configmaps/default/app-settings",
            b"k8s\0".to_vec(),
            None,
        )
        .await?;
    println!("seeded {} Secrets at {endpoint}", writes.len());
    Ok(())
}
