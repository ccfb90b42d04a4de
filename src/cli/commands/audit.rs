//! `atrest audit`: entry by entry, what is plaintext, stale or unreadable.

use std::path::PathBuf;

use std::sync::{Arc, Mutex, PoisonError};

use atrest::audit::{self, Observer, Report, ReportEntry, Verdict};
use atrest::resource::GroupResource;
use atrest::store::etcd::{EtcdOptions, EtcdStore, DEFAULT_ENDPOINT};
use atrest::transform::State;
use indicatif::ProgressBar;

use super::apiservers::WithApiservers;
use crate::cli::args::{AuditArgs, OutputFormat, StoreArgs};
use crate::cli::output::{self, yes_no};
use crate::cli::stream::{Bounded, JsonEntries};
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

/// The rows a table lists per resource; `-o json` lists every entry.
const TABLE_ROWS_PER_RESOURCE: usize = 50;

/// Where the entries go as they are classified: streamed as JSON, or kept for the table up to
/// [`TABLE_ROWS_PER_RESOURCE`] per resource; plus progress and (`--verbose`) the keys of
/// resources the config does not cover.
struct Sink {
    bar: Progress,
    json: Option<JsonEntries>,
    table: Option<Mutex<Bounded<Arc<str>, ReportEntry>>>,
    list_not_covered: bool,
    not_covered: Mutex<Vec<String>>,
}

impl Observer for Sink {
    fn total(&self, n: u64) {
        self.bar.total(n);
    }
    fn entry(&self, e: &ReportEntry) {
        self.bar.entry(e);
        if let Some(json) = &self.json {
            json.entry(e);
        }
        if let (Some(table), true) = (&self.table, e.is_listed()) {
            let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
            table.push(&e.resource, e.clone());
        }
    }
    fn not_covered(&self, key: &[u8], _resource: &GroupResource) {
        self.bar.0.inc(1);
        if self.list_not_covered {
            self.not_covered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
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
    for endpoint in opts.plaintext_remote_endpoints() {
        eprintln!(
            "warning: {} is plain http:// to another host: every Secret read or written crosses \
             the network unencrypted; use https:// with --cacert/--cert/--key",
            output::escape_controls(&endpoint)
        );
    }
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
        let warning = format!("warning: {e}; using {} instead", store.answering());
        eprintln!("{}", output::escape_controls(&warning));
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
            let warning = format!(
                "warning: during the run, {}; the run went on with {}",
                u.error,
                store.answering()
            );
            eprintln!("{}", output::escape_controls(&warning));
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
    // With --apiservers: which config each running kube-apiserver has loaded.
    let apiservers = super::apiservers::optional_check(
        args.with_apiservers,
        args.config.as_deref(),
        &args.api,
        args.store.kubeadm,
    )
    .await?;
    let target = super::target(
        args.config.as_deref(),
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
    let format = output::format(format);
    let sink = Sink {
        bar: Progress(output::progress("auditing")),
        json: match format {
            OutputFormat::Json => Some(JsonEntries::new(&Report::head(&target))?),
            _ => None,
        },
        table: (format == OutputFormat::Table)
            .then(|| Mutex::new(Bounded::new(TABLE_ROWS_PER_RESOURCE))),
        list_not_covered: args.verbose,
        not_covered: Mutex::new(Vec::new()),
    };
    let report = audit::audit(&store, &target, &sink).await;
    if let Some(live) = store.live() {
        warn_failover(live);
    }
    let mut report = report?;
    sink.bar.0.finish_and_clear();
    report.not_covered_keys = sink
        .not_covered
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let apiservers = apiservers.as_ref();
    match (format, sink.json, sink.table) {
        (_, Some(json), _) => json.finish(&WithApiservers {
            report: &report,
            apiservers,
        })?,
        (_, None, Some(table)) => {
            let table = table.into_inner().unwrap_or_else(PoisonError::into_inner);
            let mut text = render(&report, &table, args.config.is_some(), &args);
            if let Some(a) = apiservers {
                text += &format!("\nkube-apiservers\n{}", super::apiservers::render(a));
            }
            output::print(&text)?;
        }
        _ => {
            let mut text = prometheus::audit(&report, args.strict);
            if let Some(a) = apiservers {
                text += &super::apiservers::prometheus(a);
            }
            output::print(&text)?;
        }
    }
    if format == OutputFormat::Prometheus {
        // The findings are in the metrics; the textfile recipe's `&& mv` must run.
        return Ok(Exit::Clean);
    }
    if apiservers.is_some_and(|a| !a.ok) {
        return Ok(Exit::Findings);
    }
    Ok(match report.verdict(args.strict) {
        Verdict::Clean => Exit::Clean,
        Verdict::Empty if args.allow_empty => Exit::Clean,
        Verdict::Findings | Verdict::Empty => Exit::Findings,
    })
}

/// The table output: the headline, then one table per part.
fn render(
    r: &Report,
    listed: &Bounded<Arc<str>, ReportEntry>,
    with_config: bool,
    args: &AuditArgs,
) -> String {
    let mut out = headline(r);
    out += &summary_table(r, with_config);
    out += &by_key_tables(r);
    let several = r.resources.len() > 1 || !r.not_covered.is_empty();
    if several {
        out += &by_resource_table(r);
    }
    out += &findings_table(listed, several, with_config);
    out += &history_lines(r, args);
    out += "\n";
    out += &verdict_lines(r, with_config, args.strict);
    out
}

/// What was audited, where, and with which write provider.
fn headline(r: &Report) -> String {
    let mut out = format!(
        "Audit of {} in {} at revision {}\n",
        output::escape(&r.prefix),
        r.source,
        r.revision
    );
    let writers: std::collections::BTreeSet<_> = r
        .resources
        .values()
        .filter_map(|per| per.write_provider.as_ref())
        .map(|w| (w.provider, w.key_name.as_deref()))
        .collect();
    match &r.write_provider {
        // Resources written with different providers: the table by resource names each.
        Some(_) if writers.len() > 1 => {
            out += "Write providers: one per resource (see \"By resource\" below).\n";
        }
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
    out
}

/// Entries by state.
fn summary_table(r: &Report, with_config: bool) -> String {
    let mut summary = output::table();
    summary.set_header(vec!["state", "entries"]);
    for s in State::ALL {
        let n = r.summary.get(s);
        let always = match s {
            State::Plaintext => true,
            State::Current => with_config,
            State::Encrypted => !with_config,
            _ => false,
        };
        if always || n > 0 {
            summary.add_row(vec![s.to_string(), n.to_string()]);
        }
    }
    summary.add_row(vec!["total".to_owned(), r.summary.total.to_string()]);
    format!("\n{summary}\n")
}

/// Encrypted entries by provider and key, and KMS v2 entries by KMS key ID.
fn by_key_tables(r: &Report) -> String {
    let mut out = String::new();
    if !r.by_key.is_empty() {
        let mut t = output::table();
        t.set_header(vec!["provider", "key", "entries"]);
        for ((provider, key), n) in &r.by_key {
            t.add_row(vec![
                provider.to_string(),
                output::escape(key.as_deref().unwrap_or("-")).into_owned(),
                n.to_string(),
            ]);
        }
        out += &format!("\nEncrypted entries by key:\n{t}\n");
    }
    if !r.by_kms_key_id.is_empty() {
        let mut t = output::table();
        t.set_header(vec!["kms provider", "KMS key ID", "entries"]);
        for ((name, id), n) in &r.by_kms_key_id {
            t.add_row(vec![
                output::escape(name).into_owned(),
                output::escape(id).into_owned(),
                n.to_string(),
            ]);
        }
        out += &format!("\nKMS v2 entries by KMS key ID:\n{t}\n");
    }
    out
}

/// Counts by resource, and the resources the config does not cover.
fn by_resource_table(r: &Report) -> String {
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
            output::escape(resource).into_owned(),
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
    let mut out = format!("\nBy resource:\n{t}\n");
    if !r.not_covered.is_empty() {
        let list: Vec<String> = r
            .not_covered
            .iter()
            .map(|(res, n)| format!("{} {n}", output::escape(res)))
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
            out += &format!("  {}\n", output::escape(key));
        }
    }
    out
}

/// The entries that are not current, by resource and namespace, at most
/// [`TABLE_ROWS_PER_RESOURCE`] per resource.
fn findings_table(
    listed: &Bounded<Arc<str>, ReportEntry>,
    several: bool,
    with_config: bool,
) -> String {
    let shown = listed.total();
    if shown == 0 {
        return String::new();
    }
    let key_ids = listed.rows().values().flatten().any(|e| e.key_id.is_some());
    let mut t = output::table();
    let mut header = vec!["namespace", "name", "state", "provider", "key"];
    if several {
        header.insert(0, "resource");
    }
    if key_ids {
        header.push("KMS key ID");
    }
    if with_config {
        header.push("readable");
    }
    header.push("note");
    t.set_header(header);
    for (resource, entries) in listed.rows() {
        let mut entries: Vec<&ReportEntry> = entries.iter().collect();
        entries.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        for e in entries {
            let mut row = vec![
                output::escape(e.namespace.as_deref().unwrap_or("-")).into_owned(),
                output::escape(e.name.as_deref().unwrap_or(&e.key)).into_owned(),
                e.state.to_string(),
                e.provider.map_or("-".to_owned(), |p| p.to_string()),
                output::escape(e.key_name.as_deref().unwrap_or("-")).into_owned(),
            ];
            if several {
                row.insert(0, output::escape(resource).into_owned());
            }
            if key_ids {
                row.push(output::escape(e.key_id.as_deref().unwrap_or("-")).into_owned());
            }
            if with_config {
                row.push(e.readable.map_or("-", yes_no).to_owned());
            }
            row.push(output::escape(e.error.as_deref().unwrap_or_default()).into_owned());
            t.add_row(row);
        }
        if let Some(n) = listed.more().get(resource) {
            let mut row = vec![String::new(); t.column_count()];
            row[0] = format!("…and {n} more (-o json lists every entry)");
            t.add_row(row);
        }
    }
    let label = if with_config {
        "Entries that are not current"
    } else {
        "Entries that are not encrypted"
    };
    let by = if several {
        "by resource and namespace"
    } else {
        "by namespace"
    };
    format!("\n{label} ({shown}), {by}:\n{t}\n")
}

/// What only a file shows: older revisions and residue in free pages.
fn history_lines(r: &Report, args: &AuditArgs) -> String {
    let mut out = String::new();
    let with_config = args.config.is_some();
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
            if with_config {
                format!(
                    ", {} under other keys, {} unreadable",
                    h.stale,
                    h.unknown_key + h.undecryptable
                )
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
    out
}

/// The verdict in words, and what to do.
fn verdict_lines(r: &Report, with_config: bool, strict: bool) -> String {
    let mut out = String::new();
    if r.plaintext_by_config > 0 {
        out +=
            &format!(
            "{} plaintext because the config's write provider for {} is identity (not findings).\n",
            output::count(r.plaintext_by_config, "entry is", "entries are"),
            if r.plaintext_by_config == 1 { "its resource" } else { "their resources" }
        );
    }
    out += &match (r.verdict(strict), with_config) {
        (Verdict::Clean, true) if r.summary.stale > 0 => format!(
            "OK: nothing unreadable or plaintext; {} can be moved to the write key with `atrest rewrite`.\n",
            output::count(r.summary.stale, "stale entry", "stale entries")
        ),
        (Verdict::Clean, _) if r.plaintext_by_config > 0 => {
            "OK: every entry is stored as configured.\n".to_owned()
        }
        (Verdict::Clean, true) => "OK: every entry is encrypted as configured.\n".to_owned(),
        (Verdict::Clean, false) => "OK: every entry read is encrypted (pass --config to check with which keys).\n".to_owned(),
        (Verdict::Findings, true) => format!(
            "FINDINGS: {} plaintext or unreadable{}. Plaintext and stale entries can be re-encrypted with `atrest rewrite --config FILE`; unreadable ones need the key that wrote them.\n",
            output::count(r.findings(), "entry is", "entries are"),
            if strict && r.summary.stale > 0 { format!(", {} stale", r.summary.stale) } else { String::new() }
        ),
        (Verdict::Empty, _) => format!(
            "NOTHING READ: no entry under {} {}; an audit that reads nothing proves nothing (exit 1; --allow-empty accepts an empty scope). Check --prefix, --etcd-prefix and the resource names in the config (`atrest config check FILE`).\n",
            output::escape(&r.prefix),
            if r.not_covered.is_empty() { "at all".to_owned() } else { format!("of a resource the config covers ({} of others)", r.not_covered_total()) },
        ),
        (Verdict::Findings, false) => format!(
            "FINDINGS: {} stored in plaintext. Configure encryption (`atrest config new`), restart kube-apiserver with it, then run `atrest rewrite`.\n",
            output::count(r.summary.plaintext, "entry is", "entries are")
        ),
    };
    out
}
