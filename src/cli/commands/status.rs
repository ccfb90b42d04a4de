//! `atrest status`: the config and the store together — what each configured key reads, which
//! keys can go, and whether kube-apiserver could read everything.

use atrest::audit::Verdict;
use atrest::status::{self, Status};

use super::audit::warn_failover;
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
    let apiservers = apiservers.as_ref();
    let target = super::target(
        Some(&config),
        args.prefix.as_deref(),
        &args.resource,
        &args.etcd_prefix,
        &args.kms,
    )?;
    let store = super::open_store(
        &args.store,
        args.snapshot.as_deref(),
        args.kine_db.as_deref(),
    )
    .await?;
    let status = status::status(&store, &target).await;
    if let Some(live) = store.live() {
        warn_failover(live);
    }
    let status = status?;
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
        Verdict::Empty if args.allow_empty => Exit::Clean,
        Verdict::Findings | Verdict::Empty => Exit::Findings,
    })
}

/// The table output: the headline, then one part per function.
fn render(s: &Status, args: &StatusArgs) -> String {
    let mut out = format!(
        "Status of {} in {} at revision {}, with {}\n",
        output::escape(&s.prefix),
        s.source,
        s.revision,
        args.config
            .as_deref()
            .unwrap_or(std::path::Path::new("-"))
            .display()
    );
    out += &keys_table(s);
    out += &unknown_keys_table(s);
    out += &counts_lines(s);
    out += &verdict_lines(s);
    out
}

/// Every configured key, in the order kube-apiserver tries them, and the KMS key IDs.
fn keys_table(s: &Status) -> String {
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
    let mut out = format!(
        "\nProviders and keys for {}, in the order kube-apiserver tries them:\n{t}\n",
        s.resource
    );
    for k in s.keys.iter().filter(|k| !k.kms_key_ids.is_empty()) {
        let list: Vec<String> = k
            .kms_key_ids
            .iter()
            .map(|(id, n)| format!("{}: {n}", output::escape(id)))
            .collect();
        out += &format!(
            "KMS key IDs in entries of {} ({}): {}\n",
            k.path,
            k.key_name.as_deref().unwrap_or("-"),
            list.join(", ")
        );
    }
    out
}

/// Entries encrypted with keys the config does not have.
fn unknown_keys_table(s: &Status) -> String {
    if s.unknown_keys.is_empty() {
        return String::new();
    }
    let mut t = output::table();
    t.set_header(vec!["provider", "key", "entries"]);
    for u in &s.unknown_keys {
        t.add_row(vec![
            u.provider.map_or("?".to_owned(), |p| p.to_string()),
            output::escape(u.key_name.as_deref().unwrap_or("?")).into_owned(),
            u.entries.to_string(),
        ]);
    }
    format!("\nEntries encrypted with keys the config does not have:\n{t}\n")
}

/// Counts by state and by resource, the resources not covered, and the keys that can go.
fn counts_lines(s: &Status) -> String {
    let c = &s.summary;
    let mut out = format!(
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
                output::escape(resource).into_owned(),
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
            .map(|(r, n)| format!("{} {n}", output::escape(r)))
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
            output::escape(&s.prefix),
            removable.join(", ")
        );
    }
    out
}

/// Whether kube-apiserver could read everything, and why not.
fn verdict_lines(s: &Status) -> String {
    let mut out = "\n".to_owned();
    if s.verdict == Verdict::Empty {
        out += &format!(
            "NOTHING READ: no entry under {} of a resource the config covers; a status that reads nothing proves nothing (exit 1; --allow-empty accepts an empty scope). Check --prefix, --etcd-prefix and the resource names in the config.\n",
            output::escape(&s.prefix)
        );
    } else if s.apiserver_reads_all {
        out += "OK: kube-apiserver running this config can read every entry under the prefix.\n";
    } else {
        out += "FINDINGS: kube-apiserver running this config cannot read everything under the prefix:\n";
        for r in &s.reasons {
            out += &format!("  - {}\n", output::escape(r));
        }
    }
    out
}
