//! `atrest audit`: entry by entry, what is plaintext, stale or unreadable.

use std::path::PathBuf;

use atrest::apiserver::check::ApiserversReport;
use atrest::audit::{self, Observer, Report, ReportEntry, Verdict};
use atrest::resource::GroupResource;
use atrest::store::etcd::{EtcdOptions, EtcdStore, DEFAULT_ENDPOINT};
use atrest::store::snapshot::Snapshot;
use atrest::transform::State;
use indicatif::ProgressBar;

use super::apiservers::WithApiservers;
use super::load_chain;
use crate::cli::args::{AuditArgs, OutputFormat, StoreArgs};
use crate::cli::output::{self, yes_no};
use crate::cli::{prometheus, CliError, Exit};

/// Feeds audit progress into a progress bar.
pub(crate) struct Progress(pub(crate) ProgressBar);

impl Observer for Progress {
    fn total(&self, n: u64) {
        self.0.set_length(n);
    }
    fn entry(&self, _e: &ReportEntry) {
        self.0.inc(1);
    }
}

/// [`Progress`], also keeping the keys of entries the config does not cover (`--verbose`).
struct Verbose {
    bar: Progress,
    list: bool,
    not_covered: std::sync::Mutex<Vec<String>>,
}

impl Observer for Verbose {
    fn total(&self, n: u64) {
        self.bar.total(n);
    }
    fn entry(&self, e: &ReportEntry) {
        self.bar.entry(e);
    }
    fn not_covered(&self, key: &[u8], _resource: &GroupResource) {
        self.bar.0.inc(1);
        if self.list {
            self.not_covered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(String::from_utf8_lossy(key).into_owned());
        }
    }
}

/// kubeadm's etcd client endpoint on a control-plane node (`--kubeadm`).
pub(crate) const KUBEADM_ENDPOINT: &str = "https://127.0.0.1:2379";
/// kubeadm's etcd CA certificate.
pub(crate) const KUBEADM_CACERT: &str = "/etc/kubernetes/pki/etcd/ca.crt";
/// The client certificate kubeadm gives kube-apiserver for etcd.
pub(crate) const KUBEADM_CERT: &str = "/etc/kubernetes/pki/apiserver-etcd-client.crt";
/// Its private key.
pub(crate) const KUBEADM_KEY: &str = "/etc/kubernetes/pki/apiserver-etcd-client.key";

/// The etcd options the flags ask for: explicit flags (or ETCDCTL_* variables) first, then the
/// kubeadm defaults with `--kubeadm`, then etcdctl's defaults.
pub(crate) fn etcd_options(args: &StoreArgs) -> EtcdOptions {
    let kubeadm = |path: &str| args.kubeadm.then(|| PathBuf::from(path));
    let endpoints = if !args.endpoints.is_empty() {
        args.endpoints.clone()
    } else if args.kubeadm {
        vec![KUBEADM_ENDPOINT.to_owned()]
    } else {
        vec![DEFAULT_ENDPOINT.to_owned()]
    };
    EtcdOptions {
        endpoints,
        cacert: args.cacert.clone().or_else(|| kubeadm(KUBEADM_CACERT)),
        cert: args.cert.clone().or_else(|| kubeadm(KUBEADM_CERT)),
        key: args.key.clone().or_else(|| kubeadm(KUBEADM_KEY)),
        connect_timeout: args.dial_timeout,
        request_timeout: args.command_timeout,
        ..EtcdOptions::default()
    }
}

/// Connects to etcd with the etcdctl-style flags; failures are exit 3 with advice.
pub(crate) async fn connect(args: &StoreArgs) -> Result<EtcdStore, CliError> {
    let opts = etcd_options(args);
    let used = if args.kubeadm {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("-".to_owned(), |p| p.display().to_string())
        };
        Some(format!(
            "--kubeadm: {} with --cacert {} --cert {} --key {}",
            opts.endpoints.join(","),
            show(&opts.cacert),
            show(&opts.cert),
            show(&opts.key)
        ))
    } else {
        None
    };
    let store = EtcdStore::connect(opts).await.map_err(|e| {
        let mut err = CliError::from(atrest::store::StoreError::from(e));
        if let Some(used) = used {
            err = err.detail(used);
        }
        err
    })?;
    for e in store.unhealthy() {
        eprintln!("warning: {e}; using {} instead", store.answering());
    }
    Ok(store)
}

/// Warns about members that stopped answering during the run (the connect-time ones were
/// warned about by [`connect`]); the reports list all of them as `unanswered`.
pub(crate) fn warn_failover(store: &EtcdStore) {
    let at_connect: Vec<_> = store
        .unhealthy()
        .iter()
        .filter_map(|e| e.endpoint())
        .collect();
    for u in store.unanswered() {
        if !at_connect.contains(&u.endpoint.as_str()) {
            eprintln!(
                "warning: during the run, {}; the run went on with {}",
                u.error,
                store.answering()
            );
        }
    }
}

/// Runs `atrest audit`.
pub(crate) async fn run(
    mut args: AuditArgs,
    format: Option<OutputFormat>,
) -> Result<Exit, CliError> {
    (args.config, args.kine_db) =
        super::k3s_paths(&args.store, args.config.as_deref(), args.kine_db.as_deref());
    let apiservers = super::apiservers::optional_check(
        args.with_apiservers,
        args.config.as_deref(),
        &args.api,
        args.store.kubeadm,
    )
    .await?;
    let apiservers = apiservers.as_ref();
    // With a config and no --prefix: every resource the config covers, each with its chain.
    if let (Some(path), None) = (&args.config, &args.prefix) {
        let chains = super::load_chains(path, &args.kms)?;
        let scope = super::resource_scope(path, &chains, &args.resource, &args.etcd_prefix)?;
        let bar = Verbose {
            bar: Progress(output::progress("auditing")),
            list: args.verbose,
            not_covered: std::sync::Mutex::new(Vec::new()),
        };
        let mut report = match (&args.snapshot, &args.kine_db) {
            (None, Some(path)) => {
                let db = super::open_kine(path)?;
                audit::audit_kine_resources(&db, &chains, &scope, &bar).await?
            }
            (Some(path), _) => {
                let snap = open_snapshot(path)?;
                audit::audit_snapshot_resources(&snap, &chains, &scope, &bar).await?
            }
            (None, None) => {
                let store = connect(&args.store).await?;
                let report = audit::audit_resources(&store, &chains, &scope, &bar).await;
                warn_failover(&store);
                report?
            }
        };
        bar.bar.0.finish_and_clear();
        report.not_covered_keys = bar
            .not_covered
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        return finish(&report, true, &args, format, apiservers);
    }
    let prefix_text = args
        .prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    let chain = match &args.config {
        Some(path) => Some(load_chain(path, &prefix_text, &args.kms)?),
        None => None,
    };
    let bar = Progress(output::progress("auditing"));
    let prefix = prefix_text.as_bytes();
    let report = match (&args.snapshot, &args.kine_db) {
        (None, Some(path)) => {
            let db = super::open_kine(path)?;
            audit::audit_kine(&db, chain.as_ref(), prefix, &bar).await?
        }
        (Some(path), _) => {
            let snap = open_snapshot(path)?;
            audit::audit_snapshot(&snap, chain.as_ref(), prefix, &bar).await?
        }
        (None, None) => {
            let store = connect(&args.store).await?;
            let report = audit::audit(&store, chain.as_ref(), prefix, &bar).await;
            warn_failover(&store);
            report?
        }
    };
    bar.0.finish_and_clear();
    finish(&report, chain.is_some(), &args, format, apiservers)
}

/// The prefix audited without --prefix and without a config.
const DEFAULT_PREFIX: &str = "/registry/secrets/";

fn open_snapshot(path: &std::path::Path) -> Result<Snapshot, CliError> {
    Ok(Snapshot::open(path).map_err(atrest::store::StoreError::from)?)
}

/// Renders the report and turns its verdict into the exit status.
fn finish(
    report: &Report,
    with_config: bool,
    args: &AuditArgs,
    format: Option<OutputFormat>,
    apiservers: Option<&ApiserversReport>,
) -> Result<Exit, CliError> {
    match output::format(format) {
        OutputFormat::Json => output::print_json(&WithApiservers { report, apiservers })?,
        OutputFormat::Table => {
            let mut text = render(report, with_config, args);
            if let Some(a) = apiservers {
                text += &format!("\nkube-apiservers\n{}", super::apiservers::render(a));
            }
            output::print(&text)?
        }
        OutputFormat::Prometheus => {
            let mut text = prometheus::audit(report, args.strict);
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
    Ok(match report.verdict(args.strict) {
        Verdict::Clean => Exit::Clean,
        Verdict::Findings => Exit::Findings,
    })
}

/// Whether any listed entry carries a KMS key ID (the table then has a column for it).
fn entries_have_key_ids<K>(groups: &std::collections::BTreeMap<K, Vec<&ReportEntry>>) -> bool {
    groups.values().flatten().any(|e| e.key_id.is_some())
}

fn render(r: &Report, with_config: bool, args: &AuditArgs) -> String {
    let chain = with_config.then_some(());
    let mut out = format!(
        "Audit of {} in {} at revision {}\n",
        r.prefix, r.source, r.revision
    );
    match &r.write_provider {
        Some(w) => {
            out += &format!(
                "Write provider: {}{}\n",
                w.provider,
                w.key_name
                    .as_deref()
                    .map(|k| format!(", key {k:?}"))
                    .unwrap_or_default()
            );
        }
        None => out += "No config given: entries are only told apart as plaintext or encrypted (pass --config to verify keys).\n",
    }
    let mut summary = output::table();
    summary.set_header(vec!["state", "entries"]);
    for s in State::ALL {
        let n = r.summary.get(s);
        let always = match s {
            State::Plaintext => true,
            State::Current => chain.is_some(),
            State::Encrypted => chain.is_none(),
            _ => false,
        };
        if always || n > 0 {
            summary.add_row(vec![s.to_string(), n.to_string()]);
        }
    }
    summary.add_row(vec!["total".to_owned(), r.summary.total.to_string()]);
    out += &format!("\n{summary}\n");
    let by_key = r.by_key();
    if !by_key.is_empty() {
        let mut t = output::table();
        t.set_header(vec!["provider", "key", "entries"]);
        for ((provider, key), n) in &by_key {
            t.add_row(vec![
                provider.to_string(),
                key.unwrap_or("-").to_owned(),
                n.to_string(),
            ]);
        }
        out += &format!("\nEncrypted entries by key:\n{t}\n");
    }
    let by_kms_key_id = r.by_kms_key_id();
    if !by_kms_key_id.is_empty() {
        let mut t = output::table();
        t.set_header(vec!["kms provider", "KMS key ID", "entries"]);
        for ((name, id), n) in &by_kms_key_id {
            t.add_row(vec![(*name).to_owned(), (*id).to_owned(), n.to_string()]);
        }
        out += &format!("\nKMS v2 entries by KMS key ID:\n{t}\n");
    }

    let several = r.resources.len() > 1 || !r.not_covered.is_empty();
    if several {
        let mut t = output::table();
        t.set_header(vec![
            "resource",
            "write provider",
            "entries",
            "current",
            "stale",
            "plaintext",
            "unreadable",
        ]);
        for (resource, per) in &r.resources {
            let c = &per.counts;
            t.add_row(vec![
                resource.clone(),
                per.write_provider
                    .as_ref()
                    .map_or("-".to_owned(), |w| match &w.key_name {
                        Some(k) => format!("{} {k}", w.provider),
                        None => w.provider.to_string(),
                    }),
                c.total.to_string(),
                c.current.to_string(),
                c.stale.to_string(),
                c.plaintext.to_string(),
                (c.unknown_key + c.undecryptable).to_string(),
            ]);
        }
        out += &format!("\nBy resource:\n{t}\n");
        if !r.not_covered.is_empty() {
            let list: Vec<String> = r
                .not_covered
                .iter()
                .map(|(res, n)| format!("{res} {n}"))
                .collect();
            out += &format!(
                "Not covered by the config ({} entries, stored as kube-apiserver got them; not findings): {}\n",
                r.not_covered_total(),
                list.join(", ")
            );
            if r.not_covered_keys.is_empty() {
                out += "(--verbose lists them.)\n";
            }
            for key in &r.not_covered_keys {
                out += &format!("  {key}\n");
            }
        }
    }

    let groups = r.findings_by_resource();
    let shown: usize = groups.values().map(Vec::len).sum();
    if shown > 0 {
        let mut t = output::table();
        let mut header = vec!["namespace", "name", "state", "provider", "key"];
        if several {
            header.insert(0, "resource");
        }
        let key_ids = entries_have_key_ids(&groups);
        if key_ids {
            header.push("KMS key ID");
        }
        if chain.is_some() {
            header.push("readable");
        }
        header.push("note");
        t.set_header(header);
        for ((resource, ns), entries) in &groups {
            for e in entries {
                let mut row = vec![
                    if ns.is_empty() {
                        "-".to_owned()
                    } else {
                        (*ns).to_owned()
                    },
                    e.name.clone().unwrap_or_else(|| e.key.clone()),
                    e.state.to_string(),
                    e.provider.map_or("-".to_owned(), |p| p.to_string()),
                    e.key_name.clone().unwrap_or_else(|| "-".to_owned()),
                ];
                if several {
                    row.insert(0, (*resource).to_owned());
                }
                if key_ids {
                    row.push(e.key_id.clone().unwrap_or_else(|| "-".to_owned()));
                }
                if chain.is_some() {
                    row.push(e.readable.map_or("-", yes_no).to_owned());
                }
                row.push(e.error.clone().unwrap_or_default());
                t.add_row(row);
            }
        }
        let label = if chain.is_some() {
            "Entries that are not current"
        } else {
            "Entries that are not encrypted"
        };
        let by = if several {
            "by resource and namespace"
        } else {
            "by namespace"
        };
        out += &format!("\n{label} ({shown}), {by}:\n{t}\n");
    }

    if let Some(h) = &r.history {
        let exposed = h.plaintext + h.stale + h.unknown_key + h.undecryptable;
        out += &format!(
            "\nHistory: {} older {} under the prefix are still stored ({} plaintext{}).\n",
            h.total,
            if args.kine_db.is_some() {
                "copies (rows and old_value)"
            } else {
                "revisions"
            },
            h.plaintext,
            if chain.is_some() {
                format!(", {} under other keys", h.stale)
            } else {
                String::new()
            }
        );
        if exposed > 0 && args.kine_db.is_some() {
            out += "  kine keeps older rows until it compacts (k3s: every 5 minutes), and each row's old_value\n  copy of the value before it until the key is written again: compaction does not clear it.\n";
        } else if exposed > 0 {
            out += &format!(
                "  They stay until compaction: `etcdctl compact {}` (kube-apiserver compacts every 5 minutes by default).\n",
                r.revision
            );
        }
    }
    if let Some(res) = &r.residue {
        out += &format!(
            "Residue: {} plaintext stored objects remain in free database pages.\n",
            res.plaintext
        );
        if res.plaintext > 0 {
            out += "  They stay until the file is rewritten: `etcdctl defrag` on every member (after compaction), then take a new snapshot.\n";
        }
    }

    let findings = r.findings();
    out += "\n";
    if r.plaintext_by_config > 0 {
        out +=
            &format!(
            "{} plaintext because the config's write provider for {} is identity (not findings).\n",
            output::count(r.plaintext_by_config, "entry is", "entries are"),
            if r.plaintext_by_config == 1 { "its resource" } else { "their resources" }
        );
    }
    out += &match (r.verdict(args.strict), chain) {
        (Verdict::Clean, Some(_)) if r.summary.stale > 0 => format!(
            "OK: nothing unreadable or plaintext; {} can be moved to the write key with `atrest rewrite`.\n",
            output::count(r.summary.stale, "stale entry", "stale entries")
        ),
        (Verdict::Clean, _) if r.plaintext_by_config > 0 => {
            "OK: every entry is stored as configured.\n".to_owned()
        }
        (Verdict::Clean, _) => "OK: every entry is encrypted as configured.\n".to_owned(),
        (Verdict::Findings, Some(_)) => format!(
            "FINDINGS: {} plaintext or unreadable{}. Plaintext and stale entries can be re-encrypted with `atrest rewrite --config FILE`; unreadable ones need the key that wrote them.\n",
            output::count(findings, "entry is", "entries are"),
            if args.strict && r.summary.stale > 0 { format!(", {} stale", r.summary.stale) } else { String::new() }
        ),
        (Verdict::Findings, None) => format!(
            "FINDINGS: {} stored in plaintext. Configure encryption (`atrest config new`), restart kube-apiserver with it, then run `atrest rewrite`.\n",
            output::count(r.summary.plaintext, "entry is", "entries are")
        ),
    };
    out
}
