//! Reports over more entries than a table shows (issue 21, "a million entries in flat memory"):
//! the offline rewrite and the prune guard keep counts and a bounded sample, hand every entry
//! to an observer, list every one in `-o json` and stop their tables at the bound with
//! "…and N more".

use std::collections::BTreeSet;
use std::sync::Mutex;

use atrest::audit::PRUNE_SAMPLE;
use atrest::provider::{aescbc::AesCbc, KeyMaterial, Provider};
use atrest::rewrite::{EntryResult, Observer, RewriteEntry};
use atrest::transform::Chain;
use atrest::{Config, KmsOptions, ResourceChains, Store, StoreSpec, Target};
use serde_json::Value;

use crate::audit::{atrest, stored_secret};
use crate::common::cli::run;
use crate::common::{put_raw, EtcdServer};

/// The rows a table lists before "…and N more" (the CLI's bound, the same as the prune
/// guard's sample).
const ROWS: usize = 50;

/// key2 writes, key1 still reads.
const TWO_KEYS: &str = "\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aescbc:
      keys:
      - name: key2
        secret: 7d9+9fRVOV06k4tCYRlZgx3EB0XKUbEzNCfAO/j2Cr0=
      - name: key1
        secret: rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=
  - identity: {}
";

/// The chain that writes with key1 only (what the cluster wrote before key2).
fn key1() -> Chain {
    let config = Config::from_yaml(&TWO_KEYS.replace(
        "      - name: key2\n        secret: 7d9+9fRVOV06k4tCYRlZgx3EB0XKUbEzNCfAO/j2Cr0=\n",
        "",
    ))
    .unwrap();
    Chain::from_config(&config, "", "secrets").unwrap()
}

fn two_keys() -> Chain {
    Chain::from_config(&Config::from_yaml(TWO_KEYS).unwrap(), "", "secrets").unwrap()
}

/// A key the config does not have: its entries are `unknown-key`, skipped by a rewrite.
fn other() -> Chain {
    let key = KeyMaterial::new(vec![9; 32]);
    Chain::from_providers(
        "secrets",
        vec![Provider::Aescbc(AesCbc::new("other", &key).unwrap())],
    )
    .unwrap()
}

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("enc.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Keys the table lists: its rows of `/registry/secrets/…` keys.
fn table_rows(table: &str) -> usize {
    table
        .lines()
        .filter(|l| l.contains("/registry/secrets/"))
        .count()
}

/// The keys of a JSON array, checked to be distinct.
fn keys(list: &Value) -> Vec<String> {
    let keys: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().or(e["key"].as_str()).unwrap().to_owned())
        .collect();
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "each entry once: {keys:?}");
    keys
}

/// An offline rewrite's input: `skipped` unknown-key Secrets, `plain` plaintext ones and 5
/// current ones, written one at a time in reverse key order. Returns the snapshot and the keys
/// that are not current, in the order they were written.
async fn offline_input(
    server: &EtcdServer,
    skipped: usize,
    plain: usize,
) -> (std::path::PathBuf, Vec<String>) {
    let mut client = server.client().await;
    let (other, current) = (other(), two_keys());
    let mut written = Vec::new();
    for i in (0..skipped + plain + 5).rev() {
        let key = format!("/registry/secrets/ns{}/s{i:03}", i % 3);
        let value = if i < skipped {
            other.encrypt(&stored_secret(), key.as_bytes()).unwrap()
        } else if i < skipped + plain {
            stored_secret()
        } else {
            current.encrypt(&stored_secret(), key.as_bytes()).unwrap()
        };
        put_raw(&mut client, key.as_bytes(), &value).await;
        if i < skipped + plain {
            written.push(key);
        }
    }
    (server.snapshot_save("in.db"), written)
}

/// Counts what [`atrest::rewrite_copy`] hands its observer.
#[derive(Default)]
struct Counted(Mutex<Vec<RewriteEntry>>);

impl Observer for Counted {
    fn entry(&self, e: &RewriteEntry) {
        self.0.lock().unwrap().push(e.clone());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_21_an_offline_rewrite_streams_every_entry_and_bounds_its_table() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), TWO_KEYS);
    let (skipped, plain) = (ROWS + 7, 10);
    let (snap, written) = offline_input(&server, skipped, plain).await;

    // -o json: every entry that was not already current, streamed after schema_version, in
    // the order the file stores them (revision order, here the reverse of key order).
    let (code, out, err) = run(atrest()
        .args(["rewrite", "--config"])
        .arg(&config)
        .arg("--snapshot")
        .arg(&snap)
        .arg("--out")
        .arg(dir.path().join("out.json.db"))
        .args(["-o", "json"]));
    assert_eq!(code, 1, "unknown-key entries are left: {err}");
    assert!(
        out.starts_with("{\n  \"schema_version\": 1,\n  \"entries\": [\n"),
        "{out}"
    );
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(keys(&s["entries"]), written);
    let results = |r: &str| {
        s["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["result"] == r)
            .count()
    };
    assert_eq!((results("skipped"), results("rewritten")), (skipped, plain));
    assert_eq!(s["skipped"], skipped);
    assert_eq!(s["rewritten"], plain);
    assert_eq!(s["already_current"], 5);
    assert_eq!(s["after"]["unknown-key"], skipped);

    // The table: the first ROWS skipped entries, then how many more.
    let (code, table, err) = run(atrest()
        .args(["rewrite", "--config"])
        .arg(&config)
        .arg("--snapshot")
        .arg(&snap)
        .arg("--out")
        .arg(dir.path().join("out.table.db"))
        .args(["-o", "table"]));
    assert_eq!(code, 1, "{err}");
    assert_eq!(table_rows(&table), ROWS, "{table}");
    assert!(
        table.contains(&format!(
            "…and {} more (-o json lists every entry)",
            skipped - ROWS
        )),
        "{table}"
    );

    // The library: the summary counts, the observer gets every newest revision.
    let target = Target::resources(
        ResourceChains::new(Config::load(&config).unwrap(), &KmsOptions::default()).unwrap(),
        "/registry/",
        &[],
    )
    .unwrap();
    let store = Store::open(StoreSpec::Snapshot(snap.clone()))
        .await
        .unwrap();
    let seen = Counted::default();
    let summary = atrest::rewrite_copy(
        &store,
        &dir.path().join("out.lib.db"),
        false,
        &target,
        false,
        &seen,
    )
    .await
    .unwrap();
    let seen = seen.0.into_inner().unwrap();
    assert_eq!(seen.len() as u64, summary.scanned, "every newest revision");
    let not_current: Vec<&str> = seen
        .iter()
        .filter(|e| e.result != EntryResult::AlreadyCurrent)
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(not_current, written);
    assert_eq!(
        not_current.len() as u64,
        summary.rewritten + summary.skipped + summary.failed
    );
}

/// A prune blocked by more entries than the sample holds: the refusal counts every one (by key
/// and namespace) and its JSON lists every one; the config is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn issue_21_a_blocked_prune_counts_and_lists_every_entry() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), TWO_KEYS);
    let blocked = 3 * PRUNE_SAMPLE;
    let key1 = key1();
    let mut client = server.client().await;
    let mut expected = Vec::new();
    for i in 0..blocked {
        let key = format!("/registry/secrets/ns{}/s{i:03}", i % 3);
        let value = key1.encrypt(&stored_secret(), key.as_bytes()).unwrap();
        put_raw(&mut client, key.as_bytes(), &value).await;
        expected.push(key);
    }
    expected.sort();

    let (code, out, err) = run(atrest().args(["config", "rotate"]).arg(&config).args([
        "--stage",
        "prune",
        "--no-apiserver-check",
        "--endpoints",
        &server.endpoint,
        "-o",
        "json",
    ]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("refusing to prune: {blocked} entries")),
        "{err}"
    );
    let per_ns = blocked / 3;
    assert!(
        err.contains(&format!(
            "{blocked} under aescbc key \"key1\" (namespaces ns0: {per_ns}, ns1: {per_ns}, ns2: {per_ns})"
        )),
        "{err}"
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&r["schema_version"], &r["refused"]),
        (&1.into(), &true.into()),
        "{r}"
    );
    assert_eq!(
        keys(&r["blocked"]),
        expected,
        "every blocked entry, in key order"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), TWO_KEYS);
}

/// A prune that makes more entries lost for good than the sample holds goes through; its JSON
/// lists every lost entry, and the warning on stderr stops at the bound.
#[tokio::test(flavor = "multi_thread")]
async fn issue_21_a_prune_lists_every_lost_entry_and_bounds_its_warning() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), TWO_KEYS);
    let lost = PRUNE_SAMPLE + 9;
    let key1 = key1();
    let mut client = server.client().await;
    let mut expected = Vec::new();
    for i in 0..lost {
        let key = format!("/registry/secrets/default/damaged{i:03}");
        // key1's prefix, but not a whole number of blocks: no key reads it.
        let mut value = key1.encrypt(&stored_secret(), key.as_bytes()).unwrap();
        value.truncate(value.len() - 5);
        put_raw(&mut client, key.as_bytes(), &value).await;
        expected.push(key);
    }

    let (code, out, err) = run(atrest().args(["config", "rotate"]).arg(&config).args([
        "--stage",
        "prune",
        "--no-apiserver-check",
        "--no-backup",
        "--endpoints",
        &server.endpoint,
        "-o",
        "json",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "warning: {lost} entries no configured key can decrypt"
        )),
        "{err}"
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("/registry/secrets/"))
            .count(),
        PRUNE_SAMPLE,
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "…and {} more (-o json lists every entry)",
            lost - PRUNE_SAMPLE
        )),
        "{err}"
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["removed"], serde_json::json!(["key1"]), "{r}");
    assert_eq!(keys(&r["lost"]), expected);
    assert_eq!(r["lost_count"], lost);
    assert!(!std::fs::read_to_string(&config).unwrap().contains("key1"));
}
