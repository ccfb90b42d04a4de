//! atrest's integration tests: one test binary (one link of tonic), against a real etcd.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod apiservers;
mod audit;
mod bad_input;
mod bounded;
mod cli;
mod defects;
mod endpoints;
mod etcd_store;
mod faults;
mod first_run;
mod harness;
mod kine;
mod kms;
mod ops;
mod resources;
mod rewrite;
mod rewrite_cli;
mod runbook;
mod snapshot;
