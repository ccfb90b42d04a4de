//! `atrest check-apiserver`: does kube-apiserver's static pod manifest really use an encryption
//! config that encrypts Secrets?

use atrest::apiserver::{self, ApiserverReport, ApiserverVerdict, CheckStatus};

use crate::cli::args::{CheckApiserverArgs, OutputFormat};
use crate::cli::output;
use crate::cli::{CliError, Exit};

/// Runs `atrest check-apiserver`.
pub(crate) fn run(
    args: CheckApiserverArgs,
    format: Option<OutputFormat>,
) -> Result<Exit, CliError> {
    let report = apiserver::check_manifest(&args.manifest, &args.root).map_err(|e| {
        CliError::usage(e.to_string()).advice(format!(
            "pass kube-apiserver's static pod manifest (kubeadm: {})",
            apiserver::DEFAULT_MANIFEST
        ))
    })?;
    match output::format(format) {
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Table => output::print(&render(&report))?,
        OutputFormat::Prometheus => return Err(output::no_prometheus()),
    }
    Ok(match report.verdict {
        ApiserverVerdict::Pass => Exit::Clean,
        ApiserverVerdict::Fail => Exit::Findings,
    })
}

fn render(r: &ApiserverReport) -> String {
    let mut out = format!(
        "kube-apiserver manifest {} (container {})\n",
        r.manifest, r.container
    );
    for c in &r.checks {
        out += &format!(
            "{:<5} {:<17} {}\n",
            c.status.as_str().to_uppercase(),
            c.id.as_str(),
            c.message
        );
        if let Some(advice) = &c.advice {
            out += &format!("{:<23} fix: {advice}\n", "");
        }
    }
    let failed = r
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .count();
    out += &match r.verdict {
        ApiserverVerdict::Pass => {
            "\nOK: kube-apiserver encrypts new Secrets. Run `atrest audit` to check what is already stored.\n".to_owned()
        }
        ApiserverVerdict::Fail => format!(
            "\nFAIL: {failed} check(s) failed: Secrets are not encrypted at rest as configured.\n"
        ),
    };
    out
}
