//! `atrest inspect`: explain one stored value.

use atrest::audit::inspect::{inspect, Inspection};
use atrest::store::snapshot::Snapshot;
use atrest::transform::State;

use super::load_chain;
use crate::cli::args::{InspectArgs, OutputFormat};
use crate::cli::output::{self, read_input, yes_no};
use crate::cli::{CliError, Exit};

/// Runs `atrest inspect`.
pub(crate) async fn run(args: InspectArgs, format: Option<OutputFormat>) -> Result<Exit, CliError> {
    let value = match (&args.snapshot, &args.kine_db) {
        (None, Some(path)) => {
            let key = args
                .etcd_key
                .as_deref()
                .ok_or_else(|| CliError::usage("--kine-db needs --etcd-key: the key to look up"))?;
            super::open_kine(path)?
                .get(key.as_bytes())
                .map_err(atrest::store::StoreError::from)?
                .ok_or_else(|| {
                    CliError::usage(format!("{key}: no such key in {}", path.display()))
                })?
                .value
        }
        (Some(path), _) => {
            let key = args.etcd_key.as_deref().ok_or_else(|| {
                CliError::usage("--snapshot needs --etcd-key: the key to look up")
            })?;
            let snap = Snapshot::open(path).map_err(atrest::store::StoreError::from)?;
            snap.get(key.as_bytes())
                .map_err(atrest::store::StoreError::from)?
                .ok_or_else(|| {
                    CliError::usage(format!("{key}: no such key in {}", path.display()))
                })?
                .value
        }
        (None, None) => read_input(args.input.as_deref())?,
    };
    let chain = match &args.config {
        Some(path) => {
            // The chain of the resource the key names (custom resources included); without a
            // key, a Secret's.
            let prefix = match args.etcd_key.as_deref() {
                Some(key) => super::resource_prefix(key)?,
                None => super::DEFAULT_PREFIX.to_owned(),
            };
            Some(load_chain(path, &prefix, &args.kms)?)
        }
        None => None,
    };
    let report = inspect(
        chain.as_ref(),
        &value,
        args.etcd_key.as_deref().map(str::as_bytes),
    );
    match output::format(format) {
        OutputFormat::Prometheus => return Err(output::no_prometheus()),
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Table => output::print(&render(&report))?,
    }
    Ok(match report.readable {
        Some(false) => Exit::Findings,
        _ => Exit::Clean,
    })
}

fn render(r: &Inspection) -> String {
    let mut t = output::table();
    let mut row = |k: &str, v: String| {
        t.add_row(vec![k.to_owned(), v]);
    };
    if let Some(k) = &r.etcd_key {
        row("etcd key", k.clone());
    }
    row("size", format!("{} bytes", r.size));
    let how = match (&r.provider, &r.key_name) {
        (Some(p), Some(k)) => format!("{p}, key {k:?}"),
        (Some(p), None) => p.to_string(),
        (None, _) if r.state == State::Plaintext => "not encrypted".to_owned(),
        (None, _) => "k8s:enc: prefix with an unrecognised provider".to_owned(),
    };
    row("encryption", how);
    if let Some(id) = &r.key_id {
        row("KMS key ID", id.clone());
    }
    row("state", r.state.to_string());
    if let Some(path) = &r.read_by {
        row("read by", path.clone());
    }
    if let Some(readable) = r.readable {
        row("readable", yes_no(readable).to_owned());
    }
    if let Some(e) = &r.error {
        row("error", e.clone());
    }
    if let Some(o) = &r.object {
        row(
            "object",
            format!(
                "{} {} ({})",
                o.api_version,
                o.kind,
                format!("{:?}", o.encoding).to_lowercase()
            ),
        );
        if let Some(ns) = &o.namespace {
            row("namespace", ns.clone());
        }
        if let Some(name) = &o.name {
            row("name", name.clone());
        }
        if let Some(uid) = &o.uid {
            row("uid", uid.clone());
        }
        if let Some(ts) = &o.creation_timestamp {
            row("created", ts.clone());
        }
        if let Some(ty) = &o.secret_type {
            row("type", ty.clone());
        }
        if !o.data_keys.is_empty() {
            row("data keys", o.data_keys.join(", "));
        }
    }
    if let Some(e) = &r.object_error {
        row("object", format!("not decoded: {e}"));
    }
    format!("{t}\n")
}
