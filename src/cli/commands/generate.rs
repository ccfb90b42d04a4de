//! `atrest completions` and `atrest man`: generated from the clap definitions, so they never
//! drift from the real flags.

use clap::CommandFactory;

use crate::cli::args::{Cli, CompletionsArgs, Shell};
use crate::cli::output;
use crate::cli::{CliError, Exit};

/// Prints a completion script for the shell.
pub(crate) fn completions(args: CompletionsArgs) -> Result<Exit, CliError> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "atrest", &mut buf);
    output::write_output(None, &buf)?;
    Ok(Exit::Clean)
}

/// Prints the man page (roff).
pub(crate) fn man() -> Result<Exit, CliError> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut buf)
        .map_err(|e| CliError::io("the man page", e))?;
    output::write_output(None, &buf)?;
    Ok(Exit::Clean)
}
