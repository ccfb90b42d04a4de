//! Command-line parsing, dispatch and exit codes.
//!
//! Exit status (DESIGN.md): 0 nothing to report, 1 findings, 2 usage or configuration error,
//! 3 the store could not be read or written.

mod args;
mod commands;
mod error;
mod output;
mod prometheus;
mod stream;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub(crate) use error::{CliError, Exit};

/// Parses arguments, runs the command, prints errors with advice, and maps the exit status.
pub(crate) fn main() -> ExitCode {
    // atrest holds keys, DEKs and plaintext Secrets: no core dump may hold them, and no other
    // process of the same user may ptrace it (as ssh-agent does). Best effort: on failure the
    // run goes on as before.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let args = match args::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(args) {
        Ok(exit) => exit.into(),
        Err(err) => {
            if err.is_broken_pipe() {
                return ExitCode::SUCCESS;
            }
            let mut stderr = std::io::stderr().lock();
            // Messages quote etcd keys, endpoints and plugin messages: no raw control bytes.
            let safe = output::escape_controls;
            let _ = writeln!(stderr, "error: {}", safe(&err.message));
            for line in &err.details {
                let _ = writeln!(stderr, "  {}", safe(line));
            }
            if let Some(advice) = &err.advice {
                let _ = writeln!(stderr, "hint: {}", safe(advice));
            }
            ExitCode::from(err.code)
        }
    }
}

fn run(args: args::Cli) -> Result<Exit, CliError> {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::internal(format!("cannot start the async runtime: {e}")))
    };
    if args.output == Some(args::OutputFormat::Prometheus)
        && !matches!(
            args.command,
            args::Command::Audit(_) | args::Command::Status(_) | args::Command::Apiservers(_)
        )
    {
        return Err(output::no_prometheus());
    }
    // Raw bytes or generated text: no table or JSON form.
    if let (Some(format), Some((command, what))) = (
        args.output,
        match &args.command {
            args::Command::Encrypt(_) => Some(("encrypt", "the raw value to store")),
            args::Command::Decrypt(_) => Some(("decrypt", "the raw object bytes")),
            args::Command::Completions(_) => Some(("completions", "a shell script")),
            args::Command::Man(_) => Some(("man", "a roff man page")),
            _ => None,
        },
    ) {
        let format = match format {
            args::OutputFormat::Table => "table",
            args::OutputFormat::Json => "json",
            args::OutputFormat::Prometheus => "prometheus",
        };
        return Err(CliError::usage(format!(
            "-o {format} means nothing for `atrest {command}`: its output is {what}"
        ))
        .advice("drop -o; `atrest inspect -o json` describes a stored value"));
    }
    match args.command {
        args::Command::Config(c) => commands::config::run(c, args.output),
        args::Command::Encrypt(c) => commands::crypt::encrypt(c),
        args::Command::Decrypt(c) => commands::crypt::decrypt(c),
        args::Command::Inspect(c) => runtime()?.block_on(commands::inspect::run(c, args.output)),
        args::Command::Audit(c) => runtime()?.block_on(commands::audit::run(c, args.output)),
        args::Command::Rewrite(c) => runtime()?.block_on(commands::rewrite::run(c, args.output)),
        args::Command::Status(c) => runtime()?.block_on(commands::status::run(c, args.output)),
        args::Command::CheckApiserver(c) => commands::check_apiserver::run(c, args.output),
        args::Command::Apiservers(c) => {
            runtime()?.block_on(commands::apiservers::run(*c, args.output))
        }
        args::Command::Completions(c) => commands::generate::completions(c),
        args::Command::Man(c) => commands::generate::man(c),
    }
}
