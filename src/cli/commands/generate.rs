//! `atrest completions` and `atrest man`: generated from the clap definitions, so they never
//! drift from the real flags.

use clap::CommandFactory;

use crate::cli::args::{Cli, CompletionsArgs, ManArgs, Shell, EXIT_STATUS};
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
    output::write_output(None, &buf, false)?;
    Ok(Exit::Clean)
}

/// Every page ends with the exit statuses.
fn with_exit_status(cmd: clap::Command) -> clap::Command {
    cmd.after_long_help(EXIT_STATUS)
        .mut_subcommands(with_exit_status)
}

/// Prints one man page (roff), or writes them all into `--dir`.
pub(crate) fn man(args: ManArgs) -> Result<Exit, CliError> {
    let mut cmd = with_exit_status(Cli::command().disable_help_subcommand(true));
    cmd.build();
    if let Some(dir) = &args.dir {
        clap_mangen::generate_to(cmd, dir).map_err(|e| {
            CliError::io(&format!("cannot write man pages into {}", dir.display()), e)
        })?;
        eprintln!("Wrote the man pages into {}.", dir.display());
        return Ok(Exit::Clean);
    }
    let mut page = cmd;
    for name in &args.command {
        let known: Vec<String> = page
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        page = match page.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None => {
                return Err(CliError::usage(format!(
                    "no man page for {:?}: `{}` has no subcommand {name:?}",
                    args.command.join(" "),
                    page.get_display_name().unwrap_or("atrest")
                ))
                .advice(if known.is_empty() {
                    "it has no subcommands".to_owned()
                } else {
                    format!("one of: {}", known.join(", "))
                }))
            }
        };
    }
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut buf)
        .map_err(|e| CliError::io("the man page", e))?;
    output::write_output(None, &buf, false)?;
    Ok(Exit::Clean)
}
