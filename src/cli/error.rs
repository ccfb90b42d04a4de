//! What the user sees when something goes wrong: a message, details, advice, an exit status.

use std::process::ExitCode;

use atrest::config::ConfigError;
use atrest::store::StoreError;

/// How a successful run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Nothing to report.
    Clean,
    /// Findings (audit), or something left not current (rewrite).
    Findings,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        match e {
            Exit::Clean => ExitCode::SUCCESS,
            Exit::Findings => ExitCode::from(1),
        }
    }
}

/// An error for the user: what went wrong, where, and what to do.
#[derive(Debug)]
pub(crate) struct CliError {
    /// Exit status: 2 usage/config, 3 store.
    pub(crate) code: u8,
    /// One line saying what went wrong.
    pub(crate) message: String,
    /// Further lines (one per field error, …).
    pub(crate) details: Vec<String>,
    /// What to do about it.
    pub(crate) advice: Option<String>,
    broken_pipe: bool,
}

impl CliError {
    /// A usage or configuration error (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
            details: Vec::new(),
            advice: None,
            broken_pipe: false,
        }
    }

    /// A store error (exit 3).
    pub(crate) fn store(message: impl Into<String>) -> Self {
        CliError {
            code: 3,
            ..CliError::usage(message)
        }
    }

    /// A refusal or finding reported as an error (exit 1): a gate, a guard.
    pub(crate) fn findings(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            ..CliError::usage(message)
        }
    }

    /// Something that should not happen (exit 2).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        CliError::usage(message)
    }

    /// Adds advice.
    pub(crate) fn advice(mut self, advice: impl Into<String>) -> Self {
        self.advice = Some(advice.into());
        self
    }

    /// Adds a detail line.
    pub(crate) fn detail(mut self, line: impl Into<String>) -> Self {
        self.details.push(line.into());
        self
    }

    /// An I/O error on a named file or stream (exit 2: the user's input or output).
    pub(crate) fn io(what: &str, err: std::io::Error) -> Self {
        let mut e = CliError::usage(format!("{what}: {err}"));
        e.broken_pipe = err.kind() == std::io::ErrorKind::BrokenPipe;
        e
    }

    /// True for a write to a closed pipe (`atrest audit | head`): exit quietly.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        self.broken_pipe
    }
}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        // The message with its causes: a write error says the OS's reason.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message += &format!(": {cause}");
            source = cause.source();
        }
        CliError::usage(message)
            .advice("fix the file and run `atrest config check FILE`; `atrest config new` writes a valid one")
    }
}

impl From<StoreError> for CliError {
    /// The error, each cause below it as a detail line, and the store's advice.
    fn from(err: StoreError) -> Self {
        let mut cli = CliError::store(err.to_string()).advice(err.advice());
        for cause in causes(&err) {
            cli = cli.detail(format!("caused by: {cause}"));
        }
        cli
    }
}

/// The causes of `err` (its `source()` chain), skipping text a message already shows.
pub(crate) fn causes(err: &dyn std::error::Error) -> Vec<String> {
    let mut shown = err.to_string();
    let mut out = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !shown.contains(&text) {
            shown.push_str(&text);
            out.push(text);
        }
        source = cause.source();
    }
    out
}
