//! atrest: Kubernetes encryption at rest, byte for byte.
//!
//! kube-apiserver stores every object in etcd under `/registry/...`, encrypted or not according
//! to its `EncryptionConfiguration`. atrest reads and writes that exact on-disk format: it
//! validates and generates configurations, encrypts and decrypts stored values for every
//! provider, audits a live etcd, kine, or an etcd snapshot entry by entry, and re-encrypts what
//! needs it without ever losing a write.
//!
//! # Data flow
//!
//! ```text
//! EncryptionConfiguration (YAML) ─parse+validate─▶ Config ─build─▶ ResourceChains (one Chain per element)
//!                                                                          │
//!                        Target: one prefix with one chain │ every covered resource with its own chain
//!                                                                          │ route(key)
//!  Store (live etcd │ kine │ snapshot/data file │ kine state.db)           ▼
//!    scan(Target) ─▶ Entry{key, value, mod_revision, lease} ─▶ classify ─▶ state, provider, key
//!                                                                          │            │
//!                                                              audit Report / Status   rewrite plan
//!                                             preflight (identity, KMS, space, kine,   │
//!                                             backup) ─ gate ─────────────────────────▶│
//!                                         WriteStore::compare_and_put(key, mod_revision, value, lease)
//! ```
//!
//! # Modules, in the order data flows through them
//! - [`secret`]: key material, secret strings, randomness, files that hold secrets (0600).
//! - [`wire`]: the bounds-checked cursor every untrusted byte goes through.
//! - [`config`]: the EncryptionConfiguration model, kube-apiserver's validation, generation.
//! - [`provider`]: one file per provider (aescbc, aesgcm, secretbox, identity, kms).
//! - [`transform`]: the `k8s:enc:` value format and the read/write chain built from a config.
//! - [`object`]: what a plaintext value holds (the `k8s\x00` protobuf envelope, JSON).
//! - [`resource`]: which etcd keys hold which resource, and the [`Target`] of a command.
//! - [`store`]: live etcd, kine, snapshot and kine files behind one read trait; writes only on
//!   a live store.
//! - [`audit`](mod@audit): classifying entries into a [`Report`]; the prune check.
//! - [`status`](mod@status): the config and the store together: what each configured key reads.
//! - [`rewrite`](mod@rewrite): re-encrypting entries with compare-and-swap, verified before every write,
//!   behind a preflight of every safety rule; offline rewrites; key rotation with its guards.
//! - [`apiserver`]: kube-apiserver: its static pod manifest, and which config each running
//!   instance has loaded (through the Kubernetes API); the gate rewrites and rotations pass.
//!
//! # One call per operation
//!
//! Each operation is one function over a [`Store`] and a [`Target`]; every safety rule runs
//! inside it. An audit of the bundled snapshot, every resource the config covers:
//!
//! ```
//! use atrest::{audit, Config, KmsOptions, NoProgress, ResourceChains, Store, StoreSpec, Target};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("examples/encryption-config.yaml".as_ref())?;
//! let chains = ResourceChains::new(config, &KmsOptions::default())?;
//! let target = Target::resources(chains, "/registry/", &[])?;
//! let store = Store::open(StoreSpec::Snapshot("examples/cluster.snapshot".into())).await?;
//!
//! let report = audit(&store, &target, &NoProgress).await?;
//! assert_eq!(report.summary.total, 10);
//! assert_eq!(report.summary.plaintext, 2);
//! # Ok(()) }
//! ```
//!
//! The status of the same config (which key reads what, which keys can go):
//!
//! ```
//! # use atrest::{Config, KmsOptions, ResourceChains, Store, StoreSpec, Target};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let config = Config::load("examples/encryption-config.yaml".as_ref())?;
//! # let target = Target::resources(ResourceChains::new(config, &KmsOptions::default())?, "/registry/", &[])?;
//! # let store = Store::open(StoreSpec::Snapshot("examples/cluster.snapshot".into())).await?;
//! let status = atrest::status(&store, &target).await?;
//! assert!(status.keys.iter().any(|k| k.write && k.key_name.as_deref() == Some("key2")));
//! # Ok(()) }
//! ```
//!
//! A rewrite, offline into a new snapshot file (a live one is [`rewrite()`](fn@rewrite), with the same
//! [`Target`]; it refuses to write before every gate passes — identity, KMS, the space plan):
//!
//! ```
//! # use atrest::{Config, KmsOptions, NoProgress, ResourceChains, Store, StoreSpec, Target};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let config = Config::load("examples/encryption-config.yaml".as_ref())?;
//! # let target = Target::resources(ResourceChains::new(config, &KmsOptions::default())?, "/registry/", &[])?;
//! # let store = Store::open(StoreSpec::Snapshot("examples/cluster.snapshot".into())).await?;
//! let dir = tempfile::tempdir()?;
//! let out = dir.path().join("new.snapshot");
//! // Each key's newest revision goes to the observer as it is planned (`NoProgress`: none
//! // wanted); the summary keeps counts.
//! let summary = atrest::rewrite_copy(&store, &out, false, &target, false, &NoProgress).await?;
//! // Every entry the config can read is current in the new file.
//! assert_eq!(summary.after.plaintext + summary.after.stale, 0);
//! # Ok(()) }
//! ```
//!
//! The prune check: what removing keys would make unreadable (here, key1 still reads two
//! entries). It keeps counts and the first [`audit::PRUNE_SAMPLE`] entries of each kind; an
//! observer gets every one:
//!
//! ```
//! # use atrest::{Config, KmsOptions, NoProgress, ResourceChains, Store, StoreSpec, Target};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let store = Store::open(StoreSpec::Snapshot("examples/cluster.snapshot".into())).await?;
//! let target = |c: Config| -> Result<Target, Box<dyn std::error::Error>> {
//!     Ok(Target::resources(ResourceChains::new(c, &KmsOptions::default())?, "/registry/", &[])?)
//! };
//! let before = Config::load("examples/encryption-config.yaml".as_ref())?;
//! let mut model = before.model().clone();
//! atrest::config::prune(&mut model, "secrets")?;
//! let after = Config::from_model(model)?;
//! let check = atrest::prune_check(&store, &target(before)?, &target(after)?, &NoProgress).await?;
//! assert!(!check.is_safe());
//! assert_eq!(check.blocked_count, 2);
//! # Ok(()) }
//! ```
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod apiserver;
pub mod audit;
pub mod config;
pub mod object;
#[cfg(test)]
mod proptests;
pub mod provider;
pub mod resource;
pub mod rewrite;
pub mod secret;
pub mod status;
pub mod store;
pub mod transform;
pub mod wire;

pub use audit::{audit, prune_check, NoProgress, PruneCheck, Report, Verdict};
pub use config::{Config, ConfigError};
pub use resource::{ResourceChains, Route, Target};
pub use rewrite::offline::{rewrite_copy, OfflineSummary};
pub use rewrite::rotate::{rotate, RotateOptions, Rotation, Stage};
pub use rewrite::{rewrite, RewriteOptions, RewriteReport};
pub use status::{status, Status};
pub use store::{ReadStore, Store, StoreError, StoreSpec};
pub use transform::{Chain, KmsOptions};
