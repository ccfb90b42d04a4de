//! The `atrest` command line: a thin shell over the `atrest` library.
//!
//! `main` only sets up the exit status: everything else lives in [`cli::run`].

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
