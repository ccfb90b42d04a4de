//! Rendering helpers: format choice, tables, JSON, progress bars, reading and writing bytes.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use comfy_table::{presets, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};

use super::args::OutputFormat;
use super::CliError;

/// The format to use: the flag, else table on a terminal and JSON otherwise.
pub(crate) fn format(flag: Option<OutputFormat>) -> OutputFormat {
    flag.unwrap_or_else(|| {
        if std::io::stdout().is_terminal() {
            OutputFormat::Table
        } else {
            OutputFormat::Json
        }
    })
}

/// The usage error for `-o prometheus` on a command that has no metrics (exit 2).
pub(crate) fn no_prometheus() -> CliError {
    CliError::usage(
        "-o prometheus is only for `atrest audit`, `atrest status` and `atrest apiservers`",
    )
    .advice("use -o table or -o json with this command")
}

/// The width tables get on a pipe, or on a terminal narrower than [`MIN_WIDTH`].
const FALLBACK_WIDTH: u16 = 120;

/// Narrower than this, a terminal's reported width is not believed.
const MIN_WIDTH: u16 = 40;

/// A table in the project's style.
pub(crate) fn table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic);
    // A pipe has no width; a terminal that reports a tiny one (`script` without a tty gives 0
    // columns, so do some CI consoles) would wrap every cell to one character a line.
    let usable = std::io::stdout().is_terminal() && t.width().is_some_and(|w| w >= MIN_WIDTH);
    if !usable {
        t.set_width(FALLBACK_WIDTH);
    }
    t
}

/// One table cell or one line from outside (an etcd key, a name, a KMS key ID, a plugin's
/// message) with every control character, newline and tab included, written as a visible escape
/// (`\u{1b}`, `\n`): escaped before the table is laid out, so columns stay aligned. Other
/// Unicode is kept.
pub(crate) fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`escape`], as an owned string.
pub(crate) fn escape_owned(text: &str) -> String {
    escape(text).into_owned()
}

/// `text` with every control character but newline and tab written as a visible escape
/// (`\u{1b}`, `\r`, `\u{9b}`): etcd keys, KMS key IDs and plugin messages come from outside,
/// and an ESC or CSI sequence in them must not reach the terminal. Other Unicode is kept.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes `text` (a table, a summary) to standard output, control characters escaped (see
/// [`escape_controls`]).
pub(crate) fn print(text: &str) -> Result<(), CliError> {
    let text = escape_controls(text);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::io("standard output", e))
}

/// Writes pretty JSON and a newline to standard output, streamed through a buffer (a report of
/// 50,000 entries is about 12 MB of JSON: never held as one string).
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| {
        if e.is_io() {
            CliError::io("standard output", e.into())
        } else {
            CliError::internal(format!("cannot render JSON: {e}"))
        }
    })?;
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::io("standard output", e))
}

/// The largest value `encrypt`, `decrypt` and `inspect` read: 64 MiB. etcd refuses requests
/// over `--max-request-bytes` (1.5 MiB by default), so no stored value comes near it.
pub(crate) const MAX_INPUT_BYTES: u64 = 64 << 20;

/// Reads all of a file, or standard input for `None` / `-`, up to [`MAX_INPUT_BYTES`].
pub(crate) fn read_input(path: Option<&Path>) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    let name = match path {
        Some(p) if p != Path::new("-") => {
            let name = p.display().to_string();
            std::fs::File::open(p)
                .and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut buf))
                .map_err(|e| CliError::io(&name, e))?;
            name
        }
        _ => {
            std::io::stdin()
                .lock()
                .take(MAX_INPUT_BYTES + 1)
                .read_to_end(&mut buf)
                .map_err(|e| CliError::io("standard input", e))?;
            "standard input".to_owned()
        }
    };
    if buf.len() as u64 > MAX_INPUT_BYTES {
        return Err(CliError::usage(format!(
            "{name}: more than {MAX_INPUT_BYTES} bytes, far more than etcd stores in one value"
        ))
        .advice("pass one stored value (etcd's --max-request-bytes is 1.5 MiB by default)"));
    }
    Ok(buf)
}

/// Writes raw bytes to standard output (`None` or `-`) or to a new file, atomically and readable
/// by its owner only (the bytes are often decrypted Secret data). An existing file is refused
/// unless `force`.
pub(crate) fn write_output(path: Option<&Path>, bytes: &[u8], force: bool) -> Result<(), CliError> {
    match path {
        Some(p) if p != Path::new("-") => {
            atrest::secret::file::write_new(p, bytes, force).map_err(|e| {
                let name = p.display().to_string();
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    CliError::usage(format!("{name} exists"))
                        .advice("pass --force to replace it, or choose another --out FILE")
                } else {
                    CliError::io(&name, e)
                }
            })
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|()| out.flush())
                .map_err(|e| CliError::io("standard output", e))
        }
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub(crate) fn progress(verb: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(&format!(
        "{verb} {{bar:40}} {{pos}}/{{len}} entries ({{rate}}, eta {{eta}})"
    ))
    .map(|style| {
        // Whole entries a second (indicatif's own {per_sec} prints `2,403.9239/s`).
        style.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            },
        )
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// `yes`/`no`.
pub(crate) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `1 entry`, `2 entries`: a count with its noun.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_22_11_control_characters_are_escaped_visibly() {
        assert_eq!(
            escape_controls("/registry/secrets/a/\u{1b}[31mred\r\u{9b}2J\u{7}"),
            "/registry/secrets/a/\\u{1b}[31mred\\r\\u{9b}2J\\u{7}"
        );
        assert!(matches!(
            escape_controls("line one\n\tété ✓"),
            std::borrow::Cow::Borrowed("line one\n\tété ✓")
        ));
    }
}
