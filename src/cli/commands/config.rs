//! `atrest config new|check`.

use std::io::IsTerminal;

use atrest::config::{self, Config, ConfigError, NewConfig, NewProvider};
use serde::Serialize;

use crate::cli::args::{
    ConfigCheckArgs, ConfigCommand, ConfigNewArgs, NewProviderArg, OutputFormat,
};
use crate::cli::output;
use crate::cli::{CliError, Exit};

/// Runs `atrest config …`.
pub(crate) fn run(cmd: ConfigCommand, format: Option<OutputFormat>) -> Result<Exit, CliError> {
    match cmd {
        ConfigCommand::New(a) => new(a, format),
        ConfigCommand::Check(a) => check(a, format),
        ConfigCommand::Rotate(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::internal(format!("cannot start the async runtime: {e}")))?
            .block_on(super::rotate::run(*a, format)),
    }
}

/// What `config new -o json` prints: the file and what it holds, never the key.
#[derive(Serialize)]
struct NewReport<'a> {
    file: String,
    mode: &'static str,
    provider: &'static str,
    key_name: &'a str,
    resources: &'a [String],
    identity_fallback: bool,
}

fn new(args: ConfigNewArgs, format: Option<OutputFormat>) -> Result<Exit, CliError> {
    // Without --out the output *is* the YAML (with its key): no other format makes sense.
    if args.out.is_none() && matches!(format, Some(OutputFormat::Json)) {
        return Err(CliError::usage(
            "config new prints the new config as YAML; -o json needs --out FILE",
        )
        .advice("pass --out FILE: the file is written (mode 0600) and the JSON summary printed"));
    }
    let opts = NewConfig {
        provider: match args.provider {
            NewProviderArg::Aescbc | NewProviderArg::Kms => NewProvider::Aescbc,
            NewProviderArg::Aesgcm => NewProvider::Aesgcm,
            NewProviderArg::Secretbox => NewProvider::Secretbox,
        },
        key_name: args.key_name,
        resources: args.resources,
        identity_fallback: !args.no_identity,
        kms: match args.provider {
            NewProviderArg::Kms => Some(super::new_kms(&args.kms)?),
            _ => None,
        },
    };
    let model = config::generate(&opts);
    let yaml = zeroize::Zeroizing::new(config::to_yaml(&model)?);
    // Prove the file is one kube-apiserver accepts before anyone relies on it.
    let checked = Config::from_yaml(&yaml)?;
    match &args.out {
        Some(path) => {
            config::write_atomic(path, yaml.as_bytes(), args.force).map_err(|e| match e {
                ConfigError::Exists { .. } => CliError::usage(e.to_string()).advice(
                    "pass --force to replace it (the old key is then lost unless you kept a copy)",
                ),
                other => super::write_error(path, other),
            })?;
            if format == Some(OutputFormat::Json) {
                output::print_json(&NewReport {
                    file: path.display().to_string(),
                    mode: "0600",
                    provider: opts.provider.as_str(),
                    key_name: &opts.key_name,
                    resources: &opts.resources,
                    identity_fallback: opts.identity_fallback,
                })?;
            }
            eprintln!(
                "Wrote {} (mode 0600). Next: copy it to every control-plane node, point kube-apiserver's --encryption-provider-config at it, restart kube-apiserver, then run `atrest rewrite --config {}`.",
                path.display(),
                path.display()
            );
        }
        None => {
            if std::io::stdout().is_terminal() {
                eprintln!("note: this config holds a new secret key; prefer --out FILE to write it with mode 0600.");
            }
            output::print(&yaml)?;
        }
    }
    // What `config check` would say about it (such as aesgcm's rotation limit), said now.
    for w in checked.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(Exit::Clean)
}

#[derive(Serialize)]
struct CheckReport {
    file: String,
    valid: bool,
    errors: Vec<String>,
    warnings: Vec<String>,
}

fn check(args: ConfigCheckArgs, format: Option<OutputFormat>) -> Result<Exit, CliError> {
    let file = args.file.display().to_string();
    let (report, err) = match Config::load(&args.file) {
        Ok(cfg) => (
            CheckReport {
                file,
                valid: true,
                errors: Vec::new(),
                warnings: cfg.warnings().iter().map(ToString::to_string).collect(),
            },
            None,
        ),
        Err(e) => (
            CheckReport {
                file,
                valid: false,
                errors: super::config_error_lines(&e),
                warnings: Vec::new(),
            },
            Some(e),
        ),
    };
    match output::format(format) {
        OutputFormat::Prometheus => return Err(output::no_prometheus()),
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Table => {
            let mut out = String::new();
            if report.valid {
                out += &format!("{}: valid\n", report.file);
            }
            for w in &report.warnings {
                out += &format!("warning: {w}\n");
            }
            output::print(&out)?;
        }
    }
    match err {
        None => Ok(Exit::Clean),
        Some(e) => Err(super::invalid_config(&report.file, &e)),
    }
}
