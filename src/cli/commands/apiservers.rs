//! `atrest apiservers`: has every running kube-apiserver loaded exactly this config file?
//! Also the resolution of API access shared by the gate of `rewrite` and `config rotate`.

use atrest::apiserver::access::{AccessOptions, ApiAccess};
use atrest::apiserver::canary::{canary_apiservers, CanaryTarget};
use atrest::apiserver::check::{
    check_apiservers, compare_with_plugins, ApiserversReport, CheckError,
};
use atrest::apiserver::gate::{ApiserverGate, GateError};

use crate::cli::args::{ApiArgs, ApiserversArgs, GateArgs, OutputFormat};
use crate::cli::prometheus::Exposition;
use crate::cli::{output, CliError, Exit};

/// Runs `atrest apiservers`.
pub(crate) async fn run(
    args: ApiserversArgs,
    format: Option<OutputFormat>,
) -> Result<Exit, CliError> {
    let file_bytes = read_config(&args.config)?;
    let access = resolve_access(&args.api, args.store.kubeadm)
        .await?
        .ok_or_else(|| {
            CliError::usage("no Kubernetes API access is configured").advice(
                "pass --kubeconfig FILE (or set KUBECONFIG), or --kubeadm on a control-plane node",
            )
        })?;
    let mut report = check_apiservers(&access, &file_bytes, &args.api.apiservers)
        .await
        .map_err(check_error)?;
    if !args.kms.no_kms {
        if let Some(chain) = plugin_chain(&args)? {
            compare_with_plugins(&mut report, &chain);
        }
    }
    if args.canary {
        canary(&args, &access, &mut report).await?;
    }
    match output::format(format) {
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Table => output::print(&render(&report))?,
        OutputFormat::Prometheus => output::print(&prometheus(&report))?,
    }
    Ok(if report.ok {
        Exit::Clean
    } else {
        Exit::Findings
    })
}

/// The chain for secrets with its KMS plugins connected, when the config has KMS providers
/// (their own key IDs are compared with what each instance writes with); `None` otherwise or
/// when the config cannot be built (the hash check does not need it).
fn plugin_chain(args: &ApiserversArgs) -> Result<Option<atrest::transform::Chain>, CliError> {
    let Ok(config) = atrest::config::Config::load(&args.config) else {
        return Ok(None);
    };
    let options = super::kms_options(&config, &args.kms)?;
    let chain = atrest::transform::Chain::from_config_with_kms(&config, "", "secrets", &options);
    Ok(chain.ok().filter(|c| c.kms_providers().next().is_some()))
}

/// `--canary`: a Secret through each instance, read back from etcd, always deleted (Ctrl-C
/// too: the library deletes the run's Secrets when the shutdown future resolves).
async fn canary(
    args: &ApiserversArgs,
    access: &ApiAccess,
    report: &mut ApiserversReport,
) -> Result<(), CliError> {
    let chain = super::load_chain(&args.config, "/registry/secrets/", &args.kms)?;
    let store = super::audit::connect(&args.store).await?;
    let target = CanaryTarget {
        store: &store,
        chain: &chain,
        namespace: &args.canary_namespace,
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    canary_apiservers(access, report, &target, shutdown)
        .await
        .map_err(|e| CliError::usage(e.to_string()).advice(e.advice()))
}

/// Reads the config file whose hash every instance should report (exit 2 if unreadable).
/// The bytes hold keys: wiped when dropped.
pub(crate) fn read_config(path: &std::path::Path) -> Result<zeroize::Zeroizing<Vec<u8>>, CliError> {
    use std::io::Read;
    let max = atrest::config::MAX_CONFIG_BYTES;
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(64 << 10));
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| CliError::io(&format!("cannot read {}", path.display()), e))?;
    if bytes.len() as u64 > max {
        return Err(CliError::usage(format!(
            "{} is larger than {max} bytes: not an EncryptionConfiguration",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Resolves `--kubeconfig`/`--context`/`--kubeadm`; `None` when nothing is configured.
pub(crate) async fn resolve_access(
    api: &ApiArgs,
    kubeadm: bool,
) -> Result<Option<ApiAccess>, CliError> {
    let options = AccessOptions {
        kubeconfig: api.kubeconfig.clone(),
        context: api.context.clone(),
        kubeadm,
    };
    ApiAccess::resolve(&options)
        .await
        .map_err(|e| CliError::usage(e.to_string()).advice(e.advice()))
}

/// The gate of `rewrite` and `config rotate` as their flags ask for it.
pub(crate) async fn resolve_gate(
    args: &GateArgs,
    kubeadm: bool,
) -> Result<ApiserverGate, CliError> {
    if args.no_apiserver_check {
        return Ok(ApiserverGate::SkippedOnPurpose);
    }
    Ok(match resolve_access(&args.api, kubeadm).await? {
        Some(access) => ApiserverGate::Required {
            access: Box::new(access),
            urls: args.api.apiservers.clone(),
        },
        None => ApiserverGate::SkippedNoAccess,
    })
}

/// A gate refusal (exit 1, nothing written) or a check that could not be made (exit 3).
pub(crate) fn gate_error(e: GateError) -> CliError {
    let advice = e.advice();
    match e {
        GateError::NotLoaded { ref lagging, .. } => {
            let mut cli = CliError::findings(format!("refusing to write: {e}"));
            for l in lagging {
                cli = cli.detail(format!(
                    "{}: {}",
                    output::escape_owned(&l.apiserver),
                    l.problem
                ));
            }
            cli.advice(advice)
        }
        GateError::Check(e) => check_error(e),
        e => CliError::findings(e.to_string()).advice(advice),
    }
}

fn check_error(e: CheckError) -> CliError {
    let advice = e.advice();
    match e {
        CheckError::Access(e) => CliError::usage(e.to_string()).advice(advice),
        e @ CheckError::Unreachable { .. } => CliError::store(e.to_string()).advice(advice),
        e => CliError::store(e.to_string()).advice(advice),
    }
}

/// The table of `atrest apiservers` (also under `audit --apiservers` and `status --apiservers`).
pub(crate) fn render(r: &ApiserversReport) -> String {
    let mut t = output::table();
    t.set_header([
        "HOSTNAME", "URL", "VERSION", "LOADED", "MATCHES", "RELOADS", "PROBLEM",
    ]);
    for a in &r.apiservers {
        t.add_row([
            output::escape_owned(a.hostname.as_deref().unwrap_or("?")),
            output::escape_owned(&a.url),
            output::escape_owned(a.version.as_deref().unwrap_or("-")),
            short_hash(a.loaded_hash.as_deref()),
            a.matches.map_or("-", output::yes_no).to_owned(),
            format!("{} ok, {} failed", a.reloads.success, a.reloads.failure),
            a.problem.as_ref().map_or("", |p| p.short()).to_owned(),
        ]);
    }
    let mut out = format!("config file hash {}\n{t}\n", r.file_hash);
    for a in &r.apiservers {
        if let Some(c) = &a.canary {
            let by = c.written_by.as_ref().map_or_else(
                || "not read".to_owned(),
                |w| {
                    format!(
                        "{} key {} ({})",
                        w.provider,
                        w.key.as_deref().unwrap_or("-"),
                        w.state
                    )
                },
            );
            out += &format!(
                "canary through {}: written by {}, {}, {}\n",
                output::escape_owned(a.hostname.as_deref().unwrap_or(&a.url)),
                output::escape_owned(&by),
                if c.ok { "ok" } else { "NOT the write key" },
                if c.deleted { "deleted" } else { "NOT DELETED" },
            );
        }
    }
    for a in &r.apiservers {
        if let Some(p) = &a.problem {
            let name = a.hostname.as_deref().unwrap_or(&a.url);
            out += &format!(
                "{}: {}\n  hint: {}\n",
                output::escape_owned(name),
                output::escape_owned(&p.describe()),
                p.advice()
            );
        }
    }
    for n in &r.not_checked {
        out += &format!(
            "{} ({}): {}\n",
            output::escape_owned(&n.hostname),
            output::escape_owned(&n.identity),
            atrest::apiserver::gate::NOT_CHECKED
        );
    }
    out += &if r.ok {
        format!(
            "\nOK: every kube-apiserver ({}) runs this file.\n",
            r.apiservers.len()
        )
    } else {
        let lagging = atrest::apiserver::gate::lagging(r);
        let names: Vec<_> = lagging
            .iter()
            .map(|l| output::escape_owned(&l.apiserver))
            .collect();
        format!(
            "\nFAIL: not every kube-apiserver runs this file: {}\n",
            names.join(", ")
        )
    };
    out
}

fn short_hash(hash: Option<&str>) -> String {
    match hash {
        Some(h) if h.len() > 15 => format!("{}…", &h[..15]),
        Some(h) => output::escape_owned(h),
        None => "-".to_owned(),
    }
}

/// The metrics of `atrest apiservers -o prometheus`.
pub(crate) fn prometheus(r: &ApiserversReport) -> String {
    let mut m = Exposition::default();
    let name = "atrest_apiserver_config_matches";
    m.gauge(name, "1 when this kube-apiserver has loaded exactly the checked config file, 0 when not, -1 when it did not say.");
    for a in &r.apiservers {
        let value = a.matches.map_or(-1.0, |b| f64::from(u8::from(b)));
        let host = a.hostname.as_deref().unwrap_or("");
        m.sample(
            name,
            &[
                ("hostname", host),
                ("url", &a.url),
                ("file_hash", &r.file_hash),
            ],
            value,
        );
    }
    let name = "atrest_apiserver_not_checked";
    m.gauge(
        name,
        "1 for each kube-apiserver holding a live identity Lease that was not checked.",
    );
    for n in &r.not_checked {
        m.sample(name, &[("hostname", &n.hostname)], 1.0);
    }
    let name = "atrest_apiservers_ok";
    m.gauge(
        name,
        "1 when every kube-apiserver runs the checked config file.",
    );
    m.sample(name, &[], f64::from(u8::from(r.ok)));
    m.finish()
}

/// `--apiservers` of `audit` and `status`: the check of every kube-apiserver against `config`
/// (`None` when not asked).
pub(crate) async fn optional_check(
    asked: bool,
    config: Option<&std::path::Path>,
    api: &ApiArgs,
    kubeadm: bool,
) -> Result<Option<ApiserversReport>, CliError> {
    let (true, Some(config)) = (asked, config) else {
        return Ok(None);
    };
    let file_bytes = read_config(config)?;
    let access = resolve_access(api, kubeadm).await?.ok_or_else(|| {
        CliError::usage("--apiservers: no Kubernetes API access is configured").advice(
            "pass --kubeconfig FILE (or set KUBECONFIG), or --kubeadm on a control-plane node",
        )
    })?;
    let report = check_apiservers(&access, &file_bytes, &api.apiservers)
        .await
        .map_err(check_error)?;
    Ok(Some(report))
}

/// A report (audit, status) with the `apiservers` section beside its own fields.
#[derive(serde::Serialize)]
pub(crate) struct WithApiservers<'a, T: serde::Serialize> {
    #[serde(flatten)]
    pub(crate) report: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) apiservers: Option<&'a ApiserversReport>,
}
