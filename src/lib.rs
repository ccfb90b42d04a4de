//! atrest: Kubernetes encryption at rest, byte for byte.
//!
//! kube-apiserver stores every object in etcd under `/registry/...`, encrypted or not according
//! to its `EncryptionConfiguration`. atrest reads and writes that exact on-disk format: it
//! validates and generates configurations, encrypts and decrypts stored values for every local
//! provider, audits a live etcd or an etcd snapshot entry by entry, and re-encrypts what needs it
//! without ever losing a write.
//!
//! # Data flow
//!
//! ```text
//! EncryptionConfiguration (YAML) ──parse+validate──▶ Config ──build──▶ Chain (transform)
//!                                                                         │
//!  Store (live etcd │ etcd snapshot/db file)                               ▼
//!    scan(prefix) ──▶ Entry{key, value, mod_revision, lease} ──▶ classify ──▶ State, provider, key
//!                                                                         │            │
//!                                                                 audit Report    rewrite plan
//!                                                                                     │
//!                          WriteStore::compare_and_put(key, mod_revision, value, lease) ◀┘
//! ```
//!
//! # Modules
//! - [`config`]: the EncryptionConfiguration model, kube-apiserver's validation, generation.
//! - [`provider`]: one file per provider (aescbc, aesgcm, secretbox, identity, kms).
//! - [`transform`]: the `k8s:enc:` value format and the read/write chain built from a config.
//! - [`object`]: what a plaintext value holds (the `k8s\x00` protobuf envelope, JSON).
//! - [`resource`]: which etcd keys hold which resource (kube's prefixes, custom resources).
//! - [`store`]: live etcd and snapshot files behind one read trait; writes only on live etcd.
//! - [`audit`]: classifying entries into a [`audit::Report`].
//! - [`status`]: the config and the store together: what each configured key reads.
//! - [`apiserver`]: kube-apiserver: its static pod manifest, and which config each running
//!   instance has loaded (through the Kubernetes API).
//! - [`rewrite`]: re-encrypting entries with compare-and-swap, verified before every write.
//! - [`rewrite_resources`]: the rewrite of every resource a config covers, each to its own key.
//! - [`wire`]: the bounds-checked cursor every untrusted byte goes through.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod apiserver;
pub mod atomic_file;
pub mod audit;
pub mod config;
pub mod inspect;
pub mod kms;
pub mod object;
pub mod offline;
#[cfg(test)]
mod proptests;
pub mod provider;
pub mod resource;
pub mod rewrite;
pub mod rewrite_resources;
pub mod space;
pub mod status;
pub mod store;
pub mod transform;
pub mod wire;
