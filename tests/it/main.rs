//! atrest's integration tests: one test binary (one link of tonic), against a real etcd.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod etcd_store;
mod harness;
mod rewrite;
mod snapshot;
