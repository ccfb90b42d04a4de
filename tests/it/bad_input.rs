//! The bad-input corpus (`tests/bad-input/`): every case in `cases.yaml` is run through the
//! built binary, in that directory, and must end with its exit status and an error message that
//! names the problem — never a panic, never a secret. See `tests/bad-input/README.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;

/// One case of `cases.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Unique, kebab-case; also the name of a generated input.
    name: String,
    /// What the case is about (for the reader; printed on failure).
    about: String,
    /// Arguments after `atrest`. `{tmp}` is the case's scratch directory, `{input}` the
    /// generated input (see `make`).
    args: Vec<String>,
    /// A file fed to standard input (default: none).
    #[serde(default)]
    stdin: Option<String>,
    /// An input built at run time (large or derived files that are not committed).
    #[serde(default)]
    make: Option<Make>,
    /// The expected exit status.
    exit: i32,
    /// Each must appear in standard error.
    #[serde(default)]
    stderr: Vec<String>,
    /// Each must appear in standard output.
    #[serde(default)]
    stdout: Vec<String>,
    /// Standard output must be empty (no partial plaintext, no half report).
    #[serde(default)]
    stdout_empty: bool,
    /// Files (relative to `{tmp}`) that must not exist afterwards.
    #[serde(default)]
    absent: Vec<String>,
}

/// A generated input, written to `{tmp}/input` before the case runs: exactly one of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Make {
    #[serde(default)]
    repeat: Option<Repeat>,
    #[serde(default)]
    snapshot: Option<SnapshotCopy>,
}

/// `head`, then `line` repeated `times` times.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Repeat {
    #[serde(default)]
    head: String,
    line: String,
    times: usize,
}

/// A copy of a snapshot file, then each edit in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotCopy {
    from: String,
    edits: Vec<Edit>,
}

/// One edit of a copied snapshot: exactly one of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Edit {
    /// Keep the first n bytes.
    #[serde(default)]
    truncate: Option<usize>,
    /// Zero `len` bytes at `at`.
    #[serde(default)]
    zero: Option<Span>,
    /// XOR the byte at `at` with `with`.
    #[serde(default)]
    xor: Option<Xor>,
    /// Write little-endian u32 `value` at `at`.
    #[serde(default)]
    u32: Option<U32>,
    /// Recompute the bbolt meta checksum of the meta page at byte offset `at`.
    #[serde(default)]
    fix_meta: Option<At>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Span {
    at: usize,
    len: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Xor {
    at: usize,
    with: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct U32 {
    at: usize,
    value: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct At {
    at: usize,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-input")
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn make_input(make: &Make, out: &Path) {
    match make {
        Make {
            repeat: Some(Repeat { head, line, times }),
            snapshot: None,
        } => {
            let mut text = head.clone();
            text.reserve(line.len() * times);
            for _ in 0..*times {
                text.push_str(line);
            }
            std::fs::write(out, text).unwrap();
        }
        Make {
            repeat: None,
            snapshot: Some(SnapshotCopy { from, edits }),
        } => {
            let mut bytes = std::fs::read(corpus_dir().join(from)).unwrap();
            for edit in edits {
                match edit {
                    Edit {
                        truncate: Some(n), ..
                    } => bytes.truncate(*n),
                    Edit {
                        zero: Some(Span { at, len }),
                        ..
                    } => bytes[*at..at + len].fill(0),
                    Edit {
                        xor: Some(Xor { at, with }),
                        ..
                    } => bytes[*at] ^= with,
                    Edit {
                        u32: Some(U32 { at, value }),
                        ..
                    } => bytes[*at..at + 4].copy_from_slice(&value.to_le_bytes()),
                    Edit {
                        fix_meta: Some(At { at }),
                        ..
                    } => {
                        // Page header (16 bytes), then the meta struct: its checksum covers
                        // the 56 bytes before it.
                        let sum = fnv1a64(&bytes[at + 16..at + 72]);
                        bytes[at + 72..at + 80].copy_from_slice(&sum.to_le_bytes());
                    }
                    _ => panic!("an edit names no operation: {edit:?}"),
                }
            }
            std::fs::write(out, bytes).unwrap();
        }
        _ => panic!("make names exactly one of repeat or snapshot: {make:?}"),
    }
}

/// Strings that must never be printed: every `secret:` value of the corpus' configs and of the
/// example config, and the plaintext data of the corpus' values and the example snapshot.
fn secrets() -> BTreeSet<String> {
    let mut out: BTreeSet<String> = ["mydata", "s3cr3t-"].map(str::to_owned).into();
    let mut files = vec![
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/encryption-config.yaml"),
        corpus_dir().join("../data/configs/invalid"),
    ];
    files.push(corpus_dir().join("configs"));
    let mut stack = files;
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
            continue;
        }
        let is_config = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !is_config {
            continue;
        }
        for line in text.lines() {
            if let Some((_, v)) = line.split_once("secret:") {
                let v = v.trim().trim_matches(['"', '\'']);
                // Short or empty values are test noise ("", "abc"), not key material.
                if v.len() >= 16 {
                    out.insert(v.to_owned());
                }
            }
        }
    }
    out
}

fn run_case(case: &Case, secrets: &BTreeSet<String>) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    if let Some(make) = &case.make {
        make_input(make, &input);
    }
    let args: Vec<String> = case
        .args
        .iter()
        .map(|a| {
            a.replace("{input}", &input.to_string_lossy())
                .replace("{tmp}", &tmp.path().to_string_lossy())
        })
        .collect();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_atrest"));
    cmd.args(&args)
        .current_dir(corpus_dir())
        .env_remove("RUST_BACKTRACE")
        .env_remove("ETCDCTL_ENDPOINTS")
        .env("NO_COLOR", "1")
        .stdin(match &case.stdin {
            Some(file) => Stdio::from(std::fs::File::open(corpus_dir().join(file)).unwrap()),
            None => Stdio::null(),
        });
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if out.status.code() != Some(case.exit) {
        problems.push(format!(
            "exit status {:?}, expected {}",
            out.status.code(),
            case.exit
        ));
    }
    for text in [&stdout, &stderr] {
        for bad in ["panicked", "RUST_BACKTRACE", "stack overflow"] {
            if text.contains(bad) {
                problems.push(format!("the output contains {bad:?}"));
            }
        }
        for secret in secrets {
            if text.contains(secret.as_str()) {
                problems.push(format!("the output contains the secret {secret:?}"));
            }
        }
    }
    for want in &case.stderr {
        if !stderr.contains(want.as_str()) {
            problems.push(format!("stderr lacks {want:?}"));
        }
    }
    for want in &case.stdout {
        if !stdout.contains(want.as_str()) {
            problems.push(format!("stdout lacks {want:?}"));
        }
    }
    if case.stdout_empty && !out.stdout.is_empty() {
        problems.push("stdout is not empty".to_owned());
    }
    if case.exit >= 2 && case.stderr.is_empty() {
        problems.push("a failing case must name the expected message (stderr)".to_owned());
    }
    if case.exit == 1 && case.stderr.is_empty() && case.stdout.is_empty() {
        problems.push("a case with findings must name what is found (stdout)".to_owned());
    }
    for file in &case.absent {
        if tmp.path().join(file).exists() {
            problems.push(format!("{file} exists afterwards"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "case {} ({}):\n  args: {:?}\n  {}\n  --- stdout:\n{}\n  --- stderr:\n{}",
            case.name,
            case.about,
            args,
            problems.join("\n  "),
            stdout.chars().take(2000).collect::<String>(),
            stderr.chars().take(2000).collect::<String>()
        ))
    }
}

#[test]
fn every_bad_input_case_fails_cleanly_with_its_message() {
    let text = std::fs::read_to_string(corpus_dir().join("cases.yaml")).unwrap();
    let cases: Vec<Case> = serde_norway::from_str(&text).unwrap();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    let secrets = secrets();
    assert!(secrets.len() >= 5, "{secrets:?}");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(c, &secrets).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_committed_input_is_used_by_a_case() {
    let text = std::fs::read_to_string(corpus_dir().join("cases.yaml")).unwrap();
    for sub in ["configs", "values", "snapshots"] {
        for e in std::fs::read_dir(corpus_dir().join(sub)).unwrap() {
            let name = format!("{sub}/{}", e.unwrap().file_name().to_string_lossy());
            assert!(text.contains(&name), "{name} is not used by any case");
        }
    }
}
