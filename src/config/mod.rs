//! EncryptionConfiguration: the model, kube-apiserver's validation, generation and writing.
//!
//! [`Config::load`] and [`Config::from_yaml`] do what kube-apiserver does at start-up with
//! `--encryption-provider-config`: decode strictly (unknown or duplicate fields are errors),
//! check `apiVersion`/`kind`, validate with the same rules and messages
//! (`apiserver/pkg/apis/apiserver/validation/validation_encryption.go`), then make the checks it
//! makes while building transformers (a rule masked by an earlier wildcard is an error,
//! `apiserver/pkg/server/options/encryptionconfig/config.go`). A [`Config`] therefore holds only
//! what kube-apiserver would start with; [`Config::warnings`] lists what is valid but weak.
//!
//! No error, warning or `Debug` output carries key material.

mod generate;
mod go;
mod model;
mod rotate;
mod validate;
mod warnings;
mod write;

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

use serde::Deserialize;
use thiserror::Error;

pub use crate::secret::SecretString;
pub use generate::{generate, to_yaml, NewConfig, NewKms, NewProvider};
pub use go::{decode_secret, encode_secret, SecretDecodeError};
pub use model::{
    EncryptionConfiguration, IdentityConfiguration, Key, KeysConfiguration, KmsConfiguration,
    ProviderConfiguration, ResourceConfiguration,
};
pub use rotate::{
    add_key, add_kms, keep_markers, pending_adds, pending_marker, promote, prune, AddedKey,
    RotateError,
};
pub use validate::{FieldError, FieldErrorType, ValidationErrors};
pub use warnings::Warning;
pub use write::write_atomic;

use crate::secret::KeyMaterial;
use go::go_quote;

/// The `apiVersion` of an EncryptionConfiguration.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// The `kind` of an EncryptionConfiguration.
pub const KIND: &str = "EncryptionConfiguration";
/// The legacy `apiVersion` kube-apiserver still accepts (with [`LEGACY_KIND`]).
pub const LEGACY_API_VERSION: &str = "v1";
/// The legacy `kind` kube-apiserver still accepts (with [`LEGACY_API_VERSION`]).
pub const LEGACY_KIND: &str = "EncryptionConfig";

/// A config that parsed and passed every check kube-apiserver makes at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    model: EncryptionConfiguration,
    warnings: Vec<Warning>,
}

/// The largest config file [`Config::load`] reads: 4 MiB. kube-apiserver sets no limit; a real
/// EncryptionConfiguration is a few KiB, and a bigger file is a mistake (the wrong path).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Most resource names (`resources[*].resources[*]`) a config may list in all. Real ones list
/// a few dozen; kube-apiserver has no limit, but every name costs validation and lookups.
pub const MAX_RESOURCE_NAMES: usize = 10_000;

/// Most YAML aliases (`*name`) a config may use. Each alias repeats what its anchor holds, so
/// a small file could otherwise expand to a huge one (go-yaml, which kube-apiserver uses,
/// refuses "excessive aliasing" too). Real configs use none or a few.
pub const MAX_YAML_ALIASES: usize = 100;

/// Why a config was refused, read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "error reading encryption provider configuration file {}",
        quote_path(path)
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`]: not an EncryptionConfiguration anyone
    /// wrote (real ones are a few KiB), and not worth parsing.
    #[error(
        "encryption provider configuration file {} is larger than {} bytes; refusing to parse it",
        quote_path(path),
        MAX_CONFIG_BYTES
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The config lists more than [`MAX_RESOURCE_NAMES`] resource names in all.
    #[error(
        "resources: {names} resource names in all, more than atrest's limit of {}",
        MAX_RESOURCE_NAMES
    )]
    TooManyResourceNames {
        /// How many the model lists.
        names: usize,
    },
    /// The file is empty (kube-apiserver refuses a zero-byte file).
    #[error("encryption provider configuration file {} is empty", quote_path(path))]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The text is not a well-formed EncryptionConfiguration (YAML syntax, an unknown or
    /// duplicate field, a wrong type). The message keeps the field path and line/column; values
    /// that might be secrets are removed from it.
    #[error("{}", parse_message(path.as_deref(), message))]
    Parse {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// What the decoder said.
        message: String,
    },
    /// `apiVersion`/`kind` is not `apiserver.config.k8s.io/v1` `EncryptionConfiguration` (or the
    /// legacy `v1` `EncryptionConfig`).
    #[error("{}", kind_message(api_version, kind))]
    Kind {
        /// The `apiVersion` found (empty when missing).
        api_version: String,
        /// The `kind` found (empty when missing).
        kind: String,
    },
    /// Validation failed: kube-apiserver's aggregate message. The individual errors are in
    /// [`ValidationErrors::errors`].
    #[error(transparent)]
    Invalid(ValidationErrors),
    /// A rule comes after a wildcard rule that already covers it, so it could never apply.
    #[error(
        "resource {} is masked by earlier rule {}",
        go_quote(resource),
        go_quote(rule)
    )]
    Masked {
        /// The masked resource, as kube-apiserver prints it (`secrets`, `*.`).
        resource: String,
        /// The earlier wildcard (`*.`, `*.apps`, `*.*`).
        rule: String,
    },
    /// The target file exists and overwriting was not asked for.
    #[error("{} already exists; refusing to overwrite it", quote_path(path))]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Writing the file failed.
    #[error("error writing {}", quote_path(path))]
    Write {
        /// The file (or its directory, or the temporary file beside it).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model could not be turned into YAML.
    #[error("error encoding the encryption configuration as YAML: {message}")]
    Serialize {
        /// What the encoder said.
        message: String,
    },
}

fn quote_path(path: &Path) -> String {
    go_quote(&path.display().to_string())
}

fn parse_message(path: Option<&Path>, message: &str) -> String {
    match path {
        Some(p) => format!(
            "error decoding encryption provider configuration file {}: {message}",
            quote_path(p)
        ),
        None => format!("error decoding encryption provider configuration: {message}"),
    }
}

/// The YAML scanner's "cannot start any token" at a tab does not say it is a tab.
fn tab_hint(e: &serde_norway::Error, text: &str) -> &'static str {
    let at_tab = e.location().is_some_and(|l| {
        text.lines()
            .nth(l.line().saturating_sub(1))
            .and_then(|line| line.chars().nth(l.column().saturating_sub(1)))
            == Some('\t')
    });
    if at_tab {
        " (a tab character: YAML indents with spaces only)"
    } else {
        ""
    }
}

/// kube-apiserver's decoder wording. Its full text adds `in scheme "<Go source location>"`,
/// which means nothing outside its source tree, and for a missing kind it echoes the whole
/// document (keys included); both are left out here.
fn kind_message(api_version: &str, kind: &str) -> String {
    if kind.is_empty() {
        "Object 'Kind' is missing".to_owned()
    } else {
        format!(
            "no kind {} is registered for version {}",
            go_quote(kind),
            go_quote(api_version)
        )
    }
}

/// Just `apiVersion` and `kind`, read first (as kube-apiserver's decoder does) so that a file of
/// another kind is reported as such rather than as a pile of unknown fields.
#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

fn check_kind(api_version: &str, kind: &str) -> Result<(), ConfigError> {
    match (api_version, kind) {
        (API_VERSION, KIND) | (LEGACY_API_VERSION, LEGACY_KIND) => Ok(()),
        _ => Err(ConfigError::Kind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        }),
    }
}

impl Config {
    /// Parses YAML or JSON text and validates it.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, None)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let mut bytes = read_at_most(path, MAX_CONFIG_BYTES).map_err(read_err)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            bytes.zeroize();
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        if bytes.is_empty() {
            return Err(ConfigError::Empty {
                path: path.to_owned(),
            });
        }
        let bytes = zeroize::Zeroizing::new(bytes);
        let text = std::str::from_utf8(&bytes).map_err(|e| ConfigError::Parse {
            path: Some(path.to_owned()),
            message: format!(
                "the file is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        })?;
        Self::parse(text, Some(path))
    }

    fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(line) = flow_too_deep(text) {
            return Err(ConfigError::Parse {
                path: path.map(Path::to_owned),
                message: format!(
                    "flow collections ([ or {{) nest more than {MAX_FLOW_DEPTH} levels deep \
                     at line {line}"
                ),
            });
        }
        let aliases = yaml_aliases(text);
        if aliases > MAX_YAML_ALIASES {
            return Err(ConfigError::Parse {
                path: path.map(Path::to_owned),
                message: format!(
                    "excessive aliasing: the document uses {aliases} YAML aliases (*name), \
                     more than atrest's limit of {MAX_YAML_ALIASES}"
                ),
            });
        }
        if let Ok(meta) = serde_norway::from_str::<TypeMeta>(text) {
            check_kind(
                meta.api_version.as_deref().unwrap_or_default(),
                meta.kind.as_deref().unwrap_or_default(),
            )?;
        }
        model::de::reset_resource_names();
        let model: EncryptionConfiguration =
            serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.map(Path::to_owned),
                message: redact_decode_message(&e.to_string(), text) + tab_hint(&e, text),
            })?;
        Self::from_model(model)
    }

    /// Checks a model built in code (or edited, see [`add_key`]) exactly as a file is checked.
    pub fn from_model(model: EncryptionConfiguration) -> Result<Config, ConfigError> {
        check_kind(&model.api_version, &model.kind)?;
        let names: usize = model.resources.iter().map(|r| r.resources.len()).sum();
        if names > MAX_RESOURCE_NAMES {
            return Err(ConfigError::TooManyResourceNames { names });
        }
        validate::validate(&model, false).map_err(ConfigError::Invalid)?;
        check_masking(&model)?;
        let warnings = warnings::warnings(&model);
        Ok(Config { model, warnings })
    }

    /// The validated model.
    pub fn model(&self) -> &EncryptionConfiguration {
        &self.model
    }

    /// Valid but weak choices in this config (see [`Warning`]), in file order.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The providers that apply to `group`/`resource`, in read order, as kube-apiserver
    /// resolves them (exact name, then `*.<group>`, then `*.*`; the same exact resource in
    /// several entries concatenates their lists). Each comes with its `(resources index,
    /// providers index)` in the file. Empty: the resource is not covered (stored unencrypted).
    pub fn providers_for(
        &self,
        group: &str,
        resource: &str,
    ) -> Vec<((usize, usize), &ProviderConfiguration)> {
        for wanted in [(group, resource), (group, "*"), ("*", "*")] {
            let found = self.providers_matching(wanted);
            if !found.is_empty() {
                return found;
            }
        }
        Vec::new()
    }

    /// Every entry's providers, once per resource name in it that parses to `wanted`, in
    /// entry order (kube-apiserver appends each entry's list to the map slot of every resource
    /// it names).
    fn providers_matching(
        &self,
        wanted: (&str, &str),
    ) -> Vec<((usize, usize), &ProviderConfiguration)> {
        let mut out = Vec::new();
        for (i, entry) in self.model.resources.iter().enumerate() {
            for name in &entry.resources {
                if parse_group_resource(name) == wanted {
                    out.extend(entry.providers.iter().enumerate().map(|(j, p)| ((i, j), p)));
                }
            }
        }
        out
    }
}

/// Splits a resource name as Go's `schema.ParseGroupResource` does: at the **first** `.`,
/// resource before it, group after it; with no `.`, the core group `""`. Returns
/// `(group, resource)`: `secrets` and `secrets.` → `("", "secrets")`, `*.` → `("", "*")`,
/// `*.*` → `("*", "*")`, `deployments.apps` → `("apps", "deployments")`.
pub fn parse_group_resource(name: &str) -> (&str, &str) {
    match name.split_once('.') {
        Some((resource, group)) => (group, resource),
        None => ("", name),
    }
}

/// Parses a timeout as etcdctl does (Go's `time.ParseDuration`: `2s`, `500ms`, `1m30s`), or a
/// plain number of seconds (`5`). Zero and negative durations are refused.
pub fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let nanos = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>()
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| format!("{text} seconds is too long"))?
    } else {
        go::duration::parse(text)?
    };
    if nanos <= 0 {
        return Err(format!(
            "{text} is not a positive duration (write it as 2s, 500ms or 1m)"
        ));
    }
    Ok(std::time::Duration::from_nanos(nanos.unsigned_abs()))
}

/// How kube-apiserver prints a group/resource in the masking error (`grYAMLString`).
fn gr_yaml_string((group, resource): (&str, &str)) -> String {
    match (group, resource) {
        ("", "*") => "*.".to_owned(),
        ("", r) => r.to_owned(),
        (g, r) => format!("{r}.{g}"),
    }
}

/// kube-apiserver's masking check, made while building transformers: entries in order, each
/// resource refused if an earlier one (including one earlier in the same entry) registered
/// `*.<its group>` or `*.*`.
fn check_masking(model: &EncryptionConfiguration) -> Result<(), ConfigError> {
    let mut registered: HashSet<(&str, &str)> = HashSet::new();
    for entry in &model.resources {
        for name in &entry.resources {
            let gr = parse_group_resource(name);
            for rule in [(gr.0, "*"), ("*", "*")] {
                if registered.contains(&rule) {
                    return Err(ConfigError::Masked {
                        resource: gr_yaml_string(gr),
                        rule: gr_yaml_string(rule),
                    });
                }
            }
            registered.insert(gr);
        }
    }
    Ok(())
}

/// Reads a file, but no more than `limit + 1` bytes: a result longer than `limit` means the
/// file is too large, found without reading all of it.
///
/// The buffer is sized from the file's length first, so that (unless the file grows while it
/// is read) it never reallocates: a reallocation would leave a copy of the keys in freed memory.
pub(crate) fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let expected = file.metadata().map_or(0, |m| m.len()).min(limit);
    // One byte more than expected, so read_to_end sees the end without growing.
    let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0) + 1);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// How many YAML aliases (`*name` where a node starts) `text` uses. Quoted scalars and comments
/// are skipped as in [`flow_too_deep`]; a `*` inside a plain scalar after a space may be counted
/// too, which errs on the side of refusing.
pub(crate) fn yaml_aliases(text: &str) -> usize {
    let mut count = 0;
    let mut quote: Option<u8> = None;
    let mut prev = b'\n';
    let mut bytes = text.bytes().peekable();
    while let Some(b) = bytes.next() {
        match (quote, b) {
            (Some(b'"'), b'\\') => {
                bytes.next();
                prev = b'a';
                continue;
            }
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') if prev.is_ascii_whitespace() || b"[{,:".contains(&prev) => {
                quote = Some(b);
            }
            (None, b'#') if prev.is_ascii_whitespace() => {
                for c in bytes.by_ref() {
                    if c == b'\n' {
                        break;
                    }
                }
                prev = b'\n';
                continue;
            }
            (None, b'*')
                if (prev.is_ascii_whitespace() || b"[{,:-?".contains(&prev))
                    && bytes
                        .peek()
                        .is_some_and(|c| !c.is_ascii_whitespace() && !b"[]{},".contains(c)) =>
            {
                count += 1;
            }
            _ => {}
        }
        prev = b;
    }
    count
}

/// Deepest nesting of YAML flow collections accepted. A real config nests a handful; the YAML
/// scanner's cost per token grows with the depth (20,000 nested `[` took 3 s to refuse in a
/// debug build, 100,000 took 80 s), so deeper files are refused before parsing.
pub(crate) const MAX_FLOW_DEPTH: usize = 64;

/// The line at which flow collections (`[`, `{`) nest deeper than [`MAX_FLOW_DEPTH`], if they
/// do. Brackets inside quoted scalars and comments do not count; a quote or `#` counts as
/// one only where YAML would read it so (after whitespace or a flow indicator).
pub(crate) fn flow_too_deep(text: &str) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut quote: Option<u8> = None;
    let mut prev = b'\n';
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match (quote, b) {
            (Some(b'"'), b'\\') => {
                if bytes.next() == Some(b'\n') {
                    line += 1;
                }
                prev = b'a';
                continue;
            }
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') if prev.is_ascii_whitespace() || b"[{,:".contains(&prev) => {
                quote = Some(b);
            }
            (None, b'#') if prev.is_ascii_whitespace() => {
                // A comment: skip to the end of the line.
                for c in bytes.by_ref() {
                    if c == b'\n' {
                        line += 1;
                        break;
                    }
                }
                prev = b'\n';
                continue;
            }
            (None, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(line);
                }
            }
            (None, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        if b == b'\n' {
            line += 1;
        }
        prev = b;
    }
    None
}

/// Removes values from a decoder message. serde's type errors print the offending value
/// (`invalid type: string "…", expected a sequence`), which may be a key written in the wrong
/// place; this keeps only its type. As a second line of defence, any `secret:` value of the
/// document that still appears in the message is replaced by `REDACTED`.
fn redact_decode_message(message: &str, text: &str) -> String {
    let mut out = message.to_owned();
    for marker in ["invalid type: ", "invalid value: "] {
        if let Some(start) = out.find(marker) {
            let from = start + marker.len();
            if let Some(rel_end) = out[from..].rfind(", expected ") {
                let unexpected = &out[from..from + rel_end];
                if let Some(cut) = unexpected.find(['"', '`']) {
                    let kept = unexpected[..cut].trim_end().to_owned();
                    out.replace_range(from..from + rel_end, &kept);
                }
            }
        }
    }
    for line in text.lines() {
        let trimmed = line.trim_start().trim_start_matches("- ").trim_start();
        let Some(rest) = trimmed
            .strip_prefix("secret:")
            .or_else(|| trimmed.strip_prefix("\"secret\":"))
        else {
            continue;
        };
        let value = rest.trim().trim_end_matches(',').trim_matches(['"', '\'']);
        if value.len() >= 4 && out.contains(value) {
            out = out.replace(value, "REDACTED");
        }
    }
    out
}

impl Key {
    /// The decoded key material (the config was validated, so the secret decodes; a key that
    /// does not decode gives empty material, which every keyed provider refuses).
    pub fn material(&self) -> KeyMaterial {
        match decode_secret(self.secret.expose_secret()) {
            Ok(mut bytes) => KeyMaterial::new(std::mem::take(&mut *bytes)),
            Err(_) => KeyMaterial::new(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests;
