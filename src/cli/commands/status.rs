//! `atrest status`: the config and the store together — what each configured key reads, which
//! keys can go, and whether kube-apiserver could read everything.

use atrest::audit::Verdict;
use atrest::status::{self, Status};
use atrest::store::snapshot::Snapshot;
use atrest::store::{ReadStore, StoreError};

use super::audit::{connect, warn_failover};
use super::load_chain;
use crate::cli::args::{OutputFormat, StatusArgs};
use crate::cli::output::{self, yes_no};
use crate::cli::{prometheus, CliError, Exit};

/// Runs `atrest status`.
pub(crate) async fn run(args: StatusArgs, format: Option<OutputFormat>) -> Result<Exit, CliError> {
    let mut args = args;
    let (config, kine_db) =
        super::k3s_paths(&args.store, args.config.as_deref(), args.kine_db.as_deref());
    args.kine_db = kine_db;
    args.config = config;
    let config = args
        .config
        .clone()
        .ok_or_else(|| CliError::usage("--config FILE is required"))?;
    let apiservers = super::apiservers::optional_check(
        args.with_apiservers,
        Some(&config),
        &args.api,
        args.store.kubeadm,
    )
    .await?;
    // With --prefix, one prefix with its resource's chain; else every resource the config
    // covers, each with its own chain.
    let what = match &args.prefix {
        Some(prefix) => What::Prefix(load_chain(&config, prefix, &args.kms)?, prefix.as_bytes()),
        None => {
            let chains = super::load_chains(&config, &args.kms)?;
            let scope = super::resource_scope(&config, &chains, &args.resource, &args.etcd_prefix)?;
            What::Resources(Box::new(chains), scope)
        }
    };
    let status = match (&args.snapshot, &args.kine_db) {
        (None, Some(path)) => what.status(&super::open_kine(path)?).await?,
        (Some(path), _) => {
            let snap = Snapshot::open(path).map_err(atrest::store::StoreError::from)?;
            what.status(&snap).await?
        }
        (None, None) => {
            let store = connect(&args.store).await?;
            let status = what.status(&store).await;
            warn_failover(&store);
            status?
        }
    };
    let apiservers = apiservers.as_ref();
    match output::format(format) {
        OutputFormat::Json => output::print_json(&super::apiservers::WithApiservers {
            report: &status,
            apiservers,
        })?,
        OutputFormat::Table => {
            let mut text = render(&status, &args);
            if let Some(a) = apiservers {
                text += &format!("\nkube-apiservers\n{}", super::apiservers::render(a));
            }
            output::print(&text)?
        }
        OutputFormat::Prometheus => {
            let mut text = prometheus::status(&status);
            if let Some(a) = apiservers {
                text += &super::apiservers::prometheus(a);
            }
            output::print(&text)?
        }
    }
    if output::format(format) == OutputFormat::Prometheus {
        // The findings are in the metrics; the textfile recipe's `&& mv` must run.
        return Ok(Exit::Clean);
    }
    if apiservers.is_some_and(|a| !a.ok) {
        return Ok(Exit::Findings);
    }
    Ok(match status.verdict {
        Verdict::Clean => Exit::Clean,
        Verdict::Findings => Exit::Findings,
    })
}

/// What a status reads.
enum What<'a> {
    Prefix(atrest::transform::Chain, &'a [u8]),
    Resources(
        Box<atrest::resource::ResourceChains>,
        atrest::resource::Scope,
    ),
}

impl What<'_> {
    async fn status<S: ReadStore + Sync>(&self, store: &S) -> Result<Status, StoreError> {
        match self {
            What::Prefix(chain, prefix) => status::status(store, chain, prefix).await,
            What::Resources(chains, scope) => status::status_resources(store, chains, scope).await,
        }
    }
}

fn render(s: &Status, args: &StatusArgs) -> String {
    let mut out = format!(
        "Status of {} in {} at revision {}, with {}\n",
        s.prefix,
        s.source,
        s.revision,
        args.config
            .as_deref()
            .unwrap_or(std::path::Path::new("-"))
            .display()
    );
    let mut t = output::table();
    t.set_header(vec![
        "config path",
        "provider",
        "key",
        "write",
        "entries",
        "undecryptable",
        "safe to remove",
    ]);
    for k in &s.keys {
        t.add_row(vec![
            k.path.clone(),
            k.provider.to_string(),
            k.key_name.clone().unwrap_or_else(|| "-".to_owned()),
            if k.write { "write" } else { "" }.to_owned(),
            k.entries.to_string(),
            k.undecryptable.to_string(),
            yes_no(k.safe_to_remove).to_owned(),
        ]);
    }
    out += &format!(
        "\nProviders and keys for {}, in the order kube-apiserver tries them:\n{t}\n",
        s.resource
    );
    for k in s.keys.iter().filter(|k| !k.kms_key_ids.is_empty()) {
        let list: Vec<String> = k
            .kms_key_ids
            .iter()
            .map(|(id, n)| format!("{id}: {n}"))
            .collect();
        out += &format!(
            "KMS key IDs in entries of {} ({}): {}\n",
            k.path,
            k.key_name.as_deref().unwrap_or("-"),
            list.join(", ")
        );
    }
    if !s.unknown_keys.is_empty() {
        let mut t = output::table();
        t.set_header(vec!["provider", "key", "entries"]);
        for u in &s.unknown_keys {
            t.add_row(vec![
                u.provider.map_or("?".to_owned(), |p| p.to_string()),
                u.key_name.clone().unwrap_or_else(|| "?".to_owned()),
                u.entries.to_string(),
            ]);
        }
        out += &format!("\nEntries encrypted with keys the config does not have:\n{t}\n");
    }
    let c = &s.summary;
    out += &format!(
        "\nEntries: {} total, {} plaintext{}, {} current, {} stale, {} unknown-key, {} undecryptable, {} kms\n",
        c.total,
        c.plaintext,
        if s.unreadable_plaintext > 0 {
            format!(" ({} unreadable)", s.unreadable_plaintext)
        } else {
            String::new()
        },
        c.current,
        c.stale,
        c.unknown_key,
        c.undecryptable,
        c.kms
    );
    if !s.resources.is_empty() {
        let mut t = output::table();
        t.set_header(vec![
            "resource",
            "entries",
            "current",
            "stale",
            "plaintext",
            "unknown-key",
            "undecryptable",
            "kms",
        ]);
        for (resource, c) in &s.resources {
            t.add_row(vec![
                resource.clone(),
                c.total.to_string(),
                c.current.to_string(),
                c.stale.to_string(),
                c.plaintext.to_string(),
                c.unknown_key.to_string(),
                c.undecryptable.to_string(),
                c.kms.to_string(),
            ]);
        }
        out += &format!("\nBy resource:\n{t}\n");
    }
    if !s.not_covered.is_empty() {
        let list: Vec<String> = s
            .not_covered
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        out += &format!(
            "Not covered by the config (stored unencrypted; not findings): {}\n",
            list.join(", ")
        );
    }
    let removable: Vec<&str> = s
        .keys
        .iter()
        .filter(|k| k.safe_to_remove)
        .map(|k| k.path.as_str())
        .collect();
    if !removable.is_empty() {
        out += &format!(
            "Safe to remove (no entry under {} needs them): {}\n",
            s.prefix,
            removable.join(", ")
        );
    }
    out += "\n";
    if s.apiserver_reads_all {
        out += "OK: kube-apiserver running this config can read every entry under the prefix.\n";
    } else {
        out += "FINDINGS: kube-apiserver running this config cannot read everything under the prefix:\n";
        for r in &s.reasons {
            out += &format!("  - {r}\n");
        }
    }
    out
}
