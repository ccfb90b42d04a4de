//! kube-apiserver: its static pod manifest, and its running instances.
//!
//! - [`manifest`]: does the static pod manifest on this node run kube-apiserver with an
//!   encryption config at all (one function per link of the chain)? Its items are re-exported
//!   here, so `atrest::apiserver::check_manifest` keeps working.
//! - [`identity`]: an instance's APIServerID (its identity Lease's name) from its hostname, and
//!   the `sha256:` labels its metrics use.
//! - [`metrics`]: a streaming reader of the Prometheus text an instance serves on `/metrics`,
//!   keeping only the encryption-config families.
//! - [`access`]: reaching the Kubernetes API (kubeconfig, context, in-cluster, kubeadm), and each
//!   instance at its own URL with the same credentials.
//! - [`discover`]: which instances exist (identity Leases, the `default/kubernetes`
//!   EndpointSlice, or URLs given).
//! - [`check`]: which config file each instance has loaded ([`check::ApiserversReport`]).
//! - [`canary`]: a Secret written through each instance, read back from etcd (any version).
//! - [`gate`]: the check rewrite and rotation run before they write.

pub mod access;
pub mod canary;
pub mod check;
pub mod discover;
pub mod gate;
pub mod identity;
pub mod manifest;
pub mod metrics;

pub use manifest::*;
