//! One stage of the documented key rotation on a config file, with its guards:
//! `add` a key second, `promote` it to the write key, `prune` the keys nothing needs any more.
//!
//! ```text
//! add ─▶ (every kube-apiserver reloads) ─▶ promote ─▶ (reload) ─▶ rewrite ─▶ prune ─▶ (reload)
//! ```
//!
//! Guards, all before the file is touched:
//! - `add` leaves a "not promoted yet" marker at the top of the file; `prune` refuses to remove
//!   such a key (unless `discard_new`, which undoes the add);
//! - `prune` reads the store: it refuses while any entry that the config reads now could not be
//!   read after the prune ([`crate::audit::prune_check`]), and names the undecryptable entries
//!   that the removed keys make lost for good. Both are counted, the first
//!   [`crate::audit::PRUNE_SAMPLE`] of each kept, and every one handed to a
//!   [`PruneObserver`] as the guard finds it.
//!
//! - `promote` and `prune` wait for every running kube-apiserver to have loaded the current file
//!   (the apiserver gate, [`crate::apiserver::gate`]).
//!
//! The edited file is validated as kube-apiserver would load it, the previous file is kept as
//! `FILE.bak.N` (mode 0600, N counting up), and the new one replaces it atomically.

use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::audit::{prune_check, PruneCheck, PruneObserver, ReportEntry};
use crate::config::{self, Config, ConfigError, NewKms, NewProvider};
use crate::provider::Provider;
use crate::resource::{ResourceChains, Target};
use crate::store::{Store, StoreError};
use crate::transform::{Chain, KmsOptions, TransformError};

/// The stage to perform.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Stage {
    /// Add a new key second (read, not yet written with).
    Add {
        /// The new key's name (default: the next free `keyN`).
        key_name: Option<String>,
        /// Its provider (default: the current write provider's, or aescbc).
        provider: Option<NewProvider>,
    },
    /// Add a KMS v2 provider second.
    AddKms(NewKms),
    /// Make a key the write key (default: the key `add` put second).
    Promote {
        /// The key (or KMS provider) to promote.
        key_name: Option<String>,
    },
    /// Remove every key after the write key that nothing stored needs.
    Prune {
        /// Also remove a key `add` added that was never promoted (undo the add).
        discard_new: bool,
    },
}

impl Stage {
    /// The stage's name: `add`, `promote` or `prune`.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Add { .. } | Stage::AddKms(_) => "add",
            Stage::Promote { .. } => "promote",
            Stage::Prune { .. } => "prune",
        }
    }
}

/// Where a rotation applies and what the prune guard reads.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// The resource whose providers are edited (default `secrets`).
    pub resource: String,
    /// Keep the previous file as `FILE.bak.N` (default true).
    pub keep_backup: bool,
    /// prune: the key prefix whose entries must stay readable (read with the resource's chain);
    /// `None`: every resource the config covers, each with its own chain before and after.
    pub prefix: Option<String>,
    /// prune: kube-apiserver's `--etcd-prefix`.
    pub etcd_prefix: String,
    /// promote and prune: the apiserver gate, run just before the file is written: every
    /// kube-apiserver must run the current file (promote: so all can read the key about to
    /// write; prune: so none still writes with a key about to go). `None`: no gate.
    pub apiserver_gate: Option<crate::apiserver::gate::ApiserverGate>,
}

impl Default for RotateOptions {
    fn default() -> Self {
        RotateOptions {
            resource: "secrets".to_owned(),
            keep_backup: true,
            prefix: None,
            etcd_prefix: crate::resource::DEFAULT_ROOT.to_owned(),
            apiserver_gate: None,
        }
    }
}

/// What a stage did: the JSON schema of `atrest config rotate -o json`, which adds `lost` (the
/// keys of the lost entries, streamed: see [`Rotation::lost_count`]) after `removed`. Never key
/// material.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Rotation {
    /// The version of this schema ([`crate::audit::SCHEMA_VERSION`]).
    pub schema_version: crate::audit::SchemaVersion,
    /// The config file.
    pub file: String,
    /// `add`, `promote` or `prune`.
    pub stage: &'static str,
    /// add: the new key; promote: the key made the write key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// prune: the keys removed.
    pub removed: Vec<String>,
    /// prune: entries no key reads that named a removed key (lost with it).
    /// `atrest config rotate -o json` lists the key of every one in `lost`, just before this
    /// field: they are streamed from [`PruneObserver::lost`], not held here.
    pub lost_count: u64,
    /// prune: the first [`crate::audit::PRUNE_SAMPLE`] of those entries, in key order, with the
    /// provider and key they name.
    #[serde(skip)]
    pub lost_sample: Vec<ReportEntry>,
    /// The copy of the previous file, when one was kept.
    pub backup: Option<String>,
    /// What was done, in one sentence.
    pub summary: String,
    /// What to do next.
    pub next: String,
    /// promote and prune: the apiserver gate's outcome (`passed: …` or `skipped: …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_check: Option<String>,
}

/// Why a stage did not run (the file is unchanged).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RotateError {
    /// The config could not be read, or the edited one would not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The edit itself is not possible (no such key, name taken, …).
    #[error("{}: {reason}", .file.display())]
    Edit {
        /// The config file.
        file: PathBuf,
        /// Why.
        reason: config::RotateError,
    },
    /// The config has no chain for the resource (it does not cover it).
    #[error("{}: {reason}", .file.display())]
    Chain {
        /// The config file.
        file: PathBuf,
        /// Why.
        reason: Box<TransformError>,
    },
    /// promote: no key was named and none can be told apart as the one `add` put second.
    #[error("cannot tell which key to promote: there is no second key, or there are both a second local key and a kms provider")]
    NoKeyToPromote,
    /// add: a key an earlier `add` added is not promoted yet; a second one would leave two keys
    /// waiting, and the marker naming only the first.
    #[error("refusing to add: key {name:?} was added and is not promoted yet")]
    AddPending {
        /// The key waiting.
        name: String,
    },
    /// prune: a key `add` added was never promoted, and pruning would remove it.
    #[error(
        "refusing to prune: key {name:?} was added but never promoted, and pruning would remove it"
    )]
    Unpromoted {
        /// The key.
        name: String,
    },
    /// prune: stored entries the config reads now would be unreadable after the prune.
    #[error(
        "refusing to prune: {count} {} of {under} {} still encrypted with keys it would remove",
        if *.count == 1 { "entry" } else { "entries" },
        if *.count == 1 { "is" } else { "are" }
    )]
    Blocked {
        /// What the guard read (a prefix, or "the resources the config covers").
        under: String,
        /// How many entries (every one went to [`PruneObserver::blocked`]).
        count: u64,
        /// The first [`crate::audit::PRUNE_SAMPLE`] of them, in key order.
        sample: Vec<ReportEntry>,
    },
    /// prune: the guard needs a store to read.
    #[error("prune needs a store to check: nothing may still need the keys it removes")]
    NoStore,
    /// prune: the store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// promote and prune: a kube-apiserver has not loaded the current file.
    #[error("refusing to write: {0}")]
    Apiserver(crate::apiserver::gate::GateError),
}

impl RotateError {
    /// Whether this is a refusal of the guards (exit 1) rather than bad input (exit 2) or a
    /// store failure (exit 3).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            RotateError::Unpromoted { .. }
                | RotateError::Blocked { .. }
                | RotateError::AddPending { .. }
        ) || matches!(
            self,
            RotateError::Apiserver(crate::apiserver::gate::GateError::NotLoaded { .. })
        )
    }

    /// What the user can do about it, for `file`.
    pub fn advice(&self, file: &Path) -> String {
        let file = file.display();
        match self {
            RotateError::Config(_) | RotateError::Edit { .. } | RotateError::Chain { .. } => {
                "fix the file and run `atrest config check FILE`".to_owned()
            }
            RotateError::AddPending { name } => format!(
                "promote it first (`atrest config rotate {file} --stage promote --key-name {name}`), \
                 or undo the add (`atrest config rotate {file} --stage prune --discard-new`)"
            ),
            RotateError::NoKeyToPromote => "pass --key-name NAME (the key or kms provider `--stage add` printed), or run `--stage add` first".to_owned(),
            RotateError::Unpromoted { name } => format!(
                "run `atrest config rotate {file} --stage promote --key-name {name}` (then \
                 rewrite), or `atrest config rotate {file} --stage prune --discard-new` to undo \
                 the add"
            ),
            RotateError::Blocked { .. } => {
                format!("re-encrypt them first: atrest rewrite --config {file}")
            }
            RotateError::NoStore => {
                "pass the store flags (--endpoints, --snapshot or --kine-db)".to_owned()
            }
            RotateError::Store(e) => e.advice().to_owned(),
            RotateError::Apiserver(e) => e.advice(),
        }
    }
}

impl From<crate::apiserver::gate::GateError> for RotateError {
    fn from(e: crate::apiserver::gate::GateError) -> Self {
        RotateError::Apiserver(e)
    }
}

/// Performs one stage on `file` (see the module docs). `store` is read by `prune`'s guard,
/// which hands every blocked and every lost entry to `observer` as it finds it (the result and
/// the refusal keep counts and a bounded sample).
pub async fn rotate(
    file: &Path,
    stage: &Stage,
    opts: &RotateOptions,
    store: Option<&Store>,
    observer: &dyn PruneObserver,
) -> Result<Rotation, RotateError> {
    // Loaded first: it refuses an oversized file before anything reads all of it.
    let config = Config::load(file)?;
    // The file as it was, for FILE.bak.N; it holds keys, so it is wiped when dropped.
    let old_text = Zeroizing::new(std::fs::read(file).map_err(|source| ConfigError::Read {
        path: file.to_owned(),
        source,
    })?);
    let before = chain_for(&config, &opts.resource, file)?;
    let mut model = config.model().clone();
    let old = String::from_utf8_lossy(&old_text);
    let mut r = Rotation {
        schema_version: crate::audit::SchemaVersion,
        file: file.display().to_string(),
        stage: stage.name(),
        key_name: None,
        removed: Vec::new(),
        lost_count: 0,
        lost_sample: Vec::new(),
        backup: None,
        summary: String::new(),
        next: String::new(),
        apiserver_check: None,
    };
    if matches!(stage, Stage::Add { .. } | Stage::AddKms(_)) {
        if let Some(name) = unpromoted(&before, &config::pending_adds(&old)) {
            return Err(RotateError::AddPending { name });
        }
    }
    let markers = match stage {
        Stage::AddKms(kms) => add_kms_stage(&mut model, kms, &old, &mut r, opts, file)?,
        Stage::Add { key_name, provider } => {
            add_key_stage(&mut model, key_name, *provider, &old, &mut r, opts, file)?
        }
        Stage::Promote { key_name } => {
            let name = key_name
                .clone()
                .or_else(|| added_key(&before))
                .ok_or(RotateError::NoKeyToPromote)?;
            config::promote(&mut model, &opts.resource, &name).map_err(edit_error(file))?;
            r.summary = format!("Promoted key {name:?}: new writes will be encrypted with it.");
            r.next = format!(
                "Next: copy {0} to every control-plane node and restart every kube-apiserver, then re-encrypt what is stored: atrest rewrite --config {0}. Then: atrest config rotate {0} --stage prune",
                file.display()
            );
            let markers = config::keep_markers(&old, &[&name]);
            r.key_name = Some(name);
            markers
        }
        Stage::Prune { discard_new } => {
            let write = prune_stage(
                &config,
                &before,
                &old,
                &mut model,
                &mut r,
                *discard_new,
                opts,
                store,
                observer,
                file,
            )
            .await?;
            if !write {
                return Ok(r);
            }
            // Every key after the write key is gone, and with them what the markers named.
            String::new()
        }
    };
    // Check the result exactly as a loaded file would be.
    Config::from_model(model.clone())?;
    // The apiserver gate, just before the write: every kube-apiserver runs the current file.
    if let (Stage::Promote { .. } | Stage::Prune { .. }, Some(gate)) = (stage, &opts.apiserver_gate)
    {
        r.apiserver_check = Some(gate.check(&old_text).await?.summary());
    }
    let yaml = Zeroizing::new(config::to_yaml(&model)?);
    let text = Zeroizing::new(format!("{markers}{}", yaml.as_str()));
    if opts.keep_backup {
        r.backup = Some(keep_previous(file, &old_text)?.display().to_string());
    }
    config::write_atomic(file, text.as_bytes(), true)?;
    Ok(r)
}

/// A failed edit of `file`, for `map_err`.
fn edit_error(file: &Path) -> impl Fn(config::RotateError) -> RotateError + '_ {
    move |reason| RotateError::Edit {
        file: file.to_owned(),
        reason,
    }
}

/// add (KMS): puts the KMS provider in second position; returns the file's markers (the
/// new provider pending).
fn add_kms_stage(
    model: &mut crate::config::EncryptionConfiguration,
    kms: &NewKms,
    old: &str,
    r: &mut Rotation,
    opts: &RotateOptions,
    file: &Path,
) -> Result<String, RotateError> {
    let at = config::add_kms(model, &opts.resource, kms).map_err(edit_error(file))?;
    r.key_name = Some(kms.name.clone());
    r.summary = format!(
        "Added kms provider {:?} (apiVersion v2, {}) in second position (providers[{at}]).",
        kms.name, kms.endpoint
    );
    r.next = format!(
        "Next: run the KMS plugin on every control-plane node, copy {0} there and restart (or let reload) every kube-apiserver, so all of them can read {1:?}. Then: atrest config rotate {0} --stage promote --key-name {1}",
        file.display(),
        kms.name
    );
    let mut markers = config::keep_markers(old, &[]);
    markers.push_str(&config::pending_marker(&kms.name, &opts.resource));
    Ok(markers)
}

/// add: puts a new key in second position; returns the file's markers (the new key
/// pending).
fn add_key_stage(
    model: &mut crate::config::EncryptionConfiguration,
    key_name: &Option<String>,
    provider: Option<NewProvider>,
    old: &str,
    r: &mut Rotation,
    opts: &RotateOptions,
    file: &Path,
) -> Result<String, RotateError> {
    let added = config::add_key(model, &opts.resource, key_name.clone(), provider)
        .map_err(edit_error(file))?;
    r.summary = format!(
        "Added {} key {:?} in second position (resources[{}].providers[{}]{}).",
        added.provider.as_str(),
        added.key_name,
        added.resources_index,
        added.providers_index,
        if added.new_element {
            ", a new provider element"
        } else {
            ""
        }
    );
    r.next = format!(
        "Next: copy {0} to every control-plane node and restart (or let reload) every kube-apiserver, so all of them can read {1:?}. Then: atrest config rotate {0} --stage promote --key-name {1}",
        file.display(),
        added.key_name
    );
    let mut markers = config::keep_markers(old, &[]);
    markers.push_str(&config::pending_marker(&added.key_name, &opts.resource));
    r.key_name = Some(added.key_name);
    Ok(markers)
}

/// prune: refuses to drop a pending key unless `discard_new`, edits `model`, and runs the
/// guard over the store. `false` when there is nothing to prune (nothing to write).
#[allow(clippy::too_many_arguments)]
async fn prune_stage(
    config: &Config,
    before: &Chain,
    old: &str,
    model: &mut crate::config::EncryptionConfiguration,
    r: &mut Rotation,
    discard_new: bool,
    opts: &RotateOptions,
    store: Option<&Store>,
    observer: &dyn PruneObserver,
    file: &Path,
) -> Result<bool, RotateError> {
    check_unpromoted(before, &config::pending_adds(old), discard_new)?;
    r.removed = config::prune(model, &opts.resource).map_err(edit_error(file))?;
    if r.removed.is_empty() {
        r.summary = "Nothing to prune: only the write key is left.".to_owned();
        return Ok(false);
    }
    let after = Config::from_model(model.clone())?;
    let store = store.ok_or(RotateError::NoStore)?;
    let (under, check) = guard(store, config, &after, opts, file, observer).await?;
    if !check.is_safe() {
        return Err(RotateError::Blocked {
            under,
            count: check.blocked_count,
            sample: check.blocked_sample,
        });
    }
    r.lost_count = check.lost_count;
    r.lost_sample = check.lost_sample;
    r.summary = format!(
        "Pruned {} {}: {}. No readable entry of {under} needs {}.",
        r.removed.len(),
        if r.removed.len() == 1 { "key" } else { "keys" },
        r.removed.join(", "),
        if r.removed.len() == 1 { "it" } else { "them" },
    );
    r.next = "Next: copy the file to every control-plane node and restart every kube-apiserver. Backups and snapshots taken before the rewrite still need the old keys: keep them somewhere safe.".to_owned();
    Ok(true)
}

/// prune: a key `add` marked as pending, still in the file and not the write key, is never
/// removed unless `discard_new`.
fn check_unpromoted(
    before: &Chain,
    pending: &[String],
    discard_new: bool,
) -> Result<(), RotateError> {
    match unpromoted(before, pending) {
        Some(name) if !discard_new => Err(RotateError::Unpromoted { name }),
        _ => Ok(()),
    }
}

/// A key `add` marked as pending that is still in the chain and not its write key.
fn unpromoted(before: &Chain, pending: &[String]) -> Option<String> {
    let write_key = before.entries().first().and_then(|e| e.provider.key_name());
    pending
        .iter()
        .find(|name| {
            Some(name.as_str()) != write_key
                && before
                    .entries()
                    .iter()
                    .any(|e| e.provider.key_name() == Some(name.as_str()))
        })
        .cloned()
}

/// The prune guard: the store read with the config before and after the edit — one prefix with
/// the edited resource's chain, or every resource the config covers, each with its own chain.
/// Returns what it read, in words, and what it found.
async fn guard(
    store: &Store,
    before: &Config,
    after: &Config,
    opts: &RotateOptions,
    file: &Path,
    observer: &dyn PruneObserver,
) -> Result<(String, PruneCheck), RotateError> {
    let chain_err = |reason| RotateError::Chain {
        file: file.to_owned(),
        reason: Box::new(reason),
    };
    let (before, after, under) = match &opts.prefix {
        Some(prefix) => (
            Target::prefix(prefix, Some(chain_for(before, &opts.resource, file)?)),
            Target::prefix(prefix, Some(chain_for(after, &opts.resource, file)?)),
            prefix.clone(),
        ),
        None => {
            let all = |c: &Config| {
                ResourceChains::new(c.clone(), &KmsOptions::default())
                    .and_then(|chains| Target::resources(chains, &opts.etcd_prefix, &[]))
                    .map_err(chain_err)
            };
            (
                all(before)?,
                all(after)?,
                "the resources the config covers".to_owned(),
            )
        }
    };
    Ok((under, prune_check(store, &before, &after, observer).await?))
}

fn chain_for(config: &Config, resource: &str, file: &Path) -> Result<Chain, RotateError> {
    let (group, resource) = config::parse_group_resource(resource);
    Chain::from_config(config, group, resource).map_err(|reason| RotateError::Chain {
        file: file.to_owned(),
        reason: Box::new(reason),
    })
}

/// The key `add` put second: the second chain entry, if it is a keyed provider, or the kms
/// provider `add --provider kms` put second. `None` when there is none, or when both a second
/// local key and a second-place kms provider exist (then the key must be named).
fn added_key(chain: &Chain) -> Option<String> {
    let entry = chain.entries().get(1)?;
    let kms_second = chain
        .entries()
        .iter()
        .any(|e| e.origin.1 == 1 && matches!(e.provider, Provider::Kms(_)));
    match &entry.provider {
        Provider::Kms(k) => Some(k.name().to_owned()),
        _ if kms_second => None,
        Provider::Aescbc(_) | Provider::Aesgcm(_) | Provider::Secretbox(_) => {
            entry.provider.key_name().map(str::to_owned)
        }
        _ => None,
    }
}

/// Keeps the file as it was before this stage as `FILE.bak.N`, N one more than the highest
/// kept so far: every stage of a rotation leaves its own copy (each holds keys: mode 0600).
fn keep_previous(file: &Path, old_text: &[u8]) -> Result<PathBuf, ConfigError> {
    let target = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = target.parent().unwrap_or(Path::new("."));
    let prefix = format!("{name}.bak.");
    let write_err = |source| ConfigError::Write {
        path: dir.to_owned(),
        source,
    };
    let highest = std::fs::read_dir(dir)
        .map_err(write_err)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    for n in highest + 1..highest + 100 {
        let bak = dir.join(format!("{prefix}{n}"));
        match config::write_atomic(&bak, old_text, false) {
            Ok(()) => return Ok(bak),
            // Another rotation took this number meanwhile: try the next.
            Err(ConfigError::Exists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(write_err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("no free {prefix}N name"),
    )))
}
