//! The Rust half of `benches/etcd.sh`: loads benchmark Secrets into a live etcd, and runs the
//! plain-etcd baseline that `atrest rewrite` is compared with.
//!
//! ```text
//! bench_load load     ENDPOINT CONFIG N [IN_FLIGHT] [SIZE] [NAMESPACES] [BATCH]
//! bench_load others   ENDPOINT N [IN_FLIGHT]
//! bench_load baseline ENDPOINT CONFIG [CONCURRENCY] [PREFIX]
//! ```
//!
//! `others` writes N plaintext objects of about 2 KiB that are not Secrets, spread over the
//! layouts a `*.*` audit meets: ConfigMaps (`/registry/configmaps/`), Deployments
//! (`/registry/deployments/`), Services (`/registry/services/specs/`) and a custom resource
//! (`/registry/example.com/widgets/`), in the same 50 namespaces.
//!
//! `load` writes N Secrets under `/registry/secrets/ns<i % NAMESPACES>/s<i>`, and the
//! NAMESPACES namespaces (default 50) under `/registry/namespaces/ns<k>` (a JSON Namespace),
//! each Secret a `k8s\0` protobuf Secret envelope (as in `seed_cluster.rs`) padded with random
//! data to about SIZE bytes (default 2,000; the smallest Secret is about 150 bytes): one third
//! plaintext, one third under the config's write key (current) and one third under the config's
//! second aescbc key (stale). IN_FLIGHT requests (default 64) are in flight at once, each a
//! transaction of BATCH puts (default 1: plain puts; etcd accepts up to 128 operations in one
//! transaction), so a million small Secrets load in well under a minute.
//!
//! `baseline` does what `atrest rewrite` does to etcd, without the crypto: it pages through the
//! prefix (values included, pages sized as atrest sizes them, pinned to the first page's
//! revision) and, for every entry the rewrite would write (everything not already under the
//! write key), sends one transaction `if mod_revision == seen { put(same-size value, same
//! lease) } else { range }`, CONCURRENCY (default 64) in flight at once, then prints `written N
//! scanned M`.
//!
//! Called without arguments (as CI runs every example) it prints this usage and exits 0.

#[path = "shared/stored_secret.rs"]
mod stored_secret;
use stored_secret::stored_secret;

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use atrest::config::Config;
use atrest::provider::aescbc::AesCbc;
use atrest::provider::{Provider, ProviderKind};
use atrest::store::etcd::{MAX_PAGE_LIMIT, PAGE_LIMIT, PAGE_TARGET_BYTES};
use atrest::store::prefix_end;
use atrest::transform::{parse_prefix, Chain};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, KvClient, PutOptions, Txn, TxnOp,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

type Res<T> = Result<T, Box<dyn Error>>;

const USAGE: &str = "\
usage: bench_load load     ENDPOINT CONFIG N [IN_FLIGHT] [SIZE] [NAMESPACES] [BATCH]
       bench_load others   ENDPOINT N [IN_FLIGHT]
       bench_load baseline ENDPOINT CONFIG [CONCURRENCY] [PREFIX]

load:     writes N Secrets of about SIZE bytes (2000) under /registry/secrets/ns<i%NAMESPACES>/s<i>
          (50 namespaces): 1/3 plaintext, 1/3 under the config's write key, 1/3 under its
          second aescbc key; BATCH puts (1) per transaction.
others:   writes N plaintext objects of about 2 KiB that are not Secrets (ConfigMaps,
          Deployments, Services, a custom resource).
baseline: one compare(mod_revision)-and-put transaction of a same-size value for every entry
          `atrest rewrite` would write, CONCURRENCY in flight (default 64).";

/// Stored size the Secrets are padded to by default, before encryption (aescbc adds about 50
/// bytes).
const PLAIN_SIZE: usize = 2000;

/// How `load` writes its Secrets.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Requests in flight at once.
    in_flight: usize,
    /// Stored size of a plaintext Secret.
    size: usize,
    /// Namespaces the Secrets are spread over.
    namespaces: u64,
    /// Puts per transaction.
    batch: usize,
}
const SECRETS_PREFIX: &str = "/registry/secrets/";
/// Decoding limit for a page (tonic's default is 4 MiB).
const MAX_PAGE_BYTES: usize = 256 * 1024 * 1024;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str);
    if matches!(command, None | Some("-h" | "--help" | "help")) {
        println!("{USAGE}");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let arg = |i: usize, what: &str| -> Res<String> {
        args.get(i)
            .cloned()
            .ok_or_else(|| format!("missing {what}\n{USAGE}").into())
    };
    let number = |i: usize, default: usize| -> Res<usize> {
        match args.get(i) {
            Some(s) => Ok(s.parse()?),
            None => Ok(default),
        }
    };
    match command {
        Some("load") => {
            let (endpoint, config) = (arg(1, "ENDPOINT")?, arg(2, "CONFIG")?);
            let n = arg(3, "N")?.parse()?;
            let shape = Shape {
                in_flight: number(4, 64)?,
                size: number(5, PLAIN_SIZE)?,
                namespaces: number(6, 50)? as u64,
                batch: number(7, 1)?.clamp(1, 128),
            };
            runtime.block_on(load(&endpoint, &config, n, shape))
        }
        Some("others") => {
            let endpoint = arg(1, "ENDPOINT")?;
            let n = arg(2, "N")?.parse()?;
            let in_flight = number(3, 64)?;
            runtime.block_on(others(&endpoint, n, in_flight))
        }
        Some("baseline") => {
            let (endpoint, config) = (arg(1, "ENDPOINT")?, arg(2, "CONFIG")?);
            let concurrency = number(3, 64)?;
            let prefix = args
                .get(4)
                .cloned()
                .unwrap_or_else(|| SECRETS_PREFIX.to_owned());
            runtime.block_on(baseline(&endpoint, &config, concurrency, &prefix))
        }
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}").into()),
        None => Ok(()),
    }
}

/// splitmix64: reproducible filler bytes without a dependency.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// How many namespaces `others` spreads its objects over.
const NAMESPACES: u64 = 50;

/// Secret number `i` in one of `namespaces`, padded with a `payload` data entry to `size`
/// bytes (or as small as it gets).
fn secret(i: u64, size: usize, namespaces: u64) -> (String, Vec<u8>) {
    let (ns, name) = (format!("ns{}", i % namespaces.max(1)), format!("s{i}"));
    let key = format!("{SECRETS_PREFIX}{ns}/{name}");
    let uid = format!("6f1c2a3b-0000-4000-8000-{i:012}");
    let password = format!("s3cr3t-{i}");
    let build = |pad: usize| {
        let payload = filler(i, pad);
        stored_secret(
            &ns,
            &name,
            &uid,
            1_700_000_000 + i,
            &[
                ("username", b"admin"),
                ("password", password.as_bytes()),
                ("payload", &payload),
            ],
        )
    };
    // Two passes: the length prefixes grow with the payload.
    let first = build(0).len();
    let mut value = build(size.saturating_sub(first + 3));
    if value.len() != size && size > first + 3 {
        let pad = (size + size.saturating_sub(first + 3)).saturating_sub(value.len());
        value = build(pad);
    }
    (key, value)
}

/// Writes `n` plaintext objects that are not Secrets (see the module docs).
async fn others(endpoint: &str, n: u64, in_flight: usize) -> Res<()> {
    const LAYOUTS: [&str; 4] = [
        "/registry/configmaps/",
        "/registry/deployments/",
        "/registry/services/specs/",
        "/registry/example.com/widgets/",
    ];
    let kv = connect(endpoint).await?;
    let start = Instant::now();
    let mut puts = FuturesUnordered::new();
    for i in 0..n {
        let prefix = LAYOUTS[(i % 4) as usize];
        let key = format!("{prefix}ns{}/o{i}", i % NAMESPACES);
        let mut value = b"k8s\0".to_vec();
        value.extend(filler(i ^ 0x5eed, PLAIN_SIZE - 4));
        let mut kv = kv.clone();
        puts.push(async move { kv.put(key, value, None).await });
        if puts.len() >= in_flight.max(1) {
            if let Some(done) = puts.next().await {
                done?;
            }
        }
    }
    while let Some(done) = puts.next().await {
        done?;
    }
    eprintln!(
        "loaded {n} other objects in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The config's chain (write key first) and a chain that writes with its second aescbc key.
fn chains(config_path: &str) -> Res<(Chain, Chain, String)> {
    let config = Config::load(config_path.as_ref())?;
    let current = Chain::from_config(&config, "", "secrets")?;
    let keys = &config
        .model()
        .resources
        .iter()
        .flat_map(|r| r.providers.iter())
        .find_map(|p| p.aescbc.as_ref())
        .ok_or("the config has no aescbc provider")?
        .keys;
    let old = keys
        .get(1)
        .ok_or("the config's aescbc provider has only one key: nothing to be stale")?;
    let stale = Chain::from_providers(
        "secrets",
        vec![Provider::Aescbc(AesCbc::new(&old.name, &old.material())?)],
    )
    .ok_or("empty chain")?;
    Ok((current, stale, old.name.clone()))
}

async fn connect(endpoint: &str) -> Res<KvClient> {
    let client = Client::connect([endpoint], None).await?;
    Ok(client.kv_client().max_decoding_message_size(MAX_PAGE_BYTES))
}

async fn load(endpoint: &str, config: &str, n: u64, shape: Shape) -> Res<()> {
    let (current, stale, old_name) = chains(config)?;
    let kv = connect(endpoint).await?;
    let start = Instant::now();
    let mut counts = [0u64; 3];
    let mut bytes = 0u64;
    let mut requests = FuturesUnordered::new();
    let mut batch: Vec<TxnOp> = Vec::with_capacity(shape.batch);
    for i in 0..n {
        let (key, plain) = secret(i, shape.size, shape.namespaces);
        let mix = (i % 3) as usize;
        let value = match mix {
            0 => plain,
            1 => current.encrypt(&plain, key.as_bytes())?,
            _ => stale.encrypt(&plain, key.as_bytes())?,
        };
        counts[mix] += 1;
        bytes += value.len() as u64;
        batch.push(TxnOp::put(key, value, None));
        if batch.len() < shape.batch && i + 1 < n {
            continue;
        }
        let ops = std::mem::replace(&mut batch, Vec::with_capacity(shape.batch));
        let mut kv = kv.clone();
        requests.push(async move { kv.txn(Txn::new().and_then(ops)).await });
        if requests.len() >= shape.in_flight.max(1) {
            if let Some(done) = requests.next().await {
                done?;
            }
        }
    }
    while let Some(done) = requests.next().await {
        done?;
    }
    // The namespaces, as every cluster has them (atrest splits its scans at them).
    for k in 0..n.min(shape.namespaces) {
        let name = format!("ns{k}");
        let value =
            format!(r#"{{"kind":"Namespace","apiVersion":"v1","metadata":{{"name":"{name}"}}}}"#);
        let mut kv = kv.clone();
        kv.put(format!("/registry/namespaces/{name}"), value, None)
            .await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "loaded {n} Secrets ({} plaintext, {} current, {} stale under {old_name:?}), \
         {bytes} value bytes, in {secs:.2} s ({:.0} puts/s)",
        counts[0],
        counts[1],
        counts[2],
        n as f64 / secs
    );
    Ok(())
}

/// The size `atrest rewrite` would write for `value` (aescbc: prefix, 16-byte IV, PKCS#7
/// padded body), or `None` when the value is already under the write key.
fn rewritten_size(value: &[u8], write_prefix: &[u8]) -> Option<usize> {
    if value.starts_with(write_prefix) {
        return None;
    }
    let Some(parsed) = parse_prefix(value) else {
        // Plaintext: IV + body padded to whole 16-byte blocks (always at least one byte).
        return Some(write_prefix.len() + 16 + (value.len() / 16 + 1) * 16);
    };
    // Another aescbc key: the same IV and body under a different prefix.
    let old_prefix = format!(
        "k8s:enc:{}:{}:{}:",
        parsed.provider_name,
        parsed.version,
        parsed.key_name.unwrap_or_default()
    );
    Some(value.len() - old_prefix.len() + write_prefix.len())
}

async fn baseline(endpoint: &str, config: &str, concurrency: usize, prefix: &str) -> Res<()> {
    let (current, _, _) = chains(config)?;
    let write = &current.write_entry().provider;
    if write.kind() != ProviderKind::Aescbc {
        return Err("the baseline sizes values for an aescbc write key".into());
    }
    let write_prefix = format!(
        "k8s:enc:aescbc:v1:{}:",
        write.key_name().unwrap_or_default()
    );
    let filler = Arc::new(filler(7, 1 << 20));
    let kv = connect(endpoint).await?;

    // Pages are read by their own task, one page ahead of the writes (as `atrest rewrite` does).
    let (pages, mut next_page) = tokio::sync::mpsc::channel::<Vec<KeyValue>>(1);
    let reader = tokio::spawn(read_pages(kv.clone(), prefix.to_owned(), pages));

    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let written = Arc::new(AtomicU64::new(0));
    let mut txns = JoinSet::new();
    let (mut scanned, mut issued) = (0u64, 0u64);
    while let Some(page) = next_page.recv().await {
        for entry in page {
            scanned += 1;
            let Some(size) = rewritten_size(entry.value(), write_prefix.as_bytes()) else {
                continue;
            };
            issued += 1;
            let permit = permits.clone().acquire_owned().await?;
            let (mut kv, filler, written) = (kv.clone(), filler.clone(), written.clone());
            txns.spawn(async move {
                let key = entry.key().to_vec();
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        entry.mod_revision(),
                    )])
                    .and_then([TxnOp::put(
                        key.clone(),
                        filler[..size.min(filler.len())].to_vec(),
                        Some(PutOptions::new().with_lease(entry.lease())),
                    )])
                    .or_else([TxnOp::get(key, None)]);
                let resp = kv.txn(txn).await;
                drop(permit);
                if resp?.succeeded() {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), etcd_client::Error>(())
            });
            // Collect finished tasks as we go, so the set stays small.
            while let Some(done) = txns.try_join_next() {
                done??;
            }
        }
    }
    while let Some(done) = txns.join_next().await {
        done??;
    }
    let revision = reader.await??;
    let written = written.load(Ordering::Relaxed);
    println!(
        "written {written} scanned {scanned} conflicts {} revision {revision}",
        issued - written
    );
    Ok(())
}

/// Sends every page under `prefix` (values included, pinned to the first page's revision, sized
/// like atrest's: 1,000 keys, then about `PAGE_TARGET_BYTES`) to `pages`; returns the revision.
async fn read_pages(
    mut kv: KvClient,
    prefix: String,
    pages: tokio::sync::mpsc::Sender<Vec<KeyValue>>,
) -> Result<i64, etcd_client::Error> {
    let end = prefix_end(prefix.as_bytes());
    let mut after: Option<Vec<u8>> = None;
    let mut revision = 0i64;
    let mut limit = PAGE_LIMIT;
    loop {
        let start = match &after {
            Some(last) => [last.as_slice(), b"\0"].concat(),
            None => prefix.as_bytes().to_vec(),
        };
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut resp = kv.get(start, Some(options)).await?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        after = kvs.last().map(|kv| kv.key().to_vec());
        // The same page sizing as atrest's store: about PAGE_TARGET_BYTES a page.
        let bytes: usize = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
        if let Some(per_key) = bytes.checked_div(kvs.len()) {
            let fit = i64::try_from(PAGE_TARGET_BYTES / per_key.max(1)).unwrap_or(MAX_PAGE_LIMIT);
            limit = fit.clamp(PAGE_LIMIT, MAX_PAGE_LIMIT);
        }
        if pages.send(kvs).await.is_err() || !more || after.is_none() {
            return Ok(revision);
        }
    }
}
