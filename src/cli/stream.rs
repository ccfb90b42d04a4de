//! Reports that stream: JSON whose `entries` are written as they come, and tables that keep
//! only the rows they print.
//!
//! A report's JSON is `head` fields, then `entries`, then the rest: [`JsonEntries`] writes the
//! head and each entry as soon as it has them, and at the end the rest of the report, taken
//! from the report serialised without entries (whose text starts with the head's). The
//! document is the one `serde_json::to_writer_pretty` would write for the whole report with
//! its entries in place, so nothing per entry is held in memory.
//!
//! A document whose shape is known only at the end (`config rotate`: the stage's result, or
//! its refusal) keeps its entries in a [`Spool`] on disk until then.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Stdout, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde_json::ser::Formatter;

use super::CliError;

/// Pretty JSON of `value`.
fn pretty<T: Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| CliError::internal(format!("cannot render JSON: {e}")))
}

/// Writes `value` as an element of an array that is itself a field of the report: what
/// `to_writer_pretty` writes for it there, two levels in (four spaces), straight into `out`
/// without a copy of its text.
fn write_element<W: Write, T: Serialize>(out: &mut W, value: &T) -> std::io::Result<()> {
    // Into the report's object and its array: the element's lines get their indentation.
    let formatter = Pretty {
        level: 2,
        has_value: false,
    };
    out.write_all(b"    ")?;
    value
        .serialize(&mut serde_json::Serializer::with_formatter(out, formatter))
        .map_err(std::io::Error::other)
}

/// serde_json's `PrettyFormatter` with its default two-space indent, writing a new line and its
/// indentation in one call: the same bytes, for less work per field of a streamed entry.
struct Pretty {
    level: usize,
    has_value: bool,
}

/// A comma, a new line and the deepest indentation [`Pretty`] writes in one piece.
const LINE: &[u8] = b",\n                                                                ";

impl Pretty {
    /// A new line (after a comma unless `first`) indented to the current level.
    fn line<W: ?Sized + Write>(&self, out: &mut W, first: bool) -> std::io::Result<()> {
        let start = usize::from(first);
        match LINE.get(start..2 + 2 * self.level) {
            Some(text) => out.write_all(text),
            None => {
                out.write_all(&LINE[start..2])?;
                (0..self.level).try_for_each(|_| out.write_all(b"  "))
            }
        }
    }

    fn close<W: ?Sized + Write>(&mut self, out: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.line(out, true)?;
        }
        out.write_all(bracket)
    }
}

impl Formatter for Pretty {
    fn begin_array<W: ?Sized + Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        out.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.close(out, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.line(out, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _out: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        out.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.close(out, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.line(out, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        out.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _out: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// Streams a report's `entries` to standard output (see the module docs).
pub(crate) struct JsonEntries {
    state: Mutex<State>,
}

struct State {
    out: BufWriter<Stdout>,
    /// The head's JSON without its closing `\n}`.
    head: String,
    /// The name of the array the entries go in.
    field: &'static str,
    written: u64,
    error: Option<std::io::Error>,
}

impl JsonEntries {
    /// A stream whose document starts with the fields of `head` (an object), then `entries`.
    pub(crate) fn new<T: Serialize>(head: &T) -> Result<JsonEntries, CliError> {
        JsonEntries::named(head, "entries")
    }

    /// A stream whose document starts with the fields of `head`, then the array `field`.
    pub(crate) fn named<T: Serialize>(
        head: &T,
        field: &'static str,
    ) -> Result<JsonEntries, CliError> {
        let mut head = pretty(head)?;
        head.truncate(head.len().saturating_sub(2));
        Ok(JsonEntries {
            state: Mutex::new(State {
                out: BufWriter::with_capacity(64 * 1024, std::io::stdout()),
                head,
                field,
                written: 0,
                error: None,
            }),
        })
    }

    /// Writes one entry (the head first, before the first one). A write error is kept for
    /// [`JsonEntries::finish`]; later entries are dropped.
    pub(crate) fn entry<T: Serialize>(&self, entry: &T) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut *s;
        if s.error.is_some() {
            return;
        }
        let written = if s.written == 0 {
            write!(s.out, "{},\n  \"{}\": [\n", s.head, s.field)
        } else {
            s.out.write_all(b",\n")
        }
        .and_then(|()| write_element(&mut s.out, entry));
        s.written += 1;
        if let Err(e) = written {
            s.error = Some(e);
        }
    }

    /// Writes the rest of the document: `report` (serialised without entries, starting with the
    /// head's fields) after the entries.
    pub(crate) fn finish<T: Serialize>(self, report: &T) -> Result<(), CliError> {
        let mut s = self
            .state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let full = pretty(report)?;
        let Some(rest) = full.strip_prefix(s.head.as_str()) else {
            return Err(CliError::internal(
                "the report does not start with the fields written before its entries",
            ));
        };
        let text = if s.written == 0 {
            format!("{},\n  \"{}\": []{rest}\n", s.head, s.field)
        } else {
            format!("\n  ]{rest}\n")
        };
        if let Some(e) = s.error.take() {
            return Err(CliError::io("standard output", e));
        }
        s.out
            .write_all(text.as_bytes())
            .and_then(|()| s.out.flush())
            .map_err(|e| CliError::io("standard output", e))
    }
}

/// Strings kept on disk, one JSON string a line, in an unlinked temporary file (mode 0600):
/// for a document that must list every entry but whose shape is known only once they are all
/// seen. Memory stays flat; the disk holds what the document will.
pub(crate) struct Spool {
    state: Mutex<SpoolState>,
}

struct SpoolState {
    file: BufWriter<File>,
    error: Option<std::io::Error>,
}

impl Spool {
    /// An empty spool in the temporary directory (`$TMPDIR`, else `/tmp`).
    pub(crate) fn new() -> Result<Spool, CliError> {
        let file = unlinked_temp().map_err(|e| CliError::io("a temporary file", e))?;
        Ok(Spool {
            state: Mutex::new(SpoolState {
                file: BufWriter::with_capacity(64 * 1024, file),
                error: None,
            }),
        })
    }

    /// Adds one string. A write error is kept for [`Spool::replay`]; later ones are dropped.
    pub(crate) fn push(&self, text: &str) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.error.is_some() {
            return;
        }
        let Ok(mut line) = serde_json::to_string(text) else {
            return;
        };
        line.push('\n');
        if let Err(e) = s.file.write_all(line.as_bytes()) {
            s.error = Some(e);
        }
    }

    /// Writes every string, in the order they came, as entries of `json`.
    pub(crate) fn replay(self, json: &JsonEntries) -> Result<(), CliError> {
        self.drain(|text| json.entry(&text))
    }

    /// Hands back every string, in the order they came.
    fn drain(self, mut each: impl FnMut(String)) -> Result<(), CliError> {
        let s = self
            .state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let err = |e| CliError::io("a temporary file", e);
        if let Some(e) = s.error {
            return Err(err(e));
        }
        let mut file = s.file.into_inner().map_err(|e| err(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(err)?;
        for line in BufReader::new(file).lines() {
            let text: String = serde_json::from_str(&line.map_err(err)?).map_err(|e| {
                CliError::internal(format!("cannot read back a spooled entry: {e}"))
            })?;
            each(text);
        }
        Ok(())
    }
}

/// A new file in the temporary directory, created exclusively (mode 0600) and unlinked at
/// once: it goes away with the process, whatever happens.
fn unlinked_temp() -> std::io::Result<File> {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let mut last = None;
    for n in 0..64u32 {
        let path = dir.join(format!(".atrest-{pid}-{n}.spool"));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()))
}

/// The rows a table lists, at most `limit` per group; the rest are only counted.
pub(crate) struct Bounded<K: Ord, T> {
    limit: usize,
    rows: BTreeMap<K, Vec<T>>,
    more: BTreeMap<K, u64>,
}

impl<K: Ord + Clone, T> Bounded<K, T> {
    /// Keeps up to `limit` rows per group.
    pub(crate) fn new(limit: usize) -> Self {
        Bounded {
            limit,
            rows: BTreeMap::new(),
            more: BTreeMap::new(),
        }
    }

    /// One more row of `group` (kept while the group has fewer than the limit).
    pub(crate) fn push(&mut self, group: &K, row: T) {
        match self.rows.get_mut(group) {
            Some(rows) if rows.len() >= self.limit => {
                *self.more.entry(group.clone()).or_default() += 1;
            }
            Some(rows) => rows.push(row),
            None => {
                self.rows.insert(group.clone(), vec![row]);
            }
        }
    }

    /// The kept rows by group, in group order.
    pub(crate) fn rows(&self) -> &BTreeMap<K, Vec<T>> {
        &self.rows
    }

    /// Rows counted but not kept, by group.
    pub(crate) fn more(&self) -> &BTreeMap<K, u64> {
        &self.more
    }

    /// Every row seen (kept or not).
    pub(crate) fn total(&self) -> u64 {
        self.rows.values().map(|r| r.len() as u64).sum::<u64>() + self.more.values().sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_keeps_the_first_rows_of_each_group_and_counts_the_rest() {
        let mut b = Bounded::new(2);
        for i in 0..5 {
            b.push(&"a", i);
        }
        b.push(&"b", 9);
        assert_eq!(b.rows()[&"a"], [0, 1]);
        assert_eq!(b.more()[&"a"], 3);
        assert_eq!(b.total(), 6);
    }

    #[test]
    fn an_element_is_written_as_the_whole_report_would_write_it() {
        #[derive(Serialize)]
        struct Entry {
            key: &'static str,
            size: u64,
            tags: Vec<u8>,
            none: Vec<u8>,
            inner: BTreeMap<&'static str, Option<bool>>,
        }
        #[derive(Serialize)]
        struct Report {
            head: u8,
            entries: Vec<Entry>,
        }
        let entry = || Entry {
            key: "/registry/secrets/a\"b\n",
            size: 7,
            tags: vec![1, 2],
            none: Vec::new(),
            inner: BTreeMap::from([("x", Some(true)), ("y", None)]),
        };
        let whole = serde_json::to_string_pretty(&Report {
            head: 1,
            entries: vec![entry(), entry()],
        })
        .unwrap();
        let mut streamed = b"{\n  \"head\": 1,\n  \"entries\": [\n".to_vec();
        write_element(&mut streamed, &entry()).unwrap();
        streamed.extend_from_slice(b",\n");
        write_element(&mut streamed, &entry()).unwrap();
        streamed.extend_from_slice(b"\n  ]\n}");
        assert_eq!(String::from_utf8(streamed).unwrap(), whole);
    }

    #[test]
    fn pretty_writes_what_serde_json_pretty_writes_at_any_depth() {
        let mut deep = serde_json::json!({"leaf": [1, "two\n", null, {}, []]});
        for level in 0..40 {
            deep = serde_json::json!({ "level": level, "inner": [deep.clone(), {"k": true}] });
        }
        let mut ours = Vec::new();
        let formatter = Pretty {
            level: 0,
            has_value: false,
        };
        deep.serialize(&mut serde_json::Serializer::with_formatter(
            &mut ours, formatter,
        ))
        .unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            serde_json::to_string_pretty(&deep).unwrap()
        );
    }

    #[test]
    fn a_spool_gives_back_every_string_in_order() {
        let spool = Spool::new().unwrap();
        let texts = ["/registry/a", "quote \" and \n newline", "\u{1b}[31m"];
        for t in texts {
            spool.push(t);
        }
        let mut back = Vec::new();
        spool.drain(|t| back.push(t)).unwrap();
        assert_eq!(back, texts);
    }
}
