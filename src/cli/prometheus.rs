//! `-o prometheus`: the Prometheus text exposition format, for node_exporter's textfile
//! collector (`atrest audit -o prometheus > /var/lib/node_exporter/textfile/atrest.prom.$$ &&
//! mv …`).
//!
//! With `-o prometheus` a command exits 0 whenever it wrote the metrics, findings or not: the
//! findings are in the metrics (`atrest_audit_ok`, `atrest_apiserver_reads_all`), and the
//! `&& mv` of the textfile recipe must run exactly when there is something to alert on. Each
//! metric name belongs to one command (`atrest_audit_*`/`atrest_entries*` to audit,
//! `atrest_status_*`/`atrest_key_*` to status), so both textfiles can be collected together.
//!
//! Every metric gets one `# HELP` and one `# TYPE` line before its samples; samples are
//! `name{label="value",…} number`. Label values escape `\`, `"` and line feeds, HELP text
//! escapes `\` and line feeds, as the format requires.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use atrest::audit::{Counts, Report, Verdict};
use atrest::status::{KeyStatus, Status};
use atrest::transform::State;

/// A metrics document being written.
#[derive(Default)]
pub(crate) struct Exposition {
    out: String,
}

/// Escapes a label value.
pub(crate) fn escape_label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

impl Exposition {
    /// Declares a gauge: its HELP and TYPE lines. Call once per metric, before its samples.
    pub(crate) fn gauge(&mut self, name: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} gauge");
        self
    }

    /// Writes one sample.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// The document.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64)
}

fn counts(m: &mut Exposition, name: &str, help: &str, c: &Counts, prefix: &str) {
    m.gauge(name, help);
    for s in State::ALL {
        m.sample(
            name,
            &[("state", s.as_str()), ("prefix", prefix)],
            c.get(s) as f64,
        );
    }
}

/// One gauge of entries by resource and state.
fn resource_counts<'a>(
    m: &mut Exposition,
    name: &str,
    help: &str,
    resources: impl Iterator<Item = (&'a str, &'a Counts)>,
    prefix: &str,
) {
    m.gauge(name, help);
    for (resource, c) in resources {
        for s in State::ALL {
            m.sample(
                name,
                &[
                    ("resource", resource),
                    ("state", s.as_str()),
                    ("prefix", prefix),
                ],
                c.get(s) as f64,
            );
        }
    }
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// An audit report as metrics.
pub(crate) fn audit(r: &Report, strict: bool) -> String {
    let mut m = Exposition::default();
    let p = r.prefix.as_str();
    counts(
        &mut m,
        "atrest_entries",
        "Entries under the prefix at the audited revision, by state.",
        &r.summary,
        p,
    );
    resource_counts(
        &mut m,
        "atrest_resource_entries",
        "Entries of each resource the config covers, at the audited revision, by state.",
        r.resources
            .iter()
            .map(|(name, per)| (name.as_str(), &per.counts)),
        p,
    );
    if !r.not_covered.is_empty() {
        m.gauge(
            "atrest_not_covered_entries",
            "Entries of resources the config does not cover (stored unencrypted by kube-apiserver; not findings), by resource.",
        );
        for (resource, n) in &r.not_covered {
            m.sample(
                "atrest_not_covered_entries",
                &[("resource", resource), ("prefix", p)],
                *n as f64,
            );
        }
    }
    m.gauge(
        "atrest_entries_by_key",
        "Encrypted entries under the prefix, by the provider and key name in their prefix.",
    );
    for ((provider, key), n) in &r.by_key {
        m.sample(
            "atrest_entries_by_key",
            &[
                ("provider", provider.as_str()),
                ("key", key.as_deref().unwrap_or("")),
                ("prefix", p),
            ],
            *n as f64,
        );
    }
    let by_kms_key_id = &r.by_kms_key_id;
    if !by_kms_key_id.is_empty() {
        m.gauge(
            "atrest_entries_by_kms_key_id",
            "KMS v2 entries under the prefix, by KMS provider name and the KMS key ID stored in them.",
        );
        for ((name, id), n) in by_kms_key_id {
            m.sample(
                "atrest_entries_by_kms_key_id",
                &[("key", name), ("key_id", id), ("prefix", p)],
                *n as f64,
            );
        }
    }
    if let Some(h) = &r.history {
        counts(
            &mut m,
            "atrest_history_entries",
            "Older, not yet compacted revisions under the prefix (snapshot audits), by state.",
            h,
            p,
        );
    }
    if let Some(res) = &r.residue {
        m.gauge(
            "atrest_residue_plaintext_objects",
            "Plaintext stored objects left in free database pages (snapshot audits).",
        )
        .sample(
            "atrest_residue_plaintext_objects",
            &[("prefix", p)],
            res.plaintext as f64,
        );
    }
    m.gauge(
        "atrest_audit_ok",
        "1 when the audit found nothing to report (exit status 0 with -o table or json), else 0.",
    )
    .sample(
        "atrest_audit_ok",
        &[("prefix", p)],
        bool_value(r.verdict(strict) == Verdict::Clean),
    );
    m.gauge(
        "atrest_audit_revision",
        "The store revision the audit read.",
    )
    .sample("atrest_audit_revision", &[("prefix", p)], r.revision as f64);
    m.gauge(
        "atrest_audit_timestamp_seconds",
        "When the audit ran, in seconds since the Unix epoch.",
    )
    .sample(
        "atrest_audit_timestamp_seconds",
        &[("prefix", p)],
        now_seconds(),
    );
    m.finish()
}

/// One gauge with a sample per configured key.
fn key_metric(
    m: &mut Exposition,
    s: &Status,
    name: &str,
    help: &str,
    value: impl Fn(&KeyStatus) -> f64,
) {
    m.gauge(name, help);
    for k in &s.keys {
        m.sample(
            name,
            &[
                ("provider", k.provider.as_str()),
                ("key", k.key_name.as_deref().unwrap_or("")),
                ("path", &k.path),
                ("write", if k.write { "true" } else { "false" }),
                ("prefix", &s.prefix),
            ],
            value(k),
        );
    }
}

/// A status as metrics.
pub(crate) fn status(s: &Status) -> String {
    let mut m = Exposition::default();
    let p = s.prefix.as_str();
    // Not `atrest_entries`: that one is the audit's. Each metric has one owner, so the two
    // commands' textfiles can sit side by side in node_exporter's directory.
    counts(
        &mut m,
        "atrest_status_entries",
        "Entries under the prefix at the revision the status read, by state.",
        &s.summary,
        p,
    );
    if !s.resources.is_empty() {
        resource_counts(
            &mut m,
            "atrest_status_resource_entries",
            "Entries of each resource the config covers, at the revision the status read, by state.",
            s.resources.iter().map(|(name, c)| (name.as_str(), c)),
            p,
        );
    }
    key_metric(
        &mut m,
        s,
        "atrest_key_entries",
        "Entries each configured key (or identity, or KMS provider) reads.",
        |k| k.entries as f64,
    );
    key_metric(
        &mut m,
        s,
        "atrest_key_undecryptable_entries",
        "Entries naming a configured key that do not decrypt with it.",
        |k| k.undecryptable as f64,
    );
    key_metric(
        &mut m,
        s,
        "atrest_key_safe_to_remove",
        "1 when removing the key leaves every entry as readable as now, else 0.",
        |k| bool_value(k.safe_to_remove),
    );
    m.gauge(
        "atrest_unknown_key_entries",
        "Entries encrypted with a provider/key the config does not have.",
    );
    for u in &s.unknown_keys {
        m.sample(
            "atrest_unknown_key_entries",
            &[
                ("provider", u.provider.map_or("", |p| p.as_str())),
                ("key", u.key_name.as_deref().unwrap_or("")),
                ("prefix", p),
            ],
            u.entries as f64,
        );
    }
    m.gauge(
        "atrest_apiserver_reads_all",
        "1 when kube-apiserver running the config could read every entry under the prefix.",
    )
    .sample(
        "atrest_apiserver_reads_all",
        &[("prefix", p)],
        bool_value(s.apiserver_reads_all),
    );
    m.gauge(
        "atrest_status_revision",
        "The store revision the status read.",
    )
    .sample(
        "atrest_status_revision",
        &[("prefix", p)],
        s.revision as f64,
    );
    m.gauge(
        "atrest_status_timestamp_seconds",
        "When the status ran, in seconds since the Unix epoch.",
    )
    .sample(
        "atrest_status_timestamp_seconds",
        &[("prefix", p)],
        now_seconds(),
    );
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values_and_help() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut m = Exposition::default();
        m.gauge("m", "line\\one\ntwo")
            .sample("m", &[("k", "v\"")], 2.0)
            .sample("m", &[], 0.5);
        assert_eq!(
            m.finish(),
            "# HELP m line\\\\one\\ntwo\n# TYPE m gauge\nm{k=\"v\\\"\"} 2\nm 0.5\n"
        );
    }
}
